-- The API reference: every public function carries a doc comment in the
-- LuaLS style that config.ld teaches LDoc to read, and `make docs` builds the
-- HTML reference from them without a warning.  The public functions are
-- found by walking what users reach (require "truto", a client and its APIs,
-- require "truto.emulator" and an emulator's handle), so a function added
-- later without its comment fails here.
local truto = require "truto"
local emulator = require "truto.emulator"
local readme = require "spec.support.readme"
local shell = require "spec.support.shell"

local files = {}

-- The lines of a source file (paths as debug.getinfo gives them).
local function lines_of(path)
  if not files[path] then
    local text = assert(shell.read_file(path), "cannot read " .. path)
    local lines = {}
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    files[path] = lines
  end
  return files[path]
end

-- The comment lines just above line n, top first.
local function block_above(lines, n)
  local first = n
  while first > 1 and lines[first - 1]:match("^%s*%-%-") do first = first - 1 end
  local block = {}
  for i = first, n - 1 do block[#block + 1] = lines[i] end
  return block
end

local function has(block, pattern)
  for _, line in ipairs(block) do
    if line:match(pattern) then return line end
  end
  return nil
end

-- Lua pattern for a plain string.
local function literal(s)
  return (s:gsub("%p", "%%%0"))
end

-- A doc block opens with a `---` summary line.
local function summary_problem(block)
  local first = block[1]
  if not first or not first:match("^%s*%-%-%-%s*[^%s@%-]") then
    return "no `--- summary` line just above it"
  end
  return nil
end

-- True when a function's body returns a value somewhere (a heuristic over
-- its source lines: `return x`, not a bare `return` or `return end`).
local function returns_value(lines, info)
  for i = info.linedefined, info.lastlinedefined do
    local code = lines[i]:gsub("%-%-.*$", "")
    for after in code:gmatch("%f[%w_]return%f[^%w_]%s*([%w_\"'{(%-#]?)") do
      if after ~= "" and not code:match("%f[%w_]return%s+end%f[^%w_]") then return true end
    end
  end
  return false
end

-- Problems with the doc comment of a Lua function: a summary, then (unless
-- it is ---@package, internal) one ---@param per parameter and none more, and
-- a ---@return when it returns a value.
local function function_problems(f)
  local info = debug.getinfo(f, "Su")
  local path = info.source:match("^@(.*)$")
  if not path then return { "defined in a string chunk, so it cannot be checked" } end
  local lines = lines_of(path)
  local block = block_above(lines, info.linedefined)
  local where = ("%s:%d"):format(path, info.linedefined)
  local problems = {}
  local function problem(text) problems[#problems + 1] = where .. ": " .. text end
  local missing = summary_problem(block)
  if missing then problem(missing) end
  if has(block, "^%s*%-%-%-@package") then return problems end
  local documented = {}
  for _, line in ipairs(block) do
    local name = line:match("^%s*%-%-%-@param%s+([%w_.]+)")
    if name then documented[name] = true end
  end
  for i = 1, info.nparams do
    local name = debug.getlocal(f, i)
    if not (i == 1 and name == "self") then
      if not documented[name] then problem("no ---@param " .. name) end
      documented[name] = nil
    end
  end
  if info.isvararg then
    if not documented["..."] then problem("no ---@param ... for its varargs") end
    documented["..."] = nil
  end
  for name in pairs(documented) do problem("---@param " .. name .. " names no parameter") end
  if returns_value(lines, info) and not has(block, "^%s*%-%-%-@return%s") then
    problem("it returns a value but has no ---@return")
  end
  return problems
end

-- Where init.lua defines truto.NAME: `function _M.NAME(`, `_M.NAME =`, or
-- `NAME =` inside `local _M = { ... }`.
local INIT = "lua/truto/init.lua"
local function init_definition(name)
  local lines = lines_of(INIT)
  for i, line in ipairs(lines) do
    if line:match("^function _M%." .. literal(name) .. "%(") or line:match("^_M%." .. literal(name) .. "%s*=")
      or line:match("^%s+" .. literal(name) .. "%s*=") then
      return i, lines
    end
  end
  return nil
end

-- Problems with the doc comment of truto.NAME where init.lua defines it: a
-- summary, and the LuaLS type of what is not a Lua function (a value, or a
-- C function, whose parameters Lua cannot see).
local function export_problems(name, value)
  local n, lines = init_definition(name)
  if not n then return { INIT .. ": cannot find where truto." .. name .. " is defined" } end
  local block = block_above(lines, n)
  local where = ("%s:%d: truto.%s: "):format(INIT, n, name)
  local problems = {}
  local missing = summary_problem(block)
  if missing then problems[#problems + 1] = where .. missing end
  local is_c = type(value) == "function" and debug.getinfo(value, "S").what == "C"
  if is_c and not has(block, "^%s*%-%-%-@type%s+fun%(") then
    problems[#problems + 1] = where .. "a C function needs ---@type fun(...): ... for its parameters and returns"
  elseif type(value) ~= "function" and not has(block, "^%s*%-%-%-@type%s") then
    problems[#problems + 1] = where .. "no ---@type"
  end
  return problems
end

-- The ---@class block of a class in a file: its lines, from the class line to
-- the first line that is not a comment.
local function class_block(path, class)
  local lines = lines_of(path)
  for i, line in ipairs(lines) do
    if line:match("^%-%-%-@class%s+" .. literal(class) .. "%s*$")
      or line:match("^%-%-%-@class%s+" .. literal(class) .. "%s*:") then
      local block = {}
      for j = i, #lines do
        if not lines[j]:match("^%s*%-%-") then break end
        block[#block + 1] = lines[j]
      end
      return block
    end
  end
  return nil
end

local CLIENT = "lua/truto/client.lua"

-- The class of one of the client's APIs, from truto.Client's fields.
local function api_class(field)
  local block = assert(class_block(CLIENT, "truto.Client"), CLIENT .. ": no ---@class truto.Client")
  local line = has(block, "^%-%-%-@field%s+" .. literal(field) .. "%s")
  return line and line:match("^%-%-%-@field%s+[%w_]+%s+([%w_.]+)")
end

-- The parameters a generated method takes, from the operation it runs
-- (OPERATIONS' params: optional_body and query are optional; opts follows).
local function operation_params(method)
  for i = 1, math.huge do
    local name, value = debug.getupvalue(method, i)
    if name == nil then return nil end
    if type(value) == "table" and type(value.params) == "table" then
      local params = {}
      for _, p in ipairs(value.params) do
        params[#params + 1] = p == "optional_body" and "body?" or p == "query" and "query?" or p
      end
      params[#params + 1] = "opts?"
      return table.concat(params, ", ")
    end
  end
end

-- Problems with the documentation of a generated method: a `---@field NAME
-- fun(self, ...)` in its API's class, described by the comment lines above
-- it, whose parameters are the operation's.
-- A class may inherit its methods (`---@class truto.Webhooks: truto.PlatformResource`).
local function generated_problems(api_field, name, method, class)
  class = class or api_class(api_field)
  if not class then return { CLIENT .. ": truto.Client has no ---@field " .. api_field } end
  local block = class_block(CLIENT, class)
  if not block then return { CLIENT .. ": no ---@class " .. class } end
  local parent = block[1]:match("^%-%-%-@class%s+[%w_.]+%s*:%s*([%w_.]+)")
  if parent and not has(block, "^%-%-%-@field%s+" .. literal(name) .. "%s") then
    return generated_problems(api_field, name, method, parent)
  end
  local where = ("%s: %s:%s: "):format(CLIENT, class, name)
  for i, line in ipairs(block) do
    local signature = line:match("^%-%-%-@field%s+" .. literal(name) .. "%s+fun%(self,%s*(.-)%)")
    if signature then
      local problems = {}
      if i == 1 or not block[i - 1]:match("^%-%-%s*%S") or block[i - 1]:match("^%-%-%-@") then
        problems[#problems + 1] = where .. "no `-- description` line just above its ---@field"
      end
      local names = signature:gsub("(%??):%s*[^,]*", "%1"):gsub("%s+", " ")
      local expected = operation_params(method)
      if not expected then
        problems[#problems + 1] = where .. "cannot find its operation (an upvalue with params) to compare with"
      elseif names ~= expected then
        problems[#problems + 1] = where .. ("documents (%s), the operation takes (%s)"):format(names, expected)
      end
      return problems
    end
  end
  return { where .. "no ---@field " .. name .. " fun(self, ...) in its class" }
end

-- The functions of a module table, by name, sorted (metamethods left out).
local function functions_of(t)
  local names, found = {}, {}
  for name, value in pairs(t) do
    if type(name) == "string" and type(value) == "function" and not name:match("^__") then
      names[#names + 1], found[name] = name, value
    end
  end
  table.sort(names)
  return names, found
end

-- The methods of an object: the functions of its metatable's __index (its
-- own fields are state, such as the clock functions a client keeps).
local function methods_of(object)
  local mt = getmetatable(object)
  assert(type(mt) == "table" and type(mt.__index) == "table", "not an object with methods")
  return functions_of(mt.__index)
end

local function is_package(f)
  local info = debug.getinfo(f, "S")
  local path = info.source:match("^@(.*)$")
  return path and has(block_above(lines_of(path), info.linedefined), "^%s*%-%-%-@package") ~= nil
end

local function assert_no_problems(problems)
  assert(#problems == 0, "undocumented:\n  " .. table.concat(problems, "\n  "))
end

-- What the reference must name, per page: filled in by the doc comment cases,
-- which busted runs before the `make docs` one.
local public = { truto = {}, client = {}, emulator = {} }

describe("doc comments", function()
  it("document every field and function of require \"truto\"", function()
    local problems, seen = {}, {}
    for name, value in pairs(truto) do
      for _, p in ipairs(export_problems(name, value)) do problems[#problems + 1] = p end
      if type(value) == "function" and debug.getinfo(value, "S").what == "Lua" and not seen[value] then
        seen[value] = true
        for _, p in ipairs(function_problems(value)) do problems[#problems + 1] = p end
      end
      public.truto[#public.truto + 1] = name
    end
    assert.is_true(#public.truto >= 9)
    assert_no_problems(problems)
  end)

  it("document every method of a client and of its APIs", function()
    local client = truto.new { token = "x", transport = { perform = function() end } }
    local problems = {}
    local names, methods = methods_of(client)
    for _, name in ipairs(names) do
      for _, p in ipairs(function_problems(methods[name])) do problems[#problems + 1] = p end
      if not is_package(methods[name]) then public.client[#public.client + 1] = name end
    end
    local apis = { "unified_api", "proxy_api", "custom_api" }
    for name in pairs(require("truto.client").PLATFORM) do apis[#apis + 1] = name end
    for _, field in ipairs(apis) do
      local _ = client[field].list   -- a platform resource takes its methods at its first look-up
      local api_names, api_methods = methods_of(client[field])
      assert.is_true(#api_names >= (field:match("_api$") and 5 or 1), field)
      for _, name in ipairs(api_names) do
        for _, p in ipairs(generated_problems(field, name, api_methods[name])) do problems[#problems + 1] = p end
        public.client[#public.client + 1] = name
      end
    end
    assert.is_true(#public.client >= 20)
    assert_no_problems(problems)
  end)

  it("document every function of require \"truto.emulator\" and of its handle", function()
    local handle = assert(emulator.start())
    local ok, err = pcall(function()
      local problems, seen = {}, {}
      for _, list in ipairs { { functions_of(emulator) }, { methods_of(handle) } } do
        local names, functions = list[1], list[2]
        for _, name in ipairs(names) do
          local f = functions[name]
          if not seen[f] then
            seen[f] = true
            for _, p in ipairs(function_problems(f)) do problems[#problems + 1] = p end
          end
          if not is_package(f) then public.emulator[#public.emulator + 1] = name end
        end
      end
      assert_no_problems(problems)
    end)
    handle:stop()
    assert(ok, err)
  end)
end)

describe("make docs", function()
  it("builds the reference without a warning, naming every public function", function()
    local dir = assert(shell.mktemp("truto-docs"))
    -- The README's command, its output redirected through DOCS_DIR.
    local ok, out, err = shell.script(".", { DOCS_DIR = dir }, readme.block("make docs"))
    local pages = {
      truto = shell.read_file(dir .. "/modules/truto.html"),
      client = shell.read_file(dir .. "/modules/truto.client.html"),
      emulator = shell.read_file(dir .. "/modules/truto.emulator.html"),
    }
    shell.run("rm -rf " .. shell.quote(dir))
    assert(ok, out .. err)
    assert.equal("API reference: " .. dir .. "/index.html\n", out)
    assert.equal("", err)
    for page, names in pairs(public) do
      assert(#names > 0, "no names for the " .. page .. " page: the doc comment cases run first")
      assert(pages[page], "no page for " .. page)
      for _, name in ipairs(names) do
        -- An anchor or a label: "name", "Class:name", >name<.
        assert(pages[page]:match("[\">:]" .. literal(name) .. "[\"<]"), page .. " page does not name " .. name)
      end
    end
  end)
end)

--- The `truto` command: every Unified, Proxy and Custom API call and every
-- platform resource's method from a shell.  main() takes its arguments,
-- environment, output streams and terminal check as parameters so that the
-- spec can run it in-process.
local truto = require "truto"
local core = require "truto.core"   -- isatty and file_info, which truto does not export
local client_module = require "truto.client"
local journal = require "truto.journal"   -- its outcome records are `truto batch`'s output lines
local PLATFORM, PARAMS = client_module.PLATFORM, client_module.PARAMS
-- Lua 5.1 and LuaJIT have only the global unpack, 5.2 on only table.unpack.
local unpack = table.unpack or unpack   -- luacheck: ignore 113 143

local _M = {}

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- ---- the commands -------------------------------------------------------

-- The first word of a command: an API of the data plane or a platform
-- resource (its client name with "_" written "-").  Each verb names the
-- client method and its parameters as client.lua's operations do: body and
-- optional_body come from --data or --form, query from the query options,
-- every other parameter is a word on the command line.
local DATA_PLANE = {
  unified = { target = "unified_api", verbs = {
    list = { "list", { "model", "resource", "query" } },
    get = { "get", { "model", "resource", "id", "query" } },
    create = { "create", { "model", "resource", "body", "query" } },
    update = { "update", { "model", "resource", "id", "body", "query" } },
    delete = { "delete", { "model", "resource", "id", "query" } },
    call = { "custom_method", { "model", "resource", "method", "optional_body", "query" } },
    meta = { "meta", { "model", "resource", "method", "query" } },
  } },
  proxy = { target = "proxy_api", verbs = {
    list = { "list", { "resource", "query" } },
    get = { "get", { "resource", "id", "query" } },
    create = { "create", { "resource", "body", "query" } },
    update = { "update", { "resource", "id", "body", "query" } },
    delete = { "delete", { "resource", "id", "query" } },
    call = { "custom_method", { "resource", "method", "optional_body", "query" } },
  } },
  custom = { target = "custom_api", verbs = {
    get = { "get", { "path", "query" } },
    delete = { "delete", { "path", "query" } },
    post = { "post", { "path", "optional_body", "query" } },
    put = { "put", { "path", "optional_body", "query" } },
    patch = { "patch", { "path", "optional_body", "query" } },
  } },
}

-- The parameters that come from --data or --form (MCP's payload and tool
-- arguments too).
local BODY_PARAMS = { body = "required", optional_body = "optional", payload = "required", arguments = "optional" }

-- Unified and Proxy calls act on one integrated account; Truto's Custom API
-- can go without; a platform call sends one only when given (-a, -q).
local NEEDS_ACCOUNT = { unified = true, proxy = true }
local ENV_ACCOUNT = { unified = true, proxy = true, custom = true }

-- A command: what the client is called with and what the command line must
-- hold for it.  first: the API or resource as typed; target: the client's
-- field (nil: the client itself).
local function new_command(first, verb, target, method, params)
  local command = {
    label = verb and first .. " " .. verb or first, target = target, method = method, params = params,
    words = {}, needs_account = NEEDS_ACCOUNT[first], env_account = ENV_ACCOUNT[first],
  }
  for _, param in ipairs(params) do
    if BODY_PARAMS[param] then
      command.body = BODY_PARAMS[param]
    elseif param == "query" then
      command.query = true
    else
      command.words[#command.words + 1] = param:upper()
    end
  end
  return command
end

-- first word -> { verbs = { verb -> command }, names = its verbs sorted,
-- order = its verbs as listed in help, path = a platform resource's path }
local COMMANDS = {}
for api, entry in pairs(DATA_PLANE) do
  local verbs = {}
  for verb, spec in pairs(entry.verbs) do verbs[verb] = new_command(api, verb, entry.target, spec[1], spec[2]) end
  COMMANDS[api] = { verbs = verbs, names = sorted_keys(verbs) }
end
for name, resource in pairs(PLATFORM) do
  local first = name:gsub("_", "-")
  local verbs, order = {}, {}
  local function add(method, params)
    local verb = method:gsub("_", "-")
    verbs[verb] = new_command(first, verb, name, method, params)
    order[#order + 1] = verb
  end
  for method in resource.methods:gmatch("%S+") do add(method, PARAMS[name][method]) end
  for _, method in ipairs(sorted_keys(resource.extras or {})) do add(method, PARAMS[name][method]) end
  COMMANDS[first] = { verbs = verbs, names = sorted_keys(verbs), order = order, path = resource.path }
end
do   -- client.mcp: truto mcp call-tool TOKEN NAME --data ARGUMENTS
  local verbs, order = {}, {}
  for _, method in ipairs(sorted_keys(PARAMS.mcp)) do
    local verb = method:gsub("_", "-")
    verbs[verb] = new_command("mcp", verb, "mcp", method, PARAMS.mcp[method])
    order[#order + 1] = verb
  end
  COMMANDS.mcp = { verbs = verbs, names = sorted_keys(verbs), order = order, path = "mcp/{token}" }
end
local PING = new_command("ping", nil, nil, "ping", {})
-- truto batch FILE: client:batch over FILE's lines.  -a (or the
-- environment) is the account of a Unified, Proxy or Custom line without one.
local BATCH = new_command("batch", nil, nil, "batch", { "file" })
BATCH.env_account, BATCH.default_account = true, true
BATCH.options = "[--journal PATH] [--concurrency N]"
-- The commands of one word.
local SINGLE_WORD = { ping = PING, batch = BATCH }
local RESOURCES = {}   -- the platform resources' first words, sorted
for first, entry in pairs(COMMANDS) do
  if entry.path then RESOURCES[#RESOURCES + 1] = first end
end
table.sort(RESOURCES)
local FIRST_WORDS = sorted_keys(COMMANDS)
for word in pairs(SINGLE_WORD) do FIRST_WORDS[#FIRST_WORDS + 1] = word end
table.sort(FIRST_WORDS)

-- "truto datastores test ID METHOD": a command and its words.
local function command_words(command)
  return table.concat({ "truto", command.label, unpack(command.words) }, " ")
end

-- "truto datastores test ID METHOD [--data BODY]": a command with its
-- words, then its body and --all; width pads the words to a column.
local function synopsis(command, width)
  local words = command_words(command)
  local rest = ({ required = "--data BODY", optional = "[--data BODY]" })[command.body]
    or command.method == "list" and "[--all]"
  rest = command.options or rest
  if not rest then return words end
  return ("%-" .. (width or #words) .. "s %s"):format(words, rest)
end

-- The lines of --help's list of platform resources: each with its verbs.
local function resource_lines()
  local width = 0
  for _, first in ipairs(RESOURCES) do width = math.max(width, #first) end
  local lines = {}
  for i, first in ipairs(RESOURCES) do
    lines[i] = ("  %-" .. width .. "s  %s\n"):format(first, table.concat(COMMANDS[first].order, " "))
  end
  return table.concat(lines)
end

-- `truto RESOURCE --help`: the resource's verbs, each with its words.
local function resource_help(first)
  local entry = COMMANDS[first]
  local lines = { ("Usage: truto %s VERB ... [options]   (the client's %s, Truto's /%s)\n\n"):format(first,
    (first:gsub("-", "_")), entry.path) }
  local width = 0
  for _, command in pairs(entry.verbs) do width = math.max(width, #command_words(command)) end
  for _, verb in ipairs(entry.order) do lines[#lines + 1] = "  " .. synopsis(entry.verbs[verb], width) .. "\n" end
  lines[#lines + 1] = "\n--form NAME=@FILE or NAME=VALUE can stand for --data BODY; the options: truto --help\n"
  return table.concat(lines)
end

_M.USAGE = [[
Usage:
  truto unified list   MODEL RESOURCE            [options]
  truto unified get    MODEL RESOURCE ID         [options]
  truto unified create MODEL RESOURCE            --data BODY [options]
  truto unified update MODEL RESOURCE ID         --data BODY [options]
  truto unified delete MODEL RESOURCE ID         [options]
  truto unified call   MODEL RESOURCE METHOD     [--data BODY] [options]   (a custom method, POST)
  truto unified meta   MODEL RESOURCE METHOD     [options]
  truto proxy   list|get|create|update|delete|call RESOURCE [ID|METHOD] [options]
  truto custom  get|post|put|patch|delete PATH   [--data BODY] [options]
  truto RESOURCE VERB [ID|METHOD ...]            [--data BODY] [options]   (a platform resource, below)
  truto RESOURCE --help                          the resource's verbs and the words each takes
  truto ping                                     checks that Truto answers and accepts the token
  truto batch FILE [--journal PATH] [--concurrency N]   one request per line (client:batch), one
                                                 result per line, in order
  truto --version

Calls Truto's API (https://api.truto.one) and writes the response body, exactly as
received, to standard output.  Errors go to standard error with exit status 1;
usage mistakes exit with status 2, among them an empty option value (-a "", as
an unset shell variable gives) and a mistyped command, verb or long option, which is
answered with the closest one ("did you mean 'update'?").

Options:
  -a, --integrated-account-id ID  the integrated account (default: $TRUTO_INTEGRATED_ACCOUNT_ID);
                           unified and proxy calls need one, from -a, from
                           -q integrated_account_id=ID or from the environment;
                           custom calls can go without; platform calls send one
                           only from -a or -q (a filter), never from the environment
  -d, --data BODY          JSON request body: inline text, @FILE, or @- for standard input
  -F, --form NAME=VALUE    a field of a multipart/form-data body, as curl's -F (repeatable;
                           not with --data): NAME=VALUE a text field, NAME=@FILE the file,
                           streamed from disk; NAME=@FILE;type=TYPE;filename=NAME sets the
                           file's content type and name; a file name given again adds a part
      --form-string NAME=VALUE   a text field, even when VALUE starts with @
  -q, --query KEY=VALUE    a query parameter; brackets nest: -q 'created_at[gt]=2026-01-01'
                           (repeatable; KEY[]=VALUE appends to a list)
  -x, --exclude FIELD      adds FIELD to truto_exclude_fields[] (repeatable)
  -r, --remote-query K=V   adds remote_query[K]=V, passed to the provider untouched (repeatable)
  -f, --format FORMAT      truto_response_format: unified (default), raw, normalized, stream
      --ignore-remote-data sets truto_ignore_remote_data=true
      --limit N            page size of a list
      --cursor CURSOR      next_cursor of the page to fetch
      --all                list only (unified, proxy and platform lists): follow next_cursor
                           through every page and write one record per line (JSON Lines);
                           not with --format stream, which already sends every record, one
                           per line.  While standard error is a terminal and standard output
                           is not, it shows the pages and records so far there (not with -v)
  -H, --header 'NAME: VALUE'  an extra request header (repeatable)
      --idempotency-key KEY   makes a POST or PATCH safe to retry
      --timeout SECONDS    total time allowed for each attempt (default 30)
      --retries N          retries of failed attempts that are safe to retry (default 2)
      --base-url URL       the API's address (default: $TRUTO_BASE_URL or https://api.truto.one)
      --journal PATH       batch only: records each request as it is sent and settles; run
                           again with the same PATH, the batch skips what settled and resends
                           what was in flight with the same Idempotency-Key
      --concurrency N      batch only: requests in flight at once, 1 to 1024 (default 16)
  -v, --verbose            write each attempt's request line and the final status to
                           standard error
  -h, --help               this text
  -V, --version            the versions of truto, libcurl and Lua
  --                       the end of the options: later words are names, even '-1'

Environment:
  TRUTO_API_TOKEN          the API token (required; never printed)
  TRUTO_BASE_URL, TRUTO_INTEGRATED_ACCOUNT_ID   defaults for the options above

Example (the "Update Opportunities" call):
  truto unified update crm opportunities 23423523 -a 62f44730-dd91-461e-bd6a-aedd9e0ad79d \
    --data '{"name":"Renewal 2027","amount":125000,"contact":[]}' \
    --exclude id --exclude name --remote-query foo=bar --format raw

Platform resources and their verbs (the client's names, with "-" for "_"):
]] .. resource_lines()

local function usage_error(message)
  error({ usage = message }, 0)
end

-- The candidate nearest to name when it is near enough to be a typo of it:
-- at most one edit away for a name of up to 4 characters, two for a longer
-- one.  An edit inserts, deletes or replaces a character or swaps two
-- neighbours (Damerau-Levenshtein, optimal string alignment); case does not
-- count.  A tie goes to the earlier candidate.
local function closest(name, candidates)
  local a = name:lower()
  local best, best_distance = nil, (#a <= 4 and 1 or 2) + 1   -- one more edit than allowed
  for _, candidate in ipairs(candidates) do
    local b = candidate:lower()
    local d = {}   -- d[i][j]: the distance from a's first i characters to b's first j
    for i = 0, #a do d[i] = { [0] = i } end
    for j = 1, #b do d[0][j] = j end
    for i = 1, #a do
      for j = 1, #b do
        d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a:byte(i) == b:byte(j) and 0 or 1))
        if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
          d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
        end
      end
    end
    if d[#a][#b] < best_distance then best, best_distance = candidate, d[#a][#b] end
  end
  return best
end

-- "a, b or c"; "a" alone (a resource may have one verb)
local function one_of(names)
  if #names == 1 then return names[1] end
  return table.concat(names, ", ", 1, #names - 1) .. " or " .. names[#names]
end

-- The usage error for a word that is none of the names (a sorted list)
-- expected where it stands.  It suggests the closest name, "_" read as "-"
-- (the client's integrated_accounts is integrated-accounts here); failing
-- that, with list_them, it lists them all.
local function unknown(kind, word, names, list_them)
  local message = ("unknown %s '%s'"):format(kind, word)
  local hint = closest((word:gsub("_", "-")), names)
  if hint then
    message = message .. (" (did you mean '%s'?)"):format(hint)
  elseif list_them then
    message = message .. " (expected " .. one_of(names) .. ")"
  end
  usage_error(message)
end

-- Sets q[a][b]... = value for a key such as "a[b][]" (Truto's bracket form).
local function set_query(q, key, value)
  local name, rest = key:match("^([^%[]+)(.*)$")
  if not name then usage_error("bad query parameter '" .. key .. "': it needs a name") end
  local parts = { name }
  for part in rest:gmatch("%[([^%]]*)%]") do parts[#parts + 1] = part end
  if rest:gsub("%[[^%]]*%]", "") ~= "" then usage_error("bad brackets in query parameter '" .. key .. "'") end
  local t = q
  for i = 1, #parts - 1 do
    local k = parts[i] == "" and #t + 1 or parts[i]
    if t[k] == nil then t[k] = {} end
    if type(t[k]) ~= "table" then
      usage_error("query parameter '" .. key .. "' conflicts with an earlier value of '" .. parts[i] .. "'")
    end
    t = t[k]
  end
  local last = parts[#parts]
  if last ~= "" and type(t[last]) == "table" then
    usage_error("query parameter '" .. key .. "' conflicts with an earlier list or object")
  end
  if last == "" then t[#t + 1] = value else t[last] = value end
end

local function split_pair(arg, option)
  local k, v = arg:match("^([^=]+)=(.*)$")
  if not k then usage_error(option .. " needs KEY=VALUE, got '" .. arg .. "'") end
  return k, v
end

local function read_body(arg, stdin)
  local text
  if arg == "@-" then
    text = stdin:read("*a")
  elseif arg:sub(1, 1) == "@" then
    local f, err = io.open(arg:sub(2), "rb")
    if not f then usage_error("cannot read --data file: " .. err) end
    text = f:read("*a")
    f:close()
  else
    text = arg
  end
  local value, err = truto.decode_json(text)
  if type(value) ~= "table" then usage_error("--data must be a JSON object or array" .. (err and ": " .. err or "")) end
  return value
end

-- The last ";type=" or ";filename=" of a --form file value: its position
-- and key, or nil.  What follows it to the end is its value (a type may
-- carry parameters: type=text/plain;charset=utf-8), and a path may hold ';'.
local function last_attribute(value)
  local at, key
  for _, k in ipairs { "type", "filename" } do
    local from = 1
    while true do
      local i = value:find(";" .. k .. "=", from, true)
      if not i then break end
      if not at or i > at then at, key = i, k end
      from = i + 1
    end
  end
  return at, key
end

-- The body of --form fields, as curl's -F: NAME=@FILE[;type=TYPE][;filename=NAME]
-- a file part (streamed by the client; checked here to be a regular file, so
-- that a typo stops the command before anything is sent), NAME=VALUE a text
-- part; --form-string NAME=VALUE a text part even when VALUE starts with '@'.
-- A name given again makes a list of files (repeated parts).
local function form_body(fields)
  local body = {}
  for _, field in ipairs(fields) do
    local literal = type(field) == "table"
    local name, value = split_pair(literal and field.literal or field, literal and "--form-string" or "--form")
    local part = value
    if not literal and value:sub(1, 1) == "@" then
      local path, file_opts = value:sub(2), {}
      while true do
        local at, key = last_attribute(path)
        if not at then break end
        local attribute = path:sub(at + #key + 2):gsub('^"(.*)"$', "%1")
        local option = key == "type" and "content_type" or "filename"
        file_opts[option] = file_opts[option] or attribute   -- the last one given wins
        path = path:sub(1, at - 1)
      end
      if path == "" then usage_error("--form " .. name .. "=@ needs a file's path") end
      -- stat(2), not open: opening a FIFO would wait for a writer.
      local info, err = core.file_info(path)
      if not info then usage_error("cannot read --form file: " .. err) end
      if not info.regular then
        usage_error(("--form file is not a regular file: %s is a %s"):format(path, info.type))
      end
      local ok, file = pcall(truto.file, path, file_opts)
      if not ok then usage_error("--form " .. name .. ": " .. tostring(file):gsub("^[^\n]-:%d+: ", "")) end
      part = file
    end
    local given = body[name]
    if given == nil then
      body[name] = part
    elseif type(part) == "table" and type(given) == "table" then
      if getmetatable(given) ~= nil then body[name] = { given } end   -- a first file becomes a list
      table.insert(body[name], part)
    else
      usage_error("--form field '" .. name .. "' is given twice (only files may repeat)")
    end
  end
  return body
end

local VALUE_OPTIONS = {
  ["-a"] = "account", ["--integrated-account-id"] = "account", ["-d"] = "data", ["--data"] = "data",
  ["-F"] = "form", ["--form"] = "form", ["--form-string"] = "form",
  ["-q"] = "query", ["--query"] = "query", ["-x"] = "exclude", ["--exclude"] = "exclude",
  ["-r"] = "remote_query", ["--remote-query"] = "remote_query", ["-f"] = "format", ["--format"] = "format",
  ["--limit"] = "limit", ["--cursor"] = "cursor", ["-H"] = "header", ["--header"] = "header",
  ["--idempotency-key"] = "idempotency_key", ["--timeout"] = "timeout", ["--retries"] = "retries",
  ["--base-url"] = "base_url", ["--journal"] = "journal", ["--concurrency"] = "concurrency",
}
local FLAG_OPTIONS = { ["--ignore-remote-data"] = "ignore_remote_data", ["--all"] = "all",
  ["-v"] = "verbose", ["--verbose"] = "verbose", ["-h"] = "help", ["--help"] = "help",
  ["-V"] = "version", ["--version"] = "version" }
local REPEATED = { query = true, exclude = true, remote_query = true, header = true, form = true }

-- The names a mistyped long option is matched against.  Short options are
-- not: every letter is one edit away from every other.
local LONG_OPTIONS = {}
for _, options in ipairs { VALUE_OPTIONS, FLAG_OPTIONS } do
  for name in pairs(options) do
    if name:sub(1, 2) == "--" then LONG_OPTIONS[#LONG_OPTIONS + 1] = name end
  end
end
table.sort(LONG_OPTIONS)

local function parse_args(argv)
  local o = { positional = {}, query = {}, exclude = {}, remote_query = {}, header = {}, form = {} }
  local i, options_ended = 1, false
  while i <= #argv do
    local arg = argv[i]
    local name, inline = arg:match("^(%-%-[^=]+)=(.*)$")
    name = name or arg
    if options_ended then
      o.positional[#o.positional + 1] = arg
    elseif arg == "--" then
      options_ended = true
    elseif VALUE_OPTIONS[name] then
      local value = inline
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then usage_error(name .. " needs a value") end
      end
      -- An empty value is most likely an unset shell variable ("-a $ACCOUNT"):
      -- refused, where it could otherwise stand for "the default".
      if value == "" then usage_error(name .. " needs a non-empty value") end
      local key = VALUE_OPTIONS[name]
      if name == "--form-string" then value = { literal = value } end
      if REPEATED[key] then o[key][#o[key] + 1] = value else o[key] = value end
    elseif FLAG_OPTIONS[name] then
      if inline then usage_error(name .. " takes no value") end
      o[FLAG_OPTIONS[name]] = true
    elseif arg:sub(1, 1) == "-" and arg ~= "-" then
      unknown("option", name, name:sub(1, 2) == "--" and LONG_OPTIONS or {})
    else
      o.positional[#o.positional + 1] = arg
    end
    i = i + 1
  end
  return o
end

local function number_option(value, name, integer)
  local n = tonumber(value)
  -- Whole numbers are decimal digits: Lua 5.1 and 5.2 have no integer type to ask.
  if not n or n < 0 or (integer and not value:match("^%d+$")) then
    usage_error(name .. " must be a " .. (integer and "whole number" or "number") .. ", got '" .. value .. "'")
  end
  return n
end

-- The query of the options; env_account: whether $TRUTO_INTEGRATED_ACCOUNT_ID
-- is the default account.
local function build_query(o, env, env_account)
  local q = {}
  for _, pair in ipairs(o.query) do set_query(q, split_pair(pair, "--query")) end
  -- -a wins over -q integrated_account_id=..., and either over the
  -- environment's default.
  if o.account then
    q.integrated_account_id = o.account
  elseif env_account and q.integrated_account_id == nil and env.TRUTO_INTEGRATED_ACCOUNT_ID ~= "" then
    q.integrated_account_id = env.TRUTO_INTEGRATED_ACCOUNT_ID
  end
  -- --exclude and --remote-query are short for -q 'truto_exclude_fields[]=F'
  -- and -q 'remote_query[K]=V'.
  for _, field in ipairs(o.exclude) do set_query(q, "truto_exclude_fields[]", field) end
  for _, pair in ipairs(o.remote_query) do
    local k, v = split_pair(pair, "--remote-query")
    set_query(q, "remote_query[" .. k:gsub("^([^%[]+)", "%1]", 1), v)
  end
  if o.format then
    if not ({ unified = true, raw = true, normalized = true, stream = true })[o.format] then
      usage_error("--format must be unified, raw, normalized or stream")
    end
    q.truto_response_format = o.format
  end
  if o.ignore_remote_data then q.truto_ignore_remote_data = true end
  if o.limit then
    q.limit = number_option(o.limit, "--limit", true)
    if q.limit < 1 then usage_error("--limit must be at least 1") end
  end
  if o.cursor then q.next_cursor = o.cursor end
  return q
end

-- "1 page", "3 pages"
local function plural(n, noun)
  return n .. " " .. noun .. (n == 1 and "" or "s")
end

-- The --version line: the command's version (that of lua-truto, which it
-- ships with), then what it runs on (libcurl is loaded for it).
local function version_line()
  return ("truto %s (lua-truto %s, libcurl %s, %s)\n"):format(truto.VERSION, truto.VERSION,
    require("truto.curl_core").curl_version, _VERSION)
end

-- The command the words name, and the index of its first word after the
-- command's own.
local function resolve(positional)
  local first, verb = positional[1], positional[2]
  if SINGLE_WORD[first] then return SINGLE_WORD[first], 2 end
  local entry = COMMANDS[first]
  if not entry then unknown("command", first, FIRST_WORDS) end
  if not verb then usage_error("'" .. first .. "' needs a verb (expected " .. one_of(entry.names) .. ")") end
  local command = entry.verbs[verb]
  if not command then unknown("verb", verb, entry.names, true) end
  return command, 3
end

-- The arguments of the command's client method: its parameters in order,
-- then opts; and how many there are.
local function call_args(command, words, body, query, opts)
  local args, used = {}, 0
  for i, param in ipairs(command.params) do
    if BODY_PARAMS[param] then
      args[i] = body
    elseif param == "query" then
      args[i] = query
    else
      used = used + 1
      args[i] = words[used]
    end
  end
  args[#command.params + 1] = opts
  return args, #command.params + 1
end

-- The requests of `truto batch`'s file (or standard input, "-"): one JSON
-- object per line, a usage error naming the line for any other.  account:
-- the integrated account of a Unified, Proxy or Custom request without one.
local function read_requests(file, account, stdin)
  local name, text = file == "-" and "standard input" or file
  if file == "-" then
    text = stdin:read("*a")
  else
    local f, err = io.open(file, "rb")
    if not f then usage_error("cannot read the batch's requests: " .. err) end
    text = f:read("*a")
    f:close()
  end
  if text ~= "" and text:sub(-1) ~= "\n" then text = text .. "\n" end
  local requests = {}
  for line in text:gmatch("([^\n]*)\n") do
    local n = #requests + 1
    line = line:gsub("\r$", "")
    if line:match("^%s*$") then usage_error(("%s line %d is blank (one request per line)"):format(name, n)) end
    local request, decode_err = truto.decode_json(line)
    if request == nil then usage_error(("%s line %d is not JSON: %s"):format(name, n, decode_err)) end
    if type(request) ~= "table" or getmetatable(request) == core.array_mt then
      usage_error(("%s line %d is not a request: a JSON object such as {\"api\":\"unified\",\"method\":\"get\",...}")
        :format(name, n))
    end
    local query = request.query
    if account and ENV_ACCOUNT[request.api] and (query == nil or type(query) == "table"
        and query.integrated_account_id == nil) then
      request.query = {}
      for k, v in pairs(query or {}) do request.query[k] = v end
      request.query.integrated_account_id = account
    end
    requests[n] = request
  end
  return requests, name
end

-- truto batch: every line's request through client:batch, and its outcome
-- (journal.outcome's record) on a line of standard output, in the file's
-- order, each as soon as it and every line before it have settled.  Exit
-- status 1 when any failed.
local function run_batch(client, file, account, o, stdin, out, err)
  local concurrency = o.concurrency and number_option(o.concurrency, "--concurrency", true)
  if concurrency and (concurrency < 1 or concurrency > 1024) then
    usage_error("--concurrency must be from 1 to 1024, got " .. o.concurrency)
  end
  local requests, name = read_requests(file, account, stdin)
  local settled, next_line, failed = {}, 1, 0
  local function on_progress(_, _, index, result)
    settled[index] = result
    if not result[1] then failed = failed + 1 end
    while settled[next_line] do
      local r = settled[next_line]
      out:write(truto.encode_json(journal.outcome(next_line, r[1], r[2])), "\n")
      settled[next_line], next_line = nil, next_line + 1
    end
  end
  local ok, results, failure = pcall(client.batch, client, requests,
    { journal = o.journal, concurrency = concurrency, on_progress = on_progress })
  if not ok then
    local message = tostring(results)
    local line, reason = message:match("^batch request #(%d+): (.*)$")
    if line then usage_error(("%s line %s: %s"):format(name, line, reason)) end
    local journal_problem = message:match("^bad argument #2 to 'batch' %((.*)%)$")
    if journal_problem then usage_error(journal_problem) end
    error(results, 0)
  end
  if not results then
    err:write(tostring(failure), "\n")
    return 1
  end
  if o.verbose then err:write(("< %d requests, %d failed\n"):format(#requests, failed)) end
  return failed > 0 and 1 or 0
end

local function run(argv, env, out, err, stdin, is_terminal)
  local o = parse_args(argv)
  if o.help then
    local first = o.positional[1]
    out:write(COMMANDS[first or ""] and COMMANDS[first].path and resource_help(first) or _M.USAGE)
    return 0
  end
  if o.version then
    out:write(version_line())
    return 0
  end
  if #o.positional == 0 then
    err:write(_M.USAGE)   -- a usage mistake: keep standard output clean
    return 2
  end
  local command, first_word = resolve(o.positional)
  local words = { unpack(o.positional, first_word) }
  if #words < #command.words then
    usage_error(("'%s' is missing %s (usage: %s)"):format(command.label, command.words[#words + 1],
      synopsis(command)))
  elseif #words > #command.words then
    usage_error(("'%s' got an extra word '%s' (usage: %s)"):format(command.label, words[#command.words + 1],
      synopsis(command)))
  end
  if command ~= BATCH then
    if o.journal then usage_error("--journal works with batch only") end
    if o.concurrency then usage_error("--concurrency works with batch only") end
  elseif #o.header > 0 or o.idempotency_key then
    usage_error("'batch' takes no --header or --idempotency-key: each line's opts hold its own")
  end
  if o.all and command.method ~= "list" then usage_error("--all works with list only") end
  if o.all and o.format == "stream" then
    usage_error("--all cannot be combined with --format stream (a stream list already has every record)")
  end
  if o.data and #o.form > 0 then usage_error("--data and --form cannot be combined") end
  if command.target == "mcp" and #o.form > 0 then
    usage_error("'" .. command.label .. "' takes JSON: --data, not --form")
  end
  if not command.body then
    if o.data then usage_error("'" .. command.label .. "' takes no --data") end
    if #o.form > 0 then usage_error("'" .. command.label .. "' takes no --form") end
  end
  if command.body == "required" and not o.data and #o.form == 0 then usage_error("--data or --form is required") end

  local headers = {}
  for _, line in ipairs(o.header) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if not name then usage_error("--header needs 'NAME: VALUE', got '" .. line .. "'") end
    headers[name] = value
  end
  local query = build_query(o, env, command.env_account)
  -- The account of each request that names none (batch).
  local default_account = command.default_account and query.integrated_account_id
  if default_account then query.integrated_account_id = nil end
  if not command.query and next(query) ~= nil then
    usage_error("'" .. command.label .. "' takes no query parameters")
  end
  local timeout = o.timeout and number_option(o.timeout, "--timeout") or nil
  local max_retries = o.retries and number_option(o.retries, "--retries", true) or nil
  local body
  if o.data then
    body = read_body(o.data, stdin)
  elseif #o.form > 0 then
    body = form_body(o.form)
  end
  -- Checked after every argument: the account may come from the environment.
  if command.needs_account and (query.integrated_account_id == nil or query.integrated_account_id == "") then
    usage_error(("'%s' needs an integrated account: pass -a ID or set TRUTO_INTEGRATED_ACCOUNT_ID"):format(
      command.label))
  end

  local token = env.TRUTO_API_TOKEN
  if not token or token == "" then
    err:write("truto: set TRUTO_API_TOKEN to your API token\n")
    return 2
  end

  -- --all's progress line, redrawn in place on standard error for someone
  -- watching a terminal: not into a file or pipe, not between records shown
  -- on the same terminal, not between -v's lines.  Counts only grow, so a
  -- redrawn line always covers the one before it.
  local pages, records, drawn = 0, 0, false
  local progress = o.all and not o.verbose and is_terminal(err) and not is_terminal(out)
  local function draw_progress(line_end)
    err:write("\r", plural(pages, "page"), ", ", plural(records, "record"), line_end)
    drawn = true
  end

  local on_request
  if o.verbose then
    -- The request as sent (the token is redacted by the client; it is not printed anyway).
    on_request = function(req, attempt)
      err:write(("> %s %s%s\n"):format(req.method, req.url, attempt > 1 and (" (attempt %d)"):format(attempt) or ""))
    end
  elseif progress then
    -- A page is asked for once every record of the pages before it is out.
    on_request = function(_, attempt)
      if attempt > 1 then return end
      if pages > 0 then draw_progress("") end
      pages = pages + 1
    end
  end
  local client = truto.new {
    token = token,
    base_url = o.base_url or (env.TRUTO_BASE_URL ~= "" and env.TRUTO_BASE_URL) or nil,
    timeout = timeout,
    max_retries = max_retries,
    on_request = on_request,
  }

  if command == BATCH then return run_batch(client, words[1], default_account, o, stdin, out, err) end

  local opts = { headers = headers, idempotency_key = o.idempotency_key }
  local target = command.target and client[command.target] or client

  if o.all then
    local args, n = call_args(command, words, nil, query, opts)
    for record, failure in target:each(unpack(args, 1, n)) do
      if not record then
        if drawn then err:write("\n") end   -- the error starts a line of its own
        err:write(tostring(failure), "\n")
        return 1
      end
      out:write(truto.encode_json(record), "\n")
      records = records + 1
    end
    if progress then draw_progress("\n") end
    if o.verbose then err:write(("< %d records\n"):format(records)) end
    return 0
  end

  -- The body is written as it arrives, exactly as the server sent it; an
  -- MCP call's answer is read whole, and its JSON-RPC result written.
  local wrote_newline = true
  if command.target ~= "mcp" then
    opts.sink = function(chunk)
      out:write(chunk)
      wrote_newline = chunk:sub(-1) == "\n"
    end
  end
  local args, n = call_args(command, words, body, query, opts)
  local ok, response_or_err = target[command.method](target, unpack(args, 1, n))
  if ok and not opts.sink then out:write(type(ok) == "string" and ok or truto.encode_json(ok), "\n") end
  if not ok then
    err:write(tostring(response_or_err), "\n")
    local error_body = response_or_err.body
    if type(error_body) == "table" then
      err:write(truto.encode_json(error_body), "\n")
    end
    return 1
  end
  if not wrote_newline then out:write("\n") end
  if o.verbose then
    err:write(("< %d (%d attempt%s)\n"):format(response_or_err.status, response_or_err.attempts,
      response_or_err.attempts == 1 and "" or "s"))
  end
  return 0
end

-- Whether a stream is a terminal: only an open Lua file can be one.
local function file_is_terminal(stream)
  return io.type(stream) == "file" and core.isatty(stream) == true
end

--- Runs the command.
---@param argv string[] the arguments after the command's name
---@param env table the environment: env.NAME is the variable's value or nil
---@param out file* standard output (anything with a write method)
---@param err file* standard error (likewise)
---@param stdin? file* standard input, read by --data @- (default: io.stdin)
---@param is_terminal? fun(stream: any): boolean whether out or err is a terminal (default: the C
--- core's isatty for an open file; anything else is not one)
---@return integer status the exit status: 0, 1 for a failed call, 2 for a usage mistake
function _M.main(argv, env, out, err, stdin, is_terminal)
  local ok, status = pcall(run, argv, env, out, err, stdin or io.stdin, is_terminal or file_is_terminal)
  if ok then return status end
  if type(status) == "table" and status.usage then
    err:write("truto: ", status.usage, "\n(see truto --help)\n")
    return 2
  end
  -- A raised error: a programmer error in the arguments (bad id, bad JSON
  -- value...).  Show its message without a traceback or a source position.
  err:write((tostring(status):gsub("^[^\n:]+%.lua:%d+: ", "")), "\n")
  return 2
end

return _M

--- The `truto` command: every Unified, Proxy and Custom API call from a
-- shell.  main() takes its arguments, environment, output streams and
-- terminal check as parameters so that the spec can run it in-process.
local truto = require "truto"
local core = require "truto.core"   -- curl_version and isatty, which truto does not export

local _M = {}

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
  truto --version

Calls Truto's API (https://api.truto.one) and writes the response body, exactly as
received, to standard output.  Errors go to standard error with exit status 1;
usage mistakes exit with status 2, among them an empty option value (-a "", as
an unset shell variable gives) and a mistyped API, verb or long option, which is
answered with the closest one ("did you mean 'update'?").

Options:
  -a, --integrated-account-id ID  the integrated account (default: $TRUTO_INTEGRATED_ACCOUNT_ID);
                           unified and proxy calls need one, from -a, from
                           -q integrated_account_id=ID or from the environment;
                           custom calls can go without
  -d, --data BODY          JSON request body: inline text, @FILE, or @- for standard input
  -q, --query KEY=VALUE    a query parameter; brackets nest: -q 'created_at[gt]=2026-01-01'
                           (repeatable; KEY[]=VALUE appends to a list)
  -x, --exclude FIELD      adds FIELD to truto_exclude_fields[] (repeatable)
  -r, --remote-query K=V   adds remote_query[K]=V, passed to the provider untouched (repeatable)
  -f, --format FORMAT      truto_response_format: unified (default), raw, normalized, stream
      --ignore-remote-data sets truto_ignore_remote_data=true
      --limit N            page size of a list
      --cursor CURSOR      next_cursor of the page to fetch
      --all                list only: follow next_cursor through every page and write one
                           record per line (JSON Lines); not with --format stream, which
                           already sends every record, one per line.  While standard error
                           is a terminal and standard output is not, it shows the pages and
                           records so far there (not with -v)
  -H, --header 'NAME: VALUE'  an extra request header (repeatable)
      --idempotency-key KEY   makes a POST or PATCH safe to retry
      --timeout SECONDS    total time allowed for each attempt (default 30)
      --retries N          retries of failed attempts that are safe to retry (default 2)
      --base-url URL       the API's address (default: $TRUTO_BASE_URL or https://api.truto.one)
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
]]

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

-- "a, b or c" (names has two or more)
local function one_of(names)
  return table.concat(names, ", ", 1, #names - 1) .. " or " .. names[#names]
end

-- The usage error for a word that is none of the names (a sorted list)
-- expected where it stands.  It suggests the closest name; failing that,
-- with list_them, it lists them all.
local function unknown(kind, word, names, list_them)
  local message = ("unknown %s '%s'"):format(kind, word)
  local hint = closest(word, names)
  if hint then
    message = message .. (" (did you mean '%s'?)"):format(hint)
  elseif list_them then
    message = message .. " (expected " .. one_of(names) .. ")"
  end
  usage_error(message)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
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
    text = stdin:read("a")
  elseif arg:sub(1, 1) == "@" then
    local f, err = io.open(arg:sub(2), "rb")
    if not f then usage_error("cannot read --data file: " .. err) end
    text = f:read("a")
    f:close()
  else
    text = arg
  end
  local value, err = truto.decode_json(text)
  if type(value) ~= "table" then usage_error("--data must be a JSON object or array" .. (err and ": " .. err or "")) end
  return value
end

local VALUE_OPTIONS = {
  ["-a"] = "account", ["--integrated-account-id"] = "account", ["-d"] = "data", ["--data"] = "data",
  ["-q"] = "query", ["--query"] = "query", ["-x"] = "exclude", ["--exclude"] = "exclude",
  ["-r"] = "remote_query", ["--remote-query"] = "remote_query", ["-f"] = "format", ["--format"] = "format",
  ["--limit"] = "limit", ["--cursor"] = "cursor", ["-H"] = "header", ["--header"] = "header",
  ["--idempotency-key"] = "idempotency_key", ["--timeout"] = "timeout", ["--retries"] = "retries",
  ["--base-url"] = "base_url",
}
local FLAG_OPTIONS = { ["--ignore-remote-data"] = "ignore_remote_data", ["--all"] = "all",
  ["-v"] = "verbose", ["--verbose"] = "verbose", ["-h"] = "help", ["--help"] = "help",
  ["-V"] = "version", ["--version"] = "version" }
local REPEATED = { query = true, exclude = true, remote_query = true, header = true }

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
  local o = { positional = {}, query = {}, exclude = {}, remote_query = {}, header = {} }
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
  if not n or n < 0 or (integer and math.type(n) ~= "integer") then
    usage_error(name .. " must be a " .. (integer and "whole number" or "number") .. ", got '" .. value .. "'")
  end
  return n
end

local function build_query(o, env)
  local q = {}
  for _, pair in ipairs(o.query) do set_query(q, split_pair(pair, "--query")) end
  -- -a wins over -q integrated_account_id=..., and either over the
  -- environment's default.
  if o.account then
    q.integrated_account_id = o.account
  elseif q.integrated_account_id == nil and env.TRUTO_INTEGRATED_ACCOUNT_ID ~= "" then
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

-- api, verb -> the client method and how many names (model, resource, id...)
-- come before the body/query arguments.
local COMMANDS = {
  unified = {
    list = { "list", 2 }, get = { "get", 3 }, create = { "create", 2, body = true },
    update = { "update", 3, body = true }, delete = { "delete", 3 },
    call = { "custom_method", 3, body = true, optional_body = true }, meta = { "meta", 3 },
  },
  proxy = {
    list = { "list", 1 }, get = { "get", 2 }, create = { "create", 1, body = true },
    update = { "update", 2, body = true }, delete = { "delete", 2 },
    call = { "custom_method", 2, body = true, optional_body = true },
  },
  custom = {
    get = { "get", 1 }, delete = { "delete", 1 }, post = { "post", 1, body = true, optional_body = true },
    put = { "put", 1, body = true, optional_body = true }, patch = { "patch", 1, body = true, optional_body = true },
  },
}
local APIS = sorted_keys(COMMANDS)
local VERBS = {}   -- api -> its verbs, sorted
for api, commands in pairs(COMMANDS) do VERBS[api] = sorted_keys(commands) end

-- Unified and Proxy calls act on one integrated account; Truto's Custom API
-- can go without.
local NEEDS_ACCOUNT = { unified = true, proxy = true }

-- "1 page", "3 pages"
local function plural(n, noun)
  return n .. " " .. noun .. (n == 1 and "" or "s")
end

-- The --version line: the command's version (that of lua-truto, which it
-- ships with), then what it runs on.
local function version_line()
  return ("truto %s (lua-truto %s, libcurl %s, %s)\n"):format(truto.VERSION, truto.VERSION, core.curl_version,
    _VERSION)
end

local function run(argv, env, out, err, stdin, is_terminal)
  local o = parse_args(argv)
  if o.help then
    out:write(_M.USAGE)
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
  local api, verb = o.positional[1], o.positional[2]
  local commands = COMMANDS[api]
  if not commands then unknown("API", api, APIS, true) end
  if not verb then usage_error("'" .. api .. "' needs a verb (expected " .. one_of(VERBS[api]) .. ")") end
  local command = commands[verb]
  if not command then unknown("verb", verb, VERBS[api], true) end
  local method, nnames = command[1], command[2]
  if #o.positional ~= 2 + nnames then
    usage_error(("'%s %s' takes %d name(s), got %d"):format(api, verb, nnames, #o.positional - 2))
  end
  if o.all and not (verb == "list" and api ~= "custom") then usage_error("--all works with list only") end
  if o.all and o.format == "stream" then
    usage_error("--all cannot be combined with --format stream (a stream list already has every record)")
  end
  if o.data and not command.body then usage_error("'" .. api .. " " .. verb .. "' takes no --data") end
  if command.body and not command.optional_body and not o.data then usage_error("--data is required") end

  local headers = {}
  for _, line in ipairs(o.header) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if not name then usage_error("--header needs 'NAME: VALUE', got '" .. line .. "'") end
    headers[name] = value
  end
  local query = build_query(o, env)
  local timeout = o.timeout and number_option(o.timeout, "--timeout") or nil
  local max_retries = o.retries and number_option(o.retries, "--retries", true) or nil
  local body = o.data and read_body(o.data, stdin) or nil
  -- Checked after every argument: the account may come from the environment.
  if NEEDS_ACCOUNT[api] and (query.integrated_account_id == nil or query.integrated_account_id == "") then
    usage_error(("'%s %s' needs an integrated account: pass -a ID or set TRUTO_INTEGRATED_ACCOUNT_ID"):format(api,
      verb))
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

  local opts = { headers = headers, idempotency_key = o.idempotency_key }
  local target = client[api .. "_api"]
  local names = { table.unpack(o.positional, 3) }

  if o.all then
    names[#names + 1] = query
    names[#names + 1] = opts
    for record, failure in target:each(table.unpack(names, 1, #names)) do
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

  -- The body is written as it arrives, exactly as the server sent it.
  local wrote_newline = true
  opts.sink = function(chunk)
    out:write(chunk)
    wrote_newline = chunk:sub(-1) == "\n"
  end
  local args, n = names, #names
  if command.body then
    n = n + 1
    args[n] = body
  end
  args[n + 1], args[n + 2] = query, opts
  local ok, response_or_err = target[method](target, table.unpack(args, 1, n + 2))
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

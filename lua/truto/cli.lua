--- The `truto` command: every Unified, Proxy and Custom API call from a
-- shell.  main() takes its arguments, environment and output streams as
-- parameters so that the spec can run it in-process.
local truto = require "truto"

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

Calls Truto's API (https://api.truto.one) and writes the response body, exactly as
received, to standard output.  Errors go to standard error with exit status 1;
usage mistakes exit with status 2.

Options:
  -a, --integrated-account-id ID  the integrated account (default: $TRUTO_INTEGRATED_ACCOUNT_ID)
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
                           already sends every record, one per line
  -H, --header 'NAME: VALUE'  an extra request header (repeatable)
      --idempotency-key KEY   makes a POST or PATCH safe to retry
      --timeout SECONDS    total time allowed for each attempt (default 30)
      --retries N          retries of failed attempts that are safe to retry (default 2)
      --base-url URL       the API's address (default: $TRUTO_BASE_URL or https://api.truto.one)
  -v, --verbose            write each attempt's request line and the final status to
                           standard error
  -h, --help               this text
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
  ["-v"] = "verbose", ["--verbose"] = "verbose", ["-h"] = "help", ["--help"] = "help" }
local REPEATED = { query = true, exclude = true, remote_query = true, header = true }

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
      local key = VALUE_OPTIONS[name]
      if REPEATED[key] then o[key][#o[key] + 1] = value else o[key] = value end
    elseif FLAG_OPTIONS[arg] then
      o[FLAG_OPTIONS[arg]] = true
    elseif arg:sub(1, 1) == "-" and arg ~= "-" then
      usage_error("unknown option " .. arg)
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
  local account = o.account or env.TRUTO_INTEGRATED_ACCOUNT_ID
  if account and account ~= "" then q.integrated_account_id = account end
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

local function run(argv, env, out, err, stdin)
  local o = parse_args(argv)
  if o.help then
    out:write(_M.USAGE)
    return 0
  end
  if #o.positional == 0 then
    err:write(_M.USAGE)   -- a usage mistake: keep standard output clean
    return 2
  end
  local api, verb = o.positional[1], o.positional[2]
  local commands = COMMANDS[api]
  if not commands then usage_error("the first word must be unified, proxy or custom, got '" .. api .. "'") end
  local command = verb and commands[verb]
  if not command then usage_error("unknown " .. api .. " command '" .. tostring(verb) .. "'") end
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

  local token = env.TRUTO_API_TOKEN
  if not token or token == "" then
    err:write("truto: set TRUTO_API_TOKEN to your API token\n")
    return 2
  end
  local client = truto.new {
    token = token,
    base_url = o.base_url or (env.TRUTO_BASE_URL ~= "" and env.TRUTO_BASE_URL) or nil,
    timeout = o.timeout and number_option(o.timeout, "--timeout") or nil,
    max_retries = o.retries and number_option(o.retries, "--retries", true) or nil,
    -- The request as sent (the token is redacted by the client; it is not printed anyway).
    on_request = o.verbose and function(req, attempt)
      err:write(("> %s %s%s\n"):format(req.method, req.url, attempt > 1 and (" (attempt %d)"):format(attempt) or ""))
    end or nil,
  }

  local query = build_query(o, env)
  local opts = { headers = headers, idempotency_key = o.idempotency_key }
  local target = client[api .. "_api"]
  local names = { table.unpack(o.positional, 3) }

  if o.all then
    local count = 0
    names[#names + 1] = query
    names[#names + 1] = opts
    for record, failure in target:each(table.unpack(names, 1, #names)) do
      if not record then
        err:write(tostring(failure), "\n")
        return 1
      end
      out:write(truto.encode_json(record), "\n")
      count = count + 1
    end
    if o.verbose then err:write(("< %d records\n"):format(count)) end
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
    args[n] = o.data and read_body(o.data, stdin) or nil
  end
  args[n + 1], args[n + 2] = query, opts
  local ok, response_or_err = target[method](target, table.unpack(args, 1, n + 2))
  if not ok then
    err:write(tostring(response_or_err), "\n")
    local body = response_or_err.body
    if type(body) == "table" then
      err:write(truto.encode_json(body), "\n")
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

--- Runs the command; returns the exit status.
function _M.main(argv, env, out, err, stdin)
  local ok, status = pcall(run, argv, env, out, err, stdin or io.stdin)
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

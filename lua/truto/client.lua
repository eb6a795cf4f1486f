--- The client: truto.new{...} and its unified_api, proxy_api and custom_api.
-- Every call builds its request in the C core, sends it through the
-- transport, retries what is safe to retry, and returns `result, response`
-- or `nil, err`.  Users reach it through `truto.new`, not `require`.
local core = require "truto.core"
local errors = require "truto.errors"
-- truto.multipart, loaded at the first upload.
local multipart_module
local function multipart()
  multipart_module = multipart_module or require "truto.multipart"
  return multipart_module
end
-- truto.journal, loaded by the first batch with a journal.
local loaded_journal_module
local function journal_module()
  loaded_journal_module = loaded_journal_module or require "truto.journal"
  return loaded_journal_module
end
local ratelimit = require "truto.ratelimit"
local redirect = require "truto.redirect"
local retry = require "truto.retry"
local schema = require "truto.schema"

local _M = {}

local DEFAULT_BASE_URL = "https://api.truto.one"
local UNCAPPED = 2 ^ 53

--- The options of `truto.new`.  An unknown option or a value of the wrong
-- type raises; the table is copied, not kept.
---@class truto.Options
-- The API token, sent as `Authorization: Bearer ...` and never shown in any
-- message (default `$TRUTO_API_TOKEN`; one of the two is required).
---@field token? string
-- `http(s)://host[:port][/prefix]`, no query or fragment (default
-- `$TRUTO_BASE_URL`, else `"https://api.truto.one"`).
---@field base_url? string
---@field timeout? number seconds for one attempt, redirects and the whole body included (default 30)
---@field connect_timeout? number seconds to connect, TCP and TLS (default 10)
---@field max_retries? integer retries after the first attempt, 0 to 10, of failures safe to retry (default 2)
---@field retry? truto.RetryOptions the back-off between attempts
-- `"auto"` (default): every POST and PATCH gets a random `Idempotency-Key`,
-- the same for all its attempts, which makes it safe to retry; `false` sends none.
---@field idempotency? "auto"|false
---@field headers? table<string, string|number|false> headers sent with every call (`false` removes a default one)
-- Called before each attempt with the request, `{ method, url, headers, body }`
-- (headers a list of `"Name: value"` lines, the Authorization one reading
-- `[REDACTED]`), and the attempt's number, from 1.
---@field on_request? fun(request: table, attempt: integer)
---@field sleep? fun(seconds: number) waits between attempts (default: the transport's; tests pass a fake)
-- `"auto"` (default: cosockets inside nginx, HAProxy's sockets inside
-- HAProxy, libcurl elsewhere), `"curl"`, `"ngx"`, `"cqueues"` (in a
-- coroutine of a cqueues controller), `"luv"` (in a coroutine, over libuv:
-- lua-luv or Neovim's `vim.loop`), `"haproxy"`, or a table with a
-- `perform(self, request, call)` method.
---@field transport? "auto"|"curl"|"ngx"|"cqueues"|"luv"|"haproxy"|table
-- With transport `"luv"`: the uv module to use (default: Neovim's `vim.uv` or
-- `vim.loop`, else `require "luv"`), e.g. Luvit's `require "uv"`.
---@field uv? table
---@field ca_file? string a file of CA certificates to verify the server with (default: the system's)
---@field ca_path? string a directory of CA certificates (default: the system's)
---@field insecure? boolean `true` turns TLS verification off (default `false`)
---@field proxy? string an HTTP(S) proxy URL (default: libcurl's, from `$https_proxy` and the like)
---@field max_response_bytes? integer cap on a decoded body kept in memory, in bytes (default 64 MiB)
---@field http2? boolean negotiate HTTP/2 over TLS when the server offers it (default `true`)
-- Follow up to 5 redirects (default `false`), with every transport and in
-- batches; never from https to http, and `Authorization` never goes to another host.
---@field follow_redirects? boolean
---@field pool? string inside nginx, the name of the keep-alive pool (default `"truto"`)
---@field rate_limit? truto.RateLimit client-side pacing per integrated account (default: off)

--- `truto.Options.retry`: the back-off between attempts, full jitter over
-- `min(cap, base * 2^(n-1))` seconds unless the server says how long to wait.
---@class truto.RetryOptions
---@field base? number seconds (default 0.5)
---@field cap? number seconds (default 30)
---@field max_retry_after? number cap on a server's `Retry-After` or `ratelimit-reset`, seconds (default 60)
-- Seconds a call may take in all, retries and waits included; an attempt
-- still running then is cut (default: none).
---@field deadline? number

--- `truto.Options.rate_limit`: at most `requests` calls per `per` seconds for
-- each integrated account (a sliding window, retries included).
---@class truto.RateLimit
---@field requests integer calls per window, > 0 (Truto allows 50)
---@field per number the window in seconds, > 0 (Truto's: 10)

-- Options of truto.new, each with its check.  A name not listed is an error.
-- (truto.Options above documents them: keep the two in step.)
local function positive_number(v) return type(v) == "number" and v > 0 and v < math.huge end
-- Seconds libcurl can be given (in milliseconds, as a C long on every platform).
local function seconds(v) return positive_number(v) and v <= 2147483 end
-- An integral number, in Lua 5.4 (integer subtype) and in LuaJIT (doubles) alike.
local function integer(v) return type(v) == "number" and v % 1 == 0 and v > -2 ^ 63 and v < 2 ^ 63 end
local function boolean(v) return type(v) == "boolean" end
local function string_(v) return type(v) == "string" end
local function optional_string(v) return type(v) == "string" and v ~= "" end
local function table_(v) return type(v) == "table" end
local function function_(v) return type(v) == "function" end

-- The fields of `rate_limit`, each with its check (a store is checked
-- further when the client is made).
local RATE_LIMIT_FIELDS = {
  requests = integer,
  per = positive_number,
  store = function(v) return type(v) == "string" or type(v) == "table" end,
  on_store_error = function(v) return v == "local" or v == "fail" end,
  expected_processes = function(v) return integer(v) and v >= 1 end,
  store_timeout = function(v) return seconds(v) end,
  margin = function(v) return v == 0 or positive_number(v) end,
}

local CLIENT_OPTIONS = {
  token = { string_, "a string" },
  base_url = { string_, "a string" },
  timeout = { seconds, "a number of seconds > 0, at most 2147483" },
  connect_timeout = { seconds, "a number of seconds > 0, at most 2147483" },
  max_retries = { function(v) return integer(v) and v >= 0 and v <= 10 end,
                  "an integer from 0 to 10" },
  headers = { table_, "a table" },
  transport = { function(v)
    return v == "auto" or v == "curl" or v == "ngx" or v == "cqueues" or v == "luv" or v == "haproxy"
      or (type(v) == "table" and type(v.perform) == "function")
  end, "\"auto\", \"curl\", \"ngx\", \"cqueues\", \"luv\", \"haproxy\" or a table with a perform method" },
  uv = { function(v) return type(v) == "table" and type(v.new_tcp) == "function" end,
         "a uv module (luv's, with new_tcp)" },
  idempotency = { function(v) return v == "auto" or v == false end, "\"auto\" or false" },
  retry = { table_, "a table" },
  sleep = { function_, "a function" },
  on_request = { function_, "a function" },
  log = { function_, "a function" },
  rate_limit = { function(v)
    if type(v) ~= "table" or not integer(v.requests) or v.requests < 1 or not positive_number(v.per) then
      return false
    end
    for name, value in pairs(v) do
      local check = RATE_LIMIT_FIELDS[name]
      if not check or not check(value) then return false end
    end
    return true
  end, "{ requests = <integer > 0>, per = <seconds > 0>, store =, on_store_error = \"local\" | \"fail\", "
    .. "expected_processes = <integer > 0>, store_timeout = <seconds > 0>, margin = <seconds >= 0> }" },
  ca_file = { optional_string, "a path" },
  ca_path = { optional_string, "a path" },
  insecure = { boolean, "a boolean" },
  proxy = { string_, "a string" },
  max_response_bytes = { function(v) return integer(v) and v > 0 end, "an integer > 0" },
  http2 = { boolean, "a boolean" },
  follow_redirects = { boolean, "a boolean" },
  pool = { optional_string, "a non-empty string" },
}

local RETRY_OPTIONS = {
  base = positive_number, cap = positive_number, max_retry_after = positive_number, deadline = positive_number,
}

--- The per-call options: the last, optional argument of every API method.
---@class truto.CallOpts
---@field headers? table<string, string|number|false> extra headers for this call (`false` removes one)
---@field timeout? number seconds for each attempt of this call
---@field connect_timeout? number seconds to connect, for this call
-- Sets `Idempotency-Key` (at most 255 bytes), which makes a POST or PATCH
-- retryable; the same key replays Truto's first answer.
---@field idempotency_key? string
-- Receives a 2xx body in chunks as they arrive, so memory stays flat; the
-- result is then `true`.  Raising, or returning `false` or `nil, err`, stops the
-- transfer and the error is raised again after it.
---@field sink? fun(chunk: string): any
---@field max_retries? integer retries for this call, 0 to 10
---@field max_response_bytes? integer cap on the body, in bytes (with a sink: none unless given)
-- Seconds this call may take in all, retries and pacing waits included
-- (default: the client's `retry.deadline`).
---@field deadline? number

local CALL_OPTIONS = {
  headers = { table_, "a table" },
  timeout = CLIENT_OPTIONS.timeout,
  connect_timeout = CLIENT_OPTIONS.connect_timeout,
  idempotency_key = { function(v) return type(v) == "string" and v ~= "" and #v <= 255 end,
                      "a non-empty string of at most 255 bytes" },
  sink = { function_, "a function" },
  max_retries = CLIENT_OPTIONS.max_retries,
  max_response_bytes = CLIENT_OPTIONS.max_response_bytes,
  deadline = { positive_number, "a number of seconds > 0" },
}

local function checked_copy(given, known, what, level)
  local copy = {}
  if given == nil then return copy end
  if type(given) ~= "table" then
    error(("%s must be a table, got %s"):format(what, type(given)), level + 1)
  end
  for name, value in pairs(given) do
    local rule = known[name]
    if rule == nil then
      error(("%s: unknown option '%s'"):format(what, tostring(name)), level + 1)
    end
    if not rule[1](value) then
      error(("%s: option '%s' must be %s"):format(what, name, rule[2]), level + 1)
    end
    copy[name] = value
  end
  return copy
end

-- Where the client says what it decided for the fleet (a store that failed,
-- an account blocked by a 429) when `log` is not given: the host's log.
local function host_log()
  local ngx, haproxy = rawget(_G, "ngx"), rawget(_G, "core")
  if type(ngx) == "table" and type(ngx.log) == "function" then
    return function(message) ngx.log(ngx.WARN, "truto: ", message) end
  end
  if type(haproxy) == "table" and type(haproxy.Warning) == "function" then
    return function(message) haproxy.Warning("truto: " .. message) end
  end
  return function(message) io.stderr:write("truto: ", message, "\n") end
end

-- Inside nginx (OpenResty) the cosocket transport and inside HAProxy its
-- sockets' (each host known by its global), so that no call blocks the
-- host's loop; libcurl everywhere else.
local function choose_transport(name, options)
  if type(name) == "table" then return name end
  if name == "auto" then
    local ngx, haproxy = rawget(_G, "ngx"), rawget(_G, "core")
    if type(ngx) == "table" and type(ngx.get_phase) == "function" then
      name = "ngx"
    elseif type(haproxy) == "table" and type(haproxy.tcp) == "function"
      and type(haproxy.register_service) == "function" then
      name = "haproxy"
    else
      name = "curl"
    end
  end
  -- A host's transport needs the host's modules (cqueues, luv, ...), which may be missing.
  local loaded, transport = pcall(require, "truto." .. name)
  if loaded then loaded, transport = pcall(transport.new, options) end
  if not loaded then error(("truto.new: transport \"%s\" cannot be loaded: %s"):format(name, transport), 3) end
  return transport
end

--- A client, made by `truto.new`: the three APIs, client-side batches and a
-- kept-alive connection.  Every API method returns `result, response` on
-- success and `nil, err` on an expected failure (`truto.Error`); a programmer
-- error (a wrong argument type, an unknown option) raises.
---@class truto.Client
---@field unified_api truto.UnifiedApi Truto's Unified API: `client.unified_api:update(...)`
---@field proxy_api truto.ProxyApi Truto's Proxy API
---@field custom_api truto.CustomApi Truto's Custom API
-- Truto's platform resources (README.md, "Platform API"):
---@field integrated_accounts truto.IntegratedAccounts Truto's `/integrated-account`
---@field integrations truto.Installable Truto's `/integration`
---@field environments truto.PlatformResource Truto's `/environment`
---@field environment_integrations truto.PlatformResource Truto's `/environment-integration`
---@field unified_models truto.Installable Truto's `/unified-model`
---@field environment_unified_models truto.PlatformResource Truto's `/environment-unified-model`
---@field teams truto.PlatformResource Truto's `/team`
---@field users truto.PlatformResource Truto's `/user`
---@field api_tokens truto.PlatformResource Truto's `/api-token`
---@field categories truto.PlatformResource Truto's `/category`
---@field link_tokens truto.PlatformResource Truto's `/link-token`
---@field sync_jobs truto.PlatformResource Truto's `/sync-job`
---@field sync_job_runs truto.PlatformResource Truto's `/sync-job-run`
---@field sync_job_cron_triggers truto.CronTriggers Truto's `/sync-job-cron-trigger`
---@field daemons truto.PlatformResource Truto's `/daemon`
---@field daemon_jobs truto.PlatformResource Truto's `/daemon-job`
---@field daemon_job_runs truto.PlatformResource Truto's `/daemon-job-run`
---@field daemon_job_cron_triggers truto.CronTriggers Truto's `/daemon-job-cron-trigger`
---@field datastores truto.Datastores Truto's `/datastore`
---@field documentation truto.PlatformResource Truto's `/documentation`
---@field logs truto.PlatformResource Truto's `/log`
---@field webhooks truto.Webhooks Truto's `/webhook`
---@field workflows truto.PlatformResource Truto's `/workflow`
---@field workflow_runs truto.PlatformResource Truto's `/workflow-run`
---@field alarms truto.PlatformResource Truto's `/alarm`
---@field static_gates truto.PlatformResource Truto's `/static-gate`
---@field sandbox_integrated_accounts truto.PlatformResource Truto's `/sandbox-integrated-account`
---@field integrated_account_webhooks truto.InboundWebhooks Truto's `/integrated-account-webhook`
---@field environment_integration_webhooks truto.InboundWebhooks Truto's `/environment-integration-webhook`
---@field batch_requests truto.BatchRequests Truto's server-side batch, `POST /batch-request`
---@field mcp truto.Mcp Truto's MCP servers, JSON-RPC 2.0 on `POST /mcp/{token}`
local Client = {}
Client.__index = Client

-- What a client's platform resource object starts with, by name (filled
-- below, with the resources): at its first method look-up it takes its
-- methods.
local LAZY_RESOURCE = {}

--- Makes a client; this is `truto.new`.  It opens no connection.  Raises on
-- an unknown option, a value of the wrong type, a bad base URL, or no token.
---@param given? truto.Options the options (the token may come from `$TRUTO_API_TOKEN`)
---@return truto.Client client
function _M.new(given)
  local options = checked_copy(given, CLIENT_OPTIONS, "truto.new", 2)
  local self = setmetatable({}, Client)
  self.token = options.token or os.getenv("TRUTO_API_TOKEN")
  if self.token == nil or self.token == "" then
    error("truto.new: no API token: pass token = ... or set TRUTO_API_TOKEN", 2)
  end
  self.base_url = options.base_url or os.getenv("TRUTO_BASE_URL") or DEFAULT_BASE_URL
  -- Check the URL and the token now rather than on the first call.
  local ok, err = pcall(core.build_request, { method = "GET", base_url = self.base_url, path = {},
                                              token = self.token, headers = options.headers })
  if not ok then error(err, 2) end

  self.timeout = options.timeout or 30
  self.connect_timeout = options.connect_timeout or 10
  self.max_retries = options.max_retries or 2
  -- On by default: a POST or PATCH with a key can be retried, and can use a
  -- kept-alive connection (see curl.lua), without risking a double write.
  if options.idempotency == nil then self.idempotency = "auto" else self.idempotency = options.idempotency end
  self.headers = {}
  for name, value in pairs(options.headers or {}) do self.headers[name] = value end
  self.build_args = { base_url = self.base_url, token = self.token }
  self.retry = {}
  for name, value in pairs(retry.DEFAULTS) do self.retry[name] = value end
  for name, value in pairs(options.retry or {}) do
    if not RETRY_OPTIONS[name] or not RETRY_OPTIONS[name](value) then
      error(("truto.new: retry.%s is unknown or not a number > 0"):format(tostring(name)), 2)
    end
    self.retry[name] = value
  end
  options.timeout, options.connect_timeout = self.timeout, self.connect_timeout
  self.transport = choose_transport(options.transport or "auto", options)
  self.sleep = options.sleep or self.transport.sleep or core.sleep
  self.on_request = options.on_request
  self.follow_redirects = options.follow_redirects == true
  self.now = self.transport.now or core.now
  self.log = options.log or host_log()
  if options.rate_limit then
    local pacer, perr = ratelimit.new(options.rate_limit, self.now, self.sleep, self.transport, self.log)
    if not pacer then
      if self.transport.close then self.transport:close() end
      error("truto.new: " .. perr, 2)
    end
    self.pacer = pacer
  end

  self.unified_api = setmetatable({ client = self }, _M.Unified)
  self.proxy_api = setmetatable({ client = self }, _M.Proxy)
  self.custom_api = setmetatable({ client = self }, _M.Custom)
  for name, lazy in pairs(LAZY_RESOURCE) do self[name] = setmetatable({ client = self }, lazy) end
  self.mcp = setmetatable({ client = self }, _M.Mcp)
  return self
end

--- Releases the connection(s) the client keeps open.  Idempotent; it is
-- also done when the client is collected.
function Client:close()
  if self.transport.close then self.transport:close() end
end

-- application/json and the +json types; not application/x-ndjson, whose
-- lines are separate documents.  Content-Type values seen are remembered
-- (a server sends one or two): a table look-up per call, not a match.
local json_type, json_types_seen = {}, 0

local function is_json(headers, body)
  local content_type = headers["content-type"]
  local known = content_type and json_type[content_type]
  if known ~= nil then return known end
  local mime = content_type and content_type:match("^%s*([^;%s]+)")
  if not mime then return body:match("^%s*[%[{]") ~= nil end   -- no type: what the body looks like
  mime = mime:lower()
  known = mime == "application/json" or mime:sub(-5) == "+json"
  if json_types_seen >= 64 then json_type, json_types_seen = {}, 0 end   -- bounded
  json_type[content_type], json_types_seen = known, json_types_seen + 1
  return known
end

-- The result of a 2xx response: decoded JSON, the raw text for other
-- content, true for an empty body or a body that went to a sink.
-- decode_error: the transport's reader found the body not valid JSON
-- (body is then its start, as the transport contract says).
local function decode_success(status, headers, body, streamed, secret, decode_error)
  if type(body) == "table" then return body end   -- decoded by the transport (decode_json)
  if streamed or body == nil or body == "" then return true end
  local err = decode_error
  if not err then
    if not is_json(headers, body) then return body end
    local value
    value, err = core.decode_json(body)
    if value ~= nil then return value end
  end
  local e = errors.new({ kind = "decode", message = "response is not valid JSON: " .. err, body = body,
                         status = status, headers = headers }, secret)
  if #e.body > 1000 then e.body = e.body:sub(1, 1000) end   -- cut once the token is out
  return nil, e
end

local function decode_failure(headers, body)
  if body == nil or body == "" then return nil end
  if is_json(headers, body) then
    local value = core.decode_json(body)
    if value ~= nil then return value end
  end
  return body
end

-- A copy of a request that is safe to log: the token is replaced, the URL
-- too when it holds a credential (shown_url), a multipart body is
-- described (its files are never read for the hook), and a large body held
-- in C (a truto.Body) becomes the string the hook is documented to get.
local function redacted(req, shown_url)
  local headers = {}
  for i, line in ipairs(req.headers) do
    headers[i] = line:match("^[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]:") and "Authorization: [REDACTED]"
      or line
  end
  local body = req.body
  if type(body) == "table" and multipart().is_form(body) then body = multipart().describe(body) end
  if type(body) == "userdata" then body = tostring(body) end
  return { method = req.method, url = shown_url or req.url, headers = headers, body = body }
end

-- The body as the C core writes it (nil for an upload) and, for an upload,
-- what the transport sends instead: the bytes of a truto.raw, or the form of
-- a body holding truto.file values, with its Content-Type.  Raises (level 0)
-- on a misplaced truto.file.
local function upload_body(body)
  local bytes, content_type = multipart().raw_body(body)
  if bytes then return nil, bytes, content_type end
  local form = multipart().form(body)
  if form then return nil, form, "multipart/form-data; boundary=" .. form.boundary end
  return body
end

-- No per-call options: read only, shared by every such call.
local NO_OPTS = setmetatable({}, { __newindex = function() error("NO_OPTS is read-only", 2) end })

-- The headers of a call: the client's own table when the call adds none
-- (build_request reads it and changes nothing: the Idempotency-Key goes
-- apart), else the call's over a copy of the client's.
local function call_headers(self, opts, upload_type)
  if not (opts.headers or upload_type) then return self.headers end
  local headers = {}
  for name, value in pairs(self.headers) do headers[name] = value end
  for name, value in pairs(opts.headers or NO_OPTS) do headers[name] = value end
  if upload_type then
    -- The upload's own type wins over a caller's Content-Type in any case.
    for name in pairs(headers) do
      if type(name) == "string" and name:lower() == "content-type" then headers[name] = nil end
    end
    headers["Content-Type"] = upload_type
  end
  return headers
end

--- Prepares one logical call: the request is built once, here, and sent
-- by every attempt.  Returns the call's state, which is also what the
-- transport gets for each send (timeout, connect_timeout, sink,
-- max_response_bytes, repeatable).
---@package
---@param spec table { method, path, path_names, query, body, list_fields }
---@param opts? truto.CallOpts
---@param level integer the caller's error level
---@return table call
function Client:prepare(spec, opts, level)
  opts = opts == nil and NO_OPTS or checked_copy(opts, CALL_OPTIONS, "opts", level + 1)
  if spec.answer and opts.sink then
    error("opts.sink: a JSON-RPC answer is read whole, not streamed (client.mcp takes no sink)", level + 1)
  end
  local method = spec.method
  local key = opts.idempotency_key
  if key == nil and self.idempotency == "auto" and (method == "POST" or method == "PATCH") then
    key = core.random_hex(16)   -- one key for every attempt of this call
  end

  -- One argument table per client, refilled for each call: build_request
  -- reads it and keeps nothing.  A call made meanwhile (by a finalizer that
  -- runs while build_request allocates) gets a table of its own.
  local args = self.build_args
  if self.building then
    args = { base_url = self.base_url, token = self.token }
  else
    self.building = true
  end
  args.method, args.path, args.path_names, args.query = method, spec.path, spec.path_names, spec.query
  args.body, args.list_fields = spec.body, spec.list_fields
  args.headers, args.idempotency_key = call_headers(self, opts, nil), key
  local ok, req = pcall(core.build_request, args)
  local upload
  if not ok and multipart().is_upload(spec.body) then
    -- The C writer refuses truto.file and truto.raw values: an upload is
    -- built here, on this slower path only.  Through pcall so that a
    -- misplaced file is reported at the caller's line, not at this one.
    local body, upload_type
    ok, body, upload, upload_type = pcall(upload_body, spec.body)
    if ok then
      args.body, args.headers = body, call_headers(self, opts, upload_type)
      ok, req = pcall(core.build_request, args)
    else
      req = body
    end
  end
  if args == self.build_args then
    args.path, args.path_names, args.query, args.body, args.list_fields = nil, nil, nil, nil, nil
    args.headers, args.idempotency_key, self.building = nil, nil, false
  end
  if not ok then error(req, level + 1) end
  local failed
  if upload then
    req.body = upload
    -- A missing or unreadable file fails the call before anything is sent.
    if multipart().is_form(upload) then failed = select(2, multipart().check(upload)) end
  end

  local query = spec.query
  local account = query and query.integrated_account_id
  local sink = opts.sink
  local call = {
    req = req,
    method = method,
    idempotency_key = key,   -- what a batch's journal records
    repeatable = retry.repeatable(method, key ~= nil),
    shown_path = spec.shown_path,
    account = type(account) == "string" and account or "",
    answer = spec.answer,   -- turns a decoded 2xx body into the result, or nil, err (JSON-RPC)
    -- What errors scrub: the token, and a secret of the call's own (an MCP token).
    secrets = spec.secret and { self.token, spec.secret } or self.token,
    max_retries = opts.max_retries or self.max_retries,
    call_timeout = opts.timeout or self.timeout,
    deadline_seconds = opts.deadline or self.retry.deadline,
    timeout = nil,   -- what the transport gets: the time left (see arm)
    connect_timeout = opts.connect_timeout or self.connect_timeout,
    -- A sink keeps memory flat, so its body is not capped unless asked.
    max_response_bytes = opts.max_response_bytes or (sink and UNCAPPED) or nil,
    attempt = 0,
    delivered = false,
    failed = failed,   -- the error of every attempt: nothing is sent
    -- A 2xx JSON body decoded by the transport from its own buffer (libcurl's
    -- does; the others hand over the text).
    decode_json = true,
  }
  if spec.shown_path then
    call.shown_url = req.url:gsub("^(https?://[^/?]*)[^?]*", function(origin) return origin .. spec.shown_path end)
  end
  if sink then
    call.sink = function(chunk)
      call.delivered = true
      return sink(chunk)
    end
  end
  return call
end

-- The path of a call's URL, for its errors (a credential in it shown as
-- shown_path says).
local function call_path(call)
  return call.shown_path or call.req.url:match("^https?://[^/]*(/[^?]*)") or "/"
end

--- Before each attempt: pacing, the on_request hook, the attempt count,
-- and when the attempt must end: `timeout` from now, never past
-- `retry.deadline`.  A runner that serves other calls meanwhile passes
-- `later`: a pacing wait is then not slept but returned (the call's slot is
-- reserved), and the runner calls again once it is over.
---@package
---@param call table
---@param later? boolean
---@return number? wait seconds until the call's slot, with `later`
function Client:begin_attempt(call, later)
  if not call.paced then
    if call.attempt == 0 and call.deadline_seconds then
      -- From the first attempt: time a batch call spends queued is not its own.
      call.deadline = self.now() + call.deadline_seconds
    end
    call.attempt = call.attempt + 1
    call.hop, call.hops = call.req, 0
  end
  local pacer = self.pacer
  if pacer then
    local wait, err
    if not later then
      wait, err = pacer:acquire(call.account, call.deadline)
    else
      if call.paced then
        wait, err = pacer:recheck(call.account, call.deadline)
      else
        wait, err = pacer:reserve(call.account, call.deadline)
      end
      call.paced = wait and wait > 0 or nil
      if call.paced then return wait end
    end
    if err then
      call.failed = err       -- arm() reports it; nothing is sent
    elseif not wait then
      call.ends = -math.huge   -- arm() reports the deadline; nothing is sent
      return
    end
  end
  if self.on_request and not call.failed then self.on_request(redacted(call.req, call.shown_url), call.attempt) end
  local ends = self.now() + call.call_timeout
  if call.deadline and call.deadline < ends then ends = call.deadline end
  call.ends = ends
end

-- Before each send of an attempt (its redirects included): the transfer
-- gets the time left.  nil, err when none is.
local function arm(self, call)
  if call.failed then return nil, call.failed end
  -- Each send reads the files again: they must still be there, and the size the Content-Length says.
  if type(call.hop.body) == "table" and multipart().is_form(call.hop.body) then
    local ok, err = multipart().check(call.hop.body)
    if not ok then return nil, err end
  end
  local left = call.ends - self.now()
  if left <= 0 then
    if call.deadline and (call.ends >= call.deadline or call.ends == -math.huge) then
      -- final: another attempt would be past the deadline too
      return nil, { kind = "timeout", message = "the call's retry.deadline passed", final = true }
    end
    return nil, { kind = "timeout", message = "timed out following redirects" }
  end
  call.timeout = left
  return true
end

--- After a response, when redirects are followed: true when the call
-- goes on to the next hop (call.hop), nil, err when the redirect is refused,
-- nil when the response is the answer.
---@package
---@param call table
---@param status? integer
---@param headers table|userdata
---@return true|nil follow
---@return table? err
function Client:follow(call, status, headers)
  if not (self.follow_redirects and status) then return nil end
  local hop, err = redirect.next(call.req, call.hop, status, headers, call.hops)
  if not hop then return nil, err end
  call.hop, call.hops = hop, call.hops + 1
  return true
end

-- One attempt: the request and its redirects.  Returns what
-- transport:perform returns.
local function exchange(self, call)
  while true do
    local ok, err = arm(self, call)
    if not ok then return nil, err end
    local status, headers, body, info, decode_error = self.transport:perform(call.hop, call)
    local follow
    follow, err = self:follow(call, status, headers)
    if err then return nil, err end
    if not follow then
      if info then info.redirects = call.hops end
      return status, headers, body, info, decode_error
    end
  end
end

--- What a successful call returns second (a failed one returns `truto.Error`).
---@class truto.Response
---@field status integer the HTTP status
---@field headers table<string, string> the response headers, names in lower case
---@field request_id? string the `x-request-id` header
---@field attempts integer how many attempts were made
---@field info? table transfer details: `http_version`, `total_time`, ...
---@field rate_limit? truto.RateLimitInfo the `ratelimit-*` headers, parsed when first read

--- Truto's `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` headers.
---@class truto.RateLimitInfo
---@field limit? integer requests allowed per window
---@field remaining? integer requests left in this window
---@field reset? integer seconds until the window resets
---@field window? integer the window in seconds, from `ratelimit-limit: 110;w=10`

--- What went wrong: `"http"` (a non-2xx answer), `"timeout"`, `"connect"`
-- (refused, DNS), `"network"` (reset, empty reply), `"tls"`, `"protocol"`
-- (truncated or malformed HTTP, a refused redirect), `"decode"` (a 2xx body that
-- is not valid JSON, corrupt compression), `"too_large"` (a body over
-- `max_response_bytes`, headers over 256 KiB or a header line over 100 KiB),
-- `"phase"` (where the host's sockets cannot yield), `"file"` (a file to
-- upload), `"rpc"` (a JSON-RPC error), `"store"` (the rate-limit store failed,
-- with on_store_error = "fail"), `"journal"` (a batch's journal that cannot be
-- read or written).
---@alias truto.ErrorKind "http"|"timeout"|"connect"|"network"|"tls"|"protocol"|"decode"|"too_large"|"phase"
---| "file"|"rpc"|"store"|"journal"

--- What a failed call returns second, after nil: a table whose `tostring` reads
-- `truto: GET /unified/crm/opportunities/x: 404 Not Found: Record not found` and
-- never shows the token (it is scrubbed from every string the error carries).
---@class truto.Error
---@field kind truto.ErrorKind
---@field status? integer the HTTP status, when there was an answer
---@field message string Truto's `message`, or the provider's `raw_response`, or the transport's error
-- Truto's error envelope, decoded (`statusCode`, `error`, `message`,
-- `truto_error_insight`, `truto_is_remote_error`, `raw_response`), or the raw text.
---@field body? any
---@field headers? table<string, string> the response headers
---@field retry_after? number seconds from `Retry-After` (delta-seconds or an HTTP date)
---@field rate_limit? truto.RateLimitInfo the parsed `ratelimit-*` headers
---@field retryable boolean whether the failure was of a kind that is retried
---@field attempts integer how many attempts were made
---@field method? string the request's method
---@field path? string the request's path, without the query
---@field request_id? string the `x-request-id` header of an HTTP error
---@field curl_code? integer libcurl's error code, for a transport failure under libcurl

-- What the transport returned as each response's headers: a table, or the
-- libcurl transport's header block (a truto.headers userdata, read by
-- name).  Weak keys: the entry goes with its response.
local header_source = setmetatable({}, { __mode = "k" })

-- A response's headers (a table made from the block), request_id and
-- rate_limit are read when first asked for: most callers never look.
local Response = {
  __index = function(response, key)
    local value
    if key == "headers" then
      value = core.header_table(header_source[response])
    elseif key == "request_id" or key == "rate_limit" then
      local headers = rawget(response, "headers") or header_source[response]
      if key == "request_id" then value = headers["x-request-id"] else value = errors.parse_rate_limit(headers) end
    else
      return nil
    end
    rawset(response, key, value)
    return value
  end,
}

--- Judges an attempt's outcome (what transport:perform returned).
-- Returns "done", result, response | "retry", seconds | "fail", err.
---@package
---@param call table
---@param status? integer nil when the transport failed
---@param rheaders table|userdata the response headers (a table or a header block), or the transport's error
---@param body? string|table
---@param info? table
---@param decode_error? string the transport's reader's message for a 2xx body that is not valid JSON
---@return "done"|"retry"|"fail" verdict
---@return any result_seconds_or_err
---@return truto.Response? response
function Client:settle(call, status, rheaders, body, info, decode_error)
  local err
  if not status then
    err = errors.new(rheaders, call.secrets)    -- on failure the second value is { kind, message, ... }
  else
    local response = setmetatable({ status = status, attempts = call.attempt, info = info }, Response)
    header_source[response] = rheaders
    if status >= 200 and status < 300 then
      local result
      result, err = decode_success(status, rheaders, body, call.sink ~= nil, call.secrets, decode_error)
      if result ~= nil and call.answer then result, err = call.answer(result, rheaders, call.secrets) end
      if result ~= nil then return "done", result, response end
    else
      err = errors.from_response(status, rheaders, decode_failure(rheaders, body), call.secrets)
    end
  end
  err.method, err.path, err.attempts = call.method, call_path(call), call.attempt
  err.retryable = retry.retryable(err) and call.repeatable and not call.delivered
  err.final = nil
  if self.pacer and (err.status == 429 or err.status == 503) then
    -- The account's pause, for every call of this client and of the fleet.
    local pause = err.retry_after or (err.status == 429 and err.rate_limit and err.rate_limit.reset)
    if pause then self.pacer:block(call.account, math.min(pause, self.retry.max_retry_after)) end
  end
  if not err.retryable or call.attempt > call.max_retries then return "fail", err end
  local wait = retry.delay(self.retry, call.attempt, err)
  if call.deadline and self.now() + wait >= call.deadline then return "fail", err end
  return "retry", wait
end

--- Attempts a prepared call until it succeeds, fails for good, or retries
-- are exhausted.
---@package
---@param call table
---@return any result
---@return truto.Response|truto.Error response_or_err
function Client:run(call)
  while true do
    self:begin_attempt(call)
    local verdict, a, b = self:settle(call, exchange(self, call))
    if verdict == "done" then return a, b end
    if verdict == "fail" then return nil, a end
    self.sleep(a)
  end
end

--- Sends one logical call.
---@package
---@param spec table
---@param opts? truto.CallOpts
---@param level integer
---@return any result
---@return truto.Response|truto.Error response_or_err
function Client:call(spec, opts, level)
  return self:run(self:prepare(spec, opts, level + 1))
end

--- `client:request{...}`: any request to Truto, for a path no API method
-- covers.  `path` is written decoded (`"/integrated-account/abc"`); each of its
-- segments is percent-encoded on its own.
---@class truto.RequestSpec
---@field method string the HTTP method, in upper case: `"GET"`, `"POST"`, ...
---@field path string from the base URL, starting with `/`; no query, fragment, empty, `.` or `..` segment
---@field query? truto.Query the query parameters, encoded as for every API method
---@field body? table sent as JSON
---@field headers? table<string, string|number|false> extra headers (over `opts.headers`)
---@field opts? truto.CallOpts the per-call options

local REQUEST_FIELDS = { method = true, path = true, query = true, body = true, headers = true, opts = true }

-- The call spec and the options of client:request{...}; raises at the
-- caller of client:request.
local function request_spec(given)
  local function bad(message, ...) error("client:request: " .. message:format(...), 4) end
  if type(given) ~= "table" then bad("takes a table { method =, path =, ... }, got %s", type(given)) end
  for name in pairs(given) do
    if not REQUEST_FIELDS[name] then bad("unknown field '%s'", tostring(name)) end
  end
  local method, path = given.method, given.path
  if type(method) ~= "string" or not method:match("^[A-Z]+$") then
    bad("method must be an HTTP method in upper case, such as \"GET\", got %s", tostring(method))
  end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    bad("path must be a string starting with '/', got %s", type(path) == "string" and ("'%s'"):format(path)
      or type(path))
  end
  if path:find("[?#]") then bad("path must not hold '?' or '#': put the query in query") end
  if path:find("%c") then bad("path must not hold a control character") end
  local segments = {}
  if path ~= "/" then
    for segment in (path:sub(2) .. "/"):gmatch("([^/]*)/") do
      if segment == "" then bad("path has an empty segment: '%s'", path) end
      if segment == "." or segment == ".." then bad("path must not have a '.' or '..' segment") end
      segments[#segments + 1] = segment
    end
  end
  for _, field in ipairs { "query", "body", "headers", "opts" } do
    if given[field] ~= nil and type(given[field]) ~= "table" then
      bad("%s must be a table, got %s", field, type(given[field]))
    end
  end
  local opts = {}
  for name, value in pairs(given.opts or {}) do opts[name] = value end
  if given.headers then
    local headers = {}
    for name, value in pairs(opts.headers or {}) do headers[name] = value end
    for name, value in pairs(given.headers) do headers[name] = value end
    opts.headers = headers
  end
  return { method = method, path = segments, query = given.query, body = given.body }, opts
end

--- Sends any request to Truto: the escape hatch for a path that no API
-- method covers, with the same retries, idempotency, rate limiting, errors and
-- sinks.  Raises on a malformed table, at the caller's line.
---@param spec truto.RequestSpec
---@return truto.Result? result as an API method's
---@return truto.Response|truto.Error response_or_err
function Client:request(spec)
  local call, opts = request_spec(spec)
  local result, response = self:call(call, opts, 2)
  return result, response
end

--- Checks that Truto answers and accepts the token: `GET /ping`, as Truto's
-- Python SDK calls it (Truto documents no such path).
---@param opts? truto.CallOpts
---@return truto.Result? result
---@return truto.Response|truto.Error response_or_err
function Client:ping(opts)
  local result, response = self:call({ method = "GET", path = { "ping" } }, opts, 2)
  return result, response
end

-- The operations of the three APIs.  Each names its parameters (for
-- positional calls and for batch requests) and builds the request spec.
local function check_name(value, position, fname, what)
  if type(value) ~= "string" and not ((what == "id" or what == "mcp_id") and type(value) == "number") then
    error(("bad argument #%d to '%s' (%s must be a string, got %s)"):format(position, fname, what, type(value)), 4)
  end
end

local function check_table(value, position, fname, what, optional)
  if (value == nil and optional) or type(value) == "table" then return end
  error(("bad argument #%d to '%s' (%s must be a table, got %s)"):format(position, fname, what, type(value)), 4)
end

-- Parameter kinds: names are path segments, body a required table,
-- optional_body and query optional tables.
local CHECKS = {
  model = "name", resource = "name", id = "name", method = "name", path = "path",
  body = "body", optional_body = "optional_body", query = "query",
  mcp_id = "name", token = "name", name = "name", version = "name", payload = "body", arguments = "optional_body",
}

local function custom_segments(path, fname)
  if type(path) ~= "string" then
    error(("bad argument #1 to '%s' (path must be a string, got %s)"):format(fname, type(path)), 4)
  end
  local segments = { "custom" }
  local trimmed = path:gsub("^/+", ""):gsub("/+$", "")
  if trimmed == "" then
    error(("bad argument #1 to '%s' (path must name an endpoint)"):format(fname), 4)
  end
  for segment in (trimmed .. "/"):gmatch("([^/]*)/") do
    if segment == "" then
      error(("bad argument #1 to '%s' (path has an empty segment: '%s')"):format(fname, path), 4)
    end
    segments[#segments + 1] = segment
  end
  return segments
end

local function check_args(op, fname, a)
  local params = op.params
  for position = 1, #params do
    local param = params[position]
    local kind, value = CHECKS[param], a[param]
    if kind == "name" then
      check_name(value, position, fname, param)
    elseif kind == "body" then
      check_table(value, position, fname, "body")
    elseif kind == "optional_body" then
      check_table(value, position, fname, "body", true)
    elseif kind == "query" then
      check_table(value, position, fname, "query", true)
    end
  end
end

local UNIFIED_NAMES = { "api", "model", "resource", "id" }
local UNIFIED_METHOD_NAMES = { "api", "model", "resource", "method" }
local UNIFIED_META_NAMES = { "api", "model", "resource", "meta", "method" }
local PROXY_NAMES = { "api", "resource", "id" }
local PROXY_METHOD_NAMES = { "api", "resource", "method" }

--- Truto's query parameters.  Nested tables are written in bracket notation
-- (`remote_query = { foo = "bar" }` is `remote_query[foo]=bar`, see
-- `truto.encode_query`); any other key is sent as given: filters such as
-- `created_at = { gt = "2026-01-01" }`.  The table is never modified.
---@class truto.Query
---@field integrated_account_id? string the integrated account to act on (required by Truto's Unified API)
---@field truto_response_format? "unified"|"raw"|"normalized"|"stream" the shape of records (default `"unified"`)
---@field truto_ignore_remote_data? boolean leave each record's `remote_data` out
---@field truto_exclude_fields? string[] fields to leave out of each record
---@field remote_query? table parameters passed to the provider's API untransformed
---@field limit? integer records per page
---@field next_cursor? string the page to fetch: the `next_cursor` of the page before
---@field truto_key_by? string list only: `result` becomes an object keyed by this field

--- A call's result: the decoded JSON body (single records bare, lists as
-- `truto.Page`, custom methods as `{ result = ... }`, DELETE as `{ id = ... }`;
-- integers stay integers, null is `truto.null`, arrays and empty objects are
-- marked), the text of a body that is not JSON, or `true` for an empty body or
-- one that went to a `sink`.
---@alias truto.Result table|string|true

--- One page of a list.
---@class truto.Page
---@field result table[] the records
---@field next_cursor string|lightuserdata the next page's cursor; `truto.null` on the last page
---@field prev_cursor? string|lightuserdata the previous page's cursor
---@field result_count? integer how many records this page holds

-- The methods of the three APIs, generated from OPERATIONS below (and each()
-- for the APIs that can list).  A method added there is documented here.

-- luacheck: push no max comment line length

--- The Unified API, `client.unified_api`, with the argument order of Truto's
-- SDKs.  `model` is a category such as `"crm"`, `resource` a unified resource
-- such as `"opportunities"`, `id` a record's id: each is one path segment,
-- percent-encoded on its own.  `query` holds Truto's query parameters, `opts`
-- the per-call options.  The list fields of known resources (an opportunity's
-- `contact`, `tags`, `urls`) are written as `[]` when empty.  Each method
-- returns `result, response`, or `nil, err`; a wrong argument type raises.
---@class truto.UnifiedApi
-- One page of records, `GET /unified/{model}/{resource}`.
---@field list fun(self, model: string, resource: string, query?: truto.Query, opts?: truto.CallOpts): truto.Page|truto.Result|nil, truto.Response|truto.Error
-- One record, `GET /unified/{model}/{resource}/{id}`.
---@field get fun(self, model: string, resource: string, id: string|integer, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Creates a record, `POST /unified/{model}/{resource}`: the created record.
---@field create fun(self, model: string, resource: string, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Updates a record, `PATCH /unified/{model}/{resource}/{id}`: the updated record.
---@field update fun(self, model: string, resource: string, id: string|integer, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Deletes a record, `DELETE /unified/{model}/{resource}/{id}`: `{ id = ... }`.
---@field delete fun(self, model: string, resource: string, id: string|integer, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Calls a custom method, `POST /unified/{model}/{resource}/{method}`: `{ result = ... }`.
---@field custom_method fun(self, model: string, resource: string, method: string, body?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- The mapping, schemas and defaults Truto uses for a method, `GET /unified/{model}/{resource}/meta/{method}`.
---@field meta fun(self, model: string, resource: string, method: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Every record of every page, one page in memory at a time, following `next_cursor`: an iterator
-- that yields each record, or `false, err` once on a failure (`for record, err in api:each(...) do`).
---@field each fun(self, model: string, resource: string, query?: truto.Query, opts?: truto.CallOpts): (fun(): table|false|nil, truto.Error?)

--- The Proxy API, `client.proxy_api`: the integration's own resources,
-- passed through.  `resource` is the provider's resource name, `id` a record's
-- id; the other arguments and the returns are as in `truto.UnifiedApi`.
---@class truto.ProxyApi
-- One page of records, `GET /proxy/{resource}`.
---@field list fun(self, resource: string, query?: truto.Query, opts?: truto.CallOpts): truto.Page|truto.Result|nil, truto.Response|truto.Error
-- One record, `GET /proxy/{resource}/{id}`.
---@field get fun(self, resource: string, id: string|integer, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Creates a record, `POST /proxy/{resource}`.
---@field create fun(self, resource: string, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Updates a record, `PATCH /proxy/{resource}/{id}`.
---@field update fun(self, resource: string, id: string|integer, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Deletes a record, `DELETE /proxy/{resource}/{id}`.
---@field delete fun(self, resource: string, id: string|integer, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Calls a custom method, `POST /proxy/{resource}/{method}`.
---@field custom_method fun(self, resource: string, method: string, body?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Every record of every page, as `truto.UnifiedApi`'s `each`.
---@field each fun(self, resource: string, query?: truto.Query, opts?: truto.CallOpts): (fun(): table|false|nil, truto.Error?)

--- The Custom API, `client.custom_api`: any method on `/custom/{path}`.  The
-- path's own slashes separate segments, each percent-encoded (`"reports/weekly"`);
-- the other arguments and the returns are as in `truto.UnifiedApi`.
---@class truto.CustomApi
-- `GET /custom/{path}`.
---@field get fun(self, path: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `POST /custom/{path}`.
---@field post fun(self, path: string, body?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `PUT /custom/{path}`.
---@field put fun(self, path: string, body?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `PATCH /custom/{path}`.
---@field patch fun(self, path: string, body?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `DELETE /custom/{path}`.
---@field delete fun(self, path: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- A platform resource, `client.integrated_accounts` and the others (the
-- list in README.md, "Platform API"): the standard methods Truto offers for it,
-- on its path.  `id` is one path segment, percent-encoded; `query` and `opts`
-- and the returns are as in `truto.UnifiedApi`.  A resource has only the
-- methods Truto offers (`client.users` has no `create`).
---@class truto.PlatformResource
-- One page, `GET /{path}`: `{ result = {...}, next_cursor = ..., limit = ... }`.
---@field list fun(self, query?: truto.Query, opts?: truto.CallOpts): truto.Page|truto.Result|nil, truto.Response|truto.Error
-- One object, `GET /{path}/{id}`.
---@field get fun(self, id: string|integer, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Creates one, `POST /{path}`: the created object.
---@field create fun(self, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Updates one, `PATCH /{path}/{id}`: the updated object.
---@field update fun(self, id: string|integer, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Deletes one, `DELETE /{path}/{id}`: `{ id = ... }`.
---@field delete fun(self, id: string|integer, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Every object of every page, as `truto.UnifiedApi`'s `each`.
---@field each fun(self, query?: truto.Query, opts?: truto.CallOpts): (fun(): table|false|nil, truto.Error?)

--- `client.integrated_accounts`, `/integrated-account`: a platform resource
-- with extra methods.
---@class truto.IntegratedAccounts: truto.PlatformResource
-- `POST /integrated-account/run-post-install-actions` with `{ id }`: Truto runs the account's post-install actions again.
---@field run_post_install_actions fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `PATCH /integrated-account/{id}/credentials`: changes only the credential fields.
---@field update_credentials fun(self, id: string, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `GET /integrated-account/{id}/mcp`: the account's MCP servers (one page).
---@field list_mcp_servers fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `POST /integrated-account/{id}/mcp`: a new MCP server, with the `token` and `url` `client.mcp` takes.
---@field create_mcp_server fun(self, id: string, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `GET /integrated-account/{id}/mcp/{mcp_id}`.
---@field get_mcp_server fun(self, id: string, mcp_id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `PATCH /integrated-account/{id}/mcp/{mcp_id}`.
---@field update_mcp_server fun(self, id: string, mcp_id: string, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `DELETE /integrated-account/{id}/mcp/{mcp_id}`.
---@field delete_mcp_server fun(self, id: string, mcp_id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `POST /integrated-account/refresh-credentials` with `{ id }`: Truto refreshes the account's credentials.
---@field refresh_credentials fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `POST /integrated-account/token` with `{ integrated_account_id }`: an integrated-account token (15 minutes).
---@field create_token fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `GET /integrated-account/{id}/tools`: the account's tools (`query.methods`, `query.tags` comma-separated).
---@field tools fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- `client.sync_job_cron_triggers` and `client.daemon_job_cron_triggers`: a
-- trigger runs only once scheduled.
---@class truto.CronTriggers: truto.PlatformResource
-- `POST /{path}/{id}/schedule`: schedules the trigger (again after a change).
---@field schedule fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- `client.integrations` and `client.unified_models`: installed into the
-- token's environment as an environment integration or unified model.
---@class truto.Installable: truto.PlatformResource
-- `POST /environment-integration` with `{ integration_id = id, is_enabled = true }`, or `POST
-- /environment-unified-model` with `{ unified_model_id = id }`: the fields of `body` over these.
---@field install fun(self, id: string, body?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `DELETE /environment-integration/{id}` or `DELETE /environment-unified-model/{id}`.
---@field uninstall fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- `client.batch_requests`: Truto's server-side batch.
---@class truto.BatchRequests
-- `POST /batch-request` with `{ integrated_account_id, args, resources = {...} }`: `{ result = {...}, errors = {...} }`.
---@field create fun(self, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- `client.mcp`: an MCP server's tools, over JSON-RPC 2.0.  Each method
-- returns the JSON-RPC `result`, or `nil, err` with `err.kind == "rpc"`,
-- `err.code` and `err.rpc_message` for a JSON-RPC error.
---@class truto.Mcp
-- `initialize`, protocol version 2024-11-05, with the client's name and version.
---@field initialize fun(self, token: string, name: string, version: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `tools/list`: `{ tools = {...} }`.
---@field list_tools fun(self, token: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- `tools/call`: `{ content = {...}, isError = ... }`.
---@field call_tool fun(self, token: string, name: string, arguments?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error
-- Any JSON-RPC message, sent as given (`jsonrpc = "2.0"` added when absent).
---@field call fun(self, token: string, payload: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- `client.datastores`, `/datastore`.
---@class truto.Datastores: truto.PlatformResource
-- `POST /datastore/{id}/test/{method}`: tries a datastore method, `body` its optional input.
---@field test fun(self, id: string, method: string, body?: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- `client.webhooks`, `/webhook`.
---@class truto.Webhooks: truto.PlatformResource
-- `POST /webhook/test` with `{ id }`: Truto sends the webhook a test event.
---@field test fun(self, id: string, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

--- `client.integrated_account_webhooks` and
-- `client.environment_integration_webhooks`: a provider's events handed to Truto.
---@class truto.InboundWebhooks
-- `POST /{path}/{id}` with the provider's event as the body.
---@field process fun(self, id: string, body: table, query?: truto.Query, opts?: truto.CallOpts): truto.Result?, truto.Response|truto.Error

-- luacheck: pop

local OPERATIONS = {
  unified = {
    list = { params = { "model", "resource", "query" }, build = function(a)
      return { method = "GET", path = { "unified", a.model, a.resource }, path_names = UNIFIED_NAMES, query = a.query }
    end },
    get = { params = { "model", "resource", "id", "query" }, build = function(a)
      return { method = "GET", path = { "unified", a.model, a.resource, a.id }, path_names = UNIFIED_NAMES,
               query = a.query }
    end },
    create = { params = { "model", "resource", "body", "query" }, build = function(a)
      return { method = "POST", path = { "unified", a.model, a.resource }, path_names = UNIFIED_NAMES,
               query = a.query, body = a.body, list_fields = schema.list_fields(a.model, a.resource) }
    end },
    update = { params = { "model", "resource", "id", "body", "query" }, build = function(a)
      return { method = "PATCH", path = { "unified", a.model, a.resource, a.id }, path_names = UNIFIED_NAMES,
               query = a.query, body = a.body, list_fields = schema.list_fields(a.model, a.resource) }
    end },
    delete = { params = { "model", "resource", "id", "query" }, build = function(a)
      return { method = "DELETE", path = { "unified", a.model, a.resource, a.id }, path_names = UNIFIED_NAMES,
               query = a.query }
    end },
    custom_method = { params = { "model", "resource", "method", "optional_body", "query" }, build = function(a)
      return { method = "POST", path = { "unified", a.model, a.resource, a.method },
               path_names = UNIFIED_METHOD_NAMES, query = a.query, body = a.optional_body or {} }
    end },
    -- GET /unified/{model}/{resource}/meta/{method}: the mapping, schemas
    -- and defaults Truto uses for that method.
    meta = { params = { "model", "resource", "method", "query" }, build = function(a)
      return { method = "GET", path = { "unified", a.model, a.resource, "meta", a.method },
               path_names = UNIFIED_META_NAMES, query = a.query }
    end },
  },
  proxy = {
    list = { params = { "resource", "query" }, build = function(a)
      return { method = "GET", path = { "proxy", a.resource }, path_names = PROXY_NAMES, query = a.query }
    end },
    get = { params = { "resource", "id", "query" }, build = function(a)
      return { method = "GET", path = { "proxy", a.resource, a.id }, path_names = PROXY_NAMES, query = a.query }
    end },
    create = { params = { "resource", "body", "query" }, build = function(a)
      return { method = "POST", path = { "proxy", a.resource }, path_names = PROXY_NAMES, query = a.query,
               body = a.body }
    end },
    update = { params = { "resource", "id", "body", "query" }, build = function(a)
      return { method = "PATCH", path = { "proxy", a.resource, a.id }, path_names = PROXY_NAMES, query = a.query,
               body = a.body }
    end },
    delete = { params = { "resource", "id", "query" }, build = function(a)
      return { method = "DELETE", path = { "proxy", a.resource, a.id }, path_names = PROXY_NAMES, query = a.query }
    end },
    custom_method = { params = { "resource", "method", "optional_body", "query" }, build = function(a)
      return { method = "POST", path = { "proxy", a.resource, a.method }, path_names = PROXY_METHOD_NAMES,
               query = a.query, body = a.optional_body or {} }
    end },
  },
  custom = {},
}

-- The Custom API: any method on /custom/{path}; the path's own slashes
-- separate segments, each percent-encoded.
for _, verb in ipairs { "get", "delete", "post", "put", "patch" } do
  local has_body = verb ~= "get" and verb ~= "delete"
  OPERATIONS.custom[verb] = {
    params = has_body and { "path", "optional_body", "query" } or { "path", "query" },
    build = function(a, fname)
      return { method = verb:upper(), path = custom_segments(a.path, fname), query = a.query, body = a.optional_body }
    end,
  }
end

-- ---- the platform API ---------------------------------------------------

-- Truto's platform (admin) resources: client.NAME, with Truto's path, the
-- standard methods Truto offers for it (list = GET /path, get = GET /path/{id},
-- create = POST /path, update = PATCH /path/{id}, delete = DELETE /path/{id}) and
-- its extra methods.  An extra is { HTTP method, segments after the path (":x"
-- takes the argument x), parameters, body = a function of the arguments,
-- path = another resource's path when the SDKs put the method here }.
-- Facts and sources: reference/truto-platform.md.  Adding a resource is one
-- entry here (and one line in README.md's list, which spec/platform_spec.lua
-- checks against this table).
local function body_argument(a) return a.body end
local function id_body(a) return { id = a.id } end

-- install(id, { is_enabled = ... }): the SDKs' body, the caller's fields over it.
local function install_body(field, defaults)
  return function(a)
    local body = {}
    for k, v in pairs(defaults) do body[k] = v end
    for k, v in pairs(a.optional_body or {}) do body[k] = v end
    body[field] = a.id
    return body
  end
end

-- Every standard method; a cron trigger runs only once scheduled.
local CRUD = "list get create update delete"
local CRON_EXTRAS = { schedule = { "POST", { ":id", "schedule" }, { "id", "query" } } }

local PLATFORM = {
  integrated_accounts = { path = "integrated-account", methods = CRUD, extras = {
    refresh_credentials = { "POST", { "refresh-credentials" }, { "id", "query" }, body = id_body },
    run_post_install_actions = { "POST", { "run-post-install-actions" }, { "id", "query" }, body = id_body },
    update_credentials = { "PATCH", { ":id", "credentials" }, { "id", "body", "query" }, body = body_argument },
    create_token = { "POST", { "token" }, { "id", "query" },
                     body = function(a) return { integrated_account_id = a.id } end },
    tools = { "GET", { ":id", "tools" }, { "id", "query" } },
    -- The account's MCP servers: creating one gives the token client.mcp takes.
    list_mcp_servers = { "GET", { ":id", "mcp" }, { "id", "query" } },
    create_mcp_server = { "POST", { ":id", "mcp" }, { "id", "body", "query" }, body = body_argument },
    get_mcp_server = { "GET", { ":id", "mcp", ":mcp_id" }, { "id", "mcp_id", "query" } },
    update_mcp_server = { "PATCH", { ":id", "mcp", ":mcp_id" }, { "id", "mcp_id", "body", "query" },
                          body = body_argument },
    delete_mcp_server = { "DELETE", { ":id", "mcp", ":mcp_id" }, { "id", "mcp_id", "query" } },
  } },
  integrations = { path = "integration", methods = CRUD, extras = {
    install = { "POST", {}, { "id", "optional_body", "query" }, path = "environment-integration",
                body = install_body("integration_id", { is_enabled = true }) },
    uninstall = { "DELETE", { ":id" }, { "id", "query" }, path = "environment-integration" },
  } },
  environments = { path = "environment", methods = "list get update" },
  environment_integrations = { path = "environment-integration", methods = CRUD },
  unified_models = { path = "unified-model", methods = CRUD, extras = {
    install = { "POST", {}, { "id", "optional_body", "query" }, path = "environment-unified-model",
                body = install_body("unified_model_id", {}) },
    uninstall = { "DELETE", { ":id" }, { "id", "query" }, path = "environment-unified-model" },
  } },
  environment_unified_models = { path = "environment-unified-model", methods = CRUD },
  teams = { path = "team", methods = "list get update" },
  users = { path = "user", methods = "list get" },
  api_tokens = { path = "api-token", methods = "list get" },
  categories = { path = "category", methods = "list" },
  link_tokens = { path = "link-token", methods = "create" },
  sync_jobs = { path = "sync-job", methods = CRUD },
  sync_job_runs = { path = "sync-job-run", methods = CRUD },
  sync_job_cron_triggers = { path = "sync-job-cron-trigger", methods = CRUD, extras = CRON_EXTRAS },
  daemons = { path = "daemon", methods = CRUD },
  daemon_jobs = { path = "daemon-job", methods = CRUD },
  daemon_job_runs = { path = "daemon-job-run", methods = CRUD },
  daemon_job_cron_triggers = { path = "daemon-job-cron-trigger", methods = CRUD, extras = CRON_EXTRAS },
  datastores = { path = "datastore", methods = CRUD, extras = {
    test = { "POST", { ":id", "test", ":method" }, { "id", "method", "optional_body", "query" },
             body = function(a) return a.optional_body end },
  } },
  documentation = { path = "documentation", methods = CRUD },
  logs = { path = "log", methods = "list" },
  webhooks = { path = "webhook", methods = CRUD, extras = {
    test = { "POST", { "test" }, { "id", "query" }, body = function(a) return { id = a.id } end },
  } },
  workflows = { path = "workflow", methods = CRUD },
  -- Truto's skills offer no create or update on runs (its SDK does): the docs first.
  workflow_runs = { path = "workflow-run", methods = "list get delete" },
  alarms = { path = "alarm", methods = CRUD },
  static_gates = { path = "static-gate", methods = CRUD },
  sandbox_integrated_accounts = { path = "sandbox-integrated-account", methods = "list get create delete" },
  -- Truto's server-side batch: many calls for one account in one request.
  batch_requests = { path = "batch-request", methods = "create" },
  integrated_account_webhooks = { path = "integrated-account-webhook", methods = "", extras = {
    process = { "POST", { ":id" }, { "id", "body", "query" }, body = body_argument },
  } },
  environment_integration_webhooks = { path = "environment-integration-webhook", methods = "", extras = {
    process = { "POST", { ":id" }, { "id", "body", "query" }, body = body_argument },
  } },
}

-- The standard methods: HTTP method, whether the id is the last segment,
-- the parameters and the body.
local PLATFORM_METHODS = {
  list = { "GET", false, { "query" } },
  get = { "GET", true, { "id", "query" } },
  create = { "POST", false, { "body", "query" }, body = body_argument },
  update = { "PATCH", true, { "id", "body", "query" }, body = body_argument },
  delete = { "DELETE", true, { "id", "query" } },
}

-- An operation on a platform resource: segments after its path, each
-- ":x" replaced by the argument x (named x in errors, the others "path").
local function platform_operation(path, verb, after, params, body)
  local names = { "path" }
  for i, segment in ipairs(after) do names[i + 1] = segment:match("^:(.+)$") or "path" end
  return { params = params, build = function(a)
    local segments = { path }
    for i, segment in ipairs(after) do
      local param = segment:match("^:(.+)$")
      segments[i + 1] = param and a[param] or segment
    end
    return { method = verb, path = segments, path_names = names, query = a.query, body = body and body(a) }
  end }
end

-- A platform resource's operations, made when it is first used (making all
-- thirty at load cost `require "truto"` about 0.4 ms).
local function platform_operations(name)
  local resource = PLATFORM[name]
  local ops = {}
  for method in resource.methods:gmatch("%S+") do
    local standard = PLATFORM_METHODS[method]
    ops[method] = platform_operation(resource.path, standard[1], standard[2] and { ":id" } or {}, standard[3],
                                     standard.body)
  end
  for method, extra in pairs(resource.extras or {}) do
    ops[method] = platform_operation(extra.path or resource.path, extra[1], extra[2], extra[3], extra.body)
  end
  return ops
end

setmetatable(OPERATIONS, { __index = function(operations, api)
  if PLATFORM[api] == nil then return nil end
  local ops = platform_operations(api)
  rawset(operations, api, ops)
  return ops
end })

-- ---- MCP ------------------------------------------------------------

-- Truto's MCP servers: JSON-RPC 2.0 over POST /mcp/{token}, the token from
-- client.integrated_accounts:create_mcp_server.  A JSON-RPC error comes back
-- as an error of kind "rpc" (not retried: the server answered); otherwise
-- the call's result is the response's `result` member.
local MCP_PROTOCOL_VERSION = "2024-11-05"   -- what Truto's TypeScript SDK sends
local rpc_ids = 0

local NULL = core.null

local function present(v) return v ~= nil and v ~= NULL end

-- The result of a JSON-RPC answer to the request with this id: its
-- `result`, or nil and an error: kind "rpc" for a JSON-RPC error, "decode"
-- for a body that is no JSON-RPC response (or answers another id).  An
-- empty body (a notification's) is true; an array (a batch's answers) is
-- returned whole.
local function rpc_answer(envelope, id, headers, secrets)
  if envelope == true or (type(envelope) == "table" and getmetatable(envelope) == core.array_mt) then
    return envelope
  end
  local function not_rpc(why)
    return nil, errors.new({ kind = "decode", message = "not a JSON-RPC response: " .. why, body = envelope,
                             headers = headers }, secrets)
  end
  if type(envelope) ~= "table" then
    return not_rpc("the body is not a JSON object")
  end
  if present(id) and present(envelope.id) and envelope.id ~= id then
    return not_rpc(("it answers id %s, not %s"):format(tostring(envelope.id), tostring(id)))
  end
  local e = envelope.error
  if not present(e) then
    if envelope.result ~= nil then return envelope.result end
    return not_rpc("no result and no error")
  end
  local code = type(e) == "table" and type(e.code) == "number" and e.code % 1 == 0 and e.code or nil
  local message = type(e) == "table" and type(e.message) == "string" and e.message or nil
  return nil, errors.new({
    kind = "rpc", code = code, data = type(e) == "table" and e.data or nil, body = envelope,
    message = message and (code and ("JSON-RPC error %d: %s"):format(code, message) or "JSON-RPC error: " .. message)
      or "malformed JSON-RPC error (no code or message)",
    rpc_message = message, headers = headers,
  }, secrets)
end

-- A JSON-RPC request: the next id, "jsonrpc" and the method's params.
local function rpc_request(method, params)
  rpc_ids = rpc_ids + 1
  return { jsonrpc = "2.0", id = rpc_ids, method = method, params = params }
end

local function mcp_operation(params, payload)
  return { params = params, build = function(a)
    local body = payload(a)
    -- The token is a credential: errors and on_request show the path
    -- without it, and it is scrubbed as the API token is.
    return { method = "POST", path = { "mcp", a.token }, path_names = { "path", "token" }, query = a.query,
             body = body, shown_path = "/mcp/{token}", secret = a.token,
             answer = function(envelope, headers, secrets) return rpc_answer(envelope, body.id, headers, secrets) end }
  end }
end

OPERATIONS.mcp = {
  -- The caller's own payload, "jsonrpc" added when absent (a copy is sent).
  call = mcp_operation({ "token", "payload", "query" }, function(a)
    -- A batch (an array of messages) goes as given.
    if a.payload[1] ~= nil or getmetatable(a.payload) == core.array_mt then return a.payload end
    local body = {}
    for k, v in pairs(a.payload) do body[k] = v end
    if body.jsonrpc == nil then body.jsonrpc = "2.0" end
    return body
  end),
  initialize = mcp_operation({ "token", "name", "version", "query" }, function(a)
    return rpc_request("initialize", { protocolVersion = MCP_PROTOCOL_VERSION,
      capabilities = setmetatable({}, core.object_mt), clientInfo = { name = a.name, version = a.version } })
  end),
  list_tools = mcp_operation({ "token", "query" }, function()
    return rpc_request("tools/list", setmetatable({}, core.object_mt))
  end),
  call_tool = mcp_operation({ "token", "name", "arguments", "query" }, function(a)
    return rpc_request("tools/call", { name = a.name, arguments = a.arguments or setmetatable({}, core.object_mt) })
  end),
}

-- Named arguments of an operation from a positional call; opts follows them.
local function named_args(op, ...)
  local a = {}
  for i, param in ipairs(op.params) do a[param] = (select(i, ...)) end
  return a, (select(#op.params + 1, ...))
end

--- An iterator over every record of every page, one page in memory at a
-- time.  It yields each record; on a failure it yields false, err once and
-- then stops:  for record, err in api:each(...) do if not record then ... end end
local function each_record(list_page, query, opts)
  local q = {}
  for k, v in pairs(query or {}) do q[k] = v end
  local page, index, finished = nil, 0, false
  return function()
    while not finished do
      if page and index < #page.result then
        index = index + 1
        return page.result[index]
      end
      if page then
        local cursor = page.next_cursor
        if type(cursor) ~= "string" or cursor == "" then
          finished = true
          return nil
        end
        if cursor == q.next_cursor then
          finished = true
          return false, errors.new { kind = "protocol", message = "the server returned the same next_cursor twice" }
        end
        q.next_cursor = cursor
      end
      local err
      page, err = list_page(q, opts)
      if not page then
        finished = true
        return false, err
      end
      if type(page) ~= "table" or type(page.result) ~= "table" then
        finished = true
        return false, errors.new { kind = "decode", message = "a list response has no result array" }
      end
      index = 0
    end
    return nil
  end
end

-- One table of methods per API, generated from OPERATIONS.
local function api_methods(api)
  local methods = {}
  methods.__index = methods
  for name, op in pairs(OPERATIONS[api]) do
    local params, n = op.params, #op.params
    -- Positional arguments as locals (no vararg copies): the longest
    -- parameter list has six names, then opts.
    assert(n <= 6, "an operation takes at most 6 parameters")
    local p1, p2, p3, p4, p5, p6 = params[1], params[2], params[3], params[4], params[5], params[6]
    methods[name] = function(self, v1, v2, v3, v4, v5, v6, v7)
      local a, opts = {}, nil
      if n == 0 then opts = v1 else a[p1] = v1 end
      if n == 1 then opts = v2 elseif n > 1 then a[p2] = v2 end
      if n == 2 then opts = v3 elseif n > 2 then a[p3] = v3 end
      if n == 3 then opts = v4 elseif n > 3 then a[p4] = v4 end
      if n == 4 then opts = v5 elseif n > 4 then a[p5] = v5 end
      if n == 5 then opts = v6 elseif n > 5 then a[p6] = v6 end
      if n == 6 then opts = v7 end
      check_args(op, name, a)
      local spec = op.build(a, name)
      -- Not a tail call: error levels count this frame.
      local result, response = self.client:call(spec, opts, 2)
      return result, response
    end
  end
  if OPERATIONS[api].list then
    local list = OPERATIONS[api].list
    methods.each = function(self, ...)
      local a, opts = named_args(list, ...)
      check_args(list, "each", a)
      return each_record(function(q, o)
        a.query = q
        return self.client:call(list.build(a, "each"), o, 2)
      end, a.query, opts)
    end
  end
  return methods
end

-- ---- batches --------------------------------------------------------

--- One call of `client:batch`: the API, the method, and the method's
-- arguments by name.
---@class truto.BatchRequest
-- `"unified"`, `"proxy"`, `"custom"`, or a platform resource as the client
-- names it: `{ api = "webhooks", method = "test", id = "..." }`.
---@field api "unified"|"proxy"|"custom"|string
---@field method string the API's method: `"update"`, `"custom_method"`, `"post"`, `"refresh_credentials"`, ...
---@field model? string unified API only
---@field resource? string unified and proxy APIs
---@field id? string|integer for get, update, delete and a platform extra's id
---@field name? string the method of custom_method, meta, or a datastore's test
---@field path? string custom API only, instead of model, resource and id
---@field body? table
---@field query? truto.Query
---@field opts? truto.CallOpts per-call options (a `sink` is refused)

--- The options of `client:batch`.
---@class truto.BatchOptions
---@field concurrency? integer calls in flight at once, 1 to 1024 (default 16)
-- Called as each call settles, with the count settled so far, the total, the
-- request's index and its result.
---@field on_progress? fun(settled: integer, total: integer, index: integer, result: truto.BatchResult)
-- A file that records each request as it is sent and as it settles: run
-- again with the same file, the batch returns what had settled without
-- sending it again, and sends what was in flight with its first
-- Idempotency-Key.
---@field journal? string

--- One result of `client:batch`: what the call returned, as a pair.
---@class truto.BatchResult
---@field [1] any the result, or nil on failure
---@field [2] truto.Response|truto.Error the response, or the error

local BATCH_OPTIONS = {
  concurrency = { function(v) return integer(v) and v >= 1 and v <= 1024 end, "an integer from 1 to 1024" },
  on_progress = { function_, "a function" },
  journal = { function(v) return type(v) == "string" and v ~= "" end, "a file's path" },
}

-- A batch request names its operation's parameters; a custom method's or
-- meta's own name comes as `name`, a body as `body`.
local BATCH_FIELD = { method = "name", optional_body = "body" }

-- The call of a batch request whose operation is op, its arguments a; key:
-- the Idempotency-Key a journal says it was first sent with.
local function prepare_batch_call(self, r, op, a, key)
  check_args(op, r.method, a)
  local opts = r.opts
  if opts and opts.sink then error("a sink is not supported in a batch", 0) end
  if key then
    opts = {}
    for name, value in pairs(r.opts or NO_OPTS) do opts[name] = value end
    opts.idempotency_key = key
  end
  return self:prepare(op.build(a, r.method), opts, 1)
end

local function batch_call(self, r, i, key)
  if type(r) ~= "table" then
    error(("batch request #%d must be a table, got %s"):format(i, type(r)), 0)
  end
  local ops = OPERATIONS[r.api]
  if not ops then
    error(("batch request #%d: api must be \"unified\", \"proxy\", \"custom\" or a platform resource such as "
           .. "\"integrated_accounts\", got %s"):format(i, tostring(r.api)), 0)
  end
  local op = ops[r.method]
  if not op then
    error(("batch request #%d: %s API has no method %s"):format(i, r.api, tostring(r.method)), 0)
  end
  local a = {}
  for _, param in ipairs(op.params) do a[param] = r[BATCH_FIELD[param] or param] end
  local ok, call = pcall(prepare_batch_call, self, r, op, a, key)
  if not ok then
    error(("batch request #%d: %s"):format(i, (tostring(call):gsub("^[^\n]-:%d+: ", ""))), 0)
  end
  return call
end

-- The runners below send the calls whose indexes `pending` lists, calling
-- start(index) before a call's first attempt and finish(index, ...) with
-- its outcome, as Client:run returns it.

-- Every call on one libcurl multi handle: at most `concurrency` in flight,
-- retries scheduled by time rather than slept, so a waiting call never holds
-- up the others.  An error raised from start or finish (on_progress) takes
-- every transfer off the handle before it propagates, so the next batch
-- starts clean.
local function run_on_multi(self, calls, pending, concurrency, start, finish)
  local multi = self.transport:multi()
  local n, next_new, in_flight, count = #pending, 1, {}, 0
  -- Calls waiting for their time, soonest first: { at = t, index = i }:
  -- retries, and calls waiting for their rate-limit slot (`paced`, which
  -- take a place of `concurrency`, so that a batch reserves no more slots
  -- ahead than it runs at once).
  local due, paced = {}, 0
  local settled = 0

  local function wait_until(at, index)
    local pos = #due + 1
    while pos > 1 and due[pos - 1].at > at do pos = pos - 1 end
    table.insert(due, pos, { at = at, index = index })
  end

  -- The call's outcome: done, failed, or due again later.
  local function judge(index, ...)
    local verdict, a, b = self:settle(calls[index], ...)
    if verdict == "retry" then
      wait_until(self.now() + a, index)
    else
      settled = settled + 1
      if verdict == "done" then finish(index, a, b) else finish(index, nil, a) end
    end
  end

  -- Puts the call's current hop on the handle (or judges it timed out), in
  -- one table refilled for every add (multi:add reads it and keeps nothing).
  -- A 2xx JSON answer comes back decoded, as over the session.
  local add = {}
  local function send(index)
    local call = calls[index]
    local ok, err = arm(self, call)
    if not ok then return judge(index, nil, err) end
    local req = call.hop
    add.method, add.url, add.headers, add.body = req.method, req.url, req.headers, req.body
    add.timeout, add.connect_timeout = call.timeout, call.connect_timeout
    add.max_response_bytes, add.fresh_connect = call.max_response_bytes, not call.repeatable
    add.decode_json = call.decode_json
    local id = multi:add(add)
    in_flight[id] = index
    count = count + 1
  end

  local function loop()
    while settled < n do
      while count + paced < concurrency or (due[1] and due[1].at <= self.now() and calls[due[1].index].paced) do
        local index
        if due[1] and due[1].at <= self.now() then
          index = table.remove(due, 1).index
          if calls[index].paced then paced = paced - 1 end
        elseif next_new <= n then
          index, next_new = pending[next_new], next_new + 1
          start(index)
        else
          break
        end
        local wait = self:begin_attempt(calls[index], true)
        if wait then
          paced = paced + 1
          wait_until(self.now() + wait, index)
        else
          send(index)
        end
      end
      local wait = 1
      -- A due call shortens the wait only when it could be started.
      if due[1] and (count + paced < concurrency or calls[due[1].index].paced) then
        wait = math.max(0, math.min(wait, due[1].at - self.now()))
      end
      if count == 0 then
        if settled < n then self.sleep(wait) end
      else
        for _, f in ipairs(multi:wait(wait)) do
          local index = in_flight[f.id]
          in_flight[f.id] = nil
          count = count - 1
          if f.err then
            judge(index, nil, f.err)
          else
            local follow, err = self:follow(calls[index], f.status, f.headers)
            if follow then
              send(index)
            elseif err then
              judge(index, nil, err)
            else
              f.info.redirects = calls[index].hops
              judge(index, f.status, f.headers, f.body, f.info, f.decode_error)
            end
          end
        end
      end
    end
  end

  local ok, err = pcall(loop)
  if not ok then
    multi:abort()
    error(err, 0)
  end
end

-- On a transport whose host runs threads of its own (nginx's light threads,
-- cqueues' coroutines): `concurrency` workers share the list, each running
-- its calls through the transport, which yields while they wait.
local function run_on_threads(self, calls, pending, concurrency, start, finish)
  local next_pending = 0
  local function worker()
    while true do
      next_pending = next_pending + 1
      local index = pending[next_pending]
      if not index then return end
      start(index)
      finish(index, self:run(calls[index]))
    end
  end
  local workers = {}
  for t = 1, math.min(concurrency, #pending) do workers[t] = worker end
  self.transport:run_concurrently(workers)
end

-- A settled request's result as a journal recorded it: the result and a
-- response holding what was recorded (status, attempts, request_id; no
-- headers), or nil and the error (kind, status, message, ...).
local function journaled_result(record, call)
  local result, fields, failed = journal_module().result_of(record)
  if failed then return { nil, errors.new(fields, call.secrets) } end
  fields.headers = {}
  return { result, setmetatable(fields, Response) }
end

-- Raised through a runner when the journal fails: the batch then returns
-- nil and the error (kept apart: a host's threads may pass on only strings).
local JOURNAL_FAILED = "truto: the batch journal failed"

--- Runs many calls at once: up to `concurrency` in flight (on one libcurl
-- multi handle, or on the host's threads: `ngx.thread`s inside nginx,
-- coroutines of the running controller under cqueues), each retried as a single
-- call is.  Returns the results in request order.  Raises on a malformed
-- request before any is sent.  With `options.journal`, returns nil and an
-- error of kind "journal" when that file cannot be read or written (what
-- settled before is in it: run again).
---@param requests truto.BatchRequest[]
---@param options? truto.BatchOptions
---@return truto.BatchResult[]|nil results `results[i]` for `requests[i]`
---@return truto.Error? err
function Client:batch(requests, options)
  if type(requests) ~= "table" then
    error(("bad argument #1 to 'batch' (requests must be a table, got %s)"):format(type(requests)), 2)
  end
  options = checked_copy(options, BATCH_OPTIONS, "batch", 2)
  local calls = {}
  for i = 1, #requests do
    local ok, call = pcall(batch_call, self, requests[i], i)
    if not ok then error(call, 2) end
    calls[i] = call
  end
  local results, settled, progress = {}, 0, options.on_progress
  local pending, journal, journal_err = {}, nil, nil
  if options.journal then
    local ok, fingerprint = pcall(journal_module().fingerprint, calls)
    if not ok then error("bad argument #2 to 'batch' (" .. fingerprint .. ")", 2) end
    ok, journal, journal_err = pcall(journal_module().open, options.journal, fingerprint, #calls)
    if not ok then error("bad argument #2 to 'batch' (" .. journal .. ")", 2) end
    if not journal then return nil, journal_err end
  end
  for index = 1, #calls do
    local record, key = journal and journal.outcomes[index], journal and journal.keys[index]
    if record then
      results[index] = journaled_result(record, calls[index])
      settled = settled + 1
      if progress then progress(settled, #calls, index, results[index]) end
    else
      -- In flight when the last run stopped: sent again as it was first.
      if key then calls[index] = batch_call(self, requests[index], index, key) end
      pending[#pending + 1] = index
    end
  end
  local start = function() end
  if journal then
    start = function(index)
      local ok, err = journal:started(index, calls[index].idempotency_key)
      if not ok then
        journal_err = err
        error(JOURNAL_FAILED, 0)
      end
    end
  end
  -- finish(index, result, response) or finish(index, nil, err), as a call returns.
  local function finish(index, result, response_or_err)
    if journal then
      local ok, err = journal:settled(index, result, response_or_err)
      if not ok then
        journal_err = err
        error(JOURNAL_FAILED, 0)
      end
    end
    results[index] = { result, response_or_err }
    settled = settled + 1
    if progress then progress(settled, #calls, index, results[index]) end
  end
  local concurrency = options.concurrency or 16
  local ok, err = pcall(function()
    if self.transport.multi then
      run_on_multi(self, calls, pending, concurrency, start, finish)
    elseif self.transport.run_concurrently then
      run_on_threads(self, calls, pending, concurrency, start, finish)
    else
      for _, index in ipairs(pending) do
        start(index)
        finish(index, self:run(calls[index]))
      end
    end
  end)
  if journal then journal:close() end
  if journal_err then return nil, journal_err end
  if not ok then error(err, 0) end
  return results
end

_M.Unified = api_methods("unified")
_M.Proxy = api_methods("proxy")
_M.Custom = api_methods("custom")
-- The methods of each platform resource, by its name on the client, made
-- at its first use.
_M.Platform = setmetatable({}, { __index = function(platform, api)
  if PLATFORM[api] == nil then return nil end
  local methods = api_methods(api)
  rawset(platform, api, methods)
  return methods
end })
for api in pairs(PLATFORM) do
  LAZY_RESOURCE[api] = { __index = function(resource, method)
    local methods = _M.Platform[api]
    setmetatable(resource, methods)
    return methods[method]
  end }
end
_M.Mcp = api_methods("mcp")
-- The platform resources, for the specs that check README.md against them.
_M.PLATFORM = PLATFORM
-- The parameters of every platform resource's and client.mcp's methods, in
-- order (for the command line): PARAMS[api][method] = { "id", "body", ... }.
_M.PARAMS = { mcp = {} }
for method, op in pairs(OPERATIONS.mcp) do _M.PARAMS.mcp[method] = op.params end
for api, resource in pairs(PLATFORM) do
  local params = {}
  for method in resource.methods:gmatch("%S+") do params[method] = PLATFORM_METHODS[method][3] end
  for method, extra in pairs(resource.extras or {}) do params[method] = extra[3] end
  _M.PARAMS[api] = params
end
return _M

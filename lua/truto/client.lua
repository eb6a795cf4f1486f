--- The client: truto.new{...} and its unified_api, proxy_api and custom_api.
-- Every call builds its request in the C core, sends it through the
-- transport, retries what is safe to retry, and returns `result, response`
-- or `nil, err`.
local core = require "truto.core"
local errors = require "truto.errors"
local ratelimit = require "truto.ratelimit"
local retry = require "truto.retry"
local schema = require "truto.schema"

local _M = {}

local DEFAULT_BASE_URL = "https://api.truto.one"
local UNCAPPED = 2 ^ 53

-- Options of truto.new, each with its check.  A name not listed is an error.
local function positive_number(v) return type(v) == "number" and v > 0 and v < math.huge end
-- An integral number, in Lua 5.4 (integer subtype) and in LuaJIT (doubles) alike.
local function integer(v) return type(v) == "number" and v % 1 == 0 and v > -2 ^ 63 and v < 2 ^ 63 end
local function boolean(v) return type(v) == "boolean" end
local function string_(v) return type(v) == "string" end
local function optional_string(v) return type(v) == "string" and v ~= "" end
local function table_(v) return type(v) == "table" end
local function function_(v) return type(v) == "function" end

local CLIENT_OPTIONS = {
  token = { string_, "a string" },
  base_url = { string_, "a string" },
  timeout = { positive_number, "a number of seconds > 0" },
  connect_timeout = { positive_number, "a number of seconds > 0" },
  max_retries = { function(v) return integer(v) and v >= 0 and v <= 10 end,
                  "an integer from 0 to 10" },
  headers = { table_, "a table" },
  transport = { function(v) return v == "auto" or v == "curl" or v == "ngx" or type(v) == "table" end,
                "\"auto\", \"curl\", \"ngx\" or a table with a perform method" },
  idempotency = { function(v) return v == "auto" or v == false end, "\"auto\" or false" },
  retry = { table_, "a table" },
  sleep = { function_, "a function" },
  on_request = { function_, "a function" },
  rate_limit = { function(v)
    if type(v) ~= "table" or not integer(v.requests) or v.requests < 1 or not positive_number(v.per) then
      return false
    end
    for name in pairs(v) do
      if name ~= "requests" and name ~= "per" then return false end
    end
    return true
  end, "{ requests = <integer > 0>, per = <seconds > 0> }" },
  ca_file = { optional_string, "a path" },
  ca_path = { optional_string, "a path" },
  insecure = { boolean, "a boolean" },
  proxy = { string_, "a string" },
  max_response_bytes = { function(v) return integer(v) and v > 0 end, "an integer > 0" },
  http2 = { boolean, "a boolean" },
  follow_redirects = { boolean, "a boolean" },
}

local RETRY_OPTIONS = {
  base = positive_number, cap = positive_number, max_retry_after = positive_number, deadline = positive_number,
}

local CALL_OPTIONS = {
  headers = { table_, "a table" },
  timeout = { positive_number, "a number of seconds > 0" },
  connect_timeout = { positive_number, "a number of seconds > 0" },
  idempotency_key = { function(v) return type(v) == "string" and v ~= "" and #v <= 255 end,
                      "a non-empty string of at most 255 bytes" },
  sink = { function_, "a function" },
  max_retries = CLIENT_OPTIONS.max_retries,
  max_response_bytes = CLIENT_OPTIONS.max_response_bytes,
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

-- Inside nginx (OpenResty) the cosocket transport, so that no call blocks
-- a worker; libcurl everywhere else.
local function choose_transport(name, options)
  if type(name) == "table" then
    if type(name.perform) ~= "function" then
      error("truto.new: option 'transport' must be \"auto\", \"curl\", \"ngx\" or a table with a perform method", 4)
    end
    return name
  end
  if name == "auto" then
    local ngx = rawget(_G, "ngx")
    name = (type(ngx) == "table" and type(ngx.get_phase) == "function") and "ngx" or "curl"
  end
  return require("truto." .. name).new(options)
end

local Client = {}
Client.__index = Client

--- truto.new{...} -> client
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
                                              token = self.token })
  if not ok then error(err, 2) end

  self.timeout = options.timeout or 30
  self.connect_timeout = options.connect_timeout or 10
  self.max_retries = options.max_retries or 2
  self.idempotency = options.idempotency or false
  self.headers = {}
  for name, value in pairs(options.headers or {}) do self.headers[name] = value end
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
  self.now = self.transport.now or core.now
  if options.rate_limit then
    self.pacer = ratelimit.new(options.rate_limit, self.now, self.sleep)
  end

  self.unified_api = setmetatable({ client = self }, _M.Unified)
  self.proxy_api = setmetatable({ client = self }, _M.Proxy)
  self.custom_api = setmetatable({ client = self }, _M.Custom)
  return self
end

--- Releases the connection(s) the client keeps open.  Idempotent.
function Client:close()
  if self.transport.close then self.transport:close() end
end

-- application/json and the +json types; not application/x-ndjson, whose
-- lines are separate documents.
local function is_json(headers, body)
  local ctype = headers["content-type"]
  if ctype then
    local mime = ctype:match("^%s*([^;%s]+)"):lower()
    return mime == "application/json" or mime:sub(-5) == "+json"
  end
  return body:match("^%s*[%[{]") ~= nil
end

-- The result of a 2xx response: decoded JSON, the raw text for other
-- content, true for an empty body or a body that went to a sink.
local function decode_success(headers, body, streamed)
  if streamed or body == nil or body == "" then return true end
  if not is_json(headers, body) then return body end
  local value, err = core.decode_json(body)
  if value == nil then
    return nil, errors.new { kind = "decode", message = "response is not valid JSON: " .. err,
                             body = #body > 1000 and body:sub(1, 1000) or body }
  end
  return value
end

local function decode_failure(headers, body)
  if body == nil or body == "" then return nil end
  if is_json(headers, body) then
    local value = core.decode_json(body)
    if value ~= nil then return value end
  end
  return body
end

-- A copy of a request that is safe to log: the token is replaced.
local function redacted(req)
  local headers = {}
  for i, line in ipairs(req.headers) do
    headers[i] = line:match("^[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]:") and "Authorization: [REDACTED]"
      or line
  end
  return { method = req.method, url = req.url, headers = headers, body = req.body }
end

--- Sends one logical call: builds the request once, then attempts it until
-- it succeeds, fails for good, or retries are exhausted.
function Client:request(spec, opts, level)
  opts = checked_copy(opts, CALL_OPTIONS, "opts", level + 1)
  local headers = {}
  for name, value in pairs(self.headers) do headers[name] = value end
  for name, value in pairs(opts.headers or {}) do headers[name] = value end
  local method = spec.method
  local key = opts.idempotency_key
  if key == nil and self.idempotency == "auto" and (method == "POST" or method == "PATCH") then
    key = core.random_hex(16)   -- one key for every attempt of this call
  end
  if key then headers["Idempotency-Key"] = key end

  local req = core.build_request {
    method = method, base_url = self.base_url, path = spec.path, path_names = spec.path_names,
    query = spec.query, body = spec.body, list_fields = spec.list_fields, headers = headers,
    token = self.token,
  }

  local sink, delivered = opts.sink, false
  if sink then
    local user_sink = sink
    sink = function(chunk)
      delivered = true
      return user_sink(chunk)
    end
  end
  local streamed = sink ~= nil
  local call = {
    timeout = opts.timeout or self.timeout,
    connect_timeout = opts.connect_timeout or self.connect_timeout,
    sink = sink,
    -- A sink keeps memory flat, so its body is not capped unless asked.
    max_response_bytes = opts.max_response_bytes or (sink and UNCAPPED) or nil,
  }
  local max_retries = opts.max_retries or self.max_retries
  local path = req.url:match("^https?://[^/]*(/[^?]*)") or "/"
  local started = self.now()

  local attempt = 0
  while true do
    attempt = attempt + 1
    if self.pacer then
      local q = spec.query
      self.pacer:acquire(q and type(q.integrated_account_id) == "string" and q.integrated_account_id or "")
    end
    if self.on_request then self.on_request(redacted(req), attempt) end
    local status, rheaders, body, info = self.transport:perform(req, call)
    local err
    if not status then
      err = errors.new(rheaders, self.token)    -- on failure the second value is { kind, message, ... }
    else
      local response = {
        status = status, headers = rheaders, request_id = rheaders["x-request-id"],
        rate_limit = errors.parse_rate_limit(rheaders), attempts = attempt, info = info,
      }
      if status >= 200 and status < 300 then
        local result
        result, err = decode_success(rheaders, body, streamed)
        if result ~= nil then return result, response end
        err.status, err.headers = status, rheaders
      else
        err = errors.from_response(status, rheaders, decode_failure(rheaders, body), self.token)
      end
    end
    err.method, err.path, err.attempts = method, path, attempt
    err.retryable = retry.retryable(err) and retry.repeatable(method, key ~= nil) and not delivered
    if not err.retryable or attempt > max_retries then return nil, err end
    local wait = retry.delay(self.retry, attempt, err)
    if self.retry.deadline and self.now() + wait - started > self.retry.deadline then
      return nil, err
    end
    self.sleep(wait)
  end
end

-- Argument checks shared by the API objects.  Errors point at the caller.
local function check_name(value, position, fname, what)
  if type(value) ~= "string" and not (what == "id" and type(value) == "number") then
    error(("bad argument #%d to '%s' (%s must be a string, got %s)"):format(position, fname, what, type(value)), 3)
  end
end

local function check_table(value, position, fname, what, optional)
  if (value == nil and optional) or type(value) == "table" then return end
  error(("bad argument #%d to '%s' (%s must be a table, got %s)"):format(position, fname, what, type(value)), 3)
end

local UNIFIED_NAMES = { "api", "model", "resource", "id" }
local UNIFIED_METHOD_NAMES = { "api", "model", "resource", "method" }
local UNIFIED_META_NAMES = { "api", "model", "resource", "meta", "method" }
local PROXY_NAMES = { "api", "resource", "id" }
local PROXY_METHOD_NAMES = { "api", "resource", "method" }

--- The Unified API: /unified/{model}/{resource}[/{id}].
local Unified = {}
Unified.__index = Unified
_M.Unified = Unified

function Unified:list(model, resource, query, opts)
  check_name(model, 1, "list", "model")
  check_name(resource, 2, "list", "resource")
  check_table(query, 3, "list", "query", true)
  return self.client:request({ method = "GET", path = { "unified", model, resource },
                               path_names = UNIFIED_NAMES, query = query }, opts, 2)
end

function Unified:get(model, resource, id, query, opts)
  check_name(model, 1, "get", "model")
  check_name(resource, 2, "get", "resource")
  check_name(id, 3, "get", "id")
  check_table(query, 4, "get", "query", true)
  return self.client:request({ method = "GET", path = { "unified", model, resource, id },
                               path_names = UNIFIED_NAMES, query = query }, opts, 2)
end

function Unified:create(model, resource, body, query, opts)
  check_name(model, 1, "create", "model")
  check_name(resource, 2, "create", "resource")
  check_table(body, 3, "create", "body")
  check_table(query, 4, "create", "query", true)
  return self.client:request({ method = "POST", path = { "unified", model, resource },
                               path_names = UNIFIED_NAMES, query = query, body = body,
                               list_fields = schema.list_fields(model, resource) }, opts, 2)
end

function Unified:update(model, resource, id, body, query, opts)
  check_name(model, 1, "update", "model")
  check_name(resource, 2, "update", "resource")
  check_name(id, 3, "update", "id")
  check_table(body, 4, "update", "body")
  check_table(query, 5, "update", "query", true)
  return self.client:request({ method = "PATCH", path = { "unified", model, resource, id },
                               path_names = UNIFIED_NAMES, query = query, body = body,
                               list_fields = schema.list_fields(model, resource) }, opts, 2)
end

function Unified:delete(model, resource, id, query, opts)
  check_name(model, 1, "delete", "model")
  check_name(resource, 2, "delete", "resource")
  check_name(id, 3, "delete", "id")
  check_table(query, 4, "delete", "query", true)
  return self.client:request({ method = "DELETE", path = { "unified", model, resource, id },
                               path_names = UNIFIED_NAMES, query = query }, opts, 2)
end

function Unified:custom_method(model, resource, method, body, query, opts)
  check_name(model, 1, "custom_method", "model")
  check_name(resource, 2, "custom_method", "resource")
  check_name(method, 3, "custom_method", "method")
  check_table(body, 4, "custom_method", "body", true)
  check_table(query, 5, "custom_method", "query", true)
  return self.client:request({ method = "POST", path = { "unified", model, resource, method },
                               path_names = UNIFIED_METHOD_NAMES, query = query, body = body or {} }, opts, 2)
end

--- GET /unified/{model}/{resource}/meta/{method}: the mapping, schemas and
-- defaults Truto uses for that method.
function Unified:meta(model, resource, method, query, opts)
  check_name(model, 1, "meta", "model")
  check_name(resource, 2, "meta", "resource")
  check_name(method, 3, "meta", "method")
  check_table(query, 4, "meta", "query", true)
  return self.client:request({ method = "GET", path = { "unified", model, resource, "meta", method },
                               path_names = UNIFIED_META_NAMES, query = query }, opts, 2)
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

function Unified:each(model, resource, query, opts)
  check_name(model, 1, "each", "model")
  check_name(resource, 2, "each", "resource")
  check_table(query, 3, "each", "query", true)
  return each_record(function(q, o) return self:list(model, resource, q, o) end, query, opts)
end

--- The Proxy API: /proxy/{resource}[/{id}], the provider's own resources.
local Proxy = {}
Proxy.__index = Proxy
_M.Proxy = Proxy

function Proxy:list(resource, query, opts)
  check_name(resource, 1, "list", "resource")
  check_table(query, 2, "list", "query", true)
  return self.client:request({ method = "GET", path = { "proxy", resource }, path_names = PROXY_NAMES,
                               query = query }, opts, 2)
end

function Proxy:get(resource, id, query, opts)
  check_name(resource, 1, "get", "resource")
  check_name(id, 2, "get", "id")
  check_table(query, 3, "get", "query", true)
  return self.client:request({ method = "GET", path = { "proxy", resource, id }, path_names = PROXY_NAMES,
                               query = query }, opts, 2)
end

function Proxy:create(resource, body, query, opts)
  check_name(resource, 1, "create", "resource")
  check_table(body, 2, "create", "body")
  check_table(query, 3, "create", "query", true)
  return self.client:request({ method = "POST", path = { "proxy", resource }, path_names = PROXY_NAMES,
                               query = query, body = body }, opts, 2)
end

function Proxy:update(resource, id, body, query, opts)
  check_name(resource, 1, "update", "resource")
  check_name(id, 2, "update", "id")
  check_table(body, 3, "update", "body")
  check_table(query, 4, "update", "query", true)
  return self.client:request({ method = "PATCH", path = { "proxy", resource, id }, path_names = PROXY_NAMES,
                               query = query, body = body }, opts, 2)
end

function Proxy:delete(resource, id, query, opts)
  check_name(resource, 1, "delete", "resource")
  check_name(id, 2, "delete", "id")
  check_table(query, 3, "delete", "query", true)
  return self.client:request({ method = "DELETE", path = { "proxy", resource, id }, path_names = PROXY_NAMES,
                               query = query }, opts, 2)
end

function Proxy:custom_method(resource, method, body, query, opts)
  check_name(resource, 1, "custom_method", "resource")
  check_name(method, 2, "custom_method", "method")
  check_table(body, 3, "custom_method", "body", true)
  check_table(query, 4, "custom_method", "query", true)
  return self.client:request({ method = "POST", path = { "proxy", resource, method },
                               path_names = PROXY_METHOD_NAMES, query = query, body = body or {} }, opts, 2)
end

function Proxy:each(resource, query, opts)
  check_name(resource, 1, "each", "resource")
  check_table(query, 2, "each", "query", true)
  return each_record(function(q, o) return self:list(resource, q, o) end, query, opts)
end

--- The Custom API: any method on /custom/{path}.  The path's own slashes
-- separate segments; each segment is percent-encoded.
local Custom = {}
Custom.__index = Custom
_M.Custom = Custom

local function custom_path(path, fname)
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

local function custom_call(self, method, fname, path, body, query, opts, has_body)
  local segments = custom_path(path, fname)
  if has_body then
    check_table(body, 2, fname, "body", true)
  end
  check_table(query, has_body and 3 or 2, fname, "query", true)
  return self.client:request({ method = method, path = segments, query = query, body = body }, opts, 3)
end

function Custom:get(path, query, opts)
  return custom_call(self, "GET", "get", path, nil, query, opts, false)
end

function Custom:delete(path, query, opts)
  return custom_call(self, "DELETE", "delete", path, nil, query, opts, false)
end

function Custom:post(path, body, query, opts)
  return custom_call(self, "POST", "post", path, body, query, opts, true)
end

function Custom:put(path, body, query, opts)
  return custom_call(self, "PUT", "put", path, body, query, opts, true)
end

function Custom:patch(path, body, query, opts)
  return custom_call(self, "PATCH", "patch", path, body, query, opts, true)
end

_M.Client = Client
return _M

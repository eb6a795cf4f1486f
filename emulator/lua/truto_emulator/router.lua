-- Entry point: one content handler for every request.  Order of work:
-- read body -> log -> control endpoints -> faults (delay, status) -> auth ->
-- platform routes (platform.lua) | integrated account -> rate limit ->
-- idempotency replay -> route -> send.
local store = require "truto_emulator.store"
local query_parser = require "truto_emulator.query"
local faults = require "truto_emulator.faults"
local stats = require "truto_emulator.stats"
local ratelimit = require "truto_emulator.ratelimit"
local idempotency = require "truto_emulator.idempotency"
local request_log = require "truto_emulator.request_log"
local response = require "truto_emulator.response"
local control = require "truto_emulator.control"
local unified = require "truto_emulator.unified"
local proxy = require "truto_emulator.proxy"
local custom = require "truto_emulator.custom"
local multipart = require "truto_emulator.multipart"
local platform = require "truto_emulator.platform"
local dataplane = require "truto_emulator.dataplane"

local _M = {}

local ngx = ngx

local HANDLERS = { unified = unified.handle, proxy = proxy.handle, custom = custom.handle }

-- Called from init_by_lua: load fixtures once, in the master, before fork.
function _M.init(fixtures_path)
  store.load(fixtures_path)
  control.reset_all()
end

-- Splits the raw path on "/" and only then percent-decodes each segment, so
-- an id sent as a%2Fb stays one segment "a/b".
local function split_path(raw_path)
  local segments = {}
  for segment in (raw_path .. "/"):sub(2):gmatch("([^/]*)/") do
    segments[#segments + 1] = query_parser.unescape(segment)
  end
  return segments
end

local function read_body()
  ngx.req.read_body()
  local text = ngx.req.get_body_data()
  if text then return text end
  local file_name = ngx.req.get_body_file() -- larger than client_body_buffer_size
  if not file_name then return "" end
  local file = io.open(file_name, "rb")
  if not file then return "" end
  text = file:read("*a")
  file:close()
  return text
end

local function bearer_token(headers)
  local value = headers["authorization"]
  if type(value) == "table" then value = value[1] end
  return type(value) == "string" and value:match("^[Bb]earer%s+(%S+)%s*$") or nil
end

local function injected_response(fault)
  local status = fault.status
  local res
  if fault.body ~= nil then
    res = response.json(status, fault.body)
  elseif status == 429 then
    res = response.remote_error(429, "Rate limit exceeded (injected)",
      { status = "error", message = "You have reached your ten second limit.", category = "RATE_LIMITS" },
      { rate_limit_error = { description = "The integration's rate limit was exceeded. Retry after the "
        .. "period in the Retry-After header." } })
  elseif status == 503 then
    res = response.error(503, "Integrated account is blocked")
  elseif status >= 500 then
    res = response.remote_error(status, "Upstream failure (injected)",
      { status = "error", message = "internal error" })
  else
    res = response.error(status, "Injected fault: " .. status)
  end
  return res
end

local function finish(res, extra_headers, fault)
  stats.count_status(res.status)
  return response.send(res, extra_headers, fault)
end

function _M.handle()
  local method = ngx.req.get_method()
  local uri = ngx.var.request_uri
  local raw_path, raw_query = uri:match("^([^?]*)%??(.*)$")
  local headers = ngx.req.get_headers(200)
  -- A multipart body is read part by part as it arrives (never whole): its
  -- parts are logged and handed to the routes instead of a body text.
  local boundary = multipart.boundary(headers["content-type"])
  local parts, parts_error
  if boundary then parts, parts_error = multipart.read(boundary) end
  local body_text = boundary and "" or read_body()

  if raw_path:sub(1, 11) == "/_emulator/" then
    local ctx = {
      method = method, raw_path = raw_path, query = query_parser.parse(raw_query), body_text = body_text,
    }
    return response.send(control.handle(ctx, raw_path:sub(12)))
  end

  stats.count_request()
  local logged_headers = {}
  for name, value in pairs(headers) do logged_headers[name] = value end
  ngx.update_time()   -- the arrival itself, not the start of this event loop turn
  request_log.add({
    time = ngx.now(), method = method, uri = uri, path = raw_path, query = raw_query,
    headers = logged_headers, body = body_text, parts = parts, parts_error = parts_error,
  })
  if parts_error then
    return finish(response.error(400, "Malformed multipart/form-data body: " .. parts_error))
  end

  local query = query_parser.parse(raw_query)
  local account_id = query.integrated_account_id
  if type(account_id) ~= "string" or account_id == "" then account_id = nil end
  local segments = split_path(raw_path)
  local platform_route = platform.owns(segments[1])

  local fault = faults.for_request(method, raw_path, headers, account_id)
  -- Counted against the account named in the query (or "-" without one);
  -- Truto's per-account limit is for the Unified and Proxy APIs only.
  local limit_headers, over_limit, reset = {}, false, nil
  if not platform_route then limit_headers, over_limit, reset = ratelimit.hit(account_id or "-") end
  if fault then
    stats.count_fault()
    faults.delay(fault)
    if fault.retry_after then limit_headers["Retry-After"] = fault.retry_after end
    for name, value in pairs(fault.headers or {}) do limit_headers[name] = value end
    if fault.status then
      return finish(injected_response(fault), limit_headers, fault)
    end
  end

  local token = bearer_token(headers)
  local token_entry = store.token(token)
  if not token_entry and not (platform_route and platform.public(segments[1])) then
    local message = token and "Invalid API token" or "Missing Authorization header with Bearer token"
    return finish(response.error(401, message), limit_headers, fault)
  end
  if platform_route then
    return finish(platform.handle({
      method = method, raw_path = raw_path, segments = segments, query = query, body_text = body_text,
      headers = headers, token_entry = token_entry,
    }), limit_headers, fault)
  end

  account_id = account_id or token_entry.integrated_account_id
  if not account_id then
    return finish(response.error(400, "integrated_account_id is required"), limit_headers, fault)
  end
  local account, state = store.account(account_id)
  if not account then
    return finish(dataplane.unknown_account(account_id), limit_headers, fault)
  end
  local refusal = dataplane.account_refusal(account)
  if refusal then return finish(refusal, limit_headers, fault) end

  if over_limit then
    limit_headers["Retry-After"] = tostring(reset)
    return finish(response.error(429, "Rate limit exceeded for integrated account " .. account_id,
      { truto_error_insight = { rate_limit_error = { description = "Truto's limit of requests per "
        .. "integrated account was exceeded." } } }), limit_headers, fault)
  end

  local idempotency_key = headers["idempotency-key"]
  if type(idempotency_key) ~= "string" or (method ~= "POST" and method ~= "PATCH") then
    idempotency_key = nil
  end
  if idempotency_key then
    local cached = idempotency.lookup(account_id, raw_path, idempotency_key)
    if cached then
      stats.count_replay()
      limit_headers["Idempotent-Replayed"] = "true"
      return finish(cached, limit_headers, fault)
    end
  end

  local handler = HANDLERS[segments[1]]
  local res
  if not handler then
    res = response.error(404, "Route not found: " .. method .. " " .. raw_path)
  else
    table.remove(segments, 1)
    res = handler({
      method = method, raw_path = raw_path, path = raw_path, segments = segments,
      query = query, body_text = body_text, parts = parts, headers = headers,
      account_id = account_id, account = account, account_state = state,
      read_only = account.status == "sandbox",
    })
  end
  if idempotency_key then idempotency.store(account_id, raw_path, idempotency_key, res) end
  return finish(res, limit_headers, fault)
end

return _M

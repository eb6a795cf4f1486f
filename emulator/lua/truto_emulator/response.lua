-- Response values and their emission.  Handlers return a response table
-- ({status, body, headers, chunks?}) instead of writing to the socket, so the
-- same value can be cached for Idempotency-Key replay and altered by faults.
local json = require "truto_emulator.json"

local _M = {}

local ngx = ngx

local STATUS_TEXT = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [410] = "Gone", [413] = "Payload Too Large", [415] = "Unsupported Media Type",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

function _M.status_text(status)
  return STATUS_TEXT[status] or (status >= 500 and "Internal Server Error") or "Error"
end

function _M.json(status, value, headers)
  return {
    status = status,
    body = json.encode(value),
    headers = headers or {},
    content_type = "application/json",
  }
end

-- Truto's error envelope; `extra` adds fields such as truto_error_insight.
function _M.error(status, message, extra)
  local envelope = { statusCode = status, error = _M.status_text(status), message = message }
  for k, v in pairs(extra or {}) do envelope[k] = v end
  return _M.json(status, envelope)
end

-- Makes a provider-originated error the way Truto reports them.
function _M.remote_error(status, message, raw_response, insight)
  return _M.error(status, message, {
    truto_is_remote_error = true,
    raw_response = raw_response,
    truto_error_insight = insight,
  })
end

local function set_headers(res, extra_headers)
  ngx.status = res.status
  ngx.header["Content-Type"] = res.content_type or "application/json"
  for name, value in pairs(res.headers or {}) do ngx.header[name] = value end
  for name, value in pairs(extra_headers or {}) do ngx.header[name] = value end
end

local function full_body(res)
  if res.chunks then return table.concat(res.chunks) end
  return res.body or ""
end

-- Writes the response, applying a body fault when one was asked for:
--   drop            close the connection, nothing sent
--   truncate        Content-Length larger than the body, then close
--   malformed       200 with a body that is not valid JSON
--   reset-mid-body  chunked, half the body, then close
--   slow-body       the body in `pieces` parts with `body_delay_ms` between
function _M.send(res, extra_headers, fault)
  local kind = fault and fault.kind
  if kind == "drop" then
    return ngx.exit(444)
  end
  if kind == "truncate" or kind == "reset-mid-body" then
    -- gzip would drop Content-Length and re-frame the body: turn it off here.
    ngx.req.clear_header("Accept-Encoding")
  end
  if kind == "malformed" then
    res = { status = 200, body = '{"result": [{"id": "1", "name": "trunc', headers = res.headers }
  end
  set_headers(res, extra_headers)
  if kind == "truncate" then
    local body = full_body(res)
    ngx.header["Content-Length"] = #body + 100
    ngx.print(body)
    ngx.flush(true)
    return ngx.exit(444)
  elseif kind == "reset-mid-body" then
    local body = full_body(res)
    ngx.print(body:sub(1, math.floor(#body / 2)))
    ngx.flush(true)
    return ngx.exit(444)
  elseif kind == "slow-body" then
    local body = full_body(res)
    local pieces = math.max(1, fault.pieces or 4)
    local size = math.ceil(#body / pieces)
    ngx.header["Content-Length"] = #body
    for i = 1, #body, math.max(size, 1) do
      if i > 1 then ngx.sleep((fault.body_delay_ms or 200) / 1000) end
      ngx.print(body:sub(i, i + size - 1))
      ngx.flush(true)
    end
    return
  end
  if res.chunks then
    -- Streamed bodies: each piece is written and flushed on its own.
    for _, chunk in ipairs(res.chunks) do
      ngx.print(chunk)
      ngx.flush(true)
    end
    return
  end
  -- A known length keeps the connection reusable without chunked framing
  -- (gzip, when the client asks for it, replaces it with chunked).
  ngx.header["Content-Length"] = #res.body
  ngx.print(res.body)
end

return _M

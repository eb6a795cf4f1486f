--- Error values: every expected failure comes back as `nil, err` where err
-- is a table built here, with a __tostring that never shows the API token.
local core = require "truto.core"

local _M = {}

local error_mt = {}
error_mt.__index = error_mt

local REASONS = {
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [410] = "Gone", [413] = "Payload Too Large", [415] = "Unsupported Media Type",
  [422] = "Unprocessable Entity", [425] = "Too Early", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

function error_mt:__tostring()
  local parts = { "truto:" }
  if self.method and self.path then parts[#parts + 1] = self.method .. " " .. self.path .. ":" end
  if self.status then
    parts[#parts + 1] = tostring(self.status) .. (REASONS[self.status] and " " .. REASONS[self.status] or "")
    parts[#parts] = parts[#parts] .. ":"
  else
    parts[#parts + 1] = self.kind .. ":"
  end
  parts[#parts + 1] = self.message ~= "" and self.message or "(no message)"
  if self.attempts and self.attempts > 1 then
    parts[#parts + 1] = ("(after %d attempts)"):format(self.attempts)
  end
  return table.concat(parts, " ")
end

--- Replaces every occurrence of secret in s (a string) with "[REDACTED]".
---@param s any returned as is unless a string
---@param secret? string
---@return any s
local function redact(s, secret)
  if type(s) ~= "string" or not secret or secret == "" then return s end
  local out, start = {}, 1
  while true do
    local i, j = s:find(secret, start, true)
    if not i then break end
    out[#out + 1] = s:sub(start, i - 1)
    out[#out + 1] = "[REDACTED]"
    start = j + 1
  end
  out[#out + 1] = s:sub(start)
  return table.concat(out)
end

local function redact_tree(v, secret, depth)
  if type(v) == "string" then return redact(v, secret) end
  if type(v) ~= "table" or depth > 20 then return v end
  for k, item in pairs(v) do v[k] = redact_tree(item, secret, depth + 1) end
  return v
end

--- Builds an error.  fields: kind (required), message, status, body,
-- headers, method, path, attempts, retryable, retry_after, curl_code.
-- secret: the token, scrubbed from every string the error carries.
---@param fields table
---@param secret? string
---@return truto.Error err
function _M.new(fields, secret)
  local err = setmetatable({}, error_mt)
  for k, v in pairs(fields) do err[k] = v end
  err.message = redact(err.message or "", secret)
  err.body = redact_tree(err.body, secret, 0)
  err.retryable = err.retryable or false
  err.attempts = err.attempts or 1
  return err
end

--- Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date.
---@param value? string the header
---@param now? number the clock, in seconds (default os.time())
---@return number? seconds nil when value is neither
function _M.parse_retry_after(value, now)
  if type(value) ~= "string" then return nil end
  local secs = value:match("^%s*(%d+)%s*$")
  if secs then return tonumber(secs) end
  local at = core.parse_http_date(value)
  if at then
    local wait = at - (now or os.time())
    return wait > 0 and wait or 0
  end
  return nil
end

--- Truto's normalized rate-limit headers; the limit may carry a window
-- parameter ("110;w=10"), so only the leading integer is read.
---@param headers table<string, string> names in lower case
---@return truto.RateLimitInfo? rate_limit nil when none of the headers is there
function _M.parse_rate_limit(headers)
  local function int(name)
    local v = headers[name]
    return v and tonumber(v:match("^%s*(%d+)")) or nil
  end
  local limit, remaining, reset = int("ratelimit-limit"), int("ratelimit-remaining"), int("ratelimit-reset")
  if not (limit or remaining or reset) then return nil end
  return { limit = limit, remaining = remaining, reset = reset,
           window = headers["ratelimit-limit"] and tonumber(headers["ratelimit-limit"]:match(";%s*w=(%d+)")) }
end

--- The error for an HTTP response whose status is not 2xx.  body is the
-- decoded JSON envelope when there was one, else the raw text.
---@param status integer
---@param headers table<string, string>
---@param body? table|string
---@param secret? string the token, scrubbed from the error
---@return truto.Error err
function _M.from_response(status, headers, body, secret)
  local message
  if type(body) == "table" then
    message = type(body.message) == "string" and body.message or nil
    if (message == nil or message == "") and body.raw_response ~= nil then
      local raw = body.raw_response
      message = type(raw) == "string" and raw or (type(raw) == "table" and type(raw.message) == "string"
        and raw.message) or nil
    end
    message = message or (type(body.error) == "string" and body.error) or nil
  elseif type(body) == "string" and body ~= "" then
    message = #body > 200 and body:sub(1, 200) .. "..." or body
  end
  return _M.new({
    kind = "http",
    status = status,
    message = message or REASONS[status] or "HTTP " .. status,
    body = body,
    headers = headers,
    retry_after = _M.parse_retry_after(headers["retry-after"]),
    rate_limit = _M.parse_rate_limit(headers),
    request_id = headers["x-request-id"],
  }, secret)
end

return _M

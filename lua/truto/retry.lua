--- When a failed attempt is tried again, and after how long.
local _M = {}

-- Statuses worth another attempt.  503 is not among them: Truto answers 503
-- when the integrated account is blocked, and that does not heal by itself.
local RETRY_STATUS = { [408] = true, [425] = true, [429] = true, [500] = true, [502] = true, [504] = true }

-- Transport failures worth another attempt (the connection, not the peer's
-- certificate or our own limits, was at fault).
local RETRY_KIND = { timeout = true, connect = true, network = true, protocol = true }

-- Methods that may be repeated without changing the outcome.
local SAFE_METHOD = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true }

_M.DEFAULTS = { base = 0.5, cap = 30, max_retry_after = 60 }

--- True when err (a transport error or an HTTP error) may be retried.
---@param err truto.Error
---@return boolean
function _M.retryable(err)
  if err.kind == "http" then return RETRY_STATUS[err.status] == true end
  -- `final`: the transport knows it would only happen again (a refused
  -- redirect, a peer that does not speak HTTP/1.x).
  if err.final then return false end
  return RETRY_KIND[err.kind] == true
end

--- True when a request with this method may be sent again: GET, HEAD,
-- OPTIONS, PUT and DELETE always, POST and PATCH only under an Idempotency-Key.
---@param method string
---@param has_idempotency_key boolean
---@return boolean
function _M.repeatable(method, has_idempotency_key)
  return SAFE_METHOD[method] == true or has_idempotency_key
end

--- Seconds to wait before attempt number `attempt + 1` (attempt >= 1):
-- the server's Retry-After when given (capped), else ratelimit-reset for a
-- 429, else exponential back-off with full jitter.
---@param policy truto.RetryOptions with every default filled in
---@param attempt integer the attempt that failed, from 1
---@param err truto.Error
---@param random? fun(): number uniform in [0, 1) (default math.random)
---@return number seconds
function _M.delay(policy, attempt, err, random)
  if err.retry_after then
    return math.min(err.retry_after, policy.max_retry_after)
  end
  if err.status == 429 and err.rate_limit and err.rate_limit.reset then
    return math.min(err.rate_limit.reset, policy.max_retry_after)
  end
  local ceiling = math.min(policy.cap, policy.base * 2 ^ (attempt - 1))
  return (random or math.random)() * ceiling
end

return _M

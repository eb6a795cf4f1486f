--- Client-side pacing: at most `requests` calls per `per` seconds for each
-- integrated account, so a bulk job stays under Truto's limits (50 requests
-- per 10 s per account) instead of collecting 429s.  A sliding window: each
-- key keeps the start times of its last `requests` calls in a ring.
local _M = {}
local mt = { __index = _M }

--- limit: { requests = n, per = seconds }; now, sleep: clock functions.
---@param limit truto.RateLimit
---@param now fun(): number
---@param sleep fun(seconds: number)
---@return table pacer
function _M.new(limit, now, sleep)
  return setmetatable({ requests = limit.requests, per = limit.per, now = now, sleep = sleep, rings = {} }, mt)
end

--- Waits until one more call for key fits in the window, then records it.
-- Returns the seconds waited, or nil when the wait would end past
-- deadline (then nothing is recorded).
---@param key string the integrated account ("" when none)
---@param deadline? number the clock time the call must end by
---@return number? waited
function _M:acquire(key, deadline)
  local ring = self.rings[key]
  if not ring then
    ring = { next = 1 }
    self.rings[key] = ring
  end
  local waited = 0
  -- ring[ring.next] is the oldest of the last `requests` starts, if any.
  local oldest = ring[ring.next]
  if oldest then
    local wait = oldest + self.per - self.now()
    if deadline and wait > 0 and self.now() + wait >= deadline then return nil end
    if wait > 0 then
      self.sleep(wait)
      waited = wait
    end
  end
  ring[ring.next] = self.now()
  ring.next = ring.next % self.requests + 1
  return waited
end

return _M

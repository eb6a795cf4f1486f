--- Client-side pacing: at most `requests` calls per `per` seconds for each
-- integrated account, so a bulk job stays under Truto's limits (50 requests
-- per 10 s per account) instead of collecting 429s.  Alone, a sliding window
-- in this process: each key keeps the start times of its last `requests`
-- calls in a ring.  With a `store`, the window is the fleet's: every
-- process reserves its slots in the store (truto.store), and a 429 seen by
-- one stops all of them for its Retry-After.  When the store fails, the
-- pacer goes on alone at `requests / expected_processes` (on_store_error =
-- "local", said once through the log hook) or fails the call (kind
-- "store").
local stores = require "truto.store"

local _M = {}
local mt = { __index = _M }

-- The longest a call without a deadline waits for its slot.
local MAX_WAIT = 3600
-- How long after a store failure the store is tried again.
local STORE_RETRY_SECONDS = 5

_M.DEFAULTS = { on_store_error = "local", expected_processes = 1, store_timeout = 1, margin = 0.25 }

--- A pacer.
---@param limit truto.RateLimit
---@param now fun(): number
---@param sleep fun(seconds: number)
---@param transport? table the client's transport (a Redis store's sockets)
---@param log? fun(message: string) where shared decisions are said
---@return table? pacer
---@return string? err a store that cannot be used
function _M.new(limit, now, sleep, transport, log)
  local self = setmetatable({ requests = limit.requests, per = limit.per, now = now, sleep = sleep, rings = {},
                              not_before = {}, log = log or function() end }, mt)
  if limit.store ~= nil then
    for name, default in pairs(_M.DEFAULTS) do
      if limit[name] == nil then self[name] = default else self[name] = limit[name] end
    end
    local store, err = stores.new(limit.store, transport, self.store_timeout)
    if not store then return nil, err end
    self.store = store
    self.local_requests = math.max(1, math.floor(limit.requests / self.expected_processes))
  end
  return self
end

-- Waits until one more call for key fits in this process's window, then
-- records it: the seconds waited, or nil past the deadline.
function _M:acquire_locally(key, deadline, requests)
  local ring = self.rings[key]
  if not ring then
    ring = { next = 1 }
    self.rings[key] = ring
  end
  if ring.size ~= requests then   -- a ring of another size (the store failed or came back)
    ring = { next = 1, size = requests }
    self.rings[key] = ring
  end
  -- ring[ring.next] is the oldest of the last `requests` starts, if any.
  local oldest = ring[ring.next]
  local wait = math.max(oldest and oldest + self.per - self.now() or 0, (self.not_before[key] or 0) - self.now())
  if deadline and wait > 0 and self.now() + wait >= deadline then return nil end
  if wait > 0 then self.sleep(wait) end
  ring[ring.next] = self.now()
  ring.next = ring.next % requests + 1
  return math.max(wait, 0)
end

-- The store failed (message): fall back or fail, said once per outage.
function _M:store_failed(message)
  self.retry_store_at = self.now() + STORE_RETRY_SECONDS
  if self.on_store_error == "fail" then
    return nil, { kind = "store", message = "the rate-limit store failed: " .. message }
  end
  if not self.alone then
    self.alone = true
    self.log(("rate-limit store failed (%s): pacing this process alone at %d requests per %g s until it answers")
      :format(message, self.local_requests, self.per))
  end
  return true
end

-- A slot from the store, slept for: the seconds waited, nil past the
-- deadline (nil, err when the store failed and on_store_error is "fail"),
-- or false when the store failed and this process goes on alone.  A slot
-- reserved before another process's block is not used once the block is
-- seen (the store's optional `blocked`): a new one is reserved after it,
-- and the first stays counted, so the window holds nothing extra.
function _M:acquire_shared(key, deadline)
  local waited = 0
  while true do
    local max_wait = deadline and math.max(0, deadline - self.now()) or MAX_WAIT
    local reserved, wait = self.store:acquire(key, { requests = self.requests, per = self.per, max_wait = max_wait,
                                                    margin = self.margin })
    if reserved == nil then
      local ok, err = self:store_failed(wait)
      if not ok then return nil, err end
      return false
    end
    if self.alone then
      self.alone = false
      self.log("rate-limit store answers again: pacing with the fleet")
    end
    if not reserved then return nil end
    if wait <= 0 then return waited end
    self.sleep(wait)
    waited = waited + wait
    local blocked = self.store.blocked and self.store:blocked(key)
    if not blocked or blocked <= 0 then return waited end
  end
end

--- Waits until one more call for key fits in the window (this process's, or
-- the fleet's in the store), then records it.  Returns the seconds waited;
-- nil when the wait would end past deadline (nothing is recorded); nil, err
-- when the store failed and on_store_error is "fail".
---@param key string the integrated account ("" when none)
---@param deadline? number the clock time the call must end by
---@return number? waited
---@return table? err { kind = "store", message }
function _M:acquire(key, deadline)
  if not self.store then return self:acquire_locally(key, deadline, self.requests) end
  if not (self.retry_store_at and self.now() < self.retry_store_at) then
    local waited, err = self:acquire_shared(key, deadline)
    if waited ~= false then return waited, err end
  elseif self.on_store_error == "fail" then
    return nil, { kind = "store", message = "the rate-limit store failed; it is tried again shortly" }
  end
  return self:acquire_locally(key, deadline, self.local_requests)
end

--- No call for key before `seconds` from now, in this process and (with a
-- store) in every process that shares it: the answer to a 429.
---@param key string
---@param seconds number
function _M:block(key, seconds)
  self.not_before[key] = math.max(self.not_before[key] or 0, self.now() + seconds)
  if not self.store or self.alone then return end
  local ok, err = self.store:block(key, seconds)
  if ok then
    self.log(("integrated account %s: no calls for %g s (the fleet was told)"):format(key, seconds))
  else
    self:store_failed(err)
  end
end

return _M

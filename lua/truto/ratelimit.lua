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

-- How far ahead a slot may be for a call without a deadline: any time (the
-- pacer alone waits as long as its window says).
local NO_DEADLINE = 1e9
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

-- Reserves the next slot of key in this process's window: the seconds
-- until it, or nil when that is past the deadline (nothing is reserved).
function _M:reserve_locally(key, deadline, requests)
  local ring = self.rings[key]
  if not ring or ring.size ~= requests then   -- new, or of another size (the store failed or came back)
    ring = { next = 1, size = requests }
    self.rings[key] = ring
  end
  -- ring[ring.next] is the oldest of the last `requests` slots, if any.
  local now = self.now()
  local oldest = ring[ring.next]
  local wait = math.max(0, oldest and oldest + self.per - now or 0, (self.not_before[key] or 0) - now)
  if deadline and wait > 0 and now + wait >= deadline then return nil end
  ring[ring.next] = now + wait
  ring.next = ring.next % requests + 1
  return wait
end

-- The store failed (message): fall back or fail, said once per outage.
function _M:store_failed(message)
  message = tostring(message or "it gave no reason")
  self.retry_store_at = self.now() + STORE_RETRY_SECONDS
  if not self.failing then
    self.failing = true
    if self.on_store_error == "fail" then
      self.log(("rate-limit store failed (%s): calls fail until it answers"):format(message))
    else
      self.log(("rate-limit store failed (%s): pacing this process alone at %d requests per %g s until it answers")
        :format(message, self.local_requests, self.per))
    end
  end
  if self.on_store_error == "fail" then
    return nil, { kind = "store", message = "the rate-limit store failed: " .. message }
  end
  return true
end

-- What a store operation may take: its timeout, within the call's deadline.
function _M:store_seconds(deadline)
  local seconds = self.store_timeout
  if deadline then seconds = math.min(seconds, math.max(0.001, deadline - self.now())) end
  return seconds
end

--- Reserves key's next slot without waiting for it: the seconds until it
-- (0: now); nil when it would be past deadline (nothing is reserved); nil,
-- err when the store failed and on_store_error is "fail".
---@param key string the integrated account ("" when none)
---@param deadline? number the clock time the call must end by
---@return number? wait
---@return table? err { kind = "store", message }
function _M:reserve(key, deadline)
  if not self.store then return self:reserve_locally(key, deadline, self.requests) end
  if self.retry_store_at and self.now() < self.retry_store_at then
    if self.on_store_error == "fail" then
      return nil, { kind = "store", message = "the rate-limit store failed; it is tried again shortly" }
    end
    return self:reserve_locally(key, deadline, self.local_requests)
  end
  local max_wait = deadline and math.max(0, deadline - self.now()) or NO_DEADLINE
  local reserved, wait = self.store:acquire(key, { requests = self.requests, per = self.per, max_wait = max_wait,
                                                  margin = self.margin, timeout = self:store_seconds(deadline) })
  if reserved == nil then
    local ok, err = self:store_failed(wait)
    if not ok then return nil, err end
    return self:reserve_locally(key, deadline, self.local_requests)
  end
  if self.failing then
    self.failing = false
    self.log("rate-limit store answers again: pacing with the fleet")
  end
  if not reserved then return nil end
  return wait
end

--- After waiting for a reserved slot: 0 when the slot stands, or the wait
-- for a new one when key was blocked meanwhile, by this process or (with a
-- store that says: its optional `blocked`) another; the first slot stays
-- counted, so the window holds nothing extra.  nil (, err) as `reserve`.
---@param key string
---@param deadline? number
---@return number? wait
---@return table? err
function _M:recheck(key, deadline)
  local blocked = (self.not_before[key] or 0) - self.now()
  if blocked <= 0 and self.store and self.store.blocked and not self.failing then
    blocked = self.store:blocked(key, self:store_seconds(deadline)) or 0   -- a failed check: the slot stands
  end
  if blocked <= 0 then return 0 end
  return self:reserve(key, deadline)
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
  local waited = 0
  local wait, err = self:reserve(key, deadline)
  while wait do
    if wait <= 0 then return waited end
    self.sleep(wait)
    waited = waited + wait
    wait, err = self:recheck(key, deadline)
  end
  return nil, err
end

--- No call for key before `seconds` from now, in this process and (with a
-- store) in every process that shares it: the answer to a 429.
---@param key string
---@param seconds number
function _M:block(key, seconds)
  self.not_before[key] = math.max(self.not_before[key] or 0, self.now() + seconds)
  if not self.store or self.failing then return end
  local ok, err = self.store:block(key, seconds, self.store_timeout)
  if ok then
    self.log(("integrated account %s: no calls for %g s (the fleet was told)"):format(key, seconds))
  else
    self:store_failed(err)
  end
end

return _M

--- Where a fleet keeps its shared pacing (`rate_limit.store`): one budget
-- per integrated account for every worker and process that uses the store.
--
-- A store is any object with two methods (the three below are built in):
--   store:acquire(key, limit) -> true, wait | false, wait | nil, message
--     limit = { requests, per, max_wait, margin, timeout } (seconds; timeout:
--     what the operation may take).  Reserves the
--     key's next slot and returns the seconds until it (0: at once), so that
--     no window of `per` seconds holds more than `requests` slots, each
--     slot at least `margin` past the window it would crowd, none before
--     the key's "not before" time.  false, wait: the slot is more than
--     max_wait away; nothing was reserved.
--   store:block(key, seconds, timeout) -> true | nil, message
--     No slot of key before `seconds` from now (a 429's Retry-After).
--   store:blocked(key, timeout) -> seconds | nil, message (optional)
--     How long until the key's "not before" time (0: none): asked again
--     after waiting for a slot, so that a block set meanwhile by another
--     process holds back a slot reserved before it.
--
-- The decision is one atomic step where the state lives: a Lua script
-- run by Redis (EVALSHA), a lock around a shared dict's entry in nginx.
-- Times are the store's own (Redis's TIME; in nginx, the host's clock,
-- which its workers share), so the processes' clocks need not agree.
local redis = require "truto.redis"

-- Lua 5.1 and LuaJIT have only the global unpack, 5.2 on only table.unpack.
local unpack = table.unpack or unpack   -- luacheck: ignore 113 143

local _M = {}

-- ---- the algorithm, once in Lua (shared dict) and once for Redis ------------

-- A sliding log of reserved slots (ms), the latest `requests` of them kept:
-- a new slot is the latest of now, the not-before time and the
-- requests-th latest slot + per + margin.  Slots only ever move later, so
-- the log stays sorted.
local REDIS_SCRIPT = { source = [[
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'check' then
  local not_before = tonumber(redis.call('GET', KEYS[2]) or '0')
  return math.max(0, not_before - now)
end
if ARGV[1] == 'block' then
  local ms = tonumber(ARGV[2])
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if now + ms > current then redis.call('SET', KEYS[2], now + ms, 'PX', ms + 1000) end
  return 1
end
local n, per, max_wait, margin = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per - margin)
local at = now
local not_before = tonumber(redis.call('GET', KEYS[2]) or '0')
if not_before > at then at = not_before end
local count = redis.call('ZCARD', KEYS[1])
if count >= n then
  local crowded = redis.call('ZRANGE', KEYS[1], count - n, count - n, 'WITHSCORES')
  local free = tonumber(crowded[2]) + per + margin
  if free > at then at = free end
end
if at - now > max_wait then return { 0, at - now } end
local seq = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], at, seq)
redis.call('PEXPIRE', KEYS[1], at - now + per + margin + 1000)
redis.call('PEXPIRE', KEYS[3], at - now + per + margin + 1000)
return { 1, at - now }
]] }

-- The same step on a list of slots (ms, sorted): the new slot, or nil when
-- it is past max_wait.  Mutates slots.
local function reserve(slots, now, not_before, n, per, max_wait, margin)
  local keep = {}
  for _, at in ipairs(slots) do
    if at > now - per - margin then keep[#keep + 1] = at end
  end
  local at = math.max(now, not_before)
  if #keep >= n then at = math.max(at, keep[#keep - n + 1] + per + margin) end
  if at - now > max_wait then return nil, at - now, keep end
  keep[#keep + 1] = at
  while #keep > n do table.remove(keep, 1) end
  return at, at - now, keep
end

local function ms(seconds) return math.floor(seconds * 1000 + 0.5) end

-- ---- Redis -----------------------------------------------------------------

local Redis = {}
Redis.__index = Redis

local function redis_keys(key)
  -- One hash tag: the three keys of an account live on one cluster slot.
  local base = "truto:rate:{" .. key .. "}"
  return { base .. ":slots", base .. ":not_before", base .. ":seq" }
end

function Redis:run(key, args, timeout)
  local conn, err = redis.connect(self.env, self.parts, timeout or self.timeout, self.options)
  if not conn then return nil, err.message end
  local value
  value, err = conn:eval(REDIS_SCRIPT, redis_keys(key), args)
  if err then
    conn:close()
    return nil, err.message
  end
  conn:release()
  return value
end

function Redis:acquire(key, limit)
  local value, err = self:run(key, { "acquire", limit.requests, ms(limit.per), ms(limit.max_wait), ms(limit.margin) },
    limit.timeout)
  if not value then return nil, err end
  if type(value) ~= "table" or type(value[2]) ~= "number" then return nil, "Redis answered the pacing script oddly" end
  return value[1] == 1, value[2] / 1000
end

function Redis:blocked(key, timeout)
  local value, err = self:run(key, { "check" }, timeout)
  if not value then return nil, err end
  return value / 1000
end

function Redis:block(key, seconds, timeout)
  local value, err = self:run(key, { "block", math.max(1, ms(seconds)) }, timeout)
  if not value then return nil, err end
  return true
end

-- ---- nginx's lua_shared_dict -------------------------------------------------

local SharedDict = {}
SharedDict.__index = SharedDict

local LOCK_SECONDS = 0.5   -- a worker that dies holding the lock frees it after this

-- Runs step(entry) -> new_entry under the key's lock; the entry is a string
-- ("not_before slot slot ...", ms).  nil, message when the lock is not had
-- within the store's timeout.
function SharedDict:locked(key, step, timeout)
  local ngx, dict, lock = self.ngx, self.dict, "truto:lock:" .. key
  local deadline = ngx.now() + (timeout or self.timeout)
  while true do
    local ok, err = dict:add(lock, true, LOCK_SECONDS)
    if ok then break end
    if err ~= "exists" then return nil, "shared dict " .. self.name .. ": " .. tostring(err) end
    if ngx.now() >= deadline then return nil, "timed out waiting for the shared dict's lock of " .. key end
    ngx.sleep(0.001)
  end
  local result = { pcall(step, dict:get("truto:rate:" .. key)) }
  if result[1] and result[2] then
    local ok, err = dict:set("truto:rate:" .. key, result[2], 3600)
    if not ok then result = { false, "shared dict " .. self.name .. ": " .. tostring(err) } end
  end
  dict:delete(lock)
  if not result[1] then return nil, tostring(result[2]) end
  return unpack(result, 3)
end

local function parse_entry(entry)
  local numbers = {}
  for n in (entry or "0"):gmatch("%S+") do numbers[#numbers + 1] = tonumber(n) end
  local not_before = table.remove(numbers, 1) or 0
  return not_before, numbers
end

local function now_ms(ngx)
  ngx.update_time()
  return ms(ngx.now())
end

function SharedDict:acquire(key, limit)
  return self:locked(key, function(entry)
    local not_before, slots = parse_entry(entry)
    local now = now_ms(self.ngx)
    local at, wait, kept = reserve(slots, now, not_before, limit.requests, ms(limit.per), ms(limit.max_wait),
      ms(limit.margin))
    return not_before .. " " .. table.concat(kept, " "), at ~= nil, wait / 1000
  end, limit.timeout)
end

function SharedDict:blocked(key)
  local not_before = parse_entry(self.dict:get("truto:rate:" .. key))
  return math.max(0, not_before - now_ms(self.ngx)) / 1000
end

function SharedDict:block(key, seconds, timeout)
  local ok, err = self:locked(key, function(entry)
    local not_before, slots = parse_entry(entry)
    not_before = math.max(not_before, now_ms(self.ngx) + ms(seconds))
    return not_before .. " " .. table.concat(slots, " "), true
  end, timeout)
  if ok == nil then return nil, err end
  return true
end

-- ---- construction ----------------------------------------------------------------

--- The store of `rate_limit.store`, or nil, message.
---@param spec string|table "shared_dict:NAME", "redis://...", "rediss://..." or an object with acquire and block
---@param transport table the client's transport (its `env.tcp` makes the Redis sockets)
---@param timeout number seconds each store operation may take
---@return table? store
---@return string? err
function _M.new(spec, transport, timeout)
  if type(spec) == "table" then
    if type(spec.acquire) ~= "function" or type(spec.block) ~= "function" then
      return nil, "rate_limit.store must have acquire and block methods"
    end
    return spec
  end
  if type(spec) ~= "string" then return nil, "rate_limit.store must be a string or a table" end
  local dict_name = spec:match("^shared_dict:(.+)$")
  if dict_name then
    local ngx = rawget(_G, "ngx")
    local dict = ngx and ngx.shared and ngx.shared[dict_name]
    if not dict then
      return nil, ("rate_limit.store: no lua_shared_dict %s (shared_dict stores work inside nginx, "
        .. "with `lua_shared_dict %s 1m;` in nginx.conf)"):format(dict_name, dict_name)
    end
    return setmetatable({ ngx = ngx, dict = dict, name = dict_name, timeout = timeout }, SharedDict)
  end
  local parts, err = redis.parse_url(spec)
  if not parts then return nil, "rate_limit.store: " .. err end
  local env = transport.env
  if not (env and env.tcp) then
    return nil, "rate_limit.store: this transport has no sockets for Redis"
  end
  return setmetatable({ parts = parts, env = env, timeout = timeout, options = { insecure = transport.insecure } },
                      Redis)
end

--- The step of the shared dict store, for the specs (it mirrors the Redis script).
_M.reserve = reserve

return _M

-- Truto's per-integrated-account window (50 requests / 10 s).  The counters
-- only feed the ratelimit-* headers unless enforcement is switched on with
-- POST /_emulator/config, because the test suite alone would exceed them.
local _M = {}

local ngx = ngx

local DEFAULTS = { enforce = false, limit = 50, window = 10 }
local config
local windows -- key -> { started = seconds, count = n }

function _M.reset()
  config = { enforce = DEFAULTS.enforce, limit = DEFAULTS.limit, window = DEFAULTS.window }
  windows = {}
end

function _M.configure(options)
  if type(options) ~= "table" then return config end
  if options.enforce ~= nil then config.enforce = options.enforce == true end
  if tonumber(options.limit) then config.limit = math.floor(tonumber(options.limit)) end
  if tonumber(options.window) and tonumber(options.window) > 0 then config.window = tonumber(options.window) end
  windows = {}
  return config
end

function _M.config()
  return config
end

-- Counts one request for `key`; returns the headers to send and whether the
-- request is over the limit (only when enforcing).
function _M.hit(key)
  local now = ngx.now()
  local w = windows[key]
  if not w or now >= w.started + config.window then
    w = { started = now, count = 0 }
    windows[key] = w
  end
  w.count = w.count + 1
  local reset = math.max(1, math.ceil(w.started + config.window - now))
  local headers = {
    ["ratelimit-limit"] = config.limit .. ";w=" .. config.window,
    ["ratelimit-remaining"] = tostring(math.max(0, config.limit - w.count)),
    ["ratelimit-reset"] = tostring(reset),
  }
  return headers, config.enforce and w.count > config.limit, reset
end

_M.reset()

return _M

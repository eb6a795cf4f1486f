-- One emulator per spec file, plus the control calls specs need (the
-- emulator handle's own methods, which talk to it on a libcurl session of
-- their own, outside the client under test).
local emulator = require "truto.emulator"
local truto = require "truto"

local _M = {
  TOKEN = "test-token",
  ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
}

local handle

--- Starts the emulator; opts go to truto.emulator.start ({ tls = true }
-- serves HTTPS: _M.ca_file is then its CA).
function _M.start(opts)
  handle = assert(emulator.start(type(opts) == "table" and opts or nil))
  _M.base_url, _M.port, _M.ca_file, _M.http2 = handle.base_url, handle.port, handle.ca_file, handle.http2
  return handle.base_url
end

function _M.stop()
  if handle then handle:stop() end
  handle = nil
end

-- The control calls raise: a spec cannot go on without them.
function _M.reset() return assert(handle:reset()) end
function _M.requests() return assert(handle:requests()) end
function _M.stats() return assert(handle:stats()) end
function _M.faults(list) return assert(handle:faults(list)) end
function _M.queued() return assert(handle:queued_faults()) end

--- A client for the emulator; options override the defaults.
function _M.client(options)
  local o = { token = _M.TOKEN, base_url = handle.base_url }
  for k, v in pairs(options or {}) do o[k] = v end
  return truto.new(o)
end

return _M

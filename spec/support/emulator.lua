-- One emulator per spec file, plus the control calls specs need.  Control
-- requests go through the library's own libcurl session, outside the client
-- under test.
local core = require "truto.core"
local emulator = require "truto.emulator"
local truto = require "truto"

local _M = {
  TOKEN = "test-token",
  ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
}

local handle, session

--- Starts the emulator; opts go to truto.emulator.start ({ tls = true }
-- serves HTTPS: _M.ca_file is then its CA).
function _M.start(opts)
  handle = assert(emulator.start(type(opts) == "table" and opts or nil))
  session = core.session { ca_file = handle.ca_file }
  _M.base_url, _M.port, _M.ca_file, _M.http2 = handle.base_url, handle.port, handle.ca_file, handle.http2
  return handle.base_url
end

function _M.stop()
  if session then session:close() end
  if handle then handle:stop() end
  handle, session = nil, nil
end

local function control(method, path, body)
  local status, _, text = session:perform {
    method = method, url = handle.base_url .. "/_emulator/" .. path,
    headers = { "Content-Type: application/json" }, body = body and truto.encode_json(body) or nil,
  }
  assert(status == 200, "emulator control " .. path .. " answered " .. tostring(status) .. ": " .. tostring(text))
  return truto.decode_json(text)
end

function _M.reset() return control("POST", "reset") end
function _M.requests() return control("GET", "requests") end
function _M.stats() return control("GET", "stats") end
function _M.faults(list) return control("POST", "faults", { faults = list }) end
function _M.queued() return control("GET", "faults") end

--- A client for the emulator; options override the defaults.
function _M.client(options)
  local o = { token = _M.TOKEN, base_url = handle.base_url }
  for k, v in pairs(options or {}) do o[k] = v end
  return truto.new(o)
end

return _M

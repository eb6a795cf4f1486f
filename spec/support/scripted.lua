-- The unit specs' scripted transport (spec/client_spec.lua,
-- spec/platform_spec.lua): a client whose requests are recorded and answered
-- from a script, and small helpers over what it recorded.
local truto = require "truto"

local _M = {}

_M.TOKEN = "tok_SECRET_123"

-- A transport that records requests and answers from a script of replies:
-- { status, headers, body [, decode_error] } or { nil, { kind = ..., message = ... } }
-- (decode_error: the message of a body decode_json found not valid JSON).
function _M.scripted(replies)
  local t = { requests = {}, calls = {} }
  function t.perform(_, req, call)
    t.requests[#t.requests + 1] = req
    t.calls[#t.calls + 1] = call
    local reply = table.remove(replies, 1) or { 200, { ["content-type"] = "application/json" }, "{}" }
    if reply[1] == nil then return nil, reply[2] end
    if call.sink and reply[1] < 300 then
      call.sink(reply[3])
      return reply[1], reply[2], nil, {}
    end
    return reply[1], reply[2], reply[3], {}, reply[4]
  end
  return t
end

_M.JSON = { ["content-type"] = "application/json" }

--- A client on a scripted transport: client, transport, the waits it slept.
function _M.new_client(replies, options)
  local transport = _M.scripted(replies or {})
  local slept = {}
  local o = { token = _M.TOKEN, base_url = "http://127.0.0.1:9", transport = transport,
              sleep = function(s) slept[#slept + 1] = s end }
  for k, v in pairs(options or {}) do o[k] = v end
  return truto.new(o), transport, slept
end

--- The value of a header the client sent, by name in any case.
function _M.header(req, name)
  for _, line in ipairs(req.headers) do
    local n, v = line:match("^([^:]+): (.*)$")
    if n:lower() == name:lower() then return v end
  end
end

--- The keys of a table, sorted.
function _M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

return _M

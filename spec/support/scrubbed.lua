-- Checks that an error carries a secret nowhere (errors_spec, session_spec).
local assert = require "luassert"

local _M = {}

--- Every string reachable from v, keys included (raw access, as the scrub).
---@param v any
---@param out? string[]
---@param seen? table
---@return string[] strings
function _M.strings(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "string" then out[#out + 1] = v
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, item in next, v do
      _M.strings(k, out, seen)
      _M.strings(item, out, seen)
    end
  end
  return out
end

--- Asserts that neither a string of err nor tostring(err) holds secret.
---@param err table
---@param secret string
function _M.assert_clean(err, secret)
  for _, s in ipairs(_M.strings(err)) do assert.is_nil(s:find(secret, 1, true), s) end
  assert.is_nil(tostring(err):find(secret, 1, true), tostring(err))
end

return _M

--- lua-truto: a Lua client for Truto's Unified API.
-- This module is the public entry point; the C core (truto.core) is private.
local core = require "truto.core"
local cjson = require "cjson"
local client = require "truto.client"

local _M = {
  VERSION = core.VERSION,
  -- The JSON null sentinel: the very value lua-cjson decodes null to, so a
  -- decoded null compares equal to truto.null.
  null = cjson.null,
}

local array_mt, object_mt = core.array_mt, core.object_mt

local function mark(mt, t, name)
  if t == nil then
    return setmetatable({}, mt)
  end
  if type(t) ~= "table" then
    error(("bad argument #1 to 'truto.%s' (table expected, got %s)"):format(name, type(t)), 3)
  end
  local current = getmetatable(t)
  if current ~= nil and current ~= mt then
    error(("bad argument #1 to 'truto.%s' (table already has a metatable)"):format(name), 3)
  end
  return setmetatable(t, mt)
end

--- Marks t (or a new table) as a JSON array: `{}` is written as `[]`.
function _M.array(t)
  return mark(array_mt, t, "array")
end

--- Marks t (or a new table) as a JSON object: `{}` is written as `{}`.
function _M.object(t)
  return mark(object_mt, t, "object")
end

--- Truto's bracket notation, keys sorted: "a=1&b%5B%5D=x" (no leading "?").
_M.encode_query = core.encode_query

--- A request body as JSON.  list_fields (optional): a set of top-level field
-- names whose empty tables are arrays, e.g. { contact = true, tags = true }.
_M.encode_json = core.encode_json

--- Reads JSON text so that writing it back with encode_json gives the same
-- JSON: arrays and empty objects are marked, integers stay integers, null
-- is truto.null.  Returns value, or nil and "message at byte N".
_M.decode_json = core.decode_json

--- Checks Truto's X-Truto-Signature header (format=sha256,v=<hex>) against
-- the raw request body: true, or false and the reason.
_M.verify_webhook = core.verify_webhook

--- truto.new{ token = ..., base_url = ..., ... } -> client (see README).
_M.new = client.new

return _M

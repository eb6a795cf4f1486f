--- lua-truto: a Lua client for Truto's Unified API.
-- This module, `require "truto"`, is the public entry point: `truto.new` makes
-- a client (`truto.Client`); the rest are JSON and query helpers.  The C core
-- (truto.core) is private.
local core = require "truto.core"
local client = require "truto.client"
local multipart = require "truto.multipart"

local _M = {
  --- The library's version, a string such as `"1.2.3"`.
  ---@type string
  VERSION = core.VERSION,
  --- The JSON `null` value: in a body it writes `null` (to clear a field in a
  -- PATCH), in a query an empty value (`k=`).  It is the very value lua-cjson
  -- decodes null to (`cjson.null`), so a decoded null compares equal to it.
  ---@type lightuserdata
  null = core.null,
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
-- The mark only matters for empty tables and is checked against the contents.
-- Raises when t is not a table or already has another metatable.
---@param t? table the table to mark (default: a new empty table)
---@return table t the same table, marked
function _M.array(t)
  return mark(array_mt, t, "array")
end

--- Marks t (or a new table) as a JSON object: `{}` is written as `{}`.
-- Raises when t is not a table or already has another metatable.
---@param t? table the table to mark (default: a new empty table)
---@return table t the same table, marked
function _M.object(t)
  return mark(object_mt, t, "object")
end

--- Writes a query string in Truto's bracket notation, keys sorted, without the
-- leading `?`: `{ a = 1, b = { "x" } }` gives `"a=1&b%5B%5D=x"`.  Raises on what
-- cannot be a query value (NaN, functions, invalid UTF-8, cycles, ...), naming
-- its path.  The table is not modified.
---@type fun(query: table): string
_M.encode_query = core.encode_query

--- Writes a request body as JSON: keys sorted, integers exact, floats
-- round-tripping.  list_fields is a set of top-level field names whose empty
-- tables are arrays, e.g. `{ contact = true, tags = true }`.  Raises on what
-- JSON cannot hold, naming its path.  The value is not modified.
---@type fun(value: any, list_fields?: table<string, boolean>): string
_M.encode_json = core.encode_json

--- Reads JSON text so that writing it back with `truto.encode_json` gives the
-- same JSON: arrays and empty objects are marked, integers stay integers, null
-- is `truto.null`.  Returns the value, or nil and `"message at byte N"`.
---@type fun(text: string): any, string?
_M.decode_json = core.decode_json

--- Checks Truto's `X-Truto-Signature` header (`format=sha256,v=<digest>`, the
-- digest in hex or base64, several `v=` accepted) against the raw request
-- body, in constant time.  Returns true, or false and the reason
-- (`"missing signature header"`, `"signature mismatch"`, ...).
---@type fun(secret: string, raw_body: string, signature_header?: string): boolean, string?
_M.verify_webhook = core.verify_webhook

--- The page a customer opens to connect an account, from the `link_token`
-- that `client.link_tokens:create` returns: Truto's link URL,
-- `https://app.truto.one/connect-account?link_token=...` (Truto's API sends
-- only the token).  `app_url` replaces `https://app.truto.one`.  Raises on a
-- token that is not a non-empty string, or an app_url with a query,
-- fragment, space or control character.
---@param link_token string
---@param app_url? string default `"https://app.truto.one"`
---@return string url
function _M.connect_url(link_token, app_url)
  if type(link_token) ~= "string" or link_token == "" then
    error(("bad argument #1 to 'truto.connect_url' (link token must be a non-empty string, got %s)")
      :format(link_token == "" and "an empty string" or type(link_token)), 2)
  end
  -- A URL without query, fragment, space or control byte: the result goes
  -- into Location headers and pages as it is.
  if app_url ~= nil and (type(app_url) ~= "string" or not app_url:match("^https?://[^/?#]+")
      or app_url:find("[%c ?#\"<>\\]")) then
    error("bad argument #2 to 'truto.connect_url' (app_url must be an http(s) URL without query or fragment)", 2)
  end
  return (app_url or "https://app.truto.one"):gsub("/+$", "") .. "/connect-account?"
    .. core.encode_query { link_token = link_token }
end

--- A file to upload: `truto.file(path, { filename =, content_type = })` as a
-- top-level field of a body (or in a top-level list) makes the request
-- `multipart/form-data`, the file streamed from disk while it is sent.
-- Raises on an argument of the wrong type (README.md, "Uploads").
---@type fun(path: string, options?: { filename?: string, content_type?: string }): table
_M.file = multipart.file

--- A whole body sent as these bytes, unchanged, with this Content-Type
-- (default `application/octet-stream`).
---@type fun(bytes: string, content_type?: string): table
_M.raw = multipart.raw

--- Makes a client: `truto.client.new`, whose options are `truto.Options`.
_M.new = client.new

return _M

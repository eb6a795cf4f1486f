--- The comparison side of benchmark B1: the seed's request built in pure Lua,
-- the way a plain Lua client would build it: lua-cjson for the body, a query
-- encoder in Lua (Truto's bracket notation, sorted keys, percent-encoding),
-- path segments percent-encoded, and the header lines.
--
-- It writes the same URL and headers as the C core.  The body differs in key
-- order only: lua-cjson does not sort keys (the C core does), so this side
-- does strictly less work than the core for the body.
local cjson = require("cjson").new()

local _M = {}

local format, gsub, concat, sort = string.format, string.gsub, table.concat, table.sort
local type, pairs, tostring, tointeger, mtype = type, pairs, tostring, math.tointeger, math.type

-- Unreserved characters stay, every other byte is %XX (uppercase).
local ESCAPES = {}
for b = 0, 255 do ESCAPES[string.char(b)] = format("%%%02X", b) end
local function escape(s)
  return (gsub(s, "[^%w%-%._~]", ESCAPES))
end
_M.escape = escape

-- Integers exactly, integral floats as integers, other floats in the
-- shortest form that reads back to the same double.
local function number_text(v)
  if mtype(v) == "integer" then return tostring(v) end
  local i = tointeger(v)
  if i then return tostring(i) end
  for digits = 15, 17 do
    local s = format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
end

local function scalar_text(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return number_text(v) end
  if t == "boolean" then return v and "true" or "false" end
  error("unsupported query value: " .. t)
end

local function sorted_keys(t)
  local keys, n = {}, 0
  for k in pairs(t) do n = n + 1; keys[n] = k end
  sort(keys)
  return keys
end

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

-- prefix is already escaped ("a%5Bb%5D").
local function encode_value(out, n, prefix, v)
  if type(v) ~= "table" then
    n = n + 1
    out[n] = prefix .. "=" .. escape(scalar_text(v))
    return n
  end
  if is_array(v) then
    local holds_table = false
    for i = 1, #v do if type(v[i]) == "table" then holds_table = true break end end
    for i = 1, #v do
      if holds_table then
        n = encode_value(out, n, prefix .. "%5B" .. (i - 1) .. "%5D", v[i])
      else
        n = encode_value(out, n, prefix .. "%5B%5D", v[i])
      end
    end
    return n
  end
  local keys = sorted_keys(v)
  for i = 1, #keys do
    local k = keys[i]
    n = encode_value(out, n, prefix .. "%5B" .. escape(k) .. "%5D", v[k])
  end
  return n
end

--- Query table -> "a=1&b%5B%5D=x" (no leading "?").
function _M.encode_query(q)
  local out, n = {}, 0
  local keys = sorted_keys(q)
  for i = 1, #keys do
    local k = keys[i]
    n = encode_value(out, n, escape(k), q[k])
  end
  return concat(out, "&")
end

-- The C core's User-Agent; bench.lua sets the exact string (a constant for
-- any client).
_M.USER_AGENT = "lua-truto (Lua)"

--- spec: the table client.lua's prepare() gives core.build_request
-- ({method, base_url, path, query, body, headers, token, ...}).
-- Returns { method, url, headers = { "Name: value", ... }, body }.
function _M.build_request(spec)
  local segments = {}
  for i, segment in ipairs(spec.path) do segments[i] = escape(tostring(segment)) end
  local url = spec.base_url .. "/" .. concat(segments, "/")
  if spec.query then
    local q = _M.encode_query(spec.query)
    if q ~= "" then url = url .. "?" .. q end
  end
  local headers = {
    "Accept: application/json",
    "Authorization: Bearer " .. spec.token,
  }
  local body
  if spec.body then
    body = cjson.encode(spec.body)
    headers[#headers + 1] = "Content-Type: application/json"
  end
  headers[#headers + 1] = "User-Agent: " .. _M.USER_AGENT
  if spec.headers then
    local names = sorted_keys(spec.headers)
    for i = 1, #names do headers[#headers + 1] = names[i] .. ": " .. spec.headers[names[i]] end
  end
  return { method = spec.method, url = url, headers = headers, body = body }
end

return _M

-- JSON for the emulator.
--
-- Decoding uses lua-cjson (fast, strict).  lua-cjson 2.1.0 turns `[]` into an
-- empty table that it would write back as `{}`, so when a document holds an
-- empty array it is decoded a second time with dkjson, which marks arrays with
-- a metatable.  Encoding is done here rather than with cjson.encode because
-- cjson 2.1.0 cannot write an empty array, keeps only 14 significant digits
-- and escapes "/": the emulator must echo what it was sent.
local cjson = require "cjson.safe"

local _M = {}

local ARRAY_MT = { __jsontype = "array" }
_M.array_mt = ARRAY_MT
_M.null = cjson.null

local decoder = cjson.new()
decoder.decode_max_depth(1000)

local dkjson -- loaded on first need

-- Marks a table as a JSON array (also when empty) and returns it.
function _M.array(t)
  return setmetatable(t or {}, ARRAY_MT)
end

function _M.is_array(t)
  return getmetatable(t) == ARRAY_MT
end

local is_sequence

-- True for a table that encodes as a JSON array (marked, or a non-empty
-- sequence: lua-cjson does not mark the arrays it decodes).
function _M.is_list(t)
  return type(t) == "table" and (getmetatable(t) == ARRAY_MT or is_sequence(t))
end

-- Returns value or nil, error message.
function _M.decode(text)
  local value, err = decoder.decode(text)
  if err then return nil, err end
  if text:find("%[%s*%]") then
    dkjson = dkjson or require "dkjson"
    local marked = dkjson.decode(text, 1, cjson.null, nil, ARRAY_MT)
    if marked ~= nil then value = marked end
  end
  return value
end

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}
local function escape_char(c)
  return escapes[c] or string.format("\\u%04x", c:byte())
end

local function encode_number(n)
  if n ~= n or n == math.huge or n == -math.huge then return "null" end
  if n == math.floor(n) and n > -1e15 and n < 1e15 then
    return string.format("%d", n)
  end
  for precision = 14, 17 do
    local s = string.format("%." .. precision .. "g", n)
    if tonumber(s) == n then return s end
  end
  return string.format("%.17g", n)
end

local encode_value

is_sequence = function(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function encode_table(t, out)
  if getmetatable(t) == ARRAY_MT or is_sequence(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], out)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    out[#out + 1] = '"' .. k:gsub('[%c"\\]', escape_char) .. '":'
    local v = t[k]
    if v == nil then v = t[tonumber(k)] end
    encode_value(v, out)
  end
  out[#out + 1] = "}"
end

encode_value = function(v, out)
  local kind = type(v)
  if kind == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', escape_char) .. '"'
  elseif kind == "number" then
    out[#out + 1] = encode_number(v)
  elseif kind == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif kind == "table" then
    encode_table(v, out)
  else
    out[#out + 1] = "null" -- nil, cjson.null / ngx.null
  end
end

function _M.encode(v)
  local out = {}
  encode_value(v, out)
  return table.concat(out)
end

-- Deep copy that keeps array marks.
function _M.copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = _M.copy(x) end
  return setmetatable(c, getmetatable(v))
end

return _M

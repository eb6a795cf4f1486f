-- Query-string parsing with the semantics of the `qs` package's parse()
-- defaults (depth 5, arrayLimit 20, parameterLimit 1000, "&" delimiter), which
-- is how Truto reads bracket notation: k=v, k[a]=v, k[a][b]=v, k[]=v,
-- k[0][a]=v; brackets raw or %5B/%5D; "+" and %20 are spaces, %2B is "+".
local json = require "truto_emulator.json"

local _M = {}

local DEPTH = 5
local ARRAY_LIMIT = 20
local PARAMETER_LIMIT = 1000

local function hex_byte(h) return string.char(tonumber(h, 16)) end

-- Decodes %XX once; leaves invalid escapes alone.
function _M.unescape(s)
  return (s:gsub("%%(%x%x)", hex_byte))
end

local function decode_component(s)
  return _M.unescape((s:gsub("+", " ")))
end

-- qs splits "a[b][c]" into { "a", "[b]", "[c]" }: successive bracket pairs,
-- adjacent or not; past DEPTH the rest is kept as one literal segment.
local function split_key(key)
  local first = key:find("%[[^%[%]]*%]")
  local parent = first and key:sub(1, first - 1) or key
  local segments = {}
  if parent ~= "" then segments[1] = parent end
  local pos, depth = first, 0
  while pos do
    local s, e = key:find("%[[^%[%]]*%]", pos)
    if not s then break end
    if depth >= DEPTH then
      segments[#segments + 1] = "[" .. key:sub(s) .. "]"
      break
    end
    segments[#segments + 1] = key:sub(s, e)
    depth = depth + 1
    pos = e + 1
  end
  return segments
end

-- Arrays are built sparse (qs index semantics) and compacted at the end.
local function new_array() return json.array({}) end
local function is_array(v) return json.is_array(v) end

local function array_length(t)
  local n = 0
  for k in pairs(t) do
    if type(k) == "number" and k > n then n = k end
  end
  return n
end

local function push(t, v) t[array_length(t) + 1] = v end

local function array_to_object(t)
  local o = {}
  for k, v in pairs(t) do o[tostring(k - 1)] = v end
  return o
end

local merge

merge = function(target, source)
  if source == nil then return target end
  if type(source) ~= "table" then
    if type(target) == "table" then
      if is_array(target) then push(target, source) else target[source] = true end
      return target
    end
    return json.array({ target, source })
  end
  if type(target) ~= "table" then
    local result = json.array({ target })
    if is_array(source) then
      for i = 1, array_length(source) do
        if source[i] ~= nil then push(result, source[i]) end
      end
      return result
    end
    return merge(array_to_object(result), source)
  end
  if is_array(target) and is_array(source) then
    for i = 1, array_length(source) do
      local item = source[i]
      if item ~= nil then
        local existing = target[i]
        if existing ~= nil then
          if type(existing) == "table" and type(item) == "table" then
            target[i] = merge(existing, item)
          else
            push(target, item)
          end
        else
          target[i] = item
        end
      end
    end
    return target
  end
  local into = target
  if is_array(target) then into = array_to_object(target) end
  for k, v in pairs(source) do
    if is_array(source) then k = tostring(k - 1) end
    if into[k] ~= nil then into[k] = merge(into[k], v) else into[k] = v end
  end
  return into
end

-- Wraps the leaf value in one table per key segment, innermost first.
local function build(segments, leaf)
  local value = leaf
  for i = #segments, 1, -1 do
    local segment = segments[i]
    if segment == "[]" then
      local arr = new_array()
      if type(value) == "table" and is_array(value) then
        for j = 1, array_length(value) do arr[j] = value[j] end
      else
        arr[1] = value
      end
      value = arr
    else
      local clean = segment:match("^%[(.*)%]$")
      local bracketed = clean ~= nil
      clean = clean or segment
      local index = bracketed and clean:match("^%d+$") and tonumber(clean)
      if index and tostring(index) == clean and index <= ARRAY_LIMIT then
        local arr = new_array()
        arr[index + 1] = value
        value = arr
      elseif clean ~= "__proto__" then
        value = { [clean] = value }
      end
    end
  end
  return value
end

local function compact(v)
  if type(v) ~= "table" then return v end
  if is_array(v) then
    local out = new_array()
    for i = 1, array_length(v) do
      if v[i] ~= nil then out[#out + 1] = compact(v[i]) end
    end
    return out
  end
  for k, x in pairs(v) do v[k] = compact(x) end
  return v
end

-- Parses a raw query string (no leading "?") into nested tables. Arrays are
-- marked with json.array_mt so they encode as JSON arrays.
function _M.parse(raw)
  local combined, order = {}, {}
  local count = 0
  for part in (raw or ""):gmatch("[^&]+") do
    count = count + 1
    if count > PARAMETER_LIMIT then break end
    local eq = part:find("]=", 1, true)
    eq = eq and eq + 1 or part:find("=", 1, true)
    local key, value
    if eq then
      key, value = decode_component(part:sub(1, eq - 1)), decode_component(part:sub(eq + 1))
    else
      key, value = decode_component(part), ""
    end
    if key ~= "" then
      local existing = combined[key]
      if existing == nil then
        combined[key] = value
        order[#order + 1] = key
      elseif is_array(existing) then
        existing[#existing + 1] = value
      else
        combined[key] = json.array({ existing, value })
      end
    end
  end
  local result = {}
  for _, key in ipairs(order) do
    result = merge(result, build(split_key(key), combined[key]))
  end
  return compact(result)
end

return _M

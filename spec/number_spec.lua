-- Floats as text (csrc/number.c): truto.encode_json and truto.encode_query
-- write a double the way JavaScript's String(x) and JSON.stringify(x) do
-- (ECMAScript Number::toString: the fewest significant digits that read back
-- to the same double, the nearest such digits when there are several, plain
-- notation from 1e-6 up to 1e21, exponent notation outside).  Checked digit
-- for digit against node (spec/support/number_oracle.js) on every power of
-- two and of ten, their neighbours, and a million random bit patterns.
--
-- Doubles are made from their bit patterns (and taken apart into them) by
-- exact arithmetic on two 32-bit halves, so the spec runs under Lua 5.1, 5.2
-- and LuaJIT (no string.pack, no 64-bit integers) as well as 5.3 and 5.4.  node is handed the
-- patterns, never decimal text, so it sees exactly the double we printed.
local truto = require "truto"

local TWO20, TWO31, TWO32 = 2 ^ 20, 2 ^ 31, 2 ^ 32

-- A random 32-bit half, 0 .. 2^32 - 1: math.random's bounds are C ints in
-- Lua 5.1 and 5.2, so it is drawn as two 16-bit halves.
local function random_half()
  return math.random(0, 0xFFFF) * 0x10000 + math.random(0, 0xFFFF)
end
local P2 = { [0] = 1.0 }           -- P2[k] == 2^k exactly (floats), -1074 <= k <= 1023
for k = 1, 1023 do P2[k] = P2[k - 1] * 2 end
for k = -1, -1074, -1 do P2[k] = P2[k + 1] / 2 end

-- The double whose 64-bit pattern is hi:lo (each 0 .. 2^32 - 1), or nil when
-- its exponent field is all ones (infinities, NaNs).  Each step is exact: the
-- significand field is below 2^52 and only powers of two scale it.
local function from_bits(hi, lo)
  local sign = 1
  if hi >= TWO31 then sign, hi = -1, hi - TWO31 end
  local e = math.floor(hi / TWO20)
  if e == 2047 then return nil end
  local m = (hi % TWO20) * TWO32 + lo
  if e == 0 then return sign * (m * P2[-1074]) end
  return sign * ((P2[52] + m) * P2[e - 1075])
end

-- hi, lo of a finite double.
local function to_bits(x)
  local hi = 0
  if x < 0 or (x == 0 and 1 / x < 0) then hi, x = TWO31, -x end
  if x < P2[-1022] then            -- zero or subnormal: x = m * 2^-1074
    local m = x * P2[1022] * P2[52]
    return hi + math.floor(m / TWO32), m % TWO32
  end
  local e, top = -1022, 1023        -- the largest e with 2^e <= x
  while e < top do
    local mid = math.floor((e + top + 1) / 2)
    if P2[mid] <= x then e = mid else top = mid - 1 end
  end
  local m = (x / P2[e] - 1) * P2[52]
  return hi + (e + 1023) * TWO20 + math.floor(m / TWO32), m % TWO32
end

-- A list of bit patterns, kept as two arrays of halves (a million small
-- tables would cost more time than the check itself).
local function patterns()
  return { hi = {}, lo = {}, n = 0 }
end

local function add(list, hi, lo)
  if hi % TWO31 >= 0x7FF00000 then return end        -- not finite
  list.n = list.n + 1
  list.hi[list.n], list.lo[list.n] = hi, lo
end

-- x, and the doubles just above and below it in magnitude (its neighbours:
-- the pattern plus and minus one), each with either sign.
local function add_with_neighbours(list, x)
  local hi, lo = to_bits(x)
  for _, sign in ipairs { 0, TWO31 } do
    add(list, hi + sign, lo)
    if lo < TWO32 - 1 then add(list, hi + sign, lo + 1) else add(list, hi + sign + 1, 0) end
    if lo > 0 then add(list, hi + sign, lo - 1) else add(list, hi + sign - 1, TWO32 - 1) end
  end
end

local function hex(hi, lo)
  return string.format("%08x%08x", hi, lo)
end

local function split_array(text)
  local items = {}
  for item in text:sub(2, -2):gmatch("[^,]+") do items[#items + 1] = item end
  return items
end

-- Starts node on the patterns; the function returned waits for String(x)
-- of each, in order (node works while we encode).
local function start_node(list)
  local lines = {}
  for i = 1, list.n do lines[i] = hex(list.hi[i], list.lo[i]) end
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  local pipe = assert(io.popen("node spec/support/number_oracle.js < " .. path))
  return function()
    local out = {}
    for line in pipe:lines() do out[#out + 1] = line end
    local ok = pipe:close()
    os.remove(path)
    assert(ok and #out == list.n, "node answered " .. #out .. " of " .. list.n .. " patterns")
    return out
  end
end

local MAX_REPORTED = 8

-- Under Lua 5.1, 5.2 and LuaJIT, decode_json keeps an integer it cannot hold exactly (beyond
-- 2^53) as its text, which encode_json then writes as a JSON string.
local function stays_string(text)
  return not math.type and text:find("^%-?%d+$") ~= nil and math.abs(tonumber(text)) > 2 ^ 53
end

-- Compares encode_json (all the doubles as one array) with node's String(x),
-- then checks that node's text read by decode_json is written back the same.
-- Returns a report of the failures ("" when none) and the strings written.
local function compare_with_node(list)
  local node = start_node(list)
  local xs = {}
  for i = 1, list.n do xs[i] = from_bits(list.hi[i], list.lo[i]) end
  local ours = split_array(truto.encode_json(xs))
  local js = node()
  assert.equal(list.n, #ours)
  local report, failed = {}, 0
  for i = 1, list.n do
    if ours[i] ~= js[i] then
      failed = failed + 1
      if failed <= MAX_REPORTED then
        report[#report + 1] = string.format("  %s: ours %s, String(x) %s", hex(list.hi[i], list.lo[i]), ours[i], js[i])
      end
    end
  end
  if failed > 0 then
    table.insert(report, 1, failed .. " of " .. list.n .. " doubles differ from node's String(x):")
  end

  -- Read back in batches: decode_json gathers an array's items on the Lua
  -- stack, which LuaJIT caps at about 8000 slots.
  local bad = 0
  for first = 1, list.n, 4000 do
    local last = math.min(first + 3999, list.n)
    local value, err = truto.decode_json("[" .. table.concat(js, ",", first, last) .. "]")
    assert(value, err)
    local back = split_array(truto.encode_json(value))
    for i = first, last do
      local b = back[i - first + 1]
      if b ~= js[i] and not (b == '"' .. js[i] .. '"' and stays_string(js[i])) then
        bad = bad + 1
        if bad == 1 then report[#report + 1] = "node's text does not come back through decode_json and encode_json:" end
        if bad <= MAX_REPORTED then report[#report + 1] = "  " .. js[i] .. " came back as " .. tostring(b) end
      end
    end
  end
  return table.concat(report, "\n"), ours
end

describe("numbers as text", function()
  it("writes these doubles as JavaScript does", function()
    local cases = {
      { 2 ^ -24, "5.960464477539063e-8" },              -- a power of two whose shortest digits are
      { 2 ^ 89, "6.189700196426902e+26" },              -- one unit above the correctly rounded ones
      { 2 ^ -1074, "5e-324" }, { 5e-324, "5e-324" },
      { 2 ^ -1022, "2.2250738585072014e-308" },
      { 1.7976931348623157e308, "1.7976931348623157e+308" },
      { 0.1, "0.1" }, { 0.1 + 0.2, "0.30000000000000004" }, { 1 / 3, "0.3333333333333333" },
      { 1e21, "1e+21" }, { 1e20, "100000000000000000000" }, { 1.2345678901234568e20, "123456789012345680000" },
      { 1e-7, "1e-7" }, { 1e-6, "0.000001" }, { 1.5e-7, "1.5e-7" },
      { 2 ^ 63, "9223372036854776000" }, { 2 ^ 53 + 2, "9007199254740994" },
      { 100.0, "100" }, { -1.5, "-1.5" }, { -0.0, "0" }, { -2 ^ -24, "-5.960464477539063e-8" },
    }
    for _, c in ipairs(cases) do
      local x, want = c[1], c[2]
      assert.equal(want, truto.encode_json(x), "encode_json of " .. hex(to_bits(x)))
      assert.equal("[" .. want .. "]", truto.encode_json { x })
      assert.equal("x=" .. want:gsub("%+", "%%2B"), truto.encode_query { x = x }, "encode_query of " .. want)
    end
  end)

  if string.pack then   -- Lua 5.3 and 5.4: nothing to compare with before
    it("agrees with the bit pattern helpers' string.pack equivalent", function()
      local unpack, pack = string.unpack, string.pack
      math.randomseed(99)
      for _ = 1, 10000 do
        local hi, lo = random_half(), random_half()
        local x = from_bits(hi, lo)
        if x then
          local y = unpack("<d", pack("<I4I4", lo, hi))
          assert.is_true(x == y and (x ~= 0 or 1 / x == 1 / y), hex(hi, lo))
          local h2, l2 = to_bits(x)
          assert.equal(hex(hi, lo), hex(h2, l2))
        end
      end
    end)
  end

  it("agrees with node on every power of two and its neighbours", function()
    local list = patterns()
    for k = -1074, 1023 do add_with_neighbours(list, P2[k]) end
    local report, ours = compare_with_node(list)
    assert.is_true(report == "", report)
    -- encode_query writes the same digits ('+' escaped, as qs does)
    for i = 1, list.n do
      local want = "x=" .. ours[i]:gsub("%+", "%%2B")
      local got = truto.encode_query { x = from_bits(list.hi[i], list.lo[i]) }
      if got ~= want then assert.equal(want, got, "encode_query of " .. hex(list.hi[i], list.lo[i])) end
    end
  end)

  it("agrees with node on every power of ten 1e-323 .. 1e308 and its neighbours", function()
    local list = patterns()
    for k = -323, 308 do
      local x = tonumber("1e" .. k)
      -- the double nearest 10^k is the one whose shortest digits are "1"
      local want = k >= 21 and "1e+" .. k or k <= -7 and "1e" .. k
        or k >= 0 and "1" .. string.rep("0", k) or "0." .. string.rep("0", -k - 1) .. "1"
      assert.equal(want, truto.encode_json(x))
      add_with_neighbours(list, x)
    end
    local report = compare_with_node(list)
    assert.is_true(report == "", report)
  end)

  -- #slow: some 6 s natively, over 3 minutes under valgrind (--exclude-tags=slow)
  it("agrees with node on 1,000,000 random finite bit patterns #slow", function()
    math.randomseed(20240611)
    local chunks, size, failures = 5, 200000, {}
    for _ = 1, chunks do
      local list = patterns()
      while list.n < size do add(list, random_half(), random_half()) end
      local report = compare_with_node(list)
      if report ~= "" then failures[#failures + 1] = report end
    end
    assert.is_true(#failures == 0, table.concat(failures, "\n"))
  end)
end)

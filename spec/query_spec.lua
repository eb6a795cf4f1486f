-- truto.encode_query: Truto's bracket notation (DESIGN.md "Query encoding").
local truto = require "truto"
local cjson = require "cjson"

local encode = truto.encode_query

describe("truto.encode_query", function()
  describe("the seed's parameters", function()
    it("writes truto_exclude_fields as an array of scalars", function()
      assert.equal("truto_exclude_fields%5B%5D=id&truto_exclude_fields%5B%5D=name",
        encode { truto_exclude_fields = { "id", "name" } })
    end)

    it("writes remote_query as an object", function()
      assert.equal("remote_query%5Bfoo%5D=bar", encode { remote_query = { foo = "bar" } })
    end)

    it("writes the full update query sorted by key", function()
      assert.equal("integrated_account_id=62f44730-dd91-461e-bd6a-aedd9e0ad79d"
        .. "&remote_query%5Bfoo%5D=bar&truto_exclude_fields%5B%5D=id&truto_exclude_fields%5B%5D=name"
        .. "&truto_ignore_remote_data=true&truto_response_format=unified",
        encode {
          truto_response_format = "unified",
          truto_exclude_fields = { "id", "name" },
          remote_query = { foo = "bar" },
          truto_ignore_remote_data = true,
          integrated_account_id = "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
        })
    end)
  end)

  describe("structure", function()
    it("nests objects with brackets", function()
      assert.equal("foo%5Bbar%5D=baz&foo%5Bbar1%5D%5Bbar2%5D=baz2",
        encode { foo = { bar = "baz", bar1 = { bar2 = "baz2" } } })
    end)

    it("indexes arrays that hold tables from zero, every item", function()
      assert.equal("foo%5B0%5D=bar&foo%5B1%5D%5Bbar1%5D=baz1",
        encode { foo = { "bar", { bar1 = "baz1" } } })
      assert.equal("k%5B0%5D%5Ba%5D=1&k%5B1%5D%5Ba%5D=2", encode { k = { { a = 1 }, { a = 2 } } })
    end)

    it("writes arrays inside indexed arrays with brackets", function()
      assert.equal("k%5B0%5D%5B%5D=a&k%5B0%5D%5B%5D=b&k%5B1%5D%5B%5D=c",
        encode { k = { { "a", "b" }, { "c" } } })
    end)

    it("sorts keys bytewise at every level", function()
      assert.equal("B=1&a%5BZ%5D=1&a%5Ba%5D=1&a%5B%C3%A9%5D=1&b=1",
        encode { b = 1, a = { ["é"] = 1, a = 1, Z = 1 }, B = 1 })
    end)

    it("leaves out empty tables, and gives nothing for an empty query", function()
      assert.equal("", encode {})
      assert.equal("b=1", encode { a = {}, b = 1, c = { d = {} } })
    end)

    it("accepts tables marked with truto.array and truto.object", function()
      assert.equal("a%5B%5D=1", encode { a = truto.array { 1 }, b = truto.array(), c = truto.object() })
    end)
  end)

  describe("scalars", function()
    it("writes booleans as true and false", function()
      assert.equal("a=true&b=false", encode { a = true, b = false })
    end)

    it("writes integers exactly and integral floats as integers", function()
      assert.equal("a=10&b=10&c=-3&e=0&f=9007199254740992",
        encode { a = 10, b = 10.0, c = -3.0, e = -0.0, f = 2 ^ 53 })
    end)

    if math.type then   -- the 64-bit integers of Lua 5.3 and 5.4
      it("writes 64-bit integers exactly", function()
        assert.equal("a=9223372036854775807&b=-9223372036854775808&d=9007199254740993",
          encode { a = math.maxinteger, b = math.mininteger, d = 9007199254740993 })
      end)
    else                -- Lua 5.1, 5.2 and LuaJIT: numbers are doubles
      it("writes integral doubles past 2^53 as integers", function()
        assert.equal("a=18014398509481984&b=-9223372036854776000", encode { a = 2 ^ 54, b = -2 ^ 63 })
      end)
    end

    it("writes other floats in their shortest round-trip form, as JavaScript does", function()
      assert.equal("a=0.1&b=0.30000000000000004&c=1e%2B21&d=1e-7&e=123456.789&f=100000000000000000000"
        .. "&g=5e-324&h=1.7976931348623157e%2B308&i=0.000001&j=-2.5",
        encode { a = 0.1, b = 0.1 + 0.2, c = 1e21, d = 1e-7, e = 123456.789, f = 1e20,
                 g = 5e-324, h = 1.7976931348623157e308, i = 1e-6, j = -2.5 })
    end)

    it("writes truto.null as an empty value", function()
      assert.equal("a=&b%5B%5D=", encode { a = truto.null, b = { truto.null } })
    end)

    it("percent-encodes everything but unreserved characters, uppercase", function()
      assert.equal("q=AZaz09-._~%20%2B%26%3D%3F%23%2F%25%5B%5D%3A%40%21%27%28%29%2A%2C%3B%24",
        encode { q = "AZaz09-._~ +&=?#/%[]:@!'()*,;$" })
      assert.equal("t=2026-01-01T10%3A00%3A00%2B05%3A30", encode { t = "2026-01-01T10:00:00+05:30" })
      assert.equal("%E6%97%A5=%F0%9F%98%80", encode { ["日"] = "😀" })
    end)

    it("encodes keys the same way as values", function()
      assert.equal("a%20b%5Bc%26d%5D=1", encode { ["a b"] = { ["c&d"] = 1 } })
    end)
  end)

  describe("bad input raises an error naming the path", function()
    it("for a wrong argument type", function()
      assert.has_error(function() encode("x") end)
      assert.matches("table expected, got string", select(2, pcall(encode, "x")), 1, true)
      assert.matches("table expected, got no value", select(2, pcall(encode)), 1, true)
    end)

    local cases = {
      { "an array at the top", { "a", "b" }, "truto: query: must be a table of named parameters, not an array" },
      { "NaN", { a = { b = 0 / 0 } }, "truto: query.a.b: NaN is not a valid query value" },
      { "infinity", { a = -math.huge }, "truto: query.a: -inf is not a valid query value" },
      { "a function", { a = { print } }, "truto: query.a[1]: a function cannot be a query value" },
      { "a coroutine", { a = coroutine.create(function() end) }, "truto: query.a: a thread cannot be a query value" },
      { "userdata", { a = io.stdout }, "truto: query.a: a userdata cannot be a query value" },
      { "invalid UTF-8", { a = "ok\255" }, "truto: query.a: invalid UTF-8 at byte 3" },
      { "invalid UTF-8 in a key", { ["\192\128"] = 1 }, 'truto: query["\\xC0\\x80"]: invalid UTF-8 in key at byte 1' },
      { "a surrogate", { s = "\237\160\128" }, "truto: query.s: invalid UTF-8 at byte 1" },
      { "an empty key", { a = { [""] = 1 } }, 'truto: query.a[""]: empty key' },
      { "a sparse array", { a = { 1, nil, 3 } }, "truto: query.a: sparse array: item 2 is nil but a later index is set" },
      { "a mixed table", { a = { 1, b = 2 } }, "truto: query.a: table mixes string keys and array items" },
      { "a boolean key", { a = { [true] = 1 } }, "truto: query.a: table keys must be strings (object) or 1..n (array)" },
      { "a float key", { a = { [1.5] = 1 } }, "truto: query.a: table keys must be strings (object) or 1..n (array)" },
      { "a marked array with names", { a = truto.array { b = 1 } }, "truto: query.a: truto.array() table has string keys" },
      { "a marked object with items", { a = truto.object { 1 } }, "truto: query.a: truto.object() table has array items" },
    }
    for _, c in ipairs(cases) do
      it("for " .. c[1], function()
        local ok, err = pcall(encode, c[2])
        assert.is_false(ok)
        assert.equal(c[3], err)
      end)
    end

    it("for a cycle", function()
      local t = { a = {} }
      t.a.back = t
      local ok, err = pcall(encode, t)
      assert.is_false(ok)
      assert.equal("truto: query.a.back: cycle: this table contains itself", err)
    end)

    it("for nesting past the limit", function()
      local t = {}
      local cur = t
      for _ = 1, 150 do cur.x = {} cur = cur.x end
      cur.x = 1
      local ok, err = pcall(encode, t)
      assert.is_false(ok)
      assert.matches("nesting deeper than 100 levels$", err)
    end)

    it("and leaves the caller's table untouched", function()
      local q = { b = { 2, 1 }, a = { z = 1, y = { 1 } } }
      encode(q)
      assert.same({ b = { 2, 1 }, a = { z = 1, y = { 1 } } }, q)
      assert.is_nil(getmetatable(q))
    end)
  end)
end)

-- Differential check against the qs package (Debian's node-qs), over many
-- generated queries: our string equals qs.stringify(input, brackets, sorted)
-- wherever no array holds a table, and qs.parse reads every string back.
describe("agreement with qs", function()
  local N = 3000
  local key_chars = { "a", "b", "z", "A", "_", "-", ".", "~", " ", "é", "日", "😀", "%", "&", "=", "+", "#", "?",
    "/", ":", "'", "\"", "\\", "*", "!" }
  local str_chars = { "a", "Z", "0", "9", " ", "+", "%", "&", "=", "#", "[", "]", "é", "日", "😀", "\n", "\t",
    ":", "/", "?", "~", "'", "\0", "*", "," }

  local function pick(t) return t[math.random(#t)] end
  local function gen_key()
    local parts = { pick { "a", "b", "c", "x", "é", "Z", "_" } }   -- never numeric: qs reads those as indices
    for _ = 1, math.random(0, 5) do parts[#parts + 1] = pick(key_chars) end
    return table.concat(parts)
  end
  local function gen_scalar()
    local r = math.random(9)
    if r == 1 then return math.random(-1000, 1000)
    elseif r == 2 then return math.random(-2 ^ 53, 2 ^ 53)                 -- integers JavaScript holds exactly
    elseif r == 3 then return (math.random() - 0.5) * 10 ^ math.random(-30, 30)
    elseif r == 4 then return math.random(-100, 100) / 8 + 0.0
    elseif r == 5 then return math.random(2) == 1
    elseif r == 6 then return truto.null
    else
      local parts = {}
      for _ = 1, math.random(0, 8) do parts[#parts + 1] = pick(str_chars) end
      return table.concat(parts)
    end
  end
  local gen_value
  local function gen_table(depth, is_array)
    local t, n = {}, math.random(0, 5)
    for i = 1, n do
      if is_array then t[i] = gen_value(depth + 1) else t[gen_key()] = gen_value(depth + 1) end
    end
    return t
  end
  function gen_value(depth)
    local r = math.random(10)
    if depth < 4 and r <= 2 then return gen_table(depth, false)
    elseif depth < 4 and r <= 4 then return gen_table(depth, true)
    end
    return gen_scalar()
  end

  -- What qs.parse gives back for a value: strings for scalars, empty tables
  -- gone, arrays compacted; nil when nothing is left.
  local function as_parsed(v)
    if v == truto.null then return "" end
    local tv = type(v)
    if tv == "boolean" then return tostring(v) end
    if tv == "string" then return v end
    if tv == "number" then
      -- our own number formatting is pinned by the exact specs above
      return encode { x = v }:sub(3):gsub("%%2B", "+")
    end
    local out, any = {}, false
    if #v > 0 then
      for _, item in ipairs(v) do
        local p = as_parsed(item)
        if p ~= nil then out[#out + 1] = p any = true end
      end
    else
      for k, item in pairs(v) do
        local p = as_parsed(item)
        if p ~= nil then out[k] = p any = true end
      end
    end
    return any and out or nil
  end
  local function holds_table_in_array(v)
    if type(v) ~= "table" then return false end
    for k, item in pairs(v) do
      if type(item) == "table" and (type(k) == "number" or holds_table_in_array(item)) then
        return true
      end
    end
    return false
  end

  it("holds for " .. N .. " generated queries", function()
    math.randomseed(20261128)
    local cases, lines = {}, {}
    for i = 1, N do
      local input = gen_table(0, false)
      local ours = encode(input)
      cases[i] = { input = input, ours = ours }
      lines[i] = truto.encode_json { input = truto.object(input), ours = ours }
    end
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    local pipe = assert(io.popen("NODE_PATH=/usr/share/nodejs node spec/support/qs_oracle.js < " .. path))
    local answers = {}
    for line in pipe:lines() do answers[#answers + 1] = cjson.decode(line) end
    pipe:close()
    os.remove(path)
    assert.equal(N, #answers)

    local compared_stringify = 0
    for i, c in ipairs(cases) do
      local a = answers[i]
      if not holds_table_in_array(c.input) then
        compared_stringify = compared_stringify + 1
        assert.equal(a.stringify, c.ours, "stringify differs for case " .. i)
      end
      local expected = as_parsed(c.input) or {}
      local parsed = a.parse
      -- cjson reads {} as an empty table, so both sides compare as tables
      assert.same(expected, parsed, "qs.parse differs for case " .. i .. ": " .. c.ours)
    end
    assert.is_true(compared_stringify > N / 3, "too few cases compared with qs.stringify")
  end)
end)

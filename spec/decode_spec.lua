-- truto.decode_json: the response reader whose values write back unchanged.
local truto = require "truto"

local decode, encode = truto.decode_json, truto.encode_json

describe("truto.decode_json", function()
  it("reads an opportunity so that writing it back gives the same JSON", function()
    local text = '{"amount":125000.5,"contact":[],"custom_fields":{},"id":"23423523",'
      .. '"remote_data":{"list":[],"n":12345678901234567,"nested":{"deep":[[],{}]}},"stage":null,'
      .. '"tags":[{"id":"t1","name":"vip"}]}'
    local value = assert(decode(text))
    assert.equal(truto.null, value.stage)
    if math.type then
      assert.equal(text, encode(value))
      assert.equal("integer", math.type(value.remote_data.n))
      assert.equal(12345678901234567, value.remote_data.n)
    else
      -- Lua 5.1, 5.2, LuaJIT: an integer past 2^53 stays the exact string it was
      assert.equal("12345678901234567", value.remote_data.n)
      assert.equal(text:gsub("12345678901234567", '"12345678901234567"'), encode(value))
    end
  end)

  if math.type then
    it("reads integers as integers and other numbers as floats", function()
      local v = decode("[0,-0,10,-9223372036854775808,9223372036854775807,1.5,1e2,1E-2,-0.0,9223372036854775808]")
      local types = {}
      for i, x in ipairs(v) do types[i] = math.type(x) end
      assert.same({ "integer", "integer", "integer", "integer", "integer", "float", "float", "float", "float", "float" },
        types)
      assert.equal(math.mininteger, v[4])
      assert.equal(100.0, v[7])
      assert.equal(2 ^ 63, v[10])
    end)
  else
    it("reads numbers as doubles, and integers past 2^53 as their exact text", function()
      local v = decode("[0,10,9007199254740992,-9007199254740992,9007199254740993,-9223372036854775808,1.5,1e300]")
      assert.same({ 0, 10, 2 ^ 53, -2 ^ 53, "9007199254740993", "-9223372036854775808", 1.5, 1e300 }, v)
    end)
  end

  it("reads escapes, surrogate pairs and UTF-8", function()
    assert.equal('q"\\/\b\f\n\r\t\0é😀', decode([["q\"\\\/\b\f\n\r\t\u0000\u00e9\ud83d\ude00"]]))
    assert.equal("\239\191\189x", decode([["\udc00x"]]))     -- a lone surrogate becomes U+FFFD
    assert.equal("日本", decode('"日本"'))
  end)

  it("marks arrays and empty objects, and leaves other objects unmarked", function()
    local v = decode('{"a":[1],"b":{},"c":{"d":1}}')
    assert.equal("[1]", encode(v.a))
    assert.equal("{}", encode(v.b))
    assert.is_nil(getmetatable(v.c))
    assert.equal(getmetatable(truto.array()), getmetatable(v.a))
  end)

  it("keeps the last value of a repeated key, as JSON.parse and lua-cjson do", function()
    assert.same({ a = 2 }, decode('{"a":1,"a":2}'))
    assert.same({ o = { k = "y" } }, decode('{"o":{"k":"x","k":"y"}}'))
    -- the last value wins whatever the values are: a null, a container, after other keys
    local v = decode('{"k":[1],"x":0,"k":{"n":1},"k":null,"o":{"a":{},"b":1,"a":[]},"o":{"a":"last"}}')
    assert.equal(truto.null, v.k)
    assert.same({ a = "last" }, v.o)
    assert.equal(0, v.x)
    assert.equal('{"k":null,"o":{"a":"last"},"x":0}', encode(v))
  end)

  it("reads arrays and objects of 200,000 members, nested too, under every Lua (LuaJIT's stack holds 8,000)", function()
    local n = 200000
    local items, pairs_ = {}, {}
    for i = 1, n do
      items[i] = tostring(i)
      pairs_[i] = ('"k%d":%d'):format(i, i)
    end
    local array = "[" .. table.concat(items, ",") .. "]"
    local object = "{" .. table.concat(pairs_, ",") .. "}"
    local value = assert(truto.decode_json('{"a":' .. array .. ',"o":' .. object .. ',"z":[' .. array .. "]}"))
    assert.equal(n, #value.a)
    assert.equal(n, value.a[n])
    assert.equal(12345, value.a[12345])
    assert.equal(n, value.o["k" .. n])
    assert.equal(777, value.o.k777)
    assert.equal(n, #value.z[1])
    assert.equal(getmetatable(truto.decode_json("[]")), getmetatable(value.a))
    local count = 0
    for _ in pairs(value.o) do count = count + 1 end
    assert.equal(n, count)
  end)

  it("reads large arrays and objects inside each other (what waits on the Lua stack is bounded)", function()
    -- Four levels of 5,000 members, arrays and objects in turn, each holding the next
    -- as the member after about 4,000 stack slots of its own (an array's 4,000th item,
    -- an object's 2,000th pair): under LuaJIT (8,000 slots) the inner ones find the
    -- stack full and fill their tables as they go.
    local function level(depth)
      local members, object = {}, depth % 2 == 0
      for i = 1, 5000 do members[i] = object and ('"k%d":%d'):format(i, i) or tostring(i) end
      local inner = depth > 1 and level(depth - 1) or "[]"
      if object then
        table.insert(members, 2000, '"next":' .. inner)
        return "{" .. table.concat(members, ",") .. "}"
      end
      table.insert(members, 4000, inner)
      return "[" .. table.concat(members, ",") .. "]"
    end
    local value = assert(truto.decode_json(level(4)))
    for depth = 4, 1, -1 do
      if depth % 2 == 0 then
        local count = 0
        for _ in pairs(value) do count = count + 1 end
        assert.same({ 5001, 1, 2500, 5000 }, { count, value.k1, value.k2500, value.k5000 })
        value = value.next
      else
        assert.same({ 5001, 1, 3999, 4000, 5000 }, { #value, value[1], value[3999], value[4001], value[5001] })
        assert.equal(getmetatable(truto.decode_json("[]")), getmetatable(value))
        value = value[4000]
      end
    end
    assert.same({}, value)
  end)

  it("reads objects that find the stack full at their first pair (small objects nested deep)", function()
    -- Levels of a few pairs each, the next level as the last pair: under
    -- LuaJIT (8,000 slots) the deep ones find too little room to wait from
    -- their very first pair and make their table before any pair is read.
    for _, shape in ipairs { { 500, 10 }, { 100, 100 }, { 60, 200 } } do
      local depth, size = shape[1], shape[2]
      local members = {}
      for i = 1, size do members[i] = ('"k%d":%d'):format(i, i) end
      local open = "{" .. table.concat(members, ",") .. ',"next":'
      local value = assert(truto.decode_json(open:rep(depth) .. "{}" .. ("}"):rep(depth)))
      for level = 1, depth do
        local count = 0
        for _ in pairs(value) do count = count + 1 end
        assert.same({ size + 1, 1, size }, { count, value.k1, value["k" .. size] }, "level " .. level)
        value = value.next
      end
      assert.equal(getmetatable(truto.decode_json("{}")), getmetatable(value))
    end
  end)

  it("keeps the last value of a key repeated far apart in a large object", function()
    -- Repeats while the pairs wait on the stack, and after the table is made
    -- (past 2,048 pairs): each time the last one wins.
    local function object_of(size)
      local members = { '"dup":"first"', '"early":1' }
      for i = 1, size do
        members[#members + 1] = ('"k%d":%d'):format(i, i)
        if i == 10 then members[#members + 1] = '"early":2' end
        if i == 3000 then members[#members + 1] = '"dup":"middle"' end
      end
      members[#members + 1] = '"dup":"last"'
      return truto.decode_json("{" .. table.concat(members, ",") .. "}")
    end
    local value = object_of(100)
    assert.same({ "last", 2, 100 }, { value.dup, value.early, value.k100 })
    value = object_of(5000)
    assert.same({ "last", 2, 3000, 5000 }, { value.dup, value.early, value.k3000, value.k5000 })
    local count = 0
    for _ in pairs(value) do count = count + 1 end
    assert.equal(5002, count)
  end)

  it("reads scalars at the top level, with whitespace around", function()
    assert.equal(true, decode(" true "))
    assert.equal(false, decode("false"))
    assert.equal(truto.null, decode("\n null\t"))
    assert.equal("s", decode('"s"'))
    assert.equal(42, decode("42"))
  end)

  -- Strings are scanned eight bytes at a time: what ends or interrupts one
  -- is found at every place in a word, and past the first word.
  it("reads and checks a byte at every offset of the words a string is scanned in", function()
    for offset = 0, 19 do
      local before = ("a"):rep(offset)
      for _, after in ipairs { "", "b", ("b"):rep(9) } do
        assert.equal(before .. after, decode('"' .. before .. after .. '"'))
        assert.equal(before .. '"' .. after, decode('"' .. before .. '\\"' .. after .. '"'))
        assert.equal(before .. "\195\169" .. after, decode('"' .. before .. "\195\169" .. after .. '"'))
        assert.same({ [before .. "\226\130\172" .. after] = 1 },
          decode('{"' .. before .. "\226\130\172" .. after .. '":1}'))
      end
      local function fails(text, message, at)
        local v, err = decode(text)
        assert.is_nil(v)
        assert.equal(("%s at byte %d"):format(message, at), err)
      end
      fails('"' .. before .. "\255" .. ("b"):rep(9) .. '"', "invalid UTF-8", offset + 2)
      fails('{"' .. before .. "\237\160\128" .. '":1}', "invalid UTF-8", offset + 3)
      fails('"' .. before .. "\31" .. ("b"):rep(9) .. '"', "control character in string", offset + 2)
      fails('"' .. before .. "\195", "unterminated string", offset + 3)
      fails('"' .. before, "unterminated string", offset + 2)
    end
  end)

  describe("returns nil and a message for bad input", function()
    local cases = {
      { "", "unexpected end of input at byte 1" },
      { "{", "expected a string key at byte 2" },
      { '{"a":1,}', "expected a string key at byte 8" },
      { "[1,]", "unexpected character at byte 4" },
      { "[1 2]", "expected ',' or ']' at byte 4" },
      { '{"a" 1}', "expected ':' at byte 6" },
      { "01", "trailing characters at byte 2" },
      { "-", "bad number at byte 2" },
      { "1.", "bad number at byte 3" },
      { "1e", "bad number at byte 3" },
      { "nul", "unexpected character at byte 1" },
      { '"abc', "unterminated string at byte 5" },
      { '"a\nb"', "control character in string at byte 3" },
      { '"\\x"', "bad escape at byte 3" },
      { '"\\u12"', "truncated \\u escape at byte 4" },
      { '"\\uZZZZ"', "bad \\u escape at byte 4" },
      { '"\255"', "invalid UTF-8 at byte 2" },
      { "[1] x", "trailing characters at byte 5" },
      { ("["):rep(600), "nesting too deep at byte 513" },
      { "'a'", "unexpected character at byte 1" },
    }
    for _, c in ipairs(cases) do
      it(("for %q"):format(c[1]:sub(1, 20)), function()
        local v, err = decode(c[1])
        assert.is_nil(v)
        assert.equal(c[2], err)
      end)
    end

    it("and raises for a non-string argument", function()
      assert.has_error(function() decode({}) end)
    end)
  end)
end)

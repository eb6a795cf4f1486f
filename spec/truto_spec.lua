-- lua/truto/init.lua: the public module's constants and markers.
local truto = require "truto"
local cjson = require "cjson"

describe("truto", function()
  it("has a semantic version", function()
    assert.matches("^%d+%.%d+%.%d+$", truto.VERSION)
  end)

  it("uses lua-cjson's null as truto.null, so decoded nulls compare equal", function()
    assert.equal(cjson.null, truto.null)
    assert.equal(truto.null, cjson.decode('{"a":null}').a)
  end)

  describe("array and object", function()
    it("return a new marked table when called without one", function()
      local a, o = truto.array(), truto.object()
      assert.equal("[]", truto.encode_json(a))
      assert.equal("{}", truto.encode_json(o))
      assert.are_not.equal(a, truto.array())
    end)

    it("mark and return the given table", function()
      local t = { 1, 2 }
      assert.equal(t, truto.array(t))
      assert.equal("[1,2]", truto.encode_json(t))
      local o = {}
      assert.equal(o, truto.object(o))
    end)

    it("refuse non-tables and tables that already have another metatable", function()
      assert.has_error(function() truto.array("x") end,
        "bad argument #1 to 'truto.array' (table expected, got string)")
      assert.has_error(function() truto.object(setmetatable({}, {})) end,
        "bad argument #1 to 'truto.object' (table already has a metatable)")
      assert.has_error(function() truto.array(truto.object()) end,
        "bad argument #1 to 'truto.array' (table already has a metatable)")
    end)

    it("can be applied twice", function()
      local t = truto.array()
      assert.equal(t, truto.array(t))
    end)
  end)
end)

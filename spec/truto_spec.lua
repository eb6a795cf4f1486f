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

  describe("connect_url", function()
    it("builds Truto's link URL from a link token, the token percent-encoded", function()
      assert.equal("https://app.truto.one/connect-account?link_token=e73c7b9b-2e4d",
                   truto.connect_url("e73c7b9b-2e4d"))
      assert.equal("https://app.truto.one/connect-account?link_token=a%20b%26c%3Dd%2F%C3%A9",
                   truto.connect_url("a b&c=d/\195\169"))
      assert.equal("http://127.0.0.1:3000/x/connect-account?link_token=t",
                   truto.connect_url("t", "http://127.0.0.1:3000/x//"))
    end)

    it("raises on a token that is not a non-empty string, or a bad app_url", function()
      assert.has_error(function() truto.connect_url() end,
        "bad argument #1 to 'truto.connect_url' (link token must be a non-empty string, got nil)")
      assert.has_error(function() truto.connect_url("") end,
        "bad argument #1 to 'truto.connect_url' (link token must be a non-empty string, got an empty string)")
      for _, app_url in ipairs { "app.truto.one", "https://a.example/?x=1", "https://a.example/#f", "https://a b",
                                 "https://a.example/\r\nX: 1", "https://a.example/\"", "ftp://a.example", "https://" } do
        assert.has_error(function() truto.connect_url("t", app_url) end,
          "bad argument #2 to 'truto.connect_url' (app_url must be an http(s) URL without query or fragment)")
      end
    end)
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

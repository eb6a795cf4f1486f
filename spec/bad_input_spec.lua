-- What a careless or hostile caller gets from every public function: a
-- raised argument error or `nil, err` with a clear message, and never a
-- crash, a hang or a request on the wire.  One row per input.
local truto = require "truto"

-- A transport that records anything that reaches it.
local sent = {}
local transport = {
  perform = function(_, req)
    sent[#sent + 1] = req
    return 200, { ["content-type"] = "application/json" }, '{"ok":true}'
  end,
}
local client = truto.new { token = "tok_secret", base_url = "http://127.0.0.1:9", transport = transport,
                           sleep = function() end }
local u, p, c = client.unified_api, client.proxy_api, client.custom_api
local Q = { integrated_account_id = "acc" }

local cycle = {} cycle.self = cycle
local function deep(n)
  local t = {}
  local cur = t
  for _ = 1, n do cur.x = {} cur = cur.x end
  return t
end
local huge = ("x"):rep(8 * 1024 * 1024)

-- { what, function, expected }: expected is
--   "raise: <text>" - an error whose message contains <text>;
--   "ok"            - a normal result (and then the request may be sent).
local ROWS = {
  -- truto.new
  { "new without a table", function() return truto.new(42) end, "raise: truto.new must be a table, got number" },
  { "new with an unknown option", function() return truto.new { token = "t", retries = 3 } end,
    "raise: truto.new: unknown option 'retries'" },
  { "new with a negative timeout", function() return truto.new { token = "t", timeout = -1 } end,
    "raise: option 'timeout' must be a number of seconds > 0" },
  { "new with a NaN timeout", function() return truto.new { token = "t", connect_timeout = 0 / 0 } end,
    "raise: option 'connect_timeout' must be a number of seconds > 0" },
  { "new with an infinite timeout", function() return truto.new { token = "t", timeout = math.huge } end,
    "raise: option 'timeout' must be a number of seconds > 0" },
  { "new with a CRLF token", function() return truto.new { token = "a\r\nX: y" } end,
    "raise: the API token is empty or contains spaces or control characters" },
  { "new with a NUL in the token", function() return truto.new { token = "a\0b" } end,
    "raise: the API token is empty or contains spaces or control characters" },
  { "new with a base_url holding CRLF", function() return truto.new { token = "t", base_url = "http://h\r\n" } end,
    "raise: base_url must not contain spaces or control characters" },
  { "new with a base_url whose backslash hides user information",
    function() return truto.new { token = "t", base_url = "http://host\\@evil.com" } end,
    "raise: truto: base_url must not contain a backslash" },
  { "new with a base_url holding user information",
    function() return truto.new { token = "t", base_url = "https://user:pw@evil.com" } end,
    "raise: truto: base_url must not contain user information ('@' before the host)" },
  { "new with an unclosed IPv6 base_url", function() return truto.new { token = "t", base_url = "http://[::1" } end,
    "raise: truto: base_url has an IPv6 address without its closing ']'" },
  { "new with a base_url port of 0", function() return truto.new { token = "t", base_url = "http://h:0/x" } end,
    "raise: truto: base_url port must be a number from 1 to 65535" },
  { "new with a huge max_retries", function() return truto.new { token = "t", max_retries = 1e9 } end,
    "raise: option 'max_retries' must be an integer from 0 to 10" },

  -- ids and names
  { "an id with a slash", function() return u:get("crm", "opportunities", "a/b", Q) end, "ok" },
  { "an id with ? and #", function() return u:get("crm", "opportunities", "a?b#c", Q) end, "ok" },
  { "an id of ..", function() return u:get("crm", "opportunities", "..", Q) end,
    "raise: id must not be '.' or '..'" },
  { "an id with CR LF", function() return u:get("crm", "opportunities", "1\r\nHost: evil", Q) end,
    "raise: id contains CR, LF, NUL or another control character" },
  { "an id with NUL", function() return u:get("crm", "opportunities", "1\0", Q) end,
    "raise: id contains CR, LF, NUL or another control character" },
  { "an empty id", function() return u:update("crm", "opportunities", "", {}, Q) end, "raise: id must not be empty" },
  { "a nil id", function() return u:delete("crm", "opportunities", nil, Q) end,
    "raise: bad argument #3 to 'delete' (id must be a string, got nil)" },
  { "a table as model", function() return u:list({}, "x", Q) end,
    "raise: bad argument #1 to 'list' (model must be a string, got table)" },
  { "a resource with invalid UTF-8", function() return p:list("de\255als", Q) end,
    "raise: resource is not valid UTF-8" },
  { "a custom path with ..", function() return c:get("a/../b", Q) end, "raise: path segment must not be '.' or '..'" },
  { "a custom path that is empty", function() return c:get("", Q) end, "raise: path must name an endpoint" },

  -- bodies
  { "a string body", function() return u:update("crm", "opportunities", "1", '{"a":1}', Q) end,
    "raise: bad argument #4 to 'update' (body must be a table, got string)" },
  { "a nil body", function() return u:create("crm", "opportunities", nil, Q) end,
    "raise: bad argument #3 to 'create' (body must be a table, got nil)" },
  { "a cyclic body", function() return u:update("crm", "opportunities", "1", cycle, Q) end,
    "raise: body.self: cycle: this table contains itself" },
  { "a body nested 1000 deep", function() return u:create("crm", "opportunities", deep(1000), Q) end,
    "raise: nesting deeper than 100 levels" },
  { "a body with invalid UTF-8", function() return u:create("crm", "opportunities", { name = "\192" }, Q) end,
    "raise: body.name: invalid UTF-8 at byte 1" },
  { "a body with NaN", function() return u:create("crm", "opportunities", { amount = 0 / 0 }, Q) end,
    "raise: body.amount: NaN cannot be written as JSON" },
  { "a body with a function", function() return p:create("deals", { f = print }, Q) end,
    "raise: body.f: a function cannot be written as JSON" },
  { "a body with a sparse array", function() return c:post("x", { list = { 1, nil, 3 } }, Q) end,
    "raise: body.list: sparse array: item 2 is nil but a later index is set" },
  { "an 8 MB string in a body", function() return u:create("crm", "notes", { content = huge }, Q) end, "ok" },

  -- queries
  { "a string query", function() return u:list("crm", "x", "a=1") end,
    "raise: bad argument #3 to 'list' (query must be a table, got string)" },
  { "a cyclic query", function() return u:list("crm", "x", cycle) end,
    "raise: query.self: cycle: this table contains itself" },
  { "a query nested 1000 deep", function() return u:list("crm", "x", deep(1000)) end,
    "raise: nesting deeper than 100 levels" },
  { "a query with invalid UTF-8", function() return u:list("crm", "x", { q = "\237\160\128" }) end,
    "raise: query.q: invalid UTF-8 at byte 1" },
  { "a query with userdata", function() return u:list("crm", "x", { f = io.stdout }) end,
    "raise: query.f: a userdata cannot be a query value" },
  { "an 8 MB query value", function() return u:list("crm", "x", { q = huge }) end, "ok" },

  -- per-call options
  { "opts that are not a table", function() return u:get("crm", "x", "1", Q, "fast") end,
    "raise: opts must be a table, got string" },
  { "an unknown call option", function() return u:get("crm", "x", "1", Q, { retry = 1 }) end,
    "raise: opts: unknown option 'retry'" },
  { "a negative call timeout", function() return u:get("crm", "x", "1", Q, { timeout = -5 }) end,
    "raise: opts: option 'timeout' must be a number of seconds > 0" },
  { "a NaN call timeout", function() return u:get("crm", "x", "1", Q, { timeout = 0 / 0 }) end,
    "raise: opts: option 'timeout' must be a number of seconds > 0" },
  { "a header with CR LF", function() return u:get("crm", "x", "1", Q, { headers = { X = "1\r\nY: 2" } }) end,
    "raise: header X: value contains CR, LF, NUL or another control character" },
  { "a header name with a colon", function() return u:get("crm", "x", "1", Q, { headers = { ["X:Y"] = "1" } }) end,
    "raise: header name X:Y is not a valid HTTP token" },
  { "a header value that is a table", function() return u:get("crm", "x", "1", Q, { headers = { X = {} } }) end,
    "raise: header X: value must be a string, a number or false" },
  { "a Content-Length header", function()
      return u:update("crm", "opportunities", "1", { name = "x" }, Q, { headers = { ["Content-Length"] = "0" } })
    end, "raise: truto: headers: Content-Length is set by the library" },
  { "a transfer-encoding header", function()
      return p:create("deals", { a = 1 }, Q, { headers = { ["transfer-encoding"] = "chunked" } })
    end, "raise: truto: headers: Transfer-Encoding is set by the library" },
  { "a Host header", function() return c:get("x", Q, { headers = { host = "evil.com" } }) end,
    "raise: truto: headers: Host is set by the library" },
  { "an idempotency key with LF", function() return u:update("crm", "x", "1", {}, Q, { idempotency_key = "k\n" }) end,
    "raise: header Idempotency-Key: value contains CR, LF, NUL or another control character" },
  { "an empty idempotency key", function() return u:update("crm", "x", "1", {}, Q, { idempotency_key = "" }) end,
    "raise: opts: option 'idempotency_key' must be a non-empty string of at most 255 bytes" },
  { "a sink that is not a function", function() return u:list("crm", "x", Q, { sink = io.stdout }) end,
    "raise: opts: option 'sink' must be a function" },

  -- the encoders and the reader
  { "encode_query(nil)", function() return truto.encode_query(nil) end, "raise: table expected, got nil" },
  { "encode_json(nil)", function() return truto.encode_json(nil) end, "raise: truto: body: a nil cannot be written as JSON" },
  { "encode_json with a coroutine", function() return truto.encode_json { coroutine.create(function() end) } end,
    "raise: body[1]: a thread cannot be written as JSON" },
  { "decode_json of a table", function() return truto.decode_json({}) end, "raise: string expected, got table" },
  { "truto.array of a string", function() return truto.array("x") end,
    "raise: bad argument #1 to 'truto.array' (table expected, got string)" },
  { "verify_webhook without a secret", function() return truto.verify_webhook(nil, "b", "h") end,
    "raise: bad argument #1" },
}

describe("bad input", function()
  for _, row in ipairs(ROWS) do
    local what, fn, expected = row[1], row[2], row[3]
    it(what .. " -> " .. expected, function()
      local before = #sent
      local ok, result = pcall(fn)
      if expected == "ok" then
        assert.is_true(ok, tostring(result))
        assert.truthy(result)
      else
        assert.is_false(ok, "expected an error")
        local message = tostring(result)
        assert.truthy(message:find(expected:sub(#"raise: " + 1), 1, true), message)
        assert.is_nil(message:find("tok_secret", 1, true))
        assert.equal(before, #sent, "a request reached the transport")
      end
    end)
  end

  it("reports a bad base_url or a framing header at the caller's line, with the exact message", function()
    local FRAMING = " is set by the library (it frames the request or manages the connection), so it cannot be given"
    local cases = {
      { debug.getinfo(1, "l").currentline, function() truto.new { token = "x", base_url = "http://host\\@evil.com" } end,
        "truto: base_url must not contain a backslash" },
      { debug.getinfo(1, "l").currentline, function() truto.new { token = "x", base_url = "http://[::1" } end,
        "truto: base_url has an IPv6 address without its closing ']'" },
      { debug.getinfo(1, "l").currentline, function() u:update("crm", "opportunities", "1", { name = "x" }, Q,
                                                                 { headers = { ["Content-Length"] = "0" } }) end,
        "truto: headers: Content-Length" .. FRAMING },
      { debug.getinfo(1, "l").currentline, function() truto.new { token = "t", headers = { Connection = "close" } } end,
        "truto: headers: Connection" .. FRAMING },
    }
    local before = #sent
    for _, case in ipairs(cases) do
      local ok, err = pcall(case[2])
      assert.is_false(ok)
      assert.equal("spec/bad_input_spec.lua:" .. case[1] .. ": " .. case[3], err)
    end
    assert.equal(before, #sent, "a request reached the transport")
  end)

  it("still accepts the base URLs people use", function()
    for _, base in ipairs { "http://127.0.0.1:8080/prefix", "https://[::1]:443", "https://api.truto.one",
                            "http://localhost:9090/", "https://truto.internal.example/api/v1" } do
      assert.equal(base, truto.new { token = "x", base_url = base, transport = transport }.base_url)
    end
  end)

  it("decode_json returns nil, err for hostile text", function()
    for _, text in ipairs { ("["):rep(100000), ('{"a":'):rep(1000), "\0", "[1," .. ("9"):rep(500) .. "]", huge } do
      local v, err = truto.decode_json(text)
      assert.is_nil(v)
      assert.is_string(err)
    end
  end)

  it("verify_webhook returns false, reason for a hostile header", function()
    for _, header in ipairs { ("v=,"):rep(10000), "format=sha256,v=" .. ("z"):rep(64), huge, "\0\r\n" } do
      local ok, reason = truto.verify_webhook("s", "b", header)
      assert.is_false(ok)
      assert.is_string(reason)
    end
  end)
end)

-- lua/truto/errors.lua: error values, Retry-After and rate-limit headers.
local errors = require "truto.errors"
local truto = require "truto"
local scrubbed = require "spec.support.scrubbed"

describe("errors", function()
  it("formats an HTTP error with method, path, status, message and attempts", function()
    local err = errors.new { kind = "http", status = 429, message = "Slow down", method = "GET", path = "/x",
                             attempts = 3 }
    assert.equal("truto: GET /x: 429 Too Many Requests: Slow down (after 3 attempts)", tostring(err))
  end)

  it("formats a transport error with its kind", function()
    assert.equal("truto: PATCH /y: timeout: Operation timed out",
      tostring(errors.new { kind = "timeout", message = "Operation timed out", method = "PATCH", path = "/y" }))
    assert.equal("truto: connect: (no message)", tostring(errors.new { kind = "connect" }))
  end)

  it("scrubs the token from the message and from every string of the body", function()
    local secret = "tok-abc.123"
    local err = errors.new({ kind = "http", status = 401, message = "bad token tok-abc.123, tok-abc.123",
                             body = { message = "tok-abc.123", raw_response = { detail = { "x tok-abc.123 y" } } } },
                           secret)
    assert.equal("bad token [REDACTED], [REDACTED]", err.message)
    assert.same({ message = "[REDACTED]", raw_response = { detail = { "x [REDACTED] y" } } }, err.body)
    assert.is_nil(tostring(err):find(secret, 1, true))
  end)

  describe("scrubbing the token", function()
    it("scrubs every secret of a list, also from fields set later", function()
      local err = errors.new({ kind = "rpc", message = "a=tok_AAAA_1111 b=mcp_BBBB_2222",
                               body = { echo = { "mcp_BBBB_2222" }, ["tok_AAAA_1111"] = 1 } },
                             { "tok_AAAA_1111", "mcp_BBBB_2222" })
      assert.equal("a=[REDACTED] b=[REDACTED]", err.message)
      assert.same({ echo = { "[REDACTED]" }, ["[REDACTED]"] = 1 }, err.body)
      err.message = "late mcp_BBBB_2222 tok_AAAA_1111"
      assert.equal("truto: rpc: late [REDACTED] [REDACTED]", tostring(err))
    end)

    local SECRET = "tok-secret-123"

    local assert_clean = scrubbed.assert_clean

    it("scrubs header values and names that echo the token", function()
      local err = errors.from_response(401, {
        ["www-authenticate"] = 'Bearer realm="x", error="invalid_token" ' .. SECRET,
        ["x-echo-" .. SECRET] = "1",
        ["x-token"] = SECRET,
      }, { message = "no" }, SECRET)
      assert.same({
        ["www-authenticate"] = 'Bearer realm="x", error="invalid_token" [REDACTED]',
        ["x-echo-[REDACTED]"] = "1",
        ["x-token"] = "[REDACTED]",
      }, err.headers)
      assert_clean(err, SECRET)
    end)

    it("renames body keys that hold the token, keeping their values", function()
      local body = { [SECRET] = "v", nested = { ["a " .. SECRET .. " b"] = { 1, SECRET } } }
      local err = errors.new({ kind = "http", status = 400, body = body }, SECRET)
      assert.same({ ["[REDACTED]"] = "v", nested = { ["a [REDACTED] b"] = { 1, "[REDACTED]" } } }, err.body)
      assert_clean(err, SECRET)
    end)

    it("scrubs strings at any depth and every other string field", function()
      local body = {}
      local cur = body
      for _ = 1, 49 do cur.x = {} cur = cur.x end
      cur.x = "deep " .. SECRET           -- the string is at depth 50
      local err = errors.new({ kind = "http", status = 404, body = body, message = "m",
                               method = "GET", path = "/custom/" .. SECRET, request_id = SECRET }, SECRET)
      assert.equal("deep [REDACTED]", cur.x)
      assert.equal("/custom/[REDACTED]", err.path)
      assert.equal("[REDACTED]", err.request_id)
      assert.equal("truto: GET /custom/[REDACTED]: 404 Not Found: m", tostring(err))
      assert_clean(err, SECRET)
    end)

    it("walks a cyclic body once, keeping it cyclic", function()
      local body = { message = SECRET }
      body.self = body
      body.list = { body, { body } }
      body["by " .. SECRET] = body
      local err = errors.new({ kind = "http", status = 500, body = body }, SECRET)
      assert.equal(body, err.body.self)
      assert.equal(body, err.body.list[2][1])
      assert.equal(body, err.body["by [REDACTED]"])
      assert.equal("[REDACTED]", body.message)
      assert_clean(err, SECRET)
    end)

    it("keeps truto.null and the array and object marks of a decoded body", function()
      local body = truto.decode_json('{"a":["' .. SECRET .. '"],"o":{},"e":[],"n":null}')
      local array_mt, object_mt = getmetatable(body.a), getmetatable(body.o)
      assert.is_table(array_mt)
      local err = errors.new({ kind = "http", status = 400, body = body }, SECRET)
      assert.equal(array_mt, getmetatable(err.body.a))
      assert.equal(array_mt, getmetatable(err.body.e))
      assert.equal(object_mt, getmetatable(err.body.o))
      assert.equal(truto.null, err.body.n)
      assert.equal("[REDACTED]", err.body.a[1])
      assert.equal('{"a":["[REDACTED]"],"e":[],"n":null,"o":{}}', truto.encode_json(err.body))
    end)

    it("scrubs a short token only where it stands alone", function()
      local err = errors.new({ kind = "http", status = 401, message = "truto: timed out; Bearer t",
                               body = { error = "t", detail = "token t rejected", word = "t.t t1 at" },
                               headers = { ["www-authenticate"] = "Bearer t", t = "x" } }, "t")
      assert.equal("truto: timed out; Bearer [REDACTED]", err.message)
      assert.same({ error = "[REDACTED]", detail = "token [REDACTED] rejected", word = "t.t t1 at" }, err.body)
      assert.same({ ["www-authenticate"] = "Bearer [REDACTED]", ["[REDACTED]"] = "x" }, err.headers)
      assert.equal("truto: 401 Unauthorized: truto: timed out; Bearer [REDACTED]", tostring(err))

      err = errors.new({ kind = "http", status = 400, message = "abcdef abc xabc abc-1 (abc) abc",
                         method = "GET", path = "/abc/x" }, "abc")
      assert.equal("abcdef [REDACTED] xabc abc-1 ([REDACTED]) [REDACTED]", err.message)
      assert.equal("/abc/x", err.path)                      -- '/' may be part of a token
      assert.equal("truto: GET /abc/x: 400 Bad Request: abcdef [REDACTED] xabc abc-1 ([REDACTED]) [REDACTED]",
        tostring(err))
    end)

    it("matches a token with pattern characters literally", function()
      local secret = "x%d.%s-y+z?(1)"
      local err = errors.new({ kind = "http", status = 401, message = "bad " .. secret .. " and x1d.as-yyz?(1)",
                               body = { [secret] = secret .. secret } }, secret)
      assert.equal("bad [REDACTED] and x1d.as-yyz?(1)", err.message)
      assert.same({ ["[REDACTED]"] = "[REDACTED][REDACTED]" }, err.body)
      assert_clean(err, secret)

      err = errors.new({ kind = "connect", message = "a %.- b %.-c" }, "%.-")
      assert.equal("a [REDACTED] b %.-c", err.message)
    end)

    it("uses another marker when the token could reappear in [REDACTED]", function()
      for secret, message in pairs {
        ["REDACTED"] = "[HIDDEN]xxxxxx",
        ["D]xxxxxx"] = "<REDACTED>xxxxxx",
        ["[a]<b>(c)"] = "{REDACTED}xxxxxx",
      } do
        local err = errors.new({ kind = "http", status = 401, message = secret .. "xxxxxx" }, secret)
        assert.equal(message, err.message)
        assert_clean(err, secret)
      end
    end)

    it("cuts a long message to 1024 bytes at a character boundary, keeping the body whole", function()
      local long = ("a"):rep(1020) .. "é" .. ("b"):rep(5000)     -- é is bytes 1021 and 1022
      local err = errors.new { kind = "http", status = 400, message = long }
      assert.equal(("a"):rep(1020) .. "...", err.message)

      long = ("a"):rep(1019) .. "€" .. ("b"):rep(10)               -- € is bytes 1020 to 1022
      assert.equal(("a"):rep(1019) .. "...", errors.new { kind = "http", message = long }.message)
      long = ("a"):rep(1018) .. "€" .. ("b"):rep(10)               -- ends at byte 1021: kept
      assert.equal(("a"):rep(1018) .. "€...", errors.new { kind = "http", message = long }.message)
      assert.equal(("c"):rep(1024), errors.new { kind = "http", message = ("c"):rep(1024) }.message)

      local huge = ("x"):rep(5 * 1024 * 1024 - 14) .. SECRET
      err = errors.from_response(400, {}, truto.decode_json('{"message":"' .. SECRET .. ' ' .. huge .. '"}'), SECRET)
      assert.equal(1024, #err.message)
      assert.equal("[REDACTED] " .. ("x"):rep(1010) .. "...", err.message)
      assert.equal("[REDACTED] " .. huge:sub(1, -#SECRET - 1) .. "[REDACTED]", err.body.message)
      assert.equal("truto: 400 Bad Request: " .. err.message, tostring(err))
      assert_clean(err, SECRET)
    end)

    it("scrubs fields set after the error was made from tostring", function()
      local err = errors.new({ kind = "timeout", message = "slow" }, SECRET)
      err.method, err.path = "GET", "/x/" .. SECRET
      assert.equal("truto: GET /x/[REDACTED]: timeout: slow", tostring(err))
    end)
  end)

  describe("from_response", function()
    it("takes Truto's message, or raw_response when the message is empty", function()
      local err = errors.from_response(404, {}, { statusCode = 404, error = "Not Found", message = "No such deal" })
      assert.equal("No such deal", err.message)
      err = errors.from_response(400, {}, { message = "", raw_response = "provider says no" })
      assert.equal("provider says no", err.message)
      err = errors.from_response(400, {}, { message = "", raw_response = { message = "nested" } })
      assert.equal("nested", err.message)
      err = errors.from_response(502, {}, nil)
      assert.equal("Bad Gateway", err.message)
      err = errors.from_response(599, {}, "plain text")
      assert.equal("plain text", err.message)
      assert.equal("truto: 599: plain text", tostring(err))
    end)

    it("reads Retry-After and the ratelimit headers", function()
      local err = errors.from_response(429, { ["retry-after"] = "10", ["ratelimit-limit"] = "110;w=10",
                                              ["ratelimit-remaining"] = "0", ["ratelimit-reset"] = "7" }, nil)
      assert.equal(10, err.retry_after)
      assert.same({ limit = 110, remaining = 0, reset = 7, window = 10 }, err.rate_limit)
    end)
  end)

  describe("parse_retry_after", function()
    it("reads delta-seconds and HTTP dates", function()
      assert.equal(120, errors.parse_retry_after("120"))
      assert.equal(0, errors.parse_retry_after(" 0 "))
      local now = 1445412480   -- Wed, 21 Oct 2015 07:28:00 GMT
      assert.equal(30, errors.parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now))
      assert.equal(0, errors.parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now))
    end)

    -- 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
    local NOW = 784111777

    it("reads the three forms RFC 9110 has recipients accept", function()
      assert.equal(30, errors.parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", NOW))
      assert.equal(30, errors.parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", NOW))
      assert.equal(30, errors.parse_retry_after("Sun Nov  6 08:50:07 1994", NOW))
      assert.equal(30, errors.parse_retry_after("Sun Nov 6 08:50:07 1994", NOW))
      assert.equal(30, errors.parse_retry_after("Sun Nov 06 08:50:07 1994", NOW))
      assert.equal(86400 * 3 + 3600, errors.parse_retry_after("Wednesday, 09-Nov-94 09:49:37 GMT", NOW))
      assert.equal(30, errors.parse_retry_after("  Sun, 06 Nov 1994 08:50:07 GMT\t", NOW))
      -- leap days, and a leap second as the next minute's first
      assert.equal(825552000 - NOW, errors.parse_retry_after("Thu, 29 Feb 1996 00:00:00 GMT", NOW))
      assert.equal(951782400 - NOW, errors.parse_retry_after("Tue Feb 29 00:00:00 2000", NOW))
      assert.equal(1483228800 - NOW, errors.parse_retry_after("Sat, 31 Dec 2016 23:59:60 GMT", NOW))
    end)

    it("reads RFC 850's two-digit year as within 50 years of now", function()
      -- 2040 and 2044 are no more than 50 years after 1994; 2045 would be 51, so -45 is 1945.
      assert.equal(2208988800 - NOW, errors.parse_retry_after("Sunday, 01-Jan-40 00:00:00 GMT", NOW))
      assert.equal(2335219200 - NOW, errors.parse_retry_after("Friday, 01-Jan-44 00:00:00 GMT", NOW))
      assert.equal(0, errors.parse_retry_after("Monday, 01-Jan-45 00:00:00 GMT", NOW))
      assert.is_nil(errors.parse_retry_after("Sunday, 01-Jan-45 00:00:00 GMT", NOW))   -- 2045's weekday
      -- seen from 2026: -94 is 1994, -27 is 2027
      local now = 1780000000                                  -- Thu, 28 May 2026 20:26:40 GMT
      assert.equal(0, errors.parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now))
      assert.equal(1798761600 - now, errors.parse_retry_after("Friday, 01-Jan-27 00:00:00 GMT", now))
    end)

    it("ignores values it cannot read", function()
      for _, v in ipairs {
        "soon", "-5", "1.5", "", "Wed, 21 Oct 2015 07:28:30", "Wed, 99 Foo 2015 07:28:30 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMTx", "Sun, 06 Nov 1994 08:49:37 GMT+1", "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 GMT\0", "Sun, 6 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 94 08:49:37 GMT",
        "Sux, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nox 1994 08:49:37 GMT", "sun, 06 nov 1994 08:49:37 gmt",
        "Mon, 06 Nov 1994 08:49:37 GMT",                   -- 6 Nov 1994 was a Sunday
        "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 06 Nov 1994 08:60:37 GMT", "Sun, 06 Nov 1994 08:49:61 GMT",
        "Thu, 30 Feb 1995 08:49:37 GMT", "Thu, 29 Feb 1900 00:00:00 GMT", "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 31 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 8:49:37 GMT", "Sun,06 Nov 1994 08:49:37 GMT",
        "Sun, 06-Nov-94 08:49:37 GMT",                     -- RFC 850 with a short weekday
        "Sunday, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994 GMT", "Sun Nov  16 08:49:37 1994", "Sun Nov   6 08:49:37 1994",
        "Sun Nov  6 08:49:37 94", "Sun  Nov 6 08:49:37 1994", "Sun Nov",
      } do
        assert.is_nil(errors.parse_retry_after(v, NOW), v)
      end
      assert.is_nil(errors.parse_retry_after(nil))
    end)
  end)

  it("parse_rate_limit returns nil without the headers", function()
    assert.is_nil(errors.parse_rate_limit({}))
    assert.same({ remaining = 3 }, errors.parse_rate_limit { ["ratelimit-remaining"] = "3" })
  end)
end)

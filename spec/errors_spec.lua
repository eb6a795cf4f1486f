-- lua/truto/errors.lua: error values, Retry-After and rate-limit headers.
local errors = require "truto.errors"

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

    it("ignores values it cannot read", function()
      for _, v in ipairs { "soon", "-5", "1.5", "", "Wed, 21 Oct 2015 07:28:30", "Wed, 99 Foo 2015 07:28:30 GMT" } do
        assert.is_nil(errors.parse_retry_after(v), v)
      end
      assert.is_nil(errors.parse_retry_after(nil))
    end)
  end)

  it("parse_rate_limit returns nil without the headers", function()
    assert.is_nil(errors.parse_rate_limit({}))
    assert.same({ remaining = 3 }, errors.parse_rate_limit { ["ratelimit-remaining"] = "3" })
  end)
end)

-- lua/truto/retry.lua: what is retried, and after how long.
local retry = require "truto.retry"

local POLICY = { base = 0.5, cap = 8, max_retry_after = 60 }

describe("retry.retryable", function()
  it("retries 408, 425, 429, 500, 502 and 504, and no other status", function()
    local yes = {}
    for status = 100, 599 do
      if retry.retryable { kind = "http", status = status } then yes[#yes + 1] = status end
    end
    assert.same({ 408, 425, 429, 500, 502, 504 }, yes)
  end)

  it("retries connection failures and timeouts, not TLS, size or decode failures", function()
    for kind, expected in pairs { timeout = true, connect = true, network = true, protocol = true,
                                  tls = false, too_large = false, decode = false } do
      assert.equal(expected, retry.retryable { kind = kind }, kind)
    end
  end)
end)

describe("retry.repeatable", function()
  it("repeats GET, HEAD, OPTIONS, PUT and DELETE; POST and PATCH only with an idempotency key", function()
    for _, m in ipairs { "GET", "HEAD", "OPTIONS", "PUT", "DELETE" } do assert.is_true(retry.repeatable(m, false)) end
    for _, m in ipairs { "POST", "PATCH" } do
      assert.is_false(retry.repeatable(m, false))
      assert.is_true(retry.repeatable(m, true))
    end
  end)
end)

describe("retry.delay", function()
  it("honours Retry-After, capped by max_retry_after", function()
    assert.equal(10, retry.delay(POLICY, 1, { retry_after = 10 }))
    assert.equal(60, retry.delay(POLICY, 1, { retry_after = 3600 }))
    assert.equal(0, retry.delay(POLICY, 3, { retry_after = 0 }))
  end)

  it("uses ratelimit-reset for a 429 without Retry-After", function()
    assert.equal(7, retry.delay(POLICY, 1, { status = 429, rate_limit = { reset = 7 } }))
    assert.equal(60, retry.delay(POLICY, 1, { status = 429, rate_limit = { reset = 600 } }))
  end)

  it("otherwise backs off exponentially with full jitter under the cap", function()
    local function draw(r) return function() return r end end
    assert.equal(0.5, retry.delay(POLICY, 1, { status = 502 }, draw(1)))
    assert.equal(1.0, retry.delay(POLICY, 2, { status = 502 }, draw(1)))
    assert.equal(2.0, retry.delay(POLICY, 3, { kind = "network" }, draw(1)))
    assert.equal(8, retry.delay(POLICY, 10, { status = 500 }, draw(1)))      -- capped
    assert.equal(0, retry.delay(POLICY, 4, { status = 500 }, draw(0)))
    assert.equal(2, retry.delay(POLICY, 4, { status = 500 }, draw(0.5)))
  end)
end)

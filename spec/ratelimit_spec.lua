-- lua/truto/ratelimit.lua: sliding-window pacing per integrated account.
local ratelimit = require "truto.ratelimit"
local truto = require "truto"

local function fake_clock()
  local clock = { t = 100, slept = {} }
  function clock.now() return clock.t end
  function clock.sleep(s) clock.slept[#clock.slept + 1] = s clock.t = clock.t + s end
  return clock
end

describe("ratelimit", function()
  it("lets `requests` calls through per window, then waits for the oldest to expire", function()
    local clock = fake_clock()
    local pacer = ratelimit.new({ requests = 3, per = 10 }, clock.now, clock.sleep)
    assert.equal(0, pacer:acquire("a"))
    clock.t = 101
    assert.equal(0, pacer:acquire("a"))
    clock.t = 102
    assert.equal(0, pacer:acquire("a"))
    clock.t = 103
    assert.equal(7, pacer:acquire("a"))     -- the first call (t=100) leaves the window at 110
    assert.equal(110, clock.t)
    assert.equal(1, pacer:acquire("a"))     -- then the second (t=101) at 111
    assert.same({ 7, 1 }, clock.slept)
  end)

  it("keeps one window per key", function()
    local clock = fake_clock()
    local pacer = ratelimit.new({ requests = 1, per = 5 }, clock.now, clock.sleep)
    assert.equal(0, pacer:acquire("a"))
    assert.equal(0, pacer:acquire("b"))
    assert.equal(5, pacer:acquire("a"))
  end)

  it("paces a client's calls per integrated account, retries included", function()
    local clock = fake_clock()
    local transport = { now = clock.now, sent = {} }
    function transport.perform(_, req)
      transport.sent[#transport.sent + 1] = { clock.t, req.url:match("integrated_account_id=([^&]*)") }
      return 200, { ["content-type"] = "application/json" }, "{}"
    end
    local client = truto.new { token = "t", transport = transport, sleep = clock.sleep,
                               rate_limit = { requests = 2, per = 10 } }
    for _ = 1, 3 do client.unified_api:get("crm", "users", "1", { integrated_account_id = "x" }) end
    client.unified_api:get("crm", "users", "1", { integrated_account_id = "y" })
    assert.same({ { 100, "x" }, { 100, "x" }, { 110, "x" }, { 110, "y" } }, transport.sent)
  end)

  it("is checked by truto.new", function()
    assert.has_error(function() truto.new { token = "t", rate_limit = { requests = 0, per = 1 } } end,
      "truto.new: option 'rate_limit' must be { requests = <integer > 0>, per = <seconds > 0> }")
    assert.has_error(function() truto.new { token = "t", rate_limit = { requests = 5, per = 1, burst = 2 } } end,
      "truto.new: option 'rate_limit' must be { requests = <integer > 0>, per = <seconds > 0> }")
  end)
end)

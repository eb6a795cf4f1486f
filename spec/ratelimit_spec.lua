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
    local message = "truto.new: option 'rate_limit' must be { requests = <integer > 0>, per = <seconds > 0>, "
      .. "store =, on_store_error = \"local\" | \"fail\", expected_processes = <integer > 0>, "
      .. "store_timeout = <seconds > 0>, margin = <seconds >= 0> }"
    for _, bad in ipairs {
      { requests = 0, per = 1 }, { requests = 5, per = 1, burst = 2 }, { requests = 5, per = 1, store = 1 },
      { requests = 5, per = 1, on_store_error = "retry" }, { requests = 5, per = 1, expected_processes = 0 },
      { requests = 5, per = 1, store_timeout = 0 }, { requests = 5, per = 1, margin = -1 },
      { requests = 5.5, per = 1 },
    } do
      assert.has_error(function() truto.new { token = "t", rate_limit = bad } end, message)
    end
    assert.has_error(function() truto.new { token = "t", rate_limit = { requests = 5, per = 1, store = "mysql://x" } } end,
      "truto.new: rate_limit.store: a Redis URL starts with redis:// or rediss://")
    assert.has_error(function() truto.new { token = "t", rate_limit = { requests = 5, per = 1, store = "shared_dict:x" } } end,
      "truto.new: rate_limit.store: no lua_shared_dict x (shared_dict stores work inside nginx, "
        .. "with `lua_shared_dict x 1m;` in nginx.conf)")
    assert.has_error(function() truto.new { token = "t", rate_limit = { requests = 5, per = 1, store = {} } } end,
      "truto.new: rate_limit.store must have acquire and block methods")
  end)
end)

-- A store in this process, with the contract of truto.store (the step of the
-- built-in shared dict store, on the fake clock), that can be made to fail.
local stores = require "truto.store"

local function fake_store(clock)
  local store = { entries = {}, calls = 0 }
  local function ms(s) return math.floor(s * 1000 + 0.5) end
  function store:acquire(key, limit)
    self.calls = self.calls + 1
    if self.down then return nil, self.down end
    local e = self.entries[key] or { not_before = 0, slots = {} }
    self.entries[key] = e
    local at, wait, kept = stores.reserve(e.slots, ms(clock.t), e.not_before, limit.requests, ms(limit.per),
      ms(limit.max_wait), ms(limit.margin))
    e.slots = kept
    return at ~= nil, wait / 1000
  end
  function store:block(key, seconds)
    if self.down then return nil, self.down end
    local e = self.entries[key] or { not_before = 0, slots = {} }
    self.entries[key] = e
    e.not_before = math.max(e.not_before, ms(clock.t + seconds))
    return true
  end
  return store
end

describe("ratelimit with a store", function()
  it("reserves each process's slots in the store: the fleet keeps to one window", function()
    local clock, logs = fake_clock(), {}
    local store = fake_store(clock)
    local limit = { requests = 3, per = 10, store = store, margin = 0.5 }
    local a = ratelimit.new(limit, clock.now, clock.sleep, nil, function(m) logs[#logs + 1] = m end)
    local b = ratelimit.new(limit, clock.now, clock.sleep, nil, function(m) logs[#logs + 1] = m end)
    assert.equal(0, a:acquire("acct"))
    assert.equal(0, b:acquire("acct"))
    assert.equal(0, a:acquire("acct"))
    assert.equal(10.5, b:acquire("acct"))   -- the first slot (t=100) + per + margin
    assert.equal(110.5, clock.t)
    assert.equal(0, a:acquire("other"))     -- another account has its own window
    assert.same({}, logs)
  end)

  it("returns nil without reserving when the slot is past the deadline", function()
    local clock = fake_clock()
    local store = fake_store(clock)
    local pacer = ratelimit.new({ requests = 1, per = 10, store = store, margin = 0 }, clock.now, clock.sleep)
    assert.equal(0, pacer:acquire("acct"))
    assert.is_nil(pacer:acquire("acct", clock.t + 5))
    assert.same({ 100000 }, store.entries.acct.slots)   -- nothing was reserved
    assert.equal(10, pacer:acquire("acct", clock.t + 11))
  end)

  it("tells the store about a block, and every process waits for it", function()
    local clock, logs = fake_clock(), {}
    local store = fake_store(clock)
    local limit = { requests = 50, per = 10, store = store }
    local a = ratelimit.new(limit, clock.now, clock.sleep, nil, function(m) logs[#logs + 1] = m end)
    local b = ratelimit.new(limit, clock.now, clock.sleep)
    a:block("acct", 3)
    assert.same({ "integrated account acct: no calls for 3 s (the fleet was told)" }, logs)
    assert.equal(3, b:acquire("acct"))
    assert.equal(103, clock.t)
    assert.equal(0, b:acquire("other"))
  end)

  it("falls back to pacing alone at requests / expected_processes, says so once, and comes back", function()
    local clock, logs = fake_clock(), {}
    local store = fake_store(clock)
    local pacer = ratelimit.new({ requests = 10, per = 10, store = store, expected_processes = 4 }, clock.now,
      clock.sleep, nil, function(m) logs[#logs + 1] = m end)
    store.down = "timed out connecting to Redis at 127.0.0.1:6379"
    assert.equal(0, pacer:acquire("acct"))
    assert.equal(0, pacer:acquire("acct"))
    assert.equal(10, pacer:acquire("acct"))   -- alone: 10 / 4 = 2 per window
    assert.same({ "rate-limit store failed (timed out connecting to Redis at 127.0.0.1:6379): pacing this process "
      .. "alone at 2 requests per 10 s until it answers" }, logs)
    assert.equal(1, store.calls)   -- not tried again for 5 s
    -- Tried again 5 s after the failure (the clock is at 110): still down, said no more.
    assert.equal(0, pacer:acquire("acct"))
    assert.equal(2, store.calls)
    assert.equal(1, #logs)
    store.down = nil
    clock.t = clock.t + 5
    assert.equal(0, pacer:acquire("acct"))
    assert.equal(3, store.calls)
    assert.same("rate-limit store answers again: pacing with the fleet", logs[2])
    assert.equal(2, #logs)
  end)

  it("fails the call with kind store when on_store_error is fail, sends nothing, and says so once", function()
    local clock, logs = fake_clock(), {}
    local store = fake_store(clock)
    store.down = "Redis refused the credentials: WRONGPASS"
    local transport = { now = clock.now, sent = 0 }
    function transport.perform() transport.sent = transport.sent + 1 return 200, {}, "{}" end
    local client = truto.new { token = "t", transport = transport, sleep = clock.sleep,
      log = function(m) logs[#logs + 1] = m end,
      rate_limit = { requests = 5, per = 1, store = store, on_store_error = "fail" } }
    local result, err = client.unified_api:get("crm", "users", "1", { integrated_account_id = "x" })
    assert.is_nil(result)
    assert.same({ "store", "the rate-limit store failed: Redis refused the credentials: WRONGPASS", false, 1 },
      { err.kind, err.message, err.retryable, err.attempts })
    assert.equal(0, transport.sent)
    clock.t = clock.t + 5   -- tried again: still failing, said no more
    assert.is_nil((client.unified_api:get("crm", "users", "1", { integrated_account_id = "x" })))
    assert.same({ "rate-limit store failed (Redis refused the credentials: WRONGPASS): calls fail until it answers" },
      logs)
  end)

  it("says so when a store of one's own fails without a reason", function()
    local clock, logs = fake_clock(), {}
    local store = { acquire = function() return nil end, block = function() return true end }
    local pacer = ratelimit.new({ requests = 2, per = 1, store = store }, clock.now, clock.sleep, nil,
      function(m) logs[#logs + 1] = m end)
    assert.equal(0, pacer:acquire("acct"))
    assert.same({ "rate-limit store failed (it gave no reason): pacing this process alone at 2 requests per 1 s "
      .. "until it answers" }, logs)
  end)

  it("waits as long as the window says when a call has no deadline, however far its slot", function()
    local clock = fake_clock()
    local store = fake_store(clock)
    local pacer = ratelimit.new({ requests = 1, per = 4000, store = store, margin = 0 }, clock.now, clock.sleep)
    assert.equal(0, pacer:acquire("acct"))
    assert.equal(4000, pacer:acquire("acct"))
  end)

  it("blocks the account for a 429's Retry-After, for this client's next call and the fleet's", function()
    local clock = fake_clock()
    local store = fake_store(clock)
    local transport = { now = clock.now, sent = {} }
    function transport.perform(_, req)
      transport.sent[#transport.sent + 1] = { clock.t, req.url:match("integrated_account_id=([^&]*)") }
      if #transport.sent == 1 then
        return 429, { ["content-type"] = "application/json", ["retry-after"] = "3" }, '{"message":"slow down"}'
      end
      return 200, { ["content-type"] = "application/json" }, "{}"
    end
    local client = truto.new { token = "t", transport = transport, sleep = clock.sleep, log = function() end,
      rate_limit = { requests = 50, per = 10, store = store } }
    assert.truthy(client.unified_api:get("crm", "users", "1", { integrated_account_id = "x" }))
    assert.same({ { 100, "x" }, { 103, "x" } }, transport.sent)
    assert.equal(103000, store.entries.x.not_before)
    -- Another process sharing the store, during the block, waits for it.
    clock.t = 101
    local other = ratelimit.new({ requests = 50, per = 10, store = store }, clock.now, clock.sleep)
    assert.equal(2, other:acquire("x"))
  end)
end)

describe("truto.store's step", function()
  it("never puts more than `requests` slots in a window of per + margin, whatever the arrivals", function()
    math.randomseed(7)
    for _ = 1, 200 do
      local n, per, margin = math.random(1, 5), math.random(1, 50), math.random(0, 5)
      local slots, taken, now, not_before = {}, {}, 0, 0
      for _ = 1, 60 do
        now = now + math.random(0, 20)
        if math.random() < 0.1 then not_before = math.max(not_before, now + math.random(0, 30)) end
        local at, wait
        at, wait, slots = stores.reserve(slots, now, not_before, n, per, math.random(0, 200), margin)
        if at then
          assert.equal(at - now, wait)
          assert.is_true(at >= now and at >= not_before)
          taken[#taken + 1] = at
        end
      end
      for i = 1, #taken - n do
        assert.is_true(taken[i + n] - taken[i] >= per + margin, "n=" .. n .. " per=" .. per)
      end
    end
  end)
end)

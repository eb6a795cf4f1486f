-- The fault matrix: every fault the emulator can inject, through the real
-- client over real HTTP, for a GET, a PATCH without an Idempotency-Key and a
-- PATCH with one; then the retry policy's waits, limits and deadline; then a
-- bulk update of 500 opportunities under a seeded mix of faults.
local core = require "truto.core"
local emu = require "spec.support.emulator"

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }
local PREFIX = "/unified/crm/opportunities"
local ID = "10000005"
local WRITE_KEY = ACCOUNT .. "/crm/opportunities/" .. ID

-- Outcomes.  ok(attempts, writes, replays): the call succeeds after
-- attempts - 1 retries; no(kind, status, attempts, retryable, writes): it
-- returns nil, err with those fields.  writes/replays are the emulator's
-- counts for the PATCHed record (GET rows leave them out: always 0).
local function ok(attempts, writes, replays)
  return { ok = true, attempts = attempts, writes = writes or 0, replays = replays or 0 }
end
local function no(kind, status, attempts, retryable, writes)
  return { kind = kind, status = status, attempts = attempts, retryable = retryable, writes = writes or 0,
           replays = 0 }
end

-- Waits between attempts: a list of exact seconds, or JITTER (full jitter
-- under the client's base and cap, one per retry).
local JITTER = "jitter"
local BASE, CAP, MAX_RETRY_AFTER = 0.5, 0.75, 5

local function http_date(offset)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + offset)
end

-- Fault fields are those of a POST /_emulator/faults entry (method and
-- path_prefix are added); `count` is how many requests it hits; `timeout`
-- the per-call timeout (default 2 s); `settle` seconds to wait after the
-- calls for requests nginx still holds (a delay outlives the client's timeout).
local MATRIX = {
  -- fault                                           count  GET     PATCH (no key)                  PATCH + key   waits
  { "408",                    { status = 408 },                 2, ok(3), no("http", 408, 1, false, 0),      ok(3, 1, 0), JITTER },
  { "425",                    { status = 425 },                 2, ok(3), no("http", 425, 1, false, 0),      ok(3, 1, 0), JITTER },
  { "429 Retry-After: 1",     { status = 429, retry_after = "1" }, 2, ok(3), no("http", 429, 1, false, 0),   ok(3, 1, 0), { 1, 1 } },
  { "429 Retry-After: 3",     { status = 429, retry_after = "3" }, 2, ok(3), no("http", 429, 1, false, 0),   ok(3, 1, 0), { 3, 3 } },
  { "429 Retry-After: 120 (capped)", { status = 429, retry_after = "120" }, 2, ok(3), no("http", 429, 1, false, 0),
                                                                                                           ok(3, 1, 0), { 5, 5 } },
  { "429 Retry-After: date +1h (capped)", { status = 429, retry_after = http_date(3600) }, 2, ok(3),
                                                                no("http", 429, 1, false, 0),              ok(3, 1, 0), { 5, 5 } },
  { "429 Retry-After: past date", { status = 429, retry_after = http_date(-3600) }, 2, ok(3),
                                                                no("http", 429, 1, false, 0),              ok(3, 1, 0), { 0, 0 } },
  { "429 ratelimit-reset: 4", { status = 429, headers = { ["ratelimit-reset"] = "4" } }, 2, ok(3),
                                                                no("http", 429, 1, false, 0),              ok(3, 1, 0), { 4, 4 } },
  { "500",                    { status = 500 },                 2, ok(3), no("http", 500, 1, false, 0),      ok(3, 1, 0), JITTER },
  { "502",                    { status = 502 },                 2, ok(3), no("http", 502, 1, false, 0),      ok(3, 1, 0), JITTER },
  { "503 (account blocked)",  { status = 503, retry_after = "1" }, 1, no("http", 503, 1, false),
                                                                no("http", 503, 1, false, 0),  no("http", 503, 1, false, 0), {} },
  { "504",                    { status = 504 },                 2, ok(3), no("http", 504, 1, false, 0),      ok(3, 1, 0), JITTER },
  { "400",                    { status = 400 },                 1, no("http", 400, 1, false),
                                                                no("http", 400, 1, false, 0),  no("http", 400, 1, false, 0), {} },
  { "401",                    { status = 401 },                 1, no("http", 401, 1, false),
                                                                no("http", 401, 1, false, 0),  no("http", 401, 1, false, 0), {} },
  { "403",                    { status = 403 },                 1, no("http", 403, 1, false),
                                                                no("http", 403, 1, false, 0),  no("http", 403, 1, false, 0), {} },
  { "404",                    { status = 404 },                 1, no("http", 404, 1, false),
                                                                no("http", 404, 1, false, 0),  no("http", 404, 1, false, 0), {} },
  { "409",                    { status = 409 },                 1, no("http", 409, 1, false),
                                                                no("http", 409, 1, false, 0),  no("http", 409, 1, false, 0), {} },
  { "422",                    { status = 422 },                 1, no("http", 422, 1, false),
                                                                no("http", 422, 1, false, 0),  no("http", 422, 1, false, 0), {} },
  -- The delayed request is still handled once nginx wakes up: a PATCH
  -- without a key is applied although the client saw a timeout.
  { "delay 50 ms, timeout 2 s", { delay_ms = 50 },              2, ok(1), ok(1, 1, 0),                        ok(1, 1, 0), {} },
  { "delay 300 ms, timeout 0.1 s", { delay_ms = 300, timeout = 0.1, settle = 0.35 }, 2, ok(3),
                                                                no("timeout", nil, 1, false, 1),           ok(3, 1, 2), JITTER },
  -- Body faults strike after the request was handled: the write is applied.
  { "drop",                   { fault = "drop" },               2, ok(3), no("network", nil, 1, false, 1),   ok(3, 1, 2), JITTER },
  { "truncate",               { fault = "truncate" },           2, ok(3), no("protocol", nil, 1, false, 1),  ok(3, 1, 2), JITTER },
  { "reset-mid-body",         { fault = "reset-mid-body" },     2, ok(3), no("protocol", nil, 1, false, 1),  ok(3, 1, 2), JITTER },
  { "malformed",              { fault = "malformed" },          1, no("decode", 200, 1, false),
                                                                no("decode", 200, 1, false, 1), no("decode", 200, 1, false, 1), {} },
  { "slow-body 4 x 50 ms, timeout 2 s", { fault = "slow-body", body_delay_ms = 50 }, 2, ok(1), ok(1, 1, 0),
                                                                                                           ok(1, 1, 0), {} },
  { "slow-body 4 x 150 ms, timeout 0.25 s", { fault = "slow-body", body_delay_ms = 150, timeout = 0.25 },
                                                                2, ok(3), no("timeout", nil, 1, false, 1), ok(3, 1, 2), JITTER },
}

local CALL_FIELDS = { timeout = true, settle = true }

local function queue(method, fault, count)
  local entry = { method = method, path_prefix = PREFIX, count = count }
  for k, v in pairs(fault) do
    if not CALL_FIELDS[k] then entry[k] = v end
  end
  emu.faults { entry }
end

local function check_waits(expected, sleeps, retries, label)
  if expected == JITTER then
    assert.equal(retries, #sleeps, label .. ": waits")
    for n, s in ipairs(sleeps) do
      local ceiling = math.min(CAP, BASE * 2 ^ (n - 1))
      assert.is_true(s >= 0 and s <= ceiling, ("%s: wait %d = %s, not in [0, %s]"):format(label, n, s, ceiling))
    end
  else
    -- Retries that happened are the ones the table lists.
    local want = {}
    for i = 1, retries do want[i] = expected[i] end
    assert.same(want, sleeps, label .. ": waits")
  end
end

local function check(expect, result, second, label)
  if expect.ok then
    assert.is_table(result, label .. ": " .. tostring(second))
    assert.equal(ID, result.id, label)
    assert.equal(expect.attempts, second.attempts, label .. ": response.attempts")
  else
    assert.is_nil(result, label)
    assert.equal(expect.kind, second.kind, label .. ": " .. tostring(second))
    assert.equal(expect.status, second.status, label .. ": status")
    assert.equal(expect.attempts, second.attempts, label .. ": err.attempts")
    assert.equal(expect.retryable, second.retryable, label .. ": err.retryable")
  end
end

setup(emu.start)
teardown(emu.stop)

describe("the fault matrix", function()
  local client, sleeps


  -- A new client (so a new connection) per row: libcurl sends a request
  -- again by itself when a reused connection dies before any answer, which
  -- would hide a drop from the attempt count (see the test after the matrix).
  before_each(function()
    emu.reset()
    sleeps = {}
    client = emu.client {
      idempotency = false,        -- the keyed PATCH passes its own key
      max_retries = 2,
      retry = { base = BASE, cap = CAP, max_retry_after = MAX_RETRY_AFTER },
      sleep = function(s) sleeps[#sleeps + 1] = s end,
    }
  end)

  after_each(function() client:close() end)

  local METHODS = {
    { "GET", 4, function(opts) return client.unified_api:get("crm", "opportunities", ID, Q, opts) end },
    { "PATCH", 5, function(opts, i)
      return client.unified_api:update("crm", "opportunities", ID, { amount = 1000 + i }, Q, opts)
    end },
    { "PATCH + key", 6, function(opts, i)
      opts.idempotency_key = "matrix-" .. i
      return client.unified_api:update("crm", "opportunities", ID, { amount = 1000 + i }, Q, opts)
    end, "PATCH" },
  }

  for i, row in ipairs(MATRIX) do
    local name, fault, count, waits = row[1], row[2], row[3], row[7]
    for _, m in ipairs(METHODS) do
      local label, column, call, method = m[1], m[2], m[3], m[4] or m[1]
      local expect = row[column]
      it(("%s x %s"):format(name, label), function()
        queue(method, fault, count)
        local result, second = call({ timeout = fault.timeout or 2 }, i)
        if fault.settle then core.sleep(fault.settle) end

        check(expect, result, second, label)
        assert.equal(expect.attempts, #emu.requests(), label .. ": requests the emulator saw")
        check_waits(waits, sleeps, expect.attempts - 1, label)
        local stats = emu.stats()
        assert.equal(math.min(count, expect.attempts), stats.faults_injected, label .. ": faults injected")
        if method == "PATCH" then
          assert.equal(expect.writes, stats.writes[WRITE_KEY] or 0, label .. ": writes")
          assert.equal(expect.replays, stats.idempotent_replays, label .. ": replays")
          if expect.ok then assert.equal(1000 + i, result.amount, label) end
        else
          assert.same({}, stats.writes, label .. ": writes")
        end
      end)
    end
  end
end)

describe("the retry policy over the wire", function()
  local sleeps

  local function client_with(options)
    sleeps = {}
    options.sleep = function(s) sleeps[#sleeps + 1] = s end
    return emu.client(options)
  end

  before_each(emu.reset)

  it("gives up when max_retries is exhausted: the last error, retryable, with the attempt count", function()
    local client = client_with { max_retries = 2, retry = { base = 0.01 } }
    emu.faults { { method = "GET", path_prefix = PREFIX, status = 500, count = 5 } }
    local record, err = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.is_nil(record)
    assert.equal("http", err.kind)
    assert.equal(500, err.status)
    assert.equal(3, err.attempts)
    assert.is_true(err.retryable)
    assert.equal("truto: GET /unified/crm/opportunities/" .. ID
      .. ": 500 Internal Server Error: Upstream failure (injected) (after 3 attempts)", tostring(err))
    assert.equal(3, #emu.requests())
    assert.equal(2, #sleeps)
    assert.equal(2, emu.queued().faults[1].count)

    -- Per call: max_retries = 0 is one attempt; 4 outlasts the last two faults.
    local _
    _, err = client.unified_api:get("crm", "opportunities", ID, Q, { max_retries = 0 })
    assert.equal(1, err.attempts)
    assert.is_true(err.retryable)
    assert.equal(4, #emu.requests())
    local _, response = client.unified_api:get("crm", "opportunities", ID, Q, { max_retries = 4 })
    assert.equal(2, response.attempts)
    assert.equal(6, #emu.requests())
    client:close()
  end)

  it("stops before a wait that would end past retry.deadline", function()
    -- Retry-After 5 s against a 2 s deadline: no wait starts, one attempt.
    local client = client_with { max_retries = 5, retry = { deadline = 2 } }
    emu.faults { { method = "GET", path_prefix = PREFIX, status = 429, retry_after = "5", count = 10 } }
    local _, err = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(429, err.status)
    assert.equal(1, err.attempts)
    assert.is_true(err.retryable)
    assert.same({}, sleeps)
    client:close()

    -- Retry-After 1 s fits (the fake sleep takes no time): every retry is made.
    emu.reset()
    client = client_with { max_retries = 5, retry = { deadline = 2 } }
    emu.faults { { method = "GET", path_prefix = PREFIX, status = 429, retry_after = "1", count = 10 } }
    _, err = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(6, err.attempts)
    assert.same({ 1, 1, 1, 1, 1 }, sleeps)
    client:close()

    -- Time spent in attempts counts, and the deadline bounds the attempt
    -- itself: 400 ms each against a 1 s deadline; the third, started at
    -- 0.8 s, is cut at 1 s.
    emu.reset()
    client = client_with { max_retries = 10, retry = { deadline = 1, base = 0.001, cap = 0.001 } }
    emu.faults { { method = "GET", path_prefix = PREFIX, status = 502, delay_ms = 400, count = 10 } }
    local started = core.now()
    _, err = client.unified_api:get("crm", "opportunities", ID, Q)
    local elapsed = core.now() - started
    assert.equal("timeout", err.kind)
    assert.equal(3, err.attempts)
    assert.equal(2, #sleeps)
    assert.is_true(elapsed >= 0.95 and elapsed < 1.25, "elapsed " .. elapsed)
    client:close()
  end)

  it("ends the call at retry.deadline, however long timeout is", function()
    local client = client_with { max_retries = 5, timeout = 4.5, retry = { deadline = 1 } }
    emu.faults { { method = "GET", path_prefix = PREFIX, delay_ms = 3000, count = 1 } }
    local started = core.now()
    local record, err = client.unified_api:get("crm", "opportunities", ID, Q)
    local elapsed = core.now() - started
    assert.is_nil(record)
    assert.equal("timeout", err.kind)
    assert.equal(1, err.attempts)
    assert.same({}, sleeps)
    assert.is_true(elapsed >= 0.95 and elapsed < 1.3, "elapsed " .. elapsed)
    client:close()
    core.sleep(2.2)   -- the emulator still holds the delayed request
  end)

  it("waits Retry-After, capped by max_retry_after, else ratelimit-reset for a 429", function()
    local client = client_with { max_retries = 3, retry = { max_retry_after = 7 } }
    emu.faults {
      { method = "GET", path_prefix = PREFIX, status = 409, retry_after = "2" },   -- read, but not retried
    }
    local _, err = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(409, err.status)
    assert.is_false(err.retryable)
    assert.equal(2, err.retry_after)
    assert.same({}, sleeps)

    emu.faults {
      { method = "GET", path_prefix = PREFIX, status = 429, retry_after = "2" },
      { method = "GET", path_prefix = PREFIX, status = 504, retry_after = "30" },   -- capped
      { method = "GET", path_prefix = PREFIX, status = 429, headers = { ["ratelimit-reset"] = "6" } },
    }
    local _, response = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(4, response.attempts)
    assert.same({ 2, 7, 6 }, sleeps)
    client:close()
  end)

  it("backs off with full jitter: a uniform draw times min(cap, base * 2^(n-1))", function()
    local client = client_with { max_retries = 4, retry = { base = 0.5, cap = 1.5 } }
    emu.faults { { method = "GET", path_prefix = PREFIX, status = 500, count = 4 } }
    math.randomseed(20260101)
    local draws = { math.random(), math.random(), math.random(), math.random() }
    math.randomseed(20260101)
    local _, response = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(5, response.attempts)
    assert.same({ draws[1] * 0.5, draws[2] * 1.0, draws[3] * 1.5, draws[4] * 1.5 }, sleeps)
    client:close()
  end)

  it("idempotency = \"auto\": one key for every attempt of a call, a new key per call, none on a GET", function()
    local client = client_with { idempotency = "auto", retry = { base = 0.01 } }
    emu.faults {
      { method = "PATCH", path_prefix = PREFIX, fault = "drop" },
      { method = "PATCH", path_prefix = PREFIX, status = 502 },
    }
    local record, response = client.unified_api:update("crm", "opportunities", ID, { amount = 4242 }, Q)
    assert.equal(4242, record.amount)
    assert.equal(3, response.attempts)
    assert(client.unified_api:update("crm", "opportunities", ID, { amount = 4343 }, Q))
    assert(client.unified_api:get("crm", "opportunities", ID, Q))

    local log = emu.requests()
    assert.equal(5, #log)
    local key = log[1].headers["idempotency-key"]
    assert.matches("^%x+$", key)
    assert.equal(32, #key)
    assert.equal(key, log[2].headers["idempotency-key"])
    assert.equal(key, log[3].headers["idempotency-key"])
    assert.not_equal(key, log[4].headers["idempotency-key"])
    assert.equal(32, #log[4].headers["idempotency-key"])
    assert.is_nil(log[5].headers["idempotency-key"])

    local stats = emu.stats()
    -- The first call: applied by attempt 1 (its answer dropped), not handled
    -- by attempt 2 (502), replayed to attempt 3.  The second call: applied.
    assert.equal(2, stats.writes[WRITE_KEY])
    assert.equal(1, stats.idempotent_replays)
    assert.equal(4343, assert(client.unified_api:get("crm", "opportunities", ID, Q)).amount)
    client:close()
  end)
end)

describe("a kept-alive connection that dies", function()
  before_each(emu.reset)

  it("libcurl sends a GET again by itself; a POST or PATCH without a key is sent once", function()
    local client = emu.client { idempotency = false, retry = { base = 0.01 }, sleep = function() end }
    assert(client.unified_api:get("crm", "opportunities", ID, Q))       -- a connection to reuse
    emu.faults { { method = "GET", path_prefix = PREFIX, fault = "drop" } }
    local record, response = client.unified_api:get("crm", "opportunities", ID, Q)
    assert.equal(ID, record.id)
    assert.equal(1, response.attempts)              -- one attempt of the client ...
    assert.equal(3, #emu.requests())                -- ... that reached the server twice

    -- A write without a key goes on a new connection: one request, applied
    -- once, and the lost answer is reported instead of hidden.
    emu.reset()
    emu.faults {
      { method = "POST", path_prefix = PREFIX, fault = "drop" },
      { method = "PATCH", path_prefix = PREFIX, fault = "drop" },
    }
    assert(client.unified_api:get("crm", "opportunities", ID, Q))
    local created, err = client.unified_api:create("crm", "opportunities", { name = "Once" }, Q)
    assert.is_nil(created)
    assert.equal("network", err.kind)
    assert.equal(1, err.attempts)
    assert.is_false(err.retryable)
    assert(client.unified_api:get("crm", "opportunities", ID, Q))
    local updated
    updated, err = client.unified_api:update("crm", "opportunities", ID, { amount = 9 }, Q)
    assert.is_nil(updated)
    assert.equal("network", err.kind)
    assert.equal(1, err.attempts)
    assert.equal(4, #emu.requests())
    local stats = emu.stats()
    assert.same({ [ACCOUNT .. "/crm/opportunities/90000001"] = 1, [WRITE_KEY] = 1 }, stats.writes)
    client:close()
  end)
end)

-- A small, seeded generator (Park and Miller's minimal standard) so the fault
-- plan is the same on every run and every Lua: its products stay below 2^53.
local function generator(seed)
  local x = seed
  return function(n)
    x = x * 16807 % 2147483647
    return x % n + 1
  end
end

-- The raw path of a record, as the client sends it.
local function escape_segment(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

describe("500 updates under a seeded mix of faults", function()

  it("applies every write exactly once and leaves every record with its new value", function()
    emu.reset()
    local TIMEOUT, SLOW = 0.3, 400
    local creator = emu.client { idempotency = "auto" }
    local ids = {}
    for record, err in creator.unified_api:each("crm", "opportunities", { integrated_account_id = ACCOUNT, limit = 100 }) do
      assert.is_nil(err)
      ids[#ids + 1] = record.id
    end
    assert.equal(30, #ids)
    for n = #ids + 1, 500 do
      local created = assert(creator.unified_api:create("crm", "opportunities", { name = "Bulk " .. n }, Q))
      ids[#ids + 1] = created.id
    end
    creator:close()

    -- The plan: about 30% of records get one fault on their first update,
    -- a few of those a second one on the retry.  Each queued entry matches
    -- one record's path, so the plan holds whatever the order of requests.
    local random = generator(0x5eed)
    local KINDS = {
      { status = 429, retry_after = "1" }, { status = 429, retry_after = "0" }, { status = 500 },
      { status = 502 }, { status = 504 }, { fault = "drop" }, { delay_ms = 20 }, { delay_ms = SLOW },
    }
    local plan, planned, resends_expected, replays_expected, slow, drops = {}, 0, 0, 0, 0, 0
    for _, id in ipairs(ids) do
      if random(100) <= 30 then
        local faults = random(5) == 1 and 2 or 1
        for _ = 1, faults do
          local kind = KINDS[random(#KINDS)]
          if kind.delay_ms == SLOW and slow >= 10 then kind = KINDS[random(5)] end   -- keep the run short
          local entry = { method = "PATCH", path_prefix = PREFIX .. "/" .. escape_segment(id) }
          for k, v in pairs(kind) do entry[k] = v end
          plan[#plan + 1] = entry
          planned = planned + 1
          -- Every fault but a short delay makes the request go out once more.
          if kind.delay_ms ~= 20 then resends_expected = resends_expected + 1 end
          if kind.fault == "drop" then drops = drops + 1 end
          -- The write is applied on the first handled attempt; a dropped
          -- answer's retry, and a timed-out attempt that nginx handles
          -- after the retry, are replays.
          if kind.fault == "drop" or kind.delay_ms == SLOW then replays_expected = replays_expected + 1 end
          if kind.delay_ms == SLOW then slow = slow + 1 end
          if kind.delay_ms == 20 then break end   -- answered: no attempt left for a second fault
        end
      end
    end
    emu.faults(plan)
    local before = emu.stats()

    local slept = 0
    local client = emu.client { idempotency = "auto", timeout = TIMEOUT, max_retries = 3,
                                sleep = function(s) slept = slept + s end }
    local started, retries, failed = core.now(), 0, {}
    for n, id in ipairs(ids) do
      local record, response = client.unified_api:update("crm", "opportunities", id,
        { amount = 500000 + n, name = "Updated " .. n }, Q)
      if record then
        assert.equal(500000 + n, record.amount)
        retries = retries + response.attempts - 1
      else
        failed[#failed + 1] = id .. ": " .. tostring(response)
      end
    end
    local elapsed = core.now() - started
    core.sleep(SLOW / 1000)   -- let nginx finish the requests whose client timed out
    assert.same({}, failed)

    -- Every record holds its new value.
    local seen = 0
    for record, err in client.unified_api:each("crm", "opportunities", { integrated_account_id = ACCOUNT, limit = 1000 }) do
      assert.is_nil(err)
      seen = seen + 1
      assert.equal(ids[seen], record.id)
      assert.equal(500000 + seen, record.amount)
      assert.equal("Updated " .. seen, record.name)
    end
    assert.equal(500, seen)
    client:close()

    -- Each update was applied exactly once; retries and replays are as planned.
    local after = emu.stats()
    for n, id in ipairs(ids) do
      local key = ACCOUNT .. "/crm/opportunities/" .. id
      assert.equal(1, (after.writes[key] or 0) - (before.writes[key] or 0), "writes of " .. id .. " (#" .. n .. ")")
    end
    assert.same({}, emu.queued().faults)
    assert.equal(planned, after.faults_injected - before.faults_injected)
    -- The client's retries, or libcurl's own: a PATCH under a key whose
    -- answer is dropped on a reused connection is sent again by libcurl
    -- within the same attempt.
    assert.equal(500 + resends_expected + 1, after.requests - before.requests)       -- + the list
    assert.is_true(retries <= resends_expected and retries >= resends_expected - drops)
    assert.equal(replays_expected, after.idempotent_replays - before.idempotent_replays)
    assert.is_true(elapsed < 15, "took " .. elapsed .. " s")
    assert.equal(173, planned)                   -- the seeded plan: 30% of 500 records, some twice
    assert.equal(10, slow)
    assert.is_true(slept > 0)
  end)
end)

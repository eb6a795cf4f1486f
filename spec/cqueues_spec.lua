-- The cqueues transport (transport = "cqueues") in the real host: calls made
-- in coroutines of a cqueues controller, against the emulator on real nginx
-- over loopback.  Each call yields to the controller while it waits, so the
-- controller's other coroutines go on: shown by timings (eight 1 s calls in
-- about 1 s) and by a ticker coroutine that keeps running meanwhile.
local cqueues = require "cqueues"
local truto = require "truto"
local emulator = require "truto.emulator"
local emu = require "spec.support.emulator"
local controller = require "spec.support.controller"

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }
local PREFIX = "/unified/crm/opportunities/"
local now = cqueues.monotime

local function client(options)
  local o = { transport = "cqueues" }
  for k, v in pairs(options or {}) do o[k] = v end
  return emu.client(o)
end

local function delayed(ms) return { headers = { ["X-Emulator-Delay-Ms"] = tostring(ms) } } end

-- A coroutine that counts its wake-ups every 50 ms for `seconds`: how many
-- it got shows whether the controller stayed free while another waited.
local function ticker(seconds)
  local t = { ticks = 0 }
  t.run = function()
    local ends = now() + seconds
    while now() < ends do
      cqueues.sleep(0.05)
      t.ticks = t.ticks + 1
    end
  end
  return t
end

local function elapsed_since(started) return now() - started end

describe("the cqueues transport", function()
  setup(emu.start)
  teardown(emu.stop)
  before_each(emu.reset)

  it("runs 8 coroutines, each updating an opportunity with a 1 s upstream delay, in under 2 s", function()
    local c = client()
    local outcomes = {}
    local workers = {}
    for i = 1, 8 do
      workers[i] = function()
        local id = tostring(10000002 + i)
        local record, response = c.unified_api:update("crm", "opportunities", id,
          { amount = 1000 + i, name = "cqueues " .. i }, Q, delayed(1000))
        outcomes[i] = { record = record, response = response }
      end
    end
    local started = now()
    controller.run(table.unpack(workers))
    local elapsed = elapsed_since(started)
    assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
    for i = 1, 8 do
      local o = outcomes[i]
      assert.is_table(o.record, tostring(o.response))
      assert.equal(tostring(10000002 + i), o.record.id)
      assert.equal(1000 + i, o.record.amount)
      assert.equal("cqueues " .. i, o.record.name)
      assert.equal(200, o.response.status)
      assert.equal(1, o.response.attempts)
    end
    local bodies = {}
    for _, r in ipairs(emu.requests()) do
      assert.equal("PATCH", r.method)
      bodies[r.path] = r.body
    end
    for i = 1, 8 do
      assert.equal(('{"amount":%d,"name":"cqueues %d"}'):format(1000 + i, i), bodies[PREFIX .. (10000002 + i)])
    end
    c:close()
  end)

  it("keeps the controller's other coroutines running while a call waits", function()
    local c = client()
    local tick = ticker(1)
    local record = controller.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(1000))
    end, tick.run)
    assert.equal("10000003", record.id)
    assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
    c:close()
  end)

  it("runs client:batch concurrently on the controller, results in request order", function()
    local c = client()
    local requests = {}
    for i = 1, 8 do
      requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                      id = tostring(10000002 + i), body = { amount = i }, query = Q, opts = delayed(1000) }
    end
    local tick = ticker(1)
    local started = now()
    local results = controller.run(function() return c:batch(requests) end, tick.run)
    local elapsed = elapsed_since(started)
    assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
    assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
    assert.equal(8, #results)
    for i, r in ipairs(results) do
      assert.equal(tostring(10000002 + i), r[1].id)
      assert.equal(i, r[1].amount)
      assert.equal(200, r[2].status)
    end
    assert.equal(8, #emu.requests())

    -- concurrency bounds the calls in flight: 8 calls of 400 ms, 4 at a time
    for i = 1, 8 do requests[i].opts = delayed(400) end
    started = now()
    results = controller.run(function() return c:batch(requests, { concurrency = 4 }) end)
    elapsed = elapsed_since(started)
    assert.is_true(elapsed >= 0.8 and elapsed < 1.5, ("took %.2f s"):format(elapsed))
    for i, r in ipairs(results) do assert.equal(i, r[1].amount) end
    c:close()
  end)

  it("stops a batch when on_progress raises, and the next batch runs clean", function()
    local c = client()
    local requests = {}
    for i = 1, 4 do
      requests[i] = { api = "unified", method = "get", model = "crm", resource = "opportunities",
                      id = tostring(10000002 + i), query = Q, opts = delayed(200 * i) }
    end
    local ok, err = pcall(controller.run, function()
      return c:batch(requests, { on_progress = function() error("stop here", 0) end })
    end)
    assert.is_false(ok)
    assert.equal("stop here", err)
    local results = controller.run(function() return c:batch(requests) end)
    for i, r in ipairs(results) do assert.equal(tostring(10000002 + i), r[1].id) end
    c:close()
  end)

  it("refuses a call outside a coroutine run by a controller, with kind \"phase\"", function()
    local c = client()
    local message = "cannot make an HTTP call outside a coroutine run by a cqueues controller: "
      .. "run it in one, e.g. cq:wrap(function() ... end) then cq:loop()"
    local record, err = c.unified_api:get("crm", "opportunities", "10000003", Q)
    assert.is_nil(record)
    assert.equal("phase", err.kind)
    assert.equal(message, err.message)
    assert.is_false(err.retryable)
    -- A coroutine of its own inside a controller cannot yield to it either.
    record, err = controller.run(function()
      return coroutine.wrap(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)()
    end)
    assert.is_nil(record)
    assert.equal("phase", err.kind)
    -- A batch outside: each call fails so.
    local results = c:batch { { api = "unified", method = "get", model = "crm", resource = "opportunities",
                                id = "10000003", query = Q } }
    assert.is_nil(results[1][1])
    assert.equal("phase", results[1][2].kind)
    assert.same({}, emu.requests())
    c:close()
  end)

  it("keeps the connection alive between calls, until client:close()", function()
    local c = client()
    local reused = controller.run(function()
      local seen = {}
      for i = 1, 3 do
        local _, response = c.unified_api:get("crm", "opportunities", "10000003", Q)
        seen[i] = response.info.reused
      end
      c:close()
      local _, response = c.unified_api:get("crm", "opportunities", "10000003", Q)
      seen[4] = response.info.reused
      return seen
    end)
    assert.same({ false, true, true, false }, reused)
    c:close()
  end)

  it("waits a 429's Retry-After without blocking the other coroutines", function()
    local c = client { max_retries = 2 }
    emu.faults { { method = "GET", path_prefix = PREFIX, status = 429, retry_after = "1", count = 1 } }
    local tick = ticker(1)
    local started = now()
    local record, response = controller.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q)
    end, tick.run)
    local elapsed = elapsed_since(started)
    assert.equal("10000003", record.id)
    assert.equal(2, response.attempts)
    assert.is_true(elapsed >= 1 and elapsed < 1.5, ("took %.2f s"):format(elapsed))
    assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
    c:close()
  end)

  it("times an attempt out, and ends the call at retry.deadline", function()
    local c = client { max_retries = 0, timeout = 0.5 }
    local tick = ticker(0.5)
    local started = now()
    local record, err = controller.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(2000))
    end, tick.run)
    local elapsed = elapsed_since(started)
    assert.is_nil(record)
    assert.equal("timeout", err.kind)
    assert.equal("timed out reading the response", err.message)
    assert.is_true(elapsed >= 0.5 and elapsed < 0.8, ("took %.2f s"):format(elapsed))
    assert.is_true(tick.ticks >= 7, "ticks: " .. tick.ticks)
    c:close()

    c = client { max_retries = 5, timeout = 4.5, retry = { deadline = 1 } }
    started = now()
    record, err = controller.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(3000))
    end)
    elapsed = elapsed_since(started)
    assert.is_nil(record)
    assert.equal("timeout", err.kind)
    assert.equal(1, err.attempts)
    assert.is_true(elapsed >= 0.95 and elapsed < 1.3, ("took %.2f s"):format(elapsed))
    c:close()
    controller.run(function() cqueues.sleep(2.2) end)   -- the emulator still holds the delayed requests
  end)

  it("says what to install when cqueues is missing", function()
    local saved = { cqueues = package.loaded.cqueues, transport = package.loaded["truto.cqueues"] }
    package.loaded.cqueues, package.loaded["truto.cqueues"] = nil, nil
    package.preload.cqueues = function() error("module 'cqueues' not found:\n\tno field package.preload['cqueues']", 0) end
    local ok, err = pcall(function()
      local made = truto.new { transport = "cqueues", token = emu.TOKEN }
      return made
    end)
    package.preload.cqueues = nil
    package.loaded.cqueues, package.loaded["truto.cqueues"] = saved.cqueues, saved.transport
    assert.is_false(ok)
    assert.equal("spec/cqueues_spec.lua:232: truto.new: transport \"cqueues\" cannot be loaded: it needs cqueues "
      .. "(Debian: apt-get install lua-cqueues lua-luaossl): module 'cqueues' not found:", err)
  end)

  it("fails to connect with kind \"connect\", retryable", function()
    local c = client { base_url = "http://127.0.0.1:9", max_retries = 0 }
    local record, err = controller.run(function() return c.unified_api:get("crm", "opportunities", "1", Q) end)
    assert.is_nil(record)
    assert.equal("connect", err.kind)
    assert.equal("connecting to 127.0.0.1:9 failed: Connection refused", err.message)
    assert.is_true(err.retryable)
  end)
end)

describe("the cqueues transport over HTTPS", function()
  local server

  setup(function() server = assert(emulator.start { tls = true }) end)
  teardown(function() server:stop() end)

  local function get(options)
    local o = { transport = "cqueues", token = emu.TOKEN, max_retries = 0 }
    for k, v in pairs(options) do o[k] = v end
    local c = truto.new(o)
    local record, response = controller.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q)
    end)
    c:close()
    return record, response
  end

  it("verifies the certificate by IP address and by DNS name (with SNI)", function()
    local record = get { base_url = server.base_url, ca_file = server.ca_file }
    assert.equal("10000003", record.id)
    record = get { base_url = "https://localhost:" .. server.port, ca_file = server.ca_file }
    assert.equal("10000003", record.id)
  end)

  it("refuses a certificate from a CA it does not trust, kind \"tls\", unless insecure", function()
    local record, err = get { base_url = server.base_url }
    assert.is_nil(record)
    assert.equal("tls", err.kind)
    assert.equal("TLS handshake with 127.0.0.1 failed: unable to get local issuer certificate", err.message)
    assert.is_false(err.retryable)
    record = get { base_url = server.base_url, insecure = true }
    assert.equal("10000003", record.id)
  end)

  it("says which CA file it cannot load", function()
    local record, err = get { base_url = server.base_url, ca_file = "/nonexistent/ca.pem" }
    assert.is_nil(record)
    assert.equal("tls", err.kind)
    assert.matches("cannot load the CA certificates: .*/nonexistent/ca.pem", err.message)
  end)
end)

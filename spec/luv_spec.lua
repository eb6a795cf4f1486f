-- The luv transport (transport = "luv") in the real host: calls made in
-- coroutines on libuv's loop (lua-luv, Lua 5.4), against the emulator on
-- real nginx over loopback.  Each call yields while libuv waits and a
-- libuv callback resumes it, so the loop's other work goes on: shown by
-- timings (eight 1 s calls in about 1 s) and by a uv timer that keeps
-- firing meanwhile.  Neovim's vim.loop: spec/neovim_spec.lua.
local uv = require "luv"
local truto = require "truto"
local emulator = require "truto.emulator"
local emu = require "spec.support.emulator"
local loop = require "spec.support.luv_loop"

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }
local PREFIX = "/unified/crm/opportunities/"

local function now() return uv.hrtime() / 1e9 end

local function client(options)
  local o = { transport = "luv" }
  for k, v in pairs(options or {}) do o[k] = v end
  return emu.client(o)
end

local function delayed(ms) return { headers = { ["X-Emulator-Delay-Ms"] = tostring(ms) } } end

local function elapsed_since(started) return now() - started end

local PHASE_MESSAGE = "cannot make an HTTP call outside a coroutine with transport \"luv\": "
  .. "run it in one that libuv's callbacks can resume, e.g. coroutine.wrap(function() ... end)(), "
  .. "with the loop running (uv.run(), or Neovim's own)"

describe("the luv transport", function()
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
          { amount = 1000 + i, name = "luv " .. i }, Q, delayed(1000))
        outcomes[i] = { record = record, response = response }
      end
    end
    local started = now()
    loop.run(table.unpack(workers))
    local elapsed = elapsed_since(started)
    assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
    for i = 1, 8 do
      local o = outcomes[i]
      assert.is_table(o.record, tostring(o.response))
      assert.equal(tostring(10000002 + i), o.record.id)
      assert.equal(1000 + i, o.record.amount)
      assert.equal("luv " .. i, o.record.name)
      assert.equal(200, o.response.status)
      assert.equal(1, o.response.attempts)
    end
    local bodies = {}
    for _, r in ipairs(emu.requests()) do
      assert.equal("PATCH", r.method)
      bodies[r.path] = r.body
    end
    for i = 1, 8 do
      assert.equal(('{"amount":%d,"name":"luv %d"}'):format(1000 + i, i), bodies[PREFIX .. (10000002 + i)])
    end
    loop.close(c)
  end)

  it("keeps a uv timer firing while a call waits", function()
    local c = client()
    local tick = loop.ticker(1)
    local record = loop.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(1000))
    end)
    assert.equal("10000003", record.id)
    assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
    loop.close(c)
  end)

  it("runs client:batch concurrently on the loop, results in request order", function()
    local c = client()
    local requests = {}
    for i = 1, 8 do
      requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                      id = tostring(10000002 + i), body = { amount = i }, query = Q, opts = delayed(1000) }
    end
    local tick = loop.ticker(1)
    local started = now()
    local results = loop.run(function() return c:batch(requests) end)
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
    results = loop.run(function() return c:batch(requests, { concurrency = 4 }) end)
    elapsed = elapsed_since(started)
    assert.is_true(elapsed >= 0.8 and elapsed < 1.5, ("took %.2f s"):format(elapsed))
    for i, r in ipairs(results) do assert.equal(i, r[1].amount) end
    loop.close(c)
  end)

  it("stops a batch when on_progress raises, and the next batch runs clean", function()
    local c = client()
    local requests = {}
    for i = 1, 4 do
      requests[i] = { api = "unified", method = "get", model = "crm", resource = "opportunities",
                      id = tostring(10000002 + i), query = Q, opts = delayed(200 * i) }
    end
    local started = now()
    local ok, err = pcall(loop.run, function()
      return c:batch(requests, { on_progress = function() error("stop here", 0) end })
    end)
    -- The loop returned at the first answer: the stopped calls hold nothing on it.
    local elapsed = elapsed_since(started)
    assert.is_false(ok)
    assert.equal("stop here", err)
    assert.is_true(elapsed >= 0.2 and elapsed < 0.6, ("took %.2f s"):format(elapsed))
    local results = loop.run(function() return c:batch(requests) end)
    for i, r in ipairs(results) do assert.equal(tostring(10000002 + i), r[1].id) end
    loop.close(c)
  end)

  it("refuses a call outside a coroutine, with kind \"phase\"", function()
    local c = client()
    local record, err = c.unified_api:get("crm", "opportunities", "10000003", Q)
    assert.is_nil(record)
    assert.equal("phase", err.kind)
    assert.equal(PHASE_MESSAGE, err.message)
    assert.is_false(err.retryable)
    -- In a callback of the running loop, on the main thread: it cannot yield either.
    local timer = uv.new_timer()
    timer:start(0, 0, function()
      timer:close()
      record, err = c.unified_api:get("crm", "opportunities", "10000003", Q)
    end)
    uv.run()
    assert.is_nil(record)
    assert.equal("phase", err.kind)
    -- A batch outside: each call fails so.
    local results = c:batch { { api = "unified", method = "get", model = "crm", resource = "opportunities",
                                id = "10000003", query = Q } }
    assert.is_nil(results[1][1])
    assert.equal("phase", results[1][2].kind)
    assert.same({}, emu.requests())
    loop.close(c)
  end)

  it("keeps the connection alive between calls, until client:close(), and the loop still returns", function()
    local c = client()
    local reused = loop.run(function()
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
    -- uv.run() returned with the last connection kept alive: it does not hold the loop.
    assert.same({ false, true, true, false }, reused)
    loop.close(c)
  end)

  it("waits a 429's Retry-After without blocking the loop", function()
    local c = client { max_retries = 2 }
    emu.faults { { method = "GET", path_prefix = PREFIX, status = 429, retry_after = "1", count = 1 } }
    local tick = loop.ticker(1)
    local started = now()
    local record, response = loop.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q)
    end)
    local elapsed = elapsed_since(started)
    assert.equal("10000003", record.id)
    assert.equal(2, response.attempts)
    assert.is_true(elapsed >= 1 and elapsed < 1.5, ("took %.2f s"):format(elapsed))
    assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
    loop.close(c)
  end)

  it("times an attempt out, and ends the call at retry.deadline", function()
    local c = client { max_retries = 0, timeout = 0.5 }
    local tick = loop.ticker(0.5)
    local started = now()
    local record, err = loop.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(2000))
    end)
    local elapsed = elapsed_since(started)
    assert.is_nil(record)
    assert.equal("timeout", err.kind)
    assert.equal("timed out reading the response", err.message)
    assert.is_true(elapsed >= 0.5 and elapsed < 0.8, ("took %.2f s"):format(elapsed))
    assert.is_true(tick.ticks >= 7, "ticks: " .. tick.ticks)
    loop.close(c)

    c = client { max_retries = 5, timeout = 4.5, retry = { deadline = 1 } }
    started = now()
    record, err = loop.run(function()
      return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(3000))
    end)
    elapsed = elapsed_since(started)
    assert.is_nil(record)
    assert.equal("timeout", err.kind)
    assert.equal(1, err.attempts)
    assert.is_true(elapsed >= 0.95 and elapsed < 1.3, ("took %.2f s"):format(elapsed))
    loop.close(c)
    loop.ticker(2.2, 100)   -- the emulator still holds the delayed requests
    uv.run()
  end)

  it("says what to install when luv is missing, and takes the uv module given as option uv", function()
    local saved = { luv = package.loaded.luv, transport = package.loaded["truto.luv"] }
    package.loaded.luv, package.loaded["truto.luv"] = nil, nil
    package.preload.luv = function() error("module 'luv' not found:\n\tno field package.preload['luv']", 0) end
    local ok, err = pcall(function()
      local made = truto.new { transport = "luv", token = emu.TOKEN }
      return made
    end)
    local given = client { uv = saved.luv }
    package.preload.luv = nil
    package.loaded.luv, package.loaded["truto.luv"] = saved.luv, saved.transport
    assert.is_false(ok)
    assert.equal("spec/luv_spec.lua:231: truto.new: transport \"luv\" cannot be loaded: it needs luv "
      .. "(Debian: apt-get install lua-luv), Neovim's vim.loop or the option uv: module 'luv' not found:", err)
    local record = loop.run(function() return given.unified_api:get("crm", "opportunities", "10000003", Q) end)
    assert.equal("10000003", record.id)
    loop.close(given)
    ok, err = pcall(truto.new, { transport = "luv", token = emu.TOKEN, uv = {} })
    assert.is_false(ok)
    assert.matches("option 'uv' must be a uv module %(luv's, with new_tcp%)$", err)
  end)

  it("fails to connect with kind \"connect\", retryable", function()
    local c = client { base_url = "http://127.0.0.1:9", max_retries = 0 }
    local record, err = loop.run(function() return c.unified_api:get("crm", "opportunities", "1", Q) end)
    assert.is_nil(record)
    assert.equal("connect", err.kind)
    assert.equal("connecting to 127.0.0.1:9 failed: ECONNREFUSED", err.message)
    assert.is_true(err.retryable)
    loop.close(c)
  end)

  it("fails a name that does not resolve with kind \"connect\"", function()
    local c = client { base_url = "http://nowhere.invalid", max_retries = 0 }
    local record, err = loop.run(function() return c.unified_api:get("crm", "opportunities", "1", Q) end)
    assert.is_nil(record)
    assert.equal("connect", err.kind)
    assert.matches("^cannot resolve nowhere.invalid: could not be resolved %(EAI_", err.message)
    loop.close(c)
  end)
end)

describe("the luv transport over HTTPS (truto.tls over libuv's TCP handles)", function()
  local server

  setup(function() server = assert(emulator.start { tls = true }) end)
  teardown(function() server:stop() end)
  before_each(function() assert(server:reset()) end)

  local function https_client(options)
    local o = { transport = "luv", token = emu.TOKEN, base_url = server.base_url, ca_file = server.ca_file,
                max_retries = 0 }
    for k, v in pairs(options or {}) do
      if v == false then v = nil end   -- false: leave the option out
      o[k] = v
    end
    return truto.new(o)
  end

  it("updates an opportunity at https://127.0.0.1 (verified by IP address), keeping the connection alive", function()
    local c = https_client()
    local outcomes = loop.run(function()
      local seen = {}
      for i = 1, 3 do
        local record, response = c.unified_api:update("crm", "opportunities", "10000003", { amount = 700 + i }, Q)
        seen[i] = { record and record.amount, response.status, response.info.reused }
      end
      return seen
    end)
    assert.same({ { 701, 200, false }, { 702, 200, true }, { 703, 200, true } }, outcomes)
    local log = assert(server:requests())
    assert.equal(3, #log)
    assert.equal('{"amount":703}', log[3].body)
    assert.equal("Bearer " .. emu.TOKEN, log[3].headers.authorization)
    loop.close(c)
  end)

  it("verifies https://localhost by name (SNI), and runs 8 calls of 1 s concurrently in under 2 s", function()
    local c = https_client { base_url = server.base_url:gsub("127%.0%.0%.1", "localhost") }
    local requests = {}
    for i = 1, 8 do
      requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                      id = tostring(10000002 + i), body = { amount = i }, query = Q, opts = delayed(1000) }
    end
    local tick = loop.ticker(1)
    local started = now()
    local results = loop.run(function() return c:batch(requests) end)
    local elapsed = elapsed_since(started)
    assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
    assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
    for i, r in ipairs(results) do
      assert.equal(tostring(10000002 + i), r[1] and r[1].id, tostring(r[2]))
      assert.equal(i, r[1].amount)
    end
    loop.close(c)
  end)

  it("fails verification with kind \"tls\", not retried, nothing sent, without the server's CA", function()
    local c = https_client { ca_file = false, max_retries = 2 }
    local record, err = loop.run(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
    assert.is_nil(record)
    assert.equal("tls", err.kind)
    assert.equal("TLS handshake with 127.0.0.1 failed: unable to get local issuer certificate", err.message)
    assert.is_false(err.retryable)
    assert.equal(1, err.attempts)
    assert.same({}, assert(server:requests()))
    loop.close(c)
  end)

  it("with insecure = true, takes a certificate it cannot verify", function()
    local c = https_client { ca_file = false, insecure = true }
    local record = loop.run(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
    assert.equal("10000003", record.id)
    loop.close(c)
  end)

  it("a bad ca_file: kind \"tls\" saying why", function()
    local c = https_client { ca_file = "/nonexistent/ca.pem" }
    local record, err = loop.run(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
    assert.is_nil(record)
    assert.equal("tls", err.kind)
    assert.equal("TLS handshake with 127.0.0.1 failed: cannot load the CA certificates of /nonexistent/ca.pem: "
      .. "No such file or directory", err.message)
    loop.close(c)
  end)
end)

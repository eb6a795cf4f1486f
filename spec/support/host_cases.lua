-- The cases that the hosts whose calls yield inside the busted process
-- share (cqueues: spec/cqueues_spec.lua, luv: spec/luv_spec.lua), against
-- the emulator on real nginx over loopback.  Each spec declares them with
-- its host:
--   name            "cqueues", "luv": the transport, and its name in titles
--   run(f, ...)     runs each function in a coroutine of the host (f's
--                   results; an error raised in any is raised again)
--   ticker(seconds) { ticks = n } counting its wake-ups every 50 ms; `run`
--                   field: a function to run beside (cqueues'), if it needs one
--   idle(seconds)   lets the host wait that long with nothing to do
--   close(client)   closes the client, the host finishing what that takes
--   now()           the host's clock, in seconds
--   unyieldable(f)  f's results, f called in the host's loop where it cannot
--                   yield
--   phase_message   what a call refused outside a coroutine says
--   refused         the host's text for a refused connection
--   bad_ca_file     what a TLS handshake says of ca_file /nonexistent/ca.pem
--   words           in titles: ticking (what keeps going while a call
--                   waits), loop (what runs the calls), others (what a
--                   wait does not block), outside (where a call is refused)
local assert = require "luassert"
local truto = require "truto"
local emu = require "spec.support.emulator"
local sh = require "spec.support.shell"

local _M = {}

local Q = { integrated_account_id = emu.ACCOUNT }
local PREFIX = "/unified/crm/opportunities/"

local function client(host, options)
  local o = { transport = host.name }
  for k, v in pairs(options or {}) do o[k] = v end
  return emu.client(o)
end

local function delayed(ms) return { headers = { ["X-Emulator-Delay-Ms"] = tostring(ms) } } end

-- Runs f on the host with the ticker going beside it.
local function run_ticked(host, tick, f)
  if tick.run then return host.run(f, tick.run) end
  return host.run(f)
end

-- The sockets this process has open (the shell's parent is this process).
-- Updates opportunities 10000003 to 10000010, each answered after 1 s, with
-- c:batch on host while a ticker keeps firing: all 8 at once (1 to 2 s),
-- the loop never blocked, the results in request order.  Returns the
-- requests (for more batches).
local function assert_concurrent_batch(host, c)
  local requests = {}
  for i = 1, 8 do
    requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                    id = tostring(10000002 + i), body = { amount = i }, query = Q, opts = delayed(1000) }
  end
  local tick = host.ticker(1)
  local started = host.now()
  local results = run_ticked(host, tick, function() return c:batch(requests) end)
  local elapsed = host.now() - started
  assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
  assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
  assert.equal(8, #results)
  for i, r in ipairs(results) do
    assert.equal(tostring(10000002 + i), r[1] and r[1].id, tostring(r[2]))
    assert.equal(i, r[1].amount)
    assert.equal(200, r[2].status)
  end
  return requests
end

local function open_sockets()
  return tonumber(sh.capture("find /proc/$PPID/fd -lname 'socket:*' | wc -l"))
end

-- Runs f with the collector stopped, after collecting what earlier cases
-- left: a socket left open then shows in f's counts (the collector would
-- close it at a time of its own), and none that others dropped closes
-- between two counts.
local function without_collector(f)
  collectgarbage()
  collectgarbage()
  collectgarbage("stop")
  local ok, err = pcall(f)
  collectgarbage("restart")
  if not ok then error(err, 0) end
end

-- Runs workers concurrently on c's host, expecting one to stop them all with
-- `stop` (an error value) within 0.2 to 0.6 s, after which no socket of
-- theirs is left open.
local function assert_stopped(host, c, workers, stop)
  without_collector(function()
    local before = open_sockets()
    local started = host.now()
    local ok, err = pcall(host.run, function() c.transport:run_concurrently(workers) end)
    local elapsed = host.now() - started
    assert.is_false(ok)
    assert.equal(stop, err)
    assert.is_true(elapsed >= 0.2 and elapsed < 0.6, ("took %.2f s"):format(elapsed))
    assert.equal(before, open_sockets())
  end)
end

-- Gets of opportunities 10000003, 10000004, ..., the i-th one answered
-- after 200 * i ms.
local function staggered_gets(count)
  local requests = {}
  for i = 1, count do
    requests[i] = { api = "unified", method = "get", model = "crm", resource = "opportunities",
                    id = tostring(10000002 + i), query = Q, opts = delayed(200 * i) }
  end
  return requests
end

--- Declares cases (busted's `it`) for host; `...` goes to each case after
-- the host.
---@param it function busted's
---@param cases table[] { title = string with {word}s of host.words, run = function(host, ...) }
---@param host table
function _M.declare(it, cases, host, ...)
  local args = table.pack(...)
  for _, case in ipairs(cases) do
    local title = case.title:gsub("{(%w+)}", function(word) return assert(host.words[word], word) end)
    it(title, function() case.run(host, table.unpack(args, 1, args.n)) end)
  end
end

-- ---- over http, against spec.support.emulator ---------------------------

_M.over_http = {
  { title = "runs 8 coroutines, each updating an opportunity with a 1 s upstream delay, in under 2 s",
    run = function(host)
      local c = client(host)
      local outcomes = {}
      local workers = {}
      for i = 1, 8 do
        workers[i] = function()
          local id = tostring(10000002 + i)
          local record, response = c.unified_api:update("crm", "opportunities", id,
            { amount = 1000 + i, name = host.name .. " " .. i }, Q, delayed(1000))
          outcomes[i] = { record = record, response = response }
        end
      end
      local started = host.now()
      host.run(table.unpack(workers))
      local elapsed = host.now() - started
      assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
      for i = 1, 8 do
        local o = outcomes[i]
        assert.is_table(o.record, tostring(o.response))
        assert.equal(tostring(10000002 + i), o.record.id)
        assert.equal(1000 + i, o.record.amount)
        assert.equal(host.name .. " " .. i, o.record.name)
        assert.equal(200, o.response.status)
        assert.equal(1, o.response.attempts)
      end
      local bodies = {}
      for _, r in ipairs(emu.requests()) do
        assert.equal("PATCH", r.method)
        bodies[r.path] = r.body
      end
      for i = 1, 8 do
        assert.equal(('{"amount":%d,"name":"%s %d"}'):format(1000 + i, host.name, i), bodies[PREFIX .. (10000002 + i)])
      end
      host.close(c)
    end },

  { title = "keeps {ticking} while a call waits",
    run = function(host)
      local c = client(host)
      local tick = host.ticker(1)
      local record = run_ticked(host, tick, function()
        return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(1000))
      end)
      assert.equal("10000003", record.id)
      assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
      host.close(c)
    end },

  { title = "runs client:batch concurrently on {loop}, results in request order",
    run = function(host)
      local c = client(host)
      local requests = assert_concurrent_batch(host, c)
      assert.equal(8, #emu.requests())

      -- concurrency bounds the calls in flight: 8 calls of 400 ms, 4 at a time
      for i = 1, 8 do requests[i].opts = delayed(400) end
      local started = host.now()
      local results = host.run(function() return c:batch(requests, { concurrency = 4 }) end)
      local elapsed = host.now() - started
      assert.is_true(elapsed >= 0.8 and elapsed < 1.5, ("took %.2f s"):format(elapsed))
      for i, r in ipairs(results) do assert.equal(i, r[1].amount) end
      host.close(c)
    end },

  { title = "resumes a stopped batch from its journal on {loop}: what was in flight goes again under its key",
    run = function(host)
      local c = client(host)
      local requests = {}
      for i = 1, 6 do
        requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                        id = tostring(10000002 + i), body = { amount = i }, query = Q,
                        opts = i > 2 and delayed(200) or nil }
      end
      local path = os.tmpname()
      local stopped = {}
      local ok, err = pcall(host.run, function()
        return c:batch(requests, { journal = path, concurrency = 4,
                                   on_progress = function(settled) if settled == 2 then error(stopped, 0) end end })
      end)
      assert.is_false(ok)
      assert.equal(stopped, err)
      host.idle(0.3)   -- the emulator answers what reached it
      local first_keys = {}   -- of the requests started before the stop
      for line in io.lines(path) do
        local record = truto.decode_json(line)
        if record.key then first_keys[PREFIX .. (10000002 + record.index)] = record.key end
      end
      local results = host.run(function() return c:batch(requests, { journal = path, concurrency = 4 }) end)
      os.remove(path)
      for i, r in ipairs(results) do assert.equal(i, r[1].amount, tostring(r[2])) end
      local stats = emu.stats()
      for i = 1, 6 do assert.equal(1, stats.writes[emu.ACCOUNT .. PREFIX:sub(9) .. (10000002 + i)]) end
      -- What was in flight at the stop (which of 3 to 6 depends on how fast
      -- the host ran them: under valgrind, 1 and 2 may settle before the
      -- others start) is sent again under its first key (replayed when the
      -- first send had reached the emulator); the rest under keys of their own.
      local log = emu.requests()
      for _, r in ipairs(log) do
        if first_keys[r.path] then assert.equal(first_keys[r.path], r.headers["idempotency-key"], r.path) end
      end
      assert.truthy(first_keys[PREFIX .. 10000003] and first_keys[PREFIX .. 10000004])   -- settled, so started
      -- Each update applied once; a replay for each first send that arrived
      -- (at most the 4 in flight).
      assert.equal(6, #log - stats.idempotent_replays)
      assert.is_true(stats.idempotent_replays <= 4)
      host.close(c)
    end },

  { title = "stops a batch when on_progress raises, and the next batch runs clean",
    run = function(host)
      local c = client(host)
      local requests = staggered_gets(4)
      local started = host.now()
      local ok, err = pcall(host.run, function()
        return c:batch(requests, { on_progress = function() error("stop here", 0) end })
      end)
      -- The run returned at the first answer: the stopped calls hold nothing on the host.
      local elapsed = host.now() - started
      assert.is_false(ok)
      assert.equal("stop here", err)
      assert.is_true(elapsed >= 0.2 and elapsed < 0.6, ("took %.2f s"):format(elapsed))
      local results = host.run(function() return c:batch(requests) end)
      for i, r in ipairs(results) do assert.equal(tostring(10000002 + i), r[1].id) end
      host.close(c)
    end },

  { title = "closes the connections of the calls a raising on_progress stopped, raises its very error, "
      .. "and the next call runs",
    run = function(host)
      without_collector(function()
        local c = client(host)
        local raised = { "stop here" }   -- a table: the very value must come back
        local before = open_sockets()
        local ok, err = pcall(host.run, function()
          return c:batch(staggered_gets(4), { on_progress = function() error(raised, 0) end })
        end)
        assert.is_false(ok)
        assert.equal(raised, err)
        -- The first call's connection went back to the pool before on_progress
        -- raised; the three calls then in flight had theirs closed.
        assert.equal(before + 1, open_sockets())
        host.close(c)
        assert.equal(before, open_sockets())
        local record, response = host.run(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
        assert.equal("10000003", record.id)
        assert.is_false(response.info.reused)
        host.close(c)
      end)
    end },

  { title = "closes the connection a stopped worker holds while it waits on something else (its sink sleeping)",
    run = function(host)
      local c = client(host)
      assert_stopped(host, c, {
        function()
          c.unified_api:get("crm", "opportunities", "10000003", Q, { sink = function() c.transport.sleep(5) end })
        end,
        function()
          local opts = delayed(200)
          opts.sink = function() error("sink stops", 0) end
          c.unified_api:get("crm", "opportunities", "10000004", Q, opts)
        end,
      }, "sink stops")
      host.close(c)
    end },

  { title = "stops a batch that its caller's own batch stops, closing its connections",
    run = function(host)
      local c = client(host)
      assert_stopped(host, c, {
        function()
          local requests = staggered_gets(3)
          for _, r in ipairs(requests) do r.opts = delayed(1000) end
          c:batch(requests)
        end,
        function()
          c.transport.sleep(0.2)
          error("outer stops", 0)
        end,
      }, "outer stops")
      assert.equal(3, #emu.requests())
      host.close(c)
    end },

  { title = "refuses a call outside {outside}, with kind \"phase\"",
    run = function(host)
      local c = client(host)
      local record, err = c.unified_api:get("crm", "opportunities", "10000003", Q)
      assert.is_nil(record)
      assert.equal("phase", err.kind)
      assert.equal(host.phase_message, err.message)
      assert.is_false(err.retryable)
      -- Where the host runs code that cannot yield to it.
      record, err = host.unyieldable(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
      assert.is_nil(record)
      assert.equal("phase", err.kind)
      -- A batch outside: each call fails so.
      local results = c:batch { { api = "unified", method = "get", model = "crm", resource = "opportunities",
                                  id = "10000003", query = Q } }
      assert.is_nil(results[1][1])
      assert.equal("phase", results[1][2].kind)
      assert.same({}, emu.requests())
      host.close(c)
    end },

  { title = "keeps the connection alive between calls, until client:close(), and {loop} still returns",
    run = function(host)
      local c = client(host)
      local reused = host.run(function()
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
      -- The run returned with the last connection kept alive: it does not hold the host.
      assert.same({ false, true, true, false }, reused)
      host.close(c)
    end },

  { title = "waits a 429's Retry-After without blocking {others}",
    run = function(host)
      local c = client(host, { max_retries = 2 })
      emu.faults { { method = "GET", path_prefix = PREFIX, status = 429, retry_after = "1", count = 1 } }
      local tick = host.ticker(1)
      local started = host.now()
      local record, response = run_ticked(host, tick, function()
        return c.unified_api:get("crm", "opportunities", "10000003", Q)
      end)
      local elapsed = host.now() - started
      assert.equal("10000003", record.id)
      assert.equal(2, response.attempts)
      assert.is_true(elapsed >= 1 and elapsed < 1.5, ("took %.2f s"):format(elapsed))
      assert.is_true(tick.ticks >= 15, "ticks: " .. tick.ticks)
      host.close(c)
    end },

  { title = "times an attempt out, and ends the call at retry.deadline",
    run = function(host)
      local c = client(host, { max_retries = 0, timeout = 0.5 })
      local tick = host.ticker(0.5)
      local started = host.now()
      local record, err = run_ticked(host, tick, function()
        return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(2000))
      end)
      local elapsed = host.now() - started
      assert.is_nil(record)
      assert.equal("timeout", err.kind)
      assert.equal("timed out reading the response", err.message)
      assert.is_true(elapsed >= 0.5 and elapsed < 0.8, ("took %.2f s"):format(elapsed))
      assert.is_true(tick.ticks >= 7, "ticks: " .. tick.ticks)
      host.close(c)

      c = client(host, { max_retries = 5, timeout = 4.5, retry = { deadline = 1 } })
      started = host.now()
      record, err = host.run(function()
        return c.unified_api:get("crm", "opportunities", "10000003", Q, delayed(3000))
      end)
      elapsed = host.now() - started
      assert.is_nil(record)
      assert.equal("timeout", err.kind)
      assert.equal(1, err.attempts)
      assert.is_true(elapsed >= 0.95 and elapsed < 1.3, ("took %.2f s"):format(elapsed))
      host.close(c)
      host.idle(2.2)   -- the emulator still holds the delayed requests
    end },

  { title = "fails to connect with kind \"connect\", retryable",
    run = function(host)
      local c = client(host, { base_url = "http://127.0.0.1:9", max_retries = 0 })
      local record, err = host.run(function() return c.unified_api:get("crm", "opportunities", "1", Q) end)
      assert.is_nil(record)
      assert.equal("connect", err.kind)
      assert.equal("connecting to 127.0.0.1:9 failed: " .. host.refused, err.message)
      assert.is_true(err.retryable)
      host.close(c)
    end },
}

-- ---- over https, against an emulator of the spec's own ----------------

-- A client of server (an emulator serving https); options override the
-- defaults, false leaving one out.
local function https_client(host, server, options)
  local o = { transport = host.name, token = emu.TOKEN, base_url = server.base_url, ca_file = server.ca_file,
              max_retries = 0 }
  for k, v in pairs(options or {}) do
    if v == false then v = nil end
    o[k] = v
  end
  return truto.new(o)
end

-- These cases take, after the host, a table whose `server` is an emulator
-- serving https (started by the spec's setup, after they are declared).
_M.over_https = {
  { title = "updates an opportunity at https://127.0.0.1 (verified by IP address), keeping the connection alive",
    run = function(host, tls)
      local server = tls.server
      local c = https_client(host, server)
      local outcomes = host.run(function()
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
      host.close(c)
    end },

  { title = "verifies https://localhost by name (SNI), and runs 8 calls of 1 s concurrently in under 2 s",
    run = function(host, tls)
      local server = tls.server
      local c = https_client(host, server, { base_url = server.base_url:gsub("127%.0%.0%.1", "localhost") })
      assert_concurrent_batch(host, c)
      host.close(c)
    end },

  { title = "fails verification with kind \"tls\", not retried, nothing sent, without the server's CA",
    run = function(host, tls)
      local server = tls.server
      local c = https_client(host, server, { ca_file = false, max_retries = 2 })
      local record, err = host.run(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
      assert.is_nil(record)
      assert.equal("tls", err.kind)
      assert.equal("TLS handshake with 127.0.0.1 failed: unable to get local issuer certificate", err.message)
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.same({}, assert(server:requests()))
      host.close(c)
    end },

  { title = "with insecure = true, takes a certificate it cannot verify",
    run = function(host, tls)
      local server = tls.server
      local c = https_client(host, server, { ca_file = false, insecure = true })
      local record = host.run(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
      assert.equal("10000003", record.id)
      host.close(c)
    end },

  { title = "a bad ca_file: kind \"tls\" saying why",
    run = function(host, tls)
      local server = tls.server
      local c = https_client(host, server, { ca_file = "/nonexistent/ca.pem" })
      local record, err = host.run(function() return c.unified_api:get("crm", "opportunities", "10000003", Q) end)
      assert.is_nil(record)
      assert.equal("tls", err.kind)
      assert.equal("TLS handshake with 127.0.0.1 failed: " .. host.bad_ca_file, err.message)
      host.close(c)
    end },
}

return _M

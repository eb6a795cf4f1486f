-- client:batch over the libcurl multi handle, against the emulator.
local truto = require "truto"
local core = require "truto.core"
local emu = require "spec.support.emulator"

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }

local function update(id, amount, extra)
  local r = { api = "unified", method = "update", model = "crm", resource = "opportunities", id = id,
              body = { amount = amount }, query = Q }
  for k, v in pairs(extra or {}) do r[k] = v end
  return r
end

describe("client:batch", function()
  local client

  setup(function()
    emu.start()
    client = emu.client { sleep = function() end }
  end)

  teardown(function()
    client:close()
    emu.stop()
  end)

  before_each(function() emu.reset() end)

  it("returns results in request order, each { result, response }", function()
    local requests = {}
    for i = 1, 40 do
      -- later requests answer sooner, so completion order is not request order
      requests[i] = update(tostring(10000003 + (i - 1) % 27), i,
        { opts = { headers = { ["X-Emulator-Delay-Ms"] = tostring((40 - i) * 5) } } })
    end
    local results = client:batch(requests, { concurrency = 40 })
    assert.equal(40, #results)
    for i, r in ipairs(results) do
      assert.equal(i, r[1].amount)
      assert.equal(200, r[2].status)
    end
    assert.equal(40, #emu.requests())
  end)

  it("runs every kind of operation", function()
    local results = client:batch {
      { api = "unified", method = "list", model = "crm", resource = "users", query = Q },
      { api = "unified", method = "get", model = "crm", resource = "opportunities", id = "a/b", query = Q },
      { api = "unified", method = "create", model = "crm", resource = "contacts", body = { first_name = "A" },
        query = Q },
      { api = "unified", method = "custom_method", model = "crm", resource = "accounts", name = "merge",
        body = { ids = { "5001", "5002" } }, query = Q },
      { api = "unified", method = "meta", model = "crm", resource = "opportunities", name = "update", query = Q },
      { api = "proxy", method = "get", resource = "deals", id = "23423523", query = Q },
      { api = "custom", method = "post", path = "reports/weekly", body = { n = 1 }, query = Q },
    }
    assert.equal(3, #results[1][1].result)
    assert.equal("a/b", results[2][1].id)
    assert.equal(201, results[3][2].status)
    assert.same({ "5002" }, results[4][1].result.merged_ids)
    assert.equal("update", results[5][1].method)
    assert.equal("23423523", results[6][1].id)
    assert.same({ "reports", "weekly" }, results[7][1].result.segments)
  end)

  it("keeps at most `concurrency` requests in flight", function()
    local requests = {}
    for i = 1, 24 do
      requests[i] = { api = "unified", method = "get", model = "crm", resource = "users", id = "111", query = Q,
                      opts = { headers = { ["X-Emulator-Delay-Ms"] = "200" } } }
    end
    local started = core.now()
    local results = client:batch(requests, { concurrency = 4 })
    local elapsed = core.now() - started
    for _, r in ipairs(results) do assert.equal("111", r[1].id) end
    -- 24 calls of 200 ms, 4 at a time: six rounds; 24 at a time would be one
    assert.is_true(elapsed >= 1.2, ("took %.2f s"):format(elapsed))
    assert.is_true(elapsed < 2.4, ("took %.2f s"):format(elapsed))
  end)

  it("is much faster than one call after another", function()
    local requests = {}
    for i = 1, 32 do
      requests[i] = update(tostring(10000003 + i % 27), i, { opts = { headers = { ["X-Emulator-Delay-Ms"] = "50" } } })
    end
    local started = core.now()
    client:batch(requests, { concurrency = 16 })
    local elapsed = core.now() - started
    assert.is_true(elapsed < 32 * 0.05 / 4, ("took %.2f s"):format(elapsed))
  end)

  it("reports each request's own failure, retries each on its own, and keeps the others", function()
    emu.faults {
      { method = "PATCH", path_prefix = "/unified/crm/opportunities/10000005", status = 502, count = 1 },
      { method = "PATCH", path_prefix = "/unified/crm/opportunities/10000006", status = 503, count = 1 },
    }
    local results = client:batch {
      update("10000004", 4),
      update("10000005", 5),
      update("10000006", 6),
      update("missing", 7),
      { api = "unified", method = "get", model = "crm", resource = "users", id = "111", query = Q,
        opts = { timeout = 0.2, max_retries = 0, headers = { ["X-Emulator-Delay-Ms"] = "1000" } } },
    }
    assert.equal(4, results[1][1].amount)
    assert.equal(5, results[2][1].amount)
    assert.equal(2, results[2][2].attempts)
    assert.is_nil(results[3][1])
    assert.equal(503, results[3][2].status)
    assert.equal(1, results[3][2].attempts)
    assert.equal(404, results[4][2].status)
    assert.equal("timeout", results[5][2].kind)
    -- the retried write went out under one idempotency key and was applied once
    assert.equal(1, emu.stats().writes[ACCOUNT .. "/crm/opportunities/10000005"])
  end)

  it("returns what a single call returns: a record decoded in C, an error envelope, an invalid JSON answer", function()
    local function get(id, headers)
      return { api = "unified", method = "get", model = "crm", resource = "users", id = id, query = Q,
               opts = { max_retries = 0, headers = headers } }
    end
    local requests = { get("111"), get("missing"), get("111", { ["X-Emulator-Fault"] = "malformed" }) }
    -- What the multi handle is asked and hands back: only the 2xx JSON
    -- answer comes decoded (its string never made).
    local transport = client.transport
    local multi, flags, bodies = transport:multi(), {}, {}
    transport.multi_handle = {
      add = function(_, req)
        flags[#flags + 1] = req.decode_json
        return multi:add(req)
      end,
      wait = function(_, seconds)
        local done = multi:wait(seconds)
        for _, f in ipairs(done) do bodies[#bodies + 1] = type(f.body) end
        return done
      end,
      abort = function() multi:abort() end,
    }
    finally(function() transport.multi_handle = multi end)
    local results = client:batch(requests)
    table.sort(bodies)
    assert.same({ { true, true, true }, { "string", "string", "table" } }, { flags, bodies })
    for i, r in ipairs(requests) do
      local result, second = client.unified_api:get("crm", "users", r.id, Q, r.opts)
      local batched = results[i][2]
      assert.same(result, results[i][1])
      -- The same outcome but for the answer's own date, request id, rate limit count and timings.
      for _, t in ipairs { second, batched } do
        local h = t.headers
        h.date, h["x-request-id"], h["ratelimit-remaining"], h["ratelimit-reset"] = nil, nil, nil, nil
        t.request_id, t.info, t.rate_limit = nil, nil, nil
      end
      assert.same(second, batched)
      assert.equal(getmetatable(second), getmetatable(batched))
      if result == nil then assert.equal(tostring(second), tostring(batched)) end
    end
    assert.equal("111", results[1][1].id)
    assert.same({ 404, "http" }, { results[2][2].status, results[2][2].kind })
    assert.same({ "decode", 200, '{"result": [{"id": "1", "name": "trunc' },
      { results[3][2].kind, results[3][2].status, results[3][2].body })
    assert.matches("^response is not valid JSON: ", results[3][2].message)
  end)

  it("retries each request when it is due, earliest first, without holding up the others", function()
    -- One at a time, so the order is the client's alone: A is told to wait
    -- 1 s, B 0 s, C 2 s; D succeeds at once.  A retry joins the waiting ones
    -- by its due time: B's is due before C is even sent, then A's (1 s), then
    -- C's (2 s), although C failed last.
    emu.faults {
      { method = "GET", path_prefix = "/unified/crm/users/111", status = 429, retry_after = "1", count = 1 },
      { method = "GET", path_prefix = "/unified/crm/users/112", status = 429, retry_after = "0", count = 1 },
      { method = "GET", path_prefix = "/unified/crm/users/113", status = 429, retry_after = "2", count = 1 },
    }
    local started = {}   -- started[path][attempt]: when the attempt began
    local timed = emu.client { on_request = function(request, attempt)
      local path = request.url:match("^https?://[^/]+([^?]*)")
      started[path] = started[path] or {}
      started[path][attempt] = core.now()
    end }
    local function get(resource, id)
      return { api = "unified", method = "get", model = "crm", resource = resource, id = id, query = Q }
    end
    local t0 = core.now()
    local requests = { get("users", "111"), get("users", "112"), get("users", "113"), get("contacts", "7001") }
    local results = timed:batch(requests, { concurrency = 1 })
    local elapsed = core.now() - t0
    timed:close()

    local outcome = {}
    for i, r in ipairs(results) do outcome[i] = { r[1] and r[1].id, r[2].status, r[2].attempts } end
    assert.same({ { "111", 200, 2 }, { "112", 200, 2 }, { "113", 200, 2 }, { "7001", 200, 1 } }, outcome)

    local order = {}
    for i, entry in ipairs(emu.requests()) do order[i] = entry.path end
    assert.same({
      "/unified/crm/users/111", "/unified/crm/users/112",
      "/unified/crm/users/112",                                   -- B's retry, due at once
      "/unified/crm/users/113", "/unified/crm/contacts/7001",
      "/unified/crm/users/111",                                   -- A's retry, due after 1 s
      "/unified/crm/users/113",                                   -- C's retry, due after 2 s
    }, order)

    local a, b, c = started["/unified/crm/users/111"], started["/unified/crm/users/112"],
      started["/unified/crm/users/113"]
    assert.is_true(a[2] - a[1] >= 1, "A retried too early")
    assert.is_true(c[2] - c[1] >= 2, "C retried too early")
    assert.is_true(b[2] - t0 < 0.5, ("B's retry waited %.2f s"):format(b[2] - t0))
    assert.is_true(started["/unified/crm/contacts/7001"][1] - t0 < 0.5, "D was held up")
    assert.is_true(elapsed < 3, ("took %.2f s"):format(elapsed))
  end)

  it("waits for rate-limit slots without holding up the requests in flight", function()
    -- Two slots per 2 s: the third request waits 2 s for its slot while the
    -- first two, answered after 0.5 s, are served meanwhile (a blocking
    -- wait would let their 1.5 s timeout pass).
    emu.faults { { method = "GET", delay_ms = 500, count = 2 } }
    local paced = emu.client { timeout = 1.5, max_retries = 0, rate_limit = { requests = 2, per = 2 } }
    local requests = {}
    for i = 1, 3 do
      requests[i] = { api = "unified", method = "get", model = "crm", resource = "contacts", id = tostring(7000 + i),
                      query = Q }
    end
    local t0 = core.now()
    local results = paced:batch(requests, { concurrency = 3 })
    local elapsed = core.now() - t0
    paced:close()
    for _, r in ipairs(results) do assert.equal(200, r[2].status, tostring(r[2].message)) end
    assert.is_true(elapsed >= 2 and elapsed < 2.8, ("took %.2f s"):format(elapsed))
    local log = emu.requests()
    assert.is_true(log[3].time - log[1].time >= 2 - 0.01, "the third request did not wait for its slot")
  end)

  it("calls on_progress once per settled request", function()
    local calls = {}
    local results = client:batch({ update("10000004", 1), update("10000005", 2), update("missing", 3) }, {
      concurrency = 2,
      on_progress = function(done, total, index, result) calls[#calls + 1] = { done, total, index, result } end,
    })
    assert.equal(3, #calls)
    local indices = {}
    for k, c in ipairs(calls) do
      assert.equal(k, c[1])
      assert.equal(3, c[2])
      assert.equal(results[c[3]], c[4])
      indices[c[3]] = true
    end
    assert.same({ true, true, true }, indices)
  end)

  it("leaves the multi handle clean when on_progress raises: the next batches run in full", function()
    local requests = {}
    for i = 1, 12 do
      requests[i] = update(tostring(10000003 + i), i,
        { opts = { headers = { ["X-Emulator-Delay-Ms"] = tostring(i * 20) } } })
    end
    local ok, err = pcall(client.batch, client, requests, {
      concurrency = 12,
      on_progress = function(settled) if settled == 2 then error("stop here", 0) end end,
    })
    assert.is_false(ok)
    assert.equal("stop here", err)
    for _ = 1, 3 do
      local results = client:batch(requests, { concurrency = 12 })
      assert.equal(12, #results)
      for i, r in ipairs(results) do
        assert.equal(i, r[1] and r[1].amount, tostring(r[2]))
      end
    end
  end)

  it("follows redirects when the client does, with the same rules as a single call", function()
    local following = emu.client { follow_redirects = true, sleep = function() end }
    emu.faults { { method = "GET", path_prefix = "/unified/crm/opportunities/10000005", status = 307, count = 1,
                   headers = { Location = emu.base_url .. "/unified/crm/opportunities/10000006?integrated_account_id="
                     .. ACCOUNT } } }
    local results = following:batch {
      { api = "unified", method = "get", model = "crm", resource = "opportunities", id = "10000005", query = Q },
    }
    assert.equal("10000006", results[1][1].id, tostring(results[1][2]))
    assert.equal(1, results[1][2].info.redirects)
    assert.equal(1, results[1][2].attempts)
    following:close()
    -- Without follow_redirects the 3xx is the answer.
    emu.faults { { method = "GET", path_prefix = "/unified/crm/opportunities/10000005", status = 307, count = 1,
                   headers = { Location = "/x" } } }
    results = client:batch {
      { api = "unified", method = "get", model = "crm", resource = "opportunities", id = "10000005", query = Q },
    }
    assert.is_nil(results[1][1])
    assert.equal(307, results[1][2].status)
  end)

  it("stays usable after close(): the next call or batch opens a new connection", function()
    local c = emu.client {}
    assert.equal("10000005", c.unified_api:get("crm", "opportunities", "10000005", Q).id)
    c:close()
    c:close()
    local record, response = c.unified_api:get("crm", "opportunities", "10000005", Q)
    assert.equal("10000005", record.id, tostring(response))
    assert.equal(1, response.info.new_connections)
    local results = c:batch { update("10000005", 5) }
    assert.equal(5, results[1][1].amount)
    c:close()
    assert.equal(5, c:batch({ update("10000005", 5) })[1][1].amount)
    c:close()
  end)

  it("returns an empty list for no requests", function()
    assert.same({}, client:batch {})
  end)

  it("raises on a malformed request before sending anything", function()
    assert.has_error(function() client:batch("x") end, "bad argument #1 to 'batch' (requests must be a table, got string)")
    assert.has_error(function() client:batch({ update("1", 1), { api = "graphql", method = "get" } }) end,
      "batch request #2: api must be \"unified\", \"proxy\", \"custom\" or a platform resource such as "
      .. "\"integrated_accounts\", got graphql")
    assert.has_error(function() client:batch({ { api = "unified", method = "upsert" } }) end,
      "batch request #1: unified API has no method upsert")
    assert.has_error(function() client:batch({ update("", 1) }) end, "batch request #1: truto: id must not be empty")
    assert.has_error(function() client:batch({ update("1", 1, { body = "x" }) }) end,
      "batch request #1: bad argument #4 to 'update' (body must be a table, got string)")
    assert.has_error(function() client:batch({ update("1", 1, { opts = { sink = print } }) }) end,
      "batch request #1: a sink is not supported in a batch")
    assert.has_error(function() client:batch({}, { concurrency = 0 }) end,
      "batch: option 'concurrency' must be an integer from 1 to 1024")
    assert.equal(0, #emu.requests())
  end)

  it("runs one after another on a transport without concurrency", function()
    local seen = {}
    local fake = { perform = function(_, req)
      seen[#seen + 1] = req.url
      return 200, { ["content-type"] = "application/json" }, '{"n":' .. #seen .. '}'
    end }
    local c = truto.new { token = "t", base_url = "http://h", transport = fake }
    local results = c:batch { update("1", 1), update("2", 2) }
    assert.same({ { n = 1 }, { n = 2 } }, { results[1][1], results[2][1] })
    assert.equal(2, #seen)
  end)
end)

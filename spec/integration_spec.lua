-- The real client over real HTTP: libcurl on loopback to the emulator on nginx.
local truto = require "truto"
local emu = require "spec.support.emulator"
local shell = require "spec.support.shell"
local bodiless = require "spec.support.bodiless"
local platform_calls = require "spec.support.platform_calls"
local emulator = require "truto.emulator"
local rss_kb = shell.rss_kb

-- A forward HTTP proxy on nginx that marks what it forwards.
local PROXY_CONF = [[
@USER@
worker_processes 1;
daemon on;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log;
events { worker_connections 64; }
http {
    access_log off;
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            proxy_pass http://$http_host;
            proxy_set_header X-Via-Proxy lua-truto-spec;
        }
    }
}
]]

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }

local function query(extra)
  local q = { integrated_account_id = ACCOUNT }
  for k, v in pairs(extra or {}) do q[k] = v end
  return q
end

local function last_request()
  local log = emu.requests()
  return log[#log], #log
end

describe("the client against the emulator", function()
  local client

  setup(function()
    emu.start()
    client = emu.client()
  end)

  teardown(function()
    client:close()
    emu.stop()
  end)

  before_each(function() emu.reset() end)

  describe("the seed's update", function()
    it("sends the exact request, returns the record, and a get shows the change", function()
      local body = {
        name = "Acme renewal", amount = 125000.5, status = "won", currency = "USD",
        account = { id = "5002" }, owner = { id = "112" }, contact = { { id = "7001" } },
        stage = { id = "closedwon", name = "Closed Won" }, tags = {},
        custom_fields = { deal_source = "partner" }, close_date = "2027-03-31T00:00:00.000Z",
      }
      local q = query { truto_exclude_fields = { "description" }, remote_query = { foo = "bar" } }
      local record, response = client.unified_api:update("crm", "opportunities", "23423523", body, q)
      assert.is_table(record, tostring(response))
      assert.equal(200, response.status)
      assert.equal(1, response.attempts)
      assert.is_nil(rawget(response, "headers"))   -- built when first read, from the transport's block
      assert.equal("application/json", response.headers["content-type"])
      assert.equal(response.headers, response.headers)
      assert.equal("table", type(response.headers))
      local listed = {}
      for name, value in pairs(response.headers) do
        assert.same({ name:lower(), "string" }, { name, type(value) })
        listed[name] = value
      end
      assert.same({ "application/json", "50;w=10", "49" },
        { listed["content-type"], listed["ratelimit-limit"], listed["ratelimit-remaining"] })
      assert.is_nil(response.request_id)   -- the emulator sends no x-request-id
      assert.same({ limit = 50, remaining = 49, reset = response.rate_limit.reset, window = 10 }, response.rate_limit)

      local sent = last_request()
      assert.equal("PATCH", sent.method)
      assert.equal("/unified/crm/opportunities/23423523?integrated_account_id=" .. ACCOUNT
        .. "&remote_query%5Bfoo%5D=bar&truto_exclude_fields%5B%5D=description", sent.uri)
      assert.equal('{"account":{"id":"5002"},"amount":125000.5,"close_date":"2027-03-31T00:00:00.000Z",'
        .. '"contact":[{"id":"7001"}],"currency":"USD","custom_fields":{"deal_source":"partner"},'
        .. '"name":"Acme renewal","owner":{"id":"112"},"stage":{"id":"closedwon","name":"Closed Won"},'
        .. '"status":"won","tags":[]}', sent.body)
      assert.equal("Bearer test-token", sent.headers.authorization)
      assert.equal("application/json", sent.headers["content-type"])

      assert.equal("Acme renewal", record.name)
      assert.equal(125000.5, record.amount)
      assert.is_nil(record.description)
      assert.same({ foo = "bar" }, record.remote_data.remote_query)
      assert.equal("Acme renewal", record.remote_data.properties.dealname)
      assert.equal("[]", truto.encode_json(record.tags))

      local again = assert(client.unified_api:get("crm", "opportunities", "23423523", Q))
      assert.equal("Acme renewal", again.name)
      assert.equal("won", again.status)
      assert.same({ id = "closedwon", name = "Closed Won" }, again.stage)
      assert.equal("Opportunity 0 for Acme Corp", again.description)
      assert.equal(record.updated_at, again.updated_at)
    end)

    it("keeps ids with reserved characters one path segment", function()
      for _, id in ipairs { "alt:ref:imported@frontapp.com_t:50603", "a/b" } do
        local record = assert(client.unified_api:get("crm", "opportunities", id, Q))
        assert.equal(id, record.id)
      end
      assert.equal("/unified/crm/opportunities/a%2Fb", last_request().path)
    end)

    it("clears a field with truto.null", function()
      assert(client.unified_api:update("crm", "opportunities", "23423523", { description = truto.null }, Q))
      assert.equal('{"description":null}', last_request().body)
      local record = assert(client.unified_api:get("crm", "opportunities", "23423523", Q))
      assert.is_nil(record.description)
    end)
  end)

  describe("every verb", function()
    it("unified: list, get, create, delete, custom method, meta", function()
      local page = assert(client.unified_api:list("crm", "users", Q))
      assert.equal(3, #page.result)
      assert.equal(truto.null, page.next_cursor)

      local created, response = client.unified_api:create("crm", "contacts", { first_name = "Ada", tags = {} }, Q)
      assert.equal(201, response.status)
      assert.equal("90000001", created.id)
      assert.equal('{"first_name":"Ada","tags":[]}', last_request().body)

      local deleted = assert(client.unified_api:delete("crm", "contacts", created.id, Q))
      assert.same({ id = "90000001" }, deleted)
      local _, err = client.unified_api:get("crm", "contacts", created.id, Q)
      assert.equal(404, err.status)

      local merged = assert(client.unified_api:custom_method("crm", "accounts", "merge", { ids = { "5001", "5002" } }, Q))
      assert.equal("5001", merged.result.id)
      assert.same({ "5002" }, merged.result.merged_ids)

      local meta = assert(client.unified_api:meta("crm", "opportunities", "update", Q))
      assert.equal("update", meta.method)
      assert.is_table(meta.request_body_schema)
    end)

    it("proxy: list, get, create, update, delete, custom method", function()
      local page = assert(client.proxy_api:list("deals", query { limit = 2 }))
      assert.equal(2, #page.result)
      local deal = assert(client.proxy_api:get("deals", "23423523", Q))
      assert.equal("23423523", deal.id)
      local created, response = client.proxy_api:create("deals", { properties = { dealname = "New" } }, Q)
      assert.equal(201, response.status)
      local updated = assert(client.proxy_api:update("deals", created.id, { properties = { amount = "10" } }, Q))
      assert.same("New", updated.properties.dealname)
      assert.same("10", updated.properties.amount)
      assert.same({ id = created.id }, assert(client.proxy_api:delete("deals", created.id, Q)))
      local echoed = assert(client.proxy_api:custom_method("deals", "search", { q = "x" }, Q))
      assert.same({ method = "search", resource = "deals", body = { q = "x" } }, echoed.result)
    end)

    it("custom: get, post, put, patch, delete on a multi-segment path", function()
      for _, verb in ipairs { "get", "post", "put", "patch", "delete" } do
        local res
        if verb == "get" or verb == "delete" then
          res = assert(client.custom_api[verb](client.custom_api, "/reports/weekly", query { week = 3 }))
        else
          res = assert(client.custom_api[verb](client.custom_api, "reports/weekly", { n = 1 }, query { week = 3 }))
          assert.same({ n = 1 }, res.result.body)
        end
        assert.equal(verb:upper(), res.result.method)
        assert.same({ "reports", "weekly" }, res.result.segments)
        assert.same({ week = "3" }, res.result.query)
      end
    end)

    it("every platform method is among the calls below", function()
      local want, have = { "ping" }, {}
      for api, methods in pairs(require("truto.client").PARAMS) do
        for method in pairs(methods) do want[#want + 1] = api .. ":" .. method end
        if methods.list then want[#want + 1] = api .. ":each" end
      end
      for _, step in ipairs(platform_calls.STEPS) do have[#have + 1] = step[1] end
      table.sort(want)
      table.sort(have)
      assert.same(want, have)
    end)

    it("every platform method: the exact request and Truto's status, as the ngx transport sends it", function()
      local outcomes, ids = platform_calls.run(client)
      assert.same(platform_calls.expected_outcomes(), outcomes)
      assert.same(platform_calls.expected(ids, emu.TOKEN, truto.VERSION), platform_calls.received(emu.requests()))
    end)

    it("a POST, PUT or PATCH without a body: Content-Length: 0, as the ngx transport sends it", function()
      assert.same(bodiless.STATUSES, bodiless.calls(client, ACCOUNT))
      assert.same(bodiless.expected(ACCOUNT, { "accept-encoding" }), bodiless.received(emu.requests()))
    end)
  end)

  describe("response formats", function()
    it("unified, raw and normalized return decoded JSON", function()
      local unified = assert(client.unified_api:get("crm", "opportunities", "23423523",
        query { truto_response_format = "unified" }))
      assert.equal("23423523", unified.id)
      assert.is_table(unified.remote_data)
      local raw = assert(client.unified_api:get("crm", "opportunities", "23423523",
        query { truto_response_format = "raw" }))
      assert.equal(unified.name, raw.properties.dealname)
      local normalized = assert(client.unified_api:get("crm", "opportunities", "23423523",
        query { truto_response_format = "normalized" }))
      assert.is_nil(normalized.remote_data)
      assert.equal(unified.name, normalized.name)
      local bare = assert(client.unified_api:get("crm", "opportunities", "23423523",
        query { truto_ignore_remote_data = true, truto_exclude_fields = { "urls", "tags" } }))
      assert.is_nil(bare.remote_data)
      assert.is_nil(bare.urls)
      assert.is_nil(bare.tags)
      assert.equal(unified.name, bare.name)
    end)

    it("stream returns the body as text, or streams it to a sink", function()
      local text = assert(client.unified_api:list("crm", "opportunities", query { truto_response_format = "stream" }))
      local lines = {}
      for line in text:gmatch("[^\n]+") do lines[#lines + 1] = assert(truto.decode_json(line)) end
      assert.equal(30, #lines)
      assert.equal("23423523", lines[1].id)

      local chunks, joined = 0, {}
      local ok, response = client.unified_api:list("crm", "opportunities", query { truto_response_format = "stream" },
        { sink = function(chunk) chunks = chunks + 1 joined[#joined + 1] = chunk end })
      assert.is_true(ok)
      assert.equal("application/x-ndjson", response.headers["content-type"])
      assert.equal(text, table.concat(joined))
      assert.is_true(chunks > 1)
    end)

    it("keeps memory flat while 100 MB stream through a sink", function()
      -- The peak RSS while `bytes` stream, sampled every 4 MB; the chunks are
      -- Lua strings, collected there, so that what is measured is the
      -- library's memory, not the collector's pace.
      local function stream(bytes)
        local total, peak = 0, 0
        local ok = client.custom_api:get("blob", query { bytes = bytes }, {
          sink = function(chunk)
            if total % (4 * 1024 * 1024) + #chunk >= 4 * 1024 * 1024 then
              collectgarbage()
              peak = math.max(peak, rss_kb())
            end
            total = total + #chunk
          end,
          timeout = 60,
        })
        assert.is_true(ok)
        assert.equal(bytes, total)
        return peak
      end
      -- A first, smaller stream takes the one-time growth (buffers, and under
      -- ASan its quarantine): what is measured is what the size adds.
      stream(8 * 1024 * 1024)
      collectgarbage()
      local before = rss_kb()
      local peak = stream(100 * 1024 * 1024)
      assert.is_true(peak - before < 32 * 1024, ("RSS grew by %d KB"):format(peak - before))
    end)
  end)

  describe("pagination", function()
    it("list returns one page and its cursor; each walks every page", function()
      local page = assert(client.unified_api:list("crm", "opportunities", query { limit = 7 }))
      assert.equal(7, #page.result)
      assert.is_string(page.next_cursor)
      local second = assert(client.unified_api:list("crm", "opportunities",
        query { limit = 7, next_cursor = page.next_cursor }))
      assert.equal("10000006", page.result[7].id)
      assert.equal("10000007", second.result[1].id)

      emu.reset()
      local ids, seen = {}, {}
      for record, err in client.unified_api:each("crm", "opportunities", query { limit = 7 }) do
        assert.is_nil(err)
        assert.is_nil(seen[record.id])
        seen[record.id] = true
        ids[#ids + 1] = record.id
      end
      assert.equal(30, #ids)
      assert.equal("23423523", ids[1])
      assert.equal("10000029", ids[30])
      assert.equal(5, select(2, last_request()))   -- 7+7+7+7+2
    end)

    it("each over the proxy API too", function()
      local n = 0
      for record in client.proxy_api:each("deals", query { limit = 4 }) do
        assert.is_string(record.id)
        n = n + 1
      end
      assert.equal(30, n)
    end)
  end)

  describe("errors", function()
    it("http: Truto's envelope, decoded", function()
      local record, err = client.unified_api:get("crm", "opportunities", "missing", Q)
      assert.is_nil(record)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal(404, err.body.statusCode)
      assert.equal("Not Found", err.body.error)
      assert.is_true(err.body.truto_is_remote_error)
      assert.is_not_nil(err.body.raw_response)
      assert.equal("truto: GET /unified/crm/opportunities/missing: 404 Not Found: " .. err.message, tostring(err))
    end)

    it("http: missing required fields carry truto_error_insight", function()
      local _, err = client.unified_api:create("crm", "opportunities", { amount = 1 }, Q)
      assert.equal(400, err.status)
      assert.same({ "name" }, err.body.truto_error_insight.missing_required_body_fields.value)
    end)

    it("http: a wrong token, a missing account, a blocked account (never retried)", function()
      local bad = emu.client { token = "wrong-token" }
      local _, err = bad.unified_api:list("crm", "users", Q)
      assert.equal(401, err.status)
      assert.is_nil(tostring(err):find("wrong-token", 1, true))
      bad:close()

      _, err = client.unified_api:list("crm", "users")
      assert.equal(400, err.status)
      assert.matches("integrated_account_id", err.message)

      local before = select(2, last_request())
      _, err = client.unified_api:list("crm", "users", { integrated_account_id = "blocked-account" })
      assert.equal(503, err.status)
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.equal(before + 1, select(2, last_request()))
    end)

    it("timeout, connect, network, protocol, decode and too_large", function()
      local _, err = client.unified_api:get("crm", "users", "111", Q,
        { timeout = 0.2, headers = { ["X-Emulator-Delay-Ms"] = "2000" }, max_retries = 0 })
      assert.equal("timeout", err.kind)

      local closed = truto.new { token = "t", base_url = "http://127.0.0.1:1", max_retries = 0 }
      _, err = closed.unified_api:get("crm", "users", "111", Q)
      assert.equal("connect", err.kind)
      closed:close()

      _, err = client.unified_api:get("crm", "users", "111", Q, { headers = { ["X-Emulator-Fault"] = "drop" },
                                                              max_retries = 0 })
      assert.equal("network", err.kind)

      _, err = client.unified_api:get("crm", "users", "111", Q, { headers = { ["X-Emulator-Fault"] = "truncate" },
                                                              max_retries = 0 })
      assert.equal("protocol", err.kind)

      _, err = client.unified_api:get("crm", "users", "111", Q, { headers = { ["X-Emulator-Fault"] = "malformed" } })
      assert.equal("decode", err.kind)
      assert.equal(200, err.status)

      _, err = client.custom_api:get("blob", query { bytes = 100000 }, { max_response_bytes = 50000 })
      assert.equal("too_large", err.kind)
    end)

    it("reports a 2xx body that is not valid JSON by the reader's message, near its start or megabytes in", function()
      local function decode_error(err)
        return { kind = err.kind, status = err.status, type = err.headers["content-type"], message = err.message,
                 body = err.body }
      end
      local _, err = client.unified_api:get("crm", "users", "111", Q, { headers = { ["X-Emulator-Fault"] = "malformed" } })
      assert.same({ kind = "decode", status = 200, type = "application/json",
                    message = "response is not valid JSON: unterminated string at byte 39",
                    body = '{"result": [{"id": "1", "name": "trunc' }, decode_error(err))
      -- 8 MiB, broken at 6 MiB + 100 (inside a record's padding): the
      -- libcurl session gives the buffer back as it decodes, keeping its start.
      local at = 6 * 1024 * 1024 + 100
      _, err = client.custom_api:get("blob", query { bytes = 8 * 1024 * 1024, invalid_at = at })
      assert.same({ kind = "decode", status = 200, type = "application/json",
                    message = "response is not valid JSON: control character in string at byte " .. at,
                    body = '{"result":[{"id":"00000001","padding":"' .. ("x"):rep(961) }, decode_error(err))
      -- the same document whole is read
      local blob = assert(client.custom_api:get("blob", query { bytes = 8 * 1024 * 1024 }))
      assert.equal(8184, #blob.result)
      -- and the same two through a batch (the multi handle keeps its buffers whole)
      local results = client:batch {
        { api = "custom", method = "get", path = "blob", query = query { bytes = 8 * 1024 * 1024, invalid_at = at } },
        { api = "custom", method = "get", path = "blob", query = query { bytes = 8 * 1024 * 1024 } },
      }
      assert.is_nil(results[1][1])
      assert.same({ kind = "decode", status = 200, type = "application/json",
                    message = "response is not valid JSON: control character in string at byte " .. at,
                    body = '{"result":[{"id":"00000001","padding":"' .. ("x"):rep(961) }, decode_error(results[1][2]))
      assert.equal(8184, #results[2][1].result)
    end)

    it("an error body does not go to the sink", function()
      local got = {}
      local ok, err = client.unified_api:get("crm", "opportunities", "missing", Q,
        { sink = function(c) got[#got + 1] = c end })
      assert.is_nil(ok)
      assert.equal(404, err.status)
      assert.equal(404, err.body.statusCode)
      assert.same({}, got)
    end)
  end)

  describe("through an HTTP proxy", function()
    local proxy

    setup(function() proxy = assert(emulator.nginx { text = PROXY_CONF, kind = "truto-proxy" }) end)
    teardown(function() proxy:stop() end)

    it("goes through the proxy option", function()
      local via = emu.client { proxy = proxy.base_url }
      local record = assert(via.unified_api:get("crm", "users", "111", Q))
      assert.equal("111", record.id)
      assert.equal("lua-truto-spec", last_request().headers["x-via-proxy"])
      via:close()
      assert(client.unified_api:get("crm", "users", "111", Q))
      assert.is_nil(last_request().headers["x-via-proxy"])
    end)

    it("goes through the http_proxy environment variable", function()
      local out = shell.capture("env http_proxy=" .. shell.quote(proxy.base_url) .. " no_proxy= NO_PROXY="
        .. " TRUTO_API_TOKEN=test-token TRUTO_BASE_URL=" .. shell.quote(emu.base_url)
        .. " bin/truto unified get crm users 111 -a " .. ACCOUNT)
      assert.equal("111", truto.decode_json(out).id)
      assert.equal("lua-truto-spec", last_request().headers["x-via-proxy"])
    end)
  end)

  describe("retries over the wire", function()
    it("a GET succeeds after a 429 with Retry-After", function()
      emu.faults { { method = "GET", path_prefix = "/unified/crm/users", status = 429, retry_after = "0", count = 1 } }
      local page, response = client.unified_api:list("crm", "users", Q)
      assert.equal(3, #page.result)
      assert.equal(2, response.attempts)
      assert.equal(2, select(2, last_request()))
    end)

    it("a PATCH whose response is lost is retried under its key and applied once", function()
      local auto = emu.client { idempotency = "auto", sleep = function() end }
      emu.faults { { method = "PATCH", path_prefix = "/unified/crm/opportunities", fault = "drop", count = 1 } }
      local record, response = auto.unified_api:update("crm", "opportunities", "10000005", { amount = 777 }, Q)
      assert.equal(777, record.amount)
      assert.equal(2, response.attempts)
      local log = emu.requests()
      assert.equal(2, #log)
      assert.equal(log[1].headers["idempotency-key"], log[2].headers["idempotency-key"])
      assert.equal(1, emu.stats().writes[ACCOUNT .. "/crm/opportunities/10000005"])
      auto:close()
    end)
  end)
end)

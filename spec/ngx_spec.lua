-- The library inside a real nginx: an "app" server (spec/ngx/nginx.conf.in,
-- handlers in spec/ngx/truto_app.lua) whose handlers call the emulator with
-- the ngx (cosocket) transport.  Everything is driven from here over HTTP.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local truto = require "truto"
local emu = require "spec.support.emulator"
local sh = require "spec.support.shell"
local bodiless = require "spec.support.bodiless"
local platform_calls = require "spec.support.platform_calls"
local ngx_app = require "spec.support.ngx_app"
local memory = require "spec.support.memory"

local ACCOUNT = emu.ACCOUNT
local shell_quote, capture = sh.quote, sh.capture

local start_app, error_log = ngx_app.start_app, ngx_app.error_log

local app             -- the app server (a truto.emulator.nginx handle)

--- HTTP to the app ----------------------------------------------------------

local session
local target          -- the server request() talks to

-- setup and teardown for a describe block: the emulator, then start() ->
-- the server request() talks to, and a session; all stopped in teardown,
-- or at once when setup fails.
local function with_server(start)
  local server
  setup(function()
    local ok, err = pcall(function()
      emu.start()
      server = start()
      target = server
      session = curl_core.session { timeout = 60 }
    end)
    if not ok then
      if server then server:stop() end
      emu.stop()
      error(err, 0)
    end
  end)

  teardown(function()
    if session then session:close() end
    session, target = nil, nil
    if server then server:stop() end
    emu.stop()
  end)
end

-- Returns status, headers, body text (the body text is nil with a sink).
local function request(method, path, options)
  options = options or {}
  local headers = {}
  for name, value in pairs(options.headers or {}) do headers[#headers + 1] = name .. ": " .. value end
  local status, rheaders, body = session:perform {
    method = method, url = target.base_url .. path, headers = headers, body = options.body, sink = options.sink,
    timeout = options.timeout or 30,
  }
  assert(status, "request to " .. target.kind .. " failed: " .. tostring(rheaders and rheaders.message) .. "\n"
    .. target:log())
  return status, rheaders, body
end

local function json_request(method, path, options)
  local status, headers, body = request(method, path, options)
  local value = truto.decode_json(body or "")
  assert(value ~= nil, ("%s %s answered %d with a body that is not JSON: %s\n%s")
    :format(method, path, status, tostring(body), target:log()))
  return status, value, headers
end

-- Several requests at once with the curl CLI.  Returns the lines curl wrote
-- with -w (one per request), and the wall time in seconds.
local function parallel(paths, write_out)
  local parts = { "curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max", #paths, "--max-time 30",
                  "-w", shell_quote(write_out .. "\n") }
  for _, path in ipairs(paths) do
    parts[#parts + 1] = "-o /dev/null " .. shell_quote(app.base_url .. path)
  end
  local started = core.now()
  local out = capture(table.concat(parts, " "))
  local wall = core.now() - started
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines, wall
end

local function worker_memory()
  local status, value = json_request("GET", "/worker")
  assert(status == 200)
  return value
end

-- The concurrency figure, written where TRUTO_NGX_SPEC_REPORT says (silent otherwise).
local function report(line)
  local path = os.getenv("TRUTO_NGX_SPEC_REPORT")
  if path and path ~= "" then
    local f = io.open(path, "a")
    if f then
      f:write(line, "\n")
      f:close()
    end
  end
end

local function seeded_ids()
  local ids = { "23423523", "alt:ref:imported@frontapp.com_t:50603", "a/b" }
  for n = 10000003, 10000029 do ids[#ids + 1] = tostring(n) end
  return ids
end

describe("inside nginx (the ngx transport)", function()
  with_server(function()
    app = start_app { BASE_URL = emu.base_url }
    return app
  end)

  before_each(function() emu.reset() end)

  it("truto.new{} picks the cosocket transport inside nginx", function()
    local status, value = json_request("GET", "/transport")
    assert.equal(200, status)
    assert.is_true(value.ngx)
  end)

  it("never loads libcurl: none in the worker after a call (this process, on libcurl, has it)", function()
    local status, record = json_request("GET", "/opportunity/get?id=23423523")
    assert.equal(200, status, app:log())
    assert.equal("23423523", record.id)
    assert.is_false(worker_memory().libcurl)
    assert.is_true(memory.mapped("libcurl"))
  end)

  it("updates an opportunity from a content handler; the emulator has the change", function()
    local status, record, headers = json_request("PATCH", "/opportunity?id=23423523", {
      headers = { ["Content-Type"] = "application/json" },
      body = '{"name":"Renewal from nginx","amount":4200.5,"tags":[],"stage":{"id":"closedwon"}}',
    })
    assert.equal(200, status, app:log())
    assert.equal("1", headers["x-truto-attempts"])
    assert.equal("23423523", record.id)
    assert.equal("Renewal from nginx", record.name)
    assert.equal(4200.5, record.amount)
    assert.equal("[]", truto.encode_json(record.tags))

    local log = emu.requests()
    assert.equal(1, #log)
    assert.equal("PATCH", log[1].method)
    assert.equal("/unified/crm/opportunities/23423523?integrated_account_id=" .. ACCOUNT, log[1].uri)
    assert.equal('{"amount":4200.5,"name":"Renewal from nginx","stage":{"id":"closedwon"},"tags":[]}', log[1].body)
    assert.equal("Bearer test-token", log[1].headers.authorization)

    local client = emu.client()
    local again = assert(client.unified_api:get("crm", "opportunities", "23423523", { integrated_account_id = ACCOUNT }))
    client:close()
    assert.equal("Renewal from nginx", again.name)
    assert.equal(4200.5, again.amount)
    assert.equal("closedwon", again.stage.id)
    assert.equal(record.updated_at, again.updated_at)
  end)

  it("lists every record through each(), page after page", function()
    local status, value = json_request("GET", "/opportunities?limit=7")
    assert.equal(200, status, app:log())
    assert.equal(30, value.count)
    assert.same(seeded_ids(), value.ids)
    local log = emu.requests()
    assert.equal(5, #log)   -- 7 + 7 + 7 + 7 + 2
    for i, entry in ipairs(log) do
      assert.equal("GET", entry.method)
      assert.equal("/unified/crm/opportunities", entry.path)
      assert.truthy(entry.query:find("limit=7", 1, true))
      assert.equal(i > 1, entry.query:find("next_cursor=", 1, true) ~= nil)
    end
  end)

  it("streams 50 MB through a sink to the client with a flat worker memory", function()
    local bytes = 50 * 1024 * 1024
    local pid = worker_memory().pid
    -- Reset the worker's peak RSS (VmHWM) so it measures this request only.
    local reset = io.open("/proc/" .. pid .. "/clear_refs", "w")
    if reset then
      reset:write("5")
      reset:close()
    end
    local before = worker_memory()

    local received, head, tail = 0, nil, ""
    local status = request("GET", "/blob?bytes=" .. bytes, {
      sink = function(chunk)
        received = received + #chunk
        head = head or chunk:sub(1, 11)
        tail = (tail .. chunk):sub(-2)
      end,
    })
    assert.equal(200, status, app:log())
    assert.equal(bytes, received)
    assert.equal('{"result":[', head)
    assert.equal("]}", tail)

    local after = worker_memory()
    assert.equal(pid, after.pid)
    local peak_growth_kb = (reset and after.hwm_kb or after.rss_kb) - before.rss_kb
    report(("stream: %d MiB relayed, worker peak RSS growth %d kB"):format(bytes // 1048576, peak_growth_kb))
    assert.is_true(peak_growth_kb < 16 * 1024, ("the worker grew by %d kB for a %d kB body")
      :format(peak_growth_kb, bytes // 1024))
  end)

  it("sends a POST, PUT or PATCH without a body with Content-Length: 0, as libcurl does", function()
    local status, value = json_request("GET", "/bodiless")
    assert.equal(200, status, app:log())
    assert.same(bodiless.STATUSES, value.statuses)
    assert.same(bodiless.expected(ACCOUNT, { "accept-encoding" }), bodiless.received(emu.requests()))
  end)

  it("sends every platform method's exact request and gets Truto's status, as libcurl does", function()
    local status, value = json_request("GET", "/platform")
    assert.equal(200, status, app:log())
    assert.same(platform_calls.expected_outcomes(), value.outcomes)
    assert.same(platform_calls.expected(value.ids, emu.TOKEN, truto.VERSION), platform_calls.received(emu.requests()))
  end)

  it("receives a webhook registered with client.webhooks and sent by its test, signed with its secret", function()
    local client = emu.client()
    local webhook = assert(client.webhooks:create { target_url = app.base_url .. "/webhook" })
    assert.equal(36, #webhook.secret)
    assert.equal(200, (json_request("PUT", "/webhook/secret", { body = webhook.secret })))
    local ok, err = pcall(function()
      assert.same({ success = true }, assert(client.webhooks:test(webhook.id)))
      local status, received = json_request("GET", "/webhook/received")
      assert.equal(200, status, app:log())
      local event = truto.decode_json(received.body)
      assert.equal("test", event.event)
      assert.same({ foo = "bar" }, event.payload)
      assert.equal(webhook.id, event.webhook_id)
      assert.equal("truto", received.user_agent)
      assert.equal("application/json", received.content_type)
      -- the secret of another webhook does not pass
      local other = assert(client.webhooks:create { target_url = app.base_url .. "/webhook" })
      local result, failure = client.webhooks:test(other.id, nil, { max_retries = 0 })
      assert.is_nil(result)
      assert.equal(502, failure.status)
    end)
    json_request("PUT", "/webhook/secret", { body = "s3cret" })
    assert(ok, err)
  end)

  it("checks a webhook's signature in access_by_lua", function()
    local body = '{"event":"x"}'
    -- HMAC-SHA256 of body with the secret "s3cret" (see spec/webhook_spec.lua)
    local signature = "format=sha256,v=474d9c54253f9ebd95cf3904ce830fcb6bbd65180b2530ca40371a177bb6e02b"

    local status, value = json_request("POST", "/webhook", { body = body, headers = { ["X-Truto-Signature"] = signature } })
    assert.equal(200, status, app:log())
    assert.same({ received = true, event = "x" }, value)

    status, value = json_request("POST", "/webhook", { body = body .. " ", headers = { ["X-Truto-Signature"] = signature } })
    assert.equal(401, status)
    assert.same({ error = "invalid webhook signature", reason = "signature mismatch" }, value)

    status, value = json_request("POST", "/webhook", { body = body })
    assert.equal(401, status)
    assert.same({ error = "invalid webhook signature", reason = "missing signature header" }, value)

    status, value = json_request("POST", "/webhook", { headers = { ["X-Truto-Signature"] = signature } })
    assert.equal(401, status)
    assert.equal("signature mismatch", value.reason)
  end)

  it("returns an upstream 404 as a JSON error with its kind, status and message", function()
    local status, value = json_request("GET", "/opportunity/get?id=nope")
    assert.equal(404, status, app:log())
    assert.equal("http", value.error.kind)
    assert.equal(404, value.error.status)
    assert.equal("Record not found: nope", value.error.message)
    assert.equal(1, value.error.attempts)
    assert.equal("truto: GET /unified/crm/opportunities/nope: 404 Not Found: Record not found: nope", value.error.text)
  end)

  it("refuses a call in init_worker_by_lua and log_by_lua with the phase and the workaround", function()
    assert.equal(200, (request("GET", "/log-phase")))
    local value
    for _ = 1, 100 do   -- the log phase runs after the response went out
      local status
      status, value = json_request("GET", "/phase-results")
      assert.equal(200, status)
      if value.log ~= truto.null then break end
      core.sleep(0.02)
    end
    for _, phase in ipairs({ "init_worker", "log" }) do
      local result = value[phase]
      assert.is_table(result, phase)
      assert.is_nil(result.raised, result.raised)
      assert.equal("phase", result.kind, phase)
      assert.truthy(result.message:find(phase .. " phase", 1, true), result.message)
      assert.truthy(result.message:find("ngx.timer.at(0", 1, true), result.message)
    end
    -- The workaround works: the same call from a timer started in init_worker.
    assert.same({ id = "23423523" }, value.timer)
  end)

  it("runs a batch on light threads: 20 calls delayed 300 ms, 10 at a time, take about two delays", function()
    local started = core.now()
    local status, value = json_request("GET", "/batch?n=20&delay_ms=300&concurrency=10")
    local elapsed = core.now() - started
    assert.equal(200, status, app:log())
    local expected = {}
    for i = 1, 20 do expected[i] = i end
    assert.same(expected, value.amounts)
    assert.equal(20, value.progress)
    assert.is_true(elapsed >= 0.6 and elapsed < 1.5, ("took %.2f s"):format(elapsed))
  end)

  it("does not block the worker: 50 concurrent calls delayed 500 ms take about one delay", function()
    local n, delay_ms = 50, 500
    local paths = {}
    for i = 1, n do paths[i] = ("/slow?delay_ms=%d&i=%d"):format(delay_ms, i) end
    local lines, wall = parallel(paths, "%{http_code} %{time_total}")
    assert.equal(n, #lines, app:log())
    for _, line in ipairs(lines) do
      local code, seconds = line:match("^(%d+) ([%d.]+)$")
      assert.equal("200", code, line .. "\n" .. app:log())
      assert.is_true(tonumber(seconds) >= delay_ms / 1000, line)
    end
    assert.is_true(wall < 3 * delay_ms / 1000,
      ("%d requests delayed %d ms each took %.3f s"):format(n, delay_ms, wall))
    report(("concurrency: N=%d D=%dms wall=%.3fs (sequential would be %.1fs)"):format(n, delay_ms, wall,
      n * delay_ms / 1000))

    local log = emu.requests()
    assert.equal(n, #log)
    for _, entry in ipairs(log) do assert.equal(tostring(delay_ms), entry.headers["x-emulator-delay-ms"]) end
  end)

  it("retries a 429 with ngx.sleep and succeeds on the second attempt", function()
    emu.faults { { method = "GET", path_prefix = "/unified/crm/opportunities/23423523", status = 429,
                   retry_after = "0", count = 1 } }
    local status, record, headers = json_request("GET", "/opportunity/get?id=23423523")
    assert.equal(200, status, app:log())
    assert.equal("23423523", record.id)
    assert.equal("2", headers["x-truto-attempts"])
    local statuses = emu.stats().statuses
    assert.equal(1, statuses["429"])
    assert.equal(1, statuses["200"])
  end)

  it("sleeps between retries without blocking: 10 calls told Retry-After 1 s finish in about 1 s", function()
    local n = 10
    emu.faults { { method = "GET", path_prefix = "/unified/crm/opportunities/23423523", status = 429,
                   retry_after = "1", count = n } }
    local paths = {}
    for i = 1, n do paths[i] = "/opportunity/get?id=23423523&i=" .. i end
    local lines, wall = parallel(paths, "%{http_code} %header{x-truto-attempts}")
    assert.equal(n, #lines, app:log())
    for _, line in ipairs(lines) do assert.equal("200 2", line, app:log()) end
    assert.is_true(wall >= 1 and wall < 2.5, ("%d retried calls took %.3f s"):format(n, wall))
    report(("retries: N=%d Retry-After=1s wall=%.3fs"):format(n, wall))
  end)

  it("leaves no Lua error in the app's error log", function()
    local text = error_log(app)
    for _, needle in ipairs({ "runtime error", "entry thread aborted", "[alert]", "[crit]", "[emerg]" }) do
      assert.falsy(text:find(needle, 1, true), app:log(true))
    end
  end)
end)


-- The emulator over https: a TLS server inside the app's own nginx that
-- proxies to the (plain http) emulator, its certificate signed by a test CA
-- made in the app's temp dir.  (nginx checks a name, not an IP address:
-- the certificate has 127.0.0.1 as a DNS name too.)
describe("inside nginx, over TLS", function()
  with_server(function()
    app = start_app(function(port, prefix)
      local tls_port = port + 1
      return {
        BASE_URL = emu.base_url,
        TLS_BASE_URL = "https://127.0.0.1:" .. tls_port,
        TLS_TRUST = "lua_ssl_trusted_certificate " .. prefix .. "/ca.pem;",
        TLS_SERVER = table.concat({
          "    server {",
          "        listen 127.0.0.1:" .. tls_port .. " ssl;",
          "        ssl_certificate " .. prefix .. "/server.pem;",
          "        ssl_certificate_key " .. prefix .. "/server.key;",
          "        location / {",
          "            proxy_pass " .. emu.base_url .. ";",
          "            proxy_http_version 1.1;",
          "            proxy_set_header Connection \"\";",
          "            proxy_buffering off;",
          "        }",
          "    }",
        }, "\n"),
      }
    end, "DNS:127.0.0.1, IP:127.0.0.1")
    return app
  end)

  it("fails the handshake when nginx does not trust the server's CA", function()
    local status, value = json_request("GET", "/tls/untrusted")
    assert.equal(502, status, app:log())
    assert.equal("tls", value.error.kind)
    assert.truthy(value.error.message:find("lua_ssl_trusted_certificate", 1, true), value.error.message)
  end)

  it("verifies the certificate against lua_ssl_trusted_certificate", function()
    local status, value = json_request("GET", "/tls/verified")
    assert.equal(200, status, app:log())
    assert.same({ id = "23423523" }, value)
  end)

  it("connects without verification when told insecure = true", function()
    local status, value = json_request("GET", "/tls/insecure")
    assert.equal(200, status, app:log())
    assert.same({ id = "23423523" }, value)
  end)

  it("does not hand a connection verified under one trust store to a client with its own pool", function()
    local status = json_request("GET", "/tls/verified")
    assert.equal(200, status, app:log())
    local value
    status, value = json_request("GET", "/tls/untrusted")
    assert.equal(502, status, app:log())
    assert.equal("tls", value.error.kind)
  end)
end)

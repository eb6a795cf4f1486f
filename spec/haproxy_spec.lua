-- The HAProxy transport (transport = "haproxy", picked by "auto" inside
-- HAProxy) in the real host: Debian's haproxy 2.6 (Lua 5.3) runs the
-- services of spec/haproxy/services.lua in one thread, against the emulator
-- on real nginx over loopback, over http and over https (a second emulator
-- with a throwaway CA: TLS by truto.tls over HAProxy's plain sockets, beside
-- HAProxy's own TLS in the same process).  A call yields to HAProxy's event
-- loop while it waits, so eight requests that each wait 1 s upstream take
-- about 1 s.
local truto = require "truto"
local emulator = require "truto.emulator"
local curl_core = require "truto.curl_core"
local core = require "truto.core"
local emu = require "spec.support.emulator"
local hap = require "spec.support.haproxy"

local ROUTES = table.concat({
  "    http-request use-service lua.update if { path /update }",
  "    http-request use-service lua.auto if { path /auto }",
  "    http-request use-service lua.batch if { path /batch }",
  "    http-request use-service lua.store if { path /store }",
}, "\n")
local PREFIX = "/unified/crm/opportunities/"

describe("the HAProxy transport", function()
  local server, https

  setup(function()
    emu.start()
    https = assert(emulator.start { tls = true })
    -- /unified/...: proxied by HAProxy's own TLS (a verifying server line)
    -- to the https emulator, beside truto.tls in the same process.
    local routes = ROUTES .. "\n    use_backend https_emulator if { path_beg /unified/ }\n"
      .. "backend https_emulator\n"
      .. ("    server emulator 127.0.0.1:%d ssl verify required ca-file %s verifyhost localhost\n")
        :format(https.port, https.ca_file)
    server = hap.start { module = "spec.haproxy.services", routes = routes,
                         env = { TRUTO_BASE_URL = emu.base_url, TRUTO_API_TOKEN = emu.TOKEN,
                                 TRUTO_HTTPS_BASE_URL = https.base_url, TRUTO_HTTPS_CA_FILE = https.ca_file } }
  end)
  teardown(function()
    if server then server:stop() end
    if https then https:stop() end
    emu.stop()
  end)
  before_each(function()
    emu.reset()
    assert(https:reset())
  end)

  -- What each scheme's emulator received.
  local function requests(scheme)
    if scheme == "https" then return assert(https:requests()) end
    return emu.requests()
  end

  local function get(path)
    local session = curl_core.session { timeout = 30 }
    local status, _, body = session:perform { url = server.base_url .. path, timeout = 30 }
    session:close()
    assert(status, body)
    return status, truto.decode_json(body)
  end

  it("is what transport = \"auto\" picks inside HAProxy", function()
    local status, answer = get("/auto")
    assert.equal(200, status, server:log())
    assert.same({ haproxy = true }, answer)
  end)

  -- The /update argument that picks the https emulator, verified by its CA.
  local VIA = { http = "", https = "&tls=verified" }

  for _, scheme in ipairs { "http", "https" } do
    it("answers a request by updating an opportunity on the emulator over " .. scheme, function()
      local status, answer = get("/update?id=10000003&amount=4200" .. VIA[scheme])
      assert.equal(200, status, server:log())
      assert.equal(200, answer.status)
      assert.equal(1, answer.attempts)
      assert.equal("10000003", answer.record.id)
      assert.equal(4200, answer.record.amount)
      local received = requests(scheme)
      assert.equal(1, #received)
      assert.equal("PATCH", received[1].method)
      assert.equal(PREFIX .. "10000003", received[1].path)
      assert.equal('{"amount":4200}', received[1].body)
      assert.equal("Bearer " .. emu.TOKEN, received[1].headers.authorization)
    end)

    it(("serves 8 concurrent requests over %s, each waiting 1 s upstream, in under 2 s with one thread")
      :format(scheme), function()
      local multi = curl_core.multi { timeout = 30, http2 = false, max_host_connections = 8 }
      local handles = {}
      local started = core.now()
      for i = 1, 8 do
        handles[i] = multi:add { url = ("%s/update?id=%d&amount=%d&delay=1000%s"):format(server.base_url,
          10000002 + i, 1000 + i, VIA[scheme]) }
      end
      local answers = {}
      while multi:pending() > 0 do
        for _, done in ipairs(multi:wait(1)) do answers[done.id] = done end
      end
      local elapsed = core.now() - started
      multi:close()
      assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
      for i = 1, 8 do
        local done = answers[handles[i]]
        assert.equal(200, done.status, server:log())
        local answer = truto.decode_json(done.body)
        assert.equal(tostring(10000002 + i), answer.record.id)
        assert.equal(1000 + i, answer.record.amount)
      end
      local bodies = {}
      for _, r in ipairs(requests(scheme)) do bodies[r.path] = r.body end
      for i = 1, 8 do assert.equal(('{"amount":%d}'):format(1000 + i), bodies[PREFIX .. (10000002 + i)]) end
    end)
  end

  it("fails https without the emulator's CA: kind \"tls\", not retried, nothing sent", function()
    local status, answer = get("/update?id=10000003&amount=1&tls=system_ca")
    assert.equal(502, status, server:log())
    assert.same({ kind = "tls", retryable = false, attempts = 1,
                  message = "TLS handshake with 127.0.0.1 failed: unable to get local issuer certificate" }, answer)
    assert.same({}, requests("https"))
  end)

  it("fails https with a ca_file that cannot be read: kind \"tls\" saying why", function()
    local status, answer = get("/update?id=10000003&amount=1&tls=missing_ca")
    assert.equal(502, status, server:log())
    assert.same({ kind = "tls", retryable = false, attempts = 1,
                  message = "TLS handshake with 127.0.0.1 failed: cannot load the CA certificates of "
                    .. "/nonexistent/ca.pem: No such file or directory" }, answer)
    assert.same({}, requests("https"))
  end)

  it("with insecure = true, takes over https a certificate it cannot verify", function()
    local status, answer = get("/update?id=10000003&amount=77&tls=insecure")
    assert.equal(200, status, server:log())
    assert.equal(77, answer.record.amount)
    assert.equal('{"amount":77}', requests("https")[1].body)
  end)

  it("runs truto.tls beside HAProxy's own TLS (one libssl): calls through both, in turn, kept alive", function()
    local session = curl_core.session { timeout = 30 }
    for i = 1, 2 do
      local status, answer = get(("/update?id=10000003&amount=%d&tls=verified"):format(i))
      assert.equal(200, status, server:log())
      assert.equal(i, answer.record.amount)
      if i == 2 then assert.is_true(answer.reused) end   -- the first call's connection, nothing left unread
      local proxied, _, body = session:perform { url = server.base_url .. PREFIX .. "10000003?integrated_account_id="
        .. emu.ACCOUNT, headers = { "Authorization: Bearer " .. emu.TOKEN }, timeout = 30 }
      assert.equal(200, proxied, body)
      assert.equal(i, truto.decode_json(body).amount)
    end
    session:close()
  end)

  it("refuses https to a host name: kind \"connect\", pointing at a listener of haproxy.cfg", function()
    local status, answer = get("/update?id=10000003&amount=1&tls=by_name")
    assert.equal(502, status, server:log())
    assert.same({ kind = "connect", retryable = true, attempts = 1,
                  message = "cannot resolve localhost: cannot resolve localhost at run time: HAProxy's Lua sockets "
                    .. "connect to IP addresses only (point base_url at a listener of haproxy.cfg that forwards to "
                    .. "Truto: README, \"Using with HAProxy\")" }, answer)
  end)

  it("runs client:batch on HAProxy tasks, concurrently, results in request order", function()
    local started = core.now()
    local status, answer = get("/batch?n=8&delay=1000")
    local elapsed = core.now() - started
    assert.equal(200, status, server:log())
    assert.is_true(elapsed >= 1 and elapsed < 2, ("took %.2f s"):format(elapsed))
    for i = 1, 8 do assert.same({ id = tostring(10000002 + i), amount = i }, answer[i]) end
  end)

  it("raises on_progress's error from client:batch, and the next batch runs clean", function()
    local status, answer = get("/batch?n=4&delay=200&fail=1")
    assert.equal(500, status)
    assert.same({ error = "stop here" }, answer)
    status, answer = get("/batch?n=4&delay=0")
    assert.equal(200, status)
    for i = 1, 4 do assert.same({ id = tostring(10000002 + i), amount = i }, answer[i]) end
  end)

  it("paces through a Redis store over HAProxy's sockets", function()
    local redis = require("spec.support.redis_server").start()
    local status, answer = get("/store?n=3&url=" .. redis.url:gsub(":", "%%3A"):gsub("/", "%%2F"))
    local keys = redis:cli("KEYS 'truto:rate:*'")
    redis:stop()
    assert.equal(200, status)
    assert.same({ "ok", "ok", "ok" }, answer.outcomes)
    -- Two at once, the third a window (1 s) after the first.
    assert.is_true(answer.seconds >= 0.95 and answer.seconds < 1.6, ("took %.2f s"):format(answer.seconds))
    assert.truthy(keys:find("truto:rate:{62f44730-dd91-461e-bd6a-aedd9e0ad79d}:slots", 1, true), keys)
  end)
end)

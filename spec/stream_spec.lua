-- truto.curl_core.stream (csrc/stream.c), a raw TCP stream on libcurl, and
-- the libcurl transport's env.tcp() over it (lua/truto/curl.lua, through
-- truto.cosocket): raw bytes with a redis-server of the spec's own, whole
-- HTTP exchanges with truto.http1 against the emulator on nginx (http, and
-- https verified by truto.tls), over loopback.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local curl = require "truto.curl"
local http1 = require "truto.http1"
local emulator = require "truto.emulator"
local emu = require "spec.support.emulator"
local redis_server = require "spec.support.redis_server"
local sh = require "spec.support.shell"

local PING, PONG = "*1\r\n$4\r\nPING\r\n", "+PONG\r\n"
local RECORD_PATH = "/unified/crm/opportunities/10000003?integrated_account_id=" .. emu.ACCOUNT
-- libcurl's words for a refused connection, and the system's.
local REFUSED = "^Failed to connect to 127%.0%.0%.1 port 1 after %d+ ms: Couldn't connect to server "
  .. "%(Connection refused%)$"

-- The seconds f takes, and what it returns.
local function timed(f)
  local started = core.now()
  local results = { f() }
  return core.now() - started, results
end

local function connected(host, port)
  local stream = curl_core.stream()
  assert.is_true(stream:connect(host, port, 5))
  return stream
end

-- The GET of a record at base_url, as truto.http1 takes it.
local function record_request(base_url, headers)
  local lines = { "Authorization: Bearer " .. emu.TOKEN }
  for _, line in ipairs(headers or {}) do lines[#lines + 1] = line end
  return { method = "GET", url = base_url .. RECORD_PATH, headers = lines }
end

local function call(timeout)
  return { timeout = timeout or 10, connect_timeout = 5, max_response_bytes = 1024 * 1024, repeatable = true }
end

-- The record's id from a whole exchange that succeeded, and whether its
-- connection was a kept-alive one.
local function fetched(transport, req)
  local status, headers, body, info = http1.perform(transport.env, req, call())
  assert(status, headers and headers.message)
  assert.equal(200, status)
  return core.decode_json(body).id, info.reused
end

describe("truto.curl_core.stream", function()
  local redis

  setup(function() redis = redis_server.start() end)
  teardown(function() redis:stop() end)

  it("exchanges raw bytes with redis-server over 127.0.0.1 and ::1 (in brackets or not)", function()
    for _, host in ipairs { "127.0.0.1", "::1", "[::1]", "localhost" } do
      local stream = connected(host, redis.port)
      assert.is_true(stream:send(PING, 5))
      assert.equal(PONG, stream:receive(100, 5))
      stream:close()
    end
  end)

  it("reads up to max bytes as soon as any arrive, the rest at the next receive", function()
    local stream = connected("127.0.0.1", redis.port)
    assert.is_true(stream:send(PING .. PING, 5))
    local got = stream:receive(3, 5)
    assert.equal("+PO", got)
    repeat got = got .. stream:receive(100, 5) until #got >= 2 * #PONG
    assert.equal(PONG .. PONG, got)
    stream:close()
  end)

  it("usable: an idle connection is; one with bytes unread, or that the peer closed, is not", function()
    local stream = connected("127.0.0.1", redis.port)
    assert.is_true(stream:usable())
    assert.is_true(stream:send(PING, 5))
    local deadline = core.now() + 5
    while stream:usable() and core.now() < deadline do core.sleep(0.01) end
    assert.is_false(stream:usable())
    assert.equal(PONG, stream:receive(100, 5))
    assert.is_true(stream:usable())
    assert.equal("1\n", redis:cli("client kill type normal"))
    deadline = core.now() + 5
    while stream:usable() and core.now() < deadline do core.sleep(0.01) end
    assert.is_false(stream:usable())
    assert.same({ nil, "closed" }, { stream:receive(100, 5) })
    stream:close()
  end)

  it("a server that takes nothing: receive and send time out within their seconds", function()
    local stream = connected("127.0.0.1", redis.port)
    redis:pause()
    local ok, err = pcall(function()
      assert.is_true(stream:send(PING, 5))
      local seconds, results = timed(function() return stream:receive(100, 0.3) end)
      assert.same({ nil, "timeout" }, results)
      assert.is_true(seconds >= 0.29 and seconds < 0.6, "receive took " .. seconds .. " s")
      -- More than the kernel buffers on both sides: the send waits, then stops.
      local big = string.rep("x", 64 * 1024 * 1024)
      seconds, results = timed(function() return stream:send(big, 0.3) end)
      assert.same({ nil, "timeout" }, results)
      assert.is_true(seconds >= 0.29 and seconds < 0.8, "send took " .. seconds .. " s")
    end)
    redis:resume()
    stream:close()
    assert(ok, err)
  end)

  it("connect fails with libcurl's reason: a refused port, a name that does not resolve", function()
    local stream = curl_core.stream()
    local ok, err = stream:connect("127.0.0.1", 1, 5)
    assert.is_nil(ok)
    assert.matches(REFUSED, err)
    assert.same({ nil, "Could not resolve host: nowhere.invalid" }, { stream:connect("nowhere.invalid", 80, 5) })
    assert.is_false(stream:usable())
    assert.same({ nil, "closed" }, { stream:send(PING, 1) })
    assert.same({ nil, "closed" }, { stream:receive(10, 1) })
    stream:close()
  end)

  it("connects directly, whatever the proxy variables say", function()
    local code = ("local st = require('truto.curl_core').stream() "
      .. "assert(st:connect('127.0.0.1', %d, 5)) assert(st:send(%q, 5)) io.write(st:receive(100, 5))"):format(redis.port, PING)
    local dead = "http://127.0.0.1:1"
    -- Under make asan a child gets no sanitizer runtimes: it loads build/5.4's core (asan builds it).
    local cpath = package.cpath:gsub("build/asan/", "build/5.4/")
    local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = cpath, http_proxy = dead,
      HTTP_PROXY = dead, ALL_PROXY = dead, all_proxy = dead, NO_PROXY = false, no_proxy = false },
      sh.quote(arg[-1]) .. " -e " .. sh.quote(code))
    assert(ok, err)
    assert.equal(PONG, out)
  end)

  it("argument errors raise; a closed stream says closed; close is idempotent", function()
    local stream = curl_core.stream()
    local function raises(message, method, ...)
      local ok, err = pcall(stream[method], stream, ...)
      assert.is_false(ok)
      assert.equal("truto: " .. message, err)
    end
    local host = "stream host must be a DNS name or an IP address"
    raises(host, "connect", "a/b", 80, 1)
    raises(host, "connect", "", 80, 1)
    raises(host, "connect", "[]", 80, 1)
    raises(host, "connect", "h@x", 80, 1)
    raises(host, "connect", string.rep("a", 254), 80, 1)
    raises("stream port must be an integer from 1 to 65535", "connect", "h", 0, 1)
    raises("stream port must be an integer from 1 to 65535", "connect", "h", 65536, 1)
    raises("stream port must be an integer from 1 to 65535", "connect", "h", 80.5, 1)
    raises("stream port must be an integer from 1 to 65535, got string", "connect", "h", "80", 1)
    raises("stream connect seconds must be a number of seconds from 0 to 2147483", "connect", "h", 80, -1)
    raises("stream connect seconds must be a number of seconds from 0 to 2147483", "connect", "h", 80, 0 / 0)
    raises("stream connect seconds must be a number of seconds, got no value", "connect", "h", 80)
    raises("stream send seconds must be a number of seconds, got no value", "send", "x")
    raises("stream receive max must be a positive integer", "receive", 0, 1)
    raises("stream receive seconds must be a number of seconds from 0 to 2147483", "receive", 1, math.huge)
    assert.matches("^truto%.Stream %(0x%x+%)$", tostring(stream))
    stream:close()
    stream:close()
    assert.matches("^truto%.Stream %(closed, 0x%x+%)$", tostring(stream))
    raises("stream is closed", "connect", "127.0.0.1", redis.port, 1)
    assert.same({ nil, "closed" }, { stream:send(PING, 1) })
    assert.same({ nil, "closed" }, { stream:receive(10, 1) })
    assert.is_false(stream:usable())
    stream = connected("127.0.0.1", redis.port)
    raises("stream is already connected", "connect", "127.0.0.1", redis.port, 1)
    stream:close()
  end)
end)

describe("the libcurl transport's env.tcp()", function()
  local redis, tls_server

  setup(function()
    emu.start()
    tls_server = assert(emulator.start { tls = true })
    redis = redis_server.start()
  end)
  teardown(function()
    emu.stop()
    tls_server:stop()
    redis:stop()
  end)

  it("runs a whole HTTP exchange over http, keeps the connection alive and reuses it; close ends it", function()
    local transport = curl.new {}
    assert.same({ "10000003", false }, { fetched(transport, record_request(emu.base_url)) })
    assert.same({ "10000003", true }, { fetched(transport, record_request(emu.base_url)) })
    transport:close()
    assert.same({ "10000003", false }, { fetched(transport, record_request(emu.base_url)) })
    transport:close()
  end)

  it("over https, verified with the CA by IP address and by name (SNI), reused", function()
    local transport = curl.new { ca_file = tls_server.ca_file }
    local by_name = tls_server.base_url:gsub("127%.0%.0%.1", "localhost")
    for _, base_url in ipairs { tls_server.base_url, by_name } do
      assert.same({ "10000003", false }, { fetched(transport, record_request(base_url)) })
      assert.same({ "10000003", true }, { fetched(transport, record_request(base_url)) })
    end
    transport:close()
  end)

  it("over https without the server's CA: kind \"tls\"; insecure = true takes it", function()
    local transport = curl.new {}   -- the system's CAs
    local status, err = http1.perform(transport.env, record_request(tls_server.base_url), call())
    assert.is_nil(status)
    assert.same({ kind = "tls", message = "TLS handshake with 127.0.0.1 failed: unable to get local issuer certificate" },
      err)
    transport:close()
    transport = curl.new { insecure = true }
    assert.is_true(transport.env.insecure)
    assert.same({ "10000003", false }, { fetched(transport, record_request(tls_server.base_url)) })
    transport:close()
  end)

  it("a server that does not answer in time, or trickles its body: kind \"timeout\" within the deadline", function()
    local transport = curl.new {}
    for _, headers in ipairs { { "X-Emulator-Delay-Ms: 3000" },
      { "X-Emulator-Fault: slow-body", "X-Emulator-Body-Delay-Ms: 300" } } do   -- 4 pieces, 0.9 s
      local seconds, results = timed(function()
        return http1.perform(transport.env, record_request(emu.base_url, headers), call(0.5))
      end)
      assert.is_nil(results[1])
      assert.same({ kind = "timeout", message = "timed out reading the response" }, results[2])
      assert.is_true(seconds >= 0.49 and seconds < 0.8, "the call took " .. seconds .. " s")
    end
    transport:close()
  end)

  it("a refused connection: kind \"connect\" with libcurl's reason", function()
    local transport = curl.new {}
    local status, err = http1.perform(transport.env, record_request("http://127.0.0.1:1"), call())
    assert.is_nil(status)
    assert.equal("connect", err.kind)
    assert.matches("^connecting to 127%.0%.0%.1:1 failed: " .. REFUSED:sub(2), err.message)
  end)

  it("a raw exchange with redis-server through the cosocket API; a pooled connection the peer closed is not reused",
    function()
      local transport = curl.new {}
      local function ping()
        local sock = transport.env.tcp()
        sock:settimeout(5000)
        assert.equal(1, sock:connect("127.0.0.1", redis.port, { pool = "redis" }))
        assert.equal(#PING, sock:send(PING))
        assert.equal(PONG, sock:receiveany(100))
        local reused = sock:getreusedtimes()
        assert.equal(1, sock:setkeepalive(60000, 4))
        return reused
      end
      assert.equal(0, ping())
      assert.equal(1, ping())
      assert.equal(2, ping())
      assert.equal("1\n", redis:cli("client kill type normal"))
      assert.equal(0, ping())
      assert.equal(1, ping())
      transport:close()
      assert.equal(0, ping())
      transport:close()
    end)
end)

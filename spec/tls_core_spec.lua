-- truto.tls (csrc/tls.c): TLS over memory buffers, for the hosts whose
-- sockets only move bytes, and cosocket.tls, its pump over a driver.  Its
-- arguments; what it sends before any server answers; then handshakes with
-- real TLS servers on loopback (the emulator's, by IP address and by name,
-- and the conformance table's hostile ones: a certificate for the IP only,
-- for another host, expired, from an unknown CA) through cosocket.tls over a
-- driver of plain libuv TCP handles run to completion (no coroutine), and
-- over one whose reads wait for a whole count (as HAProxy's do).
local tls = require "truto.tls"
local cosocket = require "truto.cosocket"
local emulator = require "truto.emulator"
local hostile_server = require "spec.support.hostile.start"
local uv = require "luv"

local TLS_RECORD_HANDSHAKE = "\22\3"   -- content type 22, version 3.x

local function now() return uv.hrtime() / 1e9 end

-- Runs libuv's loop until the callback start(done) armed is called; its values.
local function await(start)
  local finished, first, second
  start(function(a, b) finished, first, second = true, a, b end)
  while not finished do uv.run("once") end
  return first, second
end

-- A driver of plain TCP over libuv that waits by running the loop (what
-- cosocket.tls needs from a host: bytes in, bytes out).
local raw = {}
function raw.connect(host, port)
  local tcp = uv.new_tcp()
  local err = await(function(done) tcp:connect(host, port, done) end)
  if err then
    tcp:close()
    return nil, err
  end
  local conn = { tcp = tcp, chunks = {} }
  tcp:read_start(function(failed, data) conn.chunks[#conn.chunks + 1] = failed or data or false end)
  return conn
end
function raw.send(conn, data)
  local err = await(function(done) conn.tcp:write(data, done) end)
  if err then return nil, err end
  return true
end
function raw.receive(conn)
  while #conn.chunks == 0 do uv.run("once") end
  local data = table.remove(conn.chunks, 1)
  if data then return data end
  return nil, "closed"
end
function raw.close(conn)
  if not conn.tcp:is_closing() then conn.tcp:close() end
  uv.run("nowait")
end
function raw.usable(conn) return #conn.chunks == 0 end

-- The same with reads that wait for a whole count, as HAProxy's do: a read
-- takes exactly `need` bytes (fewer at the peer's close; "timeout" once its
-- time is up), and conn.counts keeps the counts asked for.
local counted = { connect = raw.connect, send = raw.send, close = raw.close, usable = raw.usable }
function counted.receive(conn, max, seconds, need)
  assert(need == max, "a counted read asks for what it needs")
  conn.counts = conn.counts or {}
  conn.counts[#conn.counts + 1] = need
  local timer = uv.new_timer()
  local expired = false
  timer:start(math.floor(seconds * 1000), 0, function() expired = true end)
  local held = conn.held or ""
  while #held < need and not conn.eof and not expired do
    if #conn.chunks == 0 then uv.run("once") end
    local chunk = table.remove(conn.chunks, 1)
    if chunk then held = held .. chunk elseif chunk == false then conn.eof = true end
  end
  timer:close()
  if #held < need and not conn.eof then
    conn.held = held
    return nil, "timeout"
  end
  conn.held = held:sub(need + 1)
  if held == "" then return nil, "closed" end
  return held:sub(1, need)
end

-- A handshake with 127.0.0.1:port through cosocket.tls (over counted reads
-- when the driver given is `counted`); the driver and the connection, or
-- nil, err.
local function handshake(port, name, verify, ca_file, driver)
  local d = cosocket.tls(driver or raw, { now = now, ca_file = ca_file, counted_reads = driver == counted })
  local conn = assert(d.connect("127.0.0.1", port, 5))
  local ok, err = d.handshake(conn, name, nil, verify, 5)
  if not ok then
    d.close(conn)
    return nil, err
  end
  return d, conn
end

-- Sends a GET of path over an established connection; the whole answer.
local function get(d, conn, path)
  assert(d.send(conn, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5))
  local answer = {}
  while true do
    local data, err = d.receive(conn, 65536, 5)
    if not data then
      assert.equal("closed", err)
      break
    end
    answer[#answer + 1] = data
  end
  d.close(conn)
  return table.concat(answer)
end

describe("truto.tls", function()
  local ctx

  setup(function() ctx = assert(tls.context()) end)
  teardown(function() ctx:close() end)

  it("raises on bad arguments", function()
    -- Lua 5.4 names a module's function by its path in package.loaded; an
    -- error raised under a Lua function's call carries its position.
    local function raises(message, f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok)
      err = err:gsub("^spec/tls_core_spec%.lua:%d+: ", ""):gsub("^(bad argument #%d to ')truto%.tls%.", "%1")
      assert.equal(message, err)
    end
    raises("bad argument #1 to 'context' (table expected, got number)", tls.context, 1)
    raises("truto.tls: unknown context option 'cafile'", tls.context, { cafile = "x" })
    raises("truto.tls: context option 'ca_file' must be a string, got boolean", tls.context, { ca_file = true })
    raises("truto.tls: context option 'ca_path' must be a non-empty string without NUL bytes", tls.context,
      { ca_path = "" })
    raises("bad argument #1 to 'client' (truto.TLSContext expected, got table)", tls.client, {}, { host = "x" })
    raises("truto.tls: client option 'host' is required (a DNS name or an IP address)", tls.client, ctx, {})
    raises("truto.tls: client option 'host' must be a non-empty string without NUL bytes", tls.client, ctx,
      { host = "a\0b" })
    raises("truto.tls: client option 'verify' must be a boolean, got string", tls.client, ctx,
      { host = "x", verify = "no" })
    raises("truto.tls: unknown client option 'sni'", tls.client, ctx, { host = "x", sni = false })
    local c = tls.client(ctx, { host = "localhost" })
    raises("bad argument #1 to 'read' (number expected, got no value)", function() c:read() end)
    raises("bad argument #1 to 'read' (must be from 1 to 1048576 bytes)", function() c:read(0) end)
    raises("bad argument #1 to 'feed' (string expected, got table)", function() c:feed {} end)
    raises("bad argument #1 to 'write' (string expected, got nil)", function() c:write(nil) end)
    c:close()
    c:close()   -- idempotent
    assert.matches("^truto%.TLSConnection %(closed, 0x%x+%)$", tostring(c))
    raises("truto.tls: the connection is closed", c.handshake, c)
    raises("truto.tls: the connection is closed", c.pending_output, c)
    local other = assert(tls.context())
    other:close()
    raises("truto.tls: the context is closed", tls.client, other, { host = "x" })
  end)

  it("fails to load CAs with nil, err", function()
    assert.same({ nil, "cannot load the CA certificates of /nonexistent/ca.pem: No such file or directory" },
      { tls.context { ca_file = "/nonexistent/ca.pem" } })
    assert.same({ nil, "cannot load the CA certificates of /etc/hostname: no certificate or crl found" },
      { tls.context { ca_file = "/etc/hostname" } })
  end)

  it("sends a ClientHello: SNI for a name, none for an address, ALPN http/1.1", function()
    local by_name = tls.client(ctx, { host = "api.truto.one" })
    assert.same({ nil, "want_read" }, { by_name:handshake() })
    local hello = by_name:pending_output()
    assert.equal(TLS_RECORD_HANDSHAKE, hello:sub(1, 2))
    assert.truthy(hello:find("\0\0" .. string.pack(">I2I2BI2", #"api.truto.one" + 5, #"api.truto.one" + 3, 0,
      #"api.truto.one") .. "api.truto.one", 1, true))
    assert.truthy(hello:find("\8http/1.1", 1, true))
    assert.equal("", by_name:pending_output())   -- taken once
    by_name:close()

    for _, address in ipairs { "127.0.0.1", "::1" } do
      local by_address = tls.client(ctx, { host = address })
      assert.same({ nil, "want_read" }, { by_address:handshake() })
      hello = by_address:pending_output()
      assert.equal(TLS_RECORD_HANDSHAKE, hello:sub(1, 2))
      assert.is_nil(hello:find(address, 1, true))
      assert.truthy(hello:find("\8http/1.1", 1, true))
      by_address:close()
    end
  end)

  it("gives OpenSSL's reason for bytes that are not TLS, and bounds what it holds", function()
    local c = tls.client(ctx, { host = "localhost" })
    c:handshake()
    c:pending_output()
    assert.is_true(c:feed("HTTP/1.1 400 Bad Request\r\n\r\n"))
    assert.same({ nil, "wrong version number" }, { c:handshake() })
    c:close()

    c = tls.client(ctx, { host = "localhost" })
    assert.is_true(c:feed(("x"):rep(200 * 1024)))
    assert.equal(200 * 1024, c:buffered())
    assert.same({ nil, "more than 262144 bytes of TLS records received and not read" },
      { c:feed(("x"):rep(100 * 1024)) })
    assert.equal(200 * 1024, c:buffered())
    c:close()
  end)
end)

describe("truto.tls with real servers (cosocket.tls over libuv TCP)", function()
  local server, hostile

  setup(function()
    server = assert(emulator.start { tls = true })
    hostile = hostile_server.start()
  end)
  teardown(function()
    if server then server:stop() end
    if hostile then hostile:stop() end
  end)

  it("verifies the emulator by IP address and by name", function()
    local d, conn = handshake(server.port, "127.0.0.1", true, server.ca_file)
    assert.truthy(d, conn)
    assert.matches("^HTTP/1%.1 401 Unauthorized\r\n.*Missing Authorization header", get(d, conn, "/unified"))
    d, conn = handshake(server.port, "localhost", true, server.ca_file)
    assert.truthy(d, conn)
    assert.matches("^HTTP/1%.1 401 Unauthorized\r\n.*Missing Authorization header", get(d, conn, "/unified"))
  end)

  it("refuses, with OpenSSL's reason: no CA, a name or an address not in the certificate, expired, unknown CA", function()
    assert.same({ nil, "unable to get local issuer certificate" },
      { handshake(server.port, "127.0.0.1", true) })   -- the system's CAs only
    local ca = hostile.ca_file
    assert.same({ nil, "hostname mismatch" }, { handshake(hostile_server.tls_port(hostile, "ip"), "localhost", true, ca) })
    assert.same({ nil, "IP address mismatch" },
      { handshake(hostile_server.tls_port(hostile, "wrong-host"), "127.0.0.1", true, ca) })
    assert.same({ nil, "certificate has expired" },
      { handshake(hostile_server.tls_port(hostile, "expired"), "127.0.0.1", true, ca) })
    assert.same({ nil, "self-signed certificate" },
      { handshake(hostile_server.tls_port(hostile, "untrusted"), "127.0.0.1", true, ca) })
  end)

  it("over counted reads, reads a record's header, then the length it gives, and carries an exchange", function()
    local d, conn = handshake(server.port, "127.0.0.1", true, server.ca_file, counted)
    assert.truthy(d, conn)
    assert(d.send(conn, "GET /unified HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 5))
    local answer = ""
    while not answer:find("Missing Authorization header", 1, true) do
      answer = answer .. assert(d.receive(conn, 65536, 5, 1))
    end
    assert.matches("^HTTP/1%.1 401 Unauthorized\r\n", answer)
    assert.is_true(d.usable(conn))   -- nothing read past the answer's last record
    local counts, records = conn.raw.counts, 0
    for i = 1, #counts, 2 do
      assert.equal(5, counts[i])
      assert.is_true(counts[i + 1] >= 1 and counts[i + 1] <= 16384 + 256, tostring(counts[i + 1]))
      records = records + 1
    end
    assert.is_true(records >= 4, "records: " .. records)   -- ServerHello, ..., the answer
    d.close(conn)
  end)

  it("over counted reads, fails at once on a peer that speaks no TLS and stays open", function()
    local listener = uv.new_tcp()
    assert(listener:bind("127.0.0.1", 0))
    local peer
    assert(listener:listen(8, function()
      peer = uv.new_tcp()
      listener:accept(peer)
      peer:read_start(function() peer:write("HTTP/1.1 400 Bad Request\r\n") end)
    end))
    local started = now()
    local failed = { handshake(listener:getsockname().port, "127.0.0.1", true, server.ca_file, counted) }
    assert.same({ nil, "wrong version number" }, failed)
    assert.is_true(now() - started < 1)
    if peer then peer:close() end
    listener:close()
    uv.run("nowait")
  end)

  it("with verify = false takes any of them, and carries an exchange", function()
    for _, name in ipairs { "wrong-host", "expired", "untrusted" } do
      local d, conn = handshake(hostile_server.tls_port(hostile, name), "127.0.0.1", false)
      assert.truthy(d, conn)
      d.close(conn)
    end
    local d, conn = handshake(hostile_server.tls_port(hostile, "untrusted"), "localhost", false)
    local answer = get(d, conn, "/custom/case/tls-certificate-for-the-ip-address")
    assert.matches("^HTTP/1%.1 200 X\r\n", answer)
    assert.equal('\r\n\r\n{"tls":true}', answer:sub(-16))
  end)
end)

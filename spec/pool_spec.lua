-- truto.pool (kept-alive connections for hosts without a pool) and
-- truto.cosocket (the cosocket API over a host's driver), with a fake clock
-- and a driver that records what it is asked: no server, no host.
local pool = require "truto.pool"
local cosocket = require "truto.cosocket"

-- A clock the spec moves, and a pool whose closed connections are listed.
local function fixture()
  local f = { clock = 100, closed = {} }
  f.pool = pool.new(function() return f.clock end, function(conn) f.closed[#f.closed + 1] = conn end)
  return f
end

local function always() return true end

describe("truto.pool", function()
  it("gives back the most recently kept connection of a key, with its reuse count", function()
    local f = fixture()
    f.pool:put("a", "a1", 0, 60, 4)
    f.pool:put("a", "a2", 3, 60, 4)
    f.pool:put("b", "b1", 0, 60, 4)
    assert.same({ "a2", 3 }, { f.pool:take("a", always) })
    assert.same({ "a1", 0 }, { f.pool:take("a", always) })
    assert.is_nil(f.pool:take("a", always))
    assert.is_nil(f.pool:take("c", always))
    assert.same({ "b1", 0 }, { f.pool:take("b", always) })
    assert.same({}, f.closed)
  end)

  it("closes connections kept past their keep-alive time", function()
    local f = fixture()
    f.pool:put("a", "old", 0, 10, 4)
    f.clock = 105
    f.pool:put("a", "new", 0, 10, 4)
    f.clock = 110          -- "old" expires now, "new" in 5 s
    assert.same({ "new", 0 }, { f.pool:take("a", always) })
    assert.same({ "old" }, f.closed)
    f.pool:put("a", "new", 1, 10, 4)
    f.clock = 121
    assert.is_nil(f.pool:take("a", always))
    assert.same({ "old", "new" }, f.closed)
  end)

  it("keeps at most `size` per key, closing the least recently kept", function()
    local f = fixture()
    for i = 1, 5 do f.pool:put("a", "a" .. i, 0, 60, 3) end
    assert.same({ "a1", "a2" }, f.closed)
    local kept = {}
    for i = 1, 4 do kept[i] = f.pool:take("a", always) or "none" end
    assert.same({ "a5", "a4", "a3", "none" }, kept)
  end)

  it("closes the connections its check refuses and takes the next", function()
    local f = fixture()
    f.pool:put("a", "alive", 0, 60, 4)
    f.pool:put("a", "dead", 0, 60, 4)
    local checked = {}
    local function usable(conn)
      checked[#checked + 1] = conn
      return conn == "alive"
    end
    assert.equal("alive", (f.pool:take("a", usable)))
    assert.same({ "dead", "alive" }, checked)
    assert.same({ "dead" }, f.closed)
  end)

  it("closes every kept connection on close_all, once", function()
    local f = fixture()
    f.pool:put("a", "a1", 0, 60, 4)
    f.pool:put("b", "b1", 0, 60, 4)
    f.pool:close_all()
    f.pool:close_all()
    table.sort(f.closed)
    assert.same({ "a1", "b1" }, f.closed)
    assert.is_nil(f.pool:take("a", always))
  end)
end)

-- A driver whose connections are tables; calls are logged.
local function fake_driver(log)
  local d = {}
  local made = 0
  function d.connect(host, port, seconds)
    log[#log + 1] = { "connect", host, port, seconds }
    if host == "refused" then return nil, "Connection refused" end
    made = made + 1
    return { id = made }
  end
  function d.handshake(conn, name, is_address, verify, seconds)
    log[#log + 1] = { "handshake", conn.id, name, is_address, verify, seconds }
    return true
  end
  function d.send(conn, data, seconds)
    log[#log + 1] = { "send", conn.id, data, seconds }
    return true
  end
  function d.receive(conn, max, seconds)
    log[#log + 1] = { "receive", conn.id, max, seconds }
    return "bytes"
  end
  function d.close(conn) log[#log + 1] = { "close", conn.id } end
  function d.usable() return true end
  return d
end

describe("truto.cosocket", function()
  local log, connections, driver

  before_each(function()
    log = {}
    driver = fake_driver(log)
    connections = pool.new(function() return 0 end, driver.close)
  end)

  it("gives the driver seconds for the cosocket's milliseconds, and the address without brackets", function()
    local sock = cosocket.new(driver, connections)
    sock:settimeout(1500)
    assert.equal(1, sock:connect("[::1]", 8443, { pool = "k" }))
    assert.equal(0, sock:getreusedtimes())
    sock:settimeout(250)
    assert.is_true(sock:sslhandshake(nil, nil, true))
    assert.equal(5, sock:send("hello"))
    assert.equal("bytes", sock:receiveany(4096))
    assert.equal(1, sock:close())
    assert.same({
      { "connect", "::1", 8443, 1.5 },
      { "handshake", 1, "::1", true, true, 0.25 },   -- no server name: the address is checked
      { "send", 1, "hello", 0.25 },
      { "receive", 1, 4096, 0.25 },
      { "close", 1 },
    }, log)
  end)

  it("checks a server name when given one, and nothing when verify is false", function()
    local sock = cosocket.new(driver, connections)
    sock:connect("api.example", 443)
    sock:sslhandshake(nil, "api.example", true)
    sock:sslhandshake(nil, "api.example", false)
    assert.same({ "handshake", 1, "api.example", false, true, 60 }, log[2])
    assert.same({ "handshake", 1, "api.example", false, false, 60 }, log[3])
  end)

  it("reuses a kept-alive connection of the same pool key, counting its reuses", function()
    local first = cosocket.new(driver, connections)
    first:connect("127.0.0.1", 80, { pool = "k" })
    assert.equal(1, first:setkeepalive(60000, 8))
    assert.same({ nil, "closed" }, { first:send("x") })   -- closed to its user once kept
    local second = cosocket.new(driver, connections)
    second:connect("127.0.0.1", 80, { pool = "k" })
    assert.equal(1, second:getreusedtimes())
    second:setkeepalive(60000, 8)
    local third = cosocket.new(driver, connections)
    third:connect("127.0.0.1", 80, { pool = "k" })
    assert.equal(2, third:getreusedtimes())
    local other = cosocket.new(driver, connections)
    other:connect("127.0.0.1", 80)                        -- default key "127.0.0.1:80": a new one
    assert.equal(0, other:getreusedtimes())
    local connects = 0
    for _, entry in ipairs(log) do if entry[1] == "connect" then connects = connects + 1 end end
    assert.equal(2, connects)
  end)

  it("returns the driver's connect error, and \"closed\" for any use of an unconnected socket", function()
    local sock = cosocket.new(driver, connections)
    assert.same({ nil, "Connection refused" }, { sock:connect("refused", 80) })
    assert.same({ nil, "closed" }, { sock:send("x") })
    assert.same({ nil, "closed" }, { sock:receiveany(10) })
    assert.same({ nil, "closed" }, { sock:sslhandshake(nil, "x", true) })
    assert.same({ nil, "closed" }, { sock:setkeepalive(1000, 1) })
    assert.equal(1, sock:close())
  end)
end)

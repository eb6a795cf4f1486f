-- truto.store's Redis store and truto.redis against a real redis-server
-- (started by this spec): reservations, blocks, credentials, databases,
-- TLS, a lost script, connection reuse, and a server that is gone, slow or
-- not Redis at all.  Through the libcurl transport's sockets (plain Lua);
-- under Lua 5.4 also through cqueues' and luv's.
local truto = require "truto"
local stores = require "truto.store"
local redis_server = require "spec.support.redis_server"
local emulator = require "spec.support.emulator"

local HOSTS = _VERSION == "Lua 5.4" and rawget(_G, "jit") == nil
-- Required here, held by this file for the whole run: lua-luv 1.44 crashes
-- when it is required again after its first module table was collected
-- (busted gives each spec file fresh modules).
local controller = HOSTS and require "spec.support.controller"
local luv_loop = HOSTS and require "spec.support.luv_loop"

local LIMIT = { requests = 3, per = 1, max_wait = 60, margin = 0 }

local function transport_of(options)
  local o = { token = "t", base_url = "http://127.0.0.1:9", log = function() end }
  for k, v in pairs(options or {}) do o[k] = v end
  return truto.new(o).transport
end

-- A store with the client options given; each operation may take timeout
-- seconds (default 5: plenty, even for TLS under valgrind).
local function store_at(url, options, timeout)
  local transport = transport_of(options)
  return assert(stores.new(url, transport, timeout or 5)), transport
end

local function near(expected, got, slack)
  assert(type(got) == "number", "not a number: " .. tostring(got))
  assert(got >= expected - (slack or 0.05) and got <= expected, ("%.3f is not about %.3f"):format(got, expected))
end

describe("the Redis store", function()
  local server

  setup(function() server = redis_server.start() end)
  teardown(function() if server then server:stop() end end)
  before_each(function() server:cli("FLUSHALL") end)

  it("reserves slots: `requests` at once, the next one window later, without sleeping", function()
    local store, transport = store_at(server.url)
    for _ = 1, 3 do assert.same({ true, 0 }, { store:acquire("acct", LIMIT) }) end
    local reserved, wait = store:acquire("acct", LIMIT)
    assert.is_true(reserved)
    near(1, wait)
    assert.equal("4\n", server:cli("ZCARD 'truto:rate:{acct}:slots'"))
    -- Past max_wait: not reserved.
    local again = { store:acquire("acct", { requests = 3, per = 1, max_wait = 0.5, margin = 0 }) }
    assert.is_false(again[1])
    near(1, again[2])
    assert.equal("4\n", server:cli("ZCARD 'truto:rate:{acct}:slots'"))
    assert.same({ true, 0 }, { store:acquire("other", LIMIT) })
    transport:close()
  end)

  it("holds back every slot of a blocked account, and says how long the block lasts", function()
    local store, transport = store_at(server.url)
    assert.same({ true, 0 }, { store:acquire("acct", LIMIT) })
    assert.is_true(store:block("acct", 2))
    near(2, store:blocked("acct"))
    local reserved, wait = store:acquire("acct", LIMIT)
    assert.is_true(reserved)
    near(2, wait)
    assert.equal(0, store:blocked("other"))
    -- A shorter block does not shorten a longer one.
    assert.is_true(store:block("acct", 0.5))
    near(2, store:blocked("acct"))
    transport:close()
  end)

  it("keeps one connection alive for its calls, and loads the script again after SCRIPT FLUSH", function()
    local store, transport = store_at(server.url)
    for _ = 1, 20 do assert.is_true((store:acquire("acct", { requests = 100, per = 1, max_wait = 1, margin = 0 }))) end
    local clients = server:cli("CLIENT LIST")
    local _, n = clients:gsub("cmd=evalsha", "")
    assert.equal(1, n, clients)
    assert.equal("OK\n", server:cli("SCRIPT FLUSH"))
    assert.is_true((store:acquire("acct", { requests = 100, per = 1, max_wait = 1, margin = 0 })))
    transport:close()
  end)

  it("selects the URL's database", function()
    local store, transport = store_at(server.url .. "/3")
    assert.is_true((store:acquire("acct", LIMIT)))
    assert.equal("0\n", server:cli("DBSIZE"))
    assert.equal("2\n", server:cli("-n 3 DBSIZE"))   -- the slots and their counter
    transport:close()
    local bad = store_at(server.url .. "/99")
    local ok, err = bad:acquire("acct", LIMIT)
    assert.is_nil(ok)
    assert.equal("Redis refused database 99: ERR DB index is out of range", err)
  end)

  it("says when the server is gone, at once, and when it does not answer, within its timeout", function()
    local store, transport = store_at(server.url, nil, 0.3)
    assert.is_true((store:acquire("acct", LIMIT)))
    server:pause()
    local started = require("truto.core").now()
    local ok, err = store:acquire("acct", LIMIT)
    local took = require("truto.core").now() - started
    server:resume()
    assert.is_nil(ok)
    assert.equal("timed out waiting for Redis", err)
    assert.is_true(took >= 0.25 and took < 1, ("took %.2f s"):format(took))
    server:kill()
    ok, err = store:acquire("acct", LIMIT)
    assert.is_nil(ok)
    assert.matches("^cannot connect to Redis at 127%.0%.0%.1:" .. server.port .. ": ", err)
    server:start_again()
    assert.is_true((store:acquire("acct", LIMIT)))
    transport:close()
  end)

  it("says when the server is not Redis", function()
    emulator.start()
    local store, transport = store_at((emulator.base_url:gsub("^http", "redis")))
    local ok, err = store:acquire("acct", LIMIT)
    emulator.stop()
    transport:close()
    assert.is_nil(ok)
    assert.matches("^not a Redis server %(not a Redis reply: Protocol error", err)
  end)

  if HOSTS then
    for _, host in ipairs {
      { "cqueues", function(f) return controller.run(f) end },
      { "luv", function(f) return luv_loop.run(f) end },
    } do
      it("reserves the same slots through " .. host[1] .. "'s sockets", function()
        local got = host[2](function()
          local store, transport = store_at(server.url, { transport = host[1] })
          local out = {}
          for i = 1, 4 do out[i] = { store:acquire("acct", LIMIT) } end
          transport:close()
          return out
        end)
        assert.same({ true, 0 }, got[1])
        assert.same({ true, 0 }, got[3])
        assert.is_true(got[4][1])
        near(1, got[4][2])
      end)
    end
  end
end)

describe("the Redis store's credentials", function()
  local server
  local PASSWORD = "s3cret pass"

  setup(function() server = redis_server.start { password = PASSWORD } end)
  teardown(function() if server then server:stop() end end)

  it("sends the URL's password, in any of its forms, and never repeats it", function()
    local encoded = PASSWORD:gsub(" ", "%%20")
    for _, url in ipairs {
      ("redis://:%s@127.0.0.1:%d"):format(encoded, server.port),
      ("redis://default:%s@127.0.0.1:%d"):format(encoded, server.port),
      ("redis://127.0.0.1:%d/0?password=%s"):format(server.port, encoded),
    } do
      local store, transport = store_at(url)
      assert.same({ true, 0 }, { store:acquire("acct-" .. url, LIMIT) }, url)
      transport:close()
    end
    local store = store_at(("redis://:wrong@127.0.0.1:%d"):format(server.port))
    local ok, err = store:acquire("acct", LIMIT)
    assert.is_nil(ok)
    assert.equal("Redis refused the credentials: WRONGPASS invalid username-password pair or user is disabled.", err)
    local none = store_at(server.url)
    ok, err = none:acquire("acct", LIMIT)
    assert.is_nil(ok)
    assert.equal("Redis asks for a password: give it in the store's URL (redis://:PASSWORD@host:port)", err)
  end)
end)

describe("the Redis store over TLS (rediss://)", function()
  local server

  setup(function() server = redis_server.start { tls = true } end)
  teardown(function() if server then server:stop() end end)

  it("verifies the server with the client's CA settings", function()
    local store, transport = store_at(server.url, { ca_file = server.ca_file })
    assert.same({ true, 0 }, { store:acquire("acct", LIMIT) })
    transport:close()
    local untrusted = store_at(server.url)
    local ok, err = untrusted:acquire("acct", LIMIT)
    assert.is_nil(ok)
    assert.matches("^TLS handshake with Redis at 127%.0%.0%.1:%d+ failed: ", err)
    local insecure, t2 = store_at(server.url, { insecure = true })
    assert.same({ true, 0 }, { insecure:acquire("acct2", LIMIT) })
    t2:close()
  end)
end)

describe("truto.redis.parse_url", function()
  local parse = require("truto.redis").parse_url
  it("reads every part of a Redis URL", function()
    assert.same({ host = "h", port = 6379, db = 0, tls = false, ip = false }, parse("redis://h"))
    assert.same({ host = "10.0.0.1", port = 6380, db = 2, tls = true, ip = true, user = "u", password = "p:w" },
      parse("rediss://u:p%3Aw@10.0.0.1:6380/2"))
    assert.same({ host = "::1", port = 7000, db = 0, tls = false, ip = true, password = "x" },
      parse("redis://[::1]:7000?password=x"))
  end)
  it("refuses what is not one", function()
    for url, message in pairs {
      ["http://h"] = "a Redis URL starts with redis:// or rediss://",
      ["redis://"] = "a Redis URL needs a host",
      ["redis://h:0"] = "a Redis URL's port is out of range",
      ["redis://h/x"] = "a Redis URL's path is a database number",
    } do
      assert.same({ nil, message }, { parse(url) }, url)
    end
  end)
end)

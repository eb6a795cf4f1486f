-- truto.redis_core: the Redis protocol (csrc/redis.c, on hiredis), without
-- a server: the command writer's bytes and the reply reader's values,
-- bounds and failures.
local resp = require "truto.redis_core"

local function replies(bytes, bound)
  local r = resp.reader(bound or 4096)
  assert(r:feed(bytes))
  local out = {}
  while true do
    local ok, value, err = r:reply()
    assert(ok ~= nil, value)
    if ok == false then break end
    out[#out + 1] = value == nil and { server_error = err } or value
  end
  r:close()
  return out
end

describe("truto.redis_core.command", function()
  it("writes a command as an array of bulk strings, numbers as their text", function()
    assert.equal("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv w\r\n", resp.command { "SET", "k", "v w" })
    assert.equal("*2\r\n$4\r\nINCR\r\n$2\r\n12\r\n", resp.command { "INCR", 12 })
    assert.equal("*2\r\n$4\r\nECHO\r\n$3\r\na\0b\r\n", resp.command { "ECHO", "a\0b" })
    assert.equal("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", resp.command { "ECHO", "" })
  end)

  it("refuses what is not a command", function()
    assert.has_error(function() resp.command {} end, "truto: a Redis command takes 1 to 64 words, got 0")
    assert.has_error(function() resp.command { "GET", {} } end,
      "truto: word 2 of a Redis command must be a string or a number, got table")
    local many = {}
    for i = 1, 65 do many[i] = "x" end
    assert.has_error(function() resp.command(many) end, "truto: a Redis command takes 1 to 64 words, got 65")
    assert.has_error(function() resp.command("GET") end)
  end)
end)

describe("truto.redis_core.reader", function()
  it("reads every kind of reply", function()
    assert.same({ "OK", 42, -7, false, "", "abc", { "abc", 1, { err = "ERR inner" }, false }, {}, false,
                  { server_error = "NOSCRIPT No matching script" }, { { 1 }, "hi" } },
      replies("+OK\r\n:42\r\n:-7\r\n$-1\r\n$0\r\n\r\n$3\r\nabc\r\n*4\r\n$3\r\nabc\r\n:1\r\n-ERR inner\r\n$-1\r\n"
        .. "*0\r\n*-1\r\n-NOSCRIPT No matching script\r\n*2\r\n*1\r\n:1\r\n$2\r\nhi\r\n"))
  end)

  it("keeps integers exact to 64 bits where Lua has them (Lua 5.1, 5.2 and LuaJIT: the nearest double)", function()
    local expected = math.maxinteger and { math.maxinteger, math.mininteger } or { 2 ^ 63, -2 ^ 63 }
    assert.same(expected, replies(":9223372036854775807\r\n:-9223372036854775808\r\n"))
    assert.same({ 9007199254740993 }, replies(":9007199254740993\r\n"))
  end)

  it("says false until a reply is whole, whatever the cut", function()
    local bytes = "*2\r\n$5\r\nhello\r\n:12\r\n"
    for cut = 1, #bytes - 1 do
      local r = resp.reader(64)
      assert.is_true(r:feed(bytes:sub(1, cut)))
      assert.is_false(r:reply())
      assert.is_true(r:feed(bytes:sub(cut + 1)))
      assert.same({ true, { "hello", 12 } }, { r:reply() })
      assert.is_false(r:reply())
    end
  end)

  it("refuses a reply larger than its bound, however it arrives, and stays failed", function()
    local big = "$100\r\n" .. ("x"):rep(100) .. "\r\n"
    local r = resp.reader(64)
    assert.same({ nil, "a Redis reply larger than 64 bytes" }, { r:feed(big) })
    assert.same({ nil, "a Redis reply larger than 64 bytes" }, { r:feed("+OK\r\n") })
    -- An array read element by element is counted whole.
    r = resp.reader(64)
    local bytes = "*10\r\n" .. ("$8\r\nabcdefgh\r\n"):rep(10)
    local failed
    for i = 1, #bytes, 10 do
      local ok, err = r:feed(bytes:sub(i, i + 9))
      if not ok then failed = err break end
      assert.is_false(r:reply())
    end
    assert.equal("a Redis reply larger than 64 bytes", failed)
    -- An array claiming more elements than the bound could hold fails at its header.
    r = resp.reader(64)
    assert.is_true(r:feed("*1000000000\r\n"))
    assert.same({ nil, "a Redis reply larger than 64 bytes" }, { r:reply() })
    -- Nested arrays count their claims together: 8 arrays of 10 elements
    -- (80 claimed) cannot come in a bound of 64 bytes, not even one nested
    -- in another.
    r = resp.reader(64)
    assert.is_true(r:feed("*10\r\n*10\r\n"))
    assert.same({ nil, "a Redis reply larger than 64 bytes" }, { r:reply() })
    r = resp.reader(128)
    assert.is_true(r:feed("*2\r\n*10\r\n" .. (":1\r\n"):rep(10) .. "*10\r\n" .. (":2\r\n"):rep(10)))
    assert.equal(2, #select(2, r:reply()))
    -- Replies read one after another are each within the bound.
    r = resp.reader(64)
    for _ = 1, 20 do
      assert.is_true(r:feed("$40\r\n" .. ("y"):rep(40) .. "\r\n"))
      assert.same({ true, ("y"):rep(40) }, { r:reply() })
    end
  end)

  it("refuses bytes that are not RESP, and arrays nested past 7", function()
    local r = resp.reader(64)
    assert.is_true(r:feed("%3\r\n"))
    assert.same({ nil, 'not a Redis reply: Protocol error, got "%" as reply type byte' }, { r:reply() })
    assert.same({ nil, 'not a Redis reply: Protocol error, got "%" as reply type byte' }, { r:feed("+OK\r\n") })
    r = resp.reader(1024)
    assert.is_true(r:feed(("*1\r\n"):rep(9) .. ":1\r\n"))
    assert.same({ nil, "not a Redis reply: No support for nested multi bulk replies with depth > 7" },
      { r:reply() })
  end)

  it("refuses a bound below 16 bytes and use after close", function()
    assert.has_error(function() resp.reader(15) end, "truto: a Redis reader's bound must be at least 16 bytes")
    local r = resp.reader(16)
    r:close()
    r:close()
    assert.has_error(function() r:feed("+OK\r\n") end, "truto: Redis reader is closed")
    assert.matches("^truto.RedisReader %(closed, ", tostring(r))
  end)
end)

describe("truto.redis's one deadline per operation", function()
  local redis = require "truto.redis"

  -- A socket on a fake clock whose server answers each command after 0.75 s
  -- (its reply is "+OK"); it records the timeouts it is given.
  local function slow_env()
    local clock = { t = 0 }
    local env = { timeouts = {} }
    function env.now() return clock.t end
    function env.tcp()
      local sock, queued = {}, {}
      function sock.settimeout(_, ms) env.timeouts[#env.timeouts + 1] = ms sock.ms = ms end
      function sock.connect() return 1 end
      function sock.getreusedtimes() return 0 end
      function sock.send(_, data)
        queued[#queued + 1] = data
        return #data
      end
      function sock.receiveany()
        local wait = math.min(0.75, sock.ms / 1000)
        clock.t = clock.t + wait
        if wait < 0.75 then return nil, "timeout" end
        table.remove(queued, 1)
        return "+OK\r\n"
      end
      function sock.close() end
      return sock
    end
    return env
  end

  it("gives every step of a connection what is left of its time, not the whole of it", function()
    local env = slow_env()
    -- AUTH and SELECT, 0.75 s each, within 1 s: SELECT runs out.
    local conn, err = redis.connect(env, assert(redis.parse_url("redis://:pw@h/2")), 1)
    assert.is_nil(conn)
    assert.same({ kind = "store", message = "timed out waiting for Redis" }, err)
    assert.same({ 1000, 1000, 1000, 250, 250 }, env.timeouts)
    -- Given 2.5 s, both steps and one command fit (2.25 s); a second command does not.
    env = slow_env()
    conn = assert(redis.connect(env, assert(redis.parse_url("redis://:pw@h/2")), 2.5))
    assert.equal("OK", conn:call { "PING" })
    local value, perr = conn:call { "PING" }
    assert.is_nil(value)
    assert.same({ kind = "store", message = "timed out waiting for Redis" }, perr)
  end)
end)

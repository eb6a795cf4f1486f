-- Large request bodies (truto.Body): build_request hands a JSON body over
-- 1 MiB over in the buffer it was written in, never as a Lua string, and
-- every transport sends those bytes exactly: libcurl (a session, a batch's
-- multi) in this process, cosockets inside the app nginx of spec/ngx; the
-- emulator's request log holds what arrived.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local truto = require "truto"
local emu = require "spec.support.emulator"
local ngx_app = require "spec.support.ngx_app"
local sh = require "spec.support.shell"
local large_body = require("bench.support").large_body

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }
local MiB = 1024 * 1024
local THRESHOLD = MiB              -- csrc/truto.h TRUTO_BODY_THRESHOLD

local function build(body)
  return core.build_request { method = "PATCH", base_url = "http://h", path = { "x" }, body = body }
end

-- A body whose JSON, {"s":"aaa..."}, is exactly n bytes long.
local function body_of_length(n)
  return { s = ("a"):rep(n - 8) }
end

describe("build_request of a large body", function()
  it("keeps a body up to the threshold a string, and makes a larger one a truto.Body", function()
    local at = build(body_of_length(THRESHOLD))
    assert.equal("string", type(at.body))
    assert.equal(THRESHOLD, #at.body)
    local over = build(body_of_length(THRESHOLD + 1))
    assert.equal("userdata", type(over.body))
    assert.equal("truto.Body", getmetatable(over.body).__name)
    assert.equal(THRESHOLD + 1, #over.body)
  end)

  it("holds exactly the JSON encode_json writes, with the same headers a string body has", function()
    local body = large_body(3 * MiB)
    local before = core.encode_json(body)
    local req = build(body)
    local text = tostring(req.body)
    assert.equal(before, text)
    assert.equal(#text, #req.body)
    assert.equal(before, core.encode_json(body))   -- the caller's table is unchanged
    local small = build({ amount = 1 })
    assert.same(small.headers, req.headers)
    assert.equal(small.url, req.url)
  end)

  it("slices like string.sub, negative and out-of-range positions included", function()
    -- The oracle is the interpreter's string.sub: LuaJIT 2.1's compiled one
    -- gives bytes for an end before the string's start (s:sub(2, -#s - 5)).
    local jit = rawget(_G, "jit")
    if jit then jit.off(true, true) end
    local req = build(body_of_length(THRESHOLD + 10))
    local text = tostring(req.body)
    local n = #text
    local positions = { -n - 5, -n - 1, -n, -n + 1, -11, -1, 0, 1, 2, 10, n - 1, n, n + 1, n + 100,
                        math.maxinteger, math.mininteger }
    for _, i in ipairs(positions) do
      assert.equal(text:sub(i), req.body:sub(i), "i = " .. i)
      for _, j in ipairs(positions) do
        local want, got = text:sub(i, j), req.body:sub(i, j)
        assert.equal(#want, #got, ("sub(%d, %d)"):format(i, j))
        assert.equal(want, got, ("sub(%d, %d)"):format(i, j))
      end
    end
    assert.has_error(function() req.body:sub("x") end)
    assert.has_error(function() req.body:sub() end)
  end)

  it("closes once, after which it raises a clear error; a closed body is refused by a transfer", function()
    local req = build(body_of_length(THRESHOLD + 1))
    req.body:close()
    req.body:close()
    for _, use in ipairs {
      function() return tostring(req.body) end,
      function() return #req.body end,
      function() return req.body:sub(1, 2) end,
    } do
      local ok, err = pcall(use)
      assert.is_false(ok)
      assert.matches("truto: body is closed", err, 1, true)
    end
    local s = curl_core.session {}
    local ok, err = pcall(s.perform, s, { method = "PATCH", url = "http://127.0.0.1:9/", body = req.body })
    s:close()
    assert.is_false(ok)
    assert.matches("truto: request body is closed", err, 1, true)
  end)
end)

describe("a large body over the wire", function()
  local client, app, session

  setup(function()
    local ok, err = pcall(function()
      emu.start()
      client = emu.client { sleep = function() end }
      app = ngx_app.start_app { BASE_URL = emu.base_url }
      session = curl_core.session { timeout = 120 }
    end)
    if not ok then
      if app then app:stop() end
      emu.stop()
      error(err, 0)
    end
  end)

  teardown(function()
    if session then session:close() end
    if client then client:close() end
    if app then app:stop() end
    emu.stop()
  end)

  before_each(function() emu.reset() end)

  -- The one request in the log (or the n of them): each body byte-exact,
  -- its Content-Length the JSON's length.
  local function assert_arrived(json, n)
    local log = emu.requests()
    assert.equal(n or 1, #log)
    for _, entry in ipairs(log) do
      assert.equal("PATCH", entry.method)
      assert.equal(tostring(#json), entry.headers["content-length"])
      assert.equal(#json, #entry.body)
      assert.is_true(json == entry.body, "the body arrived changed")
    end
    return log
  end

  it("arrives byte-exact through a session (libcurl), and on_request sees it as a string", function()
    local seen = {}
    local hooked = emu.client { on_request = function(req) seen[#seen + 1] = req.body end }
    local body = large_body(3 * MiB)
    local json = core.encode_json(body)
    local record, response = hooked.unified_api:update("crm", "opportunities", "10000005", body, Q)
    hooked:close()
    assert.equal(200, response.status)
    assert.equal(#body.line_items, #record.line_items)
    assert_arrived(json)
    assert.equal(1, #seen)
    assert.equal("string", type(seen[1]))
    assert.is_true(json == seen[1], "on_request saw another body")
  end)

  it("is resent, the same bytes, after a 429", function()
    emu.faults { { method = "PATCH", path_prefix = "/unified/crm/opportunities", status = 429, retry_after = "0",
                   count = 1 } }
    local body = large_body(3 * MiB)
    local record, response = client.unified_api:update("crm", "opportunities", "10000005", body, Q)
    assert.is_table(record, tostring(response))
    assert.equal(2, response.attempts)
    local log = assert_arrived(core.encode_json(body), 2)
    assert.equal(log[1].headers["idempotency-key"], log[2].headers["idempotency-key"])
  end)

  it("arrives byte-exact in a batch (libcurl multi), beside small bodies", function()
    local big = large_body(3 * MiB)
    local results = client:batch {
      { api = "unified", method = "update", model = "crm", resource = "opportunities", id = "10000004",
        body = { amount = 1 }, query = Q },
      { api = "unified", method = "update", model = "crm", resource = "opportunities", id = "10000005",
        body = big, query = Q },
    }
    assert.equal(1, results[1][1].amount)
    assert.equal(#big.line_items, #results[2][1].line_items)
    local log = emu.requests()
    assert.equal(2, #log)
    local by_path = {}
    for _, entry in ipairs(log) do by_path[entry.path] = entry.body end
    assert.equal('{"amount":1}', by_path["/unified/crm/opportunities/10000004"])
    assert.is_true(core.encode_json(big) == by_path["/unified/crm/opportunities/10000005"])
  end)

  it("stays alive in a multi while its transfer runs, and cannot be closed meanwhile", function()
    local json = core.encode_json(large_body(3 * MiB))
    local m = curl_core.multi {}
    local req = core.build_request { method = "PATCH", base_url = emu.base_url,
                                     path = { "unified", "crm", "opportunities", "10000005" }, query = Q,
                                     body = large_body(3 * MiB), token = emu.TOKEN }
    local id = m:add { method = req.method, url = req.url, headers = req.headers, body = req.body }
    local ok, err = pcall(req.body.close, req.body)
    assert.is_false(ok)
    assert.matches("truto: cannot close a body while a transfer sends it", err, 1, true)
    req = nil   -- luacheck: ignore 311 (the multi alone keeps the Body now)
    collectgarbage()
    collectgarbage()
    local done = {}
    while #done == 0 do done = m:wait(60) end
    m:close()
    assert.equal(id, done[1].id)
    assert.equal(200, done[1].status)
    assert_arrived(json)
  end)

  it("arrives byte-exact from inside nginx (the cosocket transport), and again after a 429", function()
    local function large_update()
      local status, _, text = session:perform { url = app.base_url .. "/large-update?id=10000005&bytes="
        .. 3 * MiB }
      assert.equal(200, status, text .. app:log())
      return truto.decode_json(text)
    end
    local json = core.encode_json(large_body(3 * MiB))
    assert.same({ status = 200, attempts = 1, bytes = #json }, large_update())
    assert_arrived(json)

    emu.reset()
    emu.faults { { method = "PATCH", path_prefix = "/unified/crm/opportunities", status = 429, retry_after = "0",
                   count = 1 } }
    assert.same({ status = 200, attempts = 2, bytes = #json }, large_update())
    assert_arrived(json, 2)
  end)

  it("raises peak RSS by at most 1.1x a 10 MiB body, in a fresh process (libcurl loaded first)", function()
    -- The body's table is built before the baseline: the caller holds it
    -- anyway.  The request's bytes are then written once, in C memory,
    -- and sent from there.  The emulator answers the create with a small
    -- record (as B7's static location does), not the 10 MiB one echoed.
    -- Measured 0.99x (1.99x when the body became a Lua string as well):
    -- 1.1x leaves a MiB for the answer and the allocator.
    emu.faults { { method = "POST", path_prefix = "/unified/crm/opportunities", status = 201,
                   body = { id = "created" }, count = 1 } }
    local script = [[
      local memory = require "spec.support.memory"
      local truto = require "truto"
      local base_url, account, bytes = ...
      local client = truto.new { token = "test-token", base_url = base_url }
      local q = { integrated_account_id = account }
      assert(client.unified_api:update("crm", "opportunities", "10000005", { amount = 1 }, q))
      local body = require("bench.support").large_body(tonumber(bytes))
      local json_bytes = #truto.encode_json(body)
      local growth = memory.watch()
      local record, err = client.unified_api:create("crm", "opportunities", body, q)
      assert(record and record.id == "created", tostring(err))
      print(growth(), json_bytes)
    ]]
    local file = os.tmpname()
    assert(sh.write_file(file, script))
    local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = "build/5.4/?.so;;" },
      "lua5.4 " .. sh.quote(file) .. " " .. sh.quote(emu.base_url) .. " " .. ACCOUNT .. " " .. 10 * MiB)
    os.remove(file)
    assert(ok, err)
    local growth_kb, json_bytes = out:match("^(%d+)\t(%d+)\n$")
    growth_kb, json_bytes = tonumber(growth_kb), tonumber(json_bytes)
    assert.is_true(json_bytes >= 10 * MiB, out)
    local ratio = growth_kb * 1024 / json_bytes
    print(("peak RSS growth %.1f MiB for a %.1f MiB body: %.2fx"):format(growth_kb / 1024, json_bytes / MiB, ratio))
    assert.is_true(ratio <= 1.1, ("%.2fx"):format(ratio))
  end)
end)

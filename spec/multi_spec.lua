-- truto.curl_core.multi: the libcurl multi handle (csrc/multi.c), concurrent
-- transfers against the emulator over loopback.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local truto = require "truto"
local emu = require "spec.support.emulator"

local TOKEN, ACCOUNT = emu.TOKEN, emu.ACCOUNT
local AUTH = "Authorization: Bearer " .. TOKEN

local base
local function url(path)
  local sep = path:find("?", 1, true) and "&" or "?"
  return base .. path .. sep .. "integrated_account_id=" .. ACCOUNT
end

-- Waits until nothing is pending; returns the results keyed by id and the
-- number of entries seen (an id reported twice is an error).
local function drain(m, limit)
  local by_id, n = {}, 0
  local deadline = core.now() + (limit or 20)
  while m:pending() > 0 do
    assert(core.now() < deadline, "transfers still pending")
    for _, r in ipairs(m:wait(1)) do
      assert(by_id[r.id] == nil, "id " .. tostring(r.id) .. " reported twice")
      by_id[r.id] = r
      n = n + 1
    end
  end
  return by_id, n
end

local function get(path, extra)
  local headers = { AUTH }
  for _, h in ipairs(extra or {}) do headers[#headers + 1] = h end
  return { method = "GET", url = url(path), headers = headers }
end

describe("curl_core.multi", function()
  describe("arguments", function()
    it("checks the options like curl_core.session", function()
      assert.has_error(function() curl_core.multi "x" end)
      assert.has_error(function() curl_core.multi { bogus = 1 } end, "truto: unknown multi option 'bogus'")
      assert.has_error(function() curl_core.multi { timeout = 0 } end)
      assert.has_error(function() curl_core.multi { timeout = "1" } end)
      assert.has_error(function() curl_core.multi { connect_timeout = -1 } end)
      assert.has_error(function() curl_core.multi { http2 = "yes" } end)
      assert.has_error(function() curl_core.multi { insecure = 1 } end)
      assert.has_error(function() curl_core.multi { ca_file = "" } end)
      assert.has_error(function() curl_core.multi { max_response_bytes = 1.5 } end)
      assert.has_error(function() curl_core.multi { max_host_connections = 0 } end)
      assert.has_error(function() curl_core.multi { max_host_connections = 2.5 } end)
      assert.has_error(function() curl_core.multi { max_host_connections = "4" } end)
      assert.has_error(function() curl_core.multi { follow_redirects = true } end)
      local m = curl_core.multi { timeout = 5, connect_timeout = 1, http2 = false, insecure = false,
                             max_response_bytes = 10, max_host_connections = 4 }
      assert.equal(0, m:pending())
      assert.matches("^truto.Multi %(", tostring(m))
      m:close()
    end)

    it("checks requests like session:perform, before anything starts", function()
      local m = curl_core.multi()
      local u = "http://127.0.0.1:1/x"
      local bad = {
        { "x" },
        { { url = u, bogus = true }, "truto: unknown request field 'bogus'" },
        { { method = "GET" }, "truto: request url must be a string, got nil" },
        { { url = "ftp://x/" }, "truto: request url must start with http:// or https://" },
        { { url = "http://a b/" } },
        { { method = "BAD METHOD", url = u } },
        { { method = 1, url = u } },
        { { url = u, headers = "A: b" } },
        { { url = u, headers = { "A: b", 42 } }, "truto: request headers[2] must be a string, got number" },
        { { url = u, headers = { "A: b", "C: d\r\nE: f" } } },
        { { url = u, headers = { "no colon" } } },
        { { url = u, body = 5 } },
        { { method = "HEAD", url = u, body = "x" } },
        { { url = u, timeout = "1" } },
        { { url = u, timeout = -1 } },
        { { url = u, connect_timeout = 0 } },
        { { url = u, max_response_bytes = -1 } },
        { { url = u, fresh_connect = 1 } },
      }
      for i, case in ipairs(bad) do
        local ok, err = pcall(m.add, m, case[1])
        assert(not ok, "case " .. i .. " did not raise")
        if case[2] then assert.equal(case[2], err:gsub("^.-:%d+: ", "")) end
      end
      assert.equal(0, m:pending())
      -- a failed add uses no id: the next one is 1
      assert.equal(1, m:add { url = u, connect_timeout = 1 })
      assert.equal(2, m:add { url = u, connect_timeout = 1 })
      assert.equal(2, m:pending())
      assert.has_error(function() m:wait "1" end)
      assert.has_error(function() m:wait(-1) end)
      assert.has_error(function() m:wait(0 / 0) end)
      m:close()
      assert.equal(0, m:pending())
      m:close()                 -- idempotent
      assert.has_error(function() m:add { url = u } end, "truto: multi is closed")
      assert.has_error(function() m:wait(0) end, "truto: multi is closed")
      assert.matches("closed", tostring(m))
      assert.has_error(function() curl_core.multi().add({}, { url = u }) end)
    end)
  end)

  describe("against the emulator", function()
    setup(function()
      base = emu.start()
    end)

    teardown(function()
      emu.stop()
    end)

    before_each(function()
      emu.reset()
    end)

    it("runs 50 delayed GETs 16 at a time: every id once, in about ceil(50/16) delays", function()
      local m = curl_core.multi { max_host_connections = 16 }
      local ids, expected = {}, {}
      local t0 = core.now()
      for i = 1, 50 do
        local req
        if i % 10 == 0 then
          req = get("/unified/crm/nonexistent", { "X-Emulator-Delay-Ms: 200" })
          expected[i] = 404
        else
          req = get("/unified/crm/opportunities/23423523", { "X-Emulator-Delay-Ms: 200" })
          expected[i] = 200
        end
        local id = m:add(req)
        assert.equal(i, id)
        ids[i] = id
      end
      local added = core.now() - t0
      assert.equal(50, m:pending())
      local results, n = drain(m)
      local elapsed = core.now() - t0
      assert.equal(50, n)
      local connections = 0
      for i, id in ipairs(ids) do
        local r = results[id]
        assert.is_nil(r.err)
        assert.equal(expected[i], r.status)
        assert.equal("application/json", r.headers["content-type"]:match("^[^;]+"))
        local doc = truto.decode_json(r.body)
        if r.status == 200 then assert.equal("23423523", doc.id) else assert.equal(404, doc.statusCode) end
        assert.equal("1.1", r.info.http_version)
        assert.is_number(r.info.total_time)
        connections = connections + r.info.new_connections
      end
      print(string.format("\n  multi: 50 x 200 ms, 16 connections: add %.3f s, all done %.3f s, %d new connections",
                          added, elapsed, connections))
      assert.is_true(elapsed < 2, "took " .. elapsed .. " s")
      assert.is_true(elapsed >= 0.6, "faster than 4 rounds of 200 ms: " .. elapsed .. " s")
      assert.is_true(connections <= 16, connections .. " connections")

      -- The pool and the connection cache are reused: no new connection.
      local again = {}
      for i = 1, 16 do again[i] = m:add(get("/unified/crm/opportunities/23423523")) end
      assert.equal(51, again[1])
      local res = drain(m)
      local fresh = 0
      for _, id in ipairs(again) do
        assert.equal(200, res[id].status)
        fresh = fresh + res[id].info.new_connections
      end
      assert.equal(0, fresh)
      m:close()
    end)

    it("sends PATCH bodies byte-exact", function()
      local m = curl_core.multi()
      local bodies = {}
      local big = {}
      for i = 1, 5000 do big[i] = string.format("%05d", i) end
      for i = 1, 8 do
        local body = truto.encode_json {
          name = "deal " .. i .. " \195\169\228\184\173\240\159\152\128 \"q\" \\ /",
          description = i == 8 and table.concat(big, ",") or ("x"):rep(i * 100),
          amount = i * 1000.5,
        }
        bodies[m:add {
          method = "PATCH", url = url("/unified/crm/opportunities/23423523"),
          headers = { AUTH, "Content-Type: application/json", "X-Request-No: " .. i }, body = body,
        }] = body
      end
      -- an explicit empty body, and a PATCH without one
      bodies[m:add { method = "PATCH", url = url("/custom/echo"), headers = { AUTH }, body = "" }] = ""
      bodies[m:add { method = "POST", url = url("/custom/echo"), headers = { AUTH } }] = ""
      local results, n = drain(m)
      assert.equal(10, n)
      for id in pairs(bodies) do
        assert.is_nil(results[id].err)
      end
      local log = emu.requests()
      assert.equal(10, #log)
      local seen = 0
      for _, entry in ipairs(log) do
        local no = tonumber(entry.headers["x-request-no"])
        if no then
          assert.equal("PATCH", entry.method)
          assert.equal(bodies[no], entry.body)
          assert.equal("application/json", entry.headers["content-type"])
          assert.is_nil(entry.headers["expect"])
          seen = seen + 1
        else
          assert.equal("", entry.body)
          assert.equal("0", entry.headers["content-length"])
          assert.is_nil(entry.headers["content-type"])
        end
      end
      assert.equal(8, seen)
      m:close()
    end)

    it("reports per-transfer errors without disturbing the others", function()
      local m = curl_core.multi { max_host_connections = 8 }
      local ok1 = m:add(get("/unified/crm/opportunities/23423523", { "X-Emulator-Delay-Ms: 300" }))
      local timeout = m:add {
        method = "GET", url = url("/unified/crm/opportunities/23423523"),
        headers = { AUTH, "X-Emulator-Delay-Ms: 3000" }, timeout = 0.3,
      }
      local drop = m:add(get("/unified/crm/users/111", { "X-Emulator-Fault: drop" }))
      local truncate = m:add(get("/unified/crm/users/111", { "X-Emulator-Fault: truncate" }))
      local refused = m:add { method = "GET", url = "http://127.0.0.1:1/x", headers = {}, connect_timeout = 2 }
      local too_large = m:add {
        method = "GET", url = base .. "/_emulator/blob?bytes=100000", headers = {}, max_response_bytes = 1000,
      }
      local bad_token = m:add { method = "GET", url = url("/unified/crm/opportunities/23423523"),
                                headers = { "Authorization: Bearer nope" } }
      local ok2 = m:add(get("/unified/crm/opportunities/23423523"))
      local results, n = drain(m)
      assert.equal(8, n)
      local function kind(id)
        local r = results[id]
        assert.is_table(r.err, "transfer " .. id .. " succeeded")
        assert.is_nil(r.status)
        assert.is_nil(r.body)
        assert.is_string(r.err.message)
        assert.is_number(r.err.curl_code)
        return r.err.kind
      end
      assert.equal("timeout", kind(timeout))
      assert.equal(28, results[timeout].err.curl_code)
      assert.equal("network", kind(drop))
      assert.equal(52, results[drop].err.curl_code)
      assert.equal("protocol", kind(truncate))
      assert.equal(18, results[truncate].err.curl_code)
      assert.equal("connect", kind(refused))
      assert.equal(7, results[refused].err.curl_code)
      assert.equal("too_large", kind(too_large))
      assert.matches("max_response_bytes", results[too_large].err.message)
      assert.equal(401, results[bad_token].status)
      for _, id in ipairs { ok1, ok2 } do
        assert.is_nil(results[id].err)
        assert.equal(200, results[id].status)
        assert.equal("23423523", truto.decode_json(results[id].body).id)
      end
      -- the multi still works afterwards
      local id = m:add(get("/unified/crm/opportunities/23423523"))
      assert.equal(200, drain(m)[id].status)
      m:close()
    end)

    it("uses max_response_bytes from the multi, per transfer overridable", function()
      local m = curl_core.multi { max_response_bytes = 1000 }
      local small = m:add { method = "GET", url = base .. "/_emulator/blob?bytes=500", headers = {} }
      local big = m:add { method = "GET", url = base .. "/_emulator/blob?bytes=5000", headers = {} }
      local allowed = m:add { method = "GET", url = base .. "/_emulator/blob?bytes=5000", headers = {},
                              max_response_bytes = 5000 }
      local r = drain(m)
      assert.equal(500, #r[small].body)
      assert.equal("too_large", r[big].err.kind)
      assert.equal(5000, #r[allowed].body)
      m:close()
    end)

    it("wait returns what finished, an empty array when nothing did in time", function()
      local m = curl_core.multi()
      assert.same({}, m:wait(0))
      local slow = m:add(get("/unified/crm/opportunities/23423523", { "X-Emulator-Delay-Ms: 600" }))
      local t0 = core.now()
      assert.same({}, m:wait(0))   -- one round, no waiting
      assert.is_true(core.now() - t0 < 0.1)
      local fast = m:add(get("/unified/crm/opportunities/23423523"))
      local first = m:wait(5)
      while #first == 0 do first = m:wait(5) end
      assert.equal(1, #first)
      assert.equal(fast, first[1].id)
      assert.equal(1, m:pending())
      t0 = core.now()
      assert.same({}, m:wait(0.15))
      local waited = core.now() - t0
      assert.is_true(waited >= 0.14 and waited < 0.5, "waited " .. waited)
      local rest = m:wait()      -- no limit: until one finishes
      assert.equal(1, #rest)
      assert.equal(slow, rest[1].id)
      assert.equal(0, m:pending())
      assert.same({}, m:wait())  -- nothing pending: returns at once
      m:close()
    end)

    it("close aborts transfers in flight; the collector does the same", function()
      local m = curl_core.multi()
      for _ = 1, 20 do m:add(get("/unified/crm/opportunities/23423523", { "X-Emulator-Delay-Ms: 2000" })) end
      m:wait(0.05)
      assert.equal(20, m:pending())
      local t0 = core.now()
      m:close()
      assert.is_true(core.now() - t0 < 0.5)
      assert.equal(0, m:pending())
      m:close()

      do
        local g = curl_core.multi()
        for _ = 1, 10 do g:add(get("/unified/crm/opportunities/23423523", { "X-Emulator-Delay-Ms: 2000" })) end
        g:wait(0.05)
      end
      collectgarbage()
      collectgarbage()

      if _VERSION == "Lua 5.4" then
        local f = assert(load([[
          local curl_core, req = ...
          local c <close> = curl_core.multi()
          c:add(req)
          c:wait(0.05)
          return c
        ]]))
        local c = f(curl_core, get("/unified/crm/opportunities/23423523", { "X-Emulator-Delay-Ms: 2000" }))
        assert.equal(0, c:pending())
        assert.matches("closed", tostring(c))
      end
    end)

    it("a failed add part-way leaks nothing and leaves the multi usable", function()
      local m = curl_core.multi()
      local good = m:add(get("/unified/crm/opportunities/23423523"))
      for _ = 1, 200 do
        assert.has_error(function()
          m:add { method = "PATCH", url = url("/unified/crm/opportunities/23423523"),
                  headers = { AUTH, "Content-Type: application/json", {} }, body = "{}" }
        end)
      end
      assert.equal(1, m:pending())
      local r = drain(m)
      assert.equal(200, r[good].status)
      assert.equal(good + 1, m:add(get("/unified/crm/opportunities/23423523")))
      drain(m)
      m:close()
    end)
  end)
end)

-- The Truto emulator over real HTTP (curl command line), started and stopped
-- with lua/truto/emulator.lua.
local cjson = require "cjson"
local emulator = require "truto.emulator"

local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local OPPS = "/unified/crm/opportunities"

local sh = require "spec.support.shell"
local shell_quote = sh.quote

describe("truto emulator", function()
  local handle

  -- Runs curl; returns { status, headers (lower-case names), body, json, exit }.
  local function http(method, path, options)
    options = options or {}
    local headers_file = os.tmpname()
    local args = { "curl -sg -X", method, "-D", shell_quote(headers_file),
                   "--max-time", tostring(options.max_time or 5) }
    if options.token ~= false then
      args[#args + 1] = "-H " .. shell_quote("Authorization: Bearer " .. (options.token or "test-token"))
    end
    for name, value in pairs(options.headers or {}) do
      args[#args + 1] = "-H " .. shell_quote(name .. ": " .. value)
    end
    if options.body then args[#args + 1] = "--data-binary " .. shell_quote(options.body) end
    args[#args + 1] = shell_quote(handle.base_url .. path)
    local pipe = io.popen(table.concat(args, " ") .. "; echo \"\n$?\"")
    local output = pipe:read("*a")
    pipe:close()
    local body, exit_code = output:match("^(.*)\n(%d+)\n$")
    local f = io.open(headers_file, "rb")
    local raw_headers = f:read("*a")
    f:close()
    os.remove(headers_file)
    local res = { status = tonumber(raw_headers:match("^HTTP/%S+ (%d+)")), headers = {}, body = body,
                  exit = tonumber(exit_code) }
    for name, value in raw_headers:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do res.headers[name:lower()] = value end
    local ok, decoded = pcall(cjson.decode, body)
    if ok then res.json = decoded end
    return res
  end

  local function url(path, query)
    return path .. "?integrated_account_id=" .. ACCOUNT .. (query and ("&" .. query) or "")
  end

  setup(function()
    handle = assert(emulator.start())
  end)

  teardown(function()
    if handle then handle:stop() end
  end)

  before_each(function()
    assert.equal(200, http("POST", "/_emulator/reset", { token = false }).status)
  end)

  it("starts on a loopback port and stops, removing its temp dir", function()
    assert.matches("^http://127%.0%.0%.1:%d+$", handle.base_url)
    local second = assert(emulator.start())
    assert.not_equal(handle.base_url, second.base_url)
    local prefix = second.prefix
    second:stop()
    assert.is_nil(io.open(prefix .. "/nginx.conf"))
  end)

  describe("auth and integrated accounts", function()
    it("answers 401 envelopes without or with an unknown token", function()
      local res = http("GET", url(OPPS), { token = false })
      assert.equal(401, res.status)
      assert.equal("application/json", res.headers["content-type"])
      assert.same({ statusCode = 401, error = "Unauthorized",
                    message = "Missing Authorization header with Bearer token" }, res.json)
      assert.equal(401, http("GET", url(OPPS), { token = "nope" }).status)
      assert.equal(200, http("GET", url(OPPS), { token = "other-token" }).status)
    end)

    it("requires a known integrated_account_id and blocks the blocked account", function()
      local res = http("GET", OPPS)
      assert.equal(400, res.status)
      assert.matches("integrated_account_id", res.json.message)
      assert.equal(400, http("GET", OPPS .. "?integrated_account_id=nope").status)
      res = http("GET", OPPS .. "?integrated_account_id=blocked-account")
      assert.equal(503, res.status)
      assert.same({ statusCode = 503, error = "Service Unavailable", message = "Integrated account is blocked" },
        res.json)
    end)

    it("gzips JSON for clients that accept it", function()
      local res = http("GET", url(OPPS), { headers = { ["Accept-Encoding"] = "gzip" } })
      assert.equal("gzip", res.headers["content-encoding"])
      assert.equal(tostring(#http("GET", url(OPPS)).body), http("GET", url(OPPS)).headers["content-length"])
    end)

    it("sends ratelimit headers", function()
      local res = http("GET", url(OPPS))
      assert.equal("50;w=10", res.headers["ratelimit-limit"])
      assert.matches("^%d+$", res.headers["ratelimit-remaining"])
      assert.matches("^%d+$", res.headers["ratelimit-reset"])
    end)
  end)

  describe("unified records", function()
    it("gets the documented opportunity and ids with reserved characters", function()
      local res = http("GET", url(OPPS .. "/23423523"))
      assert.equal(200, res.status)
      local o = res.json
      assert.equal("23423523", o.id)
      assert.equal(1000, o.amount)
      assert.same({ id = "appointmentscheduled", name = "Appointment Scheduled" }, o.stage)
      assert.same({ { id = "7001" } }, o.contact)
      assert.equal("Acme renewal 2024", o.remote_data.properties.dealname)
      assert.equal("alt:ref:imported@frontapp.com_t:50603",
        http("GET", url(OPPS .. "/alt%3Aref%3Aimported%40frontapp.com_t%3A50603")).json.id)
      assert.equal("a/b", http("GET", url(OPPS .. "/a%2Fb")).json.id)
      res = http("GET", url(OPPS .. "/missing"))
      assert.equal(404, res.status)
      assert.is_true(res.json.truto_is_remote_error)
    end)

    it("paginates with opaque cursors, 10 per page by default", function()
      local first = http("GET", url(OPPS, "next_cursor=")).json
      assert.equal(10, #first.result)
      assert.equal(10, first.result_count)
      assert.equal(cjson.null, first.prev_cursor)
      local seen, cursor, pages = #first.result, first.next_cursor, 1
      while cursor ~= cjson.null do
        local page = http("GET", url(OPPS, "limit=7&next_cursor=" .. cursor:gsub("[+/=]", function(c)
          return string.format("%%%02X", c:byte())
        end))).json
        seen, cursor, pages = seen + #page.result, page.next_cursor, pages + 1
      end
      assert.equal(30, seen)
      assert.equal(4, pages)
      assert.equal(400, http("GET", url(OPPS, "next_cursor=garbage")).status)
    end)

    it("PATCH merges fields, clears nulls, keeps empty arrays and merges remote_data", function()
      local res = http("PATCH", url(OPPS .. "/23423523"), {
        body = '{"name":"Renamed","description":null,"tags":[],"amount":12.5,'
          .. '"remote_data":{"properties":{"hs_custom":"x"}}}' })
      assert.equal(200, res.status)
      assert.equal("Renamed", res.json.name)
      assert.is_nil(res.json.description)
      assert.matches('"tags":%[%]', res.body)
      assert.equal(12.5, res.json.amount)
      assert.equal("x", res.json.remote_data.properties.hs_custom)
      assert.equal("Renamed", res.json.remote_data.properties.dealname)
      assert.not_equal("2024-02-03T10:00:00.000Z", res.json.updated_at)
      assert.equal("Renamed", http("GET", url(OPPS .. "/23423523")).json.name)
      assert.equal(400, http("PATCH", url(OPPS .. "/23423523"), { body = "{oops" }).status)
      assert.equal(404, http("PATCH", url(OPPS .. "/missing"), { body = "{}" }).status)
    end)

    it("creates (201) per integrated account, rejects a missing name, deletes", function()
      local res = http("POST", url(OPPS), { body = '{"name":"Fresh","amount":5}' })
      assert.equal(201, res.status)
      local id = res.json.id
      assert.equal("Fresh", res.json.name)
      assert.equal(200, http("GET", url(OPPS .. "/" .. id)).status)
      assert.equal(404, http("GET", OPPS .. "/" .. id .. "?integrated_account_id=acc-2").status)
      res = http("POST", url(OPPS), { body = '{"amount":5}' })
      assert.equal(400, res.status)
      assert.is_true(res.json.truto_is_remote_error)
      assert.same({ "name" }, res.json.truto_error_insight.missing_required_body_fields.value)
      res = http("DELETE", url(OPPS .. "/" .. id))
      assert.same({ id = id }, res.json)
      assert.equal(404, http("GET", url(OPPS .. "/" .. id)).status)
      assert.equal(404, http("GET", url("/unified/crm/nonsense")).status)
    end)

    it("runs custom methods and answers meta", function()
      local res = http("POST", url("/unified/crm/accounts/merge"), { body = '{"ids":["5001","5002"]}' })
      assert.equal(200, res.status)
      assert.equal("5001", res.json.result.id)
      assert.same({ "5002" }, res.json.result.merged_ids)
      assert.equal(404, http("POST", url("/unified/crm/accounts/explode"), { body = "{}" }).status)
      res = http("GET", url(OPPS .. "/meta/update"))
      assert.equal("update", res.json.method)
      for _, field in ipairs({ "schema", "documentation_link", "response_mapping", "query_schema",
                               "request_body_schema", "default_query", "default_body" }) do
        assert.is_not_nil(res.json[field], field)
      end
    end)
  end)

  describe("query parameters", function()
    it("parses bracket notation (raw or encoded) into remote_data.remote_query", function()
      local res = http("GET", url(OPPS .. "/23423523",
        "remote_query[a][b]=x+y&remote_query%5Bc%5D%5B%5D=1%2B1&remote_query[c][]=%20z&remote_query[d][0][e]=f"))
      assert.same({ a = { b = "x y" }, c = { "1+1", " z" }, d = { { e = "f" } } },
        res.json.remote_data.remote_query)
    end)

    it("excludes fields in every form and drops remote_data on request", function()
      for _, q in ipairs({ "truto_exclude_fields[]=name&truto_exclude_fields[]=amount",
                           "truto_exclude_fields[0]=name&truto_exclude_fields[1]=amount",
                           "truto_exclude_fields=name,amount" }) do
        local o = http("GET", url(OPPS .. "/23423523", q)).json
        assert.is_nil(o.name, q)
        assert.is_nil(o.amount, q)
        assert.equal("23423523", o.id)
      end
      assert.is_nil(http("GET", url(OPPS .. "/23423523", "truto_ignore_remote_data=true")).json.remote_data)
    end)

    it("answers raw, normalized, keyed and streamed shapes", function()
      local raw = http("GET", url(OPPS .. "/23423523", "truto_response_format=raw")).json
      assert.equal("Acme renewal 2024", raw.properties.dealname)
      assert.is_nil(raw.name)
      local normalized = http("GET", url(OPPS .. "/23423523", "truto_response_format=normalized")).json
      assert.is_nil(normalized.remote_data)
      local keyed = http("GET", url("/unified/crm/stages", "truto_key_by=id")).json
      assert.equal("Closed Won", keyed.result.closedwon.name)
      local stream = http("GET", url("/unified/crm/users", "truto_response_format=stream"))
      assert.equal("application/x-ndjson", stream.headers["content-type"])
      assert.equal("chunked", stream.headers["transfer-encoding"])
      local lines = {}
      for line in stream.body:gmatch("[^\n]+") do lines[#lines + 1] = cjson.decode(line).id end
      assert.same({ "111", "112", "113" }, lines)
      assert.equal(400, http("GET", url(OPPS, "truto_response_format=xml")).status)
    end)
  end)

  describe("idempotency", function()
    it("replays the first response and applies the write once", function()
      local options = { headers = { ["Idempotency-Key"] = "k-1" }, body = '{"name":"Once"}' }
      local first = http("PATCH", url(OPPS .. "/23423523"), options)
      local again = http("PATCH", url(OPPS .. "/23423523"), options)
      assert.equal(200, again.status)
      assert.equal(first.body, again.body)
      assert.equal("true", again.headers["idempotent-replayed"])
      assert.is_nil(first.headers["idempotent-replayed"])
      local stats = http("GET", "/_emulator/stats", { token = false }).json
      assert.equal(1, stats.writes[ACCOUNT .. "/crm/opportunities/23423523"])
    end)
  end)

  describe("faults", function()
    it("injects a status with Retry-After from headers", function()
      local res = http("GET", url(OPPS), { headers = { ["X-Emulator-Status"] = "429",
                                                       ["X-Emulator-Retry-After"] = "3" } })
      assert.equal(429, res.status)
      assert.equal("3", res.headers["retry-after"])
      assert.equal(429, res.json.statusCode)
      assert.is_not_nil(res.json.truto_error_insight.rate_limit_error)
    end)

    it("queues faults for the next matching requests only", function()
      local res = http("POST", "/_emulator/faults", { token = false, body = cjson.encode({ faults = { {
        method = "PATCH", path_prefix = OPPS, status = 502, retry_after = "1", count = 2 } } }) })
      assert.equal(200, res.status)
      assert.equal(200, http("GET", url(OPPS .. "/23423523")).status)
      local patch = { body = '{"name":"After faults"}' }
      assert.equal(502, http("PATCH", url(OPPS .. "/23423523"), patch).status)
      assert.equal("1", http("PATCH", url(OPPS .. "/23423523"), patch).headers["retry-after"])
      assert.equal(200, http("PATCH", url(OPPS .. "/23423523"), patch).status)
      assert.equal(1, http("GET", "/_emulator/stats", { token = false }).json
        .writes[ACCOUNT .. "/crm/opportunities/23423523"])
    end)

    it("drops, truncates, corrupts and delays", function()
      assert.equal(52, http("GET", url(OPPS), { headers = { ["X-Emulator-Fault"] = "drop" } }).exit)
      assert.equal(18, http("GET", url(OPPS), { headers = { ["X-Emulator-Fault"] = "truncate" } }).exit)
      assert.equal(18, http("GET", url(OPPS), { headers = { ["X-Emulator-Fault"] = "reset-mid-body" } }).exit)
      local bad = http("GET", url(OPPS), { headers = { ["X-Emulator-Fault"] = "malformed" } })
      assert.equal(200, bad.status)
      assert.is_nil(bad.json)
      -- curl's own timeout (exit 28) proves the delay.
      assert.equal(28, http("GET", url(OPPS), { max_time = 1, headers = { ["X-Emulator-Delay-Ms"] = "1500" } }).exit)
      assert.equal(200, http("GET", url(OPPS), { max_time = 2, headers = { ["X-Emulator-Delay-Ms"] = "100" } }).status)
    end)
  end)

  describe("control endpoints", function()
    it("logs the exact request bytes", function()
      http("PATCH", url(OPPS .. "/a%2Fb", "x%5By%5D=1"), { body = '{"name":"Logged"}',
                                                          headers = { ["X-Custom"] = "v" } })
      local log = http("GET", "/_emulator/requests", { token = false }).json
      local entry = log[#log]
      assert.equal("PATCH", entry.method)
      assert.equal(OPPS .. "/a%2Fb?integrated_account_id=" .. ACCOUNT .. "&x%5By%5D=1", entry.uri)
      assert.equal(OPPS .. "/a%2Fb", entry.path)
      assert.equal("integrated_account_id=" .. ACCOUNT .. "&x%5By%5D=1", entry.query)
      assert.equal('{"name":"Logged"}', entry.body)
      assert.equal("v", entry.headers["x-custom"])
    end)

    it("streams a blob of exactly N bytes of JSON", function()
      local res = http("GET", "/_emulator/blob?bytes=100000", { token = false })
      assert.equal(100000, #res.body)
      assert.equal("00000001", res.json.result[1].id)
    end)

    it("echoes custom API calls without integrated_account_id", function()
      local res = http("POST", url("/custom/foo/bar%2Fbaz", "q[a]=1"), { body = '{"x":1}' })
      assert.same({ method = "POST", path = "/foo/bar%2Fbaz", segments = { "foo", "bar/baz" },
                    query = { q = { a = "1" } }, body = { x = 1 } }, res.json.result)
    end)

    it("serves the provider-shaped proxy store", function()
      local res = http("PATCH", url("/proxy/deals/23423523"), { body = '{"properties":{"dealname":"P"}}' })
      assert.equal("P", res.json.properties.dealname)
      assert.equal("1000", res.json.properties.amount)
      assert.equal(10, #http("GET", url("/proxy/deals")).json.result)
    end)
  end)
end)

-- What a user's test suite calls: the handle's control methods.
describe("truto.emulator handle", function()
  local truto = require "truto"
  local server

  setup(function() server = assert(emulator.start()) end)
  teardown(function() server:stop() end)

  it("reset, requests, faults, queued_faults and stats talk to the running emulator", function()
    assert.same({ reset = true }, server:reset())
    local client = truto.new { token = "test-token", base_url = server.base_url, max_retries = 0 }
    local plan = { { method = "GET", path_prefix = "/unified/crm/users", status = 429, count = 2 } }
    local answer = assert(server:faults(plan))
    assert.equal(1, answer.queued)
    assert.is_nil(getmetatable(plan), "faults() must not mark the caller's table")
    assert.equal(2, assert(server:queued_faults()).faults[1].count)

    local _, err = client.unified_api:get("crm", "users", "111", { integrated_account_id = ACCOUNT })
    assert.equal(429, err.status)
    assert.equal(1, assert(server:queued_faults()).faults[1].count)
    local requests = assert(server:requests())
    assert.equal(1, #requests)
    assert.equal("GET", requests[1].method)
    assert.equal("/unified/crm/users/111", requests[1].path)
    assert.equal("integrated_account_id=" .. ACCOUNT, requests[1].query)
    assert.equal(1, assert(server:stats()).faults_injected)

    assert.same({ reset = true }, server:reset())
    assert.same({}, assert(server:requests()))
    assert.same({}, assert(server:queued_faults()).faults)
    client:close()
  end)

  it("refuses a faults argument that is not a table", function()
    assert.has_error(function() server:faults("429") end, "bad argument #1 to 'faults' (table expected, got string)")
  end)

  it("answers nil and an error once stopped, and stop is idempotent", function()
    local other = assert(emulator.start())
    assert.is_true(other:stop())
    assert.is_true(other:stop())
    local value, err = other:requests()
    assert.is_nil(value)
    assert.equal("the emulator is stopped", err)
  end)

  it("keeps a server's temp dir when an attempt on a busy port came first, whatever the collector does", function()
    local attempts = 0
    local other = assert(emulator.nginx {
      kind = "truto-spec-busy", health = "/health", health_status = 200,
      text = "@USER@\n@LOAD_MODULES@\npid @PREFIX@/nginx.pid;\nevents {}\nhttp {\n  access_log off;\n"
        .. "  server { listen 127.0.0.1:@PORT@; location = /health { return 200 'ok'; } }\n}\n",
      -- The first attempt asks for the running emulator's port: Address already in use.
      values = function(port)
        attempts = attempts + 1
        return { PORT = tostring(attempts == 1 and server.port or port) }
      end,
    })
    assert.equal(2, attempts)
    for _ = 1, 3 do collectgarbage() end
    assert.is_true(sh.exists(other.prefix .. "/nginx.conf"), "the failed attempt's handle removed the temp dir")
    assert.equal("200", sh.capture("curl -s -o /dev/null -w '%{http_code}' " .. shell_quote(other.base_url .. "/health")))
    assert.is_true(other:stop())
    assert.is_false(sh.exists(other.prefix))
  end)

  it("reports a missing fixtures file before starting anything", function()
    local none, err = emulator.start { fixtures = "/nonexistent/fixtures.json" }
    assert.is_nil(none)
    assert.equal("cannot start the Truto emulator: no fixtures file /nonexistent/fixtures.json", err)
  end)

  it("starts nginx without the caller's LUA_PATH and LUA_CPATH (nginx's LuaJIT would read them)", function()
    -- a Lua 5.4 search path (as `luarocks path` sets) in the environment of the process that starts it
    local code = "local e = require 'truto.emulator'; local s = assert(e.start()); "
      .. "print(assert(s:reset()).reset); s:stop()"
    local out = sh.capture("LUA_PATH='lua/?.lua;lua/?/init.lua;;' "
      .. "LUA_CPATH='build/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;;' lua5.4 -e " .. shell_quote(code) .. " 2>&1")
    assert.equal("true\n", out)
  end)
end)

describe("truto.emulator, started where users start it", function()
  -- Runs a Lua 5.4 chunk with this checkout's modules, from dir, with env
  -- (a string of assignments); its output.
  local function lua(code, dir, env)
    local root = sh.capture("pwd"):match("^(.-)\n$")
    return sh.capture("cd " .. shell_quote(dir or root) .. " && " .. (env or "") .. " LUA_PATH="
      .. shell_quote(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;") .. " LUA_CPATH="
      .. shell_quote(root .. "/build/5.4/?.so;;") .. " lua5.4 -e " .. shell_quote(code) .. " 2>&1")
  end

  it("leaves the caller's math.random sequence alone", function()
    assert.equal("true\n", lua("math.randomseed(42); local a = math.random(1, 1e9); math.randomseed(42); "
      .. "local s = assert(require('truto.emulator').start()); local b = math.random(1, 1e9); s:stop(); print(a == b)"))
  end)

  it("stops the workers of a master that was killed", function()
    assert.equal("0\n", lua("local s = assert(require('truto.emulator').start()); os.execute('kill -9 ' .. s.pid); "
      .. "os.execute('sleep 0.3'); s:stop(); os.execute('sleep 0.3'); "
      .. "os.execute('ps -o stat= -g ' .. s.pid .. ' | grep -c -v ^Z')"))
  end)

  it("finds relative fixtures from the real working directory, not a stale $PWD", function()
    local out = lua("local s, err = require('truto.emulator').start { fixtures = 'emulator/fixtures.json' }; "
      .. "print(s ~= nil, err); if s then s:stop() end", nil, "PWD=/nonexistent")
    assert.equal("true\tnil\n", out)
  end)

  it("runs from a TMPDIR whose name has spaces and quotes", function()
    local tmp = assert(sh.mktemp("truto-spec-tmp")) .. "/a b'c"
    assert(sh.run("mkdir " .. shell_quote(tmp)))
    local out = lua("local s = assert(require('truto.emulator').start { tls = true }); "
      .. "print(s.prefix:sub(1, #os.getenv('TMPDIR')) == os.getenv('TMPDIR'), assert(s:reset()).reset); s:stop()",
      nil, "TMPDIR=" .. shell_quote(tmp))
    local left = sh.capture("ls -A " .. shell_quote(tmp))
    sh.run("rm -rf " .. shell_quote(tmp:match("^(.*)/[^/]+$")))
    assert.equal("true\ttrue\n", out)
    assert.equal("", left)
  end)
end)

-- bin/truto-emulator: in the foreground (or as a background job) until a
-- signal, and --detach / --stop.
describe("bin/truto-emulator", function()
  local checkout_bin = sh.capture("pwd"):match("^(.-)\n$") .. "/bin/truto-emulator"

  -- Starts it (with `command`, default "bin/truto-emulator") in a new process
  -- group (as a shell's job), stdin from /dev/null; returns the Lua
  -- process's pid and the three lines it printed.
  local function launch(command)
    local out = os.tmpname()
    local pid = tonumber(sh.capture("setsid " .. (command or "bin/truto-emulator") .. " </dev/null >" .. shell_quote(out)
      .. " 2>&1 & echo $!"):match("%d+"))
    local lines
    for _ = 1, 100 do
      lines = sh.read_file(out) or ""
      if select(2, lines:gsub("\n", "")) >= 3 then break end
      sh.run("sleep 0.1")
    end
    os.remove(out)
    local url, nginx, prefix = lines:match("^(http://127%.0%.0%.1:%d+)\npid=(%d+)\nprefix=(%S+)\n$")
    assert(url, "truto-emulator printed: " .. lines)
    return pid, url, tonumber(nginx), prefix
  end

  local function gone_within(seconds, pid)
    for _ = 1, seconds * 10 do
      if not sh.alive(pid) then return true end
      sh.run("sleep 0.1")
    end
    return false
  end

  -- (LuaRocks' wrapper starts a command as `lua5.4 -e CHUNK script`.)
  local WRAPPED = "lua5.4 -e 'package.path = \";\" .. package.path' bin/truto-emulator"
  local signals = {
    { "SIGTERM to the process", "kill -TERM %d" },
    { "SIGHUP to the process", "kill -HUP %d" },
    { "SIGKILL to the process", "kill -KILL %d" },
    { "Ctrl-C (SIGINT to its process group)", "kill -INT -%d" },
    { "SIGTERM to its process group", "kill -TERM -%d" },
    { "SIGTERM, started as LuaRocks' wrapper starts it", "kill -TERM %d", WRAPPED },
    { "SIGHUP, started as LuaRocks' wrapper starts it", "kill -HUP %d", WRAPPED },
  }
  for _, case in ipairs(signals) do
    it("keeps running with stdin closed, and stops nginx and removes its temp dir on " .. case[1], function()
      local pid, url, nginx, prefix = launch(case[3])
      sh.run("sleep 0.5")
      assert.is_true(sh.alive(pid), "truto-emulator exited by itself")
      assert.equal("200", sh.capture("curl -s -o /dev/null -w '%{http_code}' " .. shell_quote(url .. "/_emulator/health")))
      assert(sh.run(case[2]:format(pid)))
      assert.is_true(gone_within(8, nginx), "nginx still runs")
      assert.is_true(gone_within(3, pid), "truto-emulator still runs")
      for _ = 1, 30 do
        if not sh.exists(prefix .. "/nginx.conf") then break end
        sh.run("sleep 0.1")
      end
      assert.is_false(sh.exists(prefix .. "/nginx.conf"), prefix .. " was not removed")
    end)
  end

  it("--detach leaves it running; --stop stops it and removes the temp dir", function()
    local out = sh.capture("bin/truto-emulator --detach </dev/null")
    local url, nginx, prefix = out:match("^(http://127%.0%.0%.1:%d+)\npid=(%d+)\nprefix=(%S+)\n$")
    assert(url, out)
    assert.equal("200", sh.capture("curl -s -o /dev/null -w '%{http_code}' " .. shell_quote(url .. "/_emulator/health")))
    assert(sh.run("bin/truto-emulator --stop " .. shell_quote(prefix)))
    assert.is_false(sh.alive(tonumber(nginx)))
    assert.is_false(sh.exists(prefix))
  end)

  it("--env prints export commands for eval, and only the URL and prefix with fixtures of your own", function()
    local out = sh.capture("bin/truto-emulator --detach --env </dev/null")
    local url, prefix = out:match("^export TRUTO_BASE_URL='(http://127%.0%.0%.1:%d+)'\n"
      .. "export TRUTO_EMULATOR_PREFIX='(/[^']+)'\nexport TRUTO_API_TOKEN=test%-token\n"
      .. "export TRUTO_INTEGRATED_ACCOUNT_ID=62f44730%-dd91%-461e%-bd6a%-aedd9e0ad79d\n$")
    assert(url, out)
    local answer = sh.capture("eval " .. shell_quote(out) .. " && bin/truto unified get crm users 111")
    assert(sh.run("bin/truto-emulator --stop " .. shell_quote(prefix)))
    assert.equal("111", assert(require("truto").decode_json(answer)).id)

    out = sh.capture("bin/truto-emulator --detach --env --fixtures emulator/fixtures.json </dev/null")
    prefix = out:match("^export TRUTO_BASE_URL='http://127%.0%.0%.1:%d+'\nexport TRUTO_EMULATOR_PREFIX='(/[^']+)'\n$")
    assert(prefix, out)
    assert(sh.run("bin/truto-emulator --stop " .. shell_quote(prefix)))
  end)

  it("stops nginx when its output pipe closes before anything is read", function()
    -- A private TMPDIR: other emulators (other specs, other runs) come and go in /tmp.
    local tmp = sh.capture("mktemp -d"):gsub("%s+$", "")
    -- The reader is gone before the emulator starts (it notices a closed
    -- pipe only when it writes); `timeout` keeps a failure from hanging,
    -- and the time taken tells it from the emulator's own exit.
    local started = os.time()
    sh.run("{ sleep 0.5; TMPDIR=" .. shell_quote(tmp)
      .. " exec timeout 30 bin/truto-emulator; } </dev/null 2>/dev/null | true")
    assert.is_true(os.time() - started < 20)
    sh.run("sleep 2")
    local left = sh.capture("ls -A " .. shell_quote(tmp))
    sh.run("rm -rf " .. shell_quote(tmp))
    assert.equal("", left)
  end)

  it("--stop takes a relative path or one with a trailing slash", function()
    local out = sh.capture("bin/truto-emulator --detach </dev/null")
    local nginx, prefix = out:match("\npid=(%d+)\nprefix=(%S+)\n$")
    local parent, name = prefix:match("^(.*)/([^/]+)$")
    assert(sh.run("cd " .. shell_quote(parent) .. " && " .. shell_quote(checkout_bin) .. " --stop "
      .. shell_quote(name .. "//")))
    assert.is_false(sh.alive(tonumber(nginx)))
    assert.is_false(sh.exists(prefix))
  end)

  it("--stop refuses a directory that is not an emulator's, and signals nothing", function()
    local dir = assert(sh.mktemp("truto-spec-stop")) .. "/truto-emulator.backup"
    assert(sh.run("mkdir " .. shell_quote(dir) .. " && echo data > " .. shell_quote(dir .. "/data")))
    local sleeper = tonumber(sh.capture("sleep 30 >/dev/null 2>&1 & echo $!"):match("%d+"))
    assert(sh.write_file(dir .. "/nginx.pid", sleeper .. "\n"))
    local answer = sh.capture("bin/truto-emulator --stop " .. shell_quote(dir) .. " 2>&1; echo \"exit=$?\"")
    -- an nginx.conf of another server does not make it an emulator's either
    assert(sh.write_file(dir .. "/nginx.conf", "events {}\n"))
    local again = sh.capture("bin/truto-emulator --stop " .. shell_quote(dir) .. " 2>&1; echo \"exit=$?\"")
    local alive, kept = sh.alive(sleeper), sh.read_file(dir .. "/data")
    sh.run("kill " .. sleeper .. "; rm -rf " .. shell_quote(dir:match("^(.*)/[^/]+$")))
    assert.equal("truto-emulator: " .. dir .. " is not the temp dir of an emulator (the prefix= line)\nexit=2\n", answer)
    assert.equal(answer, again)
    assert.is_true(alive)
    assert.equal("data\n", kept)
  end)

  it("--detach --env unsets the variables and fails when the emulator cannot start", function()
    local out = sh.capture("TRUTO_EMULATOR_NGINX=/nonexistent/nginx bin/truto-emulator --detach --env 2>/dev/null;"
      .. " echo \"exit=$?\"")
    assert.equal("unset TRUTO_BASE_URL TRUTO_API_TOKEN TRUTO_INTEGRATED_ACCOUNT_ID TRUTO_EMULATOR_PREFIX; false\n"
      .. "exit=2\n", out)
    -- so that eval'd, the next command cannot reach another server with the caller's token
    assert.equal("unset\n", sh.capture("export TRUTO_API_TOKEN=real; eval " .. shell_quote(out:match("^[^\n]*"))
      .. "; echo \"${TRUTO_API_TOKEN-unset}\""))
  end)

  local USAGE_ERRORS = {
    { "--detatch", "unknown argument --detatch (see --help)" },
    { "--port 70000", "--port needs a port number from 1 to 65535, not '70000'" },
    { "--port=0", "--port needs a port number from 1 to 65535, not '0'" },
    { "--port 1e3", "--port needs a port number from 1 to 65535, not '1e3'" },
    { "--port", "--port needs a port number" },
    { "--env", "--env goes with --detach" },
    { "--detach --stop /tmp", "--detach and --stop do not go together" },
    { "--stop /tmp --port 1", "--stop takes no other option" },
    { "--detach=yes", "--detach takes no value" },
  }
  for _, case in ipairs(USAGE_ERRORS) do
    it("refuses '" .. case[1] .. "' with a usage error", function()
      assert.equal("truto-emulator: " .. case[2] .. "\nexit=2\n",
        sh.capture("bin/truto-emulator " .. case[1] .. " </dev/null 2>&1; echo \"exit=$?\""))
    end)
  end
end)

-- The transport contract under hostile upstreams: every case of
-- spec/support/hostile/cases.lua, played by a real nginx
-- (spec/support/hostile/), against every transport: libcurl in this
-- process, cosockets inside the app nginx of spec/ngx, cqueues sockets in
-- a coroutine of a cqueues controller in this process, libuv handles (luv)
-- in a coroutine on libuv's loop in this process, and HAProxy's Lua sockets
-- in a service of a real HAProxy (spec/haproxy/services.lua).  Each case has one
-- expected outcome (kind and retryable, or status and result) and bounds
-- on time and peak memory, the same for every transport.
--
-- make test runs this file under every Lua: the hosts' rows (nginx and
-- HAProxy in their own processes, cqueues and luv in this one, as Debian
-- packages them for Lua 5.4) run under Lua 5.4, the libcurl rows under each.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local truto = require "truto"
local cases = require "spec.support.hostile.cases"
local hostile_server = require "spec.support.hostile.start"
local ngx_app = require "spec.support.ngx_app"
local sh = require "spec.support.shell"

local HOSTS = _VERSION == "Lua 5.4" and rawget(_G, "jit") == nil
local controller, haproxy, cqueues, luv_loop, uv
if HOSTS then
  controller = require "spec.support.controller"
  haproxy = require "spec.support.haproxy"
  cqueues = require "cqueues"
  luv_loop = require "spec.support.luv_loop"
  uv = require "luv"
end

local function luv_now() return uv.hrtime() / 1e9 end
local DEFAULT_MEMORY_KB = 8 * 1024

local hostile, app, control, haproxy_app
local ca_dir, ca_file   -- a copy of the hostile CA, in a dir of this spec's own

setup(function()
  local ok, err = pcall(function()
    hostile = hostile_server.start()
    ca_dir = assert(sh.mktemp("truto-conformance"))
    ca_file = ca_dir .. "/ca.pem"
    assert(sh.run("cp " .. sh.quote(hostile.ca_file) .. " " .. sh.quote(ca_file)))
    if not HOSTS then return end
    -- The first call on a host in this process sets up what stays for the
    -- process's life (libuv's thread pool, cqueues' and luaossl's state):
    -- made once here, so that no case's memory bound pays for it.
    local warm_up
    for _, case in ipairs(cases.CASES) do
      if case.name == "gzip body" then warm_up = case end
    end
    controller.run(function()
      return cases.run(warm_up, hostile.base_url, { transport = "cqueues" }, cqueues.monotime)
    end)
    luv_loop.run(function() return cases.run(warm_up, hostile.base_url, { transport = "luv" }, luv_now) end)
    app = ngx_app.start_app { BASE_URL = "http://127.0.0.1:9", CONFORMANCE_TRUST =
      "lua_ssl_trusted_certificate " .. ca_file .. "; lua_ssl_verify_depth 2;" }
    control = curl_core.session { timeout = 60 }
    haproxy_app = haproxy.start { module = "spec.haproxy.services",
      routes = "    http-request use-service lua.conformance if { path /conformance }",
      env = { TRUTO_API_TOKEN = cases.TOKEN, TRUTO_CONFORMANCE_CA_FILE = ca_file } }
  end)
  if not ok then
    if haproxy_app then haproxy_app:stop() end
    if hostile then hostile:stop() end
    if app then app:stop() end
    if ca_dir then sh.run("rm -rf " .. sh.quote(ca_dir)) end
    error(err, 0)
  end
end)

teardown(function()
  if control then control:close() end
  if haproxy_app then haproxy_app:stop() end
  if app then app:stop() end
  if hostile then hostile:stop() end
  if ca_dir then sh.run("rm -rf " .. sh.quote(ca_dir)) end
end)

local function base_url(case)
  if not case.tls then return hostile.base_url end
  return ("https://127.0.0.1:%d"):format(hostile_server.tls_port(hostile, case.tls))
end

-- GET <app>/conformance?case=SLUG&base=URL: the case run inside a host (an
-- nginx or HAProxy app), its outcome as JSON.
local function control_get(app_url, case, extra)
  local url = ("%s/conformance?case=%s&base=%s%s"):format(app_url, case.slug,
    base_url(case):gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end), extra or "")
  local status, _, body = control:perform { url = url, timeout = 60 }
  return status, body
end

-- The case's outcome with each transport (and the libcurl multi handle of
-- client:batch, held to libcurl's outcomes).
local TRANSPORTS = {
  { "curl", function(case)
    return cases.run(case, base_url(case), { transport = "curl", ca_file = ca_file }, core.now)
  end },
  { "curl batch", function(case)
    return cases.run(case, base_url(case), { transport = "curl", ca_file = ca_file }, core.now, true)
  end, "curl" },
}
local HOST_TRANSPORTS = {
  { "cqueues", function(case)
    return controller.run(function()
      return cases.run(case, base_url(case), { transport = "cqueues", ca_file = ca_file }, cqueues.monotime)
    end)
  end },
  { "cqueues batch", function(case)
    return controller.run(function()
      return cases.run(case, base_url(case), { transport = "cqueues", ca_file = ca_file }, cqueues.monotime, true)
    end)
  end, "cqueues" },
  { "luv", function(case)
    return luv_loop.run(function()
      return cases.run(case, base_url(case), { transport = "luv", ca_file = ca_file }, luv_now)
    end)
  end },
  { "luv batch", function(case)
    return luv_loop.run(function()
      return cases.run(case, base_url(case), { transport = "luv", ca_file = ca_file }, luv_now, true)
    end)
  end, "luv" },
  { "ngx", function(case)
    local status, body = control_get(app.base_url, case)
    assert(status == 200, "the app failed: " .. tostring(status) .. " " .. tostring(body) .. "\n"
      .. ngx_app.error_log(app))
    return truto.decode_json(body)
  end },
  { "haproxy", function(case)
    local status, body = control_get(haproxy_app.base_url, case)
    assert(status == 200, "HAProxy failed: " .. tostring(status) .. " " .. tostring(body) .. "\n" .. haproxy_app:log())
    return truto.decode_json(body)
  end },
  { "haproxy batch", function(case)
    local status, body = control_get(haproxy_app.base_url, case, "&batch=1")
    if status == 500 then error(truto.decode_json(body).error, 0) end
    assert(status == 200, "HAProxy failed: " .. tostring(status) .. " " .. tostring(body) .. "\n" .. haproxy_app:log())
    return truto.decode_json(body)
  end, "haproxy" },
}
if HOSTS then
  for _, transport in ipairs(HOST_TRANSPORTS) do TRANSPORTS[#TRANSPORTS + 1] = transport end
end

local function describe_outcome(o)
  local result = o.result
  if type(result) == "table" then result = truto.encode_json(result) end
  result = type(result) == "string" and #result > 200 and result:sub(1, 200) .. "..." or result
  return ("kind=%s retryable=%s status=%s message=%s result=%s seconds=%.2f memory_kb=%s"):format(tostring(o.kind),
    tostring(o.retryable), tostring(o.status), tostring(o.message), tostring(result), o.seconds or -1,
    tostring(o.memory_kb))
end

for _, transport in ipairs(TRANSPORTS) do
  local name, run, outcomes_of = transport[1], transport[2], transport[3] or transport[1]
  describe("the transport contract over " .. name, function()
    for _, case in ipairs(cases.CASES) do
      it(case.name, function()
        if name:find(" batch$") and case.call and case.call.sink then
          local ok, err = pcall(run, case)
          assert.is_false(ok)
          assert.matches(": batch request #1: a sink is not supported in a batch$", err)
          return
        end
        local o = run(case)
        local label = case.name .. " over " .. name .. ": " .. describe_outcome(o)
        local expect = case.differs and case.differs[outcomes_of] or case.expect
        if expect.kind then
          assert.equal(expect.kind, o.kind, label)
          assert.equal(expect.retryable, o.retryable, label)
          assert.equal(case.status, o.status ~= truto.null and o.status or nil, label)
          assert.same({}, o.leaked, label)
          assert.is_nil(o.text:find(cases.TOKEN, 1, true), label)
        elseif expect.prefix_of then   -- part of a text, cut anywhere
          assert.equal(expect.status, o.status, label)
          assert.is_true(type(o.result) == "string" and #o.result > 0 and #o.result < #expect.prefix_of
            and expect.prefix_of:sub(1, #o.result) == o.result, label)
        else
          assert.equal(expect.status, o.status, label)
          assert.same(expect.result, o.result, label)
          if case.header_names then assert.same(case.header_names, o.header_names, label) end
        end
        local seconds = expect.seconds or case.seconds
        assert.is_true(o.seconds <= seconds, ("%s: took longer than %.1f s"):format(label, seconds))
        local memory = case.memory_kb or DEFAULT_MEMORY_KB
        assert.is_true(o.memory_kb <= memory, ("%s: peak memory grew past %d kB"):format(label, memory))
      end)
    end
  end)
end

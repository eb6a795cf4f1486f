--- lua-truto benchmarks: five figures, each with a reference measured side
-- by side in the same run.  Started by bench/run (see bench/README.md).
--
--   lua5.4 bench/bench.lua [--quick]
--
-- Environment: BENCH_RUNS (default 5), BENCH_PIN (default 1: pin the
-- sequential benchmarks and their server to CPU 0), BENCH_BIN (directory of
-- curl_loop and curl_multi, default build/bench).
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local emulator = require "truto.emulator"
local schema = require "truto.schema"
local truto = require "truto"

package.path = "bench/?.lua;" .. package.path
local lua_builder = require "lua_builder"
local sh = require "spec.support.shell"

local QUICK = arg[1] == "--quick"
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or (QUICK and 3 or 5)
local PIN = os.getenv("BENCH_PIN") ~= "0"
local BIN = os.getenv("BENCH_BIN") or "build/bench"
local TOKEN = "test-token"
local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local ID = "23423523"
local DELAY_MS = 5                    -- B3: server-side latency per request
local BLOB_BYTES = 200 * 1024 * 1024  -- B4

local now = core.now

-- ---- helpers ------------------------------------------------------------

local shell_quote, capture, run = sh.quote, sh.capture, sh.run
local read_file, write_file = sh.read_file, sh.write_file

local function median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return 0 / 0 end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

local function fail(message)
  io.stderr:write("bench: ", message, "\n")
  os.exit(1)
end

local TTY = os.execute("test -t 2") == true
local function progress(text)
  if not TTY then return end
  io.stderr:write("\r\27[K", text)
  io.stderr:flush()
end

-- Runs every side once per round, in turn (warm-up round first, not
-- counted), so that drift hits both sides alike.  sides = { name = fn },
-- fn() -> a figure.  Returns { name = { figures } }.
local function side_by_side(label, order, sides, runs)
  local results = {}
  for _, name in ipairs(order) do results[name] = {} end
  for round = 0, runs or RUNS do
    progress(("%s: round %d/%d"):format(label, round, runs or RUNS))
    for _, name in ipairs(order) do
      collectgarbage()
      local figure = sides[name]()
      if round > 0 then table.insert(results[name], figure) end
    end
  end
  return results
end

-- Median of the per-round ratios a[i] / b[i].
local function paired_ratio(a, b)
  local r = {}
  for i = 1, math.min(#a, #b) do r[i] = a[i] / b[i] end
  return median(r)
end

-- ---- CPU pinning ----------------------------------------------------------

local NCPU = tonumber(capture("nproc 2>/dev/null"):match("%d+")) or 1
local HAVE_TASKSET = run("command -v taskset >/dev/null 2>&1")
local PINNING = PIN and HAVE_TASKSET and NCPU >= 2
local ALL_CPUS = "0-" .. (NCPU - 1)
local SELF_PID = tonumber(read_file("/proc/self/stat"):match("^(%d+)"))

local function set_affinity(pid, cpus)
  if PINNING and pid then run(("taskset -pc %s %d >/dev/null 2>&1"):format(cpus, pid)) end
end

-- The prefix for child processes of a pinned benchmark.
local function pinned_prefix(pinned)
  return (PINNING and pinned) and "taskset -c 0 " or ""
end

-- ---- the seed's request -----------------------------------------------------

local function seed_body()
  return {
    name = "Acme Corp renewal 2027",
    amount = 125000.5,
    status = "open",
    currency = "USD",
    account = { id = "5001" },
    owner = { id = "111" },
    stage = { id = "contractsent", name = "Contract Sent" },
    contact = { { id = "301" }, { id = "302" } },
    tags = { { id = "t1", name = "renewal" }, { id = "t2", name = "priority" } },
    custom_fields = { deal_source = "partner", region = "emea" },
    close_date = "2027-03-31T00:00:00.000Z",
    description = "Renewal of the 2026 contract, three seats added",
  }
end

local function seed_query()
  return { integrated_account_id = ACCOUNT, truto_exclude_fields = { "id", "name" }, remote_query = { foo = "bar" } }
end

-- The table client.lua's prepare() hands core.build_request for this update.
local function seed_spec(base_url, key)
  return {
    method = "PATCH", base_url = base_url, path = { "unified", "crm", "opportunities", ID },
    path_names = { "api", "model", "resource", "id" }, query = seed_query(), body = seed_body(),
    list_fields = schema.list_fields("crm", "opportunities"),
    headers = { ["Idempotency-Key"] = key or "3d1cb2538979abef258668b90d66ea30" }, token = TOKEN,
  }
end

-- ---- machine ---------------------------------------------------------------

local function machine()
  local cpuinfo = read_file("/proc/cpuinfo") or ""
  local model = cpuinfo:match("model name%s*:%s*([^\n]+)") or "unknown CPU"
  local mhz = cpuinfo:match("cpu MHz%s*:%s*([%d.]+)")
  local kernel = capture("uname -sr"):gsub("%s+$", "")
  local ua = core.build_request { method = "GET", base_url = "http://x", path = {}, token = "t" }.headers
  local curl_version
  for _, line in ipairs(ua) do curl_version = curl_version or line:match("libcurl/([%d.]+)") end
  local nginx = capture("nginx -v 2>&1"):match("nginx/([%d.]+)") or "?"
  local lua = capture("lua5.4 -v 2>&1"):match("Lua ([%d.]+)") or _VERSION
  local mem = (read_file("/proc/meminfo") or ""):match("MemTotal:%s*(%d+)")
  local ok_socket, socket = pcall(require, "socket")
  return {
    cpu = model .. (mhz and (" @ %.0f MHz"):format(tonumber(mhz)) or ""),
    cores = NCPU,
    mem = mem and ("%.0f GiB"):format(tonumber(mem) / 1048576) or "?",
    kernel = kernel,
    versions = ("lua-truto %s, Lua %s, libcurl %s, nginx %s, lua-cjson %s, %s"):format(
      truto.VERSION, lua, curl_version or "?", nginx, require("cjson")._VERSION or "?",
      ok_socket and socket._VERSION or "LuaSocket missing"),
  }
end

-- ---- servers ---------------------------------------------------------------

-- A static nginx location that answers every request with the bytes the
-- emulator answers the seed's PATCH with (same headers, gzip as the
-- emulator does it), optionally after X-Emulator-Delay-Ms.  Costs the
-- server ~10x less than the emulator's full handling (see README).
local STATIC_CONF = [[
@LOAD_MODULES@
@USER@
worker_processes 1;
daemon on;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    default_type application/json;
    client_body_buffer_size 1m;
    client_body_temp_path @PREFIX@/cb;
    proxy_temp_path @PREFIX@/p;
    fastcgi_temp_path @PREFIX@/f;
    uwsgi_temp_path @PREFIX@/u;
    scgi_temp_path @PREFIX@/s;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    gzip on;
    gzip_types application/json;
    gzip_min_length 256;
    server {
        listen 127.0.0.1:@PORT@;
        add_header ratelimit-limit "50;w=10" always;
        add_header ratelimit-remaining "49" always;
        add_header ratelimit-reset "10" always;
        location / {
            content_by_lua_block {
                local delay = tonumber(ngx.var.http_x_emulator_delay_ms)
                if delay and delay > 0 then ngx.sleep(delay / 1000) end
                ngx.print([=====[@BODY@]=====])
            }
        }
    }
}
]]

local function start_static(body)
  local static, err = emulator.nginx { text = STATIC_CONF, values = { BODY = body }, kind = "truto-bench",
                                       attempts = 20, health = "/", health_status = 200 }
  if not static then fail("cannot start the static nginx server: " .. err) end
  return static
end

-- The nginx worker of a master (for pinning).
local function worker_pid(master)
  return tonumber(capture("pgrep -P " .. master .. " 2>/dev/null"):match("%d+"))
end

-- ---- B1: request building ----------------------------------------------------

local function bench_build()
  local spec = seed_spec("https://api.truto.one")
  -- The Lua side writes the C core's User-Agent (a constant for any client).
  for _, line in ipairs(core.build_request(spec).headers) do
    local ua = line:match("^User%-Agent: (.*)")
    if ua then lua_builder.USER_AGENT = ua end
  end
  local c, l = core.build_request(spec), lua_builder.build_request(spec)
  assert(c.url == l.url, "B1: the two builders disagree on the URL:\n" .. c.url .. "\n" .. l.url)
  for i = 1, math.max(#c.headers, #l.headers) do
    assert(c.headers[i] == l.headers[i], "B1: header lines differ: " .. tostring(c.headers[i]) .. " / "
      .. tostring(l.headers[i]))
  end
  local cjson = require "cjson"
  local function same(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do if not same(v, b[k]) then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
  end
  assert(same(cjson.decode(c.body), cjson.decode(l.body)), "B1: the bodies differ")

  local N = QUICK and 20000 or 50000
  local function timed(f, arg1)
    return function()
      local t0 = now()
      for _ = 1, N do f(arg1) end
      return (now() - t0) / N * 1e9
    end
  end
  local body, query = spec.body, spec.query
  local cj = require("cjson").new()
  local r = side_by_side("B1 request building", { "core", "lua", "core_json", "cjson", "core_query", "lua_query" }, {
    core = timed(core.build_request, spec),
    lua = timed(lua_builder.build_request, spec),
    core_json = timed(truto.encode_json, body),
    cjson = timed(cj.encode, body),
    core_query = timed(truto.encode_query, query),
    lua_query = timed(lua_builder.encode_query, query),
  })
  return {
    core = median(r.core), lua = median(r.lua), speedup = paired_ratio(r.lua, r.core),
    core_json = median(r.core_json), cjson = median(r.cjson), json_ratio = paired_ratio(r.cjson, r.core_json),
    core_query = median(r.core_query), lua_query = median(r.lua_query),
    query_ratio = paired_ratio(r.lua_query, r.core_query),
    body_bytes = #c.body, url_bytes = #c.url,
  }
end

-- ---- B2 / B3: round trips ------------------------------------------------------

-- Writes the request's body to a file and returns the argument list the C
-- programs take: method, URL, body file, then the fixed header lines (the
-- Idempotency-Key is theirs to vary).
local function c_request_args(base_url, extra_headers, tmpdir)
  local req = core.build_request(seed_spec(base_url))
  local path = tmpdir .. "/body.json"
  assert(write_file(path, req.body))
  local args = { req.method, req.url, path }
  for _, line in ipairs(req.headers) do
    if not line:match("^Idempotency%-Key:") then args[#args + 1] = line end
  end
  for _, line in ipairs(extra_headers or {}) do args[#args + 1] = line end
  return args, req
end

local function quoted(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = shell_quote(s) end
  return table.concat(out, " ")
end

-- Runs bench/curl_loop (or curl_multi); returns requests/s.
local function c_program(prefix, program, args, n, concurrency)
  local head = { args[1], args[2], args[3], tostring(n) }
  if concurrency then head[#head + 1] = tostring(concurrency) end
  for i = 4, #args do head[#head + 1] = args[i] end
  local out = capture(prefix .. BIN .. "/" .. program .. " " .. quoted(head) .. " 2>&1")
  local rate = tonumber(out:match("^[%d.]+ ([%d.]+)"))
  if not rate then fail(program .. " failed: " .. out) end
  return rate
end

local function client_updates(client, n, opts)
  return function()
    local body, query = seed_body(), seed_query()
    local t0 = now()
    for _ = 1, n do
      local record, err = client.unified_api:update("crm", "opportunities", ID, body, query, opts)
      if not record then fail("update failed: " .. tostring(err)) end
    end
    return n / (now() - t0)
  end
end

-- luasocket's socket.http: the same request line, headers and body; no
-- keep-alive (socket.http closes every connection) and no gzip.
local function luasocket_updates(req, n)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  local headers = {}
  for _, line in ipairs(req.headers) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    headers[name:lower()] = value
  end
  headers["content-length"] = tostring(#req.body)
  local prefix = core.random_hex(8)
  return function()
    local t0 = now()
    for i = 1, n do
      headers["idempotency-key"] = prefix .. ("%016x"):format(i)
      local chunks = {}
      local ok, status = http.request {
        url = req.url, method = "PATCH", headers = headers,
        source = ltn12.source.string(req.body), sink = ltn12.sink.table(chunks),
      }
      if not ok or status ~= 200 then fail("socket.http: " .. tostring(status)) end
    end
    return n / (now() - t0)
  end
end

-- `curl` started once per request, from one shell loop.
local function curl_cli_updates(prefix, args, n)
  local parts = { "curl -sf -o /dev/null --compressed -X", shell_quote(args[1]), shell_quote(args[2]),
    "--data-binary", shell_quote("@" .. args[3]) }
  for i = 4, #args do parts[#parts + 1] = "-H " .. shell_quote(args[i]) end
  local key = core.random_hex(8)
  local script = ("i=0; while [ $i -lt %d ]; do i=$((i+1)); %s%s -H \"Idempotency-Key: %s$i\" || exit 1; done"):format(
    n, prefix, table.concat(parts, " "), key)
  return function()
    local t0 = now()
    if not run("sh -c " .. shell_quote(script)) then fail("curl loop failed") end
    return n / (now() - t0)
  end
end

local function bench_sequential(static, emu, tmpdir)
  local worker = worker_pid(static.pid)
  set_affinity(worker, "0")
  set_affinity(SELF_PID, "0")
  local prefix = pinned_prefix(true)
  local n = QUICK and 1000 or 3000
  local args, req = c_request_args(static.base_url, nil, tmpdir)
  local client = truto.new { token = TOKEN, base_url = static.base_url }
  local r = side_by_side("B2 sequential round trips", { "client", "c_loop" }, {
    client = client_updates(client, n),
    c_loop = function() return c_program(prefix, "curl_loop", args, n) end,
  })
  -- luasocket and curl(1) are far slower: fewer requests, 3 rounds.
  local slow = side_by_side("B2 luasocket, curl(1)", { "luasocket", "curl_cli" }, {
    luasocket = luasocket_updates(req, QUICK and 200 or 500),
    curl_cli = curl_cli_updates(prefix, args, QUICK and 30 or 60),
  }, 3)
  client:close()

  -- The same pair against the emulator (the full Truto emulation: auth,
  -- state, idempotency cache, rate-limit counters, gzip).
  local eworker = worker_pid(emu.pid)
  set_affinity(eworker, "0")
  local eargs = c_request_args(emu.base_url, nil, tmpdir)
  local eclient = truto.new { token = TOKEN, base_url = emu.base_url }
  local ne = QUICK and 500 or 1000
  local e = side_by_side("B2 against the emulator", { "client", "c_loop" }, {
    client = client_updates(eclient, ne),
    c_loop = function() return c_program(prefix, "curl_loop", eargs, ne) end,
  })
  eclient:close()
  set_affinity(eworker, ALL_CPUS)
  set_affinity(worker, ALL_CPUS)
  set_affinity(SELF_PID, ALL_CPUS)
  return {
    client = median(r.client), c_loop = median(r.c_loop), ratio = paired_ratio(r.client, r.c_loop),
    luasocket = median(slow.luasocket), curl_cli = median(slow.curl_cli),
    emu_client = median(e.client), emu_c_loop = median(e.c_loop), emu_ratio = paired_ratio(e.client, e.c_loop),
  }
end

local function bench_concurrency(static, tmpdir)
  local delay = { ["X-Emulator-Delay-Ms"] = tostring(DELAY_MS) }
  local args = c_request_args(static.base_url, { "X-Emulator-Delay-Ms: " .. DELAY_MS }, tmpdir)
  local client = truto.new { token = TOKEN, base_url = static.base_url }
  local has_multi = client.transport.multi ~= nil
  -- Without a multi handle batch runs sequentially: fewer requests then.
  local n = has_multi and (QUICK and 1000 or 2000) or 200
  local n_seq = QUICK and 100 or 200
  local requests = {}
  for i = 1, n do
    requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities", id = ID,
                    body = seed_body(), query = seed_query(), opts = { headers = delay } }
  end
  local r = side_by_side("B3 concurrency", { "batch", "c_multi", "sequential" }, {
    batch = function()
      local t0 = now()
      local results = client:batch(requests, { concurrency = 16 })
      local dt = now() - t0
      for i = 1, n do
        if results[i][1] == nil then fail("batch request " .. i .. ": " .. tostring(results[i][2])) end
      end
      return n / dt
    end,
    c_multi = function() return c_program("", "curl_multi", args, n, 16) end,
    sequential = client_updates(client, n_seq, { headers = delay }),
  })
  client:close()
  return {
    n = n, has_multi = has_multi,
    batch = median(r.batch), c_multi = median(r.c_multi), sequential = median(r.sequential),
    vs_c = paired_ratio(r.batch, r.c_multi), vs_seq = paired_ratio(r.batch, r.sequential),
  }
end

-- ---- B4: streaming -------------------------------------------------------------

local function bench_stream(emu)
  local lua = "lua5.4"
  local client_cmd = ("%s bench/stream.lua %s %s %d"):format(lua, shell_quote(emu.base_url), shell_quote(ACCOUNT),
    BLOB_BYTES)
  local url = ("%s/custom/blob?bytes=%d&integrated_account_id=%s"):format(emu.base_url, BLOB_BYTES, ACCOUNT)
  local have_time = run("test -x /usr/bin/time")
  local curl_cmd = (have_time and "/usr/bin/time -f 'maxrss %M' " or "")
    .. "curl -sf -o /dev/null -w '%{size_download} %{time_total}\\n' -H "
    .. shell_quote("Authorization: Bearer " .. TOKEN) .. " " .. shell_quote(url) .. " 2>&1"
  local rss = { client = {}, curl = {}, base = {} }
  local r = side_by_side("B4 streaming 200 MB", { "client", "curl" }, {
    client = function()
      local out = capture(client_cmd .. " 2>&1")
      local bytes, seconds, hwm, base = out:match("^(%d+) ([%d.]+) (%d+) (%d+)")
      if tonumber(bytes) ~= BLOB_BYTES then fail("stream: " .. out) end
      table.insert(rss.client, tonumber(hwm))
      table.insert(rss.base, tonumber(base))
      return BLOB_BYTES / tonumber(seconds) / 1048576
    end,
    curl = function()
      local out = capture(curl_cmd)
      local bytes, seconds = out:match("(%d+) ([%d.]+)")
      if tonumber(bytes) ~= BLOB_BYTES then fail("curl blob: " .. out) end
      table.insert(rss.curl, tonumber(out:match("maxrss (%d+)")) or 0)
      return BLOB_BYTES / tonumber(seconds) / 1048576
    end,
  }, 3)
  return {
    client = median(r.client), curl = median(r.curl), ratio = paired_ratio(r.client, r.curl),
    rss = math.max(table.unpack(rss.client)) / 1024, base = median(rss.base) / 1024,
    curl_rss = have_time and math.max(table.unpack(rss.curl)) / 1024 or nil,
  }
end

-- ---- B5: start-up ----------------------------------------------------------------

local function bench_startup()
  local env = ""   -- LUA_PATH / LUA_CPATH come from bench/run
  local n = QUICK and 10 or 30
  local function processes(code)
    local script = ("i=0; while [ $i -lt %d ]; do i=$((i+1)); %slua5.4 -e %s || exit 1; done"):format(
      n, env, shell_quote(code))
    return function()
      local t0 = now()
      if not run("sh -c " .. shell_quote(script)) then fail("lua5.4 -e " .. code .. " failed") end
      return (now() - t0) / n * 1e3
    end
  end
  local r = side_by_side("B5 start-up", { "bare", "require", "new" }, {
    bare = processes(""),
    require = processes('require "truto"'),
    new = processes('require("truto").new { token = "t" }'),
  })
  -- In a fresh process: require and the first truto.new, timed by the
  -- process itself (os.clock: CPU time of the process).
  local code = 'local c = os.clock(); local truto = require "truto"; local r = os.clock() - c; '
    .. 'c = os.clock(); truto.new { token = "t" }; io.write(r, " ", os.clock() - c)'
  local req_t, new_t = {}, {}
  for _ = 1, QUICK and 10 or 20 do
    local a, b = capture("lua5.4 -e " .. shell_quote(code)):match("([%d.e-]+) ([%d.e-]+)")
    req_t[#req_t + 1], new_t[#new_t + 1] = tonumber(a) * 1e6, tonumber(b) * 1e6
  end
  -- truto.new in a warm process (a libcurl session each time).
  local m = 2000
  local t0 = now()
  for _ = 1, m do truto.new({ token = "t" }):close() end
  local warm_new = (now() - t0) / m * 1e6
  local bare, req, new = median(r.bare), median(r.require), median(r.new)
  local added_req, added_new = {}, {}
  for i = 1, #r.bare do
    added_req[i] = r.require[i] - r.bare[i]
    added_new[i] = r.new[i] - r.bare[i]
  end
  return {
    bare = bare, require = req, new = new, added_require = median(added_req), added_new = median(added_new),
    ratio_require = paired_ratio(r.require, r.bare), ratio_new = paired_ratio(r.new, r.bare),
    inproc_require = median(req_t), inproc_new = median(new_t), warm_new = warm_new,
  }
end

-- ---- the table ---------------------------------------------------------------------

local function fmt(v, decimals)
  if v == nil or v ~= v then return "-" end
  local s = ("%." .. (decimals or 0) .. "f"):format(v)
  local int, frac = s:match("^(%-?%d+)(.*)$")
  int = int:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^(%-?),", "%1")
  return int .. frac
end

local function verdict(ok) return ok and "met" or "MISSED" end

local function print_table(m, b1, b2, b3, b4, b5, server_note)
  local rows = {}
  local function row(id, what, mine, ref, ratio, target)
    rows[#rows + 1] = { id, what, mine, ref, ratio, target or "" }
  end
  row("B1", "build the seed's update, ns/request",
    fmt(b1.core) .. " core", fmt(b1.lua) .. " cjson+Lua", fmt(b1.speedup, 2) .. "x",
    ">= 3x: " .. verdict(b1.speedup >= 3))
  row("", "  body only: encode_json vs cjson.encode", fmt(b1.core_json), fmt(b1.cjson),
    fmt(b1.json_ratio, 2) .. "x")
  row("", "  query only: encode_query vs Lua encoder", fmt(b1.core_query), fmt(b1.lua_query),
    fmt(b1.query_ratio, 2) .. "x")
  row("B2", "sequential PATCH, keep-alive, req/s", fmt(b2.client) .. " client", fmt(b2.c_loop) .. " C loop",
    fmt(b2.ratio, 2), ">= 0.9: " .. verdict(b2.ratio >= 0.9))
  row("", "  luasocket socket.http (no keep-alive)", "", fmt(b2.luasocket), "client " .. fmt(b2.client / b2.luasocket, 1) .. "x")
  row("", "  curl(1), one process per request", "", fmt(b2.curl_cli), "client " .. fmt(b2.client / b2.curl_cli, 0) .. "x")
  row("", "  same, against the emulator", fmt(b2.emu_client) .. " client", fmt(b2.emu_c_loop) .. " C loop",
    fmt(b2.emu_ratio, 2))
  local batch_label = b3.has_multi and ("batch, concurrency 16, %d PATCH, req/s"):format(b3.n)
    or ("batch (SEQUENTIAL FALLBACK: no transport:multi), %d PATCH"):format(b3.n)
  row("B3", batch_label .. (" [%d ms server delay]"):format(DELAY_MS),
    fmt(b3.batch) .. " batch", fmt(b3.c_multi) .. " C multi", fmt(b3.vs_c, 2),
    ">= 0.85: " .. verdict(b3.vs_c >= 0.85))
  row("", "  vs sequential update calls", "", fmt(b3.sequential) .. " seq", fmt(b3.vs_seq, 1) .. "x",
    ">= 4x: " .. verdict(b3.vs_seq >= 4))
  row("B4", "200 MB through a sink: peak RSS, MiB", fmt(b4.rss, 1) .. " client",
    b4.curl_rss and (fmt(b4.curl_rss, 1) .. " curl") or "-", "",
    "< 32 MiB: " .. verdict(b4.rss < 32))
  row("", "  throughput, MiB/s", fmt(b4.client), fmt(b4.curl) .. " curl", fmt(b4.ratio, 2))
  row("", "  RSS before the transfer, MiB", fmt(b4.base, 1), "", "")
  row("B5", "lua5.4 -e 'require \"truto\"', ms/process", fmt(b5.require, 2), fmt(b5.bare, 2) .. " bare",
    "+" .. fmt(b5.added_require, 2) .. " ms")
  row("", "  ... + truto.new{}, ms/process", fmt(b5.new, 2), fmt(b5.bare, 2) .. " bare",
    "+" .. fmt(b5.added_new, 2) .. " ms")
  row("", "  in-process: require / first new, us", fmt(b5.inproc_require) .. " / " .. fmt(b5.inproc_new),
    "", "")
  row("", "  truto.new{} + close in a warm process, us", fmt(b5.warm_new, 1), "", "")

  local widths = { 2, 0, 0, 0, 0, 0 }
  local header = { "#", "figure", "lua-truto", "reference", "ratio", "target" }
  for i, h in ipairs(header) do widths[i] = math.max(widths[i], #h) end
  for _, r in ipairs(rows) do
    for i, cell in ipairs(r) do widths[i] = math.max(widths[i], #cell) end
  end
  local function line(cells)
    local out = {}
    for i, cell in ipairs(cells) do
      local w = widths[i]
      if i >= 3 and i <= 5 then out[i] = (" "):rep(w - #cell) .. cell else out[i] = cell .. (" "):rep(w - #cell) end
    end
    return (table.concat(out, "  "):gsub("%s+$", ""))
  end
  print(("lua-truto benchmarks, %s"):format(os.date("!%Y-%m-%d %H:%M UTC")))
  print(("machine: %s, %d cores, %s RAM, %s"):format(m.cpu, m.cores, m.mem, m.kernel))
  print("versions: " .. m.versions)
  print(("method: %d rounds after a warm-up round, sides interleaved; medians; "
    .. "ratio = median of per-round ratios"):format(RUNS))
  print("server: " .. server_note)
  print()
  print(line(header))
  local rule = {}
  for i, w in ipairs(widths) do rule[i] = ("-"):rep(w) end
  print(line(rule))
  for _, r in ipairs(rows) do print(line(r)) end
end

-- ---- main --------------------------------------------------------------------------

local function main()
  math.randomseed(os.time(), SELF_PID or 0)
  for _, program in ipairs { "curl_loop", "curl_multi" } do
    if not run("test -x " .. BIN .. "/" .. program) then
      fail(BIN .. "/" .. program .. " is missing (run bench/run)")
    end
  end
  local m = machine()
  local tmpdir = assert(sh.mktemp("truto-bench-req"))

  local emu, err = emulator.start()
  if not emu then fail(err) end
  -- The static server answers with what the emulator answers the seed's PATCH.
  local probe = truto.new { token = TOKEN, base_url = emu.base_url }
  local record = probe.unified_api:update("crm", "opportunities", ID, seed_body(), seed_query())
  if not record then fail("the emulator refused the seed's update") end
  probe:close()
  local session = curl_core.session {}
  local req = core.build_request(seed_spec(emu.base_url))
  local status, _, body = session:perform { method = req.method, url = req.url, headers = req.headers, body = req.body }
  session:close()
  if status ~= 200 or body:find("]=====]", 1, true) then fail("unexpected emulator answer " .. tostring(status)) end
  local static = start_static(body)

  local ok, result = pcall(function()
    set_affinity(SELF_PID, PINNING and "0" or ALL_CPUS)
    local b1 = bench_build()
    set_affinity(SELF_PID, ALL_CPUS)
    local b2 = bench_sequential(static, emu, tmpdir)
    local b3 = bench_concurrency(static, tmpdir)
    local b4 = bench_stream(emu)
    set_affinity(SELF_PID, PINNING and "0" or ALL_CPUS)
    local b5 = bench_startup()
    set_affinity(SELF_PID, ALL_CPUS)
    return { b1, b2, b3, b4, b5 }
  end)
  progress("")
  static:stop()
  emu:stop()
  run("rm -rf " .. shell_quote(tmpdir))
  if not ok then fail(tostring(result)) end
  local note = ("B2/B3: a static nginx location (%d byte gzip'd JSON, the emulator's answer to the PATCH; "
    .. "B3 adds X-Emulator-Delay-Ms: %d); B2 also against the emulator; B4: the emulator's /custom/blob"):format(
    #body, DELAY_MS)
  if PINNING then note = note .. "; B1, B2, B5 pinned to CPU 0 (client and server)" end
  print_table(m, result[1], result[2], result[3], result[4], result[5], note)
end

main()

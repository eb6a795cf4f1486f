--- lua-truto benchmarks: seven figures, each with a reference measured side
-- by side in the same run.  Started by bench/run (see bench/README.md).
--
--   lua5.4 bench/bench.lua [--quick]
--
-- Environment: BENCH_RUNS (default 5, 3 with --quick), BENCH_PIN (default 1:
-- also run the sequential benchmarks with client and server pinned to CPU
-- 0), BENCH_BIN (directory of curl_loop, curl_multi and lua_floor.so, default
-- build/bench).
-- Written against the public API (require "truto") and the emulator; what it
-- needs from the C modules it looks up with support.core_field.
local emulator = require "truto.emulator"
local schema = require "truto.schema"
local truto = require "truto"

package.path = "bench/?.lua;" .. package.path
local lua_builder = require "lua_builder"
local support = require "support"
local sh = require "spec.support.shell"

local build_request = support.core_field("build_request")
local now = support.core_field("now")
local random_hex = support.core_field("random_hex")

local QUICK = arg[1] == "--quick"
local RUNS = tonumber(os.getenv("BENCH_RUNS")) or (QUICK and 3 or 5)
local PIN = os.getenv("BENCH_PIN") ~= "0"
local BIN = os.getenv("BENCH_BIN") or "build/bench"

-- B2's and B3's Lua floor (bench/lua_floor.c), built by bench/run beside the C programs.
package.cpath = BIN .. "/?.so;" .. package.cpath
local floor = require "lua_floor"
local TOKEN = "test-token"
local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local ID = "23423523"
local CONCURRENCY = 16                    -- B3
local DELAYS_MS = { 0, 5, 50 }            -- B3: server-side latency per request
local BLOB_BYTES = 200 * 1024 * 1024      -- B4
local PAGE_RECORDS = 1000                 -- B6
local PAGE_BYTES = 50 * 1024 * 1024
local BODY_BYTES = 10 * 1024 * 1024       -- B7
local MiB = 1024 * 1024

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

-- A figure over its rounds: { med, min, max }.
local function summary(list)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(list) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return { med = median(list), min = lo, max = hi }
end

-- The per-round ratios a[i] / b[i], summarised.
local function ratio(a, b)
  local r = {}
  for i = 1, math.min(#a, #b) do r[i] = a[i] / b[i] end
  return summary(r)
end

-- list[i][key] for every round.
local function pluck(list, key)
  local out = {}
  for i, v in ipairs(list) do out[i] = v[key] end
  return out
end

-- f(v) for every round.
local function each(list, f)
  local out = {}
  for i, v in ipairs(list) do out[i] = f(v) end
  return out
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
-- counted), so that drift hits every side alike.  sides = { name = fn },
-- fn() -> a figure (a number, or a table of numbers).  Returns
-- { name = { figure per round } }.
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

-- Deep equality of two decoded JSON values (JSON null: truto.null, which
-- is the Lua floor's and lua-cjson's null, a NULL light userdata).
local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
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

-- The seed's update body; bench_common.h builds the same one with cJSON.
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

-- The table client.lua's prepare() hands the core's build_request for this update.
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
  local ua = build_request { method = "GET", base_url = "http://x", path = {}, token = "t" }.headers
  local curl_version
  for _, line in ipairs(ua) do curl_version = curl_version or line:match("libcurl/([%d.]+)") end
  local nginx = capture("nginx -v 2>&1"):match("nginx/([%d.]+)") or "?"
  local lua = capture("lua5.4 -v 2>&1"):match("Lua ([%d.]+)") or _VERSION
  local cjson_c = capture("dpkg-query -W -f '${Version}' libcjson-dev 2>/dev/null"):match("^[^-+]+") or "?"
  local mem = (read_file("/proc/meminfo") or ""):match("MemTotal:%s*(%d+)")
  local ok_socket, socket = pcall(require, "socket")
  return {
    cpu = model .. (mhz and (" @ %.0f MHz"):format(tonumber(mhz)) or ""),
    cores = NCPU,
    mem = mem and ("%.0f GiB"):format(tonumber(mem) / 1048576) or "?",
    kernel = kernel,
    versions = ("lua-truto %s, Lua %s, libcurl %s, cJSON %s, nginx %s, lua-cjson %s, %s"):format(
      truto.VERSION, lua, curl_version or "?", cjson_c, nginx, require("cjson")._VERSION or "?",
      ok_socket and socket._VERSION or "LuaSocket missing"),
  }
end

-- ---- servers ---------------------------------------------------------------

-- A static nginx location that answers every request with the bytes the
-- emulator answers the seed's PATCH with (same headers, gzip as the
-- emulator does it), optionally after X-Emulator-Delay-Ms; costs the server
-- ~10x less than the emulator's full handling (see README).  B6's list page
-- is a file (not gzip'd: compressing 50 MB per request would cost the server
-- more than the client spends).  Request bodies (B7's 10 MB) are discarded.
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
    client_max_body_size 0;
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
        location = /unified/crm/contacts {
            gzip off;
            alias @PAGE@;
        }
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

local function start_static(body, page_path)
  local static, err = emulator.nginx { text = STATIC_CONF, values = { BODY = body, PAGE = page_path },
                                       kind = "truto-bench", attempts = 20, health = "/", health_status = 200 }
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
  for _, line in ipairs(build_request(spec).headers) do
    local ua = line:match("^User%-Agent: (.*)")
    if ua then lua_builder.USER_AGENT = ua end
  end
  local c, l = build_request(spec), lua_builder.build_request(spec)
  assert(c.url == l.url, "B1: the two builders disagree on the URL:\n" .. c.url .. "\n" .. l.url)
  for i = 1, math.max(#c.headers, #l.headers) do
    assert(c.headers[i] == l.headers[i], "B1: header lines differ: " .. tostring(c.headers[i]) .. " / "
      .. tostring(l.headers[i]))
  end
  local cjson = require "cjson"
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
  local cj = cjson.new()
  local r = side_by_side("B1 request building", { "core", "lua", "core_json", "cjson", "core_query", "lua_query" }, {
    core = timed(build_request, spec),
    lua = timed(lua_builder.build_request, spec),
    core_json = timed(truto.encode_json, body),
    cjson = timed(cj.encode, body),
    core_query = timed(truto.encode_query, query),
    lua_query = timed(lua_builder.encode_query, query),
  })
  return {
    core = summary(r.core), lua = summary(r.lua), speedup = ratio(r.lua, r.core),
    core_json = summary(r.core_json), cjson = summary(r.cjson), json_ratio = ratio(r.cjson, r.core_json),
    core_query = summary(r.core_query), lua_query = summary(r.lua_query),
    query_ratio = ratio(r.lua_query, r.core_query),
  }
end

-- ---- the C references ------------------------------------------------------------

-- What the C programs send for a request the core builds: method, URL, the
-- body written to a file ("-": none) and the fixed header lines (the
-- Idempotency-Key is theirs to vary).  seed: the seed's update, whose body
-- the programs can also build themselves with cJSON.
local function c_request(spec, extra_headers, tmpdir, name)
  local req = build_request(spec)
  local body = "-"
  if req.body then
    body = tmpdir .. "/" .. name .. ".json"
    assert(write_file(body, tostring(req.body)))   -- a large body is a truto.Body
  end
  local headers = {}
  for _, line in ipairs(req.headers) do
    if not line:match("^Idempotency%-Key:") then headers[#headers + 1] = line end
  end
  for _, line in ipairs(extra_headers or {}) do headers[#headers + 1] = line end
  return { method = req.method, url = req.url, body = body, headers = headers, bytes = req.body and #req.body or 0,
           seed = spec.path[3] == "opportunities" and spec.method == "PATCH" }, req
end

local function quoted(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = shell_quote(s) end
  return table.concat(out, " ")
end

-- Runs curl_loop (concurrency nil) or curl_multi, n requests.  mode "bare":
-- the body file's bytes, answers not parsed; "cjson": the seed's body built
-- with cJSON per request (other requests: the file's bytes) and every answer
-- parsed with cJSON.  Returns { seconds, rate, peak_kb, before_kb }.
local function c_program(prefix, request, n, concurrency, mode)
  local program = concurrency and "curl_multi" or "curl_loop"
  local words = { BIN .. "/" .. program }
  if mode == "cjson" then words[#words + 1] = "--cjson" end
  local body = (mode == "cjson" and request.seed) and "@seed" or request.body
  for _, w in ipairs { request.method, request.url, body, tostring(n), concurrency and tostring(concurrency) } do
    words[#words + 1] = w
  end
  for _, line in ipairs(request.headers) do words[#words + 1] = line end
  local out = capture(prefix .. quoted(words) .. " 2>&1")
  local seconds, rate, peak, before = out:match("^([%d.]+) ([%d.]+) (%d+) (%d+)")
  if not seconds then fail(program .. " failed: " .. out) end
  return { seconds = tonumber(seconds), rate = tonumber(rate), peak_kb = tonumber(peak), before_kb = tonumber(before) }
end

-- The C+cJSON references must send the very body the client sends.
local function check_cjson_seed()
  local text = capture(BIN .. "/curl_loop --print-seed")
  local mine = truto.encode_json(seed_body(), schema.list_fields("crm", "opportunities"))
  local a, b = truto.decode_json(text), truto.decode_json(mine)
  if not same(a, b) then fail("curl_loop --print-seed differs from the client's body:\n" .. text .. "\n" .. mine) end
end

-- The Lua floor must send the very bytes the client sends, and read the
-- static server's answer as the client does, one request at a time and in a
-- batch; raises otherwise (main stops the servers).
local function check_floor(request, answer)
  local session = floor.session()
  local text = session:encode(seed_body())
  local mine = truto.encode_json(seed_body(), schema.list_fields("crm", "opportunities"))
  if text ~= mine then error("the Lua floor's body differs from the client's:\n" .. text .. "\n" .. mine) end
  local expected = truto.decode_json(answer)
  local status, got = session:perform(request.method, request.url, request.headers, seed_body())
  session:close()
  if status ~= 200 or not same(got, expected) then error("the Lua floor misread the answer: " .. tostring(got)) end
  local multi = floor.multi(2)
  local results, err = multi:perform(request.method, request.url, request.headers, { seed_body(), seed_body() })
  multi:close()
  if not results or #results ~= 2 or not same(results[2], expected) then
    error("the Lua floor's batch misread the answers: " .. tostring(err))
  end
end

-- ---- B2 / B3: round trips ------------------------------------------------------

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

-- What a Lua program reaches on this library's C core with no client: per
-- request, the seed's update built by build_request (a fresh Idempotency-Key,
-- as the client's) and sent by one kept session that decodes the answer.  The
-- client's call path (arguments, options, retries, the response object) is
-- the difference between this side and the client's.
local function core_updates(base_url, n)
  local session = support.core_field("session")
  return function()
    local s = session {}
    local spec, key = seed_spec(base_url), random_hex(8)
    local t0 = now()
    for i = 1, n do
      spec.headers["Idempotency-Key"] = key .. ("%016x"):format(i)
      local req = build_request(spec)
      req.decode_json = true
      local status, _, body = s:perform(req)
      if status ~= 200 or type(body) ~= "table" then fail("core loop: " .. tostring(status)) end
    end
    local rate = n / (now() - t0)
    s:close()
    return rate
  end
end

-- The Lua floor (bench/lua_floor.c): the least a Lua binding of libcurl +
-- cJSON does per call: the seed's body table to a cJSON tree and its print,
-- one reused easy handle sending the C programs' request (their header
-- lines, a fresh Idempotency-Key), the answer parsed by cJSON and made Lua
-- tables.  One body table per round, as client_updates holds one.
local function floor_updates(request, n)
  return function()
    local s, body = floor.session(), seed_body()
    local method, url, headers = request.method, request.url, request.headers
    local t0 = now()
    for _ = 1, n do
      local status, answer = s:perform(method, url, headers, body)
      if status ~= 200 or type(answer) ~= "table" then fail("Lua floor: " .. tostring(answer)) end
    end
    local rate = n / (now() - t0)
    s:close()
    return rate
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
  local prefix = random_hex(8)
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
local function curl_cli_updates(prefix, request, n)
  local parts = { "curl -sf -o /dev/null --compressed -X", shell_quote(request.method), shell_quote(request.url),
    "--data-binary", shell_quote("@" .. request.body) }
  for _, line in ipairs(request.headers) do parts[#parts + 1] = "-H " .. shell_quote(line) end
  local key = random_hex(8)
  local script = ("i=0; while [ $i -lt %d ]; do i=$((i+1)); %s%s -H \"Idempotency-Key: %s$i\" || exit 1; done"):format(
    n, prefix, table.concat(parts, " "), key)
  return function()
    local t0 = now()
    if not run("sh -c " .. shell_quote(script)) then fail("curl loop failed") end
    return n / (now() - t0)
  end
end

-- The client, the Lua floor, the bare Lua loop on the core, C loop + cJSON,
-- bare C loop (or the sides in order): n sequential PATCHes each, per round.
local SEQUENTIAL_SIDES = { "client", "floor", "core", "c_cjson", "c_bare" }

local function sequential_sides(label, client, request, n, prefix, order)
  local r = side_by_side(label, order or SEQUENTIAL_SIDES, {
    client = client_updates(client, n),
    floor = floor_updates(request, n),
    core = core_updates(client.base_url, n),
    c_cjson = function() return c_program(prefix, request, n, nil, "cjson").rate end,
    c_bare = function() return c_program(prefix, request, n, nil, "bare").rate end,
  })
  local out = {}
  for name, rounds in pairs(r) do out[name] = summary(rounds) end
  local function vs(a, b) return r[a] and r[b] and ratio(r[a], r[b]) end
  out.vs_cjson, out.vs_bare, out.vs_core = vs("client", "c_cjson"), vs("client", "c_bare"), vs("client", "core")
  out.vs_floor, out.floor_vs_cjson = vs("client", "floor"), vs("floor", "c_cjson")
  out.core_vs_cjson = vs("core", "c_cjson")
  return out
end

local function bench_sequential(static, emu, tmpdir)
  local n = QUICK and 1000 or 3000
  local request, req = c_request(seed_spec(static.base_url), nil, tmpdir, "seed")
  local client = truto.new { token = TOKEN, base_url = static.base_url }
  local eclient = truto.new { token = TOKEN, base_url = emu.base_url }
  local worker, eworker = worker_pid(static.pid), worker_pid(emu.pid)
  local out = {}
  -- Pinned first (when pinning), then luasocket, curl(1) and the emulator
  -- the same way, then everything unpinned.
  for _, cpus in ipairs { "0", ALL_CPUS } do
    local pinned = cpus == "0"
    if PINNING or not pinned then
      set_affinity(worker, cpus)
      set_affinity(eworker, cpus)
      set_affinity(SELF_PID, cpus)
      local prefix = pinned_prefix(pinned)
      out[pinned and "pinned" or "unpinned"] = sequential_sides(
        "B2 sequential" .. (pinned and ", pinned" or ""), client, request, n, prefix)
      if pinned or not PINNING then
        -- luasocket and curl(1) are far slower: fewer requests, 3 rounds.
        local slow = side_by_side("B2 luasocket, curl(1)", { "luasocket", "curl_cli" }, {
          luasocket = luasocket_updates(req, QUICK and 200 or 500),
          curl_cli = curl_cli_updates(prefix, request, QUICK and 20 or 60),
        }, 3)
        out.luasocket, out.curl_cli = summary(slow.luasocket), summary(slow.curl_cli)
        -- The emulator does all of Truto's work per request (see README).
        local erequest = c_request(seed_spec(emu.base_url), nil, tmpdir, "seed")
        out.emulator = sequential_sides("B2 against the emulator", eclient, erequest, QUICK and 300 or 1000, prefix,
          { "client", "c_cjson" })
      end
    end
  end
  client:close()
  eclient:close()
  return out
end

-- B3 at one server delay: client:batch with 16 in flight, curl_multi + cJSON,
-- bare curl_multi, at 0 ms the Lua floor's multi handle, and (with a delay)
-- sequential update calls.
local BATCH_REQUESTS = { [0] = { 2000, 1000 }, [5] = { 2000, 500 }, [50] = { 320, 160 } }   -- full, --quick
local SEQUENTIAL_REQUESTS = { [5] = { 200, 100 }, [50] = { 20, 10 } }

local function batch_at(client, static, tmpdir, delay, has_multi)
  local counts = BATCH_REQUESTS[delay]
  -- Without a multi handle batch runs sequentially: fewer requests then.
  local n = has_multi and counts[QUICK and 2 or 1] or 200 // math.max(1, delay // 5)
  local seq_counts = SEQUENTIAL_REQUESTS[delay]
  -- At 0 ms no header at all: the client's plain call path, no per-call opts.
  local opts = delay > 0 and { headers = { ["X-Emulator-Delay-Ms"] = tostring(delay) } } or nil
  local request = c_request(seed_spec(static.base_url), delay > 0 and { "X-Emulator-Delay-Ms: " .. delay } or nil,
    tmpdir, "seed")
  local requests = {}
  for i = 1, n do
    requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities", id = ID,
                    body = seed_body(), query = seed_query(), opts = opts }
  end
  local order = { "batch", "c_cjson", "c_bare" }
  local sides = {
    batch = function()
      local t0 = now()
      local results = client:batch(requests, { concurrency = CONCURRENCY })
      local dt = now() - t0
      for i = 1, n do
        if results[i][1] == nil then fail("batch request " .. i .. ": " .. tostring(results[i][2])) end
      end
      return n / dt
    end,
    c_cjson = function() return c_program("", request, n, CONCURRENCY, "cjson").rate end,
    c_bare = function() return c_program("", request, n, CONCURRENCY, "bare").rate end,
  }
  if delay == 0 then
    -- The same bodies as the batch's requests; one multi handle kept, as the client keeps its own.
    local m, bodies = floor.multi(CONCURRENCY), {}
    for i = 1, n do bodies[i] = requests[i].body end
    table.insert(order, 2, "floor")
    sides.floor = function()
      local t0 = now()
      local results, err = m:perform(request.method, request.url, request.headers, bodies)
      local dt = now() - t0
      if not results or #results ~= n then fail("Lua floor batch: " .. tostring(err)) end
      return n / dt
    end
  end
  if seq_counts then
    order[#order + 1] = "sequential"
    sides.sequential = client_updates(client, seq_counts[QUICK and 2 or 1], opts)
  end
  local r = side_by_side(("B3 batch, %d ms delay"):format(delay), order, sides)
  return {
    delay = delay, n = n, batch = summary(r.batch), c_cjson = summary(r.c_cjson), c_bare = summary(r.c_bare),
    vs_cjson = ratio(r.batch, r.c_cjson), vs_bare = ratio(r.batch, r.c_bare),
    floor = r.floor and summary(r.floor), vs_floor = r.floor and ratio(r.batch, r.floor),
    floor_vs_cjson = r.floor and ratio(r.floor, r.c_cjson),
    sequential = r.sequential and summary(r.sequential), vs_seq = r.sequential and ratio(r.batch, r.sequential),
  }
end

local function bench_concurrency(static, tmpdir)
  local client = truto.new { token = TOKEN, base_url = static.base_url }
  local has_multi = client.transport.multi ~= nil
  local out = { has_multi = has_multi }
  for i, delay in ipairs(DELAYS_MS) do out[i] = batch_at(client, static, tmpdir, delay, has_multi) end
  client:close()
  return out
end

-- ---- B4: streaming -------------------------------------------------------------

local function bench_stream(emu)
  local client_cmd = ("lua5.4 bench/stream.lua %s %s %d"):format(shell_quote(emu.base_url), shell_quote(ACCOUNT),
    BLOB_BYTES)
  local url = ("%s/custom/blob?bytes=%d&integrated_account_id=%s"):format(emu.base_url, BLOB_BYTES, ACCOUNT)
  local have_time = run("test -x /usr/bin/time")
  local curl_cmd = (have_time and "/usr/bin/time -f 'maxrss %M' " or "")
    .. "curl -sf -o /dev/null -w '%{size_download} %{time_total}\\n' -H "
    .. shell_quote("Authorization: Bearer " .. TOKEN) .. " " .. shell_quote(url) .. " 2>&1"
  local r = side_by_side("B4 streaming 200 MB", { "client", "curl" }, {
    client = function()
      local out = capture(client_cmd .. " 2>&1")
      local bytes, seconds, hwm, base = out:match("^(%d+) ([%d.]+) (%d+) (%d+)")
      if tonumber(bytes) ~= BLOB_BYTES then fail("stream: " .. out) end
      return { rate = BLOB_BYTES / tonumber(seconds) / MiB, peak = tonumber(hwm) / 1024, base = tonumber(base) / 1024 }
    end,
    curl = function()
      local out = capture(curl_cmd)
      local bytes, seconds = out:match("(%d+) ([%d.]+)")
      if tonumber(bytes) ~= BLOB_BYTES then fail("curl blob: " .. out) end
      return { rate = BLOB_BYTES / tonumber(seconds) / MiB, peak = (tonumber(out:match("maxrss (%d+)")) or 0) / 1024 }
    end,
  }, 3)
  local client_rate, curl_rate = pluck(r.client, "rate"), pluck(r.curl, "rate")
  return {
    client = summary(client_rate), curl = summary(curl_rate), ratio = ratio(client_rate, curl_rate),
    rss = summary(pluck(r.client, "peak")), base = summary(pluck(r.client, "base")),
    curl_rss = have_time and summary(pluck(r.curl, "peak")) or nil,
  }
end

-- ---- B6, B7: a large answer, a large body --------------------------------------

-- The client side in a fresh process (bench/memory.lua): { seconds, peak, growth } (MiB).
local function memory_client(mode, base_url, count)
  local cmd = ("lua5.4 bench/memory.lua %s %s %s %d 2>&1"):format(mode, shell_quote(base_url), shell_quote(ACCOUNT),
    count)
  return function()
    local out = capture(cmd)
    local seconds, peak, before = out:match("^([%d.]+) (%d+) (%d+)")
    if not seconds then fail("bench/memory.lua " .. mode .. ": " .. out) end
    peak, before = tonumber(peak), tonumber(before)
    return { seconds = tonumber(seconds), peak = peak / 1024, growth = (peak - before) / 1024 }
  end
end

-- The same from one C request.
local function memory_c(request, mode)
  return function()
    local f = c_program("", request, 1, nil, mode)
    return { seconds = f.seconds, peak = f.peak_kb / 1024, growth = (f.peak_kb - f.before_kb) / 1024 }
  end
end

-- B6: one list page of PAGE_RECORDS records (a file the static server
-- sends as it is): wall time and peak RSS of a fresh process.
local function bench_page(static, tmpdir, page_bytes)
  local request = c_request({ method = "GET", base_url = static.base_url, path = { "unified", "crm", "contacts" },
                              query = { integrated_account_id = ACCOUNT }, token = TOKEN }, nil, tmpdir, "page")
  local r = side_by_side("B6 large page", { "client", "c_cjson", "c_bare" }, {
    client = memory_client("page", static.base_url, PAGE_RECORDS),
    c_cjson = memory_c(request, "cjson"),
    c_bare = memory_c(request, "bare"),
  })
  local out = { page_mib = page_bytes / MiB }
  for _, side in ipairs { "client", "c_cjson", "c_bare" } do
    out[side] = { seconds = summary(pluck(r[side], "seconds")), peak = summary(pluck(r[side], "peak")) }
  end
  local client_peak, client_s = pluck(r.client, "peak"), pluck(r.client, "seconds")
  out.vs_page = summary(each(client_peak, function(v) return v / out.page_mib end))
  out.peak_vs_cjson = ratio(client_peak, pluck(r.c_cjson, "peak"))
  out.peak_vs_bare = ratio(client_peak, pluck(r.c_bare, "peak"))
  out.time_vs_cjson = ratio(pluck(r.c_cjson, "seconds"), client_s)
  out.time_vs_bare = ratio(pluck(r.c_bare, "seconds"), client_s)
  return out
end

-- B7: one create with a BODY_BYTES body: time, and peak RSS growth over the
-- process's peak before the call (the body table, or the C program's body
-- bytes, already built).
local function bench_body(static, tmpdir)
  local spec = { method = "POST", base_url = static.base_url, path = { "unified", "crm", "opportunities" },
                 path_names = { "api", "model", "resource" }, query = { integrated_account_id = ACCOUNT },
                 body = support.large_body(BODY_BYTES), list_fields = schema.list_fields("crm", "opportunities"),
                 token = TOKEN }
  local request = c_request(spec, nil, tmpdir, "large")
  local r = side_by_side("B7 large body", { "client", "c_bare" }, {
    client = memory_client("body", static.base_url, BODY_BYTES),
    c_bare = memory_c(request, "bare"),
  })
  local body_mib = request.bytes / MiB
  local growth = pluck(r.client, "growth")
  return {
    body_mib = body_mib,
    client = { seconds = summary(pluck(r.client, "seconds")), growth = summary(growth),
               peak = summary(pluck(r.client, "peak")) },
    c_bare = { seconds = summary(pluck(r.c_bare, "seconds")), growth = summary(pluck(r.c_bare, "growth")),
               peak = summary(pluck(r.c_bare, "peak")) },
    vs_body = summary(each(growth, function(v) return v / body_mib end)),
    time_vs_bare = ratio(pluck(r.c_bare, "seconds"), pluck(r.client, "seconds")),
  }
end

-- ---- B5: start-up ----------------------------------------------------------------

local function bench_startup()
  -- One process at a time, the kinds interleaved; the library as `make
  -- install` put it in BENCH_PREFIX (bench/run), and as this checkout's
  -- sources for comparison; the token for truto.new{} from the environment.
  local n = QUICK and 20 or 60
  local prefix = assert(os.getenv("BENCH_PREFIX"), "BENCH_PREFIX: bench/run installs the library there")
  local installed = ("LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;' "
    .. "LUA_CPATH='%s/lib/lua/5.4/?.so;;' "):format(prefix, prefix, prefix)
  local kinds = { "bare", "require", "new", "source" }
  local code = { bare = "", require = 'require "truto"', new = 'require("truto").new {}',
                 source = 'require("truto").new {}' }
  local env = { bare = installed, require = installed, new = installed, source = "" }
  local times = { bare = {}, require = {}, new = {}, source = {} }
  for i = 1, n + 1 do
    progress(("B5 start-up: process %d/%d"):format(i, n + 1))
    for _, kind in ipairs(kinds) do
      local command = env[kind] .. "TRUTO_API_TOKEN=t lua5.4 -e " .. shell_quote(code[kind])
      local t0 = now()
      if not run(command) then fail(command .. " failed") end
      -- The first of each kind warms the page cache, not counted.
      if i > 1 then table.insert(times[kind], (now() - t0) * 1e3) end
    end
  end
  local added_require, added_new, added_source = {}, {}, {}
  for i = 1, n do
    added_require[i] = times.require[i] - times.bare[i]
    added_new[i] = times.new[i] - times.bare[i]
    added_source[i] = times.source[i] - times.bare[i]
  end
  -- In a fresh process: require and the first truto.new, timed by the
  -- process itself (os.clock: CPU time of the process).
  local inproc = 'local c = os.clock(); local truto = require "truto"; local r = os.clock() - c; '
    .. 'c = os.clock(); truto.new { token = "t" }; io.write(r, " ", os.clock() - c)'
  local req_t, new_t = {}, {}
  for _ = 1, QUICK and 10 or 20 do
    local a, b = capture(installed .. "lua5.4 -e " .. shell_quote(inproc)):match("([%d.e-]+) ([%d.e-]+)")
    req_t[#req_t + 1], new_t[#new_t + 1] = tonumber(a) * 1e6, tonumber(b) * 1e6
  end
  -- truto.new in a warm process.
  local m = 2000
  local t0 = now()
  for _ = 1, m do truto.new({ token = "t" }):close() end
  local warm_new = (now() - t0) / m * 1e6
  return {
    n = n, bare = summary(times.bare), require = summary(times.require), new = summary(times.new),
    added_require = summary(added_require), added_new = summary(added_new), added_source = summary(added_source),
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

-- A figure as "median [min..max]" over its rounds; suffix after the median.
local function cell(s, decimals, suffix)
  if s == nil then return "-" end
  return ("%s%s [%s..%s]"):format(fmt(s.med, decimals), suffix or "", fmt(s.min, decimals), fmt(s.max, decimals))
end

-- "target: met" or "target: MISSED", from the median.
local function target(text, ok) return text .. ": " .. (ok and "met" or "MISSED") end

local function table_rows(b1, b2, b3, b4, b5, b6, b7)
  local rows = {}
  local function row(id, what, mine, ref, r, goal)
    rows[#rows + 1] = { id, what, mine or "", ref or "", r or "", goal or "" }
  end
  row("B1", "build the seed's update, ns: core vs Lua + lua-cjson", cell(b1.core), cell(b1.lua),
    cell(b1.speedup, 2, "x"), target(">= 3x", b1.speedup.med >= 3))
  row("", "  body only: encode_json vs cjson.encode", cell(b1.core_json), cell(b1.cjson), cell(b1.json_ratio, 2, "x"))
  row("", "  query only: encode_query vs Lua encoder", cell(b1.core_query), cell(b1.lua_query),
    cell(b1.query_ratio, 2, "x"))

  local seq = b2.pinned or b2.unpinned
  if b2.pinned then
    row("B2", "sequential PATCH/s, pinned: client vs C libcurl + cJSON", cell(b2.pinned.client),
      cell(b2.pinned.c_cjson), cell(b2.pinned.vs_cjson, 2), target(">= 0.9", b2.pinned.vs_cjson.med >= 0.9))
    row("", "  pinned: vs bare C libcurl loop", "", cell(b2.pinned.c_bare), cell(b2.pinned.vs_bare, 2))
    row("", "  pinned: client vs Lua floor (Lua tables in and out, libcurl + cJSON)", "", cell(b2.pinned.floor),
      cell(b2.pinned.vs_floor, 2))
    row("", "  pinned: Lua floor vs C libcurl + cJSON", cell(b2.pinned.floor), cell(b2.pinned.c_cjson),
      cell(b2.pinned.floor_vs_cjson, 2))
    row("", "  pinned: bare Lua loop on the core (no client) vs C + cJSON", cell(b2.pinned.core),
      cell(b2.pinned.c_cjson), cell(b2.pinned.core_vs_cjson, 2))
    row("", "  pinned: client vs bare Lua loop on the core", "", "", cell(b2.pinned.vs_core, 2))
  end
  row(b2.pinned and "" or "B2", (b2.pinned and "  " or "sequential PATCH/s, ") .. "unpinned: vs C libcurl + cJSON",
    cell(b2.unpinned.client), cell(b2.unpinned.c_cjson), cell(b2.unpinned.vs_cjson, 2))
  row("", "  unpinned: vs bare C libcurl loop", "", cell(b2.unpinned.c_bare), cell(b2.unpinned.vs_bare, 2))
  row("", "  unpinned: client vs Lua floor (Lua tables in and out, libcurl + cJSON)", "", cell(b2.unpinned.floor),
    cell(b2.unpinned.vs_floor, 2))
  row("", "  unpinned: Lua floor vs C libcurl + cJSON", cell(b2.unpinned.floor), cell(b2.unpinned.c_cjson),
    cell(b2.unpinned.floor_vs_cjson, 2))
  row("", "  luasocket socket.http (no keep-alive)", "", cell(b2.luasocket),
    "client " .. fmt(seq.client.med / b2.luasocket.med, 1) .. "x")
  row("", "  curl(1), one process per request", "", cell(b2.curl_cli),
    "client " .. fmt(seq.client.med / b2.curl_cli.med, 0) .. "x")
  row("", "  against the emulator: vs C libcurl + cJSON", cell(b2.emulator.client), cell(b2.emulator.c_cjson),
    cell(b2.emulator.vs_cjson, 2))

  for i, b in ipairs(b3) do
    local what = b3.has_multi and ("batch of %d, %d ms delay, %d PATCH/s: vs C curl_multi + cJSON"):format(
      CONCURRENCY, b.delay, b.n) or ("batch (SEQUENTIAL FALLBACK: no transport:multi), %d ms delay, %d PATCH/s"):format(
      b.delay, b.n)
    row(i == 1 and "B3" or "", what, cell(b.batch), cell(b.c_cjson), cell(b.vs_cjson, 2),
      b.delay == 0 and target(">= 0.9", b.vs_cjson.med >= 0.9) or nil)
    row("", "  vs bare C curl_multi", "", cell(b.c_bare), cell(b.vs_bare, 2))
    if b.floor then
      row("", ("  client vs Lua floor, %d in flight (Lua tables in and out, libcurl + cJSON)"):format(CONCURRENCY), "",
        cell(b.floor), cell(b.vs_floor, 2))
      row("", "  Lua floor vs C curl_multi + cJSON", cell(b.floor), cell(b.c_cjson), cell(b.floor_vs_cjson, 2))
    end
    if b.sequential then
      row("", "  vs sequential update calls", "", cell(b.sequential), cell(b.vs_seq, 1, "x"),
        b.delay == 5 and target(">= 4x", b.vs_seq.med >= 4) or nil)
    end
  end

  row("B4", "200 MiB through a sink: peak RSS, MiB: client vs curl(1)", cell(b4.rss, 1), cell(b4.curl_rss, 1), "",
    target("< 32 MiB", b4.rss.med < 32))
  row("", "  throughput, MiB/s", cell(b4.client), cell(b4.curl), cell(b4.ratio, 2))
  row("", "  RSS before the transfer, MiB", cell(b4.base, 1))

  row("B5", "start-up, ms/process: require + truto.new{} (installed) vs bare lua5.4", cell(b5.new, 2),
    cell(b5.bare, 2), cell(b5.added_new, 2, " ms"), target("<= +1.5 ms", b5.added_new.med <= 1.5))
  row("", "  require \"truto\" alone (installed)", cell(b5.require, 2), "", cell(b5.added_require, 2, " ms"))
  row("", "  require + truto.new{} from this checkout's sources", "", "", cell(b5.added_source, 2, " ms"))
  row("", "  in-process CPU: require / first new, us", fmt(b5.inproc_require) .. " / " .. fmt(b5.inproc_new))
  row("", "  truto.new{} + close in a warm process, us", fmt(b5.warm_new, 1))

  row("B6", ("one %.1f MiB list page (%s records): peak RSS, MiB: vs C + cJSON"):format(b6.page_mib,
    fmt(PAGE_RECORDS)), cell(b6.client.peak), cell(b6.c_cjson.peak), cell(b6.peak_vs_cjson, 2))
  row("", "  client peak RSS / page size", "", "", cell(b6.vs_page, 2, "x"), target("<= 2.5x", b6.vs_page.med <= 2.5))
  row("", "  vs bare C (no parse), peak RSS, MiB", "", cell(b6.c_bare.peak), cell(b6.peak_vs_bare, 2))
  row("", "  wall time, ms: vs C + cJSON (ratio: speed)", cell(b6.client.ms), cell(b6.c_cjson.ms),
    cell(b6.time_vs_cjson, 2))
  row("", "  wall time, ms: vs bare C", "", cell(b6.c_bare.ms), cell(b6.time_vs_bare, 2))

  row("B7", ("a %.1f MiB request body: peak RSS growth over baseline, MiB: vs bare C"):format(b7.body_mib),
    cell(b7.client.growth, 1), cell(b7.c_bare.growth, 1), cell(b7.vs_body, 2, "x body"),
    target("<= 2x body", b7.vs_body.med <= 2))
  row("", "  peak RSS, MiB", cell(b7.client.peak, 1), cell(b7.c_bare.peak, 1))
  row("", "  time, ms (ratio: speed)", cell(b7.client.ms, 1), cell(b7.c_bare.ms, 1), cell(b7.time_vs_bare, 2))
  return rows
end

local function print_table(m, rows, notes)
  local header = { "#", "figure", "lua-truto", "reference", "ratio", "target" }
  local widths = {}
  for i, h in ipairs(header) do widths[i] = #h end
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do widths[i] = math.max(widths[i], #c) end
  end
  local function line(cells)
    local out = {}
    for i, c in ipairs(cells) do
      local pad = (" "):rep(widths[i] - #c)
      out[i] = (i >= 3 and i <= 5) and pad .. c or c .. pad
    end
    return (table.concat(out, "  "):gsub("%s+$", ""))
  end
  print(("lua-truto benchmarks, %s"):format(os.date("!%Y-%m-%d %H:%M UTC")))
  print(("machine: %s, %d cores, %s RAM, %s"):format(m.cpu, m.cores, m.mem, m.kernel))
  print("versions: " .. m.versions)
  for _, note in ipairs(notes) do print(note) end
  print()
  print(line(header))
  local rule = {}
  for i, w in ipairs(widths) do rule[i] = ("-"):rep(w) end
  print(line(rule))
  for _, r in ipairs(rows) do print(line(r)) end
end

-- Seconds to milliseconds, in place, for the table.
local function to_ms(figure)
  figure.ms = { med = figure.seconds.med * 1e3, min = figure.seconds.min * 1e3, max = figure.seconds.max * 1e3 }
end

-- ---- main --------------------------------------------------------------------------

local function main()
  math.randomseed(os.time(), SELF_PID or 0)
  for _, program in ipairs { "curl_loop", "curl_multi" } do
    if not run("test -x " .. BIN .. "/" .. program) then
      fail(BIN .. "/" .. program .. " is missing (run bench/run)")
    end
  end
  check_cjson_seed()
  local m = machine()
  local tmpdir = assert(sh.mktemp("truto-bench-req"))

  local emu, err = emulator.start()
  if not emu then fail(err) end
  -- The static server answers with what the emulator answers the seed's PATCH.
  local probe = truto.new { token = TOKEN, base_url = emu.base_url }
  local record = probe.unified_api:update("crm", "opportunities", ID, seed_body(), seed_query())
  if not record then fail("the emulator refused the seed's update") end
  probe:close()
  local session = support.core_field("session") {}
  local req = build_request(seed_spec(emu.base_url))
  local status, _, body = session:perform { method = req.method, url = req.url, headers = req.headers, body = req.body }
  session:close()
  if status ~= 200 or body:find("]=====]", 1, true) then fail("unexpected emulator answer " .. tostring(status)) end
  progress("B6: writing the list page")
  local page_path = tmpdir .. "/page.json"
  local page_bytes
  do
    local page = support.page_json(PAGE_RECORDS, PAGE_BYTES)
    page_bytes = #page
    assert(write_file(page_path, page))
  end
  collectgarbage()
  local static = start_static(body, page_path)

  local ok, result = pcall(function()
    check_floor(c_request(seed_spec(static.base_url), nil, tmpdir, "seed"), body)
    set_affinity(SELF_PID, PINNING and "0" or ALL_CPUS)
    local b1 = bench_build()
    set_affinity(SELF_PID, ALL_CPUS)
    local b2 = bench_sequential(static, emu, tmpdir)
    local b3 = bench_concurrency(static, tmpdir)
    local b4 = bench_stream(emu)
    local b6 = bench_page(static, tmpdir, page_bytes)
    local b7 = bench_body(static, tmpdir)
    set_affinity(SELF_PID, PINNING and "0" or ALL_CPUS)
    local b5 = bench_startup()
    set_affinity(SELF_PID, ALL_CPUS)
    return { b1, b2, b3, b4, b5, b6, b7 }
  end)
  progress("")
  static:stop()
  emu:stop()
  run("rm -rf " .. shell_quote(tmpdir))
  if not ok then fail(tostring(result)) end
  local b6, b7 = result[6], result[7]
  for _, side in ipairs { "client", "c_cjson", "c_bare" } do to_ms(b6[side]) end
  for _, side in ipairs { "client", "c_bare" } do to_ms(b7[side]) end
  local notes = {
    ("method: %d rounds after a warm-up round, sides interleaved; median [min..max] over the rounds; "
      .. "a ratio is the median [min..max] of the per-round ratios (client / reference for rates, "
      .. "reference / client for times)"):format(RUNS),
    ("server: B2/B3: a static nginx location (%d byte gzip'd JSON, the emulator's answer to the PATCH; "
      .. "B3 at %s ms of X-Emulator-Delay-Ms); B2 also against the emulator; B4: the emulator's /custom/blob; "
      .. "B6: a static file, not gzip'd; B7: the static location"):format(#body, table.concat(DELAYS_MS, "/")),
    "C + cJSON: builds the seed's body (cJSON tree + print) per request and parses every answer with cJSON_Parse",
    "Lua floor: bench/lua_floor.c, the C programs' transfers from Lua: the body's Lua table to a cJSON tree "
      .. "(keys sorted) and its print, every answer parsed by cJSON and made Lua tables (B2, B3 at 0 ms)",
    PINNING and "pinned: client, C programs and the nginx worker on CPU 0 (B1, B2 pinned rows, B5)"
      or "not pinned (BENCH_PIN=0, no taskset, or one CPU)",
  }
  print_table(m, table_rows(result[1], result[2], result[3], result[4], result[5], b6, b7), notes)
end

main()

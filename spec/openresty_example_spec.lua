-- The OpenResty example as a new user meets it: the text of README.md's one
-- sh block naming examples/openresty/run, run with `sh -c` in a fresh
-- checkout (nothing built).  It must build, start the emulator and nginx
-- with examples/openresty/nginx.conf, serve the four routes over real HTTP,
-- clean up after a failure half-way, and stop everything on SIGTERM.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local truto = require "truto"
local checkout = require "spec.support.checkout"
local readme = require "spec.support.readme"
local sh = require "spec.support.shell"

local q = sh.quote
local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local RECORD = "23423523"
local START_TIMEOUT = 600 -- s: a fresh checkout builds both cores (and may install packages)
local STOP_TIMEOUT = 60   -- s: nginx and the emulator each quit gracefully

local function sleep(seconds) core.sleep(seconds) end

local function trim(s) return (s or ""):match("^%s*(.-)%s*$") end

-- Whether a socket listens on port (/proc/net/tcp and tcp6: the local
-- address ends in :<hex port>, state 0A is LISTEN).
local function listening(port)
  for _, file in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    for line in (sh.read_file(file) or ""):gmatch("[^\n]+") do
      local local_port, state = line:match("^%s*%d+:%s+%x+:(%x+)%s+%x+:%x+%s+(%x+)")
      if local_port and tonumber(local_port, 16) == port and state == "0A" then return true end
    end
  end
  return false
end

-- A free port above the kernel's ephemeral range (32768-60999) and the
-- emulator's (20000-60999), so neither can take it meanwhile.
local function free_port()
  for _ = 1, 100 do
    local port = math.random(61000, 64999)
    if not listening(port) then return port end
  end
  error("no free port in 61000-64999")
end

local function percent_encode(s)
  return (s:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- runs of the README's text -------------------------------------------------

-- One run: `sh -c TEXT` in dir, in a session of its own (setsid: its process
-- group is the session's id, $!), stdin /dev/null, stdout and stderr to
-- files, its exit status to a file when it ends.  The Truto variables in the
-- environment point elsewhere: without --real the script must ignore them.
local function launch(dir, text, port, work, name)
  local run = {
    name = name, port = port, tmp = work .. "/" .. name .. ".tmp", out = work .. "/" .. name .. ".out",
    err = work .. "/" .. name .. ".err", status = work .. "/" .. name .. ".status",
  }
  assert(sh.run("mkdir " .. q(run.tmp)), "cannot make " .. run.tmp)
  local wrapper = 'sh -c "$1" </dev/null >"$2" 2>"$3"; echo $? >"$4"'
  local command = "cd " .. q(dir) .. " || exit 1; env -u TRUTO_WEBHOOK_SECRET"
    .. " TRUTO_API_TOKEN=not-this-token TRUTO_INTEGRATED_ACCOUNT_ID=not-this-account"
    .. " TRUTO_BASE_URL=http://127.0.0.1:1 TMPDIR=" .. q(run.tmp) .. " PORT=" .. port
    .. " setsid sh -c " .. q(wrapper) .. " readme-block " .. q(text) .. " " .. q(run.out) .. " " .. q(run.err)
    .. " " .. q(run.status) .. " </dev/null >/dev/null 2>&1 & echo $!"
  run.group = tonumber(sh.capture(command):match("%d+"))
  assert(run.group, "could not start " .. text)
  return run
end

local function output(run) return sh.read_file(run.out) or "" end

local function exit_status(run) return tonumber(trim(sh.read_file(run.status))) end

-- What the run printed, for failure messages.
local function transcript(run)
  return ("\n--- %s: stdout\n%s--- stderr\n%s---"):format(run.name, output(run), sh.read_file(run.err) or "")
end

-- What the run's output says: pids, paths, the secret.
local function parse(run)
  local text = output(run)
  local info = {}
  info.emulator_url, info.emulator_pid, info.emulator_prefix =
    text:match("== emulator at (http://127%.0%.0%.1:%d+) %(pid (%d+), prefix ([^)\n]+)%)")
  info.nginx_pid, info.url, info.nginx_prefix =
    text:match("== nginx %(pid (%d+)%) listening on (http://127%.0%.0%.1:%d+) %(config and logs in ([^)\n]+)%)")
  info.secret = text:match("TRUTO_WEBHOOK_SECRET=(%x+)\n")
  info.script_pid = text:match("`kill (%d+)`")
  info.emulator_pid, info.nginx_pid = tonumber(info.emulator_pid), tonumber(info.nginx_pid)
  info.script_pid = tonumber(info.script_pid)
  return info
end

-- Waits until the run's output matches pattern or the run ends; raises
-- with its output after timeout seconds.
local function wait_for(run, pattern, timeout, what)
  local deadline = core.now() + timeout
  while not output(run):find(pattern) do
    assert(not exit_status(run), what .. ": the run ended with status " .. tostring(exit_status(run))
      .. transcript(run))
    assert(core.now() < deadline, what .. ": nothing after " .. timeout .. " s" .. transcript(run))
    sleep(0.2)
  end
end

-- Waits until the run has ended; its exit status.
local function wait_end(run, timeout, what)
  local deadline = core.now() + timeout
  while not exit_status(run) do
    assert(core.now() < deadline, what .. ": still running after " .. timeout .. " s" .. transcript(run))
    sleep(0.2)
  end
  return exit_status(run)
end

-- Last resort (teardown): whatever a run left running is stopped.
local function kill_run(run, dir)
  if not run then return end
  local info = parse(run)
  if info.script_pid and sh.alive(info.script_pid) then
    sh.run("kill -TERM " .. info.script_pid)
    pcall(wait_end, run, STOP_TIMEOUT, "teardown")
  end
  if run.group and run.group > 1 then sh.run("kill -KILL -" .. run.group .. " 2>/dev/null") end
  if info.nginx_pid and sh.alive(info.nginx_pid) then sh.run("kill -KILL " .. info.nginx_pid) end
  if info.emulator_prefix and sh.exists(info.emulator_prefix .. "/nginx.pid") then
    sh.run("cd " .. q(dir) .. " && bin/truto-emulator --stop " .. q(info.emulator_prefix) .. " >/dev/null 2>&1")
  end
end

--- the spec ------------------------------------------------------------------

describe("examples/openresty/run as README.md shows it #checkout", function()
  local dir, work, text, run, info, session, fixtures

  -- method, url, headers ({"Name: value"}), body -> status, headers, body;
  -- raises when no HTTP answer came.
  local function request(method, url, headers, body)
    local status, rheaders, rbody = session:perform {
      method = method, url = url, headers = headers, body = body, timeout = 30,
    }
    assert(status, method .. " " .. url .. " failed: " .. tostring(rheaders and rheaders.message) .. transcript(run))
    return status, rheaders, rbody
  end

  local function json(body, what)
    local value, err = truto.decode_json(body or "")
    assert(value ~= nil, what .. " is not JSON (" .. tostring(err) .. "): " .. tostring(body))
    return value
  end

  -- The emulator, directly: what the library in nginx did there.
  local function emulator_get(path)
    local status, _, body = request("GET", info.emulator_url .. path, { "Authorization: Bearer test-token" })
    return status, json(body, "the emulator's answer to " .. path)
  end

  local function webhook(body, signature)
    local headers = { "Content-Type: application/json" }
    if signature then headers[2] = "X-Truto-Signature: " .. signature end
    return request("POST", info.url .. "/webhooks/truto", headers, body)
  end

  setup(function()
    dir = checkout.fresh("truto-openresty-checkout")
    work = assert(sh.mktemp("truto-openresty-spec"))
    text = readme.block("examples/openresty/run")
    session = curl_core.session { timeout = 30 }
    local all = json(sh.read_file(dir .. "/emulator/fixtures.json"), "emulator/fixtures.json")
    fixtures = all.resources["crm/opportunities"].records
    run = launch(dir, text, free_port(), work, "first")
    wait_for(run, "listening on http://127%.0%.0%.1:%d+", START_TIMEOUT, "the listening line")
    info = parse(run)
    for _, field in ipairs({ "emulator_url", "emulator_pid", "emulator_prefix", "nginx_pid", "url",
                             "nginx_prefix", "secret", "script_pid" }) do
      assert(info[field], "the run's output names no " .. field .. transcript(run))
    end
  end)

  teardown(function()
    if session then session:close() end
    kill_run(run, dir)
    kill_run(run and run.second, dir)
    if work and work:match("/truto%-openresty%-spec%.%w+$") then sh.run("rm -rf " .. q(work)) end
    checkout.remove(dir)
  end)

  it("builds in the checkout and runs the example's own nginx.conf on the given port", function()
    assert.equal("http://127.0.0.1:" .. run.port, info.url)
    assert.is_true(sh.alive(info.nginx_pid))
    assert.is_true(sh.alive(info.emulator_pid))
    assert.is_true(sh.exists(dir .. "/build/luajit/truto/core.so"))
    -- The conf nginx runs is the example with only the placeholders, the
    -- port and (as root) the workers' user changed.
    local real_dir = trim(sh.capture("cd " .. q(dir) .. " && pwd -P"))
    local example = assert(sh.read_file(dir .. "/examples/openresty/nginx.conf"))
    local expected = example:gsub("/path/to/lua%-truto", function() return real_dir end)
      :gsub("(\n *)listen 8080;\n", "%1listen 127.0.0.1:" .. run.port .. ";\n")
    if trim(sh.capture("id -u")) == "0" then expected = "user root;\n" .. expected end
    assert.equal(expected, sh.read_file(info.nginx_prefix .. "/nginx.conf"))
    -- the temp dirs are where TMPDIR says
    assert.equal(run.tmp, info.nginx_prefix:match("^(.*)/truto%-openresty%.%w+$"))
    assert.equal(run.tmp, info.emulator_prefix:match("^(.*)/truto%-emulator%.%w+$"))
  end)

  it("PATCH /opportunities/{id} updates the record in the emulator", function()
    local before_status, before = emulator_get("/unified/crm/opportunities/" .. RECORD .. "?integrated_account_id="
      .. ACCOUNT)
    assert.equal(200, before_status)
    assert.equal("Acme renewal 2024", before.name)

    local status, headers, body = request("PATCH", info.url .. "/opportunities/" .. RECORD,
      { "Content-Type: application/json" }, '{"name":"Renewal","amount":4200.5}')
    assert.equal(200, status, body)
    assert.equal("application/json", headers["content-type"])
    local record = json(body, "the PATCH answer")
    assert.equal(RECORD, record.id)
    assert.equal("Renewal", record.name)
    assert.equal(4200.5, record.amount)
    assert.equal(before.currency, record.currency)
    assert.equal("Renewal", record.remote_data.properties.dealname)
    assert.equal("4200.5", record.remote_data.properties.amount)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", record.updated_at)
    assert.not_equal(before.updated_at, record.updated_at)

    -- The emulator holds the change, and got it with the run's credentials
    -- (not the ones in the environment), once, with an idempotency key.
    local after_status, after = emulator_get("/unified/crm/opportunities/" .. RECORD .. "?integrated_account_id="
      .. ACCOUNT)
    assert.equal(200, after_status)
    assert.equal("Renewal", after.name)
    assert.equal(4200.5, after.amount)
    assert.equal(record.updated_at, after.updated_at)
    local _, log = emulator_get("/_emulator/requests")
    local patches = {}
    for _, r in ipairs(log) do
      if r.method == "PATCH" then patches[#patches + 1] = r end
    end
    assert.equal(1, #patches)
    assert.equal("/unified/crm/opportunities/" .. RECORD, patches[1].path)
    assert.equal("integrated_account_id=" .. ACCOUNT, patches[1].query)
    assert.equal("Bearer test-token", patches[1].headers.authorization)
    assert.matches("%S", patches[1].headers["idempotency-key"])
    assert.same({ name = "Renewal", amount = 4200.5 }, json(patches[1].body, "the PATCH body sent"))

    -- Errors: a body that is not JSON (refused by the location), Truto's
    -- errors relayed (an array body, an unknown record), a method the
    -- location refuses.
    local bad_status, _, bad_body = request("PATCH", info.url .. "/opportunities/" .. RECORD, nil, "nope")
    assert.equal(400, bad_status)
    assert.matches("^the body must be a JSON object: ", json(bad_body, "the 400 answer").error)
    local relayed = {
      { RECORD, "[1]", 400, "Request body must be a JSON object" },
      { "no-such-id", "{}", 404, "Record not found: no-such-id" },
    }
    for _, case in ipairs(relayed) do
      local error_status, _, error_body = request("PATCH", info.url .. "/opportunities/" .. case[1], nil, case[2])
      assert.equal(case[3], error_status)
      assert.same({ kind = "http", status = case[3], message = case[4] },
        json(error_body, "the " .. case[3] .. " answer").error)
    end
    assert.equal(403, (request("GET", info.url .. "/opportunities/" .. RECORD)))
  end)

  it("GET /opportunities pages with a cursor, null after the last page", function()
    local ids, cursors = {}, {}
    local query = "?limit=12"
    for page = 1, 3 do
      local status, headers, body = request("GET", info.url .. "/opportunities" .. query)
      assert.equal(200, status, body)
      assert.equal("application/json", headers["content-type"])
      local value = json(body, "page " .. page)
      assert.equal(page < 3 and 12 or #fixtures - 24, #value.result)
      for _, record in ipairs(value.result) do
        ids[#ids + 1] = record.id
        assert.is_nil(record.remote_data) -- truto_ignore_remote_data
      end
      cursors[page] = value.next_cursor
      if page < 3 then
        assert.equal("string", type(value.next_cursor))
        query = "?limit=12&cursor=" .. percent_encode(value.next_cursor)
      end
    end
    assert.equal(truto.null, cursors[3])
    assert.not_equal(cursors[1], cursors[2])
    local expected = {}
    for i, record in ipairs(fixtures) do expected[i] = record.id end
    assert.equal(30, #expected)
    assert.same(expected, ids)
  end)

  it("GET /opportunities.ndjson streams every record as a JSON line", function()
    local status, headers, body = request("GET", info.url .. "/opportunities.ndjson")
    assert.equal(200, status, body)
    assert.equal("application/x-ndjson", headers["content-type"])
    assert.equal("chunked", headers["transfer-encoding"])
    assert.equal("\n", body:sub(-1))
    local lines = {}
    for line in body:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    assert.equal(#fixtures, #lines)
    for i, line in ipairs(lines) do
      local record = json(line, "line " .. i)
      assert.equal(fixtures[i].id, record.id)
      assert.equal("table", type(record.remote_data)) -- the stream is not trimmed
    end
  end)

  it("POST /webhooks/truto answers 204 to a good signature and 401 with the reason otherwise", function()
    local body = '{"event":"integrated_account:active","id":"' .. math.random(1, 1e9) .. '"}'
    -- HMAC-SHA256 of the raw body with the printed secret, by openssl.
    local body_file = work .. "/webhook.json"
    assert(sh.write_file(body_file, body))
    local hex = sh.capture("openssl dgst -sha256 -hmac " .. q(info.secret) .. " -r " .. q(body_file))
      :match("^(%x+) ")
    assert.equal(64, #(hex or ""))
    local good = "format=sha256,v=" .. hex
    assert.is_true(truto.verify_webhook(info.secret, body, good)) -- the library agrees with openssl

    local status, _, answer = webhook(body, good)
    assert.equal(204, status)
    assert.equal("", answer)

    local wrong = hex:sub(1, -2) .. (hex:sub(-1) == "0" and "1" or "0")
    local cases = {
      { "format=sha256,v=" .. wrong, "signature mismatch" },
      { good, "signature mismatch", body .. " " },  -- the same signature, another body
      { nil, "missing signature header" },
      { "format=sha1,v=" .. hex, "unsupported signature format" },
    }
    for _, case in ipairs(cases) do
      local bad_status, _, bad_body = webhook(case[3] or body, case[1])
      assert.equal(401, bad_status)
      assert.same({ error = "invalid signature", reason = case[2] }, json(bad_body, "the 401 answer"))
    end
    assert.equal(403, (request("GET", info.url .. "/webhooks/truto")))
  end)

  it("leaves no Lua error in nginx's error log", function()
    local log = sh.read_file(info.nginx_prefix .. "/logs/error.log") or ""
    for _, needle in ipairs({ "runtime error", "entry thread aborted", "[alert]", "[crit]", "[emerg]" }) do
      assert.falsy(log:find(needle, 1, true), log)
    end
  end)

  it("stops everything it started when it fails half-way (its port is taken)", function()
    local second = launch(dir, text, run.port, work, "second")
    run.second = second
    assert.equal(1, wait_end(second, START_TIMEOUT, "the second run"))
    local second_info = parse(second)
    local err = sh.read_file(second.err) or ""
    assert.matches("Address already in use", err, 1, true)
    assert.matches("examples/openresty/run: nginx did not start", err, 1, true)
    assert(second_info.emulator_pid, "the second run started no emulator" .. transcript(second))
    assert.is_false(sh.alive(second_info.emulator_pid))
    assert.is_false(sh.exists(second_info.emulator_prefix .. "/nginx.conf"))
    assert.is_nil(second_info.nginx_pid)
    assert.equal("", sh.capture("ls -A " .. q(second.tmp)))
    assert.matches("== stopped the emulator, removed " .. second.tmp:gsub("%p", "%%%0") .. "/truto%-openresty%.%w+\n$",
      output(second))
    -- and the first run goes on serving
    assert.equal(200, (request("GET", info.url .. "/opportunities?limit=1")))
  end)

  it("stops nginx and the emulator on SIGTERM and removes its temp dirs", function()
    assert.is_true(sh.run("kill -TERM " .. info.script_pid))
    assert.equal(0, wait_end(run, STOP_TIMEOUT, "after SIGTERM"))
    assert.is_false(sh.alive(info.script_pid))
    assert.is_false(sh.alive(info.nginx_pid))
    assert.is_false(sh.alive(info.emulator_pid))
    -- nothing left in its session (the wrapper writing the status may linger a moment)
    local deadline = core.now() + 10
    while sh.run("kill -0 -" .. run.group .. " 2>/dev/null") and core.now() < deadline do sleep(0.1) end
    assert.equal("", sh.capture("ps -o pid=,args= -s " .. run.group))
    assert.is_false(listening(run.port))
    assert.equal("", sh.capture("ls -A " .. q(run.tmp)))
    assert.matches("\n== stopped nginx and the emulator, removed " .. info.nginx_prefix:gsub("%p", "%%%0") .. "\n$",
      output(run))
    assert.is_nil((sh.read_file(run.err) or ""):find("examples/openresty/run:", 1, true))
    -- nothing written into the checkout but build output (ignored)
    assert.equal("", checkout.leftovers(dir))
  end)
end)

-- A fleet sharing one budget (issue 14): four plain Lua processes and an
-- nginx with four workers, each a client with
-- `rate_limit = { requests = 50, per = 10, store = REDIS }`, update
-- opportunities of two integrated accounts as fast as the budget allows,
-- against the emulator enforcing Truto's 50 requests per 10 s per account.
-- Everything real: redis-server, nginx, the emulator, loopback HTTP.
local truto = require "truto"
local emulator = require "spec.support.emulator"
local ngx_app = require "spec.support.ngx_app"
local redis_server = require "spec.support.redis_server"
local sh = require "spec.support.shell"
local fleet_worker = require "spec.support.fleet_worker"

local REPO = ngx_app.REPO
local PROCESSES, NGINX_WORKERS = 4, 4

local redis, app, session

setup(function()
  emulator.start()
  redis = redis_server.start()
  app = ngx_app.start_server { template = REPO .. "/spec/fleet/nginx.conf.in", kind = "truto-fleet",
                               values = { REPO = REPO } }
  session = require("truto.curl_core").session { timeout = 10 }
end)

teardown(function()
  if session then session:close() end
  if app then app:stop() end
  if redis then redis:stop() end
  emulator.stop()
end)

local function control(method, url, body)
  local status, _, answer = session:perform { method = method, url = url, body = body and truto.encode_json(body),
    headers = body and { "Content-Type: application/json" } or nil }
  assert(status == 200, tostring(status) .. " " .. tostring(answer))
  return truto.decode_json(answer)
end

local function enforce(limit, window)
  emulator.reset()
  control("POST", emulator.base_url .. "/_emulator/config", { rate_limit = { enforce = true,
    limit = limit or fleet_worker.LIMIT.requests, window = window or fleet_worker.LIMIT.per } })
end

-- Starts the processes and the nginx workers on one config; calls during()
-- meanwhile; returns every member's tally once all are done.
local function run_fleet(config, during, processes)
  local dir = assert(sh.mktemp("truto-fleet"))
  local procs = {}
  for i = 1, processes or PROCESSES do
    local c = {}
    for k, v in pairs(config) do c[k] = v end
    c.offset = i
    local out = ("%s/%d.json"):format(dir, i)
    local _, pid = sh.script(REPO, { LUA_PATH = "lua/?.lua;lua/?/init.lua;;", LUA_CPATH = "build/5.4/?.so;;" },
      ("lua5.4 spec/support/fleet_worker.lua %s > %s 2> %s.err &\necho $!\n"):format(
        sh.quote(truto.encode_json(c)), sh.quote(out), sh.quote(out)))
    procs[i] = { pid = tonumber(pid:match("%d+")), out = out }
  end
  local run = control("POST", app.base_url .. "/start", config)
  if during then during() end
  local tallies, deadline = {}, os.time() + config.seconds + 30
  for _, p in ipairs(procs) do
    while sh.alive(p.pid) and os.time() < deadline do sh.run("sleep 0.2") end
    assert(not sh.alive(p.pid), "a fleet process hangs")
    local text = sh.read_file(p.out)
    assert(text and text ~= "", "a fleet process failed: " .. tostring(sh.read_file(p.out .. ".err")))
    tallies[#tallies + 1] = truto.decode_json(text)
  end
  local workers
  repeat
    workers = control("GET", app.base_url .. "/results?id=" .. run.id)
    if #workers < NGINX_WORKERS then sh.run("sleep 0.2") end
  until #workers == NGINX_WORKERS or os.time() >= deadline
  assert.equal(NGINX_WORKERS, #workers, "nginx workers hang:\n" .. ngx_app.error_log(app))
  for _, w in ipairs(workers) do
    assert(not w.error, w.error)
    tallies[#tallies + 1] = w
  end
  sh.run("rm -rf " .. sh.quote(dir))
  return tallies
end

-- The emulator's log of the run: per account, the arrival times.
local function arrivals()
  local by_account = {}
  for _, r in ipairs(emulator.requests()) do
    local account = r.query:match("integrated_account_id=([^&]*)")
    by_account[account] = by_account[account] or {}
    table.insert(by_account[account], r.time)
  end
  return by_account
end

describe("a fleet on one Redis store", function()
  it("sends no request over Truto's limit and uses at least 90% of it", function()
    enforce()
    local seconds = 30
    local tallies = run_fleet { base_url = emulator.base_url, store = redis.url, seconds = seconds }
    local ok = 0
    for _, t in ipairs(tallies) do
      assert.same({}, t.failed, t.last_error)
      assert.same({}, t.logs)
      ok = ok + t.ok
    end
    local stats = emulator.stats()
    assert.is_nil(stats.statuses["429"])
    -- Allowed: per account, 50 in each 10 s window of the run.
    local accounts = 0
    for _, times in pairs(arrivals()) do
      accounts = accounts + 1
      table.sort(times)
      assert.is_true(times[#times] - times[1] < seconds + 0.5, "a call after the run's end")
    end
    local allowed = accounts * fleet_worker.LIMIT.requests * math.ceil(seconds / fleet_worker.LIMIT.per)
    print(("\n  fleet: %d requests answered in %d s, %d allowed, 0 answered 429"):format(ok, seconds, allowed))
    assert.equal(2, accounts)
    assert.is_true(ok >= 0.9 * allowed, ok .. " of " .. allowed)
    assert.equal(ok, stats.statuses["200"])
  end)
end)

describe("the workers of one nginx on a shared dict", function()
  it("keep to one budget", function()
    enforce(20, 1)
    local seconds = 6
    local tallies = run_fleet({ base_url = emulator.base_url, store = "shared_dict:truto_rate", seconds = seconds,
                                requests = 20, per = 1 }, nil, 0)
    local ok = 0
    for _, t in ipairs(tallies) do
      assert.same({}, t.failed, t.last_error)
      ok = ok + t.ok
    end
    assert.is_nil(emulator.stats().statuses["429"])
    -- 20 per second per account, with 0.25 s of margin between windows: 16 a second.
    local allowed = 2 * 20 * seconds
    print(("\n  shared dict: %d requests answered in %d s, %d allowed"):format(ok, seconds, allowed))
    assert.is_true(ok >= 0.75 * allowed, ok .. " of " .. allowed)
  end)
end)

describe("a fleet whose Redis goes away halfway", function()
  local function kill_redis_after(seconds)
    return function()
      sh.run("sleep " .. seconds)
      redis:kill()
    end
  end

  after_each(function()
    redis:start_again()
  end)

  it("goes on alone with on_store_error = \"local\", and every member says so once", function()
    enforce(20, 1)
    local tallies = run_fleet({ base_url = emulator.base_url, store = redis.url, seconds = 6, requests = 20, per = 1,
                                expected_processes = PROCESSES + NGINX_WORKERS }, kill_redis_after(3))
    for _, t in ipairs(tallies) do
      assert.is_true(t.ok > 0)
      assert.is_nil(t.failed.store)
      assert.equal(1, #t.logs, table.concat(t.logs, "\n"))
      assert.matches(("^rate%%-limit store failed %%(.+%%): pacing this process alone at %d requests per 1 s "
        .. "until it answers$"):format(math.floor(20 / (PROCESSES + NGINX_WORKERS))), t.logs[1])
    end
  end)

  it("fails calls with kind \"store\" with on_store_error = \"fail\", and no member hangs", function()
    enforce(20, 1)
    local tallies = run_fleet({ base_url = emulator.base_url, store = redis.url, seconds = 6, requests = 20, per = 1,
                                on_store_error = "fail" }, kill_redis_after(3))
    for _, t in ipairs(tallies) do
      assert.is_true(t.ok > 0)
      assert.is_true(t.failed.store > 0)
      assert.matches("^the rate%-limit store failed", t.last_error)
      assert.equal(1, #t.logs, table.concat(t.logs, "\n"))
      assert.matches("^rate%-limit store failed %(.+%): calls fail until it answers$", t.logs[1])
    end
  end)
end)

describe("a 429 seen by one member", function()
  it("stops every member's calls for that account for its Retry-After", function()
    -- A budget that keeps calls flowing all along: 20 per second.
    enforce(20, 1)
    local blocked = fleet_worker.ACCOUNTS[1]
    local tallies = run_fleet({ base_url = emulator.base_url, store = redis.url, seconds = 8, requests = 20,
                                per = 1, split = true }, function()
      sh.run("sleep 2")
      emulator.faults { { integrated_account_id = blocked, status = 429, retry_after = "3", count = 1 } }
    end)
    local refused = 0
    for _, t in ipairs(tallies) do refused = refused + (t.failed["429"] or 0) end
    assert.equal(1, refused, truto.encode_json(tallies) .. truto.encode_json(emulator.stats().statuses))
    local times = arrivals()
    local a, b = times[blocked], times[fleet_worker.ACCOUNTS[2]]
    table.sort(a)
    -- The longest pause between two of the account's requests: the 429's 3 s.
    local gap_from, gap = nil, 0
    for i = 2, #a do
      if a[i] - a[i - 1] > gap then gap_from, gap = a[i - 1], a[i] - a[i - 1] end
    end
    -- (Times to the millisecond, Redis's and nginx's: 2 ms of rounding.)
    assert.is_true(gap >= 2.998 and gap < 4, ("the longest pause was %.3f s"):format(gap))
    -- The other account went on meanwhile.
    local during = 0
    for _, t in ipairs(b) do
      if t > gap_from + 0.5 and t < gap_from + gap - 0.5 then during = during + 1 end
    end
    assert.is_true(during > 0)
  end)
end)

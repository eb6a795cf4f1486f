-- `truto batch` end to end: bin/truto runs as a subprocess against an
-- emulator whose fixtures hold 2,000 more opportunities; killed with
-- SIGKILL part-way through a batch of 2,000 updates and run again with the
-- same journal, it applies each update exactly once (the emulator's write
-- counters) and prints every result.
local truto = require "truto"
local core = require "truto.core"
local emulator = require "truto.emulator"
local sh = require "spec.support.shell"

local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local COUNT = 2000
local q = sh.quote

local function id_of(i) return ("B%04d"):format(i) end

local function lines_of(text)
  local list = {}
  for line in text:gmatch("([^\n]*)\n") do list[#list + 1] = line end
  return list
end

describe("truto batch", function()
  local h, dir

  -- The shell command that runs bin/truto with args against the emulator.
  local function command(args)
    local words = { "env", q("TRUTO_API_TOKEN=test-token"), q("TRUTO_BASE_URL=" .. h.base_url),
                    q("TRUTO_INTEGRATED_ACCOUNT_ID=" .. ACCOUNT), "bin/truto" }
    for _, a in ipairs(args) do words[#words + 1] = q(a) end
    return table.concat(words, " ")
  end

  -- Runs bin/truto to its end: stdout, stderr, exit status.
  local function run(args, stdin)
    local in_file, err_file = dir .. "/stdin", dir .. "/stderr"
    assert(sh.write_file(in_file, stdin or ""))
    local pipe = assert(io.popen(command(args) .. " <" .. q(in_file) .. " 2>" .. q(err_file)))
    local out = pipe:read("*a")
    local _, how, rc = pipe:close()
    assert.equal("exit", how)
    local err = assert(sh.read_file(err_file))
    assert.is_nil((out .. err):find("test-token", 1, true))
    return out, err, rc
  end

  local function writes()
    local total, counts = 0, assert(h:stats()).writes
    for _, n in pairs(counts) do total = total + n end
    return total, counts
  end

  setup(function()
    dir = assert(sh.mktemp("truto-cli-batch"))
    local fixtures = assert(truto.decode_json(assert(sh.read_file("emulator/fixtures.json"))))
    local records = fixtures.resources["crm/opportunities"].records
    for i = 1, COUNT do
      records[#records + 1] = { id = id_of(i), name = "Batch " .. i, amount = 0,
                                remote_data = { id = id_of(i), properties = {} } }
    end
    assert(sh.write_file(dir .. "/fixtures.json", truto.encode_json(fixtures)))
    h = assert(emulator.start { fixtures = dir .. "/fixtures.json" })
  end)

  teardown(function()
    if h then h:stop() end
    sh.run("rm -rf " .. q(dir))
  end)

  before_each(function() assert(h:reset()) end)

  it("killed with SIGKILL part-way and run again with its journal: every update applied once, every result printed",
    function()
      local requests = {}
      for i = 1, COUNT do
        requests[i] = truto.encode_json { api = "unified", method = "update", model = "crm",
                                          resource = "opportunities", id = id_of(i), body = { amount = i } }
      end
      local file, journal = dir .. "/updates.jsonl", dir .. "/updates.journal"
      assert(sh.write_file(file, table.concat(requests, "\n") .. "\n"))
      local args = { "batch", file, "--journal", journal, "--concurrency", "16" }

      -- A random point after some writes: the first run is killed there.
      math.randomseed(os.time())
      local kill_after = math.random(100, 1200)
      local pid = tonumber(sh.capture(command(args) .. " >" .. q(dir .. "/first.out") .. " 2>&1 & echo $!"))
      local started = core.now()
      while writes() < kill_after do
        assert(core.now() - started < 20, "the batch made too few writes")
        core.sleep(0.01)
      end
      assert(sh.run("kill -KILL " .. pid), "the batch had ended before the kill")
      while sh.alive(pid) do core.sleep(0.01) end
      core.sleep(0.3)   -- the emulator finishes what reached it
      local written_first = writes()
      local requests_first = assert(h:stats()).requests
      assert.is_true(written_first >= kill_after and written_first < COUNT, "writes: " .. written_first)
      local settled_first = 0
      for _, line in ipairs(lines_of(assert(sh.read_file(journal)))) do
        local record = truto.decode_json(line)   -- nil: a line torn by the kill
        if record and (record.result or record.error) then settled_first = settled_first + 1 end
      end
      assert.is_true(settled_first <= written_first and settled_first >= written_first - 16,
        ("settled %d, written %d"):format(settled_first, written_first))

      local out, err, rc = run(args)
      assert.equal("", err)
      assert.equal(0, rc)
      local printed = lines_of(out)
      assert.equal(COUNT, #printed)
      for i, line in ipairs(printed) do
        local record = assert(truto.decode_json(line))
        assert.equal(i, record.index)
        assert.equal(200, record.status, line)
        assert.equal(id_of(i), record.result.id)
        assert.equal(i, record.result.amount)
      end
      local total, counts = writes()
      assert.equal(COUNT, total)
      for i = 1, COUNT do assert.equal(1, counts[ACCOUNT .. "/crm/opportunities/" .. id_of(i)], id_of(i)) end
      -- What reached the emulator before the kill and was in flight is
      -- resent under its key: replayed, not applied.
      local stats = assert(h:stats())
      assert.equal(written_first - settled_first, stats.idempotent_replays)
      assert.equal(COUNT - settled_first, stats.requests - requests_first)
    end)

  it("prints one line per request in the file's order, and exits 1 when any failed", function()
    local out, err, rc = run({ "batch", "-", "--concurrency", "4" }, table.concat({
      '{"api":"unified","method":"update","model":"crm","resource":"opportunities","id":"B0001","body":{"amount":7},'
        .. '"opts":{"headers":{"X-Emulator-Delay-Ms":"300"}}}',
      '{"api":"unified","method":"get","model":"crm","resource":"opportunities","id":"nope"}',
      '{"api":"unified","method":"get","model":"crm","resource":"opportunities","id":"B0002",'
        .. '"query":{"integrated_account_id":"other-account"}}',
    }, "\n"))
    assert.equal("", err)
    assert.equal(1, rc)
    local printed = lines_of(out)
    assert.equal(3, #printed)
    local first = assert(truto.decode_json(printed[1]))
    assert.same({ 1, 200, 1, 7 }, { first.index, first.status, first.attempts, first.result.amount })
    assert.equal('{"error":{"attempts":1,"kind":"http","message":"Record not found: nope","method":"GET",'
      .. '"path":"/unified/crm/opportunities/nope","status":404},"index":2}', printed[2])
    -- A line's own account wins over the environment's.
    local third = assert(truto.decode_json(printed[3]))
    assert.equal(3, third.index)
    assert.equal("http", third.error.kind)
    local log = assert(h:requests())
    assert.equal(3, #log)
    local uris = {}
    for _, r in ipairs(log) do uris[r.uri] = true end
    assert.is_true(uris["/unified/crm/opportunities/B0001?integrated_account_id=" .. ACCOUNT])
    assert.is_true(uris["/unified/crm/opportunities/B0002?integrated_account_id=other-account"])
  end)

  it("refuses a bad line, naming it, before sending anything", function()
    local good = '{"api":"unified","method":"get","model":"crm","resource":"opportunities","id":"B0001"}'
    for _, case in ipairs {
      { good .. "\n{nope\n", "truto: standard input line 2 is not JSON: expected a string key at byte 2" },
      { good .. "\n\n" .. good .. "\n", "truto: standard input line 2 is blank (one request per line)" },
      { "[1]\n", 'truto: standard input line 1 is not a request: a JSON object such as '
          .. '{"api":"unified","method":"get",...}' },
      { good .. '\n{"api":"unified","method":"upsert"}\n', "truto: standard input line 2: unified API has no method upsert" },
      { '{"api":"unified","method":"update","model":"crm","resource":"opportunities","id":"B0001","body":"x"}\n',
        "truto: standard input line 1: bad argument #4 to 'update' (body must be a table, got string)" },
    } do
      local out, err, rc = run({ "batch", "-" }, case[1])
      assert.equal("", out)
      assert.equal(case[2] .. "\n(see truto --help)\n", err)
      assert.equal(2, rc)
    end
    local out, err, rc = run { "batch", dir .. "/missing.jsonl" }
    assert.equal("", out)
    assert.equal("truto: cannot read the batch's requests: " .. dir .. "/missing.jsonl: No such file or directory\n"
      .. "(see truto --help)\n", err)
    assert.equal(2, rc)
    assert.same({}, assert(h:requests()))
  end)

  it("refuses options that are not the batch's, and a journal of another list", function()
    local file, journal = dir .. "/one.jsonl", dir .. "/one.journal"
    os.remove(journal)
    assert(sh.write_file(file, '{"api":"unified","method":"get","model":"crm","resource":"opportunities","id":"B0001"}\n'))
    for _, case in ipairs {
      { { "unified", "list", "crm", "users", "--journal", journal }, "--journal works with batch only" },
      { { "ping", "--concurrency", "2" }, "--concurrency works with batch only" },
      { { "batch", file, "-H", "X-A: b" }, "'batch' takes no --header or --idempotency-key: each line's opts hold its own" },
      { { "batch", file, "--data", "{}" }, "'batch' takes no --data" },
      { { "batch", file, "-q", "limit=2" }, "'batch' takes no query parameters" },
      { { "batch", file, "--concurrency", "0" }, "--concurrency must be from 1 to 1024, got 0" },
      { { "batch" }, "'batch' is missing FILE (usage: truto batch FILE [--journal PATH] [--concurrency N])" },
    } do
      local out, err, rc = run(case[1])
      assert.equal("", out)
      assert.equal("truto: " .. case[2] .. "\n(see truto --help)\n", err)
      assert.equal(2, rc)
    end
    local out, err, rc = run { "batch", file, "--journal", journal }
    assert.equal(0, rc, err)
    assert.equal(1, #lines_of(out))
    assert(sh.write_file(file .. "2", sh.read_file(file) .. sh.read_file(file)))
    out, err, rc = run { "batch", file .. "2", "--journal", journal }
    assert.equal("", out)
    assert.matches("^truto: batch journal " .. journal:gsub("%p", "%%%0") .. " belongs to another list of requests "
      .. "%(1 of them, fingerprint %x+; this one: 2, %x+%): give each list its own journal\n%(see truto %-%-help%)\n$", err)
    assert.equal(2, rc)
    assert.equal(1, #assert(h:requests()))
  end)
end)

-- client:batch { journal = path } (lua/truto/journal.lua): what the file
-- holds, what a rerun returns and sends, on a scripted transport (one call
-- after another) and over the libcurl multi handle against the emulator.
local truto = require "truto"
local emu = require "spec.support.emulator"
local sh = require "spec.support.shell"

local ACCOUNT = emu.ACCOUNT
local Q = { integrated_account_id = ACCOUNT }
local TOKEN = "journal-spec-token-0123456789"

local function update(id, amount)
  return { api = "unified", method = "update", model = "crm", resource = "opportunities", id = id,
           body = { amount = amount }, query = Q }
end

local function updates(count)
  local requests = {}
  for i = 1, count do requests[i] = update(tostring(10000002 + i), i) end
  return requests
end

-- The value of header name in a request's header lines, or nil.
local function header(req, name)
  for _, line in ipairs(req.headers) do
    local n, v = line:match("^([^:]+):%s*(.*)$")
    if n and n:lower() == name:lower() then return v end
  end
end

-- A transport without concurrency (client:batch runs one call after
-- another) that answers each PATCH with its id and amount, a GET of "gone"
-- with a 404 whose message holds the token (errors scrub it), and a GET of
-- "bytes" with text that is not UTF-8; sent lists { method, path, key }.
local function scripted(base_url)
  local sent = {}
  local transport = { perform = function(_, req)
    local path = req.url:match("^https?://[^/]+([^?]*)")
    sent[#sent + 1] = { method = req.method, path = path, key = header(req, "Idempotency-Key") }
    if path:find("/gone$") then
      return 404, { ["content-type"] = "application/json" }, '{"message":"no record for ' .. TOKEN .. '"}'
    elseif path:find("/bytes$") then
      return 200, { ["content-type"] = "text/plain" }, "\255\0\1 not UTF-8"
    end
    local body = truto.decode_json(req.body)
    return 200, { ["content-type"] = "application/json" },
      truto.encode_json { id = path:match("([^/]+)$"), amount = body.amount }
  end }
  return truto.new { token = TOKEN, base_url = base_url or "http://h", transport = transport }, sent
end

-- The journal's lines, decoded.
local function records(path)
  local list = {}
  for line in assert(sh.read_file(path)):gmatch("([^\n]*)\n") do list[#list + 1] = assert(truto.decode_json(line)) end
  return list
end

local function write_records(path, list, tail)
  local lines = {}
  for i, record in ipairs(list) do lines[i] = truto.encode_json(record) .. "\n" end
  assert(sh.write_file(path, table.concat(lines) .. (tail or "")))
end

describe("client:batch with a journal", function()
  local dir, path

  before_each(function()
    dir = assert(sh.mktemp("truto-journal"))
    path = dir .. "/batch.journal"
  end)
  after_each(function() sh.run("rm -rf " .. sh.quote(dir)) end)

  it("records the list's fingerprint, each request's key before it is sent and its outcome when it settles", function()
    local client, sent = scripted()
    local requests = updates(2)
    requests[3] = { api = "unified", method = "get", model = "crm", resource = "opportunities", id = "gone", query = Q }
    local results = assert(client:batch(requests, { journal = path }))
    assert.same({ id = "10000003", amount = 1 }, results[1][1])
    assert.equal(404, results[3][2].status)
    local list = records(path)
    assert.equal(7, #list)
    assert.same({ "batch_journal", "fingerprint", "requests" }, require("spec.support.scripted").sorted_keys(list[1]))
    assert.equal(1, list[1].batch_journal)
    assert.matches("^%x+$", list[1].fingerprint)
    assert.equal(16, #list[1].fingerprint)
    assert.equal(3, list[1].requests)
    -- one call after another: sent, settled, sent, settled...
    assert.same({ index = 1, key = sent[1].key }, list[2])
    assert.same({ index = 1, status = 200, attempts = 1, result = { id = "10000003", amount = 1 } }, list[3])
    assert.same({ index = 2, key = sent[2].key }, list[4])
    assert.matches("^%x+$", sent[1].key)
    assert.are_not.equal(sent[1].key, sent[2].key)
    assert.same({ index = 3 }, list[6])   -- a GET goes without a key
    assert.same({ index = 3, error = { kind = "http", status = 404, message = "no record for [REDACTED]",
                                      method = "GET", path = "/unified/crm/opportunities/gone", attempts = 1 } },
                list[7])
    assert.is_nil(sh.read_file(path):find(TOKEN, 1, true))
  end)

  it("returns what settled without sending it again, and on_progress reports it", function()
    local client, sent = scripted()
    local requests = updates(2)
    requests[3] = { api = "unified", method = "get", model = "crm", resource = "opportunities", id = "gone", query = Q }
    requests[4] = { api = "custom", method = "get", path = "bytes", query = Q }
    local first = assert(client:batch(requests, { journal = path }))
    assert.equal(4, #sent)
    local progress = {}
    local again = assert(client:batch(requests, { journal = path, on_progress = function(settled, total, index, r)
      progress[#progress + 1] = { settled, total, index, r[1] ~= nil }
    end }))
    assert.equal(4, #sent)
    assert.same({ { 1, 4, 1, true }, { 2, 4, 2, true }, { 3, 4, 3, false }, { 4, 4, 4, true } }, progress)
    assert.same(first[1][1], again[1][1])
    assert.equal(200, again[1][2].status)
    assert.equal(1, again[1][2].attempts)
    assert.same({}, again[1][2].headers)
    assert.is_nil(again[3][1])
    assert.equal(tostring(first[3][2]), tostring(again[3][2]))
    assert.equal("truto: GET /unified/crm/opportunities/gone: 404 Not Found: no record for [REDACTED]",
      tostring(again[3][2]))
    assert.equal("http", again[3][2].kind)
    assert.equal("\255\0\1 not UTF-8", again[4][1])
    assert.equal(9, #records(path))   -- nothing appended by the rerun
  end)

  it("resends what was in flight with the key it was first sent with, and sends what was not yet", function()
    local client, sent = scripted()
    local requests = updates(3)
    assert(client:batch(requests, { journal = path }))
    local list = records(path)
    -- As if killed while request 2 was in flight, before request 3 started.
    write_records(path, { list[1], list[2], list[3], list[4] })
    local before = #sent
    local results = assert(client:batch(requests, { journal = path }))
    assert.equal(before + 2, #sent)
    assert.same({ method = "PATCH", path = "/unified/crm/opportunities/10000004", key = list[4].key }, sent[before + 1])
    assert.equal("/unified/crm/opportunities/10000005", sent[before + 2].path)
    assert.are_not.equal(list[6].key, sent[before + 2].key)   -- a fresh key: the old run never sent it
    for i = 1, 3 do assert.equal(i, results[i][1].amount) end
    assert.is_nil(requests[2].opts)   -- the caller's request is left as it was
    list = records(path)
    assert.equal(8, #list)
    assert.same({ index = 2, key = list[4].key }, list[5])
    assert.equal(2, list[6].result.amount)
    assert.same({ index = 3, key = sent[before + 2].key }, list[7])
    assert.equal(3, list[8].index)
  end)

  it("ignores a torn last line, and writes the next record on a line of its own", function()
    local client, sent = scripted()
    local requests = updates(2)
    assert(client:batch(requests, { journal = path }))
    local list = records(path)
    -- Killed mid-write: request 2's first record cut short, so it was never sent.
    write_records(path, { list[1], list[2], list[3] }, '{"index":2,"key":"' .. list[4].key:sub(1, 7))
    local before = #sent
    local results = assert(client:batch(requests, { journal = path }))
    assert.equal(before + 1, #sent)
    assert.are_not.equal(list[4].key, sent[before + 1].key)
    assert.equal(2, results[2][1].amount)
    list = records(path)   -- every line whole
    assert.equal(5, #list)
    assert.same({ index = 2, key = sent[before + 1].key }, list[4])
    assert.equal(2, list[5].result.amount)
    assert.is_false(sh.exists(path .. ".torn"))
  end)

  it("starts a journal in an empty file, and one whose only line is torn", function()
    local client = scripted()
    for _, text in ipairs { "", '{"batch_journal":1,"finger' } do
      assert(sh.write_file(path, text))
      assert(client:batch(updates(1), { journal = path }))
      assert.equal(3, #records(path))
    end
  end)

  it("refuses a journal of another list of requests, or a file that is no journal, before sending anything", function()
    local client, sent = scripted()
    assert(client:batch(updates(2), { journal = path }))
    local first_line = records(path)[1]
    local before = #sent
    local changed = updates(2)
    changed[2].body.amount = 3
    local other = scripted("http://other")
    for _, case in ipairs {
      { client, changed },   -- a body
      { client, updates(1) },   -- the count
      { other, updates(2) },   -- the base URL
    } do
      local ok, err = pcall(case[1].batch, case[1], case[2], { journal = path })
      assert.is_false(ok)
      assert.matches("^bad argument #2 to 'batch' %(batch journal " .. path:gsub("%p", "%%%0")
        .. " belongs to another list of requests %(2 of them, fingerprint " .. first_line.fingerprint
        .. "; this one: %d, %x+%): give each list its own journal%)$", err)
    end
    assert.has_error(function() client:batch(updates(2), { journal = dir }) end,
      "bad argument #2 to 'batch' (batch journal " .. dir .. " is a directory, not a regular file)")
    assert(sh.write_file(path, "not a journal\n"))
    assert.has_error(function() client:batch(updates(2), { journal = path }) end,
      "bad argument #2 to 'batch' (batch journal " .. path .. " is not a batch journal (its first line is not one's))")
    write_records(path, { first_line, { index = 3, key = "k" } })
    assert.has_error(function() client:batch(updates(2), { journal = path }) end,
      "bad argument #2 to 'batch' (batch journal " .. path .. ": line 2 is not a record of this batch)")
    assert.has_error(function() client:batch(updates(1), { journal = "" }) end,
      "batch: option 'journal' must be a file's path")
    local upload = { api = "custom", method = "post", path = "files", query = Q,
                     body = { file = truto.file(path) } }
    assert.has_error(function() client:batch({ upload }, { journal = dir .. "/upload.journal" }) end,
      "bad argument #2 to 'batch' (batch request #1 uploads a file: a journal cannot tell whether it changed before a rerun)")
    assert.equal(before, #sent)
  end)

  it("returns nil and an error of kind \"journal\" when the file cannot be written", function()
    local client, sent = scripted()
    local results, err = client:batch(updates(1), { journal = dir .. "/missing/batch.journal" })
    assert.is_nil(results)
    assert.equal("journal", err.kind)
    assert.equal("truto: journal: cannot open the batch journal: " .. dir
      .. "/missing/batch.journal: No such file or directory", tostring(err))
    assert.equal(0, #sent)
  end)

  describe("over the libcurl multi handle, against the emulator", function()
    local client

    setup(function()
      emu.start()
      client = emu.client { sleep = function() end }
    end)
    teardown(function()
      client:close()
      emu.stop()
    end)
    before_each(function() emu.reset() end)

    it("stopped part-way, then run again: every update applied once, every result returned", function()
      local requests = {}
      for i = 1, 120 do requests[i] = update(tostring(10000002 + (i - 1) % 27 + 1), i) end
      -- 27 records, each updated several times: one write per request.  The
      -- requests after the 50th are answered 100 ms late: in flight at the stop.
      for i = 51, 120 do requests[i].opts = { headers = { ["X-Emulator-Delay-Ms"] = "100" } } end
      local stopped = {}
      local ok, err = pcall(client.batch, client, requests, { journal = path, concurrency = 16,
        on_progress = function(settled) if settled == 50 then error(stopped, 0) end end })
      assert.is_false(ok)
      assert.equal(stopped, err)
      local list = records(path)
      local started, finished = 0, 0
      for i = 2, #list do
        if list[i].key then started = started + 1 else finished = finished + 1 end
      end
      assert.equal(50, finished)
      assert.is_true(started > 50 and started <= 66, "started: " .. started)
      require("truto.core").sleep(0.3)   -- the emulator finishes what reached it
      local writes_before = 0
      for _, n in pairs(emu.stats().writes) do writes_before = writes_before + n end
      assert.is_true(writes_before >= 50 and writes_before <= 66, "writes: " .. writes_before)

      local results = assert(client:batch(requests, { journal = path, concurrency = 16 }))
      for i = 1, 120 do assert.equal(i, results[i][1].amount, tostring(results[i][2])) end
      local stats = emu.stats()
      local writes = 0
      for _, n in pairs(stats.writes) do writes = writes + n end
      -- Each request applied once: the ones that reached the server before
      -- the stop and were sent again were replayed, not applied.
      assert.equal(120, writes)
      local patches = 0
      for _, r in ipairs(emu.requests()) do
        if r.method == "PATCH" then
          patches = patches + 1
          assert.matches("^%x+$", r.headers["idempotency-key"])
        end
      end
      assert.equal(120 + stats.idempotent_replays, patches)
      assert.equal(writes_before - 50, stats.idempotent_replays)
    end)
  end)
end)

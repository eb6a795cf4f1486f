-- bench/support.lua: the payloads of `make bench`'s B6 (a large list page)
-- and B7 (a large request body) are what the benchmark says they are, and
-- its lookups in the C modules find what they name or say what is missing.
-- bench/lua_floor.c (B2's and B3's Lua floor, built here with -Werror):
-- the bytes it sends and the tables it hands back are the client's.
local truto = require "truto"
local support = dofile("bench/support.lua")

describe("bench/support.lua", function()
  it("writes a list page of the given records, about the given size, values distinct per record", function()
    local bytes = 10 * 52428
    local text = support.page_json(10, bytes)
    assert.is_true(#text >= bytes and #text < bytes + 10 * 80 + 64, "page of " .. #text .. " bytes")
    local page = assert(truto.decode_json(text))
    assert.are.equal(10, #page.result)
    assert.are.equal(truto.null, page.next_cursor)
    assert.are.equal("7", page.result[7].id)
    assert.are.equal("value 1 of record 7", page.result[7].remote_data.properties.field_0001)
    assert.are.equal(200, #page.result[7].remote_data.history)
    assert.are.equal("user 3", page.result[7].remote_data.history[3].by)
  end)

  it("builds a request body whose JSON is within 1% of the given size", function()
    local body = support.large_body(1024 * 1024)
    local size = #truto.encode_json(body)
    assert.is_true(math.abs(size - 1024 * 1024) < 1024 * 1024 / 100, "body of " .. size .. " bytes")
    assert.are.equal("item-2", body.line_items[2].id)
    assert.are.equal(2.5, body.line_items[2].price)
  end)

  it("finds a field of the C core, and names one no module has", function()
    assert.are.equal("function", type(support.core_field("now")))
    local ok, err = pcall(support.core_field, "no_such_field")
    assert.is_false(ok)
    assert.matches("bench: no C module of lua%-truto has 'no_such_field'$", err)
  end)

  it("reads the process's peak RSS in kB", function()
    local kb = support.peak_rss_kb()
    assert.are.equal("integer", math.type(kb))
    assert.is_true(kb > 1000 and kb < 4 * 1024 * 1024, kb .. " kB")
  end)
end)

-- bench/lua_floor.c: B2's and B3's Lua floor sends what the client sends and
-- hands back what the client would decode, or the comparison means nothing.
describe("bench/lua_floor.c", function()
  local sh = require "spec.support.shell"
  local emulator = require "spec.support.emulator"
  local schema = require "truto.schema"
  local build_request = support.core_field("build_request")
  local dir, floor, headers, url

  -- The seed's update body, as bench.lua's seed_body().
  local function seed_body()
    return {
      name = "Acme Corp renewal 2027", amount = 125000.5, status = "open", currency = "USD",
      account = { id = "5001" }, owner = { id = "111" }, stage = { id = "contractsent", name = "Contract Sent" },
      contact = { { id = "301" }, { id = "302" } },
      tags = { { id = "t1", name = "renewal" }, { id = "t2", name = "priority" } },
      custom_fields = { deal_source = "partner", region = "emea" }, close_date = "2027-03-31T00:00:00.000Z",
      description = "Renewal of the 2026 contract, three seats added",
    }
  end

  setup(function()
    dir = assert(sh.mktemp("truto-floor"))
    local flags = sh.capture("pkg-config --cflags --libs lua5.4 libcurl libcjson 2>&1")
    local out = sh.capture(("gcc -O2 -Wall -Wextra -Werror -fPIC -shared -o %s/lua_floor.so bench/lua_floor.c %s 2>&1")
      :format(sh.quote(dir), flags))
    assert(out == "", out)
    floor = assert(package.loadlib(dir .. "/lua_floor.so", "luaopen_lua_floor"))()
    emulator.start()
    -- The request lines the core builds for the seed's update, less its Idempotency-Key (the floor's own).
    local req = build_request { method = "PATCH", base_url = emulator.base_url,
      path = { "unified", "crm", "opportunities", "23423523" }, path_names = { "api", "model", "resource", "id" },
      query = { integrated_account_id = emulator.ACCOUNT }, body = seed_body(), token = emulator.TOKEN }
    url, headers = req.url, {}
    for _, line in ipairs(req.headers) do
      if not line:match("^Idempotency%-Key:") then headers[#headers + 1] = line end
    end
  end)

  teardown(function()
    emulator.stop()
    if dir then sh.run("rm -rf " .. sh.quote(dir)) end
  end)

  it("writes the seed's body with the very bytes of truto.encode_json; its null is truto.null", function()
    assert.are.equal(truto.null, floor.null)
    local s = floor.session()
    assert.are.equal(truto.encode_json(seed_body(), schema.list_fields("crm", "opportunities")), s:encode(seed_body()))
    assert.are.equal('{"a":{"b":null,"c":{}},"ab":[1,2.5,true,"é"],"b":false}',
      s:encode { b = false, ab = { 1, 2.5, true, "é" }, a = { c = {}, b = floor.null } })
    s:close()
  end)

  it("refuses what JSON cannot hold, naming it", function()
    local s = floor.session()
    local cycle = {}
    cycle.self = cycle
    for _, case in ipairs {
      { { 1, 2, x = 3 }, "a list with holes or with other keys" }, { { 1, nil, 3 }, "a list with holes or with other keys" },
      { { f = print }, "cannot send a function" }, { { [true] = 1 }, "an object key that is not a string" },
      { { s = "a\0b" }, "a string with a NUL byte" }, { cycle, "tables nested over 1000 deep (a cycle?)" },
    } do
      local ok, err = pcall(s.encode, s, case[1])
      assert.is_false(ok)
      assert.are.equal("lua_floor: " .. case[2], err)
    end
    s:close()
  end)

  it("sends the core's lines with a fresh Idempotency-Key and gives the answer back as Lua tables", function()
    emulator.reset()
    local s = floor.session()
    local answers = {}
    for i = 1, 2 do
      local status
      status, answers[i] = s:perform("PATCH", url, headers, seed_body())
      assert.are.equal(200, status)
    end
    s:close()
    local seen = emulator.requests()
    assert.are.equal(2, #seen)
    local key = seen[2].headers["idempotency-key"]
    assert.matches("^%x+$", key)
    assert.are.equal(32, #key)
    assert.are_not.equal(seen[1].headers["idempotency-key"], key)
    assert.are.equal(truto.encode_json(seed_body(), schema.list_fields("crm", "opportunities")), seen[2].body)
    -- The emulator replays its answer to a key: the client decodes the very bytes the floor read.
    local client = emulator.client()
    local record = assert(client.unified_api:update("crm", "opportunities", "23423523", seed_body(),
      { integrated_account_id = emulator.ACCOUNT }, { idempotency_key = key }))
    client:close()
    assert.are.same(record, answers[2])
  end)

  it("runs a batch on its multi handle, answers in request order, and says which request failed", function()
    local m = floor.multi(2)
    local bodies = {}
    for i = 1, 5 do bodies[i] = seed_body() end
    local answers = assert(m:perform("PATCH", url, headers, bodies))
    assert.are.equal(5, #answers)
    for i = 1, 5 do assert.are.equal("23423523", answers[i].id) end
    local none, err = m:perform("PATCH", url:gsub("/opportunities/", "/no_such_resource/"), headers, { seed_body() })
    assert.is_nil(none)
    assert.are.equal("lua_floor: request 1: status 404", err)
    assert.are.equal(3, #assert(m:perform("PATCH", url, headers, { seed_body(), seed_body(), seed_body() })))
    m:close()
  end)
end)

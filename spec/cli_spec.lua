-- The `truto` command (bin/truto, lua/truto/cli.lua) end to end: the real
-- command runs as a subprocess against the emulator over HTTP, and the
-- emulator's request log shows exactly what it sent.
local truto = require "truto"
local emulator = require "truto.emulator"
local sh = require "spec.support.shell"

local decode = truto.decode_json
local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local TOKEN = "test-token"
local OPPS = "/unified/crm/opportunities"

local q = sh.quote

local function lines(text)
  local t = {}
  for line in text:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  return t
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- The uri the client sends for path + the account (+ more query).
local function uri(path, query)
  return path .. "?integrated_account_id=" .. ACCOUNT .. (query and "&" .. query or "")
end

describe("truto command", function()
  local h

  -- Runs bin/truto with args (a list) from the repo root; returns stdout,
  -- stderr and the exit status.  options.stdin: text for standard input
  -- (default: none); options.env: variables to set (false: unset) over
  -- TRUTO_API_TOKEN=test-token and TRUTO_BASE_URL=<emulator>.  Asserts the
  -- token in use never shows in either stream.
  local function run(args, options)
    options = options or {}
    local env = { TRUTO_API_TOKEN = TOKEN, TRUTO_BASE_URL = h.base_url, TRUTO_INTEGRATED_ACCOUNT_ID = false }
    for k, v in pairs(options.env or {}) do env[k] = v end
    local cmd = { "env" }
    for _, name in ipairs(sorted_keys(env)) do   -- env wants every -u before the first NAME=VALUE
      if not env[name] then cmd[#cmd + 1] = "-u " .. name end
    end
    for _, name in ipairs(sorted_keys(env)) do
      if env[name] then cmd[#cmd + 1] = q(name .. "=" .. env[name]) end
    end
    cmd[#cmd + 1] = "bin/truto"
    for _, a in ipairs(args) do cmd[#cmd + 1] = q(a) end
    local stdin_file, err_file = os.tmpname(), os.tmpname()
    assert(sh.write_file(stdin_file, options.stdin or ""))
    cmd[#cmd + 1] = "<" .. q(stdin_file) .. " 2>" .. q(err_file)
    local pipe = assert(io.popen(table.concat(cmd, " ")))
    local out = pipe:read("a")
    local _, how, rc = pipe:close()
    local err = assert(sh.read_file(err_file))
    os.remove(stdin_file)
    os.remove(err_file)
    assert.equal("exit", how)
    local token = env.TRUTO_API_TOKEN
    if token and token ~= "" then
      assert.is_nil(out:find(token, 1, true), "the token is on stdout")
      assert.is_nil(err:find(token, 1, true), "the token is on stderr")
    end
    return out, err, rc
  end

  -- An emulator endpoint through curl; returns the raw body.
  local function http(method, path, body, auth)
    local cmd = { "curl -sg --max-time 10 -X", method }
    if auth then cmd[#cmd + 1] = "-H " .. q("Authorization: Bearer " .. TOKEN) end
    if body then cmd[#cmd + 1] = "--data-binary " .. q(body) end
    cmd[#cmd + 1] = q(h.base_url .. path)
    local pipe = assert(io.popen(table.concat(cmd, " ")))
    local text = pipe:read("a")
    assert(pipe:close())
    return text
  end

  local function control(method, path, body)
    return assert(decode(http(method, "/_emulator/" .. path, body)))
  end
  local function reset() assert.is_true(control("POST", "reset").reset) end
  local function requests() return control("GET", "requests") end
  local function stats() return control("GET", "stats") end

  -- The request log must hold exactly one request; returns it.
  local function only_request()
    local log = requests()
    assert.equal(1, #log)
    return log[1]
  end

  -- Likewise, and it has this method, uri and (when given) body.
  local function only_request_is(method, want_uri, body)
    local req = only_request()
    assert.equal(method, req.method)
    assert.equal(want_uri, req.uri)
    if body ~= nil then assert.equal(body, req.body) end
  end

  local function ok_json(args, options)
    local out, err, rc = run(args, options)
    assert.equal("", err)
    assert.equal(0, rc)
    assert.equal("\n", out:sub(-1))
    return assert(decode(out)), out
  end

  setup(function()
    h = assert(emulator.start())
  end)

  teardown(function()
    if h then h:stop() end
  end)

  before_each(reset)

  describe("unified update (the seed call)", function()
    it("sends the PATCH byte for byte and prints the updated record", function()
      local rec = ok_json { "unified", "update", "crm", "opportunities", "23423523", "-a", ACCOUNT,
        "--data", '{"name":"X","amount":5,"contact":[],"tags":[]}',
        "--exclude", "id", "--exclude", "name", "--remote-query", "foo=bar" }
      assert.same({ "account", "amount", "close_date", "contact", "created_at", "currency", "custom_fields",
                    "description", "last_activity_at", "owner", "remote_data", "stage", "status", "tags",
                    "updated_at", "urls" }, sorted_keys(rec))
      assert.equal(5, rec.amount)
      assert.equal("[]", truto.encode_json(rec.contact))
      assert.equal("[]", truto.encode_json(rec.tags))
      assert.same({ foo = "bar" }, rec.remote_data.remote_query)
      assert.equal("X", rec.remote_data.properties.dealname)
      assert.equal("5", rec.remote_data.properties.amount)

      local req = only_request()
      assert.equal("PATCH", req.method)
      assert.equal(uri(OPPS .. "/23423523", "remote_query%5Bfoo%5D=bar"
        .. "&truto_exclude_fields%5B%5D=id&truto_exclude_fields%5B%5D=name"), req.uri)
      assert.equal('{"amount":5,"contact":[],"name":"X","tags":[]}', req.body)
      assert.equal("application/json", req.headers["content-type"])
      assert.equal("Bearer " .. TOKEN, req.headers.authorization)
      assert.same({ [ACCOUNT .. "/crm/opportunities/23423523"] = 1 }, stats().writes)

      local after = ok_json { "unified", "get", "crm", "opportunities", "23423523", "-a", ACCOUNT }
      assert.equal("23423523", after.id)
      assert.equal("X", after.name)
      assert.equal(5, after.amount)
      assert.equal("[]", truto.encode_json(after.contact))
    end)

    it("reads --data @FILE", function()
      local path = os.tmpname()
      assert(sh.write_file(path, '{\n  "tags": [ {"name": "vip", "id": "t9"} ],\n  "amount": 7\n}\n'))
      local rec = ok_json { "unified", "update", "crm", "opportunities", "10000003", "-a", ACCOUNT, "-d", "@" .. path }
      os.remove(path)
      assert.equal(7, rec.amount)
      assert.same({ { id = "t9", name = "vip" } }, rec.tags)
      only_request_is("PATCH", uri(OPPS .. "/10000003"), '{"amount":7,"tags":[{"id":"t9","name":"vip"}]}')
    end)

    it("reads --data @- from standard input", function()
      local rec = ok_json({ "unified", "update", "crm", "opportunities", "10000004", "-a", ACCOUNT, "--data", "@-" },
        { stdin = '{"description":"from stdin","custom_fields":{},"close_date":null}' })
      assert.equal("from stdin", rec.description)
      assert.is_nil(rec.close_date)
      assert.equal('{"close_date":null,"custom_fields":{},"description":"from stdin"}', only_request().body)
      local after = ok_json { "unified", "get", "crm", "opportunities", "10000004", "-a", ACCOUNT }
      assert.equal("from stdin", after.description)
      assert.equal("{}", truto.encode_json(after.custom_fields))
    end)

    it("takes the account from $TRUTO_INTEGRATED_ACCOUNT_ID and --opt=value forms", function()
      local rec = ok_json({ "unified", "update", "crm", "opportunities", "10000005", "--data={\"amount\":1.5}" },
        { env = { TRUTO_INTEGRATED_ACCOUNT_ID = ACCOUNT } })
      assert.equal(1.5, rec.amount)
      local req = only_request()
      assert.equal(uri(OPPS .. "/10000005"), req.uri)
      assert.equal('{"amount":1.5}', req.body)
    end)
  end)

  describe("formats and query options", function()
    it("writes the body exactly as received", function()
      local direct = http("GET", uri(OPPS .. "/23423523"), nil, true)
      local _, out = ok_json { "unified", "get", "crm", "opportunities", "23423523", "-a", ACCOUNT }
      assert.equal(direct .. "\n", out)
    end)

    it("--format raw gives the HubSpot-shaped record", function()
      local rec = ok_json { "unified", "get", "crm", "opportunities", "23423523", "-a", ACCOUNT, "--format", "raw" }
      assert.same({ "archived", "createdAt", "id", "properties", "updatedAt" }, sorted_keys(rec))
      assert.equal("Acme renewal 2024", rec.properties.dealname)
      assert.equal("1000", rec.properties.amount)
      assert.equal(uri(OPPS .. "/23423523", "truto_response_format=raw"), only_request().uri)
    end)

    it("--format normalized drops remote_data", function()
      local rec = ok_json { "unified", "get", "crm", "opportunities", "23423523", "-a", ACCOUNT, "-f", "normalized" }
      assert.equal("Acme renewal 2024", rec.name)
      assert.is_nil(rec.remote_data)
    end)

    it("--format stream writes the emulator's ndjson body unchanged", function()
      local direct = http("GET", uri(OPPS, "truto_response_format=stream"), nil, true)
      local out, err, rc = run { "unified", "list", "crm", "opportunities", "-a", ACCOUNT, "-f", "stream" }
      assert.equal(0, rc)
      assert.equal("", err)
      assert.equal(direct, out)
      local records = lines(out)
      assert.equal(30, #records)
      assert.equal("23423523", decode(records[1]).id)
      assert.equal("10000029", decode(records[30]).id)
      local log = requests()
      assert.equal(2, #log)   -- curl's and the command's
      assert.equal(uri(OPPS, "truto_response_format=stream"), log[2].uri)
    end)

    it("--ignore-remote-data", function()
      local rec = ok_json { "unified", "get", "crm", "opportunities", "23423523", "-a", ACCOUNT, "--ignore-remote-data" }
      assert.equal("Acme renewal 2024", rec.name)
      assert.is_nil(rec.remote_data)
      assert.equal(uri(OPPS .. "/23423523", "truto_ignore_remote_data=true"), only_request().uri)
    end)

    it("--limit and --cursor page through a list", function()
      local page1 = ok_json { "unified", "list", "crm", "opportunities", "-a", ACCOUNT, "--limit", "2" }
      assert.equal(2, page1.result_count)
      assert.equal("23423523", page1.result[1].id)
      assert.equal("alt:ref:imported@frontapp.com_t:50603", page1.result[2].id)
      assert.equal(truto.null, page1.prev_cursor)
      assert.equal("string", type(page1.next_cursor))
      local page2 = ok_json { "unified", "list", "crm", "opportunities", "-a", ACCOUNT, "--limit=2",
                              "--cursor", page1.next_cursor }
      assert.same({ "a/b", "10000003" }, { page2.result[1].id, page2.result[2].id })
      local log = requests()
      assert.equal(2, #log)
      assert.equal(uri(OPPS, "limit=2"), log[1].uri)
      assert.equal(uri(OPPS, "limit=2&" .. truto.encode_query { next_cursor = page1.next_cursor }), log[2].uri)
      assert.matches("next_cursor=[%w%%]+$", log[2].uri)   -- '=' in the cursor is %3D
    end)

    it("--all writes one record per line across every page", function()
      local out, err, rc = run { "unified", "list", "crm", "opportunities", "-a", ACCOUNT, "--all" }
      assert.equal(0, rc)
      assert.equal("", err)
      local records = lines(out)
      assert.equal(30, #records)
      assert.equal(out, table.concat(records, "\n") .. "\n")
      local seen = {}
      for i, line in ipairs(records) do
        local rec = assert(decode(line))
        assert.is_nil(seen[rec.id])
        seen[rec.id] = i
      end
      assert.equal(1, seen["23423523"])
      assert.equal(3, seen["a/b"])
      assert.equal(30, seen["10000029"])
      -- the same records as the emulator's own stream, line for line
      assert.equal(http("GET", uri(OPPS, "truto_response_format=stream"), nil, true), out)
      local log = requests()
      assert.equal(3 + 1, #log)   -- three pages of 10, then the curl above
      assert.equal(uri(OPPS), log[1].uri)
      for i = 2, 3 do assert.matches("^" .. uri(OPPS, "next_cursor="):gsub("%p", "%%%0"), log[i].uri) end
    end)

    it("--all on a proxy list, with -v counting the records", function()
      local out, err, rc = run { "proxy", "list", "deals", "-a", ACCOUNT, "--all", "--limit", "7", "-v" }
      assert.equal(0, rc)
      assert.equal(30, #lines(out))
      assert.matches("\n< 30 records\n$", err)
      assert.equal(5, #requests())   -- pages of 7, 7, 7, 7, 2
    end)

    it("-q with brackets nests, -x and -r add to the same query", function()
      local rec = ok_json { "unified", "get", "crm", "opportunities", "23423523", "-a", ACCOUNT,
        "-q", "remote_query[a][b]=c", "-q", "truto_exclude_fields[]=description", "-x", "urls", "-r", "d=e=f" }
      assert.same({ a = { b = "c" }, d = "e=f" }, rec.remote_data.remote_query)
      assert.is_nil(rec.description)
      assert.is_nil(rec.urls)
      assert.equal("Acme renewal 2024", rec.name)
      assert.equal(uri(OPPS .. "/23423523", "remote_query%5Ba%5D%5Bb%5D=c&remote_query%5Bd%5D=e%3Df"
        .. "&truto_exclude_fields%5B%5D=description&truto_exclude_fields%5B%5D=urls"), only_request().uri)
    end)

    it("-H headers reach the server", function()
      ok_json { "unified", "get", "crm", "users", "111", "-a", ACCOUNT, "-H", "X-Trace-Id: abc 123",
                "--header", "X-Other:two" }
      local req = only_request()
      assert.equal("abc 123", req.headers["x-trace-id"])
      assert.equal("two", req.headers["x-other"])
    end)

    it("--idempotency-key: the same create twice is applied once", function()
      local args = { "unified", "create", "crm", "accounts", "-a", ACCOUNT, "--data", '{"name":"Idem"}',
                     "--idempotency-key", "key-1" }
      local first, out1 = ok_json(args)
      local second, out2 = ok_json(args)
      assert.equal("90000001", first.id)
      assert.equal(out1, out2)
      assert.equal("Idem", second.name)
      local s = stats()
      assert.same({ [ACCOUNT .. "/crm/accounts/90000001"] = 1 }, s.writes)
      assert.equal(1, s.idempotent_replays)
      local log = requests()
      assert.equal(2, #log)
      for _, req in ipairs(log) do
        assert.equal("POST", req.method)
        assert.equal("key-1", req.headers["idempotency-key"])
        assert.equal('{"name":"Idem"}', req.body)
      end
      -- without --idempotency-key each run gets a fresh generated key: a new record
      assert.equal("90000002", ok_json({ "unified", "create", "crm", "accounts", "-a", ACCOUNT,
                                         "--data", '{"name":"Idem"}' }).id)
      local generated = requests()[3].headers["idempotency-key"]
      assert.matches("^%x+$", generated)
      assert.equal(32, #generated)
    end)
  end)

  describe("unified verbs", function()
    it("list", function()
      local page = ok_json { "unified", "list", "crm", "accounts", "-a", ACCOUNT }
      assert.equal(5, page.result_count)
      local ids = {}
      for i, rec in ipairs(page.result) do ids[i] = rec.id end
      assert.same({ "5001", "5002", "5003", "5004", "5005" }, ids)
      assert.equal(truto.null, page.next_cursor)
      only_request_is("GET", uri("/unified/crm/accounts"), "")
    end)

    it("get", function()
      assert.equal("7001", ok_json({ "unified", "get", "crm", "contacts", "7001", "-a", ACCOUNT }).id)
      assert.equal(uri("/unified/crm/contacts/7001"), only_request().uri)
    end)

    it("create, then get the new record", function()
      local rec = ok_json { "unified", "create", "crm", "opportunities", "-a", ACCOUNT,
                            "--data", '{"name":"New deal","amount":10,"contact":[]}' }
      assert.equal("90000001", rec.id)
      assert.equal("New deal", rec.name)
      only_request_is("POST", uri(OPPS), '{"amount":10,"contact":[],"name":"New deal"}')
      assert.equal("New deal", ok_json({ "unified", "get", "crm", "opportunities", "90000001", "-a", ACCOUNT }).name)
    end)

    it("create without a required field fails with the envelope", function()
      local out, err, rc = run { "unified", "create", "crm", "accounts", "-a", ACCOUNT, "--data", "{}" }
      assert.equal(1, rc)
      assert.equal("", out)
      local l = lines(err)
      assert.equal(2, #l)
      assert.equal("truto: POST /unified/crm/accounts: 400 Bad Request: Missing required body fields: name", l[1])
      assert.same({ "name" }, decode(l[2]).truto_error_insight.missing_required_body_fields.value)
      assert.equal("{}", only_request().body)
    end)

    it("delete, after which get is a 404", function()
      local rec = ok_json { "unified", "delete", "crm", "opportunities", "10000029", "-a", ACCOUNT }
      assert.same({ id = "10000029" }, rec)
      only_request_is("DELETE", uri(OPPS .. "/10000029"), "")
      local out, _, rc = run { "unified", "get", "crm", "opportunities", "10000029", "-a", ACCOUNT }
      assert.equal(1, rc)
      assert.equal("", out)
    end)

    it("call runs a custom method (POST)", function()
      local res = ok_json { "unified", "call", "crm", "accounts", "merge", "-a", ACCOUNT,
                            "--data", '{"ids":["5001","5002"]}' }
      assert.equal("5001", res.result.id)
      assert.same({ "5002" }, res.result.merged_ids)
      only_request_is("POST", uri("/unified/crm/accounts/merge"), '{"ids":["5001","5002"]}')
      local _, _, rc = run { "unified", "get", "crm", "accounts", "5002", "-a", ACCOUNT }
      assert.equal(1, rc)
    end)

    it("call without --data sends {}", function()
      local out, err, rc = run { "unified", "call", "crm", "accounts", "merge", "-a", ACCOUNT }
      assert.equal(1, rc)   -- merge needs ids
      assert.equal("", out)
      assert.matches("^truto: POST /unified/crm/accounts/merge: 400 Bad Request: ", err)
      assert.equal("{}", only_request().body)
    end)

    it("meta", function()
      local meta = ok_json { "unified", "meta", "crm", "opportunities", "update", "-a", ACCOUNT }
      assert.equal("update", meta.method)
      assert.equal("https://truto.one/docs/api-reference/unified-crm-api/opportunities/update", meta.documentation_link)
      assert.equal("table", type(meta.request_body_schema))
      only_request_is("GET", uri(OPPS .. "/meta/update"))
    end)
  end)

  describe("proxy verbs on deals", function()
    it("list and get", function()
      local page = ok_json { "proxy", "list", "deals", "-a", ACCOUNT }
      assert.equal(10, page.result_count)
      assert.equal("23423523", page.result[1].id)
      local deal = ok_json { "proxy", "get", "deals", "23423523", "-a", ACCOUNT }
      assert.equal("Acme renewal 2024", deal.properties.dealname)
      local log = requests()
      assert.equal(uri("/proxy/deals"), log[1].uri)
      assert.equal(uri("/proxy/deals/23423523"), log[2].uri)
    end)

    it("create", function()
      local deal = ok_json { "proxy", "create", "deals", "-a", ACCOUNT, "--data", '{"properties":{"dealname":"P"}}' }
      assert.equal("P", deal.properties.dealname)
      only_request_is("POST", uri("/proxy/deals"), '{"properties":{"dealname":"P"}}')
      assert.equal("P", ok_json({ "proxy", "get", "deals", deal.id, "-a", ACCOUNT }).properties.dealname)
    end)

    it("update deep-merges (PATCH)", function()
      local deal = ok_json { "proxy", "update", "deals", "23423523", "-a", ACCOUNT,
                             "--data", '{"properties":{"amount":"9"}}' }
      assert.equal("9", deal.properties.amount)
      assert.equal("Acme renewal 2024", deal.properties.dealname)
      only_request_is("PATCH", uri("/proxy/deals/23423523"), '{"properties":{"amount":"9"}}')
    end)

    it("delete", function()
      assert.same({ id = "23423523" }, ok_json { "proxy", "delete", "deals", "23423523", "-a", ACCOUNT })
      only_request_is("DELETE", uri("/proxy/deals/23423523"))
      local _, err, rc = run { "proxy", "get", "deals", "23423523", "-a", ACCOUNT }
      assert.equal(1, rc)
      assert.matches("^truto: GET /proxy/deals/23423523: 404 Not Found", err)
    end)

    it("call", function()
      local res = ok_json { "proxy", "call", "deals", "sync", "-a", ACCOUNT, "--data", '{"full":true}' }
      assert.same({ method = "sync", resource = "deals", body = { full = true } }, res.result)
      only_request_is("POST", uri("/proxy/deals/sync"), '{"full":true}')
    end)
  end)

  describe("custom verbs", function()
    for _, verb in ipairs { "get", "post", "put", "patch", "delete" } do
      local method = verb:upper()
      local has_body = verb == "post" or verb == "put" or verb == "patch"
      it(verb, function()
        local args = { "custom", verb, "reports/weekly", "-a", ACCOUNT, "-q", "week=12" }
        if has_body then
          args[#args + 1] = "--data"
          args[#args + 1] = '{"b":[1,2],"a":"x"}'
        end
        local res = ok_json(args)
        assert.equal(method, res.result.method)
        assert.equal("/reports/weekly", res.result.path)
        assert.same({ "reports", "weekly" }, res.result.segments)
        assert.same({ week = "12" }, res.result.query)
        local req = only_request()
        assert.equal(method, req.method)
        assert.equal(uri("/custom/reports/weekly", "week=12"), req.uri)
        if has_body then
          assert.same({ a = "x", b = { 1, 2 } }, res.result.body)
          assert.equal('{"a":"x","b":[1,2]}', req.body)
        else
          assert.equal(truto.null, res.result.body)
          assert.equal("", req.body)
        end
      end)
    end
  end)

  describe("ids with special characters", function()
    it("an id with ':' and '@' is one path segment", function()
      local id = "alt:ref:imported@frontapp.com_t:50603"
      assert.equal(id, ok_json({ "unified", "get", "crm", "opportunities", id, "-a", ACCOUNT }).id)
      assert.equal(OPPS .. "/alt%3Aref%3Aimported%40frontapp.com_t%3A50603", only_request().path)
    end)

    it("an id with '/' is one path segment, for reads and writes", function()
      assert.equal("Slash id deal", ok_json({ "unified", "get", "crm", "opportunities", "a/b", "-a", ACCOUNT }).name)
      local rec = ok_json { "unified", "update", "crm", "opportunities", "a/b", "-a", ACCOUNT, "-d", '{"name":"S"}' }
      assert.equal("a/b", rec.id)
      assert.equal("S", rec.name)
      local log = requests()
      assert.equal(OPPS .. "/a%2Fb", log[1].path)
      assert.equal(OPPS .. "/a%2Fb", log[2].path)
      assert.same({ [ACCOUNT .. "/crm/opportunities/a/b"] = 1 }, stats().writes)
    end)

    it("an id that starts with '-' after --", function()
      local out, err, rc = run { "unified", "get", "crm", "opportunities", "-a", ACCOUNT, "--", "-1" }
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("^truto: GET /unified/crm/opportunities/%-1: 404 Not Found: Record not found: %-1\n", err)
    end)
  end)

  describe("errors", function()
    it("an unknown id: exit 1, the error line and the envelope on stderr, nothing on stdout", function()
      local out, err, rc = run { "unified", "get", "crm", "opportunities", "does-not-exist", "-a", ACCOUNT }
      assert.equal(1, rc)
      assert.equal("", out)
      local l = lines(err)
      assert.equal(2, #l)
      assert.equal("truto: GET /unified/crm/opportunities/does-not-exist: 404 Not Found: Record not found: does-not-exist",
                   l[1])
      local envelope = assert(decode(l[2]))
      assert.equal(404, envelope.statusCode)
      assert.equal("Not Found", envelope.error)
      assert.is_true(envelope.truto_is_remote_error)
      assert.equal(err, table.concat(l, "\n") .. "\n")
    end)

    it("no token: exit 2 and nothing sent", function()
      for _, token in ipairs { false, "" } do
        local out, err, rc = run({ "unified", "list", "crm", "users", "-a", ACCOUNT }, { env = { TRUTO_API_TOKEN = token } })
        assert.equal(2, rc)
        assert.equal("", out)
        assert.equal("truto: set TRUTO_API_TOKEN to your API token\n", err)
      end
      assert.same({}, requests())
    end)

    it("a token the API refuses: exit 1 with the 401, the token not shown", function()
      local out, err, rc = run({ "unified", "list", "crm", "users", "-a", ACCOUNT }, { env = { TRUTO_API_TOKEN = "wrong-secret" } })
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("^truto: GET /unified/crm/users: 401 Unauthorized: Invalid API token\n", err)
      assert.equal("Bearer wrong-secret", only_request().headers.authorization)
    end)

    it("a malformed token: exit 2 with a message that neither shows it nor a source position", function()
      local out, err, rc = run({ "unified", "list", "crm", "users", "-a", ACCOUNT }, { env = { TRUTO_API_TOKEN = "sec ret" } })
      assert.equal(2, rc)
      assert.equal("", out)
      assert.equal("truto: the API token is empty or contains spaces or control characters\n", err)
    end)

    local USAGE_CASES = {
      { { "unified", "list", "crm", "opportunities", "--bogus" }, "unknown option %-%-bogus" },
      { { "unified", "list", "crm", "opportunities", "-z" }, "unknown option %-z" },
      { { "unified", "get", "crm", "opportunities" }, "'unified get' takes 3 name%(s%), got 2" },
      { { "unified", "list", "crm" }, "'unified list' takes 2 name%(s%), got 1" },
      { { "proxy", "get", "deals", "1", "2" }, "'proxy get' takes 2 name%(s%), got 3" },
      { { "unified", "get", "crm", "opportunities", "1", "--data", "{}" }, "'unified get' takes no %-%-data" },
      { { "custom", "get", "reports/weekly", "-d", "{}" }, "'custom get' takes no %-%-data" },
      { { "unified", "update", "crm", "opportunities", "1", "--data", "{not json" },
        "%-%-data must be a JSON object or array: " },
      { { "unified", "update", "crm", "opportunities", "1", "--data", '"text"' }, "%-%-data must be a JSON object or array" },
      { { "unified", "update", "crm", "opportunities", "1", "--data", "@/nonexistent/body.json" },
        "cannot read %-%-data file: /nonexistent/body.json" },
      { { "unified", "update", "crm", "opportunities", "1" }, "%-%-data is required" },
      { { "unified", "list", "crm", "opportunities", "--format", "bogus" },
        "%-%-format must be unified, raw, normalized or stream" },
      { { "unified", "get", "crm", "opportunities", "1", "--all" }, "%-%-all works with list only" },
      { { "unified", "list", "crm", "opportunities", "--all", "-f", "stream" },
        "%-%-all cannot be combined with %-%-format stream" },
      { { "rest", "list" }, "the first word must be unified, proxy or custom, got 'rest'" },
      { { "unified", "frobnicate", "crm", "x" }, "unknown unified command 'frobnicate'" },
      { { "custom", "options", "x" }, "unknown custom command 'options'" },
      { { "unified", "list", "crm", "opportunities", "--limit", "ten" }, "%-%-limit must be a whole number, got 'ten'" },
      { { "unified", "list", "crm", "opportunities", "--limit", "0" }, "%-%-limit must be at least 1" },
      { { "unified", "list", "crm", "opportunities", "-q", "truto_exclude_fields=a,b", "-x", "c" },
        "query parameter 'truto_exclude_fields%[%]' conflicts with an earlier value of 'truto_exclude_fields'" },
      { { "unified", "list", "crm", "opportunities", "-q", "a[b]=1", "-q", "a=2" },
        "query parameter 'a' conflicts with an earlier list or object" },
      { { "unified", "list", "crm", "opportunities", "--retries", "1.5" }, "%-%-retries must be a whole number" },
      { { "unified", "list", "crm", "opportunities", "-q", "novalue" }, "%-%-query needs KEY=VALUE, got 'novalue'" },
      { { "unified", "list", "crm", "opportunities", "-q", "a[b=1" }, "bad brackets in query parameter 'a%[b'" },
      { { "unified", "list", "crm", "opportunities", "-r", "x" }, "%-%-remote%-query needs KEY=VALUE" },
      { { "unified", "list", "crm", "opportunities", "-H", "NoColon" }, "%-%-header needs 'NAME: VALUE', got 'NoColon'" },
      { { "unified", "list", "crm", "opportunities", "-a" }, "%-a needs a value" },
    }
    for _, case in ipairs(USAGE_CASES) do
      it("usage: " .. table.concat(case[1], " ") .. " -> exit 2", function()
        local args = case[1]
        local out, err, rc = run(args)
        assert.equal(2, rc)
        assert.equal("", out)
        assert.matches("^truto: [^\n]*" .. case[2], err)
        assert.matches("\n%(see truto %-%-help%)\n$", err)
        assert.same({}, requests())
      end)
    end

    it("usage: no arguments -> the usage text on stderr, exit 2", function()
      local out, err, rc = run {}
      assert.equal(2, rc)
      assert.equal("", out)
      assert.matches("^Usage:\n", err)
    end)

    it("a blocked account: exit 1 with the 503, not retried", function()
      local out, err, rc = run { "unified", "list", "crm", "opportunities", "-a", "blocked-account" }
      assert.equal(1, rc)
      assert.equal("", out)
      local l = lines(err)
      assert.equal("truto: GET /unified/crm/opportunities: 503 Service Unavailable: Integrated account is blocked", l[1])
      assert.same({ statusCode = 503, error = "Service Unavailable", message = "Integrated account is blocked" },
                  decode(l[2]))
      assert.equal("/unified/crm/opportunities?integrated_account_id=blocked-account", only_request().uri)
    end)

    local FAULT_429 = '{"faults":[{"method":"GET","path_prefix":"/unified/crm/users","status":429,'
      .. '"retry_after":"0","count":1}]}'

    it("a 429 is retried: exit 0, two requests, -v shows each attempt and the status", function()
      assert.equal(1, control("POST", "faults", FAULT_429).queued)
      local out, err, rc = run { "unified", "list", "crm", "users", "-a", ACCOUNT, "-v" }
      assert.equal(0, rc)
      assert.equal(3, decode(out).result_count)
      local line = "> GET " .. h.base_url .. uri("/unified/crm/users")
      assert.equal(line .. "\n" .. line .. " (attempt 2)\n< 200 (2 attempts)\n", err)
      local log = requests()
      assert.equal(2, #log)
      assert.equal(log[1].uri, log[2].uri)
      assert.equal(1, stats().faults_injected)
    end)

    it("a 429 with --retries 0 fails at once", function()
      control("POST", "faults", FAULT_429)
      local out, err, rc = run { "unified", "list", "crm", "users", "-a", ACCOUNT, "--retries", "0" }
      assert.equal(1, rc)
      assert.equal("", out)
      assert.matches("^truto: GET /unified/crm/users: 429 Too Many Requests: ", err)
      assert.equal(1, #requests())
    end)

    it("-v without retries says 1 attempt", function()
      local _, err, rc = run { "unified", "get", "crm", "users", "111", "-a", ACCOUNT, "--verbose" }
      assert.equal(0, rc)
      assert.equal("> GET " .. h.base_url .. uri("/unified/crm/users/111") .. "\n< 200 (1 attempt)\n", err)
    end)
  end)

  describe("--help", function()
    -- The options parse_args accepts, read from its tables in cli.lua.
    local function accepted_options()
      local source = assert(sh.read_file("lua/truto/cli.lua"))
      local value_block = assert(source:match("local VALUE_OPTIONS = (%b{})"))
      local flag_block = assert(source:match("local FLAG_OPTIONS = (%b{})"))
      local options = {}
      for name in value_block:gmatch('%["(%-[^"]+)"%]') do options[name] = "value" end
      for name in flag_block:gmatch('%["(%-[^"]+)"%]') do options[name] = "flag" end
      return options
    end

    it("exits 0 and documents every option parse_args accepts", function()
      local out, err, rc = run { "--help" }
      assert.equal(0, rc)
      assert.equal("", err)
      assert.equal(require("truto.cli").USAGE, out)
      local documented = {}
      for name in out:gmatch("%f[%S](%-%-?%a[%w-]*)") do documented[name] = true end
      local options, count = accepted_options(), 0
      for name in pairs(options) do
        count = count + 1
        assert.is_true(documented[name], name .. " is not in --help")
      end
      assert.equal(26, count)
      assert.matches("\n  %-%-%s+the end of the options", out)
      -- and every documented option is accepted (an unknown one would exit 2)
      for name in pairs(documented) do
        if name ~= "--help" then
          local kind = options[name]
          assert.is_not_nil(kind, name .. " is documented but not accepted")
          local args = { "--help", name }
          if kind == "value" then args[3] = "1" end
          local _, _, code = run(args)
          assert.equal(0, code, name)
        end
      end
      local _, bogus_err, bogus_rc = run { "--help", "--bogus" }
      assert.equal(2, bogus_rc)
      assert.matches("unknown option %-%-bogus", bogus_err)
    end)

    it("-h is --help", function()
      local out, _, rc = run { "unified", "list", "-h" }
      assert.equal(0, rc)
      assert.matches("^Usage:\n", out)
    end)
  end)
end)

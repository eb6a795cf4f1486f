-- The `truto` command (bin/truto, lua/truto/cli.lua) end to end: the real
-- command runs as a subprocess against the emulator over HTTP, and the
-- emulator's request log shows exactly what it sent.
local truto = require "truto"
local cli = require "truto.cli"
local core = require "truto.core"
local curl_core = require "truto.curl_core"
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

local sorted_keys = require("spec.support.scripted").sorted_keys

-- The uri the client sends for path + the account (+ more query).
local function uri(path, query)
  return path .. "?integrated_account_id=" .. ACCOUNT .. (query and "&" .. query or "")
end

describe("truto command", function()
  local h

  -- The shell command that runs bin/truto with args (a list) from the repo
  -- root, and the environment it gets: env_overrides' variables (false:
  -- unset) over TRUTO_API_TOKEN=test-token and TRUTO_BASE_URL=<emulator>.
  local function truto_command(args, env_overrides)
    local env = { TRUTO_API_TOKEN = TOKEN, TRUTO_BASE_URL = h.base_url, TRUTO_INTEGRATED_ACCOUNT_ID = false }
    for k, v in pairs(env_overrides or {}) do env[k] = v end
    local cmd = { "env" }
    for _, name in ipairs(sorted_keys(env)) do   -- env wants every -u before the first NAME=VALUE
      if not env[name] then cmd[#cmd + 1] = "-u " .. name end
    end
    for _, name in ipairs(sorted_keys(env)) do
      if env[name] then cmd[#cmd + 1] = q(name .. "=" .. env[name]) end
    end
    cmd[#cmd + 1] = "bin/truto"
    for _, a in ipairs(args) do cmd[#cmd + 1] = q(a) end
    return table.concat(cmd, " "), env
  end

  -- Asserts the token in env never shows in any of the texts.
  local function assert_no_token(env, ...)
    local token = env.TRUTO_API_TOKEN
    if not token or token == "" then return end
    for i = 1, select("#", ...) do
      assert.is_nil(select(i, ...):find(token, 1, true), "the token is in the output")
    end
  end

  -- Runs bin/truto (see truto_command); returns stdout, stderr and the exit
  -- status.  options.stdin: text for standard input (default: none);
  -- options.env: as truto_command's env_overrides.
  local function run(args, options)
    options = options or {}
    local command, env = truto_command(args, options.env)
    local stdin_file, err_file = os.tmpname(), os.tmpname()
    assert(sh.write_file(stdin_file, options.stdin or ""))
    local pipe = assert(io.popen(command .. " <" .. q(stdin_file) .. " 2>" .. q(err_file)))
    local out = pipe:read("*a")
    local _, how, rc = pipe:close()
    local err = assert(sh.read_file(err_file))
    os.remove(stdin_file)
    os.remove(err_file)
    assert.equal("exit", how)
    assert_no_token(env, out, err)
    return out, err, rc
  end

  -- Runs shell_command under a pseudo-terminal (util-linux script(1), from
  -- bsdutils): its standard streams are the terminal unless it redirects
  -- them.  Returns what the terminal received ("\n" arrives as "\r\n") and
  -- the exit status.
  local function on_terminal(shell_command)
    assert(sh.run("command -v script >/dev/null"), "script(1) is missing: apt-get install -y bsdutils")
    local pipe = assert(io.popen("script -qec " .. q(shell_command) .. " /dev/null </dev/null"))
    local shown = pipe:read("*a")
    local _, how, rc = pipe:close()
    assert.equal("exit", how)
    return shown, rc
  end

  -- cli.main in this process, with run's environment and streams that
  -- collect what is written.  terminals: which of "stdout" and "stderr" the
  -- command is told are terminals.  Returns stdout, stderr and the status.
  local function run_in_process(args, terminals)
    local texts = { stdout = {}, stderr = {} }
    local streams = {}
    for name, parts in pairs(texts) do
      streams[name] = {
        write = function(self, ...)
          for i = 1, select("#", ...) do parts[#parts + 1] = select(i, ...) end
          return self
        end,
      }
    end
    local rc = cli.main(args, { TRUTO_API_TOKEN = TOKEN, TRUTO_BASE_URL = h.base_url }, streams.stdout,
      streams.stderr, nil, function(stream)
        return (stream == streams.stdout and terminals.stdout) or (stream == streams.stderr and terminals.stderr) or false
      end)
    return table.concat(texts.stdout), table.concat(texts.stderr), rc
  end

  -- An emulator endpoint through curl; returns the raw body.
  local function http(method, path, body, auth)
    local cmd = { "curl -sg --max-time 10 -X", method }
    if auth then cmd[#cmd + 1] = "-H " .. q("Authorization: Bearer " .. TOKEN) end
    if body then cmd[#cmd + 1] = "--data-binary " .. q(body) end
    cmd[#cmd + 1] = q(h.base_url .. path)
    local pipe = assert(io.popen(table.concat(cmd, " ")))
    local text = pipe:read("*a")
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

    -- args, then the exact message (after "truto: ", before the help pointer).
    local function list_with(...)
      local args = { "unified", "list", "crm", "opportunities", "-a", ACCOUNT }
      for _, a in ipairs { ... } do args[#args + 1] = a end
      return args
    end
    local USAGE_CASES = {
      { { "unified", "list", "crm", "opportunities", "--bogus" }, "unknown option '--bogus'" },
      { { "unified", "list", "crm", "opportunities", "-z" }, "unknown option '-z'" },
      { { "unified", "get", "crm", "opportunities" },
        "'unified get' is missing ID (usage: truto unified get MODEL RESOURCE ID)" },
      { { "unified", "list", "crm" }, "'unified list' is missing RESOURCE (usage: truto unified list MODEL RESOURCE [--all])" },
      { { "proxy", "get", "deals", "1", "2" }, "'proxy get' got an extra word '2' (usage: truto proxy get RESOURCE ID)" },
      { { "unified", "get", "crm", "opportunities", "1", "--data", "{}" }, "'unified get' takes no --data" },
      { { "custom", "get", "reports/weekly", "-d", "{}" }, "'custom get' takes no --data" },
      { { "unified", "update", "crm", "opportunities", "1", "--data", "{not json" },
        "--data must be a JSON object or array: expected a string key at byte 2" },
      { { "unified", "update", "crm", "opportunities", "1", "--data", '"text"' },
        "--data must be a JSON object or array" },
      { { "unified", "update", "crm", "opportunities", "1", "--data", "@/nonexistent/body.json" },
        "cannot read --data file: /nonexistent/body.json: No such file or directory" },
      { { "unified", "update", "crm", "opportunities", "1" }, "--data or --form is required" },
      { { "unified", "list", "crm", "opportunities", "--format", "bogus" },
        "--format must be unified, raw, normalized or stream" },
      { { "unified", "get", "crm", "opportunities", "1", "--all" }, "--all works with list only" },
      { { "unified", "list", "crm", "opportunities", "--all", "-f", "stream" },
        "--all cannot be combined with --format stream (a stream list already has every record)" },
      { { "rest", "list" }, "unknown command 'rest'" },
      { { "unified", "frobnicate", "crm", "x" },
        "unknown verb 'frobnicate' (expected call, create, delete, get, list, meta or update)" },
      { { "custom", "options", "x" }, "unknown verb 'options' (expected delete, get, patch, post or put)" },
      { { "unified", "list", "crm", "opportunities", "--limit", "ten" }, "--limit must be a whole number, got 'ten'" },
      { { "unified", "list", "crm", "opportunities", "--limit", "0" }, "--limit must be at least 1" },
      { { "unified", "list", "crm", "opportunities", "-q", "truto_exclude_fields=a,b", "-x", "c" },
        "query parameter 'truto_exclude_fields[]' conflicts with an earlier value of 'truto_exclude_fields'" },
      { { "unified", "list", "crm", "opportunities", "-q", "a[b]=1", "-q", "a=2" },
        "query parameter 'a' conflicts with an earlier list or object" },
      { { "unified", "list", "crm", "opportunities", "--retries", "1.5" },
        "--retries must be a whole number, got '1.5'" },
      { { "unified", "list", "crm", "opportunities", "-q", "novalue" }, "--query needs KEY=VALUE, got 'novalue'" },
      { { "unified", "list", "crm", "opportunities", "-q", "a[b=1" }, "bad brackets in query parameter 'a[b'" },
      { { "unified", "list", "crm", "opportunities", "-r", "x" }, "--remote-query needs KEY=VALUE, got 'x'" },
      { { "unified", "list", "crm", "opportunities", "-H", "NoColon" },
        "--header needs 'NAME: VALUE', got 'NoColon'" },
      { { "unified", "list", "crm", "opportunities", "-a" }, "-a needs a value" },

      -- "did you mean": the one closest verb, command or long option.
      { { "unified", "updte", "crm", "opportunities", "1" }, "unknown verb 'updte' (did you mean 'update'?)" },
      { { "unified", "lsit", "crm", "opportunities" }, "unknown verb 'lsit' (did you mean 'list'?)" },   -- a swap is one edit
      { { "unified", "lis", "crm", "opportunities" }, "unknown verb 'lis' (did you mean 'list'?)" },   -- a prefix is not taken
      { { "unified", "UPDATE", "crm", "opportunities", "1" }, "unknown verb 'UPDATE' (did you mean 'update'?)" },
      { { "unified", "delette", "crm", "opportunities", "1" }, "unknown verb 'delette' (did you mean 'delete'?)" },
      { { "custom", "pos", "x" }, "unknown verb 'pos' (did you mean 'post'?)" },
      { { "custom", "pt", "x" }, "unknown verb 'pt' (did you mean 'put'?)" },
      { { "custom", "p", "x" }, "unknown verb 'p' (expected delete, get, patch, post or put)" },
      -- a verb of another API is no verb here, and "meta" is two edits from "get": too far for 4 letters
      { { "proxy", "meta", "deals", "x" }, "unknown verb 'meta' (expected call, create, delete, get, list or update)" },
      { { "unifed", "list", "crm", "opportunities" }, "unknown command 'unifed' (did you mean 'unified'?)" },
      { { "porxy", "list", "deals" }, "unknown command 'porxy' (did you mean 'proxy'?)" },
      { { "custm", "get", "x" }, "unknown command 'custm' (did you mean 'custom'?)" },
      { { "unified" }, "'unified' needs a verb (expected call, create, delete, get, list, meta or update)" },
      { { "unified", "list", "crm", "opportunities", "--integrated-acount-id", ACCOUNT },
        "unknown option '--integrated-acount-id' (did you mean '--integrated-account-id'?)" },
      { { "unified", "list", "crm", "opportunities", "--integrated-acount-id=" .. ACCOUNT },
        "unknown option '--integrated-acount-id' (did you mean '--integrated-account-id'?)" },
      { list_with("--limt", "5"), "unknown option '--limt' (did you mean '--limit'?)" },
      { list_with("--Verbose"), "unknown option '--Verbose' (did you mean '--verbose'?)" },
      { list_with("--al"), "unknown option '--al' (did you mean '--all'?)" },
      { list_with("--versoin"), "unknown option '--versoin' (did you mean '--version'?)" },
      { list_with("-all"), "unknown option '-all'" },   -- one dash: a short option, never matched
      { list_with("--debug"), "unknown option '--debug'" },
      -- every option is read before the words: an unknown option is reported first
      { { "unified", "updte", "crm", "opportunities", "1", "--bogus" }, "unknown option '--bogus'" },
      { list_with("--all=yes"), "--all takes no value" },
      { list_with("--version=1"), "--version takes no value" },

      -- the integrated account
      { { "unified", "list", "crm", "opportunities" },
        "'unified list' needs an integrated account: pass -a ID or set TRUTO_INTEGRATED_ACCOUNT_ID" },
      { { "proxy", "get", "deals", "23423523" },
        "'proxy get' needs an integrated account: pass -a ID or set TRUTO_INTEGRATED_ACCOUNT_ID" },
      { { "unified", "update", "crm", "opportunities", "1", "--data", '{"amount":1}' },
        "'unified update' needs an integrated account: pass -a ID or set TRUTO_INTEGRATED_ACCOUNT_ID" },
      { { "unified", "list", "crm", "opportunities", "-q", "integrated_account_id=" },
        "'unified list' needs an integrated account: pass -a ID or set TRUTO_INTEGRATED_ACCOUNT_ID" },
      { { "unified", "list", "crm", "opportunities", "-a", "" }, "-a needs a non-empty value" },
      { { "unified", "list", "crm", "opportunities", "--integrated-account-id=" },
        "--integrated-account-id needs a non-empty value" },
      { { "custom", "get", "reports/weekly", "-a", "" }, "-a needs a non-empty value" },

      -- platform resources and ping
      { { "webhook", "list" }, "unknown command 'webhook' (did you mean 'webhooks'?)" },
      { { "integrated_accounts", "list" }, "unknown command 'integrated_accounts' (did you mean 'integrated-accounts'?)" },
      { { "integrated_account_webhooks", "process", "1" },
        "unknown command 'integrated_account_webhooks' (did you mean 'integrated-account-webhooks'?)" },
      { { "frobs", "list" }, "unknown command 'frobs'" },
      { { "pign" }, "unknown command 'pign' (did you mean 'ping'?)" },
      { { "webhooks" }, "'webhooks' needs a verb (expected create, delete, get, list, test or update)" },
      { { "link-tokens" }, "'link-tokens' needs a verb (expected create)" },
      { { "categories", "get", "c1" }, "unknown verb 'get' (expected list)" },
      { { "webhooks", "frobnicate" }, "unknown verb 'frobnicate' (expected create, delete, get, list, test or update)" },
      { { "integrated-accounts", "refresh_credentials", "a1" },
        "unknown verb 'refresh_credentials' (did you mean 'refresh-credentials'?)" },
      { { "users", "create", "--data", "{}" }, "unknown verb 'create' (expected get or list)" },
      { { "webhooks", "get" }, "'webhooks get' is missing ID (usage: truto webhooks get ID)" },
      { { "webhooks", "test" }, "'webhooks test' is missing ID (usage: truto webhooks test ID)" },
      { { "sync-job-cron-triggers", "schedule" },
        "'sync-job-cron-triggers schedule' is missing ID (usage: truto sync-job-cron-triggers schedule ID)" },
      { { "datastores", "test", "d1" },
        "'datastores test' is missing METHOD (usage: truto datastores test ID METHOD [--data BODY])" },
      { { "webhooks", "list", "w1" }, "'webhooks list' got an extra word 'w1' (usage: truto webhooks list [--all])" },
      { { "webhooks", "update", "w1", "w2", "--data", "{}" },
        "'webhooks update' got an extra word 'w2' (usage: truto webhooks update ID --data BODY)" },
      { { "link-tokens", "create" }, "--data or --form is required" },
      { { "webhooks", "test", "w1", "--data", "{}" }, "'webhooks test' takes no --data" },
      { { "webhooks", "get", "w1", "--all" }, "--all works with list only" },
      { { "ping", "now" }, "'ping' got an extra word 'now' (usage: truto ping)" },
      { { "ping", "-q", "a=b" }, "'ping' takes no query parameters" },
      { { "ping", "-a", ACCOUNT }, "'ping' takes no query parameters" },
      { { "ping", "--all" }, "--all works with list only" },

      -- --form
      { { "custom", "post", "files", "-F", "file=@/nonexistent/a.txt" },
        "cannot read --form file: /nonexistent/a.txt: No such file or directory" },
      { { "custom", "post", "files", "--form", "file=@/nonexistent;type=text/plain;filename=a.txt" },
        "cannot read --form file: /nonexistent: No such file or directory" },
      { { "custom", "post", "files", "-F", "file=@/dev/zero" },
        "--form file is not a regular file: /dev/zero is a character device" },
      { { "custom", "post", "files", "-F", "file=@/;type=text/plain" }, "--form file is not a regular file: / is a directory" },
      { { "custom", "post", "files", "-F", "file=@" }, "--form file=@ needs a file's path" },
      { { "custom", "post", "files", "-F", "novalue" }, "--form needs KEY=VALUE, got 'novalue'" },
      { { "custom", "post", "files", "-F", "=x" }, "--form needs KEY=VALUE, got '=x'" },
      { { "custom", "post", "files", "-F", "a=1", "--form", "a=2" },
        "--form field 'a' is given twice (only files may repeat)" },
      { { "custom", "post", "files", "-F", "a=@.", "--form-string", "b=@x" },
        "--form file is not a regular file: . is a directory" },
      { { "custom", "post", "files", "-F", "a=@README.md;type=not a type" },
        "--form a: bad argument #2 to 'truto.file' (content_type must be a MIME type such as "
          .. "\"application/pdf\", without control characters)" },
      { { "mcp", "call", "tok", "-F", "a=1" }, "'mcp call' takes JSON: --data, not --form" },
      { { "custom", "post", "files", "-F", "a=1", "-d", "{}" }, "--data and --form cannot be combined" },
      { { "custom", "get", "files", "-F", "a=1" }, "'custom get' takes no --form" },
      { { "webhooks", "test", "w1", "-F", "a=1" }, "'webhooks test' takes no --form" },
      { { "custom", "post", "files", "-F", "" }, "-F needs a non-empty value" },
    }
    for _, case in ipairs(USAGE_CASES) do
      it("usage: " .. table.concat(case[1], " ") .. " -> exit 2", function()
        local out, err, rc = run(case[1])
        assert.equal(2, rc)
        assert.equal("", out)
        assert.equal("truto: " .. case[2] .. "\n(see truto --help)\n", err)
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
      assert.equal(33, count)
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
      assert.equal("truto: unknown option '--bogus'\n(see truto --help)\n", bogus_err)
    end)

    it("-h is --help", function()
      local out, _, rc = run { "unified", "list", "-h" }
      assert.equal(0, rc)
      assert.matches("^Usage:\n", out)
    end)
  end)

  describe("--version", function()
    -- The one line, pinned: the command ships with lua-truto, so both carry
    -- its version; then the libcurl the core is linked with and the Lua.
    local VERSION = ("truto %s (lua-truto %s, libcurl %s, %s)\n"):format(truto.VERSION, truto.VERSION,
      curl_core.curl_version, _VERSION)

    it("prints the versions, exit 0, nothing else", function()
      assert.matches("^truto %d+%.%d+%.%d+ %(lua%-truto %d+%.%d+%.%d+, libcurl %d+%.%d+%.%d+[%w.-]*, Lua 5%.4%)\n$",
        VERSION)
      for _, flag in ipairs { "--version", "-V" } do
        local out, err, rc = run { flag }
        assert.equal(0, rc)
        assert.equal("", err)
        assert.equal(VERSION, out)
      end
    end)

    it("wins over every word and needs neither a token nor an account", function()
      local out, err, rc = run({ "unified", "updte", "crm", "x", "--version", "--all" },
                               { env = { TRUTO_API_TOKEN = false } })
      assert.equal(0, rc)
      assert.equal("", err)
      assert.equal(VERSION, out)
      assert.same({}, requests())
    end)

    it("--help wins over it, whatever the order", function()
      for _, args in ipairs { { "--help", "--version" }, { "-V", "-h" } } do
        local out, err, rc = run(args)
        assert.equal(0, rc)
        assert.equal("", err)
        assert.equal(cli.USAGE, out)
      end
    end)

    it("after -- it is a name: here an id, looked up and not found", function()
      local out, err, rc = run { "unified", "get", "crm", "opportunities", "-a", ACCOUNT, "--", "--version" }
      assert.equal(1, rc)
      assert.equal("", out)
      local l = lines(err)
      assert.equal(2, #l)   -- the error, then the envelope
      assert.equal("truto: GET /unified/crm/opportunities/--version: 404 Not Found: Record not found: --version", l[1])
      only_request_is("GET", uri(OPPS .. "/--version"))
    end)
  end)

  describe("did you mean", function()
    it("words after -- are names, never taken for mistyped options", function()
      local out, err, rc = run { "unified", "get", "crm", "opportunities", "-a", ACCOUNT, "--", "--integrated-acount-id" }
      assert.equal(1, rc)
      assert.equal("", out)
      local l = lines(err)
      assert.equal(2, #l)
      assert.equal("truto: GET /unified/crm/opportunities/--integrated-acount-id: 404 Not Found: "
        .. "Record not found: --integrated-acount-id", l[1])
      only_request_is("GET", uri(OPPS .. "/--integrated-acount-id"))
    end)

    it("a model, resource or id is never corrected", function()
      local out, err, rc = run { "unified", "get", "crm", "oportunities", "updte", "-a", ACCOUNT }
      assert.equal(1, rc)
      assert.equal("", out)
      local l = lines(err)
      assert.equal(2, #l)
      assert.equal("truto: GET /unified/crm/oportunities/updte: 404 Not Found: "
        .. "Unified resource crm/oportunities is not supported for this integrated account", l[1])
      only_request_is("GET", uri("/unified/crm/oportunities/updte"))
    end)
  end)

  describe("the integrated account", function()
    local MISSING = "truto: 'unified list' needs an integrated account: pass -a ID or set TRUTO_INTEGRATED_ACCOUNT_ID\n"
      .. "(see truto --help)\n"

    it("an empty $TRUTO_INTEGRATED_ACCOUNT_ID is no account", function()
      local out, err, rc = run({ "unified", "list", "crm", "opportunities" }, { env = { TRUTO_INTEGRATED_ACCOUNT_ID = "" } })
      assert.equal(2, rc)
      assert.equal("", out)
      assert.equal(MISSING, err)
      assert.same({}, requests())
    end)

    it("an empty -a is refused even when $TRUTO_INTEGRATED_ACCOUNT_ID is set", function()
      local out, err, rc = run({ "unified", "list", "crm", "opportunities", "-a", "" },
                               { env = { TRUTO_INTEGRATED_ACCOUNT_ID = ACCOUNT } })
      assert.equal(2, rc)
      assert.equal("", out)
      assert.equal("truto: -a needs a non-empty value\n(see truto --help)\n", err)
      assert.same({}, requests())
    end)

    it("is checked before the token", function()
      local out, err, rc = run({ "unified", "list", "crm", "opportunities" }, { env = { TRUTO_API_TOKEN = false } })
      assert.equal(2, rc)
      assert.equal("", out)
      assert.equal(MISSING, err)
    end)

    it("-q integrated_account_id=ID is enough", function()
      assert.equal(3, ok_json({ "unified", "list", "crm", "users", "-q", "integrated_account_id=" .. ACCOUNT }).result_count)
      only_request_is("GET", uri("/unified/crm/users"))
    end)

    it("-a wins over -q, and -q over $TRUTO_INTEGRATED_ACCOUNT_ID", function()
      local env = { env = { TRUTO_INTEGRATED_ACCOUNT_ID = ACCOUNT } }
      ok_json({ "proxy", "get", "deals", "23423523", "-q", "integrated_account_id=acc-2", "-a", ACCOUNT }, env)
      ok_json({ "proxy", "get", "deals", "23423523", "-q", "integrated_account_id=acc-2" }, env)
      local log = requests()
      assert.equal(2, #log)
      assert.equal(uri("/proxy/deals/23423523"), log[1].uri)
      assert.equal("/proxy/deals/23423523?integrated_account_id=acc-2", log[2].uri)
    end)

    it("custom calls go without one", function()
      -- The emulator wants an account on every call unless the token is an
      -- integrated-account token, which names its own.
      local env = { env = { TRUTO_API_TOKEN = "account-token" } }
      local res = ok_json({ "custom", "get", "reports/weekly", "-q", "week=12" }, env)
      assert.equal("/reports/weekly", res.result.path)
      assert.same({ week = "12" }, res.result.query)
      res = ok_json({ "custom", "post", "reports/weekly", "--data", '{"a":1}' }, env)
      assert.same({ a = 1 }, res.result.body)
      local log = requests()
      assert.equal(2, #log)
      assert.equal("/custom/reports/weekly?week=12", log[1].uri)
      assert.equal("/custom/reports/weekly", log[2].uri)
      assert.equal('{"a":1}', log[2].body)
    end)
  end)

  describe("--all progress", function()
    local ALL = { "unified", "list", "crm", "opportunities", "-a", ACCOUNT, "--all" }
    local THREE_PAGES = "\r1 page, 10 records\r2 pages, 20 records\r3 pages, 30 records\n"

    it("is drawn on standard error when it is a terminal and standard output is not", function()
      local out, err, rc = run_in_process(ALL, { stderr = true })
      assert.equal(0, rc)
      assert.equal(THREE_PAGES, err)
      assert.equal(30, #lines(out))
      assert.equal(3, #requests())
    end)

    it("counts every page of a proxy list, the last one short", function()
      local out, err, rc = run_in_process({ "proxy", "list", "deals", "-a", ACCOUNT, "--all", "--limit", "7" },
                                          { stderr = true })
      assert.equal(0, rc)
      assert.equal("\r1 page, 7 records\r2 pages, 14 records\r3 pages, 21 records\r4 pages, 28 records"
        .. "\r5 pages, 30 records\n", err)
      assert.equal(30, #lines(out))
    end)

    it("says '1 page' for a list of one page", function()
      local _, err, rc = run_in_process({ "unified", "list", "crm", "accounts", "-a", ACCOUNT, "--all" }, { stderr = true })
      assert.equal(0, rc)
      assert.equal("\r1 page, 5 records\n", err)
    end)

    it("is not drawn into a file or pipe, nor when the records go to the same terminal", function()
      for _, terminals in ipairs { {}, { stdout = true }, { stdout = true, stderr = true } } do
        local out, err, rc = run_in_process(ALL, terminals)
        assert.equal(0, rc)
        assert.equal("", err)
        assert.equal(30, #lines(out))
      end
    end)

    it("gives way to -v", function()
      local _, err, rc = run_in_process({ "unified", "list", "crm", "opportunities", "-a", ACCOUNT, "--all", "-v" },
                                        { stderr = true })
      assert.equal(0, rc)
      local log = requests()
      assert.equal(3, #log)
      local want = {}
      for i, req in ipairs(log) do want[i] = "> GET " .. h.base_url .. req.uri .. "\n" end
      assert.equal(table.concat(want) .. "< 30 records\n", err)
    end)

    it("counts a retried page once", function()
      -- the first page passes (a fault with no status); the second is a 429 once, then retried
      assert.equal(2, control("POST", "faults", '{"faults":[{"path_prefix":"' .. OPPS .. '"},'
        .. '{"path_prefix":"' .. OPPS .. '","status":429,"retry_after":"0"}]}').queued)
      local out, err, rc = run_in_process(ALL, { stderr = true })
      assert.equal(0, rc)
      assert.equal(THREE_PAGES, err)
      assert.equal(30, #lines(out))
      assert.equal(4, #requests())
    end)

    it("ends its line before a failure's message", function()
      assert.equal(2, control("POST", "faults", '{"faults":[{"path_prefix":"' .. OPPS .. '"},'
        .. '{"path_prefix":"' .. OPPS .. '","status":400}]}').queued)
      local out, err, rc = run_in_process(ALL, { stderr = true })
      assert.equal(1, rc)
      assert.equal(10, #lines(out))
      assert.equal("\r1 page, 10 records\ntruto: GET /unified/crm/opportunities: 400 Bad Request: Injected fault: 400\n",
        err)
    end)

    it("a failure on the first page leaves no progress behind", function()
      control("POST", "faults", '{"faults":[{"path_prefix":"' .. OPPS .. '","status":400}]}')
      local out, err, rc = run_in_process(ALL, { stderr = true })
      assert.equal(1, rc)
      assert.equal("", out)
      assert.equal("truto: GET /unified/crm/opportunities: 400 Bad Request: Injected fault: 400\n", err)
      assert.equal(1, #requests())
    end)

    describe("under a real terminal (script(1))", function()
      -- The command with its records in a file; returns what the terminal
      -- showed, the records and the exit status.  redirect: more shell
      -- redirections for the command (e.g. of standard error).
      local function all_on_terminal(redirect)
        local records_file = os.tmpname()
        local command, env = truto_command(ALL)
        local shown, rc = on_terminal(command .. " >" .. q(records_file) .. (redirect or ""))
        local records = assert(sh.read_file(records_file))
        os.remove(records_file)
        assert_no_token(env, shown, records)
        return shown, records, rc
      end

      it("shows the progress on the terminal", function()
        local shown, records, rc = all_on_terminal()
        assert.equal(0, rc)
        assert.equal(THREE_PAGES:gsub("\n", "\r\n"), shown)   -- the terminal sends \n as \r\n
        assert.equal(30, #lines(records))
      end)

      it("writes none of it when standard error is redirected to a file", function()
        local err_file = os.tmpname()
        local shown, records, rc = all_on_terminal(" 2>" .. q(err_file))
        local err = assert(sh.read_file(err_file))
        os.remove(err_file)
        assert.equal(0, rc)
        assert.equal("", shown)
        assert.equal("", err)
        assert.equal(30, #lines(records))
      end)

      it("writes none of it when the records go to the same terminal", function()
        local command = truto_command(ALL)
        local shown, rc = on_terminal(command)
        assert.equal(0, rc)
        local stream = http("GET", uri(OPPS, "truto_response_format=stream"), nil, true)
        assert.equal((stream:gsub("\n", "\r\n")), shown)
      end)
    end)
  end)

  describe("platform resources", function()
    local PLATFORM = require("truto.client").PLATFORM
    -- Truto's standard methods: HTTP method, whether the id is the path's
    -- last segment, whether the body is the caller's.
    local STANDARD = {
      list = { "GET", false }, get = { "GET", true }, create = { "POST", false, true },
      update = { "PATCH", true, true }, delete = { "DELETE", true },
    }
    local WORD_VALUES = { id = "rec/1", method = "read" }   -- "rec/1" is one path segment
    local DATA, BODY = '{"b":[1,2],"a":"x"}', { a = "x", b = { 1, 2 } }

    local function percent_encode(segment)
      return (segment:gsub("[^%w%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
    end

    -- One case per verb of every resource in the client's table: the
    -- command line, the request it must send, the words --help shows.
    local function cases()
      local list = {}
      for _, name in ipairs(sorted_keys(PLATFORM)) do
        local resource = PLATFORM[name]
        local first = name:gsub("_", "-")
        local function add(method, http_method, segments, params, body_of, path)
          local verb = method:gsub("_", "-")
          local case = { resource = first, verb = verb, args = { first, verb }, words = { "truto", first, verb },
                         method = http_method, body = "" }
          local named, query = {}, nil
          for _, param in ipairs(params) do
            if param == "body" or param == "optional_body" then
              table.insert(case.args, "--data")
              table.insert(case.args, DATA)
              named[param] = BODY
            elseif param == "query" then
              table.insert(case.args, "-q")
              table.insert(case.args, "filter[x]=1")
              query = "filter%5Bx%5D=1"
            else
              named[param] = WORD_VALUES[param] or param .. "-1"
              table.insert(case.args, named[param])
              table.insert(case.words, param:upper())
            end
          end
          case.path = "/" .. (path or resource.path)
          for _, segment in ipairs(segments) do
            local param = segment:match("^:(.+)$")
            case.path = case.path .. "/" .. (param and percent_encode(named[param]) or segment)
          end
          case.uri = case.path .. (query and "?" .. query or "")
          local body = body_of and body_of(named)
          if body ~= nil then case.body = truto.encode_json(body) end
          list[#list + 1] = case
        end
        for method in resource.methods:gmatch("%S+") do
          local http_method, has_id, has_body = STANDARD[method][1], STANDARD[method][2], STANDARD[method][3]
          local params = { "query" }
          if has_body then table.insert(params, 1, "body") end
          if has_id then table.insert(params, 1, "id") end
          add(method, http_method, has_id and { ":id" } or {}, params, has_body and function(a) return a.body end)
        end
        for _, method in ipairs(sorted_keys(resource.extras or {})) do
          local extra = resource.extras[method]
          add(method, extra[1], extra[2], extra[3], extra.body, extra.path)
        end
      end
      return list
    end

    -- The command's outcome matches the emulator's answer to its one request
    -- (its status counters say which): on a 2xx exit 0 and the body on
    -- standard output; otherwise exit 1, nothing on standard output, and the
    -- error line and the envelope on standard error.
    local function assert_answered(method, path, out, err, rc)
      local statuses = stats().statuses
      local answered = sorted_keys(statuses)
      assert.equal(1, #answered)
      assert.equal(1, statuses[answered[1]])
      local status = tonumber(answered[1])
      if status < 300 then
        assert.equal("", err)
        assert.equal(0, rc)
        assert.equal("table", type(decode(out)))
      else
        assert.equal(1, rc)
        assert.equal("", out)
        local l = lines(err)
        assert.equal(2, #l)
        local envelope = assert(decode(l[2]))
        assert.equal(status, envelope.statusCode)
        assert.equal(("truto: %s %s: %d %s: %s"):format(method, path, status, envelope.error, envelope.message), l[1])
      end
    end

    local CASES = cases()

    it("covers every verb of every resource", function()
      local verbs = 0
      for _, resource in pairs(PLATFORM) do
        for _ in resource.methods:gmatch("%S+") do verbs = verbs + 1 end
        for _ in pairs(resource.extras or {}) do verbs = verbs + 1 end
      end
      assert.equal(verbs, #CASES)
      assert.is_true(#CASES >= 119, "the client declares fewer platform methods than it did")
    end)

    for _, case in ipairs(CASES) do
      it(table.concat(case.args, " "), function()
        local out, err, rc = run(case.args)
        local req = only_request()
        assert.equal(case.method, req.method)
        assert.equal(case.uri, req.uri)
        assert.equal(case.body, req.body)
        assert.equal(case.body ~= "" and "application/json" or nil, req.headers["content-type"])
        assert.equal("Bearer " .. TOKEN, req.headers.authorization)
        assert_answered(case.method, case.path, out, err, rc)
      end)
    end

    it("send the integrated account only when given, never from the environment", function()
      local env = { env = { TRUTO_INTEGRATED_ACCOUNT_ID = ACCOUNT } }
      run({ "integrated-accounts", "get", "a1" }, env)
      run({ "integrated-accounts", "get", "a1", "-a", ACCOUNT }, env)
      run({ "sync-job-runs", "list", "-q", "integrated_account_id=acc-2" }, env)
      local log = requests()
      assert.equal(3, #log)
      assert.equal("/integrated-account/a1", log[1].uri)
      assert.equal("/integrated-account/a1?integrated_account_id=" .. ACCOUNT, log[2].uri)
      assert.equal("/sync-job-run?integrated_account_id=acc-2", log[3].uri)
    end)

    it("write the body as received on success", function()
      assert.equal(1, control("POST", "faults", '{"faults":[{"path_prefix":"/link-token","status":201,'
        .. '"body":{"link_token":"lt-1"}}]}').queued)
      local out, err, rc = run { "link-tokens", "create", "--data", '{"tenant_id":"acme-1"}' }
      assert.equal(0, rc)
      assert.equal("", err)
      assert.equal('{"link_token":"lt-1"}\n', out)
      only_request_is("POST", "/link-token", '{"tenant_id":"acme-1"}')
    end)

    describe("--all", function()
      -- Queues the pages of GET /sync-job as the emulator's answers.
      local function queue_pages(pages)
        local faults = {}
        for i, page in ipairs(pages) do
          faults[i] = { method = "GET", path_prefix = "/sync-job", status = page.status or 200, body = page.body }
        end
        assert.equal(#pages, control("POST", "faults", truto.encode_json { faults = faults }).queued)
      end

      it("writes every record of every page, one per line", function()
        queue_pages {
          { body = { result = { { id = "j1" }, { id = "j2" } }, next_cursor = "c2", limit = 2 } },
          { body = { result = { { id = "j3" }, { id = "j4" } }, next_cursor = "c/3", limit = 2 } },
          { body = { result = { { id = "j5", name = "last" } }, next_cursor = truto.null, limit = 2 } },
        }
        local out, err, rc = run { "sync-jobs", "list", "--all", "--limit", "2", "-v" }
        assert.equal(0, rc)
        assert.equal('{"id":"j1"}\n{"id":"j2"}\n{"id":"j3"}\n{"id":"j4"}\n{"id":"j5","name":"last"}\n', out)
        local log = requests()
        assert.equal(3, #log)
        assert.equal("/sync-job?limit=2", log[1].uri)
        assert.equal("/sync-job?limit=2&next_cursor=c2", log[2].uri)
        assert.equal("/sync-job?limit=2&next_cursor=c%2F3", log[3].uri)
        local want = {}
        for i, req in ipairs(log) do want[i] = "> GET " .. h.base_url .. req.uri .. "\n" end
        assert.equal(table.concat(want) .. "< 5 records\n", err)
      end)

      it("stops at a failed page with exit 1, the records before it written", function()
        queue_pages {
          { body = { result = { { id = "j1" } }, next_cursor = "c2" } },
          { status = 403, body = { statusCode = 403, error = "Forbidden", message = "No access" } },
        }
        local out, err, rc = run { "sync-jobs", "list", "--all" }
        assert.equal(1, rc)
        assert.equal('{"id":"j1"}\n', out)
        assert.equal("truto: GET /sync-job: 403 Forbidden: No access\n", err)
        assert.equal(2, #requests())
      end)
    end)

    describe("ping", function()
      it("sends GET /ping, without the environment's account", function()
        local out, err, rc = run({ "ping" }, { env = { TRUTO_INTEGRATED_ACCOUNT_ID = ACCOUNT } })
        only_request_is("GET", "/ping", "")
        assert_answered("GET", "/ping", out, err, rc)
      end)

      it("exit 0 and the answer when Truto answers", function()
        control("POST", "faults", '{"faults":[{"path_prefix":"/ping","status":200,"body":{"ok":true}}]}')
        local out, err, rc = run { "ping" }
        assert.equal(0, rc)
        assert.equal("", err)
        assert.equal('{"ok":true}\n', out)
      end)

      it("exit 1 with the 401 for a token Truto refuses", function()
        local out, err, rc = run({ "ping" }, { env = { TRUTO_API_TOKEN = "wrong-secret" } })
        assert.equal(1, rc)
        assert.equal("", out)
        assert.matches("^truto: GET /ping: 401 Unauthorized: Invalid API token\n", err)
      end)
    end)

    describe("mcp", function()
      it("initializes, lists and calls an MCP server's tools; a JSON-RPC error is exit 1", function()
        local out, err, rc = run { "integrated-accounts", "create-mcp-server", ACCOUNT,
                                   "--data", '{"name":"reader","config":{"methods":["read"]}}' }
        assert.equal(0, rc, err)
        local token = assert(decode(out)).token
        out, err, rc = run { "mcp", "initialize", token, "my-app", "1.0" }
        assert.equal(0, rc, err)
        assert.equal("2024-11-05", decode(out).protocolVersion)
        out, err, rc = run { "mcp", "list-tools", token }
        assert.equal(0, rc, err)
        assert.equal("list_all_hubspot_contacts", decode(out).tools[3].name)
        out, err, rc = run { "mcp", "call-tool", token, "list_all_hubspot_contacts", "--data", '{"limit":1}' }
        assert.equal(0, rc, err)
        assert.equal("Jane", decode(decode(out).content[1].text).result[1].properties.firstname)
        out, err, rc = run { "mcp", "call", token, "--data", '{"id":7,"method":"nope"}' }
        assert.equal(1, rc)
        assert.equal("", out)
        assert.equal("truto: POST /mcp/{token}: rpc: JSON-RPC error -32601: Method not found: nope", lines(err)[1])
        assert.is_nil(err:find(token, 1, true))
        local log = requests()
        assert.equal(5, #log)
        assert.equal("/mcp/" .. token, log[5].uri)
        assert.equal('{"id":7,"jsonrpc":"2.0","method":"nope"}', log[5].body)
        assert.equal('{"arguments":{"limit":1},"name":"list_all_hubspot_contacts"}',
                     truto.encode_json(decode(log[4].body).params))
      end)
    end)

    describe("--help", function()
      it("lists every resource with its verbs", function()
        local out, err, rc = run { "--help" }
        assert.equal(0, rc)
        assert.equal("", err)
        local section = assert(out:match("\nPlatform resources and their verbs %(the client's names, with "
          .. '"%-" for "_"%):\n(.*)$'))
        local listed, want = {}, {}
        for first, verbs in section:gmatch("  (%S+) +([^\n]+)\n") do listed[first] = verbs end
        for _, case in ipairs(CASES) do
          want[case.resource] = (want[case.resource] and want[case.resource] .. " " or "") .. case.verb
        end
        want.mcp = "call call-tool initialize list-tools"   -- client.mcp, JSON-RPC to /mcp/{token}
        assert.same(want, listed)
        assert.equal(#sorted_keys(PLATFORM) + 1, #lines(section))
      end)

      it("RESOURCE --help lists its verbs, each with its words", function()
        local out, err, rc = run { "datastores", "--help" }
        assert.equal(0, rc)
        assert.equal("", err)
        assert.equal([[
Usage: truto datastores VERB ... [options]   (the client's datastores, Truto's /datastore)

  truto datastores list           [--all]
  truto datastores get ID
  truto datastores create         --data BODY
  truto datastores update ID      --data BODY
  truto datastores delete ID
  truto datastores test ID METHOD [--data BODY]

--form NAME=@FILE or NAME=VALUE can stand for --data BODY; the options: truto --help
]], out)
        assert.equal(out, (run { "datastores", "test", "d1", "-h" }))
        -- every resource's, in process
        local shown = {}
        for _, case in ipairs(CASES) do
          shown[case.resource] = shown[case.resource] or run_in_process({ case.resource, "--help" }, {})
          local words = table.concat(case.words, " ")
          assert.truthy(shown[case.resource]:find("\n  " .. words:gsub("%p", "%%%0") .. "[ \n]"), words)
        end
        assert.same({}, requests())
      end)
    end)

    describe("--form", function()
      it("sends a file part and a text part", function()
        assert.equal("function", type(truto.file), "truto.file (lua/truto/init.lua) is missing")
        local path = os.tmpname()
        -- bytes that are not UTF-8: the emulator logs a file part's size and digest
        local content = "line 1\r\nline 2: \255\0 binary\r\n--not-the-boundary\r\n"
        assert(sh.write_file(path, content))
        local sum = sh.sha256sum(path)
        local out, err, rc = run { "proxy", "create", "attachments", "-a", ACCOUNT, "-q", "truto_body_passthrough=true",
          "-F", "file=@" .. path .. ";type=text/plain;filename=notes.txt", "--form", "note=hello, world" }
        os.remove(path)
        local req = only_request()
        assert.equal("POST", req.method)
        assert.equal(uri("/proxy/attachments", "truto_body_passthrough=true"), req.uri)
        assert.truthy(req.headers["content-type"]:match("^multipart/form%-data; boundary=."), req.headers["content-type"])
        assert.same({
          { name = "file", filename = "notes.txt", content_type = "text/plain", size = #content, sha256 = sum },
          { name = "note", value = "hello, world", size = 12, sha256 = sh.text_sha256("hello, world") },
        }, req.parts)
        assert_answered("POST", "/proxy/attachments", out, err, rc)
      end)

      it("repeats a file name as a list, keeps a type's parameters, and sends --form-string as text", function()
        local a, b = os.tmpname(), os.tmpname()
        assert(sh.write_file(a, "A"))
        assert(sh.write_file(b, "BB"))
        local out, err, rc = run { "custom", "post", "files", "-a", ACCOUNT, "-F", "doc=@" .. a .. ";type=text/plain;charset=utf-8",
          "-F", "doc=@" .. b .. ';filename="b;1.txt"', "--form-string", "note=@not-a-file" }
        os.remove(a)
        os.remove(b)
        assert.equal(0, rc, err)
        assert.equal("table", type(decode(out)))
        assert.same({
          { name = "doc", filename = a:match("[^/]+$"), content_type = "text/plain;charset=utf-8", size = 1,
            sha256 = sh.text_sha256("A") },
          { name = "doc", filename = "b;1.txt", content_type = "application/octet-stream", size = 2,
            sha256 = sh.text_sha256("BB") },
          { name = "note", value = "@not-a-file", size = 11, sha256 = sh.text_sha256("@not-a-file") },
        }, only_request().parts)
      end)

      -- Before, the command waited for ever: opening a FIFO waits for a writer.
      it("refuses a FIFO without opening it", function()
        local dir = assert(sh.mktemp("truto-cli-fifo"))
        assert(sh.run("mkfifo " .. sh.quote(dir .. "/fifo")))
        local out, err, rc = run { "custom", "post", "files", "-F", "file=@" .. dir .. "/fifo" }
        sh.run("rm -rf " .. sh.quote(dir))
        assert.same({ "", "truto: --form file is not a regular file: " .. dir .. "/fifo is a FIFO\n(see truto --help)\n", 2 },
                    { out, err, rc })
        assert.same({}, requests())
      end)
    end)
  end)

  describe("core.isatty", function()
    it("is true for each standard stream of a terminal, by file and by descriptor", function()
      local lua = "LUA_CPATH='build/5.4/?.so;;' lua5.4 -e "
        .. q('local c = require "truto.core" print(c.isatty(io.stdin), c.isatty(io.stdout), c.isatty(io.stderr), '
             .. 'c.isatty(0), c.isatty(1), c.isatty(2))')
      local shown, rc = on_terminal(lua)
      assert.equal(0, rc)
      assert.equal("true\ttrue\ttrue\ttrue\ttrue\ttrue\r\n", shown)
    end)

    it("is false for a file, a pipe and /dev/null", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      assert.is_false(core.isatty(f))
      f:close()
      os.remove(path)
      local pipe = assert(io.popen("true"))
      assert.is_false(core.isatty(pipe))
      pipe:close()
      local null = assert(io.open("/dev/null"))
      assert.is_false(core.isatty(null))
      null:close()
    end)

    it("returns nil and the error for a descriptor that is not open", function()
      local ok, err = core.isatty(1000000)
      assert.is_nil(ok)
      assert.equal("Bad file descriptor", err)
    end)

    it("raises for what is neither an open file nor a descriptor", function()
      local closed = assert(io.open("/dev/null"))
      closed:close()
      for _, case in ipairs {
        { closed, "attempt to use a closed file" },
        { -1, "must be a file descriptor (0 or more)" },
        { 2 ^ 31, "must be a file descriptor (0 or more)" },
        { 1.5, "number has no integer representation" },
        { "2", "FILE* expected, got string" },
        { {}, "FILE* expected, got table" },
      } do
        local ok, err = pcall(core.isatty, case[1])
        assert.is_false(ok)
        assert.equal("bad argument #1 to 'truto.core.isatty' (" .. case[2] .. ")", err)
      end
      local ok, err = pcall(core.isatty)
      assert.is_false(ok)
      assert.equal("bad argument #1 to 'truto.core.isatty' (FILE* expected, got no value)", err)
    end)
  end)
end)

-- lua/truto/client.lua with a scripted transport (a unit spec: the
-- integration specs run the same client over HTTP against the emulator).
local truto = require "truto"

local support = require "spec.support.scripted"
local TOKEN, JSON = support.TOKEN, support.JSON
local scripted, new_client, header = support.scripted, support.new_client, support.header

describe("truto.new", function()
  it("refuses unknown options and wrong types, naming them", function()
    assert.has_error(function() truto.new { token = "t", timout = 3 } end, "truto.new: unknown option 'timout'")
    assert.has_error(function() truto.new { token = "t", timeout = -1 } end,
      "truto.new: option 'timeout' must be a number of seconds > 0, at most 2147483")
    assert.has_error(function() truto.new { token = "t", timeout = 0 / 0 } end,
      "truto.new: option 'timeout' must be a number of seconds > 0, at most 2147483")
    assert.has_error(function() truto.new { token = "t", max_retries = 1.5 } end,
      "truto.new: option 'max_retries' must be an integer from 0 to 10")
    assert.has_error(function() truto.new "t" end, "truto.new must be a table, got string")
    assert.has_error(function() truto.new { token = "t", retry = { bsae = 1 } } end,
      "truto.new: retry.bsae is unknown or not a number > 0")
  end)

  it("requires a token and checks base_url at once", function()
    assert.has_error(function() truto.new { token = "" } end,
      "truto.new: no API token: pass token = ... or set TRUTO_API_TOKEN")
    assert.has_error(function() truto.new { token = "t", base_url = "ftp://x" } end,
      "truto: base_url must start with http:// or https://")
    local ok, err = pcall(truto.new, { token = "bad\ntoken" })
    assert.is_false(ok)
    assert.is_nil(err:find("bad\ntoken", 1, true))
  end)

  it("does not keep or modify the options table", function()
    local headers = { ["X-Team"] = "a" }
    local options = { token = "t", headers = headers, transport = scripted {} }
    local client = truto.new(options)
    headers["X-Team"] = "b"
    client.unified_api:get("crm", "users", "1")
    assert.equal("a", header(options.transport.requests[1], "X-Team"))
    assert.same({ ["X-Team"] = "b" }, options.headers)
  end)
end)

describe("a call", function()
  it("sends the seed's update exactly and returns the decoded record", function()
    local client, t = new_client { { 200, JSON, '{"id":"23423523","amount":5000,"name":"Big"}' } }
    local body = { name = "Big", amount = 5000, contact = {}, tags = {} }
    local query = { integrated_account_id = "acc", truto_exclude_fields = { "id" }, remote_query = { foo = "bar" } }
    local record, response = client.unified_api:update("crm", "opportunities", "23423523", body, query)
    assert.same({ id = "23423523", amount = 5000, name = "Big" }, record)
    if math.type then assert.equal("integer", math.type(record.amount)) end
    assert.equal(200, response.status)
    assert.equal(1, response.attempts)
    local req = t.requests[1]
    assert.equal("PATCH", req.method)
    assert.equal("http://127.0.0.1:9/unified/crm/opportunities/23423523?integrated_account_id=acc"
      .. "&remote_query%5Bfoo%5D=bar&truto_exclude_fields%5B%5D=id", req.url)
    assert.equal('{"amount":5000,"contact":[],"name":"Big","tags":[]}', req.body)
    assert.equal("Bearer " .. TOKEN, header(req, "Authorization"))
    assert.same({ name = "Big", amount = 5000, contact = {}, tags = {} }, body)
    assert.same({ integrated_account_id = "acc", truto_exclude_fields = { "id" }, remote_query = { foo = "bar" } },
      query)
  end)

  it("maps every method to its verb and path", function()
    local client, t = new_client {}
    local u, p, c = client.unified_api, client.proxy_api, client.custom_api
    local q = { integrated_account_id = "a" }
    u:list("crm", "contacts", q)
    u:get("crm", "contacts", 7, q)
    u:create("crm", "contacts", { first_name = "A" }, q)
    u:delete("crm", "contacts", "c/1", q)
    u:custom_method("crm", "accounts", "merge", { ids = { "1", "2" } }, q)
    u:meta("crm", "opportunities", "update", q)
    p:list("deals", q)
    p:get("deals", "9", q)
    p:create("deals", { properties = {} }, q)
    p:update("deals", "9", { x = 1 }, q)
    p:delete("deals", "9", q)
    p:custom_method("deals", "search", nil, q)
    c:get("/reports/weekly/", q)
    c:post("reports", { a = 1 }, q)
    c:put("a/b", {}, q)
    c:patch("a", { b = 2 }, q)
    c:delete("a", q)
    local seen = {}
    for i, req in ipairs(t.requests) do
      seen[i] = req.method .. " " .. req.url:gsub("^http://127.0.0.1:9", ""):gsub("%?integrated_account_id=a$", "")
    end
    assert.same({
      "GET /unified/crm/contacts", "GET /unified/crm/contacts/7", "POST /unified/crm/contacts",
      "DELETE /unified/crm/contacts/c%2F1", "POST /unified/crm/accounts/merge",
      "GET /unified/crm/opportunities/meta/update",
      "GET /proxy/deals", "GET /proxy/deals/9", "POST /proxy/deals", "PATCH /proxy/deals/9", "DELETE /proxy/deals/9",
      "POST /proxy/deals/search",
      "GET /custom/reports/weekly", "POST /custom/reports", "PUT /custom/a/b", "PATCH /custom/a", "DELETE /custom/a",
    }, seen)
    assert.equal('{"ids":["1","2"]}', t.requests[5].body)
    assert.equal("{}", t.requests[12].body)
    assert.is_nil(t.requests[1].body)
  end)

  it("raises on programmer errors before anything is sent", function()
    local client, t = new_client {}
    local u = client.unified_api
    assert.has_error(function() u:update("crm", "opportunities", "1", "name=x") end,
      "bad argument #4 to 'update' (body must be a table, got string)")
    assert.has_error(function() u:get("crm", nil, "1") end,
      "bad argument #2 to 'get' (resource must be a string, got nil)")
    assert.has_error(function() u:list("crm", "x", "a=1") end,
      "bad argument #3 to 'list' (query must be a table, got string)")
    assert.has_error(function() u:get("crm", "x", "1", nil, { timeout = "5" }) end,
      "opts: option 'timeout' must be a number of seconds > 0, at most 2147483")
    assert.has_error(function() u:get("crm", "x", "1", nil, { retries = 5 }) end, "opts: unknown option 'retries'")
    assert.has_error(function() u:get("crm", "x", "") end, "truto: id must not be empty")
    assert.has_error(function() client.custom_api:get("a//b") end,
      "bad argument #1 to 'get' (path has an empty segment: 'a//b')")
    assert.has_error(function() client.custom_api:get("/") end, "bad argument #1 to 'get' (path must name an endpoint)")
    assert.has_error(function() u:update("crm", "o", "1", { a = 0 / 0 }) end,
      "truto: body.a: NaN cannot be written as JSON")
    assert.equal(0, #t.requests)
  end)

  it("reports programmer errors at the caller's line", function()
    local client = new_client {}
    for _, call in ipairs {
      function() client.unified_api:get("crm", "x", "") end,
      function() client.unified_api:get("crm", "x", "1", nil, { bogus = 1 }) end,
      function() client.unified_api:update("crm", "x", "1", "body") end,
      function() client.custom_api:get("a//b") end,
    } do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.matches("^spec/client_spec%.lua:%d+: ", err)
    end
  end)

  it("returns Truto's error envelope as err, without the token anywhere", function()
    local client = new_client { { 404, JSON, '{"statusCode":404,"error":"Not Found","message":"No record for '
      .. TOKEN .. '","truto_error_insight":{"hint":"check the id"}}' } }
    local record, err = client.unified_api:get("crm", "opportunities", "nope", { integrated_account_id = "a" })
    assert.is_nil(record)
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
    assert.equal("No record for [REDACTED]", err.message)
    assert.same({ hint = "check the id" }, err.body.truto_error_insight)
    assert.equal(404, err.body.statusCode)
    assert.is_false(err.retryable)
    assert.equal(1, err.attempts)
    assert.equal("truto: GET /unified/crm/opportunities/nope: 404 Not Found: No record for [REDACTED]", tostring(err))
  end)

  it("uses raw_response when a remote error has no message", function()
    local client = new_client { { 400, JSON,
      '{"statusCode":400,"error":"Bad Request","message":"","truto_is_remote_error":true,"raw_response":"bad stage"}' } }
    local _, err = client.unified_api:create("crm", "opportunities", {}, {})
    assert.equal("bad stage", err.message)
    assert.is_true(err.body.truto_is_remote_error)
  end)

  it("keeps the last value of a repeated key in a response, also in an error envelope", function()
    local client = new_client {
      { 200, JSON, '{"id":"1","name":"first","stage":{"id":"a","id":"b"},"name":"last"}' },
      { 404, JSON, '{"statusCode":404,"message":"first","message":"last"}' },
    }
    assert.same({ id = "1", name = "last", stage = { id = "b" } }, client.unified_api:get("crm", "opportunities", "1"))
    local _, err = client.unified_api:get("crm", "opportunities", "2")
    assert.equal("last", err.message)
    assert.same({ statusCode = 404, message = "last" }, err.body)
  end)

  it("gives kind 'decode' for a 2xx body that is not JSON", function()
    local client = new_client { { 200, JSON, "{nope" } }
    local _, err = client.unified_api:get("crm", "users", "1")
    assert.equal("decode", err.kind)
    assert.equal(200, err.status)
  end)

  it("reports a body the transport found not valid JSON by the reader's message, its start kept scrubbed", function()
    -- What the libcurl session returns for a large body broken far in: its start and the message.
    local start = '{"result":[{"id":"' .. TOKEN .. '","padding":"' .. ("x"):rep(70000)
    local client = new_client { { 200, JSON, start, "control character in string at byte 6291556" } }
    local _, err = client.unified_api:get("crm", "users", "1")
    assert.same({ "decode", 200, "response is not valid JSON: control character in string at byte 6291556",
                  ('{"result":[{"id":"[REDACTED]","padding":"' .. ("x"):rep(1000)):sub(1, 1000) },
                { err.kind, err.status, err.message, err.body })
  end)

  it("returns other content as text, and true for an empty body", function()
    local client = new_client { { 200, { ["content-type"] = "text/csv" }, "a,b\n" }, { 204, {}, "" } }
    assert.equal("a,b\n", client.custom_api:get("export"))
    assert.is_true(client.custom_api:delete("export"))
  end)

  it("streams to a sink and returns true", function()
    local client = new_client { { 200, JSON, "[1,2,3]" } }
    local chunks = {}
    local ok = client.unified_api:list("crm", "contacts", nil, { sink = function(c) chunks[#chunks + 1] = c end })
    assert.is_true(ok)
    assert.same({ "[1,2,3]" }, chunks)
  end)
end)

describe("the tables a client reuses from call to call", function()
  -- All the header lines of a request, by lower-case name, repeats counted.
  local function lines_of(req)
    local by_name = {}
    for _, line in ipairs(req.headers) do
      local name, value = line:match("^([^:]+): (.*)$")
      name = name:lower()
      by_name[name] = by_name[name] and by_name[name] .. " | " .. value or value
    end
    return by_name
  end

  it("keep a client's own Idempotency-Key header on every call, or give way to the call's", function()
    local client, t = new_client({}, { idempotency = false, headers = { ["Idempotency-Key"] = "fixed" } })
    client.custom_api:get("a")
    client.custom_api:post("b", { n = 1 })
    client.custom_api:get("c")
    for i = 1, 3 do assert.equal("fixed", lines_of(t.requests[i])["idempotency-key"], "request " .. i) end
    local auto, u = new_client({}, { headers = { ["idempotency-key"] = "fixed", ["X-Team"] = "a" } })
    auto.custom_api:post("b", { n = 1 })
    auto.custom_api:post("b", { n = 1 }, nil, { idempotency_key = "mine" })
    auto.custom_api:get("c")
    assert.matches("^%x+$", lines_of(u.requests[1])["idempotency-key"])   -- one line: the call's replaces it
    assert.equal("mine", lines_of(u.requests[2])["idempotency-key"])
    assert.equal("fixed", lines_of(u.requests[3])["idempotency-key"])
    assert.same({ ["idempotency-key"] = "fixed", ["X-Team"] = "a" }, auto.headers)
  end)

  it("are not shared with a call a finalizer makes while a call is being built", function()
    -- GC steps at every allocation: a finalizer calling the client runs while
    -- core.build_request of another call allocates.
    local client, t = new_client({}, { headers = { ["X-Client"] = "yes" } })
    local bad, fired = {}, 0
    local function gc_mode(pause, stepmul)
      if _VERSION == "Lua 5.4" then return collectgarbage("incremental", pause, stepmul) end
      collectgarbage("setpause", pause)
      collectgarbage("setstepmul", stepmul)
    end
    -- Garbage with a finalizer: a table in 5.2+, a proxy userdata in 5.1/LuaJIT.
    local function finalized(f)
      local newproxy = rawget(_G, "newproxy")
      if newproxy then
        local proxy = newproxy(true)
        getmetatable(proxy).__gc = f
        return proxy
      end
      return setmetatable({}, { __gc = f })
    end
    -- Lua 5.4 keeps up with large steps; the other Luas collect fully at each
    -- one, over all of busted's heap (minutes on 5.3 after the other specs):
    -- smaller steps for them, and fewer rounds.
    local lua54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")
    gc_mode(0, lua54 and 1000 or 200)
    local rounds = lua54 and 20000 or 200
    for _ = 1, rounds do
      finalized(function()
        fired = fired + 1
        client.custom_api:get("inner")
      end)
      local body = {}
      for k = 1, 20 do body["k" .. k] = ("v"):rep(k) end
      t.requests = {}
      local ok, err = pcall(client.custom_api.post, client.custom_api, "outer", body)
      if not ok then bad[#bad + 1] = "raised: " .. tostring(err) end
      for _, req in ipairs(t.requests) do
        local h = lines_of(req)
        if req.url:find("outer", 1, true) and (req.method ~= "POST" or not h["idempotency-key"] or h["x-client"] ~= "yes"
            or req.body ~= truto.encode_json(body)) then
          bad[#bad + 1] = "outer sent wrong"
        end
        if req.url:find("inner", 1, true) and (h["idempotency-key"] or h["x-client"] ~= "yes") then
          bad[#bad + 1] = "inner sent wrong"
        end
      end
    end
    gc_mode(200, 100)
    collectgarbage()
    assert.is_true(fired > rounds / 2, "only " .. fired .. " finalizer calls")
    assert.same({}, bad)
  end)
end)

describe("retries", function()
  it("retry GET on 429 after Retry-After, and on 502 with back-off", function()
    local client, t, slept = new_client({
      { 429, { ["retry-after"] = "3" }, "" },
      { 502, {}, "" },
      { 200, JSON, '{"id":"1"}' },
    }, { retry = { base = 0.25 } })
    local record, response = client.unified_api:get("crm", "users", "1")
    assert.same({ id = "1" }, record)
    assert.equal(3, response.attempts)
    assert.equal(3, #t.requests)
    assert.equal(3, slept[1])
    assert.is_true(slept[2] >= 0 and slept[2] <= 0.5)
  end)

  it("never retry 503, other 4xx, TLS failures, or too much", function()
    for _, reply in ipairs {
      { 503, JSON, '{"statusCode":503,"message":"Integrated account is blocked"}' },
      { 400, {}, "" }, { 401, {}, "" }, { 404, {}, "" }, { 409, {}, "" }, { 422, {}, "" },
      { nil, { kind = "tls", message = "certificate verify failed" } },
      { nil, { kind = "too_large", message = "response larger than 10 bytes" } },
    } do
      local client, t = new_client { reply }
      local _, err = client.unified_api:get("crm", "users", "1")
      assert.is_false(err.retryable)
      assert.equal(1, #t.requests)
    end
  end)

  it("stop after max_retries and say how many attempts were made", function()
    local client, t = new_client({ { 500, {}, "" }, { 500, {}, "" }, { 500, {}, "" }, { 500, {}, "" } },
      { max_retries = 2 })
    local _, err = client.unified_api:get("crm", "users", "1")
    assert.equal(3, err.attempts)
    assert.equal(3, #t.requests)
    assert.is_true(err.retryable)
    assert.matches("%(after 3 attempts%)$", tostring(err))
  end)

  it("retry a PATCH only with an idempotency key, the same key on every attempt", function()
    local client, t = new_client({ { nil, { kind = "network", message = "connection reset" } } },
      { idempotency = false })
    local _, err = client.unified_api:update("crm", "opportunities", "1", { name = "x" })
    assert.is_nil(header(t.requests[1], "Idempotency-Key"))
    assert.equal("network", err.kind)
    assert.equal(1, #t.requests)

    client, t = new_client { { 502, {}, "" }, { 200, JSON, "{}" } }     -- idempotency = "auto" by default
    assert.truthy(client.unified_api:update("crm", "opportunities", "1", { name = "x" }))
    assert.equal(2, #t.requests)
    local key = header(t.requests[1], "Idempotency-Key")
    assert.matches("^%x+$", key)
    assert.equal(32, #key)
    assert.equal(key, header(t.requests[2], "Idempotency-Key"))

    client, t = new_client { { 429, {}, "" }, { 200, JSON, "{}" } }
    assert.truthy(client.unified_api:create("crm", "contacts", {}, nil, { idempotency_key = "job-42" }))
    assert.equal("job-42", header(t.requests[2], "Idempotency-Key"))
  end)

  it("do not retry once a sink has received data", function()
    local client, t = new_client { { nil, { kind = "network", message = "reset" } } }
    local transport = t
    local perform = transport.perform
    transport.perform = function(self, req, call)
      call.sink("partial")
      return perform(self, req, call)
    end
    local _, err = client.unified_api:list("crm", "contacts", nil, { sink = function() end })
    assert.is_false(err.retryable)
    assert.equal(1, #t.requests)
  end)
end)

describe("each", function()
  it("follows next_cursor across pages and stops at null", function()
    local client, t = new_client {
      { 200, JSON, '{"result":[{"id":1},{"id":2}],"next_cursor":"c2"}' },
      { 200, JSON, '{"result":[],"next_cursor":"c3"}' },
      { 200, JSON, '{"result":[{"id":3}],"next_cursor":null}' },
    }
    local query = { integrated_account_id = "a", limit = 2 }
    local ids = {}
    for record, err in client.unified_api:each("crm", "contacts", query) do
      assert.is_nil(err)
      ids[#ids + 1] = record.id
    end
    assert.same({ 1, 2, 3 }, ids)
    assert.equal(3, #t.requests)
    assert.matches("next_cursor=c2", t.requests[2].url)
    assert.matches("next_cursor=c3", t.requests[3].url)
    assert.same({ integrated_account_id = "a", limit = 2 }, query)
  end)

  -- Every record an iterator yields, and the errors it yields (none expected).
  local function drain(iterator)
    local ids, errs = {}, {}
    for record, err in iterator do
      if record then ids[#ids + 1] = record.id else errs[#errs + 1] = tostring(err) end
    end
    return ids, errs
  end

  for _, last in ipairs {
    { "is empty", '{"result":[{"id":3}],"next_cursor":""}' },
    { "is missing", '{"result":[{"id":3}]}' },
  } do
    it("stops after a page whose next_cursor " .. last[1] .. ", on both APIs", function()
      for _, api in ipairs { "unified", "proxy" } do
        local client, t = new_client {
          { 200, JSON, '{"result":[{"id":1},{"id":2}],"next_cursor":"c2"}' },
          { 200, JSON, last[2] },
          { 200, JSON, '{"result":[{"id":"page one again"}],"next_cursor":null}' },
        }
        local query = { integrated_account_id = "a" }
        local iterator = api == "unified" and client.unified_api:each("crm", "contacts", query)
          or client.proxy_api:each("contacts", query)
        local ids, errs = drain(iterator)
        assert.same({ 1, 2, 3 }, ids, api)
        assert.same({}, errs, api)
        assert.equal(2, #t.requests, api)
        assert.is_nil(t.requests[1].url:find("next_cursor", 1, true), api)
        assert.equal("c2", t.requests[2].url:match("[?&]next_cursor=([^&]*)"), api)
      end
    end)
  end

  it("yields false, err once on a failure and then stops", function()
    local client = new_client {
      { 200, JSON, '{"result":[{"id":1}],"next_cursor":"c2"}' },
      { 401, JSON, '{"statusCode":401,"message":"Invalid token"}' },
    }
    local seen = {}
    for record, err in client.unified_api:each("crm", "contacts") do
      seen[#seen + 1] = record and record.id or err.status
    end
    assert.same({ 1, 401 }, seen)
  end)
end)

describe("on_request", function()
  -- A deep copy of what the hook received, made before anything can change it.
  local function copy(v)
    if type(v) ~= "table" then return v end
    local out = {}
    for k, x in pairs(v) do out[k] = copy(x) end
    return out
  end

  -- Every string in v, keys included, as a list.
  local function strings(v, out)
    out = out or {}
    if type(v) == "string" then
      out[#out + 1] = v
    elseif type(v) == "table" then
      for k, x in pairs(v) do
        strings(k, out)
        strings(x, out)
      end
    end
    return out
  end

  it("receives each attempt's request, the token redacted, with the attempt's number", function()
    local seen = {}
    local client, t = new_client({ { 502, {}, "" }, { 429, { ["retry-after"] = "1" }, "" }, { 200, JSON, "{}" } }, {
      headers = { ["X-Team"] = "a" },
      on_request = function(request, attempt)
        seen[#seen + 1] = { copy(request), attempt }
        -- What the hook does to its table does not reach the wire.
        request.method, request.url, request.body = "DELETE", "http://elsewhere/", "changed"
        request.headers[1] = "Authorization: Bearer stolen"
        request.headers[#request.headers + 1] = "X-Added: 1"
      end,
    })
    assert(client.unified_api:update("crm", "opportunities", "1", { name = "x" }, { integrated_account_id = "acc" }))
    assert.equal(3, #t.requests)
    local key = header(t.requests[1], "Idempotency-Key")
    local sent = {
      method = "PATCH",
      url = "http://127.0.0.1:9/unified/crm/opportunities/1?integrated_account_id=acc",
      headers = {
        "Accept: application/json",
        "Authorization: Bearer " .. TOKEN,
        "Content-Type: application/json",
        "User-Agent: " .. header(t.requests[1], "User-Agent"),
        "X-Team: a",
        "Idempotency-Key: " .. key,   -- the call's own, after the client's
      },
      body = '{"name":"x"}',
    }
    local logged = copy(sent)
    logged.headers[2] = "Authorization: [REDACTED]"
    assert.same({ { logged, 1 }, { logged, 2 }, { logged, 3 } }, seen)
    for i = 1, 3 do assert.same(sent, t.requests[i], "attempt " .. i) end
    assert.matches("^lua%-truto/", header(t.requests[1], "User-Agent"))
    assert.matches("^%x+$", key)
    assert.is_nil(table.concat(strings(seen), "\n"):find(TOKEN, 1, true))
  end)

  it("receives a request without a body as such", function()
    local seen = {}
    local client, t = new_client({}, {
      on_request = function(request, attempt) seen[#seen + 1] = { request, attempt } end,
    })
    assert(client.custom_api:get("reports/weekly", { week = 3 }))
    assert.same({ {
      { method = "GET", url = "http://127.0.0.1:9/custom/reports/weekly?week=3",
        headers = { "Accept: application/json", "Authorization: [REDACTED]",
                    "User-Agent: " .. header(t.requests[1], "User-Agent") } },
      1,
    } }, seen)
    assert.equal("Bearer " .. TOKEN, header(t.requests[1], "Authorization"))
  end)
end)

describe("the client under hostile answers (issue 10's review)", function()
  local Q = { integrated_account_id = "acc" }

  it("scrubs the whole text before cutting it: a token across the cut never shows in part", function()
    for _, reply in ipairs {
      { 400, { ["content-type"] = "text/plain" }, ("x"):rep(196) .. TOKEN .. ("y"):rep(900) },   -- across 200
      { 400, { ["content-type"] = "text/plain" }, ("x"):rep(1020) .. TOKEN },                     -- across 1024
      { 200, JSON, "{" .. ("x"):rep(996) .. TOKEN .. ("y"):rep(10) },                             -- across 1000
    } do
      local client = new_client { reply }
      local _, err = client.unified_api:get("crm", "contacts", "1", Q)
      local part = TOKEN:sub(1, 4)
      for _, text in ipairs { err.message, tostring(err), type(err.body) == "string" and err.body or "" } do
        assert.is_nil(text:find(part, 1, true), text:sub(-60))
      end
    end
  end)

  it("reads an answer whose Content-Type is empty or only parameters", function()
    for _, ctype in ipairs { "", "; charset=utf-8", "   " } do
      local client = new_client { { 200, { ["content-type"] = ctype }, '{"id":"1"}' },
                                  { 404, { ["content-type"] = ctype }, '{"message":"gone"}' } }
      assert.equal("1", (client.unified_api:get("crm", "contacts", "1", Q)).id)
      local _, err = client.unified_api:get("crm", "contacts", "2", Q)
      assert.equal(404, err.status)
      assert.equal("gone", err.message)
    end
  end)

  it("refuses a timeout libcurl cannot take, before anything is sent", function()
    assert.has_error(function() truto.new { token = "t", timeout = 2147484 } end,
      "truto.new: option 'timeout' must be a number of seconds > 0, at most 2147483")
    local client, transport = new_client {}
    assert.has_error(function() client.unified_api:get("crm", "contacts", "1", Q, { connect_timeout = 1e9 }) end)
    assert.equal(0, #transport.requests)
  end)

  it("does not wait for the rate limit past retry.deadline, and sends nothing then", function()
    local clock = 0
    local transport = scripted {}
    transport.now = function() return clock end
    transport.sleep = function(s) clock = clock + s end
    local seen = 0
    local client = truto.new { token = TOKEN, base_url = "http://127.0.0.1:9", transport = transport,
                               rate_limit = { requests = 1, per = 60 }, retry = { deadline = 2 },
                               on_request = function() seen = seen + 1 end }
    assert.is_table((client.unified_api:get("crm", "contacts", "1", Q)))
    local _, err = client.unified_api:get("crm", "contacts", "1", Q)
    assert.equal("timeout", err.kind)
    assert.equal("the call's retry.deadline passed", err.message)
    assert.equal(0, clock)              -- no 60 s wait
    assert.equal(1, #transport.requests)
    assert.equal(1, seen)
  end)

  it("counts retry.deadline from a batch call's first attempt, not from the batch's start", function()
    local clock = 0
    local transport = scripted {}
    local perform = transport.perform
    transport.perform = function(self, req, call)
      clock = clock + 1                 -- each call takes 1 s
      return perform(self, req, call)
    end
    transport.now = function() return clock end
    transport.sleep = function(s) clock = clock + s end
    local client = truto.new { token = TOKEN, base_url = "http://127.0.0.1:9", transport = transport,
                               retry = { deadline = 1.5 } }
    local requests = {}
    for i = 1, 3 do requests[i] = { api = "unified", method = "get", model = "crm", resource = "contacts", id = "1",
                                    query = Q } end
    for i, r in ipairs(client:batch(requests)) do assert.is_table(r[1], i .. ": " .. tostring(r[2])) end
    assert.equal(1.5, transport.calls[3].timeout)
  end)
end)

-- The platform API (client.integrated_accounts, ...), client:request{...}
-- and client:ping() with a scripted transport: the exact request each
-- method sends.
local client_module = require "truto.client"

local support = require "spec.support.scripted"
local TOKEN, new_client, header, sorted_keys = support.TOKEN, support.new_client, support.header, support.sorted_keys
local JSON = support.JSON

local BASE = "http://127.0.0.1:9"

-- Every resource, its path and its standard methods, written out (from
-- reference/truto-platform.md): the client's table must say the same.
local RESOURCES = {
  integrated_accounts = { "/integrated-account", "list get create update delete" },
  integrations = { "/integration", "list get create update delete" },
  environments = { "/environment", "list get update" },
  environment_integrations = { "/environment-integration", "list get create update delete" },
  unified_models = { "/unified-model", "list get create update delete" },
  environment_unified_models = { "/environment-unified-model", "list get create update delete" },
  teams = { "/team", "list get update" },
  users = { "/user", "list get" },
  api_tokens = { "/api-token", "list get" },
  categories = { "/category", "list" },
  link_tokens = { "/link-token", "create" },
  sync_jobs = { "/sync-job", "list get create update delete" },
  sync_job_runs = { "/sync-job-run", "list get create update delete" },
  sync_job_cron_triggers = { "/sync-job-cron-trigger", "list get create update delete" },
  daemons = { "/daemon", "list get create update delete" },
  daemon_jobs = { "/daemon-job", "list get create update delete" },
  daemon_job_runs = { "/daemon-job-run", "list get create update delete" },
  daemon_job_cron_triggers = { "/daemon-job-cron-trigger", "list get create update delete" },
  datastores = { "/datastore", "list get create update delete" },
  documentation = { "/documentation", "list get create update delete" },
  logs = { "/log", "list" },
  webhooks = { "/webhook", "list get create update delete" },
  workflows = { "/workflow", "list get create update delete" },
  workflow_runs = { "/workflow-run", "list get delete" },
  alarms = { "/alarm", "list get create update delete" },
  static_gates = { "/static-gate", "list get create update delete" },
  sandbox_integrated_accounts = { "/sandbox-integrated-account", "list get create delete" },
  batch_requests = { "/batch-request", "create" },
  integrated_account_webhooks = { "/integrated-account-webhook", "" },
  environment_integration_webhooks = { "/environment-integration-webhook", "" },
}

local EXTRAS = {
  integrated_accounts = { "create_mcp_server", "create_token", "delete_mcp_server", "get_mcp_server",
                          "list_mcp_servers", "refresh_credentials", "run_post_install_actions", "tools",
                          "update_credentials", "update_mcp_server" },
  integrations = { "install", "uninstall" },
  unified_models = { "install", "uninstall" },
  sync_job_cron_triggers = { "schedule" },
  daemon_job_cron_triggers = { "schedule" },
  datastores = { "test" },
  webhooks = { "test" },
  integrated_account_webhooks = { "process" },
  environment_integration_webhooks = { "process" },
}

local function words(s)
  local list = {}
  for w in s:gmatch("%S+") do list[#list + 1] = w end
  table.sort(list)
  return list
end

describe("the platform resources", function()
  it("are the ones written out here, with these paths, methods and extras", function()
    local table_ = client_module.PLATFORM
    assert.same(sorted_keys(RESOURCES), sorted_keys(table_))
    for name, expected in pairs(RESOURCES) do
      assert.equal(expected[1], "/" .. table_[name].path, name)
      assert.same(words(expected[2]), words(table_[name].methods), name)
      assert.same(EXTRAS[name] or {}, sorted_keys(table_[name].extras or {}), name)
    end
  end)

  it("hang off every client, each method sending its verb to its path", function()
    local count = 0
    for name, expected in pairs(RESOURCES) do
      local client, t = new_client()
      local resource = client[name]
      assert.is_table(resource, name)
      local path = BASE .. expected[1]
      local calls = {
        list = { function() return resource:list { limit = 2 } end, "GET", path .. "?limit=2", nil },
        get = { function() return resource:get("id 1", { a = "b" }) end, "GET", path .. "/id%201?a=b", nil },
        create = { function() return resource:create({ n = 1 }, { a = "b" }) end, "POST", path .. "?a=b", '{"n":1}' },
        update = { function() return resource:update(7, { n = 2 }) end, "PATCH", path .. "/7", '{"n":2}' },
        delete = { function() return resource:delete("x/y") end, "DELETE", path .. "/x%2Fy", nil },
      }
      for _, method in ipairs(words(expected[2])) do
        local call = calls[method]
        local result, response = call[1]()
        assert.same({}, result, name .. ":" .. method)
        assert.equal(200, response.status)
        local req = t.requests[#t.requests]
        assert.equal(call[2], req.method, name .. ":" .. method)
        assert.equal(call[3], req.url, name .. ":" .. method)
        assert.equal(call[4], req.body, name .. ":" .. method)
        assert.equal(call[2] == "POST" or call[2] == "PATCH", header(req, "Idempotency-Key") ~= nil)
        assert.equal("Bearer " .. TOKEN, header(req, "Authorization"))
        count = count + 1
      end
      for method in pairs(calls) do
        if not expected[2]:find(method, 1, true) then assert.is_nil(resource[method], name .. ":" .. method) end
      end
      assert.equal(expected[2]:find("list", 1, true) ~= nil, resource.each ~= nil, name .. ":each")
    end
    assert.equal(111, count)
  end)

  it("send exactly these requests (a representative set)", function()
    local client, t = new_client()
    local cases = {
      { function() client.integrated_accounts:list { tenant_id = "acme-1", status = "active" } end,
        "GET http://127.0.0.1:9/integrated-account?status=active&tenant_id=acme-1" },
      { function() client.integrated_accounts:get("1ba1f401") end, "GET http://127.0.0.1:9/integrated-account/1ba1f401" },
      { function() client.integrated_accounts:update("ia 1", { tenant_id = "acme-2" }) end,
        "PATCH http://127.0.0.1:9/integrated-account/ia%201", '{"tenant_id":"acme-2"}' },
      { function() client.integrated_accounts:delete("ia1") end, "DELETE http://127.0.0.1:9/integrated-account/ia1" },
      { function() client.link_tokens:create { tenant_id = "acme-1" } end, "POST http://127.0.0.1:9/link-token",
        '{"tenant_id":"acme-1"}' },
      { function() client.sync_job_runs:create { sync_job_id = "sj", integrated_account_id = "ia" } end,
        "POST http://127.0.0.1:9/sync-job-run", '{"integrated_account_id":"ia","sync_job_id":"sj"}' },
      { function() client.logs:list { log_type = "webhook", created_at = { gt = "2026-01-01" } } end,
        "GET http://127.0.0.1:9/log?created_at%5Bgt%5D=2026-01-01&log_type=webhook" },
      { function() client.webhooks:create { target_url = "https://x.test/h" } end, "POST http://127.0.0.1:9/webhook",
        '{"target_url":"https://x.test/h"}' },
      { function() client.environments:update("env", { name = "prod" }) end, "PATCH http://127.0.0.1:9/environment/env",
        '{"name":"prod"}' },
      { function() client.categories:list() end, "GET http://127.0.0.1:9/category" },
      { function() client.workflow_runs:delete("wr") end, "DELETE http://127.0.0.1:9/workflow-run/wr" },
    }
    for i, case in ipairs(cases) do
      case[1]()
      local req = t.requests[i]
      assert.equal(case[2], req.method .. " " .. req.url)
      assert.equal(case[3], req.body)
    end
  end)

  it("have their extra methods, each sending exactly this", function()
    local client, t = new_client()
    local cases = {
      { function() return client.integrated_accounts:refresh_credentials("ia1") end,
        "POST http://127.0.0.1:9/integrated-account/refresh-credentials", '{"id":"ia1"}' },
      { function() return client.integrated_accounts:create_token("ia1") end,
        "POST http://127.0.0.1:9/integrated-account/token", '{"integrated_account_id":"ia1"}' },
      { function() return client.integrated_accounts:tools("ia1", { methods = "read,write" }) end,
        "GET http://127.0.0.1:9/integrated-account/ia1/tools?methods=read%2Cwrite" },
      { function() return client.sync_job_cron_triggers:schedule("t 1") end,
        "POST http://127.0.0.1:9/sync-job-cron-trigger/t%201/schedule" },
      { function() return client.daemon_job_cron_triggers:schedule("t2") end,
        "POST http://127.0.0.1:9/daemon-job-cron-trigger/t2/schedule" },
      { function() return client.datastores:test("ds1", "uploadObject", { key = "k" }) end,
        "POST http://127.0.0.1:9/datastore/ds1/test/uploadObject", '{"key":"k"}' },
      { function() return client.datastores:test("ds1", "list") end, "POST http://127.0.0.1:9/datastore/ds1/test/list" },
      { function() return client.webhooks:test("wh1") end, "POST http://127.0.0.1:9/webhook/test", '{"id":"wh1"}' },
      { function() return client.integrated_account_webhooks:process("ia1", { event = "x" }, { a = 1 }) end,
        "POST http://127.0.0.1:9/integrated-account-webhook/ia1?a=1", '{"event":"x"}' },
      { function() return client.environment_integration_webhooks:process("ei1", { event = "y" }) end,
        "POST http://127.0.0.1:9/environment-integration-webhook/ei1", '{"event":"y"}' },
      { function() return client.integrated_accounts:run_post_install_actions("ia1") end,
        "POST http://127.0.0.1:9/integrated-account/run-post-install-actions", '{"id":"ia1"}' },
      { function() return client.integrated_accounts:update_credentials("ia1", { api_key = "k" }) end,
        "PATCH http://127.0.0.1:9/integrated-account/ia1/credentials", '{"api_key":"k"}' },
      { function() return client.integrated_accounts:list_mcp_servers("ia1") end,
        "GET http://127.0.0.1:9/integrated-account/ia1/mcp" },
      { function() return client.integrated_accounts:create_mcp_server("ia1", { name = "n" }) end,
        "POST http://127.0.0.1:9/integrated-account/ia1/mcp", '{"name":"n"}' },
      { function() return client.integrated_accounts:get_mcp_server("ia1", "m 1") end,
        "GET http://127.0.0.1:9/integrated-account/ia1/mcp/m%201" },
      { function() return client.integrated_accounts:update_mcp_server("ia1", 7, { name = "o" }) end,
        "PATCH http://127.0.0.1:9/integrated-account/ia1/mcp/7", '{"name":"o"}' },
      { function() return client.integrated_accounts:delete_mcp_server("ia1", "m1") end,
        "DELETE http://127.0.0.1:9/integrated-account/ia1/mcp/m1" },
      { function() return client.integrations:install("hubspot-id") end,
        "POST http://127.0.0.1:9/environment-integration", '{"integration_id":"hubspot-id","is_enabled":true}' },
      { function() return client.integrations:install("i2", { is_enabled = false, integration_id = "not this" }) end,
        "POST http://127.0.0.1:9/environment-integration", '{"integration_id":"i2","is_enabled":false}' },
      { function() return client.integrations:uninstall("ei1") end,
        "DELETE http://127.0.0.1:9/environment-integration/ei1" },
      { function() return client.unified_models:install("um1") end,
        "POST http://127.0.0.1:9/environment-unified-model", '{"unified_model_id":"um1"}' },
      { function() return client.unified_models:uninstall("eum1") end,
        "DELETE http://127.0.0.1:9/environment-unified-model/eum1" },
      { function() return client.batch_requests:create({ integrated_account_id = "ia1", resources = {
          { resource = "crm/contacts", method = "list" } } }, { a = 1 }) end,
        "POST http://127.0.0.1:9/batch-request?a=1",
        '{"integrated_account_id":"ia1","resources":[{"method":"list","resource":"crm/contacts"}]}' },
    }
    for i, case in ipairs(cases) do
      local result, response = case[1]()
      assert.same({}, result)
      assert.equal(200, response.status)
      local req = t.requests[i]
      assert.equal(case[2], req.method .. " " .. req.url)
      assert.equal(case[3], req.body)
      assert.equal(req.method == "POST" or req.method == "PATCH", header(req, "Idempotency-Key") ~= nil, case[2])
    end
    assert.equal(#cases, #t.requests)
  end)

  it("raise on a wrong argument type at the caller's line", function()
    local client = new_client()
    assert.has_error(function() client.integrated_accounts:get({}) end,
      "bad argument #1 to 'get' (id must be a string, got table)")
    assert.has_error(function() client.link_tokens:create("x") end,
      "bad argument #1 to 'create' (body must be a table, got string)")
    assert.has_error(function() client.datastores:test("d", nil) end,
      "bad argument #2 to 'test' (method must be a string, got nil)")
    local ok, err = pcall(function() client.integrated_accounts:get("") end)
    assert.is_false(ok)
    assert.truthy(err:find("platform_spec.lua:%d+: truto: id must not be empty$"), err)
  end)

  it("page through a list with each, following next_cursor", function()
    local client, t = new_client {
      { 200, JSON, '{"result":[{"id":"1"},{"id":"2"}],"next_cursor":"c2","limit":2}' },
      { 200, JSON, '{"result":[{"id":"3"}],"next_cursor":"c3","limit":2}' },
      { 200, JSON, '{"result":[{"id":"4"}],"next_cursor":null,"limit":2}' },
    }
    local ids = {}
    local query = { limit = 2 }
    for record, err in client.sync_jobs:each(query) do
      assert.is_nil(err)
      ids[#ids + 1] = record.id
    end
    assert.same({ "1", "2", "3", "4" }, ids)
    assert.equal("http://127.0.0.1:9/sync-job?limit=2", t.requests[1].url)
    assert.equal("http://127.0.0.1:9/sync-job?limit=2&next_cursor=c2", t.requests[2].url)
    assert.equal("http://127.0.0.1:9/sync-job?limit=2&next_cursor=c3", t.requests[3].url)
    assert.same({ limit = 2 }, query)
  end)

  it("return Truto's error on a 404, as every API method does", function()
    local client = new_client { { 404, JSON, '{"statusCode":404,"error":"Not Found","message":"Not found"}' } }
    local result, err = client.webhooks:get("nope")
    assert.is_nil(result)
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
    assert.equal("Not found", err.message)
    assert.equal("GET", err.method)
    assert.equal("/webhook/nope", err.path)
    assert.is_false(err.retryable)
    assert.equal(1, err.attempts)
    assert.equal("truto: GET /webhook/nope: 404 Not Found: Not found", tostring(err))
  end)

  it("retry a POST under its Idempotency-Key, the same key each attempt", function()
    local client, t = new_client { { 502, JSON, "{}" }, { 200, JSON, '{"link_token":"lt"}' } }
    local result = client.link_tokens:create { tenant_id = "acme" }
    assert.same({ link_token = "lt" }, result)
    assert.equal(2, #t.requests)
    assert.equal(header(t.requests[1], "Idempotency-Key"), header(t.requests[2], "Idempotency-Key"))
  end)

  it("run in client:batch, named by api and method", function()
    local client, t = new_client()
    local results = client:batch({
      { api = "integrated_accounts", method = "get", id = "ia1", query = { a = "b" } },
      { api = "webhooks", method = "test", id = "wh1" },
      { api = "datastores", method = "test", id = "ds", name = "list", body = { k = 1 } },
      { api = "unified", method = "get", model = "crm", resource = "contacts", id = "1" },
    }, { concurrency = 1 })
    assert.equal(4, #results)
    local lines = {}
    for i, req in ipairs(t.requests) do lines[i] = req.method .. " " .. req.url .. " " .. tostring(req.body) end
    assert.same({
      "GET http://127.0.0.1:9/integrated-account/ia1?a=b nil",
      'POST http://127.0.0.1:9/webhook/test {"id":"wh1"}',
      'POST http://127.0.0.1:9/datastore/ds/test/list {"k":1}',
      "GET http://127.0.0.1:9/unified/crm/contacts/1 nil",
    }, lines)
    assert.has_error(function() client:batch { { api = "users", method = "create", body = {} } } end,
      "batch request #1: users API has no method create")
  end)

  it("are listed in README.md's Platform API section, each with its path and methods", function()
    local text = assert(io.open("README.md")):read("*a")
    local listed = {}
    for name, path, methods in text:gmatch("\n| `([%w_]+)` | `(/[%w%-]+)` | ([^|\n]-) |") do
      local list = {}
      for m in methods:gmatch("`([%w_]+)`") do list[#list + 1] = m end
      table.sort(list)
      listed[name] = { path, list }
    end
    for name, resource in pairs(client_module.PLATFORM) do
      local methods = words(resource.methods)
      for extra in pairs(resource.extras or {}) do methods[#methods + 1] = extra end
      if resource.methods:find("list", 1, true) then methods[#methods + 1] = "each" end
      table.sort(methods)
      assert.same({ "/" .. resource.path, methods }, listed[name], name)
      listed[name] = nil
    end
    assert.same({}, listed)
  end)
end)

describe("client:request", function()
  it("sends any method to any path with the same guarantees", function()
    local client, t = new_client { { 500, JSON, "{}" }, { 200, JSON, '{"ok":true}' } }
    local result, response = client:request {
      method = "POST", path = "/integrated-account/run-post-install-actions", query = { a = { b = "c" } },
      body = { id = "ia 1" }, headers = { ["X-One"] = "1" }, opts = { headers = { ["X-Two"] = "2" } },
    }
    assert.same({ ok = true }, result)
    assert.equal(2, response.attempts)
    local req = t.requests[2]
    assert.equal("POST", req.method)
    assert.equal("http://127.0.0.1:9/integrated-account/run-post-install-actions?a%5Bb%5D=c", req.url)
    assert.equal('{"id":"ia 1"}', req.body)
    assert.equal("1", header(req, "X-One"))
    assert.equal("2", header(req, "X-Two"))
    assert.is_truthy(header(req, "Idempotency-Key"))
    assert.equal(header(t.requests[1], "Idempotency-Key"), header(req, "Idempotency-Key"))
  end)

  it("percent-encodes each segment of a path written decoded", function()
    local client, t = new_client()
    client:request { method = "GET", path = "/integrated-account/a b%/tools" }
    client:request { method = "DELETE", path = "/" }
    assert.equal("http://127.0.0.1:9/integrated-account/a%20b%25/tools", t.requests[1].url)
    assert.equal("http://127.0.0.1:9", t.requests[2].url:gsub("/$", ""))
    assert.is_nil(header(t.requests[2], "Idempotency-Key"))
  end)

  it("hands a body to a sink and returns an HTTP error as every method does", function()
    local client = new_client { { 200, JSON, '{"a":1}' }, { 404, JSON, '{"message":"Not found"}' } }
    local chunks = {}
    assert.is_true(client:request { method = "GET", path = "/log", opts = { sink = function(c)
      chunks[#chunks + 1] = c
      return true
    end } })
    assert.same({ '{"a":1}' }, chunks)
    local result, err = client:request { method = "GET", path = "/nope" }
    assert.is_nil(result)
    assert.equal("truto: GET /nope: 404 Not Found: Not found", tostring(err))
  end)

  it("raises on a malformed table, naming what is wrong", function()
    local client, t = new_client()
    local function fails(spec, message)
      local ok, err = pcall(function() client:request(spec) end)
      assert.is_false(ok)
      assert.equal(message, (err:gsub("^.-platform_spec%.lua:%d+: ", "")))
    end
    fails("GET /x", "client:request: takes a table { method =, path =, ... }, got string")
    fails({ method = "GET", path = "/x", bdy = {} }, "client:request: unknown field 'bdy'")
    fails({ path = "/x" }, 'client:request: method must be an HTTP method in upper case, such as "GET", got nil')
    fails({ method = "get", path = "/x" },
      'client:request: method must be an HTTP method in upper case, such as "GET", got get')
    fails({ method = "GET" }, "client:request: path must be a string starting with '/', got nil")
    fails({ method = "GET", path = "x" }, "client:request: path must be a string starting with '/', got 'x'")
    fails({ method = "GET", path = "/x?a=1" }, "client:request: path must not hold '?' or '#': put the query in query")
    fails({ method = "GET", path = "/x#f" }, "client:request: path must not hold '?' or '#': put the query in query")
    fails({ method = "GET", path = "/x\n" }, "client:request: path must not hold a control character")
    fails({ method = "GET", path = "/a//b" }, "client:request: path has an empty segment: '/a//b'")
    fails({ method = "GET", path = "/a/" }, "client:request: path has an empty segment: '/a/'")
    fails({ method = "GET", path = "/a/../b" }, "client:request: path must not have a '.' or '..' segment")
    fails({ method = "GET", path = "/./b" }, "client:request: path must not have a '.' or '..' segment")
    fails({ method = "GET", path = "/x", query = "a=1" }, "client:request: query must be a table, got string")
    fails({ method = "POST", path = "/x", body = "{}" }, "client:request: body must be a table, got string")
    fails({ method = "GET", path = "/x", headers = 1 }, "client:request: headers must be a table, got number")
    fails({ method = "GET", path = "/x", opts = { retries = 1 } }, "opts: unknown option 'retries'")
    assert.equal(0, #t.requests)
    -- At the caller's line.
    local ok, err = pcall(client.request, client, { method = "GET" })
    assert.is_false(ok)
    assert.is_nil(err:find("client.lua", 1, true))
    ok, err = pcall(function() client:request { method = "GET" } end)
    assert.is_false(ok)
    assert.truthy(err:find("^[^\n]*platform_spec%.lua:%d+: client:request"), err)
  end)

  it("does not modify its table or its opts", function()
    local client = new_client()
    local opts = { headers = { A = "1" } }
    local spec = { method = "GET", path = "/x", headers = { B = "2" }, opts = opts }
    client:request(spec)
    assert.same({ headers = { A = "1" } }, opts)
    assert.same({ B = "2" }, spec.headers)
  end)
end)

describe("client:ping", function()
  it("sends GET /ping and returns its answer", function()
    local client, t = new_client { { 200, JSON, '{"status":"ok"}' } }
    local result, response = client:ping()
    assert.same({ status = "ok" }, result)
    assert.equal(200, response.status)
    assert.equal("GET http://127.0.0.1:9/ping", t.requests[1].method .. " " .. t.requests[1].url)
  end)

  it("returns an error when Truto refuses the token", function()
    local client = new_client { { 401, JSON, '{"message":"Unauthorized"}' } }
    local result, err = client:ping { max_retries = 0 }
    assert.is_nil(result)
    assert.equal(401, err.status)
  end)
end)




describe("client.mcp", function()
  local truto = require "truto"
  local MCP_TOKEN = "mcp_tok_SECRET_9"

  -- The JSON-RPC request a call sent, decoded, with its id checked and taken out.
  local function rpc_sent(req)
    local body = truto.decode_json(req.body)
    assert.equal("number", type(body.id))
    body.id = nil
    return body
  end

  it("sends initialize, tools/list and tools/call as JSON-RPC 2.0 to /mcp/{token}", function()
    local client, t = new_client {
      { 200, JSON, '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2024-11-05","serverInfo":{"name":"t"}}}' },
      { 200, JSON, '{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"list_all_hubspot_contacts"}]}}' },
      { 200, JSON, '{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"[]"}],"isError":false}}' },
    }
    local result, response = client.mcp:initialize(MCP_TOKEN, "my-app", "1.0")
    assert.same({ protocolVersion = "2024-11-05", serverInfo = { name = "t" } }, result)
    assert.equal(200, response.status)
    assert.same({ tools = { { name = "list_all_hubspot_contacts" } } }, (client.mcp:list_tools(MCP_TOKEN)))
    assert.same({ content = { { type = "text", text = "[]" } }, isError = false },
                (client.mcp:call_tool(MCP_TOKEN, "list_all_hubspot_contacts", { limit = 1 }, { x = "y" })))
    local urls, sent = {}, {}
    for i, req in ipairs(t.requests) do
      urls[i] = req.method .. " " .. req.url
      sent[i] = rpc_sent(req)
      assert.equal("application/json", header(req, "Content-Type"))
    end
    assert.same({
      "POST http://127.0.0.1:9/mcp/" .. MCP_TOKEN,
      "POST http://127.0.0.1:9/mcp/" .. MCP_TOKEN,
      "POST http://127.0.0.1:9/mcp/" .. MCP_TOKEN .. "?x=y",
    }, urls)
    assert.equal('{"capabilities":{},"clientInfo":{"name":"my-app","version":"1.0"},"protocolVersion":"2024-11-05"}',
                 truto.encode_json(sent[1].params))
    assert.same({ jsonrpc = "2.0", method = "initialize" }, { jsonrpc = sent[1].jsonrpc, method = sent[1].method })
    assert.equal('{"jsonrpc":"2.0","method":"tools/list","params":{}}', truto.encode_json(sent[2]))
    assert.equal('{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"limit":1},'
                 .. '"name":"list_all_hubspot_contacts"}}', truto.encode_json(sent[3]))
    -- every request has its own id
    local a, b = truto.decode_json(t.requests[1].body).id, truto.decode_json(t.requests[2].body).id
    assert.are_not.equal(a, b)
  end)

  it("sends empty tool arguments as an object", function()
    local client, t = new_client()
    client.mcp:call_tool(MCP_TOKEN, "ping_tool")
    assert.equal('{"arguments":{},"name":"ping_tool"}', truto.encode_json(rpc_sent(t.requests[1]).params))
  end)

  it("sends call's payload as given, adding jsonrpc, without changing the caller's table", function()
    local client, t = new_client { { 200, JSON, '{"jsonrpc":"2.0","id":"a","result":{}}' } }
    local payload = { id = "a", method = "ping" }
    local result = client.mcp:call(MCP_TOKEN, payload)
    assert.same({}, result)
    assert.equal('{"id":"a","jsonrpc":"2.0","method":"ping"}', t.requests[1].body)
    assert.same({ id = "a", method = "ping" }, payload)
  end)

  it("returns a JSON-RPC error as kind rpc with its code, once, and never names the token", function()
    local client, t = new_client {
      { 200, JSON, '{"jsonrpc":"2.0","id":5,"error":{"code":-32601,"message":"Method not found","data":{"m":"x"}}}' },
    }
    local result, err = client.mcp:call(MCP_TOKEN, { id = 5, method = "x" })
    assert.is_nil(result)
    assert.equal("rpc", err.kind)
    assert.equal(-32601, err.code)
    assert.equal("Method not found", err.rpc_message)
    assert.equal("JSON-RPC error -32601: Method not found", err.message)
    assert.same({ m = "x" }, err.data)
    assert.equal(-32601, err.body.error.code)
    assert.is_false(err.retryable)
    assert.equal(1, #t.requests)
    assert.equal("POST", err.method)
    assert.equal("/mcp/{token}", err.path)
    assert.equal("truto: POST /mcp/{token}: rpc: JSON-RPC error -32601: Method not found", tostring(err))
  end)

  it("says so when the error member is malformed", function()
    for _, body in ipairs { '{"error":"boom"}', '{"error":{"code":"x"}}', '{"error":{"message":7}}' } do
      local client = new_client { { 200, JSON, body } }
      local result, err = client.mcp:list_tools(MCP_TOKEN)
      assert.is_nil(result, body)
      assert.equal("rpc", err.kind)
      assert.equal("malformed JSON-RPC error (no code or message)", err.message)
    end
    local client = new_client { { 200, JSON, '{"error":{"code":1.5,"message":"m"}}' } }
    local _, err = client.mcp:list_tools(MCP_TOKEN)
    assert.equal("JSON-RPC error: m", err.message)
    assert.is_nil(err.code)
  end)

  it("refuses an answer that is no JSON-RPC response, or answers another id", function()
    local cases = {
      { "null", "not a JSON-RPC response: the body is not a JSON object" },
      { '"just a string"', "not a JSON-RPC response: the body is not a JSON object" },
      { '{"foo":"bar"}', "not a JSON-RPC response: no result and no error" },
      { '{"error":null}', "not a JSON-RPC response: no result and no error" },
      { '{"id":999,"result":{}}', "not a JSON-RPC response: it answers id 999, not 1" },
    }
    for _, case in ipairs(cases) do
      local client = new_client { { 200, JSON, case[1] } }
      local result, err = client.mcp:call(MCP_TOKEN, { id = 1, method = "m" })
      assert.is_nil(result, case[1])
      assert.equal("decode", err.kind, case[1])
      assert.equal(case[2], err.message, case[1])
      assert.is_false(err.retryable)
    end
    -- a text body (say, an event stream): not JSON
    local client = new_client { { 200, { ["content-type"] = "text/event-stream" }, "data: {}\n\n" } }
    local _, err = client.mcp:list_tools(MCP_TOKEN)
    assert.equal("not a JSON-RPC response: the body is not a JSON object", err.message)
  end)

  it("takes a null error beside a result, a null id, and an empty answer to a notification", function()
    local client = new_client {
      { 200, JSON, '{"id":1,"error":null,"result":{"ok":true}}' },
      { 200, JSON, '{"id":null,"result":7}' },
      { 202, {}, "" },
    }
    assert.same({ ok = true }, (client.mcp:call(MCP_TOKEN, { id = 1, method = "m" })))
    assert.equal(7, (client.mcp:call(MCP_TOKEN, { id = 2, method = "m" })))
    assert.is_true((client.mcp:call(MCP_TOKEN, { method = "notifications/initialized" })))
  end)

  it("sends a batch of messages as given and returns the answers", function()
    local client, t = new_client { { 200, JSON, '[{"id":1,"result":1},{"id":2,"result":2}]' } }
    local batch = { { id = 1, method = "a" }, { id = 2, method = "b" } }
    local result = client.mcp:call(MCP_TOKEN, batch)
    assert.same({ { id = 1, result = 1 }, { id = 2, result = 2 } }, result)
    assert.equal('[{"id":1,"method":"a"},{"id":2,"method":"b"}]', t.requests[1].body)
    assert.same({ { id = 1, method = "a" }, { id = 2, method = "b" } }, batch)
  end)

  it("keeps the MCP token out of errors and out of what on_request sees", function()
    local seen = {}
    local client = new_client({
      { 200, JSON, '{"id":1,"error":{"code":-1,"message":"echo ' .. MCP_TOKEN .. ' and ' .. TOKEN .. '"}}' },
      { 404, { ["content-type"] = "application/json", ["x-echo"] = MCP_TOKEN },
        '{"message":"no server ' .. MCP_TOKEN .. '"}' },
    }, { on_request = function(req) seen[#seen + 1] = req.url end })
    local _, err = client.mcp:call(MCP_TOKEN, { id = 1, method = "m" })
    assert.equal("JSON-RPC error -1: echo [REDACTED] and [REDACTED]", err.message)
    assert.is_nil(truto.encode_json(err.body):find(MCP_TOKEN, 1, true))
    _, err = client.mcp:list_tools(MCP_TOKEN, { x = "1" })
    assert.equal("no server [REDACTED]", err.message)
    assert.equal("[REDACTED]", err.headers["x-echo"])
    assert.is_nil(tostring(err):find(MCP_TOKEN, 1, true))
    assert.same({ "http://127.0.0.1:9/mcp/{token}", "http://127.0.0.1:9/mcp/{token}?x=1" }, seen)
  end)

  it("fails an HTTP error as every call does, and retries it when it may", function()
    local client, t = new_client {
      { 502, JSON, "{}" },
      { 404, JSON, '{"statusCode":404,"error":"Not Found","message":"No such MCP server"}' },
    }
    local result, err = client.mcp:list_tools(MCP_TOKEN)
    assert.is_nil(result)
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
    assert.equal(2, #t.requests)   -- the POST has an Idempotency-Key: retried once
    assert.equal("truto: POST /mcp/{token}: 404 Not Found: No such MCP server (after 2 attempts)", tostring(err))
  end)

  it("raises on a wrong argument type", function()
    local client = new_client()
    assert.has_error(function() client.mcp:call_tool(MCP_TOKEN, 5) end,
      "bad argument #2 to 'call_tool' (name must be a string, got number)")
    assert.has_error(function() client.mcp:call(nil, {}) end,
      "bad argument #1 to 'call' (token must be a string, got nil)")
    assert.has_error(function() client.mcp:call("t", "x") end,
      "bad argument #2 to 'call' (body must be a table, got string)")
    assert.has_error(function() client.mcp:list_tools("t", nil, { sink = function() end }) end,
      "opts.sink: a JSON-RPC answer is read whole, not streamed (client.mcp takes no sink)")
  end)

  it("runs in client:batch", function()
    local client, t = new_client {
      { 200, JSON, '{"result":{"content":[]}}' },
      { 200, JSON, '{"error":{"code":-32602,"message":"bad"}}' },
    }
    local results = client:batch({
      { api = "mcp", method = "call_tool", token = MCP_TOKEN, name = "a", arguments = { q = 1 } },
      { api = "mcp", method = "list_tools", token = MCP_TOKEN },
    }, { concurrency = 1 })
    assert.same({ content = {} }, results[1][1])
    assert.is_nil(results[2][1])
    assert.equal(-32602, results[2][2].code)
    assert.equal('{"arguments":{"q":1},"name":"a"}', truto.encode_json(rpc_sent(t.requests[1]).params))
  end)
end)

-- The emulator's platform API (emulator/lua/truto_emulator/platform.lua and
-- its modules) driven over loopback by the real client: every resource's
-- state, the extras, webhook delivery, batch requests and MCP.
local truto = require "truto"
local emu = require "spec.support.emulator"
local emulator = require "truto.emulator"
local client_module = require "truto.client"
local sh = require "spec.support.shell"

local ACCOUNT = emu.ACCOUNT
local ENVIRONMENT = "3f9c2a7e-5b1d-4c8e-9a6f-1e2d3c4b5a60"
local TEAM = "7d1e5f3a-2c4b-4e9d-8f6a-0b1c2d3e4f50"
local HUBSPOT = "b7c3e1f0-4a2d-4f6b-8c9e-5d1a2b3c4d70"
local INSTALLED_HUBSPOT = "e1a2b3c4-d5e6-4f70-8a9b-0c1d2e3f4a5b"
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local ISO = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"
local T0 = "2024-01-01T10:00:00.000Z"

-- A receiver of webhooks: POST /hook?status=N keeps the delivery and answers
-- N (default 200); GET /received answers every delivery kept.
local RECEIVER_CONF = [[
@LOAD_MODULES@
@USER@
worker_processes 1;
daemon on;
pid "@PREFIX@/nginx.pid";
error_log "@PREFIX@/error.log" notice;
events { worker_connections 64; }
http {
    access_log off;
    default_type application/json;
    client_body_buffer_size 1m;
    client_body_temp_path "@PREFIX@/client_body";
    proxy_temp_path "@PREFIX@/proxy";
    fastcgi_temp_path "@PREFIX@/fastcgi";
    uwsgi_temp_path "@PREFIX@/uwsgi";
    scgi_temp_path "@PREFIX@/scgi";
    lua_shared_dict received 1m;
    server {
        listen 127.0.0.1:@PORT@;
        location = /health { return 200 '{}'; }
        location = /hook {
            content_by_lua_block {
                ngx.req.read_body()
                local h = ngx.req.get_headers()
                local n = ngx.shared.received:incr("count", 1, 0)
                ngx.shared.received:set(n, require("cjson").encode({
                    method = ngx.req.get_method(), uri = ngx.var.request_uri,
                    body = ngx.req.get_body_data() or "", content_type = h["content-type"],
                    user_agent = h["user-agent"], signature = h["x-truto-signature"],
                }))
                ngx.status = tonumber(ngx.var.arg_status) or 200
                ngx.say("ok")
            }
        }
        location = /received {
            content_by_lua_block {
                local out = {}
                for i = 1, ngx.shared.received:get("count") or 0 do out[i] = ngx.shared.received:get(i) end
                ngx.say("[" .. table.concat(out, ",") .. "]")
            }
        }
    }
}
]]

-- Checks the server-made fields of a created record, then returns a copy
-- of expected with them filled in, for assert.same.
local function stamped(expected, record)
  assert.matches(UUID, record.id)
  assert.matches(ISO, record.created_at)
  assert.equal(record.created_at, record.updated_at)
  local out = { id = record.id, created_at = record.created_at, updated_at = record.updated_at }
  for k, v in pairs(expected) do out[k] = v end
  return out
end

local function without(record, ...)
  local out = {}
  for k, v in pairs(record) do out[k] = v end
  for _, field in ipairs({ ... }) do out[field] = nil end
  return out
end

local function not_found(path, id)
  return { statusCode = 404, error = "Not Found", message = path .. " " .. id .. " not found" }
end

describe("the emulator's platform API", function()
  local client

  setup(function()
    emu.start()
    client = emu.client { max_retries = 0 }
  end)

  teardown(function()
    client:close()
    emu.stop()
  end)

  before_each(function() emu.reset() end)

  -- Returns the decoded error body and status of a failed call.
  local function failure(result, err)
    assert.is_nil(result)
    assert.equal("http", err.kind)
    return err.body, err.status
  end

  describe("generic resources", function()
    -- path's Lua name -> create body, the defaults the emulator adds, and
    -- whether the record belongs to the team rather than the environment.
    local function cases()
      local job = assert(client.sync_jobs:create { label = "Contacts" })
      local daemon_job = assert(client.daemon_jobs:create { label = "Export" })
      local daemon = assert(client.daemons:create { label = "worker", status = "active", group_key = "g1" })
      return {
        integrations = { { name = "zendesk", config = { label = "Zendesk" } }, {}, "team" },
        unified_models = { { name = "ticketing", category = "ticketing", resources = { tickets = {} } }, {}, "team" },
        sync_jobs = { { label = "Deals", args_schema = { type = "object" } }, { default_runtime_version = 3 } },
        sync_job_runs = { { sync_job_id = job.id, integrated_account_id = ACCOUNT, args = { full = true } },
                          { status = "created" } },
        sync_job_cron_triggers = { { sync_job_id = job.id, cron_expression = "0 * * * *" }, {} },
        daemons = { { label = "w2", status = "stopped", group_key = "g2" }, {} },
        daemon_jobs = { { label = "Import", args_validation = "true" }, {} },
        daemon_job_runs = { { daemon_job_id = daemon_job.id, daemon_id = daemon.id }, { status = "created" } },
        daemon_job_cron_triggers = { { daemon_job_id = daemon_job.id, cron_expression = "5 4 * * *" }, {} },
        datastores = { { type = "s3", config = { bucket = "exports", region = "us-east-1" } }, {} },
        documentation = { { entity_id = HUBSPOT, entity_type = "integration", type = "readme", content = "# HubSpot" },
                          {} },
        webhooks = { { target_url = "http://127.0.0.1:9/hook", event_types = { "record:created" } },
                     { is_active = true } },
        workflows = { { trigger_name = "integrated_account:active", config = { steps = truto.array() } }, {} },
        alarms = { { alarm_type = "cron", entity_id = "trigger-1", cron_expression = "0 0 * * *" }, {} },
        static_gates = { { name = "gate", domain = "gate.example.com" }, {} },
      }
    end

    it("create, get, list, update and delete keep state for every resource with all five", function()
      local seeded = { integrations = 1, unified_models = 1, sync_jobs = 1, daemon_jobs = 1, daemons = 1 }
      for name, case in pairs(cases()) do
        local api, body, defaults = client[name], case[1], case[2]
        local created, response = api:create(body)
        assert(created, name .. ": " .. tostring(response))
        assert.equal(201, response.status)
        local expected = { [case[3] == "team" and "team_id" or "environment_id"] = case[3] == "team" and TEAM
                           or ENVIRONMENT }
        for k, v in pairs(defaults) do expected[k] = v end
        for k, v in pairs(body) do expected[k] = v end
        if name == "webhooks" then
          assert.matches(UUID, created.secret)
          expected.secret = created.secret
        end
        expected = stamped(expected, created)
        assert.same(expected, created, name)
        local shown = without(expected, "secret")
        assert.same(shown, (api:get(created.id)), name)

        local page = assert(api:list())
        assert.equal(100, page.limit)
        assert.equal(truto.null, page.next_cursor)
        assert.equal((seeded[name] or 0) + 1, #page.result, name)
        assert.same(shown, page.result[#page.result], name)

        local updated = assert(api:update(created.id, { note = "changed", config = { extra = 1 } }))
        assert.matches(ISO, updated.updated_at)
        local merged = without(shown, "updated_at")
        merged.note, merged.updated_at = "changed", updated.updated_at
        merged.config = {}
        for k, v in pairs(type(shown.config) == "table" and shown.config or {}) do merged.config[k] = v end
        merged.config.extra = 1
        assert.same(merged, updated, name)
        assert.same(merged, (api:get(created.id)), name)

        local deleted, deleted_response = api:delete(created.id)
        assert.equal(200, deleted_response.status)
        if name == "daemon_job_runs" then
          -- Deleting a run stops it and answers the run.
          assert.equal("stopped", deleted.status)
          assert.equal("stopped", (api:get(created.id)).status)
        else
          assert.same({ id = created.id }, deleted, name)
          local body404, status = failure(api:get(created.id))
          assert.equal(404, status)
          assert.same(not_found(client_module.PLATFORM[name].path, created.id), body404)
        end
      end
    end)

    it("pages with limit and next_cursor and filters on query fields", function()
      for i = 1, 3 do assert(client.sync_jobs:create { label = "job " .. i, integration_name = i == 2 and "zendesk"
                                                       or "hubspot" }) end
      local first = assert(client.sync_jobs:list { limit = 2 })
      assert.same({ "job 1", "job 2" }, { first.result[1].label, first.result[2].label })
      assert.equal(2, first.limit)
      assert.is_string(first.next_cursor)
      local second = assert(client.sync_jobs:list { limit = 2, next_cursor = first.next_cursor })
      assert.equal(1, #second.result)
      assert.equal("job 3", second.result[1].label)
      assert.equal(truto.null, second.next_cursor)
      local labels = {}
      for record in client.sync_jobs:each { limit = 1 } do labels[#labels + 1] = record.label end
      assert.same({ "job 1", "job 2", "job 3" }, labels)
      local hubspot = assert(client.sync_jobs:list { integration_name = "hubspot" })
      assert.same({ "job 1", "job 3" }, { hubspot.result[1].label, hubspot.result[2].label })
      assert.equal(2, #hubspot.result)
      assert.equal(0, #assert(client.sync_jobs:list { label = "nope" }).result)
      assert.equal(1, #assert(client.integrated_accounts:list { integration = "hubspot", status = "blocked" }).result)
      local bad, status = failure(client.sync_jobs:list { next_cursor = "garbage" })
      assert.equal(400, status)
      assert.same({ statusCode = 400, error = "Bad Request", message = "Invalid next_cursor" }, bad)
    end)

    it("answers 400 for missing required create fields", function()
      local function refused(name, body, message)
        local bad, status = failure(client[name]:create(body))
        assert.equal(400, status)
        assert.same({ statusCode = 400, error = "Bad Request", message = message }, bad)
      end
      refused("webhooks", { is_active = true }, "Missing required fields: target_url")
      refused("link_tokens", { context = {} }, "Missing required fields: tenant_id or integrated_account_id")
      refused("sync_job_runs", { args = {} }, "Missing required fields: sync_job_id, integrated_account_id")
      refused("sync_job_cron_triggers", { sync_job_id = "x" }, "Missing required fields: cron_expression")
      local job = assert(client.sync_jobs:create {})
      refused("sync_job_runs", { sync_job_id = job.id, integrated_account_id = ACCOUNT, webhook_id = "w",
                                 daemon_group_key = "g" }, "webhook_id and daemon_group_key cannot both be set")
      local missing, status = failure(client.sync_job_runs:create { sync_job_id = "no-such-job",
                                                                    integrated_account_id = ACCOUNT })
      assert.equal(404, status)
      assert.same(not_found("sync-job", "no-such-job"), missing)
      assert.equal("Untitled", job.label)
    end)

    it("serves the fixtures' environment, team, users, api tokens and categories", function()
      local environments = assert(client.environments:list())
      assert.same({ { id = ENVIRONMENT, name = "Emulator", team_id = TEAM, created_at = T0, updated_at = T0 } },
                  environments.result)
      local renamed = assert(client.environments:update(ENVIRONMENT, { name = "Staging" }))
      assert.equal("Staging", renamed.name)
      assert.equal("Staging", (client.environments:get(ENVIRONMENT)).name)
      assert.same({ id = TEAM, name = "Emulator team", domain = "example.com", logo = truto.null,
                    created_at = T0, updated_at = T0 }, (client.teams:get(TEAM)))
      assert.equal("ada@example.com", assert(client.users:list()).result[1].email)
      local tokens = assert(client.api_tokens:list())
      assert.same({ "CI token", "second token" }, { tokens.result[1].name, tokens.result[2].name })
      assert.same({ { name = "crm", label = "CRM", created_at = T0, updated_at = T0 },
                    { name = "ticketing", label = "Ticketing", created_at = T0, updated_at = T0 } },
                  assert(client.categories:list()).result)
      local no, status = failure(client:request { method = "POST", path = "/user", body = { name = "x" } })
      assert.equal(405, status)
      assert.same({ statusCode = 405, error = "Method Not Allowed", message = "Method POST not allowed on /user" }, no)
      local unknown, unknown_status = failure(client:request { method = "POST", path = "/webhook/x/y" })
      assert.equal(404, unknown_status)
      assert.same({ statusCode = 404, error = "Not Found", message = "Route not found: POST /webhook/x/y" }, unknown)
    end)

    it("installs an integration and a unified model once (a second install answers the first)", function()
      local zendesk = assert(client.integrations:create { name = "zendesk", config = { label = "Zendesk" } })
      local installed, response = client.environment_integrations:create { integration_id = zendesk.id,
                                                                          is_enabled = false }
      assert.equal(201, response.status)
      assert.same(stamped({ integration_id = zendesk.id, is_enabled = false, show_in_catalog = true, override = {},
                            environment_id = ENVIRONMENT, integration = zendesk }, installed), installed)
      local again, again_response = client.environment_integrations:create { integration_id = zendesk.id }
      assert.equal(200, again_response.status)
      assert.same(installed, again)
      assert.equal(2, #assert(client.environment_integrations:list()).result)
      local model = assert(client.unified_models:create { name = "ats", category = "ats", resources = { jobs = {} } })
      local uses = assert(client.environment_unified_models:create { unified_model_id = model.id })
      assert.same(stamped({ unified_model_id = model.id, environment_id = ENVIRONMENT, unified_model = model }, uses),
                  uses)
      local missing, status = failure(client.environment_integrations:create { integration_id = "nope" })
      assert.equal(404, status)
      assert.same(not_found("integration", "nope"), missing)
    end)

    it("link tokens, cron schedules, datastore tests and inbound webhooks", function()
      local link, response = client.link_tokens:create { tenant_id = "acme-9" }
      assert.equal(201, response.status)
      assert.same({ "link_token" }, (function() local k = {} for key in pairs(link) do k[#k + 1] = key end return k end)())
      assert.matches(UUID, link.link_token)
      assert.matches(UUID, assert(client.link_tokens:create { integrated_account_id = ACCOUNT }).link_token)

      local job = assert(client.sync_jobs:create {})
      local trigger = assert(client.sync_job_cron_triggers:create { sync_job_id = job.id, cron_expression = "* * * * *" })
      assert.same({ success = true }, (client.sync_job_cron_triggers:schedule(trigger.id)))
      local daemon_job = assert(client.daemon_jobs:create {})
      local daemon_trigger = assert(client.daemon_job_cron_triggers:create { daemon_job_id = daemon_job.id,
                                                                            cron_expression = "* * * * *" })
      assert.same({ success = true }, (client.daemon_job_cron_triggers:schedule(daemon_trigger.id)))
      local gone, status = failure(client.sync_job_cron_triggers:schedule("nope"))
      assert.equal(404, status)
      assert.same(not_found("sync-job-cron-trigger", "nope"), gone)

      local s3 = assert(client.datastores:create { type = "s3", config = { bucket = "b" } })
      assert.same({ success = true }, (client.datastores:test(s3.id, "uploadObject", { key = "k" })))
      local qdrant = assert(client.datastores:create { type = "qdrant", config = {} })
      local bad = failure(client.datastores:test(qdrant.id, "upsertPoints"))
      assert.same({ statusCode = 400, error = "Bad Request",
                    message = "Testing is not supported for datastores of type qdrant" }, bad)

      assert.same({ success = true }, (client.integrated_account_webhooks:process(ACCOUNT, { event = "x" })))
      assert.same({ success = true }, (client.environment_integration_webhooks:process(INSTALLED_HUBSPOT, {})))
      assert.same(not_found("integrated-account", "nope"),
                  (failure(client.integrated_account_webhooks:process("nope", {}))))
    end)

    it("records every request, and reset clears the state", function()
      assert(client.webhooks:create { target_url = "http://127.0.0.1:9/" })
      local log = emu.requests()
      local entry = log[#log]
      assert.equal("POST", entry.method)
      assert.equal("/webhook", entry.path)
      assert.equal("", entry.query)
      assert.equal('{"target_url":"http://127.0.0.1:9/"}', entry.body)
      assert.equal("Bearer test-token", entry.headers.authorization)
      assert.equal("application/json", entry.headers["content-type"])
      assert(client.integrated_accounts:update(ACCOUNT, { tenant_id = "changed" }))
      emu.reset()
      assert.equal(0, #assert(client.webhooks:list()).result)
      assert.equal("acme-1", (client.integrated_accounts:get(ACCOUNT)).tenant_id)
    end)

    it("sandbox accounts, workflow runs and logs", function()
      local sandbox, response = client.sandbox_integrated_accounts:create { id = ACCOUNT }
      assert.equal(201, response.status)
      local account = assert(client.integrated_accounts:get(ACCOUNT))
      assert.same(stamped({ environment_id = ENVIRONMENT, integrated_account = account }, sandbox), sandbox)
      assert.same(sandbox, (client.sandbox_integrated_accounts:get(sandbox.id)))
      assert.same({ sandbox }, assert(client.sandbox_integrated_accounts:list()).result)
      assert.same({ id = sandbox.id }, (client.sandbox_integrated_accounts:delete(sandbox.id)))
      assert.same(not_found("integrated-account", "nope"),
                  (failure(client.sandbox_integrated_accounts:create { id = "nope" })))

      assert.same({ result = {}, next_cursor = truto.null, limit = 100 }, (client.workflow_runs:list()))
      assert.same(not_found("workflow-run", "r1"), (failure(client.workflow_runs:get("r1"))))
      assert.same(not_found("workflow-run", "r1"), (failure(client.workflow_runs:delete("r1"))))

      assert.same({ result = {}, next_cursor = truto.null, limit = 5 },
                  (client.logs:list { log_type = "unified_proxy_api", limit = 5 }))
      assert.same({ statusCode = 400, error = "Bad Request", message = "Missing required query parameter: log_type" },
                  (failure(client.logs:list())))
    end)

    it("GET /ping answers {}", function()
      local result, response = client:ping()
      assert.same({}, result)
      assert.equal(200, response.status)
    end)
  end)

  describe("integrated accounts", function()
    local FIXTURE = {
      id = ACCOUNT, tenant_id = "acme-1", status = "active", environment_id = ENVIRONMENT,
      environment_integration_id = INSTALLED_HUBSPOT, authentication_method = "oauth2", is_sandbox = false,
      region = "wnam", context = { hubspot_portal_id = "12345" },
      integration = { id = HUBSPOT, name = "hubspot", category = "crm", is_beta = false },
      created_at = T0, updated_at = T0,
    }

    it("are the fixtures' accounts: list and get", function()
      local page = assert(client.integrated_accounts:list())
      assert.same({ ACCOUNT, "acc-2", "blocked-account" }, { page.result[1].id, page.result[2].id, page.result[3].id })
      assert.equal(3, #page.result)
      assert.same(FIXTURE, page.result[1])
      assert.same(FIXTURE, (client.integrated_accounts:get(ACCOUNT)))
      assert.same(not_found("integrated-account", "nope"), (failure(client.integrated_accounts:get("nope"))))
    end)

    it("a PATCH to needs_reauth makes its Unified and Proxy calls fail with the provider's 401", function()
      local updated = assert(client.integrated_accounts:update(ACCOUNT, { status = "needs_reauth",
                                                                          context = { note = "x" } }))
      assert.equal("needs_reauth", updated.status)
      assert.same({ hubspot_portal_id = "12345", note = "x" }, updated.context)
      local q = { integrated_account_id = ACCOUNT }
      local body, status = failure(client.unified_api:list("crm", "contacts", q))
      assert.equal(401, status)
      assert.same({
        statusCode = 401, error = "Unauthorized", truto_is_remote_error = true,
        message = "The integrated account needs to be re-authenticated (status needs_reauth)",
        raw_response = { status = "error", message = "Authentication credentials are invalid",
                         category = "INVALID_AUTHENTICATION" },
        truto_error_insight = { remote_error = { description = "The remote API rejected the integrated account's "
          .. "credentials. Reconnect the account with a link token." } },
      }, body)
      assert.equal(401, select(2, failure(client.proxy_api:get("contacts", "7001", q))))
      assert.equal(200, select(2, client.unified_api:list("crm", "contacts", { integrated_account_id = "acc-2" })).status)
      assert(client.integrated_accounts:update(ACCOUNT, { status = "active" }))
      assert.equal("7001", (client.unified_api:get("crm", "contacts", "7001", q)).id)
    end)

    it("import, delete, and the Unified API sees both", function()
      local imported, response = client.integrated_accounts:create {
        tenant_id = "acme-7", environment_integration_id = INSTALLED_HUBSPOT, authentication_method = "api_key",
        context = { api_key = "secret-key", region_name = "eu" },
      }
      assert.equal(201, response.status)
      local installed = assert(client.environment_integrations:get(INSTALLED_HUBSPOT))
      assert.same(stamped({ tenant_id = "acme-7", environment_integration_id = INSTALLED_HUBSPOT,
                            authentication_method = "api_key", context = { region_name = "eu" },
                            environment_id = ENVIRONMENT, status = "active", is_sandbox = false, region = "wnam",
                            environment_integration = installed, integration = installed.integration }, imported),
                  imported)
      local q = { integrated_account_id = imported.id }
      assert.equal(5, #assert(client.unified_api:list("crm", "contacts", q)).result)
      assert.same({ id = imported.id }, (client.integrated_accounts:delete(imported.id)))
      local body, status = failure(client.unified_api:list("crm", "contacts", q))
      assert.equal(400, status)
      assert.equal("integrated_account_id " .. imported.id .. " does not match any integrated account", body.message)
    end)

    it("refresh-credentials, run-post-install-actions, credentials and token", function()
      assert.same({ success = true }, (client.integrated_accounts:refresh_credentials(ACCOUNT)))
      assert.same({ success = true }, (client:request { method = "POST",
        path = "/integrated-account/run-post-install-actions", body = { id = ACCOUNT } }))
      assert.same(not_found("integrated-account", "nope"),
                  (failure(client.integrated_accounts:refresh_credentials("nope"))))
      assert.same({ statusCode = 400, error = "Bad Request", message = "Missing required fields: id" },
                  (failure(client:request { method = "POST", path = "/integrated-account/run-post-install-actions",
                                            body = {} })))

      local account = assert(client:request { method = "PATCH", path = "/integrated-account/" .. ACCOUNT
        .. "/credentials", body = { api_key = "k2", oauth = { token = { access_token = "a" } } } })
      assert.same({ hubspot_portal_id = "12345" }, account.context) -- credentials never shown
      assert.matches(ISO, account.updated_at)
      assert.same({ statusCode = 400, error = "Bad Request", message = "Not a credential field: tenant_id" },
                  (failure(client:request { method = "PATCH", path = "/integrated-account/" .. ACCOUNT
                    .. "/credentials", body = { tenant_id = "x" } })))

      local token = assert(client.integrated_accounts:create_token("acc-2")).integrated_account_token
      assert.matches(UUID, token)
      local as_account = emu.client { token = token, max_retries = 0 }
      assert.equal("7001", (as_account.unified_api:get("crm", "contacts", "7001")).id)
      assert.equal("acc-2", (as_account:request { method = "GET", path = "/integrated-account/me" }).id)
      local refused, status = failure(as_account.webhooks:list())
      assert.equal(403, status)
      assert.equal("An integrated-account token cannot be used on GET /webhook", refused.message)
      as_account:close()
    end)

    it("tools: one per method of each Proxy resource, filtered by methods", function()
      local page = assert(client.integrated_accounts:tools(ACCOUNT))
      local names = {}
      for i, t in ipairs(page.result) do names[i] = t.name end
      assert.same({
        "list_all_hubspot_companies", "get_single_hubspot_company_by_id", "create_a_hubspot_company",
        "update_a_hubspot_company_by_id", "delete_a_hubspot_company_by_id",
        "list_all_hubspot_contacts", "get_single_hubspot_contact_by_id", "create_a_hubspot_contact",
        "update_a_hubspot_contact_by_id", "delete_a_hubspot_contact_by_id",
        "list_all_hubspot_deals", "get_single_hubspot_deal_by_id", "create_a_hubspot_deal",
        "update_a_hubspot_deal_by_id", "delete_a_hubspot_deal_by_id",
        "list_all_hubspot_owners", "get_single_hubspot_owner_by_id", "create_a_hubspot_owner",
        "update_a_hubspot_owner_by_id", "delete_a_hubspot_owner_by_id",
      }, names)
      assert.same({
        name = "update_a_hubspot_contact_by_id", description = "Update a hubspot contact by id",
        method = "update", resource = "contacts", required = { "id" },
        query_schema = { type = "object", required = { "id" },
                         properties = { id = { type = "string", description = "The id of the contact." } } },
        body_schema = { type = "object", properties = { properties = { type = "object" } } },
      }, page.result[9])
      local read = assert(client.integrated_accounts:tools(ACCOUNT, { methods = "read" }))
      assert.equal(8, #read.result)
      assert.same({ "list", "get" }, { read.result[1].method, read.result[2].method })
    end)
  end)

  describe("webhooks", function()
    local receiver

    setup(function()
      receiver = assert(emulator.nginx { text = RECEIVER_CONF, kind = "truto-webhook-receiver", health = "/health" })
    end)

    teardown(function()
      if receiver then receiver:stop() end
    end)

    local function received()
      local probe = truto.new { token = "unused", base_url = receiver.base_url, max_retries = 0 }
      local list = assert(probe:request { method = "GET", path = "/received" })
      probe:close()
      return list
    end

    it("test sends a signed POST that truto.verify_webhook accepts", function()
      local before = #received()
      local webhook = assert(client.webhooks:create { target_url = receiver.base_url .. "/hook" })
      assert.same({ success = true }, (client.webhooks:test(webhook.id)))
      local deliveries = received()
      assert.equal(before + 1, #deliveries)
      local delivery = deliveries[#deliveries]
      assert.equal("POST", delivery.method)
      assert.equal("/hook", delivery.uri)
      assert.equal("application/json", delivery.content_type)
      assert.equal("truto", delivery.user_agent)
      assert.matches("^format=sha256,v=%x+$", delivery.signature)
      assert.is_true(truto.verify_webhook(webhook.secret, delivery.body, delivery.signature))
      assert.same({ false, "signature mismatch" },
                  { truto.verify_webhook("another-secret", delivery.body, delivery.signature) })
      local event = truto.decode_json(delivery.body)
      assert.matches(UUID, event.id)
      assert.matches(ISO, event.created_at)
      assert.same({ id = event.id, event = "test", payload = { foo = "bar" }, environment_id = ENVIRONMENT,
                    webhook_id = webhook.id, created_at = event.created_at }, event)
    end)

    it("test answers 502 when the target fails or cannot be reached", function()
      local failing = assert(client.webhooks:create { target_url = receiver.base_url .. "/hook?status=500" })
      local body, status = failure(client.webhooks:test(failing.id))
      assert.equal(502, status)
      assert.same({ statusCode = 502, error = "Bad Gateway", message = "Webhook test failed: " .. receiver.base_url
                    .. "/hook?status=500 answered 500" }, body)
      local closed = assert(client.webhooks:create { target_url = "http://127.0.0.1:9/hook" })
      body = failure(client.webhooks:test(closed.id))
      assert.equal("Webhook test failed: cannot connect to 127.0.0.1:9: connection refused", body.message)
      assert.same(not_found("webhook", "nope"), (failure(client.webhooks:test("nope"))))
    end)
  end)

  describe("POST /batch-request", function()
    it("runs resources in dependency order with placeholders; a failing one lands in errors", function()
      local result, response = client:request { method = "POST", path = "/batch-request", body = {
        integrated_account_id = ACCOUNT,
        args = { contact = "7002" },
        resources = {
          -- Listed before its parent: the order comes from depends_on.
          { name = "owners", resource = "crm/users", method = "get", id = "{{resources.crm.contacts.owner.id}}",
            depends_on = "crm/contacts" },
          { resource = "crm/contacts", method = "get", id = "{{args.contact}}" },
          { name = "deal", resource = "deals", method = "get", id = "23423523" },
          { name = "missing", resource = "crm/accounts", method = "get", id = "nope" },
          { name = "accounts", resource = "crm/accounts", method = "list", query = { limit = 2 } },
        },
      } }
      assert.equal(200, response.status)
      assert.same({ "7002" }, { result.result["crm/contacts"][1].id })
      assert.equal(1, #result.result["crm/contacts"])
      assert.same({ "112" }, { result.result.owners[1].id })
      assert.equal(1, #result.result.owners)
      assert.equal("23423523", result.result.deal[1].id)
      assert.same({}, result.result.missing)
      -- A list follows next_cursor to the end.
      assert.same({ "5001", "5002", "5003", "5004", "5005" }, (function()
        local ids = {}
        for i, record in ipairs(result.result.accounts) do ids[i] = record.id end
        return ids
      end)())
      assert.same({ missing = { {
        statusCode = 404, error = "Not Found", message = "Record not found: nope", truto_is_remote_error = true,
        raw_response = { status = "error", message = "resource not found", category = "OBJECT_NOT_FOUND" },
        truto_error_insight = { remote_error = {
          description = "The remote API could not find the requested record." } },
      } } }, result.errors)
    end)

    it("runs a child once per parent record, and refuses bad batches", function()
      local result = assert(client:request { method = "POST", path = "/batch-request", body = {
        integrated_account_id = ACCOUNT,
        resources = {
          { resource = "crm/contacts", method = "list" },
          { name = "account_of", resource = "crm/accounts", method = "get",
            id = "{{resources.crm.contacts.account.id}}", depends_on = "crm/contacts" },
        },
      } })
      local ids = {}
      for i, record in ipairs(result.result.account_of) do ids[i] = record.id end
      assert.same({ "5001", "5002", "5003", "5004", "5005" }, ids)
      assert.same({}, result.errors)
      -- An Idempotency-Key replays the first answer.
      local replay_body = { integrated_account_id = ACCOUNT, resources = { { resource = "crm/contacts",
                                                                             method = "get", id = "7001" } } }
      local first = assert(client:request { method = "POST", path = "/batch-request", body = replay_body,
                                            opts = { idempotency_key = "batch-1" } })
      assert(client.unified_api:update("crm", "contacts", "7001", { title = "CEO" }, { integrated_account_id = ACCOUNT }))
      local second, second_response = client:request { method = "POST", path = "/batch-request", body = replay_body,
                                                       opts = { idempotency_key = "batch-1" } }
      assert.equal("true", second_response.headers["idempotent-replayed"])
      assert.same(first, second)
      assert.equal("Buyer", second.result["crm/contacts"][1].title)
      local function refused(body, message)
        local bad, status = failure(client:request { method = "POST", path = "/batch-request", body = body })
        assert.equal(400, status)
        assert.equal(message, bad.message)
      end
      refused({ resources = { { resource = "crm/contacts" } } }, "Missing required fields: integrated_account_id")
      refused({ integrated_account_id = ACCOUNT, resources = "x" }, "resources must be a non-empty array")
      refused({ integrated_account_id = ACCOUNT, resources = { { resource = "crm/contacts", depends_on = "x" } } },
              "resources[1].depends_on names no resource: x")
      refused({ integrated_account_id = ACCOUNT, resources = {
        { name = "a", resource = "crm/contacts", depends_on = "b" },
        { name = "b", resource = "crm/contacts", depends_on = "a" } } }, "the resources' depends_on form a cycle")
    end)
  end)

  describe("MCP", function()
    local function create_server(body)
      return client:request { method = "POST", path = "/integrated-account/" .. ACCOUNT .. "/mcp", body = body }
    end

    local function rpc(token, message)
      return client:request { method = "POST", path = "/mcp/" .. token, body = message }
    end

    it("servers: create answers the token and url once; get, list, update, delete", function()
      local server, response = create_server { name = "Read only", config = { methods = { "read" } } }
      assert.equal(201, response.status)
      assert.matches("^%x+$", server.token)
      assert.same(stamped({ name = "Read only", config = { methods = { "read" } }, integrated_account_id = ACCOUNT,
                            expires_at = truto.null, token = server.token,
                            url = emu.base_url .. "/mcp/" .. server.token }, server), server)
      local path = "/integrated-account/" .. ACCOUNT .. "/mcp"
      local shown = without(server, "token", "url")
      assert.same(shown, (client:request { method = "GET", path = path .. "/" .. server.id }))
      assert.same({ result = { shown }, next_cursor = truto.null, limit = 100 },
                  (client:request { method = "GET", path = path }))
      assert.equal(0, #assert(client:request { method = "GET", path = "/integrated-account/acc-2/mcp" }).result)
      local renamed = assert(client:request { method = "PATCH", path = path .. "/" .. server.id,
                                              body = { name = "Renamed" } })
      assert.equal("Renamed", renamed.name)
      assert.same({ id = server.id }, (client:request { method = "DELETE", path = path .. "/" .. server.id }))
      local gone = failure(client:request { method = "GET", path = path .. "/" .. server.id })
      assert.same(not_found("mcp-server", server.id), gone)
      assert.same({ statusCode = 400, error = "Bad Request", message = "No tools match the MCP server's config" },
                  (failure(create_server { name = "none", config = { methods = { "custom" } } })))
      assert.same({ statusCode = 400, error = "Bad Request", message = "config must be an object" },
                  (failure(create_server { name = "bad", config = "read" })))
    end)

    it("answers initialize, tools/list, tools/call and JSON-RPC errors", function()
      local token = assert(create_server { name = "contacts", config = { methods = { "read" } } }).token
      -- As Truto's TypeScript SDK sends it: no jsonrpc, no id.
      local init = assert(rpc(token, { method = "initialize", params = { protocolVersion = "2024-11-05",
                                                                         clientInfo = { name = "spec", version = "1" } } }))
      assert.same({ jsonrpc = "2.0", id = truto.null, result = {
        protocolVersion = "2024-11-05", capabilities = { tools = { listChanged = false } },
        serverInfo = { name = "truto-emulator", version = "1.0.0" } } }, init)

      local list = assert(rpc(token, { jsonrpc = "2.0", id = 1, method = "tools/list" }))
      assert.equal(1, list.id)
      assert.equal(8, #list.result.tools)
      assert.same({ name = "get_single_hubspot_contact_by_id", description = "Get a single hubspot contact by id",
                    inputSchema = { type = "object", required = { "id" },
                                    properties = { id = { type = "string", description = "The id of the contact." } } } },
                  list.result.tools[4])

      local call = assert(rpc(token, { jsonrpc = "2.0", id = 2, method = "tools/call", params = {
        name = "get_single_hubspot_contact_by_id", arguments = { id = "7001" } } }))
      assert.equal(2, call.id)
      assert.is_false(call.result.isError)
      assert.equal("text", call.result.content[1].type)
      assert.same({ id = "7001", properties = { email = "jane@acme.example.com", firstname = "Jane",
                                                lastname = "Doe" } }, truto.decode_json(call.result.content[1].text))

      local failed = assert(rpc(token, { jsonrpc = "2.0", id = 3, method = "tools/call", params = {
        name = "get_single_hubspot_contact_by_id", arguments = { id = "nope" } } }))
      assert.is_true(failed.result.isError)
      assert.equal("Record not found: nope", truto.decode_json(failed.result.content[1].text).message)

      assert.same({ jsonrpc = "2.0", id = 4, error = { code = -32602, message = "Unknown tool: create_a_hubspot_contact" } },
                  (rpc(token, { jsonrpc = "2.0", id = 4, method = "tools/call",
                                params = { name = "create_a_hubspot_contact", arguments = {} } })))
      assert.same({ jsonrpc = "2.0", id = 7, error = { code = -32602, message = "params.name is required" } },
                  (rpc(token, { jsonrpc = "2.0", id = 7, method = "tools/call", params = { arguments = {} } })))
      assert.same({ jsonrpc = "2.0", id = 5, error = { code = -32601, message = "Method not found: sampling/create" } },
                  (rpc(token, { jsonrpc = "2.0", id = 5, method = "sampling/create" })))
      -- The client sends only JSON: curl sends the malformed body.
      assert.equal('{"error":{"code":-32700,"message":"Parse error"},"id":null,"jsonrpc":"2.0"}',
                   sh.capture("curl -s -X POST --data-binary '{oops' " .. sh.quote(emu.base_url .. "/mcp/" .. token)))
      local note, note_response = rpc(token, { jsonrpc = "2.0", method = "notifications/initialized" })
      assert.equal(202, note_response.status)
      assert.is_true(note)

      -- The account's state reaches its tools.
      assert(client.integrated_accounts:update(ACCOUNT, { status = "needs_reauth" }))
      local refused = assert(rpc(token, { id = 6, method = "tools/call", params = {
        name = "list_all_hubspot_contacts", arguments = {} } }))
      assert.is_true(refused.result.isError)
      assert.equal(401, truto.decode_json(refused.result.content[1].text).statusCode)

      local unknown, status = failure(rpc("no-such-token", { id = 1, method = "tools/list" }))
      assert.equal(404, status)
      assert.same({ statusCode = 404, error = "Not Found", message = "MCP server not found" }, unknown)
    end)
  end)
end)

describe("the emulator's libcrypto binding", function()
  -- Outside nginx libcrypto's symbols are not in the process: this takes
  -- the ffi.load fallback that an nginx without global symbols needs.
  it("is one module, giving SHA-256 in pieces and HMAC-SHA256 with the system's libcrypto as well", function()
    local code = [[
local crypto = require "truto_emulator.crypto"
local hash = crypto.sha256()
hash.update("a") hash.update("") hash.update("bc")
io.write(hash.hex(), " ", crypto.sha256().hex(), " ", crypto.hmac_sha256_hex("Jefe", "what do ya want for nothing?"))]]
    local ok, out, err = sh.script(".", { LUA_PATH = "emulator/lua/?.lua;;" }, "luajit -e " .. sh.quote(code))
    assert(ok, err)
    -- SHA-256 of "abc" and of "" (FIPS 180-2), HMAC-SHA256 of RFC 4231's test case 2.
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad "
      .. "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 "
      .. "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", out)
    assert.equal("emulator/lua/truto_emulator/crypto.lua\n",
                 sh.capture("grep -lE 'ffi\\.(cdef|load)' emulator/lua/truto_emulator/*.lua"))
  end)
end)

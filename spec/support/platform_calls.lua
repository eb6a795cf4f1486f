-- Every platform method (each resource's standard and extra methods,
-- client.batch_requests, client.mcp, client:ping) called once against the
-- emulator, one contract for both transports: spec/integration_spec.lua makes
-- the calls with libcurl, the app of spec/ngx_spec.lua inside nginx
-- (spec/ngx/truto_app.lua, GET /platform); both check the answers' statuses
-- and the emulator's request log against expected().  Each step names the
-- exact request it must send, written out; "{name}" stands for an id an
-- earlier step's result gave (a created record's).  Loaded inside nginx
-- too: no busted here.
local _M = {}

_M.ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
-- The emulator's fixtures (emulator/fixtures.json, "platform").
local ENVIRONMENT = "3f9c2a7e-5b1d-4c8e-9a6f-1e2d3c4b5a60"
local TEAM = "7d1e5f3a-2c4b-4e9d-8f6a-0b1c2d3e4f50"
local USER = "a1b2c3d4-e5f6-4a70-8b9c-0d1e2f3a4b5c"
local API_TOKEN = "f0e1d2c3-b4a5-4968-8776-655443322110"
local INSTALLED = "e1a2b3c4-d5e6-4f70-8a9b-0c1d2e3f4a5b"   -- hubspot's environment integration
local ACCOUNT = _M.ACCOUNT
-- Nothing listens on port 9 of loopback: the webhook's test delivery fails.
local DEAD_URL = "http://127.0.0.1:9/hook"
local NO_RETRY = { max_retries = 0 }

-- { label, call(client, ids) -> result, response|err, status, method, path, body JSON or nil, keep = name }
-- keep: the result's id is ids[keep]; keep_token: its token is ids[keep_token].
local STEPS = {
  -- integrations, installed and uninstalled; their environment integrations
  { "integrations:create", function(c) return c.integrations:create { name = "acme-crm", config = { label = "Acme" } } end,
    201, "POST", "/integration", '{"config":{"label":"Acme"},"name":"acme-crm"}', keep = "integration" },
  { "integrations:get", function(c, ids) return c.integrations:get(ids.integration) end,
    200, "GET", "/integration/{integration}" },
  { "integrations:update", function(c, ids) return c.integrations:update(ids.integration, { config = { label = "Acme 2" } }) end,
    200, "PATCH", "/integration/{integration}", '{"config":{"label":"Acme 2"}}' },
  { "integrations:list", function(c) return c.integrations:list { name = "acme-crm" } end,
    200, "GET", "/integration?name=acme-crm" },
  { "integrations:each", function(c) return c.integrations:each { name = "acme-crm" } end,
    200, "GET", "/integration?name=acme-crm" },
  { "integrations:install", function(c, ids) return c.integrations:install(ids.integration) end,
    201, "POST", "/environment-integration", '{"integration_id":"{integration}","is_enabled":true}', keep = "installed" },
  { "environment_integrations:get", function(c, ids) return c.environment_integrations:get(ids.installed) end,
    200, "GET", "/environment-integration/{installed}" },
  { "environment_integrations:update", function(c, ids)
      return c.environment_integrations:update(ids.installed, { is_enabled = false }) end,
    200, "PATCH", "/environment-integration/{installed}", '{"is_enabled":false}' },
  { "environment_integrations:list", function(c, ids) return c.environment_integrations:list { integration_id = ids.integration } end,
    200, "GET", "/environment-integration?integration_id={integration}" },
  { "environment_integrations:each", function(c, ids) return c.environment_integrations:each { integration_id = ids.integration } end,
    200, "GET", "/environment-integration?integration_id={integration}" },
  { "integrations:uninstall", function(c, ids) return c.integrations:uninstall(ids.installed) end,
    200, "DELETE", "/environment-integration/{installed}" },
  { "environment_integrations:create", function(c, ids)
      return c.environment_integrations:create { integration_id = ids.integration } end,
    201, "POST", "/environment-integration", '{"integration_id":"{integration}"}', keep = "installed_again" },
  { "environment_integrations:delete", function(c, ids) return c.environment_integrations:delete(ids.installed_again) end,
    200, "DELETE", "/environment-integration/{installed_again}" },
  { "integrations:delete", function(c, ids) return c.integrations:delete(ids.integration) end,
    200, "DELETE", "/integration/{integration}" },

  -- unified models, the same way
  { "unified_models:create", function(c)
      return c.unified_models:create { name = "acme", category = "crm", resources = { contacts = { label = "Contacts" } } } end,
    201, "POST", "/unified-model", '{"category":"crm","name":"acme","resources":{"contacts":{"label":"Contacts"}}}',
    keep = "model" },
  { "unified_models:get", function(c, ids) return c.unified_models:get(ids.model) end, 200, "GET", "/unified-model/{model}" },
  { "unified_models:update", function(c, ids) return c.unified_models:update(ids.model, { description = "d" }) end,
    200, "PATCH", "/unified-model/{model}", '{"description":"d"}' },
  { "unified_models:list", function(c) return c.unified_models:list { name = "acme" } end,
    200, "GET", "/unified-model?name=acme" },
  { "unified_models:each", function(c) return c.unified_models:each { name = "acme" } end,
    200, "GET", "/unified-model?name=acme" },
  { "unified_models:install", function(c, ids) return c.unified_models:install(ids.model) end,
    201, "POST", "/environment-unified-model", '{"unified_model_id":"{model}"}', keep = "model_installed" },
  { "environment_unified_models:get", function(c, ids) return c.environment_unified_models:get(ids.model_installed) end,
    200, "GET", "/environment-unified-model/{model_installed}" },
  { "environment_unified_models:update", function(c, ids)
      return c.environment_unified_models:update(ids.model_installed, { override = { x = 1 } }) end,
    200, "PATCH", "/environment-unified-model/{model_installed}", '{"override":{"x":1}}' },
  { "environment_unified_models:list", function(c, ids)
      return c.environment_unified_models:list { unified_model_id = ids.model } end,
    200, "GET", "/environment-unified-model?unified_model_id={model}" },
  { "environment_unified_models:each", function(c, ids)
      return c.environment_unified_models:each { unified_model_id = ids.model } end,
    200, "GET", "/environment-unified-model?unified_model_id={model}" },
  { "unified_models:uninstall", function(c, ids) return c.unified_models:uninstall(ids.model_installed) end,
    200, "DELETE", "/environment-unified-model/{model_installed}" },
  { "environment_unified_models:create", function(c, ids)
      return c.environment_unified_models:create { unified_model_id = ids.model } end,
    201, "POST", "/environment-unified-model", '{"unified_model_id":"{model}"}', keep = "model_again" },
  { "environment_unified_models:delete", function(c, ids) return c.environment_unified_models:delete(ids.model_again) end,
    200, "DELETE", "/environment-unified-model/{model_again}" },
  { "unified_models:delete", function(c, ids) return c.unified_models:delete(ids.model) end,
    200, "DELETE", "/unified-model/{model}" },

  -- the environment, its team, users, API tokens, categories
  { "environments:list", function(c) return c.environments:list() end, 200, "GET", "/environment" },
  { "environments:each", function(c) return c.environments:each() end, 200, "GET", "/environment" },
  { "environments:get", function(c) return c.environments:get(ENVIRONMENT) end, 200, "GET", "/environment/" .. ENVIRONMENT },
  { "environments:update", function(c) return c.environments:update(ENVIRONMENT, { name = "Emulator" }) end,
    200, "PATCH", "/environment/" .. ENVIRONMENT, '{"name":"Emulator"}' },
  { "teams:list", function(c) return c.teams:list() end, 200, "GET", "/team" },
  { "teams:each", function(c) return c.teams:each() end, 200, "GET", "/team" },
  { "teams:get", function(c) return c.teams:get(TEAM) end, 200, "GET", "/team/" .. TEAM },
  { "teams:update", function(c) return c.teams:update(TEAM, { name = "Emulator team" }) end,
    200, "PATCH", "/team/" .. TEAM, '{"name":"Emulator team"}' },
  { "users:list", function(c) return c.users:list { limit = 1 } end, 200, "GET", "/user?limit=1" },
  { "users:each", function(c) return c.users:each { limit = 1 } end, 200, "GET", "/user?limit=1" },
  { "users:get", function(c) return c.users:get(USER) end, 200, "GET", "/user/" .. USER },
  { "api_tokens:list", function(c) return c.api_tokens:list() end, 200, "GET", "/api-token" },
  { "api_tokens:each", function(c) return c.api_tokens:each() end, 200, "GET", "/api-token" },
  { "api_tokens:get", function(c) return c.api_tokens:get(API_TOKEN) end, 200, "GET", "/api-token/" .. API_TOKEN },
  { "categories:list", function(c) return c.categories:list() end, 200, "GET", "/category" },
  { "categories:each", function(c) return c.categories:each() end, 200, "GET", "/category" },

  -- integrated accounts: the fixtures' and an imported one
  { "integrated_accounts:list", function(c) return c.integrated_accounts:list { tenant_id = "acme-1" } end,
    200, "GET", "/integrated-account?tenant_id=acme-1" },
  { "integrated_accounts:each", function(c) return c.integrated_accounts:each { tenant_id = "acme-1" } end,
    200, "GET", "/integrated-account?tenant_id=acme-1" },
  { "integrated_accounts:get", function(c) return c.integrated_accounts:get(ACCOUNT) end,
    200, "GET", "/integrated-account/" .. ACCOUNT },
  { "integrated_accounts:create", function(c)
      return c.integrated_accounts:create { tenant_id = "acme-9", environment_integration_id = INSTALLED,
                                            authentication_method = "api_key", context = { region = "eu" } } end,
    201, "POST", "/integrated-account", '{"authentication_method":"api_key","context":{"region":"eu"},'
      .. '"environment_integration_id":"' .. INSTALLED .. '","tenant_id":"acme-9"}', keep = "account" },
  { "integrated_accounts:update", function(c, ids) return c.integrated_accounts:update(ids.account, { tenant_id = "acme-10" }) end,
    200, "PATCH", "/integrated-account/{account}", '{"tenant_id":"acme-10"}' },
  { "integrated_accounts:update_credentials", function(c, ids)
      return c.integrated_accounts:update_credentials(ids.account, { api_key = "k2" }) end,
    200, "PATCH", "/integrated-account/{account}/credentials", '{"api_key":"k2"}' },
  { "integrated_accounts:refresh_credentials", function(c, ids) return c.integrated_accounts:refresh_credentials(ids.account) end,
    200, "POST", "/integrated-account/refresh-credentials", '{"id":"{account}"}' },
  { "integrated_accounts:run_post_install_actions", function(c, ids)
      return c.integrated_accounts:run_post_install_actions(ids.account) end,
    200, "POST", "/integrated-account/run-post-install-actions", '{"id":"{account}"}' },
  { "integrated_accounts:create_token", function(c, ids) return c.integrated_accounts:create_token(ids.account) end,
    200, "POST", "/integrated-account/token", '{"integrated_account_id":"{account}"}' },
  { "integrated_accounts:tools", function(c) return c.integrated_accounts:tools(ACCOUNT, { methods = "read" }) end,
    200, "GET", "/integrated-account/" .. ACCOUNT .. "/tools?methods=read" },
  { "sandbox_integrated_accounts:create", function(c, ids) return c.sandbox_integrated_accounts:create { id = ids.account } end,
    201, "POST", "/sandbox-integrated-account", '{"id":"{account}"}', keep = "sandbox" },
  { "sandbox_integrated_accounts:get", function(c, ids) return c.sandbox_integrated_accounts:get(ids.sandbox) end,
    200, "GET", "/sandbox-integrated-account/{sandbox}" },
  { "sandbox_integrated_accounts:list", function(c) return c.sandbox_integrated_accounts:list() end,
    200, "GET", "/sandbox-integrated-account" },
  { "sandbox_integrated_accounts:each", function(c) return c.sandbox_integrated_accounts:each() end,
    200, "GET", "/sandbox-integrated-account" },
  { "sandbox_integrated_accounts:delete", function(c, ids) return c.sandbox_integrated_accounts:delete(ids.sandbox) end,
    200, "DELETE", "/sandbox-integrated-account/{sandbox}" },
  { "integrated_accounts:delete", function(c, ids) return c.integrated_accounts:delete(ids.account) end,
    200, "DELETE", "/integrated-account/{account}" },
  { "link_tokens:create", function(c) return c.link_tokens:create { tenant_id = "acme-11" } end,
    201, "POST", "/link-token", '{"tenant_id":"acme-11"}' },

  -- MCP: a server of the account, then JSON-RPC with its token
  { "integrated_accounts:create_mcp_server", function(c)
      return c.integrated_accounts:create_mcp_server(ACCOUNT, { name = "reader", config = { methods = { "read" } } }) end,
    201, "POST", "/integrated-account/" .. ACCOUNT .. "/mcp", '{"config":{"methods":["read"]},"name":"reader"}',
    keep = "mcp", keep_token = "mcp_token" },
  { "integrated_accounts:list_mcp_servers", function(c) return c.integrated_accounts:list_mcp_servers(ACCOUNT) end,
    200, "GET", "/integrated-account/" .. ACCOUNT .. "/mcp" },
  { "integrated_accounts:get_mcp_server", function(c, ids) return c.integrated_accounts:get_mcp_server(ACCOUNT, ids.mcp) end,
    200, "GET", "/integrated-account/" .. ACCOUNT .. "/mcp/{mcp}" },
  { "integrated_accounts:update_mcp_server", function(c, ids)
      return c.integrated_accounts:update_mcp_server(ACCOUNT, ids.mcp, { name = "reader 2" }) end,
    200, "PATCH", "/integrated-account/" .. ACCOUNT .. "/mcp/{mcp}", '{"name":"reader 2"}' },
  { "mcp:initialize", function(c, ids) return c.mcp:initialize(ids.mcp_token, "lua-truto-spec", "1.0") end,
    200, "POST", "/mcp/{mcp_token}", '{"id":#,"jsonrpc":"2.0","method":"initialize","params":{"capabilities":{},'
      .. '"clientInfo":{"name":"lua-truto-spec","version":"1.0"},"protocolVersion":"2024-11-05"}}' },
  { "mcp:list_tools", function(c, ids) return c.mcp:list_tools(ids.mcp_token) end,
    200, "POST", "/mcp/{mcp_token}", '{"id":#,"jsonrpc":"2.0","method":"tools/list","params":{}}' },
  { "mcp:call_tool", function(c, ids) return c.mcp:call_tool(ids.mcp_token, "list_all_hubspot_contacts", { limit = 1 }) end,
    200, "POST", "/mcp/{mcp_token}", '{"id":#,"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{"limit":1},'
      .. '"name":"list_all_hubspot_contacts"}}' },
  { "mcp:call", function(c, ids) return c.mcp:call(ids.mcp_token, { id = "p", method = "ping" }) end,
    200, "POST", "/mcp/{mcp_token}", '{"id":"p","jsonrpc":"2.0","method":"ping"}' },
  { "integrated_accounts:delete_mcp_server", function(c, ids) return c.integrated_accounts:delete_mcp_server(ACCOUNT, ids.mcp) end,
    200, "DELETE", "/integrated-account/" .. ACCOUNT .. "/mcp/{mcp}" },

  -- syncs: a job, its runs and cron triggers
  { "sync_jobs:create", function(c) return c.sync_jobs:create { label = "contacts", integration_name = "hubspot" } end,
    201, "POST", "/sync-job", '{"integration_name":"hubspot","label":"contacts"}', keep = "job" },
  { "sync_jobs:get", function(c, ids) return c.sync_jobs:get(ids.job) end, 200, "GET", "/sync-job/{job}" },
  { "sync_jobs:update", function(c, ids) return c.sync_jobs:update(ids.job, { default_runtime_version = 4 }) end,
    200, "PATCH", "/sync-job/{job}", '{"default_runtime_version":4}' },
  { "sync_jobs:list", function(c) return c.sync_jobs:list { integration_name = "hubspot" } end,
    200, "GET", "/sync-job?integration_name=hubspot" },
  { "sync_jobs:each", function(c) return c.sync_jobs:each { integration_name = "hubspot" } end,
    200, "GET", "/sync-job?integration_name=hubspot" },
  { "sync_job_runs:create", function(c, ids)
      return c.sync_job_runs:create { sync_job_id = ids.job, integrated_account_id = ACCOUNT } end,
    201, "POST", "/sync-job-run", '{"integrated_account_id":"' .. ACCOUNT .. '","sync_job_id":"{job}"}', keep = "run" },
  { "sync_job_runs:get", function(c, ids) return c.sync_job_runs:get(ids.run) end, 200, "GET", "/sync-job-run/{run}" },
  { "sync_job_runs:update", function(c, ids) return c.sync_job_runs:update(ids.run, { status = "running" }) end,
    200, "PATCH", "/sync-job-run/{run}", '{"status":"running"}' },
  { "sync_job_runs:list", function(c, ids) return c.sync_job_runs:list { sync_job_id = ids.job } end,
    200, "GET", "/sync-job-run?sync_job_id={job}" },
  { "sync_job_runs:each", function(c, ids) return c.sync_job_runs:each { sync_job_id = ids.job } end,
    200, "GET", "/sync-job-run?sync_job_id={job}" },
  { "sync_job_runs:delete", function(c, ids) return c.sync_job_runs:delete(ids.run) end, 200, "DELETE", "/sync-job-run/{run}" },
  { "sync_job_cron_triggers:create", function(c, ids)
      return c.sync_job_cron_triggers:create { sync_job_id = ids.job, cron_expression = "0 * * * *" } end,
    201, "POST", "/sync-job-cron-trigger", '{"cron_expression":"0 * * * *","sync_job_id":"{job}"}', keep = "trigger" },
  { "sync_job_cron_triggers:get", function(c, ids) return c.sync_job_cron_triggers:get(ids.trigger) end,
    200, "GET", "/sync-job-cron-trigger/{trigger}" },
  { "sync_job_cron_triggers:update", function(c, ids)
      return c.sync_job_cron_triggers:update(ids.trigger, { cron_expression = "30 2 * * *" }) end,
    200, "PATCH", "/sync-job-cron-trigger/{trigger}", '{"cron_expression":"30 2 * * *"}' },
  { "sync_job_cron_triggers:schedule", function(c, ids) return c.sync_job_cron_triggers:schedule(ids.trigger) end,
    200, "POST", "/sync-job-cron-trigger/{trigger}/schedule" },
  { "sync_job_cron_triggers:list", function(c, ids) return c.sync_job_cron_triggers:list { sync_job_id = ids.job } end,
    200, "GET", "/sync-job-cron-trigger?sync_job_id={job}" },
  { "sync_job_cron_triggers:each", function(c, ids) return c.sync_job_cron_triggers:each { sync_job_id = ids.job } end,
    200, "GET", "/sync-job-cron-trigger?sync_job_id={job}" },
  { "sync_job_cron_triggers:delete", function(c, ids) return c.sync_job_cron_triggers:delete(ids.trigger) end,
    200, "DELETE", "/sync-job-cron-trigger/{trigger}" },
  { "sync_jobs:delete", function(c, ids) return c.sync_jobs:delete(ids.job) end, 200, "DELETE", "/sync-job/{job}" },

  -- daemons: a daemon, a job, its runs and cron triggers
  { "daemons:create", function(c) return c.daemons:create { label = "worker", status = "active", group_key = "g1" } end,
    201, "POST", "/daemon", '{"group_key":"g1","label":"worker","status":"active"}', keep = "daemon" },
  { "daemons:get", function(c, ids) return c.daemons:get(ids.daemon) end, 200, "GET", "/daemon/{daemon}" },
  { "daemons:update", function(c, ids) return c.daemons:update(ids.daemon, { status = "stopping" }) end,
    200, "PATCH", "/daemon/{daemon}", '{"status":"stopping"}' },
  { "daemons:list", function(c) return c.daemons:list { group_key = "g1" } end, 200, "GET", "/daemon?group_key=g1" },
  { "daemons:each", function(c) return c.daemons:each { group_key = "g1" } end, 200, "GET", "/daemon?group_key=g1" },
  { "daemon_jobs:create", function(c) return c.daemon_jobs:create { label = "export" } end,
    201, "POST", "/daemon-job", '{"label":"export"}', keep = "daemon_job" },
  { "daemon_jobs:get", function(c, ids) return c.daemon_jobs:get(ids.daemon_job) end, 200, "GET", "/daemon-job/{daemon_job}" },
  { "daemon_jobs:update", function(c, ids) return c.daemon_jobs:update(ids.daemon_job, { label = "export 2" }) end,
    200, "PATCH", "/daemon-job/{daemon_job}", '{"label":"export 2"}' },
  { "daemon_jobs:list", function(c) return c.daemon_jobs:list { label = "export 2" } end,
    200, "GET", "/daemon-job?label=export%202" },
  { "daemon_jobs:each", function(c) return c.daemon_jobs:each { label = "export 2" } end,
    200, "GET", "/daemon-job?label=export%202" },
  { "daemon_job_runs:create", function(c, ids)
      return c.daemon_job_runs:create { daemon_job_id = ids.daemon_job, daemon_id = ids.daemon } end,
    201, "POST", "/daemon-job-run", '{"daemon_id":"{daemon}","daemon_job_id":"{daemon_job}"}', keep = "daemon_run" },
  { "daemon_job_runs:get", function(c, ids) return c.daemon_job_runs:get(ids.daemon_run) end,
    200, "GET", "/daemon-job-run/{daemon_run}" },
  { "daemon_job_runs:update", function(c, ids) return c.daemon_job_runs:update(ids.daemon_run, { status = "running" }) end,
    200, "PATCH", "/daemon-job-run/{daemon_run}", '{"status":"running"}' },
  { "daemon_job_runs:list", function(c, ids) return c.daemon_job_runs:list { daemon_id = ids.daemon } end,
    200, "GET", "/daemon-job-run?daemon_id={daemon}" },
  { "daemon_job_runs:each", function(c, ids) return c.daemon_job_runs:each { daemon_id = ids.daemon } end,
    200, "GET", "/daemon-job-run?daemon_id={daemon}" },
  { "daemon_job_runs:delete", function(c, ids) return c.daemon_job_runs:delete(ids.daemon_run) end,
    200, "DELETE", "/daemon-job-run/{daemon_run}" },
  { "daemon_job_cron_triggers:create", function(c, ids)
      return c.daemon_job_cron_triggers:create { daemon_job_id = ids.daemon_job, cron_expression = "*/5 * * * *" } end,
    201, "POST", "/daemon-job-cron-trigger", '{"cron_expression":"*/5 * * * *","daemon_job_id":"{daemon_job}"}',
    keep = "daemon_trigger" },
  { "daemon_job_cron_triggers:get", function(c, ids) return c.daemon_job_cron_triggers:get(ids.daemon_trigger) end,
    200, "GET", "/daemon-job-cron-trigger/{daemon_trigger}" },
  { "daemon_job_cron_triggers:update", function(c, ids)
      return c.daemon_job_cron_triggers:update(ids.daemon_trigger, { cron_expression = "0 0 * * *" }) end,
    200, "PATCH", "/daemon-job-cron-trigger/{daemon_trigger}", '{"cron_expression":"0 0 * * *"}' },
  { "daemon_job_cron_triggers:schedule", function(c, ids) return c.daemon_job_cron_triggers:schedule(ids.daemon_trigger) end,
    200, "POST", "/daemon-job-cron-trigger/{daemon_trigger}/schedule" },
  { "daemon_job_cron_triggers:list", function(c) return c.daemon_job_cron_triggers:list() end,
    200, "GET", "/daemon-job-cron-trigger" },
  { "daemon_job_cron_triggers:each", function(c) return c.daemon_job_cron_triggers:each() end,
    200, "GET", "/daemon-job-cron-trigger" },
  { "daemon_job_cron_triggers:delete", function(c, ids) return c.daemon_job_cron_triggers:delete(ids.daemon_trigger) end,
    200, "DELETE", "/daemon-job-cron-trigger/{daemon_trigger}" },
  { "daemon_jobs:delete", function(c, ids) return c.daemon_jobs:delete(ids.daemon_job) end,
    200, "DELETE", "/daemon-job/{daemon_job}" },
  { "daemons:delete", function(c, ids) return c.daemons:delete(ids.daemon) end, 200, "DELETE", "/daemon/{daemon}" },

  -- datastores, documentation, logs
  { "datastores:create", function(c) return c.datastores:create { type = "s3", config = { bucket = "b1" } } end,
    201, "POST", "/datastore", '{"config":{"bucket":"b1"},"type":"s3"}', keep = "datastore" },
  { "datastores:get", function(c, ids) return c.datastores:get(ids.datastore) end, 200, "GET", "/datastore/{datastore}" },
  { "datastores:update", function(c, ids) return c.datastores:update(ids.datastore, { config = { region = "eu-west-1" } }) end,
    200, "PATCH", "/datastore/{datastore}", '{"config":{"region":"eu-west-1"}}' },
  { "datastores:list", function(c) return c.datastores:list { type = "s3" } end, 200, "GET", "/datastore?type=s3" },
  { "datastores:each", function(c) return c.datastores:each { type = "s3" } end, 200, "GET", "/datastore?type=s3" },
  { "datastores:test", function(c, ids) return c.datastores:test(ids.datastore, "uploadObject", { key = "k" }) end,
    200, "POST", "/datastore/{datastore}/test/uploadObject", '{"key":"k"}' },
  { "datastores:delete", function(c, ids) return c.datastores:delete(ids.datastore) end,
    200, "DELETE", "/datastore/{datastore}" },
  { "documentation:create", function(c)
      return c.documentation:create { entity_type = "integration", entity_id = "e1", type = "readme", content = "# Hi" } end,
    201, "POST", "/documentation", '{"content":"# Hi","entity_id":"e1","entity_type":"integration","type":"readme"}',
    keep = "doc" },
  { "documentation:get", function(c, ids) return c.documentation:get(ids.doc) end, 200, "GET", "/documentation/{doc}" },
  { "documentation:update", function(c, ids) return c.documentation:update(ids.doc, { content = "# Hello" }) end,
    200, "PATCH", "/documentation/{doc}", '{"content":"# Hello"}' },
  { "documentation:list", function(c) return c.documentation:list { entity_id = "e1" } end,
    200, "GET", "/documentation?entity_id=e1" },
  { "documentation:each", function(c) return c.documentation:each { entity_id = "e1" } end,
    200, "GET", "/documentation?entity_id=e1" },
  { "documentation:delete", function(c, ids) return c.documentation:delete(ids.doc) end,
    200, "DELETE", "/documentation/{doc}" },
  { "logs:list", function(c) return c.logs:list { log_type = "webhook", limit = 5 } end,
    200, "GET", "/log?limit=5&log_type=webhook" },
  { "logs:each", function(c) return c.logs:each { log_type = "webhook", limit = 5 } end,
    200, "GET", "/log?limit=5&log_type=webhook" },

  -- webhooks; their test delivery goes nowhere here (spec/ngx_spec.lua has one delivered)
  { "webhooks:create", function(c)
      return c.webhooks:create { target_url = DEAD_URL, event_types = { "integrated_account:active" } } end,
    201, "POST", "/webhook", '{"event_types":["integrated_account:active"],"target_url":"' .. DEAD_URL .. '"}',
    keep = "webhook" },
  { "webhooks:get", function(c, ids) return c.webhooks:get(ids.webhook) end, 200, "GET", "/webhook/{webhook}" },
  { "webhooks:update", function(c, ids) return c.webhooks:update(ids.webhook, { is_active = false }) end,
    200, "PATCH", "/webhook/{webhook}", '{"is_active":false}' },
  { "webhooks:list", function(c) return c.webhooks:list { is_active = false } end, 200, "GET", "/webhook?is_active=false" },
  { "webhooks:each", function(c) return c.webhooks:each { is_active = false } end, 200, "GET", "/webhook?is_active=false" },
  { "webhooks:test", function(c, ids) return c.webhooks:test(ids.webhook, nil, NO_RETRY) end,
    502, "POST", "/webhook/test", '{"id":"{webhook}"}' },
  { "webhooks:delete", function(c, ids) return c.webhooks:delete(ids.webhook) end, 200, "DELETE", "/webhook/{webhook}" },
  { "integrated_account_webhooks:process", function(c)
      return c.integrated_account_webhooks:process(ACCOUNT, { event = "deal.updated" }) end,
    200, "POST", "/integrated-account-webhook/" .. ACCOUNT, '{"event":"deal.updated"}' },
  { "environment_integration_webhooks:process", function(c)
      return c.environment_integration_webhooks:process(INSTALLED, { event = "app.uninstalled" }) end,
    200, "POST", "/environment-integration-webhook/" .. INSTALLED, '{"event":"app.uninstalled"}' },

  -- workflows and their runs, alarms, static gates
  { "workflows:create", function(c)
      return c.workflows:create { trigger_name = "integrated_account:active", config = { steps = {} } } end,
    201, "POST", "/workflow", '{"config":{"steps":{}},"trigger_name":"integrated_account:active"}', keep = "workflow" },
  { "workflows:get", function(c, ids) return c.workflows:get(ids.workflow) end, 200, "GET", "/workflow/{workflow}" },
  { "workflows:update", function(c, ids) return c.workflows:update(ids.workflow, { trigger_name = "integrated_account:created" }) end,
    200, "PATCH", "/workflow/{workflow}", '{"trigger_name":"integrated_account:created"}' },
  { "workflows:list", function(c) return c.workflows:list() end, 200, "GET", "/workflow" },
  { "workflows:each", function(c) return c.workflows:each() end, 200, "GET", "/workflow" },
  { "workflows:delete", function(c, ids) return c.workflows:delete(ids.workflow) end, 200, "DELETE", "/workflow/{workflow}" },
  { "workflow_runs:list", function(c) return c.workflow_runs:list() end, 200, "GET", "/workflow-run" },
  { "workflow_runs:each", function(c) return c.workflow_runs:each() end, 200, "GET", "/workflow-run" },
  -- Truto starts runs itself: there is none to read
  { "workflow_runs:get", function(c) return c.workflow_runs:get("wr-1") end, 404, "GET", "/workflow-run/wr-1" },
  { "workflow_runs:delete", function(c) return c.workflow_runs:delete("wr-1") end, 404, "DELETE", "/workflow-run/wr-1" },
  { "alarms:create", function(c) return c.alarms:create { alarm_type = "duration", entity_id = "e1", duration = 60 } end,
    201, "POST", "/alarm", '{"alarm_type":"duration","duration":60,"entity_id":"e1"}', keep = "alarm" },
  { "alarms:get", function(c, ids) return c.alarms:get(ids.alarm) end, 200, "GET", "/alarm/{alarm}" },
  { "alarms:update", function(c, ids) return c.alarms:update(ids.alarm, { duration = 120 }) end,
    200, "PATCH", "/alarm/{alarm}", '{"duration":120}' },
  { "alarms:list", function(c) return c.alarms:list { entity_id = "e1" } end, 200, "GET", "/alarm?entity_id=e1" },
  { "alarms:each", function(c) return c.alarms:each { entity_id = "e1" } end, 200, "GET", "/alarm?entity_id=e1" },
  { "alarms:delete", function(c, ids) return c.alarms:delete(ids.alarm) end, 200, "DELETE", "/alarm/{alarm}" },
  { "static_gates:create", function(c) return c.static_gates:create { name = "egress", domain = "gate.example.com" } end,
    201, "POST", "/static-gate", '{"domain":"gate.example.com","name":"egress"}', keep = "gate" },
  { "static_gates:get", function(c, ids) return c.static_gates:get(ids.gate) end, 200, "GET", "/static-gate/{gate}" },
  { "static_gates:update", function(c, ids) return c.static_gates:update(ids.gate, { name = "egress 2" }) end,
    200, "PATCH", "/static-gate/{gate}", '{"name":"egress 2"}' },
  { "static_gates:list", function(c) return c.static_gates:list() end, 200, "GET", "/static-gate" },
  { "static_gates:each", function(c) return c.static_gates:each() end, 200, "GET", "/static-gate" },
  { "static_gates:delete", function(c, ids) return c.static_gates:delete(ids.gate) end, 200, "DELETE", "/static-gate/{gate}" },

  -- Truto's server-side batch, and ping
  { "batch_requests:create", function(c)
      return c.batch_requests:create { integrated_account_id = ACCOUNT,
        resources = { { resource = "crm/contacts", method = "list", query = { limit = 1 } } } } end,
    200, "POST", "/batch-request", '{"integrated_account_id":"' .. ACCOUNT .. '","resources":[{"method":"list",'
      .. '"query":{"limit":1},"resource":"crm/contacts"}]}' },
  { "ping", function(c) return c:ping() end, 200, "GET", "/ping" },
}
_M.STEPS = STEPS

-- each(): the iterator's first record (or its error), as a call's pair.
local function first_of(iterator)
  local record, err = iterator()
  if record == false then return nil, err end
  return record, { status = 200 }
end

--- Makes every call with client; returns the outcomes (each call's label and
-- HTTP status, or its error kind when there was no status) and the ids the
-- steps kept.
---@param client truto.Client
---@return table outcomes { { label =, status = } ... }
---@return table<string, string> ids
function _M.run(client)
  local outcomes, ids = {}, {}
  for _, step in ipairs(STEPS) do
    local result, response = step[2](client, ids)
    if type(result) == "function" then result, response = first_of(result) end
    outcomes[#outcomes + 1] = { label = step[1], status = response.status or response.kind }
    if step.keep and type(result) == "table" then ids[step.keep] = result.id end
    if step.keep_token and type(result) == "table" then ids[step.keep_token] = result.token end
  end
  return outcomes, ids
end

--- The outcomes run() must give.
---@return table
function _M.expected_outcomes()
  local list = {}
  for i, step in ipairs(STEPS) do list[i] = { label = step[1], status = step[3] } end
  return list
end

local function fill(text, ids)
  return (text:gsub("{([%w_]+)}", function(name) return ids[name] or ("{" .. name .. "}") end))
end

--- The requests the emulator must have logged, from run()'s ids: method,
-- URI, body, the headers that say what the body is, the token and the
-- product in User-Agent.  A JSON-RPC id,
-- which the client numbers, is "#".
---@param ids table<string, string>
---@param token string the client's API token
---@param version string truto.VERSION
---@return table[]
function _M.expected(ids, token, version)
  local list = {}
  for i, step in ipairs(STEPS) do
    local body = step[6] and fill(step[6], ids) or ""
    local writes = step[4] == "POST" or step[4] == "PATCH"
    list[i] = { label = step[1], method = step[4], uri = fill(step[5], ids), body = body,
                content_type = step[6] and "application/json" or nil, idempotency_key = writes,
                authorization = "Bearer " .. token, user_agent = "lua-truto/" .. version }
  end
  return list
end

--- The same fields of the emulator's request log, labelled in order.
---@param log table[]
---@return table[]
function _M.received(log)
  local list = {}
  for i, entry in ipairs(log) do
    local step = STEPS[i]
    list[i] = { label = step and step[1], method = entry.method, uri = entry.uri,
                body = (entry.body or ""):gsub('^{"id":%d+,"jsonrpc"', '{"id":#,"jsonrpc"'),
                content_type = entry.headers["content-type"], idempotency_key = entry.headers["idempotency-key"] ~= nil,
                authorization = entry.headers.authorization,
                user_agent = (entry.headers["user-agent"] or ""):match("^%S*") }
  end
  return list
end

return _M

-- Truto's platform (admin) API: every resource declared once in RESOURCES
-- (path -> its standard methods, required create fields, defaults, hidden
-- fields, extra routes), served by one generic, stateful store.  Facts and
-- sources: reference/truto-platform.md.
--   list   GET    /path          {result, next_cursor, limit}; equality filters on query fields
--   get    GET    /path/{id}     the object, or 404 {statusCode, error, message}
--   create POST   /path          201 with id, environment_id, created_at, updated_at
--   update PATCH  /path/{id}     fields merged (objects deep-merged, null removes)
--   delete DELETE /path/{id}     {id}
local json = require "truto_emulator.json"
local store = require "truto_emulator.store"
local request = require "truto_emulator.request"
local response = require "truto_emulator.response"
local tools = require "truto_emulator.tools"
local webhook_delivery = require "truto_emulator.webhook_delivery"
local batch_request = require "truto_emulator.batch_request"
local mcp = require "truto_emulator.mcp"

local _M = {}

local ngx = ngx

local DEFAULT_LIMIT = 100
local CRUD = "list get create update delete"
local PAGING = { limit = true, next_cursor = true }
-- Set by the server: a body cannot choose them.
local SERVER_FIELDS = { id = true, environment_id = true, team_id = true, created_at = true, updated_at = true }
-- The fields PATCH /integrated-account/{id}/credentials accepts (Truto's docs);
-- responses never show them.
local CREDENTIAL_FIELDS = {}
for name in ([[oauth api_key api_token token password client_secret application_key app_key app_secret
               access_token api_secret auth_code webhook_secret webhook_password token_secret]]):gmatch("%S+") do
  CREDENTIAL_FIELDS[name] = true
end

local SUCCESS = { success = true }

-- Helpers ----------------------------------------------------------------------

local body_of = request.json_object_body

local function missing(value)
  return value == nil or value == json.null or value == ""
end

local function not_found(label, id)
  return response.error(404, label .. " " .. tostring(id) .. " not found")
end

local function bad_request(message)
  return response.error(400, message)
end

-- A page of records: {result, next_cursor, limit}.
local function page_of(records, query)
  local offset, limit = request.page_window(query, DEFAULT_LIMIT)
  if not offset then return limit end
  local result = json.array()
  for i = offset + 1, math.min(#records, offset + limit) do result[#result + 1] = records[i] end
  return response.json(200, {
    result = result, next_cursor = request.next_cursor(offset, #result, #records), limit = limit,
  })
end

-- A query value against a record field: scalars compare as their JSON text
-- (is_active=true), a nested object by its name (integration=hubspot).
local function field_matches(value, wanted)
  if type(value) == "table" and not json.is_list(value) then value = value.name end
  if type(value) == "string" then return value == wanted end
  if type(value) == "number" or type(value) == "boolean" then return json.encode(value) == wanted end
  return false
end

local function matches(record, filters)
  for key, wanted in pairs(filters) do
    if not field_matches(record[key], wanted) then return false end
  end
  return true
end

local function collection_of(resource)
  return resource.collection and resource.collection() or store.platform(resource.path, resource.key_field)
end

-- What a response shows of a record: hidden fields only in the create answer.
local function view(resource, record, reveal)
  local out = json.copy(record)
  if not reveal then
    for _, field in ipairs(resource.hidden or {}) do out[field] = nil end
  end
  if resource.view then resource.view(out) end
  return out
end

local function find(resource, id, scope)
  local record = store.get(collection_of(resource), id)
  if record and scope and not matches(record, scope) then record = nil end
  return record
end

-- Validation of a create body: required fields (a list; a nested list is
-- "one of these"), fields that exclude each other, references to records.
local function invalid(resource, body)
  local absent = {}
  for _, field in ipairs(resource.required or {}) do
    if type(field) == "table" then
      local any = false
      for _, alternative in ipairs(field) do any = any or not missing(body[alternative]) end
      if not any then absent[#absent + 1] = table.concat(field, " or ") end
    elseif missing(body[field]) then
      absent[#absent + 1] = field
    end
  end
  if #absent > 0 then return bad_request("Missing required fields: " .. table.concat(absent, ", ")) end
  local exclusive = resource.exclusive
  if exclusive and not missing(body[exclusive[1]]) and not missing(body[exclusive[2]]) then
    return bad_request(exclusive[1] .. " and " .. exclusive[2] .. " cannot both be set")
  end
  for field, path in pairs(resource.references or {}) do
    local id = body[field]
    if not missing(id) and not store.get(_M.collection(path), tostring(id)) then
      return not_found(path, id)
    end
  end
  return nil
end

-- Standard methods ---------------------------------------------------------------

local function list(ctx, resource, scope)
  for _, field in ipairs(resource.required_query or {}) do
    if missing(ctx.query[field]) then return bad_request("Missing required query parameter: " .. field) end
  end
  local filters = {}
  for key, value in pairs(ctx.query) do
    if not PAGING[key] and type(value) == "string" then filters[key] = value end
  end
  for key, value in pairs(scope or {}) do filters[key] = value end
  local collection, records = collection_of(resource), {}
  for _, id in ipairs(collection.order) do
    local record = collection.by_id[id]
    if matches(record, filters) then records[#records + 1] = view(resource, record) end
  end
  return page_of(records, ctx.query)
end

local function create(ctx, resource, scope)
  local body, bad = body_of(ctx)
  if not body then return bad end
  local refused = invalid(resource, body)
  if refused then return refused end
  if resource.create then return resource.create(ctx, body) end
  local collection = collection_of(resource)
  if resource.unique then
    for _, id in ipairs(collection.order) do
      local existing = collection.by_id[id]
      if existing[resource.unique] == body[resource.unique] then return response.json(200, view(resource, existing)) end
    end
  end
  local now = request.now_iso()
  local record = json.copy(resource.defaults or {})
  for field, value in pairs(body) do
    if not SERVER_FIELDS[field] and value ~= json.null then record[field] = json.copy(value) end
  end
  for field, value in pairs(scope or {}) do record[field] = value end
  record.id = store.new_uuid()
  if resource.team_scoped then
    record.team_id = store.environment().team_id
  else
    record.environment_id = store.environment().id
  end
  record.created_at, record.updated_at = now, now
  if resource.on_create then
    local failure = resource.on_create(record, body, ctx)
    if failure then return failure end
  end
  store.insert(collection, record)
  return response.json(201, view(resource, record, true))
end

local function update(ctx, resource, id, scope)
  local record = find(resource, id, scope)
  if not record then return not_found(resource.path, id) end
  local body, bad = body_of(ctx)
  if not body then return bad end
  for field in pairs(SERVER_FIELDS) do body[field] = nil end
  for field in pairs(scope or {}) do body[field] = nil end
  store.deep_merge(record, body)
  record.updated_at = request.now_iso()
  return response.json(200, view(resource, record))
end

local function delete(resource, id, scope)
  local record = find(resource, id, scope)
  if not record then return not_found(resource.path, id) end
  if resource.on_delete then return response.json(200, view(resource, resource.on_delete(record))) end
  store.remove(collection_of(resource), id)
  return response.json(200, { id = id })
end

-- The standard method a request names, or nil when it names none.
local function standard(ctx, resource, rest, scope)
  if #rest > 1 or rest[1] == "" then return nil end
  local id, method = rest[1], ctx.method
  local verb
  if not id then
    verb = (method == "GET" and "list") or (method == "POST" and "create") or nil
  else
    verb = ({ GET = "get", PATCH = "update", DELETE = "delete" })[method]
  end
  if not verb then return nil end
  if not resource.methods[verb] then
    return response.error(405, "Method " .. method .. " not allowed on " .. ctx.raw_path)
  end
  if verb == "list" then return list(ctx, resource, scope) end
  if verb == "create" then return create(ctx, resource, scope) end
  if verb == "update" then return update(ctx, resource, id, scope) end
  if verb == "delete" then return delete(resource, id, scope) end
  local record = find(resource, id, scope)
  if not record then return not_found(resource.path, id) end
  return response.json(200, view(resource, record))
end

-- Resources ----------------------------------------------------------------------

local RESOURCES

local function account_view(account)
  if type(account.context) == "table" then
    for field in pairs(CREDENTIAL_FIELDS) do account.context[field] = nil end
  end
end

-- An extra whose body names an integrated account: 400 without it, 404 unknown.
local function account_action(field, answer)
  return function(ctx)
    local body, bad = body_of(ctx)
    if not body then return bad end
    local id = body[field]
    if missing(id) then return bad_request("Missing required fields: " .. field) end
    if not store.get(store.accounts(), tostring(id)) then return not_found("integrated-account", id) end
    return response.json(200, answer(tostring(id)))
  end
end

local function record_action(path, action)
  return function(ctx, params)
    local record = store.get(_M.collection(path), params.id)
    if not record then return not_found(path, params.id) end
    return action(ctx, record, params)
  end
end

local function succeed() return response.json(200, SUCCESS) end

-- An installation (environment-integration, environment-unified-model): it
-- nests the record it installs (field "x_id" -> "x"); installing twice
-- answers the first installation (Truto: POST is idempotent).
local function installation(field, target_path, defaults)
  local nested = field:gsub("_id$", "")
  return {
    methods = CRUD, required = { field }, references = { [field] = target_path }, unique = field, defaults = defaults,
    on_create = function(record)
      record[nested] = json.copy(store.get(_M.collection(target_path), record[field]))
    end,
  }
end

-- GET and PATCH /integrated-account/me: the account of an integrated-account token.
local function account_me(ctx)
  local id = ctx.token_entry.integrated_account_id
  if not id then return bad_request("/integrated-account/me needs an integrated-account token") end
  return standard(ctx, RESOURCES["integrated-account"], { id })
end

local function update_credentials(ctx, params)
  local account = store.get(store.accounts(), params.id)
  if not account then return not_found("integrated-account", params.id) end
  local body, bad = body_of(ctx)
  if not body then return bad end
  for field in pairs(body) do
    if not CREDENTIAL_FIELDS[field] then return bad_request("Not a credential field: " .. field) end
  end
  if type(account.context) ~= "table" then account.context = {} end
  store.deep_merge(account.context, body)
  account.updated_at = request.now_iso()
  return response.json(200, view(RESOURCES["integrated-account"], account))
end

local function account_tools(ctx, params)
  local account, state = store.account(params.id)
  if not account then return not_found("integrated-account", params.id) end
  return page_of(tools.list(account, state, ctx.query.methods), ctx.query)
end

-- /integrated-account/{id}/mcp[/{mcp_id}]: the generic methods over the MCP
-- servers of one account.
local function account_mcp(ctx, params)
  if not store.get(store.accounts(), params.id) then return not_found("integrated-account", params.id) end
  return standard(ctx, RESOURCES["mcp-server"], params.rest, { integrated_account_id = params.id })
end

local function webhook_test(ctx)
  local body, bad = body_of(ctx)
  if not body then return bad end
  if missing(body.id) then return bad_request("Missing required fields: id") end
  local webhook = store.get(_M.collection("webhook"), tostring(body.id))
  if not webhook then return not_found("webhook", body.id) end
  local event = json.encode({
    id = store.new_uuid(), event = "test", payload = { foo = "bar" },
    environment_id = webhook.environment_id, webhook_id = webhook.id, created_at = request.now_iso(),
  })
  local status, err = webhook_delivery.post(tostring(webhook.target_url), webhook.secret, event)
  if not status then return response.error(502, "Webhook test failed: " .. err) end
  if status < 200 or status > 299 then
    return response.error(502, "Webhook test failed: " .. webhook.target_url .. " answered " .. status)
  end
  return response.json(200, SUCCESS)
end

local function datastore_test(_, datastore)
  if datastore.type == "mongo_data_api" or datastore.type == "qdrant" then
    return bad_request("Testing is not supported for datastores of type " .. datastore.type)
  end
  return response.json(200, SUCCESS)
end

-- path -> {
--   methods   the standard methods offered
--   required  create fields ({a, b} in the list: one of them), exclusive: two fields not both set
--   references field -> the path of the record it must name
--   defaults, hidden (shown only by create), view(record) (alters a response's copy)
--   unique    a field: creating a second record with the same value answers the first (200)
--   team_scoped  created records get team_id instead of environment_id
--   create(ctx, body), on_create(record, body, ctx) -> error response?, on_delete(record) -> record
--   extras  { {HTTP method, "segments after the path" (":x" binds x; "*" the rest), handler(ctx, params)} }
--   public  no API token (the MCP endpoint: its token is in the path)
-- }
RESOURCES = {
  ["integrated-account"] = {
    methods = CRUD, collection = store.accounts, view = account_view,
    required = { "tenant_id", "environment_integration_id", "context", "authentication_method" },
    references = { environment_integration_id = "environment-integration" },
    defaults = { status = "active", is_sandbox = false, region = "wnam" },
    on_create = function(record)
      local installed = store.get(_M.collection("environment-integration"), record.environment_integration_id)
      record.environment_integration = json.copy(installed)
      record.integration = json.copy(installed.integration)
    end,
    extras = {
      { "GET", "me", account_me }, { "PATCH", "me", account_me },
      { "POST", "refresh-credentials", account_action("id", function() return SUCCESS end) },
      { "POST", "run-post-install-actions", account_action("id", function() return SUCCESS end) },
      { "POST", "token", account_action("integrated_account_id", function(id)
        local token = store.new_uuid()
        store.issue_token(token, id)
        return { integrated_account_token = token }
      end) },
      { "GET", ":id/tools", account_tools },
      { "PATCH", ":id/credentials", update_credentials },
      { "GET", ":id/mcp/*", account_mcp }, { "POST", ":id/mcp/*", account_mcp },
      { "PATCH", ":id/mcp/*", account_mcp }, { "DELETE", ":id/mcp/*", account_mcp },
    },
  },
  ["mcp-server"] = { -- reached only through /integrated-account/{id}/mcp
    methods = CRUD, hidden = { "token", "url" },
    defaults = { config = {} },
    on_create = function(record, body)
      if missing(body.name) then record.name = "MCP server" end
      if type(record.config) ~= "table" or json.is_list(record.config) and next(record.config) ~= nil then
        return bad_request("config must be an object")
      end
      local account, state = store.account(record.integrated_account_id)
      if #tools.list(account, state, record.config.methods) == 0 then
        return bad_request("No tools match the MCP server's config")
      end
      record.token = (store.new_uuid():gsub("-", ""))
      record.url = ngx.var.scheme .. "://" .. ngx.var.http_host .. "/mcp/" .. record.token
      record.environment_id = nil
      record.expires_at = record.expires_at or json.null
      return nil
    end,
  },
  ["integration"] = { methods = CRUD, required = { "name", "config" }, team_scoped = true },
  ["environment"] = { methods = "list get update" },
  ["environment-integration"] = installation("integration_id", "integration",
                                              { is_enabled = true, show_in_catalog = true, override = {} }),
  ["unified-model"] = { methods = CRUD, required = { "name", "category", "resources" }, team_scoped = true },
  ["environment-unified-model"] = installation("unified_model_id", "unified-model"),
  ["team"] = { methods = "list get update" },
  ["user"] = { methods = "list get" },
  ["api-token"] = { methods = "list get" },
  ["category"] = { methods = "list", key_field = "name" },
  ["link-token"] = {
    methods = "create", required = { { "tenant_id", "integrated_account_id" } },
    references = { integrated_account_id = "integrated-account" },
    -- Truto answers only the token (single use, never listed).
    create = function() return response.json(201, { link_token = store.new_uuid() }) end,
  },
  ["sync-job"] = { methods = CRUD, defaults = { label = "Untitled", default_runtime_version = 3 } },
  ["sync-job-run"] = {
    methods = CRUD, required = { "sync_job_id", "integrated_account_id" },
    references = { sync_job_id = "sync-job", integrated_account_id = "integrated-account" },
    exclusive = { "webhook_id", "daemon_group_key" }, defaults = { status = "created" },
  },
  ["sync-job-cron-trigger"] = {
    methods = CRUD, required = { "sync_job_id", "cron_expression" },
    references = { sync_job_id = "sync-job", integrated_account_id = "integrated-account" },
    exclusive = { "webhook_id", "daemon_group_key" },
    extras = { { "POST", ":id/schedule", record_action("sync-job-cron-trigger", succeed) } },
  },
  ["daemon"] = { methods = CRUD, required = { "label", "status", "group_key" } },
  ["daemon-job"] = { methods = CRUD },
  ["daemon-job-run"] = {
    methods = CRUD, required = { "daemon_job_id", "daemon_id" },
    references = { daemon_job_id = "daemon-job", daemon_id = "daemon" },
    on_create = function(record) record.status = "created" end,
    -- Deleting a run stops it: Truto answers the run.
    on_delete = function(record)
      record.status = "stopped"
      record.updated_at = request.now_iso()
      return record
    end,
  },
  ["daemon-job-cron-trigger"] = {
    methods = CRUD, required = { "daemon_job_id", "cron_expression" },
    references = { daemon_job_id = "daemon-job" },
    extras = { { "POST", ":id/schedule", record_action("daemon-job-cron-trigger", succeed) } },
  },
  ["datastore"] = {
    methods = CRUD, required = { "type", "config" },
    extras = { { "POST", ":id/test/:method", record_action("datastore", datastore_test) } },
  },
  ["documentation"] = { methods = CRUD },
  ["log"] = { methods = "list", required_query = { "log_type" } },
  ["webhook"] = {
    methods = CRUD, required = { "target_url" }, defaults = { is_active = true }, hidden = { "secret" },
    on_create = function(record) record.secret = store.new_uuid() end,
    extras = { { "POST", "test", webhook_test } },
  },
  ["workflow"] = { methods = CRUD, required = { "trigger_name", "config" } },
  ["workflow-run"] = { methods = "list get delete" },
  ["alarm"] = { methods = CRUD, required = { "alarm_type", "entity_id" } },
  ["static-gate"] = { methods = CRUD, required = { "name", "domain" } },
  ["sandbox-integrated-account"] = {
    methods = "list get create delete", required = { "id" }, references = { id = "integrated-account" },
    on_create = function(record, body)
      record.integrated_account = view(RESOURCES["integrated-account"], store.get(store.accounts(), body.id))
    end,
  },
  ["integrated-account-webhook"] = { methods = "", extras = {
    { "POST", ":id", record_action("integrated-account", succeed) } } },
  ["environment-integration-webhook"] = { methods = "", extras = {
    { "POST", ":id", record_action("environment-integration", succeed) } } },
  ["batch-request"] = { methods = "", extras = { { "POST", "", function(ctx) return batch_request.handle(ctx) end } } },
  -- No source documents GET /ping (the Python SDK calls it): a small JSON answer.
  ["ping"] = { methods = "", extras = { { "GET", "", function() return response.json(200, {}) end } } },
  ["mcp"] = { methods = "", public = true, extras = { { "POST", ":token", function(ctx, params)
    return mcp.handle(ctx, params.token)
  end } } },
}

for path, resource in pairs(RESOURCES) do
  resource.path = path
  local set = {}
  for method in resource.methods:gmatch("%S+") do set[method] = true end
  resource.methods = set
  for _, extra in ipairs(resource.extras or {}) do
    local pattern = {}
    for segment in extra[2]:gmatch("[^/]+") do pattern[#pattern + 1] = segment end
    extra.pattern = pattern
  end
end

-- The parameters of rest under an extra's pattern, or nil when it does not match.
local function match(pattern, rest)
  local params = {}
  for i, segment in ipairs(pattern) do
    if segment == "*" then
      params.rest = { unpack(rest, i) }
      return params
    end
    local value = rest[i]
    if value == nil or value == "" then return nil end
    local name = segment:match("^:(.+)$")
    if name then params[name] = value elseif segment ~= value then return nil end
  end
  if #rest ~= #pattern then return nil end
  return params
end

--- The collection of a platform path (for the modules that read others' records).
---@param path string
---@return table collection
function _M.collection(path)
  return collection_of(RESOURCES[path])
end

--- Whether the path's first segment is a platform resource.
---@param first_segment string?
---@return boolean
function _M.owns(first_segment)
  return first_segment ~= nil and RESOURCES[first_segment] ~= nil
end

--- Whether the resource is reached without an API token (its own token is in the path).
---@param first_segment string
---@return boolean
function _M.public(first_segment)
  local resource = RESOURCES[first_segment]
  return resource ~= nil and resource.public == true
end

--- Answers a platform request.  ctx: method, raw_path, segments (all of the
-- path's), query, body_text, headers, token_entry (nil on a public route).
---@param ctx table
---@return table response
function _M.handle(ctx)
  local resource = RESOURCES[ctx.segments[1]]
  local rest = { unpack(ctx.segments, 2) }
  if ctx.token_entry and ctx.token_entry.integrated_account_id
      and not (resource.path == "integrated-account" and rest[1] == "me" and #rest == 1) then
    return response.error(403, "An integrated-account token cannot be used on " .. ctx.method .. " " .. ctx.raw_path)
  end
  local answer
  for _, extra in ipairs(resource.extras or {}) do
    if extra[1] == ctx.method then
      local params = match(extra.pattern, rest)
      if params then
        answer = extra[3](ctx, params)
        break
      end
    end
  end
  -- Nested routes (…/mcp/a/b) may name no method either.
  return answer or standard(ctx, resource, rest)
    or response.error(404, "Route not found: " .. ctx.method .. " " .. ctx.raw_path)
end

return _M

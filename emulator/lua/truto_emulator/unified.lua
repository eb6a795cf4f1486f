-- /unified/{model}/{resource}[/{id} | /{method} | /meta/{method}]
local json = require "truto_emulator.json"
local store = require "truto_emulator.store"
local stats = require "truto_emulator.stats"
local formats = require "truto_emulator.formats"
local request = require "truto_emulator.request"
local response = require "truto_emulator.response"

local _M = {}

local READ_ONLY_FIELDS = { id = true, remote_data = true, updated_at = true }
local STANDARD_METHODS = { list = true, get = true, create = true, update = true, delete = true }

local function not_found(id)
  -- The record lookup happens at the provider, so Truto reports it as remote.
  return response.remote_error(404, "Record not found: " .. id,
    { status = "error", message = "resource not found", category = "OBJECT_NOT_FOUND" },
    { remote_error = { description = "The remote API could not find the requested record." } })
end

local function shaped(status, record, options)
  if options.format == "stream" then
    return {
      status = status, content_type = "application/x-ndjson",
      chunks = formats.stream_chunks({ record }, options),
    }
  end
  return response.json(status, formats.record(record, options))
end

local function list(ctx, collection, options)
  if options.format == "stream" then
    -- A stream carries every record, one JSON document per line, unpaginated.
    local records = store.slice(collection, 0, store.size(collection))
    return { status = 200, content_type = "application/x-ndjson", chunks = formats.stream_chunks(records, options) }
  end
  local offset, limit = request.page_window(ctx.query)
  if not offset then return limit end
  local page, total = store.slice(collection, offset, limit)
  return response.json(200, request.page_envelope(formats.records(page, options), offset, limit, #page, total))
end

-- Copies writable body fields into the record; JSON null removes a field.
local function apply_fields(record, body)
  for field, value in pairs(body) do
    if not READ_ONLY_FIELDS[field] then
      if value == json.null then record[field] = nil else record[field] = json.copy(value) end
    end
  end
end

local function apply_remote_data(collection, record, body)
  store.sync_remote_data(collection.spec, record)
  if type(body.remote_data) == "table" and not json.is_list(body.remote_data) then
    store.deep_merge(record.remote_data, body.remote_data)
  end
end

local function create(ctx, name, collection, options)
  local body, bad = request.json_object_body(ctx)
  if not body then return bad end
  local missing = json.array()
  for _, field in ipairs(collection.spec.required_on_create or {}) do
    if body[field] == nil or body[field] == json.null or body[field] == "" then missing[#missing + 1] = field end
  end
  if #missing > 0 then
    return response.remote_error(400, "Missing required body fields: " .. table.concat(missing, ", "),
      { status = "error", message = "Property values were not valid", category = "VALIDATION_ERROR",
        errors = missing },
      { missing_required_body_fields = {
          description = "These fields are required by the integration when creating this resource.",
          value = missing } })
  end
  local now = request.now_iso()
  local record = { id = store.new_id(), created_at = now, updated_at = now }
  apply_fields(record, body)
  record.updated_at = now
  apply_remote_data(collection, record, body)
  store.insert(collection, record)
  stats.count_write(ctx.account_id, name, record.id)
  return shaped(201, record, options)
end

local function update(ctx, name, collection, id, options)
  local record = store.get(collection, id)
  if not record then return not_found(id) end
  local body, bad = request.json_object_body(ctx)
  if not body then return bad end
  apply_fields(record, body)
  record.updated_at = request.now_iso()
  apply_remote_data(collection, record, body)
  stats.count_write(ctx.account_id, name, id)
  return shaped(200, record, options)
end

local function delete(ctx, name, collection, id)
  if not store.remove(collection, id) then return not_found(id) end
  stats.count_write(ctx.account_id, name, id)
  return response.json(200, { id = id })
end

-- Custom methods ---------------------------------------------------------------

local function ids_from(body)
  local ids = body.ids
  if type(ids) ~= "table" or not json.is_list(ids) or #ids == 0 then
    return nil, response.remote_error(400, "Missing required body fields: ids",
      { status = "error", message = "ids is required" },
      { missing_required_body_fields = { description = "ids is required by this method.",
                                         value = json.array({ "ids" }) } })
  end
  return ids
end

local CUSTOM_METHODS = {}

-- merge: the first id survives; the others are removed.
function CUSTOM_METHODS.merge(ctx, name, collection, body)
  local ids, bad = ids_from(body)
  if not ids then return bad end
  for _, id in ipairs(ids) do
    if not store.get(collection, tostring(id)) then return not_found(tostring(id)) end
  end
  local survivor = store.get(collection, tostring(ids[1]))
  local merged = json.array()
  for i = 2, #ids do
    store.remove(collection, tostring(ids[i]))
    stats.count_write(ctx.account_id, name, tostring(ids[i]))
    merged[#merged + 1] = tostring(ids[i])
  end
  survivor.updated_at = request.now_iso()
  stats.count_write(ctx.account_id, name, survivor.id)
  local result = formats.record(survivor, ctx.options)
  result.merged_ids = merged
  return response.json(200, { result = result })
end

CUSTOM_METHODS["batch-delete"] = function(ctx, name, collection, body)
  local ids, bad = ids_from(body)
  if not ids then return bad end
  local result = json.array()
  for _, id in ipairs(ids) do
    id = tostring(id)
    local removed = store.remove(collection, id)
    if removed then stats.count_write(ctx.account_id, name, id) end
    result[#result + 1] = { id = id, deleted = removed }
  end
  return response.json(200, { result = result })
end

local function custom_method(ctx, name, collection, method)
  local allowed = false
  for _, m in ipairs(collection.spec.custom_methods or {}) do
    if m == method then allowed = true end
  end
  if not allowed then
    return response.error(404, "Method " .. method .. " not found on " .. name)
  end
  local body, bad = request.json_object_body(ctx)
  if not body then return bad end
  local implementation = CUSTOM_METHODS[method]
  if implementation then return implementation(ctx, name, collection, body) end
  return response.json(200, { result = { method = method, body = body } })
end

-- Meta -------------------------------------------------------------------------

local function json_type(value)
  if type(value) == "table" then return json.is_list(value) and "array" or "object" end
  if type(value) == "boolean" then return "boolean" end
  if type(value) == "number" then return "number" end
  return "string"
end

-- A JSON schema of a collection's records, from its first record's fields
-- (also the body schema of the tools, over Proxy collections).
local function schema_of(collection)
  local sample = store.get(collection, collection.order[1] or "") or {}
  local properties = {}
  for field, value in pairs(sample) do properties[field] = { type = json_type(value) } end
  properties.id = { type = "string" }
  return { type = "object", properties = properties }
end

_M.schema_of = schema_of

local function meta(name, collection, method)
  local is_custom = false
  for _, m in ipairs(collection.spec.custom_methods or {}) do
    if m == method then is_custom = true end
  end
  if not STANDARD_METHODS[method] and not is_custom then
    return response.error(404, "Method " .. method .. " not found on " .. name)
  end
  local model, resource = name:match("^([^/]+)/(.+)$")
  local schema = schema_of(collection)
  local body_schema = json.null
  if method == "create" or method == "update" or is_custom then
    local properties = {}
    for field, property in pairs(schema.properties) do
      if not READ_ONLY_FIELDS[field] and field ~= "last_activity_at" and field ~= "urls" then
        properties[field] = property
      end
    end
    properties.remote_data = { type = "object" }
    body_schema = { type = "object", properties = properties,
                    required = json.array(method == "create" and json.copy(collection.spec.required_on_create or {})
                                          or {}) }
  end
  return response.json(200, {
    method = method,
    schema = schema,
    documentation_link = "https://truto.one/docs/api-reference/unified-" .. model .. "-api/"
      .. resource .. "/" .. method,
    response_mapping = "$",
    query_schema = {
      type = "object",
      properties = {
        integrated_account_id = { type = "string" },
        truto_response_format = { type = "string", enum = json.array({ "unified", "raw", "normalized", "stream" }) },
        truto_ignore_remote_data = { type = "boolean" },
        truto_exclude_fields = { type = "array", items = { type = "string" } },
        remote_query = { type = "object" },
      },
      required = json.array({ "integrated_account_id" }),
    },
    request_body_schema = body_schema,
    default_query = {},
    default_body = {},
  })
end

-- Dispatch ---------------------------------------------------------------------

function _M.handle(ctx)
  local segments = ctx.segments -- after "unified"
  local model, resource = segments[1], segments[2]
  if not model or not resource or model == "" or resource == "" or #segments > 4 then
    return response.error(404, "Route not found: " .. ctx.method .. " " .. ctx.path)
  end
  local name = model .. "/" .. resource
  local collection = ctx.account_state.unified[name]
  if not collection then
    return response.error(404, "Unified resource " .. name .. " is not supported for this integrated account")
  end
  local options, bad_option = formats.options(ctx.query)
  if not options then return response.error(400, bad_option) end
  ctx.options = options
  local method, third = ctx.method, segments[3]
  if #segments == 4 then
    if third == "meta" and method == "GET" then return meta(name, collection, segments[4]) end
    return response.error(404, "Route not found: " .. method .. " " .. ctx.path)
  end
  if ctx.read_only and method ~= "GET" then
    return response.error(405, "Sandbox integrated accounts are read-only")
  end
  if not third then
    if method == "GET" then return list(ctx, collection, options) end
    if method == "POST" then return create(ctx, name, collection, options) end
  elseif third == "" then
    return response.error(404, "Route not found: " .. method .. " " .. ctx.path)
  else
    if method == "GET" then
      local record = store.get(collection, third)
      if not record then return not_found(third) end
      return shaped(200, record, options)
    end
    if method == "PATCH" then return update(ctx, name, collection, third, options) end
    if method == "DELETE" then return delete(ctx, name, collection, third) end
    if method == "POST" then return custom_method(ctx, name, collection, third) end
  end
  return response.error(405, "Method " .. method .. " not allowed on " .. ctx.path)
end

return _M

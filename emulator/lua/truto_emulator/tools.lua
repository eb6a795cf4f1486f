-- An integrated account's tools (GET /integrated-account/{id}/tools, MCP
-- tools/list and tools/call): one per standard method of each of its Proxy
-- resources, named as Truto names them (list_all_hubspot_deals,
-- get_single_hubspot_deal_by_id, ...), and run through the Proxy API as
-- Truto's LangChain toolset maps them.
local json = require "truto_emulator.json"
local unified = require "truto_emulator.unified"
local dataplane = require "truto_emulator.dataplane"
local response = require "truto_emulator.response"

local _M = {}

local METHODS = { "list", "get", "create", "update", "delete" }
local METHOD_GROUPS = { read = { list = true, get = true }, write = { create = true, update = true, delete = true } }
local HTTP_METHODS = { list = "GET", get = "GET", create = "POST", update = "PATCH", delete = "DELETE" }
-- Fields the provider sets: not in a body schema.
local SERVER_FIELDS = { id = true, createdAt = true, updatedAt = true }

local function singular(word)
  if word:sub(-3) == "ies" then return word:sub(1, -4) .. "y" end
  if word:sub(-1) == "s" then return word:sub(1, -2) end
  return word
end

local function snake(s) return (s:gsub("[^%w]+", "_")) end

local function describe_tool(method, integration, resource)
  local one, all = snake(singular(resource)), snake(resource)
  if method == "list" then
    return "list_all_" .. integration .. "_" .. all, "List all " .. integration .. " " .. resource
  elseif method == "get" then
    return "get_single_" .. integration .. "_" .. one .. "_by_id", "Get a single " .. integration .. " "
      .. singular(resource) .. " by id"
  end
  local suffix = method == "create" and "" or "_by_id"
  local name = method .. "_a_" .. integration .. "_" .. one .. suffix
  return name, method:sub(1, 1):upper() .. method:sub(2) .. " a " .. integration .. " " .. singular(resource)
    .. (method == "create" and "" or " by id")
end

local function id_schema(resource)
  return { type = "object", properties = { id = { type = "string", description = "The id of the "
    .. singular(resource) .. "." } }, required = json.array({ "id" }) }
end

local function body_schema(collection)
  local properties = {}
  for field, property in pairs(unified.schema_of(collection).properties) do
    if not SERVER_FIELDS[field] then properties[field] = property end
  end
  return { type = "object", properties = properties }
end

local function tool(method, integration, resource, collection)
  local name, description = describe_tool(method, integration, resource)
  local query_schema, body
  if method == "list" then
    query_schema = { type = "object", properties = {
      limit = { type = "integer", description = "Records per page." },
      next_cursor = { type = "string", description = "The cursor of the page to fetch." },
    } }
  elseif method == "create" then
    query_schema = { type = "object", properties = {} }
  else
    query_schema = id_schema(resource)
  end
  if method == "create" or method == "update" then body = body_schema(collection) end
  return { name = name, description = description, method = method, resource = resource,
           query_schema = query_schema, body_schema = body or json.null,
           required = json.array(query_schema.required and { "id" } or {}) }
end

-- The set of methods a filter names: a list or a comma-joined string of
-- "read", "write" or method names; nil when the filter is absent.
local function method_set(filter)
  if filter == nil or filter == json.null or filter == "" then return nil end
  local names = {}
  if type(filter) == "table" then
    for _, name in ipairs(filter) do names[#names + 1] = tostring(name) end
  else
    for name in tostring(filter):gmatch("[^,%s]+") do names[#names + 1] = name end
  end
  local set = {}
  for _, name in ipairs(names) do
    for method in pairs(METHOD_GROUPS[name] or { [name] = true }) do set[method] = true end
  end
  return set
end

--- The account's tools, in resource then method order.
---@param account table the integrated account's record
---@param state table its live state (store.account)
---@param methods? string|table a filter: "read", "write", method names
---@return table tools a JSON array
function _M.list(account, state, methods)
  local allowed = method_set(methods)
  local integration = type(account.integration) == "table" and account.integration.name or "integration"
  local resources = {}
  for resource in pairs(state.proxy) do resources[#resources + 1] = resource end
  table.sort(resources)
  local out = json.array()
  for _, resource in ipairs(resources) do
    for _, method in ipairs(METHODS) do
      if not allowed or allowed[method] then
        out[#out + 1] = tool(method, integration, resource, state.proxy[resource])
      end
    end
  end
  return out
end

--- Runs a tool with its arguments: id goes in the path, the query schema's
-- fields in the query, the rest in the body (create and update).
---@param account_id string
---@param t table a tool from _M.list
---@param arguments table
---@return table response the Proxy route's response value
function _M.call(account_id, t, arguments)
  local segments = { "proxy", t.resource }
  local query, body = {}, nil
  if t.method == "create" or t.method == "update" then body = {} end
  for key, value in pairs(arguments) do
    if key == "id" and t.method ~= "list" and t.method ~= "create" then
      segments[3] = tostring(value)
    elseif t.query_schema.properties[key] then
      query[key] = value
    elseif body then
      body[key] = value
    end
  end
  if #t.required > 0 and not segments[3] then
    return response.error(400, "Missing required argument: id")
  end
  return dataplane.call(account_id, HTTP_METHODS[t.method], segments, query, body)
end

return _M

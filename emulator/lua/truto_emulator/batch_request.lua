-- POST /batch-request: Truto's server-side batch.  Body {integrated_account_id,
-- args?, resources = {{name?, resource, method?, id?, query?, body?,
-- depends_on?, loop_on?, response_format?}}}.  Each resource runs against the
-- emulator's own Unified ("model/resource") or Proxy ("resource") routes,
-- called as functions, parents before children; a list follows next_cursor to
-- the end.  Answer: {result = {[name or resource] = records}, errors =
-- {[name or resource] = error envelopes}} (reference/truto-platform.md, §24).
--
-- Placeholders in id, query and body: {{args.x}}, {{resources.<model>.<resource>.<field>}}
-- (a proxy resource or a named node: {{resources.<name>.<field>}}), with the
-- casts :int, :bool, :json, :str, :any.  A child with depends_on runs once per
-- record of its parent, that record standing for resources.<parent>; with
-- loop_on it runs once per element of the array at that path, the element
-- standing for the path.
local json = require "truto_emulator.json"
local store = require "truto_emulator.store"
local stats = require "truto_emulator.stats"
local request = require "truto_emulator.request"
local response = require "truto_emulator.response"
local idempotency = require "truto_emulator.idempotency"
local dataplane = require "truto_emulator.dataplane"

local _M = {}

local MAX_PAGES = 1000 -- a list that never ends is cut here
local PATH = "/batch-request"
local PLACEHOLDER = "{{%s*([^}:%s]+):?(%a*)%s*}}"

local function split(path)
  local parts = {}
  for part in path:gmatch("[^.]+") do parts[#parts + 1] = part end
  return parts
end

local function resolve(context, path)
  local value = context
  for _, part in ipairs(split(path)) do
    if type(value) ~= "table" then return nil end
    value = value[part] == nil and value[tonumber(part)] or value[part]
  end
  return value
end

-- Sets the value at path; returns the value it replaced.
local function bind(context, path, value)
  local parts, t = split(path), context
  if #parts == 0 then return nil end -- a path of dots names nothing
  for i = 1, #parts - 1 do
    if type(t[parts[i]]) ~= "table" then t[parts[i]] = {} end
    t = t[parts[i]]
  end
  local previous = t[parts[#parts]]
  t[parts[#parts]] = value
  return previous
end

local CASTS = {
  int = function(v) local n = tonumber(v) return n and math.floor(n) end,
  bool = function(v) return v == true or v == "true" end,
  json = function(v) if type(v) == "string" then return json.decode(v) end return v end,
  str = function(v) if type(v) == "table" then return json.encode(v) end return v ~= nil and tostring(v) or nil end,
  any = function(v) return v end,
}

local function cast(value, name)
  local f = CASTS[name]
  if f and value ~= nil and value ~= json.null then return f(value) end
  return value
end

-- A copy of value with its placeholders filled: a string that is one
-- placeholder takes the value's type; inside text a value is written out.
local function fill(value, context)
  if type(value) == "string" then
    local path, cast_name = value:match("^" .. PLACEHOLDER .. "$")
    if path then return cast(resolve(context, path), cast_name) end
    return (value:gsub(PLACEHOLDER, function(p, c)
      local v = cast(resolve(context, p), c)
      if v == nil or v == json.null then return "" end
      return type(v) == "table" and json.encode(v) or tostring(v)
    end))
  elseif type(value) == "table" then
    local out = {}
    for k, v in pairs(value) do out[k] = fill(v, context) end
    return setmetatable(out, getmetatable(value))
  end
  return value
end

local function key_of(node)
  return type(node.name) == "string" and node.name ~= "" and node.name or node.resource
end

local function failure(status, message)
  return { statusCode = status, error = response.status_text(status), message = message }
end

local STANDARD_VERBS = { get = "GET", update = "PATCH", delete = "DELETE" }

-- Runs one call of a node; appends its records or its error.
local function run(account_id, node, context, records, errors)
  local model, resource = node.resource:match("^([^/]+)/([^/]+)$")
  local segments
  if model then
    segments = { "unified", model, resource }
  elseif not node.resource:find("/", 1, true) then
    segments = { "proxy", node.resource }
  else
    errors[#errors + 1] = failure(400, "resource must be model/resource or a proxy resource: " .. node.resource)
    return
  end
  local method = node.method or "list"
  if type(node.query) == "string" then
    errors[#errors + 1] = failure(501, "JSONata queries are not supported by the emulator")
    return
  end
  local query = fill(node.query or {}, context)
  if node.response_format then query.truto_response_format = node.response_format end
  local body = node.body ~= nil and fill(node.body, context) or nil
  local id = node.id ~= nil and fill(node.id, context) or nil
  if type(id) == "table" then
    errors[#errors + 1] = failure(400, "id must be a string or a number")
    return
  end
  local verb
  if method == "list" then
    verb = "GET"
  elseif method == "create" then
    verb = "POST"
  elseif STANDARD_VERBS[method] then
    if id == nil or id == json.null or id == "" then
      errors[#errors + 1] = failure(400, "id is required for method " .. method)
      return
    end
    verb, segments[#segments + 1] = STANDARD_VERBS[method], tostring(id)
  else -- a custom method
    verb, segments[#segments + 1] = "POST", method
  end
  for _ = 1, method == "list" and MAX_PAGES or 1 do
    local status, value = dataplane.decode(dataplane.call(account_id, verb, segments, query, body))
    if status >= 400 then
      errors[#errors + 1] = type(value) == "table" and value or failure(status, "the call failed")
      return
    end
    if type(value) ~= "table" then
      errors[#errors + 1] = failure(502, "the call's answer is not a JSON object")
      return
    end
    local found = value
    -- Lists and custom methods wrap their records in result.
    if method == "list" or (verb == "POST" and method ~= "create") then found = value.result end
    if type(found) == "table" and json.is_list(found) then
      for _, record in ipairs(found) do records[#records + 1] = record end
    elseif found ~= nil then
      records[#records + 1] = found
    end
    local cursor = method == "list" and value.next_cursor
    if type(cursor) ~= "string" or cursor == "" then return end
    query.next_cursor = cursor
  end
end

-- The nodes in an order where each comes after the one it depends on, or
-- nil and why not.
local function ordered(nodes)
  local by_key, order, done = {}, {}, {}
  for i, node in ipairs(nodes) do
    if type(node) ~= "table" or json.is_list(node) then return nil, "resources[" .. i .. "] must be an object" end
    if node.type ~= "transform" and node.type ~= "spool"
        and (type(node.resource) ~= "string" or node.resource == "") then
      return nil, "resources[" .. i .. "].resource is required"
    end
    local key = key_of(node)
    if type(key) ~= "string" then return nil, "resources[" .. i .. "] needs a name" end
    for _, field in ipairs({ "method", "loop_on", "response_format" }) do
      if node[field] ~= nil and (type(node[field]) ~= "string" or node[field] == "") then
        return nil, "resources[" .. i .. "]." .. field .. " must be a non-empty string"
      end
    end
    if node.query ~= nil and type(node.query) ~= "table" and type(node.query) ~= "string" then
      return nil, "resources[" .. i .. "].query must be an object"
    end
    if by_key[key] then return nil, "two resources are named " .. key end
    by_key[key] = node
  end
  for i, node in ipairs(nodes) do
    if node.depends_on ~= nil and not by_key[node.depends_on] then
      return nil, "resources[" .. i .. "].depends_on names no resource: " .. tostring(node.depends_on)
    end
  end
  while #order < #nodes do
    local progressed = false
    for _, node in ipairs(nodes) do
      local key = key_of(node)
      if not done[key] and (node.depends_on == nil or done[node.depends_on]) then
        order[#order + 1], done[key], progressed = node, true, true
      end
    end
    if not progressed then return nil, "the resources' depends_on form a cycle" end
  end
  return order
end

-- The path a node's results are found at: resources.crm.contacts, resources.<name>.
local function results_path(key)
  return "resources." .. key:gsub("/", ".")
end

local function execute(body)
  local order, bad = ordered(body.resources)
  if not order then return response.error(400, bad) end
  local context = { args = type(body.args) == "table" and json.copy(body.args) or {}, resources = {} }
  local result, errors = {}, {}
  for _, node in ipairs(order) do
    local key, records, failures = key_of(node), json.array(), json.array()
    if node.type == "transform" or node.type == "spool" then
      failures[1] = failure(501, node.type .. " nodes are not supported by the emulator")
    else
      local loop_path = node.loop_on or (node.depends_on and results_path(node.depends_on))
      if loop_path then
        local items = resolve(context, loop_path)
        if type(items) ~= "table" or not json.is_list(items) then items = { items } end
        for _, item in ipairs(items) do
          local previous = bind(context, loop_path, item)
          run(body.integrated_account_id, node, context, records, failures)
          bind(context, loop_path, previous)
        end
      else
        run(body.integrated_account_id, node, context, records, failures)
      end
    end
    result[key] = records
    if #failures > 0 then errors[key] = failures end
    bind(context, results_path(key), records)
  end
  return response.json(200, { result = result, errors = errors })
end

--- POST /batch-request.  An Idempotency-Key replays the first answer (per
-- integrated account, as on the Unified API).
---@param ctx table the platform request
---@return table response
function _M.handle(ctx)
  local body, bad = request.json_object_body(ctx)
  if not body then return bad end
  local account_id = body.integrated_account_id
  if type(account_id) ~= "string" or account_id == "" then
    return response.error(400, "Missing required fields: integrated_account_id")
  end
  if not store.get(store.accounts(), account_id) then
    return response.error(404, "integrated-account " .. account_id .. " not found")
  end
  if type(body.resources) ~= "table" or not json.is_list(body.resources) then
    return response.error(400, "resources must be a non-empty array")
  end
  local key = ctx.headers["idempotency-key"]
  if type(key) == "string" then
    local cached = idempotency.lookup(account_id, PATH, key)
    if cached then
      stats.count_replay()
      local replay = json.copy(cached)
      replay.headers = { ["Idempotent-Replayed"] = "true" }
      return replay
    end
  end
  local res = execute(body)
  if type(key) == "string" then idempotency.store(account_id, PATH, key, res) end
  return res
end

return _M

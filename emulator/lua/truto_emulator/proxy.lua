-- /proxy/{resource}[/{id}]: provider-native records (HubSpot-style, e.g.
-- deals = {id, properties = {...}}), passed through without unified mapping.
local json = require "truto_emulator.json"
local store = require "truto_emulator.store"
local stats = require "truto_emulator.stats"
local request = require "truto_emulator.request"
local response = require "truto_emulator.response"

local _M = {}

local function not_found(id)
  return response.remote_error(404, "Record not found: " .. id,
    { status = "error", message = "resource not found", category = "OBJECT_NOT_FOUND" })
end

local function stamp(record)
  record.updatedAt = request.now_iso()
end

function _M.handle(ctx)
  local segments = ctx.segments -- after "proxy"
  local resource, id = segments[1], segments[2]
  if not resource or resource == "" or #segments > 2 or id == "" then
    return response.error(404, "Route not found: " .. ctx.method .. " " .. ctx.path)
  end
  local collection = ctx.account_state.proxy[resource]
  if not collection then
    return response.remote_error(404, "Unknown proxy resource: " .. resource,
      { status = "error", message = "Unknown resource " .. resource })
  end
  local stats_name = "proxy/" .. resource
  local method = ctx.method
  if ctx.read_only and method ~= "GET" then
    return response.error(405, "Sandbox integrated accounts are read-only")
  end
  if not id then
    if method == "GET" then
      local offset, limit = request.page_window(ctx.query)
      if not offset then return limit end
      local page, total = store.slice(collection, offset, limit)
      return response.json(200, request.page_envelope(json.array(page), offset, limit, #page, total))
    elseif method == "POST" then
      local body, bad = request.json_object_body(ctx)
      if not body then return bad end
      local record = json.copy(body)
      record.id = store.new_id()
      record.createdAt = request.now_iso()
      stamp(record)
      store.insert(collection, record)
      stats.count_write(ctx.account_id, stats_name, record.id)
      return response.json(201, record)
    end
  else
    local record = store.get(collection, id)
    if method == "GET" then
      if not record then return not_found(id) end
      return response.json(200, record)
    elseif method == "PATCH" or method == "PUT" then
      if not record then return not_found(id) end
      local body, bad = request.json_object_body(ctx)
      if not body then return bad end
      body.id = nil
      if method == "PUT" then
        for k in pairs(record) do
          if k ~= "id" then record[k] = nil end
        end
      end
      store.deep_merge(record, body)
      stamp(record)
      stats.count_write(ctx.account_id, stats_name, id)
      return response.json(200, record)
    elseif method == "DELETE" then
      if not store.remove(collection, id) then return not_found(id) end
      stats.count_write(ctx.account_id, stats_name, id)
      return response.json(200, { id = id })
    elseif method == "POST" then
      -- A custom method on the provider resource: echoed back.
      local body, bad = request.json_object_body(ctx)
      if not body then return bad end
      return response.json(200, { result = { method = id, resource = resource, body = body } })
    end
  end
  return response.error(405, "Method " .. method .. " not allowed on " .. ctx.path)
end

return _M

-- POST /mcp/{token}: an MCP server's JSON-RPC 2.0 endpoint (the token, made by
-- POST /integrated-account/{id}/mcp, is the only auth).  Methods: initialize,
-- ping, tools/list, tools/call, prompts/list, resources/list; notifications/*
-- get 202 and no body.  As Truto's TS SDK sends them, "jsonrpc" and "id" may
-- be missing: a request without an id is answered with "id": null.  Every
-- JSON-RPC answer, errors included, is HTTP 200.
local json = require "truto_emulator.json"
local store = require "truto_emulator.store"
local response = require "truto_emulator.response"
local tools = require "truto_emulator.tools"

local _M = {}

local PROTOCOL_VERSION = "2024-11-05"

local function answer(id, field, value)
  return response.json(200, { jsonrpc = "2.0", id = id == nil and json.null or id, [field] = value })
end

local function rpc_error(id, code, message)
  return answer(id, "error", { code = code, message = message })
end

local function server_for(token)
  local servers = store.platform("mcp-server")
  for _, id in ipairs(servers.order) do
    local server = servers.by_id[id]
    if server.token == token then return server end
  end
  return nil
end

local function tool_list(server)
  local account, state = store.account(server.integrated_account_id)
  local config = type(server.config) == "table" and server.config or {}
  return tools.list(account, state, config.methods)
end

local function input_schema(tool)
  local properties = {}
  for _, schema in ipairs({ tool.query_schema, tool.body_schema }) do
    for name, property in pairs(type(schema) == "table" and schema.properties or {}) do properties[name] = property end
  end
  return { type = "object", properties = properties, required = tool.required }
end

local METHODS = {}

function METHODS.initialize(_, params)
  return {
    protocolVersion = type(params.protocolVersion) == "string" and params.protocolVersion or PROTOCOL_VERSION,
    capabilities = { tools = { listChanged = false } },
    serverInfo = { name = "truto-emulator", version = "1.0.0" },
  }
end

function METHODS.ping() return {} end
METHODS["prompts/list"] = function() return { prompts = json.array() } end
METHODS["resources/list"] = function() return { resources = json.array() } end

METHODS["tools/list"] = function(server)
  local out = json.array()
  for i, tool in ipairs(tool_list(server)) do
    out[i] = { name = tool.name, description = tool.description, inputSchema = input_schema(tool) }
  end
  return { tools = out }
end

-- A failed call is a result with isError (the error envelope as its text),
-- as Truto forwards a tool's error; an unknown tool is a JSON-RPC error.
METHODS["tools/call"] = function(server, params)
  if type(params.name) ~= "string" then return nil, -32602, "params.name is required" end
  local arguments = params.arguments
  if arguments == nil or arguments == json.null then arguments = {} end
  if type(arguments) ~= "table" or json.is_list(arguments) and next(arguments) ~= nil then
    return nil, -32602, "arguments must be an object"
  end
  for _, tool in ipairs(tool_list(server)) do
    if tool.name == params.name then
      local res = tools.call(server.integrated_account_id, tool, arguments)
      return {
        content = json.array({ { type = "text", text = res.body or table.concat(res.chunks or {}) } }),
        isError = res.status >= 400,
      }
    end
  end
  return nil, -32602, "Unknown tool: " .. tostring(params.name)
end

--- Answers one JSON-RPC message sent to the MCP server with this token.
---@param ctx table the platform request
---@param token string
---@return table response
function _M.handle(ctx, token)
  local server = server_for(token)
  if not server or not store.account(server.integrated_account_id) then
    return response.error(404, "MCP server not found")
  end
  local message = json.decode(ctx.body_text or "")
  if message == nil then return rpc_error(nil, -32700, "Parse error") end
  if type(message) ~= "table" or json.is_list(message) then
    return rpc_error(nil, -32600, "Invalid Request: a JSON-RPC request object is expected")
  end
  local id, method = message.id, message.method
  if type(method) ~= "string" then return rpc_error(id, -32600, "Invalid Request: method is required") end
  if method:sub(1, 14) == "notifications/" then
    return { status = 202, body = "", headers = {}, content_type = "application/json" }
  end
  local implementation = METHODS[method]
  if not implementation then return rpc_error(id, -32601, "Method not found: " .. method) end
  local params = type(message.params) == "table" and message.params or {}
  local result, code, error_message = implementation(server, params)
  if result == nil then return rpc_error(id, code, error_message) end
  return answer(id, "result", result)
end

return _M

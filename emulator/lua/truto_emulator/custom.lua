-- ANY /custom/{path...}: echoes what Truto would forward to the provider.
local json = require "truto_emulator.json"
local request = require "truto_emulator.request"
local response = require "truto_emulator.response"

local _M = {}

function _M.handle(ctx)
  -- GET /custom/blob?bytes=N: the control endpoint's large JSON document,
  -- behind auth, so the client itself can stream it.
  if ctx.method == "GET" and #ctx.segments == 1 and ctx.segments[1] == "blob" then
    return require("truto_emulator.control").blob(ctx)
  end
  local query = {}
  for k, v in pairs(ctx.query) do
    if k ~= "integrated_account_id" then query[k] = v end
  end
  local body = json.null
  local text = ctx.body_text
  if ctx.parts then
    body = request.parts_object(ctx.parts)
  elseif text and text ~= "" then
    local decoded = json.decode(text)
    if decoded ~= nil then
      body = decoded
      -- Truto strips methodConfig before forwarding.
      if type(body) == "table" and not json.is_list(body) then body.methodConfig = nil end
    else
      body = text
    end
  end
  local segments = json.array()
  for i, segment in ipairs(ctx.segments) do segments[i] = segment end
  return response.json(200, { result = {
    method = ctx.method,
    path = ctx.raw_path:sub(#"/custom" + 1),
    segments = segments,
    query = query,
    body = body,
  } })
end

return _M

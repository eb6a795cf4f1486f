-- ANY /custom/{path...}: echoes what Truto would forward to the provider.
local crypto = require "truto_emulator.crypto"
local json = require "truto_emulator.json"
local request = require "truto_emulator.request"
local response = require "truto_emulator.response"

local _M = {}

-- Whether s is UTF-8 (JSON can carry it as a string); overlong forms pass.
local function is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c < 0xE0) and 2 or (c >= 0xE0 and c < 0xF0) and 3
      or (c >= 0xF0 and c < 0xF5) and 4 or nil
    if not len then return false end
    for j = i + 1, i + len - 1 do
      local b = s:byte(j)
      if not b or b < 0x80 or b > 0xBF then return false end
    end
    i = i + len
  end
  return true
end

-- A body that is neither JSON nor text (an image sent with truto.raw): its size and digest.
local function binary(text)
  local hash = crypto.sha256()
  hash.update(text)
  return { size = #text, sha256 = hash.hex() }
end

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
      body = is_utf8(text) and text or binary(text)
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

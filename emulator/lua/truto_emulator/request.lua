-- Helpers shared by the route handlers: JSON bodies, pagination, timestamps.
local json = require "truto_emulator.json"
local response = require "truto_emulator.response"

local _M = {}

local ngx = ngx

_M.DEFAULT_LIMIT = 10
_M.MAX_LIMIT = 1000

-- The fields of a multipart body as a record: a text field's value, a
-- file's { filename, content_type, size, sha256 }; a name sent several
-- times gives a list.
function _M.parts_object(parts)
  local object, seen = {}, {}
  for _, part in ipairs(parts) do
    local value = part.value
    if part.filename or value == nil then
      value = { filename = part.filename, content_type = part.content_type, size = part.size, sha256 = part.sha256 }
    end
    if seen[part.name] == 1 then object[part.name] = json.array { object[part.name] } end
    if seen[part.name] then
      table.insert(object[part.name], value)
    else
      object[part.name] = value
    end
    seen[part.name] = (seen[part.name] or 0) + 1
  end
  return object
end

-- The request body as a JSON object; an empty body is {}, a multipart body
-- its fields (parts_object).  Returns the table, or nil and a 400 response.
function _M.json_object_body(ctx)
  if ctx.parts then return _M.parts_object(ctx.parts) end
  local text = ctx.body_text
  if text == nil or text:match("^%s*$") then return {} end
  local value, err = json.decode(text)
  if value == nil then
    return nil, response.error(400, "Invalid JSON body: " .. tostring(err))
  end
  if type(value) ~= "table" or json.is_list(value) then
    return nil, response.error(400, "Request body must be a JSON object")
  end
  return value
end

function _M.now_iso()
  local now = ngx.now()
  local seconds = math.floor(now)
  return os.date("!%Y-%m-%dT%H:%M:%S", seconds) .. string.format(".%03dZ", math.floor((now - seconds) * 1000))
end

local function encode_cursor(offset)
  return ngx.encode_base64("offset=" .. offset)
end

local function decode_cursor(cursor)
  local decoded = ngx.decode_base64(cursor)
  local offset = decoded and tonumber(decoded:match("^offset=(%d+)$"))
  return offset
end

-- Reads limit and next_cursor; returns offset, limit or nil, 400 response.
-- An empty next_cursor (the TS SDK sends one on page one) is page one.
function _M.page_window(query, default_limit)
  local limit = default_limit or _M.DEFAULT_LIMIT
  if query.limit ~= nil and query.limit ~= "" then
    limit = tonumber(query.limit)
    if not limit or limit < 1 or limit ~= math.floor(limit) then
      return nil, response.error(400, "limit must be a positive integer")
    end
    limit = math.min(limit, _M.MAX_LIMIT)
  end
  local offset = 0
  local cursor = query.next_cursor
  if cursor ~= nil and cursor ~= "" then
    offset = type(cursor) == "string" and decode_cursor(cursor)
    if not offset then
      return nil, response.error(400, "Invalid next_cursor")
    end
  end
  return offset, limit
end

-- The cursor of the page after [offset + 1, offset + count], or null on the last.
function _M.next_cursor(offset, count, total)
  return (offset + count < total) and encode_cursor(offset + count) or json.null
end

-- The list envelope: {result, next_cursor, prev_cursor, result_count}.
function _M.page_envelope(result, offset, limit, count, total)
  return {
    result = result,
    next_cursor = _M.next_cursor(offset, count, total),
    prev_cursor = offset > 0 and encode_cursor(math.max(0, offset - limit)) or json.null,
    result_count = count,
  }
end

return _M

-- /_emulator/*: test control, no auth.
local json = require "truto_emulator.json"
local store = require "truto_emulator.store"
local faults = require "truto_emulator.faults"
local stats = require "truto_emulator.stats"
local ratelimit = require "truto_emulator.ratelimit"
local idempotency = require "truto_emulator.idempotency"
local request_log = require "truto_emulator.request_log"
local response = require "truto_emulator.response"

local _M = {}

local ngx = ngx

function _M.reset_all()
  store.reset()
  faults.clear()
  stats.reset()
  ratelimit.reset()
  idempotency.reset()
  request_log.reset()
end

local function body_object(ctx)
  local text = ctx.body_text
  if not text or text:match("^%s*$") then return {} end
  local value, err = json.decode(text)
  if type(value) ~= "table" then return nil, response.error(400, "Invalid JSON body: " .. tostring(err)) end
  return value
end

-- GET /_emulator/blob?bytes=N: exactly N bytes (at least 13) of valid JSON,
-- {"result":[{"id":"00000001","padding":"xxx..."},...]}, written in ~64 KiB
-- pieces with flush(true), so memory stays constant whatever N is.
-- &invalid_at=K: byte K (from 1) is a NUL instead, which JSON allows nowhere.
local RECORD_SIZE = 1024
local RECORD_OVERHEAD = #'{"id":"00000000","padding":""}'
local PADDING = string.rep("x", 2 * RECORD_SIZE)
local FULL_RECORD_TAIL = PADDING:sub(1, RECORD_SIZE - RECORD_OVERHEAD) .. '"}'
local RECORDS_PER_PIECE = 256

local function blob(ctx)
  local total = tonumber(ctx.query.bytes) or 1048576
  total = math.max(13, math.floor(total))
  ngx.req.clear_header("Accept-Encoding") -- sent as is, never gzipped
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  if ctx.query.chunked == "0" or ctx.query.chunked == "false" then
    ngx.header["Content-Length"] = total
  end
  local budget = total - #'{"result":[' - #"]}"
  local piece, written, index = { '{"result":[' }, 0, 0
  local invalid_at, sent = tonumber(ctx.query.invalid_at), 0
  -- Sends the piece, with the NUL if byte invalid_at is in it; false when the client went away.
  local function send(parts)
    local text = table.concat(parts)
    local at = invalid_at and invalid_at - sent
    if at and at >= 1 and at <= #text then text = text:sub(1, at - 1) .. "\0" .. text:sub(at + 1) end
    sent = sent + #text
    ngx.print(text)
    return ngx.flush(true)
  end
  while true do
    local separator = index > 0 and 1 or 0
    local room = budget - written - separator
    if room < RECORD_OVERHEAD then break end
    local size = math.min(RECORD_SIZE, room)
    -- Do not leave a gap too small for a record but too big to ignore.
    if room - size > 0 and room - size < RECORD_OVERHEAD + 1 then size = room end
    index = index + 1
    piece[#piece + 1] = separator == 1 and ',{"id":"' or '{"id":"'
    piece[#piece + 1] = string.format('%08d","padding":"', index)
    piece[#piece + 1] = size == RECORD_SIZE and FULL_RECORD_TAIL or (PADDING:sub(1, size - RECORD_OVERHEAD) .. '"}')
    written = written + separator + size
    if #piece >= 3 * RECORDS_PER_PIECE then
      if not send(piece) then return ngx.exit(444) end -- client went away
      piece = {}
    end
  end
  piece[#piece + 1] = string.rep(" ", budget - written) .. "]}"
  send(piece)
  return ngx.exit(200)
end

local ROUTES = {
  ["GET health"] = function()
    return response.json(200, { ok = true })
  end,
  ["GET faults"] = function()
    return response.json(200, { faults = faults.list() })
  end,
  ["POST faults"] = function(ctx)
    local body, bad = body_object(ctx)
    if not body then return bad end
    local added, err = faults.enqueue(body.faults)
    if not added then return response.error(400, err) end
    return response.json(200, { queued = added, faults = faults.list() })
  end,
  ["DELETE faults"] = function()
    faults.clear()
    return response.json(200, { faults = json.array() })
  end,
  ["POST reset"] = function()
    _M.reset_all()
    return response.json(200, { reset = true })
  end,
  ["GET requests"] = function()
    return response.json(200, request_log.entries())
  end,
  ["DELETE requests"] = function()
    request_log.reset()
    return response.json(200, json.array())
  end,
  ["GET stats"] = function()
    return response.json(200, stats.snapshot())
  end,
  ["GET config"] = function()
    return response.json(200, { rate_limit = ratelimit.config() })
  end,
  ["POST config"] = function(ctx)
    local body, bad = body_object(ctx)
    if not body then return bad end
    return response.json(200, { rate_limit = ratelimit.configure(body.rate_limit) })
  end,
  ["GET blob"] = blob,
}

_M.blob = blob

function _M.handle(ctx, name)
  local route = ROUTES[ctx.method .. " " .. name]
  if not route then
    return response.error(404, "Unknown emulator control endpoint: " .. ctx.method .. " /_emulator/" .. name)
  end
  return route(ctx)
end

return _M

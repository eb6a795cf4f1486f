-- Fault injection: per-request X-Emulator-* headers and a queue of faults
-- (POST /_emulator/faults) that apply to the next `count` matching requests.
local json = require "truto_emulator.json"

local _M = {}

local ngx = ngx

local queue = {}

local BODY_FAULTS = {
  drop = true, truncate = true, malformed = true, ["reset-mid-body"] = true, ["slow-body"] = true,
}

-- Validates one queued fault; returns a clean copy or nil, message.
local function normalize(spec, index)
  if type(spec) ~= "table" then return nil, "faults[" .. index .. "] must be an object" end
  local fault = {
    method = spec.method ~= json.null and spec.method and string.upper(spec.method) or nil,
    path_prefix = spec.path_prefix ~= json.null and spec.path_prefix or nil,
    integrated_account_id = spec.integrated_account_id ~= json.null and spec.integrated_account_id or nil,
    status = tonumber(spec.status),
    retry_after = spec.retry_after ~= json.null and spec.retry_after ~= nil and tostring(spec.retry_after) or nil,
    kind = spec.fault ~= json.null and spec.fault or nil,
    delay_ms = tonumber(spec.delay_ms) or 0,
    body_delay_ms = tonumber(spec.body_delay_ms),
    pieces = tonumber(spec.pieces),
    body = spec.body ~= json.null and spec.body or nil,
    headers = type(spec.headers) == "table" and spec.headers or nil,
    count = tonumber(spec.count) or 1,
  }
  if fault.kind and not BODY_FAULTS[fault.kind] then
    return nil, "faults[" .. index .. "].fault must be one of drop, truncate, malformed, reset-mid-body, slow-body"
  end
  if fault.status and (fault.status < 100 or fault.status > 599) then
    return nil, "faults[" .. index .. "].status must be an HTTP status"
  end
  return fault
end

function _M.enqueue(list)
  if type(list) ~= "table" then return nil, "body must be {\"faults\": [...]}" end
  local added = {}
  for i, spec in ipairs(list) do
    local fault, err = normalize(spec, i)
    if not fault then return nil, err end
    added[#added + 1] = fault
  end
  for _, fault in ipairs(added) do queue[#queue + 1] = fault end
  return #added
end

function _M.clear()
  queue = {}
end

function _M.list()
  local out = json.array()
  for _, fault in ipairs(queue) do
    out[#out + 1] = {
      method = fault.method, path_prefix = fault.path_prefix, status = fault.status,
      integrated_account_id = fault.integrated_account_id,
      retry_after = fault.retry_after, fault = fault.kind, delay_ms = fault.delay_ms, count = fault.count,
    }
  end
  return out
end

-- Takes one use of the first queued fault matching the request.
local function take_queued(method, path, account_id)
  for i, fault in ipairs(queue) do
    if (not fault.method or fault.method == method)
        and (not fault.path_prefix or path:sub(1, #fault.path_prefix) == fault.path_prefix)
        and (not fault.integrated_account_id or fault.integrated_account_id == account_id) then
      fault.count = fault.count - 1
      if fault.count <= 0 then table.remove(queue, i) end
      return fault
    end
  end
end

-- Returns the fault for this request (queued entry, overridden field by field
-- by X-Emulator-* headers) or nil.
function _M.for_request(method, path, headers, account_id)
  local queued = take_queued(method, path, account_id)
  local status = tonumber(headers["x-emulator-status"])
  local retry_after = headers["x-emulator-retry-after"]
  local delay_ms = tonumber(headers["x-emulator-delay-ms"])
  local kind = headers["x-emulator-fault"]
  local body_delay_ms = tonumber(headers["x-emulator-body-delay-ms"])
  if not (queued or status or retry_after or delay_ms or kind) then return nil end
  local fault = {}
  if queued then
    for k, v in pairs(queued) do fault[k] = v end
  end
  fault.status = status or fault.status
  fault.retry_after = retry_after or fault.retry_after
  fault.delay_ms = delay_ms or fault.delay_ms or 0
  fault.kind = kind or fault.kind
  fault.body_delay_ms = body_delay_ms or fault.body_delay_ms
  if fault.kind and not BODY_FAULTS[fault.kind] then fault.kind = nil end
  return fault
end

-- Sleeps without blocking the worker.
function _M.delay(fault)
  if fault and fault.delay_ms and fault.delay_ms > 0 then
    ngx.sleep(fault.delay_ms / 1000)
  end
end

return _M

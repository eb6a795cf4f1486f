--- What bench.lua and the client-side scripts it starts (stream.lua,
-- memory.lua) share: lookups in the C modules, peak RSS, and the large
-- payloads of B6 and B7.
local _M = {}

-- The libcurl session may live in its own module, loaded on the first
-- transfer (truto.curl_core); the rest in truto.core.
local CORE_MODULES = { "truto.core", "truto.curl_core" }

--- A field of the C core (a function such as `now`, `session`,
-- `build_request`), from whichever of its modules has it; raises when none does.
---@param name string
---@return any
function _M.core_field(name)
  for _, module in ipairs(CORE_MODULES) do
    local ok, core = pcall(require, module)
    if ok and type(core) == "table" and core[name] ~= nil then return core[name] end
  end
  error("bench: no C module of lua-truto has '" .. name .. "'", 2)
end

--- The process's peak resident set so far (VmHWM), kB.
---@return integer
function _M.peak_rss_kb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s*(%d+)")
    if kb then return tonumber(kb) end
  end
  error("bench: no VmHWM in /proc/self/status")
end

-- One record of the large list page: a CRM contact whose remote_data holds
-- many small values, distinct per record (Lua interns short strings: equal
-- values across records would flatter the client), about per_record bytes.
local HISTORY = 200
local function page_record(i, per_record)
  local parts = {
    ('{"id":"%d","first_name":"First%d","last_name":"Last%d","email_addresses":[{"email":"person%d@example.com",'
      .. '"is_primary":true}],"created_at":"2026-01-%02dT10:00:00.000Z","remote_data":{"history":['):format(
      i, i, i, i, i % 28 + 1),
  }
  local size = #parts[1]
  for k = 1, HISTORY do
    local entry = ('%s{"at":%d,"amount":%d.%02d,"by":"user %d","changed":%s}'):format(
      k > 1 and "," or "", 1767225600 + i * 1000 + k, i + k, k % 100, k, k % 2 == 0 and "true" or "false")
    parts[#parts + 1] = entry
    size = size + #entry
  end
  parts[#parts + 1] = '],"properties":{'
  local k = 0
  while size < per_record do
    k = k + 1
    local entry = ('%s"field_%04d":"value %d of record %d"'):format(k > 1 and "," or "", k, k, i)
    parts[#parts + 1] = entry
    size = size + #entry
  end
  parts[#parts + 1] = "}}}"
  return table.concat(parts)
end

--- B6's list page: `{"result":[...],"next_cursor":null}` with `records`
-- records, about `bytes` bytes in all.
---@param records integer
---@param bytes integer
---@return string
function _M.page_json(records, bytes)
  local out = {}
  for i = 1, records do out[i] = page_record(i, math.floor(bytes / records) - 2) end
  return '{"result":[' .. table.concat(out, ",") .. '],"next_cursor":null}'
end

--- B7's request body: an opportunity with ~1 KB line items until its JSON
-- is about `bytes` bytes long.
---@param bytes integer
---@return table
function _M.large_body(bytes)
  local items, size = {}, 80
  while size < bytes do
    local k = #items + 1
    local description = ("Line %d of the bulk import, three seats added. "):format(k):rep(18)
    local price = k * 1.25
    items[k] = { id = "item-" .. k, quantity = k, price = price, description = description }
    -- {"description":"…","id":"item-k","price":p,"quantity":k},
    size = size + 53 + #description + 2 * #tostring(k) + #("%.14g"):format(price)
  end
  return { name = "Bulk import", amount = 125000.5, currency = "USD", line_items = items }
end

return _M

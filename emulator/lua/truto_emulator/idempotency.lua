-- Idempotency-Key replay: the first response to a POST or PATCH is kept under
-- integrated_account_id + path + key and returned verbatim for a repeat.
local _M = {}

local MAX_ENTRIES = 100000 -- oldest dropped first, so benchmarks stay bounded

local entries, order, first

function _M.reset()
  entries, order, first = {}, {}, 1
end

local function cache_key(account_id, path, key)
  return account_id .. "\n" .. path .. "\n" .. key
end

function _M.lookup(account_id, path, key)
  return entries[cache_key(account_id, path, key)]
end

function _M.store(account_id, path, key, res)
  local k = cache_key(account_id, path, key)
  if entries[k] then return end
  entries[k] = {
    status = res.status, content_type = res.content_type, headers = res.headers,
    body = res.chunks and table.concat(res.chunks) or res.body,
  }
  order[#order + 1] = k
  if #order - first + 1 > MAX_ENTRIES then
    entries[order[first]] = nil
    order[first] = nil
    first = first + 1
  end
end

_M.reset()

return _M

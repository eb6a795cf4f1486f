-- Counters for GET /_emulator/stats: proof that a write was applied once.
local _M = {}

local counters

function _M.reset()
  counters = { requests = 0, writes = {}, statuses = {}, faults_injected = 0, idempotent_replays = 0 }
end

function _M.count_request() counters.requests = counters.requests + 1 end
function _M.count_fault() counters.faults_injected = counters.faults_injected + 1 end
function _M.count_replay() counters.idempotent_replays = counters.idempotent_replays + 1 end

function _M.count_status(status)
  local key = tostring(status)
  counters.statuses[key] = (counters.statuses[key] or 0) + 1
end

-- key: "<integrated_account_id>/<model>/<resource>/<id>" for unified records,
-- "<integrated_account_id>/proxy/<resource>/<id>" for proxy records.
function _M.count_write(account_id, collection_name, id)
  local key = account_id .. "/" .. collection_name .. "/" .. tostring(id)
  counters.writes[key] = (counters.writes[key] or 0) + 1
end

function _M.snapshot()
  return counters
end

_M.reset()

return _M

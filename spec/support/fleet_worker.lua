-- One member of the fleet of spec/fleet_spec.lua: a client paced through a
-- shared store, updating an opportunity of two integrated accounts in turn
-- as fast as the fleet's budget allows, until `seconds` have passed.  Run
-- in a plain Lua process (`lua5.4 spec/support/fleet_worker.lua CONFIG_JSON`)
-- and in each worker of spec/fleet's nginx; its tally is JSON.
local truto = require "truto"

local _M = {}

_M.ACCOUNTS = { "62f44730-dd91-461e-bd6a-aedd9e0ad79d", "acc-2" }
_M.LIMIT = { requests = 50, per = 10 }

--- Runs the loop.  config: { base_url, store, seconds, requests, per,
-- on_store_error, expected_processes, offset (which account first), split }.
-- now: the host's clock.
---@return table tally { ok, failed = { [kind or status] = n }, logs, kinds }
function _M.run(config, now)
  local logs = {}
  local client = truto.new {
    token = "test-token", base_url = config.base_url, max_retries = 0, timeout = 5,
    log = function(message) logs[#logs + 1] = message end,
    rate_limit = { requests = config.requests or _M.LIMIT.requests, per = config.per or _M.LIMIT.per,
                   store = config.store,
                   on_store_error = config.on_store_error, expected_processes = config.expected_processes,
                   store_timeout = 0.5 },
  }
  local tally = { ok = 0, failed = {}, logs = logs }
  local ends = now() + config.seconds
  local i = config.offset or 0
  while now() < ends do
    i = i + 1
    -- split: each member keeps to one account (its offset's), so that a
    -- member waiting out one account's block does not hold up the other.
    local account = _M.ACCOUNTS[(config.split and config.offset or i) % 2 + 1]
    -- No call past the run's end: one whose slot is later ends at once.
    local record, err = client.unified_api:update("crm", "opportunities", "23423523", { amount = i },
      { integrated_account_id = account }, { deadline = math.max(0.001, ends - now()) })
    if record then
      tally.ok = tally.ok + 1
    elseif err.kind == "timeout" and err.attempts == 1 and err.message == "the call's retry.deadline passed" then
      break   -- the next slot is past the end (slots only move later)
    else
      local what = err.status and tostring(err.status) or err.kind
      tally.failed[what] = (tally.failed[what] or 0) + 1
      tally.last_error = err.message
    end
  end
  client:close()
  return tally
end

-- As a plain Lua process: the config as JSON in arg[1], the tally as JSON on stdout.
if arg and arg[0] and arg[0]:match("fleet_worker%.lua$") then
  local core = require "truto.core"
  local config = truto.decode_json(arg[1])
  io.stdout:write(truto.encode_json(_M.run(config, core.now)), "\n")
end

return _M

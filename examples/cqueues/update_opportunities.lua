-- Several opportunities updated at once, each call in a coroutine of one
-- cqueues controller: while one waits for Truto, the others go on.  Against
-- $TRUTO_BASE_URL (default https://api.truto.one) with $TRUTO_API_TOKEN and
-- $TRUTO_INTEGRATED_ACCOUNT_ID; each argument is ID=AMOUNT:
--
--   lua5.4 examples/cqueues/update_opportunities.lua 23423523=4200.5 10000003=990
--
-- Prints each record as its update completes, then the count and the time.
-- Exit status 1 when an update failed, 2 on bad arguments.
local cqueues = require "cqueues"
local truto = require "truto"

local function usage(message)
  io.stderr:write(("update_opportunities: %s\nusage: lua5.4 examples/cqueues/update_opportunities.lua ID=AMOUNT ...\n")
    :format(message))
  os.exit(2)
end

local account = os.getenv("TRUTO_INTEGRATED_ACCOUNT_ID")
if not account or account == "" then usage("set TRUTO_INTEGRATED_ACCOUNT_ID") end
local updates = {}
for i, given in ipairs(arg) do
  local id, amount = given:match("^([^=]+)=(.+)$")
  if not tonumber(amount) then usage(("'%s' is not ID=AMOUNT"):format(given)) end
  updates[i] = { id = id, amount = tonumber(amount) }
end
if #updates == 0 then usage("no opportunity to update") end

-- The token and the base URL come from the environment.
local client = truto.new { transport = "cqueues" }
local cq = cqueues.new()
local started = cqueues.monotime()
local failed = 0
for _, update in ipairs(updates) do
  cq:wrap(function()
    local record, response = client.unified_api:update("crm", "opportunities", update.id,
      { amount = update.amount }, { integrated_account_id = account })
    if record then
      print(("%s: amount %s (HTTP %d)"):format(record.id, tostring(record.amount), response.status))
    else
      failed = failed + 1
      io.stderr:write(("%s: %s\n"):format(update.id, tostring(response)))
    end
  end)
end
local ok, err = cq:loop()
client:close()
if not ok then error(err, 0) end
print(("%d updates in %.2f s, %d failed"):format(#updates, cqueues.monotime() - started, failed))
os.exit(failed == 0 and 0 or 1)

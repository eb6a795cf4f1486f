-- Updates an opportunity in a CRM through Truto's Unified API: the call on
-- Truto's "Update Opportunities" page.
--
--   TRUTO_API_TOKEN=... TRUTO_INTEGRATED_ACCOUNT_ID=... lua5.4 examples/update_opportunity.lua [ID]
--
-- TRUTO_BASE_URL (optional) points it at another server, such as the
-- emulator that `make demo` starts.
local truto = require "truto"

local account = os.getenv("TRUTO_INTEGRATED_ACCOUNT_ID")
if not account or account == "" then
  io.stderr:write("set TRUTO_INTEGRATED_ACCOUNT_ID to the integrated account to use\n")
  os.exit(2)
end
local id = arg[1] or os.getenv("TRUTO_OPPORTUNITY_ID") or "23423523"

local client = truto.new {
  -- token and base_url come from TRUTO_API_TOKEN and TRUTO_BASE_URL
  idempotency = "auto",        -- a PATCH with an Idempotency-Key is safe to retry
  on_request = function(req, attempt)
    print(("--> request (attempt %d)"):format(attempt))
    print(req.method .. " " .. req.url)
    for _, line in ipairs(req.headers) do print(line) end
    print()
    print(req.body)
    print()
  end,
}

local body = {
  name = "Acme Corp renewal 2027",
  amount = 125000.5,
  currency = "USD",
  status = "open",
  account = { id = "5001" },
  owner = { id = "111" },
  contact = { { id = "301" }, { id = "302" } },
  stage = { id = "contractsent", name = "Contract Sent" },
  tags = { { id = "t1", name = "renewal" } },
  custom_fields = { deal_source = "partner" },
  close_date = "2027-03-31T00:00:00.000Z",
}

local query = {
  integrated_account_id = account,
  truto_exclude_fields = { "description" },
  remote_query = { foo = "bar" },
}

local opportunity, response_or_err = client.unified_api:update("crm", "opportunities", id, body, query)
if not opportunity then
  io.stderr:write(tostring(response_or_err), "\n")
  os.exit(1)
end

-- Writes a decoded value as indented JSON, keys sorted.
local function pretty(value, indent)
  indent = indent or ""
  if type(value) ~= "table" then return truto.encode_json(value) end
  local inner = indent .. "  "
  local lines = {}
  if #value > 0 or getmetatable(value) == getmetatable(truto.array()) then
    if #value == 0 then return "[]" end
    for i, item in ipairs(value) do lines[i] = inner .. pretty(item, inner) end
    return "[\n" .. table.concat(lines, ",\n") .. "\n" .. indent .. "]"
  end
  local keys = {}
  for k in pairs(value) do keys[#keys + 1] = k end
  if #keys == 0 then return "{}" end
  table.sort(keys)
  for i, k in ipairs(keys) do lines[i] = inner .. truto.encode_json(k) .. ": " .. pretty(value[k], inner) end
  return "{\n" .. table.concat(lines, ",\n") .. "\n" .. indent .. "}"
end

print(("<-- %d, %d attempt(s)"):format(response_or_err.status, response_or_err.attempts))
print(pretty(opportunity))
client:close()

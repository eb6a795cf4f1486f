-- Run inside Neovim (nvim --headless, spec/neovim_spec.lua), on its LuaJIT
-- and its own libuv loop (vim.loop), against the emulator at
-- $TRUTO_BASE_URL (http, or https trusting $TRUTO_CA_FILE): a call from the
-- main thread (kind "phase"), an update that waits 1 s upstream while a 10 ms timer keeps firing, and a batch of
-- four such updates.  Prints what happened, one line each, then quits
-- (status 0; 1 when something raised, with the error on stderr).
local truto = require "truto"

local uv = vim.loop
local account = os.getenv("TRUTO_INTEGRATED_ACCOUNT_ID")
local delayed = { headers = { ["X-Emulator-Delay-Ms"] = "1000" } }
local function now() return uv.hrtime() / 1e9 end
local function say(line) io.stdout:write(line, "\n") end

-- $TRUTO_CA_FILE: the emulator's CA, when it serves https.
local client = truto.new { transport = "luv", ca_file = os.getenv("TRUTO_CA_FILE") }

local _, err = client.unified_api:get("crm", "opportunities", "10000003", { integrated_account_id = account })
say(("main thread: %s: %s"):format(err.kind, err.message))

coroutine.wrap(function()
  local ok, raised = pcall(function()
    local ticks = 0
    local timer = uv.new_timer()
    timer:start(10, 10, function() ticks = ticks + 1 end)
    local started = now()
    local record, response = client.unified_api:update("crm", "opportunities", "10000003", { amount = 4321 },
      { integrated_account_id = account }, delayed)
    local elapsed = now() - started
    timer:close()
    assert(record, tostring(response))
    say(("update: %s %s HTTP %d, %d attempt(s)"):format(record.id, tostring(record.amount), response.status,
      response.attempts))
    say(("ticks: %d in %.2f s"):format(ticks, elapsed))

    local requests = {}
    for i = 1, 4 do
      requests[i] = { api = "unified", method = "update", model = "crm", resource = "opportunities",
                      id = tostring(10000002 + i), body = { amount = i }, query = { integrated_account_id = account },
                      opts = delayed }
    end
    started = now()
    local results = client:batch(requests)
    local amounts = {}
    for i, r in ipairs(results) do amounts[i] = r[1] and (r[1].id .. "=" .. r[1].amount) or tostring(r[2]) end
    say(("batch: %s in %s s"):format(table.concat(amounts, " "), now() - started < 2 and "under 2" or "2 or more"))
    client:close()
  end)
  vim.schedule(function()
    if not ok then io.stderr:write(tostring(raised), "\n") end
    vim.cmd(ok and "qall!" or "cquit 1")
  end)
end)()

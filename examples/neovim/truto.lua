-- A Neovim command that updates an opportunity in Truto without freezing
-- the editor: the call runs in a coroutine over Neovim's own libuv loop
-- (vim.loop, transport "luv"), so typing, redrawing and timers go on while
-- it waits.  Against $TRUTO_BASE_URL (an http:// one: the luv transport has
-- no TLS) with $TRUTO_API_TOKEN and $TRUTO_INTEGRATED_ACCOUNT_ID:
--
--   :luafile examples/neovim/truto.lua
--   :TrutoUpdateOpportunity 10000003 990
--
-- The outcome comes as a notification (see :messages).  With a bang
-- (:TrutoUpdateOpportunity! ...) Neovim quits once the update is done, with
-- status 0, or 1 when it failed (2 on bad arguments): for scripts run with
-- nvim --headless.
local truto = require "truto"

local INFO, ERROR = vim.log.levels.INFO, vim.log.levels.ERROR

local client   -- made at the first update, from the environment

-- Notifies, then quits with status when one is given.  Scheduled: a
-- libuv callback (where the update ends) may not call most of Neovim's API.
local function report(message, level, status)
  vim.schedule(function()
    vim.notify(message, level)
    if status then vim.cmd(status == 0 and "qall!" or "cquit " .. status) end
  end)
end

local function update(command)
  local id, amount = command.fargs[1], tonumber(command.fargs[2])
  local function status(code) return command.bang and code or nil end
  if #command.fargs ~= 2 or not amount then
    return report("usage: :TrutoUpdateOpportunity[!] ID AMOUNT", ERROR, status(2))
  end
  local account = os.getenv("TRUTO_INTEGRATED_ACCOUNT_ID")
  if not account or account == "" then return report("set TRUTO_INTEGRATED_ACCOUNT_ID", ERROR, status(2)) end
  if not client then
    local made, err = pcall(truto.new, { transport = "luv" })
    if not made then return report(err, ERROR, status(2)) end
    client = err
  end
  coroutine.wrap(function()
    local record, response = client.unified_api:update("crm", "opportunities", id, { amount = amount },
      { integrated_account_id = account })
    if record then
      report(("Truto: opportunity %s: amount %s (HTTP %d)"):format(record.id, tostring(record.amount),
        response.status), INFO, status(0))
    else
      report(("Truto: opportunity %s: %s"):format(id, tostring(response)), ERROR, status(1))
    end
  end)()
end

vim.api.nvim_create_user_command("TrutoUpdateOpportunity", update,
  { nargs = "*", bang = true, desc = "Update an opportunity's amount in Truto: ID AMOUNT" })
vim.api.nvim_create_autocmd("VimLeavePre", {
  callback = function()
    if client then client:close() end
  end,
})

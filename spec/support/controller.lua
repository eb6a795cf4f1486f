-- Code run in coroutines of a cqueues controller, as a cqueues program runs
-- it: what the specs of the cqueues transport call it through.
local cqueues = require "cqueues"

local _M = {}

--- Runs each function in a coroutine of one new controller until all are
-- done; returns the first function's results.  An error raised in any is
-- raised again here.
---@param ... function
---@return any ...
function _M.run(...)
  local cq = cqueues.new()
  local results
  for i = 1, select("#", ...) do
    local f = select(i, ...)
    cq:wrap(function()
      if i == 1 then results = table.pack(f()) else f() end
    end)
  end
  local ok, err = cq:loop()
  if not ok then error(err, 0) end
  return table.unpack(results, 1, results.n)
end

--- A coroutine to run beside (`t.run`) that counts its wake-ups every 50 ms
-- for `seconds`: how many it got shows whether the controller stayed free
-- while another coroutine waited.
---@param seconds number
---@return table ticker { ticks = integer, run = function }
function _M.ticker(seconds)
  local t = { ticks = 0 }
  t.run = function()
    local ends = cqueues.monotime() + seconds
    while cqueues.monotime() < ends do
      cqueues.sleep(0.05)
      t.ticks = t.ticks + 1
    end
  end
  return t
end

return _M

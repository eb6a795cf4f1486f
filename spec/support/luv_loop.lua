-- Code run in coroutines on libuv's default loop (lua-luv), as a luv
-- program runs it: what the specs of the luv transport call it through.
local uv = require "luv"

local _M = {}

--- Runs each function in a coroutine of its own, then the loop until it
-- has nothing left to do; returns the first function's results.  An error
-- raised in any is raised again here, and so is a coroutine left waiting
-- when the loop ran out of work (a wait that nothing would ever end).
---@param ... function
---@return any ...
function _M.run(...)
  local count = select("#", ...)
  local results, finished, failure = nil, 0, nil
  for i = 1, count do
    local f = select(i, ...)
    local co = coroutine.create(function()
      local outcome = table.pack(pcall(f))
      finished = finished + 1
      if not outcome[1] then
        failure = failure or outcome[2]
      elseif i == 1 then
        results = table.pack(table.unpack(outcome, 2, outcome.n))
      end
    end)
    assert(coroutine.resume(co))
  end
  uv.run()
  if failure then error(failure, 0) end
  if finished < count then error(("%d of %d coroutines never finished"):format(count - finished, count), 0) end
  return table.unpack(results, 1, results.n)
end

--- Closes client, then lets the loop run so that libuv finishes closing
-- its connections (lua-luv 1.44 crashes at exit on a handle closed after
-- the loop's last run).
---@param client table
function _M.close(client)
  client:close()
  uv.run()
end

--- A uv timer that counts its ticks every `ms` for `seconds`, then closes.
---@param seconds number
---@param ms? integer the period (default 50)
---@return table ticker { ticks = integer }
function _M.ticker(seconds, ms)
  local t = { ticks = 0 }
  local timer = uv.new_timer()
  local ends = uv.hrtime() / 1e9 + seconds
  timer:start(ms or 50, ms or 50, function()
    t.ticks = t.ticks + 1
    if uv.hrtime() / 1e9 >= ends then timer:close() end
  end)
  return t
end

return _M

-- The last requests received (control endpoints excluded), so tests can
-- assert the exact bytes a client sent.
local json = require "truto_emulator.json"

local _M = {}

local CAPACITY = 1000

local ring, next_slot, size

function _M.reset()
  ring, next_slot, size = {}, 1, 0
end

function _M.add(entry)
  ring[next_slot] = entry
  next_slot = next_slot % CAPACITY + 1
  size = math.min(size + 1, CAPACITY)
end

-- Oldest first.
function _M.entries()
  local out = json.array()
  local start = size < CAPACITY and 1 or next_slot
  for i = 0, size - 1 do
    out[#out + 1] = ring[(start - 1 + i) % CAPACITY + 1]
  end
  return out
end

_M.reset()

return _M

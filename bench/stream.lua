--- B4, the client side, in a fresh process:
--   lua5.4 bench/stream.lua BASE_URL ACCOUNT BYTES
-- Streams GET /custom/blob?bytes=BYTES through a sink that only counts,
-- and prints "<bytes> <seconds> <VmHWM kB> <VmHWM kB before the transfer>".
local core = require "truto.core"
local truto = require "truto"

local function hwm()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s*(%d+)")
    if kb then return tonumber(kb) end
  end
end

local base_url, account, bytes = arg[1], arg[2], tonumber(arg[3])
local client = truto.new { token = "test-token", base_url = base_url }
collectgarbage()
local before = hwm()
local n = 0
local t0 = core.now()
local ok, err = client.custom_api:get("blob", { integrated_account_id = account, bytes = bytes },
  { sink = function(chunk) n = n + #chunk end })
local seconds = core.now() - t0
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
client:close()
io.write(("%d %.6f %d %d\n"):format(n, seconds, hwm(), before))

--- B4, the client side, in a fresh process:
--   lua5.4 bench/stream.lua BASE_URL ACCOUNT BYTES
-- Streams GET /custom/blob?bytes=BYTES through a sink that only counts,
-- and prints "<bytes> <seconds> <VmHWM kB> <VmHWM kB before the transfer>".
package.path = "bench/?.lua;" .. package.path
local support = require "support"
local truto = require "truto"

local now = support.core_field("now")
local base_url, account, bytes = arg[1], arg[2], tonumber(arg[3])
local client = truto.new { token = "test-token", base_url = base_url }
collectgarbage()
local before = support.peak_rss_kb()
local n = 0
local t0 = now()
local ok, err = client.custom_api:get("blob", { integrated_account_id = account, bytes = bytes },
  { sink = function(chunk) n = n + #chunk end })
local seconds = now() - t0
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end
client:close()
io.write(("%d %.6f %d %d\n"):format(n, seconds, support.peak_rss_kb(), before))

--- B6 and B7, the client side, in a fresh process:
--   lua5.4 bench/memory.lua page BASE_URL ACCOUNT RECORDS
--     client.unified_api:list("crm", "contacts", ...) of the large page
--   lua5.4 bench/memory.lua body BASE_URL ACCOUNT BYTES
--     client.unified_api:create("crm", "opportunities", <large body>, ...)
-- Prints "<seconds> <VmHWM kB> <VmHWM kB before the call>": the body table
-- (B7) is built and libcurl loaded before the baseline is read, as the
-- caller holds the table anyway and the C reference links libcurl.
package.path = "bench/?.lua;" .. package.path
local support = require "support"
local truto = require "truto"

local now = support.core_field("now")
local mode, base_url, account, count = arg[1], arg[2], arg[3], tonumber(arg[4])
local client = truto.new { token = "test-token", base_url = base_url }
local query = { integrated_account_id = account }
local body = mode == "body" and support.large_body(count) or nil
-- libcurl is loaded before the baseline, as it is in the C reference (linked
-- with it): B7's growth is the call's, not the loading of libcurl's libraries
-- (about 8.5 MiB, which truto.curl_core brings in at the first transfer).
require "truto.curl_core"
collectgarbage()
local before = support.peak_rss_kb()
local t0 = now()
-- On success the second value is the response, on failure the error.
local result, second
if mode == "page" then
  result, second = client.unified_api:list("crm", "contacts", query)
else
  result, second = client.unified_api:create("crm", "opportunities", body, query)
end
local seconds = now() - t0
local problem = not result and tostring(second)
  or mode == "page" and #result.result ~= count and ("%d records, not %d"):format(#result.result, count)
if problem then
  io.stderr:write("memory.lua ", mode, ": ", problem, "\n")
  os.exit(1)
end
io.write(("%.6f %d %d\n"):format(seconds, support.peak_rss_kb(), before))
client:close()

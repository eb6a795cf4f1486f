-- The Lua service of examples/haproxy/haproxy.cfg: PATCH /opportunities/{id}
-- with a JSON body calls Truto's "Update Opportunities" and answers the
-- updated record (or {"error": {kind, status, message}}).
--
-- This clone's modules and its core built for Lua 5.3 (`make LUA_VERSION=5.3`),
-- found from this file's own path; an installed lua-truto needs neither line.
local root = debug.getinfo(1, "S").source:match("^@(.*)examples/haproxy/[^/]+$") or ""
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/5.3/?.so;" .. package.cpath

local truto = require "truto"

-- One client for the whole process, made as the script loads (it opens no
-- connection there).  transport = "auto" picks HAProxy's sockets; the token
-- and the base URL come from the environment.
local client = truto.new { timeout = 10 }
local account = os.getenv("TRUTO_INTEGRATED_ACCOUNT_ID")

local function reply(applet, status, value)
  local body = truto.encode_json(value)
  applet:set_status(status)
  applet:add_header("content-type", "application/json")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end

core.register_service("update_opportunity", "http", function(applet)
  local id = applet.path:match("^/opportunities/([^/]+)$")
  local body = truto.decode_json(applet:receive() or "")   -- the whole request body
  if not id or type(body) ~= "table" then
    return reply(applet, 400, { error = "PATCH /opportunities/{id} with a JSON object" })
  end
  local record, res = client.unified_api:update("crm", "opportunities", id, body,
    { integrated_account_id = account })
  if not record then
    -- res is the error: kind ("http", "timeout", ...), status, message
    core.Warning(tostring(res))
    return reply(applet, res.kind == "http" and res.status or 502,
      { error = { kind = res.kind, status = res.status, message = res.message } })
  end
  reply(applet, 200, record)
end)

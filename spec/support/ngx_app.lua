-- nginx servers of the specs: the "app" of spec/ngx (handlers that use the
-- library inside nginx) and any other template, started through
-- truto.emulator.nginx and waited for on /health.
local emulator = require "truto.emulator"
local sh = require "spec.support.shell"

local _M = {}

-- <repo>, from this file's path: <repo>/spec/support/ngx_app.lua.
_M.REPO = (function()
  local file = debug.getinfo(1, "S").source:sub(2)
  return sh.capture("realpath " .. sh.quote(file)):match("^(.*)/spec/support/[^/]+\n?$")
end)()

--- opts go to truto.emulator.nginx; waits for /health.  Raises on failure.
function _M.start_server(opts)
  -- The LuaJIT build of the core that nginx loads.
  assert(sh.exists(_M.REPO .. "/build/luajit/truto/core.so"),
    "build/luajit/truto/core.so is missing: run `make luajit`")
  opts.health = "/health"
  return assert(emulator.nginx(opts))
end

--- The whole error log of a server started by start_server.
function _M.error_log(server)
  return (sh.read_file(server.prefix .. "/error.log") or "") .. (sh.read_file(server.prefix .. "/logs/error.log") or "")
end

--- spec/ngx/nginx.conf.in; values: BASE_URL and the TLS_*, CONFORMANCE_TRUST
-- and WORKER_LIMITS placeholders (or a function of the port and prefix
-- returning them), certificates: see truto.emulator.nginx.
function _M.start_app(values, certificates)
  local app = _M.start_server {
    template = _M.REPO .. "/spec/ngx/nginx.conf.in", kind = "truto-ngx-app", certificates = certificates,
    values = function(port, prefix)
      local v = { REPO = _M.REPO, TLS_BASE_URL = "none", TLS_TRUST = "", TLS_SERVER = "", CONFORMANCE_TRUST = "",
                  WORKER_LIMITS = "" }
      for k, x in pairs(type(values) == "function" and values(port, prefix) or values) do v[k] = x end
      return v
    end,
  }
  -- The worker's init_worker timer makes one upstream call (truto_app.lua):
  -- wait for its outcome, so that it never lands in a spec's request log.
  local session = require("truto.curl_core").session { timeout = 5 }
  local deadline = os.time() + 15
  while true do
    local status, _, body = session:perform { url = app.base_url .. "/phase-results" }
    if status == 200 and not body:find('"timer":null', 1, true) then break end
    if os.time() > deadline then
      session:close()
      app:stop()
      error("the app's init_worker timer call never finished: " .. tostring(status) .. " " .. tostring(body), 2)
    end
    sh.run("sleep 0.05")
  end
  session:close()
  return app
end

return _M

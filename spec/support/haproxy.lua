-- HAProxy servers of the specs: `haproxy` (Debian's, with Lua 5.3) run in
-- the foreground from a temp dir, with a generated configuration whose
-- `lua-load`ed script points package.path and package.cpath at this
-- checkout (lua/, the checkout's root for spec modules, build/5.3/) and
-- requires one module, which registers the services.  Waited for on /health.
local curl_core = require "truto.curl_core"
local sh = require "spec.support.shell"
local REPO = require("spec.support.ngx_app").REPO

local _M = { REPO = REPO }

local Server = {}
Server.__index = Server

local CONFIG = [[
global
    nbthread 1
    tune.lua.service-timeout 120s
    lua-load %s/load.lua

defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s

frontend specs
    bind 127.0.0.1:%d
    http-request return status 200 content-type text/plain string ok if { path /health }
%s
]]

local function wait_ready(server)
  local session = curl_core.session { timeout = 1 }
  for _ = 1, 100 do
    local status = session:perform { url = server.base_url .. "/health", timeout = 1 }
    if status == 200 then
      session:close()
      return true
    end
    if not sh.alive(server.pid) then break end
    sh.run("sleep 0.05")
  end
  session:close()
  return false
end

--- Starts HAProxy.  opts: module (what the loaded script requires), routes
-- (frontend lines, e.g. "    http-request use-service lua.update if { path /update }"),
-- env (variables of its environment).  Raises on failure.
---@param opts table
---@return table server { base_url, port, dir, pid, stop, log }
function _M.start(opts)
  for _, module in ipairs { "core", "tls" } do
    assert(sh.exists(REPO .. "/build/5.3/truto/" .. module .. ".so"),
      "build/5.3/truto/" .. module .. ".so is missing: run `make LUA_VERSION=5.3`")
  end
  local dir = assert(sh.mktemp("truto-haproxy"))
  assert(sh.write_file(dir .. "/load.lua", table.concat({
    ("local repo = %q"):format(REPO),
    "package.path = repo .. '/lua/?.lua;' .. repo .. '/lua/?/init.lua;' .. repo .. '/?.lua;' .. package.path",
    "package.cpath = repo .. '/build/5.3/?.so;' .. package.cpath",
    ("require %q"):format(opts.module),
  }, "\n") .. "\n"))
  local last_log
  for _ = 1, 20 do
    local port = math.random(20000, 40000)
    assert(sh.write_file(dir .. "/haproxy.cfg", CONFIG:format(dir, port, opts.routes or "")))
    local _, out = sh.script(dir, opts.env or {}, "haproxy -f haproxy.cfg > haproxy.log 2>&1 &\necho $!\n")
    local server = setmetatable({ dir = dir, port = port, pid = tonumber(out:match("(%d+)")),
                                  base_url = "http://127.0.0.1:" .. port }, Server)
    if wait_ready(server) then return server end
    last_log = server:log()
    server:kill()
  end
  sh.run("rm -rf " .. sh.quote(dir))
  error("haproxy did not start:\n" .. tostring(last_log))
end

--- What HAProxy wrote to its standard output and error (Lua errors included).
function Server:log()
  return sh.read_file(self.dir .. "/haproxy.log") or ""
end

function Server:kill()
  if self.pid and sh.alive(self.pid) then
    sh.run("kill " .. self.pid)
    for _ = 1, 100 do
      if not sh.alive(self.pid) then break end
      sh.run("sleep 0.05")
    end
  end
end

--- Stops HAProxy and removes its temp dir.
function Server:stop()
  self:kill()
  sh.run("rm -rf " .. sh.quote(self.dir))
end

return _M

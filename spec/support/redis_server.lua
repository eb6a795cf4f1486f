-- A redis-server of a spec's own (Debian: redis-server), on a random free
-- port of 127.0.0.1 and ::1, with nothing saved to disk; started and
-- stopped by the spec.  Plain Lua 5.1-5.4 and LuaJIT.
local core = require "truto.core"
local sh = require "spec.support.shell"

local _M = {}

local PORT_MIN, PORT_MAX = 20000, 60999
local ATTEMPTS = 10
local READY_SECONDS = 5

local Server = {}
Server.__index = Server

-- What redis-cli prints for args sent to this server.
function Server:cli(args)
  return sh.capture("redis-cli -h 127.0.0.1 -p " .. self.port .. " " .. args .. " 2>&1")
end

--- Stops taking anything off its sockets (SIGSTOP): the kernel still
-- accepts connections and buffers what is sent, nothing is answered.
function Server:pause() assert(sh.run("kill -STOP " .. self.pid)) end
function Server:resume() assert(sh.run("kill -CONT " .. self.pid)) end

function Server:stop()
  sh.run("kill -CONT " .. self.pid .. " 2>/dev/null; kill " .. self.pid .. " 2>/dev/null")
  local deadline = core.now() + READY_SECONDS
  while sh.alive(self.pid) and core.now() < deadline do core.sleep(0.02) end
  sh.run("rm -rf " .. sh.quote(self.dir))
end

-- One attempt on port: the server once it answers PING, or nil and its log.
local function start_on(dir, port)
  local log = dir .. "/redis-" .. port .. ".log"
  local pid = tonumber(sh.capture("redis-server --port " .. port .. " --bind '127.0.0.1 ::1' --save '' "
    .. "--appendonly no --dir " .. sh.quote(dir) .. " >" .. sh.quote(log) .. " 2>&1 & echo $!"))
  local server = setmetatable({ port = port, pid = pid, dir = dir }, Server)
  local deadline = core.now() + READY_SECONDS
  while sh.alive(pid) and core.now() < deadline do
    if server:cli("ping") == "PONG\n" then return server end
    core.sleep(0.02)
  end
  sh.run("kill " .. pid .. " 2>/dev/null")
  return nil, sh.read_file(log) or ""
end

--- A running redis-server: { port, pid, dir, cli, pause, resume, stop }.
function _M.start()
  local dir = assert(sh.mktemp("truto-redis"))
  local log
  for _ = 1, ATTEMPTS do
    local port = PORT_MIN + tonumber(core.random_hex(4), 16) % (PORT_MAX - PORT_MIN + 1)
    local server
    server, log = start_on(dir, port)
    if server then return server end
  end
  sh.run("rm -rf " .. sh.quote(dir))
  error("redis-server did not start:\n" .. tostring(log), 2)
end

return _M

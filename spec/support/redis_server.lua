-- A real Redis server for the specs (Debian's redis-server): started in the
-- foreground from a temp dir on a free loopback port, nothing saved to
-- disk, optionally with a password (requirepass) or TLS; waited for until
-- it answers PING, stopped (or killed, to play an outage) by the spec.
local sh = require "spec.support.shell"

local _M = {}

local Server = {}
Server.__index = Server

--- redis-cli's answer to a command (its words, as shell words) on the server.
function Server:cli(command)
  local auth = self.password and ("-a %s --no-auth-warning "):format(sh.quote(self.password)) or ""
  return (sh.capture(("timeout 2 redis-cli -p %d %s%s 2>&1"):format(self.port, auth, command)):gsub("\n$", ""))
end

local function ping(server)
  return server:cli("PING") == "PONG"
end

--- Starts redis-server.  opts: { password = string? }.  Raises on failure.
---@param opts? table
---@return table server { port, url, dir, pid, stop, kill, start_again, log }
function _M.start(opts)
  opts = opts or {}
  local dir = assert(sh.mktemp("truto-redis"))
  for _ = 1, 20 do
    local server = setmetatable({ dir = dir, port = math.random(20000, 40000), password = opts.password }, Server)
    if server:launch() then return server end
    server:kill()
  end
  local log = sh.read_file(dir .. "/redis.log")
  sh.run("rm -rf " .. sh.quote(dir))
  error("redis-server did not start:\n" .. tostring(log))
end

function Server:launch()
  local args = { "redis-server", "--port", tostring(self.port), "--bind", "127.0.0.1", "--save", "''",
                 "--appendonly", "no", "--dir", sh.quote(self.dir) }
  if self.password then
    args[#args + 1] = "--requirepass"
    args[#args + 1] = sh.quote(self.password)
  end
  local _, out = sh.script(self.dir, {}, table.concat(args, " ") .. " >> redis.log 2>&1 &\necho $!\n")
  self.pid = tonumber(out:match("(%d+)"))
  self.url = ("redis://127.0.0.1:%d"):format(self.port)
  for _ = 1, 100 do
    if ping(self) then return true end
    if not sh.alive(self.pid) then return false end
    sh.run("sleep 0.05")
  end
  return false
end

--- The server's log.
function Server:log()
  return sh.read_file(self.dir .. "/redis.log") or ""
end

--- Kills the server at once (SIGKILL: an outage, not a shutdown).
function Server:kill()
  if self.pid and sh.alive(self.pid) then
    sh.run("kill -9 " .. self.pid)
    for _ = 1, 100 do
      if not sh.alive(self.pid) then break end
      sh.run("sleep 0.02")
    end
  end
end

--- Starts it again on the same port (its data is gone).
function Server:start_again()
  assert(self:launch(), "redis-server did not start again:\n" .. self:log())
end

--- Stops the server and removes its temp dir.
function Server:stop()
  self:kill()
  sh.run("rm -rf " .. sh.quote(self.dir))
end

return _M

-- A real Redis server for the specs (Debian's redis-server): started in the
-- background from a temp dir on a random free port of 127.0.0.1 and ::1,
-- nothing saved to disk, optionally with a password (requirepass); waited
-- for until it answers PING.  The spec stops it, pauses it (SIGSTOP: the
-- kernel still accepts, nothing is answered) or kills it to play an outage.
-- Plain Lua 5.1-5.4 and LuaJIT.
local core = require "truto.core"
local sh = require "spec.support.shell"

local _M = {}

local PORT_MIN, PORT_MAX = 20000, 60999
local ATTEMPTS = 10
local READY_SECONDS = 5

local Server = {}
Server.__index = Server

--- What redis-cli prints for args (shell words) sent to this server.
function Server:cli(args)
  local auth = self.password and ("-a %s --no-auth-warning "):format(sh.quote(self.password)) or ""
  if self.ca_file then auth = auth .. "--tls --cacert " .. sh.quote(self.ca_file) .. " " end
  return sh.capture(("timeout 2 redis-cli -h 127.0.0.1 -p %d %s%s 2>&1"):format(self.port, auth, args))
end

-- Starts redis-server on self.port; true once it answers PING.
function Server:launch()
  local args = { "redis-server", "--port", tostring(self.port), "--bind", "'127.0.0.1 ::1'", "--save", "''",
                 "--appendonly", "no", "--dir", sh.quote(self.dir) }
  if self.ca_file then
    args[3] = "0"
    for _, a in ipairs { "--tls-port", tostring(self.port), "--tls-cert-file", sh.quote(self.dir .. "/server.pem"),
                         "--tls-key-file", sh.quote(self.dir .. "/server.key"), "--tls-ca-cert-file",
                         sh.quote(self.ca_file), "--tls-auth-clients", "no" } do
      args[#args + 1] = a
    end
  end
  if self.password then
    args[#args + 1] = "--requirepass"
    args[#args + 1] = sh.quote(self.password)
  end
  self.pid = tonumber(sh.capture(table.concat(args, " ") .. " >>" .. sh.quote(self.dir .. "/redis.log")
    .. " 2>&1 & echo $!"))
  self.url = ("%s://127.0.0.1:%d"):format(self.ca_file and "rediss" or "redis", self.port)
  local deadline = core.now() + READY_SECONDS
  while sh.alive(self.pid) and core.now() < deadline do
    if self:cli("ping") == "PONG\n" then return true end
    core.sleep(0.02)
  end
  self:kill()
  return false
end

-- A CA and a certificate for 127.0.0.1 and localhost signed by it, in dir.
local function make_certificates(dir)
  local q = function(name) return sh.quote(dir .. "/" .. name) end
  local key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  assert(sh.run("(" .. table.concat({
    "openssl req -x509 -sha256 -days 2 -subj /CN=truto-redis-ca" .. key .. " -keyout " .. q("ca.key")
      .. " -out " .. q("ca.pem"),
    "echo 'subjectAltName = IP:127.0.0.1, DNS:localhost' > " .. q("server.ext"),
    "openssl req -new -subj /CN=redis" .. key .. " -keyout " .. q("server.key") .. " -out " .. q("server.csr"),
    "openssl x509 -req -sha256 -days 2 -in " .. q("server.csr") .. " -CA " .. q("ca.pem") .. " -CAkey " .. q("ca.key")
      .. " -set_serial 1 -extfile " .. q("server.ext") .. " -out " .. q("server.pem"),
  }, " && ") .. ") >/dev/null 2>&1"), "openssl could not make the test certificates")
  return dir .. "/ca.pem"
end

--- A running redis-server: { port, pid, dir, url, ca_file, cli, pause, resume, kill, start_again, log, stop }.
-- opts: { password = string?, tls = boolean? (TLS only, on `port`; url is rediss://, ca_file its CA) }.
---@param opts? table
---@return table server
function _M.start(opts)
  local dir = assert(sh.mktemp("truto-redis"))
  local ca_file = opts and opts.tls and make_certificates(dir)
  for _ = 1, ATTEMPTS do
    local port = PORT_MIN + tonumber(core.random_hex(4), 16) % (PORT_MAX - PORT_MIN + 1)
    local server = setmetatable({ dir = dir, port = port, password = opts and opts.password, ca_file = ca_file },
                                Server)
    if server:launch() then return server end
  end
  local log = sh.read_file(dir .. "/redis.log")
  sh.run("rm -rf " .. sh.quote(dir))
  error("redis-server did not start:\n" .. tostring(log), 2)
end

--- What the server logged.
function Server:log()
  return sh.read_file(self.dir .. "/redis.log") or ""
end

function Server:pause() assert(sh.run("kill -STOP " .. self.pid)) end
function Server:resume() assert(sh.run("kill -CONT " .. self.pid)) end

-- True while something listens on the server's port.
function Server:listening()
  return sh.capture(("ss -Hltn 'sport = :%d'"):format(self.port)) ~= ""
end

--- Kills the server at once (SIGKILL: an outage, not a shutdown), and waits
-- until its port is closed: its main thread may be a zombie while another
-- of its threads still holds the sockets.
function Server:kill()
  sh.run("kill -CONT " .. self.pid .. " 2>/dev/null; kill -9 " .. self.pid .. " 2>/dev/null")
  local deadline = core.now() + READY_SECONDS
  while (sh.alive(self.pid) or self:listening()) and core.now() < deadline do core.sleep(0.02) end
end

--- Starts it again on the same port, empty.
function Server:start_again()
  assert(self:launch(), "redis-server did not start again:\n" .. self:log())
end

--- Stops the server and removes its temp dir.
function Server:stop()
  self:kill()
  sh.run("rm -rf " .. sh.quote(self.dir))
end

return _M

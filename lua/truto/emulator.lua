--- truto.emulator: a local, stateful stand-in for Truto's API, for tests.
--
-- The emulator runs on nginx with the Lua module, on a loopback port, from
-- the files installed beside this module (truto/emulator/: the nginx
-- template, the fixtures and the handlers) or, in a clone, from emulator/.
-- Processes are driven with io.popen and os.execute only, so this module
-- runs in plain Lua 5.1-5.4 and LuaJIT.
--
--   local emulator = require "truto.emulator"
--   local server = assert(emulator.start())
--   -- server.base_url = "http://127.0.0.1:PORT"; server:requests(), server:reset() ...
--   server:stop()
local core = require "truto.core"
local curl_core = require "truto.curl_core"   -- the launcher talks to the server over libcurl
local truto = require "truto"

local _M = {}

local DEFAULT_MODULES_DIR = "/usr/lib/nginx/modules"
local PORT_MIN, PORT_MAX = 20000, 60999
local BIND_ATTEMPTS = 25
local START_TIMEOUT = 10 -- seconds until the server must answer
local STOP_TIMEOUT = 5   -- seconds for a graceful quit before SIGKILL
local LOG_LINES = 20     -- lines of the error log in a failure message

-- What the module needs of a shell; private: the specs have their own helpers.

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- True when the command exits 0 (os.execute returns a number in 5.1/LuaJIT).
local function run(command)
  local a, _, code = os.execute(command)
  if type(a) == "number" then return a == 0 end
  return a == true and (code == nil or code == 0)
end

local function capture(command)
  local p = io.popen(command)
  if not p then return "" end
  local out = p:read("*a") or ""
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

local function alive(pid)
  return pid ~= nil and run("kill -0 " .. math.floor(pid) .. " 2>/dev/null")
end

-- True while pid is the master of the nginx whose prefix is dir (its
-- process title names the prefix), as /proc tells.
local function is_master(pid, dir)
  local title = read_file("/proc/" .. pid .. "/cmdline")
  return title ~= nil and dir ~= nil and title:find("nginx: master process", 1, true) ~= nil
    and title:find(" -p " .. dir .. "/", 1, true) ~= nil
end

local function sleep(seconds)
  os.execute("sleep " .. string.format("%.2f", seconds))
end

-- dir as an absolute path without "..", or nil when it is no directory.
-- (From the shell: $PWD can be stale when a parent changed directory.)
local function real_dir(dir)
  local out = capture("cd " .. quote(dir) .. " 2>/dev/null && pwd -P")
  return out:match("^(/.-)\n$")
end

-- An absolute path for path (relative ones are taken from the working directory).
local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return real_dir(".") .. "/" .. path
end

-- The emulator's files: installed beside this module (<dir>/truto/emulator/),
-- or the clone's emulator/ (this file being <clone>/lua/truto/emulator.lua).
local function data_dir()
  -- This module's directory as its chunk is named (`make install` compiles
  -- it under its installed path), then where require's path finds it (files
  -- staged under a DESTDIR are not where their names say).
  local source = debug.getinfo(1, "S").source
  local heres = { real_dir(source:sub(1, 1) == "@" and source:sub(2):match("^(.*)/[^/]+$") or ".") or "." }
  -- package.searchpath: Lua 5.2 on, and LuaJIT.
  local found = package.searchpath and package.searchpath("truto.emulator", package.path)   -- luacheck: ignore 143
  if found then heres[2] = real_dir(found:match("^(.*)/[^/]+$") or ".") end
  for _, here in ipairs(heres) do
    for _, dir in ipairs({ here .. "/emulator", here .. "/../../emulator" }) do
      if exists(dir .. "/nginx.conf.in") then return real_dir(dir) end
    end
  end
  return nil, "the emulator's files are missing: no nginx.conf.in in " .. heres[1]
    .. "/emulator (installed) or " .. heres[1] .. "/../../emulator (a clone)"
end

-- A random integer in [low, high] from the core's CSPRNG: Lua's math.random
-- is the caller's, maybe seeded for a reproducible test.
local function random_integer(low, high)
  return low + tonumber(core.random_hex(4), 16) % (high - low + 1)
end

---- nginx --------------------------------------------------------------------

-- load_module lines for the Lua module (and NDK) when they are dynamic modules
-- in modules_dir (Debian); none when nginx has them built in (OpenResty).
local function load_modules(modules_dir)
  local lines = {}
  for _, file in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    local path = (modules_dir or DEFAULT_MODULES_DIR) .. "/" .. file
    if exists(path) then lines[#lines + 1] = "load_module " .. path .. ";" end
  end
  return table.concat(lines, "\n")
end

-- The nginx binary's path: on the PATH, or where Debian and OpenResty put it
-- (a user's PATH often lacks /usr/sbin).
local function find_nginx()
  for _, candidate in ipairs({ "nginx", "/usr/sbin/nginx", "openresty", "/usr/local/openresty/bin/openresty" }) do
    local path = capture("command -v " .. quote(candidate) .. " 2>/dev/null"):match("^(/.-)\n$")
    if path then return path end
  end
  return "nginx"
end

local function render(template, values)
  return (template:gsub("@([A-Z_]+)@", function(name)
    return values[name] or ("@" .. name .. "@")
  end))
end

-- Waits until url answers (with the HTTP status `status` when given, any
-- status otherwise) or the process dies.
local function wait_ready(url, pid, ca_file, status)
  local session = curl_core.session { ca_file = ca_file, timeout = 1, connect_timeout = 1 }
  local deadline = os.time() + START_TIMEOUT
  local ready = false
  repeat
    if not alive(pid) then break end
    local answer = session:perform { method = "GET", url = url }
    if answer and (status == nil or answer == status) then
      ready = true
      break
    end
    sleep(0.05)
  until os.time() > deadline
  session:close()
  return ready
end

-- A throwaway CA and a server certificate for the names in subjectAltName,
-- made with the openssl command line.
local TLS_CONFIG = [[
[req]
distinguished_name = dn
prompt = no
[dn]
CN = truto-emulator
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = %s
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
]]

-- Writes ca.pem, server.pem and server.key into dir; the CA's path, or nil
-- and an error.
local function make_certificates(dir, san)
  local function path(name) return quote(dir .. "/" .. name) end
  local ok, err = write_file(dir .. "/tls.cnf", TLS_CONFIG:format(san))
  if not ok then return nil, "cannot write tls.cnf: " .. tostring(err) end
  local key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -config " .. path("tls.cnf")
  local commands = {
    "openssl req -x509 -new -sha256 -days 2 -subj '/CN=truto-emulator throwaway CA' -extensions ca"
      .. key .. " -keyout " .. path("ca.key") .. " -out " .. path("ca.pem"),
    "openssl req -new -subj /CN=127.0.0.1" .. key
      .. " -keyout " .. path("server.key") .. " -out " .. path("server.csr"),
    "openssl x509 -req -sha256 -days 2 -set_serial " .. random_integer(1, 2147483647)
      .. " -in " .. path("server.csr") .. " -CA " .. path("ca.pem") .. " -CAkey " .. path("ca.key")
      .. " -extfile " .. path("tls.cnf") .. " -extensions server -out " .. path("server.pem"),
  }
  for _, command in ipairs(commands) do
    if not run(command .. " >>" .. path("openssl.log") .. " 2>&1") then
      return nil, "openssl failed: " .. (read_file(dir .. "/openssl.log") or command)
    end
  end
  return dir .. "/ca.pem"
end

---@class truto.Server
---@field base_url string "http://127.0.0.1:PORT" (https:// with TLS)
---@field port integer the port nginx listens on
---@field prefix string nginx's temp dir (nginx.conf, error.log), removed by stop
---@field pid integer the nginx master's process id
---@field ca_file string|nil with TLS: the PEM of the throwaway CA that signed the server's certificate
local Server = {}
Server.__index = Server

--- The end of the server's logs (startup output and error log), for failure
-- messages.
---@param all? boolean true: notices too
---@return string lines the last 20 lines
function Server:log(all)
  if not self.prefix then return "" end
  local lines = {}
  for _, name in ipairs({ "startup.log", "error.log", "logs/error.log" }) do
    for line in (read_file(self.prefix .. "/" .. name) or ""):gmatch("[^\n]+") do
      if all or not line:find("[notice]", 1, true) then lines[#lines + 1] = line end
    end
  end
  return table.concat(lines, "\n", math.max(1, #lines - LOG_LINES))
end

--- Stops nginx (graceful quit, then SIGTERM and SIGKILL if it lingers), waits
-- until the master is gone and removes the temp dir.  Idempotent.
---@return true
function Server:stop()
  return _M.stop(self)
end

-- Lua 5.4: `local server <close> = emulator.start()`, and a last-resort stop
-- when the handle is collected (LuaJIT and 5.1 ignore __gc on tables).
Server.__close = Server.stop
Server.__gc = Server.stop

---@class truto.NginxOptions
---@field template? string the template's path (or `text`)
---@field text? string the template itself
---@field values? table|fun(port: integer, prefix: string): table the placeholders' values
---@field kind? string the temp dir's name (default "truto-nginx")
---@field name? string the server's name in error messages (default `kind`)
-- Run in the temp dir before nginx starts (certificates, static files); a
-- table it returns goes into the handle.
---@field prepare? fun(prefix: string): (table|true|nil, string?)
---@field port? integer a fixed port (default: random free ports)
---@field attempts? integer random ports to try (default 25)
---@field health? string a path polled until it answers
---@field health_status? integer the status `health` must answer (default: any)
---@field tls? boolean the base URL is https://
-- A subjectAltName, e.g. "IP:127.0.0.1, DNS:localhost": makes ca.pem,
-- server.pem and server.key in the temp dir (the handle's `ca_file` is ca.pem).
---@field certificates? string
---@field env? table<string,string> nginx's environment
---@field nginx? string the nginx binary (default: nginx on the PATH, /usr/sbin/nginx or OpenResty's)
---@field modules_dir? string where Debian's dynamic modules are (default /usr/lib/nginx/modules)

--- Starts nginx on 127.0.0.1 from a config template, in a fresh temp dir:
-- for servers of your own next to the emulator (an OpenResty app under test,
-- a proxy).  The template's placeholders are filled from `values` and these:
-- LOAD_MODULES (load_module lines for Debian's dynamic Lua module), USER
-- ("user root;" when run as root), PREFIX (the temp dir) and PORT, each
-- written between two "@" signs.
---@param opts truto.NginxOptions
---@return truto.Server|nil server
---@return string? err why it did not start (with the end of nginx's error log)
function _M.nginx(opts)
  local kind = opts.kind or "truto-nginx"
  local name = opts.name or kind
  local nginx = opts.nginx or find_nginx()
  local template = opts.text
  if not template then
    template = read_file(opts.template)
    if not template then return nil, "cannot read " .. tostring(opts.template) end
  end
  local made = capture("mktemp -d \"${TMPDIR:-/tmp}/" .. kind .. ".XXXXXX\""):match("^(.-)\n$")
  local prefix = made and real_dir(made)
  if not prefix then return nil, "mktemp -d failed" end

  local function fail(message)
    run("rm -rf " .. quote(prefix))
    return nil, message
  end
  if not run("mkdir -p " .. quote(prefix .. "/logs")) then return fail("cannot make " .. prefix .. "/logs") end
  local fields = {}
  if opts.certificates then
    local ca_file, err = make_certificates(prefix, opts.certificates)
    if not ca_file then return fail(err) end
    fields.ca_file = ca_file
  end
  if opts.prepare then
    local result, err = opts.prepare(prefix)
    if not result then return fail(err) end
    if type(result) == "table" then
      for k, v in pairs(result) do fields[k] = v end
    end
  end

  local assignments = {}
  for var, value in pairs(opts.env or {}) do assignments[#assignments + 1] = var .. "=" .. quote(value) .. " " end
  table.sort(assignments)
  -- nginx's LuaJIT reads LUA_PATH and LUA_CPATH for ";;": a caller's, set for
  -- Lua 5.4 (by `luarocks path`, say), would load 5.4 modules into it.
  local launch = "env -u LUA_PATH -u LUA_CPATH " .. table.concat(assignments) .. quote(nginx)
  local defaults = {
    LOAD_MODULES = load_modules(opts.modules_dir),
    USER = capture("id -u 2>/dev/null"):match("^%s*0%s*$") and "user root;" or "",
    PREFIX = prefix,
  }
  local conf = prefix .. "/nginx.conf"
  local fixed = opts.port and opts.port ~= 0
  local last_error = "nginx did not start"
  for _ = 1, fixed and 1 or opts.attempts or BIND_ATTEMPTS do
    local port = fixed and opts.port or random_integer(PORT_MIN, PORT_MAX)
    local values = type(opts.values) == "function" and opts.values(port, prefix) or opts.values or {}
    local all = { PORT = tostring(port) }
    for k, v in pairs(defaults) do all[k] = v end
    for k, v in pairs(values) do all[k] = v end
    local ok, werr = write_file(conf, render(template, all))
    if not ok then return fail("cannot write " .. conf .. ": " .. tostring(werr)) end
    os.remove(prefix .. "/error.log")
    local started = run(launch .. " -p " .. quote(prefix .. "/")
      .. " -c " .. quote(conf) .. " -e " .. quote(prefix .. "/error.log")
      .. " >" .. quote(prefix .. "/startup.log") .. " 2>&1")
    -- The daemon writes its pid file after the command has returned.
    local pid
    for _ = 1, started and 40 or 0 do
      pid = tonumber((read_file(prefix .. "/nginx.pid") or read_file(prefix .. "/logs/nginx.pid") or ""):match("%d+"))
      if pid then break end
      sleep(0.05)
    end
    local server = {
      base_url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port,
      port = port, prefix = prefix, pid = pid, kind = kind,
    }
    if started and pid then
      -- Only a started server is a handle: its __gc stops nginx and removes
      -- the temp dir, which a failed attempt shares with the next one.
      setmetatable(server, Server)
      for k, v in pairs(fields) do server[k] = v end
      if not opts.health or wait_ready(server.base_url .. opts.health, pid, server.ca_file, opts.health_status)
      then
        return server
      end
      last_error = name .. " did not answer within " .. START_TIMEOUT .. " s\n" .. server:log()
      _M.stop(server, { keep_prefix = true })
      break
    end
    last_error = Server.log(server)
    if not last_error:find("Address already in use", 1, true) then break end
  end
  return fail(last_error)
end

---- the emulator -------------------------------------------------------------

---@class truto.Emulator: truto.Server
---@field http2 boolean|nil with TLS: whether nginx negotiates HTTP/2
local Emulator = setmetatable({}, { __index = Server })
Emulator.__index = Emulator
Emulator.__close = Server.stop
Emulator.__gc = Server.stop

-- A control request (/_emulator/...): the decoded answer, or nil and an error.
local function control(server, method, path, body)
  if server.stopped then return nil, "the emulator is stopped" end
  server.session = server.session or curl_core.session { ca_file = server.ca_file, timeout = 10 }
  local status, headers_or_err, text = server.session:perform {
    method = method, url = server.base_url .. "/_emulator/" .. path,
    headers = { "Content-Type: application/json" }, body = body and truto.encode_json(body) or nil,
  }
  if status ~= 200 then
    return nil, ("emulator %s /_emulator/%s: %s"):format(method, path,
      status and ("answered " .. status .. ": " .. tostring(text)) or headers_or_err.message)
  end
  return truto.decode_json(text)
end

--- Restores the fixtures and clears queued faults, the request log, the
-- idempotency cache, statistics and rate-limit counters.
---@return table|nil answer `{ reset = true }`
---@return string? err
function Emulator:reset()
  return control(self, "POST", "reset")
end

--- The requests the emulator received, oldest first (the last 1000; control
-- requests are not logged): `{ time, method, uri, path, query, headers, body }`
-- each, with the time it arrived (seconds since the epoch, to the
-- millisecond), the raw URI, query string and body, and lower-case header names.
---@return table[]|nil requests
---@return string? err
function Emulator:requests()
  return control(self, "GET", "requests")
end

--- Queues faults for the next matching requests, e.g.
-- `{ { method = "PATCH", status = 429, retry_after = "1", count = 2 } }`
-- (fields: method, path_prefix, integrated_account_id, status, retry_after,
-- fault = "drop" | "truncate" | "malformed" | "reset-mid-body" | "slow-body",
-- delay_ms, body, headers, count; see the emulator's README).
---@param faults table[] the faults, matched in order
---@return table|nil answer `{ queued = n, faults = {...} }`
---@return string? err
function Emulator:faults(faults)
  if type(faults) ~= "table" then
    error("bad argument #1 to 'faults' (table expected, got " .. type(faults) .. ")", 2)
  end
  local list = truto.array() -- a copy: the caller's table keeps its metatable
  for i, fault in ipairs(faults) do list[i] = fault end
  return control(self, "POST", "faults", { faults = list })
end

--- The faults still queued, with their remaining counts.
---@return table|nil answer `{ faults = {...} }`
---@return string? err
function Emulator:queued_faults()
  return control(self, "GET", "faults")
end

--- Counters: `{ requests, writes = { ["<account>/<model>/<resource>/<id>"] = n },
-- statuses = { ["200"] = n }, faults_injected, idempotent_replays }`.
---@return table|nil stats
---@return string? err
function Emulator:stats()
  return control(self, "GET", "stats")
end

-- True when the nginx binary was built with HTTP/2.
local function nginx_has_http2(nginx)
  return capture(quote(nginx) .. " -V 2>&1"):find("--with-http_v2_module", 1, true) ~= nil
end

---@class truto.EmulatorOptions
---@field port? integer a fixed port (default: a random free one)
---@field fixtures? string a fixtures JSON file of your own (default: the bundled one)
---@field tls? boolean serve https:// with a throwaway CA (the handle's `ca_file`)
---@field http2? boolean with tls: negotiate HTTP/2 when nginx has it (default true)
-- The nginx binary (default $TRUTO_EMULATOR_NGINX, or nginx on the PATH,
-- /usr/sbin/nginx or OpenResty's).
---@field nginx? string
---@field modules_dir? string where Debian's dynamic modules are (default /usr/lib/nginx/modules)

--- Starts the emulator on a loopback port and waits until it answers.  It
-- accepts the token "test-token" and the integrated account
-- "62f44730-dd91-461e-bd6a-aedd9e0ad79d" (see the fixtures).
---@param opts? truto.EmulatorOptions
---@return truto.Emulator|nil emulator
---@return string? err why it did not start
function _M.start(opts)
  opts = opts or {}
  local dir, derr = data_dir()
  if not dir then return nil, "cannot start the Truto emulator: " .. derr end
  local fixtures = absolute(opts.fixtures or (dir .. "/fixtures.json"))
  if not exists(fixtures) then
    return nil, "cannot start the Truto emulator: no fixtures file " .. fixtures
  end
  local nginx = opts.nginx or os.getenv("TRUTO_EMULATOR_NGINX") or find_nginx()
  local http2 = opts.tls and opts.http2 ~= false and nginx_has_http2(nginx)
  local tls_directives = opts.tls and ("        ssl_certificate \"@PREFIX@/server.pem\";\n"
    .. "        ssl_certificate_key \"@PREFIX@/server.key\";\n        ssl_protocols TLSv1.2 TLSv1.3;") or ""
  local template = read_file(dir .. "/nginx.conf.in")
  local server, err = _M.nginx {
    text = render(template, { TLS = tls_directives }), kind = "truto-emulator", name = "emulator",
    nginx = nginx, port = opts.port, modules_dir = opts.modules_dir,
    tls = opts.tls, certificates = opts.tls and "IP:127.0.0.1, DNS:localhost" or nil,
    health = "/_emulator/health", health_status = 200,
    values = {
      LISTEN_FLAGS = opts.tls and (http2 and " ssl http2" or " ssl") or "",
      LUA_PATH = dir .. "/lua/?.lua;;",
      FIXTURES = string.format("%q", fixtures),
    },
  }
  if not server then return nil, "cannot start the Truto emulator: " .. err end
  if opts.tls then server.http2 = http2 end
  return setmetatable(server, Emulator)
end

--- Stops a server started by start or nginx: nginx quits, and its temp dir is
-- removed.  Idempotent.
---@param server truto.Server
---@param options? { keep_prefix?: boolean } keep_prefix: leave the temp dir (its logs) in place
---@return true
function _M.stop(server, options)
  if type(server) ~= "table" or server.stopped then return true end
  server.stopped = true
  if server.session then server.session:close() end
  local pid = math.floor(tonumber(server.pid) or 0)
  -- Only the master of this server's nginx is signalled: a dead master's pid
  -- may belong to another process by now.
  local function ours() return pid > 1 and is_master(pid, server.prefix) end
  if ours() then
    run("kill -QUIT " .. pid .. " 2>/dev/null")
    local waited = 0
    while ours() and waited < STOP_TIMEOUT do
      sleep(0.05)
      waited = waited + 0.05
    end
    if ours() then
      run("kill -TERM " .. pid .. " 2>/dev/null")
      sleep(0.5)
      if ours() then run("kill -KILL " .. pid .. " 2>/dev/null") end
    end
  end
  -- Workers outlive a master that was killed (kill -9, the OOM killer); the
  -- daemon made itself a process group leader, so its workers share its pid
  -- as their group.
  if pid > 1 then run("pkill -KILL -g " .. pid .. " -f '^nginx: worker process' 2>/dev/null") end
  local kind = (server.kind or "truto-emulator"):gsub("%W", "%%%0")
  if not (options and options.keep_prefix) and server.prefix and server.prefix:find("/" .. kind .. "%.[%w]+$") then
    run("rm -rf " .. quote(server.prefix))
  end
  return true
end

return _M

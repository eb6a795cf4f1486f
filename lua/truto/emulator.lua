--- truto.emulator: start and stop the local Truto emulator (nginx + Lua
-- module) from Lua.  Plain Lua 5.4 or LuaJIT; process control through
-- io.popen/os.execute only.
--
--   local emulator = require "truto.emulator"
--   local handle = assert(emulator.start{ port = 0, fixtures = nil })
--   -- handle.base_url = "http://127.0.0.1:PORT", handle.prefix, handle.pid
--   handle:stop()
--
--   -- HTTPS (and HTTP/2 when nginx has it) with a throwaway CA:
--   local tls = assert(emulator.start{ tls = true })
--   -- tls.base_url = "https://127.0.0.1:PORT", tls.ca_file = "<prefix>/ca.pem"
--
-- emulator.nginx{} starts any nginx config template the same way (the
-- specs' and benchmarks' own servers), and the shell and file helpers the
-- controller uses are exported too (emulator.run, .capture, .read_file, ...).
local _M = {}

local DEFAULT_MODULES_DIR = "/usr/lib/nginx/modules"
local PORT_MIN, PORT_MAX = 20000, 60999
local BIND_ATTEMPTS = 25
local START_TIMEOUT = 10 -- seconds until the server must answer
local STOP_TIMEOUT = 5   -- seconds for a graceful quit before SIGKILL
local LOG_LINES = 20     -- lines of the error log in a failure message

-- The repository root, from this file's own path: <root>/lua/truto/emulator.lua.
local function repo_root()
  local source = debug.getinfo(1, "S").source
  local file = source:sub(1, 1) == "@" and source:sub(2) or "lua/truto/emulator.lua"
  local dir = file:match("^(.*)/lua/truto/[^/]+$")
  if not dir then
    -- Relative path without "lua/" in front of it (cwd inside lua/truto).
    dir = (file:match("^(.*)/[^/]+$") or ".") .. "/../.."
  end
  if dir == "" then dir = "." end
  if dir:sub(1, 1) ~= "/" then
    local pwd = os.getenv("PWD")
    if not pwd then
      local p = io.popen("pwd")
      pwd = p:read("*l")
      p:close()
    end
    dir = pwd .. "/" .. dir
  end
  return dir
end

---- shell and file helpers ---------------------------------------------------

--- s as one shell word.
function _M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local shell_quote = _M.shell_quote

--- Runs a shell command; true when it exits 0.  (os.execute returns
-- true/false in 5.2+, a number in 5.1/LuaJIT.)
function _M.run(command)
  local a, _, code = os.execute(command)
  if type(a) == "number" then return a == 0 end
  return a == true and (code == nil or code == 0)
end
local run = _M.run

--- A shell command's standard output ("" when it cannot be started).
function _M.capture(command)
  local p = io.popen(command)
  if not p then return "" end
  local out = p:read("*a") or ""
  p:close()
  return out
end
local capture = _M.capture

--- A file's bytes, or nil when it cannot be opened.
function _M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end
local read_file = _M.read_file

--- Writes text to path; true, or nil and the error.
function _M.write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end
local write_file = _M.write_file

function _M.file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end
local file_exists = _M.file_exists

function _M.sleep(seconds)
  os.execute("sleep " .. string.format("%.2f", seconds))
end
local sleep = _M.sleep

function _M.is_root()
  return capture("id -u 2>/dev/null"):match("^%s*0%s*$") ~= nil
end

function _M.process_alive(pid)
  return pid ~= nil and run("kill -0 " .. math.floor(pid) .. " 2>/dev/null")
end
local process_alive = _M.process_alive

--- A new temp dir ${TMPDIR:-/tmp}/<kind>.XXXXXX; its path, or nil and an error.
function _M.mktemp(kind)
  local dir = capture("mktemp -d \"${TMPDIR:-/tmp}/" .. kind .. ".XXXXXX\""):match("^%s*(.-)%s*$")
  if dir == "" then return nil, "mktemp -d failed" end
  return dir
end

---- nginx --------------------------------------------------------------------

--- The load_module lines for the Lua module (and NDK) found in modules_dir.
function _M.load_modules(modules_dir)
  modules_dir = modules_dir or DEFAULT_MODULES_DIR
  local lines = {}
  for _, module in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    if file_exists(modules_dir .. "/" .. module) then
      lines[#lines + 1] = "load_module " .. modules_dir .. "/" .. module .. ";"
    end
  end
  return table.concat(lines, "\n")
end

--- template with each @NAME@ replaced by values[NAME] (unknown names stay).
function _M.render(template, values)
  return (template:gsub("@([A-Z_]+)@", function(name)
    return values[name] or ("@" .. name .. "@")
  end))
end

-- Listening sockets in /proc/net/tcp (hex local port, state 0A = LISTEN).
local function port_listening(port)
  local text = read_file("/proc/net/tcp")
  if not text then return nil end
  return text:find(string.format(":%04X 00000000:0000 0A", port)) ~= nil
end

-- Waits until url answers (with the HTTP status `status` when given, any
-- status otherwise) with curl when it is installed, else until the port is
-- listening.
local function wait_ready(url, port, pid, ca_file, status)
  local has_curl = run("command -v curl >/dev/null 2>&1")
  local deadline = os.time() + START_TIMEOUT
  repeat
    if not process_alive(pid) then return false end
    if has_curl then
      local answer = capture("curl -s -o /dev/null -w '%{http_code}' --max-time 1 "
        .. (ca_file and "--cacert " .. shell_quote(ca_file) .. " " or "")
        .. shell_quote(url) .. " 2>/dev/null")
      if answer == (status or answer) and answer:match("^[1-5]%d%d$") then return true end
    elseif port_listening(port) then
      return true
    end
    sleep(0.05)
  until os.time() > deadline
  return false
end

-- A throwaway CA and a server certificate for 127.0.0.1 (and the names in
-- %s), made with the openssl command line in dir.
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

--- Writes ca.pem, server.pem and server.key into dir; san: the server's
-- subjectAltName (default "IP:127.0.0.1, DNS:localhost").  Returns the CA's
-- path, or nil and an error.
function _M.make_certificates(dir, san)
  local function path(name) return shell_quote(dir .. "/" .. name) end
  local ok, err = write_file(dir .. "/tls.cnf", TLS_CONFIG:format(san or "IP:127.0.0.1, DNS:localhost"))
  if not ok then return nil, "cannot write tls.cnf: " .. tostring(err) end
  local key = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -config " .. path("tls.cnf")
  local commands = {
    "openssl req -x509 -new -sha256 -days 2 -subj '/CN=truto-emulator throwaway CA' -extensions ca"
      .. key .. " -keyout " .. path("ca.key") .. " -out " .. path("ca.pem"),
    "openssl req -new -subj /CN=127.0.0.1" .. key
      .. " -keyout " .. path("server.key") .. " -out " .. path("server.csr"),
    "openssl x509 -req -sha256 -days 2 -set_serial " .. math.random(1, 2 ^ 31 - 1)
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

-- True when the nginx binary was built with HTTP/2.
local function nginx_has_http2(nginx)
  return capture(shell_quote(nginx) .. " -V 2>&1"):find("--with-http_v2_module", 1, true) ~= nil
end

local handle_mt = {}
handle_mt.__index = handle_mt

--- The end of the server's logs (startup output, error.log, logs/error.log),
-- without notices unless all is true: for failure messages.
function handle_mt.log(handle, all)
  if not handle.prefix then return "" end
  local lines = {}
  for _, name in ipairs({ "startup.log", "error.log", "logs/error.log" }) do
    for line in (read_file(handle.prefix .. "/" .. name) or ""):gmatch("[^\n]+") do
      if all or not line:find("[notice]", 1, true) then lines[#lines + 1] = line end
    end
  end
  return table.concat(lines, "\n", math.max(1, #lines - LOG_LINES))
end

--- Starts nginx on 127.0.0.1 from a config template in a fresh temp dir.
-- opts:
--   template     path of the template (@NAME@ placeholders), or
--   text         the template itself
--   values       table, or function(port, prefix) -> table: the placeholders
--                beyond LOAD_MODULES, USER, PREFIX and PORT (filled in here)
--   kind         the temp dir's name (default "truto-nginx"), name: the
--                server's name in error messages (default kind)
--   prepare      function(prefix) -> fields or nil, err: run once before
--                the first config is written (certificates, static files);
--                fields (a table, or true) go into the handle
--                (fields.ca_file: the CA to trust while polling)
--   port         fixed port (default: random ones until one is free)
--   attempts     ports to try (default 25)
--   health       path to poll until it answers (health_status: the status
--                it must answer; default any); nil: no wait
--   tls          serve https://
--   env          { NAME = value }: nginx's environment
--   nginx        binary (default "nginx"), modules_dir (default
--                /usr/lib/nginx/modules)
-- Returns handle {base_url, port, prefix, pid, kind, stop, log}, or nil and
-- an error (the temp dir is then gone).
function _M.nginx(opts)
  local kind = opts.kind or "truto-nginx"
  local name = opts.name or kind
  local nginx = opts.nginx or "nginx"
  local template = opts.text
  if not template then
    template = read_file(opts.template)
    if not template then return nil, "cannot read " .. tostring(opts.template) end
  end
  local prefix, err = _M.mktemp(kind)
  if not prefix then return nil, err end

  math.randomseed(os.time() + math.floor((os.clock() * 1e6) % 1e6) + #prefix * 7919
    + (tonumber(prefix:match("(%w+)$"), 36) or 0) % 100000)

  local function fail(message)
    run("rm -rf " .. shell_quote(prefix))
    return nil, message
  end
  if not run("mkdir -p " .. shell_quote(prefix .. "/logs")) then return fail("cannot make " .. prefix .. "/logs") end
  local fields = {}
  if opts.prepare then
    local result, perr = opts.prepare(prefix)
    if not result then return fail(perr) end
    if type(result) == "table" then fields = result end
  end

  local assignments = {}
  for var, value in pairs(opts.env or {}) do assignments[#assignments + 1] = var .. "=" .. shell_quote(value) .. " " end
  table.sort(assignments)
  local defaults = {
    LOAD_MODULES = _M.load_modules(opts.modules_dir),
    USER = _M.is_root() and "user root;" or "",
    PREFIX = prefix,
  }
  local conf = prefix .. "/nginx.conf"
  local fixed = opts.port and opts.port ~= 0
  local last_error = "nginx did not start"
  local logs = { prefix = prefix }
  for _ = 1, fixed and 1 or opts.attempts or BIND_ATTEMPTS do
    local port = fixed and opts.port or math.random(PORT_MIN, PORT_MAX)
    local values = type(opts.values) == "function" and opts.values(port, prefix) or opts.values or {}
    local all = { PORT = tostring(port) }
    for k, v in pairs(defaults) do all[k] = v end
    for k, v in pairs(values) do all[k] = v end
    local ok, werr = write_file(conf, _M.render(template, all))
    if not ok then return fail("cannot write " .. conf .. ": " .. tostring(werr)) end
    os.remove(prefix .. "/error.log")
    local started = run(table.concat(assignments) .. shell_quote(nginx) .. " -p " .. shell_quote(prefix .. "/")
      .. " -c " .. shell_quote(conf) .. " -e " .. shell_quote(prefix .. "/error.log")
      .. " >" .. shell_quote(prefix .. "/startup.log") .. " 2>&1")
    local pid = tonumber((read_file(prefix .. "/nginx.pid") or read_file(prefix .. "/logs/nginx.pid") or "")
      :match("%d+"))
    if started and pid then
      local handle = setmetatable({
        base_url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port,
        port = port, prefix = prefix, pid = pid, kind = kind, nginx = nginx,
      }, handle_mt)
      for k, v in pairs(fields) do handle[k] = v end
      if not opts.health or wait_ready(handle.base_url .. opts.health, port, pid, handle.ca_file, opts.health_status)
      then
        return handle
      end
      last_error = name .. " did not answer within " .. START_TIMEOUT .. " s\n" .. handle:log()
      _M.stop(handle, { keep_prefix = true })
      break
    end
    last_error = handle_mt.log(logs)
    if not last_error:find("Address already in use", 1, true) then break end
  end
  return fail(last_error)
end

--- Starts the emulator.  opts: port (number; random free one when nil or 0),
-- fixtures (path; default emulator/fixtures.json), nginx (binary; default
-- $TRUTO_EMULATOR_NGINX or "nginx"), modules_dir (default /usr/lib/nginx/modules),
-- tls (true: HTTPS with a throwaway CA), http2 (with tls; default true when
-- nginx has HTTP/2).
-- Returns handle {base_url, port, prefix, pid, stop [, ca_file, http2]} or nil, err.
function _M.start(opts)
  opts = opts or {}
  local root = repo_root()
  local template = root .. "/emulator/nginx.conf.in"
  if not file_exists(template) then return nil, "emulator template not found under " .. root .. "/emulator" end
  local fixtures = opts.fixtures or (root .. "/emulator/fixtures.json")
  if fixtures:sub(1, 1) ~= "/" then fixtures = (os.getenv("PWD") or ".") .. "/" .. fixtures end
  if not file_exists(fixtures) then return nil, "fixtures file not found: " .. fixtures end
  local nginx = opts.nginx or os.getenv("TRUTO_EMULATOR_NGINX") or "nginx"

  local listen_flags, tls_directives = "", ""
  local handle, err = _M.nginx {
    template = template, kind = "truto-emulator", name = "emulator", nginx = nginx, port = opts.port,
    modules_dir = opts.modules_dir, tls = opts.tls, health = "/_emulator/health", health_status = "200",
    prepare = opts.tls and function(prefix)
      local ca_file, cerr = _M.make_certificates(prefix)
      if not ca_file then return nil, cerr end
      local http2 = opts.http2 ~= false and nginx_has_http2(nginx)
      listen_flags = http2 and " ssl http2" or " ssl"
      tls_directives = ("        ssl_certificate %s/server.pem;\n        ssl_certificate_key %s/server.key;\n"
        .. "        ssl_protocols TLSv1.2 TLSv1.3;"):format(prefix, prefix)
      return { ca_file = ca_file, http2 = http2 }
    end,
    values = function()
      return {
        LISTEN_FLAGS = listen_flags,
        TLS = tls_directives,
        LUA_PATH = root .. "/emulator/lua/?.lua;;",
        FIXTURES = string.format("%q", fixtures),
      }
    end,
  }
  if not handle then return nil, "cannot start the Truto emulator: " .. err end
  return handle
end

--- Stops nginx (graceful quit, then SIGTERM/SIGKILL if it lingers), waits
-- until the master is gone and removes the temp dir (only one named after
-- handle.kind, default "truto-emulator").  Idempotent.
function _M.stop(handle, options)
  if type(handle) ~= "table" or handle.stopped then return true end
  handle.stopped = true
  local pid = handle.pid
  if process_alive(pid) then
    run("kill -QUIT " .. math.floor(pid) .. " 2>/dev/null")
    local waited = 0
    while process_alive(pid) and waited < STOP_TIMEOUT do
      sleep(0.05)
      waited = waited + 0.05
    end
    if process_alive(pid) then
      run("kill -TERM " .. math.floor(pid) .. " 2>/dev/null")
      sleep(0.5)
      if process_alive(pid) then run("kill -KILL " .. math.floor(pid) .. " 2>/dev/null") end
    end
  end
  local kind = (handle.kind or "truto-emulator"):gsub("%W", "%%%0")
  if not (options and options.keep_prefix) and handle.prefix and handle.prefix:find("/" .. kind .. "%.[%w]+$") then
    run("rm -rf " .. shell_quote(handle.prefix))
  end
  return true
end

handle_mt.stop = _M.stop
-- Lua 5.4: `local h <close> = emulator.start()`, and a last-resort stop when
-- the handle is collected (LuaJIT ignores __gc on tables).
handle_mt.__close = function(handle) _M.stop(handle) end
handle_mt.__gc = function(handle) _M.stop(handle) end

return _M

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
local _M = {}

local DEFAULT_MODULES_DIR = "/usr/lib/nginx/modules"
local PORT_MIN, PORT_MAX = 20000, 60999
local BIND_ATTEMPTS = 25
local START_TIMEOUT = 10 -- seconds until the emulator must answer
local STOP_TIMEOUT = 5   -- seconds for a graceful quit before SIGKILL

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

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute returns true/false (5.2+) or a number (5.1/LuaJIT).
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

local function write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function sleep(seconds)
  os.execute("sleep " .. string.format("%.2f", seconds))
end

local function is_root()
  return capture("id -u 2>/dev/null"):match("^%s*0%s*$") ~= nil
end

local function process_alive(pid)
  return pid and run("kill -0 " .. math.floor(pid) .. " 2>/dev/null")
end

local function error_log_excerpt(prefix)
  local text = (read_file(prefix .. "/startup.log") or "") .. (read_file(prefix .. "/error.log") or "")
  local lines = {}
  for line in text:gmatch("[^\n]+") do
    if not line:find("%[notice%]") then lines[#lines + 1] = line end
  end
  return table.concat(lines, "\n", math.max(1, #lines - 15))
end

local function render_config(template, values)
  return (template:gsub("@([A-Z_]+)@", function(name)
    return values[name] or ("@" .. name .. "@")
  end))
end

local function lua_string_literal(s)
  return string.format("%q", s)
end

-- Listening sockets in /proc/net/tcp (hex local port, state 0A = LISTEN).
local function port_listening(port)
  local text = read_file("/proc/net/tcp")
  if not text then return nil end
  return text:find(string.format(":%04X 00000000:0000 0A", port)) ~= nil
end

-- Waits until the emulator answers /_emulator/health (with curl when it is
-- installed, else until the port is listening).
local function wait_ready(base_url, port, pid, ca_file)
  local has_curl = run("command -v curl >/dev/null 2>&1")
  local deadline = os.time() + START_TIMEOUT
  repeat
    if not process_alive(pid) then return false end
    if has_curl then
      local status = capture("curl -s -o /dev/null -w '%{http_code}' --max-time 1 "
        .. (ca_file and "--cacert " .. shell_quote(ca_file) .. " " or "")
        .. shell_quote(base_url .. "/_emulator/health") .. " 2>/dev/null")
      if status == "200" then return true end
    elseif port_listening(port) then
      return true
    end
    sleep(0.05)
  until os.time() > deadline
  return false
end

-- A throwaway CA and a server certificate for 127.0.0.1 and localhost,
-- made with the openssl command line in the emulator's temp dir.
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
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
]]

local function make_certificates(prefix)
  local function path(name) return shell_quote(prefix .. "/" .. name) end
  local ok, err = write_file(prefix .. "/tls.cnf", TLS_CONFIG)
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
      return nil, "openssl failed: " .. (read_file(prefix .. "/openssl.log") or command)
    end
  end
  return prefix .. "/ca.pem"
end

-- True when the nginx binary was built with HTTP/2.
local function nginx_has_http2(nginx)
  return capture(shell_quote(nginx) .. " -V 2>&1"):find("--with-http_v2_module", 1, true) ~= nil
end

local function random_port()
  return math.random(PORT_MIN, PORT_MAX)
end

local handle_mt = {}
handle_mt.__index = handle_mt

--- Starts nginx.  opts: port (number; random free one when nil or 0),
-- fixtures (path; default emulator/fixtures.json), nginx (binary; default
-- $TRUTO_EMULATOR_NGINX or "nginx"), modules_dir (default /usr/lib/nginx/modules),
-- tls (true: HTTPS with a throwaway CA), http2 (with tls; default true when
-- nginx has HTTP/2).
-- Returns handle {base_url, port, prefix, pid, stop [, ca_file, http2]} or nil, err.
function _M.start(opts)
  opts = opts or {}
  local root = repo_root()
  local template = read_file(root .. "/emulator/nginx.conf.in")
  if not template then return nil, "emulator template not found under " .. root .. "/emulator" end
  local fixtures = opts.fixtures or (root .. "/emulator/fixtures.json")
  if fixtures:sub(1, 1) ~= "/" then fixtures = (os.getenv("PWD") or ".") .. "/" .. fixtures end
  if not file_exists(fixtures) then return nil, "fixtures file not found: " .. fixtures end
  local nginx = opts.nginx or os.getenv("TRUTO_EMULATOR_NGINX") or "nginx"
  local modules_dir = opts.modules_dir or DEFAULT_MODULES_DIR

  local load_modules = {}
  for _, module in ipairs({ "ndk_http_module.so", "ngx_http_lua_module.so" }) do
    if file_exists(modules_dir .. "/" .. module) then
      load_modules[#load_modules + 1] = "load_module " .. modules_dir .. "/" .. module .. ";"
    end
  end

  local prefix = capture("mktemp -d \"${TMPDIR:-/tmp}/truto-emulator.XXXXXX\""):match("^%s*(.-)%s*$")
  if prefix == "" then return nil, "mktemp -d failed" end

  math.randomseed(os.time() + math.floor((os.clock() * 1e6) % 1e6) + #prefix * 7919
    + (tonumber(prefix:match("(%w+)$"), 36) or 0) % 100000)

  local ca_file, listen_flags, tls_directives, http2 = nil, "", "", false
  if opts.tls then
    local err
    ca_file, err = make_certificates(prefix)
    if not ca_file then
      run("rm -rf " .. shell_quote(prefix))
      return nil, "cannot start the Truto emulator: " .. err
    end
    http2 = opts.http2 ~= false and nginx_has_http2(nginx)
    listen_flags = http2 and " ssl http2" or " ssl"
    tls_directives = ("        ssl_certificate %s/server.pem;\n        ssl_certificate_key %s/server.key;\n"
      .. "        ssl_protocols TLSv1.2 TLSv1.3;"):format(prefix, prefix)
  end

  local conf = prefix .. "/nginx.conf"
  local attempts = opts.port and opts.port ~= 0 and 1 or BIND_ATTEMPTS
  local last_error = "nginx did not start"
  for _ = 1, attempts do
    local port = (opts.port and opts.port ~= 0) and opts.port or random_port()
    local ok, err = write_file(conf, render_config(template, {
      LOAD_MODULES = table.concat(load_modules, "\n"),
      USER = is_root() and "user root;" or "",
      PREFIX = prefix,
      PORT = tostring(port),
      LISTEN_FLAGS = listen_flags,
      TLS = tls_directives,
      LUA_PATH = root .. "/emulator/lua/?.lua;;",
      FIXTURES = lua_string_literal(fixtures),
    }))
    if not ok then
      run("rm -rf " .. shell_quote(prefix))
      return nil, "cannot write " .. conf .. ": " .. tostring(err)
    end
    os.remove(prefix .. "/error.log")
    local started = run(shell_quote(nginx) .. " -p " .. shell_quote(prefix .. "/") .. " -c " .. shell_quote(conf)
      .. " -e " .. shell_quote(prefix .. "/error.log")
      .. " >" .. shell_quote(prefix .. "/startup.log") .. " 2>&1")
    local pid = tonumber((read_file(prefix .. "/nginx.pid") or ""):match("%d+"))
    if started and pid then
      local handle = setmetatable({
        base_url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port,
        port = port,
        prefix = prefix,
        pid = pid,
        nginx = nginx,
        ca_file = ca_file,
        http2 = opts.tls and http2 or nil,
      }, handle_mt)
      if wait_ready(handle.base_url, port, pid, ca_file) then return handle end
      last_error = "emulator did not answer within " .. START_TIMEOUT .. " s\n" .. error_log_excerpt(prefix)
      _M.stop(handle, { keep_prefix = true })
      break
    end
    last_error = error_log_excerpt(prefix)
    if not last_error:find("Address already in use", 1, true) then break end
  end
  run("rm -rf " .. shell_quote(prefix))
  return nil, "cannot start the Truto emulator: " .. last_error
end

--- Stops nginx (graceful quit, then SIGTERM/SIGKILL if it lingers), waits
-- until the master is gone and removes the temp dir.  Idempotent.
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
  if not (options and options.keep_prefix) and handle.prefix and handle.prefix:find("/truto%-emulator%.[%w]+$") then
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

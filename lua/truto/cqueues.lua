--- The cqueues transport: the HTTP/1.1 engine (truto.http1) over
-- `cqueues.socket`, so that a call made in a coroutine of a cqueues
-- controller (`cq:wrap(function() ... end)`) yields to the controller while
-- it waits instead of blocking the other coroutines.  TLS is luaossl's (what
-- cqueues uses), verified by DNS name or IP address.  Kept-alive connections
-- are pooled per client (truto.pool, through truto.cosocket).
local found, cqueues = pcall(require, "cqueues")
if not found then
  error("it needs cqueues (Debian: apt-get install lua-cqueues lua-luaossl): " .. tostring(cqueues):match("[^\n]*"), 0)
end
local socket = require "cqueues.socket"
local errno = require "cqueues.errno"
local http1 = require "truto.http1"
local cosocket = require "truto.cosocket"

local _M = {}
local mt = { __index = _M }

local ETIMEDOUT = errno.ETIMEDOUT
local READ_ALL, WRITE_NOW = "b", "bn"   -- binary, and unbuffered output

local function failure(kind, message)
  return nil, { kind = kind, message = message }
end

-- cqueues' sockets raise most errors by default: these return them.
local function return_error(_, _, why) return why end

local function close_socket(conn)
  conn:close()
end

-- An error number of cqueues (an errno, or a negative DNS or TLS code) as
-- the cosocket API's error text.
local function reason(why)
  if why == ETIMEDOUT then return "timeout" end
  return errno.strerror(why) or ("error " .. tostring(why))
end

-- Adds the CAs of a file or a directory to store.  luaossl's error names
-- the path; raised again without this file's position.
local function add_cas(store, path)
  local ok, err = pcall(store.add, store, path)
  if not ok then error(err, 0) end
end

-- The TLS context of a transport, made at its first handshake: the CAs to
-- trust (the option's file or directory, else the system's).
local function tls_context(options)
  local context = require("openssl.ssl.context").new("TLS", false)
  local store = require("openssl.x509.store").new()
  if options.ca_file or options.ca_path then
    if options.ca_file then add_cas(store, options.ca_file) end
    if options.ca_path then add_cas(store, options.ca_path) end
  else
    store:addDefaults()
  end
  context:setStore(store)
  return context
end

-- The driver of truto.cosocket over cqueues sockets, for one transport.
local function driver(options)
  local context
  local d = {}

  function d.connect(host, port, seconds)
    local ok, conn, why = pcall(socket.connect, { host = host, port = port, nodelay = true })
    if not ok then return nil, tostring(conn) end
    if not conn then return nil, reason(why) end
    conn:onerror(return_error)
    conn:setmode(READ_ALL, WRITE_NOW)
    -- Held while it connects: the socket (truto.cosocket) holds it after.
    cosocket.hold(conn, close_socket)
    local done
    done, why = conn:connect(seconds)
    cosocket.release(conn)
    if not done then
      conn:close()
      return nil, reason(why)
    end
    return conn
  end

  function d.handshake(conn, name, is_address, verify, seconds)
    local ssl = require "openssl.ssl"
    if not context then
      local ok, made = pcall(tls_context, options)
      if not ok then return nil, "cannot load the CA certificates: " .. tostring(made) end
      context = made
    end
    local tls = ssl.new(context)
    if verify then
      tls:setVerify(ssl.VERIFY_PEER)
      local param = require("openssl.x509.verify_param").new()
      if is_address then param:setIP(name) else param:setHost(name) end
      tls:setParam(param)
    else
      tls:setVerify(ssl.VERIFY_NONE)
    end
    if not is_address then tls:setHostName(name) end   -- SNI
    local done, why = conn:starttls(tls, seconds)
    if done then return true end
    if why == ETIMEDOUT then return nil, "timeout" end
    local code, text = tls:getVerifyResult()
    if code ~= 0 then return nil, text end   -- "hostname mismatch", "certificate has expired", ...
    return nil, reason(why)
  end

  function d.send(conn, data, seconds)
    local done, why = conn:xwrite(data, WRITE_NOW, seconds)
    if done then return true end
    return nil, reason(why)
  end

  function d.receive(conn, max, seconds)
    local data, why = conn:xread(-max, READ_ALL, seconds)
    if data then return data end
    if why then return nil, reason(why) end
    return nil, "closed"
  end

  d.close = close_socket

  -- Idle and open: a read that would wait (nothing arrived, no EOF).  The
  -- socket keeps a read's timeout as its error until cleared.
  function d.usable(conn)
    local data, why = conn:xread(-1, READ_ALL, 0)
    conn:clearerr("r")
    return data == nil and why == ETIMEDOUT
  end

  return d
end

--- Whether the running code may wait on cqueues: in a coroutine that a
-- controller runs (not in a coroutine of its own inside one).
---@return boolean
local function in_controller()
  local _, managed = cqueues.running()
  return managed == true
end

--- A transport for one client, with its own pool of kept-alive connections.
---@param options truto.Options the client's, timeouts filled in
---@return table transport
function _M.new(options)
  return cosocket.pooled(http1.transport(options, mt), driver(options), cqueues.monotime)
end

--- Closes the kept-alive connections.  Idempotent.
_M.close = cosocket.close_pooled

--- Waits without blocking the controller's other coroutines.
---@param seconds number
function _M.sleep(seconds)
  cqueues.sleep(seconds)
end

--- The monotonic clock, in seconds.
---@return number
function _M.now()
  return cqueues.monotime()
end

-- Closes what the workers of a batch hold open.
local function close_workers(workers)
  for _, co in pairs(workers) do cosocket.close_held(co) end
end

--- Runs every worker in a coroutine of a controller of its own, polled from
-- the running one (so the host's other coroutines go on), and returns when
-- all are done.  An error raised in one is raised again once the others'
-- connections are closed (those already back in the pool stay there); the
-- others are never resumed.  The same when the caller's own batch stops
-- it.  Outside a controller the workers run one after the other (each call
-- then fails with kind "phase", as a single call does).
---@param _ table the transport
---@param workers function[]
function _M.run_concurrently(_, workers)
  if not in_controller() then
    for _, worker in ipairs(workers) do worker() end
    return
  end
  local loop, running = cqueues.new(), {}
  for i, worker in ipairs(workers) do
    loop:wrap(function()
      running[i] = coroutine.running()
      worker()
    end)
  end
  cosocket.hold(running, close_workers)
  local ok, err = loop:loop()
  cosocket.release(running)
  if not ok then
    close_workers(running)
    error(err, 0)
  end
end

--- Sends req ({method, url, headers, body}) under the transport contract
-- (lua/truto/http1.lua).  Returns status, headers, body, info, or nil, err;
-- kind "phase" outside a coroutine run by a cqueues controller.
---@param req table
---@param call table
---@return integer|nil status
---@return table headers_or_err
---@return string? body
---@return table? info
function _M:perform(req, call)
  if not in_controller() then
    return failure("phase", "cannot make an HTTP call outside a coroutine run by a cqueues controller: "
      .. "run it in one, e.g. cq:wrap(function() ... end) then cq:loop()")
  end
  return http1.send(self, req, call)
end

return _M

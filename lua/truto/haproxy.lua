--- The HAProxy transport: the HTTP/1.1 engine (truto.http1) over HAProxy's
-- Lua sockets (`core.tcp()`), so that a call made in a `lua-load`ed service,
-- action or task yields to HAProxy's event loop instead of blocking it.
--
-- What HAProxy 2.6's sockets allow shapes it (HACKING.md, "The HAProxy
-- transport"):
-- * a read waits for a whole count (`receive(n)`), so the engine tells each
--   read how many bytes it is sure to take (a head is read a byte at a
--   time, a body by its length);
-- * a socket's timeout is an inactivity timeout, which a trickle of bytes
--   keeps pushing back: a watchdog task closes a socket whose read passes
--   the exchange's deadline;
-- * at run time a socket connects to an IP address only (no DNS): a host
--   name is refused, and Truto's is reached through a local listener of
--   haproxy.cfg whose `server` line resolves it (and verifies its TLS);
-- * `connect_ssl` neither verifies the certificate nor sends SNI, so https
--   is truto.tls (OpenSSL over memory buffers, through cosocket.tls) over
--   a plain socket, the certificate verified against the IP address, its
--   ciphertext read a record at a time (each part's length is known).
-- Kept-alive connections are pooled per client (truto.pool, through
-- truto.cosocket).
local http1 = require "truto.http1"
local cosocket = require "truto.cosocket"

local _M = {}
local mt = { __index = _M }

local WATCH_MS = 10   -- how often the watchdog looks at the reads in progress
local CLOCK_TICK = 0.002   -- seconds: HAProxy's timers and clock have 1 ms steps
local POLL_MS = 5     -- how often a batch looks whether its tasks are done

local function failure(kind, message)
  return nil, { kind = kind, message = message }
end

-- HAProxy's global `core`, read when used: this module may be loaded (and
-- `transport = "haproxy"` refused later) outside HAProxy.
local function host()
  return rawget(_G, "core")
end

--- HAProxy's clock (its own, monotonic, updated by its event loop), in seconds.
---@return number
function _M.now()
  local t = host().now()
  return t.sec + t.usec / 1e6
end

--- Waits without blocking HAProxy's event loop.
---@param seconds number
function _M.sleep(seconds)
  host().msleep(math.max(0, math.floor(seconds * 1000 + 0.5)))
end

-- ---- the watchdog -------------------------------------------------------

-- Reads in progress that wait for more than a byte: conn -> deadline.  One
-- task per Lua state closes those past their deadline, and ends when none
-- is left.
local watched, watching = {}, false

local function watchdog()
  while next(watched) do
    host().msleep(WATCH_MS)
    local now = _M.now()
    for conn, deadline in pairs(watched) do
      if now >= deadline then
        watched[conn] = nil
        conn.expired = true
        pcall(conn.socket.close, conn.socket)   -- wakes the read, which sees `expired`
      end
    end
  end
  watching = false
end

local function watch(conn, deadline)
  watched[conn] = deadline
  if not watching then
    watching = true
    host().register_task(watchdog)
  end
end

-- ---- the driver of truto.cosocket ---------------------------------------

local function is_address(name)
  return name:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or name:find(":", 1, true) ~= nil
end

local driver = {}

function driver.connect(name, port, seconds)
  if not is_address(name) then
    return nil, "cannot resolve " .. name .. " at run time: HAProxy's Lua sockets connect to IP addresses only"
  end
  local socket = host().tcp()
  socket:settimeout(seconds)
  local started = _M.now()
  local ok, done, err = pcall(socket.connect, socket, name, port)
  if ok and done then return { socket = socket } end
  socket:close()
  if not ok then return nil, tostring(done) end
  if _M.now() - started >= seconds then return nil, "timeout" end
  return nil, "connection refused or failed (" .. tostring(err) .. ")"
end

-- settimeout raises once the socket's stream is gone (the peer closed).
local function set_timeout(conn, seconds)
  return pcall(conn.socket.settimeout, conn.socket, seconds)
end

function driver.send(conn, data, seconds)
  if not set_timeout(conn, seconds) then return nil, "closed" end
  local sent = conn.socket:send(data)
  if sent == #data then return true end
  return nil, "closed"
end

-- min(need, max) bytes (max when need is nil: until the peer closes), or
-- fewer when the peer closes; "timeout" once the exchange's time is up,
-- whatever arrived.
function driver.receive(conn, max, seconds, need)
  local count = math.min(need or max, max)
  local deadline = _M.now() + seconds
  if not set_timeout(conn, seconds) then return nil, "closed" end
  -- A read of one byte returns at the first one: the engine then checks
  -- the clock itself.  A longer one may be stretched by a trickle.
  if count > 1 then watch(conn, deadline) end
  local data = conn.socket:receive(count)
  watched[conn] = nil
  -- HAProxy's timers tick in milliseconds: one may end the read a tick
  -- before the deadline as this clock reads it.
  if conn.expired or (data == nil and _M.now() >= deadline - CLOCK_TICK) then return nil, "timeout" end
  if data == nil then return nil, "closed" end
  return data
end

function driver.close(conn)
  watched[conn] = nil
  conn.socket:close()
end

-- HAProxy cannot look at a socket without waiting: a connection whose
-- stream is gone has no peer; one the server closed meanwhile fails at
-- its first read, and the engine sends the request again on a new one.
function driver.usable(conn)
  return not conn.expired and conn.socket:getpeername() ~= nil
end

-- ---- the transport ------------------------------------------------------

--- A transport for one client, with its own pool of kept-alive connections.
---@param options truto.Options the client's, timeouts filled in
---@return table transport
function _M.new(options)
  if type(host()) ~= "table" or type(host().tcp) ~= "function" then
    error("it runs inside HAProxy only (a script loaded by lua-load or lua-load-per-thread)", 0)
  end
  local tls_driver = cosocket.tls(driver, { now = _M.now, ca_file = options.ca_file, ca_path = options.ca_path,
                                            counted_reads = true })
  return cosocket.pooled(http1.transport(options, mt), tls_driver, _M.now, {
    counted_reads = true,
    resolve_hint = " (point base_url at a listener of haproxy.cfg that forwards to Truto: "
      .. "README, \"Using with HAProxy\")",
  })
end

--- Closes the kept-alive connections.  Idempotent.
_M.close = cosocket.close_pooled

-- The tasks of the batches running, by coroutine: a worker of a batch that
-- failed stops at its next call.
local batch_of = setmetatable({}, { __mode = "k" })
local STOPPED = {}   -- the error that stops such a worker

--- Runs every worker in a task of its own (`core.register_task`) and
-- returns when all are done.  The first error one raises is raised again,
-- once the calls then in flight have finished (HAProxy cannot stop a task
-- from outside); the others make no further call.  Outside a context that
-- can yield the workers run one after the other (each call then fails with
-- kind "phase", as a single call does).
---@param _ table the transport
---@param workers function[]
function _M.run_concurrently(_, workers)
  if not coroutine.isyieldable() then
    for _, worker in ipairs(workers) do worker() end
    return
  end
  local batch = { pending = #workers }
  for _, worker in ipairs(workers) do
    host().register_task(function()
      batch_of[coroutine.running()] = batch
      local ok, err = pcall(worker)
      if not ok and err ~= STOPPED and not batch.failed then batch.failed = { err } end
      batch.pending = batch.pending - 1
    end)
  end
  while batch.pending > 0 do host().msleep(POLL_MS) end
  if batch.failed then error(batch.failed[1], 0) end
end

--- Sends req ({method, url, headers, body}) under the transport contract
-- (lua/truto/http1.lua).  Returns status, headers, body, info, or nil, err:
-- kind "phase" where HAProxy cannot yield (a script's body, an init
-- function).
---@param req table
---@param call table
---@return integer|nil status
---@return table headers_or_err
---@return string? body
---@return table? info
function _M:perform(req, call)
  if not coroutine.isyieldable() then
    return failure("phase", "cannot make an HTTP call where HAProxy cannot yield: "
      .. "call it from a service, an action or a task (core.register_service, core.register_action, "
      .. "core.register_task)")
  end
  local batch = batch_of[coroutine.running()]
  if batch and batch.failed then error(STOPPED, 0) end
  return http1.send(self, req, call)
end

return _M

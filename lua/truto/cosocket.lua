--- A socket with the part of nginx's cosocket API that the engine
-- (`truto.http1`) uses, made from a host's driver and pooled by
-- `truto.pool`: what a host without cosockets (cqueues, luv, HAProxy) gives
-- the engine as `env.tcp()`.  The driver does the host's I/O, yielding to
-- its loop; this module holds what every host shares (timeouts in the
-- cosocket's milliseconds, pool keys, reuse counts, a closed socket's
-- errors).
--
-- A driver is a table of functions; `conn` is the host's own connection:
--   connect(host, port, seconds) -> conn | nil, err ("timeout" or a message)
--   handshake(conn, name, is_address, verify, seconds) -> true | nil, err:
--     TLS, verifying the certificate against name (a DNS name, sent as SNI,
--     or an IP address) unless verify is false
--   send(conn, data, seconds) -> true | nil, err ("timeout", "closed", ...)
--   receive(conn, max, seconds, need) -> up to max bytes as soon as any
--     arrive | nil, err ("timeout", "closed", ...); need (the bytes the
--     engine needs at least, nil: until the peer closes) is given only to a
--     host whose reads wait for a whole count (env.counted_reads in
--     truto.http1), which then reads min(need, max) bytes, fewer only at
--     the peer's close
--   close(conn)
--   usable(conn) -> boolean: open, and nothing arrived while it was idle
-- A host whose sockets only move bytes gives its driver TLS with `_M.tls`.
--
-- What a coroutine holds open (its sockets' connections, a connection its
-- driver is still opening, a batch it runs) is recorded, so that a batch
-- stopped by an error closes what its other workers hold at once
-- (`_M.close_held`) rather than leaving it open until the collector finds
-- their coroutines, which are never resumed.
local pools = require "truto.pool"

local _M = {}

-- ---- what each coroutine holds open ------------------------------------

-- coroutine -> { [thing] = how to close it }; thing -> its coroutine.
-- Weak, so that the record never keeps either alive.
local held = setmetatable({}, { __mode = "k" })
local holder = setmetatable({}, { __mode = "k" })

--- Records that the running coroutine holds thing open until `release`:
-- `close_held` of the coroutine calls close(thing) meanwhile.  Nothing is
-- recorded on a main thread (no batch runs one as a worker).
---@param thing any a connection, a socket, a batch
---@param close fun(thing: any)
function _M.hold(thing, close)
  local co, main = coroutine.running()
  if co == nil or main then return end
  local things = held[co]
  if not things then
    things = setmetatable({}, { __mode = "k" })
    held[co] = things
  end
  things[thing] = close
  holder[thing] = co
end

--- thing is no longer held (closed, pooled, or handed on).
---@param thing any
function _M.release(thing)
  local co = holder[thing]
  if co == nil then return end
  holder[thing] = nil
  held[co][thing] = nil
end

--- Closes everything co holds open (and, through the batches it runs,
-- what their workers hold).
---@param co thread
function _M.close_held(co)
  local things = held[co]
  if not things then return end
  for thing, close in pairs(things) do
    _M.release(thing)
    close(thing)
  end
end

-- The most ciphertext read from the socket at a time while TLS waits for
-- more (a record is at most about 16 KiB).
local TLS_READ_BYTES = 64 * 1024
-- A TLS record's header: type, version (2 bytes), length (2 bytes).
local RECORD_HEADER_BYTES = 5

local Socket = {}
Socket.__index = Socket

--- A new, unconnected socket.
---@param driver table the host's I/O (above)
---@param pool table a `truto.pool` made with the driver's close
---@return table socket
function _M.new(driver, pool)
  return setmetatable({ driver = driver, pool = pool, seconds = 60, conn = nil, reused = 0 }, Socket)
end

--- The time each following operation may take.
---@param ms integer milliseconds
function Socket:settimeout(ms)
  self.seconds = ms / 1000
end

--- Connects to host:port, or takes an idle connection kept under
-- `options.pool` (default `host:port`).
---@param host string a DNS name or an IP address (IPv6 in brackets or not)
---@param port integer
---@param options? table { pool = string }
---@return integer|nil ok 1
---@return string? err
function Socket:connect(host, port, options)
  if self.conn then self:close() end
  host = host:match("^%[(.*)%]$") or host
  self.host = host
  self.key = options and options.pool or (host .. ":" .. port)
  local conn, reused = self.pool:take(self.key, self.driver.usable)
  if conn then
    self.conn, self.reused = conn, reused + 1
  else
    local err
    conn, err = self.driver.connect(host, port, self.seconds)
    if not conn then return nil, err end
    self.conn, self.reused = conn, 0
  end
  _M.hold(self, Socket.close)
  return 1
end

--- How many times the connection was taken from the pool (0: a new one).
---@return integer
function Socket:getreusedtimes()
  return self.reused
end

--- TLS over the connection.  The certificate is checked against
-- server_name, or, with none (no SNI is sent for an address, RFC 6066),
-- against the address connected to.
---@param _ any a session to resume (not supported: ignored)
---@param server_name? string
---@param verify? boolean false turns the check off
---@return boolean|nil ok
---@return string? err
function Socket:sslhandshake(_, server_name, verify)
  if not self.conn then return nil, "closed" end
  return self.driver.handshake(self.conn, server_name or self.host, server_name == nil, verify ~= false,
    self.seconds)
end

--- Sends data whole.
---@param data string
---@return integer|nil bytes
---@return string? err
function Socket:send(data)
  if not self.conn then return nil, "closed" end
  local ok, err = self.driver.send(self.conn, data, self.seconds)
  if not ok then return nil, err end
  return #data
end

--- Up to max bytes, as soon as any arrive (or, on a host whose reads wait
-- for a whole count, the need bytes the engine is sure to take).
---@param max integer
---@param need? integer
---@return string|nil data
---@return string? err "timeout", "closed" or the host's message
function Socket:receiveany(max, need)
  if not self.conn then return nil, "closed" end
  return self.driver.receive(self.conn, max, self.seconds, need)
end

--- Closes the connection.  Idempotent.
---@return integer ok 1
function Socket:close()
  if self.conn then
    _M.release(self)
    self.driver.close(self.conn)
    self.conn = nil
  end
  return 1
end

--- Gives the connection to the pool, kept idle for ms at most, `size` per
-- pool key; the socket is closed to its user.
---@param ms integer
---@param size integer
---@return integer|nil ok 1
---@return string? err
function Socket:setkeepalive(ms, size)
  if not self.conn then return nil, "closed" end
  _M.release(self)
  self.pool:put(self.key, self.conn, self.reused, ms / 1000, size)
  self.conn = nil
  return 1
end

-- ---- TLS over a driver without it ------------------------------------

--- A driver that adds TLS (truto.tls: OpenSSL over memory buffers) to a
-- driver whose connections only move bytes: its `handshake` verifies the
-- certificate (by DNS name with SNI, or by IP address) unless told not to,
-- then its `send` and `receive` carry plaintext, pumping the ciphertext
-- through raw's send and receive, each under the operation's time.  The
-- TLS module and the CAs load at the first handshake.  With counted_reads
-- (a host whose reads wait for a whole count: raw.receive takes `need`)
-- the ciphertext is read a record's part at a time, never more than the
-- peer has said it sends.
---@param raw table a driver without `handshake` (connect, send, receive, close, usable)
---@param options table { now = fun(): number (seconds), ca_file = string?, ca_path = string?,
---  counted_reads = boolean? }
---@return table driver
function _M.tls(raw, options)
  local now = options.now
  local tls, context
  local d = {}

  -- The next part of a record: its header, then the length the header
  -- gives.  The header goes to TLS alone, so that a peer speaking no TLS
  -- fails there rather than leaving a read to wait for a length it never
  -- sends.  Fewer bytes than asked: the peer closed inside a record.
  local function receive_record_part(conn, seconds)
    local size = conn.record_left or RECORD_HEADER_BYTES
    local data, err = raw.receive(conn.raw, size, seconds, size)
    if not data then return nil, err end
    if #data < size then return nil, "closed" end
    if conn.record_left then
      conn.record_left = nil
    else
      local length = data:byte(4) * 256 + data:byte(5)
      if length > 0 then conn.record_left = length end
    end
    return data
  end

  local function receive_ciphertext(conn, seconds)
    if options.counted_reads then return receive_record_part(conn, seconds) end
    return raw.receive(conn.raw, TLS_READ_BYTES, seconds)
  end

  -- Sends what the engine has to send; true or nil, err.
  local function flush(conn, deadline)
    local out = conn.tls:pending_output()
    if out == "" then return true end
    return raw.send(conn.raw, out, math.max(0, deadline - now()))
  end

  -- Runs conn.tls:method(arg) until it gives a result: sending what it
  -- wrote, feeding it what the socket receives while it wants more.
  -- Returns its result, or nil, err ("timeout", "closed", the socket's or
  -- OpenSSL's reason: a TLS failure's own, though its alert could not be sent).
  local function pump(conn, seconds, method, arg)
    local deadline = now() + seconds
    local engine = conn.tls
    while true do
      local result, state = engine[method](engine, arg)
      local sent, err = flush(conn, deadline)
      if result then
        if not sent then return nil, err end
        return result
      end
      if state ~= "want_read" then return nil, state end
      if not sent then return nil, err end
      local left = deadline - now()
      if left <= 0 then return nil, "timeout" end
      local data
      data, err = receive_ciphertext(conn, left)
      if not data then return nil, err end
      local fed
      fed, err = engine:feed(data)
      if not fed then return nil, err end
    end
  end

  function d.connect(host, port, seconds)
    local conn, err = raw.connect(host, port, seconds)
    if not conn then return nil, err end
    return { raw = conn }
  end

  -- truto.tls tells a name from an address by itself.
  function d.handshake(conn, name, _, verify, seconds)
    if not context then
      local found, module = pcall(require, "truto.tls")
      if not found then return nil, "the TLS module cannot be loaded: " .. tostring(module):match("[^\n]*") end
      local made, err = module.context { ca_file = options.ca_file, ca_path = options.ca_path }
      if not made then return nil, err end
      tls, context = module, made
    end
    local made, err = tls.client(context, { host = name, verify = verify })
    if not made then return nil, err end
    conn.tls = made
    return pump(conn, seconds, "handshake")
  end

  function d.send(conn, data, seconds)
    if not conn.tls then return raw.send(conn.raw, data, seconds) end
    return pump(conn, seconds, "write", data)
  end

  -- need (counted reads) bounds plain TCP's read; TLS hands on a record's
  -- plaintext at a time, which never waits for more than the peer sends.
  function d.receive(conn, max, seconds, need)
    if not conn.tls then return raw.receive(conn.raw, max, seconds, need) end
    return pump(conn, seconds, "read", max)
  end

  function d.close(conn)
    if conn.tls then conn.tls:close() end
    raw.close(conn.raw)
  end

  -- Idle, open, and nothing received that TLS has not handed on.
  function d.usable(conn)
    return raw.usable(conn.raw) and not (conn.tls and conn.tls:buffered() > 0)
  end

  return d
end

--- Gives a transport made by `http1.transport` its pool of kept-alive
-- connections and the engine's `env` over the host's driver: what every
-- host without cosockets shares.
---@param transport table
---@param driver table the host's I/O (above)
---@param now fun(): number the host's clock, in seconds
---@param extra? table more fields of `env` (hints, counted_reads)
---@return table transport
function _M.pooled(transport, driver, now, extra)
  local connections = pools.new(now, driver.close)
  transport.connections = connections
  transport.env = {
    tcp = function() return _M.new(driver, connections) end,
    now = now,
    pool = "truto",
    insecure = transport.insecure,
  }
  for k, v in pairs(extra or {}) do transport.env[k] = v end
  return transport
end

--- The `close` of such a transport: closes its kept-alive connections.
-- Idempotent.
---@param transport table
function _M.close_pooled(transport)
  transport.connections:close_all()
end

return _M

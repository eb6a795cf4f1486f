--- The libuv transport (transport = "luv"): the HTTP/1.1 engine
-- (truto.http1) over libuv TCP handles through luv, so that a call made in
-- a coroutine yields while libuv waits and the loop's other work goes on;
-- libuv's callbacks resume it.  The uv module is the option `uv` (one's own
-- luv, e.g. Luvit's `require "uv"`), else Neovim's (`vim.uv`, `vim.loop`),
-- else lua-luv's `require "luv"`.  Kept-alive connections are pooled per
-- client (truto.pool, through truto.cosocket).  libuv has no TLS: truto.tls
-- (OpenSSL over memory buffers) runs over its TCP handles (cosocket.tls),
-- verified by DNS name or IP address.
local http1 = require "truto.http1"
local cosocket = require "truto.cosocket"

local _M = {}
local mt = { __index = _M }

-- Reading stops while this much has arrived and not been taken (a sink
-- that yields, an idle connection whose peer talks), and starts again
-- once the engine has taken it.
local READ_AHEAD_BYTES = 64 * 1024

local function failure(kind, message)
  return nil, { kind = kind, message = message }
end

--- The uv module of the host: Neovim's, else lua-luv's; or nil, why not.
---@return table|nil uv
---@return string? why
local function host_uv()
  local vim = rawget(_G, "vim")
  if type(vim) == "table" and (vim.uv or vim.loop) then return vim.uv or vim.loop end
  local found, luv = pcall(require, "luv")
  if found then return luv end
  return nil, "it needs luv (Debian: apt-get install lua-luv), Neovim's vim.loop or the option uv: "
    .. tostring(luv):match("[^\n]*")
end

--- Whether the running code may yield: in a coroutine, and not across a C
-- call that forbids it.
---@return boolean
local function yieldable()
  if coroutine.isyieldable then return coroutine.isyieldable() end   -- luacheck: ignore 143 (5.3 on)
  local co, main = coroutine.running()
  return co ~= nil and not main
end

-- Resumes co from a libuv callback.  An error it raises is the host's to
-- report, as any error raised in a callback (luv prints it and exits,
-- Neovim shows it): it is not ours to swallow.
local function resume(co)
  local ok, err = coroutine.resume(co)
  if not ok then error(err, 0) end
end

local function close_handle(handle)
  if not handle:is_closing() then handle:close() end
end

--- The waits of one transport: `wait(seconds, start, stop)` suspends the
-- running coroutine until `wake(a, b)` (which start(wake) hands to a libuv
-- request) is called, and returns a, b; or, once seconds pass (nil: no
-- limit), calls stop() and returns nil, "timeout".  `abort(co)` ends co's
-- wait for good: its operation is stopped and co never resumed (a batch
-- whose worker raised).  Every wait with a limit holds a timer, which keeps
-- the loop alive while it waits (the TCP handles do not: an idle kept-alive
-- connection must not keep `uv.run()` from returning).
---@param uv table
---@return function wait
---@return function abort
local function waits(uv)
  local aborts = setmetatable({}, { __mode = "k" })

  local function wait(seconds, start, stop)
    local co = coroutine.running()
    local woken, first, second, timer
    local function finish()
      woken = true
      aborts[co] = nil
      if timer then close_handle(timer) end
    end
    local function wake(a, b)
      if woken then return end
      finish()
      first, second = a, b
      if coroutine.status(co) == "suspended" then resume(co) end
    end
    start(wake)
    if woken then return first, second end
    if seconds then
      uv.update_time()   -- the loop's clock is that of its last turn: a timer counts from now
      timer = uv.new_timer()
      timer:start(math.max(0, math.ceil(seconds * 1000)), 0, function()
        stop()
        wake(nil, "timeout")
      end)
    end
    aborts[co] = function()
      finish()
      stop()
    end
    -- Only wake ends the wait: a resume from elsewhere finds it still on.
    while not woken do coroutine.yield() end
    return first, second
  end

  local function abort(co)
    local stop = aborts[co]
    if stop then stop() end
  end

  return wait, abort
end

--- The driver of truto.cosocket over libuv TCP handles, for one transport.
-- A connection reads all the time (up to READ_AHEAD_BYTES ahead) into its
-- queue of chunks, so that an idle one knows whether its peer closed it or
-- sent anything.
---@param uv table
---@param wait function
---@return table driver
local function driver(uv, wait)
  local d = {}

  local function close(conn)
    if conn.closed then return end
    conn.closed = true
    close_handle(conn.tcp)
  end
  d.close = close

  local function on_read(conn)
    return function(err, data)
      if err then
        conn.err = err
      elseif data then
        conn.chunks[#conn.chunks + 1] = data
        conn.buffered = conn.buffered + #data
        if conn.buffered >= READ_AHEAD_BYTES and conn.reading then
          conn.tcp:read_stop()
          conn.reading = false
        end
      else
        conn.eof = true
      end
      if conn.notify then conn.notify(true) end
    end
  end

  -- The addresses of host (a name or an address), or nil, err.
  local function resolve(host, port, seconds)
    local request
    local addresses, err = wait(seconds, function(wake)
      local made, why = uv.getaddrinfo(host, tostring(port), { socktype = "stream" }, function(failed, found)
        if failed then wake(nil, failed) else wake(found) end
      end)
      if made then request = made else wake(nil, why) end
    end, function() uv.cancel(request) end)
    if not addresses then
      if err == "timeout" then return nil, err end
      return nil, "could not be resolved (" .. tostring(err) .. ")"
    end
    if #addresses == 0 then return nil, "could not be resolved (no address)" end
    return addresses
  end

  -- A TCP connection to one address, or nil, err.
  local function connect_to(address, port, seconds)
    local tcp = uv.new_tcp()
    local done, err = wait(seconds, function(wake)
      local made, why = tcp:connect(address, port, function(failed)
        if failed then wake(nil, failed) else wake(true) end
      end)
      if not made then wake(nil, why) end
    end, function() close_handle(tcp) end)
    if not done then
      close_handle(tcp)
      return nil, err
    end
    tcp:nodelay(true)
    tcp:unref()
    return tcp
  end

  function d.connect(host, port, seconds)
    local deadline = uv.hrtime() / 1e9 + seconds
    local addresses, err = resolve(host, port, seconds)
    if not addresses then return nil, err end
    local tcp
    for _, address in ipairs(addresses) do
      tcp, err = connect_to(address.addr, port, deadline - uv.hrtime() / 1e9)
      if tcp or err == "timeout" then break end
    end
    if not tcp then return nil, err end
    local conn = { tcp = tcp, chunks = {}, buffered = 0, reading = true }
    local started, why = tcp:read_start(on_read(conn))
    if not started then
      close(conn)
      return nil, why
    end
    return conn
  end

  function d.send(conn, data, seconds)
    if conn.closed then return nil, "closed" end
    return wait(seconds, function(wake)
      local made, why = conn.tcp:write(data, function(failed)
        if failed then wake(nil, failed) else wake(true) end
      end)
      if not made then wake(nil, why) end
    end, function() close(conn) end)
  end

  -- Up to max bytes of the queue, reading again once it has room.
  local function take(conn, max)
    local chunks = conn.chunks
    local data = chunks[1]
    if #data <= max then
      table.remove(chunks, 1)
    else
      chunks[1] = data:sub(max + 1)
      data = data:sub(1, max)
    end
    conn.buffered = conn.buffered - #data
    if not conn.reading and not conn.closed and conn.buffered < READ_AHEAD_BYTES then
      conn.reading = true
      conn.tcp:read_start(on_read(conn))
    end
    return data
  end

  function d.receive(conn, max, seconds)
    if conn.buffered == 0 and not (conn.eof or conn.err or conn.closed) then
      local arrived, err = wait(seconds, function(wake) conn.notify = wake end, function() close(conn) end)
      conn.notify = nil
      if not arrived then return nil, err end
    end
    if conn.buffered > 0 then return take(conn, max) end
    if conn.err then return nil, conn.err end
    return nil, "closed"
  end

  function d.usable(conn)
    return not (conn.closed or conn.eof or conn.err) and conn.buffered == 0
  end

  return d
end

-- libuv writes to sockets with write(2): a peer that has closed its end
-- would kill the process with SIGPIPE (whose default is to terminate), as
-- neither lua-luv nor libuv ignores it.  A libuv handler that does nothing
-- turns it into the EPIPE the write returns; one per uv module, unreferenced
-- so that it never keeps the loop alive.
local sigpipe_caught = setmetatable({}, { __mode = "k" })
local function catch_sigpipe(uv)
  if sigpipe_caught[uv] then return end
  local signal = uv.new_signal()
  signal:start("sigpipe", function() end)
  signal:unref()
  sigpipe_caught[uv] = signal
end

--- A transport for one client, with its own pool of kept-alive connections.
---@param options truto.Options the client's, timeouts filled in (`uv`: the uv module to use)
---@return table transport
function _M.new(options)
  local uv, why = options.uv, nil
  if not uv then uv, why = host_uv() end
  if not uv then error(why, 0) end
  catch_sigpipe(uv)
  local self = http1.transport(options, mt)
  local wait, abort = waits(uv)
  local function now() return uv.hrtime() / 1e9 end
  local d = cosocket.tls(driver(uv, wait), { now = now, ca_file = options.ca_file, ca_path = options.ca_path })
  self.wait, self.abort = wait, abort
  self.now = now
  --- Waits without blocking the loop; outside a coroutine it returns at
  -- once (the call that follows fails with kind "phase").
  ---@param seconds number
  self.sleep = function(seconds)
    if yieldable() then wait(seconds, function() end, function() end) end
  end
  return cosocket.pooled(self, d, now)
end

--- Closes the kept-alive connections.  Idempotent.
_M.close = cosocket.close_pooled

--- Runs every worker in a coroutine of its own, all waiting on the loop at
-- once, and returns when all are done, the caller's coroutine yielding
-- meanwhile.  An error raised in one is raised again; the others are
-- stopped (their connections closed, those already back in the pool
-- staying there) and never resumed.  The same when the caller's own batch
-- stops it.  Outside a coroutine the workers run one after the other (each
-- call then fails with kind "phase", as a single call does).
---@param workers function[]
function _M:run_concurrently(workers)
  if not yieldable() then
    for _, worker in ipairs(workers) do worker() end
    return
  end
  local threads, left, failed = {}, #workers, nil
  -- Their waits end (the operation stopped), and what they hold open is
  -- closed, whatever they wait on (a sink that sleeps holds its connection).
  local function stop_all()
    for _, thread in ipairs(threads) do
      self.abort(thread)
      cosocket.close_held(thread)
    end
  end
  local ok, err = self.wait(nil, function(wake)
    for i, worker in ipairs(workers) do
      threads[i] = coroutine.create(function()
        local done, raised = pcall(worker)
        left = left - 1
        if not done and not failed then
          failed = true
          stop_all()
          wake(nil, raised)
        elseif left == 0 then
          wake(true)
        end
      end)
    end
    for _, thread in ipairs(threads) do
      if failed then break end
      resume(thread)
    end
  end, stop_all)
  if not ok then error(err, 0) end
end

--- Sends req ({method, url, headers, body}) under the transport contract
-- (lua/truto/http1.lua).  Returns status, headers, body, info, or nil, err;
-- kind "phase" outside a coroutine.
---@param req table
---@param call table
---@return integer|nil status
---@return table headers_or_err
---@return string? body
---@return table? info
function _M:perform(req, call)
  if not yieldable() then
    return failure("phase", "cannot make an HTTP call outside a coroutine with transport \"luv\": "
      .. "run it in one that libuv's callbacks can resume, e.g. coroutine.wrap(function() ... end)(), "
      .. "with the loop running (uv.run(), or Neovim's own)")
  end
  return http1.send(self, req, call)
end

return _M

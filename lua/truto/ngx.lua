--- The nginx transport: the HTTP/1.1 engine (truto.http1) over
-- ngx.socket.tcp cosockets, so a call inside an nginx worker yields instead
-- of blocking it.  The C core builds the request (URL, headers, body); the
-- engine only moves bytes.  It never runs inside a C call, which is what
-- lets the cosockets yield.
local http1 = require "truto.http1"

local _M = {}
local mt = { __index = _M }

local ngx = ngx   -- the nginx Lua module's global

-- Phases in which cosockets exist.
local COSOCKET_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local env_mt   -- what the engine uses of nginx (below)

--- A transport for one client (it holds no connection: they are pooled by nginx).
---@param options truto.Options the client's, timeouts filled in
---@return table transport
function _M.new(options)
  local self = http1.transport(options, mt)
  -- Kept-alive connections skip the TLS handshake, so clients that trust
  -- different CAs (lua_ssl_trusted_certificate is per location) must not
  -- share a pool: `pool` names one.
  self.pool = options.pool or "truto"
  self.env = setmetatable({ pool = self.pool, insecure = self.insecure }, env_mt)
  return self
end

--- Runs every worker on its own ngx.thread light thread and returns when
-- all are done; an error raised in one kills the others and is raised again.
---@param _ table the transport
---@param workers function[]
function _M.run_concurrently(_, workers)
  local threads = {}
  for i, worker in ipairs(workers) do threads[i] = ngx.thread.spawn(worker) end
  for _, thread in ipairs(threads) do
    local ok, err = ngx.thread.wait(thread)
    if not ok then
      for _, other in ipairs(threads) do ngx.thread.kill(other) end
      error(err, 0)
    end
  end
end

--- Waits without blocking the worker.
---@param seconds number
function _M.sleep(seconds)
  ngx.sleep(seconds)
end

--- The current time in seconds, fresh (nginx caches its clock).
---@return number
function _M.now()
  ngx.update_time()
  return ngx.now()
end

local function failure(kind, message)
  return nil, { kind = kind, message = message }
end

-- The peer certificate of a TLS session (lua-resty-core hands it over as
-- an FFI pointer) checked against an IP address with OpenSSL, which nginx
-- has already loaded.  Without FFI there is no way to see the
-- certificate, so an address cannot be verified: the call fails.
local verify_ip
do
  local ok, ffi = pcall(require, "ffi")
  if ok then
    pcall(ffi.cdef, [[
      typedef struct x509_st X509;
      typedef struct ssl_session_st SSL_SESSION;
      const X509 *SSL_SESSION_get0_peer(SSL_SESSION *s);
      int X509_check_ip_asc(const X509 *x, const char *address, unsigned int flags);
    ]])
  end
  verify_ip = function(session, ip)
    if not ok or type(session) ~= "cdata" then
      return nil, "cannot check an IP address against the certificate without LuaJIT's FFI"
    end
    local cert = ffi.C.SSL_SESSION_get0_peer(ffi.cast("SSL_SESSION *", session))
    if cert == nil then return nil, "the server sent no certificate" end
    if ffi.C.X509_check_ip_asc(cert, ip, 0) ~= 1 then
      return nil, "certificate does not match the IP address " .. ip
    end
    return session
  end
end

env_mt = { __index = {
  tcp = function() return ngx.socket.tcp() end,
  now = _M.now,
  verify_ip = verify_ip,
  tls_hint = " (nginx verifies against lua_ssl_trusted_certificate)",
  resolve_hint = " (add a `resolver` directive to nginx.conf)",
} }

--- Sends req ({method, url, headers, body}) under the transport contract
-- (lua/truto/http1.lua); call: {timeout, connect_timeout, sink,
-- max_response_bytes}.  Returns status, headers, body, info, or nil, err.
---@param req table
---@param call table
---@return integer|nil status
---@return table headers_or_err
---@return string? body
---@return table? info
function _M:perform(req, call)
  local phase = ngx.get_phase()
  if not COSOCKET_PHASES[phase] then
    return failure("phase", ("cannot make an HTTP call in nginx's %s phase, which has no cosockets: "
      .. "run it in a timer, e.g. ngx.timer.at(0, function() ... end)"):format(phase))
  end
  return http1.send(self, req, call)
end

return _M

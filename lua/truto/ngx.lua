--- The nginx transport: HTTP/1.1 over ngx.socket.tcp cosockets, so a call
-- inside an nginx worker yields instead of blocking it.  The C core builds
-- the request (URL, headers, body); this module only moves bytes.  It never
-- runs inside a C call, which is what lets the cosockets yield.
local _M = {}
local mt = { __index = _M }

local ngx = ngx   -- the nginx Lua module's global

-- Phases in which cosockets exist.
local COSOCKET_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}

local DEFAULT_MAX_BYTES = 64 * 1024 * 1024
local MAX_HEADER_BYTES = 1024 * 1024
local READ_SIZE = 65536
local KEEPALIVE_MS = 60000
local POOL_SIZE = 64

-- Framing headers are this module's to write: a caller's copy would let a
-- body be read two ways (request smuggling).
local FRAMING = { ["content-length"] = true, ["transfer-encoding"] = true, ["connection"] = true }

--- A transport for one client (it holds no connection: they are pooled by nginx).
---@param options truto.Options the client's, timeouts filled in
---@return table transport
function _M.new(options)
  return setmetatable({
    insecure = options.insecure == true,
    timeout = options.timeout or 30,
    connect_timeout = options.connect_timeout or 10,
    max_response_bytes = options.max_response_bytes or DEFAULT_MAX_BYTES,
    -- Kept-alive connections skip the TLS handshake, so clients that trust
    -- different CAs (lua_ssl_trusted_certificate is per location) must not
    -- share a pool: `pool` names one.
    pool = options.pool or "truto",
  }, mt)
end

-- batch() runs its calls on ngx.thread light threads with this transport.
_M.threads = true

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

local function parse_url(url)
  local scheme, rest = url:match("^(%a+)://(.*)$")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return nil end
  local authority, target = rest:match("^([^/]*)(.*)$")
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")   -- [IPv6]:port
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil end
  local default_port = scheme == "https" and 443 or 80
  port = tonumber(port) or default_port
  local host_header = authority
  if port == default_port then host_header = authority:gsub(":%d+$", "") end
  return { scheme = scheme, host = host, port = port, target = target ~= "" and target or "/",
           host_header = host_header }
end

-- Milliseconds left before the deadline (at least 1: 0 means "no timeout").
local function remaining_ms(deadline)
  ngx.update_time()
  return math.max(1, math.floor((deadline - ngx.now()) * 1000))
end

local function read_error(err, got_response)
  if err == "timeout" then return failure("timeout", "timed out reading the response") end
  if err == "closed" then
    if got_response then return failure("protocol", "the connection closed before the response was complete") end
    return failure("network", "the server closed the connection without a response")
  end
  return failure("network", "reading the response failed: " .. tostring(err))
end

local function read_head(sock, deadline)
  local status, version, headers
  repeat
    sock:settimeout(remaining_ms(deadline))
    local line, err = sock:receive("*l")
    if not line then return read_error(err, false) end
    version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
    if not status then return failure("protocol", "malformed status line") end
    status = tonumber(status)
    headers = {}
    local size = #line
    while true do
      line, err = sock:receive("*l")
      if not line then return read_error(err, true) end
      if line == "" then break end
      size = size + #line
      if size > MAX_HEADER_BYTES then return failure("too_large", "response headers larger than 1 MiB") end
      local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
      if not name then return failure("protocol", "malformed header line") end
      name = name:lower()
      headers[name] = headers[name] and headers[name] .. ", " .. value or value
    end
  until status >= 200 or status == 101   -- 100 Continue and friends precede the answer
  return status, headers, version
end

-- Reads exactly size bytes, in pieces, handing each to deliver.
local function read_exactly(sock, size, deadline, deliver)
  while size > 0 do
    sock:settimeout(remaining_ms(deadline))
    local n = math.min(size, READ_SIZE)
    local data, err = sock:receive(n)
    if not data then return read_error(err, true) end
    local ok, derr = deliver(data)
    if not ok then return nil, derr end
    size = size - n
  end
  return true
end

-- Reads the body, handing each piece to deliver(piece) -> ok, err.
-- Returns true when the connection can be kept, or nil, err.
local function read_body(sock, method, status, headers, deadline, deliver)
  if method == "HEAD" or status == 204 or status == 304 then return true end
  local te = headers["transfer-encoding"]
  if te and te:lower():find("chunked", 1, true) then
    while true do
      sock:settimeout(remaining_ms(deadline))
      local line, err = sock:receive("*l")
      if not line then return read_error(err, true) end
      local size = tonumber(line:match("^%s*(%x+)"), 16)
      if not size then return failure("protocol", "malformed chunk size") end
      if size == 0 then
        repeat   -- trailers, then the blank line
          line, err = sock:receive("*l")
          if not line then return read_error(err, true) end
        until line == ""
        return true
      end
      local ok, derr = read_exactly(sock, size, deadline, deliver)
      if not ok then return nil, derr end
      local crlf
      crlf, err = sock:receive(2)
      if crlf ~= "\r\n" then return crlf and failure("protocol", "malformed chunk") or read_error(err, true) end
    end
  end
  local length = headers["content-length"]
  if length then
    length = tonumber(length)
    if not length or length < 0 or length % 1 ~= 0 then return failure("protocol", "malformed Content-Length") end
    return read_exactly(sock, length, deadline, deliver)
  end
  -- Neither: the body runs to the end of the connection.
  while true do
    sock:settimeout(remaining_ms(deadline))
    local data, err = sock:receiveany(READ_SIZE)
    if not data then
      if err == "closed" then return false end
      return read_error(err, true)
    end
    local ok, derr = deliver(data)
    if not ok then return nil, derr end
  end
end

local function build_request_text(req, url)
  local lines = { req.method, " ", url.target, " HTTP/1.1\r\n" }
  local has_host = false
  for _, line in ipairs(req.headers) do
    local name = line:match("^([^:]+):"):lower()
    if name == "host" then has_host = true end
    if not FRAMING[name] then
      lines[#lines + 1] = line
      lines[#lines + 1] = "\r\n"
    end
  end
  if not has_host then
    lines[#lines + 1] = "Host: " .. url.host_header .. "\r\n"
  end
  local body = req.body
  if body or req.method == "POST" or req.method == "PUT" or req.method == "PATCH" then
    lines[#lines + 1] = "Content-Length: " .. #(body or "") .. "\r\n"
  end
  lines[#lines + 1] = "\r\n"
  if body then lines[#lines + 1] = body end
  return lines
end

--- Sends req ({method, url, headers, body}); call: {timeout,
-- connect_timeout, sink, max_response_bytes}.  Returns status, headers,
-- body, info, or nil, err.
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
  local url = parse_url(req.url)
  if not url then return failure("protocol", "unsupported URL") end

  ngx.update_time()
  local started = ngx.now()
  local deadline = started + (call.timeout or self.timeout)
  local sock = ngx.socket.tcp()
  sock:settimeout(math.floor((call.connect_timeout or self.connect_timeout) * 1000))
  local pool = ("%s:%s:%s:%d:%s"):format(self.pool, url.scheme, url.host, url.port,
    self.insecure and "insecure" or "verify")
  local ok, err = sock:connect(url.host, url.port, { pool = pool })
  if not ok then
    if err == "timeout" then return failure("timeout", "timed out connecting to " .. url.host) end
    if tostring(err):find("resolver", 1, true) then
      return failure("connect", "cannot resolve " .. url.host .. ": add a `resolver` directive to nginx.conf")
    end
    return failure("connect", ("connecting to %s:%d failed: %s"):format(url.host, url.port, tostring(err)))
  end
  local reused = sock:getreusedtimes() > 0
  if url.scheme == "https" and not reused then
    sock:settimeout(remaining_ms(deadline))
    local session
    session, err = sock:sslhandshake(nil, url.host, not self.insecure)
    if not session then
      sock:close()
      if err == "timeout" then return failure("timeout", "timed out in the TLS handshake") end
      return failure("tls", "TLS handshake with " .. url.host .. " failed: " .. tostring(err)
        .. " (nginx verifies against lua_ssl_trusted_certificate)")
    end
  end

  sock:settimeout(remaining_ms(deadline))
  local sent
  sent, err = sock:send(build_request_text(req, url))
  if not sent then
    sock:close()
    if err == "timeout" then return failure("timeout", "timed out sending the request") end
    return failure("network", "sending the request failed: " .. tostring(err))
  end

  local status, headers, version = read_head(sock, deadline)
  if not status then
    sock:close()
    return nil, headers
  end

  local limit = call.max_response_bytes or self.max_response_bytes
  local sink = (status >= 200 and status < 300) and call.sink or nil
  local parts, received = {}, 0
  local sink_error
  local function deliver(data)
    received = received + #data
    if received > limit then return failure("too_large", ("response larger than %d bytes"):format(limit)) end
    if sink then
      local pok, result, serr = pcall(sink, data)
      if not pok or result == false or (result == nil and serr ~= nil) then
        sink_error = { value = pok and (serr or "truto: sink returned false") or result }
        return nil, { kind = "sink" }
      end
    else
      parts[#parts + 1] = data
    end
    return true
  end
  local keep, berr = read_body(sock, req.method, status, headers, deadline, deliver)
  if keep == nil then
    sock:close()
    if sink_error then error(sink_error.value, 0) end   -- the sink's own error, as libcurl's transport does
    return nil, berr
  end
  local connection = headers["connection"]
  if keep and not (connection and connection:lower():find("close", 1, true)) and version == "1.1" then
    sock:setkeepalive(KEEPALIVE_MS, POOL_SIZE)
  else
    sock:close()
  end
  ngx.update_time()
  local info = { http_version = version, total_time = ngx.now() - started, reused = reused,
                 size_download = received }
  return status, headers, (not sink) and table.concat(parts) or nil, info
end

return _M

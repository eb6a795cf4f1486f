--- The HTTP/1.1 engine of the transports whose sockets yield (nginx's
-- cosockets today): it writes the request and reads the response over any
-- socket with the cosocket API (`settimeout`, `connect`, `sslhandshake`,
-- `send`, `receiveany`, `close`, `setkeepalive`, `getreusedtimes`), and
-- holds the transport contract (HACKING.md, "The transport contract"): one
-- deadline over the whole exchange, every read bounded in time and size,
-- the same error kinds as the libcurl transport.  The response parser
-- (`reader`, `read_response`) reads from any function that returns bytes,
-- which is how the fuzz harness and the specs drive it.
local core = require "truto.core"
local multipart = require "truto.multipart"

local _M = {}

--- The contract's limits (the libcurl transport holds the same ones).
_M.MAX_LINE_BYTES = 100 * 1024     -- one status, header, chunk-size or trailer line
_M.MAX_HEAD_BYTES = 256 * 1024     -- one header block, or the trailers
_M.MAX_KEPT_WITH_SINK = 1024 * 1024 -- a non-2xx body kept while a sink takes 2xx ones
local READ_SIZE = 65536
local SEND_SIZE = 65536
local MAX_CHUNK_HEX = 14           -- 2^56: more is not a size any body reaches

local function failure(kind, message)
  return nil, { kind = kind, message = message }
end

--- The parts of an http(s) URL the engine needs, or nil.
---@param url string
---@return table? parts { scheme, host, port, target, host_header, ip }
function _M.parse_url(url)
  local scheme, rest = url:match("^(%a+)://(.*)$")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then return nil end
  local authority, target = rest:match("^([^/?#]*)([^#]*)")
  local host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")   -- [IPv6]:port
  local ip = host ~= nil
  if not host then host, port = authority:match("^([%w._-]+):?(%d*)$") end
  if not host or host == "" then return nil end
  ip = ip or host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil
  local default_port = scheme == "https" and 443 or 80
  port = port ~= "" and tonumber(port) or default_port
  if port < 1 or port > 65535 then return nil end
  local host_header = authority
  if port == default_port then host_header = authority:gsub(":%d*$", "") end
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  return { scheme = scheme, host = host, port = port, target = target, host_header = host_header, ip = ip }
end

-- ---- reading ----------------------------------------------------------

local Reader = {}
Reader.__index = Reader

--- Buffered input over recv(need) -> bytes | nil, err ("timeout", "closed",
-- ...); need is how many bytes the parser is sure to take (1 in a line, the
-- rest of a length or chunk), nil when it reads until the peer closes.
---@param recv fun(need: integer?): string?, string?
---@return table reader
function _M.reader(recv)
  return setmetatable({ recv = recv, buf = "", pos = 1 }, Reader)
end

-- Replaces the consumed buffer with the next bytes received.
function Reader:fill(need)
  local data, err = self.recv(need)
  if not data then return nil, err end
  self.buf, self.pos = data, 1
  return true
end

--- The bytes received but not consumed.
---@return integer
function Reader:pending()
  return #self.buf - self.pos + 1
end

--- One line without its LF (and CR), at most max bytes: nil, "too_large"
-- past that, whatever the peer sends; nil, err when reading fails.
---@param max integer
---@return string? line
---@return string? err
function Reader:line(max)
  local parts, size = nil, 0
  while true do
    local i = self.buf:find("\n", self.pos, true)
    local piece = self.buf:sub(self.pos, (i or 0) - 1)
    size = size + #piece
    if size > max + 1 then return nil, "too_large" end
    if i then
      self.pos = i + 1
      if parts then
        parts[#parts + 1] = piece
        piece = table.concat(parts)
      end
      if piece:sub(-1) == "\r" then piece = piece:sub(1, -2) end
      if #piece > max then return nil, "too_large" end
      return piece
    end
    if piece ~= "" then
      parts = parts or {}
      parts[#parts + 1] = piece
    end
    local ok, err = self:fill(1)
    if not ok then return nil, err end
  end
end

--- Hands exactly n bytes to deliver(piece) -> ok, err, in pieces.
---@param n integer
---@param deliver fun(piece: string): boolean?, table?
---@return boolean? ok
---@return string|table|nil err a read error (string) or deliver's error (table)
function Reader:bytes(n, deliver)
  while n > 0 do
    if self.pos > #self.buf then
      local ok, err = self:fill(n)
      if not ok then return nil, err end
    end
    local take = math.min(#self.buf - self.pos + 1, n)
    local piece = (self.pos == 1 and take == #self.buf) and self.buf or self.buf:sub(self.pos, self.pos + take - 1)
    self.pos, n = self.pos + take, n - take
    local ok, err = deliver(piece)
    if not ok then return nil, err end
  end
  return true
end

--- Hands every byte to deliver until the peer closes.
---@param deliver fun(piece: string): boolean?, table?
---@return boolean? ok
---@return string|table|nil err
function Reader:rest(deliver)
  while true do
    if self.pos <= #self.buf then
      local piece = self.pos == 1 and self.buf or self.buf:sub(self.pos)
      self.pos = #self.buf + 1
      local ok, err = deliver(piece)
      if not ok then return nil, err end
    end
    local ok, err = self:fill()
    if not ok then
      if err == "closed" then return true end
      return nil, err
    end
  end
end

-- A read error as the transport's error.  got_response: a status line was read.
local function read_error(err, got_response)
  if type(err) == "table" then return nil, err end   -- deliver's own
  if err == "timeout" then return failure("timeout", "timed out reading the response") end
  if err == "too_large" then
    return failure("too_large", ("a response line is longer than %d bytes"):format(_M.MAX_LINE_BYTES))
  end
  if err == "closed" then
    if got_response then return failure("protocol", "the connection closed before the response was complete") end
    return failure("network", "the server closed the connection without a response")
  end
  return failure("network", "reading the response failed: " .. tostring(err))
end

-- A header field name is an HTTP token; a line that is not a field is
-- skipped, as libcurl does.
local FIELD = "^([!#$%%&'*+.^_`|~%w-]+):[ \t]*(.-)[ \t]*$"

-- Header lines until the blank one, into headers (names in lower case,
-- repeats joined with ", ", folded lines joined with " ").  Pieces are
-- joined once at the end, so that many repeats cost linear time.
local function read_fields(r, headers, got_response)
  local size, fields, last = 0, {}, nil   -- fields[name] = { { piece, ... }, ... }
  while true do
    local line, err = r:line(_M.MAX_LINE_BYTES)
    if not line then return read_error(err, got_response) end
    if line == "" then break end
    size = size + #line + 2
    if size > _M.MAX_HEAD_BYTES then
      return failure("too_large", ("response headers exceed %d bytes"):format(_M.MAX_HEAD_BYTES))
    end
    local first = line:sub(1, 1)
    if (first == " " or first == "\t") and last then
      local value = line:match("^[ \t]*(.-)[ \t]*$")
      if value ~= "" then last[#last + 1] = value end
    else
      local name, value = line:match(FIELD)
      if name then
        name = name:lower()
        fields[name] = fields[name] or {}
        last = { value }
        fields[name][#fields[name] + 1] = last
      end
    end
  end
  for name, values in pairs(fields) do
    for i, pieces in ipairs(values) do values[i] = table.concat(pieces, " ") end
    headers[name] = table.concat(values, ", ")
  end
  return true
end

--- Reads a status line and header block, skipping interim (1xx) responses.
---@param r table a reader
---@return integer|nil status
---@return table headers_or_err
---@return string? version "1.0" or "1.1"
function _M.read_head(r)
  while true do
    local line, err = r:line(_M.MAX_LINE_BYTES)
    if not line then return read_error(err, false) end
    local version, code = line:match("^HTTP/(1%.[01]) (%d%d%d)")
    local after = version and line:sub(13, 13)
    if not version or (after ~= "" and after ~= " " and after ~= "\t") then
      -- The peer does not speak HTTP/1.x: sending again would not help.
      return nil, { kind = "protocol", message = "malformed status line (not HTTP/1.0 or HTTP/1.1)", final = true }
    end
    local status, headers = tonumber(code), {}
    if status < 100 then
      return nil, { kind = "protocol", message = "malformed status line (status " .. code .. ")", final = true }
    end
    local ok, ferr = read_fields(r, headers, true)
    if not ok then return nil, ferr end
    if status == 101 then
      return nil, { kind = "protocol", message = "unexpected 101 Switching Protocols", final = true }
    end
    if status >= 200 then return status, headers, version end
  end
end

-- The body's framing: "none", "chunked", "length" (with the length) or
-- "close", or nil, err.
local function framing(method, status, headers)
  if method == "HEAD" or status == 204 or status == 304 then return "none" end
  local te = headers["transfer-encoding"]
  if te and te:lower():match("^%s*identity%s*$") then te = nil end   -- RFC 2616's no-op
  if te then
    local last = te:lower():match("([^,%s]+)%s*$")
    if last ~= "chunked" then return failure("protocol", "unsupported Transfer-Encoding: " .. te) end
    if te:lower():find(",", 1, true) then
      -- A coding under the chunks (gzip, chunked): libcurl refuses it too.
      return nil, { kind = "decode", message = "unsupported Transfer-Encoding: " .. te, final = true }
    end
    return "chunked"
  end
  local length = headers["content-length"]
  if length then
    -- Repeats of one value ("5, 5") are one length; anything else is not.
    local value
    for item in (length .. ","):gmatch("%s*([^,]-)%s*,") do
      item = item:gsub("^0+(%d)", "%1")   -- leading zeros
      if not item:match("^%d+$") or #item > 15 or (value and value ~= item) then
        return failure("protocol", "malformed Content-Length")
      end
      value = item
    end
    if not value then return failure("protocol", "malformed Content-Length") end
    return "length", tonumber(value)
  end
  return "close"
end

local function read_chunked(r, deliver)
  while true do
    local line, err = r:line(_M.MAX_LINE_BYTES)
    if not line then return read_error(err, true) end
    local hex = line:match("^0*(%x+)[ \t]*;") or line:match("^0*(%x+)[ \t]*$")
    if not hex or #hex > MAX_CHUNK_HEX then return failure("protocol", "malformed chunk size") end
    local size = tonumber(hex, 16)
    if size == 0 then
      -- Trailers are read (bounded) and dropped.
      return read_fields(r, {}, true)
    end
    local ok
    ok, err = r:bytes(size, deliver)
    if not ok then return read_error(err, true) end
    line, err = r:line(0)
    if not line then
      if err == "too_large" then return failure("protocol", "malformed chunk (no CRLF after its data)") end
      return read_error(err, true)
    end
  end
end

--- Reads the body as the head frames it, handing each piece to deliver.
-- Returns true when the connection may be reused, false when it may not,
-- or nil, err.
---@param r table a reader
---@param method string
---@param status integer
---@param headers table
---@param deliver fun(piece: string): boolean?, table?
---@return boolean|nil reusable
---@return table? err
function _M.read_body(r, method, status, headers, deliver)
  local kind, length = framing(method, status, headers)
  if not kind then return nil, length end
  local ok, err
  if kind == "none" then
    ok = true
  elseif kind == "chunked" then
    ok, err = read_chunked(r, deliver)
  elseif kind == "length" then
    ok, err = r:bytes(length, deliver)
  else
    ok, err = r:rest(deliver)
    if ok then return false end
  end
  if not ok then return read_error(err, true) end
  return r:pending() == 0
end

--- The decoder of a Content-Encoding, or nil for none; nil, err for a
-- coding this transport does not decode.
---@param headers table
---@param limit integer decoded bytes allowed
---@return userdata|false|nil inflater
---@return table? err
function _M.decoder(headers, limit)
  local given = headers["content-encoding"]
  if not given then return false end
  local codings = {}
  for coding in given:lower():gmatch("[^,%s]+") do
    if coding ~= "identity" then codings[#codings + 1] = coding end
  end
  if #codings == 0 then return false end
  local coding = codings[1]
  if #codings == 1 and (coding == "gzip" or coding == "x-gzip" or coding == "deflate") then
    return core.inflater(coding, math.min(limit, 2 ^ 53))   -- the inflater's largest limit
  end
  -- Several codings, or one this transport does not announce (br, zstd).
  return failure("decode", "unsupported Content-Encoding: " .. given)
end

-- ---- writing ----------------------------------------------------------

-- core.build_request refuses the framing headers (Content-Length, Host,
-- ...); the codings this engine decodes are its own to announce.
local OWN = { ["accept-encoding"] = true }

--- The request's head, as a list of strings: the body is sent apart (a
-- string or a truto.Body in slices, a multipart form by `multipart.write`).
---@param req table { method, headers (lines), body: a string, a truto.Body or a multipart form }
---@param url table from parse_url
---@return string[] text
function _M.request_text(req, url)
  local lines = { req.method, " ", url.target, " HTTP/1.1\r\nHost: ", url.host_header, "\r\n" }
  for _, line in ipairs(req.headers) do
    if not OWN[line:match("^([^:;]+)"):lower()] then
      lines[#lines + 1] = line
      lines[#lines + 1] = "\r\n"
    end
  end
  lines[#lines + 1] = "Accept-Encoding: gzip, deflate\r\n"
  local body = req.body
  if multipart.is_form(body) then
    lines[#lines + 1] = ("Content-Length: %.0f\r\n\r\n"):format(body.length)
    return lines
  end
  if body or req.method == "POST" or req.method == "PUT" or req.method == "PATCH" then
    lines[#lines + 1] = "Content-Length: " .. #(body or "") .. "\r\n"
  end
  lines[#lines + 1] = "\r\n"
  return lines
end

-- ---- one exchange ---------------------------------------------------

-- Milliseconds left before the deadline, at least 1 (0 would mean no timeout).
local function ms_left(deadline, now)
  return math.max(1, math.floor((deadline - now()) * 1000))
end

-- The request in pieces, each with the time left: the head at once, the
-- body (a string or a truto.Body, not copied into one string with the
-- head) SEND_SIZE bytes at a time,
-- a multipart form part after part, its files read as they are sent.
-- nil, err, true when a file failed (err is then the error table).
local function send_all(sock, req, url, deadline, now)
  local text = _M.request_text(req, url)
  local body = req.body
  local form = multipart.is_form(body)
  local function send(data)
    if now() >= deadline then return nil, "timeout" end
    sock:settimeout(ms_left(deadline, now))
    return sock:send(data)
  end
  local ok, err = send(table.concat(text))
  if not ok then return nil, err end
  if form then return multipart.write(body, send) end
  for first = 1, body and #body or 0, SEND_SIZE do
    ok, err = send(body:sub(first, first + SEND_SIZE - 1))
    if not ok then return nil, err end
  end
  return true
end

-- A connection for url: from the pool, or a new one when fresh (then it is
-- closed after use, never pooled).  Returns sock, reused, or nil, err.
local fresh_pools = 0
local function open(env, url, call, deadline, fresh)
  local now = env.now
  local sock = env.tcp()
  sock:settimeout(math.max(1, math.floor(math.min(call.connect_timeout, deadline - now()) * 1000)))
  local pool = ("%s:%s:%s:%d:%s"):format(env.pool, url.scheme, url.host, url.port,
    env.insecure and "insecure" or "verify")
  if fresh then
    fresh_pools = fresh_pools + 1
    pool = pool .. ":fresh:" .. fresh_pools   -- a name no pooled connection has
  end
  -- nginx parses an IPv6 address only in brackets.
  local host = url.host:find(":", 1, true) and "[" .. url.host .. "]" or url.host
  local ok, err = sock:connect(host, url.port, { pool = pool })
  if not ok then
    if err == "timeout" then return failure("timeout", "timed out connecting to " .. url.host) end
    if tostring(err):find("resolve", 1, true) then
      return failure("connect", "cannot resolve " .. url.host .. ": " .. tostring(err) .. (env.resolve_hint or ""))
    end
    return failure("connect", ("connecting to %s:%d failed: %s"):format(url.host, url.port, tostring(err)))
  end
  local reused = sock:getreusedtimes() > 0
  if url.scheme == "https" and not reused then
    sock:settimeout(ms_left(deadline, now))
    -- An IP address is checked against the certificate's IP SANs below:
    -- the handshake's own check knows DNS names only (and no SNI is sent
    -- for an address, RFC 6066).
    -- Under pcall: lua-resty-core's sslhandshake can fail an assertion
    -- instead of returning an error when a handshake fails at once.
    local hok, session
    hok, session, err = pcall(sock.sslhandshake, sock, nil, (not url.ip) and url.host or nil, not env.insecure)
    if not hok then session, err = nil, "the handshake failed (" .. tostring(session):match("[^\n]*") .. ")" end
    if session and url.ip and not env.insecure and env.verify_ip then
      session, err = env.verify_ip(session, url.host)
    end
    if not session then
      sock:close()
      if err == "timeout" then return failure("timeout", "timed out in the TLS handshake") end
      return failure("tls", "TLS handshake with " .. url.host .. " failed: " .. tostring(err)
        .. (env.tls_hint or ""))
    end
  end
  return sock, reused
end

-- Decoders take compressed input in slices this small, so that one read
-- of a bomb never becomes one huge string (deflate expands at most ~1032x).
local DECODE_SLICE = 1024

--- Sends req and reads the answer: the transport contract's perform.
-- env: { tcp = fun(): socket, now = fun(): seconds, pool = string,
-- insecure = boolean, verify_ip = fun(session, ip): session | nil, err
-- (for sockets whose handshake checks DNS names only: nginx's),
-- tls_hint, resolve_hint = strings added to those errors, counted_reads =
-- true when the host's reads wait for a whole count (HAProxy's): each read
-- is then `receiveany(max, need)`, need as `reader` says }.
-- call: { timeout, connect_timeout, sink, max_response_bytes, repeatable }.
-- A request that is not repeatable goes on a new connection; a repeatable
-- one whose kept-alive connection turns out dead before any answer is sent
-- once more on a new one (as libcurl does).
---@param env table
---@param req table { method, url, headers, body }
---@param call table
---@return integer|nil status
---@return table headers_or_err
---@return string? body
---@return table? info
function _M.perform(env, req, call)
  local url = _M.parse_url(req.url)
  if not url then return nil, { kind = "protocol", message = "unsupported URL", final = true } end
  local now = env.now
  local started = now()
  local deadline = started + call.timeout

  local fresh = call.repeatable == false
  local sock, reused, reader, status, headers, version
  while true do
    sock, reused = open(env, url, call, deadline, fresh)
    if not sock then return nil, reused end
    local ok, err, file_failed = send_all(sock, req, url, deadline, now)
    if file_failed then
      sock:close()
      return nil, err
    end
    local any = false
    if ok then
      reader = _M.reader(function(need)
        if now() >= deadline then return nil, "timeout" end
        sock:settimeout(ms_left(deadline, now))
        local data, rerr
        if env.counted_reads then
          data, rerr = sock:receiveany(READ_SIZE, need)
        else
          data, rerr = sock:receiveany(READ_SIZE)
        end
        any = any or data ~= nil
        return data, rerr
      end)
      status, headers, version = _M.read_head(reader)
    end
    if status then break end
    sock:close()
    local dead = reused and not any and ((not ok and err ~= "timeout") or (ok and headers.kind == "network"))
    if not dead or fresh then
      if ok then return nil, headers end
      if err == "timeout" then return failure("timeout", "timed out sending the request") end
      return failure("network", "sending the request failed: " .. tostring(err))
    end
    fresh = true   -- the pooled connection had died: once more, on a new one
  end

  local limit = call.max_response_bytes
  local sink = (status >= 200 and status < 300) and call.sink or nil
  -- A sink lifts the cap for what it receives, not for an error body kept.
  if call.sink and not sink then limit = math.min(limit, _M.MAX_KEPT_WITH_SINK) end
  local decoder, derr = _M.decoder(headers, limit)
  if decoder == nil then
    sock:close()
    return nil, derr
  end
  local parts, received = {}, 0
  local sink_error
  local function take(data)
    received = received + #data
    if received > limit then return failure("too_large", ("response larger than %d bytes"):format(limit)) end
    if data == "" then return true end
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
  local function deliver(data)
    if not decoder then return take(data) end
    for first = 1, #data, DECODE_SLICE do
      local out, kind, message = decoder:update(data:sub(first, first + DECODE_SLICE - 1))
      if not out then return failure(kind, message) end
      local ok, err = take(out)
      if not ok then return nil, err end
    end
    return true
  end
  local reusable, berr = _M.read_body(reader, req.method, status, headers, deliver)
  if reusable ~= nil and decoder then
    local done, kind, message = decoder:finish()
    if not done then reusable, berr = nil, { kind = kind, message = message } end
  end
  if decoder then decoder:close() end
  if reusable == nil then
    sock:close()
    if sink_error then error(sink_error.value, 0) end   -- the sink's own error, as libcurl's transport does
    return nil, berr
  end
  local connection = headers["connection"]
  if reusable and not fresh and version == "1.1" and not (connection and connection:lower():find("close", 1, true)) then
    sock:setkeepalive(env.keepalive_ms or 60000, env.pool_size or 64)
  else
    sock:close()
  end
  local info = { http_version = version, total_time = now() - started, reused = reused, size_download = received }
  return status, headers, (not sink) and table.concat(parts) or nil, info
end

-- ---- the transports over this engine ----------------------------------

local DEFAULT_MAX_BYTES = 64 * 1024 * 1024

--- A transport over this engine for one client: the client's timeouts, TLS
-- switch and body cap, as defaults for each call, in a table of the host
-- adapter's class (which adds its `env`).
---@param options truto.Options the client's, timeouts filled in
---@param class table the adapter's metatable
---@return table transport
function _M.transport(options, class)
  return setmetatable({
    insecure = options.insecure == true,
    timeout = options.timeout or 30,
    connect_timeout = options.connect_timeout or 10,
    max_response_bytes = options.max_response_bytes or DEFAULT_MAX_BYTES,
  }, class)
end

--- The adapter's perform once its host allows a call: the exchange over
-- `transport.env`, with the transport's defaults for what `call` leaves out.
---@param transport table made by `transport`
---@param req table { method, url, headers, body }
---@param call table the client's call (read, never written)
---@return integer|nil status
---@return table headers_or_err
---@return string? body
---@return table? info
function _M.send(transport, req, call)
  return _M.perform(transport.env, req, {
    timeout = call.timeout or transport.timeout,
    connect_timeout = call.connect_timeout or transport.connect_timeout,
    sink = call.sink,
    max_response_bytes = call.max_response_bytes or transport.max_response_bytes,
    repeatable = call.repeatable,
  })
end

return _M

--- The HTTP/1.1 engine of the transports whose sockets yield (nginx's
-- cosockets today): it writes the request and reads the response over any
-- socket with the cosocket API (`settimeout`, `connect`, `sslhandshake`,
-- `send`, `receiveany`, `close`, `setkeepalive`, `getreusedtimes`), and
-- holds the transport contract (HACKING.md, "The transport contract"): one
-- deadline over the whole exchange, every read bounded in time and size,
-- the same error kinds as the libcurl transport.  The I/O is here (the
-- sockets must yield); the response is parsed in C (csrc/http1.c, on
-- http-parser), fed by `reader` from any function that returns bytes,
-- which is how the fuzz harness and the specs drive it.
local core = require "truto.core"
local multipart = require "truto.multipart"

local _M = {}

--- The contract's limits (the libcurl transport holds the same ones).
_M.MAX_LINE_BYTES = core.MAX_RESPONSE_LINE   -- one status, header, chunk-size or trailer line
_M.MAX_HEAD_BYTES = core.MAX_RESPONSE_HEAD   -- one header block, or the trailers
_M.MAX_KEPT_WITH_SINK = 1024 * 1024 -- a non-2xx body kept while a sink takes 2xx ones
local READ_SIZE = 65536
local SEND_SIZE = 65536

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

--- A reader of one response to a request of this method: the C parser
-- (core.response_parser) over recv(need) -> bytes | nil, err ("timeout",
-- "closed", ...), where need is how many bytes the parser is sure to take
-- (1 in a line, the rest of a length or chunk), nil when it reads until
-- the peer closes.
---@param recv fun(need: integer?): string?, string?
---@param method string
---@return table reader
function _M.reader(recv, method)
  return setmetatable({ recv = recv, parser = core.response_parser(method), data = "", pos = 1 }, Reader)
end

-- A read error as the transport's error (the peer's close is the parser's
-- to judge).
local function read_error(err)
  if type(err) == "table" then return nil, err end   -- deliver's own
  if err == "timeout" then return failure("timeout", "timed out reading the response") end
  return failure("network", "reading the response failed: " .. tostring(err))
end

-- Feeds the parser the bytes received but not read, or the next ones:
-- state, body, or nil, body, err (body: what was read before the fault).
function Reader:feed()
  local parser = self.parser
  if self.pos > #self.data then
    local data, err = self.recv(parser:need())
    if not data then
      if err ~= "closed" then return nil, nil, select(2, read_error(err)) end
      self.peer_closed = true
      local state, ferr = parser:finish()
      return state, nil, ferr
    end
    self.data, self.pos = data, 1
  end
  local state, pos, body = parser:feed(self.data, self.pos)
  if not state then return nil, body, pos end
  self.pos = pos
  return state, body
end

--- Reads the status line and header block, skipping interim (1xx)
-- responses.  headers is a truto.headers, read by lower-case name.
---@param r table a reader
---@return integer|nil status
---@return userdata|table headers_or_err
---@return string? version "1.0" or "1.1"
function _M.read_head(r)
  local state, err, _
  repeat
    state, _, err = r:feed()
    if not state then return nil, err end
  until state ~= "head"
  r.state = state
  return r.parser:head()
end

-- The framing the contract refuses: a Transfer-Encoding but a lone chunked
-- (identity is none, as libcurl reads it).
local function check_framing(method, status, headers)
  if method == "HEAD" or status == 204 or status == 304 then return true end
  local te = headers["transfer-encoding"]
  if not te or te:lower():match("^%s*identity%s*$") then return true end
  local last = te:lower():match("([^,%s]+)%s*$")
  if last ~= "chunked" then return failure("protocol", "unsupported Transfer-Encoding: " .. te) end
  if te:find(",", 1, true) then
    -- A coding under the chunks (gzip, chunked): libcurl refuses it too.
    return nil, { kind = "decode", message = "unsupported Transfer-Encoding: " .. te, final = true }
  end
  return true
end

--- Reads the body as the head frames it, handing each piece to deliver.
-- Returns true when the connection may be reused, false when it may not,
-- or nil, err.
---@param r table a reader, its head read
---@param method string
---@param status integer
---@param headers userdata|table
---@param deliver fun(piece: string): boolean?, table?
---@return boolean|nil reusable
---@return table? err
function _M.read_body(r, method, status, headers, deliver)
  local ok, err = check_framing(method, status, headers)
  if not ok then return nil, err end
  local state = r.state
  while state ~= "done" do
    local body, fault
    state, body, fault = r:feed()
    if body then
      ok, err = deliver(body)
      if not ok then return nil, err end
    end
    if not state then return nil, fault end
  end
  -- A body read to the close, or bytes after the response: not reusable.
  return not r.peer_closed and r.pos > #r.data
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
      end, req.method)
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

--- The transport conformance table: hostile upstream behaviours, each with
-- the one outcome every transport must give (HACKING.md, "The transport
-- contract").  spec/support/hostile/server.lua plays the server side inside
-- nginx; `run` plays the client side, in the busted process (libcurl,
-- cqueues, luv) and inside the app nginx of spec/ngx (cosockets):
-- spec/conformance_spec.lua drives them all.
local truto = require "truto"
local memory = require "spec.support.memory"

local _M = {}

-- A token long enough to be scrubbed wherever it appears; the server
-- echoes it into headers and bodies to check that no error carries it.
_M.TOKEN = "hostile-token-5f1c2a9e"

local MiB = 1024 * 1024

-- What the server side gets: c:send(bytes) -> ok, c:sleep(seconds),
-- c:head(status, fields, extra), c.request { method, uri, headers },
-- c.base (its own base URL), c.other (the same server under 127.0.0.2),
-- c.file(name) (a file its prepare step made).
local function head(status, fields)
  local lines = { ("HTTP/1.1 %d X\r\n"):format(status) }
  for _, field in ipairs(fields or {}) do lines[#lines + 1] = field .. "\r\n" end
  lines[#lines + 1] = "\r\n"
  return table.concat(lines)
end
_M.head = head

-- Sends piece every `every` seconds for `seconds` (the client gives up first).
local function trickle(c, piece, every, seconds)
  for _ = 1, math.floor(seconds / every) do
    if not c:send(piece) then return end
    c:sleep(every)
  end
end

local function json(c, status, value, fields)
  local body = truto.encode_json(value)
  local all = { "Content-Type: application/json", "Content-Length: " .. #body, "Connection: close" }
  for _, f in ipairs(fields or {}) do all[#all + 1] = f end
  c:send(head(status, all) .. body)
end

-- Outcomes.  fails(kind, retryable): nil, err with err.kind and
-- err.retryable; answers(status, result): result, response.
local function fails(kind, retryable) return { kind = kind, retryable = retryable } end
local function answers(status, result) return { status = status, result = result } end
-- HAProxy 2.6's Lua sockets stall once their buffer fills (fixed upstream in
-- 3.3, "BUG/MEDIUM: hlua: Report to SC when data were consumed on a lua
-- socket"): past ~128 KiB a read waits for the call's timeout (README,
-- "Using with HAProxy").  Such a call runs with a 2 s timeout there
-- (`timeout`), so that the stall costs the suite 2 s, not the default 10.
local STALLS = { haproxy = { kind = "timeout", retryable = true, seconds = 2.8, timeout = 2 } }

-- Bounds: every call finishes within `seconds` and grows the process's
-- peak memory by at most `memory_kb`.
local QUICK, TIMEOUT = 1.5, 1
-- A first TLS handshake loads the CA store and the TLS library's state.
local TLS_SECONDS, TLS_MEMORY_KB = 3, 16 * 1024

-- What text.gz holds (`seq 1 4000 | gzip -9`, made by the spec).
local SEQ = {}
for i = 1, 4000 do SEQ[i] = i .. "\n" end
SEQ = table.concat(SEQ)

_M.CASES = {
  -- ---- time: one deadline over the whole exchange
  { name = "silent", call = { timeout = TIMEOUT }, expect = fails("timeout", true), seconds = TIMEOUT + 0.8,
    serve = function(c) c:sleep(4) end },
  { name = "trickled status line", call = { timeout = TIMEOUT }, expect = fails("timeout", true),
    seconds = TIMEOUT + 0.8,
    serve = function(c)
      c:send("HTTP/1.1 200 OK")
      trickle(c, " ", 0.1, 4)
    end },
  { name = "trickled header lines", call = { timeout = TIMEOUT }, expect = fails("timeout", true),
    seconds = TIMEOUT + 0.8,
    serve = function(c)
      c:send("HTTP/1.1 200 OK\r\n")
      trickle(c, "X-Slow: 1\r\n", 0.1, 4)
    end },
  { name = "endless 100 Continue", call = { timeout = TIMEOUT }, expect = fails("timeout", true),
    seconds = TIMEOUT + 0.8,
    serve = function(c) trickle(c, "HTTP/1.1 100 Continue\r\n\r\n", 0.05, 4) end },
  { name = "endless trailers", call = { timeout = TIMEOUT }, expect = fails("timeout", true), seconds = TIMEOUT + 0.8,
    serve = function(c)
      c:send(head(200, { "Transfer-Encoding: chunked" }) .. "5\r\nhello\r\n0\r\n")
      trickle(c, "X-Trailer: 1\r\n", 0.1, 4)
    end },
  { name = "trickled body", call = { timeout = TIMEOUT }, expect = fails("timeout", true), seconds = TIMEOUT + 0.8,
    serve = function(c)
      c:send(head(200, { "Content-Length: 100" }))
      trickle(c, "x", 0.1, 4)
    end },
  { name = "trickled chunks", call = { timeout = TIMEOUT }, expect = fails("timeout", true), seconds = TIMEOUT + 0.8,
    serve = function(c)
      c:send(head(200, { "Transfer-Encoding: chunked" }))
      trickle(c, "1\r\nx\r\n", 0.1, 4)
    end },

  -- ---- memory: caps on lines, header blocks, bodies and decoded bodies
  { name = "64 MB header line", expect = fails("too_large", false), differs = STALLS, seconds = 5, memory_kb = 24 * 1024,
    serve = function(c)
      c:send("HTTP/1.1 200 OK\r\nX-Big: ")
      local piece = ("a"):rep(MiB)
      for _ = 1, 64 do if not c:send(piece) then return end end
    end },
  { name = "64 MB status line", expect = fails("too_large", false), differs = STALLS, seconds = 5, memory_kb = 24 * 1024,
    serve = function(c)
      c:send("HTTP/1.1 200 ")
      local piece = ("a"):rep(MiB)
      for _ = 1, 64 do if not c:send(piece) then return end end
    end },
  { name = "1 MB of short header lines", expect = fails("too_large", false), differs = STALLS, seconds = 5, memory_kb = 24 * 1024,
    serve = function(c)
      local lines = {}
      for i = 1, 10000 do lines[i] = ("X-H-%05d: %s\r\n"):format(i, ("v"):rep(90)) end
      c:send("HTTP/1.1 200 OK\r\n" .. table.concat(lines) .. "\r\n")
    end },
  { name = "body past max_response_bytes", call = { max_response_bytes = MiB }, expect = fails("too_large", false), differs = STALLS,
    seconds = 5, memory_kb = 24 * 1024,
    serve = function(c)
      c:send(head(200, { "Content-Length: " .. 8 * MiB }))
      local piece = ("b"):rep(MiB)
      for _ = 1, 8 do if not c:send(piece) then return end end
    end },
  -- A sink lifts the cap on the body it takes, not on an error body.
  { name = "endless error body with a sink", call = { sink = true }, expect = fails("too_large", false), differs = STALLS,
    seconds = 5, memory_kb = 24 * 1024,
    serve = function(c)
      c:send(head(500, { "Content-Type: text/plain", "Transfer-Encoding: chunked" }))
      local piece = ("%x\r\n%s\r\n"):format(MiB, ("e"):rep(MiB))
      for _ = 1, 256 do if not c:send(piece) then return end end
    end },
  { name = "gzip bomb", call = { max_response_bytes = MiB }, expect = fails("too_large", false), differs = STALLS, seconds = 5,
    memory_kb = 24 * 1024,
    serve = function(c)
      local bomb = c.file("bomb.gz")
      c:send(head(200, { "Content-Type: application/json", "Content-Encoding: gzip",
                         "Content-Length: " .. #bomb }) .. bomb)
    end },
  { name = "corrupt gzip", expect = fails("decode", false), seconds = QUICK,
    serve = function(c)
      local data = c.file("text.gz")
      data = data:sub(1, 40) .. ("\0"):rep(40) .. data:sub(81)
      c:send(head(200, { "Content-Type: text/plain", "Content-Encoding: gzip", "Content-Length: " .. #data }) .. data)
    end },
  -- libcurl does not notice a gzip stream that stops short of its end
  -- (README, "Transports"): the bytes it did decode are the answer.
  { name = "truncated gzip", expect = fails("decode", false), seconds = QUICK,
    differs = { curl = { status = 200, prefix_of = SEQ } },
    serve = function(c)
      local data = c.file("text.gz")
      data = data:sub(1, #data - 12)
      c:send(head(200, { "Content-Type: text/plain", "Content-Encoding: gzip", "Content-Length: " .. #data }) .. data)
    end },
  { name = "gzip body", expect = answers(200, { gzipped = true }), seconds = QUICK,
    serve = function(c)
      local data = c.file("json.gz")
      c:send(head(200, { "Content-Type: application/json", "Content-Encoding: gzip",
                         "Content-Length: " .. #data }) .. data)
    end },

  -- ---- framing
  { name = "not HTTP (HTTP/0.9)", expect = fails("protocol", false), seconds = QUICK,
    serve = function(c) c:send("hello\r\n") end },
  { name = "malformed status code", expect = fails("protocol", false), seconds = QUICK,
    serve = function(c) c:send("HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n") end },
  { name = "chunk size zz", expect = fails("protocol", true), seconds = QUICK,
    serve = function(c) c:send(head(200, { "Transfer-Encoding: chunked" }) .. "zz\r\nhello\r\n0\r\n\r\n") end },
  { name = "chunk size -2", expect = fails("protocol", true), seconds = QUICK,
    serve = function(c) c:send(head(200, { "Transfer-Encoding: chunked" }) .. "-2\r\nhello\r\n0\r\n\r\n") end },
  { name = "chunk size past 2^64", expect = fails("protocol", true), seconds = QUICK,
    serve = function(c) c:send(head(200, { "Transfer-Encoding: chunked" }) .. "1ffffffffffffffff\r\nx\r\n") end },
  { name = "chunk without CRLF", expect = fails("protocol", true), seconds = QUICK,
    serve = function(c) c:send(head(200, { "Transfer-Encoding: chunked" }) .. "5\r\nhelloXX5\r\nhello\r\n0\r\n\r\n") end },
  { name = "body shorter than Content-Length", expect = fails("protocol", true), seconds = QUICK,
    serve = function(c) c:send(head(200, { "Content-Length: 100" }) .. "0123456789") end },
  -- The request's 4 MB body is left unread, so closing resets the connection.
  -- HAProxy's Lua sockets tell no reset from a close: a body cut short.
  { name = "reset mid-body", call = { method = "post", body = { blob = ("x"):rep(4 * MiB) } }, unread = true,
    expect = fails("network", true), differs = { haproxy = fails("protocol", true) }, seconds = QUICK, memory_kb = 24 * 1024,
    serve = function(c)
      c:send(head(200, { "Content-Length: 100" }) .. "0123456789")
      c:sleep(0.1)
    end },
  { name = "closed without a response", expect = fails("network", true), seconds = QUICK,
    serve = function() end },
  -- Trailers are read and dropped: they are not among the headers.
  { name = "chunked body", expect = answers(200, "hello world"), seconds = QUICK,
    header_names = { "content-type", "transfer-encoding", "x-before" },
    serve = function(c)
      c:send(head(200, { "Content-Type: text/plain", "Transfer-Encoding: chunked", "X-Before: b" })
        .. "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    end },
  { name = "interim responses, then the answer", expect = answers(200, { ok = true }), seconds = QUICK,
    serve = function(c)
      c:send("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
      json(c, 200, { ok = true })
    end },
  { name = "body until close (HTTP/1.0)", expect = answers(200, "until close"), seconds = QUICK,
    serve = function(c) c:send("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close") end },

  -- ---- the token never leaks through an error
  { name = "token echoed in headers and body", expect = fails("http", false), status = 401, seconds = QUICK,
    serve = function(c)
      local echo = c.request.headers.authorization or ""
      json(c, 401, { message = "bad " .. echo, [echo] = { deep = { { echo } } } },
        { "WWW-Authenticate: " .. echo, "X-Echo-" .. (echo:match("%S+$") or "") .. ": x" })
    end },
  { name = "token echoed in a 2xx body that is not JSON", expect = fails("decode", false), status = 200,
    seconds = QUICK,
    serve = function(c)
      local body = '{"token": "' .. (c.request.headers.authorization or "") .. '", broken'
      c:send(head(200, { "Content-Type: application/json", "Content-Length: " .. #body }) .. body)
    end },

  -- ---- redirects (followed only when asked; never to another scheme, never
  -- https to http, at most 5; Authorization stays on the same origin)
  { name = "redirect not followed by default", expect = fails("http", false), status = 302, seconds = QUICK,
    serve = function(c) json(c, 302, {}, { "Location: /custom/case/echo" }) end },
  { name = "redirect loop", call = { follow_redirects = true }, expect = fails("protocol", false), seconds = QUICK,
    serve = function(c) json(c, 302, {}, { "Location: " .. c.request.uri }) end },
  { name = "redirect to another scheme", call = { follow_redirects = true }, expect = fails("protocol", false),
    seconds = QUICK,
    serve = function(c) json(c, 302, {}, { "Location: ftp://127.0.0.1/x" }) end },
  { name = "308 keeps the method and the body", call = { follow_redirects = true, method = "post" },
    expect = answers(200, { method = "POST", authorization = true, path = "/custom/case/echo", body = '{"x":1}' }),
    seconds = QUICK,
    serve = function(c) json(c, 308, {}, { "Location: /custom/case/echo" }) end },
  { name = "redirect on the same origin keeps Authorization", call = { follow_redirects = true },
    expect = answers(200, { method = "GET", authorization = true, path = "/custom/case/echo" }), seconds = QUICK,
    serve = function(c) json(c, 307, {}, { "Location: echo" }) end },
  { name = "redirect to another host drops Authorization", call = { follow_redirects = true },
    expect = answers(200, { method = "GET", authorization = false, path = "/custom/case/echo" }), seconds = QUICK,
    serve = function(c) json(c, 302, {}, { "Location: " .. c.other .. "/custom/case/echo" }) end },
  { name = "303 after a POST turns it into a GET", call = { follow_redirects = true, method = "post" },
    expect = answers(200, { method = "GET", authorization = true, path = "/custom/case/echo" }), seconds = QUICK,
    serve = function(c) json(c, 303, {}, { "Location: /custom/case/echo?from=303" }) end },
  { name = "echo", expect = answers(200, { method = "GET", authorization = true, path = "/custom/case/echo" }),
    seconds = QUICK,
    serve = function(c)
      json(c, 200, { method = c.request.method, authorization = c.request.headers.authorization ~= nil,
                     path = (c.request.uri:match("^[^?]*")), body = c.request.body })
    end },

  -- ---- TLS (servers of their own, see server.lua; `tls` names one).
  { name = "TLS: certificate for the IP address", tls = "ip", expect = answers(200, { tls = true }),
    seconds = TLS_SECONDS, memory_kb = TLS_MEMORY_KB, serve = function(c) json(c, 200, { tls = true }) end },
  { name = "TLS: certificate for another host", tls = "wrong-host", expect = fails("tls", false),
    seconds = TLS_SECONDS, memory_kb = TLS_MEMORY_KB,
    serve = function(c) json(c, 200, { tls = true }) end },
  { name = "TLS: expired certificate", tls = "expired", expect = fails("tls", false),
    seconds = TLS_SECONDS, memory_kb = TLS_MEMORY_KB,
    serve = function(c) json(c, 200, { tls = true }) end },
  { name = "TLS: certificate from an unknown CA", tls = "untrusted", expect = fails("tls", false),
    seconds = TLS_SECONDS, memory_kb = TLS_MEMORY_KB,
    serve = function(c) json(c, 200, { tls = true }) end },
  { name = "TLS: redirect from https to http", tls = "ip", call = { follow_redirects = true },
    expect = fails("protocol", false),
    seconds = TLS_SECONDS, memory_kb = TLS_MEMORY_KB,
    serve = function(c) json(c, 302, {}, { "Location: " .. c.plain .. "/custom/case/echo" }) end },
}

-- Case names as URL segments.
_M.by_slug = {}
for _, case in ipairs(_M.CASES) do
  case.slug = case.name:lower():gsub("[^%w]+", "-"):gsub("^-", ""):gsub("-$", "")
  _M.by_slug[case.slug] = case
end

--- Runs one case's call with a fresh client; returns what happened:
-- { status, result } or { kind, retryable, status, message, text, leaked },
-- plus seconds and memory_kb (peak RSS growth).
---@param case table
---@param base_url string
---@param options table truto.new options (transport, ca_file, pool, ...)
---@param now fun(): number
---@param batch? boolean the call as the one request of a client:batch (libcurl's multi handle)
---@return table outcome
function _M.run(case, base_url, options, now, batch)
  local call = case.call or {}
  local opts = { token = _M.TOKEN, base_url = base_url, max_retries = 0, timeout = call.timeout or 10,
                 follow_redirects = call.follow_redirects, max_response_bytes = call.max_response_bytes }
  local per_call = call.sink and { sink = function() end } or nil
  for k, v in pairs(options) do opts[k] = v end
  local differs = case.differs and case.differs[options.transport]
  if differs and differs.timeout then opts.timeout = differs.timeout end
  local client = truto.new(opts)
  local growth = memory.watch()
  local started = now()
  local result, second
  local path, body = "case/" .. case.slug, call.body or { x = 1 }
  if batch then
    local results = client:batch { { api = "custom", method = call.method or "get", path = path,
                                     body = call.method == "post" and body or nil, opts = per_call } }
    result, second = results[1][1], results[1][2]
  elseif call.method == "post" then
    result, second = client.custom_api:post(path, body, nil, per_call)
  else
    result, second = client.custom_api:get(path, nil, per_call)
  end
  local outcome = { seconds = now() - started, memory_kb = growth() }
  if client.close then client:close() end
  if result ~= nil then
    outcome.status, outcome.result = second.status, result
    outcome.header_names = {}
    for name in pairs(second.headers) do outcome.header_names[#outcome.header_names + 1] = name end
    table.sort(outcome.header_names)
    return outcome
  end
  outcome.kind, outcome.retryable, outcome.status = second.kind, second.retryable, second.status
  outcome.message, outcome.text = second.message, tostring(second)
  -- Every string the error carries, at any depth, keys included.
  local seen, leaked = {}, {}
  local function scan(v, where)
    if type(v) == "string" then
      if v:find(_M.TOKEN, 1, true) then leaked[#leaked + 1] = where end
    elseif type(v) == "table" and not seen[v] then
      seen[v] = true
      for k, item in pairs(v) do
        scan(k, where .. "[key]")
        scan(item, where .. "." .. tostring(k))
      end
    end
  end
  scan(second, "err")
  scan(outcome.text, "tostring(err)")
  outcome.leaked = leaked
  return outcome
end

return _M

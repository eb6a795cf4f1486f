--- A Redis connection for the shared rate-limit store: commands written and
-- replies read by truto.redis_core (hiredis), over any socket with nginx's
-- cosocket API (a transport's `env.tcp()`: nginx's cosockets, the yielding
-- hosts' sockets, libcurl's raw stream in plain Lua), so the same code runs
-- in every host.  Connections are kept alive in the socket's pool between
-- calls; a connection is set up (AUTH, SELECT) only when new.
local _M = {}

local MAX_REPLY_BYTES = 1024 * 1024
local READ_BYTES = 16 * 1024
local KEEPALIVE_MS = 60000
local POOL_SIZE = 16

local core = require "truto.core"

local resp   -- truto.redis_core, loaded with the first connection

local function failure(message)
  return nil, { kind = "store", message = message }
end

local function decode_part(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- The parts of a `redis://` or `rediss://` URL, or nil, message:
-- `redis://[[user]:password@]host[:port][/db][?password=...&user=...]`.
---@param url string
---@return table? parts { host, port, tls, db, user, password }
---@return string? err
function _M.parse_url(url)
  if type(url) ~= "string" then return nil, "a Redis URL must be a string" end
  local scheme, rest = url:match("^(%a+)://(.*)$")
  scheme = scheme and scheme:lower()
  if scheme ~= "redis" and scheme ~= "rediss" then return nil, "a Redis URL starts with redis:// or rediss://" end
  local authority, path, query = rest:match("^([^/?#]*)(/?[^?#]*)%??([^#]*)$")
  if not authority then return nil, "malformed Redis URL" end
  local parts = { tls = scheme == "rediss", db = 0, port = 6379 }
  local userinfo, hostport = authority:match("^(.*)@([^@]*)$")
  hostport = hostport or authority
  if userinfo then
    local user, password = userinfo:match("^([^:]*):(.*)$")
    if user then
      parts.user, parts.password = user ~= "" and decode_part(user) or nil, decode_part(password)
    else
      parts.password = decode_part(userinfo)   -- redis://password@host, as redis-cli reads it
    end
  end
  local host, port = hostport:match("^%[([%x:.]+)%]:?(%d*)$")
  if not host then host, port = hostport:match("^([%w._-]+):?(%d*)$") end
  if not host or host == "" then return nil, "a Redis URL needs a host" end
  parts.host = host
  if port ~= "" then
    parts.port = tonumber(port)
    if parts.port < 1 or parts.port > 65535 then return nil, "a Redis URL's port is out of range" end
  end
  if path ~= "" and path ~= "/" then
    local db = path:match("^/(%d+)$")
    if not db then return nil, "a Redis URL's path is a database number" end
    parts.db = tonumber(db)
  end
  for name, value in query:gmatch("([^&=]+)=([^&]*)") do
    if name == "password" then parts.password = decode_part(value)
    elseif name == "user" or name == "username" then parts.user = decode_part(value)
    elseif name == "db" and value:match("^%d+$") then parts.db = tonumber(value)
    end
  end
  parts.ip = host:find(":", 1, true) ~= nil or host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil
  return parts
end

local Connection = {}
Connection.__index = Connection

-- Sets the socket's timeout to what is left of the operation; false when
-- nothing is.
local function arm(conn)
  local left = conn.ends - conn.now()
  if left <= 0 then return false end
  conn.sock:settimeout(math.max(1, math.floor(left * 1000)))
  return true
end

-- Reads one reply: value, or nil, server_error_message, or nil, nil, err.
local function read_reply(conn)
  local sock, counted = conn.sock, conn.counted
  local reader = resp.reader(MAX_REPLY_BYTES)
  while true do
    local ok, value, server_error = reader:reply()
    if ok == nil then return nil, nil, "not a Redis server (" .. value .. ")" end
    if ok then return value, server_error end
    -- A host whose reads wait for a whole count is asked for one byte at a
    -- time: a reply's length is known only once it is read.
    if not arm(conn) then return nil, nil, "timed out waiting for Redis" end
    local data, err
    if counted then data, err = sock:receiveany(READ_BYTES, 1) else data, err = sock:receiveany(READ_BYTES) end
    if not data then
      if err == "closed" then return nil, nil, "the Redis server closed the connection" end
      if err == "timeout" then return nil, nil, "timed out waiting for Redis" end
      return nil, nil, "reading from Redis failed: " .. tostring(err)
    end
    local fed, ferr = reader:feed(data)
    if not fed then return nil, nil, "not a Redis server (" .. ferr .. ")" end
  end
end

--- Sends one command: its reply, or nil, err ({ kind = "store", message,
-- server = true for an error the server answered }).  A failure closes the
-- connection.
---@param words (string|number)[]
---@return any value
---@return table? err
function Connection:call(words)
  local sock = self.sock
  if not arm(self) then
    self:close()
    return failure("timed out waiting for Redis")
  end
  local ok, err = sock:send(resp.command(words))
  if not ok then
    self:close()
    if err == "timeout" then return failure("timed out writing to Redis") end
    return failure("writing to Redis failed: " .. tostring(err))
  end
  local value, server_error, rerr = read_reply(self)
  if rerr then
    self:close()
    return failure(rerr)
  end
  if server_error then
    if server_error:find("^NOAUTH") or server_error:find("unauthenticated", 1, true) then
      self:close()   -- Redis closes it too
      return failure("Redis asks for a password: give it in the store's URL (redis://:PASSWORD@host:port)")
    end
    return nil, { kind = "store", message = "Redis: " .. server_error, server = true }
  end
  return value
end

--- EVALSHA of script, loading it (SCRIPT LOAD) first when its digest is
-- not known yet or the server lost it (a restart, SCRIPT FLUSH).
---@param script table { source = string, sha = string? } (sha is filled in)
---@param keys string[]
---@param args (string|number)[]
---@return any value
---@return table? err
function Connection:eval(script, keys, args)
  for _ = 1, 2 do
    if not script.sha then
      local sha, err = self:call { "SCRIPT", "LOAD", script.source }
      if err then return nil, err end
      script.sha = sha
    end
    local words = { "EVALSHA", script.sha, #keys }
    for _, k in ipairs(keys) do words[#words + 1] = k end
    for _, a in ipairs(args) do words[#words + 1] = a end
    local value, err = self:call(words)
    if not (err and err.server and err.message:find("NOSCRIPT", 1, true)) then return value, err end
    script.sha = nil
  end
  return failure("Redis keeps losing the pacing script")
end

--- Back to the pool, for the next call.
function Connection:release()
  if not self.sock then return end
  local ok = self.sock:setkeepalive(KEEPALIVE_MS, POOL_SIZE)
  if not ok then self.sock:close() end
  self.sock = nil
end

--- Closes the connection (it is not pooled).  Idempotent.
function Connection:close()
  if not self.sock then return end
  self.sock:close()
  self.sock = nil
end

--- A connection to the server of `parts` for one operation: it and every
-- command sent on it end within `seconds` from now, all steps together.
-- tcp makes a socket with nginx's cosocket API; env.now is its clock.
---@param env table a transport's env: { tcp = fun(): table, now = fun(): number, counted_reads = boolean? }
---@param parts table from parse_url
---@param seconds number
---@param options? table { insecure = boolean }
---@return table? connection
---@return table? err { kind = "store", message }
function _M.connect(env, parts, seconds, options)
  resp = resp or require "truto.redis_core"
  local insecure = options and options.insecure or false
  local sock = env.tcp()
  local conn = setmetatable({ sock = sock, counted = env.counted_reads, now = env.now, ends = env.now() + seconds },
                            Connection)
  arm(conn)
  local where = ("%s:%d"):format(parts.host, parts.port)
  -- A pooled connection is taken only by the same credentials and TLS check
  -- (nginx's pools are the worker's, shared by every client in it).
  local pool = ("truto-redis:%s:%d:%d:%s:%s:%s"):format(parts.host, parts.port, parts.db,
    parts.tls and (insecure and "tls-unverified" or "tls") or "tcp", parts.user or "",
    parts.password and core.checksum(parts.password) or "")
  local host = parts.host:find(":", 1, true) and "[" .. parts.host .. "]" or parts.host
  local ok, err = sock:connect(host, parts.port, { pool = pool })
  if not ok then
    if err == "timeout" then return failure("timed out connecting to Redis at " .. where) end
    return failure(("cannot connect to Redis at %s: %s"):format(where, tostring(err)))
  end
  if sock:getreusedtimes() > 0 then return conn end
  if parts.tls then
    if not arm(conn) then
      conn:close()
      return failure("timed out connecting to Redis at " .. where)
    end
    local verify = not insecure
    local hok, session, herr = pcall(sock.sslhandshake, sock, nil, (not parts.ip) and parts.host or nil, verify)
    if not hok or not session then
      conn:close()
      return failure(("TLS handshake with Redis at %s failed: %s"):format(where,
        tostring(hok and herr or session):match("[^\n]*")))
    end
  end
  if parts.password then
    local _, aerr = conn:call(parts.user and { "AUTH", parts.user, parts.password } or { "AUTH", parts.password })
    if aerr then
      conn:close()
      if not aerr.server then return nil, aerr end
      -- The server's reason, never the password.
      return failure("Redis refused the credentials: " .. aerr.message:gsub("^Redis: ", ""))
    end
  end
  if parts.db ~= 0 then
    local _, serr = conn:call { "SELECT", parts.db }
    if serr then
      conn:close()
      if not serr.server then return nil, serr end
      return failure("Redis refused database " .. parts.db .. ": " .. serr.message:gsub("^Redis: ", ""))
    end
  end
  return conn
end

return _M

-- Sends a webhook event as Truto does: a POST of the JSON event to the
-- webhook's target_url with Content-Type: application/json, User-Agent:
-- truto and X-Truto-Signature: format=sha256,v=<hex HMAC-SHA256 of the body
-- keyed with the webhook's secret> (reference/truto-platform.md, §17).  The
-- HMAC comes from the OpenSSL that nginx has loaded, through LuaJIT's FFI.
local ffi = require "ffi"

local _M = {}

local ngx = ngx

local TIMEOUT_MS = 5000 -- connect, send and read each

pcall(ffi.cdef, [[
  typedef struct evp_md_st EVP_MD;
  const EVP_MD *EVP_sha256(void);
  unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d, size_t n,
                      unsigned char *md, unsigned int *md_len);
]])

-- nginx's own libcrypto when its symbols are global, else the system's.
local crypto = (function()
  if pcall(function() return ffi.C.HMAC end) then return ffi.C end
  local ok, lib = pcall(ffi.load, "crypto")
  if ok then return lib end
  return ffi.load("libcrypto.so.3")
end)()

--- HMAC-SHA256 of data keyed with key, as 64 lower-case hex digits.
---@param key string
---@param data string
---@return string
function _M.hmac_sha256_hex(key, data)
  local digest = ffi.new("unsigned char[32]")
  local length = ffi.new("unsigned int[1]")
  assert(crypto.HMAC(crypto.EVP_sha256(), key, #key, data, #data, digest, length) ~= nil, "HMAC failed")
  return (ffi.string(digest, length[0]):gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- POSTs body to url, signed with secret.  Returns the target's status, or
-- nil and why it could not be reached.  http:// and https:// (not verified);
-- the host must be an IP address or localhost: the emulator has no resolver.
---@param url string
---@param secret string
---@param body string
---@return integer|nil status
---@return string? err
function _M.post(url, secret, body)
  local scheme, host, port, path = url:match("^(https?)://([^/:?#]+):?(%d*)([^#]*)$")
  if not scheme then return nil, "target_url is not an http:// or https:// URL: " .. url end
  if path == "" then path = "/" elseif path:sub(1, 1) == "?" then path = "/" .. path end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  local address = host == "localhost" and "127.0.0.1" or host
  local sock = ngx.socket.tcp()
  sock:settimeouts(TIMEOUT_MS, TIMEOUT_MS, TIMEOUT_MS)
  local ok, err = sock:connect(address, port)
  if not ok then return nil, "cannot connect to " .. host .. ":" .. port .. ": " .. tostring(err) end
  if scheme == "https" then
    ok, err = sock:sslhandshake(nil, host, false)
    if not ok then sock:close() return nil, "TLS handshake with " .. host .. " failed: " .. tostring(err) end
  end
  local request = table.concat({
    "POST " .. path .. " HTTP/1.1",
    "Host: " .. host .. ((port == 80 or port == 443) and "" or ":" .. port),
    "Content-Type: application/json",
    "User-Agent: truto",
    "X-Truto-Signature: format=sha256,v=" .. _M.hmac_sha256_hex(secret, body),
    "Content-Length: " .. #body,
    "Connection: close",
    "", body,
  }, "\r\n")
  ok, err = sock:send(request)
  local line
  if ok then line, err = sock:receive("*l") end
  sock:close()
  local status = line and tonumber(line:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then
    return nil, "no HTTP response from " .. host .. ":" .. port .. ": " .. tostring(err or line)
  end
  return status
end

return _M

-- Sends a webhook event as Truto does: a POST of the JSON event to the
-- webhook's target_url with Content-Type: application/json, User-Agent:
-- truto and X-Truto-Signature: format=sha256,v=<hex HMAC-SHA256 of the body
-- keyed with the webhook's secret> (reference/truto-platform.md, §17), from
-- truto_emulator.crypto.
local crypto = require "truto_emulator.crypto"

local _M = {}

local ngx = ngx

local TIMEOUT_MS = 5000 -- connect, send and read each

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
    "X-Truto-Signature: format=sha256,v=" .. crypto.hmac_sha256_hex(secret, body),
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

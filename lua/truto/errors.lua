--- Error values: every expected failure comes back as `nil, err` where err
-- is a table built here, with a __tostring that never shows the API token.
local core = require "truto.core"

local _M = {}

local error_mt = {}
error_mt.__index = error_mt

local REASONS = {
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [410] = "Gone", [413] = "Payload Too Large", [415] = "Unsupported Media Type",
  [422] = "Unprocessable Entity", [425] = "Too Early", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- A token shorter than this is only scrubbed where it stands alone (see
-- scrub): "t" must not turn "truto: timed out" into noise.
local SHORT_SECRET = 8
-- The longest err.message, in bytes ("..." included); the whole text stays
-- in err.body.
local MAX_MESSAGE = 1024

-- Bytes that may belong to a token (base64, base64url, JWT, hex and the
-- like): a short secret next to one of them is part of a longer word.
local WORD_BYTE = {}
for c in ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/=-"):gmatch(".") do
  WORD_BYTE[c:byte()] = true
end

-- Secrets of every error made: __tostring scrubs its text too (a field set
-- after errors.new is then still covered).  Weak keys: an error that is
-- collected takes its entry with it; the secret is no field of the error.
local secrets = setmetatable({}, { __mode = "k" })

-- The text that replaces the secret: "[REDACTED]" unless that could make
-- the secret appear again (a secret holding a bracket, or inside the
-- marker), then another one that cannot.
local function marker_for(secret)
  for _, m in ipairs { "[REDACTED]", "<REDACTED>", "(REDACTED)", "{REDACTED}", "[HIDDEN]", "<HIDDEN>" } do
    if not (secret:find(m:sub(1, 1), 1, true) or secret:find(m:sub(-1), 1, true) or m:find(secret, 1, true)) then
      return m
    end
  end
  for c in ("*#!^|0123456789"):gmatch(".") do
    if not secret:find(c, 1, true) then return c:rep(3) end
  end
  return ""
end

--- Scrubs secret from s.  A secret of 8 bytes or more is replaced wherever
-- it occurs; a shorter one only where it stands alone: neither preceded
-- nor followed by a byte of `[A-Za-z0-9._~+/=-]` ("Bearer t" gives "Bearer
-- [REDACTED]", "truto: timed out" stays as it is).  Matching is plain
-- (no Lua pattern), so a secret may hold `%`, `.` or `-`.
---@param s string
---@param secret string not empty
---@param marker string what replaces it (marker_for(secret))
---@return string s
local function scrub(s, secret, marker)
  local short = #secret < SHORT_SECRET
  repeat
    local out, start, from, changed = {}, 1, 1, false
    while true do
      local i, j = s:find(secret, from, true)
      if not i then break end
      if not short or (not WORD_BYTE[s:byte(i - 1)] and not WORD_BYTE[s:byte(j + 1)]) then
        out[#out + 1] = s:sub(start, i - 1)
        out[#out + 1] = marker
        start, from, changed = j + 1, j + 1, true
      else
        from = i + 1
      end
    end
    if not changed then return s end
    out[#out + 1] = s:sub(start)
    s = table.concat(out)
    -- A long secret cannot reappear: it would have to cross a marker, whose
    -- first and last bytes it does not hold.  A short one next to a replaced
    -- one may now stand alone, and without a marker (a secret holding every
    -- printable byte) pieces may join: scrub again.
  until not short and marker ~= ""
  return s
end

-- Scrubs secret from every string reachable from root (a table): values
-- and keys, at any depth, each table once (cycles are fine).  Tables are
-- rewritten in place, so their metatables (truto.array, truto.object) and
-- identities stay; a key holding the secret is replaced by its scrubbed
-- form (when that key is taken, the value is dropped).  Raw access only:
-- no metamethod runs.
local function scrub_tree(root, secret, marker)
  local seen, stack = { [root] = true }, { root }
  while #stack > 0 do
    local t = table.remove(stack)
    local renamed, changed
    for k, v in next, t do
      if type(v) == "string" then
        local clean = scrub(v, secret, marker)
        if clean ~= v then
          changed = changed or {}
          changed[k] = clean
        end
      elseif type(v) == "table" and not seen[v] then
        seen[v] = true
        stack[#stack + 1] = v
      end
      if type(k) == "string" then
        local clean = scrub(k, secret, marker)
        if clean ~= k then
          renamed = renamed or {}
          renamed[#renamed + 1] = { k, clean }
        end
      elseif type(k) == "table" and not seen[k] then
        seen[k] = true
        stack[#stack + 1] = k
      end
    end
    -- Written after the walk: next must not meet keys it has not seen.
    for k, clean in pairs(changed or {}) do rawset(t, k, clean) end
    for _, pair in ipairs(renamed or {}) do
      local value = rawget(t, pair[1])
      rawset(t, pair[1], nil)
      if rawget(t, pair[2]) == nil then rawset(t, pair[2], value) end
    end
  end
end

-- At most MAX_MESSAGE bytes, cut before a UTF-8 character, ending "...".
local function shorten(message)
  if #message <= MAX_MESSAGE then return message end
  local keep = MAX_MESSAGE - 3
  -- Step back over continuation bytes (10xxxxxx) so that no character is
  -- split; at most 3, for text that is not UTF-8.
  for _ = 1, 3 do
    local b = message:byte(keep + 1)
    if b < 0x80 or b >= 0xC0 then break end
    keep = keep - 1
  end
  return message:sub(1, keep) .. "..."
end

function error_mt:__tostring()
  local kept = secrets[self]
  local parts = { "truto:" }
  if self.method and self.path then parts[#parts + 1] = self.method .. " " .. self.path .. ":" end
  if self.status then
    parts[#parts + 1] = tostring(self.status) .. (REASONS[self.status] and " " .. REASONS[self.status] or "")
    parts[#parts] = parts[#parts] .. ":"
  else
    parts[#parts + 1] = self.kind .. ":"
  end
  parts[#parts + 1] = self.message ~= "" and self.message or "(no message)"
  if self.attempts and self.attempts > 1 then
    parts[#parts + 1] = ("(after %d attempts)"):format(self.attempts)
  end
  local text = table.concat(parts, " ")
  for _, secret in ipairs(kept or {}) do text = scrub(text, secret, marker_for(secret)) end
  return text
end

--- Builds an error.  fields: kind (required), message, status, body,
-- headers, method, path, attempts, retryable, retry_after, curl_code.
-- secret: the token, scrubbed from every string the error carries: the
-- message and every other string field, the body and the headers (values
-- and keys, at any depth, cycles included); headers given as a transport's
-- header block (a truto.headers userdata) become a table first.  A secret of 8 bytes or more
-- is replaced by "[REDACTED]" (another marker if the secret holds a
-- bracket) wherever it occurs; a shorter one only where it stands alone,
-- not next to a letter, a digit or one of `._~+/=-`, so that a one-letter
-- secret leaves words alone ("Bearer t" is scrubbed, "timed out" is not).
-- The body's and the headers' tables are scrubbed in place (they are the
-- library's own, freshly decoded: their metatables and truto.null stay).
-- tostring(err) is scrubbed again, covering fields set after this call.
-- err.message is cut to at most 1024 bytes at a UTF-8 character boundary,
-- ending "..." (the whole text stays in err.body).
---@param fields table
---@param secret? string|string[] the secret, or several (the API token and an MCP token)
---@return truto.Error err
function _M.new(fields, secret)
  local err = setmetatable({}, error_mt)
  for k, v in pairs(fields) do err[k] = v end
  -- A transport's header block reads by name only: made a table, so that
  -- the scrub below reaches every field.
  if type(err.headers) == "userdata" then err.headers = core.header_table(err.headers) end
  if err.message == nil then err.message = "" end
  local kept = {}
  for _, s in ipairs(type(secret) == "table" and secret or { secret }) do
    if type(s) == "string" and s ~= "" then
      kept[#kept + 1] = s
      scrub_tree(err, s, marker_for(s))
    end
  end
  if #kept > 0 then secrets[err] = kept end
  if type(err.message) == "string" then err.message = shorten(err.message) end
  err.retryable = err.retryable or false
  err.attempts = err.attempts or 1
  return err
end

--- Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date
-- in any of the three forms RFC 9110 has recipients accept (IMF-fixdate
-- `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT`,
-- asctime `Sun Nov  6 08:49:37 1994`), checked strictly: names as the RFC
-- spells them, fields in range, the weekday the date's.  White space around
-- the value is ignored.  A date in the past gives 0.
---@param value? string the header
---@param now? number the clock, in seconds (default os.time()); it also
-- places RFC 850's two-digit year: within 50 years of now
---@return number? seconds nil when value is neither
function _M.parse_retry_after(value, now)
  if type(value) ~= "string" then return nil end
  -- Trimmed without a pattern that backtracks: a hostile server may send
  -- a megabyte of white space.
  local first, last = value:find("%S"), #value
  if not first then return nil end
  while value:find("^%s", last) do last = last - 1 end
  value = value:sub(first, last)
  local secs = value:match("^%d+$")
  if secs then return tonumber(secs) end
  now = now or os.time()
  local at = core.parse_http_date(value, now)
  if at then
    local wait = at - now
    return wait > 0 and wait or 0
  end
  return nil
end

--- Truto's normalized rate-limit headers; the limit may carry a window
-- parameter ("110;w=10"), so only the leading integer is read.
---@param headers table<string, string>|userdata names in lower case, or a transport's header block
---@return truto.RateLimitInfo? rate_limit nil when none of the headers is there
function _M.parse_rate_limit(headers)
  local function int(name)
    local v = headers[name]
    return v and tonumber(v:match("^%s*(%d+)")) or nil
  end
  local limit, remaining, reset = int("ratelimit-limit"), int("ratelimit-remaining"), int("ratelimit-reset")
  if not (limit or remaining or reset) then return nil end
  return { limit = limit, remaining = remaining, reset = reset,
           window = headers["ratelimit-limit"] and tonumber(headers["ratelimit-limit"]:match(";%s*w=(%d+)")) }
end

--- The error for an HTTP response whose status is not 2xx.  body is the
-- decoded JSON envelope when there was one, else the raw text.
---@param status integer
---@param headers table<string, string>|userdata a table, or a transport's header block
---@param body? table|string
---@param secret? string|string[] the token (and any other secret), scrubbed from the error
---@return truto.Error err
function _M.from_response(status, headers, body, secret)
  local message
  if type(body) == "table" then
    message = type(body.message) == "string" and body.message or nil
    if (message == nil or message == "") and body.raw_response ~= nil then
      local raw = body.raw_response
      message = type(raw) == "string" and raw or (type(raw) == "table" and type(raw.message) == "string"
        and raw.message) or nil
    end
    message = message or (type(body.error) == "string" and body.error) or nil
  elseif type(body) == "string" and body ~= "" then
    message = body   -- scrubbed whole, then cut, by _M.new
  end
  return _M.new({
    kind = "http",
    status = status,
    message = message or REASONS[status] or "HTTP " .. status,
    body = body,
    headers = headers,
    retry_after = _M.parse_retry_after(headers["retry-after"]),
    rate_limit = _M.parse_rate_limit(headers),
    request_id = headers["x-request-id"],
  }, secret)
end

return _M

-- multipart/form-data request bodies (RFC 7578), read from the request
-- socket as they arrive and never held whole: each part is counted and
-- hashed (SHA-256, truto_emulator.crypto) in 64 KiB pieces, so a 200 MB
-- upload costs no more memory than a small one.  The request log records per part its name,
-- filename, content type, size and digest, and the text of a small field.
local crypto = require "truto_emulator.crypto"
local json = require "truto_emulator.json"

local _M = {}

local ngx = ngx

local READ_SIZE = 65536
local MAX_HEADER_LINE = 8192
local MAX_HEADER_LINES = 32
-- A field without a filename up to this size keeps its text (request.lua
-- turns the fields into the record a route sees).
local MAX_KEPT_VALUE = 65536


--- The boundary of a multipart/form-data Content-Type, or nil for any other type.
function _M.boundary(content_type)
  if type(content_type) ~= "string" or not content_type:lower():match("^%s*multipart/form%-data%s*;") then
    return nil
  end
  local b = content_type:match(';%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="([^"]+)"')
    or content_type:match(";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
  if b and #b <= 70 then return b end
  return nil
end

-- A quoted-string or token parameter of a Content-Disposition, with the
-- %22, %0D and %0A escapes of RFC 7578 (as HTML and libcurl write them) undone.
local UNESCAPES = { ["%22"] = '"', ["%0D"] = "\r", ["%0A"] = "\n", ["%0d"] = "\r", ["%0a"] = "\n" }
local function parameter(value, name)
  local v = value:match(";%s*" .. name .. '="([^"]*)"') or value:match(";%s*" .. name .. "=([^;%s]+)")
  return v and (v:gsub("%%[0-9A-Fa-f][0-9A-Fa-f]", function(e) return UNESCAPES[e] end))
end

-- The header lines of one part up to the blank line: name, filename and
-- content type, or nil, err.
local function read_part_head(sock)
  local part = {}
  for _ = 1, MAX_HEADER_LINES do
    local line, err = sock:receive("*l")
    if not line then return nil, "the body ended in a part's headers (" .. tostring(err) .. ")" end
    if #line > MAX_HEADER_LINE then return nil, "a part's header line is too long" end
    if line == "" then
      if not part.name then return nil, "a part has no Content-Disposition name" end
      return part
    end
    local header, value = line:match("^([%w-]+)%s*:%s*(.-)%s*$")
    header = header and header:lower()
    if header == "content-disposition" then
      if not value:lower():match("^form%-data%s*;") then return nil, "a part's Content-Disposition is not form-data" end
      -- "; name=" and not "; filename=": the pattern wants a ';' and spaces before it.
      part.name = parameter(value, "[Nn][Aa][Mm][Ee]")
      part.filename = parameter(value, "[Ff][Ii][Ll][Ee][Nn][Aa][Mm][Ee]")
    elseif header == "content-type" then
      part.content_type = value
    elseif not header then
      return nil, "a part has a malformed header line"
    end
  end
  return nil, "a part has too many header lines"
end

--- Reads the request body as multipart/form-data with this boundary,
-- straight from the socket (ngx.req.read_body must not have run).
-- Returns the parts `{ name, filename?, content_type?, size, sha256,
-- value? }` in order, or nil, err for a malformed body.
function _M.read(boundary)
  local sock, err = ngx.req.socket()
  if not sock then return nil, "cannot read the body: " .. tostring(err) end
  sock:settimeout(60000)
  -- The preamble, up to the first delimiter (no CRLF before it), then its line end.
  local skip = sock:receiveuntil("--" .. boundary)
  repeat
    local data, rerr = skip(READ_SIZE)
    if rerr then return nil, "no opening boundary (" .. rerr .. ")" end
  until not data
  local parts = json.array()
  local after, rerr = sock:receive("*l")
  while true do
    if not after then return nil, "the body ended after a boundary (" .. tostring(rerr) .. ")" end
    if after:sub(1, 2) == "--" then return parts end   -- the close delimiter
    if after:match("^[ \t]*$") == nil then return nil, "garbage after a boundary" end
    local part, herr = read_part_head(sock)
    if not part then return nil, herr end
    local hash, size, kept = crypto.sha256(), 0, {}
    local body = sock:receiveuntil("\r\n--" .. boundary)
    while true do
      local data, berr = body(READ_SIZE)
      if berr then return nil, "the body ended inside the part " .. part.name .. " (" .. berr .. ")" end
      if not data then break end
      hash.update(data)
      size = size + #data
      if not part.filename and size <= MAX_KEPT_VALUE then kept[#kept + 1] = data end
    end
    part.size, part.sha256 = size, hash.hex()
    if not part.filename and size <= MAX_KEPT_VALUE then part.value = table.concat(kept) end
    parts[#parts + 1] = part
    after, rerr = sock:receive("*l")
  end
end

return _M

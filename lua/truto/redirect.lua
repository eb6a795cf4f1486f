--- Following redirects, the same way over every transport (the transports
-- never follow one themselves): at most 5; only to http and https, never
-- from https to http; Authorization and Cookie stay on the first request's
-- origin; 303 turns anything but HEAD into a GET and 301/302 turn a POST
-- into one (as browsers and libcurl do), dropping the body; 307 and 308
-- keep method and body.

local _M = {}

_M.MAX = 5
local STATUS = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

-- RFC 3986 §5.2.4: "." and ".." segments out of a path.
local function remove_dot_segments(path)
  local out = {}
  for segment in (path .. "/"):gmatch("([^/]*)/") do
    if segment == ".." then
      if #out > 1 then out[#out] = nil end
    elseif segment ~= "." then
      out[#out + 1] = segment
    end
  end
  local last = path:match("[^/]*$")
  if last == "." or last == ".." then out[#out + 1] = "" end
  return table.concat(out, "/")
end

--- The absolute URL of a Location value read against the request's URL
-- (RFC 3986 §5.2), without its fragment; nil when it cannot be one.
---@param base string an absolute http(s) URL
---@param ref string
---@return string? url
function _M.resolve(base, ref)
  ref = ref:gsub("#.*$", "")
  if ref:find("[%z\1-\32\127]") then return nil end
  if ref:match("^%a[%w+.-]*:") then return ref end
  local scheme, authority, path, query = base:match("^(%a+:)//([^/?#]*)([^?#]*)(%??[^#]*)$")
  if not scheme then return nil end
  if ref:sub(1, 2) == "//" then return scheme .. ref end
  if path == "" then path = "/" end
  if ref == "" then return scheme .. "//" .. authority .. path .. query end
  if ref:sub(1, 1) == "?" then return scheme .. "//" .. authority .. path .. ref end
  local rpath, rquery = ref:match("^([^?]*)(.*)$")
  if rpath:sub(1, 1) ~= "/" then rpath = path:match("^(.*/)") .. rpath end
  return scheme .. "//" .. authority .. remove_dot_segments(rpath) .. rquery
end

local function origin(url)
  return url.scheme .. "://" .. url.host:lower() .. ":" .. url.port
end

local function refused(message)
  return nil, { kind = "protocol", message = message, final = true }
end

local function without(lines, names)
  local kept = {}
  for _, line in ipairs(lines or {}) do
    if not names[line:match("^([^:;]+)"):lower()] then kept[#kept + 1] = line end
  end
  return kept
end

local CREDENTIALS = { authorization = true, cookie = true }
local BODY_HEADERS = { ["content-type"] = true, ["content-length"] = true }

--- The request to send after a response, when it is a redirect to follow:
-- nil when it is not one (no Location: the 3xx is the answer), or nil, err
-- (kind "protocol", final) when it may not be followed.
---@param first table the call's own request { method, url, headers, body }
---@param req table the request that got the response
---@param status integer
---@param headers table|userdata the response's headers (a table, or a transport's header block)
---@param hops integer redirects followed so far
---@return table? next_request
---@return table? err
function _M.next(first, req, status, headers, hops)
  local location = STATUS[status] and headers.location
  if not location or location == "" then return nil end
  if hops >= _M.MAX then return refused("more than " .. _M.MAX .. " redirects") end
  local url = _M.resolve(req.url, location)
  if not url then return refused("refused a redirect to a malformed URL") end
  local scheme = url:match("^(%a[%w+.-]*):")
  scheme = scheme and scheme:lower()
  if scheme ~= "http" and scheme ~= "https" then
    return refused("refused a redirect to a scheme other than http or https")
  end
  if req.url:match("^[Hh][Tt][Tt][Pp][Ss]:") and scheme == "http" then
    return refused("refused a redirect from https to http")
  end
  local parse_url = require("truto.http1").parse_url   -- loaded at the first redirect only
  local target, from = parse_url(url), parse_url(first.url)
  if not target then return refused("refused a redirect to a malformed URL") end
  local method, body, lines = req.method, req.body, req.headers
  if (status == 303 and method ~= "HEAD") or ((status == 301 or status == 302) and method == "POST") then
    method, body, lines = "GET", nil, without(lines, BODY_HEADERS)
  end
  if origin(target) ~= origin(from) then lines = without(lines, CREDENTIALS) end
  return { method = method, url = url, headers = lines, body = body }
end

return _M

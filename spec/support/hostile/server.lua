--- The server side of the conformance table (spec/support/hostile/cases.lua),
-- inside nginx: `/custom/case/SLUG` plays that case's bytes on the raw
-- connection (ngx.req.socket(true)), so nothing of nginx's own HTTP gets
-- in the way of the hostile answer.
local cases = require "spec.support.hostile.cases"

local _M = {}

local settings = {}   -- base, other, plain: set by init()
local files = {}

--- From init_by_lua: the server's URLs, and the payloads the spec prepared,
-- read once in the master so that every worker has them in memory.
---@param values table { prefix, base, other, plain, files = { name, ... } }
function _M.init(values)
  settings = values
  for _, name in ipairs(values.files) do
    local f = assert(io.open(values.prefix .. "/" .. name, "rb"))
    files[name] = f:read("*a")
    f:close()
  end
end

local function file(name)
  return assert(files[name], "no prepared file " .. name)
end

--- The content handler.
function _M.serve()
  local case = cases.by_slug[ngx.var.uri:match("^/custom/case/([^/]+)$") or ""]
  if not case then
    ngx.status = 404
    ngx.say("no such case: ", ngx.var.uri)
    return
  end
  local headers = ngx.req.get_headers()
  local sock = assert(ngx.req.socket(true))
  sock:settimeout(10000)
  local length = tonumber(headers["content-length"] or "")
  -- Read, so that closing sends no reset, and echoed.
  local body = length and length > 0 and not case.unread and sock:receive(length) or nil
  local c = {
    request = { method = ngx.req.get_method(), uri = ngx.var.request_uri, headers = headers, body = body },
    base = settings.base, other = settings.other, plain = settings.plain, file = file,
  }
  function c.send(_, data) return sock:send(data) end
  function c.sleep(_, seconds) ngx.sleep(seconds) end
  case.serve(c)
  ngx.exit(444)
end

return _M

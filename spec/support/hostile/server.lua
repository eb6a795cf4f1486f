--- The server side of the conformance table (spec/support/hostile/cases.lua),
-- inside nginx: `/custom/case/SLUG` plays that case's bytes on the raw
-- connection (ngx.req.socket(true)), so nothing of nginx's own HTTP gets
-- in the way of the hostile answer.
local cases = require "spec.support.hostile.cases"

local _M = {}

local settings = {}   -- prefix, base, other, plain: set by init()
local files = {}

--- From init_by_lua: where the prepared files are and the server's URLs.
---@param values table
function _M.init(values)
  settings = values
end

local function file(name)
  if not files[name] then
    local f = assert(io.open(settings.prefix .. "/" .. name, "rb"))
    files[name] = f:read("*a")
    f:close()
  end
  return files[name]
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

-- This process's memory, from /proc/self/status and /proc/self/maps: the
-- flat-memory checks of the specs and the libraries loaded, in busted and
-- inside nginx (no busted here).
local _M = {}

--- A field of /proc/self/status in kB (VmRSS, VmHWM, ...), 0 when unknown.
---@param field string
---@return integer
function _M.kb(field)
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+)")) or 0
end

--- Collects garbage, resets the peak RSS (VmHWM) and returns a function
-- giving how far the peak has since risen above the RSS of now, in kB.
---@return fun(): integer
function _M.watch()
  collectgarbage()
  collectgarbage()
  local clear = io.open("/proc/self/clear_refs", "w")
  if clear then
    clear:write("5")
    clear:close()
  end
  local before = _M.kb("VmRSS")
  return function() return _M.kb("VmHWM") - before end
end

--- Whether a shared object whose path contains name (plain text) is mapped
-- into this process (/proc/self/maps): which libraries it has loaded.
---@param name string
---@return boolean
function _M.mapped(name)
  local f = assert(io.open("/proc/self/maps"))
  local maps = f:read("*a")
  f:close()
  return maps:find(name, 1, true) ~= nil
end

return _M

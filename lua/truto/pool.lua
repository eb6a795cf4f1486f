--- Kept-alive connections for the hosts whose sockets have no pool of their
-- own (nginx pools cosockets itself; cqueues, luv and HAProxy do not): idle
-- connections by pool key, each kept for its keep-alive time, at most `size`
-- per key (the least recently used goes first), and checked when taken, as
-- the peer may have closed it meanwhile.  `truto.cosocket` is its one user.
local _M = {}

local Pool = {}
Pool.__index = Pool

--- An empty pool.
---@param now fun(): number the host's clock, in seconds
---@param close fun(conn: any) closes a connection the pool lets go of
---@return table pool
function _M.new(now, close)
  return setmetatable({ now = now, close = close, idle = {} }, Pool)
end

-- Closes the entries of list that have expired (the oldest are first).
local function sweep(self, list, now)
  while list[1] and list[1].expires <= now do
    self.close(table.remove(list, 1).conn)
  end
end

--- An idle connection of key that `usable(conn)` accepts, most recently
-- kept first, with the times it was used before; or nil.  Expired and
-- refused ones are closed on the way.
---@param key string
---@param usable fun(conn: any): boolean
---@return any? conn
---@return integer? reused
function Pool:take(key, usable)
  local list = self.idle[key]
  if not list then return nil end
  sweep(self, list, self.now())
  while #list > 0 do
    local entry = table.remove(list)
    if usable(entry.conn) then return entry.conn, entry.reused end
    self.close(entry.conn)
  end
  return nil
end

--- Keeps conn idle under key for `seconds`, closing the least recently
-- kept one of key when `size` are already kept.
---@param key string
---@param conn any
---@param reused integer the times conn has been used before
---@param seconds number
---@param size integer
function Pool:put(key, conn, reused, seconds, size)
  local list = self.idle[key]
  if not list then
    list = {}
    self.idle[key] = list
  end
  local now = self.now()
  sweep(self, list, now)
  while #list >= size do self.close(table.remove(list, 1).conn) end
  list[#list + 1] = { conn = conn, reused = reused, expires = now + seconds }
end

--- Closes every kept connection.  Idempotent.
function Pool:close_all()
  for key, list in pairs(self.idle) do
    for _, entry in ipairs(list) do self.close(entry.conn) end
    self.idle[key] = nil
  end
end

return _M

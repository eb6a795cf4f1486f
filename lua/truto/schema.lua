--- What the library knows of Truto's unified schemas: the top-level body
-- fields that are lists, so that an empty Lua table there is written as []
-- rather than {} (Lua cannot tell the two apart).
local _M = {}

local LIST_FIELDS = {
  crm = {
    opportunities = { contact = true, tags = true, urls = true },
    accounts = { addresses = true, phone_numbers = true, urls = true, tags = true },
    contacts = { addresses = true, email_addresses = true, phone_numbers = true, tags = true, urls = true },
    leads = { addresses = true, email_addresses = true, phone_numbers = true, tags = true, urls = true },
    users = { urls = true },
  },
}

--- The set of list fields of model/resource, or nil when none is known.
---@param model string
---@param resource string
---@return table<string, boolean>? fields
function _M.list_fields(model, resource)
  local m = LIST_FIELDS[model]
  return m and m[resource] or nil
end

return _M

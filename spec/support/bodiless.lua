-- Writes without a body, one contract for both transports: POST, PUT and
-- PATCH go out with `Content-Length: 0` and no body (as libcurl sends them),
-- never chunked, without a Content-Type; a custom method without a body sends
-- `{}`.  spec/integration_spec.lua makes the calls with libcurl, the app of
-- spec/ngx_spec.lua (spec/ngx/truto_app.lua) inside nginx; both check the
-- emulator's request log with received() and expected().  Loaded inside
-- nginx too: no busted here.
local _M = {}

--- Makes the calls with client; returns each one's HTTP status.
---@param client truto.Client
---@param account string the integrated account
---@return integer[] statuses
function _M.calls(client, account)
  local q = { integrated_account_id = account }
  local statuses = {}
  local function status(_, response_or_err)
    statuses[#statuses + 1] = response_or_err.status or response_or_err.kind
  end
  status(client.custom_api:post("bodiless/post", nil, q))
  status(client.custom_api:put("bodiless/put", nil, q))
  status(client.custom_api:patch("bodiless/patch", nil, q))
  status(client.unified_api:custom_method("crm", "accounts", "merge", nil, q))
  return statuses
end

-- The statuses calls() returns against the emulator: merge wants ids.
_M.STATUSES = { 200, 200, 200, 400 }

--- The part of the emulator's request log the contract is about: method,
-- URI, body, the framing headers, and the names of all the headers.
---@param log table[] the emulator's request log
---@return table[]
function _M.received(log)
  local out = {}
  for i, entry in ipairs(log) do
    local names = {}
    for name in pairs(entry.headers) do names[#names + 1] = name end
    table.sort(names)
    out[i] = {
      method = entry.method, uri = entry.uri, body = entry.body, names = table.concat(names, " "),
      content_length = entry.headers["content-length"], transfer_encoding = entry.headers["transfer-encoding"],
      content_type = entry.headers["content-type"], expect = entry.headers.expect,
    }
  end
  return out
end

--- What received() must give after calls().
---@param account string the integrated account
---@param transport_names string[] headers of the transport's own (libcurl: accept-encoding)
---@return table[]
function _M.expected(account, transport_names)
  local function names(extra)
    local list = { "accept", "authorization", "content-length", "host", "user-agent" }
    for _, name in ipairs(transport_names) do list[#list + 1] = name end
    for _, name in ipairs(extra) do list[#list + 1] = name end
    table.sort(list)
    return table.concat(list, " ")
  end
  local q = "?integrated_account_id=" .. account
  return {
    { method = "POST", uri = "/custom/bodiless/post" .. q, body = "", content_length = "0",
      names = names { "idempotency-key" } },
    { method = "PUT", uri = "/custom/bodiless/put" .. q, body = "", content_length = "0", names = names {} },
    { method = "PATCH", uri = "/custom/bodiless/patch" .. q, body = "", content_length = "0",
      names = names { "idempotency-key" } },
    { method = "POST", uri = "/unified/crm/accounts/merge" .. q, body = "{}", content_length = "2",
      content_type = "application/json", names = names { "content-type", "idempotency-key" } },
  }
end

return _M

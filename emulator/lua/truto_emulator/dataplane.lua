-- The account checks of the Unified and Proxy routes, and those routes called
-- as functions (batch requests and MCP tools run them without HTTP).
local json = require "truto_emulator.json"
local store = require "truto_emulator.store"
local response = require "truto_emulator.response"
local unified = require "truto_emulator.unified"
local proxy = require "truto_emulator.proxy"

local _M = {}

local HANDLERS = { unified = unified.handle, proxy = proxy.handle }

function _M.unknown_account(account_id)
  return response.error(400, "integrated_account_id " .. account_id .. " does not match any integrated account")
end

-- The answer an account's status imposes on every call through it, or nil.
-- needs_reauth: Truto keeps answering the provider's 401 until the end user
-- reconnects (reference/truto-platform.md, "Status semantics").
function _M.account_refusal(account)
  if account.status == "blocked" then
    return response.error(503, "Integrated account is blocked")
  end
  if account.status == "needs_reauth" then
    return response.remote_error(401, "The integrated account needs to be re-authenticated (status needs_reauth)",
      { status = "error", message = "Authentication credentials are invalid", category = "INVALID_AUTHENTICATION" },
      { remote_error = { description = "The remote API rejected the integrated account's credentials. "
        .. "Reconnect the account with a link token." } })
  end
  return nil
end

-- Query values as the router hands them over: strings (a JSON body may hold
-- numbers and booleans), nested tables kept.
local function query_strings(query)
  local out = {}
  for k, v in pairs(query or {}) do
    if type(v) == "number" or type(v) == "boolean" then v = json.encode(v) end
    out[k] = v
  end
  return out
end

--- Runs a Unified or Proxy call for an integrated account, as the router would.
---@param account_id string
---@param method string "GET", "POST", ...
---@param segments string[] { "unified", model, resource, [id|method] } or { "proxy", resource, [id] }
---@param query? table
---@param body? table
---@return table response the handler's response value ({status, body, ...})
function _M.call(account_id, method, segments, query, body)
  local account, state = store.account(account_id)
  if not account then return _M.unknown_account(account_id) end
  local refusal = _M.account_refusal(account)
  if refusal then return refusal end
  local rest = {}
  for i = 2, #segments do rest[i - 1] = segments[i] end
  local path = "/" .. table.concat(segments, "/")
  return HANDLERS[segments[1]]({
    method = method, raw_path = path, path = path, segments = rest,
    query = query_strings(query), body_text = body ~= nil and json.encode(body) or "", headers = {},
    account_id = account_id, account = account, account_state = state,
    read_only = account.status == "sandbox",
  })
end

--- A response's status and decoded JSON body (a stream's lines are not one document: nil).
---@param res table
---@return integer status
---@return any body
function _M.decode(res)
  local text = res.chunks and table.concat(res.chunks) or res.body
  return res.status, json.decode(text or "")
end

return _M

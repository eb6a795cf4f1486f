-- Fixtures and per-integrated-account state, kept in the memory of the single
-- nginx worker.  Fixtures are read once; reset() rebuilds state from the
-- pristine copy without touching the disk again.
local json = require "truto_emulator.json"

local _M = {}

local fixtures        -- decoded fixtures.json, never modified
local accounts        -- account id -> { unified = {...}, proxy = {...} }
local next_numeric_id -- ids handed out by create
local live_accounts   -- collection of the integrated accounts (fixtures + writes)
local platform        -- platform path -> collection, built on first use
local issued_tokens   -- integrated-account tokens made by POST /integrated-account/token

-- The environment when fixtures of one's own have no platform.environment.
local DEFAULT_ENVIRONMENT = { id = "00000000-0000-4000-8000-000000000001", name = "Default",
                              team_id = "00000000-0000-4000-8000-000000000002" }

-- A collection keeps insertion order for pagination and a map for lookups,
-- keyed by each record's id (or its key_field: a category has only a name).
local function new_collection(spec, records, key_field)
  local c = { spec = spec, order = {}, by_id = {} }
  for _, record in ipairs(records or {}) do
    local copy = json.copy(record)
    local key = copy[key_field or "id"]
    c.order[#c.order + 1] = key
    c.by_id[key] = copy
  end
  return c
end

local function build_account()
  local state = { unified = {}, proxy = {} }
  for name, spec in pairs(fixtures.resources) do
    state.unified[name] = new_collection(spec, spec.records)
    if spec.proxy_resource then
      -- The provider-shaped store starts as the seed records' remote_data.
      local raw = {}
      for i, record in ipairs(spec.records or {}) do raw[i] = record.remote_data or { id = record.id } end
      state.proxy[spec.proxy_resource] = new_collection({ resource = spec.proxy_resource }, raw)
    end
  end
  return state
end

_M.new_collection = new_collection

-- The fixtures' integrated accounts as records (id added), in id order.
local function build_live_accounts()
  local ids = {}
  for id in pairs(fixtures.integrated_accounts) do ids[#ids + 1] = id end
  table.sort(ids)
  local records = {}
  for i, id in ipairs(ids) do
    local record = json.copy(fixtures.integrated_accounts[id])
    record.id = id
    records[i] = record
  end
  return new_collection({}, records)
end

function _M.reset()
  accounts = {}
  next_numeric_id = 90000001
  live_accounts = build_live_accounts()
  platform = {}
  issued_tokens = {}
end

-- Reads and validates the fixtures file; raises on a bad file so that nginx
-- refuses to start and the error reaches emulator.start().
function _M.load(path)
  local file, err = io.open(path, "rb")
  if not file then error("cannot read fixtures: " .. tostring(err)) end
  local text = file:read("*a")
  file:close()
  local decoded, decode_err = json.decode(text)
  if type(decoded) ~= "table" then error("fixtures " .. path .. ": " .. tostring(decode_err)) end
  for _, field in ipairs({ "tokens", "integrated_accounts", "resources" }) do
    if type(decoded[field]) ~= "table" then error("fixtures " .. path .. ": missing object " .. field) end
  end
  fixtures = decoded
  _M.reset()
end

function _M.token(token)
  return token and (fixtures.tokens[token] or issued_tokens[token])
end

-- An integrated-account token for account_id, valid until reset.
function _M.issue_token(token, account_id)
  issued_tokens[token] = { integrated_account_id = account_id }
end

-- The environment of every API token: the first of fixtures.platform.environment.
function _M.environment()
  local environments = type(fixtures.platform) == "table" and fixtures.platform.environment
  return type(environments) == "table" and environments[1] or DEFAULT_ENVIRONMENT
end

-- The collection of integrated accounts: a write to one (PATCH status) is what
-- the Unified and Proxy routes see.
function _M.accounts()
  return live_accounts
end

-- The collection behind a platform path, seeded from fixtures.platform[path].
function _M.platform(path, key_field)
  local collection = platform[path]
  if not collection then
    local seeds = type(fixtures.platform) == "table" and fixtures.platform[path] or {}
    collection = new_collection({}, seeds, key_field)
    platform[path] = collection
  end
  return collection
end

-- Returns the account's record and its live state (built on first use).
function _M.account(id)
  local entry = id and live_accounts.by_id[id]
  if not entry then
    if id then accounts[id] = nil end -- a deleted account's records go with it
    return nil
  end
  local state = accounts[id]
  if not state then
    state = build_account()
    accounts[id] = state
  end
  return entry, state
end

-- A random version-4 UUID, as Truto's ids, secrets and tokens look.
function _M.new_uuid()
  local file = assert(io.open("/dev/urandom", "rb"))
  local bytes = { file:read(16):byte(1, 16) }
  file:close()
  bytes[7] = bytes[7] % 16 + 0x40
  bytes[9] = bytes[9] % 64 + 0x80
  local hex = string.format(string.rep("%02x", 16), unpack(bytes))
  return table.concat({ hex:sub(1, 8), hex:sub(9, 12), hex:sub(13, 16), hex:sub(17, 20), hex:sub(21) }, "-")
end

function _M.new_id()
  local id = tostring(next_numeric_id)
  next_numeric_id = next_numeric_id + 1
  return id
end

-- Collection operations ------------------------------------------------------

function _M.get(collection, id)
  return collection.by_id[id]
end

function _M.insert(collection, record)
  collection.order[#collection.order + 1] = record.id
  collection.by_id[record.id] = record
end

function _M.remove(collection, id)
  if not collection.by_id[id] then return false end
  collection.by_id[id] = nil
  for i, existing in ipairs(collection.order) do
    if existing == id then table.remove(collection.order, i) break end
  end
  return true
end

-- Returns the records at [offset + 1, offset + limit] and the total count.
function _M.slice(collection, offset, limit)
  local page = {}
  local last = math.min(#collection.order, offset + limit)
  for i = offset + 1, last do
    page[#page + 1] = collection.by_id[collection.order[i]]
  end
  return page, #collection.order
end

function _M.size(collection)
  return #collection.order
end

-- Deep-merges source into target: objects merge key by key, anything else
-- (arrays included) replaces; JSON null removes the key.
function _M.deep_merge(target, source)
  for k, v in pairs(source) do
    if v == json.null then
      target[k] = nil
    elseif type(v) == "table" and not json.is_list(v)
        and type(target[k]) == "table" and not json.is_list(target[k]) then
      _M.deep_merge(target[k], v)
    else
      target[k] = json.copy(v)
    end
  end
  return target
end

local function get_path(t, path)
  for part in path:gmatch("[^.]+") do
    if type(t) ~= "table" then return nil end
    t = t[part]
  end
  return t
end

local function set_path(t, path, value)
  local parts = {}
  for part in path:gmatch("[^.]+") do parts[#parts + 1] = part end
  for i = 1, #parts - 1 do
    if type(t[parts[i]]) ~= "table" then t[parts[i]] = {} end
    t = t[parts[i]]
  end
  t[parts[#parts]] = value
end

-- Mirrors unified fields into the provider-shaped remote_data (HubSpot keeps
-- every property as a string), so truto_response_format=raw sees writes.
function _M.sync_remote_data(spec, record)
  if type(record.remote_data) ~= "table" then record.remote_data = {} end
  record.remote_data.id = record.id
  for unified_path, raw_path in pairs(spec.raw_mapping or {}) do
    local value = get_path(record, unified_path)
    if type(value) == "number" then
      value = json.encode(value)
    elseif type(value) ~= "string" then
      value = nil
    end
    set_path(record.remote_data, raw_path, value)
  end
end

return _M

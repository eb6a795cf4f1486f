-- Fixtures and per-integrated-account state, kept in the memory of the single
-- nginx worker.  Fixtures are read once; reset() rebuilds state from the
-- pristine copy without touching the disk again.
local json = require "truto_emulator.json"

local _M = {}

local fixtures        -- decoded fixtures.json, never modified
local accounts        -- account id -> { unified = {...}, proxy = {...} }
local next_numeric_id -- ids handed out by create

-- A collection keeps insertion order for pagination and a map for lookups.
local function new_collection(spec, records)
  local c = { spec = spec, order = {}, by_id = {} }
  for _, record in ipairs(records or {}) do
    local copy = json.copy(record)
    c.order[#c.order + 1] = copy.id
    c.by_id[copy.id] = copy
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

function _M.reset()
  accounts = {}
  next_numeric_id = 90000001
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
  return token and fixtures.tokens[token]
end

-- Returns the account's fixture entry and its live state (built on first use).
function _M.account(id)
  local entry = id and fixtures.integrated_accounts[id]
  if not entry then return nil end
  local state = accounts[id]
  if not state then
    state = build_account()
    accounts[id] = state
  end
  return entry, state
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

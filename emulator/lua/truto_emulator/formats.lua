-- Response shaping driven by Truto's query parameters:
-- truto_response_format (unified | raw | normalized | stream),
-- truto_ignore_remote_data, truto_exclude_fields, truto_key_by, remote_query.
local json = require "truto_emulator.json"

local _M = {}

local FORMATS = { unified = true, raw = true, normalized = true, stream = true }

local function truthy(v)
  return v == "true" or v == "1" or v == true
end

-- truto_exclude_fields arrives as an array (k[]=, k[0]=), an object
-- (k[a]=) or a comma-separated string.
local function exclude_set(value)
  local set = {}
  if type(value) == "string" then
    for field in value:gmatch("[^,]+") do set[field:match("^%s*(.-)%s*$")] = true end
  elseif type(value) == "table" then
    for _, field in pairs(value) do
      if type(field) == "string" then
        for part in field:gmatch("[^,]+") do set[part:match("^%s*(.-)%s*$")] = true end
      end
    end
  end
  return next(set) and set or nil
end

-- Reads the shaping options out of a parsed query; returns nil, message on a
-- value Truto would reject.
function _M.options(query)
  local format = query.truto_response_format
  if format == nil or format == "" then format = "unified" end
  if type(format) ~= "string" or not FORMATS[format] then
    return nil, "truto_response_format must be one of unified, raw, normalized, stream"
  end
  local remote_query = query.remote_query
  if type(remote_query) ~= "table" then remote_query = nil end
  local key_by = query.truto_key_by
  if type(key_by) ~= "string" or key_by == "" then key_by = nil end
  return {
    format = format,
    ignore_remote_data = truthy(query.truto_ignore_remote_data),
    exclude = exclude_set(query.truto_exclude_fields),
    remote_query = remote_query,
    key_by = key_by,
  }
end

-- Shapes one stored record for the response.  The stored record is never
-- modified: top-level tables that change are copied first.
function _M.record(record, options)
  local out
  if options.format == "raw" then
    out = {}
    for k, v in pairs(type(record.remote_data) == "table" and record.remote_data or { id = record.id }) do
      out[k] = v
    end
  else
    out = {}
    for k, v in pairs(record) do out[k] = v end
    if options.remote_query and type(out.remote_data) == "table" then
      local remote_data = {}
      for k, v in pairs(out.remote_data) do remote_data[k] = v end
      remote_data.remote_query = options.remote_query
      out.remote_data = remote_data
    end
    if options.ignore_remote_data or options.format == "normalized" then
      out.remote_data = nil
    end
    if options.format == "normalized" then
      for k, v in pairs(out) do
        if v == json.null then out[k] = nil end
      end
    end
  end
  if options.exclude then
    for field in pairs(options.exclude) do out[field] = nil end
  end
  return out
end

-- Shapes a page of records: an array, or an object keyed by truto_key_by.
function _M.records(records, options)
  if options.key_by then
    local keyed = {}
    for _, record in ipairs(records) do
      local shaped = _M.record(record, options)
      local key = record[options.key_by]
      if type(key) == "table" then key = key.id end
      if key ~= nil and key ~= json.null then keyed[tostring(key)] = shaped end
    end
    return keyed
  end
  local out = json.array()
  for i, record in ipairs(records) do out[i] = _M.record(record, options) end
  return out
end

-- NDJSON chunks for truto_response_format=stream: one record per line.
function _M.stream_chunks(records, options)
  local chunks = {}
  for i, record in ipairs(records) do
    chunks[i] = json.encode(_M.record(record, options)) .. "\n"
  end
  return chunks
end

return _M

--- Uploads: `truto.file` and `truto.raw` values, and the `multipart/form-data`
-- framing of a body that holds files (RFC 7578).  The framing is made here
-- once for every transport: each part's header lines, the boundary, the
-- exact length.  The nginx engine (http1.lua) writes these bytes itself,
-- reading each file in 64 KiB pieces; the libcurl transport hands the same
-- parts to libcurl's MIME API, which writes its own boundary around them.
-- Files are read from disk while the request is sent, never whole.
local core = require "truto.core"

local _M = {}

--- Bytes read from a file at a time.
_M.CHUNK = 65536

local file_mt, raw_mt = core.file_mt, core.raw_mt
local form_mt = {}

-- A value printed or seen in a debugger says what it is.
file_mt.__tostring = function(f) return ("truto.file(%q)"):format(f.path) end
raw_mt.__tostring = function(r) return ("truto.raw(%d bytes, %s)"):format(#r.bytes, r.content_type) end

local DEFAULT_TYPE = "application/octet-stream"

-- A MIME type as a header value: type/subtype and parameters, printable
-- ASCII only (no CR, LF or other control character to split a header).
local function valid_type(v)
  return type(v) == "string" and v:match("^[%w!#$&^_.+-]+/[%w!#$&^_.+-]+") ~= nil and not v:find("[%c\128-\255]")
end

-- A field name or filename goes in a quoted-string of a header line: CR and
-- LF are escaped there (see quoted), any other control character (NUL among
-- them) would cut the line or be refused by libcurl, and is refused here.
local function has_control(s)
  return (s:gsub("[\r\n]", "")):find("%c") ~= nil
end
local function valid_filename(v)
  return type(v) == "string" and v ~= "" and not has_control(v)
end
local FILENAME_RULE = "a non-empty string without control characters other than CR and LF"
local TYPE_RULE = "a MIME type such as \"application/pdf\", without control characters"

local function argument_error(fname, n, message)
  error(("bad argument #%d to 'truto.%s' (%s)"):format(n, fname, message), 3)
end

local FILE_OPTIONS = { filename = true, content_type = true }

--- A file to upload, read from `path` while the request is sent: a
-- field of a body holding one is sent as `multipart/form-data`.
-- Raises on a path or an option of the wrong type, and on a filename with
-- a control character other than CR and LF; a file that is missing,
-- unreadable or not a regular file (a directory, a FIFO, a device, a file
-- of /proc) is the call's error (`kind = "file"`), before anything is sent.
---@param path string the file's path
---@param options? { filename?: string, content_type?: string } `filename`
-- (default: the path's last segment) and `content_type` (default
-- `"application/octet-stream"`) of the part
---@return table file a `truto.file` value
function _M.file(path, options)
  if type(path) ~= "string" or path == "" or path:find("\0", 1, true) then
    argument_error("file", 1, "path must be a non-empty string without NUL, got "
      .. (type(path) == "string" and "a string that is not" or type(path)))
  end
  if options ~= nil and type(options) ~= "table" then
    argument_error("file", 2, "options must be a table, got " .. type(options))
  end
  options = options or {}
  for name in next, options do
    if not FILE_OPTIONS[name] then argument_error("file", 2, "unknown option '" .. tostring(name) .. "'") end
  end
  local filename = options.filename
  if filename == nil then
    filename = path:match("([^/]+)/*$") or path
    if not valid_filename(filename) then
      argument_error("file", 1, "the path's last segment, the default filename, holds a control character: "
        .. "give options.filename")
    end
  elseif not valid_filename(filename) then
    argument_error("file", 2, "filename must be " .. FILENAME_RULE)
  end
  local content_type = options.content_type or DEFAULT_TYPE
  if not valid_type(content_type) then argument_error("file", 2, "content_type must be " .. TYPE_RULE) end
  return setmetatable({ path = path, filename = filename, content_type = content_type }, file_mt)
end

--- A whole body sent as these bytes, unchanged, with this Content-Type.
---@param bytes string the body
---@param content_type? string its MIME type (default `"application/octet-stream"`)
---@return table raw a `truto.raw` value
function _M.raw(bytes, content_type)
  if type(bytes) ~= "string" then argument_error("raw", 1, "bytes must be a string, got " .. type(bytes)) end
  if content_type ~= nil and not valid_type(content_type) then
    argument_error("raw", 2, "content_type must be " .. TYPE_RULE)
  end
  return setmetatable({ bytes = bytes, content_type = content_type or DEFAULT_TYPE }, raw_mt)
end

local function is_file(v) return type(v) == "table" and getmetatable(v) == file_mt end

--- The bytes and type of a `truto.raw` body, or nil for any other body.
---@param body any
---@return string? bytes
---@return string? content_type
function _M.raw_body(body)
  if type(body) == "table" and getmetatable(body) == raw_mt then return body.bytes, body.content_type end
  return nil
end

-- A name or filename in a quoted-string, as RFC 7578 and HTML's form
-- encoding write it: '"', CR and LF percent-encoded, the rest as given.
local ESCAPES = { ['"'] = "%22", ["\r"] = "%0D", ["\n"] = "%0A" }
local function quoted(s)
  return '"' .. s:gsub('[\r\n"]', ESCAPES) .. '"'
end

-- A field's path in a message, its control characters as Lua escapes.
local function shown(field)
  return (field:gsub("%c", function(c) return "\\" .. c:byte() end))
end

-- A truto.file is a plain table: what it holds is checked again when the
-- form is built, as truto.file checked it.  Raises (level 0) naming the field.
local function check_file(field, f)
  local problem = (type(f.path) ~= "string" or f.path == "" or f.path:find("\0", 1, true))
      and "path must be a non-empty string without NUL"
    or not valid_filename(f.filename) and "filename must be " .. FILENAME_RULE
    or not valid_type(f.content_type) and "content_type must be " .. TYPE_RULE
  if problem then error(("truto: %s: the file's %s"):format(shown(field), problem), 0) end
end

-- What the value at body[name] holds: "file", "files" (a list of files:
-- repeated parts of that name) or nil for a text field.  Raises on a list
-- that mixes files with other values.
local function field_kind(name, value)
  if is_file(value) then return "file" end
  if type(value) ~= "table" or getmetatable(value) ~= nil or not is_file(value[1]) then return nil end
  local n = 0
  for k, item in next, value do
    if type(k) ~= "number" or k % 1 ~= 0 or k < 1 or not is_file(item) then
      error(("truto: body.%s: a list of truto.file values must hold nothing else"):format(shown(name)), 0)
    end
    n = n + 1
  end
  if n ~= #value then
    error(("truto: body.%s: a list of truto.file values must hold nothing else"):format(shown(name)), 0)
  end
  return "files"
end

--- Whether a body is an upload: a `truto.raw`, or a table with a
-- `truto.file` (or a list starting with one) at its top level.  Every
-- call's body is looked at here: one look at each field, nothing made.
---@param body any
---@return boolean
function _M.is_upload(body)
  if type(body) ~= "table" then return false end
  if getmetatable(body) == raw_mt then return true end
  for _, value in next, body do
    if type(value) == "table" and (getmetatable(value) == file_mt or is_file(rawget(value, 1))) then return true end
  end
  return false
end

--- The form of a body that holds `truto.file` values at its top level
-- (or lists of them), or nil when it holds none.  Fields are sent in the
-- order of their sorted names, as the JSON writer sorts keys; strings as
-- they are, other values as their JSON text (`truto.null` as `null`).
-- Raises (level 0, a message naming the field) on a file anywhere deeper,
-- on a name that is not a string or holds a control character other than
-- CR and LF, on a file whose path, filename or type is not valid (as
-- `truto.file` checks them), and on what JSON cannot hold.
---@param body any the call's body
---@return table? form { boundary, parts, length }
function _M.form(body)
  if type(body) ~= "table" or getmetatable(body) == raw_mt then return nil end
  local kinds, has_file, others, unnamed = {}, false, {}, false
  for name, value in next, body do
    local kind = field_kind(tostring(name), value)
    unnamed = unnamed or type(name) ~= "string"
    if kind then
      has_file = true
      kinds[name] = kind
    else
      others[name] = value
    end
  end
  if not has_file then return nil end
  if unnamed then
    error("truto: body: a body with truto.file values must be an object (its field names name the parts)", 0)
  end
  local names = {}
  for name in next, body do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local value = body[name]
    if has_control(name) then
      error(("truto: body.%s: a field name of a multipart body must not hold control characters other than CR "
        .. "and LF"):format(shown(name)), 0)
    end
    if kinds[name] == "file" then
      check_file("body." .. name, value)
    elseif kinds[name] == "files" then
      for i, f in ipairs(value) do check_file(("body.%s[%d]"):format(name, i), f) end
    end
  end
  -- The text fields, checked as the JSON body writer checks them: a file
  -- nested deeper, a function or a cycle raises, naming its path.
  local ok, err = pcall(core.encode_json, others)
  if not ok then error((tostring(err):gsub("^[^\n]-:%d+: ", "")), 0) end

  local boundary = "lua-truto-" .. core.random_hex(16)
  local form = setmetatable({ boundary = boundary, parts = {} }, form_mt)
  local length = 0
  local function add(part)
    local lines = { "Content-Disposition: form-data; name=" .. quoted(part.name)
                    .. (part.filename and "; filename=" .. quoted(part.filename) or "") }
    if part.content_type then lines[2] = "Content-Type: " .. part.content_type end
    part.lines = lines
    part.head = "--" .. boundary .. "\r\n" .. table.concat(lines, "\r\n") .. "\r\n\r\n"
    form.parts[#form.parts + 1] = part
  end
  for _, name in ipairs(names) do
    local value, kind = body[name], kinds[name]
    local files = kind == "file" and { value } or kind == "files" and value or nil
    if files then
      for _, f in ipairs(files) do
        add { name = name, filename = f.filename, content_type = f.content_type, path = f.path }
      end
    else
      add { name = name, data = type(value) == "string" and value or core.encode_json(value) }
    end
  end
  form.tail = "--" .. boundary .. "--\r\n"
  for _, part in ipairs(form.parts) do length = length + #part.head + (part.data and #part.data or 0) + 2 end
  form.text_length = length + #form.tail   -- the file parts' sizes are added by open()
  return form
end

--- True when body is a form made by `form`.
---@param body any
---@return boolean
function _M.is_form(body)
  return type(body) == "table" and getmetatable(body) == form_mt
end

local function file_error(message)
  return nil, { kind = "file", message = message, final = true }
end

-- The size of a part's file, found with stat(2) and checked to be that of
-- a regular file that can be opened; or nil, err.  Nothing else is ever
-- opened: a FIFO would block until a writer comes, and a device or a file
-- of /proc has no size to send as the Content-Length.
local function file_size(part)
  local info, err = core.file_info(part.path)
  if not info then return file_error("cannot open the file to upload: " .. err) end
  if not info.regular then
    return file_error(("the file to upload is not a regular file: %s is a %s"):format(part.path, info.type))
  end
  return info.size
end

--- Checks that every file of the form can be read, and fixes their sizes
-- (and so `form.length`, the Content-Length) on the first call; a later
-- call (the next attempt, a redirect) fails when a size has changed since.
-- Returns true, or nil, err (`kind = "file"`, final).
---@param form table
---@return true|nil ok
---@return table? err
function _M.check(form)
  local length = form.text_length
  for _, part in ipairs(form.parts) do
    if part.path then
      local size, err = file_size(part)
      if not size then return nil, err end
      if part.size and part.size ~= size then
        return file_error(("the file to upload changed size since the request was built: %s (%d bytes, then %d)")
          :format(part.path, part.size, size))
      end
      part.size = size
      length = length + size
    end
  end
  form.length = length
  return true
end

--- What `on_request` shows of a form: its parts, never a file's bytes.
---@param form table
---@return string
function _M.describe(form)
  local out = {}
  for i, part in ipairs(form.parts) do
    if part.path then
      out[i] = ("%s: file %s (%s, %s bytes, filename %s)"):format(quoted(part.name), part.path, part.content_type,
        part.size and tostring(part.size) or "?", quoted(part.filename))
    else
      out[i] = ("%s: %d bytes of text"):format(quoted(part.name), #part.data)
    end
  end
  return ("<multipart/form-data, boundary %s, %d parts: %s>"):format(form.boundary, #form.parts,
    table.concat(out, "; "))
end

--- Writes the form's bytes through send(piece) -> ok, err, each file read
-- in `CHUNK` pieces while it is sent.  `check` must have fixed the sizes.
-- Returns true, or nil, err, and whether err is the file's (a table
-- `{ kind = "file" }`: the file shrank, grew or failed while being read) rather than send's.
---@param form table
---@param send fun(piece: string): any, any
---@return true|nil ok
---@return any err
---@return boolean? file_failed
function _M.write(form, send)
  for _, part in ipairs(form.parts) do
    local ok, err = send(part.head)
    if not ok then return nil, err end
    if part.data then
      if part.data ~= "" then
        ok, err = send(part.data)
        if not ok then return nil, err end
      end
    else
      local size, serr = file_size(part)
      if not size then return nil, serr, true end
      if size ~= part.size then
        return nil, select(2, file_error(("the file to upload changed size while it was sent: %s (%d bytes, "
          .. "then %d)"):format(part.path, part.size, size))), true
      end
      local f, oerr = io.open(part.path, "rb")
      if not f then return nil, select(2, file_error("cannot open the file to upload: " .. tostring(oerr))), true end
      local left = size
      while left > 0 do
        local piece, rerr = f:read(math.min(_M.CHUNK, left))
        if not piece then
          f:close()
          return nil, select(2, file_error(("the file to upload could not be read to its end: %s (%s)")
            :format(part.path, tostring(rerr or "shorter than its size")))), true
        end
        left = left - #piece
        ok, err = send(piece)
        if not ok then
          f:close()
          return nil, err
        end
      end
      f:close()
    end
    ok, err = send("\r\n")
    if not ok then return nil, err end
  end
  return send(form.tail)
end

return _M

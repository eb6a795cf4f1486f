--- The journal of a resumable `client:batch` (`options.journal`): a file of
-- JSON lines.  The first line names the list of requests it belongs to:
--   {"batch_journal":1,"fingerprint":"<16 hex digits>","requests":N}
-- then, for each request, a line when it is first sent, holding the
-- Idempotency-Key it goes with (none for a request without one):
--   {"index":I,"key":"..."}
-- and a line when it settles, its outcome (see outcome):
--   {"index":I,"status":200,"attempts":1,"result":...}
--   {"index":I,"error":{"kind":"http","status":404,"message":"...",...}}
-- Each line is one write(2) on an unbuffered file, done before the request
-- is sent or its result counted: a process killed at any point has every
-- record it acted on in the file, and at worst a torn last line, which is
-- dropped when the journal is opened again.  Nothing is fsync'ed (README:
-- client:batch).
local core = require "truto.core"
local errors = require "truto.errors"

local _M = {}

local Journal = {}
Journal.__index = Journal

local FORMAT = 1

-- A failure of the file itself: what client:batch returns second.
local function io_failure(message)
  return errors.new { kind = "journal", message = message }
end

--- The fingerprint of a batch's list of requests: what each sends (method,
-- URL with its query, body), in order.  A multipart body is refused: its
-- files are read while it is sent, so the journal could not tell whether
-- they changed.
---@param calls table[] prepared calls, `call.req = { method, url, body }`
---@return string fingerprint
function _M.fingerprint(calls)
  local parts = {}
  for i, call in ipairs(calls) do
    local req, body = call.req, call.req.body
    if body ~= nil and type(body) ~= "string" then
      if type(body) ~= "userdata" then
        error(("batch request #%d uploads a file: a journal cannot tell whether it changed before a rerun")
          :format(i), 0)
      end
      body = tostring(body)   -- a large body held in C
    end
    parts[i] = ("%s %s %d:%s"):format(req.method, req.url, body and #body or 0, body or "")
  end
  return core.checksum(table.concat(parts, "\n"))
end

--- What a settled request's line says: its index and outcome, the token
-- never in it (errors are scrubbed when made).  Also each line of
-- `truto batch`'s output.
---@param index integer
---@param result any the result, or nil on failure
---@param response_or_err truto.Response|truto.Error
---@return table record
function _M.outcome(index, result, response_or_err)
  if result == nil then
    local e = response_or_err
    return { index = index, error = { kind = e.kind, status = e.status, message = e.message, method = e.method,
                                      path = e.path, attempts = e.attempts, request_id = e.request_id } }
  end
  local record = { index = index, status = response_or_err.status, attempts = response_or_err.attempts,
                   request_id = response_or_err.request_id, result = result }
  -- A text answer that is not UTF-8 (JSON cannot hold it) is kept as hex.
  if type(result) == "string" and not pcall(core.encode_json, result) then
    record.result, record.result_hex = nil, (result:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
  end
  return record
end

--- The result of a record written by outcome: the result (or nil) and the
-- fields of the response (or error) it had.
---@param record table
---@return any result
---@return table fields
---@return boolean failed
function _M.result_of(record)
  if record.error then return nil, record.error, true end
  local result = record.result
  if record.result_hex then
    result = record.result_hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  end
  return result, { status = record.status, attempts = record.attempts, request_id = record.request_id }, false
end

-- The index of a record, or nil when the line is none of total's.
local function record_index(record, total)
  local index = type(record) == "table" and record.index
  if type(index) == "number" and index >= 1 and index <= total and index % 1 == 0 then return index end
  return nil
end

-- Writes path's whole text anew: into a file beside it, renamed over it;
-- true, or nil and the error.
local function rewrite(path, text)
  local temporary = path .. ".torn"
  local file, err = io.open(temporary, "wb")
  if not file then return nil, err end
  local ok, werr = file:write(text)
  file:close()
  if ok then ok, werr = os.rename(temporary, path) end
  if not ok then
    os.remove(temporary)
    return nil, werr
  end
  return true
end

--- Opens the journal at path for a batch of total requests with this
-- fingerprint: a new or empty file gets its first line; an existing one
-- must be this batch's (else an error is raised, as for a bad argument).
-- Returns the journal, with `keys[i]` (the key request i was first sent
-- with; false when it had none) and `outcomes[i]` (its settled record), or
-- nil and an error of kind "journal" when the file cannot be read or written.
---@param path string
---@param fingerprint string
---@param total integer
---@return table|nil journal
---@return truto.Error? err
function _M.open(path, fingerprint, total)
  local journal = setmetatable({ path = path, keys = {}, outcomes = {} }, Journal)
  -- Read whole below: a FIFO or a device could block or never end.
  local info = core.file_info(path)
  if info and not info.regular then
    error(("batch journal %s is a %s, not a regular file"):format(path, info.type), 0)
  end
  local text = ""
  local existing = io.open(path, "rb")
  if existing then
    local read, rerr = existing:read("*a")
    existing:close()
    if not read then return nil, io_failure(("cannot read the batch journal %s: %s"):format(path, rerr)) end
    text = read
  end
  -- A last line without its newline was cut by a kill mid-write: what it
  -- said was never acted on.  The file is rewritten without it, so that the
  -- next line starts on a line of its own.
  local complete = text:match("^(.*\n)") or ""
  if complete ~= text then
    local ok, err = rewrite(path, complete)
    if not ok then return nil, io_failure(("cannot rewrite the batch journal %s: %s"):format(path, err)) end
  end
  local n = 0
  for line in complete:gmatch("([^\n]*)\n") do
    n = n + 1
    local record = core.decode_json(line)
    if n == 1 then
      if type(record) ~= "table" or record.batch_journal ~= FORMAT then
        error(("batch journal %s is not a batch journal (its first line is not one's)"):format(path), 0)
      end
      if record.fingerprint ~= fingerprint or record.requests ~= total then
        error(("batch journal %s belongs to another list of requests (%s of them, fingerprint %s; this one: %d, %s):"
          .. " give each list its own journal"):format(path, tostring(record.requests), tostring(record.fingerprint),
          total, fingerprint), 0)
      end
    else
      local index = record_index(record, total)
      if not index then
        error(("batch journal %s: line %d is not a record of this batch"):format(path, n), 0)
      end
      if record.error or record.result ~= nil or record.result_hex then
        journal.outcomes[index] = record
      elseif journal.keys[index] == nil then
        journal.keys[index] = record.key or false
      end
    end
  end
  local file, err = io.open(path, "ab")
  if not file then return nil, io_failure("cannot open the batch journal: " .. err) end
  file:setvbuf("no")   -- each write below is one write(2)
  journal.file = file
  if n == 0 then
    local ok, werr = journal:append { batch_journal = FORMAT, fingerprint = fingerprint, requests = total }
    if not ok then return nil, werr end
  end
  return journal
end

--- Appends one record as one line, in one write.
---@param record table
---@return true|nil ok
---@return truto.Error? err
function Journal:append(record)
  local encoded, line = pcall(core.encode_json, record)
  if not encoded then
    return nil, io_failure(("cannot record request #%d in the batch journal %s: %s"):format(record.index or 0,
      self.path, line))
  end
  local ok, err = self.file:write(line .. "\n")
  if not ok then return nil, io_failure(("cannot write the batch journal %s: %s"):format(self.path, err)) end
  return true
end

--- Records that request index is about to be sent for the first time, with
-- its key (nil: none).
---@param index integer
---@param key? string
---@return true|nil ok
---@return truto.Error? err
function Journal:started(index, key)
  return self:append { index = index, key = key }
end

--- Records request index's outcome.
---@param index integer
---@param result any
---@param response_or_err truto.Response|truto.Error
---@return true|nil ok
---@return truto.Error? err
function Journal:settled(index, result, response_or_err)
  return self:append(_M.outcome(index, result, response_or_err))
end

--- Closes the file.  Idempotent.
function Journal:close()
  if self.file then self.file:close() end
  self.file = nil
end

return _M

-- The upload calls of spec/upload_spec.lua, run the same way by every
-- transport: with libcurl in the spec's own process, and inside the app
-- nginx of spec/ngx (GET /upload?case=NAME&dir=DIR, spec/ngx/truto_app.lua)
-- with cosockets.  Each call's outcome is plain data (it travels back from
-- nginx as JSON); the spec checks it and what the emulator recorded.
local truto = require "truto"
local memory = require "spec.support.memory"

local _M = {}

_M.ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
local Q = { integrated_account_id = _M.ACCOUNT }

-- A raw body with NUL, control bytes and UTF-8: sent unchanged.
_M.RAW = "%PDF-1.4\n\0\1\2\r\n\t caf\195\169 \226\130\172\n%%EOF"

-- The files the spec writes into its temp dir, by name: their bytes.
_M.FILES = {
  ["report.pdf"] = "%PDF-1.4\n" .. string.rep("lua-truto upload\n", 4000),
  ["photo.png"] = "\137PNG\r\n\26\n" .. string.rep("\0\255\1\254", 3000),
  ["empty.bin"] = "",
}
-- The big file's name (made by the spec with head -c, never read whole).
_M.BIG = "big.bin"
-- A FIFO the spec makes with mkfifo: opening it would wait for a writer.
_M.FIFO = "fifo"
-- How many small files the spec writes into MANY_DIR (many/1.txt holds
-- "1", ...): more than the transport may hold open at once (NOFILE).
_M.MANY, _M.MANY_DIR, _M.NOFILE = 300, "many", 128

-- The form of the "form" and "retry" cases: files at the top level and in a
-- list, text fields of every type.
function _M.form_body(dir)
  return {
    attachment = truto.file(dir .. "/report.pdf", { content_type = "application/pdf" }),
    photos = {
      truto.file(dir .. "/photo.png", { filename = 'caf\195\169 "1"\r\n.png', content_type = "image/png" }),
      truto.file(dir .. "/empty.bin"),
    },
    note = "Q3 report",
    count = 3,
    draft = false,
    meta = { tags = { "a", "b" }, owner = { id = 7 } },
    cleared = truto.null,
  }
end

_M.CASES = {
  -- Through Proxy as README.md shows it: the body passed to the provider as is.
  form = function(client, dir)
    return client.proxy_api:custom_method("deals", "attachments", _M.form_body(dir),
      { integrated_account_id = _M.ACCOUNT, truto_body_passthrough = true })
  end,
  raw = function(client)
    return client.custom_api:post("raw", truto.raw(_M.RAW, "application/pdf"), Q)
  end,
  missing = function(client, dir)
    return client.custom_api:post("missing", { note = "x", file = truto.file(dir .. "/missing.pdf") }, Q)
  end,
  directory = function(client, dir)
    return client.custom_api:post("directory", { file = truto.file(dir) }, Q)
  end,
  -- The spec queues a 502 for the first attempt.
  retry = function(client, dir)
    return client.custom_api:post("retry", _M.form_body(dir), Q)
  end,
  -- client:batch: a form (a libcurl multi handle, or ngx.thread) and a missing file.
  batch = function(client, dir)
    local results = client:batch {
      { api = "custom", method = "post", path = "batch", body = _M.form_body(dir), query = Q },
      { api = "custom", method = "post", path = "batch", body = { file = truto.file(dir .. "/missing.pdf") }, query = Q },
    }
    return { status = results[1][2].status, kind = results[2][2].kind }, { status = 200, attempts = 1 }
  end,
  -- Not regular files: each refused before anything is sent, none opened.
  special = function(client, dir)
    local outcomes = {}
    for i, path in ipairs { dir .. "/" .. _M.FIFO, "/dev/zero", "/proc/self/status" } do
      local result, err = client.custom_api:post("special", { f = truto.file(path) }, Q, { timeout = 1 })
      outcomes[i] = result and "sent" or { kind = err.kind, message = err.message, retryable = err.retryable,
                                           attempts = err.attempts }
    end
    return outcomes, { status = 200, attempts = 1 }
  end,
  -- The form described in dir/random.json (spec/upload_spec.lua writes it):
  -- { { name =, text = } or { name =, files = { { path =, filename = } ... } } ... }.
  random = function(client, dir)
    local f = assert(io.open(dir .. "/random.json"))
    local fields = assert(truto.decode_json(f:read("*a")))
    f:close()
    local body = {}
    for _, field in ipairs(fields) do
      if field.text then
        body[field.name] = field.text
      else
        local files = {}
        for k, file in ipairs(field.files) do
          files[k] = truto.file(file.path, { filename = file.filename, content_type = "application/x-test" })
        end
        body[field.name] = #files == 1 and files[1] or files
      end
    end
    return client.custom_api:post("random", body, Q)
  end,
  -- MANY files in one body, the transport allowed NOFILE open files.
  many = function(client, dir)
    local files = {}
    for i = 1, _M.MANY do files[i] = truto.file(("%s/%s/%d.txt"):format(dir, _M.MANY_DIR, i)) end
    return client.custom_api:post("many", { files = files }, Q)
  end,
  -- Field names, filenames and types with a control character other than
  -- CR and LF: argument errors raised at the caller's line (this file),
  -- in a batch too; nothing sent.
  control_characters = function(client, dir)
    local path = dir .. "/report.pdf"
    local renamed, retyped = truto.file(path), truto.file(path)
    renamed.filename, retyped.content_type = "a\0b.pdf", "text/plain\0"
    local function raised(f)
      local ok, err = pcall(f)
      if ok then return "no error" end
      local where, message = tostring(err):match("^(.-):%d+: (.*)$")
      return { where = where and where:match("[^/]+/[^/]+/[^/]+$"), message = message or tostring(err) }
    end
    -- No tail calls: the error's position is the line of the call.
    local function post(body)
      return raised(function() client.custom_api:post("names", body, Q) end)
    end
    return {
      post { ["a\0b"] = "x", f = truto.file(path) },
      post { ["a\1b"] = truto.file(path) },
      post { f = renamed },
      post { list = { truto.file(path), retyped } },
      raised(function()
        client:batch {
          { api = "custom", method = "post", path = "names", body = { f = truto.file(path) }, query = Q },
          { api = "custom", method = "post", path = "names", body = { ["x\0"] = truto.file(path) }, query = Q },
        }
      end),
    }, { status = 200, attempts = 1 }
  end,
  big = function(client, dir)
    return client.custom_api:post("big", { file = truto.file(dir .. "/" .. _M.BIG), note = "200 MB" }, Q)
  end,
}

--- Runs one case with client; returns { result = ..., status, attempts } or
-- { kind, message, attempts, text }, and memory_kb: how far this process's
-- peak RSS (VmHWM, reset first) rose above its RSS before the call.
---@param name string a key of CASES
---@param client truto.Client
---@param dir string the directory of the files
---@return table outcome
function _M.run(name, client, dir)
  local growth = memory.watch()
  local result, second = _M.CASES[name](client, dir)
  local outcome = { memory_kb = growth(), attempts = second.attempts }
  if result ~= nil then
    outcome.result, outcome.status = result, second.status
  else
    outcome.kind, outcome.message, outcome.status, outcome.text = second.kind, second.message, second.status,
      tostring(second)
  end
  return outcome
end

return _M

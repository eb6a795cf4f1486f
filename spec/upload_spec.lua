-- Uploads (truto.file, truto.raw) against the emulator over loopback, with
-- both transports: libcurl in this process, and cosockets inside the app
-- nginx of spec/ngx (spec/support/uploads.lua runs the same calls in both).
-- What the emulator recorded of each part (name, filename, content type,
-- size, SHA-256) is checked exactly, and so is the Content-Length.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local truto = require "truto"
local multipart = require "truto.multipart"
local emu = require "spec.support.emulator"
local ngx_app = require "spec.support.ngx_app"
local sh = require "spec.support.shell"
local uploads = require "spec.support.uploads"

local BIG_BYTES = 200 * 1024 * 1024
local MAX_GROWTH_KB = 32 * 1024

local app, control, dir
local sums = {}   -- file name -> SHA-256 hex, from sha256sum
local many_sums = {}   -- i -> SHA-256 hex of many/i.txt

local sha256sum, text_sha256 = sh.sha256sum, sh.text_sha256

setup(function()
  local ok, err = pcall(function()
    emu.start()
    dir = assert(sh.mktemp("truto-upload"))
    for name, bytes in pairs(uploads.FILES) do
      assert(sh.write_file(dir .. "/" .. name, bytes))
      sums[name] = sha256sum(dir .. "/" .. name)
    end
    assert(sh.run("mkfifo " .. sh.quote(dir .. "/" .. uploads.FIFO)))
    local many = dir .. "/" .. uploads.MANY_DIR
    assert(sh.run("mkdir " .. sh.quote(many)))
    for i = 1, uploads.MANY do assert(sh.write_file(("%s/%d.txt"):format(many, i), tostring(i))) end
    for sum, i in sh.capture("cd " .. sh.quote(many) .. " && sha256sum *.txt"):gmatch("(%x+)  (%d+)%.txt\n") do
      many_sums[tonumber(i)] = sum
    end
    -- The app's worker may hold uploads.NOFILE files open, as the libcurl
    -- transport's child process of run_limited.
    app = ngx_app.start_app { BASE_URL = emu.base_url,
                              WORKER_LIMITS = ("worker_rlimit_nofile %d;"):format(uploads.NOFILE) }
    control = curl_core.session { timeout = 300 }
  end)
  if not ok then
    if app then app:stop() end
    emu.stop()
    if dir then sh.run("rm -rf " .. sh.quote(dir)) end
    error(err, 0)
  end
end)

teardown(function()
  if control then control:close() end
  if app then app:stop() end
  emu.stop()
  if dir then sh.run("rm -rf " .. sh.quote(dir)) end
end)

before_each(function() emu.reset() end)

-- The outcome of a case of spec/support/uploads.lua over each transport;
-- limited: in a process that may hold only uploads.NOFILE files open (a
-- child lua5.4 under `ulimit -n` for libcurl; the app's worker always is).
local TRANSPORTS = {
  { "curl", function(name, limited)
    if not limited then
      return uploads.run(name, emu.client { transport = "curl", retry = { base = 0.01 }, timeout = 120 }, dir)
    end
    local code = ([[
local truto = require "truto"
local client = truto.new { token = %q, base_url = %q, transport = "curl", timeout = 120 }
io.write(truto.encode_json(require("spec.support.uploads").run(%q, client, %q)))]])
      :format(emu.TOKEN, emu.base_url, name, dir)
    -- build/5.4's core, as bin/truto: under make asan this process's core
    -- needs the sanitizer runtimes, which the children do not get.
    local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = "build/5.4/?.so;;" },
      ("ulimit -n %d && exec lua5.4 -e %s"):format(uploads.NOFILE, sh.quote(code)))
    assert(ok, "the child failed: " .. err)
    return truto.decode_json(out)
  end },
  { "ngx", function(name)
    local url = ("%s/upload?case=%s&dir=%s"):format(app.base_url, name,
      dir:gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end))
    local status, _, body = control:perform { url = url, timeout = 300 }
    assert(status == 200, "the app failed: " .. tostring(status) .. " " .. tostring(body) .. "\n"
      .. ngx_app.error_log(app))
    return truto.decode_json(body)
  end },
}

-- The parts the emulator records for uploads.form_body, in the order sent
-- (sorted names).
local function form_parts()
  local function text(name, value)
    return { name = name, value = value, size = #value, sha256 = text_sha256(value) }
  end
  local function file(name, file_name, filename, content_type)
    return { name = name, filename = filename, content_type = content_type, size = #uploads.FILES[file_name],
             sha256 = sums[file_name] }
  end
  return {
    file("attachment", "report.pdf", "report.pdf", "application/pdf"),
    text("cleared", "null"),
    text("count", "3"),
    text("draft", "false"),
    text("meta", '{"owner":{"id":7},"tags":["a","b"]}'),
    text("note", "Q3 report"),
    file("photos", "photo.png", 'caf\195\169 "1"\r\n.png', "image/png"),
    file("photos", "empty.bin", "empty.bin", "application/octet-stream"),
  }
end

-- The exact Content-Length of these parts framed with this boundary: each
-- part "--B\r\n", its header lines (name and filename escaped as RFC 7578
-- says), a blank line, its bytes and "\r\n"; then "--B--\r\n".
local function framed_length(parts, boundary)
  local function escaped(s) return #s + 2 * select(2, s:gsub('[\r\n"]', "")) end
  local length = #("--" .. boundary .. "--\r\n")
  for _, part in ipairs(parts) do
    local disposition = #'Content-Disposition: form-data; name=""' + escaped(part.name)
      + (part.filename and #'; filename=""' + escaped(part.filename) or 0)
    local content_type = part.content_type and #"\r\nContent-Type: " + #part.content_type or 0
    length = length + #("--" .. boundary .. "\r\n") + disposition + content_type + 4 + part.size + 2
  end
  return length
end

local function check_form_request(entry, parts)
  local boundary = entry.headers["content-type"]:match("^multipart/form%-data; boundary=(.+)$")
  assert.is_truthy(boundary, entry.headers["content-type"])
  assert.same(parts, entry.parts)
  assert.equal(tostring(framed_length(parts, boundary)), entry.headers["content-length"])
  assert.is_nil(entry.parts_error)
end

-- A seeded random form in dir/random.json, its files beside it (the case
-- "random" of spec/support/uploads.lua sends it), and the parts the
-- emulator must read: contents that look like a delimiter without being one
-- (libcurl's boundaries are dashes and hex, ours "lua-truto-" and hex),
-- sizes about the reader's 64 KiB pieces, names and filenames that RFC 7578
-- escapes.  (Not a literal "%22": that escaping leaves "%" alone, so a
-- reader cannot tell it from an escaped quote.)
local TRICKY = { "\r\n--", "\r\n------------------------", "\r\n--lua-truto-", "--\r\n", "\r\n\r\n", '"',
                 "\0", "\255\254" }
local SIZES = { 0, 1, 65535, 65536, 65537, 131072 }
local NAMES = { "doc", 'quoted "name"', "line\r\nbreak", "caf\195\169", "50%", "a;b=c" }

-- size bytes: any byte, or (text) printable ASCII, as a text field must be UTF-8.
local function random_content(size, text)
  local pieces, n = {}, 0
  while n < size do
    local piece = math.random(3) == 1 and TRICKY[math.random(text and #TRICKY - 2 or #TRICKY)]
      or string.char(text and math.random(32, 126) or math.random(0, 255)):rep(math.random(1, 4096))
    pieces[#pieces + 1] = piece
    n = n + #piece
  end
  return table.concat(pieces):sub(1, size)
end

local function random_form(seed)
  math.randomseed(seed)
  local fields, expected, names = {}, {}, {}
  for i = 1, math.random(1, 4) do
    local name = NAMES[math.random(#NAMES)] .. " " .. i
    names[#names + 1] = name
    if i > 1 and math.random(3) == 1 then   -- the first a file: a form has one
      local text = random_content(math.random(0, 300), true)
      fields[#fields + 1] = { name = name, text = text }
      expected[name] = { { name = name, value = text, size = #text, sha256 = text_sha256(text) } }
    else
      local files = {}
      expected[name] = {}
      for k = 1, math.random(1, 2) do
        local size = math.random(2) == 1 and SIZES[math.random(#SIZES)] or math.random(0, 200000)
        local path = ("%s/random-%d-%d-%d"):format(dir, seed, i, k)
        assert(sh.write_file(path, random_content(size)))
        local filename = NAMES[math.random(#NAMES)] .. ".bin"
        files[k] = { path = path, filename = filename }
        expected[name][k] = { name = name, filename = filename, content_type = "application/x-test", size = size,
                              sha256 = sha256sum(path) }
      end
      fields[#fields + 1] = { name = name, files = files }
    end
  end
  assert(sh.write_file(dir .. "/random.json", truto.encode_json(fields)))
  table.sort(names)   -- the form's parts go in the order of their sorted names
  local parts = {}
  for _, name in ipairs(names) do
    for _, part in ipairs(expected[name]) do parts[#parts + 1] = part end
  end
  return parts
end

for _, transport in ipairs(TRANSPORTS) do
  local name, run = transport[1], transport[2]

  describe("uploads over " .. name, function()
    it("sends files and text fields as multipart/form-data, each part exactly", function()
      local o = run("form")
      assert.equal(200, o.status, o.text)
      local log = emu.requests()
      assert.equal(1, #log)
      local entry = log[1]
      assert.equal("POST", entry.method)
      assert.equal("/proxy/deals/attachments", entry.path)
      assert.equal("integrated_account_id=" .. uploads.ACCOUNT .. "&truto_body_passthrough=true", entry.query)
      local parts = form_parts()
      check_form_request(entry, parts)
      -- The emulator's echo: the fields as it read them.
      local file = function(p) return { filename = p.filename, content_type = p.content_type, size = p.size,
                                        sha256 = p.sha256 } end
      assert.same({ attachment = file(parts[1]), cleared = "null", count = "3", draft = "false",
                    meta = parts[5].value, note = "Q3 report", photos = { file(parts[7]), file(parts[8]) } },
                  o.result.result.body)
    end)

    it("reaches the emulator's reader part for part, whatever bytes and names a form holds (seeded random forms)",
      function()
        for seed = 1, 8 do
          emu.reset()
          local parts = random_form(seed)
          local o = run("random")
          assert.equal(200, o.status, o.text)
          local log = emu.requests()
          assert.equal(1, #log, "seed " .. seed)
          assert.is_nil(log[1].parts_error, "seed " .. seed)
          assert.same(parts, log[1].parts, "seed " .. seed)
        end
      end)

    it("sends truto.raw bytes unchanged with their Content-Type", function()
      local o = run("raw")
      assert.equal(200, o.status, o.text)
      local log = emu.requests()
      assert.equal(1, #log)
      assert.equal(uploads.RAW, log[1].body)
      assert.equal("application/pdf", log[1].headers["content-type"])
      assert.equal(tostring(#uploads.RAW), log[1].headers["content-length"])
      assert.is_nil(log[1].parts)
      assert.equal(uploads.RAW, o.result.result.body)
    end)

    it("fails a missing file with kind \"file\" before anything is sent", function()
      local o = run("missing")
      assert.equal("file", o.kind)
      assert.equal("cannot open the file to upload: " .. dir .. "/missing.pdf: No such file or directory", o.message)
      assert.equal(1, o.attempts)
      assert.equal("truto: POST /custom/missing: file: " .. o.message, o.text)
      assert.same({}, emu.requests())
    end)

    it("fails a directory with kind \"file\" before anything is sent", function()
      local o = run("directory")
      assert.equal("file", o.kind)
      assert.equal("the file to upload is not a regular file: " .. dir .. " is a directory", o.message)
      assert.equal(1, o.attempts)
      assert.same({}, emu.requests())
    end)

    -- Before: a FIFO blocked the call for ever (open(2) waits for a writer),
    -- a device or a file of /proc was sent as 0 bytes.
    it("refuses a FIFO, a device and a file of /proc with kind \"file\" before anything is sent", function()
      local o = run("special")
      local function refused(what)
        return { kind = "file", retryable = false, attempts = 1,
                 message = "the file to upload is not a regular file: " .. what }
      end
      assert.same({ refused(dir .. "/" .. uploads.FIFO .. " is a FIFO"), refused("/dev/zero is a character device"),
                    refused("/proc/self/status is a file whose size is not known in advance (as in /proc)") },
                  o.result)
      assert.same({}, emu.requests())
    end)

    it(("sends %d files in one body holding at most %d files open"):format(uploads.MANY, uploads.NOFILE), function()
      local o = run("many", true)
      assert.equal(200, o.status, o.text)
      local log = emu.requests()
      assert.equal(1, #log)
      local parts = {}
      for i = 1, uploads.MANY do
        parts[i] = { name = "files", filename = i .. ".txt", content_type = "application/octet-stream",
                     size = #tostring(i), sha256 = many_sums[i] }
      end
      check_form_request(log[1], parts)
    end)

    it("refuses control characters in field names, filenames and types at the caller's line, in a batch too",
       function()
      local o = run("control_characters")
      local function at_caller(message) return { where = "spec/support/uploads.lua", message = message } end
      local bad_name = ": a field name of a multipart body must not hold control characters other than CR and LF"
      assert.same({
        at_caller("truto: body.a\\0b" .. bad_name),
        at_caller("truto: body.a\\1b" .. bad_name),
        at_caller("truto: body.f: the file's filename must be a non-empty string without control characters other "
          .. "than CR and LF"),
        at_caller('truto: body.list[2]: the file\'s content_type must be a MIME type such as "application/pdf", '
          .. "without control characters"),
        at_caller("batch request #2: truto: body.x\\0" .. bad_name),
      }, o.result)
      assert.same({}, emu.requests())
    end)

    -- 502, not 503: Truto answers 503 for a blocked account, which the
    -- client does not retry (lua/truto/retry.lua).
    it("resends the same parts when it retries after a 502", function()
      emu.faults { { method = "POST", path_prefix = "/custom/retry", status = 502, count = 1 } }
      local o = run("retry")
      assert.equal(200, o.status, o.text)
      assert.equal(2, o.attempts)
      local log = emu.requests()
      assert.equal(2, #log)
      local parts = form_parts()
      for _, entry in ipairs(log) do check_form_request(entry, parts) end
      assert.equal(log[1].headers["idempotency-key"], log[2].headers["idempotency-key"])
    end)

    it("uploads in client:batch, a missing file failing only its own call", function()
      local o = run("batch")
      assert.same({ status = 200, kind = "file" }, o.result)
      local log = emu.requests()
      assert.equal(1, #log)
      check_form_request(log[1], form_parts())
    end)

    it("uploads a 200 MB file with flat memory, the recorded SHA-256 that of the file", function()
      local big = dir .. "/" .. uploads.BIG
      if not sums[uploads.BIG] then
        assert(sh.run(("head -c %d /dev/urandom > %s"):format(BIG_BYTES, sh.quote(big))))
        sums[uploads.BIG] = sha256sum(big)
      end
      local started = core.now()
      local o = run("big")
      local seconds = core.now() - started
      assert.equal(200, o.status, o.text)
      local log = emu.requests()
      assert.equal(1, #log)
      assert.same({
        { name = "file", filename = uploads.BIG, content_type = "application/octet-stream", size = BIG_BYTES,
          sha256 = sums[uploads.BIG] },
        { name = "note", value = "200 MB", size = 6, sha256 = text_sha256("200 MB") },
      }, log[1].parts)
      print(("\n%s: 200 MB uploaded in %.1f s, peak RSS growth %d kB"):format(name, seconds, o.memory_kb))
      assert.is_true(o.memory_kb < MAX_GROWTH_KB, ("the client grew by %d kB"):format(o.memory_kb))
    end)
  end)
end

describe("uploads", function()
  local function file_path(name) return dir .. "/" .. name end

  it("show on_request a description of the body, never a file's bytes, and the token redacted", function()
    local seen = {}
    local client = emu.client { transport = "curl", on_request = function(req) seen[#seen + 1] = req end }
    assert(client.custom_api:post("hook", { doc = truto.file(file_path("report.pdf")), note = "hi" },
                                  { integrated_account_id = uploads.ACCOUNT }))
    assert.equal(1, #seen)
    local boundary = emu.requests()[1].headers["content-type"]:match("boundary=(.+)$")
    local ours = nil
    for _, line in ipairs(seen[1].headers) do
      ours = ours or line:match("^Content%-Type: multipart/form%-data; boundary=(lua%-truto%-%x+)$")
      assert.is_nil(line:find(emu.TOKEN, 1, true))
    end
    assert.is_truthy(ours)
    assert.is_truthy(boundary)   -- libcurl writes a boundary of its own
    assert.equal(('<multipart/form-data, boundary %s, 2 parts: "doc": file %s (application/octet-stream, %d bytes, '
      .. 'filename "report.pdf"); "note": 2 bytes of text>'):format(ours, file_path("report.pdf"),
      #uploads.FILES["report.pdf"]), seen[1].body)
  end)

  it("fails when a file changes size between attempts, sending nothing more", function()
    local path = file_path("changing.txt")
    assert(sh.write_file(path, "12345"))
    emu.faults { { method = "POST", path_prefix = "/custom/changing", status = 502, count = 1 } }
    local client = emu.client { transport = "curl", retry = { base = 0.01 }, on_request = function(_, attempt)
      if attempt == 2 then assert(sh.write_file(path, "123456")) end
    end }
    local result, err = client.custom_api:post("changing", { f = truto.file(path) },
                                               { integrated_account_id = uploads.ACCOUNT })
    assert.is_nil(result)
    assert.equal("file", err.kind)
    assert.equal("the file to upload changed size since the request was built: " .. path .. " (5 bytes, then 6)",
                 err.message)
    assert.equal(2, err.attempts)
    assert.is_false(err.retryable)
    assert.equal(1, #emu.requests())
  end)

  it("fail in libcurl's read callback when a file no longer has the size given", function()
    local session = curl_core.session()
    local form = assert(multipart.form { f = truto.file(file_path("report.pdf")) })
    assert(multipart.check(form))
    form.parts[1].size = form.parts[1].size + 1
    local status, err = session:perform { method = "POST", url = emu.base_url .. "/custom/x", body = form,
                                          headers = { "Authorization: Bearer " .. emu.TOKEN } }
    session:close()
    assert.is_nil(status)
    assert.same({ kind = "file", final = true, curl_code = 42, message =
      "the file to upload changed size while it was sent: " .. file_path("report.pdf") }, err)
  end)

  -- Before: fopen(3) of a FIFO blocked for ever, a device was read as any
  -- file, and the message had no reason.
  it("fail in libcurl's read callback on what is not a regular file or is missing, with the system's reason",
     function()
    local session = curl_core.session { timeout = 5 }
    local function upload(path, size)
      local form = assert(multipart.form { f = truto.file(file_path("report.pdf")) })
      assert(multipart.check(form))
      form.parts[1].path, form.parts[1].size = path, size
      local status, err = session:perform { method = "POST", url = emu.base_url .. "/custom/x", body = form,
                                            headers = { "Authorization: Bearer " .. emu.TOKEN } }
      assert.is_nil(status)
      return err
    end
    local function failed(message) return { kind = "file", final = true, curl_code = 42, message = message } end
    assert.same(failed("the file to upload is no longer a regular file: /dev/zero"), upload("/dev/zero", 5))
    assert.same(failed("cannot open the file to upload: " .. file_path("missing.pdf") .. ": No such file or directory"),
                upload(file_path("missing.pdf"), 5))
    assert.same(failed("the file to upload is no longer a regular file: " .. file_path(uploads.FIFO)),
                upload(file_path(uploads.FIFO), 1))
    session:close()
  end)

  it("are told apart by core.file_info, which opens only a regular file", function()
    local report = #uploads.FILES["report.pdf"]
    assert.same({ regular = true, size = report, type = "regular file" }, core.file_info(file_path("report.pdf")))
    assert.same({ regular = true, size = 0, type = "regular file" }, core.file_info(file_path("empty.bin")))
    local fifo = core.file_info(file_path(uploads.FIFO))
    assert.same({ regular = false, size = 0, type = "FIFO" }, fifo)
    assert.same({ regular = false, size = 0, type = "character device" }, core.file_info("/dev/null"))
    assert.same({ regular = false, size = 0, type = "file whose size is not known in advance (as in /proc)" },
                core.file_info("/proc/self/status"))
    assert.equal("directory", core.file_info(dir).type)
    assert.same({ nil, file_path("missing.pdf") .. ": No such file or directory" },
                { core.file_info(file_path("missing.pdf")) })
    assert.has_error(function() core.file_info("") end,
                     "bad argument #1 to 'file_info' (must be a non-empty path without NUL)")
    assert.has_error(function() core.file_info("a\0b") end,
                     "bad argument #1 to 'file_info' (must be a non-empty path without NUL)")
  end)

  it("write the form's bytes in pieces of at most 64 KiB, failing when a file shrank", function()
    local form = assert(multipart.form { b = "text", a = truto.file(file_path("report.pdf"), { filename = "r" }) })
    assert(multipart.check(form))
    local pieces = {}
    assert.is_true(multipart.write(form, function(piece)
      pieces[#pieces + 1] = piece
      return true
    end))
    local b = form.boundary
    assert.equal("--" .. b .. '\r\nContent-Disposition: form-data; name="a"; filename="r"\r\n'
      .. "Content-Type: application/octet-stream\r\n\r\n" .. uploads.FILES["report.pdf"] .. "\r\n--" .. b
      .. '\r\nContent-Disposition: form-data; name="b"\r\n\r\ntext\r\n--' .. b .. "--\r\n", table.concat(pieces))
    assert.equal(form.length, #table.concat(pieces))
    for _, piece in ipairs(pieces) do assert.is_true(#piece <= 65536) end

    form.parts[1].size = form.parts[1].size + 1
    local ok, err, file_failed = multipart.write(form, function() return true end)
    assert.is_nil(ok)
    assert.is_true(file_failed)
    assert.equal("file", err.kind)
  end)

  it("raise at the caller's line on bad arguments", function()
    local function raises(pattern, f)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    raises("^spec/upload_spec.lua:%d+: bad argument #1 to 'truto.file' %(path must be a non%-empty string",
           function() truto.file(42) end)
    raises("^spec/upload_spec.lua:%d+: bad argument #2 to 'truto.file' %(unknown option 'name'%)",
           function() truto.file("x", { name = "y" }) end)
    raises("^spec/upload_spec.lua:%d+: bad argument #2 to 'truto.file' %(content_type must be a MIME type",
           function() truto.file("x", { content_type = "text/plain\r\nX: y" }) end)
    raises("^spec/upload_spec.lua:%d+: bad argument #2 to 'truto.file' %(filename must be",
           function() truto.file("x", { filename = 7 }) end)
    local no_control = " must be a non%-empty string without control characters other than CR and LF%)$"
    raises("^spec/upload_spec.lua:%d+: bad argument #2 to 'truto.file' %(filename" .. no_control,
           function() truto.file("x", { filename = "a\0b" }) end)
    raises("^spec/upload_spec.lua:%d+: bad argument #2 to 'truto.file' %(filename" .. no_control,
           function() truto.file("x", { filename = "a\tb" }) end)
    raises("^spec/upload_spec.lua:%d+: bad argument #1 to 'truto.file' %(the path's last segment, the default "
           .. "filename, holds a control character: give options.filename%)$", function() truto.file("d/a\1b") end)
    raises("^spec/upload_spec.lua:%d+: bad argument #2 to 'truto.file' %(content_type must be a MIME type",
           function() truto.file("x", { content_type = "text/plain\0" }) end)
    assert.equal("a\r\nb", truto.file("d/a\r\nb").filename)   -- CR and LF are escaped in the part's header
    raises("^spec/upload_spec.lua:%d+: bad argument #1 to 'truto.raw' %(bytes must be a string, got nil%)",
           function() truto.raw() end)
    local client = emu.client { transport = "curl" }
    raises("^spec/upload_spec.lua:%d+: truto: body%.meta%.doc: a truto%.file value can only be a top%-level field",
           function() client.custom_api:post("x", { a = truto.file("x"), meta = { doc = truto.file("y") } }) end)
    raises("^spec/upload_spec.lua:%d+: truto: body%.meta%.doc: a truto%.file value can only be a top%-level field",
           function() client.custom_api:post("x", { meta = { doc = truto.file("y") } }) end)
    raises("^spec/upload_spec.lua:%d+: truto: body%.a: a truto%.raw value can only be a whole body",
           function() client.custom_api:post("x", { a = truto.raw("x") }) end)
    raises("^spec/upload_spec.lua:%d+: truto: body%.a: a list of truto%.file values must hold nothing else",
           function() client.custom_api:post("x", { a = { truto.file("x"), "y" } }) end)
    raises("^spec/upload_spec.lua:%d+: truto: body: a body with truto%.file values must be an object",
           function() client.custom_api:post("x", { truto.file("x") }) end)
    assert.same({}, emu.requests())
  end)
end)

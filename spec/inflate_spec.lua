-- truto.core.inflater: streaming gzip/deflate decoding of response bodies
-- (csrc/inflate.c), for the transports that do their own I/O (nginx).
--
-- Fixtures: the gzip streams come from the gzip command (at run time, or
-- once: the literals below).  zlib-wrapped and raw deflate data are cut
-- from a gzip stream made with `gzip -n` (no name: a 10-byte header, then
-- the raw deflate data, then an 8-byte trailer): raw = gz:sub(11, -9);
-- zlib = "\x78\x9c" .. raw .. adler32(text), big-endian (RFC 1950).
local core = require "truto.core"
local sh = require "spec.support.shell"

-- printf 'hello, truto\n' | gzip -9n
local HELLO = "hello, truto\n"
local HELLO_GZ = "\31\139\8\0\0\0\0\0\2\3\203\72\205\201\201\215\81\40\41\42\45\201\231\2\0\116\70\214\134\13\0\0\0"

-- lua5.4 -e 'io.write(<the expression of JSON_TEXT>)' | gzip -9n: one
-- dynamic-Huffman block, so a flipped byte breaks the code, not just the CRC.
local function json_text()
  local parts = {}
  for i = 1, 12 do
    parts[#parts + 1] = string.format('{"id":"%d","name":"Deal %d","amount":%d,"stage":{"id":"s%d"}}',
      i, i, i * 1250, i % 4)
  end
  return '{"result":[' .. table.concat(parts, ",") .. '],"next_cursor":null}\n'
end
local JSON_TEXT = json_text()
local JSON_GZ = "\31\139\8\0\0\0\0\0\2\3\133\210\65\10\131\48\16\5\208\125\79\81\102\237\34\147\168\81\215\222"
  .. "\162\148\18\218\80\10\81\193\36\80\16\239\222\20\92\76\199\182\217\37\100\30\225\51\127\129\217\250\232\2"
  .. "\116\167\5\30\55\232\0\161\128\209\12\54\29\123\107\220\241\125\55\195\20\199\52\131\178\18\5\248\96\238"
  .. "\233\121\155\247\8\235\90\108\23\201\176\36\56\217\61\150\4\43\134\21\193\74\127\249\89\17\92\50\92\18"
  .. "\156\62\222\99\65\112\197\112\69\112\157\203\92\51\92\19\172\115\153\53\195\154\224\38\151\185\97\184"
  .. "\161\171\18\185\208\45\211\45\213\217\77\163\224\61\17\172\40\255\131\227\174\103\31\69\203\238\27\121"
  .. "\213\144\118\13\127\174\252\156\148\125\134\203\53\206\126\154\161\27\163\115\235\225\5\208\247\237\129"
  .. "\7\3\0\0"

-- Adler-32 of s as 4 big-endian bytes (plain arithmetic: Lua 5.1 to 5.4).
local function adler32(s)
  local a, b = 1, 0
  for i = 1, #s, 4096 do
    local bytes = { s:byte(i, math.min(i + 4095, #s)) }
    for j = 1, #bytes do
      a = (a + bytes[j]) % 65521
      b = (b + a) % 65521
    end
  end
  return string.char(math.floor(b / 256), b % 256, math.floor(a / 256), a % 256)
end

local function raw_of(gz) return gz:sub(11, -9) end
local function zlib_of(gz, text) return "\120\156" .. raw_of(gz) .. adler32(text) end

-- Runs the command with input written to a temp file; its output.
local function filter(command, input)
  local path = os.tmpname()
  assert(sh.write_file(path, input))
  local out = sh.capture(command .. " < " .. sh.quote(path))
  os.remove(path)
  return out
end

-- Feeds data to a fresh inflater in pieces of the given size; returns the
-- decoded text, or nil plus the error (kind, message) and the text so far.
local function decode(encoding, data, piece, limit)
  local inf = core.inflater(encoding, limit or 1e9)
  local out = {}
  for i = 1, #data, piece do
    local text, kind, message = inf:update(data:sub(i, i + piece - 1))
    if text == nil then
      inf:close()
      return nil, kind, message, table.concat(out)
    end
    out[#out + 1] = text
  end
  local ok, kind, message = inf:finish()
  local total = inf:total()
  inf:close()
  if not ok then return nil, kind, message, table.concat(out) end
  local text = table.concat(out)
  assert.equal(#text, total)
  return text
end

-- The first three of its arguments (decode's result without the text so far).
local function first3(a, b, c) return a, b, c end

-- The three results of a call, as a list (nil included).
local function pack(...) return { n = select("#", ...), ... } end

local function flip(s, at)
  return s:sub(1, at - 1) .. string.char((s:byte(at) + 0x55) % 256) .. s:sub(at + 1)
end

describe("core.inflater", function()
  local TEXT, TEXT_GZ                    -- 1 MB of text, gzipped at run time

  setup(function()
    local lines, size, i = {}, 0, 0
    while size < 1000000 do
      i = i + 1
      local line = string.format('{"id":"%08d","name":"Opportunity %d","amount":%d,"tags":["t%d","u%d"]}\n',
        i * 7919 % 99991, i, i * 37 % 100003, i % 13, i % 101)
      lines[#lines + 1] = line
      size = size + #line
    end
    TEXT = table.concat(lines):sub(1, 1000000)
    TEXT_GZ = filter("gzip -6n", TEXT)
    assert.equal("\31\139\8\0", TEXT_GZ:sub(1, 4))
  end)

  describe("decodes", function()
    it("a 1 MB gzip body in 1-byte, 7-byte and 64 KiB pieces, and whole", function()
      for _, piece in ipairs({ 1, 7, 65536, #TEXT_GZ }) do
        local text, kind, message = decode("gzip", TEXT_GZ, piece)
        assert.same({ true, nil, nil }, { text == TEXT, kind, message }, "pieces of " .. piece)
      end
    end)

    it("the literal fixtures", function()
      assert.equal(HELLO, decode("gzip", HELLO_GZ, 1))
      assert.equal(JSON_TEXT, decode("gzip", JSON_GZ, 3))
      assert.equal(HELLO, decode("deflate", zlib_of(HELLO_GZ, HELLO), 1))
      assert.equal(HELLO, decode("deflate", raw_of(HELLO_GZ), 1))
    end)

    it("x-gzip, and the coding's name in any case", function()
      for _, name in ipairs({ "gzip", "x-gzip", "GZIP", "X-Gzip", "gZiP" }) do
        assert.equal(JSON_TEXT, decode(name, JSON_GZ, 5), name)
      end
      for _, name in ipairs({ "deflate", "DEFLATE", "Deflate" }) do
        assert.equal(JSON_TEXT, decode(name, zlib_of(JSON_GZ, JSON_TEXT), 5), name)
      end
    end)

    it("concatenated gzip members, as gunzip does, however they are split", function()
      local data = HELLO_GZ .. JSON_GZ .. HELLO_GZ
      for _, piece in ipairs({ 1, 2, 33, 34, #data }) do
        assert.equal(HELLO .. JSON_TEXT .. HELLO, decode("gzip", data, piece), "pieces of " .. piece)
      end
      -- an empty member (gzip of nothing) between two
      local empty = filter("gzip -n", "")
      assert.equal(20, #empty)
      assert.equal(HELLO .. HELLO, decode("gzip", HELLO_GZ .. empty .. HELLO_GZ, 1))
    end)

    it("zlib-wrapped deflate (1 MB) in 1-byte, 7-byte and 64 KiB pieces", function()
      local data = zlib_of(TEXT_GZ, TEXT)
      for _, piece in ipairs({ 1, 7, 65536 }) do
        local text, kind, message = decode("deflate", data, piece)
        assert.same({ true, nil, nil }, { text == TEXT, kind, message }, "pieces of " .. piece)
      end
    end)

    it("raw deflate (no zlib header: the fallback browsers and libcurl make) in any pieces", function()
      local data = raw_of(TEXT_GZ)
      for _, piece in ipairs({ 1, 7, 65536 }) do
        local text, kind, message = decode("deflate", data, piece)
        assert.same({ true, nil, nil }, { text == TEXT, kind, message }, "pieces of " .. piece)
      end
    end)

    it("zlib data sent as gzip (libcurl accepts it too)", function()
      assert.equal(HELLO, decode("gzip", zlib_of(HELLO_GZ, HELLO), 1))
    end)

    it("an empty body to an empty string (a reply without a body may still name its coding)", function()
      for _, name in ipairs({ "gzip", "deflate" }) do
        local inf = core.inflater(name, 10)
        assert.equal("", inf:update(""))
        assert.is_true(inf:finish())
        assert.equal(0, inf:total())
        inf:close()
      end
    end)

    it("empty updates anywhere, returning empty strings", function()
      local inf = core.inflater("gzip", 100)
      local out = {}
      for i = 1, #HELLO_GZ do
        assert.equal("", inf:update(""))
        out[#out + 1] = inf:update(HELLO_GZ:sub(i, i))
      end
      assert.equal("", inf:update(""))
      assert.equal(HELLO, table.concat(out))
      assert.is_true(inf:finish())
      assert.is_true(inf:finish())
      assert.equal(#HELLO, inf:total())
    end)
  end)

  describe("limits the decoded bytes", function()
    it("to exactly the limit", function()
      for _, name in ipairs({ "gzip", "deflate" }) do
        local data = name == "gzip" and JSON_GZ or raw_of(JSON_GZ)
        assert.equal(JSON_TEXT, decode(name, data, 1, #JSON_TEXT))
        local text, kind, message, partial = decode(name, data, 1, #JSON_TEXT - 1)
        assert.same({ nil, "too_large", "decoded response larger than " .. (#JSON_TEXT - 1) .. " bytes" },
          { text, kind, message })
        assert.equal(JSON_TEXT:sub(1, #partial), partial)
        assert.is_true(#partial <= #JSON_TEXT - 1)
      end
    end)

    it("to zero", function()
      local empty = filter("gzip -n", "")
      assert.equal("", decode("gzip", empty, 1, 0))
      local inf = core.inflater("gzip", 0)
      assert.same({ n = 3, nil, "too_large", "decoded response larger than 0 bytes" }, pack(inf:update(HELLO_GZ)))
      assert.equal(0, inf:total())
    end)

    it("stops a decompression bomb (100 MB of zeros, gzipped) at the limit, in bounded memory", function()
      local path = os.tmpname()
      assert(sh.run("head -c 100000000 /dev/zero | gzip -9 > " .. sh.quote(path)))
      local bomb = assert(sh.read_file(path))
      os.remove(path)
      assert.is_true(#bomb < 200000)
      local limit = 1024 * 1024
      -- Each piece is measured after a full collection with the collector
      -- stopped until then: what the inflater holds and all one update
      -- allocated, garbage included, whatever the collector's pace (which
      -- varies with the Lua and the size of busted's heap).
      finally(function() collectgarbage("restart") end)
      for _, piece in ipairs({ 256, 4096, #bomb }) do
        collectgarbage()
        local base_kb = collectgarbage("count")
        local inf = core.inflater("gzip", limit)
        local sum, fed, peak_kb, kind, message = 0, 0, 0, nil, nil
        for i = 1, #bomb, piece do
          local text
          local input = bomb:sub(i, i + piece - 1)
          collectgarbage()
          collectgarbage("stop")
          text, kind, message = inf:update(input)
          fed = fed + piece
          peak_kb = math.max(peak_kb, collectgarbage("count") - base_kb)
          collectgarbage("restart")
          if text == nil then break end
          assert.equal(string.rep("\0", #text), text)
          sum = sum + #text
          assert.is_true(sum <= limit)
        end
        assert.same({ "too_large", "decoded response larger than 1048576 bytes" }, { kind, message })
        assert.equal(limit, inf:total())
        assert.is_true(sum <= limit)
        -- it stopped early: ~1 MB of output needs ~1 KB of this input
        assert.is_true(fed <= math.max(piece, 4096), "fed " .. fed)
        -- Lua's heap never held much more than a limit's worth (the
        -- returned pieces and a buffer's growth), never the 100 MB
        assert.is_true(peak_kb < 4 * limit / 1024, "peak " .. peak_kb .. " kB")
        -- the error sticks
        assert.same({ n = 3, nil, "too_large", "decoded response larger than 1048576 bytes" },
          pack(inf:update(bomb:sub(1, 10))))
        assert.same({ n = 3, nil, "too_large", "decoded response larger than 1048576 bytes" }, pack(inf:finish()))
        inf:close()
      end
    end)
  end)

  describe("reports corrupt data as decode", function()
    local function fails(name, data, message, piece)
      for _, p in ipairs(piece and { piece } or { 1, 7, #data }) do
        local text, kind, msg = decode(name, data, p)
        assert.same({ nil, "decode", message }, { text, kind, msg }, name .. " in pieces of " .. p)
      end
    end

    it("a bad gzip header", function()
      fails("gzip", "\0" .. HELLO_GZ:sub(2), "corrupt gzip data: incorrect header check")
      fails("gzip", HELLO_GZ:sub(1, 2) .. "\7" .. HELLO_GZ:sub(4), "corrupt gzip data: unknown compression method")
      fails("gzip", HELLO, "corrupt gzip data: incorrect header check")
    end)

    it("a byte flipped in the middle of the compressed data", function()
      fails("gzip", flip(JSON_GZ, 100), "corrupt gzip data: invalid distance too far back")
      fails("gzip", flip(JSON_GZ, 20), "corrupt gzip data: invalid literal/lengths set")
      fails("deflate", flip(raw_of(JSON_GZ), 90), "corrupt deflate data: invalid distance too far back")
      fails("deflate", flip(zlib_of(JSON_GZ, JSON_TEXT), 92), "corrupt deflate data: invalid distance too far back")
    end)

    it("a bad CRC, length or Adler-32 check", function()
      fails("gzip", flip(HELLO_GZ, #HELLO_GZ - 5), "corrupt gzip data: incorrect data check")
      fails("gzip", flip(HELLO_GZ, #HELLO_GZ - 2), "corrupt gzip data: incorrect length check")
      local z = zlib_of(HELLO_GZ, HELLO)
      fails("deflate", flip(z, #z), "corrupt deflate data: incorrect data check")
    end)

    it("a bad zlib header: neither zlib nor raw deflate", function()
      -- 0x78 0x9d fails zlib's check, so it is read as raw deflate, where
      -- 0x78 starts a stored block whose lengths then disagree
      fails("deflate", "\120\157" .. raw_of(HELLO_GZ), "corrupt deflate data: invalid stored block lengths")
      -- a zlib header asking for a preset dictionary
      fails("deflate", "\120\187" .. raw_of(HELLO_GZ), "corrupt deflate data: preset dictionary required")
    end)

    it("trailing garbage (a following gzip member is fine, anything else is not)", function()
      fails("gzip", HELLO_GZ .. "x", "corrupt gzip data: data after the end of the stream")
      fails("gzip", HELLO_GZ .. "\0\0\0\0", "corrupt gzip data: data after the end of the stream")
      fails("gzip", HELLO_GZ .. "\31\0", "corrupt gzip data: incorrect header check")
      fails("gzip", HELLO_GZ .. "\31\139\9\0", "corrupt gzip data: unknown compression method")
      -- the start of another member, cut short
      assert.same({ nil, "decode", "truncated gzip data" }, { first3(decode("gzip", HELLO_GZ .. "\31", 1)) })
      local z = zlib_of(HELLO_GZ, HELLO)
      fails("deflate", z .. "x", "corrupt deflate data: data after the end of the stream")
      -- raw deflate: up to 4 stray bytes are let pass, as libcurl does (some
      -- servers append the Adler-32 of a zlib stream whose header they left out)
      assert.equal(HELLO, decode("deflate", raw_of(HELLO_GZ) .. "abcd", 1))
      assert.equal(HELLO, decode("deflate", raw_of(HELLO_GZ) .. "abcd", 100))
      fails("deflate", raw_of(HELLO_GZ) .. "abcde", "corrupt deflate data: data after the end of the stream")
    end)

    it("and keeps returning the same error, keeping what it decoded before", function()
      local inf = core.inflater("gzip", 1000)
      assert.equal(HELLO, inf:update(HELLO_GZ))
      local err = { n = 3, nil, "decode", "corrupt gzip data: data after the end of the stream" }
      assert.same(err, pack(inf:update("garbage")))
      assert.same(err, pack(inf:update(HELLO_GZ)))
      assert.same(err, pack(inf:update("")))
      assert.same(err, pack(inf:finish()))
      assert.equal(#HELLO, inf:total())
      inf:close()
    end)
  end)

  describe("finish", function()
    it("reports a truncated stream", function()
      for _, cut in ipairs({ 1, 8, 9, 20, #HELLO_GZ - 1 }) do
        assert.same({ nil, "decode", "truncated gzip data" }, { first3(decode("gzip", HELLO_GZ:sub(1, cut), 1)) },
          "first " .. cut .. " bytes")
      end
      assert.same({ nil, "decode", "truncated gzip data" }, { first3(decode("gzip", HELLO_GZ .. HELLO_GZ:sub(1, 5), 4)) })
      local z = zlib_of(HELLO_GZ, HELLO)
      for _, cut in ipairs({ 1, 2, 5, #z - 1 }) do
        assert.same({ nil, "decode", "truncated deflate data" }, { first3(decode("deflate", z:sub(1, cut), 1)) },
          "first " .. cut .. " bytes")
      end
      local raw = raw_of(HELLO_GZ)
      assert.same({ nil, "decode", "truncated deflate data" }, { first3(decode("deflate", raw:sub(1, #raw - 1), 1)) })
    end)

    it("returns true, and may be called again, once the stream ended", function()
      local inf = core.inflater("deflate", 100)
      assert.equal(HELLO, inf:update(zlib_of(HELLO_GZ, HELLO)))
      assert.is_true(inf:finish())
      assert.is_true(inf:finish())
      inf:close()
    end)
  end)

  describe("arguments", function()
    it("raise for an unsupported coding", function()
      for _, name in ipairs({ "br", "identity", "zstd", "gzip ", " gzip", "", "deflate, gzip", "gzip\0" }) do
        assert.has_error(function() core.inflater(name, 10) end,
          "truto: unsupported content coding '" .. name:gsub("%z.*", "") .. "'")
      end
      assert.has_error(function() core.inflater(nil, 10) end, "truto: content coding must be a string, got nil")
      assert.has_error(function() core.inflater(1, 10) end, "truto: content coding must be a string, got number")
    end)

    it("raise for a bad limit", function()
      for _, limit in ipairs({ -1, 1.5, math.huge, -math.huge, 0 / 0, 2 ^ 53 + 2 }) do
        assert.has_error(function() core.inflater("gzip", limit) end,
          "truto: inflater limit must be a non-negative integer")
      end
      assert.has_error(function() core.inflater("gzip") end,
        "truto: inflater limit must be a number of bytes, got no value")
      assert.has_error(function() core.inflater("gzip", "10") end,
        "truto: inflater limit must be a number of bytes, got string")
      core.inflater("gzip", 2 ^ 53):close()
      core.inflater("gzip", 0):close()
    end)

    it("raise for a chunk that is not a string, and on a foreign self", function()
      local inf = core.inflater("gzip", 10)
      assert.has_error(function() inf:update() end, "bad argument #1 to 'update' (string expected, got no value)")
      assert.has_error(function() inf:update({}) end, "bad argument #1 to 'update' (string expected, got table)")
      assert.has_error(function() inf.update({}, "x") end,
        "bad argument #1 to 'update' (truto.Inflater expected, got table)")
      inf:close()
    end)
  end)

  describe("close", function()
    it("is idempotent, and every later call raises", function()
      local inf = core.inflater("gzip", 100)
      assert.equal(HELLO, inf:update(HELLO_GZ:sub(1, 20)) .. inf:update(HELLO_GZ:sub(21)))
      assert.truthy(tostring(inf):match("^truto%.Inflater %(0x%x+%)$"), tostring(inf))
      inf:close()
      inf:close()
      assert.truthy(tostring(inf):find("^truto%.Inflater %(closed, "))
      for _, call in ipairs({ function() inf:update("x") end, function() inf:finish() end,
                              function() inf:total() end }) do
        assert.has_error(call, "truto: inflater is closed")
      end
      inf:close()
    end)

    it("is left to the collector for an inflater dropped mid-stream", function()
      for _ = 1, 200 do
        local inf = core.inflater("gzip", 1e6)
        inf:update(TEXT_GZ:sub(1, 1000))
      end
      collectgarbage()
      collectgarbage()
    end)

    if _VERSION == "Lua 5.4" and not rawget(_G, "jit") then
      it("runs at the end of a to-be-closed variable (Lua 5.4)", function()
        local kept
        local chunk = assert(load([[
          local core, data = ...
          local inf <close> = core.inflater("gzip", 100)
          return inf, inf:update(data)
        ]]))
        local inf, text = chunk(core, HELLO_GZ)
        kept = inf
        assert.equal(HELLO, text)
        assert.has_error(function() kept:total() end, "truto: inflater is closed")
      end)
    end
  end)

  it("counts decoded bytes with total() across members", function()
    local inf = core.inflater("gzip", 1e9)
    assert.equal(0, inf:total())
    inf:update(HELLO_GZ)
    assert.equal(#HELLO, inf:total())
    inf:update(JSON_GZ)
    assert.equal(#HELLO + #JSON_TEXT, inf:total())
    if math.type then assert.equal("integer", math.type(inf:total())) end
    inf:close()
  end)
end)

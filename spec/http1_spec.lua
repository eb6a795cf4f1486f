-- truto.http1: the HTTP/1.1 engine of the yielding transports, without a
-- server.  The parser (reader, read_head, read_body, decoder) is driven by
-- a recv function that hands out scripted pieces; perform() by a fake
-- cosocket and a fake clock.  Runs under Lua 5.4 and LuaJIT.
local http1 = require "truto.http1"
local core = require "truto.core"

local MAX_LINE = http1.MAX_LINE_BYTES
local MAX_HEAD = http1.MAX_HEAD_BYTES

-- printf 'hello hello hello, gzip body\n' | gzip -9n
local GZ_TEXT = "hello hello hello, gzip body\n"
local GZ = "\31\139\8\0\0\0\0\0\2\3\203\72\205\201\201\87\200\64\144\58\10\233\85\153\5\10\73\249\41\149\92"
  .. "\0\230\180\248\114\29\0\0\0"

-- A recv over a list of pieces (then nil, final_err or "closed"); stats.handed
-- counts the bytes handed out, stats.calls the calls.
local function feeder(pieces, final_err)
  local stats = { handed = 0, calls = 0 }
  local i = 0
  return function()
    stats.calls = stats.calls + 1
    i = i + 1
    local piece = pieces[i]
    if piece == nil then return nil, final_err or "closed" end
    stats.handed = stats.handed + #piece
    return piece
  end, stats
end

local function bytewise(s)
  local pieces = {}
  for i = 1, #s do pieces[i] = s:sub(i, i) end
  return pieces
end

-- read_head then read_body over the pieces: one table for the outcome.
local function exchange(pieces, method, final_err)
  local recv = feeder(pieces, final_err)
  local r = http1.reader(recv, method or "GET")
  local status, headers, version = http1.read_head(r)
  if not status then return { err = headers } end
  headers = core.header_table(headers)
  local body = {}
  local reusable, err = http1.read_body(r, method or "GET", status, headers, function(piece)
    body[#body + 1] = piece
    return true
  end)
  return { status = status, headers = headers, version = version, body = table.concat(body), reusable = reusable,
           err = err }
end

local function parse(s, method, final_err) return exchange({ s }, method, final_err) end

-- The error's kind and message, as a table for assert.same.
local function failure(kind, message, final) return { err = { kind = kind, message = message, final = final } } end

local OK_HEAD = "HTTP/1.1 200 OK\r\n"

describe("http1 status line", function()
  it("reads HTTP/1.0 and HTTP/1.1, with or without a reason phrase", function()
    local cases = {
      { "HTTP/1.0 200 OK\r\n\r\n", 200, "1.0" },
      { "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, "1.1" },
      { "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", 404, "1.1" },
      { "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", 404, "1.1" },
      { "HTTP/1.1 503 Service Temporarily Unavailable\r\nContent-Length: 0\r\n\r\n", 503, "1.1" },
      { "HTTP/1.1 299 x\n\n", 299, "1.1" },
      { "HTTP/1.1 999 Custom\r\nContent-Length: 0\r\n\r\n", 999, "1.1" },
    }
    for _, c in ipairs(cases) do
      local o = parse(c[1])
      assert.is_nil(o.err, c[1])
      assert.equal(c[2], o.status, c[1])
      assert.equal(c[3], o.version, c[1])
    end
  end)

  it("refuses anything but HTTP/1.0 and HTTP/1.1 as final protocol errors", function()
    local expect = failure("protocol", "malformed status line (not HTTP/1.0 or HTTP/1.1)", true)
    for _, line in ipairs {
      "HTTP/2 200\r\n\r\n", "HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.2 200 OK\r\n\r\n", "HTTP/0.9 200 OK\r\n\r\n",
      "<html><body>hello</body></html>\n", "\r\n", "http/1.1 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n", "HTTP/1.1\t200 OK\r\n\r\n",
      " HTTP/1.1 200 OK\r\n\r\n", "SSH-2.0-OpenSSH_9.6\r\n", "HTTP/01.1 200 OK\r\n\r\n",
      -- http-parser refuses a tab after the status code, which libcurl reads (README).
      "HTTP/1.1 200\tOK\r\nContent-Length: 0\r\n\r\n",
    } do
      assert.same(expect, parse(line), line)
    end
  end)

  it("skips interim 1xx responses and their headers", function()
    local o = parse("HTTP/1.1 100 Continue\r\n\r\n"
      .. "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nX-Early: 1\r\n\r\n"
      .. "HTTP/1.1 102 Processing\r\n\r\n"
      .. "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok")
    assert.same({ status = 201, version = "1.1", body = "ok", reusable = true,
                  headers = { ["content-length"] = "2", ["x-final"] = "yes" } }, o)
  end)

  it("refuses a status below 100 as a final protocol error, not an interim answer", function()
    for _, code in ipairs { "000", "099", "042" } do
      assert.same(failure("protocol", "malformed status line (status " .. code .. ")", true),
        parse("HTTP/1.1 " .. code .. " X\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    end
  end)

  it("refuses 101 Switching Protocols as a final protocol error", function()
    assert.same(failure("protocol", "unexpected 101 Switching Protocols", true),
      parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
    assert.same(failure("protocol", "unexpected 101 Switching Protocols", true),
      parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n"))
  end)
end)

describe("http1 header fields", function()
  local function headers_of(lines)
    local o = parse(OK_HEAD .. lines .. "Content-Length: 0\r\n\r\n")
    assert.is_nil(o.err)
    o.headers["content-length"] = nil
    return o.headers
  end

  it("folds names to lower case and joins repeats with ', '", function()
    assert.same({ ["content-type"] = "application/json", ["x-a"] = "1, 2, 3" },
      headers_of("CONTENT-TYPE: application/json\r\nX-A: 1\r\nx-a: 2\r\nX-a: 3\r\n"))
    assert.same({ ["set-cookie"] = "a=1, b=2" }, headers_of("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"))
  end)

  it("joins obs-folded lines with a space", function()
    assert.same({ ["x-long"] = "a b c", ["x-next"] = "d" },
      headers_of("X-Long: a\r\n  b\r\n\t c \r\nX-Next: d\r\n"))
    assert.same({ ["x-a"] = "1, 2 more" }, headers_of("X-A: 1\r\nX-A: 2\r\n more\r\n"))
  end)

  it("trims leading and trailing white space of values; keeps inner space", function()
    assert.same({ ["x-a"] = "v  w", ["x-empty"] = "", ["x-b"] = "x" },
      headers_of("X-A: \t v  w \t \r\nX-Empty:\r\nX-B:x\r\n"))
  end)

  it("skips a line without a colon, with white space before the colon, or with a bad name", function()
    assert.same({ ["x-ok"] = "1" },
      headers_of("no colon here\r\nX-Bad : v\r\nX-Ok: 1\r\n: no name\r\nX(y): v\r\nX Y: v\r\n"))
  end)

  it("skips a folded line with nothing to fold into", function()
    local o = parse(OK_HEAD .. " leading: fold\r\nContent-Length: 0\r\n\r\n")
    assert.same({ ["content-length"] = "0" }, o.headers)
  end)

  -- The best of 3 CPU times of step(n) for 10,000 and 40,000 repeats of a
  -- field: joining them as they come would make it 16 times (quadratic).
  local function linear(step)
    local function cpu(n)
      local best = math.huge
      for _ = 1, 3 do
        local started = os.clock()
        step(n)
        best = math.min(best, os.clock() - started)
      end
      return best
    end
    local small, large = cpu(10000), cpu(40000)
    assert.is_true(large < 8 * small + 0.005, ("10,000 repeats: %.4f s, 40,000: %.4f s"):format(small, large))
  end

  it("joins repeats of one field in linear time: 4 times the repeats, about 4 times the CPU", function()
    linear(function(n)
      local o = parse(OK_HEAD .. ("A: 1\r\n"):rep(n) .. (" x\r\n"):rep(10) .. "Content-Length: 0\r\n\r\n")
      assert.is_nil(o.err)
      assert.equal(n * 3 - 2 + 20, #o.headers.a)
    end)
  end)

  it("reads one field of a block by name in linear time too", function()
    local blocks = {}
    for _, n in ipairs { 10000, 40000 } do
      local r = http1.reader(feeder { OK_HEAD .. ("A: 1\r\n"):rep(n) .. "Content-Length: 0\r\n\r\n" }, "GET")
      blocks[n] = select(2, http1.read_head(r))
    end
    linear(function(n) assert.equal(n * 3 - 2, #blocks[n].a) end)
  end)

  it("refuses a CR inside a line, where http-parser would end it", function()
    local cr = { kind = "protocol", message = "malformed response (a CR inside a line)" }
    assert.same(cr, parse(OK_HEAD .. "X-A: a\rb\r\nContent-Length: 0\r\n\r\n").err)
    assert.same(cr, parse(OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n2\r\r\nab\r\n0\r\n\r\n").err)
    cr.final = true   -- in the status line: not HTTP, as a malformed one
    assert.same(cr, parse("HTTP/1.1 200 O\rK\r\nContent-Length: 0\r\n\r\n").err)
  end)

  it("accepts bare LF line ends", function()
    local o = parse("HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 3\n\nabc")
    assert.same({ status = 200, version = "1.1", body = "abc", reusable = true,
                  headers = { ["x-a"] = "1", ["content-length"] = "3" } }, o)
  end)
end)

describe("http1 limits", function()
  local LINE_TOO_LARGE = failure("too_large", ("a response line is longer than %d bytes"):format(MAX_LINE))
  local HEAD_TOO_LARGE = failure("too_large", ("response headers exceed %d bytes"):format(MAX_HEAD))

  it("takes a header line of exactly MAX_LINE_BYTES, with CRLF and with LF", function()
    local line = "X-Big: " .. ("a"):rep(MAX_LINE - 7)
    assert.equal(MAX_LINE, #line)
    for _, eol in ipairs { "\r\n", "\n" } do
      local o = parse(OK_HEAD .. line .. eol .. "Content-Length: 0\r\n\r\n")
      assert.is_nil(o.err)
      assert.equal(MAX_LINE - 7, #o.headers["x-big"])
    end
  end)

  it("refuses a header line of MAX_LINE_BYTES + 1, with CRLF and with LF", function()
    local line = "X-Big: " .. ("a"):rep(MAX_LINE - 6)
    for _, eol in ipairs { "\r\n", "\n" } do
      assert.same(LINE_TOO_LARGE, parse(OK_HEAD .. line .. eol .. "Content-Length: 0\r\n\r\n"))
      assert.same(LINE_TOO_LARGE, exchange(bytewise(OK_HEAD .. line .. eol .. "\r\n")))
    end
  end)

  it("applies the line limit to the status line", function()
    assert.is_nil(parse("HTTP/1.1 200 " .. ("r"):rep(MAX_LINE - 13) .. "\r\nContent-Length: 0\r\n\r\n").err)
    assert.same(LINE_TOO_LARGE, parse("HTTP/1.1 200 " .. ("r"):rep(MAX_LINE - 12) .. "\r\n\r\n"))
  end)

  it("takes a header block of exactly MAX_HEAD_BYTES and refuses one byte more", function()
    -- Each line counts its length + 2 (CRLF): 256 lines of 1022 bytes.
    local lines = {}
    for i = 1, MAX_HEAD / 1024 do lines[i] = ("X-%03d: "):format(i) .. ("v"):rep(1022 - 7) end
    local block = table.concat(lines, "\r\n") .. "\r\n"
    assert.equal(MAX_HEAD, #block)
    local o = parse(OK_HEAD .. block .. "\r\n")
    assert.is_nil(o.err)
    assert.equal(1015, #o.headers["x-256"])
    assert.same(HEAD_TOO_LARGE, parse(OK_HEAD .. "X: 1\r\n" .. block .. "\r\n"))
    assert.same(HEAD_TOO_LARGE, parse(OK_HEAD .. block .. "X\r\n\r\n"))
  end)

  it("refuses an endless header block after MAX_HEAD_BYTES", function()
    local pieces = { OK_HEAD }
    for i = 1, 10000 do pieces[#pieces + 1] = ("X-%d: %s\r\n"):format(i, ("v"):rep(100)) end
    local recv, stats = feeder(pieces)
    assert.same(HEAD_TOO_LARGE.err, select(2, http1.read_head(http1.reader(recv, "GET"))))
    assert.is_true(stats.handed <= #OK_HEAD + MAX_HEAD + 120)
  end)

  it("refuses a 64 MB line arriving in 64 KiB pieces after reading at most MAX_LINE_BYTES + 64 KiB", function()
    local piece = ("a"):rep(65536)
    for _, prefix in ipairs { "HTTP/1.1 200 ", OK_HEAD .. "X-Big: ", OK_HEAD .. "X: 1\r\n" } do
      local n = 0
      local stats = { handed = 0 }
      local r = http1.reader(function()
        n = n + 1
        if n > 1024 then return nil, "closed" end
        local data = n == 1 and prefix .. piece or piece
        stats.handed = stats.handed + #data
        return data
      end, "GET")
      assert.same(LINE_TOO_LARGE.err, select(2, http1.read_head(r)))
      assert.is_true(stats.handed <= MAX_LINE + 65536 + #prefix, prefix)
    end
  end)

  it("applies the line limit to chunk-size lines and the head limit to trailers", function()
    local head = OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n"
    assert.same({ kind = "too_large", message = ("a response line is longer than %d bytes"):format(MAX_LINE) },
      parse(head .. "5;" .. ("e"):rep(MAX_LINE) .. "\r\nhello\r\n0\r\n\r\n").err)
    local o = parse(head .. "5;" .. ("e"):rep(MAX_LINE - 2) .. "\r\nhello\r\n0\r\n\r\n")
    assert.equal("hello", o.body)
    local trailers = {}
    for i = 1, 300 do trailers[i] = ("T-%d: %s\r\n"):format(i, ("t"):rep(1000)) end
    assert.same({ kind = "too_large", message = ("response headers exceed %d bytes"):format(MAX_HEAD) },
      parse(head .. "0\r\n" .. table.concat(trailers) .. "\r\n").err)
  end)
end)

describe("http1 body framing", function()
  local function with_length(value, body)
    return parse(OK_HEAD .. "Content-Length: " .. value .. "\r\n\r\n" .. body)
  end
  local MALFORMED_LENGTH = { kind = "protocol", message = "malformed Content-Length" }
  local SHORT = { kind = "protocol", message = "the connection closed before the response was complete" }

  it("reads a Content-Length body", function()
    assert.same({ status = 200, version = "1.1", body = "hello", reusable = true,
                  headers = { ["content-length"] = "5" } }, with_length("5", "hello"))
    assert.equal("", with_length("0", "").body)
    assert.equal("hello", with_length(" 5 ", "hello").body)
    assert.equal("hello", with_length("000000000000005", "hello").body)   -- 15 digits
  end)

  it("refuses a malformed, conflicting or repeated Content-Length", function()
    -- http-parser refuses repeats of one value too, which libcurl reads (README).
    for _, value in ipairs { "5, 6", "-1", "abc", "+5", "5.0", "0x5", "1234567890123456", "5,,5", "5 5", "",
                             "5, 5", " 5 ,5 " } do
      assert.same(MALFORMED_LENGTH, with_length(value, "hello").err, value)
    end
    assert.same(MALFORMED_LENGTH, parse(OK_HEAD .. "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello").err)
    assert.same(MALFORMED_LENGTH, parse(OK_HEAD .. "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello").err)
  end)

  it("says protocol when the body is shorter than its Content-Length", function()
    local o = with_length("10", "hello")
    assert.same(SHORT, o.err)
    assert.equal("hello", o.body)
    assert.same(SHORT, with_length("999999999999999", "x").err)
  end)

  it("reads a chunked body: extensions, upper-case hex, trailers dropped", function()
    local o = parse(OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n"
      .. "5;name=value\r\nhello\r\n1 ; a=b\r\n,\r\nA\r\n0123456789\r\n00000000000001\r\n!\r\n"
      .. "0\r\nX-Trailer: dropped\r\nExpires: never\r\n\r\n")
    assert.same({ status = 200, version = "1.1", body = "hello,0123456789!", reusable = true,
                  headers = { ["transfer-encoding"] = "chunked" } }, o)
    assert.equal("ab", parse(OK_HEAD .. "Transfer-Encoding: Chunked\n\n2\nab\n0\n\n").body)
    -- Transfer-Encoding wins over Content-Length.
    assert.equal("ab", parse(OK_HEAD .. "Content-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "2\r\nab\r\n0\r\n\r\n").body)
  end)

  it("refuses a malformed chunk size or a chunk without CRLF after its data", function()
    local head = OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n"
    local bad_size = { kind = "protocol", message = "malformed chunk size" }
    for _, line in ipairs { "zz", "-2", "+2", "0x2", " 2", "", "ffffffffffffffff", "100000000000000", "2\t" } do
      assert.same(bad_size, parse(head .. line .. "\r\nab\r\n0\r\n\r\n").err, line)
    end
    -- After the size and a blank, the rest of the line is an extension, as libcurl reads it.
    assert.equal("ab", parse(head .. "2 x\r\nab\r\n0\r\n\r\n").body)
    local no_crlf = { kind = "protocol", message = "malformed chunk (no CRLF after its data)" }
    assert.same(no_crlf, parse(head .. "2\r\nabc\r\n0\r\n\r\n").err)
    assert.same(no_crlf, parse(head .. "2\r\nab  \r\n0\r\n\r\n").err)
    assert.same(no_crlf, parse(head .. "2\r\nabX\n0\r\n\r\n").err)
    assert.same(SHORT, parse(head .. "2\r\nab").err)
    assert.same(SHORT, parse(head .. "2\r\nab\r\n").err)
    assert.same(SHORT, parse(head .. "2\r\nab\r\n0\r\n").err)
    assert.same(SHORT, parse(head .. "2\r\na").err)
  end)

  it("reads leading zeros in a chunk size, as libcurl does", function()
    local head = OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n"
    assert.equal("ab", parse(head .. "000000000000002\r\nab\r\n00\r\n\r\n").body)
  end)

  it("refuses any Transfer-Encoding but a lone chunked (identity is none)", function()
    for _, te in ipairs { "gzip", "chunked, gzip", "" } do
      assert.same({ kind = "protocol", message = "unsupported Transfer-Encoding: " .. te },
        parse(OK_HEAD .. "Transfer-Encoding: " .. te .. "\r\n\r\n0\r\n\r\n").err, te)
    end
    -- A coding under the chunks: kind decode, not retried, as libcurl.
    for _, te in ipairs { "gzip, chunked", "chunked, chunked" } do
      assert.same({ kind = "decode", message = "unsupported Transfer-Encoding: " .. te, final = true },
        parse(OK_HEAD .. "Transfer-Encoding: " .. te .. "\r\n\r\n0\r\n\r\n").err, te)
    end
    assert.equal("hello", parse(OK_HEAD .. "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello").body)
    assert.same({ kind = "protocol", message = "unsupported Transfer-Encoding: chunked, gzip" },
      parse(OK_HEAD .. "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n").err)
  end)

  it("reads no body after HEAD, 204 and 304, whatever the headers say", function()
    local o = parse(OK_HEAD .. "Content-Length: 5\r\n\r\n", "HEAD")
    assert.same({ body = "", reusable = true }, { body = o.body, reusable = o.reusable })
    o = parse(OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n", "HEAD")
    assert.same({ body = "", reusable = true }, { body = o.body, reusable = o.reusable })
    for _, status in ipairs { "204 No Content", "304 Not Modified" } do
      o = parse("HTTP/1.1 " .. status .. "\r\nContent-Length: 5\r\n\r\n")
      assert.same({ body = "", reusable = true }, { body = o.body, reusable = o.reusable })
      o = parse("HTTP/1.1 " .. status .. "\r\n\r\n")
      assert.same({ body = "", reusable = true }, { body = o.body, reusable = o.reusable })
    end
  end)

  it("reads a close-delimited body to the end; the connection is not reusable", function()
    assert.same({ status = 200, version = "1.0", headers = {}, body = "all of it\r\n", reusable = false },
      parse("HTTP/1.0 200 OK\r\n\r\nall of it\r\n"))
    assert.same({ status = 200, version = "1.1", headers = {}, body = "abc", reusable = false },
      exchange { "HTTP/1.1 200 OK\r\n\r\na", "b", "c" })
    assert.same({ status = 500, version = "1.1", headers = {}, body = "", reusable = false },
      parse("HTTP/1.1 500 Oops\r\n\r\n"))
  end)

  it("does not reuse a connection with bytes after the response", function()
    local o = parse(OK_HEAD .. "Content-Length: 2\r\n\r\nokEXTRA")
    assert.same({ body = "ok", reusable = false }, { body = o.body, reusable = o.reusable })
    o = parse(OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert.same({ body = "ok", reusable = false }, { body = o.body, reusable = o.reusable })
    o = parse("HTTP/1.1 204 No Content\r\n\r\nX")
    assert.same({ body = "", reusable = false }, { body = o.body, reusable = o.reusable })
  end)
end)

describe("http1 read errors", function()
  local TIMEOUT = { kind = "timeout", message = "timed out reading the response" }
  local NO_RESPONSE = { kind = "network", message = "the server closed the connection without a response" }
  local SHORT = { kind = "protocol", message = "the connection closed before the response was complete" }

  it("maps timeout to kind timeout, wherever it happens", function()
    for _, s in ipairs { "", "HTTP/1.1 2", OK_HEAD, OK_HEAD .. "Content-Length: 5\r\n\r\nab",
                         OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n5\r\nab", "HTTP/1.0 200 OK\r\n\r\nabc" } do
      assert.same(TIMEOUT, parse(s, "GET", "timeout").err, s)
    end
  end)

  it("maps closed before any status line to network, after it to protocol", function()
    assert.same(NO_RESPONSE, parse("").err)
    assert.same(NO_RESPONSE, parse("HTTP/1.1 200 O").err)
    assert.same(NO_RESPONSE, parse("HTTP/1.1 100 Continue\r\n\r\n").err)
    assert.same(SHORT, parse(OK_HEAD).err)
    assert.same(SHORT, parse(OK_HEAD .. "X-A: 1\r\n").err)
    assert.same(SHORT, parse(OK_HEAD .. "Content-Length: 5\r\n\r\nab").err)
    assert.same(SHORT, parse(OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n5\r\nab").err)
  end)

  it("maps other errors to network", function()
    assert.same({ kind = "network", message = "reading the response failed: connection reset by peer" },
      parse(OK_HEAD .. "Content-Length: 5\r\n\r\nab", "GET", "connection reset by peer").err)
    assert.same({ kind = "network", message = "reading the response failed: connection reset by peer" },
      parse("", "GET", "connection reset by peer").err)
  end)

  it("hands deliver's own error back unchanged", function()
    for _, s in ipairs { OK_HEAD .. "Content-Length: 5\r\n\r\nhello", "HTTP/1.0 200 OK\r\n\r\nhello",
                         OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" } do
      local r = http1.reader(feeder { s }, "GET")
      local status, headers = http1.read_head(r)
      local mine = { kind = "sink", anything = {} }
      local ok, err = http1.read_body(r, "GET", status, headers, function() return nil, mine end)
      assert.is_nil(ok)
      assert.equal(mine, err)
    end
  end)
end)

describe("http1 parser split invariance", function()
  local responses = {
    OK_HEAD .. "Content-Length: 5\r\nX-A: 1\r\nx-a: 2\r\nX-Fold: a\r\n b\r\n\r\nhello",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n5;ext\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\n",
    OK_HEAD .. "Transfer-Encoding: chunked\n\n3\nabc\n0\n\n",
    "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nclose delimited\r\n\r\n",
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    OK_HEAD .. "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
    -- invalid ones
    OK_HEAD .. "Content-Length: 5, 5\r\n\r\nhello",
    "HTTP/2 200\r\n\r\n",
    "HTTP/1.1 2x0 OK\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
    OK_HEAD .. "Content-Length: 10\r\n\r\nshort",
    OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
    OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    OK_HEAD .. "Transfer-Encoding: gzip, chunked\r\n\r\n",
    OK_HEAD .. "X-A: 1\r\n",
    "HTTP/1.1 20",
    "",
  }

  -- Every split into two pieces, the bytes one by one, and the whole.
  local function splits(s)
    local all = { { s }, bytewise(s) }
    for i = 1, #s - 1 do all[#all + 1] = { s:sub(1, i), s:sub(i + 1) } end
    return all
  end

  it("gives the same outcome however the bytes arrive", function()
    for _, s in ipairs(responses) do
      local expect = exchange { s }
      for _, pieces in ipairs(splits(s)) do
        assert.same(expect, exchange(pieces), s .. " in " .. #pieces .. " pieces")
      end
    end
  end)

  it("gives the same outcome for a header line at the limit however it is cut", function()
    for _, extra in ipairs { 0, 1 } do
      local s = OK_HEAD .. "X-Big: " .. ("a"):rep(MAX_LINE - 7 + extra) .. "\r\nContent-Length: 1\r\n\r\n!"
      local expect = exchange { s }
      for _, at in ipairs { 1, #OK_HEAD, #OK_HEAD + 1, #OK_HEAD + MAX_LINE - 1, #OK_HEAD + MAX_LINE,
                            #OK_HEAD + MAX_LINE + 1, #OK_HEAD + MAX_LINE + 2, #s - 1 } do
        assert.same(expect, exchange { s:sub(1, at), s:sub(at + 1) }, extra .. " at " .. at)
      end
      -- and in 1000-byte pieces
      local pieces = {}
      for i = 1, #s, 1000 do pieces[#pieces + 1] = s:sub(i, i + 999) end
      assert.same(expect, exchange(pieces))
    end
  end)
end)

describe("http1.decoder", function()
  it("decodes a gzip body", function()
    for _, coding in ipairs { "gzip", "GZIP", " x-gzip " } do
      local inflater = http1.decoder({ ["content-encoding"] = coding }, 1000)
      local out = {}
      for i = 1, #GZ do out[#out + 1] = assert(inflater:update(GZ:sub(i, i))) end
      assert.is_true(inflater:finish())
      assert.equal(GZ_TEXT, table.concat(out))
      inflater:close()
    end
  end)

  it("takes any limit the client accepts, however large", function()
    for _, limit in ipairs { 2 ^ 53, 2 ^ 60, 2 ^ 62 } do
      local inflater = http1.decoder({ ["content-encoding"] = "gzip" }, limit)
      assert.equal(GZ_TEXT, inflater:update(GZ))
      assert.is_true(inflater:finish())
      inflater:close()
    end
  end)

  it("is false for no coding or identity", function()
    assert.is_false(http1.decoder({}, 1000))
    assert.is_false(http1.decoder({ ["content-encoding"] = "identity" }, 1000))
    assert.is_false(http1.decoder({ ["content-encoding"] = " Identity " }, 1000))
    assert.is_false(http1.decoder({ ["content-encoding"] = "" }, 1000))
  end)

  it("skips identity in a list of codings", function()
    for _, coding in ipairs { "gzip, identity", "identity, gzip", "identity", "identity, identity" } do
      local inflater = http1.decoder({ ["content-encoding"] = coding }, 1000)
      assert.equal(coding:find("gzip") and "userdata" or "boolean", type(inflater), coding)
      if inflater then inflater:close() end
    end
  end)

  it("refuses a coding it does not decode with kind decode", function()
    for _, coding in ipairs { "br", "compress", "zstd", "gzip, br", "gzip, gzip" } do
      local inflater, err = http1.decoder({ ["content-encoding"] = coding }, 1000)
      assert.is_nil(inflater)
      assert.same({ kind = "decode", message = "unsupported Content-Encoding: " .. coding }, err)
    end
  end)
end)

describe("http1.parse_url and request_text", function()
  it("splits http(s) URLs", function()
    assert.same({ scheme = "https", host = "api.truto.one", port = 443, target = "/a?b=1", host_header = "api.truto.one",
                  ip = false }, http1.parse_url("https://api.truto.one/a?b=1#frag"))
    assert.same({ scheme = "http", host = "h", port = 8080, target = "/?q", host_header = "h:8080", ip = false },
      http1.parse_url("HTTP://h:8080?q"))
    assert.same({ scheme = "http", host = "10.0.0.5", port = 80, target = "/", host_header = "10.0.0.5", ip = true },
      http1.parse_url("http://10.0.0.5:80"))
    assert.same({ scheme = "https", host = "::1", port = 8443, target = "/x", host_header = "[::1]:8443", ip = true },
      http1.parse_url("https://[::1]:8443/x"))
    assert.equal("h:80", http1.parse_url("https://h:80/").host_header)
    for _, url in ipairs { "ftp://h/", "http://", "http://h:0/", "http://h:65536/", "http://u@h/", "h/x", "http://h:x/" } do
      assert.is_nil(http1.parse_url(url), url)
    end
  end)
end)

-- ---- perform over a fake cosocket -----------------------------------------

-- A fake clock and socket: receiveany hands out script's pieces (a string
-- is cut into pieces of `step` bytes), advancing the clock by `tick` per
-- call; every call is logged.
local function fake(script, opts)
  opts = opts or {}
  local clock = { t = 0 }
  local sock = { log = {}, sent = {}, timeouts = {}, calls = 0, closed = false, kept = nil }
  local pieces = script
  if type(script) == "string" then
    pieces = {}
    local step = opts.step or #script
    for i = 1, #script, math.max(step, 1) do pieces[#pieces + 1] = script:sub(i, i + step - 1) end
  end
  local i = 0
  function sock.settimeout(_, ms)
    sock.timeouts[#sock.timeouts + 1] = { ms = ms, t = clock.t }
  end
  function sock.connect(_, host, port, o)
    sock.log[#sock.log + 1] = "connect"
    sock.connected = { host = host, port = port, pool = o.pool }
    if opts.connect_error then return nil, opts.connect_error end
    return 1
  end
  function sock.getreusedtimes() return opts.reused or 0 end
  function sock.sslhandshake(_, session, name, verify)
    sock.log[#sock.log + 1] = "sslhandshake"
    sock.handshake = { session = session, name = name, verify = verify }
    if opts.tls_error then return nil, opts.tls_error end
    return { session = true }
  end
  function sock.send(_, data)
    sock.log[#sock.log + 1] = "send"
    sock.sent[#sock.sent + 1] = data
    return #data
  end
  function sock.receiveany(_, max)
    sock.log[#sock.log + 1] = "receiveany"
    sock.calls = sock.calls + 1
    assert(max == 65536)
    clock.t = clock.t + (opts.tick or 0)
    i = i + 1
    local piece = pieces[i]
    if piece == nil then return nil, opts.final_err or "closed" end
    return piece
  end
  function sock.close()
    sock.log[#sock.log + 1] = "close"
    sock.closed = true
    return 1
  end
  function sock.setkeepalive(_, ms, size)
    sock.log[#sock.log + 1] = "setkeepalive"
    sock.kept = { ms = ms, size = size }
    return 1
  end
  local env = {
    tcp = function() return sock end,
    now = function() return clock.t end,
    pool = "truto",
    verify_ip = function(session, ip)
      sock.verified_ip = ip
      if opts.ip_error then return nil, opts.ip_error end
      return session
    end,
  }
  return env, sock, clock
end

local function call(overrides)
  local c = { timeout = 10, connect_timeout = 5, max_response_bytes = 1000 }
  for k, v in pairs(overrides or {}) do c[k] = v end
  return c
end

local function get(url, headers) return { method = "GET", url = url or "http://h/x", headers = headers or {} } end

-- The request's bytes and its header lines after the request line.
local function sent_lines(sock)
  local text = table.concat(sock.sent)
  local head = text:match("^(.-)\r\n\r\n")
  local lines = {}
  for line in (head .. "\r\n"):gmatch("(.-)\r\n") do lines[#lines + 1] = line end
  return lines, text
end

local function count(lines, name)
  local n = 0
  for _, line in ipairs(lines) do
    if line:lower():match("^([^:]+):") == name then n = n + 1 end
  end
  return n
end

local function keep_order(sock)
  local seen = {}
  for _, what in ipairs(sock.log) do
    if what == "close" or what == "setkeepalive" then seen[#seen + 1] = what end
  end
  return seen
end

describe("http1.perform", function()
  local RESPONSE = OK_HEAD .. "Content-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"

  it("writes the request and reads the answer", function()
    local env, sock = fake(RESPONSE)
    local status, headers, body, info = http1.perform(env, get("http://h:8080/a/b?c=1#f", { "X-A: 1" }), call())
    assert.equal(200, status)
    assert.same({ ["content-length"] = "5", ["content-type"] = "text/plain" }, core.header_table(headers))
    assert.equal("hello", body)
    assert.same({ http_version = "1.1", total_time = 0, reused = false, size_download = 5 }, info)
    local lines, text = sent_lines(sock)
    assert.equal(#text, #table.concat(lines, "\r\n") + 4)
    assert.equal("GET /a/b?c=1 HTTP/1.1", table.remove(lines, 1))
    table.sort(lines)
    assert.same({ "Accept-Encoding: gzip, deflate", "Host: h:8080", "X-A: 1" }, lines)
    assert.same({ host = "h", port = 8080, pool = "truto:http:h:8080:verify" }, sock.connected)
    assert.same({ "connect", "send", "receiveany", "setkeepalive" }, sock.log)
    assert.same({ ms = 60000, size = 64 }, sock.kept)
  end)

  it("writes Host without the default port", function()
    for url, host in pairs { ["http://example.com:80/x"] = "example.com", ["https://example.com:443/x"] = "example.com",
                             ["http://Example.com/x"] = "Example.com", ["https://example.com:80/x"] = "example.com:80",
                             ["http://example.com:8080"] = "example.com:8080", ["http://[::1]:8080/"] = "[::1]:8080",
                             ["http://[::1]/"] = "[::1]", ["http://10.1.2.3:80/"] = "10.1.2.3" } do
      local env, sock = fake(RESPONSE)
      assert.equal(200, http1.perform(env, get(url), call()))
      local lines = sent_lines(sock)
      assert.equal(1, count(lines, "host"), url)
      assert.truthy(lines[2] == "Host: " .. host or lines[3] == "Host: " .. host, url)
    end
  end)

  it("writes Content-Length: 0 for POST, PUT and PATCH without a body, none for GET or DELETE", function()
    for _, method in ipairs { "POST", "PUT", "PATCH", "GET", "DELETE", "HEAD" } do
      local env, sock = fake(RESPONSE)
      http1.perform(env, { method = method, url = "http://h/", headers = {} }, call())
      local lines, text = sent_lines(sock)
      local bodiless = method == "GET" or method == "DELETE" or method == "HEAD"
      assert.equal(bodiless and 0 or 1, count(lines, "content-length"), method)
      if not bodiless then assert.truthy(text:find("\r\nContent-Length: 0\r\n", 1, true), method) end
      assert.equal("\r\n\r\n", text:sub(-4), method)
    end
    local env, sock = fake(RESPONSE)
    http1.perform(env, { method = "DELETE", url = "http://h/", headers = {}, body = "{}" }, call())
    local _, text = sent_lines(sock)
    local tail = "\r\nContent-Length: 2\r\n\r\n{}"
    assert.equal(tail, text:sub(-#tail))
  end)

  it("never writes the lines it owns twice", function()
    -- core.build_request refuses the framing lines; Accept-Encoding is the engine's own.
    for _, name in ipairs { "Content-Length", "transfer-encoding", "Connection", "HOST" } do
      assert.has_error(function()
        core.build_request { method = "POST", base_url = "http://h", path = { "x" }, headers = { [name] = "1" } }
      end)
    end
    local req = core.build_request { method = "POST", base_url = "http://h", path = { "x" }, body = { a = 1 },
                                     headers = { ["ACCEPT-ENCODING"] = "br", ["X-Other"] = "1" } }
    local env, sock = fake(RESPONSE)
    assert.equal(200, http1.perform(env, req, call()))
    local lines, text = sent_lines(sock)
    for _, name in ipairs { "content-length", "accept-encoding", "host", "content-type", "x-other" } do
      assert.equal(1, count(lines, name), name)
    end
    assert.equal(0, count(lines, "transfer-encoding"))
    assert.equal(0, count(lines, "connection"))
    assert.truthy(text:find("\r\nAccept-Encoding: gzip, deflate\r\n", 1, true))
    local tail = "\r\nContent-Length: " .. #req.body .. "\r\n\r\n" .. req.body
    assert.equal(tail, text:sub(-#tail))
    -- a caller's Accept-Encoding line, in any case or form, is dropped
    env, sock = fake(RESPONSE)
    http1.perform(env, get("http://h/", { "accept-encoding: br", "Accept-Encoding;", "X: 1" }), call())
    lines = sent_lines(sock)
    assert.equal(1, count(lines, "accept-encoding"))
    assert.equal(1, count(lines, "x"))
  end)

  it("keeps the connection only when reusable, over HTTP/1.1, without Connection: close", function()
    local cases = {
      { RESPONSE, { "setkeepalive" } },
      { RESPONSE:gsub("HTTP/1.1", "HTTP/1.0"), { "close" } },
      { OK_HEAD .. "Connection: close\r\nContent-Length: 0\r\n\r\n", { "close" } },
      { OK_HEAD .. "Connection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n", { "close" } },
      { OK_HEAD .. "Connection: keep-alive\r\nContent-Length: 0\r\n\r\n", { "setkeepalive" } },
      { OK_HEAD .. "\r\nclose delimited", { "close" } },
      { RESPONSE .. "EXTRA", { "close" } },
      { "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", { "setkeepalive" } },
      { OK_HEAD .. "Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", { "setkeepalive" } },
    }
    for _, c in ipairs(cases) do
      local env, sock = fake(c[1])
      assert.is_number(http1.perform(env, get(), call()))
      assert.same(c[2], keep_order(sock), c[1])
    end
    local env, sock = fake(RESPONSE)
    env.keepalive_ms, env.pool_size = 1234, 7
    http1.perform(env, get(), call())
    assert.same({ ms = 1234, size = 7 }, sock.kept)
  end)

  it("closes the connection on every error", function()
    for _, s in ipairs { "", "HTTP/2 200\r\n\r\n", OK_HEAD .. "Content-Length: 9\r\n\r\nshort",
                         OK_HEAD .. "Content-Encoding: br\r\nContent-Length: 0\r\n\r\n" } do
      local env, sock = fake(s)
      local status, err = http1.perform(env, get(), call())
      assert.is_nil(status)
      assert.is_string(err.kind)
      assert.same({ "close" }, keep_order(sock), s)
    end
  end)

  it("holds one deadline over a trickle of bytes", function()
    local env, sock, clock = fake(RESPONSE, { step = 1, tick = 0.3 })
    local status, err = http1.perform(env, get(), call { timeout = 1 })
    assert.is_nil(status)
    assert.same({ kind = "timeout", message = "timed out reading the response" }, err)
    assert.is_true(clock.t >= 1 and clock.t <= 1.3 + 1e-9, "fake time " .. clock.t)
    assert.equal(4, sock.calls)
    assert.same({ "close" }, keep_order(sock))
  end)

  it("never sets a socket timeout longer than the time left", function()
    for _, timeout in ipairs { 1, 2.5, 0.05 } do
      local env, sock = fake(RESPONSE, { step = 1, tick = 0.3 })
      http1.perform(env, get("https://h/"), call { timeout = timeout, connect_timeout = 60 })
      assert.is_true(#sock.timeouts >= 2)
      for _, s in ipairs(sock.timeouts) do
        assert.is_true(s.ms >= 1 and s.ms <= math.max(1, (timeout - s.t) * 1000 + 1e-6),
          ("settimeout(%s) at %s, timeout %s"):format(s.ms, s.t, timeout))
      end
    end
    local env, sock = fake(RESPONSE)
    http1.perform(env, get(), call { timeout = 10, connect_timeout = 2 })
    assert.equal(2000, sock.timeouts[1].ms)
  end)

  it("sends a large body in pieces, each within the time left", function()
    local body = ("b"):rep(150000)
    local env, sock, clock = fake(RESPONSE)
    local send = sock.send
    sock.send = function(self, data) clock.t = clock.t + 0.1; return send(self, data) end
    assert.equal(200, http1.perform(env, { method = "PUT", url = "http://h/", headers = {}, body = body }, call()))
    local text = table.concat(sock.sent)
    assert.equal(body, text:sub(-#body))
    assert.is_true(#sock.sent >= 3)
    for _, piece in ipairs(sock.sent) do assert.is_true(#piece <= 65536 + 200) end
    for _, s in ipairs(sock.timeouts) do assert.is_true(s.ms <= (10 - s.t) * 1000 + 1e-6) end

    env, sock, clock = fake(RESPONSE)
    send = sock.send
    sock.send = function(self, data) clock.t = clock.t + 0.6; return send(self, data) end
    assert.same({ kind = "timeout", message = "timed out sending the request" },
      select(2, http1.perform(env, { method = "PUT", url = "http://h/", headers = {}, body = body }, call { timeout = 1 })))
    assert.is_true(sock.closed)
    assert.equal(2, #sock.sent)

    env, sock = fake(RESPONSE)
    sock.send = function() return nil, "broken pipe" end
    assert.same({ kind = "network", message = "sending the request failed: broken pipe" },
      select(2, http1.perform(env, get(), call())))
    assert.is_true(sock.closed)
  end)

  it("maps connect and TLS failures", function()
    local env = fake(RESPONSE, { connect_error = "timeout" })
    assert.same({ kind = "timeout", message = "timed out connecting to h" }, select(2, http1.perform(env, get(), call())))
    env = fake(RESPONSE, { connect_error = "h could not be resolved (3: Host not found)" })
    assert.same({ kind = "connect", message = "cannot resolve h: h could not be resolved (3: Host not found)" },
      select(2, http1.perform(env, get(), call())))
    env = fake(RESPONSE, { connect_error = "connection refused" })
    assert.same({ kind = "connect", message = "connecting to h:80 failed: connection refused" },
      select(2, http1.perform(env, get(), call())))
    local sock
    env, sock = fake(RESPONSE, { tls_error = "certificate verify failed" })
    assert.same({ kind = "tls", message = "TLS handshake with h failed: certificate verify failed" },
      select(2, http1.perform(env, get("https://h/"), call())))
    assert.is_true(sock.closed)
    env = fake(RESPONSE, { tls_error = "timeout" })
    assert.same({ kind = "timeout", message = "timed out in the TLS handshake" },
      select(2, http1.perform(env, get("https://h/"), call())))
  end)

  it("sends SNI and checks names for a DNS name, checks an IP address itself, skips TLS on a reused connection", function()
    local env, sock = fake(RESPONSE)
    assert.equal(200, http1.perform(env, get("https://api.example.com/"), call()))
    assert.same({ name = "api.example.com", verify = true }, sock.handshake)
    assert.equal("truto:https:api.example.com:443:verify", sock.connected.pool)
    assert.is_nil(sock.verified_ip)

    env, sock = fake(RESPONSE)
    assert.equal(200, http1.perform(env, get("https://10.0.0.5:8443/"), call()))
    assert.same({ verify = true }, sock.handshake)
    assert.equal("10.0.0.5", sock.verified_ip)

    env, sock = fake(RESPONSE, { ip_error = "certificate does not match 10.0.0.5" })
    assert.same({ kind = "tls", message = "TLS handshake with 10.0.0.5 failed: certificate does not match 10.0.0.5" },
      select(2, http1.perform(env, get("https://10.0.0.5/"), call())))
    assert.is_true(sock.closed)

    env, sock = fake(RESPONSE)
    env.insecure = true
    assert.equal(200, http1.perform(env, get("https://10.0.0.5/"), call()))
    assert.same({ verify = false }, sock.handshake)
    assert.is_nil(sock.verified_ip)
    assert.equal("truto:https:10.0.0.5:443:insecure", sock.connected.pool)

    env, sock = fake(RESPONSE, { reused = 3 })
    local _, _, _, info = http1.perform(env, get("https://h/"), call())
    assert.is_nil(sock.handshake)
    assert.is_true(info.reused)
  end)

  it("refuses a URL it cannot use", function()
    local env, sock = fake(RESPONSE)
    assert.same({ kind = "protocol", message = "unsupported URL", final = true },
      select(2, http1.perform(env, get("ftp://h/"), call())))
    assert.same({}, sock.log)
  end)

  it("decodes a gzip body, counting max_response_bytes after decoding", function()
    local gz = OK_HEAD .. "Content-Encoding: gzip\r\nContent-Length: " .. #GZ .. "\r\n\r\n" .. GZ
    local env = fake(gz, { step = 7 })
    local status, _, body, info = http1.perform(env, get(), call())
    assert.equal(200, status)
    assert.equal(GZ_TEXT, body)
    assert.equal(#GZ_TEXT, info.size_download)
    env = fake(gz)
    assert.same({ kind = "too_large", message = "decoded response larger than 10 bytes" },
      select(2, http1.perform(env, get(), call { max_response_bytes = 10 })))
    env = fake(OK_HEAD .. "Content-Encoding: gzip\r\nContent-Length: 20\r\n\r\n" .. GZ:sub(1, 20))
    local _, err = http1.perform(env, get(), call())
    assert.equal("decode", err.kind)
    env = fake(OK_HEAD .. "Content-Encoding: br\r\nContent-Length: 0\r\n\r\n")
    assert.same({ kind = "decode", message = "unsupported Content-Encoding: br" },
      select(2, http1.perform(env, get(), call())))
  end)

  it("refuses a body over max_response_bytes", function()
    local env = fake(OK_HEAD .. "Content-Length: 11\r\n\r\nhello world")
    assert.same({ kind = "too_large", message = "response larger than 10 bytes" },
      select(2, http1.perform(env, get(), call { max_response_bytes = 10 })))
    env = fake(OK_HEAD .. "Content-Length: 10\r\n\r\nhelloworld")
    assert.equal("helloworld", select(3, http1.perform(env, get(), call { max_response_bytes = 10 })))
  end)

  it("hands a 2xx body to the sink, keeps any other", function()
    local got = {}
    local sink = function(piece) got[#got + 1] = piece; return true end
    local env = fake(RESPONSE, { step = 2 })
    local status, _, body = http1.perform(env, get(), call { sink = sink })
    assert.equal(200, status)
    assert.is_nil(body)
    assert.equal("hello", table.concat(got))
    got = {}
    env = fake("HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nbad")
    status, _, body = http1.perform(env, get(), call { sink = sink })
    assert.same({ 500, "bad", {} }, { status, body, got })
  end)

  it("raises a sink's error again after closing the socket", function()
    local boom = { "the sink's own error" }
    local env, sock = fake { OK_HEAD .. "Content-Length: 5\r\n\r\n", "he", "llo" }
    local ok, err = pcall(http1.perform, env, get(), call { sink = function() error(boom) end })
    assert.is_false(ok)
    assert.equal(boom, err)
    assert.is_true(sock.closed)
    assert.same({ "close" }, keep_order(sock))
    assert.equal(2, sock.calls)   -- the head, the first piece of the body, then no more reads

    env, sock = fake(RESPONSE)
    ok, err = pcall(http1.perform, env, get(), call { sink = function() error("plain", 0) end })
    assert.same({ false, "plain", true }, { ok, err, sock.closed })

    env, sock = fake(RESPONSE)
    ok, err = pcall(http1.perform, env, get(), call { sink = function() return false end })
    assert.same({ false, "truto: sink returned false", true }, { ok, err, sock.closed })
  end)
  it("sends a request that is not repeatable on a new connection, and closes it after", function()
    local env, sock = fake(RESPONSE)
    local status = http1.perform(env, { method = "POST", url = "http://h/x", headers = {}, body = "{}" },
      call { repeatable = false })
    assert.equal(200, status)
    assert.truthy(sock.connected.pool:find(":fresh:", 1, true), sock.connected.pool)
    assert.is_true(sock.closed)
    assert.is_nil(sock.kept)
  end)

  it("sends a repeatable request once more on a new connection when the pooled one is dead", function()
    local sockets = {}
    local function socket(reused, script)
      local env, sock = fake(script, { reused = reused })
      sockets[#sockets + 1] = sock
      return env, sock
    end
    local env = socket(1, {})                     -- pooled, closed before any answer
    local _, second = socket(0, RESPONSE)
    local n = 0
    env.tcp = function()
      n = n + 1
      return sockets[n]
    end
    local status, _, body = http1.perform(env, get(), call())
    assert.equal(200, status)
    assert.equal("hello", body)
    assert.equal(2, n)
    assert.truthy(second.connected.pool:find(":fresh:", 1, true))
    -- Not repeatable: the dead connection's error is the answer.
    sockets, n = {}, 0
    env = socket(1, {})
    socket(0, RESPONSE)
    env.tcp = function()
      n = n + 1
      return sockets[n]
    end
    local failed, err = http1.perform(env, get(), call { repeatable = false })
    assert.is_nil(failed)
    assert.equal("network", err.kind)
    assert.equal(1, n)
  end)

  it("decodes a gzip body for a sink in pieces of at most about 1 MiB, whatever one read holds", function()
    local zeros = assert(io.popen("head -c 33554432 /dev/zero | gzip -9 -c", "r"))
    local gz = zeros:read("*a")
    zeros:close()
    local largest, total = 0, 0
    local env = fake(OK_HEAD .. "Content-Encoding: gzip\r\nContent-Length: " .. #gz .. "\r\n\r\n" .. gz)
    local status = http1.perform(env, get(), call { max_response_bytes = 2 ^ 53, sink = function(piece)
      largest, total = math.max(largest, #piece), total + #piece
    end })
    assert.equal(200, status)
    assert.equal(33554432, total)
    assert.is_true(largest <= 1100 * 1024, "a piece of " .. largest .. " bytes")
  end)
end)

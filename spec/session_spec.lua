-- truto.curl_core.session: the libcurl session (csrc/session.c).
--
-- Argument checks and lifetime need no server.  The transfer tests talk over
-- loopback to a private nginx started here (plain HTTP on two ports and
-- HTTPS + HTTP/2 with a throwaway self-signed certificate), which gives
-- byte-exact control over replies: redirects, repeated and interim headers,
-- truncated and malformed replies, a gzip bomb (started, like the Truto
-- emulator of the end-to-end checks, with truto.emulator).
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local emulator = require "truto.emulator"
local redirect = require "truto.redirect"
local sh = require "spec.support.shell"
local scrubbed = require "spec.support.scrubbed"
local truto = require "truto"

local read_file, rss_kb = sh.read_file, sh.rss_kb

local NGINX_CONF = [[
@LOAD_MODULES@
worker_processes 1;
daemon on;
pid @PREFIX@/nginx.pid;
error_log @PREFIX@/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  default_type text/plain;
  types { application/json json; text/plain txt; }
  client_body_temp_path @PREFIX@/tmp;
  proxy_temp_path @PREFIX@/tmp;
  fastcgi_temp_path @PREFIX@/tmp;
  uwsgi_temp_path @PREFIX@/tmp;
  scgi_temp_path @PREFIX@/tmp;
  client_body_buffer_size 16m;
  client_max_body_size 16m;
  keepalive_requests 1000;
  lua_socket_log_errors off;

  init_by_lua_block {
    function echo()
      ngx.req.read_body()
      local h = ngx.req.get_headers()
      local function show(v)
        if v == nil then return "-" end
        if type(v) == "table" then return table.concat(v, "|") end
        return v
      end
      ngx.header["X-Method"] = ngx.req.get_method()
      ngx.header["X-Auth"] = show(h["authorization"])
      ngx.header["X-Cookie"] = show(h["cookie"])
      ngx.header["X-Content-Type"] = show(h["content-type"])
      ngx.header["X-Content-Length"] = show(h["content-length"])
      ngx.header["X-Transfer-Encoding"] = show(h["transfer-encoding"])
      ngx.header["X-Expect"] = show(h["expect"])
      ngx.header["X-Server"] = ngx.var.server_port
      ngx.print(ngx.req.get_body_data() or "")
    end
    function raw(reply)
      local sock = assert(ngx.req.socket(true))
      sock:send(reply)
    end
  }

  server {
    listen 127.0.0.1:@PORT@;
    root @PREFIX@/static;
    gzip on;
    gzip_types application/json;
    gzip_min_length 0;
    location = /echo { content_by_lua_block { echo() } }
    location = /delay {
      content_by_lua_block {
        ngx.sleep(tonumber(ngx.var.arg_ms) / 1000)
        ngx.say("late")
      }
    }
    location = /slow-body {
      content_by_lua_block {
        ngx.print(string.rep("x", 100)); ngx.flush(true)
        ngx.sleep(tonumber(ngx.var.arg_ms) / 1000)
        ngx.print("y")
      }
    }
    location = /drop { return 444; }
    location = /truncated {
      content_by_lua_block { raw("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a few bytes") }
    }
    location = /malformed {
      content_by_lua_block { raw("this is not HTTP at all\r\n\r\n") }
    }
    location = /headers {
      content_by_lua_block {
        raw("HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n" ..
            "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Dup: a\r\nx-dup: b\r\n" ..
            "Set-Cookie: c=1\r\nSET-COOKIE: d=2\r\nX-Spaces:   padded value  \r\n" ..
            "X-Empty:\r\nX-Fold: one\r\n  two \r\n: no name\r\nX-UPPER:  x  y\r\n" ..
            "Content-Length: 2\r\nConnection: close\r\n\r\nok")
      }
    }
    location = /unauthorized {
      content_by_lua_block {
        local token = (ngx.var.http_authorization or ""):match("^Bearer (.*)$") or ""
        ngx.status = 401
        ngx.header["WWW-Authenticate"] = 'Bearer error="invalid_token", token="' .. token .. '"'
        ngx.header["X-Echo-" .. token] = "1"
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"statusCode":401,"message":"no such token"}')
      }
    }
    location = /bad.json { return 200 '{"a":'; }
    location = /scalar.json { return 200 '"text"'; }
    location = /error.json { return 422 '{"error":"x"}'; }
    location = /problem { default_type application/problem+json; return 200 '{"type":"x"}'; }
    location = /untyped {
      content_by_lua_block { raw("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n [1,2,3]\n") }
    }
    location = /bomb.json { gzip_static always; gunzip off; types { } default_type application/json; }
    location = /same-origin { return 302 /echo; }
    location = /other-host { return 302 http://localhost:@PORT@/echo; }
    location = /other-port { return 307 http://127.0.0.1:@OTHER@/echo; }
    location = /to-https { return 302 https://127.0.0.1:@HTTPS@/echo; }
    location = /see-other { return 303 /echo; }
    location = /keep-method { return 308 /echo; }
    location = /loop { return 302 /loop; }
    location = /chain { return 302 /same-origin; }
    location = /ftp { return 302 ftp://127.0.0.1/x; }
    location = /with-body-redirect {
      content_by_lua_block {
        ngx.status = 302
        ngx.header["Location"] = "/echo"
        ngx.print(string.rep("redirect body ", 1000))
      }
    }
  }

  server {
    listen 127.0.0.1:@OTHER@;
    location = /echo { content_by_lua_block { echo() } }
  }

  server {
    listen 127.0.0.1:@HTTPS@ ssl http2;
    ssl_certificate @PREFIX@/cert.pem;
    ssl_certificate_key @PREFIX@/key.pem;
    location = /echo { content_by_lua_block { echo() } }
    location = /downgrade { return 302 http://127.0.0.1:@PORT@/echo; }
  }
}
]]

-- Static files and a self-signed certificate in dir.
-- 4 MB of JSON broken 2 MB in: what decode_json gives back of it is its start.
local BROKEN_HEAD = "[" .. ('{"n":1},'):rep(262144) .. '{"n":'
local BROKEN_JSON = BROKEN_HEAD .. "@}," .. BROKEN_HEAD:sub(2) .. "1}]"

local function prepare(dir)
  assert(sh.run("mkdir -p " .. dir .. "/static " .. dir .. "/tmp && chmod 755 " .. dir ..
    " && chmod 777 " .. dir .. "/tmp"))
  assert(sh.run("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1" ..
    " -addext subjectAltName=IP:127.0.0.1 -keyout " .. dir .. "/key.pem -out " .. dir ..
    "/cert.pem >/dev/null 2>&1"), "openssl could not make a certificate")
  -- 50 MB to stream, 2 MB to refuse, and 64 MB of zeros gzipped (a bomb).
  assert(sh.run("head -c 52428800 /dev/zero | tr '\\0' 'a' > " .. dir .. "/static/big.txt"))
  assert(sh.run("head -c 2097152 /dev/zero > " .. dir .. "/static/two-mb.txt"))
  assert(sh.run("head -c 67108864 /dev/zero | gzip -9 > " .. dir .. "/static/bomb.json.gz"))
  assert(sh.write_file(dir .. "/static/data.json",
    "[" .. string.rep('{"name":"opportunity","amount":1},', 500) .. "{}]"))
  assert(sh.write_file(dir .. "/static/broken.json", BROKEN_JSON))
  return true
end

-- Ports: http (the handle's port), other = http + 1, https = http + 2.
local function start_nginx()
  local n = assert(emulator.nginx {
    text = NGINX_CONF, kind = "truto-session", attempts = 10, prepare = prepare,
    values = function(port) return { OTHER = tostring(port + 1), HTTPS = tostring(port + 2) } end,
  })
  n.dir, n.http, n.other, n.https = n.prefix, n.port, n.port + 1, n.port + 2
  n.base = "http://127.0.0.1:" .. n.http
  n.other_base = "http://127.0.0.1:" .. n.other
  n.https_base = "https://127.0.0.1:" .. n.https
  n.ca = n.dir .. "/cert.pem"
  return n
end

local function stop_nginx(n)
  if n then n:stop() end
end

describe("truto.curl_core.session", function()
  describe("options", function()
    it("takes no options, an empty table or every documented one", function()
      curl_core.session():close()
      curl_core.session{}:close()
      curl_core.session{
        timeout = 30, connect_timeout = 10, ca_file = "/nonexistent/ca.pem", ca_path = "/nonexistent",
        insecure = false, proxy = "http://127.0.0.1:3128", max_response_bytes = 1024,
        http2 = false,
      }:close()
    end)

    it("rejects unknown options and wrong types", function()
      assert.has_error(function() curl_core.session{ timeout = 1, tiemout = 2 } end,
        "truto: unknown session option 'tiemout'")
      assert.has_error(function() curl_core.session{ [1] = true } end)
      assert.has_error(function() curl_core.session("x") end)
      assert.has_error(function() curl_core.session{ timeout = "30" } end)
      assert.has_error(function() curl_core.session{ insecure = 1 } end)
      assert.has_error(function() curl_core.session{ http2 = "yes" } end)
      -- Redirects are the client's (lua/truto/redirect.lua), not a session's.
      assert.has_error(function() curl_core.session{ follow_redirects = true } end,
        "truto: unknown session option 'follow_redirects'")
      assert.has_error(function() curl_core.session{ proxy = 3128 } end)
      assert.has_error(function() curl_core.session{ ca_file = "" } end)
      assert.has_error(function() curl_core.session{ ca_file = "a\0b" } end)
    end)

    it("rejects zero, negative, NaN and infinite timeouts", function()
      for _, name in ipairs{ "timeout", "connect_timeout" } do
        for _, v in ipairs{ 0, -1, 0 / 0, math.huge, -math.huge } do
          local ok, err = pcall(curl_core.session, { [name] = v })
          assert.is_false(ok)
          assert.matches(name .. " must be a positive number of seconds", err, 1, true)
        end
      end
    end)

    it("rejects negative or fractional max_response_bytes", function()
      for _, v in ipairs{ -1, 1.5, 0 / 0, math.huge } do
        assert.has_error(function() curl_core.session{ max_response_bytes = v } end,
          "truto: max_response_bytes must be a non-negative integer")
      end
    end)
  end)

  describe("lifetime", function()
    it("closes idempotently and refuses to perform afterwards", function()
      local s = curl_core.session()
      assert.matches("^truto%.Session", tostring(s))
      s:close()
      s:close()
      assert.matches("closed", tostring(s))
      local ok, err = pcall(s.perform, s, { url = "http://127.0.0.1:1/" })
      assert.is_false(ok)
      assert.matches("session is closed", err, 1, true)
    end)

    it("shares one cleanup between close, __gc and __close", function()
      local mt = getmetatable(curl_core.session())
      assert.equal(mt.__gc, mt.__index.close)
      assert.equal(mt.__close, mt.__index.close)
      assert.equal("truto.Session", mt.__name)
    end)

    if _VERSION == "Lua 5.4" then
      it("is closed at the end of a to-be-closed scope (Lua 5.4)", function()
        local kept = assert(load([[
          local s <close> = (...).session()
          return s
        ]]))(curl_core)
        assert.matches("closed", tostring(kept))
      end)
    end

    it("survives garbage collection of many sessions", function()
      for _ = 1, 200 do curl_core.session() end
      collectgarbage()
      collectgarbage()
    end)

    it("raises on misuse of the methods", function()
      local s = curl_core.session()
      assert.has_error(function() s.perform({}, { url = "http://127.0.0.1:1/" }) end)
      assert.has_error(function() s.close("x") end)
      s:close()
    end)
  end)

  describe("request arguments", function()
    local s
    before_each(function() s = curl_core.session() end)
    after_each(function() s:close() end)

    local function rejects(req, message)
      local ok, err = pcall(s.perform, s, req)
      assert.is_false(ok)
      if message then assert.matches(message, err, 1, true) end
      return err
    end

    it("requires a table with an http(s) url", function()
      rejects(nil)
      rejects("http://127.0.0.1/")
      rejects({}, "request url must be a string")
      rejects({ url = "ftp://127.0.0.1/" }, "must start with http:// or https://")
      rejects({ url = "file:///etc/passwd" }, "must start with http:// or https://")
      rejects({ url = "http://127.0.0.1/a b" }, "spaces or control characters")
    end)

    it("rejects unknown fields", function()
      rejects({ url = "http://127.0.0.1:1/", tiemout = 1 }, "unknown request field 'tiemout'")
    end)

    it("checks method, headers, body, sink and per-call limits", function()
      local url = "http://127.0.0.1:1/"
      rejects({ url = url, method = "GE T" }, "HTTP token")
      rejects({ url = url, method = 1 }, "method must be a string")
      rejects({ url = url, headers = "Accept: x" }, "headers must be a table")
      rejects({ url = url, headers = { "Accept: x", 42 } }, "headers[2] must be a string")
      rejects({ url = url, headers = { "Accept" } }, "Name: value")
      rejects({ url = url, body = 42 }, "body must be a string, a truto.Body, a form or nil")
      rejects({ url = url, body = {} }, "body form must have a parts table")
      rejects({ url = url, body = { parts = { "x" } } }, "body part 1 must be a table")
      rejects({ url = url, body = { parts = { { data = "x" } } } }, "body part 1 must have header lines")
      rejects({ url = url, body = { parts = { { lines = { "A: b" } } } } }, "part 1 must have data or a path")
      rejects({ url = url, body = { parts = { { lines = { "A: b" }, path = "/x" } } } }, "the file's size in bytes")
      rejects({ url = url, method = "HEAD", body = "" }, "HEAD request cannot have a body")
      rejects({ url = url, sink = "f" }, "sink must be a function")
      rejects({ url = url, timeout = -1 }, "timeout must be a positive number")
      rejects({ url = url, timeout = 0 / 0 }, "timeout must be a positive number")
      rejects({ url = url, connect_timeout = 0 }, "connect_timeout must be a positive number")
      rejects({ url = url, max_response_bytes = -5 }, "max_response_bytes")
    end)

    it("never repeats a header line in its messages", function()
      local err = rejects({ url = "http://127.0.0.1:1/",
                            headers = { "Authorization: Bearer s3cr3t\r\nX-Evil: 1" } }, "CR, LF or NUL")
      assert.is_nil(err:find("s3cr3t", 1, true))
    end)
  end)

  describe("connection failures", function()
    it("reports a refused connection as kind connect", function()
      local s = curl_core.session{ connect_timeout = 2 }
      local status, err = s:perform{ url = "http://127.0.0.1:1/", headers = { "Authorization: Bearer s3cr3t" } }
      assert.is_nil(status)
      assert.equal("connect", err.kind)
      assert.equal(7, err.curl_code)
      assert.is_string(err.message)
      assert.is_nil(err.message:find("s3cr3t", 1, true))
      -- The session stays usable after a failure.
      status, err = s:perform{ url = "http://127.0.0.1:1/" }
      assert.is_nil(status)
      assert.equal("connect", err.kind)
      s:close()
    end)
  end)

  describe("over loopback (private nginx)", function()
    local srv, s

    setup(function()
      srv = start_nginx()
    end)
    teardown(function()
      stop_nginx(srv)
    end)
    before_each(function() s = curl_core.session{ timeout = 10 } end)
    after_each(function() s:close() end)

    it("sends the body bytes exactly, for every method", function()
      local body = '{"name":"x","amount":1.5,"bytes":"\0\1\255"}'
      for _, method in ipairs{ "PATCH", "PUT", "POST", "DELETE" } do
        local status, headers, got, info = s:perform{
          method = method, url = srv.base .. "/echo?a=1",
          headers = { "Content-Type: application/json", "Accept: application/json" },
          body = body,
        }
        assert.equal(200, status)
        assert.equal(method, headers["x-method"])
        assert.equal(body, got)
        assert.equal(tostring(#body), headers["x-content-length"])
        assert.equal("application/json", headers["x-content-type"])
        assert.equal("-", headers["x-expect"])
        assert.equal("1.1", info.http_version)
      end
    end)

    it("sends an empty string body as Content-Length: 0", function()
      for _, method in ipairs{ "PATCH", "DELETE", "POST" } do
        local status, headers, got = s:perform{ method = method, url = srv.base .. "/echo", body = "" }
        assert.equal(200, status)
        assert.equal(method, headers["x-method"])
        assert.equal("0", headers["x-content-length"])
        assert.equal("", got)
      end
    end)

    it("sends no body and no made-up Content-Type without a body", function()
      local _, headers = s:perform{ method = "DELETE", url = srv.base .. "/echo" }
      assert.equal("DELETE", headers["x-method"])
      assert.equal("-", headers["x-content-length"])
      assert.equal("-", headers["x-content-type"])
      _, headers = s:perform{ method = "POST", url = srv.base .. "/echo" }
      assert.equal("0", headers["x-content-length"])
      assert.equal("-", headers["x-content-type"])
      local status, _, body = s:perform{ method = "HEAD", url = srv.base .. "/echo" }
      assert.equal(200, status)
      assert.equal("", body)
      _, headers = s:perform{ url = srv.base .. "/echo" }
      assert.equal("GET", headers["x-method"])
    end)

    it("sends a large body", function()
      local body = string.rep("0123456789", 300000)
      local status, headers, got = s:perform{ method = "PUT", url = srv.base .. "/echo", body = body }
      assert.equal(200, status)
      assert.equal(tostring(#body), headers["x-content-length"])
      assert.is_true(body == got, "the body came back changed")
      assert.equal("-", headers["x-expect"])     -- no 100-continue round trip
    end)

    it("returns the final response's headers, lower-cased and joined", function()
      local status, headers, body = s:perform{ url = srv.base .. "/headers" }
      assert.equal(201, status, headers and headers.message)
      assert.equal("ok", body)
      assert.equal("a, b", headers["x-dup"])
      assert.equal("c=1, d=2", headers["set-cookie"])
      assert.equal("padded value", headers["x-spaces"])
      assert.equal("", headers["x-empty"])
      assert.equal("text/plain", headers["content-type"])
      assert.is_nil(headers["x-interim"])
      -- The block reads by name; header_table makes the table of every
      -- field, which holds what the block reads.
      local all = {
        ["content-type"] = "text/plain", ["x-dup"] = "a, b", ["set-cookie"] = "c=1, d=2",
        ["x-spaces"] = "padded value", ["x-empty"] = "", ["x-fold"] = "one two", ["x-upper"] = "x  y",
        ["content-length"] = "2", ["connection"] = "close",
      }
      local table_ = core.header_table(headers)
      assert.same(all, table_)
      assert.are_not.equal(table_, core.header_table(headers))   -- a new table each time
      for name, value in pairs(all) do assert.equal(value, headers[name], name) end
      assert.is_nil(headers["X-Dup"])     -- names are lower case, as in the table
      assert.is_nil(headers[1])
      assert.equal("userdata", type(headers))
    end)

    it("reaches the client as a header block that an error makes a table before scrubbing the token", function()
      local token = "lazy-header-token-5f3a"   -- lower case: header names are lower-cased
      local client = truto.new { token = token, base_url = srv.base, max_retries = 0 }
      local result, err = client:request { method = "GET", path = "/unauthorized" }
      client:close()
      assert.is_nil(result)
      assert.same({ "http", 401, "no such token" }, { err.kind, err.status, err.message })
      assert.equal("table", type(err.headers))
      assert.equal('Bearer error="invalid_token", token="[REDACTED]"', err.headers["www-authenticate"])
      assert.equal("1", err.headers["x-echo-[REDACTED]"])
      scrubbed.assert_clean(err, token)
    end)

    it("returns 4xx and 5xx as successes", function()
      local status, headers, body = s:perform{ url = srv.base .. "/missing" }
      assert.equal(404, status)
      assert.is_string(headers["content-type"])
      assert.matches("404", body)
    end)

    it("keeps the connection alive between calls", function()
      local _, _, _, first = s:perform{ url = srv.base .. "/echo" }
      assert.equal(1, first.new_connections)
      assert.equal("127.0.0.1", first.primary_ip)
      assert.equal(srv.http, first.primary_port)
      assert.equal(0, first.redirects)
      assert.is_number(first.total_time)
      assert.is_number(first.connect_time)
      for _ = 1, 5 do
        local status, _, _, info = s:perform{ method = "PATCH", url = srv.base .. "/echo", body = "{}" }
        assert.equal(200, status)
        assert.equal(0, info.new_connections)
      end
    end)

    it("decodes gzip", function()
      local status, headers, body, info = s:perform{ url = srv.base .. "/data.json" }
      assert.equal(200, status)
      assert.equal("gzip", headers["content-encoding"])
      assert.equal(read_file(srv.dir .. "/static/data.json"), body)
      assert.is_true(info.size_download < #body)
    end)

    it("stops a decompression bomb at max_response_bytes", function()
      local before = rss_kb()
      local status, err = s:perform{ url = srv.base .. "/bomb.json", max_response_bytes = 1024 * 1024 }
      assert.is_nil(status)
      assert.equal("too_large", err.kind)
      assert.matches("max_response_bytes", err.message)
      assert.is_true(rss_kb() - before < 16 * 1024)
      -- The same bomb, allowed: 64 MiB decoded from a tiny download.
      local total = 0
      local headers, info, _
      status, headers, _, info = s:perform{ url = srv.base .. "/bomb.json", max_response_bytes = 64 * 1024 * 1024,
                                            sink = function(c) total = total + #c end }
      assert.equal(200, status)
      assert.equal("gzip", headers["content-encoding"])
      assert.equal(64 * 1024 * 1024, total)
      assert.is_true(info.size_download < 1024 * 1024)
    end)

    it("refuses a body over max_response_bytes (session or call)", function()
      local status, err = s:perform{ url = srv.base .. "/two-mb.txt", max_response_bytes = 2097151 }
      assert.is_nil(status)
      assert.equal("too_large", err.kind)
      local small = curl_core.session{ max_response_bytes = 1000 }
      status, err = small:perform{ url = srv.base .. "/two-mb.txt" }
      assert.is_nil(status)
      assert.equal("too_large", err.kind)
      local body, _
      status, _, body = small:perform{ url = srv.base .. "/two-mb.txt", max_response_bytes = 2097152 }
      assert.equal(200, status)
      assert.equal(2097152, #body)
      small:close()
    end)

    it("streams 50 MB through a sink in constant memory", function()
      local total, calls = 0, 0
      local function stream()
        total, calls = 0, 0
        return s:perform{
          url = srv.base .. "/big.txt", max_response_bytes = 64 * 1024 * 1024,
          sink = function(chunk)
            -- The chunks are Lua strings: collected every 4 MB, so that what
            -- is measured is the session's memory, not the collector's pace.
            if total % (4 * 1024 * 1024) + #chunk >= 4 * 1024 * 1024 then collectgarbage() end
            total = total + #chunk
            calls = calls + 1
            assert(chunk:byte(1) == 97)
          end,
        }
      end
      -- A first stream takes the one-time growth (buffers, and under ASan its
      -- quarantine), so that what is measured is what a stream adds.
      stream()
      collectgarbage()
      local before = rss_kb()
      local status, headers, body, info = stream()
      collectgarbage()
      local grew = rss_kb() - before
      assert.equal(200, status)
      assert.is_nil(body)
      assert.equal(52428800, total)
      assert.is_true(calls > 1)
      assert.equal("52428800", headers["content-length"])
      assert.equal(52428800, info.size_download)
      assert.is_true(grew < 16 * 1024, "RSS grew by " .. grew .. " kB")
    end)

    it("counts sink bytes against max_response_bytes", function()
      local status, err = s:perform{ url = srv.base .. "/two-mb.txt", max_response_bytes = 1000,
                                     sink = function() end }
      assert.is_nil(status)
      assert.equal("too_large", err.kind)
    end)

    it("re-raises the sink's own error and stays usable", function()
      local marker = setmetatable({}, { __tostring = function() return "marker" end })
      local ok, err = pcall(s.perform, s, { url = srv.base .. "/big.txt", sink = function() error(marker) end })
      assert.is_false(ok)
      assert.equal(marker, err)
      ok, err = pcall(s.perform, s, { url = srv.base .. "/echo", body = "abc", method = "POST",
                                      sink = function() error("sink failed") end })
      assert.is_false(ok)
      assert.matches("sink failed", err)
      assert.equal(200, (s:perform{ url = srv.base .. "/echo" }))
    end)

    it("stops when the sink returns false or nil plus an error", function()
      local ok, err = pcall(s.perform, s, { url = srv.base .. "/big.txt", sink = function() return nil, "disk full" end })
      assert.is_false(ok)
      assert.equal("disk full", err)
      ok, err = pcall(s.perform, s, { url = srv.base .. "/big.txt", sink = function() return false end })
      assert.is_false(ok)
      assert.matches("sink returned false", err)
      -- A sink that returns a true value (file:write returns the file) carries on.
      local n = 0
      assert.equal(200, (s:perform{ url = srv.base .. "/two-mb.txt", sink = function(c) n = n + #c; return true end }))
      assert.equal(2097152, n)
    end)

    it("refuses re-entrant use of the session from its sink", function()
      local ok, err = pcall(s.perform, s, { url = srv.base .. "/echo", method = "POST", body = "x",
        sink = function() s:perform{ url = srv.base .. "/echo" } end })
      assert.is_false(ok)
      assert.matches("busy", err)
      ok, err = pcall(s.perform, s, { url = srv.base .. "/echo", method = "POST", body = "x",
        sink = function() s:close() end })
      assert.is_false(ok)
      assert.matches("cannot close", err)
      assert.equal(200, (s:perform{ url = srv.base .. "/echo" }))
    end)

    it("times out (total time, per-call override) with kind timeout", function()
      local status, err = s:perform{ url = srv.base .. "/delay?ms=3000", timeout = 0.3 }
      assert.is_nil(status)
      assert.equal("timeout", err.kind)
      assert.equal(28, err.curl_code)
      local quick = curl_core.session{ timeout = 0.3 }
      status, err = quick:perform{ url = srv.base .. "/slow-body?ms=3000" }
      assert.is_nil(status)
      assert.equal("timeout", err.kind)
      quick:close()
      assert.equal(200, (s:perform{ url = srv.base .. "/delay?ms=10" }))
    end)

    it("maps dropped, truncated and malformed replies", function()
      local status, err = s:perform{ url = srv.base .. "/drop" }
      assert.is_nil(status)
      assert.equal("network", err.kind)
      assert.equal(52, err.curl_code)
      status, err = s:perform{ url = srv.base .. "/truncated" }
      assert.is_nil(status)
      assert.equal("protocol", err.kind)
      assert.equal(18, err.curl_code)
      status, err = s:perform{ url = srv.base .. "/malformed" }
      assert.is_nil(status)
      assert.equal("protocol", err.kind)
    end)

    -- The handle is never reset: each request sets only what differs from
    -- the one before, so nothing of one request may reach the next.
    describe("one handle, request after request", function()
      local function echo(req)
        req.url = req.url or srv.base .. "/echo"
        local status, headers, body = s:perform(req)
        assert.equal(200, status)
        return headers, body
      end

      it("sends each request's own method and body, never the previous one's", function()
        local headers, body = echo{ method = "PATCH", headers = { "Content-Type: application/json" }, body = '{"a":1}' }
        assert.same({ "PATCH", "7", "application/json", '{"a":1}' },
          { headers["x-method"], headers["x-content-length"], headers["x-content-type"], body })
        headers, body = echo{}
        assert.same({ "GET", "-", "-", "" }, { headers["x-method"], headers["x-content-length"], headers["x-content-type"], body })
        headers, body = echo{ method = "POST", body = "abc" }
        assert.same({ "POST", "3", "-", "abc" }, { headers["x-method"], headers["x-content-length"], headers["x-content-type"], body })
        headers, body = echo{ method = "HEAD" }
        assert.same({ "HEAD", "" }, { headers["x-method"], body })
        headers, body = echo{ method = "PUT", body = "after head" }
        assert.same({ "PUT", "10", "after head" }, { headers["x-method"], headers["x-content-length"], body })
        headers, body = echo{ method = "DELETE" }
        assert.same({ "DELETE", "-", "" }, { headers["x-method"], headers["x-content-length"], body })
        headers, body = echo{ method = "HEAD" }
        assert.same({ "HEAD", "" }, { headers["x-method"], body })
        headers, body = echo{ method = "HEAD" }
        assert.same({ "HEAD", "" }, { headers["x-method"], body })
        headers, body = echo{ method = "POST" }
        assert.same({ "POST", "0", "" }, { headers["x-method"], headers["x-content-length"], body })
        -- A method too long to be remembered is set again every time.
        for _ = 1, 2 do
          headers = echo{ method = "VERYLONGMETHODNAME" }
          assert.equal("VERYLONGMETHODNAME", headers["x-method"])
        end
        headers = echo{ method = "GET" }
        assert.equal("GET", headers["x-method"])
      end)

      it("sends a form, then a plain body, with the type of each", function()
        local form = { parts = { { lines = { 'Content-Disposition: form-data; name="a"' }, data = "1" } } }
        local lines = { "Content-Type: multipart/form-data; boundary=mine", "X-A: 1" }
        local headers, body = echo{ method = "POST", headers = lines, body = form }
        assert.matches("^multipart/form%-data; boundary=%-*%w+$", headers["x-content-type"])
        assert.is_nil(headers["x-content-type"]:find("mine", 1, true))
        assert.matches('name="a"\r\n\r\n1\r\n', body, 1, true)
        headers, body = echo{ method = "POST", headers = lines, body = "plain" }
        assert.same({ "multipart/form-data; boundary=mine", "plain" }, { headers["x-content-type"], body })
        headers, body = echo{ method = "PATCH", headers = lines, body = form }
        assert.same({ "PATCH", "multipart/form-data; boundary" },
          { headers["x-method"], headers["x-content-type"]:match("^[^=]+") })
        assert.matches('name="a"\r\n\r\n1\r\n', body, 1, true)
        headers, body = echo{}
        assert.same({ "GET", "-", "-", "" }, { headers["x-method"], headers["x-content-type"], headers["x-content-length"], body })
      end)

      it("builds the header lines again from the first one that changed", function()
        local function sent(lines, body)
          local headers = echo{ method = body and "PATCH" or "GET", headers = lines, body = body }
          return { headers["x-auth"], headers["x-cookie"], headers["x-content-type"] }
        end
        assert.same({ "Bearer one", "c=1", "-" }, sent{ "Authorization: Bearer one", "Cookie: c=1" })
        assert.same({ "Bearer one", "c=1", "-" }, sent{ "Authorization: Bearer one", "Cookie: c=1" })
        assert.same({ "Bearer two", "-", "-" }, sent{ "Authorization: Bearer two" })
        assert.same({ "Bearer two", "c=2", "-" }, sent{ "Authorization: Bearer two", "Cookie: c=2" })
        assert.same({ "-", "c=2", "-" }, sent{ "Cookie: c=2" })
        assert.same({ "-", "-", "-" }, sent{})
        assert.same({ "Bearer one", "c=1", "application/json" },
          sent({ "Authorization: Bearer one", "Cookie: c=1", "Content-Type: application/json" }, "{}"))
        -- Without a Content-Type line the body is sent with none (not a form type).
        assert.same({ "Bearer one", "c=1", "-" }, sent({ "Authorization: Bearer one", "Cookie: c=1" }, "{}"))
        assert.same({ "Bearer one", "c=1", "-" }, sent{ "Authorization: Bearer one", "Cookie: c=1" })
        assert.same({ "-", "-", "-" }, sent(nil))
      end)

      it("applies a per-call timeout to its own request only", function()
        local status, err = s:perform{ url = srv.base .. "/delay?ms=3000", timeout = 0.3 }
        assert.is_nil(status)
        assert.equal("timeout", err.kind)
        assert.equal(200, (s:perform{ url = srv.base .. "/delay?ms=600" }))      -- the session's 10 s
        local quick = curl_core.session{ timeout = 0.3 }
        assert.equal(200, (quick:perform{ url = srv.base .. "/delay?ms=600", timeout = 5 }))
        status, err = quick:perform{ url = srv.base .. "/delay?ms=600" }
        assert.is_nil(status)
        assert.equal("timeout", err.kind)
        quick:close()
      end)

      it("opens a fresh connection for the request that asks, and only for it", function()
        local _, _, _, info = s:perform{ url = srv.base .. "/echo" }
        assert.equal(1, info.new_connections)
        _, _, _, info = s:perform{ method = "POST", url = srv.base .. "/echo", body = "x", fresh_connect = true }
        assert.equal(1, info.new_connections)
        _, _, _, info = s:perform{ url = srv.base .. "/echo" }
        assert.equal(0, info.new_connections)
      end)

      it("keeps a sink, and its limit, to the request that has them", function()
        local file = read_file(srv.dir .. "/static/data.json")
        local got = {}
        local status, _, body = s:perform{ url = srv.base .. "/data.json", sink = function(c) got[#got + 1] = c end }
        assert.equal(200, status)
        assert.is_nil(body)
        assert.is_true(table.concat(got) == file, "the sink got another body")
        status, _, body = s:perform{ url = srv.base .. "/data.json" }
        assert.equal(200, status)
        assert.is_true(body == file, "the body came back changed")
        local err
        status, err = s:perform{ url = srv.base .. "/two-mb.txt", max_response_bytes = 1000, sink = function() end }
        assert.is_nil(status)
        assert.equal("too_large", err.kind)
        status, _, body = s:perform{ url = srv.base .. "/two-mb.txt" }
        assert.equal(200, status)
        assert.equal(2097152, #body)
      end)

      it("never returns what is left of a previous body", function()
        assert.equal(2097152, #select(3, s:perform{ url = srv.base .. "/two-mb.txt" }))
        assert.equal("ok", select(3, s:perform{ url = srv.base .. "/headers" }))
        assert.equal("", select(3, s:perform{ url = srv.base .. "/echo" }))
        assert.equal("", select(3, s:perform{ method = "HEAD", url = srv.base .. "/data.json" }))
        local status, headers, body = s:perform{ url = srv.base .. "/echo" }
        assert.same({ 200, "GET", "" }, { status, headers["x-method"], body })
      end)

      it("gives a large response's buffer back to the system", function()
        s:perform{ url = srv.base .. "/echo" }
        collectgarbage()
        collectgarbage()
        local before = rss_kb()
        local status, _, body = s:perform{ url = srv.base .. "/big.txt", max_response_bytes = 64 * 1024 * 1024 }
        assert.equal(200, status)
        assert.equal(52428800, #body)
        body = nil   -- luacheck: ignore 311
        collectgarbage()
        collectgarbage()
        local kept = rss_kb() - before
        assert.is_true(kept < 8 * 1024, "the idle session holds " .. kept .. " kB")
        -- and keeps a small one: the next bodies still come back whole
        status, _, body = s:perform{ url = srv.base .. "/data.json" }
        assert.equal(200, status)
        assert.is_true(body == read_file(srv.dir .. "/static/data.json"), "the body came back changed")
      end)

      it("keeps TLS verification and HTTP/2 on every request, whatever the scheme of the one before", function()
        assert.equal(200, (s:perform{ url = srv.base .. "/echo" }))
        local status, err = s:perform{ url = srv.https_base .. "/echo" }
        assert.is_nil(status)
        assert.equal("tls", err.kind)
        assert.equal(200, (s:perform{ url = srv.base .. "/echo" }))
        status, err = s:perform{ url = srv.https_base .. "/echo" }
        assert.is_nil(status)
        assert.equal("tls", err.kind)
        local t = curl_core.session{ ca_file = srv.ca }
        for _ = 1, 2 do
          local info, _
          status, _, _, info = t:perform{ url = srv.https_base .. "/echo" }
          assert.same({ 200, "2" }, { status, info.http_version })
          status, _, _, info = t:perform{ url = srv.base .. "/echo" }
          assert.same({ 200, "1.1" }, { status, info.http_version })
        end
        t:close()
      end)
    end)

    describe("decode_json", function()
      local function get(path, extra)
        local req = { url = srv.base .. path, decode_json = true }
        for k, v in pairs(extra or {}) do req[k] = v end
        return s:perform(req)
      end

      it("decodes a 2xx JSON object or array from the buffer, gzipped or not", function()
        local status, headers, value = get("/data.json")
        local _
        assert.equal(200, status)
        assert.equal("gzip", headers["content-encoding"])
        assert.same(core.decode_json(read_file(srv.dir .. "/static/data.json")), value)
        assert.equal(core.array_mt, getmetatable(value))
        assert.equal(501, #value)
        assert.equal(core.object_mt, getmetatable(value[501]))
        status, _, value = get("/problem")
        assert.same({ 200, { type = "x" } }, { status, value })
        -- without a Content-Type, the body is taken for JSON, as the client does
        status, _, value = get("/untyped")
        assert.same({ 200, { 1, 2, 3 } }, { status, value })
      end)

      it("keeps the buffer it decodes from while a finalizer closes or reuses the session", function()
        -- In a fresh lua5.4 (a small heap: a collection cycle ends within one
        -- answer), GC steps at every allocation, so finalizers run while the
        -- answer's headers are pushed and its body decoded; each calls close
        -- or perform on this very session, which refuses while it hands the
        -- reply over.  build/5.4's modules: under make asan this process's
        -- core needs runtimes a child does not get.
        local script = [[
          local core, curl_core = require "truto.core", require "truto.curl_core"
          local url, expected_file = ...
          local f = assert(io.open(expected_file)) local expected = core.decode_json(f:read("*a")) f:close()
          local s = curl_core.session {}
          local inside, performing, refused, wrong = 0, false, {}, 0
          local function same(a, b)
            if type(a) ~= "table" then return a == b end
            for k, v in pairs(a) do if not same(v, b[k]) then return false end end
            for k in pairs(b) do if a[k] == nil then return false end end
            return true
          end
          collectgarbage("incremental", 0, 1000)
          for round = 1, 100 do
            setmetatable({}, { __gc = function()
              if not performing then return end
              inside = inside + 1
              local ok, err = pcall(function()
                if round % 2 == 0 then s:close() else s:perform { url = url } end
              end)
              refused[not ok and tostring(err):match("truto: .*$") or "not refused"] = true
            end })
            local req = { url = url, decode_json = true }
            performing = true
            local status, _, value = s:perform(req)
            performing = false
            if status ~= 200 or not same(expected, value) then wrong = wrong + 1 end
          end
          local messages = {}
          for m in pairs(refused) do messages[#messages + 1] = m end
          table.sort(messages)
          print(inside >= 10, wrong, table.concat(messages, " | "))
        ]]
        local file = srv.dir .. "/finalizers.lua"
        assert(sh.write_file(file, script))
        local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = "build/5.4/?.so;;" },
          "lua5.4 " .. sh.quote(file) .. " " .. sh.quote(srv.base .. "/data.json") .. " "
            .. sh.quote(srv.dir .. "/static/data.json"))
        assert(ok, err)
        assert.equal("true\t0\ttruto: cannot close a session while its transfer is running"
          .. " | truto: session is busy (perform called during its own transfer: from a sink or a finalizer)\n", out)
      end)

      it("raises, never reports invalid JSON, when the decode fails for another reason (LuaJIT)", function()
        -- LuaJIT hands a finalizer's error to whatever allocated: here a
        -- finalizer raises when it runs inside the reader (three C frames
        -- up: perform or wait, the call that builds the reply, the reader).
        -- That error is the perform's or the wait's, as anywhere else, not a
        -- decode_error beside a body cut to its start; the multi's result
        -- then comes whole from the next wait.
        local script = [[
          local curl_core = require "truto.curl_core"
          local url = ...
          local boom = setmetatable({}, { __tostring = function() return "boom" end })
          local fired
          local function arm()
            local p = newproxy(true)
            getmetatable(p).__gc = function()
              local c_frames = 0
              while (debug.getinfo(c_frames + 2, "S") or {}).what == "C" do c_frames = c_frames + 1 end
              if c_frames >= 3 then fired = true error(boom) end
              arm()
            end
          end
          local function until_fired(call)
            collectgarbage("setpause", 0) collectgarbage("setstepmul", 1000)
            fired = false
            arm()
            for _ = 1, 50 do
              local out = { pcall(call) }
              if fired then
                collectgarbage("setpause", 200)
                return out
              end
            end
            return { "the finalizer never ran inside the reader" }
          end
          local s = curl_core.session {}
          local out = until_fired(function() return s:perform { url = url, decode_json = true } end)
          print("session", tostring(out[1]), tostring(out[2]), type(out[4]), tostring(out[6]))
          local m = curl_core.multi {}
          local result
          out = until_fired(function()
            if m:pending() == 0 then m:add { url = url, decode_json = true } end
            while m:pending() > 0 do
              local done = m:wait(5)
              if done[1] then result = done[1] return done[1] end
            end
          end)
          print("multi", tostring(out[1]), tostring(out[2]), m:pending())
          local done = m:pending() == 1 and m:wait(5) or {}
          result = done[1] or result
          print("then", result.status, type(result.body), #result.body, tostring(result.decode_error))
        ]]
        local file = srv.dir .. "/decode-finalizer.lua"
        assert(sh.write_file(file, script))
        assert.is_true(sh.exists("build/luajit/truto/curl_core.so"), "build/luajit is missing: run `make luajit`")
        local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = "build/luajit/?.so;;" },
          "luajit " .. sh.quote(file) .. " " .. sh.quote(srv.base .. "/data.json"))
        assert(ok, err)
        assert.equal("session\tfalse\tboom\tnil\tnil\nmulti\tfalse\tboom\t1\nthen\t200\ttable\t501\tnil\n", out)
      end)

      it("leaves every other body a string", function()
        local function body_of(path, extra) return select(3, get(path, extra)) end
        -- not valid JSON: the text (its first 64 KiB) and the reader's message, which the client reports
        local _, _, bad, _, decode_error = get("/bad.json")
        assert.same({ '{"a":', "unexpected end of input at byte 6" }, { bad, decode_error })
        assert.equal(4, select("#", get("/scalar.json")))         -- no message when nothing was decoded
        assert.equal('"text"', body_of("/scalar.json"))            -- JSON, but not a table
        assert.equal('{"error":"x"}', body_of("/error.json"))      -- not a 2xx
        assert.equal("ok", body_of("/headers"))                    -- text/plain
        assert.equal('{"a":1}', body_of("/echo", { method = "POST", body = '{"a":1}' }))   -- text/plain too
        assert.equal("", body_of("/data.json", { method = "HEAD" }))
        assert.matches("404", body_of("/missing.json"))
        local n = 0
        local status, _, body = get("/data.json", { sink = function(c) n = n + #c end })
        assert.same({ 200, #read_file(srv.dir .. "/static/data.json") }, { status, n })
        assert.is_nil(body)
        -- and without the flag a JSON body stays text
        assert.equal(read_file(srv.dir .. "/static/data.json"), select(3, s:perform{ url = srv.base .. "/data.json" }))
      end)

      it("gives back the first 64 KiB of a large body that is not valid JSON, with the reader's message", function()
        local status, _, body, _, decode_error = get("/broken.json")
        assert.same({ 200, BROKEN_JSON:sub(1, 65536), "unexpected character at byte " .. #BROKEN_HEAD + 1 },
                    { status, body, decode_error })
        -- the session is whole: the next answer decodes
        assert.equal(501, #select(3, get("/data.json")))
      end)

      it("must be a boolean", function()
        local ok, err = pcall(s.perform, s, { url = srv.base .. "/data.json", decode_json = "yes" })
        assert.is_false(ok)
        assert.matches("request decode_json must be a boolean, got string", err, 1, true)
      end)

      it("is passed on by the libcurl transport", function()
        local transport = require("truto.curl").new{ timeout = 10 }
        local status, _, value = transport:perform({ method = "GET", url = srv.base .. "/problem", headers = {} },
                                                   { decode_json = true })
        assert.same({ 200, { type = "x" } }, { status, value })
        status, _, value = transport:perform({ method = "GET", url = srv.base .. "/problem", headers = {} }, {})
        assert.same({ 200, '{"type":"x"}' }, { status, value })
        transport:close()
      end)
    end)

    -- The same isolation through the multi handle (multi.c), whose easy
    -- handles go back to a pool and are reused for the next add, never reset.
    describe("the multi handle's pooled handles, request after request", function()
      local m
      before_each(function() m = curl_core.multi{ timeout = 10 } end)
      after_each(function() m:close() end)

      -- Adds every request at once; returns the results in request order.
      local function run_all(reqs, multi)
        multi = multi or m
        local index, results = {}, {}
        for i, req in ipairs(reqs) do index[multi:add(req)] = i end
        local deadline = core.now() + 20
        while multi:pending() > 0 do
          assert(core.now() < deadline, "transfers still pending")
          for _, r in ipairs(multi:wait(1)) do results[index[r.id]] = r end
        end
        return results
      end
      -- One request at a time: the pool hands the same easy handle back.
      local function perform(req, multi)
        local r = run_all({ req }, multi)[1]
        if r.err then return nil, r.err end
        return r.status, r.headers, r.body, r.info
      end

      -- Requests of every kind, each with what the echo server records of
      -- it: status, method, Content-Length, Content-Type, Authorization,
      -- Cookie, Expect, body (a form's boundary, libcurl's, read as B).
      local FORM = { parts = { { lines = { 'Content-Disposition: form-data; name="a"' }, data = "1" } } }
      local FORM_SENT = '--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--B--\r\n'
      local FORM_LINES = { "Content-Type: multipart/form-data; boundary=mine", "Authorization: Bearer f" }
      local ONE = { "Authorization: Bearer one", "Cookie: c=1" }
      local function echo_steps(url)
        return {
          { { method = "PATCH", url = url, headers = { "Content-Type: application/json", ONE[1], ONE[2] },
              body = '{"a":1}' }, { 200, "PATCH", "7", "application/json", "Bearer one", "c=1", "-", '{"a":1}' } },
          { { url = url }, { 200, "GET", "-", "-", "-", "-", "-", "" } },
          { { method = "POST", url = url, headers = { "Authorization: Bearer two" }, body = "abc" },
            { 200, "POST", "3", "-", "Bearer two", "-", "-", "abc" } },
          { { method = "HEAD", url = url }, { 200, "HEAD", "-", "-", "-", "-", "-", "" } },
          { { method = "PUT", url = url, body = "after head" }, { 200, "PUT", "10", "-", "-", "-", "-", "after head" } },
          { { method = "DELETE", url = url, headers = ONE }, { 200, "DELETE", "-", "-", "Bearer one", "c=1", "-", "" } },
          { { method = "POST", url = url }, { 200, "POST", "0", "-", "-", "-", "-", "" } },
          { { method = "POST", url = url, headers = FORM_LINES, body = FORM },
            { 200, "POST", "=", "multipart/form-data; boundary=B", "Bearer f", "-", "-", FORM_SENT } },
          { { method = "POST", url = url, headers = FORM_LINES, body = "plain" },
            { 200, "POST", "5", "multipart/form-data; boundary=mine", "Bearer f", "-", "-", "plain" } },
          { { method = "PATCH", url = url, headers = FORM_LINES, body = FORM },
            { 200, "PATCH", "=", "multipart/form-data; boundary=B", "Bearer f", "-", "-", FORM_SENT } },
          { { url = url, headers = ONE }, { 200, "GET", "-", "-", "Bearer one", "c=1", "-", "" } },
          -- Without a Content-Type line a body goes with none (not a form type).
          { { method = "PATCH", url = url, headers = ONE, body = "{}" }, { 200, "PATCH", "2", "-", "Bearer one", "c=1", "-", "{}" } },
          -- A method too long to be remembered is set again every time.
          { { method = "VERYLONGMETHODNAME", url = url }, { 200, "VERYLONGMETHODNAME", "-", "-", "-", "-", "-", "" } },
          { { method = "VERYLONGMETHODNAME", url = url, headers = { "Cookie: c=2" } },
            { 200, "VERYLONGMETHODNAME", "-", "-", "-", "c=2", "-", "" } },
          { { url = url, headers = { "Cookie: c=2" } }, { 200, "GET", "-", "-", "-", "c=2", "-", "" } },
        }
      end
      local function recorded(r)
        local h = r.headers or {}
        local body, content_type, length = r.body, h["x-content-type"], h["x-content-length"]
        local boundary = content_type and content_type:match("^multipart/form%-data; boundary=(%-%-%-%-+%w+)$")
        if boundary then
          assert.equal(tostring(#body), length)   -- the form's length as sent
          body = body:gsub(boundary:gsub("%p", "%%%0"), "B")
          content_type, length = "multipart/form-data; boundary=B", "="
        end
        return { r.status, h["x-method"], length, content_type, h["x-auth"], h["x-cookie"], h["x-expect"], body }
      end

      it("sends each request's own method, body, form and header lines, one at a time and all at once", function()
        local steps = echo_steps(srv.base .. "/echo")
        local reqs = {}
        for i, step in ipairs(steps) do reqs[i] = step[1] end
        for _, step in ipairs(steps) do
          local r = run_all({ step[1] })[1]
          assert.same(step[2], recorded(r))
        end
        -- All in flight at once, then again in reverse order: each easy
        -- handle goes from one kind of request to another.
        for round = 1, 2 do
          local results = run_all(reqs)
          for i, step in ipairs(steps) do assert.same(step[2], recorded(results[i]), "round " .. round .. " #" .. i) end
          local reversed = {}
          for i = #steps, 1, -1 do reversed[#reversed + 1] = steps[i] end
          steps = reversed
          for i, step in ipairs(steps) do reqs[i] = step[1] end
        end
      end)

      it("applies a per-request timeout to its own request only", function()
        local status, err = perform{ url = srv.base .. "/delay?ms=3000", timeout = 0.3 }
        assert.same({ nil, "timeout" }, { status, err.kind })
        assert.equal(200, (perform{ url = srv.base .. "/delay?ms=600" }))      -- the multi's 10 s
        local quick = curl_core.multi{ timeout = 0.3 }
        assert.equal(200, (perform({ url = srv.base .. "/delay?ms=600", timeout = 5 }, quick)))
        status, err = perform({ url = srv.base .. "/delay?ms=600" }, quick)
        assert.same({ nil, "timeout" }, { status, err.kind })
        quick:close()
      end)

      it("opens a fresh connection for the request that asks, and only for it", function()
        local _, _, _, info = perform{ url = srv.base .. "/echo" }
        assert.equal(1, info.new_connections)
        _, _, _, info = perform{ method = "POST", url = srv.base .. "/echo", body = "x", fresh_connect = true }
        assert.equal(1, info.new_connections)
        _, _, _, info = perform{ url = srv.base .. "/echo" }
        assert.equal(0, info.new_connections)
      end)

      it("keeps a limit to its request, and never returns what is left of a previous body", function()
        local status, err = perform{ url = srv.base .. "/two-mb.txt", max_response_bytes = 1000 }
        assert.same({ nil, "too_large" }, { status, err.kind })
        local body, _
        status, _, body = perform{ url = srv.base .. "/two-mb.txt" }
        assert.same({ 200, 2097152 }, { status, #body })
        assert.equal("ok", select(3, perform{ url = srv.base .. "/headers" }))
        assert.equal("", select(3, perform{ url = srv.base .. "/echo" }))
        assert.equal("", select(3, perform{ method = "HEAD", url = srv.base .. "/data.json" }))
        status, _, body = perform{ url = srv.base .. "/data.json" }
        assert.same({ 200, true }, { status, body == read_file(srv.dir .. "/static/data.json") })
      end)

      it("gives a large response's buffer back to the system", function()
        perform{ url = srv.base .. "/echo" }
        collectgarbage()
        collectgarbage()
        local before = rss_kb()
        local status, _, body = perform{ url = srv.base .. "/big.txt", max_response_bytes = 64 * 1024 * 1024 }
        assert.same({ 200, 52428800 }, { status, #body })
        body = nil   -- luacheck: ignore 311
        collectgarbage()
        collectgarbage()
        local kept = rss_kb() - before
        assert.is_true(kept < 8 * 1024, "the idle multi holds " .. kept .. " kB")
      end)

      it("keeps TLS verification and HTTP/2 on every request, whatever the scheme of the one before", function()
        for _ = 1, 2 do
          assert.equal(200, (perform{ url = srv.base .. "/echo" }))
          local status, err = perform{ url = srv.https_base .. "/echo" }
          assert.same({ nil, "tls" }, { status, err.kind })
        end
        local t = curl_core.multi{ ca_file = srv.ca }
        for _ = 1, 2 do
          local status, _, _, info = perform({ url = srv.https_base .. "/echo" }, t)
          assert.same({ 200, "2" }, { status, info.http_version })
          status, _, _, info = perform({ url = srv.base .. "/echo" }, t)
          assert.same({ 200, "1.1" }, { status, info.http_version })
        end
        t:close()
      end)

      it("keeps the buffers wait reads while a finalizer closes or uses the multi", function()
        -- As for a session's perform above: in a fresh lua5.4 with a small
        -- heap, finalizers run while wait pushes headers and decodes bodies;
        -- each calls close, add, wait or abort on this very multi, which
        -- refuses while it hands the results over.
        local script = [[
          local core, curl_core = require "truto.core", require "truto.curl_core"
          local url, expected_file = ...
          local f = assert(io.open(expected_file)) local expected = f:read("a") f:close()
          local m = curl_core.multi {}
          local calls = { function() m:close() end, function() m:add { url = url } end,
                          function() m:wait(0) end, function() m:abort() end }
          local inside, waiting, refused, wrong = 0, false, {}, 0
          collectgarbage("incremental", 0, 1000)
          for round = 1, 100 do
            -- Eight finalizers a round, two of each call: when they run is
            -- the collector's choice, so each call lands inside wait often.
            for k = 1, 8 do
              setmetatable({}, { __gc = function()
                if not waiting then return end
                inside = inside + 1
                local ok, err = pcall(calls[k % 4 + 1])
                refused[not ok and tostring(err):match("truto: .*$") or "not refused"] = true
              end })
            end
            local ids = { [m:add { url = url, decode_json = true }] = "table", [m:add { url = url }] = "string" }
            local got = 0
            while m:pending() > 0 do
              waiting = true
              local done = m:wait(5)
              waiting = false
              for _, r in ipairs(done) do
                got = got + 1
                local same = type(r.body) == ids[r.id] and
                  (type(r.body) == "string" and r.body or core.encode_json(r.body)) ==
                  (type(r.body) == "string" and expected or core.encode_json(core.decode_json(expected)))
                if r.status ~= 200 or not same then wrong = wrong + 1 end
              end
            end
            if got ~= 2 then wrong = wrong + 1 end
          end
          local messages = {}
          for message in pairs(refused) do messages[#messages + 1] = message end
          table.sort(messages)
          print(inside >= 10, wrong, table.concat(messages, " | "))
        ]]
        local file = srv.dir .. "/multi-finalizers.lua"
        assert(sh.write_file(file, script))
        local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = "build/5.4/?.so;;" },
          "lua5.4 " .. sh.quote(file) .. " " .. sh.quote(srv.base .. "/data.json") .. " "
            .. sh.quote(srv.dir .. "/static/data.json"))
        assert(ok, err)
        assert.equal("true\t0\ttruto: cannot close a multi while wait hands its results over"
          .. " | truto: multi is busy (called from a finalizer while wait hands its results over)\n", out)
      end)

      it("decodes a 2xx JSON object or array with decode_json, as a session does", function()
        local expected = core.decode_json(read_file(srv.dir .. "/static/data.json"))
        local function via_both(path, extra)
          local req = { url = srv.base .. path, decode_json = true }
          for k, v in pairs(extra or {}) do req[k] = v end
          local status, _, body = perform(req)
          local s_status, _, s_body = s:perform(req)
          assert.same({ s_status, s_body }, { status, body })
          return status, body
        end
        local status, value = via_both("/data.json")
        assert.same({ 200, expected }, { status, value })
        assert.equal(core.array_mt, getmetatable(value))
        assert.equal(core.object_mt, getmetatable(value[501]))
        assert.same({ 200, { type = "x" } }, { via_both("/problem") })
        assert.same({ 200, { 1, 2, 3 } }, { via_both("/untyped") })
        -- Every other body stays a string.
        assert.same({ 200, '{"a":' }, { via_both("/bad.json") })
        assert.same({ 200, '"text"' }, { via_both("/scalar.json") })
        assert.same({ 422, '{"error":"x"}' }, { via_both("/error.json") })
        assert.same({ 201, "ok" }, { via_both("/headers") })
        assert.same({ 200, '{"a":1}' }, { via_both("/echo", { method = "POST", body = '{"a":1}' }) })
        assert.same({ 200, "" }, { via_both("/data.json", { method = "HEAD" }) })
        -- Without the flag (on the same handle) a JSON body stays text.
        local status_text, _, text = perform{ url = srv.base .. "/data.json" }
        assert.same({ 200, read_file(srv.dir .. "/static/data.json") }, { status_text, text })
        local ok, err = pcall(m.add, m, { url = srv.base .. "/data.json", decode_json = "yes" })
        assert.is_false(ok)
        assert.matches("request decode_json must be a boolean, got string", err, 1, true)
      end)
    end)

    describe("TLS", function()
      it("verifies certificates by default", function()
        local status, err = s:perform{ url = srv.https_base .. "/echo" }
        assert.is_nil(status)
        assert.equal("tls", err.kind)
      end)

      it("trusts ca_file, and speaks HTTP/2 unless http2 = false", function()
        local t = curl_core.session{ ca_file = srv.ca }
        local status, headers, body, info = t:perform{ method = "PATCH", url = srv.https_base .. "/echo",
                                                       body = '{"a":1}', headers = { "Content-Type: application/json" } }
        assert.equal(200, status)
        assert.equal('{"a":1}', body)
        assert.equal("PATCH", headers["x-method"])
        assert.equal("2", info.http_version)
        local _, _, _, again = t:perform{ url = srv.https_base .. "/echo" }
        assert.equal(0, again.new_connections)
        t:close()
        t = curl_core.session{ ca_file = srv.ca, http2 = false }
        status, _, _, info = t:perform{ url = srv.https_base .. "/echo" }
        assert.equal(200, status)
        assert.equal("1.1", info.http_version)
        t:close()
      end)

      it("skips verification only when insecure = true", function()
        local t = curl_core.session{ insecure = true }
        assert.equal(200, (t:perform{ url = srv.https_base .. "/echo" }))
        t:close()
      end)
    end)

    describe("redirects", function()
      local AUTH = "Authorization: Bearer s3cr3t"

      it("are not followed by default", function()
        local status, headers, _, info = s:perform{ url = srv.base .. "/same-origin", headers = { AUTH } }
        assert.equal(302, status)
        assert.matches("/echo$", headers["location"])
        assert.equal(0, info.redirects)
      end)

      -- The client follows redirects with truto.redirect, over any transport:
      -- here its rules against real 3xx answers, over a session.
      describe("followed with truto.redirect", function()
        local session
        before_each(function() session = curl_core.session{ ca_file = srv.ca } end)
        after_each(function() session:close() end)
        local f = {}
        function f.perform(_, first)
          local req, hops = first, 0
          while true do
            local status, headers, body, info = session:perform(req)
            local nxt, err = redirect.next(first, req, status, headers, hops)
            if err then return nil, err end
            if not nxt then
              if info then info.redirects = hops end
              return status, headers, body, info
            end
            req, hops = { method = nxt.method, url = nxt.url, headers = nxt.headers, body = nxt.body,
                          sink = first.sink }, hops + 1
          end
        end

        it("keep credentials on the same origin", function()
          local status, headers, _, info = f:perform{ url = srv.base .. "/chain", headers = { AUTH, "Cookie: a=1" } }
          assert.equal(200, status)
          assert.equal("Bearer s3cr3t", headers["x-auth"])
          assert.equal("a=1", headers["x-cookie"])
          assert.equal(2, info.redirects)
          assert.is_nil(headers["location"])
        end)

        it("drop Authorization and Cookie for another host or port", function()
          for _, path in ipairs{ "/other-host", "/other-port" } do
            local status, headers, body, info = f:perform{ method = "POST", url = srv.base .. path,
              headers = { AUTH, "Cookie: a=1", "Content-Type: application/json" }, body = "{}" }
            assert.equal(200, status)
            assert.equal("-", headers["x-auth"])
            assert.equal("-", headers["x-cookie"])
            assert.equal(1, info.redirects)
            if path == "/other-port" then     -- 307 keeps method and body
              assert.equal(tostring(srv.other), headers["x-server"])
              assert.equal("POST", headers["x-method"])
              assert.equal("{}", body)
            end
          end
        end)

        it("turn POST into GET on 303 and keep PATCH on 308", function()
          local _, headers, body = f:perform{ method = "POST", url = srv.base .. "/see-other",
            headers = { "Content-Type: application/json" }, body = '{"x":1}' }
          assert.equal("GET", headers["x-method"])
          assert.equal("-", headers["x-content-length"])
          assert.equal("-", headers["x-content-type"])
          assert.equal("", body)
          _, headers, body = f:perform{ method = "PATCH", url = srv.base .. "/keep-method",
            headers = { "Content-Type: application/json" }, body = '{"x":1}' }
          assert.equal("PATCH", headers["x-method"])
          assert.equal('{"x":1}', body)
        end)

        it("may go from http to https but never back", function()
          local status, headers = f:perform{ url = srv.base .. "/to-https" }
          assert.equal(200, status)
          assert.equal(tostring(srv.https), headers["x-server"])
          local err
          status, err = f:perform{ url = srv.https_base .. "/downgrade", headers = { AUTH } }
          assert.is_nil(status)
          assert.equal("protocol", err.kind)
          assert.matches("https to http", err.message)
        end)

        it("refuse other schemes and loops", function()
          local status, err = f:perform{ url = srv.base .. "/ftp" }
          assert.is_nil(status)
          assert.equal("protocol", err.kind)
          status, err = f:perform{ url = srv.base .. "/loop" }
          assert.is_nil(status)
          assert.equal("protocol", err.kind)
          assert.equal("more than 5 redirects", err.message)
          assert.is_true(err.final)
        end)

        it("never pass a redirect's body to the sink", function()
          local seen = {}
          local status, headers, body = f:perform{ method = "POST", url = srv.base .. "/with-body-redirect",
            body = "payload", sink = function(c) seen[#seen + 1] = c end }
          assert.equal(200, status)
          assert.is_nil(body)
          assert.equal("GET", headers["x-method"])
          assert.is_true(table.concat(seen) == "", "the sink saw a redirect body")
        end)
      end)
    end)
  end)
end)

-- End-to-end against the Truto emulator.
describe("truto.curl_core.session against the emulator", function()
  local h, s

  setup(function()
    h = emulator.start()
  end)
  teardown(function()
    if h then h:stop() end
  end)
  before_each(function() s = curl_core.session{ timeout = 10 } end)
  after_each(function() s:close() end)

  local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
  local HEADERS = { "Accept: application/json", "Content-Type: application/json", "Authorization: Bearer test-token" }
  local function api(path)
    return h.base_url .. "/unified/crm/opportunities" .. path .. "?integrated_account_id=" .. ACCOUNT
  end
  local function with(extra)
    local t = {}
    for _, line in ipairs(HEADERS) do t[#t + 1] = line end
    for _, line in ipairs(extra) do t[#t + 1] = line end
    return t
  end

  it("round-trips a PATCH body byte for byte", function()
    local cjson = require "cjson"
    assert.equal(200, (s:perform{ method = "DELETE", url = h.base_url .. "/_emulator/requests" }))
    local sent = '{"name":"Renamed \\u00e9 deal","amount":12.5,"tags":[]}'
    local status, headers, body, info = s:perform{ method = "PATCH", url = api("/23423523"), headers = HEADERS,
                                                   body = sent }
    assert.equal(200, status)
    assert.matches("application/json", headers["content-type"])
    assert.equal("Renamed \195\169 deal", cjson.decode(body).name)
    assert.equal(0, info.new_connections)     -- the DELETE above opened it
    local _, _, log, again = s:perform{ url = h.base_url .. "/_emulator/requests" }
    assert.equal(0, again.new_connections)
    local entries = cjson.decode(log)
    local last = entries[#entries]
    assert.equal("PATCH", last.method)
    assert.equal(sent, last.body)
  end)

  it("decodes gzip-encoded JSON", function()
    local status, headers, body, info = s:perform{ url = api(""), headers = HEADERS }
    assert.equal(200, status)
    assert.equal("gzip", headers["content-encoding"])
    assert.is_table(require("cjson").decode(body).result)
    assert.is_true(info.size_download < #body)
  end)

  it("streams a 100 MB blob through a sink with flat RSS", function()
    local function stream(bytes)
      local total = 0
      local status, _, body = s:perform{ url = h.base_url .. "/_emulator/blob?bytes=" .. bytes,
        timeout = 60, max_response_bytes = 2 ^ 40, sink = function(c)
          -- The chunks are Lua strings: collect them every 4 MB, so that what
          -- is measured is the library's memory, not the collector's pace.
          if total % (4 * 1024 * 1024) + #c >= 4 * 1024 * 1024 then collectgarbage() end
          total = total + #c
        end }
      collectgarbage()
      assert.equal(200, status)
      assert.is_nil(body)
      assert.equal(bytes, total)
    end
    -- A first, smaller transfer takes the one-time growth (buffers, and under
    -- ASan its quarantine), so that what is measured is what the size adds.
    stream(8 * 1024 * 1024)
    local before = rss_kb()
    stream(100 * 1024 * 1024)
    local growth = rss_kb() - before
    assert.is_true(growth < 16 * 1024, ("RSS grew by %d kB while 100 MB streamed"):format(growth))
  end)

  it("injects status codes, delays and faults", function()
    local status, headers = s:perform{ url = api(""),
      headers = with{ "X-Emulator-Status: 429", "X-Emulator-Retry-After: 7" } }
    assert.equal(429, status)
    assert.equal("7", headers["retry-after"])
    local err
    status, err = s:perform{ url = api(""), headers = with{ "X-Emulator-Delay-Ms: 2000" }, timeout = 0.3 }
    assert.is_nil(status)
    assert.equal("timeout", err.kind)
    status, err = s:perform{ url = api(""), headers = with{ "X-Emulator-Fault: drop" } }
    assert.is_nil(status)
    assert.equal("network", err.kind)
    status, err = s:perform{ url = api(""), headers = with{ "X-Emulator-Fault: truncate" } }
    assert.is_nil(status)
    assert.equal("protocol", err.kind)
    status, err = s:perform{ url = h.base_url .. "/_emulator/blob?bytes=100000", max_response_bytes = 1000 }
    assert.is_nil(status)
    assert.equal("too_large", err.kind)
    assert.equal(200, (s:perform{ url = api("/23423523"), headers = HEADERS }))
  end)
end)

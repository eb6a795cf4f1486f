-- truto.core.build_request: the exact request every transport sends.
local core = require "truto.core"
local curl_core = require "truto.curl_core"
local truto = require "truto"

local UA_PREFIX = "User-Agent: lua-truto/" .. truto.VERSION .. " (libcurl/" .. curl_core.curl_version .. "; Lua"

local function spec_of(overrides)
  local spec = {
    method = "PATCH",
    base_url = "https://api.truto.one",
    path = { "unified", "crm", "opportunities", "23423523" },
    path_names = { "api", "model", "resource", "id" },
    token = "secret-token",
  }
  for k, v in pairs(overrides or {}) do spec[k] = v end
  return spec
end

local function build(overrides)
  return core.build_request(spec_of(overrides))
end

-- The whole message of the error build_request raises.
local function refusal(overrides)
  local ok, err = pcall(core.build_request, spec_of(overrides))
  assert.is_false(ok, "expected an error")
  return err
end

local function fails(overrides)
  local ok, err = pcall(build, overrides)
  assert.is_false(ok, "expected an error")
  return err
end

describe("build_request", function()
  it("builds the seed's update exactly", function()
    local r = build {
      query = {
        integrated_account_id = "62f44730-dd91-461e-bd6a-aedd9e0ad79d",
        truto_exclude_fields = { "id", "name" },
        remote_query = { foo = "bar" },
      },
      body = { name = "Big deal", amount = 5000, contact = {}, tags = {} },
      list_fields = { contact = true, tags = true, urls = true },
    }
    assert.equal("PATCH", r.method)
    assert.equal("https://api.truto.one/unified/crm/opportunities/23423523"
      .. "?integrated_account_id=62f44730-dd91-461e-bd6a-aedd9e0ad79d&remote_query%5Bfoo%5D=bar"
      .. "&truto_exclude_fields%5B%5D=id&truto_exclude_fields%5B%5D=name", r.url)
    assert.equal('{"amount":5000,"contact":[],"name":"Big deal","tags":[]}', r.body)
    assert.equal(4, #r.headers)
    assert.equal("Accept: application/json", r.headers[1])
    assert.equal("Authorization: Bearer secret-token", r.headers[2])
    assert.equal("Content-Type: application/json", r.headers[3])
    assert.equal(UA_PREFIX, r.headers[4]:sub(1, #UA_PREFIX))
    assert.matches("^ 5%.%d+%.%d+%)$", r.headers[4]:sub(#UA_PREFIX + 1))
  end)

  it("sends no Content-Type and no body without one, and no '?' without parameters", function()
    local r = build { method = "GET", query = { a = {} } }
    assert.equal("https://api.truto.one/unified/crm/opportunities/23423523", r.url)
    assert.is_nil(r.body)
    assert.same({ "Accept: application/json", "Authorization: Bearer secret-token" },
      { r.headers[1], r.headers[2] })
    assert.equal(3, #r.headers)
  end)

  it("sends no Authorization without a token", function()
    local r = core.build_request { method = "GET", base_url = "http://h", path = { "x" } }
    assert.equal(2, #r.headers)
    for _, h in ipairs(r.headers) do assert.is_nil(h:match("^Authorization")) end
  end)

  describe("path segments", function()
    local ids = {
      ["alt:ref:imported@frontapp.com_t:50603"] = "alt%3Aref%3Aimported%40frontapp.com_t%3A50603",
      ["a/b"] = "a%2Fb",
      ["../x"] = "..%2Fx",
      ["a?b#c"] = "a%3Fb%23c",
      ["with space+plus"] = "with%20space%2Bplus",
      ["%2F"] = "%252F",
      ["日本"] = "%E6%97%A5%E6%9C%AC",
      ["..."] = "...",
    }
    for id, encoded in pairs(ids) do
      it("keeps " .. id .. " one segment", function()
        assert.equal("https://api.truto.one/unified/crm/opportunities/" .. encoded,
          build { path = { "unified", "crm", "opportunities", id } }.url)
      end)
    end

    it("writes numeric ids as integers", function()
      assert.equal("https://api.truto.one/unified/crm/opportunities/23423523",
        build { path = { "unified", "crm", "opportunities", 23423523.0 } }.url)
    end)

    it("refuses empty, dot and invalid segments, naming them", function()
      assert.matches("truto: id must not be empty$", fails { path = { "unified", "crm", "opportunities", "" } })
      assert.matches("truto: id must not be '.' or '..'$", fails { path = { "unified", "crm", "opportunities", ".." } })
      assert.matches("truto: resource must not be '.' or '..'$", fails { path = { "unified", "crm", ".", "1" } })
      assert.matches("truto: id must be a string, got table$", fails { path = { "unified", "crm", "x", {} } })
      assert.matches("truto: id is not valid UTF%-8$", fails { path = { "unified", "crm", "x", "\255" } })
      assert.matches("truto: id must be a finite number$", fails { path = { "unified", "crm", "x", 0 / 0 } })
      assert.matches("truto: path segment must not be empty$", fails { path = { "" }, path_names = false })
    end)
  end)

  describe("base_url", function()
    it("keeps a path prefix and drops trailing slashes", function()
      assert.equal("http://127.0.0.1:8080/truto/unified/crm/opportunities/23423523",
        build { base_url = "http://127.0.0.1:8080/truto//" }.url)
      assert.equal("HTTPS://API.truto.one/unified/crm/opportunities/23423523",
        build { base_url = "HTTPS://API.truto.one/" }.url)
    end)

    it("must be http(s) with a host and without query or fragment", function()
      assert.matches("base_url must start with http:// or https://$", fails { base_url = "ftp://x" })
      assert.matches("base_url must start with http:// or https://$", fails { base_url = "api.truto.one" })
      assert.matches("base_url must not have a query or a fragment$", fails { base_url = "https://x/?a=1" })
      assert.matches("base_url must not have a query or a fragment$", fails { base_url = "https://x#f" })
      assert.matches("base_url has no host$", fails { base_url = "https:///path" })
      assert.matches("base_url has no host$", fails { base_url = "https://" })
      assert.matches("base_url must not contain spaces or control characters$", fails { base_url = "https://a b" })
      assert.matches("base_url must not contain spaces or control characters$",
        fails { base_url = "https://x\r\nHost: evil" })
      assert.matches("request base_url must be a string, got nil$",
        select(2, pcall(core.build_request, { method = "GET", path = {} })))
    end)

    it("accepts a host name, an IPv4 or IPv6 address, a port and a path prefix", function()
      for base, url in pairs {
        ["https://api.truto.one"] = "https://api.truto.one/x",
        ["http://127.0.0.1:8080/prefix"] = "http://127.0.0.1:8080/prefix/x",
        ["https://[::1]:443"] = "https://[::1]:443/x",
        ["http://[2001:db8::ffff:192.0.2.1]/"] = "http://[2001:db8::ffff:192.0.2.1]/x",
        ["http://truto_emulator:65535/a-b/c.d/~e/%2Fx/!$&'()*+,;=:@/"] =
          "http://truto_emulator:65535/a-b/c.d/~e/%2Fx/!$&'()*+,;=:@/x",
      } do
        assert.equal(url, build { base_url = base, path = { "x" }, path_names = false }.url)
      end
    end)

    it("refuses user information, a backslash, a bad host, port or path, naming the fault", function()
      for base, message in pairs {
        ["http://host\\@evil.com"] = "base_url must not contain a backslash",
        ["http://host\\evil.com/"] = "base_url must not contain a backslash",
        ["https://api.truto.one/a\\b"] = "base_url must not contain a backslash",
        ["http://user@evil.com"] = "base_url must not contain user information ('@' before the host)",
        ["http://user:pw@evil.com:80/x"] = "base_url must not contain user information ('@' before the host)",
        ["http://@evil.com"] = "base_url must not contain user information ('@' before the host)",
        ["http://[::1"] = "base_url has an IPv6 address without its closing ']'",
        ["http://[::1/x]"] = "base_url has an IPv6 address without its closing ']'",
        ["http://[::g]"] = "base_url has an IPv6 address with a character other than hex digits, ':' and '.'",
        ["http://[fe80::1%25eth0]"] = "base_url has an IPv6 address with a character other than hex digits, "
          .. "':' and '.'",
        ["http://[]"] = "base_url has an invalid IPv6 address",
        ["http://[1:2]"] = "base_url has an invalid IPv6 address",
        ["http://[::1]x"] = "base_url has something other than ':port' after the IPv6 address",
        ["http://[::1]]"] = "base_url has something other than ':port' after the IPv6 address",
        ["http://ex%61mple.com"] = "base_url host may contain only letters, digits, '-', '.' and '_' "
          .. "(or be an IPv6 address in brackets)",
        ["http://a,b"] = "base_url host may contain only letters, digits, '-', '.' and '_' "
          .. "(or be an IPv6 address in brackets)",
        ["http://bücher.example"] = "base_url host may contain only letters, digits, '-', '.' and '_' "
          .. "(or be an IPv6 address in brackets)",
        ["http://:8080"] = "base_url has no host",
        ["http://h:"] = "base_url port must be a number from 1 to 65535",
        ["http://h:0"] = "base_url port must be a number from 1 to 65535",
        ["http://h:65536"] = "base_url port must be a number from 1 to 65535",
        ["http://h:123456"] = "base_url port must be a number from 1 to 65535",
        ["http://h:8o"] = "base_url port must be a number from 1 to 65535",
        ["http://h:80:81"] = "base_url port must be a number from 1 to 65535",
        ["http://h/a%2"] = "base_url path has a '%' that does not start a %XX escape",
        ["http://h/a%zz/"] = "base_url path has a '%' that does not start a %XX escape",
        ["http://h/a[1]"] = "base_url path may contain only letters, digits, '/', %XX escapes "
          .. "and -._~!$&'()*+,;=:@",
        ["http://h/\"x\""] = "base_url path may contain only letters, digits, '/', %XX escapes "
          .. "and -._~!$&'()*+,;=:@",
        ["http://h/é"] = "base_url path may contain only letters, digits, '/', %XX escapes "
          .. "and -._~!$&'()*+,;=:@",
      } do
        assert.equal("truto: " .. message, refusal { base_url = base }, base)
      end
    end)
  end)

  describe("headers", function()
    it("lets the caller add headers, replace defaults in any case, or drop them with false", function()
      local r = build { method = "GET", headers = { ["Idempotency-Key"] = "k1", accept = "text/csv",
                                                   ["User-Agent"] = false, ["X-Count"] = 3 } }
      assert.same({ "accept: text/csv", "Authorization: Bearer secret-token", "Idempotency-Key: k1", "X-Count: 3" },
        r.headers)
    end)

    it("refuses the headers that frame the request or manage the connection, in any case", function()
      for _, name in ipairs { "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "TE", "Trailer",
                              "Upgrade", "Expect", "Proxy-Connection", "Host" } do
        local expected = "truto: headers: " .. name .. " is set by the library (it frames the request or "
          .. "manages the connection), so it cannot be given"
        for _, given in ipairs { name, name:lower(), name:upper() } do
          assert.equal(expected, refusal { headers = { [given] = "0" } }, given)
          assert.equal(expected, refusal { headers = { [given] = 7 } }, given)
        end
      end
      assert.equal("truto: headers: Content-Length is set by the library (it frames the request or manages the "
        .. "connection), so it cannot be given", refusal { body = { a = 1 }, headers = { ["content-length"] = "0" } })
    end)

    it("keeps a framing header given as false a no-op, and lets a caller's Authorization replace the token's", function()
      local r = build { method = "GET", headers = { ["Content-Length"] = false, Host = false, Expect = false } }
      assert.same({ "Accept: application/json", "Authorization: Bearer secret-token" }, { r.headers[1], r.headers[2] })
      assert.equal(3, #r.headers)
      r = build { method = "GET", headers = { authorization = "Basic dXNlcjpwdw==", ["User-Agent"] = false } }
      assert.same({ "Accept: application/json", "authorization: Basic dXNlcjpwdw==" }, r.headers)
      r = build { method = "GET", headers = { Authorization = false, ["User-Agent"] = false } }
      assert.same({ "Accept: application/json" }, r.headers)
      -- names that only start like a framing header are the caller's
      r = build { method = "GET", headers = { ["Content-Length-X"] = "1", Hosts = "2", TEs = "3", ["User-Agent"] = false } }
      assert.same({ "Accept: application/json", "Authorization: Bearer secret-token", "Content-Length-X: 1",
                    "Hosts: 2", "TEs: 3" }, r.headers)
    end)

    it("refuses CR, LF and NUL in names and values, without echoing values", function()
      assert.matches("header X%-A: value contains CR, LF, NUL or another control character$",
        fails { headers = { ["X-A"] = "a\r\nInjected: 1" } })
      assert.matches("header X%-A: value contains CR, LF, NUL or another control character$",
        fails { headers = { ["X-A"] = "a\0b" } })
      assert.matches("header name %(with control or non%-ASCII characters%) is not a valid HTTP token$",
        fails { headers = { ["X\r\nB"] = "v" } })
      -- Found by fuzz/request.c: the message stays printable ASCII (no tab,
      -- no bytes that are not UTF-8).
      assert.matches("header name %(with control or non%-ASCII characters%) is not a valid HTTP token$",
        fails { headers = { ["\225h"] = "v" } })
      assert.matches("header name %(with control or non%-ASCII characters%) is not a valid HTTP token$",
        fails { headers = { ["X\tB"] = "v" } })
      assert.matches("header name X B is not a valid HTTP token$", fails { headers = { ["X B"] = "v" } })
      assert.matches("header names must be strings$", fails { headers = { "v" } })
      assert.matches("header X: value must be a string, a number or false$", fails { headers = { X = {} } })
      assert.matches("headers must be a table, got string$", fails { headers = "X: y" })
    end)

    -- Values are checked eight bytes at a time: a control character is
    -- found at every place in a word, a tab passes at every place.
    it("finds a control character or DEL at every offset of a value, and lets tabs through", function()
      for offset = 0, 19 do
        local before, after = ("a"):rep(offset), ("b"):rep(offset % 3 * 4)
        for _, bad in ipairs { "\0", "\r", "\n", "\31", "\127" } do
          assert.matches("header X%-A: value contains CR, LF, NUL or another control character$",
            fails { headers = { ["X-A"] = before .. bad .. after } })
        end
        assert.same("X-A: " .. before .. "\t" .. after .. "\t",
          build { method = "GET", headers = { ["X-A"] = before .. "\t" .. after .. "\t", Accept = false,
                                              Authorization = false, ["User-Agent"] = false } }.headers[1])
      end
    end)

    it("refuses a token with control characters or spaces and never shows it", function()
      for _, token in ipairs { "tok\r\nX-Evil: 1", "tok\0", "two words", "" } do
        local err = fails { token = token }
        assert.matches("the API token is empty or contains spaces or control characters$", err)
        if token ~= "" then assert.is_nil(err:find(token, 1, true)) end
      end
    end)
  end)

  it("refuses a bad method", function()
    assert.matches("method must be an HTTP token such as GET or PATCH$", fails { method = "GET /x" })
    assert.matches("method must be an HTTP token such as GET or PATCH$", fails { method = "" })
  end)

  it("reports body and query errors with their path", function()
    assert.matches("truto: body.tags%[1%].name: NaN cannot be written as JSON$",
      fails { body = { tags = { { name = 0 / 0 } } } })
    assert.matches("truto: query.remote_query.x: a function cannot be a query value$",
      fails { query = { remote_query = { x = print } } })
    assert.matches("truto: query must be a table, got string$", fails { query = "a=1" })
  end)

  it("does not modify the caller's tables", function()
    local query = { b = { 1 }, a = "x" }
    local body = { tags = {} }
    local headers = { ["X-N"] = 5 }
    build { query = query, body = body, headers = headers, list_fields = { tags = true } }
    assert.same({ b = { 1 }, a = "x" }, query)
    assert.same({ tags = {} }, body)
    assert.equal(5, headers["X-N"])
    assert.equal("number", type(headers["X-N"]))
  end)
end)

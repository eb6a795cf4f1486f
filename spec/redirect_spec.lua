-- truto.redirect: reference resolution (RFC 3986 §5.2) and the rules for
-- following a redirect (which status, which method and body, which
-- schemes, which credentials).  No server; runs under Lua 5.4 and LuaJIT.
local redirect = require "truto.redirect"

local BASE = "http://a/b/c/d;p?q"

describe("redirect.resolve", function()
  it("resolves RFC 3986 §5.4.1's normal examples (fragments dropped)", function()
    local examples = {
      { "g:h", "g:h" },
      { "g", "http://a/b/c/g" },
      { "./g", "http://a/b/c/g" },
      { "g/", "http://a/b/c/g/" },
      { "/g", "http://a/g" },
      { "//g", "http://g" },
      { "?y", "http://a/b/c/d;p?y" },
      { "g?y", "http://a/b/c/g?y" },
      { "#s", "http://a/b/c/d;p?q" },
      { "g#s", "http://a/b/c/g" },
      { "g?y#s", "http://a/b/c/g?y" },
      { ";x", "http://a/b/c/;x" },
      { "g;x", "http://a/b/c/g;x" },
      { "g;x?y#s", "http://a/b/c/g;x?y" },
      { "", "http://a/b/c/d;p?q" },
      { ".", "http://a/b/c/" },
      { "./", "http://a/b/c/" },
      { "..", "http://a/b/" },
      { "../", "http://a/b/" },
      { "../g", "http://a/b/g" },
      { "../..", "http://a/" },
      { "../../", "http://a/" },
      { "../../g", "http://a/g" },
    }
    for _, e in ipairs(examples) do
      assert.equal(e[2], redirect.resolve(BASE, e[1]), e[1])
    end
  end)

  it("resolves RFC 3986 §5.4.2's abnormal examples", function()
    local examples = {
      { "../../../g", "http://a/g" },
      { "../../../../g", "http://a/g" },
      { "/./g", "http://a/g" },
      { "/../g", "http://a/g" },
      { "g.", "http://a/b/c/g." },
      { ".g", "http://a/b/c/.g" },
      { "g..", "http://a/b/c/g.." },
      { "..g", "http://a/b/c/..g" },
      { "./../g", "http://a/b/g" },
      { "./g/.", "http://a/b/c/g/" },
      { "g/./h", "http://a/b/c/g/h" },
      { "g/../h", "http://a/b/c/h" },
      { "g;x=1/./y", "http://a/b/c/g;x=1/y" },
      { "g;x=1/../y", "http://a/b/c/y" },
      { "g?y/./x", "http://a/b/c/g?y/./x" },
      { "g?y/../x", "http://a/b/c/g?y/../x" },
      { "g#s/./x", "http://a/b/c/g" },
      { "g#s/../x", "http://a/b/c/g" },
      { "http:g", "http:g" },   -- strict parsers
    }
    for _, e in ipairs(examples) do
      assert.equal(e[2], redirect.resolve(BASE, e[1]), e[1])
    end
  end)

  it("reads against a base without a path, with a port, over https", function()
    assert.equal("https://h:8443/x", redirect.resolve("https://h:8443", "x"))
    assert.equal("https://h:8443/?y", redirect.resolve("https://h:8443", "?y"))
    assert.equal("https://h:8443/", redirect.resolve("https://h:8443", ""))
    assert.equal("https://other/p", redirect.resolve("https://h:8443/a/b", "//other/p"))
    assert.equal("https://h:8443/a/c?z", redirect.resolve("https://h:8443/a/b?q", "c?z"))
    assert.equal("HTTPS://elsewhere/", redirect.resolve("https://h/", "HTTPS://elsewhere/"))
  end)

  it("refuses a reference with white space or control characters", function()
    for _, ref in ipairs { "g h", " g", "g ", "g\th", "g\r\nX-Injected: 1", "g\0", "g\127", "http://a b/",
                           "\n", "g?a b" } do
      assert.is_nil(redirect.resolve(BASE, ref), ref)
    end
    -- white space after the fragment is dropped with it
    assert.equal("http://a/b/c/g", redirect.resolve(BASE, "g#s t"))
  end)

  it("keeps letters that look like pattern classes", function()
    assert.equal("http://a/b/c/z%zZ", redirect.resolve(BASE, "z%zZ"))
  end)
end)

describe("redirect.next", function()
  local function req(method, url, headers, body)
    return { method = method, url = url or "https://api.example.com/v1/a?x=1",
             headers = headers or { "Authorization: Bearer t", "Cookie: c=1", "Accept: */*" }, body = body }
  end
  local function refused(message) return { kind = "protocol", message = message, final = true } end

  it("follows 301, 302, 303, 307 and 308 with a Location; nothing else", function()
    local first = req("GET")
    for _, status in ipairs { 301, 302, 303, 307, 308 } do
      local nxt = redirect.next(first, first, status, { location = "/v2/b" }, 0)
      assert.same({ method = "GET", url = "https://api.example.com/v2/b", body = nil,
                    headers = { "Authorization: Bearer t", "Cookie: c=1", "Accept: */*" } }, nxt, status)
      assert.same({}, { redirect.next(first, first, status, {}, 0) }, status)
      assert.same({}, { redirect.next(first, first, status, { location = "" }, 0) }, status)
    end
    for _, status in ipairs { 200, 201, 204, 300, 304, 305, 306, 309, 399, 400, 404, 500 } do
      assert.same({}, { redirect.next(first, first, status, { location = "/elsewhere" }, 0) }, status)
    end
  end)

  it("turns 303 into a GET (HEAD stays), and 301/302 after a POST, dropping the body", function()
    local lines = { "Authorization: Bearer t", "Content-Type: application/json", "content-length: 2", "Accept: */*" }
    local cases = {
      { 303, "POST", "GET", false }, { 303, "PUT", "GET", false }, { 303, "PATCH", "GET", false },
      { 303, "DELETE", "GET", false }, { 303, "GET", "GET", false }, { 303, "HEAD", "HEAD", true },
      { 301, "POST", "GET", false }, { 302, "POST", "GET", false },
      { 301, "PATCH", "PATCH", true }, { 302, "PATCH", "PATCH", true }, { 307, "PATCH", "PATCH", true },
      { 308, "PATCH", "PATCH", true }, { 301, "PUT", "PUT", true }, { 302, "DELETE", "DELETE", true },
      { 307, "POST", "POST", true }, { 308, "POST", "POST", true }, { 308, "PUT", "PUT", true },
    }
    for _, c in ipairs(cases) do
      local status, method, want, keeps = c[1], c[2], c[3], c[4]
      local first = req(method, nil, lines, "{}")
      local nxt = redirect.next(first, first, status, { location = "/next" }, 0)
      local what = status .. " after " .. method
      assert.equal(want, nxt.method, what)
      assert.equal("https://api.example.com/next", nxt.url, what)
      if keeps then
        assert.equal("{}", nxt.body, what)
        assert.same(lines, nxt.headers, what)
      else
        assert.is_nil(nxt.body, what)
        assert.same({ "Authorization: Bearer t", "Accept: */*" }, nxt.headers, what)
      end
    end
  end)

  it("leaves the request it was given unchanged", function()
    local lines = { "Authorization: Bearer t", "Content-Type: application/json" }
    local first = req("POST", nil, lines, "{}")
    redirect.next(first, first, 303, { location = "https://other.example.com/" }, 0)
    assert.same(req("POST", nil, { "Authorization: Bearer t", "Content-Type: application/json" }, "{}"), first)
  end)

  it("refuses a sixth redirect", function()
    local first = req("GET")
    for hops = 0, 4 do assert.is_table(redirect.next(first, first, 302, { location = "/x" }, hops)) end
    for _, hops in ipairs { 5, 6, 100 } do
      assert.same({ nil, refused("more than 5 redirects") },
        { redirect.next(first, first, 302, { location = "/x" }, hops) })
    end
    -- no Location: the answer, whatever the count
    assert.same({}, { redirect.next(first, first, 302, {}, 5) })
  end)

  it("refuses schemes other than http and https", function()
    local first = req("GET")
    for _, location in ipairs { "ftp://h/file", "javascript:alert(1)", "file:///etc/passwd", "data:text/plain,x",
                                "mailto:a@b", "g:h", "ws://h/" } do
      assert.same({ nil, refused("refused a redirect to a scheme other than http or https") },
        { redirect.next(first, first, 302, { location = location }, 0) }, location)
    end
  end)

  it("refuses a Location it cannot read", function()
    local first = req("GET")
    for _, location in ipairs { "/a b", "/a\r\nX: 1", "https://h/\0" } do
      local nxt, err = redirect.next(first, first, 302, { location = location }, 0)
      assert.is_nil(nxt)
      assert.same({ "protocol", true }, { err.kind, err.final }, location)
    end
    for _, location in ipairs { "https://", "https:g", "https://u:p@h/", "https://h:0/", "https://h:99999/", "HTTPS:/x" } do
      assert.same({ nil, refused("refused a redirect to a malformed URL") },
        { redirect.next(first, first, 302, { location = location }, 0) }, location)
    end
  end)

  it("refuses https to http, allows http to https", function()
    local first = req("GET", "https://h/a")
    for _, location in ipairs { "http://h/a", "HTTP://h/a", "http://other/" } do
      assert.same({ nil, refused("refused a redirect from https to http") },
        { redirect.next(first, first, 301, { location = location }, 0) }, location)
    end
    first = req("GET", "http://h/a", { "Accept: */*" })
    assert.same({ method = "GET", url = "https://h/a", headers = { "Accept: */*" } },
      redirect.next(first, first, 301, { location = "https://h/a" }, 0))
    -- https -> http is refused from a later hop too, even if the first was http
    local second = req("GET", "https://h/b", { "Accept: */*" })
    assert.same({ nil, refused("refused a redirect from https to http") },
      { redirect.next(first, second, 302, { location = "http://h/c" }, 1) })
  end)

  it("keeps Authorization and Cookie on the first request's origin, drops them elsewhere", function()
    local creds = { "Authorization: Bearer t", "Cookie: c=1", "X-Other: 1" }
    local same = { "https://api.example.com/other", "https://API.Example.COM/x", "https://api.example.com:443/x",
                   "/relative", "//api.example.com/y", "?q=2" }
    local other = { "https://api.example.com:8443/x", "https://evil.example.com/x", "https://example.com/",
                    "//evil/", "https://api.example.com./x" }
    local first = req("GET", "https://api.example.com/v1/a", creds)
    for _, location in ipairs(same) do
      assert.same(creds, redirect.next(first, first, 302, { location = location }, 0).headers, location)
    end
    for _, location in ipairs(other) do
      assert.same({ "X-Other: 1" }, redirect.next(first, first, 302, { location = location }, 0).headers, location)
    end
    -- names in any case
    first = req("GET", "https://api.example.com/v1/a", { "AUTHORIZATION: Bearer t", "cookie: c=1", "X: 1" })
    assert.same({ "X: 1" }, redirect.next(first, first, 307, { location = "https://other/" }, 0).headers)
  end)

  it("compares origins with default ports and case-insensitive hosts", function()
    local creds = { "Authorization: Bearer t" }
    local first = req("GET", "http://h/a", creds)
    for _, location in ipairs { "http://h:80/b", "http://H/b", "http://H:80/b" } do
      assert.same(creds, redirect.next(first, first, 302, { location = location }, 0).headers, location)
    end
    for _, location in ipairs { "https://h/b", "https://h:80/b", "http://h:8080/b", "http://h:443/b" } do
      assert.same({}, redirect.next(first, first, 302, { location = location }, 0).headers, location)
    end
    first = req("GET", "https://h:443/a", creds)
    assert.same(creds, redirect.next(first, first, 302, { location = "https://h/b" }, 0).headers)
  end)

  it("keeps credentials dropped once dropped, even on the way back to the first origin", function()
    local creds = { "Authorization: Bearer t", "Cookie: c=1", "Accept: */*" }
    local first = req("GET", "https://api.example.com/a", creds)
    local hop1 = redirect.next(first, first, 302, { location = "https://cdn.example.com/b" }, 0)
    assert.same({ "Accept: */*" }, hop1.headers)
    local hop2 = redirect.next(first, hop1, 302, { location = "https://api.example.com/c" }, 1)
    assert.same({ method = "GET", url = "https://api.example.com/c", headers = { "Accept: */*" } }, hop2)
    -- and a chain that stays on the origin keeps them throughout
    local same1 = redirect.next(first, first, 307, { location = "/b" }, 0)
    local same2 = redirect.next(first, same1, 308, { location = "/c" }, 1)
    assert.same(creds, same2.headers)
  end)

  it("resolves a relative Location against the current request, not the first", function()
    local first = req("GET", "https://api.example.com/v1/a", { "Accept: */*" })
    local hop1 = redirect.next(first, first, 302, { location = "/v2/dir/b" }, 0)
    local hop2 = redirect.next(first, hop1, 302, { location = "c?x=1#frag" }, 1)
    assert.equal("https://api.example.com/v2/dir/c?x=1", hop2.url)
  end)
end)

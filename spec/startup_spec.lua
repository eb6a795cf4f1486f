-- Start-up: `require "truto"` and the libcurl transport's Lua module load no
-- libcurl; truto.curl_core (which curl.lua requires at the first transfer)
-- does.  Nor does a luv client load libssl before truto.tls (its first https
-- connection).  Each case runs in a fresh lua5.4 on build/5.4's modules (under make
-- asan this process's core needs runtimes a child does not get) and reads
-- that process's /proc/self/maps.
local sh = require "spec.support.shell"

-- Runs code in a fresh lua5.4, spec.support.memory loaded as `memory`;
-- returns its standard output.
local function fresh_lua(code)
  local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = "build/5.4/?.so;;" },
    "lua5.4 -e " .. sh.quote('local memory = require "spec.support.memory" ' .. code))
  assert(ok, err)
  return out
end

describe("start-up", function()
  it("require \"truto\", truto.new{} and the libcurl transport's module: libcurl is not loaded", function()
    assert.equal("false\tfalse\tfalse\n", fresh_lua([[
      local truto = require "truto"
      local after_truto = memory.mapped("libcurl")
      local client = truto.new { token = "t", transport = "curl" }
      print(after_truto, memory.mapped("libcurl"), type(client) ~= "table")]]))
  end)

  it("the first transfer loads it", function()
    assert.equal("false\ttrue\n", fresh_lua([[
      local client = require("truto").new { token = "t", base_url = "http://127.0.0.1:9", timeout = 1, max_retries = 0 }
      local before = memory.mapped("libcurl")
      client:ping()
      print(before, memory.mapped("libcurl"))]]))
  end)

  it("a luv client loads no libssl; truto.tls (its first https handshake) does", function()
    assert.equal("false\tfalse\ttrue\n", fresh_lua([[
      local truto = require "truto"
      local after_truto = memory.mapped("libssl")
      truto.new { token = "t", transport = "luv" }
      local after_client = memory.mapped("libssl")
      require "truto.tls"
      print(after_truto, after_client, memory.mapped("libssl"))]]))
  end)

  it("require \"truto.curl_core\" loads libcurl, whose version it tells", function()
    assert.equal("true\ttrue\n", fresh_lua([[
      local curl_core = require "truto.curl_core"
      print(memory.mapped("libcurl"), curl_core.curl_version:match("^%d+%.%d+%.%d+") ~= nil)]]))
  end)
end)

-- Start-up: `require "truto"` and the libcurl transport's Lua module load no
-- libcurl; truto.curl_core (which curl.lua requires at the first transfer)
-- does.  Each case runs in a fresh lua5.4 with this process's search paths
-- (the build's modules) and reads that process's /proc/self/maps.
local sh = require "spec.support.shell"

-- Runs code in a fresh lua5.4, spec.support.memory loaded as `memory`;
-- returns its standard output.
local function fresh_lua(code)
  local ok, out, err = sh.script(".", { LUA_PATH = package.path, LUA_CPATH = package.cpath },
    "lua5.4 -e " .. sh.quote('local memory = require "spec.support.memory" ' .. code))
  assert(ok, err)
  return out
end

describe("start-up", function()
  it("require \"truto\", then require \"truto.curl\": libcurl is not loaded", function()
    assert.equal("false\tfalse\n", fresh_lua([[
      require "truto"
      local after_truto = memory.mapped("libcurl")
      require "truto.curl"
      print(after_truto, memory.mapped("libcurl"))]]))
  end)

  it("require \"truto.curl_core\" loads libcurl, whose version it tells", function()
    assert.equal("true\ttrue\n", fresh_lua([[
      local curl_core = require "truto.curl_core"
      print(memory.mapped("libcurl"), curl_core.curl_version:match("^%d+%.%d+%.%d+") ~= nil)]]))
  end)
end)

-- The luv transport inside Neovim (nvim --headless, Debian's neovim 0.7:
-- LuaJIT, vim.loop), with the LuaJIT build of the core (make luajit),
-- against the emulator on real nginx over loopback, over http and https
-- (truto.tls, the LuaJIT build): a call never freezes
-- the editor (a 10 ms timer keeps firing while it waits 1 s upstream), and
-- the examples/neovim command runs as README.md tells (with this clone's
-- modules and LuaJIT build standing for `make install-luajit`).
local emu = require "spec.support.emulator"
local sh = require "spec.support.shell"
local checkout = require "spec.support.checkout"
local readme = require "spec.support.readme"

local REPO = checkout.REPO
local q = sh.quote

-- The environment of a user with lua-truto installed for LuaJIT (this
-- clone's modules and LuaJIT build stand for it).
local function user_env(work)
  return {
    PATH = REPO .. "/bin:/usr/sbin:/usr/bin:/bin", HOME = work, TMPDIR = work,
    LUA_PATH = REPO .. "/lua/?.lua;" .. REPO .. "/lua/?/init.lua;;", LUA_CPATH = REPO .. "/build/luajit/?.so;;",
  }
end

for _, scheme in ipairs { "http", "https" } do
  describe("the luv transport inside Neovim, over " .. scheme, function()
    setup(function()
      assert(sh.exists(REPO .. "/build/luajit/truto/core.so"), "run make luajit first")
      emu.start { tls = scheme == "https" }
    end)
    teardown(emu.stop)
    before_each(emu.reset)

    it("updates an opportunity while a 10 ms timer keeps firing, batches concurrently, refuses the main thread", function()
      local work = assert(sh.mktemp("truto-neovim"))
      local env = user_env(work)
      env.TRUTO_BASE_URL, env.TRUTO_API_TOKEN, env.TRUTO_INTEGRATED_ACCOUNT_ID = emu.base_url, emu.TOKEN, emu.ACCOUNT
      env.TRUTO_CA_FILE = emu.ca_file
      local ok, out, err = sh.script(REPO, env,
        "timeout 30 nvim --headless -u NONE -i NONE -c " .. q("luafile spec/support/neovim_calls.lua"))
      sh.run("rm -rf " .. q(work))
      assert(ok, out .. err)
      local lines = {}
      for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal(4, #lines, out .. err)
      assert.equal("main thread: phase: cannot make an HTTP call outside a coroutine with transport \"luv\": "
        .. "run it in one that libuv's callbacks can resume, e.g. coroutine.wrap(function() ... end)(), "
        .. "with the loop running (uv.run(), or Neovim's own)", lines[1])
      assert.equal("update: 10000003 4321 HTTP 200, 1 attempt(s)", lines[2])
      local ticks, seconds = lines[3]:match("^ticks: (%d+) in (%d+%.%d+) s$")
      ticks, seconds = tonumber(ticks), tonumber(seconds)
      assert.is_true(seconds >= 1 and seconds < 1.5, lines[3])
      -- One tick per 10 ms of the wait: a frozen loop would give none.
      assert.is_true(ticks >= 80 and ticks <= seconds * 100 + 1, lines[3])
      assert.equal("batch: 10000003=1 10000004=2 10000005=3 10000006=4 in under 2 s", lines[4])
      assert.equal(5, #emu.requests())
    end)
  end)
end

describe("examples/neovim/truto.lua", function()
  it("runs as README.md says: the update against the emulator, Neovim quitting once it is done", function()
    local work = assert(sh.mktemp("truto-neovim"))
    local ok, out, err = sh.script(REPO, user_env(work), readme.block("examples/neovim/truto.lua"))
    sh.run("rm -rf " .. q(work))
    assert(ok, out .. err)
    assert.equal("", out)
    assert.equal("Truto: opportunity 10000003: amount 990 (HTTP 200)", err)
  end)
end)

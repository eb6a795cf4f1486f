-- The luv transport (transport = "luv") in the real host: calls made in
-- coroutines on libuv's loop (lua-luv, Lua 5.4), against the emulator on
-- real nginx over loopback.  Each call yields while libuv waits and a
-- libuv callback resumes it, so the loop's other work goes on: shown by
-- timings (eight 1 s calls in about 1 s) and by a uv timer that keeps
-- firing meanwhile.  The cases cqueues shares: spec/support/host_cases.lua.
-- Neovim's vim.loop: spec/neovim_spec.lua.
local uv = require "luv"
local truto = require "truto"
local emulator = require "truto.emulator"
local emu = require "spec.support.emulator"
local loop = require "spec.support.luv_loop"
local host_cases = require "spec.support.host_cases"

local Q = { integrated_account_id = emu.ACCOUNT }

local host = {
  name = "luv",
  run = loop.run,
  ticker = loop.ticker,
  idle = function(seconds)
    loop.ticker(seconds, 100)
    uv.run()
  end,
  close = loop.close,
  now = function() return uv.hrtime() / 1e9 end,
  -- A callback of the running loop, on the main thread.
  unyieldable = function(f)
    local results
    local timer = uv.new_timer()
    timer:start(0, 0, function()
      timer:close()
      results = table.pack(f())
    end)
    uv.run()
    return table.unpack(results, 1, results.n)
  end,
  phase_message = "cannot make an HTTP call outside a coroutine with transport \"luv\": "
    .. "run it in one that libuv's callbacks can resume, e.g. coroutine.wrap(function() ... end)(), "
    .. "with the loop running (uv.run(), or Neovim's own)",
  refused = "ECONNREFUSED",
  bad_ca_file = "cannot load the CA certificates of /nonexistent/ca.pem: No such file or directory",
  words = { ticking = "a uv timer firing", loop = "the loop", others = "the loop", outside = "a coroutine" },
}

describe("the luv transport", function()
  setup(emu.start)
  teardown(emu.stop)
  before_each(emu.reset)

  host_cases.declare(it, host_cases.over_http, host)

  it("says what to install when luv is missing, and takes the uv module given as option uv", function()
    local saved = { luv = package.loaded.luv, transport = package.loaded["truto.luv"] }
    package.loaded.luv, package.loaded["truto.luv"] = nil, nil
    package.preload.luv = function() error("module 'luv' not found:\n\tno field package.preload['luv']", 0) end
    local ok, err = pcall(function()
      local made = truto.new { transport = "luv", token = emu.TOKEN }
      return made
    end)
    local given = emu.client { transport = "luv", uv = saved.luv }
    package.preload.luv = nil
    package.loaded.luv, package.loaded["truto.luv"] = saved.luv, saved.transport
    assert.is_false(ok)
    assert.equal("spec/luv_spec.lua:58: truto.new: transport \"luv\" cannot be loaded: it needs luv "
      .. "(Debian: apt-get install lua-luv), Neovim's vim.loop or the option uv: module 'luv' not found:", err)
    local record = loop.run(function() return given.unified_api:get("crm", "opportunities", "10000003", Q) end)
    assert.equal("10000003", record.id)
    loop.close(given)
    ok, err = pcall(truto.new, { transport = "luv", token = emu.TOKEN, uv = {} })
    assert.is_false(ok)
    assert.matches("option 'uv' must be a uv module %(luv's, with new_tcp%)$", err)
  end)

  it("fails a name that does not resolve with kind \"connect\"", function()
    local c = emu.client { transport = "luv", base_url = "http://nowhere.invalid", max_retries = 0 }
    local record, err = loop.run(function() return c.unified_api:get("crm", "opportunities", "1", Q) end)
    assert.is_nil(record)
    assert.equal("connect", err.kind)
    assert.matches("^cannot resolve nowhere.invalid: could not be resolved %(EAI_", err.message)
    loop.close(c)
  end)
end)

describe("the luv transport over HTTPS (truto.tls over libuv's TCP handles)", function()
  local tls = {}

  setup(function() tls.server = assert(emulator.start { tls = true }) end)
  teardown(function() tls.server:stop() end)
  before_each(function() assert(tls.server:reset()) end)

  host_cases.declare(it, host_cases.over_https, host, tls)
end)

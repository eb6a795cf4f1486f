-- The cqueues transport (transport = "cqueues") in the real host: calls made
-- in coroutines of a cqueues controller, against the emulator on real nginx
-- over loopback.  Each call yields to the controller while it waits, so the
-- controller's other coroutines go on: shown by timings (eight 1 s calls in
-- about 1 s) and by a ticker coroutine that keeps running meanwhile.  The
-- cases luv shares: spec/support/host_cases.lua.
local cqueues = require "cqueues"
local truto = require "truto"
local emulator = require "truto.emulator"
local emu = require "spec.support.emulator"
local controller = require "spec.support.controller"
local host_cases = require "spec.support.host_cases"

local host = {
  name = "cqueues",
  run = controller.run,
  ticker = controller.ticker,
  idle = function(seconds) controller.run(function() cqueues.sleep(seconds) end) end,
  close = function(client) client:close() end,
  now = cqueues.monotime,
  -- A coroutine of its own inside a controller cannot yield to it.
  unyieldable = function(f) return controller.run(function() return coroutine.wrap(f)() end) end,
  phase_message = "cannot make an HTTP call outside a coroutine run by a cqueues controller: "
    .. "run it in one, e.g. cq:wrap(function() ... end) then cq:loop()",
  refused = "Connection refused",
  bad_ca_file = "cannot load the CA certificates: /nonexistent/ca.pem: No such file or directory",
  words = { ticking = "the controller's other coroutines running", loop = "the controller",
            others = "the other coroutines", outside = "a coroutine run by a controller" },
}

describe("the cqueues transport", function()
  setup(emu.start)
  teardown(emu.stop)
  before_each(emu.reset)

  host_cases.declare(it, host_cases.over_http, host)

  it("says what to install when cqueues is missing", function()
    local saved = { cqueues = package.loaded.cqueues, transport = package.loaded["truto.cqueues"] }
    package.loaded.cqueues, package.loaded["truto.cqueues"] = nil, nil
    package.preload.cqueues = function() error("module 'cqueues' not found:\n\tno field package.preload['cqueues']", 0) end
    local ok, err = pcall(function()
      local made = truto.new { transport = "cqueues", token = emu.TOKEN }
      return made
    end)
    package.preload.cqueues = nil
    package.loaded.cqueues, package.loaded["truto.cqueues"] = saved.cqueues, saved.transport
    assert.is_false(ok)
    assert.equal("spec/cqueues_spec.lua:43: truto.new: transport \"cqueues\" cannot be loaded: it needs cqueues "
      .. "(Debian: apt-get install lua-cqueues lua-luaossl): module 'cqueues' not found:", err)
  end)
end)

describe("the cqueues transport over HTTPS", function()
  local tls = {}

  setup(function() tls.server = assert(emulator.start { tls = true }) end)
  teardown(function() tls.server:stop() end)
  before_each(function() assert(tls.server:reset()) end)

  host_cases.declare(it, host_cases.over_https, host, tls)
end)

-- Installing, as the README says, from a fresh checkout: `make install`
-- (into a DESTDIR) and LuaRocks (into a HOME of its own); then, from
-- another directory, with the search paths pointing at the installed tree
-- only, the installed commands and modules: `truto-emulator --detach`, the
-- seed's update with `truto`, and the busted example that tests code
-- against `truto.emulator`.  Last, uninstalling leaves nothing behind, and
-- no build leaves anything in the checkout.
local checkout = require "spec.support.checkout"
local readme = require "spec.support.readme"
local sh = require "spec.support.shell"
local truto = require "truto"

local ACCOUNT = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"

-- Every file under dir, sorted, relative to it.
local function files_under(dir)
  local list = {}
  for name in sh.capture("cd " .. sh.quote(dir) .. " && find . -type f | sort"):gmatch("[^\n]+") do
    list[#list + 1] = name:sub(3)
  end
  return list
end

-- The checks every installation must pass, run from `cwd` (not the
-- checkout) with env pointing at the installed tree (its root: tree) only.
local function check_installed(cwd, env, tree)
  -- the installed commands and modules, not the checkout's
  local ok, out, err = sh.script(cwd, env, "command -v truto; command -v truto-emulator; lua5.4 -e "
    .. sh.quote('print(package.searchpath("truto", package.path)) print(package.searchpath("truto.core", '
      .. 'package.cpath)) print(package.searchpath("truto.curl_core", package.cpath)) print(require("truto").VERSION)'))
  assert(ok, err)
  assert.equal(table.concat({ tree .. "/bin/truto", tree .. "/bin/truto-emulator",
    tree .. "/share/lua/5.4/truto/init.lua", tree .. "/lib/lua/5.4/truto/core.so",
    tree .. "/lib/lua/5.4/truto/curl_core.so", truto.VERSION }, "\n") .. "\n", out)

  -- truto-emulator --detach, then the README's update through the installed `truto`
  local started, lines, serr = sh.script(cwd, env, "truto-emulator --detach")
  assert(started, serr)
  local url, prefix = lines:match("^(http://127%.0%.0%.1:%d+)\npid=%d+\nprefix=(%S+)\n$")
  assert(url, lines)
  local updated, record, uerr = sh.script(cwd, {
    PATH = env.PATH, LUA_PATH = env.LUA_PATH, LUA_CPATH = env.LUA_CPATH, HOME = env.HOME,
    TRUTO_BASE_URL = url, TRUTO_API_TOKEN = "test-token",
  }, "truto unified update crm opportunities 23423523 --integrated-account-id " .. ACCOUNT
    .. [[ --data '{"name":"Acme Corp renewal 2027","amount":125000.5,"tags":[]}']]
    .. " --exclude description --remote-query foo=bar")
  local stopped = sh.script(cwd, env, "truto-emulator --stop " .. sh.quote(prefix))
  assert(updated, uerr)
  assert(stopped)
  local value = assert(truto.decode_json(record))
  assert.equal("Acme Corp renewal 2027", value.name)
  assert.equal(125000.5, value.amount)
  assert.same({}, value.tags)
  assert.is_nil(value.description)
  assert.equal("bar", value.remote_data.remote_query.foo)
  assert.is_false(sh.exists(prefix), "truto-emulator --stop left " .. prefix)

  -- a user's busted suite, on the installed truto.emulator
  local tested, report, terr = sh.script(cwd, env, "lua5.4 /usr/bin/busted -o TAP emulator_spec.lua")
  assert(tested, report .. terr)
  assert.truthy(report:find("\n1..3\n", 1, true) or report:find("^1..3\n"), report)
  assert.falsy(report:find("not ok", 1, true), report)
end

describe("installing #checkout", function()
  local dir, work

  -- each case: a fresh checkout, and a work dir elsewhere with the busted example
  before_each(function()
    dir = checkout.fresh("truto-install")
    work = assert(sh.mktemp("truto-install-work"))
    assert(sh.run("cp " .. sh.quote(dir .. "/examples/emulator_spec.lua") .. " " .. sh.quote(work)))
  end)

  after_each(function()
    checkout.remove(dir)
    checkout.remove(work)
  end)

  it("with make install into a DESTDIR: run from there, then make uninstall removes every file", function()
    local stage = work .. "/stage"
    local install = readme.block("make install PREFIX=")
    local ok, out, err = sh.script(dir, { DESTDIR = stage, LUA_PATH = false, LUA_CPATH = false }, install)
    assert(ok, out .. err)
    assert.equal("", checkout.leftovers(dir), "make install left files that git does not ignore")

    local tree = stage .. "/usr/local"
    check_installed(work, {
      PATH = tree .. "/bin:/usr/sbin:/usr/bin:/bin", HOME = work,
      LUA_PATH = tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua;;",
      LUA_CPATH = tree .. "/lib/lua/5.4/?.so;;",
    }, tree)
    -- the commands name the installed directories, not the checkout
    local command = assert(sh.read_file(tree .. "/bin/truto"))
    assert.truthy(command:find("\nlocal LUA_DIR, CORE_DIR = [[/usr/local/share/lua/5.4]], [[/usr/local/lib/lua/5.4]]\n",
      1, true))
    assert.falsy(command:find(dir, 1, true))

    ok, out, err = sh.script(dir, { DESTDIR = stage }, readme.block("make uninstall PREFIX="))
    assert(ok, out .. err)
    assert.same({}, files_under(stage))
    assert.equal("", sh.capture("find " .. sh.quote(stage) .. " -name 'truto*'"))

    -- INSTALL_LMOD, INSTALL_CMOD and BINDIR put each part elsewhere; the
    -- commands name those directories.
    local places = "INSTALL_LMOD=/opt/t/lua INSTALL_CMOD=/opt/t/lib BINDIR=/opt/t/commands"
    ok, out, err = sh.script(dir, { DESTDIR = stage }, "make install " .. places)
    assert(ok, out .. err)
    local installed = files_under(stage)
    assert.equal("opt/t/commands/truto", installed[1])
    assert.equal("opt/t/commands/truto-emulator", installed[2])
    assert.equal("opt/t/lib/truto/core.so", installed[3])
    assert.equal("opt/t/lib/truto/curl_core.so", installed[4])
    assert.equal("opt/t/lib/truto/redis_core.so", installed[5])
    assert.equal("opt/t/lib/truto/tls.so", installed[6])
    assert.equal("opt/t/lua/truto/cli.lua", installed[7])
    -- 2 commands, the 4 C modules, the Lua modules, the emulator's template, fixtures and handlers
    local modules = select(2, sh.capture("cd " .. sh.quote(dir) .. " && ls lua/truto/*.lua"):gsub("\n", ""))
    local handlers = select(2, sh.capture("cd " .. sh.quote(dir) .. " && ls emulator/lua/truto_emulator/*.lua")
      :gsub("\n", ""))
    assert.equal(6 + modules + 2 + handlers, #installed)
    assert.truthy(sh.read_file(stage .. "/opt/t/commands/truto-emulator")
      :find("\nlocal LUA_DIR, CORE_DIR = [[/opt/t/lua]], [[/opt/t/lib]]\n", 1, true))
    ok, out, err = sh.script(dir, { DESTDIR = stage }, "make uninstall " .. places)
    assert(ok, out .. err)
    assert.same({}, files_under(stage))
  end)

  it("for nginx's LuaJIT with make install-luajit: the library and the emulator under luajit", function()
    local stage = work .. "/stage"
    local ok, out, err = sh.script(dir, { DESTDIR = stage, LUA_PATH = false, LUA_CPATH = false },
      readme.block("make install-luajit"))
    assert(ok, out .. err)
    local tree = stage .. "/usr/local"
    assert.is_false(sh.exists(tree .. "/bin/truto"), "install-luajit installs no command")
    local code = [[
      local truto = require "truto"
      local server = assert(require("truto.emulator").start())
      local client = truto.new { token = "test-token", base_url = server.base_url }
      local user = assert(client.unified_api:get("crm", "users", "111", { integrated_account_id = "]] .. ACCOUNT .. [[" }))
      print(user.id, package.searchpath("truto", package.path), package.searchpath("truto.core", package.cpath),
        package.searchpath("truto.curl_core", package.cpath))
      server:stop()]]
    ok, out, err = sh.script(work, {
      HOME = work, LUA_PATH = tree .. "/share/lua/5.1/?.lua;" .. tree .. "/share/lua/5.1/?/init.lua;;",
      LUA_CPATH = tree .. "/lib/lua/5.1/?.so;;",
    }, "luajit -e " .. sh.quote(code))
    assert(ok, out .. err)
    assert.equal(("111\t%s/share/lua/5.1/truto/init.lua\t%s/lib/lua/5.1/truto/core.so\t%s/lib/lua/5.1/truto/curl_core.so\n")
      :format(tree, tree, tree), out)
    assert.equal("", checkout.leftovers(dir), "make install-luajit left files that git does not ignore")

    ok, out, err = sh.script(dir, { DESTDIR = stage }, "make uninstall-luajit PREFIX=/usr/local")
    assert(ok, out .. err)
    assert.same({}, files_under(stage))
  end)

  it("with LuaRocks as the README says: nothing left in the checkout, and luarocks remove cleans up", function()
    local home = work .. "/home"
    assert(sh.run("mkdir -p " .. sh.quote(home)))
    local ok, out, err = sh.script(dir, { HOME = home, LUA_PATH = false, LUA_CPATH = false },
      readme.block("luarocks --lua-version 5.4 --local make"))
    assert(ok, out .. err)
    assert.equal("", checkout.leftovers(dir, true), "luarocks make left files in the checkout")

    local tree = home .. "/.luarocks"
    local paths = sh.capture("HOME=" .. sh.quote(home) .. " luarocks --lua-version 5.4 --local path")
    local lua_path = paths:match("LUA_PATH='([^']*)'")
    local lua_cpath = paths:match("LUA_CPATH='([^']*)'")
    assert(lua_path and lua_cpath, paths)
    check_installed(work, {
      PATH = tree .. "/bin:/usr/sbin:/usr/bin:/bin", HOME = home, LUA_PATH = lua_path, LUA_CPATH = lua_cpath,
    }, tree)

    ok, out, err = sh.script(work, { HOME = home }, "luarocks --lua-version 5.4 --local remove truto")
    assert(ok, out .. err)
    assert.same({ "lib/luarocks/rocks-5.4/manifest" }, files_under(tree))
  end)
end)

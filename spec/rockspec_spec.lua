-- The rockspecs and the version: truto-scm-1.rockspec (main) and the
-- release rockspec of truto.VERSION describe the same build, from the public
-- repository, and the version is written in one place (csrc/truto.h), which
-- the release rockspec, CHANGELOG.md and the User-Agent follow.
local sh = require "spec.support.shell"
local truto = require "truto"

local PUBLIC_GIT = "git+https://github.com/lua-truto/lua-truto.git"

local function load_rockspec(file)
  local rock = {}
  local chunk = assert(loadfile(file, "t", rock))
  chunk()
  return rock
end

local function tracked(pattern)
  local files = {}
  for name in sh.capture("git ls-files -co --exclude-standard " .. sh.quote(pattern)):gmatch("[^\n]+") do
    if sh.exists(name) then files[#files + 1] = name end
  end
  table.sort(files)
  return files
end

describe("the rockspecs", function()
  local release_file = "truto-" .. truto.VERSION .. "-1.rockspec"
  local scm, release

  setup(function()
    scm = load_rockspec("truto-scm-1.rockspec")
    release = load_rockspec(release_file)
  end)

  it("are the scm rockspec and one release rockspec, for truto.VERSION", function()
    assert.same({ release_file, "truto-scm-1.rockspec" }, tracked("*.rockspec"))
    assert.equal("truto", scm.package)
    assert.equal("truto", release.package)
    assert.equal("scm-1", scm.version)
    assert.equal(truto.VERSION .. "-1", release.version)
  end)

  it("fetch the public repository: main for scm, the version's tag for the release", function()
    assert.same({ url = PUBLIC_GIT, branch = "main" }, scm.source)
    assert.same({ url = PUBLIC_GIT, tag = "v" .. truto.VERSION }, release.source)
  end)

  it("describe the same build, dependencies and package", function()
    for _, field in ipairs({ "rockspec_format", "description", "dependencies", "external_dependencies", "build" }) do
      assert.same(scm[field], release[field], field)
    end
  end)

  it("build with the Makefile's rock-install target, passing LuaRocks' directories", function()
    local build = scm.build
    assert.equal("make", build.type)
    assert.is_false(build.build_pass)
    assert.equal("rock-install", build.install_target)
    assert.truthy(sh.read_file("Makefile"):find("\nrock-install:", 1, true))
    assert.same({ "$(LUA)", "$(LUA_INCDIR)", "$(LUADIR)", "$(LIBDIR)" },
      { build.install_variables.LUA, build.install_variables.LUA_INCDIR, build.install_variables.INSTALL_LMOD,
        build.install_variables.INSTALL_CMOD })
  end)

  it("install every command in bin/", function()
    local expected = {}
    for _, file in ipairs(tracked("bin/*")) do expected[file:match("^bin/(.+)$")] = file end
    assert.same({ truto = "bin/truto", ["truto-emulator"] = "bin/truto-emulator" }, expected)
    assert.same(expected, scm.build.install.bin)
  end)

  it("declare the license that LICENSE holds", function()
    assert.equal("MIT", scm.description.license)
    assert.truthy(sh.read_file("LICENSE"):find("^MIT License\n"))
  end)
end)

describe("the version", function()
  it("is a semantic version", function()
    assert.truthy(truto.VERSION:match("^%d+%.%d+%.%d+$"), truto.VERSION)
  end)

  it("is the first release in CHANGELOG.md", function()
    local text = assert(sh.read_file("CHANGELOG.md"))
    assert.equal(truto.VERSION, text:match("\n## %[?(%d+%.%d+%.%d+)%]?"))
  end)

  it("is written in csrc/truto.h and nowhere else but the release rockspec and the changelog", function()
    local found = sh.capture("git grep --untracked -l -I -F " .. sh.quote(truto.VERSION) .. " 2>/dev/null")
    local files = {}
    for name in found:gmatch("[^\n]+") do files[#files + 1] = name end
    table.sort(files)
    assert.same({ "CHANGELOG.md", "csrc/truto.h", "truto-" .. truto.VERSION .. "-1.rockspec" }, files)
    assert.truthy(sh.read_file("csrc/truto.h"):find('\n#define TRUTO_VERSION "' .. truto.VERSION .. '"\n', 1, true))
  end)
end)

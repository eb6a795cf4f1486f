-- truto-scm-1.rockspec builds what `make` builds: every C source and every
-- library module, so `luarocks make` and `make` cannot drift apart.
local function list(cmd)
  local out = {}
  local pipe = assert(io.popen(cmd))
  for line in pipe:lines() do out[#out + 1] = line end
  pipe:close()
  table.sort(out)
  return out
end

describe("truto-scm-1.rockspec", function()
  local rock = {}
  assert(loadfile("truto-scm-1.rockspec", "t", rock))()

  it("compiles every file in csrc/", function()
    local sources = rock.build.modules["truto.core"].sources
    table.sort(sources)
    assert.same(list("ls csrc/*.c"), sources)
  end)

  it("installs every module in lua/truto/ except the test emulator's controller", function()
    local expected = {}
    for _, file in ipairs(list("ls lua/truto/*.lua")) do
      local name = file:match("lua/truto/(.+)%.lua$")
      if name ~= "emulator" then
        expected[#expected + 1] = name == "init" and "truto" or "truto." .. name
      end
    end
    local modules = {}
    for name, src in pairs(rock.build.modules) do
      if type(src) == "string" then modules[#modules + 1] = name end
    end
    table.sort(modules)
    table.sort(expected)
    assert.same(expected, modules)
  end)
end)

-- README.md as a new user meets it: every shell block is run, exactly as
-- written, here or by the spec (or CI step) named for it, and a block that
-- nothing runs fails; every Lua example runs against the emulator and
-- prints what its `-->` lines say; the nginx excerpts are the example
-- configuration's own lines; every link leads somewhere.
local checkout = require "spec.support.checkout"
local readme = require "spec.support.readme"
local sh = require "spec.support.shell"
local truto = require "truto"

local REPO = checkout.REPO
local q = sh.quote

-- Who runs each shell block, by a text only that block holds: "here" (a
-- case below), a spec file (which must take the block with
-- readme.block(needle)), or "ci" (a line of .ci/run).
local RUNNERS = {
  ["apt-get install"] = "here",
  ["make install PREFIX="] = "spec/install_spec.lua",
  ["make uninstall PREFIX="] = "spec/install_spec.lua",
  ["luarocks --lua-version 5.4 --local make"] = "spec/install_spec.lua",
  ["make install-luajit"] = "spec/install_spec.lua",
  ["print(require \"truto\".VERSION)"] = "here",
  ["make demo"] = "here",
  ["truto unified update crm opportunities 23423523"] = "here",
  ["truto --version"] = "here",
  ["truto ping"] = "here",
  ["truto batch updates.jsonl"] = "here",
  ["examples/openresty/run"] = "spec/openresty_example_spec.lua",
  ["busted examples/emulator_spec.lua"] = "here",
  ["examples/cqueues/update_opportunities.lua"] = "here",
  ["examples/neovim/truto.lua"] = "spec/neovim_spec.lua",
  ["haproxy -f examples/haproxy/haproxy.cfg"] = "here",
  ["make docs"] = "spec/docs_spec.lua",
  ["make test"] = "ci",
}

-- The environment of a user who installed lua-truto (this clone's build
-- stands for the installed tree), with no Truto variables of their own.
local function user_env(work)
  return {
    PATH = REPO .. "/bin:/usr/sbin:/usr/bin:/bin", HOME = work, TMPDIR = work,
    LUA_PATH = REPO .. "/lua/?.lua;" .. REPO .. "/lua/?/init.lua;;", LUA_CPATH = REPO .. "/build/5.4/?.so;;",
  }
end

-- Stops every emulator whose temp dir is under work (a block that failed
-- half-way leaves its emulator running).
local function stop_emulators(work)
  for pid_file in sh.capture("ls " .. q(work) .. "/truto-emulator.*/nginx.pid 2>/dev/null"):gmatch("[^\n]+") do
    sh.run(q(REPO .. "/bin/truto-emulator") .. " --stop " .. q(pid_file:match("^(.*)/nginx.pid$")) .. " >/dev/null 2>&1")
  end
end

describe("README.md #checkout", function()
  local work

  before_each(function() work = assert(sh.mktemp("truto-readme")) end)
  after_each(function()
    stop_emulators(work)
    checkout.remove(work)
  end)

  it("has no shell block that nothing runs, and each runner takes its block", function()
    local claimed = {}
    for _, block in ipairs(readme.blocks()) do
      if block.lang == "sh" then
        local needles = {}
        for needle in pairs(RUNNERS) do
          if block.text:find(needle, 1, true) then needles[#needles + 1] = needle end
        end
        assert(#needles == 1, ("README.md line %d: the shell block is claimed by %d runners (%s):\n%s")
          :format(block.line, #needles, table.concat(needles, ", "), block.text))
        claimed[needles[1]] = true
      else
        assert(block.lang == "lua" or block.lang == "nginx",
          ("README.md line %d: a ``` block must say sh, lua or nginx, not '%s'"):format(block.line, block.lang))
      end
    end
    for needle, runner in pairs(RUNNERS) do
      assert(claimed[needle], "no README shell block holds " .. needle)
      if runner == "ci" then
        assert.truthy(sh.read_file(REPO .. "/.ci/run"):find("\n" .. readme.block(needle), 1, true), ".ci/run runs " .. needle)
      elseif runner ~= "here" then
        local text = assert(sh.read_file(REPO .. "/" .. runner), runner)
        assert.truthy(text:find("readme.block(" .. string.format("%q", needle) .. ")", 1, true),
          runner .. " takes the block holding " .. needle)
      end
    end
  end)

  it("installs the requirements, the packages `make demo` installs (already there: apt-get has nothing to do)", function()
    local text = readme.block("apt-get install")
    local makefile = assert(sh.read_file(REPO .. "/Makefile"))
    local listed = makefile:match("\nRUN_PACKAGES%s*:=%s*(.-[^\\])\n"):gsub("\\\n", " ")
    local expected, named = {}, {}
    for name in listed:gmatch("%S+") do expected[#expected + 1] = name end
    for name in text:match("%-%-no%-install%-recommends(.*)$"):gsub("\\\n", " "):gmatch("%S+") do
      named[#named + 1] = name
    end
    table.sort(expected)
    table.sort(named)
    assert.same(expected, named)
    local root = sh.capture("id -u"):match("^0\n$")
    local ok, out, err = sh.script(work, user_env(work), root and text or "sudo -n sh -c " .. q(text))
    assert(ok, out .. err)
    assert.truthy(out:find("0 newly installed", 1, true), out)
  end)

  it("builds and uses the library from a fresh checkout, and make demo runs the seed's update there", function()
    local dir = checkout.fresh("truto-readme-checkout")
    local env = user_env(work)
    env.PATH = "/usr/sbin:/usr/bin:/bin"
    env.LUA_PATH, env.LUA_CPATH = false, false
    local ok, out, err = sh.script(dir, env, readme.block("print(require \"truto\".VERSION)"))
    assert(ok, out .. err)
    assert.equal(truto.VERSION .. "\n", out:match("[^\n]*\n$"))

    ok, out, err = sh.script(dir, env, readme.block("make demo"))
    assert(ok, out .. err)
    assert.truthy(out:find("\nPATCH http://127.0.0.1:%d+/unified/crm/opportunities/23423523%?"), out)
    assert.truthy(out:find('\n  "name": "Acme Corp renewal 2027",\n', 1, true), out)
    assert.truthy(out:find("== emulator stopped", 1, true), out)
    local left = checkout.leftovers(dir)
    checkout.remove(dir)
    assert.equal("", left, "make and make demo left files that git does not ignore")
  end)

  it("updates the opportunity from the shell against the emulator", function()
    local ok, out, err = sh.script(work, user_env(work), readme.block("truto unified update crm opportunities 23423523"))
    assert(ok, out .. err)
    local record = assert(truto.decode_json(out))
    assert.equal("23423523", record.id)
    assert.equal("Acme Corp renewal 2027", record.name)
    assert.equal(125000.5, record.amount)
    assert.same({}, record.tags)
    assert.is_nil(record.description)
    assert.same({ foo = "bar" }, record.remote_data.remote_query)
  end)

  it("runs the command line's examples", function()
    local ok, out, err = sh.script(work, user_env(work), readme.block("truto --version"))
    assert(ok, out .. err)
    local records = {}
    for line in (sh.read_file(work .. "/opportunities.jsonl") or ""):gmatch("[^\n]+") do
      records[#records + 1] = assert(truto.decode_json(line)).id
    end
    assert.equal(30, #records)
    assert.equal("23423523", records[1])
    local raw, merged, deals, custom, version = out:match("^(%b{})\n(%b{})\n(%b{})\n(%b{})\n(truto [^\n]+\n)$")
    assert(raw, out)
    assert.equal("Acme renewal 2024", assert(truto.decode_json(raw)).properties.dealname)
    assert.same({ "5002" }, assert(truto.decode_json(merged)).result.merged_ids)
    assert.equal(5, #assert(truto.decode_json(deals)).result)
    assert.same({ week = 3 }, assert(truto.decode_json(custom)).result.body)
    assert.equal(("truto %s (lua-truto %s, libcurl %s, Lua 5.4)\n"):format(truto.VERSION, truto.VERSION,
      require("truto.curl_core").curl_version), version)
  end)

  it("runs the command line's platform examples", function()
    local ok, out, err = sh.script(work, user_env(work), readme.block("truto ping"))
    assert(ok, out .. err)
    local ping, link, refreshed, user, upload = out:match("^(%b{})\n(%b{})\n(%b{})\n(%b{})\n(%b{})\n$")
    assert(ping, out)
    assert.equal("{}", ping)
    assert.truthy(link:match('^{"link_token":"%x+%-%x+%-%x+%-%x+%-%x+"}$'), link)
    assert.equal('{"success":true}', refreshed)
    assert.equal("Ada Admin", assert(truto.decode_json(user)).name)
    assert.same({ file = { filename = "invoice.txt", content_type = "application/octet-stream", size = 11,
                           sha256 = sh.text_sha256("Invoice 42\n") }, parent_id = "42" },
                assert(truto.decode_json(upload)).result.body)
  end)

  it("runs the command line's batch example: results in order, exit 1 for the 404, a rerun that sends nothing", function()
    local ok, out, err = sh.script(work, user_env(work), readme.block("truto batch updates.jsonl"))
    assert(ok, out .. err)
    assert.equal("exit status 1\nthe rerun sent nothing and printed the same results\n", out)
    local lines = {}
    for line in assert(sh.read_file(work .. "/results.jsonl")):gmatch("[^\n]+") do
      lines[#lines + 1] = assert(truto.decode_json(line))
    end
    assert.equal(3, #lines)
    assert.same({ 1, 200, "23423523", 1000 }, { lines[1].index, lines[1].status, lines[1].result.id,
                                                lines[1].result.amount })
    assert.same({ 2, 200, "10000003", 2500.5 }, { lines[2].index, lines[2].status, lines[2].result.id,
                                                  lines[2].result.amount })
    assert.same({ 3, "http", 404 }, { lines[3].index, lines[3].error.kind, lines[3].error.status })
  end)

  it("runs the busted example against the emulator", function()
    local env = user_env(work)
    local ok, out, err = sh.script(REPO, env, readme.block("busted examples/emulator_spec.lua"))
    assert(ok, out .. err)
    assert.truthy(out:find("3 successes / 0 failures / 0 errors / 0 pending", 1, true), out)
  end)

  it("runs the cqueues example against the emulator: every update, each record as it completes", function()
    local ok, out, err = sh.script(REPO, user_env(work), readme.block("examples/cqueues/update_opportunities.lua"))
    assert(ok, out .. err)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equal(4, #lines, out)
    assert.matches("^3 updates in %d+%.%d%d s, 0 failed$", lines[4])
    table.remove(lines)
    table.sort(lines)
    assert.same({ "10000003: amount 990 (HTTP 200)", "10000004: amount 1200 (HTTP 200)",
                  "23423523: amount 4200.5 (HTTP 200)" }, lines)
    assert.equal("", err)
  end)

  it("runs the HAProxy example against the emulator: the service answers the updated record", function()
    local ok, out, err = sh.script(REPO, user_env(work), readme.block("haproxy -f examples/haproxy/haproxy.cfg"))
    assert(ok, out .. err)
    local record = truto.decode_json(out:match("(%b{})%s*$") or "")
    assert.is_table(record, out .. err)
    assert.equal("10000003", record.id)
    assert.equal(4200, record.amount)
  end)

  it("shows examples/emulator_spec.lua as it is", function()
    local found = false
    for _, block in ipairs(readme.blocks()) do
      if block.lang == "lua" and block.text:find("describe(", 1, true) then
        assert.equal(sh.read_file(REPO .. "/examples/emulator_spec.lua"), block.text)
        found = true
      end
    end
    assert.is_true(found)
  end)

  it("quotes examples/openresty/nginx.conf word for word", function()
    local conf = assert(sh.read_file(REPO .. "/examples/openresty/nginx.conf"))
    local n = 0
    for _, block in ipairs(readme.blocks()) do
      if block.lang == "nginx" then
        n = n + 1
        assert.truthy(conf:find(block.text, 1, true), "not in examples/openresty/nginx.conf:\n" .. block.text)
      end
    end
    assert.equal(3, n)
  end)

  it("runs every Lua example against the emulator, printing what its --> lines say", function()
    local emulator = require "truto.emulator"
    local server = assert(emulator.start())
    local env = user_env(work)
    env.TRUTO_BASE_URL, env.TRUTO_API_TOKEN = server.base_url, "test-token"
    env.TRUTO_INTEGRATED_ACCOUNT_ID = "62f44730-dd91-461e-bd6a-aedd9e0ad79d"
    -- What the README says the examples assume.
    local prelude = 'truto = require "truto"; client = truto.new {}; account = os.getenv("TRUTO_INTEGRATED_ACCOUNT_ID")'
    local ran = 0
    local ok_all, failure = pcall(function()
      for _, block in ipairs(readme.blocks()) do
        if block.lang == "lua" and not block.text:find("describe(", 1, true) then
          assert(server:reset())
          local file = work .. "/example.lua"
          assert(sh.write_file(file, block.text))
          local expected = {}
          for line in block.text:gmatch("[^\n]*") do
            local said = line:match("^%-%-> (.*)$")
            if said then expected[#expected + 1] = said .. "\n" end
          end
          local ok, out, err = sh.script(work, env, "lua5.4 -e " .. q(prelude) .. " example.lua")
          assert(ok, ("README.md line %d: the example failed:\n%s%s"):format(block.line, out, err))
          if #expected > 0 then
            assert.equal(table.concat(expected), out, ("README.md line %d"):format(block.line))
          end
          ran = ran + 1
        end
      end
    end)
    server:stop()
    assert(ok_all, failure)
    assert.is_true(ran >= 15, "only " .. ran .. " Lua examples")
  end)

  it("links only to headings and files that exist", function()
    local text = assert(sh.read_file(REPO .. "/README.md"))
    -- GitHub's anchors: lower case, punctuation but - and _ dropped, spaces as -.
    local anchors = {}
    local in_block = false
    for line in text:gmatch("[^\n]*") do
      if line:match("^```") then in_block = not in_block end
      local heading = not in_block and line:match("^#+ (.+)$")
      if heading then
        anchors[heading:lower():gsub("[^%w%s%-_]", ""):gsub("%s", "-")] = true
      end
    end
    local links = 0
    for target in text:gmatch("%]%(([^)%s]+)%)") do
      links = links + 1
      if target:sub(1, 1) == "#" then
        assert(anchors[target:sub(2)], "README.md links to " .. target .. ", which no heading makes")
      elseif not target:match("^https?://") then
        assert(sh.exists(REPO .. "/" .. target), "README.md links to " .. target .. ", which does not exist")
      end
    end
    assert.is_true(links > 30)
  end)
end)

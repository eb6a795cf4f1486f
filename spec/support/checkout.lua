-- A fresh checkout for the specs that must start where a new user starts:
-- the working tree's files (tracked, and untracked but not ignored, as they
-- are now) committed into a new git repository in a temp dir, with no build
-- output.  `git status --porcelain` there tells whether a build left files
-- behind.
local sh = require "spec.support.shell"

local _M = {}

--- The repository this spec runs from (its top directory).
_M.REPO = sh.capture("git rev-parse --show-toplevel 2>/dev/null"):match("^%s*(.-)%s*$")

--- A new checkout; its path.  Raises on failure.  Remove it with _M.remove.
function _M.fresh(kind)
  local dir = assert(sh.mktemp(kind or "truto-checkout"))
  local files = {}
  local list = io.popen("cd " .. sh.quote(_M.REPO) .. " && git ls-files -z --cached --others --exclude-standard")
  for name in list:read("*a"):gmatch("%Z+") do
    -- a tracked file deleted in the working tree is not part of it
    if sh.exists(_M.REPO .. "/" .. name) then files[#files + 1] = sh.quote(name) end
  end
  list:close()
  local copy = "cd " .. sh.quote(_M.REPO) .. " && tar -cf - " .. table.concat(files, " ")
    .. " | tar -xf - -C " .. sh.quote(dir)
  assert(sh.run(copy), "copying the working tree failed")
  assert(sh.run("cd " .. sh.quote(dir) .. " && git init -q && git add -A && git -c user.name=spec "
    .. "-c user.email=spec@localhost -c commit.gpgsign=false commit -qm checkout"), "git commit failed")
  return dir
end

--- The output of `git status --porcelain` in dir ("" when clean); with
-- ignored = true, ignored files (build output) count too.
function _M.leftovers(dir, ignored)
  return sh.capture("cd " .. sh.quote(dir) .. " && git status --porcelain" .. (ignored and " --ignored" or "")
    .. " 2>&1")
end

function _M.remove(dir)
  if dir and dir:match("^/.+/[%w%-]+%.%w+$") then sh.run("rm -rf " .. sh.quote(dir)) end
end

return _M

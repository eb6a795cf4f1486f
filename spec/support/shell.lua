-- Shell, file and process helpers for the specs and benchmarks (plain Lua
-- 5.1-5.4 and LuaJIT; processes through io.popen and os.execute).
local _M = {}

--- s as one shell word.
function _M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command; true when it exits 0 (os.execute returns a number
-- in 5.1/LuaJIT, true/false and the code in 5.2+).
function _M.run(command)
  local a, _, code = os.execute(command)
  if type(a) == "number" then return a == 0 end
  return a == true and (code == nil or code == 0)
end

--- A shell command's standard output ("" when it cannot be started).
function _M.capture(command)
  local p = io.popen(command)
  if not p then return "" end
  local out = p:read("*a") or ""
  p:close()
  return out
end

--- A file's bytes, or nil when it cannot be opened.
function _M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

--- Writes text to path; true, or nil and the error.
function _M.write_file(path, text)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(text)
  f:close()
  return true
end

function _M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- True while the process runs (a zombie, exited but not yet reaped, does not).
function _M.alive(pid)
  local stat = pid and _M.read_file("/proc/" .. math.floor(pid) .. "/stat")
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

--- A fresh ${TMPDIR:-/tmp}/<kind>.XXXXXX; its path, or nil and an error.
function _M.mktemp(kind)
  local dir = _M.capture("mktemp -d \"${TMPDIR:-/tmp}/" .. kind .. ".XXXXXX\""):match("^%s*(.-)%s*$")
  if dir == "" then return nil, "mktemp -d failed" end
  return dir
end

--- Runs script with sh in dir as a user's shell would: with env (a table of
-- variables; false unsets one) exported first, without the make variables of
-- a `make test` that runs the specs, stdin from /dev/null.  Returns exit_ok,
-- stdout, stderr.
function _M.script(dir, env, script)
  local exports = {}
  for name, value in pairs(env) do
    exports[#exports + 1] = value == false and "unset " .. name .. "\n"
      or "export " .. name .. "=" .. _M.quote(value) .. "\n"
  end
  table.sort(exports)
  local err_file = os.tmpname()
  local text = "unset MAKEFLAGS MAKELEVEL MFLAGS\n" .. table.concat(exports) .. script
  local out = _M.capture("cd " .. _M.quote(dir) .. " && sh -c " .. _M.quote(text)
    .. " </dev/null 2>" .. _M.quote(err_file) .. "; echo \"exit=$?\"")
  local stderr = _M.read_file(err_file) or ""
  os.remove(err_file)
  local stdout, code = out:match("^(.*)exit=(%d+)\n$")
  return code == "0", stdout, stderr
end

--- This process's resident set size in kB.
function _M.rss_kb()
  return require("spec.support.memory").kb("VmRSS")
end

--- The SHA-256 of a file, in hex, from sha256sum.
function _M.sha256sum(path)
  return assert(_M.capture("sha256sum " .. _M.quote(path)):match("^(%x+)"), "sha256sum " .. path)
end

--- The SHA-256 of a text, in hex: written to a temp file for sha256sum.
function _M.text_sha256(text)
  local path = os.tmpname()
  assert(_M.write_file(path, text))
  local sum = _M.sha256sum(path)
  os.remove(path)
  return sum
end

return _M

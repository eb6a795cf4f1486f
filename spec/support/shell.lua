-- Shell and file helpers for the specs: those of truto.emulator (the module
-- that starts nginx), under short names, and what only the specs need.
local emulator = require "truto.emulator"

local _M = {
  quote = emulator.shell_quote,     -- s as one shell word
  run = emulator.run,               -- true when the command exits 0
  capture = emulator.capture,       -- the command's stdout
  read_file = emulator.read_file,   -- nil when the file cannot be opened
  write_file = emulator.write_file, -- true, or nil and the error
  exists = emulator.file_exists,
  alive = emulator.process_alive,
  mktemp = emulator.mktemp,         -- a fresh ${TMPDIR:-/tmp}/<kind>.XXXXXX
}

--- This process's resident set size in kB.
function _M.rss_kb()
  return tonumber((_M.read_file("/proc/self/status") or ""):match("VmRSS:%s*(%d+)"))
end

return _M

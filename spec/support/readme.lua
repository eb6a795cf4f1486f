-- The README's fenced code blocks, for the specs that run them exactly as
-- written.
local checkout = require "spec.support.checkout"
local sh = require "spec.support.shell"

local _M = {}

--- Every fenced block of README.md (or the given file): a list of
-- { lang = "sh", text = "...", line = N } in order; text ends with "\n".
function _M.blocks(file)
  local text = assert(sh.read_file(file or (checkout.REPO .. "/README.md")), "cannot read README.md")
  local blocks, current, n = {}, nil, 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    if current then
      if line:match("^```%s*$") then
        blocks[#blocks + 1] = current
        current = nil
      else
        current.text = current.text .. line .. "\n"
      end
    else
      local lang = line:match("^```(%w*)%s*$")
      if lang then current = { lang = lang, text = "", line = n + 1 } end
    end
  end
  assert(not current, "README.md: a fenced block opened at line " .. (current and current.line or 0) .. " never closes")
  return blocks
end

--- The one block of language lang ("sh" by default) that contains the
-- plain text needle; raises unless exactly one does.
function _M.block(needle, lang, file)
  local found
  for _, b in ipairs(_M.blocks(file)) do
    if b.lang == (lang or "sh") and b.text:find(needle, 1, true) then
      assert(not found, "more than one README block contains " .. needle)
      found = b
    end
  end
  assert(found, "no README " .. (lang or "sh") .. " block contains " .. needle)
  return found.text, found.line
end

return _M

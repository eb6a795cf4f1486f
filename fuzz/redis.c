/*
 * truto.redis_core's reply reader (csrc/redis.c, on hiredis) on fuzz bytes,
 * as a Redis server (or something pretending to be one) would send them.
 *
 * Input: one byte for the reader's bound (16 bytes to 64 KiB), one for the
 * number of cut points (up to 16) and two per cut; the rest is the server's
 * bytes.  They are fed three ways: whole, in the pieces the cuts make, and
 * (when short) a byte at a time, each piece followed by as many reply()
 * calls as give a value.  Properties: no Lua error escapes; every value is
 * a string, an integer, false or a table of those (an error element as
 * { err = string }); a failure is one printable line and stays a failure;
 * the replies and the failure are the same however the bytes arrive, until
 * the bound is reached (feeding whole may hit it where pieces, read as they
 * come, do not: then the pieces' replies must start with the whole's);
 * once a reader failed it fails again; a reply never holds more bytes of
 * strings than the bound.
 */
#include <lualib.h>

#include "fuzz_lua.h"

static const char driver[] =
    "local resp, stream, cuts, bound = ...\n"
    "local function describe(v, depth)\n"
    "  local t = type(v)\n"
    "  if t == 'string' then return 's' .. #v .. ':' .. v, #v end\n"
    "  if t == 'number' then\n"
    "    if math.type(v) ~= 'integer' then error('a float reply') end\n"
    "    return 'i' .. v, 0\n"
    "  end\n"
    "  if v == false then return 'nil', 0 end\n"
    "  if t ~= 'table' or depth > 8 then error('a reply of type ' .. t) end\n"
    "  if v.err ~= nil then\n"
    "    if type(v.err) ~= 'string' or next(v, 'err') ~= nil or #v ~= 0 then error('a bad error element') end\n"
    "    return 'e' .. v.err, #v.err\n"
    "  end\n"
    "  local parts, size = {}, 0\n"
    "  for i, x in ipairs(v) do\n"
    "    local d, n = describe(x, depth + 1)\n"
    "    parts[i], size = d, size + n\n"
    "  end\n"
    "  for k in pairs(v) do if math.type(k) ~= 'integer' or k < 1 or k > #v then error('a key ' .. tostring(k)) end end\n"
    "  return '[' .. table.concat(parts, ',') .. ']', size\n"
    "end\n"
    "local function run(pieces)\n"
    "  local r = resp.reader(bound)\n"
    "  local out = {}\n"
    "  local function drain()\n"
    "    while true do\n"
    "      local ok, v, err = r:reply()\n"
    "      if ok == nil then return v end\n"
    "      if ok == false then return nil end\n"
    "      if v == nil then\n"
    "        if type(err) ~= 'string' then error('a server error that is not a string') end\n"
    "        out[#out + 1] = 'E' .. err\n"
    "      else\n"
    "        local d, size = describe(v, 1)\n"
    "        if size > bound then error('a reply of ' .. size .. ' bytes past the bound ' .. bound) end\n"
    "        out[#out + 1] = d\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  for _, piece in ipairs(pieces) do\n"
    "    local ok, err = r:feed(piece)\n"
    "    if not ok then return out, err, r end\n"
    "    err = drain()\n"
    "    if err then return out, err, r end\n"
    "  end\n"
    "  return out, nil, r\n"
    "end\n"
    "local function check_failed(r, err)\n"
    "  if err == nil then return end\n"
    "  if type(err) ~= 'string' or err:find('[%c]') then error('a failure that is not one printable line') end\n"
    "  local ok, again = r:feed('+OK\\r\\n')\n"
    "  if ok ~= nil or again ~= err then error('a failed reader read on: ' .. tostring(again)) end\n"
    "end\n"
    "local function same_start(a, b, what)\n"
    "  for i = 1, math.min(#a, #b) do\n"
    "    if a[i] ~= b[i] then error(what .. ': reply ' .. i .. ' differs') end\n"
    "  end\n"
    "end\n"
    "local pieces, at = {}, 1\n"
    "for _, cut in ipairs(cuts) do\n"
    "  if cut >= at then pieces[#pieces + 1] = stream:sub(at, cut); at = cut + 1 end\n"
    "end\n"
    "pieces[#pieces + 1] = stream:sub(at)\n"
    "local ways = { { stream }, pieces }\n"
    "if #stream <= 512 then\n"
    "  local bytes = {}\n"
    "  for i = 1, #stream do bytes[i] = stream:sub(i, i) end\n"
    "  ways[3] = bytes\n"
    "end\n"
    "local first, first_err\n"
    "for w, way in ipairs(ways) do\n"
    "  local out, err, r = run(way)\n"
    "  check_failed(r, err)\n"
    "  if w == 1 then\n"
    "    first, first_err = out, err\n"
    "  elseif first_err and first_err:find('larger than', 1, true) or err and err:find('larger than', 1, true) then\n"
    "    same_start(first, out, 'whole vs pieces at the bound')\n"
    "  else\n"
    "    if #out ~= #first or err ~= first_err then\n"
    "      error(('whole vs way %d: %d replies (%s) vs %d (%s)'):format(w, #first, tostring(first_err), #out,\n"
    "        tostring(err)))\n"
    "    end\n"
    "    same_start(first, out, 'whole vs way ' .. w)\n"
    "  end\n"
    "end\n";

static void fuzz_one(lua_State *L, input *in, int core)
{
    (void)core;
    static const lua_Integer bounds[] = { 16, 64, 256, 1024, 4096, 65536 };
    lua_Integer bound = bounds[take(in) % (sizeof bounds / sizeof bounds[0])];
    size_t ncuts = take(in) % 17;
    unsigned raw[16];
    for (size_t i = 0; i < ncuts; i++) {
        unsigned hi = take(in);
        raw[i] = hi << 8 | take(in);
    }
    size_t len = (size_t)(in->end - in->p);
    static const luaL_Reg libs[] = {
        { LUA_GNAME, luaopen_base }, { LUA_STRLIBNAME, luaopen_string }, { LUA_TABLIBNAME, luaopen_table },
        { LUA_MATHLIBNAME, luaopen_math },
    };
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].func, 1);
        lua_pop(L, 1);
    }
    FUZZ_CHECK(luaL_loadbuffer(L, driver, sizeof driver - 1, "=fuzz/redis.c") == 0, "driver: %s",
               lua_tostring(L, -1));
    luaL_requiref(L, "truto.redis_core", luaopen_truto_redis_core, 0);
    lua_pushlstring(L, (const char *)in->p, len);
    lua_createtable(L, (int)ncuts, 0);
    for (size_t i = 0; i < ncuts; i++) {
        lua_pushinteger(L, (lua_Integer)(len ? raw[i] * len / 65535 : 0));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushinteger(L, bound);
    int rc = lua_pcall(L, 4, 0, 0);
    FUZZ_CHECK(rc == 0, "%s", lua_tostring(L, -1));
}

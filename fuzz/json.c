/*
 * truto.encode_json(v [, list_fields]) on values built from the fuzz input.
 * Properties: errors are printable messages; the output is valid UTF-8,
 * decode_json reads it back, and writing that value again gives the same
 * text byte for byte.
 */
#include "fuzz_lua.h"

static void fuzz_one(lua_State *L, input *in, int core)
{
    int nargs = 1;
    unsigned mode = take(in);
    fuzz_build(L, in);
    if (mode & 1) {                     /* list_fields: names of list fields */
        lua_newtable(L);
        for (unsigned n = take(in) % 4; n > 0; n--) {
            take_string(L, in, take_len(in));
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
        nargs = 2;
    }
    if (fuzz_call(L, core, "encode_json", nargs, 1) != 0) {
        check_message(L, -1);
        return;
    }
    size_t len, len2;
    FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING, "result is a %s", luaL_typename(L, -1));
    int text = lua_gettop(L);
    const char *s = lua_tolstring(L, text, &len);
    FUZZ_CHECK(truto_utf8_invalid_at(s, len) == (size_t)-1, "invalid UTF-8 in output");

    lua_pushvalue(L, text);
    FUZZ_CHECK(fuzz_call(L, core, "decode_json", 1, 2) == 0, "decode_json raised");
    FUZZ_CHECK(!lua_isnil(L, -2), "cannot read back %s: %s", s, lua_tostring(L, -1));
    lua_pop(L, 1);
    FUZZ_CHECK(fuzz_call(L, core, "encode_json", 1, 1) == 0, "cannot write back %s: %s", s,
               lua_tostring(L, -1));
    const char *s2 = lua_tolstring(L, -1, &len2);
    FUZZ_CHECK(len == len2 && memcmp(s, s2, len) == 0, "round trip changed\n%s\n%s", s, s2);
}

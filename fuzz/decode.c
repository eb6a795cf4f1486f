/*
 * truto.decode_json(text) on raw fuzz bytes.  Properties: a failure is
 * nil plus a printable message; a value read can be written by encode_json
 * unless it nests deeper than the writer's limit or holds a number too
 * large for a double; and what is written reads back to a value that writes
 * the same text again.
 */
#include "fuzz_lua.h"

static void fuzz_one(lua_State *L, input *in, int core)
{
    take_string(L, in, (size_t)(in->end - in->p));
    FUZZ_CHECK(fuzz_call(L, core, "decode_json", 1, 2) == 0, "decode_json raised");
    if (lua_isnil(L, -2)) {
        check_message(L, -1);
        return;
    }
    lua_pop(L, 1);
    if (fuzz_call(L, core, "encode_json", 1, 1) != 0) {
        const char *msg = lua_tostring(L, -1);
        check_message(L, -1);
        FUZZ_CHECK(strstr(msg, "nesting deeper than") != NULL ||
                       strstr(msg, "inf cannot be written as JSON") != NULL,
                   "a value read cannot be written: %s", msg);
        return;
    }
    size_t len, len2;
    int text = lua_gettop(L);
    const char *s = lua_tolstring(L, text, &len);
    lua_pushvalue(L, text);
    FUZZ_CHECK(fuzz_call(L, core, "decode_json", 1, 2) == 0, "decode_json raised");
    FUZZ_CHECK(!lua_isnil(L, -2), "cannot read back %s: %s", s, lua_tostring(L, -1));
    lua_pop(L, 1);
    FUZZ_CHECK(fuzz_call(L, core, "encode_json", 1, 1) == 0, "cannot write back %s", s);
    const char *s2 = lua_tolstring(L, -1, &len2);
    FUZZ_CHECK(len == len2 && memcmp(s, s2, len) == 0, "round trip changed\n%s\n%s", s, s2);
}

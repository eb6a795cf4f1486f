/*
 * truto.decode_json(text) on raw fuzz bytes.  Properties: a failure is
 * nil plus a printable message; a value read can be written by encode_json
 * unless it nests deeper than the writer's limit or holds a number too
 * large for a double; and what is written reads back to a value that writes
 * the same text again.  And the reader that gives its buffer back as it goes
 * (truto_decode_json_text with a truto_release, as the libcurl session reads
 * a large body) reads what decode_json reads.
 */
#include "fuzz_lua.h"

/* Writes the value at idx (its copy is popped): 1 and the text, or 0 and
 * the message, pushed. */
static int written(lua_State *L, int core, int idx)
{
    lua_pushvalue(L, idx);
    return fuzz_call(L, core, "encode_json", 1, 1) == 0;
}

/* The input as every item of an array of about 16 KiB (a few whole pages
 * inside the buffer), read from a buffer given back at every value (the
 * first byte on) and from a Lua string: the same message, or values written
 * the same. */
static void check_release(lua_State *L, int core, const char *data, size_t len)
{
    static const truto_release every_value = { 0, 1 };
    size_t copies = 16384 / (len + 1) + 1;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '[');
    for (size_t i = 0; i < copies; i++) {
        if (i > 0)
            luaL_addchar(&b, ',');
        luaL_addlstring(&b, data, len);
    }
    luaL_addchar(&b, ']');
    luaL_pushresult(&b);
    int text = lua_gettop(L);
    size_t n;
    const char *s = lua_tolstring(L, text, &n);
    char *buffer = (char *)lua_newuserdata(L, n);    /* a block of its own, collected on a raise */
    memcpy(buffer, s, n);
    int read = truto_decode_json_text(L, buffer, n, &every_value);
    int released = lua_gettop(L);
    lua_pushvalue(L, text);
    FUZZ_CHECK(fuzz_call(L, core, "decode_json", 1, 2) == 0, "decode_json raised");
    int value = released + 1;
    if (!read) {
        FUZZ_CHECK(lua_isnil(L, value) && lua_rawequal(L, released, value + 1),
                   "given back: %s; from a string: %s", lua_tostring(L, released),
                   lua_isnil(L, value) ? lua_tostring(L, value + 1) : "a value");
        lua_settop(L, text - 1);
        return;
    }
    FUZZ_CHECK(!lua_isnil(L, value), "read when given back, not from a string: %s", lua_tostring(L, value + 1));
    int ok = written(L, core, released), ok2 = written(L, core, value);
    FUZZ_CHECK(ok == ok2 && lua_rawequal(L, -1, -2), "written differently: %s / %s", lua_tostring(L, -2),
               lua_tostring(L, -1));
    lua_settop(L, text - 1);
}

static void fuzz_one(lua_State *L, input *in, int core)
{
    check_release(L, core, (const char *)in->p, (size_t)(in->end - in->p));
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

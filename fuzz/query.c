/*
 * truto.encode_query(t) on tables built from the fuzz input.  Properties:
 * errors are printable messages; output uses only unreserved characters,
 * %XX (uppercase), '=' and '&', with one '=' per pair and a non-empty name;
 * encoding twice gives the same text.
 */
#include "fuzz_lua.h"

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static int is_upper_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static void check_query(const char *q, size_t len)
{
    size_t pair = 0, eq = 0;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = i < len ? (unsigned char)q[i] : '&';
        if (c == '&') {
            FUZZ_CHECK(len == 0 || eq == 1, "pair ending at %zu has %zu '=': %.*s", i, eq,
                       (int)len, q);
            FUZZ_CHECK(len == 0 || q[pair] != '=', "empty name at %zu: %.*s", pair, (int)len, q);
            pair = i + 1;
            eq = 0;
        } else if (c == '=') {
            eq++;
        } else if (c == '%') {
            FUZZ_CHECK(i + 2 < len && is_upper_hex((unsigned char)q[i + 1]) &&
                           is_upper_hex((unsigned char)q[i + 2]),
                       "bad escape at %zu: %.*s", i, (int)len, q);
            i += 2;
        } else {
            FUZZ_CHECK(is_unreserved(c), "raw byte 0x%02x at %zu", c, i);
        }
    }
}

static void fuzz_one(lua_State *L, input *in, int core)
{
    fuzz_build(L, in);
    int value = lua_gettop(L);
    lua_pushvalue(L, value);
    if (fuzz_call(L, core, "encode_query", 1, 1) != 0) {
        check_message(L, -1);
        return;
    }
    size_t len;
    FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING, "result is a %s", luaL_typename(L, -1));
    const char *q = lua_tolstring(L, -1, &len);
    check_query(q, len);
    lua_pushvalue(L, value);
    FUZZ_CHECK(fuzz_call(L, core, "encode_query", 1, 1) == 0, "second call failed");
    FUZZ_CHECK(lua_rawequal(L, -1, -2), "two calls disagree");
}

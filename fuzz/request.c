/*
 * truto.core.build_request(spec) with every field taken from the fuzz
 * input: method, base_url, path segments (and their names), query, body,
 * list_fields, token and headers.  Properties: errors are printable
 * messages; a built request has the method given, a URL without spaces or
 * control characters that starts with the base URL, and header lines
 * "Name: value" without CR, LF or NUL.
 */
#include "fuzz_lua.h"

static const char *const prefixes[] = {
    "http://", "https://", "HTTPS://", "", "ftp://", "http:///", "https://h/", "http://h?",
};

static void field_string(lua_State *L, input *in, int spec, const char *name)
{
    take_string(L, in, take_len(in));
    lua_setfield(L, spec, name);
}

static void fuzz_one(lua_State *L, input *in, int core)
{
    unsigned flags = take(in) | take(in) << 8;
    lua_newtable(L);
    int spec = lua_gettop(L);

    switch (take(in) % 4) {
    case 0: lua_pushliteral(L, "GET"); break;
    case 1: lua_pushliteral(L, "PATCH"); break;
    case 2: take_string(L, in, take_len(in)); break;
    default: lua_pushinteger(L, 1); break;
    }
    lua_setfield(L, spec, "method");

    lua_pushstring(L, prefixes[take(in) % (sizeof prefixes / sizeof prefixes[0])]);
    take_string(L, in, take_len(in));
    lua_concat(L, 2);
    lua_setfield(L, spec, "base_url");

    if (flags & 1) {
        fuzz_build(L, in);              /* usually not a table: an error */
    } else {
        lua_newtable(L);
        for (unsigned i = 1, n = take(in) % 6; i <= n; i++) {
            switch (take(in) % 4) {
            case 0: case 1: take_string(L, in, take_len(in)); break;
            case 2: lua_pushinteger(L, (lua_Integer)(int8_t)take(in)); break;
            default: fuzz_build(L, in); break;
            }
            lua_rawseti(L, -2, (lua_Integer)i);
        }
    }
    lua_setfield(L, spec, "path");
    if (flags & 2) {
        lua_newtable(L);
        /* Names the client gives (never user data): they appear in messages. */
        static const char *const names[] = { "model", "resource", "id", "method" };
        for (unsigned i = 1, n = take(in) % 4; i <= n; i++) {
            lua_pushstring(L, names[take(in) % 4]);
            lua_rawseti(L, -2, (lua_Integer)i);
        }
        lua_setfield(L, spec, "path_names");
    }
    if (flags & 4) {
        fuzz_build(L, in);
        lua_setfield(L, spec, "query");
    }
    if (flags & 8) {
        fuzz_build(L, in);
        lua_setfield(L, spec, "body");
    }
    if (flags & 16) {
        lua_newtable(L);
        for (unsigned n = take(in) % 3; n > 0; n--) {
            take_string(L, in, take_len(in));
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
        lua_setfield(L, spec, "list_fields");
    }
    if (flags & 32)
        field_string(L, in, spec, "token");
    if (flags & 64) {
        lua_newtable(L);
        for (unsigned n = take(in) % 12; n > 0; n--) {
            switch (take(in) % 8) {
            case 0: lua_pushliteral(L, "Accept"); break;
            case 1: lua_pushliteral(L, "user-agent"); break;
            case 2: lua_pushliteral(L, "AUTHORIZATION"); break;
            case 3: lua_pushinteger(L, 1); break;
            default: take_string(L, in, take_len(in)); break;
            }
            switch (take(in) % 6) {
            case 0: lua_pushboolean(L, 0); break;
            case 1: lua_pushboolean(L, 1); break;
            case 2: lua_pushinteger(L, (lua_Integer)take_u64(in)); break;
            case 3: lua_pushnumber(L, (lua_Number)(int8_t)take(in) / 4.0); break;
            default: take_string(L, in, take_len(in)); break;
            }
            if (lua_isinteger(L, -2) || lua_type(L, -2) == LUA_TSTRING)
                lua_rawset(L, -3);
            else
                lua_pop(L, 2);
        }
        lua_setfield(L, spec, "headers");
    } else if (flags & 128) {
        fuzz_build(L, in);
        lua_setfield(L, spec, "headers");
    }

    lua_pushvalue(L, spec);
    if (fuzz_call(L, core, "build_request", 1, 1) != 0) {
        check_message(L, -1);
        return;
    }
    int req = lua_gettop(L);
    size_t len, baselen;
    lua_getfield(L, req, "method");
    lua_getfield(L, spec, "method");
    FUZZ_CHECK(lua_rawequal(L, -1, -2), "method changed");
    lua_pop(L, 2);

    lua_getfield(L, req, "url");
    const char *url = lua_tolstring(L, -1, &len);
    lua_getfield(L, spec, "base_url");
    const char *base = lua_tolstring(L, -1, &baselen);
    while (baselen > 0 && base[baselen - 1] == '/')
        baselen--;
    FUZZ_CHECK(url != NULL && len >= baselen && memcmp(url, base, baselen) == 0,
               "url does not start with the base URL");
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK((unsigned char)url[i] > 0x20 && url[i] != 0x7f, "byte 0x%02x in url",
                   (unsigned char)url[i]);
    lua_pop(L, 2);

    lua_getfield(L, req, "headers");
    FUZZ_CHECK(lua_istable(L, -1), "no header lines");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *line = lua_tolstring(L, -1, &len);
        FUZZ_CHECK(line != NULL, "header line %d is not a string", (int)i);
        const char *colon = memchr(line, ':', len);
        FUZZ_CHECK(colon != NULL && colon > line && colon[1] == ' ', "bad header line %d", (int)i);
        for (size_t k = 0; k < len; k++)
            FUZZ_CHECK(line[k] != '\r' && line[k] != '\n' && line[k] != '\0',
                       "CR, LF or NUL in header line %d", (int)i);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    lua_getfield(L, req, "body");
    if (!lua_isnil(L, -1)) {
        FUZZ_CHECK(fuzz_call(L, core, "decode_json", 1, 2) == 0, "decode_json raised");
        FUZZ_CHECK(!lua_isnil(L, -2), "body does not read back: %s", lua_tostring(L, -1));
    }
}

/*
 * Helpers for reading responses.  They never call back into Lua, so they
 * are safe under any transport (including nginx cosockets).
 */
#define _GNU_SOURCE
#include <string.h>
#include <time.h>

#include "truto.h"

#if LUA_VERSION_NUM >= 503
/* lua-cjson reads every number as a float; ids and counts must come back
 * as integers so that tostring(id) is "10", not "10.0". */
static void integers_in(lua_State *L, int idx, int depth)
{
    if (depth > 1000 || !lua_checkstack(L, 4))
        return;   /* deeper than lua-cjson itself would decode */
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int t = lua_type(L, -1);
        if (t == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number d = lua_tonumber(L, -1);
            lua_Integer i;
            if (lua_numbertointeger(d, &i) && (lua_Number)i == d) {
                lua_pushvalue(L, -2);
                lua_pushinteger(L, i);
                lua_rawset(L, idx);     /* replacing a value is allowed mid-traversal */
            }
        } else if (t == LUA_TTABLE) {
            integers_in(L, lua_gettop(L), depth + 1);
        }
        lua_pop(L, 1);
    }
}
#endif

/* core.integers(v) -> v, with integral floats in tables made integers. */
static int l_integers(lua_State *L)
{
    lua_settop(L, 1);
#if LUA_VERSION_NUM >= 503
    if (lua_type(L, 1) == LUA_TTABLE)
        integers_in(L, 1, 0);
    else if (lua_type(L, 1) == LUA_TNUMBER && !lua_isinteger(L, 1)) {
        lua_Integer i;
        lua_Number d = lua_tonumber(L, 1);
        if (lua_numbertointeger(d, &i) && (lua_Number)i == d)
            lua_pushinteger(L, i);
    }
#endif
    return 1;
}

/* core.parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT") -> epoch seconds or nil.
 * Accepts the IMF-fixdate form RFC 9110 requires senders to use. */
static int l_parse_http_date(lua_State *L)
{
    const char *s = luaL_checkstring(L, 1);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0') {
        lua_pushnil(L);
        return 1;
    }
    lua_pushnumber(L, (lua_Number)timegm(&tm));
    return 1;
}

void truto_open_response(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"integers", l_integers},
        {"parse_http_date", l_parse_http_date},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}

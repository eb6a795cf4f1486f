/*
 * Helpers for reading responses.  They never call back into Lua, so they
 * are safe under any transport (including nginx cosockets).
 */
#define _GNU_SOURCE
#include <string.h>
#include <time.h>

#include "truto.h"

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
        {"parse_http_date", l_parse_http_date},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}

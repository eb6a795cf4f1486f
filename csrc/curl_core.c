/*
 * luaopen_truto_curl_core: the libcurl transport's C module (session.c,
 * multi.c, stream.c, curl_common.c).  It is apart from truto.core so that loading the
 * library, and running it inside nginx, never loads libcurl and the
 * libraries it pulls in: lua/truto/curl.lua requires it at the first
 * transfer.
 */
#include <curl/curl.h>

#include "truto.h"

TRUTO_API int luaopen_truto_curl_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    lua_setfield(L, -2, "curl_version");
    truto_open_session(L);
    truto_open_multi(L);
    truto_open_stream(L);
    return 1;
}

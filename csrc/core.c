/*
 * luaopen_truto_core: the private C module behind require "truto": the
 * writers, the reader, the request builder and the helpers every transport
 * uses.  It does not link libcurl (the libcurl transport is truto.curl_core,
 * csrc/curl_core.c).
 */
#include "truto.h"

/* truto.encode_query(t) -> "a=1&b%5B%5D=x" */
static int l_encode_query(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    truto_encoder *e = truto_encoder_new(L, "query");
    truto_query_encode(L, e, 1);
    truto_bytes_push(L, &e->out);
    truto_encoder_done(e);
    return 1;
}

/* truto.encode_json(v [, list_fields]) -> JSON text */
static int l_encode_json(lua_State *L)
{
    luaL_checkany(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    truto_encoder *e = truto_encoder_new(L, "body");
    truto_json_encode(L, e, 1, lua_istable(L, 2) ? 2 : 0);
    truto_bytes_push(L, &e->out);
    truto_encoder_done(e);
    return 1;
}

static void new_mark(lua_State *L, const char *name, const char *field)
{
    luaL_newmetatable(L, name);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_setfield(L, -2, field);
}

TRUTO_API int luaopen_truto_core(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"encode_query", l_encode_query},
        {"encode_json", l_encode_json},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_setfuncs(L, functions, 0);
    new_mark(L, TRUTO_ARRAY_MT, "array_mt");
    new_mark(L, TRUTO_OBJECT_MT, "object_mt");
    new_mark(L, TRUTO_FILE_MT, "file_mt");
    new_mark(L, TRUTO_RAW_MT, "raw_mt");
    /* JSON null as every reader of it spells it: lua-cjson's cjson.null is
     * this same NULL light userdata, so truto.null needs no cjson loaded. */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushliteral(L, TRUTO_VERSION);
    lua_setfield(L, -2, "VERSION");
    truto_open_request(L);
    truto_open_response(L);
    truto_open_decode(L);
    truto_open_webhook(L);
    truto_open_system(L);
    truto_open_inflate(L);
    truto_open_headers(L);
    truto_open_http1(L);
    return 1;
}

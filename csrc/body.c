/*
 * truto.Body: a large request body held in C memory, so that it never
 * becomes a Lua string (Lua's API copies every string it is given: the
 * writer's buffer and the string would hold the body twice at once).
 * build_request hands the encoder's buffer over to one; the libcurl
 * transports send straight from its bytes, the yielding engine slices it
 * with sub, and tostring makes the string only when asked.
 */
#include <stdlib.h>

#include "truto.h"

/* The one cleanup: idempotent. */
static void body_free(truto_body *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

/* __gc.  While a transfer sends the bytes it references the Body, so this
 * runs with pins only when the state closes, when no transfer runs again. */
static int body_gc(lua_State *L)
{
    body_free((truto_body *)luaL_checkudata(L, 1, TRUTO_BODY_MT));
    return 0;
}

/* close and __close: refused while a transfer sends the bytes. */
static int body_close(lua_State *L)
{
    truto_body *b = (truto_body *)luaL_checkudata(L, 1, TRUTO_BODY_MT);
    if (b->pins > 0)
        return luaL_error(L, "truto: cannot close a body while a transfer sends it");
    body_free(b);
    return 0;
}

static truto_body *check_open_body(lua_State *L)
{
    truto_body *b = (truto_body *)luaL_checkudata(L, 1, TRUTO_BODY_MT);
    if (b->data == NULL)
        luaL_error(L, "truto: body is closed");
    return b;
}

static int body_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_open_body(L)->len);
    return 1;
}

static int body_tostring(lua_State *L)
{
    truto_body *b = check_open_body(L);
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/* string.sub's positions: negative ones count from the end, the start is
 * clamped to 1 and the end to the length. */
static size_t start_position(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

static size_t end_position(lua_Integer pos, size_t len)
{
    if (pos > (lua_Integer)len)
        return len;
    if (pos >= 0)
        return (size_t)pos;
    if (pos < -(lua_Integer)len)
        return 0;
    return len + (size_t)pos + 1;
}

/* body:sub(i [, j]): the bytes string.sub(tostring(body), i, j) gives. */
static int body_sub(lua_State *L)
{
    truto_body *b = check_open_body(L);
    size_t first = start_position(luaL_checkinteger(L, 2), b->len);
    size_t last = end_position(luaL_optinteger(L, 3, -1), b->len);
    if (first > last)
        lua_pushliteral(L, "");
    else
        lua_pushlstring(L, b->data + first - 1, last - first + 1);
    return 1;
}

void truto_body_push(lua_State *L, truto_bytes *out)
{
    /* Zeroed and given its metatable before it owns anything, so that an
     * out-of-memory error here leaves the bytes with the encoder. */
    truto_body *b = (truto_body *)lua_newuserdata(L, sizeof *b);
    b->data = NULL;
    b->len = 0;
    b->pins = 0;
    if (luaL_newmetatable(L, TRUTO_BODY_MT)) {
        static const luaL_Reg methods[] = {
            {"sub", body_sub},
            {"close", body_close},
            {NULL, NULL},
        };
        lua_pushliteral(L, TRUTO_BODY_MT);
        lua_setfield(L, -2, "__name");
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, body_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, body_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, body_len);
        lua_setfield(L, -2, "__len");
        lua_pushcfunction(L, body_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    b->data = out->data;
    b->len = out->len;
    out->data = NULL;
    out->len = out->cap = 0;
}

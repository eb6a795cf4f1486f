/*
 * Every difference between the Lua C APIs the core is built for (Lua 5.1,
 * 5.2, 5.3, 5.4 and LuaJIT, which has 5.1's API): the other files are
 * written against Lua 5.4's and include this through truto.h, so no other
 * file tests LUA_VERSION_NUM.
 *
 * Numbers: 5.3 and 5.4 have an integer subtype (64 bits); 5.1, 5.2 and
 * LuaJIT have doubles only, exact for integers up to 2^53 in magnitude.
 */
#ifndef TRUTO_COMPAT_H
#define TRUTO_COMPAT_H

#include <stdio.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>     /* LUA_FILEHANDLE, in lualib.h before Lua 5.2 */

#if LUA_VERSION_NUM >= 503
#define TRUTO_HAS_INTEGERS 1
#else
#define TRUTO_HAS_INTEGERS 0
/* No value is of the integer subtype: there is none. */
#define lua_isinteger(L, i) ((void)(L), (void)(i), 0)
#endif

#if LUA_VERSION_NUM < 502
#define LUA_OK 0
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
/* Every caller registers functions without upvalues. */
#define luaL_setfuncs(L, l, nup) luaL_register((L), NULL, (l))
#endif

/* Room for n bytes in a luaL_Buffer, n at most TRUTO_PREPBUFF_MAX: Lua 5.1's
 * buffer gives LUAL_BUFFERSIZE bytes at a time. */
#if LUA_VERSION_NUM < 502
#define TRUTO_PREPBUFF_MAX ((size_t)LUAL_BUFFERSIZE)
#define truto_prepbuffsize(B, n) ((void)(n), luaL_prepbuffer(B))
#else
#define TRUTO_PREPBUFF_MAX ((size_t)-1)
#define truto_prepbuffsize(B, n) luaL_prepbuffsize((B), (n))
#endif

/* Pushes v when Lua can hold it exactly (any 64-bit integer from 5.3 on,
 * one of at most 2^53 in magnitude before) and returns 1; else returns 0
 * and pushes nothing. */
static inline int truto_push_exact_integer(lua_State *L, long long v)
{
#if TRUTO_HAS_INTEGERS
    lua_pushinteger(L, (lua_Integer)v);
    return 1;
#else
    if (v > (1LL << 53) || v < -(1LL << 53))
        return 0;
    lua_pushnumber(L, (lua_Number)v);
    return 1;
#endif
}

/* The position a table key at idx stands for when the table is a sequence:
 * an integral number of 1 or more, else 0.  From 5.3 on a table keeps an
 * integral float key as an integer, so any other key (a float, a boolean,
 * ...) is no position. */
static inline lua_Integer truto_sequence_position(lua_State *L, int idx)
{
#if TRUTO_HAS_INTEGERS
    int is_integer = 0;
    lua_Integer i = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &is_integer) : 0;
    return i >= 1 && is_integer ? i : 0;
#else
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    lua_Number d = lua_tonumber(L, idx);
    /* In range before the cast: converting 2^63 or inf is UB. */
    return d >= 1 && d < 9223372036854775807.0 && d == (lua_Number)(lua_Integer)d ? (lua_Integer)d : 0;
#endif
}

/* The FILE of the Lua file handle at arg, NULL once it is closed; raises
 * for anything else.  The handle is a luaL_Stream from 5.2 on (closef is
 * NULL once closed), a pointer to the FILE pointer in 5.1 and LuaJIT. */
static inline FILE *truto_file_handle(lua_State *L, int arg)
{
#if LUA_VERSION_NUM >= 502
    luaL_Stream *stream = (luaL_Stream *)luaL_checkudata(L, arg, LUA_FILEHANDLE);
    return stream->closef ? stream->f : NULL;
#else
    return *(FILE **)luaL_checkudata(L, arg, LUA_FILEHANDLE);
#endif
}

#endif

/*
 * What the client needs from the operating system: a monotonic clock for
 * deadlines, a sleep for retry back-off outside nginx, random bytes for
 * idempotency keys, and whether a stream is a terminal (the truto command
 * draws progress only on one).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "truto.h"
#include <lualib.h>     /* LUA_FILEHANDLE in the Lua 5.1 API (LuaJIT) */

/* core.now() -> seconds on a monotonic clock (float). */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.sleep(seconds): blocks the thread; the client uses ngx.sleep instead
 * inside nginx. */
static int l_sleep(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0 && secs < 1e9, 1, "must be a number of seconds >= 0");
    struct timespec ts;
    ts.tv_sec = (time_t)secs;
    ts.tv_nsec = (long)((secs - (lua_Number)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* Random bytes are drawn from OpenSSL's CSPRNG a pool at a time: one call
 * per 4 KiB rather than one per idempotency key.  Each byte is served once. */
static unsigned char pool[4096];
static size_t pool_left;
static pid_t pool_pid;      /* a forked child (an nginx worker) refills its own */

static int random_bytes(unsigned char *out, size_t n)
{
    if (pool_left < n || pool_pid != getpid()) {
        pool_pid = getpid();
        if (RAND_bytes(pool, (int)sizeof pool) != 1)
            return 0;
        pool_left = sizeof pool;
    }
    pool_left -= n;
    memcpy(out, pool + pool_left, n);
    memset(pool + pool_left, 0, n);
    return 1;
}

/* core.random_hex(nbytes) -> 2*nbytes lowercase hex digits from a CSPRNG. */
static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= 64, 1, "must be between 1 and 64");
    unsigned char bytes[64];
    char hex[129];
    if (!random_bytes(bytes, (size_t)n))
        return luaL_error(L, "truto: no random bytes available");
    for (lua_Integer i = 0; i < n; i++) {
        hex[2 * i] = "0123456789abcdef"[bytes[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[bytes[i] & 15];
    }
    lua_pushlstring(L, hex, (size_t)(2 * n));
    return 1;
}

/* The FILE of an open Lua file handle at arg; raises for anything else.
 * The handle's layout differs: a luaL_Stream from 5.2 on (closef is NULL
 * once closed), a pointer to the FILE pointer in 5.1 and LuaJIT (NULL once
 * closed). */
static FILE *check_open_file(lua_State *L, int arg)
{
#if LUA_VERSION_NUM >= 502
    luaL_Stream *stream = (luaL_Stream *)luaL_checkudata(L, arg, LUA_FILEHANDLE);
    FILE *f = stream->closef ? stream->f : NULL;
#else
    FILE *f = *(FILE **)luaL_checkudata(L, arg, LUA_FILEHANDLE);
#endif
    if (f == NULL)
        luaL_argerror(L, arg, "attempt to use a closed file");
    return f;
}

/* core.isatty(file | fd) -> true when it is a terminal, false when not; nil
 * and the error when the descriptor is not open (e.g. `2>&-`). */
static int l_isatty(lua_State *L)
{
    int fd;
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 1);
        luaL_argcheck(L, n >= 0 && n <= INT_MAX, 1, "must be a file descriptor (0 or more)");
        fd = (int)n;
    } else {
        fd = fileno(check_open_file(L, 1));
    }
    if (isatty(fd)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (errno == EBADF) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 0);
    return 1;
}

void truto_open_system(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"now", l_now},
        {"sleep", l_sleep},
        {"random_hex", l_random_hex},
        {"isatty", l_isatty},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}

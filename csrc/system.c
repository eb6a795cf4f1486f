/*
 * What the client needs from the operating system: a monotonic clock for
 * deadlines, a sleep for retry back-off outside nginx, and random bytes for
 * idempotency keys.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <time.h>

#include <openssl/rand.h>

#include "truto.h"

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

/* core.random_hex(nbytes) -> 2*nbytes lowercase hex digits from a CSPRNG. */
static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= 64, 1, "must be between 1 and 64");
    unsigned char bytes[64];
    char hex[129];
    if (RAND_bytes(bytes, (int)n) != 1)
        return luaL_error(L, "truto: no random bytes available");
    for (lua_Integer i = 0; i < n; i++) {
        hex[2 * i] = "0123456789abcdef"[bytes[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[bytes[i] & 15];
    }
    lua_pushlstring(L, hex, (size_t)(2 * n));
    return 1;
}

void truto_open_system(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"now", l_now},
        {"sleep", l_sleep},
        {"random_hex", l_random_hex},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}

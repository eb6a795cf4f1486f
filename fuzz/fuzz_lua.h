/*
 * Shared by the libFuzzer harnesses: a fresh lua_State per input with
 * truto.core loaded, and a small interpreter that turns fuzz bytes into a
 * Lua value (nested tables, strings, integers, floats, booleans, truto.null,
 * marked tables, cycles, and the odd function or userdata).
 *
 * Each harness defines
 *     static void fuzz_one(lua_State *L, input *in, int core);
 * which runs under lua_pcall (a Lua error in the harness itself is not a
 * finding) with the core module's table at stack index `core`.  A broken
 * property is reported with FUZZ_CHECK, which aborts: libFuzzer keeps the
 * input as a crash.
 */
#ifndef FUZZ_LUA_H
#define FUZZ_LUA_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "truto.h"

#define FUZZ_CHECK(cond, ...)                                              \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "property failed: %s (%s:%d): ", #cond,        \
                    __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
            abort();                                                       \
        }                                                                  \
    } while (0)

typedef struct {
    const uint8_t *p, *end;
} input;

/* The next byte, or 0 once the input is used up. */
static inline unsigned take(input *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

static inline int more(const input *in)
{
    return in->p < in->end;
}

/* Pushes up to n raw bytes of input as a string. */
static void take_string(lua_State *L, input *in, size_t n)
{
    size_t left = (size_t)(in->end - in->p);
    if (n > left)
        n = left;
    lua_pushlstring(L, (const char *)in->p, n);
    in->p += n;
}

/* A length that is usually short and sometimes long. */
static size_t take_len(input *in)
{
    unsigned b = take(in);
    if (b < 240)
        return b % 24;
    return (size_t)take(in) * 4 + (b - 240);
}

static uint64_t take_u64(input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | take(in);
    return v;
}

typedef struct {
    int anc[160];           /* stack indices of the tables being built */
    int nanc;
    int budget;             /* values left to build */
} builder;

static int dummy_function(lua_State *L)
{
    (void)L;
    return 0;
}

static void build_value(lua_State *L, input *in, builder *b);

/* A key for a table entry: mostly strings, sometimes numbers or others. */
static void build_key(lua_State *L, input *in, int weird)
{
    unsigned k = weird ? take(in) % 6 : 0;
    switch (k) {
    case 0: case 1:
        take_string(L, in, take_len(in));
        break;
    case 2:
        lua_pushinteger(L, (lua_Integer)(int8_t)take(in));
        break;
    case 3:
        lua_pushnumber(L, (lua_Number)(int8_t)take(in) / 2.0);
        break;
    case 4:
        lua_pushboolean(L, (int)(take(in) & 1));
        break;
    default:
        lua_pushinteger(L, (lua_Integer)take_u64(in));
        break;
    }
}

static void set_mark(lua_State *L, const char *name)
{
    luaL_getmetatable(L, name);
    lua_setmetatable(L, -2);
}

static void build_table(lua_State *L, input *in, builder *b, unsigned kind)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    if (b->nanc < (int)(sizeof b->anc / sizeof b->anc[0]))
        b->anc[b->nanc++] = t;
    else
        return;
    unsigned n = take(in) % 8;
    if (kind == 3) {                    /* marked: checked against contents */
        set_mark(L, (take(in) & 1) ? "truto.array" : "truto.object");
        kind = take(in) % 3;
    }
    for (unsigned i = 1; i <= n && more(in); i++) {
        if (kind == 1) {                /* array */
            build_value(L, in, b);
            lua_rawseti(L, t, (lua_Integer)i);
        } else {                        /* object, or any keys (kind 2) */
            build_key(L, in, kind == 2);
            build_value(L, in, b);
            lua_rawset(L, t);
        }
    }
    b->nanc--;
}

static void build_value(lua_State *L, input *in, builder *b)
{
    if (!lua_checkstack(L, 8))
        luaL_error(L, "fuzz: stack");
    if (--b->budget < 0 || !more(in)) {
        lua_pushinteger(L, 1);
        return;
    }
    unsigned op = take(in) % 16;
    switch (op) {
    case 0: case 1:
        take_string(L, in, take_len(in));
        break;
    case 2:
        lua_pushinteger(L, (lua_Integer)(int8_t)take(in));
        break;
    case 3:
        lua_pushinteger(L, (lua_Integer)take_u64(in));
        break;
    case 4: {                           /* any double: NaN, inf, subnormals */
        uint64_t bits = take_u64(in);
        double d;
        memcpy(&d, &bits, sizeof d);
        lua_pushnumber(L, (lua_Number)d);
        break;
    }
    case 5: {                           /* a "nice" float */
        int m = (int8_t)take(in);
        int e = (int)(take(in) % 64) - 32;
        lua_pushnumber(L, (lua_Number)m * (lua_Number)ldexp(1.0, e) / 10.0);
        break;
    }
    case 6:
        lua_pushboolean(L, (int)(take(in) & 1));
        break;
    case 7:
        lua_pushlightuserdata(L, NULL);     /* truto.null */
        break;
    case 8: case 9:
        build_table(L, in, b, 0);
        break;
    case 10: case 11:
        build_table(L, in, b, 1);
        break;
    case 12:
        build_table(L, in, b, (take(in) & 1) ? 2 : 3);
        break;
    case 13: {                          /* a deep chain: {k={k={...}}} or [[...]] */
        unsigned depth = take(in) % 128 + 1;
        int arrays = (int)(take(in) & 1);
        build_value(L, in, b);
        for (unsigned i = 0; i < depth; i++) {
            lua_createtable(L, 1, 1);
            lua_insert(L, -2);
            if (arrays)
                lua_rawseti(L, -2, 1);
            else
                lua_setfield(L, -2, "k");
        }
        break;
    }
    case 14:                            /* a table being built: a cycle */
        if (b->nanc > 0) {
            lua_pushvalue(L, b->anc[take(in) % (unsigned)b->nanc]);
            break;
        }
        /* fall through */
    default:                            /* values no encoder accepts */
        if (take(in) & 1)
            lua_pushcfunction(L, dummy_function);
        else
            lua_pushlightuserdata(L, (void *)in);
        break;
    }
}

/* Pushes one value built from the input. */
static void fuzz_build(lua_State *L, input *in)
{
    builder b;
    b.nanc = 0;
    b.budget = 4000;
    build_value(L, in, &b);
}

/* Calls core[name] with the nargs values on top of the stack; leaves
 * nresults results (or the error message) and returns the pcall status. */
static int fuzz_call(lua_State *L, int core, const char *name, int nargs, int nresults)
{
    lua_getfield(L, core, name);
    lua_insert(L, -(nargs + 1));
    return lua_pcall(L, nargs, nresults, 0);
}

/* An error from the core is one printable line of valid UTF-8 text. */
static void check_message(lua_State *L, int idx)
{
    size_t len;
    FUZZ_CHECK(lua_type(L, idx) == LUA_TSTRING, "error value is a %s", luaL_typename(L, idx));
    const char *msg = lua_tolstring(L, idx, &len);
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK((unsigned char)msg[i] >= 0x20 && msg[i] != 0x7f,
                   "control byte 0x%02x at %zu in error message: %s", (unsigned char)msg[i], i, msg);
    FUZZ_CHECK(truto_utf8_invalid_at(msg, len) == (size_t)-1, "invalid UTF-8 in error message: %s", msg);
}

static void fuzz_one(lua_State *L, input *in, int core);

static int fuzz_protected(lua_State *L)
{
    input *in = (input *)lua_touserdata(L, 1);
    luaL_requiref(L, "truto.core", luaopen_truto_core, 0);
    fuzz_one(L, in, lua_gettop(L));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = { data, data + size };
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return 0;
    lua_pushcfunction(L, fuzz_protected);
    lua_pushlightuserdata(L, &in);
    lua_pcall(L, 1, 0, 0);
    lua_close(L);
    return 0;
}

#endif

/*
 * core.inflater (csrc/inflate.c) on fuzz bytes.  Input: one byte choosing
 * the coding ("gzip" or "deflate"), two for the limit (under 64 KiB), one
 * for the number of cut points and one per cut, then the body.  The body
 * is decoded three times: whole, in the pieces the cuts make, and a byte at
 * a time.  Properties: nothing raises; the decoded bytes returned never sum
 * past the limit; a failure is nil, "too_large" or "decode", and a
 * printable message, the same however the body is split, and it sticks;
 * too_large leaves total() at the limit; the decoded text and total() are
 * the same however the body is split (on a failure, what each run returned
 * is a prefix of what another returned); total() counts what was returned;
 * and a closed inflater raises.
 */
#include "fuzz_lua.h"

typedef struct {
    truto_bytes out;        /* the decoded pieces, end to end */
    int failed;
    char kind[16];
    char message[256];
    lua_Integer total;
} outcome;

/* Calls method name of the inflater at idx with nargs arguments on top of
 * the stack; leaves 3 results. */
static void call_method(lua_State *L, int idx, const char *name, int nargs)
{
    lua_getfield(L, idx, name);
    lua_insert(L, -(nargs + 1));
    lua_pushvalue(L, idx);
    lua_insert(L, -(nargs + 1));
    FUZZ_CHECK(lua_pcall(L, nargs + 1, 3, 0) == 0, "inf:%s raised: %s", name, lua_tostring(L, -1));
}

/* Reads nil, kind, message at the top of the stack into o. */
static void read_failure(lua_State *L, outcome *o, lua_Integer limit)
{
    FUZZ_CHECK(lua_isnil(L, -3), "a failure starts with a %s", luaL_typename(L, -3));
    const char *kind = lua_tostring(L, -2);
    FUZZ_CHECK(kind != NULL && (strcmp(kind, "too_large") == 0 || strcmp(kind, "decode") == 0),
               "kind %s", kind ? kind : luaL_typename(L, -2));
    check_message(L, -1);
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    FUZZ_CHECK(len < sizeof o->message, "message too long: %s", msg);
    if (strcmp(kind, "too_large") == 0) {
        char expect[64];
        snprintf(expect, sizeof expect, "decoded response larger than %lld bytes", (long long)limit);
        FUZZ_CHECK(strcmp(msg, expect) == 0, "too_large message: %s", msg);
    } else {
        FUZZ_CHECK(strncmp(msg, "corrupt ", 8) == 0 || strncmp(msg, "truncated ", 10) == 0,
                   "decode message: %s", msg);
    }
    o->failed = 1;
    snprintf(o->kind, sizeof o->kind, "%s", kind);
    memcpy(o->message, msg, len + 1);
}

/* Decodes body with pieces ending at cuts[0..ncuts) (ascending), then at
 * every step bytes when step > 0, then the rest. */
static void decode(lua_State *L, int core, const char *coding, lua_Integer limit, const uint8_t *body,
                   size_t len, const size_t *cuts, size_t ncuts, size_t step, outcome *o)
{
    memset(o, 0, sizeof *o);
    lua_pushstring(L, coding);
    lua_pushinteger(L, limit);
    FUZZ_CHECK(fuzz_call(L, core, "inflater", 2, 1) == 0, "core.inflater raised: %s", lua_tostring(L, -1));
    int inf = lua_gettop(L);
    size_t at = 0, c = 0;
    while (at < len) {
        size_t end = len;
        if (c < ncuts)
            end = cuts[c++];
        else if (step > 0)
            end = at + step < len ? at + step : len;
        if (end < at)
            end = at;
        lua_pushlstring(L, (const char *)body + at, end - at);
        call_method(L, inf, "update", 1);
        at = end;
        if (lua_type(L, -3) != LUA_TSTRING) {
            read_failure(L, o, limit);
            lua_pop(L, 3);
            break;
        }
        size_t n;
        const char *s = lua_tolstring(L, -3, &n);
        /* (n > 0: truto_buf_append adds to the data pointer, NULL at first) */
        FUZZ_CHECK(n == 0 || truto_buf_append(&o->out, s, n, (size_t)-1), "out of memory");
        FUZZ_CHECK((lua_Integer)o->out.len <= limit, "returned %zu bytes, limit %lld", o->out.len,
                   (long long)limit);
        lua_pop(L, 3);
    }
    if (o->failed) {
        /* The failure sticks, for update and finish alike. */
        outcome again;
        memset(&again, 0, sizeof again);
        lua_pushliteral(L, "\x1f\x8b");
        call_method(L, inf, "update", 1);
        read_failure(L, &again, limit);
        lua_pop(L, 3);
        FUZZ_CHECK(strcmp(again.kind, o->kind) == 0 && strcmp(again.message, o->message) == 0,
                   "error changed: %s then %s", o->message, again.message);
    }
    call_method(L, inf, "finish", 0);
    if (lua_toboolean(L, -3)) {
        FUZZ_CHECK(!o->failed, "finish succeeded after %s", o->message);
    } else {
        outcome fin;
        memset(&fin, 0, sizeof fin);
        read_failure(L, &fin, limit);
        if (o->failed) {
            FUZZ_CHECK(strcmp(fin.message, o->message) == 0, "finish: %s after %s", fin.message, o->message);
        } else {
            FUZZ_CHECK(strncmp(fin.message, "truncated ", 10) == 0, "finish: %s", fin.message);
            o->failed = 1;
            memcpy(o->kind, fin.kind, sizeof o->kind);
            memcpy(o->message, fin.message, sizeof o->message);
        }
    }
    lua_pop(L, 3);
    call_method(L, inf, "total", 0);
    o->total = lua_tointeger(L, -3);
    lua_pop(L, 3);
    if (o->failed && strcmp(o->kind, "too_large") == 0)
        FUZZ_CHECK(o->total == limit, "total %lld after too_large, limit %lld", (long long)o->total,
                   (long long)limit);
    else
        FUZZ_CHECK(o->total >= (lua_Integer)o->out.len && o->total <= limit,
                   "total %lld, returned %zu, limit %lld", (long long)o->total, o->out.len, (long long)limit);
    if (!o->failed)
        FUZZ_CHECK(o->total == (lua_Integer)o->out.len, "total %lld, returned %zu", (long long)o->total,
                   o->out.len);
    call_method(L, inf, "close", 0);
    lua_pop(L, 3);
    lua_getfield(L, inf, "total");
    lua_pushvalue(L, inf);
    FUZZ_CHECK(lua_pcall(L, 1, 1, 0) != 0, "total() on a closed inflater did not raise");
    FUZZ_CHECK(strcmp(lua_tostring(L, -1), "truto: inflater is closed") == 0, "closed: %s",
               lua_tostring(L, -1));
    lua_settop(L, inf - 1);
}

/* Same failure, same text (or, on a failure, one a prefix of the other). */
static void compare(const outcome *a, const outcome *b, const char *what)
{
    FUZZ_CHECK(a->failed == b->failed, "%s: failed %d vs %d (%s%s)", what, a->failed, b->failed, a->message,
               b->message);
    if (a->failed) {
        FUZZ_CHECK(strcmp(a->kind, b->kind) == 0 && strcmp(a->message, b->message) == 0,
                   "%s: '%s' vs '%s'", what, a->message, b->message);
        size_t n = a->out.len < b->out.len ? a->out.len : b->out.len;
        FUZZ_CHECK(n == 0 || memcmp(a->out.data, b->out.data, n) == 0, "%s: outputs differ", what);
    }
    FUZZ_CHECK(a->total == b->total, "%s: total %lld vs %lld", what, (long long)a->total, (long long)b->total);
    if (!a->failed) {
        FUZZ_CHECK(a->out.len == b->out.len && (a->out.len == 0 || memcmp(a->out.data, b->out.data,
                                                                           a->out.len) == 0),
                   "%s: outputs differ (%zu vs %zu bytes)", what, a->out.len, b->out.len);
    }
}

static int compare_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static void fuzz_one(lua_State *L, input *in, int core)
{
    unsigned choice = take(in);
    const char *coding = (choice & 1) ? "deflate" : "gzip";
    if (choice & 2)
        coding = (choice & 1) ? "DEFLATE" : "x-gzip";
    lua_Integer limit = (lua_Integer)(take(in) << 8 | take(in));
    size_t ncuts = take(in) % 16;
    uint8_t raw_cuts[16];
    for (size_t i = 0; i < ncuts; i++)
        raw_cuts[i] = (uint8_t)take(in);
    const uint8_t *body = in->p;
    size_t len = (size_t)(in->end - in->p);
    size_t cuts[16];
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = len ? (size_t)raw_cuts[i] * len / 255 : 0;
    qsort(cuts, ncuts, sizeof cuts[0], compare_size);

    outcome whole, pieces, bytes;
    decode(L, core, coding, limit, body, len, NULL, 0, 0, &whole);
    decode(L, core, coding, limit, body, len, cuts, ncuts, 0, &pieces);
    decode(L, core, coding, limit, body, len, NULL, 0, 1, &bytes);
    compare(&whole, &pieces, "whole vs pieces");
    compare(&whole, &bytes, "whole vs bytes");
    compare(&pieces, &bytes, "pieces vs bytes");
    truto_buf_free(&whole.out);
    truto_buf_free(&pieces.out);
    truto_buf_free(&bytes.out);
}

/*
 * Streaming decoder of gzip and deflate response bodies (truto.Inflater),
 * for transports that do their own I/O (nginx cosockets): they decode
 * Content-Encoding the way libcurl does for the curl transport, under the
 * same max_response_bytes, counted on the decoded bytes.
 *
 *   local inf = core.inflater("gzip", limit)    -- "gzip", "x-gzip", "deflate"
 *   local out, kind, message = inf:update(chunk) -- decoded bytes, maybe ""
 *   -- or nil, "too_large" | "decode", message (and the same on every later call)
 *   local ok, kind, message = inf:finish()       -- true when the stream ended
 *   inf:total()                                  -- decoded bytes so far
 *   inf:close()                                  -- also __gc and __close
 *
 * Codings: gzip (zlib-wrapped data is accepted too, as libcurl does; members
 * that follow the first are decoded, as gunzip does); deflate: zlib-wrapped
 * data, or raw deflate when the first two bytes are not a zlib header (as
 * browsers and libcurl do; then, as libcurl, up to 4 stray bytes after the
 * end are tolerated).  Anything else after the end is corrupt data
 * ("data after the end of the stream").
 *
 * Bounds: zlib's output is pulled into a 16 KiB scratch area in the
 * userdata, never more than one byte past the limit, and appended to a Lua
 * buffer: one call allocates about what it returns, and a decompression
 * bomb stops after limit + 1 decoded bytes.  The z_stream hangs off the
 * userdata, so an error (out of memory included) at any point leaks
 * nothing: the cleanup shared by close, __gc and __close ends it.  Nothing
 * here calls back into Lua or blocks.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "truto.h"

#define INFLATER_MT "truto.Inflater"

#define SCRATCH_SIZE    16384
/* Raw deflate: stray bytes after the end tolerated (libcurl's number). */
#define RAW_TRAILER_MAX 4
/* Largest limit accepted: 2^53, exact in a double. */
#define MAX_LIMIT       9007199254740992.0

typedef enum {
    MODE_GZIP,          /* gzip (or zlib) stream, members may follow */
    MODE_SNIFF,         /* deflate: waiting for two bytes to tell zlib from raw */
    MODE_ZLIB,          /* deflate with a zlib header */
    MODE_RAW            /* deflate without one */
} mode;

typedef struct {
    z_stream z;
    int ready;              /* inflateInit2 succeeded: inflateEnd is owed */
    int closed;
    mode mode;
    const char *coding;     /* "gzip" or "deflate", for messages */
    int ended;              /* the stream (latest member) ended */
    int seen;               /* any input at all */
    int busy;               /* an update is running: still set if it raised */
    size_t trailer;         /* raw deflate: stray bytes after the end so far */
    unsigned char head[2];  /* deflate: the first bytes, while sniffing */
    size_t nhead;
    size_t limit, total;
    const char *err_kind;   /* NULL, "too_large" or "decode" (sticky) */
    char err[160];
    unsigned char scratch[SCRATCH_SIZE];
} inflater;

/* ---- lifetime ----------------------------------------------------------- */

static void end_stream(inflater *f)
{
    if (f->ready) {
        inflateEnd(&f->z);
        f->ready = 0;
    }
}

/* close, __gc and __close: idempotent, safe on a half-built inflater. */
static int inflater_cleanup(lua_State *L)
{
    inflater *f = (inflater *)luaL_checkudata(L, 1, INFLATER_MT);
    end_stream(f);
    f->closed = 1;
    return 0;
}

static int inflater_tostring(lua_State *L)
{
    inflater *f = (inflater *)luaL_checkudata(L, 1, INFLATER_MT);
    return truto_push_handle_name(L, INFLATER_MT, f->closed);
}

static inflater *check_open(lua_State *L)
{
    inflater *f = (inflater *)luaL_checkudata(L, 1, INFLATER_MT);
    if (f->closed)
        luaL_error(L, "truto: inflater is closed");
    /* An update that raised (out of memory) lost decoded bytes: going on
     * would silently give a body with a hole in it. */
    if (f->busy)
        luaL_error(L, "truto: inflater failed: out of memory");
    return f;
}

/* ---- core.inflater(encoding, limit) ------------------------------------- */

static int is_coding(const char *s, size_t len, const char *name)
{
    return len == strlen(name) && strncasecmp(s, name, len) == 0;
}

static int l_inflater(lua_State *L)
{
    size_t len;
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "truto: content coding must be a string, got %s", luaL_typename(L, 1));
    const char *name = lua_tolstring(L, 1, &len);
    mode m;
    if (is_coding(name, len, "gzip") || is_coding(name, len, "x-gzip"))
        m = MODE_GZIP;
    else if (is_coding(name, len, "deflate"))
        m = MODE_SNIFF;
    else
        return luaL_error(L, "truto: unsupported content coding '%s'", name);
    if (lua_type(L, 2) != LUA_TNUMBER)
        return luaL_error(L, "truto: inflater limit must be a number of bytes, got %s",
                          luaL_typename(L, 2));
    double v = (double)lua_tonumber(L, 2);
    if (!(v >= 0) || !(v <= MAX_LIMIT) || v != (double)(long long)v)
        return luaL_error(L, "truto: inflater limit must be a non-negative integer");
    if (v > (double)(((size_t)-1) / 4))
        v = (double)(((size_t)-1) / 4);

    /* The metatable first, with nothing to free: an error below leaks nothing. */
    inflater *f = (inflater *)lua_newuserdata(L, sizeof *f);
    memset(f, 0, offsetof(inflater, scratch));
    luaL_getmetatable(L, INFLATER_MT);
    lua_setmetatable(L, -2);
    f->mode = m;
    f->coding = m == MODE_GZIP ? "gzip" : "deflate";
    f->limit = (size_t)v;
    /* gzip: 32 + 15 detects a gzip or zlib header, as libcurl does;
     * deflate starts as zlib and is reset to raw when sniffing says so. */
    int rc = inflateInit2(&f->z, m == MODE_GZIP ? 32 + MAX_WBITS : MAX_WBITS);
    if (rc == Z_MEM_ERROR)
        return luaL_error(L, "truto: out of memory");
    if (rc != Z_OK)
        return luaL_error(L, "truto: inflateInit2 failed (%d)", rc);
    f->ready = 1;
    return 1;
}

/* ---- decoding ------------------------------------------------------------- */

/* Records the (sticky) error and releases zlib's memory at once. */
static void fail(inflater *f, const char *kind, const char *detail)
{
    f->err_kind = kind;
    if (strcmp(kind, "too_large") == 0)
        snprintf(f->err, sizeof f->err, "decoded response larger than %llu bytes",
                 (unsigned long long)f->limit);
    else
        snprintf(f->err, sizeof f->err, "corrupt %s data: %s", f->coding, detail);
    end_stream(f);
}

static void fail_zlib(inflater *f, int rc)
{
    const char *msg = f->z.msg;
    if (msg == NULL)
        msg = rc == Z_NEED_DICT ? "preset dictionary required" : "invalid stream";
    fail(f, "decode", msg);
}

static int push_error(lua_State *L, const inflater *f)
{
    lua_pushnil(L);
    lua_pushstring(L, f->err_kind);
    lua_pushstring(L, f->err);
    return 3;
}

/* Whether two bytes open a zlib stream (RFC 1950: deflate, window at most
 * 32 KiB, check bits). */
static int zlib_header(const unsigned char *h)
{
    return (h[0] & 0x0f) == 8 && (h[0] >> 4) <= 7 && ((unsigned)h[0] << 8 | h[1]) % 31 == 0;
}

/* Decodes n bytes into b; 0 when f failed (f->err_kind set). */
static int run(lua_State *L, inflater *f, luaL_Buffer *b, const unsigned char *p, size_t n)
{
    while (n > 0 || !f->ended) {
        if (f->ended) {
            if (f->mode == MODE_RAW) {
                size_t take = RAW_TRAILER_MAX - f->trailer;
                if (n > take) {
                    fail(f, "decode", "data after the end of the stream");
                    return 0;
                }
                f->trailer += n;
                return 1;
            }
            if (f->mode != MODE_GZIP) {
                fail(f, "decode", "data after the end of the stream");
                return 0;
            }
            /* Another gzip member, or garbage; zlib checks the rest of
             * the header. */
            if (*p != 0x1f) {
                fail(f, "decode", "data after the end of the stream");
                return 0;
            }
            if (inflateReset2(&f->z, 16 + MAX_WBITS) != Z_OK) {
                fail(f, "decode", "cannot restart the stream");
                return 0;
            }
            f->ended = 0;
        }
        uInt chunk = n > (size_t)SCRATCH_SIZE * 64 ? (uInt)SCRATCH_SIZE * 64 : (uInt)n;
        size_t room = f->limit - f->total + 1;     /* one byte past the limit */
        f->z.next_in = (Bytef *)(uintptr_t)p;
        f->z.avail_in = chunk;
        f->z.next_out = f->scratch;
        f->z.avail_out = room < SCRATCH_SIZE ? (uInt)room : (uInt)SCRATCH_SIZE;
        uInt out_before = f->z.avail_out;
        int rc = inflate(&f->z, Z_NO_FLUSH);
        size_t used = chunk - f->z.avail_in;
        size_t produced = out_before - f->z.avail_out;
        p += used;
        n -= used;
        if (produced > f->limit - f->total) {
            f->total = f->limit;
            fail(f, "too_large", NULL);
            return 0;
        }
        f->total += produced;
        luaL_addlstring(b, (const char *)f->scratch, produced);
        switch (rc) {
        case Z_STREAM_END:
            f->ended = 1;
            break;
        case Z_OK:
            break;
        case Z_BUF_ERROR:           /* no progress: more input needed */
            if (n == 0)
                return 1;
            fail_zlib(f, rc);       /* cannot happen with input and room */
            return 0;
        case Z_MEM_ERROR:
            luaL_error(L, "truto: out of memory");
            return 0;
        default:                    /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
            fail_zlib(f, rc);
            return 0;
        }
        /* All input taken and room left over: zlib holds nothing more. */
        if (n == 0 && f->z.avail_out > 0 && !f->ended)
            return 1;
    }
    return 1;
}

/* Deflate: holds the first two bytes, then picks zlib or raw and decodes
 * them; the rest of p follows.  Split anywhere, the choice is the same. */
static int sniff(lua_State *L, inflater *f, luaL_Buffer *b, const unsigned char **p, size_t *n)
{
    while (f->nhead < 2 && *n > 0) {
        f->head[f->nhead++] = **p;
        (*p)++;
        (*n)--;
    }
    if (f->nhead < 2)
        return 1;
    if (zlib_header(f->head)) {
        f->mode = MODE_ZLIB;
    } else {
        f->mode = MODE_RAW;
        if (inflateReset2(&f->z, -MAX_WBITS) != Z_OK) {
            fail(f, "decode", "cannot restart the stream");
            return 0;
        }
    }
    return run(L, f, b, f->head, 2);
}

/* inf:update(chunk) -> decoded bytes | nil, kind, message */
static int l_update(lua_State *L)
{
    inflater *f = check_open(L);
    size_t n;
    const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 2, &n);
    if (f->err_kind != NULL)
        return push_error(L, f);
    if (n == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    f->seen = 1;
    f->busy = 1;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int ok = 1;
    if (f->mode == MODE_SNIFF)
        ok = sniff(L, f, &b, &p, &n);
    if (ok && f->mode != MODE_SNIFF && n > 0)
        ok = run(L, f, &b, p, n);
    if (!ok) {
        f->busy = 0;
        return push_error(L, f);
    }
    luaL_pushresult(&b);
    f->busy = 0;
    return 1;
}

/* inf:finish() -> true | nil, kind, message.  No input at all is an empty
 * body (a reply without one may still name its coding), as with libcurl. */
static int l_finish(lua_State *L)
{
    inflater *f = check_open(L);
    if (f->err_kind != NULL)
        return push_error(L, f);
    if (f->seen && !f->ended) {
        lua_pushnil(L);
        lua_pushliteral(L, "decode");
        lua_pushfstring(L, "truncated %s data", f->coding);
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* inf:total() -> decoded bytes so far (the limit after too_large) */
static int l_total(lua_State *L)
{
    inflater *f = check_open(L);
    lua_pushinteger(L, (lua_Integer)f->total);
    return 1;
}

void truto_open_inflate(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"update", l_update},
        {"finish", l_finish},
        {"total", l_total},
        {"close", inflater_cleanup},
        {NULL, NULL},
    };
    truto_open_class(L, INFLATER_MT, methods, inflater_cleanup, inflater_tostring, "inflater",
                     l_inflater);
}

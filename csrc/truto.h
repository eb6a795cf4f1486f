/*
 * Private interface shared by the files of the truto.core module.
 * Nothing here is exported: the shared object is built with
 * -fvisibility=hidden and only luaopen_truto_core is marked public.
 */
#ifndef TRUTO_H
#define TRUTO_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>
#include <lauxlib.h>

#define TRUTO_VERSION "0.1.0"
#define TRUTO_API __attribute__((visibility("default")))

/* Hidden even when a build (luarocks) does not pass -fvisibility=hidden. */
#pragma GCC visibility push(hidden)

/* Nesting deeper than this in a query or a body is refused: it guards the
 * C stack and catches runaway structures before they exhaust memory. */
#define TRUTO_MAX_DEPTH 100

/* Registry keys of the metatables that mark a table as a JSON array or
 * object (truto.array / truto.object). */
#define TRUTO_ARRAY_MT  "truto.array"
#define TRUTO_OBJECT_MT "truto.object"

/* ---- encoder state (encoder.c) --------------------------------------
 * One userdata per encoding call holds every scratch area an encoder needs:
 * the output buffer, a stack of sorted-key runs, the chain of tables being
 * visited (cycle detection) and the path used in error messages.  All heap
 * memory hangs off the userdata, whose __gc frees it, so a luaL_error at
 * any point leaks nothing. */

typedef struct {
    const char *key;    /* object key (points into a Lua string on the stack) */
    size_t keylen;
    lua_Integer index;  /* array position (1-based) when key == NULL */
} truto_path_elem;

typedef struct {
    const char *str;
    size_t len;
    int slot;           /* stack index of the key string, or 0 */
} truto_key;

typedef struct {
    char *data;
    size_t len, cap;
} truto_bytes;

typedef struct {
    truto_bytes out;        /* the text being produced */
    truto_bytes prefix;     /* query encoder: the percent-encoded key path */
    truto_key *keys;        /* sorted keys of every object being walked */
    size_t nkeys, capkeys;
    const char *root;       /* "body", "query", ...: first word of a path */
    size_t pairs;           /* query encoder: name=value pairs written so far */
    int depth;
    int busy;               /* in use by a call (see truto_encoder_new) */
    const void *visiting[TRUTO_MAX_DEPTH + 1];
    truto_path_elem path[TRUTO_MAX_DEPTH + 1];
} truto_encoder;

/* Pushes an encoder, ready for one call: the cached one when it is free.
 * Call truto_encoder_done when the call has pushed its result. */
truto_encoder *truto_encoder_new(lua_State *L, const char *root);
void truto_encoder_done(truto_encoder *e);
void truto_bytes_reserve(lua_State *L, truto_bytes *b, size_t extra);
void truto_bytes_add(lua_State *L, truto_bytes *b, const char *s, size_t n);
#define truto_bytes_addlit(L, b, s) truto_bytes_add((L), (b), "" s, sizeof(s) - 1)
static inline void truto_bytes_addc(lua_State *L, truto_bytes *b, char c)
{
    if (b->len == b->cap)
        truto_bytes_reserve(L, b, 1);
    b->data[b->len++] = c;
}
void truto_bytes_push(lua_State *L, const truto_bytes *b);

/* Walking tables: enter/leave maintain depth, cycle detection and path. */
void truto_enter(lua_State *L, truto_encoder *e, int idx);
void truto_leave(truto_encoder *e);
void truto_path_key(truto_encoder *e, const char *key, size_t len);
void truto_path_index(truto_encoder *e, lua_Integer i);
/* Raises "<root><path>: <message>". */
int truto_path_error(lua_State *L, truto_encoder *e, const char *fmt, ...);

/* Collects the string keys of the object at idx, sorted bytewise; returns
 * the index of the first key in e->keys (the run ends at e->nkeys). */
size_t truto_sorted_keys(lua_State *L, truto_encoder *e, int idx);
/* Appends the string at stack index idx to e->keys. */
void truto_push_key(lua_State *L, truto_encoder *e, int idx);
/* Sorts e->keys[first .. nkeys) bytewise. */
void truto_sort_keys(truto_encoder *e, size_t first);
/* Pushes the value of key i (from truto_table_shape) of the table at idx. */
void truto_push_field(lua_State *L, truto_encoder *e, size_t i, int idx);
/* Forgets the keys from first on, and their strings on the stack. */
void truto_drop_keys(lua_State *L, truto_encoder *e, size_t first);

/* ---- table shapes (table.c) ----------------------------------------- */
typedef enum {
    TRUTO_EMPTY,        /* no keys and no mark */
    TRUTO_ARRAY,        /* keys 1..n, or marked with truto.array */
    TRUTO_OBJECT        /* string keys, or marked with truto.object */
} truto_shape;

/* Classifies the table at idx in one walk; *n receives the length of an
 * array.  For an object its keys are left, sorted, in e->keys[first ..
 * nkeys), *first receiving the start.  Sparse, mixed and non-string-keyed
 * tables raise a path error. */
truto_shape truto_table_shape(lua_State *L, truto_encoder *e, int idx, lua_Integer *n,
                              size_t *first);

/* ---- text (text.c) -------------------------------------------------- */
/* Returns the offset of the first invalid UTF-8 byte, or (size_t)-1. */
size_t truto_utf8_invalid_at(const char *s, size_t len);
/* Appends s percent-encoded: only A-Z a-z 0-9 - . _ ~ stay as they are. */
void truto_pct_encode(lua_State *L, truto_bytes *b, const char *s, size_t len);
/* Appends a JSON string literal, quotes included. */
void truto_json_quote(lua_State *L, truto_bytes *b, const char *s, size_t len);

/* ---- numbers (number.c) --------------------------------------------- */
/* Writes the number at idx the way JavaScript's String(n) does for floats
 * (shortest round-trip digits) and exactly for integers.  Returns the
 * length, or 0 for NaN and infinities.  out must hold 32 bytes. */
size_t truto_format_number(lua_State *L, int idx, char *out);
/* "NaN", "inf" or "-inf", for messages about the number at idx. */
const char *truto_nonfinite_name(lua_State *L, int idx);

/* ---- the null sentinel ---------------------------------------------- */
/* truto.null is cjson.null: a light userdata holding NULL. */
static inline int truto_is_null(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL;
}

/* ---- encoders (query.c, json.c) ------------------------------------- */
/* Append the encoding of the value at idx to e->out. */
void truto_query_encode(lua_State *L, truto_encoder *e, int idx);
/* list_fields: stack index of a set of top-level field names whose empty
 * tables are arrays, or 0. */
void truto_json_encode(lua_State *L, truto_encoder *e, int idx, int list_fields);

/* ---- libcurl helpers shared by session.c and multi.c (curl_common.c) - */
struct curl_slist;

#define TRUTO_DEFAULT_TIMEOUT_MS         30000L
#define TRUTO_DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define TRUTO_DEFAULT_MAX_RESPONSE_BYTES ((size_t)64 * 1024 * 1024)
#define TRUTO_MAX_HEADER_BYTES           ((size_t)1024 * 1024)

/* curl_global_init once; 0 when it fails. */
int truto_curl_global_init(void);
/* Buffers for libcurl callbacks: never raise (append returns 0 on OOM). */
int truto_buf_append(truto_bytes *b, const char *p, size_t n, size_t limit);
void truto_buf_reset(truto_bytes *b);
void truto_buf_free(truto_bytes *b);
/* Option checks ("truto: <what> must be ..." errors). */
long truto_check_seconds(lua_State *L, int idx, const char *what);   /* -> ms */
size_t truto_check_bytes(lua_State *L, int idx, const char *what);
int truto_check_boolean(lua_State *L, int idx, const char *what);
void truto_copy_string(lua_State *L, int idx, const char *what, char **slot);
void truto_check_fields(lua_State *L, int idx, const char *const *names, const char *what);
int truto_has_prefix_ci(const char *s, const char *prefix);
/* Request fields. */
const char *truto_check_method(lua_State *L, int idx);
const char *truto_check_url(lua_State *L, int idx);
void truto_check_header_lines(lua_State *L, int idx);
int truto_check_body(lua_State *L, int idx, const char *method, const char **body, size_t *len);
int truto_header_list(lua_State *L, int idx, int has_body, struct curl_slist **list);
/* Easy-handle options (return a CURLcode). */
int truto_setopt_tls(void *easy, int insecure, const char *ca_file, const char *ca_path,
                     const char *proxy);
int truto_setopt_method(void *easy, const char *method, const char *body, size_t body_len,
                        int has_body, int http2, int copy_body);
/* Replies. */
void truto_push_curl_error(lua_State *L, int code, const char *message, const char *errbuf,
                           int too_large, int head_too_large, size_t limit);
void truto_push_headers(lua_State *L, const truto_bytes *h);
const char *truto_http_version_name(long version);

TRUTO_API int luaopen_truto_core(lua_State *L);

/* ---- registration of each file's Lua functions (core.c calls these) - */
void truto_open_request(lua_State *L);
void truto_open_session(lua_State *L);
void truto_open_multi(lua_State *L);
void truto_open_response(lua_State *L);
void truto_open_decode(lua_State *L);
void truto_open_webhook(lua_State *L);
void truto_open_system(lua_State *L);

/* Compatibility with the Lua 5.1 C API (LuaJIT). */
#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#define luaL_setfuncs(L, l, nup) luaL_register((L), NULL, (l))
#endif

#pragma GCC visibility pop

#endif

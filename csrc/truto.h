/*
 * Private interface shared by the files of the two C modules: truto.core
 * (core.c and the files it registers) and truto.curl_core (curl_core.c,
 * session.c, multi.c, stream.c, curl_common.c: the only ones that call libcurl).
 * Nothing here is exported: the shared objects are built with
 * -fvisibility=hidden and only their luaopen_* functions are marked public.
 */
#ifndef TRUTO_H
#define TRUTO_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"

#define TRUTO_VERSION "0.2.0"
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
/* The metatables of truto.file and truto.raw values (lua/truto/multipart.lua):
 * such a value is a part or a whole body, never a value the writers take. */
#define TRUTO_FILE_MT   "truto.file"
#define TRUTO_RAW_MT    "truto.raw"
/* The metatable of a response's header block (headers.c). */
#define TRUTO_HEADERS_MT "truto.headers"

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
    const char *str;    /* held by the table being walked, which no Lua code changes meanwhile */
    size_t len;
    int value;          /* stack index of the key's value (truto_table_shape), or 0 */
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
void truto_bytes_grow(lua_State *L, truto_bytes *b, size_t extra);
static inline void truto_bytes_reserve(lua_State *L, truto_bytes *b, size_t extra)
{
    if (b->cap - b->len < extra)
        truto_bytes_grow(L, b, extra);
}
void truto_bytes_add(lua_State *L, truto_bytes *b, const char *s, size_t n);
#define truto_bytes_addlit(L, b, s) truto_bytes_add((L), (b), "" s, sizeof(s) - 1)
static inline void truto_bytes_addc(lua_State *L, truto_bytes *b, char c)
{
    if (b->len == b->cap)
        truto_bytes_grow(L, b, 1);
    b->data[b->len++] = c;
}
void truto_bytes_push(lua_State *L, const truto_bytes *b);

/* ---- large request bodies (body.c) --------------------------------------
 * build_request hands a JSON body over this size to a truto.Body userdata,
 * which takes the encoder's buffer as it is: no Lua string copy of it. */
#define TRUTO_BODY_MT "truto.Body"
#define TRUTO_BODY_THRESHOLD ((size_t)1024 * 1024)

typedef struct {
    char *data;         /* malloc'd, NULL once closed */
    size_t len;
    int pins;           /* transfers sending from data: close is refused */
} truto_body;

/* Pushes a Body that takes out's bytes, leaving out empty. */
void truto_body_push(lua_State *L, truto_bytes *out);

/* The Body at idx, or NULL when the value is none. */
static inline truto_body *truto_to_body(lua_State *L, int idx)
{
    truto_body *b = (truto_body *)lua_touserdata(L, idx);
    if (b == NULL || lua_islightuserdata(L, idx) || !lua_getmetatable(L, idx))
        return NULL;
    luaL_getmetatable(L, TRUTO_BODY_MT);
    int is_body = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is_body ? b : NULL;
}

/* Walking tables: enter/leave maintain depth, cycle detection and path. */
void truto_enter(lua_State *L, truto_encoder *e, int idx);
void truto_leave(truto_encoder *e);
void truto_path_key(truto_encoder *e, const char *key, size_t len);
void truto_path_index(truto_encoder *e, lua_Integer i);
/* Raises "<root><path>: <message>". */
int truto_path_error(lua_State *L, truto_encoder *e, const char *fmt, ...);
/* Raises a path error unless s is valid UTF-8; `what` is "" for a value or
 * "in key " for a key. */
void truto_check_utf8(lua_State *L, truto_encoder *e, const char *s, size_t len, const char *what);

/* Collects the string keys of the object at idx, sorted bytewise; returns
 * the index of the first key in e->keys (the run ends at e->nkeys). */
size_t truto_sorted_keys(lua_State *L, truto_encoder *e, int idx);
/* Appends a key (its string, and the stack index of its value or 0) to e->keys. */
void truto_add_key(lua_State *L, truto_encoder *e, const char *str, size_t len, int value);
/* Sorts e->keys[first .. nkeys) bytewise. */
void truto_sort_keys(truto_encoder *e, size_t first);
/* Forgets the keys from first on, and their values on the stack. */
void truto_drop_keys(lua_State *L, truto_encoder *e, size_t first);

/* ---- table shapes (table.c) ----------------------------------------- */
typedef enum {
    TRUTO_EMPTY,        /* no keys and no mark */
    TRUTO_ARRAY,        /* keys 1..n, or marked with truto.array */
    TRUTO_OBJECT        /* string keys, or marked with truto.object */
} truto_shape;

/* Classifies the table at idx in one walk; *n receives the length of an
 * array.  For an object its keys are left, sorted, in e->keys[first ..
 * nkeys), *first receiving the start, and their values on the stack (at
 * e->keys[i].value) until truto_drop_keys.  Sparse, mixed and
 * non-string-keyed tables raise a path error. */
truto_shape truto_table_shape(lua_State *L, truto_encoder *e, int idx, lua_Integer *n,
                              size_t *first);

/* ---- text (text.c) -------------------------------------------------- */
/* Returns the offset of the first invalid UTF-8 byte, or (size_t)-1. */
size_t truto_utf8_invalid_at(const char *s, size_t len);
/* Appends s percent-encoded: only A-Z a-z 0-9 - . _ ~ stay as they are. */
void truto_pct_encode(lua_State *L, truto_bytes *b, const char *s, size_t len);
/* Writes s as a JSON string literal, quotes included, at o, which has room
 * for len * 6 + 8 bytes (6 per byte at worst, and 8-byte stores).  Returns the end; or NULL when s is not valid
 * UTF-8, *bad then receiving the offset of the first invalid byte. */
char *truto_json_string(char *o, const char *s, size_t len, size_t *bad);
/* The length of the longest prefix of s that is valid UTF-8 holding no
 * '"', no '\\' and no control character: a JSON string's text that can be
 * taken as it is, up to its closing quote or its first escape. */
size_t truto_json_plain_span(const char *s, size_t len);
/* An RFC 9110 token (method, header name): non-empty, tchar only. */
int truto_is_token(const char *s, size_t len);
/* The offset of the first control character (below 0x20) or DEL in s, or len. */
size_t truto_first_control(const char *s, size_t len);
/* A header field value: no control character but tab, no DEL. */
int truto_is_field_value(const char *s, size_t len);

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

/* ---- userdata classes (class.c) ------------------------------------- */
/* __tostring of the userdata at 1 with metatable name: "truto.Session
 * (0x...)" or "truto.Session (closed, 0x...)".  Returns 1. */
int truto_push_handle_name(lua_State *L, const char *name, int closed);
/* Registers the metatable name: __index (methods, and cleanup as close),
 * __gc and __close (cleanup), __tostring; then sets field ctor_name of the table on top of the
 * stack to ctor. */
void truto_open_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction cleanup, lua_CFunction tostring, const char *ctor_name,
                      lua_CFunction ctor);

/* ---- the JSON reader (decode.c) --------------------------------------- */
/* Giving the text back to the system while it is read: every step bytes,
 * the whole pages between text + keep and the reader's position are
 * released (madvise MADV_DONTNEED), so that a large response buffer shrinks
 * as the tables it becomes grow.  Those bytes then read as zeros: the text
 * must be a block of its own (malloc'd), freed after the decode. */
typedef struct {
    size_t keep, step;
} truto_release;

/* Pushes the value of the JSON document text (as core.decode_json reads
 * it) and returns 1; or pushes the reader's message ("... at byte N") and
 * returns 0 when it is not valid JSON.  Any other error (memory running
 * out, a finalizer's under LuaJIT) is raised.  text needs not be a Lua string; release: NULL, or how to give it back. */
int truto_decode_json_text(lua_State *L, const char *text, size_t len, const truto_release *release);

/* ---- libcurl helpers shared by session.c and multi.c (curl_common.c) - */
struct curl_slist;
struct curl_mime;

#define TRUTO_DEFAULT_TIMEOUT_MS         30000L
#define TRUTO_DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define TRUTO_DEFAULT_MAX_RESPONSE_BYTES ((size_t)64 * 1024 * 1024)
/* The transport contract's caps on response headers (HACKING.md): one
 * block, and one line (libcurl's own CURL_MAX_HTTP_HEADER). */
#define TRUTO_MAX_HEADER_BYTES           ((size_t)256 * 1024)
#define TRUTO_MAX_HEADER_LINE            (100 * 1024)
/* A non-2xx body kept in memory while a sink takes 2xx bodies (the
 * contract: a sink lifts the cap only for what it receives). */
#define TRUTO_MAX_KEPT_WITH_SINK         ((size_t)1024 * 1024)
#define TRUTO_ERROR_SIZE                 256    /* CURL_ERROR_SIZE (checked) */

/* curl_global_init once; raises "truto: curl_global_init failed". */
void truto_curl_global_init(lua_State *L);
/* Seconds on a monotonic clock: the deadlines of waits (multi.c, stream.c). */
double truto_monotonic_seconds(void);
/* Buffers for libcurl callbacks: never raise (append returns 0 on OOM). */
int truto_buf_append(truto_bytes *b, const char *p, size_t n, size_t limit);
void truto_buf_reset(truto_bytes *b);
void truto_buf_free(truto_bytes *b);
/* "truto: <what> must be a boolean, got <type>" unless a boolean. */
int truto_check_boolean(lua_State *L, int idx, const char *what);
int truto_has_prefix_ci(const char *s, const char *prefix);

/* The options core.session{} and core.multi{} share, embedded in both
 * userdata.  The strings are owned: truto_options_free, from the cleanup. */
typedef struct {
    long timeout_ms, connect_timeout_ms;
    size_t max_bytes;
    char *ca_file, *ca_path, *proxy;
    int insecure, http2;
} truto_transfer_options;

/* The option names both take, first in their field lists. */
#define TRUTO_OPTION_FIELDS                                                        \
    "timeout", "connect_timeout", "ca_file", "ca_path", "insecure", "proxy",      \
    "max_response_bytes", "http2"

/* core.session(opts), core.multi(opts): checks that argument 1 is nil or a
 * table, then pushes a zeroed userdata of size bytes with metatable mt (a
 * state its cleanup handles, so that any error after this leaks nothing). */
void *truto_new_handle(lua_State *L, size_t size, const char *mt);
/* Sets o (zeroed: nothing to free yet) to the defaults, then reads the
 * options table at argument 1 (nil: nothing to read): every key
 * one of fields ("unknown <what> 'k'"); then, in fields order, each one
 * given: a transfer option into o, any other by own(L, handle, name) with
 * the value on top of the stack. */
typedef void (*truto_option_reader)(lua_State *L, void *handle, const char *name);
void truto_options_read(lua_State *L, const char *const *fields, const char *what,
                        truto_transfer_options *o, truto_option_reader own, void *handle);
/* Frees the strings; idempotent. */
void truto_options_free(truto_transfer_options *o);

/* The request fields both front ends take, first in their field lists and
 * in this order: truto_check_request leaves field i in slot
 * TRUTO_ARG_METHOD + i (the caller's own fields follow from TRUTO_ARG_EXTRA). */
#define TRUTO_REQUEST_FIELDS                                                       \
    "method", "url", "headers", "body", "timeout", "connect_timeout",             \
    "max_response_bytes", "fresh_connect"
enum {
    TRUTO_ARG_METHOD = 3, TRUTO_ARG_URL, TRUTO_ARG_HEADERS, TRUTO_ARG_BODY, TRUTO_ARG_TIMEOUT,
    TRUTO_ARG_CONNECT_TIMEOUT, TRUTO_ARG_MAX_BYTES, TRUTO_ARG_FRESH_CONNECT, TRUTO_ARG_EXTRA
};

typedef struct {
    const char *method, *url, *body;
    size_t body_len;
    int has_body;                   /* send body (possibly empty) as the payload */
    int form;                       /* the body is a multipart form (lua/truto/multipart.lua) */
    truto_body *held;               /* the truto.Body body's bytes are in (at TRUTO_ARG_BODY), or NULL */
    struct curl_mime *mime;         /* its parts, built by truto_mime_build, owned by the caller */
    long timeout_ms, connect_timeout_ms;
    size_t max_bytes;
    int fresh_connect;              /* never on a reused connection */
} truto_transfer_request;

/* Checks the request table at stack index 2 (keys: fields, read raw) up to
 * max_response_bytes, defaults from o.  fresh_connect is left to the caller,
 * after its own fields: r->fresh_connect is 0. */
void truto_check_request(lua_State *L, const char *const *fields,
                         const truto_transfer_options *o, truto_transfer_request *r);
/* Makes *list the header lines at idx (checked), "Expect:" and, for a body
 * without a Content-Type, "Content-Type:"; for a form, every line but
 * Content-Type (libcurl writes it, with its own boundary).  The nodes of
 * *list that already hold the right lines are kept, the rest freed and
 * built again.  0 on OOM, *list then valid (never raises). */
int truto_header_list(lua_State *L, int idx, const truto_transfer_request *r, struct curl_slist **list);

/* What one transfer receives, written by the libcurl callbacks (which never
 * raise: they set a flag and return a short count). */
typedef struct {
    truto_bytes body;               /* response body (unless a sink takes it) */
    truto_bytes head;               /* header lines of the latest response */
    size_t limit, received;         /* max_response_bytes; body bytes so far */
    int too_large, head_too_large, oom;
    int final_status;               /* the latest status line is not a 1xx */
    int head_done;                  /* its block has ended: later lines are trailers */
    char errbuf[TRUTO_ERROR_SIZE];  /* CURLOPT_ERRORBUFFER */
    char file_error[512];           /* why a file being uploaded failed, or "" */
} truto_reply;

/* Empties r for a transfer of at most limit body bytes. */
void truto_reply_start(truto_reply *r, size_t limit);
/* Counts n body bytes: 0 (too_large set) past the limit, else 1. */
int truto_reply_count(truto_reply *r, size_t n);
/* Counts and keeps n body bytes: n, or 0 (too_large or oom set). */
size_t truto_reply_body(truto_reply *r, const char *p, size_t n);
/* Keeps a header line: a status line (an interim 1xx, a proxy's CONNECT
 * reply) starts afresh, the blank line ending a block is not kept, and the
 * lines after a final block (chunked trailers) are dropped.  n, or 0
 * (too_large or oom set). */
size_t truto_reply_header(truto_reply *r, const char *p, size_t n);
/* Empties both buffers, returning big ones to the system. */
void truto_reply_reset(truto_reply *r);
/* Frees both buffers; idempotent. */
void truto_reply_free(truto_reply *r);

/* The parts of the form in the request's body slot (TRUTO_ARG_BODY, checked)
 * as a new libcurl MIME structure in *mime (owned by the caller, which frees
 * it with curl_mime_free once the transfer is over): each part's header
 * lines as given, its text copied, its file read while it is sent, opened
 * again by each transfer and checked against the size given.  A file that
 * fails writes reply->file_error and stops the transfer.  Returns 0 when
 * memory runs out (*mime then holds what was built); never raises. */
int truto_mime_build(lua_State *L, void *easy, truto_reply *reply, struct curl_mime **mime);

/* The callbacks' type (CURLOPT_WRITEFUNCTION, CURLOPT_HEADERFUNCTION). */
typedef size_t (*truto_curl_callback)(char *p, size_t size, size_t n, void *ud);
/* The options that stay for a handle's life (set once on each easy handle
 * of a session or a multi): callbacks (with ud) and
 * error buffer (reply's), TLS and proxy (o), HTTP version, content
 * decoding, protocols.  Returns a CURLcode. */
int truto_setopt_handle(void *easy, const truto_transfer_options *o, truto_reply *reply,
                        truto_curl_callback on_body, truto_curl_callback on_header, void *ud);

/* What the request options of a handle were last set to, so that the next
 * request sets only what differs.  Zeroed: nothing known (a new or reset
 * handle), every option is set. */
typedef struct {
    int known;
    long timeout_ms, connect_timeout_ms, fresh_connect, nobody;
    struct curl_slist *headers;
    char custom[16];                /* CURLOPT_CUSTOMREQUEST, "" for none */
} truto_applied;

/* The options of one request that differ from *a (updated): url, timeouts,
 * header list, fresh_connect, then method and payload, which are set every
 * time (the body a copy when copy_body).  The handle keeps a pointer to the
 * body (unless copied) and the form: clear them once the transfer is over.
 * Returns a CURLcode. */
int truto_setopt_request(void *easy, truto_applied *a, const truto_transfer_request *r,
                         struct curl_slist *headers, int copy_body);

/* The info table of a reply. */
typedef struct {
    long status, version, port, connects;
    int redirects;
    double total_time, connect_time;
    int64_t size;
    char ip[64];
} truto_info;

/* Reads a finished transfer's figures into i: total_time and connects add
 * to what i holds (the hops of a redirect chain), the rest are replaced. */
void truto_collect_info(void *easy, truto_info *i);
/* { http_version =, total_time =, connect_time =, primary_ip =, primary_port =,
 *   size_download =, redirects =, new_connections = } */
void truto_push_info(lua_State *L, const truto_info *i);
/* { kind =, message =, curl_code = } for a failed transfer: "too_large" for
 * a body or header block over its limit; otherwise the kind follows the
 * CURLcode, and the message is message, the reply's error buffer, or
 * libcurl's generic text. */
void truto_push_curl_error(lua_State *L, int code, const char *message, const truto_reply *r);
/* The header lines of a response as a truto.headers block (headers.c),
 * the one shape the session and the multi handle return. */
void truto_push_headers(lua_State *L, const truto_bytes *h);
/* What is left of a body decode_json found not valid JSON: its first bytes
 * (an error keeps 1000 of them, once it has scrubbed the token). */
#define TRUTO_BODY_KEPT ((size_t)64 * 1024)
/* Pushes the body of a complete response and empties body (a big buffer is
 * freed): with decode_json (asked, and the status 2xx), a JSON object or
 * array (the content-type in the headers table at headers_idx, as the
 * client's is_json reads it) is decoded straight from the buffer, which a
 * large body gives back as it is read: returns 1.  When that body is not
 * valid JSON, pushes its first TRUTO_BODY_KEPT bytes and the reader's
 * message: returns 2.  Any other body is pushed as a string: returns 1.
 * release: the body may be given back as it is read and is emptied after
 * (the session); without it the body is left as it is (the multi handle,
 * whose results must be buildable again if building them raises).
 * Raises when memory runs out or a finalizer raises (LuaJIT). */
int truto_push_reply_body(lua_State *L, truto_bytes *body, int headers_idx, int decode_json, int release);


TRUTO_API int luaopen_truto_core(lua_State *L);
TRUTO_API int luaopen_truto_curl_core(lua_State *L);
TRUTO_API int luaopen_truto_tls(lua_State *L);
TRUTO_API int luaopen_truto_redis_core(lua_State *L);

/* ---- registration of each file's Lua functions (core.c and, for
 * session.c and multi.c, curl_core.c call these) ---------------------- */
void truto_open_request(lua_State *L);
void truto_open_session(lua_State *L);
void truto_open_multi(lua_State *L);
void truto_open_stream(lua_State *L);
void truto_open_response(lua_State *L);
void truto_open_decode(lua_State *L);
void truto_open_webhook(lua_State *L);
void truto_open_system(lua_State *L);
void truto_open_inflate(lua_State *L);
void truto_open_headers(lua_State *L);
void truto_open_http1(lua_State *L);

/* Pushes len bytes of header lines as a truto.headers userdata: indexed by
 * a lower-case name it gives that field's value (repeats joined with ", "),
 * truto.core's header_table makes the table of all of them. */
void truto_push_header_block(lua_State *L, const char *data, size_t len);

#pragma GCC visibility pop

#endif

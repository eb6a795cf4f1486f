/*
 * The libcurl multi handle (truto.Multi): many transfers at once, HTTP/2
 * multiplexed where the server offers it, connections kept in the multi's
 * cache and reused across transfers.
 *
 *   local m = core.multi{ timeout = 30, max_host_connections = 16, ... }
 *   local id = m:add{ method =, url =, headers = {...}, body = }  -- starts it
 *   local done = m:wait(seconds)  -- { {id=, status=, headers=, body=, info=}
 *                                 --   or {id=, err={kind=, message=, curl_code=}}, ... }
 *   m:pending(); m:close()
 *
 * Memory rules: every transfer's state (easy handle, header list, response
 * buffers, error buffer) is one malloc'd struct listed in the Multi
 * userdata, and the one cleanup shared by close, __gc and __close frees
 * them all, in flight or idle.  Finished easy handles wait in a free pool
 * for the next add.  libcurl callbacks never raise and never touch Lua:
 * they record a flag and return a short count.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "truto.h"

#define MULTI_MT "truto.Multi"

#define DEFAULT_MAX_HOST_CONNECTIONS 16L
/* Idle easy handles kept for reuse; more are freed as they finish. */
#define MAX_IDLE 64

enum { XFER_IDLE, XFER_ACTIVE, XFER_DONE };

typedef struct xfer {
    CURL *easy;
    struct curl_slist *headers;
    truto_bytes body, head;
    size_t limit, received;
    int too_large, head_too_large, oom;
    int state;
    CURLcode code;                  /* result, once XFER_DONE */
    lua_Integer id;
    size_t slot;                    /* index in multi.all */
    struct xfer *next;              /* idle pool or done queue */
    char errbuf[CURL_ERROR_SIZE];
} xfer;

typedef struct {
    CURLM *cm;
    xfer **all;                     /* every transfer owned, whatever its state */
    size_t nall, capall;
    xfer *idle;                     /* free pool */
    size_t nidle;
    xfer *done, *done_tail;         /* finished, not yet reported (in order) */
    size_t pending;                 /* active + done */
    lua_Integer next_id;

    char *ca_file, *ca_path, *proxy;
    long timeout_ms, connect_timeout_ms, max_host_connections;
    size_t max_bytes;
    int insecure, http2;
    int closed;
} multi;

/* ---- per-transfer state ------------------------------------------------------ */

static void xfer_free(xfer *x)
{
    if (x->easy != NULL)
        curl_easy_cleanup(x->easy);
    if (x->headers != NULL)
        curl_slist_free_all(x->headers);
    truto_buf_free(&x->body);
    truto_buf_free(&x->head);
    free(x);
}

/* Drops the transfer from m->all (swap with the last). */
static void unlist(multi *m, xfer *x)
{
    xfer *last = m->all[--m->nall];
    m->all[x->slot] = last;
    last->slot = x->slot;
}

/* A finished (or never started) transfer back to the pool: the handle must
 * keep no pointer to the freed list; large buffers go back to the system. */
static void release(multi *m, xfer *x)
{
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    if (x->headers != NULL) {
        curl_slist_free_all(x->headers);
        x->headers = NULL;
    }
    truto_buf_reset(&x->body);
    truto_buf_reset(&x->head);
    x->state = XFER_IDLE;
    if (m->nidle >= MAX_IDLE) {
        unlist(m, x);
        xfer_free(x);
        return;
    }
    x->next = m->idle;
    m->idle = x;
    m->nidle++;
}

/* An idle transfer with an easy handle, listed in m->all; NULL on OOM. */
static xfer *acquire(multi *m)
{
    xfer *x = m->idle;
    if (x != NULL) {
        m->idle = x->next;
        m->nidle--;
        x->next = NULL;
        curl_easy_reset(x->easy);  /* keeps nothing but caches */
        return x;
    }
    if (m->nall == m->capall) {
        size_t cap = m->capall ? m->capall * 2 : 16;
        xfer **a = (xfer **)realloc(m->all, cap * sizeof *a);
        if (a == NULL)
            return NULL;
        m->all = a;
        m->capall = cap;
    }
    x = (xfer *)calloc(1, sizeof *x);
    if (x == NULL)
        return NULL;
    x->easy = curl_easy_init();
    if (x->easy == NULL) {
        free(x);
        return NULL;
    }
    x->state = XFER_IDLE;
    x->slot = m->nall;
    m->all[m->nall++] = x;
    return x;
}

static void queue_done(multi *m, xfer *x, CURLcode code)
{
    x->state = XFER_DONE;
    x->code = code;
    x->next = NULL;
    if (m->done_tail != NULL)
        m->done_tail->next = x;
    else
        m->done = x;
    m->done_tail = x;
}

/* ---- lifetime ------------------------------------------------------------ */

static multi *check_multi(lua_State *L)
{
    return (multi *)luaL_checkudata(L, 1, MULTI_MT);
}

/* close, __gc and __close: idempotent, safe on a half-built multi; aborts
 * the transfers in flight. */
static int multi_cleanup(lua_State *L)
{
    multi *m = check_multi(L);
    for (size_t i = 0; i < m->nall; i++) {
        xfer *x = m->all[i];
        if (x->state == XFER_ACTIVE && m->cm != NULL)
            curl_multi_remove_handle(m->cm, x->easy);
        xfer_free(x);
    }
    free(m->all);
    m->all = NULL;
    m->nall = m->capall = 0;
    m->idle = m->done = m->done_tail = NULL;
    m->nidle = m->pending = 0;
    if (m->cm != NULL) {
        curl_multi_cleanup(m->cm);
        m->cm = NULL;
    }
    free(m->ca_file);
    free(m->ca_path);
    free(m->proxy);
    m->ca_file = m->ca_path = m->proxy = NULL;
    m->closed = 1;
    return 0;
}

static int multi_tostring(lua_State *L)
{
    multi *m = check_multi(L);
    lua_pushfstring(L, "truto.Multi (%s%p)", m->closed ? "closed, " : "", (void *)m);
    return 1;
}

static multi *check_open(lua_State *L)
{
    multi *m = check_multi(L);
    if (m->closed)
        luaL_error(L, "truto: multi is closed");
    return m;
}

/* ---- core.multi(opts) ------------------------------------------------------ */

static const char *const multi_fields[] = {
    "timeout", "connect_timeout", "ca_file", "ca_path", "insecure", "proxy",
    "max_response_bytes", "http2", "max_host_connections", NULL,
};

static int l_multi(lua_State *L)
{
    if (!lua_isnoneornil(L, 1))
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);

    /* Sentinels and metatable first: an error below leaves a multi the
     * collector can clean up. */
    multi *m = (multi *)lua_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    m->timeout_ms = TRUTO_DEFAULT_TIMEOUT_MS;
    m->connect_timeout_ms = TRUTO_DEFAULT_CONNECT_TIMEOUT_MS;
    m->max_bytes = TRUTO_DEFAULT_MAX_RESPONSE_BYTES;
    m->max_host_connections = DEFAULT_MAX_HOST_CONNECTIONS;
    m->http2 = 1;
    m->next_id = 1;
    luaL_getmetatable(L, MULTI_MT);
    lua_setmetatable(L, -2);

    if (lua_istable(L, 1)) {
        truto_check_fields(L, 1, multi_fields, "multi option");
        for (int i = 0; multi_fields[i] != NULL; i++) {
            const char *name = multi_fields[i];
            lua_getfield(L, 1, name);
            if (!lua_isnil(L, -1)) {
                if (strcmp(name, "timeout") == 0)
                    m->timeout_ms = truto_check_seconds(L, -1, name);
                else if (strcmp(name, "connect_timeout") == 0)
                    m->connect_timeout_ms = truto_check_seconds(L, -1, name);
                else if (strcmp(name, "ca_file") == 0)
                    truto_copy_string(L, -1, name, &m->ca_file);
                else if (strcmp(name, "ca_path") == 0)
                    truto_copy_string(L, -1, name, &m->ca_path);
                else if (strcmp(name, "proxy") == 0)
                    truto_copy_string(L, -1, name, &m->proxy);
                else if (strcmp(name, "insecure") == 0)
                    m->insecure = truto_check_boolean(L, -1, name);
                else if (strcmp(name, "http2") == 0)
                    m->http2 = truto_check_boolean(L, -1, name);
                else if (strcmp(name, "max_response_bytes") == 0)
                    m->max_bytes = truto_check_bytes(L, -1, name);
                else if (strcmp(name, "max_host_connections") == 0) {
                    double v = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
                    if (!(v >= 1 && v <= 10000) || v != (double)(long)v)
                        luaL_error(L, "truto: max_host_connections must be an integer "
                                      "from 1 to 10000");
                    m->max_host_connections = (long)v;
                }
            }
            lua_pop(L, 1);
        }
    }

    if (!truto_curl_global_init())
        return luaL_error(L, "truto: curl_global_init failed");
    m->cm = curl_multi_init();
    if (m->cm == NULL)
        return luaL_error(L, "truto: curl_multi_init failed");
    curl_multi_setopt(m->cm, CURLMOPT_PIPELINING,
                      m->http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
    curl_multi_setopt(m->cm, CURLMOPT_MAX_HOST_CONNECTIONS, m->max_host_connections);
    /* By default the connection cache holds 4 per transfer added, so it
     * shrinks as a batch drains and the next batch connects again: keep
     * every host's connections instead. */
    curl_multi_setopt(m->cm, CURLMOPT_MAXCONNECTS,
                      m->max_host_connections < 32 ? 64L : 2 * m->max_host_connections);
    return 1;
}

/* ---- callbacks ------------------------------------------------------------------ */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = (xfer *)ud;
    size_t len = size * n;
    if (len > x->limit - x->received) {
        x->too_large = 1;
        return 0;
    }
    x->received += len;
    if (!truto_buf_append(&x->body, p, len, x->limit)) {
        x->oom = 1;
        return 0;
    }
    return len;
}

/* Keeps the header lines of the final response only: a status line (an
 * interim 1xx, a proxy's CONNECT reply) starts afresh. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    xfer *x = (xfer *)ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        x->head.len = 0;
    else if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n'))
        return len;
    if (len > TRUTO_MAX_HEADER_BYTES - x->head.len) {
        x->too_large = x->head_too_large = 1;
        return 0;
    }
    if (!truto_buf_append(&x->head, p, len, TRUTO_MAX_HEADER_BYTES)) {
        x->oom = 1;
        return 0;
    }
    return len;
}

/* ---- m:add(request) ------------------------------------------------------------ */

static const char *const request_fields[] = {
    "method", "url", "headers", "body", "timeout", "connect_timeout",
    "max_response_bytes", "fresh_connect", NULL,
};

/* Stack slots of add, in request_fields order after the two arguments. */
enum {
    ARG_METHOD = 3, ARG_URL, ARG_HEADERS, ARG_BODY, ARG_TIMEOUT, ARG_CONNECT_TIMEOUT,
    ARG_MAX_BYTES, ARG_FRESH_CONNECT
};

#define SETOPT(opt, val)                                       \
    do {                                                       \
        if (rc == CURLE_OK)                                    \
            rc = curl_easy_setopt(e, (opt), (val));            \
    } while (0)

static int l_add(lua_State *L)
{
    multi *m = check_open(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    truto_check_fields(L, 2, request_fields, "request field");
    for (int i = 0; request_fields[i] != NULL; i++)
        lua_getfield(L, 2, request_fields[i]);

    /* Everything is checked before anything is acquired. */
    const char *method = truto_check_method(L, ARG_METHOD);
    const char *url = truto_check_url(L, ARG_URL);
    truto_check_header_lines(L, ARG_HEADERS);
    const char *body;
    size_t body_len;
    int has_body = truto_check_body(L, ARG_BODY, method, &body, &body_len);
    long timeout_ms = lua_isnil(L, ARG_TIMEOUT) ? m->timeout_ms
                                                : truto_check_seconds(L, ARG_TIMEOUT, "timeout");
    long connect_ms = lua_isnil(L, ARG_CONNECT_TIMEOUT)
                          ? m->connect_timeout_ms
                          : truto_check_seconds(L, ARG_CONNECT_TIMEOUT, "connect_timeout");
    size_t limit = lua_isnil(L, ARG_MAX_BYTES)
                       ? m->max_bytes
                       : truto_check_bytes(L, ARG_MAX_BYTES, "max_response_bytes");
    int fresh = 0;
    if (!lua_isnil(L, ARG_FRESH_CONNECT))
        fresh = truto_check_boolean(L, ARG_FRESH_CONNECT, "request fresh_connect");

    /* From here on nothing raises until the transfer is owned by a list. */
    xfer *x = acquire(m);
    if (x == NULL)
        return luaL_error(L, "truto: out of memory");
    if (!truto_header_list(L, ARG_HEADERS, has_body, &x->headers)) {
        release(m, x);
        return luaL_error(L, "truto: out of memory");
    }
    x->limit = limit;
    x->received = 0;
    x->too_large = x->head_too_large = x->oom = 0;
    x->body.len = x->head.len = 0;
    x->errbuf[0] = '\0';
    x->id = m->next_id++;

    CURL *e = x->easy;
    CURLcode rc = CURLE_OK;
    SETOPT(CURLOPT_PRIVATE, (void *)x);
    SETOPT(CURLOPT_ERRORBUFFER, x->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, (void *)x);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)x);
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    /* Over TLS, wait to learn whether a connection being set up speaks
     * HTTP/2 (then share it) rather than open another at once.  Plain
     * http:// is HTTP/1.1 here: waiting would only serialise the connects. */
    if (m->http2 && truto_has_prefix_ci(url, "https://"))
        SETOPT(CURLOPT_PIPEWAIT, 1L);
    if (fresh)
        SETOPT(CURLOPT_FRESH_CONNECT, 1L);
    SETOPT(CURLOPT_HTTPHEADER, x->headers);
    if (rc == CURLE_OK)
        rc = (CURLcode)truto_setopt_tls(e, m->insecure, m->ca_file, m->ca_path, m->proxy);
    if (rc == CURLE_OK)
        rc = (CURLcode)truto_setopt_method(e, method, body, body_len, has_body, m->http2, 1);

    m->pending++;
    if (rc == CURLE_OK && curl_multi_add_handle(m->cm, e) != CURLM_OK)
        rc = CURLE_FAILED_INIT;
    if (rc != CURLE_OK) {
        /* Reported by the next wait, like any other failure. */
        queue_done(m, x, rc);
    } else {
        x->state = XFER_ACTIVE;
        int running;
        curl_multi_perform(m->cm, &running);    /* start connecting now */
    }
    lua_pushinteger(L, x->id);
    return 1;
}

/* ---- m:wait(seconds) ------------------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Moves every transfer libcurl reports finished to the done queue. */
static void collect(multi *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->cm, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        CURLcode code = msg->data.result;   /* msg is invalid after remove */
        curl_multi_remove_handle(m->cm, msg->easy_handle);
        if (x != NULL)
            queue_done(m, x, code);
    }
}

static void set_number(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, (lua_Number)v);
    lua_setfield(L, -2, k);
}

static void set_integer(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static void push_info(lua_State *L, CURL *e)
{
    double total = 0, connect = 0;
    long version = 0, port = 0, connects = 0;
    curl_off_t size = 0;
    char *ip = NULL;
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
    curl_easy_getinfo(e, CURLINFO_CONNECT_TIME, &connect);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
    curl_easy_getinfo(e, CURLINFO_PRIMARY_PORT, &port);
    curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &size);
    curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, truto_http_version_name(version));
    lua_setfield(L, -2, "http_version");
    set_number(L, "total_time", total);
    set_number(L, "connect_time", connect);
    lua_pushstring(L, ip != NULL ? ip : "");
    lua_setfield(L, -2, "primary_ip");
    set_integer(L, "primary_port", (lua_Integer)port);
    set_integer(L, "size_download", (lua_Integer)size);
    set_integer(L, "redirects", 0);
    set_integer(L, "new_connections", (lua_Integer)connects);
}

/* { id =, status =, headers =, body =, info = } or { id =, err = {...} } */
static void push_result(lua_State *L, xfer *x)
{
    lua_createtable(L, 0, 5);
    set_integer(L, "id", x->id);
    CURLcode code = x->code;
    if (x->oom && !x->too_large) {
        code = CURLE_OUT_OF_MEMORY;
        strcpy(x->errbuf, "out of memory");
    } else if (code == CURLE_OK && x->too_large) {
        code = CURLE_WRITE_ERROR;
    }
    if (code != CURLE_OK || x->too_large) {
        truto_push_curl_error(L, (int)code, NULL, x->errbuf, x->too_large, x->head_too_large,
                              x->limit);
        lua_setfield(L, -2, "err");
        return;
    }
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    set_integer(L, "status", (lua_Integer)status);
    truto_push_headers(L, &x->head);
    lua_setfield(L, -2, "headers");
    truto_bytes_push(L, &x->body);
    lua_setfield(L, -2, "body");
    push_info(L, x->easy);
    lua_setfield(L, -2, "info");
}

/* Drives the transfers until at least one has finished or seconds have
 * passed (0: one non-blocking round; nil: no limit).  Raising here (out of
 * memory building the results) loses nothing: the done queue is emptied
 * only once the whole array is built. */
static int l_wait(lua_State *L)
{
    multi *m = check_open(L);
    double limit = -1;
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TNUMBER)
            return luaL_error(L, "truto: wait seconds must be a number, got %s",
                              luaL_typename(L, 2));
        limit = (double)lua_tonumber(L, 2);
        if (!(limit >= 0) || limit > 2147483.0)
            return luaL_error(L, "truto: wait seconds must be a non-negative number (at most "
                                 "2147483)");
    }
    lua_settop(L, 1);
    double deadline = limit >= 0 ? now_seconds() + limit : 0;
    for (;;) {
        int running = 0;
        curl_multi_perform(m->cm, &running);
        collect(m);
        if (m->done != NULL || m->pending == 0)
            break;
        int ms = 1000;
        if (limit >= 0) {
            double left = deadline - now_seconds();
            if (left <= 0)
                break;
            ms = left * 1000.0 < 1000.0 ? (int)(left * 1000.0) + 1 : 1000;
        }
#if LIBCURL_VERSION_NUM >= 0x074200
        curl_multi_poll(m->cm, NULL, 0, ms, NULL);
#else
        curl_multi_wait(m->cm, NULL, 0, ms, NULL);
#endif
    }

    lua_newtable(L);
    int n = 0;
    for (xfer *x = m->done; x != NULL; x = x->next) {
        luaL_checkstack(L, 8, "truto: wait");
        push_result(L, x);
        lua_rawseti(L, -2, ++n);
    }
    while (m->done != NULL) {
        xfer *x = m->done;
        m->done = x->next;
        m->pending--;
        release(m, x);
    }
    m->done_tail = NULL;
    return 1;
}

static int l_pending(lua_State *L)
{
    multi *m = check_multi(L);
    lua_pushinteger(L, (lua_Integer)m->pending);
    return 1;
}

void truto_open_multi(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", l_add},
        {"wait", l_wait},
        {"pending", l_pending},
        {"close", multi_cleanup},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, MULTI_MT)) {
        lua_pushliteral(L, MULTI_MT);
        lua_setfield(L, -2, "__name");
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, multi_cleanup);
        lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
        lua_pushcfunction(L, multi_cleanup);
        lua_setfield(L, -2, "__close");
#endif
        lua_pushcfunction(L, multi_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_multi);
    lua_setfield(L, -2, "multi");
}

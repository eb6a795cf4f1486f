/*
 * The libcurl multi handle (truto.Multi): many transfers at once, HTTP/2
 * multiplexed where the server offers it, connections kept in the multi's
 * cache and reused across transfers.
 *
 *   local m = core.multi{ timeout = 30, max_host_connections = 16, ... }
 *   local id = m:add{ method =, url =, headers = {...}, body = }  -- starts it
 *   local done = m:wait(seconds)  -- { {id=, status=, headers=, body=, info=}
 *                                 --   or {id=, err={kind=, message=, curl_code=}}, ... }
 *   m:pending(); m:abort(); m:close()
 *
 * Finished easy handles wait in a free pool for the next add, and are
 * reused as a session reuses its one handle (session.c): never reset, the
 * options that stay for the handle's life set once, each request setting
 * only what differs from the handle's previous one (truto_setopt_request),
 * on the header list it kept; the response buffers stay (truto_buf_reset
 * returns big ones).  With decode_json, a JSON 2xx body is decoded straight
 * from the buffer: its Lua string is never made.
 *
 * Memory rules: every transfer's state (easy handle, header list, response
 * buffers, error buffer) is one malloc'd struct listed in the Multi
 * userdata, and the one cleanup shared by close, __gc and __close frees
 * them all, in flight or idle.  libcurl callbacks never raise and never
 * touch Lua: they record a flag and return a short count.  While wait hands
 * the results over (which allocates, so finalizers may run), the multi is
 * busy: close, add, wait and abort refuse, so that no buffer read is freed
 * or refilled.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "truto.h"

#define MULTI_MT "truto.Multi"

#define DEFAULT_MAX_HOST_CONNECTIONS 16L
/* Idle easy handles kept for reuse; more are freed as they finish. */
#define MAX_IDLE 64

enum { XFER_IDLE, XFER_ACTIVE, XFER_DONE };

typedef struct xfer {
    CURL *easy;
    struct curl_slist *headers;     /* request header lines, kept for the handle's next request */
    curl_mime *mime;                /* the multipart form, if any */
    truto_reply reply;              /* body, header lines, limits, error buffer */
    int handle_ready;               /* CURLOPT_PRIVATE and truto_setopt_handle done */
    truto_applied applied;          /* the request options the handle holds */
    long pipewait;                  /* CURLOPT_PIPEWAIT as set (-1: unknown) */
    int payload;                    /* the handle holds a copy of the request body, or held's bytes */
    truto_body *held;               /* the truto.Body sent without a copy, pinned, or NULL */
    int held_ref;                   /* its registry reference, which keeps it alive meanwhile */
    int decode_json;
    int state;
    CURLcode code;                  /* result, once XFER_DONE */
    lua_Integer id;
    size_t slot;                    /* index in multi.all */
    struct xfer *next;              /* idle pool or done queue */
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

    truto_transfer_options opts;
    long max_host_connections;
    int closed;
    int busy;                       /* wait is handing results over */
} multi;

/* ---- per-transfer state ------------------------------------------------------ */

static void xfer_free(xfer *x)
{
    if (x->easy != NULL)
        curl_easy_cleanup(x->easy);
    if (x->headers != NULL)
        curl_slist_free_all(x->headers);
    curl_mime_free(x->mime);
    truto_reply_free(&x->reply);
    free(x);
}

/* Drops the transfer from m->all (swap with the last). */
static void unlist(multi *m, xfer *x)
{
    xfer *last = m->all[--m->nall];
    m->all[x->slot] = last;
    last->slot = x->slot;
}

/* Lets go of the truto.Body the transfer sends from. */
static void unhold(lua_State *L, xfer *x)
{
    if (x->held == NULL)
        return;
    x->held->pins--;
    luaL_unref(L, LUA_REGISTRYINDEX, x->held_ref);
    x->held = NULL;
}

/* A finished (or never started) transfer back to the pool: the handle lets
 * go of the form and of its copy of the body or the Body it sent (the
 * header list is kept for its next request); large buffers go back to the
 * system. */
static void release(lua_State *L, multi *m, xfer *x)
{
    if (x->mime != NULL) {
        curl_easy_setopt(x->easy, CURLOPT_MIMEPOST, (curl_mime *)NULL);
        curl_mime_free(x->mime);    /* closes the files it opened */
        x->mime = NULL;
    } else if (x->payload) {
        curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, (char *)NULL);   /* frees the copy */
    }
    x->payload = 0;
    unhold(L, x);
    truto_reply_reset(&x->reply);
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
 * the transfers in flight.  (A busy multi is on wait's stack: never
 * collected, only closed by a finalizer.) */
static int multi_cleanup(lua_State *L)
{
    multi *m = check_multi(L);
    if (m->busy)
        return luaL_error(L, "truto: cannot close a multi while wait hands its results over");
    for (size_t i = 0; i < m->nall; i++) {
        xfer *x = m->all[i];
        if (x->state == XFER_ACTIVE && m->cm != NULL)
            curl_multi_remove_handle(m->cm, x->easy);
        unhold(L, x);
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
    truto_options_free(&m->opts);
    m->closed = 1;
    return 0;
}

static int multi_tostring(lua_State *L)
{
    return truto_push_handle_name(L, MULTI_MT, check_multi(L)->closed);
}

static multi *check_open(lua_State *L)
{
    multi *m = check_multi(L);
    if (m->closed)
        luaL_error(L, "truto: multi is closed");
    if (m->busy)
        luaL_error(L, "truto: multi is busy (called from a finalizer while wait hands its results over)");
    return m;
}

/* ---- core.multi(opts) ------------------------------------------------------ */

static const char *const multi_fields[] = { TRUTO_OPTION_FIELDS, "max_host_connections", NULL };

/* The multi's own option, max_host_connections, at the top of the stack. */
static void read_own_option(lua_State *L, void *handle, const char *name)
{
    double v = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : 0;
    (void)name;
    if (!(v >= 1 && v <= 10000) || v != (double)(long)v)
        luaL_error(L, "truto: max_host_connections must be an integer from 1 to 10000");
    ((multi *)handle)->max_host_connections = (long)v;
}

static int l_multi(lua_State *L)
{
    multi *m = (multi *)truto_new_handle(L, sizeof *m, MULTI_MT);
    m->max_host_connections = DEFAULT_MAX_HOST_CONNECTIONS;
    m->next_id = 1;
    truto_options_read(L, multi_fields, "multi option", &m->opts, read_own_option, m);
    truto_curl_global_init(L);
    m->cm = curl_multi_init();
    if (m->cm == NULL)
        return luaL_error(L, "truto: curl_multi_init failed");
    curl_multi_setopt(m->cm, CURLMOPT_PIPELINING,
                      m->opts.http2 ? (long)CURLPIPE_MULTIPLEX : (long)CURLPIPE_NOTHING);
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
    return truto_reply_body(&((xfer *)ud)->reply, p, size * n);
}

/* Keeps the header lines of the final response only. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    return truto_reply_header(&((xfer *)ud)->reply, p, size * n);
}

/* ---- m:add(request) ------------------------------------------------------------ */

static const char *const request_fields[] = { TRUTO_REQUEST_FIELDS, "decode_json", NULL };

/* Stack slot of add's own field, after those of TRUTO_REQUEST_FIELDS. */
enum { ARG_DECODE_JSON = TRUTO_ARG_EXTRA };

/* The options of the request that differ from the handle's previous one
 * (all of them on a new handle); returns a CURLcode. */
static CURLcode setopt_transfer(multi *m, xfer *x, const truto_transfer_request *r)
{
    CURL *e = x->easy;
    CURLcode rc = CURLE_OK;
    if (!x->handle_ready) {
        rc = curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
        if (rc == CURLE_OK)
            rc = (CURLcode)truto_setopt_handle(e, &m->opts, &x->reply, on_body, on_header, x);
        x->handle_ready = rc == CURLE_OK;
    }
    /* Over TLS, wait to learn whether a connection being set up speaks
     * HTTP/2 (then share it) rather than open another at once.  Plain
     * http:// is HTTP/1.1 here: waiting would only serialise the connects. */
    long pipewait = m->opts.http2 && truto_has_prefix_ci(r->url, "https://");
    if (rc == CURLE_OK && x->pipewait != pipewait) {
        rc = curl_easy_setopt(e, CURLOPT_PIPEWAIT, pipewait);
        x->pipewait = rc == CURLE_OK ? pipewait : -1;
    }
    if (rc == CURLE_OK)
        rc = (CURLcode)truto_setopt_request(e, &x->applied, r, x->headers, r->held == NULL);
    return rc;
}

static int l_add(lua_State *L)
{
    multi *m = check_open(L);
    truto_transfer_request r;

    /* Everything is checked before anything is acquired. */
    truto_check_request(L, request_fields, &m->opts, &r);
    r.fresh_connect = !lua_isnil(L, TRUTO_ARG_FRESH_CONNECT) &&
                      truto_check_boolean(L, TRUTO_ARG_FRESH_CONNECT, "request fresh_connect");
    int decode_json = !lua_isnil(L, ARG_DECODE_JSON) &&
                      truto_check_boolean(L, ARG_DECODE_JSON, "request decode_json");

    /* A truto.Body is sent from its own bytes, not copied: the registry
     * keeps it alive until the transfer is released. */
    int held_ref = LUA_NOREF;
    if (r.held != NULL) {
        lua_pushvalue(L, TRUTO_ARG_BODY);
        held_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }

    /* From here on nothing raises until the transfer is owned by a list. */
    xfer *x = acquire(m);
    if (x == NULL) {
        luaL_unref(L, LUA_REGISTRYINDEX, held_ref);
        return luaL_error(L, "truto: out of memory");
    }
    if (r.held != NULL) {
        x->held = r.held;
        x->held_ref = held_ref;
        r.held->pins++;
    }
    if (!truto_header_list(L, TRUTO_ARG_HEADERS, &r, &x->headers) ||
        (r.form && !truto_mime_build(L, x->easy, &x->reply, &x->mime))) {
        /* The list may have lost the node the handle points to. */
        curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
        x->applied.known = 0;
        release(L, m, x);
        return luaL_error(L, "truto: out of memory");
    }
    r.mime = x->mime;
    x->payload = r.has_body && !r.form;
    x->decode_json = decode_json;
    truto_reply_start(&x->reply, r.max_bytes);
    x->id = m->next_id++;

    CURL *e = x->easy;
    CURLcode rc = setopt_transfer(m, x, &r);

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

/* { id =, status =, headers =, body =, info = [, decode_error =] } or
 * { id =, err = {...} }: with decode_json, a 2xx JSON body comes decoded
 * (decode_error: the reader's message when it is not valid JSON, the body
 * then its start), as a session returns it.  The buffers stay as they are
 * until the queue is emptied, so that a raise here loses nothing. */
static void push_result(lua_State *L, xfer *x)
{
    truto_reply *r = &x->reply;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, x->id);
    lua_setfield(L, -2, "id");
    CURLcode code = x->code;
    if (r->oom && !r->too_large) {
        code = CURLE_OUT_OF_MEMORY;
        strcpy(r->errbuf, "out of memory");
    } else if (code == CURLE_OK && r->too_large) {
        code = CURLE_WRITE_ERROR;
    }
    if (code != CURLE_OK || r->too_large) {
        truto_push_curl_error(L, (int)code, NULL, r);
        lua_setfield(L, -2, "err");
        return;
    }
    truto_info info;
    memset(&info, 0, sizeof info);
    truto_collect_info(x->easy, &info);
    lua_pushinteger(L, (lua_Integer)info.status);
    lua_setfield(L, -2, "status");
    truto_push_headers(L, &r->head);
    int decode = x->decode_json && info.status >= 200 && info.status < 300;
    if (truto_push_reply_body(L, &r->body, lua_gettop(L), decode, 0) == 2)
        lua_setfield(L, -4, "decode_error");
    lua_setfield(L, -3, "body");
    lua_setfield(L, -2, "headers");
    truto_push_info(L, &info);
    lua_setfield(L, -2, "info");
}

/* The array of results of the done queue; run under lua_pcall by l_wait,
 * with the multi busy. */
static int push_results(lua_State *L)
{
    const multi *m = (const multi *)lua_touserdata(L, 1);
    lua_newtable(L);
    int n = 0;
    for (xfer *x = m->done; x != NULL; x = x->next) {
        luaL_checkstack(L, 8, "truto: wait");
        push_result(L, x);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
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
    double deadline = limit >= 0 ? truto_monotonic_seconds() + limit : 0;
    for (;;) {
        int running = 0;
        curl_multi_perform(m->cm, &running);
        collect(m);
        if (m->done != NULL || m->pending == 0)
            break;
        int ms = 1000;
        if (limit >= 0) {
            double left = deadline - truto_monotonic_seconds();
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

    m->busy = 1;
    lua_pushcfunction(L, push_results);
    lua_pushlightuserdata(L, m);
    int failed = lua_pcall(L, 1, 1, 0) != LUA_OK;
    m->busy = 0;
    if (failed)
        return lua_error(L);
    while (m->done != NULL) {
        xfer *x = m->done;
        m->done = x->next;
        m->pending--;
        release(L, m, x);
    }
    m->done_tail = NULL;
    return 1;
}

/* m:abort(): every transfer in flight or finished but not reported is
 * dropped (its connection closed by libcurl if mid-transfer), so that the
 * handle is clean for the next batch after an error in the caller's loop. */
static int l_abort(lua_State *L)
{
    multi *m = check_open(L);
    size_t i = 0;
    while (i < m->nall) {
        xfer *x = m->all[i];
        if (x->state == XFER_IDLE) {
            i++;
            continue;
        }
        if (x->state == XFER_ACTIVE)
            curl_multi_remove_handle(m->cm, x->easy);
        /* release() may free x and move the last transfer into slot i:
         * look at slot i again unless x went to the idle pool. */
        size_t before = m->nall;
        release(L, m, x);
        if (m->nall == before)
            i++;
    }
    m->done = m->done_tail = NULL;
    m->pending = 0;
    return 0;
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
        {"abort", l_abort},
        {"close", multi_cleanup},
        {NULL, NULL},
    };
    truto_open_class(L, MULTI_MT, methods, multi_cleanup, multi_tostring, "multi", l_multi);
}

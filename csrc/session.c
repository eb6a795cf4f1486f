/*
 * The libcurl session (truto.Session): one easy handle per session, reused
 * for every request so that connections stay alive between calls.
 *
 *   local s = core.session{ timeout = 30, ... }
 *   local status, headers, body, info[, decode_error] = s:perform{ method =, url =, ... }
 *   -- or nil, { kind =, message =, curl_code = }
 *   s:close()
 *
 * The handle is never reset: the options that stay for its life are set by
 * the first perform, and each request sets only the options that differ
 * from the previous one's (truto_setopt_request), on the header list of the
 * previous request, kept and rebuilt from its first changed line.  The
 * response buffers stay between calls (truto_buf_reset returns big ones).
 * With decode_json, a JSON 2xx body is decoded straight from the buffer:
 * its Lua string is never made.
 *
 * Redirects are followed by the client (lua/truto/redirect.lua), the same
 * over every transport: a session makes exactly one request per perform.
 *
 * Memory rules: everything the C side allocates hangs off the userdata
 * (header list, response buffers, option strings) and is
 * released by the one cleanup shared by close, __gc and __close.  libcurl
 * callbacks never raise: they record a flag and return a short count, and
 * perform reports or raises once curl_easy_perform has returned.  The only
 * Lua code run from a callback is the caller's sink, under lua_pcall.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "truto.h"

#define SESSION_MT "truto.Session"

typedef struct {
    CURL *easy;
    struct curl_slist *headers;     /* request header lines, kept for the next request */
    curl_mime *mime;                /* the multipart form of the transfer, if any */
    truto_reply reply;              /* decoded body (without a sink), header lines */

    /* session options */
    truto_transfer_options opts;
    int handle_ready;               /* truto_setopt_handle done */
    truto_applied applied;          /* the request options the handle holds */

    int closed, busy;

    /* state of the transfer in progress (set by perform, read by callbacks) */
    lua_State *L;
    int sink_fn;                    /* stack index of sink_call, 0 without a sink */
    int sink_err;                   /* stack index of the sink's error value, or 0 */
} session;

/* ---- lifetime ------------------------------------------------------------ */

static session *check_session(lua_State *L)
{
    return (session *)luaL_checkudata(L, 1, SESSION_MT);
}

static void free_form(session *s)
{
    curl_mime_free(s->mime);        /* closes the files it opened */
    s->mime = NULL;
}

/* close, __gc and __close: idempotent, safe on a half-built session. */
static int session_cleanup(lua_State *L)
{
    session *s = check_session(L);
    if (s->busy)
        return luaL_error(L, "truto: cannot close a session while its transfer is running");
    free_form(s);
    if (s->easy != NULL) {
        curl_easy_cleanup(s->easy);     /* before the list it points to */
        s->easy = NULL;
    }
    curl_slist_free_all(s->headers);
    s->headers = NULL;
    truto_reply_free(&s->reply);
    truto_options_free(&s->opts);
    s->closed = 1;
    return 0;
}

static int session_tostring(lua_State *L)
{
    return truto_push_handle_name(L, SESSION_MT, check_session(L)->closed);
}

/* ---- core.session(opts) ------------------------------------------------------ */

static const char *const session_fields[] = { TRUTO_OPTION_FIELDS, NULL };

/* A session has no options of its own (truto_options_read needs a reader). */
static void read_own_option(lua_State *L, void *handle, const char *name)
{
    (void)L;
    (void)handle;
    (void)name;
}

static int l_session(lua_State *L)
{
    session *s = (session *)truto_new_handle(L, sizeof *s, SESSION_MT);
    truto_options_read(L, session_fields, "session option", &s->opts, read_own_option, s);
    truto_curl_global_init(L);
    s->easy = curl_easy_init();
    if (s->easy == NULL)
        return luaL_error(L, "truto: curl_easy_init failed");
    return 1;
}

/* ---- callbacks ---------------------------------------------------------------- */

typedef struct {
    const char *data;
    size_t len;
} chunk;

/* Runs under lua_pcall: sink_call(sink, chunk*).  A sink that raises, that
 * returns false, or that returns nil plus an error value stops the transfer;
 * the error value travels back through lua_pcall. */
static int sink_call(lua_State *L)
{
    const chunk *c = (const chunk *)lua_touserdata(L, 2);
    lua_settop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushlstring(L, c->data, c->len);
    lua_call(L, 1, 2);             /* results in slots 2 and 3 */
    if (lua_toboolean(L, 2))
        return 0;
    if (!lua_isnil(L, 3))          /* nil, err  or  false, err */
        return lua_error(L);
    if (lua_isnil(L, 2))           /* nothing or nil: carry on */
        return 0;
    lua_pushliteral(L, "truto: sink returned false");
    return lua_error(L);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    session *s = (session *)ud;
    size_t len = size * n;
    /* Only a successful body streams to the sink; an error body is kept, so
     * that the caller can read Truto's error envelope. */
    long status = 0;
    if (s->sink_fn != 0)
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300) {
        if (!truto_reply_count(&s->reply, len))
            return 0;
        lua_State *L = s->L;
        chunk c;
        c.data = p;
        c.len = len;
        /* No allocation happens before lua_pcall: perform reserved the
         * stack and created sink_call beforehand. */
        lua_pushvalue(L, s->sink_fn);
        lua_pushvalue(L, s->sink_fn + 1);
        lua_pushlightuserdata(L, &c);
        if (lua_pcall(L, 2, 0, 0) != 0) {
            s->sink_err = lua_gettop(L);
            return 0;
        }
        return len;
    }
    /* With a sink the call's limit is lifted for the streamed body, not
     * for an error body kept in memory. */
    if (s->sink_fn != 0 && len > TRUTO_MAX_KEPT_WITH_SINK - s->reply.received) {
        s->reply.too_large = 1;
        return 0;
    }
    return truto_reply_body(&s->reply, p, len);
}

/* Keeps the header lines of the latest response only (truto_reply_header). */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    return truto_reply_header(&((session *)ud)->reply, p, size * n);
}

/* ---- s:perform(request) ---------------------------------------------------- */

static const char *const request_fields[] = { TRUTO_REQUEST_FIELDS, "sink", "decode_json", NULL };

/* Stack slots of perform after the fields of TRUTO_REQUEST_FIELDS. */
enum { ARG_SINK = TRUTO_ARG_EXTRA, ARG_DECODE_JSON, ARG_SINK_CALL };

typedef truto_transfer_request request;

typedef struct {
    CURLcode code;
    truto_info info;
} outcome;

/* Checks the request table, leaving its fields in their stack slots. */
static void check_request(lua_State *L, session *s, request *r)
{
    truto_check_request(L, request_fields, &s->opts, r);
    if (!lua_isnil(L, ARG_SINK) && lua_type(L, ARG_SINK) != LUA_TFUNCTION)
        luaL_error(L, "truto: request sink must be a function, got %s", luaL_typename(L, ARG_SINK));
    r->fresh_connect = !lua_isnil(L, TRUTO_ARG_FRESH_CONNECT) &&
                       truto_check_boolean(L, TRUTO_ARG_FRESH_CONNECT, "request fresh_connect");
}

/* Brings the header list up to date and builds the form's parts from the
 * validated fields.  Both live in the session as they grow, so an
 * allocation failure leaks nothing. */
static void build_headers(lua_State *L, session *s, request *r)
{
    free_form(s);
    if (!truto_header_list(L, TRUTO_ARG_HEADERS, r, &s->headers) ||
        (r->form && !truto_mime_build(L, s->easy, &s->reply, &s->mime))) {
        /* The list may have lost the node the handle points to. */
        curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
        s->applied.known = 0;
        luaL_error(L, "truto: out of memory");
    }
    r->mime = s->mime;
}

/* The one exchange.  Never raises: runs while the session is busy and
 * libcurl frames may be on the C stack. */
static void transfer(session *s, request *r, outcome *o)
{
    memset(o, 0, sizeof *o);
    truto_reply_start(&s->reply, r->max_bytes);
    if (!s->handle_ready) {
        o->code = (CURLcode)truto_setopt_handle(s->easy, &s->opts, &s->reply, on_body, on_header, s);
        s->handle_ready = o->code == CURLE_OK;
    }
    if (o->code == CURLE_OK)
        o->code = (CURLcode)truto_setopt_request(s->easy, &s->applied, r, s->headers, 0);
    if (o->code == CURLE_OK)
        o->code = curl_easy_perform(s->easy);
    truto_collect_info(s->easy, &o->info);
}

/* nil, { kind =, message =, curl_code = } */
static int push_failure(lua_State *L, session *s, const outcome *o)
{
    lua_pushnil(L);
    truto_push_curl_error(L, (int)o->code, NULL, &s->reply);
    return 2;
}

/* The body of s:perform, run under lua_pcall by l_perform with the session
 * already busy: from the first allocation on, a finalizer that closes or
 * reuses this session is refused. */
static int perform_busy(lua_State *L)
{
    session *s = check_session(L);
    request r;
    outcome o;
    check_request(L, s, &r);
    int decode_json = !lua_isnil(L, ARG_DECODE_JSON) &&
                      truto_check_boolean(L, ARG_DECODE_JSON, "request decode_json");

    /* Room for the callbacks' pushes, and sink_call created up front so
     * that nothing allocates outside lua_pcall inside a callback. */
    luaL_checkstack(L, 16, "truto: perform");
    s->sink_fn = 0;
    if (lua_isfunction(L, ARG_SINK)) {
        lua_pushcfunction(L, sink_call);        /* ARG_SINK_CALL */
        lua_pushvalue(L, ARG_SINK);             /* ARG_SINK_CALL + 1 */
        s->sink_fn = ARG_SINK_CALL;
    }
    truto_reply_reset(&s->reply);
    build_headers(L, s, &r);

    s->L = L;
    s->sink_err = 0;
    truto_reply_start(&s->reply, r.max_bytes);
    /* Busy (since l_perform) until the reply is handed over: pushing the
     * headers and decoding the body allocate, so a finalizer may run and
     * call close or perform on this session, which must not free or refill
     * the buffers read. */
    /* A sink runs Lua during the transfer: it must not close the Body
     * libcurl reads (the request table, on the stack, keeps it alive). */
    if (r.held != NULL)
        r.held->pins++;
    transfer(s, &r, &o);
    if (r.held != NULL)
        r.held->pins--;
    s->L = NULL;
    /* The handle must not keep pointers to the body or the form (the list
     * is kept for the next request). */
    if (r.form)
        curl_easy_setopt(s->easy, CURLOPT_MIMEPOST, (curl_mime *)NULL);
    else if (r.has_body)
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, (char *)NULL);
    free_form(s);

    if (s->sink_err != 0) {
        truto_reply_reset(&s->reply);
        lua_settop(L, s->sink_err);
        return lua_error(L);
    }
    if (s->reply.oom) {
        truto_reply_reset(&s->reply);
        return luaL_error(L, "truto: out of memory");
    }
    if (o.code != CURLE_OK || s->reply.too_large) {
        if (o.code == CURLE_OK)
            o.code = CURLE_WRITE_ERROR;
        truto_reply_reset(&s->reply);
        return push_failure(L, s, &o);
    }

    long status = o.info.status;
    int success = status >= 200 && status < 300;
    lua_pushinteger(L, (lua_Integer)status);
    truto_push_headers(L, &s->reply.head);
    truto_buf_reset(&s->reply.head);
    int pushed = 1;
    if (s->sink_fn != 0 && success) {
        lua_pushnil(L);
        truto_buf_reset(&s->reply.body);
    } else {
        pushed = truto_push_reply_body(L, &s->reply.body, lua_gettop(L), decode_json && success, 1);
    }
    truto_push_info(L, &o.info);
    if (pushed == 2)
        lua_insert(L, -2);          /* the reader's message last */
    return 3 + pushed;
}

static int l_perform(lua_State *L)
{
    session *s = check_session(L);
    if (s->closed)
        return luaL_error(L, "truto: session is closed");
    if (s->busy)
        return luaL_error(L, "truto: session is busy (perform called during its own transfer: from a sink or a finalizer)");
    luaL_checktype(L, 2, LUA_TTABLE);   /* here, where the error names perform */
    s->busy = 1;
    lua_pushcfunction(L, perform_busy);
    lua_insert(L, 1);
    int failed = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0) != LUA_OK;
    s->busy = 0;
    if (failed)
        return lua_error(L);        /* an argument error, or a sink's, as raised */
    return lua_gettop(L);
}

void truto_open_session(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"perform", l_perform},
        {"close", session_cleanup},
        {NULL, NULL},
    };
    truto_open_class(L, SESSION_MT, methods, session_cleanup, session_tostring, "session",
                     l_session);
}

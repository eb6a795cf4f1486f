/*
 * The libcurl session (truto.Session): one easy handle per session, reused
 * for every request so that connections stay alive between calls.
 *
 *   local s = core.session{ timeout = 30, ... }
 *   local status, headers, body, info = s:perform{ method =, url =, ... }
 *   -- or nil, { kind =, message =, curl_code = }
 *   s:close()
 *
 * Memory rules: everything the C side allocates hangs off the userdata
 * (header list, response buffers, option strings, redirect URL) and is
 * released by the one cleanup shared by close, __gc and __close.  libcurl
 * callbacks never raise: they record a flag and return a short count, and
 * perform reports or raises once curl_easy_perform has returned.  The only
 * Lua code run from a callback is the caller's sink, under lua_pcall.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "truto.h"

#define SESSION_MT "truto.Session"

#define MAX_REDIRECTS              5

typedef struct {
    CURL *easy;
    struct curl_slist *headers;     /* request header lines of the transfer */
    truto_reply reply;              /* decoded body (without a sink), header lines */
    char *url;                      /* redirect target being followed */

    /* session options */
    truto_transfer_options opts;
    int follow;

    int closed, busy;

    /* state of the transfer in progress (set by perform, read by callbacks) */
    lua_State *L;
    int sink_fn;                    /* stack index of sink_call, 0 without a sink */
    int sink_err;                   /* stack index of the sink's error value, or 0 */
    size_t discarded;
    int discard;                    /* body of a redirect that will be followed */
} session;

/* ---- lifetime ------------------------------------------------------------ */

static session *check_session(lua_State *L)
{
    return (session *)luaL_checkudata(L, 1, SESSION_MT);
}

static void free_headers(session *s)
{
    if (s->headers != NULL) {
        curl_slist_free_all(s->headers);
        s->headers = NULL;
    }
}

/* close, __gc and __close: idempotent, safe on a half-built session. */
static int session_cleanup(lua_State *L)
{
    session *s = check_session(L);
    if (s->busy)
        return luaL_error(L, "truto: cannot close a session while its transfer is running");
    free_headers(s);
    if (s->easy != NULL) {
        curl_easy_cleanup(s->easy);
        s->easy = NULL;
    }
    truto_reply_free(&s->reply);
    truto_options_free(&s->opts);
    free(s->url);
    s->url = NULL;
    s->closed = 1;
    return 0;
}

static int session_tostring(lua_State *L)
{
    return truto_push_handle_name(L, SESSION_MT, check_session(L)->closed);
}

/* ---- core.session(opts) ------------------------------------------------------ */

static const char *const session_fields[] = { TRUTO_OPTION_FIELDS, "follow_redirects", NULL };

/* The session's own option, follow_redirects, at the top of the stack. */
static void read_own_option(lua_State *L, void *handle, const char *name)
{
    ((session *)handle)->follow = truto_check_boolean(L, -1, name);
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
    if (s->discard) {
        /* The body of a redirect we follow: dropped, but still bounded. */
        if (len > s->reply.limit - s->discarded) {
            s->reply.too_large = 1;
            return 0;
        }
        s->discarded += len;
        return len;
    }
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
    return truto_reply_body(&s->reply, p, len);
}

static int is_redirect(long code)
{
    return code == 301 || code == 302 || code == 303 || code == 307 || code == 308;
}

/* Whether the header lines hold a non-empty Location field. */
static int has_location(const truto_bytes *h)
{
    /* No arithmetic on a NULL buffer (nothing received yet): UB in C. */
    const char *p = h->data, *end = h->len ? h->data + h->len : h->data;
    while (p != NULL && end - p > 9) {
        if (strncasecmp(p, "location:", 9) == 0) {
            for (const char *v = p + 9; v < end && *v != '\r' && *v != '\n'; v++)
                if (*v != ' ' && *v != '\t')
                    return 1;
        }
        p = (const char *)memchr(p, '\n', (size_t)(end - p));
        if (p != NULL)
            p++;
    }
    return 0;
}

/* Keeps the header lines of the latest response only (truto_reply_header);
 * at the end of a header block, decides whether its body is a redirect's. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    session *s = (session *)ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        s->discard = 0;
    } else if (s->follow && len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) {
        /* libcurl computes CURLINFO_REDIRECT_URL only once the transfer is
         * done: look for the Location field ourselves. */
        long code = 0;
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
        s->discard = is_redirect(code) && has_location(&s->reply.head);
    }
    return truto_reply_header(&s->reply, p, len);
}

/* ---- s:perform(request) ---------------------------------------------------- */

static const char *const request_fields[] = { TRUTO_REQUEST_FIELDS, "sink", NULL };

/* Stack slots of perform after the fields of TRUTO_REQUEST_FIELDS. */
enum { ARG_SINK = TRUTO_ARG_EXTRA, ARG_SINK_CALL };

typedef truto_transfer_request request;

typedef struct {
    CURLcode code;
    const char *message;            /* our own failure text, or NULL */
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

/* Builds the header list from the validated lines.  The list lives in the
 * session as it grows, so an allocation failure leaks nothing. */
static void build_headers(lua_State *L, session *s, const request *r)
{
    free_headers(s);
    if (!truto_header_list(L, TRUTO_ARG_HEADERS, r->has_body, &s->headers))
        luaL_error(L, "truto: out of memory");
}

/* For a redirect: the same lines without credentials (another origin) and
 * without body headers (the body is dropped).  Returns 0 on out-of-memory. */
static int filter_headers(session *s, int drop_credentials, int drop_body_headers)
{
    struct curl_slist *out = NULL;
    for (struct curl_slist *l = s->headers; l != NULL; l = l->next) {
        const char *line = l->data;
        if (drop_credentials && (truto_has_prefix_ci(line, "authorization:") ||
                                 truto_has_prefix_ci(line, "authorization;") ||
                                 truto_has_prefix_ci(line, "cookie:") ||
                                 truto_has_prefix_ci(line, "cookie;")))
            continue;
        if (drop_body_headers && (truto_has_prefix_ci(line, "content-type:") ||
                                  truto_has_prefix_ci(line, "content-type;") ||
                                  truto_has_prefix_ci(line, "content-length:")))
            continue;
        struct curl_slist *next = curl_slist_append(out, line);
        if (next == NULL) {
            curl_slist_free_all(out);
            return 0;
        }
        out = next;
    }
    free_headers(s);
    s->headers = out;
    return 1;
}

static int same_part(CURLU *a, CURLU *b, CURLUPart part, unsigned int flags)
{
    char *x = NULL, *y = NULL;
    int same = curl_url_get(a, part, &x, flags) == CURLUE_OK &&
               curl_url_get(b, part, &y, flags) == CURLUE_OK && strcasecmp(x, y) == 0;
    curl_free(x);
    curl_free(y);
    return same;
}

/* Same scheme, host and port; anything unparsable counts as another origin. */
static int same_origin(const char *a, const char *b)
{
    CURLU *ua = curl_url(), *ub = curl_url();
    int same = 0;
    if (ua != NULL && ub != NULL && curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
        curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK)
        same = same_part(ua, ub, CURLUPART_SCHEME, 0) && same_part(ua, ub, CURLUPART_HOST, 0) &&
               same_part(ua, ub, CURLUPART_PORT, CURLU_DEFAULT_PORT);
    if (ua != NULL)
        curl_url_cleanup(ua);
    if (ub != NULL)
        curl_url_cleanup(ub);
    return same;
}

/* Every option of one hop, from a clean handle (curl_easy_reset keeps the
 * live connections, the DNS cache and the TLS session cache). */
static CURLcode setup_hop(session *s, const request *r, const char *url, long timeout_ms)
{
    curl_easy_reset(s->easy);
    return (CURLcode)truto_setopt_transfer(s->easy, &s->opts, r, url, timeout_ms, s->headers,
                                           &s->reply, on_body, on_header, s, 0);
}

/* The whole exchange, redirects included.  Never raises: runs while the
 * session is busy and libcurl frames may be on the C stack. */
static void transfer(session *s, request *r, outcome *o)
{
    const char *url = r->url;
    int https = truto_has_prefix_ci(r->url, "https://"), credentials_dropped = 0;
    memset(o, 0, sizeof *o);
    for (;;) {
        long remaining = r->timeout_ms - (long)(o->info.total_time * 1000.0);
        if (remaining <= 0) {
            o->code = CURLE_OPERATION_TIMEDOUT;
            o->message = "timed out while following redirects";
            return;
        }
        s->discarded = 0;
        s->discard = 0;
        truto_reply_start(&s->reply, r->max_bytes);
        o->code = setup_hop(s, r, url, remaining);
        if (o->code == CURLE_OK)
            o->code = curl_easy_perform(s->easy);
        truto_collect_info(s->easy, &o->info);
        if (o->code != CURLE_OK || !s->follow || !is_redirect(o->info.status))
            return;
        char *location = NULL;
        if (curl_easy_getinfo(s->easy, CURLINFO_REDIRECT_URL, &location) != CURLE_OK ||
            location == NULL)
            return;
        if (o->info.redirects == MAX_REDIRECTS) {
            o->code = CURLE_TOO_MANY_REDIRECTS;
            o->message = "more than 5 redirects";
            return;
        }
        int to_https = truto_has_prefix_ci(location, "https://");
        if (!to_https && !truto_has_prefix_ci(location, "http://")) {
            o->code = CURLE_UNSUPPORTED_PROTOCOL;
            o->message = "refused a redirect to a scheme other than http or https";
            return;
        }
        if (https && !to_https) {
            o->code = CURLE_UNSUPPORTED_PROTOCOL;
            o->message = "refused a redirect from https to http";
            return;
        }
        https = to_https;
        size_t len = strlen(location);
        char *next = (char *)malloc(len + 1);
        if (next == NULL) {
            s->reply.oom = 1;
            return;
        }
        memcpy(next, location, len + 1);
        free(s->url);
        s->url = next;
        url = s->url;

        /* 303 turns anything but HEAD into a GET; 301/302 do so for POST
         * (what browsers and libcurl do); 307/308 keep method and body. */
        long status = o->info.status;
        int to_get = (status == 303 && strcmp(r->method, "HEAD") != 0) ||
                     ((status == 301 || status == 302) && strcmp(r->method, "POST") == 0);
        int drop = !credentials_dropped && !same_origin(r->url, url);
        if (to_get || drop) {
            if (!filter_headers(s, drop, to_get)) {
                s->reply.oom = 1;
                return;
            }
            credentials_dropped |= drop;
        }
        if (to_get) {
            r->method = "GET";
            r->body = NULL;
            r->body_len = 0;
            r->has_body = 0;
        }
        o->info.redirects++;
    }
}

/* nil, { kind =, message =, curl_code = } */
static int push_failure(lua_State *L, session *s, const outcome *o)
{
    lua_pushnil(L);
    truto_push_curl_error(L, (int)o->code, o->message, &s->reply);
    return 2;
}

static int l_perform(lua_State *L)
{
    session *s = check_session(L);
    request r;
    outcome o;
    if (s->closed)
        return luaL_error(L, "truto: session is closed");
    if (s->busy)
        return luaL_error(L, "truto: session is busy (perform called from its own sink)");
    check_request(L, s, &r);

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
    s->busy = 1;
    transfer(s, &r, &o);
    s->busy = 0;
    s->L = NULL;
    /* The handle must not keep pointers to the list or to the body. */
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, (char *)NULL);
    free_headers(s);

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
    lua_pushinteger(L, (lua_Integer)status);
    truto_push_headers(L, &s->reply.head);
    truto_buf_reset(&s->reply.head);
    if (s->sink_fn != 0 && status >= 200 && status < 300)
        lua_pushnil(L);
    else
        truto_bytes_push(L, &s->reply.body);
    truto_buf_reset(&s->reply.body);
    truto_push_info(L, &o.info);
    return 4;
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

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

#define MAX_HEADER_BYTES           TRUTO_MAX_HEADER_BYTES
#define MAX_REDIRECTS              5

typedef struct {
    CURL *easy;
    struct curl_slist *headers;     /* request header lines of the transfer */
    truto_bytes body;               /* decoded response body (without a sink) */
    truto_bytes head;               /* header lines of the latest response */
    char *ca_file, *ca_path, *proxy;
    char *url;                      /* redirect target being followed */

    /* session options */
    long timeout_ms, connect_timeout_ms;
    size_t max_bytes;
    int insecure, http2, follow;

    int closed, busy;

    /* state of the transfer in progress (set by perform, read by callbacks) */
    lua_State *L;
    int sink_fn;                    /* stack index of sink_call, 0 without a sink */
    int sink_err;                   /* stack index of the sink's error value, or 0 */
    size_t limit, received, discarded;
    int discard;                    /* body of a redirect that will be followed */
    int too_large, head_too_large, oom;

    char errbuf[CURL_ERROR_SIZE];
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
    truto_buf_free(&s->body);
    truto_buf_free(&s->head);
    free(s->ca_file);
    free(s->ca_path);
    free(s->proxy);
    free(s->url);
    s->ca_file = s->ca_path = s->proxy = s->url = NULL;
    s->closed = 1;
    return 0;
}

static int session_tostring(lua_State *L)
{
    session *s = check_session(L);
    lua_pushfstring(L, "truto.Session (%s%p)", s->closed ? "closed, " : "", (void *)s);
    return 1;
}

/* ---- core.session(opts) ------------------------------------------------------ */

static const char *const session_fields[] = {
    "timeout", "connect_timeout", "ca_file", "ca_path", "insecure", "proxy",
    "max_response_bytes", "http2", "follow_redirects", NULL,
};

static int l_session(lua_State *L)
{
    if (!lua_isnoneornil(L, 1))
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);

    /* Sentinels and metatable first: an error below leaves a session the
     * collector can clean up. */
    session *s = (session *)lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->timeout_ms = TRUTO_DEFAULT_TIMEOUT_MS;
    s->connect_timeout_ms = TRUTO_DEFAULT_CONNECT_TIMEOUT_MS;
    s->max_bytes = TRUTO_DEFAULT_MAX_RESPONSE_BYTES;
    s->http2 = 1;
    luaL_getmetatable(L, SESSION_MT);
    lua_setmetatable(L, -2);

    if (lua_istable(L, 1)) {
        truto_check_fields(L, 1, session_fields, "session option");
        for (int i = 0; session_fields[i] != NULL; i++) {
            const char *name = session_fields[i];
            lua_getfield(L, 1, name);
            if (!lua_isnil(L, -1)) {
                if (strcmp(name, "timeout") == 0)
                    s->timeout_ms = truto_check_seconds(L, -1, name);
                else if (strcmp(name, "connect_timeout") == 0)
                    s->connect_timeout_ms = truto_check_seconds(L, -1, name);
                else if (strcmp(name, "ca_file") == 0)
                    truto_copy_string(L, -1, name, &s->ca_file);
                else if (strcmp(name, "ca_path") == 0)
                    truto_copy_string(L, -1, name, &s->ca_path);
                else if (strcmp(name, "proxy") == 0)
                    truto_copy_string(L, -1, name, &s->proxy);
                else if (strcmp(name, "insecure") == 0)
                    s->insecure = truto_check_boolean(L, -1, name);
                else if (strcmp(name, "http2") == 0)
                    s->http2 = truto_check_boolean(L, -1, name);
                else if (strcmp(name, "follow_redirects") == 0)
                    s->follow = truto_check_boolean(L, -1, name);
                else if (strcmp(name, "max_response_bytes") == 0)
                    s->max_bytes = truto_check_bytes(L, -1, name);
            }
            lua_pop(L, 1);
        }
    }

    if (!truto_curl_global_init())
        return luaL_error(L, "truto: curl_global_init failed");
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
        if (len > s->limit - s->discarded) {
            s->too_large = 1;
            return 0;
        }
        s->discarded += len;
        return len;
    }
    if (len > s->limit - s->received) {
        s->too_large = 1;
        return 0;
    }
    s->received += len;
    /* Only a successful body streams to the sink; an error body is kept, so
     * that the caller can read Truto's error envelope. */
    long status = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (s->sink_fn != 0 && status >= 200 && status < 300) {
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
    if (!truto_buf_append(&s->body, p, len, s->limit)) {
        s->oom = 1;
        return 0;
    }
    return len;
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

/* Keeps the header lines of the latest response only: a status line (an
 * interim 1xx, a proxy's CONNECT reply, a redirect) starts afresh. */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    session *s = (session *)ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        s->head.len = 0;
        s->discard = 0;
    } else if (len <= 2 && (len == 0 || p[0] == '\r' || p[0] == '\n')) {
        /* End of a header block: decide whether this body is a redirect's. */
        if (s->follow) {
            /* libcurl computes CURLINFO_REDIRECT_URL only once the transfer
             * is done: look for the Location field ourselves. */
            long code = 0;
            curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
            s->discard = is_redirect(code) && has_location(&s->head);
        }
        return len;
    }
    if (len > MAX_HEADER_BYTES - s->head.len) {
        s->too_large = s->head_too_large = 1;
        return 0;
    }
    if (!truto_buf_append(&s->head, p, len, MAX_HEADER_BYTES)) {
        s->oom = 1;
        return 0;
    }
    return len;
}

/* ---- s:perform(request) ---------------------------------------------------- */

static const char *const request_fields[] = {
    "method", "url", "headers", "body", "timeout", "connect_timeout", "sink",
    "max_response_bytes", "fresh_connect", NULL,
};

/* Stack slots of perform, in request_fields order after the two arguments. */
enum {
    ARG_METHOD = 3, ARG_URL, ARG_HEADERS, ARG_BODY, ARG_TIMEOUT, ARG_CONNECT_TIMEOUT,
    ARG_SINK, ARG_MAX_BYTES, ARG_FRESH_CONNECT, ARG_SINK_CALL
};

typedef struct {
    const char *method, *url, *body;
    size_t body_len;
    int has_body;                   /* send body (possibly empty) as the payload */
    long timeout_ms, connect_timeout_ms;
    int origin_https;
    int fresh_connect;              /* never on a reused connection (see setup_hop) */
} request;

typedef struct {
    CURLcode code;
    const char *message;            /* our own failure text, or NULL */
    long status, version, port, connects;
    int redirects;
    double total_time, connect_time;
    curl_off_t size;
    char ip[64];
} outcome;

/* Checks the request table, leaving its fields in the ARG_* slots. */
static void check_request(lua_State *L, session *s, request *r)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    truto_check_fields(L, 2, request_fields, "request field");
    for (int i = 0; request_fields[i] != NULL; i++)
        lua_getfield(L, 2, request_fields[i]);

    memset(r, 0, sizeof *r);
    r->method = truto_check_method(L, ARG_METHOD);
    r->url = truto_check_url(L, ARG_URL);
    r->origin_https = truto_has_prefix_ci(r->url, "https://");
    truto_check_header_lines(L, ARG_HEADERS);
    r->has_body = truto_check_body(L, ARG_BODY, r->method, &r->body, &r->body_len);

    r->timeout_ms = lua_isnil(L, ARG_TIMEOUT) ? s->timeout_ms
                                              : truto_check_seconds(L, ARG_TIMEOUT, "timeout");
    r->connect_timeout_ms = lua_isnil(L, ARG_CONNECT_TIMEOUT)
                                ? s->connect_timeout_ms
                                : truto_check_seconds(L, ARG_CONNECT_TIMEOUT, "connect_timeout");
    s->limit = lua_isnil(L, ARG_MAX_BYTES)
                   ? s->max_bytes
                   : truto_check_bytes(L, ARG_MAX_BYTES, "max_response_bytes");
    if (!lua_isnil(L, ARG_SINK) && lua_type(L, ARG_SINK) != LUA_TFUNCTION)
        luaL_error(L, "truto: request sink must be a function, got %s", luaL_typename(L, ARG_SINK));
    if (!lua_isnil(L, ARG_FRESH_CONNECT) && lua_type(L, ARG_FRESH_CONNECT) != LUA_TBOOLEAN)
        luaL_error(L, "truto: request fresh_connect must be a boolean, got %s",
                   luaL_typename(L, ARG_FRESH_CONNECT));
    r->fresh_connect = lua_toboolean(L, ARG_FRESH_CONNECT);
}

/* Builds the header list from the validated lines.  The list lives in the
 * session as it grows, so an allocation failure leaks nothing. */
static void build_headers(lua_State *L, session *s, const request *r)
{
    free_headers(s);
    if (!truto_header_list(L, ARG_HEADERS, r->has_body, &s->headers))
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

#define SETOPT(opt, val)                                       \
    do {                                                       \
        if (rc == CURLE_OK)                                    \
            rc = curl_easy_setopt(e, (opt), (val));            \
    } while (0)

/* Every option of one hop, from a clean handle (curl_easy_reset keeps the
 * live connections, the DNS cache and the TLS session cache). */
static CURLcode setup_hop(session *s, const request *r, const char *url, long timeout_ms)
{
    CURL *e = s->easy;
    CURLcode rc = CURLE_OK;
    curl_easy_reset(e);
    s->errbuf[0] = '\0';
    SETOPT(CURLOPT_ERRORBUFFER, s->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_URL, url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, (void *)s);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, (void *)s);
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, r->connect_timeout_ms);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    if (rc == CURLE_OK)
        rc = (CURLcode)truto_setopt_tls(e, s->insecure, s->ca_file, s->ca_path, s->proxy);
    SETOPT(CURLOPT_HTTPHEADER, s->headers);
    /* libcurl silently sends a request again when a reused connection dies
     * before any answer; a request that must not be repeated (a POST or
     * PATCH without an Idempotency-Key) goes on a new connection instead. */
    if (r->fresh_connect)
        SETOPT(CURLOPT_FRESH_CONNECT, 1L);
    if (rc == CURLE_OK)
        rc = (CURLcode)truto_setopt_method(e, r->method, r->body, r->body_len, r->has_body,
                                           s->http2, 0);
    return rc;
}

static void collect_info(session *s, outcome *o)
{
    CURL *e = s->easy;
    double t = 0;
    long connects = 0;
    char *ip = NULL;
    if (curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &t) == CURLE_OK)
        o->total_time += t;
    t = 0;
    curl_easy_getinfo(e, CURLINFO_CONNECT_TIME, &t);
    o->connect_time = t;
    if (curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
        o->connects += connects;
    o->status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &o->status);
    o->version = 0;
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &o->version);
    o->port = 0;
    curl_easy_getinfo(e, CURLINFO_PRIMARY_PORT, &o->port);
    o->size = 0;
    curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &o->size);
    o->ip[0] = '\0';
    if (curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL) {
        strncpy(o->ip, ip, sizeof o->ip - 1);
        o->ip[sizeof o->ip - 1] = '\0';
    }
}

/* The whole exchange, redirects included.  Never raises: runs while the
 * session is busy and libcurl frames may be on the C stack. */
static void transfer(session *s, request *r, outcome *o)
{
    const char *url = r->url;
    int https = r->origin_https, credentials_dropped = 0;
    memset(o, 0, sizeof *o);
    for (;;) {
        long remaining = r->timeout_ms - (long)(o->total_time * 1000.0);
        if (remaining <= 0) {
            o->code = CURLE_OPERATION_TIMEDOUT;
            o->message = "timed out while following redirects";
            return;
        }
        s->received = s->discarded = 0;
        s->discard = 0;
        s->head.len = 0;
        s->body.len = 0;
        o->code = setup_hop(s, r, url, remaining);
        if (o->code == CURLE_OK)
            o->code = curl_easy_perform(s->easy);
        collect_info(s, o);
        if (o->code != CURLE_OK || !s->follow || !is_redirect(o->status))
            return;
        char *location = NULL;
        if (curl_easy_getinfo(s->easy, CURLINFO_REDIRECT_URL, &location) != CURLE_OK ||
            location == NULL)
            return;
        if (o->redirects == MAX_REDIRECTS) {
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
            s->oom = 1;
            return;
        }
        memcpy(next, location, len + 1);
        free(s->url);
        s->url = next;
        url = s->url;

        /* 303 turns anything but HEAD into a GET; 301/302 do so for POST
         * (what browsers and libcurl do); 307/308 keep method and body. */
        int to_get = (o->status == 303 && strcmp(r->method, "HEAD") != 0) ||
                     ((o->status == 301 || o->status == 302) && strcmp(r->method, "POST") == 0);
        int drop = !credentials_dropped && !same_origin(r->url, url);
        if (to_get || drop) {
            if (!filter_headers(s, drop, to_get)) {
                s->oom = 1;
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
        o->redirects++;
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

/* nil, { kind =, message =, curl_code = } */
static int push_failure(lua_State *L, session *s, const outcome *o)
{
    lua_pushnil(L);
    truto_push_curl_error(L, (int)o->code, o->message, s->errbuf, s->too_large,
                          s->head_too_large, s->limit);
    return 2;
}

static void push_info(lua_State *L, const outcome *o)
{
    lua_createtable(L, 0, 9);
    lua_pushstring(L, truto_http_version_name(o->version));
    lua_setfield(L, -2, "http_version");
    set_number(L, "total_time", o->total_time);
    set_number(L, "connect_time", o->connect_time);
    lua_pushstring(L, o->ip);
    lua_setfield(L, -2, "primary_ip");
    set_integer(L, "primary_port", (lua_Integer)o->port);
    set_integer(L, "size_download", (lua_Integer)o->size);
    set_integer(L, "redirects", (lua_Integer)o->redirects);
    set_integer(L, "new_connections", (lua_Integer)o->connects);
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
    truto_buf_reset(&s->body);
    truto_buf_reset(&s->head);
    build_headers(L, s, &r);

    s->L = L;
    s->sink_err = 0;
    s->too_large = s->head_too_large = s->oom = 0;
    s->busy = 1;
    transfer(s, &r, &o);
    s->busy = 0;
    s->L = NULL;
    /* The handle must not keep pointers to the list or to the body. */
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, (char *)NULL);
    free_headers(s);

    if (s->sink_err != 0) {
        truto_buf_reset(&s->body);
        truto_buf_reset(&s->head);
        lua_settop(L, s->sink_err);
        return lua_error(L);
    }
    if (s->oom) {
        truto_buf_reset(&s->body);
        truto_buf_reset(&s->head);
        return luaL_error(L, "truto: out of memory");
    }
    if (o.code != CURLE_OK || s->too_large) {
        if (o.code == CURLE_OK)
            o.code = CURLE_WRITE_ERROR;
        truto_buf_reset(&s->body);
        truto_buf_reset(&s->head);
        return push_failure(L, s, &o);
    }

    lua_pushinteger(L, (lua_Integer)o.status);
    truto_push_headers(L, &s->head);
    truto_buf_reset(&s->head);
    if (s->sink_fn != 0 && o.status >= 200 && o.status < 300)
        lua_pushnil(L);
    else
        truto_bytes_push(L, &s->body);
    truto_buf_reset(&s->body);
    push_info(L, &o);
    return 4;
}

void truto_open_session(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"perform", l_perform},
        {"close", session_cleanup},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, SESSION_MT)) {
        lua_pushliteral(L, SESSION_MT);
        lua_setfield(L, -2, "__name");
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, session_cleanup);
        lua_setfield(L, -2, "__gc");
#if LUA_VERSION_NUM >= 504
        lua_pushcfunction(L, session_cleanup);
        lua_setfield(L, -2, "__close");
#endif
        lua_pushcfunction(L, session_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_session);
    lua_setfield(L, -2, "session");
}

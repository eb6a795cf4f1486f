/*
 * Pieces shared by the two libcurl front ends, truto.Session (session.c,
 * one transfer at a time) and truto.Multi (multi.c, many at once): global
 * initialisation, byte buffers that never raise, option and request
 * checking, the options every transfer gets, and the Lua shapes of a reply
 * (header table, error table).  Everything here is hidden (truto.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "truto.h"

/* Timeouts are given in seconds and handed to libcurl in milliseconds. */
#define MAX_SECONDS      2147483.0
/* Largest max_response_bytes accepted: 2^53, exact in a double. */
#define MAX_BYTES_OPTION 9007199254740992.0

/* ---- curl_global_init once -------------------------------------------------- */

static int global_ready;

int truto_curl_global_init(void)
{
    if (!global_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return 0;
        global_ready = 1;
    }
    return 1;
}

/* ---- byte buffers that never raise ------------------------------------ */

/* Appends n bytes, growing geometrically but never past limit (plus one
 * spare byte); returns 0 when memory runs out. */
int truto_buf_append(truto_bytes *b, const char *p, size_t n, size_t limit)
{
    if (b->cap - b->len < n) {
        size_t need = b->len + n;
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < need)
            cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
        if (cap > limit + 1 && need <= limit + 1)
            cap = limit + 1;
        char *q = (char *)realloc(b->data, cap);
        if (q == NULL)
            return 0;
        b->data = q;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 1;
}

/* Empties a buffer, returning big allocations to the system. */
void truto_buf_reset(truto_bytes *b)
{
    if (b->cap > 256 * 1024) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
    b->len = 0;
}

void truto_buf_free(truto_bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- argument checking ---------------------------------------------------- */

/* A positive number of seconds -> milliseconds (at least 1). */
long truto_check_seconds(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "truto: %s must be a number of seconds, got %s", what, luaL_typename(L, idx));
    double v = (double)lua_tonumber(L, idx);
    if (!(v > 0) || !(v <= MAX_SECONDS))   /* NaN fails both */
        luaL_error(L, "truto: %s must be a positive number of seconds (at most %d)", what,
                   (int)MAX_SECONDS);
    double ms = ceil(v * 1000.0);
    return ms < 1 ? 1L : (long)ms;
}

size_t truto_check_bytes(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "truto: %s must be a number of bytes, got %s", what, luaL_typename(L, idx));
    double v = (double)lua_tonumber(L, idx);
    if (!(v >= 0) || !(v <= MAX_BYTES_OPTION) || v != floor(v))
        luaL_error(L, "truto: %s must be a non-negative integer", what);
    if (v > (double)(((size_t)-1) / 4))
        v = (double)(((size_t)-1) / 4);
    return (size_t)v;
}

int truto_check_boolean(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TBOOLEAN)
        luaL_error(L, "truto: %s must be a boolean, got %s", what, luaL_typename(L, idx));
    return lua_toboolean(L, idx);
}

/* A string without NUL bytes, copied into *slot (owned by the caller's
 * userdata, freed by its cleanup). */
void truto_copy_string(lua_State *L, int idx, const char *what, char **slot)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "truto: %s must be a string, got %s", what, luaL_typename(L, idx));
    const char *v = lua_tolstring(L, idx, &len);
    if (len == 0 || memchr(v, '\0', len) != NULL)
        luaL_error(L, "truto: %s must be a non-empty string without NUL bytes", what);
    char *copy = (char *)malloc(len + 1);
    if (copy == NULL)
        luaL_error(L, "truto: out of memory");
    memcpy(copy, v, len + 1);
    free(*slot);
    *slot = copy;
}

/* Raises unless every key of the table at idx is one of names. */
void truto_check_fields(lua_State *L, int idx, const char *const *names, const char *what)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "truto: %s keys must be strings, got %s", what, luaL_typename(L, -1));
        const char *key = lua_tostring(L, -1);
        int i;
        for (i = 0; names[i] != NULL; i++)
            if (strcmp(key, names[i]) == 0)
                break;
        if (names[i] == NULL)
            luaL_error(L, "truto: unknown %s '%s'", what, key);
    }
}

int truto_has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static int is_token(const char *s, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') ||
              (c != 0 && strchr(extra, c) != NULL)))
            return 0;
    }
    return 1;
}

static int has_control(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' || c == '\n' || c == '\0')
            return 1;
    }
    return 0;
}

/* ---- request fields ---------------------------------------------------------- */

/* The method at idx (nil: "GET"): an HTTP token. */
const char *truto_check_method(lua_State *L, int idx)
{
    size_t len;
    if (lua_isnil(L, idx))
        return "GET";
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "truto: request method must be a string, got %s", luaL_typename(L, idx));
    const char *method = lua_tolstring(L, idx, &len);
    if (!is_token(method, len))
        luaL_error(L, "truto: request method must be an HTTP token such as GET or PATCH");
    return method;
}

/* The url at idx: http:// or https://, no spaces or control characters. */
const char *truto_check_url(lua_State *L, int idx)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "truto: request url must be a string, got %s", luaL_typename(L, idx));
    const char *url = lua_tolstring(L, idx, &len);
    if (!truto_has_prefix_ci(url, "http://") && !truto_has_prefix_ci(url, "https://"))
        luaL_error(L, "truto: request url must start with http:// or https://");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            luaL_error(L, "truto: request url must not contain spaces or control characters");
    }
    return url;
}

/* The header lines at idx (nil or an array of "Name: value" strings). */
void truto_check_header_lines(lua_State *L, int idx)
{
    size_t len;
    if (lua_isnil(L, idx))
        return;
    if (!lua_istable(L, idx))
        luaL_error(L, "truto: request headers must be a table of lines, got %s",
                   luaL_typename(L, idx));
    size_t n = lua_rawlen(L, idx);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "truto: request headers[%d] must be a string, got %s", (int)i,
                       luaL_typename(L, -1));
        const char *line = lua_tolstring(L, -1, &len);
        /* The message never repeats the line: it may hold the token. */
        if (has_control(line, len))
            luaL_error(L, "truto: request headers[%d] contains CR, LF or NUL", (int)i);
        if (memchr(line, ':', len) == NULL && memchr(line, ';', len) == NULL)
            luaL_error(L, "truto: request headers[%d] must be a \"Name: value\" line", (int)i);
        lua_pop(L, 1);
    }
}

/* The body at idx for method: returns whether a payload is sent (possibly
 * empty: POST, PUT and PATCH send Content-Length: 0 without a body). */
int truto_check_body(lua_State *L, int idx, const char *method, const char **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    if (!lua_isnil(L, idx)) {
        if (lua_type(L, idx) != LUA_TSTRING)
            luaL_error(L, "truto: request body must be a string or nil, got %s",
                       luaL_typename(L, idx));
        *body = lua_tolstring(L, idx, len);
        if (strcmp(method, "HEAD") == 0)
            luaL_error(L, "truto: a HEAD request cannot have a body");
        return 1;
    }
    if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0) {
        *body = "";
        return 1;
    }
    return 0;
}

/* Appends the lines at idx (already checked) to *list, then "Expect:" (no
 * 100-continue round trip) and, for a body sent without a Content-Type,
 * "Content-Type:" (no form type made up by libcurl).  Never raises: returns
 * 0 when memory runs out, *list then holding what was appended so far. */
int truto_header_list(lua_State *L, int idx, int has_body, struct curl_slist **list)
{
    int content_type = 0;
    struct curl_slist *l;
    if (lua_istable(L, idx)) {
        size_t n = lua_rawlen(L, idx);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            const char *line = lua_tostring(L, -1);
            if (truto_has_prefix_ci(line, "content-type:") ||
                truto_has_prefix_ci(line, "content-type;"))
                content_type = 1;
            l = curl_slist_append(*list, line);
            lua_pop(L, 1);
            if (l == NULL)
                return 0;
            *list = l;
        }
    }
    l = curl_slist_append(*list, "Expect:");
    if (l == NULL)
        return 0;
    *list = l;
    if (has_body && !content_type) {
        l = curl_slist_append(*list, "Content-Type:");
        if (l == NULL)
            return 0;
        *list = l;
    }
    return 1;
}

/* ---- options every transfer gets -------------------------------------------- */

#define SETOPT(opt, val)                                       \
    do {                                                       \
        if (rc == CURLE_OK)                                    \
            rc = curl_easy_setopt(e, (opt), (val));            \
    } while (0)

/* TLS verification (on unless insecure), CA locations, proxy. */
int truto_setopt_tls(void *easy, int insecure, const char *ca_file, const char *ca_path,
                     const char *proxy)
{
    CURL *e = (CURL *)easy;
    CURLcode rc = CURLE_OK;
    SETOPT(CURLOPT_SSL_VERIFYPEER, insecure ? 0L : 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, insecure ? 0L : 2L);
    if (ca_file != NULL)
        SETOPT(CURLOPT_CAINFO, ca_file);
    if (ca_path != NULL)
        SETOPT(CURLOPT_CAPATH, ca_path);
    if (proxy != NULL)
        SETOPT(CURLOPT_PROXY, proxy);
    return (int)rc;
}

/* Method and payload, then the HTTP version (HTTP/2 over TLS when http2 and
 * libcurl supports it, else HTTP/1.1).  copy_body: libcurl keeps its own
 * copy of the body (the transfer outlives the Lua string). */
int truto_setopt_method(void *easy, const char *method, const char *body, size_t body_len,
                        int has_body, int http2, int copy_body)
{
    CURL *e = (CURL *)easy;
    CURLcode rc = CURLE_OK;
    if (strcmp(method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
    } else if (has_body) {
        if (strcmp(method, "POST") != 0)
            SETOPT(CURLOPT_CUSTOMREQUEST, method);
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        if (copy_body)
            SETOPT(CURLOPT_COPYPOSTFIELDS, body);
        else
            SETOPT(CURLOPT_POSTFIELDS, body);
    } else {
        SETOPT(CURLOPT_HTTPGET, 1L);
        if (strcmp(method, "GET") != 0)
            SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }
    if (rc == CURLE_OK) {
        /* Without HTTP/2 support libcurl refuses 2TLS: HTTP/1.1 then. */
        if (!http2 ||
            curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS) != CURLE_OK)
            rc = curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    }
    return (int)rc;
}

/* ---- replies ---------------------------------------------------------------- */

static const char *error_kind(CURLcode code)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "connect";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
#if LIBCURL_VERSION_NUM >= 0x074900
    case CURLE_SSL_CLIENTCERT:
#endif
        return "tls";
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        return "network";
    default:
        return "protocol";
    }
}

/* { kind =, message =, curl_code = }.  A body or header block over its
 * limit is "too_large"; otherwise the kind follows the CURLcode, and the
 * message is ours (message), libcurl's error buffer, or its generic text. */
void truto_push_curl_error(lua_State *L, int code, const char *message, const char *errbuf,
                           int too_large, int head_too_large, size_t limit)
{
    lua_createtable(L, 0, 3);
    if (too_large) {
        lua_pushliteral(L, "too_large");
        lua_setfield(L, -2, "kind");
        if (head_too_large)
            lua_pushfstring(L, "response headers exceed %d bytes", (int)TRUTO_MAX_HEADER_BYTES);
        else
            lua_pushfstring(L, "response body exceeds max_response_bytes (%f bytes)",
                            (double)limit);
    } else {
        lua_pushstring(L, error_kind((CURLcode)code));
        lua_setfield(L, -2, "kind");
        if (message != NULL) {
            lua_pushstring(L, message);
        } else if (errbuf != NULL && errbuf[0] != '\0') {
            size_t n = strlen(errbuf);
            while (n > 0 && (errbuf[n - 1] == '\n' || errbuf[n - 1] == '\r'))
                n--;
            lua_pushlstring(L, errbuf, n);
        } else {
            lua_pushstring(L, curl_easy_strerror((CURLcode)code));
        }
    }
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, (lua_Integer)code);
    lua_setfield(L, -2, "curl_code");
}

/* Header lines -> { ["content-type"] = "...", ... }: names lower-cased,
 * repeated fields joined with ", ", folded lines unfolded. */
void truto_push_headers(lua_State *L, const truto_bytes *h)
{
    /* No arithmetic on a NULL buffer (nothing received yet): UB in C. */
    const char *p = h->data, *end = h->len ? h->data + h->len : h->data;
    lua_newtable(L);
    int t = lua_gettop(L);
    lua_pushnil(L);                 /* t + 1: name of the previous field */
    while (p != NULL && p < end) {
        const char *eol = (const char *)memchr(p, '\n', (size_t)(end - p));
        const char *next = eol != NULL ? eol + 1 : end;
        const char *stop = eol != NULL ? eol : end;
        if (stop > p && stop[-1] == '\r')
            stop--;
        const char *line = p;
        p = next;
        if (stop == line || (stop - line >= 5 && memcmp(line, "HTTP/", 5) == 0))
            continue;
        const char *v;
        if (*line == ' ' || *line == '\t') {
            if (lua_isnil(L, t + 1))
                continue;
            lua_pushvalue(L, t + 1);            /* obs-fold: continues the previous value */
            v = line;
        } else {
            const char *colon = (const char *)memchr(line, ':', (size_t)(stop - line));
            if (colon == NULL || colon == line)
                continue;
            char lower[256];
            size_t n = (size_t)(colon - line);
            if (n <= sizeof lower) {
                for (size_t i = 0; i < n; i++)
                    lower[i] = (char)((line[i] >= 'A' && line[i] <= 'Z') ? line[i] + 32 : line[i]);
                lua_pushlstring(L, lower, n);
            } else {
                luaL_Buffer b;
                luaL_buffinit(L, &b);
                for (const char *c = line; c < colon; c++)
                    luaL_addchar(&b, (char)((*c >= 'A' && *c <= 'Z') ? *c + 32 : *c));
                luaL_pushresult(&b);
            }
            lua_pushvalue(L, -1);
            lua_replace(L, t + 1);
            v = colon + 1;
        }
        while (v < stop && (*v == ' ' || *v == '\t'))
            v++;
        while (stop > v && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        /* stack: name */
        lua_pushvalue(L, -1);
        lua_rawget(L, t);
        int fold = (*line == ' ' || *line == '\t');
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, v, (size_t)(stop - v));
        } else {
            lua_pushstring(L, fold ? " " : ", ");
            lua_pushlstring(L, v, (size_t)(stop - v));
            lua_concat(L, 3);
        }
        lua_rawset(L, t);
    }
    lua_settop(L, t);
}

/* CURLINFO_HTTP_VERSION -> "1.0", "1.1", "2", "3" or "?". */
const char *truto_http_version_name(long version)
{
    switch (version) {
    case CURL_HTTP_VERSION_1_0: return "1.0";
    case CURL_HTTP_VERSION_1_1: return "1.1";
    case CURL_HTTP_VERSION_2_0: return "2";
#if LIBCURL_VERSION_NUM >= 0x074200
    case CURL_HTTP_VERSION_3: return "3";
#endif
    default: return "?";
    }
}

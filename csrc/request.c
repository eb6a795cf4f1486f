/*
 * The request builder: (method, base URL, path segments, query, headers,
 * token, body) -> { method, url, headers = { "Name: value", ... }, body }:
 * the body a string, or a truto.Body (body.c) over TRUTO_BODY_THRESHOLD.
 * Everything a transport sends is decided here, so libcurl and the nginx
 * cosocket transport put the same bytes on the wire.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <curl/curlver.h>   /* LIBCURL_VERSION: a header only, truto.core links no libcurl */

#include "truto.h"

#define MAX_HEADERS 64

typedef struct {
    const char *name, *value;
    size_t namelen, valuelen;
} header;

/* Printable ASCII: safe to repeat in a message. */
static int is_printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

static const char *get_string_field(lua_State *L, int spec, const char *field, size_t *len,
                                    int required)
{
    lua_getfield(L, spec, field);
    int t = lua_type(L, -1);
    if (t == LUA_TNIL && !required) {
        lua_pop(L, 1);
        return NULL;
    }
    if (t != LUA_TSTRING)
        luaL_error(L, "truto: request %s must be a string, got %s", field, luaL_typename(L, -1));
    /* The value stays referenced by the spec table, so the pointer lives on. */
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1);
    return s;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 pchar but pct-encoded: unreserved, sub-delims, ':' and '@'. */
static int is_pchar(unsigned char c)
{
    return is_alnum(c) || (c != '\0' && strchr("-._~!$&'()*+,;=:@", c) != NULL);
}

/* The host of a base URL, host[0 .. len): "[" IPv6 "]" (inet_pton's
 * syntax: hex digits, ':' and '.' only, so no zone) or a name of letters,
 * digits, '-', '.' and '_'.  Raises, naming what is wrong. */
static void check_host(lua_State *L, const char *host, size_t len)
{
    if (host[0] == '[') {
        char addr[INET6_ADDRSTRLEN];
        struct in6_addr parsed;
        size_t n = len - 2;     /* the caller found the ']' at len - 1 */
        for (size_t i = 1; i < len - 1; i++)
            if (!is_hex((unsigned char)host[i]) && host[i] != ':' && host[i] != '.')
                luaL_error(L, "truto: base_url has an IPv6 address with a character other than "
                              "hex digits, ':' and '.'");
        if (n == 0 || n >= sizeof addr)
            luaL_error(L, "truto: base_url has an invalid IPv6 address");
        memcpy(addr, host + 1, n);
        addr[n] = '\0';
        if (inet_pton(AF_INET6, addr, &parsed) != 1)
            luaL_error(L, "truto: base_url has an invalid IPv6 address");
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)host[i];
        if (!is_alnum(c) && c != '-' && c != '.' && c != '_')
            luaL_error(L, "truto: base_url host may contain only letters, digits, '-', '.' and '_' "
                          "(or be an IPv6 address in brackets)");
    }
}

/* Checks base (scheme "://" authority path-prefix, nothing else) and
 * appends it without its trailing slashes.  The authority is host[:port]:
 * no user information (libcurl would take "http://a\@b" for user "a\" at
 * host b), 1 to 65535 for a port.  The path prefix holds pchar, %XX and
 * '/' only.  Messages never repeat the URL: it may hold a secret. */
static void add_base_url(lua_State *L, truto_bytes *url, const char *base, size_t len)
{
    size_t scheme = 0;
    if (len >= 7 && strncasecmp(base, "http://", 7) == 0)
        scheme = 7;
    else if (len >= 8 && strncasecmp(base, "https://", 8) == 0)
        scheme = 8;
    if (scheme == 0)
        luaL_error(L, "truto: base_url must start with http:// or https://");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)base[i];
        if (c <= 0x20 || c == 0x7f)
            luaL_error(L, "truto: base_url must not contain spaces or control characters");
        if (c == '?' || c == '#')
            luaL_error(L, "truto: base_url must not have a query or a fragment");
        if (c == '\\')
            luaL_error(L, "truto: base_url must not contain a backslash");
    }
    while (len > scheme && base[len - 1] == '/')
        len--;
    if (len == scheme || base[scheme] == '/')
        luaL_error(L, "truto: base_url has no host");

    const char *authority = base + scheme;
    const char *slash = memchr(authority, '/', len - scheme);
    size_t alen = slash ? (size_t)(slash - authority) : len - scheme;
    if (memchr(authority, '@', alen) != NULL)
        luaL_error(L, "truto: base_url must not contain user information ('@' before the host)");
    size_t hostlen;
    if (authority[0] == '[') {
        const char *close = memchr(authority, ']', alen);
        if (close == NULL)
            luaL_error(L, "truto: base_url has an IPv6 address without its closing ']'");
        hostlen = (size_t)(close - authority) + 1;
    } else {
        const char *colon = memchr(authority, ':', alen);
        hostlen = colon ? (size_t)(colon - authority) : alen;
        if (hostlen == 0)
            luaL_error(L, "truto: base_url has no host");
    }
    check_host(L, authority, hostlen);
    if (hostlen < alen) {
        const char *port = authority + hostlen;
        size_t plen = alen - hostlen - 1;
        unsigned long value = 0;
        if (port[0] != ':')
            luaL_error(L, "truto: base_url has something other than ':port' after the IPv6 address");
        if (plen == 0 || plen > 5)
            luaL_error(L, "truto: base_url port must be a number from 1 to 65535");
        for (size_t i = 1; i <= plen; i++) {
            if (!is_digit((unsigned char)port[i]))
                luaL_error(L, "truto: base_url port must be a number from 1 to 65535");
            value = value * 10 + (unsigned long)(port[i] - '0');
        }
        if (value < 1 || value > 65535)
            luaL_error(L, "truto: base_url port must be a number from 1 to 65535");
    }
    for (size_t i = scheme + alen; i < len; i++) {
        unsigned char c = (unsigned char)base[i];
        if (c == '%') {
            if (i + 2 >= len || !is_hex((unsigned char)base[i + 1]) || !is_hex((unsigned char)base[i + 2]))
                luaL_error(L, "truto: base_url path has a '%%' that does not start a %%XX escape");
            i += 2;
        } else if (c != '/' && !is_pchar(c)) {
            luaL_error(L, "truto: base_url path may contain only letters, digits, '/', %%XX escapes "
                          "and -._~!$&'()*+,;=:@");
        }
    }
    truto_bytes_add(L, url, base, len);
}

static void add_path(lua_State *L, truto_bytes *url, int spec)
{
    lua_getfield(L, spec, "path");
    int path = lua_gettop(L);
    luaL_argcheck(L, lua_type(L, path) == LUA_TTABLE, 1, "request path must be a table");
    lua_getfield(L, spec, "path_names");
    int names = lua_type(L, -1) == LUA_TTABLE ? lua_gettop(L) : 0;
    lua_Integer n = (lua_Integer)lua_rawlen(L, path);
    for (lua_Integer i = 1; i <= n; i++) {
        char num[32];
        const char *seg;
        size_t len;

        if (names)
            lua_rawgeti(L, names, i);
        else
            lua_pushnil(L);
        const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "path segment";
        lua_rawgeti(L, path, i);
        if (lua_type(L, -1) == LUA_TNUMBER) {
            len = truto_format_number(L, -1, num);
            if (len == 0)
                luaL_error(L, "truto: %s must be a finite number", name);
            seg = num;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            seg = lua_tolstring(L, -1, &len);
        } else {
            return (void)luaL_error(L, "truto: %s must be a string, got %s", name,
                                    luaL_typename(L, -1));
        }
        if (len == 0)
            luaL_error(L, "truto: %s must not be empty", name);
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            luaL_error(L, "truto: %s must not be '.' or '..'", name);
        if (truto_utf8_invalid_at(seg, len) != (size_t)-1)
            luaL_error(L, "truto: %s is not valid UTF-8", name);
        if (!truto_is_field_value(seg, len) || memchr(seg, '\t', len) != NULL)
            luaL_error(L, "truto: %s contains CR, LF, NUL or another control character", name);
        truto_bytes_addc(L, url, '/');
        truto_pct_encode(L, url, seg, len);
        lua_pop(L, 2);
    }
    lua_pop(L, 2);
}

static void add_header(header *h, int *n, const char *name, const char *value)
{
    h[*n].name = name;
    h[*n].namelen = strlen(name);
    h[*n].value = value;
    h[*n].valuelen = strlen(value);
    (*n)++;
}

/* Written once: the versions do not change while the module is loaded.
 * libcurl's is the one built against: asking the library would load it. */
static const char *user_agent(void)
{
    static char agent[160];
#ifdef LUA_RELEASE
    const char *lua = LUA_RELEASE;
#else
    const char *lua = LUA_VERSION;
#endif
    if (agent[0] == '\0')
        snprintf(agent, sizeof agent, "lua-truto/%s (libcurl/%s; %s)", TRUTO_VERSION, LIBCURL_VERSION,
                 lua);
    return agent;
}

/* The headers a transport writes itself, from the request and for the
 * connection it uses: a caller's copy would contradict them (a kept-alive
 * connection desynchronised by "Content-Length: 0" before a 7-byte body).
 * Returns the canonical name of name when it is one of them, else NULL. */
static const char *framing_header(const char *name, size_t len)
{
    static const char *const names[] = {
        "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "TE", "Trailer",
        "Upgrade", "Expect", "Proxy-Connection", "Host",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
            return names[i];
    return NULL;
}

/* The call's Idempotency-Key (spec.idempotency_key, given apart so that a
 * client's header table serves every call unchanged): it replaces a header
 * of that name in any case, else comes last. */
static void set_idempotency_key(lua_State *L, int spec, header *h, int *n)
{
    size_t len;
    const char *key = get_string_field(L, spec, "idempotency_key", &len, 0);
    if (key == NULL)
        return;
    if (len == 0 || !truto_is_field_value(key, len))
        luaL_error(L, "truto: header Idempotency-Key: value contains CR, LF, NUL or another control character");
    int k;
    for (k = 0; k < *n; k++)
        if (h[k].namelen == 15 && strncasecmp(h[k].name, "Idempotency-Key", 15) == 0)
            break;
    if (k == *n) {
        if (*n == MAX_HEADERS)
            luaL_error(L, "truto: more than %d headers", MAX_HEADERS);
        (*n)++;
    }
    h[k].name = "Idempotency-Key";
    h[k].namelen = 15;
    h[k].value = key;
    h[k].valuelen = len;
}

/* Defaults first, in a fixed order; a caller's header of the same name
 * (any case) replaces the default's value, or removes it when false; the
 * caller's other headers follow, sorted.  A framing header (above) raises,
 * unless it is false: there is no default of that name to remove. */
static int collect_headers(lua_State *L, int spec, truto_encoder *e, header *h, int has_body)
{
    int n = 0;
    size_t tokenlen;
    const char *token = get_string_field(L, spec, "token", &tokenlen, 0);

    add_header(h, &n, "Accept", "application/json");
    if (token != NULL) {
        /* The message never repeats the token. */
        if (tokenlen == 0 || !truto_is_field_value(token, tokenlen) || memchr(token, ' ', tokenlen))
            luaL_error(L, "truto: the API token is empty or contains spaces or control characters");
        lua_pushfstring(L, "Bearer %s", token);
        add_header(h, &n, "Authorization", lua_tostring(L, -1));
    }
    if (has_body)
        add_header(h, &n, "Content-Type", "application/json");
    add_header(h, &n, "User-Agent", user_agent());

    lua_getfield(L, spec, "headers");
    int t = lua_gettop(L);
    if (lua_isnil(L, t)) {
        set_idempotency_key(L, spec, h, &n);
        return n;
    }
    if (lua_type(L, t) != LUA_TTABLE)
        luaL_error(L, "truto: headers must be a table, got %s", luaL_typename(L, t));
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "truto: header names must be strings");
        int vt = lua_type(L, -1);
        if (vt != LUA_TSTRING && vt != LUA_TNUMBER && !(vt == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
            luaL_error(L, "truto: header %s: value must be a string, a number or false",
                       truto_is_token(lua_tostring(L, -2), lua_rawlen(L, -2)) ? lua_tostring(L, -2) : "?");
        lua_pop(L, 1);
    }
    size_t first = truto_sorted_keys(L, e, t);
    for (size_t i = first; i < e->nkeys; i++) {
        const char *name = e->keys[i].str;
        size_t namelen = e->keys[i].len;
        if (!truto_is_token(name, namelen))
            luaL_error(L, "truto: header name %s is not a valid HTTP token",
                       is_printable(name, namelen) ? name : "(with control or non-ASCII characters)");
        const char *framing = framing_header(name, namelen);
        /* Each value stays on the stack until the lines are written; a
         * number is converted in this copy, never in the caller's table. */
        if (!lua_checkstack(L, 2))
            luaL_error(L, "truto: too many headers");
        lua_pushlstring(L, name, namelen);
        lua_rawget(L, t);
        size_t valuelen = 0;
        const char *value = NULL;
        if (lua_type(L, -1) != LUA_TBOOLEAN) {
            if (framing != NULL)
                luaL_error(L, "truto: headers: %s is set by the library (it frames the request "
                              "or manages the connection), so it cannot be given", framing);
            value = lua_tolstring(L, -1, &valuelen);
            if (!truto_is_field_value(value, valuelen))
                luaL_error(L, "truto: header %s: value contains CR, LF, NUL or another control character",
                           name);
        }
        int k;
        for (k = 0; k < n; k++)
            if (h[k].namelen == namelen && strncasecmp(h[k].name, name, namelen) == 0)
                break;
        if (value == NULL) {            /* false: drop the default */
            if (k < n)
                memmove(&h[k], &h[k + 1], (size_t)(--n - k) * sizeof *h);
            continue;
        }
        if (k == n) {
            if (n == MAX_HEADERS)
                luaL_error(L, "truto: more than %d headers", MAX_HEADERS);
            n++;
        }
        h[k].name = name;
        h[k].namelen = namelen;
        h[k].value = value;
        h[k].valuelen = valuelen;
    }
    e->nkeys = first;
    set_idempotency_key(L, spec, h, &n);
    return n;
}

static int l_build_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    truto_encoder *e = truto_encoder_new(L, "query");   /* stack 2 */
    header h[MAX_HEADERS];
    size_t len;

    const char *method = get_string_field(L, 1, "method", &len, 1);
    if (!truto_is_token(method, len))
        luaL_error(L, "truto: method must be an HTTP token such as GET or PATCH");
    size_t baselen;
    const char *base = get_string_field(L, 1, "base_url", &baselen, 1);

    lua_createtable(L, 0, 4);   /* stack 3: the result: url, body, method, headers */
    truto_bytes *out = &e->out;
    add_base_url(L, out, base, baselen);
    add_path(L, out, 1);
    lua_getfield(L, 1, "query");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TTABLE)
            luaL_error(L, "truto: query must be a table, got %s", luaL_typename(L, -1));
        size_t before = out->len;
        truto_bytes_addc(L, out, '?');
        truto_query_encode(L, e, -1);
        if (e->pairs == 0)
            out->len = before;          /* no parameters: no '?' */
    }
    lua_pop(L, 1);
    truto_bytes_push(L, out);
    lua_setfield(L, 3, "url");
    out->len = 0;

    lua_getfield(L, 1, "body");
    int has_body = !lua_isnil(L, -1);
    if (has_body) {
        int body = lua_gettop(L);
        e->root = "body";
        lua_getfield(L, 1, "list_fields");
        int list_fields = lua_type(L, -1) == LUA_TTABLE ? lua_gettop(L) : 0;
        truto_json_encode(L, e, body, list_fields);
        /* A large body keeps the buffer it was written in: a string would
         * be a second copy while the buffer still holds the first. */
        if (out->len > TRUTO_BODY_THRESHOLD)
            truto_body_push(L, out);
        else
            truto_bytes_push(L, out);
        lua_setfield(L, 3, "body");
        out->len = 0;
    }

    lua_pushstring(L, method);
    lua_setfield(L, 3, "method");
    int n = collect_headers(L, 1, e, h, has_body);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        truto_bytes_add(L, out, h[i].name, h[i].namelen);
        truto_bytes_addlit(L, out, ": ");
        truto_bytes_add(L, out, h[i].value, h[i].valuelen);
        truto_bytes_push(L, out);
        lua_rawseti(L, -2, i + 1);
        out->len = 0;
    }
    lua_setfield(L, 3, "headers");
    truto_encoder_done(e);
    lua_settop(L, 3);
    return 1;
}

void truto_open_request(lua_State *L)
{
    lua_pushcfunction(L, l_build_request);
    lua_setfield(L, -2, "build_request");
}

/*
 * truto.tls: a TLS client over memory BIOs, for the hosts whose sockets only
 * move bytes (luv, Neovim's vim.loop; any host whose driver lacks TLS).  The
 * engine never touches a socket: the Lua driver feeds it the ciphertext its
 * socket received, sends what it has to send, and yields to its host's loop
 * while it waits (lua/truto/cosocket.lua, `tls`).
 *
 *   local tls = require "truto.tls"
 *   local ctx = tls.context { ca_file =, ca_path = }    -- or nil, err
 *   local c = tls.client(ctx, { host = NAME_OR_IP, verify = true })
 *   c:handshake()      -> true | nil, "want_read" | nil, reason
 *   c:write(plain)     -> bytes | nil, "want_read" | nil, reason
 *   c:read(max)        -> plain | nil, "want_read" | nil, "closed" | nil, reason
 *   c:feed(cipher)     -> true | nil, reason   (what the socket received)
 *   c:pending_output() -> cipher ("" when none: what to send)
 *   c:buffered()       -> bytes received and not yet read
 *   c:close(), ctx:close()                      -- also __gc and __close
 *
 * A DNS name is sent as SNI and checked against the certificate's names; an
 * IP address is checked against its IP addresses, no SNI (RFC 6066).  The
 * reason of a failed verification is OpenSSL's ("certificate has expired",
 * "hostname mismatch", ...).  Every call starts from an empty OpenSSL error
 * queue and leaves it empty: the queue is per thread, shared with whatever
 * else in the process uses OpenSSL.
 *
 * It is a C module of its own, linked with libssl: only a yielding host's
 * first https:// connection loads it, so `require "truto"` maps no libssl.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "truto.h"

#define CONTEXT_MT "truto.TLSContext"
#define CONNECTION_MT "truto.TLSConnection"

/* Ciphertext received and not yet decrypted, at most: a driver feeds what
 * one read brought when the engine wants more, so a correct one holds less
 * than a record (16 KiB) plus one read. */
#define MAX_INPUT_BYTES (256 * 1024)

/* The most plaintext one read returns, and the piece it reads at a time
 * (a record's most). */
#define MAX_READ_BYTES (1024 * 1024)
#define READ_PIECE_BYTES (16 * 1024)

typedef struct {
    SSL_CTX *ctx;
    int closed;
} tls_context;

typedef struct {
    SSL *ssl;
    BIO *in, *out;      /* owned by ssl */
    int closed;
} tls_connection;

/* ---- errors ----------------------------------------------------------- */

/* nil, reason: the first reason in OpenSSL's queue (the cause; emptied),
 * or fallback. */
static int push_openssl_error(lua_State *L, const char *fallback)
{
    unsigned long code = ERR_peek_error();
    const char *reason = code == 0 ? NULL
        : ERR_SYSTEM_ERROR(code) ? strerror(ERR_GET_REASON(code)) : ERR_reason_error_string(code);
    lua_pushnil(L);
    lua_pushstring(L, reason != NULL ? reason : fallback);
    ERR_clear_error();
    return 2;
}

/* The outcome of an SSL call that returned failure: nil, "want_read", nil,
 * "closed" or nil, the reason (a failed verification's first). */
static int push_ssl_failure(lua_State *L, tls_connection *c, int ret)
{
    switch (SSL_get_error(c->ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        ERR_clear_error();
        lua_pushnil(L);
        lua_pushliteral(L, "want_read");
        return 2;
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        lua_pushnil(L);
        lua_pushliteral(L, "want_write");
        return 2;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    default: {
        long verified = SSL_get_verify_result(c->ssl);
        if (verified != X509_V_OK && SSL_get_verify_mode(c->ssl) != SSL_VERIFY_NONE) {
            ERR_clear_error();
            lua_pushnil(L);
            lua_pushstring(L, X509_verify_cert_error_string(verified));
            return 2;
        }
        return push_openssl_error(L, "the TLS connection failed");
    }
    }
}

/* ---- options ---------------------------------------------------------- */

/* The string field name of the table at idx, or NULL when absent. */
static const char *opt_string(lua_State *L, int idx, const char *name, const char *what)
{
    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    size_t len;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "truto.tls: %s option '%s' must be a string, got %s", what, name, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, &len);
    if (len == 0 || strlen(s) != len)
        luaL_error(L, "truto.tls: %s option '%s' must be a non-empty string without NUL bytes", what, name);
    lua_pop(L, 1);          /* still referenced by the options table */
    return s;
}

/* Raises unless every key of the table at idx is one of names. */
static void check_keys(lua_State *L, int idx, const char *const *names, const char *what)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int known = 0;
        for (int i = 0; key != NULL && names[i] != NULL; i++)
            known |= strcmp(key, names[i]) == 0;
        if (!known)
            luaL_error(L, "truto.tls: unknown %s option %s", what,
                       key ? lua_pushfstring(L, "'%s'", key) : luaL_typename(L, -1));
    }
}

/* ---- contexts ----------------------------------------------------------- */

static int context_cleanup(lua_State *L)
{
    tls_context *t = (tls_context *)luaL_checkudata(L, 1, CONTEXT_MT);
    if (t->ctx != NULL) {
        SSL_CTX_free(t->ctx);
        t->ctx = NULL;
    }
    t->closed = 1;
    return 0;
}

static int context_tostring(lua_State *L)
{
    tls_context *t = (tls_context *)luaL_checkudata(L, 1, CONTEXT_MT);
    return truto_push_handle_name(L, CONTEXT_MT, t->closed);
}

/* tls.context{ ca_file =, ca_path = }: the CAs to trust (the system's when
 * neither is given), TLS 1.2 at least, ALPN http/1.1. */
static int l_context(lua_State *L)
{
    static const char *const names[] = { "ca_file", "ca_path", NULL };
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    lua_settop(L, 1);
    check_keys(L, 1, names, "context");
    const char *ca_file = opt_string(L, 1, "ca_file", "context");
    const char *ca_path = opt_string(L, 1, "ca_path", "context");

    tls_context *t = (tls_context *)lua_newuserdata(L, sizeof *t);
    t->ctx = NULL;
    t->closed = 0;
    luaL_getmetatable(L, CONTEXT_MT);
    lua_setmetatable(L, -2);

    ERR_clear_error();
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (t->ctx == NULL)
        return push_openssl_error(L, "cannot make a TLS context");
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    /* Idle pooled connections give their 2 x 16 KiB record buffers back;
     * a retried write may come from another copy of the same string. */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = "\x08http/1.1";
    if (SSL_CTX_set_alpn_protos(t->ctx, alpn, sizeof alpn - 1) != 0)
        return push_openssl_error(L, "cannot set ALPN");
    int loaded = ca_file != NULL || ca_path != NULL
        ? SSL_CTX_load_verify_locations(t->ctx, ca_file, ca_path)
        : SSL_CTX_set_default_verify_paths(t->ctx);
    if (loaded != 1) {
        push_openssl_error(L, "no certificate found");
        lua_pushfstring(L, "cannot load the CA certificates of %s: %s",
                        ca_file ? ca_file : ca_path ? ca_path : "the system", lua_tostring(L, -1));
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

/* ---- connections -------------------------------------------------------- */

static int connection_cleanup(lua_State *L)
{
    tls_connection *c = (tls_connection *)luaL_checkudata(L, 1, CONNECTION_MT);
    if (c->ssl != NULL) {
        SSL_free(c->ssl);       /* frees the BIOs too */
        c->ssl = NULL;
        c->in = c->out = NULL;
    }
    c->closed = 1;
    return 0;
}

static int connection_tostring(lua_State *L)
{
    tls_connection *c = (tls_connection *)luaL_checkudata(L, 1, CONNECTION_MT);
    return truto_push_handle_name(L, CONNECTION_MT, c->closed);
}

static tls_connection *check_connection(lua_State *L)
{
    tls_connection *c = (tls_connection *)luaL_checkudata(L, 1, CONNECTION_MT);
    if (c->closed)
        luaL_error(L, "truto.tls: the connection is closed");
    return c;
}

static int is_address(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

/* tls.client(ctx, { host = NAME_OR_IP, verify = true }): a connection
 * about to send its ClientHello. */
static int l_client(lua_State *L)
{
    static const char *const names[] = { "host", "verify", NULL };
    tls_context *t = (tls_context *)luaL_checkudata(L, 1, CONTEXT_MT);
    if (t->closed)
        return luaL_error(L, "truto.tls: the context is closed");
    lua_settop(L, 2);
    check_keys(L, 2, names, "client");
    const char *host = opt_string(L, 2, "host", "client");
    if (host == NULL)
        return luaL_error(L, "truto.tls: client option 'host' is required (a DNS name or an IP address)");
    lua_getfield(L, 2, "verify");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        return luaL_error(L, "truto.tls: client option 'verify' must be a boolean, got %s", luaL_typename(L, -1));
    int verify = lua_isnil(L, -1) || lua_toboolean(L, -1);
    lua_pop(L, 1);

    tls_connection *c = (tls_connection *)lua_newuserdata(L, sizeof *c);
    c->ssl = NULL;
    c->in = c->out = NULL;
    c->closed = 0;
    luaL_getmetatable(L, CONNECTION_MT);
    lua_setmetatable(L, -2);

    ERR_clear_error();
    c->ssl = SSL_new(t->ctx);
    if (c->ssl == NULL)
        return push_openssl_error(L, "cannot make a TLS connection");
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    if (in == NULL || out == NULL) {
        BIO_free(in);
        BIO_free(out);
        return push_openssl_error(L, "cannot make a TLS connection's buffers");
    }
    /* An empty input is "wait for more", not the end of the stream. */
    BIO_set_mem_eof_return(in, -1);
    SSL_set_bio(c->ssl, in, out);
    c->in = in;
    c->out = out;
    SSL_set_connect_state(c->ssl);

    if (is_address(host)) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1)
            return push_openssl_error(L, "cannot check the IP address");
    } else {
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set_tlsext_host_name(c->ssl, host) != 1 || SSL_set1_host(c->ssl, host) != 1)
            return push_openssl_error(L, "cannot check the host name");
    }
    if (!verify)
        SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    return 1;
}

static int l_handshake(lua_State *L)
{
    tls_connection *c = check_connection(L);
    ERR_clear_error();
    int ret = SSL_do_handshake(c->ssl);
    if (ret == 1) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return push_ssl_failure(L, c, ret);
}

static int l_feed(lua_State *L)
{
    tls_connection *c = check_connection(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (len == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (BIO_ctrl_pending(c->in) + len > MAX_INPUT_BYTES) {
        lua_pushnil(L);
        lua_pushfstring(L, "more than %d bytes of TLS records received and not read", MAX_INPUT_BYTES);
        return 2;
    }
    ERR_clear_error();
    if (BIO_write(c->in, data, (int)len) != (int)len)
        return push_openssl_error(L, "cannot hold the received bytes");
    lua_pushboolean(L, 1);
    return 1;
}

static int l_pending_output(lua_State *L)
{
    tls_connection *c = check_connection(L);
    char *data;
    long len = BIO_get_mem_data(c->out, &data);
    lua_pushlstring(L, len > 0 ? data : "", len > 0 ? (size_t)len : 0);
    /* Emptied only once the string holds it: a raise above loses nothing. */
    (void)BIO_reset(c->out);
    return 1;
}

static int l_write(lua_State *L)
{
    tls_connection *c = check_connection(L);
    size_t len, written = 0;
    const char *data = luaL_checklstring(L, 2, &len);
    if (len == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    ERR_clear_error();
    int ret = SSL_write_ex(c->ssl, data, len, &written);
    if (ret == 1) {
        lua_pushinteger(L, (lua_Integer)written);
        return 1;
    }
    return push_ssl_failure(L, c, ret);
}

static int l_read(lua_State *L)
{
    tls_connection *c = check_connection(L);
    lua_Integer max = luaL_checkinteger(L, 2);
    luaL_argcheck(L, max >= 1 && max <= MAX_READ_BYTES, 2, "must be from 1 to 1048576 bytes");
    size_t total = 0;
    int ret = 1;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    ERR_clear_error();
    while (total < (size_t)max) {
        size_t want = (size_t)max - total, got = 0;
#if LUA_VERSION_NUM >= 502
        if (want > READ_PIECE_BYTES)
            want = READ_PIECE_BYTES;
        char *p = luaL_prepbuffsize(&b, want);
#else
        if (want > LUAL_BUFFERSIZE)
            want = LUAL_BUFFERSIZE;
        char *p = luaL_prepbuffer(&b);
#endif
        ret = SSL_read_ex(c->ssl, p, want, &got);
        if (ret != 1)
            break;
        luaL_addsize(&b, got);
        total += got;
    }
    if (total > 0) {
        /* A failure after some bytes comes again at the next read. */
        ERR_clear_error();
        luaL_pushresult(&b);
        return 1;
    }
    luaL_pushresult(&b);
    lua_pop(L, 1);
    return push_ssl_failure(L, c, ret);
}

static int l_buffered(lua_State *L)
{
    tls_connection *c = check_connection(L);
    lua_pushinteger(L, (lua_Integer)(BIO_ctrl_pending(c->in) + (size_t)SSL_pending(c->ssl)));
    return 1;
}

/* ---- the module ------------------------------------------------------- */

TRUTO_API int luaopen_truto_tls(lua_State *L)
{
    static const luaL_Reg context_methods[] = {
        { "close", context_cleanup },
        { NULL, NULL },
    };
    static const luaL_Reg connection_methods[] = {
        { "handshake", l_handshake },
        { "feed", l_feed },
        { "pending_output", l_pending_output },
        { "write", l_write },
        { "read", l_read },
        { "buffered", l_buffered },
        { "close", connection_cleanup },
        { NULL, NULL },
    };
    lua_newtable(L);
    truto_open_class(L, CONTEXT_MT, context_methods, context_cleanup, context_tostring, "context", l_context);
    truto_open_class(L, CONNECTION_MT, connection_methods, connection_cleanup, connection_tostring, "client",
                     l_client);
    return 1;
}

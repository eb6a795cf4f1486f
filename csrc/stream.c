/*
 * A raw TCP stream over libcurl (truto.Stream): libcurl resolves the name
 * and connects (CURLOPT_CONNECT_ONLY), then bytes move with curl_easy_send
 * and curl_easy_recv, waiting in poll() on the connection's socket, never
 * past the deadline each operation is given.  It is the socket under the
 * libcurl transport's env.tcp() (lua/truto/curl.lua, through
 * truto.cosocket), on which TLS (truto.tls) and protocols (HTTP/1.1,
 * Redis) run in Lua.
 *
 *   local st = curl_core.stream()
 *   st:connect(host, port, seconds)   -- true | nil, err ("timeout" or libcurl's reason)
 *   st:send(data, seconds)            -- true | nil, err ("timeout", "closed" or a reason)
 *   st:receive(max, seconds)          -- up to max bytes as soon as any arrive | nil, err
 *   st:usable()                       -- connected, nothing arrived, not hung up
 *   st:close()
 *
 * A stream connects directly, never through a proxy (CURLOPT_PROXY "",
 * which also ignores the *_proxy environment variables): its peer is a
 * server the client talks to in its own protocol, not an HTTP request a
 * proxy could forward.
 *
 * Memory rules: the easy handle and the error buffer hang off the
 * userdata, released by the one cleanup shared by close, __gc and
 * __close; what is read goes into a luaL_Buffer.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <string.h>

#include <curl/curl.h>

#include "truto.h"

#define STREAM_MT "truto.Stream"
/* The most one receive reads (the engines ask 64 KiB at a time). */
#define RECEIVE_BYTES ((size_t)64 * 1024)
/* Waits are given in seconds; libcurl's connect timeout is a long of ms. */
#define MAX_SECONDS 2147483.0

typedef struct {
    CURL *easy;                     /* NULL once closed */
    curl_socket_t fd;               /* CURL_SOCKET_BAD until connected */
    int closed;
    char errbuf[CURL_ERROR_SIZE];   /* libcurl's reason for the last failure */
} stream;

/* ---- lifetime ------------------------------------------------------------ */

static stream *check_stream(lua_State *L)
{
    return (stream *)luaL_checkudata(L, 1, STREAM_MT);
}

/* close, __gc and __close: idempotent, safe on a half-built stream. */
static int stream_cleanup(lua_State *L)
{
    stream *st = check_stream(L);
    if (st->easy != NULL) {
        curl_easy_cleanup(st->easy);    /* closes the connection */
        st->easy = NULL;
    }
    st->fd = CURL_SOCKET_BAD;
    st->closed = 1;
    return 0;
}

static int stream_tostring(lua_State *L)
{
    return truto_push_handle_name(L, STREAM_MT, check_stream(L)->closed);
}

static int l_stream(lua_State *L)
{
    stream *st = (stream *)lua_newuserdata(L, sizeof *st);
    memset(st, 0, sizeof *st);
    st->fd = CURL_SOCKET_BAD;
    luaL_getmetatable(L, STREAM_MT);
    lua_setmetatable(L, -2);
    truto_curl_global_init(L);
    st->easy = curl_easy_init();
    if (st->easy == NULL)
        return luaL_error(L, "truto: curl_easy_init failed");
    return 1;
}

/* ---- arguments and failures ------------------------------------------------- */

/* A wait of zero or more seconds, as milliseconds (rounded up). */
static double check_wait(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "truto: %s must be a number of seconds, got %s", what, luaL_typename(L, idx));
    double v = (double)lua_tonumber(L, idx);
    if (!(v >= 0) || !(v <= MAX_SECONDS))   /* NaN fails both */
        luaL_error(L, "truto: %s must be a number of seconds from 0 to %d", what, (int)MAX_SECONDS);
    return ceil(v * 1000.0);
}

/* An integer from min to max, or raises "<what> must be <range>". */
static lua_Number check_count(lua_State *L, int idx, const char *what, lua_Number min, lua_Number max,
                              const char *range)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "truto: %s must be %s, got %s", what, range, luaL_typename(L, idx));
    lua_Number v = lua_tonumber(L, idx);
    if (!(v >= min && v <= max) || v != floor(v))
        luaL_error(L, "truto: %s must be %s", what, range);
    return v;
}

/* nil, err */
static int push_failure(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* libcurl's reason for rc: its error buffer (without a line end), else its
 * generic text. */
static int push_reason(lua_State *L, stream *st, CURLcode rc)
{
    size_t n = strlen(st->errbuf);
    while (n > 0 && (st->errbuf[n - 1] == '\n' || st->errbuf[n - 1] == '\r'))
        n--;
    lua_pushnil(L);
    if (n > 0)
        lua_pushlstring(L, st->errbuf, n);
    else
        lua_pushstring(L, curl_easy_strerror(rc));
    return 2;
}

/* A failed connect: libcurl's reason, and the system's for a connection
 * that failed (libcurl 7.88 says "Couldn't connect to server" of a refusal). */
static int push_connect_failure(lua_State *L, stream *st, CURLcode rc)
{
    long os_errno = 0;
    push_reason(L, st, rc);
    if (rc == CURLE_COULDNT_CONNECT && curl_easy_getinfo(st->easy, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK &&
        os_errno != 0) {
        lua_pushfstring(L, "%s (%s)", lua_tostring(L, -1), strerror((int)os_errno));
        lua_remove(L, -2);
    }
    return 2;
}

/* A failed curl_easy_send or curl_easy_recv: "closed" when the peer closed
 * or reset the connection, else libcurl's reason. */
static int push_io_failure(lua_State *L, stream *st, CURLcode rc)
{
    long os_errno = 0;
    curl_easy_getinfo(st->easy, CURLINFO_OS_ERRNO, &os_errno);
    if (os_errno == EPIPE || os_errno == ECONNRESET)
        return push_failure(L, "closed");
    return push_reason(L, st, rc);
}

/* Waits until the socket is ready for events (or has an error or hung up),
 * until the deadline at most: 1 ready, 0 timed out, -1 poll failed. */
static int wait_ready(curl_socket_t fd, short events, double deadline)
{
    for (;;) {
        double ms = ceil((deadline - truto_monotonic_seconds()) * 1000.0);
        if (ms <= 0)
            return 0;
        struct pollfd p = { .fd = fd, .events = events, .revents = 0 };
        int n = poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* nil, "timeout" or nil, poll's reason, for wait_ready's result. */
static int push_wait_failure(lua_State *L, int waited)
{
    return push_failure(L, waited == 0 ? "timeout" : strerror(errno));
}

/* ---- st:connect(host, port, seconds) ------------------------------------------ */

/* host: a DNS name or an IP address (an IPv6 one in brackets or not); pushes
 * the URL libcurl connects to. */
static void push_url(lua_State *L, int idx, lua_Integer port)
{
    size_t len;
    const char *host = luaL_checklstring(L, idx, &len);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    int ipv6 = 0;
    for (size_t i = 0; i < len; i++) {
        char c = host[i];
        if (c == ':')
            ipv6 = 1;
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '.' || c == '-' || c == '_'))
            len = 0;
    }
    if (len == 0 || len > 253)
        luaL_error(L, "truto: stream host must be a DNS name or an IP address");
    lua_pushlstring(L, host, len);
    lua_pushfstring(L, ipv6 ? "http://[%s]:%d/" : "http://%s:%d/", lua_tostring(L, -1), (int)port);
    lua_remove(L, -2);
}

#define SETOPT(opt, val)                                       \
    do {                                                       \
        if (rc == CURLE_OK)                                    \
            rc = curl_easy_setopt(st->easy, (opt), (val));     \
    } while (0)

static int l_connect(lua_State *L)
{
    stream *st = check_stream(L);
    lua_Integer port = (lua_Integer)check_count(L, 3, "stream port", 1, 65535, "an integer from 1 to 65535");
    double ms = check_wait(L, 4, "stream connect seconds");
    push_url(L, 2, port);
    /* After the allocations: a finalizer may have closed the stream. */
    if (st->closed)
        return luaL_error(L, "truto: stream is closed");
    if (st->fd != CURL_SOCKET_BAD)
        return luaL_error(L, "truto: stream is already connected");
    CURLcode rc = CURLE_OK;
    st->errbuf[0] = '\0';
    SETOPT(CURLOPT_ERRORBUFFER, st->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_CONNECT_ONLY, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
    SETOPT(CURLOPT_URL, lua_tostring(L, -1));
    SETOPT(CURLOPT_PROXY, "");
    SETOPT(CURLOPT_TCP_NODELAY, 1L);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    /* 0 would be libcurl's default (300 s): at least 1 ms. */
    SETOPT(CURLOPT_CONNECTTIMEOUT_MS, ms < 1 ? 1L : (long)ms);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(st->easy);
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return push_failure(L, "timeout");
    if (rc != CURLE_OK)
        return push_connect_failure(L, st, rc);
    curl_socket_t fd = CURL_SOCKET_BAD;
    rc = curl_easy_getinfo(st->easy, CURLINFO_ACTIVESOCKET, &fd);
    if (rc != CURLE_OK || fd == CURL_SOCKET_BAD)
        return push_reason(L, st, rc != CURLE_OK ? rc : CURLE_COULDNT_CONNECT);
    st->fd = fd;
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- st:send(data, seconds) ------------------------------------------------ */

/* All of data, or nil, err: a send that stops part way reports why, as
 * the connection then carries a partial message. */
static int l_send(lua_State *L)
{
    stream *st = check_stream(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    double deadline = truto_monotonic_seconds() + check_wait(L, 3, "stream send seconds") / 1000.0;
    if (st->fd == CURL_SOCKET_BAD)
        return push_failure(L, "closed");
    size_t sent = 0;
    while (sent < len) {
        size_t n = 0;
        st->errbuf[0] = '\0';
        CURLcode rc = curl_easy_send(st->easy, data + sent, len - sent, &n);
        if (rc == CURLE_AGAIN) {
            int waited = wait_ready(st->fd, POLLOUT, deadline);
            if (waited <= 0)
                return push_wait_failure(L, waited);
        } else if (rc != CURLE_OK) {
            return push_io_failure(L, st, rc);
        }
        sent += n;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- st:receive(max, seconds) ------------------------------------------------- */

static int l_receive(lua_State *L)
{
    stream *st = check_stream(L);
    size_t max = (size_t)check_count(L, 2, "stream receive max", 1, 9007199254740992.0,
                                           "a positive integer");
    double deadline = truto_monotonic_seconds() + check_wait(L, 3, "stream receive seconds") / 1000.0;
    if (max > RECEIVE_BYTES)
        max = RECEIVE_BYTES;
    if (max > TRUTO_PREPBUFF_MAX)
        max = TRUTO_PREPBUFF_MAX;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char *p = truto_prepbuffsize(&b, max);
    /* After the allocation: a finalizer may have closed the stream. */
    if (st->fd == CURL_SOCKET_BAD)
        return push_failure(L, "closed");
    for (;;) {
        size_t n = 0;
        st->errbuf[0] = '\0';
        CURLcode rc = curl_easy_recv(st->easy, p, max, &n);
        if (rc == CURLE_OK) {
            if (n == 0)
                return push_failure(L, "closed");
            luaL_addsize(&b, n);
            luaL_pushresult(&b);
            return 1;
        }
        if (rc != CURLE_AGAIN)
            return push_io_failure(L, st, rc);
        int waited = wait_ready(st->fd, POLLIN, deadline);
        if (waited <= 0)
            return push_wait_failure(L, waited);
    }
}

/* ---- st:usable() --------------------------------------------------------------- */

/* Connected, and idle as it should be: nothing to read (a byte or the
 * peer's close), no error, not hung up. */
static int l_usable(lua_State *L)
{
    stream *st = check_stream(L);
    int usable = 0;
    if (st->fd != CURL_SOCKET_BAD) {
        struct pollfd p = { .fd = st->fd, .events = POLLIN, .revents = 0 };
        int n;
        do
            n = poll(&p, 1, 0);
        while (n < 0 && errno == EINTR);
        usable = n == 0;
    }
    lua_pushboolean(L, usable);
    return 1;
}

void truto_open_stream(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"connect", l_connect},
        {"send", l_send},
        {"receive", l_receive},
        {"usable", l_usable},
        {"close", stream_cleanup},
        {NULL, NULL},
    };
    truto_open_class(L, STREAM_MT, methods, stream_cleanup, stream_tostring, "stream", l_stream);
}

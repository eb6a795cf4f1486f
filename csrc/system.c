/*
 * What the client needs from the operating system: a monotonic clock for
 * deadlines, a sleep for retry back-off outside nginx, random bytes for
 * idempotency keys, whether a stream is a terminal (the truto command
 * draws progress only on one), and what a file to upload is.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/stat.h>

#include <sys/random.h>

#include "truto.h"

/* core.now() -> seconds on a monotonic clock (float). */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.sleep(seconds): blocks the thread; the client uses ngx.sleep instead
 * inside nginx. */
static int l_sleep(lua_State *L)
{
    lua_Number secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0 && secs < 1e9, 1, "must be a number of seconds >= 0");
    struct timespec ts;
    ts.tv_sec = (time_t)secs;
    ts.tv_nsec = (long)((secs - (lua_Number)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* Random bytes are drawn from the kernel's CSPRNG (getrandom(2)) a pool at a
 * time: one call per 4 KiB rather than one per idempotency key.  Each byte
 * is served once. */
static unsigned char pool[4096];
static size_t pool_left;
static pid_t pool_pid;      /* a forked child (an nginx worker) refills its own */

/* n bytes from getrandom(2), or from /dev/urandom where a kernel or a
 * seccomp filter refuses the call (ENOSYS, EPERM). */
static int fill(unsigned char *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
        } else if (r < 0 && errno != EINTR) {
            FILE *f = fopen("/dev/urandom", "rb");
            if (f == NULL)
                return 0;
            size_t read = fread(buf + got, 1, n - got, f);
            fclose(f);
            return read == n - got;
        }
    }
    return 1;
}

static int random_bytes(unsigned char *out, size_t n)
{
    if (pool_left < n || pool_pid != getpid()) {
        pool_pid = getpid();
        if (!fill(pool, sizeof pool))
            return 0;
        pool_left = sizeof pool;
    }
    pool_left -= n;
    memcpy(out, pool + pool_left, n);
    memset(pool + pool_left, 0, n);
    return 1;
}

/* core.random_hex(nbytes) -> 2*nbytes lowercase hex digits from a CSPRNG. */
static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= 64, 1, "must be between 1 and 64");
    unsigned char bytes[64];
    char hex[129];
    if (!random_bytes(bytes, (size_t)n))
        return luaL_error(L, "truto: no random bytes available");
    for (lua_Integer i = 0; i < n; i++) {
        hex[2 * i] = "0123456789abcdef"[bytes[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[bytes[i] & 15];
    }
    lua_pushlstring(L, hex, (size_t)(2 * n));
    return 1;
}

/* core.checksum(text) -> 16 lowercase hex digits: the 64-bit FNV-1a hash
 * of text.  It tells texts apart (a batch journal's list of requests), it
 * is no digest an adversary cannot forge. */
static int l_checksum(lua_State *L)
{
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    unsigned long long h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    char hex[16];
    for (int i = 15; i >= 0; i--, h >>= 4)
        hex[i] = "0123456789abcdef"[h & 15];
    lua_pushlstring(L, hex, sizeof hex);
    return 1;
}

/* The FILE of an open Lua file handle at arg; raises for anything else. */
static FILE *check_open_file(lua_State *L, int arg)
{
    FILE *f = truto_file_handle(L, arg);
    if (f == NULL)
        luaL_argerror(L, arg, "attempt to use a closed file");
    return f;
}

/* core.isatty(file | fd) -> true when it is a terminal, false when not; nil
 * and the error when the descriptor is not open (e.g. `2>&-`). */
static int l_isatty(lua_State *L)
{
    int fd;
    if (lua_type(L, 1) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 1);
        luaL_argcheck(L, n >= 0 && n <= INT_MAX, 1, "must be a file descriptor (0 or more)");
        fd = (int)n;
    } else {
        fd = fileno(check_open_file(L, 1));
    }
    if (isatty(fd)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (errno == EBADF) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 0);
    return 1;
}

/* What kind of file st describes, for a message ("... is a FIFO"). */
static const char *file_type(const struct stat *st)
{
    if (S_ISREG(st->st_mode))
        return "regular file";
    if (S_ISDIR(st->st_mode))
        return "directory";
    if (S_ISFIFO(st->st_mode))
        return "FIFO";
    if (S_ISCHR(st->st_mode))
        return "character device";
    if (S_ISBLK(st->st_mode))
        return "block device";
    if (S_ISSOCK(st->st_mode))
        return "socket";
    return "special file";
}

static int push_file_error(lua_State *L, const char *path)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
}

/* core.file_info(path) -> { regular = bool, size = bytes, type = "regular
 * file" | "directory" | "FIFO" | ... }, or nil, "PATH: strerror" when the
 * path cannot be stat'ed or, a regular file, opened for reading.  Only a
 * regular file is ever opened (opening a FIFO blocks until a writer comes,
 * opening some devices acts on them), without blocking and never to
 * write.  regular: a regular file whose bytes are its size; a file of size
 * 0 that reads bytes (those of /proc and /sys) is not one, its type then
 * "file whose size is not known in advance (as in /proc)". */
static int l_file_info(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    luaL_argcheck(L, len > 0 && memchr(path, '\0', len) == NULL, 1, "must be a non-empty path without NUL");
    struct stat st;
    if (stat(path, &st) != 0)
        return push_file_error(L, path);
    const char *type = file_type(&st);
    int regular = S_ISREG(st.st_mode);
    if (regular) {
        int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
            return push_file_error(L, path);
        char probe;
        if (fstat(fd, &st) != 0) {
            int saved = errno;
            close(fd);
            errno = saved;
            return push_file_error(L, path);
        }
        if (!S_ISREG(st.st_mode)) {
            /* Replaced since the stat: say what it is now. */
            regular = 0;
            type = file_type(&st);
        } else if (st.st_size == 0 && (read(fd, &probe, 1) != 0)) {
            /* -1 (EAGAIN: no bytes yet, as /proc/kmsg) counts too. */
            regular = 0;
            type = "file whose size is not known in advance (as in /proc)";
        }
        close(fd);
    }
    lua_createtable(L, 0, 3);
    lua_pushboolean(L, regular);
    lua_setfield(L, -2, "regular");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
    return 1;
}

void truto_open_system(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"now", l_now},
        {"sleep", l_sleep},
        {"random_hex", l_random_hex},
        {"checksum", l_checksum},
        {"isatty", l_isatty},
        {"file_info", l_file_info},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}

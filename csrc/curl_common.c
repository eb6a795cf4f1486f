/*
 * Pieces shared by the two libcurl front ends, truto.Session (session.c,
 * one transfer at a time) and truto.Multi (multi.c, many at once): global
 * initialisation, byte buffers that never raise, the options both take and
 * the request fields both check, what the libcurl callbacks keep of a reply,
 * the options every transfer gets, the Lua shapes of a reply (header, info
 * and error tables) and the metatable of each.  Everything here is hidden
 * (truto.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>

#include "truto.h"

/* Timeouts are given in seconds and handed to libcurl in milliseconds. */
#define MAX_SECONDS      2147483.0
/* Largest max_response_bytes accepted: 2^53, exact in a double. */
#define MAX_BYTES_OPTION 9007199254740992.0

_Static_assert(TRUTO_ERROR_SIZE >= CURL_ERROR_SIZE, "truto_reply.errbuf is too small");

/* ---- curl_global_init once -------------------------------------------------- */

static int global_ready;

void truto_curl_global_init(lua_State *L)
{
    if (!global_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            luaL_error(L, "truto: curl_global_init failed");
        global_ready = 1;
    }
}

double truto_monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- byte buffers that never raise ------------------------------------ */

/* Appends n bytes, growing geometrically but never past limit (plus one
 * spare byte); returns 0 when memory runs out. */
int truto_buf_append(truto_bytes *b, const char *p, size_t n, size_t limit)
{
    if (n == 0)
        return 1;   /* memcpy to a NULL buffer is undefined even for 0 bytes */
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
static long check_seconds(lua_State *L, int idx, const char *what)
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

static size_t check_bytes(lua_State *L, int idx, const char *what)
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
static void copy_string(lua_State *L, int idx, const char *what, char **slot)
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

/* Raises unless every key of the table at idx is one of names.  With
 * first_slot, the value of names[i] goes to stack slot first_slot + i
 * (which the caller filled with nil): the fields are read in the same walk
 * that checks them. */
static void check_fields(lua_State *L, int idx, const char *const *names, const char *what,
                         int first_slot)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "truto: %s keys must be strings, got %s", what, luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        int i;
        for (i = 0; names[i] != NULL; i++)
            if (key[0] == names[i][0] && strcmp(key, names[i]) == 0)
                break;
        if (names[i] == NULL)
            luaL_error(L, "truto: unknown %s '%s'", what, key);
        if (first_slot != 0)
            lua_replace(L, first_slot + i);
        else
            lua_pop(L, 1);
    }
}

int truto_has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

static int has_control(const char *s, size_t len)
{
    for (size_t i = truto_first_control(s, len); i < len; i += 1 + truto_first_control(s + i + 1, len - i - 1))
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    return 0;
}

/* ---- request fields ---------------------------------------------------------- */

/* The method at idx (nil: "GET"): an HTTP token. */
static const char *check_method(lua_State *L, int idx)
{
    size_t len;
    if (lua_isnil(L, idx))
        return "GET";
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "truto: request method must be a string, got %s", luaL_typename(L, idx));
    const char *method = lua_tolstring(L, idx, &len);
    if (!truto_is_token(method, len))
        luaL_error(L, "truto: request method must be an HTTP token such as GET or PATCH");
    return method;
}

/* The url at idx: http:// or https://, no spaces or control characters. */
static const char *check_url(lua_State *L, int idx)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "truto: request url must be a string, got %s", luaL_typename(L, idx));
    const char *url = lua_tolstring(L, idx, &len);
    if (!truto_has_prefix_ci(url, "http://") && !truto_has_prefix_ci(url, "https://"))
        luaL_error(L, "truto: request url must start with http:// or https://");
    if (truto_first_control(url, len) < len || memchr(url, ' ', len) != NULL)
        luaL_error(L, "truto: request url must not contain spaces or control characters");
    return url;
}

/* The header lines at idx (nil or an array of "Name: value" strings). */
static void check_header_lines(lua_State *L, int idx)
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

/* A multipart form (lua/truto/multipart.lua): { parts = { { lines = { "Name:
 * value", ... }, data = "text" } or { lines = {...}, path = "file", size = n },
 * ... } }.  Raises on any other shape. */
static void check_form(lua_State *L, int idx)
{
    lua_getfield(L, idx, "parts");
    if (!lua_istable(L, -1))
        luaL_error(L, "truto: request body form must have a parts table");
    size_t n = lua_rawlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        if (!lua_istable(L, -1))
            luaL_error(L, "truto: request body part %d must be a table", (int)i);
        lua_getfield(L, -1, "lines");
        check_header_lines(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            luaL_error(L, "truto: request body part %d must have header lines", (int)i);
        lua_getfield(L, -2, "data");
        lua_getfield(L, -3, "path");
        lua_getfield(L, -4, "size");
        size_t len;
        if (lua_type(L, -3) == LUA_TSTRING) {
            if (!lua_isnil(L, -2))
                luaL_error(L, "truto: request body part %d has both data and a path", (int)i);
        } else {
            const char *path = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
            if (path == NULL || len == 0 || memchr(path, '\0', len) != NULL)
                luaL_error(L, "truto: request body part %d must have data or a path without NUL", (int)i);
            double size = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : -1;
            if (!(size >= 0) || size != floor(size) || size > MAX_BYTES_OPTION)
                luaL_error(L, "truto: request body part %d must have the file's size in bytes", (int)i);
        }
        lua_pop(L, 5);
    }
    lua_pop(L, 1);
}

/* The body at idx for r->method: returns whether a payload is sent
 * (possibly empty: POST, PUT and PATCH send Content-Length: 0 without a
 * body); a table is a multipart form (r->form set), a truto.Body bytes held
 * in C (r->held set). */
static int check_body(lua_State *L, int idx, truto_transfer_request *r)
{
    const char *method = r->method;
    r->body = NULL;
    r->body_len = 0;
    if (!lua_isnil(L, idx)) {
        if (lua_type(L, idx) == LUA_TTABLE) {
            check_form(L, idx);
            r->form = 1;
        } else if (lua_type(L, idx) == LUA_TSTRING) {
            r->body = lua_tolstring(L, idx, &r->body_len);
        } else if ((r->held = truto_to_body(L, idx)) != NULL) {
            if (r->held->data == NULL)
                luaL_error(L, "truto: request body is closed");
            r->body = r->held->data;
            r->body_len = r->held->len;
        } else {
            luaL_error(L, "truto: request body must be a string, a truto.Body, a form or nil, got %s",
                       luaL_typename(L, idx));
        }
        if (strcmp(method, "HEAD") == 0)
            luaL_error(L, "truto: a HEAD request cannot have a body");
        return 1;
    }
    if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0) {
        r->body = "";
        return 1;
    }
    return 0;
}

/* Makes the list at *at hold line next: the node there is kept when it
 * already holds it (a session sends the same lines again and again), else
 * it and every node after it are freed and line is appended.  0 on OOM. */
static int keep_or_append(struct curl_slist **list, struct curl_slist ***at, const char *line)
{
    if (**at != NULL) {
        if (strcmp((**at)->data, line) == 0) {
            *at = &(**at)->next;
            return 1;
        }
        curl_slist_free_all(**at);
        **at = NULL;
    }
    struct curl_slist *l = curl_slist_append(*list, line);
    if (l == NULL)
        return 0;
    *list = l;
    *at = &(**at)->next;        /* **at is the node just appended */
    return 1;
}

/* Makes *list the lines at idx (already checked), then "Expect:" (no
 * 100-continue round trip) and, for a body sent without a Content-Type,
 * "Content-Type:" (no form type made up by libcurl).  The nodes of *list
 * that already match are kept: only the lines from the first one that
 * differs are built again.  Never raises: returns 0 when memory runs out,
 * *list then holding a valid prefix. */
int truto_header_list(lua_State *L, int idx, const truto_transfer_request *r, struct curl_slist **list)
{
    int content_type = 0;
    struct curl_slist **at = list;
    if (lua_istable(L, idx)) {
        size_t n = lua_rawlen(L, idx);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            const char *line = lua_tostring(L, -1);
            int is_type = truto_has_prefix_ci(line, "content-type:") ||
                          truto_has_prefix_ci(line, "content-type;");
            content_type |= is_type;
            /* A form's type is libcurl's, with its boundary. */
            int ok = (is_type && r->form) || keep_or_append(list, &at, line);
            lua_pop(L, 1);
            if (!ok)
                return 0;
        }
    }
    if (!keep_or_append(list, &at, "Expect:"))
        return 0;
    if (r->has_body && !r->form && !content_type && !keep_or_append(list, &at, "Content-Type:"))
        return 0;
    curl_slist_free_all(*at);   /* lines the previous list had beyond these */
    *at = NULL;
    return 1;
}

/* ---- multipart forms: libcurl's MIME API over the parts Lua framed --------- */

/* A file part's source, open only while libcurl reads it: opened by the
 * first read, closed once its last byte is read (a body of many files never
 * holds more than one open), opened again by a read after a rewind.  The
 * size is the one the Content-Length was computed with; a file that no
 * longer has it, or is no longer a regular file, fails the transfer. */
typedef struct {
    char *path;
    curl_off_t size, offset;
    int fd;                         /* -1 while closed */
    truto_reply *reply;             /* where a failure is written */
} upload_file;

/* Writes "WHAT: PATH" (and ": strerror(err)" when err is not 0) as the
 * transfer's file error; the first failure stays. */
static void upload_fail(upload_file *u, const char *what, int err)
{
    if (u->reply->file_error[0] == '\0')
        snprintf(u->reply->file_error, sizeof u->reply->file_error, "%s: %s%s%s", what, u->path,
                 err ? ": " : "", err ? strerror(err) : "");
}

static void upload_close(upload_file *u)
{
    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
}

/* O_NONBLOCK: opening a FIFO (put where the file was) must not wait for a
 * writer; the fstat then refuses it. */
static int upload_open(upload_file *u)
{
    struct stat st;
    if (u->fd >= 0)
        return 1;
    u->fd = open(u->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (u->fd < 0) {
        upload_fail(u, "cannot open the file to upload", errno);
        return 0;
    }
    if (fstat(u->fd, &st) != 0) {
        upload_fail(u, "cannot open the file to upload", errno);
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        upload_fail(u, "the file to upload is no longer a regular file", 0);
        return 0;
    }
    if ((curl_off_t)st.st_size != u->size) {
        upload_fail(u, "the file to upload changed size while it was sent", 0);
        return 0;
    }
    return 1;
}

static size_t upload_read(char *buf, size_t size, size_t n, void *arg)
{
    upload_file *u = (upload_file *)arg;
    size_t want = size * n;
    if ((curl_off_t)want > u->size - u->offset)
        want = (size_t)(u->size - u->offset);
    if (want == 0)
        return 0;
    if (!upload_open(u))
        return CURL_READFUNC_ABORT;
    ssize_t got;
    do
        got = pread(u->fd, buf, want, (off_t)u->offset);
    while (got < 0 && errno == EINTR);
    if (got <= 0) {
        upload_fail(u, "the file to upload could not be read to its end", got < 0 ? errno : 0);
        return CURL_READFUNC_ABORT;
    }
    u->offset += (curl_off_t)got;
    if (u->offset == u->size)
        upload_close(u);
    return (size_t)got;
}

/* libcurl rewinds a part to send it again (a retry on a reused connection
 * that died, a redirect): the next read opens the file again if it was
 * closed, and reads from there. */
static int upload_seek(void *arg, curl_off_t offset, int origin)
{
    upload_file *u = (upload_file *)arg;
    if (origin != SEEK_SET || offset < 0 || offset > u->size)
        return CURL_SEEKFUNC_FAIL;
    u->offset = offset;
    return CURL_SEEKFUNC_OK;
}

static void upload_free(void *arg)
{
    upload_file *u = (upload_file *)arg;
    upload_close(u);
    free(u->path);
    free(u);
}

/* One part's source: a copy of its text, or its file. */
static int mime_source(lua_State *L, curl_mimepart *part, int idx, truto_reply *reply)
{
    size_t len;
    lua_getfield(L, idx, "data");
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *data = lua_tolstring(L, -1, &len);
        lua_pop(L, 1);
        return curl_mime_data(part, data, len) == CURLE_OK;
    }
    lua_pop(L, 1);
    lua_getfield(L, idx, "path");
    const char *path = lua_tolstring(L, -1, &len);
    lua_getfield(L, idx, "size");
    curl_off_t size = (curl_off_t)lua_tonumber(L, -1);
    upload_file *u = (upload_file *)calloc(1, sizeof *u);
    char *copy = (char *)malloc(len + 1);
    int ok = u != NULL && copy != NULL;
    if (ok) {
        memcpy(copy, path, len + 1);
        u->path = copy;
        u->size = size;
        u->fd = -1;
        u->reply = reply;
        ok = curl_mime_data_cb(part, size, upload_read, upload_seek, upload_free, u) == CURLE_OK;
    }
    if (!ok) {
        free(copy);
        free(u);
    }
    lua_pop(L, 2);
    return ok;
}

int truto_mime_build(lua_State *L, void *easy, truto_reply *reply, struct curl_mime **mime)
{
    *mime = curl_mime_init((CURL *)easy);
    if (*mime == NULL)
        return 0;
    lua_getfield(L, TRUTO_ARG_BODY, "parts");
    int parts = lua_gettop(L);
    size_t n = lua_rawlen(L, parts);
    int ok = 1;
    for (size_t i = 1; ok && i <= n; i++) {
        lua_rawgeti(L, parts, (int)i);
        int idx = lua_gettop(L);
        curl_mimepart *part = curl_mime_addpart(*mime);
        struct curl_slist *lines = NULL;
        lua_getfield(L, idx, "lines");
        ok = part != NULL;
        for (size_t k = 1; ok && k <= lua_rawlen(L, idx + 1); k++) {
            lua_rawgeti(L, idx + 1, (int)k);
            struct curl_slist *l = curl_slist_append(lines, lua_tostring(L, -1));
            lua_pop(L, 1);
            if (l == NULL)
                ok = 0;
            else
                lines = l;
        }
        /* The part's own header lines: libcurl adds no Content-Disposition
         * or Content-Type of its own when they are there. */
        if (ok && curl_mime_headers(part, lines, 1) == CURLE_OK)
            lines = NULL;
        else
            ok = 0;
        curl_slist_free_all(lines);
        ok = ok && mime_source(L, part, idx, reply);
        lua_settop(L, parts);
    }
    lua_pop(L, 1);
    return ok;
}

/* ---- core.session{...} and core.multi{...}: the options both take ---------- */

void *truto_new_handle(lua_State *L, size_t size, const char *mt)
{
    if (!lua_isnoneornil(L, 1))
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    void *handle = lua_newuserdata(L, size);
    memset(handle, 0, size);
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    return handle;
}

static void options_init(truto_transfer_options *o)
{
    o->timeout_ms = TRUTO_DEFAULT_TIMEOUT_MS;
    o->connect_timeout_ms = TRUTO_DEFAULT_CONNECT_TIMEOUT_MS;
    o->max_bytes = TRUTO_DEFAULT_MAX_RESPONSE_BYTES;
    o->http2 = 1;
}

/* The value at the top of the stack (not nil) for option name: 0 when name
 * is not a transfer option. */
static int read_option(lua_State *L, truto_transfer_options *o, const char *name)
{
    if (strcmp(name, "timeout") == 0)
        o->timeout_ms = check_seconds(L, -1, name);
    else if (strcmp(name, "connect_timeout") == 0)
        o->connect_timeout_ms = check_seconds(L, -1, name);
    else if (strcmp(name, "ca_file") == 0)
        copy_string(L, -1, name, &o->ca_file);
    else if (strcmp(name, "ca_path") == 0)
        copy_string(L, -1, name, &o->ca_path);
    else if (strcmp(name, "proxy") == 0)
        copy_string(L, -1, name, &o->proxy);
    else if (strcmp(name, "insecure") == 0)
        o->insecure = truto_check_boolean(L, -1, name);
    else if (strcmp(name, "http2") == 0)
        o->http2 = truto_check_boolean(L, -1, name);
    else if (strcmp(name, "max_response_bytes") == 0)
        o->max_bytes = check_bytes(L, -1, name);
    else
        return 0;
    return 1;
}

void truto_options_read(lua_State *L, const char *const *fields, const char *what,
                        truto_transfer_options *o, truto_option_reader own, void *handle)
{
    options_init(o);
    if (!lua_istable(L, 1))
        return;
    check_fields(L, 1, fields, what, 0);
    for (int i = 0; fields[i] != NULL; i++) {
        lua_getfield(L, 1, fields[i]);
        if (!lua_isnil(L, -1) && !read_option(L, o, fields[i]))
            own(L, handle, fields[i]);
        lua_pop(L, 1);
    }
}

void truto_options_free(truto_transfer_options *o)
{
    free(o->ca_file);
    free(o->ca_path);
    free(o->proxy);
    o->ca_file = o->ca_path = o->proxy = NULL;
}

/* ---- s:perform{...} and m:add{...}: the request fields both take ------------- */

void truto_check_request(lua_State *L, const char *const *fields,
                         const truto_transfer_options *o, truto_transfer_request *r)
{
    int n = 0;
    luaL_checktype(L, 2, LUA_TTABLE);
    while (fields[n] != NULL)
        n++;
    luaL_checkstack(L, n + 4, "truto: request");
    lua_settop(L, 2 + n);
    check_fields(L, 2, fields, "request field", TRUTO_ARG_METHOD);

    memset(r, 0, sizeof *r);
    r->method = check_method(L, TRUTO_ARG_METHOD);
    r->url = check_url(L, TRUTO_ARG_URL);
    check_header_lines(L, TRUTO_ARG_HEADERS);
    r->has_body = check_body(L, TRUTO_ARG_BODY, r);
    r->timeout_ms = lua_isnil(L, TRUTO_ARG_TIMEOUT) ? o->timeout_ms
                                                    : check_seconds(L, TRUTO_ARG_TIMEOUT, "timeout");
    r->connect_timeout_ms = lua_isnil(L, TRUTO_ARG_CONNECT_TIMEOUT)
                                ? o->connect_timeout_ms
                                : check_seconds(L, TRUTO_ARG_CONNECT_TIMEOUT, "connect_timeout");
    r->max_bytes = lua_isnil(L, TRUTO_ARG_MAX_BYTES)
                       ? o->max_bytes
                       : check_bytes(L, TRUTO_ARG_MAX_BYTES, "max_response_bytes");
}

/* ---- what the libcurl callbacks keep ---------------------------------------- */

void truto_reply_start(truto_reply *r, size_t limit)
{
    r->limit = limit;
    r->received = 0;
    r->too_large = r->head_too_large = r->oom = 0;
    r->final_status = r->head_done = 0;
    r->body.len = r->head.len = 0;
    r->errbuf[0] = '\0';
    r->file_error[0] = '\0';
}

int truto_reply_count(truto_reply *r, size_t n)
{
    if (n > r->limit - r->received) {
        r->too_large = 1;
        return 0;
    }
    r->received += n;
    return 1;
}

size_t truto_reply_body(truto_reply *r, const char *p, size_t n)
{
    if (!truto_reply_count(r, n))
        return 0;
    if (!truto_buf_append(&r->body, p, n, r->limit)) {
        r->oom = 1;
        return 0;
    }
    return n;
}

size_t truto_reply_header(truto_reply *r, const char *p, size_t n)
{
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* "HTTP/1.1 1xx": an interim answer, whose block is not the last. */
        const char *space = (const char *)memchr(p, ' ', n);
        r->final_status = !(space != NULL && (size_t)(space - p) + 1 < n && space[1] == '1');
        r->head.len = 0;
        r->head_done = 0;
    } else if (n <= 2 && (n == 0 || p[0] == '\r' || p[0] == '\n')) {
        r->head_done = r->final_status;
        return n;
    } else if (r->head_done) {
        /* Chunked trailers, which libcurl hands over as header lines: dropped,
         * as the other transports drop them (HACKING.md, the contract). */
        return n;
    }
    if (n > TRUTO_MAX_HEADER_BYTES - r->head.len) {
        r->too_large = r->head_too_large = 1;
        return 0;
    }
    if (!truto_buf_append(&r->head, p, n, TRUTO_MAX_HEADER_BYTES)) {
        r->oom = 1;
        return 0;
    }
    return n;
}

void truto_reply_reset(truto_reply *r)
{
    truto_buf_reset(&r->body);
    truto_buf_reset(&r->head);
}

void truto_reply_free(truto_reply *r)
{
    truto_buf_free(&r->body);
    truto_buf_free(&r->head);
}

/* ---- options every transfer gets -------------------------------------------- */

#define SETOPT(opt, val)                                       \
    do {                                                       \
        if (rc == CURLE_OK)                                    \
            rc = curl_easy_setopt(e, (opt), (val));            \
    } while (0)

int truto_setopt_handle(void *easy, const truto_transfer_options *o, truto_reply *reply,
                        truto_curl_callback on_body, truto_curl_callback on_header, void *ud)
{
    CURL *e = (CURL *)easy;
    CURLcode rc = CURLE_OK;
    SETOPT(CURLOPT_ERRORBUFFER, reply->errbuf);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, ud);
    SETOPT(CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(CURLOPT_HEADERDATA, ud);
    SETOPT(CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    /* TLS verification (on unless insecure), CA locations, proxy. */
    SETOPT(CURLOPT_SSL_VERIFYPEER, o->insecure ? 0L : 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, o->insecure ? 0L : 2L);
    if (o->ca_file != NULL)
        SETOPT(CURLOPT_CAINFO, o->ca_file);
    if (o->ca_path != NULL)
        SETOPT(CURLOPT_CAPATH, o->ca_path);
    if (o->proxy != NULL)
        SETOPT(CURLOPT_PROXY, o->proxy);
    /* HTTP/2 over TLS when asked for and libcurl supports it (without it
     * libcurl refuses 2TLS), else HTTP/1.1. */
    if (rc == CURLE_OK &&
        (!o->http2 || curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS) != CURLE_OK))
        rc = curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    return (int)rc;
}

/* Sets option opt to v unless *applied already holds v. */
#define SETOPT_CHANGED(opt, applied, v)                        \
    do {                                                       \
        if (rc == CURLE_OK && (applied) != (v)) {              \
            rc = curl_easy_setopt(e, (opt), (v));              \
            (applied) = (v);                                   \
        }                                                      \
    } while (0)

/* The method libcurl sends in place of the one its mode implies (POST for
 * a payload, GET without), or NULL. */
static const char *custom_method(const truto_transfer_request *r)
{
    if (strcmp(r->method, "HEAD") == 0)
        return NULL;
    if (r->has_body)
        return strcmp(r->method, "POST") != 0 ? r->method : NULL;
    return strcmp(r->method, "GET") != 0 ? r->method : NULL;
}

static CURLcode setopt_custom_method(CURL *e, truto_applied *a, const char *method)
{
    size_t len = method != NULL ? strlen(method) : 0;
    if (a->known && len < sizeof a->custom && strcmp(a->custom, method != NULL ? method : "") == 0)
        return CURLE_OK;
    CURLcode rc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    /* A method too long to remember is set again every time. */
    if (len < sizeof a->custom)
        memcpy(a->custom, method != NULL ? method : "", len + 1);
    else
        a->custom[0] = '\1';
    return rc;
}

/* The mode (HEAD, a form, a payload, or none), then the method's name.
 * Every mode is set in full, whatever the previous request left: a payload
 * pointer is cleared after each transfer, which libcurl takes as a POST. */
static CURLcode setopt_method(CURL *e, truto_applied *a, const truto_transfer_request *r, int copy_body)
{
    CURLcode rc = CURLE_OK;
    if (strcmp(r->method, "HEAD") == 0) {
        SETOPT(CURLOPT_NOBODY, 1L);
        a->nobody = 1;
    } else if (r->has_body) {
        SETOPT_CHANGED(CURLOPT_NOBODY, a->nobody, 0L);
        if (r->form) {
            SETOPT(CURLOPT_MIMEPOST, r->mime);
        } else {
            SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
            if (copy_body)
                SETOPT(CURLOPT_COPYPOSTFIELDS, r->body);
            else
                SETOPT(CURLOPT_POSTFIELDS, r->body);
        }
    } else {
        SETOPT(CURLOPT_HTTPGET, 1L);    /* also clears NOBODY */
        a->nobody = 0;
    }
    if (rc == CURLE_OK)
        rc = setopt_custom_method(e, a, custom_method(r));
    return rc;
}

int truto_setopt_request(void *easy, truto_applied *a, const truto_transfer_request *r,
                         struct curl_slist *headers, int copy_body)
{
    CURL *e = (CURL *)easy;
    CURLcode rc = CURLE_OK;
    if (!a->known) {
        /* Values no request asks for: each option is set at once. */
        a->timeout_ms = a->connect_timeout_ms = a->fresh_connect = a->nobody = -1;
        a->headers = (struct curl_slist *)a;
    }
    SETOPT(CURLOPT_URL, r->url);
    SETOPT_CHANGED(CURLOPT_TIMEOUT_MS, a->timeout_ms, r->timeout_ms);
    SETOPT_CHANGED(CURLOPT_CONNECTTIMEOUT_MS, a->connect_timeout_ms, r->connect_timeout_ms);
    SETOPT_CHANGED(CURLOPT_HTTPHEADER, a->headers, headers);
    /* libcurl silently sends a request again when a reused connection dies
     * before any answer; a request that must not be repeated (a POST or
     * PATCH without an Idempotency-Key) goes on a new connection instead. */
    SETOPT_CHANGED(CURLOPT_FRESH_CONNECT, a->fresh_connect, (long)r->fresh_connect);
    if (rc == CURLE_OK)
        rc = setopt_method(e, a, r, copy_body);
    /* After a failure what libcurl holds is unknown: all is set next time. */
    a->known = rc == CURLE_OK;
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

/* libcurl's own limits on response headers (a line over 100 KiB fails as
 * "out of memory" before any body byte, a block over 300 KiB as a receive
 * error) are our too_large, as in the other transports. */
static int headers_too_large(CURLcode code, const truto_reply *r)
{
    return (code == CURLE_OUT_OF_MEMORY && r->received == 0 && !r->oom) ||
           (code == CURLE_RECV_ERROR && strstr(r->errbuf, "Too large response headers") != NULL);
}

/* The transport contract's kinds for what libcurl lumps together: a broken
 * chunked framing is "protocol" (libcurl says receive error), corrupt
 * compression is "decode". */
static const char *contract_kind(CURLcode code, const truto_reply *r)
{
    if (code == CURLE_RECV_ERROR && strstr(r->errbuf, "chunked-encoding") != NULL)
        return "protocol";
    if (code == CURLE_BAD_CONTENT_ENCODING)
        return "decode";
    return error_kind(code);
}

/* { kind =, message =, curl_code = [, final = true] } (truto.h).  final:
 * the peer does not speak HTTP/1.x (HTTP/0.9, a malformed status line), so
 * sending again would only fail again. */
void truto_push_curl_error(lua_State *L, int code, const char *message, const truto_reply *r)
{
    const char *errbuf = r->errbuf;
    lua_createtable(L, 0, 4);
    if (r->file_error[0] != '\0') {
        /* A file being uploaded failed: it would fail again. */
        lua_pushliteral(L, "file");
        lua_setfield(L, -2, "kind");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "final");
        lua_pushstring(L, r->file_error);
    } else if (r->too_large || headers_too_large((CURLcode)code, r)) {
        lua_pushliteral(L, "too_large");
        lua_setfield(L, -2, "kind");
        if (r->head_too_large || !r->too_large)
            lua_pushfstring(L, "response headers exceed %d bytes or a header line %d bytes",
                            (int)TRUTO_MAX_HEADER_BYTES, (int)TRUTO_MAX_HEADER_LINE);
        else
            lua_pushfstring(L, "response body exceeds max_response_bytes (%f bytes)",
                            (double)r->limit);
    } else {
        lua_pushstring(L, contract_kind((CURLcode)code, r));
        lua_setfield(L, -2, "kind");
        if (code == CURLE_UNSUPPORTED_PROTOCOL || code == CURLE_WEIRD_SERVER_REPLY) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "final");
        }
        if (message != NULL) {
            lua_pushstring(L, message);
        } else if (errbuf[0] != '\0') {
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

/* The header block as a truto.headers userdata (headers.c): the table is
 * built only if the client's caller reads it. */
void truto_push_headers(lua_State *L, const truto_bytes *h)
{
    truto_push_header_block(L, h->data, h->len);
}

/* Lua's %s (isspace in the C locale). */
static int is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* The media type of the content-type in the headers table at idx is JSON
 * (application/json or a +json type), as the client's is_json reads it;
 * without one, the body is taken for JSON.  The body is decoded here only
 * when it is an object or an array, so that a decoded value is always a
 * table. */
static int is_json_document(lua_State *L, int idx, const truto_bytes *body)
{
    const char *p = body->data, *end = body->len ? body->data + body->len : body->data;
    while (p < end && is_space(*p))
        p++;
    if (p == end || (*p != '{' && *p != '['))
        return 0;
    lua_getfield(L, idx, "content-type");
    size_t len = 0;
    const char *type = lua_tolstring(L, -1, &len), *stop;
    lua_pop(L, 1);              /* the string stays in the headers table */
    if (type == NULL)
        return 1;
    const char *tend = type + len;
    while (type < tend && is_space(*type))
        type++;
    for (stop = type; stop < tend && *stop != ';' && !is_space(*stop); stop++)
        ;
    len = (size_t)(stop - type);
    if (len == 0)
        return 1;
    return (len == 16 && strncasecmp(type, "application/json", 16) == 0) ||
           (len >= 5 && strncasecmp(stop - 5, "+json", 5) == 0);
}

/* A body this large is given back to the system as the reader passes it,
 * a step at a time (the decoded tables grow meanwhile, so the two peaks do
 * not add up); its first TRUTO_BODY_KEPT bytes stay for an error. */
#define RELEASE_ABOVE ((size_t)1024 * 1024)
static const truto_release body_release = { TRUTO_BODY_KEPT, (size_t)1024 * 1024 };

int truto_push_reply_body(lua_State *L, truto_bytes *body, int headers_idx, int decode_json, int release)
{
    int pushed = 1;
    if (!(decode_json && is_json_document(L, headers_idx, body))) {
        truto_bytes_push(L, body);          /* a body the client decodes, or reports */
    } else if (!truto_decode_json_text(L, body->data, body->len,
                                       release && body->len > RELEASE_ABOVE ? &body_release : NULL)) {
        /* Its middle may be gone: the start, then the reader's message. */
        lua_pushlstring(L, body->data, body->len < TRUTO_BODY_KEPT ? body->len : TRUTO_BODY_KEPT);
        lua_insert(L, -2);
        pushed = 2;
    }
    if (release)
        truto_buf_reset(body);
    return pushed;
}

/* CURLINFO_HTTP_VERSION -> "1.0", "1.1", "2", "3" or "?". */
static const char *http_version_name(long version)
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

void truto_collect_info(void *easy, truto_info *i)
{
    CURL *e = (CURL *)easy;
    double t = 0;
    long connects = 0;
    curl_off_t size = 0;
    char *ip = NULL;
    if (curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &t) == CURLE_OK)
        i->total_time += t;
    t = 0;
    curl_easy_getinfo(e, CURLINFO_CONNECT_TIME, &t);
    i->connect_time = t;
    if (curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
        i->connects += connects;
    i->status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &i->status);
    i->version = 0;
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &i->version);
    i->port = 0;
    curl_easy_getinfo(e, CURLINFO_PRIMARY_PORT, &i->port);
    curl_easy_getinfo(e, CURLINFO_SIZE_DOWNLOAD_T, &size);
    i->size = (int64_t)size;
    i->ip[0] = '\0';
    if (curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK && ip != NULL) {
        strncpy(i->ip, ip, sizeof i->ip - 1);
        i->ip[sizeof i->ip - 1] = '\0';
    }
}

void truto_push_info(lua_State *L, const truto_info *i)
{
    lua_createtable(L, 0, 8);
    lua_pushstring(L, http_version_name(i->version));
    lua_setfield(L, -2, "http_version");
    set_number(L, "total_time", i->total_time);
    set_number(L, "connect_time", i->connect_time);
    lua_pushstring(L, i->ip);
    lua_setfield(L, -2, "primary_ip");
    set_integer(L, "primary_port", (lua_Integer)i->port);
    set_integer(L, "size_download", (lua_Integer)i->size);
    set_integer(L, "redirects", (lua_Integer)i->redirects);
    set_integer(L, "new_connections", (lua_Integer)i->connects);
}

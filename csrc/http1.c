/*
 * core.response_parser(method): the HTTP/1.1 response parser of the engine
 * over yielding sockets (lua/truto/http1.lua), on Debian's http-parser.
 * The engine keeps the I/O (its sockets must yield); this is fed the bytes
 * they read and never calls into Lua, so one parser serves nginx, HAProxy,
 * cqueues and luv alike.
 *
 *   local p = core.response_parser(method)   -- "HEAD": no body is read
 *   state, pos, body = p:feed(data [, pos])  -- state "head", "body" or "done"
 *   state = p:finish()                       -- the peer closed: "done", or nil, err
 *   status, headers, version = p:head()      -- once the state is not "head"
 *   n = p:need()                             -- bytes sure to come (nil: until the close)
 *   p:close()                                -- also __gc and __close
 *
 * feed reads data from pos (default 1) and returns where it stopped: at the
 * end of data, at the end of the head (so that the engine can look at it
 * before the body) or at the end of the response (bytes left after it mean
 * the connection cannot be reused).  body is the body's bytes in what was
 * read (chunk framing removed), or nil.  A response the contract refuses
 * gives nil, { kind, message, final }, and the parser is done.
 *
 * http-parser reads the status line, the framing (Content-Length, chunks,
 * the statuses and method without a body) and checks the syntax.  Lines are
 * handed to it whole, which is how the contract's limits (HACKING.md) are
 * counted exactly: a line of MAX_LINE bytes without its CR LF, a header
 * block or trailers of MAX_HEAD bytes counting each line's CR LF.  Header
 * lines that are not fields are skipped, as libcurl does; the block of the
 * final response is returned as a truto.headers, the libcurl transport's
 * own type, so that both read fields the same way (csrc/headers.c).
 */
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "truto.h"

#define PARSER_MT "truto.ResponseParser"
#define MAX_LINE TRUTO_MAX_HEADER_LINE
#define MAX_HEAD TRUTO_MAX_HEADER_BYTES
#define MAX_CHUNK_SIZE ((uint64_t)1 << 56)   /* 14 hex digits: more is no size a body reaches */
#define MAX_CONTENT_LENGTH 999999999999999ULL   /* 15 digits, as exact in a double */

typedef enum { PHASE_HEAD, PHASE_BODY, PHASE_DONE } phase;
typedef enum { LINE_STATUS, LINE_FIELD, LINE_CHUNK_SIZE, LINE_CHUNK_END, LINE_TRAILER } line_kind;
typedef enum { DATA_NONE, DATA_LENGTH, DATA_UNTIL_CLOSE } data_mode;

typedef struct {
    http_parser hp;
    truto_bytes line;           /* the line being received, without its LF */
    truto_bytes head;           /* the final response's status and header lines */
    truto_bytes body;           /* body bytes of one feed, when they are in pieces */
    size_t block_bytes;         /* of the header block or trailers so far */
    phase phase;
    line_kind next_line;        /* in line mode */
    data_mode data;             /* DATA_NONE: line mode */
    int head_only;              /* a HEAD request: no body */
    int status_line_read;       /* a whole status line was read */
    int has_field;              /* the block has a field an obs-fold can continue */
    int headers_complete, message_complete;   /* set by http-parser's callbacks */
    int failed;                 /* refused or raised: nothing more to read */
    int closed;
} response_parser;

static const char CRLF[] = "\r\n";

/* ---- http-parser's callbacks: flags only ------------------------------- */

static int on_headers_complete(http_parser *hp)
{
    response_parser *p = (response_parser *)hp->data;
    p->headers_complete = 1;
    unsigned status = hp->status_code;
    /* No body after HEAD, 1xx, 204 and 304, whatever the headers say (1 asks
     * http-parser to skip it). */
    return p->head_only || status < 200 || status == 204 || status == 304;
}

static int on_message_complete(http_parser *hp)
{
    ((response_parser *)hp->data)->message_complete = 1;
    return 0;
}

static const http_parser_settings SETTINGS = {
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* Runs http-parser over n bytes; 1 when it took them all without error. */
static int run(response_parser *p, const char *s, size_t n)
{
    size_t done = http_parser_execute(&p->hp, &SETTINGS, s, n);
    return HTTP_PARSER_ERRNO(&p->hp) == HPE_OK && done == n;
}

/* Runs http-parser over one line, given without its line end, then CR LF
 * (bare-LF lines are read as CRLF ones, as libcurl reads them). */
static int run_line(response_parser *p, const char *s, size_t n)
{
    return run(p, s, n) && run(p, CRLF, 2);
}

/* ---- errors ------------------------------------------------------------- */

typedef struct {
    const char *kind;
    char message[160];
    int final;
} failure;

static int fail(failure *f, const char *kind, int final, const char *message)
{
    f->kind = kind;
    f->final = final;
    snprintf(f->message, sizeof f->message, "%s", message);
    return 0;
}

static int push_failure(lua_State *L, response_parser *p, const failure *f)
{
    p->failed = 1;
    lua_pushnil(L);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, f->kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, f->message);
    lua_setfield(L, -2, "message");
    if (f->final) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "final");
    }
    return 2;
}

/* ---- lines -------------------------------------------------------------- */

static int is_token_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The length of the name of "name:...", name an HTTP token: a field line;
 * 0 for anything else, which is skipped. */
static size_t field_name_length(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_token_char((unsigned char)s[i]))
        i++;
    return i > 0 && i < n && s[i] == ':' ? i : 0;
}

/* The n bytes at s are word, in any case, with blanks around. */
static int is_word(const char *s, size_t n, const char *word)
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return n == strlen(word) && strncasecmp(s, word, n) == 0;
}

/* "Transfer-Encoding: identity" (RFC 2616's coding that changes nothing):
 * http-parser would read the body to the close; libcurl ignores it and
 * reads Content-Length, so the line is kept from http-parser. */
static int is_identity_coding(const char *s, size_t n, size_t name_len)
{
    return is_word(s, name_len, "transfer-encoding") && is_word(s + name_len + 1, n - name_len - 1, "identity");
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int status_line(response_parser *p, const char *s, size_t n, failure *f)
{
    /* http-parser also reads "HTTP/01.1" and a status of one or two digits. */
    int shape = n >= 12 && memcmp(s, "HTTP/1.", 7) == 0 && s[8] == ' ' && is_digit(s[9]) && is_digit(s[10])
        && is_digit(s[11]) && (n == 12 || s[12] == ' ');
    if (!shape || !run_line(p, s, n) || p->hp.http_major != 1 || p->hp.http_minor > 1)
        /* The peer does not speak HTTP/1.x: sending again would not help. */
        return fail(f, "protocol", 1, "malformed status line (not HTTP/1.0 or HTTP/1.1)");
    if (p->hp.status_code < 100) {
        fail(f, "protocol", 1, "");
        snprintf(f->message, sizeof f->message, "malformed status line (status %.3s)", s + 9);
        return 0;
    }
    p->status_line_read = 1;
    p->next_line = LINE_FIELD;
    p->block_bytes = 0;
    p->has_field = 0;
    p->head.len = 0;
    return 1;
}

static int field_error(response_parser *p, failure *f)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&p->hp);
    if (e == HPE_INVALID_CONTENT_LENGTH || e == HPE_UNEXPECTED_CONTENT_LENGTH)
        return fail(f, "protocol", 0, "malformed Content-Length");
    fail(f, "protocol", 0, "");
    snprintf(f->message, sizeof f->message, "malformed response header (%s)", http_errno_description(e));
    return 0;
}

/* The blank line after a header block: the head is complete (or an interim
 * response was).  Sets the body's framing. */
static int end_of_head(response_parser *p, failure *f)
{
    int ok = run(p, CRLF, 2);
    unsigned status = p->hp.status_code;
    /* (http-parser stops at a 101's head: what follows is another protocol) */
    if (p->headers_complete && status == 101)
        return fail(f, "protocol", 1, "unexpected 101 Switching Protocols");
    if (!ok || !p->headers_complete)
        return field_error(p, f);
    if (status < 200) {             /* interim: its fields are dropped, a response is still to come */
        p->headers_complete = p->message_complete = 0;
        p->status_line_read = 0;
        p->next_line = LINE_STATUS;
        return 1;
    }
    if ((p->hp.flags & F_CONTENTLENGTH) && !(p->hp.flags & F_CHUNKED) && !p->message_complete
        && p->hp.content_length > MAX_CONTENT_LENGTH)
        return fail(f, "protocol", 0, "malformed Content-Length");
    p->phase = p->message_complete ? PHASE_DONE : PHASE_BODY;
    if (p->phase == PHASE_BODY) {
        if (p->hp.flags & F_CHUNKED)
            p->next_line = LINE_CHUNK_SIZE;
        else
            p->data = p->hp.content_length != ULLONG_MAX ? DATA_LENGTH : DATA_UNTIL_CLOSE;
    }
    return 1;
}

/* A header or trailer line (not blank). */
static int block_line(lua_State *L, response_parser *p, const char *s, size_t n, failure *f)
{
    p->block_bytes += n + 2;
    if (p->block_bytes > MAX_HEAD) {
        fail(f, "too_large", 0, "");
        snprintf(f->message, sizeof f->message, "response headers exceed %d bytes", (int)MAX_HEAD);
        return 0;
    }
    int fold = s[0] == ' ' || s[0] == '\t';
    size_t name_len = fold ? 0 : field_name_length(s, n);
    if (fold ? !p->has_field : name_len == 0)
        return 1;
    p->has_field = 1;
    if (!(name_len > 0 && is_identity_coding(s, n, name_len)) && !run_line(p, s, n))
        return field_error(p, f);
    if (p->next_line == LINE_FIELD) {
        truto_bytes_add(L, &p->head, s, n);
        truto_bytes_add(L, &p->head, CRLF, 2);
    }
    return 1;
}

static int chunk_size_line(response_parser *p, const char *s, size_t n, failure *f)
{
    if (!run_line(p, s, n) || p->hp.content_length >= MAX_CHUNK_SIZE)
        return fail(f, "protocol", 0, "malformed chunk size");
    if (p->hp.content_length == 0) {   /* the last chunk: trailers follow, read and dropped */
        p->next_line = LINE_TRAILER;
        p->block_bytes = 0;
        p->has_field = 0;
    } else {
        p->data = DATA_LENGTH;
    }
    return 1;
}

/* One whole line of the current kind, without its LF and CR. */
static int take_line(lua_State *L, response_parser *p, const char *s, size_t n, failure *f)
{
    /* http-parser would end the line at the CR, whatever follows it. */
    if (memchr(s, '\r', n) != NULL)
        return fail(f, "protocol", p->next_line == LINE_STATUS, "malformed response (a CR inside a line)");
    switch (p->next_line) {
    case LINE_STATUS:
        return status_line(p, s, n, f);
    case LINE_FIELD:
        return n == 0 ? end_of_head(p, f) : block_line(L, p, s, n, f);
    case LINE_TRAILER:
        if (n > 0)
            return block_line(L, p, s, n, f);
        if (!run(p, CRLF, 2) || !p->message_complete)
            return field_error(p, f);
        p->phase = PHASE_DONE;
        return 1;
    case LINE_CHUNK_SIZE:
        return chunk_size_line(p, s, n, f);
    case LINE_CHUNK_END:
        if (n > 0 || !run(p, CRLF, 2))
            return fail(f, "protocol", 0, "malformed chunk (no CRLF after its data)");
        p->next_line = LINE_CHUNK_SIZE;
        return 1;
    }
    return 1;
}

/* The longest line of the current kind, without its line end. */
static size_t line_limit(const response_parser *p)
{
    return p->next_line == LINE_CHUNK_END ? 0 : MAX_LINE;
}

static int line_too_long(const response_parser *p, failure *f)
{
    if (p->next_line == LINE_CHUNK_END)
        return fail(f, "protocol", 0, "malformed chunk (no CRLF after its data)");
    fail(f, "too_large", 0, "");
    snprintf(f->message, sizeof f->message, "a response line is longer than %d bytes", (int)MAX_LINE);
    return 0;
}

/* ---- body bytes ---------------------------------------------------------- */

/* The body bytes of one feed: the first piece is kept by reference, more
 * are gathered into p->body. */
typedef struct {
    const char *first;
    size_t first_len;
    int pieces;
} body_out;

static void add_body(lua_State *L, response_parser *p, body_out *out, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (out->pieces == 0) {
        out->first = s;
        out->first_len = n;
    } else {
        if (out->pieces == 1) {
            p->body.len = 0;
            truto_bytes_add(L, &p->body, out->first, out->first_len);
        }
        truto_bytes_add(L, &p->body, s, n);
    }
    out->pieces++;
}

/* Body bytes from s: as many as the framing allows.  Returns how many. */
static size_t take_data(lua_State *L, response_parser *p, body_out *out, const char *s, size_t n)
{
    if (p->data == DATA_LENGTH && p->hp.content_length < n)
        n = (size_t)p->hp.content_length;
    run(p, s, n);                   /* data never fails: http-parser counts it */
    add_body(L, p, out, s, n);
    if (p->data == DATA_LENGTH && p->hp.content_length == 0) {
        p->data = DATA_NONE;
        if (p->hp.flags & F_CHUNKED)
            p->next_line = LINE_CHUNK_END;
        else
            p->phase = PHASE_DONE;
    }
    return n;
}

/* ---- the Lua class -------------------------------------------------------- */

static void parser_free(response_parser *p)
{
    free(p->line.data);
    free(p->head.data);
    free(p->body.data);
    memset(&p->line, 0, sizeof p->line);
    memset(&p->head, 0, sizeof p->head);
    memset(&p->body, 0, sizeof p->body);
}

static int parser_cleanup(lua_State *L)
{
    response_parser *p = (response_parser *)luaL_checkudata(L, 1, PARSER_MT);
    parser_free(p);
    p->closed = 1;
    return 0;
}

static int parser_tostring(lua_State *L)
{
    response_parser *p = (response_parser *)luaL_checkudata(L, 1, PARSER_MT);
    return truto_push_handle_name(L, PARSER_MT, p->closed);
}

static response_parser *check_open(lua_State *L)
{
    response_parser *p = (response_parser *)luaL_checkudata(L, 1, PARSER_MT);
    if (p->closed)
        luaL_error(L, "truto: response parser is closed");
    return p;
}

/* A parser that can still read: not done, not failed. */
static response_parser *check_reading(lua_State *L)
{
    response_parser *p = check_open(L);
    if (p->failed)
        luaL_error(L, "truto: response parser failed: it reads no more");
    if (p->phase == PHASE_DONE)
        luaL_error(L, "truto: response parser has read the whole response");
    return p;
}

static int l_response_parser(lua_State *L)
{
    size_t len;
    const char *method = luaL_checklstring(L, 1, &len);
    response_parser *p = (response_parser *)lua_newuserdata(L, sizeof *p);
    memset(p, 0, sizeof *p);
    luaL_getmetatable(L, PARSER_MT);
    lua_setmetatable(L, -2);
    http_parser_init(&p->hp, HTTP_RESPONSE);
    p->hp.data = p;
    /* As libcurl reads: any byte but CR and LF in a value; Content-Length
     * beside chunked (the chunks frame the body). */
    p->hp.lenient_http_headers = 1;
    p->hp.allow_chunked_length = 1;
    p->head_only = len == 4 && memcmp(method, "HEAD", 4) == 0;
    p->phase = PHASE_HEAD;
    p->next_line = LINE_STATUS;
    return 1;
}

static const char *state_name(const response_parser *p)
{
    return p->phase == PHASE_HEAD ? "head" : p->phase == PHASE_BODY ? "body" : "done";
}

/* One line from data + i (or the end of a line begun in an earlier feed):
 * the bytes it took, or 0 with f set when the response is refused. */
static size_t feed_line(lua_State *L, response_parser *p, const char *s, size_t avail, failure *f)
{
    const char *lf = (const char *)memchr(s, '\n', avail);
    size_t n = lf != NULL ? (size_t)(lf - s) : avail;
    /* A CR may end the line: one byte more than the limit waits for the LF. */
    if (p->line.len + n > line_limit(p) + 1)
        return line_too_long(p, f);
    if (lf == NULL) {
        truto_bytes_add(L, &p->line, s, n);
        return avail;
    }
    size_t took = n + 1;
    if (p->line.len > 0) {
        truto_bytes_add(L, &p->line, s, n);
        s = p->line.data;
        n = p->line.len;
    }
    if (n > 0 && s[n - 1] == '\r')
        n--;
    p->line.len = 0;
    if (n > line_limit(p))
        return line_too_long(p, f);
    return take_line(L, p, s, n, f) ? took : 0;
}

static void push_body(lua_State *L, response_parser *p, const body_out *out)
{
    if (out->pieces == 0)
        lua_pushnil(L);
    else if (out->pieces == 1)
        lua_pushlstring(L, out->first, out->first_len);
    else
        truto_bytes_push(L, &p->body);
    if (p->body.cap > 256 * 1024) {     /* a big feed's gathering is not kept */
        free(p->body.data);
        memset(&p->body, 0, sizeof p->body);
    }
}

static int l_feed(lua_State *L)
{
    response_parser *p = check_reading(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_Integer pos = luaL_optinteger(L, 3, 1);
    if (pos < 1 || (lua_Number)pos > (lua_Number)len + 1)
        return luaL_error(L, "truto: feed position out of range");
    /* An error raised below (out of memory) leaves the parser midway. */
    p->failed = 1;
    size_t i = (size_t)pos - 1;
    phase before = p->phase;
    body_out out = {NULL, 0, 0};
    failure f;
    f.kind = NULL;
    while (i < len && p->phase == before) {
        size_t took = p->data != DATA_NONE ? take_data(L, p, &out, data + i, len - i)
                                           : feed_line(L, p, data + i, len - i, &f);
        if (took == 0)
            break;
        i += took;
    }
    if (f.kind != NULL) {
        /* The body read before the fault first, as when the bytes come apart. */
        push_failure(L, p, &f);
        push_body(L, p, &out);
        return 3;
    }
    p->failed = 0;
    lua_pushstring(L, state_name(p));
    lua_pushinteger(L, (lua_Integer)i + 1);
    push_body(L, p, &out);
    return 3;
}

static int l_finish(lua_State *L)
{
    response_parser *p = check_reading(L);
    failure f;
    if (p->phase == PHASE_BODY && p->data == DATA_UNTIL_CLOSE) {
        run(p, NULL, 0);            /* tells http-parser the body ends here */
        p->phase = PHASE_DONE;
        lua_pushstring(L, "done");
        return 1;
    }
    if (p->phase == PHASE_HEAD && !p->status_line_read)
        fail(&f, "network", 0, "the server closed the connection without a response");
    else
        fail(&f, "protocol", 0, "the connection closed before the response was complete");
    return push_failure(L, p, &f);
}

static int l_head(lua_State *L)
{
    response_parser *p = check_open(L);
    if (p->phase == PHASE_HEAD || p->failed)
        return luaL_error(L, "truto: the response's head has not been read");
    lua_pushinteger(L, (lua_Integer)p->hp.status_code);
    truto_push_header_block(L, p->head.data, p->head.len);
    lua_pushstring(L, p->hp.http_minor == 0 ? "1.0" : "1.1");
    return 3;
}

static int l_need(lua_State *L)
{
    response_parser *p = check_open(L);
    if (p->data == DATA_UNTIL_CLOSE)
        lua_pushnil(L);
    else if (p->data == DATA_LENGTH)
        lua_pushinteger(L, (lua_Integer)p->hp.content_length);   /* below 2^56 */
    else
        lua_pushinteger(L, 1);
    return 1;
}

void truto_open_http1(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"feed", l_feed},
        {"finish", l_finish},
        {"head", l_head},
        {"need", l_need},
        {NULL, NULL},
    };
    /* http-parser's own cap on a head (80 KiB by default) stays above the
     * contract's, which this file counts: a block, two lines and their ends. */
    http_parser_set_max_header_size((uint32_t)(MAX_HEAD + 2 * MAX_LINE + 64));
    lua_pushinteger(L, MAX_LINE);
    lua_setfield(L, -2, "MAX_RESPONSE_LINE");
    lua_pushinteger(L, (lua_Integer)MAX_HEAD);
    lua_setfield(L, -2, "MAX_RESPONSE_HEAD");
    truto_open_class(L, PARSER_MT, methods, parser_cleanup, parser_tostring, "response_parser",
                     l_response_parser);
}

/*
 * The JSON reader.  It exists beside lua-cjson because a value read here can
 * be written back unchanged: arrays (empty ones included) carry the
 * truto.array mark and empty objects the truto.object mark, integers stay
 * integers (exact to 64 bits), and null is truto.null.  A record fetched,
 * edited and PATCHed back keeps `"tags": []` as an array.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <unistd.h>

#include "truto.h"

#define DECODE_MAX_DEPTH 512

typedef struct {
    const char *p, *start, *end;
    truto_encoder *e;       /* scratch buffer for strings with escapes */
    int depth;
    int array_mt, object_mt;    /* stack slots of the two marks */
    /* Giving the text back as it is read (truto_release): once p reaches
     * release_at (NULL: never), the pages from released up to p go. */
    const char *release_at, *released;
    size_t release_step;
    int *invalid;           /* set once the reader's own message is made (NULL: not asked) */
} reader;

/* Raises the reader's message.  *invalid tells it from any other error
 * (memory, a finalizer's under LuaJIT): set only once the message exists. */
static int fail(lua_State *L, reader *r, const char *what)
{
    lua_pushfstring(L, "%s at byte %d", what, (int)(r->p - r->start) + 1);
    if (r->invalid != NULL)
        *r->invalid = 1;
    return lua_error(L);
}

static void skip_space(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static void read_value(lua_State *L, reader *r);

/* Gives back to the system the whole pages between r->released and r->p:
 * called at the start of a value, when no byte behind r->p is needed any
 * more (every string read is a copy).  The pages then read as zeros. */
static void give_back(reader *r)
{
#ifdef MADV_DONTNEED
    static uintptr_t page;
    if (page == 0)
        page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = ((uintptr_t)r->released + page - 1) & ~(page - 1);
    uintptr_t to = (uintptr_t)r->p & ~(page - 1);
    if (to > from && madvise((void *)from, to - from, MADV_DONTNEED) == 0)
        r->released = (const char *)to;
#endif
    r->release_at = (size_t)(r->end - r->p) > r->release_step ? r->p + r->release_step : NULL;
}

static void mark(lua_State *L, int mt)
{
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
}

static unsigned hex4(lua_State *L, reader *r)
{
    unsigned v = 0;
    if (r->end - r->p < 4)
        fail(L, r, "truncated \\u escape");
    for (int i = 0; i < 4; i++, r->p++) {
        char c = *r->p;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if ((c | 32) >= 'a' && (c | 32) <= 'f') v |= (unsigned)((c | 32) - 'a' + 10);
        else fail(L, r, "bad \\u escape");
    }
    return v;
}

static void add_utf8(lua_State *L, truto_bytes *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | cp >> 6); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | cp >> 12); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | cp >> 18); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    truto_bytes_add(L, b, u, n);
}

/* r->p is just past the opening quote. */
static void read_string(lua_State *L, reader *r)
{
    const char *s = r->p;
    /* No escapes and valid UTF-8, checked in one pass: the common case. */
    size_t len = truto_json_plain_span(s, (size_t)(r->end - s));
    if (s + len < r->end && s[len] == '"') {
        lua_pushlstring(L, s, len);
        r->p = s + len + 1;
        return;
    }
    /* Anything else is read again from s, one byte at a time. */
    while (r->p < r->end && *r->p != '"' && *r->p != '\\' && (unsigned char)*r->p >= 0x20)
        r->p++;
    if (r->p < r->end && *r->p == '"') {            /* invalid UTF-8 */
        r->p = s + truto_utf8_invalid_at(s, (size_t)(r->p - s));
        fail(L, r, "invalid UTF-8");
    }
    truto_bytes *b = &r->e->out;
    b->len = 0;
    truto_bytes_add(L, b, s, (size_t)(r->p - s));
    for (;;) {
        if (r->p >= r->end)
            fail(L, r, "unterminated string");
        unsigned char c = (unsigned char)*r->p;
        if (c == '"')
            break;
        if (c < 0x20)
            fail(L, r, "control character in string");
        if (c != '\\') {
            truto_bytes_addc(L, b, (char)c);
            r->p++;
            continue;
        }
        if (++r->p >= r->end)
            fail(L, r, "unterminated string");
        char esc = *r->p++;
        switch (esc) {
        case '"': case '\\': case '/': truto_bytes_addc(L, b, esc); break;
        case 'b': truto_bytes_addc(L, b, '\b'); break;
        case 'f': truto_bytes_addc(L, b, '\f'); break;
        case 'n': truto_bytes_addc(L, b, '\n'); break;
        case 'r': truto_bytes_addc(L, b, '\r'); break;
        case 't': truto_bytes_addc(L, b, '\t'); break;
        case 'u': {
            unsigned cp = hex4(L, r);
            if (cp >= 0xD800 && cp <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
                const char *save = r->p;
                r->p += 2;
                unsigned lo = hex4(L, r);
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    r->p = save;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD;    /* a lone surrogate has no UTF-8 form */
            add_utf8(L, b, cp);
            break;
        }
        default:
            r->p--;
            fail(L, r, "bad escape");
        }
    }
    size_t bad = truto_utf8_invalid_at(b->data, b->len);
    if (bad != (size_t)-1)
        fail(L, r, "invalid UTF-8 in string");
    truto_bytes_push(L, b);
    r->p++;
}

static void read_number(lua_State *L, reader *r)
{
    const char *s = r->p;
    int integral = 1;
    if (r->p < r->end && *r->p == '-')
        r->p++;
    if (r->p < r->end && *r->p == '0') {
        r->p++;
    } else if (r->p < r->end && *r->p >= '1' && *r->p <= '9') {
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    } else {
        fail(L, r, "bad number");
    }
    if (r->p < r->end && *r->p == '.') {
        integral = 0;
        r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') fail(L, r, "bad number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        integral = 0;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (r->p >= r->end || *r->p < '0' || *r->p > '9') fail(L, r, "bad number");
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
    }
    char buf[400];
    size_t len = (size_t)(r->p - s);
    if (len >= sizeof buf)
        fail(L, r, "number too long");
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (integral) {
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        if (errno == 0 && truto_push_exact_integer(L, v))
            return;
        /* Without an integer subtype (Lua 5.1, 5.2, LuaJIT) an integer a
         * double cannot hold exactly stays the string it was, so an id
         * never changes; from 5.3 on one past 64 bits becomes a float. */
        if (!TRUTO_HAS_INTEGERS) {
            lua_pushlstring(L, buf, len);
            return;
        }
    }
    lua_pushnumber(L, (lua_Number)strtod(buf, NULL));
}

static void expect_word(lua_State *L, reader *r, const char *word, size_t len)
{
    if ((size_t)(r->end - r->p) < len || memcmp(r->p, word, len) != 0)
        fail(L, r, "unexpected character");
    r->p += len;
}

/* After a member of an array or an object: skips a ',' (1: another member
 * follows) or the closing bracket (0: the last one); anything else fails. */
static int next_member(lua_State *L, reader *r, char close, const char *expected)
{
    skip_space(r);
    if (r->p < r->end && *r->p == ',') { r->p++; return 1; }
    if (r->p < r->end && *r->p == close) { r->p++; return 0; }
    return fail(L, r, expected);
}

/* Members and items wait on the Lua stack, and the table is made once
 * their number is known: at its exact size, with no rehash as it grows.
 * A container keeps at most MAX_WAITING slots waiting (a pair takes two),
 * and only while WAIT_RESERVE slots stay free past the next STACK_CHUNK, so
 * that the levels below it (each holds a few slots once it stops waiting)
 * find room within LuaJIT's 8000 slots per C call.  Past that, the table is
 * made at the size reached and the rest go into it as they come. */
#define STACK_CHUNK 64
#define MAX_WAITING 4096
#define WAIT_RESERVE 2048
_Static_assert(3 * DECODE_MAX_DEPTH + 8 < WAIT_RESERVE, "decode: WAIT_RESERVE too small for the nesting allowed");
_Static_assert(MAX_WAITING % STACK_CHUNK == 0 && STACK_CHUNK % 2 == 0, "decode: slots are checked a chunk at a time");

/* Whether one more member may wait, slots being already taken by those
 * waiting (the stack has room for them: checked a chunk ahead). */
static int may_wait(lua_State *L, int slots)
{
    if (slots >= MAX_WAITING)
        return 0;
    return slots % STACK_CHUNK != 0 || lua_checkstack(L, STACK_CHUNK + WAIT_RESERVE);
}

/* The array whose first count items wait at base + 1 ...: made, marked and
 * filled, at base + 1. */
static void settle_array(lua_State *L, reader *r, int base, int count)
{
    lua_createtable(L, count, 0);
    mark(L, r->array_mt);
    lua_insert(L, base + 1);
    for (int i = count; i >= 1; i--)
        lua_rawseti(L, base + 1, i);    /* pops the items, last first */
}

static void read_array(lua_State *L, reader *r)
{
    int base = lua_gettop(L), count = 0, made = 0;
    skip_space(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
    } else {
        do {
            if (!made && !may_wait(L, count)) {
                settle_array(L, r, base, count);
                made = 1;
            }
            read_value(L, r);
            count++;
            if (made)
                lua_rawseti(L, base + 1, count);
        } while (next_member(L, r, ']', "expected ',' or ']'"));
    }
    if (!made)
        settle_array(L, r, base, count);
}

/* The object whose first count pairs wait at base + 1 ...: made and
 * filled in document order (of repeated keys the last one wins), at base + 1.
 * With no pair waiting (the stack was full at the first) the table is
 * already there: lua_replace onto its own slot would pop it. */
static void settle_object(lua_State *L, int base, int count)
{
    lua_createtable(L, 0, count);
    if (count == 0)
        return;
    int t = lua_gettop(L);
    for (int i = 0; i < count; i++) {
        lua_pushvalue(L, base + 1 + 2 * i);
        lua_pushvalue(L, base + 2 + 2 * i);
        lua_rawset(L, t);
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
}

static void read_object(lua_State *L, reader *r)
{
    int base = lua_gettop(L), count = 0;
    skip_space(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        lua_newtable(L);
        mark(L, r->object_mt);          /* only the empty one is ambiguous */
        return;
    }
    int made = 0;
    do {
        if (!made && !may_wait(L, 2 * count)) {
            settle_object(L, base, count);
            made = 1;
        }
        skip_space(r);
        if (r->p >= r->end || *r->p != '"')
            fail(L, r, "expected a string key");
        r->p++;
        read_string(L, r);
        skip_space(r);
        if (r->p >= r->end || *r->p != ':')
            fail(L, r, "expected ':'");
        r->p++;
        read_value(L, r);
        count++;
        if (made)
            lua_rawset(L, base + 1);    /* in document order: of repeated keys the last wins */
    } while (next_member(L, r, '}', "expected ',' or '}'"));
    if (!made)
        settle_object(L, base, count);
}

static void read_value(lua_State *L, reader *r)
{
    if (r->release_at != NULL && r->p >= r->release_at)
        give_back(r);
    skip_space(r);
    if (r->p >= r->end)
        fail(L, r, "unexpected end of input");
    switch (*r->p) {
    case '{':
    case '[':
        if (++r->depth > DECODE_MAX_DEPTH)
            fail(L, r, "nesting too deep");
        if (!lua_checkstack(L, 4))
            fail(L, r, "Lua stack exhausted");
        if (*r->p++ == '{')
            read_object(L, r);
        else
            read_array(L, r);
        r->depth--;
        break;
    case '"':
        r->p++;
        read_string(L, r);
        break;
    case 't': expect_word(L, r, "true", 4); lua_pushboolean(L, 1); break;
    case 'f': expect_word(L, r, "false", 5); lua_pushboolean(L, 0); break;
    case 'n': expect_word(L, r, "null", 4); lua_pushlightuserdata(L, NULL); break;
    default:
        if (*r->p != '-' && (*r->p < '0' || *r->p > '9'))
            fail(L, r, "unexpected character");
        read_number(L, r);
        break;
    }
}

/* Reads the document text, argument 1 being its source (the marks go to
 * slots 2 and 3); with release, gives the text back as it goes; invalid:
 * NULL, or set when the text is found not valid JSON. */
static int read_document(lua_State *L, const char *text, size_t len, const truto_release *release,
                         int *invalid)
{
    luaL_getmetatable(L, TRUTO_ARRAY_MT);
    luaL_getmetatable(L, TRUTO_OBJECT_MT);
    reader r = { text, text, text + len, truto_encoder_new(L, "json"), 0, 2, 3, NULL, NULL, 0, invalid };
    if (release != NULL && release->keep < len) {
        r.released = text + release->keep;
        r.release_step = release->step;
        r.release_at = r.released;
    }
    read_value(L, &r);
    skip_space(&r);
    if (r.p != r.end)
        fail(L, &r, "trailing characters");
    truto_encoder_done(r.e);
    return 1;
}

static int decode_raising(lua_State *L)
{
    size_t len;
    const char *text = lua_tolstring(L, 1, &len);
    return read_document(L, text, len, NULL, NULL);
}

typedef struct {
    const char *text;
    size_t len;
    const truto_release *release;
    int invalid;
} json_text;

static int decode_text_raising(lua_State *L)
{
    json_text *t = (json_text *)lua_touserdata(L, 1);
    return read_document(L, t->text, t->len, t->release, &t->invalid);
}

/* Only the reader's own failure is "not valid JSON": any other error (no
 * memory, a finalizer's raised under LuaJIT) is raised again, the body
 * being neither judged nor, once partly given back, still whole. */
int truto_decode_json_text(lua_State *L, const char *text, size_t len, const truto_release *release)
{
    json_text t = { text, len, release, 0 };
    lua_pushcfunction(L, decode_text_raising);
    lua_pushlightuserdata(L, &t);
    int status = lua_pcall(L, 1, 1, 0);
    if (status != 0 && !(status == LUA_ERRRUN && t.invalid))
        lua_error(L);
    return status == 0;
}

/* core.decode_json(text) -> value, or nil, "message at byte N". */
static int l_decode_json(lua_State *L)
{
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_pushcfunction(L, decode_raising);
    lua_insert(L, 1);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

void truto_open_decode(lua_State *L)
{
    lua_pushcfunction(L, l_decode_json);
    lua_setfield(L, -2, "decode_json");
}

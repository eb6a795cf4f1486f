/*
 * Byte-level text helpers: UTF-8 validation, percent-encoding, JSON string
 * quoting, and the HTTP token and field-value checks of request.c and
 * curl_common.c.  Table-driven so the common ASCII path is one lookup.
 */
#include <string.h>

#include "truto.h"

/* RFC 3986 unreserved characters: the only bytes left as they are. */
static const unsigned char unreserved[256] = {
    ['-'] = 1, ['.'] = 1, ['_'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static const char hex[] = "0123456789ABCDEF";

/* The length of the valid UTF-8 sequence that starts with the non-ASCII
 * byte s[0], of the avail bytes at s; 0 if none does. */
static size_t utf8_sequence(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;   /* bounds of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;          /* overlong */
        if (c == 0xED) hi = 0x9F;          /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;          /* overlong */
        if (c == 0xF4) hi = 0x8F;          /* past U+10FFFF */
    } else {
        return 0;
    }
    if (avail <= need || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k <= need; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 0;
    return need + 1;
}

#define BYTES_01 0x0101010101010101ULL
#define BYTES_80 0x8080808080808080ULL

size_t truto_utf8_invalid_at(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        /* Eight ASCII bytes at a time: most text in requests is ASCII. */
        while (len - i >= 8) {
            uint64_t word;
            memcpy(&word, s + i, 8);
            if (word & BYTES_80)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence(s + i, len - i);
        if (n == 0)
            return i;
        i += n;
    }
    return (size_t)-1;
}

void truto_pct_encode(lua_State *L, truto_bytes *b, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    truto_bytes_reserve(L, b, len * 3);
    char *o = b->data + b->len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if (unreserved[c]) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    b->len = (size_t)(o - b->data);
}

/* What a byte needs in a JSON string: nothing, an escape, or a check that
 * it starts a valid UTF-8 sequence. */
enum { JSON_PLAIN, JSON_ESCAPE, JSON_UTF8 };
static const unsigned char json_class[256] = {
    [0x00 ... 0x1F] = JSON_ESCAPE, ['"'] = JSON_ESCAPE, ['\\'] = JSON_ESCAPE,
    [0x80 ... 0xFF] = JSON_UTF8,
};

/* The bytes of w that are not plain, each flagged by its top bit, exactly
 * up to the first of them: a borrow can flag a byte above a flagged one,
 * never one below, so only the lowest flag is to be trusted. */
static uint64_t json_special8(uint64_t w)
{
    uint64_t quote = w ^ (BYTES_01 * '"'), backslash = w ^ (BYTES_01 * '\\');
    uint64_t control = (w - BYTES_01 * 0x20) & ~w;
    uint64_t is_quote = (quote - BYTES_01) & ~quote;
    uint64_t is_backslash = (backslash - BYTES_01) & ~backslash;
    return (control | is_quote | is_backslash | w) & BYTES_80;
}

/* The position in its word (loaded from memory as it is) of the first byte
 * special flags. */
static size_t first_flagged(uint64_t special)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (size_t)__builtin_clzll(special) >> 3;
#else
    return (size_t)__builtin_ctzll(special) >> 3;
#endif
}

/* Up to 8 bytes of s from i as a word, a short tail padded with spaces
 * (plain); *n receives how many are s's. */
static uint64_t load8(const unsigned char *s, size_t i, size_t len, size_t *n)
{
    uint64_t word = BYTES_01 * ' ';
    if (len - i >= 8) {
        *n = 8;
        memcpy(&word, s + i, 8);    /* one load: a constant size */
    } else {
        *n = len - i;
        for (size_t k = 0; k < *n; k++)
            ((unsigned char *)&word)[k] = s[i + k];
    }
    return word;
}

/* One unit at s[i]: a plain byte, an escape or a UTF-8 sequence.  Returns
 * the new end of the output, or NULL for invalid UTF-8. */
static char *json_unit(char *o, const unsigned char *s, size_t *i, size_t len)
{
    unsigned char c = s[*i];
    if (json_class[c] == JSON_PLAIN) {
        *o++ = (char)c;
        (*i)++;
        return o;
    }
    if (json_class[c] == JSON_UTF8) {
        size_t n = utf8_sequence(s + *i, len - *i);
        if (n == 0)
            return NULL;
        memcpy(o, s + *i, n);
        *i += n;
        return o + n;
    }
    (*i)++;
    *o++ = '\\';
    switch (c) {
    case '"':  *o++ = '"'; break;
    case '\\': *o++ = '\\'; break;
    case '\b': *o++ = 'b'; break;
    case '\f': *o++ = 'f'; break;
    case '\n': *o++ = 'n'; break;
    case '\r': *o++ = 'r'; break;
    case '\t': *o++ = 't'; break;
    default:
        /* lowercase, as JSON.stringify writes them */
        memcpy(o, "u00", 3);
        o += 3;
        *o++ = "0123456789abcdef"[c >> 4];
        *o++ = "0123456789abcdef"[c & 15];
    }
    return o;
}

size_t truto_json_plain_span(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, n;
    while (i < len) {
        uint64_t special = json_special8(load8(s, i, len, &n));
        if (special == 0) {
            i += n;
            continue;
        }
        i += first_flagged(special);
        if (json_class[s[i]] != JSON_UTF8)
            return i;
        n = utf8_sequence(s + i, len - i);
        if (n == 0)
            return i;
        i += n;
    }
    return len;
}

char *truto_json_string(char *o, const char *str, size_t len, size_t *bad)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    *o++ = '"';
    while (i < len) {
        /* Eight bytes at a time, a short tail padded with spaces: most text
         * in requests is plain ASCII.  Each input byte takes at most 6
         * output bytes, so the 8 stored here fit in the room promised. */
        size_t n;
        uint64_t word = load8(s, i, len, &n);
        uint64_t special = json_special8(word);
        /* The plain bytes go as a whole word, of which only those up to the
         * first special one count. */
        memcpy(o, &word, 8);
        if (special == 0) {
            o += n;
            i += n;
            continue;
        }
        size_t plain = first_flagged(special);
        o += plain;
        i += plain;
        o = json_unit(o, s, &i, len);
        if (o == NULL) {
            *bad = i;
            return NULL;
        }
    }
    *o++ = '"';
    return o;
}

/* RFC 9110 token characters (method and header names). */
int truto_is_token(const char *s, size_t len)
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

size_t truto_first_control(const char *s, size_t len)
{
    size_t i = 0;
    for (; len - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        uint64_t del = w ^ (BYTES_01 * 0x7f);
        uint64_t flags = (((w - BYTES_01 * 0x20) & ~w) | ((del - BYTES_01) & ~del)) & BYTES_80;
        if (flags != 0)
            return i + first_flagged(flags);    /* the lowest flag is exact */
    }
    for (; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return i;
    return len;
}

/* Field values: visible characters, spaces and tabs; never CR, LF or NUL. */
int truto_is_field_value(const char *s, size_t len)
{
    for (size_t i = truto_first_control(s, len); i < len; i += 1 + truto_first_control(s + i + 1, len - i - 1))
        if (s[i] != '\t')
            return 0;
    return 1;
}

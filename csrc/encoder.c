/*
 * The encoder userdata: scratch memory owned by Lua for one encoding call,
 * plus the bookkeeping every table walk needs (depth, cycles, error paths).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "truto.h"

#define ENCODER_MT "truto.Encoder"

static int encoder_gc(lua_State *L)
{
    truto_encoder *e = (truto_encoder *)luaL_checkudata(L, 1, ENCODER_MT);
    free(e->out.data);
    free(e->prefix.data);
    free(e->keys);
    e->out.data = e->prefix.data = NULL;
    e->keys = NULL;
    e->out.len = e->out.cap = e->prefix.len = e->prefix.cap = 0;
    e->nkeys = e->capkeys = 0;
    return 0;
}

/* The registry holds the last encoder used, so that calls reuse its buffers
 * instead of allocating their own.  A call that finds it busy (a call that
 * raised an error left it so, or a finalizer runs an encoder inside an
 * encoder) makes a new one, which becomes the cached one. */
static const char cache_key = 0;

/* Buffers grown past this are given back when a call ends. */
#define KEEP_BYTES ((size_t)256 * 1024)

truto_encoder *truto_encoder_new(lua_State *L, const char *root)
{
    lua_pushlightuserdata(L, (void *)&cache_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    truto_encoder *e = (truto_encoder *)lua_touserdata(L, -1);
    if (e == NULL || e->busy) {
        lua_pop(L, 1);
        /* Zeroed and given its metatable before anything is allocated, so
         * the collector can always run the cleanup safely.  The visiting
         * and path arrays are written before they are read. */
        e = (truto_encoder *)lua_newuserdata(L, sizeof *e);
        memset(e, 0, offsetof(truto_encoder, visiting));
        if (luaL_newmetatable(L, ENCODER_MT)) {
            lua_pushcfunction(L, encoder_gc);
            lua_setfield(L, -2, "__gc");
        }
        lua_setmetatable(L, -2);
        lua_pushlightuserdata(L, (void *)&cache_key);
        lua_pushvalue(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    e->out.len = e->prefix.len = 0;
    e->nkeys = e->pairs = 0;
    e->depth = 0;
    e->root = root;
    e->busy = 1;
    return e;
}

static void shrink(truto_bytes *b)
{
    if (b->cap > KEEP_BYTES) {
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
    }
}

void truto_encoder_done(truto_encoder *e)
{
    shrink(&e->out);
    shrink(&e->prefix);
    e->busy = 0;
}

void truto_bytes_grow(lua_State *L, truto_bytes *b, size_t extra)
{
    if (extra > ((size_t)-1 >> 2) - b->len)
        luaL_error(L, "truto: output too large");
    size_t cap = b->cap ? b->cap : 1024;   /* one allocation holds a typical request */
    while (cap - b->len < extra)
        cap *= 2;
    char *p = (char *)realloc(b->data, cap);
    if (p == NULL)
        luaL_error(L, "truto: out of memory");
    b->data = p;
    b->cap = cap;
}

void truto_bytes_add(lua_State *L, truto_bytes *b, const char *s, size_t n)
{
    if (n == 0)
        return;
    truto_bytes_reserve(L, b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void truto_bytes_push(lua_State *L, const truto_bytes *b)
{
    lua_pushlstring(L, b->len ? b->data : "", b->len);
}

void truto_enter(lua_State *L, truto_encoder *e, int idx)
{
    const void *t = lua_topointer(L, idx);
    if (e->depth >= TRUTO_MAX_DEPTH)
        truto_path_error(L, e, "nesting deeper than %d levels", TRUTO_MAX_DEPTH);
    for (int i = 0; i < e->depth; i++)
        if (e->visiting[i] == t)
            truto_path_error(L, e, "cycle: this table contains itself");
    /* Each level holds a key, a value and a table being walked. */
    if (!lua_checkstack(L, 8))
        truto_path_error(L, e, "Lua stack exhausted");
    e->visiting[e->depth++] = t;
}

void truto_leave(truto_encoder *e)
{
    e->depth--;
}

void truto_path_key(truto_encoder *e, const char *key, size_t len)
{
    e->path[e->depth].key = key;
    e->path[e->depth].keylen = len;
}

void truto_path_index(truto_encoder *e, lua_Integer i)
{
    e->path[e->depth].key = NULL;
    e->path[e->depth].index = i;
}

static int is_identifier(const char *s, size_t len)
{
    if (len == 0 || len > 64 || !(s[0] == '_' || ((s[0] | 32) >= 'a' && (s[0] | 32) <= 'z')))
        return 0;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z')))
            return 0;
    }
    return 1;
}

/* The path of the value being encoded, written the way Lua code would
 * index it: body.tags[2].name, query["a b"]. */
static void push_path(lua_State *L, truto_encoder *e)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, e->root);
    for (int i = 1; i <= e->depth; i++) {
        const truto_path_elem *p = &e->path[i];
        if (p->key == NULL) {
            char num[32];
            snprintf(num, sizeof num, "[%lld]", (long long)p->index);
            luaL_addstring(&b, num);
        } else if (is_identifier(p->key, p->keylen)) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, p->key, p->keylen);
        } else {
            /* Keys are shown escaped and shortened so that a message stays
             * one printable line whatever the key holds. */
            luaL_addstring(&b, "[\"");
            size_t n = p->keylen < 40 ? p->keylen : 40;
            int raw_utf8 = truto_utf8_invalid_at(p->key, p->keylen) == (size_t)-1;
            /* Never cut a character in two. */
            while (raw_utf8 && n < p->keylen && n > 0 && ((unsigned char)p->key[n] & 0xC0) == 0x80)
                n--;
            for (size_t j = 0; j < n; j++) {
                unsigned char c = (unsigned char)p->key[j];
                if (c < 0x20 || c == 0x7f || c == '"' || c == '\\' || (c >= 0x80 && !raw_utf8)) {
                    char esc[8];
                    snprintf(esc, sizeof esc, "\\x%02X", c);
                    luaL_addstring(&b, esc);
                } else {
                    luaL_addchar(&b, (char)c);
                }
            }
            if (n < p->keylen)
                luaL_addstring(&b, "...");
            luaL_addstring(&b, "\"]");
        }
    }
    luaL_pushresult(&b);
}

int truto_path_error(lua_State *L, truto_encoder *e, const char *fmt, ...)
{
    va_list ap;
    lua_checkstack(L, 8);
    push_path(L, e);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return luaL_error(L, "truto: %s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
}

void truto_check_utf8(lua_State *L, truto_encoder *e, const char *s, size_t len, const char *what)
{
    size_t bad = truto_utf8_invalid_at(s, len);
    if (bad != (size_t)-1)
        truto_path_error(L, e, "invalid UTF-8 %sat byte %d", what, (int)bad + 1);
}

/* Bytewise order.  Most keys differ in their first byte, which an empty
 * key has too: Lua ends every string with a '\0'. */
static int key_cmp(const truto_key *x, const truto_key *y)
{
    unsigned char a = (unsigned char)x->str[0], b = (unsigned char)y->str[0];
    if (a != b)
        return a < b ? -1 : 1;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->str, y->str, n);
    if (c != 0)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static int key_order(const void *a, const void *b)
{
    return key_cmp((const truto_key *)a, (const truto_key *)b);
}

void truto_add_key(lua_State *L, truto_encoder *e, const char *str, size_t len, int value)
{
    if (e->nkeys == e->capkeys) {
        size_t cap = e->capkeys ? e->capkeys * 2 : 32;
        truto_key *k = (truto_key *)realloc(e->keys, cap * sizeof *k);
        if (k == NULL)
            luaL_error(L, "truto: out of memory");
        e->keys = k;
        e->capkeys = cap;
    }
    truto_key *k = &e->keys[e->nkeys++];
    k->str = str;
    k->len = len;
    k->value = value;
}

void truto_drop_keys(lua_State *L, truto_encoder *e, size_t first)
{
    /* Sorting moved the keys: the lowest value slot is where the run began. */
    int lowest = 0;
    for (size_t i = first; i < e->nkeys; i++)
        if (lowest == 0 || e->keys[i].value < lowest)
            lowest = e->keys[i].value;
    if (lowest > 0)
        lua_settop(L, lowest - 1);
    e->nkeys = first;
}

void truto_sort_keys(truto_encoder *e, size_t first)
{
    if (e->nkeys - first < 2)
        return;     /* also keeps e->keys + first off a NULL e->keys (UB) */
    truto_key *keys = e->keys + first;
    size_t n = e->nkeys - first;
    if (n > 16) {
        qsort(keys, n, sizeof *keys, key_order);
        return;
    }
    /* Objects in requests are small: an insertion sort beats qsort there. */
    for (size_t i = 1; i < n; i++) {
        truto_key k = keys[i];
        size_t j = i;
        for (; j > 0 && key_cmp(&keys[j - 1], &k) > 0; j--)
            keys[j] = keys[j - 1];
        keys[j] = k;
    }
}

size_t truto_sorted_keys(lua_State *L, truto_encoder *e, int idx)
{
    size_t first = e->nkeys;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        size_t len;
        /* The table holds the string: it outlives the walk. */
        const char *str = lua_tolstring(L, -1, &len);
        truto_add_key(L, e, str, len, 0);
    }
    truto_sort_keys(e, first);
    return first;
}

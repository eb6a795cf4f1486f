/*
 * A response's header block, kept as received and read when asked.
 *
 * The libcurl transport returns its header lines as a truto.headers
 * userdata rather than a table: most calls read one or two fields (the
 * client's Content-Type, a redirect's Location), and building the table
 * of every field cost more than the rest of s:perform beyond the transfer.
 * Indexing the block by a lower-case name gives what the table would hold
 * under it; truto.core's header_table(block) builds that table (the
 * client's Response does so when its `headers` are first read; errors.new
 * before it scrubs them).  Both read the lines through next_field, so they
 * cannot disagree.  Linked into both C modules: the metatable is made by
 * whichever pushes a block first.
 */
#include <string.h>

#include "truto.h"

typedef struct {
    size_t len;
    char data[1];
} head_block;

/* One field of a block: its name as received (valid until the next field
 * that is not a continuation) and its value without surrounding blanks. */
typedef struct {
    const char *p, *end;        /* what is left to read */
    const char *name, *value;
    size_t name_len, value_len;
    int fold;                   /* an obs-fold line: continues the previous field */
} field_reader;

static void reader_init(field_reader *f, const char *data, size_t len)
{
    /* No arithmetic on a NULL buffer (nothing received yet): UB in C. */
    f->p = data;
    f->end = len ? data + len : data;
    f->name = NULL;
    f->name_len = 0;
}

/* The next field; 0 at the end.  Status lines, blank lines, lines without
 * a name and a continuation with no field before it are skipped. */
static int next_field(field_reader *f)
{
    while (f->p != NULL && f->p < f->end) {
        const char *line = f->p;
        const char *eol = (const char *)memchr(line, '\n', (size_t)(f->end - line));
        const char *stop = eol != NULL ? eol : f->end;
        f->p = eol != NULL ? eol + 1 : f->end;
        if (stop > line && stop[-1] == '\r')
            stop--;
        if (stop == line || (stop - line >= 5 && memcmp(line, "HTTP/", 5) == 0))
            continue;
        const char *v;
        f->fold = *line == ' ' || *line == '\t';
        if (f->fold) {
            if (f->name == NULL)
                continue;
            v = line;
        } else {
            const char *colon = (const char *)memchr(line, ':', (size_t)(stop - line));
            if (colon == NULL || colon == line)
                continue;
            f->name = line;
            f->name_len = (size_t)(colon - line);
            v = colon + 1;
        }
        while (v < stop && (*v == ' ' || *v == '\t'))
            v++;
        while (stop > v && (stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        f->value = v;
        f->value_len = (size_t)(stop - v);
        return 1;
    }
    return 0;
}

static char lower(char c)
{
    return (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
}

/* Pushes the field's name in lower case. */
static void push_lower_name(lua_State *L, const field_reader *f)
{
    char small[256];
    if (f->name_len <= sizeof small) {
        for (size_t i = 0; i < f->name_len; i++)
            small[i] = lower(f->name[i]);
        lua_pushlstring(L, small, f->name_len);
    } else {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (size_t i = 0; i < f->name_len; i++)
            luaL_addchar(&b, lower(f->name[i]));
        luaL_pushresult(&b);
    }
}

/* The separator before a field's value joined to what came before it under
 * the same name: ", " for a repeat, " " for a continuation. */
static const char *separator(const field_reader *f)
{
    return f->fold ? " " : ", ";
}

static void push_metatable(lua_State *L);

void truto_push_header_block(lua_State *L, const char *data, size_t len)
{
    head_block *b = (head_block *)lua_newuserdata(L, offsetof(head_block, data) + len);
    b->len = len;
    if (len)
        memcpy(b->data, data, len);
    push_metatable(L);
    lua_setmetatable(L, -2);
}

/* Pushes the table of every field of b.  A value joined from several
 * lines is gathered in a list of pieces and made once at the end: joining
 * as it goes would copy it again at each repeat (quadratic in the lines a
 * server sends). */
static void push_table(lua_State *L, const head_block *b)
{
    field_reader f;
    int lines = 0;
    for (const char *p = b->data, *end = b->data + b->len; p < end; lines++) {
        p = (const char *)memchr(p, '\n', (size_t)(end - p));
        if (p == NULL)
            break;
        p++;
    }
    /* Sized once (the status line is one too many): no rehash as it fills. */
    lua_createtable(L, 0, lines);
    int t = lua_gettop(L);
    lua_pushnil(L);                     /* t + 1: the current field's name */
    lua_pushnil(L);                     /* t + 2: name -> pieces, for joined values */
    reader_init(&f, b->data, b->len);
    while (next_field(&f)) {
        if (!f.fold) {
            push_lower_name(L, &f);
            lua_replace(L, t + 1);
        }
        lua_pushvalue(L, t + 1);
        lua_rawget(L, t);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushvalue(L, t + 1);
            lua_pushlstring(L, f.value, f.value_len);
            lua_rawset(L, t);
            continue;
        }
        if (lua_isnil(L, t + 2)) {
            lua_newtable(L);
            lua_replace(L, t + 2);
        }
        lua_pushvalue(L, t + 1);
        lua_rawget(L, t + 2);
        if (lua_isnil(L, -1)) {         /* the second piece: the first is the value so far */
            lua_pop(L, 1);
            lua_createtable(L, 4, 0);
            lua_pushvalue(L, -2);
            lua_rawseti(L, -2, 1);
            lua_pushvalue(L, t + 1);
            lua_pushvalue(L, -2);
            lua_rawset(L, t + 2);
        }
        int n = (int)lua_rawlen(L, -1);
        lua_pushstring(L, separator(&f));
        lua_rawseti(L, -2, n + 1);
        lua_pushlstring(L, f.value, f.value_len);
        lua_rawseti(L, -2, n + 2);
        lua_pop(L, 2);
    }
    if (!lua_isnil(L, t + 2)) {
        lua_pushnil(L);
        while (lua_next(L, t + 2)) {    /* name, pieces */
            luaL_Buffer buf;
            int pieces = lua_gettop(L);
            int n = (int)lua_rawlen(L, pieces);
            lua_pushvalue(L, -2);
            luaL_buffinit(L, &buf);
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, pieces, i);
                luaL_addvalue(&buf);
            }
            luaL_pushresult(&buf);
            lua_rawset(L, t);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, t);
}

/* The field's name equals key, a lower-case name (an upper-case letter in
 * key never matches, as in the table). */
static int name_is(const field_reader *f, const char *key, size_t key_len)
{
    if (f->name_len != key_len)
        return 0;
    for (size_t i = 0; i < key_len; i++)
        if (lower(f->name[i]) != key[i])
            return 0;
    return 1;
}

/* block[name]: the value the table would hold under name, or nil. */
static int l_index(lua_State *L)
{
    const head_block *b = (const head_block *)lua_touserdata(L, 1);
    size_t key_len;
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &key_len) : NULL;
    if (key == NULL) {
        lua_pushnil(L);
        return 1;
    }
    field_reader f;
    int current = 0;                    /* the field being read is key */
    int found = 0;
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    reader_init(&f, b->data, b->len);
    while (next_field(&f)) {
        if (!f.fold)
            current = name_is(&f, key, key_len);
        if (current) {
            if (found)
                luaL_addstring(&buf, separator(&f));
            luaL_addlstring(&buf, f.value, f.value_len);
            found = 1;
        }
    }
    luaL_pushresult(&buf);
    if (!found)
        lua_pushnil(L);
    return 1;
}

static void push_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, TRUTO_HEADERS_MT)) {
        lua_pushcfunction(L, l_index);
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, TRUTO_HEADERS_MT);
        lua_setfield(L, -2, "__name");       /* Lua 5.1 sets none */
    }
}

/* truto.header_table(headers) -> the table of a header block's fields
 * (names in lower case, repeats joined with ", ", continuations with " "),
 * a new one at each call; a table is returned as it is. */
static int l_header_table(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_settop(L, 1);
        return 1;
    }
    push_table(L, (const head_block *)luaL_checkudata(L, 1, TRUTO_HEADERS_MT));
    return 1;
}

void truto_open_headers(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"header_table", l_header_table},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}

/*
 * The request-body writer (DESIGN.md "JSON bodies").  lua-cjson cannot write
 * an empty array and keeps 14 digits, so bodies are written here: sorted
 * keys, exact integers, round-trip floats, validated UTF-8, and errors that
 * name the offending path.
 */
#include <string.h>

#include "truto.h"

/* list_fields, here and below: the stack index of the set of top-level
 * field names whose empty tables are arrays, when the value at idx is such
 * a field (its key is then the last of the path); else 0. */
static void encode_value(lua_State *L, truto_encoder *e, int idx, int list_fields);

/* Appends ",", when not first, then the string as JSON, then suffix ("" or ":").
 * One reservation covers the lot; invalid UTF-8 raises a path error. */
static void add_string(lua_State *L, truto_encoder *e, const char *s, size_t len, int comma,
                       const char *suffix, const char *what)
{
    truto_bytes *out = &e->out;
    truto_bytes_reserve(L, out, len * 6 + 10);
    char *o = out->data + out->len;
    size_t bad;
    if (comma)
        *o++ = ',';
    o = truto_json_string(o, s, len, &bad);
    if (o == NULL)
        truto_path_error(L, e, "invalid UTF-8 %sat byte %d", what, (int)bad + 1);
    if (*suffix)
        *o++ = *suffix;
    out->len = (size_t)(o - out->data);
}

/* Whether list_fields names the top-level field being written.  Walked,
 * not indexed: pushing the key as a string could run the collector, whose
 * finalizers could free the keys this writer points to. */
static int is_list_field(lua_State *L, truto_encoder *e, int list_fields)
{
    const truto_path_elem *field = &e->path[e->depth];
    lua_pushnil(L);
    while (lua_next(L, list_fields) != 0) {
        size_t len;
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *name = lua_tolstring(L, -2, &len);
            if (len == field->keylen && memcmp(name, field->key, len) == 0) {
                int yes = lua_toboolean(L, -1);
                lua_pop(L, 2);
                return yes;
            }
        }
        lua_pop(L, 1);
    }
    return 0;
}

static void encode_object(lua_State *L, truto_encoder *e, size_t first, int list_fields)
{
    size_t last = e->nkeys;
    truto_bytes_addc(L, &e->out, '{');
    for (size_t i = first; i < last; i++) {
        /* A copy: e->keys moves when a nested object adds its keys. */
        truto_key k = e->keys[i];
        truto_path_key(e, k.str, k.len);
        add_string(L, e, k.str, k.len, i > first, ":", "in key ");
        encode_value(L, e, k.value, list_fields);
    }
    truto_bytes_addc(L, &e->out, '}');
    truto_drop_keys(L, e, first);
}

static void encode_array(lua_State *L, truto_encoder *e, int idx, lua_Integer n)
{
    int item = lua_gettop(L) + 1;
    truto_bytes_addc(L, &e->out, '[');
    for (lua_Integer i = 1; i <= n; i++) {
        truto_path_index(e, i);
        if (i > 1)
            truto_bytes_addc(L, &e->out, ',');
        lua_rawgeti(L, idx, i);
        encode_value(L, e, item, 0);
        lua_pop(L, 1);
    }
    truto_bytes_addc(L, &e->out, ']');
}

/* fields_list: list_fields for the table's own fields (the top level). */
static void encode_table(lua_State *L, truto_encoder *e, int idx, int list_fields,
                         int fields_list)
{
    lua_Integer n;
    size_t first;
    truto_shape shape = truto_table_shape(L, e, idx, &n, &first);
    if (shape == TRUTO_EMPTY) {
        /* Counted like any table, marked or not, so that what decode_json
         * reads back from this output can be written again. */
        if (e->depth >= TRUTO_MAX_DEPTH)
            truto_path_error(L, e, "nesting deeper than %d levels", TRUTO_MAX_DEPTH);
        if (list_fields && is_list_field(L, e, list_fields))
            truto_bytes_addlit(L, &e->out, "[]");
        else
            truto_bytes_addlit(L, &e->out, "{}");
        return;
    }
    truto_enter(L, e, idx);
    if (shape == TRUTO_OBJECT)
        encode_object(L, e, first, fields_list);
    else
        encode_array(L, e, idx, n);
    truto_leave(e);
}

static void encode_value(lua_State *L, truto_encoder *e, int idx, int list_fields)
{
    size_t len;
    const char *s;

    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        add_string(L, e, s, len, 0, "", "");
        break;
    case LUA_TNUMBER:
        truto_bytes_reserve(L, &e->out, 32);
        len = truto_format_number(L, idx, e->out.data + e->out.len);
        if (len == 0)
            truto_path_error(L, e, "%s cannot be written as JSON", truto_nonfinite_name(L, idx));
        e->out.len += len;
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            truto_bytes_addlit(L, &e->out, "true");
        else
            truto_bytes_addlit(L, &e->out, "false");
        break;
    case LUA_TTABLE:
        encode_table(L, e, idx, list_fields, 0);
        break;
    default:
        if (!truto_is_null(L, idx))
            truto_path_error(L, e, "a %s cannot be written as JSON", luaL_typename(L, idx));
        truto_bytes_addlit(L, &e->out, "null");
        break;
    }
}

void truto_json_encode(lua_State *L, truto_encoder *e, int idx, int list_fields)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE)
        encode_table(L, e, idx, 0, list_fields);
    else
        encode_value(L, e, idx, 0);
}

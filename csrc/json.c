/*
 * The request-body writer (DESIGN.md "JSON bodies").  lua-cjson cannot write
 * an empty array and keeps 14 digits, so bodies are written here: sorted
 * keys, exact integers, round-trip floats, validated UTF-8, and errors that
 * name the offending path.
 */
#include "truto.h"

static void encode_value(lua_State *L, truto_encoder *e, int idx, int empty_as_array);

static int is_list_field(lua_State *L, truto_encoder *e, size_t i, int list_fields)
{
    truto_push_field(L, e, i, list_fields);
    int yes = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return yes;
}

static void encode_object(lua_State *L, truto_encoder *e, int idx, int list_fields, size_t first)
{
    size_t last = e->nkeys;
    truto_bytes_addc(L, &e->out, '{');
    for (size_t i = first; i < last; i++) {
        const char *key = e->keys[i].str;
        size_t len = e->keys[i].len;
        truto_path_key(e, key, len);
        truto_check_utf8(L, e, key, len, "in key ");
        if (i > first)
            truto_bytes_addc(L, &e->out, ',');
        truto_json_quote(L, &e->out, key, len);
        truto_bytes_addc(L, &e->out, ':');
        int as_array = list_fields && is_list_field(L, e, i, list_fields);
        truto_push_field(L, e, i, idx);
        encode_value(L, e, lua_gettop(L), as_array);
        lua_pop(L, 1);
    }
    truto_bytes_addc(L, &e->out, '}');
    truto_drop_keys(L, e, first);
}

static void encode_array(lua_State *L, truto_encoder *e, int idx, lua_Integer n)
{
    truto_bytes_addc(L, &e->out, '[');
    for (lua_Integer i = 1; i <= n; i++) {
        truto_path_index(e, i);
        if (i > 1)
            truto_bytes_addc(L, &e->out, ',');
        lua_rawgeti(L, idx, i);
        encode_value(L, e, lua_gettop(L), 0);
        lua_pop(L, 1);
    }
    truto_bytes_addc(L, &e->out, ']');
}

static void encode_table(lua_State *L, truto_encoder *e, int idx, int empty_as_array,
                         int list_fields)
{
    lua_Integer n;
    size_t first;
    truto_shape shape = truto_table_shape(L, e, idx, &n, &first);
    if (shape == TRUTO_EMPTY) {
        /* Counted like any table, marked or not, so that what decode_json
         * reads back from this output can be written again. */
        if (e->depth >= TRUTO_MAX_DEPTH)
            truto_path_error(L, e, "nesting deeper than %d levels", TRUTO_MAX_DEPTH);
        if (empty_as_array)
            truto_bytes_addlit(L, &e->out, "[]");
        else
            truto_bytes_addlit(L, &e->out, "{}");
        return;
    }
    truto_enter(L, e, idx);
    if (shape == TRUTO_OBJECT)
        encode_object(L, e, idx, list_fields, first);
    else
        encode_array(L, e, idx, n);
    truto_leave(e);
}

static void encode_value(lua_State *L, truto_encoder *e, int idx, int empty_as_array)
{
    char num[32];
    size_t len;
    const char *s;

    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        truto_check_utf8(L, e, s, len, "");
        truto_json_quote(L, &e->out, s, len);
        break;
    case LUA_TNUMBER:
        len = truto_format_number(L, idx, num);
        if (len == 0)
            truto_path_error(L, e, "%s cannot be written as JSON", truto_nonfinite_name(L, idx));
        truto_bytes_add(L, &e->out, num, len);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            truto_bytes_addlit(L, &e->out, "true");
        else
            truto_bytes_addlit(L, &e->out, "false");
        break;
    case LUA_TTABLE:
        encode_table(L, e, idx, empty_as_array, 0);
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

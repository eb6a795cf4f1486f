/*
 * Query strings in Truto's bracket notation (DESIGN.md "Query encoding"):
 * k[a]=v for objects, k[]=v for arrays of scalars, k[0][a]=v for arrays
 * that hold tables, keys sorted bytewise, RFC 3986 percent-encoding.
 */
#include <stdio.h>

#include "truto.h"

static void encode_value(lua_State *L, truto_encoder *e, int idx);

static void encode_scalar(lua_State *L, truto_encoder *e, int idx)
{
    char num[32];
    size_t len;
    const char *s;

    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        truto_check_utf8(L, e, s, len, "");
        truto_pct_encode(L, &e->out, s, len);
        break;
    case LUA_TNUMBER:
        len = truto_format_number(L, idx, num);
        if (len == 0)
            truto_path_error(L, e, "%s is not a valid query value", truto_nonfinite_name(L, idx));
        truto_pct_encode(L, &e->out, num, len);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            truto_bytes_addlit(L, &e->out, "true");
        else
            truto_bytes_addlit(L, &e->out, "false");
        break;
    default:
        if (!truto_is_null(L, idx))
            truto_path_error(L, e, "a %s cannot be a query value", luaL_typename(L, idx));
        break;  /* truto.null: "k=" */
    }
}

static void check_key(lua_State *L, truto_encoder *e, const char *key, size_t len)
{
    if (len == 0)
        truto_path_error(L, e, "empty key");
    truto_check_utf8(L, e, key, len, "in key ");
}

static void encode_object(lua_State *L, truto_encoder *e, size_t first)
{
    size_t last = e->nkeys;
    for (size_t i = first; i < last; i++) {
        const truto_key *k = &e->keys[i];
        size_t saved = e->prefix.len;
        truto_path_key(e, k->str, k->len);
        check_key(L, e, k->str, k->len);
        if (e->depth == 1) {
            truto_pct_encode(L, &e->prefix, k->str, k->len);
        } else {
            truto_bytes_addlit(L, &e->prefix, "%5B");
            truto_pct_encode(L, &e->prefix, k->str, k->len);
            truto_bytes_addlit(L, &e->prefix, "%5D");
        }
        encode_value(L, e, k->value);
        e->prefix.len = saved;
    }
    truto_drop_keys(L, e, first);
}

static void encode_array(lua_State *L, truto_encoder *e, int idx, lua_Integer n)
{
    int indexed = 0;   /* a table among the items makes "[]" ambiguous */
    for (lua_Integer i = 1; i <= n && !indexed; i++) {
        lua_rawgeti(L, idx, i);
        indexed = lua_type(L, -1) == LUA_TTABLE;
        lua_pop(L, 1);
    }
    for (lua_Integer i = 1; i <= n; i++) {
        size_t saved = e->prefix.len;
        truto_path_index(e, i);
        if (indexed) {
            char num[32];
            int len = snprintf(num, sizeof num, "%%5B%lld%%5D", (long long)(i - 1));
            truto_bytes_add(L, &e->prefix, num, (size_t)len);
        } else {
            truto_bytes_addlit(L, &e->prefix, "%5B%5D");
        }
        lua_rawgeti(L, idx, i);
        encode_value(L, e, lua_gettop(L));
        lua_pop(L, 1);
        e->prefix.len = saved;
    }
}

static void encode_value(lua_State *L, truto_encoder *e, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE) {
        if (e->pairs++)
            truto_bytes_addc(L, &e->out, '&');
        truto_bytes_add(L, &e->out, e->prefix.data, e->prefix.len);
        truto_bytes_addc(L, &e->out, '=');
        encode_scalar(L, e, idx);
        return;
    }
    lua_Integer n;
    size_t first;
    truto_shape shape = truto_table_shape(L, e, idx, &n, &first);
    if (shape == TRUTO_EMPTY)
        return;     /* nothing to say: empty tables are left out */
    if (shape == TRUTO_ARRAY && e->depth == 0)
        truto_path_error(L, e, "must be a table of named parameters, not an array");
    truto_enter(L, e, idx);
    if (shape == TRUTO_OBJECT)
        encode_object(L, e, first);
    else
        encode_array(L, e, idx, n);
    truto_leave(e);
}

void truto_query_encode(lua_State *L, truto_encoder *e, int idx)
{
    encode_value(L, e, lua_absindex(L, idx));
}

/*
 * What a Lua table stands for in JSON and in a query: an array (keys 1..n),
 * an object (string keys), or nothing yet (empty).  truto.array/truto.object
 * marks settle the empty case and are checked against the contents.
 */
#include "truto.h"

static int has_mark(lua_State *L, int idx, const char *name)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, name);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

truto_shape truto_table_shape(lua_State *L, truto_encoder *e, int idx, lua_Integer *n,
                              size_t *first)
{
    lua_Integer count = 0, max = 0;
    int strings = 0, others = 0;

    *first = e->nkeys;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        int t = lua_type(L, -1);
        if (t == LUA_TSTRING) {
            /* A copy of the key stays below the iteration key, for the
             * encoder to look the value up with. */
            if (!lua_checkstack(L, 3))
                truto_path_error(L, e, "Lua stack exhausted");
            strings++;
            lua_pushvalue(L, -1);
            lua_insert(L, -2);
            truto_push_key(L, e, -2);
            e->keys[e->nkeys - 1].slot = lua_gettop(L) - 1;
        } else if (t == LUA_TNUMBER) {
            lua_Number d = lua_tonumber(L, -1);
            lua_Integer i = 0;
#if LUA_VERSION_NUM >= 503
            if (lua_isinteger(L, -1))
                i = lua_tointeger(L, -1);
            else
#endif
            /* In range before the cast: converting 2^63 or inf is UB. */
            if (d >= 1 && d < 9223372036854775807.0 && d == (lua_Number)(lua_Integer)d)
                i = (lua_Integer)d;
            if (i >= 1) {
                count++;
                if (i > max)
                    max = i;
            } else {
                others++;
            }
        } else {
            others++;
        }
    }

    int as_array = has_mark(L, idx, TRUTO_ARRAY_MT);
    /* The client takes these out of a body's top level before writing it. */
    if (has_mark(L, idx, TRUTO_FILE_MT))
        truto_path_error(L, e, "a truto.file value can only be a top-level field of a body "
                               "(or an item of a top-level list), sent as multipart/form-data");
    if (has_mark(L, idx, TRUTO_RAW_MT))
        truto_path_error(L, e, "a truto.raw value can only be a whole body");
    int as_object = !as_array && has_mark(L, idx, TRUTO_OBJECT_MT);
    *n = max;
    if (others)
        truto_path_error(L, e, "table keys must be strings (object) or 1..n (array)");
    if (strings && count)
        truto_path_error(L, e, "table mixes string keys and array items");
    if (as_array && strings)
        truto_path_error(L, e, "truto.array() table has string keys");
    if (as_object && count)
        truto_path_error(L, e, "truto.object() table has array items");
    if (count && max != count) {
        /* A hole lies within 1..count+1, so this scan is short. */
        int hole = 1;
        for (lua_rawgeti(L, idx, hole); !lua_isnil(L, -1); lua_rawgeti(L, idx, ++hole))
            lua_pop(L, 1);
        truto_path_error(L, e, "sparse array: item %d is nil but a later index is set", hole);
    }
    if (as_array || count)
        return TRUTO_ARRAY;
    if (as_object || strings) {
        truto_sort_keys(e, *first);
        return TRUTO_OBJECT;
    }
    return TRUTO_EMPTY;
}

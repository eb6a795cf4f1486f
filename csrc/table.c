/*
 * What a Lua table stands for in JSON and in a query: an array (keys 1..n),
 * an object (string keys), or nothing yet (empty).  truto.array/truto.object
 * marks settle the empty case and are checked against the contents.
 */
#include "truto.h"

/* Whether the metatable on top of the stack is the registry's name. */
static int is_mark(lua_State *L, const char *name)
{
    luaL_getmetatable(L, name);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    return same;
}

typedef enum { MARK_NONE, MARK_ARRAY, MARK_OBJECT } table_mark;

static table_mark mark_of(lua_State *L, truto_encoder *e, int idx)
{
    if (!lua_getmetatable(L, idx))
        return MARK_NONE;
    table_mark m = MARK_NONE;
    if (is_mark(L, TRUTO_ARRAY_MT))
        m = MARK_ARRAY;
    /* The client takes these out of a body's top level before writing it. */
    else if (is_mark(L, TRUTO_FILE_MT))
        truto_path_error(L, e, "a truto.file value can only be a top-level field of a body "
                               "(or an item of a top-level list), sent as multipart/form-data");
    else if (is_mark(L, TRUTO_RAW_MT))
        truto_path_error(L, e, "a truto.raw value can only be a whole body");
    else if (is_mark(L, TRUTO_OBJECT_MT))
        m = MARK_OBJECT;
    lua_pop(L, 1);
    return m;
}

truto_shape truto_table_shape(lua_State *L, truto_encoder *e, int idx, lua_Integer *n,
                              size_t *first)
{
    lua_Integer count = 0, max = 0;
    int strings = 0, others = 0;
    int top = lua_gettop(L), room = 0;

    *first = e->nkeys;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            /* The value stays on the stack, below the key that drives the
             * walk: one slot per key, and no lookup to find it again. */
            if (room < 3) {
                if (!lua_checkstack(L, 32))
                    truto_path_error(L, e, "Lua stack exhausted");
                room = 32;
            }
            room--;
            strings++;
            size_t len;
            const char *key = lua_tolstring(L, -2, &len);
            truto_add_key(L, e, key, len, ++top);
            lua_insert(L, -2);
            continue;
        }
        lua_pop(L, 1);
        lua_Integer i = truto_sequence_position(L, -1);
        if (i >= 1) {
            count++;
            if (i > max)
                max = i;
        } else {
            others++;
        }
    }

    table_mark m = mark_of(L, e, idx);
    int as_array = m == MARK_ARRAY, as_object = m == MARK_OBJECT;
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

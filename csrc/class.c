/*
 * The Lua classes of the C modules' userdata (truto.Session, truto.Multi,
 * truto.Inflater): their metatables and __tostring.  Shared by truto.core
 * and truto.curl_core (each links its own copy).
 */
#include "truto.h"

int truto_push_handle_name(lua_State *L, const char *name, int closed)
{
    lua_pushfstring(L, "%s (%s%p)", name, closed ? "closed, " : "", lua_touserdata(L, 1));
    return 1;
}

void truto_open_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction cleanup, lua_CFunction tostring, const char *ctor_name,
                      lua_CFunction ctor)
{
    if (luaL_newmetatable(L, name)) {
        lua_pushstring(L, name);
        lua_setfield(L, -2, "__name");
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        /* close, __gc and __close (Lua 5.4's to-be-closed variables; the
         * others never look) are one value: each push of a C function
         * makes a new one in the Lua 5.1 API. */
        lua_pushcfunction(L, cleanup);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "close");
        lua_pushvalue(L, -1);
        lua_setfield(L, -4, "__gc");
        lua_setfield(L, -3, "__close");
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, ctor);
    lua_setfield(L, -2, ctor_name);
}

/* The libcurl session (truto.Session): not built yet. */
#include "truto.h"

void truto_open_session(lua_State *L)
{
    (void)L;
}

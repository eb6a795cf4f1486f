/*
 * The response-header parsing of csrc/session.c, without a network: the
 * input is split into lines and fed to on_header (the CURLOPT_HEADERFUNCTION
 * callback) as libcurl would, then truto_push_headers (curl_common.c)
 * reads what was kept, and parse_http_date reads every
 * value (Retry-After, X-RateLimit-Reset).  session.c is included so that
 * its static functions can be called; the harness links every other object
 * of the core.  (on_header keeps lines through truto_reply_header, which
 * csrc/multi.c's callback calls alone, and both hand them to the same
 * truto_push_headers.)
 * Properties: the block truto_push_headers gives reads, name by name, what
 * core.header_table makes of it: lower-case names without ':' or LF and
 * values without LF (a stray CR inside a line is the server's text).
 */
#include "../csrc/session.c"

#include "fuzz_lua.h"

static CURL *easy;      /* for curl_easy_getinfo in on_header; never performs */

static void fuzz_one(lua_State *L, input *in, int core)
{
    session s;
    memset(&s, 0, sizeof s);
    if (easy == NULL)
        easy = curl_easy_init();
    s.easy = easy;

    const char *p = (const char *)in->p, *end = (const char *)in->end;
    int ok = 1;
    while (ok && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl != NULL ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        /* libcurl hands over a private copy of each line: so do we, so that
         * ASan sees a read past it. */
        char *line = malloc(len ? len : 1);
        if (line == NULL)
            break;
        memcpy(line, p, len);
        ok = on_header(line, 1, len, &s) == len;
        free(line);
        p += len;
    }
    if (!s.reply.too_large && !s.reply.oom) {
        /* The block the session returns, and the table header_table makes
         * of it: indexing the block by a name gives the table's value. */
        truto_push_headers(L, &s.reply.head);
        int block = lua_gettop(L);
        lua_pushvalue(L, block);
        FUZZ_CHECK(fuzz_call(L, core, "header_table", 1, 1) == 0, "header_table raised");
        FUZZ_CHECK(lua_istable(L, -1), "header_table gave a %s", luaL_typename(L, -1));
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t) != 0) {
            lua_pushvalue(L, -2);
            lua_gettable(L, block);
            FUZZ_CHECK(lua_rawequal(L, -1, -2), "the block and header_table disagree on a name");
            lua_pop(L, 1);
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            const char *value = lua_tolstring(L, -1, &vlen);
            for (size_t i = 0; i < nlen; i++)
                FUZZ_CHECK(!(name[i] >= 'A' && name[i] <= 'Z') && name[i] != ':' && name[i] != '\n',
                           "bad byte 0x%02x in header name", (unsigned char)name[i]);
            for (size_t i = 0; i < vlen; i++)
                FUZZ_CHECK(value[i] != '\n', "LF in a header value");
            lua_pushvalue(L, -1);
            FUZZ_CHECK(fuzz_call(L, core, "parse_http_date", 1, 1) == 0, "parse_http_date raised");
            FUZZ_CHECK(lua_isnil(L, -1) || lua_type(L, -1) == LUA_TNUMBER, "parse_http_date gave a %s",
                       luaL_typename(L, -1));
            lua_pop(L, 2);
        }
    }
    truto_reply_free(&s.reply);
}

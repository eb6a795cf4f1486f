/*
 * bench/lua_floor.c: the "Lua floor" of B2 and B3, a bench-only Lua module
 * (build/bench/lua_floor.so, built by bench/run; not installed, not part of
 * the library).  It does the least any Lua binding of libcurl + cJSON must
 * do per call, and nothing more: take the body as a Lua table, make it a
 * cJSON tree (keys in sorted order, so the bytes are the core's), print it,
 * send it as curl_loop.c and curl_multi.c send theirs (bench_curl.h: the
 * same options, header lines, fresh Idempotency-Key, keep-alive and gzip),
 * parse the answer with cJSON and give it back as Lua tables.  No response
 * headers, no retries, no checks beyond what keeps it from crashing.
 *
 *   local floor = require "lua_floor"
 *   floor.null                  JSON null both ways: a NULL light userdata, as truto.null
 *   floor.encode(body)          the JSON text the body is sent as
 *   local s = floor.session()   one easy handle, reused
 *   s:perform(method, url, header_lines, body) -> status, answer | nil, err
 *   local m = floor.multi(n)    a multi handle, n easy handles in flight
 *   m:perform(method, url, header_lines, bodies) -> { answer, ... } | nil, err
 *   s:close(), m:close()
 *
 * header_lines are the request's fixed lines ("Name: value"), as the C
 * programs get them.  An answer that is not JSON, a failed transfer and (in
 * a batch) a non-2xx status return nil, err.  Whatever a call holds (trees,
 * printed bodies, header lists) is kept in its userdata, so a raise in the
 * middle of a call leaks nothing: the next call or the collector frees it.
 */
#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>

#include "bench_curl.h"

#define MAX_DEPTH 1000
#define MAX_IN_FLIGHT 1024
#define SESSION_MT "lua_floor.session"
#define MULTI_MT "lua_floor.multi"

/* One easy handle and what its request in flight holds. */
typedef struct {
    CURL *easy;
    buffer answer;
    struct curl_slist *headers;
    char *text;              /* the printed body, while in flight */
    char *method, *url;      /* what the handle was last set to */
    lua_Integer index;       /* multi: the request's place in the batch */
    int in_flight;           /* multi: added to the multi handle */
    char errbuf[CURL_ERROR_SIZE];
} transfer;

typedef struct {
    transfer t;
    cJSON *tree;             /* a request or answer tree being converted */
    unsigned long prefix;
    long count;              /* requests sent: the Idempotency-Key's suffix */
    int closed;
} session;

typedef struct {
    CURLM *multi;
    cJSON *tree;
    unsigned long prefix;
    long count;
    int n, closed;
    transfer **idle;
    transfer slots[];
} multi;

/* ---- Lua table -> cJSON ------------------------------------------------ */

typedef struct {
    const char *key;
    size_t len;
    int value;               /* stack index of the value */
} member;

static int member_order(const void *a, const void *b)
{
    const member *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static void sort_members(member *m, int n)
{
    if (n > 16) {
        qsort(m, (size_t)n, sizeof *m, member_order);
        return;
    }
    /* Objects in requests are small: an insertion sort beats qsort there. */
    for (int i = 1; i < n; i++) {
        member k = m[i];
        int j = i - 1;
        for (; j >= 0 && member_order(&m[j], &k) > 0; j--)
            m[j + 1] = m[j];
        m[j + 1] = k;
    }
}

/* 1 when the table at idx is a list (keys 1..n, n > 0), 0 for an object;
 * raises for a table that is both or a sparse list. */
static int is_list(lua_State *L, int idx)
{
    lua_Unsigned n = lua_rawlen(L, idx);
    if (n == 0)
        return 0;
    lua_Unsigned pairs = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        pairs++;
    }
    if (pairs != n)
        luaL_error(L, "lua_floor: a list with holes or with other keys");
    return 1;
}

static void fill(lua_State *L, cJSON *node, int idx, int depth);

/* The value at idx as a new item of parent (under key, or appended when key
 * is NULL); attached before it is filled, so the root owns everything. */
static void add_value(lua_State *L, cJSON *parent, const char *key, int idx, int depth)
{
    cJSON *item;
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        item = cJSON_CreateBool(lua_toboolean(L, idx));
        break;
    case LUA_TNUMBER:
        item = cJSON_CreateNumber((double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len)
            luaL_error(L, "lua_floor: a string with a NUL byte");
        item = cJSON_CreateString(s);
        break;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != NULL)
            luaL_error(L, "lua_floor: cannot send a light userdata other than floor.null");
        item = cJSON_CreateNull();
        break;
    case LUA_TTABLE:
        item = is_list(L, idx) ? cJSON_CreateArray() : cJSON_CreateObject();
        break;
    default:
        return (void)luaL_error(L, "lua_floor: cannot send a %s", luaL_typename(L, idx));
    }
    if (item == NULL || !(key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item))) {
        cJSON_Delete(item);
        luaL_error(L, "lua_floor: out of memory");
    }
    if (cJSON_IsArray(item) || cJSON_IsObject(item))
        fill(L, item, idx, depth + 1);
}

/* Fills node (an array or object made for the table at idx) with its values. */
static void fill(lua_State *L, cJSON *node, int idx, int depth)
{
    if (depth > MAX_DEPTH)
        luaL_error(L, "lua_floor: tables nested over %d deep (a cycle?)", MAX_DEPTH);
    luaL_checkstack(L, 4, "lua_floor: nested too deep");
    int base = lua_gettop(L);
    if (cJSON_IsArray(node)) {
        lua_Unsigned n = lua_rawlen(L, idx);
        for (lua_Unsigned i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (lua_Integer)i);
            add_value(L, node, NULL, base + 1, depth);
            lua_settop(L, base);
        }
        return;
    }
    /* Every pair stays on the stack (key, value) while the keys are sorted. */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "lua_floor: an object key that is not a string");
        luaL_checkstack(L, 3, "lua_floor: an object too large");
        lua_pushvalue(L, -2);
        n++;
    }
    member small[32];
    member *m = n <= 32 ? small : lua_newuserdatauv(L, (size_t)n * sizeof *m, 0);
    for (int i = 0; i < n; i++) {
        m[i].key = lua_tolstring(L, base + 2 * i + 1, &m[i].len);
        m[i].value = base + 2 * i + 2;
    }
    sort_members(m, n);
    for (int i = 0; i < n; i++)
        add_value(L, node, m[i].key, m[i].value, depth);
    lua_settop(L, base);
}

/* The table at idx printed as JSON (malloc'd, the caller frees it); *tree
 * holds the tree meanwhile, so a raise leaves it to the caller's owner. */
static char *print_body(lua_State *L, int idx, cJSON **tree)
{
    cJSON_Delete(*tree);
    *tree = is_list(L, idx) ? cJSON_CreateArray() : cJSON_CreateObject();
    if (*tree == NULL)
        luaL_error(L, "lua_floor: out of memory");
    fill(L, *tree, idx, 0);
    char *text = cJSON_PrintUnformatted(*tree);
    cJSON_Delete(*tree);
    *tree = NULL;
    if (text == NULL)
        luaL_error(L, "lua_floor: out of memory");
    return text;
}

/* ---- cJSON -> Lua tables ----------------------------------------------- */

static void push_json(lua_State *L, const cJSON *v, int depth)
{
    if (depth > MAX_DEPTH)
        luaL_error(L, "lua_floor: an answer nested over %d deep", MAX_DEPTH);
    luaL_checkstack(L, 3, "lua_floor: an answer nested too deep");
    if (cJSON_IsNull(v)) {
        lua_pushlightuserdata(L, NULL);
    } else if (cJSON_IsBool(v)) {
        lua_pushboolean(L, cJSON_IsTrue(v));
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d >= -0x1p63 && d < 0x1p63 && (double)(lua_Integer)d == d)
            lua_pushinteger(L, (lua_Integer)d);
        else
            lua_pushnumber(L, (lua_Number)d);
    } else if (cJSON_IsString(v)) {
        lua_pushstring(L, v->valuestring);
    } else if (cJSON_IsArray(v)) {
        lua_createtable(L, cJSON_GetArraySize(v), 0);
        lua_Integer i = 0;
        for (const cJSON *c = v->child; c != NULL; c = c->next) {
            push_json(L, c, depth + 1);
            lua_rawseti(L, -2, ++i);
        }
    } else {
        lua_createtable(L, 0, cJSON_GetArraySize(v));
        for (const cJSON *c = v->child; c != NULL; c = c->next) {
            lua_pushstring(L, c->string);
            push_json(L, c, depth + 1);
            lua_rawset(L, -3);
        }
    }
}

/* Pushes the answer in t's buffer as Lua values; 0 (nothing pushed) when
 * it is not JSON.  *tree holds cJSON's tree while it is converted. */
static int push_answer(lua_State *L, transfer *t, cJSON **tree)
{
    cJSON_Delete(*tree);
    *tree = cJSON_ParseWithLength(t->answer.data, t->answer.len);
    if (*tree == NULL)
        return 0;
    push_json(L, *tree, 0);
    cJSON_Delete(*tree);
    *tree = NULL;
    return 1;
}

/* ---- a transfer ----------------------------------------------------------- */

static char *copy_of(const char *s)
{
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    return d ? memcpy(d, s, len) : NULL;
}

/* Sets t up for one request: its target (options set again only when it
 * changed), header lines, fresh key and body.  Raises on bad arguments. */
static void prepare(lua_State *L, transfer *t, cJSON **tree, int lines, int body, unsigned long prefix, long i)
{
    const char *method = luaL_checkstring(L, 2), *url = luaL_checkstring(L, 3);
    if (t->url == NULL || strcmp(t->url, url) != 0 || strcmp(t->method, method) != 0) {
        free(t->method);
        free(t->url);
        t->method = copy_of(method);
        t->url = copy_of(url);
        if (t->method == NULL || t->url == NULL) {
            free(t->method);
            free(t->url);
            t->method = t->url = NULL;
            luaL_error(L, "lua_floor: out of memory");
        }
        common_setopts(t->easy, t->method, t->url, &t->answer);
    }
    curl_slist_free_all(t->headers);
    t->headers = NULL;
    lua_Unsigned n = lua_rawlen(L, lines);
    for (lua_Unsigned k = 1; k <= n; k++) {
        lua_rawgeti(L, lines, (lua_Integer)k);
        const char *line = lua_tostring(L, -1);
        if (line == NULL)
            luaL_error(L, "lua_floor: header line %d is not a string", (int)k);
        struct curl_slist *h = curl_slist_append(t->headers, line);
        lua_pop(L, 1);
        if (h == NULL)
            luaL_error(L, "lua_floor: out of memory");
        t->headers = h;
    }
    struct curl_slist *h = finish_headers(t->headers, prefix, i);
    if (h == NULL)
        luaL_error(L, "lua_floor: out of memory");
    t->headers = h;
    curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
    free(t->text);
    t->text = NULL;
    t->text = print_body(L, body, tree);
    set_payload(t->easy, t->text, strlen(t->text));
    t->answer.len = 0;
    t->errbuf[0] = '\0';
}

static int init_transfer(transfer *t)
{
    memset(t, 0, sizeof *t);
    t->easy = curl_easy_init();
    if (t->easy == NULL)
        return 0;
    curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, on_header_ignored);
    curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    return 1;
}

static void free_transfer(transfer *t)
{
    if (t->easy)
        curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    free(t->text);
    free(t->answer.data);
    free(t->method);
    free(t->url);
    memset(t, 0, sizeof *t);
}

static const char *failure(transfer *t, CURLcode rc)
{
    return t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
}

/* ---- the session ------------------------------------------------------------- */

static int l_session(lua_State *L)
{
    session *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    s->closed = 1;
    luaL_setmetatable(L, SESSION_MT);
    if (!init_transfer(&s->t))
        return luaL_error(L, "lua_floor: curl_easy_init failed");
    s->closed = 0;
    s->prefix = key_prefix();
    return 1;
}

static session *check_session(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    if (s->closed)
        luaL_error(L, "lua_floor: the session is closed");
    return s;
}

static int l_session_perform(lua_State *L)
{
    session *s = check_session(L);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    prepare(L, &s->t, &s->tree, 4, 5, s->prefix, s->count++);
    CURLcode rc = curl_easy_perform(s->t.easy);
    free(s->t.text);
    s->t.text = NULL;
    if (rc != CURLE_OK) {
        lua_pushnil(L);
        lua_pushstring(L, failure(&s->t, rc));
        return 2;
    }
    long status = 0;
    curl_easy_getinfo(s->t.easy, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, status);
    if (!push_answer(L, &s->t, &s->tree)) {
        lua_pushnil(L);
        lua_pushfstring(L, "lua_floor: the answer (status %d) is not JSON", (int)status);
        return 2;
    }
    return 2;
}

/* s:encode(body): the JSON text perform sends for body. */
static int l_session_encode(lua_State *L)
{
    session *s = check_session(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    char *text = print_body(L, 2, &s->tree);
    lua_pushstring(L, text);
    cJSON_free(text);
    return 1;
}

static int l_session_close(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    if (!s->closed) {
        free_transfer(&s->t);
        cJSON_Delete(s->tree);
        s->tree = NULL;
        s->closed = 1;
    }
    return 0;
}

/* ---- the multi handle ---------------------------------------------------------- */

/* Takes every transfer still in flight (a raise or a failure left it there)
 * off the multi handle; all are idle again. */
static void settle(multi *m)
{
    for (int i = 0; i < m->n; i++) {
        transfer *t = &m->slots[i];
        if (t->in_flight)
            curl_multi_remove_handle(m->multi, t->easy);
        t->in_flight = 0;
        free(t->text);
        t->text = NULL;
        m->idle[i] = t;
    }
}

static int l_multi(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= MAX_IN_FLIGHT, 1, "1 to 1024 transfers in flight");
    multi *m = lua_newuserdatauv(L, sizeof *m + (size_t)n * (sizeof(transfer) + sizeof(transfer *)), 0);
    memset(m, 0, sizeof *m);
    m->closed = 1;
    luaL_setmetatable(L, MULTI_MT);
    m->idle = (transfer **)(m->slots + n);
    m->multi = curl_multi_init();
    if (m->multi == NULL)
        return luaL_error(L, "lua_floor: curl_multi_init failed");
    m->closed = 0;
    curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
    for (; m->n < n; m->n++) {
        if (!init_transfer(&m->slots[m->n]))
            return luaL_error(L, "lua_floor: curl_easy_init failed");
    }
    m->prefix = key_prefix();
    return 1;
}

static multi *check_multi(lua_State *L)
{
    multi *m = luaL_checkudata(L, 1, MULTI_MT);
    if (m->closed)
        luaL_error(L, "lua_floor: the multi handle is closed");
    return m;
}

/* The batch's failure, its message on the stack: everything taken off the
 * multi handle; returns nil, message. */
static int batch_failed(lua_State *L, multi *m)
{
    settle(m);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

static int l_multi_perform(lua_State *L)
{
    multi *m = check_multi(L);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    settle(m);
    lua_Integer total = (lua_Integer)lua_rawlen(L, 5), started = 0, done = 0;
    int nidle = m->n;
    lua_settop(L, 5);
    lua_createtable(L, (int)total, 0);
    while (done < total) {
        while (nidle > 0 && started < total) {
            transfer *t = m->idle[--nidle];
            lua_rawgeti(L, 5, started + 1);
            luaL_argcheck(L, lua_type(L, -1) == LUA_TTABLE, 5, "a list of body tables");
            prepare(L, t, &m->tree, 4, lua_gettop(L), m->prefix, m->count++);
            lua_pop(L, 1);
            t->index = ++started;
            curl_multi_add_handle(m->multi, t->easy);
            t->in_flight = 1;
        }
        int running = 0;
        CURLMcode mc = curl_multi_perform(m->multi, &running);
        if (mc != CURLM_OK) {
            lua_pushfstring(L, "lua_floor: %s", curl_multi_strerror(mc));
            return batch_failed(L, m);
        }
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            transfer *t;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            CURLcode rc = msg->data.result;
            curl_multi_remove_handle(m->multi, t->easy);
            t->in_flight = 0;
            free(t->text);
            t->text = NULL;
            m->idle[nidle++] = t;
            done++;
            int index = (int)t->index;
            if (rc != CURLE_OK)
                lua_pushfstring(L, "lua_floor: request %d: %s", index, failure(t, rc));
            else if (status < 200 || status >= 300)
                lua_pushfstring(L, "lua_floor: request %d: status %d", index, (int)status);
            else if (!push_answer(L, t, &m->tree))
                lua_pushfstring(L, "lua_floor: request %d: the answer is not JSON", index);
            else {
                lua_rawseti(L, 6, index);
                continue;
            }
            return batch_failed(L, m);
        }
        if (done < total && (nidle == 0 || started == total)) {
            mc = curl_multi_poll(m->multi, NULL, 0, 1000, NULL);
            if (mc != CURLM_OK) {
                lua_pushfstring(L, "lua_floor: %s", curl_multi_strerror(mc));
                return batch_failed(L, m);
            }
        }
    }
    return 1;
}

static int l_multi_close(lua_State *L)
{
    multi *m = luaL_checkudata(L, 1, MULTI_MT);
    if (!m->closed) {
        settle(m);
        for (int i = 0; i < m->n; i++)
            free_transfer(&m->slots[i]);
        curl_multi_cleanup(m->multi);
        cJSON_Delete(m->tree);
        m->tree = NULL;
        m->closed = 1;
    }
    return 0;
}

/* ---- the module ------------------------------------------------------------------ */

static const luaL_Reg session_methods[] = {
    { "perform", l_session_perform },
    { "encode", l_session_encode },
    { "close", l_session_close },
    { NULL, NULL },
};

static const luaL_Reg multi_methods[] = {
    { "perform", l_multi_perform },
    { "close", l_multi_close },
    { NULL, NULL },
};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

int luaopen_lua_floor(lua_State *L)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return luaL_error(L, "lua_floor: curl_global_init failed");
    new_class(L, SESSION_MT, session_methods, l_session_close);
    new_class(L, MULTI_MT, multi_methods, l_multi_close);
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_session);
    lua_setfield(L, -2, "session");
    lua_pushcfunction(L, l_multi);
    lua_setfield(L, -2, "multi");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}

/*
 * truto.redis_core: the Redis protocol (RESP2) of the shared rate-limit
 * store, on Debian's hiredis: its command writer and its reply reader,
 * neither of which does I/O, so the same code serves every socket the
 * library has (libcurl's in plain Lua, nginx's cosockets, the drivers of
 * the yielding hosts).  lua/truto/redis.lua holds the connection.
 *
 *   local resp = require "truto.redis_core"
 *   local bytes = resp.command { "EVALSHA", sha, 1, key, 50 }  -- strings and numbers
 *   local r = resp.reader(max_bytes)
 *   r:feed(bytes)          -> true | nil, message
 *   r:reply()              -> true, value | true, nil, message (the server's error)
 *                           | false (more bytes needed) | nil, message (not RESP, too large)
 *   r:close()              -- also __gc and __close
 *
 * A value is a string (bulk and status replies), an integer, false (a nil
 * bulk or array) or a table (an array; an error inside one is { err =
 * message }).  Bounds: a reply larger than max_bytes, or an array claiming
 * more elements than max_bytes could hold, fails at once; hiredis refuses
 * arrays nested deeper than 7.  The reader's replies are its own tree
 * (hiredis's default one is private to libhiredis and allocates the
 * elements an array claims before any arrives).
 *
 * A C module of its own, linked with hiredis: only a client with a Redis
 * store loads it.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "truto.h"

#define READER_MT "truto.RedisReader"
#define SMALLEST_ELEMENT 4          /* ":0\r\n", "$-1\r\n": the bytes one element takes at least */

typedef struct reply {
    int type;                       /* REDIS_REPLY_* */
    long long integer;
    char *str;                      /* strings, statuses and errors */
    size_t len;
    struct reply **element;         /* arrays */
    size_t elements;
} reply;

typedef struct {
    redisReader *r;
    struct reply *converting;       /* the reply being made Lua values */
    size_t max_bytes;
    size_t fed;                     /* bytes fed in all */
    size_t claimed;                 /* elements the arrays of the reply being read claim */
    size_t replied;                 /* of which the replies returned so far took */
    int too_large;                  /* an array was refused for its length */
    int closed;
} reader;

/* ---- hiredis's reply functions: a tree of `reply` ------------------------ */

static void free_reply(void *p)
{
    reply *r = (reply *)p;
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->elements && r->element != NULL; i++)
        free_reply(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

/* A reply of the task's type, hung on its parent array. */
static reply *new_reply(const redisReadTask *task)
{
    reply *r = (reply *)calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->type = task->type;
    if (task->parent != NULL) {
        reply *parent = (reply *)task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *create_string(const redisReadTask *task, char *s, size_t len)
{
    char *copy = (char *)malloc(len + 1);
    if (copy == NULL)
        return NULL;
    reply *r = new_reply(task);
    if (r == NULL) {
        free(copy);
        return NULL;
    }
    memcpy(copy, s, len);
    copy[len] = '\0';
    r->str = copy;
    r->len = len;
    return r;
}

/* An array is refused at its header when its elements, with those the
 * reply's other arrays claim, could not fit in the reader's bound: nested
 * arrays would otherwise allocate their claims over and over (the reader is
 * every task's privdata). */
static void *create_array(const redisReadTask *task, int elements)
{
    reader *owner = (reader *)task->privdata;
    if (owner != NULL && task->parent == NULL)
        owner->claimed = 0;         /* a new reply */
    size_t limit = owner != NULL ? owner->max_bytes / SMALLEST_ELEMENT : 0;
    if (elements < 0 || owner == NULL || (size_t)elements > limit - (owner->claimed < limit ? owner->claimed : limit)) {
        if (owner != NULL)
            owner->too_large = 1;
        return NULL;
    }
    reply *r = new_reply(task);
    if (r == NULL)
        return NULL;
    if (elements > 0) {
        r->element = (reply **)calloc((size_t)elements, sizeof *r->element);
        if (r->element == NULL) {
            if (task->parent != NULL)
                ((reply *)task->parent->obj)->element[task->idx] = NULL;
            free(r);
            return NULL;
        }
    }
    r->elements = (size_t)elements;
    owner->claimed += (size_t)elements;
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    reply *r = new_reply(task);
    if (r != NULL)
        r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    reply *r = new_reply(task);
    if (r != NULL)
        r->type = REDIS_REPLY_NIL;  /* the task's type is the bulk's or the array's */
    return r;
}

static redisReplyObjectFunctions functions = {
    create_string, create_array, create_integer, create_nil, free_reply,
};

/* ---- resp.command { ... } ------------------------------------------------ */

#define MAX_ARGS 64

static int l_command(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int argc = (int)lua_rawlen(L, 1);
    if (argc < 1 || argc > MAX_ARGS)
        return luaL_error(L, "truto: a Redis command takes 1 to %d words, got %d", MAX_ARGS, argc);
    const char *argv[MAX_ARGS];
    size_t argvlen[MAX_ARGS];
    luaL_checkstack(L, argc, "truto: Redis command");
    for (int i = 0; i < argc; i++) {
        lua_rawgeti(L, 1, i + 1);
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_error(L, "truto: word %d of a Redis command must be a string or a number, got %s", i + 1,
                              luaL_typename(L, -1));
        argv[i] = lua_tolstring(L, -1, &argvlen[i]);   /* a number becomes its string on the stack */
    }
    char *out = NULL;
    long long len = redisFormatCommandArgv(&out, argc, argv, argvlen);
    if (len < 0 || out == NULL)
        return luaL_error(L, "truto: out of memory");
    lua_pushlstring(L, out, (size_t)len);
    redisFreeCommand(out);
    return 1;
}

/* ---- resp.reader(max_bytes) ------------------------------------------------- */

static int reader_cleanup(lua_State *L)
{
    reader *rd = (reader *)luaL_checkudata(L, 1, READER_MT);
    if (rd->r != NULL) {
        redisReaderFree(rd->r);
        rd->r = NULL;
    }
    free_reply(rd->converting);
    rd->converting = NULL;
    rd->closed = 1;
    return 0;
}

static int reader_tostring(lua_State *L)
{
    reader *rd = (reader *)luaL_checkudata(L, 1, READER_MT);
    return truto_push_handle_name(L, READER_MT, rd->closed);
}

static reader *check_reader(lua_State *L)
{
    reader *rd = (reader *)luaL_checkudata(L, 1, READER_MT);
    if (rd->closed)
        luaL_error(L, "truto: Redis reader is closed");
    return rd;
}

static int l_reader(lua_State *L)
{
    lua_Integer max = luaL_checkinteger(L, 1);
    if (max < 16)
        return luaL_error(L, "truto: a Redis reader's bound must be at least 16 bytes");
    reader *rd = (reader *)lua_newuserdata(L, sizeof *rd);
    memset(rd, 0, sizeof *rd);
    luaL_getmetatable(L, READER_MT);
    lua_setmetatable(L, -2);
    rd->r = redisReaderCreateWithFunctions(&functions);
    if (rd->r == NULL)
        return luaL_error(L, "truto: out of memory");
    rd->r->privdata = rd;
    rd->max_bytes = (size_t)max;
    return 1;
}

static int push_message(lua_State *L, const char *what, const char *detail)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s%s", what, detail);
    return 2;
}

static int too_large(lua_State *L, const reader *rd)
{
    lua_pushnil(L);
    lua_pushfstring(L, "a Redis reply larger than %d bytes", (int)rd->max_bytes);
    return 2;
}

/* A reader that failed stays failed: hiredis keeps its error. */
static int reader_error(lua_State *L, const reader *rd)
{
    if (rd->too_large)
        return too_large(L, rd);
    return push_message(L, "not a Redis reply: ", rd->r->errstr);
}

static int l_feed(lua_State *L)
{
    reader *rd = check_reader(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (rd->r->err)
        return reader_error(L, rd);
    /* The bytes of the reply being read: hiredis consumes an array's
     * elements as they come, so its buffer alone does not bound a reply. */
    if (len > rd->max_bytes || rd->fed - rd->replied > rd->max_bytes - len) {
        rd->too_large = 1;
        rd->r->err = REDIS_ERR_OTHER;   /* stays failed, as hiredis's own errors do */
        return too_large(L, rd);
    }
    if (redisReaderFeed(rd->r, data, len) != REDIS_OK)
        return reader_error(L, rd);
    rd->fed += len;
    lua_pushboolean(L, 1);
    return 1;
}

static void push_value(lua_State *L, const reply *r)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_setfield(L, -2, "err");
        break;
    case REDIS_REPLY_ARRAY:
        luaL_checkstack(L, 4, "truto: Redis reply");
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_value(L, r->element[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    default:                        /* REDIS_REPLY_NIL */
        lua_pushboolean(L, 0);
    }
}

static int l_reply(lua_State *L)
{
    reader *rd = check_reader(L);
    free_reply(rd->converting);
    rd->converting = NULL;
    if (rd->r->err)
        return reader_error(L, rd);
    void *out = NULL;
    if (redisReaderGetReply(rd->r, &out) != REDIS_OK)
        return reader_error(L, rd);
    if (out == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    rd->replied = rd->fed - (rd->r->len - rd->r->pos);
    /* Held by the reader while it becomes Lua values: a push that raises
     * (out of memory) leaves it to the next call or the cleanup. */
    reply *r = rd->converting = (reply *)out;
    lua_pushboolean(L, 1);
    int n = 2;
    if (r->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, r->str, r->len);
        n = 3;
    } else {
        push_value(L, r);
    }
    rd->converting = NULL;
    free_reply(r);
    return n;
}

TRUTO_API int luaopen_truto_redis_core(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "feed", l_feed },
        { "reply", l_reply },
        { NULL, NULL },
    };
    lua_newtable(L);
    truto_open_class(L, READER_MT, methods, reader_cleanup, reader_tostring, "reader", l_reader);
    lua_pushcfunction(L, l_command);
    lua_setfield(L, -2, "command");
    return 1;
}

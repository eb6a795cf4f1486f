/*
 * The yielding transports' HTTP/1.1 response reading: lua/truto/http1.lua's
 * reader, read_head and read_body over the C parser (csrc/http1.c,
 * core.response_parser, on http-parser), on fuzz bytes as a server would
 * send them.
 *
 * Input: one byte of flags (bits 0-1 the method: GET, HEAD, POST, GET;
 * bit 2 no body limit; bit 3 a repeated segment), two for the body limit,
 * one for the number of cut points (up to 16) and two per cut, then, with
 * bit 3, one byte for the segment's start, one for its length and two for
 * its count; the rest is the server's bytes, where bytes 0xe0 to 0xfe
 * stand for HTTP tokens ("HTTP/1.1 ", "\r\n", "Content-Length: ", ...;
 * 0xff escapes the next byte), with the segment repeated (so that a short
 * input can make a header block or a line past the limits; at most 512 KiB
 * in all).
 *
 * The bytes are fed three ways: in one piece; in the pieces the cuts make,
 * none longer than 64 KiB (what receiveany hands out); and, when short, one
 * byte at a time; then recv says "closed".  Each run reads the head, then
 * the body with a deliver that keeps at most `limit` bytes and then fails
 * with its own error table.  Properties: no Lua error escapes; each read
 * asks for a positive integer count or nil; the outcome is a status
 * 200..999 with version "1.0" or "1.1" and lower-case token header names
 * without LF, fitting in MAX_HEAD_BYTES, or an error table of kind
 * protocol, network, too_large, timeout or decode with a message (`final`
 * only on protocol and decode, as the contract in HACKING.md says), or
 * deliver's own table unchanged; no body after HEAD, 204 or 304; a
 * Content-Length body of that length; a body read to the close never
 * reusable; the same status, version, headers, body and error (kind and
 * message) however the bytes arrive, and a connection reusable when read
 * whole is reusable when read in pieces.
 *
 * libFuzzer's own coverage sees C (csrc/http1.c; http-parser is Debian's
 * build, not instrumented); a line hook counts the edges between Lua lines
 * (the engine's and the driver's) in its extra counters.
 *
 * lua/truto/http1.lua is compiled once, from $TRUTO_LUA_DIR, else ./lua
 * (make fuzz runs from the repository's root), else ../../lua beside the
 * binary (build/fuzz/http1); each input's fresh state requires it
 * (package.preload holds the compiled chunk, package.path names the same
 * directory).
 */
#include <limits.h>
#include <unistd.h>

#include <lualib.h>

#include "fuzz_lua.h"

#define MAX_STREAM (1u << 19)

static char lua_dir[PATH_MAX];

static int has_engine(const char *dir)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/truto/http1.lua", dir);
    return access(path, R_OK) == 0;
}

/* The runs and the checks, in Lua: (http1, stream, cuts, method, limit) ->
 * nil, or the property that failed. */
static const char driver[] =
    "local http1, stream, cuts, method, limit = ...\n"
    "local MAXH, READ = http1.MAX_HEAD_BYTES, 65536\n"
    "local KINDS = { protocol = true, network = true, too_large = true, timeout = true, decode = true }\n"
    "local LIMIT = { kind = 'too_large', message = 'fuzz: body limit' }\n"
    "\n"
    "local core = require 'truto.core'\n"
    "local function run(next_piece)\n"
    "  local r = http1.reader(function(need)\n"
    "    if need ~= nil and (math.type(need) ~= 'integer' or need < 1) then error('need ' .. tostring(need)) end\n"
    "    local p = next_piece()\n"
    "    if p == nil then return nil, 'closed' end\n"
    "    return p\n"
    "  end, method)\n"
    "  local o = {}\n"
    "  local status, headers, version = http1.read_head(r)\n"
    "  if not status then\n"
    "    o.err = headers\n"
    "    return o\n"
    "  end\n"
    "  o.status, o.headers, o.version = status, core.header_table(headers), version\n"
    "  local n, parts = 0, {}\n"
    "  o.reusable, o.err = http1.read_body(r, method, status, headers, function(piece)\n"
    "    if type(piece) ~= 'string' or piece == '' then error('deliver got ' .. tostring(piece)) end\n"
    "    local before = n\n"
    "    n = n + #piece\n"
    "    if n > limit then\n"
    "      parts[#parts + 1] = piece:sub(1, limit - before)\n"
    "      return nil, LIMIT\n"
    "    end\n"
    "    parts[#parts + 1] = piece\n"
    "    return true\n"
    "  end)\n"
    "  o.body = table.concat(parts)\n"
    "  return o\n"
    "end\n"
    "\n"
    "local function fields(h)\n"
    "  local list = {}\n"
    "  for k, v in pairs(h or {}) do list[#list + 1] = tostring(k) .. ':' .. tostring(v) end\n"
    "  table.sort(list)\n"
    "  return table.concat(list, '\\n')\n"
    "end\n"
    "\n"
    "local function check(o, what)\n"
    "  local e = o.err\n"
    "  if e ~= nil then\n"
    "    if type(e) ~= 'table' then return what .. ': error is a ' .. type(e) end\n"
    "    if e ~= LIMIT then\n"
    "      if not KINDS[e.kind] then return what .. ': kind ' .. tostring(e.kind) end\n"
    "      if type(e.message) ~= 'string' or e.message == '' then return what .. ': no message' end\n"
    "      if e.final ~= nil and (e.final ~= true or (e.kind ~= 'protocol' and e.kind ~= 'decode')) then\n"
    "        return what .. ': final on ' .. e.kind\n"
    "      end\n"
    "    elseif o.body ~= nil and #o.body ~= limit then\n"
    "      return what .. ': body of ' .. #o.body .. ' bytes at the limit ' .. limit\n"
    "    end\n"
    "    if o.reusable ~= nil then return what .. ': reusable and an error' end\n"
    "  end\n"
    "  if o.status == nil then\n"
    "    if e == nil then return what .. ': neither status nor error' end\n"
    "    return nil\n"
    "  end\n"
    "  if math.type(o.status) ~= 'integer' or o.status < 200 or o.status > 999 then\n"
    "    return what .. ': status ' .. tostring(o.status)\n"
    "  end\n"
    "  if o.version ~= '1.0' and o.version ~= '1.1' then return what .. ': version ' .. tostring(o.version) end\n"
    "  if type(o.headers) ~= 'table' then return what .. ': headers are a ' .. type(o.headers) end\n"
    "  local block = 0\n"
    "  for k, v in pairs(o.headers) do\n"
    "    if type(k) ~= 'string' or type(v) ~= 'string' then return what .. ': a header not a string' end\n"
    "    block = block + #k + 2 + #v\n"
    "    if k ~= k:lower() or not k:match(\"^[!#$%%&'*+.^_`|~%w-]+$\") then return what .. ': name ' .. k end\n"
    "    if v:find('\\n', 1, true) then return what .. ': LF in ' .. k end\n"
    "  end\n"
    "  if e == nil and type(o.reusable) ~= 'boolean' then return what .. ': reusable ' .. tostring(o.reusable) end\n"
    "  if #o.body > limit then return what .. ': body past the limit' end\n"
    /* each field's name, ": " and value fit in the block the contract allows */
    "  if block > MAXH then return what .. ': a head of ' .. block .. ' bytes' end\n"
    "  local h = o.headers\n"
    "  if method == 'HEAD' or o.status == 204 or o.status == 304 then\n"
    "    if o.body ~= '' or e ~= nil then return what .. ': a body or an error where none is read' end\n"
    "  elseif e == nil and not h['transfer-encoding'] then\n"
    "    local cl = h['content-length']\n"
    "    if not cl and o.reusable then return what .. ': a body to the close, reusable' end\n"
    "    if cl and tonumber(cl:match('^%s*(%d+)')) ~= #o.body then\n"
    "      return what .. ': ' .. #o.body .. ' bytes for Content-Length: ' .. cl\n"
    "    end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "\n"
    "local function compare(a, b, what)\n"
    "  if a.status ~= b.status then return what .. ': status ' .. tostring(a.status) .. ' vs ' .. tostring(b.status) end\n"
    "  if a.version ~= b.version then return what .. ': version' end\n"
    "  if fields(a.headers) ~= fields(b.headers) then return what .. ': headers' end\n"
    "  if a.body ~= b.body then return what .. ': body' end\n"
    "  local ea, eb = a.err, b.err\n"
    "  if (ea == nil) ~= (eb == nil) then\n"
    "    return what .. ': ' .. (ea and ea.message or 'ok') .. ' vs ' .. (eb and eb.message or 'ok')\n"
    "  end\n"
    "  if ea and (ea.kind ~= eb.kind or ea.message ~= eb.message or ea.final ~= eb.final) then\n"
    "    return what .. ': ' .. tostring(ea.message) .. ' vs ' .. tostring(eb.message)\n"
    "  end\n"
    "  if a.reusable == true and b.reusable ~= true then return what .. ': reusable whole, not in pieces' end\n"
    "  return nil\n"
    "end\n"
    "\n"
    "local function whole()\n"
    "  local done = false\n"
    "  return function()\n"
    "    if done or stream == '' then return nil end\n"
    "    done = true\n"
    "    return stream\n"
    "  end\n"
    "end\n"
    "\n"
    "local function split()\n"    /* at the cuts, and every READ bytes */
    "  local at, c = 1, 1\n"
    "  return function()\n"
    "    if at > #stream then return nil end\n"
    "    local stop = at + READ - 1\n"
    "    while cuts[c] and cuts[c] < at do c = c + 1 end\n"
    "    if cuts[c] and cuts[c] < stop then stop = cuts[c] end\n"
    "    local p = stream:sub(at, stop)\n"
    "    at = stop + 1\n"
    "    return p\n"
    "  end\n"
    "end\n"
    "\n"
    "local function bytes()\n"
    "  local at = 0\n"
    "  return function()\n"
    "    at = at + 1\n"
    "    if at > #stream then return nil end\n"
    "    return stream:sub(at, at)\n"
    "  end\n"
    "end\n"
    "\n"
    "local a = run(whole())\n"
    "local bad = check(a, 'whole')\n"
    "if bad then return bad end\n"
    "local b = run(split())\n"
    "bad = check(b, 'pieces') or compare(a, b, 'whole vs pieces')\n"
    "if bad then return bad end\n"
    "if #stream <= 2048 then\n"
    "  local c = run(bytes())\n"
    "  bad = check(c, 'bytes') or compare(a, c, 'whole vs bytes')\n"
    "  if bad then return bad end\n"
    "end\n"
    "return nil\n";

/* Bytes from TOKEN_BASE to 0xfe stand for these (a dictionary the
 * fuzzer needs no file for); 0xff escapes the byte after it. */
#define TOKEN_BASE 0xe0
static const char *const tokens[0xff - TOKEN_BASE] = {
    "HTTP/1.1 ", "HTTP/1.0 ", "200 OK", "100 Continue", "\r\n", "\r\n\r\n", "Content-Length: ",
    "Transfer-Encoding: chunked", "Transfer-Encoding: ", "chunked", "Connection: close",
    "Content-Encoding: gzip", ": ", ";", ", ", " ", "\t", "0\r\n\r\n", "204", "304", "101", "103", "\n",
    "\r", "ffffffffffffff", "99999999999999", "Content-Length: 0", "X-A: ", "HTTP/2 ", "\r\n ", "0",
};

/* Two bytes, big-endian (the calls in their order). */
static unsigned take16(input *in)
{
    unsigned hi = take(in);
    return hi << 8 | take(in);
}

static int find_lua_dir(void)
{
    const char *env = getenv("TRUTO_LUA_DIR");
    if (env != NULL && has_engine(env)) {
        snprintf(lua_dir, sizeof lua_dir, "%s", env);
        return 1;
    }
    if (has_engine("lua")) {
        snprintf(lua_dir, sizeof lua_dir, "lua");
        return 1;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return 0;
    *slash = '\0';
    snprintf(lua_dir, sizeof lua_dir, "%s/../../lua", exe);
    return has_engine(lua_dir);
}

/* The compiled chunks, in the core's own growable buffers. */
static truto_bytes engine_code, driver_code;

static int dump_writer(lua_State *L, const void *p, size_t size, void *ud)
{
    (void)L;
    return truto_buf_append((truto_bytes *)ud, (const char *)p, size, (size_t)-1 / 2) ? 0 : 1;
}

static void compile(lua_State *L, truto_bytes *c, int status, const char *what)
{
    if (status != 0 || lua_dump(L, dump_writer, c, 0) != 0) {
        fprintf(stderr, "fuzz/http1: cannot compile %s: %s\n", what,
                status != 0 ? lua_tostring(L, -1) : "out of memory");
        exit(1);
    }
    lua_pop(L, 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!find_lua_dir()) {
        fprintf(stderr, "fuzz/http1: cannot find truto/http1.lua (run from the repository's root, "
                        "or set TRUTO_LUA_DIR)\n");
        exit(1);
    }
    /* Compiled once: each input loads the bytecode into its fresh state. */
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/truto/http1.lua", lua_dir);
    lua_State *L = luaL_newstate();
    compile(L, &engine_code, luaL_loadfile(L, path), path);
    compile(L, &driver_code, luaL_loadbuffer(L, driver, sizeof driver - 1, "=fuzz/http1.c"), "the driver");
    lua_close(L);
    return 0;
}

/* Lua line coverage for libFuzzer (its own counters see only C): an
 * edge between two lines, AFL-style, in libFuzzer's extra counters. */
#define COV_SIZE 65536
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[COV_SIZE];
static unsigned prev_loc;

static void line_hook(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar))
        return;
    unsigned loc = ((unsigned)ar->currentline * 2u + (ar->source[0] == '@')) * 2654435761u >> 16;
    lua_cov[(loc ^ prev_loc) % COV_SIZE]++;
    prev_loc = loc >> 1;
}

static int compare_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static void fuzz_one(lua_State *L, input *in, int core)
{
    (void)core;
    unsigned flags = take(in);
    static const char *const methods[] = { "GET", "HEAD", "POST", "GET" };
    const char *method = methods[flags & 3];
    lua_Integer limit = (lua_Integer)take16(in);
    if (flags & 4)
        limit = (lua_Integer)1 << 40;
    size_t ncuts = take(in) % 17, raw_cuts[16];
    for (size_t i = 0; i < ncuts; i++)
        raw_cuts[i] = take16(in);
    size_t rs = 0, rl = 0, count = 0;
    if (flags & 8) {
        rs = take(in);
        rl = take(in);
        count = take16(in);
    }
    /* The server's bytes, tokens expanded. */
    size_t len = 0;
    for (const uint8_t *p = in->p; p < in->end; p++) {
        if (*p == 0xff)
            len += ++p < in->end;
        else
            len += *p >= TOKEN_BASE ? strlen(tokens[*p - TOKEN_BASE]) : 1;
    }
    char *data = malloc(len ? len : 1);
    FUZZ_CHECK(data != NULL, "out of memory");
    size_t n = 0;
    for (const uint8_t *p = in->p; p < in->end; p++) {
        if (*p == 0xff) {
            if (++p < in->end)
                data[n++] = (char)*p;
        } else if (*p >= TOKEN_BASE) {
            size_t tl = strlen(tokens[*p - TOKEN_BASE]);
            memcpy(data + n, tokens[*p - TOKEN_BASE], tl);
            n += tl;
        } else {
            data[n++] = (char)*p;
        }
    }
    if (len > MAX_STREAM)
        len = MAX_STREAM;
    if (rs > len)
        rs = len;
    if (rl > len - rs)
        rl = len - rs;
    if (rl > 0 && count > (MAX_STREAM - len) / rl)
        count = (MAX_STREAM - len) / rl;

    /* The stream: data with data[rs, rs + rl) repeated count more times. */
    size_t total = len + rl * count;
    char *stream = malloc(total ? total : 1);
    FUZZ_CHECK(stream != NULL, "out of memory");
    size_t at = rs + rl;
    memcpy(stream, data, rs + rl);
    for (size_t i = 0; i < count; i++, at += rl)
        memcpy(stream + at, data + rs, rl);
    memcpy(stream + at, data + rs + rl, len - rs - rl);
    free(data);
    lua_pushlstring(L, stream, total);
    free(stream);
    int s = lua_gettop(L);

    size_t cuts[16];
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = total ? raw_cuts[i] * total / 65535 : 0;
    qsort(cuts, ncuts, sizeof cuts[0], compare_size);

    static const luaL_Reg libs[] = {
        { LUA_GNAME, luaopen_base }, { LUA_LOADLIBNAME, luaopen_package }, { LUA_STRLIBNAME, luaopen_string },
        { LUA_TABLIBNAME, luaopen_table }, { LUA_MATHLIBNAME, luaopen_math },
    };
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].func, 1);
        lua_pop(L, 1);
    }
    /* require "truto.http1" finds the compiled engine first (package.path
     * names the same file). */
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua", lua_dir);
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    FUZZ_CHECK(luaL_loadbufferx(L, engine_code.data, engine_code.len, "=truto.http1", "b") == 0, "load: %s",
               lua_tostring(L, -1));
    lua_setfield(L, -2, "truto.http1");
    lua_pop(L, 2);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "truto.http1");
    FUZZ_CHECK(lua_pcall(L, 1, 1, 0) == 0, "require: %s", lua_tostring(L, -1));
    int http1 = lua_gettop(L);

    FUZZ_CHECK(luaL_loadbufferx(L, driver_code.data, driver_code.len, "=fuzz/http1.c", "b") == 0, "driver: %s",
               lua_tostring(L, -1));
    lua_pushvalue(L, http1);
    lua_pushvalue(L, s);
    lua_createtable(L, (int)ncuts, 0);
    for (size_t i = 0; i < ncuts; i++) {
        lua_pushinteger(L, (lua_Integer)cuts[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushstring(L, method);
    lua_pushinteger(L, limit);
    prev_loc = 0;
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    int rc = lua_pcall(L, 5, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    FUZZ_CHECK(rc == 0, "a Lua error escaped: %s", lua_tostring(L, -1));
    FUZZ_CHECK(lua_isnil(L, -1), "%s (%s, %zu bytes)", lua_tostring(L, -1), method, total);
    lua_settop(L, s - 1);
}

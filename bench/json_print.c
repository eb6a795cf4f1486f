/*
 * The body writer against cJSON's printer, on the seed's opportunity body.
 * Run: make && mkdir -p build/bench && gcc -O2 -o build/bench/json_print bench/json_print.c $(pkg-config --cflags --libs lua5.4 libcjson) && build/bench/json_print
 *
 * What is compared (issue 12, "Request building"):
 *   core   truto.core.encode_json(body, list_fields) on the Lua table, called
 *          from a Lua loop as client code calls it: the table walk, sorted
 *          keys, shape and mark checks, UTF-8 validation, number formatting
 *          and the Lua string it returns;
 *   cJSON  cJSON_PrintUnformatted on a cJSON tree of the same document built
 *          beforehand (not timed: the tree is cJSON's equivalent of the Lua
 *          table the caller already holds), and cJSON_free of its text.
 * The tree holds the keys in sorted order, so both sides write the same
 * bytes; the program checks that they do before timing anything.
 *
 * Method: a warm-up round, then ROUNDS rounds (default 11); in each round
 * both sides run ITERATIONS bodies (default 20000) in turn, the order
 * alternating between rounds.  Figures are medians of the rounds (min-max
 * shown); the ratio is the median of the per-round ratios.
 *
 * Arguments: [ROUNDS [ITERATIONS]], or "core N" / "cjson N" to run one side
 * N times and nothing else (for valgrind --tool=callgrind).
 * LUA_CPATH selects the core module (default "build/5.4/?.so").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

/* bench/bench.lua's seed_body(), and the list_fields client.lua passes for
 * crm/opportunities (lua/truto/schema.lua). */
static const char seed_lua[] =
    "local core = require 'truto.core'\n"
    "local body = {\n"
    "  name = 'Acme Corp renewal 2027',\n"
    "  amount = 125000.5,\n"
    "  status = 'open',\n"
    "  currency = 'USD',\n"
    "  account = { id = '5001' },\n"
    "  owner = { id = '111' },\n"
    "  stage = { id = 'contractsent', name = 'Contract Sent' },\n"
    "  contact = { { id = '301' }, { id = '302' } },\n"
    "  tags = { { id = 't1', name = 'renewal' }, { id = 't2', name = 'priority' } },\n"
    "  custom_fields = { deal_source = 'partner', region = 'emea' },\n"
    "  close_date = '2027-03-31T00:00:00.000Z',\n"
    "  description = 'Renewal of the 2026 contract, three seats added',\n"
    "}\n"
    "local list_fields = { contact = true, tags = true, urls = true }\n"
    "local encode = core.encode_json\n"
    "local function loop(n) for _ = 1, n do encode(body, list_fields) end end\n"
    "return encode(body, list_fields), loop\n";

static cJSON *object_of(const char *const *pairs)
{
    cJSON *o = cJSON_CreateObject();
    for (; pairs[0] != NULL; pairs += 2)
        cJSON_AddStringToObject(o, pairs[0], pairs[1]);
    return o;
}

/* The same document, keys added in sorted order. */
static cJSON *seed_tree(void)
{
    cJSON *body = cJSON_CreateObject();
    cJSON_AddItemToObject(body, "account", object_of((const char *[]){"id", "5001", NULL}));
    cJSON_AddNumberToObject(body, "amount", 125000.5);
    cJSON_AddStringToObject(body, "close_date", "2027-03-31T00:00:00.000Z");
    cJSON *contact = cJSON_AddArrayToObject(body, "contact");
    cJSON_AddItemToArray(contact, object_of((const char *[]){"id", "301", NULL}));
    cJSON_AddItemToArray(contact, object_of((const char *[]){"id", "302", NULL}));
    cJSON_AddStringToObject(body, "currency", "USD");
    cJSON_AddItemToObject(body, "custom_fields",
                          object_of((const char *[]){"deal_source", "partner", "region", "emea", NULL}));
    cJSON_AddStringToObject(body, "description", "Renewal of the 2026 contract, three seats added");
    cJSON_AddStringToObject(body, "name", "Acme Corp renewal 2027");
    cJSON_AddItemToObject(body, "owner", object_of((const char *[]){"id", "111", NULL}));
    cJSON_AddItemToObject(body, "stage",
                          object_of((const char *[]){"id", "contractsent", "name", "Contract Sent", NULL}));
    cJSON_AddStringToObject(body, "status", "open");
    cJSON *tags = cJSON_AddArrayToObject(body, "tags");
    cJSON_AddItemToArray(tags, object_of((const char *[]){"id", "t1", "name", "renewal", NULL}));
    cJSON_AddItemToArray(tags, object_of((const char *[]){"id", "t2", "name", "priority", NULL}));
    return body;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static volatile char sink;

static double run_cjson(cJSON *tree, long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        char *text = cJSON_PrintUnformatted(tree);
        sink = text[0];
        cJSON_free(text);
    }
    return (now_ns() - t0) / (double)n;
}

static double run_core(lua_State *L, int loop, long n)
{
    double t0 = now_ns();
    lua_pushvalue(L, loop);
    lua_pushinteger(L, n);
    lua_call(L, 1, 0);
    return (now_ns() - t0) / (double)n;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, by_value);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (getenv("LUA_CPATH") == NULL) {
        lua_getglobal(L, "package");
        lua_pushliteral(L, "build/5.4/?.so");
        lua_setfield(L, -2, "cpath");
        lua_pop(L, 1);
    }
    if (luaL_loadstring(L, seed_lua) != LUA_OK || lua_pcall(L, 0, 2, 0) != LUA_OK) {
        fprintf(stderr, "json_print: %s\n", lua_tostring(L, -1));
        return 1;
    }
    int loop = lua_gettop(L);
    size_t core_len;
    const char *core_text = lua_tolstring(L, loop - 1, &core_len);
    cJSON *tree = seed_tree();
    char *cjson_text = cJSON_PrintUnformatted(tree);
    if (strlen(cjson_text) != core_len || memcmp(cjson_text, core_text, core_len) != 0) {
        fprintf(stderr, "json_print: the texts differ\ncore:  %s\ncJSON: %s\n", core_text, cjson_text);
        return 1;
    }
    cJSON_free(cjson_text);

    if (argc == 3 && (strcmp(argv[1], "core") == 0 || strcmp(argv[1], "cjson") == 0)) {
        long n = atol(argv[2]);
        if (strcmp(argv[1], "core") == 0)
            run_core(L, loop, n);
        else
            run_cjson(tree, n);
        return 0;
    }
    int rounds = argc > 1 ? atoi(argv[1]) : 11;
    long iterations = argc > 2 ? atol(argv[2]) : 20000;
    if (rounds < 1 || rounds > 1000 || iterations < 1) {
        fprintf(stderr, "usage: json_print [ROUNDS [ITERATIONS]] | json_print core|cjson N\n");
        return 2;
    }
    double *core = malloc(sizeof(double) * (size_t)rounds);
    double *cjson = malloc(sizeof(double) * (size_t)rounds);
    double *ratio = malloc(sizeof(double) * (size_t)rounds);
    run_core(L, loop, iterations);      /* warm-up */
    run_cjson(tree, iterations);
    for (int r = 0; r < rounds; r++) {
        if (r % 2) {
            cjson[r] = run_cjson(tree, iterations);
            core[r] = run_core(L, loop, iterations);
        } else {
            core[r] = run_core(L, loop, iterations);
            cjson[r] = run_cjson(tree, iterations);
        }
        ratio[r] = core[r] / cjson[r];
    }
    double rm = median(ratio, rounds), cm = median(core, rounds), jm = median(cjson, rounds);
    printf("body: %zu bytes; %d rounds of %ld bodies per side, interleaved; medians (min-max)\n",
           core_len, rounds, iterations);
    printf("core.encode_json        %8.0f ns/body (%.0f-%.0f)\n", cm, core[0], core[rounds - 1]);
    printf("cJSON_PrintUnformatted  %8.0f ns/body (%.0f-%.0f)\n", jm, cjson[0], cjson[rounds - 1]);
    printf("ratio core/cJSON        %8.2f (%.2f-%.2f)\n", rm, ratio[0], ratio[rounds - 1]);
    free(core);
    free(cjson);
    free(ratio);
    cJSON_Delete(tree);
    lua_close(L);
    return 0;
}

/*
 * bench/bench_common.h: what the C reference programs share: their
 * command line, the request body (a file's bytes, none, or the seed's body
 * built with cJSON per request), parsing an answer with cJSON, peak RSS and
 * a monotonic clock; and, with the Lua floor module, bench_curl.h.
 *
 *   PROGRAM [--cjson] METHOD URL BODY N ... [HEADER...]
 *
 * BODY is a file whose bytes are sent as they are, "-" for no body, or
 * "@seed" for the seed's update body built with cJSON (tree + print) for
 * every request.  --cjson parses every answer with cJSON_Parse (and frees
 * the tree), as the client decodes every answer.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <sys/resource.h>

#include <cjson/cJSON.h>

#include "bench_curl.h"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *d = malloc((size_t)n + 1);
    if (d == NULL || fread(d, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(d);
        return NULL;
    }
    d[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return d;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The process's peak resident set so far, kB (VmHWM). */
static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void add_string(cJSON *o, const char *name, const char *value)
{
    cJSON_AddItemToObject(o, name, cJSON_CreateString(value));
}

static cJSON *id_name(const char *id, const char *name)
{
    cJSON *o = cJSON_CreateObject();
    add_string(o, "id", id);
    if (name != NULL)
        add_string(o, "name", name);
    return o;
}

/*
 * The seed's update body (bench.lua's seed_body), built as a cJSON tree and
 * printed without spaces; keys in sorted order, as the core writes them, so
 * the bytes are the same.  The caller frees the text.
 */
static char *seed_body(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "account", id_name("5001", NULL));
    cJSON_AddNumberToObject(o, "amount", 125000.5);
    add_string(o, "close_date", "2027-03-31T00:00:00.000Z");
    cJSON *contact = cJSON_AddArrayToObject(o, "contact");
    cJSON_AddItemToArray(contact, id_name("301", NULL));
    cJSON_AddItemToArray(contact, id_name("302", NULL));
    add_string(o, "currency", "USD");
    cJSON *custom = cJSON_AddObjectToObject(o, "custom_fields");
    add_string(custom, "deal_source", "partner");
    add_string(custom, "region", "emea");
    add_string(o, "description", "Renewal of the 2026 contract, three seats added");
    add_string(o, "name", "Acme Corp renewal 2027");
    cJSON_AddItemToObject(o, "owner", id_name("111", NULL));
    cJSON_AddItemToObject(o, "stage", id_name("contractsent", "Contract Sent"));
    add_string(o, "status", "open");
    cJSON *tags = cJSON_AddArrayToObject(o, "tags");
    cJSON_AddItemToArray(tags, id_name("t1", "renewal"));
    cJSON_AddItemToArray(tags, id_name("t2", "priority"));
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* Parses an answer with cJSON; 0 when it is not JSON. */
static int parse_answer(const buffer *b)
{
    cJSON *tree = cJSON_ParseWithLength(b->data, b->len);
    if (tree == NULL)
        return 0;
    cJSON_Delete(tree);
    return 1;
}

typedef struct {
    int cjson;               /* --cjson: parse every answer */
    int build_seed;          /* BODY is "@seed": build it per request */
    const char *method, *url;
    char *body;              /* a file's bytes, or NULL */
    size_t body_len;
    long n;
    char **headers;          /* the fixed header lines */
    int nheaders;
} options;

/* Reads the command line (extra: how many numbers follow N, 0 or 1); exits 2 on a bad one. */
static options parse_options(int argc, char **argv, const char *usage, long *extra)
{
    options o = { 0 };
    int i = 1;
    if (i < argc && strcmp(argv[i], "--cjson") == 0) {
        o.cjson = 1;
        i++;
    }
    if (argc - i < 4 + (extra ? 1 : 0)) {
        fprintf(stderr, "usage: %s\n", usage);
        exit(2);
    }
    o.method = argv[i];
    o.url = argv[i + 1];
    const char *body = argv[i + 2];
    if (strcmp(body, "@seed") == 0)
        o.build_seed = 1;
    else if (strcmp(body, "-") != 0 && (o.body = read_file(body, &o.body_len)) == NULL) {
        fprintf(stderr, "cannot read %s\n", body);
        exit(2);
    }
    o.n = atol(argv[i + 3]);
    i += 4;
    if (extra)
        *extra = atol(argv[i++]);
    if (o.n <= 0 || (extra && *extra <= 0)) {
        fprintf(stderr, "usage: %s\n", usage);
        exit(2);
    }
    o.headers = argv + i;
    o.nheaders = argc - i;
    return o;
}

/* The fixed header lines, a fresh Idempotency-Key, then "Expect:", as the core's session sends them. */
static struct curl_slist *request_headers(const options *o, unsigned long prefix, long i)
{
    struct curl_slist *h = NULL;
    for (int a = 0; a < o->nheaders; a++)
        h = curl_slist_append(h, o->headers[a]);
    return finish_headers(h, prefix, i);
}

/* Sets the request's body: the file's bytes, none, or (returned, the caller frees it) the seed's. */
static char *set_body(CURL *e, const options *o)
{
    char *built = NULL;
    const char *body = o->body;
    size_t len = o->body_len;
    if (o->build_seed) {
        body = built = seed_body();
        len = strlen(built);
    }
    if (body != NULL)
        set_payload(e, body, len);
    return built;
}

/* The programs' one line: seconds, requests/s, peak RSS kB, peak RSS kB before the first request. */
static void report(double seconds, long n, long before_kb)
{
    printf("%.6f %.1f %ld %ld\n", seconds, (double)n / seconds, peak_rss_kb(), before_kb);
}

#endif

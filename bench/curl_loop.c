/*
 * bench/curl_loop.c: the sequential references.  One easy handle, set up
 * once and reused, sends the same request N times on one kept-alive
 * connection; only the Idempotency-Key header changes per request (as with
 * the client's idempotency = "auto").  The response body is collected in
 * memory, as the client does.  Bare (a body file, nothing parsed) it is the
 * floor for any libcurl-based client; with "@seed" and --cjson it also
 * builds the body and parses every answer with cJSON, the work the client
 * does (see bench_common.h).
 *
 *   curl_loop [--cjson] METHOD URL BODY N [HEADER...]
 *   curl_loop --print-seed       the seed's body as cJSON prints it
 *
 * Prints "<seconds> <requests/s> <peak RSS kB> <peak RSS kB before the
 * first request>"; exits 1 on any failure, a non-2xx status or an answer
 * cJSON cannot parse.
 */
#include "bench_common.h"

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--print-seed") == 0) {
        char *text = seed_body();
        fputs(text, stdout);
        free(text);
        return 0;
    }
    options o = parse_options(argc, argv, "curl_loop [--cjson] METHOD URL BODY N [HEADER...]", NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *e = curl_easy_init();
    buffer b = { 0 };
    char errbuf[CURL_ERROR_SIZE] = "";
    common_setopts(e, o.method, o.url, &b);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header_ignored);

    unsigned long prefix = key_prefix();
    long before = peak_rss_kb();
    double t0 = now();
    for (long i = 0; i < o.n; i++) {
        struct curl_slist *h = request_headers(&o, prefix, i);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        char *built = set_body(e, &o);
        b.len = 0;
        CURLcode rc = curl_easy_perform(e);
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(h);
        free(built);
        if (rc != CURLE_OK || status < 200 || status >= 300) {
            fprintf(stderr, "curl_loop: request %ld: %s (status %ld)\n", i,
                    rc != CURLE_OK ? (errbuf[0] ? errbuf : curl_easy_strerror(rc)) : "bad status", status);
            return 1;
        }
        if (o.cjson && !parse_answer(&b)) {
            fprintf(stderr, "curl_loop: request %ld: cJSON cannot parse the answer\n", i);
            return 1;
        }
    }
    report(now() - t0, o.n, before);
    curl_easy_cleanup(e);
    free(b.data);
    free(o.body);
    curl_global_cleanup();
    return 0;
}

/*
 * bench/curl_loop.c: the floor for any libcurl-based client.  One easy
 * handle, set up once and reused, sends the same request N times on one
 * kept-alive connection; only the Idempotency-Key header changes per
 * request (as with the client's idempotency = "auto").  The response body
 * is collected in memory, as the client does.
 *
 *   curl_loop METHOD URL BODYFILE N [HEADER...]
 *
 * Prints "<seconds> <requests/s>" on stdout; exits 1 on any failure or a
 * non-2xx status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "bench_common.h"

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (*(size_t *)ud)++;
    return size * n;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: curl_loop METHOD URL BODYFILE N [HEADER...]\n");
        return 2;
    }
    const char *method = argv[1], *url = argv[2];
    size_t body_len = 0;
    char *body = read_file(argv[3], &body_len);
    long n = atol(argv[4]);
    if (body == NULL || n <= 0) {
        fprintf(stderr, "curl_loop: bad body file or count\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *e = curl_easy_init();
    buffer b = { 0 };
    size_t header_lines = 0;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &header_lines);

    /* Keys unique across runs (the server caches responses by key). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long prefix = ((unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec) ^
                           ((unsigned long)getpid() << 40);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        /* The fixed headers, then a fresh Idempotency-Key, then "Expect:". */
        struct curl_slist *h = NULL;
        for (int a = 5; a < argc; a++)
            h = curl_slist_append(h, argv[a]);
        char key[64];
        snprintf(key, sizeof key, "Idempotency-Key: %016lx%016lx", prefix, (unsigned long)i);
        h = curl_slist_append(h, key);
        h = curl_slist_append(h, "Expect:");
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        b.len = 0;
        CURLcode rc = curl_easy_perform(e);
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(h);
        if (rc != CURLE_OK || status < 200 || status >= 300) {
            fprintf(stderr, "curl_loop: request %ld: %s (status %ld)\n", i,
                    rc != CURLE_OK ? (errbuf[0] ? errbuf : curl_easy_strerror(rc)) : "bad status", status);
            return 1;
        }
    }
    double dt = now() - t0;
    printf("%.6f %.1f\n", dt, (double)n / dt);
    curl_easy_cleanup(e);
    free(b.data);
    free(body);
    curl_global_cleanup();
    return 0;
}

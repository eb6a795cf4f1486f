/*
 * bench/curl_multi.c: the floor for concurrent requests through libcurl.
 * One multi handle keeps C transfers in flight (a pool of C easy handles,
 * each reused, connections kept alive in the multi's cache) until N
 * requests have completed; every request is the same, with its own
 * Idempotency-Key.  Response bodies are collected in memory.
 *
 *   curl_multi METHOD URL BODYFILE N C [HEADER...]
 *
 * Prints "<seconds> <requests/s>"; exits 1 on any failure or non-2xx.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "bench_common.h"

typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    buffer body;
} slot;

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: curl_multi METHOD URL BODYFILE N C [HEADER...]\n");
        return 2;
    }
    const char *method = argv[1], *url = argv[2];
    size_t body_len = 0;
    char *body = read_file(argv[3], &body_len);
    long n = atol(argv[4]), c = atol(argv[5]);
    if (body == NULL || n <= 0 || c <= 0) {
        fprintf(stderr, "curl_multi: bad body file, count or concurrency\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, c);
    slot *slots = calloc((size_t)c, sizeof *slots);
    slot **idle = calloc((size_t)c, sizeof *idle);
    long nidle = 0;
    for (long i = 0; i < c; i++) {
        slot *s = &slots[i];
        CURL *e = s->easy = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &s->body);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_PRIVATE, s);
        idle[nidle++] = s;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long prefix = ((unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec) ^
                           ((unsigned long)getpid() << 40);

    long started = 0, done = 0;
    int running = 0;
    double t0 = now();
    while (done < n) {
        while (nidle > 0 && started < n) {
            slot *s = idle[--nidle];
            struct curl_slist *h = NULL;
            for (int a = 6; a < argc; a++)
                h = curl_slist_append(h, argv[a]);
            char key[64];
            snprintf(key, sizeof key, "Idempotency-Key: %016lx%016lx", prefix, (unsigned long)started);
            h = curl_slist_append(h, key);
            h = curl_slist_append(h, "Expect:");
            s->headers = h;
            s->body.len = 0;
            curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, h);
            curl_multi_add_handle(m, s->easy);
            started++;
        }
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            slot *s;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status < 200 || status >= 300) {
                fprintf(stderr, "curl_multi: %s (status %ld)\n", curl_easy_strerror(msg->data.result), status);
                return 1;
            }
            curl_multi_remove_handle(m, s->easy);
            curl_slist_free_all(s->headers);
            s->headers = NULL;
            idle[nidle++] = s;
            done++;
        }
        if (done < n && (nidle == 0 || started == n))
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    double dt = now() - t0;
    printf("%.6f %.1f\n", dt, (double)n / dt);
    for (long i = 0; i < c; i++) {
        curl_easy_cleanup(slots[i].easy);
        free(slots[i].body.data);
    }
    curl_multi_cleanup(m);
    free(slots);
    free(idle);
    free(body);
    curl_global_cleanup();
    return 0;
}

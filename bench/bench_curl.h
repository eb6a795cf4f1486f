/*
 * bench/bench_curl.h: what every libcurl reference shares, the C programs
 * (bench_common.h) and the Lua floor module (lua_floor.c): the response
 * buffer filled by libcurl's write callback, the options of an easy handle,
 * the per-request header lines (a fresh Idempotency-Key, "Expect:") and the
 * request body's bytes.
 */
#ifndef BENCH_CURL_H
#define BENCH_CURL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

typedef struct {
    char *data;
    size_t len, cap;
} buffer;

/* CURLOPT_WRITEFUNCTION with a buffer * as CURLOPT_WRITEDATA. */
static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    buffer *b = ud;
    size_t len = size * n;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    return len;
}

/* CURLOPT_HEADERFUNCTION of the references that read no response header
 * (libcurl still hands every line over, as it does to the client). */
static size_t on_header_ignored(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* A key prefix unique across runs (the server caches answers by key). */
static unsigned long key_prefix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec) ^ ((unsigned long)getpid() << 40);
}

/* After the fixed lines h holds: request i's Idempotency-Key, then "Expect:",
 * as the core's session sends them.  NULL when out of memory (h is then
 * still the caller's to free). */
static struct curl_slist *finish_headers(struct curl_slist *h, unsigned long prefix, long i)
{
    char key[64];
    snprintf(key, sizeof key, "Idempotency-Key: %016lx%016lx", prefix, (unsigned long)i);
    struct curl_slist *with_key = curl_slist_append(h, key);
    return with_key ? curl_slist_append(with_key, "Expect:") : NULL;
}

/* The request's body: len bytes at body, sent as they are (not copied). */
static void set_payload(CURL *e, const char *body, size_t len)
{
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
}

/* The options every reference sets on an easy handle: its target, then
 * what stays for the handle's life, as the core's session sets it. */
static void common_setopts(CURL *e, const char *method, const char *url, buffer *b)
{
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
}

#endif

/*
 * bench/curl_multi.c: the concurrent references.  One multi handle keeps C
 * transfers in flight (a pool of C easy handles, each reused, connections
 * kept alive in the multi's cache) until N requests have completed; every
 * request is the same, with its own Idempotency-Key.  Response bodies are
 * collected in memory.  With "@seed" and --cjson every request's body is
 * built with cJSON and every answer parsed with cJSON as it completes (see
 * bench_common.h).
 *
 *   curl_multi [--cjson] METHOD URL BODY N C [HEADER...]
 *
 * Prints "<seconds> <requests/s> <peak RSS kB> <peak RSS kB before the
 * first request>"; exits 1 on any failure, non-2xx or unparsable answer.
 */
#include "bench_common.h"

typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    char *built;             /* the body built for the transfer in flight */
    buffer body;
} slot;

int main(int argc, char **argv)
{
    long c = 0;
    options o = parse_options(argc, argv, "curl_multi [--cjson] METHOD URL BODY N C [HEADER...]", &c);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, c);
    slot *slots = calloc((size_t)c, sizeof *slots);
    slot **idle = calloc((size_t)c, sizeof *idle);
    long nidle = 0;
    for (long i = 0; i < c; i++) {
        slot *s = &slots[i];
        CURL *e = s->easy = curl_easy_init();
        common_setopts(e, o.method, o.url, &s->body);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header_ignored);
        curl_easy_setopt(e, CURLOPT_PRIVATE, s);
        idle[nidle++] = s;
    }
    unsigned long prefix = key_prefix();
    long before = peak_rss_kb();

    long started = 0, done = 0;
    int running = 0;
    double t0 = now();
    while (done < o.n) {
        while (nidle > 0 && started < o.n) {
            slot *s = idle[--nidle];
            s->headers = request_headers(&o, prefix, started);
            s->body.len = 0;
            curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
            s->built = set_body(s->easy, &o);
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
            free(s->built);
            s->built = NULL;
            if (o.cjson && !parse_answer(&s->body)) {
                fprintf(stderr, "curl_multi: cJSON cannot parse an answer\n");
                return 1;
            }
            idle[nidle++] = s;
            done++;
        }
        if (done < o.n && (nidle == 0 || started == o.n))
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    report(now() - t0, o.n, before);
    for (long i = 0; i < c; i++) {
        curl_easy_cleanup(slots[i].easy);
        free(slots[i].body.data);
    }
    curl_multi_cleanup(m);
    free(slots);
    free(idle);
    free(o.body);
    curl_global_cleanup();
    return 0;
}

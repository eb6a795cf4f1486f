/*
 * truto.verify_webhook(secret, raw_body, header): Truto signs each outbound
 * webhook with X-Truto-Signature: format=sha256,v=<HMAC-SHA256 of the raw
 * body keyed by the webhook secret>.  Truto's reference says the digest is
 * hex; third-party verifiers read it as base64, so both are accepted: 64 hex
 * digits (either case), or the 44-character base64 of the 32 bytes (43
 * without its "=", the URL-safe alphabet too), decoded strictly (the unused
 * low bits must be zero, so one digest has one spelling per alphabet).
 *
 * OpenSSL's HMAC is loaded with dlopen at the first check, not linked: most
 * processes never verify a webhook, and mapping libcrypto cost about 1 ms of
 * every `require "truto"` (issue 12).  TRUTO_LIBCRYPTO is the library's file
 * name, from the Makefile (the soname of the libcrypto it would link).
 */
#include <dlfcn.h>
#include <string.h>

#include "truto.h"

#ifndef TRUTO_LIBCRYPTO
#define TRUTO_LIBCRYPTO "libcrypto.so.3"
#endif

/* HMAC() and EVP_sha256() of libcrypto, as declared in <openssl/hmac.h>. */
typedef unsigned char *(*hmac_fn)(const void *md, const void *key, int key_len, const unsigned char *data,
                                  size_t data_len, unsigned char *out, unsigned int *out_len);
typedef const void *(*md_fn)(void);
static hmac_fn hmac;
static md_fn sha256;

/* Loads HMAC and EVP_sha256 once; 0 when libcrypto cannot be loaded.  A
 * process that races here loads the same library twice, harmlessly. */
static int load_hmac(void)
{
    if (hmac != NULL)
        return 1;
    void *lib = dlopen(TRUTO_LIBCRYPTO, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL)
        return 0;
    md_fn md = (md_fn)dlsym(lib, "EVP_sha256");
    hmac_fn h = (hmac_fn)dlsym(lib, "HMAC");
    if (md == NULL || h == NULL) {
        dlclose(lib);
        return 0;
    }
    sha256 = md;
    hmac = h;
    return 1;
}

/* Compares n bytes in a time that does not depend on where they differ. */
static int same_bytes(const unsigned char *a, const unsigned char *b, size_t n)
{
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

#define DIGEST_LEN 32

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 32) >= 'a' && (c | 32) <= 'f') return (c | 32) - 'a' + 10;
    return -1;
}

static int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* The 32-byte digest from 64 hex digits or its base64; 0 when malformed. */
static int read_digest(const char *value, size_t len, unsigned char out[DIGEST_LEN])
{
    if (len == 2 * DIGEST_LEN) {
        for (size_t i = 0; i < DIGEST_LEN; i++) {
            int hi = hex_value(value[2 * i]), lo = hex_value(value[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return 0;
            out[i] = (unsigned char)(hi << 4 | lo);
        }
        return 1;
    }
    if (len == 44 && value[43] == '=')
        len = 43;
    if (len != 43)
        return 0;
    /* 43 sextets = 258 bits: 256 of digest and 2 that must be zero. */
    unsigned int acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < 43; i++) {
        int v = base64_value(value[i]);
        if (v < 0)
            return 0;
        acc = (acc << 6 | (unsigned int)v) & 0xfff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n == DIGEST_LEN && (acc & ((1u << bits) - 1)) == 0;
}

static int reject(lua_State *L, const char *reason)
{
    lua_pushboolean(L, 0);
    lua_pushstring(L, reason);
    return 2;
}

static int l_verify_webhook(lua_State *L)
{
    size_t secretlen, bodylen, headerlen;
    const char *secret = luaL_checklstring(L, 1, &secretlen);
    const char *body = luaL_checklstring(L, 2, &bodylen);
    luaL_argcheck(L, secretlen > 0, 1, "the webhook secret must not be empty");
    if (lua_isnoneornil(L, 3))
        return reject(L, "missing signature header");
    const char *header = luaL_checklstring(L, 3, &headerlen);

    unsigned char expected[DIGEST_LEN];
    unsigned int expectedlen = 0;
    if (!load_hmac())
        return luaL_error(L, "truto: cannot load %s for HMAC-SHA256: %s", TRUTO_LIBCRYPTO, dlerror());
    if (hmac(sha256(), secret, (int)secretlen, (const unsigned char *)body, bodylen,
             expected, &expectedlen) == NULL || expectedlen != DIGEST_LEN)
        return luaL_error(L, "truto: HMAC-SHA256 is not available");

    /* format=sha256,v=<hex>[,v=<hex>...]: several v= let a sender rotate
     * secrets; any one matching is enough. */
    int format_ok = 0, signatures = 0, matched = 0;
    const char *p = header, *end = header + headerlen;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        while (p < item_end && (*p == ' ' || *p == '\t')) p++;
        const char *eq = memchr(p, '=', (size_t)(item_end - p));
        if (eq == NULL)
            return reject(L, "malformed signature header");
        size_t keylen = (size_t)(eq - p);
        const char *value = eq + 1;
        const char *value_end = item_end;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) value_end--;
        size_t valuelen = (size_t)(value_end - value);
        if (keylen == 6 && memcmp(p, "format", 6) == 0) {
            if (!(valuelen == 6 && memcmp(value, "sha256", 6) == 0))
                return reject(L, "unsupported signature format");
            format_ok = 1;
        } else if (keylen == 1 && p[0] == 'v') {
            unsigned char given[DIGEST_LEN];
            if (!read_digest(value, valuelen, given))
                return reject(L, "malformed signature: expected 64 hex digits or 44 base64 characters");
            signatures++;
            matched |= same_bytes(given, expected, DIGEST_LEN);
        }
        p = comma ? comma + 1 : end;
    }
    if (!format_ok)
        return reject(L, "malformed signature header: no format=sha256");
    if (signatures == 0)
        return reject(L, "malformed signature header: no v=");
    if (!matched)
        return reject(L, "signature mismatch");
    lua_pushboolean(L, 1);
    return 1;
}

void truto_open_webhook(lua_State *L)
{
    lua_pushcfunction(L, l_verify_webhook);
    lua_setfield(L, -2, "verify_webhook");
}

/*
 * truto.verify_webhook (csrc/webhook.c) on fuzz secrets, bodies and
 * X-Truto-Signature headers.  Input: one length byte and the secret, one
 * length byte and the body, the rest the header.
 * Properties: it never raises for a non-empty secret; it returns true, or
 * false and a reason string; true only when the header holds the body's
 * digest (hex in either case, or base64) somewhere; the digest written as
 * "format=sha256,v=<hex>" and as "v=<base64>" (padded, unpadded, URL-safe)
 * always passes, and fails for another body.
 */
#include <ctype.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz_lua.h"

static void verify(lua_State *L, int core, const char *secret, size_t slen, const char *body, size_t blen,
                   const char *header, size_t hlen)
{
    lua_pushlstring(L, secret, slen);
    lua_pushlstring(L, body, blen);
    lua_pushlstring(L, header, hlen);
    FUZZ_CHECK(fuzz_call(L, core, "verify_webhook", 3, 2) == 0, "verify_webhook raised: %s", lua_tostring(L, -1));
    FUZZ_CHECK(lua_type(L, -2) == LUA_TBOOLEAN, "first result is a %s", luaL_typename(L, -2));
    if (!lua_toboolean(L, -2))
        check_message(L, -1);
    else
        FUZZ_CHECK(lua_isnil(L, -1), "true with a reason");
}

static int contains_ci(const char *hay, size_t n, const char *needle, size_t m, int fold)
{
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && (fold ? tolower((unsigned char)hay[i + j]) == needle[j] : hay[i + j] == needle[j]))
            j++;
        if (j == m)
            return 1;
    }
    return 0;
}

static void fuzz_one(lua_State *L, input *in, int core)
{
    size_t slen = take(in) % 64 + 1, blen = take(in) % 255;
    char secret[64], body[256];   /* body[blen] is one byte past it: another body */
    for (size_t i = 0; i < slen; i++) secret[i] = (char)take(in);
    for (size_t i = 0; i < blen; i++) body[i] = (char)take(in);
    body[blen] = 'x';
    const char *header = (const char *)in->p;
    size_t hlen = (size_t)(in->end - in->p);

    unsigned char digest[32];
    unsigned int dlen = 0;
    FUZZ_CHECK(HMAC(EVP_sha256(), secret, (int)slen, (const unsigned char *)body, blen, digest, &dlen) != NULL,
               "HMAC");
    char hex[65], b64[45], url[45];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    EVP_EncodeBlock((unsigned char *)b64, digest, 32);
    for (int i = 0; i < 45; i++) url[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];

    verify(L, core, secret, slen, body, blen, header, hlen);
    if (lua_toboolean(L, -2)) {
        char b64_43[44], url_43[44];
        memcpy(b64_43, b64, 43); b64_43[43] = 0;
        memcpy(url_43, url, 43); url_43[43] = 0;
        FUZZ_CHECK(contains_ci(header, hlen, hex, 64, 1) || contains_ci(header, hlen, b64_43, 43, 0) ||
                   contains_ci(header, hlen, url_43, 43, 0),
                   "accepted a header without the digest");
    }
    lua_pop(L, 2);

    char good[128];
    const char *forms[4] = { hex, b64, url, NULL };
    char unpadded[44];
    memcpy(unpadded, b64, 43); unpadded[43] = 0;
    forms[3] = unpadded;
    for (int f = 0; f < 4; f++) {
        int n = snprintf(good, sizeof good, f ? "v=%s,format=sha256" : "format=sha256,v=%s", forms[f]);
        verify(L, core, secret, slen, body, blen, good, (size_t)n);
        FUZZ_CHECK(lua_toboolean(L, -2), "its own digest (form %d) rejected: %s", f, lua_tostring(L, -1));
        lua_pop(L, 2);
        verify(L, core, secret, slen, body, blen + 1, good, (size_t)n);
        FUZZ_CHECK(!lua_toboolean(L, -2), "another body accepted (form %d)", f);
        lua_pop(L, 2);
    }
}

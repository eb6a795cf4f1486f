/*
 * truto.encode_json(v [, list_fields]) on values built from the fuzz input.
 * Properties: errors are printable messages; the output is valid UTF-8,
 * decode_json reads it back, and writing that value again gives the same
 * text byte for byte.
 *
 * And the number printer (csrc/number.c), on the double whose bits are the
 * input's last 8 bytes (read, not consumed): its text is what ECMAScript's
 * Number::toString gives, worked out here another way, from the double's
 * exact decimal expansion: the text reads back (strtod) to the double, no
 * decimal with fewer significant digits does, and of those with as many
 * that do it is the nearest (the even one on a tie), laid out in plain or
 * exponent notation by the same rules as JavaScript.
 */
#include "fuzz_lua.h"

#define EXACT_DIGITS 800    /* a double's exact expansion has at most 767 */

/* The double that DIGITS (n of them) * 10^exp reads back as. */
static double read_decimal(const char *digits, int n, int exp)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.*se%d", n, digits, exp);
    return strtod(buf, NULL);
}

/* JavaScript's layout of 0.DIGITS * 10^point (k digits, no trailing zero):
 * Number::toString's steps 6 to 10, written out one by one. */
static void js_layout(char *o, int negative, const char *digits, int k, int point)
{
    if (negative)
        *o++ = '-';
    if (k <= point && point <= 21) {            /* 1e+21 > x >= 1, integral */
        memcpy(o, digits, (size_t)k);
        o += k;
        for (int i = k; i < point; i++)
            *o++ = '0';
        *o = '\0';
    } else if (0 < point && point <= 21) {      /* 1e+21 > x >= 1 */
        sprintf(o, "%.*s.%.*s", point, digits, k - point, digits + point);
    } else if (-6 < point && point <= 0) {      /* 1 > x >= 1e-6 */
        *o++ = '0';
        *o++ = '.';
        for (int i = point; i < 0; i++)
            *o++ = '0';
        sprintf(o, "%.*s", k, digits);
    } else {
        sprintf(o, "%c%s%.*se%c%d", digits[0], k > 1 ? "." : "", k - 1, digits + 1,
                point - 1 >= 0 ? '+' : '-', abs(point - 1));
    }
}

static void check_number(lua_State *L, int core, double d)
{
    lua_pushnumber(L, (lua_Number)d);
    FUZZ_CHECK(fuzz_call(L, core, "encode_json", 1, 1) == 0, "cannot write %a: %s", d,
               lua_tostring(L, -1));
    const char *s = lua_tostring(L, -1);
    FUZZ_CHECK(strtod(s, NULL) == d, "%s does not read back as %a", s, d);

    char want[64];
    if (d == 0) {
        strcpy(want, "0");              /* -0 too, as JavaScript writes it */
    } else {
        /* The exact expansion: E[0] E[1] ... * 10^(point - 1), E[0] != 0. */
        char buf[EXACT_DIGITS + 16];
        char e[EXACT_DIGITS + 1];
        int n = 0;
        snprintf(buf, sizeof buf, "%.*e", EXACT_DIGITS - 1, fabs(d));
        const char *p = buf;
        for (; *p != 'e'; p++)
            if (*p >= '0' && *p <= '9')
                e[n++] = *p;
        int point = atoi(p + 1) + 1;
        FUZZ_CHECK(n == EXACT_DIGITS && e[n - 1] == '0', "%a: expansion not exact", d);

        /* For j = 1, 2, ...: the j-digit decimals on either side of d (any
         * other is farther out than one of them, so if none of these two
         * reads back, no j-digit decimal does); stop at the first j where
         * one does, and take the nearer. */
        char lo[20], hi[20];
        int j, hi_point = point, lo_ok, hi_ok, exact;
        for (j = 1;; j++) {
            FUZZ_CHECK(j <= 17, "%a: no decimal of 17 digits reads back", d);
            memcpy(lo, e, (size_t)j);
            memcpy(hi, e, (size_t)j);
            hi_point = point;
            exact = 1;
            for (int i = j; i < n; i++)
                if (e[i] != '0')
                    exact = 0;
            if (!exact) {               /* hi = lo + one unit in the last place */
                int i = j - 1;
                while (i >= 0 && hi[i] == '9')
                    hi[i--] = '0';
                if (i >= 0)
                    hi[i]++;
                else {
                    hi[0] = '1';
                    hi_point++;
                }
            }
            lo_ok = read_decimal(lo, j, point - j) == fabs(d);
            hi_ok = !exact && read_decimal(hi, j, hi_point - j) == fabs(d);
            if (lo_ok || hi_ok)
                break;
        }
        int take_hi = hi_ok;
        if (lo_ok && hi_ok) {           /* the nearer: the rest against half a unit */
            int cmp = e[j] > '5' ? 1 : e[j] < '5' ? -1 : 0;
            for (int i = j + 1; cmp == 0 && i < n; i++)
                if (e[i] != '0')
                    cmp = 1;
            take_hi = cmp > 0 || (cmp == 0 && (lo[j - 1] - '0') % 2 == 1);
        }
        const char *digits = take_hi ? hi : lo;
        int k = j, dpoint = take_hi ? hi_point : point;
        while (k > 1 && digits[k - 1] == '0')
            k--;
        js_layout(want, d < 0, digits, k, dpoint);
    }
    FUZZ_CHECK(strcmp(s, want) == 0, "%a is written %s, JavaScript writes %s", d, s, want);
    lua_pop(L, 1);
}

static void fuzz_one(lua_State *L, input *in, int core)
{
    if (in->end - in->p >= 8) {
        uint64_t bits = 0;
        for (const uint8_t *b = in->end - 8; b < in->end; b++)
            bits = bits << 8 | *b;
        double d;
        memcpy(&d, &bits, sizeof d);
        if (isfinite(d))
            check_number(L, core, d);
    }
    int nargs = 1;
    unsigned mode = take(in);
    fuzz_build(L, in);
    if (mode & 1) {                     /* list_fields: names of list fields */
        lua_newtable(L);
        for (unsigned n = take(in) % 4; n > 0; n--) {
            take_string(L, in, take_len(in));
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
        nargs = 2;
    }
    if (fuzz_call(L, core, "encode_json", nargs, 1) != 0) {
        check_message(L, -1);
        return;
    }
    size_t len, len2;
    FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING, "result is a %s", luaL_typename(L, -1));
    int text = lua_gettop(L);
    const char *s = lua_tolstring(L, text, &len);
    FUZZ_CHECK(truto_utf8_invalid_at(s, len) == (size_t)-1, "invalid UTF-8 in output");

    lua_pushvalue(L, text);
    FUZZ_CHECK(fuzz_call(L, core, "decode_json", 1, 2) == 0, "decode_json raised");
    FUZZ_CHECK(!lua_isnil(L, -2), "cannot read back %s: %s", s, lua_tostring(L, -1));
    lua_pop(L, 1);
    FUZZ_CHECK(fuzz_call(L, core, "encode_json", 1, 1) == 0, "cannot write back %s: %s", s,
               lua_tostring(L, -1));
    const char *s2 = lua_tolstring(L, -1, &len2);
    FUZZ_CHECK(len == len2 && memcmp(s, s2, len) == 0, "round trip changed\n%s\n%s", s, s2);
}

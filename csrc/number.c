/*
 * Numbers as text.  Integers are written exactly.  Floats are written the
 * way JavaScript's Number#toString writes them: the shortest digits that
 * read back to the same double, in plain notation for 1e-7 < |x| < 1e21 and
 * exponent notation outside.  That makes 10.0 "10", keeps 0.1 "0.1", and
 * makes the query encoder agree with qs (and the JSON writer with
 * JSON.stringify) digit for digit.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "truto.h"

/* Shortest decimal digits of d (finite, non-zero): fills digits (no dot,
 * no trailing zeros) and returns their count; *point receives the decimal
 * exponent n such that d = 0.DIGITS * 10^n. */
static int shortest_digits(double d, char *digits, int *point)
{
    char buf[40];
    /* A double that some k <= 15 digits identify is within a fraction of
     * a unit of the 15th digit from those digits, so rounding it to 15
     * digits gives them back, padded with zeros (stripped below).  Only
     * when 15 digits do not read back are 16, then 17, needed.  Subnormals
     * hold fewer digits, so for them every length is tried. */
    for (int prec = d < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (prec == 17 || strtod(buf, NULL) == d)
            break;
    }
    /* buf is "D.DDDDe±XX" (or "De±XX" when one digit) without a sign. */
    int k = 0;
    const char *p = buf;
    for (; *p != 'e'; p++)
        if (*p != '.')
            digits[k++] = *p;
    *point = atoi(p + 1) + 1;
    while (k > 1 && digits[k - 1] == '0')
        k--;
    return k;
}

/* Fast path for the common numbers: integers below 2^53 and decimals with at
 * most 6 places and 15 digits (amounts, prices, rates).  If m / 10^k reads
 * back as d, m has at most 15 digits and d is normal, then m's digits are
 * the shortest ones (see shortest_digits), so this writes what the slow
 * path would.  d > 0.  Returns the length written, or 0 to take the slow
 * path. */
static size_t format_short_decimal(double d, char *out)
{
    static const double powers[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6 };
    if (d < 1e-6 || d >= 1e15)
        return 0;
    for (int k = 0; k <= 6; k++) {
        double x = d * powers[k];
        if (x >= 1e15)
            return 0;
        long long m = (long long)x;
        if ((double)m != x || (double)m / powers[k] != d)
            continue;
        /* m's digits, the last k after a point, trailing zeros dropped. */
        char digits[24];
        int n = 0;
        for (; m > 0 || n <= k; m /= 10)
            digits[n++] = (char)('0' + m % 10);     /* reversed */
        int skip = 0;
        while (skip < k && digits[skip] == '0')
            skip++;
        size_t len = 0;
        for (int i = n - 1; i >= k; i--)
            out[len++] = digits[i];
        if (skip < k) {
            out[len++] = '.';
            for (int i = k - 1; i >= skip; i--)
                out[len++] = digits[i];
        }
        return len;
    }
    return 0;
}

static size_t format_double(double d, char *out)
{
    char digits[24];
    char *o = out;
    int point;

    if (d == 0) {           /* 0 and -0, as JavaScript prints both */
        out[0] = '0';
        return 1;
    }
    if (d < 0) {
        *o++ = '-';
        d = -d;
    }
    size_t quick = format_short_decimal(d, o);
    if (quick)
        return (size_t)(o - out) + quick;
    int k = shortest_digits(d, digits, &point);
    if (k <= point && point <= 21) {
        memcpy(o, digits, (size_t)k);
        o += k;
        for (int i = k; i < point; i++)
            *o++ = '0';
    } else if (0 < point && point <= 21) {
        memcpy(o, digits, (size_t)point);
        o += point;
        *o++ = '.';
        memcpy(o, digits + point, (size_t)(k - point));
        o += k - point;
    } else if (-6 < point && point <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = point; i < 0; i++)
            *o++ = '0';
        memcpy(o, digits, (size_t)k);
        o += k;
    } else {
        *o++ = digits[0];
        if (k > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)(k - 1));
            o += k - 1;
        }
        o += snprintf(o, 8, "e%c%d", point - 1 >= 0 ? '+' : '-', abs(point - 1));
    }
    return (size_t)(o - out);
}

size_t truto_format_number(lua_State *L, int idx, char *out)
{
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx))
        return (size_t)snprintf(out, 32, "%lld", (long long)lua_tointeger(L, idx));
#endif
    double d = (double)lua_tonumber(L, idx);
    if (!isfinite(d))
        return 0;
    return format_double(d, out);
}

const char *truto_nonfinite_name(lua_State *L, int idx)
{
    double d = (double)lua_tonumber(L, idx);
    return d != d ? "NaN" : d > 0 ? "inf" : "-inf";
}

/*
 * Numbers as text.  Integers are written exactly.  Floats are written the
 * way JavaScript's Number#toString writes them: the shortest digits that
 * read back to the same double, in plain notation for 1e-6 <= |x| < 1e21 and
 * exponent notation outside.  That makes 10.0 "10", keeps 0.1 "0.1", and
 * makes the query encoder agree with qs (and the JSON writer with
 * JSON.stringify) digit for digit.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "truto.h"

/*
 * Shortest digits, the way ECMAScript's Number::toString (7.1.12.1, step 5
 * and its note) chooses them: the smallest p such that some p-digit decimal
 * reads back (correctly rounded, as strtod reads it) to d, and among the
 * p-digit decimals that do, the one nearest d, the even one on a tie.
 *
 * Why the candidates below are the only ones.  The decimals that read back
 * to d fill an interval around d: from halfway to the double below up to
 * halfway to the double above (the ends included when d's significand is
 * even).  Let r be the p-digit decimal nearest d (d correctly rounded to p
 * digits).  If r reads back, no p-digit decimal that does is nearer.  If r
 * does not, those on r's side of d are farther out than r, so out too, and
 * any that reads back lies on the other side, where the nearest p-digit
 * decimal, r's neighbour one unit in the last place away, is then in as
 * well: it is the only other candidate.  When the interval is symmetric
 * about d that neighbour is never in: it is no nearer to d than r, and the
 * two ends of the interval are in or out alike.  The interval is lopsided
 * only when d is a power of two above DBL_MIN: the double below is half as
 * far as the one above, so r can fall just short below d while r plus one
 * unit, above d, is in (2^-24 and 2^89 are two of the 46 such doubles).
 * Rounding to 15 digits and retrying at 16 and 17, as this code once did,
 * missed exactly those.  Which side of d r is on comes free from reading
 * it back: strtod keeps the order.
 *
 * Why start at 15 for normal doubles: a decimal of k <= 15 digits that
 * reads back is within 2^-53 of d, relatively, well inside half a unit of
 * its 15th digit, so rounding d to 15 digits gives it back (padded with
 * zeros).  Subnormals carry fewer bits, so 5e-324 is 1 digit although 15
 * read back too; for them every length counts, and since a p-digit decimal
 * that reads back is also a (p+1)-digit one, a binary search finds the
 * smallest.  17 digits always read back.
 *
 * Why one snprintf: d correctly rounded to 17 digits (r17) also gives d
 * correctly rounded to any p < 17 digits, unless r17's digits after the
 * p-th are 5 then zeros.  A rounding midpoint at p digits is a 17-digit
 * decimal ending that way; r17 is the 17-digit decimal nearest d, so no
 * such midpoint lies between d and r17, and both round the same way.  In
 * the one case where r17 is itself such a midpoint, snprintf rounds d to p
 * digits afresh (glibc rounds exactly, ties to even).
 */

#define MAX_DIGITS 17

/* Digits and exponent of snprintf's "%.*e" text (any radix character):
 * fills digits, returns the point n with the value 0.DIGITS * 10^n. */
static int parse_e(const char *buf, char *digits, int want)
{
    int k = 0;
    const char *p = buf;
    for (; *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && k < want)
            digits[k++] = *p;
    return atoi(p + 1) + 1;
}

/* Adds one unit in the last of the n digits. */
static void increment(char *digits, int n, int *point)
{
    int i = n - 1;
    while (i >= 0 && digits[i] == '9')
        digits[i--] = '0';
    if (i >= 0) {
        digits[i]++;
    } else {                /* 99..9 became 100..0: one place up */
        digits[0] = '1';
        (*point)++;
    }
}

/* The double that 0.DIGITS * 10^point (n digits) reads back as.  The text
 * has no radix character, so the locale does not matter. */
static double read_back(const char *digits, int n, int point)
{
    char buf[MAX_DIGITS + 8];
    memcpy(buf, digits, (size_t)n);
    char *o = buf + n;
    int e = point - n;
    *o++ = 'e';
    if (e < 0) {
        *o++ = '-';
        e = -e;
    }
    if (e >= 100)
        *o++ = (char)('0' + e / 100);
    if (e >= 10)
        *o++ = (char)('0' + e / 10 % 10);
    *o++ = (char)('0' + e % 10);
    *o = '\0';
    return strtod(buf, NULL);
}

typedef struct {
    double d;
    int asymmetric;         /* a power of two above DBL_MIN (see above) */
    char r17[MAX_DIGITS];   /* d correctly rounded to 17 digits */
    int point17;
} shortest_state;

/* Whether some p-digit decimal (p < 17) reads back to s->d; if so, fills
 * digits and *point with the one to print (digits is scratch otherwise). */
static int try_length(const shortest_state *s, int p, char *digits, int *point)
{
    int tail = p;           /* r17's digits after the p-th: 5 then zeros? */
    if (s->r17[tail] == '5')
        for (tail++; tail < MAX_DIGITS && s->r17[tail] == '0'; tail++)
            ;
    if (tail == MAX_DIGITS) {
        char buf[40];
        snprintf(buf, sizeof buf, "%.*e", p - 1, s->d);
        *point = parse_e(buf, digits, p);
    } else {
        memcpy(digits, s->r17, (size_t)p);
        *point = s->point17;
        if (s->r17[p] >= '5')
            increment(digits, p, point);
    }
    double back = read_back(digits, p, *point);
    if (back == s->d)
        return 1;
    if (s->asymmetric && back < s->d) {
        increment(digits, p, point);
        return read_back(digits, p, *point) == s->d;
    }
    return 0;
}

/* Shortest decimal digits of d (finite, > 0): fills digits (no dot, no
 * trailing zeros) and returns their count; *point receives the decimal
 * exponent n such that d = 0.DIGITS * 10^n. */
static int shortest_digits(double d, char *digits, int *point)
{
    shortest_state s;
    char buf[40], cand[MAX_DIGITS];
    uint64_t bits;
    int k = MAX_DIGITS;

    memcpy(&bits, &d, sizeof bits);
    s.d = d;
    s.asymmetric = (bits & (((uint64_t)1 << 52) - 1)) == 0 && (bits >> 52) > 1;
    snprintf(buf, sizeof buf, "%.*e", MAX_DIGITS - 1, d);
    s.point17 = parse_e(buf, s.r17, MAX_DIGITS);

    if (d >= DBL_MIN) {
        for (int p = 15; p < MAX_DIGITS; p++)
            if (try_length(&s, p, digits, point)) {
                k = p;
                break;
            }
    } else {                /* binary search; k: the shortest length known to work */
        int lo = 1;
        while (lo < k) {
            int mid = (lo + k) / 2, mid_point;
            if (try_length(&s, mid, cand, &mid_point)) {
                k = mid;
                memcpy(digits, cand, (size_t)k);
                *point = mid_point;
            } else {
                lo = mid + 1;
            }
        }
    }
    if (k == MAX_DIGITS) {
        memcpy(digits, s.r17, MAX_DIGITS);
        *point = s.point17;
    }
    while (k > 1 && digits[k - 1] == '0')
        k--;
    return k;
}

/* Fast path for the common numbers: integers below 2^53 and decimals with at
 * most 6 places and 15 digits (amounts, prices, rates).  If m / 10^k reads
 * back as d (m and 10^k are exact, so the division rounds m / 10^k as strtod
 * reads it), m has at most 15 digits and d is normal, then m's digits are
 * the shortest ones, and the only ones that short (see "Why start at 15"
 * above), so this writes what the slow path would.  d > 0.  Returns the
 * length written, or 0 to take the slow path. */
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

static size_t format_integer(lua_Integer v, char *out)
{
    char digits[24];
    /* Unsigned, so that the most negative integer has a magnitude. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    int n = 0;
    do {
        digits[n++] = (char)('0' + u % 10);     /* reversed */
        u /= 10;
    } while (u > 0);
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = digits[--n];
    return len;
}

size_t truto_format_number(lua_State *L, int idx, char *out)
{
    if (lua_isinteger(L, idx))
        return format_integer(lua_tointeger(L, idx), out);
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

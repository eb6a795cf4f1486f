/*
 * Helpers for reading responses.  They never call back into Lua, so they
 * are safe under any transport (including nginx cosockets).  Nothing here
 * allocates: the HTTP-date reader works on the argument string and a few
 * integers, and does not depend on the locale or on the C library's time
 * functions (strptime's %a and %b follow the locale; timegm is not C99).
 */
#include <string.h>
#include <time.h>

#include "truto.h"

static const char *const WEEKDAYS[7] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char *const WEEKDAYS_LONG[7] = {
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"
};
static const char *const MONTHS[12] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (Howard Hinnant's days_from_civil); m is 1..12. */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The year of the day that is `days` days after 1970-01-01 (its inverse). */
static long long year_from_days(long long days)
{
    days += 719468;
    long long era = (days >= 0 ? days : days - 146096) / 146097;
    long long doe = days - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    return yoe + era * 400 + (mp >= 10);
}

static int days_in_month(long long y, int m)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
        return 29;
    return days[m - 1];
}

/* Reads exactly n ASCII digits at *p into *out and advances *p. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return 0;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 1;
}

/* Matches the literal lit at *p (case-sensitive, as RFC 9110 writes the
 * names with %s"...") and advances *p. */
static int literal(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/* One of names (count of them) at *p: its index, or -1.  No name is a
 * prefix of another in either table, so the first match is the match. */
static int name(const char **p, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (literal(p, names[i]))
            return i;
    return -1;
}

/* "08:49:37" into *seconds (of the day).  60 is accepted as a second (a
 * leap second, which IMF allows) and counts as the next minute's 0. */
static int time_of_day(const char **p, int *seconds)
{
    int h, m, s;
    if (!digits(p, 2, &h) || !literal(p, ":") || !digits(p, 2, &m) || !literal(p, ":") ||
        !digits(p, 2, &s))
        return 0;
    if (h > 23 || m > 59 || s > 60)
        return 0;
    *seconds = h * 3600 + m * 60 + s;
    return 1;
}

/* The three forms RFC 9110 section 5.6.7 asks a recipient to accept, and
 * nothing else (no leading or trailing white space, names case-sensitive):
 *   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"   (the day has two digits)
 *   RFC 850      "Sunday, 06-Nov-94 08:49:37 GMT"  (full weekday, 2-digit year)
 *   asctime      "Sun Nov  6 08:49:37 1994"        (day " 6", "06" or "6")
 * Every field must be in range (hour 0-23, minute 0-59, second 0-60, day
 * within its month, leap years Gregorian) and the weekday must be the
 * date's.  RFC 850's two-digit year is the year with those last digits
 * in (now_year - 50, now_year + 50]: RFC 9110 has a date that "appears to
 * be more than 50 years in the future" read as the most recent such year
 * in the past.  Returns 1 and *out (epoch seconds, leap seconds not
 * counted), or 0. */
static int parse_http_date(const char *s, size_t len, long long now_year, long long *out)
{
    const char *p = s;
    int wday, mon, day, year, secs;
    long long y;

    wday = name(&p, WEEKDAYS, 7);
    if (wday >= 0 && literal(&p, ", ")) {
        /* IMF-fixdate */
        if (!digits(&p, 2, &day) || !literal(&p, " ") || (mon = name(&p, MONTHS, 12)) < 0 ||
            !literal(&p, " ") || !digits(&p, 4, &year) || !literal(&p, " ") ||
            !time_of_day(&p, &secs) || !literal(&p, " GMT"))
            return 0;
        y = year;
    } else if (wday >= 0 && literal(&p, " ")) {
        /* asctime: "Nov  6", "Nov 06" or "Nov 6" */
        if ((mon = name(&p, MONTHS, 12)) < 0 || !literal(&p, " "))
            return 0;
        if (p[0] == ' ') {                          /* "Nov  6" */
            p++;
            if (!digits(&p, 1, &day))
                return 0;
        } else if (p[0] != '\0' && p[1] == ' ') {  /* "Nov 6" */
            if (!digits(&p, 1, &day))
                return 0;
        } else if (!digits(&p, 2, &day)) {          /* "Nov 06" */
            return 0;
        }
        if (!literal(&p, " ") || !time_of_day(&p, &secs) || !literal(&p, " ") ||
            !digits(&p, 4, &year))
            return 0;
        y = year;
    } else {
        /* RFC 850: the full weekday name */
        p = s;
        wday = name(&p, WEEKDAYS_LONG, 7);
        if (wday < 0 || !literal(&p, ", ") || !digits(&p, 2, &day) || !literal(&p, "-") ||
            (mon = name(&p, MONTHS, 12)) < 0 || !literal(&p, "-") || !digits(&p, 2, &year) ||
            !literal(&p, " ") || !time_of_day(&p, &secs) || !literal(&p, " GMT"))
            return 0;
        /* A year of now's century, then moved into (now - 50, now + 50]. */
        y = now_year - now_year % 100 + year;
        if (y > now_year + 50)
            y -= 100;
        else if (y <= now_year - 50)
            y += 100;
    }
    if (p != s + len || day < 1 || day > days_in_month(y, mon + 1))
        return 0;
    long long days = days_from_civil(y, mon + 1, day);
    /* 1970-01-01 was a Thursday (4). */
    if ((int)(((days % 7) + 7 + 4) % 7) != wday)
        return 0;
    *out = days * 86400 + secs;
    return 1;
}

/* core.parse_http_date(s [, now]) -> epoch seconds or nil.  now (epoch
 * seconds, default the clock) only matters for RFC 850's two-digit year. */
static int l_parse_http_date(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Number now = luaL_optnumber(L, 2, (lua_Number)time(NULL));
    long long result;

    /* Also keeps the conversion to long long defined (NaN, inf, huge). */
    if (!(now > -1e14 && now < 1e14))
        return luaL_argerror(L, 2, "now must be a finite number of seconds");
    long long now_days = (long long)now / 86400 - ((long long)now % 86400 < 0);
    if (!parse_http_date(s, len, year_from_days(now_days), &result)) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)result);
    return 1;
}

void truto_open_response(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"parse_http_date", l_parse_http_date},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}

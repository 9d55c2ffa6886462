/* strtod.c — see include/latentd/strtod.h. */
#define _GNU_SOURCE
#include "latentd/strtod.h"

#include <dlfcn.h>
#include <limits.h>
#include <locale.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef double (*strtod_fn)(const char *, char **);

typedef int (*strncmp_fn)(const char *, const char *, size_t);

static strtod_fn g_libc_strtod;
static strncmp_fn g_libc_strncmp;
static pthread_once_t g_libc_once = PTHREAD_ONCE_INIT;
static _Thread_local unsigned long tl_fast_calls;

/* The C library's definition of name, the one this file's hides. */
static void *libc_sym(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "latentd: cannot find the C library's %s: %s\n", name, dlerror());
        abort();
    }
    return f;
}

/* Found on first use, not in a constructor: other libraries' constructors,
 * which run before this file's, may already parse numbers. */
static void find_libc(void)
{
    g_libc_strtod = (strtod_fn)libc_sym("strtod");
    g_libc_strncmp = (strncmp_fn)libc_sym("strncmp");
}

double ld_strtod_libc(const char *s, char **end)
{
    pthread_once(&g_libc_once, find_libc);
    return g_libc_strtod(s, end);
}

unsigned long ld_strtod_fast_calls(void)
{
    return tl_fast_calls;
}

/* 10^0 .. 10^22: every one an exact double */
static const double k_pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

double strtod(const char *restrict s, char **restrict end)
{
    const char *p = s;
    int neg = *p == '-';
    p += neg;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        return ld_strtod_libc(s, end); /* hexadecimal */
    uint64_t m = 0; /* the significant digits, at most 19 */
    int nd = 0, any = 0, e10 = 0;
    for (; is_digit(*p); p++) {
        any = 1;
        if (m || *p != '0') {
            if (nd++ == 19)
                return ld_strtod_libc(s, end);
            m = m * 10 + (uint64_t)(*p - '0');
        }
    }
    if (*p == '.') {
        for (p++; is_digit(*p); p++) {
            any = 1;
            e10--;
            if (m || *p != '0') {
                if (nd++ == 19)
                    return ld_strtod_libc(s, end);
                m = m * 10 + (uint64_t)(*p - '0');
            }
        }
    }
    if (!any) /* white space, '+', "inf", "nan", "." or nothing */
        return ld_strtod_libc(s, end);
    if (*p == 'e' || *p == 'E') {
        const char *q = p + 1;
        int eneg = *q == '-';
        q += *q == '-' || *q == '+';
        if (!is_digit(*q)) /* glibc stops before the 'e' */
            return ld_strtod_libc(s, end);
        int x = 0;
        for (int xd = 0; is_digit(*q); q++) {
            if (++xd > 4)
                return ld_strtod_libc(s, end);
            x = x * 10 + (*q - '0');
        }
        e10 += eneg ? -x : x;
        p = q;
    }
    double v = 0.0;
    if (m) {
        if (m > (UINT64_C(1) << 53) || e10 < -22 || e10 > 22)
            return ld_strtod_libc(s, end);
        v = (double)m; /* exact */
        v = e10 < 0 ? v / k_pow10[-e10] : v * k_pow10[e10]; /* one rounding */
    }
    tl_fast_calls++;
    if (end)
        *end = (char *)(uintptr_t)p;
    return neg ? -v : v;
}

/* ---------------------------------------------------------------- localeconv */

/* The C locale's conventions (POSIX, <locale.h>): a '.' decimal point, every
 * other string empty, every char field CHAR_MAX ("not available").  Not
 * const, like glibc's static result, which callers may (but must not)
 * write. */
static struct lconv g_c_lconv = {
    .decimal_point = ".",
    .thousands_sep = "",
    .grouping = "",
    .int_curr_symbol = "",
    .currency_symbol = "",
    .mon_decimal_point = "",
    .mon_thousands_sep = "",
    .mon_grouping = "",
    .positive_sign = "",
    .negative_sign = "",
    .int_frac_digits = CHAR_MAX,
    .frac_digits = CHAR_MAX,
    .p_cs_precedes = CHAR_MAX,
    .p_sep_by_space = CHAR_MAX,
    .n_cs_precedes = CHAR_MAX,
    .n_sep_by_space = CHAR_MAX,
    .p_sign_posn = CHAR_MAX,
    .n_sign_posn = CHAR_MAX,
    .int_p_cs_precedes = CHAR_MAX,
    .int_p_sep_by_space = CHAR_MAX,
    .int_n_cs_precedes = CHAR_MAX,
    .int_n_sep_by_space = CHAR_MAX,
    .int_p_sign_posn = CHAR_MAX,
    .int_n_sign_posn = CHAR_MAX,
};

struct lconv *localeconv(void)
{
    return &g_c_lconv;
}

struct lconv *ld_localeconv_libc(void)
{
    struct lconv *(*fn)(void) = (struct lconv * (*)(void))libc_sym("localeconv");
    return fn();
}

/* ------------------------------------------------------------------ strncmp */

static _Thread_local unsigned long tl_strncmp_calls;

/* Byte by byte, as unsigned char: the first difference decides, a NUL in
 * both ends the comparison.  (GCC does not turn this loop back into a
 * strncmp call: it has no such idiom; check_strtod's tests would recurse.) */
int strncmp(const char *a, const char *b, size_t n)
{
    tl_strncmp_calls++;
    const unsigned char *p = (const unsigned char *)a, *q = (const unsigned char *)b;
    for (; n; n--, p++, q++) {
        if (*p != *q)
            return *p < *q ? -1 : 1;
        if (!*p)
            break;
    }
    return 0;
}

unsigned long ld_strncmp_calls(void)
{
    return tl_strncmp_calls;
}

int ld_strncmp_libc(const char *a, const char *b, size_t n)
{
    pthread_once(&g_libc_once, find_libc);
    return g_libc_strncmp(a, b, n);
}

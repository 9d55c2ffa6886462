/* check_strtod.c — the process's strtod against glibc's own: the same bits,
 * end pointer and errno on edge cases, on a million random decimal
 * strings (fast path and fallback alike) and on every form the daemon's
 * float writer produces; and cJSON's numbers reach it. */
#define _GNU_SOURCE
#include "testutil.h"

#include "latentd/buf.h"
#include "latentd/common.h"
#include "latentd/rng.h"
#include "latentd/strtod.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <locale.h>
#include <stdint.h>
#include <string.h>

/* Both parsers on s: identical bits (so -0 and NaN payloads count), end
 * offset and errno.  Returns 1 if ours took the fast path. */
static int same_as_libc(const char *s)
{
    char *e_ours = NULL, *e_libc = NULL;
    unsigned long before = ld_strtod_fast_calls();
    errno = 0;
    double ours = strtod(s, &e_ours);
    int err_ours = errno;
    int fast = ld_strtod_fast_calls() != before;
    errno = 0;
    double libc = ld_strtod_libc(s, &e_libc);
    int err_libc = errno;
    /* plain ifs: ck_assert records its line on every call, a system call
     * (millions here) */
    if (memcmp(&ours, &libc, sizeof ours) != 0)
        ck_abort_msg("\"%s\": %.17g, glibc %.17g", s, ours, libc);
    if (e_ours != e_libc)
        ck_abort_msg("\"%s\": ends at %td, glibc at %td", s, e_ours - s, e_libc - s);
    if (err_ours != err_libc)
        ck_abort_msg("\"%s\": errno %d, glibc %d", s, err_ours, err_libc);
    return fast;
}

START_TEST(test_strtod_edges)
{
    static const char *const cases[] = {
        "0", "-0", "0.0", "-0.0", "00", "007", "0e5", "-0e-999", "1", "-1", "1.", "-1.", ".5",
        "-.5", ".", "-", "-.", "", " 1", "\t-2", "+1", "+.5", "1e", "1e+", "1e-", "1ex", "1E5",
        "1e+22", "1e22", "1e23", "1e-22", "1e-23", "9007199254740992", "9007199254740993",
        "9007199254740993e-22", "18446744073709551615", "1844674407370955161", "12345678901234567890",
        "0.1", "0.2", "0.3", "0.30000000000000004", "2.2250738585072014e-308", "4.9e-324",
        "1.7976931348623157e308", "1e309", "-1e309", "1e-400", "inf", "-inf", "INF", "nan",
        "NaN", "-nan", "infinity", "0x10", "0X1p3", "-0x1.8p1", "00x1", "1,5", "1.5.5", "1e2e3",
        "1e00001", "1e0001", "123abc", "0.000000000000000000000000000001", "3.4028235e38",
        "1.17549435e-38", "1.40129846e-45", "0.0000208166293", "0.99999994", "-0.8750",
        "1234567890123456789", "0.1234567890123456789", "100000000000000000000000",
        "0.000000000000000000000001", "9.999999999999999e22", "4503599627370497.5",
    };
    int fast = 0;
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++)
        fast += same_as_libc(cases[i]);
    ck_assert_int_gt(fast, 20); /* the fast path is taken, not just the fallback */
}
END_TEST

/* Random strings in the shape of numbers: sign, integer digits, point,
 * fraction digits, exponent (well- or ill-formed), then junk. */
START_TEST(test_strtod_random)
{
    ld_rng_t r;
    ld_rng_seed(&r, 2026);
    static const char junk[] = " ,]}xe.+-0";
    int fast = 0, n = 1000000;
    for (int t = 0; t < n; t++) {
        char s[96];
        int k = 0;
        uint32_t u = (uint32_t)ld_rng_u64(&r);
        if (u & 1)
            s[k++] = '-';
        else if ((u & 6) == 0)
            s[k++] = '+';
        int ni = (int)((uint32_t)ld_rng_u64(&r) % 12), nf = (int)((uint32_t)ld_rng_u64(&r) % 26);
        if ((uint32_t)ld_rng_u64(&r) % 4 == 0)
            ni = (int)((uint32_t)ld_rng_u64(&r) % 24);
        for (int i = 0; i < ni; i++) /* zeros are frequent: leading and trailing */
            s[k++] = (uint32_t)ld_rng_u64(&r) % 3 == 0 ? '0' : (char)('0' + (uint32_t)ld_rng_u64(&r) % 10);
        if ((uint32_t)ld_rng_u64(&r) % 5 != 0) {
            s[k++] = '.';
            for (int i = 0; i < nf; i++)
                s[k++] = (uint32_t)ld_rng_u64(&r) % 3 == 0 ? '0' : (char)('0' + (uint32_t)ld_rng_u64(&r) % 10);
        }
        uint32_t x = (uint32_t)ld_rng_u64(&r) % 8;
        if (x < 4) {
            s[k++] = x & 1 ? 'E' : 'e';
            uint32_t sg = (uint32_t)ld_rng_u64(&r) % 3;
            if (sg)
                s[k++] = sg == 1 ? '-' : '+';
            int nx = (int)((uint32_t)ld_rng_u64(&r) % 6); /* 0: malformed */
            int v = (int)((uint32_t)ld_rng_u64(&r) % 40);
            if (nx > 2)
                v = (int)((uint32_t)ld_rng_u64(&r) % 400);
            k += snprintf(s + k, 8, nx ? "%0*d" : "", nx > 3 ? nx : 1, v);
        }
        if ((uint32_t)ld_rng_u64(&r) % 2)
            s[k++] = junk[(uint32_t)ld_rng_u64(&r) % (sizeof junk - 1)];
        s[k] = '\0';
        fast += same_as_libc(s);
    }
    ck_assert_int_gt(fast, n / 4);
    ck_assert_int_lt(fast, n); /* and the fallback too */
}
END_TEST

/* What clients send back: the daemon's own float output (z vectors, images),
 * and %.Ng forms of floats and doubles. */
START_TEST(test_strtod_float_forms)
{
    ld_rng_t r;
    ld_rng_seed(&r, 7);
    ld_buf_t b = {0};
    int fast = 0, n = 500000;
    for (int t = 0; t < n; t++) {
        uint32_t bits = (uint32_t)ld_rng_u64(&r);
        float f;
        memcpy(&f, &bits, sizeof f);
        if (!isfinite(f))
            continue;
        b.len = 0;
        ld_buf_json_float(&b, f);
        ld_buf_putc(&b, '\0');
        fast += same_as_libc(b.data);
        char s[64];
        snprintf(s, sizeof s, "%.*g", 1 + (int)(bits % 17), (double)f * (1 + (bits % 3) * 1e-3));
        same_as_libc(s);
        float px = (float)(bits >> 8) / 16777216.0f; /* a pixel in [0,1) */
        b.len = 0;
        ld_buf_json_float(&b, px);
        ld_buf_putc(&b, '\0');
        fast += same_as_libc(b.data);
    }
    ck_assert_int_gt(fast, n / 2);
    ld_buf_free(&b);
}
END_TEST

/* The process's localeconv gives the C locale's fields, as glibc's does in
 * the locale latentd runs in (it never calls setlocale). */
START_TEST(test_localeconv_matches_libc)
{
    struct lconv *ours = localeconv(), *libc = ld_localeconv_libc();
    ck_assert_ptr_nonnull(libc);
    ck_assert_ptr_ne(ours, libc); /* ours is the one the process calls */
#define SAME_STR(f) ck_assert_str_eq(ours->f, libc->f)
#define SAME_CHR(f) ck_assert_int_eq(ours->f, libc->f)
    SAME_STR(decimal_point);
    SAME_STR(thousands_sep);
    SAME_STR(grouping);
    SAME_STR(int_curr_symbol);
    SAME_STR(currency_symbol);
    SAME_STR(mon_decimal_point);
    SAME_STR(mon_thousands_sep);
    SAME_STR(mon_grouping);
    SAME_STR(positive_sign);
    SAME_STR(negative_sign);
    SAME_CHR(int_frac_digits);
    SAME_CHR(frac_digits);
    SAME_CHR(p_cs_precedes);
    SAME_CHR(p_sep_by_space);
    SAME_CHR(n_cs_precedes);
    SAME_CHR(n_sep_by_space);
    SAME_CHR(p_sign_posn);
    SAME_CHR(n_sign_posn);
    SAME_CHR(int_p_cs_precedes);
    SAME_CHR(int_p_sep_by_space);
    SAME_CHR(int_n_cs_precedes);
    SAME_CHR(int_n_sep_by_space);
    SAME_CHR(int_p_sign_posn);
    SAME_CHR(int_n_sign_posn);
#undef SAME_STR
#undef SAME_CHR
}
END_TEST

/* The process's strncmp has the sign of glibc's on random short strings
 * over an alphabet with NUL, high-bit bytes and near-equal letters, for
 * every n up to past both ends. */
START_TEST(test_strncmp_matches_libc)
{
    static const unsigned char alpha[] = {'a', 'b', 'n', 'u', 0x00, 0x7f, 0x80, 0xff};
    ld_rng_t r;
    ld_rng_seed(&r, 11);
    char a[24], b[24];
    long checked = 0;
    for (int it = 0; it < 200000; it++) {
        int la = (int)(ld_rng_u64(&r) % 20), lb = (int)(ld_rng_u64(&r) % 20);
        for (int i = 0; i < la; i++)
            a[i] = (char)(alpha[ld_rng_u64(&r) % 8] ?: 'a');
        a[la] = 0;
        /* b: often a's prefix with one change, so that n decides */
        memcpy(b, a, sizeof b);
        if (it % 3 == 0) {
            for (int i = 0; i < lb; i++)
                b[i] = (char)(alpha[ld_rng_u64(&r) % 8] ?: 'b');
            b[lb] = 0;
        } else if (la > 0) {
            b[ld_rng_u64(&r) % (uint64_t)la] = (char)alpha[ld_rng_u64(&r) % 8];
        }
        for (size_t n = 0; n <= 22; n++) {
            int o = strncmp(a, b, n), l = ld_strncmp_libc(a, b, n);
            if ((o > 0) != (l > 0) || (o < 0) != (l < 0))
                ck_abort_msg("strncmp sign %d, glibc %d (n=%zu, lengths %d and %zu)", o, l, n,
                             la, strlen(b));
            checked++;
        }
    }
    ck_assert_int_gt(checked, 4000000);
    /* bytes past a difference or a common NUL are never read as equal */
    ck_assert_int_eq(strncmp("null", "nulx", 3), 0);
    ck_assert_int_lt(strncmp("null", "nulx", 4), 0);
    ck_assert_int_eq(strncmp("ab\0x", "ab\0y", 5), 0);
    ck_assert_int_gt(strncmp("\x80", "\x7f", 1), 0); /* unsigned */
}
END_TEST

/* cJSON, a shared library, parses its numbers with this strtod (and checks
 * for null/false/true with this strncmp). */
START_TEST(test_strtod_reaches_cjson)
{
    unsigned long before = ld_strtod_fast_calls(), cmp0 = ld_strncmp_calls();
    cJSON *j = cJSON_Parse("{\"z\":[0.5,-1.25,3e2,0.0000208166293]}");
    ck_assert_ptr_nonnull(j);
    ck_assert_uint_eq(ld_strtod_fast_calls() - before, 4);
    ck_assert_uint_ge(ld_strncmp_calls() - cmp0, 4);
    cJSON *z = cJSON_GetObjectItemCaseSensitive(j, "z");
    ck_assert(cJSON_GetArrayItem(z, 3)->valuedouble == 0.0000208166293);
    cJSON_Delete(j);
}
END_TEST

Suite *suite_strtod(void)
{
    Suite *s = suite_create("strtod");
    TCase *tc = tcase_create("strtod");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_strtod_edges);
    tcase_add_test(tc, test_strtod_random);
    tcase_add_test(tc, test_strtod_float_forms);
    tcase_add_test(tc, test_strtod_reaches_cjson);
    tcase_add_test(tc, test_localeconv_matches_libc);
    tcase_add_test(tc, test_strncmp_matches_libc);
    suite_add_tcase(s, tc);
    return s;
}

/* check_buf.c — the response writer: float formatting (shortest-ish, always
 * reads back to the same float), JSON string escaping, sticky failure;
 * SHA-256 against the FIPS 180-4 test vectors; and the access-log line
 * (formatted without printf, buffered in the daemon without losing order). */
#define _GNU_SOURCE
#include "testutil.h"

#include "latentd/buf.h"
#include "latentd/common.h"
#include "latentd/log.h"
#include "latentd/sha256.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *fmt(float v)
{
    static ld_buf_t b; /* reused: the loops below call this millions of times */
    b.len = 0;
    ld_buf_json_float(&b, v);
    return b.data;
}

START_TEST(test_float_forms)
{
    ck_assert_str_eq(fmt(0.0f), "0");
    ck_assert_str_eq(fmt(-0.0f), "0");
    ck_assert_str_eq(fmt(1.0f), "1");
    ck_assert_str_eq(fmt(0.5f), "0.5");
    ck_assert_str_eq(fmt(-0.25f), "-0.25");
    ck_assert_str_eq(fmt(100.0f), "100");
    ck_assert_str_eq(fmt(0.1f), "0.100000001");
    ck_assert_str_eq(fmt(1e9f), "1e9");
    ck_assert_str_eq(fmt(NAN), "0");
    ck_assert_str_eq(fmt(INFINITY), "0");
    /* each layout of the digit writer: 0.[0000]d..., trailing zeros of the
     * eight-digit word (none, some, all), plain >= 1, and exponent forms */
    ck_assert_str_eq(fmt(-0.0000123f), "-0.0000123");
    ck_assert_str_eq(fmt(0.000099999f), "0.0000999990007");
    ck_assert_str_eq(fmt(0.0625f), "0.0625");
    ck_assert_str_eq(fmt(0.99999994f), "0.99999994");
    ck_assert_str_eq(fmt(0.1234f), "0.123400003");
    ck_assert_str_eq(fmt(123.456f), "123.456001");
    ck_assert_str_eq(fmt(-8.5f), "-8.5");
    ck_assert_str_eq(fmt(12345678.0f), "12345678");
    ck_assert_str_eq(fmt(0.00001f), "9.99999975e-6");
    ck_assert_str_eq(fmt(1e-45f), "1.40129846e-45");
    ck_assert_str_eq(fmt(3.4e38f), "3.39999995e38");
    /* the exponent word: sign or none, one or two digits */
    ck_assert_str_eq(fmt(1e10f), "1e10");
    ck_assert_str_eq(fmt(2.5e15f), "2.50000007e15");
    ck_assert_str_eq(fmt(-3.5e-9f), "-3.50000007e-9");
    ck_assert_str_eq(fmt(-1e-20f), "-9.99999968e-21");
}
END_TEST

START_TEST(test_float_round_trip)
{
    /* every float class: random bit patterns, and a dense sweep of [0,1] */
    uint64_t s = 88172645463325252ULL;
    for (int i = 0; i < 400000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        uint32_t u = (uint32_t)s;
        float f;
        memcpy(&f, &u, 4);
        if (!isfinite(f))
            continue;
        const char *t = fmt(f);
        float g = strtof(t, NULL);
        ck_assert_msg(g == f || (f == 0 && g == 0), "%.9g printed as %s reads %.9g", f, t, g);
    }
    for (int i = 0; i <= 200000; i++) {
        float f = (float)i / 200000.0f;
        ck_assert(strtof(fmt(f), NULL) == f);
    }
    /* a matrix parses as JSON with the same values */
    float m[6] = {0.1f, -2.5e-7f, 3.4e38f, 1.4e-45f, 123456.789f, 0};
    ld_buf_t b = {0};
    ld_buf_json_matrix(&b, m, 2, 3);
    cJSON *j = cJSON_Parse(b.data);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetArraySize(j), 2);
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++)
            ck_assert((float)cJSON_GetArrayItem(cJSON_GetArrayItem(j, r), c)->valuedouble ==
                      m[r * 3 + c]);
    cJSON_Delete(j);
    ld_buf_free(&b);
}
END_TEST

/* Run fn with stderr sent to a temporary file; returns the file's text. */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/latentd-log-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    fn();
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)n + 1);
    ck_assert_int_eq(pread(fd, text, (size_t)n, 0), n);
    close(fd);
    unlink(path);
    return text;
}

static void log_plain(void)
{
    char path[400];
    memset(path, 'p', sizeof path - 1);
    path[sizeof path - 1] = '\0';
    path[0] = '/';
    path[5] = '\n'; /* a forged line break becomes '?' */
    ld_log_access("POST", "/v1/models/m/sample", 200, 1137, 88, "127.0.0.1", "r1", "");
    ld_log_access("GET", path, 404, 0, -3, "::1", "r1", " end=client_abort");
}

static void log_buffered(void)
{
    ck_assert_int_eq(ld_log_access_start(), 0);
    ld_log_access("GET", "/a", 200, 1, 2, "p", "r1", "");
    ld_log_warn("between");
    ld_log_access("GET", "/b", 200, 1, 2, "p", "r1", "");
    ld_log_access_stop();
    ld_log_access_stop(); /* idempotent */
    ld_log_access("GET", "/c", 200, 1, 2, "p", "r1", ""); /* unbuffered again */
}

/* Several threads log at once, past the buffer's size several times over,
 * with a warning now and then: every line arrives once and whole, and each
 * thread's lines in the order it wrote them. */
#define LOG_THREADS 4
#define LOG_LINES 4000
static void *log_many(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < LOG_LINES; i++) {
        char path[64];
        snprintf(path, sizeof path, "/t%d/%d", t, i);
        if (i % 500 == 499)
            ld_log_warn("warn t%d i%d", t, i);
        else
            ld_log_access("GET", path, 200, i, t, "127.0.0.1", "r1", "");
    }
    return NULL;
}

static void log_concurrent(void)
{
    ck_assert_int_eq(ld_log_access_start(), 0);
    pthread_t th[LOG_THREADS];
    for (int t = 0; t < LOG_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, log_many, (void *)(intptr_t)t), 0);
    for (int t = 0; t < LOG_THREADS; t++)
        pthread_join(th[t], NULL);
    ld_log_access_stop();
}

START_TEST(test_access_log_concurrent)
{
    char *text = capture_stderr(log_concurrent);
    int next[LOG_THREADS] = {0};
    int lines = 0;
    for (char *line = text, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        ck_assert_msg(nl != NULL, "a line without its end: %s", line);
        *nl = '\0';
        int t, i;
        const char *p;
        if ((p = strstr(line, " access method=GET path=/t")) && sscanf(p, " access method=GET path=/t%d/%d", &t, &i) == 2) {
        } else if ((p = strstr(line, " warn  warn t")) && sscanf(p, " warn  warn t%d i%d", &t, &i) == 2) {
        } else {
            ck_abort_msg("unexpected line: %s", line);
        }
        ck_assert(t >= 0 && t < LOG_THREADS);
        ck_assert_msg(i == next[t], "thread %d: line %d after %d", t, i, next[t] - 1);
        next[t]++;
        lines++;
    }
    ck_assert_int_eq(lines, LOG_THREADS * LOG_LINES);
    free(text);
}
END_TEST

START_TEST(test_access_log_line)
{
    char *t = capture_stderr(log_plain);
    ck_assert_msg(strstr(t, " info  access method=POST path=/v1/models/m/sample status=200 "
                            "bytes=1137 us=88 peer=127.0.0.1 rid=r1\n"),
                  "%s", t);
    /* the path is cut at 300 bytes and its control characters replaced */
    char want[512];
    char p300[301];
    memset(p300, 'p', 300);
    p300[300] = '\0';
    p300[0] = '/';
    p300[5] = '?';
    snprintf(want, sizeof want,
             " info  access method=GET path=%s status=404 bytes=0 us=-3 peer=::1 "
             "rid=r1 end=client_abort\n",
             p300);
    ck_assert_msg(strstr(t, want), "%s", t);
    ck_assert_int_eq((int)(strchr(t, '\n') - t) > 0, 1);
    free(t);

    t = capture_stderr(log_buffered);
    const char *a = strstr(t, "access method=GET path=/a "), *w = strstr(t, "between"),
               *b = strstr(t, "access method=GET path=/b "), *c = strstr(t, "path=/c ");
    ck_assert_msg(a && w && b && c && a < w && w < b && b < c, "order lost:\n%s", t);
    free(t);
}
END_TEST

/* The access line's time stamp: the current UTC second, cut to the buffer
 * and always terminated. */
START_TEST(test_utc_time)
{
    char got[32], want[2][32];
    for (int k = 0; k < 3; k++) { /* a second may turn between the reads */
        time_t t0 = time(NULL);
        ld_utc_iso8601(got, sizeof got);
        time_t t1 = time(NULL);
        struct tm tm;
        strftime(want[0], sizeof want[0], "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t0, &tm));
        strftime(want[1], sizeof want[1], "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t1, &tm));
        if (t0 == t1)
            break;
    }
    ck_assert_int_eq((int)strlen(got), 20);
    ck_assert_msg(strcmp(got, want[0]) == 0 || strcmp(got, want[1]) == 0, "%s: not %s or %s",
                  got, want[0], want[1]);
    char cut[8];
    memset(cut, 'x', sizeof cut);
    ld_utc_iso8601(cut, 5);
    char year[5] = {got[0], got[1], got[2], got[3], '\0'};
    ck_assert_str_eq(cut, year); /* the first four bytes, then the NUL */
    ck_assert_int_eq(cut[5], 'x');
    ld_utc_iso8601(cut, 1);
    ck_assert_str_eq(cut, "");
    cut[0] = 'y';
    ld_utc_iso8601(cut, 0); /* no room: untouched */
    ck_assert_int_eq(cut[0], 'y');
}
END_TEST

START_TEST(test_integers)
{
    char out[24];
    ck_assert_int_eq(ld_fmt_u64(out, 0), 1);
    ck_assert_str_eq(out, "0");
    ck_assert_int_eq(ld_fmt_u64(out, 18446744073709551615ULL), 20);
    ck_assert_str_eq(out, "18446744073709551615");
    ld_buf_t b = {0};
    long long v[] = {0, 7, -7, 10, 1234567890123LL, -9223372036854775807LL - 1};
    char want[256] = "";
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        ld_buf_int(&b, v[i]);
        ld_buf_putc(&b, ' ');
        snprintf(want + strlen(want), sizeof want - strlen(want), "%lld ", v[i]);
    }
    ck_assert_str_eq(b.data, want);
    ld_buf_free(&b);
}
END_TEST

START_TEST(test_json_strings)
{
    ld_buf_t b = {0};
    ld_buf_json_str(&b, "a\"b\\c\n\x01\x7f\xc3\xa9\xff\xe2\x82");
    ck_assert_str_eq(b.data, "\"a\\\"b\\\\c\\u000a\\u0001\\u007f\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    cJSON *j = cJSON_Parse(b.data);
    ck_assert_ptr_nonnull(j);
    cJSON_Delete(j);
    ld_buf_free(&b);
    ld_buf_printf(&b, "%s-%d", "x", 42);
    ld_buf_printf(&b, "%0300d", 7); /* longer than the stack buffer */
    ck_assert_int_eq(b.len, 4 + 300);
    size_t len;
    char *p = ld_buf_steal(&b, &len);
    ck_assert_int_eq(len, 304);
    ck_assert_int_eq(b.len, 0);
    free(p);
}
END_TEST

static const char *hex(const char *msg, size_t n)
{
    static char h[65];
    ld_sha256_hex(msg, n, h);
    return h;
}

START_TEST(test_sha256_vectors)
{
    ck_assert_str_eq(hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ck_assert_str_eq(hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ck_assert_str_eq(hex(two, strlen(two)),
                     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *four = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    ck_assert_str_eq(hex(four, strlen(four)),
                     "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    /* a million 'a', fed in odd-sized pieces */
    static char a[1000000];
    memset(a, 'a', sizeof a);
    ld_sha256_t c;
    ld_sha256_init(&c);
    size_t off = 0, step = 1;
    while (off < sizeof a) {
        size_t n = step < sizeof a - off ? step : sizeof a - off;
        ld_sha256_update(&c, a + off, n);
        off += n;
        step = step * 3 % 1000 + 1;
    }
    uint8_t d[32];
    ld_sha256_final(&c, d);
    char h[65];
    for (int i = 0; i < 32; i++)
        snprintf(h + 2 * i, 3, "%02x", d[i]);
    ck_assert_str_eq(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* lengths around the padding boundary agree between one-shot and split */
    for (size_t n = 50; n < 140; n++) {
        char one[65];
        ld_sha256_hex(a, n, one);
        ld_sha256_init(&c);
        ld_sha256_update(&c, a, n / 2);
        ld_sha256_update(&c, a + n / 2, n - n / 2);
        ld_sha256_final(&c, d);
        for (int i = 0; i < 32; i++)
            snprintf(h + 2 * i, 3, "%02x", d[i]);
        ck_assert_str_eq(one, h);
    }
}
END_TEST

Suite *suite_buf(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("buf");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_float_forms);
    tcase_add_test(tc, test_float_round_trip);
    tcase_add_test(tc, test_integers);
    tcase_add_test(tc, test_utc_time);
    tcase_add_test(tc, test_json_strings);
    tcase_add_test(tc, test_access_log_line);
    tcase_add_test(tc, test_access_log_concurrent);
    tcase_add_test(tc, test_sha256_vectors);
    suite_add_tcase(s, tc);
    return s;
}

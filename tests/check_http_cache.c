/* check_http_cache.c — the HTTP conveniences of `latentd serve`
 * (src/http_cache.c, src/http.c): gzip of JSON answers, ETag / 304 /
 * Cache-Control on a seeded sample.png, and X-Request-Id.
 *
 * The real daemon (LD_BIN) serving the shipped fashion-gan, driven with
 * libcurl (raw Accept-Encoding, the gzip bytes checked by inflating them
 * here) and with the curl program itself (--compressed).
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define ASAN_SLOWDOWN 4
#define MAX_AGE 600

static tu_daemon_t D;

static void setup(void)
{
    static const char *const models[] = {"fashion-gan", NULL};
    char extra[64];
    snprintf(extra, sizeof extra, "sample_cache_max_age = %d\n", MAX_AGE);
    tu_daemon_start_shipped(&D, ASAN_SLOWDOWN, models, extra);
}

static void teardown(void)
{
    tu_daemon_teardown(&D, 30);
    curl_global_cleanup();
}

/* method path (body: JSON or NULL) with one extra header line (or NULL). */
static long req(tu_resp_t *r, const char *method, const char *path, const char *body,
                const char *extra)
{
    tu_req_t q = {.port = D.port, .extra = extra};
    return tu_http_once(r, method, path, body, body ? strlen(body) : 0, &q);
}

static const char *hdr(const tu_resp_t *r, const char *name)
{
    static char v[512];
    return tu_hdr(r, name, v, sizeof v);
}

/* gunzip of src (a whole gzip member) into out. */
static void gunzip(const ld_buf_t *src, ld_buf_t *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    ck_assert_int_eq(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = (Bytef *)src->data;
    zs.avail_in = (uInt)src->len;
    int rc;
    do {
        char buf[65536];
        zs.next_out = (Bytef *)buf;
        zs.avail_out = sizeof buf;
        rc = inflate(&zs, Z_NO_FLUSH);
        ck_assert_msg(rc == Z_OK || rc == Z_STREAM_END, "inflate: %d", rc);
        ld_buf_append(out, buf, sizeof buf - zs.avail_out);
    } while (rc != Z_STREAM_END);
    ck_assert_int_eq(zs.avail_in, 0);
    inflateEnd(&zs);
}

#define SAMPLE "/v1/models/fashion-gan/sample"
#define SAMPLE16 "{\"n\":16,\"seed\":3}"

/* A JSON answer of 1 KiB or more is gzipped exactly when Accept-Encoding
 * allows it (q-values honoured), always with Vary: Accept-Encoding, and
 * inflates to the bytes of the plain answer. */
START_TEST(test_gzip_json)
{
    tu_resp_t plain, gz;
    ck_assert_int_eq(req(&plain, "POST", SAMPLE, SAMPLE16, NULL), 200);
    ck_assert_ptr_null(hdr(&plain, "Content-Encoding"));
    ck_assert_str_eq(hdr(&plain, "Vary"), "Accept-Encoding");
    ck_assert_int_eq(req(&gz, "POST", SAMPLE, SAMPLE16, "Accept-Encoding: gzip"), 200);
    ck_assert_str_eq(hdr(&gz, "Content-Encoding"), "gzip");
    ck_assert_str_eq(hdr(&gz, "Vary"), "Accept-Encoding");
    ck_assert_str_eq(hdr(&gz, "Content-Type"), "application/json");
    ck_assert(gz.body.len > 2 && (uint8_t)gz.body.data[0] == 0x1f &&
              (uint8_t)gz.body.data[1] == 0x8b);
    ld_buf_t in = {0};
    gunzip(&gz.body, &in);
    ck_assert_uint_eq(in.len, plain.body.len);
    ck_assert(memcmp(in.data, plain.body.data, in.len) == 0);
    printf("n=16 JSON sample: %zu bytes plain, %zu gzipped\n", plain.body.len, gz.body.len);
    ck_assert_uint_lt(gz.body.len, plain.body.len * 6 / 10);
    ld_buf_free(&in);
    tu_resp_free(&gz);

    static const struct {
        const char *ae;
        int gzip;
    } cases[] = {
        {"Accept-Encoding: gzip;q=0", 0},
        {"Accept-Encoding: gzip; q=0.000, identity", 0},
        {"Accept-Encoding: identity", 0},
        {"Accept-Encoding: br, gzip;q=0.5", 1},
        {"Accept-Encoding: deflate, *;q=0.1", 1},
        {"Accept-Encoding: *;q=1, gzip;q=0", 0},
        {"Accept-Encoding: x-gzip", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(req(&gz, "POST", SAMPLE, SAMPLE16, cases[i].ae), 200);
        const char *ce = hdr(&gz, "Content-Encoding");
        ck_assert_msg((ce != NULL) == cases[i].gzip, "%s: Content-Encoding %s", cases[i].ae,
                      ce ? ce : "none");
        if (!cases[i].gzip)
            ck_assert(gz.body.len == plain.body.len &&
                      memcmp(gz.body.data, plain.body.data, gz.body.len) == 0);
        tu_resp_free(&gz);
    }
    tu_resp_free(&plain);

    /* small JSON stays plain and does not vary */
    ck_assert_int_eq(req(&gz, "GET", "/healthz", NULL, "Accept-Encoding: gzip"), 200);
    ck_assert_ptr_null(hdr(&gz, "Content-Encoding"));
    ck_assert_ptr_null(hdr(&gz, "Vary"));
    tu_resp_free(&gz);
    ck_assert_int_eq(req(&gz, "POST", SAMPLE, "{\"n\":0}", "Accept-Encoding: gzip"), 422);
    ck_assert_ptr_null(hdr(&gz, "Content-Encoding"));
    tu_expect_error(&gz, 422, "invalid_value", "n", "n=0, gzip accepted", 1);
    tu_resp_free(&gz);
}
END_TEST

/* The curl program with --compressed: it asks for gzip, gets it, and
 * writes the inflated JSON. */
START_TEST(test_curl_compressed)
{
    char dir[600], cmd[2048];
    snprintf(dir, sizeof dir, "%s/curl", D.dir);
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    snprintf(cmd, sizeof cmd,
             "curl -sS --max-time 30 --compressed -D %s/h -o %s/b -w '%%{size_download}' "
             "-H 'Content-Type: application/json' -d '" SAMPLE16 "' "
             "http://127.0.0.1:%d" SAMPLE " > %s/n",
             dir, dir, D.port, dir);
    ck_assert_int_eq(system(cmd), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/h", dir);
    char *h = tu_read_text(p);
    ck_assert_msg(strcasestr(h, "\nContent-Encoding: gzip\r\n"), "%s", h);
    snprintf(p, sizeof p, "%s/b", dir);
    char *b = tu_read_text(p);
    cJSON *j = cJSON_Parse(b);
    ck_assert_msg(j, "not JSON: %.200s", b);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(j, "images")), 16);
    snprintf(p, sizeof p, "%s/n", dir);
    char *n = tu_read_text(p);
    long wire = atol(n);
    printf("curl --compressed: %ld bytes on the wire for %zu of JSON\n", wire, strlen(b));
    ck_assert(wire > 0 && (size_t)wire < strlen(b) * 6 / 10);
    cJSON_Delete(j);
    free(h);
    free(b);
    free(n);
}
END_TEST

/* latentd_samples_generated_total from /metrics. */
static long long samples_total(void)
{
    tu_resp_t r;
    ck_assert_int_eq(req(&r, "GET", "/metrics", NULL, NULL), 200);
    const char *p = strstr(r.body.data, "\nlatentd_samples_generated_total ");
    ck_assert_ptr_nonnull(p);
    long long v = atoll(p + strlen("\nlatentd_samples_generated_total "));
    tu_resp_free(&r);
    return v;
}

#define PNG_PATH "/v1/models/fashion-gan/sample.png?n=4&seed=7"

/* A seeded sample.png has an ETag (model file and parameters) and may be
 * cached; If-None-Match with it gets 304 without decoding anything.
 * Unseeded answers are not cached. */
START_TEST(test_sample_png_etag)
{
    tu_resp_t r, r2;
    char etag[128], inm[200], cc[64];
    ck_assert_int_eq(req(&r, "GET", PNG_PATH, NULL, NULL), 200);
    ck_assert(r.body.len > 8 && memcmp(r.body.data, "\x89PNG", 4) == 0);
    ck_assert_ptr_nonnull(tu_hdr(&r, "ETag", etag, sizeof etag));
    ck_assert_msg(strlen(etag) == 34 && etag[0] == '"' && etag[33] == '"', "ETag %s", etag);
    snprintf(cc, sizeof cc, "public, max-age=%d", MAX_AGE);
    ck_assert_str_eq(hdr(&r, "Cache-Control"), cc);

    /* revalidation: 304, no body, the same validators, no decode */
    long long before = samples_total();
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
    ck_assert_int_eq(req(&r2, "GET", PNG_PATH, NULL, inm), 304);
    ck_assert_uint_eq(r2.body.len, 0);
    ck_assert_str_eq(hdr(&r2, "ETag"), etag);
    ck_assert_str_eq(hdr(&r2, "Cache-Control"), cc);
    tu_resp_free(&r2);
    snprintf(inm, sizeof inm, "If-None-Match: \"x\", W/%s", etag);
    ck_assert_int_eq(req(&r2, "GET", PNG_PATH, NULL, inm), 304);
    tu_resp_free(&r2);
    ck_assert_int_eq(samples_total(), before);

    /* a stale tag: the image again, the same bytes */
    ck_assert_int_eq(req(&r2, "GET", PNG_PATH, NULL, "If-None-Match: \"0123\""), 200);
    ck_assert(r2.body.len == r.body.len && memcmp(r2.body.data, r.body.data, r.body.len) == 0);
    ck_assert_str_eq(hdr(&r2, "ETag"), etag);
    tu_resp_free(&r2);

    /* every parameter is in the tag */
    static const char *const others[] = {
        "/v1/models/fashion-gan/sample.png?n=4&seed=8",
        "/v1/models/fashion-gan/sample.png?n=5&seed=7",
        "/v1/models/fashion-gan/sample.png?n=4&seed=7&temperature=0.5",
        "/v1/models/fashion-gan/sample.png?n=4&seed=7&cols=1",
        "/v1/models/fashion-gan/sample.png?n=4&seed=7&pad=0",
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
        ck_assert_int_eq(req(&r2, "GET", others[i], NULL, inm), 200);
        const char *t = hdr(&r2, "ETag");
        ck_assert_msg(t && strcmp(t, etag) != 0, "%s: ETag %s", others[i], t ? t : "none");
        tu_resp_free(&r2);
    }

    /* unseeded: never cached, no validator */
    ck_assert_int_eq(req(&r2, "GET", "/v1/models/fashion-gan/sample.png?n=4", NULL, "If-None-Match: *"),
                     200);
    ck_assert_str_eq(hdr(&r2, "Cache-Control"), "no-store");
    ck_assert_ptr_null(hdr(&r2, "ETag"));
    tu_resp_free(&r2);
    tu_resp_free(&r);
}
END_TEST

/* X-Request-Id: the client's when valid, else a new one; in the response,
 * in the error body and in the access log line. */
START_TEST(test_request_id)
{
    tu_resp_t r;
    /* echoed, on a success and on an error */
    ck_assert_int_eq(req(&r, "GET", "/healthz", NULL, "X-Request-Id: trace-42.a/b:c"), 200);
    ck_assert_str_eq(hdr(&r, "X-Request-Id"), "trace-42.a/b:c");
    tu_resp_free(&r);
    ck_assert_int_eq(req(&r, "GET", "/v1/models/nope", NULL, "X-Request-Id: my-id-404"), 404);
    tu_expect_error(&r, 404, "model_not_found", "nope", "unknown model", 1);
    ck_assert_str_eq(tu_jget(tu_jget(r.json, "error"), "request_id")->valuestring, "my-id-404");
    tu_resp_free(&r);

    /* generated: 16 hex digits, a new one each time; also for ids that
     * are too long or hold a space */
    char a[64], b[64];
    ck_assert_int_eq(req(&r, "GET", "/healthz", NULL, NULL), 200);
    ck_assert_ptr_nonnull(tu_hdr(&r, "X-Request-Id", a, sizeof a));
    tu_resp_free(&r);
    ck_assert_int_eq(strlen(a), 16);
    ck_assert_uint_eq(strspn(a, "0123456789abcdef"), 16);
    char longid[160] = "X-Request-Id: ";
    memset(longid + strlen(longid), 'x', 129);
    const char *const bad[] = {NULL, longid, "X-Request-Id: two words"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(req(&r, "GET", "/healthz", NULL, bad[i]), 200);
        ck_assert_ptr_nonnull(tu_hdr(&r, "X-Request-Id", b, sizeof b));
        ck_assert_msg(strlen(b) == 16 && strcmp(a, b) != 0, "case %zu: id %s after %s", i, b, a);
        tu_resp_free(&r);
    }
    /* 128 characters are kept */
    longid[strlen("X-Request-Id: ") + 128] = '\0';
    ck_assert_int_eq(req(&r, "GET", "/healthz", NULL, longid), 200);
    ck_assert_str_eq(hdr(&r, "X-Request-Id"), longid + strlen("X-Request-Id: "));
    tu_resp_free(&r);

    /* the access log has it (lines are flushed within about 50 ms) */
    ck_assert_int_eq(req(&r, "GET", "/v1/models/fashion-gan", NULL, "X-Request-Id: log-me-7"), 200);
    tu_resp_free(&r);
    double until = tu_deadline(10, D.asan_factor);
    char *log = NULL;
    for (;;) {
        free(log);
        log = tu_read_text(D.log);
        if (strstr(log, "path=/v1/models/fashion-gan status=200 ") &&
            strstr(log, " rid=log-me-7\n"))
            break;
        ck_assert_msg(tu_now() < until, "no access line with rid=log-me-7:\n%s", tu_log_tail(&D));
        tu_msleep(20);
    }
    free(log);

    /* a head refused before libmicrohttpd parses it still has one */
    int fd = tu_tcp_connect(1, D.port, 1);
    ck_assert_int_ge(fd, 0);
    ld_buf_t q = {0}, resp = {0};
    ld_buf_puts(&q, "GET /healthz?a=1");
    for (int i = 0; i < 80; i++)
        ld_buf_puts(&q, "&a=1");
    ld_buf_puts(&q, " HTTP/1.1\r\nHost: x\r\n\r\n");
    tu_send_all(fd, q.data, q.len);
    ck_assert_int_eq(tu_read_response(fd, &resp), 414);
    close(fd);
    const char *id = strcasestr(resp.data, "\r\nX-Request-Id: ");
    ck_assert_msg(id, "%s", resp.data);
    ck_assert_msg(strstr(resp.data, "\"request_id\":\""), "%s", resp.data);
    ld_buf_free(&q);
    ld_buf_free(&resp);
}
END_TEST

Suite *suite_http_cache(void)
{
    Suite *s = suite_create("http_cache");
    TCase *tc = tcase_create("daemon");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_gzip_json);
    tcase_add_test(tc, test_curl_compressed);
    tcase_add_test(tc, test_sample_png_etag);
    tcase_add_test(tc, test_request_id);
    suite_add_tcase(s, tc);
    return s;
}

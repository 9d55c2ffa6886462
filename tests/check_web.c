/* check_web.c — the web page's files as the real daemon (LD_BIN) serves them
 * over HTTP (libcurl): no token needed while the API still needs one, the
 * embedded bytes equal web/ in the source tree, content types, ETag and 304,
 * gzip, the Content-Security-Policy, and the `web` config key (off, a folder
 * read at each request, a folder that does not exist), and /openapi.json
 * (docs/openapi.json, served also when the page is off).  What the page does in
 * a browser is tests/web/test_web.py's business (make test-web). */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/common.h"

#include <string.h>
#include <strings.h>
#include <zlib.h>

#define TOKEN "web-inference-token-0123456789ab"
#define ASAN_SLOWDOWN 5

/* A daemon with an inference token and extra config lines. */
static void start(tu_daemon_t *d, const char *extra)
{
    tu_daemon_dirs(d, ASAN_SLOWDOWN);
    char tok[600], conf[4096];
    snprintf(tok, sizeof tok, "%s/token", d->dir);
    tu_write_file(tok, TOKEN "\n");
    snprintf(conf, sizeof conf,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = 2\nmodels_dir = %s\nstate_dir = %s\n"
             "token_file = %s\naccess_log = no\n%s",
             d->models, d->state, tok, extra ? extra : "");
    tu_write_file(d->conf, conf);
    tu_daemon_start(d, NULL);
}

/* GET path with no token and one optional extra header line. */
static long get(const tu_daemon_t *d, tu_resp_t *r, const char *path, const char *extra)
{
    tu_req_t q = {.port = d->port, .extra = extra};
    return tu_http_once(r, "GET", path, NULL, 0, &q);
}

static char *hdr(const tu_resp_t *r, const char *name)
{
    static char buf[1024];
    return tu_hdr(r, name, buf, sizeof buf) ? buf : NULL;
}

/* The gunzipped body of r (malloc'd, *n bytes); fails the test if it is not gzip. */
static uint8_t *gunzip(const tu_resp_t *r, size_t *n)
{
    size_t cap = 4 << 20;
    uint8_t *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    ck_assert_int_eq(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = (Bytef *)r->body.data;
    zs.avail_in = (uInt)r->body.len;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    ck_assert_int_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
    *n = cap - zs.avail_out;
    inflateEnd(&zs);
    return out;
}

START_TEST(test_files_open_api_not)
{
    tu_daemon_t d;
    start(&d, NULL);
    tu_resp_t r;
    ck_assert_int_eq(get(&d, &r, "/", NULL), 200);
    ck_assert_str_eq(hdr(&r, "Content-Type"), "text/html; charset=utf-8");
    ck_assert_msg(strstr(hdr(&r, "Content-Security-Policy"), "default-src 'self'"), "CSP");
    /* revalidated at each load (so a new binary's page shows at once), not
     * the API's no-store: one Cache-Control header */
    ck_assert_str_eq(hdr(&r, "Cache-Control"), "no-cache");
    ck_assert_msg(!strcasestr(r.hdrs.data, "no-store"), "%s", r.hdrs.data);
    ck_assert_str_eq(hdr(&r, "Vary"), "Accept-Encoding");
    /* the embedded page is web/index.html of the tree it was built from */
    char *src = tu_read_text("web/index.html");
    ck_assert_msg(src[0] && r.body.len == strlen(src) && memcmp(r.body.data, src, r.body.len) == 0,
                  "GET / differs from web/index.html");
    /* the policy allows no inline script or style: the page has none */
    ck_assert_ptr_null(strstr(src, "<script>"));
    ck_assert_ptr_null(strstr(src, "<style"));
    ck_assert_ptr_null(strstr(src, " style="));
    ck_assert_ptr_null(strstr(src, " onclick="));
    free(src);
    tu_resp_free(&r);

    const struct {
        const char *path, *type;
    } files[] = {
        {"/ui/app.js", "text/javascript; charset=utf-8"},
        {"/ui/api.js", "text/javascript; charset=utf-8"},
        {"/ui/app.css", "text/css; charset=utf-8"},
        {"/ui/icon.svg", "image/svg+xml"},
        {"/ui/chart.min.js", "text/javascript; charset=utf-8"}, /* Debian's libjs-chart.js */
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(files); i++) {
        ck_assert_int_eq(get(&d, &r, files[i].path, NULL), 200);
        ck_assert_str_eq(hdr(&r, "Content-Type"), files[i].type);
        ck_assert_msg(r.body.len > 100, "%s: %zu bytes", files[i].path, r.body.len);
        tu_resp_free(&r);
    }
    ck_assert_int_eq(get(&d, &r, "/ui/app.js", "Authorization: Bearer wrong-token"), 200);
    tu_resp_free(&r);
    /* the API behind the page still needs its token */
    ck_assert_int_eq(get(&d, &r, "/v1/models", NULL), 401);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&d, &r, "/ui/nope.js", NULL), 404);
    tu_expect_error(&r, 404, "not_found", "nope.js", "unknown file", 1);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&d, &r, "/ui/.hidden", NULL), 404);
    tu_resp_free(&r);
    /* an escaped NUL does not cut the path short (to / or to app.js) */
    ck_assert_int_eq(get(&d, &r, "/%00", NULL), 404);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&d, &r, "/ui/app.js%00.png", NULL), 404);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&d, &r, "/ui/app%2ejs", NULL), 200); /* other escapes still decode */
    tu_resp_free(&r);
    tu_req_t q = {.port = d.port};
    ck_assert_int_eq(tu_http_once(&r, "POST", "/", "{}", 2, &q), 405);
    tu_resp_free(&r);
    ck_assert_int_eq(tu_http_once(&r, "HEAD", "/ui/app.css", NULL, 0, &q), 200);
    ck_assert_uint_eq(r.body.len, 0);
    tu_resp_free(&r);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

START_TEST(test_etag_and_gzip)
{
    tu_daemon_t d;
    start(&d, NULL);
    tu_resp_t plain, gz, r;
    ck_assert_int_eq(get(&d, &plain, "/ui/chart.min.js", NULL), 200);
    ck_assert_ptr_null(hdr(&plain, "Content-Encoding"));
    char etag[1024], line[1100];
    snprintf(etag, sizeof etag, "%s", hdr(&plain, "ETag"));
    ck_assert_msg(etag[0] == '"' && etag[strlen(etag) - 1] == '"', "ETag %s", etag);

    /* the same bytes gzipped, under an ETag of their own */
    ck_assert_int_eq(get(&d, &gz, "/ui/chart.min.js", "Accept-Encoding: br, gzip;q=0.5"), 200);
    ck_assert_str_eq(hdr(&gz, "Content-Encoding"), "gzip");
    ck_assert_str_ne(hdr(&gz, "ETag"), etag);
    ck_assert_msg(gz.body.len * 2 < plain.body.len, "gzip: %zu of %zu bytes", gz.body.len,
                  plain.body.len);
    size_t n;
    uint8_t *un = gunzip(&gz, &n);
    ck_assert_msg(n == plain.body.len && memcmp(un, plain.body.data, n) == 0,
                  "gunzipped body differs");
    free(un);
    ck_assert_int_eq(get(&d, &r, "/ui/chart.min.js", "Accept-Encoding: gzip;q=0, identity"), 200);
    ck_assert_ptr_null(hdr(&r, "Content-Encoding"));
    tu_resp_free(&r);

    /* revalidation: the ETag (also weak, also in a list) gets 304 and no body */
    const char *forms[] = {"%s", "W/%s", "\"other\", %s", "*"};
    for (size_t i = 0; i < LD_ARRAY_LEN(forms); i++) {
        char val[1050];
        snprintf(val, sizeof val, forms[i], etag);
        snprintf(line, sizeof line, "If-None-Match: %s", val);
        ck_assert_int_eq(get(&d, &r, "/ui/chart.min.js", line), 304);
        ck_assert_uint_eq(r.body.len, 0);
        ck_assert_str_eq(hdr(&r, "ETag"), etag);
        tu_resp_free(&r);
    }
    ck_assert_int_eq(get(&d, &r, "/ui/chart.min.js", "If-None-Match: \"0000000000000000\""), 200);
    ck_assert_uint_eq(r.body.len, plain.body.len);
    tu_resp_free(&r);
    /* the gzip form's ETag does not revalidate the plain one */
    snprintf(line, sizeof line, "If-None-Match: %s", hdr(&gz, "ETag"));
    ck_assert_int_eq(get(&d, &r, "/ui/chart.min.js", line), 200);
    tu_resp_free(&r);
    tu_resp_free(&plain);
    tu_resp_free(&gz);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* GET /openapi.json on d: 200, open (the daemon has an inference token),
 * the bytes of docs/openapi.json, cached like the page's files. */
static void expect_openapi(const tu_daemon_t *d)
{
    tu_resp_t r;
    ck_assert_int_eq(get(d, &r, "/openapi.json", NULL), 200);
    ck_assert_str_eq(hdr(&r, "Content-Type"), "application/json");
    char *src = tu_read_text("docs/openapi.json");
    ck_assert_msg(src[0] && r.body.len == strlen(src) && memcmp(r.body.data, src, r.body.len) == 0,
                  "GET /openapi.json differs from docs/openapi.json");
    free(src);
    ck_assert_ptr_nonnull(r.json);
    ck_assert_str_eq(cJSON_GetStringValue(tu_jget(r.json, "openapi")), "3.1.0");
    char etag[128], inm[160];
    ck_assert_ptr_nonnull(tu_hdr(&r, "ETag", etag, sizeof etag));
    tu_resp_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
    ck_assert_int_eq(get(d, &r, "/openapi.json", inm), 304);
    tu_resp_free(&r);
}

START_TEST(test_openapi)
{
    tu_daemon_t d;
    start(&d, NULL);
    expect_openapi(&d);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

START_TEST(test_web_off)
{
    tu_daemon_t d;
    start(&d, "web = off\n");
    tu_resp_t r;
    ck_assert_int_eq(get(&d, &r, "/", NULL), 404);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&d, &r, "/ui/app.js", NULL), 404);
    tu_resp_free(&r);
    /* the API's description is not part of the page */
    expect_openapi(&d);
    ck_assert_int_eq(get(&d, &r, "/healthz", NULL), 200);
    tu_resp_free(&r);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

START_TEST(test_web_folder)
{
    char *dev = tu_mkdtemp();
    char path[600], conf[700];
    snprintf(path, sizeof path, "%s/index.html", dev);
    tu_write_file(path, "<!doctype html><title>first</title>\n");
    snprintf(conf, sizeof conf, "web = %s\n", dev);
    tu_daemon_t d;
    start(&d, conf);
    tu_resp_t r;
    ck_assert_int_eq(get(&d, &r, "/", NULL), 200);
    ck_assert_msg(strstr(r.body.data, "first"), "%s", r.body.data);
    char etag[1024];
    snprintf(etag, sizeof etag, "%s", hdr(&r, "ETag"));
    tu_resp_free(&r);
    /* an edit shows at the next request, under a new ETag */
    tu_write_file(path, "<!doctype html><title>second</title>\n");
    char line[1100];
    snprintf(line, sizeof line, "If-None-Match: %s", etag);
    ck_assert_int_eq(get(&d, &r, "/", line), 200);
    ck_assert_msg(strstr(r.body.data, "second"), "%s", r.body.data);
    tu_resp_free(&r);
    /* what the folder lacks comes from the embedded files */
    ck_assert_int_eq(get(&d, &r, "/ui/chart.min.js", NULL), 200);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&d, &r, "/ui/app.js", NULL), 200);
    tu_resp_free(&r);
    tu_daemon_stop_ok(&d, 30);
    tu_rmrf(dev);
    free(dev);

    /* a folder that does not exist stops the daemon at start, naming it */
    tu_daemon_dirs(&d, ASAN_SLOWDOWN);
    tu_write_file(d.conf, "web = /nonexistent/web-folder\n");
    const char *args[] = {"serve", "--config", d.conf, "--models", d.models, NULL};
    tu_daemon_spawn(&d, args, NULL);
    ck_assert_int_eq(tu_daemon_wait_exit(&d, 20), 2);
    char *log = tu_read_text(d.log);
    ck_assert_msg(strstr(log, "/nonexistent/web-folder"), "%s", log);
    free(log);
    tu_daemon_free(&d);
}
END_TEST

Suite *suite_web(void)
{
    Suite *s = suite_create("web");
    TCase *tc = tcase_create("web");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, tu_curl_setup, tu_curl_teardown);
    tcase_add_test(tc, test_files_open_api_not);
    tcase_add_test(tc, test_etag_and_gzip);
    tcase_add_test(tc, test_openapi);
    tcase_add_test(tc, test_web_off);
    tcase_add_test(tc, test_web_folder);
    suite_add_tcase(s, tc);
    return s;
}

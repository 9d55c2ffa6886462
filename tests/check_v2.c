/* check_v2.c — the Open Inference Protocol routes (src/v2.c) against the real
 * daemon: one `latentd serve` (tokens, small caps) with tiny models, driven
 * over HTTP with libcurl, raw sockets for uploads that never finish, and
 * scripts/v2_client.py (the standard-library client) when python3 is there.
 *
 * /v2 answers must equal /v1's for the same z, seed or images (the same
 * decode and encode path), and every bad request must get a 400 or 404 with
 * {"error":"..."} while the daemon keeps serving.
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/buf.h"
#include "latentd/model.h"
#include "latentd/sha256.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOKEN "v2-inference-token-0123456789abcd"
#define MAX_BODY (256 * 1024)
#define BODY_MEM (4 * 1024 * 1024)
#define MAX_SAMPLES 64
#define ZD 4 /* z of the tiny models */
#define XD 784
#define ASAN_SLOWDOWN 4

static tu_daemon_t D;

/* ------------------------------------------------------------- models */

static void save_tiny(const char *dir, const char *file, ld_kind_t kind, uint64_t seed)
{
    ld_arch_t a;
    ld_arch_default(kind, &a);
    a.enc.n = 1;
    a.enc.size[0] = 32;
    a.dec.n = 1;
    a.dec.size[0] = 32;
    if (kind != LD_KIND_CLASSIFIER)
        a.z_dim = ZD;
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_new(&a, seed, &m, &e) == LD_OK, "model_new: %s", e.msg);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "model_save %s: %s", path, e.msg);
    ld_model_free(m);
}

/* ------------------------------------------------------------- HTTP */

/* A request with the token (unless token is ""), a content type (NULL:
 * JSON) and one more header line (or NULL). */
static long req(tu_resp_t *r, const char *method, const char *path, const void *body, size_t len,
                const char *ctype, const char *extra, const char *token)
{
    tu_req_t q = {.token = token ? token : TOKEN, .ctype = ctype, .extra = extra, .port = D.port};
    return tu_http_once(r, method, path, body, len, &q);
}

static long get(tu_resp_t *r, const char *path)
{
    return req(r, "GET", path, NULL, 0, NULL, NULL, NULL);
}

static long post(tu_resp_t *r, const char *path, const char *json)
{
    return req(r, "POST", path, json, strlen(json), NULL, NULL, NULL);
}

/* A JSON head followed by binary data, with the extension's header. */
static long post_bin(tu_resp_t *r, const char *path, const char *head, const void *bin,
                     size_t bin_len)
{
    size_t hl = strlen(head);
    char *body = malloc(hl + bin_len + 1);
    ck_assert_ptr_nonnull(body);
    memcpy(body, head, hl);
    if (bin_len)
        memcpy(body + hl, bin, bin_len);
    char extra[80];
    snprintf(extra, sizeof extra, "Inference-Header-Content-Length: %zu", hl);
    long st = req(r, "POST", path, body, hl + bin_len, "application/octet-stream", extra, NULL);
    free(body);
    return st;
}

/* status and a {"error":"...","request_id":R} body (JSON, nothing else, R
 * the X-Request-Id header) containing want. */
static void expect_v2_error(const tu_resp_t *r, long status, const char *want, const char *what)
{
    ck_assert_msg(r->status == status, "%.200s: status %ld, want %ld; body %.300s", what, r->status,
                  status, r->body.data ? r->body.data : "");
    ck_assert_msg(r->json && cJSON_IsObject(r->json), "%.200s: body is not JSON: %.300s", what,
                  r->body.data ? r->body.data : "");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    ck_assert_msg(cJSON_IsString(e) && e->valuestring[0], "%.200s: no error string: %.300s", what,
                  r->body.data);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(r->json, "request_id");
    char hid[160];
    ck_assert_msg(cJSON_IsString(id) && tu_hdr(r, "X-Request-Id", hid, sizeof hid) &&
                      strcmp(hid, id->valuestring) == 0,
                  "%.200s: request_id and X-Request-Id: %.300s", what, r->body.data);
    ck_assert_msg(cJSON_GetArraySize(r->json) == 2, "%.200s: more than error: %.300s", what,
                  r->body.data);
    ck_assert_msg(!want || strcasestr(e->valuestring, want), "%.200s: '%.300s' lacks '%s'", what,
                  e->valuestring, want);
    char ct[64];
    ck_assert_msg(tu_hdr(r, "Content-Type", ct, sizeof ct) && strstr(ct, "application/json"),
                  "%.200s: Content-Type", what);
}

/* POST json to path and expect a 400 or 404 error containing want. */
static void bad(const char *path, const char *json, long status, const char *want)
{
    tu_resp_t r;
    post(&r, path, json);
    expect_v2_error(&r, status, want, json);
    tu_resp_free(&r);
}

/* The served version of name (from /v1). */
static unsigned long long version_of(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%s", name);
    tu_resp_t r;
    ck_assert_int_eq(get(&r, path), 200);
    unsigned long long v = (unsigned long long)tu_jget(r.json, "version")->valuedouble;
    tu_resp_free(&r);
    return v;
}

/* Every number of a JSON array tree, flattened, as floats (count checked). */
static void flatten(const cJSON *a, float *out, size_t *k)
{
    for (const cJSON *c = a->child; c; c = c->next) {
        if (cJSON_IsArray(c))
            flatten(c, out, k);
        else
            out[(*k)++] = (float)c->valuedouble;
    }
}

static float *floats_of(const cJSON *a, size_t want)
{
    float *v = calloc(want + 1, sizeof *v);
    size_t k = 0;
    ck_assert_int_eq(cJSON_GetArraySize(a) > 0, 1);
    flatten(a, v, &k);
    ck_assert_uint_eq(k, want);
    return v;
}

/* The output called name of a /v2 answer (fails if absent). */
static const cJSON *output(const cJSON *ans, const char *name)
{
    const cJSON *outs = tu_jget(ans, "outputs");
    for (const cJSON *o = outs->child; o; o = o->next)
        if (strcmp(tu_jget(o, "name")->valuestring, name) == 0)
            return o;
    ck_abort_msg("no output %s", name);
    return NULL;
}

static void expect_shape(const cJSON *t, int rank, const long long *dims)
{
    const cJSON *sh = tu_jget(t, "shape");
    ck_assert_int_eq(cJSON_GetArraySize(sh), rank);
    for (int d = 0; d < rank; d++)
        ck_assert_int_eq((long long)cJSON_GetArrayItem(sh, d)->valuedouble, dims[d]);
}

static void zs(float *z, int n)
{
    for (int i = 0; i < n * ZD; i++)
        z[i] = (float)((i % 7) - 3) * 0.37f;
}

static void z_json(ld_buf_t *b, const float *z, int n, int nested)
{
    ld_buf_putc(b, '[');
    for (int r = 0; r < n; r++) {
        if (r)
            ld_buf_putc(b, ',');
        if (nested)
            ld_buf_putc(b, '[');
        for (int c = 0; c < ZD; c++)
            ld_buf_printf(b, c ? ",%.9g" : "%.9g", (double)z[r * ZD + c]);
        if (nested)
            ld_buf_putc(b, ']');
    }
    ld_buf_putc(b, ']');
}

/* A binary answer: its JSON head parsed (caller frees) and where the binary
 * part starts. */
static cJSON *bin_head(const tu_resp_t *r, const uint8_t **bin, size_t *bin_len)
{
    char v[32], ct[64];
    ck_assert_msg(r->status == 200, "status %ld: %s", r->status, r->body.data);
    ck_assert_ptr_nonnull(tu_hdr(r, "Inference-Header-Content-Length", v, sizeof v));
    ck_assert(tu_hdr(r, "Content-Type", ct, sizeof ct) && strcmp(ct, "application/octet-stream") == 0);
    size_t hl = strtoul(v, NULL, 10);
    ck_assert_uint_le(hl, r->body.len);
    cJSON *j = cJSON_ParseWithLength(r->body.data, hl);
    ck_assert_ptr_nonnull(j);
    *bin = (const uint8_t *)r->body.data + hl;
    *bin_len = r->body.len - hl;
    return j;
}

/* ------------------------------------------------------------- fixtures */

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_dirs(&D, ASAN_SLOWDOWN);
    save_tiny(D.models, "tvae.safetensors", LD_KIND_VAE, 3);
    save_tiny(D.models, "tgan.safetensors", LD_KIND_GAN, 4);
    save_tiny(D.models, "cls.safetensors", LD_KIND_CLASSIFIER, 5);
    char tok[600], text[4096];
    snprintf(tok, sizeof tok, "%s/token", D.dir);
    tu_write_file(tok, TOKEN "\n");
    snprintf(text, sizeof text,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = 4\nmodels_dir = %s\nstate_dir = %s\n"
             "max_body_bytes = %d\nbody_memory_limit = %d\nmax_samples = %d\n"
             "request_timeout = 10\ntoken_file = %s\n",
             D.models, D.state, MAX_BODY, BODY_MEM, MAX_SAMPLES, tok);
    tu_write_file(D.conf, text);
    tu_daemon_start(&D, NULL);
}

static void teardown(void)
{
    tu_daemon_teardown(&D, 30);
    curl_global_cleanup();
}

/* ================================================================ tests */

START_TEST(test_health_and_metadata)
{
    tu_resp_t r;
    /* health: open, empty bodies */
    ck_assert_int_eq(req(&r, "GET", "/v2/health/live", NULL, 0, NULL, NULL, ""), 200);
    ck_assert_uint_eq(r.body.len, 0);
    tu_resp_free(&r);
    ck_assert_int_eq(req(&r, "GET", "/v2/health/ready", NULL, 0, NULL, NULL, ""), 200);
    ck_assert_uint_eq(r.body.len, 0);
    tu_resp_free(&r);
    ck_assert_int_eq(req(&r, "HEAD", "/v2/health/live", NULL, 0, NULL, NULL, ""), 200);
    tu_resp_free(&r);

    /* the rest needs the token, and says so in the protocol's error form */
    req(&r, "GET", "/v2", NULL, 0, NULL, NULL, "");
    expect_v2_error(&r, 401, "token", "GET /v2 without a token");
    tu_resp_free(&r);
    ck_assert_int_eq(get(&r, "/v2"), 200);
    ck_assert_str_eq(tu_jget(r.json, "name")->valuestring, "latentd");
    ck_assert(cJSON_IsString(tu_jget(r.json, "version")));
    const cJSON *ext = tu_jget(r.json, "extensions");
    ck_assert_int_eq(cJSON_GetArraySize(ext), 1);
    ck_assert_str_eq(ext->child->valuestring, "binary_tensor_data");
    tu_resp_free(&r);

    unsigned long long v = version_of("tvae");
    char path[160], want_v[32];
    snprintf(want_v, sizeof want_v, "%llu", v);
    const char *forms[] = {"/v2/models/tvae", NULL};
    snprintf(path, sizeof path, "/v2/models/tvae/versions/%llu", v);
    forms[1] = path;
    for (int f = 0; f < 2; f++) {
        ck_assert_int_eq(get(&r, forms[f]), 200);
        ck_assert_str_eq(tu_jget(r.json, "name")->valuestring, "tvae");
        ck_assert_str_eq(tu_jget(r.json, "platform")->valuestring, "latentd");
        const cJSON *vs = tu_jget(r.json, "versions");
        ck_assert_int_eq(cJSON_GetArraySize(vs), 1);
        ck_assert_str_eq(vs->child->valuestring, want_v);
        const cJSON *in = tu_jget(r.json, "inputs"), *out = tu_jget(r.json, "outputs");
        ck_assert_int_eq(cJSON_GetArraySize(in), 2);
        ck_assert_int_eq(cJSON_GetArraySize(out), 3);
        ck_assert_str_eq(tu_jget(in->child, "name")->valuestring, "z");
        ck_assert_str_eq(tu_jget(in->child, "datatype")->valuestring, "FP32");
        expect_shape(in->child, 2, (long long[]){-1, ZD});
        ck_assert_str_eq(tu_jget(in->child->next, "name")->valuestring, "images");
        expect_shape(in->child->next, 3, (long long[]){-1, 28, 28});
        const char *names[] = {"images", "mu", "logvar"};
        int i = 0;
        for (const cJSON *o = out->child; o; o = o->next, i++)
            ck_assert_str_eq(tu_jget(o, "name")->valuestring, names[i]);
        expect_shape(out->child->next, 2, (long long[]){-1, ZD});
        tu_resp_free(&r);
    }
    /* a GAN: z in, images out */
    ck_assert_int_eq(get(&r, "/v2/models/tgan"), 200);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "inputs")), 1);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "outputs")), 1);
    tu_resp_free(&r);

    /* readiness, both forms */
    ck_assert_int_eq(get(&r, "/v2/models/tvae/ready"), 200);
    ck_assert_uint_eq(r.body.len, 0);
    tu_resp_free(&r);
    snprintf(path, sizeof path, "/v2/models/tvae/versions/%llu/ready", v);
    ck_assert_int_eq(get(&r, path), 200);
    tu_resp_free(&r);

    /* 404s: no such model or version */
    const char *missing[] = {"/v2/models/nope", "/v2/models/nope/ready",
                             "/v2/models/tvae/versions/abc", "/v2/models/tvae/versions/-1/ready",
                             NULL, NULL};
    char p1[160], p2[160];
    snprintf(p1, sizeof p1, "/v2/models/tvae/versions/%llu", v + 1000);
    snprintf(p2, sizeof p2, "/v2/models/tvae/versions/%llu/ready", v + 1000);
    missing[4] = p1;
    missing[5] = p2;
    for (size_t i = 0; i < LD_ARRAY_LEN(missing); i++) {
        get(&r, missing[i]);
        expect_v2_error(&r, 404, strstr(missing[i], "nope") ? "no model" : "version", missing[i]);
        tu_resp_free(&r);
    }
}
END_TEST

START_TEST(test_infer_json_matches_v1)
{
    enum { N = 3 };
    float z[N * ZD];
    zs(z, N);
    /* /v1 decode of the same z: the reference */
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"z\":");
    z_json(&b, z, N, 1);
    ld_buf_putc(&b, '}');
    tu_resp_t r;
    ck_assert_int_eq(post(&r, "/v1/models/tvae/decode", b.data), 200);
    float *want = floats_of(tu_jget(r.json, "images"), N * XD);
    tu_resp_free(&r);
    ld_buf_free(&b);

    unsigned long long v = version_of("tvae");
    char vpath[160];
    snprintf(vpath, sizeof vpath, "/v2/models/tvae/versions/%llu/infer", v);
    /* flat and nested data, plain and versioned route: the same images */
    for (int form = 0; form < 4; form++) {
        ld_buf_t q = {0};
        ld_buf_printf(&q, "{\"id\":\"req-%d\",\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\","
                          "\"shape\":[%d,%d],\"data\":",
                      form, N, ZD);
        z_json(&q, z, N, form & 1);
        ld_buf_puts(&q, "}]}");
        ck_assert_int_eq(post(&r, form & 2 ? vpath : "/v2/models/tvae/infer", q.data), 200);
        char id[16];
        snprintf(id, sizeof id, "req-%d", form);
        ck_assert_str_eq(tu_jget(r.json, "id")->valuestring, id);
        ck_assert_str_eq(tu_jget(r.json, "model_name")->valuestring, "tvae");
        ck_assert_int_eq(strtoull(tu_jget(r.json, "model_version")->valuestring, NULL, 10), v);
        ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(r.json, "parameters"));
        ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "outputs")), 1);
        const cJSON *im = output(r.json, "images");
        ck_assert_str_eq(tu_jget(im, "datatype")->valuestring, "FP32");
        expect_shape(im, 3, (long long[]){N, 28, 28});
        float *got = floats_of(tu_jget(im, "data"), N * XD);
        ck_assert_msg(memcmp(got, want, sizeof(float) * N * XD) == 0, "form %d differs from /v1",
                      form);
        free(got);
        tu_resp_free(&r);
        ld_buf_free(&q);
    }
    free(want);

    /* sampling from parameters equals /v1 sample with the same seed */
    ck_assert_int_eq(post(&r, "/v1/models/tgan/sample", "{\"n\":2,\"seed\":5,\"temperature\":0.5}"),
                     200);
    want = floats_of(tu_jget(r.json, "images"), 2 * XD);
    tu_resp_free(&r);
    ck_assert_int_eq(post(&r, "/v2/models/tgan/infer",
                          "{\"parameters\":{\"n\":2,\"seed\":5,\"temperature\":0.5}}"),
                     200);
    const cJSON *par = tu_jget(r.json, "parameters");
    ck_assert_int_eq(tu_jget(par, "seed")->valuedouble, 5);
    ck_assert(tu_jget(par, "temperature")->valuedouble == 0.5);
    float *got = floats_of(tu_jget(output(r.json, "images"), "data"), 2 * XD);
    ck_assert(memcmp(got, want, sizeof(float) * 2 * XD) == 0);
    free(got);
    free(want);
    tu_resp_free(&r);
    /* no seed: one is drawn and reported */
    ck_assert_int_eq(post(&r, "/v2/models/tgan/infer", "{\"inputs\":[]}"), 200);
    ck_assert(cJSON_IsNumber(tu_jget(tu_jget(r.json, "parameters"), "seed")));
    tu_resp_free(&r);

    /* encode: images -> mu, logvar as /v1 encode; images -> images as reconstruct */
    ld_buf_t im = {0};
    ld_buf_putc(&im, '[');
    for (int i = 0; i < 2 * XD; i++)
        ld_buf_printf(&im, i ? ",%g" : "%g", (double)((i * 37) % 101) / 100.0);
    ld_buf_putc(&im, ']');
    ld_buf_t q = {0};
    /* /v1 takes rows: the same values as [[784],[784]] */
    ld_buf_t rows = {0};
    ld_buf_puts(&rows, "{\"images\":[[");
    for (int i = 0; i < 2 * XD; i++)
        ld_buf_printf(&rows, i == 0 ? "%g" : i == XD ? "],[%g" : ",%g",
                      (double)((i * 37) % 101) / 100.0);
    ld_buf_puts(&rows, "]]}");
    ck_assert_int_eq(post(&r, "/v1/models/tvae/encode", rows.data), 200);
    float *mu = floats_of(tu_jget(r.json, "mu"), 2 * ZD);
    float *lv = floats_of(tu_jget(r.json, "logvar"), 2 * ZD);
    tu_resp_free(&r);
    ck_assert_int_eq(post(&r, "/v1/models/tvae/reconstruct", rows.data), 200);
    float *rec = floats_of(tu_jget(r.json, "images"), 2 * XD);
    tu_resp_free(&r);
    ld_buf_free(&rows);

    ld_buf_printf(&q, "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"FP32\",\"shape\":[2,28,28],"
                      "\"data\":%s}]}",
                  im.data);
    ck_assert_int_eq(post(&r, "/v2/models/tvae/infer", q.data), 200);
    const cJSON *outs = tu_jget(r.json, "outputs");
    ck_assert_int_eq(cJSON_GetArraySize(outs), 2);
    ck_assert_str_eq(tu_jget(outs->child, "name")->valuestring, "mu");
    got = floats_of(tu_jget(output(r.json, "mu"), "data"), 2 * ZD);
    ck_assert(memcmp(got, mu, sizeof(float) * 2 * ZD) == 0);
    free(got);
    got = floats_of(tu_jget(output(r.json, "logvar"), "data"), 2 * ZD);
    ck_assert(memcmp(got, lv, sizeof(float) * 2 * ZD) == 0);
    free(got);
    tu_resp_free(&r);
    ld_buf_free(&q);
    /* outputs in the order asked, the reconstruction among them */
    ld_buf_printf(&q, "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"FP32\",\"shape\":[2,28,28],"
                      "\"data\":%s}],\"outputs\":[{\"name\":\"logvar\"},{\"name\":\"images\"}]}",
                  im.data);
    ck_assert_int_eq(post(&r, "/v2/models/tvae/infer", q.data), 200);
    outs = tu_jget(r.json, "outputs");
    ck_assert_int_eq(cJSON_GetArraySize(outs), 2);
    ck_assert_str_eq(tu_jget(outs->child, "name")->valuestring, "logvar");
    got = floats_of(tu_jget(output(r.json, "images"), "data"), 2 * XD);
    ck_assert(memcmp(got, rec, sizeof(float) * 2 * XD) == 0);
    free(got);
    tu_resp_free(&r);
    ld_buf_free(&q);
    ld_buf_free(&im);
    free(mu);
    free(lv);
    free(rec);
}
END_TEST

START_TEST(test_infer_binary)
{
    enum { N = 2 };
    float z[N * ZD];
    zs(z, N);
    /* the JSON answer for z: the reference */
    ld_buf_t q = {0};
    ld_buf_printf(&q, "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[%d,%d],\"data\":",
                  N, ZD);
    z_json(&q, z, N, 0);
    ld_buf_puts(&q, "}]}");
    tu_resp_t r;
    ck_assert_int_eq(post(&r, "/v2/models/tvae/infer", q.data), 200);
    float *want = floats_of(tu_jget(output(r.json, "images"), "data"), N * XD);
    tu_resp_free(&r);
    ld_buf_free(&q);

    /* binary in, binary out (binary_data_output) */
    char head[512];
    snprintf(head, sizeof head,
             "{\"id\":\"b1\",\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[%d,%d],"
             "\"parameters\":{\"binary_data_size\":%zu}}],"
             "\"parameters\":{\"binary_data_output\":true}}",
             N, ZD, sizeof z);
    post_bin(&r, "/v2/models/tvae/infer", head, z, sizeof z);
    const uint8_t *bin;
    size_t bl;
    cJSON *h = bin_head(&r, &bin, &bl);
    ck_assert_str_eq(tu_jget(h, "id")->valuestring, "b1");
    const cJSON *im = output(h, "images");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(im, "data"));
    ck_assert_int_eq(tu_jget(tu_jget(im, "parameters"), "binary_data_size")->valuedouble,
                     N * XD * 4);
    ck_assert_uint_eq(bl, N * XD * 4);
    ck_assert(memcmp(bin, want, bl) == 0);
    cJSON_Delete(h);
    tu_resp_free(&r);

    /* binary in, JSON out */
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[%d,%d],"
             "\"parameters\":{\"binary_data_size\":%zu}}]}",
             N, ZD, sizeof z);
    ck_assert_int_eq(post_bin(&r, "/v2/models/tvae/infer", head, z, sizeof z), 200);
    float *got = floats_of(tu_jget(output(r.json, "images"), "data"), N * XD);
    ck_assert(memcmp(got, want, sizeof(float) * N * XD) == 0);
    free(got);
    tu_resp_free(&r);

    /* JSON in, one output binary (per output) and one JSON, in order */
    float x[N * XD];
    memcpy(x, want, sizeof x);
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"FP32\",\"shape\":[%d,28,28],"
             "\"parameters\":{\"binary_data_size\":%zu}}],\"outputs\":["
             "{\"name\":\"logvar\",\"parameters\":{\"binary_data\":false}},"
             "{\"name\":\"mu\",\"parameters\":{\"binary_data\":true}}]}",
             N, sizeof x);
    post_bin(&r, "/v2/models/tvae/infer", head, x, sizeof x);
    h = bin_head(&r, &bin, &bl);
    ck_assert_uint_eq(bl, N * ZD * 4);
    float *lv = floats_of(tu_jget(output(h, "logvar"), "data"), N * ZD);
    cJSON_Delete(h);
    /* the same through JSON */
    tu_resp_t r2;
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"FP32\",\"shape\":[%d,28,28],"
             "\"parameters\":{\"binary_data_size\":%zu}}]}",
             N, sizeof x);
    ck_assert_int_eq(post_bin(&r2, "/v2/models/tvae/infer", head, x, sizeof x), 200);
    float *mu2 = floats_of(tu_jget(output(r2.json, "mu"), "data"), N * ZD);
    float *lv2 = floats_of(tu_jget(output(r2.json, "logvar"), "data"), N * ZD);
    ck_assert(memcmp(bin, mu2, bl) == 0);
    ck_assert(memcmp(lv, lv2, sizeof(float) * N * ZD) == 0);
    free(lv);
    free(mu2);
    free(lv2);
    tu_resp_free(&r);
    tu_resp_free(&r2);
    free(want);

    /* errors of the binary form */
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[%d,%d],"
             "\"parameters\":{\"binary_data_size\":%zu}}]}",
             N, ZD, sizeof z - 4);
    post_bin(&r, "/v2/models/tvae/infer", head, z, sizeof z - 4);
    expect_v2_error(&r, 400, "binary_data_size", "size not matching the shape");
    tu_resp_free(&r);
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[%d,%d],"
             "\"parameters\":{\"binary_data_size\":%zu}}]}",
             N, ZD, sizeof z);
    post_bin(&r, "/v2/models/tvae/infer", head, z, sizeof z - 8);
    expect_v2_error(&r, 400, "binary bytes are left", "body shorter than the sizes");
    tu_resp_free(&r);
    char more[sizeof z + 8] = {0};
    memcpy(more, z, sizeof z);
    post_bin(&r, "/v2/models/tvae/infer", head, more, sizeof more);
    expect_v2_error(&r, 400, "belong to no input", "bytes left over");
    tu_resp_free(&r);
    float nan_z[N * ZD];
    memcpy(nan_z, z, sizeof z);
    nan_z[3] = NAN;
    post_bin(&r, "/v2/models/tvae/infer", head, nan_z, sizeof nan_z);
    expect_v2_error(&r, 400, "not finite", "NaN in binary data");
    tu_resp_free(&r);
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1,%d],\"data\":[1,2,3,4],"
             "\"parameters\":{\"binary_data_size\":16}}]}",
             ZD);
    post_bin(&r, "/v2/models/tvae/infer", head, z, 16);
    expect_v2_error(&r, 400, "exactly one of data", "data and binary both");
    tu_resp_free(&r);
    /* a JSON length past the body, or not a number */
    const char *lens[] = {"Inference-Header-Content-Length: 100000",
                          "Inference-Header-Content-Length: 12x",
                          "Inference-Header-Content-Length: -5"};
    for (size_t i = 0; i < LD_ARRAY_LEN(lens); i++) {
        req(&r, "POST", "/v2/models/tvae/infer", head, strlen(head), "application/octet-stream",
            lens[i], NULL);
        expect_v2_error(&r, 400, "Inference-Header-Content-Length", lens[i]);
        tu_resp_free(&r);
    }
    /* a JSON part cut short */
    req(&r, "POST", "/v2/models/tvae/infer", head, strlen(head), "application/octet-stream",
        "Inference-Header-Content-Length: 20", NULL);
    expect_v2_error(&r, 400, "not valid JSON", "JSON cut by the header length");
    tu_resp_free(&r);
}
END_TEST

/* POST head and bin (with the binary extension) to path and expect status
 * with an error containing want. */
static void bad_bin(const char *path, const char *head, const void *bin, size_t bin_len,
                    long status, const char *want, const char *what)
{
    tu_resp_t r;
    post_bin(&r, path, head, bin, bin_len);
    expect_v2_error(&r, status, want, what);
    tu_resp_free(&r);
}

/* POST head and bin (with the binary extension); the body and the
 * Inference-Header-Content-Length of the answer (0 when it has none) into
 * *body (caller frees) and *hl; the status. */
static long answer_of(const char *path, const char *head, const void *bin, size_t bin_len,
                      ld_buf_t *body, unsigned long *hl)
{
    tu_resp_t r;
    char v[32];
    long st = post_bin(&r, path, head, bin, bin_len);
    *body = (ld_buf_t){0};
    ld_buf_append(body, r.body.data, r.body.len);
    *hl = tu_hdr(&r, "Inference-Header-Content-Length", v, sizeof v) ? strtoul(v, NULL, 10) : 0;
    tu_resp_free(&r);
    return st;
}

/* The head with its first "name" key written with an escape ("n\u0061me"):
 * the same request to a JSON parser, but outside what v2.c's lean reader
 * takes, so it goes the general way (cJSON). */
static char *escaped_twin(const char *head)
{
    const char *k = strstr(head, "\"name\"");
    ck_assert_ptr_nonnull(k);
    ld_buf_t b = {0};
    ld_buf_append(&b, head, (size_t)(k - head));
    ld_buf_puts(&b, "\"n\\u0061me\"");
    ld_buf_puts(&b, k + 6);
    return b.data;
}

/* The common binary request (one z in, the images out) is read by a lean
 * reader without a parse tree (v2.c, lean_read); whatever it takes must be
 * answered byte for byte as the general path answers the same request, and
 * what it leaves (duplicates, NULs, escapes, numbers it does not read) gets
 * the general path's answer, errors included. */
START_TEST(test_infer_lean_same_answer)
{
    enum { N = 3 };
    float z[N * ZD];
    zs(z, N);
    char sz[32];
    snprintf(sz, sizeof sz, "%zu", sizeof z);
#define ZB(shape, size) \
    "{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":" shape ",\"parameters\":" \
    "{\"binary_data_size\":" size "}}"
    char heads[8][512];
    int nh = 0;
    /* outputs binary per output, with an id; JSON out; binary_data_output;
     * blanks everywhere JSON allows them; members in another order */
    snprintf(heads[nh++], 512, "{\"id\":\"lean-1 ~!\",\"inputs\":[" ZB("[3,4]", "%s") "],"
             "\"outputs\":[{\"name\":\"images\",\"parameters\":{\"binary_data\":true}}]}", sz);
    snprintf(heads[nh++], 512, "{\"inputs\":[" ZB("[3,4]", "%s") "]}", sz);
    snprintf(heads[nh++], 512, "{\"parameters\":{\"binary_data_output\":true},\"inputs\":["
             ZB("[3,4]", "%s") "],\"id\":\"\"}", sz);
    snprintf(heads[nh++], 512, " {\r\n \"inputs\" :\t[ {\"parameters\": { \"binary_data_size\" : %s } ,"
             "\"shape\" : [ 3 , 4 ] , \"datatype\":\"FP32\",\"name\" : \"z\" } ] , \"outputs\" : "
             "[ { \"parameters\" : { } , \"name\" : \"images\" } ] , \"parameters\" : "
             "{ \"binary_data_output\" : true } }\n ", sz);
    snprintf(heads[nh++], 512, "{\"inputs\":[" ZB("[3,4]", "%s") "],\"parameters\":{"
             "\"binary_data_output\":true},\"outputs\":[{\"name\":\"images\",\"parameters\":"
             "{\"binary_data\":false}}]}", sz);
    for (int m = 0; m < 2; m++) {
        const char *path = m ? "/v2/models/tgan/infer" : "/v2/models/tvae/infer";
        for (int i = 0; i < nh; i++) {
            char *twin = escaped_twin(heads[i]);
            ld_buf_t a, b;
            unsigned long ha, hb;
            long sa = answer_of(path, heads[i], z, sizeof z, &a, &ha);
            long sb = answer_of(path, twin, z, sizeof z, &b, &hb);
            ck_assert_msg(sa == 200 && sb == 200, "%s %s: status %ld and %ld: %.300s", path,
                          heads[i], sa, sb, a.data);
            ck_assert_msg(ha == hb && a.len == b.len && memcmp(a.data, b.data, a.len) == 0,
                          "%s %s: the answers differ (%zu and %zu bytes)", path, heads[i], a.len,
                          b.len);
            ck_assert_uint_gt(a.len, (size_t)N * XD * 4 * (ha ? 1 : 0));
            ld_buf_free(&a);
            ld_buf_free(&b);
            free(twin);
        }
    }
    /* left to the general path: its answer */
    const char *p = "/v2/models/tvae/infer";
    char big[32];
    snprintf(big, sizeof big, "%zu", sizeof z + 4);
    static const char *const fmt = "{\"inputs\":[" ZB("%s", "%s") "]%s";
    const struct {
        const char *path, *shape, *size, *after; /* size NULL: the right one */
        long status;
        const char *want;
    } cases[] = {
        {p, "[3,4]", NULL, ",\"inputs\":[]}", 400, "given twice"},
        {p, "[3,4]", NULL, ",\"extra\":1}", 400, "unknown field 'extra'"},
        {p, "[3,4]", NULL, "}x", 400, "after the JSON value"},
        {p, "[3,4]", big, "}", 400, "binary_data_size"},
        {p, "[3000000000000000000,4]", NULL, "}", 400, "too large"},
        {p, "[3,5]", NULL, "}", 400, "dimension 1"},
        {p, "[03,4]", NULL, "}", 400, "not valid JSON"},
        {"/v2/models/nosuch/infer", "[3,4]", NULL, "}", 404, "nosuch"},
    };
    char head[512];
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        snprintf(head, sizeof head, fmt, cases[i].shape, cases[i].size ? cases[i].size : sz,
                 cases[i].after);
        bad_bin(cases[i].path, head, z, sizeof z, cases[i].status, cases[i].want, head);
    }
    /* a NUL inside the JSON part, where a blank could be */
    snprintf(head, sizeof head, fmt, "[3,4]", sz, "}");
    size_t hlen = strlen(head);
    char body[600];
    memcpy(body, head, hlen);
    body[hlen] = '\0';
    memcpy(body + hlen + 1, z, sizeof z);
    char extra[80];
    snprintf(extra, sizeof extra, "Inference-Header-Content-Length: %zu", hlen + 1);
    tu_resp_t r;
    req(&r, "POST", p, body, hlen + 1 + sizeof z, "application/octet-stream", extra, NULL);
    expect_v2_error(&r, 400, "after the JSON value", "a NUL after the head");
    tu_resp_free(&r);
    float inf_z[N * ZD];
    memcpy(inf_z, z, sizeof z);
    inf_z[N * ZD - 1] = INFINITY;
    bad_bin(p, head, inf_z, sizeof inf_z, 400, "not finite", "an infinity");
#undef ZB
}
END_TEST

/* The head of an infer body whose input is n binary images (bytes), then
 * outputs: "" or ",\"outputs\":[...]". */
static void images_head(char *head, size_t size, int n, size_t bytes, const char *outputs)
{
    snprintf(head, size,
             "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"FP32\",\"shape\":[%d,28,28],"
             "\"parameters\":{\"binary_data_size\":%zu}}]%s}",
             n, bytes, outputs);
}

/* Images decoded as binary beside other binary outputs, in the order asked
 * (logvar, images, then mu as JSON): each part holds the values the JSON
 * answer gives, and the binary part starts float-aligned (the head is
 * padded with spaces, which JSON allows; the images are decoded in place). */
START_TEST(test_infer_binary_images_in_order)
{
    enum { N = 2 };
    float x[N * XD];
    for (int i = 0; i < N * XD; i++)
        x[i] = (float)((i * 7) % 13) / 13.0f;
    char head[512];
    images_head(head, sizeof head, N, sizeof x,
                ",\"outputs\":[{\"name\":\"logvar\",\"parameters\":{\"binary_data\":true}},"
                "{\"name\":\"images\",\"parameters\":{\"binary_data\":true}},{\"name\":\"mu\"}]");
    tu_resp_t r, r2;
    post_bin(&r, "/v2/models/tvae/infer", head, x, sizeof x);
    const uint8_t *bin;
    size_t bl;
    cJSON *h = bin_head(&r, &bin, &bl);
    ck_assert_uint_eq((size_t)(bin - (const uint8_t *)r.body.data) % sizeof(float), 0);
    ck_assert_uint_eq(bl, (size_t)N * (ZD + XD) * 4);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(output(h, "images"), "data"));
    float *mu = floats_of(tu_jget(output(h, "mu"), "data"), N * ZD);
    cJSON_Delete(h);
    /* the same as JSON */
    images_head(head, sizeof head, N, sizeof x,
                ",\"outputs\":[{\"name\":\"logvar\"},{\"name\":\"images\"},{\"name\":\"mu\"}]");
    ck_assert_int_eq(post_bin(&r2, "/v2/models/tvae/infer", head, x, sizeof x), 200);
    float *lv2 = floats_of(tu_jget(output(r2.json, "logvar"), "data"), N * ZD);
    float *im2 = floats_of(tu_jget(output(r2.json, "images"), "data"), N * XD);
    float *mu2 = floats_of(tu_jget(output(r2.json, "mu"), "data"), N * ZD);
    ck_assert(memcmp(bin, lv2, sizeof(float) * N * ZD) == 0);
    ck_assert(memcmp(bin + sizeof(float) * N * ZD, im2, sizeof(float) * N * XD) == 0);
    ck_assert(memcmp(mu, mu2, sizeof(float) * N * ZD) == 0);
    free(mu);
    free(lv2);
    free(im2);
    free(mu2);
    tu_resp_free(&r);
    tu_resp_free(&r2);
}
END_TEST

START_TEST(test_infer_errors)
{
    const char *p = "/v2/models/tvae/infer";
#define ZIN(dt, shape, data) \
    "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"" dt "\",\"shape\":" shape ",\"data\":" data "}]}"
    /* datatype and shape mismatches */
    bad(p, ZIN("INT32", "[1,4]", "[1,2,3,4]"), 400, "datatype INT32");
    bad(p, ZIN("FP64", "[1,4]", "[1,2,3,4]"), 400, "must be FP32");
    bad(p, ZIN("FP32", "[1,5]", "[1,2,3,4,5]"), 400, "dimension 1");
    bad(p, ZIN("FP32", "[4]", "[1,2,3,4]"), 400, "must be 2 integers");
    bad(p, ZIN("FP32", "[1,4]", "[1,2,3]"), 400, "does not match its shape");
    bad(p, ZIN("FP32", "[2,4]", "[[1,2,3,4],[1,2,3]]"), 400, "does not match its shape");
    bad(p, ZIN("FP32", "[2,4]", "[[1,2,3,4]]"), 400, "does not match its shape");
    bad(p, ZIN("FP32", "[1,4]", "[[[1,2,3,4]]]"), 400, "does not match its shape");
    bad(p, ZIN("FP32", "[1,4]", "[1,2,\"3\",4]"), 400, "FP32 values only");
    bad(p, ZIN("FP32", "[1,4]", "[1,2,1e39,4]"), 400, "FP32 values only");
    bad(p, ZIN("FP32", "[1,4]", "{\"a\":1}"), 400, "array of numbers");
    /* counts that overflow, negative, fractional and zero dimensions */
    bad(p, ZIN("FP32", "[4294967296,4294967296]", "[1]"), 400, "more elements than can be counted");
    bad(p, ZIN("FP32", "[3037000500,3037000500]", "[1]"), 400, "more elements than can be counted");
    bad(p, ZIN("FP32", "[1e300,4]", "[1]"), 400, "too large");
    bad(p, ZIN("FP32", "[-1,4]", "[1,2,3,4]"), 400, "negative");
    bad(p, ZIN("FP32", "[1,-4]", "[1,2,3,4]"), 400, "negative");
    bad(p, ZIN("FP32", "[1.5,4]", "[1,2,3,4]"), 400, "integers");
    bad(p, ZIN("FP32", "[0,4]", "[]"), 400, "rows");
    bad(p, ZIN("FP32", "[65,4]", "[1]"), 400, "max_samples");
    /* inputs and outputs */
    bad(p, "{\"inputs\":[{\"name\":\"w\",\"datatype\":\"FP32\",\"shape\":[1,4],\"data\":[1,2,3,4]}]}",
        400, "no input 'w'");
    bad("/v2/models/tgan/infer",
        "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"FP32\",\"shape\":[1,28,28],\"data\":[1]}]}",
        400, "no input 'images'");
    bad(p, "{\"inputs\":[{\"name\":\"labels\",\"datatype\":\"INT32\",\"shape\":[1],\"data\":[3]}]}",
        400, "not conditional");
    bad(p, "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1,4],\"data\":[1,2,3,4]},"
           "{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1,4],\"data\":[1,2,3,4]}]}",
        400, "given twice");
    ld_buf_t both = {0};
    ld_buf_puts(&both, "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1,4],"
                       "\"data\":[1,2,3,4]},{\"name\":\"images\",\"datatype\":\"FP32\","
                       "\"shape\":[1,28,28],\"data\":[0");
    for (int i = 1; i < XD; i++)
        ld_buf_puts(&both, ",0");
    ld_buf_puts(&both, "]}]}");
    bad(p, both.data, 400, "not both");
    ld_buf_free(&both);
    bad(p, "{\"outputs\":[{\"name\":\"images\"},{\"name\":\"images\"}]}", 400, "asked for twice");
    bad(p, "{\"outputs\":[{\"name\":\"mu\"}]}", 400, "needs the input 'images'");
    bad(p, "{\"outputs\":[{\"name\":\"foo\"}]}", 400, "no output 'foo'");
    bad(p, "{\"outputs\":[]}", 400, "non-empty");
    bad(p, "{\"outputs\":[{\"name\":\"images\",\"parameters\":{\"binary_data\":1}}]}", 400,
        "binary_data");
    bad(p, "{\"outputs\":[{\"name\":\"images\",\"parameters\":{\"classification\":3}}]}", 400,
        "unknown field");
    bad(p, "{\"inputs\":{}}", 400, "inputs an array");
    bad(p, "{\"id\":5}", 400, "id must be a string");
    bad(p, "{\"model\":\"x\"}", 400, "unknown field 'model'");
    /* parameters: sampling only without inputs; ranges are 400, not 422 */
    bad(p, "{\"parameters\":{\"seed\":1},\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\","
           "\"shape\":[1,4],\"data\":[1,2,3,4]}]}",
        400, "without inputs");
    bad(p, "{\"parameters\":{\"n\":0}}", 400, "out of range");
    bad(p, "{\"parameters\":{\"n\":65}}", 400, "out of range");
    bad(p, "{\"parameters\":{\"temperature\":-1}}", 400, "out of range");
    bad(p, "{\"parameters\":{\"seed\":-1}}", 400, "seed");
    bad(p, "{\"parameters\":{\"binary_data_output\":\"yes\"}}", 400, "boolean");
    bad(p, "{\"parameters\":{\"sequence_id\":1}}", 400, "unknown field");
    /* models: unknown (404), no such version (404), a classifier (400) */
    bad("/v2/models/nope/infer", "{}", 404, "no model");
    bad("/v2/models/tvae/versions/999999/infer", "{}", 404, "version");
    bad("/v2/models/cls/infer", "{}", 400, "classifier");
    /* bodies: not JSON, not an object, not application/json */
    bad(p, "{\"inputs\":[", 400, "not valid JSON");
    bad(p, "[1,2]", 400, "JSON object");
    tu_resp_t r;
    req(&r, "POST", p, "{}", 2, "text/plain", NULL, NULL);
    expect_v2_error(&r, 415, "Content-Type", "text/plain");
    tu_resp_free(&r);

    /* JSON nested deeper than 100 levels: refused before it is read; 1000
     * deep is refused by the parser itself */
    for (int depth = 90; depth <= 1100; depth += depth < 200 ? 20 : 1000) {
        ld_buf_t b = {0};
        ld_buf_puts(&b, "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1,4],\"data\":");
        for (int i = 0; i < depth; i++)
            ld_buf_putc(&b, '[');
        ld_buf_putc(&b, '1');
        for (int i = 0; i < depth; i++)
            ld_buf_putc(&b, ']');
        ld_buf_puts(&b, "}]}");
        /* the data sits at depth 3 + its brackets */
        bad(p, b.data, 400,
            depth + 3 <= 100 ? "does not match" : depth < 1000 ? "deeper than 100" : "JSON");
        ld_buf_free(&b);
    }
#undef ZIN
    /* still serving */
    ck_assert_int_eq(post(&r, p, "{\"parameters\":{\"seed\":1}}"), 200);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_full_queue_503)
{
    /* /v1 answers 503 when the request bodies held in memory fill their
     * budget (the decode queue itself has no cap): fill it with /v2 uploads
     * that never finish, then one more */
    enum { HOLD = BODY_MEM / MAX_BODY };
    int fds[HOLD];
    tu_hold_bodies(&D, "/v2/models/tvae/infer", TOKEN, MAX_BODY, HOLD, fds);
    tu_resp_t r;
    post(&r, "/v2/models/tvae/infer", "{\"parameters\":{\"seed\":1}}");
    expect_v2_error(&r, 503, "retry", "body budget exhausted");
    char ra[16];
    ck_assert_ptr_nonnull(tu_hdr(&r, "Retry-After", ra, sizeof ra));
    tu_resp_free(&r);
    /* requests without a body still work */
    ck_assert_int_eq(get(&r, "/v2/models/tvae"), 200);
    tu_resp_free(&r);
    tu_release_bodies(&D, TOKEN, HOLD, fds);
    ck_assert_int_eq(post(&r, "/v2/models/tvae/infer", "{\"parameters\":{\"seed\":1}}"), 200);
    tu_resp_free(&r);
}
END_TEST

/* Concurrent /v2 decodes share batcher passes (queued requests answer from
 * a suspended connection): every answer must still be the lone answer. */
typedef struct {
    const char *body, *want;
    int ok, bad;
} load_t;

static void *load_run(void *arg)
{
    load_t *l = arg;
    CURL *c = curl_easy_init();
    tu_req_t q = {.token = TOKEN, .port = D.port};
    for (int i = 0; i < 40; i++) {
        tu_resp_t r;
        long st = tu_http(c, &r, "POST", "/v2/models/tgan/infer", l->body, strlen(l->body), &q);
        if (st == 200 && r.body.data && strcmp(r.body.data, l->want) == 0)
            l->ok++;
        else
            l->bad++;
        tu_resp_free(&r);
    }
    curl_easy_cleanup(c);
    return NULL;
}

START_TEST(test_concurrent_same_bytes)
{
    enum { T = 6 };
    static const char *const bodies[2] = {
        "{\"parameters\":{\"seed\":11,\"n\":1}}",
        "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[2,4],"
        "\"data\":[0.5,-1,2,0.25,1,1,1,1]}]}"};
    char *want[2];
    for (int k = 0; k < 2; k++) {
        tu_resp_t r;
        ck_assert_int_eq(post(&r, "/v2/models/tgan/infer", bodies[k]), 200);
        want[k] = strdup(r.body.data);
        tu_resp_free(&r);
    }
    load_t l[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        l[i] = (load_t){.body = bodies[i % 2], .want = want[i % 2]};
        ck_assert_int_eq(pthread_create(&th[i], NULL, load_run, &l[i]), 0);
    }
    /* meanwhile, clients that send a decode and go away at once: their
     * requests may be queued when they leave (the daemon must free them:
     * test_daemon_exits_clean sees leaks under ASan) */
    char rq[512];
    snprintf(rq, sizeof rq,
             "POST /v2/models/tgan/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(bodies[1]), bodies[1]);
    for (int i = 0; i < 40; i++) {
        int fd = tu_tcp_connect(1, D.port, 1);
        ck_assert_int_ge(fd, 0);
        tu_send_all(fd, rq, strlen(rq));
        close(fd);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(l[i].bad == 0 && l[i].ok == 40, "thread %d: %d ok, %d different", i,
                      l[i].ok, l[i].bad);
    }
    free(want[0]);
    free(want[1]);
}
END_TEST

/* scripts/v2_client.py's lines: "images 1x28x28 <sha256>". */
static char *run_client(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "LATENTD_TOKEN=" TOKEN " python3 scripts/v2_client.py http://127.0.0.1:%d %s 2>&1",
             D.port, args);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    ld_buf_t b = {0};
    char line[512];
    while (fgets(line, sizeof line, f))
        ld_buf_puts(&b, line);
    int st = pclose(f);
    ck_assert_msg(st == 0, "%s: exit %d:\n%s", cmd, st, b.data ? b.data : "");
    size_t len;
    return ld_buf_steal(&b, &len);
}

START_TEST(test_python_client)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        fprintf(stderr, "v2: python3 is missing: the client test is skipped\n");
        return;
    }
    /* decode one z: JSON and binary give the bytes the daemon sends */
    float z[ZD] = {0.25f, -1.5f, 0.75f, 2.0f};
    char head[512];
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1,%d],"
             "\"parameters\":{\"binary_data_size\":%zu}}],"
             "\"parameters\":{\"binary_data_output\":true}}",
             ZD, sizeof z);
    tu_resp_t r;
    post_bin(&r, "/v2/models/tvae/infer", head, z, sizeof z);
    const uint8_t *bin;
    size_t bl;
    cJSON_Delete(bin_head(&r, &bin, &bl));
    char hex[2 * LD_SHA256_LEN + 1], want[200];
    ld_sha256_hex(bin, bl, hex);
    tu_resp_free(&r);
    snprintf(want, sizeof want, "images 1x28x28 %s\n", hex);
    char *json = run_client("tvae --z 0.25,-1.5,0.75,2");
    char *binary = run_client("tvae --z 0.25,-1.5,0.75,2 --binary");
    ck_assert_str_eq(json, want);
    ck_assert_str_eq(binary, want);
    free(json);
    free(binary);
    /* sampling: the same images both ways, the seed reported */
    json = run_client("tgan --seed 9 --n 3");
    binary = run_client("tgan --seed 9 --n 3 --binary");
    ck_assert_str_eq(json, binary);
    ck_assert_msg(strstr(json, "images 3x28x28 ") && strstr(json, "\nseed 9\n"), "%s", json);
    free(json);
    free(binary);
}
END_TEST

/* The status of one request sent as raw bytes (Connection: close). */
static int raw_status(const char *request)
{
    int fd = tu_tcp_connect(1, D.port, 1);
    ck_assert_int_ge(fd, 0);
    tu_send_all(fd, request, strlen(request));
    char buf[64] = "";
    size_t k = 0;
    ssize_t n;
    while (k < sizeof buf - 1 && (n = recv(fd, buf + k, sizeof buf - 1 - k, 0)) > 0)
        k += (size_t)n;
    close(fd);
    buf[k] = '\0';
    return strncmp(buf, "HTTP/1.", 7) == 0 ? atoi(buf + 9) : -1;
}

START_TEST(test_untyped_json_body)
{
    /* Triton's Python client sends JSON bodies without a Content-Type: /v2
     * takes them (/v1 does not), but not a body that says it is something
     * else */
    static const char body[] = "{\"parameters\":{\"seed\":3}}";
    char rq[512];
    snprintf(rq, sizeof rq,
             "POST /v2/models/tgan/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), body);
    ck_assert_int_eq(raw_status(rq), 200);
    snprintf(rq, sizeof rq,
             "POST /v2/models/tgan/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
             "\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: close"
             "\r\n\r\n%s",
             strlen(body), body);
    ck_assert_int_eq(raw_status(rq), 415);
}
END_TEST

START_TEST(test_daemon_exits_clean)
{
    /* last: SIGTERM the daemon; exit 0 (no leaks under ASan) */
    ck_assert_int_eq(kill(D.pid, SIGTERM), 0);
    int code = tu_daemon_wait_exit(&D, 30);
    ck_assert_msg(code == 0, "exit %d; log tail:\n%s", code, tu_log_tail(&D));
}
END_TEST

static void timing_end(void)
{
    tu_timing_end("v2");
}

Suite *suite_v2(void)
{
    Suite *s = suite_create("v2");
    TCase *tc = tcase_create("v2");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_checked_fixture(tc, tu_timing_start, timing_end);
    tcase_add_test(tc, test_health_and_metadata);
    tcase_add_test(tc, test_infer_json_matches_v1);
    tcase_add_test(tc, test_infer_binary);
    tcase_add_test(tc, test_infer_binary_images_in_order);
    tcase_add_test(tc, test_infer_lean_same_answer);
    tcase_add_test(tc, test_infer_errors);
    tcase_add_test(tc, test_full_queue_503);
    tcase_add_test(tc, test_concurrent_same_bytes);
    tcase_add_test(tc, test_python_client);
    tcase_add_test(tc, test_untyped_json_body);
    tcase_add_test(tc, test_daemon_exits_clean);
    suite_add_tcase(s, tc);
    return s;
}

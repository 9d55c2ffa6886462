/* check_serve.c — integration tests of `latentd serve`: the real binary
 * (LD_BIN) on a free port with temporary model and state folders, driven over
 * HTTP with libcurl (and raw sockets where curl is too polite).
 *
 * One daemon (tokens, CORS, small caps) serves the "api" test case; tests that
 * need their own daemon (shutdown, SIGHUP, no admin token, config errors,
 * sd_notify) start one.  Synchronisation is by polling (/readyz, the log, the
 * metrics), never by sleeping alone.  Every daemon must exit 0 on SIGTERM,
 * which under AddressSanitizer also means "no leaks".
 *
 * The daemon, HTTP and JSON helpers are shared with tests/check_jobs_http.c
 * (tests/tu_daemon.h); this suite's defaults: the inference token, the shared
 * daemon's port, deadlines x4 under the sanitizers.
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/buf.h"
#include "latentd/image.h"
#include "latentd/model.h"
#include "latentd/sha256.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "inference-token-0123456789abcdef"
#define ADMIN "admin-token-fedcba9876543210abcd"
#define ORIGIN "https://app.example"
#define MAX_BODY (256 * 1024)
#define BODY_MEM (4 * 1024 * 1024)
#define MAX_SAMPLES 64

/* ------------------------------------------------------------ daemons */

#define ASAN_SLOWDOWN 4 /* deadlines under the sanitizers (tests/tu_daemon.h) */

static tu_daemon_t D; /* the shared daemon of the "api" case (set up in the runner) */

/* Slower under sanitizers: generous deadlines, still bounded. */
static double deadline(double s)
{
    return tu_deadline(s, ASAN_SLOWDOWN);
}

/* ------------------------------------------------------------- models */

static void arch_tiny(ld_kind_t kind, ld_arch_t *a)
{
    ld_arch_default(kind, a);
    a->enc.n = 1;
    a->enc.size[0] = 32;
    a->dec.n = 1;
    a->dec.size[0] = 32;
    if (kind != LD_KIND_CLASSIFIER)
        a->z_dim = 4;
}

static void save_model(const char *dir, const char *file, const ld_arch_t *a, uint64_t seed,
                       int poison)
{
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_new(a, seed, &m, &e) == LD_OK, "model_new: %s", e.msg);
    if (poison)
        m->params[3] = NAN;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "model_save %s: %s", path, e.msg);
    ld_model_free(m);
}

static ld_model_t *load_model(const char *dir, const char *file)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_load(path, &m, &e) == LD_OK, "load %s: %s", path, e.msg);
    return m;
}

/* Default-size VAE and GAN, tiny ones, a classifier, two versions for hot
 * reload, and files that must be refused. */
static void make_models(const char *dir)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_VAE, &a);
    save_model(dir, "vae.safetensors", &a, 1, 0);
    ld_arch_default(LD_KIND_GAN, &a);
    save_model(dir, "gan.safetensors", &a, 2, 0);
    arch_tiny(LD_KIND_VAE, &a);
    save_model(dir, "tvae.safetensors", &a, 3, 0);
    save_model(dir, "alt-a.safetensors", &a, 10, 0);
    save_model(dir, "alt-b.safetensors", &a, 11, 0);
    save_model(dir, "poisoned.safetensors", &a, 12, 1);
    arch_tiny(LD_KIND_GAN, &a);
    save_model(dir, "tgan.safetensors", &a, 4, 0);
    arch_tiny(LD_KIND_CLASSIFIER, &a);
    save_model(dir, "cls.safetensors", &a, 5, 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/broken.safetensors", dir);
    tu_write_file(path, "this is not a safetensors file");
    snprintf(path, sizeof path, "%s/bad name!.safetensors", dir);
    tu_write_file(path, "x");
}

/* ------------------------------------------------------------- HTTP */

/* tu_req_t with this suite's defaults: token NULL: TOKEN, "": none; port 0:
 * the shared daemon. */
typedef tu_req_t opt_t;

static opt_t with_defaults(const opt_t *o)
{
    opt_t q = o ? *o : (opt_t){0};
    if (!q.token)
        q.token = TOKEN;
    if (!q.port)
        q.port = D.port;
    return q;
}

static long call(tu_resp_t *r, const char *method, const char *path, const void *body,
                 size_t len, const opt_t *o)
{
    opt_t q = with_defaults(o);
    return tu_http_once(r, method, path, body, len, &q);
}

static long get(tu_resp_t *r, const char *path)
{
    return call(r, "GET", path, NULL, 0, NULL);
}

static long post(tu_resp_t *r, const char *path, const char *json)
{
    return call(r, "POST", path, json, strlen(json), NULL);
}

/* An error response, exactly: see tu_expect_error. */
static void expect_error(const tu_resp_t *r, long status, const char *code, const char *want_msg,
                         const char *what)
{
    tu_expect_error(r, status, code, want_msg, what, 1);
}

/* rows x cols numbers of a JSON matrix into a new array. */
static float *jmatrix(const cJSON *m, int rows, int cols)
{
    ck_assert_int_eq(cJSON_GetArraySize(m), rows);
    float *x = malloc(sizeof *x * (size_t)rows * (size_t)cols);
    ck_assert_ptr_nonnull(x);
    int r = 0;
    for (const cJSON *row = m->child; row; row = row->next, r++) {
        ck_assert_int_eq(cJSON_GetArraySize(row), cols);
        int c = 0;
        for (const cJSON *v = row->child; v; v = v->next, c++) {
            ck_assert(cJSON_IsNumber(v));
            x[(size_t)r * (size_t)cols + (size_t)c] = (float)v->valuedouble;
        }
    }
    return x;
}

/* ------------------------------------------------------------- fixtures */

static void write_conf(tu_daemon_t *d, const char *extra)
{
    char text[4096];
    snprintf(text, sizeof text,
             "# test daemon\n"
             "bind = 127.0.0.1\n"
             "port = 0\n"
             "http_threads = 4\n"
             "models_dir = %s\n"
             "state_dir = %s\n"
             "max_body_bytes = %d\n"
             "body_memory_limit = %d\n"
             "max_samples = %d\n"
             "request_timeout = 10\n"
             "%s",
             d->models, d->state, MAX_BODY, BODY_MEM, MAX_SAMPLES, extra ? extra : "");
    tu_write_file(d->conf, text);
}

static void shared_setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_dirs(&D, ASAN_SLOWDOWN);
    make_models(D.models);
    char tok[600], adm[600], extra[2048];
    snprintf(tok, sizeof tok, "%s/token", D.dir);
    snprintf(adm, sizeof adm, "%s/admin", D.dir);
    tu_write_file(tok, TOKEN "\n");
    tu_write_file(adm, ADMIN "\n");
    snprintf(extra, sizeof extra,
             "token_file = %s\nadmin_token_file = %s\ncors_origins = \"" ORIGIN
             ", http://localhost:5173\"\n",
             tok, adm);
    write_conf(&D, extra);
    tu_daemon_start(&D, NULL);
}

static void shared_teardown(void)
{
    tu_daemon_teardown(&D, 30);
    curl_global_cleanup();
}

static void timing_end(void)
{
    tu_timing_end("serve");
}

/* ================================================================ tests */

START_TEST(test_health_open)
{
    tu_resp_t r;
    opt_t open = {.token = ""};
    ck_assert_int_eq(call(&r, "GET", "/healthz", NULL, 0, &open), 200);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(r.json, "status")->valuestring, "ok");
    tu_resp_free(&r);
    ck_assert_int_eq(call(&r, "GET", "/readyz", NULL, 0, &open), 200);
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(r.json, "status")->valuestring, "ready");
    tu_resp_free(&r);
    ck_assert_int_eq(call(&r, "HEAD", "/healthz", NULL, 0, &open), 200);
    ck_assert_int_eq(r.body.len, 0);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_models_list_and_info)
{
    tu_resp_t r;
    ck_assert_int_eq(get(&r, "/v1/models"), 200);
    ck_assert(tu_json_all_finite(r.json));
    const cJSON *list = tu_jget(r.json, "models");
    const char *want[] = {"alt-a", "alt-b", "cls", "gan", "tgan", "tvae", "vae"};
    ck_assert_int_eq(cJSON_GetArraySize(list), (int)LD_ARRAY_LEN(want));
    int i = 0;
    for (const cJSON *m = list->child; m; m = m->next, i++)
        ck_assert_str_eq(tu_jget(m, "name")->valuestring, want[i]); /* sorted; bad files skipped */
    tu_resp_free(&r);

    ck_assert_int_eq(get(&r, "/v1/models/vae"), 200);
    ck_assert_str_eq(tu_jget(r.json, "kind")->valuestring, "vae");
    ck_assert_int_eq(tu_jget(r.json, "latent_size")->valueint, 20);
    const cJSON *shape = tu_jget(r.json, "image_shape");
    ck_assert_int_eq(cJSON_GetArrayItem(shape, 0)->valueint, 28);
    ck_assert_int_eq(cJSON_GetArrayItem(shape, 1)->valueint, 28);
    ld_model_t *m = load_model(D.models, "vae.safetensors");
    ck_assert_int_eq((long long)tu_jget(r.json, "parameters")->valuedouble, (long long)m->n_params);
    ld_model_free(m);
    ck_assert_str_eq(tu_jget(r.json, "file")->valuestring, "vae.safetensors");
    char path[1024];
    snprintf(path, sizeof path, "%s/vae.safetensors", D.models);
    FILE *f = fopen(path, "rb");
    ld_sha256_t h;
    ld_sha256_init(&h);
    uint8_t tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        ld_sha256_update(&h, tmp, n);
    fclose(f);
    uint8_t d[32];
    ld_sha256_final(&h, d);
    char hex[65];
    for (int k = 0; k < 32; k++)
        snprintf(hex + 2 * k, 3, "%02x", d[k]);
    ck_assert_str_eq(tu_jget(r.json, "sha256")->valuestring, hex);
    ck_assert(cJSON_IsObject(tu_jget(r.json, "record")));
    ck_assert(cJSON_IsObject(tu_jget(r.json, "architecture")));
    tu_resp_free(&r);

    ck_assert_int_eq(get(&r, "/v1/models/gan"), 200);
    ck_assert_str_eq(tu_jget(r.json, "kind")->valuestring, "gan");
    ck_assert_int_eq(tu_jget(r.json, "latent_size")->valueint, 100);
    tu_resp_free(&r);

    /* the refused files are in the log with their reasons */
    char *log = tu_read_text(D.log);
    ck_assert_msg(strstr(log, "model load failed name=broken file=broken.safetensors"), "%s", log);
    ck_assert_msg(strstr(log, "model load failed name=poisoned") && strstr(log, "finite"),
                  "%s", log);
    ck_assert_msg(strstr(log, "file=bad name!.safetensors"), "%s", log);
    free(log);
}
END_TEST

START_TEST(test_sample_json_matches_model)
{
    tu_resp_t r;
    ck_assert_int_eq(post(&r, "/v1/models/vae/sample", "{\"n\":4,\"seed\":7,\"temperature\":0.8}"),
                     200);
    ck_assert(tu_json_all_finite(r.json));
    ck_assert_int_eq((long long)tu_jget(r.json, "seed")->valuedouble, 7);
    const cJSON *shape = tu_jget(r.json, "shape");
    ck_assert_int_eq(cJSON_GetArraySize(shape), 3);
    ck_assert_int_eq(cJSON_GetArrayItem(shape, 0)->valueint, 4);
    float *z = jmatrix(tu_jget(r.json, "z"), 4, 20);
    float *x = jmatrix(tu_jget(r.json, "images"), 4, 784);
    for (int i = 0; i < 4 * 784; i++)
        ck_assert(x[i] >= 0.0f && x[i] <= 1.0f);
    /* the same computation in this process */
    ld_model_t *m = load_model(D.models, "vae.safetensors");
    float zz[4 * 20], xx[4 * 784];
    ld_err_t e;
    ld_model_draw_z(m, 7, 0.8f, 4, zz);
    ck_assert_int_eq(ld_model_decode(m, 4, zz, xx, &e), LD_OK);
    for (int i = 0; i < 4 * 20; i++)
        ck_assert_msg(z[i] == zz[i], "z[%d] %g != %g", i, z[i], zz[i]);
    double worst = 0;
    for (int i = 0; i < 4 * 784; i++)
        worst = fmax(worst, fabs(x[i] - xx[i]));
    ck_assert_msg(worst < 1e-5, "images differ from a local decode by %g", worst);
    ld_model_free(m);
    free(z);
    free(x);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_determinism_and_formats)
{
    const char *bodies[] = {
        "{\"n\":3,\"seed\":11}",
        "{\"n\":16,\"seed\":11,\"format\":\"png\",\"cols\":4}",
        "{\"n\":3,\"seed\":11,\"format\":\"npy\"}",
    };
    const char *models[] = {"/v1/models/vae/sample", "/v1/models/gan/sample"};
    for (size_t mi = 0; mi < 2; mi++) {
        for (size_t i = 0; i < LD_ARRAY_LEN(bodies); i++) {
            tu_resp_t a, b;
            ck_assert_int_eq(post(&a, models[mi], bodies[i]), 200);
            ck_assert_int_eq(post(&b, models[mi], bodies[i]), 200);
            ck_assert_msg(a.body.len == b.body.len && memcmp(a.body.data, b.body.data, a.body.len) == 0,
                          "%s %s: bodies differ", models[mi], bodies[i]);
            char seed[32];
            ck_assert_str_eq(tu_hdr(&a, "X-Latentd-Seed", seed, sizeof seed), "11");
            tu_resp_free(&a);
            tu_resp_free(&b);
        }
    }
    /* no seed: one is drawn and echoed; replaying it gives the same images */
    tu_resp_t a, b;
    ck_assert_int_eq(post(&a, "/v1/models/tvae/sample", "{\"n\":2}"), 200);
    ck_assert_int_eq(post(&b, "/v1/models/tvae/sample", "{\"n\":2}"), 200);
    double s1 = tu_jget(a.json, "seed")->valuedouble, s2 = tu_jget(b.json, "seed")->valuedouble;
    ck_assert_msg(s1 != s2, "two unseeded requests drew the same seed");
    ck_assert(s1 >= 0 && s1 <= 9007199254740991.0 && s1 == floor(s1));
    char body[128];
    snprintf(body, sizeof body, "{\"n\":2,\"seed\":%.0f}", s1);
    tu_resp_t c;
    ck_assert_int_eq(post(&c, "/v1/models/tvae/sample", body), 200);
    ck_assert_int_eq(a.body.len, c.body.len);
    ck_assert(memcmp(a.body.data, c.body.data, a.body.len) == 0);
    tu_resp_free(&a);
    tu_resp_free(&b);
    tu_resp_free(&c);
    /* an empty POST body is all defaults */
    ck_assert_int_eq(call(&a, "POST", "/v1/models/tvae/sample", NULL, 0, NULL), 200);
    ck_assert_int_eq(cJSON_GetArrayItem(tu_jget(a.json, "shape"), 0)->valueint, 1);
    tu_resp_free(&a);
}
END_TEST

START_TEST(test_png_and_npy_bodies)
{
    tu_resp_t js, png, npy, gpng;
    ck_assert_int_eq(post(&js, "/v1/models/vae/sample", "{\"n\":6,\"seed\":3}"), 200);
    ck_assert_int_eq(post(&png, "/v1/models/vae/sample",
                          "{\"n\":6,\"seed\":3,\"format\":\"png\",\"cols\":3}"), 200);
    ck_assert_int_eq(post(&npy, "/v1/models/vae/sample", "{\"n\":6,\"seed\":3,\"format\":\"npy\"}"),
                     200);
    ck_assert_int_eq(get(&gpng, "/v1/models/vae/sample.png?n=6&seed=3&cols=3&temperature=1"), 200);
    char ct[128];
    ck_assert_str_eq(tu_hdr(&png, "Content-Type", ct, sizeof ct), "image/png");
    ck_assert_str_eq(tu_hdr(&npy, "Content-Type", ct, sizeof ct), "application/octet-stream");
    ck_assert_str_eq(tu_hdr(&gpng, "Content-Type", ct, sizeof ct), "image/png");
    ck_assert_msg(png.body.len == gpng.body.len &&
                      memcmp(png.body.data, gpng.body.data, png.body.len) == 0,
                  "GET sample.png differs from POST format=png");
    float *x = jmatrix(tu_jget(js.json, "images"), 6, 784);

    /* .npy: shape (6, 28, 28), values identical to the JSON ones */
    float *a = NULL;
    int nd = 0;
    int64_t shape[4];
    ld_err_t e;
    ck_assert_msg(ld_npy_decode(npy.body.data, npy.body.len, &a, &nd, shape, &e) == LD_OK, "%s",
                  e.msg);
    ck_assert_int_eq(nd, 3);
    ck_assert(shape[0] == 6 && shape[1] == 28 && shape[2] == 28);
    for (int i = 0; i < 6 * 784; i++)
        ck_assert_msg(a[i] == x[i], "npy[%d] %g != json %g", i, a[i], x[i]);
    free(a);

    /* PNG: a 3x2 grid with a 2-pixel border; each tile is the image */
    float *g = NULL;
    int h = 0, w = 0;
    ck_assert_msg(ld_png_decode(png.body.data, png.body.len, 1 << 20, &g, &h, &w, &e) == LD_OK,
                  "%s", e.msg);
    ck_assert_int_eq(w, 3 * (28 + 2) + 2);
    ck_assert_int_eq(h, 2 * (28 + 2) + 2);
    for (int t = 0; t < 6; t++) {
        int ox = 2 + (t % 3) * 30, oy = 2 + (t / 3) * 30;
        for (int yy = 0; yy < 28; yy++)
            for (int xx = 0; xx < 28; xx++) {
                float got = g[(oy + yy) * w + ox + xx];
                float want = x[t * 784 + yy * 28 + xx];
                ck_assert_msg(fabsf(got - want) <= 1.0f / 255 + 1e-6f,
                              "tile %d (%d,%d): png %g, json %g", t, xx, yy, got, want);
            }
    }
    ck_assert_msg(g[0] == 0.0f, "border pixels are 0");
    free(g);
    free(x);
    tu_resp_free(&js);
    tu_resp_free(&png);
    tu_resp_free(&npy);
    tu_resp_free(&gpng);
}
END_TEST

START_TEST(test_encode_decode_reconstruct)
{
    /* images to encode: the VAE's own samples */
    tu_resp_t s;
    ck_assert_int_eq(post(&s, "/v1/models/vae/sample", "{\"n\":2,\"seed\":5}"), 200);
    float *x = jmatrix(tu_jget(s.json, "images"), 2, 784);
    ld_buf_t body = {0};
    ld_buf_puts(&body, "{\"images\":");
    ld_buf_json_matrix(&body, x, 2, 784);
    ld_buf_putc(&body, '}');

    tu_resp_t r;
    ck_assert_int_eq(post(&r, "/v1/models/vae/encode", body.data), 200);
    ck_assert(tu_json_all_finite(r.json));
    float *mu = jmatrix(tu_jget(r.json, "mu"), 2, 20);
    float *lv = jmatrix(tu_jget(r.json, "logvar"), 2, 20);
    ld_model_t *m = load_model(D.models, "vae.safetensors");
    float mu2[40], lv2[40];
    ld_err_t e;
    ck_assert_int_eq(ld_model_encode(m, 2, x, mu2, lv2, &e), LD_OK);
    for (int i = 0; i < 40; i++) {
        ck_assert_msg(fabsf(mu[i] - mu2[i]) < 1e-4f, "mu[%d] %g vs %g", i, mu[i], mu2[i]);
        ck_assert_msg(fabsf(lv[i] - lv2[i]) < 1e-4f, "logvar[%d] %g vs %g", i, lv[i], lv2[i]);
    }
    tu_resp_free(&r);

    /* the same image as a base64 PNG encodes like its 8-bit quantisation */
    uint8_t *png = NULL;
    size_t png_len = 0;
    ck_assert_int_eq(ld_png_grid(x, 1, 28, 28, 1, 0, &png, &png_len, &e), LD_OK);
    char *b = tu_base64(png, png_len);
    free(png);
    ld_buf_t pb = {0};
    ld_buf_printf(&pb, "{\"png\":\"%s\"}", b);
    ck_assert_int_eq(post(&r, "/v1/models/vae/encode", pb.data), 200);
    float *pmu = jmatrix(tu_jget(r.json, "mu"), 1, 20);
    float q[784];
    for (int i = 0; i < 784; i++)
        q[i] = roundf(fminf(fmaxf(x[i], 0), 1) * 255.0f) / 255.0f;
    ck_assert_int_eq(ld_model_encode(m, 1, q, mu2, lv2, &e), LD_OK);
    for (int i = 0; i < 20; i++)
        ck_assert_msg(fabsf(pmu[i] - mu2[i]) < 1e-3f, "png mu[%d] %g vs %g", i, pmu[i], mu2[i]);
    free(pmu);
    tu_resp_free(&r);
    ld_buf_t pa = {0}; /* an array of PNGs */
    ld_buf_printf(&pa, "{\"png\":[\"%s\",\"%s\"]}", b, b);
    ck_assert_int_eq(post(&r, "/v1/models/vae/encode", pa.data), 200);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "mu")), 2);
    tu_resp_free(&r);
    ld_buf_free(&pa);

    /* decode: z from the sample gives its images back exactly */
    ld_buf_t zb = {0};
    float *z = jmatrix(tu_jget(s.json, "z"), 2, 20);
    ld_buf_puts(&zb, "{\"z\":");
    ld_buf_json_matrix(&zb, z, 2, 20);
    ld_buf_putc(&zb, '}');
    ck_assert_int_eq(post(&r, "/v1/models/vae/decode", zb.data), 200);
    float *y = jmatrix(tu_jget(r.json, "images"), 2, 784);
    ck_assert(memcmp(y, x, sizeof(float) * 2 * 784) == 0);
    free(y);
    tu_resp_free(&r);
    /* a flat z is one row; png and npy formats work */
    ld_buf_t fz = {0};
    ld_buf_puts(&fz, "{\"z\":");
    ld_buf_json_floats(&fz, z, 20);
    ld_buf_puts(&fz, ",\"format\":\"png\"}");
    ck_assert_int_eq(post(&r, "/v1/models/vae/decode", fz.data), 200);
    char ct[64];
    ck_assert_str_eq(tu_hdr(&r, "Content-Type", ct, sizeof ct), "image/png");
    tu_resp_free(&r);
    ld_buf_free(&fz);

    /* reconstruct = decode(encode(x).mu) */
    ck_assert_int_eq(post(&r, "/v1/models/vae/reconstruct", body.data), 200);
    float *rz = jmatrix(tu_jget(r.json, "z"), 2, 20);
    float *ry = jmatrix(tu_jget(r.json, "images"), 2, 784);
    float ly[2 * 784];
    ck_assert_int_eq(ld_model_decode(m, 2, mu, ly, &e), LD_OK);
    for (int i = 0; i < 2 * 784; i++)
        ck_assert_msg(fabsf(ry[i] - ly[i]) < 1e-4f, "reconstruct[%d] %g vs %g", i, ry[i], ly[i]);
    for (int i = 0; i < 40; i++)
        ck_assert(fabsf(rz[i] - mu[i]) < 1e-5f);
    free(rz);
    free(ry);
    tu_resp_free(&r);
    ld_buf_t rb = {0};
    ld_buf_printf(&rb, "{\"png\":\"%s\",\"format\":\"npy\"}", b);
    ck_assert_int_eq(post(&r, "/v1/models/vae/reconstruct", rb.data), 200);
    float *arr = NULL;
    int nd;
    int64_t shape[4];
    ck_assert_int_eq(ld_npy_decode(r.body.data, r.body.len, &arr, &nd, shape, &e), LD_OK);
    ck_assert(nd == 3 && shape[0] == 1);
    free(arr);
    tu_resp_free(&r);

    /* a GAN decodes, but has no encoder */
    ck_assert_int_eq(post(&r, "/v1/models/tgan/decode", "{\"z\":[[0,0,0,0],[1,1,1,1]]}"), 200);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "images")), 2);
    tu_resp_free(&r);
    ck_assert_int_eq(post(&r, "/v1/models/gan/encode", body.data), 422);
    expect_error(&r, 422, "no_encoder", "GAN has no encoder", "encode on a GAN");
    tu_resp_free(&r);
    ck_assert_int_eq(post(&r, "/v1/models/gan/reconstruct", body.data), 422);
    expect_error(&r, 422, "no_encoder", "GAN has no encoder", "reconstruct on a GAN");
    tu_resp_free(&r);

    ld_model_free(m);
    free(b);
    free(x);
    free(z);
    free(mu);
    free(lv);
    ld_buf_free(&body);
    ld_buf_free(&pb);
    ld_buf_free(&zb);
    ld_buf_free(&rb);
    tu_resp_free(&s);
}
END_TEST

START_TEST(test_interpolate)
{
    ld_model_t *m = load_model(D.models, "vae.safetensors");
    float za[20], zb[20];
    ld_model_draw_z(m, 1, 1.0f, 1, za);
    ld_model_draw_z(m, 2, 1.0f, 1, zb);
    for (int method = 0; method < 2; method++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"from\":{\"seed\":1},\"to\":{\"seed\":2},\"steps\":5,\"method\":\"%s\"}",
                 method ? "lerp" : "slerp");
        tu_resp_t r;
        ck_assert_int_eq(post(&r, "/v1/models/vae/interpolate", body), 200);
        ck_assert(tu_json_all_finite(r.json));
        float *z = jmatrix(tu_jget(r.json, "z"), 5, 20);
        float *x = jmatrix(tu_jget(r.json, "images"), 5, 784);
        double na = 0, nb = 0, nm = 0;
        for (int i = 0; i < 20; i++) {
            ck_assert(fabsf(z[i] - za[i]) < 1e-6f);
            ck_assert(fabsf(z[4 * 20 + i] - zb[i]) < 1e-6f);
            if (method == 1)
                ck_assert(fabsf(z[2 * 20 + i] - 0.5f * (za[i] + zb[i])) < 1e-5f);
            na += za[i] * za[i];
            nb += zb[i] * zb[i];
            nm += z[2 * 20 + i] * z[2 * 20 + i];
        }
        if (method == 0) /* slerp keeps the norm between the end points' */
            ck_assert(sqrt(nm) >= fmin(sqrt(na), sqrt(nb)) * 0.9);
        free(z);
        free(x);
        tu_resp_free(&r);
    }
    /* z and image end points; PNG is one strip */
    tu_resp_t r;
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"from\":{\"z\":");
    ld_buf_json_floats(&b, za, 20);
    ld_buf_puts(&b, "},\"to\":{\"image\":");
    float img[784];
    for (int i = 0; i < 784; i++)
        img[i] = (float)(i % 28) / 27.0f;
    ld_buf_json_floats(&b, img, 784);
    ld_buf_puts(&b, "},\"steps\":4,\"format\":\"png\"}");
    ck_assert_int_eq(post(&r, "/v1/models/vae/interpolate", b.data), 200);
    float *g = NULL;
    int h, w;
    ld_err_t e;
    ck_assert_int_eq(ld_png_decode(r.body.data, r.body.len, 1 << 20, &g, &h, &w, &e), LD_OK);
    ck_assert_int_eq(w, 4 * 30 + 2);
    ck_assert_int_eq(h, 30 + 2);
    free(g);
    tu_resp_free(&r);
    /* a GAN interpolates between seeds, but not between images */
    ck_assert_int_eq(post(&r, "/v1/models/gan/interpolate",
                          "{\"from\":{\"seed\":1},\"to\":{\"seed\":2,\"temperature\":0.5},\"steps\":3}"),
                     200);
    tu_resp_free(&r);
    ld_buf_t gb = {0};
    ld_buf_puts(&gb, "{\"from\":{\"seed\":3},\"to\":{\"image\":");
    ld_buf_json_floats(&gb, img, 784);
    ld_buf_puts(&gb, "}}");
    /* a GAN inverts an image end point (tests/check_invert.c checks the result) */
    ck_assert_int_eq(post(&r, "/v1/models/gan/interpolate", gb.data), 200);
    ld_buf_free(&gb);
    tu_resp_free(&r);
    ld_buf_free(&b);
    ld_model_free(m);
}
END_TEST

typedef struct {
    const char *method, *path, *ctype, *body;
    long status;
    const char *code, *msg;
} err_case_t;

/* Send c and check its error answer (r is the caller's to free). */
static void run_error_case(const err_case_t *c, tu_resp_t *r)
{
    opt_t o = {.ctype = c->ctype};
    char what[256];
    snprintf(what, sizeof what, "%s %s %s", c->method, c->path, c->body ? c->body : "");
    call(r, c->method, c->path, c->body, c->body ? strlen(c->body) : 0, &o);
    expect_error(r, c->status, c->code, c->msg, what);
}

START_TEST(test_error_classes)
{
    static const err_case_t cases[] = {
        /* 400: malformed JSON, wrong types, unknown or duplicate fields */
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":", 400, "invalid_json", "not valid JSON"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":1} trailing", 400, "invalid_json", "after"},
        {"POST", "/v1/models/vae/sample", NULL, "[1,2]", 400, "invalid_json", "object"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":\"4\"}", 400, "invalid_field", "n"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":1.5}", 400, "invalid_field", "n"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"N\":4}", 400, "invalid_field", "'N'"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":1,\"n\":2}", 400, "invalid_field", "twice"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"seed\":-1}", 422, "invalid_value", "seed"},
        {"POST", "/v1/models/vae/decode", NULL, "{\"z\":\"abc\"}", 400, "invalid_field", "z"},
        {"POST", "/v1/models/vae/decode", NULL, "{\"z\":[[1,\"x\"]]}", 400, "invalid_field", "z[0][1]"},
        {"POST", "/v1/models/vae/decode", NULL, "{}", 400, "invalid_field", "z"},
        {"POST", "/v1/models/vae/decode", NULL, "", 400, "bad_request", "empty"},
        {"POST", "/v1/models/vae/interpolate", NULL, "{\"from\":5,\"to\":{\"seed\":1}}", 400, "invalid_field", "from"},
        {"POST", "/v1/models/vae/interpolate", NULL, "{\"from\":{\"seed\":1,\"z\":[1]},\"to\":{\"seed\":1}}", 400, "invalid_field", "exactly one"},
        {"GET", "/v1/models/vae/sample.png?n=abc", NULL, NULL, 400, "invalid_field", "query parameter n must be an integer, got 'abc'"},
        {"GET", "/v1/models/vae/sample.png?temperature=hot", NULL, NULL, 400, "invalid_field", "query parameter temperature must be a number, got 'hot'"},
        {"GET", "/v1/models/vae/sample.png?bogus=1", NULL, NULL, 400, "invalid_field", "bogus"},
        /* 404 */
        {"GET", "/v1/models/nope", NULL, NULL, 404, "model_not_found", "nope"},
        {"POST", "/v1/models/nope/sample", NULL, "{}", 404, "model_not_found", "nope"},
        {"GET", "/v2/whatever", NULL, NULL, 404, "not_found", "/v2/whatever"},
        {"GET", "/v1/models/vae/sample/extra", NULL, NULL, 404, "not_found", NULL},
        /* 405 */
        {"GET", "/v1/models/vae/sample", NULL, NULL, 405, "method_not_allowed", "POST"},
        {"PATCH", "/v1/models/vae", NULL, NULL, 405, "method_not_allowed", "PATCH"},
        {"POST", "/healthz", NULL, "{}", 405, "method_not_allowed", NULL},
        /* 415 */
        {"POST", "/v1/models/vae/sample", "text/plain", "{\"n\":1}", 415, "unsupported_media_type", "application/json"},
        {"POST", "/v1/models/vae/sample", "application/jsonx", "{\"n\":1}", 415, "unsupported_media_type", NULL},
        /* 422: well-formed but impossible */
        {"POST", "/v1/models/vae/decode", NULL, "{\"z\":[[1,2,3]]}", 422, "invalid_value", "expected 20"},
        {"POST", "/v1/models/vae/decode", NULL, "{\"z\":[]}", 422, "invalid_value", "empty"},
        {"POST", "/v1/models/vae/decode", NULL, "{\"z\":[[1e999,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]}", 422, "invalid_value", "finite"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":65}", 422, "invalid_value", "n = 65"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":0}", 422, "invalid_value", "n"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"temperature\":-1}", 422, "invalid_value", "temperature"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"temperature\":1e999}", 422, "invalid_value", "finite"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"format\":\"gif\"}", 422, "invalid_value", "format"},
        {"POST", "/v1/models/vae/interpolate", NULL, "{\"from\":{\"seed\":1},\"to\":{\"seed\":2},\"steps\":1}", 422, "invalid_value", "steps"},
        {"POST", "/v1/models/vae/interpolate", NULL, "{\"from\":{\"seed\":1},\"to\":{\"seed\":2},\"steps\":1000}", 422, "invalid_value", "steps"},
        {"POST", "/v1/models/vae/interpolate", NULL, "{\"from\":{\"seed\":1},\"to\":{\"seed\":2},\"method\":\"cubic\"}", 422, "invalid_value", "method"},
        {"POST", "/v1/models/vae/encode", NULL, "{\"images\":[[2]]}", 422, "invalid_value", "expected 784"},
        {"POST", "/v1/models/vae/encode", NULL, "{\"png\":\"!!!notbase64\"}", 422, "invalid_value", "png"},
        {"POST", "/v1/models/vae/encode", NULL, "{\"png\":\"aGVsbG8=\"}", 422, "invalid_value", "png"},
        {"POST", "/v1/models/cls/sample", NULL, "{}", 422, "unsupported", "classifier"},
        {"GET", "/v1/models/vae/sample.png?n=100000", NULL, NULL, 422, "invalid_value", "n"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        const err_case_t *c = &cases[i];
        tu_resp_t r;
        run_error_case(c, &r);
        if (c->status == 405) {
            char allow[128];
            ck_assert_msg(tu_hdr(&r, "Allow", allow, sizeof allow) != NULL, "%s %s: no Allow",
                          c->method, c->path);
        }
        tu_resp_free(&r);
    }
    /* an image value outside [0, 1] names the position */
    ld_buf_t b = {0};
    float img[784] = {0};
    img[17] = 1.5f;
    ld_buf_puts(&b, "{\"images\":[");
    ld_buf_json_floats(&b, img, 784);
    ld_buf_puts(&b, "]}");
    tu_resp_t r;
    post(&r, "/v1/models/vae/encode", b.data);
    expect_error(&r, 422, "invalid_value", "images[0][17]", "pixel out of range");
    tu_resp_free(&r);
    ld_buf_free(&b);
}
END_TEST

/* .npy bytes of x with shape (ndim) and a header dict of our choosing (dict
 * NULL: numpy's own for '<f4'). */
static uint8_t *npy_bytes(const float *x, int ndim, const int64_t *shape, const char *dict,
                          size_t *len)
{
    uint8_t *out = NULL;
    ld_err_t e;
    ck_assert_msg(ld_npy_encode(x, ndim, shape, &out, len, &e) == LD_OK, "%s", e.msg);
    if (dict) { /* same header length: pad the new dict with spaces */
        size_t hl = (size_t)out[8] | (size_t)out[9] << 8;
        ck_assert_uint_lt(strlen(dict), hl);
        memset(out + 10, ' ', hl - 1);
        memcpy(out + 10, dict, strlen(dict));
    }
    return out;
}

static long post_npy(tu_resp_t *r, const char *path, const void *body, size_t len)
{
    opt_t o = {.ctype = "application/x-npy"};
    return call(r, "POST", path, body, len, &o);
}

/* decode, encode and reconstruct take application/x-npy bodies: the same
 * rows give the same bytes as JSON, options come from the query string, and
 * every malformed body gets a clear 4xx. */
START_TEST(test_npy_request_bodies)
{
    /* latents (3, 20) from a seeded sample, and the JSON decode of them */
    tu_resp_t s, js;
    ck_assert_int_eq(post(&s, "/v1/models/vae/sample", "{\"n\":3,\"seed\":8}"), 200);
    float *z = jmatrix(tu_jget(s.json, "z"), 3, 20);
    ld_buf_t body = {0};
    ld_buf_puts(&body, "{\"format\":\"npy\",\"z\":");
    ld_buf_json_matrix(&body, z, 3, 20);
    ld_buf_putc(&body, '}');
    ck_assert_int_eq(post(&js, "/v1/models/vae/decode", body.data), 200);
    ld_buf_free(&body);

    /* npy in, npy out (the default for an npy body): the same bytes */
    size_t len;
    int64_t zshape[2] = {3, 20};
    uint8_t *zn = npy_bytes(z, 2, zshape, NULL, &len);
    tu_resp_t r;
    ck_assert_int_eq(post_npy(&r, "/v1/models/vae/decode", zn, len), 200);
    char ct[128];
    ck_assert_str_eq(tu_hdr(&r, "Content-Type", ct, sizeof ct), "application/octet-stream");
    ck_assert_msg(r.body.len == js.body.len && memcmp(r.body.data, js.body.data, r.body.len) == 0,
                  "npy-in decode differs from JSON-in decode (%zu vs %zu bytes)", r.body.len,
                  js.body.len);
    tu_resp_free(&r);
    /* options in the query string: a PNG strip */
    ck_assert_int_eq(post_npy(&r, "/v1/models/vae/decode?format=png&cols=3&pad=0", zn, len), 200);
    ck_assert_str_eq(tu_hdr(&r, "Content-Type", ct, sizeof ct), "image/png");
    float *g = NULL;
    int h = 0, w = 0;
    ld_err_t e;
    ck_assert(ld_png_decode(r.body.data, r.body.len, 1 << 20, &g, &h, &w, &e) == LD_OK);
    ck_assert(w == 84 && h == 28);
    free(g);
    tu_resp_free(&r);

    /* the decoded images back through encode and reconstruct, as (n, 28, 28) */
    float *x = NULL;
    int nd;
    int64_t sh[4];
    ck_assert(ld_npy_decode(js.body.data, js.body.len, &x, &nd, sh, &e) == LD_OK);
    ck_assert(nd == 3 && sh[0] == 3);
    int64_t xshape[3] = {3, 28, 28}, flat[2] = {3, 784};
    size_t xlen, flen;
    uint8_t *xn = npy_bytes(x, 3, xshape, NULL, &xlen);
    uint8_t *xf = npy_bytes(x, 2, flat, NULL, &flen);
    ld_buf_t jb = {0};
    ld_buf_puts(&jb, "{\"images\":");
    ld_buf_json_matrix(&jb, x, 3, 784);
    ld_buf_putc(&jb, '}');
    tu_resp_t je, ne, nf;
    ck_assert_int_eq(post(&je, "/v1/models/vae/encode", jb.data), 200);
    ck_assert_int_eq(post_npy(&ne, "/v1/models/vae/encode?format=json", xn, xlen), 200);
    ck_assert_int_eq(post_npy(&nf, "/v1/models/vae/encode", xf, flen), 200);
    ck_assert_msg(ne.body.len == je.body.len && memcmp(ne.body.data, je.body.data, je.body.len) == 0,
                  "encode: npy body answers differently from the JSON body");
    float *mu = jmatrix(tu_jget(je.json, "mu"), 3, 20), *lv = jmatrix(tu_jget(je.json, "logvar"), 3, 20);
    float *both = NULL;
    ck_assert(ld_npy_decode(nf.body.data, nf.body.len, &both, &nd, sh, &e) == LD_OK);
    ck_assert(nd == 3 && sh[0] == 2 && sh[1] == 3 && sh[2] == 20);
    for (int i = 0; i < 60; i++)
        ck_assert_msg(both[i] == mu[i] && both[60 + i] == lv[i], "encode npy[%d]", i);
    free(both);
    free(mu);
    free(lv);
    tu_resp_free(&je);
    tu_resp_free(&ne);
    tu_resp_free(&nf);
    ld_buf_free(&jb);
    tu_resp_t jr, nr;
    ck_assert_int_eq(post(&jr, "/v1/models/vae/reconstruct",
                          "{\"format\":\"npy\",\"images\":[[0.5]]}"), 422); /* wrong length */
    tu_resp_free(&jr);
    ld_buf_puts(&jb, "{\"format\":\"npy\",\"images\":");
    ld_buf_json_matrix(&jb, x, 3, 784);
    ld_buf_putc(&jb, '}');
    ck_assert_int_eq(post(&jr, "/v1/models/vae/reconstruct", jb.data), 200);
    ck_assert_int_eq(post_npy(&nr, "/v1/models/vae/reconstruct", xn, xlen), 200);
    ck_assert_msg(nr.body.len == jr.body.len && memcmp(nr.body.data, jr.body.data, jr.body.len) == 0,
                  "reconstruct: npy body answers differently from the JSON body");
    tu_resp_free(&jr);
    tu_resp_free(&nr);
    ld_buf_free(&jb);

    /* what must be refused, and how */
    float nan_z[20] = {0};
    nan_z[7] = NAN;
    float bad_px[784] = {0};
    bad_px[5] = 2.0f;
    int64_t one[2] = {1, 20}, wide[2] = {1, 21}, three[3] = {1, 4, 5}, vec[1] = {20},
            zero[2] = {0, 20}, many[2] = {65, 20}, img1[2] = {1, 784};
    float *big = calloc(65 * 20, sizeof *big);
    static const char f8[] = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 20), }",
                      be[] = "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 20), }",
                      fo[] = "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 20), }",
                      nofo[] = "{'descr': '<f4', 'shape': (1, 20), }",
                      two[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 20), }";
    const struct {
        const char *path;
        const float *x;
        int ndim;
        const int64_t *shape;
        const char *dict;
        long status;
        const char *code, *msg;
    } bad[] = {
        {"/v1/models/vae/decode", nan_z, 2, one, NULL, 422, "invalid_value", "z[0][7] is not finite"},
        {"/v1/models/vae/decode", big, 2, wide, NULL, 422, "invalid_value", "shape (1, 21); expected (n, 20)"},
        {"/v1/models/vae/decode", z, 3, three, NULL, 422, "invalid_value", "shape (1, 4, 5)"},
        {"/v1/models/vae/decode", z, 1, vec, NULL, 422, "invalid_value", "shape (20,)"},
        {"/v1/models/vae/decode", z, 2, zero, NULL, 422, "invalid_value", "0 rows"},
        {"/v1/models/vae/decode", big, 2, many, NULL, 422, "invalid_value", "65 rows"},
        {"/v1/models/vae/decode", z, 2, one, f8, 422, "invalid_value", "dtype '<f8'"},
        {"/v1/models/vae/decode", z, 2, one, be, 422, "invalid_value", "dtype '>f4'"},
        {"/v1/models/vae/decode", z, 2, one, fo, 422, "invalid_value", "fortran_order"},
        {"/v1/models/vae/decode", z, 2, one, nofo, 400, "invalid_npy", "header"},
        {"/v1/models/vae/decode", z, 2, one, two, 400, "invalid_npy", "expected 160 bytes"},
        {"/v1/models/vae/decode?format=gif", z, 2, one, NULL, 422, "invalid_value", "format"},
        {"/v1/models/vae/decode?z=1", z, 2, one, NULL, 400, "invalid_field", "unknown query parameter 'z'"},
        {"/v1/models/vae/decode?cols=2&cols=3", z, 2, one, NULL, 400, "invalid_field", "twice"},
        {"/v1/models/vae/decode?cols=02", z, 2, one, NULL, 400, "invalid_field", "cols"},
        {"/v1/models/vae/encode", bad_px, 2, img1, NULL, 422, "invalid_value", "images[0][5] = 2 is outside [0, 1]"},
        {"/v1/models/vae/encode", z, 2, one, NULL, 422, "invalid_value", "expected (n, 784) or (n, 28, 28)"},
        {"/v1/models/gan/encode", bad_px, 2, img1, NULL, 422, "no_encoder", "GAN"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        char what[160];
        snprintf(what, sizeof what, "npy case %zu: %s", i, bad[i].path);
        size_t blen;
        uint8_t *bb = npy_bytes(bad[i].x, bad[i].ndim, bad[i].shape, bad[i].dict, &blen);
        post_npy(&r, bad[i].path, bb, blen);
        expect_error(&r, bad[i].status, bad[i].code, bad[i].msg, what);
        tu_resp_free(&r);
        free(bb);
    }
    /* not an npy file at all, and an npy body where none is taken */
    post_npy(&r, "/v1/models/vae/decode", "{\"z\":[[0]]}", 10);
    expect_error(&r, 400, "invalid_npy", "magic", "JSON sent as npy");
    tu_resp_free(&r);
    post_npy(&r, "/v1/models/vae/sample", zn, len);
    expect_error(&r, 415, "unsupported_media_type", "application/json", "npy to sample");
    tu_resp_free(&r);
    free(big);
    free(zn);
    free(xn);
    free(xf);
    free(x);
    free(z);
    tu_resp_free(&s);
    tu_resp_free(&js);
}
END_TEST

/* One rule set for arguments, wherever they come from (issue 18 items 5 and
 * 8): NUL inside a string is refused by name, never truncated; numbers
 * follow JSON's grammar in bodies and query strings alike; a name given
 * twice is refused in both; a blank body is no body; a route refuses query
 * parameters it does not take; seeds have one range and one message. */
START_TEST(test_argument_rules)
{
    static const err_case_t cases[] = {
        {"POST", "/v1/models/vae/sample", NULL, "{\"format\":\"png\\u0000x\"}", 422, "invalid_value", "format contains a NUL character"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\\u0000\":1}", 422, "invalid_value", "field name contains a NUL"},
        {"POST", "/v1/models/vae/encode", NULL, "{\"png\":[\"aGVsbG8=\\u0000\"]}", 422, "invalid_value", "png[0] contains a NUL"},
        {"POST", "/v1/models/vae/interpolate", NULL, "{\"from\":{\"png\":\"a\\u0000\"},\"to\":{\"seed\":1}}", 422, "invalid_value", "png contains a NUL"},
        /* an escaped backslash before u0000 is text, not NUL */
        {"POST", "/v1/models/vae/sample", NULL, "{\"format\":\"\\\\u0000\"}", 422, "invalid_value", "got '\\u0000'"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":01}", 400, "invalid_json", "at byte 5"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"n\":-0}", 422, "invalid_value", "n = -0 is out of range"},
        {"POST", "/v1/models/vae/sample", NULL, "{\"temperature\":1.}", 400, "invalid_json", NULL},
        {"POST", "/v1/models/vae/sample", NULL, "{\"temperature\":.5}", 400, "invalid_json", NULL},
        {"POST", "/v1/models/vae/decode", NULL, "{\"z\":[[00.5]]}", 400, "invalid_json", NULL},
        {"POST", "/v1/models/vae/sample", NULL, "{\"seed\":9007199254740992}", 422, "invalid_value", "seed = 9007199254740992 is out of range [0, 9007199254740991]"},
        {"GET", "/v1/models/vae/sample.png?seed=9007199254740992", NULL, NULL, 422, "invalid_value", "seed = 9007199254740992 is out of range [0, 9007199254740991]"},
        {"GET", "/v1/models/vae/sample.png?n=4&n=5", NULL, NULL, 400, "invalid_field", "query parameter 'n' is given twice"},
        {"GET", "/v1/models/vae/sample.png?temperature=0x10", NULL, NULL, 400, "invalid_field", "temperature must be a number"},
        {"GET", "/v1/models/vae/sample.png?n=01", NULL, NULL, 400, "invalid_field", "n must be an integer"},
        {"GET", "/v1/models/vae/sample.png?n=%2B4", NULL, NULL, 400, "invalid_field", "n must be an integer"},
        {"GET", "/v1/models/vae/sample.png?n=%204", NULL, NULL, 400, "invalid_field", "n must be an integer"},
        {"GET", "/v1/models/vae/sample.png?temperature=nan", NULL, NULL, 400, "invalid_field", "temperature must be a number"},
        {"GET", "/v1/models/vae/sample.png?temperature=1e999", NULL, NULL, 422, "invalid_value", "finite"},
        {"GET", "/v1/models/vae/sample.png?n", NULL, NULL, 400, "invalid_field", "has no value"},
        {"GET", "/v1/models/vae/sample.png?n=", NULL, NULL, 400, "invalid_field", "has no value"},
        {"POST", "/v1/models/vae/sample?n=4", NULL, "{}", 400, "invalid_field", "unknown query parameter 'n'"},
        {"POST", "/v1/models/vae/decode?format=png", NULL, "{\"z\":[0]}", 400, "invalid_field", "unknown query parameter 'format'"},
        {"GET", "/v1/models?limit=1", NULL, NULL, 400, "invalid_field", "unknown query parameter 'limit'"},
        {"GET", "/v1/models/vae?x=1", NULL, NULL, 400, "invalid_field", "unknown query parameter 'x'"},
        {"POST", "/v1/models/vae/decode", NULL, " \r\n\t", 400, "invalid_field", "z is required"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        tu_resp_t r;
        run_error_case(&cases[i], &r);
        tu_resp_free(&r);
    }
    /* what is fine: a blank body is the empty one, integers may be written
     * 4.0 or 1e3, and a NUL-free PUT works while one with NUL is refused */
    tu_resp_t r;
    ck_assert_int_eq(post(&r, "/v1/models/tvae/sample", " \n"), 200);
    ck_assert_int_eq(cJSON_GetArrayItem(tu_jget(r.json, "shape"), 0)->valueint, 1);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&r, "/v1/models/tvae/sample.png?n=4.0&seed=1e3"), 200);
    char sv[32];
    ck_assert_str_eq(tu_hdr(&r, "X-Latentd-Seed", sv, sizeof sv), "1000");
    tu_resp_free(&r);
    opt_t adm = {.token = ADMIN};
    static const char nul_file[] = "{\"file\":\"tvae.safetensors\\u0000.txt\"}";
    call(&r, "PUT", "/v1/models/nulcheck", nul_file, strlen(nul_file), &adm);
    expect_error(&r, 422, "invalid_value", "file contains a NUL character", "PUT with NUL");
    tu_resp_free(&r);
    ck_assert_int_eq(get(&r, "/v1/models/nulcheck"), 404);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_body_caps)
{
    /* 413 from Content-Length, before the body is read */
    size_t n = MAX_BODY + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    tu_resp_t r;
    call(&r, "POST", "/v1/models/vae/decode", big, n, NULL);
    expect_error(&r, 413, "payload_too_large", "max_body_bytes", "Content-Length over the cap");
    tu_resp_free(&r);
    /* 413 for a chunked body once it passes the cap */
    opt_t chunked = {.extra = "Transfer-Encoding: chunked"};
    call(&r, "POST", "/v1/models/vae/decode", big, n, &chunked);
    expect_error(&r, 413, "payload_too_large", "max_body_bytes", "chunked body over the cap");
    tu_resp_free(&r);
    free(big);
    /* a body at the cap that is a dense array of values: its parse tree would
     * not fit the memory budget */
    /* (BODY_MEM / 80 values is about 52k; a 256 KiB body of "0," holds 131k) */
    n = MAX_BODY;
    big = malloc(n + 1);
    size_t k = 0;
    k += (size_t)sprintf(big, "{\"z\":[");
    while (k + 4 < n) {
        big[k++] = '0';
        big[k++] = ',';
    }
    big[k++] = '0';
    big[k++] = ']';
    big[k++] = '}';
    call(&r, "POST", "/v1/models/vae/decode", big, k, NULL);
    expect_error(&r, 413, "payload_too_large", "too many values", "dense JSON body");
    tu_resp_free(&r);
    free(big);
    /* still serving */
    ck_assert_int_eq(post(&r, "/v1/models/tvae/sample", "{}"), 200);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_overload_503)
{
    /* fill the body budget with uploads that never finish, then one more */
    enum { HOLD = BODY_MEM / MAX_BODY };
    int fds[HOLD];
    tu_hold_bodies(&D, "/v1/models/vae/decode", TOKEN, MAX_BODY, HOLD, fds);
    tu_resp_t r;
    post(&r, "/v1/models/vae/decode", "{\"z\":[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]}");
    expect_error(&r, 503, "overloaded", "retry", "body budget exhausted");
    char ra[16];
    ck_assert_ptr_nonnull(tu_hdr(&r, "Retry-After", ra, sizeof ra));
    tu_resp_free(&r);
    /* requests without a body still work */
    ck_assert_int_eq(get(&r, "/v1/models/vae"), 200);
    tu_resp_free(&r);
    tu_release_bodies(&D, TOKEN, HOLD, fds);
    ck_assert_int_eq(post(&r, "/v1/models/vae/decode",
                          "{\"z\":[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]}"),
                     200);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_auth)
{
    tu_resp_t r;
    opt_t none = {.token = ""}, wrong = {.token = "wrong-token-wrong-token-wrong"},
          admin = {.token = ADMIN}, basic = {.token = "", .extra = "Authorization: Basic dXNlcjpwYXNz"};
    char www[256];
    call(&r, "GET", "/v1/models", NULL, 0, &none);
    expect_error(&r, 401, "unauthorized", "Bearer", "no token");
    ck_assert_ptr_nonnull(tu_hdr(&r, "WWW-Authenticate", www, sizeof www));
    ck_assert(strncmp(www, "Bearer", 6) == 0);
    tu_resp_free(&r);
    call(&r, "POST", "/v1/models/vae/sample", "{}", 2, &wrong);
    expect_error(&r, 401, "unauthorized", "not valid", "wrong token");
    ck_assert_ptr_nonnull(tu_hdr(&r, "WWW-Authenticate", www, sizeof www));
    ck_assert(strstr(www, "invalid_token"));
    tu_resp_free(&r);
    call(&r, "GET", "/metrics", NULL, 0, &basic);
    expect_error(&r, 401, "unauthorized", "Bearer", "basic auth");
    tu_resp_free(&r);
    /* the admin token also works for inference */
    ck_assert_int_eq(call(&r, "POST", "/v1/models/tvae/sample", "{}", 2, &admin), 200);
    tu_resp_free(&r);
    /* admin routes: inference token is not enough */
    call(&r, "PUT", "/v1/models/tvae", NULL, 0, NULL);
    expect_error(&r, 403, "forbidden", "admin", "inference token on an admin route");
    tu_resp_free(&r);
    call(&r, "DELETE", "/v1/models/tvae", NULL, 0, &none);
    expect_error(&r, 401, "unauthorized", NULL, "no token on an admin route");
    tu_resp_free(&r);
    call(&r, "DELETE", "/v1/models/tvae", NULL, 0, &wrong);
    expect_error(&r, 401, "unauthorized", NULL, "wrong token on an admin route");
    tu_resp_free(&r);
    /* health stays open */
    ck_assert_int_eq(call(&r, "GET", "/readyz", NULL, 0, &wrong), 200);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_cors)
{
    tu_resp_t r;
    char v[256];
    opt_t ok = {.origin = ORIGIN}, other = {.origin = "https://evil.example"};
    ck_assert_int_eq(call(&r, "GET", "/v1/models/vae", NULL, 0, &ok), 200);
    ck_assert_str_eq(tu_hdr(&r, "Access-Control-Allow-Origin", v, sizeof v), ORIGIN);
    /* one Vary line per reason: a large JSON answer also varies on Accept-Encoding */
    ck_assert_msg(strstr(r.hdrs.data, "\r\nVary: Origin\r\n") != NULL, "%s", r.hdrs.data);
    tu_resp_free(&r);
    ck_assert_int_eq(call(&r, "GET", "/v1/models/vae", NULL, 0, &other), 200);
    ck_assert_ptr_null(tu_hdr(&r, "Access-Control-Allow-Origin", v, sizeof v));
    tu_resp_free(&r);
    /* errors carry CORS headers too, so a page can read them */
    call(&r, "GET", "/v1/models/nope", NULL, 0, &ok);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(tu_hdr(&r, "Access-Control-Allow-Origin", v, sizeof v), ORIGIN);
    tu_resp_free(&r);
    /* preflight: no token needed */
    opt_t pre = {.token = "", .origin = ORIGIN, .extra = "Access-Control-Request-Method: POST"};
    ck_assert_int_eq(call(&r, "OPTIONS", "/v1/models/vae/sample", NULL, 0, &pre), 204);
    ck_assert_str_eq(tu_hdr(&r, "Access-Control-Allow-Origin", v, sizeof v), ORIGIN);
    ck_assert(strstr(tu_hdr(&r, "Access-Control-Allow-Methods", v, sizeof v), "POST"));
    ck_assert(strstr(tu_hdr(&r, "Access-Control-Allow-Headers", v, sizeof v), "Authorization"));
    ck_assert(strstr(tu_hdr(&r, "Allow", v, sizeof v), "POST"));
    tu_resp_free(&r);
    opt_t pre_bad = {.token = "", .origin = "https://evil.example",
                     .extra = "Access-Control-Request-Method: POST"};
    ck_assert_int_eq(call(&r, "OPTIONS", "/v1/models/vae/sample", NULL, 0, &pre_bad), 204);
    ck_assert_ptr_null(tu_hdr(&r, "Access-Control-Allow-Origin", v, sizeof v));
    ck_assert_ptr_null(tu_hdr(&r, "Access-Control-Allow-Methods", v, sizeof v));
    tu_resp_free(&r);
    opt_t pre_none = {.token = "", .origin = ORIGIN};
    ck_assert_int_eq(call(&r, "OPTIONS", "/nowhere", NULL, 0, &pre_none), 404);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_model_management)
{
    tu_resp_t r;
    opt_t admin = {.token = ADMIN};
    /* load a file under a new name */
    const char *put = "{\"file\":\"alt-a.safetensors\"}";
    ck_assert_int_eq(call(&r, "PUT", "/v1/models/hot", put, strlen(put), &admin), 201);
    ck_assert(cJSON_IsFalse(tu_jget(r.json, "replaced")));
    const cJSON *m = tu_jget(r.json, "model");
    ck_assert_str_eq(tu_jget(m, "name")->valuestring, "hot");
    ck_assert_str_eq(tu_jget(m, "file")->valuestring, "alt-a.safetensors");
    char sha_a[65];
    snprintf(sha_a, sizeof sha_a, "%s", tu_jget(m, "sha256")->valuestring);
    double v1 = tu_jget(m, "version")->valuedouble;
    tu_resp_free(&r);
    /* replace it */
    put = "{\"file\":\"alt-b.safetensors\"}";
    ck_assert_int_eq(call(&r, "PUT", "/v1/models/hot", put, strlen(put), &admin), 200);
    ck_assert(cJSON_IsTrue(tu_jget(r.json, "replaced")));
    m = tu_jget(r.json, "model");
    ck_assert_str_ne(tu_jget(m, "sha256")->valuestring, sha_a);
    ck_assert(tu_jget(m, "version")->valuedouble > v1);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&r, "/v1/models/hot"), 200);
    ck_assert_str_eq(tu_jget(r.json, "file")->valuestring, "alt-b.safetensors");
    tu_resp_free(&r);
    /* no body: NAME.safetensors */
    ck_assert_int_eq(call(&r, "PUT", "/v1/models/tvae", NULL, 0, &admin), 200);
    tu_resp_free(&r);
    /* refusals */
    const struct {
        const char *path, *body;
        long status;
        const char *code, *msg;
    } bad[] = {
        {"/v1/models/hot", "{\"file\":\"../vae.safetensors\"}", 422, "invalid_value", "inside the model folder"},
        {"/v1/models/hot", "{\"file\":\"/etc/passwd\"}", 422, "invalid_value", "file"},
        {"/v1/models/hot", "{\"file\":\"vae.bin\"}", 422, "invalid_value", "file"},
        {"/v1/models/hot", "{\"file\":\"missing.safetensors\"}", 422, "file_not_found", "missing.safetensors"},
        {"/v1/models/hot", "{\"file\":\"broken.safetensors\"}", 422, "bad_checkpoint", "broken.safetensors"},
        {"/v1/models/hot", "{\"file\":\"poisoned.safetensors\"}", 422, "bad_checkpoint", "finite"},
        {"/v1/models/hot", "{\"file\":7}", 400, "invalid_field", "file"},
        {"/v1/models/hot", "{\"path\":\"x\"}", 400, "invalid_field", "path"},
        {"/v1/models/.hidden", NULL, 400, "invalid_name", "must match"},
        {"/v1/models/newname", NULL, 422, "file_not_found", "newname.safetensors"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        call(&r, "PUT", bad[i].path, bad[i].body, bad[i].body ? strlen(bad[i].body) : 0, &admin);
        char what[256];
        snprintf(what, sizeof what, "PUT %s %s", bad[i].path, bad[i].body ? bad[i].body : "");
        expect_error(&r, bad[i].status, bad[i].code, bad[i].msg, what);
        tu_resp_free(&r);
    }
    /* a failed replace leaves the old version serving */
    ck_assert_int_eq(get(&r, "/v1/models/hot"), 200);
    ck_assert_str_eq(tu_jget(r.json, "file")->valuestring, "alt-b.safetensors");
    tu_resp_free(&r);
    /* unload */
    ck_assert_int_eq(call(&r, "DELETE", "/v1/models/hot", NULL, 0, &admin), 200);
    tu_resp_free(&r);
    call(&r, "GET", "/v1/models/hot", NULL, 0, NULL);
    expect_error(&r, 404, "model_not_found", "hot", "after DELETE");
    tu_resp_free(&r);
    call(&r, "DELETE", "/v1/models/hot", NULL, 0, &admin);
    expect_error(&r, 404, "model_not_found", "hot", "DELETE twice");
    tu_resp_free(&r);
    char *log = tu_read_text(D.log);
    ck_assert(strstr(log, "model replaced name=hot"));
    ck_assert(strstr(log, "model unloaded name=hot"));
    free(log);
}
END_TEST

START_TEST(test_reload_under_load)
{
    opt_t admin = {.token = ADMIN};
    tu_resp_t r;
    const char *first = "{\"file\":\"alt-a.safetensors\"}";
    ck_assert_int_eq(call(&r, "PUT", "/v1/models/live", first, strlen(first), &admin), 201);
    tu_resp_free(&r);
    atomic_int stop = 0;
    enum { T = 4 };
    pthread_t th[T];
    tu_sampler_t args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (tu_sampler_t){.port = D.port, .path = "/v1/models/live/sample",
                                 .token = TOKEN, .n = 2, .stop = &stop};
        pthread_create(&th[i], NULL, tu_sampler_run, &args[i]);
    }
    int swaps = 0;
    double until = tu_now() + 1.5;
    while (tu_now() < until || swaps < 10) {
        const char *body = swaps % 2 ? "{\"file\":\"alt-a.safetensors\"}" : "{\"file\":\"alt-b.safetensors\"}";
        ck_assert_int_eq(call(&r, "PUT", "/v1/models/live", body, strlen(body), &admin), 200);
        tu_resp_free(&r);
        swaps++;
    }
    atomic_store(&stop, 1);
    int ok = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(args[i].bad == 0, "thread %d: %d non-2xx (last %ld: %s)", i, args[i].bad,
                      args[i].last_bad, args[i].bad_body);
        ok += args[i].ok;
    }
    ck_assert_msg(ok > 20, "only %d samples during the reloads", ok);
    ck_assert_int_eq(call(&r, "DELETE", "/v1/models/live", NULL, 0, &admin), 200);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_malformed_burst_then_good)
{
    static const char *const junk[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
        "POST /v1/models/vae/sample HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "POST /v1/models/vae/sample HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /v1/models/vae/sample HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
        "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"n\":",
        "POST /v1/models/vae/sample HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
        "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n",
        "\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        "GET /%00%ff%2e%2e/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /v1/models/..%2f..%2fetc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n\r\n",
    };
    for (int round = 0; round < 3; round++) {
        int held = -1;
        for (size_t i = 0; i < LD_ARRAY_LEN(junk); i++) {
            int fd = tu_tcp_connect(1, D.port, 1);
            ck_assert_int_ge(fd, 0);
            tu_send_all(fd, junk[i], i == 7 ? 10 : strlen(junk[i]));
            ld_buf_t b = {0};
            /* 0, 5 and 7 get no answer (unparsable, or an unfinished upload):
             * do not wait for the server's idle timeout on them */
            if (i != 0 && i != 5 && i != 7) {
                shutdown(fd, SHUT_WR);
                int st = tu_read_response(fd, &b);
                ck_assert_msg(st >= 400 && st < 600, "junk %zu answered %d", i, st);
            }
            ld_buf_free(&b);
            if (i == 5)
                held = fd; /* closed later: data and FIN in one burst can hide the
                            * FIN from MHD's edge-triggered epoll until its timeout */
            else
                close(fd);
        }
        /* a header bigger than the connection's memory */
        int fd = tu_tcp_connect(1, D.port, 1);
        ld_buf_t h = {0};
        ld_buf_puts(&h, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
        for (int i = 0; i < 100000; i++)
            ld_buf_putc(&h, 'a');
        ld_buf_puts(&h, "\r\n\r\n");
        tu_send_all(fd, h.data, h.len);
        ld_buf_t b = {0};
        int st = tu_read_response(fd, &b);
        ck_assert_msg(st == -1 || st >= 400, "huge header answered %d", st);
        ld_buf_free(&b);
        ld_buf_free(&h);
        close(fd);
        close(held);
        /* JSON bombs */
        ld_buf_t deep = {0};
        for (int i = 0; i < 5000; i++)
            ld_buf_putc(&deep, '[');
        tu_resp_t r;
        post(&r, "/v1/models/vae/decode", deep.data);
        ck_assert_int_eq(r.status, 400);
        tu_resp_free(&r);
        ld_buf_free(&deep);
        post(&r, "/v1/models/vae/decode", "{\"z\":[[\"\\ud800\"]]}");
        ck_assert_int_eq(r.status, 400);
        tu_resp_free(&r);
    }
    tu_resp_t r;
    ck_assert_int_eq(post(&r, "/v1/models/vae/sample", "{\"n\":2,\"seed\":1}"), 200);
    ck_assert(tu_json_all_finite(r.json));
    tu_resp_free(&r);
    ck_assert_int_eq(call(&r, "GET", "/readyz", NULL, 0, NULL), 200);
    tu_resp_free(&r);
}
END_TEST

START_TEST(test_metrics_and_logs)
{
    tu_resp_t r;
    ck_assert_int_eq(post(&r, "/v1/models/tvae/sample", "{\"n\":3}"), 200);
    tu_resp_free(&r);
    ck_assert_int_eq(get(&r, "/metrics"), 200);
    char ct[128];
    ck_assert(strncmp(tu_hdr(&r, "Content-Type", ct, sizeof ct), "text/plain; version=0.0.4", 25) == 0);
    const char *t = r.body.data;
    ck_assert(strstr(t, "latentd_http_requests_total{route=\"/v1/models/{name}/sample\",code=\"200\"}"));
    ck_assert(strstr(t, "latentd_http_request_duration_seconds_bucket{route=\"/v1/models/{name}/sample\",le=\"+Inf\"}"));
    ck_assert(strstr(t, "latentd_models_loaded "));
    ck_assert(strstr(t, "latentd_samples_generated_total "));
    ck_assert(strstr(t, "latentd_http_response_bytes_total{route=\"/v1/models/{name}/sample\"}"));
    ck_assert(strstr(t, "process_resident_memory_bytes "));
    /* promtool comes with `make deps` (package prometheus): no silent skip */
    tu_promtool_check(&D, r.body.data, r.body.len);
    tu_resp_free(&r);
    /* access lines are written in batches, at most ~50 ms late */
    char *log = tu_read_text(D.log);
    for (double until = tu_deadline(5, 4);
         !strstr(log, "access method=POST path=/v1/models/tvae/sample status=200 bytes=") &&
         tu_now() < until;) {
        free(log);
        tu_msleep(20);
        log = tu_read_text(D.log);
    }
    ck_assert_msg(strstr(log, "access method=POST path=/v1/models/tvae/sample status=200 bytes="),
                  "no access line in\n%s", log);
    ck_assert(strstr(log, " us="));
    ck_assert(strstr(log, "model loaded name=vae file=vae.safetensors sha256="));
    free(log);
}
END_TEST

/* VmRSS of a process, in KiB. */
static long rss_kib(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *st = tu_read_text(path);
    const char *p = strstr(st, "VmRSS:");
    long kb = p ? atol(p + 6) : -1;
    free(st);
    ck_assert_msg(kb > 0, "no VmRSS in %s", path);
    return kb;
}

START_TEST(test_memory_budget)
{
    /* the shared daemon holds both default models (plus small ones) */
    if (tu_under_asan()) {
        tu_skip("serve memory budget: sanitizer shadow memory makes RSS meaningless");
        return;
    }
    long kb = rss_kib(D.pid);
    ck_assert_msg(kb < 64 * 1024, "daemon RSS %ld KiB is over 64 MiB", kb);
}
END_TEST

START_TEST(test_shared_daemon_exits_clean)
{
    /* last in the case: SIGTERM the shared daemon; exit 0 (no leaks under ASan) */
    ck_assert_int_eq(kill(D.pid, SIGTERM), 0);
    int code = tu_daemon_wait_exit(&D, 30);
    char *log = tu_read_text(D.log);
    ck_assert_msg(code == 0, "exit %d; log tail:\n%s", code,
                  strlen(log) > 3000 ? log + strlen(log) - 3000 : log);
    ck_assert(strstr(log, "shutting down on SIGTERM"));
    ck_assert(strstr(log, "stopped"));
    free(log);
}
END_TEST

/* ------------------------------------------------ tests with their own daemon */

/* A small daemon: tiny models, no tokens unless given, extra config lines. */
static void start_own(tu_daemon_t *d, const char *extra_conf, const char *env)
{
    tu_daemon_dirs(d, ASAN_SLOWDOWN);
    ld_arch_t a;
    arch_tiny(LD_KIND_VAE, &a);
    save_model(d->models, "tvae.safetensors", &a, 3, 0);
    write_conf(d, extra_conf);
    tu_daemon_start(d, env);
}

START_TEST(test_sigterm_drains_in_flight)
{
    /* sd_notify over an abstract socket */
    char name[64];
    snprintf(name, sizeof name, "@latentd-test-%d-%ld", (int)getpid(), (long)time(NULL));
    int ns = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {0};
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, name, strlen(name));
    sa.sun_path[0] = '\0';
    ck_assert_int_eq(bind(ns, (struct sockaddr *)&sa,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name))), 0);
    struct timeval tv = {20, 0};
    setsockopt(ns, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char env[128];
    snprintf(env, sizeof env, "NOTIFY_SOCKET=%s", name);

    tu_daemon_t d;
    start_own(&d, "shutdown_timeout = 20\n", env);
    char msg[256];
    ssize_t n = recv(ns, msg, sizeof msg - 1, 0);
    ck_assert_int_gt(n, 0);
    msg[n] = '\0';
    ck_assert_msg(strstr(msg, "READY=1"), "first notify: %s", msg);

    /* a keep-alive connection with one finished request */
    int keep = tu_tcp_connect(1, d.port, 1);
    const char *hz = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    tu_send_all(keep, hz, strlen(hz));
    ld_buf_t b = {0};
    ck_assert_int_eq(tu_read_response(keep, &b), 200);
    ld_buf_free(&b);
    /* a request in flight: headers and half its body */
    const char *body = "{\"n\":2,\"seed\":9}";
    char head[256];
    snprintf(head, sizeof head,
             "POST /v1/models/tvae/sample HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n",
             strlen(body));
    int fl = tu_tcp_connect(1, d.port, 1);
    tu_send_all(fl, head, strlen(head));
    tu_send_all(fl, body, 5);
    /* wait until the daemon sees it in flight */
    double until = deadline(10);
    for (;;) {
        tu_resp_t r;
        opt_t o = {.token = "", .port = d.port};
        call(&r, "GET", "/metrics", NULL, 0, &o);
        const char *p = strstr(r.body.data, "\nlatentd_http_requests_in_flight ");
        long inflight = p ? atol(p + 33) : 0;
        tu_resp_free(&r);
        if (inflight >= 2) /* the upload and this /metrics request */
            break;
        ck_assert_msg(tu_now() < until, "the partial upload never showed as in flight");
        tu_msleep(5);
    }
    ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
    n = recv(ns, msg, sizeof msg - 1, 0);
    ck_assert_int_gt(n, 0);
    msg[n] = '\0';
    ck_assert_msg(strstr(msg, "STOPPING=1"), "notify after SIGTERM: %s", msg);
    /* new connections are refused once it drains */
    until = deadline(10);
    for (;;) {
        int fd = tu_tcp_connect(1, d.port, 1);
        if (fd < 0)
            break;
        close(fd);
        ck_assert_msg(tu_now() < until, "still accepting connections after SIGTERM");
        tu_msleep(5);
    }
    /* a new request on an open connection: 503 and close */
    tu_send_all(keep, hz, strlen(hz));
    b = (ld_buf_t){0};
    int st = tu_read_response(keep, &b);
    ck_assert_msg(st == 503 && strstr(b.data, "shutting_down") && strcasestr(b.data, "Connection: close"),
                  "request during drain: %d %s", st, b.data ? b.data : "");
    ld_buf_free(&b);
    close(keep);
    /* the request in flight completes */
    tu_send_all(fl, body + 5, strlen(body) - 5);
    b = (ld_buf_t){0};
    st = tu_read_response(fl, &b);
    ck_assert_msg(st == 200, "in-flight request got %d: %s", st, b.data ? b.data : "");
    char *json = strstr(b.data, "\r\n\r\n") + 4;
    cJSON *j = cJSON_Parse(json);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "images")), 2);
    cJSON_Delete(j);
    ld_buf_free(&b);
    close(fl);
    ck_assert_int_eq(tu_daemon_wait_exit(&d, 30), 0);
    char *log = tu_read_text(d.log);
    ck_assert(strstr(log, "shutting down on SIGTERM"));
    ck_assert(strstr(log, "stopped"));
    free(log);
    close(ns);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

START_TEST(test_sighup_rescan)
{
    tu_daemon_t d;
    start_own(&d, NULL, NULL);
    tu_resp_t r;
    opt_t o = {.token = "", .port = d.port};
    call(&r, "GET", "/v1/models/fresh", NULL, 0, &o);
    ck_assert_int_eq(r.status, 404);
    tu_resp_free(&r);
    ld_arch_t a;
    arch_tiny(LD_KIND_GAN, &a);
    save_model(d.models, "fresh.safetensors", &a, 8, 0);
    char path[1024];
    snprintf(path, sizeof path, "%s/tvae.safetensors", d.models);
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
    double until = deadline(10);
    for (;;) {
        call(&r, "GET", "/v1/models/fresh", NULL, 0, &o);
        long s1 = r.status;
        tu_resp_free(&r);
        call(&r, "GET", "/v1/models/tvae", NULL, 0, &o);
        long s2 = r.status;
        tu_resp_free(&r);
        if (s1 == 200 && s2 == 404)
            break;
        ck_assert_msg(tu_now() < until, "SIGHUP did not rescan (fresh %ld, tvae %ld)", s1, s2);
        tu_msleep(10);
    }
    /* no admin token configured: model management is refused */
    call(&r, "PUT", "/v1/models/fresh", NULL, 0, &o);
    expect_error(&r, 403, "forbidden", "admin_token_file", "no admin token");
    tu_resp_free(&r);
    /* and inference is open without a token file */
    ck_assert_int_eq(call(&r, "POST", "/v1/models/fresh/sample", "{}", 2, &o), 200);
    tu_resp_free(&r);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* The temporary files of atomic writes that a process killed mid-write left
 * ("<name>.tmp.<pid>.<n>", pid no longer running) are removed from the
 * model, state and jobs folders at start, and from the model folder at a
 * rescan, each with a log line.  Nothing else is touched: other names, a
 * symbolic link with such a name (nor what it points to), a folder, and
 * the files of a live process. */
static int path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

START_TEST(test_stale_temp_files_removed)
{
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    ck_assert_int_gt(dead, 0);
    ck_assert_int_eq(waitpid(dead, NULL, 0), dead);
    tu_daemon_t d;
    tu_daemon_dirs(&d, ASAN_SLOWDOWN);
    ld_arch_t a;
    arch_tiny(LD_KIND_VAE, &a);
    save_model(d.models, "tvae.safetensors", &a, 3, 0);
    write_conf(&d, NULL);
    char jobs[600];
    snprintf(jobs, sizeof jobs, "%s/jobs", d.state);
    ck_assert_int_eq(mkdir(d.state, 0755), 0);
    ck_assert_int_eq(mkdir(jobs, 0755), 0);
    enum { N_GONE = 4, N_KEPT = 6 };
    char gone[N_GONE][700], kept[N_KEPT][700], outside[600];
    snprintf(gone[0], sizeof gone[0], "%s/tvae.safetensors.tmp.%d.0", d.models, (int)dead);
    snprintf(gone[1], sizeof gone[1], "%s/x.safetensors.tmp.%d.17", d.models, (int)dead);
    snprintf(gone[2], sizeof gone[2], "%s/models.json.tmp.%d.1", d.state, (int)dead);
    snprintf(gone[3], sizeof gone[3], "%s/generation.tmp.%d.2", jobs, (int)dead);
    snprintf(kept[0], sizeof kept[0], "%s/notes.tmp", d.models);
    snprintf(kept[1], sizeof kept[1], "%s/a.safetensors.tmp.%d", d.models, (int)dead);
    snprintf(kept[2], sizeof kept[2], "%s/b.safetensors.tmp.%dx.0", d.models, (int)dead);
    snprintf(kept[3], sizeof kept[3], "%s/live.safetensors.tmp.%d.0", d.models, (int)getpid());
    snprintf(kept[4], sizeof kept[4], "%s/link.safetensors.tmp.%d.0", d.models, (int)dead);
    snprintf(kept[5], sizeof kept[5], "%s/dir.tmp.%d.0", d.models, (int)dead);
    snprintf(outside, sizeof outside, "%s/outside", d.dir);
    tu_write_file(outside, "not ours");
    for (int i = 0; i < N_GONE; i++)
        tu_write_file(gone[i], "half a file");
    for (int i = 0; i < 4; i++)
        tu_write_file(kept[i], "someone else's");
    ck_assert_int_eq(symlink(outside, kept[4]), 0);
    ck_assert_int_eq(mkdir(kept[5], 0755), 0);

    tu_daemon_start(&d, NULL);
    for (int i = 0; i < N_GONE; i++)
        ck_assert_msg(!path_exists(gone[i]), "%s is still there\n%s", gone[i], tu_log_tail(&d));
    for (int i = 0; i < N_KEPT; i++)
        ck_assert_msg(path_exists(kept[i]), "%s was removed", kept[i]);
    ck_assert(path_exists(outside));
    char *log = tu_read_text(d.log);
    int lines = 0;
    for (const char *p = log; (p = strstr(p, "stale temporary file removed")); p++)
        lines++;
    ck_assert_msg(lines == N_GONE, "%d removals logged\n%s", lines, log);
    free(log);

    /* a rescan (SIGHUP) cleans the model folder again */
    tu_write_file(gone[1], "half a file");
    ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
    double until = deadline(10);
    while (path_exists(gone[1])) {
        ck_assert_msg(tu_now() < until, "SIGHUP left %s", gone[1]);
        tu_msleep(20);
    }
    ck_assert(path_exists(kept[3]) && path_exists(kept[4]));
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

START_TEST(test_reload_keeps_rss)
{
    /* Replacing a default-size GAN over and over: each old model is freed,
     * and malloc must give its blocks back.  With glibc's dynamic mmap
     * threshold, every reload after the first left the freed weights in an
     * HTTP thread's arena, about 1 MiB more RSS per reload. */
    if (tu_under_asan()) {
        tu_skip("reload RSS: sanitizer shadow memory makes RSS meaningless");
        return;
    }
    tu_daemon_t d;
    tu_daemon_dirs(&d, ASAN_SLOWDOWN);
    ld_arch_t a;
    ld_arch_default(LD_KIND_GAN, &a);
    save_model(d.models, "big.safetensors", &a, 21, 0);
    char adm[600], extra[700];
    snprintf(adm, sizeof adm, "%s/admin", d.dir);
    tu_write_file(adm, ADMIN "\n");
    snprintf(extra, sizeof extra, "admin_token_file = %s\n", adm);
    write_conf(&d, extra);
    tu_daemon_start(&d, NULL);
    opt_t admin = {.token = ADMIN, .port = d.port}, open = {.token = "", .port = d.port};
    enum { WARM = 3, RELOADS = 24 };
    long before = 0;
    for (int i = 0; i < RELOADS; i++) {
        tu_resp_t r;
        /* each on a connection of its own, so the reloads land on
         * different HTTP threads (and malloc arenas) */
        ck_assert_int_eq(call(&r, "PUT", "/v1/models/big", NULL, 0, &admin), 200);
        tu_resp_free(&r);
        ck_assert_int_eq(call(&r, "POST", "/v1/models/big/sample", "{\"n\":2}", 7, &open), 200);
        tu_resp_free(&r);
        if (i == WARM - 1)
            before = rss_kib(d.pid);
    }
    long after = rss_kib(d.pid);
    ck_assert_msg(after - before < 4096,
                  "RSS grew by %ld KiB over %d reloads of a default-size GAN (%ld -> %ld KiB)",
                  after - before, RELOADS - WARM, before, after);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

START_TEST(test_config_errors)
{
    const struct {
        const char *conf;
        const char *want;
    } cases[] = {
        {"port = 8080\nprot = 1\n", "latentd.conf:2: unknown key 'prot'"},
        {"# c\n\nport = 70000\n", "latentd.conf:3: port = 70000 is out of range"},
        {"max_body_bytes = lots\n", "latentd.conf:1: max_body_bytes expects a size"},
        {"port = 1\nport = 2\n", "latentd.conf:2: key 'port' is already set on line 1"},
        {"log_level = loud\n", "latentd.conf:1: log_level must be one of"},
        {"just some words\n", "latentd.conf:1: expected '='"},
        {"bind = \"unterminated\n", "latentd.conf:1: unterminated"},
        {"token_file = /nonexistent/token\n", "/nonexistent/token"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        tu_daemon_t d;
        tu_daemon_dirs(&d, ASAN_SLOWDOWN);
        tu_write_file(d.conf, cases[i].conf);
        const char *args[] = {"serve", "--config", d.conf, "--models", d.models, NULL};
        tu_daemon_spawn(&d, args, NULL);
        int code = tu_daemon_wait_exit(&d, 20);
        char *log = tu_read_text(d.log);
        ck_assert_msg(code == 2, "case %zu: exit %d, log %s", i, code, log);
        ck_assert_msg(strstr(log, cases[i].want), "case %zu: '%s' not in %s", i, cases[i].want, log);
        free(log);
        tu_daemon_free(&d);
    }
    /* flags override the file, and are checked the same way */
    tu_daemon_t d;
    tu_daemon_dirs(&d, ASAN_SLOWDOWN);
    tu_write_file(d.conf, "port = 1234\n");
    const char *args[] = {"serve", "--config", d.conf, "--port", "99999", NULL};
    tu_daemon_spawn(&d, args, NULL);
    ck_assert_int_eq(tu_daemon_wait_exit(&d, 20), 2);
    char *log = tu_read_text(d.log);
    ck_assert_msg(strstr(log, "--port: port = 99999 is out of range"), "%s", log);
    free(log);
    const char *args2[] = {"serve", "--config", d.conf, "--port", "4321", "--models", d.models,
                           "--print-config", NULL};
    tu_daemon_spawn(&d, args2, NULL); /* clears the old status */
    ck_assert_int_eq(tu_daemon_wait_exit(&d, 20), 0);
    log = tu_read_text(d.log);
    ck_assert_msg(strstr(log, "port = 4321\n"), "%s", log);
    free(log);
    tu_daemon_free(&d);

    /* a port that another daemon listens on: a start-up error, not a second
     * daemon silently sharing the port */
    tu_daemon_t a, b;
    tu_daemon_dirs(&a, ASAN_SLOWDOWN);
    tu_write_file(a.conf, "bind = 127.0.0.1\nport = 0\nhttp_threads = 2\n");
    const char *aargs[] = {"serve", "--config", a.conf, "--models", a.models, "--state", a.state,
                           NULL};
    tu_daemon_spawn(&a, aargs, NULL);
    a.port = tu_daemon_wait_port(&a, 30);
    tu_daemon_dirs(&b, ASAN_SLOWDOWN);
    tu_write_file(b.conf, "bind = 127.0.0.1\nhttp_threads = 2\n");
    char port[16], want[128];
    snprintf(port, sizeof port, "%d", a.port);
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1 port %d: Address already in use",
             a.port);
    const char *bargs[] = {"serve", "--config", b.conf, "--port", port, "--models", b.models,
                           "--state", b.state, NULL};
    tu_daemon_spawn(&b, bargs, NULL);
    int code = tu_daemon_wait_exit(&b, 30);
    log = tu_read_text(b.log);
    ck_assert_msg(code == 1 && strstr(log, want), "second daemon: exit %d, log %s", code, log);
    free(log);
    tu_daemon_free(&b);
    tu_daemon_stop_ok(&a, 30);
}
END_TEST

Suite *suite_serve(void)
{
    Suite *s = suite_create("serve");
    TCase *api = tcase_create("api");
    tcase_set_timeout(api, 120);
    tcase_add_unchecked_fixture(api, shared_setup, shared_teardown);
    tcase_add_checked_fixture(api, tu_timing_start, timing_end);
    tcase_add_test(api, test_health_open);
    tcase_add_test(api, test_models_list_and_info);
    tcase_add_test(api, test_sample_json_matches_model);
    tcase_add_test(api, test_determinism_and_formats);
    tcase_add_test(api, test_png_and_npy_bodies);
    tcase_add_test(api, test_encode_decode_reconstruct);
    tcase_add_test(api, test_interpolate);
    tcase_add_test(api, test_error_classes);
    tcase_add_test(api, test_npy_request_bodies);
    tcase_add_test(api, test_argument_rules);
    tcase_add_test(api, test_body_caps);
    tcase_add_test(api, test_overload_503);
    tcase_add_test(api, test_auth);
    tcase_add_test(api, test_cors);
    tcase_add_test(api, test_model_management);
    tcase_add_test(api, test_reload_under_load);
    tcase_add_test(api, test_malformed_burst_then_good);
    tcase_add_test(api, test_metrics_and_logs);
    tcase_add_test(api, test_memory_budget);
    tcase_add_test(api, test_shared_daemon_exits_clean);
    suite_add_tcase(s, api);

    TCase *own = tcase_create("lifecycle");
    tcase_set_timeout(own, 120);
    tcase_add_unchecked_fixture(own, tu_curl_setup, tu_curl_teardown);
    tcase_add_checked_fixture(own, tu_timing_start, timing_end);
    tcase_add_test(own, test_sigterm_drains_in_flight);
    tcase_add_test(own, test_sighup_rescan);
    tcase_add_test(own, test_stale_temp_files_removed);
    tcase_add_test(own, test_reload_keeps_rss);
    tcase_add_test(own, test_config_errors);
    suite_add_tcase(s, own);
    return s;
}

/* check_invert.c — GAN inversion (src/invert.c) and its route
 * POST /v1/models/{name}/invert (src/invert_api.c).
 *
 * Real data throughout: the shipped models/fashion-gan.safetensors and
 * fashion-vae.safetensors, Debian's Fashion-MNIST test images, and, for the
 * route, the real daemon (LD_BIN) driven with libcurl.
 *   core: the input gradient against central finite differences,
 *         determinism for a seed, an image generated from a known z
 *         inverted far below the nearest-random-sample baseline, and the
 *         library's refusals.
 *   http: the route's answers (JSON, PNG, .npy) and errors (not a GAN, bad
 *         shapes, out-of-range and non-finite values, limits), the daemon
 *         still serving afterwards, and /interpolate's image end points on
 *         a GAN (inverted first).
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/data.h"
#include "latentd/image.h"
#include "latentd/invert.h"
#include "latentd/model.h"

#include <math.h>
#include <string.h>

#define GAN_FILE "models/fashion-gan.safetensors"
#define VAE_FILE "models/fashion-vae.safetensors"
#define ASAN_SLOWDOWN 4

static ld_model_t *load(const char *path)
{
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_load(path, &m, &e) == LD_OK, "load %s: %s", path, e.msg);
    return m;
}

/* ================================================================ core */

/* d loss / d z from the generator's backward against central differences
 * (double-precision steps of a float net: 1e-2 keeps rounding small against
 * the curvature), with and without the norm penalty. */
START_TEST(test_input_gradient)
{
    ld_model_t *g = load(GAN_FILE);
    ld_dataset_t *d = tu_fashion_test(3);
    const int b = 3, Z = g->arch.z_dim;
    float *z = malloc((size_t)b * Z * sizeof *z), *dz = malloc((size_t)b * Z * sizeof *dz);
    double loss[3], lp[3], lm[3];
    ld_err_t e;
    const float pens[2] = {0.0f, 1.0f};
    for (int p = 0; p < 2; p++) {
        ld_model_draw_z(g, 11, 1.0f, b, z);
        ck_assert_int_eq(ld_invert_loss(g, b, z, d->x, pens[p], loss, dz, &e), LD_OK);
        double num = 0, den = 0, worst = 0;
        for (int k = 0; k < Z; k += 3) {
            const float h = 1e-2f;
            float *zk[3];
            for (int r = 0; r < b; r++)
                zk[r] = &z[(size_t)r * Z + k];
            float keep[3];
            for (int r = 0; r < b; r++) {
                keep[r] = *zk[r];
                *zk[r] = keep[r] + h;
            }
            ld_invert_loss(g, b, z, d->x, pens[p], lp, NULL, &e);
            for (int r = 0; r < b; r++)
                *zk[r] = keep[r] - h;
            ld_invert_loss(g, b, z, d->x, pens[p], lm, NULL, &e);
            for (int r = 0; r < b; r++) {
                *zk[r] = keep[r];
                double fd = (lp[r] - lm[r]) / (2.0 * h), an = dz[(size_t)r * Z + k];
                num += (fd - an) * (fd - an);
                den += fd * fd;
                if (fabs(fd - an) > worst)
                    worst = fabs(fd - an);
            }
        }
        double rel = sqrt(num / den);
        printf("invert gradient (penalty %g): |fd - backward| / |fd| = %.2e, largest difference %.2e\n",
               (double)pens[p], rel, worst);
        ck_assert_msg(den > 0 && rel < 2e-2, "penalty %g: relative gradient error %.3e",
                      (double)pens[p], rel);
    }
    free(z);
    free(dz);
    ld_data_free(d);
    ld_model_free(g);
}
END_TEST

/* Same seed, same bytes; another seed, other starts (and so another z). */
START_TEST(test_deterministic_for_seed)
{
    ld_model_t *g = load(GAN_FILE);
    ld_dataset_t *d = tu_fashion_test(2);
    const int n = 2, Z = g->arch.z_dim, X = g->arch.x_dim;
    ld_invert_opts_t o;
    ld_invert_opts_default(&o);
    o.steps = 40;
    o.restarts = 3;
    o.seed = 42;
    float *z[3], *x[3], mse[3][2];
    ld_err_t e;
    for (int t = 0; t < 3; t++) {
        z[t] = malloc((size_t)n * Z * sizeof(float));
        x[t] = malloc((size_t)n * X * sizeof(float));
        if (t == 2)
            o.seed = 43;
        ck_assert_int_eq(ld_invert(g, n, d->x, &o, z[t], x[t], mse[t], &e), LD_OK);
    }
    ck_assert(memcmp(z[0], z[1], (size_t)n * Z * sizeof(float)) == 0);
    ck_assert(memcmp(x[0], x[1], (size_t)n * X * sizeof(float)) == 0);
    ck_assert(memcmp(mse[0], mse[1], sizeof mse[0]) == 0);
    ck_assert(memcmp(z[0], z[2], (size_t)n * Z * sizeof(float)) != 0);
    for (int t = 0; t < 3; t++)
        free(z[t]), free(x[t]);
    ld_data_free(d);
    ld_model_free(g);
}
END_TEST

/* Images G(z*) of n known latents: inversion with o (from other starts)
 * finds images whose MSE is far below that of the nearest of S random
 * samples, and reports the MSE of the image it answers. */
static void check_known_z(ld_model_t *g, const char *what, int n, int S, const ld_invert_opts_t *o)
{
    const int Z = g->arch.z_dim, X = g->arch.x_dim;
    float *zs = malloc((size_t)n * Z * sizeof *zs), *x = malloc((size_t)n * X * sizeof *x);
    float *z = malloc((size_t)n * Z * sizeof *z), *xr = malloc((size_t)n * X * sizeof *xr);
    float *sz = malloc((size_t)S * Z * sizeof *sz), *sx = malloc((size_t)S * X * sizeof *sx);
    float *mse = malloc((size_t)n * sizeof *mse);
    ld_err_t e;
    ld_model_draw_z(g, 2026, 1.0f, n, zs);
    ck_assert_int_eq(ld_model_decode(g, n, zs, x, &e), LD_OK);
    ld_model_draw_z(g, 99, 1.0f, S, sz);
    ck_assert_int_eq(ld_model_decode(g, S, sz, sx, &e), LD_OK);
    ck_assert(o->seed != 2026); /* the starts are not the answer */
    double t0 = tu_now();
    ck_assert_msg(ld_invert(g, n, x, o, z, xr, mse, &e) == LD_OK, "%s", e.msg);
    printf("%s invert: %d images, %d steps, %d restarts: %.2f s wall\n", what, n, o->steps,
           o->restarts, tu_now() - t0);
    for (int i = 0; i < n; i++) {
        double best = INFINITY, se = 0;
        for (int s = -1; s < S; s++) { /* s = -1: the answer itself */
            const float *y = s < 0 ? xr + (size_t)i * X : sx + (size_t)s * X;
            double ss = 0;
            for (int k = 0; k < X; k++) {
                double df = (double)y[k] - x[(size_t)i * X + k];
                ss += df * df;
            }
            if (s < 0)
                se = ss / X;
            else
                best = fmin(best, ss / X);
        }
        printf("%s invert known z, image %d: MSE %.3g, nearest of %d samples %.3g\n", what, i,
               (double)mse[i], S, best);
        ck_assert_msg(fabs(se - mse[i]) <= 1e-6 + 1e-4 * se, "reported MSE %g, actual %g",
                      (double)mse[i], se);
        ck_assert_msg(mse[i] * 10 < best, "image %d: inversion MSE %.3g vs baseline %.3g", i,
                      (double)mse[i], best);
    }
    free(zs), free(x), free(z), free(xr), free(sz), free(sx), free(mse);
}

START_TEST(test_known_z_far_below_baseline)
{
    ld_model_t *g = load(GAN_FILE);
    ld_invert_opts_t o;
    ld_invert_opts_default(&o);
    o.seed = 5;
    check_known_z(g, "dense", 4, 2000, &o);
    ld_model_free(g);
}
END_TEST

START_TEST(test_refusals)
{
    ld_model_t *v = load(VAE_FILE), *g = load(GAN_FILE);
    float x[784] = {0}, z[100], xr[784], mse[1];
    ld_invert_opts_t o;
    ld_invert_opts_default(&o);
    ld_err_t e;
    ck_assert_int_eq(ld_invert(v, 1, x, &o, z, xr, mse, &e), LD_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(e.msg, "GAN"));
    o.steps = 0;
    ck_assert_int_eq(ld_invert(g, 1, x, &o, z, xr, mse, &e), LD_EINVAL);
    ld_invert_opts_default(&o);
    o.lr = NAN;
    ck_assert_int_eq(ld_invert(g, 1, x, &o, z, xr, mse, &e), LD_EINVAL);
    ld_model_free(v);
    ld_model_free(g);
}
END_TEST

/* A GAN of layer-list architecture net (dcgan, resmlp: generators with
 * batch norm) from fixed parameters: PyTorch's default init from seed 7,
 * then running statistics from ten training-mode passes of the generator on
 * z ~ N(0, 1.5^2), so that eval mode (running statistics) differs from any
 * batch's own statistics. */
static ld_model_t *layer_gan(ld_netarch_t net)
{
    ld_arch_t a;
    ld_model_t *m = NULL;
    ld_err_t e;
    ld_arch_default(LD_KIND_GAN, &a);
    ck_assert_msg(ld_arch_set_net(&a, net, &e) == LD_OK, "%s", e.msg);
    ck_assert_msg(ld_model_new(&a, 7, &m, &e) == LD_OK, "%s", e.msg);
    enum { B = 16 };
    ld_net_ws_t ws;
    ck_assert_int_eq(ld_net_ws_init(&ws, &m->layers[LD_GAN_G], B), 0);
    float *z = malloc((size_t)B * a.z_dim * sizeof *z);
    ld_net_run_t run = {.training = 1, .update = m->buffers};
    for (int t = 0; t < 10; t++) {
        ld_model_draw_z(m, 100 + (uint64_t)t, 1.5f, B, z);
        ld_net_forward(&m->layers[LD_GAN_G], m->params, m->buffers, &ws, B, z, &run);
    }
    free(z);
    ld_net_ws_free(&ws);
    return m;
}

/* The input gradient of a DCGAN generator (conv-transposes, batch norm in
 * eval mode) and of a resmlp one (batch norm 1d, residual blocks) against
 * central differences, and eval mode itself: a row's loss does not depend on
 * the other rows of the batch. */
static const ld_netarch_t grad_nets[] = {LD_NETS_DCGAN, LD_NETS_RESMLP};

START_TEST(test_layer_input_gradient)
{
    ld_model_t *g = layer_gan(grad_nets[_i]);
    ld_dataset_t *d = tu_fashion_test(3);
    const int b = 3, Z = g->arch.z_dim;
    float *z = malloc((size_t)b * Z * sizeof *z), *dz = malloc((size_t)b * Z * sizeof *dz);
    double loss[3], lp[3], lm[3], one;
    ld_err_t e;
    ld_model_draw_z(g, 11, 1.0f, b, z);
    ck_assert_msg(ld_invert_loss(g, b, z, d->x, 0.5f, loss, dz, &e) == LD_OK, "%s", e.msg);
    ck_assert_int_eq(ld_invert_loss(g, 1, z + Z, d->x + 784, 0.5f, &one, NULL, &e), LD_OK);
    ck_assert_msg(fabs(one - loss[1]) <= 1e-6 * loss[1], "row 1 alone %.9g, in a batch of 3 %.9g",
                  one, loss[1]);
    double num = 0, den = 0, worst = 0;
    const float h = 1e-2f;
    for (int k = 0; k < Z; k += 3) {
        float keep[3];
        for (int r = 0; r < b; r++) {
            keep[r] = z[(size_t)r * Z + k];
            z[(size_t)r * Z + k] = keep[r] + h;
        }
        ld_invert_loss(g, b, z, d->x, 0.5f, lp, NULL, &e);
        for (int r = 0; r < b; r++)
            z[(size_t)r * Z + k] = keep[r] - h;
        ld_invert_loss(g, b, z, d->x, 0.5f, lm, NULL, &e);
        for (int r = 0; r < b; r++) {
            z[(size_t)r * Z + k] = keep[r];
            double fd = (lp[r] - lm[r]) / (2.0 * h), an = dz[(size_t)r * Z + k];
            num += (fd - an) * (fd - an);
            den += fd * fd;
            worst = fmax(worst, fabs(fd - an));
        }
    }
    double rel = sqrt(num / den);
    printf("%s invert gradient: |fd - backward| / |fd| = %.2e, largest difference %.2e\n",
           ld_netarch_name(grad_nets[_i]), rel, worst);
    ck_assert_msg(den > 0 && rel < 2e-2, "relative gradient error %.3e", rel);
    free(z);
    free(dz);
    ld_data_free(d);
    ld_model_free(g);
}
END_TEST

/* Images the DCGAN drew itself from known latents, recovered. */
START_TEST(test_dcgan_recovers_sample)
{
    ld_model_t *g = layer_gan(LD_NETS_DCGAN);
    ld_invert_opts_t o;
    ld_invert_opts_default(&o);
    o.steps = 100;
    o.restarts = 2;
    o.seed = 5;
    check_known_z(g, "dcgan", 2, 200, &o);
    ld_model_free(g);
}
END_TEST

/* ================================================================ http */

static tu_daemon_t D;

static void http_setup(void)
{
    static const char *const models[] = {"fashion-gan", "fashion-vae", NULL};
    tu_daemon_start_shipped(&D, ASAN_SLOWDOWN, models, "request_timeout = 60\n");
}

static void http_teardown(void)
{
    tu_daemon_teardown(&D, 30);
    curl_global_cleanup();
}

static long post(tu_resp_t *r, const char *model, const char *json)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%s/invert", model);
    tu_req_t q = {.port = D.port};
    return tu_http_once(r, "POST", path, json, strlen(json), &q);
}

/* {"images":[<n rows of 784 values: test image i, or v everywhere when
 * v >= 0>], <extra>} */
static char *images_body(int n, double v, const char *extra)
{
    ld_dataset_t *d = tu_fashion_test(n);
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"images\":[");
    for (int i = 0; i < n; i++) {
        ld_buf_puts(&b, i ? ",[" : "[");
        for (int k = 0; k < 784; k++)
            ld_buf_printf(&b, k ? ",%.6g" : "%.6g", v >= 0 ? v : (double)d->x[(size_t)i * 784 + k]);
        ld_buf_putc(&b, ']');
    }
    ld_buf_printf(&b, "]%s%s}", extra && *extra ? "," : "", extra ? extra : "");
    ld_data_free(d);
    return b.data;
}

START_TEST(test_route_answers)
{
    tu_resp_t r, r2;
    char *body = images_body(2, -1, "\"steps\":100,\"restarts\":2,\"seed\":5");
    double t0 = tu_now();
    ck_assert_int_eq(post(&r, "fashion-gan", body), 200);
    printf("invert route: 2 images, 100 steps, 2 restarts: %.3f s wall\n", tu_now() - t0);
    ck_assert_ptr_nonnull(r.json);
    const cJSON *z = tu_jget(r.json, "z"), *mse = tu_jget(r.json, "mse");
    const cJSON *im = tu_jget(r.json, "images");
    ck_assert_int_eq(cJSON_GetArraySize(z), 2);
    ck_assert_int_eq(cJSON_GetArraySize(z->child), 100);
    ck_assert_int_eq(cJSON_GetArraySize(im), 2);
    ck_assert_int_eq(cJSON_GetArraySize(im->child), 784);
    ck_assert_int_eq(cJSON_GetArraySize(mse), 2);
    for (const cJSON *m = mse->child; m; m = m->next)
        ck_assert_msg(m->valuedouble > 0 && m->valuedouble < 0.05, "mse %g", m->valuedouble);
    ck_assert_int_eq((int)tu_jget(r.json, "seed")->valuedouble, 5);
    ck_assert(tu_json_all_finite(r.json));
    /* deterministic for a seed: the same bytes again */
    ck_assert_int_eq(post(&r2, "fashion-gan", body), 200);
    ck_assert_uint_eq(r.body.len, r2.body.len);
    ck_assert(memcmp(r.body.data, r2.body.data, r.body.len) == 0);
    tu_resp_free(&r);
    tu_resp_free(&r2);
    free(body);

    /* PNG and .npy: the reconstructions, the MSE in a header */
    char hv[256];
    body = images_body(2, -1, "\"steps\":20,\"restarts\":1,\"seed\":5,\"format\":\"png\"");
    ck_assert_int_eq(post(&r, "fashion-gan", body), 200);
    ck_assert(r.body.len > 8 && memcmp(r.body.data, "\x89PNG", 4) == 0);
    ck_assert_ptr_nonnull(tu_hdr(&r, "X-Latentd-Mse", hv, sizeof hv));
    ck_assert_ptr_nonnull(strchr(hv, ','));
    tu_resp_free(&r);
    free(body);
    body = images_body(2, -1, "\"steps\":20,\"restarts\":1,\"seed\":5,\"format\":\"npy\"");
    ck_assert_int_eq(post(&r, "fashion-gan", body), 200);
    float *x = NULL;
    int nd = 0;
    int64_t shape[4];
    ld_err_t e;
    ck_assert_int_eq(ld_npy_decode(r.body.data, r.body.len, &x, &nd, shape, &e), LD_OK);
    ck_assert_int_eq(nd, 3);
    ck_assert(shape[0] == 2 && shape[1] == 28 && shape[2] == 28);
    free(x);
    tu_resp_free(&r);
    free(body);
}
END_TEST

START_TEST(test_route_errors)
{
    static const struct {
        const char *model, *extra;
        int n;
        double v;
        long status;
        const char *code, *msg;
    } cases[] = {
        {"fashion-vae", "", 1, -1, 422, "unsupported", "only a GAN"},
        {"nope", "", 1, -1, 404, "model_not_found", NULL},
        {"fashion-gan", "", 1, 1.5, 422, "invalid_value", "images"},
        {"fashion-gan", "\"steps\":0", 1, -1, 422, "invalid_value", "steps"},
        {"fashion-gan", "\"steps\":1001", 1, -1, 422, "invalid_value", "steps"},
        {"fashion-gan", "\"restarts\":9", 1, -1, 422, "invalid_value", "restarts"},
        {"fashion-gan", "\"lr\":0", 1, -1, 422, "invalid_value", "lr"},
        {"fashion-gan", "\"lr\":1e999", 1, -1, 422, "invalid_value", "lr"},
        {"fashion-gan", "\"z_penalty\":-1", 1, -1, 422, "invalid_value", "z_penalty"},
        {"fashion-gan", "\"stpes\":10", 1, -1, 400, "invalid_field", "stpes"},
        {"fashion-gan", "\"format\":\"png\"", 5, -1, 422, "invalid_value", "job"},
        {"fashion-gan", "\"restarts\":8,\"steps\":1000", 2, -1, 422, "too_much_work", "10000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_resp_t r;
        char *body = images_body(cases[i].n, cases[i].v, cases[i].extra);
        post(&r, cases[i].model, body);
        char what[128];
        snprintf(what, sizeof what, "case %zu (%s %s)", i, cases[i].model, cases[i].extra);
        tu_expect_error(&r, cases[i].status, cases[i].code, cases[i].msg, what, 1);
        tu_resp_free(&r);
        free(body);
    }
    static const struct {
        const char *body;
        long status;
        const char *code;
    } raw[] = {
        {"{\"images\":[[0.1,0.2,0.3]]}", 422, "invalid_value"},                  /* shape */
        {"{\"images\":[[NaN]]}", 400, "invalid_json"},                             /* not JSON */
        {"{\"images\":[[1e999]]}", 422, "invalid_value"},                         /* Inf */
        {"{}", 400, "invalid_field"},                                             /* no images */
        {"{\"png\":\"not base64!\"}", 422, "invalid_value"},
        {"{\"images\":[[0.5]],\"png\":\"\"}", 400, "invalid_field"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        tu_resp_t r;
        post(&r, "fashion-gan", raw[i].body);
        char what[128];
        snprintf(what, sizeof what, "raw case %zu (%s)", i, raw[i].body);
        tu_expect_error(&r, raw[i].status, raw[i].code, NULL, what, 1);
        tu_resp_free(&r);
    }
    /* and the daemon serves on */
    tu_resp_t r;
    tu_req_t q = {.port = D.port};
    ck_assert_int_eq(tu_http_once(&r, "GET", "/healthz", NULL, 0, &q), 200);
    tu_resp_free(&r);
}
END_TEST

/* An application/x-npy body: the images of an (n, 28, 28) float32 array,
 * the options in the query string; the same answer as the same images and
 * options in JSON. */
START_TEST(test_route_npy_body)
{
    ld_dataset_t *d = tu_fashion_test(2);
    uint8_t *npy = NULL;
    size_t npy_len = 0;
    ld_err_t e;
    int64_t shape[3] = {2, 28, 28};
    ck_assert_int_eq(ld_npy_encode(d->x, 3, shape, &npy, &npy_len, &e), LD_OK);
    ld_buf_t js = {0};
    ld_buf_puts(&js, "{\"images\":[");
    for (int i = 0; i < 2; i++) {
        ld_buf_puts(&js, i ? "," : "");
        ld_buf_json_floats(&js, d->x + (size_t)i * 784, 784);
    }
    ld_buf_puts(&js, "],\"steps\":20,\"restarts\":1,\"seed\":5}");
    tu_resp_t rj, rn;
    tu_req_t q = {.port = D.port};
    ck_assert_int_eq(tu_http_once(&rj, "POST", "/v1/models/fashion-gan/invert", js.data, js.len, &q),
                     200);
    q.ctype = "application/x-npy";
    long st = tu_http_once(&rn, "POST", "/v1/models/fashion-gan/invert?steps=20&restarts=1&seed=5",
                           npy, npy_len, &q);
    ck_assert_msg(st == 200, "npy body: %ld %.300s", st, rn.body.data ? rn.body.data : "");
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(rn.json, "mse")), 2);
    ck_assert_msg(rj.body.len == rn.body.len && memcmp(rj.body.data, rn.body.data, rj.body.len) == 0,
                  "JSON and .npy bodies gave different answers");
    tu_resp_free(&rj);
    tu_resp_free(&rn);

    /* errors: a wrong shape, an unknown query option, options in the query
     * of a JSON body, a body that is not .npy */
    int64_t bad_shape[2] = {2, 392};
    uint8_t *bad = NULL;
    size_t bad_len = 0;
    ck_assert_int_eq(ld_npy_encode(d->x, 2, bad_shape, &bad, &bad_len, &e), LD_OK);
    tu_http_once(&rn, "POST", "/v1/models/fashion-gan/invert", bad, bad_len, &q);
    tu_expect_error(&rn, 422, "invalid_value", "shape", "npy of shape (2, 392)", 1);
    tu_resp_free(&rn);
    tu_http_once(&rn, "POST", "/v1/models/fashion-gan/invert?stpes=3", npy, npy_len, &q);
    tu_expect_error(&rn, 400, "invalid_field", "stpes", "unknown query option", 1);
    tu_resp_free(&rn);
    tu_http_once(&rn, "POST", "/v1/models/fashion-gan/invert", "{}", 2, &q);
    tu_expect_error(&rn, 400, "invalid_npy", NULL, "JSON sent as .npy", 1);
    tu_resp_free(&rn);
    q.ctype = NULL;
    tu_http_once(&rn, "POST", "/v1/models/fashion-gan/invert?steps=3", js.data, js.len, &q);
    tu_expect_error(&rn, 400, "invalid_field", "steps", "query options with a JSON body", 1);
    tu_resp_free(&rn);
    free(bad);
    free(npy);
    ld_buf_free(&js);
    ld_data_free(d);
}
END_TEST

/* More than 4 images: an inversion job, 202 and where its result will be;
 * the result (polled) is the inversion of the same images and options done
 * here with the library. */
START_TEST(test_route_job)
{
    const int n = 6;
    ld_dataset_t *d = tu_fashion_test(n);
    ld_buf_t js = {0};
    ld_buf_puts(&js, "{\"images\":[");
    for (int i = 0; i < n; i++) {
        ld_buf_puts(&js, i ? "," : "");
        ld_buf_json_floats(&js, d->x + (size_t)i * 784, 784);
    }
    ld_buf_puts(&js, "],\"steps\":30,\"restarts\":2,\"seed\":5}");
    tu_resp_t r;
    tu_req_t q = {.port = D.port};
    long st = tu_http_once(&r, "POST", "/v1/models/fashion-gan/invert", js.data, js.len, &q);
    ck_assert_msg(st == 202, "status %ld: %.300s", st, r.body.data ? r.body.data : "");
    char loc[128], want[128];
    const char *id = tu_jget(r.json, "id")->valuestring;
    snprintf(want, sizeof want, "/v1/jobs/%s/result", id);
    ck_assert_str_eq(tu_hdr(&r, "Location", loc, sizeof loc), want);
    ck_assert_str_eq(tu_jget(r.json, "result")->valuestring, want);
    ck_assert_str_eq(tu_jget(r.json, "state")->valuestring, "queued");
    tu_resp_free(&r);

    double until = tu_deadline(60, ASAN_SLOWDOWN);
    int polls = 0;
    for (;;) {
        st = tu_http_once(&r, "GET", loc, NULL, 0, &q);
        if (st == 200)
            break;
        ck_assert_msg(st == 202, "result: %ld %.300s", st, r.body.data ? r.body.data : "");
        ck_assert(strstr(r.body.data, "\"state\":\"queued\"") ||
                  strstr(r.body.data, "\"state\":\"running\""));
        tu_resp_free(&r);
        ck_assert_msg(tu_now() < until, "the job did not finish");
        tu_msleep(50);
        polls++;
    }
    printf("invert job: %d images, 30 steps, 2 restarts: result after %d polls\n", n, polls);
    const cJSON *z = tu_jget(r.json, "z"), *mse = tu_jget(r.json, "mse");
    ck_assert_int_eq(cJSON_GetArraySize(z), n);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "images")), n);
    ck_assert_int_eq((int)tu_jget(r.json, "seed")->valuedouble, 5);

    ld_model_t *g = load(GAN_FILE);
    ld_invert_opts_t o;
    ld_invert_opts_default(&o);
    o.steps = 30;
    o.restarts = 2;
    o.seed = 5;
    float *zz = malloc((size_t)n * 100 * sizeof *zz), *xr = malloc((size_t)n * 784 * sizeof *xr);
    float m[6];
    ld_err_t e;
    ck_assert_int_eq(ld_invert(g, n, d->x, &o, zz, xr, m, &e), LD_OK);
    double worst = 0;
    int i = 0;
    for (const cJSON *v = mse->child; v; v = v->next, i++) {
        double diff = fabs(v->valuedouble - m[i]);
        worst = diff > worst ? diff : worst;
        ck_assert_msg(diff <= 1e-3 * m[i] + 1e-7, "image %d: mse %g, here %g", i, v->valuedouble,
                      (double)m[i]);
    }
    printf("invert job against the library: largest MSE difference %.3g\n", worst);
    free(zz);
    free(xr);
    ld_model_free(g);
    tu_resp_free(&r);

    /* no such inversion job */
    tu_http_once(&r, "GET", "/v1/jobs/j-999999/result", NULL, 0, &q);
    tu_expect_error(&r, 404, "not_found", "j-999999", "unknown job", 1);
    tu_resp_free(&r);
    ld_buf_free(&js);
    ld_data_free(d);
}
END_TEST

/* /interpolate on a GAN takes an image end point: inverted first, so the
 * path starts at (nearly) the image. */
START_TEST(test_interpolate_image_endpoint)
{
    ld_dataset_t *d = tu_fashion_test(1);
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"from\":{\"image\":");
    ld_buf_json_floats(&b, d->x, 784);
    ld_buf_puts(&b, "},\"to\":{\"seed\":1},\"steps\":2}");
    tu_resp_t r;
    tu_req_t q = {.port = D.port};
    long st = tu_http_once(&r, "POST", "/v1/models/fashion-gan/interpolate", b.data, b.len, &q);
    ck_assert_msg(st == 200, "status %ld: %.300s", st, r.body.data ? r.body.data : "");
    const cJSON *im = tu_jget(r.json, "images");
    ck_assert_int_eq(cJSON_GetArraySize(im), 2);
    double se = 0;
    int k = 0;
    for (const cJSON *v = im->child->child; v; v = v->next, k++) {
        double e = v->valuedouble - d->x[k];
        se += e * e;
    }
    ck_assert_int_eq(k, 784);
    printf("interpolate from an inverted image: first frame MSE %.5f\n", se / 784);
    ck_assert_msg(se / 784 < 0.03, "first frame MSE %.5f", se / 784);
    tu_resp_free(&r);
    ld_buf_free(&b);
    ld_data_free(d);
}
END_TEST

/* ================================================================ dcgan over http */

static tu_daemon_t DG;

/* A daemon serving layer_gan(LD_NETS_DCGAN) as "dcgan". */
static void dcgan_setup(void)
{
    char path[600], conf[2048];
    ld_err_t e;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_dirs(&DG, ASAN_SLOWDOWN);
    ld_model_t *g = layer_gan(LD_NETS_DCGAN);
    snprintf(path, sizeof path, "%s/dcgan.safetensors", DG.models);
    ck_assert_msg(ld_model_save(g, path, &e) == LD_OK, "%s", e.msg);
    ld_model_free(g);
    snprintf(conf, sizeof conf,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = 2\nmodels_dir = %s\nstate_dir = %s\n"
             "max_samples = 64\nrequest_timeout = 60\n",
             DG.models, DG.state);
    tu_write_file(DG.conf, conf);
    tu_daemon_start(&DG, NULL);
}

static void dcgan_teardown(void)
{
    tu_daemon_teardown(&DG, 30);
    curl_global_cleanup();
}

/* Poll a job's result until 200; the answer in r. */
static void poll_result(const tu_daemon_t *d, const char *loc, tu_resp_t *r)
{
    tu_req_t q = {.port = d->port};
    double until = tu_deadline(90, ASAN_SLOWDOWN);
    for (;;) {
        long st = tu_http_once(r, "GET", loc, NULL, 0, &q);
        if (st == 200)
            return;
        ck_assert_msg(st == 202, "result: %ld %.300s", st, r->body.data ? r->body.data : "");
        tu_resp_free(r);
        ck_assert_msg(tu_now() < until, "the job did not finish");
        tu_msleep(100);
    }
}

/* A DCGAN served by the daemon: 200 for a few of its own samples (close to
 * them), 202 and a job for more, whose result is the library's inversion of
 * the same images. */
START_TEST(test_dcgan_route)
{
    enum { N = 5 };
    ld_model_t *g = layer_gan(LD_NETS_DCGAN);
    const int Z = g->arch.z_dim, X = g->arch.x_dim;
    float *zs = malloc((size_t)N * Z * sizeof *zs), *x = malloc((size_t)N * X * sizeof *x);
    ld_err_t e;
    ld_model_draw_z(g, 2026, 1.0f, N, zs);
    ck_assert_int_eq(ld_model_decode(g, N, zs, x, &e), LD_OK);
    ld_buf_t js = {0};
    tu_req_t q = {.port = DG.port};
    tu_resp_t r;
    for (int n = 2; n <= N; n += N - 2) {
        js.len = 0;
        ld_buf_puts(&js, "{\"images\":");
        ld_buf_json_matrix(&js, x, (size_t)n, (size_t)X);
        ld_buf_puts(&js, ",\"steps\":60,\"restarts\":2,\"seed\":5}");
        long st = tu_http_once(&r, "POST", "/v1/models/dcgan/invert", js.data, js.len, &q);
        ck_assert_msg(st == (n > 4 ? 202 : 200), "%d images: %ld %.300s", n, st,
                      r.body.data ? r.body.data : "");
        if (st == 202) {
            char loc[128];
            ck_assert_ptr_nonnull(tu_hdr(&r, "Location", loc, sizeof loc));
            tu_resp_free(&r);
            poll_result(&DG, loc, &r);
        }
        const cJSON *mse = tu_jget(r.json, "mse");
        ck_assert_int_eq(cJSON_GetArraySize(mse), n);
        ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "z")), n);
        ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "images")), n);
        ld_invert_opts_t o;
        ld_invert_opts_default(&o);
        o.steps = 60;
        o.restarts = 2;
        o.seed = 5;
        float z[N * 100], xr[N * 784], m[N];
        ck_assert_int_eq(ld_invert(g, n, x, &o, z, xr, m, &e), LD_OK);
        int i = 0;
        for (const cJSON *v = mse->child; v; v = v->next, i++) {
            printf("dcgan invert route, %d images, image %d: MSE %.3g (library %.3g)\n", n, i,
                   v->valuedouble, (double)m[i]);
            ck_assert_msg(fabs(v->valuedouble - m[i]) <= 1e-3 * m[i] + 1e-7,
                          "image %d: mse %g, library %g", i, v->valuedouble, (double)m[i]);
            ck_assert_msg(v->valuedouble < 5e-3, "image %d: mse %g", i, v->valuedouble);
        }
        tu_resp_free(&r);
    }
    /* a DCGAN row costs more than a dense one: fewer rows while the request
     * waits, but the default options for one image */
    js.len = 0;
    ld_buf_puts(&js, "{\"images\":");
    ld_buf_json_matrix(&js, x, 4, (size_t)X);
    ld_buf_puts(&js, ",\"steps\":300,\"restarts\":8}");
    tu_http_once(&r, "POST", "/v1/models/dcgan/invert", js.data, js.len, &q);
    tu_expect_error(&r, 422, "too_much_work", "at most 1200 per request", "dcgan 4 x 8 x 300", 1);
    tu_resp_free(&r);
    ld_buf_free(&js);
    free(zs);
    free(x);
    ld_model_free(g);
}
END_TEST

Suite *suite_invert(void)
{
    Suite *s = suite_create("invert");
    TCase *core = tcase_create("core");
    tcase_set_timeout(core, 300);
    tcase_add_test(core, test_input_gradient);
    tcase_add_test(core, test_deterministic_for_seed);
    tcase_add_test(core, test_known_z_far_below_baseline);
    tcase_add_test(core, test_refusals);
    tcase_add_loop_test(core, test_layer_input_gradient, 0, 2);
    tcase_add_test(core, test_dcgan_recovers_sample);
    suite_add_tcase(s, core);
    TCase *http = tcase_create("http");
    tcase_set_timeout(http, 300);
    tcase_add_unchecked_fixture(http, http_setup, http_teardown);
    tcase_add_test(http, test_route_answers);
    tcase_add_test(http, test_route_errors);
    tcase_add_test(http, test_route_npy_body);
    tcase_add_test(http, test_route_job);
    tcase_add_test(http, test_interpolate_image_endpoint);
    suite_add_tcase(s, http);
    TCase *dc = tcase_create("dcgan_http");
    tcase_set_timeout(dc, 300);
    tcase_add_unchecked_fixture(dc, dcgan_setup, dcgan_teardown);
    tcase_add_test(dc, test_dcgan_route);
    suite_add_tcase(s, dc);
    return s;
}

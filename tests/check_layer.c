/* check_layer.c — the layer-list core (layer.h, nets.h, allreduce.h).
 *
 * - Against PyTorch: tests/fixtures/layers.safetensors, written once by
 *   tests/reference/make_layer_fixtures.py (see its docstring): per case the
 *   layer list (metadata, parsed with ld_net_from_json), the state dict, the
 *   input, the upstream gradient, and torch's output, input gradient,
 *   parameter gradients and running statistics after the forward.
 *   Tolerance TOL = 2e-5 relative per element against max(|torch|, floor),
 *   floor = 0.05 * max|torch| of the quantity; the worst is printed.  The
 *   bias of a layer feeding a training batch norm has a true gradient of
 *   0 (the norm subtracts it again) and both sides hold rounding noise
 *   there: it is held to ZERO_ABS = 1e-5 absolute instead.
 * - Finite differences for every layer kind (central, h = 1e-2 in double on
 *   a float net; tolerance FD_TOL = 1e-2 relative to the larger of the two
 *   and 0.05 * the largest gradient of the tensor).
 * - Batch norm with the batch split over 1 and 2 threads: outputs, input
 *   gradients, summed parameter gradients and running statistics agree
 *   within 1e-5.
 * - JSON round trips, tensor names, the table, the shipped architectures
 *   and the dense MLPs as layer lists (same names, offsets and results as
 *   ld_mlp_t).
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/allreduce.h"
#include "latentd/ckpt.h"
#include "latentd/data.h"
#include "latentd/layer.h"
#include "latentd/model.h"
#include "latentd/nets.h"
#include "latentd/nn.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

/* the conv VAE decoder that --arch conv builds */
static const int conv_dec[] = LD_CONV_VAE_DEC;

#define FIX "tests/fixtures/layers.safetensors"
#define TOL 2e-5
#define FLOOR_FRAC 0.05
#define FLOOR_ABS 1e-30
#define ZERO_ABS 1e-5
#define FD_TOL 1e-2
#define MAX_T 64

/* ---- helpers ---- */

/* Largest relative difference of got against want, printed and returned. */
static double worst(const char *what, const float *got, const float *want, size_t n)
{
    double floor = FLOOR_FRAC * tu_max_abs(want, n);
    floor = floor > FLOOR_ABS ? floor : FLOOR_ABS;
    double d = tu_max_rel_diff(got, want, n, floor);
    printf("  %-40s n=%-5zu max rel diff %.3g\n", what, n, d);
    return d;
}

static void check_close(const char *what, const float *got, const float *want, size_t n,
                        double tol)
{
    double d = worst(what, got, want, n);
    ck_assert_msg(d <= tol, "%s: max relative difference %g > %g", what, d, tol);
}

/* A net from JSON, laid out from 0, with its blocks. */
typedef struct {
    ld_net_t net;
    float *params, *grads, *bufs;
} tnet_t;

static void tnet_from_json(tnet_t *t, const char *json)
{
    size_t po = 0, bo = 0;
    ld_err_t err = {{0}};
    int rc = ld_net_from_json(json, &t->net, &po, &bo, &err);
    ck_assert_msg(rc == LD_OK, "%s: %s", json, err.msg);
    t->params = calloc(po + 1, sizeof(float));
    t->grads = calloc(po + 1, sizeof(float));
    t->bufs = calloc(bo + 1, sizeof(float));
    ck_assert(t->params && t->grads && t->bufs);
}

static void tnet_free(tnet_t *t)
{
    free(t->params);
    free(t->grads);
    free(t->bufs);
}

static size_t in_size(const ld_net_t *n) { return (size_t)n->in.c * n->in.h * n->in.w; }

static size_t out_size(const ld_net_t *n)
{
    ld_shape_t s = ld_net_out(n);
    return (size_t)s.c * s.h * s.w;
}

/* ---- against PyTorch ---- */

static const float *fx(const ld_ckpt_t *c, const char *pre, const char *name, size_t n)
{
    char full[LD_CKPT_NAME_MAX];
    snprintf(full, sizeof full, "%s%.100s", pre, name);
    const ld_tensor_view_t *t = ld_ckpt_find(c, full);
    ck_assert_msg(t != NULL, "fixture lacks %s (run from the repository root)", full);
    ck_assert_msg(t->numel == n, "fixture %s has %zu values, expected %zu", full, t->numel, n);
    return t->data;
}

/* A bias whose layer's output goes straight into a batch norm in training. */
static int feeds_training_bn(const ld_net_t *net, const ld_net_tensor_t *t, int training)
{
    size_t len = strlen(t->name);
    if (!training || len < 5 || strcmp(t->name + len - 5, ".bias") != 0)
        return 0;
    for (int i = 0; i + 1 < net->n_layers; i++) {
        const ld_layer_t *L = &net->layers[i], *N = &net->layers[i + 1];
        if (t->off >= L->param_off && t->off < L->param_off + L->n_params)
            return N->kind == LD_LAYER_BN1D || N->kind == LD_LAYER_BN2D;
    }
    return 0;
}

static void run_fixture_case(const ld_ckpt_t *c, const char *name)
{
    printf("%s:\n", name);
    const char *json = ld_ckpt_meta(c, name);
    ck_assert_msg(json != NULL, "fixture lacks the layer list of %s", name);
    tnet_t t;
    tnet_from_json(&t, json);
    ld_net_t *net = &t.net;

    /* every state_dict entry maps to one of our tensors, by name and shape */
    ld_net_tensor_t tt[MAX_T];
    int nt = ld_net_tensors(net, tt, MAX_T);
    int in_file = 0;
    char pre[40];
    snprintf(pre, sizeof pre, "%s.", name);
    for (int i = 0; i < c->n_tensors; i++)
        in_file += strncmp(c->tensors[i].name, pre, strlen(pre)) == 0;
    ck_assert_msg(in_file == nt, "%s: torch has %d tensors, latentd %d", name, in_file, nt);
    for (int i = 0; i < nt; i++) {
        const ld_tensor_view_t *v = ld_ckpt_find(c, tt[i].name);
        ck_assert_msg(v != NULL, "torch has no tensor %s", tt[i].name);
        ck_assert_msg(v->ndim == tt[i].ndim, "%s: ndim %d vs torch %d", tt[i].name, tt[i].ndim,
                      v->ndim);
        for (int d = 0; d < v->ndim; d++)
            ck_assert_msg(v->shape[d] == tt[i].shape[d], "%s: dim %d is %lld, torch %lld",
                          tt[i].name, d, (long long)tt[i].shape[d], (long long)v->shape[d]);
        if (tt[i].dtype == LD_DTYPE_I64) {
            const ld_layer_t *L = NULL;
            int li = 0;
            for (; li < net->n_layers; li++)
                if (net->layers[li].n_bufs && tt[i].off == net->layers[li].buf_off + 2 * (size_t)net->layers[li].in.c)
                    break;
            L = &net->layers[li];
            ck_assert(L->n_bufs > 0);
            ld_net_set_nbt(net, li, t.bufs, (int64_t)v->data[0]);
        } else {
            memcpy((tt[i].is_buffer ? t.bufs : t.params) + tt[i].off, v->data,
                   v->numel * sizeof(float));
        }
    }

    const float *lab = NULL;
    char key[80];
    snprintf(key, sizeof key, "labels.%s", name);
    const ld_tensor_view_t *lv = ld_ckpt_find(c, key);
    snprintf(key, sizeof key, "x.%s", name);
    const ld_tensor_view_t *xv = ld_ckpt_find(c, key);
    ck_assert(xv != NULL);
    int B = (int)xv->shape[0];
    ck_assert_uint_eq(xv->numel, (size_t)B * in_size(net));
    uint8_t labels[64];
    if (lv) {
        lab = lv->data;
        for (int i = 0; i < B; i++)
            labels[i] = (uint8_t)lab[i];
    }
    int training = strstr(name, "_eval") == NULL;
    ld_net_ws_t ws;
    ck_assert_int_eq(ld_net_ws_init(&ws, net, B), LD_OK);
    ld_net_run_t run = {.training = training, .labels = lv ? labels : NULL,
                        .update = training ? t.bufs : NULL};
    const float *y = ld_net_forward(net, t.params, t.bufs, &ws, B, xv->data, &run);
    size_t no = (size_t)B * out_size(net), ni = (size_t)B * in_size(net);
    char what[96];
    snprintf(what, sizeof what, "y.%s", name);
    check_close(what, y, fx(c, "y.", name, no), no, TOL);
    float *dx = calloc(ni, sizeof *dx);
    ld_net_backward(net, t.params, t.grads, &ws, fx(c, "dy.", name, no), dx, &run);
    snprintf(what, sizeof what, "dx.%s", name);
    check_close(what, dx, fx(c, "dx.", name, ni), ni, TOL);
    for (int i = 0; i < nt; i++) {
        if (tt[i].is_buffer) {
            if (tt[i].dtype == LD_DTYPE_I64) {
                const float *want = fx(c, "after.", tt[i].name, 1);
                int li = 0;
                while (!(net->layers[li].n_bufs &&
                         tt[i].off == net->layers[li].buf_off + 2 * (size_t)net->layers[li].in.c))
                    li++;
                printf("  after.%-34s %lld (torch %g)\n", tt[i].name,
                       (long long)ld_net_nbt(net, li, t.bufs), (double)want[0]);
                ck_assert_int_eq(ld_net_nbt(net, li, t.bufs), (int64_t)want[0]);
            } else {
                snprintf(what, sizeof what, "after.%.80s", tt[i].name);
                check_close(what, t.bufs + tt[i].off, fx(c, "after.", tt[i].name, tt[i].numel),
                            tt[i].numel, TOL);
            }
            continue;
        }
        snprintf(what, sizeof what, "grad.%.80s", tt[i].name);
        const float *want = fx(c, "grad.", tt[i].name, tt[i].numel);
        if (feeds_training_bn(net, &tt[i], training)) {
            double mg = tu_max_abs(t.grads + tt[i].off, tt[i].numel), mw = tu_max_abs(want, tt[i].numel);
            printf("  %-40s n=%-5zu C %.3g torch %.3g (true value 0)\n", what, tt[i].numel, mg, mw);
            ck_assert_msg(mg <= ZERO_ABS && mw <= ZERO_ABS, "%s: should be 0, C %g torch %g",
                          what, mg, mw);
            continue;
        }
        check_close(what, t.grads + tt[i].off, want, tt[i].numel, TOL);
    }
    free(dx);
    ld_net_ws_free(&ws);
    tnet_free(&t);
}

static const char *const fixture_cases[] = {"conv",      "convt",   "bn2d",      "bn1d",
                                            "bn_eval",   "layernorm", "embed_z", "embed_img",
                                            "residual"};

START_TEST(test_against_torch)
{
    ld_ckpt_t *c = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_ckpt_read(FIX, &c, &err) == LD_OK, "%s (run from the repository root)",
                  err.msg);
    run_fixture_case(c, fixture_cases[_i]);
    ld_ckpt_free(c);
}
END_TEST

/* ---- finite differences ---- */

typedef struct {
    const char *what;
    int B, training, n_classes;
    const char *json;
} fd_case_t;

#define J(in, layers) "{\"name\":\"n\",\"names\":\"sequential\",\"input\":" in ",\"layers\":[" layers "]}"
static const fd_case_t fd_cases[] = {
    {"Linear", 3, 1, 0, J("[5,1,1]", "{\"type\":\"Linear\",\"out\":4}")},
    {"Conv2d", 2, 1, 0, J("[2,5,5]", "{\"type\":\"Conv2d\",\"out\":3,\"kernel\":3,\"stride\":2,\"padding\":1}")},
    {"ConvTranspose2d", 2, 1, 0, J("[3,3,3]", "{\"type\":\"ConvTranspose2d\",\"out\":2,\"kernel\":4,\"stride\":2,\"padding\":1}")},
    {"BatchNorm1d train", 4, 1, 0, J("[4,1,1]", "{\"type\":\"Linear\",\"out\":3},{\"type\":\"BatchNorm1d\"}")},
    {"BatchNorm2d train", 3, 1, 0, J("[2,3,3]", "{\"type\":\"BatchNorm2d\"}")},
    {"BatchNorm2d eval", 3, 0, 0, J("[2,3,3]", "{\"type\":\"BatchNorm2d\"}")},
    {"LayerNorm", 3, 1, 0, J("[2,2,3]", "{\"type\":\"LayerNorm\"}")},
    {"Dropout", 3, 1, 0, J("[6,1,1]", "{\"type\":\"Dropout\",\"p\":0.4}")},
    {"LeakyReLU", 3, 1, 0, J("[6,1,1]", "{\"type\":\"LeakyReLU\",\"slope\":0.2}")},
    {"ReLU", 3, 1, 0, J("[6,1,1]", "{\"type\":\"ReLU\"}")},
    {"Tanh", 3, 1, 0, J("[6,1,1]", "{\"type\":\"Tanh\"}")},
    {"Sigmoid", 3, 1, 0, J("[6,1,1]", "{\"type\":\"Sigmoid\"}")},
    {"Flatten+Unflatten", 2, 1, 0, J("[2,2,2]", "{\"type\":\"Flatten\"},{\"type\":\"Linear\",\"out\":8},{\"type\":\"Unflatten\",\"shape\":[2,2,2]},{\"type\":\"Conv2d\",\"out\":1,\"kernel\":2,\"stride\":1,\"padding\":0}")},
    {"EmbedConcat", 3, 1, 3, J("[1,2,2]", "{\"type\":\"EmbedConcat\",\"classes\":3,\"channels\":2},{\"type\":\"Conv2d\",\"out\":2,\"kernel\":2,\"stride\":1,\"padding\":1}")},
    {"Residual", 4, 1, 0, J("[3,1,1]", "{\"type\":\"Residual\",\"layers\":[{\"type\":\"Linear\",\"out\":3},{\"type\":\"BatchNorm1d\"},{\"type\":\"Tanh\"},{\"type\":\"Residual\",\"layers\":[{\"type\":\"Linear\",\"out\":3}]}]},{\"type\":\"Sigmoid\"}")},
};

/* loss = sum(y * r) in double, from a fresh forward (same dropout mask: the
 * rng restarts from the same seed). */
static double fd_loss(tnet_t *t, ld_net_ws_t *ws, int B, const float *x, const float *r,
                      const ld_net_run_t *run0)
{
    ld_rng_t rng;
    ld_rng_seed(&rng, 99);
    ld_net_run_t run = *run0;
    run.rng = &rng;
    run.update = NULL;
    const float *y = ld_net_forward(&t->net, t->params, t->bufs, ws, B, x, &run);
    double s = 0;
    for (size_t i = 0; i < (size_t)B * out_size(&t->net); i++)
        s += (double)y[i] * r[i];
    return s;
}

static double fd_compare(const char *what, float *v, size_t n, const float *an, tnet_t *t,
                         ld_net_ws_t *ws, int B, const float *x, const float *r,
                         const ld_net_run_t *run)
{
    const float h = 3e-3f;
    double big = tu_max_abs(an, n), w = 0;
    for (size_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + h;
        double lp = fd_loss(t, ws, B, x, r, run);
        v[i] = keep - h;
        double lm = fd_loss(t, ws, B, x, r, run);
        v[i] = keep;
        double fd = (lp - lm) / (2.0 * (double)h);
        double scale = fmax(fmax(fabs(fd), fabs((double)an[i])), fmax(0.05 * big, 0.05));
        double d = fabs(fd - an[i]) / scale;
        w = d > w ? d : w;
    }
    printf("  %-40s n=%-5zu max rel diff %.3g\n", what, n, w);
    return w;
}

START_TEST(test_finite_differences)
{
    const fd_case_t *fc = &fd_cases[_i];
    printf("finite differences, %s:\n", fc->what);
    tnet_t t;
    tnet_from_json(&t, fc->json);
    ld_rng_t r;
    ld_rng_seed(&r, 7 + (uint64_t)_i);
    ld_net_init_params(&t.net, t.params, t.bufs, &r);
    /* non-trivial norm affine parts and running statistics */
    for (int i = 0; i < t.net.n_layers; i++) {
        const ld_layer_t *L = &t.net.layers[i];
        if (L->kind == LD_LAYER_BN1D || L->kind == LD_LAYER_BN2D || L->kind == LD_LAYER_LAYERNORM)
            ld_rng_fill_uniform(&r, t.params + L->param_off, L->n_params, 0.5f, 1.5f);
        if (L->n_bufs) {
            ld_rng_fill_uniform(&r, t.bufs + L->buf_off, (size_t)L->in.c, -0.3f, 0.3f);
            ld_rng_fill_uniform(&r, t.bufs + L->buf_off + L->in.c, (size_t)L->in.c, 0.5f, 2.0f);
        }
    }
    int B = fc->B;
    size_t ni = (size_t)B * in_size(&t.net), no = (size_t)B * out_size(&t.net);
    float *x = malloc(ni * sizeof *x), *rr = malloc(no * sizeof *rr), *dx = malloc(ni * sizeof *dx);
    ld_rng_fill_normal(&r, x, ni, 0.2f, 1.0f);
    for (size_t i = 0; i < ni; i++) /* away from the kinks of (leaky) ReLU */
        x[i] = fabsf(x[i]) < 0.05f ? copysignf(0.05f, x[i]) : x[i];
    ld_rng_fill_normal(&r, rr, no, 0.0f, 1.0f);
    uint8_t labels[8];
    for (int i = 0; i < B; i++)
        labels[i] = (uint8_t)(fc->n_classes ? (i * 2 + 1) % fc->n_classes : 0);
    ld_net_ws_t ws;
    ck_assert_int_eq(ld_net_ws_init(&ws, &t.net, B), LD_OK);
    ld_net_run_t run = {.training = fc->training, .labels = fc->n_classes ? labels : NULL};
    /* analytic */
    fd_loss(&t, &ws, B, x, rr, &run);
    ld_net_backward(&t.net, t.params, t.grads, &ws, rr, dx, &run);
    double w = fd_compare("dx", x, ni, dx, &t, &ws, B, x, rr, &run);
    ck_assert_msg(w <= FD_TOL, "%s: dx differs from finite differences by %g", fc->what, w);
    ld_net_tensor_t tt[MAX_T];
    int nt = ld_net_tensors(&t.net, tt, MAX_T);
    for (int i = 0; i < nt; i++) {
        if (tt[i].is_buffer)
            continue;
        w = fd_compare(tt[i].name, t.params + tt[i].off, tt[i].numel, t.grads + tt[i].off, &t,
                       &ws, B, x, rr, &run);
        ck_assert_msg(w <= FD_TOL, "%s: gradient of %s differs from finite differences by %g",
                      fc->what, tt[i].name, w);
    }
    free(x);
    free(rr);
    free(dx);
    ld_net_ws_free(&ws);
    tnet_free(&t);
}
END_TEST

/* A wrong backward must fail the check: flip one gradient and see it. */
START_TEST(test_finite_differences_can_fail)
{
    tnet_t t;
    tnet_from_json(&t, fd_cases[1].json);
    ld_rng_t r;
    ld_rng_seed(&r, 3);
    ld_net_init_params(&t.net, t.params, t.bufs, &r);
    int B = 2;
    size_t ni = (size_t)B * in_size(&t.net), no = (size_t)B * out_size(&t.net);
    float *x = malloc(ni * sizeof *x), *rr = malloc(no * sizeof *rr);
    ld_rng_fill_normal(&r, x, ni, 0.0f, 1.0f);
    ld_rng_fill_normal(&r, rr, no, 0.0f, 1.0f);
    ld_net_ws_t ws;
    ck_assert_int_eq(ld_net_ws_init(&ws, &t.net, B), LD_OK);
    ld_net_run_t run = {.training = 1};
    fd_loss(&t, &ws, B, x, rr, &run);
    ld_net_backward(&t.net, t.params, t.grads, &ws, rr, NULL, &run);
    t.grads[5] = -t.grads[5] + 0.5f;
    double w = fd_compare("weight (corrupted)", t.params, t.net.layers[0].n_params, t.grads, &t,
                          &ws, B, x, rr, &run);
    ck_assert_msg(w > FD_TOL, "a corrupted gradient passed the check (%g)", w);
    free(x);
    free(rr);
    ld_net_ws_free(&ws);
    tnet_free(&t);
}
END_TEST

/* ---- whole-batch batch norm over threads ---- */

#define SPLIT_B 7
static const char *const split_net =
    J("[1,6,6]", "{\"type\":\"Conv2d\",\"out\":4,\"kernel\":4,\"stride\":2,\"padding\":1},"
                 "{\"type\":\"BatchNorm2d\"},{\"type\":\"LeakyReLU\",\"slope\":0.2},"
                 "{\"type\":\"Flatten\"},{\"type\":\"Linear\",\"out\":5},{\"type\":\"BatchNorm1d\"},"
                 "{\"type\":\"Residual\",\"layers\":[{\"type\":\"Linear\",\"out\":5},"
                 "{\"type\":\"BatchNorm1d\"},{\"type\":\"ReLU\"}]},{\"type\":\"Linear\",\"out\":2}");

typedef struct {
    const tnet_t *t;
    float *grads, *bufs;
    ld_allreduce_t *ar;
    int rank, lo, b, B;
    const float *x, *r;
    float *y, *dx;
} split_worker_t;

/* One worker as train.c runs it: its rows, loss = mean over its own rows of
 * sum(y * r), so dout = r / b; gradients summed later with weight b / B. */
static void *split_run(void *arg)
{
    split_worker_t *w = arg;
    const ld_net_t *net = &w->t->net;
    size_t I = in_size(net), O = out_size(net);
    ld_net_ws_t ws;
    LD_ASSERT(ld_net_ws_init(&ws, net, SPLIT_B) == LD_OK);
    ld_net_run_t run = {.training = 1, .ar = w->ar, .rank = w->rank,
                        .share = (float)w->b / (float)w->B,
                        .update = w->rank == 0 ? w->bufs : NULL};
    const float *y = ld_net_forward(net, w->t->params, w->bufs, &ws, w->b,
                                    w->x + (size_t)w->lo * I, &run);
    memcpy(w->y + (size_t)w->lo * O, y, (size_t)w->b * O * sizeof *y);
    float *dout = malloc((size_t)SPLIT_B * O * sizeof *dout);
    LD_ASSERT(dout);
    for (size_t i = 0; i < (size_t)w->b * O; i++)
        dout[i] = w->r[(size_t)w->lo * O + i] / (float)w->b;
    ld_net_backward(net, w->t->params, w->grads, &ws, dout, w->dx + (size_t)w->lo * I, &run);
    free(dout);
    ld_net_ws_free(&ws);
    return NULL;
}

/* Row counts per worker, as train.c's contiguous slices; the last pattern has
 * a worker with no rows, which must still take part. */
static const int split_rows[][3] = {{4, 3, 0}, {3, 3, 1}, {4, 3, 0}};
static const int split_workers[] = {2, 3, 3};

START_TEST(test_bn_split_threads)
{
    const int nw = split_workers[_i];
    const int *rows = split_rows[_i];
    tnet_t t;
    tnet_from_json(&t, split_net);
    ld_rng_t r;
    ld_rng_seed(&r, 11);
    ld_net_init_params(&t.net, t.params, t.bufs, &r);
    const ld_net_t *net = &t.net;
    size_t I = in_size(net), O = out_size(net), P = net->n_params, NB = net->n_bufs;
    float *x = malloc(SPLIT_B * I * sizeof *x), *rr = malloc(SPLIT_B * O * sizeof *rr);
    ld_rng_fill_normal(&r, x, SPLIT_B * I, 0.5f, 1.0f);
    ld_rng_fill_normal(&r, rr, SPLIT_B * O, 0.0f, 1.0f);
    float *y[2], *dx[2], *g[4], *bufs[2], *gsum = calloc(P, sizeof(float));
    for (int k = 0; k < 2; k++) {
        y[k] = calloc(SPLIT_B * O, sizeof(float));
        dx[k] = calloc(SPLIT_B * I, sizeof(float));
        bufs[k] = malloc(NB * sizeof(float));
        memcpy(bufs[k], t.bufs, NB * sizeof(float));
    }
    for (int k = 0; k < 4; k++)
        g[k] = calloc(P, sizeof(float));
    /* 1 thread: all rows */
    split_worker_t one = {&t, g[3], bufs[0], NULL, 0, 0, SPLIT_B, SPLIT_B, x, rr, y[0], dx[0]};
    split_run(&one);
    /* nw threads */
    ld_allreduce_t *ar = NULL;
    ck_assert_int_eq(ld_allreduce_new(nw, 64, &ar), LD_OK);
    split_worker_t w[3];
    pthread_t th[3];
    for (int k = 0, lo = 0; k < nw; lo += rows[k], k++)
        w[k] = (split_worker_t){&t, g[k], bufs[1], ar, k, lo, rows[k], SPLIT_B, x, rr, y[1], dx[1]};
    for (int k = 1; k < nw; k++)
        ck_assert_int_eq(pthread_create(&th[k], NULL, split_run, &w[k]), 0);
    split_run(&w[0]);
    for (int k = 1; k < nw; k++)
        pthread_join(th[k], NULL);
    /* the trainer's reduce; each worker's dx is of its own mean loss */
    for (int k = 0; k < nw; k++) {
        float share = (float)rows[k] / SPLIT_B;
        for (size_t i = 0; i < P; i++)
            gsum[i] += g[k][i] * share;
        for (size_t i = (size_t)w[k].lo * I; i < (size_t)(w[k].lo + rows[k]) * I; i++)
            dx[1][i] *= share;
    }
    printf("batch norm, whole batch over 1 and %d threads (rows %d+%d+%d):\n", nw, rows[0],
           rows[1], rows[2]);
    check_close("output", y[1], y[0], SPLIT_B * O, 1e-5);
    check_close("input gradient", dx[1], dx[0], SPLIT_B * I, 1e-5);
    check_close("parameter gradients (summed)", gsum, g[3], P, 1e-5);
    check_close("running statistics", bufs[1], bufs[0], NB, 1e-5);
    /* and against the statistics of part of the batch, which must differ */
    double d = tu_max_rel_diff(g[0], g[3], P, 1e-3 * tu_max_abs(g[3], P));
    ck_assert_msg(d > 1e-3, "one worker's gradient alone matches the whole batch's");
    ld_allreduce_free(ar);
    for (int k = 0; k < 2; k++) {
        free(y[k]);
        free(dx[k]);
        free(bufs[k]);
    }
    for (int k = 0; k < 4; k++)
        free(g[k]);
    free(gsum);
    free(x);
    free(rr);
    tnet_free(&t);
}
END_TEST

/* ---- descriptions ---- */

static void roundtrip(const ld_net_t *a)
{
    char j1[8192], j2[8192];
    int n = ld_net_to_json(a, j1, sizeof j1);
    ck_assert_msg(n > 0, "%s: JSON does not fit", a->name);
    ld_net_t b;
    size_t po = a->param_off, bo = a->buf_off;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_net_from_json(j1, &b, &po, &bo, &err) == LD_OK, "%s: %s", j1, err.msg);
    ck_assert_int_eq(ld_net_to_json(&b, j2, sizeof j2), n);
    ck_assert_str_eq(j1, j2);
    ck_assert_int_eq(b.n_layers, a->n_layers);
    ck_assert_msg(memcmp(a->layers, b.layers, (size_t)a->n_layers * sizeof a->layers[0]) == 0,
                  "%s: layers differ after the round trip", a->name);
    ck_assert_uint_eq(b.n_params, a->n_params);
    ck_assert_uint_eq(b.n_bufs, a->n_bufs);
    ck_assert_str_eq(b.name, a->name);
    ck_assert_int_eq(b.names, a->names);
    ck_assert_int_eq(ld_net_to_json(a, j1, 10), LD_EINVAL);
}

START_TEST(test_json_roundtrip)
{
    ld_net_t g, d, e, mu, lv, dec, res;
    size_t po = 0, bo = 0;
    ld_nets_dcgan(100, &g, &d, &po, &bo);
    ld_nets_conv_vae(20, LD_CONV_VAE_DEC_N, conv_dec, &e, &mu, &lv, &dec, &po, &bo);
    ld_nets_resmlp(&res, "generator", 100, 256, 2, 784, LD_LAYER_SIGMOID, 0.2f, &po, &bo);
    const ld_net_t *all[] = {&g, &d, &e, &mu, &lv, &dec, &res};
    for (unsigned i = 0; i < LD_ARRAY_LEN(all); i++)
        roundtrip(all[i]);
    for (unsigned i = 0; i < LD_ARRAY_LEN(fd_cases); i++) {
        tnet_t t;
        tnet_from_json(&t, fd_cases[i].json);
        roundtrip(&t.net);
        tnet_free(&t);
    }
    /* odd floats survive */
    ld_net_t n;
    ld_net_init(&n, "odd", LD_NAMES_SEQUENTIAL, (ld_shape_t){3, 1, 1});
    ck_assert_int_eq(ld_net_add_act(&n, LD_LAYER_LRELU, 0.123456789f, NULL), LD_OK);
    ck_assert_int_eq(ld_net_add_dropout(&n, 1.0f / 3.0f, NULL), LD_OK);
    ck_assert_int_eq(ld_net_add_bn(&n, LD_LAYER_BN1D, 0.01f, 1e-3f, NULL), LD_OK);
    po = bo = 0;
    ck_assert_int_eq(ld_net_layout(&n, &po, &bo, NULL), LD_OK);
    roundtrip(&n);
}
END_TEST

START_TEST(test_json_rejects)
{
    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"[1,2]", "not a JSON object"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[1,1,1],\"layers\":[{\"type\":\"Conv3d\"}]}", "unknown type"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[1,4,4],\"layers\":[{\"type\":\"Linear\",\"out\":3}]}", "flat input"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[1,4,4],\"layers\":[{\"type\":\"Conv2d\",\"out\":3,\"kernel\":9,\"stride\":1,\"padding\":0}]}", "kernel larger"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[1,4,4],\"layers\":[{\"type\":\"Conv2d\",\"out\":3,\"kernel\":3,\"stride\":1}]}", "\"padding\""},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[3,1,1],\"layers\":[{\"type\":\"Residual\",\"layers\":[{\"type\":\"Linear\",\"out\":4}]}]}", "same shape"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[3,1,1],\"layers\":[{\"type\":\"Residual\",\"layers\":[]}]}", "empty residual"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[0,1,1],\"layers\":[]}", "\"input\""},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[3,1,1],\"layers\":[]}", "no layers"},
        {"{\"name\":\"n\",\"names\":\"weird\",\"input\":[3,1,1],\"layers\":[]}", "\"names\""},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[3,1,1],\"layers\":[{\"type\":\"Dropout\",\"p\":1}]}", "p must be"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[6,1,1],\"layers\":[{\"type\":\"Unflatten\",\"shape\":[2,2,2]}]}", "target's size"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[3,1,1],\"layers\":[{\"type\":\"BatchNorm1d\",\"eps\":\"x\"}]}", "must be a number"},
        {"{\"name\":\"n\",\"names\":\"sequential\",\"input\":[1,60000,60000],\"layers\":[]}", "\"input\""},
    };
    for (unsigned i = 0; i < LD_ARRAY_LEN(bad); i++) {
        ld_net_t n;
        size_t po = 0, bo = 0;
        ld_err_t err = {{0}};
        int rc = ld_net_from_json(bad[i].json, &n, &po, &bo, &err);
        ck_assert_msg(rc != LD_OK, "accepted %s", bad[i].json);
        ck_assert_msg(strstr(err.msg, bad[i].msg), "%s: message \"%s\" lacks \"%s\"", bad[i].json,
                      err.msg, bad[i].msg);
    }
}
END_TEST

static const ld_net_tensor_t *find_tensor(const ld_net_tensor_t *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

START_TEST(test_dcgan_shapes_names_table)
{
    ld_net_t g, d;
    size_t po = 0, bo = 0;
    ld_nets_dcgan(100, &g, &d, &po, &bo);
    ld_shape_t go = ld_net_out(&g), dout = ld_net_out(&d);
    ck_assert(go.c == 1 && go.h == 28 && go.w == 28);
    ck_assert(dout.c == 1 && dout.h == 1 && dout.w == 1);
    ck_assert_uint_eq(g.param_off, 0);
    ck_assert_uint_eq(d.param_off, g.n_params);
    ck_assert_uint_eq(po, g.n_params + d.n_params);
    ld_net_tensor_t t[MAX_T];
    int n = ld_net_tensors(&g, t, MAX_T);
    ck_assert_int_eq(ld_net_tensors(&g, NULL, 0), n);
    /* torch: Linear 0, Unflatten 1, BN 2, ReLU 3, ConvT 4, BN 5, ReLU 6, ConvT 7, Sigmoid 8 */
    static const char *const want[] = {
        "generator.0.weight", "generator.0.bias", "generator.2.weight", "generator.2.bias",
        "generator.2.running_mean", "generator.2.running_var", "generator.2.num_batches_tracked",
        "generator.4.weight", "generator.4.bias", "generator.5.weight", "generator.5.bias",
        "generator.5.running_mean", "generator.5.running_var", "generator.5.num_batches_tracked",
        "generator.7.weight", "generator.7.bias"};
    ck_assert_int_eq(n, (int)LD_ARRAY_LEN(want));
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(t[i].name, want[i]);
    const ld_net_tensor_t *w4 = find_tensor(t, n, "generator.4.weight");
    ck_assert(w4->ndim == 4 && w4->shape[0] == 128 && w4->shape[1] == 64 && w4->shape[2] == 4);
    const ld_net_tensor_t *nbt = find_tensor(t, n, "generator.2.num_batches_tracked");
    ck_assert(nbt->dtype == LD_DTYPE_I64 && nbt->ndim == 0 && nbt->is_buffer);
    n = ld_net_tensors(&d, t, MAX_T);
    ck_assert_ptr_nonnull(find_tensor(t, n, "discriminator.3.running_var"));
    const ld_net_tensor_t *lin = find_tensor(t, n, "discriminator.6.weight");
    ck_assert(lin && lin->shape[0] == 1 && lin->shape[1] == 6272);
    /* every parameter and buffer float belongs to exactly one tensor */
    size_t covered = 0, bcovered = 0;
    n = ld_net_tensors(&g, t, MAX_T);
    for (int i = 0; i < n; i++) {
        if (t[i].is_buffer)
            bcovered += t[i].dtype == LD_DTYPE_I64 ? 2 : t[i].numel;
        else
            covered += t[i].numel;
    }
    ck_assert_uint_eq(covered, g.n_params);
    ck_assert_uint_eq(bcovered, g.n_bufs);

    char tab[4096];
    int len = ld_net_table(&g, tab, sizeof tab);
    ck_assert(len > 0 && len < (int)sizeof tab);
    printf("%s", tab);
    ck_assert_ptr_nonnull(strstr(tab, "generator.2"));
    ck_assert_ptr_nonnull(strstr(tab, "BatchNorm2d"));
    ck_assert_ptr_nonnull(strstr(tab, "(128, 7, 7)"));
    ck_assert_ptr_nonnull(strstr(tab, "(64, 14, 14)"));
    ck_assert_ptr_nonnull(strstr(tab, "(1, 28, 28)"));
    char total[64];
    snprintf(total, sizeof total, "%zu\n", g.n_params);
    ck_assert_ptr_nonnull(strstr(tab, total));
    ck_assert_int_eq(ld_net_table(&g, tab, 8), len); /* snprintf style */
    /* GEMM flops of one row: Linear, two transposed convs (Ci*Co*K*K per input
     * position), plus one per output value of the other layers */
    double gemm = 2.0 * (100 * 6272 + 128 * 64 * 16 * 49 + 64 * 1 * 16 * 196);
    double elementwise = 2 * 6272 + 2 * 12544 + 784; /* BN, ReLU twice; Sigmoid */
    ck_assert_double_eq_tol(ld_net_flops(&g), gemm + elementwise, 0.5);

    ld_net_t res;
    po = bo = 0;
    ld_nets_resmlp(&res, "generator", 100, 64, 2, 784, LD_LAYER_SIGMOID, 0.2f, &po, &bo);
    n = ld_net_tensors(&res, t, MAX_T);
    /* 0 Linear, 1 BN, 2 LReLU, 3 Residual(f: 0 Linear, 1 BN, 2 LReLU, 3 Linear, 4 BN), 4 LReLU, 5 Residual */
    ck_assert_ptr_nonnull(find_tensor(t, n, "generator.3.f.4.running_mean"));
    ck_assert_ptr_nonnull(find_tensor(t, n, "generator.5.f.0.weight"));
    ck_assert_ptr_nonnull(find_tensor(t, n, "generator.7.bias"));
    ck_assert_int_eq(ld_net_min_batch(&res), 2);
    len = ld_net_table(&res, tab, sizeof tab);
    ck_assert_ptr_nonnull(strstr(tab, "  generator.3.f.4"));
}
END_TEST

START_TEST(test_conv_vae_shapes)
{
    ld_net_t e, mu, lv, dec;
    size_t po = 0, bo = 0;
    ld_nets_conv_vae(20, LD_CONV_VAE_DEC_N, conv_dec, &e, &mu, &lv, &dec, &po, &bo);
    ck_assert_int_eq(ld_net_out(&e).c, 3136);
    ck_assert_int_eq(ld_net_out(&mu).c, 20);
    ld_shape_t o = ld_net_out(&dec);
    ck_assert(o.c == 1 && o.h == 28 && o.w == 28);
    ld_net_tensor_t t[MAX_T];
    int n = ld_net_tensors(&mu, t, MAX_T);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(t[0].name, "mu.weight");
    n = ld_net_tensors(&dec, t, MAX_T);
    ck_assert_str_eq(t[2].name, "decoder.3.weight"); /* the 3x3 conv at 7x7 */
    ck_assert_int_eq(t[2].numel, 64 * 64 * 9);
    ck_assert_int_eq(bo, 0);
    /* no channel list: the decoder of files written before it, ConvT at 3 */
    ld_net_t e0, mu0, lv0, dec0;
    size_t po0 = 0, bo0 = 0;
    ld_nets_conv_vae(20, 0, NULL, &e0, &mu0, &lv0, &dec0, &po0, &bo0);
    n = ld_net_tensors(&dec0, t, MAX_T);
    ck_assert_int_eq(n, 6);
    ck_assert_int_eq(dec0.layers[3].kind, LD_LAYER_CONVT2D);
    ck_assert_int_eq(t[2].numel, 64 * 32 * 16);
    ck_assert_int_eq(po - po0, 64 * 64 * 9 + 64);
    /* all four: 3x3 convs at 7x7 and at 14x14, named in order */
    ld_nets_conv_vae(20, 4, (const int[]){16, 24, 8, 12}, &e0, &mu0, &lv0, &dec0, &po0, &bo0);
    n = ld_net_tensors(&dec0, t, MAX_T);
    ck_assert_int_eq(n, 10);
    ck_assert_int_eq(dec0.layers[5].kind, LD_LAYER_CONVT2D);
    ck_assert_int_eq(dec0.layers[7].kind, LD_LAYER_CONV2D);
    ck_assert(ld_net_out(&dec0).c == 1 && ld_net_out(&dec0).h == 28);
    ck_assert_int_eq(t[4].numel, 24 * 8 * 16); /* ConvT 24 -> 8 */
}
END_TEST

/* The dense MLPs as layer lists: same names, shapes, offsets, and the same
 * bits forward and backward (dropout masks from the same stream). */
START_TEST(test_mlp_as_layers)
{
    static const ld_kind_t kinds[] = {LD_KIND_VAE, LD_KIND_GAN, LD_KIND_CLASSIFIER};
    for (unsigned k = 0; k < LD_ARRAY_LEN(kinds); k++) {
        ld_arch_t a;
        ld_arch_default(kinds[k], &a);
        ld_model_t *m = NULL;
        ld_err_t err = {{0}};
        ck_assert_int_eq(ld_model_new(&a, 5, &m, &err), LD_OK);
        ld_tensor_view_t tv[MAX_T];
        int nv = ld_model_tensors(m, m->params, tv, MAX_T), seen = 0;
        for (int i = 0; i < m->n_nets; i++) {
            const ld_mlp_t *mlp = &m->nets[i];
            ld_net_t net;
            ld_nets_from_mlp(mlp, &net);
            ck_assert_uint_eq(net.param_off, mlp->off);
            roundtrip(&net);
            ck_assert_uint_eq(net.n_params, mlp->n_params);
            ld_net_tensor_t t[MAX_T];
            int n = ld_net_tensors(&net, t, MAX_T);
            for (int j = 0; j < n; j++, seen++) {
                ck_assert_str_eq(t[j].name, tv[seen].name);
                ck_assert_int_eq(t[j].ndim, tv[seen].ndim);
                ck_assert(t[j].shape[0] == tv[seen].shape[0] && t[j].shape[1] == tv[seen].shape[1]);
                ck_assert_ptr_eq(m->params + t[j].off, tv[seen].data);
            }
            /* forward and backward, training with dropout */
            const int B = 5;
            size_t I = (size_t)mlp->size[0], O = (size_t)mlp->size[mlp->n_layers];
            float *x = malloc(B * I * sizeof *x), *dout = malloc(B * O * sizeof *dout);
            float *g1 = calloc(m->n_params, sizeof(float)), *g2 = calloc(m->n_params, sizeof(float));
            float *dx1 = malloc(B * I * sizeof(float)), *dx2 = malloc(B * I * sizeof(float));
            ld_rng_t r;
            ld_rng_seed(&r, 17);
            ld_rng_fill_normal(&r, x, B * I, 0.3f, 1.0f);
            ld_rng_fill_normal(&r, dout, B * O, 0.0f, 1.0f);
            ld_mlp_ws_t mws;
            ld_net_ws_t nws;
            ck_assert_int_eq(ld_mlp_ws_init(&mws, mlp, B, 1), LD_OK);
            ck_assert_int_eq(ld_net_ws_init(&nws, &net, B), LD_OK);
            ld_rng_t r1, r2;
            ld_rng_seed(&r1, 23);
            ld_rng_seed(&r2, 23);
            const float *y1 = ld_mlp_forward(mlp, m->params, &mws, B, x, &r1);
            ld_net_run_t run = {.training = 1, .rng = &r2};
            const float *y2 = ld_net_forward(&net, m->params, NULL, &nws, B, x, &run);
            ck_assert_msg(memcmp(y1, y2, B * O * sizeof(float)) == 0, "%s: outputs differ", mlp->name);
            ld_mlp_backward(mlp, m->params, g1, &mws, B, dout, dx1);
            ld_net_backward(&net, m->params, g2, &nws, dout, dx2, &run);
            ck_assert_msg(memcmp(dx1, dx2, B * I * sizeof(float)) == 0, "%s: dx differ", mlp->name);
            ck_assert_msg(memcmp(g1, g2, m->n_params * sizeof(float)) == 0, "%s: grads differ",
                          mlp->name);
            ld_mlp_ws_free(&mws);
            ld_net_ws_free(&nws);
            free(x), free(dout), free(g1), free(g2), free(dx1), free(dx2);
        }
        ck_assert_int_eq(seen, nv);
        ld_model_free(m);
    }
}
END_TEST

/* The DCGAN's nets with torch's default init from seed; blocks owned by the
 * caller. */
static void dcgan_blocks(int z, uint64_t seed, ld_net_t *g, ld_net_t *d, float **params,
                         float **bufs, ld_rng_t *r)
{
    size_t po = 0, bo = 0;
    ld_nets_dcgan(z, g, d, &po, &bo);
    *params = calloc(po, sizeof(float));
    *bufs = calloc(bo, sizeof(float));
    ck_assert(*params && *bufs);
    ld_rng_seed(r, seed);
    ld_net_init_params(g, *params, *bufs, r);
    ld_net_init_params(d, *params, *bufs, r);
}

/* Eval mode reads the running statistics and changes nothing; a worker
 * with no rows still takes part (b = 0). */
START_TEST(test_eval_and_empty)
{
    ld_net_t g, d;
    float *params, *bufs;
    ld_rng_t r;
    dcgan_blocks(16, 1, &g, &d, &params, &bufs, &r);
    size_t bo = g.n_bufs + d.n_bufs;
    float *copy = malloc(bo * sizeof(float));
    memcpy(copy, bufs, bo * sizeof(float));
    float z[3 * 16];
    ld_rng_fill_normal(&r, z, 48, 0, 1);
    ld_net_ws_t ws;
    ck_assert_int_eq(ld_net_ws_init(&ws, &g, 3), LD_OK);
    const float *x = ld_net_forward(&g, params, bufs, &ws, 3, z, NULL);
    for (int i = 0; i < 3 * 784; i++)
        ck_assert(x[i] > 0 && x[i] < 1);
    ck_assert(memcmp(copy, bufs, bo * sizeof(float)) == 0);
    /* training updates running statistics and counts batches */
    ld_net_run_t run = {.training = 1, .update = bufs};
    ld_net_forward(&g, params, bufs, &ws, 3, z, &run);
    ck_assert_int_eq(ld_net_nbt(&g, 2, bufs), 1);
    ck_assert_int_eq(ld_net_nbt(&g, 5, bufs), 1);
    ck_assert(memcmp(copy, bufs, bo * sizeof(float)) != 0);
    ck_assert_ptr_nonnull(ld_net_forward(&g, params, bufs, &ws, 0, z, NULL));
    ld_net_ws_free(&ws);
    free(params), free(bufs), free(copy);
}
END_TEST

/* The convolutions run their GEMMs over chunks of rows (as many as fit a
 * column buffer; 20 for the DCGAN's 4x4 layers of 64 and 128 channels):
 * 45 rows at once (chunks of 20, 20, 5) must give what 45 single rows give. */
START_TEST(test_conv_chunks)
{
    ld_net_t g, d;
    float *params, *bufs;
    ld_rng_t r;
    dcgan_blocks(100, 31, &g, &d, &params, &bufs, &r);
    size_t po = g.n_params + d.n_params;
    const ld_net_t *nets[2] = {&g, &d};
    enum { N = 45 };
    for (int k = 0; k < 2; k++) {
        const ld_net_t *net = nets[k];
        size_t I = in_size(net), O = out_size(net);
        float *x = malloc(N * I * sizeof *x), *dout = malloc(N * O * sizeof *dout);
        float *y1 = malloc(N * O * sizeof *y1), *dx1 = malloc(N * I * sizeof *dx1);
        float *dx2 = malloc(N * I * sizeof *dx2), *g1 = calloc(po, sizeof(float));
        float *g2 = calloc(po, sizeof(float));
        ld_rng_fill_normal(&r, x, N * I, 0.3f, 1.0f);
        ld_rng_fill_normal(&r, dout, N * O, 0.0f, 1.0f);
        ld_net_ws_t all, one;
        ck_assert_int_eq(ld_net_ws_init(&all, net, N), LD_OK);
        ck_assert_int_eq(ld_net_ws_init(&one, net, 1), LD_OK);
        const float *y = ld_net_forward(net, params, bufs, &all, N, x, NULL);
        ld_net_backward(net, params, g1, &all, dout, dx1, NULL);
        for (int i = 0; i < N; i++) {
            const float *yi = ld_net_forward(net, params, bufs, &one, 1, x + i * I, NULL);
            memcpy(y1 + i * O, yi, O * sizeof *y1);
            ld_net_backward(net, params, g2, &one, dout + i * O, dx2 + i * I, NULL);
        }
        printf("%s, %d rows at once against one by one:\n", net->name, N);
        check_close("output", y, y1, N * O, 1e-5);
        check_close("input gradient", dx1, dx2, N * I, 1e-5);
        check_close("parameter gradients", g1 + net->param_off, g2 + net->param_off,
                    net->n_params, 1e-5);
        ld_net_ws_free(&all);
        ld_net_ws_free(&one);
        free(x), free(dout), free(y1), free(dx1), free(dx2), free(g1), free(g2);
    }
    free(params), free(bufs);
}
END_TEST

/* ---- one training step of the DCGAN and the conv VAE against PyTorch ----
 * tests/fixtures/layer_steps.safetensors (see the script's docstring).
 * Tolerances: gradients and their norms STEP_TOL = 1e-4 relative with a
 * floor of 0.2 * the largest |torch| (as check_parity.c); losses 1e-5;
 * running statistics STEP_TOL; parameters after Adam STEP_TOL, except those
 * whose gradient is 0 in exact arithmetic (a bias feeding a training batch
 * norm): Adam turns rounding noise against eps into a step of up to lr, so
 * they are held to 2 lr absolute, and a running mean after it (which the
 * discriminator's third forward sees) to momentum * 2 lr. */
#define STEP_TOL 1e-4
#define STEP_FLOOR 0.2
#define STEP_B 8

static double step_worst = 0;

static void step_close(const char *what, const float *got, const float *want, size_t n)
{
    double floor = STEP_FLOOR * tu_max_abs(want, n);
    double d = tu_max_rel_diff(got, want, n, floor > 1e-30 ? floor : 1e-30);
    printf("  %-44s n=%-4zu max rel diff %.3g\n", what, n, d);
    ck_assert_msg(d <= STEP_TOL, "%s: max relative difference %g > %g", what, d, STEP_TOL);
    step_worst = d > step_worst ? d : step_worst;
}

static void norms3(const float *a, const float *minus, size_t n, float out[3])
{
    double l1 = 0, l2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double v = (double)a[i] - (minus ? (double)minus[i] : 0.0);
        l1 += fabs(v), l2 += v * v, mx = fabs(v) > mx ? fabs(v) : mx;
    }
    out[0] = (float)l1, out[1] = (float)sqrt(l2), out[2] = (float)mx;
}

/* The layer holding tensor t, among nets. */
static const ld_layer_t *layer_of(ld_net_t *const *nets, int n_nets, const ld_net_tensor_t *t,
                                  int *feeds_bn)
{
    for (int k = 0; k < n_nets; k++)
        for (int i = 0; i < nets[k]->n_layers; i++) {
            const ld_layer_t *L = &nets[k]->layers[i];
            size_t off = t->is_buffer ? L->buf_off : L->param_off;
            size_t n = t->is_buffer ? L->n_bufs : L->n_params;
            if (n && t->off >= off && t->off < off + n) {
                const ld_layer_t *N = i + 1 < nets[k]->n_layers ? L + 1 : NULL;
                *feeds_bn = N && (N->kind == LD_LAYER_BN1D || N->kind == LD_LAYER_BN2D) &&
                            strstr(t->name, ".bias") != NULL;
                return L;
            }
        }
    LD_ASSERT(0);
    return NULL;
}

/* The script's formula init of every Linear / Conv2d / ConvTranspose2d. */
static void formula_init(ld_net_t *const *nets, int n_nets, float *params)
{
    int k = 0;
    double bound = 0;
    for (int n = 0; n < n_nets; n++) {
        ld_net_tensor_t t[MAX_T];
        int nt = ld_net_tensors(nets[n], t, MAX_T);
        for (int i = 0; i < nt; i++, k++) {
            int fb;
            const ld_layer_t *L = layer_of(nets, n_nets, &t[i], &fb);
            if (L->kind != LD_LAYER_LINEAR && L->kind != LD_LAYER_CONV2D &&
                L->kind != LD_LAYER_CONVT2D)
                continue;
            if (t[i].ndim >= 2)
                bound = 1.0 / sqrt((double)(t[i].numel / (size_t)t[i].shape[0]));
            for (size_t j = 0; j < t[i].numel; j++) {
                uint32_t h = (uint32_t)((uint64_t)j * 2654435761u + (uint64_t)k * 40503u + 1u);
                double u = (double)h / 4294967296.0;
                params[t[i].off + j] = (float)(bound * (2.0 * u - 1.0));
            }
        }
    }
}

static void compare_step(const ld_ckpt_t *c, const char *pre, ld_net_t *const *nets, int n_nets,
                         const float *grads, const float *before, const float *after,
                         const float *bufs, float lr)
{
    for (int n = 0; n < n_nets; n++) {
        ld_net_tensor_t t[MAX_T];
        int nt = ld_net_tensors(nets[n], t, MAX_T);
        for (int i = 0; i < nt; i++) {
            char name[200], what[200];
            int zero;
            const ld_layer_t *L = layer_of(nets, n_nets, &t[i], &zero);
            if (t[i].is_buffer) {
                snprintf(name, sizeof name, "%.8safter.%.120s", pre, t[i].name);
                const ld_tensor_view_t *v = ld_ckpt_find(c, name);
                ck_assert_msg(v != NULL, "fixture lacks %s", name);
                if (t[i].dtype == LD_DTYPE_I64) {
                    int idx = (int)(L - nets[n]->layers);
                    ck_assert_int_eq(ld_net_nbt(nets[n], idx, bufs), (int64_t)v->data[0]);
                    continue;
                }
                ck_assert_uint_eq(v->numel, t[i].numel);
                if (strstr(name, "running_mean")) {
                    /* moves with the noise-driven bias before it: 0.1 * 2 lr */
                    double da = 0;
                    for (size_t j = 0; j < v->numel; j++)
                        da = fmax(da, fabs((double)bufs[t[i].off + j] - v->data[j]));
                    printf("  %-44s n=%-4zu max abs diff %.3g\n", name, v->numel, da);
                    ck_assert_msg(da <= 0.2 * lr, "%s: %g apart", name, da);
                    continue;
                }
                step_close(name, bufs + t[i].off, v->data, t[i].numel);
                continue;
            }
            size_t stride = t[i].numel / 256 > 1 ? t[i].numel / 256 : 1;
            size_t m = (t[i].numel + stride - 1) / stride;
            m = m < 256 ? m : 256;
            float *gs = malloc(m * sizeof *gs), *as = malloc(m * sizeof *as), nrm[3];
            for (size_t j = 0; j < m; j++) {
                gs[j] = grads[t[i].off + j * stride];
                as[j] = after[t[i].off + j * stride];
            }
            snprintf(name, sizeof name, "%.8sgrad.%.120s", pre, t[i].name);
            const ld_tensor_view_t *gv = ld_ckpt_find(c, name);
            ck_assert_msg(gv && gv->numel == m, "fixture lacks %s of %zu", name, m);
            snprintf(name, sizeof name, "%.8safter.%.120s", pre, t[i].name);
            const ld_tensor_view_t *av = ld_ckpt_find(c, name);
            ck_assert_msg(av && av->numel == m, "fixture lacks %s", name);
            if (zero) {
                double mg = tu_max_abs(gs, m), mw = tu_max_abs(gv->data, m), da = 0;
                for (size_t j = 0; j < m; j++)
                    da = fmax(da, fabs((double)as[j] - av->data[j]));
                printf("  %sgrad.%-38s C %.3g torch %.3g (true value 0); after: max abs diff %.3g\n",
                       pre, t[i].name, mg, mw, da);
                ck_assert_msg(mg <= 1e-5 && mw <= 1e-5, "%s: should be 0, C %g torch %g", name, mg, mw);
                ck_assert_msg(da <= 2 * lr, "%s: after the step %g apart", name, da);
            } else {
                snprintf(what, sizeof what, "%.8sgrad.%.120s (subset)", pre, t[i].name);
                step_close(what, gs, gv->data, m);
                norms3(grads + t[i].off, NULL, t[i].numel, nrm);
                snprintf(name, sizeof name, "%.8sgnorm.%.120s", pre, t[i].name);
                const ld_tensor_view_t *nv = ld_ckpt_find(c, name);
                ck_assert(nv && nv->numel == 3);
                step_close(name, nrm, nv->data, 3);
                snprintf(what, sizeof what, "%.8safter.%.120s (subset)", pre, t[i].name);
                step_close(what, as, av->data, m);
                norms3(after + t[i].off, before + t[i].off, t[i].numel, nrm);
                snprintf(name, sizeof name, "%.8sdnorm.%.120s", pre, t[i].name);
                nv = ld_ckpt_find(c, name);
                ck_assert(nv && nv->numel == 3);
                step_close(name, nrm, nv->data, 3);
            }
            free(gs);
            free(as);
        }
    }
}

static void loss_close(const char *what, double got, double want)
{
    double d = fabs(got - want) / fmax(fabs(want), 1e-6);
    printf("  %-44s C %.9g torch %.9g rel diff %.3g\n", what, got, want, d);
    ck_assert_msg(d <= 1e-5, "%s: C %.9g torch %.9g", what, got, want);
}

static ld_dataset_t *eight_images(void)
{
    ld_dataset_t *d = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_data_load("fashion-mnist", LD_SPLIT_TRAIN, STEP_B, &d, &err) == LD_OK,
                  "%s", err.msg);
    return d;
}

static ld_ckpt_t *steps_fixture(void)
{
    ld_ckpt_t *c = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_ckpt_read("tests/fixtures/layer_steps.safetensors", &c, &err) == LD_OK,
                  "%s (run from the repository root)", err.msg);
    return c;
}

START_TEST(test_dcgan_step_against_torch)
{
    ld_ckpt_t *c = steps_fixture();
    ld_dataset_t *data = eight_images();
    ld_net_t G, D;
    size_t P = 0, NB = 0;
    ld_nets_dcgan(100, &G, &D, &P, &NB);
    ld_net_t *nets[2] = {&G, &D};
    float *params = calloc(P, sizeof(float)), *grads = calloc(P, sizeof(float));
    float *m = calloc(P, sizeof(float)), *v = calloc(P, sizeof(float));
    float *before = malloc(P * sizeof(float)), *bufs = calloc(NB, sizeof(float));
    ld_rng_t r;
    ld_rng_seed(&r, 1);
    ld_net_init_params(&G, params, bufs, &r);
    ld_net_init_params(&D, params, bufs, &r);
    formula_init(nets, 2, params);
    memcpy(before, params, P * sizeof(float));
    const ld_tensor_view_t *zv = ld_ckpt_find(c, "gan.z");
    ck_assert(zv && zv->numel == STEP_B * 100);
    ld_net_ws_t wg, wd;
    ck_assert_int_eq(ld_net_ws_init(&wg, &G, STEP_B), LD_OK);
    ck_assert_int_eq(ld_net_ws_init(&wd, &D, STEP_B), LD_OK);
    ld_net_run_t run = {.training = 1, .update = bufs};
    float dl[STEP_B], *dfake = malloc(STEP_B * 784 * sizeof(float));
    const float s = 1.0f / STEP_B;
    const float *fake = ld_net_forward(&G, params, bufs, &wg, STEP_B, zv->data, &run);
    /* D step: real towards 0.9, fake (detached) towards 0 */
    const float *l = ld_net_forward(&D, params, bufs, &wd, STEP_B, data->x, &run);
    double loss_d = ld_bce_logits_const(STEP_B, l, 0.9f, dl, s) / STEP_B;
    ld_net_backward(&D, params, grads, &wd, dl, NULL, &run);
    l = ld_net_forward(&D, params, bufs, &wd, STEP_B, fake, &run);
    loss_d += ld_bce_logits_const(STEP_B, l, 0.0f, dl, s) / STEP_B;
    ld_net_backward(&D, params, grads, &wd, dl, NULL, &run);
    ld_adam_cfg_t adam = {2e-4f, 0.5f, 0.999f, 1e-8f};
    ld_adam_step(&adam, 1, D.n_params, params + D.param_off, grads + D.param_off,
                 m + D.param_off, v + D.param_off);
    /* G step through the updated D; D's gradients of this pass are discarded */
    float *scratch = calloc(P, sizeof(float));
    l = ld_net_forward(&D, params, bufs, &wd, STEP_B, fake, &run);
    double loss_g = ld_bce_logits_const(STEP_B, l, 1.0f, dl, s) / STEP_B;
    ld_net_backward(&D, params, scratch, &wd, dl, dfake, &run);
    /* the same input gradient, bit for bit, without D's weight gradients */
    float *dfake_only = malloc(STEP_B * 784 * sizeof(float));
    ld_net_backward(&D, params, NULL, &wd, dl, dfake_only, &run);
    ck_assert_int_eq(memcmp(dfake, dfake_only, STEP_B * 784 * sizeof(float)), 0);
    free(dfake_only);
    ld_net_backward(&G, params, grads, &wg, dfake, NULL, &run);
    ld_adam_step(&adam, 1, G.n_params, params + G.param_off, grads + G.param_off,
                 m + G.param_off, v + G.param_off);
    printf("DCGAN, one training step against PyTorch:\n");
    const ld_tensor_view_t *lv = ld_ckpt_find(c, "gan.loss");
    ck_assert(lv && lv->numel == 2);
    loss_close("loss_D", loss_d, lv->data[0]);
    loss_close("loss_G", loss_g, lv->data[1]);
    step_worst = 0;
    compare_step(c, "gan.", nets, 2, grads, before, params, bufs, adam.lr);
    printf("  worst relative difference over the step: %.3g (tolerance %g)\n", step_worst, STEP_TOL);
    ld_net_ws_free(&wg);
    ld_net_ws_free(&wd);
    free(params), free(grads), free(m), free(v), free(before), free(bufs), free(dfake),
        free(scratch);
    ld_data_free(data);
    ld_ckpt_free(c);
}
END_TEST

START_TEST(test_conv_vae_step_against_torch)
{
    ld_ckpt_t *c = steps_fixture();
    ld_dataset_t *data = eight_images();
    ld_net_t E, MU, LV, DEC;
    size_t P = 0, NB = 0;
    ld_nets_conv_vae(20, LD_CONV_VAE_DEC_N, conv_dec, &E, &MU, &LV, &DEC, &P, &NB);
    ld_net_t *nets[4] = {&E, &MU, &LV, &DEC};
    float *params = calloc(P, sizeof(float)), *grads = calloc(P, sizeof(float));
    float *m = calloc(P, sizeof(float)), *v = calloc(P, sizeof(float));
    float *before = malloc(P * sizeof(float));
    formula_init(nets, 4, params);
    memcpy(before, params, P * sizeof(float));
    const ld_tensor_view_t *ev = ld_ckpt_find(c, "vae.eps");
    ck_assert(ev && ev->numel == STEP_B * 20);
    ld_net_ws_t ws[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(ld_net_ws_init(&ws[i], nets[i], STEP_B), LD_OK);
    ld_net_run_t run = {.training = 1};
    const float *h = ld_net_forward(&E, params, NULL, &ws[0], STEP_B, data->x, &run);
    const float *mu = ld_net_forward(&MU, params, NULL, &ws[1], STEP_B, h, &run);
    const float *lv = ld_net_forward(&LV, params, NULL, &ws[2], STEP_B, h, &run);
    float z[STEP_B * 20], dz[STEP_B * 20], dmu[STEP_B * 20], dlv[STEP_B * 20];
    for (int i = 0; i < STEP_B * 20; i++)
        z[i] = mu[i] + expf(0.5f * lv[i]) * ev->data[i];
    const float *logits = ld_net_forward(&DEC, params, NULL, &ws[3], STEP_B, z, &run);
    const float s = 1.0f / STEP_B;
    float *dlog = malloc(STEP_B * 784 * sizeof(float));
    double rec = ld_bce_logits(STEP_B * 784, logits, data->x, dlog, s);
    double kl = ld_kl_gaussian(STEP_B * 20, mu, lv, dmu, dlv, s);
    ld_net_backward(&DEC, params, grads, &ws[3], dlog, dz, &run);
    for (int i = 0; i < STEP_B * 20; i++) {
        dmu[i] += dz[i];
        dlv[i] += dz[i] * ev->data[i] * 0.5f * expf(0.5f * lv[i]);
    }
    float *dh1 = malloc(STEP_B * 3136 * sizeof(float)), *dh2 = malloc(STEP_B * 3136 * sizeof(float));
    ld_net_backward(&MU, params, grads, &ws[1], dmu, dh1, &run);
    ld_net_backward(&LV, params, grads, &ws[2], dlv, dh2, &run);
    for (int i = 0; i < STEP_B * 3136; i++)
        dh1[i] += dh2[i];
    ld_net_backward(&E, params, grads, &ws[0], dh1, NULL, &run);
    ld_adam_cfg_t adam = {1e-3f, 0.9f, 0.999f, 1e-8f};
    ld_adam_step(&adam, 1, P, params, grads, m, v);
    printf("conv VAE, one training step against PyTorch:\n");
    const ld_tensor_view_t *lossv = ld_ckpt_find(c, "vae.loss");
    ck_assert(lossv && lossv->numel == 3);
    loss_close("loss", (rec + kl) / STEP_B, lossv->data[0]);
    loss_close("rec", rec, lossv->data[1]);
    loss_close("kl", kl, lossv->data[2]);
    step_worst = 0;
    compare_step(c, "vae.", nets, 4, grads, before, params, NULL, adam.lr);
    printf("  worst relative difference over the step: %.3g (tolerance %g)\n", step_worst, STEP_TOL);
    for (int i = 0; i < 4; i++)
        ld_net_ws_free(&ws[i]);
    free(params), free(grads), free(m), free(v), free(before), free(dlog), free(dh1), free(dh2);
    ld_data_free(data);
    ld_ckpt_free(c);
}
END_TEST

/* The reverse direction: latentd's nets written as a safetensors file (state
 * dicts by ld_net_tensors, layer lists as metadata, an input and latentd's
 * eval-mode output per net) and read back.  With LD_TORCH_CHECK_OUT=path the
 * file is kept there for `make_layer_fixtures.py --check-latentd path`, which
 * rebuilds each net in torch from its JSON, loads the state dict with
 * strict=True and compares the outputs (num_batches_tracked is F32 in this
 * file; ld_model_save writes it as I64, tested in check_model.c). */
START_TEST(test_state_dict_file)
{
    ld_net_t nets[7];
    size_t po = 0, bo = 0;
    ld_nets_dcgan(100, &nets[0], &nets[1], &po, &bo);
    ld_nets_conv_vae(20, LD_CONV_VAE_DEC_N, conv_dec, &nets[2], &nets[3], &nets[4], &nets[5], &po, &bo);
    ld_nets_resmlp(&nets[6], "critic", 784, 32, 2, 1, LD_LAYER_N_KINDS, 0.2f, &po, &bo);
    float *params = calloc(po, sizeof(float)), *bufs = calloc(bo, sizeof(float));
    ld_rng_t r;
    ld_rng_seed(&r, 77);
    enum { NB = 3, MAXV = 160 };
    ld_tensor_view_t v[MAXV];
    ld_kv_t meta[7];
    char json[7][4096], key[7][64];
    float nbt[MAXV], *xs[7], *ys[7];
    int nv = 0;
    for (int k = 0; k < 7; k++) {
        const ld_net_t *net = &nets[k];
        ld_net_init_params(net, params, bufs, &r);
        size_t I = in_size(net), O = out_size(net);
        xs[k] = malloc(NB * I * sizeof(float));
        ys[k] = malloc(NB * O * sizeof(float));
        ld_rng_fill_normal(&r, xs[k], NB * I, 0.3f, 1.0f);
        ld_net_ws_t ws;
        ck_assert_int_eq(ld_net_ws_init(&ws, net, NB), LD_OK);
        ld_net_run_t train = {.training = 1, .update = bufs};
        ld_net_forward(net, params, bufs, &ws, NB, xs[k], &train); /* running stats move */
        memcpy(ys[k], ld_net_forward(net, params, bufs, &ws, NB, xs[k], NULL), NB * O * sizeof(float));
        ld_net_ws_free(&ws);
        ld_net_tensor_t t[MAX_T];
        int nt = ld_net_tensors(net, t, MAX_T);
        for (int i = 0; i < nt; i++, nv++) {
            ck_assert_int_lt(nv, MAXV - 14);
            memset(&v[nv], 0, sizeof v[nv]);
            snprintf(v[nv].name, sizeof v[nv].name, "%.120s", t[i].name);
            v[nv].ndim = t[i].ndim;
            memcpy(v[nv].shape, t[i].shape, sizeof v[nv].shape);
            v[nv].numel = t[i].numel;
            if (t[i].dtype == LD_DTYPE_I64) {
                int li = 0;
                while (net->layers[li].buf_off + 2 * (size_t)net->layers[li].in.c != t[i].off ||
                       !net->layers[li].n_bufs)
                    li++;
                nbt[nv] = (float)ld_net_nbt(net, li, bufs);
                ck_assert_float_eq(nbt[nv], 1.0f);
                v[nv].data = &nbt[nv];
            } else {
                v[nv].data = (t[i].is_buffer ? bufs : params) + t[i].off;
            }
        }
        const float *io[2] = {xs[k], ys[k]};
        for (int j = 0; j < 2; j++, nv++) {
            memset(&v[nv], 0, sizeof v[nv]);
            snprintf(v[nv].name, sizeof v[nv].name, "check.%s.%.31s", j ? "y" : "x", net->name);
            v[nv].ndim = 2;
            v[nv].shape[0] = NB;
            v[nv].shape[1] = (int64_t)(j ? O : I);
            v[nv].numel = NB * (j ? O : I);
            v[nv].data = io[j];
        }
        ck_assert_int_gt(ld_net_to_json(net, json[k], sizeof json[k]), 0);
        snprintf(key[k], sizeof key[k], "layers.%.31s", net->name);
        meta[k] = (ld_kv_t){key[k], json[k]};
    }
    const char *keep = getenv("LD_TORCH_CHECK_OUT");
    char *dir = tu_mkdtemp(), path[4200];
    snprintf(path, sizeof path, "%s", keep ? keep : dir);
    if (!keep)
        strncat(path, "/nets.safetensors", sizeof path - strlen(path) - 1);
    ld_err_t err = {{0}};
    ck_assert_msg(ld_ckpt_write(path, v, nv, meta, 7, &err) == LD_OK, "%s", err.msg);
    ld_ckpt_t *c = NULL;
    ck_assert_msg(ld_ckpt_read(path, &c, &err) == LD_OK, "%s", err.msg);
    ck_assert_int_eq(c->n_tensors, nv);
    for (int i = 0; i < nv; i++) {
        const ld_tensor_view_t *t = ld_ckpt_find(c, v[i].name);
        ck_assert_msg(t && t->ndim == v[i].ndim && t->numel == v[i].numel, "%s", v[i].name);
        ck_assert(memcmp(t->data, v[i].data, t->numel * sizeof(float)) == 0);
    }
    /* the layer lists read back into the same nets */
    for (int k = 0; k < 7; k++) {
        ld_net_t back;
        size_t p2 = nets[k].param_off, b2 = nets[k].buf_off;
        ck_assert_int_eq(ld_net_from_json(ld_ckpt_meta(c, key[k]), &back, &p2, &b2, &err), LD_OK);
        ck_assert(memcmp(back.layers, nets[k].layers, sizeof back.layers[0] * back.n_layers) == 0);
        free(xs[k]);
        free(ys[k]);
    }
    printf("state dicts of 7 nets, %d tensors, written to %s and read back\n", nv, path);
    ld_ckpt_free(c);
    tu_rmrf(dir);
    free(dir);
    free(params);
    free(bufs);
}
END_TEST

Suite *suite_layer(void)
{
    Suite *s = suite_create("layer");
    TCase *tc = tcase_create("layer");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_against_torch, 0, (int)LD_ARRAY_LEN(fixture_cases));
    tcase_add_loop_test(tc, test_finite_differences, 0, (int)LD_ARRAY_LEN(fd_cases));
    tcase_add_test(tc, test_finite_differences_can_fail);
    tcase_add_loop_test(tc, test_bn_split_threads, 0, (int)LD_ARRAY_LEN(split_workers));
    tcase_add_test(tc, test_json_roundtrip);
    tcase_add_test(tc, test_json_rejects);
    tcase_add_test(tc, test_dcgan_shapes_names_table);
    tcase_add_test(tc, test_conv_vae_shapes);
    tcase_add_test(tc, test_mlp_as_layers);
    tcase_add_test(tc, test_eval_and_empty);
    tcase_add_test(tc, test_conv_chunks);
    tcase_add_test(tc, test_state_dict_file);
    tcase_add_test(tc, test_dcgan_step_against_torch);
    tcase_add_test(tc, test_conv_vae_step_against_torch);
    suite_add_tcase(s, tc);
    return s;
}

/* check_nn.c — the numerical core against finite differences and closed forms.
 *
 * Gradient checks: every backward is compared with a central difference of
 * the float forward, taken in double: the loss is returned (or summed) in
 * double, the entry is moved by +-h in float, and the quotient uses the step
 * actually taken ((double)(float)(v+h) - (double)(float)(v-h)), so the only
 * error left is the float rounding of the forward (~1e-7 of the loss, divided
 * by 2h) and the O(h^2) truncation.  An entry passes when
 *     |analytic - numeric| <= FD_RTOL * max(|analytic|, |numeric|) + atol
 * with atol = FD_ATOL_FRAC * (largest |analytic| of that tensor) + 1e-7.
 * Piecewise-linear activations have kinks; when a kink lies within +-h of an
 * entry (its one-sided slopes disagree by more than 10%) and the analytic
 * value lies between them, the entry is counted as skipped; at most a tenth of
 * the entries of a tensor (plus one) may be skipped.  Inputs are drawn away from 0 where
 * a test is about one activation.
 *
 * Whole-model checks run the real steps (ld_vae_step, ld_gan_step_d/g,
 * ld_classifier_step) on small architectures of the same code (4x4 images),
 * where every parameter of every tensor is checked; the default
 * architectures are covered entry by entry against PyTorch in check_parity.c.
 */
#define _GNU_SOURCE /* SCHED_IDLE, syscall */
#include "testutil.h"

#include "latentd/classifier.h"
#include "latentd/eval.h"
#include "latentd/gan.h"
#include "latentd/mlp.h"
#include "latentd/model.h"
#include "latentd/nn.h"
#include "latentd/rng.h"
#include "latentd/vae.h"

#include "gan_impl.h" /* test hooks: preset dropout masks, the yield counter */
#include "mlp_impl.h"
#include "nn_impl.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FD_RTOL 1e-2
#define FD_ATOL_FRAC 1e-3
#define FD_H 1e-3        /* elementwise functions: no accumulated rounding */
#define FD_H_NET 3e-3    /* through layers: fewer kinks within +-h, noise measured */
#define FD_NOISE_PROBES 4
#define FD_NOISE_SAFETY 2.0

/* ---- finite-difference machinery ------------------------------------------------ */

typedef double (*objective_fn)(void *ctx);

typedef struct {
    int checked, skipped;
    double worst;      /* largest |a - n| / allowed */
    double worst_rel;  /* largest |a - n| / max(|a|, |n|) among entries above atol */
} fd_stat_t;

/* Check analytic[i] = d f / d p[i] for every stride-th entry of p (n).
 * f must read p through ctx. */
static fd_stat_t fd_check(const char *what, objective_fn f, void *ctx, float *p,
                          const float *analytic, size_t n, size_t stride, double h)
{
    fd_stat_t st = {0, 0, 0, 0};
    double amax = 0;
    for (size_t i = 0; i < n; i++)
        amax = fmax(amax, fabs((double)analytic[i]));
    const double atol = FD_ATOL_FRAC * amax + 1e-7;
    for (size_t i = 0; i < n; i += stride) {
        float v = p[i], vp = (float)(v + h), vm = (float)(v - h);
        double a = analytic[i];
        p[i] = vp;
        double fp = f(ctx);
        p[i] = vm;
        double fm = f(ctx);
        p[i] = v;
        double f0 = f(ctx);
        /* The float forward's own noise (rounding makes f a fine staircase): f at
         * small moves k h / 64, less the first-order change a * delta, and never
         * less than one float rounding of f (a move of +-h may stay on one step
         * of the staircase: numeric exactly 0).  Even if a
         * were wrong by E, this adds at most FD_NOISE_SAFETY * E / 16 to the
         * allowance, so it cannot hide a wrong gradient. */
        double noise = FLT_EPSILON * fabs(f0); /* at least the rounding of f itself */
        for (int k = 1; k <= FD_NOISE_PROBES; k++) {
            float vk = (float)(v + (k & 1 ? 1 : -1) * k * h / 64);
            p[i] = vk;
            noise = fmax(noise, fabs(f(ctx) - f0 - a * ((double)vk - v)));
        }
        p[i] = v;
        double dp = (double)vp - v, dm = (double)v - vm;
        double num = (fp - fm) / (dp + dm);
        double sp = (fp - f0) / dp, sm = (f0 - fm) / dm;
        double err = fabs(a - num);
        double allowed = FD_RTOL * fmax(fabs(a), fabs(num)) + atol +
                         FD_NOISE_SAFETY * 2 * noise / (dp + dm);
        if (err > allowed) {
            /* a kink within +-h: the one-sided slopes differ by more than the
             * tolerance and the analytic slope is one of them (or between) */
            int kink = fabs(sp - sm) > allowed && a >= fmin(sp, sm) - allowed &&
                       a <= fmax(sp, sm) + allowed;
            if (kink) {
                st.skipped++;
                continue;
            }
            ck_abort_msg("%s[%zu]: analytic %.7g, numeric %.7g (one-sided %.7g, %.7g), "
                         "|diff| %.3g > %.3g",
                         what, i, a, num, sp, sm, err, allowed);
        }
        st.checked++;
        st.worst = fmax(st.worst, err / allowed);
        if (fmax(fabs(a), fabs(num)) > atol)
            st.worst_rel = fmax(st.worst_rel, err / fmax(fabs(a), fabs(num)));
    }
    printf("  fd %-36s checked %4d skipped(kink) %2d  max rel err %.2e  (%.2f of tolerance)\n",
           what, st.checked, st.skipped, st.worst_rel, st.worst);
    ck_assert_msg(st.checked > 0, "%s: nothing checked", what);
    ck_assert_msg(st.skipped <= 1 + (st.checked + st.skipped) / 10,
                  "%s: %d of %d entries at kinks", what, st.skipped, st.checked + st.skipped);
    return st;
}

static void fill_uniform(uint64_t seed, float *x, size_t n, float lo, float hi)
{
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    ld_rng_fill_uniform(&r, x, n, lo, hi);
}

/* Values in [lo, hi] with |x| >= gap (away from the kink at 0). */
static void fill_away_from_zero(uint64_t seed, float *x, size_t n, float lo, float hi, float gap)
{
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        float v;
        do
            v = lo + (hi - lo) * ld_rng_uniform(&r);
        while (fabsf(v) < gap);
        x[i] = v;
    }
}

/* sum c[i] * y[i] in double: turns a vector output into a scalar loss. */
static double dot(const float *c, const float *y, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)c[i] * y[i];
    return s;
}

/* ---- dense ------------------------------------------------------------------------ */

enum { DB = 3, DIN = 5, DOUT = 4 };
typedef struct {
    float x[DB * DIN], w[DOUT * DIN], b[DOUT], y[DB * DOUT], c[DB * DOUT];
} dense_ctx_t;

static double dense_obj(void *p)
{
    dense_ctx_t *d = p;
    ld_dense_forward(DB, DIN, DOUT, d->x, d->w, d->b, d->y);
    return dot(d->c, d->y, DB * DOUT);
}

START_TEST(test_dense_gradients)
{
    dense_ctx_t d;
    fill_uniform(1, d.x, DB * DIN, -1, 1);
    fill_uniform(2, d.w, DOUT * DIN, -1, 1);
    fill_uniform(3, d.b, DOUT, -1, 1);
    fill_uniform(4, d.c, DB * DOUT, -1, 1);
    /* gw, gb accumulate (+=): start them at a known value; dx is overwritten. */
    float gw[DOUT * DIN], gb[DOUT], dx[DB * DIN];
    for (int i = 0; i < DOUT * DIN; i++)
        gw[i] = 0.5f;
    for (int i = 0; i < DOUT; i++)
        gb[i] = -0.25f;
    for (int i = 0; i < DB * DIN; i++)
        dx[i] = NAN;
    ld_dense_forward(DB, DIN, DOUT, d.x, d.w, d.b, d.y);
    /* the forward by hand: y = x w^T + b */
    for (int i = 0; i < DB; i++)
        for (int o = 0; o < DOUT; o++) {
            double s = d.b[o];
            for (int k = 0; k < DIN; k++)
                s += (double)d.x[i * DIN + k] * d.w[o * DIN + k];
            ck_assert_msg(fabs(s - d.y[i * DOUT + o]) < 1e-5, "y[%d,%d] = %g, want %g", i, o,
                          (double)d.y[i * DOUT + o], s);
        }
    ld_dense_backward(DB, DIN, DOUT, d.x, d.w, d.c, gw, gb, dx);
    for (int i = 0; i < DOUT * DIN; i++)
        gw[i] -= 0.5f;
    for (int i = 0; i < DOUT; i++)
        gb[i] += 0.25f;
    fd_check("dense dL/dw", dense_obj, &d, d.w, gw, DOUT * DIN, 1, FD_H);
    fd_check("dense dL/db", dense_obj, &d, d.b, gb, DOUT, 1, FD_H);
    fd_check("dense dL/dx", dense_obj, &d, d.x, dx, DB * DIN, 1, FD_H);
    /* dx may be NULL: parameter gradients alone */
    float gw2[DOUT * DIN] = {0}, gb2[DOUT] = {0};
    ld_dense_backward(DB, DIN, DOUT, d.x, d.w, d.c, gw2, gb2, NULL);
    ck_assert(tu_max_rel_diff(gw2, gw, DOUT * DIN, 1e-6) < 1e-5);
    ck_assert(tu_max_rel_diff(gb2, gb, DOUT, 1e-6) < 1e-5);
}
END_TEST

/* ---- activations ------------------------------------------------------------------ */

enum { NA = 64 };
typedef struct {
    ld_act_t a;
    float slope;
    float x[NA], y[NA], c[NA];
} act_ctx_t;

static double act_obj(void *p)
{
    act_ctx_t *t = p;
    ld_act_forward(t->a, t->slope, NA, t->x, t->y);
    return dot(t->c, t->y, NA);
}

static const ld_act_t all_acts[] = {LD_ACT_NONE, LD_ACT_LRELU, LD_ACT_RELU, LD_ACT_TANH,
                                    LD_ACT_SIGMOID};

START_TEST(test_activation_gradients)
{
    act_ctx_t t;
    t.a = all_acts[_i];
    t.slope = 0.2f;
    fill_away_from_zero(10 + _i, t.x, NA, -4, 4, 0.05f);
    t.x[0] = 20.0f; /* saturated tails */
    t.x[1] = -20.0f;
    fill_uniform(20 + _i, t.c, NA, -1, 1);
    float dx[NA];
    ld_act_forward(t.a, t.slope, NA, t.x, t.y);
    ld_act_backward(t.a, t.slope, NA, t.y, t.c, dx);
    char what[64];
    snprintf(what, sizeof what, "%s dy/dx", ld_act_name(t.a));
    fd_check(what, act_obj, &t, t.x, dx, NA, 1, FD_H);
    ld_act_forward(t.a, t.slope, NA, t.x, t.y); /* fd_check left y at a moved x */

    /* forward values against the definitions, in double */
    for (int i = 0; i < NA; i++) {
        double x = t.x[i], want = x;
        switch (t.a) {
        case LD_ACT_NONE: want = x; break;
        case LD_ACT_LRELU: want = x > 0 ? x : 0.2 * x; break;
        case LD_ACT_RELU: want = x > 0 ? x : 0; break;
        case LD_ACT_TANH: want = tanh(x); break;
        case LD_ACT_SIGMOID: want = 1 / (1 + exp(-x)); break;
        }
        ck_assert_msg(fabs(t.y[i] - want) <= 1e-6 * fmax(1, fabs(want)), "%s(%g) = %.9g, want %.9g",
                      ld_act_name(t.a), x, (double)t.y[i], want);
        ck_assert(isfinite(dx[i]));
    }
    /* y may alias x, dx may alias dy */
    float a[NA], b[NA];
    memcpy(a, t.x, sizeof a);
    ld_act_forward(t.a, t.slope, NA, a, a);
    ck_assert(memcmp(a, t.y, sizeof a) == 0);
    memcpy(b, t.c, sizeof b);
    ld_act_backward(t.a, t.slope, NA, t.y, b, b);
    ck_assert(memcmp(b, dx, sizeof b) == 0);
    /* names round-trip */
    ld_act_t back;
    ck_assert_int_eq(ld_act_parse(ld_act_name(t.a), &back), 0);
    ck_assert_int_eq(back, t.a);
}
END_TEST

/* ld_act_forward's tanh (no libm, vectorised) against glibc's tanhf: every
 * 64th positive float below 20 and its negative, every float near the
 * branch point (0.625) and the clamp (9), and the edge cases.  Also each
 * value computed alone equals the value computed inside a long array, so the
 * vector body and the scalar tail agree (a row decodes to the same bytes
 * whatever else shares its pass). */
START_TEST(test_tanh_against_libm)
{
    enum { CHUNK = 4096 };
    static float x[CHUNK], y[CHUNK];
    double worst_abs = 0, worst_ulp = 0;
    float at_abs = 0, at_ulp = 0;
    long checked = 0, wrong_sign = 0, alone_differs = 0; /* asserted once, after the loops */
    uint32_t hi, near[2];
    float lim = 20.0f, br[2] = {0.625f, 10.0f};
    memcpy(&hi, &lim, sizeof hi);
    memcpy(&near[0], &br[0], sizeof near[0]);
    memcpy(&near[1], &br[1], sizeof near[1]);
    /* pass 0: the sweep; passes 1, 2: 2^16 floats around each threshold */
    for (int pass = 0; pass < 3; pass++) {
        uint64_t u = pass == 0 ? 0 : near[pass - 1] - 32768;
        uint64_t end = pass == 0 ? hi : near[pass - 1] + 32768;
        uint64_t step = pass == 0 ? 128 : 1;
        while (u <= end) {
            int m = 0;
            for (; m < CHUNK && u <= end; m += 2, u += step) {
                uint32_t bits = (uint32_t)u;
                memcpy(&x[m], &bits, sizeof x[m]);
                x[m + 1] = -x[m];
            }
            ld_act_forward(LD_ACT_TANH, 0, (size_t)m, x, y);
            for (int i = 0; i < m; i++) {
                float ref = tanhf(x[i]);
                double d = fabs((double)y[i] - (double)ref);
                double ulp = d / ((double)nextafterf(fabsf(ref), INFINITY) - fabsf(ref));
                if (d > worst_abs) {
                    worst_abs = d;
                    at_abs = x[i];
                }
                if (ulp > worst_ulp) {
                    worst_ulp = ulp;
                    at_ulp = x[i];
                }
                wrong_sign += signbit(y[i]) != signbit(x[i]);
            }
            checked += m;
            /* alone versus inside the array, at a few positions */
            for (int i = 0; i < m; i += 997) {
                float one;
                ld_act_forward(LD_ACT_TANH, 0, 1, &x[i], &one);
                alone_differs += memcmp(&one, &y[i], sizeof one) != 0;
            }
        }
    }
    fprintf(stderr, "tanh: %ld floats, worst %.3g absolute at %.9g, %.3g ulp at %.9g\n",
            checked, worst_abs, (double)at_abs, worst_ulp, (double)at_ulp);
    ck_assert_msg(wrong_sign == 0, "%ld values have the wrong sign", wrong_sign);
    ck_assert_msg(alone_differs == 0, "%ld values differ alone and inside an array",
                  alone_differs);
    ck_assert_msg(worst_ulp <= 2.0, "tanh off by %g ulp at %.9g", worst_ulp, (double)at_ulp);
    ck_assert_msg(worst_abs <= 1.2e-7, "tanh off by %g at %.9g", worst_abs, (double)at_abs);

    /* edge cases: signed zeros, denormals, infinities, NaN, huge */
    const float edge[] = {0.0f, -0.0f, 1e-40f, -1e-40f, 1e-30f, INFINITY, -INFINITY, 1e30f,
                          -1e30f, NAN};
    const size_t ne = sizeof edge / sizeof edge[0];
    float out[sizeof edge / sizeof edge[0]];
    ld_act_forward(LD_ACT_TANH, 0, ne, edge, out);
    for (size_t i = 0; i + 1 < ne; i++)
        ck_assert_msg(memcmp(&out[i], &(float){tanhf(edge[i])}, sizeof(float)) == 0,
                      "tanh(%a) = %a, libm %a", (double)edge[i], (double)out[i],
                      (double)tanhf(edge[i]));
    ck_assert(isnan(out[ne - 1]));
}
END_TEST

START_TEST(test_leaky_slope_configurable)
{
    float x[2] = {-2.0f, 3.0f}, y[2], dy[2] = {1.0f, 1.0f}, dx[2];
    ld_act_forward(LD_ACT_LRELU, 0.01f, 2, x, y);
    ck_assert(y[0] == -0.02f && y[1] == 3.0f);
    ld_act_backward(LD_ACT_LRELU, 0.01f, 2, y, dy, dx);
    ck_assert(dx[0] == 0.01f && dx[1] == 1.0f);
    ld_act_t a;
    ck_assert_int_eq(ld_act_parse("lrelu", &a), 0);
    ck_assert_int_eq(a, LD_ACT_LRELU);
    ck_assert_int_ne(ld_act_parse("gelu", &a), 0);
}
END_TEST

/* ---- losses ------------------------------------------------------------------------ */

enum { NL = 24 };
typedef struct {
    float l[NL], t[NL];
    float tc;      /* constant target */
    int constant;
    float scale;
} bce_ctx_t;

static double bce_obj(void *p)
{
    bce_ctx_t *c = p;
    double s = c->constant ? ld_bce_logits_const(NL, c->l, c->tc, NULL, c->scale)
                           : ld_bce_logits(NL, c->l, c->t, NULL, c->scale);
    return c->scale * s;
}

/* BCE(l, t) in double from the definition -t log s - (1-t) log(1-s), s = sigmoid(l). */
static double bce_ref(double l, double t)
{
    /* log s = -log1p(e^-l), log(1-s) = -l - log1p(e^-l); stable for either sign */
    double lse = l > 0 ? log1p(exp(-l)) : -l + log1p(exp(l));
    return t * lse + (1 - t) * (l + lse);
}

START_TEST(test_bce_logits)
{
    bce_ctx_t c = {.scale = 0.37f};
    fill_uniform(30, c.l, NL, -6, 6);
    fill_uniform(31, c.t, NL, 0, 1);
    c.t[0] = 0, c.t[1] = 1;
    float d[NL];
    double s = ld_bce_logits(NL, c.l, c.t, d, c.scale);
    double want = 0;
    for (int i = 0; i < NL; i++)
        want += bce_ref(c.l[i], c.t[i]);
    ck_assert_msg(fabs(s - want) <= 1e-6 * want, "bce sum %.9g, want %.9g", s, want);
    fd_check("bce_logits dL/dlogits", bce_obj, &c, c.l, d, NL, 1, FD_H);
    /* the value does not depend on whether gradients are asked for */
    ck_assert(ld_bce_logits(NL, c.l, c.t, NULL, c.scale) == s);

    c.constant = 1;
    for (int k = 0; k < 3; k++) {
        c.tc = (float[]){0.0f, 0.9f, 1.0f}[k];
        s = ld_bce_logits_const(NL, c.l, c.tc, d, c.scale);
        want = 0;
        for (int i = 0; i < NL; i++)
            want += bce_ref(c.l[i], c.tc);
        ck_assert_msg(fabs(s - want) <= 1e-6 * want, "bce_const(%g) %.9g, want %.9g",
                      (double)c.tc, s, want);
        fd_check("bce_logits_const dL/dlogits", bce_obj, &c, c.l, d, NL, 1, FD_H);
    }
}
END_TEST

/* Stable at |logit| = 100: finite values equal to the closed form. */
START_TEST(test_bce_extreme_logits)
{
    const float l[4] = {100.0f, 100.0f, -100.0f, -100.0f}, t[4] = {1.0f, 0.0f, 1.0f, 0.0f};
    const float t9[4] = {0.9f, 0.9f, 0.9f, 0.9f};
    float d[4], dc[4];
    for (int i = 0; i < 4; i++) {
        double v = ld_bce_logits(1, &l[i], &t[i], &d[i], 1.0f);
        double want = bce_ref(l[i], t[i]); /* 3.7e-44, 100, 100, 3.7e-44 */
        ck_assert_msg(isfinite(v) && fabs(v - want) <= 1e-6 * fmax(1, want) + 1e-40,
                      "bce(%g, %g) = %g, want %g", (double)l[i], (double)t[i], v, want);
        double dwant = 1 / (1 + exp(-(double)l[i])) - t[i];
        ck_assert_msg(isfinite(d[i]) && fabs(d[i] - dwant) <= 1e-6,
                      "dbce(%g, %g) = %g, want %g", (double)l[i], (double)t[i], (double)d[i], dwant);
        v = ld_bce_logits_const(1, &l[i], t[i], &dc[i], 1.0f);
        ck_assert_msg(isfinite(v) && fabs(v - want) <= 1e-6 * fmax(1, want) + 1e-40,
                      "bce_const(%g, %g) = %g, want %g", (double)l[i], (double)t[i], v, want);
        ck_assert(isfinite(dc[i]) && fabs(dc[i] - dwant) <= 1e-6);
        /* label smoothing target: l=100 -> 100 - 90 = 10 (+e^-100) */
        v = ld_bce_logits(1, &l[i], &t9[i], NULL, 1.0f);
        want = bce_ref(l[i], 0.9);
        ck_assert_msg(isfinite(v) && fabs(v - want) <= 1e-5 * want, "bce(%g, 0.9) = %g, want %g",
                      (double)l[i], v, want);
    }
}
END_TEST

enum { NK = 16 };
typedef struct {
    float mu[NK], lv[NK];
    float scale;
} kl_ctx_t;

static double kl_obj(void *p)
{
    kl_ctx_t *c = p;
    return c->scale * ld_kl_gaussian(NK, c->mu, c->lv, NULL, NULL, c->scale);
}

START_TEST(test_kl_gaussian)
{
    kl_ctx_t c = {.scale = 0.6f};
    fill_uniform(40, c.mu, NK, -2, 2);
    fill_uniform(41, c.lv, NK, -3, 2);
    float dmu[NK], dlv[NK];
    double kl = ld_kl_gaussian(NK, c.mu, c.lv, dmu, dlv, c.scale);
    /* closed form, KL = -1/2 sum(1 + logvar - mu^2 - e^logvar), in double */
    double want = 0;
    for (int i = 0; i < NK; i++)
        want += 1.0 + c.lv[i] - (double)c.mu[i] * c.mu[i] - exp((double)c.lv[i]);
    want *= -0.5;
    ck_assert_msg(fabs(kl - want) <= 1e-6 * fabs(want), "kl %.9g, want %.9g", kl, want);
    ck_assert(kl > 0);
    fd_check("kl dL/dmu", kl_obj, &c, c.mu, dmu, NK, 1, FD_H);
    fd_check("kl dL/dlogvar", kl_obj, &c, c.lv, dlv, NK, 1, FD_H);
    /* KL(N(0,1) || N(0,1)) = 0 exactly; (mu=1, logvar=0) -> 1/2 per entry */
    float z[NK] = {0}, one[NK];
    for (int i = 0; i < NK; i++)
        one[i] = 1.0f;
    ck_assert(ld_kl_gaussian(NK, z, z, NULL, NULL, 1.0f) == 0.0);
    ck_assert(fabs(ld_kl_gaussian(NK, one, z, NULL, NULL, 1.0f) - 0.5 * NK) < 1e-9);
    /* logvar = log 4 (sigma 2), mu 0: -1/2 (1 + log 4 - 4) per entry */
    float l4[NK];
    for (int i = 0; i < NK; i++)
        l4[i] = (float)log(4.0);
    double w4 = -0.5 * NK * (1 + (double)(float)log(4.0) - exp((double)(float)log(4.0)));
    ck_assert(fabs(ld_kl_gaussian(NK, z, l4, NULL, NULL, 1.0f) - w4) < 1e-5 * w4);
}
END_TEST

enum { SB = 4, SC = 5 };
typedef struct {
    float l[SB * SC];
    uint8_t y[SB];
    float scale;
} sx_ctx_t;

static double sx_obj(void *p)
{
    sx_ctx_t *c = p;
    return c->scale * ld_softmax_xent(SB, SC, c->l, c->y, NULL, c->scale);
}

START_TEST(test_softmax_xent)
{
    sx_ctx_t c = {.y = {0, 3, 4, 1}, .scale = 0.25f};
    fill_uniform(50, c.l, SB * SC, -4, 4);
    float d[SB * SC];
    double s = ld_softmax_xent(SB, SC, c.l, c.y, d, c.scale);
    double want = 0;
    for (int i = 0; i < SB; i++) {
        double z = 0;
        for (int k = 0; k < SC; k++)
            z += exp((double)c.l[i * SC + k]);
        want += log(z) - c.l[i * SC + c.y[i]];
    }
    ck_assert_msg(fabs(s - want) <= 1e-6 * want, "xent %.9g, want %.9g", s, want);
    fd_check("softmax_xent dL/dlogits", sx_obj, &c, c.l, d, SB * SC, 1, FD_H);
    /* each row of the gradient sums to 0 */
    for (int i = 0; i < SB; i++) {
        double r = 0;
        for (int k = 0; k < SC; k++)
            r += d[i * SC + k];
        ck_assert(fabs(r) < 1e-6);
    }
    /* huge logits stay finite: [1000, 0, ...] with label 0 -> ~0, label 1 -> 1000 */
    float big[SC] = {1000.0f, 0, 0, 0, 0}, dbig[SC];
    uint8_t y0 = 0, y1 = 1;
    double v0 = ld_softmax_xent(1, SC, big, &y0, dbig, 1.0f);
    double v1 = ld_softmax_xent(1, SC, big, &y1, dbig, 1.0f);
    ck_assert(isfinite(v0) && v0 >= 0 && v0 < 1e-6);
    ck_assert(isfinite(v1) && fabs(v1 - 1000) < 1e-3);
    for (int k = 0; k < SC; k++)
        ck_assert(isfinite(dbig[k]));
}
END_TEST

/* ---- dropout, init ------------------------------------------------------------------- */

START_TEST(test_dropout_mask)
{
    enum { N = 200000 };
    float *m = malloc(N * sizeof *m);
    ck_assert_ptr_nonnull(m);
    ld_rng_t r;
    ld_rng_seed(&r, 5);
    const float p = 0.3f, keep = 1.0f / (1.0f - p);
    ld_dropout_mask(&r, p, N, m);
    long zeros = 0;
    for (int i = 0; i < N; i++) {
        ck_assert(m[i] == 0.0f || m[i] == keep);
        zeros += m[i] == 0.0f;
    }
    double frac = (double)zeros / N, sd = sqrt(p * (1 - p) / N);
    ck_assert_msg(fabs(frac - p) < 5 * sd, "dropped %.4f, want %.2f", frac, (double)p);
    float x[3] = {1, 2, 3}, mk[3] = {0, 2, 0.5f};
    ld_mul_inplace(3, x, mk);
    ck_assert(x[0] == 0 && x[1] == 4 && x[2] == 1.5f);
    free(m);
}
END_TEST

START_TEST(test_linear_init)
{
    enum { IN = 300, OUT = 200 };
    float *w = malloc(IN * OUT * sizeof *w), b[OUT];
    ck_assert_ptr_nonnull(w);
    ld_rng_t r;
    ld_rng_seed(&r, 6);
    ld_linear_init(&r, IN, OUT, w, b);
    double bound = 1 / sqrt(IN), s = 0, s2 = 0;
    for (int i = 0; i < IN * OUT; i++) {
        ck_assert(fabs(w[i]) <= bound);
        s += w[i], s2 += (double)w[i] * w[i];
    }
    for (int i = 0; i < OUT; i++)
        ck_assert(fabs(b[i]) <= bound);
    double n = IN * OUT, mean = s / n, var = s2 / n - mean * mean;
    /* U(-a, a): mean 0, variance a^2 / 3 */
    ck_assert_msg(fabs(mean) < 5 * bound / sqrt(3 * n), "mean %g", mean);
    ck_assert_msg(fabs(var / (bound * bound / 3) - 1) < 0.02, "variance %g, want %g", var,
                  bound * bound / 3);
    free(w);
}
END_TEST

/* ---- Adam ---------------------------------------------------------------------------- */

/* Three steps against the formula computed by hand in double:
 *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)       (eps outside the sqrt) */
START_TEST(test_adam_hand_computed)
{
    enum { N = 6 };
    const ld_adam_cfg_t cfg = {2e-3f, 0.8f, 0.99f, 1e-8f};
    float p[N] = {0.5f, -1.0f, 2.0f, 0.0f, 3.0f, -0.25f}, m[N] = {0}, v[N] = {0};
    double pd[N], md[N] = {0}, vd[N] = {0};
    const float g[3][N] = {{0.1f, -2.0f, 1e-10f, 0.0f, 5.0f, -1e-3f},
                           {0.3f, -1.0f, -1e-10f, 0.0f, -5.0f, 2e-3f},
                           {-0.2f, 0.5f, 1e-10f, 1.0f, 5.0f, -1e-3f}};
    for (int i = 0; i < N; i++)
        pd[i] = p[i];
    /* t = 1 closed form: p1 = p0 - lr g / (|g| + eps) */
    float p1[N], m1[N] = {0}, v1[N] = {0};
    memcpy(p1, p, sizeof p1);
    ld_adam_step(&cfg, 1, N, p1, g[0], m1, v1);
    for (int i = 0; i < N; i++) {
        double want = p[i] - (double)cfg.lr * g[0][i] / (fabs((double)g[0][i]) + cfg.eps);
        ck_assert_msg(fabs(p1[i] - want) <= 1e-6 * fmax(1, fabs(want)), "t=1 p[%d] %.9g want %.9g",
                      i, (double)p1[i], want);
    }
    for (int t = 1; t <= 3; t++) {
        ld_adam_step(&cfg, t, N, p, g[t - 1], m, v);
        if (t == 2) /* zero gradients so far: not moved */
            ck_assert(p[3] == 0.0f);
        double b1 = cfg.beta1, b2 = cfg.beta2;
        for (int i = 0; i < N; i++) {
            double gi = g[t - 1][i];
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            double mh = md[i] / (1 - pow(b1, t)), vh = vd[i] / (1 - pow(b2, t));
            pd[i] -= (double)cfg.lr * mh / (sqrt(vh) + (double)cfg.eps);
        }
        for (int i = 0; i < N; i++) {
            ck_assert_msg(fabs(p[i] - pd[i]) <= 1e-6 * fmax(1, fabs(pd[i])),
                          "t=%d p[%d] = %.9g, want %.9g", t, i, (double)p[i], pd[i]);
            ck_assert_msg(fabs(m[i] - md[i]) <= 1e-6 * fabs(md[i]) + 1e-20, "t=%d m[%d]", t, i);
            ck_assert_msg(fabs(v[i] - vd[i]) <= 1e-5 * fabs(vd[i]) + 1e-30, "t=%d v[%d]", t, i);
        }
    }
    ck_assert(p[3] < 0.0f); /* moved by its first nonzero gradient at t = 3 */
}
END_TEST

/* Adam runs in slices of 65536 with a yield point between them: the slicing
 * changes no value.  Against one call per element, bit for bit, across three
 * slice boundaries. */
START_TEST(test_adam_slices)
{
    const size_t n = 3 * 65536 + 7;
    const ld_adam_cfg_t cfg = {1e-3f, 0.9f, 0.999f, 1e-8f};
    float *buf = calloc(8 * n, sizeof *buf);
    ck_assert_ptr_nonnull(buf);
    float *p = buf, *g = p + n, *m = g + n, *v = m + n;
    float *p1 = v + n, *m1 = p1 + n, *v1 = m1 + n;
    ld_rng_t r;
    ld_rng_seed(&r, 5);
    ld_rng_fill_normal(&r, p, n, 0.0f, 1.0f);
    memcpy(p1, p, n * sizeof *p);
    for (long t = 1; t <= 2; t++) {
        ld_rng_fill_normal(&r, g, n, 0.0f, 1.0f);
        ld_adam_step(&cfg, t, n, p, g, m, v);
        for (size_t i = 0; i < n; i++)
            ld_adam_step(&cfg, t, 1, p1 + i, g + i, m1 + i, v1 + i);
    }
    ck_assert(memcmp(p, p1, n * sizeof *p) == 0);
    ck_assert(memcmp(m, m1, n * sizeof *m) == 0);
    ck_assert(memcmp(v, v1, n * sizeof *v) == 0);
    free(buf);
}
END_TEST

/* ld_adam_step_sum: the same bits as the sum of two gradient blocks (or
 * one), ld_adam_step and clearing both, over a length that is no multiple
 * of a vector. */
START_TEST(test_adam_step_sum)
{
    const size_t n = 8192 + 13;
    const ld_adam_cfg_t cfg = {1e-3f, 0.9f, 0.999f, 1e-8f};
    const float w0 = 33.0f / 64.0f, w1 = 31.0f / 64.0f;
    float *buf = calloc(11 * n, sizeof *buf);
    ck_assert_ptr_nonnull(buf);
    float *p = buf, *m = p + n, *v = m + n, *g0 = v + n, *g1 = g0 + n;
    float *p1 = g1 + n, *m1 = p1 + n, *v1 = m1 + n, *h0 = v1 + n, *h1 = h0 + n, *sum = h1 + n;
    ld_rng_t r;
    ld_rng_seed(&r, 9);
    ld_rng_fill_normal(&r, p, n, 0.0f, 1.0f);
    memcpy(p1, p, n * sizeof *p);
    for (long t = 1; t <= 4; t++) {
        int two = t % 2 == 0;
        ld_rng_fill_normal(&r, g0, n, 0.0f, 1.0f);
        ld_rng_fill_normal(&r, g1, n, 0.0f, 1.0f);
        memcpy(h0, g0, n * sizeof *g0);
        memcpy(h1, g1, n * sizeof *g1);
        ld_adam_step_sum(&cfg, t, n, p, g0, w0, two ? g1 : NULL, w1, m, v);
        for (size_t i = 0; i < n; i++)
            sum[i] = two ? w0 * h0[i] + w1 * h1[i] : h0[i];
        ld_adam_step(&cfg, t, n, p1, sum, m1, v1);
        ck_assert_msg(memcmp(p, p1, n * sizeof *p) == 0, "params differ at step %ld", t);
        ck_assert(memcmp(m, m1, n * sizeof *m) == 0 && memcmp(v, v1, n * sizeof *v) == 0);
        for (size_t i = 0; i < n; i++)
            ck_assert(g0[i] == 0.0f && (!two || g1[i] == 0.0f));
        if (!two) /* one block: g1 untouched */
            ck_assert(memcmp(g1, h1, n * sizeof *g1) == 0);
    }
    free(buf);
}
END_TEST

/* bce_sum's blocked pass (exponentials first) gives every element the
 * gradient bits of the one-element path, over whole blocks, a part block and
 * a tail, and the same sum within rounding. */
START_TEST(test_bce_blocks)
{
    enum { N = 3 * 256 + 48 + 5 };
    static float l[N], t[N], d[N], d1[N];
    fill_uniform(40, l, N, -20, 20);
    fill_uniform(41, t, N, 0, 1);
    double s = ld_bce_logits(N, l, t, d, 0.25f), s1 = 0;
    for (int i = 0; i < N; i++)
        s1 += ld_bce_logits(1, l + i, t + i, d1 + i, 0.25f);
    ck_assert(memcmp(d, d1, sizeof d) == 0);
    ck_assert_msg(fabs(s - s1) <= 1e-6 * s1, "bce %.9g, one by one %.9g", s, s1);
    s = ld_bce_logits_const(N, l, 0.9f, d, 0.25f), s1 = 0;
    for (int i = 0; i < N; i++)
        s1 += ld_bce_logits_const(1, l + i, 0.9f, d1 + i, 0.25f);
    ck_assert(memcmp(d, d1, sizeof d) == 0);
    ck_assert_msg(fabs(s - s1) <= 1e-6 * s1, "bce_const %.9g, one by one %.9g", s, s1);
}
END_TEST

/* Yield points: a thread whose policy is SCHED_IDLE (kind 1) or whose nice
 * value is positive (kind 2) yields at each of them; a normal one (kind 0)
 * never does.  Counted on a fresh thread, whose policy is set before its
 * first yield point. */
typedef struct {
    int kind;
    int set_rc;                /* sched_setscheduler / setpriority result */
    unsigned long adam, dense; /* yields counted; asserted by the test's thread */
} yield_probe_t;

static void *yield_probe(void *arg)
{
    yield_probe_t *y = arg;
    if (y->kind == 1) {
        struct sched_param sp = {.sched_priority = 0};
        y->set_rc = sched_setscheduler(0, SCHED_IDLE, &sp);
    } else if (y->kind == 2) {
        y->set_rc = setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 5);
    }
    const size_t n = 200000; /* 4 slices of Adam */
    const ld_adam_cfg_t cfg = {1e-3f, 0.9f, 0.999f, 1e-8f};
    static float buf[4 * 200000];
    ld_adam_step(&cfg, 1, n, buf, buf + n, buf + 2 * n, buf + 3 * n);
    y->adam = ld_yield_points_taken();
    /* dense 2x8 -> 4: forward 1, backward 2 (with dx) */
    float x[16] = {0}, w[32] = {0}, b[4] = {0}, out[8], gw[32] = {0}, gb[4] = {0}, dx[16];
    ld_dense_forward(2, 8, 4, x, w, b, out);
    ld_dense_backward(2, 8, 4, x, w, out, gw, gb, dx);
    y->dense = ld_yield_points_taken() - y->adam;
    return NULL;
}

START_TEST(test_yield_points)
{
    const unsigned long want[3][2] = {{0, 0}, {4, 3}, {4, 3}};
    for (int kind = 0; kind < 3; kind++) {
        yield_probe_t y = {.kind = kind};
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, yield_probe, &y), 0);
        pthread_join(th, NULL);
        ck_assert_msg(y.set_rc == 0, "thread kind %d: could not set its policy or nice value", kind);
        ck_assert_msg(y.adam == want[kind][0] && y.dense == want[kind][1],
                      "thread kind %d: %lu yields in Adam, %lu in dense; want %lu, %lu", kind,
                      y.adam, y.dense, want[kind][0], want[kind][1]);
    }
}
END_TEST

/* ---- mlp ----------------------------------------------------------------------------- */

enum { MB = 4, ML = 3 };
typedef struct {
    ld_mlp_t net;
    ld_mlp_ws_t ws;
    float *params, *x, *c, *masks;
    size_t n_out;
} mlp_ctx_t;

static double mlp_obj(void *p)
{
    mlp_ctx_t *t = p;
    const float *y = ld_mlp_forward_preset(&t->net, t->params, &t->ws, MB, t->x, NULL, t->masks);
    return dot(t->c, y, t->n_out);
}

/* act x out_act, dropout with preset masks: every parameter and every input. */
START_TEST(test_mlp_gradients)
{
    static const ld_act_t hidden[] = {LD_ACT_LRELU, LD_ACT_RELU, LD_ACT_TANH, LD_ACT_SIGMOID};
    static const ld_act_t outs[] = {LD_ACT_NONE, LD_ACT_SIGMOID, LD_ACT_TANH};
    ld_act_t act = hidden[_i % 4], out_act = outs[_i / 4];
    const int sizes[ML + 1] = {6, 7, 5, 3};
    mlp_ctx_t t;
    size_t off = 0;
    ld_mlp_layout(&t.net, "net", 1, ML, sizes, act, out_act, 0.2f, 0.3f, &off);
    ck_assert_uint_eq(t.net.n_params, off);
    ck_assert_int_eq(ld_mlp_ws_init(&t.ws, &t.net, MB, 1), LD_OK);
    t.params = calloc(off, sizeof(float));
    float *g = calloc(off, sizeof(float));
    t.x = malloc(MB * sizes[0] * sizeof(float));
    t.n_out = (size_t)MB * sizes[ML];
    t.c = malloc(t.n_out * sizeof(float));
    size_t nm = (size_t)MB * (sizes[1] + sizes[2]);
    t.masks = malloc(nm * sizeof(float));
    float *dx = malloc(MB * sizes[0] * sizeof(float));
    ck_assert(t.params && g && t.x && t.c && t.masks && dx);
    ld_rng_t r;
    ld_rng_seed(&r, 60 + _i);
    ld_mlp_init(&t.net, t.params, &r);
    ld_rng_fill_uniform(&r, t.x, MB * sizes[0], -1.5f, 1.5f);
    ld_rng_fill_uniform(&r, t.c, t.n_out, -1, 1);
    ld_dropout_mask(&r, 0.3f, nm, t.masks);

    const float *y = ld_mlp_forward_preset(&t.net, t.params, &t.ws, MB, t.x, NULL, t.masks);
    /* the preset masks were used: the forward equals the layer-by-layer composition */
    float h[MB * 7], h2[MB * 7];
    ld_dense_forward(MB, 6, 7, t.x, t.params + t.net.w_off[0], t.params + t.net.b_off[0], h);
    ld_act_forward(act, 0.2f, MB * 7, h, h);
    ld_mul_inplace(MB * 7, h, t.masks);
    ld_dense_forward(MB, 7, 5, h, t.params + t.net.w_off[1], t.params + t.net.b_off[1], h2);
    ld_act_forward(act, 0.2f, MB * 5, h2, h2);
    ld_mul_inplace(MB * 5, h2, t.masks + MB * 7);
    ld_dense_forward(MB, 5, 3, h2, t.params + t.net.w_off[2], t.params + t.net.b_off[2], h);
    ld_act_forward(out_act, 0.2f, MB * 3, h, h);
    ck_assert_msg(tu_max_rel_diff(y, h, MB * 3, 1e-3) < 1e-5, "mlp forward != composition");

    ld_mlp_backward(&t.net, t.params, g, &t.ws, MB, t.c, dx);
    char what[96];
    for (int i = 0; i < ML; i++) {
        snprintf(what, sizeof what, "mlp %s/%s w%d", ld_act_name(act), ld_act_name(out_act), i);
        fd_check(what, mlp_obj, &t, t.params + t.net.w_off[i], g + t.net.w_off[i],
                 (size_t)sizes[i + 1] * sizes[i], 1, FD_H_NET);
        snprintf(what, sizeof what, "mlp %s/%s b%d", ld_act_name(act), ld_act_name(out_act), i);
        fd_check(what, mlp_obj, &t, t.params + t.net.b_off[i], g + t.net.b_off[i],
                 (size_t)sizes[i + 1], 1, FD_H_NET);
    }
    snprintf(what, sizeof what, "mlp %s/%s x", ld_act_name(act), ld_act_name(out_act));
    fd_check(what, mlp_obj, &t, t.x, dx, MB * sizes[0], 1, FD_H_NET);

    /* backward accumulates: a second pass doubles the parameter gradients (up to the
     * rounding of the GEMM's beta = 1 accumulation) */
    float *g2 = malloc(off * sizeof(float));
    ck_assert_ptr_nonnull(g2);
    memcpy(g2, g, off * sizeof(float));
    mlp_obj(&t);
    ld_mlp_backward(&t.net, t.params, g2, &t.ws, MB, t.c, NULL);
    double gmax = 0;
    for (size_t i = 0; i < off; i++)
        gmax = fmax(gmax, fabs((double)g[i]));
    for (size_t i = 0; i < off; i++)
        ck_assert_msg(fabs(g2[i] - 2.0 * g[i]) <= 1e-5 * gmax, "accumulate [%zu]: %g vs 2 x %g",
                      i, (double)g2[i], (double)g[i]);

    free(g2);
    free(t.params), free(g), free(t.x), free(t.c), free(t.masks), free(dx);
    ld_mlp_ws_free(&t.ws);
}
END_TEST

/* Without the training flag there is no dropout, whatever the rng. */
START_TEST(test_mlp_inference_no_dropout)
{
    const int sizes[3] = {4, 8, 2};
    ld_mlp_t net;
    size_t off = 0;
    ld_mlp_layout(&net, "d", 1, 2, sizes, LD_ACT_LRELU, LD_ACT_NONE, 0.2f, 0.5f, &off);
    float *p = calloc(off, sizeof(float)), x[2 * 4], y1[2 * 2], y2[2 * 2];
    ck_assert_ptr_nonnull(p);
    ld_rng_t r;
    ld_rng_seed(&r, 7);
    ld_mlp_init(&net, p, &r);
    fill_uniform(8, x, 8, -1, 1);
    ld_mlp_ws_t ws;
    ck_assert_int_eq(ld_mlp_ws_init(&ws, &net, 2, 0), LD_OK);
    memcpy(y1, ld_mlp_forward(&net, p, &ws, 2, x, &r), sizeof y1);
    memcpy(y2, ld_mlp_forward(&net, p, &ws, 2, x, &r), sizeof y2);
    ck_assert(memcmp(y1, y2, sizeof y1) == 0);
    float h[2 * 8];
    ld_dense_forward(2, 4, 8, x, p + net.w_off[0], p + net.b_off[0], h);
    ld_act_forward(LD_ACT_LRELU, 0.2f, 16, h, h);
    ld_dense_forward(2, 8, 2, h, p + net.w_off[1], p + net.b_off[1], y2);
    ck_assert(tu_max_rel_diff(y1, y2, 4, 1e-3) < 1e-6);
    ld_mlp_ws_free(&ws);
    free(p);
}
END_TEST

/* ---- whole models ----------------------------------------------------------------------- */

static ld_model_t *small_model(ld_kind_t kind, uint64_t seed)
{
    ld_arch_t a;
    ld_arch_default(kind, &a);
    a.img_h = a.img_w = 4;
    a.x_dim = 16;
    switch (kind) {
    case LD_KIND_VAE:
        a.z_dim = 3;
        a.enc = (ld_hidden_t){2, {12, 8}};
        a.dec = (ld_hidden_t){2, {8, 12}};
        break;
    case LD_KIND_GAN:
        a.z_dim = 5;
        a.dec = (ld_hidden_t){2, {10, 12}};
        a.enc = (ld_hidden_t){2, {12, 8}};
        a.dropout = 0.3f;
        break;
    case LD_KIND_CLASSIFIER:
        a.n_classes = 4;
        a.enc = (ld_hidden_t){2, {12, 10}};
        a.dropout = 0.25f;
        break;
    default: /* the conditional kinds are tested in check_cond.c */
        break;
    }
    ld_model_t *m = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_new(&a, seed, &m, &err) == LD_OK, "%s", err.msg);
    return m;
}

/* Check the gradient block g against finite differences of f, tensor by tensor. */
static void fd_model(const char *who, ld_model_t *m, const float *g, objective_fn f, void *ctx,
                     int net_only)
{
    ld_tensor_view_t tv[32];
    int n = ld_model_tensors(m, g, tv, 32);
    for (int i = 0; i < n; i++) {
        if (net_only >= 0) {
            const char *nm = m->nets[net_only].name;
            if (strncmp(tv[i].name, nm, strlen(nm)) || tv[i].name[strlen(nm)] != '.')
                continue;
        }
        char what[96];
        snprintf(what, sizeof what, "%s %.60s", who, tv[i].name);
        float *p = m->params + (tv[i].data - g);
        fd_check(what, f, ctx, p, tv[i].data, tv[i].numel, 1, FD_H_NET);
    }
}

enum { VB = 3 };
typedef struct {
    ld_model_t *m;
    ld_vae_ws_t ws;
    float x[VB * 16], eps[VB * 3];
    float beta;
} vae_ctx_t;

static double vae_obj(void *p)
{
    vae_ctx_t *c = p;
    double rec, kl;
    ld_vae_step(c->m, NULL, &c->ws, VB, c->x, c->eps, c->beta, &rec, &kl);
    return (rec + c->beta * kl) / VB;
}

START_TEST(test_vae_step_gradients)
{
    vae_ctx_t c = {.m = small_model(LD_KIND_VAE, 70), .beta = _i ? 0.5f : 1.0f};
    ck_assert_int_eq(ld_vae_ws_init(&c.ws, c.m, VB), LD_OK);
    fill_uniform(71, c.x, VB * 16, 0, 1);
    ld_rng_t r;
    ld_rng_seed(&r, 72);
    ld_rng_fill_normal(&r, c.eps, VB * 3, 0, 1);
    float *g = calloc(c.m->n_params, sizeof(float));
    ck_assert_ptr_nonnull(g);
    double rec, kl, rec2, kl2;
    ld_vae_step(c.m, g, &c.ws, VB, c.x, c.eps, c.beta, &rec, &kl);
    /* the loss without gradients is the same number */
    ld_vae_step(c.m, NULL, &c.ws, VB, c.x, c.eps, c.beta, &rec2, &kl2);
    ck_assert(rec == rec2 && kl == kl2);
    ck_assert(rec > 0 && kl >= 0);
    fd_model(_i ? "vae(beta 0.5)" : "vae", c.m, g, vae_obj, &c, -1);
    free(g);
    ld_vae_ws_free(&c.ws);
    ld_model_free(c.m);
}
END_TEST

enum { GB = 3 };
typedef struct {
    ld_model_t *m;
    ld_gan_ws_t ws;
    float real[GB * 16], z[GB * 5];
    float mr[GB * 20], mf[GB * 20], mg[GB * 20]; /* D hidden 12 + 8 */
    float *scratch;  /* gradient sink for passes whose gradients are not checked */
    ld_gan_loss_t loss;
} gan_ctx_t;

static double gan_d_obj(void *p)
{
    gan_ctx_t *c = p;
    return ld_gan_step_d_masks(c->m, c->scratch, &c->ws, GB, c->real, c->z, 0.9f, NULL, c->mr, c->mf,
                         NULL, NULL);
}

static double gan_g_obj(void *p)
{
    gan_ctx_t *c = p;
    gan_d_obj(c); /* G's forward on z, as in training */
    return ld_gan_step_g_masks(c->m, c->scratch, &c->ws, GB, c->loss, NULL, c->mg);
}

static void gan_ctx_init(gan_ctx_t *c, uint64_t seed)
{
    c->m = small_model(LD_KIND_GAN, seed);
    ck_assert_int_eq(ld_gan_ws_init(&c->ws, c->m, GB), LD_OK);
    c->scratch = calloc(c->m->n_params, sizeof(float));
    ck_assert_ptr_nonnull(c->scratch);
    fill_uniform(seed + 1, c->real, GB * 16, 0, 1);
    ld_rng_t r;
    ld_rng_seed(&r, seed + 2);
    ld_rng_fill_normal(&r, c->z, GB * 5, 0, 1);
    ld_dropout_mask(&r, 0.3f, GB * 20, c->mr);
    ld_dropout_mask(&r, 0.3f, GB * 20, c->mf);
    ld_dropout_mask(&r, 0.3f, GB * 20, c->mg);
}

static void gan_ctx_free(gan_ctx_t *c)
{
    free(c->scratch);
    ld_gan_ws_free(&c->ws);
    ld_model_free(c->m);
}

START_TEST(test_gan_step_d_gradients)
{
    gan_ctx_t c = {.loss = LD_GAN_LOSS_NS};
    gan_ctx_init(&c, 80);
    float *g = calloc(c.m->n_params, sizeof(float));
    ck_assert_ptr_nonnull(g);
    double pr, pf;
    double l = ld_gan_step_d_masks(c.m, g, &c.ws, GB, c.real, c.z, 0.9f, NULL, c.mr, c.mf, &pr, &pf);
    ck_assert(isfinite(l) && pr > 0 && pr < 1 && pf > 0 && pf < 1);
    /* only D's range is touched */
    const ld_mlp_t *G = &c.m->nets[LD_GAN_G];
    for (size_t i = 0; i < G->n_params; i++)
        ck_assert(g[G->off + i] == 0.0f);
    fd_model("gan D-step", c.m, g, gan_d_obj, &c, LD_GAN_D);
    free(g);
    gan_ctx_free(&c);
}
END_TEST

/* G-step gradients w.r.t. the generator's parameters, D fixed; both losses. */
START_TEST(test_gan_step_g_gradients)
{
    gan_ctx_t c = {.loss = _i ? LD_GAN_LOSS_MINIMAX : LD_GAN_LOSS_NS};
    gan_ctx_init(&c, 90);
    float *g = calloc(c.m->n_params, sizeof(float));
    ck_assert_ptr_nonnull(g);
    gan_d_obj(&c);
    const ld_mlp_t *D = &c.m->nets[LD_GAN_D];
    float *gd = g + D->off;
    size_t nd = D->n_params;
    for (size_t k = 0; k < nd; k++)
        gd[k] = 7.0f;
    double l = ld_gan_step_g_masks(c.m, g, &c.ws, GB, c.loss, NULL, c.mg);
    ck_assert(isfinite(l));
    /* D is fixed in the G step: its gradient range is not written */
    for (size_t k = 0; k < nd; k++)
        ck_assert_float_eq(gd[k], 7.0f);
    /* minimax's loss is mean log(1 - D(fake)) < 0; ns's is mean -log D(fake) > 0 */
    ck_assert(c.loss == LD_GAN_LOSS_MINIMAX ? l < 0 : l > 0);
    fd_model(_i ? "gan G-step(minimax)" : "gan G-step(ns)", c.m, g, gan_g_obj, &c, LD_GAN_G);
    free(g);
    gan_ctx_free(&c);
}
END_TEST

enum { CB = 5 };
typedef struct {
    ld_model_t *m;
    ld_mlp_ws_t ws;
    float x[CB * 16], dl[CB * 4];
    uint8_t y[CB];
    ld_rng_t rng; /* copied per call: same dropout masks every time */
    const float *row_w; /* per-row loss factors (--balance weight), or NULL */
} cls_ctx_t;

static double cls_obj(void *p)
{
    cls_ctx_t *c = p;
    ld_rng_t r = c->rng;
    return ld_classifier_step_w(c->m, NULL, &c->ws, CB, c->x, c->y, c->row_w, &r, c->dl, NULL) / CB;
}

START_TEST(test_classifier_step_gradients)
{
    cls_ctx_t c = {.m = small_model(LD_KIND_CLASSIFIER, 100), .y = {0, 1, 2, 3, 1}};
    ck_assert_int_eq(ld_mlp_ws_init(&c.ws, &c.m->nets[LD_CLS_NET], CB, 1), LD_OK);
    fill_uniform(101, c.x, CB * 16, 0, 1);
    ld_rng_seed(&c.rng, 102);
    float *g = calloc(c.m->n_params, sizeof(float));
    ck_assert_ptr_nonnull(g);
    ld_rng_t r = c.rng;
    int correct = -1;
    double l = ld_classifier_step(c.m, g, &c.ws, CB, c.x, c.y, &r, c.dl, &correct);
    ck_assert(isfinite(l) && l > 0);
    ck_assert(correct >= 0 && correct <= CB);
    /* dropout was on: the masks hold zeros */
    int zeros = 0;
    for (int i = 0; i < CB * 12; i++)
        zeros += c.ws.mask[0][i] == 0.0f;
    ck_assert_int_gt(zeros, 0);
    fd_model("classifier", c.m, g, cls_obj, &c, -1);
    free(g);
    ld_mlp_ws_free(&c.ws);
    ld_model_free(c.m);
}
END_TEST

/* With per-row loss factors (balance.h, --balance weight): the gradients of
 * the weighted objective, for the classifier and the VAE. */
START_TEST(test_weighted_step_gradients)
{
    static const float s[CB] = {0.4f, 2.2f, 0.7f, 1.0f, 0.7f};
    float *g;
    if (_i == 0) {
        cls_ctx_t c = {.m = small_model(LD_KIND_CLASSIFIER, 100), .y = {0, 1, 2, 3, 1}, .row_w = s};
        ck_assert_int_eq(ld_mlp_ws_init(&c.ws, &c.m->nets[LD_CLS_NET], CB, 1), LD_OK);
        fill_uniform(101, c.x, CB * 16, 0, 1);
        ld_rng_seed(&c.rng, 102);
        ck_assert_ptr_nonnull(g = calloc(c.m->n_params, sizeof(float)));
        ld_rng_t r = c.rng;
        ld_classifier_step_w(c.m, g, &c.ws, CB, c.x, c.y, s, &r, c.dl, NULL);
        fd_model("classifier(weighted)", c.m, g, cls_obj, &c, -1);
        ld_mlp_ws_free(&c.ws);
        ld_model_free(c.m);
    } else {
        vae_ctx_t c = {.m = small_model(LD_KIND_VAE, 70), .beta = 1.0f};
        ck_assert_int_eq(ld_vae_ws_init(&c.ws, c.m, VB), LD_OK);
        c.ws.row_w = s;
        fill_uniform(71, c.x, VB * 16, 0, 1);
        ld_rng_t r;
        ld_rng_seed(&r, 72);
        ld_rng_fill_normal(&r, c.eps, VB * 3, 0, 1);
        ck_assert_ptr_nonnull(g = calloc(c.m->n_params, sizeof(float)));
        double rec, kl;
        ld_vae_step(c.m, g, &c.ws, VB, c.x, c.eps, c.beta, &rec, &kl);
        fd_model("vae(weighted)", c.m, g, vae_obj, &c, -1);
        ld_vae_ws_free(&c.ws);
        ld_model_free(c.m);
    }
    free(g);
}
END_TEST

/* ---- rng -------------------------------------------------------------------------------- */

START_TEST(test_rng_determinism)
{
    ld_rng_t a, b, c;
    ld_rng_seed(&a, 42);
    ld_rng_seed(&b, 42);
    ld_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = ld_rng_u64(&a), y = ld_rng_u64(&b), z = ld_rng_u64(&c);
        ck_assert(x == y);
        differ += x != z;
    }
    ck_assert_int_gt(differ, 990);
    float n1[101], n2[101];
    ld_rng_seed(&a, 9);
    ld_rng_seed(&b, 9);
    ld_rng_fill_normal(&a, n1, 101, 0, 1);
    ld_rng_fill_normal(&b, n2, 101, 0, 1);
    ck_assert(memcmp(n1, n2, sizeof n1) == 0);
    /* a saved state resumes the same stream */
    ld_rng_t saved = a;
    uint64_t next = ld_rng_u64(&a);
    ck_assert(ld_rng_u64(&saved) == next);
    /* seed 0 is a valid seed (splitmix64 never gives an all-zero state) */
    ld_rng_seed(&a, 0);
    ck_assert(a.s[0] | a.s[1] | a.s[2] | a.s[3]);
}
END_TEST

START_TEST(test_rng_uniform)
{
    enum { N = 200000 };
    ld_rng_t r;
    ld_rng_seed(&r, 11);
    double s = 0, s2 = 0;
    long bins[10] = {0};
    for (int i = 0; i < N; i++) {
        float u = ld_rng_uniform(&r);
        ck_assert(u >= 0.0f && u < 1.0f);
        s += u, s2 += (double)u * u;
        bins[(int)(u * 10)]++;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    ck_assert_msg(fabs(mean - 0.5) < 5 * sqrt(1.0 / 12 / N), "mean %g", mean);
    ck_assert_msg(fabs(var - 1.0 / 12) < 5 * sqrt(1.0 / 180 / N), "var %g", var);
    double chi2 = 0;
    for (int k = 0; k < 10; k++)
        chi2 += (bins[k] - N / 10.0) * (bins[k] - N / 10.0) / (N / 10.0);
    ck_assert_msg(chi2 < 33.7, "chi2 %g (9 dof, p = 1e-4)", chi2);
    float x[1000];
    ld_rng_fill_uniform(&r, x, 1000, -3.0f, -1.0f);
    for (int i = 0; i < 1000; i++)
        ck_assert(x[i] >= -3.0f && x[i] < -1.0f);
}
END_TEST

/* fill's mean and std parameters: 100,000 draws of N(3, 0.5^2) into x. */
static void check_mean_std(void (*fill)(ld_rng_t *, float *, size_t, float, float), ld_rng_t *r,
                           float *x)
{
    fill(r, x, 100000, 3.0f, 0.5f);
    double s = 0, s2 = 0;
    for (int i = 0; i < 100000; i++)
        s += x[i], s2 += (double)x[i] * x[i];
    double mean = s / 1e5, var = s2 / 1e5 - mean * mean;
    ck_assert_msg(fabs(mean - 3) < 5 * 0.5 / sqrt(1e5), "mean %g", mean);
    ck_assert_msg(fabs(var - 0.25) < 5 * 0.25 * sqrt(2 / 1e5), "var %g", var);
}

START_TEST(test_rng_normal)
{
    enum { N = 200001 }; /* odd: the tail uses one draw of a pair */
    float *x = malloc(N * sizeof *x);
    ck_assert_ptr_nonnull(x);
    ld_rng_t r;
    ld_rng_seed(&r, 12);
    x[N - 1] = NAN;
    ld_rng_fill_normal(&r, x, N, 0, 1);
    double s = 0, s2 = 0, s4 = 0;
    long in1 = 0;
    for (int i = 0; i < N; i++) {
        ck_assert(isfinite(x[i]));
        s += x[i], s2 += (double)x[i] * x[i], s4 += pow(x[i], 4);
        in1 += fabsf(x[i]) < 1.0f;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    ck_assert_msg(fabs(mean) < 5 / sqrt(N), "mean %g", mean);
    ck_assert_msg(fabs(var - 1) < 5 * sqrt(2.0 / N), "var %g", var);
    ck_assert_msg(fabs(s4 / N - 3) < 5 * sqrt(96.0 / N), "4th moment %g", s4 / N);
    double p1 = 0.6826894921370859; /* P(|x| < 1) */
    ck_assert_msg(fabs((double)in1 / N - p1) < 5 * sqrt(p1 * (1 - p1) / N), "P(|x|<1) %g",
                  (double)in1 / N);
    check_mean_std(ld_rng_fill_normal, &r, x);
    free(x);
}
END_TEST

/* Any slice of a Box-Muller stream, drawn on its own, equals the same
 * elements of the whole draw, bit for bit: odd and even starts and ends. */
START_TEST(test_rng_normal_slice)
{
    enum { N = 41 };
    float all[N], part[N];
    ld_rng_t r, before;
    ld_rng_seed(&r, 7);
    before = r;
    ld_rng_fill_normal(&r, all, N, 0.5f, 2.0f);
    for (size_t first = 0; first <= N; first++)
        for (size_t n = 0; first + n <= N; n++) {
            for (size_t k = 0; k < N; k++)
                part[k] = NAN;
            ld_rng_fill_normal_slice(&before, first, part, n, 0.5f, 2.0f);
            ck_assert_int_eq(memcmp(part, all + first, n * sizeof *part), 0);
            if (n < N)
                ck_assert(isnan(part[n])); /* nothing written past the slice */
        }
}
END_TEST

/* The ziggurat's normals: moments, the tail it samples separately, and a
 * chi-squared against the normal CDF over 66 bins of 0.125 (which a wrong
 * layer table, wedge test or tail would fail). */
START_TEST(test_rng_normal_fast)
{
    enum { N = 2000000, NB = 66 }; /* bins: (-inf,-4), 64 of 0.125 over [-4,4), [4,inf) */
    float *x = malloc(N * sizeof *x);
    ck_assert_ptr_nonnull(x);
    ld_rng_t r;
    ld_rng_seed(&r, 14);
    ld_rng_fill_normal_fast(&r, x, N, 0, 1);
    double s = 0, s2 = 0, s3 = 0, s4 = 0;
    long bins[NB] = {0}, tail = 0;
    const double R = 3.442619855899; /* where the base layer's tail starts */
    for (int i = 0; i < N; i++) {
        ck_assert(isfinite(x[i]));
        double v = x[i];
        s += v, s2 += v * v, s3 += v * v * v, s4 += v * v * v * v;
        int k = v < -4 ? 0 : v >= 4 ? NB - 1 : 1 + (int)floor((v + 4) * 8);
        bins[k]++;
        tail += fabs(v) > R;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    ck_assert_msg(fabs(mean) < 5 / sqrt(N), "mean %g", mean);
    ck_assert_msg(fabs(var - 1) < 5 * sqrt(2.0 / N), "var %g", var);
    ck_assert_msg(fabs(s3 / N) < 5 * sqrt(15.0 / N), "3rd moment %g", s3 / N);
    ck_assert_msg(fabs(s4 / N - 3) < 5 * sqrt(96.0 / N), "4th moment %g", s4 / N);
    double pt = erfc(R / sqrt(2)); /* P(|x| > R) = 5.8e-4 */
    ck_assert_msg(fabs((double)tail / N - pt) < 5 * sqrt(pt / N), "P(|x|>R) %g, want %g",
                  (double)tail / N, pt);
    double chi2 = 0;
    for (int k = 0; k < NB; k++) {
        double lo = k == 0 ? -INFINITY : -4 + (k - 1) * 0.125;
        double hi = k == NB - 1 ? INFINITY : -4 + k * 0.125;
        double p = 0.5 * (erfc(-hi / sqrt(2)) - erfc(-lo / sqrt(2)));
        chi2 += (bins[k] - N * p) * (bins[k] - N * p) / (N * p);
    }
    ck_assert_msg(chi2 < 121.8, "chi2 %g (65 dof, p = 1e-4)", chi2);
    /* same seed, same stream; a different one from Box-Muller's */
    float a[64], b[64], c[64];
    ld_rng_seed(&r, 9);
    ld_rng_fill_normal_fast(&r, a, 64, 0, 1);
    ld_rng_seed(&r, 9);
    ld_rng_fill_normal_fast(&r, b, 64, 0, 1);
    ld_rng_seed(&r, 9);
    ld_rng_fill_normal(&r, c, 64, 0, 1);
    ck_assert(memcmp(a, b, sizeof a) == 0);
    ck_assert(memcmp(a, c, sizeof a) != 0);
    check_mean_std(ld_rng_fill_normal_fast, &r, x);
    free(x);
}
END_TEST

START_TEST(test_rng_below)
{
    ld_rng_t r;
    ld_rng_seed(&r, 13);
    static const uint32_t ns[] = {1, 2, 3, 7, 10, 1000, 0x80000001u, 0xffffffffu};
    for (size_t k = 0; k < LD_ARRAY_LEN(ns); k++)
        for (int i = 0; i < 10000; i++)
            ck_assert(ld_rng_below(&r, ns[k]) < ns[k]);
    /* chi-squared over 7 buckets */
    enum { N = 140000 };
    long bins[7] = {0};
    for (int i = 0; i < N; i++)
        bins[ld_rng_below(&r, 7)]++;
    double chi2 = 0;
    for (int k = 0; k < 7; k++)
        chi2 += (bins[k] - N / 7.0) * (bins[k] - N / 7.0) / (N / 7.0);
    ck_assert_msg(chi2 < 27.9, "chi2 %g (6 dof, p = 1e-4)", chi2);
    /* n = 3 * 2^30: unbiased gives P(x < 2^31) = 2/3; "u32 % n" would give 3/4 */
    const uint32_t n = 3u << 30;
    long low = 0;
    enum { M = 50000 };
    for (int i = 0; i < M; i++)
        low += ld_rng_below(&r, n) < (1u << 31);
    double p = 2.0 / 3;
    ck_assert_msg(fabs((double)low / M - p) < 5 * sqrt(p * (1 - p) / M), "P(x < 2^31) = %g",
                  (double)low / M);
    /* shuffle is a permutation */
    int idx[100], seen[100] = {0};
    for (int i = 0; i < 100; i++)
        idx[i] = i;
    ld_rng_shuffle(&r, idx, 100);
    int moved = 0;
    for (int i = 0; i < 100; i++) {
        ck_assert(idx[i] >= 0 && idx[i] < 100 && !seen[idx[i]]);
        seen[idx[i]] = 1;
        moved += idx[i] != i;
    }
    ck_assert_int_gt(moved, 50);
}
END_TEST

/* ---- eigen-decomposition and Fréchet distance -------------------------------------------- */

/* A random orthogonal F x F matrix (product of Householder reflections). */
static void random_orthogonal(int F, uint64_t seed, double *q)
{
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    for (int i = 0; i < F * F; i++)
        q[i] = i % (F + 1) == 0;
    double *v = malloc(F * sizeof *v), *t = malloc(F * sizeof *t);
    ck_assert(v && t);
    for (int k = 0; k < 3; k++) {
        double nn = 0;
        for (int i = 0; i < F; i++) {
            float f;
            ld_rng_fill_normal(&r, &f, 1, 0, 1);
            v[i] = f, nn += v[i] * v[i];
        }
        /* q = q (I - 2 v v^T / |v|^2) */
        for (int i = 0; i < F; i++) {
            double d = 0;
            for (int j = 0; j < F; j++)
                d += q[i * F + j] * v[j];
            t[i] = d;
        }
        for (int i = 0; i < F; i++)
            for (int j = 0; j < F; j++)
                q[i * F + j] -= 2 * t[i] * v[j] / nn;
    }
    free(v), free(t);
}

/* a = q diag(w) q^T */
static void compose(int F, const double *q, const double *w, double *a)
{
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++) {
            double s = 0;
            for (int k = 0; k < F; k++)
                s += q[i * F + k] * w[k] * q[j * F + k];
            a[i * F + j] = s;
        }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

START_TEST(test_sym_eig)
{
    /* [[2,1],[1,2]]: eigenvalues 1 and 3 */
    double a2[4] = {2, 1, 1, 2}, w2[2], v2[4];
    ld_sym_eig(2, a2, w2, v2);
    qsort(w2, 2, sizeof(double), cmp_double);
    ck_assert(fabs(w2[0] - 1) < 1e-12 && fabs(w2[1] - 3) < 1e-12);

    /* a diagonal matrix is its own decomposition */
    double ad[9] = {5, 0, 0, 0, -2, 0, 0, 0, 0.5}, wd[3], vd[9];
    ld_sym_eig(3, ad, wd, vd);
    ck_assert(wd[0] == 5 && wd[1] == -2 && wd[2] == 0.5);

    /* q diag(w) q^T with known w: values, A v = lambda v, V orthonormal */
    enum { F = 12 };
    double q[F * F], w[F], a[F * F], a0[F * F], got[F], v[F * F];
    for (int i = 0; i < F; i++)
        w[i] = (i - 4) * 0.75 + (i == 7 ? 1e-3 : 0); /* mixed signs, near-degenerate pairs */
    random_orthogonal(F, 14, q);
    compose(F, q, w, a);
    memcpy(a0, a, sizeof a);
    ld_sym_eig(F, a, got, v);
    for (int k = 0; k < F; k++) {
        for (int i = 0; i < F; i++) {
            double av = 0;
            for (int j = 0; j < F; j++)
                av += a0[i * F + j] * v[j * F + k];
            ck_assert_msg(fabs(av - got[k] * v[i * F + k]) < 1e-9, "A v != lambda v (k=%d)", k);
        }
        for (int l = 0; l < F; l++) {
            double d = 0;
            for (int i = 0; i < F; i++)
                d += v[i * F + k] * v[i * F + l];
            ck_assert(fabs(d - (k == l)) < 1e-9);
        }
    }
    qsort(got, F, sizeof(double), cmp_double);
    qsort(w, F, sizeof(double), cmp_double);
    for (int i = 0; i < F; i++)
        ck_assert_msg(fabs(got[i] - w[i]) < 1e-9, "eigenvalue %d: %.12g, want %.12g", i, got[i],
                      w[i]);
}
END_TEST

START_TEST(test_frechet_closed_forms)
{
    enum { F = 10 };
    double q[F * F], w[F], c1[F * F], c2[F * F], mu1[F], mu2[F], id[F * F];
    for (int i = 0; i < F; i++) {
        w[i] = 0.1 + 0.3 * i;
        mu1[i] = 0.5 * i - 1;
        mu2[i] = mu1[i];
    }
    for (int i = 0; i < F * F; i++)
        id[i] = i % (F + 1) == 0;
    random_orthogonal(F, 15, q);
    compose(F, q, w, c1);

    /* identical Gaussians: 0 */
    double d = ld_frechet(F, mu1, c1, mu2, c1);
    ck_assert_msg(fabs(d) < 1e-9, "identical: %g", d);

    /* N(0, I) vs N(m, I): |m|^2 */
    double zero[F] = {0}, m2 = 0;
    for (int i = 0; i < F; i++)
        m2 += mu1[i] * mu1[i];
    d = ld_frechet(F, zero, id, mu1, id);
    ck_assert_msg(fabs(d - m2) < 1e-9 * m2, "N(0,I) vs N(m,I): %.12g, want %.12g", d, m2);

    /* diagonal covariances: |mu1-mu2|^2 + sum (s1 - s2)^2 */
    double s1[F], s2[F], want = 0;
    memset(c1, 0, sizeof c1);
    memset(c2, 0, sizeof c2);
    for (int i = 0; i < F; i++) {
        s1[i] = 0.2 + 0.1 * i;
        s2[i] = 1.5 - 0.12 * i;
        c1[i * F + i] = s1[i] * s1[i];
        c2[i * F + i] = s2[i] * s2[i];
        mu2[i] = mu1[i] + (i % 3) * 0.25;
        want += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]) + (s1[i] - s2[i]) * (s1[i] - s2[i]);
    }
    d = ld_frechet(F, mu1, c1, mu2, c2);
    ck_assert_msg(fabs(d - want) < 1e-9 * want, "diagonal: %.12g, want %.12g", d, want);

    /* commuting: c2 = k^2 c1 -> (1-k)^2 tr(c1) */
    compose(F, q, w, c1);
    double tr = 0;
    for (int i = 0; i < F * F; i++)
        c2[i] = 4.0 * c1[i];
    for (int i = 0; i < F; i++)
        tr += c1[i * F + i];
    d = ld_frechet(F, mu1, c1, mu1, c2);
    ck_assert_msg(fabs(d - tr) < 1e-9 * tr, "c2 = 4 c1: %.12g, want %.12g", d, tr);

    /* a non-commuting 2x2 pair: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), M similar to c1 c2 */
    double a[4] = {2.0, 0.6, 0.6, 1.0}, b[4] = {0.5, -0.3, -0.3, 3.0};
    double m0[2] = {0.1, -0.2}, m1[2] = {0.4, 0.3};
    double tr_ab = a[0] * b[0] + a[1] * b[2] + a[2] * b[1] + a[3] * b[3];
    double det = (a[0] * a[3] - a[1] * a[2]) * (b[0] * b[3] - b[1] * b[2]);
    double w2 = (0.3 * 0.3 + 0.5 * 0.5) + (a[0] + a[3] + b[0] + b[3]) -
                2 * sqrt(tr_ab + 2 * sqrt(det));
    d = ld_frechet(2, m0, a, m1, b);
    ck_assert_msg(fabs(d - w2) < 1e-10, "2x2 non-commuting: %.12g, want %.12g", d, w2);
    ck_assert_msg(fabs(ld_frechet(2, m1, b, m0, a) - w2) < 1e-10, "not symmetric");
}
END_TEST

Suite *suite_nn(void)
{
    Suite *s = suite_create("nn");
    TCase *tc = tcase_create("layers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_dense_gradients);
    tcase_add_loop_test(tc, test_activation_gradients, 0, (int)LD_ARRAY_LEN(all_acts));
    tcase_add_test(tc, test_tanh_against_libm);
    tcase_add_test(tc, test_leaky_slope_configurable);
    tcase_add_test(tc, test_bce_logits);
    tcase_add_test(tc, test_bce_extreme_logits);
    tcase_add_test(tc, test_kl_gaussian);
    tcase_add_test(tc, test_softmax_xent);
    tcase_add_test(tc, test_dropout_mask);
    tcase_add_test(tc, test_linear_init);
    tcase_add_test(tc, test_adam_hand_computed);
    tcase_add_test(tc, test_adam_slices);
    tcase_add_test(tc, test_adam_step_sum);
    tcase_add_test(tc, test_bce_blocks);
    tcase_add_test(tc, test_yield_points);
    tcase_add_loop_test(tc, test_mlp_gradients, 0, 12);
    tcase_add_test(tc, test_mlp_inference_no_dropout);
    suite_add_tcase(s, tc);

    TCase *tm = tcase_create("models");
    tcase_set_timeout(tm, 60);
    tcase_add_loop_test(tm, test_vae_step_gradients, 0, 2);
    tcase_add_test(tm, test_gan_step_d_gradients);
    tcase_add_loop_test(tm, test_gan_step_g_gradients, 0, 2);
    tcase_add_test(tm, test_classifier_step_gradients);
    tcase_add_loop_test(tm, test_weighted_step_gradients, 0, 2);
    suite_add_tcase(s, tm);

    TCase *tr = tcase_create("rng_eval");
    tcase_set_timeout(tr, 60);
    tcase_add_test(tr, test_rng_determinism);
    tcase_add_test(tr, test_rng_uniform);
    tcase_add_test(tr, test_rng_normal);
    tcase_add_test(tr, test_rng_normal_slice);
    tcase_add_test(tr, test_rng_normal_fast);
    tcase_add_test(tr, test_rng_below);
    tcase_add_test(tr, test_sym_eig);
    tcase_add_test(tr, test_frechet_closed_forms);
    suite_add_tcase(s, tr);
    return s;
}

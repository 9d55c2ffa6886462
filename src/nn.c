/* nn.c — dense layers, activations, losses, Adam, init. See nn.h.
 * Loss sums accumulate in double so that a 100k-element sum keeps ~1e-7
 * relative accuracy; everything else is float32 like PyTorch. */
#define _GNU_SOURCE
#include "latentd/nn.h"
#include "nn_impl.h"
#include "latentd/common.h"

#include <cblas.h>
#include <errno.h>
#include <sched.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>
#include <math.h>
#include <string.h>

void ld_blas_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }

const char *ld_blas_core(void) { return openblas_get_corename(); }

void ld_blas_fix_coretype(char **argv)
{
    const char *core = openblas_get_corename();
    if (getenv("OPENBLAS_CORETYPE") || !core || strcasecmp(core, "prescott") != 0)
        return;
    const char *want = NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    if (!want)
        return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with the slow kernels */
}

/* ---- activations ---- */

static const char *const act_names[] = {"none", "leaky_relu", "relu", "tanh", "sigmoid"};

const char *ld_act_name(ld_act_t a)
{
    return (unsigned)a < LD_ARRAY_LEN(act_names) ? act_names[a] : "?";
}

int ld_act_parse(const char *s, ld_act_t *out)
{
    if (!s)
        return -1;
    if (strcmp(s, "lrelu") == 0) {
        *out = LD_ACT_LRELU;
        return 0;
    }
    for (unsigned i = 0; i < LD_ARRAY_LEN(act_names); i++)
        if (strcmp(s, act_names[i]) == 0) {
            *out = (ld_act_t)i;
            return 0;
        }
    return -1;
}

/* Vectorisable exp: range reduction to r in [-ln2/2, ln2/2] and a degree-6
 * Taylor polynomial of degree 7 (truncation < 1e-8 relative), then 2^n by
 * exponent bits.
 * Written without calls or branches so that GCC vectorises the loops that use
 * it; libm's expf/log1pf would be called once per element. */
static inline float fast_exp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693145751953125f - n * 1.42860682030941723e-06f;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 +
              r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* log(1 + e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) <= 1/3, odd series
 * to s^11 (error < 1.1e-7 absolute). */
static inline float log1p_unit(float e)
{
    float s = e / (2.0f + e), s2 = s * s;
    return 2.0f * s * (1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 +
           s2 * (1.0f / 9 + s2 * (1.0f / 11))))));
}

static inline float sigmoidf(float x)
{
    /* Stable both ways: only exponentiates -|x|. */
    float e = fast_exp(-fabsf(x));
    float inv = 1.0f / (1.0f + e);
    return x >= 0 ? inv : e * inv;
}

/* tanh without libm, so that the loops using it vectorise.  Below 0.625 the
 * odd Taylor series to x^19 (truncation < 1e-9 relative there); above it
 * 1 - 2 / (e^{2|x|} + 1), which has no cancellation once tanh >= 0.55.  |x|
 * is clamped at 10 (where the formula and tanhf give 1), the sign put back with copysign
 * (so -0 stays -0) and NaN passed through.  Agrees with glibc's tanhf to 2
 * ulp and 1.2e-7 absolute over every float (check_nn's sweep). */
static inline float tanh_vec(float x)
{
    float a = fabsf(x);
    a = a < 10.0f ? a : 10.0f;
    float a2 = a * a;
    float p = a + a * a2 * (-1.0f / 3 + a2 * (2.0f / 15 + a2 * (-17.0f / 315 +
              a2 * (62.0f / 2835 + a2 * (-1382.0f / 155925 + a2 * (21844.0f / 6081075 +
              a2 * (-929569.0f / 638512875 + a2 * (6404582.0f / 10854718875.0f +
              a2 * (-443861162.0f / 1856156927625.0f)))))))));
    float big = 1.0f - 2.0f / (fast_exp(2.0f * a) + 1.0f);
    float t = copysignf(a < 0.625f ? p : big, x);
    return x != x ? x : t;
}

/* The elementwise kernels are compiled for AVX-512, AVX2 and baseline x86-64;
 * the loader picks the best the CPU has (GCC function multi-versioning). */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define LD_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LD_VECTOR_CLONES
#endif

LD_VECTOR_CLONES
void ld_act_forward(ld_act_t a, float slope, size_t n, const float *x, float *y)
{
    switch (a) {
    case LD_ACT_NONE:
        if (y != x)
            memcpy(y, x, n * sizeof *y);
        break;
    case LD_ACT_LRELU:
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : slope * x[i];
        break;
    case LD_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : 0.0f;
        break;
    case LD_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            y[i] = tanh_vec(x[i]);
        break;
    case LD_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            y[i] = sigmoidf(x[i]);
        break;
    }
}

LD_VECTOR_CLONES
void ld_act_backward(ld_act_t a, float slope, size_t n, const float *y, const float *dy,
                     float *dx)
{
    switch (a) {
    case LD_ACT_NONE:
        if (dx != dy)
            memcpy(dx, dy, n * sizeof *dx);
        break;
    case LD_ACT_LRELU:
        for (size_t i = 0; i < n; i++)
            dx[i] = y[i] > 0 ? dy[i] : slope * dy[i];
        break;
    case LD_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            dx[i] = y[i] > 0 ? dy[i] : 0.0f;
        break;
    case LD_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            dx[i] = dy[i] * (1.0f - y[i] * y[i]);
        break;
    case LD_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            dx[i] = dy[i] * y[i] * (1.0f - y[i]);
        break;
    }
}

/* ---- giving way to serving ---- */

static _Thread_local int yield_background = -1; /* -1: not read yet */
static _Thread_local unsigned long yield_taken;

int ld_yield_background(void)
{
    if (yield_background < 0) {
        errno = 0;
        int nice = getpriority(PRIO_PROCESS, 0); /* this thread's, on Linux */
        yield_background = sched_getscheduler(0) == SCHED_IDLE || (errno == 0 && nice > 0);
    }
    return yield_background;
}

void ld_yield_point(void)
{
    if (ld_yield_background()) {
        sched_yield();
        yield_taken++;
    }
}

unsigned long ld_yield_points_taken(void)
{
    return yield_taken;
}

/* ---- abandoning a step ---- */

static _Thread_local const atomic_int *abandon_flag;

void ld_step_abandon_flag(const atomic_int *flag)
{
    abandon_flag = flag;
}

int ld_step_abandoned(void)
{
    return abandon_flag && atomic_load_explicit(abandon_flag, memory_order_relaxed);
}

/* ---- dense ---- */

/* Multiply-adds of one GEMM call.  A larger product is done in slices of
 * batch rows with a yield point and a check for an abandoned step between
 * them, so neither serving nor a cancel waits for a whole large layer; the
 * smaller products (every model that fits in a few hundred MB) are one call,
 * bit for bit as before. */
#define GEMM_SLICE (1L << 28)

static int slice_rows(int B, int in, int out)
{
    long per_row = (long)in * out;
    long rows = GEMM_SLICE / (per_row > 0 ? per_row : 1);
    return rows >= B ? B : rows < 1 ? 1 : (int)rows;
}

/* The rows of the slice starting at r0, after a yield point; 0 when the
 * step is abandoned (the caller's loop ends). */
static int slice_at(int B, int r0, int rows)
{
    ld_yield_point();
    if (ld_step_abandoned())
        return 0;
    return B - r0 < rows ? B - r0 : rows;
}

void ld_dense_forward(int B, int in, int out, const float *x, const float *w, const float *b,
                      float *y)
{
    /* y (B, out) = b broadcast, then y += x (B, in) * w^T (in, out) */
    const int rows = slice_rows(B, in, out);
    for (int r0 = 0, n; r0 < B && (n = slice_at(B, r0, rows)) > 0; r0 += rows) {
        float *yr = y + (size_t)r0 * out;
        for (int i = 0; i < n; i++)
            memcpy(yr + (size_t)i * out, b, (size_t)out * sizeof *y);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f,
                    x + (size_t)r0 * in, in, w, in, 1.0f, yr, out);
    }
}

void ld_dense_backward(int B, int in, int out, const float *x, const float *w, const float *dy,
                       float *gw, float *gb, float *dx)
{
    const int rows = slice_rows(B, in, out);
    if (gw) {
        /* gw (out, in) += dy^T (out, B) * x (B, in), a slice of the batch at a time */
        for (int r0 = 0, n; r0 < B && (n = slice_at(B, r0, rows)) > 0; r0 += rows)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f,
                        dy + (size_t)r0 * out, out, x + (size_t)r0 * in, in, 1.0f, gw, in);
        /* gb (out) += column sums of dy */
        for (int i = 0; i < B; i++) {
            const float *row = dy + (size_t)i * out;
            for (int j = 0; j < out; j++)
                gb[j] += row[j];
        }
    }
    /* dx (B, in) = dy (B, out) * w (out, in) */
    for (int r0 = 0, n; dx && r0 < B && (n = slice_at(B, r0, rows)) > 0; r0 += rows)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f,
                    dy + (size_t)r0 * out, out, w, in, 0.0f, dx + (size_t)r0 * in, in);
}

/* ---- dropout ---- */

void ld_dropout_mask(ld_rng_t *r, float p, size_t n, float *mask)
{
    ld_rng_fill_mask(r, p, 1.0f / (1.0f - p), n, mask);
}

LD_VECTOR_CLONES
void ld_mul_inplace(size_t n, float *x, const float *mask)
{
    for (size_t i = 0; i < n; i++)
        x[i] *= mask[i];
}

/* ---- losses ---- */

/* One element of BCE on logits given e = exp(-|l|): returns the loss,
 * *g = sigmoid(l) - t. */
static inline float bce_elem_e(float l, float t, float e, float *g)
{
    float inv = 1.0f / (1.0f + e);
    *g = (l >= 0 ? inv : e * inv) - t;
    return (l > 0 ? l : 0.0f) - l * t + log1p_unit(e);
}

static inline float bce_elem(float l, float t, float *g)
{
    return bce_elem_e(l, t, fast_exp(-fabsf(l)), g);
}

/* Partial sums in LANES explicit accumulators: the summation order is fixed by
 * the source, so every vector width gives the same bits, and GCC vectorises it. */
#define LANES 16

/* Elements whose exponentials bce_sum computes in a pass of their own before
 * the rest of their loss: one element's whole loss is a long chain of
 * dependent operations, which in a single loop leaves the core waiting on
 * latency; two shorter loops keep more elements in flight.  The arithmetic
 * of each element, and the order of the sums, are the same. */
#define BCE_BLOCK (16 * LANES)

LD_VECTOR_CLONES
static double bce_sum(size_t n, const float *logits, const float *target, float t_const,
                      float *dlogits, float scale)
{
    float acc[LANES] = {0}, tmp[LANES], e[BCE_BLOCK];
    size_t i = 0;
    while (n - i >= LANES) {
        size_t m = n - i < BCE_BLOCK ? (n - i) / LANES * LANES : BCE_BLOCK;
        for (size_t k = 0; k < m; k += LANES) /* in LANES, as below, so that it vectorises */
            for (int j = 0; j < LANES; j++)
                e[k + j] = fast_exp(-fabsf(logits[i + k + j]));
        for (size_t k = 0; k < m; k += LANES) {
            float *g = dlogits ? dlogits + i + k : tmp;
            for (int j = 0; j < LANES; j++) {
                float gj;
                acc[j] += bce_elem_e(logits[i + k + j], target ? target[i + k + j] : t_const,
                                     e[k + j], &gj);
                g[j] = scale * gj;
            }
        }
        i += m;
    }
    for (; i < n; i++) {
        float gi;
        acc[0] += bce_elem(logits[i], target ? target[i] : t_const, &gi);
        if (dlogits)
            dlogits[i] = scale * gi;
    }
    double sum = 0;
    for (int j = 0; j < LANES; j++)
        sum += acc[j];
    return sum;
}

double ld_bce_logits(size_t n, const float *logits, const float *target, float *dlogits,
                     float scale)
{
    /* Float partial sums lose ~1e-7 relative per 1e4 terms; chunk them in double. */
    double sum = 0;
    for (size_t i = 0; i < n; i += 4096) {
        size_t m = n - i < 4096 ? n - i : 4096;
        sum += bce_sum(m, logits + i, target + i, 0, dlogits ? dlogits + i : NULL, scale);
    }
    return sum;
}

double ld_bce_logits_const(size_t n, const float *logits, float target, float *dlogits,
                           float scale)
{
    return bce_sum(n, logits, NULL, target, dlogits, scale);
}

double ld_kl_gaussian(size_t n, const float *mu, const float *logvar, float *dmu, float *dlogvar,
                      float scale)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        float ev = expf(logvar[i]);
        sum += (double)(1.0f + logvar[i] - mu[i] * mu[i] - ev);
        if (dmu)
            dmu[i] = scale * mu[i];
        if (dlogvar)
            dlogvar[i] = scale * 0.5f * (ev - 1.0f);
    }
    return -0.5 * sum;
}

double ld_softmax_xent(int B, int C, const float *logits, const uint8_t *labels, float *dlogits,
                       float scale)
{
    double sum = 0;
    for (int i = 0; i < B; i++) {
        const float *l = logits + (size_t)i * C;
        float mx = l[0];
        for (int c = 1; c < C; c++)
            mx = l[c] > mx ? l[c] : mx;
        double z = 0;
        for (int c = 0; c < C; c++)
            z += exp((double)(l[c] - mx));
        double lse = (double)mx + log(z);
        sum += lse - (double)l[labels[i]];
        if (dlogits) {
            float *d = dlogits + (size_t)i * C;
            for (int c = 0; c < C; c++)
                d[c] = scale * (float)exp((double)l[c] - lse);
            d[labels[i]] -= scale;
        }
    }
    return sum;
}

/* ---- Adam ---- */

/* Elements of Adam between two yield points: about 60 us. */
#define ADAM_SLICE 65536u

/* Adam's constants at step t: same arithmetic as torch.optim.Adam
 * (single-tensor path): denom = sqrt(v) / sqrt(1 - b2^t) + eps;
 * p -= lr / (1 - b1^t) * m / denom. */
typedef struct {
    float b1, b2, bc2_sqrt, step, eps;
} adam_k_t;

static adam_k_t adam_k(const ld_adam_cfg_t *cfg, long t)
{
    const double bc1 = 1.0 - pow((double)cfg->beta1, (double)t);
    return (adam_k_t){cfg->beta1, cfg->beta2, (float)sqrt(1.0 - pow((double)cfg->beta2, (double)t)),
                      (float)(cfg->lr / bc1), cfg->eps};
}

static inline void adam_elem(adam_k_t k, float g, float *p, float *m, float *v)
{
    *m = k.b1 * *m + (1.0f - k.b1) * g;
    *v = k.b2 * *v + (1.0f - k.b2) * g * g;
    float denom = sqrtf(*v) / k.bc2_sqrt + k.eps;
    *p -= k.step * (*m / denom);
}

LD_VECTOR_CLONES
void ld_adam_step(const ld_adam_cfg_t *cfg, long t, size_t n, float *param, const float *grad,
                  float *m, float *v)
{
    const adam_k_t k = adam_k(cfg, t);
    for (size_t s = 0; s < n; s += ADAM_SLICE) {
        ld_yield_point();
        size_t e = n - s > ADAM_SLICE ? s + ADAM_SLICE : n;
        for (size_t i = s; i < e; i++)
            adam_elem(k, grad[i], &param[i], &m[i], &v[i]);
    }
}

LD_VECTOR_CLONES
void ld_adam_step_sum(const ld_adam_cfg_t *cfg, long t, size_t n, float *restrict param,
                      float *restrict g0, float w0, float *restrict g1, float w1,
                      float *restrict m, float *restrict v)
{
    const adam_k_t k = adam_k(cfg, t);
    ld_yield_point();
    if (!g1) {
        for (size_t i = 0; i < n; i++) {
            adam_elem(k, g0[i], &param[i], &m[i], &v[i]);
            g0[i] = 0.0f;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        adam_elem(k, w0 * g0[i] + w1 * g1[i], &param[i], &m[i], &v[i]);
        g0[i] = 0.0f;
        g1[i] = 0.0f;
    }
}

/* ---- init ---- */

void ld_linear_init(ld_rng_t *r, int in, int out, float *w, float *b)
{
    float bound = 1.0f / sqrtf((float)in);
    ld_rng_fill_uniform(r, w, (size_t)out * in, -bound, bound);
    ld_rng_fill_uniform(r, b, (size_t)out, -bound, bound);
}

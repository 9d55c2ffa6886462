/* nn.h — the numerical core: dense layers, activations, losses, Adam, init.
 *
 * Conventions (PyTorch's): float32, row-major, batch-major.  A dense layer's
 * weight w is (out, in) like nn.Linear, bias b is (out); y = x w^T + b.
 * Every forward has its backward beside it with the same argument order.
 * Backward functions ACCUMULATE parameter gradients (+=) and OVERWRITE input
 * gradients (=), so the caller zeroes the gradient block once per step.
 *
 * Thread-safety: all functions are reentrant; they touch only their arguments.
 * GEMMs go through cblas_sgemm (OpenBLAS); the thread count OpenBLAS may use is
 * set once by the program (see ld_blas_threads).
 */
#ifndef LATENTD_NN_H
#define LATENTD_NN_H

#include "latentd/rng.h"
#include <stdatomic.h>
#include <stddef.h>

/* ---- BLAS ---- */
/* Tell OpenBLAS how many threads it may use (call once at start). */
void ld_blas_threads(int n);
/* OpenBLAS 0.3.21 does not know CPUs newer than its release and falls back to
 * its SSE3 "Prescott" kernels, much slower on AVX2/AVX-512 CPUs (figures:
 * docs/benchmarks.md).  When that happened, the CPU
 * has AVX-512 (or AVX2+FMA) and the user did not set OPENBLAS_CORETYPE, set it
 * to SkylakeX (or Haswell) and re-exec /proc/self/exe with argv: the variable
 * is read only when the library loads.  Returns only if no re-exec happened.
 * Call first thing in main. */
void ld_blas_fix_coretype(char **argv);
/* OpenBLAS's name for the kernels in use, e.g. "SkylakeX". */
const char *ld_blas_core(void);

/* ---- giving way to serving ----
 * A training job's threads run under SCHED_IDLE (jobs.h) so that serving
 * threads take their CPU when they wake.  Linux does not always preempt
 * them: a serving thread that the load balancer moves onto a CPU running a
 * SCHED_IDLE thread can wait there until the next scheduler tick (its
 * length depends on the kernel's HZ; docs/jobs.md).  So the long loops of training (each GEMM of a
 * dense layer, Adam in slices) pass through this point, which calls
 * sched_yield() on a background thread (SCHED_IDLE, or a positive nice
 * value: the jobs engine's fallback) and returns at once on any other, such
 * as the `latentd train` command line or a serving thread.  The thread's
 * policy is read on its first call and kept: set it before training starts.
 * Cost on a background thread: one system call per pass through a long
 * loop, not per element. */
void ld_yield_point(void);
/* Whether the calling thread is a background one, as ld_yield_point reads it
 * (and keeps): a thread that must not busy-wait either. */
int ld_yield_background(void);

/* ---- abandoning a step ----
 * A cancelled job must stop within a second however long its steps are.
 * While the flag set here (for the calling thread only; NULL = none) is
 * nonzero, the dense layers of this thread return at once without computing
 * (a large layer checks between slices of its batch): the forward and
 * backward passes then end quickly with meaningless numbers, and the trainer,
 * which checks the flag before each optimiser update, discards them.  Adam
 * itself always runs to its end, so parameters are never half updated. */
void ld_step_abandon_flag(const atomic_int *flag);
/* Whether this thread's flag is set. */
int ld_step_abandoned(void);

/* ---- activations ---- */
typedef enum {
    LD_ACT_NONE = 0,
    LD_ACT_LRELU,   /* x > 0 ? x : slope * x */
    LD_ACT_RELU,
    LD_ACT_TANH,
    LD_ACT_SIGMOID,
} ld_act_t;

const char *ld_act_name(ld_act_t a); /* "none","leaky_relu","relu","tanh","sigmoid" */
/* 0 on success; accepts the names above (and "lrelu"). */
int ld_act_parse(const char *s, ld_act_t *out);

/* y[i] = f(x[i]); y may alias x. */
void ld_act_forward(ld_act_t a, float slope, size_t n, const float *x, float *y);
/* dx[i] = dy[i] * f'(x[i]), computed from the OUTPUT y = f(x) alone (every
 * activation here is monotone with slope >= 0, so y's sign gives x's).
 * dx may alias dy. */
void ld_act_backward(ld_act_t a, float slope, size_t n, const float *y, const float *dy,
                     float *dx);

/* ---- dense ---- */
/* x (B, in), w (out, in), b (out) -> y (B, out) */
void ld_dense_forward(int B, int in, int out, const float *x, const float *w, const float *b,
                      float *y);
/* dy (B, out) -> gw (out, in) += dy^T x, gb (out) += colsum(dy), dx (B, in) = dy w.
 * dx may be NULL; gw and gb may both be NULL (only dx wanted, e.g. inversion). */
void ld_dense_backward(int B, int in, int out, const float *x, const float *w, const float *dy,
                       float *gw, float *gb, float *dx);

/* ---- dropout (inverted) ---- */
/* mask[i] = 0 with probability p, else 1/(1-p); then x[i] *= mask[i]. */
void ld_dropout_mask(ld_rng_t *r, float p, size_t n, float *mask);
void ld_mul_inplace(size_t n, float *x, const float *mask);

/* ---- losses: each returns the SUM over elements; gradients are of (scale * sum) ---- */
/* Binary cross-entropy on logits, stable: max(l,0) - l t + log(1 + e^-|l|).
 * dlogits (n) = scale * (sigmoid(l) - t), may be NULL. */
double ld_bce_logits(size_t n, const float *logits, const float *target, float *dlogits,
                     float scale);
/* Same with a scalar target for every element (GAN labels). */
double ld_bce_logits_const(size_t n, const float *logits, float target, float *dlogits,
                           float scale);
/* KL(N(mu, e^logvar) || N(0,1)) = -1/2 sum(1 + logvar - mu^2 - e^logvar); mu, logvar (n).
 * dmu = scale * mu, dlogvar = scale * 1/2 (e^logvar - 1); either may be NULL. */
double ld_kl_gaussian(size_t n, const float *mu, const float *logvar, float *dmu, float *dlogvar,
                      float scale);
/* Softmax cross-entropy: logits (B, C), labels (B). dlogits = scale*(softmax - onehot). */
double ld_softmax_xent(int B, int C, const float *logits, const uint8_t *labels, float *dlogits,
                       float scale);

/* ---- Adam (PyTorch semantics, bias-corrected, eps outside the sqrt) ---- */
typedef struct {
    float lr, beta1, beta2, eps;
} ld_adam_cfg_t;

/* One step over n parameters at step number t (1-based). m, v (n) are the moments. */
void ld_adam_step(const ld_adam_cfg_t *cfg, long t, size_t n, float *param, const float *grad,
                  float *m, float *v);
/* The same step on g = g0 (g1 NULL) or g = w0 * g0 + w1 * g1 (the sum of two
 * workers' gradients, rounded as written), then g0 and g1 set to zero: one
 * pass where a sum, ld_adam_step and two clears would take four, with equal
 * results.  One yield point per call, so callers pass cache-sized chunks;
 * no array may overlap another. */
void ld_adam_step_sum(const ld_adam_cfg_t *cfg, long t, size_t n, float *restrict param,
                      float *restrict g0, float w0, float *restrict g1, float w1,
                      float *restrict m, float *restrict v);

/* ---- init: PyTorch nn.Linear default (kaiming_uniform a=sqrt(5)) ----
 * w (out, in) and b (out) ~ U(-1/sqrt(in), 1/sqrt(in)); w drawn first, row-major. */
void ld_linear_init(ld_rng_t *r, int in, int out, float *w, float *b);

#endif

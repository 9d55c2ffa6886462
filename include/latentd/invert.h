/* invert.h — GAN inversion: find the latent z whose generated image G(z) is
 * closest to a given image, by latent optimisation.
 *
 * For each image x (a row of x_dim values in [0, 1]) and each of `restarts`
 * random starts z0 ~ N(0, I) drawn from `seed`, Adam (PyTorch semantics) runs
 * `steps` steps on z to minimise, per row,
 *     loss(z) = mean_i (G(z)_i - x_i)^2  +  z_penalty * |z|^2 / z_dim
 * with the gradient taken through the generator's backward: its layer list
 * (any architecture: dense, dcgan, resmlp) in eval mode, so batch norm uses
 * its running statistics and each row is independent of the others.  The
 * restart with the lowest final loss is kept.  The generator's weights and
 * buffers are only read.  Which kinds can be inverted: ld_kind_ops_t.invertible.
 *
 * Deterministic: the same model, images and options give the same bytes
 * (the starts come from ld_model_draw_z with seed; nothing else is random).
 *
 * Cost: steps * restarts * n forward+backward passes of one generator row;
 * all rows run as one batch.  The caller bounds it (see invert_api.c).
 *
 * Thread-safety: reentrant; a model may be inverted from many threads at
 * once (all scratch memory is per call).
 */
#ifndef LATENTD_INVERT_H
#define LATENTD_INVERT_H

#include "latentd/buf.h"
#include "latentd/model.h"

#define LD_INVERT_STEPS_DEFAULT 300
#define LD_INVERT_RESTARTS_DEFAULT 4
#define LD_INVERT_LR_DEFAULT 0.05
#define LD_INVERT_PENALTY_DEFAULT 0.0
#define LD_INVERT_MAX_ROWS 4096 /* n * restarts: the rows of one batch */

typedef struct {
    int steps;       /* Adam steps per start, >= 1 */
    int restarts;    /* random starts per image, >= 1; the best is kept */
    uint64_t seed;   /* the starts are drawn from it */
    float lr;        /* Adam's learning rate on z, > 0 */
    float z_penalty; /* weight of |z|^2 / z_dim in the loss, >= 0 */
} ld_invert_opts_t;

/* Defaults above, seed 0. */
void ld_invert_opts_default(ld_invert_opts_t *o);

/* Invert n images x (n, x_dim) through GAN m: z (n, z_dim), the
 * reconstructions xr (n, x_dim) = G(z) and the per-image mean squared error
 * mse (n), all caller-owned.  LD_EUNSUPPORTED when m's kind is not
 * invertible, LD_EINVAL
 * for bad options, LD_ENOMEM; the message goes to err. */
int ld_invert(const ld_model_t *m, int n, const float *x, const ld_invert_opts_t *o, float *z,
              float *xr, float *mse, ld_err_t *err);

/* The answer of an inversion as JSON, appended to b:
 *   {"model","seed","steps","restarts","lr","z_penalty","shape":[n,h,w],
 *    "z":[[z_dim]...],"mse":[n],"images":[[x_dim]...]}
 * (the route's answer and an inversion job's result). */
void ld_invert_json(ld_buf_t *b, const char *model, const ld_arch_t *a, const ld_invert_opts_t *o,
                    int n, const float *z, const float *mse, const float *xr);

/* The loss above for b rows z (b, z_dim) against x (b, x_dim): loss (b) per
 * row, and, when dz != NULL, dz (b, z_dim) = d loss_row / d z_row (through
 * the generator's backward).  For tests and tools; ld_invert uses the same
 * code.  0, LD_EUNSUPPORTED (not a GAN) or LD_ENOMEM. */
int ld_invert_loss(const ld_model_t *m, int b, const float *z, const float *x, float z_penalty,
                   double *loss, float *dz, ld_err_t *err);

#endif

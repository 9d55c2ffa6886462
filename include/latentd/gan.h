/* gan.h — the GAN's two training half-steps on one batch.
 *
 * The order matches the usual PyTorch loop exactly:
 *   fake = G(z)
 *   D step: loss_D = mean BCE(D(real), real_label) + mean BCE(D(fake), 0)
 *   G step: non-saturating loss_G = mean BCE(D(fake), 1)
 *           minimax        loss_G = -mean BCE(D(fake), 0) = mean log(1 - D(fake))
 * with D run again (after its update) for the G step, and G's activations from
 * the single forward reused.  The workspace belongs to one thread.
 */
#ifndef LATENTD_GAN_H
#define LATENTD_GAN_H

#include "latentd/model.h"

typedef enum { LD_GAN_LOSS_NS = 0, LD_GAN_LOSS_MINIMAX = 1 } ld_gan_loss_t;

const char *ld_gan_loss_name(ld_gan_loss_t l); /* "ns", "minimax" */
int ld_gan_loss_parse(const char *s, ld_gan_loss_t *out);

typedef struct {
    int B;
    ld_pass_ws_t g, d;
    const ld_net_run_t *run; /* layer lists: set by the trainer; NULL = eval mode */
    const float *fake;       /* (b, X) G's output of the last D step, in g */
    float *mem;
    float *dlogit;  /* (B, 1) */
    float *dfake;   /* (B, X) */
} ld_gan_ws_t;

int ld_gan_ws_init(ld_gan_ws_t *ws, const ld_model_t *m, int B);
void ld_gan_ws_free(ld_gan_ws_t *ws);

/* G forward on z (b, Z), then D's loss on real (b, X) and on the fake; grads
 * (D's range) += d loss_D / d params_D.  Dropout masks come from rng (tests
 * preset them: src/gan_impl.h).  Returns loss_D; mean D(real) and D(fake)
 * probabilities go to *p_real, *p_fake when not NULL. */
double ld_gan_step_d(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                     const float *real, const float *z, float real_label, ld_rng_t *rng,
                     double *p_real, double *p_fake);

/* After ld_gan_step_d (and D's update): D forward on the same fake, grads
 * (G's range) += d loss_G / d params_G; D's range is left as it was (D is
 * fixed here, so its weight gradients are not computed).  Returns loss_G. */
double ld_gan_step_g(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                     ld_gan_loss_t loss, ld_rng_t *rng);

#endif

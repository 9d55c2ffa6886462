/* gan.h — the GAN's two training half-steps on one batch.
 *
 * The order matches the usual PyTorch loop exactly:
 *   fake = G(z)
 *   D step: loss_D = mean BCE(D(real), real_label) + mean BCE(D(fake), 0)
 *   G step: non-saturating loss_G = mean BCE(D(fake), 1)
 *           minimax        loss_G = -mean BCE(D(fake), 0) = mean log(1 - D(fake))
 * with D run again (after its update) for the G step, and G's activations from
 * the single forward reused.  The workspace belongs to one thread.
 *
 * Other losses (ws->loss), on D's raw output d (no sigmoid), a = real_label:
 *   hinge    loss_D = mean relu(1 - d_real) + mean relu(1 + d_fake); loss_G = -mean d_fake
 *   lsgan    loss_D = mean (d_real - a)^2 / 2 + mean d_fake^2 / 2; loss_G = mean (d_fake - 1)^2 / 2
 *   wgan-gp  loss_D = mean d_fake - mean d_real + gp penalty (gp.h) on x̂ = eps real +
 *            (1 - eps) fake, eps (b) from ws->eps; loss_G = -mean d_fake
 */
#ifndef LATENTD_GAN_H
#define LATENTD_GAN_H

#include "latentd/model.h"

typedef enum {
    LD_GAN_LOSS_NS = 0,
    LD_GAN_LOSS_MINIMAX = 1,
    LD_GAN_LOSS_WGAN_GP,
    LD_GAN_LOSS_HINGE,
    LD_GAN_LOSS_LSGAN,
    LD_GAN_LOSS_N
} ld_gan_loss_t;

/* "ns", "minimax", "wgan-gp", "hinge", "lsgan" */
const char *ld_gan_loss_name(ld_gan_loss_t l);
int ld_gan_loss_parse(const char *s, ld_gan_loss_t *out); /* 0, or -1 if unknown */
/* For messages: "ns, minimax, wgan-gp, hinge or lsgan". */
#define LD_GAN_LOSS_LIST "ns, minimax, wgan-gp, hinge or lsgan"

typedef struct {
    int B;
    ld_pass_ws_t g, d;
    const ld_net_run_t *run; /* layer lists: set by the trainer; NULL = eval mode */
    const float *fake;       /* (b, X) G's output of the last D step, in g */
    float *mem;
    float *dlogit;  /* (B, 1) */
    float *dfake;   /* (B, X) */
    /* set by the caller before a D step, like run (ld_gan_ws_init: ns, none) */
    ld_gan_loss_t loss;      /* the D step's loss (the G step takes its own) */
    float gp;                /* wgan-gp: penalty weight */
    const float *eps;        /* wgan-gp: (b) interpolation weights of this slice */
    struct ld_gp_ws *gpw;    /* wgan-gp: the penalty's scratch (ld_gan_ws_init_gp) */
    double loss_g;           /* out: loss_G on the D step's fakes, before D's update (what a
                                trainer reports on steps without a G step) */
    const float *row_w;      /* (b) per-row factors of D's loss, or NULL (all 1): row i's
                                real term and its fake's term (a cgan's fake i has real
                                i's label) times row_w[i]; set by the trainer for
                                --balance weight (balance.h).  The wgan-gp penalty and
                                the G step are not weighted. */
} ld_gan_ws_t;

int ld_gan_ws_init(ld_gan_ws_t *ws, const ld_model_t *m, int B);
void ld_gan_ws_free(ld_gan_ws_t *ws);
/* The penalty's scratch for wgan-gp (freed by ld_gan_ws_free): 0 or LD_ENOMEM. */
int ld_gan_ws_init_gp(ld_gan_ws_t *ws, const ld_model_t *m);
/* 0 if m's discriminator can be trained with loss (wgan-gp: ld_gp_check),
 * else LD_EINVAL with a message naming the layer in the way. */
int ld_gan_check_loss(const ld_model_t *m, ld_gan_loss_t loss, ld_err_t *err);

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

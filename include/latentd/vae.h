/* vae.h — the VAE's training step (forward + backward on one batch).
 *
 *   h = encoder(x); mu = mu(h); logvar = logvar(h)
 *   z = mu + exp(logvar / 2) * eps            eps ~ N(0, 1), supplied by the caller
 *   logits = decoder(z)
 *   loss = (BCE(logits, x) summed over pixels + beta * KL) / b
 *   KL = -1/2 sum(1 + logvar - mu^2 - exp(logvar))
 *
 * The workspace belongs to one thread.  Inference lives in model.h.
 */
#ifndef LATENTD_VAE_H
#define LATENTD_VAE_H

#include "latentd/model.h"

typedef struct {
    int B;
    ld_pass_ws_t enc, mu, lv, dec;
    const ld_net_run_t *run; /* layer lists: set by the trainer (training mode, the
                                workers' allreduce); NULL = eval mode */
    float *mem;
    float *z;           /* (B, Z) */
    float *dz;          /* (B, Z) */
    float *dmu, *dlv;   /* (B, Z) */
    float *dh, *dh2;    /* (B, H) H = the encoder's output width */
    float *dlogits;     /* (B, X) */
    const float *row_w; /* (b) per-row loss factors for the next step, or NULL (all 1):
                           set by the trainer for --balance weight (balance.h) */
} ld_vae_ws_t;

int ld_vae_ws_init(ld_vae_ws_t *ws, const ld_model_t *m, int B);
void ld_vae_ws_free(ld_vae_ws_t *ws);

/* x (b, X) in [0,1], eps (b, Z). rec and kl get the batch SUMS (with
 * ws->row_w: each row's terms times its factor).  When grads is
 * not NULL, grads (n_params) += d loss / d params (loss as above, mean over b).
 * b may be 0 (a worker without rows still takes part in batch norm). */
void ld_vae_step(const ld_model_t *m, float *grads, ld_vae_ws_t *ws, int b, const float *x,
                 const float *eps, float beta, double *rec, double *kl);

#endif

/* vae.c — VAE forward and backward on one batch. See vae.h. */
#include "latentd/vae.h"

#include <math.h>
#include <string.h>

int ld_vae_ws_init(ld_vae_ws_t *ws, const ld_model_t *m, int B)
{
    memset(ws, 0, sizeof *ws);
    const ld_arch_t *a = &m->arch;
    int Z = a->z_dim, H = a->enc.size[a->enc.n - 1], X = a->x_dim;
    ws->B = B;
    size_t bz = (size_t)B * Z, bh = (size_t)B * H;
    ws->mem = ld_malloc_array(4 * bz + 2 * bh + (size_t)B * X, sizeof(float));
    if (!ws->mem || ld_mlp_ws_init(&ws->enc, &m->nets[LD_VAE_ENC], B, 1) ||
        ld_mlp_ws_init(&ws->mu, &m->nets[LD_VAE_MU], B, 1) ||
        ld_mlp_ws_init(&ws->lv, &m->nets[LD_VAE_LOGVAR], B, 1) ||
        ld_mlp_ws_init(&ws->dec, &m->nets[LD_VAE_DEC], B, 1)) {
        ld_vae_ws_free(ws);
        return LD_ENOMEM;
    }
    float *p = ws->mem;
    ws->z = p, p += bz;
    ws->dz = p, p += bz;
    ws->dmu = p, p += bz;
    ws->dlv = p, p += bz;
    ws->dh = p, p += bh;
    ws->dh2 = p, p += bh;
    ws->dlogits = p;
    return LD_OK;
}

void ld_vae_ws_free(ld_vae_ws_t *ws)
{
    ld_mlp_ws_free(&ws->enc);
    ld_mlp_ws_free(&ws->mu);
    ld_mlp_ws_free(&ws->lv);
    ld_mlp_ws_free(&ws->dec);
    free(ws->mem);
    ws->mem = NULL;
}

void ld_vae_step(const ld_model_t *m, float *grads, ld_vae_ws_t *ws, int b, const float *x,
                 const float *eps, float beta, double *rec, double *kl)
{
    const ld_mlp_t *enc = &m->nets[LD_VAE_ENC], *mun = &m->nets[LD_VAE_MU],
                   *lvn = &m->nets[LD_VAE_LOGVAR], *dec = &m->nets[LD_VAE_DEC];
    const float *P = m->params;
    const int Z = m->arch.z_dim, X = m->arch.x_dim;
    const size_t bz = (size_t)b * Z;
    const float scale = 1.0f / (float)b;

    /* forward */
    const float *h = ld_mlp_forward(enc, P, &ws->enc, b, x, NULL);   /* (b, H) */
    const float *mu = ld_mlp_forward(mun, P, &ws->mu, b, h, NULL);   /* (b, Z) */
    const float *lv = ld_mlp_forward(lvn, P, &ws->lv, b, h, NULL);   /* (b, Z) */
    for (size_t i = 0; i < bz; i++)
        ws->z[i] = mu[i] + expf(0.5f * lv[i]) * eps[i];
    const float *logits = ld_mlp_forward(dec, P, &ws->dec, b, ws->z, NULL); /* (b, X) */

    *rec = ld_bce_logits((size_t)b * X, logits, x, grads ? ws->dlogits : NULL, scale);
    *kl = ld_kl_gaussian(bz, mu, lv, grads ? ws->dmu : NULL, grads ? ws->dlv : NULL,
                         beta * scale);
    if (!grads)
        return;

    /* backward: decoder -> z -> (mu, logvar) -> encoder */
    ld_mlp_backward(dec, P, grads, &ws->dec, b, ws->dlogits, ws->dz);
    for (size_t i = 0; i < bz; i++) {
        float sd = expf(0.5f * lv[i]);
        ws->dmu[i] += ws->dz[i];                       /* dz/dmu = 1 */
        ws->dlv[i] += ws->dz[i] * eps[i] * 0.5f * sd;  /* dz/dlogvar = eps * sd / 2 */
    }
    ld_mlp_backward(mun, P, grads, &ws->mu, b, ws->dmu, ws->dh);
    ld_mlp_backward(lvn, P, grads, &ws->lv, b, ws->dlv, ws->dh2);
    size_t bh = (size_t)b * enc->size[enc->n_layers];
    for (size_t i = 0; i < bh; i++)
        ws->dh[i] += ws->dh2[i];
    ld_mlp_backward(enc, P, grads, &ws->enc, b, ws->dh, NULL);
}

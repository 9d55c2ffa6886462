/* vae.c — VAE forward and backward on one batch. See vae.h. */
#include "latentd/vae.h"

#include <math.h>
#include <string.h>

int ld_vae_ws_init(ld_vae_ws_t *ws, const ld_model_t *m, int B)
{
    memset(ws, 0, sizeof *ws);
    const ld_arch_t *a = &m->arch;
    int Z = a->z_dim, H = ld_net_width(m, LD_VAE_ENC), X = a->x_dim;
    ws->B = B;
    size_t bz = (size_t)B * Z, bh = (size_t)B * H;
    ws->mem = ld_malloc_array(4 * bz + 2 * bh + (size_t)B * X, sizeof(float));
    if (!ws->mem || ld_pass_ws_init(&ws->enc, m, LD_VAE_ENC, B) ||
        ld_pass_ws_init(&ws->mu, m, LD_VAE_MU, B) ||
        ld_pass_ws_init(&ws->lv, m, LD_VAE_LOGVAR, B) ||
        ld_pass_ws_init(&ws->dec, m, LD_VAE_DEC, B)) {
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
    ld_pass_ws_free(&ws->enc);
    ld_pass_ws_free(&ws->mu);
    ld_pass_ws_free(&ws->lv);
    ld_pass_ws_free(&ws->dec);
    free(ws->mem);
    ws->mem = NULL;
}

/* The losses row by row, each row's terms and gradients times ws->row_w[i]. */
static void weighted_losses(ld_vae_ws_t *ws, int b, int X, int Z, const float *logits,
                            const float *x, const float *mu, const float *lv, float kl_scale,
                            float scale, int grads, double *rec, double *kl)
{
    *rec = *kl = 0;
    for (int i = 0; i < b; i++) {
        const float w = ws->row_w[i];
        const size_t ox = (size_t)i * X, oz = (size_t)i * Z;
        *rec += w * ld_bce_logits((size_t)X, logits + ox, x + ox, grads ? ws->dlogits + ox : NULL,
                                  w * scale);
        *kl += w * ld_kl_gaussian((size_t)Z, mu + oz, lv + oz, grads ? ws->dmu + oz : NULL,
                                  grads ? ws->dlv + oz : NULL, w * kl_scale);
    }
}

void ld_vae_step(const ld_model_t *m, float *grads, ld_vae_ws_t *ws, int b, const float *x,
                 const float *eps, float beta, double *rec, double *kl)
{
    const ld_net_run_t *run = ws->run;
    const int Z = m->arch.z_dim, X = m->arch.x_dim;
    const size_t bz = (size_t)b * Z;
    const float scale = b > 0 ? 1.0f / (float)b : 0.0f;

    /* forward */
    const float *h = ld_pass_forward(m, LD_VAE_ENC, &ws->enc, b, x, NULL, NULL, run); /* (b, H) */
    const float *mu = ld_pass_forward(m, LD_VAE_MU, &ws->mu, b, h, NULL, NULL, run);  /* (b, Z) */
    const float *lv = ld_pass_forward(m, LD_VAE_LOGVAR, &ws->lv, b, h, NULL, NULL, run);
    for (size_t i = 0; i < bz; i++)
        ws->z[i] = mu[i] + expf(0.5f * lv[i]) * eps[i];
    const float *logits = ld_pass_forward(m, LD_VAE_DEC, &ws->dec, b, ws->z, NULL, NULL, run);

    if (ws->row_w) {
        weighted_losses(ws, b, X, Z, logits, x, mu, lv, beta * scale, scale, grads != NULL,
                        rec, kl);
    } else {
        *rec = ld_bce_logits((size_t)b * X, logits, x, grads ? ws->dlogits : NULL, scale);
        *kl = ld_kl_gaussian(bz, mu, lv, grads ? ws->dmu : NULL, grads ? ws->dlv : NULL,
                             beta * scale);
    }
    if (!grads)
        return;

    /* backward: decoder -> z -> (mu, logvar) -> encoder */
    ld_pass_backward(m, LD_VAE_DEC, grads, &ws->dec, b, ws->dlogits, ws->dz, run);
    for (size_t i = 0; i < bz; i++) {
        float sd = expf(0.5f * lv[i]);
        ws->dmu[i] += ws->dz[i];                       /* dz/dmu = 1 */
        ws->dlv[i] += ws->dz[i] * eps[i] * 0.5f * sd;  /* dz/dlogvar = eps * sd / 2 */
    }
    ld_pass_backward(m, LD_VAE_MU, grads, &ws->mu, b, ws->dmu, ws->dh, run);
    ld_pass_backward(m, LD_VAE_LOGVAR, grads, &ws->lv, b, ws->dlv, ws->dh2, run);
    size_t bh = (size_t)b * ld_net_width(m, LD_VAE_ENC);
    for (size_t i = 0; i < bh; i++)
        ws->dh[i] += ws->dh2[i];
    ld_pass_backward(m, LD_VAE_ENC, grads, &ws->enc, b, ws->dh, NULL, run);
}

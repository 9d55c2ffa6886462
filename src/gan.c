/* gan.c — GAN discriminator and generator half-steps. See gan.h. */
#include "latentd/gan.h"
#include "gan_impl.h"
#include "mlp_impl.h"

#include <math.h>
#include <string.h>

static const char *const loss_names[] = {"ns", "minimax"};

const char *ld_gan_loss_name(ld_gan_loss_t l) { return loss_names[l == LD_GAN_LOSS_MINIMAX]; }

int ld_gan_loss_parse(const char *s, ld_gan_loss_t *out)
{
    for (int i = 0; s && i < 2; i++)
        if (!strcmp(s, loss_names[i])) {
            *out = (ld_gan_loss_t)i;
            return 0;
        }
    return -1;
}

int ld_gan_ws_init(ld_gan_ws_t *ws, const ld_model_t *m, int B)
{
    memset(ws, 0, sizeof *ws);
    ws->B = B;
    ws->mem = ld_malloc_array((size_t)B * (1 + m->arch.x_dim), sizeof(float));
    if (!ws->mem || ld_mlp_ws_init(&ws->g, &m->nets[LD_GAN_G], B, 1) ||
        ld_mlp_ws_init(&ws->d, &m->nets[LD_GAN_D], B, 1)) {
        ld_gan_ws_free(ws);
        return LD_ENOMEM;
    }
    ws->dlogit = ws->mem;
    ws->dfake = ws->mem + B;
    return LD_OK;
}

void ld_gan_ws_free(ld_gan_ws_t *ws)
{
    ld_mlp_ws_free(&ws->g);
    ld_mlp_ws_free(&ws->d);
    free(ws->mem);
    ws->mem = NULL;
}

static double mean_sigmoid(int b, const float *logit)
{
    double s = 0;
    for (int i = 0; i < b; i++)
        s += 1.0 / (1.0 + exp(-(double)logit[i]));
    return s / b;
}

/* The generator's last output (b, X), kept in its workspace. */
static const float *fake_of(const ld_model_t *m, const ld_gan_ws_t *ws)
{
    return ws->g.y[m->nets[LD_GAN_G].n_layers - 1];
}

double ld_gan_step_d(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                     const float *real, const float *z, float real_label, ld_rng_t *rng,
                     double *p_real, double *p_fake)
{
    return ld_gan_step_d_masks(m, grads, ws, b, real, z, real_label, rng, NULL, NULL, p_real,
                               p_fake);
}

double ld_gan_step_d_masks(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                           const float *real, const float *z, float real_label, ld_rng_t *rng,
                           const float *masks_real, const float *masks_fake, double *p_real,
                           double *p_fake)
{
    const ld_mlp_t *G = &m->nets[LD_GAN_G], *D = &m->nets[LD_GAN_D];
    const float *P = m->params;
    const float scale = 1.0f / (float)b;
    const float *fake = ld_mlp_forward(G, P, &ws->g, b, z, NULL); /* (b, X) */

    const float *lr = ld_mlp_forward_preset(D, P, &ws->d, b, real, rng, masks_real); /* (b, 1) */
    double loss = ld_bce_logits_const((size_t)b, lr, real_label, ws->dlogit, scale);
    if (p_real)
        *p_real = mean_sigmoid(b, lr);
    ld_mlp_backward(D, P, grads, &ws->d, b, ws->dlogit, NULL);

    const float *lf = ld_mlp_forward_preset(D, P, &ws->d, b, fake, rng, masks_fake); /* (b, 1) */
    loss += ld_bce_logits_const((size_t)b, lf, 0.0f, ws->dlogit, scale);
    if (p_fake)
        *p_fake = mean_sigmoid(b, lf);
    ld_mlp_backward(D, P, grads, &ws->d, b, ws->dlogit, NULL);
    return loss / b;
}

double ld_gan_step_g(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                     ld_gan_loss_t loss, ld_rng_t *rng)
{
    return ld_gan_step_g_masks(m, grads, ws, b, loss, rng, NULL);
}

double ld_gan_step_g_masks(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                           ld_gan_loss_t loss, ld_rng_t *rng, const float *masks)
{
    const ld_mlp_t *G = &m->nets[LD_GAN_G], *D = &m->nets[LD_GAN_D];
    const float *P = m->params;
    const float scale = 1.0f / (float)b;
    const float *lf = ld_mlp_forward_preset(D, P, &ws->d, b, fake_of(m, ws), rng, masks); /* (b, 1) */
    double l;
    if (loss == LD_GAN_LOSS_NS)
        l = ld_bce_logits_const((size_t)b, lf, 1.0f, ws->dlogit, scale);
    else /* minimise -BCE(D(fake), 0): the gradient flips sign */
        l = -ld_bce_logits_const((size_t)b, lf, 0.0f, ws->dlogit, -scale);
    ld_mlp_backward(D, P, grads, &ws->d, b, ws->dlogit, ws->dfake);
    ld_mlp_backward(G, P, grads, &ws->g, b, ws->dfake, NULL);
    return l / b;
}

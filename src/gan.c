/* gan.c — GAN discriminator and generator half-steps. See gan.h. */
#include "latentd/gan.h"
#include "gan_impl.h"

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
    if (!ws->mem || ld_pass_ws_init(&ws->g, m, LD_GAN_G, B) ||
        ld_pass_ws_init(&ws->d, m, LD_GAN_D, B)) {
        ld_gan_ws_free(ws);
        return LD_ENOMEM;
    }
    ws->dlogit = ws->mem;
    ws->dfake = ws->mem + B;
    return LD_OK;
}

void ld_gan_ws_free(ld_gan_ws_t *ws)
{
    ld_pass_ws_free(&ws->g);
    ld_pass_ws_free(&ws->d);
    free(ws->mem);
    ws->mem = NULL;
}

static double mean_sigmoid(int b, const float *logit)
{
    double s = 0;
    for (int i = 0; i < b; i++)
        s += 1.0 / (1.0 + exp(-(double)logit[i]));
    return b > 0 ? s / b : 0.0;
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
    const ld_net_run_t *run = ws->run;
    const float scale = b > 0 ? 1.0f / (float)b : 0.0f;
    const float *fake = ld_pass_forward(m, LD_GAN_G, &ws->g, b, z, NULL, NULL, run); /* (b, X) */
    ws->fake = fake;

    const float *lr = ld_pass_forward(m, LD_GAN_D, &ws->d, b, real, rng, masks_real, run); /* (b, 1) */
    double loss = ld_bce_logits_const((size_t)b, lr, real_label, ws->dlogit, scale);
    if (p_real)
        *p_real = mean_sigmoid(b, lr);
    ld_pass_backward(m, LD_GAN_D, grads, &ws->d, b, ws->dlogit, NULL, run);

    const float *lf = ld_pass_forward(m, LD_GAN_D, &ws->d, b, fake, rng, masks_fake, run); /* (b, 1) */
    loss += ld_bce_logits_const((size_t)b, lf, 0.0f, ws->dlogit, scale);
    if (p_fake)
        *p_fake = mean_sigmoid(b, lf);
    ld_pass_backward(m, LD_GAN_D, grads, &ws->d, b, ws->dlogit, NULL, run);
    return b > 0 ? loss / b : 0.0;
}

double ld_gan_step_g(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                     ld_gan_loss_t loss, ld_rng_t *rng)
{
    return ld_gan_step_g_masks(m, grads, ws, b, loss, rng, NULL);
}

double ld_gan_step_g_masks(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                           ld_gan_loss_t loss, ld_rng_t *rng, const float *masks)
{
    const ld_net_run_t *run = ws->run;
    const float scale = b > 0 ? 1.0f / (float)b : 0.0f;
    const float *lf = ld_pass_forward(m, LD_GAN_D, &ws->d, b, ws->fake, rng, masks, run); /* (b, 1) */
    double l;
    if (loss == LD_GAN_LOSS_NS)
        l = ld_bce_logits_const((size_t)b, lf, 1.0f, ws->dlogit, scale);
    else /* minimise -BCE(D(fake), 0): the gradient flips sign */
        l = -ld_bce_logits_const((size_t)b, lf, 0.0f, ws->dlogit, -scale);
    /* D is fixed in this half-step: only dL/dfake, none of D's weight gradients */
    ld_pass_backward(m, LD_GAN_D, NULL, &ws->d, b, ws->dlogit, ws->dfake, run);
    ld_pass_backward(m, LD_GAN_G, grads, &ws->g, b, ws->dfake, NULL, run);
    return b > 0 ? l / b : 0.0;
}

/* gan.c — GAN discriminator and generator half-steps. See gan.h. */
#include "latentd/gan.h"
#include "latentd/gp.h"
#include "gan_impl.h"

#include <math.h>
#include <string.h>

static const char *const loss_names[LD_GAN_LOSS_N] = {"ns", "minimax", "wgan-gp", "hinge",
                                                       "lsgan"};

const char *ld_gan_loss_name(ld_gan_loss_t l)
{
    return loss_names[l >= 0 && l < LD_GAN_LOSS_N ? l : 0];
}

int ld_gan_loss_parse(const char *s, ld_gan_loss_t *out)
{
    for (int i = 0; s && i < LD_GAN_LOSS_N; i++)
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
    ws->loss = LD_GAN_LOSS_NS;
    return LD_OK;
}

void ld_gan_ws_free(ld_gan_ws_t *ws)
{
    ld_pass_ws_free(&ws->g);
    ld_pass_ws_free(&ws->d);
    ld_gp_ws_free(ws->gpw);
    free(ws->gpw);
    ws->gpw = NULL;
    free(ws->mem);
    ws->mem = NULL;
}

int ld_gan_ws_init_gp(ld_gan_ws_t *ws, const ld_model_t *m)
{
    ws->gpw = ld_calloc(1, sizeof *ws->gpw);
    if (!ws->gpw || ld_gp_ws_init(ws->gpw, &m->layers[LD_GAN_D], ws->B)) {
        free(ws->gpw);
        ws->gpw = NULL;
        return LD_ENOMEM;
    }
    return LD_OK;
}

int ld_gan_check_loss(const ld_model_t *m, ld_gan_loss_t loss, ld_err_t *err)
{
    if (loss != LD_GAN_LOSS_WGAN_GP)
        return LD_OK;
    return ld_gp_check(&m->layers[LD_GAN_D], err);
}

/* Who a loss term is for: D on real images, D on fakes, G through D on fakes. */
enum { TERM_REAL, TERM_FAKE, TERM_G };

/* Sum over the n outputs d of one term of loss, and dd = scale * its
 * derivative (gan.h has the formulas). */
static double term(ld_gan_loss_t loss, int who, size_t n, const float *d, float real_label,
                   float *dd, float scale)
{
    double s = 0;
    switch (loss) {
    case LD_GAN_LOSS_NS:
    case LD_GAN_LOSS_MINIMAX:
        if (who == TERM_REAL)
            return ld_bce_logits_const(n, d, real_label, dd, scale);
        if (who == TERM_FAKE || loss == LD_GAN_LOSS_NS)
            return ld_bce_logits_const(n, d, who == TERM_FAKE ? 0.0f : 1.0f, dd, scale);
        /* minimax: minimise -BCE(D(fake), 0), the gradient flips sign */
        return -ld_bce_logits_const(n, d, 0.0f, dd, -scale);
    case LD_GAN_LOSS_HINGE:
        for (size_t i = 0; i < n; i++) {
            float m = who == TERM_REAL ? 1.0f - d[i] : who == TERM_FAKE ? 1.0f + d[i] : -d[i];
            float sign = who == TERM_REAL || who == TERM_G ? -1.0f : 1.0f;
            if (who == TERM_G || m > 0) {
                s += m;
                dd[i] = scale * sign;
            } else {
                dd[i] = 0.0f;
            }
        }
        return s;
    case LD_GAN_LOSS_LSGAN:
        for (size_t i = 0; i < n; i++) {
            float e = d[i] - (who == TERM_REAL ? real_label : who == TERM_G ? 1.0f : 0.0f);
            s += 0.5 * (double)e * e;
            dd[i] = scale * e;
        }
        return s;
    case LD_GAN_LOSS_WGAN_GP:
    default:
        for (size_t i = 0; i < n; i++) {
            float sign = who == TERM_FAKE ? 1.0f : -1.0f;
            s += sign * d[i];
            dd[i] = scale * sign;
        }
        return s;
    }
}

/* term() with row i's derivative and loss times row_w[i] (NULL: all 1). */
static double term_w(ld_gan_loss_t loss, int who, size_t n, const float *d, float real_label,
                     float *dd, float scale, const float *row_w)
{
    if (!row_w)
        return term(loss, who, n, d, real_label, dd, scale);
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += row_w[i] * term(loss, who, 1, d + i, real_label, dd + i, scale * row_w[i]);
    return s;
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
    double loss = term_w(ws->loss, TERM_REAL, (size_t)b, lr, real_label, ws->dlogit, scale,
                         ws->row_w);
    if (p_real)
        *p_real = mean_sigmoid(b, lr);
    ld_pass_backward(m, LD_GAN_D, grads, &ws->d, b, ws->dlogit, NULL, run);

    const float *lf = ld_pass_forward(m, LD_GAN_D, &ws->d, b, fake, rng, masks_fake, run); /* (b, 1) */
    loss += term_w(ws->loss, TERM_FAKE, (size_t)b, lf, real_label, ws->dlogit, scale, ws->row_w);
    if (p_fake)
        *p_fake = mean_sigmoid(b, lf);
    ld_pass_backward(m, LD_GAN_D, grads, &ws->d, b, ws->dlogit, NULL, run);
    ws->loss_g = b > 0 ? term(ws->loss, TERM_G, (size_t)b, lf, 1.0f, ws->dlogit, 0.0f) / b : 0.0;
    loss = b > 0 ? loss / b : 0.0;
    if (ws->loss == LD_GAN_LOSS_WGAN_GP && b > 0) {
        LD_ASSERT(ws->gpw && ws->eps);
        loss += ld_gp_penalty(&m->layers[LD_GAN_D], m->params, grads, ws->gpw, b, real, fake,
                              ws->eps, ws->gp, run, NULL);
    }
    return loss;
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
    double l = term(loss, TERM_G, (size_t)b, lf, 1.0f, ws->dlogit, scale);
    /* D is fixed in this half-step: only dL/dfake, none of D's weight gradients */
    ld_pass_backward(m, LD_GAN_D, NULL, &ws->d, b, ws->dlogit, ws->dfake, run);
    ld_pass_backward(m, LD_GAN_G, grads, &ws->g, b, ws->dfake, NULL, run);
    return b > 0 ? l / b : 0.0;
}

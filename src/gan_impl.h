/* gan_impl.h — test hooks of gan.c, not part of the public API.
 * Included by gan.c and the parity tests only. */
#ifndef LATENTD_GAN_IMPL_H
#define LATENTD_GAN_IMPL_H

#include "latentd/gan.h"

/* ld_gan_step_d and ld_gan_step_g with D's dropout masks taken from
 * masks_real / masks_fake / masks when not NULL (layout as in
 * src/mlp_impl.h), so that a test can use the masks PyTorch drew. */
double ld_gan_step_d_masks(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                           const float *real, const float *z, float real_label, ld_rng_t *rng,
                           const float *masks_real, const float *masks_fake, double *p_real,
                           double *p_fake);
double ld_gan_step_g_masks(const ld_model_t *m, float *grads, ld_gan_ws_t *ws, int b,
                           ld_gan_loss_t loss, ld_rng_t *rng, const float *masks);

#endif

/* mlp_impl.h — test hooks of mlp.c, not part of the public API.
 * Included by mlp.c, gan.c and the parity tests only. */
#ifndef LATENTD_MLP_IMPL_H
#define LATENTD_MLP_IMPL_H

#include "latentd/mlp.h"

/* ld_mlp_forward with the dropout masks copied from preset when it is not
 * NULL (layout: per hidden layer i, (b, size[i+1]), concatenated), so that
 * a test can use the masks PyTorch drew.  Same contract otherwise. */
const float *ld_mlp_forward_preset(const ld_mlp_t *net, const float *params, ld_mlp_ws_t *ws,
                                   int b, const float *x, ld_rng_t *rng, const float *preset);

#endif

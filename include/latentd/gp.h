/* gp.h — the WGAN-GP gradient penalty (Gulrajani et al. 2017) and its exact
 * gradient with respect to the critic's parameters.
 *
 *   x̂_i = eps_i real_i + (1 - eps_i) fake_i,   g_i = ∇x D(x̂_i)
 *   P   = lambda / b * sum_i (|g_i| - 1)^2
 *
 * dP/dθ needs the gradient of an input gradient.  With v_i = dP/dg_i held
 * fixed, dP/dθ = ∇θ sum_i <v_i, g_i(θ)>, the θ-gradient of D's directional
 * derivative at x̂_i along v_i.  For a critic whose layers are Linear, ReLU,
 * leaky ReLU, Dropout (a fixed mask) and Flatten/Unflatten, D is piecewise
 * linear: the directional derivative is the net linearised at x̂ (biases
 * dropped, each activation replaced by its slope there) applied to v, and
 * its gradient is, for each Linear layer l,
 *   dW_l = sum_i delta_l,i (x) t_l-1,i,     db_l = 0,
 * where delta_l = dD/d(output of l) at x̂ (the ordinary backward signal) and
 * t is the tangent v carried forward through the linearised net.  So one
 * forward, one backward and one tangent pass, no second-order code per layer.
 * Batch norm (whose statistics mix the rows), layer norm, sigmoid, tanh,
 * convolutions and residual blocks are not supported: ld_gp_check says which
 * layer is in the way.
 *
 * Ownership: ld_gp_ws_t is the scratch of one thread (one per worker).
 */
#ifndef LATENTD_GP_H
#define LATENTD_GP_H

#include "latentd/layer.h"

typedef struct ld_gp_ws {
    int B;
    ld_net_ws_t net;              /* the critic's forward on x̂ */
    size_t delta_off[LD_NET_MAX_LAYERS]; /* Linear layer i: its delta at delta + off */
    float *mem;                   /* one allocation behind the rest */
    float *xhat;                  /* (B, X) */
    float *delta;                 /* every Linear layer's (B, out) */
    float *t0, *t1;               /* (B, widest) gradient / tangent ping-pong */
    float *ones;                  /* (B) dD/dD */
} ld_gp_ws_t;

/* 0 if critic is a net the penalty supports and its output is one value per
 * row; else LD_EINVAL with a message that names the first layer in the way,
 * e.g. "wgan-gp needs a critic without batch norm: discriminator.3 is
 * BatchNorm2d (use layer norm or none)". */
int ld_gp_check(const ld_net_t *critic, ld_err_t *err);

int ld_gp_ws_init(ld_gp_ws_t *ws, const ld_net_t *critic, int B); /* 0 or LD_ENOMEM */
void ld_gp_ws_free(ld_gp_ws_t *ws);                                /* accepts zeroed */

/* The penalty over b rows (b <= ws->B): real, fake (b, X), eps (b) in [0,1];
 * returns P and adds dP/dθ to grads (the critic's range of a block with the
 * parameter layout; biases get nothing).  run: dropout masks as in training
 * (run->rng), or NULL for none.  The ∇x D(x̂) norms go to norms (b) unless
 * NULL.  critic must pass ld_gp_check. */
double ld_gp_penalty(const ld_net_t *critic, const float *params, float *grads, ld_gp_ws_t *ws,
                     int b, const float *real, const float *fake, const float *eps, float lambda,
                     const ld_net_run_t *run, float *norms);

#endif

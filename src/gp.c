/* gp.c — the WGAN-GP gradient penalty by a tangent pass. See gp.h. */
#include "latentd/gp.h"
#include "latentd/nn.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static size_t row(ld_shape_t s) { return (size_t)s.c * s.h * s.w; }

static ld_act_t act_of(ld_layer_kind_t k) { return k == LD_LAYER_RELU ? LD_ACT_RELU : LD_ACT_LRELU; }

int ld_gp_check(const ld_net_t *critic, ld_err_t *err)
{
    /* batch norm first: it is the one the WGAN-GP paper rules out */
    for (int i = 0; i < critic->n_layers; i++) {
        const ld_layer_t *L = &critic->layers[i];
        char name[160];
        ld_net_layer_name(critic, i, name, sizeof name);
        if (L->kind == LD_LAYER_BN1D || L->kind == LD_LAYER_BN2D)
            return ld_err_set(err, LD_EINVAL,
                              "wgan-gp needs a critic without batch norm: %s is %s (use layer "
                              "norm or none)", name, ld_layer_kind_name(L->kind));
    }
    for (int i = 0; i < critic->n_layers; i++) {
        const ld_layer_t *L = &critic->layers[i];
        char name[160];
        ld_net_layer_name(critic, i, name, sizeof name);
        const char *kind = ld_layer_kind_name(L->kind);
        switch (L->kind) {
        case LD_LAYER_LINEAR:
        case LD_LAYER_LRELU:
        case LD_LAYER_RELU:
        case LD_LAYER_DROPOUT:
        case LD_LAYER_FLATTEN:
        case LD_LAYER_UNFLATTEN:
            break;
        case LD_LAYER_SIGMOID:
        case LD_LAYER_TANH:
            return ld_err_set(err, LD_EINVAL,
                              "wgan-gp needs a critic with an unbounded output and piecewise-"
                              "linear activations: %s is %s (use leaky_relu or relu)", name, kind);
        default:
            return ld_err_set(err, LD_EINVAL,
                              "wgan-gp's gradient penalty supports critics of Linear, ReLU, "
                              "LeakyReLU and Dropout layers: %s is %s", name, kind);
        }
    }
    ld_shape_t out = ld_net_out(critic);
    if (critic->n_layers < 1 || row(out) != 1)
        return ld_err_set(err, LD_EINVAL, "wgan-gp needs a critic with one output per image");
    return LD_OK;
}

void ld_gp_ws_free(ld_gp_ws_t *ws)
{
    if (!ws)
        return;
    ld_net_ws_free(&ws->net);
    free(ws->mem);
    memset(ws, 0, sizeof *ws);
}

int ld_gp_ws_init(ld_gp_ws_t *ws, const ld_net_t *critic, int B)
{
    memset(ws, 0, sizeof *ws);
    ws->B = B;
    size_t X = row(critic->in), widest = X, deltas = 0;
    for (int i = 0; i < critic->n_layers; i++) {
        const ld_layer_t *L = &critic->layers[i];
        widest = row(L->out) > widest ? row(L->out) : widest;
        if (L->kind == LD_LAYER_LINEAR) {
            ws->delta_off[i] = deltas;
            deltas += (size_t)B * row(L->out);
        }
    }
    ws->mem = ld_malloc_array((size_t)B * (X + 2 * widest + 1) + deltas, sizeof(float));
    if (!ws->mem || ld_net_ws_init(&ws->net, critic, B)) {
        ld_gp_ws_free(ws);
        return LD_ENOMEM;
    }
    ws->xhat = ws->mem;
    ws->t0 = ws->xhat + (size_t)B * X;
    ws->t1 = ws->t0 + (size_t)B * widest;
    ws->ones = ws->t1 + (size_t)B * widest;
    ws->delta = ws->ones + B;
    for (int i = 0; i < B; i++)
        ws->ones[i] = 1.0f;
    return LD_OK;
}

/* Layer i other than Linear, linearised at the last forward on nws: a
 * diagonal map (the activation's slope, dropout's mask, or 1 for a reshape),
 * the same backward (y = dL/d out -> dL/d in) and forward (a tangent). */
static void diagonal(const ld_layer_t *L, const ld_net_ws_t *nws, int i, int dropout, size_t n,
                     const float *x, float *y)
{
    if (L->kind == LD_LAYER_LRELU || L->kind == LD_LAYER_RELU)
        ld_act_backward(act_of(L->kind), L->slope, n, nws->out[i], x, y);
    else if (L->kind == LD_LAYER_DROPOUT && dropout && L->p > 0)
        for (size_t k = 0; k < n; k++)
            y[k] = x[k] * nws->mask[i][k];
    else
        memcpy(y, x, n * sizeof *y);
}

double ld_gp_penalty(const ld_net_t *critic, const float *params, float *grads, ld_gp_ws_t *ws,
                     int b, const float *real, const float *fake, const float *eps, float lambda,
                     const ld_net_run_t *run, float *norms)
{
    LD_ASSERT(b >= 0 && b <= ws->B);
    if (b == 0)
        return 0.0;
    const size_t X = row(critic->in);
    for (int i = 0; i < b; i++)
        for (size_t j = 0; j < X; j++) {
            size_t k = (size_t)i * X + j;
            ws->xhat[k] = eps[i] * real[k] + (1.0f - eps[i]) * fake[k];
        }
    const int dropout = run && run->training;
    ld_net_forward(critic, params, NULL, &ws->net, b, ws->xhat, run);

    /* backward with dD/dD = 1: every Linear layer's delta, and g = ∇x D */
    const float *cur = ws->ones;
    float *nxt = ws->t0;
    for (int i = critic->n_layers - 1; i >= 0; i--) {
        const ld_layer_t *L = &critic->layers[i];
        const size_t n_out = (size_t)b * row(L->out);
        const float *W = params + L->param_off;
        switch (L->kind) {
        case LD_LAYER_LINEAR:
            memcpy(ws->delta + ws->delta_off[i], cur, n_out * sizeof *cur);
            ld_dense_backward(b, (int)row(L->in), L->out.c, NULL, W, cur, NULL, NULL, nxt);
            break;
        default:
            diagonal(L, &ws->net, i, dropout, n_out, cur, nxt);
            break;
        }
        cur = nxt;
        nxt = nxt == ws->t0 ? ws->t1 : ws->t0;
    }

    /* v_i = dP/dg_i, in place over g */
    float *t = (float *)cur;
    double P = 0;
    const float scale = lambda * 2.0f / (float)b;
    for (int i = 0; i < b; i++) {
        float *gi = t + (size_t)i * X;
        double s = 0;
        for (size_t j = 0; j < X; j++)
            s += (double)gi[j] * gi[j];
        double n = sqrt(s);
        if (norms)
            norms[i] = (float)n;
        P += (n - 1.0) * (n - 1.0);
        float c = n > 0 ? (float)(scale * (n - 1.0) / n) : 0.0f;
        for (size_t j = 0; j < X; j++)
            gi[j] *= c;
    }

    /* the tangent pass along v, with dW_l += delta_l^T t_l-1 */
    nxt = t == ws->t0 ? ws->t1 : ws->t0;
    for (int i = 0; i < critic->n_layers; i++) {
        const ld_layer_t *L = &critic->layers[i];
        const size_t n_out = (size_t)b * row(L->out);
        const int in = (int)row(L->in), out = L->out.c;
        const float *W = params + L->param_off;
        switch (L->kind) {
        case LD_LAYER_LINEAR:
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, b, 1.0f,
                        ws->delta + ws->delta_off[i], out, t, in, 1.0f, grads + L->param_off, in);
            if (i + 1 < critic->n_layers)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, out, in, 1.0f, t, in, W,
                            in, 0.0f, nxt, out);
            break;
        default:
            diagonal(L, &ws->net, i, dropout, n_out, t, nxt);
            break;
        }
        float *tmp = t;
        t = nxt;
        nxt = tmp;
    }
    return lambda * P / b;
}

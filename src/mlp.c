/* mlp.c — dense stacks: layout, init, forward, backward. See mlp.h. */
#include "latentd/mlp.h"
#include "mlp_impl.h"
#include "latentd/common.h"

#include <string.h>

void ld_mlp_layout(ld_mlp_t *net, const char *name, int indexed, int n_layers, const int *sizes,
                   ld_act_t act, ld_act_t out_act, float slope, float dropout, size_t *off)
{
    LD_ASSERT(n_layers >= 1 && n_layers <= LD_MAX_LAYERS);
    memset(net, 0, sizeof *net);
    snprintf(net->name, sizeof net->name, "%s", name);
    net->indexed = indexed;
    net->n_layers = n_layers;
    net->act = act;
    net->out_act = out_act;
    net->slope = slope;
    net->dropout = dropout;
    net->off = *off;
    for (int i = 0; i <= n_layers; i++)
        net->size[i] = sizes[i];
    for (int i = 0; i < n_layers; i++) {
        net->w_off[i] = *off;
        *off += (size_t)sizes[i + 1] * sizes[i];
        net->b_off[i] = *off;
        *off += (size_t)sizes[i + 1];
    }
    net->n_params = *off - net->off;
}

void ld_mlp_init(const ld_mlp_t *net, float *params, ld_rng_t *r)
{
    for (int i = 0; i < net->n_layers; i++)
        ld_linear_init(r, net->size[i], net->size[i + 1], params + net->w_off[i],
                       params + net->b_off[i]);
}

static int widest(const ld_mlp_t *net)
{
    int w = 0;
    for (int i = 0; i <= net->n_layers; i++)
        w = net->size[i] > w ? net->size[i] : w;
    return w;
}

static int has_dropout(const ld_mlp_t *net, const ld_mlp_ws_t *ws)
{
    return ws->training && net->dropout > 0.0f;
}

int ld_mlp_ws_init(ld_mlp_ws_t *ws, const ld_mlp_t *net, int B, int training)
{
    memset(ws, 0, sizeof *ws);
    ws->B = B;
    ws->training = training;
    size_t total = 2 * (size_t)B * widest(net);
    for (int i = 0; i < net->n_layers; i++) {
        size_t n = (size_t)B * net->size[i + 1];
        total += n;
        if (training && net->dropout > 0 && i + 1 < net->n_layers)
            total += 2 * n;
    }
    ws->mem = ld_malloc_array(total, sizeof(float));
    if (!ws->mem)
        return LD_ENOMEM;
    float *p = ws->mem;
    for (int i = 0; i < net->n_layers; i++) {
        size_t n = (size_t)B * net->size[i + 1];
        ws->y[i] = p;
        p += n;
        if (training && net->dropout > 0 && i + 1 < net->n_layers) {
            ws->mask[i] = p;
            p += n;
            ws->yd[i] = p;
            p += n;
        }
    }
    ws->g0 = p;
    p += (size_t)B * widest(net);
    ws->g1 = p;
    return LD_OK;
}

void ld_mlp_ws_free(ld_mlp_ws_t *ws)
{
    if (ws) {
        free(ws->mem);
        memset(ws, 0, sizeof *ws);
    }
}

/* The input of layer i: x for layer 0, else the previous output (after dropout). */
static const float *layer_input(const ld_mlp_ws_t *ws, int i)
{
    if (i == 0)
        return ws->x;
    return ws->yd[i - 1] ? ws->yd[i - 1] : ws->y[i - 1];
}

const float *ld_mlp_forward(const ld_mlp_t *net, const float *params, ld_mlp_ws_t *ws, int b,
                            const float *x, ld_rng_t *rng)
{
    return ld_mlp_forward_preset(net, params, ws, b, x, rng, NULL);
}

const float *ld_mlp_forward_preset(const ld_mlp_t *net, const float *params, ld_mlp_ws_t *ws,
                                   int b, const float *x, ld_rng_t *rng, const float *preset)
{
    LD_ASSERT(b <= ws->B);
    ws->x = x;
    int drop = has_dropout(net, ws);
    for (int i = 0; i < net->n_layers; i++) {
        int in = net->size[i], out = net->size[i + 1];
        size_t n = (size_t)b * out;
        int last = i + 1 == net->n_layers;
        ld_dense_forward(b, in, out, layer_input(ws, i), params + net->w_off[i],
                         params + net->b_off[i], ws->y[i]);
        ld_act_forward(last ? net->out_act : net->act, net->slope, n, ws->y[i], ws->y[i]);
        if (drop && !last) {
            if (preset) {
                memcpy(ws->mask[i], preset, n * sizeof(float));
                preset += n;
            } else {
                LD_ASSERT(rng);
                ld_dropout_mask(rng, net->dropout, n, ws->mask[i]);
            }
            for (size_t k = 0; k < n; k++)
                ws->yd[i][k] = ws->y[i][k] * ws->mask[i][k];
        }
    }
    return ws->y[net->n_layers - 1];
}

void ld_mlp_backward(const ld_mlp_t *net, const float *params, float *grads, ld_mlp_ws_t *ws,
                     int b, const float *dout, float *dx)
{
    int L = net->n_layers;
    /* g (b, size[L]) = dLoss/d(pre-activation of the last layer): dout itself
     * when there is no output activation (no copy), else in g0 */
    const float *g = dout;
    float *gnext = ws->g0;
    if (net->out_act != LD_ACT_NONE) {
        ld_act_backward(net->out_act, net->slope, (size_t)b * net->size[L], ws->y[L - 1], dout,
                        ws->g0);
        g = ws->g0;
        gnext = ws->g1;
    }
    for (int i = L - 1; i >= 0; i--) {
        int in = net->size[i], out = net->size[i + 1];
        float *dst = i > 0 ? gnext : dx;
        ld_dense_backward(b, in, out, layer_input(ws, i), params + net->w_off[i], g,
                          grads ? grads + net->w_off[i] : NULL,
                          grads ? grads + net->b_off[i] : NULL, dst);
        if (i == 0)
            break;
        size_t n = (size_t)b * in;
        /* through the dropout of layer i-1, then its activation */
        if (ws->yd[i - 1])
            ld_mul_inplace(n, gnext, ws->mask[i - 1]);
        ld_act_backward(net->act, net->slope, n, ws->y[i - 1], gnext, gnext);
        g = gnext;
        gnext = gnext == ws->g0 ? ws->g1 : ws->g0;
    }
}

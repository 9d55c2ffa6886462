/* mlp.h — a stack of dense layers with activations and (training) dropout:
 * the building block of every model.  Forward and backward side by side.
 *
 * An ld_mlp_t is a description plus offsets into a parameter block (see
 * model.h); it owns no memory.  Activations live in an ld_mlp_ws_t sized for a
 * maximum batch, owned by whoever runs the net (a trainer, or one inference
 * call), so one model can run in many threads at once.
 */
#ifndef LATENTD_MLP_H
#define LATENTD_MLP_H

#include "latentd/nn.h"
#include "latentd/rng.h"

#define LD_MAX_HIDDEN 6
#define LD_MAX_LAYERS (LD_MAX_HIDDEN + 1)
#define LD_MAX_WIDTH 4096 /* widest layer accepted from a file or a request */

typedef struct {
    char name[32];      /* tensor-name prefix: "encoder", "mu", ... */
    int indexed;        /* names are "name.{i}.weight" (1) or "name.weight" (0) */
    int n_layers;
    int size[LD_MAX_LAYERS + 1];  /* size[0] input width ... size[n_layers] output width */
    ld_act_t act;       /* after each layer but the last */
    ld_act_t out_act;   /* after the last layer */
    float slope;
    float dropout;      /* after each hidden activation, training only */
    size_t w_off[LD_MAX_LAYERS];  /* weight i (size[i+1], size[i]) at block + w_off[i] */
    size_t b_off[LD_MAX_LAYERS];  /* bias i (size[i+1]) at block + b_off[i] */
    size_t off, n_params;         /* this net's range in the block */
} ld_mlp_t;

/* Per-run scratch of one net for up to B rows. */
typedef struct {
    int B;              /* capacity in rows */
    int training;       /* dropout buffers present */
    const float *x;     /* (b, size[0]) input of the last forward, borrowed */
    float *y[LD_MAX_LAYERS];    /* (B, size[i+1]) output of layer i after its activation */
    float *mask[LD_MAX_LAYERS]; /* (B, size[i+1]) dropout mask of hidden layer i (training) */
    float *yd[LD_MAX_LAYERS];   /* (B, size[i+1]) y[i] * mask[i]: input of layer i+1 (training) */
    float *g0, *g1;     /* (B, widest) gradient ping-pong buffers */
    float *mem;         /* the one allocation behind all of the above */
} ld_mlp_ws_t;

/* Lay out net in a block starting at *off (advanced past it). sizes has
 * n_layers + 1 widths. */
void ld_mlp_layout(ld_mlp_t *net, const char *name, int indexed, int n_layers, const int *sizes,
                   ld_act_t act, ld_act_t out_act, float slope, float dropout, size_t *off);

/* PyTorch default init of every layer, in layer order (weight then bias). */
void ld_mlp_init(const ld_mlp_t *net, float *params, ld_rng_t *r);

/* Scratch for up to B rows; training adds dropout buffers. 0 or LD_ENOMEM. */
int ld_mlp_ws_init(ld_mlp_ws_t *ws, const ld_mlp_t *net, int B, int training);
void ld_mlp_ws_free(ld_mlp_ws_t *ws);

/* x (b, size[0]) -> returns y (b, size[n_layers]) (points into ws).
 * Dropout only if ws->training and net->dropout > 0, with masks drawn from
 * rng (tests preset them: src/mlp_impl.h). b <= ws->B. */
const float *ld_mlp_forward(const ld_mlp_t *net, const float *params, ld_mlp_ws_t *ws, int b,
                            const float *x, ld_rng_t *rng);
/* dout (b, size[n_layers]) = dLoss/d(output) -> grads += dLoss/dparams (same
 * layout as params; grads NULL: none), dx (b, size[0]) = dLoss/dx if dx != NULL.
 * Uses the activations of the last forward on ws.  dout is only read; it
 * must not overlap dx or ws's buffers. */
void ld_mlp_backward(const ld_mlp_t *net, const float *params, float *grads, ld_mlp_ws_t *ws,
                     int b, const float *dout, float *dx);

#endif

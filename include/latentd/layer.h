/* layer.h — the layer-list numerical core (issue 15), llm.c style: a layer is
 * a plain struct (kind, shapes, offsets, hyper-parameters) and each pass is a
 * switch over kinds, with every kind's forward beside its backward in layer.c.
 *
 * Tensors are float32, batch-major and NCHW like PyTorch: a row of a layer's
 * input is C*H*W floats; a flat vector is (C, 1, 1).
 *
 * A net (ld_net_t) is a name and an array of layers.  A residual block is one
 * LD_LAYER_RESIDUAL entry followed by the n_inner entries of f (which may nest),
 * and computes y = x + f(x).
 *
 * Memory (llm.c): a model holds ONE parameter block and ONE buffer block.
 * ld_net_layout gives each layer offsets into both; several nets may share a
 * block, one after another.  Gradients and Adam moments are blocks with the
 * parameter layout.  Buffers are state that is not trained: batch-norm running
 * mean and variance, num_batches_tracked (an int64 stored in two floats, read
 * with ld_net_nbt), and later the generator's weight average.
 *
 * Tensor names are those of the state_dict of the equivalent
 * torch.nn.Sequential with every module counted ("generator.3.running_mean");
 * a residual block is `Residual(nn.Sequential)` whose inner modules are named
 * "<i>.f.<j>", an embedding is `EmbedConcat(nn.Embedding)` ("<i>.weight"); see
 * tests/reference/make_layer_fixtures.py for both classes.  Nets converted from
 * the dense MLPs keep their old names (LD_NAMES_DENSE, LD_NAMES_SINGLE).
 *
 * Ownership: an ld_net_t owns no memory; blocks belong to the model and
 * scratch (ld_net_ws_t) to whoever runs the net.  Thread-safety: a net is
 * read-only once laid out; forward/backward touch only their arguments, so any
 * number of threads may run one net, each with its own workspace.
 */
#ifndef LATENTD_LAYER_H
#define LATENTD_LAYER_H

#include "latentd/allreduce.h"
#include "latentd/ckpt.h" /* ld_dtype_t */
#include "latentd/common.h"
#include "latentd/rng.h"

#include <stddef.h>
#include <stdint.h>

#define LD_NET_MAX_LAYERS 48  /* entries of one net, residual markers included */
#define LD_NET_MAX_DIM 65536  /* widest C*H*W of one row accepted from a file */

typedef enum {
    LD_LAYER_LINEAR = 0,   /* (in,1,1) -> (out,1,1); weight (out, in), bias (out) */
    LD_LAYER_CONV2D,       /* weight (Co, Ci, K, K), bias (Co) */
    LD_LAYER_CONVT2D,      /* weight (Ci, Co, K, K), bias (Co) */
    LD_LAYER_BN1D,         /* (C,1,1); weight, bias (C); buffers mean, var (C), nbt */
    LD_LAYER_BN2D,         /* (C,H,W); statistics per channel over N, H, W */
    LD_LAYER_LAYERNORM,    /* over the whole row; weight, bias of the input's shape */
    LD_LAYER_DROPOUT,      /* inverted dropout, training only */
    LD_LAYER_LRELU,
    LD_LAYER_RELU,
    LD_LAYER_TANH,
    LD_LAYER_SIGMOID,
    LD_LAYER_FLATTEN,      /* (C,H,W) -> (C*H*W,1,1), no copy */
    LD_LAYER_UNFLATTEN,    /* (C*H*W,1,1) -> (C,H,W), no copy */
    LD_LAYER_EMBED,        /* (C,H,W) + label -> (C+E,H,W): the label's row of
                              weight (n_classes, E*H*W) as E extra channels */
    LD_LAYER_RESIDUAL,     /* y = x + f(x), f = the next n_inner entries */
    LD_LAYER_N_KINDS
} ld_layer_kind_t;

typedef struct {
    int c, h, w;
} ld_shape_t;

typedef struct {
    ld_layer_kind_t kind;
    ld_shape_t in, out;
    size_t param_off, n_params;  /* in the parameter block */
    size_t buf_off, n_bufs;      /* in the buffer block */
    int k, stride, pad;          /* conv, transposed conv */
    int n_classes;               /* embed */
    int n_inner;                 /* residual: entries of f that follow */
    int depth;                   /* residual nesting of this entry (0 = top level) */
    float slope;                 /* leaky ReLU */
    float p;                     /* dropout */
    float eps, momentum;         /* batch norm, layer norm */
} ld_layer_t;

/* How tensor names count layers. */
typedef enum {
    LD_NAMES_SEQUENTIAL = 0,  /* "net.{i}.x", i counts every module (nn.Sequential) */
    LD_NAMES_DENSE,           /* "net.{i}.x", i counts Linear layers only (latentd's MLPs) */
    LD_NAMES_SINGLE,          /* "net.x": one Linear (the VAE's mu and logvar) */
} ld_names_t;

typedef struct {
    char name[32];            /* tensor-name prefix: "generator", "encoder", ... */
    ld_names_t names;
    ld_shape_t in;            /* input shape; out = layers[last top-level].out */
    int n_layers;
    ld_layer_t layers[LD_NET_MAX_LAYERS];
    size_t param_off, n_params; /* this net's range in the parameter block */
    size_t buf_off, n_bufs;     /* and in the buffer block */
    int open[8];                /* residual blocks being built (ld_net_res_begin) */
    int n_open;
} ld_net_t;

/* ---- building ----
 * ld_net_init starts an empty net; each ld_net_add_* appends a layer whose
 * input is the current output shape, checks it and returns 0, or LD_EINVAL
 * with a message naming the layer (the net is then left unchanged).  Shapes
 * only; ld_net_layout assigns offsets once the net is complete. */
void ld_net_init(ld_net_t *net, const char *name, ld_names_t names, ld_shape_t in);
int ld_net_add_linear(ld_net_t *net, int out, ld_err_t *err);
int ld_net_add_conv(ld_net_t *net, int out_c, int k, int stride, int pad, ld_err_t *err);
int ld_net_add_convt(ld_net_t *net, int out_c, int k, int stride, int pad, ld_err_t *err);
/* kind LD_LAYER_BN1D needs a flat input (C,1,1); LD_LAYER_BN2D takes any (C,H,W).
 * torch's defaults are momentum 0.1, eps 1e-5. */
int ld_net_add_bn(ld_net_t *net, ld_layer_kind_t kind, float momentum, float eps, ld_err_t *err);
int ld_net_add_layernorm(ld_net_t *net, float eps, ld_err_t *err);
int ld_net_add_dropout(ld_net_t *net, float p, ld_err_t *err);
/* LD_LAYER_LRELU (slope), _RELU, _TANH, _SIGMOID */
int ld_net_add_act(ld_net_t *net, ld_layer_kind_t kind, float slope, ld_err_t *err);
int ld_net_add_flatten(ld_net_t *net, ld_err_t *err);
int ld_net_add_unflatten(ld_net_t *net, ld_shape_t to, ld_err_t *err);
int ld_net_add_embed(ld_net_t *net, int n_classes, int channels, ld_err_t *err);
/* Everything added between begin and end is f of y = x + f(x); f must keep
 * the shape. */
int ld_net_res_begin(ld_net_t *net, ld_err_t *err);
int ld_net_res_end(ld_net_t *net, ld_err_t *err);

/* Output shape of the net (its last top-level entry), or the input if empty. */
ld_shape_t ld_net_out(const ld_net_t *net);
/* Assign offsets starting at *param_off / *buf_off (both advanced past the
 * net). LD_EINVAL if a residual block is still open or the net is empty. */
int ld_net_layout(ld_net_t *net, size_t *param_off, size_t *buf_off, ld_err_t *err);
/* Rows a training batch needs at least (2 with batch norm, as torch, else 1). */
int ld_net_min_batch(const ld_net_t *net);
/* Batch-norm num_batches_tracked of layer i, read from / written to buffers. */
int64_t ld_net_nbt(const ld_net_t *net, int i, const float *buffers);
void ld_net_set_nbt(const ld_net_t *net, int i, float *buffers, int64_t v);

/* PyTorch's default init of every layer, in layer order: Linear, Conv2d and
 * ConvTranspose2d weights and biases ~ U(-1/sqrt(fan_in), +), fan_in = in,
 * Ci*K*K, Co*K*K respectively (torch's reading of dim 1); Embedding ~ N(0,1);
 * norm weight 1, bias 0; running mean 0, var 1, nbt 0. */
void ld_net_init_params(const ld_net_t *net, float *params, float *buffers, ld_rng_t *r);

/* ---- names, shapes and offsets of every tensor, in state_dict order ---- */
typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
    size_t numel;
    int is_buffer;     /* 0: params block (and grads, moments), 1: buffers block */
    size_t off;        /* float offset into that block */
    ld_dtype_t dtype;  /* I64: num_batches_tracked, stored as an int64 in 2 floats */
} ld_net_tensor_t;

/* Writes up to max entries into out; returns how many the net has (call with
 * max 0 to count). */
int ld_net_tensors(const ld_net_t *net, ld_net_tensor_t *out, int max);

/* ---- description: JSON for checkpoint metadata, and a table for people ----
 * {"name":"generator","names":"sequential","input":[100,1,1],"layers":[
 *   {"type":"Linear","out":6272},{"type":"Unflatten","shape":[128,7,7]},
 *   {"type":"BatchNorm2d","momentum":0.1,"eps":1e-05},{"type":"ReLU"},
 *   {"type":"ConvTranspose2d","out":64,"kernel":4,"stride":2,"padding":1},...,
 *   {"type":"Residual","layers":[...]}]}
 * Types are torch's class names (plus EmbedConcat and Residual).  Returns the
 * length written, or LD_EINVAL if len is too small. */
int ld_net_to_json(const ld_net_t *net, char *buf, size_t len);
/* Parse, rebuild through the ld_net_add_* checks and lay out at *param_off,
 * *buf_off (advanced).  LD_EFORMAT / LD_EINVAL with a message on bad input. */
int ld_net_from_json(const char *json, ld_net_t *net, size_t *param_off, size_t *buf_off,
                     ld_err_t *err);
/* The table: one line per layer (name, type, output shape, parameters) and a
 * total.  Returns the length it needed (snprintf style). */
int ld_net_table(const ld_net_t *net, char *buf, size_t len);
/* Layer i's module name, as its tensors are named ("generator.3", "critic.4.f.0",
 * "mu"), into buf. */
void ld_net_layer_name(const ld_net_t *net, int i, char *buf, size_t len);
/* torch's class name of a kind ("Linear", ..., "EmbedConcat", "Residual"). */
const char *ld_layer_kind_name(ld_layer_kind_t k);

/* ---- running ---- */

/* Per-run scratch of one net for up to B rows: every layer's output, the
 * saved statistics of norms, dropout masks, the conv column buffer and the
 * gradient buffers.  Owned by whoever runs the net; one per thread. */
typedef struct {
    int B;
    int b;                   /* rows of the last forward */
    const float *in[LD_NET_MAX_LAYERS];   /* (b, in size) input of layer i */
    const float *out[LD_NET_MAX_LAYERS];  /* (b, out size) output of layer i */
    float *mask[LD_NET_MAX_LAYERS];       /* dropout: (B, size); training */
    float *stat[LD_NET_MAX_LAYERS];       /* BN: mean, rstd (C each); LN: mean, rstd (B each) */
    float *skip[LD_NET_MAX_LAYERS];       /* residual: (B, size) dL/dy kept across f */
    double count[LD_NET_MAX_LAYERS];      /* BN: values per channel over the whole batch */
    float *cols;             /* im2col columns of a chunk of rows, largest conv */
    float *tmp;              /* the chunk's rows channel-major, largest conv */
    float *g0, *g1;          /* (B, widest) gradient ping-pong */
    double *red;             /* (2 * widest C + 1) per-channel partial sums */
    float *mem;              /* the one float allocation behind the rest */
} ld_net_ws_t;

int ld_net_ws_init(ld_net_ws_t *ws, const ld_net_t *net, int B);
void ld_net_ws_free(ld_net_ws_t *ws);   /* accepts NULL and zeroed structs */

/* How one forward/backward runs.  Zeroed = inference (eval mode), one thread. */
typedef struct {
    int training;        /* batch statistics and running-stat updates; dropout */
    ld_rng_t *rng;       /* dropout masks (training); drawn layer by layer as
                            ld_dropout_mask over the layer's (b, size) */
    const uint8_t *labels; /* (b) class labels, for embedding layers; each below
                            the layer's n_classes (asserted: callers check input) */
    float *update;       /* training: the buffer block to update running
                            statistics in; NULL = leave them (other workers) */
    /* Whole-batch statistics when the batch is split over workers: every
     * worker runs forward and backward on its own rows and calls the same
     * layers in the same order; batch norm sums its per-channel partial
     * sums across them through ar (rank = this worker).  share is the
     * weight the caller gives this worker's gradients when it sums the
     * workers' gradients (b_k / B when each worker's loss is the mean over
     * its own rows, as in train.c); batch norm's backward needs it to rebuild
     * the whole batch's dL/dy.  ar NULL: these rows are the whole batch. */
    ld_allreduce_t *ar;
    int rank;
    float share;         /* 0 is read as 1 */
} ld_net_run_t;

/* x (b, in size) -> returns the output (b, out size), which points into ws
 * (or is x itself for an empty net).  buffers: read in eval mode.  b <= ws->B;
 * b may be 0 for a worker with no rows (it still takes part in ar). */
const float *ld_net_forward(const ld_net_t *net, const float *params, const float *buffers,
                            ld_net_ws_t *ws, int b, const float *x, const ld_net_run_t *run);
/* dout (b, out size) = dL/d(output) of the last forward on ws -> grads +=
 * dL/dparams (parameter layout) unless grads is NULL (then only dx: the
 * weight-gradient GEMMs are skipped), dx (b, in size) = dL/dx unless NULL.
 * run must be the forward's. dout is not modified. */
void ld_net_backward(const ld_net_t *net, const float *params, float *grads, ld_net_ws_t *ws,
                     const float *dout, float *dx, const ld_net_run_t *run);

/* Floating-point operations of one row's forward (x2 for a whole training step). */
double ld_net_flops(const ld_net_t *net);

#endif

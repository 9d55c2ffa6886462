/* layer.c — building, laying out, initialising and running layer lists.
 * See layer.h.  Each kind's forward sits beside its backward; the shapes of
 * the buffers are in the comments (b rows, NCHW). */
#include "latentd/layer.h"
#include "latentd/nn.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

static size_t shape_size(ld_shape_t s) { return (size_t)s.c * s.h * s.w; }

/* ---- building ---- */

void ld_net_init(ld_net_t *net, const char *name, ld_names_t names, ld_shape_t in)
{
    memset(net, 0, sizeof *net);
    snprintf(net->name, sizeof net->name, "%s", name);
    net->names = names;
    net->in = in;
}

ld_shape_t ld_net_out(const ld_net_t *net)
{
    return net->n_layers ? net->layers[net->n_layers - 1].out : net->in;
}

/* A new entry whose input is the current output; NULL (and err) when full. */
static ld_layer_t *push(ld_net_t *net, ld_layer_kind_t kind, ld_err_t *err)
{
    if (net->n_layers >= LD_NET_MAX_LAYERS) {
        ld_err_set(err, LD_EINVAL, "%s: more than %d layers", net->name, LD_NET_MAX_LAYERS);
        return NULL;
    }
    ld_layer_t *L = &net->layers[net->n_layers];
    memset(L, 0, sizeof *L);
    L->kind = kind;
    L->in = L->out = ld_net_out(net);
    L->depth = net->n_open;
    return L;
}

static int refuse(ld_net_t *net, ld_err_t *err, const char *fmt, const char *what, ld_shape_t s)
{
    return ld_err_set(err, LD_EINVAL, "%s layer %d (%s): %s, input (%d,%d,%d)", net->name,
                      net->n_layers, what, fmt, s.c, s.h, s.w);
}

static int is_flat(ld_shape_t s) { return s.h == 1 && s.w == 1; }

static int fits(ld_shape_t s)
{
    return s.c >= 1 && s.h >= 1 && s.w >= 1 && shape_size(s) <= LD_NET_MAX_DIM;
}

/* Commit the entry push() returned once its output shape is known. */
static int commit(ld_net_t *net, ld_layer_t *L, ld_err_t *err)
{
    if (!fits(L->out))
        return refuse(net, err, "output shape out of range", ld_layer_kind_name(L->kind), L->in);
    net->n_layers++;
    return LD_OK;
}

int ld_net_add_linear(ld_net_t *net, int out, ld_err_t *err)
{
    ld_layer_t *L = push(net, LD_LAYER_LINEAR, err);
    if (!L)
        return LD_EINVAL;
    if (!is_flat(L->in))
        return refuse(net, err, "needs a flat input (add Flatten)", "Linear", L->in);
    L->out = (ld_shape_t){out, 1, 1};
    return commit(net, L, err);
}

static int add_conv(ld_net_t *net, ld_layer_kind_t kind, int out_c, int k, int stride, int pad,
                    ld_err_t *err)
{
    ld_layer_t *L = push(net, kind, err);
    if (!L)
        return LD_EINVAL;
    const char *what = ld_layer_kind_name(kind);
    if (k < 1 || k > 16 || stride < 1 || stride > 16 || pad < 0 || pad >= k)
        return refuse(net, err, "kernel 1..16, stride 1..16, padding 0..kernel-1", what, L->in);
    L->k = k;
    L->stride = stride;
    L->pad = pad;
    if (kind == LD_LAYER_CONV2D) {
        int hp = L->in.h + 2 * pad - k, wp = L->in.w + 2 * pad - k;
        if (hp < 0 || wp < 0)
            return refuse(net, err, "kernel larger than the padded input", what, L->in);
        L->out = (ld_shape_t){out_c, hp / stride + 1, wp / stride + 1};
    } else {
        L->out = (ld_shape_t){out_c, (L->in.h - 1) * stride - 2 * pad + k,
                              (L->in.w - 1) * stride - 2 * pad + k};
    }
    return commit(net, L, err);
}

int ld_net_add_conv(ld_net_t *net, int out_c, int k, int stride, int pad, ld_err_t *err)
{
    return add_conv(net, LD_LAYER_CONV2D, out_c, k, stride, pad, err);
}

int ld_net_add_convt(ld_net_t *net, int out_c, int k, int stride, int pad, ld_err_t *err)
{
    return add_conv(net, LD_LAYER_CONVT2D, out_c, k, stride, pad, err);
}

int ld_net_add_bn(ld_net_t *net, ld_layer_kind_t kind, float momentum, float eps, ld_err_t *err)
{
    LD_ASSERT(kind == LD_LAYER_BN1D || kind == LD_LAYER_BN2D);
    ld_layer_t *L = push(net, kind, err);
    if (!L)
        return LD_EINVAL;
    if (kind == LD_LAYER_BN1D && !is_flat(L->in))
        return refuse(net, err, "needs a flat input (use BatchNorm2d)", "BatchNorm1d", L->in);
    if (!(momentum >= 0 && momentum <= 1) || !(eps > 0 && eps < 1))
        return refuse(net, err, "momentum must be in [0,1], eps in (0,1)",
                      ld_layer_kind_name(kind), L->in);
    L->momentum = momentum;
    L->eps = eps;
    return commit(net, L, err);
}

int ld_net_add_layernorm(ld_net_t *net, float eps, ld_err_t *err)
{
    ld_layer_t *L = push(net, LD_LAYER_LAYERNORM, err);
    if (!L)
        return LD_EINVAL;
    if (!(eps > 0 && eps < 1))
        return refuse(net, err, "eps must be in (0,1)", "LayerNorm", L->in);
    L->eps = eps;
    return commit(net, L, err);
}

int ld_net_add_dropout(ld_net_t *net, float p, ld_err_t *err)
{
    ld_layer_t *L = push(net, LD_LAYER_DROPOUT, err);
    if (!L)
        return LD_EINVAL;
    if (!(p >= 0 && p < 1))
        return refuse(net, err, "p must be in [0,1)", "Dropout", L->in);
    L->p = p;
    return commit(net, L, err);
}

int ld_net_add_act(ld_net_t *net, ld_layer_kind_t kind, float slope, ld_err_t *err)
{
    LD_ASSERT(kind == LD_LAYER_LRELU || kind == LD_LAYER_RELU || kind == LD_LAYER_TANH ||
              kind == LD_LAYER_SIGMOID);
    ld_layer_t *L = push(net, kind, err);
    if (!L)
        return LD_EINVAL;
    /* ld_act_backward reads the sign of x from y, which needs slope >= 0 */
    if (kind == LD_LAYER_LRELU && !(slope >= 0 && slope < 1))
        return refuse(net, err, "negative slope must be in [0,1)", "LeakyReLU", L->in);
    L->slope = kind == LD_LAYER_LRELU ? slope : 0.0f;
    return commit(net, L, err);
}

int ld_net_add_flatten(ld_net_t *net, ld_err_t *err)
{
    ld_layer_t *L = push(net, LD_LAYER_FLATTEN, err);
    if (!L)
        return LD_EINVAL;
    L->out = (ld_shape_t){(int)shape_size(L->in), 1, 1};
    return commit(net, L, err);
}

int ld_net_add_unflatten(ld_net_t *net, ld_shape_t to, ld_err_t *err)
{
    ld_layer_t *L = push(net, LD_LAYER_UNFLATTEN, err);
    if (!L)
        return LD_EINVAL;
    if (!is_flat(L->in) || !fits(to) || shape_size(to) != shape_size(L->in))
        return refuse(net, err, "needs a flat input of the target's size", "Unflatten", L->in);
    L->out = to;
    return commit(net, L, err);
}

int ld_net_add_embed(ld_net_t *net, int n_classes, int channels, ld_err_t *err)
{
    ld_layer_t *L = push(net, LD_LAYER_EMBED, err);
    if (!L)
        return LD_EINVAL;
    if (n_classes < 1 || n_classes > 256 || channels < 1)
        return refuse(net, err, "classes 1..256 (labels are bytes), channels >= 1",
                      "EmbedConcat", L->in);
    L->n_classes = n_classes;
    L->out.c = L->in.c + channels;
    return commit(net, L, err);
}

int ld_net_res_begin(ld_net_t *net, ld_err_t *err)
{
    if (net->n_open >= (int)LD_ARRAY_LEN(net->open))
        return ld_err_set(err, LD_EINVAL, "%s: residual blocks nested too deep", net->name);
    ld_layer_t *L = push(net, LD_LAYER_RESIDUAL, err);
    if (!L)
        return LD_EINVAL;
    net->open[net->n_open++] = net->n_layers;
    return commit(net, L, err);
}

int ld_net_res_end(ld_net_t *net, ld_err_t *err)
{
    if (net->n_open == 0)
        return ld_err_set(err, LD_EINVAL, "%s: no residual block to end", net->name);
    int at = net->open[net->n_open - 1];
    ld_layer_t *R = &net->layers[at];
    int n_inner = net->n_layers - at - 1;
    ld_shape_t o = ld_net_out(net);
    if (n_inner == 0)
        return ld_err_set(err, LD_EINVAL, "%s layer %d: empty residual block", net->name, at);
    if (o.c != R->in.c || o.h != R->in.h || o.w != R->in.w)
        return ld_err_set(err, LD_EINVAL,
                          "%s layer %d: residual block maps (%d,%d,%d) to (%d,%d,%d); "
                          "x + f(x) needs the same shape", net->name, at, R->in.c, R->in.h,
                          R->in.w, o.c, o.h, o.w);
    R->n_inner = n_inner;
    net->n_open--;
    return LD_OK;
}

/* Parameters and buffer floats of one layer. */
static void layer_sizes(const ld_layer_t *L, size_t *n_params, size_t *n_bufs)
{
    size_t in = shape_size(L->in), out = shape_size(L->out), kk = (size_t)L->k * L->k;
    *n_params = *n_bufs = 0;
    switch (L->kind) {
    case LD_LAYER_LINEAR: *n_params = out * in + out; break;
    case LD_LAYER_CONV2D:
    case LD_LAYER_CONVT2D: *n_params = (size_t)L->out.c * L->in.c * kk + L->out.c; break;
    case LD_LAYER_BN1D:
    case LD_LAYER_BN2D:
        *n_params = 2 * (size_t)L->in.c;
        *n_bufs = 2 * (size_t)L->in.c + 2; /* + num_batches_tracked as an int64 */
        break;
    case LD_LAYER_LAYERNORM: *n_params = 2 * in; break;
    case LD_LAYER_EMBED: *n_params = (size_t)L->n_classes * (out - in); break;
    default: break;
    }
}

int ld_net_layout(ld_net_t *net, size_t *param_off, size_t *buf_off, ld_err_t *err)
{
    if (net->n_open)
        return ld_err_set(err, LD_EINVAL, "%s: residual block at layer %d not ended", net->name,
                          net->open[net->n_open - 1]);
    if (net->n_layers == 0)
        return ld_err_set(err, LD_EINVAL, "%s: no layers", net->name);
    net->param_off = *param_off;
    net->buf_off = *buf_off;
    for (int i = 0; i < net->n_layers; i++) {
        ld_layer_t *L = &net->layers[i];
        layer_sizes(L, &L->n_params, &L->n_bufs);
        L->param_off = *param_off;
        L->buf_off = *buf_off;
        *param_off += L->n_params;
        *buf_off += L->n_bufs;
    }
    net->n_params = *param_off - net->param_off;
    net->n_bufs = *buf_off - net->buf_off;
    return LD_OK;
}

static int is_bn(const ld_layer_t *L) { return L->kind == LD_LAYER_BN1D || L->kind == LD_LAYER_BN2D; }

int ld_net_min_batch(const ld_net_t *net)
{
    for (int i = 0; i < net->n_layers; i++)
        if (is_bn(&net->layers[i]) && net->layers[i].in.h * net->layers[i].in.w == 1)
            return 2;
    return 1;
}

int64_t ld_net_nbt(const ld_net_t *net, int i, const float *buffers)
{
    const ld_layer_t *L = &net->layers[i];
    LD_ASSERT(is_bn(L));
    int64_t v;
    memcpy(&v, buffers + L->buf_off + 2 * (size_t)L->in.c, sizeof v);
    return v;
}

void ld_net_set_nbt(const ld_net_t *net, int i, float *buffers, int64_t v)
{
    const ld_layer_t *L = &net->layers[i];
    LD_ASSERT(is_bn(L));
    memcpy(buffers + L->buf_off + 2 * (size_t)L->in.c, &v, sizeof v);
}

void ld_net_init_params(const ld_net_t *net, float *params, float *buffers, ld_rng_t *r)
{
    for (int i = 0; i < net->n_layers; i++) {
        const ld_layer_t *L = &net->layers[i];
        float *P = params + L->param_off;
        size_t kk = (size_t)L->k * L->k, wn = L->n_params;
        int fan_in = 0;
        switch (L->kind) {
        case LD_LAYER_LINEAR: fan_in = (int)shape_size(L->in); wn -= L->out.c; break;
        case LD_LAYER_CONV2D: fan_in = L->in.c * (int)kk; wn -= L->out.c; break;
        case LD_LAYER_CONVT2D: fan_in = L->out.c * (int)kk; wn -= L->out.c; break;
        case LD_LAYER_EMBED: ld_rng_fill_normal(r, P, L->n_params, 0.0f, 1.0f); break;
        case LD_LAYER_LAYERNORM:
        case LD_LAYER_BN1D:
        case LD_LAYER_BN2D: {
            size_t n = L->n_params / 2;
            for (size_t k = 0; k < n; k++) {
                P[k] = 1.0f;
                P[n + k] = 0.0f;
            }
            if (is_bn(L)) {
                float *Bf = buffers + L->buf_off;
                for (int c = 0; c < L->in.c; c++) {
                    Bf[c] = 0.0f;
                    Bf[L->in.c + c] = 1.0f;
                }
                ld_net_set_nbt(net, i, buffers, 0);
            }
            break;
        }
        default: break;
        }
        if (fan_in > 0) {
            float bound = 1.0f / sqrtf((float)fan_in);
            ld_rng_fill_uniform(r, P, wn, -bound, bound);
            ld_rng_fill_uniform(r, P + wn, L->n_params - wn, -bound, bound);
        }
    }
}

/* The convolutions run their GEMMs over chunks of rows whose im2col columns
 * fit in CONV_COLS_CAP floats: bigger GEMMs than one row's, and a workspace
 * that stays small for a serving request. */
#define CONV_COLS_CAP ((size_t)1 << 20)

/* Per row: rows of the column matrix (x positions of the grid). */
static size_t conv_colrows(const ld_layer_t *L)
{
    return (size_t)(L->kind == LD_LAYER_CONV2D ? L->in.c : L->out.c) * L->k * L->k;
}

static int conv_grid(const ld_layer_t *L)
{
    return L->kind == LD_LAYER_CONV2D ? L->out.h * L->out.w : L->in.h * L->in.w;
}

static int conv_chunk(const ld_layer_t *L, int B)
{
    size_t per = conv_colrows(L) * conv_grid(L), c = CONV_COLS_CAP / per;
    c = c < 1 ? 1 : c;
    return c < (size_t)B ? (int)c : B;
}

/* im2col columns and the channel-major scratch a conv layer needs for B rows. */
static void conv_scratch(const ld_layer_t *L, int B, size_t *cols, size_t *tmp)
{
    *cols = *tmp = 0;
    if (L->kind != LD_LAYER_CONV2D && L->kind != LD_LAYER_CONVT2D)
        return;
    size_t n = (size_t)conv_chunk(L, B) * conv_grid(L);
    *cols = n * conv_colrows(L);
    *tmp = n * (L->kind == LD_LAYER_CONV2D ? (size_t)L->out.c : 2 * (size_t)L->in.c);
}

/* ---- workspace ---- */

static int passes_through(const ld_layer_t *L)
{
    return L->kind == LD_LAYER_FLATTEN || L->kind == LD_LAYER_UNFLATTEN;
}


int ld_net_ws_init(ld_net_ws_t *ws, const ld_net_t *net, int B)
{
    memset(ws, 0, sizeof *ws);
    ws->B = B;
    size_t widest = shape_size(net->in), cols = 0, tmp = 0, total = 0;
    int max_c = 1;
    for (int pass = 0; pass < 2; pass++) {
        float *p = ws->mem;
        for (int i = 0; i < net->n_layers; i++) {
            const ld_layer_t *L = &net->layers[i];
            size_t out = (size_t)B * shape_size(L->out);
            size_t want[4] = {passes_through(L) ? 0 : out,
                              L->kind == LD_LAYER_DROPOUT ? out : 0,
                              is_bn(L) ? 2 * (size_t)L->in.c
                              : L->kind == LD_LAYER_LAYERNORM ? 2 * (size_t)B : 0,
                              L->kind == LD_LAYER_RESIDUAL ? out : 0};
            float **dst[4] = {NULL, &ws->mask[i], &ws->stat[i], &ws->skip[i]};
            for (int k = 0; k < 4; k++) {
                if (pass == 0)
                    total += want[k];
                else if (want[k]) {
                    if (k == 0)
                        ws->out[i] = p;
                    else
                        *dst[k] = p;
                    p += want[k];
                }
            }
            if (pass == 0) {
                size_t s = shape_size(L->out);
                widest = s > widest ? s : widest;
                size_t c1, t1;
                conv_scratch(L, B, &c1, &t1);
                cols = c1 > cols ? c1 : cols;
                tmp = t1 > tmp ? t1 : tmp;
                max_c = is_bn(L) && L->in.c > max_c ? L->in.c : max_c;
            }
        }
        if (pass == 0) {
            total += cols + tmp + 2 * (size_t)B * widest;
            ws->mem = ld_malloc_array(total ? total : 1, sizeof(float));
            ws->red = ld_malloc_array(2 * (size_t)max_c + 1, sizeof(double));
            if (!ws->mem || !ws->red) {
                ld_net_ws_free(ws);
                return LD_ENOMEM;
            }
        } else {
            ws->cols = p;
            p += cols;
            ws->tmp = p;
            p += tmp;
            ws->g0 = p;
            p += (size_t)B * widest;
            ws->g1 = p;
        }
    }
    return LD_OK;
}

void ld_net_ws_free(ld_net_ws_t *ws)
{
    if (!ws)
        return;
    free(ws->mem);
    free(ws->red);
    memset(ws, 0, sizeof *ws);
}

/* ---- the kinds: forward beside backward ----
 * Every forward reads x (b, in) and writes y (b, out); every backward reads
 * g = dL/dy (b, out), ACCUMULATES parameter gradients into G (the layer's
 * slice of the gradient block) unless the pass has no gradient block, and,
 * when dx is not NULL, OVERWRITES dx = dL/dx (b, in). */

typedef struct {
    const ld_net_t *net;
    const float *params;
    const float *buffers;
    float *grads;
    ld_net_ws_t *ws;
    const ld_net_run_t *run;
    int b;
} pass_t;

static float share_of(const ld_net_run_t *run) { return run->share > 0 ? run->share : 1.0f; }

static void allreduce(const pass_t *ps, double *v, size_t n)
{
    if (ps->run->ar)
        ld_allreduce_sum(ps->run->ar, ps->run->rank, v, n);
}

/* For each kernel offset k < K (K <= 16, see add_conv): the positions o in
 * [0, n) whose input index o*s - p + k falls in [0, size) are [lo[k], hi[k]),
 * so the copy loops below need no per-element test. */
typedef struct {
    int lo[16], hi[16];
} spans_t;

static void kernel_spans(int size, int K, int s, int p, int n, spans_t *sp)
{
    for (int k = 0; k < K; k++) {
        int first = p - k > 0 ? (p - k + s - 1) / s : 0, last = size - 1 + p - k;
        int lo = first < n ? first : n, hi = last < 0 ? lo : last / s + 1 < n ? last / s + 1 : n;
        sp->lo[k] = lo;
        sp->hi[k] = hi > lo ? hi : lo;
    }
}

/* im2col for stride 1 when the grid is as wide as the image (W == Wo): the
 * positions of rows [lo, hi) read one contiguous run of the image, shifted
 * by off, so one copy moves them all; the positions where the kernel hangs
 * over a side edge, which that copy filled with the neighbouring row's
 * pixels, are zeroed after it.  The same columns as the general loop. */
static void im2col_same(const float *im, int C, int H, int W, int K, int p, int Ho,
                        const spans_t *hs, const spans_t *ws, float *col, size_t ld)
{
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const int lo = hs->lo[ki], hi = hs->hi[ki], wlo = ws->lo[kj], whi = ws->hi[kj];
                const int off = kj - p;
                float *row = col + ((size_t)(c * K + ki) * K + kj) * ld;
                memset(row, 0, (size_t)lo * W * sizeof *row);
                if (hi > lo && whi > wlo) {
                    const float *src = im + ((size_t)c * H + lo - p + ki) * W;
                    size_t n = (size_t)(hi - 1 - lo) * W + (size_t)(whi - wlo);
                    memcpy(row + (size_t)lo * W + wlo, src + wlo + off, n * sizeof *row);
                }
                for (int oh = lo; oh < hi; oh++) {
                    float *r = row + (size_t)oh * W;
                    for (int ow = 0; ow < wlo; ow++)
                        r[ow] = 0.0f;
                    for (int ow = whi > wlo ? whi : 0; ow < W; ow++)
                        r[ow] = 0.0f;
                }
                memset(row + (size_t)hi * W, 0, (size_t)(Ho - hi) * W * sizeof *row);
            }
}

/* im2col of one image (C, H, W) for a K x K kernel, stride s, padding p, over
 * an (Ho, Wo) grid of positions: col (C*K*K, Ho*Wo) with rows ld floats
 * apart (so the columns of several images can sit side by side), zeros where
 * the kernel hangs over the edge. */
static void im2col(const float *im, int C, int H, int W, int K, int s, int p, int Ho, int Wo,
                   float *col, size_t ld)
{
    spans_t hs, ws;
    kernel_spans(H, K, s, p, Ho, &hs);
    kernel_spans(W, K, s, p, Wo, &ws);
    if (s == 1 && W == Wo) { /* "same" padding: see im2col_same */
        im2col_same(im, C, H, W, K, p, Ho, &hs, &ws, col, ld);
        return;
    }
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const int wlo = ws.lo[kj], whi = ws.hi[kj], off = kj - p;
                float *row = col + ((size_t)(c * K + ki) * K + kj) * ld;
                memset(row, 0, (size_t)hs.lo[ki] * Wo * sizeof *row);
                for (int oh = hs.lo[ki]; oh < hs.hi[ki]; oh++) {
                    float *r = row + (size_t)oh * Wo;
                    /* position ow reads input column ow * s + off of this row */
                    const float *src = im + ((size_t)c * H + oh * s - p + ki) * W;
                    for (int ow = 0; ow < wlo; ow++)
                        r[ow] = 0.0f;
                    if (s == 1)
                        memcpy(r + wlo, src + wlo + off, (size_t)(whi - wlo) * sizeof *r);
                    else
                        for (int ow = wlo; ow < whi; ow++)
                            r[ow] = src[ow * s + off];
                    for (int ow = whi; ow < Wo; ow++)
                        r[ow] = 0.0f;
                }
                memset(row + (size_t)hs.hi[ki] * Wo, 0,
                       (size_t)(Ho - hs.hi[ki]) * Wo * sizeof *row);
            }
}

/* The adjoint of im2col: im (C, H, W) += every column entry at its pixel.
 * Each pixel receives its terms in (c, ki, kj, oh, ow) order. */
static void col2im(const float *col, int C, int H, int W, int K, int s, int p, int Ho, int Wo,
                   float *im, size_t ld)
{
    spans_t hs, ws;
    kernel_spans(H, K, s, p, Ho, &hs);
    kernel_spans(W, K, s, p, Wo, &ws);
    for (int c = 0; c < C; c++)
        for (int ki = 0; ki < K; ki++)
            for (int kj = 0; kj < K; kj++) {
                const int wlo = ws.lo[kj], whi = ws.hi[kj], off = kj - p;
                const float *row = col + ((size_t)(c * K + ki) * K + kj) * ld;
                for (int oh = hs.lo[ki]; oh < hs.hi[ki]; oh++) {
                    float *dst = im + ((size_t)c * H + oh * s - p + ki) * W;
                    const float *r = row + (size_t)oh * Wo;
                    if (s == 1) /* contiguous: a loop the compiler vectorises */
                        for (int ow = wlo; ow < whi; ow++)
                            dst[ow + off] += r[ow];
                    else
                        for (int ow = wlo; ow < whi; ow++)
                            dst[ow * s + off] += r[ow];
                }
            }
}

/* y (C, S) = bias[c] in every position of channel c. */
static void fill_channels(float *y, const float *bias, int C, int S)
{
    for (int c = 0; c < C; c++)
        for (int j = 0; j < S; j++)
            y[(size_t)c * S + j] = bias[c];
}

/* gb (C) += the sum over positions of g (C, S). */
static void add_channel_sums(const float *g, int C, int S, float *gb)
{
    for (int c = 0; c < C; c++) {
        float s = 0;
        for (int j = 0; j < S; j++)
            s += g[(size_t)c * S + j];
        gb[c] += s;
    }
}

/* Rows x (n, C, S) <-> channel-major t (C, n*S), the layout of a GEMM over
 * n rows at once.  from_cm adds bias[c] when bias is not NULL. */
static void to_cm(const float *x, int n, int C, int S, float *t)
{
    for (int j = 0; j < n; j++)
        for (int c = 0; c < C; c++)
            memcpy(t + ((size_t)c * n + j) * S, x + ((size_t)j * C + c) * S, (size_t)S * sizeof *t);
}

static void from_cm(const float *t, int n, int C, int S, float *x, const float *bias)
{
    for (int j = 0; j < n; j++)
        for (int c = 0; c < C; c++) {
            const float *src = t + ((size_t)c * n + j) * S;
            float *dst = x + ((size_t)j * C + c) * S;
            float add = bias ? bias[c] : 0.0f;
            for (int k = 0; k < S; k++)
                dst[k] = src[k] + add;
        }
}

/* Conv2d.  x (b, Ci, H, W), w (Co, Ci*K*K), bias (Co) -> y (b, Co, Ho, Wo).
 * Per chunk of n rows: cols (Ci*K*K, n*Ho*Wo) = im2col of each row side by
 * side; t (Co, n*Ho*Wo) = w cols; y = t back in row order + bias. */
static void conv_forward(const pass_t *ps, const ld_layer_t *L, const float *x, float *y)
{
    const float *w = ps->params + L->param_off;
    const float *bias = w + (size_t)L->out.c * conv_colrows(L);
    const int Ck = (int)conv_colrows(L), G = conv_grid(L), ch = conv_chunk(L, ps->ws->B);
    float *cols = ps->ws->cols, *t = ps->ws->tmp;
    for (int n0 = 0; n0 < ps->b; n0 += ch) {
        int n = ps->b - n0 < ch ? ps->b - n0 : ch, ld = n * G;
        for (int j = 0; j < n; j++)
            im2col(x + (size_t)(n0 + j) * shape_size(L->in), L->in.c, L->in.h, L->in.w, L->k,
                   L->stride, L->pad, L->out.h, L->out.w, cols + (size_t)j * G, ld);
        ld_yield_point();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L->out.c, ld, Ck, 1.0f, w, Ck,
                    cols, ld, 0.0f, t, ld);
        from_cm(t, n, L->out.c, G, y + (size_t)n0 * shape_size(L->out), bias);
    }
}

/* t (Co, n*Ho*Wo) = g of the chunk; gw (Co, Ci*K*K) += t cols^T;
 * gbias += sums of t per channel; dcols = w^T t, col2im'd into each dx row. */
static void conv_backward(const pass_t *ps, const ld_layer_t *L, const float *x, const float *g,
                          float *dx)
{
    const float *w = ps->params + L->param_off;
    float *gw = ps->grads ? ps->grads + L->param_off : NULL;
    const int Ck = (int)conv_colrows(L), G = conv_grid(L), ch = conv_chunk(L, ps->ws->B);
    float *cols = ps->ws->cols, *t = ps->ws->tmp;
    for (int n0 = 0; n0 < ps->b && (gw || dx); n0 += ch) {
        int n = ps->b - n0 < ch ? ps->b - n0 : ch, ld = n * G;
        to_cm(g + (size_t)n0 * shape_size(L->out), n, L->out.c, G, t);
        if (gw) {
            for (int j = 0; j < n; j++)
                im2col(x + (size_t)(n0 + j) * shape_size(L->in), L->in.c, L->in.h, L->in.w, L->k,
                       L->stride, L->pad, L->out.h, L->out.w, cols + (size_t)j * G, ld);
            ld_yield_point();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L->out.c, Ck, ld, 1.0f, t, ld,
                        cols, ld, 1.0f, gw, Ck);
            add_channel_sums(t, L->out.c, ld, gw + (size_t)L->out.c * Ck);
        }
        if (!dx)
            continue;
        ld_yield_point();
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ck, ld, L->out.c, 1.0f, w, Ck, t, ld,
                    0.0f, cols, ld);
        for (int j = 0; j < n; j++) {
            float *dxj = dx + (size_t)(n0 + j) * shape_size(L->in);
            memset(dxj, 0, shape_size(L->in) * sizeof *dxj);
            col2im(cols + (size_t)j * G, L->in.c, L->in.h, L->in.w, L->k, L->stride, L->pad,
                   L->out.h, L->out.w, dxj, ld);
        }
    }
}

/* ConvTranspose2d, the adjoint of Conv2d.  x (b, Ci, Hi, Wi), w (Ci, Co*K*K),
 * bias (Co) -> y (b, Co, Ho, Wo), where the (Hi, Wi) grid is the positions of
 * a Conv2d with the same K, stride and padding over (Co, Ho, Wo).  Per chunk
 * of n rows: t (Ci, n*Hi*Wi) = x of the chunk; cols (Co*K*K, n*Hi*Wi) =
 * w^T t; each y row = bias + col2im of its columns. */
static void convt_forward(const pass_t *ps, const ld_layer_t *L, const float *x, float *y)
{
    const float *w = ps->params + L->param_off;
    const float *bias = w + (size_t)L->in.c * conv_colrows(L);
    const int Ck = (int)conv_colrows(L), G = conv_grid(L), ch = conv_chunk(L, ps->ws->B);
    const int HWo = L->out.h * L->out.w;
    float *cols = ps->ws->cols, *t = ps->ws->tmp;
    for (int n0 = 0; n0 < ps->b; n0 += ch) {
        int n = ps->b - n0 < ch ? ps->b - n0 : ch, ld = n * G;
        to_cm(x + (size_t)n0 * shape_size(L->in), n, L->in.c, G, t);
        ld_yield_point();
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ck, ld, L->in.c, 1.0f, w, Ck, t, ld,
                    0.0f, cols, ld);
        for (int j = 0; j < n; j++) {
            float *yj = y + (size_t)(n0 + j) * shape_size(L->out);
            fill_channels(yj, bias, L->out.c, HWo);
            col2im(cols + (size_t)j * G, L->out.c, L->out.h, L->out.w, L->k, L->stride, L->pad,
                   L->in.h, L->in.w, yj, ld);
        }
    }
}

/* cols (Co*K*K, n*Hi*Wi) = im2col of each g row; t = x of the chunk (Ci, n*Hi*Wi);
 * gw (Ci, Co*K*K) += t cols^T; gbias += spatial sums of g; dx = w cols, back
 * in row order. */
static void convt_backward(const pass_t *ps, const ld_layer_t *L, const float *x, const float *g,
                           float *dx)
{
    const float *w = ps->params + L->param_off;
    float *gw = ps->grads ? ps->grads + L->param_off : NULL;
    const int Ck = (int)conv_colrows(L), G = conv_grid(L), ch = conv_chunk(L, ps->ws->B);
    const int HWo = L->out.h * L->out.w;
    float *cols = ps->ws->cols, *t = ps->ws->tmp, *t2 = t + (size_t)L->in.c * ch * G;
    for (int n0 = 0; n0 < ps->b && (gw || dx); n0 += ch) {
        int n = ps->b - n0 < ch ? ps->b - n0 : ch, ld = n * G;
        for (int j = 0; j < n; j++) {
            const float *gj = g + (size_t)(n0 + j) * shape_size(L->out);
            im2col(gj, L->out.c, L->out.h, L->out.w, L->k, L->stride, L->pad, L->in.h, L->in.w,
                   cols + (size_t)j * G, ld);
            if (gw)
                add_channel_sums(gj, L->out.c, HWo, gw + (size_t)L->in.c * Ck);
        }
        if (gw) {
            to_cm(x + (size_t)n0 * shape_size(L->in), n, L->in.c, G, t);
            ld_yield_point();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L->in.c, Ck, ld, 1.0f, t, ld,
                        cols, ld, 1.0f, gw, Ck);
        }
        if (!dx)
            continue;
        ld_yield_point();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L->in.c, ld, Ck, 1.0f, w, Ck, cols,
                    ld, 0.0f, t2, ld);
        from_cm(t2, n, L->in.c, G, dx + (size_t)n0 * shape_size(L->in), NULL);
    }
}

/* BatchNorm1d/2d.  x (b, C, S) with S = H*W, gamma, beta (C) -> y (b, C, S).
 * Training: mean and biased variance per channel over the WHOLE batch (all
 * workers' rows: the per-channel sums [sum x, sum x^2, count] are summed
 * across workers before anyone normalises); the running statistics move by
 * momentum towards mean and the unbiased variance.  Eval: running statistics.
 * Saves mean and 1/sqrt(var + eps) per channel for the backward. */
static void bn_forward(const pass_t *ps, int i, const ld_layer_t *L, const float *x, float *y)
{
    const int C = L->in.c, S = L->in.h * L->in.w, b = ps->b;
    const float *gamma = ps->params + L->param_off, *beta = gamma + C;
    float *mean = ps->ws->stat[i], *rstd = mean + C;
    if (ps->run->training) {
        double *red = ps->ws->red;
        for (int c = 0; c < C; c++) {
            double s1 = 0, s2 = 0;
            for (int n = 0; n < b; n++) {
                const float *xc = x + ((size_t)n * C + c) * S;
                for (int j = 0; j < S; j++) {
                    s1 += xc[j];
                    s2 += (double)xc[j] * xc[j];
                }
            }
            red[c] = s1;
            red[C + c] = s2;
        }
        red[2 * C] = (double)b * S;
        allreduce(ps, red, 2 * (size_t)C + 1);
        double N = red[2 * C];
        ps->ws->count[i] = N;
        float *upd = ps->run->update && N > 0 ? ps->run->update + L->buf_off : NULL;
        for (int c = 0; c < C; c++) {
            double m = N > 0 ? red[c] / N : 0, var = N > 0 ? red[C + c] / N - m * m : 0;
            var = var > 0 ? var : 0;
            mean[c] = (float)m;
            rstd[c] = (float)(1.0 / sqrt(var + L->eps));
            if (upd) {
                double unbiased = N > 1 ? var * N / (N - 1) : var;
                upd[c] = (1.0f - L->momentum) * upd[c] + L->momentum * (float)m;
                upd[C + c] = (1.0f - L->momentum) * upd[C + c] + L->momentum * (float)unbiased;
            }
        }
        if (upd) {
            int64_t t;
            memcpy(&t, upd + 2 * C, sizeof t);
            t++;
            memcpy(upd + 2 * C, &t, sizeof t);
        }
    } else {
        const float *rm = ps->buffers + L->buf_off, *rv = rm + C;
        for (int c = 0; c < C; c++) {
            mean[c] = rm[c];
            rstd[c] = 1.0f / sqrtf(rv[c] + L->eps);
        }
    }
    for (int n = 0; n < b; n++)
        for (int c = 0; c < C; c++) {
            const float *xc = x + ((size_t)n * C + c) * S;
            float *yc = y + ((size_t)n * C + c) * S;
            float a = gamma[c] * rstd[c], d = beta[c] - mean[c] * a;
            for (int j = 0; j < S; j++)
                yc[j] = xc[j] * a + d;
        }
}

/* xhat = (x - mean) rstd; ggamma += sum g xhat, gbeta += sum g (own rows).
 * Training: with the whole batch's T1 = sum dL/dy and T2 = sum dL/dy xhat
 * (summed across workers; a worker's g is dL/dy / share, so its partial sums
 * are scaled by share first), dx = gamma rstd (g - (T1/N + xhat T2/N) / share).
 * Eval: dx = gamma rstd g. */
static void bn_backward(const pass_t *ps, int i, const ld_layer_t *L, const float *x,
                        const float *g, float *dx)
{
    const int C = L->in.c, S = L->in.h * L->in.w, b = ps->b;
    const float *gamma = ps->params + L->param_off;
    float *ggamma = ps->grads ? ps->grads + L->param_off : NULL;
    const float *mean = ps->ws->stat[i], *rstd = mean + C;
    double *red = ps->ws->red;
    for (int c = 0; c < C; c++) {
        double s1 = 0, s2 = 0;
        for (int n = 0; n < b; n++) {
            const float *xc = x + ((size_t)n * C + c) * S, *gc = g + ((size_t)n * C + c) * S;
            for (int j = 0; j < S; j++) {
                s1 += gc[j];
                s2 += (double)gc[j] * ((xc[j] - mean[c]) * rstd[c]);
            }
        }
        if (ggamma) {
            ggamma[c] += (float)s2;
            ggamma[C + c] += (float)s1; /* beta's gradient */
        }
        red[c] = s1;
        red[C + c] = s2;
    }
    const int training = ps->run->training;
    const float share = share_of(ps->run);
    if (training) {
        for (int c = 0; c < 2 * C; c++)
            red[c] *= share;
        allreduce(ps, red, 2 * (size_t)C);
    }
    if (!dx)
        return;
    const double N = ps->ws->count[i];
    for (int c = 0; c < C; c++) {
        float a = gamma[c] * rstd[c];
        float m1 = training ? (float)(red[c] / N / share) : 0.0f;
        float m2 = training ? (float)(red[C + c] / N / share) : 0.0f;
        for (int n = 0; n < b; n++) {
            const float *xc = x + ((size_t)n * C + c) * S, *gc = g + ((size_t)n * C + c) * S;
            float *dc = dx + ((size_t)n * C + c) * S;
            for (int j = 0; j < S; j++) {
                float xhat = (xc[j] - mean[c]) * rstd[c];
                dc[j] = a * (gc[j] - m1 - xhat * m2);
            }
        }
    }
}

/* LayerNorm over each row's F = C*H*W values (biased variance, eps), then
 * y = xhat * w + bias with w, bias (F).  Saves mean and rstd per row. */
static void ln_forward(const pass_t *ps, int i, const ld_layer_t *L, const float *x, float *y)
{
    const size_t F = shape_size(L->in);
    const float *w = ps->params + L->param_off, *bias = w + F;
    float *mean = ps->ws->stat[i], *rstd = mean + ps->ws->B;
    for (int n = 0; n < ps->b; n++) {
        const float *xn = x + (size_t)n * F;
        float *yn = y + (size_t)n * F;
        double s1 = 0, s2 = 0;
        for (size_t j = 0; j < F; j++) {
            s1 += xn[j];
            s2 += (double)xn[j] * xn[j];
        }
        double m = s1 / F, var = s2 / F - m * m;
        mean[n] = (float)m;
        rstd[n] = (float)(1.0 / sqrt((var > 0 ? var : 0) + L->eps));
        for (size_t j = 0; j < F; j++)
            yn[j] = (xn[j] - mean[n]) * rstd[n] * w[j] + bias[j];
    }
}

/* dxhat = g w; dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat));
 * gw += g xhat, gbias += g. */
static void ln_backward(const pass_t *ps, int i, const ld_layer_t *L, const float *x,
                        const float *g, float *dx)
{
    const size_t F = shape_size(L->in);
    const float *w = ps->params + L->param_off;
    float *gw = ps->grads ? ps->grads + L->param_off : NULL;
    const float *mean = ps->ws->stat[i], *rstd = mean + ps->ws->B;
    for (int n = 0; n < ps->b; n++) {
        const float *xn = x + (size_t)n * F, *gn = g + (size_t)n * F;
        double m1 = 0, m2 = 0;
        for (size_t j = 0; j < F; j++) {
            float xhat = (xn[j] - mean[n]) * rstd[n], dxhat = gn[j] * w[j];
            if (gw) {
                gw[j] += gn[j] * xhat;
                gw[F + j] += gn[j]; /* the bias's gradient */
            }
            m1 += dxhat;
            m2 += (double)dxhat * xhat;
        }
        if (!dx)
            continue;
        float a = (float)(m1 / F), c = (float)(m2 / F);
        float *dn = dx + (size_t)n * F;
        for (size_t j = 0; j < F; j++) {
            float xhat = (xn[j] - mean[n]) * rstd[n];
            dn[j] = rstd[n] * (gn[j] * w[j] - a - xhat * c);
        }
    }
}

/* EmbedConcat.  x (b, C, H, W), label (b), table (n_classes, E*H*W) ->
 * y (b, C+E, H, W): row n is x_n followed by table[label_n] (in NCHW the new
 * channels come after x's). */
static void embed_forward(const pass_t *ps, const ld_layer_t *L, const float *x, float *y)
{
    const size_t in = shape_size(L->in), e = shape_size(L->out) - in;
    const float *table = ps->params + L->param_off;
    LD_ASSERT(ps->b == 0 || ps->run->labels);
    for (int n = 0; n < ps->b; n++) {
        int lab = ps->run->labels[n];
        LD_ASSERT(lab < L->n_classes); /* callers validate labels */
        memcpy(y + (size_t)n * (in + e), x + (size_t)n * in, in * sizeof *y);
        memcpy(y + (size_t)n * (in + e) + in, table + (size_t)lab * e, e * sizeof *y);
    }
}

/* gtable[label_n] += g_n's embedding part; dx_n = g_n's first C channels. */
static void embed_backward(const pass_t *ps, const ld_layer_t *L, const float *g, float *dx)
{
    const size_t in = shape_size(L->in), e = shape_size(L->out) - in;
    float *gt = ps->grads ? ps->grads + L->param_off : NULL;
    for (int n = 0; n < ps->b; n++) {
        const float *gn = g + (size_t)n * (in + e);
        for (size_t j = 0; gt && j < e; j++)
            gt[(size_t)ps->run->labels[n] * e + j] += gn[in + j];
        if (dx)
            memcpy(dx + (size_t)n * in, gn, in * sizeof *dx);
    }
}

static ld_act_t act_of(ld_layer_kind_t k)
{
    switch (k) {
    case LD_LAYER_LRELU: return LD_ACT_LRELU;
    case LD_LAYER_RELU: return LD_ACT_RELU;
    case LD_LAYER_TANH: return LD_ACT_TANH;
    case LD_LAYER_SIGMOID: return LD_ACT_SIGMOID;
    default: return LD_ACT_NONE;
    }
}

/* ---- the net: ranges of entries, residual blocks by recursion ---- */

static int next_entry(const ld_net_t *net, int i)
{
    const ld_layer_t *L = &net->layers[i];
    return i + 1 + (L->kind == LD_LAYER_RESIDUAL ? L->n_inner : 0);
}

/* Layers [lo, hi) on x; returns their output. */
static const float *forward_range(const pass_t *ps, int lo, int hi, const float *x)
{
    const ld_net_t *net = ps->net;
    ld_net_ws_t *ws = ps->ws;
    const int b = ps->b;
    for (int i = lo; i < hi; i = next_entry(net, i)) {
        const ld_layer_t *L = &net->layers[i];
        const size_t n_out = (size_t)b * shape_size(L->out);
        float *y = (float *)ws->out[i];
        ws->in[i] = x;
        switch (L->kind) {
        case LD_LAYER_LINEAR:
            ld_dense_forward(b, (int)shape_size(L->in), L->out.c, x, ps->params + L->param_off,
                             ps->params + L->param_off + (size_t)L->out.c * shape_size(L->in), y);
            break;
        case LD_LAYER_CONV2D: conv_forward(ps, L, x, y); break;
        case LD_LAYER_CONVT2D: convt_forward(ps, L, x, y); break;
        case LD_LAYER_BN1D:
        case LD_LAYER_BN2D: bn_forward(ps, i, L, x, y); break;
        case LD_LAYER_LAYERNORM: ln_forward(ps, i, L, x, y); break;
        case LD_LAYER_DROPOUT:
            if (ps->run->training && L->p > 0) {
                LD_ASSERT(ps->run->rng);
                ld_dropout_mask(ps->run->rng, L->p, n_out, ws->mask[i]);
                for (size_t k = 0; k < n_out; k++)
                    y[k] = x[k] * ws->mask[i][k];
            } else {
                memcpy(y, x, n_out * sizeof *y);
            }
            break;
        case LD_LAYER_LRELU:
        case LD_LAYER_RELU:
        case LD_LAYER_TANH:
        case LD_LAYER_SIGMOID: ld_act_forward(act_of(L->kind), L->slope, n_out, x, y); break;
        case LD_LAYER_FLATTEN:
        case LD_LAYER_UNFLATTEN: ws->out[i] = x; break; /* same memory, new shape */
        case LD_LAYER_EMBED: embed_forward(ps, L, x, y); break;
        case LD_LAYER_RESIDUAL: {
            const float *fx = forward_range(ps, i + 1, i + 1 + L->n_inner, x);
            for (size_t k = 0; k < n_out; k++)
                y[k] = x[k] + fx[k];
            break;
        }
        case LD_LAYER_N_KINDS: LD_ASSERT(0);
        }
        x = ws->out[i];
    }
    return x;
}

const float *ld_net_forward(const ld_net_t *net, const float *params, const float *buffers,
                            ld_net_ws_t *ws, int b, const float *x, const ld_net_run_t *run)
{
    static const ld_net_run_t eval = {0};
    LD_ASSERT(b >= 0 && b <= ws->B);
    pass_t ps = {net, params, buffers, NULL, ws, run ? run : &eval, b};
    ws->b = b;
    return forward_range(&ps, 0, net->n_layers, x);
}

/* A gradient buffer other than g (g may be the caller's dout or a skip). */
static float *other(const ld_net_ws_t *ws, const float *g) { return g == ws->g0 ? ws->g1 : ws->g0; }

/* Backward through [lo, hi) given g = dL/d(output of the range).  The input
 * gradient goes into dst for the first entry when dst is given; otherwise
 * into a ping-pong buffer, unless need_dx is 0 for the first entry.  Returns
 * where dL/d(input) is (NULL if not computed). */
static const float *backward_range(const pass_t *ps, int lo, int hi, const float *g, float *dst,
                                   int need_dx)
{
    const ld_net_t *net = ps->net;
    ld_net_ws_t *ws = ps->ws;
    const int b = ps->b;
    int order[LD_NET_MAX_LAYERS], n = 0;
    for (int i = lo; i < hi; i = next_entry(net, i))
        order[n++] = i;
    for (int k = n - 1; k >= 0; k--) {
        const int i = order[k];
        const ld_layer_t *L = &net->layers[i];
        const size_t n_in = (size_t)b * shape_size(L->in), n_out = (size_t)b * shape_size(L->out);
        const float *x = ws->in[i];
        float *dx = k > 0 ? other(ws, g) : dst ? dst : need_dx ? other(ws, g) : NULL;
        float *G = ps->grads ? ps->grads + L->param_off : NULL;
        switch (L->kind) {
        case LD_LAYER_LINEAR:
            ld_dense_backward(b, (int)shape_size(L->in), L->out.c, x, ps->params + L->param_off,
                              g, G, G ? G + (size_t)L->out.c * shape_size(L->in) : NULL, dx);
            break;
        case LD_LAYER_CONV2D: conv_backward(ps, L, x, g, dx); break;
        case LD_LAYER_CONVT2D: convt_backward(ps, L, x, g, dx); break;
        case LD_LAYER_BN1D:
        case LD_LAYER_BN2D: bn_backward(ps, i, L, x, g, dx); break;
        case LD_LAYER_LAYERNORM: ln_backward(ps, i, L, x, g, dx); break;
        case LD_LAYER_DROPOUT:
            if (dx && ps->run->training && L->p > 0)
                for (size_t j = 0; j < n_in; j++)
                    dx[j] = g[j] * ws->mask[i][j];
            else if (dx)
                memcpy(dx, g, n_in * sizeof *dx);
            break;
        case LD_LAYER_LRELU:
        case LD_LAYER_RELU:
        case LD_LAYER_TANH:
        case LD_LAYER_SIGMOID:
            if (dx)
                ld_act_backward(act_of(L->kind), L->slope, n_out, ws->out[i], g, dx);
            break;
        case LD_LAYER_FLATTEN:
        case LD_LAYER_UNFLATTEN:
            if (dx)
                memcpy(dx, g, n_in * sizeof *dx);
            break;
        case LD_LAYER_EMBED: embed_backward(ps, L, g, dx); break;
        case LD_LAYER_RESIDUAL: {
            /* dL/dx = g + dL/dx through f; f's backward reuses the ping-pong
             * buffers, so g waits in this block's own buffer. */
            memcpy(ws->skip[i], g, n_out * sizeof *g);
            const float *df = backward_range(ps, i + 1, i + 1 + L->n_inner, ws->skip[i], NULL, 1);
            if (dx) /* dx may be df itself: elementwise, in place is safe */
                for (size_t j = 0; j < n_in; j++)
                    dx[j] = ws->skip[i][j] + df[j];
            break;
        }
        case LD_LAYER_N_KINDS: LD_ASSERT(0);
        }
        if (!dx)
            return NULL;
        g = dx;
    }
    return g;
}

void ld_net_backward(const ld_net_t *net, const float *params, float *grads, ld_net_ws_t *ws,
                     const float *dout, float *dx, const ld_net_run_t *run)
{
    static const ld_net_run_t eval = {0};
    pass_t ps = {net, params, NULL, grads, ws, run ? run : &eval, ws->b};
    backward_range(&ps, 0, net->n_layers, dout, dx, 0);
}

double ld_net_flops(const ld_net_t *net)
{
    double f = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const ld_layer_t *L = &net->layers[i];
        double kk = (double)L->k * L->k;
        switch (L->kind) {
        case LD_LAYER_LINEAR: f += 2.0 * shape_size(L->in) * L->out.c; break;
        case LD_LAYER_CONV2D: f += 2.0 * L->out.c * L->in.c * kk * L->out.h * L->out.w; break;
        case LD_LAYER_CONVT2D: f += 2.0 * L->out.c * L->in.c * kk * L->in.h * L->in.w; break;
        case LD_LAYER_FLATTEN:
        case LD_LAYER_UNFLATTEN: break;
        default: f += (double)shape_size(L->out); break;
        }
    }
    return f;
}

/* model.h — the three model families behind one type: architecture, parameters,
 * checkpoint load/save, and inference.
 *
 *   VAE         nets: encoder (x -> h, act after every layer), mu (h -> z),
 *               logvar (h -> z), decoder (z -> x logits, act on hidden layers only).
 *               Bernoulli decoder: images are sigmoid(logits).
 *   GAN         nets: generator (z -> x, sigmoid output), discriminator (x -> 1 logit,
 *               dropout after each hidden activation while training).
 *   classifier  nets: classifier (x -> n_classes logits, dropout while training).
 *   cgan, cvae  a GAN's / VAE's nets, each starting with an embedding of the
 *               class label concatenated to its input (net architecture cmlp);
 *               inference takes a label per row (ld_model_decode_labels).
 *
 * Each kind's nets are dense MLPs (below) or, with ld_arch_t.net, a layer-list
 * architecture of nets.h (dcgan, conv, resmlp) whose tensors are named as the
 * state_dict of the equivalent nn.Sequential and whose batch-norm running
 * statistics live in a buffer block (layer.h).
 *
 * Dense tensor names follow PyTorch nn.Linear, dense layers counted from 0:
 *   encoder.{i}.weight|bias  mu.weight|bias  logvar.weight|bias  decoder.{i}.weight|bias
 *   generator.{i}.weight|bias  discriminator.{i}.weight|bias  classifier.{i}.weight|bias
 * weight is (out, in), bias (out).
 *
 * Memory: one block of n_params floats holds every parameter; each net records
 * offsets into it, so a gradient block or an Adam moment block of the same size
 * shares the layout (llm.c style).
 *
 * Ownership and threads: a loaded model is immutable; inference functions are
 * reentrant and allocate their own scratch per call, so any number of threads
 * may run them on one model at once.  Training mutates params and must own the
 * model exclusively.
 */
#ifndef LATENTD_MODEL_H
#define LATENTD_MODEL_H

#include "latentd/ckpt.h"
#include "latentd/common.h"
#include "latentd/layer.h"
#include "latentd/mlp.h"
#include "latentd/nn.h"

#define LD_MAX_NETS 4

/* cgan, cvae: a GAN, a VAE conditioned on a class label (an Embed of the label
 * concatenated to the input of each net, layer.h); their family is GAN, VAE. */
typedef enum {
    LD_KIND_VAE = 1,
    LD_KIND_GAN = 2,
    LD_KIND_CLASSIFIER = 3,
    LD_KIND_CGAN = 4,
    LD_KIND_CVAE = 5
} ld_kind_t;

/* Which nets a kind is built from: dense MLPs from the hidden lists (the
 * default, and every checkpoint written before layer lists), or one of the
 * layer-list architectures of nets.h.  dcgan: a GAN, conv: a VAE, both for
 * 28x28 images; resmlp: a VAE or GAN whose hidden lists hold equal widths
 * (width = the first, one residual block per entry).  cmlp: the dense widths
 * as a layer list whose first layer embeds the class label (cgan, cvae). */
typedef enum {
    LD_NETS_MLP = 0,
    LD_NETS_DCGAN,
    LD_NETS_CONV,
    LD_NETS_RESMLP,
    LD_NETS_CMLP,
    LD_NETS_N
} ld_netarch_t;

const char *ld_netarch_name(ld_netarch_t a);  /* "mlp", "dcgan", "conv", "resmlp", "cmlp" */
int ld_netarch_parse(const char *s, ld_netarch_t *out); /* 0, or -1 if unknown */

typedef struct {
    int n;                       /* number of hidden layers */
    int size[LD_MAX_HIDDEN];     /* their widths */
} ld_hidden_t;

typedef struct {
    ld_kind_t kind;
    int img_h, img_w;  /* image shape; x_dim = img_h * img_w */
    int x_dim;
    int z_dim;         /* VAE / GAN latent size */
    int n_classes;     /* classifier outputs; cgan, cvae: label values 0..n_classes-1 */
    int embed;         /* cgan, cvae: channels of the label embedding */
    ld_hidden_t enc;   /* VAE encoder | GAN discriminator | classifier hidden widths */
    ld_hidden_t dec;   /* VAE decoder | GAN generator hidden widths */
    ld_act_t act;      /* hidden activation */
    float slope;       /* leaky ReLU slope, in [0,1) */
    float dropout;     /* GAN discriminator / classifier training dropout, in [0,1) */
    ld_netarch_t net;  /* LD_NETS_MLP (zeroed) or a layer-list architecture */
} ld_arch_t;


/* The training record, stored as strings in the checkpoint's __metadata__. */
#define LD_RECORD_MAX 24
typedef struct {
    int n;
    char key[LD_RECORD_MAX][32];
    char val[LD_RECORD_MAX][256];
} ld_record_t;

struct ld_model;

/* What differs between kinds, in one table (ld_kind_ops): adding a kind is an
 * entry here and its training phases in train.c, not a case in every file. */
typedef struct {
    const char *name;          /* "vae" */
    const char *article;       /* "a VAE", for messages */
    int n_losses;
    const char *const *loss_names; /* what training reports, in order */
    int decode_net;            /* net that maps z to images, or -1 */
    int encode_net;            /* net that maps images to features for mu/logvar, or -1 */
    ld_act_t out_act;          /* applied to the decode net's output (VAE: sigmoid of logits) */
    int needs_labels;          /* training data must carry labels */
    /* builds m->nets (dense) and m->layers from m->arch, laid out from
     * *param_off / *buf_off (advanced); returns the number of nets */
    int (*layout)(struct ld_model *m, size_t *param_off, size_t *buf_off);
    ld_kind_t family;          /* what it trains and serves as: VAE, GAN or classifier */
    int conditional;           /* decode (and a VAE's encode) take a class label per row */
    /* What a model of the kind can be asked for; 0 (a row that leaves them
     * out) is "no". */
    int invertible;  /* GAN inversion (invert.h): the decode net maps z alone to
                        the image (no labels, no out_act) */
    int classifies;  /* ld_model_classify: class logits from the classifier net */
    int has_elbo;    /* ld_eval_vae: an encoder, mu/logvar and a Bernoulli decoder */
} ld_kind_ops_t;

/* The table entry of kind k, or NULL for a value that is no kind. */
const ld_kind_ops_t *ld_kind_ops(ld_kind_t k);

typedef struct ld_model {
    ld_arch_t arch;
    const ld_kind_ops_t *ops;  /* ld_kind_ops(arch.kind) */
    int n_nets;
    ld_mlp_t nets[LD_MAX_NETS];   /* LD_NETS_MLP only: the dense nets (packed batcher, the
                                     dense training kernels and their test hooks) */
    ld_net_t layers[LD_MAX_NETS]; /* every architecture: the layer lists, same parameter
                                     offsets and tensor names (ld_nets_from_mlp for dense) */
    size_t n_params;
    float *params;      /* (n_params), owned */
    size_t n_bufs;
    float *buffers;     /* (n_bufs) running statistics, owned; NULL when n_bufs is 0 */
    ld_record_t record;
} ld_model_t;

/* Most tensors a model has (parameters and buffers). */
#define LD_MODEL_MAX_TENSORS 256

/* Net indices per kind. */
enum { LD_VAE_ENC = 0, LD_VAE_MU = 1, LD_VAE_LOGVAR = 2, LD_VAE_DEC = 3 };
enum { LD_GAN_G = 0, LD_GAN_D = 1 };
enum { LD_CLS_NET = 0 };

const char *ld_kind_name(ld_kind_t k);  /* "vae", "gan", "classifier", "cgan", "cvae" */
/* ld_kind_ops(k)->family, or 0 for a value that is no kind. */
ld_kind_t ld_kind_family(ld_kind_t k);
int ld_kind_parse(const char *s, ld_kind_t *out);

/* Defaults: VAE 784->128->64, z 20, decoder 20->64->128->784, leaky 0.2.
 * GAN (latentd's recipe): G 100->256->512->784 sigmoid, D 784->512->256->1, dropout 0.3.
 * Classifier: 784->256->128->10, dropout 0.2. */
void ld_arch_default(ld_kind_t kind, ld_arch_t *a);
/* The reference article's GAN: G 100->128->128->784, D 784->128->128->1, no dropout. */
void ld_arch_article_gan(ld_arch_t *a);
int ld_arch_validate(const ld_arch_t *a, ld_err_t *err);
/* a's kind with net architecture n and that architecture's default sizes
 * (resmlp: hidden lists of 256s); LD_EINVAL if n does not fit the kind. */
int ld_arch_set_net(ld_arch_t *a, ld_netarch_t n, ld_err_t *err);
/* Compact JSON, e.g. {"kind":"vae","image":[28,28],"z":20,"encoder":[128,64],...}. */
int ld_arch_to_json(const ld_arch_t *a, char *buf, size_t len);
int ld_arch_from_json(const char *json, ld_arch_t *a, ld_err_t *err);
/* One line for humans: "vae 784-128-64 z20 64-128-784 leaky_relu(0.2)". */
void ld_arch_describe(const ld_arch_t *a, char *buf, size_t len);

/* Allocate and initialise (PyTorch default init) from seed. *out owned by caller. */
int ld_model_new(const ld_arch_t *a, uint64_t seed, ld_model_t **out, ld_err_t *err);
/* Allocate with zeroed params (for loading). */
int ld_model_alloc(const ld_arch_t *a, ld_model_t **out, ld_err_t *err);
void ld_model_free(ld_model_t *m);

/* Named tensor views over any block with the params layout (params, grads,
 * moments). Returns the count written (<= max). Names as above.  block NULL:
 * names and shapes only (data NULL).  Parameters only; see below for buffers. */
int ld_model_tensors(const ld_model_t *m, const float *block, ld_tensor_view_t *out, int max);
/* Every tensor a checkpoint holds, in state_dict order: parameters over
 * m->params and buffers over m->buffers (num_batches_tracked as I64). */
int ld_model_tensors_all(const ld_model_t *m, ld_tensor_view_t *out, int max);
/* Layer tables of every net (ld_net_table), one after another, into buf;
 * returns the length needed (snprintf style). */
int ld_model_layer_table(const ld_model_t *m, char *buf, size_t len);

/* Build a model from a parsed checkpoint: architecture from __metadata__
 * ("latentd.arch") or, when absent, inferred from tensor names and shapes
 * (activation leaky ReLU 0.2, image side sqrt(x_dim)). Every required tensor
 * must be present with the right shape and finite values (checked before the
 * parameters are allocated); extra tensors are an error.  Metadata besides
 * format, kind and arch becomes the record and must fit it whole (keys under
 * 32 bytes, values under 256, at most LD_RECORD_MAX entries).  A job's
 * training state ("latentd-state/1") is refused: ld_model_describe reads it. */
int ld_model_from_ckpt(const ld_ckpt_t *c, ld_model_t **out, ld_err_t *err);
int ld_model_load(const char *path, ld_model_t **out, ld_err_t *err);
/* What the file at path holds, as lines of text for `latentd info` into buf
 * (len bytes): kind, architecture, parameter count and record of a model; a
 * job's training state ("latentd-state/1") also gets its step and the tensors
 * it holds (parameters and optimiser blocks).  LD_ENOMEM if buf is too small;
 * other errors as ld_model_load, naming path.  Thread-safe. */
int ld_model_describe(const char *path, char *buf, size_t len, ld_err_t *err);
/* Atomic write of params + metadata (kind, arch, record). */
int ld_model_save(const ld_model_t *m, const char *path, ld_err_t *err);

void ld_record_set(ld_record_t *r, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *ld_record_get(const ld_record_t *r, const char *key); /* NULL if absent */

/* ---- training passes over one net (vae.c, gan.c) ----
 * Net i of m runs through the dense kernel for LD_NETS_MLP (whose dropout
 * masks tests can preset: src/mlp_impl.h) and through its layer list
 * otherwise.  The scratch belongs to one thread. */
typedef struct {
    ld_mlp_ws_t mlp;   /* LD_NETS_MLP */
    ld_net_ws_t net;   /* other architectures */
} ld_pass_ws_t;

int ld_pass_ws_init(ld_pass_ws_t *ws, const ld_model_t *m, int i, int B); /* 0 or LD_ENOMEM */
void ld_pass_ws_free(ld_pass_ws_t *ws);  /* accepts zeroed */
/* x (b, in) -> the output (b, out), pointing into ws.  Dense: dropout masks
 * from rng, or masks when not NULL.  Layer list: run (NULL = eval mode). */
const float *ld_pass_forward(const ld_model_t *m, int i, ld_pass_ws_t *ws, int b, const float *x,
                             ld_rng_t *rng, const float *masks, const ld_net_run_t *run);
/* After ld_pass_forward on ws: grads += dL/dparams unless grads is NULL,
 * dx = dL/dx unless NULL. */
void ld_pass_backward(const ld_model_t *m, int i, float *grads, ld_pass_ws_t *ws, int b,
                      const float *dout, float *dx, const ld_net_run_t *run);
/* Width of one row of net i's output (C*H*W). */
int ld_net_width(const ld_model_t *m, int i);

/* ---- inference (reentrant) ---- */
/* z (n, z_dim) ~ N(0, temperature^2) from seed. */
void ld_model_draw_z(const ld_model_t *m, uint64_t seed, float temperature, int n, float *z);
/* z (n, z_dim) -> x (n, x_dim) in [0,1]: VAE sigmoid(decoder), GAN generator. */
int ld_model_decode(const ld_model_t *m, int n, const float *z, float *x, ld_err_t *err);
/* The same with a class label per row (n), which a conditional model needs
 * (LD_EINVAL without) and any other refuses (LD_EINVAL with); each label must
 * be below arch.n_classes (checked). */
int ld_model_decode_labels(const ld_model_t *m, int n, const float *z, const uint8_t *labels,
                           float *x, ld_err_t *err);
/* The label embedding of z's decode input, interpolated: rows of z (n, z_dim)
 * with label row (1-t) * weight[from] + t * weight[to] (cgan, cvae only). */
int ld_model_decode_mix(const ld_model_t *m, int n, const float *z, const uint8_t *from,
                        const uint8_t *to, const float *t, float *x, ld_err_t *err);
/* x (n, x_dim) -> mu, logvar (n, z_dim). VAE only (LD_EUNSUPPORTED otherwise). */
int ld_model_encode(const ld_model_t *m, int n, const float *x, float *mu, float *logvar,
                    ld_err_t *err);
/* The same with a label per row (a CVAE's encoder takes it; rules as
 * ld_model_decode_labels). */
int ld_model_encode_labels(const ld_model_t *m, int n, const float *x, const uint8_t *labels,
                           float *mu, float *logvar, ld_err_t *err);
/* Class k's name (from the record's "classes", a JSON array of names that
 * training stores for cgan and cvae; else the number) into buf. */
const char *ld_model_class_name(const ld_model_t *m, int k, char *buf, size_t len);
/* Class index of s (a name, or a number below arch.n_classes), or -1. */
int ld_model_class_parse(const ld_model_t *m, const char *s);
/* "0 t-shirt/top, 1 trouser, ..." into buf, for messages. */
void ld_model_class_list(const ld_model_t *m, char *buf, size_t len);
/* x (n, x_dim) -> logits (n, n_classes) and, if feat != NULL, the last hidden
 * activations (n, enc.size[enc.n-1]). Classifier only. */
int ld_model_classify(const ld_model_t *m, int n, const float *x, float *logits, float *feat,
                      ld_err_t *err);

#endif

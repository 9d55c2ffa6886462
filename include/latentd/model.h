/* model.h — the three model families behind one type: architecture, parameters,
 * checkpoint load/save, and inference.
 *
 *   VAE         nets: encoder (x -> h, act after every layer), mu (h -> z),
 *               logvar (h -> z), decoder (z -> x logits, act on hidden layers only).
 *               Bernoulli decoder: images are sigmoid(logits).
 *   GAN         nets: generator (z -> x, sigmoid output), discriminator (x -> 1 logit,
 *               dropout after each hidden activation while training).
 *   classifier  nets: classifier (x -> n_classes logits, dropout while training).
 *
 * Tensor names follow PyTorch nn.Linear, dense layers counted from 0:
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
#include "latentd/mlp.h"
#include "latentd/nn.h"

#define LD_MAX_NETS 4

typedef enum { LD_KIND_VAE = 1, LD_KIND_GAN = 2, LD_KIND_CLASSIFIER = 3 } ld_kind_t;

typedef struct {
    int n;                       /* number of hidden layers */
    int size[LD_MAX_HIDDEN];     /* their widths */
} ld_hidden_t;

typedef struct {
    ld_kind_t kind;
    int img_h, img_w;  /* image shape; x_dim = img_h * img_w */
    int x_dim;
    int z_dim;         /* VAE / GAN latent size */
    int n_classes;     /* classifier outputs */
    ld_hidden_t enc;   /* VAE encoder | GAN discriminator | classifier hidden widths */
    ld_hidden_t dec;   /* VAE decoder | GAN generator hidden widths */
    ld_act_t act;      /* hidden activation */
    float slope;       /* leaky ReLU slope, in [0,1) */
    float dropout;     /* GAN discriminator / classifier training dropout, in [0,1) */
} ld_arch_t;


/* The training record, stored as strings in the checkpoint's __metadata__. */
#define LD_RECORD_MAX 24
typedef struct {
    int n;
    char key[LD_RECORD_MAX][32];
    char val[LD_RECORD_MAX][256];
} ld_record_t;

typedef struct ld_model {
    ld_arch_t arch;
    int n_nets;
    ld_mlp_t nets[LD_MAX_NETS];
    size_t n_params;
    float *params;      /* (n_params), owned */
    ld_record_t record;
} ld_model_t;

/* Net indices per kind. */
enum { LD_VAE_ENC = 0, LD_VAE_MU = 1, LD_VAE_LOGVAR = 2, LD_VAE_DEC = 3 };
enum { LD_GAN_G = 0, LD_GAN_D = 1 };
enum { LD_CLS_NET = 0 };

const char *ld_kind_name(ld_kind_t k);  /* "vae", "gan", "classifier" */
int ld_kind_parse(const char *s, ld_kind_t *out);

/* Defaults: VAE 784->128->64, z 20, decoder 20->64->128->784, leaky 0.2.
 * GAN (latentd's recipe): G 100->256->512->784 sigmoid, D 784->512->256->1, dropout 0.3.
 * Classifier: 784->256->128->10, dropout 0.2. */
void ld_arch_default(ld_kind_t kind, ld_arch_t *a);
/* The reference article's GAN: G 100->128->128->784, D 784->128->128->1, no dropout. */
void ld_arch_article_gan(ld_arch_t *a);
int ld_arch_validate(const ld_arch_t *a, ld_err_t *err);
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
 * names and shapes only (data NULL). */
int ld_model_tensors(const ld_model_t *m, const float *block, ld_tensor_view_t *out, int max);

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

/* ---- inference (reentrant) ---- */
/* z (n, z_dim) ~ N(0, temperature^2) from seed. */
void ld_model_draw_z(const ld_model_t *m, uint64_t seed, float temperature, int n, float *z);
/* z (n, z_dim) -> x (n, x_dim) in [0,1]: VAE sigmoid(decoder), GAN generator. */
int ld_model_decode(const ld_model_t *m, int n, const float *z, float *x, ld_err_t *err);
/* x (n, x_dim) -> mu, logvar (n, z_dim). VAE only (LD_EUNSUPPORTED otherwise). */
int ld_model_encode(const ld_model_t *m, int n, const float *x, float *mu, float *logvar,
                    ld_err_t *err);
/* x (n, x_dim) -> logits (n, n_classes) and, if feat != NULL, the last hidden
 * activations (n, enc.size[enc.n-1]). Classifier only. */
int ld_model_classify(const ld_model_t *m, int n, const float *x, float *logits, float *feat,
                      ld_err_t *err);

#endif

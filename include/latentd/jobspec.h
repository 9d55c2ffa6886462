/* jobspec.h — a training job's specification: parse and validate the JSON body
 * of POST /v1/jobs, print it back in normal form, and resolve its data set.
 *
 * The JSON (every field but kind and model optional; defaults are the
 * `latentd train` defaults of the kind):
 *
 *   {"kind": "vae" | "gan",
 *    "model": NAME,                      served name; file {NAME}.safetensors
 *    "data": "fashion-mnist" | NAME,     NAME = a data set inside data_dir
 *    "limit": N,                         first N examples; 0 = all (default)
 *    "arch": {"arch": "default" | "article",          GAN only
 *             "hidden": [128, 64],                    VAE encoder widths
 *             "dec_hidden": [64, 128],                VAE decoder (default: hidden reversed)
 *             "g_hidden": [...], "d_hidden": [...],   GAN generator / discriminator
 *             "z": 20, "act": "leaky_relu" | "relu" | "tanh" | "sigmoid",
 *             "slope": 0.2, "dropout": 0.3},          dropout: GAN only
 *    "train": {"epochs", "batch", "lr", "seed", "beta1", "beta2",
 *              "kl_beta" (VAE), "lr_d", "loss": "ns" | "minimax", "real_label" (GAN)},
 *    "checkpoint_every": STEPS,          0 = only when stopped; default from the engine
 *    "ranks": K,                         1 (default): trains in the daemon; 2..: as K MPI
 *                                        ranks started by the configured launcher (jobs.h)
 *    "eval_n": N,                        evaluation at each checkpoint (jobs.h eval_history):
 *                                        GAN samples / VAE test images; 2000, 0 = off
 *    "eval_classifier": NAME}            MODELS/NAME.safetensors scores GAN samples
 *                                        ("fashion-classifier")
 *
 * Status codes (the HTTP layer maps them):
 *   LD_EFORMAT  (400) not JSON, trailing bytes, not an object, unknown or
 *               duplicate field, wrong type (string for a number, 1.5 for an
 *               integer...), missing kind or model.
 *   LD_EINVAL   (422) a value out of range or above a cap, an unknown enum
 *               word, a bad model name, a data set that is not allowed or not
 *               present, a field that does not apply to the kind.
 * Every message starts with the field's dotted path ("train.epochs: ...").
 *
 * Units and ranges: widths 1..min(LD_MAX_WIDTH, caps.max_hidden_width),
 * 0..LD_MAX_HIDDEN layers (the VAE encoder at least 1); z 1..min(1024, max_z);
 * epochs 1..min(100000, max_epochs); batch 1..min(65536, max_batch);
 * limit 0..min(1e9, max_limit); lr, lr_d in (0,1]; beta1, beta2, slope in [0,1);
 * dropout in [0,0.95]; kl_beta in [0,1000]; real_label in (0,1]; seed an integer
 * in 0..2^53; checkpoint_every 0..1e9; ranks 1..64 and at most batch.  A cap of 0 means "no cap beyond the
 * absolute bound".  When caps.max_limit > 0, an absent or zero limit becomes
 * max_limit (so the cap also bounds "all examples").  When caps.max_job_bytes
 * > 0, a spec whose memory estimate (ld_jobspec_bytes, 28x28 images) is above
 * it is refused with LD_EINVAL; the engine checks again with the data set's
 * real image size before training.
 *
 * Thread-safety: all functions are reentrant.
 */
#ifndef LATENTD_JOBSPEC_H
#define LATENTD_JOBSPEC_H

#include "latentd/common.h"
#include "latentd/invert.h"
#include "latentd/model.h"
#include "latentd/train.h"

/* Upper bounds set by the daemon's configuration. 0 = the absolute bound. */
typedef struct {
    int max_epochs;
    int max_batch;
    int max_hidden_width;
    int max_z;
    int max_limit;
    long long max_job_bytes; /* the memory estimate of ld_jobspec_bytes; 0 = no cap */
} ld_jobs_caps_t;

#define LD_JOBSPEC_MAX_RANKS 64
#define LD_JOBSPEC_NAME_MAX 65 /* ld_name_is_safe names are at most 64 bytes */

/* An inversion job (jobs.h, ld_jobs_submit_invert): its images are a file
 * in the job's folder, not part of the spec.  Normal form:
 *   {"kind":"invert","model":NAME,"file":FILE,"images":N,"steps","restarts",
 *    "seed","lr","z_penalty"}
 * (FILE: the model's file in the model folder, read when the job runs)
 * which ld_jobspec_parse reads back (job recovery) and POST /v1/jobs
 * refuses. */
typedef struct {
    char file[128];                    /* the GAN's file name in the model folder */
    int images;                        /* how many, 1..LD_INVERT_MAX_ROWS */
    ld_invert_opts_t opts;
} ld_jobspec_invert_t;

/* An evaluation job (jobs.h, ld_jobs_submit_evaluate): the quality measures
 * of eval.h on a served model's file.  Normal form:
 *   {"kind":"evaluate","model":NAME,"file":FILE,"classifier":NAME,
 *    "classifier_file":FILE,"data":DATA,"n":N,"k":K,"seed":S}
 * which ld_jobspec_parse reads back (job recovery) and POST /v1/jobs
 * refuses. */
#define LD_EVAL_N_MAX 50000  /* samples of an evaluation */
#define LD_JOBSPEC_EVAL_N_DEFAULT 2000
#define LD_JOBSPEC_EVAL_CLASSIFIER_DEFAULT "fashion-classifier"
#define LD_EVAL_K_MAX 1000   /* IWAE samples per test image */
typedef struct {
    char file[128];                    /* the model's file name in the model folder */
    char classifier[LD_JOBSPEC_NAME_MAX];
    char classifier_file[128];         /* the classifier's file in the model folder */
    int n;                             /* samples drawn, LD_EVAL_PRC_K+1..LD_EVAL_N_MAX */
    int k;                             /* IWAE samples per image (VAE), 1..LD_EVAL_K_MAX */
    uint64_t seed;
} ld_jobspec_eval_t;

typedef struct {
    int invert;                        /* an inversion job: only model and inv apply */
    ld_jobspec_invert_t inv;
    int evaluate;                      /* an evaluation job: only model, data and ev apply */
    ld_jobspec_eval_t ev;
    ld_kind_t kind;                    /* LD_KIND_VAE or LD_KIND_GAN (GAN for invert) */
    char model[LD_JOBSPEC_NAME_MAX];
    char data[LD_JOBSPEC_NAME_MAX];    /* "fashion-mnist" or a name inside data_dir */
    int limit;                         /* 0 = all examples */
    int article;                       /* GAN: arch "article" preset */
    ld_arch_t arch;                    /* image shape 28x28 until the data set is known */
    ld_train_opts_t train;             /* state_path empty; checkpoint_every as below */
    int ranks;                         /* MPI ranks, 1..LD_JOBSPEC_MAX_RANKS, <= train.batch */
    /* Evaluation at each checkpoint (jobs.h, eval_history): "eval_n" samples
     * (GAN) or test images (VAE), 0 = off; "eval_classifier" the classifier
     * file MODELS/NAME.safetensors that scores a GAN's samples. */
    int eval_n;
    char eval_classifier[LD_JOBSPEC_NAME_MAX];
} ld_jobspec_t;

/* Parse and validate body[0..len) (need not be NUL-terminated).  caps may be
 * NULL (absolute bounds only).  checkpoint_every_default fills an absent
 * "checkpoint_every".  On error *out is unspecified and err names the field. */
int ld_jobspec_parse(const char *body, size_t len, const ld_jobs_caps_t *caps,
                     long checkpoint_every_default, ld_jobspec_t *out, ld_err_t *err);

/* "invert" or "evaluate" for those jobs, else the model kind's name. */
const char *ld_jobspec_kind_name(const ld_jobspec_t *s);

/* The spec in normal form: every field present ("ranks" only when above 1), fixed order, numbers in their
 * shortest round-trip form.  Parsing it gives back the same spec.  Returns a
 * malloc'd string (caller frees) or NULL when out of memory. */
char *ld_jobspec_to_json(const ld_jobspec_t *s);

/* What a job's training holds in memory, in bytes, computed from its
 * architecture and options alone (before anything is allocated): the
 * parameters; the optimiser state (gradients, one more set per extra training
 * thread, Adam's two moments, the GAN generator's average); the activations
 * of a batch in every layer, with their gradients. */
typedef struct {
    double params, optimiser, activations, total;
} ld_job_bytes_t;
void ld_jobspec_bytes(const ld_arch_t *arch, const ld_train_opts_t *o, ld_job_bytes_t *out);

/* LD_OK when max_bytes is 0 or the estimate of ld_jobspec_bytes fits in it;
 * otherwise LD_EINVAL with a message giving the estimate, its parts and the
 * limit (max_job_bytes). */
int ld_jobspec_check_bytes(const ld_arch_t *arch, const ld_train_opts_t *o, long long max_bytes,
                           ld_err_t *err);

/* Resolve spec "data" to what ld_data_load takes: "fashion-mnist" as is; a
 * NAME (ld_name_is_safe) to realpath(data_dir/NAME), which must exist and stay
 * inside realpath(data_dir) (so a symlink out of the folder is refused).
 * Anything else (a slash, "..", an absolute path, an empty data_dir) is
 * refused with LD_EINVAL and a message naming "data".  path gets up to len
 * bytes. */
int ld_jobspec_resolve_data(const char *data_dir, const char *data, char *path, size_t len,
                            ld_err_t *err);

#endif

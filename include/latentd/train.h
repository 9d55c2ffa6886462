/* train.h — the one training loop, used by `latentd train` and by daemon jobs.
 *
 * A trainer owns the optimiser state (gradients, optimiser moments), the random
 * streams and its workspaces; it borrows the model (mutated in place) and the
 * data set (read-only).  One trainer runs on one thread; several trainers may
 * run at once on different models.
 *
 * Determinism: same seed, data, options and thread counts => bit-identical
 * weights and losses.  Two streams are derived from the seed: one shuffles each
 * epoch, one seeds, at every step, each worker's own noise stream (VAE eps,
 * GAN z, dropout masks).
 *
 * Threads: with opts.threads = T > 1 the trainer keeps T-1 helper threads; each
 * step splits the batch into T contiguous slices, every worker runs forward and
 * backward on its slice into its own gradient block, then every worker reduces
 * one slice of the parameters across the blocks and applies the optimiser
 * (optim.h) to it.  The
 * helper threads live as long as the trainer.
 *
 * MPI ranks (dist.h): under mpirun every rank runs this loop on the same data
 * and seed; the batch is cut into one slice per worker of every rank, the
 * gradients are summed over ranks before the optimiser, rank 0's initial weights are
 * broadcast, and only rank 0 writes state.  K ranks of T threads compute what
 * one process of K*T threads computes (same slices, same noise streams), and
 * a state file from one resumes in the other.
 *
 * Resume: ld_trainer_save_state writes one safetensors file holding the model,
 * the generator average (GAN with g_ema), both optimiser moments (SGD's momentum
 * buffer in the first) and the counters and random states (as metadata), written
 * atomically; ld_trainer_load_state restores all of it so that the run goes on
 * exactly as if it had not stopped.
 */
#ifndef LATENTD_TRAIN_H
#define LATENTD_TRAIN_H

#include "latentd/balance.h"
#include "latentd/data.h"
#include "latentd/gan.h"
#include "latentd/model.h"
#include "latentd/optim.h"

#include <stdatomic.h>

typedef struct {
    int epochs;             /* 1.. */
    int batch;              /* 1.. */
    uint64_t seed;
    ld_adam_cfg_t adam;     /* VAE, classifier; GAN generator */
    ld_adam_cfg_t adam_d;   /* GAN discriminator */
    ld_optim_cfg_t optim;   /* the optimiser, penalties and schedule of every net (optim.h);
                               the schedule runs over epochs * steps per epoch updates */
    float kl_beta;          /* VAE: weight of the KL term (1 = the ELBO) */
    ld_gan_loss_t gan_loss; /* GAN: the loss of both nets (gan.h); set it with ld_train_set_loss */
    int n_critic;           /* GAN: discriminator (critic) steps per generator step, 1.. (the
                               step's batch each; wgan-gp 5, else 1) */
    float gp;               /* wgan-gp: gradient-penalty weight, >= 0 (10) */
    float real_label;       /* GAN: target for real images (1 = none, 0.9 = one-sided smoothing) */
    float g_ema;            /* GAN: decay of an exponential moving average of the generator's
                               weights, which becomes the saved generator (0 = off); the
                               decay at step t is min(g_ema, (1+t)/(10+t)) */
    int threads;            /* data-parallel workers per step, 1..16 (each takes a slice of
                               the batch; OpenBLAS should then run single-threaded) */
    long checkpoint_every;  /* steps between state checkpoints; 0 = none during the run */
    char state_path[4096];  /* where state checkpoints go; "" = nowhere */
    const atomic_int *abandon; /* once nonzero, the step in progress is abandoned (nn.h)
                               and the run returns LD_ECANCELLED without writing state:
                               the last periodic checkpoint stays.  NULL = steps always
                               finish, and a stop (the callback) writes state */
    ld_class_fraction_t class_fraction; /* classes cut to a fraction of their rows (balance.h) */
    ld_balance_t balance;   /* imbalance remedy (balance.h); weight: VAE and classifier */
} ld_train_opts_t;

/* The recipe latentd uses by default for each kind (see README). */
void ld_train_opts_default(ld_kind_t kind, ld_train_opts_t *o);
int ld_train_opts_validate(const ld_train_opts_t *o, ld_err_t *err);
/* Whether o's class fraction and balance fit kind and data set d
 * (ld_balance_check; weight is for vae and classifier): LD_EINVAL with the
 * reason.  ld_trainer_new checks this too; the CLI calls it first to tell
 * bad flags (exit 2) from failed runs. */
int ld_train_balance_check(ld_kind_t kind, const ld_dataset_t *d, const ld_train_opts_t *o,
                           ld_err_t *err);

/* Set o's GAN loss with that loss's defaults: wgan-gp sets Adam lr 1e-4 and
 * betas (0, 0.9) for both nets, n_critic 5 and gp 10; the others Adam 2e-4,
 * betas (0.5, 0.999) and n_critic 1.  For GAN kinds only.  Call it before
 * applying explicit settings, which then win. */
void ld_train_set_loss(ld_train_opts_t *o, ld_gan_loss_t loss);
/* The checks that need the model's nets (the critic of wgan-gp: gp.h), for
 * callers that must refuse before queueing or writing anything.  0 or
 * LD_EINVAL with a message. */
int ld_train_check_arch(const ld_arch_t *a, const ld_train_opts_t *o, ld_err_t *err);

/* The named recipes, the one place both `latentd train --arch` and a job's
 * "arch": {"arch": ...} read them: "default" (or NULL) is ld_arch_default +
 * ld_train_opts_default (kind gan: the wgan-gp loss);
 * "article" (GAN only) is ld_arch_article_gan with the article's plain
 * training (ns loss, no label smoothing, no generator average); the
 * layer-list nets of kind gan train with the ns loss.
 * LD_EINVAL with a message naming the preset for another name or kind. */
int ld_train_recipe(ld_kind_t kind, const char *preset, ld_arch_t *arch, ld_train_opts_t *o,
                    ld_err_t *err);
/* The VAE decoder's default once the encoder widths are given: the encoder's
 * widths reversed. */
void ld_train_mirror_decoder(ld_arch_t *a);

#define LD_MAX_LOSSES 4
/* The names of the losses a kind's trainer reports, in ld_progress_t.loss
 * order (static strings); returns their count. */
int ld_train_loss_names(ld_kind_t kind, const char *const **names);
typedef struct {
    int epoch, epochs;       /* epoch is 1-based while running */
    long step, steps_total;  /* optimiser steps done / planned */
    double samples_per_s;    /* over this run so far */
    double eta_s;
    double elapsed_s;
    int n_losses;
    const char *loss_names[LD_MAX_LOSSES];
    double loss[LD_MAX_LOSSES];  /* running means over the current epoch */
    int epoch_done;          /* this call closes an epoch */
    int finished;            /* this call closes the run */
} ld_progress_t;

/* Called after every step. Return nonzero to stop the run (ld_trainer_run then
 * returns LD_ECANCELLED after saving state if a state_path is set). */
typedef int (*ld_progress_fn)(const ld_progress_t *p, void *user);

typedef struct ld_trainer ld_trainer_t;

/* m and d are borrowed and must outlive the trainer. */
int ld_trainer_new(ld_model_t *m, const ld_dataset_t *d, const ld_train_opts_t *o,
                   ld_trainer_t **out, ld_err_t *err);
void ld_trainer_free(ld_trainer_t *t);

/* Train to the end (or until cb asks to stop). Writes the training record into
 * the model (data, epochs, seed, final losses, timestamps...). */
int ld_trainer_run(ld_trainer_t *t, ld_progress_fn cb, void *user, ld_err_t *err);

int ld_trainer_save_state(const ld_trainer_t *t, const char *path, ld_err_t *err);
/* Load a state file written for the same architecture and options. */
int ld_trainer_load_state(ld_trainer_t *t, const char *path, ld_err_t *err);

/* Floating-point operations of one training example's step (forward and
 * backward GEMMs), for reporting achieved GFLOP/s. */
double ld_train_flops_per_sample(const ld_model_t *m);

/* The examples one epoch covers: the data set's, less what a class fraction
 * cut. */
int ld_trainer_examples(const ld_trainer_t *t);

/* The progress as of now (for status queries from the owning thread). */
void ld_trainer_progress(const ld_trainer_t *t, ld_progress_t *p);

#endif

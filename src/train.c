/* train.c — the training loop shared by the CLI and daemon jobs. See train.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/train.h"

#include "latentd/allreduce.h"
#include "latentd/ckpt.h"
#include "latentd/classifier.h"
#include "latentd/dist.h"
#include "latentd/gp.h"
#include "latentd/vae.h"

#include <inttypes.h>
#include <pthread.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define MAX_THREADS 16

/* One data-parallel worker: a slice of each batch, its own gradient block,
 * workspace and noise stream.  Worker 0 runs on the caller's thread. */
typedef struct {
    struct ld_trainer *t;
    int id;
    pthread_t th;
    float *grads;            /* (n_params); worker 0's is t->grads */
    ld_vae_ws_t vae;
    ld_gan_ws_t gan;
    ld_mlp_ws_t cls;
    ld_net_run_t run;        /* layer lists: this step's training run (vae.run, gan.run) */
    float *dlogits;          /* (chunk, C) classifier scratch */
    ld_rng_t rng;            /* reseeded from t->noise every step */
    int lo, b;               /* this step's rows: xb[lo .. lo+b) */
    double losses[LD_MAX_LOSSES]; /* slice means */
} worker_t;

typedef void (*phase_fn)(worker_t *w);

struct ld_trainer {
    ld_model_t *m;               /* borrowed, mutated */
    const ld_dataset_t *d;       /* borrowed */
    ld_train_opts_t o;
    float *grads, *adam_m, *adam_v; /* (n_params) each, one allocation */
    float *ema;                  /* (n_params) generator average (GAN with g_ema > 0), or NULL;
                                    only the generator's range is used */
    long t;                      /* optimiser steps done */
    int epoch;                   /* 0-based epoch in progress */
    int batch_idx;               /* next batch of this epoch */
    int steps_per_epoch;
    ld_rng_t shuffle_start;      /* shuffle stream as it was before this epoch's shuffle */
    ld_rng_t shuffle, noise;
    int *perm;                   /* (n) this epoch's order */
    float *xb;                   /* (B, X) gathered batch: each worker gathers its rows */
    int batch_lo;                /* the batch is perm[batch_lo .. batch_lo + b) */
    ld_rng_t noise_step;         /* this step's stream for noise_all */
    float *noise_all;            /* (B, Z) the batch's eps or z, drawn whole so that every
                                    thread count trains on the same numbers */
    float *gp_eps;               /* (B) wgan-gp: the batch's interpolation weights, likewise */
    ld_allreduce_t *ar;          /* batch norm's whole-batch sums across the workers */
    uint8_t *yb;                 /* (B) its labels */
    ld_balance_plan_t *plan;     /* the rows this run trains on, and its remedy */
    float *row_s;                /* (B) weight: per-row loss factors of this batch, or NULL */
    float *aug_tmp;              /* (X) augment scratch */
    int b;                       /* rows in the current batch */
    double loss_sum[LD_MAX_LOSSES]; /* this epoch: sum of (batch mean * b) */
    long loss_n;                 /* this epoch: samples */
    double run_start;            /* ld_now() when this run began */
    long run_samples;            /* samples processed in this run */
    long run_step0;              /* t when this run began */
    char started[32];
    /* the worker pool: lock order is just pool_mu */
    int nw;
    worker_t w[MAX_THREADS];
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_go, pool_done;
    phase_fn phase;              /* what the workers run now */
    atomic_long gen;             /* bumped for every phase (written under pool_mu; polled) */
    atomic_int pending;          /* helpers still running the phase (likewise) */
    int spin;                    /* poll before sleeping at a phase boundary (spin_until) */
    int quit;
    int pass;                    /* MPI: which half of an update phase runs (PASS_*) */
    unsigned clean;              /* GRADS_* ranges that every worker's gradient block holds as
                                    zeros (the update that consumed them zeroed them) */
};

/* The parameter ranges a step's phases fill and its updates consume. */
enum { GRADS_ALL = 1, GRADS_D = 2, GRADS_G = 4 };

/* With MPI ranks an update phase runs twice, around the sum over ranks. */
enum { PASS_BOTH, PASS_REDUCE, PASS_ADAM };

int ld_train_loss_names(ld_kind_t k, const char *const **names)
{
    const ld_kind_ops_t *ops = ld_kind_ops(k) ? ld_kind_ops(k) : ld_kind_ops(LD_KIND_CLASSIFIER);
    *names = ops->loss_names;
    return ops->n_losses;
}

int ld_train_recipe(ld_kind_t kind, const char *preset, ld_arch_t *arch, ld_train_opts_t *o,
                    ld_err_t *err)
{
    int article = preset && strcmp(preset, "article") == 0;
    ld_netarch_t net = LD_NETS_MLP;
    if (preset && !article && strcmp(preset, "default") &&
        (ld_netarch_parse(preset, &net) || net == LD_NETS_MLP))
        return ld_err_set(err, LD_EINVAL,
                          "\"%.40s\" is not default, article, dcgan, conv or resmlp", preset);
    if (article && kind != LD_KIND_GAN)
        return ld_err_set(err, LD_EINVAL, "\"article\" applies to kind \"gan\" only");
    if (article)
        ld_arch_article_gan(arch);
    else
        ld_arch_default(kind, arch);
    ld_train_opts_default(kind, o);
    if (kind == LD_KIND_GAN && (article || net != LD_NETS_MLP))
        ld_train_set_loss(o, LD_GAN_LOSS_NS); /* their figures were measured with ns */
    if (article) {
        o->real_label = 1.0f;
        o->g_ema = 0.0f;
    }
    if (net != LD_NETS_MLP) {
        /* the generator average would not carry batch norm's running statistics */
        o->g_ema = 0.0f;
        /* the conv VAE gets more from its ten epochs with twice the updates,
         * a higher rate and the rate annealed to 0, for about the same cost
         * a sample (docs/layers.md, "Conv VAE quality") */
        if (net == LD_NETS_CONV) {
            o->batch = 64;
            o->adam.lr = o->adam_d.lr = 3e-3f;
            o->optim.schedule = LD_SCHED_COSINE;
        }
        return ld_arch_set_net(arch, net, err);
    }
    return LD_OK;
}

void ld_train_mirror_decoder(ld_arch_t *a)
{
    a->dec.n = a->enc.n;
    for (int i = 0; i < a->enc.n; i++)
        a->dec.size[i] = a->enc.size[a->enc.n - 1 - i];
}

void ld_train_opts_default(ld_kind_t kind, ld_train_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 10;
    o->batch = 128;
    o->seed = 1;
    o->adam = (ld_adam_cfg_t){1e-3f, 0.9f, 0.999f, 1e-8f};
    o->adam_d = o->adam;
    o->kl_beta = 1.0f;
    o->gan_loss = LD_GAN_LOSS_NS;
    o->n_critic = 1;
    o->gp = 10.0f;
    o->real_label = 1.0f;
    o->threads = 1;
    o->optim.lr_gamma = 0.1f; /* torch's StepLR default */
    if (ld_kind_family(kind) == LD_KIND_GAN) {
        o->epochs = 20;
        o->batch = 64;
        o->adam = (ld_adam_cfg_t){2e-4f, 0.5f, 0.999f, 1e-8f};
        o->adam_d = o->adam;
        o->real_label = 0.9f;
        o->g_ema = 0.999f;
    }
    if (kind == LD_KIND_GAN) /* the best unconditional recipe (README: quality) */
        ld_train_set_loss(o, LD_GAN_LOSS_WGAN_GP);
}

void ld_train_set_loss(ld_train_opts_t *o, ld_gan_loss_t loss)
{
    o->gan_loss = loss;
    o->n_critic = 1;
    o->adam.lr = o->adam_d.lr = 2e-4f; /* the GAN recipe's Adam (ld_train_opts_default) */
    o->adam.beta1 = o->adam_d.beta1 = 0.5f;
    o->adam.beta2 = o->adam_d.beta2 = 0.999f;
    if (loss == LD_GAN_LOSS_WGAN_GP) {
        /* Gulrajani et al.'s recipe: no momentum, a short second moment */
        o->adam.lr = o->adam_d.lr = 1e-4f;
        o->adam.beta1 = o->adam_d.beta1 = 0.0f;
        o->adam.beta2 = o->adam_d.beta2 = 0.9f;
        o->n_critic = 5;
        o->gp = 10.0f;
    }
}

int ld_train_check_arch(const ld_arch_t *a, const ld_train_opts_t *o, ld_err_t *err)
{
    if (ld_kind_family(a->kind) != LD_KIND_GAN || o->gan_loss != LD_GAN_LOSS_WGAN_GP)
        return LD_OK;
    ld_model_t *m;
    int rc = ld_model_alloc(a, &m, err);
    if (rc)
        return rc;
    rc = ld_gan_check_loss(m, o->gan_loss, err);
    ld_model_free(m);
    return rc;
}

static int check_adam(const ld_adam_cfg_t *a, const char *who, ld_err_t *err)
{
    if (!(a->lr > 0 && a->lr <= 1))
        return ld_err_set(err, LD_EINVAL, "%s learning rate %g is outside (0,1]", who, (double)a->lr);
    if (!(a->beta1 >= 0 && a->beta1 < 1) || !(a->beta2 >= 0 && a->beta2 < 1))
        return ld_err_set(err, LD_EINVAL, "%s betas must be in [0,1)", who);
    if (!(a->eps > 0 && a->eps < 1))
        return ld_err_set(err, LD_EINVAL, "%s eps %g is outside (0,1)", who, (double)a->eps);
    return LD_OK;
}

int ld_train_opts_validate(const ld_train_opts_t *o, ld_err_t *err)
{
    if (o->epochs < 1 || o->epochs > 100000)
        return ld_err_set(err, LD_EINVAL, "epochs %d is outside 1..100000", o->epochs);
    if (o->batch < 1 || o->batch > 65536)
        return ld_err_set(err, LD_EINVAL, "batch %d is outside 1..65536", o->batch);
    if (!(o->kl_beta >= 0 && o->kl_beta <= 1000))
        return ld_err_set(err, LD_EINVAL, "kl beta %g is outside [0,1000]", (double)o->kl_beta);
    if (!(o->real_label > 0 && o->real_label <= 1))
        return ld_err_set(err, LD_EINVAL, "real label %g is outside (0,1]", (double)o->real_label);
    if (!(o->g_ema >= 0 && o->g_ema < 1))
        return ld_err_set(err, LD_EINVAL, "generator EMA decay %g is outside [0,1)", (double)o->g_ema);
    if (o->threads < 0 || o->threads > MAX_THREADS)
        return ld_err_set(err, LD_EINVAL, "threads %d is outside 1..%d", o->threads, MAX_THREADS);
    if (o->checkpoint_every < 0)
        return ld_err_set(err, LD_EINVAL, "checkpoint_every must be >= 0");
    if ((int)o->balance < LD_BALANCE_NONE || o->balance > LD_BALANCE_AUGMENT)
        return ld_err_set(err, LD_EINVAL, "balance %d is not none, resample, weight or augment",
                          (int)o->balance);
    if (o->gan_loss < 0 || o->gan_loss >= LD_GAN_LOSS_N)
        return ld_err_set(err, LD_EINVAL, "GAN loss %d is not " LD_GAN_LOSS_LIST, (int)o->gan_loss);
    if (o->n_critic < 1 || o->n_critic > 100)
        return ld_err_set(err, LD_EINVAL, "n_critic %d is outside 1..100", o->n_critic);
    if (!(o->gp >= 0 && o->gp <= 1e6))
        return ld_err_set(err, LD_EINVAL, "gp %g is outside [0,1e6]", (double)o->gp);
    int rc = check_adam(&o->adam, "", err);
    rc = rc ? rc : check_adam(&o->adam_d, "discriminator", err);
    return rc ? rc : ld_optim_validate(&o->optim, err);
}

int ld_train_balance_check(ld_kind_t kind, const ld_dataset_t *d, const ld_train_opts_t *o,
                           ld_err_t *err)
{
    if (o->balance == LD_BALANCE_WEIGHT && kind == LD_KIND_GAN)
        return ld_err_set(err, LD_EINVAL, "balance weight applies to vae, cvae, classifier and "
                          "cgan, not gan (it has no labels to weight)");
    return ld_balance_check(d, &o->class_fraction, o->balance, err);
}

/* ---- the worker pool ---- */

/* How long a thread polls for the hand-over at a phase boundary before it
 * sleeps on the condition variable.  Phases follow each other closely, and a
 * sleeping thread pays for its wake-up on every boundary (dearly on a
 * virtual machine, whose idle CPUs halt); polling covers the usual gap.
 * Only threads that are not background (ld_yield_background: their CPU
 * belongs to serving), in pools no larger than the machine and without MPI
 * ranks (which may share its cores), poll. */
#define SPIN_S 100e-6

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int next_phase(const ld_trainer_t *t, long seen) { return atomic_load(&t->gen) != seen; }
static int helpers_done(const ld_trainer_t *t, long unused) { return atomic_load(&t->pending) == 0; }

/* Poll done(t, arg) for up to SPIN_S; the caller then checks under the lock
 * (and sleeps if need be), so giving up early is always safe. */
static void spin_until(const ld_trainer_t *t, int (*done)(const ld_trainer_t *, long), long arg)
{
    if (!t->spin || ld_yield_background())
        return;
    double end = ld_now() + SPIN_S;
    for (unsigned i = 1; !done(t, arg); i++) {
        if (i % 64 == 0 && ld_now() > end)
            return;
        cpu_relax();
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    ld_trainer_t *t = w->t;
    long seen = 0;
    ld_step_abandon_flag(t->o.abandon);
    for (;;) {
        spin_until(t, next_phase, seen);
        pthread_mutex_lock(&t->pool_mu);
        while (!t->quit && t->gen == seen)
            pthread_cond_wait(&t->pool_go, &t->pool_mu);
        if (t->quit)
            break;
        seen = t->gen;
        phase_fn fn = t->phase;
        pthread_mutex_unlock(&t->pool_mu);
        fn(w);
        pthread_mutex_lock(&t->pool_mu);
        if (--t->pending == 0)
            pthread_cond_signal(&t->pool_done);
        pthread_mutex_unlock(&t->pool_mu);
    }
    pthread_mutex_unlock(&t->pool_mu);
    return NULL;
}

/* Run fn on every worker (worker 0 on this thread) and wait for all. */
static void run_phase(ld_trainer_t *t, phase_fn fn)
{
    if (t->nw > 1) {
        pthread_mutex_lock(&t->pool_mu);
        t->phase = fn;
        t->pending = t->nw - 1;
        t->gen++;
        pthread_cond_broadcast(&t->pool_go);
        pthread_mutex_unlock(&t->pool_mu);
    }
    fn(&t->w[0]);
    if (t->nw > 1) {
        spin_until(t, helpers_done, 0);
        pthread_mutex_lock(&t->pool_mu);
        while (t->pending > 0)
            pthread_cond_wait(&t->pool_done, &t->pool_mu);
        pthread_mutex_unlock(&t->pool_mu);
    }
}

static void worker_free(worker_t *w)
{
    if (w->id > 0)
        free(w->grads);
    free(w->dlogits);
    if (w->vae.mem)
        ld_vae_ws_free(&w->vae);
    if (w->gan.mem)
        ld_gan_ws_free(&w->gan);
    ld_mlp_ws_free(&w->cls);
}

/* The D step's loss settings of a worker's GAN workspace. */
static int gan_ws_loss(ld_trainer_t *t, worker_t *w)
{
    w->gan.loss = t->o.gan_loss;
    w->gan.gp = t->o.gp;
    if (t->o.gan_loss != LD_GAN_LOSS_WGAN_GP)
        return LD_OK;
    return ld_gan_ws_init_gp(&w->gan, t->m);
}

static int worker_init(ld_trainer_t *t, worker_t *w, int id, int chunk)
{
    const ld_model_t *m = t->m;
    const ld_arch_t *a = &m->arch;
    w->t = t;
    w->id = id;
    w->grads = id == 0 ? t->grads : ld_malloc_array(m->n_params, sizeof(float));
    w->dlogits = ld_malloc_array((size_t)chunk * (a->n_classes > 0 ? a->n_classes : 1),
                                 sizeof(float));
    if (!w->grads || !w->dlogits)
        return LD_ENOMEM;
    w->run = (ld_net_run_t){.training = 1, .rng = &w->rng, .ar = t->ar, .rank = id,
                            .update = id == 0 ? t->m->buffers : NULL};
    ld_kind_t fam = m->ops->family;
    int rc = fam == LD_KIND_VAE   ? ld_vae_ws_init(&w->vae, m, chunk)
             : fam == LD_KIND_GAN ? ld_gan_ws_init(&w->gan, m, chunk)
                                      : ld_mlp_ws_init(&w->cls, &m->nets[LD_CLS_NET], chunk, 1);
    w->vae.run = w->gan.run = &w->run;
    if (!rc && fam == LD_KIND_GAN)
        rc = gan_ws_loss(t, w);
    return rc;
}

void ld_trainer_free(ld_trainer_t *t)
{
    if (!t)
        return;
    if (t->nw > 1) {
        pthread_mutex_lock(&t->pool_mu);
        t->quit = 1;
        pthread_cond_broadcast(&t->pool_go);
        pthread_mutex_unlock(&t->pool_mu);
        for (int i = 1; i < t->nw; i++)
            pthread_join(t->w[i].th, NULL);
    }
    for (int i = 0; i < MAX_THREADS; i++)
        worker_free(&t->w[i]);
    pthread_mutex_destroy(&t->pool_mu);
    pthread_cond_destroy(&t->pool_go);
    pthread_cond_destroy(&t->pool_done);
    free(t->grads);
    free(t->ema);
    free(t->perm);
    free(t->xb);
    free(t->noise_all);
    free(t->gp_eps);
    ld_allreduce_free(t->ar);
    free(t->yb);
    ld_balance_plan_free(t->plan);
    free(t->row_s);
    free(t->aug_tmp);
    free(t);
}

int ld_trainer_new(ld_model_t *m, const ld_dataset_t *d, const ld_train_opts_t *o,
                   ld_trainer_t **out, ld_err_t *err)
{
    int rc = ld_train_opts_validate(o, err);
    if (!rc && m->ops->family == LD_KIND_GAN)
        rc = ld_gan_check_loss(m, o->gan_loss, err);
    if (rc)
        return rc;
    const ld_arch_t *a = &m->arch;
    if (d->dim != a->x_dim)
        return ld_err_set(err, LD_EINVAL, "data %s has %dx%d images; the model expects %dx%d",
                          d->name, d->h, d->w, a->img_h, a->img_w);
    if (d->n < 1)
        return ld_err_set(err, LD_EINVAL, "data %s is empty", d->name);
    if (m->ops->needs_labels && (!d->y || d->n_classes > a->n_classes))
        return ld_err_set(err, LD_EINVAL, "data %s has %s; %s needs labels < %d", d->name,
                          d->y ? "more classes" : "no labels", m->ops->article, a->n_classes);
    ld_balance_plan_t *plan;
    if ((rc = ld_train_balance_check(a->kind, d, o, err)))
        return rc;
    rc = ld_balance_plan_new(d, &o->class_fraction, o->balance, o->seed, &plan, err);
    if (rc)
        return rc;
    const int n = plan->n; /* the rows kept: what "examples" means below */
    int min_b = 1;
    size_t red = 1; /* batch norm's allreduce: 2 sums per channel and a count */
    for (int i = 0; i < m->n_nets; i++) {
        const ld_net_t *net = &m->layers[i];
        min_b = ld_net_min_batch(net) > min_b ? ld_net_min_batch(net) : min_b;
        for (int l = 0; l < net->n_layers; l++)
            if (2 * (size_t)net->layers[l].in.c + 1 > red)
                red = 2 * (size_t)net->layers[l].in.c + 1;
    }
    int B0 = o->batch < n ? o->batch : n;
    if (B0 < min_b || (n % B0 != 0 && n % B0 < min_b))
        rc = ld_err_set(err, LD_EINVAL, "batch norm needs batches of at least %d rows; with "
                          "%d examples in batches of %d the last has %d (change --batch or "
                          "--limit)", min_b, n, B0, n % B0 ? n % B0 : B0);
    const int K = ld_dist_size();
    if (!rc && (o->batch < n ? o->batch : n) < K)
        rc = ld_err_set(err, LD_EINVAL, "batch %d is smaller than the %d MPI ranks",
                        o->batch < n ? o->batch : n, K);
    ld_trainer_t *t = rc ? NULL : calloc(1, sizeof *t);
    if (!t) {
        ld_balance_plan_free(plan);
        return rc ? rc : ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&t->pool_mu, NULL);
    pthread_cond_init(&t->pool_go, NULL);
    pthread_cond_init(&t->pool_done, NULL);
    t->m = m;
    t->d = d;
    t->o = *o;
    t->plan = plan;
    int B = o->batch < n ? o->batch : n;
    t->o.batch = B;
    /* MPI: every rank's workers take a slice of the global batch */
    t->nw = o->threads < 1 ? 1 : o->threads * K > B ? B / K : o->threads;
    t->o.threads = t->nw;
    t->spin = K == 1 && t->nw <= sysconf(_SC_NPROCESSORS_ONLN); /* ranks may share the cores */
    t->steps_per_epoch = (n + B - 1) / B;
    t->grads = ld_malloc_array(3 * m->n_params, sizeof(float));
    t->perm = ld_malloc_array((size_t)n, sizeof(int));
    t->xb = ld_malloc_array((size_t)B * a->x_dim, sizeof(float));
    t->yb = ld_malloc_array((size_t)B, 1);
    t->noise_all = ld_malloc_array((size_t)B * (a->z_dim > 0 ? a->z_dim : 1), sizeof(float));
    if (o->balance == LD_BALANCE_WEIGHT)
        t->row_s = ld_malloc_array((size_t)B, sizeof(float));
    if (o->balance == LD_BALANCE_AUGMENT)
        t->aug_tmp = ld_malloc_array((size_t)a->x_dim, sizeof(float));
    t->gp_eps = ld_malloc_array((size_t)B, sizeof(float));
    int ok = t->grads && t->perm && t->xb && t->yb && t->noise_all && t->gp_eps &&
             (o->balance != LD_BALANCE_WEIGHT || t->row_s) &&
             (o->balance != LD_BALANCE_AUGMENT || t->aug_tmp) &&
             (a->net == LD_NETS_MLP || ld_allreduce_new(t->nw, red, &t->ar) == LD_OK);
    if (t->grads) {
        t->adam_m = t->grads + m->n_params;
        t->adam_v = t->grads + 2 * m->n_params;
        memset(t->adam_m, 0, 2 * m->n_params * sizeof(float));
    }
    /* MPI hook (3): every rank starts from rank 0's weights */
    ld_dist_bcast(m->params, m->n_params);
    if (m->ops->family == LD_KIND_GAN && o->g_ema > 0) {
        t->ema = ld_malloc_array(m->n_params, sizeof(float));
        ok = ok && t->ema;
        if (t->ema)
            memcpy(t->ema, m->params, m->n_params * sizeof(float));
    }
    int chunk = (B + K * t->nw - 1) / (K * t->nw);
    for (int i = 0; ok && i < t->nw; i++)
        ok = worker_init(t, &t->w[i], i, chunk) == LD_OK;
    for (int i = 1; ok && i < t->nw; i++)
        if (pthread_create(&t->w[i].th, NULL, worker_main, &t->w[i]) != 0) {
            t->nw = i; /* join only what started */
            ok = 0;
        }
    if (!ok) {
        ld_trainer_free(t);
        return ld_err_set(err, LD_ENOMEM, "out of memory (or threads) for training buffers");
    }
    ld_rng_seed(&t->shuffle, o->seed ^ 0x53485546464c45ull); /* "SHUFFLE" */
    ld_rng_seed(&t->noise, o->seed ^ 0x4e4f495345ull);       /* "NOISE" */
    ld_utc_iso8601(t->started, sizeof t->started);
    *out = t;
    return LD_OK;
}

/* Regenerate this epoch's order from the saved stream state. */
static void epoch_order(ld_trainer_t *t)
{
    t->shuffle = t->shuffle_start;
    ld_balance_order(t->plan, &t->shuffle, t->perm);
}

/* ---- one step, as phases run by every worker ---- */

/* This step's scheduled rate; cfg->lr is the net's base rate. */
static double step_lr(const ld_trainer_t *t, const ld_adam_cfg_t *cfg)
{
    return ld_optim_lr(&t->o.optim, cfg->lr, t->t, (long)t->o.epochs * t->steps_per_epoch);
}

/* The optimiser's update of parameters [s0, s1) at this step's scheduled
 * rate; the gradient block takes the penalties.  The same on every rank and
 * for any slicing. */
static void optim_update(ld_trainer_t *t, const ld_adam_cfg_t *cfg, size_t s0, size_t s1)
{
    ld_optim_step(&t->o.optim, cfg, step_lr(t, cfg), t->t, s1 - s0, t->m->params + s0,
                  t->grads + s0, t->adam_m + s0, t->adam_v + s0);
}

/* Elements of one fused reduce + optimiser (+ average) pass: small enough
 * that a chunk of every block it touches (the workers' gradients, the
 * parameters, both moments, the average) stays in this core's cache between
 * the sum and the update, so each block crosses memory once per update. */
#define UPDATE_CHUNK 8192u

/* grads[s0, s1) = sum over workers of (share of the batch) * their gradient,
 * the same arithmetic, in the same order, as a pass per worker. */
static void reduce_chunk(ld_trainer_t *t, size_t s0, size_t s1)
{
    float *g = t->grads;
    const float w0 = (float)t->w[0].b / (float)t->b;
    if (t->nw == 1) {
        for (size_t i = s0; i < s1; i++)
            g[i] *= w0;
        return;
    }
    const float *g1 = t->w[1].grads;
    const float w1 = (float)t->w[1].b / (float)t->b;
    for (size_t i = s0; i < s1; i++)
        g[i] = w0 * g[i] + w1 * g1[i];
    for (int k = 2; k < t->nw; k++) {
        const float *gk = t->w[k].grads;
        float wk = (float)t->w[k].b / (float)t->b;
        for (size_t i = s0; i < s1; i++)
            g[i] += wk * gk[i];
    }
}

/* The generator's average over [s0, s1), after its update. */
static void ema_chunk(ld_trainer_t *t, size_t s0, size_t s1)
{
    float d = (1.0f + (float)t->t) / (10.0f + (float)t->t);
    d = d < t->o.g_ema ? d : t->o.g_ema;
    const float *p = t->m->params;
    for (size_t i = s0; i < s1; i++)
        t->ema[i] = d * t->ema[i] + (1.0f - d) * p[i];
}

/* Whether an update leaves the gradients it consumed as zeros, so that the
 * next step's phases need not clear them: in one process (with MPI ranks the
 * sum over ranks comes between the reduce and the optimiser). */
static int zeroing(void) { return ld_dist_size() == 1; }

/* Whether an update can be one pass per chunk (ld_adam_step_sum): plain
 * Adam (no weight decay, no L1), one or two workers, zeroing, no MPI halves.
 * Its numbers are those of reduce_chunk, optim_update and the clears. */
static int one_pass_adam(const ld_trainer_t *t)
{
    const ld_optim_cfg_t *c = &t->o.optim;
    return zeroing() && t->pass == PASS_BOTH && t->nw <= 2 && c->kind != LD_OPTIM_SGD &&
           c->weight_decay == 0 && c->l1 == 0;
}

/* reduce_chunk, optim_update and the clears of [s0, s1) in one pass. */
static void adam_sum_chunk(ld_trainer_t *t, const ld_adam_cfg_t *cfg, size_t s0, size_t s1)
{
    const ld_adam_cfg_t ac = {(float)step_lr(t, cfg), cfg->beta1, cfg->beta2, cfg->eps};
    const float w0 = (float)t->w[0].b / (float)t->b;
    const float w1 = t->nw > 1 ? (float)t->w[1].b / (float)t->b : 0.0f;
    ld_adam_step_sum(&ac, t->t, s1 - s0, t->m->params + s0, t->grads + s0, w0,
                     t->nw > 1 ? t->w[1].grads + s0 : NULL, w1, t->adam_m + s0, t->adam_v + s0);
}

/* Sum the workers' gradients over [lo, hi) weighted by their share of the
 * batch (each worker's loss is a mean over its own rows), then the
 * optimiser (optim_update), then, with ema, the generator's average, then
 * (zeroing) every worker's gradients back to zero while they are still in
 * cache: this worker's slice of [lo, hi), a cache-sized chunk at a time. */
static void reduce_and_step(worker_t *w, size_t lo, size_t hi, const ld_adam_cfg_t *cfg, int ema)
{
    ld_trainer_t *t = w->t;
    /* this worker's slice of [lo, hi) */
    size_t n = hi - lo, per = (n + t->nw - 1) / t->nw;
    size_t s0 = lo + per * w->id, s1 = s0 + per < hi ? s0 + per : hi;
    const int reduce = t->pass != PASS_ADAM && (t->nw > 1 || ld_dist_size() > 1);
    const int fused = one_pass_adam(t);
    for (size_t c0 = s0; c0 < s1; c0 += UPDATE_CHUNK) {
        size_t c1 = s1 - c0 > UPDATE_CHUNK ? c0 + UPDATE_CHUNK : s1;
        if (fused) {
            adam_sum_chunk(t, cfg, c0, c1);
            if (ema)
                ema_chunk(t, c0, c1);
            continue;
        }
        if (reduce)
            reduce_chunk(t, c0, c1);
        if (t->pass == PASS_REDUCE)
            continue;
        optim_update(t, cfg, c0, c1);
        if (ema)
            ema_chunk(t, c0, c1);
        for (int k = 0; zeroing() && k < t->nw; k++)
            memset(t->w[k].grads + c0, 0, (c1 - c0) * sizeof(float));
    }
}

/* Zero this worker's gradients over n parameters from off before a phase
 * adds to them, unless the last update of that range left them zero. */
static void clear_grads(worker_t *w, size_t off, size_t n, unsigned range)
{
    if (!(w->t->clean & range))
        memset(w->grads + off, 0, n * sizeof(float));
}

/* A worker with no rows still runs a layer list: batch norm's allreduce needs
 * every worker's call. */
static int runs(const worker_t *w)
{
    return w->b > 0 || w->t->m->arch.net != LD_NETS_MLP;
}

/* Gather this worker's rows of the batch into xb (and yb) and draw its rows
 * of the batch's noise (the same numbers as one draw of the whole batch): in
 * the first phase of a step, so that this runs on every worker at once. */
/* Copy rows [i0, i1) of the batch at t->batch_lo (its images and labels). */
static void copy_rows(ld_trainer_t *t, int i0, int i1)
{
    const int X = t->m->arch.x_dim;
    for (int i = i0; i < i1; i++) {
        int r = t->perm[t->batch_lo + i];
        memcpy(t->xb + (size_t)i * X, t->d->x + (size_t)r * X, (size_t)X * sizeof(float));
        if (t->d->y)
            t->yb[i] = t->d->y[r];
    }
}

/* The balance remedies (augment, weight) need the whole batch before it is
 * cut into slices; train_step then gathers it alone. */
static int whole_batch(const ld_trainer_t *t) { return t->aug_tmp || t->row_s; }

static void gather_rows(const worker_t *w)
{
    ld_trainer_t *t = w->t;
    const size_t Z = (size_t)t->m->arch.z_dim;
    if (!whole_batch(t))
        copy_rows(t, w->lo, w->lo + w->b);
    if (Z > 0)
        ld_rng_fill_normal_slice(&t->noise_step, (size_t)w->lo * Z, t->noise_all + w->lo * Z,
                                 (size_t)w->b * Z, 0.0f, 1.0f);
}

/* This worker's slice of the batch's noise. */
static const float *noise_of(const worker_t *w)
{
    return w->t->noise_all + (size_t)w->lo * w->t->m->arch.z_dim;
}

/* --balance weight: this worker's per-row loss factors (balance.h), or NULL.
 * The hook for every loss that weights its rows by class: the VAE, the
 * classifier, and the conditional discriminator. */
static const float *row_factors(const worker_t *w)
{
    return w->t->row_s ? w->t->row_s + w->lo : NULL;
}

static void phase_vae(worker_t *w)
{
    ld_trainer_t *t = w->t;
    const ld_model_t *m = t->m;
    double rec = 0, kl = 0;
    gather_rows(w);
    clear_grads(w, 0, m->n_params, GRADS_ALL);
    w->vae.row_w = row_factors(w);
    if (runs(w))
        ld_vae_step(m, w->grads, &w->vae, w->b, t->xb + (size_t)w->lo * m->arch.x_dim,
                    noise_of(w), t->o.kl_beta, &rec, &kl);
    int b = w->b > 0 ? w->b : 1;
    w->losses[0] = (rec + t->o.kl_beta * kl) / b;
    w->losses[1] = rec / b;
    w->losses[2] = kl / b;
}

static void phase_cls(worker_t *w)
{
    ld_trainer_t *t = w->t;
    const ld_model_t *m = t->m;
    int correct = 0;
    double l = 0;
    gather_rows(w);
    clear_grads(w, 0, m->n_params, GRADS_ALL);
    if (w->b > 0)
        l = ld_classifier_step_w(m, w->grads, &w->cls, w->b,
                                 t->xb + (size_t)w->lo * m->arch.x_dim, t->yb + w->lo,
                                 row_factors(w), &w->rng, w->dlogits,
                                 &correct);
    int b = w->b > 0 ? w->b : 1;
    w->losses[0] = l / b;
    w->losses[1] = (double)correct / b;
}

static void phase_gan_d(worker_t *w)
{
    ld_trainer_t *t = w->t;
    const ld_model_t *m = t->m;
    const ld_net_t *D = &m->layers[LD_GAN_D];
    gather_rows(w);
    clear_grads(w, D->param_off, D->n_params, GRADS_D);
    if (!runs(w))
        return;
    w->gan.row_w = row_factors(w); /* --balance weight: cgan only (checked) */
    w->gan.eps = t->gp_eps + w->lo;
    w->losses[0] = ld_gan_step_d(m, w->grads, &w->gan, w->b, t->xb + (size_t)w->lo * m->arch.x_dim,
                                 noise_of(w), t->o.real_label, &w->rng, &w->losses[2],
                                 &w->losses[3]);
    w->losses[1] = w->gan.loss_g; /* replaced by the G step's where there is one */
}

static void phase_gan_g(worker_t *w)
{
    ld_trainer_t *t = w->t;
    const ld_net_t *G = &t->m->layers[LD_GAN_G];
    clear_grads(w, G->param_off, G->n_params, GRADS_G);
    if (runs(w))
        w->losses[1] = ld_gan_step_g(t->m, w->grads, &w->gan, w->b, t->o.gan_loss, &w->rng);
}

static void phase_adam_all(worker_t *w)
{
    reduce_and_step(w, 0, w->t->m->n_params, &w->t->o.adam, 0);
}

static void phase_adam_d(worker_t *w)
{
    const ld_net_t *D = &w->t->m->layers[LD_GAN_D];
    reduce_and_step(w, D->param_off, D->param_off + D->n_params, &w->t->o.adam_d, 0);
}

static void phase_adam_g(worker_t *w)
{
    ld_trainer_t *t = w->t;
    const ld_net_t *G = &t->m->layers[LD_GAN_G];
    reduce_and_step(w, G->param_off, G->param_off + G->n_params, &t->o.adam, t->ema != NULL);
}

/* Run a phase that adds to the workers' gradients over range. */
static void run_grads(ld_trainer_t *t, phase_fn fn, unsigned range)
{
    run_phase(t, fn);
    t->clean &= ~range;
}

/* Run an update phase (reduce the workers' gradients over [lo, hi), the
 * parameters of range, then the optimiser).  MPI hook (2): with ranks, the
 * reduce runs first, then the sum of [lo, hi) over ranks, then the
 * optimiser, the same step on every rank. */
static void run_update(ld_trainer_t *t, phase_fn fn, size_t lo, size_t hi, unsigned range)
{
    if (zeroing()) {
        run_phase(t, fn);
        t->clean |= range;
        return;
    }
    t->pass = PASS_REDUCE;
    run_phase(t, fn);
    ld_dist_allreduce_sum(t->grads + lo, hi - lo);
    t->pass = PASS_ADAM;
    run_phase(t, fn);
    t->pass = PASS_BOTH;
}

/* wgan-gp: the batch's interpolation weights, after its z from the same
 * stream r (so the other losses draw what they drew before). */
static void gp_draw_eps(ld_trainer_t *t, ld_rng_t *r, int b)
{
    if (t->o.gan_loss != LD_GAN_LOSS_WGAN_GP)
        return;
    for (int i = 0; i < b; i++)
        t->gp_eps[i] = ld_rng_uniform(r);
}

/* With n_critic D steps per G step, G steps on the 1st, (n+1)th, ... step:
 * whether step t (1-based, counted by t->t) has one, and how many G steps
 * there have been by then. */
static int gan_g_due(const ld_trainer_t *t) { return (t->t - 1) % t->o.n_critic == 0; }
static long gan_g_steps(const ld_trainer_t *t) { return (t->t - 1) / t->o.n_critic + 1; }

/* Whether the step in progress is being abandoned (ld_train_opts_t.abandon):
 * checked before each optimiser update. */
static int abandoning(const ld_trainer_t *t)
{
    return t->o.abandon && atomic_load(t->o.abandon);
}

/* One step: 0, or 1 when it was abandoned (its numbers are meaningless and
 * the parameters may hold part of an update). */
static int train_step(ld_trainer_t *t, int lo, int b, double *losses)
{
    ld_model_t *m = t->m;
    t->batch_lo = lo; /* the workers gather their rows (gather_rows) */
    t->b = b;
    t->t++;
    /* the remedies work on the whole batch here, before it is cut into
     * slices, so they do not depend on the number of workers */
    if (whole_batch(t))
        copy_rows(t, 0, b);
    if (t->aug_tmp)
        ld_balance_augment(t->plan, t->o.seed, t->t, t->d->h, t->d->w, t->xb, t->yb, b,
                           t->aug_tmp);
    if (t->row_s)
        ld_balance_row_scale(t->plan, t->yb, b, t->row_s);
    /* the batch's noise first, from a stream that does not depend on the
     * number of workers or ranks (each worker draws its rows of it in
     * gather_rows) */
    if (m->arch.z_dim > 0) {
        ld_rng_seed(&t->noise_step, ld_rng_u64(&t->noise));
        /* wgan-gp's interpolation weights, whole batch, from their own seed
         * (drawn only for wgan-gp, so other runs keep their streams) */
        if (t->o.gan_loss == LD_GAN_LOSS_WGAN_GP) {
            ld_rng_t r;
            ld_rng_seed(&r, ld_rng_u64(&t->noise));
            gp_draw_eps(t, &r, b);
        }
    }
    /* contiguous slices of the batch, and a fresh noise stream for each worker
     * (dropout), all from one draw: t->noise advances the same for any number
     * of workers.  MPI hook (1): one slice per worker of every rank,
     * rank-major, so K ranks of T threads train as one process of K*T
     * threads does */
    uint64_t base = ld_rng_u64(&t->noise);
    const int g0 = ld_dist_rank() * t->nw, gw = ld_dist_size() * t->nw;
    int per = (b + gw - 1) / gw;
    for (int k = 0; k < t->nw; k++) {
        worker_t *w = &t->w[k];
        int g = g0 + k;
        w->lo = per * g < b ? per * g : b;
        w->b = w->lo + per < b ? per : b - w->lo;
        ld_rng_seed(&w->rng, base + 0x9e3779b97f4a7c15ull * (uint64_t)g);
        memset(w->losses, 0, sizeof w->losses);
        w->run.share = (float)w->b / (float)b;
        w->run.labels = m->ops->conditional ? t->yb + w->lo : NULL; /* G, D, encoder, decoder */
    }
    /* a step's phases per kind, an update after each forward/backward; an
     * abandon is honoured between phases */
    const ld_net_t *D = &m->layers[LD_GAN_D], *G = &m->layers[LD_GAN_G];
    switch (m->ops->family) {
    case LD_KIND_VAE:
    case LD_KIND_CLASSIFIER:
        run_grads(t, m->ops->family == LD_KIND_VAE ? phase_vae : phase_cls, GRADS_ALL);
        if (!abandoning(t))
            run_update(t, phase_adam_all, 0, m->n_params, GRADS_ALL);
        break;
    case LD_KIND_GAN:
        run_grads(t, phase_gan_d, GRADS_D);
        if (abandoning(t))
            break;
        run_update(t, phase_adam_d, D->param_off, D->param_off + D->n_params, GRADS_D);
        if (abandoning(t))
            break;
        if (!gan_g_due(t))
            break;
        run_grads(t, phase_gan_g, GRADS_G);
        if (abandoning(t))
            break;
        {
            /* Adam counts the generator's own steps (t is the critic's) */
            long t_d = t->t;
            t->t = gan_g_steps(t);
            run_update(t, phase_adam_g, G->param_off, G->param_off + G->n_params, GRADS_G);
            t->t = t_d;
        }
        break;
    default: /* families only */
        break;
    }
    if (abandoning(t))
        return 1;
    for (int i = 0; i < LD_MAX_LOSSES; i++) {
        losses[i] = 0;
        for (int k = 0; k < t->nw; k++)
            losses[i] += t->w[k].losses[i] * t->w[k].b / b;
    }
    ld_dist_allreduce_sum_d(losses, LD_MAX_LOSSES); /* MPI: the whole batch's means */
    return 0;
}

int ld_trainer_examples(const ld_trainer_t *t) { return t->plan->n; }

void ld_trainer_progress(const ld_trainer_t *t, ld_progress_t *p)
{
    memset(p, 0, sizeof *p);
    p->epochs = t->o.epochs;
    p->epoch = t->epoch + 1 > t->o.epochs ? t->o.epochs : t->epoch + 1;
    p->step = t->t;
    p->steps_total = (long)t->o.epochs * t->steps_per_epoch;
    p->elapsed_s = ld_now() - t->run_start;
    p->samples_per_s = p->elapsed_s > 0 ? t->run_samples / p->elapsed_s : 0;
    long steps_run = t->t - t->run_step0;
    double s_per_step = steps_run > 0 ? p->elapsed_s / steps_run : 0;
    p->eta_s = s_per_step * (double)(p->steps_total - p->step);
    const char *const *names;
    p->n_losses = ld_train_loss_names(t->m->arch.kind, &names);
    for (int i = 0; i < p->n_losses; i++) {
        p->loss_names[i] = names[i];
        p->loss[i] = t->loss_n ? t->loss_sum[i] / t->loss_n : 0;
    }
}

/* The optimiser and schedule in the training record (latentd info). */
static void record_optim(ld_trainer_t *t)
{
    char buf[128];
    ld_record_set(&t->m->record, "optimizer", "%s", ld_optim_describe(&t->o.optim, buf, sizeof buf));
    ld_record_set(&t->m->record, "lr_schedule", "%s", ld_sched_describe(&t->o.optim, buf, sizeof buf));
}

static void write_record(ld_trainer_t *t, const ld_progress_t *p)
{
    ld_record_t *r = &t->m->record;
    char finished[32], losses[256];
    size_t pos = 0;
    ld_utc_iso8601(finished, sizeof finished);
    pos += (size_t)snprintf(losses, sizeof losses, "{");
    for (int i = 0; i < p->n_losses && pos < sizeof losses; i++)
        pos += (size_t)snprintf(losses + pos, sizeof losses - pos, "%s\"%s\":%.6g", i ? "," : "",
                                p->loss_names[i], p->loss[i]);
    if (pos < sizeof losses)
        snprintf(losses + pos, sizeof losses - pos, "}");
    ld_record_set(r, "data", "%s", t->d->name);
    ld_record_set(r, "examples", "%d", t->plan->n);
    if (t->o.class_fraction.n > 0) {
        char cf[LD_BAL_MAX_CLASSES * 16];
        ld_class_fraction_format(&t->o.class_fraction, cf, sizeof cf);
        ld_record_set(r, "class_fraction", "%s", cf);
    }
    if (t->o.balance != LD_BALANCE_NONE)
        ld_record_set(r, "balance", "%s", ld_balance_name(t->o.balance));
    ld_record_set(r, "epochs", "%d", t->o.epochs);
    ld_record_set(r, "batch", "%d", t->o.batch);
    ld_record_set(r, "lr", "%g", (double)t->o.adam.lr);
    ld_record_set(r, "seed", "%" PRIu64, t->o.seed);
    ld_record_set(r, "steps", "%ld", t->t);
    if (t->m->ops->conditional) {
        char names[256];
        if (ld_data_class_names(t->d, names, sizeof names) > 0)
            ld_record_set(r, "classes", "%s", names);
    }
    if (t->m->ops->family == LD_KIND_VAE)
        ld_record_set(r, "kl_beta", "%g", (double)t->o.kl_beta);
    if (t->m->ops->family == LD_KIND_GAN) {
        ld_record_set(r, "gan_loss", "%s", ld_gan_loss_name(t->o.gan_loss));
        ld_record_set(r, "real_label", "%g", (double)t->o.real_label);
        ld_record_set(r, "lr_d", "%g", (double)t->o.adam_d.lr);
        ld_record_set(r, "g_ema", "%g", (double)t->o.g_ema);
        if (t->o.gan_loss == LD_GAN_LOSS_WGAN_GP) {
            ld_record_set(r, "n_critic", "%d", t->o.n_critic);
            ld_record_set(r, "gp", "%g", (double)t->o.gp);
        }
    }
    record_optim(t);
    ld_record_set(r, "final_losses", "%s", losses);
    ld_record_set(r, "started", "%s", t->started);
    ld_record_set(r, "finished", "%s", finished);
}

int ld_trainer_run(ld_trainer_t *t, ld_progress_fn cb, void *user, ld_err_t *err)
{
    const int n = t->plan->n, B = t->o.batch;
    const char *const *names;
    const int nl = ld_train_loss_names(t->m->arch.kind, &names);
    t->run_start = ld_now();
    t->run_samples = 0;
    t->run_step0 = t->t;
    int stop = 0, rc;
    while (t->epoch < t->o.epochs) {
        if (t->batch_idx == 0) {
            t->shuffle_start = t->shuffle;
            memset(t->loss_sum, 0, sizeof t->loss_sum);
            t->loss_n = 0;
        }
        epoch_order(t);
        while (t->batch_idx < t->steps_per_epoch) {
            int lo = t->batch_idx * B, b = n - lo < B ? n - lo : B;
            double losses[LD_MAX_LOSSES];
            ld_step_abandon_flag(t->o.abandon);
            int abandoned = train_step(t, lo, b, losses);
            ld_step_abandon_flag(NULL);
            if (abandoned) /* no state is written: the last checkpoint stays */
                return ld_err_set(err, LD_ECANCELLED, "abandoned step %ld", t->t);
            for (int i = 0; i < nl; i++) {
                if (!isfinite(losses[i]))
                    return ld_err_set(err, LD_EINVAL,
                                      "training diverged at step %ld (a loss is not finite); "
                                      "lower the learning rate",
                                      t->t);
                t->loss_sum[i] += losses[i] * b;
            }
            t->loss_n += b;
            t->run_samples += b;
            t->batch_idx++;
            if (t->batch_idx == t->steps_per_epoch) {
                t->epoch++;
                t->batch_idx = 0;
            }
            ld_progress_t p;
            ld_trainer_progress(t, &p);
            p.epoch_done = t->batch_idx == 0;
            p.finished = t->epoch == t->o.epochs && p.epoch_done;
            if (p.epoch_done)
                p.epoch = t->epoch;
            if (p.finished) {
                if (t->ema) {
                    const ld_net_t *G = &t->m->layers[LD_GAN_G];
                    memcpy(t->m->params + G->param_off, t->ema + G->param_off,
                           G->n_params * sizeof(float));
                }
                write_record(t, &p);
            }
            if (cb && cb(&p, user))
                stop = 1;
            stop = ld_dist_any(stop); /* MPI: a rank that stops stops them all */
            /* a periodic checkpoint that is due is written; a stop writes
             * one too, unless it is a cancel (abandon) */
            int ckpt = t->o.state_path[0] &&
                       ((t->o.checkpoint_every > 0 && t->t % t->o.checkpoint_every == 0) ||
                        (stop && !abandoning(t)));
            ckpt = ckpt && ld_dist_rank() == 0; /* MPI hook (4): rank 0 writes */
            if (ckpt && !p.finished && (rc = ld_trainer_save_state(t, t->o.state_path, err)))
                return rc;
            if (stop && !p.finished)
                return ld_err_set(err, LD_ECANCELLED, "stopped at step %ld", t->t);
            if (p.epoch_done)
                break;
        }
    }
    return LD_OK;
}

/* ---- state files ---- */

#define MAX_STATE_TENSORS (4 * LD_MODEL_MAX_TENSORS)

static void rng_hex(const ld_rng_t *r, char *buf, size_t len)
{
    snprintf(buf, len, "%016" PRIx64 "%016" PRIx64 "%016" PRIx64 "%016" PRIx64, r->s[0], r->s[1],
             r->s[2], r->s[3]);
}

static int rng_unhex(const char *s, ld_rng_t *r)
{
    if (!s || strlen(s) != 64)
        return -1;
    for (int i = 0; i < 4; i++) {
        char part[17];
        memcpy(part, s + 16 * i, 16);
        part[16] = 0;
        char *end;
        r->s[i] = strtoull(part, &end, 16);
        if (*end)
            return -1;
    }
    return 0;
}

/* The optimiser's part of opts_key, appended only when it is not the default
 * (plain Adam, constant rate), so state files from before it still resume. */
static void optim_key(const ld_optim_cfg_t *c, char *buf, size_t len)
{
    size_t pos = strlen(buf);
    if (c->kind == LD_OPTIM_ADAM && c->weight_decay == 0 && c->l1 == 0 &&
        c->schedule == LD_SCHED_CONSTANT)
        return;
    char o[128], s[64];
    snprintf(buf + pos, len - pos, " optim=%s sched=%s", ld_optim_describe(c, o, sizeof o),
             ld_sched_describe(c, s, sizeof s));
}

/* Append the imbalance options to a resume key, only when set (so state
 * files written without them still resume). */
static void balance_key(const ld_trainer_t *t, char *buf, size_t len)
{
    size_t pos = strlen(buf);
    char cf[LD_BAL_MAX_CLASSES * 16];
    ld_class_fraction_format(&t->o.class_fraction, cf, sizeof cf);
    if (cf[0] && pos < len)
        pos += (size_t)snprintf(buf + pos, len - pos, " class_fraction=%s", cf);
    if (t->o.balance != LD_BALANCE_NONE && pos < len)
        snprintf(buf + pos, len - pos, " balance=%s", ld_balance_name(t->o.balance));
}

/* The options that must match for a resume to be exact. */
static void opts_key(const ld_trainer_t *t, char *buf, size_t len)
{
    snprintf(buf, len, "epochs=%d batch=%d threads=%d seed=%" PRIu64 " n=%d lr=%g lr_d=%g beta=%g loss=%s real=%g ema=%g",
             t->o.epochs, t->o.batch, t->o.threads * ld_dist_size(), t->o.seed, t->plan->n, (double)t->o.adam.lr,
             (double)t->o.adam_d.lr, (double)t->o.kl_beta, ld_gan_loss_name(t->o.gan_loss),
             (double)t->o.real_label, (double)t->o.g_ema);
    optim_key(&t->o.optim, buf, len);
    balance_key(t, buf, len);
    if (t->o.gan_loss == LD_GAN_LOSS_WGAN_GP) /* absent otherwise: older state files stay valid */
        snprintf(buf + strlen(buf), len - strlen(buf), " n_critic=%d gp=%g", t->o.n_critic,
                 (double)t->o.gp);
}

int ld_trainer_save_state(const ld_trainer_t *t, const char *path, ld_err_t *err)
{
    const ld_model_t *m = t->m;
    ld_tensor_view_t *tv = ld_calloc(MAX_STATE_TENSORS, sizeof *tv); /* too big for a stack */
    if (!tv)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    int n = ld_model_tensors_all(m, tv, MAX_STATE_TENSORS / 4); /* parameters and buffers */
    int k = n;
    const float *blocks[3] = {t->adam_m, t->adam_v, t->ema};
    const char *prefix[3] = {"adam_m.", "adam_v.", "ema."};
    for (int b = 0; b < 3 && blocks[b]; b++) {
        int got = ld_model_tensors(m, blocks[b], tv + k, MAX_STATE_TENSORS - k);
        for (int i = 0; i < got; i++) {
            char name[LD_CKPT_NAME_MAX];
            snprintf(name, sizeof name, "%.7s%.120s", prefix[b], tv[k + i].name);
            memcpy(tv[k + i].name, name, sizeof name);
        }
        k += got;
    }
    char arch[1024], opts[512], step[32], ep[16], bi[16], rs0[80], rs[80], rn[80], sums[256];
    ld_arch_to_json(&m->arch, arch, sizeof arch);
    opts_key(t, opts, sizeof opts);
    snprintf(step, sizeof step, "%ld", t->t);
    snprintf(ep, sizeof ep, "%d", t->epoch);
    snprintf(bi, sizeof bi, "%d", t->batch_idx);
    rng_hex(&t->shuffle_start, rs0, sizeof rs0);
    rng_hex(&t->shuffle, rs, sizeof rs);
    rng_hex(&t->noise, rn, sizeof rn);
    snprintf(sums, sizeof sums, "%.17g %.17g %.17g %.17g %ld", t->loss_sum[0], t->loss_sum[1],
             t->loss_sum[2], t->loss_sum[3], t->loss_n);
    ld_kv_t meta[] = {
        {"format", "latentd-state/1"}, {"kind", ld_kind_name(m->arch.kind)},
        {"arch", arch}, {"opts", opts}, {"step", step}, {"epoch", ep}, {"batch_idx", bi},
        {"rng_shuffle_start", rs0}, {"rng_shuffle", rs}, {"rng_noise", rn},
        {"loss_sums", sums}, {"started", t->started},
    };
    int rc = ld_ckpt_write(path, tv, k, meta, (int)LD_ARRAY_LEN(meta), err);
    free(tv);
    return rc;
}

/* A block's tensors from c: an optimiser block (prefix), or with block NULL
 * the model's parameters and buffers. */
static int load_block(const ld_ckpt_t *c, const ld_model_t *m, const char *prefix, float *block,
                      ld_err_t *err)
{
    ld_tensor_view_t tv[LD_MODEL_MAX_TENSORS];
    int n = block ? ld_model_tensors(m, block, tv, LD_MODEL_MAX_TENSORS)
                  : ld_model_tensors_all(m, tv, LD_MODEL_MAX_TENSORS);
    for (int i = 0; i < n; i++) {
        char name[LD_CKPT_NAME_MAX + 16];
        snprintf(name, sizeof name, "%.8s%.120s", prefix, tv[i].name);
        const ld_tensor_view_t *s = ld_ckpt_find(c, name);
        if (!s || s->numel != tv[i].numel || s->dtype != tv[i].dtype)
            return ld_err_set(err, LD_EFORMAT, "state file lacks tensor %s or its shape differs",
                              name);
        memcpy((float *)tv[i].data, s->data, ld_tensor_bytes(s));
    }
    return LD_OK;
}

int ld_trainer_load_state(ld_trainer_t *t, const char *path, ld_err_t *err)
{
    ld_ckpt_t *c;
    int rc = ld_ckpt_read(path, &c, err);
    if (rc)
        return rc;
    char arch[1024], opts[512];
    ld_arch_to_json(&t->m->arch, arch, sizeof arch);
    opts_key(t, opts, sizeof opts);
    const char *fmt = ld_ckpt_meta(c, "format"), *a = ld_ckpt_meta(c, "arch"),
               *o = ld_ckpt_meta(c, "opts"), *sums = ld_ckpt_meta(c, "loss_sums"),
               *started = ld_ckpt_meta(c, "started");
    const char *step = ld_ckpt_meta(c, "step"), *ep = ld_ckpt_meta(c, "epoch"),
               *bi = ld_ckpt_meta(c, "batch_idx");
    /* parse everything first; touch t only when all of it is good */
    struct {
        ld_rng_t shuffle_start, shuffle, noise;
        double loss_sum[4];
        long loss_n, t;
        int epoch, batch_idx;
    } st;
    if (!fmt || strcmp(fmt, "latentd-state/1"))
        rc = ld_err_set(err, LD_EFORMAT, "%s is not a latentd training-state file", path);
    else if (!a || strcmp(a, arch))
        rc = ld_err_set(err, LD_EINVAL, "%s was saved for another architecture", path);
    else if (!o || strcmp(o, opts))
        rc = ld_err_set(err, LD_EINVAL, "%s was saved with other options (%s)", path,
                        o ? o : "none");
    else if (!step || !ep || !bi || !sums ||
             rng_unhex(ld_ckpt_meta(c, "rng_shuffle_start"), &st.shuffle_start) ||
             rng_unhex(ld_ckpt_meta(c, "rng_shuffle"), &st.shuffle) ||
             rng_unhex(ld_ckpt_meta(c, "rng_noise"), &st.noise) ||
             sscanf(sums, "%lf %lf %lf %lf %ld", &st.loss_sum[0], &st.loss_sum[1],
                    &st.loss_sum[2], &st.loss_sum[3], &st.loss_n) != 5)
        rc = ld_err_set(err, LD_EFORMAT, "%s has damaged counters", path);
    if (!rc) {
        st.t = strtol(step, NULL, 10);
        st.epoch = (int)strtol(ep, NULL, 10);
        st.batch_idx = (int)strtol(bi, NULL, 10);
        if (st.t < 0 || st.epoch < 0 || st.epoch > t->o.epochs || st.batch_idx < 0 ||
            st.batch_idx >= t->steps_per_epoch)
            rc = ld_err_set(err, LD_EFORMAT, "%s has counters out of range", path);
    }
    /* params and moments go straight in: on failure the trainer must not be used */
    if (!rc)
        rc = load_block(c, t->m, "", NULL, err);
    if (!rc)
        rc = load_block(c, t->m, "adam_m.", t->adam_m, err);
    if (!rc)
        rc = load_block(c, t->m, "adam_v.", t->adam_v, err);
    if (!rc && t->ema)
        rc = load_block(c, t->m, "ema.", t->ema, err);
    if (!rc) {
        t->shuffle_start = st.shuffle_start;
        t->shuffle = st.shuffle;
        t->noise = st.noise;
        memcpy(t->loss_sum, st.loss_sum, sizeof t->loss_sum);
        t->loss_n = st.loss_n;
        t->t = st.t;
        t->epoch = st.epoch;
        t->batch_idx = st.batch_idx;
        if (started)
            snprintf(t->started, sizeof t->started, "%s", started);
    }
    ld_ckpt_free(c);
    return rc;
}

/* 2 * in * out summed over one net's layers (one forward pass), and the first layer's share. */
static double net_flops(const ld_mlp_t *n, double *first)
{
    double f = 0;
    for (int i = 0; i < n->n_layers; i++)
        f += 2.0 * n->size[i] * n->size[i + 1];
    *first = 2.0 * n->size[0] * n->size[1];
    return f;
}

double ld_train_flops_per_sample(const ld_model_t *m)
{
    double f0, f, g0, g, h0, h, k0, k;
    if (m->arch.net != LD_NETS_MLP) { /* forward and about twice that backward, per pass */
        double s = 0;
        for (int i = 0; i < m->n_nets; i++)
            s += 3 * ld_net_flops(&m->layers[i]) * (m->ops->family == LD_KIND_GAN && i == LD_GAN_D ? 3 : 1);
        return s;
    }
    switch (m->arch.kind) {
    case LD_KIND_VAE: /* forward, weight grads, input grads (none into x) */
        f = net_flops(&m->nets[LD_VAE_ENC], &f0);
        g = net_flops(&m->nets[LD_VAE_MU], &g0);
        h = net_flops(&m->nets[LD_VAE_LOGVAR], &h0);
        k = net_flops(&m->nets[LD_VAE_DEC], &k0);
        return 3 * f - f0 + 3 * (g + h + k);
    case LD_KIND_GAN: /* G once; D on real, on fake, and again for the G step */
        g = net_flops(&m->nets[LD_GAN_G], &g0);
        f = net_flops(&m->nets[LD_GAN_D], &f0);
        return 3 * g - g0 + 9 * f - 2 * f0;
    default:
        f = net_flops(&m->nets[LD_CLS_NET], &f0);
        return 3 * f - f0;
    }
}

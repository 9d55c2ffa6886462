/* check_train.c — the training loop: determinism (same seed => identical
 * parameters and checkpoint bytes), exact resume from a state file, that the
 * models learn on small slices of Fashion-MNIST, checkpoint round trips, and
 * loading a checkpoint without latentd's metadata (architecture inferred). */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"
#include "tu_tiny.h"

#include "latentd/ckpt.h"
#include "latentd/data.h"
#include "latentd/eval.h"
#include "latentd/fsutil.h"
#include "latentd/model.h"
#include "latentd/train.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

/* ---- helpers ------------------------------------------------------------- */

/* The Fashion-MNIST slices, loaded once for the whole case (an unchecked
 * fixture runs before the tests fork), and views of their first n images. */
#define TRAIN_N 2000
#define TEST_N 1000
static ld_dataset_t *g_train, *g_test;

static void data_setup(void)
{
    ld_err_t err = {{0}};
    if (ld_data_load("fashion-mnist", LD_SPLIT_TRAIN, TRAIN_N, &g_train, &err) ||
        ld_data_load("fashion-mnist", LD_SPLIT_TEST, TEST_N, &g_test, &err)) {
        fprintf(stderr, "check_train: %s\n", err.msg);
        g_train = g_test = NULL;
    }
}

static void data_teardown(void)
{
    ld_data_free(g_train);
    ld_data_free(g_test);
    g_train = g_test = NULL;
}

/* A view (not owning) of the first n images of a split; free with plain free(). */
static ld_dataset_t *load(ld_split_t split, int n)
{
    const ld_dataset_t *src = split == LD_SPLIT_TRAIN ? g_train : g_test;
    ck_assert_msg(src != NULL, "Fashion-MNIST could not be loaded (dataset-fashion-mnist)");
    ck_assert_int_le(n, src->n);
    ld_dataset_t *v = malloc(sizeof *v);
    ck_assert_ptr_nonnull(v);
    *v = *src;
    v->n = n;
    return v;
}

static void view_free(ld_dataset_t *v) { free(v); }

static ld_model_t *new_model(ld_kind_t kind, uint64_t seed)
{
    ld_arch_t a;
    ld_arch_default(kind, &a);
    ld_model_t *m = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_new(&a, seed, &m, &err) == LD_OK, "%s", err.msg);
    return m;
}

static ld_train_opts_t opts(ld_kind_t kind, int epochs, int batch, uint64_t seed)
{
    ld_train_opts_t o;
    ld_train_opts_default(kind, &o);
    o.epochs = epochs;
    o.batch = batch;
    o.seed = seed;
    return o;
}

typedef struct {
    long stop_at;          /* ask to stop after this step (0 = never) */
    int epochs_seen;
    double epoch_loss[16]; /* first loss's epoch mean, per epoch */
    int all_finite;
} watch_t;

static int watch(const ld_progress_t *p, void *user)
{
    watch_t *w = user;
    for (int i = 0; i < p->n_losses; i++)
        if (!isfinite(p->loss[i]))
            w->all_finite = 0;
    if (p->epoch_done && w->epochs_seen < 16)
        w->epoch_loss[w->epochs_seen++] = p->loss[0];
    return w->stop_at > 0 && p->step >= w->stop_at;
}

/* Train m on d with o; returns ld_trainer_run's status. */
static int train(ld_model_t *m, const ld_dataset_t *d, const ld_train_opts_t *o, watch_t *w)
{
    ld_trainer_t *t = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_trainer_new(m, d, o, &t, &err) == LD_OK, "%s", err.msg);
    int rc = ld_trainer_run(t, watch, w, &err);
    ck_assert_msg(rc == LD_OK || rc == LD_ECANCELLED, "train: %s", err.msg);
    ld_trainer_free(t);
    return rc;
}

static void assert_same_params(const ld_model_t *a, const ld_model_t *b, const char *what)
{
    ck_assert_uint_eq(a->n_params, b->n_params);
    ck_assert_msg(memcmp(a->params, b->params, a->n_params * sizeof(float)) == 0,
                  "%s: parameters differ", what);
}

static int params_finite(const ld_model_t *m)
{
    for (size_t i = 0; i < m->n_params; i++)
        if (!isfinite(m->params[i]))
            return 0;
    return 1;
}

/* The bytes ld_model_save writes, with the wall-clock entries of the record
 * pinned (they are timestamps; everything else must be reproducible). */
static uint8_t *saved_bytes(ld_model_t *m, const char *dir, const char *name, size_t *len)
{
    ld_record_set(&m->record, "started", "T0");
    ld_record_set(&m->record, "finished", "T1");
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_save(m, path, &err) == LD_OK, "%s", err.msg);
    uint8_t *buf = NULL;
    ck_assert_msg(ld_read_file(path, 64u << 20, &buf, len, &err) == LD_OK, "%s", err.msg);
    return buf;
}

/* ---- determinism ------------------------------------------------------------ */

START_TEST(test_determinism_vae)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 512);
    ld_train_opts_t o = opts(LD_KIND_VAE, 1, 64, 1);
    ld_model_t *a = new_model(LD_KIND_VAE, 1), *b = new_model(LD_KIND_VAE, 1);
    ld_model_t *c = new_model(LD_KIND_VAE, 1), *e = new_model(LD_KIND_VAE, 2);
    ld_model_t *init = new_model(LD_KIND_VAE, 1);
    watch_t w = {.all_finite = 1};
    train(a, d, &o, &w);
    train(b, d, &o, &w);
    assert_same_params(a, b, "same seed");
    /* it trained */
    ck_assert(memcmp(a->params, init->params, a->n_params * sizeof(float)) != 0);
    /* the training record matches too, and so do the checkpoint bytes */
    ck_assert_str_eq(ld_record_get(&a->record, "final_losses"),
                     ld_record_get(&b->record, "final_losses"));
    char *dir = tu_mkdtemp();
    size_t la, lb;
    uint8_t *ba = saved_bytes(a, dir, "a.safetensors", &la);
    uint8_t *bb = saved_bytes(b, dir, "b.safetensors", &lb);
    ck_assert_uint_eq(la, lb);
    ck_assert_msg(memcmp(ba, bb, la) == 0, "same seed: checkpoint bytes differ");
    free(ba), free(bb);
    /* another training seed (same initial weights): other parameters */
    ld_train_opts_t o2 = opts(LD_KIND_VAE, 1, 64, 2);
    train(c, d, &o2, &w);
    ck_assert(memcmp(a->params, c->params, a->n_params * sizeof(float)) != 0);
    /* another initialisation seed: other parameters */
    train(e, d, &o, &w);
    ck_assert(memcmp(a->params, e->params, a->n_params * sizeof(float)) != 0);
    ck_assert(w.all_finite);
    tu_rmrf(dir);
    free(dir);
    ld_model_free(a), ld_model_free(b), ld_model_free(c), ld_model_free(e), ld_model_free(init);
    view_free(d);
}
END_TEST

/* GAN (dropout masks and z from the noise stream), with two data-parallel workers. */
START_TEST(test_determinism_gan_threads)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 64);
    ld_train_opts_t o = opts(LD_KIND_GAN, 1, 16, 5);
    o.threads = 2;
    ld_model_t *a = new_model(LD_KIND_GAN, 5), *b = new_model(LD_KIND_GAN, 5);
    watch_t w = {.all_finite = 1};
    train(a, d, &o, &w);
    train(b, d, &o, &w);
    assert_same_params(a, b, "GAN, 2 threads, same seed");
    ck_assert_str_eq(ld_record_get(&a->record, "final_losses"),
                     ld_record_get(&b->record, "final_losses"));
    ck_assert(w.all_finite && params_finite(a));
    ld_model_free(a), ld_model_free(b);
    view_free(d);
}
END_TEST

/* ---- one thread against two, every kind ------------------------------------- */

/* The kinds whose nets must train alike on 1 and 2 threads (issue 15). The
 * dense GAN runs without dropout: each worker draws its own masks. */
static const struct {
    ld_kind_t kind;
    const char *recipe;
} thread_cases[] = {
    {LD_KIND_VAE, "default"}, {LD_KIND_GAN, "default"}, {LD_KIND_GAN, "dcgan"},
    {LD_KIND_VAE, "conv"},    {LD_KIND_GAN, "resmlp"},  {LD_KIND_VAE, "resmlp"},
};

START_TEST(test_threads_agree)
{
    const int n = 45, batch = 15, steps = 3; /* 2 threads split a batch 8 + 7 */
    ld_kind_t kind = thread_cases[_i].kind;
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, n);
    ld_arch_t arch;
    ld_train_opts_t o;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_train_recipe(kind, thread_cases[_i].recipe, &arch, &o, &err) == LD_OK, "%s",
                  err.msg);
    arch.dropout = 0.0f;
    /* Adam's eps 1e-3, not 1e-8: Adam divides a gradient by its own size, so
     * a gradient at rounding level (a bias into batch norm, whose true
     * gradient is 0; a pixel that is almost always 0 feeding a batch norm)
     * becomes a step of up to lr whose sign is the rounding's, and the sum
     * over two threads rounds otherwise than over one.  With eps 1e-3 such
     * gradients take plain small steps and the comparison sees the
     * gradients and the batch statistics, which is what threads change. */
    o.adam.eps = o.adam_d.eps = 1e-3f;
    o.epochs = 1;
    o.batch = batch;
    o.seed = 11;
    ld_model_t *m[2];
    for (int k = 0; k < 2; k++) {
        ck_assert_msg(ld_model_new(&arch, 11, &m[k], &err) == LD_OK, "%s", err.msg);
        o.threads = k + 1;
        watch_t w = {.all_finite = 1};
        ck_assert_int_eq(train(m[k], d, &o, &w), LD_OK);
        ck_assert(w.all_finite && params_finite(m[k]));
    }
    /* every float tensor: parameters and running statistics */
    ld_tensor_view_t t0[LD_MODEL_MAX_TENSORS], t1[LD_MODEL_MAX_TENSORS];
    int nt = ld_model_tensors_all(m[0], t0, LD_MODEL_MAX_TENSORS);
    ck_assert_int_eq(ld_model_tensors_all(m[1], t1, LD_MODEL_MAX_TENSORS), nt);
    double worst = 0;
    const char *where = "-";
    for (int k = 0; k < nt; k++) {
        if (t0[k].dtype == LD_DTYPE_I64) { /* num_batches_tracked */
            ck_assert(memcmp(t0[k].data, t1[k].data, 8) == 0);
            continue;
        }
        for (size_t i = 0; i < t0[k].numel; i++) {
            double diff = fabs((double)t0[k].data[i] - t1[k].data[i]);
            if (diff > worst)
                worst = diff, where = t0[k].name;
        }
    }
    printf("threads 1 vs 2, %s %s, %d steps: worst |diff| of parameters and running "
           "statistics %.3g at %s (tolerance 1e-5)\n", ld_kind_name(kind),
           thread_cases[_i].recipe, steps, worst, where);
    fflush(stdout);
    ck_assert_msg(worst <= 1e-5, "%s %s: 1 and 2 threads differ by %g", ld_kind_name(kind),
                  thread_cases[_i].recipe, worst);
    ld_model_free(m[0]);
    ld_model_free(m[1]);
    view_free(d);
}
END_TEST

/* Batch norm over one row has no variance (torch refuses it too): a batch
 * size that leaves a last batch of one row is refused up front. */
START_TEST(test_batch_norm_needs_two_rows)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 16);
    ld_train_opts_t o;
    ld_err_t err = {{0}};
    ld_model_t *m = tu_recipe_model(LD_KIND_GAN, "resmlp", 1, &o);
    ld_trainer_t *t = NULL;
    o.batch = 15;
    ck_assert_int_eq(ld_trainer_new(m, d, &o, &t, &err), LD_EINVAL);
    ck_assert_msg(strstr(err.msg, "the last has 1"), "%s", err.msg);
    o.batch = 8;
    ck_assert_msg(ld_trainer_new(m, d, &o, &t, &err) == LD_OK, "%s", err.msg);
    ld_trainer_free(t);
    ld_model_free(m);
    view_free(d);
}
END_TEST

/* The conv VAE's recipe (docs/layers.md, "Conv VAE quality"): smaller
 * batches, a higher rate, cosine; the MLP VAE keeps its own. */
START_TEST(test_conv_vae_recipe)
{
    ld_arch_t a;
    ld_train_opts_t o;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_train_recipe(LD_KIND_VAE, "conv", &a, &o, &err) == LD_OK, "%s", err.msg);
    ck_assert_int_eq(a.net, LD_NETS_CONV);
    ck_assert_int_eq(o.batch, 64);
    ck_assert_int_eq(o.epochs, 10);
    ck_assert_float_eq(o.adam.lr, 3e-3f);
    ck_assert_int_eq(o.optim.schedule, LD_SCHED_COSINE);
    ck_assert_msg(ld_train_recipe(LD_KIND_VAE, "default", &a, &o, &err) == LD_OK, "%s", err.msg);
    ck_assert_int_eq(o.batch, 128);
    ck_assert_float_eq(o.adam.lr, 1e-3f);
    ck_assert_int_eq(o.optim.schedule, LD_SCHED_CONSTANT);
}
END_TEST

/* ---- resume ------------------------------------------------------------------ */

/* Options a resume test adds to its kind's defaults, or NULL. */
static void (*g_resume_opts)(ld_train_opts_t *o);
static int g_balance_mode;

/* Straight through vs. stopped after stop_at steps (state saved) and resumed
 * by a fresh trainer on a model with other weights: bit-identical end. */
static void resume_optim_case(ld_kind_t kind, int n, int epochs, int batch, int threads,
                              long stop_at, const ld_optim_cfg_t *oc, float lr)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, n);
    ld_train_opts_t o = opts(kind, epochs, batch, 3);
    o.threads = threads;
    if (oc) {
        o.optim = *oc;
        o.adam.lr = o.adam_d.lr = lr;
    }
    if (g_resume_opts)
        g_resume_opts(&o);
    ld_model_t *straight = new_model(kind, 3), *resumed = new_model(kind, 3);
    watch_t w = {.all_finite = 1};
    ck_assert_int_eq(train(straight, d, &o, &w), LD_OK);

    char *dir = tu_mkdtemp();
    snprintf(o.state_path, sizeof o.state_path, "%s/state.safetensors", dir);
    watch_t stop = {.stop_at = stop_at, .all_finite = 1};
    ck_assert_int_eq(train(resumed, d, &o, &stop), LD_ECANCELLED);
    struct stat st;
    ck_assert_msg(stat(o.state_path, &st) == 0, "no state file after the stop");
    ck_assert(memcmp(straight->params, resumed->params, straight->n_params * sizeof(float)) != 0);

    ld_model_t *fresh = new_model(kind, 99); /* other weights: the state must bring them */
    ld_trainer_t *t = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_trainer_new(fresh, d, &o, &t, &err) == LD_OK, "%s", err.msg);
    ck_assert_msg(ld_trainer_load_state(t, o.state_path, &err) == LD_OK, "%s", err.msg);
    ld_progress_t p;
    ld_trainer_progress(t, &p);
    ck_assert_int_eq(p.step, stop_at);
    watch_t rest = {.all_finite = 1};
    ck_assert_msg(ld_trainer_run(t, watch, &rest, &err) == LD_OK, "%s", err.msg);
    ld_trainer_progress(t, &p);
    ck_assert_int_eq(p.step, p.steps_total);
    ld_trainer_free(t);

    char what[96];
    snprintf(what, sizeof what, "%s resumed after step %ld", ld_kind_name(kind), stop_at);
    assert_same_params(straight, fresh, what);
    ck_assert_str_eq(ld_record_get(&straight->record, "final_losses"),
                     ld_record_get(&fresh->record, "final_losses"));
    ck_assert_str_eq(ld_record_get(&straight->record, "steps"),
                     ld_record_get(&fresh->record, "steps"));

    /* a state file is refused by a trainer with other options */
    ld_train_opts_t other = o;
    other.seed = 4;
    ck_assert(ld_trainer_new(fresh, d, &other, &t, &err) == LD_OK);
    ck_assert_int_eq(ld_trainer_load_state(t, o.state_path, &err), LD_EINVAL);
    ld_trainer_free(t);
    if (oc) { /* and by one with the default optimiser */
        other = o;
        other.optim = (ld_optim_cfg_t){.lr_gamma = 0.1f};
        ck_assert(ld_trainer_new(fresh, d, &other, &t, &err) == LD_OK);
        ck_assert_int_eq(ld_trainer_load_state(t, o.state_path, &err), LD_EINVAL);
        ck_assert_msg(strstr(err.msg, "optim=sgd"), "%s", err.msg);
        ld_trainer_free(t);
    }

    tu_rmrf(dir);
    free(dir);
    ld_model_free(straight), ld_model_free(resumed), ld_model_free(fresh);
    view_free(d);
}

static void resume_case(ld_kind_t kind, int n, int epochs, int batch, int threads, long stop_at)
{
    resume_optim_case(kind, n, epochs, batch, threads, stop_at, NULL, 0);
}

/* SGD's momentum buffer and the schedule's position come back from the
 * state file: Nesterov with a cosine rate on two threads, mid-epoch. */
START_TEST(test_resume_sgd_cosine)
{
    const ld_optim_cfg_t oc = {.kind = LD_OPTIM_SGD, .momentum = 0.9f, .nesterov = 1,
                               .weight_decay = 1e-3f, .l1 = 1e-5f, .schedule = LD_SCHED_COSINE};
    resume_optim_case(LD_KIND_VAE, 512, 3, 64, 2, 11, &oc, 1e-3f);
}
END_TEST

/* Both GAN nets with SGD momentum and a step schedule cut inside the run. */
START_TEST(test_resume_gan_sgd_step)
{
    const ld_optim_cfg_t oc = {.kind = LD_OPTIM_SGD, .momentum = 0.5f,
                               .schedule = LD_SCHED_STEP, .lr_step = 3, .lr_gamma = 0.5f};
    resume_optim_case(LD_KIND_GAN, 64, 2, 16, 1, 5, &oc, 0.01f);
}
END_TEST

START_TEST(test_resume_vae_mid_epoch)
{
    resume_case(LD_KIND_VAE, 512, 3, 64, 1, 11); /* 8 steps per epoch: inside epoch 2 */
}
END_TEST

START_TEST(test_resume_vae_epoch_boundary)
{
    resume_case(LD_KIND_VAE, 512, 3, 64, 1, 16);
}
END_TEST

START_TEST(test_resume_gan_threads)
{
    resume_case(LD_KIND_GAN, 64, 2, 16, 2, 5); /* 4 steps per epoch */
}
END_TEST

/* Imbalanced data and a remedy (balance.h): the cut rows, the resampled
 * order and the augmentation all come back; a state file from a run
 * without them is refused. */
static void balance_opts(ld_train_opts_t *o)
{
    ld_err_t e;
    ck_assert(ld_class_fraction_parse("5:0.2,0:0.5", &o->class_fraction, &e) == LD_OK);
    o->balance = (ld_balance_t)g_balance_mode;
}

START_TEST(test_resume_balance)
{
    static const ld_kind_t kinds[] = {LD_KIND_CLASSIFIER, LD_KIND_VAE, LD_KIND_GAN};
    static const ld_balance_t modes[] = {LD_BALANCE_RESAMPLE, LD_BALANCE_WEIGHT,
                                         LD_BALANCE_AUGMENT};
    g_balance_mode = modes[_i];
    g_resume_opts = balance_opts;
    ld_kind_t kind = kinds[_i];
    if (kind == LD_KIND_GAN)
        resume_case(kind, 64, 2, 16, 2, 5);
    else
        resume_case(kind, 300, 2, 64, 2, 5);
}
END_TEST

START_TEST(test_resume_classifier)
{
    resume_case(LD_KIND_CLASSIFIER, 300, 2, 64, 1, 7); /* last batch is partial (44) */
}
END_TEST

/* ---- learning ---------------------------------------------------------------- */

START_TEST(test_vae_loss_decreases)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 1024);
    ld_train_opts_t o = opts(LD_KIND_VAE, 3, 64, 1);
    ld_model_t *m = new_model(LD_KIND_VAE, 1);
    ld_dataset_t *test = load(LD_SPLIT_TEST, 500);
    double before, after, rec, kl;
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_eval_vae(m, test, 1, &before, &rec, &kl, &err), LD_OK);
    watch_t w = {.all_finite = 1};
    train(m, d, &o, &w);
    ck_assert_int_eq(ld_eval_vae(m, test, 1, &after, &rec, &kl, &err), LD_OK);
    printf("  vae epoch losses %.1f %.1f %.1f; test -ELBO %.1f -> %.1f nats\n", w.epoch_loss[0],
           w.epoch_loss[1], w.epoch_loss[2], before, after);
    ck_assert_int_eq(w.epochs_seen, 3);
    ck_assert(w.epoch_loss[1] < w.epoch_loss[0] && w.epoch_loss[2] < w.epoch_loss[1]);
    ck_assert_msg(after < 0.8 * before, "test -ELBO %g -> %g", before, after);
    ck_assert(kl > 0);
    ld_model_free(m);
    view_free(d);
    view_free(test);
}
END_TEST

START_TEST(test_classifier_learns)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 2000), *test = load(LD_SPLIT_TEST, 1000);
    ld_train_opts_t o = opts(LD_KIND_CLASSIFIER, 2, 64, 1);
    ld_model_t *m = new_model(LD_KIND_CLASSIFIER, 1);
    double acc0, acc;
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_eval_accuracy(m, test, &acc0, &err), LD_OK);
    watch_t w = {.all_finite = 1};
    train(m, d, &o, &w);
    ck_assert_int_eq(ld_eval_accuracy(m, test, &acc, &err), LD_OK);
    printf("  classifier test accuracy %.3f -> %.3f (2 epochs on 2000 images)\n", acc0, acc);
    ck_assert_msg(acc > 0.6, "accuracy %g after 2 epochs", acc);
    ld_model_free(m);
    view_free(d);
    view_free(test);
}
END_TEST

START_TEST(test_gan_runs_finite)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 256);
    ld_train_opts_t o = opts(LD_KIND_GAN, 1, 64, 1);
    ld_model_t *m = new_model(LD_KIND_GAN, 1);
    watch_t w = {.all_finite = 1};
    train(m, d, &o, &w);
    ck_assert(w.all_finite && params_finite(m));
    ck_assert_int_eq(w.epochs_seen, 1);
    ck_assert(w.epoch_loss[0] > 0);
    ck_assert_ptr_nonnull(ld_record_get(&m->record, "final_losses"));
    ck_assert_str_eq(ld_record_get(&m->record, "real_label"), "0.9");
    float x[4 * 784];
    float z[4 * 100];
    ld_err_t err = {{0}};
    ld_model_draw_z(m, 1, 1.0f, 4, z);
    ck_assert_int_eq(ld_model_decode(m, 4, z, x, &err), LD_OK);
    for (int i = 0; i < 4 * 784; i++)
        ck_assert(x[i] >= 0 && x[i] <= 1);
    ld_model_free(m);
    view_free(d);
}
END_TEST

/* The generator average changes only what is saved: the discriminator (trained
 * against the live generator) is the same with and without it, the saved
 * generator differs, and with one step and decay d the average is exactly
 * d' * init + (1 - d') * live, d' = min(d, 2/11) at step 1. */
START_TEST(test_gan_ema)
{
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 64);
    ld_train_opts_t o0 = opts(LD_KIND_GAN, 1, 64, 3), o1 = o0;
    o0.g_ema = 0.0f;
    o1.g_ema = 0.999f;
    ld_model_t *init = new_model(LD_KIND_GAN, 3), *m0 = new_model(LD_KIND_GAN, 3),
               *m1 = new_model(LD_KIND_GAN, 3);
    watch_t w = {.all_finite = 1};
    train(m0, d, &o0, &w);
    train(m1, d, &o1, &w);
    const ld_mlp_t *G = &m0->nets[LD_GAN_G], *D = &m0->nets[LD_GAN_D];
    ck_assert_msg(memcmp(m0->params + D->off, m1->params + D->off, D->n_params * sizeof(float)) == 0,
                  "the average must not change training");
    ck_assert(memcmp(m0->params + G->off, m1->params + G->off, G->n_params * sizeof(float)) != 0);
    float dd = 2.0f / 11.0f;
    for (size_t i = G->off; i < G->off + G->n_params; i++) {
        float want = dd * init->params[i] + (1.0f - dd) * m0->params[i];
        ck_assert_msg(fabsf(m1->params[i] - want) <= 1e-6f * (1 + fabsf(want)),
                      "ema[%zu] = %g, want %g", i, m1->params[i], want);
    }
    ck_assert_str_eq(ld_record_get(&m1->record, "g_ema"), "0.999");
    ld_model_free(init);
    ld_model_free(m0);
    ld_model_free(m1);
    view_free(d);
}
END_TEST

/* ---- checkpoints ------------------------------------------------------------- */

static void assert_same_arch(const ld_arch_t *a, const ld_arch_t *b)
{
    char ja[1024], jb[1024];
    ck_assert_int_gt(ld_arch_to_json(a, ja, sizeof ja), 0);
    ck_assert_int_gt(ld_arch_to_json(b, jb, sizeof jb), 0);
    ck_assert_str_eq(ja, jb);
}

/* Train briefly (so the record is real), save, load: params bit-exact, same
 * architecture (dropout included) and record. */
START_TEST(test_save_load_round_trip)
{
    static const ld_kind_t kinds[] = {LD_KIND_VAE, LD_KIND_GAN, LD_KIND_CLASSIFIER};
    ld_dataset_t *d = load(LD_SPLIT_TRAIN, 64);
    char *dir = tu_mkdtemp(), path[4200];
    for (size_t k = 0; k < LD_ARRAY_LEN(kinds); k++) {
        ld_model_t *m = new_model(kinds[k], 7), *back = NULL;
        ld_train_opts_t o = opts(kinds[k], 1, 32, 7);
        watch_t w = {.all_finite = 1};
        train(m, d, &o, &w);
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, ld_kind_name(kinds[k]));
        ld_err_t err = {{0}};
        ck_assert_msg(ld_model_save(m, path, &err) == LD_OK, "%s", err.msg);
        ck_assert_msg(ld_model_load(path, &back, &err) == LD_OK, "%s", err.msg);
        assert_same_arch(&m->arch, &back->arch);
        assert_same_params(m, back, ld_kind_name(kinds[k]));
        ck_assert(m->record.n >= 6);
        ck_assert_int_eq(back->record.n, m->record.n);
        for (int i = 0; i < m->record.n; i++) {
            const char *v = ld_record_get(&back->record, m->record.key[i]);
            ck_assert_msg(v != NULL, "record key %s lost", m->record.key[i]);
            ck_assert_str_eq(v, m->record.val[i]);
        }
        static const char *const keys[] = {"data", "epochs", "seed", "final_losses", "started",
                                           "finished"};
        for (size_t i = 0; i < LD_ARRAY_LEN(keys); i++)
            ck_assert_msg(ld_record_get(&back->record, keys[i]), "record lacks %s", keys[i]);
        ld_model_free(m);
        ld_model_free(back);
    }
    tu_rmrf(dir);
    free(dir);
    view_free(d);
}
END_TEST

/* Tensors only (no __metadata__, as a plain PyTorch save_file): the kind and
 * architecture are inferred from names and shapes; non-default sizes so that
 * nothing comes from the defaults by luck. */
START_TEST(test_load_without_metadata)
{
    ld_arch_t arches[3];
    ld_arch_default(LD_KIND_VAE, &arches[0]);
    arches[0].z_dim = 7;
    arches[0].enc = (ld_hidden_t){3, {100, 50, 30}};
    arches[0].dec = (ld_hidden_t){1, {40}};
    ld_arch_default(LD_KIND_GAN, &arches[1]);
    arches[1].z_dim = 32;
    arches[1].dec = (ld_hidden_t){3, {40, 60, 80}};
    arches[1].enc = (ld_hidden_t){1, {50}};
    ld_arch_default(LD_KIND_CLASSIFIER, &arches[2]);
    arches[2].n_classes = 7;
    arches[2].enc = (ld_hidden_t){1, {33}};
    char *dir = tu_mkdtemp(), path[4200];
    for (int k = 0; k < 3; k++) {
        ld_model_t *m = NULL, *back = NULL;
        ld_err_t err = {{0}};
        ck_assert_msg(ld_model_new(&arches[k], 11, &m, &err) == LD_OK, "%s", err.msg);
        ld_tensor_view_t tv[64];
        int n = ld_model_tensors(m, m->params, tv, 64);
        snprintf(path, sizeof path, "%s/plain%d.safetensors", dir, k);
        ck_assert_msg(ld_ckpt_write(path, tv, n, NULL, 0, &err) == LD_OK, "%s", err.msg);
        ld_ckpt_t *c = NULL;
        ck_assert_int_eq(ld_ckpt_read(path, &c, &err), LD_OK);
        ck_assert_int_eq(c->n_meta, 0);
        ld_ckpt_free(c);
        ck_assert_msg(ld_model_load(path, &back, &err) == LD_OK, "%s: %s",
                      ld_kind_name(arches[k].kind), err.msg);
        ck_assert_int_eq(back->arch.kind, arches[k].kind);
        ck_assert_int_eq(back->arch.img_h, 28);
        ck_assert_int_eq(back->arch.act, LD_ACT_LRELU);
        ck_assert(back->arch.slope == 0.2f);
        /* dropout is training-only and not in the tensors: whatever the loader
         * assumes for it, everything else must be what was written */
        ld_arch_t got = back->arch;
        ck_assert(got.dropout >= 0 && got.dropout < 1);
        got.dropout = arches[k].dropout;
        assert_same_arch(&arches[k], &got);
        assert_same_params(m, back, "inferred");
        ld_model_free(m);
        ld_model_free(back);
    }
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A state dict with more layers than latentd supports is refused with an error
 * that names the net, and without writing past ld_hidden_t.size[] (one more
 * hidden width would land in the next field of ld_arch_t: for a generator, the
 * activation; hidden widths of 9 make that an invalid activation). */
START_TEST(test_load_too_many_layers)
{
    static const char *const nets[3][2] = {
        {"encoder", "decoder"}, {"generator", "discriminator"}, {"classifier", NULL}};
    char *dir = tu_mkdtemp(), path[4200], bad[600] = "";
    static float w[16 * 16], b[16]; /* zeros; shapes are what matters */
    for (int k = 0; k < 3; k++) {
        ld_tensor_view_t tv[64];
        int n = 0;
        /* the first net one layer too deep, the second (and mu/logvar) valid */
        for (int net = 0; net < 2 && nets[k][net]; net++) {
            int layers = net == 0 ? LD_MAX_LAYERS + 1 : 2;
            for (int i = 0; i < layers; i++) {
                int in = i == 0 ? 4 : 9, out = 9;
                if (k == 1 && net == 0) /* generator: z 4 -> 9 ... -> 16 */
                    out = i + 1 == layers ? 16 : 9;
                else if (i == 0 && !(k == 0 && net == 1))
                    in = 16;
                if (k == 0 && net == 1 && i + 1 == layers)
                    out = 16; /* decoder output */
                if (k == 1 && net == 1 && i + 1 == layers)
                    out = 1;
                tv[n] = (ld_tensor_view_t){.ndim = 2, .shape = {out, in}, .numel = (size_t)out * in, .data = w};
                snprintf(tv[n++].name, LD_CKPT_NAME_MAX, "%s.%d.weight", nets[k][net], i);
                tv[n] = (ld_tensor_view_t){.ndim = 1, .shape = {out}, .numel = (size_t)out, .data = b};
                snprintf(tv[n++].name, LD_CKPT_NAME_MAX, "%s.%d.bias", nets[k][net], i);
            }
        }
        if (k == 0)
            for (int h = 0; h < 2; h++) {
                const char *hn = h ? "logvar" : "mu";
                tv[n] = (ld_tensor_view_t){.ndim = 2, .shape = {4, 9}, .numel = 36, .data = w};
                snprintf(tv[n++].name, LD_CKPT_NAME_MAX, "%s.weight", hn);
                tv[n] = (ld_tensor_view_t){.ndim = 1, .shape = {4}, .numel = 4, .data = b};
                snprintf(tv[n++].name, LD_CKPT_NAME_MAX, "%s.bias", hn);
            }
        snprintf(path, sizeof path, "%s/deep%d.safetensors", dir, k);
        ld_err_t err = {{0}};
        ck_assert_msg(ld_ckpt_write(path, tv, n, NULL, 0, &err) == LD_OK, "%s", err.msg);
        ld_model_t *m = NULL;
        int rc = ld_model_load(path, &m, &err);
        printf("  %d-layer %s: rc %d, %s\n", LD_MAX_LAYERS + 1, nets[k][0], rc, err.msg);
        ld_model_free(m);
        if (rc == LD_OK)
            snprintf(bad, sizeof bad, "%s with %d layers was accepted", nets[k][0],
                     LD_MAX_LAYERS + 1);
        else if (!strstr(err.msg, nets[k][0]) && !bad[0])
            snprintf(bad, sizeof bad, "%s: unclear error \"%.400s\"", nets[k][0], err.msg);
    }
    tu_rmrf(dir);
    free(dir);
    ck_assert_msg(!bad[0], "%s", bad);
}
END_TEST

Suite *suite_train(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("train");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, data_setup, data_teardown);
    tcase_add_test(tc, test_determinism_vae);
    tcase_add_test(tc, test_determinism_gan_threads);
    tcase_add_loop_test(tc, test_threads_agree, 0, (int)LD_ARRAY_LEN(thread_cases));
    tcase_add_test(tc, test_batch_norm_needs_two_rows);
    tcase_add_test(tc, test_conv_vae_recipe);
    tcase_add_test(tc, test_resume_vae_mid_epoch);
    tcase_add_test(tc, test_resume_sgd_cosine);
    tcase_add_test(tc, test_resume_gan_sgd_step);
    tcase_add_test(tc, test_resume_vae_epoch_boundary);
    tcase_add_test(tc, test_resume_gan_threads);
    tcase_add_test(tc, test_resume_classifier);
    tcase_add_loop_test(tc, test_resume_balance, 0, 3);
    tcase_add_test(tc, test_vae_loss_decreases);
    tcase_add_test(tc, test_classifier_learns);
    tcase_add_test(tc, test_gan_runs_finite);
    tcase_add_test(tc, test_gan_ema);
    tcase_add_test(tc, test_save_load_round_trip);
    tcase_add_test(tc, test_load_without_metadata);
    tcase_add_test(tc, test_load_too_many_layers);
    suite_add_tcase(s, tc);
    return s;
}

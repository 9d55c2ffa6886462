/* main.c — the `latentd` command line: train, sample, eval, info, serve.
 * Only this file calls exit(); everything below returns status codes. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/data.h"
#include "latentd/dist.h"
#include "latentd/eval.h"
#include "latentd/image.h"
#include "latentd/invert.h"
#include "latentd/model.h"
#include "latentd/fsutil.h"
#include "latentd/serve.h"
#include "latentd/jobspec.h"
#include "latentd/train.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LATENTD_VERSION "0.1.0"

/* ---- a table-driven flag parser ---- */

typedef enum { F_INT, F_U64, F_FLOAT, F_STR, F_BOOL } ftype_t;
typedef struct {
    const char *name; /* without the leading "--" */
    ftype_t type;
    void *ptr;
    double min, max;
    const char *help;
    int seen;
} flag_t;

static int parse_flags(int argc, char **argv, flag_t *flags, int nflags, const char **positional)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (positional && !*positional) {
                *positional = a;
                continue;
            }
            fprintf(stderr, "latentd %s: unexpected argument '%s'\n", argv[0], a);
            return -1;
        }
        const char *name = a + 2, *val = NULL;
        char buf[64];
        const char *eq = strchr(name, '=');
        if (eq) {
            snprintf(buf, sizeof buf, "%.*s", (int)(eq - name), name);
            name = buf;
            val = eq + 1;
        }
        flag_t *f = NULL;
        for (int k = 0; k < nflags; k++)
            if (!strcmp(flags[k].name, name))
                f = &flags[k];
        if (!f) {
            fprintf(stderr, "latentd %s: unknown flag --%s (see latentd %s --help)\n", argv[0],
                    name, argv[0]);
            return -1;
        }
        f->seen = 1;
        if (f->type == F_BOOL) {
            *(int *)f->ptr = 1;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "latentd %s: --%s needs a value\n", argv[0], name);
                return -1;
            }
            val = argv[++i];
        }
        char *end = NULL;
        errno = 0;
        if (f->type == F_STR) {
            *(const char **)f->ptr = val;
            continue;
        }
        double d = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(d) || d < f->min || d > f->max ||
            (f->type != F_FLOAT && d != floor(d))) {
            fprintf(stderr, "latentd %s: --%s %s: expected %s in [%g, %g]\n", argv[0], name, val,
                    f->type == F_FLOAT ? "a number" : "an integer", f->min, f->max);
            return -1;
        }
        if (f->type == F_INT)
            *(int *)f->ptr = (int)d;
        else if (f->type == F_U64)
            *(uint64_t *)f->ptr = (uint64_t)strtoull(val, NULL, 10);
        else
            *(float *)f->ptr = (float)d;
    }
    return 0;
}

static void print_flags(const char *usage, const flag_t *flags, int n)
{
    printf("usage: %s\n\n", usage);
    for (int i = 0; i < n; i++)
        printf("  --%-16s %s\n", flags[i].name, flags[i].help);
}

/* --optimizer and its options; NAN (or NULL) = not given, and the range
 * checks are ld_optim_validate's, so the CLI and job specs say the same. */
typedef struct {
    const char *optimizer, *schedule;
    float weight_decay, l1, momentum, lr_gamma;
    int nesterov, lr_step;
} optim_flags_t;

static optim_flags_t optim_flags_init(void)
{
    return (optim_flags_t){NULL, NULL, NAN, NAN, NAN, NAN, 0, 0};
}

#define OPTIM_FLAGS(of)                                                                              \
    {"optimizer", F_STR, &(of).optimizer, 0, 0, "adam | adamw | sgd (adam)", 0},                     \
    {"weight-decay", F_FLOAT, &(of).weight_decay, -1e9, 1e9,                                         \
     "L2 weight decay: adam and sgd add wd*w to the gradient, adamw decays w by lr*wd (0)", 0},     \
    {"l1", F_FLOAT, &(of).l1, -1e9, 1e9, "L1 penalty: l1*sign(w) added to the gradient (0)", 0},     \
    {"momentum", F_FLOAT, &(of).momentum, -1e9, 1e9, "sgd momentum in [0,1) (0)", 0},               \
    {"nesterov", F_BOOL, &(of).nesterov, 0, 0, "sgd: Nesterov momentum (needs --momentum)", 0},     \
    {"lr-schedule", F_STR, &(of).schedule, 0, 0,                                                     \
     "constant | cosine (to 0 over the run) | step (x lr-gamma every lr-step updates); "           \
     "constant but for vae --arch conv (cosine)", 0},                                              \
    {"lr-step", F_INT, &(of).lr_step, -1e9, 1e9, "step schedule: updates between cuts", 0},         \
    {"lr-gamma", F_FLOAT, &(of).lr_gamma, -1e9, 1e9, "step schedule: factor per cut (0.1)", 0}

/* Onto c (the recipe's); 0, or -1 after a message for an unknown name. */
static int optim_flags_apply(const optim_flags_t *f, ld_optim_cfg_t *c)
{
    if (f->optimizer && ld_optim_parse(f->optimizer, &c->kind)) {
        fprintf(stderr, "latentd train: --optimizer %s: expected adam, adamw or sgd\n", f->optimizer);
        return -1;
    }
    if (f->schedule && ld_sched_parse(f->schedule, &c->schedule)) {
        fprintf(stderr, "latentd train: --lr-schedule %s: expected constant, cosine or step\n",
                f->schedule);
        return -1;
    }
    const float *v[4] = {&f->weight_decay, &f->l1, &f->momentum, &f->lr_gamma};
    float *dst[4] = {&c->weight_decay, &c->l1, &c->momentum, &c->lr_gamma};
    for (int i = 0; i < 4; i++)
        if (!isnan(*v[i]))
            *dst[i] = *v[i];
    c->nesterov = c->nesterov || f->nesterov;
    if (f->lr_step)
        c->lr_step = f->lr_step;
    return 0;
}

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

/* "128,64" -> hidden list */
static int parse_hidden(const char *s, ld_hidden_t *h, const char *flag)
{
    h->n = 0;
    if (!strcmp(s, "") || !strcmp(s, "none"))
        return 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > LD_MAX_WIDTH || h->n == LD_MAX_HIDDEN ||
            (*end && *end != ',')) {
            fprintf(stderr, "latentd train: --%s %s: expected up to %d comma-separated widths in 1..%d\n",
                    flag, s, LD_MAX_HIDDEN, LD_MAX_WIDTH);
            return -1;
        }
        h->size[h->n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return 0;
}

static void load_err(const char *cmd, const ld_err_t *e) { fprintf(stderr, "latentd %s: %s\n", cmd, e->msg); }

/* ---- train ---- */

static volatile sig_atomic_t g_interrupted;
static int g_train_stopped; /* the trainer returned LD_ECANCELLED (on every rank) */
static void on_sigint(int sig) { (void)sig; g_interrupted = 1; }

typedef struct {
    int tty;
    double last;
    int lines;   /* --progress-lines: one JSON line per step on stdout */
} progress_ui_t;

/* One step as a JSON line on stdout, flushed: what a daemon job that runs
 * `latentd train` as MPI ranks reads (jobs_mpi.c). */
static void progress_line(const ld_progress_t *p)
{
    printf("{\"step\":%ld,\"steps_total\":%ld,\"epoch\":%d,\"epochs\":%d,"
           "\"samples_per_s\":%.6g,\"eta_s\":%.6g,\"elapsed_s\":%.6g,"
           "\"epoch_done\":%d,\"finished\":%d,\"loss\":[",
           p->step, p->steps_total, p->epoch, p->epochs, p->samples_per_s, p->eta_s, p->elapsed_s,
           p->epoch_done, p->finished);
    for (int i = 0; i < p->n_losses; i++)
        printf("%s%.9g", i ? "," : "", p->loss[i]);
    printf("]}\n");
    fflush(stdout);
}

static int cli_progress(const ld_progress_t *p, void *user)
{
    progress_ui_t *ui = user;
    if (ld_dist_rank() != 0) /* MPI: rank 0 alone logs */
        return g_interrupted;
    if (ui->lines)
        progress_line(p);
    double now = ld_now();
    if (ui->tty && (now - ui->last > 0.1 || p->epoch_done)) {
        ui->last = now;
        int width = 24, fill = (int)(width * (double)p->step / (double)p->steps_total);
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r\033[Kepoch %d/%d [%s] step %ld/%ld", p->epoch, p->epochs, bar, p->step,
                p->steps_total);
        for (int i = 0; i < p->n_losses; i++)
            fprintf(stderr, " %s %.4g", p->loss_names[i], p->loss[i]);
        fprintf(stderr, " | %.0f samples/s ETA %.0fs", p->samples_per_s, p->eta_s);
        if (p->epoch_done)
            fputc('\n', stderr);
    } else if (!ui->tty && p->epoch_done) {
        fprintf(stderr, "epoch %d/%d step %ld/%ld", p->epoch, p->epochs, p->step, p->steps_total);
        for (int i = 0; i < p->n_losses; i++)
            fprintf(stderr, " %s=%.6g", p->loss_names[i], p->loss[i]);
        fprintf(stderr, " samples/s=%.0f eta_s=%.0f\n", p->samples_per_s, p->eta_s);
    }
    return g_interrupted;
}

/* A job spec file (jobspec.h) for --spec; 0, or 1 after printing why not. */
static int load_spec(const char *path, ld_jobspec_t *js)
{
    uint8_t *body;
    size_t len;
    ld_err_t e;
    if (ld_read_file(path, 1 << 20, &body, &len, &e) ||
        (ld_jobspec_parse((const char *)body, len, NULL, 0, js, &e) && (free(body), 1))) {
        fprintf(stderr, "latentd train: --spec %s: %s\n", path, e.msg);
        return 1;
    }
    free(body);
    return 0;
}

/* A spec's images take the data set's shape, as a job in the daemon does. */
static int spec_image_shape(ld_arch_t *arch, const ld_dataset_t *d, ld_err_t *err)
{
    arch->img_h = d->h;
    arch->img_w = d->w;
    arch->x_dim = d->dim;
    return ld_arch_validate(arch, err);
}

/* --class-fraction and --balance into o; 0, or 1 after printing why not. */
static int train_balance_flags(const char *cf, const char *balance, ld_train_opts_t *o)
{
    ld_err_t e;
    if (cf && ld_class_fraction_parse(cf, &o->class_fraction, &e)) {
        fprintf(stderr, "latentd train: --class-fraction: %s\n", e.msg);
        return 1;
    }
    if (balance && ld_balance_parse(balance, &o->balance)) {
        fprintf(stderr, "latentd train: --balance %s: expected none, resample, weight or augment\n",
                balance);
        return 1;
    }
    return 0;
}

static int cmd_train(int argc, char **argv)
{
    const char *kind_s = "vae", *data = "fashion-mnist", *out = NULL, *hidden = NULL,
               *dec_hidden = NULL, *g_hidden = NULL, *d_hidden = NULL, *arch_s = "default",
               *act_s = NULL, *loss_s = NULL, *state = NULL, *spec_path = NULL,
               *class_fraction = NULL, *balance_s = NULL;
    int epochs = 0, batch = 0, z = 0, limit = 0, threads = 0, blas_threads = 1, resume = 0,
        classes = 10, lines = 0;
    long every = 0;
    int every_i = 0;
    uint64_t seed = 1;
    float lr = 0, lr_d = 0, beta1 = -1, beta2 = -1, slope = -1, dropout = -1, real_label = -1,
          kl_beta = -1, ema = -1, gp = -1;
    int n_critic = 0;
    optim_flags_t of = optim_flags_init();
    flag_t flags[] = {
        {"kind", F_STR, &kind_s, 0, 0, "vae | gan | classifier | cgan | cvae (default vae)", 0},
        {"data", F_STR, &data, 0, 0, "fashion-mnist | IDX file or folder | PNG folder", 0},
        {"epochs", F_INT, &epochs, 1, 100000, "passes over the data (vae 10, gan 20, classifier 10)", 0},
        {"batch", F_INT, &batch, 1, 65536, "batch size (vae 128, vae --arch conv 64, gan 64, classifier 128)", 0},
        {"lr", F_FLOAT, &lr, 1e-9, 1, "learning rate, the schedule's base (vae 1e-3, vae --arch conv 3e-3, gan wgan-gp 1e-4, ns 2e-4)", 0},
        {"lr-d", F_FLOAT, &lr_d, 1e-9, 1, "GAN discriminator learning rate (default --lr)", 0},
        {"beta1", F_FLOAT, &beta1, 0, 0.999999, "Adam beta1 (vae 0.9, gan wgan-gp 0, ns 0.5)", 0},
        {"beta2", F_FLOAT, &beta2, 0, 0.999999, "Adam beta2 (0.999; gan wgan-gp 0.9)", 0},
        {"seed", F_U64, &seed, 0, 1.8e19, "random seed (1)", 0},
        {"arch", F_STR, &arch_s, 0, 0, "default | article (GAN: the reference article's nets) | dcgan (GAN) | conv (VAE) | resmlp", 0},
        {"hidden", F_STR, &hidden, 0, 0, "VAE encoder / classifier hidden widths, e.g. 128,64", 0},
        {"dec-hidden", F_STR, &dec_hidden, 0, 0, "VAE decoder widths (default: --hidden reversed)", 0},
        {"g-hidden", F_STR, &g_hidden, 0, 0, "GAN generator widths (256,512)", 0},
        {"d-hidden", F_STR, &d_hidden, 0, 0, "GAN discriminator widths (512,256)", 0},
        {"z", F_INT, &z, 1, 1024, "latent size (vae 20, gan 100)", 0},
        {"classes", F_INT, &classes, 2, 256, "classifier outputs (10)", 0},
        {"act", F_STR, &act_s, 0, 0, "leaky_relu | relu | tanh | sigmoid (leaky_relu)", 0},
        {"slope", F_FLOAT, &slope, 0, 0.999, "leaky ReLU slope (0.2)", 0},
        {"dropout", F_FLOAT, &dropout, 0, 0.95, "GAN discriminator / classifier dropout (0.3 / 0.2)", 0},
        {"real-label", F_FLOAT, &real_label, 0.01, 1, "GAN target for real images; 0.9 = one-sided smoothing (gan 0.9)", 0},
        {"loss", F_STR, &loss_s, 0, 0, "GAN loss: ns (non-saturating) | minimax | wgan-gp | hinge | lsgan (gan wgan-gp, else ns)", 0},
        {"n-critic", F_INT, &n_critic, 1, 100, "GAN discriminator steps per generator step (wgan-gp 5, else 1)", 0},
        {"gp", F_FLOAT, &gp, 0, 1e6, "wgan-gp gradient-penalty weight (10)", 0},
        {"ema", F_FLOAT, &ema, 0, 0.99999, "GAN: average of generator weights, decay (gan 0.999, 0 = off)", 0},
        {"kl-beta", F_FLOAT, &kl_beta, 0, 1000, "VAE weight of the KL term (1)", 0},
        OPTIM_FLAGS(of),
        {"limit", F_INT, &limit, 0, 1e9, "train on the first N examples only", 0},
        {"threads", F_INT, &threads, 0, 16, "data-parallel training threads (default: all cores)", 0},
        {"blas-threads", F_INT, &blas_threads, 1, 64, "OpenBLAS threads inside each (1)", 0},
        {"checkpoint-every", F_INT, &every_i, 0, 1e9, "write --state every N steps", 0},
        {"state", F_STR, &state, 0, 0, "training-state file (model + optimiser) for resuming", 0},
        {"resume", F_BOOL, &resume, 0, 0, "continue from --state", 0},
        {"out", F_STR, &out, 0, 0, "output checkpoint FILE.safetensors (required)", 0},
        {"spec", F_STR, &spec_path, 0, 0, "a job spec (JSON, POST /v1/jobs): its kind, limit, arch, train and checkpoint_every replace the flags", 0},
        {"progress-lines", F_BOOL, &lines, 0, 0, "one JSON line per step on stdout", 0},
        {"class-fraction", F_STR, &class_fraction, 0, 0, "keep a fraction of classes' images, e.g. 5:0.05,9:0.1 (labels needed)", 0},
        {"balance", F_STR, &balance_s, 0, 0, "imbalance remedy: none | resample | weight (vae, cvae, classifier, cgan) | augment", 0},
    };
    int nf = (int)LD_ARRAY_LEN(flags);
    if (wants_help(argc, argv)) {
        print_flags("latentd train --kind vae|gan|classifier --data fashion-mnist|PATH --out FILE.safetensors [flags]", flags, nf);
        return 0;
    }
    if (parse_flags(argc, argv, flags, nf, NULL))
        return 2;
    if (!out) {
        fprintf(stderr, "latentd train: --out FILE.safetensors is required\n");
        return 2;
    }
    every = every_i;
    ld_kind_t kind;
    if (ld_kind_parse(kind_s, &kind)) {
        fprintf(stderr, "latentd train: --kind %s: expected vae, gan, classifier, cgan or cvae\n", kind_s);
        return 2;
    }
    ld_arch_t arch;
    ld_train_opts_t o;
    ld_err_t re;
    if (ld_train_recipe(kind, arch_s, &arch, &o, &re)) {
        fprintf(stderr, "latentd train: --arch: %s\n", re.msg);
        return 2;
    }
    if (hidden && parse_hidden(hidden, &arch.enc, "hidden"))
        return 2;
    if (ld_kind_family(kind) == LD_KIND_VAE && hidden && !dec_hidden)
        ld_train_mirror_decoder(&arch);
    if ((dec_hidden && parse_hidden(dec_hidden, &arch.dec, "dec-hidden")) ||
        (g_hidden && parse_hidden(g_hidden, &arch.dec, "g-hidden")) ||
        (d_hidden && parse_hidden(d_hidden, &arch.enc, "d-hidden")))
        return 2;
    if (z)
        arch.z_dim = z;
    if (kind == LD_KIND_CLASSIFIER)
        arch.n_classes = classes;
    if (act_s && ld_act_parse(act_s, &arch.act)) {
        fprintf(stderr, "latentd train: --act %s: expected leaky_relu, relu, tanh or sigmoid\n", act_s);
        return 2;
    }
    if (slope >= 0)
        arch.slope = slope;
    if (dropout >= 0)
        arch.dropout = dropout;
    ld_gan_loss_t gan_loss = LD_GAN_LOSS_NS;
    if (loss_s && ld_gan_loss_parse(loss_s, &gan_loss)) {
        fprintf(stderr, "latentd train: --loss %s: expected " LD_GAN_LOSS_LIST "\n", loss_s);
        return 2;
    }
    if (loss_s && ld_kind_family(kind) == LD_KIND_GAN)
        ld_train_set_loss(&o, gan_loss); /* its defaults first: the flags below win */
    if (n_critic)
        o.n_critic = n_critic;
    if (gp >= 0)
        o.gp = gp;
    if (epochs)
        o.epochs = epochs;
    if (batch)
        o.batch = batch;
    o.seed = seed;
    if (lr > 0)
        o.adam.lr = o.adam_d.lr = lr;
    if (lr_d > 0)
        o.adam_d.lr = lr_d;
    if (beta1 >= 0)
        o.adam.beta1 = o.adam_d.beta1 = beta1;
    if (beta2 >= 0)
        o.adam.beta2 = o.adam_d.beta2 = beta2;
    if (real_label > 0)
        o.real_label = real_label;
    if (kl_beta >= 0)
        o.kl_beta = kl_beta;
    if (ema >= 0)
        o.g_ema = ema;
    if (optim_flags_apply(&of, &o.optim))
        return 2;
    if (train_balance_flags(class_fraction, balance_s, &o))
        return 2;
    ld_jobspec_t js;
    if (spec_path && load_spec(spec_path, &js))
        return 2;
    if (spec_path) {
        kind = js.kind;
        arch = js.arch;
        o = js.train;
        seed = o.seed;
        limit = js.limit;
        every = o.checkpoint_every;
    }
    if (state)
        snprintf(o.state_path, sizeof o.state_path, "%s", state);
    o.checkpoint_every = every;
    if (resume && !state) {
        fprintf(stderr, "latentd train: --resume needs --state FILE\n");
        return 2;
    }
    ld_err_t e;
    if (ld_arch_validate(&arch, &e) || ld_train_opts_validate(&o, &e) ||
        ld_train_check_arch(&arch, &o, &e)) {
        load_err("train", &e);
        return 2;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* MPI ranks default to one thread each: one rank per core */
    o.threads = threads > 0 ? threads : ld_dist_size() > 1 ? 1 : ncpu > 16 ? 16 : ncpu > 0 ? (int)ncpu : 1;
    ld_blas_threads(blas_threads);

    ld_dataset_t *d = NULL;
    ld_model_t *m = NULL;
    ld_trainer_t *t = NULL;
    int rc = 1;
    if (ld_data_load(data, LD_SPLIT_TRAIN, limit, &d, &e)) {
        load_err("train", &e);
        goto done;
    }
    if (ld_kind_ops(arch.kind)->conditional && d->n_classes > 0)
        arch.n_classes = d->n_classes; /* a conditional model's labels are the data's */
    if (ld_train_balance_check(kind, d, &o, &e)) { /* bad flags: nothing written */
        load_err("train", &e);
        rc = 2;
        goto done;
    }
    if ((spec_path && spec_image_shape(&arch, d, &e)) || ld_model_new(&arch, seed, &m, &e) ||
        ld_trainer_new(m, d, &o, &t, &e) || (resume && ld_trainer_load_state(t, state, &e))) {
        load_err("train", &e);
        goto done;
    }
    char desc[256];
    ld_arch_describe(&arch, desc, sizeof desc);
    if (ld_dist_rank() == 0)
        fprintf(stderr, "train: %s on %s (%d images), %d epochs, batch %d, lr %g, seed %" PRIu64
                    ", %d thread%s\n",
            desc, d->name, d->n, o.epochs, o.batch, (double)o.adam.lr, o.seed, o.threads,
            o.threads == 1 ? "" : "s");
    if (ld_dist_rank() == 0 && (o.class_fraction.n > 0 || o.balance != LD_BALANCE_NONE)) {
        char cf[LD_BAL_MAX_CLASSES * 16];
        ld_class_fraction_format(&o.class_fraction, cf, sizeof cf);
        fprintf(stderr, "train: class fraction %s keeps %d of %d images; balance %s\n",
                cf[0] ? cf : "none", ld_trainer_examples(t), d->n, ld_balance_name(o.balance));
    }
    if (ld_dist_rank() == 0 && ld_dist_size() > 1)
        fprintf(stderr, "train: %d MPI ranks, each with %d thread%s on its share of every batch\n",
                ld_dist_size(), o.threads, o.threads == 1 ? "" : "s");
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* mpirun forwards it to every rank: a job's stop */
    progress_ui_t ui = {isatty(2), 0, lines};
    ld_dist_stats_t ds0; /* collectives of this run only, not of the start-up */
    ld_dist_stats(&ds0);
    int trc = ld_trainer_run(t, cli_progress, &ui, &e);
    g_train_stopped = trc == LD_ECANCELLED;
    if (trc) {
        load_err("train", &e);
        if (trc == LD_ECANCELLED && state)
            fprintf(stderr, "train: state saved to %s; continue with --resume\n", state);
        goto done;
    }
    if (ld_dist_rank() != 0) { /* MPI: rank 0 alone writes the model */
        rc = 0;
        goto done;
    }
    if (ld_model_save(m, out, &e)) {
        load_err("train", &e);
        goto done;
    }
    ld_progress_t p;
    ld_trainer_progress(t, &p);
    printf("trained %s: %ld steps in %.1fs (%.0f samples/s, %.1f GFLOP/s)", ld_kind_name(kind),
           p.step, p.elapsed_s, p.samples_per_s,
           p.samples_per_s * ld_train_flops_per_sample(m) * 1e-9);
    for (int i = 0; i < p.n_losses; i++)
        printf(", %s %.4f", p.loss_names[i], p.loss[i]);
    printf(" -> %s\n", out);
    if (ld_dist_size() > 1) {
        ld_dist_stats_t ds;
        ld_dist_stats(&ds);
        ds.calls -= ds0.calls, ds.bytes -= ds0.bytes, ds.seconds -= ds0.seconds;
        printf("ranks %d x %d thread%s: %ld collectives, %.3g MB sent, %.2fs of %.2fs in them (%.1f%%)\n",
               ld_dist_size(), o.threads, o.threads == 1 ? "" : "s", ds.calls, ds.bytes * 1e-6,
               ds.seconds, p.elapsed_s, p.elapsed_s > 0 ? 100 * ds.seconds / p.elapsed_s : 0);
    }
    rc = 0;
done:
    ld_trainer_free(t);
    ld_model_free(m);
    ld_data_free(d);
    return rc;
}

/* `latentd train`, under mpirun one rank of several (dist.h).  A rank that
 * fails on its own ends every rank, so none waits for it in a collective; a
 * stop (signal) is agreed by all ranks, which then return together. */
static int cmd_train_dist(int argc, char **argv)
{
    ld_err_t e;
    if (ld_dist_init(&argc, &argv, &e)) {
        load_err("train", &e);
        return 2;
    }
    int rc = cmd_train(argc, argv);
    if (rc && !g_train_stopped && ld_dist_size() > 1)
        ld_dist_abort(rc);
    ld_dist_finalize();
    return rc;
}

/* ---- sample ---- */

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* The labels of `latentd sample` (n): every one label (a name or an index), or
 * each class in turn; NULL for a model that is not conditional.  1 after a
 * message when label is unknown or given to such a model. */
static int sample_labels(const ld_model_t *m, const char *label, int n, uint8_t **out)
{
    *out = NULL;
    if (!m->ops->conditional) {
        if (label)
            fprintf(stderr, "latentd sample: --label: the model is %s; only cgan and cvae models "
                            "take a class\n", m->ops->article);
        return label != NULL;
    }
    int k = label ? ld_model_class_parse(m, label) : 0;
    if (k < 0) {
        char list[2048];
        ld_model_class_list(m, list, sizeof list);
        fprintf(stderr, "latentd sample: --label %s: unknown class; the model has %s\n", label,
                list);
        return 1;
    }
    if (!(*out = malloc((size_t)n)))
        return 1;
    for (int i = 0; i < n; i++)
        (*out)[i] = (uint8_t)(label ? k : i % m->arch.n_classes);
    return 0;
}

static int cmd_sample(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *label = NULL;
    int n = 64, cols = 0;
    uint64_t seed = 1;
    float temp = 1.0f;
    flag_t flags[] = {
        {"model", F_STR, &model, 0, 0, "checkpoint FILE.safetensors (required)", 0},
        {"label", F_STR, &label, 0, 0, "cgan, cvae: class NAME or INDEX of every image (default: each class in turn)", 0},
        {"n", F_INT, &n, 1, 100000, "number of images (64)", 0},
        {"seed", F_U64, &seed, 0, 1.8e19, "random seed (1)", 0},
        {"temperature", F_FLOAT, &temp, 0, 10, "latent standard deviation (1)", 0},
        {"cols", F_INT, &cols, 0, 1000, "grid columns for .png (default sqrt(n))", 0},
        {"out", F_STR, &out, 0, 0, "OUT.png (grid) or OUT.npy (float32 (n, pixels))", 0},
    };
    int nf = (int)LD_ARRAY_LEN(flags);
    if (wants_help(argc, argv)) {
        print_flags("latentd sample --model FILE --n N --seed S --out OUT.png|OUT.npy", flags, nf);
        return 0;
    }
    if (parse_flags(argc, argv, flags, nf, NULL))
        return 2;
    if (!model || !out || (!ends_with(out, ".png") && !ends_with(out, ".npy"))) {
        fprintf(stderr, "latentd sample: --model FILE and --out OUT.png|OUT.npy are required\n");
        return 2;
    }
    ld_err_t e;
    ld_model_t *m;
    if (ld_model_load(model, &m, &e)) {
        load_err("sample", &e);
        return 1;
    }
    int rc = 1;
    const ld_arch_t *a = &m->arch;
    float *z = NULL, *x = NULL;
    uint8_t *buf = NULL, *labels = NULL;
    size_t len = 0;
    if (a->kind == LD_KIND_CLASSIFIER) {
        fprintf(stderr, "latentd sample: %s is a classifier; it cannot generate images\n", model);
        goto done;
    }
    z = ld_malloc_array((size_t)n * a->z_dim, sizeof(float));
    x = ld_malloc_array((size_t)n * a->x_dim, sizeof(float));
    if (!z || !x) {
        fprintf(stderr, "latentd sample: out of memory\n");
        goto done;
    }
    ld_model_draw_z(m, seed, temp, n, z);
    if (sample_labels(m, label, n, &labels) || ld_model_decode_labels(m, n, z, labels, x, &e)) {
        if (labels || !label)
            load_err("sample", &e);
        goto done;
    }
    int64_t shape[2] = {n, a->x_dim};
    int erc = ends_with(out, ".png") ? ld_png_grid(x, n, a->img_h, a->img_w, cols, 2, &buf, &len, &e)
                                     : ld_npy_encode(x, 2, shape, &buf, &len, &e);
    if (erc || ld_write_atomic(out, buf, len, &e)) {
        load_err("sample", &e);
        goto done;
    }
    printf("wrote %d samples to %s\n", n, out);
    rc = 0;
done:
    free(labels);
    free(z);
    free(x);
    free(buf);
    ld_model_free(m);
    return rc;
}

/* ---- eval ---- */

/* A conditional model: a CVAE's negative ELBO on d (with its labels), and
 * with a classifier the accuracy of n samples as their requested class. */
static int eval_cond(const ld_model_t *m, const char *model, const ld_dataset_t *d,
                     const char *classifier, int n, int iwae_k, uint64_t seed)
{
    ld_err_t e;
    double nelbo, rec, kl, nll;
    if (m->ops->family == LD_KIND_VAE) {
        if (ld_eval_vae(m, d, seed, &nelbo, &rec, &kl, &e) ||
            (iwae_k > 0 && ld_eval_iwae(m, d, iwae_k, seed, &nll, &e))) {
            load_err("eval", &e);
            return 1;
        }
        printf("%s %s on %s (%d images): negative ELBO %.2f nats/image (reconstruction %.2f + "
               "KL %.2f)\n", ld_kind_name(m->arch.kind), model, d->name, d->n, nelbo, rec, kl);
        if (iwae_k > 0)
            printf("IWAE bound (k=%d): %.2f nats/image\n", iwae_k, nll);
    }
    if (!classifier) {
        if (m->ops->family != LD_KIND_VAE)
            fprintf(stderr, "latentd eval: %s needs --classifier FILE for its per-class "
                            "accuracy\n", m->ops->article);
        return m->ops->family != LD_KIND_VAE;
    }
    ld_model_t *cls = NULL;
    ld_cond_eval_t c;
    if (ld_model_load(classifier, &cls, &e) || ld_eval_cond(m, cls, n, seed, &c, &e)) {
        load_err("eval", &e);
        ld_model_free(cls);
        return 1;
    }
    ld_model_free(cls);
    char name[256];
    printf("%s %s: %d samples, classified as their requested class %.2f%%; per class:",
           ld_kind_name(m->arch.kind), model, c.n, 100 * c.acc);
    for (int k = 0; k < c.n_classes; k++)
        printf(" %s %.1f%%%s", ld_model_class_name(m, k, name, sizeof name), 100 * c.class_acc[k],
               k + 1 < c.n_classes ? "," : "");
    printf("\nlowest class %s at %.1f%%\n", ld_model_class_name(m, c.worst, name, sizeof name),
           100 * c.min_acc);
    return 0;
}

static int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = "fashion-mnist", *classifier = NULL;
    int n = 10000, k = 0;
    uint64_t seed = 1;
    flag_t flags[] = {
        {"model", F_STR, &model, 0, 0, "checkpoint to evaluate (required)", 0},
        {"k", F_INT, &k, 1, 10000, "VAE, CVAE: also the importance-weighted bound with k samples (IWAE)", 0},
        {"data", F_STR, &data, 0, 0, "test data: fashion-mnist | PATH (test split)", 0},
        {"classifier", F_STR, &classifier, 0, 0, "classifier checkpoint (GAN: class shares and Frechet distance)", 0},
        {"n", F_INT, &n, LD_EVAL_PRC_K + 1, 1000000, "GAN samples (10000)", 0},
        {"seed", F_U64, &seed, 0, 1.8e19, "random seed (1)", 0},
    };
    int nf = (int)LD_ARRAY_LEN(flags);
    if (wants_help(argc, argv)) {
        print_flags("latentd eval --model FILE --data fashion-mnist [--classifier FILE] [--k K]", flags, nf);
        return 0;
    }
    if (parse_flags(argc, argv, flags, nf, NULL))
        return 2;
    if (!model) {
        fprintf(stderr, "latentd eval: --model FILE is required\n");
        return 2;
    }
    ld_err_t e;
    ld_model_t *m = NULL, *cls = NULL;
    ld_dataset_t *d = NULL;
    int rc = 1;
    if (ld_model_load(model, &m, &e) || ld_data_load(data, LD_SPLIT_TEST, 0, &d, &e)) {
        load_err("eval", &e);
        goto done;
    }
    ld_blas_threads((int)sysconf(_SC_NPROCESSORS_ONLN));
    if (m->ops->conditional) {
        if (eval_cond(m, model, d, classifier, n, k, seed))
            goto done;
    } else if (m->arch.kind == LD_KIND_VAE && !classifier) {
        double nelbo, rec, kl;
        if (ld_eval_vae(m, d, seed, &nelbo, &rec, &kl, &e)) {
            load_err("eval", &e);
            goto done;
        }
        printf("vae %s on %s (%d images): negative ELBO %.2f nats/image (reconstruction %.2f + KL %.2f)\n",
               model, d->name, d->n, nelbo, rec, kl);
        double nll;
        if (k > 0 && ld_eval_iwae(m, d, k, seed, &nll, &e)) {
            load_err("eval", &e);
            goto done;
        }
        if (k > 0)
            printf("IWAE bound (k=%d): %.2f nats/image\n", k, nll);
    } else if (m->arch.kind == LD_KIND_CLASSIFIER) {
        double acc, recall[256];
        if (ld_eval_recall(m, d, &acc, recall, &e)) {
            load_err("eval", &e);
            goto done;
        }
        printf("classifier %s on %s (%d images): accuracy %.2f%%\nrecall per class:", model,
               d->name, d->n, 100 * acc);
        for (int c = 0; c < m->arch.n_classes; c++)
            printf(" %d:%.1f%%", c, 100 * recall[c]);
        printf("\n");
    } else {
        if (!classifier) {
            fprintf(stderr, "latentd eval: a GAN needs --classifier FILE (train one with "
                            "latentd train --kind classifier)\n");
            goto done;
        }
        ld_gan_eval_t g;
        if (ld_model_load(classifier, &cls, &e) || ld_eval_gan(m, cls, d, n, seed, &g, &e)) {
            load_err("eval", &e);
            goto done;
        }
        printf("%s %s: %d samples, class shares:", ld_kind_name(m->arch.kind), model, g.n);
        for (int c = 0; c < g.n_classes; c++)
            printf(" %d:%.1f%%", c, 100 * g.share[c]);
        char num[16];
        printf("\nmin class share %.1f%% (%s), Frechet distance to %s %.3f\n", 100 * g.min_share,
               ld_eval_class_name(cls, g.min_class, num, sizeof num), d->name, g.fid);
        printf("precision %.4f, recall %.4f (k=%d nearest neighbours in the classifier's "
               "features)\n", g.precision, g.recall, LD_EVAL_PRC_K);
    }
    rc = 0;
done:
    ld_model_free(m);
    ld_model_free(cls);
    ld_data_free(d);
    return rc;
}

/* ---- invert: GAN inversion measured on test images ---- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float median_of(const float *v, int n, float *tmp)
{
    memcpy(tmp, v, (size_t)n * sizeof *tmp);
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_float);
    return n % 2 ? tmp[n / 2] : 0.5f * (tmp[n / 2 - 1] + tmp[n / 2]);
}

/* mse (n): the mean squared error of each row of a (n, d) against b (n, d). */
static void row_mse(int n, int d, const float *a, const float *b, float *mse)
{
    for (int i = 0; i < n; i++) {
        double se = 0;
        for (int k = 0; k < d; k++) {
            double e = (double)a[(size_t)i * d + k] - b[(size_t)i * d + k];
            se += e * e;
        }
        mse[i] = (float)(se / d);
    }
}

static int cmd_invert(int argc, char **argv)
{
    const char *gan = "models/fashion-gan.safetensors", *vae = "models/fashion-vae.safetensors";
    const char *data = "fashion-mnist";
    int n = 100, samples = 10000;
    ld_invert_opts_t o;
    ld_invert_opts_default(&o);
    o.seed = 1;
    flag_t flags[] = {
        {"gan", F_STR, &gan, 0, 0, "GAN checkpoint to invert (models/fashion-gan.safetensors)", 0},
        {"vae", F_STR, &vae, 0, 0, "VAE to compare with; \"\" for none (models/fashion-vae.safetensors)", 0},
        {"data", F_STR, &data, 0, 0, "test images: fashion-mnist | PATH (test split)", 0},
        {"n", F_INT, &n, 1, 10000, "first n test images (100)", 0},
        {"samples", F_INT, &samples, 1, 1000000, "random samples of the nearest-neighbour baseline (10000)", 0},
        {"steps", F_INT, &o.steps, 1, 100000, "Adam steps per start", 0},
        {"restarts", F_INT, &o.restarts, 1, 64, "random starts per image", 0},
        {"lr", F_FLOAT, &o.lr, 1e-6, 10, "Adam learning rate on z", 0},
        {"z-penalty", F_FLOAT, &o.z_penalty, 0, 1e6, "weight of |z|^2 / z_dim", 0},
        {"seed", F_U64, &o.seed, 0, 1.8e19, "seed of the starts and of the baseline (1)", 0},
    };
    int nf = (int)LD_ARRAY_LEN(flags);
    if (wants_help(argc, argv)) {
        print_flags("latentd invert [--gan FILE] [--vae FILE] [--n 100] [--samples 10000]", flags, nf);
        return 0;
    }
    if (parse_flags(argc, argv, flags, nf, NULL))
        return 2;
    ld_err_t e;
    ld_model_t *g = NULL, *v = NULL;
    ld_dataset_t *d = NULL;
    float *z = NULL, *xr = NULL, *mse = NULL, *nn = NULL, *vm = NULL, *tmp = NULL, *sz = NULL,
          *sx = NULL, *mu = NULL, *vx = NULL;
    int rc = 1;
    if (ld_model_load(gan, &g, &e) || (*vae && ld_model_load(vae, &v, &e)) ||
        ld_data_load(data, LD_SPLIT_TEST, n, &d, &e)) {
        load_err("invert", &e);
        goto done;
    }
    /* one BLAS thread: what a serving thread has */
    ld_blas_threads(1);
    n = d->n;
    const int X = g->arch.x_dim, Z = g->arch.z_dim;
    if (d->dim != X) {
        fprintf(stderr, "latentd invert: the images have %d pixels, the GAN %d\n", d->dim, X);
        goto done;
    }
    z = ld_malloc_array((size_t)n * Z, sizeof *z);
    xr = ld_malloc_array((size_t)n * X, sizeof *xr);
    mse = ld_malloc_array((size_t)n, sizeof *mse);
    nn = ld_malloc_array((size_t)n, sizeof *nn);
    vm = ld_malloc_array((size_t)n, sizeof *vm);
    tmp = ld_malloc_array((size_t)n, sizeof *tmp);
    sz = ld_malloc_array((size_t)samples * Z, sizeof *sz);
    sx = ld_malloc_array((size_t)samples * X, sizeof *sx);
    if (!z || !xr || !mse || !nn || !vm || !tmp || !sz || !sx) {
        fprintf(stderr, "latentd invert: out of memory\n");
        goto done;
    }
    /* the baseline: the nearest of `samples` random images, by MSE */
    ld_model_draw_z(g, o.seed ^ 0x5eed, 1.0f, samples, sz);
    if (ld_model_decode(g, samples, sz, sx, &e)) {
        load_err("invert", &e);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        double best = INFINITY;
        const float *xi = d->x + (size_t)i * X;
        for (int s = 0; s < samples && best > 0; s++) {
            const float *p = sx + (size_t)s * X;
            double se = 0;
            for (int k = 0; k < X && se < best * X; k++) {
                double df = (double)p[k] - xi[k];
                se += df * df;
            }
            if (se / X < best)
                best = se / X;
        }
        nn[i] = (float)best;
    }
    double t0 = ld_now();
    clock_t c0 = clock();
    if (ld_invert(g, n, d->x, &o, z, xr, mse, &e)) {
        load_err("invert", &e);
        goto done;
    }
    double dt = ld_now() - t0, cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    int wins = 0;
    for (int i = 0; i < n; i++)
        wins += mse[i] < nn[i];
    printf("invert %s on %s: %d images, steps %d, restarts %d, lr %g, z-penalty %g, seed %llu\n",
           gan, d->name, n, o.steps, o.restarts, (double)o.lr, (double)o.z_penalty,
           (unsigned long long)o.seed);
    printf("time %.3f s wall, %.3f s CPU (%.1f ms CPU per image; one BLAS thread, all images "
           "in one batch)\n",
           dt, cpu, 1e3 * cpu / n);
    printf("beats the nearest of %d samples: %d of %d images (%.1f%%)\n", samples, wins, n,
           100.0 * wins / n);
    printf("median MSE: inversion %.5f, nearest sample %.5f", (double)median_of(mse, n, tmp),
           (double)median_of(nn, n, tmp));
    if (v) {
        mu = ld_malloc_array((size_t)n * v->arch.z_dim, sizeof *mu);
        vx = ld_malloc_array((size_t)n * X, sizeof *vx);
        if (!mu || !vx || v->arch.x_dim != X || ld_model_encode(v, n, d->x, mu, NULL, &e) ||
            ld_model_decode(v, n, mu, vx, &e)) {
            printf("\n");
            fprintf(stderr, "latentd invert: the VAE cannot reconstruct these images\n");
            goto done;
        }
        row_mse(n, X, vx, d->x, vm);
        printf(", VAE reconstruction (decode of mu) %.5f", (double)median_of(vm, n, tmp));
    }
    printf("\n");
    rc = 0;
done:
    free(z), free(xr), free(mse), free(nn), free(vm), free(tmp), free(sz), free(sx), free(mu),
        free(vx);
    ld_model_free(g);
    ld_model_free(v);
    ld_data_free(d);
    return rc;
}

/* ---- info ---- */

static int cmd_info(int argc, char **argv)
{
    const char *file = NULL;
    if (wants_help(argc, argv)) {
        printf("usage: latentd info FILE.safetensors\n");
        return 0;
    }
    if (parse_flags(argc, argv, NULL, 0, &file))
        return 2;
    if (!file) {
        fprintf(stderr, "latentd info: FILE is required\n");
        return 2;
    }
    ld_err_t e;
    char text[8192];
    if (ld_model_describe(file, text, sizeof text, &e)) {
        load_err("info", &e);
        return 1;
    }
    fputs(text, stdout);
    return 0;
}

/* ---- bench-gemm: the machine's large-SGEMM rate, for `make bench` ---- */

static int cmd_bench_gemm(int argc, char **argv)
{
    int n = 1024, threads = 1, reps = 20;
    flag_t flags[] = {
        {"n", F_INT, &n, 16, 8192, "matrix side (1024)", 0},
        {"threads", F_INT, &threads, 1, 64, "OpenBLAS threads (1)", 0},
        {"reps", F_INT, &reps, 1, 1000, "repetitions (20)", 0},
    };
    if (parse_flags(argc, argv, flags, (int)LD_ARRAY_LEN(flags), NULL))
        return 2;
    ld_blas_threads(threads);
    size_t nn = (size_t)n * n;
    float *a = ld_malloc_array(3 * nn, sizeof(float));
    if (!a)
        return 1;
    ld_rng_t r;
    ld_rng_seed(&r, 1);
    ld_rng_fill_uniform(&r, a, 3 * nn, -1, 1);
    ld_dense_forward(n, n, n, a, a + nn, a + 2 * nn, a + 2 * nn); /* warm up */
    double t0 = ld_now();
    for (int i = 0; i < reps; i++)
        ld_dense_forward(n, n, n, a, a + nn, a + 2 * nn, a + 2 * nn);
    double dt = ld_now() - t0;
    printf("sgemm %dx%dx%d threads %d core %s: %.1f GFLOP/s\n", n, n, n, threads, ld_blas_core(),
           2.0 * n * nn * reps / dt * 1e-9);
    free(a);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "latentd %s — train and serve small generative image models\n\n"
               "usage: latentd <command> [flags]   (latentd <command> --help for flags)\n\n"
               "  train    train a VAE, GAN or classifier and write a .safetensors checkpoint\n"
               "  sample   draw images from a checkpoint into a PNG grid or a .npy array\n"
               "  eval     test negative ELBO (VAE), class shares and Frechet distance (GAN), accuracy (classifier)\n"
               "  invert   GAN inversion on test images against the nearest-sample baseline\n"
               "  info     print a checkpoint's kind, architecture, size and training record\n"
               "  serve    run the HTTP daemon\n"
               "  routes   list the daemon's HTTP routes (the API reference: GET /openapi.json)\n"
               "  version  print the version\n",
            LATENTD_VERSION);
}

int main(int argc, char **argv)
{
    ld_blas_fix_coretype(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    argc--, argv++;
    if (!strcmp(cmd, "train"))
        return cmd_train_dist(argc, argv);
    if (!strcmp(cmd, "sample"))
        return cmd_sample(argc, argv);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc, argv);
    if (!strcmp(cmd, "invert"))
        return cmd_invert(argc, argv);
    if (!strcmp(cmd, "info"))
        return cmd_info(argc, argv);
    if (!strcmp(cmd, "bench-gemm"))
        return cmd_bench_gemm(argc, argv);
    if (!strcmp(cmd, "serve"))
        return ld_serve_main(argc, argv);
    if (!strcmp(cmd, "routes"))
        return ld_serve_routes_main(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("latentd %s\n", LATENTD_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "latentd: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}

/* check_balance.c — imbalanced data (balance.h): class fractions and their
 * errors, the rows kept, class-balanced resampling's frequencies, the class
 * weights' effect on the classifier's, the VAE's and the conditional
 * discriminator's losses and gradients (against
 * finite differences and torch's weighted-mean definition), augmentation,
 * thread-count independence of every remedy, job specs, and the CLI's exit
 * codes on real Fashion-MNIST. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"
#include "tu_sh.h"
#include "tu_tiny.h"

#include "latentd/balance.h"
#include "latentd/classifier.h"
#include "latentd/gan.h"
#include "latentd/jobspec.h"
#include "latentd/train.h"
#include "latentd/vae.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define TRAIN_N 6000 /* about 600 of each class */
static ld_dataset_t *g_train;

static void data_setup(void)
{
    ld_err_t err = {{0}};
    if (ld_data_load("fashion-mnist", LD_SPLIT_TRAIN, TRAIN_N, &g_train, &err)) {
        fprintf(stderr, "check_balance: %s\n", err.msg);
        g_train = NULL;
    }
}

static void data_teardown(void)
{
    ld_data_free(g_train);
    g_train = NULL;
}

static const ld_dataset_t *train_data(void)
{
    ck_assert_msg(g_train != NULL, "Fashion-MNIST could not be loaded (dataset-fashion-mnist)");
    return g_train;
}

static int class_rows(const ld_dataset_t *d, int c)
{
    int n = 0;
    for (int i = 0; i < d->n; i++)
        n += d->y[i] == c;
    return n;
}

/* The plan for class fraction cf (the CLI form) and mode on the data. */
static ld_balance_plan_t *plan_of(const char *cf, ld_balance_t mode, uint64_t seed)
{
    ld_class_fraction_t f;
    ld_err_t e = {{0}};
    ld_balance_plan_t *p = NULL;
    ck_assert_int_eq(ld_class_fraction_parse(cf, &f, &e), LD_OK);
    ck_assert_msg(ld_balance_plan_new(train_data(), &f, mode, seed, &p, &e) == LD_OK, "%s", e.msg);
    return p;
}

/* ---- parsing ------------------------------------------------------------- */

START_TEST(test_parse)
{
    ld_class_fraction_t cf;
    ld_err_t e = {{0}};
    ck_assert_int_eq(ld_class_fraction_parse("5:0.05,9:0.1", &cf, &e), LD_OK);
    ck_assert_int_eq(cf.n, 2);
    ck_assert_int_eq(cf.cls[0], 5);
    ck_assert_float_eq(cf.frac[1], 0.1f);
    char buf[64];
    ld_class_fraction_format(&cf, buf, sizeof buf);
    ck_assert_str_eq(buf, "5:0.05,9:0.1");
    ck_assert_int_eq(ld_class_fraction_parse("", &cf, &e), LD_OK);
    ck_assert_int_eq(cf.n, 0);
    ck_assert_int_eq(ld_class_fraction_parse("3:1", &cf, &e), LD_OK); /* 1 is allowed */
    static const struct {
        const char *s, *needle;
    } bad[] = {
        {"5:0", "outside (0, 1]"},      {"5:1.5", "outside (0, 1]"},
        {"5:-0.1", "outside (0, 1]"},   {"5:nan", "outside (0, 1]"},
        {"5:0.1,5:0.2", "given twice"}, {"256:0.5", "outside 0..255"},
        {"-1:0.5", "outside 0..255"},   {"5", "CLASS:FRACTION"},
        {"x:0.5", "CLASS:FRACTION"},    {"5:0.1;6:0.2", "a fraction after"},
        {"5:", "a fraction after"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        ck_assert_msg(ld_class_fraction_parse(bad[i].s, &cf, &e) == LD_EINVAL, "%s accepted",
                      bad[i].s);
        ck_assert_msg(strstr(e.msg, bad[i].needle), "%s: \"%s\" lacks \"%s\"", bad[i].s, e.msg,
                      bad[i].needle);
    }
    ld_balance_t b;
    ck_assert_int_eq(ld_balance_parse("resample", &b), 0);
    ck_assert_int_eq(b, LD_BALANCE_RESAMPLE);
    ck_assert_int_eq(ld_balance_parse("oversample", &b), -1);
}
END_TEST

/* ---- the rows kept ---------------------------------------------------------- */

START_TEST(test_class_fraction_counts)
{
    const ld_dataset_t *d = train_data();
    ld_balance_plan_t *p = plan_of("5:0.05,9:0.1", LD_BALANCE_NONE, 1), *q, *r;
    int want_n = 0;
    for (int c = 0; c < 10; c++) {
        int all = class_rows(d, c);
        int want = c == 5 ? (int)lround(0.05 * all) : c == 9 ? (int)lround(0.1 * all) : all;
        ck_assert_msg(p->count[c] == want, "class %d: %d rows kept of %d, want %d", c,
                      p->count[c], all, want);
        want_n += want;
    }
    ck_assert_int_eq(p->n, want_n);
    for (int i = 1; i < p->n; i++) /* ascending, and every one of its class */
        ck_assert_int_lt(p->rows[i - 1], p->rows[i]);
    for (int c = 0; c < 10; c++)
        for (int k = 0; k < p->count[c]; k++)
            ck_assert_int_eq(d->y[p->by_class[p->start[c] + k]], c);
    /* the same seed keeps the same rows; another seed other rows */
    q = plan_of("5:0.05,9:0.1", LD_BALANCE_NONE, 1);
    r = plan_of("5:0.05,9:0.1", LD_BALANCE_NONE, 2);
    ck_assert(memcmp(p->rows, q->rows, (size_t)p->n * sizeof(int)) == 0);
    ck_assert_int_eq(r->n, p->n);
    ck_assert(memcmp(p->rows, r->rows, (size_t)p->n * sizeof(int)) != 0);
    printf("class fraction 5:0.05,9:0.1 of %d images: %d kept (sandals %d, ankle boots %d)\n",
           d->n, p->n, p->count[5], p->count[9]);
    ld_balance_plan_free(p);
    ld_balance_plan_free(q);
    ld_balance_plan_free(r);
}
END_TEST

START_TEST(test_errors_need_labels_and_classes)
{
    const ld_dataset_t *d = train_data();
    ld_dataset_t unlabelled = *d;
    unlabelled.y = NULL;
    unlabelled.n_classes = 0;
    ld_class_fraction_t none = {0}, cf;
    ld_err_t e = {{0}};
    ld_balance_plan_t *p = NULL;
    ck_assert_int_eq(ld_balance_plan_new(&unlabelled, &none, LD_BALANCE_RESAMPLE, 1, &p, &e),
                     LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "no labels"), "%s", e.msg);
    ck_assert_int_eq(ld_class_fraction_parse("5:0.5", &cf, &e), LD_OK);
    ck_assert_int_eq(ld_balance_plan_new(&unlabelled, &cf, LD_BALANCE_NONE, 1, &p, &e), LD_EINVAL);
    ck_assert_int_eq(ld_class_fraction_parse("10:0.5", &cf, &e), LD_OK);
    ck_assert_int_eq(ld_balance_plan_new(d, &cf, LD_BALANCE_NONE, 1, &p, &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "no class 10") && strstr(e.msg, "0..9"), "%s", e.msg);
    ck_assert_ptr_null(p);
    /* without labels and without options: every row, no error */
    ck_assert_int_eq(ld_balance_plan_new(&unlabelled, &none, LD_BALANCE_NONE, 1, &p, &e), LD_OK);
    ck_assert_int_eq(p->n, d->n);
    ld_balance_plan_free(p);
    /* weight is refused for a GAN, whose loss has no labels to weight */
    ld_train_opts_t o;
    ld_train_opts_default(LD_KIND_GAN, &o);
    o.balance = LD_BALANCE_WEIGHT;
    ck_assert_int_eq(ld_train_balance_check(LD_KIND_GAN, d, &o, &e), LD_EINVAL);
    ck_assert_int_eq(ld_train_balance_check(LD_KIND_VAE, d, &o, &e), LD_OK);
}
END_TEST

/* ---- resample ---------------------------------------------------------------- */

START_TEST(test_resample_frequencies)
{
    const ld_dataset_t *d = train_data();
    ld_balance_plan_t *p = plan_of("5:0.05", LD_BALANCE_RESAMPLE, 1);
    int *perm = malloc((size_t)p->n * sizeof(int)), *again = malloc((size_t)p->n * sizeof(int));
    ck_assert(perm && again);
    long seen[10] = {0}, total = 0;
    ld_rng_t r, r2;
    ld_rng_seed(&r, 7);
    const int epochs = 5;
    for (int ep = 0; ep < epochs; ep++) {
        r2 = r;
        ld_balance_order(p, &r, perm);
        ld_balance_order(p, &r2, again);
        ck_assert(memcmp(perm, again, (size_t)p->n * sizeof(int)) == 0); /* from the stream alone */
        for (int i = 0; i < p->n; i++) {
            ck_assert_int_ge(perm[i], 0);
            ck_assert_int_lt(perm[i], d->n);
            seen[d->y[perm[i]]]++;
            total++;
        }
    }
    /* each class drawn with probability 1/10: the share's standard deviation
     * over total draws is sqrt(0.09 / total), about 0.0018 here; allow 5 of them */
    double bound = 5 * sqrt(0.09 / (double)total), worst = 0;
    for (int c = 0; c < 10; c++) {
        double share = (double)seen[c] / (double)total;
        worst = fabs(share - 0.1) > worst ? fabs(share - 0.1) : worst;
        ck_assert_msg(fabs(share - 0.1) <= bound, "class %d drawn %.4f of the time", c, share);
    }
    printf("resample over %ld draws: worst |share - 0.1| %.4f (bound %.4f); sandals kept %d\n",
           total, worst, bound, p->count[5]);
    /* without resample: each kept row exactly once per epoch */
    ld_balance_plan_t *q = plan_of("5:0.05", LD_BALANCE_NONE, 1);
    ld_balance_order(q, &r, perm);
    long sandals = 0;
    for (int i = 0; i < q->n; i++)
        sandals += d->y[perm[i]] == 5;
    ck_assert_int_eq(sandals, q->count[5]);
    free(perm);
    free(again);
    ld_balance_plan_free(p);
    ld_balance_plan_free(q);
}
END_TEST

/* ---- weights ------------------------------------------------------------------- */

START_TEST(test_weights_inverse_frequency)
{
    ld_balance_plan_t *p = plan_of("5:0.05", LD_BALANCE_WEIGHT, 1);
    double mean = 0;
    for (int c = 0; c < 10; c++)
        mean += p->weight[c] / 10.0;
    ck_assert_msg(fabs(mean - 1) < 1e-5, "mean weight %g", mean);
    double ratio = (double)p->weight[5] / p->weight[0];
    ck_assert_msg(fabs(ratio - (double)p->count[0] / p->count[5]) < 1e-3 * ratio,
                  "w5/w0 %g, counts %d/%d", ratio, p->count[0], p->count[5]);
    /* the row factors turn a mean into the weighted mean */
    uint8_t y[4] = {0, 5, 5, 1};
    float s[4];
    ld_balance_row_scale(p, y, 4, s);
    double sw = p->weight[0] + 2 * p->weight[5] + p->weight[1];
    ck_assert(fabs(s[1] - p->weight[5] * 4 / sw) < 1e-5);
    ck_assert(fabs((s[0] + s[1] + s[2] + s[3]) - 4) < 1e-4);
    ld_balance_plan_free(p);
}
END_TEST

/* The classifier's weighted loss is torch's CrossEntropyLoss(weight=w) with
 * reduction "mean", sum(w_y l) / sum(w_y).  (Its gradient, and the VAE's,
 * against finite differences: check_nn.c, test_weighted_step_gradients.) */
START_TEST(test_weighted_classifier_loss)
{
    ld_model_t *m = tu_tiny_model(LD_KIND_CLASSIFIER);
    m->arch.dropout = 0; /* the same net on every evaluation */
    ((ld_mlp_t *)&m->nets[LD_CLS_NET])->dropout = 0;
    enum { B = 6, C = 10, X = 16 };
    float x[B * X], dl[B * C];
    uint8_t y[B] = {0, 5, 5, 3, 9, 5};
    const float w[C] = {0.5f, 1, 1, 2, 1, 3, 1, 1, 1, 0.25f};
    ld_rng_t r;
    ld_rng_seed(&r, 3);
    ld_rng_fill_uniform(&r, x, B * X, 0, 1);
    float s[B];
    double sw = 0;
    for (int i = 0; i < B; i++)
        sw += w[y[i]];
    for (int i = 0; i < B; i++)
        s[i] = (float)(w[y[i]] * B / sw);
    ld_mlp_ws_t ws;
    ck_assert_int_eq(ld_mlp_ws_init(&ws, &m->nets[LD_CLS_NET], B, 1), LD_OK);
    /* the weighted loss against torch's definition from per-row losses */
    double weighted = ld_classifier_step_w(m, NULL, &ws, B, x, y, s, &r, dl, NULL) / B, num = 0;
    for (int i = 0; i < B; i++)
        num += w[y[i]] * ld_classifier_step(m, NULL, &ws, 1, x + i * X, y + i, &r, dl, NULL);
    ck_assert_msg(fabs(weighted - num / sw) < 1e-5, "weighted %g, torch's form %g", weighted,
                  num / sw);
    ld_mlp_ws_free(&ws);
    ld_model_free(m);
}
END_TEST

/* The VAE with row factors: the sums are the weighted sums of the rows'. */
START_TEST(test_weighted_vae_loss)
{
    ld_model_t *m = tu_tiny_model(LD_KIND_VAE);
    enum { B = 4, X = 16, Z = 2 };
    float x[B * X], eps[B * Z], s[B] = {0.4f, 2.2f, 0.7f, 0.7f};
    ld_rng_t r;
    ld_rng_seed(&r, 5);
    ld_rng_fill_uniform(&r, x, B * X, 0, 1);
    ld_rng_fill_normal(&r, eps, B * Z, 0, 1);
    ld_vae_ws_t ws;
    ck_assert_int_eq(ld_vae_ws_init(&ws, m, B), LD_OK);
    double rec, kl, rec_i, kl_i, want_rec = 0, want_kl = 0;
    for (int i = 0; i < B; i++) {
        ld_vae_step(m, NULL, &ws, 1, x + i * X, eps + i * Z, 1.0f, &rec_i, &kl_i);
        want_rec += s[i] * rec_i;
        want_kl += s[i] * kl_i;
    }
    ws.row_w = s;
    ld_vae_step(m, NULL, &ws, B, x, eps, 1.0f, &rec, &kl);
    ck_assert_msg(fabs(rec - want_rec) < 1e-3 && fabs(kl - want_kl) < 1e-4,
                  "rec %g / %g, kl %g / %g", rec, want_rec, kl, want_kl);
    ld_vae_ws_free(&ws);
    ld_model_free(m);
}
END_TEST

/* The conditional discriminator with row factors s: its loss and gradients
 * are sum_i s_i (l_i, g_i) / B, where l_i and g_i are row i's own (a batch of
 * one: real i and the fake from z_i, both with label y_i), for each loss. */
START_TEST(test_weighted_cgan_d_loss)
{
    ld_model_t *m = tu_tiny_model(LD_KIND_CGAN);
    enum { B = 5, X = 16, Z = 2 };
    float real[B * X], z[B * Z], s[B] = {0.3f, 2.5f, 0.3f, 1.1f, 0.8f};
    uint8_t y[B] = {0, 5, 0, 3, 9};
    ld_rng_t r;
    ld_rng_seed(&r, 7);
    ld_rng_fill_uniform(&r, real, B * X, 0, 1);
    ld_rng_fill_normal(&r, z, B * Z, 0, 1);
    size_t np = m->n_params;
    float *g = ld_calloc(np, sizeof(float)), *gi = ld_calloc(np, sizeof(float));
    double *want_g = calloc(np, sizeof(double));
    ck_assert(g && gi && want_g);
    const ld_gan_loss_t losses[] = {LD_GAN_LOSS_NS, LD_GAN_LOSS_HINGE, LD_GAN_LOSS_LSGAN};
    for (size_t k = 0; k < LD_ARRAY_LEN(losses); k++) {
        ld_gan_ws_t ws;
        ck_assert_int_eq(ld_gan_ws_init(&ws, m, B), LD_OK);
        ws.loss = losses[k];
        ld_net_run_t run = {0}; /* eval mode: no dropout, so rows are independent */
        ws.run = &run;
        double want = 0;
        memset(want_g, 0, np * sizeof(double));
        for (int i = 0; i < B; i++) {
            memset(gi, 0, np * sizeof(float));
            run.labels = y + i;
            want += s[i] * ld_gan_step_d(m, gi, &ws, 1, real + i * X, z + i * Z, 0.9f, &r, NULL,
                                         NULL) / B;
            for (size_t j = 0; j < np; j++)
                want_g[j] += (double)s[i] * gi[j] / B;
        }
        memset(g, 0, np * sizeof(float));
        run.labels = y;
        ws.row_w = s;
        double got = ld_gan_step_d(m, g, &ws, B, real, z, 0.9f, &r, NULL, NULL);
        double worst = 0, scale = 0;
        for (size_t j = 0; j < np; j++) {
            worst = fmax(worst, fabs(g[j] - want_g[j]));
            scale = fmax(scale, fabs(want_g[j]));
        }
        printf("cgan D %s weighted: loss %.6g (rows' %.6g), worst |grad diff| %.3g of %.3g\n",
               ld_gan_loss_name(losses[k]), got, want, worst, scale);
        ck_assert_msg(fabs(got - want) < 1e-5 * fmax(1, fabs(want)), "loss %g, want %g", got, want);
        ck_assert_msg(worst < 1e-5 * fmax(1, scale) && scale > 0, "grads differ by %g", worst);
        /* and the factors matter: unweighted, the loss is the plain mean */
        ws.row_w = NULL;
        double plain = ld_gan_step_d(m, g, &ws, B, real, z, 0.9f, &r, NULL, NULL);
        ck_assert_msg(fabs(plain - got) > 1e-4, "weighted %g = unweighted %g", got, plain);
        ld_gan_ws_free(&ws);
    }
    free(g);
    free(gi);
    free(want_g);
    ld_model_free(m);
}
END_TEST

/* ---- augment -------------------------------------------------------------------- */

/* Whether b is a by (dy, dx) shift, then maybe a flip, of a. */
static int is_shift_flip(const float *a, const float *b, int h, int w)
{
    for (int flip = 0; flip < 2; flip++)
        for (int dy = -LD_BAL_SHIFT; dy <= LD_BAL_SHIFT; dy++)
            for (int dx = -LD_BAL_SHIFT; dx <= LD_BAL_SHIFT; dx++) {
                int same = 1;
                for (int r = 0; r < h && same; r++)
                    for (int c = 0; c < w && same; c++) {
                        int sr = r - dy, sc = c - dx;
                        if (flip)
                            sc = w - 1 - sc;
                        float v = sr >= 0 && sr < h && sc >= 0 && sc < w ? a[sr * w + sc] : 0;
                        same = v == b[r * w + c];
                    }
                if (same)
                    return 1;
            }
    return 0;
}

START_TEST(test_augment)
{
    const ld_dataset_t *d = train_data();
    ld_balance_plan_t *p = plan_of("5:0.05,9:0.5", LD_BALANCE_AUGMENT, 1);
    for (int c = 0; c < 10; c++) /* minority: below the mean count */
        ck_assert_int_eq(p->minority[c], c == 5 || c == 9);
    enum { B = 64 };
    const int X = d->dim;
    float *x = malloc((size_t)B * X * sizeof(float)), *x2 = malloc((size_t)B * X * sizeof(float)),
          *orig = malloc((size_t)B * X * sizeof(float)), *tmp = malloc((size_t)X * sizeof(float));
    uint8_t y[B], y0[B];
    ck_assert(x && x2 && orig && tmp);
    for (int i = 0; i < B; i++) { /* a batch of rows, sandals and ankle boots among them */
        int row = p->by_class[p->start[i % 4 == 0 ? 5 : i % 4 == 1 ? 9 : i % 10] + i / 10];
        memcpy(orig + (size_t)i * X, d->x + (size_t)row * X, (size_t)X * sizeof(float));
        y[i] = y0[i] = d->y[row];
    }
    memcpy(x, orig, (size_t)B * X * sizeof(float));
    memcpy(x2, orig, (size_t)B * X * sizeof(float));
    ld_balance_augment(p, 1, 42, d->h, d->w, x, y, B, tmp);
    ld_balance_augment(p, 1, 42, d->h, d->w, x2, y, B, tmp);
    ck_assert_msg(memcmp(x, x2, (size_t)B * X * sizeof(float)) == 0, "not reproducible");
    ck_assert(memcmp(y, y0, B) == 0); /* labels untouched */
    int changed = 0;
    for (int i = 0; i < B; i++) {
        const float *a = orig + (size_t)i * X, *b = x + (size_t)i * X;
        if (!p->minority[y[i]]) {
            ck_assert_msg(memcmp(a, b, (size_t)X * sizeof(float)) == 0, "majority row %d changed", i);
            continue;
        }
        ck_assert_msg(is_shift_flip(a, b, d->h, d->w), "row %d is no shift or flip of itself", i);
        changed += memcmp(a, b, (size_t)X * sizeof(float)) != 0;
    }
    ck_assert_msg(changed > 0, "no minority row changed");
    /* another step, other shifts */
    memcpy(x2, orig, (size_t)B * X * sizeof(float));
    ld_balance_augment(p, 1, 43, d->h, d->w, x2, y, B, tmp);
    ck_assert(memcmp(x, x2, (size_t)B * X * sizeof(float)) != 0);
    free(x), free(x2), free(orig), free(tmp);
    ld_balance_plan_free(p);
}
END_TEST

/* ---- the trainer: 1 and 2 threads agree under every remedy ------------------------ */

static const struct {
    ld_kind_t kind;
    ld_balance_t balance;
} remedy_cases[] = {
    {LD_KIND_CLASSIFIER, LD_BALANCE_RESAMPLE}, {LD_KIND_CLASSIFIER, LD_BALANCE_WEIGHT},
    {LD_KIND_CLASSIFIER, LD_BALANCE_AUGMENT},  {LD_KIND_VAE, LD_BALANCE_WEIGHT},
    {LD_KIND_GAN, LD_BALANCE_AUGMENT},      {LD_KIND_CGAN, LD_BALANCE_WEIGHT},
};

START_TEST(test_remedies_threads_agree)
{
    const ld_dataset_t *full = train_data();
    ld_dataset_t d = *full;
    d.n = 600;
    ld_kind_t kind = remedy_cases[_i].kind;
    ld_arch_t arch;
    ld_train_opts_t o;
    ld_err_t err = {{0}};
    ck_assert(ld_train_recipe(kind, "default", &arch, &o, &err) == LD_OK);
    arch.dropout = 0; /* each worker draws its own masks */
    o.epochs = 1;
    o.batch = 50;
    o.adam.eps = o.adam_d.eps = 1e-3f; /* as check_train's threads test: see there */
    o.balance = remedy_cases[_i].balance;
    ck_assert_int_eq(ld_class_fraction_parse("5:0.1", &o.class_fraction, &err), LD_OK);
    ld_model_t *m[3];
    const char *examples = NULL;
    for (int k = 0; k < 3; k++) { /* 1, 2 threads, and 1 thread without the remedy */
        ck_assert(ld_model_new(&arch, 2, &m[k], &err) == LD_OK);
        ld_train_opts_t ok = o;
        ok.threads = k == 1 ? 2 : 1;
        if (k == 2)
            ok.balance = LD_BALANCE_NONE;
        ld_trainer_t *t;
        ck_assert_msg(ld_trainer_new(m[k], &d, &ok, &t, &err) == LD_OK, "%s", err.msg);
        ck_assert_msg(ld_trainer_run(t, NULL, NULL, &err) == LD_OK, "%s", err.msg);
        ld_trainer_free(t);
        examples = ld_record_get(&m[k]->record, "examples");
    }
    double worst = 0, off = 0;
    for (size_t i = 0; i < m[0]->n_params; i++) {
        worst = fmax(worst, fabs((double)m[0]->params[i] - m[1]->params[i]));
        off = fmax(off, fabs((double)m[0]->params[i] - m[2]->params[i]));
    }
    printf("%s balance %s: 1 vs 2 threads worst |diff| %.3g; vs no remedy %.3g; %s examples\n",
           ld_kind_name(kind), ld_balance_name(o.balance), worst, off, examples);
    ck_assert_msg(worst <= 1e-5, "1 and 2 threads differ by %g", worst);
    ck_assert_msg(off > 0, "the remedy changed nothing");
    ck_assert_str_eq(ld_record_get(&m[0]->record, "balance"), ld_balance_name(o.balance));
    ck_assert_str_eq(ld_record_get(&m[0]->record, "class_fraction"), "5:0.1");
    for (int k = 0; k < 3; k++)
        ld_model_free(m[k]);
}
END_TEST

/* ---- job specs ------------------------------------------------------------------------ */

START_TEST(test_jobspec)
{
    static const char *const good[] = {
        "{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"class_fraction\":{\"5\":0.05,\"9\":0.1},"
        "\"balance\":\"weight\"}}",
        "{\"kind\":\"gan\",\"model\":\"m\",\"train\":{\"class_fraction\":\"5:0.05,9:0.1\","
        "\"balance\":\"resample\"}}",
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(good); i++) {
        ld_jobspec_t s, s2;
        ld_err_t e = {{0}};
        ck_assert_msg(ld_jobspec_parse(good[i], strlen(good[i]), NULL, 0, &s, &e) == LD_OK, "%s",
                      e.msg);
        ck_assert_int_eq(s.train.class_fraction.n, 2);
        ck_assert_float_eq(s.train.class_fraction.frac[0], 0.05f);
        char *json = ld_jobspec_to_json(&s);
        ck_assert_ptr_nonnull(json);
        ck_assert_msg(strstr(json, "\"class_fraction\":{\"5\":0.05,\"9\":0.1}"), "%s", json);
        ck_assert_msg(ld_jobspec_parse(json, strlen(json), NULL, 0, &s2, &e) == LD_OK, "%s", e.msg);
        ck_assert_int_eq(s2.train.balance, s.train.balance);
        ck_assert(memcmp(&s2.train.class_fraction, &s.train.class_fraction,
                         sizeof s.train.class_fraction) == 0);
        free(json);
    }
    static const struct {
        const char *train;
        int rc;
        const char *needle;
    } bad[] = {
        {"{\"class_fraction\":{\"5\":0}}", LD_EINVAL, "outside (0, 1]"},
        {"{\"class_fraction\":{\"5\":1.01}}", LD_EINVAL, "outside (0, 1]"},
        {"{\"class_fraction\":\"5:0.5,5:0.2\"}", LD_EINVAL, "given twice"},
        {"{\"class_fraction\":{\"5\":0.5,\"5\":0.2}}", LD_EINVAL, "given twice"},
        {"{\"class_fraction\":{\"10\":0.5}}", LD_EINVAL, "no class 10"},
        {"{\"class_fraction\":{\"five\":0.5}}", LD_EINVAL, "not a class number"},
        {"{\"class_fraction\":{\"5\":\"0.5\"}}", LD_EFORMAT, "expected a number"},
        {"{\"class_fraction\":[5]}", LD_EFORMAT, "expected an object"},
        {"{\"balance\":\"oversample\"}", LD_EINVAL, "not none, resample"},
        {"{\"balance\":3}", LD_EFORMAT, "train.balance"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"kind\":\"vae\",\"model\":\"m\",\"train\":%s}", bad[i].train);
        ld_jobspec_t s;
        ld_err_t e = {{0}};
        ck_assert_msg(ld_jobspec_parse(body, strlen(body), NULL, 0, &s, &e) == bad[i].rc,
                      "%s: %s", body, e.msg);
        ck_assert_msg(strstr(e.msg, bad[i].needle) && strstr(e.msg, "train."), "%s: \"%s\"", body,
                      e.msg);
    }
    const char *gw = "{\"kind\":\"gan\",\"model\":\"m\",\"train\":{\"balance\":\"weight\"}}";
    ld_jobspec_t s;
    ld_err_t e = {{0}};
    ck_assert_int_eq(ld_jobspec_parse(gw, strlen(gw), NULL, 0, &s, &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "not gan"), "%s", e.msg);
    /* the conditional discriminator has labels to weight */
    const char *cw = "{\"kind\":\"cgan\",\"model\":\"m\",\"train\":{\"balance\":\"weight\"}}";
    ck_assert_msg(ld_jobspec_parse(cw, strlen(cw), NULL, 0, &s, &e) == LD_OK, "%s", e.msg);
    ck_assert_int_eq(s.train.balance, LD_BALANCE_WEIGHT);
}
END_TEST

/* ---- the CLI ----------------------------------------------------------------------------- */

START_TEST(test_cli_exit_codes)
{
    char *dir = tu_mkdtemp(), out[4200];
    snprintf(out, sizeof out, "%s/m.safetensors", dir);
    static const struct {
        const char *flags, *needle;
    } bad[] = {
        {"--kind classifier --class-fraction 5:0", "outside (0, 1]"},
        {"--kind classifier --class-fraction 5:0.1,5:0.2", "given twice"},
        {"--kind classifier --class-fraction 12:0.5", "no class 12"},
        {"--kind vae --balance sometimes", "expected none, resample"},
        {"--kind gan --balance weight", "not gan"},
        {"--kind vae --data DIR --balance resample", "no labels"},
    };
    char pngdir[4200];
    snprintf(pngdir, sizeof pngdir, "%s/png", dir);
    ck_assert_int_eq(tu_sh(NULL, "mkdir -p %s && %s sample --model models/fashion-vae.safetensors "
                                 "--n 4 --out %s/a.png >/dev/null 2>&1 && cp %s/a.png %s/b.png",
                           pngdir, LD_BIN, pngdir, pngdir, pngdir),
                     0);
    ck_assert_int_eq(ld_data_has_labels(pngdir), 0); /* what jobs check before queueing */
    ck_assert_int_eq(ld_data_has_labels("fashion-mnist"), 1);
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        char flags[8800], *msg = NULL;
        const char *at = strstr(bad[i].flags, "DIR");
        if (at)
            snprintf(flags, sizeof flags, "%.*s%s%s", (int)(at - bad[i].flags), bad[i].flags,
                     pngdir, at + 3);
        else
            snprintf(flags, sizeof flags, "%s", bad[i].flags);
        int rc = tu_sh(&msg, "%s train %s --limit 200 --epochs 1 --out %s 2>&1", LD_BIN, flags, out);
        ck_assert_msg(rc == 2, "%s: exit %d (%s)", flags, rc, msg);
        ck_assert_msg(strstr(msg, bad[i].needle), "%s: \"%s\" lacks \"%s\"", flags, msg,
                      bad[i].needle);
        struct stat st;
        ck_assert_msg(stat(out, &st) != 0, "%s: a model was written", flags);
        free(msg);
    }
    /* a good run: the record says what was kept */
    char *info = NULL;
    ck_assert_int_eq(tu_sh(NULL, "%s train --kind classifier --limit 1000 --epochs 1 --threads 2 "
                                 "--class-fraction 5:0.1 --balance resample --out %s >/dev/null 2>&1",
                           LD_BIN, out), 0);
    ck_assert_int_eq(tu_sh(&info, "%s info %s", LD_BIN, out), 0);
    ck_assert_msg(strstr(info, "class_fraction") && strstr(info, "5:0.1") &&
                      strstr(info, "resample"), "%s", info);
    free(info);
    /* the conditional discriminator takes class weights (a plain gan is refused above) */
    ck_assert_int_eq(tu_sh(NULL, "%s train --kind cgan --limit 500 --epochs 1 --threads 2 "
                                 "--class-fraction 5:0.1 --balance weight --out %s >/dev/null 2>&1",
                           LD_BIN, out), 0);
    ck_assert_int_eq(tu_sh(&info, "%s info %s", LD_BIN, out), 0);
    ck_assert_msg(strstr(info, "cgan") && strstr(info, "balance") && strstr(info, "weight"), "%s",
                  info);
    free(info);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

Suite *suite_balance(void)
{
    Suite *s = suite_create("balance");
    TCase *tc = tcase_create("balance");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, data_setup, data_teardown);
    tcase_add_test(tc, test_parse);
    tcase_add_test(tc, test_class_fraction_counts);
    tcase_add_test(tc, test_errors_need_labels_and_classes);
    tcase_add_test(tc, test_resample_frequencies);
    tcase_add_test(tc, test_weights_inverse_frequency);
    tcase_add_test(tc, test_weighted_classifier_loss);
    tcase_add_test(tc, test_weighted_vae_loss);
    tcase_add_test(tc, test_weighted_cgan_d_loss);
    tcase_add_test(tc, test_augment);
    tcase_add_loop_test(tc, test_remedies_threads_agree, 0, (int)LD_ARRAY_LEN(remedy_cases));
    tcase_add_test(tc, test_jobspec);
    tcase_add_test(tc, test_cli_exit_codes);
    suite_add_tcase(s, tc);
    return s;
}

/* check_eval.c — the quality measures against independent computations and
 * closed forms: the VAE's negative ELBO recomputed through the inference path
 * (ld_model_encode / ld_model_decode), accuracy and GAN class shares of
 * hand-built models whose answers are known exactly, and the Fréchet distance
 * of a constant generator, |s - mean|^2 + tr(cov). */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/data.h"
#include "latentd/eval.h"
#include "latentd/model.h"
#include "latentd/train.h"
#include "tu_tiny.h"

#include <math.h>
#include <string.h>

/* A data set owned by the test (ld_data_free frees it). */
static ld_dataset_t *dataset(int n, int h, int w, int labels)
{
    ld_dataset_t *d = calloc(1, sizeof *d);
    ck_assert_ptr_nonnull(d);
    d->n = n, d->h = h, d->w = w, d->dim = h * w;
    d->x = calloc((size_t)n * d->dim, sizeof(float));
    ck_assert_ptr_nonnull(d->x);
    if (labels) {
        d->y = calloc((size_t)n, 1);
        ck_assert_ptr_nonnull(d->y);
    }
    snprintf(d->name, sizeof d->name, "test");
    return d;
}

static ld_model_t *model_of(const ld_arch_t *a, uint64_t seed)
{
    ld_model_t *m = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_new(a, seed, &m, &err) == LD_OK, "%s", err.msg);
    return m;
}

/* The VAE's (rec, kl) per image, recomputed in double with the eps stream
 * ld_eval_vae documents (one N(0,1) stream from seed, image-major; Z even, so
 * batching does not shift it): mu and logvar from ld_model_encode, logits from
 * a plain (inference) forward of the decoder net, BCE and KL from their
 * definitions. */
static void vae_reference(const ld_model_t *m, const ld_dataset_t *d, uint64_t seed, double *rec,
                          double *kl)
{
    const int n = d->n, Z = m->arch.z_dim, X = m->arch.x_dim;
    float *mu = malloc((size_t)n * Z * sizeof(float)), *lv = malloc((size_t)n * Z * sizeof(float));
    float *eps = malloc((size_t)n * Z * sizeof(float)), *z = malloc((size_t)n * Z * sizeof(float));
    float *p = malloc((size_t)n * X * sizeof(float));
    ck_assert(mu && lv && eps && z && p);
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_model_encode(m, n, d->x, mu, lv, &err), LD_OK);
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    ld_rng_fill_normal(&r, eps, (size_t)n * Z, 0, 1);
    double k = 0;
    for (size_t i = 0; i < (size_t)n * Z; i++) {
        z[i] = mu[i] + expf(0.5f * lv[i]) * eps[i];
        k += -0.5 * (1 + (double)lv[i] - (double)mu[i] * mu[i] - exp((double)lv[i]));
    }
    const ld_mlp_t *dec = &m->nets[LD_VAE_DEC];
    ld_mlp_ws_t ws;
    ck_assert_int_eq(ld_mlp_ws_init(&ws, dec, n, 0), LD_OK);
    memcpy(p, ld_mlp_forward(dec, m->params, &ws, n, z, NULL), (size_t)n * X * sizeof(float));
    ld_mlp_ws_free(&ws);
    double b = 0;
    for (size_t i = 0; i < (size_t)n * X; i++) {
        double x = d->x[i], l = p[i]; /* -x log s(l) - (1-x) log(1 - s(l)) */
        b += (l > 0 ? l : 0) - l * x + log1p(exp(-fabs(l)));
    }
    ck_assert(isfinite(b) && isfinite(k));
    *rec = b / n;
    *kl = k / n;
    free(mu), free(lv), free(eps), free(z), free(p);
}

START_TEST(test_eval_vae_small)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_VAE, &a);
    a.img_h = a.img_w = 4, a.x_dim = 16, a.z_dim = 4;
    a.enc = (ld_hidden_t){2, {12, 8}};
    a.dec = (ld_hidden_t){1, {10}};
    ld_model_t *m = model_of(&a, 3);
    ld_dataset_t *d = dataset(7, 4, 4, 0);
    ld_rng_t r;
    ld_rng_seed(&r, 4);
    ld_rng_fill_uniform(&r, d->x, 7 * 16, 0, 1);
    double nelbo, rec, kl, rr, rk;
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_eval_vae(m, d, 9, &nelbo, &rec, &kl, &err), LD_OK);
    ck_assert(isfinite(nelbo) && isfinite(rec) && isfinite(kl));
    ck_assert(nelbo == rec + kl);
    ck_assert(rec > 0 && kl >= 0);
    vae_reference(m, d, 9, &rr, &rk);
    printf("  eval vae (4x4): rec %.7g (ref %.7g)  kl %.7g (ref %.7g)\n", rec, rr, kl, rk);
    ck_assert_msg(fabs(rec - rr) <= 1e-5 * rr, "rec %.9g, reference %.9g", rec, rr);
    ck_assert_msg(fabs(kl - rk) <= 1e-5 * rk + 1e-9, "kl %.9g, reference %.9g", kl, rk);
    /* same seed, same number; another seed, another eps */
    double n2, r2, k2;
    ck_assert_int_eq(ld_eval_vae(m, d, 9, &n2, &r2, &k2, &err), LD_OK);
    ck_assert(n2 == nelbo);
    ck_assert_int_eq(ld_eval_vae(m, d, 10, &n2, &r2, &k2, &err), LD_OK);
    ck_assert(n2 != nelbo);
    ld_data_free(d);
    ld_model_free(m);
}
END_TEST

/* The default VAE on 600 Fashion-MNIST test images: two evaluation batches. */
START_TEST(test_eval_vae_fashion)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_VAE, &a);
    ld_model_t *m = model_of(&a, 5);
    /* a decoder that reacts to z, so that which eps each image gets matters */
    const ld_mlp_t *dec = &m->nets[LD_VAE_DEC];
    for (size_t i = 0; i < (size_t)dec->size[1] * dec->size[0]; i++)
        m->params[dec->w_off[0] + i] *= 10.0f;
    ld_dataset_t *d = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_data_load("fashion-mnist", LD_SPLIT_TEST, 600, &d, &err) == LD_OK, "%s",
                  err.msg);
    ck_assert_int_eq(d->n, 600);
    double nelbo, rec, kl, rr, rk;
    ck_assert_int_eq(ld_eval_vae(m, d, 1, &nelbo, &rec, &kl, &err), LD_OK);
    ck_assert(nelbo == rec + kl);
    vae_reference(m, d, 1, &rr, &rk);
    printf("  eval vae (default, 600 images): nelbo %.7g rec %.7g (ref %.7g) kl %.7g (ref %.7g)\n",
           nelbo, rec, rr, kl, rk);
    ck_assert_msg(fabs(rec - rr) <= 1e-5 * rr, "rec %.9g, reference %.9g", rec, rr);
    ck_assert_msg(fabs(kl - rk) <= 1e-5 * rk + 1e-9, "kl %.9g, reference %.9g", kl, rk);
    ck_assert(rec > 100 && rec < 5000);

    /* wrong inputs are errors, not crashes */
    ld_dataset_t *small = dataset(3, 4, 4, 0);
    ck_assert_int_eq(ld_eval_vae(m, small, 1, &nelbo, &rec, &kl, &err), LD_EINVAL);
    ld_arch_t ga;
    ld_arch_default(LD_KIND_GAN, &ga);
    ld_model_t *g = model_of(&ga, 1);
    ck_assert_int_eq(ld_eval_vae(g, d, 1, &nelbo, &rec, &kl, &err), LD_EINVAL);
    ld_model_free(g);
    ld_data_free(small);
    ld_data_free(d);
    ld_model_free(m);
}
END_TEST

/* x (2x2 image) -> relu(I x) -> I h: logits = x, features = x. */
static ld_model_t *identity_classifier(void)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_CLASSIFIER, &a);
    a.img_h = a.img_w = 2, a.x_dim = 4, a.n_classes = 4;
    a.enc = (ld_hidden_t){1, {4}};
    a.act = LD_ACT_RELU;
    ld_model_t *m = model_of(&a, 1);
    const ld_mlp_t *net = &m->nets[LD_CLS_NET];
    memset(m->params, 0, m->n_params * sizeof(float));
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 4; i++)
            m->params[net->w_off[l] + i * 4 + i] = 1.0f;
    return m;
}

START_TEST(test_eval_accuracy)
{
    ld_model_t *c = identity_classifier();
    ld_dataset_t *d = dataset(10, 2, 2, 1);
    ld_rng_t r;
    ld_rng_seed(&r, 20);
    /* image i: one bright pixel at i % 4; labels right for 7 of 10 */
    for (int i = 0; i < 10; i++) {
        ld_rng_fill_uniform(&r, d->x + i * 4, 4, 0.0f, 0.4f);
        d->x[i * 4 + i % 4] = 0.9f;
        d->y[i] = (uint8_t)(i < 7 ? i % 4 : (i + 1) % 4);
    }
    d->n_classes = 4;
    double acc = -1;
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_eval_accuracy(c, d, &acc, &err), LD_OK);
    ck_assert_msg(acc == 0.7, "accuracy %g, want 0.7", acc);
    free(d->y);
    d->y = NULL;
    ck_assert_int_eq(ld_eval_accuracy(c, d, &acc, &err), LD_EINVAL);
    ck_assert_msg(strstr(err.msg, "label"), "message: %s", err.msg);
    ld_data_free(d);
    ld_model_free(c);
}
END_TEST

/* A GAN on 2x2 images whose generator is one layer x = sigmoid(W z + b). */
static ld_model_t *tiny_gan(void)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_GAN, &a);
    a.img_h = a.img_w = 2, a.x_dim = 4, a.z_dim = 3;
    a.dec = (ld_hidden_t){0, {0}};
    a.enc = (ld_hidden_t){0, {0}};
    a.dropout = 0;
    ld_model_t *m = model_of(&a, 2);
    const ld_mlp_t *G = &m->nets[LD_GAN_G];
    memset(m->params + G->off, 0, G->n_params * sizeof(float));
    return m;
}

/* Constant samples s: all of class argmax(s); FID = |s - mean|^2 + tr(cov) of
 * the real features (the sample covariance is 0). */
START_TEST(test_eval_gan_constant_generator)
{
    ld_model_t *g = tiny_gan(), *c = identity_classifier();
    const ld_mlp_t *G = &g->nets[LD_GAN_G];
    const float s_logit[4] = {2.0f, -1.0f, 0.5f, -3.0f};
    memcpy(g->params + G->b_off[0], s_logit, sizeof s_logit);
    ld_dataset_t *d = dataset(40, 2, 2, 0);
    ld_rng_t r;
    ld_rng_seed(&r, 21);
    for (int i = 0; i < 40; i++)
        for (int k = 0; k < 4; k++)
            d->x[i * 4 + k] = ld_rng_uniform(&r) * (0.3f + 0.2f * k);
    ld_gan_eval_t ev;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_eval_gan(g, c, d, 50, 7, &ev, &err) == LD_OK, "%s", err.msg);
    ck_assert_int_eq(ev.n, 50);
    ck_assert_int_eq(ev.n_classes, 4);
    ck_assert(fabs(ev.share[0] - 1) < 1e-12);
    for (int k = 1; k < 4; k++)
        ck_assert(ev.share[k] == 0);
    ck_assert(ev.min_share == 0);

    double s[4], mean[4] = {0}, want = 0;
    for (int k = 0; k < 4; k++)
        s[k] = (double)(float)(1 / (1 + exp(-(double)s_logit[k])));
    for (int i = 0; i < 40; i++)
        for (int k = 0; k < 4; k++)
            mean[k] += d->x[i * 4 + k] / 40.0;
    for (int k = 0; k < 4; k++) {
        double var = 0;
        for (int i = 0; i < 40; i++)
            var += pow(d->x[i * 4 + k] - mean[k], 2) / 39.0;
        want += pow(s[k] - mean[k], 2) + var;
    }
    printf("  eval gan (constant generator): fid %.9g, closed form %.9g\n", ev.fid, want);
    ck_assert_msg(fabs(ev.fid - want) <= 1e-6 * want, "fid %.9g, want %.9g", ev.fid, want);
    ld_data_free(d);
    ld_model_free(g);
    ld_model_free(c);
}
END_TEST

/* x = (sigmoid(k z0), sigmoid(-k z0), ~0, ~0): class 0 when z0 > 0, else 1, so the
 * shares are the signs of the z that ld_model_draw_z gives for the seed. */
START_TEST(test_eval_gan_shares)
{
    ld_model_t *g = tiny_gan(), *c = identity_classifier();
    const ld_mlp_t *G = &g->nets[LD_GAN_G];
    float *w = g->params + G->w_off[0], *b = g->params + G->b_off[0]; /* w (4, 3) */
    w[0 * 3 + 0] = 8.0f;
    w[1 * 3 + 0] = -8.0f;
    b[2] = b[3] = -10.0f;
    ld_dataset_t *d = dataset(30, 2, 2, 0);
    ld_rng_t r;
    ld_rng_seed(&r, 22);
    ld_rng_fill_uniform(&r, d->x, 30 * 4, 0, 1);
    enum { N = 301 };
    float z[N * 3];
    ld_model_draw_z(g, 11, 1.0f, N, z);
    int pos = 0;
    for (int i = 0; i < N; i++)
        pos += z[i * 3] > 0;
    ld_gan_eval_t ev;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_eval_gan(g, c, d, N, 11, &ev, &err) == LD_OK, "%s", err.msg);
    double sum = 0;
    for (int k = 0; k < ev.n_classes; k++) {
        ck_assert(ev.share[k] >= 0 && ev.share[k] <= 1);
        sum += ev.share[k];
    }
    ck_assert_msg(fabs(sum - 1) < 1e-9, "shares sum to %.12g", sum);
    ck_assert_msg(fabs(ev.share[0] - (double)pos / N) < 1e-9, "share[0] %g, want %d/%d",
                  ev.share[0], pos, N);
    ck_assert(fabs(ev.share[1] - (double)(N - pos) / N) < 1e-9);
    ck_assert(pos > 100 && pos < 200);
    ck_assert(ev.min_share == 0);
    ck_assert(isfinite(ev.fid) && ev.fid > 0);

    /* roles swapped: clear errors */
    ck_assert_int_eq(ld_eval_gan(c, c, d, N, 11, &ev, &err), LD_EINVAL);
    ck_assert_int_eq(ld_eval_gan(g, g, d, N, 11, &ev, &err), LD_EINVAL);
    ck_assert_msg(strstr(err.msg, "classifier"), "message: %s", err.msg);
    ld_data_free(d);
    ld_model_free(g);
    ld_model_free(c);
}
END_TEST

/* mean (F) and unbiased covariance (F, F) of x (n, F), in double. */
static void moments(int n, int F, const double *x, double *mu, double *cov)
{
    for (int j = 0; j < F; j++) {
        mu[j] = 0;
        for (int i = 0; i < n; i++)
            mu[j] += x[i * F + j] / n;
    }
    for (int j = 0; j < F; j++)
        for (int k = 0; k < F; k++) {
            double s = 0;
            for (int i = 0; i < n; i++)
                s += (x[i * F + j] - mu[j]) * (x[i * F + k] - mu[k]);
            cov[j * F + k] = s / (n - 1);
        }
}

/* ld_frechet(x, x) = 0, for a full-rank and a rank-deficient covariance. */
START_TEST(test_frechet_self)
{
    enum { F = 16 };
    static const int ns[2] = {200, 6}; /* 6 samples: rank 5 of 16 */
    for (int t = 0; t < 2; t++) {
        int n = ns[t];
        double *x = malloc((size_t)n * F * sizeof(double)), mu[F], cov[F * F], tr = 0;
        ck_assert_ptr_nonnull(x);
        ld_rng_t r;
        ld_rng_seed(&r, 30 + t);
        for (int i = 0; i < n * F; i++) {
            float v;
            ld_rng_fill_normal(&r, &v, 1, 0, 1);
            x[i] = v * (1 + i % F) + (i % 3);
        }
        moments(n, F, x, mu, cov);
        for (int j = 0; j < F; j++)
            tr += cov[j * F + j];
        double d = ld_frechet(F, mu, cov, mu, cov);
        printf("  frechet(x, x), n=%d: %.3g (trace %.3g)\n", n, d, tr);
        /* zero eigenvalues computed as +-1e-13 turn into sqrt-sized errors: a
         * rank-deficient covariance is held to 1e-6 of its trace, a full one to 1e-9 */
        double tol = (n > F ? 1e-9 : 1e-6) * tr;
        ck_assert_msg(fabs(d) <= tol, "frechet(x, x) = %g (n = %d)", d, n);
        free(x);
    }
}
END_TEST

/* Precision and recall on feature sets with known answers: a set against
 * itself is 1/1; two clusters far apart are 0/0; a fake set that covers
 * only half the real points (the other half sits far away) has precision 1,
 * recall 1/2; k = 1 uses the nearest other point, so two points alone
 * cover each other. */
START_TEST(test_eval_prc_known)
{
    const int F = 5, N = 200;
    float *a = malloc((size_t)N * F * sizeof(float)), *b = malloc((size_t)N * F * sizeof(float));
    ck_assert(a && b);
    ld_rng_t r;
    ld_rng_seed(&r, 21);
    ld_rng_fill_normal(&r, a, (size_t)N * F, 0, 1);
    double p = -1, rc = -1;
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_eval_prc(F, N, a, N, a, 3, &p, &rc, &err), LD_OK);
    ck_assert_msg(p == 1.0 && rc == 1.0, "identical sets: precision %g recall %g", p, rc);

    for (size_t i = 0; i < (size_t)N * F; i++)
        b[i] = a[i] + 1000.0f;
    ck_assert_int_eq(ld_eval_prc(F, N, a, N, b, 3, &p, &rc, &err), LD_OK);
    ck_assert_msg(p == 0.0 && rc == 0.0, "disjoint sets: precision %g recall %g", p, rc);

    /* real: a's first half near 0 and a second half moved far; fake: a copy
     * of the first half, drawn again with a small jitter */
    float *real = malloc((size_t)N * F * sizeof(float));
    ck_assert(real);
    memcpy(real, a, (size_t)N * F * sizeof(float));
    for (size_t i = (size_t)N / 2 * F; i < (size_t)N * F; i++)
        real[i] += 1000.0f;
    for (size_t i = 0; i < (size_t)N / 2 * F; i++)
        b[i] = a[i] + 1e-3f * ((float)(i % 7) - 3.0f);
    ck_assert_int_eq(ld_eval_prc(F, N, real, N / 2, b, 3, &p, &rc, &err), LD_OK);
    printf("  prc: half covered: precision %g recall %g\n", p, rc);
    ck_assert_msg(p == 1.0, "precision %g", p);
    ck_assert_msg(fabs(rc - 0.5) < 1e-12, "recall %g", rc);
    /* and the roles swapped: every fake point is in the real manifold... */
    ck_assert_int_eq(ld_eval_prc(F, N / 2, b, N, real, 3, &p, &rc, &err), LD_OK);
    ck_assert_msg(fabs(p - 0.5) < 1e-12 && rc == 1.0, "swapped: precision %g recall %g", p, rc);

    /* too few rows for k neighbours: an error, not a crash */
    ck_assert_int_eq(ld_eval_prc(F, 3, a, N, a, 3, &p, &rc, &err), LD_EINVAL);
    ck_assert_int_eq(ld_eval_prc(F, N, a, 2, a, 3, &p, &rc, &err), LD_EINVAL);
    free(a);
    free(b);
    free(real);
}
END_TEST

/* Radius is the k-th neighbour's distance, self excluded: on a line at 0, 1,
 * 3, 7, 15 with k = 1 the radii are 1, 1, 2, 4, 8, so a query at 11.5 is
 * covered (by 15) and one at -1.5 is not (0's radius is 1, 1's is 1). */
START_TEST(test_eval_prc_radii)
{
    float real[] = {0, 1, 3, 7, 15}, fake[] = {11.5f, -1.5f, 5.0f};
    double p, rc;
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_eval_prc(1, 5, real, 3, fake, 1, &p, &rc, &err), LD_OK);
    /* 11.5: |11.5-15| = 3.5 <= 8 in; -1.5: 1.5 > 1 out; 5.0: |5-3| = 2 <= 2 in */
    ck_assert_msg(fabs(p - 2.0 / 3) < 1e-12, "precision %g", p);
    /* fake radii (k=1): 11.5 -> 6.5, -1.5 -> 6.5, 5 -> 6.5; real 0,1,3,7,15:
     * 0 (1.5 from -1.5), 1, 3 (2 from 5), 7 (2), 15 (3.5 from 11.5): all in */
    ck_assert_msg(rc == 1.0, "recall %g", rc);
}
END_TEST

/* IWAE on the shipped VAE: k = 1 is a one-sample ELBO, whose mean over
 * images agrees with ld_eval_vae's analytic-KL estimate; k = 100 is a tighter
 * bound (a smaller negative log-likelihood) and k = 10 sits between. */
START_TEST(test_eval_iwae_fashion)
{
    ld_model_t *m = NULL;
    ld_dataset_t *d = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_load("models/fashion-vae.safetensors", &m, &err) == LD_OK, "%s",
                  err.msg);
    ck_assert_msg(ld_data_load("fashion-mnist", LD_SPLIT_TEST, 500, &d, &err) == LD_OK, "%s",
                  err.msg);
    double nelbo, rec, kl, i1, i10, i100;
    ck_assert_int_eq(ld_eval_vae(m, d, 1, &nelbo, &rec, &kl, &err), LD_OK);
    ck_assert_msg(ld_eval_iwae(m, d, 1, 2, &i1, &err) == LD_OK, "%s", err.msg);
    ck_assert_int_eq(ld_eval_iwae(m, d, 10, 2, &i10, &err), LD_OK);
    ck_assert_int_eq(ld_eval_iwae(m, d, 100, 2, &i100, &err), LD_OK);
    printf("  iwae (shipped vae, 500 images): nelbo %.3f  k=1 %.3f  k=10 %.3f  k=100 %.3f\n",
           nelbo, i1, i10, i100);
    ck_assert_msg(fabs(i1 - nelbo) < 1.0, "k=1 %.4f vs nelbo %.4f", i1, nelbo);
    ck_assert_msg(i10 < i1 && i100 < i10, "k=1 %.4f, k=10 %.4f, k=100 %.4f", i1, i10, i100);
    ck_assert_msg(i100 > 0.8 * nelbo, "k=100 %.4f implausibly far below nelbo %.4f", i100, nelbo);
    /* same seed, same bound */
    double again;
    ck_assert_int_eq(ld_eval_iwae(m, d, 10, 2, &again, &err), LD_OK);
    ck_assert(again == i10);
    ck_assert_int_eq(ld_eval_iwae(m, d, 0, 2, &again, &err), LD_EINVAL);
    ld_data_free(d);
    ld_model_free(m);
}
END_TEST

/* A CVAE's IWAE conditions on each test image's label: k = 1 agrees with
 * its ELBO, larger k tightens the bound, and the true labels give a smaller
 * bound than labels shifted by one class (so the labels reach both nets). */
START_TEST(test_eval_iwae_cvae)
{
    ld_dataset_t *tr = NULL, *d = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_data_load("fashion-mnist", LD_SPLIT_TRAIN, 3000, &tr, &err) == LD_OK, "%s",
                  err.msg);
    ck_assert_int_eq(ld_data_load("fashion-mnist", LD_SPLIT_TEST, 1000, &d, &err), LD_OK);
    ld_train_opts_t o;
    ld_model_t *m = tu_recipe_model(LD_KIND_CVAE, "default", 1, &o);
    o.epochs = 2;
    o.threads = 1;
    ld_trainer_t *t = NULL;
    ck_assert_msg(ld_trainer_new(m, tr, &o, &t, &err) == LD_OK, "%s", err.msg);
    ck_assert_msg(ld_trainer_run(t, NULL, NULL, &err) == LD_OK, "%s", err.msg);
    ld_trainer_free(t);
    double nelbo, rec, kl, i1, i10, i100, wrong;
    ck_assert_int_eq(ld_eval_vae(m, d, 1, &nelbo, &rec, &kl, &err), LD_OK);
    ck_assert_msg(ld_eval_iwae(m, d, 1, 2, &i1, &err) == LD_OK, "%s", err.msg);
    ck_assert_int_eq(ld_eval_iwae(m, d, 10, 2, &i10, &err), LD_OK);
    ck_assert_int_eq(ld_eval_iwae(m, d, 100, 2, &i100, &err), LD_OK);
    uint8_t *y = malloc((size_t)d->n), *true_y = d->y;
    ck_assert_ptr_nonnull(y);
    for (int i = 0; i < d->n; i++)
        y[i] = (uint8_t)((d->y[i] + 1) % 10);
    d->y = y;
    ck_assert_int_eq(ld_eval_iwae(m, d, 10, 2, &wrong, &err), LD_OK);
    d->y = NULL; /* no labels: refused with the reason */
    double none;
    ck_assert_int_eq(ld_eval_iwae(m, d, 10, 2, &none, &err), LD_EINVAL);
    ck_assert_msg(strstr(err.msg, "no labels"), "%s", err.msg);
    d->y = true_y;
    printf("  iwae (cvae, 2 epochs on 3000, 1000 images): nelbo %.3f  k=1 %.3f  k=10 %.3f  "
           "k=100 %.3f  k=10 with labels shifted %.3f\n", nelbo, i1, i10, i100, wrong);
    /* one sample per image, so the two estimates of the same mean differ by noise */
    ck_assert_msg(fabs(i1 - nelbo) < 2.0, "k=1 %.4f vs nelbo %.4f", i1, nelbo);
    ck_assert_msg(i10 < i1 && i100 < i10, "k=1 %.4f, k=10 %.4f, k=100 %.4f", i1, i10, i100);
    ck_assert_msg(wrong > i10 + 1.0, "shifted labels %.4f vs true %.4f", wrong, i10);
    free(y);
    ld_data_free(d);
    ld_data_free(tr);
    ld_model_free(m);
}
END_TEST

Suite *suite_eval(void)
{
    Suite *s = suite_create("eval");
    TCase *tc = tcase_create("eval");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_eval_vae_small);
    tcase_add_test(tc, test_eval_vae_fashion);
    tcase_add_test(tc, test_eval_accuracy);
    tcase_add_test(tc, test_eval_gan_constant_generator);
    tcase_add_test(tc, test_eval_gan_shares);
    tcase_add_test(tc, test_frechet_self);
    tcase_add_test(tc, test_eval_prc_known);
    tcase_add_test(tc, test_eval_prc_radii);
    tcase_add_test(tc, test_eval_iwae_fashion);
    tcase_add_test(tc, test_eval_iwae_cvae);
    suite_add_tcase(s, tc);
    return s;
}

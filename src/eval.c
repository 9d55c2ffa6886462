/* eval.c — VAE ELBO, classifier accuracy, GAN class shares and Fréchet distance. */
#include "latentd/eval.h"

#include "latentd/nn.h"
#include "latentd/vae.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define EVAL_BATCH 500
#define IWAE_ROWS 1024   /* decoder rows per pass: images * k */
#define IWAE_K_MAX 10000
#define PRC_BLOCK 256    /* query rows per distance block (PRC_BLOCK * n floats) */

int ld_eval_vae(const ld_model_t *m, const ld_dataset_t *d, uint64_t seed, double *nelbo,
                double *rec, double *kl, ld_err_t *err)
{
    if (!m->ops->has_elbo)
        return ld_err_set(err, LD_EINVAL, "not a VAE");
    if (m->ops->conditional && (!d->y || d->n_classes > m->arch.n_classes))
        return ld_err_set(err, LD_EINVAL, "data %s has %s; %s needs labels < %d", d->name,
                          d->y ? "more classes" : "no labels", m->ops->article,
                          m->arch.n_classes);
    if (d->dim != m->arch.x_dim)
        return ld_err_set(err, LD_EINVAL, "data has %d pixels per image; the model expects %d",
                          d->dim, m->arch.x_dim);
    ld_vae_ws_t ws;
    int B = d->n < EVAL_BATCH ? d->n : EVAL_BATCH;
    float *eps = ld_malloc_array((size_t)B * m->arch.z_dim, sizeof(float));
    if (!eps || ld_vae_ws_init(&ws, m, B)) {
        free(eps);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    double rs = 0, ks = 0;
    ld_net_run_t run = {0}; /* eval mode; a CVAE's labels */
    ws.run = &run;
    for (int i = 0; i < d->n; i += B) {
        int b = d->n - i < B ? d->n - i : B;
        double br, bk;
        run.labels = m->ops->conditional ? d->y + i : NULL;
        ld_rng_fill_normal(&r, eps, (size_t)b * m->arch.z_dim, 0, 1);
        ld_vae_step(m, NULL, &ws, b, d->x + (size_t)i * d->dim, eps, 1.0f, &br, &bk);
        rs += br;
        ks += bk;
    }
    ld_vae_ws_free(&ws);
    free(eps);
    *rec = rs / d->n;
    *kl = ks / d->n;
    *nelbo = *rec + *kl;
    return LD_OK;
}

/* log N(z; 0, I) - log N(z; mu, exp(lv)) for z = mu + exp(lv/2) eps, Z dims. */
static double log_prior_over_q(int Z, const float *z, const float *eps, const float *lv)
{
    double s = 0;
    for (int i = 0; i < Z; i++)
        s += -0.5 * (double)z[i] * z[i] + 0.5 * (double)eps[i] * eps[i] + 0.5 * (double)lv[i];
    return s;
}

int ld_eval_iwae(const ld_model_t *m, const ld_dataset_t *d, int k, uint64_t seed, double *nll,
                 ld_err_t *err)
{
    const int cond = m->ops->conditional; /* a CVAE: q(z|x,y) and p(x|z,y), y the true label */
    if (!m->ops->has_elbo)
        return ld_err_set(err, LD_EINVAL, "not a VAE");
    if (cond && (!d->y || d->n_classes > m->arch.n_classes))
        return ld_err_set(err, LD_EINVAL, "data %s has %s; %s needs labels < %d", d->name,
                          d->y ? "more classes" : "no labels", m->ops->article,
                          m->arch.n_classes);
    if (d->dim != m->arch.x_dim)
        return ld_err_set(err, LD_EINVAL, "data has %d pixels per image; the model expects %d",
                          d->dim, m->arch.x_dim);
    if (k < 1 || k > IWAE_K_MAX || d->n < 1)
        return ld_err_set(err, LD_EINVAL, "k must be in 1..%d and the data non-empty", IWAE_K_MAX);
    const int Z = m->arch.z_dim, X = m->arch.x_dim;
    int ci = IWAE_ROWS / k > 0 ? IWAE_ROWS / k : 1; /* images per decoder pass */
    if (ci > d->n)
        ci = d->n;
    size_t rows = (size_t)ci * k;
    float *mu = ld_malloc_array((size_t)d->n * Z, sizeof(float));
    float *lv = ld_malloc_array((size_t)d->n * Z, sizeof(float));
    float *eps = ld_malloc_array(rows * Z, sizeof(float));
    float *z = ld_malloc_array(rows * Z, sizeof(float));
    double *lw = ld_malloc_array((size_t)k, sizeof(double));
    uint8_t *y = cond ? ld_malloc_array(rows, 1) : NULL; /* each image's label, k times */
    ld_pass_ws_t ws = {0};
    ld_net_run_t run = {0}; /* eval mode */
    int rc = !mu || !lv || !eps || !z || !lw || (cond && !y) ||
                     ld_pass_ws_init(&ws, m, LD_VAE_DEC, (int)rows)
                 ? ld_err_set(err, LD_ENOMEM, "out of memory")
             : cond ? ld_model_encode_labels(m, d->n, d->x, d->y, mu, lv, err)
                    : ld_model_encode(m, d->n, d->x, mu, lv, err);
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    double sum = 0;
    for (int i0 = 0; !rc && i0 < d->n; i0 += ci) {
        int b = d->n - i0 < ci ? d->n - i0 : ci;
        size_t nr = (size_t)b * k;
        ld_rng_fill_normal(&r, eps, nr * Z, 0, 1); /* image-major, then sample */
        for (size_t row = 0; row < nr; row++) {
            size_t img = (size_t)i0 + row / k;
            for (int t = 0; t < Z; t++)
                z[row * Z + t] = mu[img * Z + t] + expf(0.5f * lv[img * Z + t]) * eps[row * Z + t];
            if (y)
                y[row] = d->y[img];
        }
        run.labels = y;
        const float *logits = ld_pass_forward(m, LD_VAE_DEC, &ws, (int)nr, z, NULL, NULL, &run);
        for (int i = 0; i < b; i++) {
            size_t img = (size_t)i0 + i;
            const float *x = d->x + img * X;
            double top = -INFINITY, se = 0;
            for (int j = 0; j < k; j++) {
                size_t row = (size_t)i * k + j;
                lw[j] = -ld_bce_logits((size_t)X, logits + row * X, x, NULL, 0) +
                        log_prior_over_q(Z, z + row * Z, eps + row * Z, lv + img * Z);
                top = lw[j] > top ? lw[j] : top;
            }
            for (int j = 0; j < k; j++)
                se += exp(lw[j] - top);
            sum += -(top + log(se / k));
        }
    }
    if (!rc)
        *nll = sum / d->n;
    if (!rc && !isfinite(*nll))
        rc = ld_err_set(err, LD_EINVAL, "the bound is not finite");
    ld_pass_ws_free(&ws);
    free(mu);
    free(lv);
    free(eps);
    free(z);
    free(lw);
    free(y);
    return rc;
}

/* Squared norms of the n rows of a (n, F). */
static void row_norms(int F, int n, const float *a, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = cblas_sdot(F, a + (size_t)i * F, 1, a + (size_t)i * F, 1);
}

/* Squared distances d (bq, n) between rows q0..q0+bq of q and every row of a:
 * |q|^2 + |a|^2 - 2 q.a, clamped at 0 (rounding). */
static void sq_dists(int F, int bq, const float *q, const float *qn, int n, const float *a,
                     const float *an, float *d)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, bq, n, F, -2.0f, q, F, a, F, 0.0f, d, n);
    for (int i = 0; i < bq; i++)
        for (int j = 0; j < n; j++) {
            float v = d[(size_t)i * n + j] + qn[i] + an[j];
            d[(size_t)i * n + j] = v > 0 ? v : 0;
        }
}

/* radii (n): squared distance of each row of a to its k-th nearest other row
 * (the (k+1)-th smallest distance counting itself, at 0).  dist: PRC_BLOCK * n. */
static void knn_radii(int F, int n, const float *a, const float *an, int k, float *dist,
                      float *radii)
{
    float best[LD_EVAL_PRC_K + 8];
    for (int i0 = 0; i0 < n; i0 += PRC_BLOCK) {
        int bq = n - i0 < PRC_BLOCK ? n - i0 : PRC_BLOCK;
        sq_dists(F, bq, a + (size_t)i0 * F, an + i0, n, a, an, dist);
        for (int i = 0; i < bq; i++) {
            int m = 0; /* best[0..m) ascending, the k+1 smallest so far */
            const float *row = dist + (size_t)i * n;
            for (int j = 0; j < n; j++) {
                float v = row[j];
                if (m == k + 1 && v >= best[k])
                    continue;
                int p = m < k + 1 ? m++ : k;
                while (p > 0 && best[p - 1] > v) {
                    best[p] = best[p - 1];
                    p--;
                }
                best[p] = v;
            }
            radii[i0 + i] = best[k];
        }
    }
}

/* Fraction of the nq rows of q within radii[j] of some row j of a. */
static double coverage(int F, int nq, const float *q, const float *qn, int n, const float *a,
                       const float *an, const float *radii, float *dist)
{
    long in = 0;
    for (int i0 = 0; i0 < nq; i0 += PRC_BLOCK) {
        int bq = nq - i0 < PRC_BLOCK ? nq - i0 : PRC_BLOCK;
        sq_dists(F, bq, q + (size_t)i0 * F, qn + i0, n, a, an, dist);
        for (int i = 0; i < bq; i++) {
            const float *row = dist + (size_t)i * n;
            int hit = 0;
            for (int j = 0; j < n && !hit; j++)
                hit = row[j] <= radii[j];
            in += hit;
        }
    }
    return (double)in / nq;
}

int ld_eval_prc(int F, int nr, const float *real, int nf, const float *fake, int k,
                double *precision, double *recall, ld_err_t *err)
{
    if (F < 1 || k < 1 || k > LD_EVAL_PRC_K + 7 || nr <= k || nf <= k)
        return ld_err_set(err, LD_EINVAL, "precision/recall need more than k = %d rows in each set",
                          k);
    int nmax = nr > nf ? nr : nf;
    float *rn = ld_malloc_array((size_t)nr, sizeof(float));
    float *fn = ld_malloc_array((size_t)nf, sizeof(float));
    float *rr = ld_malloc_array((size_t)nr, sizeof(float));
    float *fr = ld_malloc_array((size_t)nf, sizeof(float));
    float *dist = ld_malloc_array((size_t)PRC_BLOCK * nmax, sizeof(float));
    int rc = LD_OK;
    if (!rn || !fn || !rr || !fr || !dist) {
        rc = ld_err_set(err, LD_ENOMEM, "out of memory");
    } else {
        row_norms(F, nr, real, rn);
        row_norms(F, nf, fake, fn);
        knn_radii(F, nr, real, rn, k, dist, rr);
        knn_radii(F, nf, fake, fn, k, dist, fr);
        *precision = coverage(F, nf, fake, fn, nr, real, rn, rr, dist);
        *recall = coverage(F, nr, real, rn, nf, fake, fn, fr, dist);
    }
    free(rn);
    free(fn);
    free(rr);
    free(fr);
    free(dist);
    return rc;
}

/* The name of classifier cls's class c: its training data's (data.h). */
const char *ld_eval_class_name(const ld_model_t *cls, int c, char *buf, size_t len)
{
    return ld_data_class_name(ld_record_get(&cls->record, "data"), cls->arch.n_classes, c, buf,
                              len);
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

int ld_eval_accuracy(const ld_model_t *cls, const ld_dataset_t *d, double *acc, ld_err_t *err)
{
    return ld_eval_recall(cls, d, acc, NULL, err);
}

int ld_eval_recall(const ld_model_t *cls, const ld_dataset_t *d, double *acc, double *recall,
                   ld_err_t *err)
{
    if (!d->y)
        return ld_err_set(err, LD_EINVAL, "data %s has no labels", d->name);
    int C = cls->arch.n_classes;
    float *logits = ld_malloc_array((size_t)d->n * C, sizeof(float));
    if (!logits)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    int rc = ld_model_classify(cls, d->n, d->x, logits, NULL, err);
    if (!rc) {
        long hit = 0, hits[256] = {0}, of[256] = {0};
        for (int i = 0; i < d->n; i++) {
            int ok = argmax(logits + (size_t)i * C, C) == d->y[i];
            hit += ok;
            hits[d->y[i]] += ok;
            of[d->y[i]]++;
        }
        *acc = (double)hit / d->n;
        for (int c = 0; recall && c < C; c++)
            recall[c] = of[c] ? (double)hits[c] / of[c] : 0;
    }
    free(logits);
    return rc;
}

/* mean (F) and covariance (F, F) of feat (n, F), unbiased like numpy.cov. */
static int moments(int n, int F, const float *feat, double *mean, double *cov)
{
    double *c = ld_malloc_array((size_t)n * F, sizeof(double));
    if (!c)
        return LD_ENOMEM;
    memset(mean, 0, (size_t)F * sizeof *mean);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < F; j++)
            mean[j] += feat[(size_t)i * F + j];
    for (int j = 0; j < F; j++)
        mean[j] /= n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < F; j++)
            c[(size_t)i * F + j] = feat[(size_t)i * F + j] - mean[j];
    /* cov = c^T c / (n - 1), full matrix */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, F, F, n, 1.0 / (n - 1), c, F, c, F, 0.0,
                cov, F);
    free(c);
    return LD_OK;
}

void ld_sym_eig(int F, double *a, double *w, double *v)
{
    for (int i = 0; i < F; i++)
        for (int j = 0; j < F; j++)
            v[i * F + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < F; i++) {
            diag += a[i * F + i] * a[i * F + i];
            for (int j = i + 1; j < F; j++)
                off += a[i * F + j] * a[i * F + j];
        }
        if (off <= 1e-24 * (diag > 0 ? diag : 1))
            break;
        for (int p = 0; p < F; p++)
            for (int q = p + 1; q < F; q++) {
                double apq = a[p * F + q];
                if (fabs(apq) < 1e-300)
                    continue;
                double theta = (a[q * F + q] - a[p * F + p]) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < F; k++) { /* columns p, q */
                    double akp = a[k * F + p], akq = a[k * F + q];
                    a[k * F + p] = c * akp - s * akq;
                    a[k * F + q] = s * akp + c * akq;
                }
                for (int k = 0; k < F; k++) { /* rows p, q */
                    double apk = a[p * F + k], aqk = a[q * F + k];
                    a[p * F + k] = c * apk - s * aqk;
                    a[q * F + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < F; k++) {
                    double vkp = v[k * F + p], vkq = v[k * F + q];
                    v[k * F + p] = c * vkp - s * vkq;
                    v[k * F + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < F; i++)
        w[i] = a[i * F + i];
}

double ld_frechet(int F, const double *mu1, const double *c1, const double *mu2,
                  const double *c2)
{
    size_t FF = (size_t)F * F;
    double *buf = ld_malloc_array(5 * FF + F, sizeof(double));
    if (!buf)
        return NAN;
    double *a = buf, *v = a + FF, *s = v + FF, *t = s + FF, *u = t + FF, *w = u + FF;
    /* s = c1^1/2 = V diag(sqrt(max(w,0))) V^T */
    memcpy(a, c1, FF * sizeof *a);
    ld_sym_eig(F, a, w, v);
    for (int i = 0; i < F; i++)
        for (int k = 0; k < F; k++)
            t[i * F + k] = v[i * F + k] * sqrt(w[k] > 0 ? w[k] : 0);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F, F, F, 1, t, F, v, F, 0, s, F);
    /* a = s c2 s (symmetric PSD); tr sqrt = sum sqrt(eigenvalues) */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, F, F, 1, s, F, c2, F, 0, u, F);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, F, F, 1, u, F, s, F, 0, a, F);
    for (int i = 0; i < F; i++) /* symmetrise away rounding */
        for (int k = i + 1; k < F; k++)
            a[i * F + k] = a[k * F + i] = 0.5 * (a[i * F + k] + a[k * F + i]);
    ld_sym_eig(F, a, w, v);
    double tr_sqrt = 0, tr = 0, dm = 0;
    for (int i = 0; i < F; i++) {
        tr_sqrt += sqrt(w[i] > 0 ? w[i] : 0);
        tr += c1[i * F + i] + c2[i * F + i];
        dm += (mu1[i] - mu2[i]) * (mu1[i] - mu2[i]);
    }
    free(buf);
    double fd = dm + tr - 2 * tr_sqrt;
    return fd > 0 ? fd : 0; /* tiny negatives are rounding in the square root */
}

int ld_eval_gan(const ld_model_t *gan, const ld_model_t *cls, const ld_dataset_t *d, int n,
                uint64_t seed, ld_gan_eval_t *out, ld_err_t *err)
{
    if (gan->ops->decode_net < 0)
        return ld_err_set(err, LD_EINVAL, "not a generative model");
    if (!cls->ops->classifies)
        return ld_err_set(err, LD_EINVAL, "the --classifier model is %s, not a classifier",
                          cls->ops->article);
    if (cls->arch.x_dim != gan->arch.x_dim || d->dim != gan->arch.x_dim)
        return ld_err_set(err, LD_EINVAL, "image sizes of model, classifier and data differ");
    if (n <= LD_EVAL_PRC_K || d->n <= LD_EVAL_PRC_K)
        return ld_err_set(err, LD_EINVAL, "quality measures need more than %d samples and images",
                          LD_EVAL_PRC_K);
    const ld_mlp_t *net = &cls->nets[LD_CLS_NET];
    int C = cls->arch.n_classes, F = net->size[net->n_layers - 1], X = gan->arch.x_dim;
    int nr = d->n;
    size_t big = (size_t)(n > nr ? n : nr);
    float *z = ld_malloc_array((size_t)n * gan->arch.z_dim, sizeof(float));
    float *x = ld_malloc_array((size_t)n * X, sizeof(float));
    float *logits = ld_malloc_array(big * C, sizeof(float));
    float *feat = ld_malloc_array((size_t)n * F, sizeof(float));
    float *rfeat = ld_malloc_array((size_t)nr * F, sizeof(float));
    double *st = ld_malloc_array(2 * ((size_t)F * F + F), sizeof(double));
    int rc = LD_OK;
    if (!z || !x || !logits || !feat || !rfeat || !st) {
        rc = ld_err_set(err, LD_ENOMEM, "out of memory");
        goto out;
    }
    double *mu1 = st, *c1 = mu1 + F, *mu2 = c1 + (size_t)F * F, *c2 = mu2 + F;
    ld_model_draw_z(gan, seed, 1.0f, n, z);
    /* a conditional model: each class in turn, as ld_eval_cond requests them */
    uint8_t *lab = gan->ops->conditional ? malloc((size_t)n) : NULL;
    if (gan->ops->conditional && !lab) {
        rc = ld_err_set(err, LD_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; lab && i < n; i++)
        lab[i] = (uint8_t)(i % gan->arch.n_classes);
    rc = ld_model_decode_labels(gan, n, z, lab, x, err);
    free(lab);
    if (rc || (rc = ld_model_classify(cls, n, x, logits, feat, err)))
        goto out;
    memset(out, 0, sizeof *out);
    out->n = n;
    out->n_classes = C;
    for (int i = 0; i < n; i++)
        out->share[argmax(logits + (size_t)i * C, C)] += 1.0 / n;
    out->min_share = 1;
    for (int c = 0; c < C; c++)
        if (out->share[c] < out->min_share) {
            out->min_share = out->share[c];
            out->min_class = c;
        }
    if (moments(n, F, feat, mu1, c1) ||
        (rc = ld_model_classify(cls, nr, d->x, logits, rfeat, err)) ||
        moments(nr, F, rfeat, mu2, c2)) {
        rc = rc ? rc : ld_err_set(err, LD_ENOMEM, "out of memory");
        goto out;
    }
    out->fid = ld_frechet(F, mu1, c1, mu2, c2);
    rc = ld_eval_prc(F, nr, rfeat, n, feat, LD_EVAL_PRC_K, &out->precision, &out->recall, err);
out:
    free(z);
    free(x);
    free(logits);
    free(feat);
    free(rfeat);
    free(st);
    return rc;
}

int ld_eval_cond(const ld_model_t *m, const ld_model_t *cls, int n, uint64_t seed,
                 ld_cond_eval_t *out, ld_err_t *err)
{
    if (!m->ops->conditional || m->ops->decode_net < 0)
        return ld_err_set(err, LD_EINVAL, "%s is not conditional (cgan or cvae)", m->ops->article);
    if (cls->arch.kind != LD_KIND_CLASSIFIER)
        return ld_err_set(err, LD_EINVAL, "the classifier model is %s", cls->ops->article);
    int C = m->arch.n_classes, K = cls->arch.n_classes, X = m->arch.x_dim;
    if (cls->arch.x_dim != X || K < C)
        return ld_err_set(err, LD_EINVAL, "the classifier takes %d-pixel images into %d classes; "
                          "the model makes %d-pixel images of %d", cls->arch.x_dim, K, X, C);
    if (n < C)
        return ld_err_set(err, LD_EINVAL, "%d samples are fewer than the %d classes", n, C);
    float *z = ld_malloc_array((size_t)EVAL_BATCH * m->arch.z_dim, sizeof(float));
    float *x = ld_malloc_array((size_t)EVAL_BATCH * X, sizeof(float));
    float *logits = ld_malloc_array((size_t)EVAL_BATCH * K, sizeof(float));
    uint8_t *lab = ld_malloc_array((size_t)EVAL_BATCH, 1);
    long hit[256] = {0}, count[256] = {0};
    int rc = z && x && logits && lab ? LD_OK : ld_err_set(err, LD_ENOMEM, "out of memory");
    /* class i % C for sample i: equal counts, z from one seeded stream */
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    for (int i = 0; !rc && i < n; i += EVAL_BATCH) {
        int b = n - i < EVAL_BATCH ? n - i : EVAL_BATCH;
        for (int k = 0; k < b; k++)
            lab[k] = (uint8_t)((i + k) % C);
        ld_rng_fill_normal(&r, z, (size_t)b * m->arch.z_dim, 0, 1);
        if ((rc = ld_model_decode_labels(m, b, z, lab, x, err)) ||
            (rc = ld_model_classify(cls, b, x, logits, NULL, err)))
            break;
        for (int k = 0; k < b; k++) {
            count[lab[k]]++;
            hit[lab[k]] += argmax(logits + (size_t)k * K, K) == lab[k];
        }
    }
    if (!rc) {
        memset(out, 0, sizeof *out);
        out->n = n;
        out->n_classes = C;
        out->min_acc = 1;
        long all = 0;
        for (int c = 0; c < C; c++) {
            out->class_acc[c] = (double)hit[c] / (double)count[c];
            all += hit[c];
            if (out->class_acc[c] < out->min_acc) {
                out->min_acc = out->class_acc[c];
                out->worst = c;
            }
        }
        out->acc = (double)all / n;
    }
    free(z);
    free(x);
    free(logits);
    free(lab);
    return rc;
}

/* eval.h — automatic quality measures.
 *
 *   VAE         negative ELBO in nats per image (one reparameterised sample per
 *               image, fixed seed), split into reconstruction and KL.
 *   classifier  accuracy.
 *   GAN         class shares of n samples under a classifier, and the Fréchet
 *               distance between samples and real images in the classifier's
 *               penultimate-layer features (an FID with a Fashion-MNIST feature
 *               extractor instead of Inception), and improved precision and
 *               recall (Kynkaanniemi et al. 2019) in the same features.
 *   VAE         also the importance-weighted bound (IWAE, Burda et al. 2016)
 *               with k samples per image.
 *   cgan, cvae  per-class accuracy: the share of samples of each requested
 *               class that a classifier labels as that class (ld_eval_cond);
 *               a CVAE's negative ELBO conditions on the test labels.
 * Reentrant; models are read-only.
 */
#ifndef LATENTD_EVAL_H
#define LATENTD_EVAL_H

#include "latentd/data.h"
#include "latentd/model.h"

int ld_eval_vae(const ld_model_t *vae, const ld_dataset_t *d, uint64_t seed, double *nelbo,
                double *rec, double *kl, ld_err_t *err);

int ld_eval_accuracy(const ld_model_t *cls, const ld_dataset_t *d, double *acc, ld_err_t *err);
/* The same and, when recall is not NULL, recall (cls->arch.n_classes): of
 * each class's images, the share classified as that class (0 for a class
 * the data set lacks). */
int ld_eval_recall(const ld_model_t *cls, const ld_dataset_t *d, double *acc, double *recall,
                   ld_err_t *err);

typedef struct {
    int n;              /* samples drawn */
    int n_classes;
    double share[256];  /* fraction of samples per predicted class */
    double min_share;   /* smallest of share[] */
    int min_class;      /* its class (the first on a tie) */
    double fid;         /* Fréchet distance to d's images in feature space */
    double precision;   /* ld_eval_prc with k = LD_EVAL_PRC_K, samples vs d's images */
    double recall;
} ld_gan_eval_t;

#define LD_EVAL_PRC_K 3 /* nearest neighbours of the precision/recall manifolds */

int ld_eval_gan(const ld_model_t *gan, const ld_model_t *cls, const ld_dataset_t *d, int n,
                uint64_t seed, ld_gan_eval_t *out, ld_err_t *err);

typedef struct {
    int n;                  /* samples drawn: class i % n_classes for sample i */
    int n_classes;
    double acc;             /* classifier label == requested label, over all */
    double class_acc[256];  /* the same per requested class */
    double min_acc;         /* smallest of class_acc[] */
    int worst;              /* its class */
} ld_cond_eval_t;

/* Samples n images of a conditional model m (z ~ N(0,1) from seed, classes
 * in turn) and classifies them with cls.  LD_EINVAL for a model that is not
 * conditional, a cls that is no classifier of the same images, n < classes. */
int ld_eval_cond(const ld_model_t *m, const ld_model_t *cls, int n, uint64_t seed,
                 ld_cond_eval_t *out, ld_err_t *err);

/* Negative importance-weighted bound on log p(x) in nats per image over the
 * images of d: -mean_x log (1/k sum_j p(x|z_j) p(z_j) / q(z_j|x)), z_j ~ q(z|x)
 * from one N(0,1) stream of seed; p(x|z) the Bernoulli (BCE) likelihood the
 * VAE trains with.  k = 1 is a one-sample ELBO estimate (its mean is
 * ld_eval_vae's nelbo); it can only decrease as k grows.  k in 1..10000.
 * A CVAE's bound conditions q and p on each image's label (d must have
 * labels below the model's classes: LD_EINVAL otherwise). */
int ld_eval_iwae(const ld_model_t *vae, const ld_dataset_t *d, int k, uint64_t seed,
                 double *nll, ld_err_t *err);

/* Improved precision and recall (Kynkaanniemi et al. 2019) of fake (nf, F)
 * against real (nr, F), rows of features: each set's manifold is the union of
 * balls around its points reaching their k-th nearest neighbour in that set
 * (Euclidean); precision is the fraction of fake rows inside the real manifold,
 * recall the fraction of real rows inside the fake one.  nr, nf > k >= 1.
 * Errors: LD_EINVAL, LD_ENOMEM. */
int ld_eval_prc(int F, int nr, const float *real, int nf, const float *fake, int k,
                double *precision, double *recall, ld_err_t *err);

/* Name of class c of classifier cls into buf (len bytes): Fashion-MNIST's
 * names for a 10-class model trained on fashion-mnist (its record's "data"),
 * the class number otherwise.  Returns buf or a static string. */
const char *ld_eval_class_name(const ld_model_t *cls, int c, char *buf, size_t len);

/* Fréchet distance between N(mu1, c1) and N(mu2, c2) in F dimensions:
 * |mu1-mu2|^2 + tr(c1 + c2 - 2 (c1^1/2 c2 c1^1/2)^1/2). c1, c2 (F, F) symmetric. */
double ld_frechet(int F, const double *mu1, const double *c1, const double *mu2,
                  const double *c2);

/* Eigen-decomposition of a symmetric (F, F) matrix a by cyclic Jacobi:
 * eigenvalues into w (F), eigenvectors into the columns of v (F, F). a is destroyed. */
void ld_sym_eig(int F, double *a, double *w, double *v);

#endif

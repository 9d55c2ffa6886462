/* eval.h — automatic quality measures.
 *
 *   VAE         negative ELBO in nats per image (one reparameterised sample per
 *               image, fixed seed), split into reconstruction and KL.
 *   classifier  accuracy.
 *   GAN         class shares of n samples under a classifier, and the Fréchet
 *               distance between samples and real images in the classifier's
 *               penultimate-layer features (an FID with a Fashion-MNIST feature
 *               extractor instead of Inception).
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
    double fid;         /* Fréchet distance to d's images in feature space */
} ld_gan_eval_t;

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

/* Fréchet distance between N(mu1, c1) and N(mu2, c2) in F dimensions:
 * |mu1-mu2|^2 + tr(c1 + c2 - 2 (c1^1/2 c2 c1^1/2)^1/2). c1, c2 (F, F) symmetric. */
double ld_frechet(int F, const double *mu1, const double *c1, const double *mu2,
                  const double *c2);

/* Eigen-decomposition of a symmetric (F, F) matrix a by cyclic Jacobi:
 * eigenvalues into w (F), eigenvectors into the columns of v (F, F). a is destroyed. */
void ld_sym_eig(int F, double *a, double *w, double *v);

#endif

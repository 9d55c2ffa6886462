/* classifier.h — the classifier's training step: softmax cross-entropy. The
 * workspace belongs to one thread; inference is ld_model_classify (model.h). */
#ifndef LATENTD_CLASSIFIER_H
#define LATENTD_CLASSIFIER_H

#include "latentd/model.h"

/* x (b, X), labels (b). grads (n_params) += d mean-loss / d params when grads
 * is not NULL (dropout from rng then). Returns the loss SUM; *correct counts
 * argmax hits. dlogits (b, C) is scratch. */
double ld_classifier_step(const ld_model_t *m, float *grads, ld_mlp_ws_t *ws, int b,
                          const float *x, const uint8_t *labels, ld_rng_t *rng, float *dlogits,
                          int *correct);
/* The same with a factor per row: row_w (b) multiplies row i's loss and its
 * gradient (NULL = all 1); the loss SUM returned is sum(row_w[i] * loss_i). */
double ld_classifier_step_w(const ld_model_t *m, float *grads, ld_mlp_ws_t *ws, int b,
                            const float *x, const uint8_t *labels, const float *row_w,
                            ld_rng_t *rng, float *dlogits, int *correct);

#endif

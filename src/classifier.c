/* classifier.c — classifier forward/backward. See classifier.h. */
#include "latentd/classifier.h"

double ld_classifier_step(const ld_model_t *m, float *grads, ld_mlp_ws_t *ws, int b,
                          const float *x, const uint8_t *labels, ld_rng_t *rng, float *dlogits,
                          int *correct)
{
    return ld_classifier_step_w(m, grads, ws, b, x, labels, NULL, rng, dlogits, correct);
}

double ld_classifier_step_w(const ld_model_t *m, float *grads, ld_mlp_ws_t *ws, int b,
                            const float *x, const uint8_t *labels, const float *row_w,
                            ld_rng_t *rng, float *dlogits, int *correct)
{
    const ld_mlp_t *net = &m->nets[LD_CLS_NET];
    int C = m->arch.n_classes;
    const float *logits = ld_mlp_forward(net, m->params, ws, b, x, rng); /* (b, C) */
    double loss = 0;
    if (!row_w)
        loss = ld_softmax_xent(b, C, logits, labels, grads ? dlogits : NULL, 1.0f / (float)b);
    for (int i = 0; row_w && i < b; i++) /* row by row: each its own factor */
        loss += row_w[i] * ld_softmax_xent(1, C, logits + (size_t)i * C, labels + i,
                                           grads ? dlogits + (size_t)i * C : NULL,
                                           row_w[i] / (float)b);
    if (correct) {
        *correct = 0;
        for (int i = 0; i < b; i++) {
            int best = 0;
            for (int c = 1; c < C; c++)
                if (logits[(size_t)i * C + c] > logits[(size_t)i * C + best])
                    best = c;
            *correct += best == labels[i];
        }
    }
    if (grads)
        ld_mlp_backward(net, m->params, grads, ws, b, dlogits, NULL);
    return loss;
}

/* classify_api.h — the route POST /v1/models/{name}/classify, registered in
 * api.c's table with the ld_api_t as ctx.
 *
 * Body: exactly one of "images" (rows of x_dim values in [0, 1]) and "png"
 * (base64 PNG, or an array of them), or an application/x-npy body of shape
 * (n, x_dim) or (n, h, w) — read as encode reads them (api_impl.h); at most
 * max_samples images.  No options.
 * Answer: {"model","classes":[names],"predictions":[{"label","class",
 * "probs":[n_classes]}, ...]}: per image the softmax of the logits, the
 * index of the largest (the first on a tie) and its name.  The names are
 * Fashion-MNIST's for a 10-class model trained on fashion-mnist (the
 * checkpoint record's "data"), the class numbers as strings otherwise.
 * Errors: 404 no such model, 422 not a classifier (naming the model's
 * kind), 400/422 bad images (jsonarg.h, api.c's readers).
 *
 * Threads: an HTTP thread; the forward pass runs there (a few hundred
 * microseconds for max_samples images), holding a model reference.
 */
#ifndef LATENTD_CLASSIFY_API_H
#define LATENTD_CLASSIFY_API_H

#include "latentd/http.h"

/* ctx: the ld_api_t. */
void ld_classify_handler(ld_req_t *req, void *ctx);

#endif

/* classify_api.c — POST /v1/models/{name}/classify. See classify_api.h. */
#include "classify_api.h"

#include "api_impl.h"
#include "latentd/eval.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define CLASSES_MAX 256 /* ld_arch_validate's limit on n_classes */

/* logits (c) -> probs (c), softmax in double; returns the argmax. */
static int softmax(const float *logits, int c, float *probs)
{
    int best = 0;
    for (int k = 1; k < c; k++)
        if (logits[k] > logits[best])
            best = k;
    double sum = 0;
    for (int k = 0; k < c; k++)
        sum += exp((double)logits[k] - (double)logits[best]);
    for (int k = 0; k < c; k++)
        probs[k] = (float)(exp((double)logits[k] - (double)logits[best]) / sum);
    return best;
}

void ld_classify_handler(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const data[] = {"images", "png", NULL};
    ld_args_t args;
    const uint8_t *npy = NULL;
    size_t npy_len = 0;
    if (ld_api_body_args(req, data, NULL, &args, &npy, &npy_len) != 0)
        return;
    ld_served_t *s = ld_api_get_model(req, ld_api_registry(api));
    if (!s)
        return;
    const ld_model_t *m = s->model;
    float *x = NULL, *logits = NULL;
    int n = 0;
    if (!m->ops->classifies) {
        ld_req_error(req, 422, "unsupported",
                     "model '%s' is %s: classify needs a classifier", s->name, m->ops->article);
        goto done;
    }
    if (ld_api_images(req, api, s, &args, npy, npy_len, &x, &n) != 0)
        goto done;
    int c = m->arch.n_classes;
    LD_ASSERT(c >= 2 && c <= CLASSES_MAX); /* ld_model_from_ckpt validated the arch */
    logits = ld_malloc_array((size_t)n * (size_t)c, sizeof *logits);
    ld_err_t e;
    int rc = logits ? ld_model_classify(m, n, x, logits, NULL, &e) : LD_ENOMEM;
    if (rc != LD_OK) {
        ld_req_error(req, rc == LD_ENOMEM ? 503 : 422, rc == LD_ENOMEM ? "overloaded" : "unprocessable",
                     "%s", rc == LD_ENOMEM ? "out of memory" : e.msg);
        goto done;
    }
    for (size_t i = 0; i < (size_t)n * (size_t)c; i++) {
        if (!isfinite(logits[i])) {
            ld_req_error(req, 422, "non_finite_output",
                         "model '%s' produced values that are not finite for this input",
                         s->name);
            goto done;
        }
    }
    char num[16];
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"model\":");
    ld_buf_json_str(&b, s->name);
    ld_buf_puts(&b, ",\"classes\":[");
    for (int k = 0; k < c; k++) {
        if (k)
            ld_buf_putc(&b, ',');
        ld_buf_json_str(&b, ld_eval_class_name(m, k, num, sizeof num));
    }
    ld_buf_puts(&b, "],\"predictions\":[");
    for (int i = 0; i < n; i++) {
        float probs[CLASSES_MAX];
        int top = softmax(logits + (size_t)i * (size_t)c, c, probs);
        ld_buf_puts(&b, i ? ",{\"label\":" : "{\"label\":");
        ld_buf_int(&b, top);
        ld_buf_puts(&b, ",\"class\":");
        ld_buf_json_str(&b, ld_eval_class_name(m, top, num, sizeof num));
        ld_buf_puts(&b, ",\"probs\":");
        ld_buf_json_floats(&b, probs, (size_t)c);
        ld_buf_putc(&b, '}');
    }
    ld_buf_puts(&b, "]}");
    ld_req_reply_json(req, 200, &b);
done:
    free(x);
    free(logits);
    ld_served_release(s);
}

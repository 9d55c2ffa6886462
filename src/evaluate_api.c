/* evaluate_api.c — POST /v1/models/{name}/evaluate. See evaluate_api.h. */
#include "evaluate_api.h"

#include "api_impl.h"
#include "latentd/eval.h"
#include "latentd/fsutil.h"
#include "latentd/jobs.h"
#include "latentd/jsonarg.h"

#include <stdio.h>
#include <string.h>

#define EVAL_N_DEFAULT 10000
#define EVAL_K_DEFAULT 100
#define EVAL_SEED_DEFAULT 1
#define EVAL_CLASSIFIER_DEFAULT "fashion-classifier"

/* The test data of model m: its record's data set when that is a name of
 * the data folder, else Fashion-MNIST. */
static const char *test_data(const ld_model_t *m)
{
    const char *d = ld_record_get(&m->record, "data");
    return d && strncmp(d, "fashion-mnist", 13) != 0 && ld_name_is_safe(d) ? d : "fashion-mnist";
}

/* The served classifier named name that fits s's images: a reference, or
 * NULL after answering 422. */
static ld_served_t *get_classifier(ld_req_t *req, ld_api_t *api, const ld_served_t *s,
                                   const char *name)
{
    ld_served_t *c = ld_name_is_safe(name) ? ld_registry_get(ld_api_registry(api), name) : NULL;
    if (!c)
        ld_req_error(req, 422, "invalid_value",
                     "classifier: no served model '%.64s' (serve a classifier, e.g. "
                     "fashion-classifier, or name one)",
                     name);
    else if (c->model->arch.kind != LD_KIND_CLASSIFIER)
        ld_req_error(req, 422, "invalid_value", "classifier: model '%s' is a %s, not a classifier",
                     c->name, ld_kind_name(c->model->arch.kind));
    else if (c->model->arch.x_dim != s->model->arch.x_dim)
        ld_req_error(req, 422, "invalid_value",
                     "classifier: model '%s' takes %d-pixel images; '%s' makes %d-pixel ones",
                     c->name, c->model->arch.x_dim, s->name, s->model->arch.x_dim);
    else
        return c;
    ld_served_release(c);
    return NULL;
}

void ld_evaluate_handler(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const opts[] = {"n", "k", "seed", "classifier", NULL};
    ld_args_t args;
    const uint8_t *npy;
    size_t npy_len;
    long long n, k;
    uint64_t seed;
    int seeded;
    const char *cname;
    if (ld_api_body_args(req, NULL, opts, &args, &npy, &npy_len) != 0 ||
        ld_arg_int(&args, "n", LD_EVAL_PRC_K + 1, LD_EVAL_N_MAX, EVAL_N_DEFAULT, &n) != 0 ||
        ld_arg_int(&args, "k", 1, LD_EVAL_K_MAX, EVAL_K_DEFAULT, &k) != 0 ||
        ld_arg_seed(&args, "seed", &seeded, &seed) != 0 ||
        ld_arg_string(&args, "classifier", EVAL_CLASSIFIER_DEFAULT, &cname) != 0)
        return;
    if (!seeded)
        seed = EVAL_SEED_DEFAULT;
    ld_served_t *s = ld_api_get_model(req, ld_api_registry(api)), *c = NULL;
    if (!s)
        return;
    ld_kind_t kind = s->model->arch.kind;
    if (s->model->ops->decode_net < 0) {
        ld_req_error(req, 422, "unsupported",
                     "model '%s' is a %s: only generative models are evaluated (a classifier's "
                     "accuracy is in `latentd eval`)",
                     s->name, ld_kind_name(kind));
        goto done;
    }
    if (!(c = get_classifier(req, api, s, cname)))
        goto done;
    ld_jobs_t *jobs = ld_api_jobs(api);
    if (!jobs) {
        ld_req_error(req, 503, "unavailable", "evaluation runs as a job: this server has no jobs "
                                              "engine");
        goto done;
    }
    ld_jobspec_eval_t ev = {.n = (int)n, .k = (int)k, .seed = seed};
    snprintf(ev.file, sizeof ev.file, "%s", s->file);
    snprintf(ev.classifier, sizeof ev.classifier, "%s", c->name);
    snprintf(ev.classifier_file, sizeof ev.classifier_file, "%s", c->file);
    char id[LD_JOB_ID_MAX];
    int retry = 0;
    ld_err_t e;
    int rc = ld_jobs_submit_evaluate(jobs, s->name, test_data(s->model), &ev, id, &retry, &e);
    ld_buf_t b;
    if (ld_api_job_accepted(req, rc, retry, &e, id, &b) != 0)
        goto done;
    ld_buf_puts(&b, ",\"model\":");
    ld_buf_json_str(&b, s->name);
    ld_buf_puts(&b, ",\"classifier\":");
    ld_buf_json_str(&b, c->name);
    ld_buf_printf(&b, ",\"n\":%d,\"k\":%d,\"seed\":%llu}", ev.n, ev.k, (unsigned long long)seed);
    ld_req_reply_json(req, 202, &b);
done:
    ld_served_release(c);
    ld_served_release(s);
}

/* jobs_eval.c — evaluation jobs (jobs.h ld_jobs_submit_evaluate): the
 * quality measures of eval.h on a served model, run on a worker thread. */
#define _POSIX_C_SOURCE 200809L
#include "jobs_impl.h"

#include "latentd/buf.h"
#include "latentd/data.h"
#include "latentd/eval.h"
#include "latentd/fsutil.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <string.h>

int ld_jobs_submit_evaluate(ld_jobs_t *j, const char *model, const char *data,
                            const ld_jobspec_eval_t *ev, char id[LD_JOB_ID_MAX],
                            int *retry_after_s, ld_err_t *err)
{
    job_t *job = jobs_oneshot_new(model, id, retry_after_s);
    if (!job)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    ld_jobspec_t *s = job->spec;
    s->evaluate = 1;
    jobs_copy_str(s->data, sizeof s->data, data);
    s->ev = *ev;
    return jobs_submit_job(j, job, NULL, NULL, 0, id, retry_after_s, err);
}

/* A conditional model's (cgan, cvae) per-class accuracy: the classifier's
 * accuracy on samples of each requested class, into acc (the classifier's
 * n_classes; classes the model lacks get 0).  1 when m is conditional and acc
 * is filled, 0 for an unconditional model (the result's "per_class_accuracy"
 * is then null), or an error code. */
static int per_class_accuracy(const ld_model_t *m, const ld_model_t *cls, int n, uint64_t seed,
                              double *acc, ld_err_t *err)
{
    if (!m->ops->conditional)
        return 0;
    ld_cond_eval_t ce;
    int rc = ld_eval_cond(m, cls, n, seed, &ce, err);
    if (rc)
        return rc;
    for (int c = 0; c < cls->arch.n_classes; c++)
        acc[c] = c < ce.n_classes ? ce.class_acc[c] : 0;
    return 1;
}

/* Everything an evaluation computes. */
typedef struct {
    double acc;          /* the classifier's test accuracy */
    ld_gan_eval_t g;     /* sample measures */
    int vae;             /* the VAE figures below are set */
    double nelbo, rec, kl, iwae;
    int conditional;     /* pc[] is set */
    double pc[256];
} eval_res_t;

static void put_num(ld_buf_t *b, const char *key, double v)
{
    ld_buf_printf(b, ",\"%s\":%.6g", key, isfinite(v) ? v : 0.0);
}

/* The result JSON (jobs.h) into b. */
static void result_json(ld_buf_t *b, const ld_jobspec_t *s, const ld_model_t *m,
                        const ld_model_t *cls, const ld_dataset_t *d, const eval_res_t *r,
                        double secs)
{
    const ld_jobspec_eval_t *ev = &s->ev;
    char num[16];
    ld_buf_puts(b, "{\"model\":");
    ld_buf_json_str(b, s->model);
    ld_buf_puts(b, ",\"kind\":");
    ld_buf_json_str(b, ld_kind_name(m->arch.kind));
    ld_buf_puts(b, ",\"file\":");
    ld_buf_json_str(b, ev->file);
    ld_buf_puts(b, ",\"data\":");
    ld_buf_json_str(b, d->name);
    ld_buf_printf(b, ",\"images\":%d,\"n\":%d,\"k\":%d,\"seed\":%" PRIu64, d->n, ev->n, ev->k,
                  ev->seed);
    ld_buf_puts(b, ",\"classifier\":{\"model\":");
    ld_buf_json_str(b, ev->classifier);
    ld_buf_puts(b, ",\"file\":");
    ld_buf_json_str(b, ev->classifier_file);
    put_num(b, "accuracy", r->acc);
    ld_buf_puts(b, "},\"samples\":{\"fid\":");
    ld_buf_printf(b, "%.6g", r->g.fid);
    put_num(b, "precision", r->g.precision);
    put_num(b, "recall", r->g.recall);
    ld_buf_printf(b, ",\"nn_k\":%d", LD_EVAL_PRC_K);
    put_num(b, "min_class_share", r->g.min_share);
    ld_buf_puts(b, ",\"min_class\":");
    ld_buf_json_str(b, ld_eval_class_name(cls, r->g.min_class, num, sizeof num));
    ld_buf_puts(b, ",\"class_shares\":{");
    for (int c = 0; c < r->g.n_classes; c++) {
        ld_buf_puts(b, c ? "," : "");
        ld_buf_json_str(b, ld_eval_class_name(cls, c, num, sizeof num));
        ld_buf_printf(b, ":%.6g", r->g.share[c]);
    }
    ld_buf_puts(b, "}},\"vae\":");
    if (r->vae) {
        ld_buf_printf(b, "{\"nelbo\":%.6g", r->nelbo);
        put_num(b, "rec", r->rec);
        put_num(b, "kl", r->kl);
        ld_buf_printf(b, ",\"iwae_k\":%d", ev->k);
        if (isfinite(r->iwae))
            put_num(b, "iwae_nll", r->iwae);
        else
            ld_buf_puts(b, ",\"iwae_nll\":null");
        ld_buf_puts(b, "}");
    } else {
        ld_buf_puts(b, "null");
    }
    ld_buf_puts(b, ",\"per_class_accuracy\":");
    if (r->conditional) {
        for (int c = 0; c < cls->arch.n_classes; c++) {
            ld_buf_puts(b, c ? "," : "{");
            ld_buf_json_str(b, ld_eval_class_name(cls, c, num, sizeof num));
            ld_buf_printf(b, ":%.6g", r->pc[c]);
        }
        ld_buf_puts(b, "}");
    } else {
        ld_buf_puts(b, "null");
    }
    ld_buf_printf(b, ",\"seconds\":%.3f}", secs);
}

/* Load MODELS/file into *m. */
static int load_model(ld_jobs_t *j, const char *file, ld_model_t **m, ld_err_t *e)
{
    char *path = jobs_path_join(j->models_dir, file, NULL);
    int rc = path ? ld_model_load(path, m, e) : ld_err_set(e, LD_ENOMEM, "out of memory");
    free(path);
    return rc;
}

void jobs_run_evaluate(ld_jobs_t *j, job_t *job)
{
    const ld_jobspec_t *s = job->spec;
    const ld_jobspec_eval_t *ev = &s->ev;
    ld_err_t e = {{0}};
    ld_model_t *m = NULL, *cls = NULL;
    ld_dataset_t *d = NULL;
    eval_res_t r;
    memset(&r, 0, sizeof r);
    char data_path[PATH_MAX], out[PATH_MAX];
    double t0 = ld_now();
    int rc = jobs_job_path(j, job, "result.json", out, sizeof out)
                 ? ld_err_set(&e, LD_EINVAL, "path too long")
                 : ld_jobspec_resolve_data(j->data_dir, s->data, data_path, sizeof data_path, &e);
    long total = 4, step = 0;
    jobs_oneshot_progress(j, job, step, total);
    if (!rc)
        rc = load_model(j, ev->file, &m, &e);
    if (!rc)
        rc = load_model(j, ev->classifier_file, &cls, &e);
    if (!rc && m->ops->decode_net < 0)
        rc = ld_err_set(&e, LD_EINVAL, "%s is a %s: only generative models are evaluated",
                        ev->file, ld_kind_name(m->arch.kind));
    if (!rc && cls->arch.kind != LD_KIND_CLASSIFIER)
        rc = ld_err_set(&e, LD_EINVAL, "classifier '%s' is a %s, not a classifier",
                        ev->classifier, ld_kind_name(cls->arch.kind));
    if (!rc)
        rc = ld_data_load(data_path, LD_SPLIT_TEST, 0, &d, &e);
    if (!rc)
        jobs_oneshot_progress(j, job, ++step, total);
    if (!rc && jobs_oneshot_stopped(j, job))
        rc = ld_err_set(&e, LD_ECANCELLED, "stopped");
    if (!rc && (rc = ld_eval_accuracy(cls, d, &r.acc, &e)) == LD_OK)
        jobs_oneshot_progress(j, job, ++step, total);
    if (!rc && jobs_oneshot_stopped(j, job))
        rc = ld_err_set(&e, LD_ECANCELLED, "stopped");
    if (!rc && (rc = ld_eval_gan(m, cls, d, ev->n, ev->seed, &r.g, &e)) == LD_OK)
        jobs_oneshot_progress(j, job, ++step, total);
    if (!rc && jobs_oneshot_stopped(j, job))
        rc = ld_err_set(&e, LD_ECANCELLED, "stopped");
    if (!rc && m->ops->has_elbo) {
        r.vae = 1;
        rc = ld_eval_vae(m, d, ev->seed, &r.nelbo, &r.rec, &r.kl, &e);
        if (!rc)
            rc = ld_eval_iwae(m, d, ev->k, ev->seed, &r.iwae, &e);
    }
    if (!rc) {
        int cond = per_class_accuracy(m, cls, ev->n, ev->seed, r.pc, &e);
        rc = cond < 0 ? cond : LD_OK;
        r.conditional = cond > 0;
    }
    if (!rc && jobs_oneshot_stopped(j, job))
        rc = ld_err_set(&e, LD_ECANCELLED, atomic_load(&job->cancel) ? "cancelled" : "stopped");
    ld_buf_t b = {0};
    if (!rc)
        result_json(&b, s, m, cls, d, &r, ld_now() - t0);
    jobs_oneshot_end(j, job, rc, &e, t0, out, &b);
    ld_model_free(m);
    ld_model_free(cls);
    ld_data_free(d);
}

/* ---- evaluation at the checkpoints of a training job ---- */

#define COLLAPSE_SHARE 0.01 /* a class under this share of the samples is a warning */
#define EVAL_TIME_SHARE 0.1 /* evaluation skips checkpoints while above this share of the run */

struct jobs_ckpt_eval {
    ld_dataset_t *d;     /* the first eval_n test images (loaded at the first use) */
    ld_model_t *cls;     /* GAN: the classifier; NULL for a VAE */
    int n;
    int broken;          /* its inputs could not be had (logged): no more evaluation */
    double t0, spent;    /* ld_now() at the start; seconds evaluating */
};

void jobs_ckpt_eval_free(jobs_ckpt_eval_t *ce)
{
    if (!ce)
        return;
    ld_data_free(ce->d);
    ld_model_free(ce->cls);
    free(ce);
}

jobs_ckpt_eval_t *jobs_ckpt_eval_new(ld_jobs_t *j, job_t *job, const ld_model_t *m)
{
    (void)j;
    if (job->spec->eval_n <= 0 || !m)
        return NULL;
    jobs_ckpt_eval_t *ce = calloc(1, sizeof *ce);
    if (ce) {
        ce->n = job->spec->eval_n;
        ce->t0 = ld_now();
    }
    return ce;
}

/* Load what evaluating m needs (at its first use, so that training starts
 * as soon as without evaluation): the classifier of a GAN first (cheap to
 * miss), then the test images.  0, or -1 with ce->broken set (logged). */
static int ckpt_eval_load(ld_jobs_t *j, job_t *job, jobs_ckpt_eval_t *ce, const ld_model_t *m)
{
    const ld_jobspec_t *s = job->spec;
    char data_path[PATH_MAX], file[LD_JOBSPEC_NAME_MAX + 16];
    ld_err_t e = {{0}};
    int rc = LD_OK;
    if (m->ops->family == LD_KIND_GAN) {
        snprintf(file, sizeof file, "%s.safetensors", s->eval_classifier);
        rc = load_model(j, file, &ce->cls, &e);
        if (!rc && (ce->cls->arch.kind != LD_KIND_CLASSIFIER ||
                    ce->cls->arch.x_dim != m->arch.x_dim))
            rc = ld_err_set(&e, LD_EINVAL, "%s is not a classifier of %d-pixel images", file,
                            m->arch.x_dim);
    }
    if (!rc)
        rc = ld_jobspec_resolve_data(j->data_dir, s->data, data_path, sizeof data_path, &e);
    if (!rc)
        rc = ld_data_load(data_path, LD_SPLIT_TEST, ce->n, &ce->d, &e);
    if (!rc && ce->d->dim != m->arch.x_dim)
        rc = ld_err_set(&e, LD_EINVAL, "test images of %d pixels", ce->d->dim);
    if (!rc && ce->d->n <= LD_EVAL_PRC_K)
        rc = ld_err_set(&e, LD_EINVAL, "only %d test images", ce->d->n);
    if (!rc)
        return 0;
    jobs_log(j, LD_LOG_WARN, "job %s: no evaluation at checkpoints: %s", job->id, e.msg);
    ce->broken = 1;
    return -1;
}

void jobs_ckpt_eval_run(ld_jobs_t *j, job_t *job, jobs_ckpt_eval_t *ce, const ld_model_t *m,
                        long step, int last)
{
    double t = ld_now();
    if (ce->broken || (!ce->d && ckpt_eval_load(j, job, ce, m) != 0))
        return;
    /* checkpoints close together would spend the run evaluating: skip some,
     * so evaluation stays under a tenth of the time; the last always runs */
    if (!last && ce->spent > EVAL_TIME_SHARE * (t - ce->t0))
        return;
    /* nor while serving is busy: training pauses then (jobs.h, CPU priority) */
    if (!last && j->cfg.busy && j->cfg.busy(j->cfg.busy_user))
        return;
    eval_point_t pt = {.step = step, .fid = NAN, .min_share = NAN, .precision = NAN,
                       .recall = NAN, .nelbo = NAN};
    ld_gan_eval_t g;
    double rec, kl;
    ld_err_t e = {{0}};
    int rc;
    if (ce->cls) {
        rc = ld_eval_gan(m, ce->cls, ce->d, ce->n, (uint64_t)step, &g, &e);
        if (!rc) {
            pt.fid = g.fid;
            pt.min_share = g.min_share;
            pt.precision = g.precision;
            pt.recall = g.recall;
            char num[16];
            jobs_copy_str(pt.min_class, sizeof pt.min_class,
                          ld_eval_class_name(ce->cls, g.min_class, num, sizeof num));
        }
    } else {
        rc = ld_eval_vae(m, ce->d, (uint64_t)step, &pt.nelbo, &rec, &kl, &e);
    }
    ce->spent += ld_now() - t;
    if (rc) {
        jobs_log(j, LD_LOG_WARN, "job %s: evaluation at step %ld: %s", job->id, step, e.msg);
        return;
    }
    int warn = ce->cls && pt.min_share < COLLAPSE_SHARE;
    warn_t w = {.step = step, .share = pt.min_share};
    jobs_copy_str(w.cls, sizeof w.cls, pt.min_class);
    pthread_mutex_lock(&j->lock);
    jobs_eval_push_locked(job, &pt);
    /* a warning is an event at once; a plain point goes out with the next
     * progress event, which on_progress rate-limits (NOTIFY_INTERVAL_S) */
    if (warn) {
        jobs_warn_push_locked(job, &w);
        jobs_bump_locked(j, job);
    }
    pthread_mutex_unlock(&j->lock);
    if (warn)
        jobs_wake_subs(j, job);
    if (warn)
        jobs_log(j, LD_LOG_WARN, "job %s: step %ld: mode collapse: %s at %.1f%%", job->id, step,
                 pt.min_class, 100 * pt.min_share);
}

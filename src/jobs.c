/* jobs.c — the background training engine: queue, workers, events, metrics.
 * Records and recovery: jobs_store.c.  Contract, states, recovery and lock
 * order: jobs.h. */
#define _GNU_SOURCE /* pthread_condattr_setclock, gettid */
#include "jobs_impl.h"

#include "latentd/replica.h"

#include "latentd/buf.h"
#include "latentd/data.h"
#include "latentd/fsutil.h"
#include "latentd/image.h"
#include "latentd/invert.h"
#include "latentd/model.h"
#include "latentd/train.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ---- */

static const char *const state_names[LD_JOB_N_STATES] = {
    "queued", "running", "succeeded", "failed", "cancelled", "interrupted"};

const char *ld_job_state_name(ld_job_state_t s)
{
    return (unsigned)s < LD_JOB_N_STATES ? state_names[s] : "?";
}

int ld_job_state_is_final(ld_job_state_t s)
{
    return s == LD_JOB_SUCCEEDED || s == LD_JOB_FAILED || s == LD_JOB_CANCELLED;
}

void jobs_log(ld_jobs_t *j, ld_log_level_t level, const char *fmt, ...)
{
    if (!j->cfg.log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    j->cfg.log(j->cfg.user, level, line);
}

void jobs_copy_str(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

char *jobs_path_join(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + (c ? strlen(c) : 0) + 3;
    char *p = malloc(n);
    if (p && c)
        snprintf(p, n, "%s/%s/%s", a, b, c);
    else if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

const struct ld_replica *ld_jobs_replica(const ld_jobs_t *j)
{
    return j->cfg.replica;
}

/* dst = "<jobs_dir>/<id>/<name>"; 0, or -1 when it does not fit. */
int jobs_job_path(const ld_jobs_t *j, const job_t *job, const char *name, char *dst, size_t len)
{
    return snprintf(dst, len, "%s/%s/%s", j->jobs_dir, job->id, name) < (int)len ? 0 : -1;
}

static struct timespec deadline_in(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double whole = floor(seconds);
    ts.tv_sec += (time_t)whole;
    ts.tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static int init_cond_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

/* ---- jobs: allocation, lookup, events ---- */

job_t *jobs_job_alloc(void)
{
    job_t *job = calloc(1, sizeof *job);
    if (job && !(job->spec = calloc(1, sizeof *job->spec))) {
        free(job);
        job = NULL;
    }
    if (!job)
        return NULL;
    atomic_init(&job->cancel, 0);
    atomic_init(&job->tick_mark, 0);
    job->resumed_from_step = -1;
    job->seq = 1;
    job->last_event = ld_now();
    pthread_mutex_init(&job->persist_lock, NULL);
    return job;
}

void jobs_job_free(job_t *job)
{
    if (!job)
        return;
    pthread_mutex_destroy(&job->persist_lock);
    free(job->spec_json);
    free(job->spec);
    free(job->hist);
    free(job->evals);
    free(job->warns);
    free(job);
}

void jobs_take_names(job_t *job)
{
    job->kind = job->spec->kind;
    job->kind_name = ld_jobspec_kind_name(job->spec);
    jobs_copy_str(job->model, sizeof job->model, job->spec->model);
    jobs_copy_str(job->data, sizeof job->data, job->spec->data);
}

void jobs_shrink_locked(job_t *job)
{
    free(job->spec);
    job->spec = NULL;
    free(job->hist);
    job->hist = NULL;
    job->hist_n = job->hist_cap = 0;
    free(job->evals);
    job->evals = NULL;
    job->evals_n = job->evals_cap = 0;
    job->hist_saved = 1;
}

/* Under lock. NULL when absent. */
static job_t *find_locked(ld_jobs_t *j, const char *id)
{
    if (!id)
        return NULL;
    for (int i = j->n_all - 1; i >= 0; i--)
        if (!j->all[i]->purged && strcmp(j->all[i]->id, id) == 0)
            return j->all[i];
    return NULL;
}

/* Under lock: keep all[] sorted by num (submits may finish out of order). */
int jobs_insert_locked(ld_jobs_t *j, job_t *job)
{
    if (j->n_all == j->cap_all) {
        int cap = j->cap_all ? 2 * j->cap_all : 64;
        job_t **v = realloc(j->all, (size_t)cap * sizeof *v);
        if (!v)
            return LD_ENOMEM;
        j->all = v;
        j->cap_all = cap;
    }
    int i = j->n_all;
    while (i > 0 && j->all[i - 1]->num > job->num) {
        j->all[i] = j->all[i - 1];
        i--;
    }
    j->all[i] = job;
    j->n_all++;
    return LD_OK;
}

void jobs_enqueue_locked(ld_jobs_t *j, job_t *job)
{
    job->next_queued = NULL;
    if (j->q_tail)
        j->q_tail->next_queued = job;
    else
        j->q_head = job;
    j->q_tail = job;
    j->q_len++;
    pthread_cond_signal(&j->work_cond);
}

static job_t *dequeue_locked(ld_jobs_t *j)
{
    job_t *job = j->q_head;
    if (job) {
        j->q_head = job->next_queued;
        if (!j->q_head)
            j->q_tail = NULL;
        job->next_queued = NULL;
        j->q_len--;
    }
    return job;
}

static void unqueue_locked(ld_jobs_t *j, job_t *job)
{
    job_t **pp = &j->q_head, *prev = NULL;
    while (*pp && *pp != job) {
        prev = *pp;
        pp = &(*pp)->next_queued;
    }
    if (!*pp)
        return;
    *pp = job->next_queued;
    if (j->q_tail == job)
        j->q_tail = prev;
    job->next_queued = NULL;
    j->q_len--;
}

/* Under lock: a new event for job (streams and ld_jobs_wait see it). */
void jobs_bump_locked(ld_jobs_t *j, job_t *job)
{
    job->seq++;
    job->last_event = ld_now();
    pthread_cond_broadcast(&j->event_cond);
}

/* Without lock: wake the streams of job (all streams when job is NULL). */
static void wake_subs(ld_jobs_t *j, const job_t *job)
{
    pthread_mutex_lock(&j->sub_lock);
    for (ld_jobs_sub_t *s = j->subs; s; s = s->next)
        if (!job || s->job == job)
            s->wake(s->user);
    pthread_mutex_unlock(&j->sub_lock);
}

/* Under lock: a state change (timestamps follow it). */
void jobs_set_state_locked(ld_jobs_t *j, job_t *job, ld_job_state_t s)
{
    job->state = s;
    if (s == LD_JOB_RUNNING && !job->started[0])
        ld_utc_iso8601(job->started, sizeof job->started);
    if (ld_job_state_is_final(s))
        ld_utc_iso8601(job->finished, sizeof job->finished);
    if (s == LD_JOB_FAILED) /* replaces a note that promised a resume */
        snprintf(job->note, sizeof job->note,
                 "failed at step %ld; a failed job does not resume: submit its spec again",
                 job->step);
    jobs_bump_locked(j, job);
}

/* ---- the data set cache ---- */

static void cache_release(ld_jobs_t *j, cache_entry_t *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&j->cache_lock);
    if (--e->refs == 0) {
        cache_entry_t **pp = &j->cache;
        while (*pp != e)
            pp = &(*pp)->next;
        *pp = e->next;
        ld_data_free(e->d);
        free(e);
    }
    pthread_mutex_unlock(&j->cache_lock);
}

/* Load (path, limit) once however many jobs ask at the same time. */
static int cache_acquire(ld_jobs_t *j, const char *path, int limit, cache_entry_t **out,
                         ld_err_t *err)
{
    pthread_mutex_lock(&j->cache_lock);
    cache_entry_t *e = j->cache;
    while (e && !(e->limit == limit && strcmp(e->path, path) == 0))
        e = e->next;
    if (e) {
        e->refs++;
        while (e->loading)
            pthread_cond_wait(&j->cache_cond, &j->cache_lock);
    } else {
        if (!(e = calloc(1, sizeof *e))) {
            pthread_mutex_unlock(&j->cache_lock);
            return ld_err_set(err, LD_ENOMEM, "out of memory");
        }
        jobs_copy_str(e->path, sizeof e->path, path);
        e->limit = limit;
        e->refs = 1;
        e->loading = 1;
        e->next = j->cache;
        j->cache = e;
        pthread_mutex_unlock(&j->cache_lock);
        ld_err_t le = {{0}};
        ld_dataset_t *d = NULL;
        int rc = ld_data_load(path, LD_SPLIT_TRAIN, limit, &d, &le);
        pthread_mutex_lock(&j->cache_lock);
        e->d = d;
        e->rc = rc;
        jobs_copy_str(e->err, sizeof e->err, le.msg);
        e->loading = 0;
        pthread_cond_broadcast(&j->cache_cond);
    }
    int rc = e->rc;
    if (rc)
        ld_err_set(err, rc, "%s", e->err);
    pthread_mutex_unlock(&j->cache_lock);
    if (rc) {
        cache_release(j, e);
        return rc;
    }
    *out = e;
    return LD_OK;
}

/* ---- running one job ---- */

typedef struct {
    ld_jobs_t *j;
    job_t *job;
    long stride;        /* steps between loss_history points */
    long every;         /* checkpoint_every */
    const ld_model_t *m;      /* the model trained (not for MPI jobs) */
    jobs_ckpt_eval_t *ce;     /* evaluation at checkpoints, or NULL */
    double last_event;
    int record_failed;  /* a record write at a checkpoint failed: the run stops */
    ld_err_t record_err;
} run_ctx_t;

/* Under lock: append a loss_history point, dropping the oldest when full. */
void jobs_hist_push_locked(job_t *job, long step, const double *v, int n)
{
    if (job->hist_n > 0 && job->hist[job->hist_n - 1].step >= step)
        return;
    if (job->hist_n == HIST_CAP) {
        memmove(job->hist, job->hist + 1, (HIST_CAP - 1) * sizeof job->hist[0]);
        job->hist_n--;
    }
    if (job->hist_n == job->hist_cap) { /* sized to the points, not to HIST_CAP */
        int cap = job->hist_cap ? 2 * job->hist_cap : 16;
        cap = cap < HIST_CAP ? cap : HIST_CAP;
        hist_point_t *h = realloc(job->hist, (size_t)cap * sizeof *h);
        if (!h)
            return; /* the point is lost, the run goes on */
        job->hist = h;
        job->hist_cap = cap;
    }
    hist_point_t *p = &job->hist[job->hist_n++];
    p->step = step;
    for (int i = 0; i < LD_MAX_LOSSES; i++)
        p->v[i] = i < n ? v[i] : 0;
}

/* Grow *arr (elements of size sz, *cap of them) to hold one more, at most
 * max; 0, or -1 when full or out of memory. */
static int grow(void **arr, int n, int *cap, int max, size_t sz)
{
    if (n < *cap)
        return 0;
    if (*cap >= max)
        return -1;
    int c = *cap ? 2 * *cap : 4;
    c = c < max ? c : max;
    void *p = realloc(*arr, (size_t)c * sz);
    if (!p)
        return -1;
    *arr = p;
    *cap = c;
    return 0;
}

void jobs_eval_push_locked(job_t *job, const eval_point_t *p)
{
    if (job->evals_n == EVAL_HIST_CAP) {
        memmove(job->evals, job->evals + 1, (EVAL_HIST_CAP - 1) * sizeof *job->evals);
        job->evals_n--;
    }
    if (grow((void **)&job->evals, job->evals_n, &job->evals_cap, EVAL_HIST_CAP,
             sizeof *job->evals) == 0)
        job->evals[job->evals_n++] = *p;
}

void jobs_warn_push_locked(job_t *job, const warn_t *w)
{
    if (grow((void **)&job->warns, job->warns_n, &job->warns_cap, WARN_CAP, sizeof *job->warns) == 0)
        job->warns[job->warns_n++] = *w;
}

/* Under lock: copy a trainer progress report into the record. */
static void take_progress_locked(job_t *job, const ld_progress_t *p, int rates)
{
    job->epoch = p->epoch;
    job->epochs = p->epochs;
    job->step = p->step;
    job->steps_total = p->steps_total;
    if (rates) {
        job->samples_per_s = p->samples_per_s;
        job->eta_s = p->eta_s;
    }
    for (int i = 0; i < p->n_losses && i < LD_MAX_LOSSES; i++)
        job->loss[i] = p->loss[i];
}

/* Called by ld_trainer_run after every step, on the worker thread.  The lock is
 * taken only when something is due: a history point, an epoch end, an event
 * (at most every 250 ms, and at the last step), or a checkpoint (the record is
 * saved with it).  Epoch ends update the record but are not events of their
 * own: a small data set can end an epoch every few milliseconds, and each
 * event sends the whole record to every stream. */
static int on_progress(const ld_progress_t *p, void *user)
{
    run_ctx_t *c = user;
    ld_jobs_t *j = c->j;
    job_t *job = c->job;
    if (c->stride == 0) /* an MPI job learns its length from its first step */
        c->stride = p->steps_total > HIST_TARGET ? (p->steps_total + HIST_TARGET - 1) / HIST_TARGET : 1;
    atomic_fetch_add_explicit(&j->steps_total, 1, memory_order_relaxed);
    double now = ld_now();
    int point = p->step % c->stride == 0 || p->finished;
    int event = now - c->last_event >= NOTIFY_INTERVAL_S || p->finished;
    int ckpt = c->every > 0 && p->step % c->every == 0 && !p->finished;
    if (point || event || ckpt || p->epoch_done) {
        pthread_mutex_lock(&j->lock);
        take_progress_locked(job, p, 1);
        if (point)
            jobs_hist_push_locked(job, p->step, p->loss, p->n_losses);
        if (event) {
            jobs_bump_locked(j, job);
            c->last_event = now;
        }
        pthread_mutex_unlock(&j->lock);
        if (event)
            wake_subs(j, job);
        if (c->ce && (ckpt || p->finished))
            jobs_ckpt_eval_run(j, job, c->ce, c->m, p->step, p->finished);
        if (ckpt && jobs_persist(j, job, &c->record_err)) {
            c->record_failed = 1; /* stop here; run_job fails the job with the reason */
            return 1;
        }
    }
    int stop = atomic_load(&job->cancel) || atomic_load(&j->stopping);
    if (!stop && !p->finished && j->cfg.busy && j->cfg.busy(j->cfg.busy_user)) {
        /* serving is busy: wait at this step boundary until it is not (see
         * jobs.h, CPU priority), polling every millisecond */
        struct timespec t0, t1, ms = {0, 1000000};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
            nanosleep(&ms, NULL);
            stop = atomic_load(&job->cancel) || atomic_load(&j->stopping);
        } while (!stop && j->cfg.busy(j->cfg.busy_user));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        atomic_fetch_add(&j->yield_ns, (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
                                           (t1.tv_nsec - t0.tv_nsec));
    }
    if (stop && !p->finished) {
        /* the trainer saves its state at this step before it returns: the
         * record must name the same step, or a resume would start past it */
        pthread_mutex_lock(&j->lock);
        take_progress_locked(job, p, 0);
        pthread_mutex_unlock(&j->lock);
    }
    return stop;
}

/* Everything a run holds, released in one place. */
typedef struct {
    cache_entry_t *data;
    ld_model_t *m;
    ld_trainer_t *t;
} run_res_t;

static void run_release(ld_jobs_t *j, run_res_t *r)
{
    ld_trainer_free(r->t);
    r->t = NULL;
    cache_release(j, r->data);
    r->data = NULL;
    ld_model_free(r->m);
    r->m = NULL;
}

/* Load the data, build the model and trainer, resume if a state file exists. */
static int run_prepare(ld_jobs_t *j, job_t *job, const char *state_path, run_res_t *r,
                       ld_err_t *err)
{
    char data_path[PATH_MAX];
    int rc = ld_jobspec_resolve_data(j->data_dir, job->spec->data, data_path, sizeof data_path, err);
    if (rc || (rc = cache_acquire(j, data_path, job->spec->limit, &r->data, err)))
        return rc;
    const ld_dataset_t *d = r->data->d;
    ld_arch_t arch = job->spec->arch;
    arch.img_h = d->h;
    arch.img_w = d->w;
    arch.x_dim = d->dim;
    ld_err_t e;
    if (ld_arch_validate(&arch, &e))
        return ld_err_set(err, LD_EINVAL, "data %s: %s", job->spec->data, e.msg);
    /* the spec was checked for 28x28 images; this data set's may be larger */
    if (ld_jobspec_check_bytes(&arch, &job->spec->train, j->cfg.caps.max_job_bytes, &e))
        return ld_err_set(err, LD_EINVAL, "data %s: %s", job->spec->data, e.msg);
    ld_train_opts_t o = job->spec->train;
    jobs_copy_str(o.state_path, sizeof o.state_path, state_path);
    o.abandon = &job->cancel; /* a cancel stops inside a step, writing no state */
    if ((rc = ld_model_new(&arch, o.seed, &r->m, err)) ||
        (rc = ld_trainer_new(r->m, d, &o, &r->t, err)))
        return rc;

    struct stat st;
    int have_state = stat(state_path, &st) == 0;
    if (have_state && (rc = ld_trainer_load_state(r->t, state_path, &e)))
        return ld_err_set(err, rc, "cannot resume from its checkpoint: %s", e.msg);
    ld_progress_t p;
    ld_trainer_progress(r->t, &p);
    pthread_mutex_lock(&j->lock);
    take_progress_locked(job, &p, 0);
    job->samples_per_s = 0;
    job->eta_s = 0;
    if (have_state) {
        job->resumed_from_step = p.step;
        while (job->hist_n > 0 && job->hist[job->hist_n - 1].step > p.step)
            job->hist_n--; /* those steps are run again */
        snprintf(job->note, sizeof job->note, "resumed from its checkpoint at step %ld", p.step);
    } else if (job->was_interrupted) {
        job->resumed_from_step = 0;
        job->hist_n = 0;
        memset(job->loss, 0, sizeof job->loss);
        snprintf(job->note, sizeof job->note,
                 "restarted from step 0: it was interrupted before its first checkpoint");
    }
    jobs_bump_locked(j, job);
    pthread_mutex_unlock(&j->lock);
    wake_subs(j, job);
    if (have_state)
        jobs_log(j, LD_LOG_INFO, "job %s: resuming at step %ld of %ld", job->id, p.step,
             p.steps_total);
    else if (job->was_interrupted)
        jobs_log(j, LD_LOG_WARN, "job %s: no checkpoint; restarting from step 0", job->id);
    return LD_OK;
}

/* Write the model into the model folder and hand it to the daemon. */
static int run_publish(ld_jobs_t *j, job_t *job, ld_model_t *m, ld_err_t *err)
{
    char path[PATH_MAX];
    ld_err_t e;
    int rc = ld_mkdir_p(j->models_dir, err);
    if (rc)
        return rc;
    if (snprintf(path, sizeof path, "%s/%s.safetensors", j->models_dir, job->spec->model) >=
        (int)sizeof path)
        return ld_err_set(err, LD_EINVAL, "model path too long");
    ld_record_set(&m->record, "job", "%s", job->id);
    if ((rc = ld_model_save(m, path, err)))
        return rc;
    if (j->cfg.publish && (rc = j->cfg.publish(j->cfg.user, job->spec->model, path, &e)))
        return ld_err_set(err, rc, "the model was written to %s.safetensors but could not be "
                                   "served: %s",
                          job->spec->model, e.msg);
    return LD_OK;
}

void jobs_wake_subs(ld_jobs_t *j, const job_t *job)
{
    wake_subs(j, job);
}

/* Jobs that run as one call (inversion, evaluation): see jobs_impl.h. */
job_t *jobs_oneshot_new(const char *model, char id[LD_JOB_ID_MAX], int *retry_after_s)
{
    if (retry_after_s)
        *retry_after_s = 0;
    id[0] = 0;
    job_t *job = jobs_job_alloc();
    if (job)
        jobs_copy_str(job->spec->model, sizeof job->spec->model, model);
    return job;
}

void jobs_oneshot_progress(ld_jobs_t *j, job_t *job, long step, long total)
{
    pthread_mutex_lock(&j->lock);
    job->step = step;
    job->steps_total = total;
    jobs_bump_locked(j, job);
    pthread_mutex_unlock(&j->lock);
    wake_subs(j, job);
}

int jobs_oneshot_stopped(ld_jobs_t *j, job_t *job)
{
    return atomic_load(&job->cancel) || atomic_load(&j->stopping);
}

void jobs_oneshot_end(ld_jobs_t *j, job_t *job, int rc, ld_err_t *e, double t0,
                      const char *path, ld_buf_t *result)
{
    if (!rc)
        rc = ld_buf_failed(result) ? ld_err_set(e, LD_ENOMEM, "out of memory")
                                   : ld_write_atomic(path, result->data, result->len, e);
    ld_buf_free(result);
    ld_job_state_t s = rc == LD_OK ? LD_JOB_SUCCEEDED
                       : rc != LD_ECANCELLED ? LD_JOB_FAILED
                       : atomic_load(&job->cancel) ? LD_JOB_CANCELLED
                                                   : LD_JOB_INTERRUPTED;
    pthread_mutex_lock(&j->lock);
    if (s == LD_JOB_SUCCEEDED)
        job->step = job->steps_total;
    else if (s == LD_JOB_FAILED)
        jobs_copy_str(job->error, sizeof job->error, e->msg[0] ? e->msg : "failed");
    else if (s == LD_JOB_INTERRUPTED)
        snprintf(job->note, sizeof job->note, "interrupted by shutdown; it runs at the next start");
    jobs_set_state_locked(j, job, s);
    pthread_mutex_unlock(&j->lock);
    jobs_persist(j, job, NULL);
    wake_subs(j, job);
    jobs_log(j, s == LD_JOB_FAILED ? LD_LOG_ERROR : LD_LOG_INFO, "job %s %s in %.1f s%s%s", job->id,
             ld_job_state_name(s), ld_now() - t0, s == LD_JOB_FAILED ? ": " : "",
             s == LD_JOB_FAILED ? e->msg : "");
}

/* An inversion job (jobspec.h): the GAN from its file, the images from the
 * job's images.npy, the answer into result.json.  One ld_invert call: a
 * cancel or a shutdown acts before it starts or after it ends. */
static void run_invert(ld_jobs_t *j, job_t *job)
{
    const ld_jobspec_invert_t *inv = &job->spec->inv;
    char in[PATH_MAX], out[PATH_MAX], *mpath = jobs_path_join(j->models_dir, inv->file, NULL);
    ld_err_t e = {{0}};
    ld_model_t *m = NULL;
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    float *x = NULL, *z = NULL, *xr = NULL, *mse = NULL;
    int nd = 0, n = inv->images;
    int64_t sh[4] = {0};
    double t0 = ld_now();
    int rc = !mpath ? ld_err_set(&e, LD_ENOMEM, "out of memory")
             : jobs_job_path(j, job, "images.npy", in, sizeof in) ||
                     jobs_job_path(j, job, "result.json", out, sizeof out)
                 ? ld_err_set(&e, LD_EINVAL, "path too long")
                 : ld_read_file(in, (size_t)1 << 30, &raw, &raw_len, &e);
    if (!rc)
        rc = ld_npy_decode(raw, raw_len, &x, &nd, sh, &e);
    if (!rc && (nd != 2 || sh[0] != n))
        rc = ld_err_set(&e, LD_EFORMAT, "images.npy does not hold %d images", n);
    if (!rc)
        rc = ld_model_load(mpath, &m, &e);
    if (!rc && (!m->ops->invertible || sh[1] != m->arch.x_dim))
        rc = ld_err_set(&e, LD_EINVAL, "%s is not a GAN of %lld-pixel images", inv->file,
                        (long long)sh[1]);
    if (!rc) {
        z = ld_malloc_array((size_t)n * (size_t)m->arch.z_dim, sizeof *z);
        xr = ld_malloc_array((size_t)n * (size_t)m->arch.x_dim, sizeof *xr);
        mse = ld_malloc_array((size_t)n, sizeof *mse);
        if (!z || !xr || !mse)
            rc = ld_err_set(&e, LD_ENOMEM, "out of memory");
    }
    jobs_oneshot_progress(j, job, 0, n);
    if (!rc && jobs_oneshot_stopped(j, job))
        rc = ld_err_set(&e, LD_ECANCELLED, "stopped before it started");
    if (!rc)
        rc = ld_invert(m, n, x, &inv->opts, z, xr, mse, &e);
    for (int i = 0; !rc && i < n; i++)
        if (!isfinite(mse[i]))
            rc = ld_err_set(&e, LD_EINVAL, "the inversion diverged (values not finite): lower lr");
    if (!rc && atomic_load(&job->cancel))
        rc = ld_err_set(&e, LD_ECANCELLED, "cancelled");
    ld_buf_t b = {0};
    if (!rc)
        ld_invert_json(&b, job->spec->model, &m->arch, &inv->opts, n, z, mse, xr);
    jobs_oneshot_end(j, job, rc, &e, t0, out, &b);
    ld_model_free(m);
    free(mpath);
    free(raw);
    free(x);
    free(z);
    free(xr);
    free(mse);
}

static void run_job(ld_jobs_t *j, job_t *job)
{
    if (job->spec->invert) {
        run_invert(j, job);
        return;
    }
    if (job->spec->evaluate) {
        jobs_run_evaluate(j, job);
        return;
    }
    char state_path[PATH_MAX];
    ld_err_t e = {{0}};
    run_res_t r = {0};
    double t0 = ld_now();
    int rc = jobs_job_path(j, job, "state.safetensors", state_path, sizeof state_path)
                 ? ld_err_set(&e, LD_EINVAL, "state path too long")
                 : job->spec->ranks > 1 ? LD_OK /* MPI ranks: the data and model stay out */
                 : run_prepare(j, job, state_path, &r, &e);
    if (!rc && job->spec->ranks > 1) {
        run_ctx_t c = {.j = j, .job = job, .every = job->spec->train.checkpoint_every};
        rc = atomic_load(&job->cancel) || atomic_load(&j->stopping)
                 ? ld_err_set(&e, LD_ECANCELLED, "stopped before its first step")
                 : jobs_mpi_run(j, job, state_path, on_progress, &c, &r.m, &e);
        if (c.record_failed)
            rc = ld_err_set(&e, LD_EIO, "stopped at step %ld: cannot save its record: %.400s",
                            job->step, c.record_err.msg);
    } else if (!rc) {
        ld_progress_t p;
        ld_trainer_progress(r.t, &p);
        /* rounded up, so a run never has more than HIST_TARGET points and
         * the oldest, the start of the run, is never dropped */
        long stride = (p.steps_total + HIST_TARGET - 1) / HIST_TARGET;
        run_ctx_t c = {.j = j, .job = job, .stride = stride > 1 ? stride : 1,
                       .every = job->spec->train.checkpoint_every, .m = r.m,
                       .ce = jobs_ckpt_eval_new(j, job, r.m)};
        if (atomic_load(&job->cancel) || atomic_load(&j->stopping))
            rc = ld_err_set(&e, LD_ECANCELLED, "stopped before its first step");
        else
            rc = ld_trainer_run(r.t, on_progress, &c, &e);
        jobs_ckpt_eval_free(c.ce);
        if (c.record_failed)
            rc = ld_err_set(&e, LD_EIO, "stopped at step %ld: cannot save its record: %.400s",
                            job->step, c.record_err.msg);
    }
    ld_model_t *m = r.m;
    r.m = NULL;
    run_release(j, &r); /* the data set and optimiser go before the model is saved */
    if (!rc)
        rc = run_publish(j, job, m, &e);
    ld_model_free(m);

    ld_job_state_t s = rc == LD_OK ? LD_JOB_SUCCEEDED
                       : rc != LD_ECANCELLED ? LD_JOB_FAILED
                       : atomic_load(&job->cancel) ? LD_JOB_CANCELLED
                                                   : LD_JOB_INTERRUPTED;
    struct stat st;
    int have_state = stat(state_path, &st) == 0;
    pthread_mutex_lock(&j->lock);
    if (s == LD_JOB_SUCCEEDED) {
        snprintf(job->model_file, sizeof job->model_file, "%s.safetensors", job->model);
        job->step = job->steps_total;
        job->eta_s = 0;
    } else if (s == LD_JOB_FAILED) {
        jobs_copy_str(job->error, sizeof job->error, e.msg[0] ? e.msg : "failed");
    } else if (s == LD_JOB_CANCELLED) {
        snprintf(job->note, sizeof job->note, "cancelled at step %ld%s", job->step,
                 have_state ? "; its checkpoint is kept" : "");
    } else {
        snprintf(job->note, sizeof job->note,
                 "interrupted at step %ld by shutdown; it resumes at the next start", job->step);
    }
    jobs_set_state_locked(j, job, s);
    long step = job->step, total = job->steps_total;
    pthread_mutex_unlock(&j->lock);
    int recorded = jobs_persist(j, job, NULL) == LD_OK;
    if (s == LD_JOB_SUCCEEDED && have_state && recorded)
        unlink(state_path); /* only now: the record on disk says succeeded */
    wake_subs(j, job);
    double secs = ld_now() - t0;
    switch (s) {
    case LD_JOB_SUCCEEDED:
        jobs_log(j, LD_LOG_INFO, "job %s succeeded in %.1f s (%ld steps): model %s published",
             job->id, secs, total, job->model);
        break;
    case LD_JOB_FAILED:
        jobs_log(j, LD_LOG_ERROR, "job %s failed after %.1f s: %s", job->id, secs, e.msg);
        break;
    default:
        jobs_log(j, LD_LOG_INFO, "job %s %s at step %ld of %ld", job->id, ld_job_state_name(s), step,
             total);
    }
}

static void *worker_main(void *arg)
{
    ld_jobs_t *j = arg;
    /* Scheduling policy and nice value are per thread on Linux, and the
     * training threads this one starts inherit both.  SCHED_IDLE runs this
     * thread only on a core that no normal thread wants, so a training job
     * does not delay a request (ld_yield_point covers the kernel's lapses);
     * taking it needs no privilege.  If a seccomp
     * filter or the kernel refuses, nice LD_JOBS_NICE is the fallback (HTTP
     * threads then get about nine tenths of a shared core).  A failure of
     * both only costs responsiveness. */
    struct sched_param sp = {.sched_priority = 0};
    if (sched_setscheduler(0, SCHED_IDLE, &sp) != 0) {
        int se = errno;
        if (setpriority(PRIO_PROCESS, (id_t)gettid(), LD_JOBS_NICE) != 0)
            jobs_log(j, LD_LOG_WARN,
                 "jobs: cannot give the worker thread SCHED_IDLE (%s) nor nice %d (%s): "
                 "training competes with serving at equal priority",
                 strerror(se), LD_JOBS_NICE, strerror(errno));
        else
            jobs_log(j, LD_LOG_WARN,
                 "jobs: cannot give the worker thread SCHED_IDLE (%s); it runs at nice %d",
                 strerror(se), LD_JOBS_NICE);
    }
    pthread_mutex_lock(&j->lock);
    for (;;) {
        while (!atomic_load(&j->stopping) && !j->q_head)
            pthread_cond_wait(&j->work_cond, &j->lock);
        if (atomic_load(&j->stopping))
            break;
        job_t *job = dequeue_locked(j);
        job->epochs = job->spec->train.epochs;
        jobs_set_state_locked(j, job, LD_JOB_RUNNING);
        pthread_mutex_unlock(&j->lock);
        jobs_persist(j, job, NULL);
        wake_subs(j, job);
        jobs_log(j, LD_LOG_INFO, "job %s running: %s %s on %s", job->id, job->kind_name,
             job->model, job->data);
        run_job(j, job);
        pthread_mutex_lock(&j->lock);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* Heartbeats: an event for every queued or running job that had none for
 * HEARTBEAT_S, so a stream sends something at least once a second even while
 * a job waits or loads its data. */
static void *ticker_main(void *arg)
{
    ld_jobs_t *j = arg;
    pthread_mutex_lock(&j->lock);
    while (!atomic_load(&j->stopping)) {
        struct timespec ts = deadline_in(TICK_S);
        pthread_cond_timedwait(&j->tick_cond, &j->lock, &ts);
        if (atomic_load(&j->stopping))
            break;
        double now = ld_now();
        int any = 0;
        for (int i = 0; i < j->n_all; i++) {
            job_t *job = j->all[i];
            if ((job->state == LD_JOB_QUEUED || job->state == LD_JOB_RUNNING) &&
                now - job->last_event >= HEARTBEAT_S) {
                jobs_bump_locked(j, job);
                atomic_store(&job->tick_mark, 1);
                any = 1;
            }
        }
        if (!any)
            continue;
        pthread_mutex_unlock(&j->lock);
        pthread_mutex_lock(&j->sub_lock);
        for (ld_jobs_sub_t *s = j->subs; s; s = s->next)
            if (atomic_load(&s->job->tick_mark))
                s->wake(s->user);
        pthread_mutex_unlock(&j->sub_lock);
        pthread_mutex_lock(&j->lock);
        for (int i = 0; i < j->n_all; i++)
            atomic_store(&j->all[i]->tick_mark, 0);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* ---- public API ---- */

void ld_jobs_config_default(ld_jobs_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->worker_threads = 1;
    c->max_queued_jobs = 16;
    c->checkpoint_every = 500;
}

int ld_jobs_new(const ld_jobs_config_t *cfg, ld_jobs_t **out, ld_err_t *err)
{
    if (!cfg || !out || !cfg->state_dir || !cfg->state_dir[0] || !cfg->models_dir ||
        !cfg->models_dir[0])
        return ld_err_set(err, LD_EINVAL, "jobs: state_dir and models_dir are required");
    if (cfg->worker_threads < 1 || cfg->worker_threads > MAX_WORKERS)
        return ld_err_set(err, LD_EINVAL, "jobs: worker_threads %d is outside 1..%d",
                          cfg->worker_threads, MAX_WORKERS);
    if (cfg->max_queued_jobs < 1 || cfg->max_queued_jobs > 100000)
        return ld_err_set(err, LD_EINVAL, "jobs: max_queued_jobs %d is outside 1..100000",
                          cfg->max_queued_jobs);
    if (cfg->checkpoint_every < 0)
        return ld_err_set(err, LD_EINVAL, "jobs: checkpoint_every must be >= 0");
    ld_jobs_t *j = calloc(1, sizeof *j);
    if (!j)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    j->cfg = *cfg;
    j->lock_fd = -1;
    j->next_num = 1;
    atomic_init(&j->stopping, 0);
    atomic_init(&j->steps_total, 0);
    pthread_mutex_init(&j->lock, NULL);
    pthread_mutex_init(&j->sub_lock, NULL);
    pthread_mutex_init(&j->cache_lock, NULL);
    pthread_cond_init(&j->work_cond, NULL);
    pthread_cond_init(&j->cache_cond, NULL);
    init_cond_monotonic(&j->event_cond);
    init_cond_monotonic(&j->tick_cond);
    j->state_dir = strdup(cfg->state_dir);
    j->models_dir = strdup(cfg->models_dir);
    j->data_dir = strdup(cfg->data_dir ? cfg->data_dir : "");
    j->jobs_dir = j->state_dir ? jobs_path_join(j->state_dir, "jobs", NULL) : NULL;
    j->cfg.state_dir = j->state_dir;
    j->cfg.models_dir = j->models_dir;
    j->cfg.data_dir = j->data_dir;
    int rc = !j->state_dir || !j->models_dir || !j->data_dir || !j->jobs_dir
                 ? ld_err_set(err, LD_ENOMEM, "out of memory")
                 : LD_OK;
    if (!rc && !(rc = ld_mkdir_p(j->jobs_dir, err)) && !(rc = ld_mkdir_p(j->models_dir, err)) &&
        !(rc = jobs_lock_state_folder(j, err)))
        rc = jobs_recover(j, err);
    int by_state[LD_JOB_N_STATES] = {0}; /* for the start-up line, before any worker runs */
    for (int i = 0; !rc && i < j->n_all; i++)
        by_state[j->all[i]->state]++;
    for (int i = 0; !rc && i < cfg->worker_threads; i++) {
        if (pthread_create(&j->workers[i], NULL, worker_main, j) != 0)
            rc = ld_err_set(err, LD_ENOMEM, "jobs: cannot start worker thread %d", i);
        else
            j->n_workers++;
    }
    if (!rc) {
        if (pthread_create(&j->ticker, NULL, ticker_main, j) != 0)
            rc = ld_err_set(err, LD_ENOMEM, "jobs: cannot start the event thread");
        else
            j->ticker_started = 1;
    }
    if (rc) {
        ld_jobs_free(j);
        return rc;
    }
    jobs_log(j, LD_LOG_INFO,
         "jobs: %d workers, %d records in %s (%d queued, %d succeeded, %d failed, %d cancelled)",
         j->n_workers, j->n_all, j->jobs_dir, by_state[LD_JOB_QUEUED], by_state[LD_JOB_SUCCEEDED],
         by_state[LD_JOB_FAILED], by_state[LD_JOB_CANCELLED]);
    *out = j;
    return LD_OK;
}

void ld_jobs_shutdown(ld_jobs_t *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    if (j->shutdown_started) {
        pthread_mutex_unlock(&j->lock);
        return;
    }
    j->shutdown_started = 1;
    int was_running = j->n_workers > 0;
    atomic_store(&j->stopping, 1);
    pthread_cond_broadcast(&j->work_cond);
    pthread_cond_broadcast(&j->tick_cond);
    pthread_mutex_unlock(&j->lock);
    for (int i = 0; i < j->n_workers; i++)
        pthread_join(j->workers[i], NULL);
    j->n_workers = 0;
    if (j->ticker_started)
        pthread_join(j->ticker, NULL);
    j->ticker_started = 0;
    /* One last event for every job still open, so each stream ends on it. */
    pthread_mutex_lock(&j->lock);
    j->shut = 1;
    int queued = j->q_len, interrupted = 0;
    for (int i = 0; i < j->n_all; i++) {
        if (!ld_job_state_is_final(j->all[i]->state))
            jobs_bump_locked(j, j->all[i]);
        interrupted += j->all[i]->state == LD_JOB_INTERRUPTED;
    }
    pthread_cond_broadcast(&j->event_cond);
    pthread_mutex_unlock(&j->lock);
    wake_subs(j, NULL);
    if (was_running)
        jobs_log(j, LD_LOG_INFO, "jobs: stopped (%d interrupted, %d queued%s)", interrupted, queued,
             interrupted + queued ? "; they run at the next start" : "");
}

void ld_jobs_free(ld_jobs_t *j)
{
    if (!j)
        return;
    ld_jobs_shutdown(j);
    while (j->subs) {
        ld_jobs_sub_t *s = j->subs;
        j->subs = s->next;
        free(s);
    }
    while (j->cache) { /* empty unless a worker failed to start */
        cache_entry_t *e = j->cache;
        j->cache = e->next;
        ld_data_free(e->d);
        free(e);
    }
    for (int i = 0; i < j->n_all; i++)
        jobs_job_free(j->all[i]);
    free(j->all);
    if (j->lock_fd >= 0)
        close(j->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&j->lock);
    pthread_mutex_destroy(&j->sub_lock);
    pthread_mutex_destroy(&j->cache_lock);
    pthread_cond_destroy(&j->work_cond);
    pthread_cond_destroy(&j->cache_cond);
    pthread_cond_destroy(&j->event_cond);
    pthread_cond_destroy(&j->tick_cond);
    free(j->state_dir);
    free(j->models_dir);
    free(j->data_dir);
    free(j->jobs_dir);
    free(j);
}

/* Under lock: seconds until a worker is likely free (the nearest ETA). */
static int retry_after_locked(const ld_jobs_t *j)
{
    double best = -1;
    for (int i = 0; i < j->n_all; i++) {
        const job_t *job = j->all[i];
        if (job->state == LD_JOB_RUNNING && job->eta_s > 0 && (best < 0 || job->eta_s < best))
            best = job->eta_s;
    }
    if (best < 0)
        return 10;
    return best < 1 ? 1 : best > 3600 ? 3600 : (int)ceil(best);
}

/* Queue job (its spec filled; freed here on failure): a place in the queue
 * and an id, its folder, the file name (extra, extra_len bytes) in it when
 * given, its record, then the queue. */
int jobs_submit_job(ld_jobs_t *j, job_t *job, const char *name, const void *extra,
                    size_t extra_len, char id[LD_JOB_ID_MAX], int *retry_after_s,
                    ld_err_t *err)
{
    int rc = LD_OK;
    if (!(job->spec_json = ld_jobspec_to_json(job->spec))) {
        jobs_job_free(job);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    jobs_take_names(job);

    pthread_mutex_lock(&j->lock);
    if (atomic_load(&j->stopping)) {
        rc = ld_err_set(err, LD_EBUSY, "the job engine is shutting down");
        if (retry_after_s)
            *retry_after_s = 10;
    } else if (j->q_len + j->reserved >= j->cfg.max_queued_jobs) {
        int wait = retry_after_locked(j);
        rc = ld_err_set(err, LD_EBUSY, "the job queue is full (%d queued, max_queued_jobs %d); "
                                       "retry in %d s",
                        j->q_len + j->reserved, j->cfg.max_queued_jobs, wait);
        if (retry_after_s)
            *retry_after_s = wait;
    } else {
        job->num = j->next_num++;
        j->reserved++;
    }
    pthread_mutex_unlock(&j->lock);
    if (rc) {
        jobs_job_free(job);
        return rc;
    }

    const char *rname = ld_replica_name(j->cfg.replica);
    snprintf(job->id, sizeof job->id, "j-%s%s%06ld", rname, *rname ? "-" : "", job->num);
    ld_utc_iso8601(job->created, sizeof job->created);
    job->state = LD_JOB_QUEUED;
    int epochs = job->epochs = job->spec->train.epochs;
    int inv_images = job->spec->invert ? job->spec->inv.images : -1; /* job may run once queued */
    char *dir = jobs_path_join(j->jobs_dir, job->id, NULL);
    char *file = dir && name ? jobs_path_join(dir, name, NULL) : NULL;
    if (!dir || (name && !file))
        rc = ld_err_set(err, LD_ENOMEM, "out of memory");
    else if (!(rc = ld_mkdir_p(dir, err)) && !(name && (rc = ld_write_atomic(file, extra, extra_len, err))))
        rc = jobs_persist(j, job, err);

    pthread_mutex_lock(&j->lock);
    j->reserved--;
    if (!rc && jobs_insert_locked(j, job))
        rc = ld_err_set(err, LD_ENOMEM, "out of memory");
    if (!rc)
        jobs_enqueue_locked(j, job);
    pthread_mutex_unlock(&j->lock);
    if (rc) {
        if (dir) { /* nothing is queued: leave no record for the next start either */
            char *rec = jobs_path_join(dir, "job.json", NULL);
            if (rec)
                unlink(rec);
            free(rec);
            if (file)
                unlink(file);
            rmdir(dir);
        }
        free(file);
        free(dir);
        jobs_job_free(job);
        return rc;
    }
    free(file);
    free(dir);
    memcpy(id, job->id, LD_JOB_ID_MAX);
    if (inv_images >= 0)
        jobs_log(j, LD_LOG_INFO, "job %s queued: invert %d images through %s", job->id,
                 inv_images, job->model);
    else
        jobs_log(j, LD_LOG_INFO, "job %s queued: %s %s on %s, %d epochs", job->id,
                 job->kind_name, job->model, job->data, epochs);
    return LD_OK;
}

int ld_jobs_submit(ld_jobs_t *j, const char *body, size_t len, char id[LD_JOB_ID_MAX],
                   int *retry_after_s, ld_err_t *err)
{
    if (retry_after_s)
        *retry_after_s = 0;
    if (!j || !id)
        return ld_err_set(err, LD_EINVAL, "ld_jobs_submit: jobs and id are required");
    id[0] = 0;
    job_t *job = jobs_job_alloc();
    if (!job)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    char data_path[PATH_MAX];
    int rc = ld_jobspec_parse(body, len, &j->cfg.caps, j->cfg.checkpoint_every, job->spec, err);
    if (!rc && job->spec->invert)
        rc = ld_err_set(err, LD_EINVAL, "kind: \"invert\" jobs come from POST "
                                        "/v1/models/{name}/invert with more images than it "
                                        "inverts at once");
    if (!rc && job->spec->evaluate)
        rc = ld_err_set(err, LD_EINVAL, "kind: \"evaluate\" jobs come from POST "
                                        "/v1/models/{name}/evaluate");
    if (!rc)
        rc = ld_jobspec_resolve_data(j->data_dir, job->spec->data, data_path, sizeof data_path, err);
    const ld_train_opts_t *o = &job->spec->train;
    if (!rc && (o->class_fraction.n > 0 || o->balance != LD_BALANCE_NONE) &&
        !ld_data_has_labels(data_path))
        rc = ld_err_set(err, LD_EINVAL, "train: data \"%s\" has no labels: class_fraction and "
                        "balance need them", job->spec->data);
    if (rc) {
        jobs_job_free(job);
        return rc;
    }
    return jobs_submit_job(j, job, NULL, NULL, 0, id, retry_after_s, err);
}

int ld_jobs_submit_invert(ld_jobs_t *j, const char *model, const char *file,
                          const ld_invert_opts_t *o, int n, int x_dim, const float *x,
                          char id[LD_JOB_ID_MAX], int *retry_after_s, ld_err_t *err)
{
    job_t *job = jobs_oneshot_new(model, id, retry_after_s);
    if (!job)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    ld_jobspec_t *s = job->spec;
    s->invert = 1;
    s->kind = LD_KIND_GAN;
    jobs_copy_str(s->inv.file, sizeof s->inv.file, file);
    s->inv.images = n;
    s->inv.opts = *o;
    uint8_t *npy = NULL;
    size_t npy_len = 0;
    int64_t shape[2] = {n, x_dim};
    int rc = ld_npy_encode(x, 2, shape, &npy, &npy_len, err);
    if (rc) {
        jobs_job_free(job);
        return rc;
    }
    rc = jobs_submit_job(j, job, "images.npy", npy, npy_len, id, retry_after_s, err);
    free(npy);
    return rc;
}

int ld_jobs_invert_result(ld_jobs_t *j, const char *id, ld_job_state_t *state, char **json,
                          size_t *len, ld_err_t *err)
{
    *json = NULL;
    *len = 0;
    char path[PATH_MAX];
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id);
    int invert = job && (strcmp(job->kind_name, "invert") == 0 ||
                         strcmp(job->kind_name, "evaluate") == 0);
    if (invert) {
        *state = job->state;
        if (job->state == LD_JOB_FAILED)
            ld_err_set(err, LD_EIO, "%s", job->error);
    }
    int bad_path = invert && jobs_job_path(j, job, "result.json", path, sizeof path);
    pthread_mutex_unlock(&j->lock);
    if (!invert)
        return ld_err_set(err, LD_ENOTFOUND, "no inversion or evaluation job '%.40s'",
                          id ? id : "");
    if (*state != LD_JOB_SUCCEEDED)
        return LD_OK;
    if (bad_path)
        return ld_err_set(err, LD_EIO, "job %s: path too long", id);
    uint8_t *data;
    int rc = ld_read_file(path, (size_t)1 << 30, &data, len, err);
    if (!rc)
        *json = (char *)data;
    return rc;
}

int ld_jobs_warning_json(ld_jobs_t *j, const char *id, int *next, char **json, ld_err_t *err)
{
    *json = NULL;
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id);
    warn_t w = {0};
    int have = job && *next >= 0 && *next < job->warns_n;
    if (have)
        w = job->warns[(*next)++];
    pthread_mutex_unlock(&j->lock);
    if (!job)
        return ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
    if (!have)
        return LD_OK;
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"id\":");
    ld_buf_json_str(&b, id);
    char msg[96];
    jobs_warn_message(&w, msg, sizeof msg);
    ld_buf_printf(&b, ",\"step\":%ld,\"message\":", w.step);
    ld_buf_json_str(&b, msg);
    ld_buf_puts(&b, ",\"class\":");
    ld_buf_json_str(&b, w.cls);
    ld_buf_printf(&b, ",\"share\":%.6g}", w.share);
    size_t len;
    *json = ld_buf_failed(&b) ? NULL : ld_buf_steal(&b, &len);
    ld_buf_free(&b);
    return *json ? LD_OK : ld_err_set(err, LD_ENOMEM, "out of memory");
}

int ld_jobs_cancel(ld_jobs_t *j, const char *id, ld_job_state_t *state, ld_err_t *err)
{
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id);
    if (!job) {
        pthread_mutex_unlock(&j->lock);
        return ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
    }
    int changed = 0, asked = 0;
    if (job->state == LD_JOB_QUEUED || job->state == LD_JOB_INTERRUPTED) {
        unqueue_locked(j, job);
        atomic_store(&job->cancel, 1);
        snprintf(job->note, sizeof job->note, "cancelled before it %s",
                 job->state == LD_JOB_QUEUED ? "started" : "could resume");
        jobs_set_state_locked(j, job, LD_JOB_CANCELLED);
        changed = 1;
    } else if (job->state == LD_JOB_RUNNING && !atomic_load(&job->cancel)) {
        atomic_store(&job->cancel, 1);
        jobs_bump_locked(j, job);
        asked = 1;
    }
    if (state)
        *state = job->state;
    pthread_mutex_unlock(&j->lock);
    if (changed) {
        jobs_persist(j, job, NULL);
        jobs_log(j, LD_LOG_INFO, "job %s cancelled before it ran", job->id);
    } else if (asked) {
        jobs_log(j, LD_LOG_INFO, "job %s: cancel requested; stopping at its next step", job->id);
    }
    if (changed || asked)
        wake_subs(j, job);
    return LD_OK;
}

int ld_jobs_info(ld_jobs_t *j, const char *id, ld_job_info_t *out, ld_err_t *err)
{
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id);
    if (job) {
        memset(out, 0, sizeof *out);
        out->state = job->state;
        out->cancel_requested = atomic_load(&job->cancel);
        out->step = job->step;
        out->steps_total = job->steps_total;
        out->resumed_from_step = job->resumed_from_step;
        out->progress = job->state == LD_JOB_SUCCEEDED ? 1
                        : job->steps_total > 0 ? (double)job->step / (double)job->steps_total
                                               : 0;
        out->seq = job->seq;
        jobs_copy_str(out->error, sizeof out->error, job->error);
        jobs_copy_str(out->model, sizeof out->model, job->model);
    }
    pthread_mutex_unlock(&j->lock);
    return job ? LD_OK : ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
}

int ld_jobs_get_json(ld_jobs_t *j, const char *id, char **json, ld_err_t *err)
{
    *json = NULL;
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id); /* stays valid until ld_jobs_free */
    pthread_mutex_unlock(&j->lock);
    if (!job)
        return ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
    *json = jobs_job_json_full(j, job, NULL, NULL);
    return *json ? LD_OK : ld_err_set(err, LD_ENOMEM, "out of memory");
}

int ld_jobs_list_json(ld_jobs_t *j, const ld_jobs_list_t *q, char **json, ld_err_t *err)
{
    *json = NULL;
    static const ld_jobs_list_t all = {.state = -1};
    if (!q)
        q = &all;
    long before = LONG_MAX;
    if (q->cursor && q->cursor[0] && (before = jobs_id_number(q->cursor)) < 0)
        return ld_err_set(err, LD_EINVAL, "cursor: \"%.40s\" is not a job id", q->cursor);
    if (q->state >= LD_JOB_N_STATES || q->limit < 0)
        return ld_err_set(err, LD_EINVAL, "ld_jobs_list_json: bad state or limit");
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "jobs") : NULL;
    int ok = arr != NULL, n = 0;
    const job_t *more = NULL; /* the last job listed, when another would follow */
    pthread_mutex_lock(&j->lock);
    for (int i = j->n_all - 1; ok && i >= 0; i--) {
        const job_t *job = j->all[i];
        if (job->purged || job->num >= before || (q->state >= 0 && (int)job->state != q->state))
            continue;
        if (q->limit > 0 && n == q->limit) {
            more = j->all[i];
            break;
        }
        cJSON *o = jobs_job_to_cjson(job, 0, NULL);
        ok = o && cJSON_AddItemToArray(arr, o);
        if (!ok)
            cJSON_Delete(o);
        n++;
    }
    if (more) { /* the cursor is the last id listed: the next page starts below it */
        const cJSON *last = cJSON_GetArrayItem(arr, n - 1);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(last, "id");
        ok = ok && cJSON_AddStringToObject(root, "next_cursor", id->valuestring);
    } else {
        ok = ok && cJSON_AddNullToObject(root, "next_cursor");
    }
    pthread_mutex_unlock(&j->lock);
    if (ok)
        *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return *json ? LD_OK : ld_err_set(err, LD_ENOMEM, "out of memory");
}

int ld_jobs_purge(ld_jobs_t *j, const char *id, ld_err_t *err)
{
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id);
    ld_job_state_t s = job ? job->state : LD_JOB_QUEUED;
    if (job && ld_job_state_is_final(s))
        job->purged = 1; /* the pointer stays valid for streams until ld_jobs_free */
    pthread_mutex_unlock(&j->lock);
    if (!job)
        return ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
    if (!ld_job_state_is_final(s))
        return ld_err_set(err, LD_EUNSUPPORTED,
                          "job %s is %s: only a finished job's record can be removed (cancel it "
                          "first)",
                          job->id, ld_job_state_name(s));
    /* persist_lock: a record write of this job still in progress ends first */
    pthread_mutex_lock(&job->persist_lock);
    int rc = jobs_remove_folder(j, job, err);
    pthread_mutex_unlock(&job->persist_lock);
    if (rc) {
        pthread_mutex_lock(&j->lock);
        job->purged = 0;
        pthread_mutex_unlock(&j->lock);
        return rc;
    }
    wake_subs(j, job); /* their streams end */
    jobs_log(j, LD_LOG_INFO, "job %s: record and checkpoint removed", job->id);
    return LD_OK;
}

int ld_jobs_subscribe(ld_jobs_t *j, const char *id, void (*wake)(void *user), void *user,
                      ld_jobs_sub_t **out, ld_err_t *err)
{
    *out = NULL;
    if (!wake)
        return ld_err_set(err, LD_EINVAL, "ld_jobs_subscribe: wake is required");
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id); /* jobs live until ld_jobs_free: the pointer stays good */
    pthread_mutex_unlock(&j->lock);
    if (!job)
        return ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
    ld_jobs_sub_t *s = calloc(1, sizeof *s);
    if (!s)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    s->job = job;
    s->wake = wake;
    s->user = user;
    pthread_mutex_lock(&j->sub_lock);
    s->next = j->subs;
    j->subs = s;
    pthread_mutex_unlock(&j->sub_lock);
    *out = s;
    return LD_OK;
}

void ld_jobs_unsubscribe(ld_jobs_t *j, ld_jobs_sub_t *s)
{
    if (!j || !s)
        return;
    pthread_mutex_lock(&j->sub_lock);
    ld_jobs_sub_t **pp = &j->subs;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    pthread_mutex_unlock(&j->sub_lock);
    free(s);
}

/* Under lock: nothing newer will come for job. */
static int final_locked(const ld_jobs_t *j, const job_t *job)
{
    return ld_job_state_is_final(job->state) || job->state == LD_JOB_INTERRUPTED || j->shut;
}

int ld_jobs_event_json(ld_jobs_t *j, const char *id, uint64_t *seq, char **json, int *final,
                       ld_err_t *err)
{
    *json = NULL;
    *final = 0;
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id); /* stays valid until ld_jobs_free */
    int newer = job && job->seq > *seq;
    if (job)
        *final = final_locked(j, job);
    pthread_mutex_unlock(&j->lock);
    if (!job)
        return ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
    uint64_t shown;
    if (newer && !(*json = jobs_job_json_full(j, job, &shown, NULL)))
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    if (newer)
        *seq = shown;
    return LD_OK;
}

int ld_jobs_wait(ld_jobs_t *j, const char *id, uint64_t after_seq, int timeout_ms, uint64_t *seq,
                 ld_err_t *err)
{
    struct timespec ts = deadline_in(timeout_ms > 0 ? timeout_ms / 1000.0 : 0);
    pthread_mutex_lock(&j->lock);
    job_t *job = find_locked(j, id);
    while (job && job->seq <= after_seq && !final_locked(j, job))
        if (pthread_cond_timedwait(&j->event_cond, &j->lock, &ts) == ETIMEDOUT)
            break;
    if (job && seq)
        *seq = job->seq;
    pthread_mutex_unlock(&j->lock);
    return job ? LD_OK : ld_err_set(err, LD_ENOTFOUND, "no job %.40s", id ? id : "(null)");
}

void ld_jobs_stats(ld_jobs_t *j, ld_jobs_stats_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&j->lock);
    for (int i = 0; i < j->n_all; i++) {
        const job_t *job = j->all[i];
        if (job->purged)
            continue;
        out->by_state[job->state]++;
        if (job->state == LD_JOB_RUNNING && isfinite(job->samples_per_s))
            out->samples_per_s += job->samples_per_s;
    }
    out->queue_length = j->q_len;
    pthread_mutex_unlock(&j->lock);
    out->steps_total = atomic_load(&j->steps_total);
    out->yield_s = 1e-9 * (double)atomic_load(&j->yield_ns);
}

char *ld_jobs_metrics_text(ld_jobs_t *j)
{
    ld_buf_t b;
    ld_buf_init(&b);
    ld_jobs_stats_t st;
    ld_jobs_stats(j, &st);
    ld_buf_printf(&b, "# HELP latentd_jobs Training jobs known to the daemon, by state.\n"
                  "# TYPE latentd_jobs gauge\n");
    for (int s = 0; s < LD_JOB_N_STATES; s++)
        ld_buf_printf(&b, "latentd_jobs{state=\"%s\"} %d\n", state_names[s], st.by_state[s]);
    ld_buf_printf(&b, "# HELP latentd_jobs_queue_length Jobs waiting for a worker.\n"
                  "# TYPE latentd_jobs_queue_length gauge\n"
                  "latentd_jobs_queue_length %d\n",
              st.queue_length);
    ld_buf_printf(&b, "# HELP latentd_job_samples_per_second Training throughput of each running job.\n"
                  "# TYPE latentd_job_samples_per_second gauge\n");
    pthread_mutex_lock(&j->lock);
    for (int i = 0; i < j->n_all; i++) {
        const job_t *job = j->all[i];
        if (job->state == LD_JOB_RUNNING) /* ids and model names need no escaping */
            ld_buf_printf(&b, "latentd_job_samples_per_second{job=\"%s\",model=\"%s\"} %.6g\n",
                      job->id, job->model,
                      isfinite(job->samples_per_s) ? job->samples_per_s : 0.0);
    }
    pthread_mutex_unlock(&j->lock);
    ld_buf_printf(&b, "# HELP latentd_training_steps_total Optimiser steps run by training jobs.\n"
                  "# TYPE latentd_training_steps_total counter\n"
                  "latentd_training_steps_total %lld\n",
              st.steps_total);
    ld_buf_printf(&b, "# HELP latentd_training_yield_seconds_total Time training workers paused "
                  "between steps because serving was busy.\n"
                  "# TYPE latentd_training_yield_seconds_total counter\n"
                  "latentd_training_yield_seconds_total %.6f\n",
              st.yield_s);
    if (ld_buf_failed(&b)) {
        ld_buf_free(&b);
        return NULL;
    }
    return ld_buf_steal(&b, NULL);
}

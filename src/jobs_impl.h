/* jobs_impl.h — internals shared by the jobs engine (jobs.c: queue, workers,
 * events, metrics) and its store (jobs_store.c: records, recovery).  Not a
 * public header: the contract is jobs.h, including the lock order. */
#ifndef LATENTD_JOBS_IMPL_H
#define LATENTD_JOBS_IMPL_H

#include "latentd/buf.h"
#include "latentd/data.h"
#include "latentd/jobs.h"
#include "latentd/train.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define HIST_CAP 256             /* loss_history points kept per job (at most) */
#define HIST_TARGET 200          /* points aimed at over a whole run */
#define NOTIFY_INTERVAL_S 0.25   /* progress events at most this often */
#define HEARTBEAT_S 0.75         /* quiet this long while queued/running: a heartbeat event */
#define TICK_S 0.25              /* how often the ticker looks (so events come <= 1 s apart) */
#define RECORD_MAX (8u << 20)    /* job.json larger than this is refused */
#define MAX_WORKERS 64


typedef struct {
    long step;
    double v[LD_MAX_LOSSES];
} hist_point_t;

/* One evaluation at a checkpoint (jobs.h eval_history); NAN = not measured. */
typedef struct {
    long step;
    double fid, min_share, precision, recall, nelbo;
    char min_class[24];
} eval_point_t;
#define EVAL_HIST_CAP 128        /* points kept (the oldest go) */

/* A mode-collapse warning: class cls at share of the samples at step. */
typedef struct {
    long step;
    double share;
    char cls[24];
} warn_t;
#define WARN_CAP 64              /* warnings kept (later ones are dropped) */

typedef struct job {
    struct job *next_queued;     /* the queue (FIFO), under jobs->lock */
    long num;                    /* the number in the id */
    char id[LD_JOB_ID_MAX];
    /* A final record whose job.json is written keeps neither its spec nor its
     * loss_history in memory (jobs_shrink_locked): a finished job needs only
     * its names and spec_json, and its history is read back from job.json
     * when asked for (hist_saved). */
    ld_jobspec_t *spec;          /* owned; NULL once shrunk */
    ld_kind_t kind;              /* the spec's, kept when it goes */
    const char *kind_name;       /* ld_jobspec_kind_name of the spec (static) */
    char model[LD_JOBSPEC_NAME_MAX], data[LD_JOBSPEC_NAME_MAX];
    char *spec_json;             /* normal form, owned */
    /* Everything below is under jobs->lock, except the atomics. */
    ld_job_state_t state;
    atomic_int cancel;           /* read by the progress callback without the lock */
    atomic_int tick_mark;        /* set by the ticker between its two passes */
    int was_interrupted;         /* recovered from running/interrupted */
    int purged;                  /* removed by ld_jobs_purge: found by no query */
    int epoch, epochs;
    long step, steps_total;
    double samples_per_s, eta_s;
    double loss[LD_MAX_LOSSES];  /* latest running means */
    hist_point_t *hist;          /* oldest first, malloc'd, grown to at most HIST_CAP */
    int hist_n, hist_cap;
    int hist_saved;              /* shrunk: the points are in job.json only */
    char created[32], started[32], finished[32];
    char error[512];
    char note[256];
    char model_file[LD_JOBSPEC_NAME_MAX + 16];
    long resumed_from_step;      /* -1 = never */
    uint64_t seq;
    double last_event;           /* ld_now() of the last seq bump */
    eval_point_t *evals;         /* eval_history, oldest first, grown to at most EVAL_HIST_CAP;
                                    freed when shrunk (then in job.json only) */
    int evals_n, evals_cap;
    warn_t *warns;               /* grown to at most WARN_CAP; kept when shrunk (streams) */
    int warns_n, warns_cap;
    pthread_mutex_t persist_lock; /* orders record writes; taken before jobs->lock */
} job_t;

struct ld_jobs_sub {
    struct ld_jobs_sub *next;
    job_t *job;
    void (*wake)(void *);
    void *user;
};

/* A data set shared by the jobs training on the same (path, limit). */
typedef struct cache_entry {
    struct cache_entry *next;
    char path[PATH_MAX];
    int limit;
    int refs;
    int loading;
    int rc;
    char err[512];
    ld_dataset_t *d;
} cache_entry_t;

struct ld_jobs {
    ld_jobs_config_t cfg;        /* strings point at the copies below */
    char *state_dir, *models_dir, *data_dir, *jobs_dir;
    int lock_fd;

    pthread_mutex_t lock;
    pthread_cond_t work_cond;    /* workers: queue not empty, or stopping */
    pthread_cond_t event_cond;   /* ld_jobs_wait: any seq bump (CLOCK_MONOTONIC) */
    pthread_cond_t tick_cond;    /* the ticker's sleep (CLOCK_MONOTONIC) */
    job_t **all;                 /* every job, by num ascending */
    int n_all, cap_all;
    job_t *q_head, *q_tail;
    int q_len, reserved;         /* reserved: submits between the check and the enqueue */
    long next_num;
    uint64_t seq_base;           /* this start's generation << 32 (see jobs_recover) */
    atomic_int stopping;         /* read by progress callbacks without the lock */
    int shut, shutdown_started;

    pthread_t workers[MAX_WORKERS];
    int n_workers;
    pthread_t ticker;
    int ticker_started;
    atomic_llong steps_total;
    atomic_llong yield_ns;       /* time workers spent paused while busy() */

    pthread_mutex_t sub_lock;
    ld_jobs_sub_t *subs;

    pthread_mutex_t cache_lock;
    pthread_cond_t cache_cond;
    cache_entry_t *cache;
};

/* ---- jobs.c ---- */
void jobs_log(ld_jobs_t *j, ld_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void jobs_copy_str(char *dst, size_t len, const char *src);
char *jobs_path_join(const char *a, const char *b, const char *c);
int jobs_job_path(const ld_jobs_t *j, const job_t *job, const char *name, char *dst, size_t len);
job_t *jobs_job_alloc(void);
void jobs_job_free(job_t *job);
int jobs_insert_locked(ld_jobs_t *j, job_t *job);
void jobs_enqueue_locked(ld_jobs_t *j, job_t *job);
void jobs_bump_locked(ld_jobs_t *j, job_t *job);
void jobs_set_state_locked(ld_jobs_t *j, job_t *job, ld_job_state_t s);
void jobs_hist_push_locked(job_t *job, long step, const double *v, int n);
/* Under lock: append an eval_history point (the oldest goes when full) or a
 * warning (dropped when full); lost, not fatal, when out of memory. */
void jobs_eval_push_locked(job_t *job, const eval_point_t *p);
void jobs_warn_push_locked(job_t *job, const warn_t *w);
/* Take kind, model and data from job->spec. */
void jobs_take_names(job_t *job);
/* Under lock, for a final job whose job.json holds its final state: free
 * its spec and loss_history (see job_t). */
void jobs_shrink_locked(job_t *job);
/* Record and queue job (its spec set), writing extra (extra_len bytes) into
 * its folder as name first when name is not NULL; takes job (freed on
 * error).  Errors as ld_jobs_submit. */
int jobs_submit_job(ld_jobs_t *j, job_t *job, const char *name, const void *extra,
                    size_t extra_len, char id[LD_JOB_ID_MAX], int *retry_after_s, ld_err_t *err);
/* Jobs that run as one call on a worker (inversion, evaluation): a new job
 * for model (id and *retry_after_s cleared; NULL when out of memory); progress
 * step of total (an event); whether a cancel or shutdown asks it to stop;
 * and its end: rc LD_OK: result (freed here) written atomically to path,
 * then succeeded (failed if it cannot be); LD_ECANCELLED cancelled or interrupted
 * (by shutdown: it runs again at the next start), else failed with e's
 * message; the record written, subscribers woken, one log line (t0: ld_now()
 * at its start). */
job_t *jobs_oneshot_new(const char *model, char id[LD_JOB_ID_MAX], int *retry_after_s);
void jobs_oneshot_progress(ld_jobs_t *j, job_t *job, long step, long total);
int jobs_oneshot_stopped(ld_jobs_t *j, job_t *job);
void jobs_oneshot_end(ld_jobs_t *j, job_t *job, int rc, ld_err_t *e, double t0,
                      const char *path, ld_buf_t *result);

/* Wake job's subscribers (after a seq bump; no lock held). */
void jobs_wake_subs(ld_jobs_t *j, const job_t *job);

/* ---- jobs_eval.c ---- */
/* Run evaluation job (spec.evaluate) on the calling worker (jobs.h). */
void jobs_run_evaluate(ld_jobs_t *j, job_t *job);
/* Evaluation at each checkpoint of a training job (spec.eval_n > 0):
 * jobs_ckpt_eval_new returns NULL when it is off; what it needs (the test
 * images, the classifier of a GAN) is loaded at the first run, once; when
 * that fails (logged) training goes on without it.  run measures m
 * (the model being trained, between two steps) and adds a point to
 * job->evals, a warning to job->warns for a class under 1% of the samples,
 * and bumps the job's seq.  While evaluation has taken more than a tenth of
 * the run's time, and while serving is busy (the config's busy callback), it
 * skips checkpoints (the last step, last = 1, always runs).  Worker thread only; no lock held. */
typedef struct jobs_ckpt_eval jobs_ckpt_eval_t;
jobs_ckpt_eval_t *jobs_ckpt_eval_new(ld_jobs_t *j, job_t *job, const ld_model_t *m);
void jobs_ckpt_eval_run(ld_jobs_t *j, job_t *job, jobs_ckpt_eval_t *ce, const ld_model_t *m,
                        long step, int last);
void jobs_ckpt_eval_free(jobs_ckpt_eval_t *ce);

/* ---- jobs_mpi.c ---- */
/* Run job (spec.ranks > 1) as MPI ranks (jobs.h, "MPI jobs"), calling cb with
 * every progress line of rank 0, as ld_trainer_run would; on success *out is
 * the trained model (caller frees).  LD_ECANCELLED when a cancel or shutdown
 * stopped it; another error with the ranks' last message when they failed. */
int jobs_mpi_run(ld_jobs_t *j, job_t *job, const char *state_path, ld_progress_fn cb, void *user,
                 ld_model_t **out, ld_err_t *err);

/* ---- jobs_store.c ---- */
int jobs_state_parse(const char *s, ld_job_state_t *out);
/* Under lock.  history: with loss_history and eval_history, from memory,
 * or from saved_rec (job.json, parsed) for a shrunk job. */
cJSON *jobs_job_to_cjson(const job_t *job, int history, const cJSON *saved_rec);
/* Takes j->lock: job's whole JSON (with loss_history, read back from
 * job.json for a shrunk job, outside the lock), malloc'd; NULL on ENOMEM.
 * *seq and *state (either may be NULL): what the text shows. */
char *jobs_job_json_full(ld_jobs_t *j, job_t *job, uint64_t *seq, ld_job_state_t *state);
int jobs_persist(ld_jobs_t *j, job_t *job, ld_err_t *err);
int jobs_recover(ld_jobs_t *j, ld_err_t *err);
int jobs_lock_state_folder(ld_jobs_t *j, ld_err_t *err);
/* "j-000123" -> 123; -1 when name is not a job id. */
long jobs_id_number(const char *name);
/* "mode collapse: sandal at 0.4%" for w into buf. */
void jobs_warn_message(const warn_t *w, char *buf, size_t len);
/* Remove job's folder (a final job, already marked purged). */
int jobs_remove_folder(ld_jobs_t *j, const job_t *job, ld_err_t *err);

#endif

/* jobs.h — background training jobs: a bounded queue, a pool of worker
 * threads, persistent job records, progress events, cancel and resume.
 *
 * The HTTP layer parses nothing itself: it hands the POST body to
 * ld_jobs_submit and returns the JSON strings made here.  Training uses the one
 * trainer of train.h (the same code as `latentd train`).
 *
 * Life of a job
 *   queued -> running -> succeeded | failed | cancelled
 *   running -> interrupted  (engine shut down while it ran: state saved; the
 *                            next ld_jobs_new queues it again and it resumes)
 * A running job: loads its data set (shared between jobs asking for the same
 * data set and limit, freed when the last one ends), builds the model with
 * ld_model_new(arch, seed) (image shape taken from the data set), and runs
 * ld_trainer_run with state_path = STATE/jobs/{id}/state.safetensors and the
 * spec's checkpoint_every.  On success the model is written atomically to
 * MODELS/{model}.safetensors (ld_model_save; its record gains "job": id), the
 * publish callback is called with that name and path, the record becomes
 * succeeded and only then is state.safetensors removed.  If publish fails the
 * job is failed (the file stays in MODELS).  Two jobs with the same model name
 * both publish; the last to finish wins.
 *
 * Records on disk: STATE/jobs/{id}/job.json, written with ld_write_atomic on
 * every state change and at every checkpoint, so a crash leaves the previous
 * or the new record, never a torn one.  Ids are "j-000001", "j-000002"... one
 * past the largest found at start (or removed by ld_jobs_purge: kept in
 * STATE/jobs/last_purged), so they stay unique across restarts.  Event
 * sequence numbers (seq, the SSE id) keep growing across restarts: a job
 * that goes on after one continues from the start's generation
 * (STATE/jobs/generation) << 32.  One engine per state folder: an flock on
 * STATE/jobs/.lock refuses a second.
 *
 * Start-up recovery (ld_jobs_new): every STATE/jobs/j-* /job.json is read.
 * succeeded / failed / cancelled are listed as they were.  queued stay queued.
 * running (a crash: kill -9, power loss) and interrupted are queued again; a
 * job with a state.safetensors resumes from it (same spec, same seed stream:
 * resumed_from_step in its record), one without restarts from step 0 (noted
 * in its record), one whose state file does not parse is failed with the
 * reason.  The queue gets all of them in creation order, regardless of
 * max_queued_jobs.  A record that cannot be read is skipped and logged; stale
 * temporary files of interrupted atomic writes are removed.
 *
 * Cancel: a queued job never starts; a running one abandons the step in
 * progress (train.h, nn.h: the rest of its GEMMs return at once), so it
 * becomes cancelled within about a second at any size (data loading is not
 * interrupted).  No state is written then: the job keeps its last periodic
 * checkpoint, if it reached one, until its record is removed (ld_jobs_purge).
 *
 * MPI jobs: a spec with "ranks": K > 1 does not train in the daemon.  The
 * worker thread runs cfg.mpi_launcher -np K [--hostfile cfg.mpi_hostfile]
 * cfg.mpi_binary train --spec ... as a child process in a session of its own
 * (jobs_mpi.c) and feeds rank 0's progress lines to the same callback, so
 * progress, events, history, checkpoints (rank 0 writes the same state
 * file), resume after a restart and publishing work as for other jobs.  A
 * cancel SIGKILLs the child's whole session (no rank is left; no state is
 * written); a shutdown sends SIGUSR1 (the ranks stop together and save
 * their state; the job is interrupted and resumes at the next start); ranks
 * that fail make the job failed with their last message (mpi.log in the
 * job's folder).  The data set and model never load in the daemon.
 *
 * Memory: a spec whose estimate (jobspec.h, ld_jobspec_bytes) is above
 * caps.max_job_bytes is refused at submit, and checked again with the data
 * set's image size before training.
 *
 * Shutdown (ld_jobs_shutdown, also done by ld_jobs_free): no new job starts;
 * running jobs stop at their next step, save their state and are recorded as
 * interrupted; workers are joined; queued jobs stay queued on disk.
 *
 * BLAS: each running job trains on its worker thread, with whatever thread
 * count OpenBLAS was given.  The daemon calls ld_blas_threads(1) once at start
 * (openblas_set_num_threads(1)): single-threaded GEMMs skip OpenBLAS 0.3.21's
 * global level-3 lock, so each job uses one core, jobs run in parallel, and
 * serving keeps the other cores.  worker_threads is the number of cores given
 * to training.
 *
 * CPU priority: each worker thread puts itself under SCHED_IDLE when it
 * starts (sched_setscheduler(0, ...): on Linux the policy is per thread and
 * the training threads it starts inherit it), so a training thread runs only
 * on a core that no HTTP thread wants and sampling latency stays at its idle
 * value; when serving is idle, training takes the whole core.  If SCHED_IDLE
 * is refused, the thread falls back to nice LD_JOBS_NICE.  Training's long
 * loops pass through ld_yield_point (nn.h), which on such a thread hands the
 * core to a serving thread the kernel queued behind it (else that thread
 * could wait for the scheduler's next tick; docs/benchmarks.md has the
 * figure).
 * On top of that, when the configuration gives a busy callback, a worker
 * pauses between steps while it answers nonzero (the daemon: while the
 * requests in flight average at least training_yield_load / 100).  Under
 * SCHED_IDLE alone training still runs in the sub-millisecond gaps of a busy
 * server and each time evicts the served decoder's weights from the core's
 * cache; pausing at step boundaries keeps it off a busy server entirely.
 * The time paused is counted (ld_jobs_stats yield_s).
 *
 * Threads and locks: every public function may be called from any thread.
 * Three kinds of lock, never held in any other order:
 *   job->persist_lock  ->  jobs->lock        (a record write snapshots under
 *                                             lock, writes after it)
 *   jobs->sub_lock     alone                 (subscriber list; wake callbacks
 *                                             run under it)
 *   jobs->cache_lock   alone                 (the data set cache)
 * jobs->lock guards the queue, the list of jobs and every job's fields; it is
 * never held across I/O or training.  Job records live until ld_jobs_free.
 */
#ifndef LATENTD_JOBS_H
#define LATENTD_JOBS_H

#include "latentd/common.h"
#include "latentd/invert.h"
#include "latentd/jobspec.h"
#include "latentd/log.h"

typedef enum {
    LD_JOB_QUEUED = 0,
    LD_JOB_RUNNING,
    LD_JOB_SUCCEEDED,
    LD_JOB_FAILED,
    LD_JOB_CANCELLED,
    LD_JOB_INTERRUPTED, /* stopped by shutdown; queued again by the next ld_jobs_new */
    LD_JOB_N_STATES
} ld_job_state_t;

/* "queued", "running", "succeeded", "failed", "cancelled", "interrupted". */
const char *ld_job_state_name(ld_job_state_t s);
/* 1 for succeeded, failed and cancelled. */
int ld_job_state_is_final(ld_job_state_t s);

#define LD_JOB_ID_MAX 32 /* "j-000001", or "j-NAME-000001" on a named replica (replica.h) */
#define LD_JOBS_NICE 10  /* fallback nice value of the worker threads (serving: 0) */

/* Called on a worker thread after every training step, with no jobs lock
 * held: nonzero while serving is busy, and training should pause (the worker
 * polls every millisecond, and cancel and shutdown still act within one). */
typedef int (*ld_jobs_busy_fn)(void *user);

/* Called on a worker thread, with no jobs lock held, when a job has written
 * MODELS/{name}.safetensors (path): load it and serve it as name, replacing a
 * model of that name atomically.  Return 0, or a negative status with a
 * message in err (the job is then failed with that message).  May be called
 * until ld_jobs_shutdown returns (a job that ends at its last step during
 * shutdown still publishes), so the registry must outlive that call. */
typedef int (*ld_jobs_publish_fn)(void *user, const char *name, const char *path, ld_err_t *err);
/* One line per job state change and per recovery event, from any thread
 * (also inside ld_jobs_new and ld_jobs_shutdown), with no jobs lock held. */
typedef void (*ld_jobs_log_fn)(void *user, ld_log_level_t level, const char *line);

typedef struct {
    const char *state_dir;   /* required; records under state_dir/jobs (created) */
    const char *models_dir;  /* required; where finished models go (created) */
    const char *data_dir;    /* named data sets; NULL or "" = only fashion-mnist */
    int worker_threads;      /* 1..64 jobs training at once (default 1) */
    int max_queued_jobs;     /* queued, not yet running, jobs; 1..100000 (default 16) */
    ld_jobs_caps_t caps;     /* spec caps; 0 = none (see jobspec.h) */
    long checkpoint_every;   /* default steps between checkpoints (500); 0 = only on stop */
    ld_jobs_publish_fn publish; /* may be NULL (the model file is still written) */
    ld_jobs_busy_fn busy;       /* may be NULL (never pause); see "CPU priority" */
    void *busy_user;            /* passed to busy */
    ld_jobs_log_fn log;         /* may be NULL */
    void *user;                 /* passed to publish and log */
    const struct ld_replica *replica; /* borrowed, outlives the engine; NULL = none:
                                         its name goes into new job ids (replica.h) */
    /* jobs with "ranks" > 1 (see "MPI jobs" above) */
    char mpi_launcher[1024];    /* split at spaces; "" = "mpirun" */
    char mpi_hostfile[1024];    /* "" = none */
    char mpi_binary[1024];      /* "" = latentd-mpi beside /proc/self/exe */
} ld_jobs_config_t;

typedef struct ld_jobs ld_jobs_t;

/* Defaults as above; the three folders NULL. */
void ld_jobs_config_default(ld_jobs_config_t *c);

/* Create the engine: lock the state folder, recover the records (see above),
 * start the workers.  The config's strings are copied.  *out owned by the
 * caller (ld_jobs_free).  Errors: LD_EINVAL (config), LD_EIO (folders),
 * LD_EBUSY (another engine holds the state folder), LD_ENOMEM. */
int ld_jobs_new(const ld_jobs_config_t *cfg, ld_jobs_t **out, ld_err_t *err);
/* The replica of the config (NULL if none); for the HTTP layer's redirects. */
const struct ld_replica *ld_jobs_replica(const ld_jobs_t *j);

/* Stop running jobs (recorded interrupted, state saved), join the workers,
 * wake every subscriber (their events are final from now on).  Queries,
 * cancel and unsubscribe keep working; submit returns LD_EBUSY.  Idempotent. */
void ld_jobs_shutdown(ld_jobs_t *j);

/* ld_jobs_shutdown, then free everything.  Every subscription must have been
 * ended with ld_jobs_unsubscribe first (the HTTP layer resumes and closes its
 * streams after ld_jobs_shutdown, before this).  Accepts NULL. */
void ld_jobs_free(ld_jobs_t *j);

/* Validate body[0..len) (a JSON spec, see jobspec.h; need not be
 * NUL-terminated), write the record and queue the job.  id gets the new id.
 * Errors (nothing is queued):
 *   LD_EFORMAT 400, LD_EINVAL 422 — the spec; the message names the field.
 *   LD_EBUSY 429 — the queue holds max_queued_jobs (or the engine is shutting
 *     down); *retry_after_s (if not NULL) gets a suggested wait in seconds,
 *     1..3600, from the running jobs' ETAs.
 *   LD_EIO 500 — the record could not be written. */
int ld_jobs_submit(ld_jobs_t *j, const char *body, size_t len, char id[LD_JOB_ID_MAX],
                   int *retry_after_s, ld_err_t *err);

/* Queue an inversion job (jobspec.h): the n images x (n, x_dim), copied
 * into the job's folder as images.npy, inverted with o through the GAN
 * in MODELS/file when the job runs, the answer (ld_invert_json, under the
 * name model) written to its result.json.  The job's steps_total is n; it
 * runs in one ld_invert call, so a cancel or a shutdown acts before it starts
 * (interrupted: it runs again at the next start) or when it ends.  Errors as
 * ld_jobs_submit (LD_EBUSY when the queue is full). */
int ld_jobs_submit_invert(ld_jobs_t *j, const char *model, const char *file,
                          const ld_invert_opts_t *o, int n, int x_dim, const float *x,
                          char id[LD_JOB_ID_MAX], int *retry_after_s, ld_err_t *err);

/* Queue an evaluation job (jobspec.h ld_jobspec_eval_t; POST
 * /v1/models/{name}/evaluate): when it runs, the model MODELS/ev->file
 * (served as model) and the classifier MODELS/ev->classifier_file are
 * loaded, data (a name ld_jobspec_resolve_data takes) is read (test split),
 * and the quality measures of eval.h go into its result.json:
 *   {"model","kind","file","data","images","n","k","seed",
 *    "classifier":{"model","file","accuracy"},
 *    "samples":{"fid","precision","recall","nn_k","min_class_share","min_class",
 *               "class_shares":{name: share}},
 *    "vae":{"nelbo","rec","kl","iwae_k","iwae_nll"} (VAE only, else null),
 *    "per_class_accuracy": null (conditional models: see jobs_eval.c),
 *    "seconds"}
 * Its steps_total is the number of phases; a cancel or shutdown acts between
 * them.  Errors as ld_jobs_submit. */
int ld_jobs_submit_evaluate(ld_jobs_t *j, const char *model, const char *data,
                            const ld_jobspec_eval_t *ev, char id[LD_JOB_ID_MAX],
                            int *retry_after_s, ld_err_t *err);

/* The state of inversion (or evaluation) job id (*state) and, once it succeeded, its result
 * JSON (*json, *len bytes, malloc'd: the caller frees).  LD_ENOTFOUND for an
 * unknown id or a training job; a failed job's error is in err (LD_OK). */
int ld_jobs_invert_result(ld_jobs_t *j, const char *id, ld_job_state_t *state, char **json,
                          size_t *len, ld_err_t *err);

/* Cancel job id.  A queued job is cancelled at once; a running one is asked to
 * stop (it becomes cancelled within about a step; *state says LD_JOB_RUNNING
 * until then); a finished job is left alone (not an error: *state tells).
 * LD_ENOTFOUND (404) for an unknown id. */
int ld_jobs_cancel(ld_jobs_t *j, const char *id, ld_job_state_t *state, ld_err_t *err);

/* A summary of one job, for callers that want fields rather than JSON. */
typedef struct {
    ld_job_state_t state;
    int cancel_requested;
    long step, steps_total;
    long resumed_from_step;    /* -1 when the job never resumed */
    double progress;           /* 0..1 */
    uint64_t seq;              /* the job's event sequence number */
    char error[512];           /* "" unless failed */
    char model[LD_JOBSPEC_NAME_MAX];
} ld_job_info_t;

/* LD_ENOTFOUND for an unknown id. */
int ld_jobs_info(ld_jobs_t *j, const char *id, ld_job_info_t *out, ld_err_t *err);

/* The job as JSON (malloc'd, caller frees):
 *   {"id","state","kind","model","data","progress","epoch","epochs","step",
 *    "steps_total","samples_per_s","eta_s","losses":{name: latest running mean},
 *    "loss_history":[{"step":N, name: value...}],  at most 256 points, one per
 *                   max(1, steps_total/200) steps, VAE loss/rec/kl, GAN
 *                   d_loss/g_loss/d_real/d_fake (running means over the epoch)
 *    "created","started","finished" (ISO-8601 UTC or null), "error" (or null),
 *    "model_file" (null until succeeded), "resumed_from_step" (or null),
 *    "note" (or null), "cancel_requested", "seq", "spec": {normal form},
 *    "eval_history":[{"step", GAN: "fid","min_class_share","min_class",
 *                     "precision","recall" | VAE: "nelbo"}]  one point per
 *                   checkpoint and at the end (spec eval_n; at most 128, the
 *                   newest), measured on the model being trained;
 *    "warnings":[{"step","message","class","share"}]  a class under 1% of a
 *                   GAN's samples at a checkpoint (at most 64)}
 * Every number is finite.  LD_ENOTFOUND for an unknown id, LD_ENOMEM. */
int ld_jobs_get_json(ld_jobs_t *j, const char *id, char **json, ld_err_t *err);

/* Which jobs ld_jobs_list_json lists. */
typedef struct {
    int state;          /* an ld_job_state_t, or -1 for every state */
    int limit;          /* at most this many; 0 = all */
    const char *cursor; /* NULL or "": from the newest; else only jobs older than this id */
} ld_jobs_list_t;

/* {"jobs":[...],"next_cursor":ID|null} newest first; each entry as above
 * without loss_history.  next_cursor is the last id listed when more jobs
 * match (pass it as cursor for the next page), else null.  q NULL = every
 * job.  (malloc'd, caller frees.)  LD_EINVAL for a cursor that is not a job
 * id, LD_ENOMEM. */
int ld_jobs_list_json(ld_jobs_t *j, const ld_jobs_list_t *q, char **json, ld_err_t *err);

/* Remove a finished (succeeded, failed or cancelled) job: its folder
 * STATE/jobs/{id}, the record and any checkpoint kept, goes, and no query
 * finds it again; its id is never given to another job.  A stream of it
 * ends.  LD_ENOTFOUND; LD_EUNSUPPORTED while it is queued, running or
 * interrupted (cancel it first); LD_EIO (nothing removed). */
int ld_jobs_purge(ld_jobs_t *j, const char *id, ld_err_t *err);

/* ---- events (GET /v1/jobs/{id}/events) ----
 * Every change of a job bumps its seq: a state change, a progress update (at
 * most every 250 ms while steps run, and at the last step), and a heartbeat
 * once a second while the job is queued or running and nothing else happened.
 *
 * A stream keeps its last seq (start at 0), subscribes, and on each wake calls
 * ld_jobs_event_json: when *json is not NULL it sends it as one event; when
 * *final is set, that was the last one and the stream ends. */
typedef struct ld_jobs_sub ld_jobs_sub_t;

/* wake(user) is called, from whichever thread changed the job, after each seq
 * bump of job id and once at ld_jobs_shutdown.  It runs under sub_lock: it
 * must be quick and must not call any ld_jobs_* function (a typical wake
 * resumes a suspended MHD connection).  After ld_jobs_unsubscribe returns,
 * wake is never called again with that subscription.  *out owned by the
 * engine until ld_jobs_unsubscribe.  LD_ENOTFOUND for an unknown id. */
int ld_jobs_subscribe(ld_jobs_t *j, const char *id, void (*wake)(void *user), void *user,
                      ld_jobs_sub_t **out, ld_err_t *err);
/* Accepts NULL. */
void ld_jobs_unsubscribe(ld_jobs_t *j, ld_jobs_sub_t *s);

/* If the job's seq is above *seq: *json = the job as ld_jobs_get_json makes it
 * (malloc'd) and *seq = its seq; otherwise *json = NULL.  *final = 1 when the
 * job has reached a final state or is interrupted, or the engine is shut down:
 * nothing newer will come.  LD_ENOTFOUND, LD_ENOMEM. */
int ld_jobs_event_json(ld_jobs_t *j, const char *id, uint64_t *seq, char **json, int *final,
                       ld_err_t *err);

/* Mode-collapse warnings of a training job (its record's "warnings", from
 * evaluation at checkpoints): *json = warning number *next as
 * {"id","step","message":"mode collapse: sandal at 0.4%","class","share"}
 * (malloc'd) and *next advanced, or *json = NULL when there is none newer.
 * A stream sends each as an SSE "warning" event.  LD_ENOTFOUND, LD_ENOMEM. */
int ld_jobs_warning_json(ld_jobs_t *j, const char *id, int *next, char **json, ld_err_t *err);

/* Block until job id's seq exceeds after_seq, it is final, or timeout_ms pass
 * (for tests and simple callers; streams use subscribe).  *seq (if not NULL)
 * gets the seq at return.  LD_OK, or LD_ENOTFOUND. */
int ld_jobs_wait(ld_jobs_t *j, const char *id, uint64_t after_seq, int timeout_ms, uint64_t *seq,
                 ld_err_t *err);

/* ---- metrics ---- */
typedef struct {
    int by_state[LD_JOB_N_STATES];
    int queue_length;             /* queued jobs waiting for a worker */
    long long steps_total;        /* optimiser steps run by this engine */
    double samples_per_s;         /* summed over running jobs */
    double yield_s;               /* worker time spent paused for serving (busy) */
} ld_jobs_stats_t;

void ld_jobs_stats(ld_jobs_t *j, ld_jobs_stats_t *out);

/* Prometheus text exposition families (malloc'd, caller frees; NULL on ENOMEM):
 *   latentd_jobs{state="..."}                            gauge
 *   latentd_jobs_queue_length                            gauge
 *   latentd_job_samples_per_second{job="...",model="..."} gauge, one per running job
 *   latentd_training_steps_total                         counter
 *   latentd_training_yield_seconds_total                 counter
 * A metrics collector appends it to the exposition as is. */
char *ld_jobs_metrics_text(ld_jobs_t *j);

#endif

/* jobs_store.c — the jobs engine's records on disk: a job as JSON, the
 * atomic record write, and start-up recovery of the state folder.
 * Contract and recovery rules: jobs.h; shared internals: jobs_impl.h. */
#define _GNU_SOURCE /* flock */
#include "jobs_impl.h"

#include "latentd/ckpt.h"
#include "latentd/fsutil.h"
#include "latentd/replica.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int jobs_state_parse(const char *s, ld_job_state_t *out)
{
    for (int i = 0; s && i < LD_JOB_N_STATES; i++)
        if (strcmp(s, ld_job_state_name((ld_job_state_t)i)) == 0) {
            *out = (ld_job_state_t)i;
            return 0;
        }
    return -1;
}

/* ---- JSON of a job ---- */

/* A finite number with prec significant digits, or null. */
static int add_num(cJSON *o, const char *key, double v, int prec)
{
    char buf[40];
    if (!isfinite(v))
        return cJSON_AddNullToObject(o, key) != NULL;
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    return cJSON_AddRawToObject(o, key, buf) != NULL;
}

static int add_str_or_null(cJSON *o, const char *key, const char *s)
{
    return (s[0] ? cJSON_AddStringToObject(o, key, s) : cJSON_AddNullToObject(o, key)) != NULL;
}

void jobs_warn_message(const warn_t *w, char *buf, size_t len)
{
    snprintf(buf, len, "mode collapse: %s at %.1f%%", w->cls, 100 * w->share);
}

/* add_num for a measured value, null for NAN (not measured). */
static int add_measure(cJSON *o, const char *key, double v)
{
    return isnan(v) ? cJSON_AddNullToObject(o, key) != NULL : add_num(o, key, v, 6);
}

/* "eval_history" and "warnings" (jobs.h) of job into o; the history from
 * saved (job.json) for a shrunk job. */
static int add_evals(cJSON *o, const job_t *job, const cJSON *saved)
{
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(saved, "eval_history");
    cJSON *h = cJSON_IsArray(sh) ? cJSON_Duplicate(sh, 1) : cJSON_CreateArray(), *w;
    int ok = h && cJSON_AddItemToObject(o, "eval_history", h);
    if (!ok)
        cJSON_Delete(h);
    for (int i = 0; ok && !job->hist_saved && i < job->evals_n; i++) {
        const eval_point_t *p = &job->evals[i];
        cJSON *pt = cJSON_CreateObject();
        ok = pt && cJSON_AddItemToArray(h, pt) &&
             cJSON_AddNumberToObject(pt, "step", (double)p->step);
        if (ok && isnan(p->nelbo))
            ok = add_measure(pt, "fid", p->fid) && add_measure(pt, "min_class_share", p->min_share) &&
                 cJSON_AddStringToObject(pt, "min_class", p->min_class) &&
                 add_measure(pt, "precision", p->precision) && add_measure(pt, "recall", p->recall);
        else if (ok)
            ok = add_measure(pt, "nelbo", p->nelbo);
    }
    ok = ok && (w = cJSON_AddArrayToObject(o, "warnings")) != NULL;
    for (int i = 0; ok && i < job->warns_n; i++) {
        const warn_t *p = &job->warns[i];
        char msg[96];
        jobs_warn_message(p, msg, sizeof msg);
        cJSON *pt = cJSON_CreateObject();
        ok = pt && cJSON_AddItemToArray(w, pt) &&
             cJSON_AddNumberToObject(pt, "step", (double)p->step) &&
             cJSON_AddStringToObject(pt, "message", msg) &&
             cJSON_AddStringToObject(pt, "class", p->cls) && add_num(pt, "share", p->share, 6);
    }
    return ok;
}

static double json_num(const cJSON *o, const char *key, double def);

/* Read back what add_evals wrote (job recovery): the warnings, and the
 * history of a job that is not final (a final record's stays on disk). */
static void read_evals(job_t *job, const cJSON *o)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "eval_history"), *pt;
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "warnings");
    if (!cJSON_IsArray(h) || ld_job_state_is_final(job->state))
        h = NULL;
    if (!cJSON_IsArray(w))
        w = NULL;
    cJSON_ArrayForEach(pt, h)
    {
        eval_point_t p;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(pt, "min_class");
        p.step = (long)json_num(pt, "step", 0);
        p.fid = json_num(pt, "fid", NAN);
        p.min_share = json_num(pt, "min_class_share", NAN);
        p.precision = json_num(pt, "precision", NAN);
        p.recall = json_num(pt, "recall", NAN);
        p.nelbo = json_num(pt, "nelbo", NAN);
        jobs_copy_str(p.min_class, sizeof p.min_class, cJSON_IsString(c) ? c->valuestring : "");
        jobs_eval_push_locked(job, &p);
    }
    cJSON_ArrayForEach(pt, w)
    {
        warn_t p;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(pt, "class");
        p.step = (long)json_num(pt, "step", 0);
        p.share = json_num(pt, "share", 0);
        jobs_copy_str(p.cls, sizeof p.cls, cJSON_IsString(c) ? c->valuestring : "");
        jobs_warn_push_locked(job, &p);
    }
}

cJSON *jobs_job_to_cjson(const job_t *job, int history, const cJSON *saved_rec)
{
    const cJSON *saved_hist = cJSON_GetObjectItemCaseSensitive(saved_rec, "loss_history");
    if (!cJSON_IsArray(saved_hist))
        saved_hist = NULL;
    const char *const *names;
    int nl = ld_train_loss_names(job->kind, &names);
    cJSON *o = cJSON_CreateObject(), *losses = NULL, *hist = NULL;
    double progress = job->steps_total > 0 ? (double)job->step / (double)job->steps_total : 0;
    if (job->state == LD_JOB_SUCCEEDED)
        progress = 1;
    int ok = o && cJSON_AddStringToObject(o, "id", job->id) &&
             cJSON_AddStringToObject(o, "state", ld_job_state_name(job->state)) &&
             cJSON_AddStringToObject(o, "kind", job->kind_name) &&
             cJSON_AddStringToObject(o, "model", job->model) &&
             cJSON_AddStringToObject(o, "data", job->data) &&
             add_num(o, "progress", progress > 1 ? 1 : progress, 6) &&
             cJSON_AddNumberToObject(o, "epoch", job->epoch) &&
             cJSON_AddNumberToObject(o, "epochs", job->epochs) &&
             cJSON_AddNumberToObject(o, "step", (double)job->step) &&
             cJSON_AddNumberToObject(o, "steps_total", (double)job->steps_total) &&
             add_num(o, "samples_per_s", job->samples_per_s, 6) &&
             add_num(o, "eta_s", job->eta_s, 4) && (losses = cJSON_AddObjectToObject(o, "losses"));
    for (int i = 0; ok && i < nl; i++)
        ok = add_num(losses, names[i], job->loss[i], 7);
    if (ok && history && job->hist_saved) {
        hist = saved_hist ? cJSON_Duplicate(saved_hist, 1) : cJSON_CreateArray();
        ok = hist && cJSON_AddItemToObject(o, "loss_history", hist);
        if (!ok)
            cJSON_Delete(hist);
    } else if (ok && history) {
        ok = (hist = cJSON_AddArrayToObject(o, "loss_history")) != NULL;
        for (int k = 0; ok && k < job->hist_n; k++) {
            cJSON *pt = cJSON_CreateObject();
            ok = pt && cJSON_AddItemToArray(hist, pt) &&
                 cJSON_AddNumberToObject(pt, "step", (double)job->hist[k].step);
            for (int i = 0; ok && i < nl; i++)
                ok = add_num(pt, names[i], job->hist[k].v[i], 7);
        }
    }
    ok = ok && add_str_or_null(o, "created", job->created) &&
         add_str_or_null(o, "started", job->started) &&
         add_str_or_null(o, "finished", job->finished) &&
         add_str_or_null(o, "error", job->error) &&
         add_str_or_null(o, "model_file", job->model_file) &&
         (job->resumed_from_step >= 0
              ? cJSON_AddNumberToObject(o, "resumed_from_step", (double)job->resumed_from_step) != NULL
              : cJSON_AddNullToObject(o, "resumed_from_step") != NULL) &&
         add_str_or_null(o, "note", job->note) &&
         cJSON_AddBoolToObject(o, "cancel_requested", atomic_load(&job->cancel) != 0) &&
         cJSON_AddNumberToObject(o, "seq", (double)job->seq) &&
         cJSON_AddRawToObject(o, "spec", job->spec_json) &&
         (!history || add_evals(o, job, job->hist_saved ? saved_rec : NULL));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The loss_history array of job's job.json (in *rec, to be deleted by the
 * caller), or NULL when the record cannot be read (logged). */
static const cJSON *saved_history(ld_jobs_t *j, const job_t *job, cJSON **rec)
{
    char path[PATH_MAX];
    uint8_t *text = NULL;
    size_t len = 0;
    ld_err_t e = {{0}};
    *rec = NULL;
    if (jobs_job_path(j, job, "job.json", path, sizeof path) == 0 &&
        ld_read_file(path, RECORD_MAX, &text, &len, &e) == LD_OK)
        *rec = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(*rec, "loss_history");
    if (!cJSON_IsArray(h)) {
        jobs_log(j, LD_LOG_WARN, "job %s: cannot read loss_history back from %s: %s", job->id,
                 path, e.msg[0] ? e.msg : "not in the record");
        return NULL;
    }
    return h;
}

char *jobs_job_json_full(ld_jobs_t *j, job_t *job, uint64_t *seq, ld_job_state_t *state)
{
    cJSON *rec = NULL, *o = NULL;
    pthread_mutex_lock(&j->lock);
    /* hist_saved only ever goes from 0 to 1: once read, the record is read
     * outside the lock and the JSON built under it again */
    while (job->hist_saved && !rec) {
        pthread_mutex_unlock(&j->lock);
        saved_history(j, job, &rec);
        if (!rec && !(rec = cJSON_CreateNull()))
            return NULL;
        pthread_mutex_lock(&j->lock);
    }
    o = jobs_job_to_cjson(job, 1, rec);
    if (seq)
        *seq = job->seq;
    if (state)
        *state = job->state;
    pthread_mutex_unlock(&j->lock);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    cJSON_Delete(rec);
    return s;
}

/* Write job.json: the snapshot is taken under lock, the write is done after it;
 * persist_lock keeps the writes of one job in snapshot order.  Once a final
 * state is written, the record is shrunk (jobs_shrink_locked).  A failure
 * goes to err, or to the log when err is NULL. */
int jobs_persist(ld_jobs_t *j, job_t *job, ld_err_t *err)
{
    char path[PATH_MAX];
    ld_err_t e;
    if (jobs_job_path(j, job, "job.json", path, sizeof path))
        return ld_err_set(err, LD_EINVAL, "job %s: record path too long", job->id);
    pthread_mutex_lock(&job->persist_lock);
    ld_job_state_t state;
    char *s = jobs_job_json_full(j, job, NULL, &state);
    int rc = s ? ld_write_atomic(path, s, strlen(s), &e) : ld_err_set(&e, LD_ENOMEM, "out of memory");
    if (rc == LD_OK && ld_job_state_is_final(state)) {
        pthread_mutex_lock(&j->lock);
        jobs_shrink_locked(job); /* a final state never changes again */
        pthread_mutex_unlock(&j->lock);
    }
    pthread_mutex_unlock(&job->persist_lock);
    free(s);
    if (rc && err)
        *err = e;
    else if (rc)
        jobs_log(j, LD_LOG_ERROR, "job %s: cannot save its record: %s", job->id, e.msg);
    return rc;
}

/* ---- recovery ---- */

static int json_str(const cJSON *o, const char *key, char *dst, size_t len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || !v->valuestring)
        return -1;
    jobs_copy_str(dst, len, v->valuestring);
    return 0;
}

static double json_num(const cJSON *o, const char *key, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : def;
}

/* Rebuild a job from its record.  Only id, state and spec are required; the
 * rest is taken when present and sane. */
static int job_from_json(const char *dir_id, const char *text, size_t len, job_t *job,
                         ld_err_t *err)
{
    cJSON *o = cJSON_ParseWithLength(text, len);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return ld_err_set(err, LD_EFORMAT, "job.json is not a JSON object");
    }
    int rc = LD_OK;
    char state[32];
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(o, "spec");
    char *spec_text = NULL;
    if (json_str(o, "id", job->id, sizeof job->id) || strcmp(job->id, dir_id) != 0)
        rc = ld_err_set(err, LD_EFORMAT, "job.json has no id or an id other than its folder's");
    else if (json_str(o, "state", state, sizeof state) || jobs_state_parse(state, &job->state))
        rc = ld_err_set(err, LD_EFORMAT, "job.json has no valid state");
    else if (!cJSON_IsObject(spec) || !(spec_text = cJSON_PrintUnformatted(spec)))
        rc = ld_err_set(err, LD_EFORMAT, "job.json has no spec");
    else if ((rc = ld_jobspec_parse(spec_text, strlen(spec_text), NULL, 0, job->spec, err)))
        rc = LD_EFORMAT;
    else if (!(job->spec_json = ld_jobspec_to_json(job->spec)))
        rc = ld_err_set(err, LD_ENOMEM, "out of memory");
    else
        jobs_take_names(job);
    free(spec_text);
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    json_str(o, "created", job->created, sizeof job->created);
    json_str(o, "started", job->started, sizeof job->started);
    json_str(o, "finished", job->finished, sizeof job->finished);
    json_str(o, "error", job->error, sizeof job->error);
    json_str(o, "note", job->note, sizeof job->note);
    json_str(o, "model_file", job->model_file, sizeof job->model_file);
    job->epoch = (int)json_num(o, "epoch", 0);
    job->epochs = (int)json_num(o, "epochs", job->spec->train.epochs);
    job->step = (long)json_num(o, "step", 0);
    job->steps_total = (long)json_num(o, "steps_total", 0);
    job->samples_per_s = json_num(o, "samples_per_s", 0);
    job->eta_s = json_num(o, "eta_s", 0);
    job->resumed_from_step = (long)json_num(o, "resumed_from_step", -1);
    double seq = json_num(o, "seq", 1);
    job->seq = seq >= 1 && seq < 9007199254740992.0 ? (uint64_t)seq : 1;
    const char *const *names;
    int nl = ld_train_loss_names(job->kind, &names);
    const cJSON *losses = cJSON_GetObjectItemCaseSensitive(o, "losses");
    for (int i = 0; i < nl; i++)
        job->loss[i] = json_num(losses, names[i], 0);
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(o, "loss_history"), *pt;
    if (!cJSON_IsArray(hist) || ld_job_state_is_final(job->state))
        hist = NULL; /* a final record's stays on disk (recover_one) */
    cJSON_ArrayForEach(pt, hist)
    {
        double v[LD_MAX_LOSSES] = {0};
        for (int i = 0; i < nl; i++)
            v[i] = json_num(pt, names[i], 0);
        long step = (long)json_num(pt, "step", -1);
        if (step >= 0)
            jobs_hist_push_locked(job, step, v, nl);
    }
    read_evals(job, o);
    cJSON_Delete(o);
    return LD_OK;
}

/* "j-000123" (or "j-NAME-000123", a named replica's) -> 123; -1 when name is
 * not a job folder's. */
long jobs_id_number(const char *name)
{
    if (strncmp(name, "j-", 2) != 0 || !name[2] || strlen(name) >= LD_JOB_ID_MAX)
        return -1;
    const char *digits = name + 2, *dash = strchr(digits, '-');
    if (dash && dash - digits <= LD_REPLICA_NAME_MAX)
        digits = dash + 1;
    if (!*digits)
        return -1;
    long n = 0;
    for (const char *p = digits; *p; p++) {
        if (*p < '0' || *p > '9' || n > (LONG_MAX - 9) / 10)
            return -1;
        n = n * 10 + (*p - '0');
    }
    return n;
}

/* Remove the files in dir whose names contain part (every file when part is
 * NULL): the temporary files of atomic writes a crash left, or a purged job's
 * folder.  0, or -1 with errno when one could not be removed. */
static int remove_files(const char *dir, const char *part)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return -1;
    int rc = 0, saved = 0;
    struct dirent *de;
    while ((de = readdir(dp)))
        if (de->d_name[0] != '.' ? !part || strstr(de->d_name, part)
                                 : !part && strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            char *p = jobs_path_join(dir, de->d_name, NULL);
            if (!p || unlink(p) != 0) {
                rc = -1;
                saved = p ? errno : ENOMEM;
            }
            free(p);
        }
    closedir(dp);
    errno = saved;
    return rc;
}

/* A number kept in a small file of the jobs folder (0 when absent). */
static unsigned long long read_number(ld_jobs_t *j, const char *name)
{
    char *p = jobs_path_join(j->jobs_dir, name, NULL);
    uint8_t *text = NULL;
    size_t len = 0;
    ld_err_t e;
    unsigned long long v = 0;
    if (p && ld_read_file(p, 64, &text, &len, &e) == LD_OK)
        v = strtoull((const char *)text, NULL, 10);
    free(text);
    free(p);
    return v;
}

static int write_number(ld_jobs_t *j, const char *name, unsigned long long v, ld_err_t *err)
{
    char *p = jobs_path_join(j->jobs_dir, name, NULL);
    if (!p)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%llu\n", v);
    int rc = ld_write_atomic(p, buf, (size_t)n, err);
    free(p);
    return rc;
}

/* A purged job's folder is first renamed to ".purged-ID" (so a crash part way
 * leaves no half record under a job's name), then emptied and removed; the
 * largest purged number is kept in "last_purged" so that its id is never
 * given again, even when it was the newest. */
int jobs_remove_folder(ld_jobs_t *j, const job_t *job, ld_err_t *err)
{
    char *dir = jobs_path_join(j->jobs_dir, job->id, NULL);
    char gone[64];
    snprintf(gone, sizeof gone, ".purged-%s", job->id);
    char *tomb = jobs_path_join(j->jobs_dir, gone, NULL);
    int rc = LD_OK;
    if (!dir || !tomb)
        rc = ld_err_set(err, LD_ENOMEM, "out of memory");
    else if (read_number(j, "last_purged") < (unsigned long long)job->num &&
             (rc = write_number(j, "last_purged", (unsigned long long)job->num, err)))
        ;
    else if (rename(dir, tomb) != 0)
        rc = ld_err_set(err, LD_EIO, "cannot remove %s: %s", dir, strerror(errno));
    else if (remove_files(tomb, NULL) != 0 || rmdir(tomb) != 0)
        /* the job is gone from the list; the next start removes the rest */
        jobs_log(j, LD_LOG_WARN, "job %s: cannot remove all of %s: %s", job->id, tomb,
                 strerror(errno));
    free(dir);
    free(tomb);
    return rc;
}

static void recover_one(ld_jobs_t *j, const char *name, long num)
{
    char *dir = jobs_path_join(j->jobs_dir, name, NULL);
    char *rec = jobs_path_join(j->jobs_dir, name, "job.json");
    uint8_t *text = NULL;
    size_t len = 0;
    ld_err_t e = {{0}};
    job_t *job = jobs_job_alloc();
    int rc = !dir || !rec || !job ? ld_err_set(&e, LD_ENOMEM, "out of memory") : LD_OK;
    if (!rc) {
        remove_files(dir, ".tmp."); /* stale temporary files of atomic writes */
        rc = ld_read_file(rec, RECORD_MAX, &text, &len, &e);
    }
    if (!rc)
        rc = job_from_json(name, (const char *)text, len, job, &e);
    if (!rc) {
        job->num = num;
        pthread_mutex_lock(&j->lock);
        if (ld_job_state_is_final(job->state))
            jobs_shrink_locked(job); /* its job.json is the one just read */
        rc = jobs_insert_locked(j, job) ? ld_err_set(&e, LD_ENOMEM, "out of memory") : LD_OK;
        pthread_mutex_unlock(&j->lock);
    }
    if (rc) {
        jobs_log(j, LD_LOG_WARN, "jobs: skipped %s: %s", dir ? dir : name, e.msg);
        jobs_job_free(job);
    }
    free(text);
    free(rec);
    free(dir);
}

/* What a job found at start becomes (before the workers start). */
static void recover_state(ld_jobs_t *j, job_t *job)
{
    ld_job_state_t was = job->state;
    if (ld_job_state_is_final(was))
        return;
    /* its next events must sort after any it sent before the restart, also
     * those after its last record write */
    if (job->seq < j->seq_base)
        job->seq = j->seq_base;
    char state_path[PATH_MAX];
    ld_err_t e = {{0}};
    struct stat st;
    int rc = LD_OK;
    if (jobs_job_path(j, job, "state.safetensors", state_path, sizeof state_path) == 0 &&
        stat(state_path, &st) == 0) {
        ld_ckpt_t *c = NULL;
        rc = ld_ckpt_read(state_path, &c, &e);
        ld_ckpt_free(c);
    }
    pthread_mutex_lock(&j->lock);
    if (rc) {
        snprintf(job->error, sizeof job->error, "interrupted at step %ld, and its checkpoint is "
                                                "unusable: %.400s",
                 job->step, e.msg);
        jobs_set_state_locked(j, job, LD_JOB_FAILED);
    } else {
        job->was_interrupted = was != LD_JOB_QUEUED;
        if (job->was_interrupted)
            snprintf(job->note, sizeof job->note, "was %s at step %ld when the daemon stopped",
                     ld_job_state_name(was), job->step);
        job->state = LD_JOB_QUEUED;
        job->samples_per_s = 0;
        job->eta_s = 0;
        jobs_enqueue_locked(j, job);
    }
    pthread_mutex_unlock(&j->lock);
    if (rc)
        jobs_log(j, LD_LOG_ERROR, "job %s failed: %s", job->id, job->error);
    else if (was != LD_JOB_QUEUED)
        jobs_log(j, LD_LOG_INFO, "job %s was %s: queued again to resume", job->id,
             ld_job_state_name(was));
    if (rc || was != LD_JOB_QUEUED)
        jobs_persist(j, job, NULL);
}

/* Event ids (seq) must keep growing across restarts, but a job's seq is only
 * written with its record.  Each start takes the next generation number
 * (STATE/jobs/generation, written atomically before any job runs); a job that
 * goes on after a restart continues from generation << 32, above every seq
 * of an earlier start (a run would need 2^32 events of one job to reach it). */
static int next_generation(ld_jobs_t *j, ld_err_t *err)
{
    unsigned long long gen = read_number(j, "generation");
    if (gen >= (1ull << 20)) /* keeps seq below 2^53, exact in JSON */
        gen = 0;
    gen++;
    j->seq_base = (uint64_t)gen << 32;
    return write_number(j, "generation", gen, err);
}

int jobs_recover(ld_jobs_t *j, ld_err_t *err)
{
    int grc = next_generation(j, err);
    if (grc)
        return grc;
    DIR *dp = opendir(j->jobs_dir);
    if (!dp)
        return ld_err_set(err, LD_EIO, "cannot open %s: %s", j->jobs_dir, strerror(errno));
    struct dirent *de;
    ld_remove_stale_tmp(j->jobs_dir); /* "generation" and "last_purged" are written there */
    j->next_num = (long)read_number(j, "last_purged") + 1;
    while ((de = readdir(dp))) { /* before the workers start: next_num is ours alone */
        if (strncmp(de->d_name, ".purged-", 8) == 0) { /* a purge a crash cut short */
            char *p = jobs_path_join(j->jobs_dir, de->d_name, NULL);
            if (p && remove_files(p, NULL) == 0)
                rmdir(p);
            free(p);
            continue;
        }
        long num = jobs_id_number(de->d_name);
        if (num < 0)
            continue;
        if (num >= j->next_num)
            j->next_num = num + 1;
        recover_one(j, de->d_name, num);
    }
    closedir(dp);
    /* all[] is in creation order, so the queue is too. */
    for (int i = 0; i < j->n_all; i++)
        recover_state(j, j->all[i]);
    return LD_OK;
}

int jobs_lock_state_folder(ld_jobs_t *j, ld_err_t *err)
{
    char *p = jobs_path_join(j->jobs_dir, ".lock", NULL);
    if (!p)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    j->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int rc = LD_OK;
    if (j->lock_fd < 0)
        rc = ld_err_set(err, LD_EIO, "cannot open %s: %s", p, strerror(errno));
    else if (flock(j->lock_fd, LOCK_EX | LOCK_NB) != 0)
        rc = ld_err_set(err, errno == EWOULDBLOCK ? LD_EBUSY : LD_EIO,
                        "%s: the job folder is in use by another latentd (%s)", j->jobs_dir,
                        strerror(errno));
    free(p);
    return rc;
}

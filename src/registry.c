/* registry.c — see include/latentd/registry.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/registry.h"
#include "registry_impl.h"

#include "latentd/batch.h"
#include "latentd/ckpt.h"
#include "latentd/fsutil.h"
#include "latentd/log.h"
#include "latentd/metrics.h"
#include "latentd/sha256.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SUFFIX ".safetensors"
#define SUFFIX_LEN (sizeof SUFFIX - 1)

/* A file the rescans (every rescan_interval) skip until it changes, as it
 * was then: one that failed to load or has a name that cannot be served
 * (name NULL: neither loaded nor reported again), or the file of a model
 * unloaded by request (name: DELETE outlasts the rescans; a load of name
 * forgets it).  Entries a scan did not meet are dropped at its end
 * (failed_sweep).  Under load_lock. */
struct failed_file {
    char *file;
    char *name;
    off_t size;
    struct timespec mtime;
    ino_t ino;
    int seen; /* met by the current scan */
};

struct ld_registry {
    char *dir;
    pthread_mutex_t load_lock; /* first */
    pthread_mutex_t lock;      /* second */
    ld_served_t **models;      /* sorted by name; guarded by lock */
    int n, cap;
    ld_regstate_t *st;         /* bindings and versions; under load_lock */
    struct failed_file *failed; /* files that failed to load; under load_lock */
    int n_failed, cap_failed;
    atomic_uint_fast64_t ev_loaded, ev_replaced, ev_unloaded, ev_failed;
};

static struct failed_file *failed_find(ld_registry_t *r, const char *name, const char *file)
{
    for (int i = 0; i < r->n_failed; i++) {
        const struct failed_file *f = &r->failed[i];
        if (strcmp(f->file, file) == 0 &&
            (name ? f->name && strcmp(f->name, name) == 0 : !f->name))
            return &r->failed[i];
    }
    return NULL;
}

/* 1 when the entry (name, file) exists and file is unchanged since (st: its
 * stat now, NULL when it has none): do not try or report it again. */
static int failed_unchanged(ld_registry_t *r, const char *name, const char *file,
                            const struct stat *st)
{
    struct failed_file *f = failed_find(r, name, file);
    if (!f || !st || f->size != st->st_size || f->ino != st->st_ino ||
        f->mtime.tv_sec != st->st_mtim.tv_sec || f->mtime.tv_nsec != st->st_mtim.tv_nsec)
        return 0;
    f->seen = 1;
    return 1;
}

/* Remember (name, file) as st shows the file now (NULL: no stat). */
static void failed_note(ld_registry_t *r, const char *name, const char *file,
                        const struct stat *st)
{
    struct failed_file *f = failed_find(r, name, file);
    if (!f) {
        char *copy = strdup(file), *ncopy = name ? strdup(name) : NULL;
        if (!copy || (name && !ncopy)) {
            free(copy);
            free(ncopy);
            return;
        }
        if (r->n_failed == r->cap_failed) {
            int cap = r->cap_failed ? 2 * r->cap_failed : 8;
            struct failed_file *nf = realloc(r->failed, (size_t)cap * sizeof *nf);
            if (!nf) {
                free(copy);
                free(ncopy);
                return;
            }
            r->failed = nf;
            r->cap_failed = cap;
        }
        f = &r->failed[r->n_failed++];
        *f = (struct failed_file){.file = copy, .name = ncopy};
    }
    f->seen = 1;
    if (st) {
        f->size = st->st_size;
        f->ino = st->st_ino;
        f->mtime = st->st_mtim;
    }
}

/* Drop the entries a scan did not meet (the file went, was loaded, or is
 * bound elsewhere) — all = 0 — or every entry of name (a load of name). */
static void failed_sweep(ld_registry_t *r, const char *name)
{
    int k = 0;
    for (int i = 0; i < r->n_failed; i++) {
        struct failed_file *f = &r->failed[i];
        int drop = name ? f->name && strcmp(f->name, name) == 0 : !f->seen;
        if (drop) {
            free(f->file);
            free(f->name);
        } else {
            if (!name)
                f->seen = 0;
            r->failed[k++] = *f;
        }
    }
    r->n_failed = k;
}


/* A file name we may open: STEM.safetensors with a valid name as STEM. */
static int file_name_valid(const char *f)
{
    size_t n = strlen(f);
    if (n <= SUFFIX_LEN || n >= LD_MODEL_FILE_MAX || strcmp(f + n - SUFFIX_LEN, SUFFIX) != 0)
        return 0;
    char stem[LD_MODEL_FILE_MAX];
    memcpy(stem, f, n - SUFFIX_LEN);
    stem[n - SUFFIX_LEN] = '\0';
    return ld_name_is_safe(stem);
}

int ld_registry_new(const char *dir, ld_registry_t **out, ld_err_t *err)
{
    ld_registry_t *r = calloc(1, sizeof *r);
    if (!r || !(r->dir = strdup(dir))) {
        free(r);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    int rc = ld_regstate_open(NULL, &r->st, err);
    if (rc) {
        free(r->dir);
        free(r);
        return rc;
    }
    pthread_mutex_init(&r->load_lock, NULL);
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return LD_OK;
}

ld_served_t *ld_served_ref(ld_served_t *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void ld_served_release(ld_served_t *s)
{
    if (!s)
        return;
    /* acq_rel: the freeing thread must see every other holder's reads done */
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        ld_log_debug("model freed name=%s version=%llu", s->name,
                     (unsigned long long)s->version);
        ld_batch_free(s->batch);
        ld_model_free(s->model);
        free(s);
    }
}

void ld_registry_free(ld_registry_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++)
        ld_served_release(r->models[i]);
    free(r->models);
    ld_regstate_free(r->st);
    for (int i = 0; i < r->n_failed; i++) {
        free(r->failed[i].file);
        free(r->failed[i].name);
    }
    free(r->failed);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->load_lock);
    free(r->dir);
    free(r);
}

int ld_registry_set_state_dir(ld_registry_t *r, const char *state_dir, ld_err_t *err)
{
    if (state_dir && state_dir[0])
        ld_remove_stale_tmp(state_dir); /* models.json's, from a process killed mid-write */
    ld_regstate_t *st = NULL;
    int rc = ld_regstate_open(state_dir, &st, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&r->load_lock);
    ld_regstate_free(r->st);
    r->st = st;
    pthread_mutex_unlock(&r->load_lock);
    return LD_OK;
}

const char *ld_registry_dir(const ld_registry_t *r)
{
    return r->dir;
}

/* Index of name in the sorted table, or -(insertion point) - 1. Caller holds lock. */
static int find_locked(const ld_registry_t *r, const char *name)
{
    int lo = 0, hi = r->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(r->models[mid]->name, name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -lo - 1;
}

ld_served_t *ld_registry_get(ld_registry_t *r, const char *name)
{
    ld_served_t *s = NULL;
    pthread_mutex_lock(&r->lock);
    int i = find_locked(r, name);
    if (i >= 0)
        s = ld_served_ref(r->models[i]);
    pthread_mutex_unlock(&r->lock);
    return s;
}

int ld_registry_count(ld_registry_t *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->n;
    pthread_mutex_unlock(&r->lock);
    return n;
}

int ld_registry_list(ld_registry_t *r, ld_served_t ***out, int *n)
{
    pthread_mutex_lock(&r->lock);
    ld_served_t **list = ld_malloc_array((size_t)r->n, sizeof *list);
    if (!list) {
        pthread_mutex_unlock(&r->lock);
        return LD_ENOMEM;
    }
    for (int i = 0; i < r->n; i++)
        list[i] = ld_served_ref(r->models[i]);
    *n = r->n;
    pthread_mutex_unlock(&r->lock);
    *out = list;
    return LD_OK;
}

void ld_registry_list_free(ld_served_t **list, int n)
{
    if (!list)
        return;
    for (int i = 0; i < n; i++)
        ld_served_release(list[i]);
    free(list);
}

static void path_of(const ld_registry_t *r, const char *file, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", r->dir, file);
}

/* Read and parse file into a new, unpublished ld_served_t (refs = 1). */
static int load_file(ld_registry_t *r, const char *name, const char *file, ld_served_t **out,
                     ld_err_t *err)
{
    /* A link may point at another file in the folder, never out of it: the
     * file's bytes would be served, or quoted in parse errors. */
    char *path;
    int rc = ld_resolve_inside(r->dir, file, &path, err);
    if (rc != LD_OK)
        return rc;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        free(path);
        return ld_err_set(err, LD_EINVAL, "%s: not a regular file", file);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    rc = ld_read_file(path, LD_MODEL_MAX_FILE_BYTES, &buf, &len, err);
    free(path);
    if (rc != LD_OK)
        return rc;

    ld_served_t *s = calloc(1, sizeof *s);
    if (!s) {
        free(buf);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    ld_sha256_hex(buf, len, s->sha256);

    ld_ckpt_t *ck = NULL;
    ld_err_t e;
    rc = ld_ckpt_parse(buf, len, &ck, &e);
    free(buf);
    if (rc == LD_OK) {
        rc = ld_model_from_ckpt(ck, &s->model, &e);
        ld_ckpt_free(ck);
    }
    if (rc != LD_OK) {
        free(s);
        return ld_err_set(err, rc == LD_ENOMEM ? LD_ENOMEM : LD_EFORMAT, "%s: %s", file, e.msg);
    }
    if (s->model->ops->decode_net >= 0 &&
        (rc = ld_batch_new(s->model, NULL, &s->batch, &e)) != LD_OK) {
        ld_model_free(s->model);
        free(s);
        return ld_err_set(err, rc == LD_ENOMEM ? LD_ENOMEM : LD_EFORMAT, "%s: %s", file, e.msg);
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->file, sizeof s->file, "%s", file);
    ld_utc_iso8601(s->loaded_at, sizeof s->loaded_at);
    s->file_size = (uint64_t)st.st_size;
    s->file_mtime = st.st_mtim;
    s->file_ino = st.st_ino;
    atomic_init(&s->refs, 1);
    *out = s;
    return LD_OK;
}

/* The version s is served as: its name's counter, up by one for other bytes
 * than last time (registry_impl.h).  Set just before s is published. */
static void assign_version(ld_registry_t *r, ld_served_t *s)
{
    ld_err_t ve = {{0}};
    s->version = ld_regstate_version(r->st, s->name, s->sha256, &ve);
    if (ve.msg[0])
        ld_log_warn("model state not saved name=%s reason=\"%s\"", s->name, ve.msg);
}

/* Put s (its reference moves to the table) under its name; returns the
 * replaced model (whose table reference the caller must release outside the
 * lock), or NULL. On ENOMEM s is not published and *ok is 0. */
static ld_served_t *publish(ld_registry_t *r, ld_served_t *s, int *ok)
{
    ld_served_t *old = NULL;
    *ok = 1;
    pthread_mutex_lock(&r->lock);
    int i = find_locked(r, s->name);
    if (i >= 0) {
        old = r->models[i];
        r->models[i] = s;
    } else if (r->n >= LD_REGISTRY_MAX_MODELS) {
        *ok = 0;
    } else {
        if (r->n == r->cap) {
            int cap = r->cap ? 2 * r->cap : 8;
            ld_served_t **m = realloc(r->models, (size_t)cap * sizeof *m);
            if (!m) {
                pthread_mutex_unlock(&r->lock);
                *ok = 0;
                return NULL;
            }
            r->models = m;
            r->cap = cap;
        }
        int at = -i - 1;
        memmove(&r->models[at + 1], &r->models[at], (size_t)(r->n - at) * sizeof *r->models);
        r->models[at] = s;
        r->n++;
    }
    pthread_mutex_unlock(&r->lock);
    return old;
}

static void log_loaded(ld_registry_t *r, const ld_served_t *s, const ld_served_t *old)
{
    char desc[256];
    ld_arch_describe(&s->model->arch, desc, sizeof desc);
    if (old) {
        atomic_fetch_add_explicit(&r->ev_replaced, 1, memory_order_relaxed);
        ld_log_info("model replaced name=%s file=%s sha256=%s version=%llu old_sha256=%s "
                    "old_version=%llu arch=\"%s\"",
                    s->name, s->file, s->sha256, (unsigned long long)s->version, old->sha256,
                    (unsigned long long)old->version, desc);
    } else {
        atomic_fetch_add_explicit(&r->ev_loaded, 1, memory_order_relaxed);
        ld_log_info("model loaded name=%s file=%s sha256=%s version=%llu params=%zu arch=\"%s\"",
                    s->name, s->file, s->sha256, (unsigned long long)s->version,
                    s->model->n_params, desc);
    }
}

/* Load file (or, for an install, the temporary file tmp, renamed over file
 * once it has passed every check) and publish it as name. */
static int load_locked(ld_registry_t *r, const char *name, const char *file, const char *tmp,
                       int allow_kind_change, int *replaced, ld_served_t **out, ld_err_t *err)
{
    ld_served_t *s = NULL;
    int rc = load_file(r, name, tmp ? tmp : file, &s, err);
    size_t tl = tmp ? strlen(tmp) : 0;
    if (rc != LD_OK && tmp && err && strncmp(err->msg, tmp, tl) == 0 && err->msg[tl] == ':') {
        /* the message names the upload, not its temporary file */
        char why[384];
        snprintf(why, sizeof why, "%s", err->msg + tl + 1);
        snprintf(err->msg, sizeof err->msg, "the upload for %.100s:%s", file, why);
    }
    ld_served_t *cur = rc == LD_OK && !allow_kind_change ? ld_registry_get(r, name) : NULL;
    if (cur && cur->model->arch.kind != s->model->arch.kind)
        rc = ld_err_set(err, LD_EUNSUPPORTED,
                        "%s is a %s and model %s a %s: give \"allow_kind_change\": true to "
                        "replace it%s",
                        file, ld_kind_name(s->model->arch.kind), name,
                        ld_kind_name(cur->model->arch.kind),
                        tmp ? " (an upload: ?allow_kind_change=true)" : "");
    ld_served_release(cur);
    if (rc == LD_OK && tmp) {
        /* every check passed: the upload takes the file's place */
        char from[4096], to[4096];
        path_of(r, tmp, from, sizeof from);
        path_of(r, file, to, sizeof to);
        snprintf(s->file, sizeof s->file, "%s", file);
        ld_err_t re;
        if (ld_rename_durable(from, to, &re) != LD_OK) {
            if (access(from, F_OK) == 0) { /* not renamed: nothing changed */
                ld_served_release(s);
                return ld_err_set(err, LD_EIO, "%s", re.msg);
            }
            ld_log_warn("model installed without a durable folder name=%s reason=\"%s\"", name,
                        re.msg);
        }
    }
    if (rc == LD_EUNSUPPORTED) {
        ld_served_release(s);
        return rc;
    }
    if (rc != LD_OK) {
        atomic_fetch_add_explicit(&r->ev_failed, 1, memory_order_relaxed);
        ld_log_warn("model load failed name=%s file=%s reason=\"%s\"", name, file,
                    err ? err->msg : ld_status_name(rc));
        return rc;
    }
    if (out)
        ld_served_ref(s);
    assign_version(r, s);
    int ok;
    ld_served_t *old = publish(r, s, &ok);
    if (!ok) {
        if (out)
            ld_served_release(s);
        ld_served_release(s);
        atomic_fetch_add_explicit(&r->ev_failed, 1, memory_order_relaxed);
        return ld_err_set(err, LD_ENOMEM, "cannot serve more than %d models",
                          LD_REGISTRY_MAX_MODELS);
    }
    log_loaded(r, s, old);
    failed_sweep(r, name); /* no longer unloaded by request */
    /* a file other than NAME.safetensors stays bound to the name across
     * rescans and restarts; the default file needs no binding */
    char deffile[LD_MODEL_FILE_MAX];
    snprintf(deffile, sizeof deffile, "%s" SUFFIX, name);
    ld_err_t be;
    if (ld_regstate_bind(r->st, name, strcmp(file, deffile) ? file : NULL, &be))
        ld_log_warn("model binding not saved name=%s file=%s reason=\"%s\"", name, file, be.msg);
    if (replaced)
        *replaced = old != NULL;
    ld_served_release(old);
    if (out)
        *out = s;
    return LD_OK;
}

int ld_registry_load(ld_registry_t *r, const char *name, const char *file, int *replaced,
                     ld_served_t **out, ld_err_t *err)
{
    return ld_registry_put(r, name, file, 1, replaced, out, err);
}

int ld_registry_put(ld_registry_t *r, const char *name, const char *file, int allow_kind_change,
                    int *replaced, ld_served_t **out, ld_err_t *err)
{
    if (!ld_name_is_safe(name))
        return ld_err_set(err, LD_EINVAL,
                          "model name '%.80s' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", name);
    char deffile[LD_MODEL_FILE_MAX];
    if (!file) {
        snprintf(deffile, sizeof deffile, "%s" SUFFIX, name);
        file = deffile;
    }
    if (!file_name_valid(file))
        return ld_err_set(err, LD_EINVAL,
                          "file '%.80s' must be NAME.safetensors directly inside the model folder "
                          "(NAME matching [A-Za-z0-9][A-Za-z0-9._-]{0,63})",
                          file);
    pthread_mutex_lock(&r->load_lock);
    int rc = load_locked(r, name, file, NULL, allow_kind_change, replaced, out, err);
    pthread_mutex_unlock(&r->load_lock);
    return rc;
}

int ld_registry_install(ld_registry_t *r, const char *name, const char *tmp,
                        int allow_kind_change, int *replaced, ld_served_t **out, ld_err_t *err)
{
    if (!ld_name_is_safe(name))
        return ld_err_set(err, LD_EINVAL,
                          "model name '%.80s' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", name);
    if (!tmp || !*tmp || strchr(tmp, '/'))
        return ld_err_set(err, LD_EINVAL, "install: '%.80s' is not a file of the model folder",
                          tmp ? tmp : "");
    char file[LD_MODEL_FILE_MAX];
    snprintf(file, sizeof file, "%s" SUFFIX, name);
    pthread_mutex_lock(&r->load_lock);
    int rc = load_locked(r, name, file, tmp, allow_kind_change, replaced, out, err);
    pthread_mutex_unlock(&r->load_lock);
    return rc;
}

static int unload_locked(ld_registry_t *r, const char *name, const char *why)
{
    ld_served_t *old = NULL;
    pthread_mutex_lock(&r->lock);
    int i = find_locked(r, name);
    if (i >= 0) {
        old = r->models[i];
        memmove(&r->models[i], &r->models[i + 1], (size_t)(r->n - i - 1) * sizeof *r->models);
        r->n--;
    }
    pthread_mutex_unlock(&r->lock);
    if (!old)
        return LD_ENOTFOUND;
    atomic_fetch_add_explicit(&r->ev_unloaded, 1, memory_order_relaxed);
    ld_log_info("model unloaded name=%s file=%s sha256=%s version=%llu reason=%s", old->name,
                old->file, old->sha256, (unsigned long long)old->version, why);
    ld_served_release(old);
    return LD_OK;
}

int ld_registry_unload(ld_registry_t *r, const char *name, ld_err_t *err)
{
    pthread_mutex_lock(&r->load_lock);
    ld_served_t *s = ld_registry_get(r, name);
    int rc = unload_locked(r, name, "request");
    if (rc == LD_OK) { /* the rescans leave it unloaded until its file changes */
        char path[4096];
        struct stat st;
        path_of(r, s->file, path, sizeof path);
        failed_note(r, name, s->file, stat(path, &st) == 0 ? &st : NULL);
    }
    ld_served_release(s);
    pthread_mutex_unlock(&r->load_lock);
    if (rc == LD_ENOTFOUND)
        return ld_err_set(err, LD_ENOTFOUND, "no model named '%.80s'", name);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One (name, file) of a rescan, under load_lock: load the file when name is
 * not served from it yet or the file changed; counts into *loaded, *failed. */
static void scan_one(ld_registry_t *r, const char *name, const char *file, int *loaded,
                     int *failed)
{
    ld_served_t *cur = ld_registry_get(r, name);
    char path[4096];
    struct stat st;
    path_of(r, file, path, sizeof path);
    int have = stat(path, &st) == 0;
    if (cur && strcmp(cur->file, file) == 0 && have && (uint64_t)st.st_size == cur->file_size &&
        st.st_ino == cur->file_ino && st.st_mtim.tv_sec == cur->file_mtime.tv_sec &&
        st.st_mtim.tv_nsec == cur->file_mtime.tv_nsec) {
        ld_served_release(cur);
        return; /* unchanged */
    }
    if (failed_unchanged(r, NULL, file, have ? &st : NULL)) {
        (*failed)++; /* reported when it first failed */
        ld_served_release(cur);
        return;
    }
    if (!cur && failed_unchanged(r, name, file, have ? &st : NULL))
        return; /* unloaded by request */
    ld_served_t *fresh = NULL;
    ld_err_t e;
    int lrc = load_file(r, name, file, &fresh, &e);
    if (lrc != LD_OK) {
        failed_note(r, NULL, file, have ? &st : NULL);
        atomic_fetch_add_explicit(&r->ev_failed, 1, memory_order_relaxed);
        ld_log_warn("model load failed name=%s file=%s reason=\"%s\"", name, file,
                    e.msg);
        (*failed)++;
    } else if (cur && strcmp(cur->sha256, fresh->sha256) == 0 &&
               strcmp(cur->file, fresh->file) == 0) {
        /* same bytes under a new inode or mtime: keep serving the old
         * version (the stat fields are only a hint and stay stale, so
         * the next scan hashes it again — cheap and rare) */
        ld_served_release(fresh);
    } else {
        assign_version(r, fresh);
        int ok;
        ld_served_t *old = publish(r, fresh, &ok);
        if (!ok) {
            ld_served_release(fresh);
            (*failed)++;
        } else {
            log_loaded(r, fresh, old);
            ld_served_release(old);
            (*loaded)++;
        }
    }
    ld_served_release(cur);
}

int ld_registry_scan(ld_registry_t *r, int *n_loaded, int *n_failed, int *n_unloaded,
                     ld_err_t *err)
{
    int loaded = 0, failed = 0, unloaded = 0;
    pthread_mutex_lock(&r->load_lock);
    ld_remove_stale_tmp(r->dir); /* checkpoints a killed process was writing */
    DIR *d = opendir(r->dir);
    if (!d) {
        int e = errno;
        pthread_mutex_unlock(&r->load_lock);
        return ld_err_set(err, LD_EIO, "model folder %s: %s", r->dir, strerror(e));
    }
    char **files = NULL;
    int nf = 0, capf = 0, rc = LD_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n <= SUFFIX_LEN || strcmp(de->d_name + n - SUFFIX_LEN, SUFFIX) != 0)
            continue;
        if (!file_name_valid(de->d_name)) {
            char path[4096];
            struct stat st;
            path_of(r, de->d_name, path, sizeof path);
            int have = stat(path, &st) == 0;
            failed++;
            if (failed_unchanged(r, NULL, de->d_name, have ? &st : NULL))
                continue;
            failed_note(r, NULL, de->d_name, have ? &st : NULL);
            ld_log_warn("model file skipped file=%.200s reason=\"the name before .safetensors "
                        "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}\"",
                        de->d_name);
            continue;
        }
        if (nf == capf) {
            capf = capf ? 2 * capf : 16;
            char **nfiles = realloc(files, (size_t)capf * sizeof *files);
            if (!nfiles) {
                rc = ld_err_set(err, LD_ENOMEM, "out of memory");
                break;
            }
            files = nfiles;
        }
        if (!(files[nf] = strdup(de->d_name))) {
            rc = ld_err_set(err, LD_ENOMEM, "out of memory");
            break;
        }
        nf++;
    }
    closedir(d);
    int serving = ld_registry_count(r);
    if (rc == LD_OK && nf == 0 && serving > 0)
        /* an unmounted or detached shared folder looks empty: serving on is
         * better than unloading everything (docs/scaling.md) */
        rc = ld_err_set(err, LD_EIO,
                        "model folder %s holds no model file: keeping the %d served models "
                        "(is the shared folder mounted?); DELETE them to stop serving them",
                        r->dir, serving);
    if (rc == LD_OK) {
        if (nf > 0)
            qsort(files, (size_t)nf, sizeof *files, cmp_str);
        /* names a PUT bound to another file first: a binding whose file is
         * gone is dropped, and the name falls back to NAME.safetensors */
        for (int b = 0; b < ld_regstate_n_bindings(r->st); b++) {
            const char *name, *file;
            ld_regstate_binding_at(r->st, b, &name, &file);
            if (!file)
                continue;
            if (nf == 0 || !bsearch(&file, files, (size_t)nf, sizeof *files, cmp_str)) {
                ld_log_warn("model binding dropped name=%s file=%s reason=\"the file is gone\"",
                            name, file);
                ld_regstate_bind(r->st, name, NULL, NULL);
                continue;
            }
            scan_one(r, name, file, &loaded, &failed);
        }
        for (int i = 0; i < nf; i++) {
            char name[LD_MODEL_FILE_MAX];
            snprintf(name, sizeof name, "%.*s", (int)(strlen(files[i]) - SUFFIX_LEN), files[i]);
            const char *bound = ld_regstate_binding(r->st, name);
            if (!bound || strcmp(bound, files[i]) == 0)
                scan_one(r, name, files[i], &loaded, &failed);
        }
        /* unload models whose file has gone */
        ld_served_t **list = NULL;
        int nl = 0;
        if (ld_registry_list(r, &list, &nl) == LD_OK) {
            for (int i = 0; i < nl; i++) {
                char path[4096];
                struct stat st;
                path_of(r, list[i]->file, path, sizeof path);
                if (stat(path, &st) != 0 && errno == ENOENT &&
                    unload_locked(r, list[i]->name, "file removed") == LD_OK)
                    unloaded++;
            }
            ld_registry_list_free(list, nl);
        }
        failed_sweep(r, NULL);
    }
    for (int i = 0; i < nf; i++)
        free(files[i]);
    free(files);
    pthread_mutex_unlock(&r->load_lock);
    if (n_loaded)
        *n_loaded = loaded;
    if (n_failed)
        *n_failed = failed;
    if (n_unloaded)
        *n_unloaded = unloaded;
    return rc;
}

void ld_registry_collect(ld_buf_t *out, void *ctx)
{
    ld_registry_t *r = ctx;
    ld_served_t **list = NULL;
    int n = 0;
    if (ld_registry_list(r, &list, &n) != LD_OK)
        return;
    ld_metrics_family(out, "latentd_models_loaded", "gauge", "Models being served.");
    ld_buf_printf(out, "latentd_models_loaded %d\n", n);
    ld_metrics_family(out, "latentd_model_info", "gauge",
                      "One series per served model with its identity; always 1.");
    for (int i = 0; i < n; i++) {
        ld_buf_puts(out, "latentd_model_info{model=\"");
        ld_metrics_label_value(out, list[i]->name);
        ld_buf_printf(out, "\",kind=\"%s\",sha256=\"%s\",version=\"%llu\"} 1\n",
                      ld_kind_name(list[i]->model->arch.kind), list[i]->sha256,
                      (unsigned long long)list[i]->version);
    }
    ld_metrics_family(out, "latentd_model_parameters", "gauge",
                      "Parameter count of each served model.");
    for (int i = 0; i < n; i++) {
        ld_buf_puts(out, "latentd_model_parameters{model=\"");
        ld_metrics_label_value(out, list[i]->name);
        ld_buf_printf(out, "\"} %zu\n", list[i]->model->n_params);
    }
    static const struct {
        const char *name, *help;
    } batch_fam[] = {
        {"latentd_decode_batches_total",
         "Decoder passes per served model version; requests decoded together share one."},
        {"latentd_decode_batch_requests_total",
         "Requests decoded per served model version (divided by passes: mean batch size)."},
        {"latentd_decode_batch_rows_total", "Latent rows decoded per served model version."},
    };
    for (size_t f = 0; f < LD_ARRAY_LEN(batch_fam); f++) {
        ld_metrics_family(out, batch_fam[f].name, "counter", batch_fam[f].help);
        for (int i = 0; i < n; i++) {
            if (!list[i]->batch)
                continue;
            ld_batch_stats_t st;
            ld_batch_stats(list[i]->batch, &st);
            uint64_t v = f == 0 ? st.batches : f == 1 ? st.requests : st.rows;
            ld_buf_printf(out, "%s{model=\"", batch_fam[f].name);
            ld_metrics_label_value(out, list[i]->name);
            ld_buf_printf(out, "\"} %llu\n", (unsigned long long)v);
        }
    }
    ld_registry_list_free(list, n);
    ld_metrics_family(out, "latentd_model_events_total", "counter",
                      "Model registry events: loaded, replaced, unloaded, failed loads.");
    ld_buf_printf(out, "latentd_model_events_total{event=\"loaded\"} %llu\n",
                  (unsigned long long)atomic_load(&r->ev_loaded));
    ld_buf_printf(out, "latentd_model_events_total{event=\"replaced\"} %llu\n",
                  (unsigned long long)atomic_load(&r->ev_replaced));
    ld_buf_printf(out, "latentd_model_events_total{event=\"unloaded\"} %llu\n",
                  (unsigned long long)atomic_load(&r->ev_unloaded));
    ld_buf_printf(out, "latentd_model_events_total{event=\"failed\"} %llu\n",
                  (unsigned long long)atomic_load(&r->ev_failed));
}

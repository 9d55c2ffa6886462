/* registry.h — the served models: name -> refcounted, immutable model.
 *
 * A served model (ld_served_t) never changes after it is published.  Readers
 * take a reference with ld_registry_get() for the length of one request and
 * drop it with ld_served_release(); loading a new version publishes a new
 * pointer under the table lock and drops the registry's reference to the old
 * one, so requests in flight finish on the version they started with and the
 * old version's memory is freed when its last reference goes.
 *
 * Files: every model comes from a file NAME.safetensors (or any
 * X.safetensors given to ld_registry_load) directly inside the model folder;
 * names and file stems must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}
 * (ld_name_is_safe), and a symbolic link is followed only to a file inside
 * the folder, so no path ever leaves it.  The file's SHA-256 is computed over exactly the
 * bytes that were parsed.  A checkpoint whose parameters hold NaN or Inf is
 * refused.
 *
 * Locks (order: load_lock, then lock; never the other way):
 *   load_lock  serialises load / unload / rescan, so "replace" decisions and
 *              the model events in the log are coherent;
 *   lock       guards the name table; held only for lookups and pointer swaps,
 *              never while reading files or freeing models.
 * Reference counts are atomics.  Every function is thread-safe.
 */
#ifndef LATENTD_REGISTRY_H
#define LATENTD_REGISTRY_H

#include "latentd/buf.h"
#include "latentd/common.h"
#include "latentd/model.h"

#include <stdatomic.h>
#include <sys/types.h>
#include <time.h>

#define LD_MODEL_NAME_MAX 64
#define LD_MODEL_FILE_MAX 128
#define LD_REGISTRY_MAX_MODELS 1024
#define LD_MODEL_MAX_FILE_BYTES ((size_t)2 << 30) /* 2 GiB */

typedef struct ld_served {
    char name[LD_MODEL_NAME_MAX + 1];
    char file[LD_MODEL_FILE_MAX];   /* file name inside the model folder */
    char sha256[65];                /* hex digest of the file's bytes */
    char loaded_at[32];             /* UTC ISO 8601 */
    uint64_t version;               /* per name, > 0: up by one for each new sha256 served
                                       under the name, the same for the same bytes; kept
                                       across restarts with a state folder */
    uint64_t file_size;
    struct timespec file_mtime;
    ino_t file_ino;
    ld_model_t *model;              /* owned; freed with the last reference */
    struct ld_batch *batch;         /* owned: the decoder batcher (VAE, GAN), else NULL */
    atomic_int refs;
} ld_served_t;

typedef struct ld_registry ld_registry_t;

/* A registry serving files from dir (not opened until a load or scan).
 * *out owned by the caller (ld_registry_free). */
int ld_registry_new(const char *dir, ld_registry_t **out, ld_err_t *err);
/* Drop the registry's references; models still referenced by requests stay
 * alive until those are released. NULL is fine. */
void ld_registry_free(ld_registry_t *r);

/* The served model called name with one more reference, or NULL. */
ld_served_t *ld_registry_get(ld_registry_t *r, const char *name);
/* One more reference to s (s must already be referenced by the caller). */
ld_served_t *ld_served_ref(ld_served_t *s);
/* Drop one reference; the last one frees the model. NULL is fine. */
void ld_served_release(ld_served_t *s);

/* Load file (a NAME.safetensors inside the folder; NULL = "<name>.safetensors")
 * and publish it as name, replacing any model of that name atomically.
 * *replaced (if not NULL) tells whether one was replaced; *out (if not NULL)
 * receives a reference to the new model. Errors: LD_EINVAL bad name or file
 * name, LD_ENOTFOUND no such file, LD_EFORMAT bad checkpoint (the message is
 * the loader's, naming the file), LD_EIO, LD_ENOMEM. Each outcome is logged. */
int ld_registry_load(ld_registry_t *r, const char *name, const char *file, int *replaced,
                     ld_served_t **out, ld_err_t *err);
/* ld_registry_load for PUT /v1/models/{name}: when a model of another kind
 * (VAE, GAN...) is served as name and allow_kind_change is 0, nothing changes
 * and it returns LD_EUNSUPPORTED (409) with a message naming both kinds.
 * ld_registry_load is this with allow_kind_change 1.  Either way a file other
 * than NAME.safetensors stays bound to name: rescans and (with a state
 * folder) restarts serve it under that name again, until another load of
 * name or the file's removal. */
int ld_registry_put(ld_registry_t *r, const char *name, const char *file, int allow_kind_change,
                    int *replaced, ld_served_t **out, ld_err_t *err);

/* Serve the checkpoint in tmp, a file directly inside the model folder (a
 * streamed upload, written and fsynced by the caller; see ld_tmp_create), as
 * name from NAME.safetensors: under load_lock it is parsed and checked in
 * full as ld_registry_put does (same errors, same kind-change rule), then
 * renamed over NAME.safetensors (the folder fsynced) and published; a
 * binding of name to another file is dropped.  On failure nothing changed
 * (tmp is still there: the caller removes it); on success tmp is gone. */
int ld_registry_install(ld_registry_t *r, const char *name, const char *tmp,
                        int allow_kind_change, int *replaced, ld_served_t **out, ld_err_t *err);

/* Keep bindings and versions in state_dir/models.json (registry_impl.h), read
 * now: call before the first scan.  Without it they live in memory only. */
int ld_registry_set_state_dir(ld_registry_t *r, const char *state_dir, ld_err_t *err);

/* Stop serving name (LD_ENOTFOUND if not served). The file stays. */
int ld_registry_unload(ld_registry_t *r, const char *name, ld_err_t *err);

/* Make the served set match the folder: load every NAME.safetensors not yet
 * served, reload those whose file changed (size, mtime or inode; a reload
 * with an identical SHA-256 keeps the old version), unload models whose file
 * is gone.  A bad file is logged with its reason and skipped.  A folder
 * holding no model file while models are served changes nothing: LD_EIO
 * (it is taken for an unmounted shared folder).  Counts (any
 * may be NULL): models loaded or replaced, files that failed, models unloaded. */
int ld_registry_scan(ld_registry_t *r, int *n_loaded, int *n_failed, int *n_unloaded,
                     ld_err_t *err);

/* References to every served model, sorted by name: *out is a malloc'd array
 * of *n references; release with ld_registry_list_free. */
int ld_registry_list(ld_registry_t *r, ld_served_t ***out, int *n);
void ld_registry_list_free(ld_served_t **list, int n);
int ld_registry_count(ld_registry_t *r);
const char *ld_registry_dir(const ld_registry_t *r);

/* A metrics collector (see metrics.h) for ctx = the registry: models loaded,
 * one info series per model, parameters per model, model events by kind. */
void ld_registry_collect(ld_buf_t *out, void *ctx);

#endif

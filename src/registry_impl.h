/* registry_impl.h — what the model registry keeps across rescans and
 * restarts (registry_state.c); used by registry.c only, under its load_lock.
 *
 *   bindings  name -> file, set by a PUT that names another file than
 *             NAME.safetensors, so that a rescan (SIGHUP) or a restart serves
 *             that file under that name again;
 *   versions  name -> (sha256 of the served file, version): a name's version
 *             goes up by one each time a file with other bytes is served
 *             under it, and stays the same for the same bytes, so
 *             X-Latentd-Model-Version is a cache key across restarts.
 *
 * With a state folder both live in STATE/models.json, rewritten atomically
 * (ld_write_atomic) on every change; without one (tests, tools) they live in
 * memory only.  A models.json that does not parse is logged and ignored.
 * Not thread-safe: the registry's load_lock serialises every call. */
#ifndef LATENTD_REGISTRY_IMPL_H
#define LATENTD_REGISTRY_IMPL_H

#include "latentd/common.h"
#include "latentd/registry.h"

#include <stdint.h>

typedef struct ld_regstate ld_regstate_t;

/* state_dir NULL or "": in memory only.  *out owned by the caller. */
int ld_regstate_open(const char *state_dir, ld_regstate_t **out, ld_err_t *err);
void ld_regstate_free(ld_regstate_t *st);

/* The file name is bound to, or NULL. */
const char *ld_regstate_binding(const ld_regstate_t *st, const char *name);
/* The i-th binding (0 <= i < ld_regstate_n_bindings); name and file borrowed. */
int ld_regstate_n_bindings(const ld_regstate_t *st);
void ld_regstate_binding_at(const ld_regstate_t *st, int i, const char **name, const char **file);
/* Bind name to file (NULL: remove the binding) and save.  A save failure is
 * returned (LD_EIO) with the binding kept in memory. */
int ld_regstate_bind(ld_regstate_t *st, const char *name, const char *file, ld_err_t *err);

/* The version to serve file bytes with digest sha256 under name as (>= 1),
 * recorded and saved when it is new.  A save failure goes to err, the
 * version is still returned. */
uint64_t ld_regstate_version(ld_regstate_t *st, const char *name, const char *sha256,
                             ld_err_t *err);

#endif

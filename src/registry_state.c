/* registry_state.c — the registry's bindings and versions; see registry_impl.h. */
#define _POSIX_C_SOURCE 200809L
#include "registry_impl.h"

#include "latentd/fsutil.h"
#include "latentd/log.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_FILE_MAX (4u << 20)

typedef struct {
    char name[LD_MODEL_NAME_MAX + 1];
    char file[LD_MODEL_FILE_MAX]; /* "" = no binding */
    char sha256[65];              /* "" = no version yet */
    uint64_t version;
} entry_t;

struct ld_regstate {
    char *path; /* STATE/models.json, or NULL */
    entry_t *e;
    int n, cap;
};

static entry_t *find(const ld_regstate_t *st, const char *name)
{
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->e[i].name, name) == 0)
            return &st->e[i];
    return NULL;
}

static entry_t *find_or_add(ld_regstate_t *st, const char *name)
{
    entry_t *e = find(st, name);
    if (e || strlen(name) > LD_MODEL_NAME_MAX)
        return e;
    if (st->n == st->cap) {
        int cap = st->cap ? 2 * st->cap : 16;
        entry_t *v = realloc(st->e, (size_t)cap * sizeof *v);
        if (!v)
            return NULL;
        st->e = v;
        st->cap = cap;
    }
    e = &st->e[st->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

/* {"models":{"NAME":{"file":F|null,"sha256":S,"version":N}}} */
static int save(const ld_regstate_t *st, ld_err_t *err)
{
    if (!st->path)
        return LD_OK;
    cJSON *root = cJSON_CreateObject();
    cJSON *models = root ? cJSON_AddObjectToObject(root, "models") : NULL;
    int ok = models != NULL;
    for (int i = 0; ok && i < st->n; i++) {
        const entry_t *e = &st->e[i];
        cJSON *o = cJSON_AddObjectToObject(models, e->name);
        ok = o &&
             (e->file[0] ? cJSON_AddStringToObject(o, "file", e->file)
                         : cJSON_AddNullToObject(o, "file")) &&
             cJSON_AddStringToObject(o, "sha256", e->sha256) &&
             cJSON_AddNumberToObject(o, "version", (double)e->version);
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    int rc = ld_write_atomic(st->path, text, strlen(text), err);
    free(text);
    return rc;
}

static void load(ld_regstate_t *st)
{
    uint8_t *text = NULL;
    size_t len = 0;
    ld_err_t e;
    if (ld_read_file(st->path, STATE_FILE_MAX, &text, &len, &e) != LD_OK)
        return; /* none yet */
    cJSON *root = cJSON_ParseWithLength((const char *)text, len);
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models"), *m;
    if (!cJSON_IsObject(models)) {
        ld_log_warn("model state %s is not what latentd writes; starting without it", st->path);
        models = NULL;
    }
    cJSON_ArrayForEach(m, models)
    {
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(m, "file");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(m, "sha256");
        const cJSON *ver = cJSON_GetObjectItemCaseSensitive(m, "version");
        if (!m->string || !ld_name_is_safe(m->string))
            continue;
        entry_t *en = find_or_add(st, m->string);
        if (!en)
            break;
        if (cJSON_IsString(file) && strlen(file->valuestring) < sizeof en->file)
            snprintf(en->file, sizeof en->file, "%s", file->valuestring);
        if (cJSON_IsString(sha) && strlen(sha->valuestring) == 64)
            snprintf(en->sha256, sizeof en->sha256, "%s", sha->valuestring);
        if (cJSON_IsNumber(ver) && ver->valuedouble >= 1 && ver->valuedouble < 9007199254740992.0)
            en->version = (uint64_t)ver->valuedouble;
    }
    cJSON_Delete(root);
    free(text);
}

int ld_regstate_open(const char *state_dir, ld_regstate_t **out, ld_err_t *err)
{
    ld_regstate_t *st = calloc(1, sizeof *st);
    if (!st)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    if (state_dir && state_dir[0]) {
        size_t n = strlen(state_dir) + sizeof "/models.json";
        if (!(st->path = malloc(n))) {
            free(st);
            return ld_err_set(err, LD_ENOMEM, "out of memory");
        }
        snprintf(st->path, n, "%s/models.json", state_dir);
        load(st);
    }
    *out = st;
    return LD_OK;
}

void ld_regstate_free(ld_regstate_t *st)
{
    if (!st)
        return;
    free(st->path);
    free(st->e);
    free(st);
}

const char *ld_regstate_binding(const ld_regstate_t *st, const char *name)
{
    const entry_t *e = find(st, name);
    return e && e->file[0] ? e->file : NULL;
}

int ld_regstate_n_bindings(const ld_regstate_t *st)
{
    return st->n;
}

void ld_regstate_binding_at(const ld_regstate_t *st, int i, const char **name, const char **file)
{
    *name = st->e[i].name;
    *file = st->e[i].file[0] ? st->e[i].file : NULL;
}

int ld_regstate_bind(ld_regstate_t *st, const char *name, const char *file, ld_err_t *err)
{
    entry_t *e = file ? find_or_add(st, name) : find(st, name);
    if (!e)
        return file ? ld_err_set(err, LD_ENOMEM, "out of memory") : LD_OK;
    if (strcmp(e->file, file ? file : "") == 0)
        return LD_OK;
    snprintf(e->file, sizeof e->file, "%s", file ? file : "");
    return save(st, err);
}

uint64_t ld_regstate_version(ld_regstate_t *st, const char *name, const char *sha256,
                             ld_err_t *err)
{
    entry_t *e = find_or_add(st, name);
    if (!e)
        return 1;
    if (e->version && strcmp(e->sha256, sha256) == 0)
        return e->version;
    e->version++;
    snprintf(e->sha256, sizeof e->sha256, "%s", sha256);
    save(st, err);
    return e->version;
}

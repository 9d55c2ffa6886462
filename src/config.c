/* config.c — see include/latentd/config.h.  Table-driven in the manner of
 * redis's config.c: every key is one row; parsing, defaults, range checks,
 * flag overrides and the dump all walk the same table. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/config.h"

#include "latentd/buf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <sys/types.h>
#include <string.h>

#define F(field) offsetof(ld_config_t, field), sizeof(((ld_config_t *)0)->field)

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define KiB 1024LL
#define MiB (1024LL * 1024)
#define GiB (1024LL * 1024 * 1024)

/* Keep in step with config/latentd.conf (a test checks that every key is there). */
static const ld_cfg_key_t keys[] = {
    /* name                     type          min   max        default      field                         choices     flag */
    {"bind",                    LD_CFG_STR,   0,    0,         "127.0.0.1", F(bind),                      NULL,       "--bind"},
    {"port",                    LD_CFG_INT,   0,    65535,     "8080",      F(port),                      NULL,       "--port"},
    {"http_threads",            LD_CFG_INT,   0,    256,       "8",         F(http_threads),              NULL,       NULL},
    {"request_timeout",         LD_CFG_INT,   1,    3600,      "30",        F(request_timeout),           NULL,       NULL},
    {"connection_limit",        LD_CFG_INT,   1,    100000,    "512",       F(connection_limit),          NULL,       NULL},
    {"per_ip_connection_limit", LD_CFG_INT,   0,    100000,    "128",       F(per_ip_connection_limit),   NULL,       NULL},
    {"connection_reserve",      LD_CFG_INT,   0,    100000,    "64",        F(connection_reserve),        NULL,       NULL},
    {"request_head_timeout",    LD_CFG_INT,   1,    3600,      "10",        F(request_head_timeout),      NULL,       NULL},
    {"request_body_timeout",    LD_CFG_INT,   1,    3600,      "60",        F(request_body_timeout),      NULL,       NULL},
    {"connection_memory_limit", LD_CFG_SIZE,  8 * KiB, 16 * MiB, "16k",     F(connection_memory_limit),   NULL,       NULL},
    {"max_body_bytes",          LD_CFG_SIZE,  1 * KiB, 1 * GiB, "4mb",      F(max_body_bytes),            NULL,       NULL},
    {"max_upload_bytes",        LD_CFG_SIZE,  1 * KiB, 64 * GiB, "256mb",   F(max_upload_bytes),          NULL,       NULL},
    {"body_memory_limit",       LD_CFG_SIZE,  1 * KiB, 64 * GiB, "64mb",    F(body_memory_limit),         NULL,       NULL},
    {"shutdown_timeout",        LD_CFG_INT,   0,    3600,      "10",        F(shutdown_timeout),          NULL,       NULL},
    {"models_dir",              LD_CFG_STR,   0,    0,         "models",    F(models_dir),                NULL,       "--models"},
    {"state_dir",               LD_CFG_STR,   0,    0,         "state",     F(state_dir),                 NULL,       "--state"},
    {"data_dir",                LD_CFG_STR,   0,    0,         "data",      F(data_dir),                  NULL,       "--data"},
    {"max_samples",             LD_CFG_INT,   1,    4096,      "256",       F(max_samples),               NULL,       NULL},
    {"sample_cache_max_age",    LD_CFG_INT,   0,    31536000,  "86400",     F(sample_cache_max_age),      NULL,       NULL},
    {"worker_threads",          LD_CFG_INT,   1,    64,        "1",         F(worker_threads),            NULL,       NULL},
    {"max_queued_jobs",         LD_CFG_INT,   1,    10000,     "16",        F(max_queued_jobs),           NULL,       NULL},
    {"training_yield_load",     LD_CFG_INT,   0,    100000,    "100",       F(training_yield_load),       NULL,       NULL},
    {"checkpoint_every",        LD_CFG_INT,   0,    1000000000, "500",      F(checkpoint_every),          NULL,       NULL},
    {"max_epochs",              LD_CFG_INT,   0,    100000,    "1000",      F(max_epochs),                NULL,       NULL},
    {"max_batch",               LD_CFG_INT,   0,    65536,     "4096",      F(max_batch),                 NULL,       NULL},
    {"max_hidden_width",        LD_CFG_INT,   0,    4096,      "4096",      F(max_hidden_width),          NULL,       NULL},
    {"max_z",                   LD_CFG_INT,   0,    1024,      "1024",      F(max_z),                     NULL,       NULL},
    {"max_limit",               LD_CFG_INT,   0,    1000000000, "0",        F(max_limit),                 NULL,       NULL},
    {"max_job_bytes",           LD_CFG_SIZE,  0,    1024 * GiB, "1gb",      F(max_job_bytes),             NULL,       NULL},
    {"mpi_launcher",            LD_CFG_STR,   0,    0,         "mpirun --bind-to none", F(mpi_launcher),  NULL,       NULL},
    {"mpi_hostfile",            LD_CFG_STR,   0,    0,         "",          F(mpi_hostfile),              NULL,       NULL},
    {"mpi_binary",              LD_CFG_STR,   0,    0,         "",          F(mpi_binary),                NULL,       NULL},
    {"token_file",              LD_CFG_STR,   0,    0,         "",          F(token_file),                NULL,       "--token-file"},
    {"admin_token_file",        LD_CFG_STR,   0,    0,         "",          F(admin_token_file),          NULL,       "--admin-token-file"},
    {"cors_origins",            LD_CFG_STR,   0,    0,         "",          F(cors_origins),              NULL,       NULL},
    {"log_level",               LD_CFG_ENUM,  0,    0,         "info",      F(log_level),                 log_levels, "--log-level"},
    {"access_log",              LD_CFG_BOOL,  0,    1,         "yes",       F(access_log),                NULL,       NULL},
    {"web",                     LD_CFG_STR,   0,    0,         "builtin",   F(web),                       NULL,       NULL},
    {"rescan_interval",         LD_CFG_INT,   0,    86400,     "5",         F(rescan_interval),           NULL,       NULL},
    {"replica",                 LD_CFG_STR,   0,    0,         "",          F(replica),                   NULL,       NULL},
    {"peers",                   LD_CFG_STR,   0,    0,         "",          F(peers),                     NULL,       NULL},
};

const ld_cfg_key_t *ld_config_keys(int *n)
{
    *n = (int)LD_ARRAY_LEN(keys);
    return keys;
}

const ld_cfg_key_t *ld_config_key(const char *name)
{
    for (size_t i = 0; i < LD_ARRAY_LEN(keys); i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* Strict decimal integer (optional sign), no junk, no overflow. */
static int parse_ll(const char *s, long long *out)
{
    if (!*s || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

/* Integer with an optional unit k|kb|m|mb|g|gb|b (powers of 1024). */
static int parse_size(const char *s, long long *out)
{
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s)
        return -1;
    long long mul = 1;
    char unit[4] = {0};
    size_t ul = strlen(end);
    if (ul > 2)
        return -1;
    for (size_t i = 0; i < ul; i++)
        unit[i] = (char)tolower((unsigned char)end[i]);
    if (ul == 0 || strcmp(unit, "b") == 0)
        mul = 1;
    else if (strcmp(unit, "k") == 0 || strcmp(unit, "kb") == 0)
        mul = KiB;
    else if (strcmp(unit, "m") == 0 || strcmp(unit, "mb") == 0)
        mul = MiB;
    else if (strcmp(unit, "g") == 0 || strcmp(unit, "gb") == 0)
        mul = GiB;
    else
        return -1;
    if (v > LLONG_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < LD_ARRAY_LEN(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int set_key(ld_config_t *c, const ld_cfg_key_t *k, const char *value, const char *where,
                   ld_err_t *err)
{
    char *field = (char *)c + k->offset;
    if (!where)
        where = k->name;
    switch (k->type) {
    case LD_CFG_INT:
    case LD_CFG_SIZE: {
        long long v;
        int rc = k->type == LD_CFG_INT ? parse_ll(value, &v) : parse_size(value, &v);
        if (rc != 0)
            return ld_err_set(err, LD_EINVAL, "%s: %s expects %s, got '%s'", where, k->name,
                              k->type == LD_CFG_INT ? "an integer"
                                                    : "a size in bytes (e.g. 4mb, 64k)",
                              value);
        if (v < k->min || v > k->max)
            return ld_err_set(err, LD_EINVAL, "%s: %s = %s is out of range [%lld, %lld]", where,
                              k->name, value, k->min, k->max);
        if (k->type == LD_CFG_INT)
            *(int *)field = (int)v;
        else
            *(long long *)field = v;
        return LD_OK;
    }
    case LD_CFG_BOOL:
        if (parse_bool(value, (int *)field) != 0)
            return ld_err_set(err, LD_EINVAL, "%s: %s expects yes or no, got '%s'", where,
                              k->name, value);
        return LD_OK;
    case LD_CFG_STR: {
        size_t n = strlen(value);
        if (n >= k->size)
            return ld_err_set(err, LD_EINVAL, "%s: %s is too long (%zu bytes, at most %zu)",
                              where, k->name, n, k->size - 1);
        memcpy(field, value, n + 1);
        return LD_OK;
    }
    case LD_CFG_ENUM:
        for (int i = 0; k->choices[i]; i++) {
            if (strcmp(value, k->choices[i]) == 0) {
                *(int *)field = i;
                return LD_OK;
            }
        }
        {
            char list[256] = "";
            for (int i = 0; k->choices[i]; i++) {
                if (i)
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
                strncat(list, k->choices[i], sizeof list - strlen(list) - 1);
            }
            return ld_err_set(err, LD_EINVAL, "%s: %s must be one of %s, got '%s'", where,
                              k->name, list, value);
        }
    }
    return ld_err_set(err, LD_EINVAL, "%s: %s has an unknown type", where, k->name);
}

int ld_config_set(ld_config_t *c, const char *key, const char *value, const char *where,
                  ld_err_t *err)
{
    const ld_cfg_key_t *k = ld_config_key(key);
    if (!k)
        return ld_err_set(err, LD_EINVAL, "%s: unknown key '%s'", where ? where : key, key);
    return set_key(c, k, value, where, err);
}

void ld_config_defaults(ld_config_t *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < LD_ARRAY_LEN(keys); i++) {
        ld_err_t e;
        int rc = set_key(c, &keys[i], keys[i].def, NULL, &e);
        LD_ASSERT(rc == LD_OK); /* a bad default is a programmer error */
    }
}

/* Parse one line into key and value (both pointing into line, which is
 * modified). Returns 0 (key set, or *key NULL for a blank/comment line) or -1
 * with a message in err. */
static int split_line(char *line, char **key, char **value, ld_err_t *err)
{
    *key = *value = NULL;
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#')
        return 0;
    char *k = p;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-')
        p++;
    if (p == k)
        return ld_err_set(err, -1, "expected 'key = value'");
    char *kend = p;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=')
        return ld_err_set(err, -1, "expected '=' after '%.*s'", (int)(kend - k), k);
    *kend = '\0';
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    char *v = p;
    if (*p == '"') {
        /* quoted: unescape in place */
        char *w = v;
        p++;
        for (;;) {
            if (*p == '\0')
                return ld_err_set(err, -1, "unterminated quoted value for '%s'", k);
            if (*p == '"')
                break;
            if (*p == '\\') {
                p++;
                if (*p != '"' && *p != '\\')
                    return ld_err_set(err, -1, "bad escape in quoted value for '%s' (only \\\" and \\\\)", k);
            }
            *w++ = *p++;
        }
        p++; /* closing quote */
        *w = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '\0' && *p != '#')
            return ld_err_set(err, -1, "unexpected text after the quoted value of '%s'", k);
    } else {
        /* unquoted: up to a '#' that follows whitespace, trailing blanks trimmed */
        char *end = p;
        while (*end && !(*end == '#' && end > v && (end[-1] == ' ' || end[-1] == '\t')))
            end++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
    }
    *key = k;
    *value = v;
    return 0;
}

int ld_config_load(ld_config_t *c, const char *path, ld_err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return ld_err_set(err, LD_EIO, "%s: cannot open: %s", path, strerror(errno));
    int seen[LD_ARRAY_LEN(keys)] = {0}; /* line where each key was set, 0 = not yet */
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int lineno = 0;
    int rc = LD_OK;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        if (n > 4096) {
            rc = ld_err_set(err, LD_EINVAL, "%s:%d: line too long (over 4096 bytes)", path, lineno);
            break;
        }
        if (strlen(line) != n) {
            rc = ld_err_set(err, LD_EINVAL, "%s:%d: NUL byte in line", path, lineno);
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        char *key, *value;
        ld_err_t e;
        if (split_line(line, &key, &value, &e) != 0) {
            rc = ld_err_set(err, LD_EINVAL, "%s:%d: %s", path, lineno, e.msg);
            break;
        }
        if (!key)
            continue;
        const ld_cfg_key_t *k = ld_config_key(key);
        if (!k) {
            rc = ld_err_set(err, LD_EINVAL, "%s:%d: unknown key '%s'", path, lineno, key);
            break;
        }
        size_t idx = (size_t)(k - keys);
        if (seen[idx]) {
            rc = ld_err_set(err, LD_EINVAL, "%s:%d: key '%s' is already set on line %d", path,
                            lineno, key, seen[idx]);
            break;
        }
        seen[idx] = lineno;
        char where[LD_CFG_PATH_MAX + 32];
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        rc = set_key(c, k, value, where, err);
        if (rc != LD_OK)
            break;
    }
    if (rc == LD_OK && ferror(f))
        rc = ld_err_set(err, LD_EIO, "%s: read error", path);
    free(line);
    fclose(f);
    return rc;
}

char *ld_config_dump(const ld_config_t *c)
{
    ld_buf_t b = {0};
    for (size_t i = 0; i < LD_ARRAY_LEN(keys); i++) {
        const ld_cfg_key_t *k = &keys[i];
        const char *field = (const char *)c + k->offset;
        ld_buf_printf(&b, "%s = ", k->name);
        switch (k->type) {
        case LD_CFG_INT: ld_buf_printf(&b, "%d", *(const int *)field); break;
        case LD_CFG_SIZE: ld_buf_printf(&b, "%lld", *(const long long *)field); break;
        case LD_CFG_BOOL: ld_buf_puts(&b, *(const int *)field ? "yes" : "no"); break;
        case LD_CFG_ENUM: ld_buf_puts(&b, k->choices[*(const int *)field]); break;
        case LD_CFG_STR:
            ld_buf_putc(&b, '"');
            for (const char *p = field; *p; p++) {
                if (*p == '"' || *p == '\\')
                    ld_buf_putc(&b, '\\');
                ld_buf_putc(&b, *p);
            }
            ld_buf_putc(&b, '"');
            break;
        }
        ld_buf_putc(&b, '\n');
    }
    return ld_buf_steal(&b, NULL);
}

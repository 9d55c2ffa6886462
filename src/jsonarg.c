/* jsonarg.c — see include/latentd/jsonarg.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/jsonarg.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define W(where) ((where) ? (where) : "")

static const cJSON *field(const cJSON *obj, const char *name)
{
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

int ld_arg_fields(ld_req_t *req, const cJSON *obj, const char *where,
                  const char *const *allowed)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        int ok = 0;
        for (int i = 0; allowed[i] && !ok; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            char list[512] = "";
            for (int i = 0; allowed[i]; i++) {
                if (i)
                    strncat(list, ", ", sizeof list - strlen(list) - 1);
                strncat(list, allowed[i], sizeof list - strlen(list) - 1);
            }
            ld_req_error(req, 400, "invalid_field", "unknown field '%s%.100s' (known: %s)",
                         W(where), k, list);
            return -1;
        }
        for (const cJSON *d = obj->child; d != c; d = d->next) {
            if (d->string && strcmp(d->string, k) == 0) {
                ld_req_error(req, 400, "invalid_field", "field '%s%s' is given twice", W(where), k);
                return -1;
            }
        }
    }
    return 0;
}

static int check_int(ld_req_t *req, const char *where, const char *name, double v, long long min,
                     long long max, long long *out)
{
    if (!isfinite(v)) {
        ld_req_error(req, 422, "invalid_value", "%s%s must be finite", W(where), name);
        return -1;
    }
    if (v != floor(v)) {
        ld_req_error(req, 400, "invalid_field", "%s%s must be an integer, got %g", W(where), name, v);
        return -1;
    }
    if (v < (double)min || v > (double)max) {
        ld_req_error(req, 422, "invalid_value", "%s%s = %.17g is out of range [%lld, %lld]",
                     W(where), name, v, min, max);
        return -1;
    }
    *out = (long long)v;
    return 0;
}

int ld_arg_int(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
               long long min, long long max, long long def, long long *out)
{
    const cJSON *it = field(obj, name);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it)) {
        ld_req_error(req, 400, "invalid_field", "%s%s must be an integer", W(where), name);
        return -1;
    }
    return check_int(req, where, name, it->valuedouble, min, max, out);
}

static int check_number(ld_req_t *req, const char *where, const char *name, double v, double min,
                        double max, double *out)
{
    if (!isfinite(v)) {
        ld_req_error(req, 422, "invalid_value", "%s%s must be finite (no NaN or Inf)", W(where),
                     name);
        return -1;
    }
    if (v < min || v > max) {
        ld_req_error(req, 422, "invalid_value", "%s%s = %g is out of range [%g, %g]", W(where),
                     name, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int ld_arg_number(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                  double min, double max, double def, double *out)
{
    const cJSON *it = field(obj, name);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(it)) {
        ld_req_error(req, 400, "invalid_field", "%s%s must be a number", W(where), name);
        return -1;
    }
    return check_number(req, where, name, it->valuedouble, min, max, out);
}

int ld_arg_enum(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                const char *const *choices, int def, int *out)
{
    const cJSON *it = field(obj, name);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsString(it)) {
        ld_req_error(req, 400, "invalid_field", "%s%s must be a string", W(where), name);
        return -1;
    }
    for (int i = 0; choices[i]; i++) {
        if (strcmp(it->valuestring, choices[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char list[256] = "";
    for (int i = 0; choices[i]; i++) {
        if (i)
            strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    ld_req_error(req, 422, "invalid_value", "%s%s must be one of %s, got '%.60s'", W(where), name,
                 list, it->valuestring);
    return -1;
}

int ld_arg_string(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                  const char *def, const char **out)
{
    const cJSON *it = field(obj, name);
    if (!it || cJSON_IsNull(it)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsString(it)) {
        ld_req_error(req, 400, "invalid_field", "%s%s must be a string", W(where), name);
        return -1;
    }
    *out = it->valuestring;
    return 0;
}

int ld_arg_seed(ld_req_t *req, const cJSON *obj, const char *where, const char *name,
                int *present, uint64_t *out)
{
    const cJSON *it = field(obj, name);
    *present = 0;
    if (!it || cJSON_IsNull(it))
        return 0;
    if (!cJSON_IsNumber(it)) {
        ld_req_error(req, 400, "invalid_field", "%s%s must be an integer", W(where), name);
        return -1;
    }
    long long v;
    if (check_int(req, where, name, it->valuedouble, 0, (long long)LD_SEED_MAX, &v) != 0)
        return -1;
    *present = 1;
    *out = (uint64_t)v;
    return 0;
}

/* Copy one JSON array of exactly cols numbers into row. */
static int read_row(ld_req_t *req, const cJSON *arr, const char *what, int r, int flat, int cols,
                    float lo, float hi, float *row)
{
    char label[96];
    if (flat)
        snprintf(label, sizeof label, "%s", what);
    else
        snprintf(label, sizeof label, "%s[%d]", what, r);
    /* types first (400), then the length (422), then each value (422) */
    int n = 0;
    for (const cJSON *c = arr->child; c; c = c->next, n++) {
        if (!cJSON_IsNumber(c)) {
            ld_req_error(req, 400, "invalid_field", "%s[%d] must be a number", label, n);
            return -1;
        }
    }
    if (n != cols) {
        ld_req_error(req, 422, "invalid_value", "%s has %d values; expected %d", label, n, cols);
        return -1;
    }
    int i = 0;
    for (const cJSON *c = arr->child; c; c = c->next, i++) {
        double v = c->valuedouble;
        if (!isfinite(v) || !isfinite((float)v)) {
            ld_req_error(req, 422, "invalid_value", "%s[%d] is not finite (NaN or Inf)", label, i);
            return -1;
        }
        if (v < lo || v > hi) {
            ld_req_error(req, 422, "invalid_value", "%s[%d] = %g is outside [%g, %g]", label, i, v,
                         (double)lo, (double)hi);
            return -1;
        }
        row[i] = (float)v;
    }
    return 0;
}

int ld_arg_matrix(ld_req_t *req, const cJSON *item, const char *what, int cols, int max_rows,
                  int flat_ok, float lo, float hi, float **out, int *rows)
{
    if (!cJSON_IsArray(item)) {
        ld_req_error(req, 400, "invalid_field", "%s must be an array%s", what,
                     flat_ok ? " of numbers or of arrays of numbers" : " of arrays of numbers");
        return -1;
    }
    int n = cJSON_GetArraySize(item);
    if (n == 0) {
        ld_req_error(req, 422, "invalid_value", "%s is empty", what);
        return -1;
    }
    int flat = flat_ok && cJSON_IsNumber(item->child);
    int nrows = flat ? 1 : n;
    if (nrows > max_rows) {
        ld_req_error(req, 422, "invalid_value", "%s has %d rows; at most %d (max_samples)", what,
                     nrows, max_rows);
        return -1;
    }
    float *x = ld_malloc_array((size_t)nrows * (size_t)cols, sizeof *x);
    if (!x) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    if (flat) {
        if (read_row(req, item, what, 0, 1, cols, lo, hi, x) != 0)
            goto fail;
    } else {
        int r = 0;
        for (const cJSON *c = item->child; c; c = c->next, r++) {
            if (!cJSON_IsArray(c)) {
                ld_req_error(req, 400, "invalid_field", "%s[%d] must be an array of numbers", what,
                             r);
                goto fail;
            }
            if (read_row(req, c, what, r, 0, cols, lo, hi, x + (size_t)r * (size_t)cols) != 0)
                goto fail;
        }
    }
    *out = x;
    *rows = nrows;
    return 0;
fail:
    free(x);
    return -1;
}

/* ---- query string ---- */

static int parse_double(const char *s, double *out)
{
    if (!*s)
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno == ERANGE && isfinite(v))
        errno = 0; /* underflow to 0 is fine */
    if (end == s || *end || errno)
        return -1;
    *out = v;
    return 0;
}

/* Query parameter name as a number: 1 with *v set, 0 when absent, -1 after
 * answering 400 (what: "an integer", "a number"). */
static int qarg_parse(ld_req_t *req, const char *name, const char *what, double *v)
{
    const char *s = ld_req_query(req, name);
    if (!s)
        return 0;
    if (parse_double(s, v) != 0) {
        ld_req_error(req, 400, "invalid_field", "query parameter %s must be %s, got '%.40s'", name,
                     what, s);
        return -1;
    }
    return 1;
}

int ld_qarg_int(ld_req_t *req, const char *name, long long min, long long max, long long def,
                long long *out)
{
    double v;
    int r = qarg_parse(req, name, "an integer", &v);
    if (r <= 0) {
        *out = def;
        return r;
    }
    return check_int(req, NULL, name, v, min, max, out);
}

int ld_qarg_number(ld_req_t *req, const char *name, double min, double max, double def,
                   double *out)
{
    double v;
    int r = qarg_parse(req, name, "a number", &v);
    if (r <= 0) {
        *out = def;
        return r;
    }
    return check_number(req, NULL, name, v, min, max, out);
}

int ld_qarg_seed(ld_req_t *req, const char *name, int *present, uint64_t *out)
{
    long long v;
    *present = ld_req_query(req, name) != NULL;
    if (!*present)
        return 0;
    if (ld_qarg_int(req, name, 0, (long long)LD_SEED_MAX, 0, &v) != 0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

struct qcheck {
    ld_req_t *req;
    const char *const *allowed;
    int bad;
};

static int qcheck_cb(void *ctx, const char *k, const char *v)
{
    struct qcheck *q = ctx;
    for (int i = 0; q->allowed[i]; i++)
        if (strcmp(k, q->allowed[i]) == 0)
            return 0;
    ld_req_error(q->req, 400, "invalid_field", "unknown query parameter '%.60s'", k);
    q->bad = 1;
    return 1;
}

int ld_qarg_fields(ld_req_t *req, const char *const *allowed)
{
    struct qcheck q = {req, allowed, 0};
    ld_req_query_each(req, qcheck_cb, &q);
    return q.bad ? -1 : 0;
}

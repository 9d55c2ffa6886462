/* jsonarg.c — see include/latentd/jsonarg.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/jsonarg.h"

#include "latentd/arena.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define W(a) ((a)->where ? (a)->where : "")

ld_args_t ld_args_json(ld_req_t *req, const cJSON *obj, const char *where)
{
    return (ld_args_t){.req = req, .obj = obj, .query = 0, .where = where};
}

ld_args_t ld_args_query(ld_req_t *req)
{
    return (ld_args_t){.req = req, .obj = NULL, .query = 1, .where = NULL};
}

/* The overlong NUL that src/arena.c leaves for a \u0000 escape, or a raw one. */
static int has_nul(const char *s)
{
    return strstr(s, "\xC0\x80") != NULL;
}

static void nul_error(ld_req_t *req, const char *prefix, const char *what)
{
    ld_req_error(req, 422, "invalid_value", "%s%.100s contains a NUL character (\\u0000)", prefix,
                 what);
}

/* ---- names ---- */

struct names {
    const ld_args_t *a;
    const char *const *allowed;
    const char *seen[64]; /* query keys so far (points into the request) */
    int n_seen;
    int bad;
};

/* 0 if name k (seen before: dup) may be given, else answered and -1. */
static int check_name(const ld_args_t *a, const char *const *allowed, const char *k, int dup)
{
    const char *kind = a->query ? "query parameter" : "field";
    if (has_nul(k)) {
        ld_req_error(a->req, 422, "invalid_value", "a %s name contains a NUL character (\\u0000)",
                     kind);
        return -1;
    }
    int ok = 0;
    for (int i = 0; allowed && allowed[i] && !ok; i++)
        ok = strcmp(k, allowed[i]) == 0;
    if (!ok) {
        char list[512] = "";
        for (int i = 0; allowed && allowed[i]; i++) {
            if (i)
                strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, allowed[i], sizeof list - strlen(list) - 1);
        }
        ld_req_error(a->req, 400, "invalid_field", "unknown %s '%s%.100s' (known: %s)", kind, W(a),
                     k, list[0] ? list : "none");
        return -1;
    }
    if (dup) {
        ld_req_error(a->req, 400, "invalid_field", "%s '%s%.100s' is given twice", kind, W(a), k);
        return -1;
    }
    return 0;
}

static int query_name_cb(void *ctx, const char *k, const char *v)
{
    struct names *q = ctx;
    int dup = 0;
    for (int i = 0; i < q->n_seen && !dup; i++)
        dup = strcmp(q->seen[i], k) == 0;
    if (check_name(q->a, q->allowed, k, dup) != 0) {
        q->bad = 1;
        return 1;
    }
    if (!v || !*v) {
        ld_req_error(q->a->req, 400, "invalid_field", "query parameter '%.100s' has no value", k);
        q->bad = 1;
        return 1;
    }
    if (q->n_seen < (int)LD_ARRAY_LEN(q->seen))
        q->seen[q->n_seen++] = k;
    return 0;
}

int ld_arg_fields(const ld_args_t *a, const char *const *allowed)
{
    if (a->query) {
        struct names q = {.a = a, .allowed = allowed};
        ld_req_query_each(a->req, query_name_cb, &q);
        return q.bad ? -1 : 0;
    }
    if (!a->obj)
        return 0;
    for (const cJSON *c = a->obj->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        int dup = 0;
        for (const cJSON *d = a->obj->child; d != c && !dup; d = d->next)
            dup = d->string && strcmp(d->string, k) == 0;
        if (check_name(a, allowed, k, dup) != 0)
            return -1;
    }
    return 0;
}

/* ---- values ---- */

/* One argument's value: absent, a JSON item, or query text. */
typedef struct {
    const cJSON *item; /* JSON: the item (never null) */
    const char *text;  /* query: the value */
} val_t;

/* 1 with *v set, 0 when absent (or JSON null). */
static int lookup(const ld_args_t *a, const char *name, val_t *v)
{
    v->item = NULL;
    v->text = NULL;
    if (a->query) {
        v->text = ld_req_query(a->req, name);
        return v->text != NULL;
    }
    v->item = a->obj ? cJSON_GetObjectItemCaseSensitive(a->obj, name) : NULL;
    return v->item && !cJSON_IsNull(v->item);
}

/* The value as a number: 0, or answered 400 naming what was expected. */
static int as_number(const ld_args_t *a, const char *name, const val_t *v, const char *what,
                     double *out)
{
    if (v->item) {
        if (!cJSON_IsNumber(v->item)) {
            ld_req_error(a->req, 400, "invalid_field", "%s%s must be %s", W(a), name, what);
            return -1;
        }
        *out = v->item->valuedouble;
        return 0;
    }
    size_t n = strlen(v->text);
    if (n == 0 || ld_json_number_len(v->text, n) != n) {
        ld_req_error(a->req, 400, "invalid_field",
                     "query parameter %s must be %s, got '%.40s'", name, what,
                     v->text);
        return -1;
    }
    errno = 0;
    *out = strtod(v->text, NULL); /* a JSON number: strtod reads all of it */
    if (errno == ERANGE && isfinite(*out))
        errno = 0; /* underflow to 0 is fine */
    if (errno)
        *out = INFINITY; /* too large: "must be finite" below */
    return 0;
}

/* The value as a string without NUL: 0, or answered and -1. */
static int as_string(const ld_args_t *a, const char *name, const val_t *v, const char **out)
{
    if (v->item) {
        if (!cJSON_IsString(v->item)) {
            ld_req_error(a->req, 400, "invalid_field", "%s%s must be a string", W(a), name);
            return -1;
        }
        *out = v->item->valuestring;
    } else {
        *out = v->text;
    }
    if (has_nul(*out)) {
        nul_error(a->req, W(a), name);
        return -1;
    }
    return 0;
}

static int check_int(const ld_args_t *a, const char *name, double v, long long min, long long max,
                     long long *out)
{
    if (!isfinite(v)) {
        ld_req_error(a->req, 422, "invalid_value", "%s%s must be finite", W(a), name);
        return -1;
    }
    if (v != floor(v)) {
        ld_req_error(a->req, 400, "invalid_field", "%s%s must be an integer, got %g", W(a), name, v);
        return -1;
    }
    if (v < (double)min || v > (double)max) {
        ld_req_error(a->req, 422, "invalid_value", "%s%s = %.17g is out of range [%lld, %lld]",
                     W(a), name, v, min, max);
        return -1;
    }
    *out = (long long)v;
    return 0;
}

static int check_number(const ld_args_t *a, const char *name, double v, double min, double max,
                        double *out)
{
    if (!isfinite(v)) {
        ld_req_error(a->req, 422, "invalid_value", "%s%s must be finite (no NaN or Inf)", W(a),
                     name);
        return -1;
    }
    if (v < min || v > max) {
        ld_req_error(a->req, 422, "invalid_value", "%s%s = %g is out of range [%g, %g]", W(a),
                     name, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}


int ld_arg_int(const ld_args_t *a, const char *name, long long min, long long max, long long def,
               long long *out)
{
    val_t v;
    double d;
    *out = def;
    if (!lookup(a, name, &v))
        return 0;
    if (as_number(a, name, &v, "an integer", &d) != 0)
        return -1;
    return check_int(a, name, d, min, max, out);
}

int ld_arg_number(const ld_args_t *a, const char *name, double min, double max, double def,
                  double *out)
{
    val_t v;
    double d;
    *out = def;
    if (!lookup(a, name, &v))
        return 0;
    if (as_number(a, name, &v, "a number", &d) != 0)
        return -1;
    return check_number(a, name, d, min, max, out);
}

int ld_arg_enum(const ld_args_t *a, const char *name, const char *const *choices, int def,
                int *out)
{
    val_t v;
    const char *s;
    *out = def;
    if (!lookup(a, name, &v))
        return 0;
    if (as_string(a, name, &v, &s) != 0)
        return -1;
    for (int i = 0; choices[i]; i++) {
        if (strcmp(s, choices[i]) == 0) {
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
    ld_req_error(a->req, 422, "invalid_value", "%s%s must be one of %s, got '%.60s'", W(a), name,
                 list, s);
    return -1;
}

int ld_arg_string(const ld_args_t *a, const char *name, const char *def, const char **out)
{
    val_t v;
    *out = def;
    if (!lookup(a, name, &v))
        return 0;
    return as_string(a, name, &v, out);
}

int ld_arg_seed(const ld_args_t *a, const char *name, int *present, uint64_t *out)
{
    val_t v;
    double d;
    long long s;
    *present = 0;
    if (!lookup(a, name, &v))
        return 0;
    if (as_number(a, name, &v, "an integer", &d) != 0 ||
        check_int(a, name, d, 0, (long long)LD_SEED_MAX, &s) != 0)
        return -1;
    *present = 1;
    *out = (uint64_t)s;
    return 0;
}

int ld_arg_text(ld_req_t *req, const cJSON *item, const char *what, const char **out)
{
    if (!cJSON_IsString(item)) {
        ld_req_error(req, 400, "invalid_field", "%s must be a string", what);
        return -1;
    }
    if (has_nul(item->valuestring)) {
        nul_error(req, "", what);
        return -1;
    }
    *out = item->valuestring;
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

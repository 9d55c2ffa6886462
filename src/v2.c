/* v2.c — see include/latentd/v2.h.
 *
 * An infer request is read into an infer_t (the validated inputs and the
 * outputs asked for), computed with the calls /v1 uses, and answered from
 * the request's HTTP thread.  A decode goes to the served model's batcher
 * with ld_batch_submit: while it is queued the connection is suspended and
 * the infer_t belongs to the continuation (infer_cont), which answers and
 * frees it.
 */
#define _POSIX_C_SOURCE 200809L
#include "latentd/v2.h"

#include "api_impl.h"
#include "scan_impl.h"

#include "latentd/batch.h"
#include "latentd/buf.h"
#include "latentd/jsonarg.h"
#include "latentd/model.h"
#include "latentd/registry.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef LD_VERSION
#define LD_VERSION "0.1.0"
#endif

#define JSON_DEPTH_MAX 100
#define TEMPERATURE_MAX 10.0 /* as /v1 sample */
#define DIMS_MAX 3

/* ---------------------------------------------------------------- tensors */

enum { T_Z, T_IMAGES, T_MU, T_LOGVAR, T_LABELS, T_COUNT };
static const char *const tensor_name[T_COUNT] = {"z", "images", "mu", "logvar", "labels"};

/* A model is conditional when it takes class labels (cgan, cvae). */
static int conditional(const ld_arch_t *a)
{
    return ld_kind_ops(a->kind)->conditional;
}

static int is_input(const ld_arch_t *a, int t)
{
    switch (t) {
    case T_Z: return ld_kind_ops(a->kind)->decode_net >= 0;
    case T_IMAGES: return ld_kind_ops(a->kind)->encode_net >= 0;
    case T_LABELS: return conditional(a);
    default: return 0;
    }
}

static int is_output(const ld_arch_t *a, int t)
{
    switch (t) {
    case T_IMAGES: return ld_kind_ops(a->kind)->decode_net >= 0;
    case T_MU:
    case T_LOGVAR: return ld_kind_ops(a->kind)->encode_net >= 0;
    default: return 0;
    }
}

/* Shape of tensor t for n rows (n = -1 in metadata); its rank. */
static int tensor_shape(const ld_arch_t *a, int t, long long n, long long *dims)
{
    dims[0] = n;
    switch (t) {
    case T_IMAGES: dims[1] = a->img_h; dims[2] = a->img_w; return 3;
    case T_LABELS: return 1;
    default: dims[1] = a->z_dim; return 2;
    }
}

static const char *tensor_type(int t)
{
    return t == T_LABELS ? "INT32" : "FP32";
}

static int tensor_find(const char *name)
{
    for (int t = 0; t < T_COUNT; t++)
        if (strcmp(name, tensor_name[t]) == 0)
            return t;
    return -1;
}

/* ----------------------------------------------------------------- models */

/* The model of the route's {name} (and {version}, if the route has one),
 * with a reference; NULL after answering 404. */
static ld_served_t *get_model(ld_req_t *req, const ld_api_opts_t *o)
{
    const char *ver = ld_req_param(req, "version");
    ld_served_t *s = ld_api_get_model(req, o->registry);
    if (s && ver) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(ver, &end, 10);
        if (errno || end == ver || *end || ver[0] == '-' || v != s->version) {
            ld_req_error(req, 404, "version_not_found",
                         "model '%s' has no version '%.40s' (it serves version %llu)", s->name,
                         ver, (unsigned long long)s->version);
            ld_served_release(s);
            return NULL;
        }
    }
    return s;
}

static void tensor_meta(ld_buf_t *b, const ld_arch_t *a, int t)
{
    long long dims[DIMS_MAX];
    int rank = tensor_shape(a, t, -1, dims);
    ld_buf_puts(b, "{\"name\":");
    ld_buf_json_str(b, tensor_name[t]);
    ld_buf_printf(b, ",\"datatype\":\"%s\",\"shape\":[", tensor_type(t));
    for (int d = 0; d < rank; d++) {
        if (d)
            ld_buf_putc(b, ',');
        ld_buf_int(b, dims[d]);
    }
    ld_buf_puts(b, "]}");
}

static void tensor_list(ld_buf_t *b, const ld_arch_t *a, int (*has)(const ld_arch_t *, int))
{
    ld_buf_putc(b, '[');
    int k = 0;
    for (int t = 0; t < T_COUNT; t++) {
        if (!has(a, t))
            continue;
        if (k++)
            ld_buf_putc(b, ',');
        tensor_meta(b, a, t);
    }
    ld_buf_putc(b, ']');
}

/* ----------------------------------------------------------------- health */

static void h_live(ld_req_t *req, void *ctx)
{
    ld_req_reply_copy(req, 200, NULL, "", 0);
}

static void h_ready(ld_req_t *req, void *ctx)
{
    ld_http_t *h = ld_req_server(req);
    int ok = ld_http_is_ready(h) && !ld_http_is_draining(h);
    ld_req_reply_copy(req, ok ? 200 : 400, NULL, "", 0);
}

static void h_server(ld_req_t *req, void *ctx)
{
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"name\":\"latentd\",\"version\":\"" LD_VERSION
                    "\",\"extensions\":[\"binary_tensor_data\"]}");
    ld_req_reply_json(req, 200, &b);
}

static void h_model(ld_req_t *req, void *ctx)
{
    ld_served_t *s = get_model(req, ctx);
    if (!s)
        return;
    const ld_arch_t *a = &s->model->arch;
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"name\":");
    ld_buf_json_str(&b, s->name);
    ld_buf_printf(&b, ",\"versions\":[\"%llu\"],\"platform\":\"latentd\",\"inputs\":",
                  (unsigned long long)s->version);
    tensor_list(&b, a, is_input);
    ld_buf_puts(&b, ",\"outputs\":");
    tensor_list(&b, a, is_output);
    ld_buf_putc(&b, '}');
    ld_served_release(s);
    ld_req_reply_json(req, 200, &b);
}

static void h_model_ready(ld_req_t *req, void *ctx)
{
    ld_served_t *s = get_model(req, ctx);
    if (!s)
        return;
    ld_served_release(s);
    ld_req_reply_copy(req, 200, NULL, "", 0);
}

/* ------------------------------------------------------------------ infer */

typedef struct {
    ld_served_t *s;       /* a reference of its own */
    ld_req_t *req;        /* for the batcher's wake */
    const ld_api_opts_t *o;
    char *id;             /* echoed; malloc'd, NULL when not given */
    int n;                /* rows */
    int n_out;
    int out[T_COUNT];     /* outputs in the order asked */
    int out_bin[T_COUNT]; /* ... and whether each goes as binary */
    int sampled;          /* z was drawn from seed and temperature */
    uint64_t seed;
    double temperature;
    float *z;             /* (n, z_dim): given or drawn (images decode from mu) */
    float *x;             /* (n, x_dim): images given */
    float *mu, *logvar;   /* (n, z_dim) when encoded */
    float *dec;           /* (n, x_dim): decoded images, when asked; inside ans when
                             ans is set, else malloc'd */
    char *ans;            /* the whole answer written before the decode when the
                             images go out binary (infer_prebuild), else NULL */
    size_t ans_len, ans_jlen;
    uint8_t *labels;      /* (n) a conditional model's classes, or NULL */
} infer_t;

static void infer_free(infer_t *j)
{
    if (!j)
        return;
    ld_served_release(j->s);
    free(j->id);
    free(j->z);
    free(j->x);
    free(j->mu);
    free(j->logvar);
    if (!j->ans)
        free(j->dec);
    free(j->ans);
    free(j->labels);
    free(j);
}

/* 1 if no array or object in j is nested deeper than JSON_DEPTH_MAX: no
 * request needs more than a few levels, and the limit bounds the recursion
 * of everything that walks the tree. */
static int depth_ok(const cJSON *j, int depth)
{
    if (depth > JSON_DEPTH_MAX)
        return 0;
    for (const cJSON *c = j->child; c; c = c->next)
        if ((cJSON_IsArray(c) || cJSON_IsObject(c)) && !depth_ok(c, depth + 1))
            return 0;
    return 1;
}

/* A non-negative integer of a JSON tensor shape or size. */
static int read_count(ld_req_t *req, const cJSON *v, const char *what, const char *name,
                      unsigned long long *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)) {
        ld_req_error(req, 400, "invalid_field", "%s of input '%s' must be integers", what, name);
        return -1;
    }
    if (v->valuedouble < 0) {
        ld_req_error(req, 400, "invalid_field", "%s of input '%s' is negative (%.0f)", what, name,
                     v->valuedouble);
        return -1;
    }
    if (v->valuedouble > (double)LD_SEED_MAX) {
        ld_req_error(req, 400, "invalid_field", "%s of input '%s' is too large (%.17g)", what,
                     name, v->valuedouble);
        return -1;
    }
    *out = (unsigned long long)v->valuedouble;
    return 0;
}

/* Copy the numbers of data (flat, or nested along shape) into f or i32
 * (count values, row-major).  An array of numbers at depth d holds the
 * product of dims[d..] values; an array of arrays, dims[d] of them. */
static int read_nested(ld_req_t *req, const char *name, const cJSON *arr, const long long *dims,
                       int rank, int d, int is_int, float *f, int32_t *i32, size_t *k)
{
    if (!cJSON_IsArray(arr)) {
        ld_req_error(req, 400, "invalid_field", "data of input '%s' must be an array of numbers",
                     name);
        return -1;
    }
    long long want = 1;
    for (int e = d; e < rank; e++)
        want *= dims[e];
    int size = cJSON_GetArraySize(arr);
    int nested = arr->child && cJSON_IsArray(arr->child);
    if (nested ? (d + 1 >= rank || size != dims[d]) : size != want) {
        ld_req_error(req, 400, "invalid_field",
                     "data of input '%s' does not match its shape: %d %s at depth %d, "
                     "%lld expected",
                     name, size, nested ? "arrays" : "values", d, nested ? dims[d] : want);
        return -1;
    }
    for (const cJSON *c = arr->child; c; c = c->next) {
        if (nested) {
            if (read_nested(req, name, c, dims, rank, d + 1, is_int, f, i32, k) != 0)
                return -1;
            continue;
        }
        double v = c->valuedouble;
        if (!cJSON_IsNumber(c) || (is_int ? v != floor(v) || fabs(v) > INT32_MAX
                                          : !isfinite(v) || fabs(v) > FLT_MAX)) {
            ld_req_error(req, 400, "invalid_field",
                         "data of input '%s' must hold %s values only (value %zu)", name,
                         is_int ? "INT32" : "finite FP32", *k);
            return -1;
        }
        if (is_int)
            i32[(*k)++] = (int32_t)v;
        else
            f[(*k)++] = (float)v;
    }
    return 0;
}

/* The request's binary part, read in input order. */
typedef struct {
    const uint8_t *p;
    size_t len, off;
} bin_t;

/* One input tensor: its checks, then its values into a new array (*out,
 * count values of 4 bytes).  *n its rows. */
static int read_input(ld_req_t *req, infer_t *j, const cJSON *in, int t, bin_t *bin, void **out,
                      int *n)
{
    static const char *const fields[] = {"name", "datatype", "shape", "parameters", "data", NULL};
    static const char *const pfields[] = {"binary_data_size", NULL};
    const ld_arch_t *a = &j->s->model->arch;
    const char *name = tensor_name[t];
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(in, "datatype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(in, "shape");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(in, "data");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(in, "parameters");
    ld_args_t args = ld_args_json(req, in, "input.");
    if (ld_arg_fields(&args, fields) != 0)
        return -1;
    if (!cJSON_IsString(dt) || strcmp(dt->valuestring, tensor_type(t)) != 0) {
        ld_req_error(req, 400, "invalid_field", "input '%s' has datatype %.20s; it must be %s",
                     name, cJSON_IsString(dt) ? dt->valuestring : "(none)", tensor_type(t));
        return -1;
    }
    long long want[DIMS_MAX], dims[DIMS_MAX];
    int rank = tensor_shape(a, t, 0, want);
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) != rank) {
        ld_req_error(req, 400, "invalid_field", "shape of input '%s' must be %d integers", name,
                     rank);
        return -1;
    }
    /* every dimension valid and their product countable, before comparing */
    unsigned long long count = 1;
    int d = 0;
    for (const cJSON *c = sh->child; c; c = c->next, d++) {
        unsigned long long v;
        if (read_count(req, c, "shape", name, &v) != 0)
            return -1;
        if (__builtin_mul_overflow(count, v, &count) || count > (unsigned long long)LD_SEED_MAX) {
            ld_req_error(req, 400, "invalid_field",
                         "shape of input '%s' has more elements than can be counted", name);
            return -1;
        }
        dims[d] = (long long)v;
    }
    for (d = 1; d < rank; d++)
        if (dims[d] != want[d]) {
            ld_req_error(req, 400, "invalid_field",
                         "shape of input '%s' is wrong at dimension %d: %lld, model '%s' needs "
                         "%lld",
                         name, d, dims[d], j->s->name, want[d]);
            return -1;
        }
    if (dims[0] < 1 || dims[0] > j->o->max_samples) {
        ld_req_error(req, 400, "invalid_field",
                     "input '%s' has %lld rows; 1 to %d (max_samples) are served", name, dims[0],
                     j->o->max_samples);
        return -1;
    }
    unsigned long long size = 0;
    int binary = 0;
    if (par) {
        if (!cJSON_IsObject(par)) {
            ld_req_error(req, 400, "invalid_field", "parameters of input '%s' must be an object",
                         name);
            return -1;
        }
        ld_args_t pargs = ld_args_json(req, par, "input.parameters.");
        if (ld_arg_fields(&pargs, pfields) != 0)
            return -1;
        const cJSON *bs = cJSON_GetObjectItemCaseSensitive(par, "binary_data_size");
        if (bs && read_count(req, bs, "binary_data_size", name, &size) != 0)
            return -1;
        binary = bs != NULL;
    }
    if (binary == (data != NULL)) {
        ld_req_error(req, 400, "invalid_field",
                     "input '%s' needs exactly one of data and parameters.binary_data_size", name);
        return -1;
    }
    void *v = ld_malloc_array((size_t)count, 4);
    if (!v) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    int is_int = t == T_LABELS;
    if (binary) {
        if (size != count * 4 || size > bin->len - bin->off) {
            ld_req_error(req, 400, "invalid_field",
                         "input '%s': binary_data_size is %llu bytes; its shape needs %llu, and "
                         "%zu binary bytes are left in the body",
                         name, size, count * 4, bin->len - bin->off);
            free(v);
            return -1;
        }
        /* the extension's byte order is little-endian, as on every host we build for */
        memcpy(v, bin->p + bin->off, (size_t)size);
        bin->off += (size_t)size;
        if (!is_int && !ld_api_all_finite(v, (size_t)count)) {
            ld_req_error(req, 400, "invalid_field", "input '%s' holds values that are not finite",
                         name);
            free(v);
            return -1;
        }
    } else {
        size_t k = 0;
        if (read_nested(req, name, data, dims, rank, 0, is_int, v, v, &k) != 0) {
            free(v);
            return -1;
        }
    }
    *out = v;
    *n = (int)dims[0];
    return 0;
}

/* A conditional model's labels (n), each in [0, classes), into j->labels. */
static int read_labels(ld_req_t *req, infer_t *j, const int32_t *labels, int n)
{
    const ld_model_t *m = j->s->model;
    if (!conditional(&m->arch)) {
        ld_req_error(req, 400, "invalid_field",
                     "model '%s' is not conditional: it takes no 'labels' input", j->s->name);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= m->arch.n_classes) {
            char list[2048];
            ld_model_class_list(m, list, sizeof list);
            ld_req_error(req, 400, "invalid_field", "labels[%d] = %d is no class of model '%s' "
                         "(%s)", i, labels[i], j->s->name, list);
            return -1;
        }
    if (!(j->labels = malloc((size_t)(n > 0 ? n : 1)))) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++)
        j->labels[i] = (uint8_t)labels[i];
    return 0;
}

/* The request's parameters: sampling (without inputs) and binary output. */
static int read_params(ld_req_t *req, infer_t *j, const cJSON *par, int has_inputs, int *bin_out,
                       int *seeded)
{
    static const char *const fields[] = {"seed", "n", "temperature", "binary_data_output", NULL};
    *bin_out = *seeded = 0;
    j->n = 1;
    j->temperature = 1.0;
    if (!par)
        return 0;
    if (!cJSON_IsObject(par)) {
        ld_req_error(req, 400, "invalid_field", "parameters must be an object");
        return -1;
    }
    long long n;
    ld_args_t pa = ld_args_json(req, par, "parameters.");
    if (ld_arg_fields(&pa, fields) != 0 ||
        ld_arg_int(&pa, "n", 1, j->o->max_samples, 1, &n) != 0 ||
        ld_arg_seed(&pa, "seed", seeded, &j->seed) != 0 ||
        ld_arg_number(&pa, "temperature", 0, TEMPERATURE_MAX, 1.0, &j->temperature) != 0)
        return -1;
    j->n = (int)n;
    const cJSON *bo = cJSON_GetObjectItemCaseSensitive(par, "binary_data_output");
    if (bo && !cJSON_IsBool(bo)) {
        ld_req_error(req, 400, "invalid_field", "parameters.binary_data_output must be a boolean");
        return -1;
    }
    *bin_out = cJSON_IsTrue(bo);
    if (has_inputs && (cJSON_GetObjectItemCaseSensitive(par, "seed") ||
                       cJSON_GetObjectItemCaseSensitive(par, "n") ||
                       cJSON_GetObjectItemCaseSensitive(par, "temperature"))) {
        ld_req_error(req, 400, "invalid_field",
                     "parameters seed, n and temperature draw z: they go without inputs");
        return -1;
    }
    return 0;
}

/* The outputs asked for, or the defaults for what was given. */
static int read_outputs(ld_req_t *req, infer_t *j, const cJSON *outs, int from_images,
                        int bin_out)
{
    static const char *const fields[] = {"name", "parameters", NULL};
    static const char *const pfields[] = {"binary_data", NULL};
    const ld_arch_t *a = &j->s->model->arch;
    if (!outs) {
        if (from_images) {
            j->out[j->n_out++] = T_MU;
            j->out[j->n_out++] = T_LOGVAR;
        } else {
            j->out[j->n_out++] = T_IMAGES;
        }
        for (int i = 0; i < j->n_out; i++)
            j->out_bin[i] = bin_out;
        return 0;
    }
    if (!cJSON_IsArray(outs) || cJSON_GetArraySize(outs) == 0) {
        ld_req_error(req, 400, "invalid_field", "outputs must be a non-empty array of objects");
        return -1;
    }
    for (const cJSON *o = outs->child; o; o = o->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
        if (!cJSON_IsObject(o) || !cJSON_IsString(nm)) {
            ld_req_error(req, 400, "invalid_field", "each output must be an object with a name");
            return -1;
        }
        ld_args_t args = ld_args_json(req, o, "output.");
        if (ld_arg_fields(&args, fields) != 0)
            return -1;
        int t = tensor_find(nm->valuestring);
        if (t < 0 || !is_output(a, t)) {
            ld_req_error(req, 400, "invalid_field", "model '%s' has no output '%.64s'", j->s->name,
                         nm->valuestring);
            return -1;
        }
        if (!from_images && t != T_IMAGES) {
            ld_req_error(req, 400, "invalid_field",
                         "output '%s' needs the input 'images'; from z only 'images' is made",
                         tensor_name[t]);
            return -1;
        }
        for (int i = 0; i < j->n_out; i++)
            if (j->out[i] == t) {
                ld_req_error(req, 400, "invalid_field", "output '%s' is asked for twice",
                             tensor_name[t]);
                return -1;
            }
        int bin = bin_out;
        const cJSON *par = cJSON_GetObjectItemCaseSensitive(o, "parameters");
        if (par) {
            const cJSON *bd = cJSON_GetObjectItemCaseSensitive(par, "binary_data");
            if (!cJSON_IsObject(par) || (bd && !cJSON_IsBool(bd))) {
                ld_req_error(req, 400, "invalid_field",
                             "parameters of output '%s' must be {\"binary_data\": true|false}",
                             tensor_name[t]);
                return -1;
            }
            ld_args_t pargs = ld_args_json(req, par, "output.parameters.");
            if (ld_arg_fields(&pargs, pfields) != 0)
                return -1;
            if (bd)
                bin = cJSON_IsTrue(bd);
        }
        j->out_bin[j->n_out] = bin;
        j->out[j->n_out++] = t;
    }
    return 0;
}

static const float *output_data(const infer_t *j, int t)
{
    return t == T_IMAGES ? j->dec : t == T_MU ? j->mu : j->logvar;
}

static size_t output_count(const infer_t *j, int t)
{
    const ld_arch_t *a = &j->s->model->arch;
    return (size_t)j->n * (size_t)(t == T_IMAGES ? a->x_dim : a->z_dim);
}

/* The answer's JSON head into b (the outputs' data for those that go as
 * JSON, so those must be computed); *any_bin: some output goes as binary.
 * Reserves room for the whole answer at once (at most 17 bytes a JSON value
 * and its comma, see ld_buf_json_floats): no copying as the buffer grows. */
static void infer_head(ld_buf_t *b, const infer_t *j, int *any_bin)
{
    const ld_arch_t *a = &j->s->model->arch;
    size_t room = 512 + (j->id ? 6 * strlen(j->id) : 0);
    for (int i = 0; i < j->n_out; i++)
        room += output_count(j, j->out[i]) * (j->out_bin[i] ? 4 : 17);
    ld_buf_reserve(b, room);
    ld_buf_puts(b, "{\"model_name\":");
    ld_buf_json_str(b, j->s->name);
    /* no printf on this path: glibc sends it down its slow positional
     * path in this process (see ld_fmt_u64) */
    char ver[24];
    ld_fmt_u64(ver, (unsigned long long)j->s->version);
    ld_buf_puts(b, ",\"model_version\":\"");
    ld_buf_puts(b, ver);
    ld_buf_putc(b, '"');
    if (j->id) {
        ld_buf_puts(b, ",\"id\":");
        ld_buf_json_str(b, j->id);
    }
    if (j->sampled)
        ld_buf_printf(b, ",\"parameters\":{\"seed\":%llu,\"temperature\":%.15g}",
                      (unsigned long long)j->seed, j->temperature);
    ld_buf_puts(b, ",\"outputs\":[");
    *any_bin = 0;
    for (int i = 0; i < j->n_out; i++) {
        int t = j->out[i];
        long long dims[DIMS_MAX];
        int rank = tensor_shape(a, t, j->n, dims);
        size_t count = output_count(j, t);
        if (i)
            ld_buf_putc(b, ',');
        ld_buf_puts(b, "{\"name\":");
        ld_buf_json_str(b, tensor_name[t]);
        ld_buf_puts(b, ",\"datatype\":\"");
        ld_buf_puts(b, tensor_type(t));
        ld_buf_puts(b, "\",\"shape\":[");
        for (int d = 0; d < rank; d++) {
            if (d)
                ld_buf_putc(b, ',');
            ld_buf_int(b, dims[d]);
        }
        ld_buf_putc(b, ']');
        if (j->out_bin[i]) {
            ld_buf_puts(b, ",\"parameters\":{\"binary_data_size\":");
            ld_buf_int(b, (long long)(count * 4));
            ld_buf_puts(b, "}}");
            *any_bin = 1;
        } else {
            ld_buf_puts(b, ",\"data\":");
            ld_buf_json_floats(b, output_data(j, t), count);
            ld_buf_putc(b, '}');
        }
    }
    ld_buf_puts(b, "]}");
}

/* When the images go out binary, everything else in the answer is known
 * before the decode: write it all into j->ans now, with room for the
 * images where they go, and point j->dec there, so the batcher decodes
 * straight into the answer (no buffer of their own, no copy).  The head is
 * padded with spaces, which JSON allows after the value, so that the binary
 * part starts float-aligned.  0, or -1 out of memory. */
static int infer_prebuild(infer_t *j)
{
    int img = -1;
    for (int i = 0; i < j->n_out; i++)
        if (j->out[i] == T_IMAGES)
            img = i;
    if (img < 0 || !j->out_bin[img])
        return 0;
    ld_buf_t b = {0};
    int any_bin;
    infer_head(&b, j, &any_bin);
    while (b.len % sizeof(float))
        ld_buf_putc(&b, ' ');
    j->ans_jlen = b.len;
    size_t off = 0;
    for (int i = 0; i < j->n_out; i++) {
        if (!j->out_bin[i])
            continue;
        size_t bytes = output_count(j, j->out[i]) * 4;
        if (i == img) { /* its bytes come from the decode */
            off = b.len;
            if (ld_buf_reserve(&b, bytes) == 0)
                b.len += bytes;
        } else {
            ld_buf_append(&b, output_data(j, j->out[i]), bytes);
        }
    }
    j->ans = ld_buf_steal(&b, &j->ans_len);
    if (!j->ans)
        return -1;
    j->dec = (float *)(void *)(j->ans + off); /* off: a multiple of 4 in a malloc'd block */
    return 0;
}

/* The answer, on the request's HTTP thread: JSON, or JSON then the binary
 * outputs in order when any output is binary. */
static void infer_reply(ld_req_t *req, infer_t *j)
{
    const ld_arch_t *a = &j->s->model->arch;
    if (j->dec) {
        if (!ld_api_all_finite(j->dec, (size_t)j->n * (size_t)a->x_dim)) {
            ld_req_error(req, 400, "non_finite_output",
                         "model '%s' produced values that are not finite for this input "
                         "(are the latent values too large?)",
                         j->s->name);
            return;
        }
        ld_metrics_add_samples(j->o->metrics, (uint64_t)j->n);
    }
    char jlen[32];
    if (j->ans) { /* written by infer_prebuild, the images decoded into it */
        ld_fmt_u64(jlen, (unsigned long long)j->ans_jlen);
        ld_req_header_add(req, LD_HTTP_JSON_LEN, jlen);
        ld_req_reply(req, 200, "application/octet-stream", j->ans, j->ans_len);
        j->ans = NULL;
        j->dec = NULL; /* it was in ans, which the reply owns now */
        return;
    }
    ld_buf_t b = {0};
    int any_bin;
    infer_head(&b, j, &any_bin);
    if (!any_bin) {
        ld_req_reply_json(req, 200, &b);
        return;
    }
    ld_fmt_u64(jlen, (unsigned long long)b.len);
    for (int i = 0; i < j->n_out; i++) {
        int t = j->out[i];
        if (j->out_bin[i])
            ld_buf_append(&b, output_data(j, t), output_count(j, t) * 4);
    }
    size_t len;
    char *p = ld_buf_failed(&b) ? NULL : ld_buf_steal(&b, &len);
    ld_buf_free(&b);
    if (!p) {
        ld_req_error(req, 503, "overloaded", "out of memory while writing the response");
        return;
    }
    ld_req_header_add(req, LD_HTTP_JSON_LEN, jlen);
    ld_req_reply(req, 200, "application/octet-stream", p, len);
}

static void infer_cont(ld_req_t *req, void *ctx)
{
    infer_t *j = ctx;
    if (req) /* NULL: the client went away meanwhile */
        infer_reply(req, j);
    infer_free(j);
}

static void infer_done(void *ctx)
{
    infer_t *j = ctx;
    ld_req_wake(j->req);
}

/* Read every input into j; 0, or -1 after answering. */
static int read_inputs(ld_req_t *req, infer_t *j, const cJSON *ins, bin_t *bin)
{
    const ld_arch_t *a = &j->s->model->arch;
    int seen[T_COUNT] = {0}, rows = 0;
    for (const cJSON *in = ins ? ins->child : NULL; in; in = in->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(in, "name");
        if (!cJSON_IsObject(in) || !cJSON_IsString(nm)) {
            ld_req_error(req, 400, "invalid_field", "each input must be an object with a name");
            return -1;
        }
        int t = tensor_find(nm->valuestring);
        if (t < 0 || (t != T_LABELS && !is_input(a, t))) {
            ld_req_error(req, 400, "invalid_field", "model '%s' has no input '%.64s'", j->s->name,
                         nm->valuestring);
            return -1;
        }
        if (seen[t]++) {
            ld_req_error(req, 400, "invalid_field", "input '%s' is given twice", tensor_name[t]);
            return -1;
        }
        void *v = NULL;
        int n = 0;
        if (read_input(req, j, in, t, bin, &v, &n) != 0)
            return -1;
        if (rows && n != rows) {
            free(v);
            ld_req_error(req, 400, "invalid_field", "inputs have %d and %d rows", rows, n);
            return -1;
        }
        rows = n;
        if (t == T_LABELS) {
            int rc = read_labels(req, j, v, n);
            free(v);
            if (rc != 0)
                return -1;
        } else {
            *(t == T_Z ? &j->z : &j->x) = v;
        }
    }
    if (j->z && j->x) {
        ld_req_error(req, 400, "invalid_field", "give the input z or images, not both");
        return -1;
    }
    if (bin->off != bin->len) {
        ld_req_error(req, 400, "invalid_field",
                     "%zu bytes of binary data after the JSON belong to no input",
                     bin->len - bin->off);
        return -1;
    }
    if (rows)
        j->n = rows;
    if (conditional(&j->s->model->arch) && !j->labels) {
        char list[2048];
        ld_model_class_list(j->s->model, list, sizeof list);
        ld_req_error(req, 400, "invalid_field", "model '%s' is conditional: give the input "
                     "'labels' (INT32, one per row) of its classes %s", j->s->name, list);
        return -1;
    }
    return 0;
}

static void infer_run(ld_req_t *req, infer_t *j, int seeded);

/* ------------------------------------------------- the common infer head */

/* What a client that needs speed sends: one z input in binary, the images
 * asked back, e.g. {"inputs":[{"name":"z","datatype":"FP32","shape":[1,32],
 * "parameters":{"binary_data_size":128}}],"outputs":[{"name":"images",
 * "parameters":{"binary_data":true}}]}.  lean_read reads that from the bytes
 * without building a parse tree.  It takes a strict subset of what the
 * general path (cJSON, then read_params, read_inputs and read_outputs) takes,
 * and reads it to the same values: only the members below, each at most
 * once, strings of printable ASCII without escapes, counts as plain digits,
 * JSON's four blanks.  Whatever else, valid or not, it leaves to the general
 * path, which answers it, errors included: the lean path answers no error
 * of its own. */
typedef struct {
    const char *id;                /* not terminated; NULL when not given */
    size_t id_len;
    int bin_out;                   /* parameters.binary_data_output */
    unsigned long long dims[2];    /* the input z: shape */
    unsigned long long size;       /* ... and parameters.binary_data_size */
    int out_bin;                   /* outputs[0].parameters.binary_data; -1 when
                                      not given (outputs or its parameters) */
} lean_t;

static int sc_str(ld_scan_t *s, const char **str, size_t *len)
{
    if (!ld_scan_eat(s, '"'))
        return 0;
    const char *a = s->p;
    while (s->p < s->end && *s->p != '"') {
        unsigned char c = (unsigned char)*s->p++;
        if (c < 0x20 || c > 0x7e || c == '\\')
            return 0;
    }
    if (s->p == s->end)
        return 0;
    *str = a;
    *len = (size_t)(s->p++ - a);
    return 1;
}

/* The string str (len bytes, no NUL among them) is lit. */
static int sc_is(const char *str, size_t len, const char *lit)
{
    size_t i = 0;
    while (i < len && lit[i] == str[i])
        i++;
    return i == len && lit[i] == '\0';
}

/* A string value that must be lit. */
static int sc_lit(ld_scan_t *s, const char *lit)
{
    const char *v;
    size_t n;
    return sc_str(s, &v, &n) && sc_is(v, n, lit);
}

/* At most 15 digits, no leading zero: exact as cJSON's double; what follows
 * must be a delimiter, which the caller reads. */
static int sc_count(ld_scan_t *s, unsigned long long *v)
{
    ld_scan_ws(s);
    const char *a = s->p;
    unsigned long long x = 0;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9' && s->p - a < 16)
        x = x * 10 + (unsigned long long)(*s->p++ - '0');
    size_t n = (size_t)(s->p - a);
    *v = x;
    return n > 0 && n <= 15 && (n == 1 || *a != '0');
}

static int sc_bool(ld_scan_t *s, int *b)
{
    ld_scan_ws(s);
    size_t left = (size_t)(s->end - s->p);
    if (left >= 4 && memcmp(s->p, "true", 4) == 0) {
        s->p += 4;
        *b = 1;
        return 1;
    }
    if (left >= 5 && memcmp(s->p, "false", 5) == 0) {
        s->p += 5;
        *b = 0;
        return 1;
    }
    return 0;
}

/* The members of an object: call with *i = 0 after its '{'; 1 with the next
 * member's key index in keys (its value is next), 0 after the '}', -1 for
 * anything else (an unknown or repeated key included). */
static int sc_member(ld_scan_t *s, const char *const *keys, unsigned *seen, int *i, int *k)
{
    if (*i == 0 && ld_scan_eat(s, '}'))
        return 0;
    if (*i > 0 && !ld_scan_eat(s, ','))
        return ld_scan_eat(s, '}') ? 0 : -1;
    (*i)++;
    const char *key;
    size_t n;
    if (!sc_str(s, &key, &n) || !ld_scan_eat(s, ':'))
        return -1;
    for (*k = 0; keys[*k]; (*k)++)
        if (sc_is(key, n, keys[*k]))
            break;
    if (!keys[*k] || (*seen & 1u << *k))
        return -1;
    *seen |= 1u << *k;
    return 1;
}

/* {"binary_data_size": N} or {"binary_data": b} or {"binary_data_output": b}:
 * an object of at most one member, key; *v its value (a count, or a bool
 * when is_bool); *given whether it was there. */
static int sc_one(ld_scan_t *s, const char *key, int is_bool, unsigned long long *v, int *given)
{
    const char *const keys[] = {key, NULL};
    unsigned seen = 0;
    int i = 0, k, r, b;
    *given = 0;
    if (!ld_scan_eat(s, '{'))
        return 0;
    while ((r = sc_member(s, keys, &seen, &i, &k)) == 1) {
        if (is_bool ? !sc_bool(s, &b) : !sc_count(s, v))
            return 0;
        if (is_bool)
            *v = (unsigned long long)b;
        *given = 1;
    }
    return r == 0;
}

static int lean_input(ld_scan_t *s, lean_t *l)
{
    static const char *const keys[] = {"name", "datatype", "shape", "parameters", NULL};
    unsigned seen = 0;
    int i = 0, k, r, given;
    if (!ld_scan_eat(s, '{'))
        return 0;
    while ((r = sc_member(s, keys, &seen, &i, &k)) == 1) {
        int ok;
        switch (k) {
        case 0: ok = sc_lit(s, "z"); break;
        case 1: ok = sc_lit(s, "FP32"); break;
        case 2:
            ok = ld_scan_eat(s, '[') && sc_count(s, &l->dims[0]) && ld_scan_eat(s, ',') &&
                 sc_count(s, &l->dims[1]) && ld_scan_eat(s, ']');
            break;
        default: ok = sc_one(s, "binary_data_size", 0, &l->size, &given) && given; break;
        }
        if (!ok)
            return 0;
    }
    return r == 0 && seen == 15; /* all four */
}

static int lean_output(ld_scan_t *s, lean_t *l)
{
    static const char *const keys[] = {"name", "parameters", NULL};
    unsigned seen = 0;
    unsigned long long b;
    int i = 0, k, r, given;
    if (!ld_scan_eat(s, '{'))
        return 0;
    while ((r = sc_member(s, keys, &seen, &i, &k)) == 1) {
        if (k == 0 ? !sc_lit(s, "images") : !sc_one(s, "binary_data", 1, &b, &given))
            return 0;
        if (k == 1 && given)
            l->out_bin = (int)b;
    }
    return r == 0 && (seen & 1);
}

/* 1 when the head (len bytes) is in the subset, read into *l. */
static int lean_read(const char *head, size_t len, lean_t *l)
{
    static const char *const keys[] = {"id", "parameters", "inputs", "outputs", NULL};
    ld_scan_t s = {head, head + len};
    unsigned seen = 0;
    unsigned long long b;
    int i = 0, k, r, given;
    *l = (lean_t){.out_bin = -1};
    if (!ld_scan_eat(&s, '{'))
        return 0;
    while ((r = sc_member(&s, keys, &seen, &i, &k)) == 1) {
        int ok;
        switch (k) {
        case 0: ok = sc_str(&s, &l->id, &l->id_len); break;
        case 1:
            ok = sc_one(&s, "binary_data_output", 1, &b, &given);
            l->bin_out = given && b;
            break;
        case 2: ok = ld_scan_eat(&s, '[') && lean_input(&s, l) && ld_scan_eat(&s, ']'); break;
        default: ok = ld_scan_eat(&s, '[') && lean_output(&s, l) && ld_scan_eat(&s, ']'); break;
        }
        if (!ok)
            return 0;
    }
    ld_scan_ws(&s);
    return r == 0 && (seen & 4) && s.p == s.end;
}

/* The lean path: 1 when it took the request (answered, or handed to the
 * batcher), 0 when the general path must (nothing answered or kept). */
static int infer_lean(ld_req_t *req, const ld_api_opts_t *o)
{
    size_t blen, jlen = ld_req_json_len(req);
    const uint8_t *body = ld_req_body(req, &blen);
    lean_t l;
    if (!lean_read((const char *)body, jlen, &l))
        return 0;
    ld_served_t *s = get_model(req, o); /* its 404 is the general path's too */
    if (!s)
        return 1;
    const ld_arch_t *a = &s->model->arch;
    /* the checks of the general path, which answers when one fails */
    if (!is_output(a, T_IMAGES) || !is_input(a, T_Z) || conditional(a) ||
        l.dims[1] != (unsigned long long)a->z_dim || l.dims[0] < 1 ||
        l.dims[0] > (unsigned long long)o->max_samples ||
        l.size != l.dims[0] * l.dims[1] * 4 || l.size != blen - jlen) {
        ld_served_release(s);
        return 0;
    }
    infer_t *j = calloc(1, sizeof *j);
    if (!j || (l.id && !(j->id = strndup(l.id, l.id_len))) ||
        !(j->z = malloc((size_t)l.size))) {
        ld_served_release(s);
        if (j)
            free(j->id);
        free(j);
        return 0; /* the general path answers out of memory as it does */
    }
    *j = (infer_t){.s = s, .req = req, .o = o, .id = j->id, .z = j->z, .n = (int)l.dims[0],
                   .temperature = 1.0, .n_out = 1, .out = {T_IMAGES},
                   .out_bin = {l.out_bin >= 0 ? l.out_bin : l.bin_out}};
    /* little-endian, as the general path reads it */
    memcpy(j->z, body + jlen, (size_t)l.size);
    if (!ld_api_all_finite(j->z, (size_t)l.dims[0] * (size_t)l.dims[1])) {
        infer_free(j);
        return 0;
    }
    infer_run(req, j, 0);
    return 1;
}

static void h_infer(ld_req_t *req, void *ctx)
{
    const ld_api_opts_t *o = ctx;
    static const char *const fields[] = {"id", "parameters", "inputs", "outputs", NULL};
    if (infer_lean(req, o) || ld_req_parse_json(req) != 0)
        return;
    const cJSON *body = ld_req_json(req);
    if (!depth_ok(body, 1)) {
        ld_req_error(req, 400, "invalid_json", "the JSON is nested deeper than %d levels",
                     JSON_DEPTH_MAX);
        return;
    }
    ld_args_t args = ld_args_json(req, body, NULL);
    if (ld_arg_fields(&args, fields) != 0)
        return;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(body, "id");
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(body, "inputs");
    if ((id && !cJSON_IsString(id)) || (ins && !cJSON_IsArray(ins))) {
        ld_req_error(req, 400, "invalid_field", "id must be a string and inputs an array");
        return;
    }
    ld_served_t *s = get_model(req, o);
    if (!s)
        return;
    infer_t *j = calloc(1, sizeof *j);
    if (!j || (id && !(j->id = strdup(id->valuestring)))) {
        ld_served_release(s);
        free(j);
        ld_req_error(req, 503, "overloaded", "out of memory");
        return;
    }
    j->s = s;
    j->req = req;
    j->o = o;
    const ld_arch_t *a = &s->model->arch;
    size_t blen, jlen;
    const uint8_t *body_bytes = ld_req_body(req, &blen);
    jlen = ld_req_json_len(req);
    bin_t bin = {body_bytes + jlen, blen - jlen, 0};
    int bin_out = 0, seeded = 0;
    int has_inputs = cJSON_GetArraySize(ins) > 0;
    if (!is_output(a, T_IMAGES)) {
        ld_req_error(req, 400, "unsupported",
                     "model '%s' is a %s: /v2 infer serves VAEs and GANs", s->name,
                     ld_kind_name(a->kind));
        goto fail;
    }
    if (read_params(req, j, cJSON_GetObjectItemCaseSensitive(body, "parameters"), has_inputs,
                    &bin_out, &seeded) != 0 ||
        read_inputs(req, j, ins, &bin) != 0 ||
        read_outputs(req, j, cJSON_GetObjectItemCaseSensitive(body, "outputs"), j->x != NULL,
                     bin_out) != 0)
        goto fail;
    infer_run(req, j, seeded);
    return;
fail:
    infer_free(j);
}

/* Compute the validated request j (which it owns from here) and answer:
 * encode, or draw z (seeded: j->seed was given), then decode when the
 * images are asked for. */
static void infer_run(ld_req_t *req, infer_t *j, int seeded)
{
    ld_served_t *s = j->s;
    const ld_arch_t *a = &s->model->arch;
    size_t zn = (size_t)j->n * (size_t)a->z_dim;
    ld_err_t e;
    int rc;
    if (j->x) {
        j->mu = ld_malloc_array(zn, sizeof *j->mu);
        j->logvar = ld_malloc_array(zn, sizeof *j->logvar);
        if (!j->mu || !j->logvar) {
            ld_req_error(req, 503, "overloaded", "out of memory");
            goto fail;
        }
        if ((rc = ld_model_encode_labels(s->model, j->n, j->x, j->labels, j->mu, j->logvar,
                                         &e)) != LD_OK) {
            ld_req_error(req, rc == LD_ENOMEM ? 503 : 400, "model", "%s", e.msg);
            goto fail;
        }
        if (!ld_api_all_finite(j->mu, zn) || !ld_api_all_finite(j->logvar, zn)) {
            ld_req_error(req, 400, "non_finite_output",
                         "model '%s' produced values that are not finite for this input",
                         s->name);
            goto fail;
        }
    } else if (!j->z) {
        /* no inputs: draw z as /v1 sample does */
        j->sampled = 1;
        if (!seeded)
            j->seed = ld_api_random_seed();
        j->z = ld_malloc_array(zn, sizeof *j->z);
        if (!j->z) {
            ld_req_error(req, 503, "overloaded", "out of memory");
            goto fail;
        }
        ld_model_draw_z(s->model, j->seed, (float)j->temperature, j->n, j->z);
    }
    int want_images = 0;
    for (int i = 0; i < j->n_out; i++)
        want_images |= j->out[i] == T_IMAGES;
    if (!want_images) {
        infer_cont(req, j);
        return;
    }
    if (infer_prebuild(j) != 0) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        goto fail;
    }
    if (!j->dec)
        j->dec = ld_malloc_array((size_t)j->n * (size_t)a->x_dim, sizeof *j->dec);
    if (!j->dec) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        goto fail;
    }
    /* the /v1 path: the served model's batcher, sharing passes with /v1 */
    const float *z = j->x ? j->mu : j->z;
    int queued = s->batch != NULL;
    rc = s->batch ? ld_batch_submit_labels(s->batch, j->n, z, j->labels, j->dec, infer_done, j, &e)
                  : ld_model_decode_labels(s->model, j->n, z, j->labels, j->dec, &e);
    if (rc != LD_OK) {
        ld_req_error(req, rc == LD_ENOMEM ? 503 : 400, "model", "%s", e.msg);
        goto fail;
    }
    if (queued)
        ld_req_await(req, infer_cont, j);
    else
        infer_cont(req, j);
    return;
fail:
    infer_free(j);
}

/* ----------------------------------------------------------- registration */

int ld_v2_register(ld_http_t *h, const ld_api_opts_t *o, ld_err_t *err)
{
    void *c = (void *)o;
    enum {
        E = LD_ROUTE_ERROR_STRING,
        J = E | LD_ROUTE_JSON | LD_ROUTE_JSON_PREFIX | LD_ROUTE_JSON_LAZY
    };
    /* the router matches whole paths, so each optional /versions/{version}
     * is a second route */
    const ld_route_t routes[] = {
        {"GET", "/v2/health/live", LD_AUTH_NONE, E, h_live, c},
        {"GET", "/v2/health/ready", LD_AUTH_NONE, E, h_ready, c},
        {"GET", "/v2", LD_AUTH_INFERENCE, E, h_server, c},
        {"GET", "/v2/models/{name}", LD_AUTH_INFERENCE, E, h_model, c},
        {"GET", "/v2/models/{name}/versions/{version}", LD_AUTH_INFERENCE, E, h_model, c},
        {"GET", "/v2/models/{name}/ready", LD_AUTH_INFERENCE, E, h_model_ready, c},
        {"GET", "/v2/models/{name}/versions/{version}/ready", LD_AUTH_INFERENCE, E, h_model_ready,
         c},
        {"POST", "/v2/models/{name}/infer", LD_AUTH_INFERENCE, J, h_infer, c},
        {"POST", "/v2/models/{name}/versions/{version}/infer", LD_AUTH_INFERENCE, J, h_infer, c},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(routes); i++) {
        int rc = ld_http_route_add(h, &routes[i], err);
        if (rc != LD_OK)
            return rc;
    }
    return LD_OK;
}

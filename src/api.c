/* api.c — see include/latentd/api.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/api.h"
#include "api_impl.h"
#include "classify_api.h"
#include "evaluate_api.h"
#include "invert_api.h"
#include "model_file_api.h"

#include "latentd/batch.h"
#include "latentd/buf.h"
#include "latentd/fsutil.h"
#include "latentd/image.h"
#include "latentd/jsonarg.h"
#include "latentd/log.h"
#include "latentd/model.h"
#include "latentd/sha256.h"
#include "latentd/v2.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GRID_PAD_DEFAULT 2
#define GRID_PAD_MAX 16
#define TEMPERATURE_MAX 10.0
#define MAX_PNG_INPUT_BYTES (4u << 20)

struct ld_api {
    ld_api_opts_t opts; /* for the /v2 routes */
    ld_registry_t *reg;
    ld_metrics_t *metrics;
    ld_http_t *http;
    int max_samples;
};

enum { FMT_JSON = 0, FMT_PNG = 1, FMT_NPY = 2 };
static const char *const formats[] = {"json", "png", "npy", NULL};
static const char *const methods[] = {"slerp", "lerp", NULL};

typedef struct {
    int format;
    int cols; /* 0 = ceil(sqrt(n)) */
    int pad;
} out_opts_t;

/* ------------------------------------------------------------------ seeds */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

uint64_t ld_api_random_seed(void)
{
    static atomic_uint_fast64_t state;
    static atomic_int init;
    if (!atomic_load_explicit(&init, memory_order_acquire)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t s = splitmix64((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
                     splitmix64((uint64_t)getpid());
        uint_fast64_t zero = 0;
        atomic_compare_exchange_strong(&state, &zero, s | 1);
        atomic_store_explicit(&init, 1, memory_order_release);
    }
    uint64_t x = atomic_fetch_add_explicit(&state, 0x9E3779B97F4A7C15ULL, memory_order_relaxed);
    return splitmix64(x) & LD_SEED_MAX;
}

/* ---------------------------------------------------------------- helpers */

static ld_served_t *get_model(ld_req_t *req, ld_api_t *api)
{
    return ld_api_get_model(req, api->reg);
}

ld_served_t *ld_api_get_model(ld_req_t *req, ld_registry_t *reg)
{
    const char *name = ld_req_param(req, "name");
    ld_served_t *s = name ? ld_registry_get(reg, name) : NULL;
    if (!s) {
        ld_req_error(req, 404, "model_not_found", "no model named '%.80s' is loaded",
                     name ? name : "");
        return NULL;
    }
    char v[32];
    ld_fmt_u64(v, (unsigned long long)s->version);
    ld_req_header_add(req, "X-Latentd-Model-Version", v);
    return s;
}

/* 0 if the model can decode latents (VAE or GAN), else 422. */
static int need_generator(ld_req_t *req, const ld_served_t *s)
{
    const ld_model_t *m = s->model;
    if (m->ops->decode_net >= 0 && m->arch.z_dim > 0)
        return 0;
    ld_req_error(req, 422, "unsupported", "model '%s' is %s; it has no latent space to decode",
                 s->name, m->ops->article);
    return -1;
}

/* 0 if the model can encode images (VAE), else 422. */
static int need_encoder(ld_req_t *req, const ld_served_t *s, const char *what)
{
    const ld_kind_ops_t *ops = s->model->ops;
    if (ops->encode_net >= 0)
        return 0;
    if (ops->decode_net >= 0) /* a generator without an encoder: say so */
        ld_req_error(req, 422, "no_encoder", "model '%s' is %s: %s has no encoder, so %s needs "
                     "a VAE", s->name, ops->article, ops->article, what);
    else
        ld_req_error(req, 422, "no_encoder", "model '%s' is %s: %s needs a VAE", s->name,
                     ops->article, what);
    return -1;
}

static int all_finite(const float *x, size_t n)
{
    /* a float is NaN or Inf when its exponent bits are all ones; branch-free
     * over blocks of 64 so the compiler can vectorise it */
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint32_t bad = 0;
        for (size_t k = 0; k < 64; k++) {
            uint32_t u;
            memcpy(&u, &x[i + k], sizeof u);
            bad |= (uint32_t)((u & 0x7F800000u) == 0x7F800000u);
        }
        if (bad)
            return 0;
    }
    for (; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static void model_error(ld_req_t *req, int rc, const ld_err_t *e)
{
    if (rc == LD_ENOMEM)
        ld_req_error(req, 503, "overloaded", "out of memory");
    else
        ld_req_error(req, 422, "unprocessable", "%s", e->msg);
}

/* format (default def), cols and pad from a. */
static int parse_out_opts(const ld_args_t *a, ld_api_t *api, int def, out_opts_t *o)
{
    long long cols, pad;
    if (ld_arg_enum(a, "format", formats, def, &o->format) != 0 ||
        ld_arg_int(a, "cols", 1, api->max_samples, 0, &cols) != 0 ||
        ld_arg_int(a, "pad", 0, GRID_PAD_MAX, GRID_PAD_DEFAULT, &pad) != 0)
        return -1;
    o->cols = (int)cols;
    o->pad = (int)pad;
    return 0;
}

/* A route without arguments: 0, or -1 after refusing a query string. */
static int no_args(ld_req_t *req)
{
    ld_args_t q = ld_args_query(req);
    return ld_arg_fields(&q, NULL);
}

/* The arguments of a POST route: from the JSON body (data: its data fields,
 * opts: its options; the query string must then be empty), or, for an
 * application/x-npy body, the options from the query string and *npy (len
 * bytes) the body.  Names are checked (ld_arg_fields); -1 when answered. */
static int body_args(ld_req_t *req, const char *const *data, const char *const *opts,
                     ld_args_t *a, const uint8_t **npy, size_t *npy_len)
{
    const cJSON *body = ld_req_json(req);
    const uint8_t *raw = ld_req_body(req, npy_len);
    *npy = NULL;
    if (!body && raw && *npy_len > 0) { /* LD_ROUTE_NPY: an .npy body */
        *npy = raw;
        *a = ld_args_query(req);
        return ld_arg_fields(a, opts);
    }
    if (no_args(req) != 0)
        return -1;
    const char *all[16];
    size_t k = 0;
    for (size_t i = 0; data && data[i] && k + 1 < LD_ARRAY_LEN(all); i++)
        all[k++] = data[i];
    for (size_t i = 0; opts && opts[i] && k + 1 < LD_ARRAY_LEN(all); i++)
        all[k++] = opts[i];
    all[k] = NULL;
    *a = ld_args_json(req, body, NULL);
    return ld_arg_fields(a, all);
}

/* An .npy body (len bytes) as rows of cols float32 values, each in [lo, hi]:
 * shape (n, cols), or (n, h, w) with h * w == cols when h > 0 (images);
 * 1 <= n <= max_rows.  *out malloc'd (n, cols).  -1 when answered: 400
 * for a body that is not a .npy file, 422 for a dtype, order or shape the
 * model cannot take and for values that are not finite or out of range. */
static int read_npy(ld_req_t *req, const uint8_t *raw, size_t len, const char *what, int cols,
                    int h, int w, int max_rows, float lo, float hi, float **out, int *rows)
{
    float *x = NULL;
    int nd = 0;
    int64_t sh[4];
    ld_err_t e;
    int rc = ld_npy_decode(raw, len, &x, &nd, sh, &e);
    if (rc == LD_ENOMEM) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    if (rc != LD_OK) {
        ld_req_error(req, rc == LD_EUNSUPPORTED ? 422 : 400,
                     rc == LD_EUNSUPPORTED ? "invalid_value" : "invalid_npy",
                     "the application/x-npy body: %s", e.msg);
        return -1;
    }
    int shape_ok = (nd == 2 && sh[1] == cols) || (h > 0 && nd == 3 && sh[1] == h && sh[2] == w);
    if (!shape_ok) {
        char got[96] = "(";
        for (int i = 0; i < nd; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)sh[i]);
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s)", nd == 1 ? "," : "");
        if (h > 0)
            ld_req_error(req, 422, "invalid_value",
                         "%s has shape %s; expected (n, %d) or (n, %d, %d)", what, got, cols, h, w);
        else
            ld_req_error(req, 422, "invalid_value", "%s has shape %s; expected (n, %d)", what,
                         got, cols);
        goto fail;
    }
    if (sh[0] < 1 || sh[0] > max_rows) {
        ld_req_error(req, 422, "invalid_value", "%s has %lld rows; 1 to %d (max_samples)", what,
                     (long long)sh[0], max_rows);
        goto fail;
    }
    size_t n = (size_t)sh[0] * (size_t)cols;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            ld_req_error(req, 422, "invalid_value", "%s[%zu][%zu] is not finite (NaN or Inf)",
                         what, i / (size_t)cols, i % (size_t)cols);
            goto fail;
        }
        if (x[i] < lo || x[i] > hi) {
            ld_req_error(req, 422, "invalid_value", "%s[%zu][%zu] = %g is outside [%g, %g]", what,
                         i / (size_t)cols, i % (size_t)cols, (double)x[i], (double)lo,
                         (double)hi);
            goto fail;
        }
    }
    *out = x;
    *rows = (int)sh[0];
    return 0;
fail:
    free(x);
    return -1;
}

static void shape_json(ld_buf_t *b, int n, const ld_arch_t *a)
{
    ld_buf_puts(b, "\"shape\":[");
    ld_buf_int(b, n);
    ld_buf_putc(b, ',');
    ld_buf_int(b, a->img_h);
    ld_buf_putc(b, ',');
    ld_buf_int(b, a->img_w);
    ld_buf_putc(b, ']');
}

/* Finish a JSON answer whose opening fields (ending with ',') are in b:
 * shape, the latents z (n, z_dim; skipped when NULL), the images x
 * (n, x_dim), then send it. */
static void reply_images_json(ld_req_t *req, ld_buf_t *b, int n, const ld_arch_t *a,
                              const float *z, const float *x)
{
    shape_json(b, n, a);
    if (z) {
        ld_buf_puts(b, ",\"z\":");
        ld_buf_json_matrix(b, z, (size_t)n, (size_t)a->z_dim);
    }
    ld_buf_puts(b, ",\"images\":");
    ld_buf_json_matrix(b, x, (size_t)n, (size_t)a->x_dim);
    ld_buf_putc(b, '}');
    ld_req_reply_json(req, 200, b);
}

/* Answer images x (n, x_dim) as PNG or .npy (JSON callers write their own). */
static void reply_binary(ld_req_t *req, const out_opts_t *o, const ld_arch_t *a, const float *x,
                         int n)
{
    uint8_t *out = NULL;
    size_t len = 0;
    ld_err_t e;
    int rc;
    if (o->format == FMT_PNG) {
        rc = ld_png_grid(x, n, a->img_h, a->img_w, o->cols, o->pad, &out, &len, &e);
        if (rc == LD_OK) {
            ld_req_reply(req, 200, "image/png", out, len);
            return;
        }
    } else {
        int64_t shape[3] = {n, a->img_h, a->img_w};
        rc = ld_npy_encode(x, 3, shape, &out, &len, &e);
        if (rc == LD_OK) {
            ld_req_reply(req, 200, "application/octet-stream", out, len);
            return;
        }
    }
    model_error(req, rc, &e);
}

/* Decoded rows x (n, x_dim) must be finite: 0, or answered 422 and -1.
 * Counts the samples served. */
static int check_decoded(ld_req_t *req, ld_api_t *api, const ld_served_t *s, int n, const float *x)
{
    if (!all_finite(x, (size_t)n * (size_t)s->model->arch.x_dim)) {
        ld_req_error(req, 422, "non_finite_output",
                     "model '%s' produced values that are not finite for this input "
                     "(are the latent values too large?)",
                     s->name);
        return -1;
    }
    ld_metrics_add_samples(api->metrics, (uint64_t)n);
    return 0;
}

/* Images from {"images":[[...]]} or {"png":"base64" | ["base64", ...]}:
 * x (n, x_dim) malloc'd. what names the field family in messages. */
static int read_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const cJSON *obj,
                       const char *images_key, const char *png_key, int max_rows, float **x,
                       int *n)
{
    const ld_arch_t *a = &s->model->arch;
    const cJSON *im = cJSON_GetObjectItemCaseSensitive(obj, images_key);
    const cJSON *pg = cJSON_GetObjectItemCaseSensitive(obj, png_key);
    if ((im != NULL) == (pg != NULL)) {
        ld_req_error(req, 400, "invalid_field", "give exactly one of '%s' and '%s'", images_key,
                     png_key);
        return -1;
    }
    if (im)
        return ld_arg_matrix(req, im, images_key, a->x_dim, max_rows, 1, 0.0f, 1.0f, x, n);

    int count;
    const cJSON *first;
    if (cJSON_IsString(pg)) {
        count = 1;
        first = pg;
    } else if (cJSON_IsArray(pg)) {
        count = cJSON_GetArraySize(pg);
        first = pg->child;
        if (count == 0) {
            ld_req_error(req, 422, "invalid_value", "%s is empty", png_key);
            return -1;
        }
        if (count > max_rows) {
            ld_req_error(req, 422, "invalid_value", "%s has %d images; at most %d (max_samples)",
                         png_key, count, max_rows);
            return -1;
        }
    } else {
        ld_req_error(req, 400, "invalid_field",
                     "%s must be a base64 PNG string or an array of them", png_key);
        return -1;
    }
    float *all = ld_malloc_array((size_t)count * (size_t)a->x_dim, sizeof *all);
    if (!all) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    int i = 0;
    for (const cJSON *c = first; i < count; c = c->next, i++) {
        char label[64];
        if (cJSON_IsString(pg))
            snprintf(label, sizeof label, "%s", png_key);
        else
            snprintf(label, sizeof label, "%s[%d]", png_key, i);
        const char *b64;
        if (ld_arg_text(req, c, label, &b64) != 0)
            goto fail;
        uint8_t *raw = NULL;
        size_t raw_len = 0;
        ld_err_t e;
        if (ld_base64_decode(b64, strlen(b64), &raw, &raw_len, &e) != LD_OK) {
            ld_req_error(req, 422, "invalid_value", "%s is not valid base64: %s", label, e.msg);
            goto fail;
        }
        float *px = NULL;
        int h = 0, w = 0;
        int rc = ld_png_decode(raw, raw_len, (size_t)a->x_dim, &px, &h, &w, &e);
        free(raw);
        if (rc != LD_OK) {
            ld_req_error(req, 422, "invalid_value", "%s is not a usable %dx%d PNG: %s", label,
                         a->img_w, a->img_h, e.msg);
            goto fail;
        }
        if (h != a->img_h || w != a->img_w) {
            free(px);
            ld_req_error(req, 422, "invalid_value", "%s is %dx%d; model '%s' expects %dx%d", label,
                         w, h, s->name, a->img_w, a->img_h);
            goto fail;
        }
        memcpy(all + (size_t)i * (size_t)a->x_dim, px, (size_t)a->x_dim * sizeof *px);
        free(px);
    }
    (void)api;
    *x = all;
    *n = count;
    return 0;
fail:
    free(all);
    return -1;
}

/* Encode x (n, x_dim) -> mu, logvar (n, z_dim), both malloc'd, checked finite. */
static int encode_checked(ld_req_t *req, const ld_served_t *s, int n, const float *x,
                          const uint8_t *labels, float **mu, float **logvar)
{
    size_t zn = (size_t)n * (size_t)s->model->arch.z_dim;
    *mu = ld_malloc_array(zn, sizeof **mu);
    *logvar = ld_malloc_array(zn, sizeof **logvar);
    if (!*mu || !*logvar) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        goto fail;
    }
    ld_err_t e;
    int rc = ld_model_encode_labels(s->model, n, x, labels, *mu, *logvar, &e);
    if (rc != LD_OK) {
        model_error(req, rc, &e);
        goto fail;
    }
    if (!all_finite(*mu, zn) || !all_finite(*logvar, zn)) {
        ld_req_error(req, 422, "non_finite_output",
                     "model '%s' produced values that are not finite for this input", s->name);
        goto fail;
    }
    return 0;
fail:
    free(*mu);
    free(*logvar);
    *mu = *logvar = NULL;
    return -1;
}

/* ----------------------------------------------------------------- health */

static void h_healthz(ld_req_t *req, void *ctx)
{
    static const char ok[] = "{\"status\":\"ok\"}\n";
    ld_req_reply_copy(req, 200, "application/json", ok, sizeof ok - 1);
}

static void h_readyz(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    ld_http_t *h = ld_req_server(req);
    if (ld_http_is_draining(h)) {
        ld_req_error(req, 503, "shutting_down", "the server is shutting down");
        return;
    }
    if (!ld_http_is_ready(h)) {
        ld_req_error(req, 503, "not_ready", "the server is starting");
        return;
    }
    ld_buf_t b = {0};
    ld_buf_printf(&b, "{\"status\":\"ready\",\"models\":%d}", ld_registry_count(api->reg));
    ld_req_reply_json(req, 200, &b);
}

static void h_metrics(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    size_t len;
    char *text = api->metrics ? ld_metrics_render(api->metrics, &len) : NULL;
    if (!text) {
        ld_req_error(req, 503, "overloaded", "cannot render metrics");
        return;
    }
    ld_req_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ----------------------------------------------------------------- models */

static void int_list(ld_buf_t *b, const ld_hidden_t *h)
{
    ld_buf_putc(b, '[');
    for (int i = 0; i < h->n; i++)
        ld_buf_printf(b, i ? ",%d" : "%d", h->size[i]);
    ld_buf_putc(b, ']');
}

/* ,"layers":[{"net":"generator","layers":[{"name":"generator.0","type":"Linear",
 * "output":[6272,1,1],"parameters":633472},...]},...]: every net's layer table. */
static void layers_json(ld_buf_t *b, const ld_model_t *m)
{
    ld_buf_puts(b, ",\"layers\":[");
    for (int n = 0; n < m->n_nets; n++) {
        const ld_net_t *net = &m->layers[n];
        ld_buf_printf(b, "%s{\"net\":\"%s\",\"parameters\":%zu,\"layers\":[", n ? "," : "",
                      net->name, net->n_params);
        for (int i = 0; i < net->n_layers; i++) {
            const ld_layer_t *L = &net->layers[i];
            char name[128];
            ld_net_layer_name(net, i, name, sizeof name);
            ld_buf_printf(b, "%s{\"name\":\"%s\",\"type\":\"%s\",\"output\":[%d,%d,%d],"
                          "\"parameters\":%zu}", i ? "," : "", name, ld_layer_kind_name(L->kind),
                          L->out.c, L->out.h, L->out.w, L->n_params);
        }
        ld_buf_puts(b, "]}");
    }
    ld_buf_puts(b, "]");
}

static void model_json(ld_buf_t *b, const ld_served_t *s)
{
    const ld_model_t *m = s->model;
    const ld_arch_t *a = &m->arch;
    char desc[256];
    ld_arch_describe(a, desc, sizeof desc);
    ld_buf_puts(b, "{\"name\":");
    ld_buf_json_str(b, s->name);
    ld_buf_printf(b, ",\"kind\":\"%s\",\"architecture\":{", ld_kind_name(a->kind));
    ld_buf_printf(b, "\"image\":[%d,%d]", a->img_h, a->img_w);
    ld_kind_t fam = m->ops->family;
    if (fam == LD_KIND_VAE) {
        ld_buf_puts(b, ",\"encoder\":");
        int_list(b, &a->enc);
        ld_buf_puts(b, ",\"decoder\":");
        int_list(b, &a->dec);
    } else if (fam == LD_KIND_GAN) {
        ld_buf_puts(b, ",\"generator\":");
        int_list(b, &a->dec);
        ld_buf_puts(b, ",\"discriminator\":");
        int_list(b, &a->enc);
    } else {
        ld_buf_puts(b, ",\"hidden\":");
        int_list(b, &a->enc);
        ld_buf_printf(b, ",\"classes\":%d", a->n_classes);
    }
    if (a->kind != LD_KIND_CLASSIFIER)
        ld_buf_printf(b, ",\"z\":%d", a->z_dim);
    /* hyper-parameters: 6 significant digits read as written (0.2, not 0.200000003) */
    ld_buf_printf(b, ",\"activation\":\"%s\",\"slope\":%.6g,\"dropout\":%.6g",
                  ld_act_name(a->act), isfinite(a->slope) ? (double)a->slope : 0.0,
                  isfinite(a->dropout) ? (double)a->dropout : 0.0);
    if (a->net != LD_NETS_MLP)
        ld_buf_printf(b, ",\"net\":\"%s\"", ld_netarch_name(a->net));
    if (m->ops->conditional)
        ld_buf_printf(b, ",\"embed\":%d", a->embed);
    ld_buf_puts(b, "},\"description\":");
    ld_buf_json_str(b, desc);
    if (m->ops->conditional) { /* the labels it takes, by index */
        ld_buf_puts(b, ",\"classes\":[");
        for (int k = 0; k < a->n_classes; k++) {
            char name[256];
            if (k)
                ld_buf_putc(b, ',');
            ld_buf_json_str(b, ld_model_class_name(m, k, name, sizeof name));
        }
        ld_buf_putc(b, ']');
    }
    layers_json(b, m);
    ld_buf_printf(b, ",\"latent_size\":%d,\"image_shape\":[%d,%d],\"parameters\":%zu,",
                  a->kind == LD_KIND_CLASSIFIER ? 0 : a->z_dim, a->img_h, a->img_w, m->n_params);
    ld_buf_puts(b, "\"file\":");
    ld_buf_json_str(b, s->file);
    ld_buf_printf(b, ",\"sha256\":\"%s\",\"version\":%llu,\"loaded_at\":\"%s\",\"record\":{",
                  s->sha256, (unsigned long long)s->version, s->loaded_at);
    for (int i = 0; i < m->record.n && i < LD_RECORD_MAX; i++) {
        if (i)
            ld_buf_putc(b, ',');
        ld_buf_json_str(b, m->record.key[i]);
        ld_buf_putc(b, ':');
        ld_buf_json_str(b, m->record.val[i]);
    }
    ld_buf_puts(b, "}}");
}

static void h_models_list(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    if (no_args(req) != 0)
        return;
    ld_served_t **list = NULL;
    int n = 0;
    if (ld_registry_list(api->reg, &list, &n) != LD_OK) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return;
    }
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"models\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            ld_buf_putc(&b, ',');
        model_json(&b, list[i]);
    }
    ld_buf_puts(&b, "]}");
    ld_registry_list_free(list, n);
    ld_req_reply_json(req, 200, &b);
}

static void h_model_get(ld_req_t *req, void *ctx)
{
    if (no_args(req) != 0)
        return;
    ld_served_t *s = get_model(req, ctx);
    if (!s)
        return;
    ld_buf_t b = {0};
    model_json(&b, s);
    ld_served_release(s);
    ld_req_reply_json(req, 200, &b);
}

static void h_model_put(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    const char *name = ld_req_param(req, "name");
    const cJSON *body = ld_req_json(req);
    static const char *const fields[] = {"file", "allow_kind_change", NULL};
    const char *file = NULL;
    int allow = 0;
    ld_args_t a = ld_args_json(req, body, NULL);
    if (no_args(req) != 0 || ld_arg_fields(&a, fields) != 0 ||
        ld_arg_string(&a, "file", NULL, &file) != 0)
        return;
    const cJSON *ak = body ? cJSON_GetObjectItemCaseSensitive(body, "allow_kind_change") : NULL;
    if (ak && !cJSON_IsBool(ak)) {
        ld_req_error(req, 400, "invalid_field", "allow_kind_change: expected true or false");
        return;
    }
    allow = cJSON_IsTrue(ak);
    if (!ld_name_is_safe(name)) {
        ld_req_error(req, 400, "invalid_name",
                     "model name '%.80s' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", name);
        return;
    }
    int replaced = 0;
    ld_served_t *s = NULL;
    ld_err_t e;
    int rc = ld_registry_put(api->reg, name, file, allow, &replaced, &s, &e);
    ld_api_reply_put(req, rc, replaced, s, &e);
}

void ld_api_reply_put(ld_req_t *req, int rc, int replaced, ld_served_t *s, const ld_err_t *e)
{
    if (rc != LD_OK) {
        switch (rc) {
        case LD_EUNSUPPORTED: ld_req_error(req, 409, "kind_change", "%s", e->msg); break;
        case LD_ENOMEM: ld_req_error(req, 503, "overloaded", "%s", e->msg); break;
        case LD_ENOTFOUND: ld_req_error(req, 422, "file_not_found", "file: %s", e->msg); break;
        case LD_EINVAL: ld_req_error(req, 422, "invalid_value", "file: %s", e->msg); break;
        case LD_EIO: ld_req_error(req, 500, "io_error", "%s", e->msg); break;
        default: ld_req_error(req, 422, "bad_checkpoint", "%s", e->msg); break;
        }
        return;
    }
    char v[32];
    snprintf(v, sizeof v, "%llu", (unsigned long long)s->version);
    ld_req_header_add(req, "X-Latentd-Model-Version", v);
    ld_buf_t b = {0};
    ld_buf_printf(&b, "{\"replaced\":%s,\"model\":", replaced ? "true" : "false");
    model_json(&b, s);
    ld_buf_putc(&b, '}');
    ld_served_release(s);
    ld_req_reply_json(req, replaced ? 200 : 201, &b);
}

static void h_model_delete(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    const char *name = ld_req_param(req, "name");
    ld_err_t e;
    if (no_args(req) != 0)
        return;
    if (ld_registry_unload(api->reg, name, &e) != LD_OK) {
        ld_req_error(req, 404, "model_not_found", "%s", e.msg);
        return;
    }
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"unloaded\":");
    ld_buf_json_str(&b, name);
    ld_buf_putc(&b, '}');
    ld_req_reply_json(req, 200, &b);
}

/* ----------------------------------------------------------------- sample */

/* A decode handed to the batcher: what the reply needs once the rows are
 * written.  Owned by the request's handler until ld_batch_submit, by the
 * continuation after it. */
typedef struct {
    ld_req_t *req;
    ld_api_t *api;
    ld_served_t *s;  /* a reference of its own */
    out_opts_t o;
    int n, with_z;
    float *z;        /* (n, z_dim), a copy, in this block after fields */
    float *x;        /* (n, x_dim), in this block after z, or in npy */
    uint8_t *npy;    /* .npy answers: the file (npy_len bytes) the rows are
                        decoded into, handed to the reply; else NULL */
    size_t npy_len;
    uint8_t *labels; /* (n) a copy, in this block after z (and x), or NULL */
    char fields[];   /* JSON members before "shape" */
} decode_job_t;

static void decode_job_free(decode_job_t *j)
{
    ld_served_release(j->s);
    free(j->npy);
    free(j); /* z and x live in the same block */
}

/* The reply for decoded rows (on the request's HTTP thread). */
static void reply_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const out_opts_t *o,
                         int n, const float *z, const float *x, const char *fields)
{
    const ld_arch_t *a = &s->model->arch;
    if (check_decoded(req, api, s, n, x) != 0)
        return;
    if (o->format != FMT_JSON) {
        reply_binary(req, o, a, x, n);
        return;
    }
    ld_buf_t b = {0};
    /* room for the whole reply at once (at most 17 bytes a value and its
     * comma, see ld_buf_json_floats): no copying as the buffer grows */
    ld_buf_reserve(&b, 256 + strlen(fields) +
                           (size_t)n * ((size_t)a->x_dim + (z ? (size_t)a->z_dim : 0) + 2) * 17);
    ld_buf_puts(&b, "{\"model\":");
    ld_buf_json_str(&b, s->name);
    ld_buf_putc(&b, ',');
    ld_buf_puts(&b, fields);
    reply_images_json(req, &b, n, a, z, x);
}

static void decode_job_reply(ld_req_t *req, void *ctx)
{
    decode_job_t *j = ctx;
    if (req && j->npy) { /* the rows are in the file already */
        if (check_decoded(req, j->api, j->s, j->n, j->x) == 0) {
            ld_req_reply(req, 200, "application/octet-stream", j->npy, j->npy_len);
            j->npy = NULL;
        }
    } else if (req) { /* NULL: the client went away meanwhile */
        reply_images(req, j->api, j->s, &j->o, j->n, j->with_z ? j->z : NULL, j->x, j->fields);
    }
    decode_job_free(j);
}

static void decode_job_done(void *ctx)
{
    decode_job_t *j = ctx;
    ld_req_wake(j->req);
}

/* Decode z (n, z_dim) and answer with the images: PNG/.npy as asked, or JSON
 * {"model",<fields>"shape",["z",]"images"} (z echoed when with_z; fields: ""
 * or more members, each followed by a comma). Replies on error too.  The
 * rows go to the model's batcher (batch.h): decoded on this thread if it
 * leads the pass that takes them, else by another pass while this HTTP
 * thread goes back to its other connections, the request's connection
 * suspended until that pass is done; the reply is made then. */
static void reply_decoded(ld_req_t *req, ld_api_t *api, ld_served_t *s, const out_opts_t *o,
                          int n, const float *z, const uint8_t *labels, int with_z,
                          const char *fields)
{
    const ld_arch_t *a = &s->model->arch;
    size_t flen = strlen(fields);
    /* one block: the job, its fields, then z and x (float-aligned); n is
     * capped by max_samples, so the sizes cannot overflow */
    size_t zoff = (sizeof(decode_job_t) + flen + 1 + 63) / 64 * 64;
    size_t zn = (size_t)n * (size_t)a->z_dim, xn = (size_t)n * (size_t)a->x_dim;
    /* an .npy answer: the rows are decoded straight into its file */
    uint8_t *npy = NULL;
    size_t npy_len = 0;
    float *nx = NULL;
    ld_err_t e;
    if (o->format == FMT_NPY) {
        int64_t shape[3] = {n, a->img_h, a->img_w};
        if (ld_npy_alloc(3, shape, &npy, &npy_len, &nx, &e) != LD_OK) {
            ld_req_error(req, 503, "overloaded", "out of memory");
            return;
        }
        xn = 0;
    }
    decode_job_t *j = malloc(zoff + (zn + xn) * sizeof(float) + (labels ? (size_t)n : 0));
    if (!j) {
        free(npy);
        ld_req_error(req, 503, "overloaded", "out of memory");
        return;
    }
    float *zc = (float *)(void *)((char *)j + zoff);
    memcpy(zc, z, zn * sizeof *zc);
    *j = (decode_job_t){.req = req, .api = api, .s = ld_served_ref(s), .o = *o, .n = n,
                        .with_z = with_z, .z = zc, .x = nx ? nx : zc + zn, .npy = npy,
                        .npy_len = npy_len};
    if (labels) {
        j->labels = (uint8_t *)(zc + zn + xn);
        memcpy(j->labels, labels, (size_t)n);
    }
    memcpy(j->fields, fields, flen + 1);
    if (!s->batch) { /* no batcher (cannot happen for a served VAE or GAN): decode here */
        int rc = ld_model_decode_labels(s->model, n, j->z, j->labels, j->x, &e);
        if (rc != LD_OK) {
            model_error(req, rc, &e);
            decode_job_free(j);
            return;
        }
        decode_job_reply(req, j);
        return;
    }
    /* the model's batcher: concurrent requests share one pass over the
     * weights, and a row's bytes do not depend on its neighbours */
    int rc = ld_batch_submit_labels(s->batch, n, j->z, j->labels, j->x, decode_job_done, j, &e);
    if (rc != LD_OK) {
        model_error(req, rc, &e);
        decode_job_free(j);
        return;
    }
    ld_req_await(req, decode_job_reply, j);
}

static void sample_common(ld_req_t *req, ld_api_t *api, ld_served_t *s, int n, int seeded,
                          uint64_t seed, double temperature, const uint8_t *labels,
                          const out_opts_t *o)
{
    const ld_arch_t *a = &s->model->arch;
    if (!seeded)
        seed = ld_api_random_seed();
    char sv[32];
    ld_fmt_u64(sv, (unsigned long long)seed);
    ld_req_header_add(req, "X-Latentd-Seed", sv);
    float *z = ld_malloc_array((size_t)n * (size_t)a->z_dim, sizeof *z); /* (n, z_dim) */
    if (!z) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return;
    }
    ld_model_draw_z(s->model, seed, (float)temperature, n, z);
    /* "seed":S,"temperature":T, with T as %.15g: whole numbers (the usual
     * 1) written directly, others through snprintf */
    char fields[96], t[40];
    if (temperature == (double)(long long)temperature && fabs(temperature) < 1e15 &&
        !signbit(temperature))
        ld_fmt_u64(t, (unsigned long long)(long long)temperature); /* >= 0 (checked) */
    else
        snprintf(t, sizeof t, "%.15g", temperature);
    int k = (int)strlen("\"seed\":");
    memcpy(fields, "\"seed\":", (size_t)k);
    k += ld_fmt_u64(fields + k, (unsigned long long)seed);
    memcpy(fields + k, ",\"temperature\":", 15);
    k += 15;
    size_t tl = strlen(t);
    memcpy(fields + k, t, tl);
    k += (int)tl;
    fields[k++] = ',';
    fields[k] = '\0';
    reply_decoded(req, api, s, o, n, z, labels, 1, fields);
    free(z);
}

static void h_sample(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const fields[] = {"n",   "seed", "temperature", "format", "cols",
                                         "pad", "label", "labels",     NULL};
    /* the body may be empty (all defaults) */
    ld_args_t a = ld_args_json(req, ld_req_json(req), NULL);
    long long n;
    int seeded;
    uint64_t seed = 0;
    double temp;
    out_opts_t o;
    if (no_args(req) != 0 || ld_arg_fields(&a, fields) != 0 ||
        ld_arg_int(&a, "n", 1, api->max_samples, 1, &n) != 0 ||
        ld_arg_seed(&a, "seed", &seeded, &seed) != 0 ||
        ld_arg_number(&a, "temperature", 0, TEMPERATURE_MAX, 1.0, &temp) != 0 ||
        parse_out_opts(&a, api, FMT_JSON, &o) != 0)
        return;
    ld_served_t *s = get_model(req, api);
    if (!s)
        return;
    uint8_t *labels = NULL;
    if (need_generator(req, s) == 0 && ld_api_labels(req, s, &a, (int)n, 1, &labels) == 0)
        sample_common(req, api, s, (int)n, seeded, seed, temp, labels, &o);
    free(labels);
    ld_served_release(s);
}

/* A seeded sample.png is the same bytes for the same model file and
 * parameters: its ETag is a digest of both, and caches may keep it for
 * sample_cache_max_age.  1 when answered 304 (If-None-Match matched). */
static int sample_png_cached(ld_req_t *req, ld_api_t *api, const ld_served_t *s, long long n,
                             uint64_t seed, double temp, long long cols, long long pad,
                             const uint8_t *labels)
{
    char key[384], hex[2 * LD_SHA256_LEN + 1], etag[40], cc[48], lh[2 * LD_SHA256_LEN + 1] = "";
    if (labels) /* the labels are part of the image: a digest of every row's */
        ld_sha256_hex(labels, (size_t)n, lh);
    int k = snprintf(key, sizeof key, "%s sample.png n=%lld seed=%llu temperature=%.17g cols=%lld pad=%lld%s%s",
                     s->sha256, n, (unsigned long long)seed, temp, cols, pad,
                     labels ? " labels=" : "", lh);
    ld_sha256_hex(key, (size_t)k, hex);
    snprintf(etag, sizeof etag, "\"%.32s\"", hex);
    snprintf(cc, sizeof cc, "public, max-age=%d", api->opts.cache_max_age);
    return ld_req_conditional(req, etag, cc);
}

static void h_sample_png(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const fields[] = {"n", "seed", "temperature", "cols", "pad", "label",
                                         "labels", NULL};
    ld_args_t a = ld_args_query(req);
    long long n, cols, pad;
    int seeded;
    uint64_t seed = 0;
    double temp;
    if (ld_arg_fields(&a, fields) != 0 || ld_arg_int(&a, "n", 1, api->max_samples, 1, &n) != 0 ||
        ld_arg_seed(&a, "seed", &seeded, &seed) != 0 ||
        ld_arg_number(&a, "temperature", 0, TEMPERATURE_MAX, 1.0, &temp) != 0 ||
        ld_arg_int(&a, "cols", 1, api->max_samples, 0, &cols) != 0 ||
        ld_arg_int(&a, "pad", 0, GRID_PAD_MAX, GRID_PAD_DEFAULT, &pad) != 0)
        return;
    ld_served_t *s = get_model(req, api);
    if (!s)
        return;
    out_opts_t o = {FMT_PNG, (int)cols, (int)pad};
    uint8_t *labels = NULL;
    if (need_generator(req, s) == 0 && ld_api_labels(req, s, &a, (int)n, 1, &labels) == 0 &&
        !(seeded && sample_png_cached(req, api, s, n, seed, temp, cols, pad, labels)))
        sample_common(req, api, s, (int)n, seeded, seed, temp, labels, &o);
    free(labels);
    ld_served_release(s);
}

/* ----------------------------------------------------------- encode/decode */

static const char *const image_opts[] = {"format", "cols", "pad", NULL};

/* The images of an encode/reconstruct body: the .npy body (npy, len), or
 * the JSON fields images/png of args.  x (n, x_dim) malloc'd; -1 answered. */
static int body_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const ld_args_t *args,
                       const uint8_t *npy, size_t len, float **x, int *n)
{
    const ld_arch_t *a = &s->model->arch;
    if (npy)
        return read_npy(req, npy, len, "images", a->x_dim, a->img_h, a->img_w, api->max_samples,
                        0.0f, 1.0f, x, n);
    return read_images(req, api, s, args->obj, "images", "png", api->max_samples, x, n);
}

static void h_encode(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const data[] = {"images", "png", NULL};
    static const char *const opts[] = {"format", "labels", NULL};
    static const char *const enc_formats[] = {"json", "npy", NULL};
    ld_args_t args;
    const uint8_t *npy;
    size_t npy_len;
    int format;
    if (body_args(req, data, opts, &args, &npy, &npy_len) != 0 ||
        ld_arg_enum(&args, "format", enc_formats, npy ? 1 : 0, &format) != 0)
        return;
    ld_served_t *s = get_model(req, api);
    if (!s)
        return;
    const ld_arch_t *a = &s->model->arch;
    float *x = NULL, *mu = NULL, *lv = NULL;
    uint8_t *labels = NULL;
    int n = 0;
    if (need_encoder(req, s, "encode") != 0 ||
        body_images(req, api, s, &args, npy, npy_len, &x, &n) != 0 ||
        ld_api_labels(req, s, &args, n, 0, &labels) != 0 ||
        encode_checked(req, s, n, x, labels, &mu, &lv) != 0)
        goto done;
    size_t zd = (size_t)a->z_dim;
    if (format == 1) {
        /* (2, n, z_dim): mu, then logvar */
        size_t zn = (size_t)n * zd;
        float *both = ld_malloc_array(2 * zn, sizeof *both);
        uint8_t *out = NULL;
        size_t len = 0;
        ld_err_t e;
        int64_t shape[3] = {2, n, (int64_t)zd};
        int rc = both ? LD_OK : LD_ENOMEM;
        if (both) {
            memcpy(both, mu, zn * sizeof *both);
            memcpy(both + zn, lv, zn * sizeof *both);
            rc = ld_npy_encode(both, 3, shape, &out, &len, &e);
            free(both);
        }
        if (rc == LD_OK)
            ld_req_reply(req, 200, "application/octet-stream", out, len);
        else
            ld_req_error(req, 503, "overloaded", "out of memory");
        goto done;
    }
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"model\":");
    ld_buf_json_str(&b, s->name);
    ld_buf_printf(&b, ",\"shape\":[%d,%zu],\"mu\":", n, zd);
    ld_buf_json_matrix(&b, mu, (size_t)n, zd);
    ld_buf_puts(&b, ",\"logvar\":");
    ld_buf_json_matrix(&b, lv, (size_t)n, zd);
    ld_buf_putc(&b, '}');
    ld_req_reply_json(req, 200, &b);
done:
    free(x);
    free(mu);
    free(lv);
    free(labels);
    ld_served_release(s);
}

static void h_decode(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const data[] = {"z", NULL};
    static const char *const opts[] = {"format", "cols", "pad", "labels", NULL};
    ld_args_t args;
    const uint8_t *npy;
    size_t npy_len;
    out_opts_t o;
    if (body_args(req, data, opts, &args, &npy, &npy_len) != 0 ||
        parse_out_opts(&args, api, npy ? FMT_NPY : FMT_JSON, &o) != 0)
        return;
    const cJSON *zj = npy ? NULL : cJSON_GetObjectItemCaseSensitive(args.obj, "z");
    if (!npy && !zj) {
        ld_req_error(req, 400, "invalid_field", "z is required: an array of latent vectors");
        return;
    }
    ld_served_t *s = get_model(req, api);
    if (!s)
        return;
    float *z = NULL;
    uint8_t *labels = NULL;
    int n = 0;
    const ld_arch_t *a = &s->model->arch;
    if (need_generator(req, s) != 0 ||
        (npy ? read_npy(req, npy, npy_len, "z", a->z_dim, 0, 0, api->max_samples, -INFINITY,
                        INFINITY, &z, &n)
             : ld_arg_matrix(req, zj, "z", a->z_dim, api->max_samples, 1, -INFINITY, INFINITY,
                             &z, &n)) != 0 ||
        ld_api_labels(req, s, &args, n, 0, &labels) != 0)
        goto done;
    reply_decoded(req, api, s, &o, n, z, labels, 0, "");
done:
    free(z);
    free(labels);
    ld_served_release(s);
}

static void h_reconstruct(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const data[] = {"images", "png", NULL};
    static const char *const opts[] = {"format", "cols", "pad", "labels", NULL};
    ld_args_t args;
    const uint8_t *npy;
    size_t npy_len;
    out_opts_t o;
    if (body_args(req, data, opts, &args, &npy, &npy_len) != 0 ||
        parse_out_opts(&args, api, npy ? FMT_NPY : FMT_JSON, &o) != 0)
        return;
    ld_served_t *s = get_model(req, api);
    if (!s)
        return;
    float *x = NULL, *mu = NULL, *lv = NULL;
    uint8_t *labels = NULL;
    int n = 0;
    if (need_encoder(req, s, "reconstruct") != 0 ||
        body_images(req, api, s, &args, npy, npy_len, &x, &n) != 0 ||
        ld_api_labels(req, s, &args, n, 0, &labels) != 0 ||
        encode_checked(req, s, n, x, labels, &mu, &lv) != 0)
        goto done;
    reply_decoded(req, api, s, &o, n, mu, labels, 1, "");
done:
    free(labels);
    free(x);
    free(mu);
    free(lv);
    ld_served_release(s);
}

/* ------------------------------------------------------------ interpolate */

/* One end point -> z (z_dim). */
static int read_endpoint(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const cJSON *body,
                         const char *key, float *z, uint8_t *label)
{
    const ld_arch_t *a = &s->model->arch;
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(body, key);
    if (!ep) {
        ld_req_error(req, 400, "invalid_field",
                     "%s is required: {\"seed\":S}, {\"z\":[...]}, {\"image\":[...]} or "
                     "{\"png\":\"base64\"}",
                     key);
        return -1;
    }
    if (!cJSON_IsObject(ep)) {
        ld_req_error(req, 400, "invalid_field", "%s must be an object", key);
        return -1;
    }
    char where[16];
    snprintf(where, sizeof where, "%s.", key);
    static const char *const fields[] = {"seed", "temperature", "z", "image", "png", "label", NULL};
    ld_args_t args = ld_args_json(req, ep, where);
    uint8_t *lab = NULL; /* a conditional model's class at this end point */
    if (ld_arg_fields(&args, fields) != 0 || ld_api_labels(req, s, &args, 1, 1, &lab) != 0)
        return -1;
    *label = lab ? lab[0] : 0;
    free(lab);
    const cJSON *seed_j = cJSON_GetObjectItemCaseSensitive(ep, "seed");
    const cJSON *z_j = cJSON_GetObjectItemCaseSensitive(ep, "z");
    const cJSON *im_j = cJSON_GetObjectItemCaseSensitive(ep, "image");
    const cJSON *png_j = cJSON_GetObjectItemCaseSensitive(ep, "png");
    int given = (seed_j != NULL) + (z_j != NULL) + (im_j != NULL) + (png_j != NULL);
    if (given != 1) {
        ld_req_error(req, 400, "invalid_field", "%s needs exactly one of seed, z, image, png", key);
        return -1;
    }
    if (!seed_j && cJSON_GetObjectItemCaseSensitive(ep, "temperature")) {
        ld_req_error(req, 400, "invalid_field", "%stemperature only goes with %sseed", where, where);
        return -1;
    }
    if (seed_j) {
        int present;
        uint64_t seed;
        double temp;
        if (ld_arg_seed(&args, "seed", &present, &seed) != 0 ||
            ld_arg_number(&args, "temperature", 0, TEMPERATURE_MAX, 1.0, &temp) != 0)
            return -1;
        ld_model_draw_z(s->model, seed, (float)temp, 1, z);
        return 0;
    }
    if (z_j) {
        char what[16];
        snprintf(what, sizeof what, "%s.z", key);
        float *v = NULL;
        int rows;
        if (cJSON_IsArray(z_j) && z_j->child && !cJSON_IsNumber(z_j->child)) {
            ld_req_error(req, 400, "invalid_field", "%s must be one latent vector (numbers)", what);
            return -1;
        }
        if (ld_arg_matrix(req, z_j, what, a->z_dim, 1, 1, -INFINITY, INFINITY, &v, &rows) != 0)
            return -1;
        memcpy(z, v, (size_t)a->z_dim * sizeof *z);
        free(v);
        return 0;
    }
    char what[16];
    snprintf(what, sizeof what, "%s.%s", key, im_j ? "image" : "png");
    int gan = s->model->ops->invertible; /* a GAN's image end point is inverted (invert_api.h) */
    if (!gan && need_encoder(req, s, "an image end point") != 0)
        return -1;
    float *x = NULL, *mu = NULL, *lv = NULL;
    int n = 0;
    if (im_j) {
        if (cJSON_IsArray(im_j) && im_j->child && !cJSON_IsNumber(im_j->child)) {
            ld_req_error(req, 400, "invalid_field", "%s must be one image (numbers)", what);
            return -1;
        }
        if (ld_arg_matrix(req, im_j, what, a->x_dim, 1, 1, 0.0f, 1.0f, &x, &n) != 0)
            return -1;
    } else {
        if (!cJSON_IsString(png_j)) {
            ld_req_error(req, 400, "invalid_field", "%s must be a base64 PNG string", what);
            return -1;
        }
        if (read_images(req, api, s, ep, "image", "png", 1, &x, &n) != 0)
            return -1;
    }
    int rc = gan ? ld_invert_endpoint(req, s, x, z)
                 : encode_checked(req, s, 1, x, s->model->ops->conditional ? label : NULL, &mu,
                                  &lv);
    free(x);
    if (rc != 0 || gan)
        return rc;
    memcpy(z, mu, (size_t)a->z_dim * sizeof *z);
    free(mu);
    free(lv);
    return 0;
}

/* path (steps, d): from a to b, lerp or slerp, computed in double. */
static void interpolate(const float *a, const float *b, int d, int steps, int slerp, float *path)
{
    double na = 0, nb = 0, dot = 0;
    for (int i = 0; i < d; i++) {
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
        dot += (double)a[i] * b[i];
    }
    na = sqrt(na);
    nb = sqrt(nb);
    double omega = 0, so = 0;
    if (slerp && na > 0 && nb > 0) {
        double c = dot / (na * nb);
        c = c > 1 ? 1 : c < -1 ? -1 : c;
        omega = acos(c);
        so = sin(omega);
    }
    for (int k = 0; k < steps; k++) {
        double t = (double)k / (double)(steps - 1);
        double wa, wb;
        if (so > 1e-6) { /* slerp; nearly parallel vectors fall back to lerp */
            wa = sin((1 - t) * omega) / so;
            wb = sin(t * omega) / so;
        } else {
            wa = 1 - t;
            wb = t;
        }
        for (int i = 0; i < d; i++)
            path[(size_t)k * (size_t)d + (size_t)i] = (float)(wa * a[i] + wb * b[i]);
    }
}

/* A conditional model's walk: z along path (n, z_dim) and the label
 * embedding from class la's to lb's in n even steps, decoded on this thread
 * (ld_model_decode_mix: the batcher takes whole labels only). */
static void interpolate_labels(ld_req_t *req, ld_api_t *api, const ld_served_t *s,
                               const out_opts_t *o, int n, const float *path, uint8_t la,
                               uint8_t lb, const char *fields)
{
    float *x = ld_malloc_array((size_t)n * (size_t)s->model->arch.x_dim, sizeof *x);
    float *t = ld_malloc_array((size_t)n, sizeof *t);
    uint8_t *from = malloc((size_t)n), *to = malloc((size_t)n);
    ld_err_t e;
    int rc = x && t && from && to ? LD_OK : LD_ENOMEM;
    for (int k = 0; !rc && k < n; k++) {
        t[k] = (float)k / (float)(n - 1);
        from[k] = la;
        to[k] = lb;
    }
    if (rc)
        ld_req_error(req, 503, "overloaded", "out of memory");
    else if ((rc = ld_model_decode_mix(s->model, n, path, from, to, t, x, &e)) != LD_OK)
        model_error(req, rc, &e);
    else
        reply_images(req, api, s, o, n, path, x, fields);
    free(x);
    free(t);
    free(from);
    free(to);
}

static void h_interpolate(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const data[] = {"from", "to", "steps", "method", NULL};
    ld_args_t args;
    const uint8_t *npy;
    size_t npy_len;
    long long steps;
    int method;
    out_opts_t o;
    if (body_args(req, data, image_opts, &args, &npy, &npy_len) != 0 ||
        ld_arg_int(&args, "steps", 2, api->max_samples, 8, &steps) != 0 ||
        ld_arg_enum(&args, "method", methods, 0, &method) != 0 ||
        parse_out_opts(&args, api, FMT_JSON, &o) != 0)
        return;
    ld_served_t *s = get_model(req, api);
    if (!s)
        return;
    const ld_arch_t *a = &s->model->arch;
    int n = (int)steps;
    float *za = NULL, *zb = NULL, *path = NULL;
    if (need_generator(req, s) != 0)
        goto done;
    za = ld_malloc_array((size_t)a->z_dim, sizeof *za);
    zb = ld_malloc_array((size_t)a->z_dim, sizeof *zb);
    path = ld_malloc_array((size_t)n * (size_t)a->z_dim, sizeof *path);
    if (!za || !zb || !path) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        goto done;
    }
    uint8_t la, lb;
    if (read_endpoint(req, api, s, args.obj, "from", za, &la) != 0 ||
        read_endpoint(req, api, s, args.obj, "to", zb, &lb) != 0)
        goto done;
    interpolate(za, zb, a->z_dim, n, method == 0, path);
    if (!all_finite(path, (size_t)n * (size_t)a->z_dim)) {
        ld_req_error(req, 422, "invalid_value", "the end points are too large to interpolate");
        goto done;
    }
    if (o.format == FMT_PNG && o.cols == 0)
        o.cols = n; /* one strip */
    char fields[64];
    snprintf(fields, sizeof fields, "\"method\":\"%s\",\"steps\":%d,", methods[method], n);
    if (s->model->ops->conditional)
        interpolate_labels(req, api, s, &o, n, path, la, lb, fields);
    else
        reply_decoded(req, api, s, &o, n, path, NULL, 1, fields);
done:
    free(za);
    free(zb);
    free(path);
    ld_served_release(s);
}

/* ------------------------------------- for handlers in other files (api_impl.h) */

ld_registry_t *ld_api_registry(const ld_api_t *api) { return api->reg; }
int ld_api_all_finite(const float *x, size_t n) { return all_finite(x, n); }
struct ld_jobs *ld_api_jobs(const ld_api_t *api) { return api->opts.jobs; }

int ld_api_body_args(ld_req_t *req, const char *const *data, const char *const *opts,
                     ld_args_t *a, const uint8_t **npy, size_t *npy_len)
{
    return body_args(req, data, opts, a, npy, npy_len);
}

int ld_api_out_opts(const ld_args_t *a, ld_api_t *api, ld_api_out_t *o)
{
    out_opts_t oo = {FMT_JSON, 0, GRID_PAD_DEFAULT};
    if (parse_out_opts(a, api, FMT_JSON, &oo) != 0)
        return -1;
    *o = (ld_api_out_t){oo.format, oo.cols, oo.pad};
    return 0;
}

int ld_api_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const ld_args_t *a,
                  const uint8_t *npy, size_t npy_len, float **x, int *n)
{
    return body_images(req, api, s, a, npy, npy_len, x, n);
}

void ld_api_reply_binary(ld_req_t *req, const ld_api_out_t *o, const ld_arch_t *a,
                         const float *x, int n)
{
    out_opts_t oo = {o->format, o->cols, o->pad};
    reply_binary(req, &oo, a, x, n);
}

int ld_api_job_accepted(ld_req_t *req, int rc, int retry, const ld_err_t *e, const char *id,
                        ld_buf_t *b)
{
    char loc[64], ra[16];
    if (rc == LD_EBUSY) {
        snprintf(ra, sizeof ra, "%d", retry > 0 ? retry : 1);
        ld_req_header_add(req, "Retry-After", ra);
        ld_req_error(req, 429, "queue_full", "%s", e->msg);
        return -1;
    }
    if (rc) {
        ld_req_error(req, rc == LD_ENOMEM ? 503 : 500, rc == LD_ENOMEM ? "overloaded" : "internal",
                     "%s", e->msg);
        return -1;
    }
    snprintf(loc, sizeof loc, "/v1/jobs/%s/result", id);
    ld_req_header_add(req, "Location", loc);
    ld_buf_init(b);
    ld_buf_puts(b, "{\"id\":");
    ld_buf_json_str(b, id);
    ld_buf_puts(b, ",\"state\":\"queued\",\"result\":");
    ld_buf_json_str(b, loc);
    return 0;
}

/* ------------------------------------------------------------ registration */

int ld_api_new(const ld_api_opts_t *opts, ld_api_t **out, ld_err_t *err)
{
    ld_api_t *api = calloc(1, sizeof *api);
    if (!api)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    api->opts = *opts;
    api->reg = opts->registry;
    api->metrics = opts->metrics;
    api->max_samples = opts->max_samples > 0 ? opts->max_samples : 1;
    api->opts.max_samples = api->max_samples;
    if (!api->opts.max_upload)
        api->opts.max_upload = (size_t)256 << 20;
    *out = api;
    return LD_OK;
}

void ld_api_free(ld_api_t *api)
{
    free(api);
}

int ld_api_register(ld_api_t *api, ld_http_t *h, ld_err_t *err)
{
    const ld_route_t routes[] = {
        {"GET", "/healthz", LD_AUTH_NONE, 0, h_healthz, api},
        {"GET", "/readyz", LD_AUTH_NONE, 0, h_readyz, api},
        {"GET", "/metrics", LD_AUTH_INFERENCE, 0, h_metrics, api},
        {"GET", "/v1/models", LD_AUTH_INFERENCE, 0, h_models_list, api},
        {"GET", "/v1/models/{name}", LD_AUTH_INFERENCE, 0, h_model_get, api},
        {"PUT", "/v1/models/{name}", LD_AUTH_ADMIN, LD_ROUTE_JSON_OPTIONAL, h_model_put, api},
        {"DELETE", "/v1/models/{name}", LD_AUTH_ADMIN, 0, h_model_delete, api},
        {"GET", "/v1/models/{name}/file", LD_AUTH_ADMIN, 0, ld_model_file_handler, api},
        {"POST", "/v1/models/{name}/sample", LD_AUTH_INFERENCE, LD_ROUTE_JSON_OPTIONAL, h_sample, api},
        {"GET", "/v1/models/{name}/sample.png", LD_AUTH_INFERENCE, 0, h_sample_png, api},
        {"POST", "/v1/models/{name}/encode", LD_AUTH_INFERENCE, LD_ROUTE_JSON | LD_ROUTE_NPY,
         h_encode, api},
        {"POST", "/v1/models/{name}/decode", LD_AUTH_INFERENCE, LD_ROUTE_JSON | LD_ROUTE_NPY,
         h_decode, api},
        {"POST", "/v1/models/{name}/reconstruct", LD_AUTH_INFERENCE, LD_ROUTE_JSON | LD_ROUTE_NPY,
         h_reconstruct, api},
        {"POST", "/v1/models/{name}/interpolate", LD_AUTH_INFERENCE, LD_ROUTE_JSON, h_interpolate, api},
        {"POST", "/v1/models/{name}/invert", LD_AUTH_INFERENCE, LD_ROUTE_JSON | LD_ROUTE_NPY,
         ld_invert_handler, api},
        {"POST", "/v1/models/{name}/evaluate", LD_AUTH_ADMIN, LD_ROUTE_JSON_OPTIONAL,
         ld_evaluate_handler, api},
        {"POST", "/v1/models/{name}/classify", LD_AUTH_INFERENCE, LD_ROUTE_JSON | LD_ROUTE_NPY,
         ld_classify_handler, api},
    };
    api->http = h;
    for (size_t i = 0; i < LD_ARRAY_LEN(routes); i++) {
        int rc = ld_http_route_add(h, &routes[i], err);
        if (rc != LD_OK)
            return rc;
    }
    ld_stream_t up = ld_model_upload_stream(api->opts.max_upload);
    int rc = ld_http_route_stream(h, "PUT", "/v1/models/{name}", &up, err);
    if (rc != LD_OK)
        return rc;
    return ld_v2_register(h, &api->opts, err);
}

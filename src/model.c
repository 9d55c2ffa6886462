/* model.c — architectures, the parameter block, checkpoints and inference.
 * See model.h for the layout of each kind and the tensor names. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/model.h"

#include "latentd/nets.h"
#include "mlp_impl.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

/* Rows per inference chunk: bounds per-call scratch (~256 x 784 floats for
 * the dense nets; a layer list keeps its outputs under INFER_FLOATS). */
#define INFER_CHUNK 256
#define INFER_FLOATS (1 << 20)

static const char *const netarch_names[LD_NETS_N] = {"mlp", "dcgan", "conv", "resmlp", "cmlp"};

const char *ld_netarch_name(ld_netarch_t a)
{
    return (unsigned)a < LD_NETS_N ? netarch_names[a] : "?";
}

int ld_netarch_parse(const char *s, ld_netarch_t *out)
{
    for (int i = 0; s && i < LD_NETS_N; i++)
        if (!strcmp(s, netarch_names[i])) {
            *out = (ld_netarch_t)i;
            return 0;
        }
    return -1;
}

static const char *const kind_names[] = {NULL, "vae", "gan", "classifier", "cgan", "cvae"};

const char *ld_kind_name(ld_kind_t k)
{
    return (k >= LD_KIND_VAE && k <= LD_KIND_CVAE) ? kind_names[k] : "?";
}

int ld_kind_parse(const char *s, ld_kind_t *out)
{
    for (int k = LD_KIND_VAE; s && k <= LD_KIND_CVAE; k++)
        if (strcmp(s, kind_names[k]) == 0) {
            *out = (ld_kind_t)k;
            return 0;
        }
    return -1;
}

static void hidden_set(ld_hidden_t *h, int n, const int *sizes)
{
    h->n = n;
    for (int i = 0; i < n; i++)
        h->size[i] = sizes[i];
}

/* h * w, or -1 when the product does not fit an int (validation then refuses
 * the shape: each side is 1..256). */
static int x_dim_of(int64_t h, int64_t w)
{
    int64_t d = h * w; /* |h|, |w| <= 2^31: no overflow in 64 bits */
    return d >= 0 && d <= INT_MAX ? (int)d : -1;
}

void ld_arch_default(ld_kind_t kind, ld_arch_t *a)
{
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->img_h = a->img_w = 28;
    a->x_dim = 784;
    a->act = LD_ACT_LRELU;
    a->slope = 0.2f;
    if (ld_kind_ops(kind) && ld_kind_ops(kind)->conditional) {
        /* the family's widths, as a layer list after a label embedding */
        ld_arch_default(ld_kind_family(kind), a);
        a->kind = kind;
        a->net = LD_NETS_CMLP;
        a->n_classes = 10;
        a->embed = 10;
        return;
    }
    switch (kind) {
    case LD_KIND_VAE:
        a->z_dim = 20;
        hidden_set(&a->enc, 2, (int[]){128, 64});
        hidden_set(&a->dec, 2, (int[]){64, 128});
        break;
    case LD_KIND_GAN:
        a->z_dim = 100;
        hidden_set(&a->dec, 2, (int[]){256, 512});
        hidden_set(&a->enc, 2, (int[]){512, 256});
        a->dropout = 0.3f;
        break;
    case LD_KIND_CLASSIFIER:
        a->n_classes = 10;
        hidden_set(&a->enc, 2, (int[]){256, 128});
        a->dropout = 0.2f;
        break;
    default: /* the conditional kinds, above */
        break;
    }
}

void ld_arch_article_gan(ld_arch_t *a)
{
    ld_arch_default(LD_KIND_GAN, a);
    hidden_set(&a->dec, 2, (int[]){128, 128});
    hidden_set(&a->enc, 2, (int[]){128, 128});
    a->dropout = 0.0f;
}

static int check_hidden(const ld_hidden_t *h, const char *what, int min_n, ld_err_t *err)
{
    if (h->n < min_n || h->n > LD_MAX_HIDDEN)
        return ld_err_set(err, LD_EINVAL, "%s needs %d to %d hidden layers, got %d", what, min_n,
                          LD_MAX_HIDDEN, h->n);
    for (int i = 0; i < h->n; i++)
        if (h->size[i] < 1 || h->size[i] > LD_MAX_WIDTH)
            return ld_err_set(err, LD_EINVAL, "%s hidden layer %d has width %d (allowed 1..%d)",
                              what, i, h->size[i], LD_MAX_WIDTH);
    return LD_OK;
}

/* A layer-list architecture fits the kind, the image and the hidden lists. */
static int check_netarch(const ld_arch_t *a, ld_err_t *err)
{
    const char *n = ld_netarch_name(a->net);
    if ((unsigned)a->net >= LD_NETS_N)
        return ld_err_set(err, LD_EINVAL, "unknown net architecture %d", (int)a->net);
    ld_kind_t only = a->net == LD_NETS_DCGAN ? LD_KIND_GAN : a->net == LD_NETS_CONV ? LD_KIND_VAE : 0;
    int cond = ld_kind_ops(a->kind)->conditional;
    if (cond != (a->net == LD_NETS_CMLP))
        return ld_err_set(err, LD_EINVAL, "net architecture %s is %s, not %s", n,
                          cond ? "not for conditional models (cgan and cvae use cmlp)"
                               : "for cgan and cvae models",
                          ld_kind_name(a->kind));
    if (cond) {
        if (a->n_classes < 2 || a->n_classes > 256)
            return ld_err_set(err, LD_EINVAL, "classes=%d is outside 2..256", a->n_classes);
        if (a->embed < 1 || a->embed > 1024)
            return ld_err_set(err, LD_EINVAL, "embed=%d is outside 1..1024", a->embed);
        return LD_OK;
    }
    if ((only && a->kind != only) || a->kind == LD_KIND_CLASSIFIER)
        return ld_err_set(err, LD_EINVAL, "net architecture %s is for %s models, not %s", n,
                          only ? ld_kind_name(only) : "vae and gan", ld_kind_name(a->kind));
    if (a->net != LD_NETS_RESMLP) {
        if (a->img_h != 28 || a->img_w != 28)
            return ld_err_set(err, LD_EINVAL, "net architecture %s needs 28x28 images, not %dx%d",
                              n, a->img_h, a->img_w);
        if (a->net != LD_NETS_CONV)
            return LD_OK;
        if (a->dec.n == 1 || a->dec.n > 4) /* none: the decoder of older files */
            return ld_err_set(err, LD_EINVAL, "the conv decoder takes 2 to 4 channel counts "
                              "(7x7 maps, then 14x14 maps), got %d", a->dec.n);
        int rc = check_hidden(&a->dec, "decoder", 0, err);
        for (int i = 0; !rc && i < a->dec.n; i++) { /* nets.h: the first 1 or 2 maps are 7x7 */
            int side = i < (a->dec.n >= 3 ? 2 : 1) ? 7 : 14;
            if ((long)a->dec.size[i] * side * side > LD_NET_MAX_DIM)
                rc = ld_err_set(err, LD_EINVAL, "conv decoder map %d: %d channels of %dx%d "
                                "exceed %d values a row", i, a->dec.size[i], side, side,
                                LD_NET_MAX_DIM);
        }
        return rc;
    }
    const ld_hidden_t *h[2] = {&a->enc, &a->dec};
    for (int k = 0; k < 2; k++) {
        if (h[k]->n < 1)
            return ld_err_set(err, LD_EINVAL, "resmlp needs at least one hidden width per net");
        for (int i = 1; i < h[k]->n; i++)
            if (h[k]->size[i] != h[k]->size[0])
                return ld_err_set(err, LD_EINVAL, "resmlp needs equal hidden widths (one "
                                  "residual block each), got %d and %d", h[k]->size[0],
                                  h[k]->size[i]);
    }
    return LD_OK;
}

int ld_arch_set_net(ld_arch_t *a, ld_netarch_t n, ld_err_t *err)
{
    a->net = n;
    if (n == LD_NETS_DCGAN || n == LD_NETS_CONV) {
        a->enc.n = a->dec.n = 0; /* fixed by nets.h, but the conv decoder's channels */
        if (n == LD_NETS_CONV)
            hidden_set(&a->dec, LD_CONV_VAE_DEC_N, (int[])LD_CONV_VAE_DEC);
        a->dropout = 0.0f;
    } else if (n == LD_NETS_RESMLP) {
        hidden_set(&a->enc, 2, (int[]){256, 256});
        hidden_set(&a->dec, 2, (int[]){256, 256});
        a->dropout = 0.0f;
    }
    return ld_arch_validate(a, err);
}

int ld_arch_validate(const ld_arch_t *a, ld_err_t *err)
{
    if (!ld_kind_ops(a->kind))
        return ld_err_set(err, LD_EINVAL, "unknown model kind %d", (int)a->kind);
    if (a->img_h < 1 || a->img_w < 1 || a->img_h > 256 || a->img_w > 256 ||
        a->x_dim != a->img_h * a->img_w)
        return ld_err_set(err, LD_EINVAL, "image shape %dx%d is invalid (each side 1..256)",
                          a->img_h, a->img_w);
    if (!(a->slope >= 0.0f && a->slope < 1.0f))
        return ld_err_set(err, LD_EINVAL, "activation slope %g is outside [0,1)", a->slope);
    if (!(a->dropout >= 0.0f && a->dropout < 1.0f))
        return ld_err_set(err, LD_EINVAL, "dropout %g is outside [0,1)", a->dropout);
    if (a->act == LD_ACT_NONE || (unsigned)a->act > LD_ACT_SIGMOID)
        return ld_err_set(err, LD_EINVAL, "hidden activation must be leaky_relu, relu, tanh or sigmoid");
    int rc;
    if ((a->net != LD_NETS_MLP || ld_kind_ops(a->kind)->conditional) &&
        (rc = check_netarch(a, err)))
        return rc;
    ld_kind_t fam = ld_kind_family(a->kind);
    switch (fam) {
    case LD_KIND_VAE:
    case LD_KIND_GAN:
        if (a->z_dim < 1 || a->z_dim > 1024)
            return ld_err_set(err, LD_EINVAL, "latent size z=%d is outside 1..1024", a->z_dim);
        if (a->net == LD_NETS_DCGAN || a->net == LD_NETS_CONV)
            return LD_OK; /* no hidden lists but the conv decoder's, checked above */
        if ((rc = check_hidden(&a->enc, fam == LD_KIND_VAE ? "encoder" : "discriminator",
                               fam == LD_KIND_VAE ? 1 : 0, err)))
            return rc;
        return check_hidden(&a->dec, fam == LD_KIND_VAE ? "decoder" : "generator", 0, err);
    case LD_KIND_CLASSIFIER:
        if (a->n_classes < 2 || a->n_classes > 256)
            return ld_err_set(err, LD_EINVAL, "classes=%d is outside 2..256", a->n_classes);
        return check_hidden(&a->enc, "classifier", 1, err);
    default: /* families only */
        break;
    }
    return LD_OK;
}

/* JSON names of the two hidden lists per kind. */
static void hidden_keys(ld_kind_t k, const char **enc, const char **dec)
{
    k = ld_kind_family(k);
    *enc = k == LD_KIND_VAE ? "encoder" : k == LD_KIND_GAN ? "discriminator" : "hidden";
    *dec = k == LD_KIND_VAE ? "decoder" : k == LD_KIND_GAN ? "generator" : NULL;
}

static int append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int append(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + (*pos < len ? *pos : len), *pos < len ? len - *pos : 0, fmt, ap);
    va_end(ap);
    *pos += (size_t)(n > 0 ? n : 0);
    return n;
}

static void append_list(char *buf, size_t len, size_t *pos, const ld_hidden_t *h)
{
    append(buf, len, pos, "[");
    for (int i = 0; i < h->n; i++)
        append(buf, len, pos, "%s%d", i ? "," : "", h->size[i]);
    append(buf, len, pos, "]");
}

int ld_arch_to_json(const ld_arch_t *a, char *buf, size_t len)
{
    size_t pos = 0;
    const char *ek, *dk;
    hidden_keys(a->kind, &ek, &dk);
    append(buf, len, &pos, "{\"kind\":\"%s\",\"image\":[%d,%d]", ld_kind_name(a->kind), a->img_h,
           a->img_w);
    if (a->kind == LD_KIND_CLASSIFIER)
        append(buf, len, &pos, ",\"classes\":%d", a->n_classes);
    else
        append(buf, len, &pos, ",\"z\":%d", a->z_dim);
    if (ld_kind_ops(a->kind) && ld_kind_ops(a->kind)->conditional)
        append(buf, len, &pos, ",\"classes\":%d,\"embed\":%d", a->n_classes, a->embed);
    if (dk) {
        append(buf, len, &pos, ",\"%s\":", dk);
        append_list(buf, len, &pos, &a->dec);
    }
    append(buf, len, &pos, ",\"%s\":", ek);
    append_list(buf, len, &pos, &a->enc);
    append(buf, len, &pos, ",\"act\":\"%s\",\"slope\":%g,\"dropout\":%g", ld_act_name(a->act),
           (double)a->slope, (double)a->dropout);
    if (a->net != LD_NETS_MLP) /* absent for dense nets: older files read the same */
        append(buf, len, &pos, ",\"net\":\"%s\"", ld_netarch_name(a->net));
    append(buf, len, &pos, "}");
    return pos < len ? (int)pos : -1;
}

/* 1 and *out = v if v is a JSON number holding an integer that fits an int
 * (the range is checked before the conversion: 1e300 must not reach a cast). */
static int json_as_int(const cJSON *v, int *out)
{
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= INT_MIN && v->valuedouble <= INT_MAX) ||
        v->valuedouble != floor(v->valuedouble))
        return 0;
    *out = (int)v->valuedouble;
    return 1;
}

/* A number meant for [0,1) into *out when v is one; a value no float holds
 * becomes NaN, which validation refuses (converting it would be undefined). */
static void json_fraction(const cJSON *v, float *out)
{
    if (cJSON_IsNumber(v))
        *out = fabs(v->valuedouble) <= 1.0 ? (float)v->valuedouble : NAN;
}

static int json_hidden(const cJSON *o, const char *key, ld_hidden_t *h, ld_err_t *err)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(arr))
        return ld_err_set(err, LD_EFORMAT, "arch: \"%s\" must be an array of widths", key);
    int n = cJSON_GetArraySize(arr);
    if (n > LD_MAX_HIDDEN)
        return ld_err_set(err, LD_EFORMAT, "arch: \"%s\" has %d layers (max %d)", key, n,
                          LD_MAX_HIDDEN);
    h->n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!json_as_int(it, &h->size[h->n++]))
            return ld_err_set(err, LD_EFORMAT, "arch: \"%s\" holds a non-integer or a value "
                              "beyond %d", key, INT_MAX);
    }
    return LD_OK;
}

static int json_int(const cJSON *o, const char *key, int *out, ld_err_t *err)
{
    if (!json_as_int(cJSON_GetObjectItemCaseSensitive(o, key), out))
        return ld_err_set(err, LD_EFORMAT, "arch: \"%s\" must be an integer within +-%d", key,
                          INT_MAX);
    return LD_OK;
}

int ld_arch_from_json(const char *json, ld_arch_t *a, ld_err_t *err)
{
    cJSON *o = cJSON_Parse(json);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return ld_err_set(err, LD_EFORMAT, "arch: not a JSON object");
    }
    int rc = LD_OK;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    ld_kind_t k;
    if (!cJSON_IsString(kind) || ld_kind_parse(kind->valuestring, &k)) {
        rc = ld_err_set(err, LD_EFORMAT, "arch: \"kind\" must be vae, gan, classifier, cgan "
                        "or cvae");
        goto out;
    }
    ld_arch_default(k, a);
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(o, "image");
    if (!cJSON_IsArray(img) || cJSON_GetArraySize(img) != 2 ||
        !json_as_int(cJSON_GetArrayItem(img, 0), &a->img_h) ||
        !json_as_int(cJSON_GetArrayItem(img, 1), &a->img_w)) {
        rc = ld_err_set(err, LD_EFORMAT, "arch: \"image\" must be [height, width] (integers)");
        goto out;
    }
    a->x_dim = x_dim_of(a->img_h, a->img_w);
    const char *ek, *dk;
    hidden_keys(k, &ek, &dk);
    if ((rc = json_hidden(o, ek, &a->enc, err)) || (dk && (rc = json_hidden(o, dk, &a->dec, err))))
        goto out;
    if ((rc = k == LD_KIND_CLASSIFIER ? json_int(o, "classes", &a->n_classes, err)
                                      : json_int(o, "z", &a->z_dim, err)))
        goto out;
    if (ld_kind_ops(k)->conditional && ((rc = json_int(o, "classes", &a->n_classes, err)) ||
                                        (rc = json_int(o, "embed", &a->embed, err))))
        goto out;
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(o, "act");
    if (act && (!cJSON_IsString(act) || ld_act_parse(act->valuestring, &a->act))) {
        rc = ld_err_set(err, LD_EFORMAT, "arch: unknown activation");
        goto out;
    }
    const cJSON *net = cJSON_GetObjectItemCaseSensitive(o, "net");
    if (net && (!cJSON_IsString(net) || ld_netarch_parse(net->valuestring, &a->net))) {
        rc = ld_err_set(err, LD_EFORMAT, "arch: \"net\" must be mlp, dcgan, conv, resmlp or cmlp");
        goto out;
    }
    json_fraction(cJSON_GetObjectItemCaseSensitive(o, "slope"), &a->slope);
    json_fraction(cJSON_GetObjectItemCaseSensitive(o, "dropout"), &a->dropout);
    rc = ld_arch_validate(a, err);
out:
    cJSON_Delete(o);
    return rc;
}

void ld_arch_describe(const ld_arch_t *a, char *buf, size_t len)
{
    size_t pos = 0;
    append(buf, len, &pos, "%s %dx%d", ld_kind_name(a->kind), a->img_h, a->img_w);
    if (a->net == LD_NETS_DCGAN || a->net == LD_NETS_CONV) {
        append(buf, len, &pos, " %s z%d", ld_netarch_name(a->net), a->z_dim);
        for (int i = 0; i < a->dec.n && a->net == LD_NETS_CONV; i++) /* decoder channels */
            append(buf, len, &pos, "%s%d", i ? "," : " decoder ", a->dec.size[i]);
        return;
    }
    if (a->net == LD_NETS_RESMLP)
        append(buf, len, &pos, " resmlp");
    if (a->net == LD_NETS_CMLP)
        append(buf, len, &pos, " %d classes, embed %d,", a->n_classes, a->embed);
    ld_kind_t fam = ld_kind_family(a->kind);
    const ld_hidden_t *first = fam == LD_KIND_GAN ? &a->dec : &a->enc;
    const ld_hidden_t *second = fam == LD_KIND_GAN ? &a->enc : &a->dec;
    const char *n1 = fam == LD_KIND_GAN ? " G " : " ";
    append(buf, len, &pos, "%s%d", n1, fam == LD_KIND_GAN ? a->z_dim : a->x_dim);
    for (int i = 0; i < first->n; i++)
        append(buf, len, &pos, "-%d", first->size[i]);
    if (fam == LD_KIND_VAE) {
        append(buf, len, &pos, "-z%d | %d", a->z_dim, a->z_dim);
        for (int i = 0; i < second->n; i++)
            append(buf, len, &pos, "-%d", second->size[i]);
        append(buf, len, &pos, "-%d", a->x_dim);
    } else if (fam == LD_KIND_GAN) {
        append(buf, len, &pos, "-%d | D %d", a->x_dim, a->x_dim);
        for (int i = 0; i < second->n; i++)
            append(buf, len, &pos, "-%d", second->size[i]);
        append(buf, len, &pos, "-1");
    } else {
        append(buf, len, &pos, "-%d", a->n_classes);
    }
    append(buf, len, &pos, ", %s", ld_act_name(a->act));
    if (a->act == LD_ACT_LRELU)
        append(buf, len, &pos, "(%g)", (double)a->slope);
    if (a->dropout > 0)
        append(buf, len, &pos, ", dropout %g", (double)a->dropout);
}

/* ---- the parameter block ---- */

/* sizes = [first, hidden..., last] */
static int chain(int *sizes, int first, const ld_hidden_t *h, int last)
{
    sizes[0] = first;
    for (int i = 0; i < h->n; i++)
        sizes[1 + i] = h->size[i];
    sizes[1 + h->n] = last;
    return h->n + 1; /* layers */
}

/* The layer lists of dense nets: the same offsets and tensor names. */
static void layers_from_mlp(ld_model_t *m, int n_nets)
{
    for (int i = 0; i < n_nets; i++)
        ld_nets_from_mlp(&m->nets[i], &m->layers[i]);
}

/* Each kind's layout: its nets from *off / *boff (advanced); returns how many. */
static int vae_layout(ld_model_t *m, size_t *off, size_t *boff)
{
    const ld_arch_t *a = &m->arch;
    int s[LD_MAX_LAYERS + 1], L;
    ld_net_t *n = m->layers;
    if (a->net == LD_NETS_CONV) {
        ld_nets_conv_vae(a->z_dim, a->dec.n, a->dec.size, &n[LD_VAE_ENC], &n[LD_VAE_MU],
                         &n[LD_VAE_LOGVAR], &n[LD_VAE_DEC], off, boff);
    } else if (a->net == LD_NETS_RESMLP) {
        int w = a->enc.size[0], wd = a->dec.size[0];
        ld_nets_resmlp(&n[LD_VAE_ENC], "encoder", a->x_dim, w, a->enc.n, w, LD_LAYER_N_KINDS,
                       a->slope, off, boff);
        for (int i = 0; i < 2; i++) {
            ld_net_t *h = &n[i ? LD_VAE_LOGVAR : LD_VAE_MU];
            ld_net_init(h, i ? "logvar" : "mu", LD_NAMES_SINGLE, (ld_shape_t){w, 1, 1});
            LD_ASSERT(ld_net_add_linear(h, a->z_dim, NULL) == LD_OK);
            LD_ASSERT(ld_net_layout(h, off, boff, NULL) == LD_OK);
        }
        ld_nets_resmlp(&n[LD_VAE_DEC], "decoder", a->z_dim, wd, a->dec.n, a->x_dim,
                       LD_LAYER_N_KINDS, a->slope, off, boff);
    } else if (a->net == LD_NETS_CMLP) {
        /* the label embedded and concatenated to x (encoder) and to z (decoder) */
        int h = a->enc.size[a->enc.n - 1];
        s[0] = a->x_dim;
        for (int i = 0; i < a->enc.n; i++)
            s[1 + i] = a->enc.size[i];
        ld_nets_cmlp(&n[LD_VAE_ENC], "encoder", a->n_classes, a->embed, a->enc.n, s, a->act,
                     a->act, a->slope, 0, off, boff);
        for (int i = 0; i < 2; i++) {
            ld_net_t *hd = &n[i ? LD_VAE_LOGVAR : LD_VAE_MU];
            ld_net_init(hd, i ? "logvar" : "mu", LD_NAMES_SINGLE, (ld_shape_t){h, 1, 1});
            LD_ASSERT(ld_net_add_linear(hd, a->z_dim, NULL) == LD_OK);
            LD_ASSERT(ld_net_layout(hd, off, boff, NULL) == LD_OK);
        }
        L = chain(s, a->z_dim, &a->dec, a->x_dim);
        ld_nets_cmlp(&n[LD_VAE_DEC], "decoder", a->n_classes, a->embed, L, s, a->act,
                     LD_ACT_NONE, a->slope, 0, off, boff);
    } else {
        int h = a->enc.size[a->enc.n - 1];
        /* encoder: x -> hidden..., activation after every layer (its last is h) */
        s[0] = a->x_dim;
        for (int i = 0; i < a->enc.n; i++)
            s[1 + i] = a->enc.size[i];
        ld_mlp_layout(&m->nets[LD_VAE_ENC], "encoder", 1, a->enc.n, s, a->act, a->act, a->slope,
                      0, off);
        int head[2] = {h, a->z_dim};
        ld_mlp_layout(&m->nets[LD_VAE_MU], "mu", 0, 1, head, a->act, LD_ACT_NONE, a->slope, 0,
                      off);
        ld_mlp_layout(&m->nets[LD_VAE_LOGVAR], "logvar", 0, 1, head, a->act, LD_ACT_NONE,
                      a->slope, 0, off);
        L = chain(s, a->z_dim, &a->dec, a->x_dim);
        ld_mlp_layout(&m->nets[LD_VAE_DEC], "decoder", 1, L, s, a->act, LD_ACT_NONE, a->slope, 0,
                      off);
        layers_from_mlp(m, 4);
    }
    return 4;
}

static int gan_layout(ld_model_t *m, size_t *off, size_t *boff)
{
    const ld_arch_t *a = &m->arch;
    int s[LD_MAX_LAYERS + 1], L;
    ld_net_t *n = m->layers;
    if (a->net == LD_NETS_DCGAN) {
        ld_nets_dcgan(a->z_dim, &n[LD_GAN_G], &n[LD_GAN_D], off, boff);
    } else if (a->net == LD_NETS_RESMLP) {
        ld_nets_resmlp(&n[LD_GAN_G], "generator", a->z_dim, a->dec.size[0], a->dec.n, a->x_dim,
                       LD_LAYER_SIGMOID, a->slope, off, boff);
        ld_nets_resmlp(&n[LD_GAN_D], "discriminator", a->x_dim, a->enc.size[0], a->enc.n, 1,
                       LD_LAYER_N_KINDS, a->slope, off, boff);
    } else if (a->net == LD_NETS_CMLP) {
        /* the label embedded and concatenated to z (G) and to the image (D) */
        L = chain(s, a->z_dim, &a->dec, a->x_dim);
        ld_nets_cmlp(&n[LD_GAN_G], "generator", a->n_classes, a->embed, L, s, a->act,
                     LD_ACT_SIGMOID, a->slope, 0, off, boff);
        L = chain(s, a->x_dim, &a->enc, 1);
        ld_nets_cmlp(&n[LD_GAN_D], "discriminator", a->n_classes, a->embed, L, s, a->act,
                     LD_ACT_NONE, a->slope, a->dropout, off, boff);
    } else {
        L = chain(s, a->z_dim, &a->dec, a->x_dim);
        ld_mlp_layout(&m->nets[LD_GAN_G], "generator", 1, L, s, a->act, LD_ACT_SIGMOID, a->slope,
                      0, off);
        L = chain(s, a->x_dim, &a->enc, 1);
        ld_mlp_layout(&m->nets[LD_GAN_D], "discriminator", 1, L, s, a->act, LD_ACT_NONE,
                      a->slope, a->dropout, off);
        layers_from_mlp(m, 2);
    }
    return 2;
}

static int cls_layout(ld_model_t *m, size_t *off, size_t *boff)
{
    const ld_arch_t *a = &m->arch;
    int s[LD_MAX_LAYERS + 1];
    int L = chain(s, a->x_dim, &a->enc, a->n_classes);
    ld_mlp_layout(&m->nets[LD_CLS_NET], "classifier", 1, L, s, a->act, LD_ACT_NONE, a->slope,
                  a->dropout, off);
    layers_from_mlp(m, 1);
    return 1;
}

static const char *const vae_losses[] = {"loss", "rec", "kl"};
static const char *const gan_losses[] = {"d_loss", "g_loss", "d_real", "d_fake"};
static const char *const cls_losses[] = {"loss", "acc"};

static const ld_kind_ops_t kind_ops[] = {
    [LD_KIND_VAE] = {"vae", "a VAE", 3, vae_losses, LD_VAE_DEC, LD_VAE_ENC, LD_ACT_SIGMOID, 0,
                     vae_layout, .family = LD_KIND_VAE, .has_elbo = 1},
    [LD_KIND_GAN] = {"gan", "a GAN", 4, gan_losses, LD_GAN_G, -1, LD_ACT_NONE, 0, gan_layout,
                     .family = LD_KIND_GAN, .invertible = 1},
    [LD_KIND_CLASSIFIER] = {"classifier", "a classifier", 2, cls_losses, -1, -1, LD_ACT_NONE, 1,
                            cls_layout, .family = LD_KIND_CLASSIFIER, .classifies = 1},
    [LD_KIND_CGAN] = {"cgan", "a conditional GAN", 4, gan_losses, LD_GAN_G, -1, LD_ACT_NONE, 1,
                      gan_layout, .family = LD_KIND_GAN, .conditional = 1},
    [LD_KIND_CVAE] = {"cvae", "a conditional VAE", 3, vae_losses, LD_VAE_DEC, LD_VAE_ENC,
                      LD_ACT_SIGMOID, 1, vae_layout, .family = LD_KIND_VAE, .conditional = 1,
                      .has_elbo = 1},
};

const ld_kind_ops_t *ld_kind_ops(ld_kind_t k)
{
    return (unsigned)k < LD_ARRAY_LEN(kind_ops) && kind_ops[k].name ? &kind_ops[k] : NULL;
}

ld_kind_t ld_kind_family(ld_kind_t k)
{
    return ld_kind_ops(k) ? ld_kind_ops(k)->family : (ld_kind_t)0;
}

/* A validated architecture laid out, without its parameter block. */
static int model_shell(const ld_arch_t *a, ld_model_t **out, ld_err_t *err)
{
    int rc = ld_arch_validate(a, err);
    if (rc)
        return rc;
    ld_model_t *m = calloc(1, sizeof *m);
    if (!m)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    m->arch = *a;
    m->ops = ld_kind_ops(a->kind);
    m->n_nets = m->ops->layout(m, &m->n_params, &m->n_bufs);
    *out = m;
    return LD_OK;
}

/* The zeroed parameter and buffer blocks of a shell. */
static int alloc_params(ld_model_t *m, ld_err_t *err)
{
    m->params = ld_calloc(m->n_params, sizeof(float));
    if (m->n_bufs)
        m->buffers = ld_calloc(m->n_bufs, sizeof(float));
    if (!m->params || (m->n_bufs && !m->buffers))
        return ld_err_set(err, LD_ENOMEM, "out of memory for %zu parameters", m->n_params);
    return LD_OK;
}

int ld_model_alloc(const ld_arch_t *a, ld_model_t **out, ld_err_t *err)
{
    ld_model_t *m;
    int rc = model_shell(a, &m, err);
    if (!rc && (rc = alloc_params(m, err))) {
        ld_model_free(m);
        return rc;
    }
    if (!rc)
        *out = m;
    return rc;
}

int ld_model_new(const ld_arch_t *a, uint64_t seed, ld_model_t **out, ld_err_t *err)
{
    int rc = ld_model_alloc(a, out, err);
    if (rc)
        return rc;
    ld_model_t *m = *out;
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    for (int i = 0; i < m->n_nets; i++) {
        if (a->net == LD_NETS_MLP) /* the dense init keeps its random stream */
            ld_mlp_init(&m->nets[i], m->params, &r);
        else
            ld_net_init_params(&m->layers[i], m->params, m->buffers, &r);
    }
    return LD_OK;
}

void ld_model_free(ld_model_t *m)
{
    if (m) {
        free(m->params);
        free(m->buffers);
        free(m);
    }
}

/* Views of the tensors of every net; buffers too when all. */
static int model_views(const ld_model_t *m, const float *block, const float *buffers, int all,
                       ld_tensor_view_t *out, int max)
{
    int k = 0;
    ld_net_tensor_t nt[LD_MODEL_MAX_TENSORS];
    for (int n = 0; n < m->n_nets; n++) {
        int cnt = ld_net_tensors(&m->layers[n], nt, LD_MODEL_MAX_TENSORS);
        LD_ASSERT(cnt <= LD_MODEL_MAX_TENSORS);
        for (int i = 0; i < cnt && k < max; i++) {
            if (nt[i].is_buffer && !all)
                continue;
            ld_tensor_view_t *t = &out[k++];
            memset(t, 0, sizeof *t);
            _Static_assert(sizeof t->name == sizeof nt[i].name, "tensor names");
            memcpy(t->name, nt[i].name, sizeof t->name);
            t->ndim = nt[i].ndim;
            memcpy(t->shape, nt[i].shape, sizeof t->shape);
            t->numel = nt[i].numel;
            t->dtype = nt[i].dtype;
            const float *base = nt[i].is_buffer ? buffers : block;
            t->data = base ? base + nt[i].off : NULL;
        }
    }
    return k;
}

int ld_model_tensors(const ld_model_t *m, const float *block, ld_tensor_view_t *out, int max)
{
    return model_views(m, block, NULL, 0, out, max);
}

int ld_model_tensors_all(const ld_model_t *m, ld_tensor_view_t *out, int max)
{
    return model_views(m, m->params, m->buffers, 1, out, max);
}

int ld_model_layer_table(const ld_model_t *m, char *buf, size_t len)
{
    size_t pos = 0;
    for (int i = 0; i < m->n_nets; i++) {
        size_t at = pos < len ? pos : len;
        pos += (size_t)ld_net_table(&m->layers[i], buf ? buf + at : NULL, buf ? len - at : 0);
    }
    return (int)pos;
}

/* ---- checkpoints ---- */

#define MAX_TENSORS LD_MODEL_MAX_TENSORS
#define LAYERS_META "latentd.layers." /* + net name: ld_net_to_json of a layer-list net */

/* A width read from a tensor shape (up to 2^53); one beyond INT_MAX becomes
 * INT_MAX, which validation refuses like any other width out of range. */
static int width_of(int64_t d)
{
    return d > INT_MAX ? INT_MAX : (int)d;
}

/* Count "prefix.{i}.weight" tensors from 0 and read their widths into sizes. */
static int count_layers(const ld_ckpt_t *c, const char *prefix, int *sizes, int max_layers)
{
    int n = 0;
    char name[LD_CKPT_NAME_MAX];
    for (;;) {
        snprintf(name, sizeof name, "%s.%d.weight", prefix, n);
        const ld_tensor_view_t *t = ld_ckpt_find(c, name);
        if (!t || t->ndim != 2 || n >= max_layers)
            break;
        if (n == 0)
            sizes[0] = width_of(t->shape[1]);
        sizes[n + 1] = width_of(t->shape[0]);
        n++;
    }
    return n;
}

static void side_from_dim(ld_arch_t *a, int dim)
{
    int64_t s = llround(sqrt((double)dim));
    if (s * s == dim) { /* 64-bit: dim may be as large as INT_MAX */
        a->img_h = a->img_w = (int)s;
    } else {
        a->img_h = 1;
        a->img_w = dim;
    }
    a->x_dim = dim;
}

/* A net of n dense layers found in a file must fit ld_hidden_t (hidden = n - out). */
static int too_deep(const char *net, int n, int out, ld_err_t *err)
{
    if (n - out <= LD_MAX_HIDDEN)
        return LD_OK;
    return ld_err_set(err, LD_EFORMAT, "%s has %d or more layers; latentd supports at most %d",
                      net, n, LD_MAX_HIDDEN + out);
}

/* Infer an architecture from tensor names and shapes (a plain PyTorch state dict). */
static int infer_arch(const ld_ckpt_t *c, ld_arch_t *a, ld_err_t *err)
{
    int s1[LD_MAX_LAYERS + 2], s2[LD_MAX_LAYERS + 2], n1, n2, rc;
    if ((n1 = count_layers(c, "encoder", s1, LD_MAX_HIDDEN + 1)) > 0) {
        ld_arch_default(LD_KIND_VAE, a);
        const ld_tensor_view_t *mu = ld_ckpt_find(c, "mu.weight");
        n2 = count_layers(c, "decoder", s2, LD_MAX_LAYERS + 1);
        if (!mu || mu->ndim != 2 || n2 < 1)
            return ld_err_set(err, LD_EFORMAT,
                              "has encoder.* tensors but no mu.weight or decoder.0.weight");
        if ((rc = too_deep("encoder", n1, 0, err)) || (rc = too_deep("decoder", n2, 1, err)))
            return rc;
        side_from_dim(a, s1[0]);
        a->z_dim = (int)mu->shape[0];
        hidden_set(&a->enc, n1, s1 + 1);
        hidden_set(&a->dec, n2 - 1, s2 + 1);
        return LD_OK;
    }
    if ((n1 = count_layers(c, "generator", s1, LD_MAX_LAYERS + 1)) > 0) {
        ld_arch_default(LD_KIND_GAN, a);
        n2 = count_layers(c, "discriminator", s2, LD_MAX_LAYERS + 1);
        if (n2 < 1)
            return ld_err_set(err, LD_EFORMAT, "has generator.* tensors but no discriminator.0.weight");
        if ((rc = too_deep("generator", n1, 1, err)) ||
            (rc = too_deep("discriminator", n2, 1, err)))
            return rc;
        side_from_dim(a, s1[n1]);
        a->z_dim = s1[0];
        hidden_set(&a->dec, n1 - 1, s1 + 1);
        hidden_set(&a->enc, n2 - 1, s2 + 1);
        a->dropout = 0.0f; /* training-only; unknown for a foreign file */
        return LD_OK;
    }
    if ((n1 = count_layers(c, "classifier", s1, LD_MAX_LAYERS + 1)) > 0) {
        ld_arch_default(LD_KIND_CLASSIFIER, a);
        if ((rc = too_deep("classifier", n1, 1, err)))
            return rc;
        a->dropout = 0.0f; /* training-only; unknown for a foreign file */
        side_from_dim(a, s1[0]);
        a->n_classes = s1[n1];
        hidden_set(&a->enc, n1 - 1, s1 + 1);
        return LD_OK;
    }
    return ld_err_set(err, LD_EFORMAT,
                      "no latentd metadata and no encoder.0.weight, generator.0.weight or "
                      "classifier.0.weight tensor to infer the model from");
}

static int is_reserved_meta(const char *k)
{
    return !strcmp(k, "format") || !strcmp(k, "kind") || !strcmp(k, "arch") ||
           !strncmp(k, LAYERS_META, strlen(LAYERS_META));
}

/* Each net's layer list in the metadata, when the file has one, must be the
 * one the architecture builds (parsed through the same builders, then
 * compared as JSON): a file cannot describe nets latentd would not run. */
static int check_layers_meta(const ld_ckpt_t *c, const ld_model_t *m, ld_err_t *err)
{
    for (int i = 0; i < m->n_nets; i++) {
        char key[80], want[8192], got[8192];
        snprintf(key, sizeof key, LAYERS_META "%s", m->layers[i].name);
        const char *json = ld_ckpt_meta(c, key);
        if (!json)
            continue;
        ld_net_t net;
        size_t po = m->layers[i].param_off, bo = m->layers[i].buf_off;
        int rc = ld_net_from_json(json, &net, &po, &bo, err);
        if (rc)
            return rc;
        ld_net_to_json(&net, got, sizeof got);
        ld_net_to_json(&m->layers[i], want, sizeof want);
        if (strcmp(got, want))
            return ld_err_set(err, LD_EFORMAT, "%s describes other layers than the %s "
                              "architecture builds", key, ld_netarch_name(m->arch.net));
    }
    return LD_OK;
}

/* The shape of a tensor as "[a,b]" into buf. */
static const char *shape_str(const ld_tensor_view_t *t, char *buf, size_t len)
{
    size_t pos = 0;
    append(buf, len, &pos, "[");
    for (int d = 0; d < t->ndim; d++)
        append(buf, len, &pos, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    append(buf, len, &pos, "]");
    return buf;
}

/* Every tensor m's layout needs is in c with its shape and finite values,
 * and c holds no other; checked before the parameters are allocated, so a
 * header cannot make the loader reserve memory the file does not hold. */
static int check_tensors(const ld_ckpt_t *c, const ld_model_t *m, ld_err_t *err)
{
    ld_tensor_view_t want[MAX_TENSORS];
    int n = model_views(m, NULL, NULL, 1, want, MAX_TENSORS);
    for (int i = 0; i < n; i++) {
        const ld_tensor_view_t *t = ld_ckpt_find(c, want[i].name);
        if (!t)
            return ld_err_set(err, LD_EFORMAT, "missing tensor %s required by the architecture",
                              want[i].name);
        int same = t->ndim == want[i].ndim && t->dtype == want[i].dtype;
        for (int d = 0; same && d < t->ndim; d++)
            same = t->shape[d] == want[i].shape[d];
        char got[64], need[64];
        if (!same)
            return ld_err_set(err, LD_EFORMAT, "tensor %s has shape %s, architecture needs %s",
                              t->name, shape_str(t, got, sizeof got),
                              shape_str(&want[i], need, sizeof need));
        for (size_t k = 0; t->dtype == LD_DTYPE_F32 && k < t->numel; k++)
            if (!isfinite(t->data[k]))
                return ld_err_set(err, LD_EFORMAT, "tensor %s holds a non-finite value at %zu",
                                  t->name, k);
    }
    for (int i = 0; c->n_tensors != n && i < c->n_tensors; i++) {
        int known = 0;
        for (int j = 0; j < n && !known; j++)
            known = !strcmp(c->tensors[i].name, want[j].name);
        if (!known)
            return ld_err_set(err, LD_EFORMAT, "unexpected tensor %s for a %s model",
                              c->tensors[i].name, ld_kind_name(m->arch.kind));
    }
    return LD_OK;
}

/* The record must hold every metadata entry whole: a key or value cut to
 * fit would come back changed (two long keys could even become one). */
static int check_record_meta(const ld_ckpt_t *c, ld_err_t *err)
{
    const ld_record_t *r = NULL;
    int n = 0;
    for (int i = 0; i < c->n_meta; i++) {
        const char *k = c->meta[i].key, *v = c->meta[i].value;
        if (is_reserved_meta(k))
            continue;
        if (strlen(k) >= sizeof r->key[0])
            return ld_err_set(err, LD_EFORMAT,
                              "metadata key %.40s... is longer than %zu bytes, the most a "
                              "training record keeps",
                              k, sizeof r->key[0] - 1);
        if (strlen(v) >= sizeof r->val[0])
            return ld_err_set(err, LD_EFORMAT,
                              "metadata value of %s is longer than %zu bytes, the most a "
                              "training record keeps",
                              k, sizeof r->val[0] - 1);
        if (++n > LD_RECORD_MAX)
            return ld_err_set(err, LD_EFORMAT,
                              "more than %d metadata entries besides format, kind and arch",
                              LD_RECORD_MAX);
    }
    return LD_OK;
}

#define STATE_FORMAT "latentd-state/1"

int ld_model_from_ckpt(const ld_ckpt_t *c, ld_model_t **out, ld_err_t *err)
{
    ld_arch_t a;
    int rc;
    const char *fmt = ld_ckpt_meta(c, "format");
    if (fmt && !strcmp(fmt, STATE_FORMAT))
        return ld_err_set(err, LD_EFORMAT, "a job's training state, not a model (latentd info "
                          "describes it; the job saves the model when it finishes)");
    const char *arch_json = ld_ckpt_meta(c, "arch");
    if (arch_json)
        rc = ld_arch_from_json(arch_json, &a, err);
    else
        rc = infer_arch(c, &a, err);
    if (rc || (rc = check_record_meta(c, err)))
        return rc;
    ld_model_t *m;
    if ((rc = model_shell(&a, &m, err)))
        return rc;
    if ((rc = check_layers_meta(c, m, err)) || (rc = check_tensors(c, m, err)) ||
        (rc = alloc_params(m, err))) {
        ld_model_free(m);
        return rc;
    }
    ld_tensor_view_t dst[MAX_TENSORS];
    int n = ld_model_tensors_all(m, dst, MAX_TENSORS);
    for (int i = 0; i < n; i++)
        memcpy((float *)dst[i].data, ld_ckpt_find(c, dst[i].name)->data, ld_tensor_bytes(&dst[i]));
    for (int i = 0; i < c->n_meta; i++)
        if (!is_reserved_meta(c->meta[i].key))
            ld_record_set(&m->record, c->meta[i].key, "%s", c->meta[i].value);
    *out = m;
    return LD_OK;
}

int ld_model_load(const char *path, ld_model_t **out, ld_err_t *err)
{
    ld_ckpt_t *c;
    int rc = ld_ckpt_read(path, &c, err);
    if (rc)
        return rc;
    rc = ld_model_from_ckpt(c, out, err);
    ld_ckpt_free(c);
    if (rc && err) {
        char tmp[sizeof err->msg];
        memcpy(tmp, err->msg, sizeof tmp);
        ld_err_set(err, rc, "%.200s: %.300s", path, tmp);
    }
    return rc;
}

/* The optimiser blocks a training state holds beside the parameters, in the
 * order train.c writes them; each has the parameters' names and shapes. */
static const char *const state_blocks[] = {"adam_m.", "adam_v.", "ema."};

/* A training state's parameters as a model, and its blocks checked: each
 * block present must hold one tensor per parameter tensor, same shapes.
 * counts[b] is the tensors of block b (0 when absent). */
static int state_model(const ld_ckpt_t *c, ld_model_t **out, int *counts, ld_err_t *err)
{
    /* the parameters alone, and the metadata without "format" */
    ld_ckpt_t plain = *c;
    plain.tensors = ld_calloc((size_t)c->n_tensors, sizeof *plain.tensors);
    plain.meta = ld_calloc((size_t)c->n_meta, sizeof *plain.meta);
    if (!plain.tensors || !plain.meta) {
        free(plain.tensors);
        free(plain.meta);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    plain.n_meta = 0;
    for (int i = 0; i < c->n_meta; i++)
        if (strcmp(c->meta[i].key, "format"))
            plain.meta[plain.n_meta++] = c->meta[i];
    plain.n_tensors = 0;
    for (int i = 0; i < c->n_tensors; i++) {
        int b = 0;
        while (b < (int)LD_ARRAY_LEN(state_blocks) &&
               strncmp(c->tensors[i].name, state_blocks[b], strlen(state_blocks[b])))
            b++;
        if (b == (int)LD_ARRAY_LEN(state_blocks))
            plain.tensors[plain.n_tensors++] = c->tensors[i];
    }
    int rc = ld_model_from_ckpt(&plain, out, err);
    free(plain.tensors);
    free(plain.meta);
    if (rc)
        return rc;
    ld_tensor_view_t want[MAX_TENSORS];
    int n = ld_model_tensors(*out, NULL, want, MAX_TENSORS);
    for (int b = 0; b < (int)LD_ARRAY_LEN(state_blocks); b++) {
        counts[b] = 0;
        for (int i = 0; i < n && !rc; i++) {
            char name[LD_CKPT_NAME_MAX + 8];
            snprintf(name, sizeof name, "%.8s%.127s", state_blocks[b], want[i].name);
            const ld_tensor_view_t *t = ld_ckpt_find(c, name);
            if (t && t->numel == want[i].numel)
                counts[b]++;
            else if (t || counts[b])
                rc = ld_err_set(err, LD_EFORMAT, "training state: tensor %s is missing or "
                                "has the wrong shape", name);
        }
    }
    n = model_views(*out, NULL, NULL, 1, want, MAX_TENSORS); /* buffers too */
    if (!rc && counts[0] + counts[1] + counts[2] + n != c->n_tensors)
        rc = ld_err_set(err, LD_EFORMAT, "training state: %d tensors are neither parameters "
                        "nor optimiser blocks", c->n_tensors - n - counts[0] - counts[1] -
                        counts[2]);
    if (rc) {
        ld_model_free(*out);
        *out = NULL;
    }
    return rc;
}

int ld_model_describe(const char *path, char *buf, size_t len, ld_err_t *err)
{
    ld_ckpt_t *c;
    int rc = ld_ckpt_read(path, &c, err);
    if (rc)
        return rc;
    const char *fmt = ld_ckpt_meta(c, "format");
    int state = fmt && !strcmp(fmt, STATE_FORMAT), counts[3] = {0, 0, 0};
    ld_model_t *m = NULL;
    rc = state ? state_model(c, &m, counts, err) : ld_model_from_ckpt(c, &m, err);
    if (rc) {
        char tmp[sizeof err->msg];
        memcpy(tmp, err->msg, sizeof tmp);
        ld_err_set(err, rc, "%.200s: %.300s", path, tmp);
        ld_ckpt_free(c);
        return rc;
    }
    size_t pos = 0;
    char desc[256], json[1024];
    ld_arch_describe(&m->arch, desc, sizeof desc);
    ld_arch_to_json(&m->arch, json, sizeof json);
    append(buf, len, &pos, "file:       %s\nkind:       %s\n", path, ld_kind_name(m->arch.kind));
    if (state) {
        const char *step = ld_record_get(&m->record, "step");
        const char *epoch = ld_record_get(&m->record, "epoch");
        append(buf, len, &pos, "content:    training state of a job, step %s, epoch %s\n",
               step ? step : "?", epoch ? epoch : "?");
        append(buf, len, &pos, "tensors:    %d: %d parameters", c->n_tensors,
               c->n_tensors - counts[0] - counts[1] - counts[2]);
        for (int b = 0; b < (int)LD_ARRAY_LEN(state_blocks); b++)
            if (counts[b])
                append(buf, len, &pos, ", %d %.*s", counts[b],
                       (int)strlen(state_blocks[b]) - 1, state_blocks[b]);
        append(buf, len, &pos, "\n");
    }
    append(buf, len, &pos, "arch:       %s\narch json:  %s\nparameters: %zu\n", desc, json,
           m->n_params);
    if (m->record.n == 0)
        append(buf, len, &pos, "record:     (none)\n");
    for (int i = 0; i < m->record.n; i++)
        append(buf, len, &pos, "%-11s %s\n", m->record.key[i], m->record.val[i]);
    append(buf, len, &pos, "layers:     %s\n", ld_netarch_name(m->arch.net));
    pos += (size_t)ld_model_layer_table(m, pos < len ? buf + pos : NULL, pos < len ? len - pos : 0);
    ld_model_free(m);
    ld_ckpt_free(c);
    if (pos >= len)
        return ld_err_set(err, LD_ENOMEM, "%s: the description needs %zu bytes", path, pos + 1);
    return LD_OK;
}

int ld_model_save(const ld_model_t *m, const char *path, ld_err_t *err)
{
    ld_tensor_view_t t[MAX_TENSORS];
    int n = ld_model_tensors_all(m, t, MAX_TENSORS);
    char arch[1024], keys[LD_MAX_NETS][80], layers[LD_MAX_NETS][8192];
    ld_arch_to_json(&m->arch, arch, sizeof arch);
    ld_kv_t meta[3 + LD_MAX_NETS + LD_RECORD_MAX];
    int nm = 0;
    meta[nm++] = (ld_kv_t){"format", "latentd/1"};
    meta[nm++] = (ld_kv_t){"kind", ld_kind_name(m->arch.kind)};
    meta[nm++] = (ld_kv_t){"arch", arch};
    /* dense files stay as they were; a layer list is described for torch users */
    for (int i = 0; m->arch.net != LD_NETS_MLP && i < m->n_nets; i++) {
        snprintf(keys[i], sizeof keys[i], LAYERS_META "%s", m->layers[i].name);
        if (ld_net_to_json(&m->layers[i], layers[i], sizeof layers[i]) < 0)
            return ld_err_set(err, LD_EINVAL, "the layer list of %s is too long to save",
                              m->layers[i].name);
        meta[nm++] = (ld_kv_t){keys[i], layers[i]};
    }
    for (int i = 0; i < m->record.n; i++)
        meta[nm++] = (ld_kv_t){m->record.key[i], m->record.val[i]};
    return ld_ckpt_write(path, t, n, meta, nm, err);
}

void ld_record_set(ld_record_t *r, const char *key, const char *fmt, ...)
{
    int i;
    for (i = 0; i < r->n; i++)
        if (!strcmp(r->key[i], key))
            break;
    if (i == r->n) {
        if (r->n == LD_RECORD_MAX || is_reserved_meta(key))
            return;
        r->n++;
        snprintf(r->key[i], sizeof r->key[i], "%s", key);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->val[i], sizeof r->val[i], fmt, ap);
    va_end(ap);
}

const char *ld_record_get(const ld_record_t *r, const char *key)
{
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->key[i], key))
            return r->val[i];
    return NULL;
}

/* ---- inference ---- */

void ld_model_draw_z(const ld_model_t *m, uint64_t seed, float temperature, int n, float *z)
{
    ld_rng_t r;
    ld_rng_seed(&r, seed);
    ld_rng_fill_normal_fast(&r, z, (size_t)n * m->arch.z_dim, 0.0f, temperature);
}

/* Run net in eval mode over n rows in chunks: x (n, in) -> y (n, out), then
 * act; labels (n) for its embeddings, or NULL. */
static int run_net(const ld_model_t *m, const ld_net_t *net, int n, const float *x,
                   const uint8_t *labels, float *y, ld_act_t act, ld_err_t *err)
{
    ld_shape_t si = net->in, so = ld_net_out(net);
    size_t in = (size_t)si.c * si.h * si.w, out = (size_t)so.c * so.h * so.w, row = in;
    for (int l = 0; l < net->n_layers; l++)
        row += (size_t)net->layers[l].out.c * net->layers[l].out.h * net->layers[l].out.w;
    int B = INFER_FLOATS / row < INFER_CHUNK ? (int)(INFER_FLOATS / row) : INFER_CHUNK;
    B = B < 1 ? 1 : n < B ? (n > 0 ? n : 1) : B;
    ld_net_ws_t ws;
    if (ld_net_ws_init(&ws, net, B))
        return ld_err_set(err, LD_ENOMEM, "out of memory for %d rows", B);
    for (int r = 0; r < n; r += B) {
        int b = n - r < B ? n - r : B;
        ld_net_run_t run = {.labels = labels ? labels + r : NULL};
        const float *o = ld_net_forward(net, m->params, m->buffers, &ws, b, x + (size_t)r * in,
                                        &run);
        ld_act_forward(act, 0, (size_t)b * out, o, y + (size_t)r * out);
    }
    ld_net_ws_free(&ws);
    return LD_OK;
}

static int run_layers(const ld_model_t *m, int i, int n, const float *x, const uint8_t *labels,
                      float *y, ld_act_t act, ld_err_t *err)
{
    return run_net(m, &m->layers[i], n, x, labels, y, act, err);
}

/* Labels fit the model: present (every row below n_classes) exactly when it
 * is conditional. */
static int check_labels(const ld_model_t *m, int n, const uint8_t *labels, ld_err_t *err)
{
    if (!m->ops->conditional)
        return labels ? ld_err_set(err, LD_EINVAL, "%s takes no labels", m->ops->article) : 0;
    if (!labels)
        return ld_err_set(err, LD_EINVAL, "%s needs a label per row", m->ops->article);
    for (int i = 0; i < n; i++)
        if (labels[i] >= m->arch.n_classes)
            return ld_err_set(err, LD_EINVAL, "label %d is outside 0..%d", labels[i],
                              m->arch.n_classes - 1);
    return LD_OK;
}

int ld_model_decode(const ld_model_t *m, int n, const float *z, float *x, ld_err_t *err)
{
    return ld_model_decode_labels(m, n, z, NULL, x, err);
}

int ld_model_decode_labels(const ld_model_t *m, int n, const float *z, const uint8_t *labels,
                           float *x, ld_err_t *err)
{
    if (m->ops->decode_net < 0)
        return ld_err_set(err, LD_EUNSUPPORTED, "%s has no decoder", m->ops->article);
    int rc = check_labels(m, n, labels, err);
    return rc ? rc : run_layers(m, m->ops->decode_net, n, z, labels, x, m->ops->out_act, err);
}

int ld_model_decode_mix(const ld_model_t *m, int n, const float *z, const uint8_t *from,
                        const uint8_t *to, const float *t, float *x, ld_err_t *err)
{
    int rc;
    if (!m->ops->conditional || m->ops->decode_net < 0)
        return ld_err_set(err, LD_EUNSUPPORTED, "%s has no label embedding", m->ops->article);
    if ((rc = check_labels(m, n, from, err)) || (rc = check_labels(m, n, to, err)))
        return rc;
    /* the net after its embedding, fed z with the mixed embedding rows */
    const ld_net_t *net = &m->layers[m->ops->decode_net];
    const ld_layer_t *E = &net->layers[0];
    LD_ASSERT(E->kind == LD_LAYER_EMBED && E->depth == 0);
    ld_net_t tail = *net;
    memmove(tail.layers, tail.layers + 1, (size_t)(net->n_layers - 1) * sizeof *tail.layers);
    tail.n_layers--;
    tail.in = E->out;
    int Z = E->in.c, W = E->out.c, e = W - Z;
    float *in = ld_malloc_array((size_t)n * W, sizeof(float));
    if (!in)
        return ld_err_set(err, LD_ENOMEM, "out of memory for %d rows", n);
    const float *P = m->params + E->param_off; /* (n_classes, e) */
    for (int i = 0; i < n; i++) {
        float *r = in + (size_t)i * W;
        memcpy(r, z + (size_t)i * Z, (size_t)Z * sizeof(float));
        for (int j = 0; j < e; j++)
            r[Z + j] = (1.0f - t[i]) * P[(size_t)from[i] * e + j] + t[i] * P[(size_t)to[i] * e + j];
    }
    rc = run_net(m, &tail, n, in, NULL, x, m->ops->out_act, err);
    free(in);
    return rc;
}

int ld_model_encode(const ld_model_t *m, int n, const float *x, float *mu, float *logvar,
                    ld_err_t *err)
{
    return ld_model_encode_labels(m, n, x, NULL, mu, logvar, err);
}

int ld_model_encode_labels(const ld_model_t *m, int n, const float *x, const uint8_t *labels,
                           float *mu, float *logvar, ld_err_t *err)
{
    if (m->ops->encode_net < 0)
        return ld_err_set(err, LD_EUNSUPPORTED, "%s has no encoder; only a VAE can encode",
                          m->ops->article);
    int rc = check_labels(m, n, labels, err);
    if (rc)
        return rc;
    ld_shape_t hs = ld_net_out(&m->layers[LD_VAE_ENC]);
    float *h = ld_malloc_array((size_t)n * hs.c * hs.h * hs.w, sizeof(float));
    if (!h)
        return ld_err_set(err, LD_ENOMEM, "out of memory for %d rows", n);
    rc = run_layers(m, LD_VAE_ENC, n, x, labels, h, LD_ACT_NONE, err);
    if (!rc)
        rc = run_layers(m, LD_VAE_MU, n, h, NULL, mu, LD_ACT_NONE, err);
    if (!rc && logvar)
        rc = run_layers(m, LD_VAE_LOGVAR, n, h, NULL, logvar, LD_ACT_NONE, err);
    free(h);
    return rc;
}

/* ---- training passes ---- */

int ld_net_width(const ld_model_t *m, int i)
{
    ld_shape_t s = ld_net_out(&m->layers[i]);
    return s.c * s.h * s.w;
}

int ld_pass_ws_init(ld_pass_ws_t *ws, const ld_model_t *m, int i, int B)
{
    memset(ws, 0, sizeof *ws);
    if (m->arch.net == LD_NETS_MLP)
        return ld_mlp_ws_init(&ws->mlp, &m->nets[i], B, 1);
    return ld_net_ws_init(&ws->net, &m->layers[i], B);
}

void ld_pass_ws_free(ld_pass_ws_t *ws)
{
    ld_mlp_ws_free(&ws->mlp);
    ld_net_ws_free(&ws->net);
}

const float *ld_pass_forward(const ld_model_t *m, int i, ld_pass_ws_t *ws, int b, const float *x,
                             ld_rng_t *rng, const float *masks, const ld_net_run_t *run)
{
    if (m->arch.net == LD_NETS_MLP)
        return ld_mlp_forward_preset(&m->nets[i], m->params, &ws->mlp, b, x, rng, masks);
    return ld_net_forward(&m->layers[i], m->params, m->buffers, &ws->net, b, x, run);
}

void ld_pass_backward(const ld_model_t *m, int i, float *grads, ld_pass_ws_t *ws, int b,
                      const float *dout, float *dx, const ld_net_run_t *run)
{
    if (m->arch.net == LD_NETS_MLP)
        ld_mlp_backward(&m->nets[i], m->params, grads, &ws->mlp, b, dout, dx);
    else
        ld_net_backward(&m->layers[i], m->params, grads, &ws->net, dout, dx, run);
}

int ld_model_classify(const ld_model_t *m, int n, const float *x, float *logits, float *feat,
                      ld_err_t *err)
{
    if (!m->ops->classifies)
        return ld_err_set(err, LD_EUNSUPPORTED, "not a classifier");
    const ld_mlp_t *net = &m->nets[LD_CLS_NET];
    ld_mlp_ws_t ws;
    int B = n < INFER_CHUNK ? n : INFER_CHUNK;
    if (ld_mlp_ws_init(&ws, net, B > 0 ? B : 1, 0))
        return ld_err_set(err, LD_ENOMEM, "out of memory for %d rows", n);
    int L = net->n_layers, C = net->size[L], F = net->size[L - 1];
    for (int i = 0; i < n; i += B) {
        int b = n - i < B ? n - i : B;
        const float *o = ld_mlp_forward(net, m->params, &ws, b, x + (size_t)i * net->size[0],
                                        NULL);
        memcpy(logits + (size_t)i * C, o, (size_t)b * C * sizeof(float));
        if (feat)
            memcpy(feat + (size_t)i * F, ws.y[L - 2], (size_t)b * F * sizeof(float));
    }
    ld_mlp_ws_free(&ws);
    return LD_OK;
}

/* ---- class names of a conditional model ---- */

/* Name k of the record's "classes" (a JSON array of strings) into buf, or
 * the number when the record has none. */
const char *ld_model_class_name(const ld_model_t *m, int k, char *buf, size_t len)
{
    cJSON *a = cJSON_Parse(ld_record_get(&m->record, "classes") ? ld_record_get(&m->record, "classes") : "");
    /* names past the data's classes (a model of more) are their numbers */
    const cJSON *it = cJSON_IsArray(a) && k < m->arch.n_classes ? cJSON_GetArrayItem(a, k) : NULL;
    if (cJSON_IsString(it))
        snprintf(buf, len, "%s", it->valuestring);
    else
        snprintf(buf, len, "%d", k);
    cJSON_Delete(a);
    return buf;
}

int ld_model_class_parse(const ld_model_t *m, const char *s)
{
    char name[256];
    for (int k = 0; s && k < m->arch.n_classes; k++)
        if (!strcmp(s, ld_model_class_name(m, k, name, sizeof name)))
            return k;
    char *end;
    long v = s && *s ? strtol(s, &end, 10) : -1;
    return s && *s && !*end && v >= 0 && v < m->arch.n_classes ? (int)v : -1;
}

void ld_model_class_list(const ld_model_t *m, char *buf, size_t len)
{
    size_t pos = 0;
    buf[0] = 0;
    for (int k = 0; k < m->arch.n_classes && pos < len; k++) {
        char name[256];
        int w = snprintf(buf + pos, len - pos, "%s%d %s", k ? ", " : "", k,
                         ld_model_class_name(m, k, name, sizeof name));
        pos += w > 0 ? (size_t)w : 0;
    }
}

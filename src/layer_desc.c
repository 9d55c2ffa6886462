/* layer_desc.c — what a layer list looks like from outside: tensor names in
 * state_dict order, the JSON kept in checkpoint metadata, and the table
 * printed for people.  See layer.h. */
#include "latentd/layer.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[LD_LAYER_N_KINDS] = {
    [LD_LAYER_LINEAR] = "Linear",       [LD_LAYER_CONV2D] = "Conv2d",
    [LD_LAYER_CONVT2D] = "ConvTranspose2d", [LD_LAYER_BN1D] = "BatchNorm1d",
    [LD_LAYER_BN2D] = "BatchNorm2d",    [LD_LAYER_LAYERNORM] = "LayerNorm",
    [LD_LAYER_DROPOUT] = "Dropout",     [LD_LAYER_LRELU] = "LeakyReLU",
    [LD_LAYER_RELU] = "ReLU",           [LD_LAYER_TANH] = "Tanh",
    [LD_LAYER_SIGMOID] = "Sigmoid",     [LD_LAYER_FLATTEN] = "Flatten",
    [LD_LAYER_UNFLATTEN] = "Unflatten", [LD_LAYER_EMBED] = "EmbedConcat",
    [LD_LAYER_RESIDUAL] = "Residual",
};

const char *ld_layer_kind_name(ld_layer_kind_t k)
{
    return (unsigned)k < LD_LAYER_N_KINDS ? kind_names[k] : "?";
}

/* ---- module paths: "3", "2.f.0", ... ---- */

/* path[i] for every entry: the module's place in the equivalent nn.Sequential
 * (every module counted; inside a residual block "<block>.f.<j>"), or for the
 * dense MLP namings the count of Linear layers before it. */
static void module_paths(const ld_net_t *net, char path[][64])
{
    if (net->names != LD_NAMES_SEQUENTIAL) {
        int dense = 0;
        for (int i = 0; i < net->n_layers; i++) {
            snprintf(path[i], 64, "%d", dense);
            dense += net->layers[i].kind == LD_LAYER_LINEAR;
        }
        return;
    }
    /* stack of open blocks: their end and the next index inside them */
    int end[16], next[16], top = 0;
    end[0] = net->n_layers;
    next[0] = 0;
    char prefix[16][48] = {""};
    for (int i = 0; i < net->n_layers; i++) {
        while (top > 0 && i >= end[top])
            top--;
        snprintf(path[i], 64, "%.47s%d", prefix[top], next[top]++);
        const ld_layer_t *L = &net->layers[i];
        if (L->kind == LD_LAYER_RESIDUAL && top + 1 < 16) {
            top++;
            end[top] = i + 1 + L->n_inner;
            next[top] = 0;
            snprintf(prefix[top], 48, "%.40s.f.", path[i]);
        }
    }
}

static ld_net_tensor_t *tensor(ld_net_tensor_t *out, int k, int max, const ld_net_t *net,
                               const char *path, const char *what, int is_buffer, size_t off,
                               int ndim, const int64_t *shape)
{
    if (k >= max)
        return NULL;
    ld_net_tensor_t *t = &out[k];
    memset(t, 0, sizeof *t);
    if (net->names == LD_NAMES_SINGLE)
        snprintf(t->name, sizeof t->name, "%s.%s", net->name, what);
    else
        snprintf(t->name, sizeof t->name, "%s.%s.%s", net->name, path, what);
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= (size_t)shape[d];
    }
    t->is_buffer = is_buffer;
    t->off = off;
    return t;
}

int ld_net_tensors(const ld_net_t *net, ld_net_tensor_t *out, int max)
{
    char path[LD_NET_MAX_LAYERS][64];
    module_paths(net, path);
    int k = 0;
    for (int i = 0; i < net->n_layers; i++) {
        const ld_layer_t *L = &net->layers[i];
        const char *p = path[i];
        const int64_t C = L->in.c, O = L->out.c, K = L->k;
        const int64_t in = C * L->in.h * L->in.w;
        switch (L->kind) {
        case LD_LAYER_LINEAR:
        case LD_LAYER_CONV2D:
        case LD_LAYER_CONVT2D: {
            int64_t lin[2] = {O, in}, conv[4] = {O, C, K, K}, convt[4] = {C, O, K, K}, b[1] = {O};
            const int64_t *ws = L->kind == LD_LAYER_LINEAR ? lin
                                : L->kind == LD_LAYER_CONV2D ? conv : convt;
            size_t wn = L->n_params - (size_t)O;
            tensor(out, k++, max, net, p, "weight", 0, L->param_off,
                   L->kind == LD_LAYER_LINEAR ? 2 : 4, ws);
            tensor(out, k++, max, net, p, "bias", 0, L->param_off + wn, 1, b);
            break;
        }
        case LD_LAYER_BN1D:
        case LD_LAYER_BN2D: {
            int64_t c[1] = {C};
            tensor(out, k++, max, net, p, "weight", 0, L->param_off, 1, c);
            tensor(out, k++, max, net, p, "bias", 0, L->param_off + C, 1, c);
            tensor(out, k++, max, net, p, "running_mean", 1, L->buf_off, 1, c);
            tensor(out, k++, max, net, p, "running_var", 1, L->buf_off + C, 1, c);
            ld_net_tensor_t *t = tensor(out, k++, max, net, p, "num_batches_tracked", 1,
                                        L->buf_off + 2 * C, 0, NULL);
            if (t)
                t->dtype = LD_DTYPE_I64;
            break;
        }
        case LD_LAYER_LAYERNORM: {
            int64_t s[3] = {C, L->in.h, L->in.w};
            int nd = L->in.h == 1 && L->in.w == 1 ? 1 : 3;
            tensor(out, k++, max, net, p, "weight", 0, L->param_off, nd, s);
            tensor(out, k++, max, net, p, "bias", 0, L->param_off + in, nd, s);
            break;
        }
        case LD_LAYER_EMBED: {
            int64_t s[2] = {L->n_classes, (int64_t)(L->n_params / L->n_classes)};
            tensor(out, k++, max, net, p, "weight", 0, L->param_off, 2, s);
            break;
        }
        default: break;
        }
    }
    return k;
}

/* ---- JSON ---- */

typedef struct {
    char *buf;
    size_t len, pos;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->pos < o->len ? o->buf + o->pos : NULL,
                      o->pos < o->len ? o->len - o->pos : 0, fmt, ap);
    va_end(ap);
    o->pos += n > 0 ? (size_t)n : 0;
}

/* The shortest decimal that reads back as the same float the way
 * ld_net_from_json reads it (cJSON's double, then float). */
static void put_float(out_t *o, const char *key, float v)
{
    char s[32];
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(s, sizeof s, "%.*g", digits, (double)v);
        if ((float)strtod(s, NULL) == v)
            break;
    }
    put(o, ",\"%s\":%s", key, s);
}

static int put_layers(out_t *o, const ld_net_t *net, int lo, int hi)
{
    put(o, "[");
    for (int i = lo; i < hi; i++) {
        const ld_layer_t *L = &net->layers[i];
        put(o, "%s{\"type\":\"%s\"", i > lo ? "," : "", ld_layer_kind_name(L->kind));
        switch (L->kind) {
        case LD_LAYER_LINEAR: put(o, ",\"out\":%d", L->out.c); break;
        case LD_LAYER_CONV2D:
        case LD_LAYER_CONVT2D:
            put(o, ",\"out\":%d,\"kernel\":%d,\"stride\":%d,\"padding\":%d", L->out.c, L->k,
                L->stride, L->pad);
            break;
        case LD_LAYER_BN1D:
        case LD_LAYER_BN2D:
            put_float(o, "momentum", L->momentum);
            put_float(o, "eps", L->eps);
            break;
        case LD_LAYER_LAYERNORM: put_float(o, "eps", L->eps); break;
        case LD_LAYER_DROPOUT: put_float(o, "p", L->p); break;
        case LD_LAYER_LRELU: put_float(o, "slope", L->slope); break;
        case LD_LAYER_UNFLATTEN:
            put(o, ",\"shape\":[%d,%d,%d]", L->out.c, L->out.h, L->out.w);
            break;
        case LD_LAYER_EMBED:
            put(o, ",\"classes\":%d,\"channels\":%d", L->n_classes, L->out.c - L->in.c);
            break;
        case LD_LAYER_RESIDUAL:
            put(o, ",\"layers\":");
            put_layers(o, net, i + 1, i + 1 + L->n_inner);
            i += L->n_inner;
            break;
        default: break;
        }
        put(o, "}");
    }
    put(o, "]");
    return 0;
}

static const char *const naming_names[] = {"sequential", "dense", "single"};

int ld_net_to_json(const ld_net_t *net, char *buf, size_t len)
{
    out_t o = {buf, len, 0};
    put(&o, "{\"name\":\"%s\",\"names\":\"%s\",\"input\":[%d,%d,%d],\"layers\":", net->name,
        naming_names[net->names], net->in.c, net->in.h, net->in.w);
    put_layers(&o, net, 0, net->n_layers);
    put(&o, "}");
    return o.pos < len ? (int)o.pos : LD_EINVAL;
}

/* An integer member in [lo, hi]. */
static int get_int(const cJSON *obj, const char *key, int lo, int hi, int *v, const char *where,
                   ld_err_t *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(j) || j->valuedouble != (double)(int)j->valuedouble ||
        j->valuedouble < lo || j->valuedouble > hi)
        return ld_err_set(err, LD_EFORMAT, "%s: \"%s\" must be an integer in %d..%d", where, key,
                          lo, hi);
    *v = (int)j->valuedouble;
    return LD_OK;
}

/* An optional number member (dflt when absent). */
static int get_float(const cJSON *obj, const char *key, float dflt, float *v, const char *where,
                     ld_err_t *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j) {
        *v = dflt;
        return LD_OK;
    }
    if (!cJSON_IsNumber(j))
        return ld_err_set(err, LD_EFORMAT, "%s: \"%s\" must be a number", where, key);
    *v = (float)j->valuedouble;
    return LD_OK;
}

static int get_shape(const cJSON *obj, const char *key, ld_shape_t *s, const char *where,
                     ld_err_t *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, key);
    int v[3];
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 3)
        return ld_err_set(err, LD_EFORMAT, "%s: \"%s\" must be [C, H, W]", where, key);
    for (int d = 0; d < 3; d++) {
        const cJSON *e = cJSON_GetArrayItem(a, d);
        if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > LD_NET_MAX_DIM ||
            e->valuedouble != (double)(int)e->valuedouble)
            return ld_err_set(err, LD_EFORMAT, "%s: \"%s\" must hold integers in 1..%d", where,
                              key, LD_NET_MAX_DIM);
        v[d] = (int)e->valuedouble;
    }
    if ((size_t)v[0] * v[1] * v[2] > LD_NET_MAX_DIM)
        return ld_err_set(err, LD_EFORMAT, "%s: \"%s\" holds more than %d values", where, key,
                          LD_NET_MAX_DIM);
    *s = (ld_shape_t){v[0], v[1], v[2]};
    return LD_OK;
}

static int parse_layers(const cJSON *arr, ld_net_t *net, int depth, ld_err_t *err)
{
    if (!cJSON_IsArray(arr))
        return ld_err_set(err, LD_EFORMAT, "%s: \"layers\" must be an array", net->name);
    const cJSON *l;
    cJSON_ArrayForEach(l, arr)
    {
        char where[64];
        snprintf(where, sizeof where, "%.31s layer %d", net->name, net->n_layers);
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(l, "type");
        if (!cJSON_IsString(ty))
            return ld_err_set(err, LD_EFORMAT, "%s: needs a \"type\"", where);
        int kind = -1;
        for (int k = 0; k < LD_LAYER_N_KINDS; k++)
            if (strcmp(ty->valuestring, kind_names[k]) == 0)
                kind = k;
        int a = 0, k = 0, s = 0, p = 0, rc = LD_OK;
        float f1 = 0, f2 = 0;
        ld_shape_t sh;
        switch (kind) {
        case LD_LAYER_LINEAR:
            rc = get_int(l, "out", 1, LD_NET_MAX_DIM, &a, where, err);
            rc = rc ? rc : ld_net_add_linear(net, a, err);
            break;
        case LD_LAYER_CONV2D:
        case LD_LAYER_CONVT2D:
            rc = get_int(l, "out", 1, LD_NET_MAX_DIM, &a, where, err);
            rc = rc ? rc : get_int(l, "kernel", 1, 16, &k, where, err);
            rc = rc ? rc : get_int(l, "stride", 1, 16, &s, where, err);
            rc = rc ? rc : get_int(l, "padding", 0, 15, &p, where, err);
            rc = rc ? rc : kind == LD_LAYER_CONV2D ? ld_net_add_conv(net, a, k, s, p, err)
                                                   : ld_net_add_convt(net, a, k, s, p, err);
            break;
        case LD_LAYER_BN1D:
        case LD_LAYER_BN2D:
            rc = get_float(l, "momentum", 0.1f, &f1, where, err);
            rc = rc ? rc : get_float(l, "eps", 1e-5f, &f2, where, err);
            rc = rc ? rc : ld_net_add_bn(net, (ld_layer_kind_t)kind, f1, f2, err);
            break;
        case LD_LAYER_LAYERNORM:
            rc = get_float(l, "eps", 1e-5f, &f2, where, err);
            rc = rc ? rc : ld_net_add_layernorm(net, f2, err);
            break;
        case LD_LAYER_DROPOUT:
            rc = get_float(l, "p", 0.5f, &f1, where, err);
            rc = rc ? rc : ld_net_add_dropout(net, f1, err);
            break;
        case LD_LAYER_LRELU:
            rc = get_float(l, "slope", 0.01f, &f1, where, err);
            rc = rc ? rc : ld_net_add_act(net, LD_LAYER_LRELU, f1, err);
            break;
        case LD_LAYER_RELU:
        case LD_LAYER_TANH:
        case LD_LAYER_SIGMOID: rc = ld_net_add_act(net, (ld_layer_kind_t)kind, 0, err); break;
        case LD_LAYER_FLATTEN: rc = ld_net_add_flatten(net, err); break;
        case LD_LAYER_UNFLATTEN:
            rc = get_shape(l, "shape", &sh, where, err);
            rc = rc ? rc : ld_net_add_unflatten(net, sh, err);
            break;
        case LD_LAYER_EMBED:
            rc = get_int(l, "classes", 1, 256, &a, where, err);
            rc = rc ? rc : get_int(l, "channels", 1, LD_NET_MAX_DIM, &k, where, err);
            rc = rc ? rc : ld_net_add_embed(net, a, k, err);
            break;
        case LD_LAYER_RESIDUAL:
            if (depth >= 4)
                return ld_err_set(err, LD_EFORMAT, "%s: residual blocks nested too deep", where);
            rc = ld_net_res_begin(net, err);
            rc = rc ? rc : parse_layers(cJSON_GetObjectItemCaseSensitive(l, "layers"), net,
                                        depth + 1, err);
            rc = rc ? rc : ld_net_res_end(net, err);
            break;
        default:
            return ld_err_set(err, LD_EFORMAT, "%s: unknown type \"%.40s\"", where,
                              ty->valuestring);
        }
        if (rc)
            return rc;
    }
    return LD_OK;
}

int ld_net_from_json(const char *json, ld_net_t *net, size_t *param_off, size_t *buf_off,
                     ld_err_t *err)
{
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ld_err_set(err, LD_EFORMAT, "layer list: not a JSON object");
    }
    int rc = LD_OK;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(root, "names");
    ld_shape_t in;
    int naming = -1;
    for (int i = 0; cJSON_IsString(names) && i < (int)LD_ARRAY_LEN(naming_names); i++)
        if (strcmp(names->valuestring, naming_names[i]) == 0)
            naming = i;
    if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) >= 32)
        rc = ld_err_set(err, LD_EFORMAT, "layer list: \"name\" must be a string of 1..31 bytes");
    else if (naming < 0)
        rc = ld_err_set(err, LD_EFORMAT,
                        "layer list %s: \"names\" must be sequential, dense or single",
                        name->valuestring);
    else if ((rc = get_shape(root, "input", &in, name->valuestring, err)) == LD_OK) {
        ld_net_init(net, name->valuestring, (ld_names_t)naming, in);
        rc = parse_layers(cJSON_GetObjectItemCaseSensitive(root, "layers"), net, 0, err);
        rc = rc ? rc : ld_net_layout(net, param_off, buf_off, err);
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- the table ---- */

void ld_net_layer_name(const ld_net_t *net, int i, char *buf, size_t len)
{
    char path[LD_NET_MAX_LAYERS][64];
    module_paths(net, path);
    if (net->names == LD_NAMES_SINGLE)
        snprintf(buf, len, "%s", net->name);
    else
        snprintf(buf, len, "%s.%s", net->name, path[i]);
}

int ld_net_table(const ld_net_t *net, char *buf, size_t len)
{
    out_t o = {buf, len, 0};
    char path[LD_NET_MAX_LAYERS][64];
    module_paths(net, path);
    char shape[48];
    put(&o, "%-28s %-18s %-16s %10s\n", "layer", "type", "output", "parameters");
    snprintf(shape, sizeof shape, "(%d, %d, %d)", net->in.c, net->in.h, net->in.w);
    put(&o, "%-28s %-18s %-16s %10s\n", net->name, "input", shape, "");
    for (int i = 0; i < net->n_layers; i++) {
        const ld_layer_t *L = &net->layers[i];
        char name[96];
        if (net->names == LD_NAMES_SINGLE)
            snprintf(name, sizeof name, "%*s%.31s", 2 * L->depth, "", net->name);
        else
            snprintf(name, sizeof name, "%*s%.31s.%.40s", 2 * L->depth, "", net->name, path[i]);
        if (L->out.h == 1 && L->out.w == 1)
            snprintf(shape, sizeof shape, "(%d)", L->out.c);
        else
            snprintf(shape, sizeof shape, "(%d, %d, %d)", L->out.c, L->out.h, L->out.w);
        put(&o, "%-28s %-18s %-16s %10zu\n", name, ld_layer_kind_name(L->kind), shape,
            L->n_params);
    }
    put(&o, "%-28s %-18s %-16s %10zu\n", "total", "", "", net->n_params);
    return (int)o.pos;
}

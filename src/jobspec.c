/* jobspec.c — parse, validate and normalise a training job's JSON spec.
 * Contract and the field list: jobspec.h. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "latentd/jobspec.h"

#include "latentd/arena.h"
#include "latentd/buf.h"
#include "latentd/eval.h"
#include "latentd/fsutil.h"
#include "latentd/jsonarg.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_EPOCHS 100000
#define MAX_BATCH 65536
#define MAX_Z 1024
#define MAX_LIMIT 1000000000
#define MAX_EVERY 1000000000L

/* ---- field helpers ---------------------------------------------------------
 * Each takes the object, the key, and the dotted path used in messages.  They
 * return LD_OK with *present = 0 when the key is absent. */

/* Refuse keys not in allowed[] (LD_EFORMAT) and keys given twice. */
static int check_keys(const cJSON *obj, const char *prefix, const char *const *allowed,
                      ld_err_t *err)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        int known = 0;
        for (int i = 0; allowed[i] && !known; i++)
            known = strcmp(c->string, allowed[i]) == 0;
        if (!known)
            return ld_err_set(err, LD_EFORMAT, "%s%.80s: unknown field", prefix, c->string);
        for (const cJSON *d = c->next; d; d = d->next)
            if (strcmp(c->string, d->string) == 0)
                return ld_err_set(err, LD_EFORMAT, "%s%.80s: field given twice", prefix,
                                  c->string);
    }
    return LD_OK;
}

/* An integer in lo..min(hi, cap) (cap 0 = none; cap_name names it in messages). */
static int int_field(const cJSON *obj, const char *key, const char *path, double lo, double hi,
                     int cap, const char *cap_name, double *out, int *present, ld_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *present = v != NULL;
    if (!v)
        return LD_OK;
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || (isfinite(d) && d != floor(d)))
        return ld_err_set(err, LD_EFORMAT, "%s: expected an integer", path);
    if (!isfinite(d))
        return ld_err_set(err, LD_EINVAL, "%s: must be a finite number", path);
    if (cap > 0 && cap < hi && d > cap)
        return ld_err_set(err, LD_EINVAL, "%s: %.0f is above the configured cap of %d (%s)", path,
                          d, cap, cap_name);
    if (d < lo || d > hi)
        return ld_err_set(err, LD_EINVAL, "%s: %.0f is outside %.0f..%.0f", path, d, lo, hi);
    *out = d;
    return LD_OK;
}

enum { OPEN_LO = 1, OPEN_HI = 2 };

/* A finite number in [lo,hi] (OPEN_LO / OPEN_HI make the ends open). */
static int num_field(const cJSON *obj, const char *key, const char *path, double lo, double hi,
                     int open, float *out, int *present, ld_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *present = v != NULL;
    if (!v)
        return LD_OK;
    if (!cJSON_IsNumber(v))
        return ld_err_set(err, LD_EFORMAT, "%s: expected a number", path);
    double d = v->valuedouble;
    int below = (open & OPEN_LO) ? !(d > lo) : !(d >= lo);
    int above = (open & OPEN_HI) ? !(d < hi) : !(d <= hi);
    if (!isfinite(d) || below || above)
        return ld_err_set(err, LD_EINVAL, "%s: %g is outside %s%g,%g%s", path, d,
                          (open & OPEN_LO) ? "(" : "[", lo, hi, (open & OPEN_HI) ? ")" : "]");
    *out = (float)d;
    return LD_OK;
}

static int str_field(const cJSON *obj, const char *key, const char *path, const char **out,
                     ld_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!v)
        return LD_OK;
    if (!cJSON_IsString(v) || !v->valuestring)
        return ld_err_set(err, LD_EFORMAT, "%s: expected a string", path);
    /* the arena parser's mark of an escaped NUL (arena.h): refused, never cut */
    if (strstr(v->valuestring, "\xC0\x80"))
        return ld_err_set(err, LD_EINVAL, "%s: a string may not contain NUL (\\u0000)", path);
    *out = v->valuestring;
    return LD_OK;
}

/* A list of 0..LD_MAX_HIDDEN widths, each 1..min(LD_MAX_WIDTH, cap). */
static int list_field(const cJSON *obj, const char *key, const char *path, int min_n, int cap,
                      ld_hidden_t *h, int *present, ld_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *present = v != NULL;
    if (!v)
        return LD_OK;
    if (!cJSON_IsArray(v))
        return ld_err_set(err, LD_EFORMAT, "%s: expected an array of layer widths", path);
    int n = cJSON_GetArraySize(v);
    if (n < min_n || n > LD_MAX_HIDDEN)
        return ld_err_set(err, LD_EINVAL, "%s: %d layers; allowed %d..%d", path, n, min_n,
                          LD_MAX_HIDDEN);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble))
            return ld_err_set(err, LD_EFORMAT, "%s[%d]: expected an integer", path, i);
        double d = e->valuedouble;
        if (cap > 0 && cap < LD_MAX_WIDTH && d > cap)
            return ld_err_set(err, LD_EINVAL,
                              "%s[%d]: width %.0f is above the configured cap of %d "
                              "(max_hidden_width)",
                              path, i, d, cap);
        if (!(d >= 1 && d <= LD_MAX_WIDTH))
            return ld_err_set(err, LD_EINVAL, "%s[%d]: width %.0f is outside 1..%d", path, i, d,
                              LD_MAX_WIDTH);
        h->size[i] = (int)d;
    }
    h->n = n;
    return LD_OK;
}

/* A field that exists only for the other kind. */
static int not_for_kind(const cJSON *obj, const char *key, const char *path, ld_kind_t kind,
                        ld_err_t *err)
{
    if (!cJSON_GetObjectItemCaseSensitive(obj, key))
        return LD_OK;
    return ld_err_set(err, LD_EINVAL, "%s: does not apply to kind \"%s\"", path,
                      ld_kind_name(kind));
}

/* An object member (absent is fine: *out = NULL). */
static int obj_field(const cJSON *obj, const char *key, const cJSON **out, ld_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (v && !cJSON_IsObject(v))
        return ld_err_set(err, LD_EFORMAT, "%s: expected an object", key);
    *out = v;
    return LD_OK;
}

static int cap_or(int cap, int bound) { return cap > 0 && cap < bound ? cap : bound; }

/* ---- the three parts of a spec ---- */

static const char *const top_keys[] = {"kind", "model", "data", "limit", "arch", "train",
                                       "checkpoint_every", "ranks", "eval_n",
                                       "eval_classifier", NULL};
static const char *const arch_keys[] = {"arch", "hidden", "dec_hidden", "g_hidden", "d_hidden",
                                        "z", "act", "slope", "dropout", NULL};
static const char *const train_keys[] = {"epochs", "batch", "lr", "lr_d", "seed", "beta1",
                                         "beta2", "kl_beta", "loss", "real_label", "n_critic", "gp",
                                         "optimizer", "weight_decay", "l1", "momentum",
                                         "nesterov", "lr_schedule", "lr_step", "lr_gamma",
                                         "class_fraction", "balance", NULL};

/* The preset comes first because the other arch fields override it. */
static int parse_arch(const cJSON *a, const ld_jobs_caps_t *caps, ld_jobspec_t *s, ld_err_t *err)
{
    const ld_kind_t kind = s->kind;
    static const cJSON empty = {.type = cJSON_Object};
    if (!a)
        a = &empty; /* so the defaults meet the caps below */
    int rc, present, w = caps->max_hidden_width;
    if ((rc = check_keys(a, "arch.", arch_keys, err)))
        return rc;
    const char *preset;
    if ((rc = str_field(a, "arch", "arch.arch", &preset, err)))
        return rc;
    ld_err_t e;
    if (ld_train_recipe(kind, preset, &s->arch, &s->train, &e)) /* parse_train builds on o */
        return ld_err_set(err, LD_EINVAL, "arch.arch: %s", e.msg);
    s->article = preset && strcmp(preset, "article") == 0;
    if (ld_kind_family(kind) == LD_KIND_VAE) {
        int have_dec;
        if ((rc = not_for_kind(a, "g_hidden", "arch.g_hidden", kind, err)) ||
            (rc = not_for_kind(a, "d_hidden", "arch.d_hidden", kind, err)) ||
            (rc = not_for_kind(a, "dropout", "arch.dropout", kind, err)) ||
            (rc = list_field(a, "hidden", "arch.hidden", 1, w, &s->arch.enc, &present, err)) ||
            (rc = list_field(a, "dec_hidden", "arch.dec_hidden", 0, w, &s->arch.dec, &have_dec,
                             err)))
            return rc;
        if (present && !have_dec)
            ld_train_mirror_decoder(&s->arch);
    } else {
        if ((rc = not_for_kind(a, "hidden", "arch.hidden", kind, err)) ||
            (rc = not_for_kind(a, "dec_hidden", "arch.dec_hidden", kind, err)) ||
            (rc = list_field(a, "g_hidden", "arch.g_hidden", 0, w, &s->arch.dec, &present, err)) ||
            (rc = list_field(a, "d_hidden", "arch.d_hidden", 0, w, &s->arch.enc, &present, err)) ||
            (rc = num_field(a, "dropout", "arch.dropout", 0, 0.95, 0, &s->arch.dropout, &present,
                            err)))
            return rc;
    }
    /* Defaults are checked against the caps too: a cap below a default width
     * must not be bypassed by leaving the field out. */
    const ld_hidden_t *lists[2] = {&s->arch.enc, &s->arch.dec};
    const char *names[2][2] = {{"arch.hidden", "arch.dec_hidden"}, {"arch.d_hidden", "arch.g_hidden"}};
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < lists[l]->n; i++)
            if (lists[l]->size[i] > cap_or(w, LD_MAX_WIDTH))
                return ld_err_set(err, LD_EINVAL,
                                  "%s: the default width %d is above the configured cap of %d "
                                  "(max_hidden_width); give smaller widths",
                                  names[ld_kind_family(kind) == LD_KIND_GAN][l], lists[l]->size[i], w);
    double z = s->arch.z_dim;
    if ((rc = int_field(a, "z", "arch.z", 1, MAX_Z, caps->max_z, "max_z", &z, &present, err)))
        return rc;
    if (z > cap_or(caps->max_z, MAX_Z))
        return ld_err_set(err, LD_EINVAL,
                          "arch.z: the default %.0f is above the configured cap of %d (max_z)", z,
                          caps->max_z);
    s->arch.z_dim = (int)z;
    const char *act;
    if ((rc = str_field(a, "act", "arch.act", &act, err)))
        return rc;
    if (act && (ld_act_parse(act, &s->arch.act) || s->arch.act == LD_ACT_NONE))
        return ld_err_set(err, LD_EINVAL,
                          "arch.act: \"%.40s\" is not leaky_relu, relu, tanh or sigmoid", act);
    return num_field(a, "slope", "arch.slope", 0, 1, OPEN_HI, &s->arch.slope, &present, err);
}

/* The optimiser fields of "train" (every kind); ranges and combinations are
 * ld_optim_validate's, with the same messages as the CLI's. */
static int parse_optim(const cJSON *t, ld_optim_cfg_t *c, ld_err_t *err)
{
    int rc, present;
    const char *name;
    if ((rc = str_field(t, "optimizer", "train.optimizer", &name, err)))
        return rc;
    if (name && ld_optim_parse(name, &c->kind))
        return ld_err_set(err, LD_EINVAL, "train.optimizer: \"%.40s\" is not adam, adamw or sgd",
                          name);
    if ((rc = str_field(t, "lr_schedule", "train.lr_schedule", &name, err)))
        return rc;
    if (name && ld_sched_parse(name, &c->schedule))
        return ld_err_set(err, LD_EINVAL,
                          "train.lr_schedule: \"%.40s\" is not constant, cosine or step", name);
    const cJSON *nv = cJSON_GetObjectItemCaseSensitive(t, "nesterov");
    if (nv && !cJSON_IsBool(nv))
        return ld_err_set(err, LD_EFORMAT, "train.nesterov: expected true or false");
    if (nv)
        c->nesterov = cJSON_IsTrue(nv);
    double step = c->lr_step;
    if ((rc = num_field(t, "weight_decay", "train.weight_decay", -1e9, 1e9, 0, &c->weight_decay,
                        &present, err)) ||
        (rc = num_field(t, "l1", "train.l1", -1e9, 1e9, 0, &c->l1, &present, err)) ||
        (rc = num_field(t, "momentum", "train.momentum", -1e9, 1e9, 0, &c->momentum, &present,
                        err)) ||
        (rc = num_field(t, "lr_gamma", "train.lr_gamma", -1e9, 1e9, 0, &c->lr_gamma, &present,
                        err)) ||
        (rc = int_field(t, "lr_step", "train.lr_step", -1e9, 1e9, 0, NULL, &step, &present, err)))
        return rc;
    c->lr_step = (int)step;
    ld_err_t e;
    if (ld_optim_validate(c, &e))
        return ld_err_set(err, LD_EINVAL, "train.%s", e.msg);
    return LD_OK;
}

/* A GAN's "loss" with its defaults (ld_train_set_loss), then "n_critic"
 * and "gp", before the fields that may override those defaults. */
static int parse_loss(const cJSON *t, ld_train_opts_t *o, ld_err_t *err)
{
    const char *loss;
    int rc, present;
    if ((rc = str_field(t, "loss", "train.loss", &loss, err)))
        return rc;
    ld_gan_loss_t l = o->gan_loss;
    if (loss && ld_gan_loss_parse(loss, &l))
        return ld_err_set(err, LD_EINVAL, "train.loss: \"%.40s\" is not " LD_GAN_LOSS_LIST, loss);
    if (loss)
        ld_train_set_loss(o, l);
    double v = o->n_critic;
    if ((rc = int_field(t, "n_critic", "train.n_critic", 1, 100, 0, NULL, &v, &present, err)))
        return rc;
    o->n_critic = (int)v;
    return num_field(t, "gp", "train.gp", 0, 1e6, 0, &o->gp, &present, err);
}

static int parse_train(const cJSON *t, const ld_jobs_caps_t *caps, ld_jobspec_t *s, ld_err_t *err)
{
    const ld_kind_t kind = s->kind;
    ld_train_opts_t *o = &s->train; /* the recipe's, set by parse_arch */
    int rc, present;
    if (t && (rc = check_keys(t, "train.", train_keys, err)))
        return rc;
    double v = o->epochs;
    if (t && (rc = int_field(t, "epochs", "train.epochs", 1, MAX_EPOCHS, caps->max_epochs,
                             "max_epochs", &v, &present, err)))
        return rc;
    if (v > cap_or(caps->max_epochs, MAX_EPOCHS))
        return ld_err_set(err, LD_EINVAL,
                          "train.epochs: the default %.0f is above the configured cap of %d "
                          "(max_epochs)",
                          v, caps->max_epochs);
    o->epochs = (int)v;
    v = o->batch;
    if (t && (rc = int_field(t, "batch", "train.batch", 1, MAX_BATCH, caps->max_batch, "max_batch",
                             &v, &present, err)))
        return rc;
    if (v > cap_or(caps->max_batch, MAX_BATCH))
        return ld_err_set(err, LD_EINVAL,
                          "train.batch: the default %.0f is above the configured cap of %d "
                          "(max_batch)",
                          v, caps->max_batch);
    o->batch = (int)v;
    if (!t)
        return LD_OK;
    v = (double)o->seed;
    if ((rc = int_field(t, "seed", "train.seed", 0, (double)LD_SEED_MAX, 0, NULL, &v, &present, err)))
        return rc;
    o->seed = (uint64_t)v;
    if (ld_kind_family(kind) == LD_KIND_GAN && (rc = parse_loss(t, o, err)))
        return rc;
    float f;
    if ((rc = num_field(t, "lr", "train.lr", 0, 1, OPEN_LO, &f, &present, err)))
        return rc;
    if (present)
        o->adam.lr = o->adam_d.lr = f;
    if ((rc = num_field(t, "beta1", "train.beta1", 0, 1, OPEN_HI, &f, &present, err)))
        return rc;
    if (present)
        o->adam.beta1 = o->adam_d.beta1 = f;
    if ((rc = num_field(t, "beta2", "train.beta2", 0, 1, OPEN_HI, &f, &present, err)))
        return rc;
    if (present)
        o->adam.beta2 = o->adam_d.beta2 = f;
    if ((rc = parse_optim(t, &o->optim, err)))
        return rc;
    if (ld_kind_family(kind) == LD_KIND_VAE) {
        if ((rc = not_for_kind(t, "lr_d", "train.lr_d", kind, err)) ||
            (rc = not_for_kind(t, "loss", "train.loss", kind, err)) ||
            (rc = not_for_kind(t, "n_critic", "train.n_critic", kind, err)) ||
            (rc = not_for_kind(t, "gp", "train.gp", kind, err)) ||
            (rc = not_for_kind(t, "real_label", "train.real_label", kind, err)))
            return rc;
        return num_field(t, "kl_beta", "train.kl_beta", 0, 1000, 0, &o->kl_beta, &present, err);
    }
    if ((rc = not_for_kind(t, "kl_beta", "train.kl_beta", kind, err)) ||
        (rc = num_field(t, "lr_d", "train.lr_d", 0, 1, OPEN_LO, &o->adam_d.lr, &present, err)) ||
        (rc = num_field(t, "real_label", "train.real_label", 0, 1, OPEN_LO, &o->real_label,
                        &present, err)))
        return rc;
    return LD_OK;
}

/* train.class_fraction ({"5": 0.05} or "5:0.05") and train.balance.  The
 * class count is known here only for fashion-mnist (10); for another data set
 * an unknown class fails the job when its data is loaded. */
static int parse_balance(const cJSON *t, ld_jobspec_t *s, ld_err_t *err)
{
    ld_train_opts_t *o = &s->train;
    const cJSON *cf = t ? cJSON_GetObjectItemCaseSensitive(t, "class_fraction") : NULL;
    ld_err_t e;
    int rc = LD_OK;
    if (cJSON_IsString(cf)) {
        if (ld_class_fraction_parse(cf->valuestring, &o->class_fraction, &e))
            return ld_err_set(err, LD_EINVAL, "train.class_fraction: %s", e.msg);
    } else if (cJSON_IsObject(cf)) {
        for (const cJSON *c = cf->child; c && !rc; c = c->next) {
            char *end;
            long cls = strtol(c->string, &end, 10);
            if (!cJSON_IsNumber(c))
                return ld_err_set(err, LD_EFORMAT, "train.class_fraction.%.40s: expected a "
                                  "number", c->string);
            if (!c->string[0] || *end)
                rc = ld_err_set(&e, LD_EINVAL, "\"%.40s\" is not a class number", c->string);
            else
                rc = ld_class_fraction_add(&o->class_fraction, cls, c->valuedouble, &e);
        }
        if (rc)
            return ld_err_set(err, LD_EINVAL, "train.class_fraction: %s", e.msg);
    } else if (cf) {
        return ld_err_set(err, LD_EFORMAT, "train.class_fraction: expected an object "
                          "{\"5\": 0.05} or a string \"5:0.05\"");
    }
    for (int i = 0; !strcmp(s->data, "fashion-mnist") && i < o->class_fraction.n; i++)
        if (o->class_fraction.cls[i] >= 10)
            return ld_err_set(err, LD_EINVAL, "train.class_fraction: fashion-mnist has no class "
                              "%d (its classes are 0..9)", o->class_fraction.cls[i]);
    const char *b;
    if (t && (rc = str_field(t, "balance", "train.balance", &b, err)))
        return rc;
    if (t && b && ld_balance_parse(b, &o->balance))
        return ld_err_set(err, LD_EINVAL, "train.balance: \"%.40s\" is not none, resample, "
                          "weight or augment", b);
    if (o->balance == LD_BALANCE_WEIGHT && s->kind == LD_KIND_GAN)
        return ld_err_set(err, LD_EINVAL, "train.balance: weight applies to vae, cvae, "
                          "classifier and cgan, not gan (it has no labels to weight)");
    return LD_OK;
}

/* "data": a bare name here; whether it exists is ld_jobspec_resolve_data's job. */
static int check_data_name(const char *data, ld_err_t *err)
{
    if (strcmp(data, "fashion-mnist") == 0 || ld_name_is_safe(data))
        return LD_OK;
    return ld_err_set(err, LD_EINVAL,
                      "data: \"%.80s\" is not allowed: give \"fashion-mnist\" or the name of a "
                      "data set in the data folder (no paths)",
                      data);
}

static const char *const invert_keys[] = {"kind", "model", "file", "images", "steps",
                                          "restarts", "seed", "lr", "z_penalty", NULL};

const char *ld_jobspec_kind_name(const ld_jobspec_t *s)
{
    return s->invert ? "invert" : s->evaluate ? "evaluate" : ld_kind_name(s->kind);
}

/* The normal form of an inversion job (jobspec.h), into s. */
static int parse_invert(const cJSON *root, ld_jobspec_t *s, ld_err_t *err)
{
    const char *model, *file;
    double n = 0, steps = 0, restarts = 0, seed = 0;
    float lr = 0, pen = 0;
    int p[6], rc;
    if ((rc = check_keys(root, "", invert_keys, err)) ||
        (rc = str_field(root, "model", "model", &model, err)) ||
        (rc = str_field(root, "file", "file", &file, err)) ||
        (rc = int_field(root, "images", "images", 1, LD_INVERT_MAX_ROWS, 0, NULL, &n, &p[0], err)) ||
        (rc = int_field(root, "steps", "steps", 1, 1e9, 0, NULL, &steps, &p[1], err)) ||
        (rc = int_field(root, "restarts", "restarts", 1, LD_INVERT_MAX_ROWS, 0, NULL, &restarts,
                        &p[2], err)) ||
        (rc = int_field(root, "seed", "seed", 0, (double)LD_SEED_MAX, 0, NULL, &seed, &p[3], err)) ||
        (rc = num_field(root, "lr", "lr", 0, 1e9, OPEN_LO, &lr, &p[4], err)) ||
        (rc = num_field(root, "z_penalty", "z_penalty", 0, 1e9, 0, &pen, &p[5], err)))
        return rc;
    if (!model || !ld_name_is_safe(model) || !file || strchr(file, '/') || file[0] == '.' ||
        strlen(file) >= sizeof s->inv.file || !p[0] || !p[1] || !p[2] || !p[3] || !p[4] || !p[5])
        return ld_err_set(err, LD_EFORMAT, "an invert spec needs model, file, images, steps, "
                                           "restarts, seed, lr and z_penalty");
    s->invert = 1;
    s->kind = LD_KIND_GAN;
    snprintf(s->model, sizeof s->model, "%s", model);
    snprintf(s->inv.file, sizeof s->inv.file, "%s", file);
    s->inv.images = (int)n;
    s->inv.opts = (ld_invert_opts_t){(int)steps, (int)restarts, (uint64_t)seed, lr, pen};
    return LD_OK;
}

static const char *const evaluate_keys[] = {"kind", "model", "file", "classifier",
                                            "classifier_file", "data", "n", "k", "seed", NULL};

/* A file name in the model folder: no slash, not hidden. */
static int model_file_ok(const char *f, size_t max)
{
    return f && f[0] && f[0] != '.' && !strchr(f, '/') && strlen(f) < max;
}

/* The normal form of an evaluation job (jobspec.h), into s. */
static int parse_evaluate(const cJSON *root, ld_jobspec_t *s, ld_err_t *err)
{
    const char *model, *file, *cls, *cfile, *data;
    double n = 0, k = 0, seed = 0;
    int p[3], rc;
    if ((rc = check_keys(root, "", evaluate_keys, err)) ||
        (rc = str_field(root, "model", "model", &model, err)) ||
        (rc = str_field(root, "file", "file", &file, err)) ||
        (rc = str_field(root, "classifier", "classifier", &cls, err)) ||
        (rc = str_field(root, "classifier_file", "classifier_file", &cfile, err)) ||
        (rc = str_field(root, "data", "data", &data, err)) ||
        (rc = int_field(root, "n", "n", LD_EVAL_PRC_K + 1, LD_EVAL_N_MAX, 0, NULL, &n, &p[0], err)) ||
        (rc = int_field(root, "k", "k", 1, LD_EVAL_K_MAX, 0, NULL, &k, &p[1], err)) ||
        (rc = int_field(root, "seed", "seed", 0, (double)LD_SEED_MAX, 0, NULL, &seed, &p[2], err)))
        return rc;
    if (!model || !ld_name_is_safe(model) || !cls || !ld_name_is_safe(cls) || !data ||
        check_data_name(data, err) || !model_file_ok(file, sizeof s->ev.file) ||
        !model_file_ok(cfile, sizeof s->ev.classifier_file) || !p[0] || !p[1] || !p[2])
        return ld_err_set(err, LD_EFORMAT, "an evaluate spec needs model, file, classifier, "
                                           "classifier_file, data, n, k and seed");
    s->evaluate = 1;
    snprintf(s->model, sizeof s->model, "%s", model);
    snprintf(s->data, sizeof s->data, "%s", data);
    snprintf(s->ev.file, sizeof s->ev.file, "%s", file);
    snprintf(s->ev.classifier, sizeof s->ev.classifier, "%s", cls);
    snprintf(s->ev.classifier_file, sizeof s->ev.classifier_file, "%s", cfile);
    s->ev.n = (int)n;
    s->ev.k = (int)k;
    s->ev.seed = (uint64_t)seed;
    return LD_OK;
}

/* "eval_n" and "eval_classifier" of a training spec (jobspec.h). */
static int parse_checkpoint_eval(const cJSON *root, ld_jobspec_t *s, ld_err_t *err)
{
    double n = LD_JOBSPEC_EVAL_N_DEFAULT;
    int present, rc;
    const char *cls;
    if ((rc = int_field(root, "eval_n", "eval_n", 0, LD_EVAL_N_MAX, 0, NULL, &n, &present, err)) ||
        (rc = str_field(root, "eval_classifier", "eval_classifier", &cls, err)))
        return rc;
    if (n > 0 && n <= LD_EVAL_PRC_K)
        return ld_err_set(err, LD_EINVAL, "eval_n: %d is too few samples: 0 (off) or more than %d",
                          (int)n, LD_EVAL_PRC_K);
    if (cls && !ld_name_is_safe(cls))
        return ld_err_set(err, LD_EINVAL, "eval_classifier: \"%.64s\" is not a model name", cls);
    s->eval_n = (int)n;
    snprintf(s->eval_classifier, sizeof s->eval_classifier, "%s",
             cls ? cls : LD_JOBSPEC_EVAL_CLASSIFIER_DEFAULT);
    return LD_OK;
}

int ld_jobspec_parse(const char *body, size_t len, const ld_jobs_caps_t *caps,
                     long checkpoint_every_default, ld_jobspec_t *s, ld_err_t *err)
{
    static const ld_jobs_caps_t no_caps;
    if (!caps)
        caps = &no_caps;
    if (!body || !s)
        return ld_err_set(err, LD_EINVAL, "ld_jobspec_parse: body and out are required");
    memset(s, 0, sizeof *s);
    const char *end = NULL;
    /* the arena's parser holds numbers to JSON's grammar and keeps \u0000
     * visible (str_field refuses it), as the /v1 routes' argument layer does */
    ld_arena_t arena;
    ld_arena_init(&arena, 2 * len + LD_ARENA_MIN);
    cJSON *root = ld_arena_parse_json(&arena, body, len, &end);
    if (!root) {
        ld_arena_free(&arena);
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return ld_err_set(err, LD_EFORMAT, "body: malformed JSON near byte %zu", at);
    }
    int rc = LD_OK;
    for (const char *p = end; p && p < body + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            rc = ld_err_set(err, LD_EFORMAT, "body: unexpected bytes after the JSON value at byte %zu",
                            (size_t)(p - body));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        rc = ld_err_set(err, LD_EFORMAT, "body: expected a JSON object");
        goto out;
    }
    const cJSON *kj = cJSON_GetObjectItemCaseSensitive(root, "kind");
    if (cJSON_IsString(kj) && strcmp(kj->valuestring, "invert") == 0) {
        rc = parse_invert(root, s, err);
        goto out;
    }
    if (cJSON_IsString(kj) && strcmp(kj->valuestring, "evaluate") == 0) {
        rc = parse_evaluate(root, s, err);
        goto out;
    }
    if ((rc = check_keys(root, "", top_keys, err)))
        goto out;

    const char *kind, *model, *data;
    if ((rc = str_field(root, "kind", "kind", &kind, err)) ||
        (rc = str_field(root, "model", "model", &model, err)) ||
        (rc = str_field(root, "data", "data", &data, err)))
        goto out;
    if (!kind) {
        rc = ld_err_set(err, LD_EFORMAT, "kind: required (\"vae\", \"gan\", \"cgan\" or \"cvae\")");
        goto out;
    }
    if (ld_kind_parse(kind, &s->kind) || ld_kind_family(s->kind) == LD_KIND_CLASSIFIER) {
        rc = ld_err_set(err, LD_EINVAL, "kind: \"%.40s\" is not vae, gan, cgan or cvae", kind);
        goto out;
    }
    if (!model) {
        rc = ld_err_set(err, LD_EFORMAT, "model: required (the name to serve the result under)");
        goto out;
    }
    if (!ld_name_is_safe(model)) {
        rc = ld_err_set(err, LD_EINVAL,
                        "model: \"%.80s\" is not a valid name ([A-Za-z0-9][A-Za-z0-9._-]{0,63})",
                        model);
        goto out;
    }
    snprintf(s->model, sizeof s->model, "%s", model);
    if (!data)
        data = "fashion-mnist";
    if ((rc = check_data_name(data, err)))
        goto out;
    snprintf(s->data, sizeof s->data, "%s", data);

    int present;
    double v = 0;
    if ((rc = int_field(root, "limit", "limit", 0, MAX_LIMIT, caps->max_limit, "max_limit", &v,
                        &present, err)))
        goto out;
    s->limit = (int)v;
    if (caps->max_limit > 0 && s->limit == 0)
        s->limit = caps->max_limit;

    const cJSON *arch, *train;
    if ((rc = obj_field(root, "arch", &arch, err)) || (rc = obj_field(root, "train", &train, err)) ||
        (rc = parse_arch(arch, caps, s, err)) || (rc = parse_train(train, caps, s, err)) ||
        (rc = parse_balance(train, s, err)))
        goto out;

    v = (double)checkpoint_every_default;
    if ((rc = int_field(root, "checkpoint_every", "checkpoint_every", 0, (double)MAX_EVERY, 0, NULL,
                        &v, &present, err)))
        goto out;
    s->train.checkpoint_every = v > 0 ? (long)v : 0;
    v = 1;
    if ((rc = int_field(root, "ranks", "ranks", 1, LD_JOBSPEC_MAX_RANKS, 0, NULL, &v, &present,
                        err)))
        goto out;
    s->ranks = (int)v;
    if ((rc = parse_checkpoint_eval(root, s, err)))
        goto out;
    if (s->ranks > s->train.batch) {
        rc = ld_err_set(err, LD_EINVAL, "ranks: %d is more than train.batch %d (each rank needs a "
                                        "share of every batch)", s->ranks, s->train.batch);
        goto out;
    }

    /* The model's own checks are a safety net: the fields above cover them. */
    ld_err_t e;
    if (ld_arch_validate(&s->arch, &e))
        rc = ld_err_set(err, LD_EINVAL, "arch: %s", e.msg);
    else if (ld_train_opts_validate(&s->train, &e))
        rc = ld_err_set(err, LD_EINVAL, "train: %s", e.msg);
    else
        rc = ld_jobspec_check_bytes(&s->arch, &s->train, caps->max_job_bytes, err);
    if (!rc && ld_train_check_arch(&s->arch, &s->train, &e))
        rc = ld_err_set(err, LD_EINVAL, "train.loss: %s", e.msg);
out:
    ld_arena_free(&arena);
    return rc;
}

/* ---- memory estimate ---- */

/* One dense net in -> hidden... -> out: *params += its weights and biases,
 * *units += the widths of its outputs, *widest = max(*widest, any width). */
static void net_size(int in, const ld_hidden_t *h, int out, double *params, double *units,
                     double *widest)
{
    double prev = in;
    *widest = fmax(*widest, in);
    for (int i = 0; i <= h->n; i++) {
        double w = i < h->n ? h->size[i] : out;
        *params += prev * w + w;
        *units += w;
        *widest = fmax(*widest, w);
        prev = w;
    }
}

/* A layer-list architecture's parameters, the outputs of every layer of a
 * row (the discriminator's twice) and the widest; 0 when it does not lay
 * out (validation reports why). */
static void layer_sizes(const ld_arch_t *a, double *P, double *units, double *widest)
{
    ld_model_t *m = calloc(1, sizeof *m);
    if (!m || ld_arch_validate(a, NULL)) {
        free(m);
        return;
    }
    m->arch = *a;
    m->n_nets = ld_kind_ops(a->kind)->layout(m, &m->n_params, &m->n_bufs);
    *P = (double)m->n_params;
    for (int n = 0; n < m->n_nets; n++)
        for (int i = 0; i < m->layers[n].n_layers; i++) {
            ld_shape_t s = m->layers[n].layers[i].out;
            double w = (double)s.c * s.h * s.w;
            *units += w * (ld_kind_family(a->kind) == LD_KIND_GAN && n == LD_GAN_D ? 2 : 1);
            *widest = w > *widest ? w : *widest;
        }
    free(m);
}

void ld_jobspec_bytes(const ld_arch_t *a, const ld_train_opts_t *o, ld_job_bytes_t *out)
{
    static const ld_hidden_t none = {0};
    double P = 0, units = 0, widest = 0;
    if (a->net != LD_NETS_MLP) {
        layer_sizes(a, &P, &units, &widest);
    } else if (a->kind == LD_KIND_GAN) {
        net_size(a->z_dim, &a->dec, a->x_dim, &P, &units, &widest);  /* generator */
        net_size(a->x_dim, &a->enc, 1, &P, &units, &widest);         /* discriminator */
        units *= 2; /* the discriminator sees real and generated batches */
    } else {
        int h = a->enc.n > 0 ? a->enc.size[a->enc.n - 1] : a->x_dim;
        net_size(a->x_dim, &a->enc, h, &P, &units, &widest);          /* encoder */
        units -= h; /* the last hidden layer is the encoder's output */
        net_size(h, &none, a->z_dim, &P, &units, &widest);           /* mu */
        net_size(h, &none, a->z_dim, &P, &units, &widest);           /* logvar */
        net_size(a->z_dim, &a->dec, a->x_dim, &P, &units, &widest);  /* decoder */
    }
    int threads = o->threads > 1 ? o->threads : 1;
    double sets = 3 + (threads - 1) + (ld_kind_family(a->kind) == LD_KIND_GAN && o->g_ema > 0);
    double B = o->batch > 0 ? o->batch : 1;
    out->params = 4 * P;
    out->optimiser = 4 * P * sets;
    /* each layer's output, its gradient and (with dropout) mask and copy,
     * plus two scratch rows of the widest layer, for the whole batch */
    out->activations = 4 * B * (3 * units + 2 * widest + a->x_dim);
    out->total = out->params + out->optimiser + out->activations;
}

int ld_jobspec_check_bytes(const ld_arch_t *arch, const ld_train_opts_t *o, long long max_bytes,
                           ld_err_t *err)
{
    ld_job_bytes_t b;
    ld_jobspec_bytes(arch, o, &b);
    if (max_bytes <= 0 || b.total <= (double)max_bytes)
        return LD_OK;
    const double MiB = 1024.0 * 1024.0;
    return ld_err_set(err, LD_EINVAL,
                      "arch: this job needs about %.0f MiB (parameters %.0f MiB, optimiser state "
                      "%.0f MiB, activations %.0f MiB); the limit (max_job_bytes) is %.0f MiB: "
                      "use smaller widths or a smaller batch",
                      b.total / MiB, b.params / MiB, b.optimiser / MiB, b.activations / MiB,
                      (double)max_bytes / MiB);
}

/* ---- normal form ---- */

/* The shortest %g form that reads back as the same float. */
static void fmt_float(char *buf, size_t len, float f)
{
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, len, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f)
            return;
    }
}

static int add_float(cJSON *o, const char *key, float f)
{
    char buf[32];
    fmt_float(buf, sizeof buf, f);
    return cJSON_AddRawToObject(o, key, buf) != NULL;
}

static int add_balance(cJSON *train, const ld_train_opts_t *o)
{
    cJSON *cf = o->class_fraction.n ? cJSON_AddObjectToObject(train, "class_fraction") : NULL;
    if (o->class_fraction.n && !cf)
        return 0;
    for (int i = 0; i < o->class_fraction.n; i++) {
        char key[8];
        snprintf(key, sizeof key, "%d", o->class_fraction.cls[i]);
        if (!add_float(cf, key, o->class_fraction.frac[i]))
            return 0;
    }
    return o->balance == LD_BALANCE_NONE ||
           cJSON_AddStringToObject(train, "balance", ld_balance_name(o->balance));
}

static int add_list(cJSON *o, const char *key, const ld_hidden_t *h)
{
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (int i = 0; a && i < h->n; i++) {
        cJSON *n = cJSON_CreateNumber(h->size[i]);
        if (!n || !cJSON_AddItemToArray(a, n))
            return 0;
    }
    return a != NULL;
}

static char *invert_to_json(const ld_jobspec_t *s)
{
    const ld_invert_opts_t *o = &s->inv.opts;
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"kind\":\"invert\",\"model\":");
    ld_buf_json_str(&b, s->model);
    ld_buf_puts(&b, ",\"file\":");
    ld_buf_json_str(&b, s->inv.file);
    char lr[32], pen[32];
    fmt_float(lr, sizeof lr, o->lr);
    fmt_float(pen, sizeof pen, o->z_penalty);
    ld_buf_printf(&b, ",\"images\":%d,\"steps\":%d,\"restarts\":%d,\"seed\":%" PRIu64
                      ",\"lr\":%s,\"z_penalty\":%s}",
                  s->inv.images, o->steps, o->restarts, o->seed, lr, pen);
    size_t len;
    char *out = ld_buf_failed(&b) ? NULL : ld_buf_steal(&b, &len);
    ld_buf_free(&b);
    return out;
}

/* The optimiser fields that differ from the default (plain Adam, constant
 * rate), so specs without them print as they did. */
static int optim_to_json(cJSON *train, const ld_optim_cfg_t *c)
{
    int ok = 1;
    if (c->kind != LD_OPTIM_ADAM)
        ok = cJSON_AddStringToObject(train, "optimizer", ld_optim_name(c->kind)) != NULL;
    if (ok && c->weight_decay > 0)
        ok = add_float(train, "weight_decay", c->weight_decay);
    if (ok && c->l1 > 0)
        ok = add_float(train, "l1", c->l1);
    if (ok && c->momentum > 0)
        ok = add_float(train, "momentum", c->momentum) &&
             cJSON_AddBoolToObject(train, "nesterov", c->nesterov) != NULL;
    if (ok && c->schedule != LD_SCHED_CONSTANT)
        ok = cJSON_AddStringToObject(train, "lr_schedule", ld_sched_name(c->schedule)) != NULL;
    if (ok && c->schedule == LD_SCHED_STEP)
        ok = cJSON_AddNumberToObject(train, "lr_step", c->lr_step) &&
             add_float(train, "lr_gamma", c->lr_gamma);
    return ok;
}

static char *evaluate_to_json(const ld_jobspec_t *s)
{
    ld_buf_t b = {0};
    ld_buf_puts(&b, "{\"kind\":\"evaluate\",\"model\":");
    ld_buf_json_str(&b, s->model);
    ld_buf_puts(&b, ",\"file\":");
    ld_buf_json_str(&b, s->ev.file);
    ld_buf_puts(&b, ",\"classifier\":");
    ld_buf_json_str(&b, s->ev.classifier);
    ld_buf_puts(&b, ",\"classifier_file\":");
    ld_buf_json_str(&b, s->ev.classifier_file);
    ld_buf_puts(&b, ",\"data\":");
    ld_buf_json_str(&b, s->data);
    ld_buf_printf(&b, ",\"n\":%d,\"k\":%d,\"seed\":%" PRIu64 "}", s->ev.n, s->ev.k, s->ev.seed);
    size_t len;
    char *out = ld_buf_failed(&b) ? NULL : ld_buf_steal(&b, &len);
    ld_buf_free(&b);
    return out;
}

char *ld_jobspec_to_json(const ld_jobspec_t *s)
{
    if (s->invert)
        return invert_to_json(s);
    if (s->evaluate)
        return evaluate_to_json(s);
    const ld_arch_t *a = &s->arch;
    const ld_train_opts_t *o = &s->train;
    const int gan = ld_kind_family(s->kind) == LD_KIND_GAN;
    char buf[32];
    cJSON *root = cJSON_CreateObject();
    cJSON *arch = cJSON_CreateObject(), *train = cJSON_CreateObject();
    int ok = root && arch && train && cJSON_AddStringToObject(root, "kind", ld_kind_name(s->kind)) &&
             cJSON_AddStringToObject(root, "model", s->model) &&
             cJSON_AddStringToObject(root, "data", s->data) &&
             cJSON_AddNumberToObject(root, "limit", s->limit);
    /* cmlp is the conditional kinds' default: no preset */
    int fixed_net = a->net != LD_NETS_MLP && a->net != LD_NETS_CMLP;
    const char *preset = fixed_net ? ld_netarch_name(a->net) : s->article ? "article" : "default";
    int lists = !fixed_net || a->net == LD_NETS_RESMLP; /* dcgan, conv: fixed nets */
    if (ok && (gan || fixed_net))
        ok = cJSON_AddStringToObject(arch, "arch", preset) != NULL;
    if (ok && gan && lists)
        ok = add_list(arch, "g_hidden", &a->dec) && add_list(arch, "d_hidden", &a->enc);
    else if (ok && lists)
        ok = add_list(arch, "hidden", &a->enc) && add_list(arch, "dec_hidden", &a->dec);
    else if (ok && a->net == LD_NETS_CONV) /* its decoder's channels */
        ok = add_list(arch, "dec_hidden", &a->dec);
    ok = ok && cJSON_AddNumberToObject(arch, "z", a->z_dim) &&
         cJSON_AddStringToObject(arch, "act", ld_act_name(a->act)) &&
         add_float(arch, "slope", a->slope) && (!gan || add_float(arch, "dropout", a->dropout));
    snprintf(buf, sizeof buf, "%" PRIu64, o->seed);
    ok = ok && cJSON_AddNumberToObject(train, "epochs", o->epochs) &&
         cJSON_AddNumberToObject(train, "batch", o->batch) && add_float(train, "lr", o->adam.lr) &&
         (!gan || add_float(train, "lr_d", o->adam_d.lr)) &&
         cJSON_AddRawToObject(train, "seed", buf) && add_float(train, "beta1", o->adam.beta1) &&
         add_float(train, "beta2", o->adam.beta2);
    if (ok && gan)
        ok = cJSON_AddStringToObject(train, "loss", ld_gan_loss_name(o->gan_loss)) &&
             add_float(train, "real_label", o->real_label);
    else if (ok)
        ok = add_float(train, "kl_beta", o->kl_beta);
    if (ok && gan && o->gan_loss == LD_GAN_LOSS_WGAN_GP) /* absent otherwise, as before */
        ok = cJSON_AddNumberToObject(train, "n_critic", o->n_critic) && add_float(train, "gp", o->gp);
    ok = ok && optim_to_json(train, &o->optim);
    ok = ok && add_balance(train, o); /* absent when unset: older specs print as they did */
    if (ok) {
        ok = cJSON_AddItemToObject(root, "arch", arch);
        arch = NULL;
        ok = ok && cJSON_AddItemToObject(root, "train", train);
        train = NULL;
        ok = ok && cJSON_AddNumberToObject(root, "checkpoint_every", (double)o->checkpoint_every);
        if (s->ranks > 1) /* absent when 1, so specs from before ranks print as they did */
            ok = ok && cJSON_AddNumberToObject(root, "ranks", s->ranks);
        ok = ok && cJSON_AddNumberToObject(root, "eval_n", s->eval_n) &&
             cJSON_AddStringToObject(root, "eval_classifier", s->eval_classifier);
    }
    char *out = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(arch);
    cJSON_Delete(train);
    cJSON_Delete(root);
    return out;
}

/* ---- data sets ---- */

int ld_jobspec_resolve_data(const char *data_dir, const char *data, char *path, size_t len,
                            ld_err_t *err)
{
    if (!data || check_data_name(data, err))
        return data ? LD_EINVAL : ld_err_set(err, LD_EINVAL, "data: required");
    if (strcmp(data, "fashion-mnist") == 0) {
        if (snprintf(path, len, "%s", data) >= (int)len)
            return ld_err_set(err, LD_EINVAL, "data: path too long");
        return LD_OK;
    }
    if (!data_dir || !data_dir[0])
        return ld_err_set(err, LD_EINVAL,
                          "data: \"%s\" is unknown: no data folder is configured, so only "
                          "\"fashion-mnist\" is available",
                          data);
    char joined[PATH_MAX + 80];
    if (snprintf(joined, sizeof joined, "%s/%s", data_dir, data) >= (int)sizeof joined)
        return ld_err_set(err, LD_EINVAL, "data: path too long");
    char *root = realpath(data_dir, NULL);
    if (!root)
        return ld_err_set(err, LD_EINVAL, "data: the data folder %s is not usable: %s", data_dir,
                          strerror(errno));
    int rc = LD_OK;
    char *real = realpath(joined, NULL);
    size_t rl = strlen(root);
    struct stat st;
    if (!real)
        rc = ld_err_set(err, LD_EINVAL, "data: no data set named \"%s\" in the data folder%s",
                        data, errno == ENOENT ? "" : " (it cannot be resolved)");
    else if (strncmp(real, root, rl) != 0 || real[rl] != '/' || real[rl + 1] == '\0')
        rc = ld_err_set(err, LD_EINVAL,
                        "data: \"%s\" resolves outside the data folder (a symbolic link out of "
                        "it is not allowed)",
                        data);
    else if (stat(real, &st) != 0 || !(S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
        rc = ld_err_set(err, LD_EINVAL, "data: \"%s\" is neither a folder nor a file", data);
    else if (snprintf(path, len, "%s", real) >= (int)len)
        rc = ld_err_set(err, LD_EINVAL, "data: path too long");
    free(real);
    free(root);
    return rc;
}

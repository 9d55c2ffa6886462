/* optim.c — optimisers and learning-rate schedules. See optim.h. */
#define _XOPEN_SOURCE 700 /* M_PI */
#include "latentd/optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Elements between two yield points, as in Adam (nn.c). */
#define OPTIM_SLICE 65536u

static const char *const optim_names[] = {"adam", "adamw", "sgd"};
static const char *const sched_names[] = {"constant", "cosine", "step"};

static int parse_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

const char *ld_optim_name(ld_optim_kind_t k)
{
    return (unsigned)k < LD_ARRAY_LEN(optim_names) ? optim_names[k] : "?";
}

int ld_optim_parse(const char *s, ld_optim_kind_t *k)
{
    int i = parse_name(s, optim_names, (int)LD_ARRAY_LEN(optim_names));
    if (i < 0)
        return -1;
    *k = (ld_optim_kind_t)i;
    return 0;
}

const char *ld_sched_name(ld_sched_kind_t k)
{
    return (unsigned)k < LD_ARRAY_LEN(sched_names) ? sched_names[k] : "?";
}

int ld_sched_parse(const char *s, ld_sched_kind_t *k)
{
    int i = parse_name(s, sched_names, (int)LD_ARRAY_LEN(sched_names));
    if (i < 0)
        return -1;
    *k = (ld_sched_kind_t)i;
    return 0;
}

int ld_optim_validate(const ld_optim_cfg_t *c, ld_err_t *err)
{
    if ((unsigned)c->kind >= LD_ARRAY_LEN(optim_names))
        return ld_err_set(err, LD_EINVAL, "optimizer: unknown (adam, adamw or sgd)");
    if ((unsigned)c->schedule >= LD_ARRAY_LEN(sched_names))
        return ld_err_set(err, LD_EINVAL, "lr_schedule: unknown (constant, cosine or step)");
    if (!(c->weight_decay >= 0 && c->weight_decay <= 1))
        return ld_err_set(err, LD_EINVAL, "weight_decay %g is outside [0,1]",
                          (double)c->weight_decay);
    if (!(c->l1 >= 0 && c->l1 <= 1))
        return ld_err_set(err, LD_EINVAL, "l1 %g is outside [0,1]", (double)c->l1);
    if (!(c->momentum >= 0 && c->momentum < 1))
        return ld_err_set(err, LD_EINVAL, "momentum %g is outside [0,1)", (double)c->momentum);
    if (c->kind != LD_OPTIM_SGD && (c->momentum > 0 || c->nesterov))
        return ld_err_set(err, LD_EINVAL,
                          "momentum and nesterov apply to optimizer sgd only (%s has its betas)",
                          ld_optim_name(c->kind));
    if (c->nesterov && !(c->momentum > 0))
        return ld_err_set(err, LD_EINVAL, "nesterov needs a momentum above 0");
    if (c->schedule == LD_SCHED_STEP) {
        if (c->lr_step < 1)
            return ld_err_set(err, LD_EINVAL, "lr_schedule step needs lr_step >= 1 (updates "
                                              "between two cuts of the rate)");
        if (!(c->lr_gamma > 0 && c->lr_gamma <= 1))
            return ld_err_set(err, LD_EINVAL, "lr_gamma %g is outside (0,1]", (double)c->lr_gamma);
    } else if (c->lr_step != 0) {
        return ld_err_set(err, LD_EINVAL, "lr_step applies to lr_schedule step only");
    }
    return LD_OK;
}

double ld_optim_lr(const ld_optim_cfg_t *c, double base, long t, long total)
{
    long k = t > 0 ? t - 1 : 0; /* scheduler steps taken before this update */
    switch (c->schedule) {
    case LD_SCHED_COSINE:
        if (total <= 0)
            return base;
        return base * (1.0 + cos(M_PI * (double)k / (double)total)) / 2.0;
    case LD_SCHED_STEP:
        return base * pow((double)c->lr_gamma, (double)(k / (c->lr_step > 0 ? c->lr_step : 1)));
    default:
        return base;
    }
}

static float sign_of(float w) { return (float)((w > 0) - (w < 0)); }

void ld_optim_step(const ld_optim_cfg_t *c, const ld_adam_cfg_t *a, double lr, long t, size_t n,
                   float *p, float *g, float *m, float *v)
{
    /* torch: the L2 term joins the gradient for Adam and SGD; AdamW scales
     * the weights by 1 - lr wd before its Adam step */
    const float l1 = c->l1, l2 = c->kind == LD_OPTIM_ADAMW ? 0.0f : c->weight_decay;
    const float decay = (float)(1.0 - lr * (double)c->weight_decay);
    const int adamw = c->kind == LD_OPTIM_ADAMW && c->weight_decay > 0;
    const ld_adam_cfg_t ac = {(float)lr, a->beta1, a->beta2, a->eps};
    const float mom = c->momentum, step = (float)lr;
    for (size_t s = 0; s < n; s += OPTIM_SLICE) {
        size_t e = n - s > OPTIM_SLICE ? s + OPTIM_SLICE : n;
        if (l1 > 0 || l2 > 0)
            for (size_t i = s; i < e; i++)
                g[i] = (g[i] + l1 * sign_of(p[i])) + l2 * p[i]; /* torch's order */
        if (adamw)
            for (size_t i = s; i < e; i++)
                p[i] *= decay;
        if (c->kind != LD_OPTIM_SGD) {
            ld_adam_step(&ac, t, e - s, p + s, g + s, m + s, v + s); /* yields */
            continue;
        }
        ld_yield_point();
        for (size_t i = s; i < e; i++) {
            float d = g[i];
            if (mom > 0) { /* torch's first buffer is d itself: the same as from zero */
                m[i] = mom * m[i] + d;
                d = c->nesterov ? d + mom * m[i] : m[i];
            }
            p[i] -= step * d;
        }
    }
}

char *ld_optim_describe(const ld_optim_cfg_t *c, char *buf, size_t len)
{
    int pos = snprintf(buf, len, "%s", ld_optim_name(c->kind));
    if (c->momentum > 0 && pos >= 0 && (size_t)pos < len)
        pos += snprintf(buf + pos, len - pos, " momentum=%g%s", (double)c->momentum,
                        c->nesterov ? " nesterov" : "");
    if (c->weight_decay > 0 && pos >= 0 && (size_t)pos < len)
        pos += snprintf(buf + pos, len - pos, " weight_decay=%g", (double)c->weight_decay);
    if (c->l1 > 0 && pos >= 0 && (size_t)pos < len)
        snprintf(buf + pos, len - pos, " l1=%g", (double)c->l1);
    return buf;
}

char *ld_sched_describe(const ld_optim_cfg_t *c, char *buf, size_t len)
{
    if (c->schedule == LD_SCHED_STEP)
        snprintf(buf, len, "step %d gamma=%g", c->lr_step, (double)c->lr_gamma);
    else
        snprintf(buf, len, "%s", ld_sched_name(c->schedule));
    return buf;
}

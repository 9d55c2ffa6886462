/* balance.c — class fractions and the imbalance remedies. See balance.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/balance.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define SEED_CUT 0x434c415353435554ull /* "CLASSCUT" */
#define SEED_AUG 0x4155474d454e54ull   /* "AUGMENT" */

static const char *const balance_names[] = {"none", "resample", "weight", "augment"};

int ld_balance_parse(const char *s, ld_balance_t *out)
{
    for (int i = 0; s && i < (int)LD_ARRAY_LEN(balance_names); i++)
        if (!strcmp(s, balance_names[i])) {
            *out = (ld_balance_t)i;
            return 0;
        }
    return -1;
}

const char *ld_balance_name(ld_balance_t b)
{
    return (int)b >= 0 && (int)b < (int)LD_ARRAY_LEN(balance_names) ? balance_names[b] : "?";
}

int ld_class_fraction_add(ld_class_fraction_t *cf, long cls, double frac, ld_err_t *err)
{
    if (cls < 0 || cls >= LD_BAL_MAX_CLASSES)
        return ld_err_set(err, LD_EINVAL, "class %ld is outside 0..%d", cls, LD_BAL_MAX_CLASSES - 1);
    if (!(frac > 0 && frac <= 1))
        return ld_err_set(err, LD_EINVAL, "class %ld: fraction %g is outside (0, 1]", cls, frac);
    for (int i = 0; i < cf->n; i++)
        if (cf->cls[i] == cls)
            return ld_err_set(err, LD_EINVAL, "class %ld is given twice", cls);
    cf->cls[cf->n] = (uint8_t)cls;
    cf->frac[cf->n] = (float)frac;
    cf->n++;
    return LD_OK;
}

int ld_class_fraction_parse(const char *s, ld_class_fraction_t *cf, ld_err_t *err)
{
    memset(cf, 0, sizeof *cf);
    while (s && *s) {
        char *end;
        errno = 0;
        long c = strtol(s, &end, 10);
        if (end == s || *end != ':' || errno)
            return ld_err_set(err, LD_EINVAL, "\"%.40s\": expected CLASS:FRACTION[,...], "
                              "e.g. 5:0.05,9:0.1", s);
        const char *f = end + 1;
        double v = strtod(f, &end);
        if (end == f || (*end && *end != ','))
            return ld_err_set(err, LD_EINVAL, "\"%.40s\": expected a fraction after %ld:", f, c);
        int rc = ld_class_fraction_add(cf, c, v, err);
        if (rc)
            return rc;
        s = *end ? end + 1 : end;
    }
    return LD_OK;
}

void ld_class_fraction_format(const ld_class_fraction_t *cf, char *buf, size_t len)
{
    size_t pos = 0;
    if (len)
        buf[0] = 0;
    for (int i = 0; i < cf->n && pos < len; i++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s%d:%g", i ? "," : "", cf->cls[i],
                                (double)cf->frac[i]);
}

int ld_balance_check(const ld_dataset_t *d, const ld_class_fraction_t *cf, ld_balance_t mode,
                     ld_err_t *err)
{
    if ((cf->n > 0 || mode != LD_BALANCE_NONE) && !d->y)
        return ld_err_set(err, LD_EINVAL, "data %s has no labels: class fraction and "
                          "balance %s need them", d->name, ld_balance_name(mode));
    for (int i = 0; i < cf->n; i++)
        if (cf->cls[i] >= d->n_classes)
            return ld_err_set(err, LD_EINVAL, "class fraction: data %s has no class %d "
                              "(its classes are 0..%d)", d->name, cf->cls[i], d->n_classes - 1);
    return LD_OK;
}

void ld_balance_plan_free(ld_balance_plan_t *p)
{
    if (!p)
        return;
    free(p->rows);
    free(p->by_class);
    free(p);
}

/* Mark, in keep (d->n), the rows that survive cf. */
static void cut_classes(const ld_dataset_t *d, const ld_class_fraction_t *cf, uint64_t seed,
                        uint8_t *keep, int *scratch)
{
    ld_rng_t r;
    ld_rng_seed(&r, seed ^ SEED_CUT);
    for (int i = 0; i < cf->n; i++) {
        int m = 0;
        for (int k = 0; k < d->n; k++)
            if (d->y[k] == cf->cls[i])
                scratch[m++] = k;
        long want = lround((double)cf->frac[i] * m);
        want = want < 1 ? 1 : want;
        ld_rng_shuffle(&r, scratch, m);
        for (long k = want; k < m; k++)
            keep[scratch[k]] = 0;
    }
}

int ld_balance_plan_new(const ld_dataset_t *d, const ld_class_fraction_t *cf, ld_balance_t mode,
                        uint64_t seed, ld_balance_plan_t **out, ld_err_t *err)
{
    *out = NULL;
    int rc = ld_balance_check(d, cf, mode, err);
    if (rc)
        return rc;
    ld_balance_plan_t *p = ld_calloc(1, sizeof *p);
    uint8_t *keep = ld_malloc_array((size_t)d->n, 1);
    int *scratch = ld_malloc_array((size_t)d->n, sizeof(int));
    if (p) {
        p->rows = ld_malloc_array((size_t)d->n, sizeof(int));
        p->by_class = ld_malloc_array((size_t)d->n, sizeof(int));
    }
    if (!p || !keep || !scratch || !p->rows || !p->by_class) {
        free(keep);
        free(scratch);
        ld_balance_plan_free(p);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    p->mode = mode;
    p->n_classes = d->y ? d->n_classes : 0;
    memset(keep, 1, (size_t)d->n);
    if (cf->n > 0)
        cut_classes(d, cf, seed, keep, scratch);
    for (int k = 0; k < d->n; k++)
        if (keep[k]) {
            p->rows[p->n++] = k;
            if (d->y)
                p->count[d->y[k]]++;
        }
    int present = 0, at = 0;
    for (int c = 0; c < p->n_classes; c++) {
        p->start[c] = at;
        at += p->count[c];
        present += p->count[c] > 0;
    }
    int fill[LD_BAL_MAX_CLASSES] = {0};
    for (int i = 0; d->y && i < p->n; i++) {
        int c = d->y[p->rows[i]];
        p->by_class[p->start[c] + fill[c]++] = p->rows[i];
    }
    /* weights: 1/count, scaled so that their mean over present classes is 1 */
    double inv_sum = 0;
    for (int c = 0; c < p->n_classes; c++)
        inv_sum += p->count[c] ? 1.0 / p->count[c] : 0;
    double mean_count = present ? (double)p->n / present : 0;
    for (int c = 0; c < LD_BAL_MAX_CLASSES; c++) {
        p->weight[c] = 1.0f;
        if (mode == LD_BALANCE_WEIGHT && c < p->n_classes && p->count[c])
            p->weight[c] = (float)(present / (p->count[c] * inv_sum));
        p->minority[c] = c < p->n_classes && p->count[c] && p->count[c] < mean_count;
    }
    free(keep);
    free(scratch);
    *out = p;
    return LD_OK;
}

void ld_balance_order(const ld_balance_plan_t *p, ld_rng_t *r, int *perm)
{
    if (p->mode != LD_BALANCE_RESAMPLE) {
        memcpy(perm, p->rows, (size_t)p->n * sizeof(int));
        ld_rng_shuffle(r, perm, p->n);
        return;
    }
    int present[LD_BAL_MAX_CLASSES], np = 0;
    for (int c = 0; c < p->n_classes; c++)
        if (p->count[c])
            present[np++] = c;
    for (int i = 0; i < p->n; i++) {
        int c = present[ld_rng_below(r, (uint32_t)np)];
        perm[i] = p->by_class[p->start[c] + (int)ld_rng_below(r, (uint32_t)p->count[c])];
    }
}

void ld_balance_row_scale(const ld_balance_plan_t *p, const uint8_t *y, int b, float *s)
{
    double sum = 0;
    for (int i = 0; i < b; i++)
        sum += p->weight[y[i]];
    for (int i = 0; i < b; i++)
        s[i] = (float)(p->weight[y[i]] * b / sum);
}

void ld_balance_augment(const ld_balance_plan_t *p, uint64_t seed, long step, int h, int w,
                        float *x, const uint8_t *y, int b, float *tmp)
{
    ld_rng_t r;
    ld_rng_seed(&r, seed ^ SEED_AUG ^ (0x9e3779b97f4a7c15ull * (uint64_t)step));
    const int S = LD_BAL_SHIFT;
    for (int i = 0; i < b; i++) {
        /* every row draws, minority or not, so a row's change depends only on
         * its place in the batch */
        int dy = (int)ld_rng_below(&r, 2 * S + 1) - S, dx = (int)ld_rng_below(&r, 2 * S + 1) - S;
        int flip = (int)ld_rng_below(&r, 2);
        if (!p->minority[y[i]])
            continue;
        float *img = x + (size_t)i * h * w;
        memcpy(tmp, img, (size_t)h * w * sizeof(float));
        for (int row = 0; row < h; row++)
            for (int col = 0; col < w; col++) {
                int sr = row - dy, sc = col - dx;
                if (flip)
                    sc = w - 1 - sc;
                img[row * w + col] = sr >= 0 && sr < h && sc >= 0 && sc < w ? tmp[sr * w + sc] : 0.0f;
            }
    }
}

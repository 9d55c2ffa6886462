/* balance.h — imbalanced training data: cut classes to a fraction of their
 * images (--class-fraction), and the three remedies (--balance):
 *
 *   resample  each epoch draws its rows class first (every class present
 *             equally likely), then a row of that class, with replacement;
 *   weight    per-class loss weights, inverse frequency normalised to mean 1
 *             over the classes present; a batch's loss is the weighted mean
 *             sum(w_y * l) / sum(w_y) (torch's reduction="mean" with weight=);
 *   augment   rows of minority classes (fewer rows than the mean count) are
 *             shifted by -2..2 pixels in each direction (zeros fill) and
 *             flipped left-right with probability 1/2.
 *
 * Everything random comes from the training seed (and, for augment, the step
 * number), never from the thread count, so runs and resumes are exact.
 *
 * Ownership: a plan owns its arrays and borrows nothing; after
 * ld_balance_plan_new it is read-only, so any thread may read it.  The
 * functions that take an ld_rng_t use it from the caller's thread only.
 */
#ifndef LATENTD_BALANCE_H
#define LATENTD_BALANCE_H

#include "latentd/common.h"
#include "latentd/data.h"
#include "latentd/rng.h"

#define LD_BAL_MAX_CLASSES 256 /* labels are bytes */
#define LD_BAL_SHIFT 2         /* augment: largest shift in pixels */

typedef enum {
    LD_BALANCE_NONE = 0,
    LD_BALANCE_RESAMPLE,
    LD_BALANCE_WEIGHT,
    LD_BALANCE_AUGMENT,
} ld_balance_t;

/* Classes cut to a fraction of their images: n pairs (cls[i], frac[i]),
 * classes distinct, fractions in (0, 1].  n = 0: nothing is cut. */
typedef struct {
    int n;
    uint8_t cls[LD_BAL_MAX_CLASSES];
    float frac[LD_BAL_MAX_CLASSES];
} ld_class_fraction_t;

/* "none" | "resample" | "weight" | "augment"; -1 for anything else. */
int ld_balance_parse(const char *s, ld_balance_t *out);
const char *ld_balance_name(ld_balance_t b);

/* Add one pair: LD_EINVAL for a class outside 0..255, a fraction outside
 * (0, 1] or a class already present (err says which). */
int ld_class_fraction_add(ld_class_fraction_t *cf, long cls, double frac, ld_err_t *err);
/* "5:0.05,9:0.1" (the CLI form and a job spec's string form); "" = none.
 * LD_EINVAL naming the bad item, or as ld_class_fraction_add. */
int ld_class_fraction_parse(const char *s, ld_class_fraction_t *cf, ld_err_t *err);
/* Back to "5:0.05,9:0.1" (fractions with 6 significant digits), "" when n = 0. */
void ld_class_fraction_format(const ld_class_fraction_t *cf, char *buf, size_t len);

/* The rows one training run uses, and what its remedy needs. */
typedef struct {
    int n;                              /* rows kept */
    int *rows;                          /* (n) data set rows, ascending */
    int n_classes;                      /* the data set's (0 without labels) */
    int count[LD_BAL_MAX_CLASSES];      /* kept rows per class */
    int *by_class;                      /* (n) kept rows grouped by class; class c
                                           at by_class[start[c] .. start[c] + count[c]) */
    int start[LD_BAL_MAX_CLASSES];
    float weight[LD_BAL_MAX_CLASSES];   /* loss weight per class (1 unless weight) */
    uint8_t minority[LD_BAL_MAX_CLASSES]; /* augment: count below the mean count */
    ld_balance_t mode;
} ld_balance_plan_t;

/* LD_EINVAL when cf or mode needs labels and d has none, or cf names a class
 * the data set does not have (the message gives the data set's classes). */
int ld_balance_check(const ld_dataset_t *d, const ld_class_fraction_t *cf, ld_balance_t mode,
                     ld_err_t *err);

/* Keep, of every class in cf, round(frac * its rows) (at least 1) rows, drawn
 * from seed; every other row stays.  Errors as ld_balance_check; d is only
 * read. */
int ld_balance_plan_new(const ld_dataset_t *d, const ld_class_fraction_t *cf, ld_balance_t mode,
                        uint64_t seed, ld_balance_plan_t **out, ld_err_t *err);
void ld_balance_plan_free(ld_balance_plan_t *p);

/* One epoch's order, perm (p->n) data set rows: the kept rows shuffled by r,
 * or with resample, p->n draws class-first. */
void ld_balance_order(const ld_balance_plan_t *p, ld_rng_t *r, int *perm);

/* weight: s (b) = the per-row factors that turn a mean over the batch into
 * the weighted mean, w_{y_i} * b / sum_j w_{y_j}; y (b) labels. */
void ld_balance_row_scale(const ld_balance_plan_t *p, const uint8_t *y, int b, float *s);

/* augment: x (b, h*w) in place, rows of minority classes only, from a stream
 * seeded by (seed, step).  tmp (h*w) is scratch. */
void ld_balance_augment(const ld_balance_plan_t *p, uint64_t seed, long step, int h, int w,
                        float *x, const uint8_t *y, int b, float *tmp);

#endif

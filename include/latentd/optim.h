/* optim.h — the optimisers and learning-rate schedules of training: Adam (L2
 * weight decay added to the gradient, as torch.optim.Adam), AdamW (decoupled
 * decay, as torch.optim.AdamW), SGD with momentum and Nesterov (as
 * torch.optim.SGD, dampening 0), an L1 penalty, and constant, cosine and step
 * schedules (torch's CosineAnnealingLR over the run, StepLR).
 *
 * Pure functions of their arguments: any thread may call them; the caller
 * owns every buffer.  The trainer (train.c) calls ld_optim_step on slices of
 * a net's parameters, one slice per worker, so an update never depends on how
 * the parameters are sliced (MPI ranks and threads give the same bytes).
 * Checked against PyTorch on tests/fixtures/optim.safetensors
 * (tests/reference/make_optim_fixtures.py). */
#ifndef LATENTD_OPTIM_H
#define LATENTD_OPTIM_H

#include "latentd/common.h"
#include "latentd/nn.h"

#include <stddef.h>

typedef enum { LD_OPTIM_ADAM = 0, LD_OPTIM_ADAMW, LD_OPTIM_SGD } ld_optim_kind_t;
typedef enum { LD_SCHED_CONSTANT = 0, LD_SCHED_COSINE, LD_SCHED_STEP } ld_sched_kind_t;

/* All zero = plain Adam at a constant rate (latentd's default).  The rate,
 * betas and eps stay in ld_adam_cfg_t (one per net); SGD reads only its lr. */
typedef struct {
    ld_optim_kind_t kind;
    float weight_decay;    /* >= 0: adam, sgd: + wd * w in the gradient; adamw: w *= 1 - lr * wd */
    float l1;              /* >= 0: + l1 * sign(w) in the gradient (sign(0) = 0), every kind */
    float momentum;        /* sgd: [0, 1) */
    int nesterov;          /* sgd: needs momentum > 0 */
    ld_sched_kind_t schedule;
    int lr_step;           /* step: multiply the rate by lr_gamma every lr_step updates (>= 1) */
    float lr_gamma;        /* step: (0, 1] */
} ld_optim_cfg_t;

/* Names: "adam", "adamw", "sgd"; "constant", "cosine", "step".  Parsers
 * return 0, or -1 for an unknown name. */
const char *ld_optim_name(ld_optim_kind_t k);
int ld_optim_parse(const char *s, ld_optim_kind_t *k);
const char *ld_sched_name(ld_sched_kind_t k);
int ld_sched_parse(const char *s, ld_sched_kind_t *k);

/* LD_EINVAL with a message naming the field (as the job spec spells it) for a
 * value outside its range or a combination that means nothing (nesterov
 * without momentum, momentum with adam, a step schedule without lr_step). */
int ld_optim_validate(const ld_optim_cfg_t *c, ld_err_t *err);

/* The rate of update t (1-based) of total, from base: torch's scheduler after
 * t - 1 scheduler steps.  cosine: base * (1 + cos(pi (t-1) / total)) / 2;
 * step: base * gamma ^ floor((t-1) / lr_step). */
double ld_optim_lr(const ld_optim_cfg_t *c, double base, long t, long total);

/* One update t (1-based) of n parameters p at rate lr, with beta1, beta2 and
 * eps from a (its lr is not read).  g (n) is the gradient and is used as
 * scratch: the penalties are added to it.  m, v (n) are the optimiser's
 * state: Adam's moments, or SGD's momentum buffer in m (v unused); zero
 * before update 1.  Yields (ld_yield_point) between slices. */
void ld_optim_step(const ld_optim_cfg_t *c, const ld_adam_cfg_t *a, double lr, long t, size_t n,
                   float *p, float *g, float *m, float *v);

/* What the training record and a state file's key show: "adam", or e.g.
 * "sgd momentum=0.9 nesterov weight_decay=0.0001 l1=1e-05"; the schedule:
 * "constant", "cosine", "step 10 gamma=0.5".  Returns buf. */
char *ld_optim_describe(const ld_optim_cfg_t *c, char *buf, size_t len);
char *ld_sched_describe(const ld_optim_cfg_t *c, char *buf, size_t len);

#endif

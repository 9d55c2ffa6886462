/* check_optim.c — optimisers and schedules (optim.h) against PyTorch's own
 * torch.optim.{Adam, AdamW, SGD} and CosineAnnealingLR / StepLR on the
 * fixture tests/fixtures/optim.safetensors (tests/reference/
 * make_optim_fixtures.py), their validation messages, and that slicing the
 * parameters (threads, MPI ranks) and the default path change no bit. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/ckpt.h"
#include "latentd/optim.h"

#include <string.h>

#define FIX "tests/fixtures/optim.safetensors"
#define N 8
#define S 6
#define TOL 1e-6
/* Relative to max(|p|, FLOOR): a parameter that crosses zero is the
 * difference of numbers of about the step's size, so below that its float
 * rounding is no longer relative to itself. */
#define FLOOR 1e-2

/* The script's CASES, in its order: optimiser, its lr, betas, the penalty and
 * schedule settings. */
static const struct {
    const char *name;
    ld_adam_cfg_t adam;
    ld_optim_cfg_t o;
} cases[] = {
    {"adam_l2", {1e-2f, 0.9f, 0.999f, 1e-8f}, {.kind = LD_OPTIM_ADAM, .weight_decay = 0.1f}},
    {"adamw_cosine", {1e-2f, 0.8f, 0.99f, 1e-8f},
     {.kind = LD_OPTIM_ADAMW, .weight_decay = 0.05f, .schedule = LD_SCHED_COSINE}},
    {"adam_l1_step", {2e-3f, 0.5f, 0.999f, 1e-8f},
     {.kind = LD_OPTIM_ADAM, .l1 = 0.01f, .schedule = LD_SCHED_STEP, .lr_step = 2, .lr_gamma = 0.5f}},
    {"sgd_momentum_step", {0.1f, 0, 0, 1e-8f},
     {.kind = LD_OPTIM_SGD, .momentum = 0.9f, .weight_decay = 0.01f, .schedule = LD_SCHED_STEP,
      .lr_step = 4, .lr_gamma = 0.1f}},
    {"sgd_nesterov_cosine", {0.05f, 0, 0, 1e-8f},
     {.kind = LD_OPTIM_SGD, .momentum = 0.8f, .nesterov = 1, .weight_decay = 1e-3f, .l1 = 0.02f,
      .schedule = LD_SCHED_COSINE}},
    {"sgd_plain", {0.1f, 0, 0, 1e-8f}, {.kind = LD_OPTIM_SGD}},
};

static const float *fx(const ld_ckpt_t *c, const char *name, const char *what, size_t n)
{
    char full[LD_CKPT_NAME_MAX];
    snprintf(full, sizeof full, "%s.%s", name, what);
    const ld_tensor_view_t *t = ld_ckpt_find(c, full);
    ck_assert_msg(t && t->numel == n, "fixture lacks %s of %zu values", full, n);
    return t->data;
}

/* Every case, every step: the rate and the parameters as torch has them. */
START_TEST(test_optim_matches_torch)
{
    ld_ckpt_t *c = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_ckpt_read(FIX, &c, &err) == LD_OK, "%s: %s (run from the repository root)",
                  FIX, err.msg);
    char names[256] = "";
    for (size_t k = 0; k < LD_ARRAY_LEN(cases); k++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? "," : "",
                 cases[k].name);
    ck_assert_str_eq(ld_ckpt_meta(c, "cases"), names);
    for (size_t k = 0; k < LD_ARRAY_LEN(cases); k++) {
        const char *name = cases[k].name;
        ck_assert_msg(ld_optim_validate(&cases[k].o, &err) == LD_OK, "%s: %s", name, err.msg);
        const float *p0 = fx(c, name, "p0", N), *g = fx(c, name, "g", S * N),
                    *after = fx(c, name, "after", S * N), *lr = fx(c, name, "lr", S);
        float p[N], gs[N], m[N] = {0}, v[N] = {0};
        memcpy(p, p0, sizeof p);
        double worst = 0, worst_lr = 0;
        for (int s = 0; s < S; s++) {
            double r = ld_optim_lr(&cases[k].o, cases[k].adam.lr, s + 1, S);
            double dl = fabs(r - lr[s]) / lr[s];
            worst_lr = dl > worst_lr ? dl : worst_lr;
            memcpy(gs, g + s * N, sizeof gs);
            ld_optim_step(&cases[k].o, &cases[k].adam, r, s + 1, N, p, gs, m, v);
            double d = tu_max_rel_diff(p, after + s * N, N, FLOOR);
            worst = d > worst ? d : worst;
        }
        fprintf(stderr, "optim %-20s largest relative difference: params %.3g, lr %.3g\n", name,
                worst, worst_lr);
        ck_assert_msg(worst_lr <= TOL, "%s: lr differs from torch's by %.3g", name, worst_lr);
        ck_assert_msg(worst <= TOL, "%s: params differ from torch's by %.3g relative", name, worst);
    }
    ld_ckpt_free(c);
}
END_TEST

/* Plain Adam at a constant rate is ld_adam_step, bit for bit (the models
 * trained before optimisers were selectable train the same). */
START_TEST(test_default_is_adam)
{
    enum { n = 70000 }; /* two slices */
    static float a[5 * n];
    float *p = a, *g = a + n, *m = a + 2 * n, *v = a + 3 * n, *q = a + 4 * n;
    for (size_t i = 0; i < n; i++)
        p[i] = q[i] = sinf((float)i), g[i] = cosf((float)i * 0.7f);
    static float m2[n], v2[n], g2[n];
    const ld_adam_cfg_t cfg = {1e-3f, 0.9f, 0.999f, 1e-8f};
    const ld_optim_cfg_t o = {0};
    for (long t = 1; t <= 3; t++) {
        memcpy(g2, g, sizeof g2);
        ld_optim_step(&o, &cfg, ld_optim_lr(&o, cfg.lr, t, 10), t, n, p, g2, m, v);
        ld_adam_step(&cfg, t, n, q, g, m2, v2);
    }
    ck_assert(memcmp(p, q, n * sizeof *p) == 0);
    ck_assert(memcmp(m, m2, n * sizeof *m) == 0);
}
END_TEST

/* One call over n parameters or one per slice (how threads and ranks cut a
 * net): the same bytes, for SGD with Nesterov and for AdamW with L1. */
START_TEST(test_slices_change_nothing)
{
    enum { n = 1000 };
    static float p[n], g[n], m[n], v[n], p1[n], g1[n], m1[n], v1[n];
    const ld_adam_cfg_t cfg = {0.05f, 0.9f, 0.999f, 1e-8f};
    const ld_optim_cfg_t os[2] = {
        {.kind = LD_OPTIM_SGD, .momentum = 0.9f, .nesterov = 1, .weight_decay = 1e-3f},
        {.kind = LD_OPTIM_ADAMW, .weight_decay = 1e-2f, .l1 = 1e-3f, .schedule = LD_SCHED_COSINE},
    };
    for (int k = 0; k < 2; k++) {
        memset(m, 0, sizeof m), memset(v, 0, sizeof v), memset(m1, 0, sizeof m1),
            memset(v1, 0, sizeof v1);
        for (int i = 0; i < n; i++)
            p[i] = p1[i] = (float)(i % 7) - 3.0f;
        for (long t = 1; t <= 4; t++) {
            for (int i = 0; i < n; i++)
                g[i] = g1[i] = sinf((float)(i * t));
            double lr = ld_optim_lr(&os[k], cfg.lr, t, 4);
            ld_optim_step(&os[k], &cfg, lr, t, n, p, g, m, v);
            for (int s = 0; s < n; s += 333) {
                int e = s + 333 < n ? s + 333 : n;
                ld_optim_step(&os[k], &cfg, lr, t, (size_t)(e - s), p1 + s, g1 + s, m1 + s, v1 + s);
            }
        }
        ck_assert_msg(memcmp(p, p1, sizeof p) == 0, "%s: slicing changed the parameters",
                      ld_optim_name(os[k].kind));
    }
}
END_TEST

/* Each bad value gets a message naming the field. */
START_TEST(test_validate_messages)
{
    const struct {
        ld_optim_cfg_t o;
        const char *want;
    } bad[] = {
        {{.weight_decay = -0.1f}, "weight_decay -0.1 is outside [0,1]"},
        {{.l1 = -1e-3f}, "l1 -0.001 is outside [0,1]"},
        {{.kind = LD_OPTIM_SGD, .momentum = 1.0f}, "momentum 1 is outside [0,1)"},
        {{.kind = LD_OPTIM_SGD, .momentum = -0.5f}, "momentum -0.5 is outside [0,1)"},
        {{.kind = LD_OPTIM_SGD, .nesterov = 1}, "nesterov needs a momentum above 0"},
        {{.kind = LD_OPTIM_ADAM, .momentum = 0.9f}, "apply to optimizer sgd only"},
        {{.schedule = LD_SCHED_STEP, .lr_gamma = 0.5f}, "lr_schedule step needs lr_step >= 1"},
        {{.schedule = LD_SCHED_STEP, .lr_step = 3, .lr_gamma = 1.5f}, "lr_gamma 1.5 is outside (0,1]"},
        {{.schedule = LD_SCHED_COSINE, .lr_step = 3}, "lr_step applies to lr_schedule step only"},
        {{.kind = (ld_optim_kind_t)7}, "optimizer: unknown"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        ld_err_t err = {{0}};
        ck_assert_int_eq(ld_optim_validate(&bad[i].o, &err), LD_EINVAL);
        ck_assert_msg(strstr(err.msg, bad[i].want), "case %zu: \"%s\" lacks \"%s\"", i, err.msg,
                      bad[i].want);
    }
    ld_optim_kind_t k;
    ld_sched_kind_t s;
    ck_assert_int_eq(ld_optim_parse("adamw", &k), 0);
    ck_assert_int_eq(k, LD_OPTIM_ADAMW);
    ck_assert_int_eq(ld_optim_parse("Adam", &k), -1);
    ck_assert_int_eq(ld_sched_parse("cosine", &s), 0);
    ck_assert_int_eq(s, LD_SCHED_COSINE);
    ck_assert_int_eq(ld_sched_parse("linear", &s), -1);
    char buf[128];
    const ld_optim_cfg_t o = {.kind = LD_OPTIM_SGD, .momentum = 0.9f, .nesterov = 1,
                              .weight_decay = 1e-4f, .schedule = LD_SCHED_STEP, .lr_step = 10,
                              .lr_gamma = 0.5f};
    ck_assert_str_eq(ld_optim_describe(&o, buf, sizeof buf),
                     "sgd momentum=0.9 nesterov weight_decay=0.0001");
    ck_assert_str_eq(ld_sched_describe(&o, buf, sizeof buf), "step 10 gamma=0.5");
}
END_TEST

Suite *suite_optim(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_optim_matches_torch);
    tcase_add_test(tc, test_default_is_adam);
    tcase_add_test(tc, test_slices_change_nothing);
    tcase_add_test(tc, test_validate_messages);
    suite_add_tcase(s, tc);
    return s;
}

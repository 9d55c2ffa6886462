/* check_gp.c — the GAN losses (gan.h) and the WGAN-GP gradient penalty (gp.h):
 * every loss's D-step and G-step gradients and the penalty's gradient against
 * PyTorch (tests/reference/make_loss_fixtures.py, autograd with
 * create_graph=True), the penalty against finite differences, and wgan-gp
 * training: 1 thread against 2, resume, and the critics it refuses. */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/data.h"
#include "latentd/gan.h"
#include "latentd/gp.h"
#include "latentd/model.h"
#include "latentd/train.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define FIXTURE "tests/fixtures/gan_losses.safetensors"
#define B 6
#define TOL 1e-5 /* relative to the largest entry of each tensor */

static const char *const loss_cases[] = {"ns", "hinge", "lsgan", "wgan-gp"};

static const float *fx(const ld_ckpt_t *c, const char *name, size_t n)
{
    const ld_tensor_view_t *t = ld_ckpt_find(c, name);
    ck_assert_msg(t != NULL, "fixture lacks %s", name);
    ck_assert_msg(t->numel == n, "fixture %s has %zu values, expected %zu", name, t->numel, n);
    return t->data;
}

/* The fixture's tiny dense GAN: 4x4 images, z 3, G 3-5-16, D 16-5-4-1, no dropout. */
static ld_model_t *fixture_model(const ld_ckpt_t *c)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_GAN, &a);
    a.img_h = a.img_w = 4;
    a.x_dim = 16;
    a.z_dim = 3;
    a.dec = (ld_hidden_t){1, {5}};
    a.enc = (ld_hidden_t){2, {5, 4}};
    a.dropout = 0.0f;
    ld_model_t *m = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_new(&a, 1, &m, &err) == LD_OK, "%s", err.msg);
    ld_tensor_view_t tv[16];
    int n = ld_model_tensors(m, m->params, tv, 16);
    ck_assert_int_eq(n, 10);
    for (int i = 0; i < n; i++)
        memcpy((float *)tv[i].data, fx(c, tv[i].name, tv[i].numel), tv[i].numel * sizeof(float));
    return m;
}

static ld_ckpt_t *read_fixture(void)
{
    ld_ckpt_t *c = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_ckpt_read(FIXTURE, &c, &err) == LD_OK, "%s (run from the repository root)",
                  err.msg);
    return c;
}

/* Every tensor of net's range of grads against "<prefix><name>"; returns the worst. */
static double compare_grads(const ld_model_t *m, const float *grads, const char *net,
                            const ld_ckpt_t *c, const char *prefix)
{
    ld_tensor_view_t tv[16];
    int n = ld_model_tensors(m, grads, tv, 16);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        if (strncmp(tv[i].name, net, strlen(net)))
            continue;
        char name[LD_CKPT_NAME_MAX];
        snprintf(name, sizeof name, "%.40s%.80s", prefix, tv[i].name);
        const float *want = fx(c, name, tv[i].numel);
        double scale = tu_max_abs(want, tv[i].numel);
        double d = tu_max_rel_diff(tv[i].data, want, tv[i].numel, scale > 1e-12 ? scale : 1e-12);
        if (scale <= 1e-12) /* a gradient that must be zero (the penalty's biases) */
            d = tu_max_abs(tv[i].data, tv[i].numel);
        ck_assert_msg(d <= TOL, "%s: relative difference %g", name, d);
        worst = d > worst ? d : worst;
    }
    return worst;
}

START_TEST(test_losses_match_torch)
{
    const char *name = loss_cases[_i];
    ld_ckpt_t *c = read_fixture();
    ld_model_t *m = fixture_model(c);
    ld_gan_loss_t loss;
    ck_assert_int_eq(ld_gan_loss_parse(name, &loss), 0);
    ck_assert_str_eq(ld_gan_loss_name(loss), name);
    ld_gan_ws_t ws;
    ck_assert_int_eq(ld_gan_ws_init(&ws, m, B), LD_OK);
    ws.loss = loss;
    ws.gp = 10.0f;
    ws.eps = fx(c, "eps", B);
    if (loss == LD_GAN_LOSS_WGAN_GP)
        ck_assert_int_eq(ld_gan_ws_init_gp(&ws, m), LD_OK);
    float *grads = calloc(m->n_params, sizeof *grads);
    char key[64];
    double ld = ld_gan_step_d(m, grads, &ws, B, fx(c, "real", B * 16), fx(c, "z", B * 3), 0.9f,
                              NULL, NULL, NULL);
    snprintf(key, sizeof key, "%s.grad_d.", name);
    double wd = compare_grads(m, grads, "discriminator", c, key);
    memset(grads, 0, m->n_params * sizeof *grads);
    double lg = ld_gan_step_g(m, grads, &ws, B, loss, NULL);
    snprintf(key, sizeof key, "%s.grad_g.", name);
    double wg = compare_grads(m, grads, "generator", c, key);
    snprintf(key, sizeof key, "%s.loss_d", name);
    double want_d = fx(c, key, 1)[0];
    snprintf(key, sizeof key, "%s.loss_g", name);
    double want_g = fx(c, key, 1)[0];
    printf("loss %s vs torch: loss_D %.7g (torch %.7g), loss_G %.7g (torch %.7g), worst "
           "relative gradient difference D %.3g, G %.3g (tolerance %g)\n",
           name, ld, want_d, lg, want_g, wd, wg, TOL);
    ck_assert_msg(fabs(ld - want_d) <= TOL * fmax(1, fabs(want_d)), "loss_D %g vs %g", ld, want_d);
    ck_assert_msg(fabs(lg - want_g) <= TOL * fmax(1, fabs(want_g)), "loss_G %g vs %g", lg, want_g);
    free(grads);
    ld_gan_ws_free(&ws);
    ld_model_free(m);
    ld_ckpt_free(c);
}
END_TEST

/* The fixture's fakes, G(z). */
static void fixture_fakes(const ld_model_t *m, const ld_ckpt_t *c, float *fake)
{
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_decode(m, B, fx(c, "z", B * 3), fake, &err) == LD_OK, "%s", err.msg);
}

START_TEST(test_penalty_matches_torch)
{
    ld_ckpt_t *c = read_fixture();
    ld_model_t *m = fixture_model(c);
    const ld_net_t *D = &m->layers[LD_GAN_D];
    ld_err_t err = {{0}};
    ck_assert_msg(ld_gp_check(D, &err) == LD_OK, "%s", err.msg);
    ld_gp_ws_t ws;
    ck_assert_int_eq(ld_gp_ws_init(&ws, D, B), LD_OK);
    float fake[B * 16], norms[B];
    fixture_fakes(m, c, fake);
    float *grads = calloc(m->n_params, sizeof *grads);
    double p = ld_gp_penalty(D, m->params, grads, &ws, B, fx(c, "real", B * 16), fake,
                             fx(c, "eps", B), 10.0f, NULL, norms);
    double want = fx(c, "gp.penalty", 1)[0];
    double worst = compare_grads(m, grads, "discriminator", c, "gp.grad.");
    printf("gradient penalty vs torch.autograd.grad(create_graph=True): %.7g (torch %.7g), "
           "worst relative gradient difference %.3g (tolerance %g); |grad D| of row 0 %.4g\n",
           p, want, worst, TOL, (double)norms[0]);
    ck_assert_msg(fabs(p - want) <= TOL * fabs(want), "penalty %g vs %g", p, want);
    free(grads);
    ld_gp_ws_free(&ws);
    ld_model_free(m);
    ld_ckpt_free(c);
}
END_TEST

/* The penalty's gradient against central differences of the penalty, every
 * discriminator parameter. */
START_TEST(test_penalty_finite_differences)
{
    ld_ckpt_t *c = read_fixture();
    ld_model_t *m = fixture_model(c);
    const ld_net_t *D = &m->layers[LD_GAN_D];
    for (size_t i = D->param_off; i < D->param_off + D->n_params; i++)
        m->params[i] *= 3.0f; /* norms of order 1 rather than 0.04: (|g| - 1) matters */
    ld_gp_ws_t ws;
    ck_assert_int_eq(ld_gp_ws_init(&ws, D, B), LD_OK);
    float fake[B * 16], norms[B];
    fixture_fakes(m, c, fake);
    const float *real = fx(c, "real", B * 16), *eps = fx(c, "eps", B);
    float *grads = calloc(m->n_params, sizeof *grads);
    ld_gp_penalty(D, m->params, grads, &ws, B, real, fake, eps, 10.0f, NULL, norms);
    float *scratch = calloc(m->n_params, sizeof *scratch);
    double worst = 0, gmax = tu_max_abs(grads + D->param_off, D->n_params);
    const float h = 1e-2f;
    for (size_t i = D->param_off; i < D->param_off + D->n_params; i++) {
        float keep = m->params[i];
        m->params[i] = keep + h;
        double up = ld_gp_penalty(D, m->params, scratch, &ws, B, real, fake, eps, 10.0f, NULL, NULL);
        m->params[i] = keep - h;
        double down = ld_gp_penalty(D, m->params, scratch, &ws, B, real, fake, eps, 10.0f, NULL,
                                    NULL);
        m->params[i] = keep;
        double fd = (up - down) / (2.0 * h), d = fabs(fd - grads[i]) / gmax;
        worst = d > worst ? d : worst;
    }
    printf("gradient penalty vs central differences (h %g) over %zu parameters: worst "
           "difference %.3g of the largest gradient; norms %.3g .. %.3g\n",
           (double)h, D->n_params, worst, (double)norms[0], (double)norms[B - 1]);
    ck_assert_msg(worst <= 2e-3, "finite differences disagree by %g", worst);
    free(scratch);
    free(grads);
    ld_gp_ws_free(&ws);
    ld_model_free(m);
    ld_ckpt_free(c);
}
END_TEST

/* ---- wgan-gp training ---- */

static ld_dataset_t *g_data;

static void data_setup(void)
{
    ld_err_t err = {{0}};
    if (ld_data_load("fashion-mnist", LD_SPLIT_TRAIN, 64, &g_data, &err))
        fprintf(stderr, "check_gp: %s\n", err.msg), g_data = NULL;
}

static void data_teardown(void)
{
    ld_data_free(g_data);
    g_data = NULL;
}

/* The default GAN with wgan-gp's recipe, no dropout (each worker draws its own masks). */
static ld_model_t *wgan_model(ld_train_opts_t *o, uint64_t seed)
{
    ld_arch_t a;
    ld_err_t err = {{0}};
    ck_assert_msg(g_data != NULL, "Fashion-MNIST could not be loaded");
    ck_assert(ld_train_recipe(LD_KIND_GAN, "default", &a, o, &err) == LD_OK);
    ld_train_set_loss(o, LD_GAN_LOSS_WGAN_GP);
    a.dropout = 0.0f;
    ld_model_t *m = NULL;
    ck_assert_msg(ld_model_new(&a, seed, &m, &err) == LD_OK, "%s", err.msg);
    return m;
}

static int stop_at(const ld_progress_t *p, void *user)
{
    return *(long *)user > 0 && p->step >= *(long *)user;
}

static int run(ld_model_t *m, const ld_train_opts_t *o, long stop, const char *resume_from)
{
    ld_trainer_t *t = NULL;
    ld_err_t err = {{0}};
    ck_assert_msg(ld_trainer_new(m, g_data, o, &t, &err) == LD_OK, "%s", err.msg);
    if (resume_from)
        ck_assert_msg(ld_trainer_load_state(t, resume_from, &err) == LD_OK, "%s", err.msg);
    int rc = ld_trainer_run(t, stop_at, &stop, &err);
    ck_assert_msg(rc == LD_OK || rc == LD_ECANCELLED, "%s", err.msg);
    ld_trainer_free(t);
    return rc;
}

START_TEST(test_wgan_threads_agree)
{
    ld_train_opts_t o;
    ld_model_t *m[2];
    double worst = 0;
    for (int k = 0; k < 2; k++) {
        m[k] = wgan_model(&o, 11);
        o.epochs = 1;
        o.batch = 15; /* 2 threads split a batch 8 + 7; 5 steps: G steps 1 and 6 */
        o.n_critic = 3;
        o.adam.eps = o.adam_d.eps = 1e-3f; /* as check_train's test_threads_agree */
        o.threads = k + 1;
        ck_assert_int_eq(run(m[k], &o, 0, NULL), LD_OK);
    }
    for (size_t i = 0; i < m[0]->n_params; i++) {
        ck_assert(isfinite(m[0]->params[i]));
        double d = fabs((double)m[0]->params[i] - m[1]->params[i]);
        worst = d > worst ? d : worst;
    }
    printf("wgan-gp threads 1 vs 2: worst |diff| of parameters %.3g (tolerance 1e-5)\n", worst);
    ck_assert_msg(worst <= 1e-5, "1 and 2 threads differ by %g", worst);
    ld_model_free(m[0]);
    ld_model_free(m[1]);
}
END_TEST

START_TEST(test_wgan_resume_bit_identical)
{
    ld_train_opts_t o;
    ld_model_t *straight = wgan_model(&o, 3), *stopped = wgan_model(&o, 3),
               *fresh = wgan_model(&o, 99);
    o.epochs = 2;
    o.batch = 16; /* 4 steps per epoch; n_critic 5: G steps 1 and 6 */
    o.threads = 2;
    ck_assert_int_eq(run(straight, &o, 0, NULL), LD_OK);
    char *dir = tu_mkdtemp();
    snprintf(o.state_path, sizeof o.state_path, "%s/state.safetensors", dir);
    ck_assert_int_eq(run(stopped, &o, 5, NULL), LD_ECANCELLED); /* next is a G step */
    ck_assert_int_eq(run(fresh, &o, 0, o.state_path), LD_OK);
    ck_assert_msg(memcmp(straight->params, fresh->params, straight->n_params * sizeof(float)) == 0,
                  "wgan-gp resumed after step 5 differs from straight through");
    ck_assert_str_eq(ld_record_get(&straight->record, "final_losses"),
                     ld_record_get(&fresh->record, "final_losses"));
    ck_assert_str_eq(ld_record_get(&fresh->record, "gan_loss"), "wgan-gp");
    ck_assert_str_eq(ld_record_get(&fresh->record, "n_critic"), "5");
    /* a state file from another n_critic is refused */
    o.n_critic = 4;
    ld_trainer_t *t = NULL;
    ld_err_t err = {{0}};
    ck_assert(ld_trainer_new(fresh, g_data, &o, &t, &err) == LD_OK);
    ck_assert_int_eq(ld_trainer_load_state(t, o.state_path, &err), LD_EINVAL);
    ld_trainer_free(t);
    tu_rmrf(dir);
    free(dir);
    ld_model_free(straight), ld_model_free(stopped), ld_model_free(fresh);
}
END_TEST

START_TEST(test_wgan_refuses)
{
    ld_arch_t a;
    ld_train_opts_t o;
    ld_err_t err = {{0}};
    ck_assert(ld_train_recipe(LD_KIND_GAN, "dcgan", &a, &o, &err) == LD_OK);
    ld_train_set_loss(&o, LD_GAN_LOSS_WGAN_GP);
    ck_assert_int_eq(ld_train_check_arch(&a, &o, &err), LD_EINVAL);
    ck_assert_str_eq(err.msg, "wgan-gp needs a critic without batch norm: discriminator.3 is "
                              "BatchNorm2d (use layer norm or none)");
    ld_model_t *m = NULL;
    ck_assert(ld_model_new(&a, 1, &m, &err) == LD_OK);
    ld_trainer_t *t = NULL;
    ck_assert_msg(g_data != NULL, "Fashion-MNIST could not be loaded");
    ck_assert_int_eq(ld_trainer_new(m, g_data, &o, &t, &err), LD_EINVAL);
    ck_assert_ptr_null(t);
    ld_model_free(m);
    /* a sigmoid critic */
    ck_assert(ld_train_recipe(LD_KIND_GAN, "default", &a, &o, &err) == LD_OK);
    ld_train_set_loss(&o, LD_GAN_LOSS_WGAN_GP);
    a.act = LD_ACT_SIGMOID;
    ck_assert_int_eq(ld_train_check_arch(&a, &o, &err), LD_EINVAL);
    ck_assert_msg(strstr(err.msg, "discriminator") && strstr(err.msg, "Sigmoid"), "%s", err.msg);
    /* the defaults, and n_critic < 1 */
    ck_assert_int_eq(o.n_critic, 5);
    ck_assert(o.adam.lr == 1e-4f && o.adam.beta1 == 0.0f && o.adam.beta2 == 0.9f && o.gp == 10.0f);
    o.n_critic = 0;
    ck_assert_int_eq(ld_train_opts_validate(&o, &err), LD_EINVAL);
    ck_assert_msg(strstr(err.msg, "n_critic 0"), "%s", err.msg);
}
END_TEST

Suite *suite_gp(void)
{
    Suite *s = suite_create("gp");
    TCase *tc = tcase_create("torch");
    tcase_add_loop_test(tc, test_losses_match_torch, 0, (int)LD_ARRAY_LEN(loss_cases));
    tcase_add_test(tc, test_penalty_matches_torch);
    tcase_add_test(tc, test_penalty_finite_differences);
    suite_add_tcase(s, tc);
    tc = tcase_create("train");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, data_setup, data_teardown);
    tcase_add_test(tc, test_wgan_threads_agree);
    tcase_add_test(tc, test_wgan_resume_bit_identical);
    tcase_add_test(tc, test_wgan_refuses);
    suite_add_tcase(s, tc);
    return s;
}

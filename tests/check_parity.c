/* check_parity.c — latentd against PyTorch, the way llm.c's test_gpt2.c does it.
 *
 * tests/reference/make_fixtures.py (run once with Debian's python3-torch) wrote
 * tests/fixtures/{vae,gan}_{init,ref}.safetensors: the initial state dicts of
 * PyTorch modules equivalent to latentd's default VAE and GAN, the inputs, the
 * noise and dropout masks used, the losses, the gradients of the first step
 * and the parameters after three Adam steps (see the script's docstring for
 * every name).  Here everything is read back with latentd's own ld_ckpt_read /
 * ld_model_from_ckpt, the same computation is run in C, and every quantity is
 * compared.
 *
 * Tolerance: TOL = 1e-4 relative, per element, against max(|torch|, floor),
 * where floor = FLOOR_FRAC (0.2) * max|torch| over the whole quantity: an entry
 * that is near zero by cancellation is held to an absolute error of 2e-5 of
 * the quantity's largest magnitude.  (Measured: the worst is the generator's
 * last bias gradient, ~3.5e-5 by this measure, reached through D's three
 * layers and its Adam step; float32 rounding, C and torch being equally far
 * from a float64 run.)  Losses are held to TOL_SCALAR = 1e-5 relative, and the
 * [L1, L2, max] norms of whole tensors (gnorm.*, dnorm.*: they cover entries
 * outside a stored subset) to TOL.  Each comparison prints its largest
 * difference and where it is.
 */
#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include "latentd/ckpt.h"
#include "latentd/gan.h"
#include "latentd/model.h"
#include "latentd/vae.h"

#include "gan_impl.h" /* test hook: the dropout masks PyTorch drew */

#include <math.h>
#include <stdarg.h>
#include <string.h>

#define FIX_DIR "tests/fixtures/"
#define FX_B 8
#define STEPS 3
#define TOL 1e-4
#define TOL_SCALAR 1e-5
#define FLOOR_FRAC 0.2
#define MAX_T 64

/* ---- helpers ------------------------------------------------------------- */

static ld_ckpt_t *fx_read(const char *file)
{
    ld_ckpt_t *c = NULL;
    ld_err_t err = {{0}};
    int rc = ld_ckpt_read(file, &c, &err);
    ck_assert_msg(rc == LD_OK, "%s: %s (run from the repository root)", file, err.msg);
    return c;
}

/* The fixture tensor called fmt..., which must hold exactly n floats. */
static const float *fx(const ld_ckpt_t *c, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const float *fx(const ld_ckpt_t *c, size_t n, const char *fmt, ...)
{
    char name[LD_CKPT_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const ld_tensor_view_t *t = ld_ckpt_find(c, name);
    ck_assert_msg(t != NULL, "fixture lacks tensor %s", name);
    ck_assert_msg(t->numel == n, "fixture tensor %s has %zu values, expected %zu", name,
                  t->numel, n);
    return t->data;
}

static const ld_tensor_view_t *fx_view(const ld_ckpt_t *c, const char *prefix, const char *name)
{
    char full[LD_CKPT_NAME_MAX];
    snprintf(full, sizeof full, "%.16s%.100s", prefix, name);
    const ld_tensor_view_t *t = ld_ckpt_find(c, full);
    ck_assert_msg(t != NULL, "fixture lacks tensor %s", full);
    return t;
}

/* Compare got against want (torch) elementwise; print and assert. */
static double compare(const char *what, const float *got, const float *want, size_t n)
{
    double floor = FLOOR_FRAC * tu_max_abs(want, n);
    floor = floor > 1e-30 ? floor : 1e-30;
    double d = tu_max_rel_diff(got, want, n, floor);
    size_t at = 0; /* where the worst difference is, for the log */
    for (size_t i = 0; i < n; i++)
        if (fabs((double)got[i] - want[i]) / fmax(fabs((double)want[i]), floor) >= d)
            at = i;
    printf("  %-44s n=%-7zu max rel diff %.3g (at %zu: C %.7g torch %.7g)\n", what, n, d, at,
           (double)got[at], (double)want[at]);
    ck_assert_msg(d <= TOL, "%s: max relative difference %g > %g", what, d, TOL);
    return d;
}

static double compare_scalar(const char *what, double got, double want)
{
    double d = fabs(got - want) / (fabs(want) > 1e-6 ? fabs(want) : 1e-6);
    printf("  %-44s C %.9g torch %.9g rel diff %.3g\n", what, got, want, d);
    ck_assert_msg(d <= TOL_SCALAR, "%s: C %.9g vs torch %.9g (rel %g > %g)", what, got, want, d,
                  TOL_SCALAR);
    return d;
}

/* [L1, L2, max|.|] of a (n), in double. */
static void norms(const float *a, const float *minus, size_t n, double out[3])
{
    double l1 = 0, l2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double v = (double)a[i] - (minus ? (double)minus[i] : 0.0);
        l1 += fabs(v);
        l2 += v * v;
        mx = fabs(v) > mx ? fabs(v) : mx;
    }
    out[0] = l1, out[1] = sqrt(l2), out[2] = mx;
}

static void compare_norms(const char *what, const double got[3], const float *want)
{
    static const char *const nn[3] = {"L1", "L2", "max"};
    for (int k = 0; k < 3; k++) {
        double d = fabs(got[k] - want[k]) / (fabs((double)want[k]) > 1e-30 ? fabs((double)want[k]) : 1e-30);
        printf("  %-40s %-3s C %.7g torch %.7g rel diff %.3g\n", what, nn[k], got[k],
               (double)want[k], d);
        ck_assert_msg(d <= TOL, "%s %s norm: C %g vs torch %g (rel %g)", what, nn[k], got[k],
                      (double)want[k], d);
    }
}

/* Gather block[idx[k]] for the stored subset of a tensor. */
static float *gather(const ld_tensor_view_t *t, const float *idx, size_t k_n)
{
    float *out = malloc(k_n * sizeof *out);
    ck_assert_ptr_nonnull(out);
    for (size_t k = 0; k < k_n; k++) {
        size_t i = (size_t)idx[k];
        ck_assert_msg((float)i == idx[k] && i < t->numel, "%s: bad subset index %g", t->name,
                      (double)idx[k]);
        out[k] = t->data[i];
    }
    return out;
}

/* Compare a model-layout block (grads or params) with the fixture's
 * <val_prefix><name> at idx.<name> (or in full when there is no idx.<name>),
 * and, when norm_prefix is given, the full-tensor norms of block - minus. */
static void compare_block(const ld_model_t *m, const float *block, const float *minus,
                          const ld_ckpt_t *ref, const char *val_prefix, const char *norm_prefix,
                          int net_only)
{
    ld_tensor_view_t tv[MAX_T], tm[MAX_T];
    int n = ld_model_tensors(m, block, tv, MAX_T);
    if (minus)
        ld_model_tensors(m, minus, tm, MAX_T);
    int done = 0;
    for (int i = 0; i < n; i++) {
        if (net_only >= 0) { /* only tensors of one net */
            const char *nm = m->nets[net_only].name;
            if (strncmp(tv[i].name, nm, strlen(nm)) || tv[i].name[strlen(nm)] != '.')
                continue;
        }
        char what[160];
        snprintf(what, sizeof what, "%s%.100s", val_prefix, tv[i].name);
        char idx_name[LD_CKPT_NAME_MAX];
        snprintf(idx_name, sizeof idx_name, "idx.%.100s", tv[i].name);
        const ld_tensor_view_t *want = fx_view(ref, val_prefix, tv[i].name);
        if (want->numel != tv[i].numel) { /* a subset: at idx.<name> */
            const ld_tensor_view_t *idx = ld_ckpt_find(ref, idx_name);
            ck_assert_msg(idx && idx->numel == want->numel, "%s: no matching %s", what, idx_name);
            float *got = gather(&tv[i], idx->data, idx->numel);
            strncat(what, " (subset)", sizeof what - strlen(what) - 1);
            compare(what, got, want->data, want->numel);
            free(got);
        } else {
            compare(what, tv[i].data, want->data, want->numel);
        }
        if (norm_prefix) {
            double nrm[3];
            norms(tv[i].data, minus ? tm[i].data : NULL, tv[i].numel, nrm);
            snprintf(what, sizeof what, "%s%.100s", norm_prefix, tv[i].name);
            compare_norms(what, nrm, fx(ref, 3, "%s%.100s", norm_prefix, tv[i].name));
        }
        done++;
    }
    ck_assert_int_gt(done, 0);
}

/* A model from a fixture state dict, through ld_ckpt_read + ld_model_from_ckpt. */
static ld_model_t *load_init(const char *file)
{
    ld_ckpt_t *c = fx_read(file);
    ld_model_t *m = NULL;
    ld_err_t err = {{0}};
    int rc = ld_model_from_ckpt(c, &m, &err);
    ck_assert_msg(rc == LD_OK, "%s: %s", file, err.msg);
    ld_ckpt_free(c);
    return m;
}

static void assert_hidden(const ld_hidden_t *got, const ld_hidden_t *want, const char *what)
{
    ck_assert_msg(got->n == want->n, "%s: %d hidden layers, want %d", what, got->n, want->n);
    for (int i = 0; i < want->n; i++)
        ck_assert_msg(got->size[i] == want->size[i], "%s[%d] = %d, want %d", what, i,
                      got->size[i], want->size[i]);
}

/* ---- VAE --------------------------------------------------------------------- */

/* The PyTorch state dict (no __metadata__) loads; the architecture inferred
 * from names and shapes is latentd's default VAE. */
START_TEST(test_vae_state_dict_loads)
{
    ld_model_t *m = load_init(FIX_DIR "vae_init.safetensors");
    ld_arch_t want;
    ld_arch_default(LD_KIND_VAE, &want);
    ck_assert_int_eq(m->arch.kind, LD_KIND_VAE);
    ck_assert_int_eq(m->arch.x_dim, 784);
    ck_assert_int_eq(m->arch.img_h, 28);
    ck_assert_int_eq(m->arch.img_w, 28);
    ck_assert_int_eq(m->arch.z_dim, want.z_dim);
    assert_hidden(&m->arch.enc, &want.enc, "encoder");
    assert_hidden(&m->arch.dec, &want.dec, "decoder");
    ck_assert_int_eq(m->arch.act, LD_ACT_LRELU);
    ck_assert(fabsf(m->arch.slope - 0.2f) < 1e-7f);
    ld_model_free(m);
}
END_TEST

/* Losses and every gradient of the first step, then three Adam steps. */
START_TEST(test_vae_steps)
{
    printf("VAE parity (default VAE, B=%d):\n", FX_B);
    ld_model_t *m = load_init(FIX_DIR "vae_init.safetensors");
    ld_ckpt_t *ref = fx_read(FIX_DIR "vae_ref.safetensors");
    const int X = m->arch.x_dim, Z = m->arch.z_dim;
    size_t n = m->n_params;
    float *init = malloc(n * sizeof(float)), *g = calloc(n, sizeof(float));
    float *am = calloc(n, sizeof(float)), *av = calloc(n, sizeof(float));
    ck_assert(init && g && am && av);
    memcpy(init, m->params, n * sizeof(float));
    ld_vae_ws_t ws;
    ck_assert_int_eq(ld_vae_ws_init(&ws, m, FX_B), LD_OK);
    const ld_adam_cfg_t adam = {1e-3f, 0.9f, 0.999f, 1e-8f}; /* the script's optimiser */

    for (int s = 0; s < STEPS; s++) {
        const float *x = fx(ref, (size_t)FX_B * X, "x.%d", s);
        const float *eps = fx(ref, (size_t)FX_B * Z, "eps.%d", s);
        const float *want = fx(ref, 3, "loss.%d", s);
        double rec, kl;
        memset(g, 0, n * sizeof(float));
        ld_vae_step(m, g, &ws, FX_B, x, eps, 1.0f, &rec, &kl);
        char what[64];
        snprintf(what, sizeof what, "step %d loss", s);
        compare_scalar(what, (rec + kl) / FX_B, want[0]);
        snprintf(what, sizeof what, "step %d rec (sum)", s);
        compare_scalar(what, rec, want[1]);
        snprintf(what, sizeof what, "step %d kl (sum)", s);
        compare_scalar(what, kl, want[2]);
        if (s == 0)
            compare_block(m, g, NULL, ref, "grad.", NULL, -1);
        ld_adam_step(&adam, s + 1, n, m->params, g, am, av);
    }
    compare_block(m, m->params, init, ref, "after.", "dnorm.", -1);

    ld_vae_ws_free(&ws);
    free(init), free(g), free(am), free(av);
    ld_ckpt_free(ref);
    ld_model_free(m);
}
END_TEST

/* The sample path (sigmoid(decoder(z))) and the encoder heads. */
START_TEST(test_vae_decode_encode)
{
    printf("VAE inference parity:\n");
    ld_model_t *m = load_init(FIX_DIR "vae_init.safetensors");
    ld_ckpt_t *ref = fx_read(FIX_DIR "vae_ref.safetensors");
    const int X = m->arch.x_dim, Z = m->arch.z_dim;
    ld_err_t err = {{0}};
    float *x = malloc((size_t)FX_B * X * sizeof(float));
    float *mu = malloc((size_t)FX_B * Z * sizeof(float)), *lv = malloc((size_t)FX_B * Z * sizeof(float));
    ck_assert(x && mu && lv);
    ck_assert_int_eq(ld_model_decode(m, FX_B, fx(ref, (size_t)FX_B * Z, "dec.z"), x, &err), LD_OK);
    compare("decode: sigmoid(decoder(z))", x, fx(ref, (size_t)FX_B * X, "dec.x"), (size_t)FX_B * X);
    ck_assert_int_eq(ld_model_encode(m, FX_B, fx(ref, (size_t)FX_B * X, "x.0"), mu, lv, &err), LD_OK);
    compare("encode: mu", mu, fx(ref, (size_t)FX_B * Z, "enc.mu"), (size_t)FX_B * Z);
    compare("encode: logvar", lv, fx(ref, (size_t)FX_B * Z, "enc.logvar"), (size_t)FX_B * Z);
    free(x), free(mu), free(lv);
    ld_ckpt_free(ref);
    ld_model_free(m);
}
END_TEST

/* ---- GAN --------------------------------------------------------------------- */

/* The state dict (metadata {"format":"pt"}, no latentd keys) loads as the
 * default GAN; dropout is training-only and not inferable, so it reads as 0. */
START_TEST(test_gan_state_dict_loads)
{
    ld_model_t *m = load_init(FIX_DIR "gan_init.safetensors");
    ld_arch_t want;
    ld_arch_default(LD_KIND_GAN, &want);
    ck_assert_int_eq(m->arch.kind, LD_KIND_GAN);
    ck_assert_int_eq(m->arch.x_dim, 784);
    ck_assert_int_eq(m->arch.z_dim, want.z_dim);
    assert_hidden(&m->arch.dec, &want.dec, "generator");
    assert_hidden(&m->arch.enc, &want.enc, "discriminator");
    ck_assert_int_eq(m->arch.act, LD_ACT_LRELU);
    ck_assert(fabsf(m->arch.slope - 0.2f) < 1e-7f);
    ck_assert_ptr_null(ld_record_get(&m->record, "format")); /* reserved, not a record entry */
    ld_model_free(m);
}
END_TEST

/* The default GAN (dropout 0.3) holding the fixture's initial weights. */
static ld_model_t *gan_default_with_init(void)
{
    ld_model_t *src = load_init(FIX_DIR "gan_init.safetensors"), *m = NULL;
    ld_arch_t a;
    ld_arch_default(LD_KIND_GAN, &a);
    ld_err_t err = {{0}};
    ck_assert_int_eq(ld_model_alloc(&a, &m, &err), LD_OK);
    ck_assert_uint_eq(m->n_params, src->n_params);
    memcpy(m->params, src->params, m->n_params * sizeof(float));
    ld_model_free(src);
    return m;
}

START_TEST(test_gan_steps)
{
    printf("GAN parity (default GAN, dropout masks from torch, B=%d):\n", FX_B);
    ld_model_t *m = gan_default_with_init();
    ld_ckpt_t *ref = fx_read(FIX_DIR "gan_ref.safetensors");
    const ld_mlp_t *G = &m->nets[LD_GAN_G], *D = &m->nets[LD_GAN_D];
    const int X = m->arch.x_dim, Z = m->arch.z_dim;
    size_t n = m->n_params, n_mask = 0;
    for (int i = 0; i + 1 < D->n_layers; i++)
        n_mask += (size_t)FX_B * D->size[i + 1];
    float *init = malloc(n * sizeof(float)), *g = calloc(n, sizeof(float));
    float *am = calloc(n, sizeof(float)), *av = calloc(n, sizeof(float));
    ck_assert(init && g && am && av);
    memcpy(init, m->params, n * sizeof(float));
    ld_gan_ws_t ws;
    ck_assert_int_eq(ld_gan_ws_init(&ws, m, FX_B), LD_OK);
    const ld_adam_cfg_t adam = {2e-4f, 0.5f, 0.999f, 1e-8f}; /* the script's, both nets */

    for (int s = 0; s < STEPS; s++) {
        const float *real = fx(ref, (size_t)FX_B * X, "real.%d", s);
        const float *z = fx(ref, (size_t)FX_B * Z, "z.%d", s);
        const float *want = fx(ref, 4, "loss.%d", s);
        double p_real, p_fake;
        memset(g + D->off, 0, D->n_params * sizeof(float));
        double ld = ld_gan_step_d_masks(m, g, &ws, FX_B, real, z, 0.9f, NULL,
                                  fx(ref, n_mask, "mask_real.%d", s),
                                  fx(ref, n_mask, "mask_fake.%d", s), &p_real, &p_fake);
        if (s == 0)
            compare_block(m, g, NULL, ref, "grad.", "gnorm.", LD_GAN_D);
        ld_adam_step(&adam, s + 1, D->n_params, m->params + D->off, g + D->off, am + D->off,
                     av + D->off);
        memset(g + G->off, 0, G->n_params * sizeof(float));
        double lg = ld_gan_step_g_masks(m, g, &ws, FX_B, LD_GAN_LOSS_NS, NULL,
                                  fx(ref, n_mask, "mask_g.%d", s));
        if (s == 0)
            compare_block(m, g, NULL, ref, "grad.", "gnorm.", LD_GAN_G);
        ld_adam_step(&adam, s + 1, G->n_params, m->params + G->off, g + G->off, am + G->off,
                     av + G->off);
        char what[64];
        snprintf(what, sizeof what, "step %d loss_D", s);
        compare_scalar(what, ld, want[0]);
        snprintf(what, sizeof what, "step %d loss_G", s);
        compare_scalar(what, lg, want[1]);
        snprintf(what, sizeof what, "step %d mean D(real)", s);
        compare_scalar(what, p_real, want[2]);
        snprintf(what, sizeof what, "step %d mean D(fake)", s);
        compare_scalar(what, p_fake, want[3]);
    }
    compare_block(m, m->params, init, ref, "after.", "dnorm.", -1);

    ld_gan_ws_free(&ws);
    free(init), free(g), free(am), free(av);
    ld_ckpt_free(ref);
    ld_model_free(m);
}
END_TEST

START_TEST(test_gan_decode)
{
    printf("GAN inference parity:\n");
    ld_model_t *m = load_init(FIX_DIR "gan_init.safetensors");
    ld_ckpt_t *ref = fx_read(FIX_DIR "gan_ref.safetensors");
    const int X = m->arch.x_dim, Z = m->arch.z_dim;
    ld_err_t err = {{0}};
    float *x = malloc((size_t)FX_B * X * sizeof(float));
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(ld_model_decode(m, FX_B, fx(ref, (size_t)FX_B * Z, "dec.z"), x, &err), LD_OK);
    compare("decode: G(z)", x, fx(ref, (size_t)FX_B * X, "dec.x"), (size_t)FX_B * X);
    free(x);
    ld_ckpt_free(ref);
    ld_model_free(m);
}
END_TEST

/* ---- the reverse direction ----------------------------------------------------- */

/* ld_model_save writes exactly the tensor names and shapes of the PyTorch state
 * dict (so the equivalent module loads it; make_fixtures.py --check-latentd
 * does that for real), with the same bytes. */
static void save_matches_state_dict(const char *fixture)
{
    ld_model_t *m = load_init(fixture);
    ld_ckpt_t *want = fx_read(fixture);
    char *dir = tu_mkdtemp(), path[4200];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    ld_err_t err = {{0}};
    ck_assert_msg(ld_model_save(m, path, &err) == LD_OK, "%s", err.msg);
    ld_ckpt_t *got = fx_read(path);
    ck_assert_int_eq(got->n_tensors, want->n_tensors);
    for (int i = 0; i < want->n_tensors; i++) {
        const ld_tensor_view_t *w = &want->tensors[i], *g = ld_ckpt_find(got, w->name);
        ck_assert_msg(g != NULL, "%s: ld_model_save lacks %s", fixture, w->name);
        ck_assert_msg(g->ndim == w->ndim, "%s: ndim %d vs %d", w->name, g->ndim, w->ndim);
        for (int d = 0; d < w->ndim; d++)
            ck_assert_msg(g->shape[d] == w->shape[d], "%s: dim %d is %lld, torch has %lld",
                          w->name, d, (long long)g->shape[d], (long long)w->shape[d]);
        ck_assert_msg(memcmp(g->data, w->data, w->numel * sizeof(float)) == 0,
                      "%s: data changed in the round trip", w->name);
    }
    ck_assert_str_eq(ld_ckpt_meta(got, "kind"), ld_kind_name(m->arch.kind));
    ld_ckpt_free(got);
    ld_ckpt_free(want);
    ld_model_free(m);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(test_save_names_match_torch)
{
    save_matches_state_dict(FIX_DIR "vae_init.safetensors");
    save_matches_state_dict(FIX_DIR "gan_init.safetensors");
}
END_TEST

Suite *suite_parity(void)
{
    Suite *s = suite_create("parity");
    TCase *tc = tcase_create("pytorch");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_vae_state_dict_loads);
    tcase_add_test(tc, test_vae_steps);
    tcase_add_test(tc, test_vae_decode_encode);
    tcase_add_test(tc, test_gan_state_dict_loads);
    tcase_add_test(tc, test_gan_steps);
    tcase_add_test(tc, test_gan_decode);
    tcase_add_test(tc, test_save_names_match_torch);
    suite_add_tcase(s, tc);
    return s;
}

/* check_cli.c — the `latentd` command line, run as a user would: the real
 * binary (LD_BIN) in a subprocess, its exit code and output checked. */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_sh.h"

#include <stdarg.h>

#include "latentd/fsutil.h"
#include "latentd/image.h"
#include "latentd/model.h"

#include <string.h>
#include <sys/wait.h>

static char *dir;

static void setup(void) { dir = tu_mkdtemp(); }
static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* Run LD_BIN with args (a shell fragment); stdout+stderr into *out (caller frees).
 * Returns the exit code. */
#define run(out, ...) tu_sh(out, LD_BIN " " __VA_ARGS__)

static void path(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", dir, name); }

/* A small VAE checkpoint made without training. */
static void make_vae(const char *file)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_VAE, &a);
    ld_model_t *m;
    ld_err_t e;
    ck_assert_int_eq(ld_model_new(&a, 3, &m, &e), 0);
    ck_assert_msg(ld_model_save(m, file, &e) == 0, "%s", e.msg);
    ld_model_free(m);
}

START_TEST(usage_and_bad_flags)
{
    char *out;
    ck_assert_int_eq(run(&out, "%s", ""), 2);
    ck_assert_ptr_nonnull(strstr(out, "usage"));
    free(out);
    ck_assert_int_eq(run(&out, "frobnicate"), 2);
    ck_assert_ptr_nonnull(strstr(out, "unknown command 'frobnicate'"));
    free(out);
    ck_assert_int_eq(run(&out, "train --kind vae --nonsense 3 --out x.safetensors"), 2);
    ck_assert_ptr_nonnull(strstr(out, "unknown flag --nonsense"));
    free(out);
    ck_assert_int_eq(run(&out, "train --kind vae --epochs -3 --out x.safetensors"), 2);
    ck_assert_ptr_nonnull(strstr(out, "--epochs -3"));
    free(out);
    ck_assert_int_eq(run(&out, "train --kind vae --lr nan --out x.safetensors"), 2);
    ck_assert_ptr_nonnull(strstr(out, "--lr nan"));
    free(out);
    ck_assert_int_eq(run(&out, "train --kind dragon --out x.safetensors"), 2);
    ck_assert_ptr_nonnull(strstr(out, "--kind dragon"));
    free(out);
    ck_assert_int_eq(run(&out, "train --kind vae"), 2);
    ck_assert_ptr_nonnull(strstr(out, "--out"));
    free(out);
    ck_assert_int_eq(run(&out, "train --kind vae --hidden 128,abc --out x.safetensors"), 2);
    ck_assert_ptr_nonnull(strstr(out, "--hidden 128,abc"));
    free(out);
    ck_assert_int_eq(run(&out, "sample --model x.safetensors --out grid.gif"), 2);
    free(out);
    ck_assert_int_eq(run(&out, "train --help"), 0);
    ck_assert_ptr_nonnull(strstr(out, "--real-label"));
    free(out);
}
END_TEST

START_TEST(bad_files)
{
    char f[512], *out;
    path(f, sizeof f, "junk.safetensors");
    ck_assert_int_eq(ld_write_atomic(f, "not a checkpoint at all", 23, NULL), 0);
    ck_assert_int_eq(run(&out, "info %s", f), 1);
    ck_assert_msg(strstr(out, "junk.safetensors"), "error names the file: %s", out);
    free(out);
    ck_assert_int_eq(run(&out, "info %s/missing.safetensors", dir), 1);
    ck_assert_ptr_nonnull(strstr(out, "missing.safetensors"));
    free(out);
    ck_assert_int_eq(run(&out, "train --kind vae --data %s/nowhere --epochs 1 --out %s/x.safetensors", dir, dir), 1);
    ck_assert_ptr_nonnull(strstr(out, "nowhere"));
    free(out);
}
END_TEST

START_TEST(train_info_sample_eval)
{
    char ck[512], png[512], npy[512], npy2[512], *out;
    path(ck, sizeof ck, "tiny.safetensors");
    ck_assert_int_eq(run(&out, "train --kind vae --limit 512 --epochs 1 --batch 64 --hidden 32 --z 4 --threads 1 --out %s", ck), 0);
    ck_assert_msg(strstr(out, "trained vae"), "%s", out);
    free(out);
    ck_assert_int_eq(run(&out, "info %s", ck), 0);
    ck_assert_ptr_nonnull(strstr(out, "kind:       vae"));
    ck_assert_ptr_nonnull(strstr(out, "784-32-z4"));
    ck_assert_ptr_nonnull(strstr(out, "examples    512"));
    free(out);

    path(png, sizeof png, "grid.png");
    ck_assert_int_eq(run(&out, "sample --model %s --n 6 --cols 3 --seed 5 --out %s", ck, png), 0);
    free(out);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(ld_read_file(png, 1 << 24, &buf, &len, NULL), 0);
    float *px;
    int h, w;
    ck_assert_int_eq(ld_png_decode(buf, len, 1 << 20, &px, &h, &w, NULL), 0);
    ck_assert_int_eq(w, 3 * 28 + 4 * 2); /* 3 tiles and 4 pad columns of 2 pixels */
    ck_assert_int_eq(h, 2 * 28 + 3 * 2);
    free(px);
    free(buf);

    path(npy, sizeof npy, "a.npy");
    path(npy2, sizeof npy2, "b.npy");
    ck_assert_int_eq(run(NULL, "sample --model %s --n 5 --seed 9 --out %s", ck, npy), 0);
    ck_assert_int_eq(run(NULL, "sample --model %s --n 5 --seed 9 --out %s", ck, npy2), 0);
    uint8_t *b1, *b2;
    size_t l1, l2;
    ck_assert_int_eq(ld_read_file(npy, 1 << 24, &b1, &l1, NULL), 0);
    ck_assert_int_eq(ld_read_file(npy2, 1 << 24, &b2, &l2, NULL), 0);
    ck_assert_uint_eq(l1, l2);
    ck_assert_msg(memcmp(b1, b2, l1) == 0, "same seed gives identical bytes");
    float *x;
    int ndim;
    int64_t shape[4];
    ck_assert_int_eq(ld_npy_decode(b1, l1, &x, &ndim, shape, NULL), 0);
    ck_assert_int_eq(ndim, 2);
    ck_assert_int_eq(shape[0], 5);
    ck_assert_int_eq(shape[1], 784);
    for (int i = 0; i < 5 * 784; i++)
        ck_assert(x[i] >= 0.0f && x[i] <= 1.0f);
    free(x);
    free(b1);
    free(b2);

    ck_assert_int_eq(run(&out, "eval --model %s", ck), 0);
    ck_assert_msg(strstr(out, "negative ELBO"), "%s", out);
    free(out);
}
END_TEST

START_TEST(sample_needs_generator)
{
    char ck[512], *out;
    path(ck, sizeof ck, "cls.safetensors");
    ld_arch_t a;
    ld_arch_default(LD_KIND_CLASSIFIER, &a);
    ld_model_t *m;
    ck_assert_int_eq(ld_model_new(&a, 1, &m, NULL), 0);
    ck_assert_int_eq(ld_model_save(m, ck, NULL), 0);
    ld_model_free(m);
    ck_assert_int_eq(run(&out, "sample --model %s --out %s/x.png", ck, dir), 1);
    ck_assert_ptr_nonnull(strstr(out, "classifier"));
    free(out);
    /* a GAN eval without a classifier says what it needs */
    char v[512];
    path(v, sizeof v, "v.safetensors");
    make_vae(v);
    ck_assert_int_eq(run(&out, "eval --model %s --classifier %s", v, v), 1);
    ck_assert_ptr_nonnull(strstr(out, "not a classifier"));
    free(out);
}
END_TEST

Suite *suite_cli(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, usage_and_bad_flags);
    tcase_add_test(tc, bad_files);
    tcase_add_test(tc, train_info_sample_eval);
    tcase_add_test(tc, sample_needs_generator);
    suite_add_tcase(s, tc);
    return s;
}

/* check_cli.c — the `latentd` command line, run as a user would: the real
 * binary (LD_BIN) in a subprocess, its exit code and output checked. */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_sh.h"

#include <stdarg.h>

#include "latentd/fsutil.h"
#include "latentd/image.h"
#include "latentd/model.h"
#include "tu_daemon.h"

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

/* The optimiser flags: each bad value exits 2 with a message naming it, and
 * a run's optimiser and schedule reach the checkpoint's record (info). */
START_TEST(optimizer_flags)
{
    static const struct {
        const char *flags, *want;
    } bad[] = {
        {"--weight-decay -0.1", "weight_decay -0.1 is outside [0,1]"},
        {"--l1 -1", "l1 -1 is outside [0,1]"},
        {"--optimizer sgd --momentum 1.5", "momentum 1.5 is outside [0,1)"},
        {"--optimizer sgd --nesterov", "nesterov needs a momentum above 0"},
        {"--optimizer rmsprop", "--optimizer rmsprop: expected adam, adamw or sgd"},
        {"--lr-schedule linear", "--lr-schedule linear: expected constant, cosine or step"},
        {"--lr-schedule step --lr-step 5 --lr-gamma 2", "lr_gamma 2 is outside (0,1]"},
    };
    char *out, ck[512];
    path(ck, sizeof ck, "opt.safetensors");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(run(&out, "train --kind vae --epochs 1 %s --out %s", bad[i].flags, ck), 2);
        ck_assert_msg(strstr(out, bad[i].want), "%s: %s", bad[i].flags, out);
        free(out);
    }
    ck_assert_int_eq(run(&out, "train --kind gan --limit 256 --epochs 2 --batch 64 --g-hidden 16 "
                               "--d-hidden 16 --z 4 --threads 1 --optimizer sgd --lr 0.01 "
                               "--momentum 0.9 --nesterov --weight-decay 1e-4 --lr-schedule step "
                               "--lr-step 3 --lr-gamma 0.5 --out %s", ck), 0);
    free(out);
    ck_assert_int_eq(run(&out, "info %s", ck), 0);
    ck_assert_msg(strstr(out, "optimizer   sgd momentum=0.9 nesterov weight_decay=0.0001\n"), "%s", out);
    ck_assert_msg(strstr(out, "lr_schedule step 3 gamma=0.5\n"), "%s", out);
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

/* The numbers of a JSON array of any nesting, in order, into out (max). */
static size_t jfloats(const cJSON *j, float *out, size_t max)
{
    if (cJSON_IsNumber(j)) {
        if (max)
            *out = (float)j->valuedouble;
        return 1;
    }
    size_t n = 0;
    for (const cJSON *c = j ? j->child : NULL; c; c = c->next)
        n += jfloats(c, out + (n < max ? n : max), n < max ? max - n : 0);
    return n;
}

/* POST body to path on d; the status is checked against want. */
static void post(const tu_daemon_t *d, tu_resp_t *r, const char *path, const char *body, long want)
{
    tu_req_t q = {.port = d->port};
    long st = tu_http_once(r, "POST", path, body, strlen(body), &q);
    ck_assert_msg(st == want, "POST %s: %ld %.300s", path, st, r->body.data ? r->body.data : "");
}

/* A DCGAN and a conv VAE trained a few steps by the CLI (2 threads), shown
 * by info, then served by the real daemon: the layer table, sampling,
 * decoding and encoding agree with this process's ld_model_* on the files. */
START_TEST(layer_models_serve)
{
    tu_daemon_t d;
    tu_daemon_dirs(&d, 4);
    char g[600], v[600], *out;
    snprintf(g, sizeof g, "%s/dcgan.safetensors", d.models);
    snprintf(v, sizeof v, "%s/convvae.safetensors", d.models);
    ck_assert_int_eq(run(&out, "train --kind gan --arch dcgan --data fashion-mnist --limit 64 "
                               "--epochs 1 --batch 32 --threads 2 --out %s", g), 0);
    ck_assert_msg(strstr(out, "trained gan"), "%s", out);
    free(out);
    ck_assert_int_eq(run(&out, "train --kind vae --arch conv --data fashion-mnist --limit 64 "
                               "--epochs 1 --batch 32 --threads 2 --out %s", v), 0);
    free(out);
    ck_assert_int_eq(run(&out, "info %s", g), 0);
    ck_assert_msg(strstr(out, "layers:     dcgan") && strstr(out, "generator.4") &&
                  strstr(out, "ConvTranspose2d    (64, 14, 14)         131136") &&
                  strstr(out, "discriminator.3              BatchNorm2d"), "%s", out);
    free(out);

    char conf[2048];
    snprintf(conf, sizeof conf, "bind = 127.0.0.1\nport = 0\nmodels_dir = %s\nstate_dir = %s\n",
             d.models, d.state);
    tu_write_file(d.conf, conf);
    tu_daemon_start(&d, NULL);
    ld_model_t *mg, *mv;
    ld_err_t e;
    ck_assert_msg(ld_model_load(g, &mg, &e) == LD_OK, "%s", e.msg);
    ck_assert_msg(ld_model_load(v, &mv, &e) == LD_OK, "%s", e.msg);

    tu_resp_t r;
    tu_req_t q = {.port = d.port};
    ck_assert_int_eq(tu_http_once(&r, "GET", "/v1/models/dcgan", NULL, 0, &q), 200);
    const cJSON *nets = tu_jget(r.json, "layers");
    ck_assert_int_eq(cJSON_GetArraySize(nets), 2);
    const cJSON *gl = tu_jget(cJSON_GetArrayItem(nets, 0), "layers");
    ck_assert_str_eq(tu_jget(cJSON_GetArrayItem(nets, 0), "net")->valuestring, "generator");
    ck_assert_int_eq(cJSON_GetArraySize(gl), 9);
    const cJSON *ct = cJSON_GetArrayItem(gl, 4);
    ck_assert_str_eq(tu_jget(ct, "name")->valuestring, "generator.4");
    ck_assert_str_eq(tu_jget(ct, "type")->valuestring, "ConvTranspose2d");
    ck_assert_int_eq((int)tu_jget(ct, "parameters")->valuedouble, 131136);
    float shape[3];
    ck_assert_uint_eq(jfloats(tu_jget(ct, "output"), shape, 3), 3);
    ck_assert(shape[0] == 64 && shape[1] == 14 && shape[2] == 14);
    tu_resp_free(&r);
    ck_assert_int_eq(tu_http_once(&r, "GET", "/v2/models/convvae", NULL, 0, &q), 200);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "outputs")), 3); /* images, mu, logvar */
    tu_resp_free(&r);

    /* sample: the served images are the local decode of the same z */
    enum { N = 3 };
    float z[N * 100], x[N * 784], mine[N * 784];
    post(&d, &r, "/v1/models/dcgan/sample", "{\"n\":3,\"seed\":4,\"temperature\":1}", 200);
    ck_assert_uint_eq(jfloats(tu_jget(r.json, "z"), z, N * 100), N * 100);
    ck_assert_uint_eq(jfloats(tu_jget(r.json, "images"), x, N * 784), N * 784);
    tu_resp_free(&r);
    ck_assert_int_eq(ld_model_decode(mg, N, z, mine, &e), LD_OK);
    double worst = 0;
    for (int i = 0; i < N * 784; i++)
        worst = fmax(worst, fabs(x[i] - mine[i]));
    ck_assert_msg(worst < 1e-5, "dcgan sample differs from a local decode by %g", worst);

    /* conv VAE: sample, decode its z (same bytes), encode its images */
    ld_buf_t body = {0};
    post(&d, &r, "/v1/models/convvae/sample", "{\"n\":3,\"seed\":8}", 200);
    ck_assert_uint_eq(jfloats(tu_jget(r.json, "z"), z, N * 20), N * 20);
    ck_assert_uint_eq(jfloats(tu_jget(r.json, "images"), x, N * 784), N * 784);
    tu_resp_free(&r);
    ld_buf_puts(&body, "{\"z\":");
    ld_buf_json_matrix(&body, z, N, 20);
    ld_buf_puts(&body, "}");
    post(&d, &r, "/v1/models/convvae/decode", body.data, 200);
    ck_assert_uint_eq(jfloats(tu_jget(r.json, "images"), mine, N * 784), N * 784);
    ck_assert_msg(memcmp(mine, x, sizeof x) == 0, "decode of a sample's z gives its images");
    tu_resp_free(&r);
    body.len = 0;
    ld_buf_puts(&body, "{\"images\":");
    ld_buf_json_matrix(&body, x, N, 784);
    ld_buf_puts(&body, "}");
    post(&d, &r, "/v1/models/convvae/encode", body.data, 200);
    float mu[N * 20], lv[N * 20], mu2[N * 20], lv2[N * 20];
    ck_assert_uint_eq(jfloats(tu_jget(r.json, "mu"), mu, N * 20), N * 20);
    ck_assert_uint_eq(jfloats(tu_jget(r.json, "logvar"), lv, N * 20), N * 20);
    tu_resp_free(&r);
    ck_assert_int_eq(ld_model_encode(mv, N, x, mu2, lv2, &e), LD_OK);
    for (int i = 0; i < N * 20; i++)
        ck_assert_msg(fabsf(mu[i] - mu2[i]) < 1e-4f && fabsf(lv[i] - lv2[i]) < 1e-4f,
                      "encode %d: %g %g vs %g %g", i, mu[i], lv[i], mu2[i], lv2[i]);
    /* a GAN still has no encoder; it is inverted instead (tests/check_invert.c) */
    post(&d, &r, "/v1/models/dcgan/encode", body.data, 422);
    tu_resp_free(&r);
    ld_buf_free(&body);
    ld_model_free(mg);
    ld_model_free(mv);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* --loss: wgan-gp trains and says so in the record; a critic with batch norm
 * and --n-critic 0 are refused with exit 2 before anything is written. */
START_TEST(gan_losses)
{
    char *out, file[4200], cmd[8600];
    path(file, sizeof file, "w.safetensors");
    snprintf(cmd, sizeof cmd, "train --kind gan --arch dcgan --loss wgan-gp --out %s", file);
    ck_assert_int_eq(run(&out, "%s", cmd), 2);
    ck_assert_msg(strstr(out, "wgan-gp needs a critic without batch norm: discriminator.3 is "
                              "BatchNorm2d"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "train --kind gan --loss wgan-gp --n-critic 0 --out %s", file);
    ck_assert_int_eq(run(&out, "%s", cmd), 2);
    ck_assert_msg(strstr(out, "--n-critic 0"), "%s", out);
    free(out);
    ck_assert_int_eq(run(&out, "train --kind gan --loss wasserstein --out %s", file), 2);
    ck_assert_msg(strstr(out, "ns, minimax, wgan-gp, hinge or lsgan"), "%s", out);
    free(out);
    ck_assert_int_ne(access(file, F_OK), 0);
    snprintf(cmd, sizeof cmd, "train --kind gan --loss wgan-gp --n-critic 2 --limit 128 "
                              "--epochs 1 --threads 2 --out %s && " LD_BIN " info %s", file, file);
    ck_assert_int_eq(run(&out, "%s", cmd), 0);
    ck_assert_msg(strstr(out, "gan_loss    wgan-gp") && strstr(out, "n_critic    2") &&
                      strstr(out, "lr_d        0.0001"), "%s", strstr(out, "gan_loss"));
    free(out);
    /* the default is wgan-gp with its optimiser; --loss ns is the recipe
     * that was the default before (Adam 2e-4) */
    static const char *const recipes[][2] = {
        {"", "\"dropout\":0.3}|gan_loss    wgan-gp|lr_d        0.0001|n_critic    5"},
        {"--loss ns", "\"dropout\":0.3}|gan_loss    ns|lr_d        0.0002"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(recipes); i++) {
        snprintf(cmd, sizeof cmd, "train --kind gan %s --limit 128 --epochs 1 --threads 1 --out %s "
                                  "&& " LD_BIN " info %s", recipes[i][0], file, file);
        ck_assert_int_eq(run(&out, "%s", cmd), 0);
        char want[256], *save = NULL;
        snprintf(want, sizeof want, "%s", recipes[i][1]);
        for (char *w = strtok_r(want, "|", &save); w; w = strtok_r(NULL, "|", &save))
            ck_assert_msg(strstr(out, w), "%s: no \"%s\" in\n%s", recipes[i][0], w, out);
        free(out);
    }
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
    tcase_add_test(tc, optimizer_flags);
    tcase_add_test(tc, train_info_sample_eval);
    tcase_add_test(tc, sample_needs_generator);
    tcase_add_test(tc, layer_models_serve);
    tcase_add_test(tc, gan_losses);
    suite_add_tcase(s, tc);
    return s;
}

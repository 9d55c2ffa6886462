/* check_model.c — building models from checkpoints: sizes that overflow an
 * int, headers that announce more than the file holds, metadata the record
 * cannot keep whole, and `latentd info` on a job's training state. */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_limits.h"
#include "tu_tiny.h"

#include "latentd/ckpt.h"
#include "latentd/fsutil.h"
#include "latentd/model.h"
#include "latentd/train.h"

#include <string.h>
#include <sys/wait.h>

static char *dir;

static void setup(void) { dir = tu_mkdtemp(); }
static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* A 4x4 VAE small enough to write by hand: 16-8-z2 | 2-8-16. */
static ld_model_t *tiny_vae(void) { return tu_tiny_model(LD_KIND_VAE); }

/* Parse a safetensors image and build a model from it; the model is freed. */
static int load_image(const uint8_t *buf, size_t len, ld_err_t *e)
{
    ld_ckpt_t *c;
    int rc = ld_ckpt_parse(buf, len, &c, e);
    if (rc)
        return rc;
    ld_model_t *m = NULL;
    rc = ld_model_from_ckpt(c, &m, e);
    ld_model_free(m);
    ld_ckpt_free(c);
    return rc;
}

/* Serialise tensors t[0..n) with metadata and load the result. */
static int load_views(const ld_tensor_view_t *t, int n, const ld_kv_t *meta, int n_meta,
                      ld_err_t *e)
{
    uint8_t *buf;
    size_t len;
    ck_assert_msg(ld_ckpt_serialize(t, n, meta, n_meta, &buf, &len, e) == LD_OK, "%s", e->msg);
    int rc = load_image(buf, len, e);
    free(buf);
    return rc;
}

static void expect_fail(int rc, const ld_err_t *e, const char *want, const char *what)
{
    ck_assert_msg(rc == LD_EFORMAT, "%s: rc %d (%s)", what, rc, e->msg);
    ck_assert_msg(strstr(e->msg, want), "%s: \"%s\" lacks \"%s\"", what, e->msg, want);
}

/* ---- E: sizes beyond an int ---------------------------------------------- */

START_TEST(test_arch_json_out_of_range)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"kind\":\"vae\",\"image\":[65536,65536],\"z\":2,\"encoder\":[8],\"decoder\":[8]}",
         "image shape"},
        {"{\"kind\":\"vae\",\"image\":[1e300,28],\"z\":2,\"encoder\":[8],\"decoder\":[8]}",
         "\"image\""},
        {"{\"kind\":\"vae\",\"image\":[28,-1e300],\"z\":2,\"encoder\":[8],\"decoder\":[8]}",
         "\"image\""},
        {"{\"kind\":\"vae\",\"image\":[28,28],\"z\":1e300,\"encoder\":[8],\"decoder\":[8]}",
         "\"z\""},
        {"{\"kind\":\"vae\",\"image\":[28,28],\"z\":2,\"encoder\":[1e19],\"decoder\":[8]}",
         "\"encoder\""},
        {"{\"kind\":\"gan\",\"image\":[28,28],\"z\":2,\"generator\":[8],\"discriminator\":[8],"
         "\"dropout\":1e300}",
         "dropout"},
        {"{\"kind\":\"vae\",\"image\":[28,28],\"z\":2,\"encoder\":[8],\"decoder\":[8],"
         "\"slope\":-1e300}",
         "slope"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        ld_arch_t a;
        ld_err_t e = {{0}};
        int rc = ld_arch_from_json(cases[i].json, &a, &e);
        ck_assert_msg(rc != LD_OK, "%s accepted", cases[i].json);
        ck_assert_msg(strstr(e.msg, cases[i].want), "%s: \"%s\" lacks \"%s\"", cases[i].json,
                      e.msg, cases[i].want);
    }
}
END_TEST

/* An inferred architecture (no metadata) from empty tensors whose other side
 * is at or beyond INT_MAX: the widths are refused, not multiplied. */
START_TEST(test_inferred_widths_out_of_range)
{
    static const int64_t wide[] = {2147483647, (int64_t)1 << 40, 46341};
    for (size_t i = 0; i < LD_ARRAY_LEN(wide); i++) {
        ld_tensor_view_t t[3];
        memset(t, 0, sizeof t);
        const char *names[] = {"encoder.0.weight", "mu.weight", "decoder.0.weight"};
        for (int k = 0; k < 3; k++) {
            snprintf(t[k].name, sizeof t[k].name, "%s", names[k]);
            t[k].ndim = 2;
        }
        t[0].shape[1] = wide[i]; /* shape [0, wide]: no data */
        ld_err_t e = {{0}};
        int rc = load_views(t, 3, NULL, 0, &e);
        ck_assert_msg(rc == LD_EINVAL || rc == LD_EFORMAT, "width %lld: rc %d (%s)",
                      (long long)wide[i], rc, e.msg);
    }
}
END_TEST

/* ---- F: memory decided by a header ---------------------------------------- */

/* A checkpoint with only an architecture in its metadata, the widest the
 * loader accepts (several GB of parameters), and no tensor at all. */
static int load_arch_only(void *ctx)
{
    (void)ctx;
    ld_kv_t meta[] = {
        {"format", "latentd/1"},
        {"arch", "{\"kind\":\"vae\",\"image\":[256,256],\"z\":1024,"
                 "\"encoder\":[4096,4096,4096,4096,4096,4096],"
                 "\"decoder\":[4096,4096,4096,4096,4096,4096]}"},
    };
    uint8_t *buf;
    size_t len;
    ld_err_t e;
    if (ld_ckpt_serialize(NULL, 0, meta, 2, &buf, &len, &e) != LD_OK)
        return 3;
    int rc = load_image(buf, len, &e);
    free(buf);
    if (rc == LD_EFORMAT && strstr(e.msg, "missing tensor"))
        return 0;
    fprintf(stderr, "load_arch_only: rc %d: %s\n", rc, e.msg);
    return rc == LD_ENOMEM ? 1 : 2;
}

START_TEST(test_arch_without_tensors_allocates_nothing)
{
    int rc = tu_run_limited(load_arch_only, NULL, (size_t)256 << 20);
    ck_assert_msg(rc == 0, "loading an architecture without tensors under a 256 MiB cap: "
                           "%d (1: out of memory, >= 128: killed)", rc);
}
END_TEST

/* ---- G: metadata the record must keep whole ------------------------------- */

START_TEST(test_long_metadata_refused)
{
    ld_model_t *m = tiny_vae();
    ld_tensor_view_t t[16];
    int n = ld_model_tensors(m, m->params, t, 16);
    char arch[512];
    ld_arch_to_json(&m->arch, arch, sizeof arch);
    char k1[64], k2[64], k31[32], longval[300];
    memset(k1, 'k', 40);
    memcpy(k2, k1, 40);
    k1[40] = k2[40] = 0;
    k2[39] = 'x'; /* the two share their first 31 bytes (and 39) */
    memset(k31, 'a', 31);
    k31[31] = 0;
    memset(longval, 'v', 256);
    longval[256] = 0;
    ld_err_t e = {{0}};

    ld_kv_t two_long[] = {{"format", "latentd/1"}, {"arch", arch}, {k1, "1"}, {k2, "2"}};
    expect_fail(load_views(t, n, two_long, 4, &e), &e, "longer than 31 bytes", "two long keys");

    ld_kv_t long_val[] = {{"format", "latentd/1"}, {"arch", arch}, {"note", longval}};
    expect_fail(load_views(t, n, long_val, 3, &e), &e, "longer than 255 bytes", "long value");

    ld_kv_t many[LD_RECORD_MAX + 3];
    char keys[LD_RECORD_MAX + 1][8];
    many[0] = (ld_kv_t){"format", "latentd/1"};
    many[1] = (ld_kv_t){"arch", arch};
    for (int i = 0; i <= LD_RECORD_MAX; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        many[2 + i] = (ld_kv_t){keys[i], "v"};
    }
    expect_fail(load_views(t, n, many, LD_RECORD_MAX + 3, &e), &e, "metadata entries",
                "too many entries");

    /* the longest key and value that fit load, and save again unchanged */
    longval[255] = 0;
    ld_kv_t fits[] = {{"format", "latentd/1"}, {"arch", arch}, {k31, longval}};
    uint8_t *buf;
    size_t len;
    ck_assert(ld_ckpt_serialize(t, n, fits, 3, &buf, &len, &e) == LD_OK);
    ld_ckpt_t *c;
    ck_assert(ld_ckpt_parse(buf, len, &c, &e) == LD_OK);
    free(buf);
    ld_model_t *back;
    ck_assert_msg(ld_model_from_ckpt(c, &back, &e) == LD_OK, "%s", e.msg);
    ld_ckpt_free(c);
    ck_assert_str_eq(ld_record_get(&back->record, k31), longval);
    char path[600];
    snprintf(path, sizeof path, "%s/back.safetensors", dir);
    ck_assert_msg(ld_model_save(back, path, &e) == LD_OK, "%s", e.msg);
    ld_model_free(back);
    ld_model_free(m);
}
END_TEST

/* ---- H: a job's training state -------------------------------------------- */

/* A training state as a job writes it (trainer of a tiny GAN with a weight
 * average, so every optimiser block is there), at step 0. */
static void write_state(const char *path, ld_kind_t kind)
{
    ld_model_t *m = tu_tiny_model(kind);
    ld_err_t e;
    ld_dataset_t d = {.n = 8, .h = 4, .w = 4, .dim = 16};
    d.x = calloc(8 * 16, sizeof(float));
    snprintf(d.name, sizeof d.name, "zeros");
    ld_train_opts_t o;
    ld_train_opts_default(kind, &o);
    o.epochs = 1;
    o.batch = 4;
    o.threads = 1;
    if (kind == LD_KIND_GAN)
        o.g_ema = 0.999f;
    ld_trainer_t *t;
    ck_assert_msg(ld_trainer_new(m, &d, &o, &t, &e) == LD_OK, "%s", e.msg);
    ck_assert_msg(ld_trainer_save_state(t, path, &e) == LD_OK, "%s", e.msg);
    ld_trainer_free(t);
    ld_model_free(m);
    free(d.x);
}

START_TEST(test_describe_training_state)
{
    char path[600], text[8192];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    ld_err_t e = {{0}};

    write_state(path, LD_KIND_VAE);
    ck_assert_msg(ld_model_describe(path, text, sizeof text, &e) == LD_OK, "%s", e.msg);
    ck_assert_msg(strstr(text, "kind:       vae"), "%s", text);
    ck_assert_msg(strstr(text, "training state of a job, step 0"), "%s", text);
    ck_assert_msg(strstr(text, "tensors:    30: 10 parameters, 10 adam_m, 10 adam_v\n"), "%s", text);

    write_state(path, LD_KIND_GAN);
    ck_assert_msg(ld_model_describe(path, text, sizeof text, &e) == LD_OK, "%s", e.msg);
    ck_assert_msg(strstr(text, "kind:       gan"), "%s", text);
    ck_assert_msg(strstr(text, "8 parameters, 8 adam_m, 8 adam_v, 8 ema\n"), "%s", text);

    /* loaded as a model (PUT, latentd sample) it is refused with a pointer */
    ld_model_t *m = NULL;
    ck_assert_int_eq(ld_model_load(path, &m, &e), LD_EFORMAT);
    ck_assert_msg(strstr(e.msg, "training state, not a model"), "%s", e.msg);

    /* the command a user runs */
    char cmd[800];
    snprintf(cmd, sizeof cmd, "%s info %s 2>&1", LD_BIN, path);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t got = fread(text, 1, sizeof text - 1, p);
    text[got] = 0;
    int st = pclose(p);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "latentd info: %s", text);
    ck_assert_msg(strstr(text, "step 0") && strstr(text, "adam_m"), "%s", text);

    /* a damaged state: an optimiser block missing one tensor */
    ld_ckpt_t *c;
    ck_assert(ld_ckpt_read(path, &c, &e) == LD_OK);
    ld_tensor_view_t t[64];
    int n = 0;
    for (int i = 0; i < c->n_tensors; i++)
        if (strcmp(c->tensors[i].name, "adam_v.generator.0.bias"))
            t[n++] = c->tensors[i];
    ck_assert_int_eq(n, c->n_tensors - 1);
    ck_assert(ld_ckpt_write(path, t, n, c->meta, c->n_meta, &e) == LD_OK);
    ld_ckpt_free(c);
    ck_assert_int_eq(ld_model_describe(path, text, sizeof text, &e), LD_EFORMAT);
    ck_assert_msg(strstr(e.msg, "adam_v.generator.0.bias"), "%s", e.msg);
}
END_TEST

Suite *suite_model(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_arch_json_out_of_range);
    tcase_add_test(tc, test_inferred_widths_out_of_range);
    tcase_add_test(tc, test_arch_without_tensors_allocates_nothing);
    tcase_add_test(tc, test_long_metadata_refused);
    tcase_add_test(tc, test_describe_training_state);
    suite_add_tcase(s, tc);
    return s;
}

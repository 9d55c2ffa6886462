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

/* ---- layer-list models and PyTorch, both ways ------------------------------- */

/* A resmlp GAN built, stepped and saved by PyTorch (make_layer_fixtures.py:
 * state_dict, num_batches_tracked as I64) loads, and its generator decodes
 * the fixture's z to torch's eval-mode output. */
START_TEST(test_torch_model_loads)
{
    ld_model_t *m = NULL;
    ld_err_t e = {{0}};
    ck_assert_msg(ld_model_load("tests/fixtures/torch_resmlp.safetensors", &m, &e) == LD_OK, "%s",
                  e.msg);
    ck_assert_int_eq(m->arch.net, LD_NETS_RESMLP);
    ck_assert_int_eq(ld_net_nbt(&m->layers[LD_GAN_G], 1, m->buffers), 3); /* generator.1 */
    ld_ckpt_t *io = NULL;
    ck_assert_int_eq(ld_ckpt_read("tests/fixtures/torch_resmlp_io.safetensors", &io, &e), LD_OK);
    const ld_tensor_view_t *z = ld_ckpt_find(io, "z"), *y = ld_ckpt_find(io, "y");
    ck_assert(z && y && z->shape[1] == 8 && y->shape[1] == 784);
    int n = (int)z->shape[0];
    float *x = malloc(y->numel * sizeof(float));
    ck_assert_int_eq(ld_model_decode(m, n, z->data, x, &e), LD_OK);
    double worst = 0;
    for (size_t i = 0; i < y->numel; i++)
        worst = fmax(worst, fabs(x[i] - y->data[i]));
    printf("torch-written resmlp GAN: decode max |latentd - torch| = %.3g (tolerance 1e-5)\n",
           worst);
    ck_assert_msg(worst <= 1e-5, "decode differs from torch by %g", worst);
    free(x);
    ld_ckpt_free(io);
    ld_model_free(m);
}
END_TEST

/* dcgan, conv and resmlp models saved by latentd, with running statistics
 * moved by a training-mode batch: they load back bit for bit, and, when
 * PyTorch is installed, tests/reference/make_layer_fixtures.py rebuilds each
 * net from the file's layer lists, loads it with load_state_dict(strict=True)
 * and gives latentd's eval-mode outputs within 1e-5. */
START_TEST(test_layer_models_round_trip)
{
    static const struct { ld_kind_t kind; const char *recipe; } cases[] = {
        {LD_KIND_GAN, "dcgan"}, {LD_KIND_VAE, "conv"}, {LD_KIND_GAN, "resmlp"},
        {LD_KIND_VAE, "resmlp"}};
    int torch = system("/usr/bin/python3 -c 'import torch' 2>/dev/null") == 0;
    for (size_t c = 0; c < LD_ARRAY_LEN(cases); c++) {
        ld_train_opts_t o;
        ld_err_t e = {{0}};
        ld_model_t *m = tu_recipe_model(cases[c].kind, cases[c].recipe, 5, &o), *back = NULL;
        const ld_arch_t a = m->arch;
        enum { B = 4, MAXN = 4096 * B }; /* a row of any net's input or output */
        ld_tensor_view_t io[2 * LD_MAX_NETS];
        float *buf = calloc(2 * LD_MAX_NETS, MAXN * sizeof(float));
        ld_rng_t r;
        ld_rng_seed(&r, 9);
        for (int i = 0; i < m->n_nets; i++) {
            const ld_net_t *net = &m->layers[i];
            size_t in = (size_t)net->in.c * net->in.h * net->in.w, out = ld_net_width(m, i);
            ck_assert(in * B <= MAXN && out * B <= MAXN);
            float *x = buf + 2 * i * (size_t)MAXN, *y = x + MAXN;
            ld_rng_fill_normal(&r, x, B * in, 0.2f, 1.0f);
            ld_net_ws_t ws;
            ck_assert_int_eq(ld_net_ws_init(&ws, net, B), LD_OK);
            ld_net_run_t train = {.training = 1, .rng = &r, .update = m->buffers};
            ld_net_forward(net, m->params, m->buffers, &ws, B, x, &train);
            memcpy(y, ld_net_forward(net, m->params, m->buffers, &ws, B, x, NULL),
                   B * out * sizeof(float));
            ld_net_ws_free(&ws);
            for (int k = 0; k < 2; k++) {
                ld_tensor_view_t *t = &io[2 * i + k];
                memset(t, 0, sizeof *t);
                snprintf(t->name, sizeof t->name, "%s.%s", k ? "y" : "x", net->name);
                t->ndim = 2;
                t->shape[0] = B;
                t->shape[1] = (int64_t)(k ? out : in);
                t->numel = B * (k ? out : in);
                t->data = k ? y : x;
            }
        }
        char path[4200], iop[4200];
        snprintf(path, sizeof path, "%s/%s_%s.safetensors", dir, ld_kind_name(a.kind),
                 cases[c].recipe);
        snprintf(iop, sizeof iop, "%s/io_%s_%s.safetensors", dir, ld_kind_name(a.kind),
                 cases[c].recipe);
        ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "%s", e.msg);
        ck_assert_msg(ld_ckpt_write(iop, io, 2 * m->n_nets, NULL, 0, &e) == LD_OK, "%s", e.msg);
        ck_assert_msg(ld_model_load(path, &back, &e) == LD_OK, "%s", e.msg);
        ck_assert(memcmp(back->params, m->params, m->n_params * sizeof(float)) == 0);
        ck_assert(m->n_bufs > 0 || a.net == LD_NETS_CONV);
        ck_assert(m->n_bufs == back->n_bufs &&
                  (!m->n_bufs || !memcmp(back->buffers, m->buffers, m->n_bufs * sizeof(float))));
        if (torch) {
            char cmd[9000];
            snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/reference/make_layer_fixtures.py "
                     "--check-model %s %s", path, iop);
            ck_assert_msg(system(cmd) == 0, "torch refused %s", path);
        }
        ld_model_free(back);
        ld_model_free(m);
        free(buf);
    }
    if (!torch)
        tu_skip("python3-torch is not installed: the torch side of the round trip");
}
END_TEST

/* A conv VAE file written before the decoder's channel list ("decoder":[])
 * loads with that decoder, {64, 32}; a list of 1 or 5 entries is refused. */
START_TEST(test_conv_vae_without_channel_list)
{
    ld_err_t e = {{0}};
    ld_arch_t a;
    ld_arch_default(LD_KIND_VAE, &a);
    ck_assert_int_eq(ld_arch_set_net(&a, LD_NETS_CONV, &e), LD_OK);
    ck_assert_int_eq(a.dec.n, 3);
    a.dec.n = 1;
    ck_assert_int_eq(ld_arch_validate(&a, &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "2 to 4 channel counts"), "%s", e.msg);
    a.dec.n = 5;
    a.dec.size[3] = a.dec.size[4] = 8;
    ck_assert_int_eq(ld_arch_validate(&a, &e), LD_EINVAL);
    /* maps wider than a layer list holds (a hostile file's arch): refused,
     * not an assertion in the builder */
    ld_model_t *m = NULL, *back = NULL;
    a.dec = (ld_hidden_t){4, {4096, 4096, 4096, 4096}};
    ck_assert_int_eq(ld_model_new(&a, 3, &m, &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "conv decoder map"), "%s", e.msg);
    a.dec = (ld_hidden_t){2, {64, 400}}; /* 400 x 14 x 14 */
    ck_assert_int_eq(ld_arch_validate(&a, &e), LD_EINVAL);
    a.dec = (ld_hidden_t){2, {1337, 334}}; /* the widest that fit */
    ck_assert_msg(ld_arch_validate(&a, &e) == LD_OK, "%s", e.msg);
    a.dec.n = 0;
    ck_assert_msg(ld_model_new(&a, 3, &m, &e) == LD_OK, "%s", e.msg);
    const ld_net_t *dec = &m->layers[LD_VAE_DEC];
    ck_assert_int_eq(dec->layers[3].kind, LD_LAYER_CONVT2D);
    ck_assert_int_eq(dec->layers[3].out.c, 32);
    char path[4200], json[1024];
    ck_assert_int_gt(ld_arch_to_json(&m->arch, json, sizeof json), 0);
    ck_assert_msg(strstr(json, "\"decoder\":[]"), "%s", json);
    snprintf(path, sizeof path, "%s/conv_before_list.safetensors", dir);
    ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "%s", e.msg);
    ck_assert_msg(ld_model_load(path, &back, &e) == LD_OK, "%s", e.msg);
    ck_assert_int_eq(back->arch.dec.n, 0);
    ck_assert_int_eq(back->n_params, m->n_params);
    ck_assert(memcmp(back->params, m->params, m->n_params * sizeof(float)) == 0);
    ld_model_free(back);
    ld_model_free(m);
}
END_TEST

/* A layer list in the metadata that the architecture does not build is refused. */
START_TEST(test_layers_meta_must_match)
{
    ld_train_opts_t o;
    ld_err_t e = {{0}};
    ld_model_t *m = tu_recipe_model(LD_KIND_GAN, "dcgan", 1, &o);
    ld_tensor_view_t t[LD_MODEL_MAX_TENSORS];
    int n = ld_model_tensors_all(m, t, LD_MODEL_MAX_TENSORS);
    char arch[1024];
    ld_arch_to_json(&m->arch, arch, sizeof arch);
    const char *other = "{\"name\":\"generator\",\"names\":\"sequential\",\"input\":[100,1,1],"
                        "\"layers\":[{\"type\":\"Linear\",\"out\":784}]}";
    ld_kv_t meta[] = {{"arch", arch}, {"latentd.layers.generator", other}};
    expect_fail(load_views(t, n, meta, 2, &e), &e, "latentd.layers.generator describes other",
                "a foreign layer list");
    ld_kv_t no_arch[] = {{"kind", "gan"}};
    ck_assert_int_eq(load_views(t, n, no_arch, 1, &e), LD_EFORMAT); /* no dense names to infer */
    ld_model_free(m);
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
    tcase_add_test(tc, test_torch_model_loads);
    tcase_add_test(tc, test_layer_models_round_trip);
    tcase_add_test(tc, test_conv_vae_without_channel_list);
    tcase_add_test(tc, test_layers_meta_must_match);
    suite_add_tcase(s, tc);
    return s;
}

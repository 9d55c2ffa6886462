/* check_cond.c — conditional models (cgan, cvae; issue 16 §1): the nets with
 * a label embedding, their gradients against finite differences, training
 * with labels, the class names through a checkpoint, ld_eval_cond, and every
 * route's labels against the real daemon (LD_BIN) with libcurl.
 *
 * Models: tiny ones (tu_tiny.h: 4x4 images, z 2, one hidden layer of 8) so
 * that the suite takes seconds; the routes' answers are compared with the
 * in-process decode of the same z and labels.  The unconditional model given
 * labels is the shipped fashion-gan.
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"
#include "tu_tiny.h"

#include "latentd/eval.h"
#include "latentd/fsutil.h"
#include "latentd/image.h"
#include "latentd/gan.h"
#include "latentd/model.h"
#include "latentd/train.h"
#include "latentd/vae.h"

#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#define ASAN_SLOWDOWN 4
#define FASHION_JSON                                                                             \
    "[\"t-shirt/top\",\"trouser\",\"pullover\",\"dress\",\"coat\",\"sandal\",\"shirt\","      \
    "\"sneaker\",\"bag\",\"ankle boot\"]"

/* A tiny conditional model of kind k whose record names Fashion-MNIST's
 * classes, as training on it writes them. */
static ld_model_t *tiny_cond(ld_kind_t k)
{
    ld_model_t *m = tu_tiny_model(k);
    ld_record_set(&m->record, "classes", "%s", FASHION_JSON);
    return m;
}

/* ================================================================ nets */

static const ld_tensor_view_t *find(const ld_tensor_view_t *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name))
            return &t[i];
    ck_abort_msg("no tensor %s", name);
    return NULL;
}

START_TEST(test_default_nets)
{
    /* the default GAN / VAE widths, an embedding of 10 before each net,
     * named as nn.Sequential */
    static const struct {
        ld_kind_t kind;
        const char *name;
        int64_t rows, cols;
    } want[] = {
        {LD_KIND_CGAN, "generator.0.weight", 10, 10},
        {LD_KIND_CGAN, "generator.1.weight", 256, 110},
        {LD_KIND_CGAN, "generator.5.weight", 784, 512},
        {LD_KIND_CGAN, "discriminator.0.weight", 10, 10},
        {LD_KIND_CGAN, "discriminator.1.weight", 512, 794},
        {LD_KIND_CGAN, "discriminator.7.weight", 1, 256},
        {LD_KIND_CVAE, "encoder.0.weight", 10, 10},
        {LD_KIND_CVAE, "encoder.1.weight", 128, 794},
        {LD_KIND_CVAE, "mu.weight", 20, 64},
        {LD_KIND_CVAE, "decoder.0.weight", 10, 10},
        {LD_KIND_CVAE, "decoder.1.weight", 64, 30},
        {LD_KIND_CVAE, "decoder.5.weight", 784, 128},
    };
    for (ld_kind_t k = LD_KIND_CGAN; k <= LD_KIND_CVAE; k++) {
        ld_arch_t a;
        ld_arch_default(k, &a);
        ck_assert_int_eq(a.net, LD_NETS_CMLP);
        ld_model_t *m;
        ld_err_t e;
        ck_assert_msg(ld_model_new(&a, 1, &m, &e) == LD_OK, "%s", e.msg);
        ck_assert(m->ops->conditional && m->ops->needs_labels);
        ck_assert_int_eq(m->ops->family, k == LD_KIND_CGAN ? LD_KIND_GAN : LD_KIND_VAE);
        ld_tensor_view_t t[LD_MODEL_MAX_TENSORS];
        int n = ld_model_tensors(m, m->params, t, LD_MODEL_MAX_TENSORS);
        for (size_t i = 0; i < LD_ARRAY_LEN(want); i++) {
            if (want[i].kind != k)
                continue;
            const ld_tensor_view_t *v = find(t, n, want[i].name);
            ck_assert_int_eq(v->ndim, 2);
            ck_assert_int_eq(v->shape[0], want[i].rows);
            ck_assert_int_eq(v->shape[1], want[i].cols);
        }
        ld_model_free(m);
    }
    /* a conditional kind keeps cmlp; cmlp is no other kind's */
    ld_arch_t a;
    ld_err_t e;
    ld_arch_default(LD_KIND_CGAN, &a);
    a.net = LD_NETS_MLP;
    ck_assert_int_eq(ld_arch_validate(&a, &e), LD_EINVAL);
    ld_arch_default(LD_KIND_GAN, &a);
    a.net = LD_NETS_CMLP;
    ck_assert_int_eq(ld_arch_validate(&a, &e), LD_EINVAL);
    ld_arch_default(LD_KIND_CVAE, &a);
    a.n_classes = 1;
    ck_assert_int_eq(ld_arch_validate(&a, &e), LD_EINVAL);
}
END_TEST

/* Decode checks its labels, and the label changes the image. */
START_TEST(test_decode_labels)
{
    ld_model_t *m = tiny_cond(LD_KIND_CGAN), *g = tu_tiny_model(LD_KIND_GAN);
    float z[4 * 2], x[4 * 16], y[4 * 16];
    ld_model_draw_z(m, 3, 1.0f, 4, z);
    uint8_t same[4] = {7, 7, 7, 7}, other[4] = {7, 8, 7, 7}, bad[4] = {0, 10, 0, 0};
    ld_err_t e;
    ck_assert_int_eq(ld_model_decode(m, 4, z, x, &e), LD_EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "label"));
    ck_assert_int_eq(ld_model_decode_labels(m, 4, z, bad, x, &e), LD_EINVAL);
    ck_assert_int_eq(ld_model_decode_labels(g, 4, z, same, x, &e), LD_EINVAL);
    ck_assert_int_eq(ld_model_decode_labels(m, 4, z, same, x, &e), LD_OK);
    ck_assert_int_eq(ld_model_decode_labels(m, 4, z, other, y, &e), LD_OK);
    ck_assert_mem_eq(x, y, 16 * sizeof(float));                       /* row 0: same label */
    ck_assert(memcmp(x + 16, y + 16, 16 * sizeof(float)) != 0);       /* row 1: 7 vs 8 */
    /* the mixed embedding at t = 0 and t = 1 is the label's own */
    uint8_t from[4] = {7, 7, 7, 7}, to[4] = {8, 8, 8, 8};
    float t[4] = {0, 1, 0.5f, 0}, w[4 * 16];
    ck_assert_int_eq(ld_model_decode_mix(m, 4, z, from, to, t, w, &e), LD_OK);
    ck_assert_mem_eq(w, x, 16 * sizeof(float));
    ck_assert_mem_eq(w + 16, y + 16, 16 * sizeof(float));
    ck_assert(memcmp(w + 32, x + 32, 16 * sizeof(float)) != 0);
    ld_model_free(m);
    ld_model_free(g);
}
END_TEST

/* Class names survive a checkpoint, and info prints them. */
START_TEST(test_checkpoint_classes)
{
    char *dir = tu_mkdtemp(), path[512], text[16384];
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    ld_err_t e;
    for (ld_kind_t k = LD_KIND_CGAN; k <= LD_KIND_CVAE; k++) {
        ld_model_t *m = tiny_cond(k), *l;
        ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "%s", e.msg);
        ck_assert_msg(ld_model_load(path, &l, &e) == LD_OK, "%s", e.msg);
        ck_assert_int_eq(l->arch.kind, k);
        ck_assert_int_eq(l->arch.n_classes, 10);
        ck_assert_int_eq(l->arch.embed, m->arch.embed);
        ck_assert_str_eq(ld_record_get(&l->record, "classes"), FASHION_JSON);
        ck_assert_mem_eq(l->params, m->params, m->n_params * sizeof(float));
        char name[64];
        ck_assert_str_eq(ld_model_class_name(l, 9, name, sizeof name), "ankle boot");
        ck_assert_int_eq(ld_model_class_parse(l, "sneaker"), 7);
        ck_assert_int_eq(ld_model_class_parse(l, "3"), 3);
        ck_assert_int_eq(ld_model_class_parse(l, "10"), -1);
        ck_assert_int_eq(ld_model_class_parse(l, "boot"), -1);
        ck_assert_msg(ld_model_describe(path, text, sizeof text, &e) == LD_OK, "%s", e.msg);
        ck_assert_ptr_nonnull(strstr(text, "\"classes\":10"));
        ck_assert_ptr_nonnull(strstr(text, "t-shirt/top"));
        ck_assert_ptr_nonnull(strstr(text, "EmbedConcat"));
        ld_model_free(m);
        ld_model_free(l);
    }
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ====================================================== gradients */

/* The CVAE step's gradient (labels on encoder and decoder) against central
 * differences of its loss, on every embedding entry of the labels used and
 * on the first Linear of each net. */
START_TEST(test_cvae_finite_differences)
{
    ld_model_t *m = tiny_cond(LD_KIND_CVAE);
    enum { B = 5 };
    float x[B * 16], eps[B * 2];
    uint8_t y[B] = {0, 3, 3, 9, 5};
    ld_rng_t r;
    ld_rng_seed(&r, 11);
    ld_rng_fill_uniform(&r, x, B * 16, 0.05f, 0.95f);
    ld_rng_fill_normal(&r, eps, B * 2, 0, 1);
    ld_vae_ws_t ws;
    ck_assert_int_eq(ld_vae_ws_init(&ws, m, B), 0);
    ld_net_run_t run = {.labels = y};
    ws.run = &run;
    float *g = calloc(m->n_params, sizeof *g);
    double rec, kl;
    ld_vae_step(m, g, &ws, B, x, eps, 1.0f, &rec, &kl);
    ld_tensor_view_t t[LD_MODEL_MAX_TENSORS];
    int nt = ld_model_tensors(m, m->params, t, LD_MODEL_MAX_TENSORS);
    const char *names[] = {"encoder.0.weight", "decoder.0.weight", "encoder.1.weight",
                           "decoder.1.weight"};
    double worst = 0;
    int checked = 0;
    for (size_t k = 0; k < LD_ARRAY_LEN(names); k++) {
        const ld_tensor_view_t *v = find(t, nt, names[k]);
        size_t off = (size_t)(v->data - m->params);
        for (size_t i = 0; i < v->numel; i += (v->numel > 40 ? 7 : 1)) {
            float *p = m->params + off + i, keep = *p;
            double lp, lm, h = 2e-3;
            *p = keep + (float)h;
            ld_vae_step(m, NULL, &ws, B, x, eps, 1.0f, &rec, &kl);
            lp = (rec + kl) / B;
            *p = keep - (float)h;
            ld_vae_step(m, NULL, &ws, B, x, eps, 1.0f, &rec, &kl);
            lm = (rec + kl) / B;
            *p = keep;
            double fd = (lp - lm) / (2 * h), an = g[off + i];
            double d = fabs(fd - an) / (fabs(fd) > 1e-2 ? fabs(fd) : 1e-2);
            worst = d > worst ? d : worst;
            checked += an != 0;
        }
    }
    printf("cvae finite differences: worst relative difference %.2e over %d non-zero entries\n",
           worst, checked);
    ck_assert_msg(worst < 2e-2, "worst relative difference %g", worst);
    ck_assert_int_gt(checked, 20);
    /* an unused label's embedding row gets no gradient */
    const ld_tensor_view_t *emb = find(t, nt, "decoder.0.weight");
    size_t e = (size_t)emb->shape[1], off = (size_t)(emb->data - m->params);
    for (size_t j = 0; j < e; j++)
        ck_assert(g[off + 1 * e + j] == 0.0f && g[off + 3 * e + j] != 0.0f);
    free(g);
    ld_vae_ws_free(&ws);
    ld_model_free(m);
}
END_TEST

/* ====================================================== training */

/* A labelled 4x4 data set of three classes: class c is bright in row c. */
static ld_dataset_t *three_classes(int n, int labelled)
{
    ld_dataset_t *d = calloc(1, sizeof *d);
    d->n = n;
    d->h = d->w = 4;
    d->dim = 16;
    d->x = calloc((size_t)n * 16, sizeof(float));
    d->y = labelled ? calloc((size_t)n, 1) : NULL;
    d->n_classes = labelled ? 3 : 0;
    snprintf(d->name, sizeof d->name, "three");
    for (int i = 0; i < n; i++) {
        int c = i % 3;
        for (int j = 0; j < 4; j++)
            d->x[(size_t)i * 16 + c * 4 + j] = 0.9f;
        if (labelled)
            d->y[i] = (uint8_t)c;
    }
    return d;
}

START_TEST(test_train_with_labels)
{
    ld_dataset_t *d = three_classes(96, 1), *u = three_classes(96, 0);
    for (ld_kind_t k = LD_KIND_CGAN; k <= LD_KIND_CVAE; k++) {
        ld_model_t *m = tu_tiny_model(k);
        ld_train_opts_t o;
        ld_train_opts_default(k, &o);
        o.epochs = 2;
        o.batch = 32;
        o.threads = 2;
        ld_trainer_t *t;
        ld_err_t e;
        ck_assert_int_eq(ld_trainer_new(m, u, &o, &t, &e), LD_EINVAL);
        ck_assert_ptr_nonnull(strstr(e.msg, "no labels"));
        ck_assert_msg(ld_trainer_new(m, d, &o, &t, &e) == LD_OK, "%s", e.msg);
        ck_assert_msg(ld_trainer_run(t, NULL, NULL, &e) == LD_OK, "%s", e.msg);
        ck_assert_str_eq(ld_record_get(&m->record, "classes"), "[\"0\",\"1\",\"2\"]");
        ld_progress_t p;
        ld_trainer_progress(t, &p);
        for (int i = 0; i < p.n_losses; i++)
            ck_assert(isfinite(p.loss[i]));
        ld_trainer_free(t);
        ld_model_free(m);
    }
    ld_data_free(d);
    ld_data_free(u);
}
END_TEST

/* A folder of class folders of PNGs: labels by folder, names from them,
 * through training into the record. */
START_TEST(test_png_class_folders)
{
    char *dir = tu_mkdtemp(), p[1024];
    static const char *const cls[] = {"sneaker", "bag"}; /* listed out of order */
    ld_err_t e;
    for (int c = 0; c < 2; c++) {
        snprintf(p, sizeof p, "%s/%s", dir, cls[c]);
        ck_assert_int_eq(mkdir(p, 0700), 0);
        for (int i = 0; i < 2 + c; i++) {
            float x[16];
            for (int j = 0; j < 16; j++)
                x[j] = (float)((j + c) % 4) / 3.0f;
            uint8_t *png;
            size_t len;
            ck_assert_int_eq(ld_png_grid(x, 1, 4, 4, 1, 0, &png, &len, &e), LD_OK);
            snprintf(p, sizeof p, "%s/%s/%d.png", dir, cls[c], i);
            ck_assert_int_eq(ld_write_atomic(p, png, len, &e), LD_OK);
            free(png);
        }
    }
    ld_dataset_t *d;
    ck_assert_msg(ld_data_load(dir, LD_SPLIT_TRAIN, 0, &d, &e) == LD_OK, "%s", e.msg);
    ck_assert_int_eq(d->n, 5);
    ck_assert_int_eq(d->n_classes, 2);
    ck_assert_int_eq(d->dim, 16);
    static const uint8_t want[5] = {0, 0, 0, 1, 1}; /* bag (3 images), then sneaker (2) */
    ck_assert_mem_eq(d->y, want, 5);
    char names[256];
    ck_assert_int_gt(ld_data_class_names(d, names, sizeof names), 0);
    ck_assert_str_eq(names, "[\"bag\",\"sneaker\"]");
    ld_model_t *m = tu_tiny_model(LD_KIND_CGAN);
    ld_train_opts_t o;
    ld_train_opts_default(LD_KIND_CGAN, &o);
    o.epochs = 1;
    o.batch = 5;
    ld_trainer_t *t;
    ck_assert_msg(ld_trainer_new(m, d, &o, &t, &e) == LD_OK, "%s", e.msg);
    ck_assert_msg(ld_trainer_run(t, NULL, NULL, &e) == LD_OK, "%s", e.msg);
    char name[64];
    ck_assert_str_eq(ld_model_class_name(m, 1, name, sizeof name), "sneaker");
    ck_assert_str_eq(ld_model_class_name(m, 2, name, sizeof name), "2"); /* 10 classes in the arch */
    ld_trainer_free(t);
    ld_model_free(m);
    ld_data_free(d);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ld_eval_cond: counts per requested class, and its refusals. */
START_TEST(test_eval_cond)
{
    ld_model_t *m = tiny_cond(LD_KIND_CGAN), *cls = tu_tiny_model(LD_KIND_CLASSIFIER);
    ld_model_t *g = tu_tiny_model(LD_KIND_GAN);
    ld_cond_eval_t c;
    ld_err_t e;
    ck_assert_msg(ld_eval_cond(m, cls, 1000, 1, &c, &e) == LD_OK, "%s", e.msg);
    ck_assert_int_eq(c.n, 1000);
    ck_assert_int_eq(c.n_classes, 10);
    /* the overall accuracy is the mean of the per-class ones (100 samples each) */
    double mean = 0;
    for (int k = 0; k < 10; k++) {
        ck_assert(c.class_acc[k] >= 0 && c.class_acc[k] <= 1);
        ck_assert(c.class_acc[k] >= c.min_acc);
        mean += c.class_acc[k] / 10;
    }
    ck_assert_double_eq_tol(c.acc, mean, 1e-9);
    ck_assert(c.class_acc[c.worst] == c.min_acc);
    /* by hand for class 0's first sample */
    float z[2], x[16], logits[10];
    uint8_t l0 = 0;
    ld_rng_t r;
    ld_rng_seed(&r, 1);
    ld_rng_fill_normal(&r, z, 2, 0, 1);
    ck_assert_int_eq(ld_model_decode_labels(m, 1, z, &l0, x, &e), LD_OK);
    ck_assert_int_eq(ld_model_classify(cls, 1, x, logits, NULL, &e), LD_OK);
    ck_assert_int_eq(ld_eval_cond(g, cls, 1000, 1, &c, &e), LD_EINVAL);
    ck_assert_int_eq(ld_eval_cond(m, m, 1000, 1, &c, &e), LD_EINVAL);
    ck_assert_int_eq(ld_eval_cond(m, cls, 5, 1, &c, &e), LD_EINVAL);
    ld_model_free(m);
    ld_model_free(cls);
    ld_model_free(g);
}
END_TEST

/* ====================================================== routes */

static tu_daemon_t D;
static ld_model_t *CG, *CV; /* the served conditional models, in process */

static void save_as(ld_model_t *m, const char *name)
{
    char p[1024];
    ld_err_t e;
    snprintf(p, sizeof p, "%s/%s.safetensors", D.models, name);
    ck_assert_msg(ld_model_save(m, p, &e) == LD_OK, "%s", e.msg);
}

static void setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_dirs(&D, ASAN_SLOWDOWN);
    CG = tiny_cond(LD_KIND_CGAN);
    CV = tiny_cond(LD_KIND_CVAE);
    save_as(CG, "cg");
    save_as(CV, "cv");
    char p[1024], text[2048];
    snprintf(p, sizeof p, "%s/fashion-gan.safetensors", D.models);
    tu_copy_file("models/fashion-gan.safetensors", p);
    snprintf(text, sizeof text,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = 2\nmodels_dir = %s\nstate_dir = %s\n"
             "max_samples = 64\n",
             D.models, D.state);
    tu_write_file(D.conf, text);
    tu_daemon_start(&D, NULL);
}

static void teardown(void)
{
    tu_daemon_teardown(&D, 30);
    ld_model_free(CG);
    ld_model_free(CV);
    curl_global_cleanup();
}

static long post(tu_resp_t *r, const char *path, const char *json)
{
    tu_req_t q = {.port = D.port};
    return tu_http_once(r, "POST", path, json, strlen(json), &q);
}

/* The "images" of a 200 answer equal m's decode of z (n rows) with labels. */
static void expect_images(const tu_resp_t *r, const ld_model_t *m, int n, const float *z,
                          const uint8_t *labels, const char *what)
{
    ck_assert_msg(r->status == 200, "%s: %ld %s", what, r->status, r->body.data);
    float x[64 * 16];
    ld_err_t e;
    ck_assert_int_eq(ld_model_decode_labels(m, n, z, labels, x, &e), LD_OK);
    const cJSON *im = tu_jget(r->json, "images");
    ck_assert_int_eq(cJSON_GetArraySize(im), n);
    int i = 0;
    for (const cJSON *row = im->child; row; row = row->next, i++) {
        int j = 0;
        for (const cJSON *v = row->child; v; v = v->next, j++)
            ck_assert_msg(fabs(v->valuedouble - x[i * 16 + j]) < 1e-6, "%s: row %d pixel %d: %g "
                          "against %g", what, i, j, v->valuedouble, (double)x[i * 16 + j]);
        ck_assert_int_eq(j, 16);
    }
}

/* z of a sample answer (n rows of 2). */
static void answer_z(const tu_resp_t *r, int n, float *z)
{
    const cJSON *zj = tu_jget(r->json, "z");
    ck_assert_int_eq(cJSON_GetArraySize(zj), n);
    int i = 0;
    for (const cJSON *row = zj->child; row; row = row->next)
        for (const cJSON *v = row->child; v; v = v->next)
            z[i++] = (float)v->valuedouble;
}

START_TEST(test_sample_label_forms)
{
    static const char *const bodies[] = {
        "{\"n\":3,\"seed\":5,\"label\":\"sneaker\"}",
        "{\"n\":3,\"seed\":5,\"label\":7}",
        "{\"n\":3,\"seed\":5,\"labels\":[7,\"sneaker\",7]}",
    };
    uint8_t sevens[3] = {7, 7, 7}, mixed[3] = {0, 9, 5};
    float z[3 * 2];
    for (size_t i = 0; i < LD_ARRAY_LEN(bodies); i++) {
        tu_resp_t r = {0};
        post(&r, "/v1/models/cg/sample", bodies[i]);
        ck_assert_msg(r.status == 200, "%s: %ld %s", bodies[i], r.status, r.body.data);
        answer_z(&r, 3, z);
        expect_images(&r, CG, 3, z, sevens, bodies[i]);
        tu_resp_free(&r);
    }
    tu_resp_t r = {0};
    post(&r, "/v1/models/cg/sample", "{\"n\":3,\"seed\":5,\"labels\":[\"t-shirt/top\",\"ankle boot\",5]}");
    answer_z(&r, 3, z);
    expect_images(&r, CG, 3, z, mixed, "labels by name and index");
    tu_resp_free(&r);
    /* decode: labels one per row */
    post(&r, "/v1/models/cg/decode", "{\"z\":[[0.5,-1],[2,0.25],[0,0]],\"labels\":[0,\"ankle boot\",5]}");
    float zd[6] = {0.5f, -1, 2, 0.25f, 0, 0};
    expect_images(&r, CG, 3, zd, mixed, "decode");
    tu_resp_free(&r);
    /* sample.png: a label in the query, and its ETag depends on it */
    tu_req_t q = {.port = D.port};
    char e1[64] = "", e2[64] = "";
    tu_resp_t p = {0};
    tu_http_once(&p, "GET", "/v1/models/cg/sample.png?n=4&seed=2&label=sneaker", NULL, 0, &q);
    ck_assert_msg(p.status == 200, "%ld %s", p.status, p.body.data);
    ck_assert(p.body.len > 8 && !memcmp(p.body.data, "\x89PNG", 4));
    tu_hdr(&p, "ETag", e1, sizeof e1);
    tu_resp_free(&p);
    tu_http_once(&p, "GET", "/v1/models/cg/sample.png?n=4&seed=2&labels=bag,7,7,7", NULL, 0, &q);
    ck_assert_msg(p.status == 200, "%ld %s", p.status, p.body.data);
    tu_hdr(&p, "ETag", e2, sizeof e2);
    ck_assert_str_ne(e1, e2);
    tu_resp_free(&p);
    /* the model lists its classes */
    tu_http_once(&p, "GET", "/v1/models/cg", NULL, 0, &q);
    const cJSON *cl = tu_jget(p.json, "classes");
    ck_assert_int_eq(cJSON_GetArraySize(cl), 10);
    ck_assert_str_eq(cJSON_GetArrayItem(cl, 7)->valuestring, "sneaker");
    ck_assert_str_eq(tu_jget(p.json, "kind")->valuestring, "cgan");
    tu_resp_free(&p);
}
END_TEST

START_TEST(test_label_errors)
{
    static const struct {
        const char *path, *body, *want;
    } cases[] = {
        {"/v1/models/cg/sample", "{\"n\":2}", "ankle boot"},         /* none: names the classes */
        {"/v1/models/cg/sample", "{\"n\":2,\"label\":\"boot\"}", "sneaker"}, /* unknown name */
        {"/v1/models/cg/sample", "{\"n\":2,\"label\":10}", "ankle boot"},    /* index too big */
        {"/v1/models/cg/sample", "{\"n\":3,\"labels\":[1,2]}", "2 entries for 3 rows"},
        {"/v1/models/cg/decode", "{\"z\":[[0,0]]}", "labels"},
        {"/v1/models/cv/encode", "{\"images\":[[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]}", "labels"},
        {"/v1/models/fashion-gan/sample", "{\"n\":2,\"label\":3}", "takes no label"},
        {"/v1/models/fashion-gan/sample", "{\"n\":2,\"labels\":[3,3]}", "takes no labels"},
        {"/v1/models/cg/interpolate", "{\"from\":{\"seed\":1},\"to\":{\"seed\":2,\"label\":1}}",
         "ankle boot"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        tu_resp_t r = {0};
        post(&r, cases[i].path, cases[i].body);
        tu_expect_error(&r, 422, "invalid_value", cases[i].want, cases[i].body, 1);
        tu_resp_free(&r);
    }
    tu_req_t q = {.port = D.port};
    tu_resp_t r = {0};
    tu_http_once(&r, "GET", "/v1/models/fashion-gan/sample.png?n=1&label=sneaker", NULL, 0, &q);
    tu_expect_error(&r, 422, "invalid_value", "takes no label", "sample.png", 1);
    tu_resp_free(&r);
    /* the daemon still serves */
    post(&r, "/v1/models/cg/sample", "{\"n\":1,\"label\":1}");
    ck_assert_int_eq(r.status, 200);
    tu_resp_free(&r);
}
END_TEST

/* CVAE encode and reconstruct with labels, and a label walk. */
START_TEST(test_cvae_routes)
{
    float img[2 * 16];
    for (int i = 0; i < 32; i++)
        img[i] = (float)((i * 7) % 11) / 10.0f;
    char body[2048];
    size_t k = (size_t)snprintf(body, sizeof body, "{\"images\":[");
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 16; j++)
            k += (size_t)snprintf(body + k, sizeof body - k, "%s%.9g%s", j ? "," : i ? ",[" : "[",
                                  (double)img[i * 16 + j], j == 15 ? "]" : "");
    snprintf(body + k, sizeof body - k, "],\"labels\":[\"bag\",2]}");
    uint8_t labels[2] = {8, 2};
    float mu[4], lv[4];
    ld_err_t e;
    ck_assert_int_eq(ld_model_encode_labels(CV, 2, img, labels, mu, lv, &e), LD_OK);
    tu_resp_t r = {0};
    post(&r, "/v1/models/cv/encode", body);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body.data);
    const cJSON *m = tu_jget(r.json, "mu");
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            ck_assert(fabs(cJSON_GetArrayItem(cJSON_GetArrayItem(m, i), j)->valuedouble -
                           mu[i * 2 + j]) < 1e-6);
    tu_resp_free(&r);
    post(&r, "/v1/models/cv/reconstruct", body);
    expect_images(&r, CV, 2, mu, labels, "reconstruct");
    tu_resp_free(&r);
    /* interpolate: fixed z, from class 1 to class 7: the ends are those classes' images */
    post(&r, "/v1/models/cv/interpolate",
         "{\"from\":{\"z\":[0.5,-0.5],\"label\":\"trouser\"},\"to\":{\"z\":[0.5,-0.5],"
         "\"label\":7},\"steps\":4,\"method\":\"lerp\"}");
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body.data);
    float z[2] = {0.5f, -0.5f}, x1[16], x7[16];
    uint8_t one = 1, seven = 7;
    ck_assert_int_eq(ld_model_decode_labels(CV, 1, z, &one, x1, &e), LD_OK);
    ck_assert_int_eq(ld_model_decode_labels(CV, 1, z, &seven, x7, &e), LD_OK);
    const cJSON *im = tu_jget(r.json, "images");
    ck_assert_int_eq(cJSON_GetArraySize(im), 4);
    for (int j = 0; j < 16; j++) {
        ck_assert(fabs(cJSON_GetArrayItem(cJSON_GetArrayItem(im, 0), j)->valuedouble - x1[j]) < 1e-6);
        ck_assert(fabs(cJSON_GetArrayItem(cJSON_GetArrayItem(im, 3), j)->valuedouble - x7[j]) < 1e-6);
    }
    double mid = 0; /* the walk moves between them */
    for (int j = 0; j < 16; j++)
        mid += fabs(cJSON_GetArrayItem(cJSON_GetArrayItem(im, 1), j)->valuedouble - x1[j]);
    ck_assert(mid > 0);
    tu_resp_free(&r);
}
END_TEST

/* A /v2 infer of cg answered 400 with want in the message ({"error":"..."},
 * KServe's form). */
static void v2_refused(const char *body, const char *want)
{
    tu_resp_t r = {0};
    post(&r, "/v2/models/cg/infer", body);
    ck_assert_msg(r.status == 400 && strstr(r.body.data, want), "%s: %ld %s", body, r.status,
                  r.body.data);
    tu_resp_free(&r);
}

/* /v2 infer: a labels input (INT32) reaches the decode; none is refused. */
START_TEST(test_v2_labels)
{
    tu_resp_t r = {0};
    post(&r, "/v2/models/cg/infer",
         "{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[3,2],"
         "\"data\":[0.5,-1,2,0.25,0,0]},{\"name\":\"labels\",\"datatype\":\"INT32\","
         "\"shape\":[3],\"data\":[0,9,5]}]}");
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body.data);
    float z[6] = {0.5f, -1, 2, 0.25f, 0, 0}, x[48];
    uint8_t l[3] = {0, 9, 5};
    ld_err_t e;
    ck_assert_int_eq(ld_model_decode_labels(CG, 3, z, l, x, &e), LD_OK);
    const cJSON *out = cJSON_GetArrayItem(tu_jget(r.json, "outputs"), 0);
    const cJSON *data = tu_jget(out, "data");
    ck_assert_int_eq(cJSON_GetArraySize(data), 48);
    int i = 0;
    for (const cJSON *v = data->child; v; v = v->next, i++)
        ck_assert(fabs(v->valuedouble - x[i]) < 1e-6);
    tu_resp_free(&r);
    v2_refused("{\"inputs\":[{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":[1,2],"
               "\"data\":[0.5,-1]}]}", "sneaker");
    v2_refused("{\"inputs\":[{\"name\":\"labels\",\"datatype\":\"INT32\",\"shape\":[1],"
               "\"data\":[10]}]}", "no class");
}
END_TEST

/* Concurrent requests share the batcher's passes; each row keeps its label. */
typedef struct {
    int id;
    int bad;
    char msg[256];
} client_t;

static void *client(void *arg)
{
    client_t *c = arg;
    CURL *h = curl_easy_init();
    tu_req_t q = {.port = D.port};
    for (int i = 0; i < 6 && !c->bad; i++) {
        int label = (c->id * 3 + i) % 10;
        char body[128];
        snprintf(body, sizeof body, "{\"n\":4,\"seed\":%d,\"label\":%d}", 100 + i, label);
        tu_resp_t r = {0};
        tu_http(h, &r, "POST", "/v1/models/cg/sample", body, strlen(body), &q);
        float z[8], x[64];
        uint8_t l[4] = {(uint8_t)label, (uint8_t)label, (uint8_t)label, (uint8_t)label};
        ld_err_t e;
        const cJSON *zj = r.json ? cJSON_GetObjectItem(r.json, "z") : NULL;
        const cJSON *im = r.json ? cJSON_GetObjectItem(r.json, "images") : NULL;
        if (r.status != 200 || !zj || !im) {
            c->bad = 1;
            snprintf(c->msg, sizeof c->msg, "%ld %.200s", r.status, r.body.data);
        }
        for (int k = 0; !c->bad && k < 8; k++)
            z[k] = (float)cJSON_GetArrayItem(cJSON_GetArrayItem(zj, k / 2), k % 2)->valuedouble;
        if (!c->bad && ld_model_decode_labels(CG, 4, z, l, x, &e) == LD_OK)
            for (int k = 0; k < 64 && !c->bad; k++)
                if (fabs(cJSON_GetArrayItem(cJSON_GetArrayItem(im, k / 16), k % 16)->valuedouble -
                         x[k]) > 1e-6) {
                    c->bad = 1;
                    snprintf(c->msg, sizeof c->msg, "%s: pixel %d differs", body, k);
                }
        tu_resp_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

START_TEST(test_batched_labels)
{
    enum { N = 4 };
    pthread_t th[N];
    client_t c[N];
    for (int i = 0; i < N; i++) {
        c[i] = (client_t){.id = i};
        ck_assert_int_eq(pthread_create(&th[i], NULL, client, &c[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(!c[i].bad, "client %d: %s", i, c[i].msg);
    }
}
END_TEST

START_TEST(test_daemon_exits_clean)
{
    int code = tu_daemon_stop(&D, 30);
    ck_assert_msg(code == 0, "daemon exit %d; log tail:\n%s", code, tu_log_tail(&D));
}
END_TEST

Suite *suite_cond(void)
{
    Suite *s = suite_create("cond");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_default_nets);
    tcase_add_test(tc, test_decode_labels);
    tcase_add_test(tc, test_checkpoint_classes);
    tcase_add_test(tc, test_cvae_finite_differences);
    tcase_add_test(tc, test_train_with_labels);
    tcase_add_test(tc, test_png_class_folders);
    tcase_add_test(tc, test_eval_cond);
    suite_add_tcase(s, tc);
    TCase *th = tcase_create("http");
    tcase_set_timeout(th, 120);
    tcase_add_unchecked_fixture(th, setup, teardown);
    tcase_add_test(th, test_sample_label_forms);
    tcase_add_test(th, test_label_errors);
    tcase_add_test(th, test_cvae_routes);
    tcase_add_test(th, test_v2_labels);
    tcase_add_test(th, test_batched_labels);
    tcase_add_test(th, test_daemon_exits_clean);
    suite_add_tcase(s, th);
    return s;
}

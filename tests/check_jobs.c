/* check_jobs.c — the jobs engine: spec validation (every error class names its
 * field), a job to succeeded with its model published, restart survival,
 * cancel (queued and running), a full queue, shutdown and resume, kill -9 and
 * resume (bit-identical to an uninterrupted run), a corrupt checkpoint, a
 * corrupt record, two jobs at once (VAE + GAN), named data sets (IDX and PNG),
 * the event stream API and the metrics text.
 *
 * Jobs train on at most 2000 Fashion-MNIST images with small nets so the suite
 * stays fast under the sanitizers too.  "Long" jobs (100000 epochs) never end
 * on their own: they are cancelled or interrupted. */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "../src/fsutil_impl.h"
#include "latentd/ckpt.h"
#include "latentd/image.h"
#include "latentd/jobs.h"
#include "latentd/jobspec.h"
#include "latentd/model.h"
#include "latentd/nn.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
/* libasan's (sanitizer/allocator_interface.h is not installed with gcc) */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

static char *root;
static char state_dir[512], models_dir[512], data_dir[512];

/* What the callbacks saw. */
static atomic_int n_published;
static atomic_int fail_publish;
static char last_published[256];
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[16384];

static int on_publish(void *user, const char *name, const char *path, ld_err_t *err)
{
    if (atomic_load(&fail_publish))
        return ld_err_set(err, LD_EIO, "the registry refused it");
    ld_model_t *m = NULL;
    int rc = ld_model_load(path, &m, err); /* what a daemon would serve */
    ld_model_free(m);
    if (rc)
        return rc;
    pthread_mutex_lock(&log_mu);
    snprintf(last_published, sizeof last_published, "%s=%s", name, path);
    pthread_mutex_unlock(&log_mu);
    atomic_fetch_add(&n_published, 1);
    return 0;
}

static void on_log(void *user, ld_log_level_t level, const char *line)
{
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(log_text);
    snprintf(log_text + n, sizeof log_text - n, "%s\n", line);
    pthread_mutex_unlock(&log_mu);
    if (getenv("LD_TEST_VERBOSE"))
        fprintf(stderr, "[jobs %.3f] %s\n", ld_now(), line);
}

static int log_has(const char *needle)
{
    pthread_mutex_lock(&log_mu);
    int has = strstr(log_text, needle) != NULL;
    pthread_mutex_unlock(&log_mu);
    return has;
}

static void setup(void)
{
    ld_blas_threads(1); /* as the daemon does: one core per job */
    root = tu_mkdtemp();
    snprintf(state_dir, sizeof state_dir, "%s/state", root);
    snprintf(models_dir, sizeof models_dir, "%s/models", root);
    snprintf(data_dir, sizeof data_dir, "%s/data", root);
    ck_assert_int_eq(mkdir(data_dir, 0755), 0);
    atomic_store(&n_published, 0);
    atomic_store(&fail_publish, 0);
    last_published[0] = 0;
    log_text[0] = 0;
}

static void teardown(void)
{
    tu_rmrf(root);
    free(root);
}

static ld_jobs_t *open_engine_caps(int workers, int max_queued, int max_width,
                                   long long max_job_bytes);

static ld_jobs_t *open_engine(int workers, int max_queued)
{
    return open_engine_caps(workers, max_queued, 512, 0);
}

/* With a width cap and max_job_bytes (0 = no cap). */
static ld_jobs_t *open_engine_caps(int workers, int max_queued, int max_width,
                                   long long max_job_bytes)
{
    ld_jobs_config_t c;
    ld_jobs_config_default(&c);
    c.state_dir = state_dir;
    c.models_dir = models_dir;
    c.data_dir = data_dir;
    c.worker_threads = workers;
    c.max_queued_jobs = max_queued;
    c.caps = (ld_jobs_caps_t){.max_epochs = 100000, .max_batch = 1024, .max_hidden_width = max_width,
                              .max_z = 64, .max_limit = 60000, .max_job_bytes = max_job_bytes};
    c.publish = on_publish;
    c.log = on_log;
    ld_jobs_t *j = NULL;
    ld_err_t e = {{0}};
    int rc = ld_jobs_new(&c, &j, &e);
    ck_assert_msg(rc == LD_OK, "ld_jobs_new: %s", e.msg);
    return j;
}

static void submit_ok(ld_jobs_t *j, const char *body, char id[LD_JOB_ID_MAX])
{
    ld_err_t e = {{0}};
    int rc = ld_jobs_submit(j, body, strlen(body), id, NULL, &e);
    ck_assert_msg(rc == LD_OK, "submit %s: %s (%d)", body, e.msg, rc);
}

static ld_job_info_t info_of(ld_jobs_t *j, const char *id)
{
    ld_job_info_t in;
    ld_err_t e;
    ck_assert_int_eq(ld_jobs_info(j, id, &in, &e), LD_OK);
    return in;
}

/* Wait (events, not sleeps) until job id reaches want or a final state, or
 * timeout_s passes; returns the state seen last. */
static ld_job_state_t wait_state(ld_jobs_t *j, const char *id, ld_job_state_t want, double timeout_s)
{
    double end = ld_now() + timeout_s;
    uint64_t seq = 0;
    for (;;) {
        ld_job_info_t in = info_of(j, id);
        if (in.state == want || ld_job_state_is_final(in.state) || ld_now() > end)
            return in.state;
        ck_assert_int_eq(ld_jobs_wait(j, id, in.seq, 200, &seq, NULL), LD_OK);
    }
}

/* Wait until job id is running and has taken at least min_step steps. */
static void wait_steps(ld_jobs_t *j, const char *id, long min_step, double timeout_s)
{
    double end = ld_now() + timeout_s;
    for (;;) {
        ld_job_info_t in = info_of(j, id);
        if (in.state == LD_JOB_RUNNING && in.step >= min_step)
            return;
        ck_assert_msg(!ld_job_state_is_final(in.state), "job %s ended (%s): %s", id,
                      ld_job_state_name(in.state), in.error);
        ck_assert_msg(ld_now() < end, "job %s did not reach step %ld", id, min_step);
        ld_jobs_wait(j, id, in.seq, 200, NULL, NULL);
    }
}

static char *get_json(ld_jobs_t *j, const char *id)
{
    char *s = NULL;
    ld_err_t e;
    ck_assert_int_eq(ld_jobs_get_json(j, id, &s, &e), LD_OK);
    return s;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void job_file(char *out, size_t len, const char *id, const char *name)
{
    snprintf(out, len, "%s/jobs/%s/%s", state_dir, id, name);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s", path);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strdup(buf);
}

static void write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

#define TINY_VAE(name, extra)                                                                    \
    "{\"kind\":\"vae\",\"model\":\"" name "\",\"data\":\"fashion-mnist\",\"limit\":2000,"       \
    "\"arch\":{\"hidden\":[32],\"z\":4},\"train\":{\"epochs\":1,\"batch\":64,\"seed\":3}" extra "}"
/* Never ends by itself: 100000 epochs of one 256-image batch. */
#define LONG_VAE(name)                                                                           \
    "{\"kind\":\"vae\",\"model\":\"" name "\",\"limit\":256,\"arch\":{\"hidden\":[16],\"z\":2},"  \
    "\"train\":{\"epochs\":100000,\"batch\":256},\"checkpoint_every\":20}"

/* ---- spec validation ---- */

typedef struct {
    const char *body;
    int status;
    const char *needle; /* must appear in the message */
} bad_spec_t;

START_TEST(test_invalid_specs)
{
    /* A symlink inside the data folder that points out of it, and a real set. */
    char link[600], outside[600];
    snprintf(outside, sizeof outside, "%s/outside", root);
    ck_assert_int_eq(mkdir(outside, 0755), 0);
    snprintf(link, sizeof link, "%s/evil", data_dir);
    ck_assert_int_eq(symlink(outside, link), 0);
    snprintf(link, sizeof link, "%s/passwd", data_dir);
    ck_assert_int_eq(symlink("/etc/passwd", link), 0);

    static const bad_spec_t cases[] = {
        {"{\"kind\":\"vae\",", LD_EFORMAT, "malformed JSON"},
        {"", LD_EFORMAT, "kind: required"}, /* an empty body is an empty object */
        {"{\"kind\":\"vae\",\"model\":\"m\"} x", LD_EFORMAT, "after the JSON"},
        {"[1,2]", LD_EFORMAT, "expected a JSON object"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"foo\":1}", LD_EFORMAT, "foo: unknown field"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"Kind\":\"vae\"}", LD_EFORMAT, "Kind: unknown field"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"hiden\":[8]}}", LD_EFORMAT,
         "arch.hiden: unknown field"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"epoch\":1}}", LD_EFORMAT,
         "train.epoch: unknown field"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"model\":\"n\"}", LD_EFORMAT, "model: field given twice"},
        {"{\"model\":\"m\"}", LD_EFORMAT, "kind: required"},
        {"{\"kind\":\"vae\"}", LD_EFORMAT, "model: required"},
        {"{\"kind\":1,\"model\":\"m\"}", LD_EFORMAT, "kind: expected a string"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"epochs\":\"3\"}}", LD_EFORMAT,
         "train.epochs: expected an integer"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"batch\":1.5}}", LD_EFORMAT,
         "train.batch: expected an integer"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"lr\":\"fast\"}}", LD_EFORMAT,
         "train.lr: expected a number"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"hidden\":\"128\"}}", LD_EFORMAT,
         "arch.hidden: expected an array"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"hidden\":[8,\"a\"]}}", LD_EFORMAT,
         "arch.hidden[1]: expected an integer"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":[]}", LD_EFORMAT, "arch: expected an object"},
        {"{\"kind\":\"classifier\",\"model\":\"m\"}", LD_EINVAL, "kind:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"lr\":0}}", LD_EINVAL, "train.lr:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"beta1\":1}}", LD_EINVAL, "train.beta1:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"epochs\":0}}", LD_EINVAL,
         "train.epochs: 0 is outside"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"epochs\":1e999}}", LD_EINVAL,
         "train.epochs: must be a finite"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"seed\":-1}}", LD_EINVAL, "train.seed:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"limit\":-1}", LD_EINVAL, "limit: -1 is outside"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"z\":0}}", LD_EINVAL, "arch.z:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"hidden\":[]}}", LD_EINVAL, "arch.hidden:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"hidden\":[1,2,3,4,5,6,7]}}", LD_EINVAL,
         "arch.hidden: 7 layers"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"slope\":1}}", LD_EINVAL, "arch.slope:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"checkpoint_every\":-5}", LD_EINVAL,
         "checkpoint_every:"},
        /* above the caps of open_engine */
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"batch\":2048}}", LD_EINVAL,
         "train.batch: 2048 is above the configured cap of 1024 (max_batch)"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"hidden\":[64,1000]}}", LD_EINVAL,
         "arch.hidden[1]: width 1000 is above the configured cap of 512"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"z\":65}}", LD_EINVAL,
         "arch.z: 65 is above the configured cap of 64 (max_z)"},
        {"{\"kind\":\"gan\",\"model\":\"m\"}", LD_EINVAL, "arch.z: the default 100 is above"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"limit\":70000}", LD_EINVAL, "limit: 70000 is above"},
        /* does not apply to the kind; unknown words */
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"loss\":\"ns\"}}", LD_EINVAL,
         "train.loss: does not apply to kind \"vae\""},
        {"{\"kind\":\"gan\",\"model\":\"m\",\"arch\":{\"z\":8,\"hidden\":[8]}}", LD_EINVAL,
         "arch.hidden: does not apply"},
        {"{\"kind\":\"gan\",\"model\":\"m\",\"arch\":{\"z\":8},\"train\":{\"loss\":\"wgan\"}}",
         LD_EINVAL, "train.loss: \"wgan\" is not ns, minimax, wgan-gp, hinge or lsgan"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"act\":\"swish\"}}", LD_EINVAL, "arch.act:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"arch\":{\"arch\":\"article\"}}", LD_EINVAL,
         "arch.arch:"},
        /* model names */
        {"{\"kind\":\"vae\",\"model\":\"../x\"}", LD_EINVAL, "model: \"../x\" is not a valid name"},
        {"{\"kind\":\"vae\",\"model\":\"a/b\"}", LD_EINVAL, "model:"},
        {"{\"kind\":\"vae\",\"model\":\"\"}", LD_EINVAL, "model:"},
        {"{\"kind\":\"vae\",\"model\":\".hidden\"}", LD_EINVAL, "model:"},
        /* data */
        {"{\"kind\":\"vae\",\"model\":\"m\",\"data\":\"../x\"}", LD_EINVAL, "data: \"../x\" is not allowed"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"data\":\"/etc/passwd\"}", LD_EINVAL,
         "data: \"/etc/passwd\" is not allowed"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"data\":\"..\"}", LD_EINVAL, "data:"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"data\":\"nope\"}", LD_EINVAL,
         "data: no data set named \"nope\""},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"data\":\"evil\"}", LD_EINVAL,
         "data: \"evil\" resolves outside the data folder"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"data\":\"passwd\"}", LD_EINVAL,
         "data: \"passwd\" resolves outside the data folder"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"data\":7}", LD_EFORMAT, "data: expected a string"},
        /* NUL inside a string is refused, never read as the text before it */
        {"{\"kind\":\"vae\",\"model\":\"nul\\u0000../../../tmp/x\"}", LD_EINVAL,
         "model: a string may not contain NUL"},
        {"{\"kind\":\"vae\\u0000x\",\"model\":\"m\"}", LD_EINVAL, "kind: a string may not"},
        {"{\"kind\":\"gan\",\"model\":\"m\",\"arch\":{\"z\":16},\"train\":{\"loss\":\"ns\\u0000\"}}", LD_EINVAL,
         "train.loss: a string may not contain NUL"},
        /* numbers follow JSON's grammar, as on the /v1 routes */
        {"{\"kind\":\"vae\",\"model\":\"m\",\"limit\":0100}", LD_EFORMAT, "malformed JSON"},
        /* inversion jobs come only from POST /v1/models/{gan}/invert */
        {"{\"kind\":\"invert\",\"model\":\"g\",\"file\":\"g.safetensors\",\"images\":5,"
         "\"steps\":10,\"restarts\":1,\"seed\":1,\"lr\":0.05,\"z_penalty\":0}",
         LD_EINVAL, "kind: \"invert\" jobs come from"},
        {"{\"kind\":\"invert\",\"model\":\"g\",\"images\":5}", LD_EFORMAT, "needs model, file"},
        {"{\"kind\":\"invert\",\"model\":\"g\",\"file\":\"../g\",\"images\":5,\"steps\":10,"
         "\"restarts\":1,\"seed\":1,\"lr\":0.05,\"z_penalty\":0}", LD_EFORMAT, "needs model, file"},
    };
    ld_jobs_t *j = open_engine(1, 4);
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        char id[LD_JOB_ID_MAX] = "unset";
        ld_err_t e = {{0}};
        int rc = ld_jobs_submit(j, cases[i].body, strlen(cases[i].body), id, NULL, &e);
        ck_assert_msg(rc == cases[i].status, "%s: status %d (%s), want %d", cases[i].body, rc,
                      e.msg, cases[i].status);
        ck_assert_msg(strstr(e.msg, cases[i].needle), "%s: message \"%s\" lacks \"%s\"",
                      cases[i].body, e.msg, cases[i].needle);
        ck_assert_str_eq(id, "");
    }
    /* Nothing was queued. */
    ld_err_t e;
    char *list = NULL;
    ck_assert_int_eq(ld_jobs_list_json(j, NULL, &list, &e), LD_OK);
    ck_assert_str_eq(list, "{\"jobs\":[],\"next_cursor\":null}");
    free(list);
    /* Not NUL-terminated: only len bytes are read. */
    const char body[] = "{\"kind\":\"vae\",\"model\":\"m\",\"limit\":100}XXXX";
    char id[LD_JOB_ID_MAX];
    ck_assert_int_eq(ld_jobs_submit(j, body, sizeof body - 1, id, NULL, &e), LD_EFORMAT);
    ck_assert_int_eq(ld_jobs_submit(j, body, sizeof body - 5, id, NULL, &e), LD_OK);
    ld_jobs_free(j);
}
END_TEST

/* The GAN's default loss is wgan-gp with its optimiser settings; "ns" brings
 * the earlier default back (Adam 2e-4, betas (0.5, 0.999), n_critic 1), as
 * do the article's and the layer-list nets; explicit fields still win. */
START_TEST(test_spec_gan_recipes)
{
    static const struct {
        const char *spec;
        ld_gan_loss_t loss;
        float dropout, lr, beta1;
        int n_critic;
    } cases[] = {
        {"{\"kind\":\"gan\",\"model\":\"g\"}", LD_GAN_LOSS_WGAN_GP, 0.3f, 1e-4f, 0.0f, 5},
        {"{\"kind\":\"gan\",\"model\":\"g\",\"train\":{\"loss\":\"ns\"}}", LD_GAN_LOSS_NS,
         0.3f, 2e-4f, 0.5f, 1},
        {"{\"kind\":\"gan\",\"model\":\"g\",\"arch\":{\"dropout\":0.1},"
         "\"train\":{\"loss\":\"ns\",\"lr\":0.001}}",
         LD_GAN_LOSS_NS, 0.1f, 1e-3f, 0.5f, 1},
        {"{\"kind\":\"gan\",\"model\":\"g\",\"train\":{\"beta1\":0.5}}", LD_GAN_LOSS_WGAN_GP,
         0.3f, 1e-4f, 0.5f, 5},
        {"{\"kind\":\"gan\",\"model\":\"g\",\"arch\":{\"arch\":\"article\"},"
         "\"train\":{\"loss\":\"ns\"}}",
         LD_GAN_LOSS_NS, 0.0f, 2e-4f, 0.5f, 1},
        {"{\"kind\":\"gan\",\"model\":\"g\",\"arch\":{\"arch\":\"dcgan\"}}", LD_GAN_LOSS_NS,
         0.0f, 2e-4f, 0.5f, 1},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        ld_jobspec_t s;
        ld_err_t e;
        ck_assert_msg(ld_jobspec_parse(cases[i].spec, strlen(cases[i].spec), NULL, 500, &s, &e) == 0,
                      "%s", e.msg);
        ck_assert_msg(s.train.gan_loss == cases[i].loss && s.arch.dropout == cases[i].dropout &&
                          s.train.adam.lr == cases[i].lr && s.train.adam_d.lr == cases[i].lr &&
                          s.train.adam.beta1 == cases[i].beta1 &&
                          s.train.n_critic == cases[i].n_critic,
                      "%s: loss %s dropout %g lr %g beta1 %g n_critic %d", cases[i].spec,
                      ld_gan_loss_name(s.train.gan_loss), (double)s.arch.dropout,
                      (double)s.train.adam.lr, (double)s.train.adam.beta1, s.train.n_critic);
    }
}
END_TEST

START_TEST(test_spec_normal_form)
{
    const char *specs[] = {
        "{\"kind\":\"vae\",\"model\":\"v\",\"arch\":{\"hidden\":[128,64]},"
        "\"train\":{\"lr\":0.001,\"kl_beta\":0.5}}",
        "{\"kind\":\"gan\",\"model\":\"g\",\"arch\":{\"arch\":\"article\",\"z\":32},"
        "\"train\":{\"lr\":2e-4,\"lr_d\":1e-4,\"loss\":\"minimax\",\"seed\":9007199254740991}}",
        "{\"kind\":\"invert\",\"model\":\"g\",\"file\":\"g.safetensors\",\"images\":5,"
        "\"steps\":10,\"restarts\":2,\"seed\":9007199254740991,\"lr\":0.05,\"z_penalty\":0.5}",
        "{\"kind\":\"gan\",\"model\":\"d\",\"arch\":{\"arch\":\"dcgan\"}}",
        "{\"kind\":\"vae\",\"model\":\"c\",\"arch\":{\"arch\":\"conv\",\"z\":16,"
        "\"dec_hidden\":[48,48,24]}}",
        "{\"kind\":\"gan\",\"model\":\"w\",\"train\":{\"loss\":\"wgan-gp\",\"n_critic\":3}}",
    };
    static const ld_netarch_t nets[] = {LD_NETS_MLP, LD_NETS_MLP, LD_NETS_MLP, LD_NETS_DCGAN,
                                         LD_NETS_CONV, LD_NETS_MLP};
    for (size_t i = 0; i < LD_ARRAY_LEN(specs); i++) {
        ld_jobspec_t a, b;
        ld_err_t e;
        ck_assert_msg(ld_jobspec_parse(specs[i], strlen(specs[i]), NULL, 500, &a, &e) == 0, "%s",
                      e.msg);
        char *n1 = ld_jobspec_to_json(&a);
        ck_assert_ptr_nonnull(n1);
        ck_assert_msg(ld_jobspec_parse(n1, strlen(n1), NULL, 0, &b, &e) == 0, "%s", e.msg);
        char *n2 = ld_jobspec_to_json(&b);
        ck_assert_str_eq(n1, n2);
        ck_assert_int_eq(a.arch.net, nets[i]);
        if (a.train.gan_loss == LD_GAN_LOSS_WGAN_GP) /* its defaults, and n_critic kept */
            ck_assert_msg(strstr(n1, "\"lr\":0.0001,") && strstr(n1, "\"beta1\":0,") &&
                              strstr(n1, "\"n_critic\":3,\"gp\":"), "%s", n1);
        if (nets[i] != LD_NETS_MLP) { /* the layer-list nets are named, not listed, */
            char want[64];                /* but for the conv VAE decoder's channels */
            snprintf(want, sizeof want, "\"arch\":{\"arch\":\"%s\",%s\"z\":",
                     ld_netarch_name(nets[i]),
                     nets[i] == LD_NETS_CONV ? "\"dec_hidden\":[48,48,24]," : "");
            ck_assert_msg(strstr(n1, want), "%s", n1);
            ck_assert_msg(!strstr(n1, "\"hidden\"") && (nets[i] == LD_NETS_CONV ||
                                                       !strstr(n1, "hidden")), "%s", n1);
            ld_job_bytes_t jb; /* admission counts the nets that will run */
            ld_jobspec_bytes(&a.arch, &a.train, &jb);
            if (nets[i] == LD_NETS_DCGAN)
                ck_assert_msg(jb.params == 4.0 * 904834, "%g bytes of parameters", jb.params);
            if (nets[i] == LD_NETS_CONV) /* the conv VAE's recipe, not the MLP VAE's */
                ck_assert_msg(strstr(n1, "\"batch\":64,\"lr\":0.003,") &&
                                  strstr(n1, "\"lr_schedule\":\"cosine\""), "%s", n1);
            ck_assert(jb.activations > 4.0 * a.train.batch * 6272);
        } else if (i == 0) {
            ck_assert_ptr_nonnull(strstr(n1, "\"hidden\":[128,64],\"dec_hidden\":[64,128]"));
            ck_assert_ptr_nonnull(strstr(n1, "\"lr\":0.001,"));
            ck_assert_ptr_nonnull(strstr(n1, "\"kl_beta\":0.5"));
            ck_assert_ptr_nonnull(strstr(n1, "\"checkpoint_every\":500"));
            ck_assert_ptr_nonnull(strstr(n1, "\"data\":\"fashion-mnist\",\"limit\":0"));
        } else if (i == 2) {
            ck_assert_str_eq(n1, specs[2]);
            ck_assert(a.invert && a.inv.images == 5 && a.inv.opts.restarts == 2 &&
                      a.inv.opts.seed == 9007199254740991ULL && a.inv.opts.z_penalty == 0.5f);
        } else if (i == 1) {
            ck_assert_ptr_nonnull(strstr(n1, "\"g_hidden\":[128,128],\"d_hidden\":[128,128]"));
            ck_assert_ptr_nonnull(strstr(n1, "\"seed\":9007199254740991"));
            ck_assert_ptr_nonnull(strstr(n1, "\"real_label\":1")); /* the article's recipe */
            ck_assert_int_eq(a.train.gan_loss, LD_GAN_LOSS_MINIMAX);
            ck_assert(a.train.adam_d.lr == 1e-4f && a.train.adam.lr == 2e-4f);
        }
        free(n1);
        free(n2);
    }
}
END_TEST

/* ---- running jobs ---- */

START_TEST(test_job_succeeds_and_survives_restart)
{
    ld_jobs_t *j = open_engine(1, 4);
    char id[LD_JOB_ID_MAX];
    submit_ok(j, TINY_VAE("tiny", ",\"checkpoint_every\":10"), id);
    ck_assert_str_eq(id, "j-000001");
    ck_assert_int_eq(wait_state(j, id, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);

    char path[1024];
    snprintf(path, sizeof path, "%s/tiny.safetensors", models_dir);
    ck_assert_int_eq(atomic_load(&n_published), 1);
    char want[1100];
    snprintf(want, sizeof want, "tiny=%s", path);
    ck_assert_str_eq(last_published, want);
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_load(path, &m, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(m->arch.kind, LD_KIND_VAE);
    ck_assert_int_eq(m->arch.z_dim, 4);
    ck_assert_str_eq(ld_record_get(&m->record, "job"), id);
    ck_assert_str_eq(ld_record_get(&m->record, "examples"), "2000");
    ld_model_free(m);

    char *js = get_json(j, id);
    ck_assert_ptr_nonnull(strstr(js, "\"state\":\"succeeded\""));
    ck_assert_ptr_nonnull(strstr(js, "\"progress\":1,"));
    ck_assert_ptr_nonnull(strstr(js, "\"step\":32,\"steps_total\":32"));
    ck_assert_ptr_nonnull(strstr(js, "\"loss_history\":[{\"step\":1,\"loss\":"));
    ck_assert_ptr_nonnull(strstr(js, "\"rec\":"));
    ck_assert_ptr_nonnull(strstr(js, "\"kl\":"));
    ck_assert_ptr_nonnull(strstr(js, "\"model_file\":\"tiny.safetensors\""));
    ck_assert_ptr_nonnull(strstr(js, "\"error\":null"));
    ck_assert_ptr_nonnull(strstr(js, "\"spec\":{\"kind\":\"vae\",\"model\":\"tiny\""));
    ld_jobs_free(j); /* joins the worker, which finishes its bookkeeping after the event */
    ck_assert(log_has("job j-000001 queued") && log_has("job j-000001 running") &&
              log_has("job j-000001 succeeded"));
    char state[1024];
    job_file(state, sizeof state, id, "state.safetensors");
    ck_assert_msg(!file_exists(state), "the training state is removed after success");

    /* Restart: the record is still there, unchanged, and nothing runs again. */
    j = open_engine(1, 4);
    char *js2 = get_json(j, id);
    char *h1 = strstr(js, "\"loss_history\""), *h2 = strstr(js2, "\"loss_history\"");
    ck_assert(h1 && h2);
    *strstr(h1, "\"created\"") = 0;
    *strstr(h2, "\"created\"") = 0;
    ck_assert_str_eq(h1, h2);
    ck_assert_ptr_nonnull(strstr(js2, "\"state\":\"succeeded\""));
    free(js);
    free(js2);
    char id2[LD_JOB_ID_MAX];
    submit_ok(j, TINY_VAE("tiny2", ""), id2);
    ck_assert_str_eq(id2, "j-000002"); /* ids go on across restarts */
    char *list = NULL;
    ck_assert_int_eq(ld_jobs_list_json(j, NULL, &list, &e), LD_OK);
    char *p2 = strstr(list, "j-000002"), *p1 = strstr(list, "j-000001");
    ck_assert_msg(p1 && p2 && p2 < p1, "newest first: %s", list);
    ck_assert_ptr_null(strstr(list, "loss_history"));
    free(list);
    ck_assert_int_eq(wait_state(j, id2, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    ck_assert_int_eq(atomic_load(&n_published), 2);
    ld_jobs_free(j);
}
END_TEST

START_TEST(test_cancel_queued_and_running)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX];
    submit_ok(j, LONG_VAE("long"), a);
    submit_ok(j, TINY_VAE("never", ""), b);
    wait_steps(j, a, 21, 60); /* past its first checkpoint (every 20) */

    ld_job_state_t s;
    ld_err_t e;
    ck_assert_int_eq(ld_jobs_cancel(j, b, &s, &e), LD_OK);
    ck_assert_int_eq(s, LD_JOB_CANCELLED); /* queued: at once */

    double t0 = ld_now();
    ck_assert_int_eq(ld_jobs_cancel(j, a, &s, &e), LD_OK);
    ck_assert_int_eq(s, LD_JOB_RUNNING); /* asked to stop */
    ck_assert_int_eq(wait_state(j, a, LD_JOB_CANCELLED, 30), LD_JOB_CANCELLED);
    double took = ld_now() - t0;
    ck_assert_msg(took < 5, "a running job took %.2f s to stop", took);

    char path[1024];
    job_file(path, sizeof path, a, "state.safetensors");
    ck_assert_msg(file_exists(path), "a cancelled job keeps its checkpoint");
    ld_job_info_t in = info_of(j, a);
    ck_assert(in.step > 0 && in.cancel_requested);
    char *js = get_json(j, b);
    ck_assert_ptr_nonnull(strstr(js, "\"started\":null"));
    ck_assert_ptr_nonnull(strstr(js, "\"state\":\"cancelled\""));
    free(js);
    /* Cancelling again changes nothing; unknown ids are 404. */
    ck_assert_int_eq(ld_jobs_cancel(j, a, &s, &e), LD_OK);
    ck_assert_int_eq(s, LD_JOB_CANCELLED);
    ck_assert_int_eq(ld_jobs_cancel(j, "j-999999", &s, &e), LD_ENOTFOUND);
    ck_assert_int_eq(ld_jobs_info(j, "../etc", &in, &e), LD_ENOTFOUND);
    ck_assert_int_eq(atomic_load(&n_published), 0);
    ld_jobs_free(j);

    /* Cancelled stays cancelled after a restart: nothing resumes. */
    j = open_engine(1, 4);
    ck_assert_int_eq(info_of(j, a).state, LD_JOB_CANCELLED);
    ck_assert_int_eq(info_of(j, b).state, LD_JOB_CANCELLED);
    ld_jobs_free(j);
}
END_TEST

START_TEST(test_queue_full)
{
    ld_jobs_t *j = open_engine(1, 2);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX], c[LD_JOB_ID_MAX], d[LD_JOB_ID_MAX];
    submit_ok(j, LONG_VAE("a"), a);
    wait_steps(j, a, 2, 60); /* running: the queue is empty again */
    submit_ok(j, TINY_VAE("b", ""), b);
    submit_ok(j, TINY_VAE("c", ""), c);
    ld_err_t e = {{0}};
    int retry = -1;
    const char *body = TINY_VAE("d", "");
    ck_assert_int_eq(ld_jobs_submit(j, body, strlen(body), d, &retry, &e), LD_EBUSY);
    ck_assert_msg(strstr(e.msg, "queue is full"), "%s", e.msg);
    ck_assert(retry >= 1 && retry <= 3600);
    ck_assert_str_eq(d, "");
    ld_jobs_stats_t st;
    ld_jobs_stats(j, &st);
    ck_assert_int_eq(st.queue_length, 2);
    ck_assert_int_eq(st.by_state[LD_JOB_QUEUED], 2);
    ck_assert_int_eq(st.by_state[LD_JOB_RUNNING], 1);
    ck_assert(st.steps_total >= 2);
    /* A freed slot takes a submission again. */
    ld_job_state_t s;
    ck_assert_int_eq(ld_jobs_cancel(j, c, &s, &e), LD_OK);
    submit_ok(j, body, d);
    ld_jobs_free(j);
}
END_TEST

START_TEST(test_shutdown_interrupts_then_resumes)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX];
    submit_ok(j, LONG_VAE("long"), a);
    submit_ok(j, TINY_VAE("later", ""), b);
    wait_steps(j, a, 3, 60);
    ld_jobs_shutdown(j);
    ck_assert_int_eq(info_of(j, a).state, LD_JOB_INTERRUPTED);
    ck_assert_int_eq(info_of(j, b).state, LD_JOB_QUEUED);
    long stopped_at = info_of(j, a).step;
    /* After shutdown: queries work, submit is refused, events are final. */
    ld_err_t e;
    char id[LD_JOB_ID_MAX];
    const char *body = TINY_VAE("x", "");
    ck_assert_int_eq(ld_jobs_submit(j, body, strlen(body), id, NULL, &e), LD_EBUSY);
    uint64_t seq = 0;
    char *js = NULL;
    int final = 0;
    ck_assert_int_eq(ld_jobs_event_json(j, b, &seq, &js, &final, &e), LD_OK);
    ck_assert(js && final);
    free(js);
    ld_jobs_free(j);

    char path[1024];
    job_file(path, sizeof path, a, "job.json");
    js = slurp(path);
    ck_assert_ptr_nonnull(strstr(js, "\"state\":\"interrupted\""));
    free(js);
    job_file(path, sizeof path, a, "state.safetensors");
    ck_assert(file_exists(path));

    j = open_engine(1, 4);
    wait_steps(j, a, stopped_at + 1, 60);
    ld_job_info_t in = info_of(j, a);
    ck_assert_msg(in.resumed_from_step == stopped_at, "resumed from %ld, stopped at %ld",
                  in.resumed_from_step, stopped_at);
    ck_assert(log_has("was interrupted: queued again"));
    ck_assert_int_eq(info_of(j, b).state, LD_JOB_QUEUED); /* still behind a */
    ld_job_state_t s;
    ck_assert_int_eq(ld_jobs_cancel(j, a, &s, &e), LD_OK);
    ck_assert_int_eq(wait_state(j, b, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    ld_jobs_free(j);
}
END_TEST

/* The job the kill -9 test interrupts, and its uninterrupted twin: SGD with
 * Nesterov momentum on a cosine rate, so the momentum buffer and the
 * schedule's position must come back from the checkpoint too. */
#define RESUME_VAE(name)                                                                         \
    "{\"kind\":\"vae\",\"model\":\"" name "\",\"limit\":2000,\"arch\":{\"hidden\":[64],\"z\":4}," \
    "\"train\":{\"epochs\":10,\"batch\":50,\"seed\":11,\"optimizer\":\"sgd\",\"lr\":0.002,"      \
    "\"momentum\":0.9,\"nesterov\":true,\"lr_schedule\":\"cosine\"},\"checkpoint_every\":50}"

START_TEST(test_kill9_resumes_bit_exact)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) { /* the daemon to be killed */
        close(pfd[0]);
        ld_jobs_config_t c;
        ld_jobs_config_default(&c);
        c.state_dir = state_dir;
        c.models_dir = models_dir;
        ld_jobs_t *j = NULL;
        char id[LD_JOB_ID_MAX] = "";
        const char *body = RESUME_VAE("resumed");
        if (ld_jobs_new(&c, &j, NULL) || ld_jobs_submit(j, body, strlen(body), id, NULL, NULL))
            _exit(1);
        if (write(pfd[1], id, sizeof id) != (ssize_t)sizeof id)
            _exit(1);
        for (;;)
            pause();
    }
    close(pfd[1]);
    char id[LD_JOB_ID_MAX];
    ck_assert_int_eq(read(pfd[0], id, sizeof id), (ssize_t)sizeof id);
    close(pfd[0]);
    char state[1024], rec[1024];
    job_file(state, sizeof state, id, "state.safetensors");
    job_file(rec, sizeof rec, id, "job.json");
    double end = ld_now() + 60;
    while (!file_exists(state) && ld_now() < end && waitpid(pid, NULL, WNOHANG) == 0)
        usleep(2000);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status), "the child ended before it was killed");
    ck_assert_msg(file_exists(state), "no checkpoint appeared");
    char *before = slurp(rec);
    ck_assert_ptr_nonnull(strstr(before, "\"state\":\"running\""));
    free(before);

    ld_jobs_t *j = open_engine(2, 4);
    char ref[LD_JOB_ID_MAX];
    submit_ok(j, RESUME_VAE("reference"), ref);
    ck_assert_int_eq(wait_state(j, id, LD_JOB_SUCCEEDED, 300), LD_JOB_SUCCEEDED);
    ck_assert_int_eq(wait_state(j, ref, LD_JOB_SUCCEEDED, 300), LD_JOB_SUCCEEDED);
    ld_job_info_t in = info_of(j, id);
    ck_assert_msg(in.resumed_from_step > 0, "resumed_from_step %ld", in.resumed_from_step);
    char *js = get_json(j, id);
    char want[64];
    snprintf(want, sizeof want, "\"resumed_from_step\":%ld", in.resumed_from_step);
    ck_assert_ptr_nonnull(strstr(js, want));
    ck_assert_ptr_nonnull(strstr(js, "\"note\":\"resumed from its checkpoint at step"));
    free(js);
    ck_assert_int_eq(info_of(j, ref).resumed_from_step, -1);
    ld_jobs_free(j);

    /* Same spec, same seed stream: the resumed run ends with the very same weights. */
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/resumed.safetensors", models_dir);
    snprintf(p2, sizeof p2, "%s/reference.safetensors", models_dir);
    ld_model_t *m1 = NULL, *m2 = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_load(p1, &m1, &e) == 0, "%s", e.msg);
    ck_assert_msg(ld_model_load(p2, &m2, &e) == 0, "%s", e.msg);
    ck_assert_uint_eq(m1->n_params, m2->n_params);
    ck_assert_msg(memcmp(m1->params, m2->params, m1->n_params * sizeof(float)) == 0,
                  "resumed weights differ from the uninterrupted run");
    ld_model_free(m1);
    ld_model_free(m2);
}
END_TEST

START_TEST(test_restart_without_checkpoint)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX];
    submit_ok(j, LONG_VAE("long"), a);
    wait_steps(j, a, 2, 60);
    ld_jobs_free(j);
    char path[1024];
    job_file(path, sizeof path, a, "state.safetensors");
    ck_assert_int_eq(unlink(path), 0); /* as if killed before its first checkpoint */
    j = open_engine(1, 4);
    double end = ld_now() + 60;
    ld_job_info_t in;
    while ((in = info_of(j, a)).resumed_from_step < 0 && ld_now() < end)
        ld_jobs_wait(j, a, in.seq, 200, NULL, NULL);
    ck_assert_int_eq(in.resumed_from_step, 0);
    ck_assert_int_eq(in.state, LD_JOB_RUNNING);
    char *js = get_json(j, a);
    ck_assert_msg(strstr(js, "\"note\":\"restarted from step 0"), "%s", js);
    free(js);
    ld_job_state_t s;
    ck_assert_int_eq(ld_jobs_cancel(j, a, &s, NULL), LD_OK);
    ld_jobs_free(j);
}
END_TEST

START_TEST(test_publish_failure_fails_the_job)
{
    atomic_store(&fail_publish, 1);
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX];
    submit_ok(j, TINY_VAE("unserved", ""), a);
    ck_assert_int_eq(wait_state(j, a, LD_JOB_FAILED, 120), LD_JOB_FAILED);
    ld_job_info_t in = info_of(j, a);
    ck_assert_msg(strstr(in.error, "unserved.safetensors but could not be served: the registry "
                                   "refused it"),
                  "%s", in.error);
    char path[1024];
    snprintf(path, sizeof path, "%s/unserved.safetensors", models_dir);
    ck_assert(file_exists(path));
    ld_jobs_free(j);
}
END_TEST

START_TEST(test_corrupt_checkpoint_and_record)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX];
    submit_ok(j, LONG_VAE("long"), a);
    wait_steps(j, a, 2, 60);
    ld_jobs_free(j); /* interrupted, state saved */

    char path[1024];
    job_file(path, sizeof path, a, "state.safetensors");
    write_file(path, "\x10\0\0\0\0\0\0\0{\"oops\":", 16);
    /* A record that is not JSON, and one from a crash mid-submit (no record). */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/jobs/j-000099", state_dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    job_file(path, sizeof path, "j-000099", "job.json");
    write_file(path, "{\"id\":\"j-000099\",\"sta", 21);
    job_file(path, sizeof path, "j-000099", "job.json.tmp.123.0");
    write_file(path, "half", 4);
    snprintf(dir, sizeof dir, "%s/jobs/j-000100", state_dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);

    j = open_engine(1, 4);
    ld_job_info_t in = info_of(j, a);
    ck_assert_int_eq(in.state, LD_JOB_FAILED);
    ck_assert_msg(strstr(in.error, "checkpoint is unusable"), "%s", in.error);
    ck_assert(log_has("skipped") && log_has("j-000099"));
    ck_assert_msg(!file_exists(path), "stale temporary files are removed");
    ld_err_t e;
    ck_assert_int_eq(ld_jobs_info(j, "j-000099", &in, &e), LD_ENOTFOUND);
    char id[LD_JOB_ID_MAX];
    submit_ok(j, TINY_VAE("after", ""), id);
    ck_assert_str_eq(id, "j-000101"); /* never reuses a folder's id */
    ld_jobs_free(j);
    job_file(path, sizeof path, a, "job.json");
    char *js = slurp(path);
    ck_assert_ptr_nonnull(strstr(js, "\"state\":\"failed\""));
    free(js);
}
END_TEST

START_TEST(test_two_jobs_at_once)
{
    ld_jobs_t *j = open_engine(2, 4);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX];
    submit_ok(j, "{\"kind\":\"vae\",\"model\":\"v\",\"limit\":2000,\"arch\":{\"hidden\":[32],\"z\":4},"
                 "\"train\":{\"epochs\":3,\"batch\":64}}",
              a);
    submit_ok(j, "{\"kind\":\"gan\",\"model\":\"g\",\"limit\":2000,"
                 "\"arch\":{\"g_hidden\":[32],\"d_hidden\":[32],\"z\":8},"
                 "\"train\":{\"epochs\":3,\"batch\":64,\"loss\":\"ns\"}}",
              b);
    int both = 0;
    double end = ld_now() + 300;
    for (;;) {
        ld_job_info_t ia = info_of(j, a), ib = info_of(j, b);
        both |= ia.state == LD_JOB_RUNNING && ib.state == LD_JOB_RUNNING && ia.step > 0 &&
                ib.step > 0;
        if (ld_job_state_is_final(ia.state) && ld_job_state_is_final(ib.state))
            break;
        ck_assert(ld_now() < end);
        ld_jobs_wait(j, ld_job_state_is_final(ia.state) ? b : a, 0, 20, NULL, NULL);
        usleep(1000);
    }
    ck_assert_msg(both, "the two jobs never trained at the same time");
    ck_assert_int_eq(info_of(j, a).state, LD_JOB_SUCCEEDED);
    ck_assert_int_eq(info_of(j, b).state, LD_JOB_SUCCEEDED);
    ck_assert_int_eq(atomic_load(&n_published), 2);
    char *js = get_json(j, b);
    ck_assert_ptr_nonnull(strstr(js, "\"loss_history\":[{\"step\":"));
    ck_assert_ptr_nonnull(strstr(js, "\"d_loss\":"));
    ck_assert_ptr_nonnull(strstr(js, "\"g_loss\":"));
    free(js);
    ld_jobs_free(j);
}
END_TEST

/* ---- named data sets ---- */

static void write_be32(FILE *f, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    ck_assert_uint_eq(fwrite(b, 1, 4, f), 4);
}

START_TEST(test_named_data_sets)
{
    /* An IDX pair folder of 100 random 28x28 images. */
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/mini", data_dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", dir);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    write_be32(f, 0x803);
    write_be32(f, 100);
    write_be32(f, 28);
    write_be32(f, 28);
    for (int i = 0; i < 100 * 784; i++)
        fputc((i * 7919) & 255, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte", dir);
    f = fopen(path, "wb");
    write_be32(f, 0x801);
    write_be32(f, 100);
    for (int i = 0; i < 100; i++)
        fputc(i % 10, f);
    fclose(f);
    /* A folder of 40 PNGs of 12x10. */
    snprintf(dir, sizeof dir, "%s/pngs", data_dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    float px[120];
    for (int i = 0; i < 40; i++) {
        for (int k = 0; k < 120; k++)
            px[k] = (float)((i + k) % 17) / 16.0f;
        uint8_t *png;
        size_t len;
        ld_err_t e;
        ck_assert_int_eq(ld_png_grid(px, 1, 12, 10, 1, 0, &png, &len, &e), 0);
        snprintf(path, sizeof path, "%s/img%02d.png", dir, i);
        write_file(path, png, len);
        free(png);
    }
    ld_jobs_t *j = open_engine(2, 4);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX];
    submit_ok(j, "{\"kind\":\"vae\",\"model\":\"mini\",\"data\":\"mini\",\"arch\":{\"hidden\":[8],"
                 "\"z\":2},\"train\":{\"epochs\":2,\"batch\":32}}",
              a);
    submit_ok(j, "{\"kind\":\"gan\",\"model\":\"pngs\",\"data\":\"pngs\",\"arch\":{\"g_hidden\":[8],"
                 "\"d_hidden\":[8],\"z\":2},\"train\":{\"epochs\":2,\"batch\":16}}",
              b);
    ck_assert_int_eq(wait_state(j, a, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    ck_assert_int_eq(wait_state(j, b, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    ck_assert_int_eq(info_of(j, a).steps_total, 8);  /* 2 x ceil(100/32) */
    ck_assert_int_eq(info_of(j, b).steps_total, 6);  /* 2 x ceil(40/16) */
    snprintf(path, sizeof path, "%s/pngs.safetensors", models_dir);
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_load(path, &m, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(m->arch.img_h, 12); /* the image shape comes from the data */
    ck_assert_int_eq(m->arch.img_w, 10);
    ld_model_free(m);

    /* A data set that cannot be loaded fails the job with the loader's reason. */
    snprintf(dir, sizeof dir, "%s/empty", data_dir);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    char c[LD_JOB_ID_MAX];
    submit_ok(j, "{\"kind\":\"vae\",\"model\":\"e\",\"data\":\"empty\"}", c);
    ck_assert_int_eq(wait_state(j, c, LD_JOB_FAILED, 60), LD_JOB_FAILED);
    ck_assert_msg(strstr(info_of(j, c).error, "no *.png files"), "%s", info_of(j, c).error);
    ld_jobs_free(j);
}
END_TEST

/* ---- events and metrics ---- */

static pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cv = PTHREAD_COND_INITIALIZER;
static int wakes;

static void on_wake(void *user)
{
    pthread_mutex_lock(&wake_mu);
    wakes++;
    pthread_cond_signal(&wake_cv);
    pthread_mutex_unlock(&wake_mu);
}

START_TEST(test_events_and_metrics)
{
    ld_jobs_t *j = open_engine(1, 4);
    char id[LD_JOB_ID_MAX];
    submit_ok(j, "{\"kind\":\"vae\",\"model\":\"ev\",\"limit\":2000,\"arch\":{\"hidden\":[32],"
                 "\"z\":4},\"train\":{\"epochs\":4,\"batch\":32}}",
              id);
    ld_jobs_sub_t *sub = NULL, *sub2 = NULL, *none = NULL;
    ld_err_t e;
    ck_assert_int_eq(ld_jobs_subscribe(j, id, on_wake, NULL, &sub, &e), LD_OK);
    ck_assert_int_eq(ld_jobs_subscribe(j, "j-424242", on_wake, NULL, &none, &e), LD_ENOTFOUND);
    ck_assert_ptr_null(none);
    ck_assert_int_eq(ld_jobs_subscribe(j, id, on_wake, NULL, &sub2, &e), LD_OK);

    /* The loop an SSE stream runs: on each wake, take what is new. */
    uint64_t seq = 0, last = 0;
    int events = 0, running_events = 0, final = 0, seen = 0;
    char *js = NULL;
    double end = ld_now() + 120;
    while (!final) {
        ck_assert_int_eq(ld_jobs_event_json(j, id, &seq, &js, &final, &e), LD_OK);
        if (js) {
            ck_assert(seq > last);
            last = seq;
            events++;
            running_events += strstr(js, "\"state\":\"running\"") != NULL;
            if (final)
                ck_assert_msg(strstr(js, "\"state\":\"succeeded\""), "%s", js);
            free(js);
            continue;
        }
        ck_assert(!final && ld_now() < end);
        pthread_mutex_lock(&wake_mu);
        if (wakes == seen) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 2;
            pthread_cond_timedwait(&wake_cv, &wake_mu, &ts);
        }
        seen = wakes;
        pthread_mutex_unlock(&wake_mu);
    }
    ck_assert_msg(events >= 3 && running_events >= 1, "%d events, %d while running", events,
                  running_events);
    /* Nothing after the final event. */
    ck_assert_int_eq(ld_jobs_event_json(j, id, &seq, &js, &final, &e), LD_OK);
    ck_assert(js == NULL && final);
    ld_jobs_unsubscribe(j, sub);
    ld_jobs_unsubscribe(j, NULL);

    char *text = ld_jobs_metrics_text(j);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(strstr(text, "# TYPE latentd_jobs gauge\n"));
    ck_assert_ptr_nonnull(strstr(text, "latentd_jobs{state=\"succeeded\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "latentd_jobs_queue_length 0\n"));
    ck_assert_ptr_nonnull(strstr(text, "# TYPE latentd_job_samples_per_second gauge\n"));
    ck_assert_ptr_nonnull(strstr(text, "latentd_training_steps_total 252\n")); /* 4 x 63 */
    free(text);
    ld_jobs_unsubscribe(j, sub2);
    ld_jobs_free(j);
}
END_TEST

/* 320 steps (257..399 lost the start of loss_history: a stride of 1 kept the
 * last 256 points only). */
#define HIST_VAE(name)                                                                           \
    "{\"kind\":\"vae\",\"model\":\"" name "\",\"limit\":256,\"arch\":{\"hidden\":[16],\"z\":2},"  \
    "\"train\":{\"epochs\":40,\"batch\":32}}"

/* Submit body, wait for success: its JSON (malloc'd), its id in id. */
static char *run_to_success(ld_jobs_t *j, const char *body, char id[LD_JOB_ID_MAX])
{
    submit_ok(j, body, id);
    ck_assert_int_eq(wait_state(j, id, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    return get_json(j, id);
}

START_TEST(test_loss_history_keeps_the_start)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX];
    char *js = run_to_success(j, HIST_VAE("hist"), a);
    cJSON *o = cJSON_Parse(js);
    free(js);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "loss_history");
    int n = cJSON_GetArraySize(h);
    long first = (long)cJSON_GetObjectItemCaseSensitive(h->child, "step")->valuedouble;
    long last = (long)cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(h, n - 1), "step")
                    ->valuedouble;
    ck_assert_msg(n > 100 && n <= 256, "%d points", n);
    ck_assert_msg(first <= 2, "loss_history starts at step %ld: the start of the run is lost", first);
    ck_assert_int_eq(last, 320);
    cJSON_Delete(o);
    ld_jobs_free(j);
}
END_TEST

/* Bytes of heap in use now (all threads under ASan; glibc's arenas
 * otherwise, which the engine's recovery on this thread uses). */
static size_t heap_in_use(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#endif
}

/* Finished records are small in memory: their loss_history stays on disk
 * until asked for.  A real finished record (a 320-step run, about 200
 * history points) is copied into 1,000 job folders; recovering them all
 * must take less than 2 MiB of heap (before: about 16 KiB a record), and
 * a copy still answers its full history. */
START_TEST(test_finished_records_are_small)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX];
    char *orig = run_to_success(j, HIST_VAE("small"), a);
    ld_jobs_free(j);
    char path[1024];
    job_file(path, sizeof path, a, "job.json");
    char *text0 = slurp(path);
    cJSON *rec = cJSON_Parse(text0);
    free(text0);
    ck_assert_ptr_nonnull(rec);
    enum { N = 1000 };
    for (int i = 2; i < N + 2; i++) {
        char id[LD_JOB_ID_MAX], dir[1024];
        snprintf(id, sizeof id, "j-%06d", i);
        snprintf(dir, sizeof dir, "%s/jobs/%s", state_dir, id);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        cJSON_ReplaceItemInObjectCaseSensitive(rec, "id", cJSON_CreateString(id));
        char *text = cJSON_PrintUnformatted(rec);
        job_file(path, sizeof path, id, "job.json");
        write_file(path, text, strlen(text));
        free(text);
    }
    cJSON_Delete(rec);
    size_t before = heap_in_use();
    j = open_engine(1, 4);
    size_t used = heap_in_use() - before;
    fprintf(stderr, "jobs: %d finished records recovered in %zu KiB of heap (%zu bytes each)\n",
            N + 1, used >> 10, used / (N + 1));
    ck_assert_msg(used < (2u << 20), "%d records take %zu KiB", N + 1, used >> 10);
    /* the history of a copy and of the original, read back from disk */
    char *copy = get_json(j, "j-000777"), *again = get_json(j, a);
    const char *h0 = strstr(orig, "\"loss_history\":["), *h1 = strstr(copy, "\"loss_history\":[");
    const char *h2 = strstr(again, "\"loss_history\":[");
    ck_assert(h0 && h1 && h2);
    size_t hl = (size_t)(strstr(h0, "]") - h0);
    ck_assert_msg(hl > 1000, "the original has a history of %zu bytes", hl);
    ck_assert(strncmp(h0, h1, hl + 1) == 0 && strncmp(h0, h2, hl + 1) == 0);
    free(orig);
    free(copy);
    free(again);
    ld_jobs_free(j);
}
END_TEST

/* Event ids go on growing across restarts (a stream's Last-Event-ID stays
 * meaningful), and a job that fails after a restart does not keep a note
 * that promises a resume. */
START_TEST(test_seq_and_note_across_restarts)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX];
    submit_ok(j, LONG_VAE("resumes"), a);
    wait_steps(j, a, 3, 60);
    uint64_t before = info_of(j, a).seq;
    ld_jobs_free(j); /* interrupted, state saved */
    j = open_engine(1, 4);
    ck_assert_msg(info_of(j, a).seq > before, "seq %llu after the restart, %llu before",
                  (unsigned long long)info_of(j, a).seq, (unsigned long long)before);
    wait_steps(j, a, 1, 60);
    submit_ok(j, LONG_VAE("fails"), b);
    ld_err_t e;
    ld_job_state_t s;
    ck_assert_int_eq(ld_jobs_cancel(j, a, &s, &e), LD_OK);
    ck_assert_int_eq(wait_state(j, a, LD_JOB_CANCELLED, 60), LD_JOB_CANCELLED);
    uint64_t a_seq = info_of(j, a).seq;
    wait_steps(j, b, 3, 60);
    uint64_t b_seq = info_of(j, b).seq;
    ld_jobs_free(j);
    char path[1024];
    job_file(path, sizeof path, b, "state.safetensors");
    write_file(path, "\x10\0\0\0\0\0\0\0{\"oops\":", 16);

    j = open_engine(1, 4);
    ck_assert_msg(info_of(j, a).seq == a_seq, "a finished job's seq %llu, was %llu",
                  (unsigned long long)info_of(j, a).seq, (unsigned long long)a_seq);
    ld_job_info_t in = info_of(j, b);
    ck_assert_int_eq(in.state, LD_JOB_FAILED);
    ck_assert_msg(in.seq > b_seq, "seq %llu after the restart, %llu before",
                  (unsigned long long)in.seq, (unsigned long long)b_seq);
    char *js = get_json(j, b);
    ck_assert_msg(!strstr(js, "resumes at the next start") && strstr(js, "does not resume"),
                  "%s", js);
    free(js);
    ld_jobs_free(j);
}
END_TEST

/* Issue 18's job: six layers of 4096 (about 3 GB) was accepted.  With
 * max_job_bytes it is refused before anything is queued, with the estimate
 * and the limit; a small job still fits. */
START_TEST(test_memory_budget)
{
    ld_jobs_t *j = open_engine_caps(1, 4, 4096, 256ll << 20);
    static const char big[] = "{\"kind\":\"vae\",\"model\":\"big\",\"arch\":{\"hidden\":"
                              "[4096,4096,4096,4096,4096,4096]}}";
    char id[LD_JOB_ID_MAX];
    ld_err_t e = {{0}};
    ck_assert_int_eq(ld_jobs_submit(j, big, strlen(big), id, NULL, &e), LD_EINVAL);
    ck_assert_msg(strstr(e.msg, "max_job_bytes") && strstr(e.msg, "256 MiB") &&
                      strstr(e.msg, "optimiser"),
                  "%s", e.msg);
    /* the estimate: at least the parameters and Adam's two moments */
    ld_jobspec_t s;
    ck_assert_int_eq(ld_jobspec_parse(big, strlen(big), NULL, 0, &s, &e), LD_OK);
    ld_job_bytes_t b;
    ld_jobspec_bytes(&s.arch, &s.train, &b);
    ck_assert_msg(b.params > 4.0 * 5 * 4096 * 4096 && b.optimiser >= 3 * b.params &&
                      b.total > 2.5e9 && b.total < 6e9,
                  "params %.0f optimiser %.0f total %.0f", b.params, b.optimiser, b.total);
    ld_jobs_stats_t st;
    ld_jobs_stats(j, &st);
    ck_assert_int_eq(st.queue_length + st.by_state[LD_JOB_QUEUED], 0);
    submit_ok(j, TINY_VAE("small", ""), id);
    ck_assert_int_eq(wait_state(j, id, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    ld_jobs_free(j);
}
END_TEST

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* A cancel stops a job inside a long step: here one step is about 250 GFLOP
 * (seconds of CPU), and the job stops after a small part of it.  Measured in
 * CPU time, which a loaded machine does not stretch (the worker runs under
 * SCHED_IDLE, so its wall time can). */
START_TEST(test_cancel_inside_a_step)
{
    ld_jobs_t *j = open_engine_caps(1, 4, 4096, 0);
    static const char slow[] = "{\"kind\":\"vae\",\"model\":\"slow\",\"limit\":1024,\"arch\":"
                               "{\"hidden\":[4096,4096],\"z\":8},\"train\":{\"epochs\":1,"
                               "\"batch\":1024},\"checkpoint_every\":1}";
    char id[LD_JOB_ID_MAX];
    submit_ok(j, slow, id);
    /* steps_total is known once the data set is loaded and the trainer
     * built, just before the first step */
    double end = ld_now() + 120;
    while (info_of(j, id).steps_total == 0 && ld_now() < end)
        usleep(5000);
    ck_assert_int_eq(info_of(j, id).state, LD_JOB_RUNNING);
    double c0 = cpu_seconds();
    while (cpu_seconds() - c0 < 0.3 && ld_now() < end) /* the step is under way */
        usleep(5000);
    c0 = cpu_seconds();
    double t0 = ld_now();
    ld_job_state_t st;
    ld_err_t e;
    ck_assert_int_eq(ld_jobs_cancel(j, id, &st, &e), LD_OK);
    ck_assert_int_eq(wait_state(j, id, LD_JOB_CANCELLED, 120), LD_JOB_CANCELLED);
    double cpu = cpu_seconds() - c0, took = ld_now() - t0;
    ld_job_info_t in = info_of(j, id);
    /* the sanitizers slow the instrumented loops around the GEMMs (not
     * OpenBLAS) several-fold; an uncancelled step costs far more than either
     * bound */
    double bound = tu_under_asan() ? 3.0 : 1.0;
    printf("cancel inside a step: %.2f s of CPU, %.2f s wall (bound %.1f s of CPU)\n", cpu, took,
           bound);
    ck_assert_msg(cpu < bound && took < 30, "cancel took %.2f s of CPU, %.2f s (step %ld)", cpu,
                  took, in.step);
    ck_assert_int_eq(in.step, 0); /* the abandoned step does not count */
    char path[1024];
    job_file(path, sizeof path, id, "state.safetensors");
    ck_assert_msg(!file_exists(path), "no checkpoint is written for an abandoned step");
    ld_jobs_free(j);
}
END_TEST

/* Pages of the job list, a state filter, and removing a finished job's
 * record and checkpoint (refused while it runs); a removed id is never
 * given again, even after a restart. */
START_TEST(test_list_pages_and_purge)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX], c[LD_JOB_ID_MAX];
    submit_ok(j, TINY_VAE("first", ""), a);
    submit_ok(j, LONG_VAE("second"), b);
    ck_assert_int_eq(wait_state(j, a, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    wait_steps(j, b, 25, 60); /* past its first checkpoint */
    ld_err_t e;
    char *list = NULL;
    ld_jobs_list_t q = {.state = LD_JOB_SUCCEEDED};
    ck_assert_int_eq(ld_jobs_list_json(j, &q, &list, &e), LD_OK);
    cJSON *o = cJSON_Parse(list);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "jobs")), 1);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "next_cursor")));
    cJSON_Delete(o);
    free(list);
    q = (ld_jobs_list_t){.state = -1, .limit = 1};
    ck_assert_int_eq(ld_jobs_list_json(j, &q, &list, &e), LD_OK);
    o = cJSON_Parse(list);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "jobs"), 0), "id")
                         ->valuestring,
                     b);
    ck_assert_str_eq(cJSON_GetObjectItem(o, "next_cursor")->valuestring, b);
    cJSON_Delete(o);
    free(list);
    q.cursor = b;
    ck_assert_int_eq(ld_jobs_list_json(j, &q, &list, &e), LD_OK);
    o = cJSON_Parse(list);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "jobs"), 0), "id")
                         ->valuestring,
                     a);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "next_cursor")));
    cJSON_Delete(o);
    free(list);
    q.cursor = "../etc";
    ck_assert_int_eq(ld_jobs_list_json(j, &q, &list, &e), LD_EINVAL);

    ck_assert_int_eq(ld_jobs_purge(j, b, &e), LD_EUNSUPPORTED); /* still running */
    ck_assert_msg(strstr(e.msg, "running"), "%s", e.msg);
    ld_job_state_t s;
    ck_assert_int_eq(ld_jobs_cancel(j, b, &s, &e), LD_OK);
    ck_assert_int_eq(wait_state(j, b, LD_JOB_CANCELLED, 60), LD_JOB_CANCELLED);
    char path[1024];
    job_file(path, sizeof path, b, "state.safetensors");
    ck_assert(file_exists(path)); /* the cancelled job's checkpoint is kept... */
    ck_assert_int_eq(ld_jobs_purge(j, b, &e), LD_OK);
    ck_assert(!file_exists(path)); /* ...until its record is removed */
    job_file(path, sizeof path, b, "");
    ck_assert(!file_exists(path));
    ck_assert_int_eq(ld_jobs_info(j, b, &(ld_job_info_t){0}, &e), LD_ENOTFOUND);
    ck_assert_int_eq(ld_jobs_purge(j, b, &e), LD_ENOTFOUND);
    ld_jobs_stats_t st;
    ld_jobs_stats(j, &st);
    ck_assert_int_eq(st.by_state[LD_JOB_CANCELLED], 0);
    ld_jobs_free(j);

    j = open_engine(1, 4);
    ck_assert_int_eq(ld_jobs_info(j, b, &(ld_job_info_t){0}, &e), LD_ENOTFOUND);
    submit_ok(j, TINY_VAE("third", ""), c);
    ck_assert_msg(strcmp(c, b) > 0, "new id %s, removed %s", c, b);
    ck_assert_int_eq(wait_state(j, c, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    ld_jobs_free(j);
}
END_TEST

/* ---- fault injection: a full or failing disk (fsutil_impl.h) ---- */

static atomic_int fault_errno;     /* what the armed hook answers */
static atomic_int fault_skip;      /* matching writes let through before it fails */
static atomic_int fault_hits;      /* writes it failed */
static char fault_suffix[64];      /* the paths it fails end with this */

static int write_fault(const char *path)
{
    size_t n = strlen(path), k = strlen(fault_suffix);
    if (n < k || strcmp(path + n - k, fault_suffix) != 0)
        return 0;
    if (atomic_fetch_sub(&fault_skip, 1) > 0)
        return 0;
    atomic_fetch_add(&fault_hits, 1);
    return atomic_load(&fault_errno);
}

static void arm_fault(const char *suffix, int skip, int err)
{
    snprintf(fault_suffix, sizeof fault_suffix, "%s", suffix);
    atomic_store(&fault_skip, skip);
    atomic_store(&fault_errno, err);
    atomic_store(&fault_hits, 0);
    ld_fsutil_set_write_fault(write_fault);
}

/* The step a state file holds ("step" in its metadata), -1 if it does not load. */
static long state_step(const char *path)
{
    ld_ckpt_t *c = NULL;
    ld_err_t e;
    if (ld_ckpt_read(path, &c, &e) != LD_OK)
        return -1;
    const char *s = ld_ckpt_meta(c, "step");
    long step = s ? atol(s) : -1;
    ld_ckpt_free(c);
    return step;
}

/* ENOSPC on the second checkpoint: the job fails with the reason and the
 * first checkpoint is still there, whole.  EIO on a record write while it
 * runs: the job fails with that reason (it used to train on with a stale
 * record).  ENOSPC on the model file: the job fails and the model served
 * under that name keeps its bytes. */
START_TEST(test_write_faults)
{
    ld_jobs_t *j = open_engine(1, 4);
    char a[LD_JOB_ID_MAX], b[LD_JOB_ID_MAX], c[LD_JOB_ID_MAX], d[LD_JOB_ID_MAX];
    arm_fault("state.safetensors", 1, ENOSPC);
    submit_ok(j, LONG_VAE("full"), a);
    ck_assert_int_eq(wait_state(j, a, LD_JOB_FAILED, 120), LD_JOB_FAILED);
    ld_job_info_t in = info_of(j, a);
    ck_assert_msg(strstr(in.error, "No space left on device"), "%s", in.error);
    char path[1024];
    job_file(path, sizeof path, a, "state.safetensors");
    ck_assert_int_eq(state_step(path), 20);

    arm_fault("job.json", 2, EIO); /* queued and running pass; the first checkpoint's fails */
    submit_ok(j, LONG_VAE("eio"), b);
    ck_assert_int_eq(wait_state(j, b, LD_JOB_FAILED, 120), LD_JOB_FAILED);
    in = info_of(j, b);
    ck_assert_msg(strstr(in.error, "cannot save its record") &&
                      strstr(in.error, "Input/output error"),
                  "%s", in.error);
    ld_fsutil_set_write_fault(NULL);

    submit_ok(j, TINY_VAE("served", ""), c);
    ck_assert_int_eq(wait_state(j, c, LD_JOB_SUCCEEDED, 120), LD_JOB_SUCCEEDED);
    char model[1024];
    snprintf(model, sizeof model, "%s/served.safetensors", models_dir);
    struct stat st0;
    ck_assert_int_eq(stat(model, &st0), 0);
    arm_fault("/served.safetensors", 0, ENOSPC);
    submit_ok(j, TINY_VAE("served", ""), d);
    ck_assert_int_eq(wait_state(j, d, LD_JOB_FAILED, 120), LD_JOB_FAILED);
    ld_fsutil_set_write_fault(NULL);
    in = info_of(j, d);
    ck_assert_msg(strstr(in.error, "No space left on device"), "%s", in.error);
    struct stat st1;
    ck_assert_int_eq(stat(model, &st1), 0);
    /* an atomic write would have renamed a new inode over it */
    ck_assert(st0.st_size == st1.st_size && st0.st_ino == st1.st_ino &&
              st0.st_mtim.tv_nsec == st1.st_mtim.tv_nsec && st0.st_mtim.tv_sec == st1.st_mtim.tv_sec);
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_int_eq(ld_model_load(model, &m, &e), LD_OK);
    ld_model_free(m);
    ld_jobs_free(j);
}
END_TEST

START_TEST(test_one_engine_per_folder)
{
    ld_jobs_t *j = open_engine(1, 4);
    ld_jobs_config_t c;
    ld_jobs_config_default(&c);
    c.state_dir = state_dir;
    c.models_dir = models_dir;
    ld_jobs_t *k = NULL;
    ld_err_t e;
    ck_assert_int_eq(ld_jobs_new(&c, &k, &e), LD_EBUSY);
    ck_assert_ptr_null(k);
    c.worker_threads = 0;
    ck_assert_int_eq(ld_jobs_new(&c, &k, &e), LD_EINVAL);
    ld_jobs_free(j);
    ld_jobs_free(NULL);
}
END_TEST

Suite *suite_jobs(void)
{
    Suite *s = suite_create("jobs");
    TCase *tc = tcase_create("jobs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300); /* generous: sanitizers make training 3-5x slower */
    tcase_add_test(tc, test_invalid_specs);
    tcase_add_test(tc, test_spec_normal_form);
    tcase_add_test(tc, test_job_succeeds_and_survives_restart);
    tcase_add_test(tc, test_cancel_queued_and_running);
    tcase_add_test(tc, test_queue_full);
    tcase_add_test(tc, test_shutdown_interrupts_then_resumes);
    tcase_add_test(tc, test_kill9_resumes_bit_exact);
    tcase_add_test(tc, test_restart_without_checkpoint);
    tcase_add_test(tc, test_publish_failure_fails_the_job);
    tcase_add_test(tc, test_corrupt_checkpoint_and_record);
    tcase_add_test(tc, test_two_jobs_at_once);
    tcase_add_test(tc, test_named_data_sets);
    tcase_add_test(tc, test_events_and_metrics);
    tcase_add_test(tc, test_one_engine_per_folder);
    tcase_add_test(tc, test_loss_history_keeps_the_start);
    tcase_add_test(tc, test_seq_and_note_across_restarts);
    tcase_add_test(tc, test_memory_budget);
    tcase_add_test(tc, test_cancel_inside_a_step);
    tcase_add_test(tc, test_list_pages_and_purge);
    tcase_add_test(tc, test_write_faults);
    suite_add_tcase(s, tc);
    /* a case of its own, so it can be run alone (CK_RUN_CASE=jobs_memory) */
    TCase *recipes = tcase_create("jobs_recipes"); /* specs only: CK_RUN_CASE=jobs_recipes */
    tcase_add_test(recipes, test_spec_gan_recipes);
    suite_add_tcase(s, recipes);

    TCase *mem = tcase_create("jobs_memory");
    tcase_add_checked_fixture(mem, setup, teardown);
    tcase_set_timeout(mem, 300);
    tcase_add_test(mem, test_finished_records_are_small);
    suite_add_tcase(s, mem);
    return s;
}

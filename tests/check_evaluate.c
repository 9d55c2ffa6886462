/* check_evaluate.c — POST /v1/models/{name}/evaluate (src/evaluate_api.c)
 * and its evaluation jobs (src/jobs_eval.c), on the real daemon (LD_BIN)
 * serving the shipped fashion-gan, fashion-vae and fashion-classifier,
 * driven with libcurl; the job's figures are checked against the library's
 * (eval.h) on Debian's Fashion-MNIST test split.
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/data.h"
#include "latentd/eval.h"
#include "latentd/jobs.h"
#include "latentd/model.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#define ASAN_SLOWDOWN 4
#define ADMIN "evaluate-admin-token-0123456789ab"

static tu_daemon_t D;
static char token_path[64];

static void setup(void)
{
    static const char *const models[] = {"fashion-gan", "fashion-vae", "fashion-classifier",
                                         NULL};
    snprintf(token_path, sizeof token_path, "/tmp/latentd-evaluate-XXXXXX");
    int fd = mkstemp(token_path);
    ck_assert(fd >= 0);
    close(fd);
    tu_write_file(token_path, ADMIN "\n");
    char conf[256];
    snprintf(conf, sizeof conf, "request_timeout = 60\nadmin_token_file = %s\n", token_path);
    tu_daemon_start_shipped(&D, ASAN_SLOWDOWN, models, conf);
}

static void teardown(void)
{
    tu_daemon_stop_ok(&D, 60); /* exit 0: under ASan, no leak either */
    unlink(token_path);
    curl_global_cleanup();
}

static long evaluate(tu_resp_t *r, const char *model, const char *body, const char *token)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/models/%s/evaluate", model);
    tu_req_t q = {.port = D.port, .token = token};
    return tu_http_once(r, "POST", path, body, body ? strlen(body) : 0, &q);
}

/* POST body to model's /evaluate (202 required), then poll its result until
 * 200; r holds the result. */
static void run_evaluation(tu_resp_t *r, const char *model, const char *body)
{
    long st = evaluate(r, model, body, ADMIN);
    ck_assert_msg(st == 202, "status %ld: %.300s", st, r->body.data ? r->body.data : "");
    char loc[128], want[128];
    const char *id = tu_jget(r->json, "id")->valuestring;
    snprintf(want, sizeof want, "/v1/jobs/%s/result", id);
    ck_assert_str_eq(tu_hdr(r, "Location", loc, sizeof loc), want);
    ck_assert_str_eq(tu_jget(r->json, "result")->valuestring, want);
    ck_assert_str_eq(tu_jget(r->json, "state")->valuestring, "queued");
    ck_assert_str_eq(tu_jget(r->json, "classifier")->valuestring, "fashion-classifier");
    tu_resp_free(r);
    tu_req_t q = {.port = D.port};
    double until = tu_deadline(120, ASAN_SLOWDOWN);
    for (;;) {
        st = tu_http_once(r, "GET", loc, NULL, 0, &q);
        if (st == 200)
            break;
        ck_assert_msg(st == 202, "result: %ld %.300s", st, r->body.data ? r->body.data : "");
        tu_resp_free(r);
        ck_assert_msg(tu_now() < until, "the evaluation did not finish: %s", tu_log_tail(&D));
        tu_msleep(100);
    }
    ck_assert(tu_json_all_finite(r->json));
}

static ld_model_t *load(const char *path)
{
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_load(path, &m, &e) == LD_OK, "load %s: %s", path, e.msg);
    return m;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = tu_jget(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", k);
    return v->valuedouble;
}

static void close_to(double got, double want, double rel, const char *what)
{
    ck_assert_msg(fabs(got - want) <= rel * fabs(want) + 1e-6, "%s: job %.9g, library %.9g", what,
                  got, want);
}

/* A GAN: the job's FID, precision, recall and class shares are the
 * library's on the same test images and seed; the classifier's file and
 * accuracy are named. */
START_TEST(test_evaluate_gan)
{
    tu_resp_t r;
    run_evaluation(&r, "fashion-gan", "{\"n\":500,\"seed\":3}");
    const cJSON *j = r.json, *s = tu_jget(j, "samples"), *c = tu_jget(j, "classifier");
    ck_assert_str_eq(tu_jget(j, "kind")->valuestring, "gan");
    ck_assert_str_eq(tu_jget(j, "file")->valuestring, "fashion-gan.safetensors");
    ck_assert_str_eq(tu_jget(c, "file")->valuestring, "fashion-classifier.safetensors");
    ck_assert_int_eq((int)num(j, "n"), 500);
    ck_assert_int_eq((int)num(j, "images"), 10000);
    ck_assert(cJSON_IsNull(tu_jget(j, "vae")));
    ck_assert(cJSON_IsNull(tu_jget(j, "per_class_accuracy")));
    const cJSON *shares = tu_jget(s, "class_shares");
    ck_assert_int_eq(cJSON_GetArraySize(shares), 10);
    ck_assert_ptr_nonnull(cJSON_GetObjectItemCaseSensitive(shares, "sandal"));
    double sum = 0;
    for (const cJSON *v = shares->child; v; v = v->next)
        sum += v->valuedouble;
    ck_assert_msg(fabs(sum - 1) < 1e-4, "shares sum to %g", sum);

    ld_model_t *g = load("models/fashion-gan.safetensors");
    ld_model_t *cls = load("models/fashion-classifier.safetensors");
    ld_dataset_t *d = tu_fashion_test(10000);
    ld_gan_eval_t ev;
    double acc;
    ld_err_t e;
    ck_assert_int_eq(ld_eval_gan(g, cls, d, 500, 3, &ev, &e), LD_OK);
    ck_assert_int_eq(ld_eval_accuracy(cls, d, &acc, &e), LD_OK);
    printf("  evaluate fashion-gan (500 samples): fid %.3f precision %.3f recall %.3f "
           "classifier accuracy %.4f\n",
           num(s, "fid"), num(s, "precision"), num(s, "recall"), num(c, "accuracy"));
    close_to(num(s, "fid"), ev.fid, 1e-5, "fid");
    close_to(num(s, "precision"), ev.precision, 1e-5, "precision");
    close_to(num(s, "recall"), ev.recall, 1e-5, "recall");
    close_to(num(s, "min_class_share"), ev.min_share, 1e-5, "min_class_share");
    close_to(num(c, "accuracy"), acc, 1e-5, "accuracy");
    ck_assert(acc > 0.8);
    ld_model_free(g);
    ld_model_free(cls);
    ld_data_free(d);
    tu_resp_free(&r);
}
END_TEST

/* A VAE: negative ELBO and the IWAE bound with the asked k, as the library
 * computes them; the bound is below the ELBO's. */
START_TEST(test_evaluate_vae)
{
    tu_resp_t r;
    run_evaluation(&r, "fashion-vae", "{\"n\":200,\"k\":4,\"seed\":2}");
    const cJSON *v = tu_jget(r.json, "vae");
    ck_assert_str_eq(tu_jget(r.json, "kind")->valuestring, "vae");
    ck_assert_int_eq((int)num(v, "iwae_k"), 4);
    ld_model_t *m = load("models/fashion-vae.safetensors");
    ld_dataset_t *d = tu_fashion_test(10000);
    double nelbo, rec, kl, iwae;
    ld_err_t e;
    ck_assert_int_eq(ld_eval_vae(m, d, 2, &nelbo, &rec, &kl, &e), LD_OK);
    ck_assert_int_eq(ld_eval_iwae(m, d, 4, 2, &iwae, &e), LD_OK);
    printf("  evaluate fashion-vae: nelbo %.3f iwae(k=4) %.3f\n", num(v, "nelbo"),
           num(v, "iwae_nll"));
    close_to(num(v, "nelbo"), nelbo, 1e-5, "nelbo");
    close_to(num(v, "iwae_nll"), iwae, 1e-5, "iwae_nll");
    ck_assert(iwae < nelbo);
    ck_assert(num(tu_jget(r.json, "samples"), "fid") > 0);
    ld_model_free(m);
    ld_data_free(d);
    tu_resp_free(&r);
}
END_TEST

/* Refusals: no or a wrong token 401, unknown model 404, bad n/k/classifier
 * 422, a classifier evaluated 422; nothing breaks the daemon. */
START_TEST(test_evaluate_errors)
{
    static const struct {
        const char *model, *body, *token;
        long status;
        const char *code, *msg;
    } cases[] = {
        {"fashion-gan", "{}", NULL, 401, "unauthorized", NULL},
        {"fashion-gan", "{}", "wrong-token-0123456789abcdef", 401, "unauthorized", NULL},
        {"nope", "{}", ADMIN, 404, "model_not_found", "nope"},
        {"fashion-gan", "{\"n\":3}", ADMIN, 422, NULL, "n"},
        {"fashion-gan", "{\"n\":50001}", ADMIN, 422, NULL, "n"},
        {"fashion-vae", "{\"k\":0}", ADMIN, 422, NULL, "k"},
        {"fashion-vae", "{\"k\":1001}", ADMIN, 422, NULL, "k"},
        {"fashion-gan", "{\"n\":\"many\"}", ADMIN, 400, NULL, "n"},
        {"fashion-gan", "{\"path\":\"/etc\"}", ADMIN, 400, NULL, "path"},
        {"fashion-gan", "{\"classifier\":\"nope\"}", ADMIN, 422, "invalid_value", "nope"},
        {"fashion-gan", "{\"classifier\":\"fashion-vae\"}", ADMIN, 422, "invalid_value",
         "not a classifier"},
        {"fashion-classifier", "{}", ADMIN, 422, "unsupported", "generative"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(cases); i++) {
        tu_resp_t r;
        char what[160];
        snprintf(what, sizeof what, "%s %s", cases[i].model, cases[i].body);
        long st = evaluate(&r, cases[i].model, cases[i].body, cases[i].token);
        ck_assert_msg(st == cases[i].status, "%s: %ld %.300s", what, st,
                      r.body.data ? r.body.data : "");
        if (cases[i].code)
            tu_expect_error(&r, cases[i].status, cases[i].code, cases[i].msg, what, 0);
        else
            ck_assert_msg(strstr(r.body.data, cases[i].msg), "%s: %s", what, r.body.data);
        tu_resp_free(&r);
    }
    /* still serving, and no evaluation was queued */
    tu_resp_t r;
    tu_req_t q = {.port = D.port, .token = ADMIN};
    ck_assert_int_eq(tu_http_once(&r, "GET", "/v1/jobs", NULL, 0, &q), 200);
    ck_assert_ptr_null(strstr(r.body.data, "\"kind\":\"evaluate\",\"model\":\"fashion-classifier\""));
    tu_resp_free(&r);
}
END_TEST

/* Submit spec as a training job and wait for it to succeed; r holds its
 * record (GET /v1/jobs/{id}); id gets its id. */
static void train_job(tu_resp_t *r, const char *spec, char id[32])
{
    tu_req_t q = {.port = D.port, .token = ADMIN};
    long st = tu_http_once(r, "POST", "/v1/jobs", spec, strlen(spec), &q);
    ck_assert_msg(st == 202 || st == 201, "submit: %ld %.300s", st, r->body.data);
    snprintf(id, 32, "%s", tu_jget(r->json, "id")->valuestring);
    tu_resp_free(r);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    double until = tu_deadline(120, ASAN_SLOWDOWN);
    for (;;) {
        ck_assert_int_eq(tu_http_once(r, "GET", path, NULL, 0, &q), 200);
        const char *state = tu_jget(r->json, "state")->valuestring;
        if (!strcmp(state, "succeeded"))
            break;
        ck_assert_msg(strcmp(state, "failed") && strcmp(state, "cancelled"), "job %s: %s", state,
                      r->body.data);
        tu_resp_free(r);
        ck_assert_msg(tu_now() < until, "job %s did not finish: %s", id, tu_log_tail(&D));
        tu_msleep(100);
    }
}

/* A GAN job that cannot learn (lr 1e-7: its generator stays at its
 * initialisation, which draws nearly one image) collapses: eval_history has
 * a point at the checkpoint and one at the end, each with FID, precision,
 * recall and the smallest class under 1%; the record lists the warning and
 * the job's event stream sends it as a "warning" event. */
START_TEST(test_eval_history_collapsed_gan)
{
    tu_resp_t r;
    char id[32];
    train_job(&r,
              "{\"kind\":\"gan\",\"model\":\"collapsed\",\"limit\":256,\"arch\":{\"g_hidden\":[32],"
              "\"d_hidden\":[32],\"z\":4},\"train\":{\"epochs\":1,\"batch\":32,\"lr\":1e-7,"
              "\"lr_d\":1e-7},\"checkpoint_every\":4,\"eval_n\":300}",
              id);
    const cJSON *h = tu_jget(r.json, "eval_history"), *w = tu_jget(r.json, "warnings");
    ck_assert_msg(cJSON_GetArraySize(h) == 2, "eval_history: %s", r.body.data);
    ck_assert_int_eq((int)num(cJSON_GetArrayItem(h, 0), "step"), 4);
    ck_assert_int_eq((int)num(cJSON_GetArrayItem(h, 1), "step"), 8);
    for (const cJSON *p = h->child; p; p = p->next) {
        ck_assert(num(p, "fid") > 0);
        ck_assert(num(p, "precision") >= 0 && num(p, "precision") <= 1);
        ck_assert(num(p, "recall") >= 0 && num(p, "recall") <= 1);
        ck_assert(num(p, "min_class_share") < 0.01);
        ck_assert(cJSON_IsString(tu_jget(p, "min_class")));
    }
    ck_assert_int_ge(cJSON_GetArraySize(w), 1);
    char msg[128];
    snprintf(msg, sizeof msg, "%s", tu_jget(w->child, "message")->valuestring);
    printf("  collapsed gan: %s; fid %.1f\n", msg, num(h->child, "fid"));
    ck_assert_msg(!strncmp(msg, "mode collapse: ", 15) && strstr(msg, "% ") == NULL &&
                      strstr(msg, tu_jget(w->child, "class")->valuestring),
                  "message %s", msg);
    tu_resp_free(&r);

    /* the finished job's stream: the warning, then the final record */
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%s/events", id);
    tu_req_t q = {.port = D.port, .token = ADMIN, .timeout_ms = 30000};
    ck_assert_int_eq(tu_http_once(&r, "GET", path, NULL, 0, &q), 200);
    const char *ev = strstr(r.body.data, "event: warning\ndata: {");
    ck_assert_msg(ev && strstr(ev, msg), "stream: %.500s", r.body.data);
    ck_assert_ptr_nonnull(strstr(ev, "event: end"));
    tu_resp_free(&r);
}
END_TEST

/* A VAE job: a negative ELBO at each checkpoint and at the end; none with
 * eval_n 0. */
START_TEST(test_eval_history_vae)
{
    tu_resp_t r;
    char id[32];
    train_job(&r,
              "{\"kind\":\"vae\",\"model\":\"hist-vae\",\"limit\":256,\"arch\":{\"hidden\":[32],"
              "\"z\":2},\"train\":{\"epochs\":2,\"batch\":32},\"checkpoint_every\":8,"
              "\"eval_n\":500}",
              id);
    const cJSON *h = tu_jget(r.json, "eval_history");
    ck_assert_msg(cJSON_GetArraySize(h) >= 1, "eval_history: %s", r.body.data);
    const cJSON *last = cJSON_GetArrayItem(h, cJSON_GetArraySize(h) - 1);
    ck_assert_int_eq((int)num(last, "step"), 16);
    ck_assert(num(last, "nelbo") > 100 && num(last, "nelbo") < 2000);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "warnings")), 0);
    tu_resp_free(&r);
    train_job(&r,
              "{\"kind\":\"vae\",\"model\":\"hist-off\",\"limit\":64,\"arch\":{\"hidden\":[8],"
              "\"z\":2},\"train\":{\"epochs\":1,\"batch\":32},\"eval_n\":0}",
              id);
    ck_assert_int_eq(cJSON_GetArraySize(tu_jget(r.json, "eval_history")), 0);
    tu_resp_free(&r);
}
END_TEST

/* The history outlives a restart of the engine: read back from the job's
 * record (library level, no daemon). */
START_TEST(test_eval_history_recovered)
{
    char *root = tu_mkdtemp(), state[512], models[512];
    snprintf(state, sizeof state, "%s/state", root);
    snprintf(models, sizeof models, "%s/models", root);
    ld_jobs_config_t c;
    ld_jobs_config_default(&c);
    c.state_dir = state;
    c.models_dir = models;
    ld_jobs_t *j = NULL;
    ld_err_t e = {{0}};
    ck_assert_msg(ld_jobs_new(&c, &j, &e) == LD_OK, "%s", e.msg);
    static const char spec[] =
        "{\"kind\":\"vae\",\"model\":\"rec-vae\",\"limit\":128,\"arch\":{\"hidden\":[16],"
        "\"z\":2},\"train\":{\"epochs\":1,\"batch\":32},\"checkpoint_every\":2,\"eval_n\":200}";
    char id[LD_JOB_ID_MAX];
    ck_assert_msg(ld_jobs_submit(j, spec, strlen(spec), id, NULL, &e) == LD_OK, "%s", e.msg);
    double until = tu_deadline(60, ASAN_SLOWDOWN);
    ld_job_info_t in;
    for (;;) {
        ck_assert_int_eq(ld_jobs_info(j, id, &in, &e), LD_OK);
        if (ld_job_state_is_final(in.state))
            break;
        ck_assert(tu_now() < until);
        ld_jobs_wait(j, id, in.seq, 200, NULL, NULL);
    }
    ck_assert_msg(in.state == LD_JOB_SUCCEEDED, "%s", in.error);
    char *before, *after;
    ck_assert_int_eq(ld_jobs_get_json(j, id, &before, &e), LD_OK);
    ld_jobs_free(j);
    ck_assert_msg(ld_jobs_new(&c, &j, &e) == LD_OK, "%s", e.msg);
    ck_assert_int_eq(ld_jobs_get_json(j, id, &after, &e), LD_OK);
    cJSON *b = cJSON_Parse(before), *a = cJSON_Parse(after);
    char *hb = cJSON_PrintUnformatted(tu_jget(b, "eval_history"));
    char *ha = cJSON_PrintUnformatted(tu_jget(a, "eval_history"));
    ck_assert_msg(cJSON_GetArraySize(tu_jget(b, "eval_history")) >= 1, "%s", before);
    ck_assert_str_eq(ha, hb);
    free(hb), free(ha), free(before), free(after);
    cJSON_Delete(a), cJSON_Delete(b);
    ld_jobs_free(j);
    tu_rmrf(root);
    free(root);
}
END_TEST

Suite *suite_evaluate(void)
{
    Suite *s = suite_create("evaluate");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 600);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_evaluate_errors);
    tcase_add_test(tc, test_evaluate_gan);
    tcase_add_test(tc, test_evaluate_vae);
    tcase_add_test(tc, test_eval_history_collapsed_gan);
    tcase_add_test(tc, test_eval_history_vae);
    suite_add_tcase(s, tc);
    TCase *lib = tcase_create("lib");
    tcase_set_timeout(lib, 300);
    tcase_add_test(lib, test_eval_history_recovered);
    suite_add_tcase(s, lib);
    return s;
}

/* check_cluster.c — what replicas behind a load balancer rely on
 * (docs/scaling.md), without the load balancer: names and peers
 * (src/replica.c), the periodic rescan of a shared model folder under load,
 * the state folder's lock, and jobs across two real daemons (ids that name
 * their replica, 307 to the owner, a model trained on one served by the
 * other).  The same behaviour through nginx is tests/cluster/test_cluster.sh
 * (make test-cluster).
 *
 * Daemons are the real binary (LD_BIN) on free ports, helpers from
 * tests/tu_daemon.h; deadlines x5 under the sanitizers.  Synchronisation is
 * by polling the API or the log, never by sleeping alone. */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/model.h"
#include "latentd/replica.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ADMIN "admin-token-fedcba9876543210abcd"
#define ASAN_SLOWDOWN 5

/* Finishes in about a second: 32 steps after loading 2000 images. */
#define TINY_VAE(name)                                                                           \
    "{\"kind\":\"vae\",\"model\":\"" name "\",\"data\":\"fashion-mnist\",\"limit\":2000,"       \
    "\"arch\":{\"hidden\":[32],\"z\":4},\"train\":{\"epochs\":1,\"batch\":64,\"seed\":3}}"

static double deadline(double s)
{
    return tu_deadline(s, ASAN_SLOWDOWN);
}

static void timing_end(void)
{
    tu_timing_end("cluster");
}

static void save_tiny(const char *dir, const char *file, uint64_t seed)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_VAE, &a);
    a.enc.n = a.dec.n = 1;
    a.enc.size[0] = a.dec.size[0] = 32;
    a.z_dim = 4;
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_new(&a, seed, &m, &e) == LD_OK, "model_new: %s", e.msg);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "save %s: %s", path, e.msg);
    ld_model_free(m);
}

/* A daemon's config: models from models_dir (NULL: its own), an admin
 * token, the rest from extra. */
static void write_conf(tu_daemon_t *d, const char *models_dir, const char *extra)
{
    char adm[600], text[4096];
    snprintf(adm, sizeof adm, "%s/admin", d->dir);
    tu_write_file(adm, ADMIN "\n");
    snprintf(text, sizeof text,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = 4\nmodels_dir = %s\nstate_dir = %s\n"
             "data_dir = %s\nadmin_token_file = %s\nshutdown_timeout = 8\nmax_limit = 4096\n%s",
             models_dir ? models_dir : d->models, d->state, d->data, adm, extra ? extra : "");
    tu_write_file(d->conf, text);
}

static long call(tu_resp_t *r, int port, const char *method, const char *path, const char *body)
{
    tu_req_t q = {.token = ADMIN, .port = port};
    return tu_http_once(r, method, path, body, body ? strlen(body) : 0, &q);
}

/* The sha256 of the model name served on port, into out ("" when not served). */
static void served_sha(int port, const char *name, char out[65])
{
    char path[256];
    snprintf(path, sizeof path, "/v1/models/%s", name);
    tu_resp_t r;
    out[0] = '\0';
    if (call(&r, port, "GET", path, NULL) == 200) {
        const cJSON *s = tu_jget(r.json, "sha256");
        if (cJSON_IsString(s))
            snprintf(out, 65, "%s", s->valuestring);
    }
    tu_resp_free(&r);
}

/* Wait (bounded) until name on port is served with a sha256 other than
 * avoid ("" = any), or, with gone, until it is not served; the seconds it took. */
static double wait_sha(int port, const char *name, const char *avoid, int gone, double secs,
                       char out[65])
{
    double t0 = tu_now(), end = deadline(secs);
    for (;;) {
        served_sha(port, name, out);
        if (gone ? !out[0] : out[0] && strcmp(out, avoid) != 0)
            return tu_now() - t0;
        ck_assert_msg(tu_now() < end, "model %s on port %d: still %s after %.0f s", name, port,
                      out[0] ? out : "not served", secs);
        tu_msleep(20);
    }
}

/* Wait (bounded) for n more timer rescans of d: each must pick up a new file
 * probeK.safetensors, K counting on from *k. */
static void wait_scans(const tu_daemon_t *d, int *k, int n)
{
    char f[64], sha[65];
    for (int end = *k + n; *k < end; (*k)++) {
        snprintf(f, sizeof f, "probe%d.safetensors", *k);
        save_tiny(d->models, f, 40 + (uint64_t)*k);
        snprintf(f, sizeof f, "probe%d", *k);
        wait_sha(d->port, f, "", 0, 10, sha);
    }
}

/* Lines of d's log holding needle. */
static int log_count(const tu_daemon_t *d, const char *needle)
{
    char *log = tu_read_text(d->log);
    int n = 0;
    for (const char *p = log; (p = strstr(p, needle)); p++)
        n++;
    free(log);
    return n;
}

/* A daemon of its own on tiny models files[0..n) (seeds 1..n), rescanning
 * every second, started. */
static void start_rescanning(tu_daemon_t *d, int n, const char *const *files)
{
    tu_daemon_dirs(d, ASAN_SLOWDOWN);
    for (int i = 0; i < n; i++)
        save_tiny(d->models, files[i], 1 + (uint64_t)i);
    write_conf(d, NULL, "rescan_interval = 1\naccess_log = no\n");
    tu_daemon_start(d, NULL);
}

/* rename(from_dir/name, to_dir/name), which must succeed. */
static void move_file(const char *from_dir, const char *name, const char *to_dir)
{
    char from[600], to[600];
    snprintf(from, sizeof from, "%s/%s", from_dir, name);
    snprintf(to, sizeof to, "%s/%s", to_dir, name);
    ck_assert_msg(rename(from, to) == 0, "rename %s %s", from, to);
}

/* ------------------------------------------------------------- replica.c */

START_TEST(test_replica_names)
{
    ld_replica_t *r = NULL;
    ld_err_t e;
    ck_assert_int_eq(ld_replica_new("", "", &r, &e), LD_OK);
    ck_assert_str_eq(ld_replica_name(r), "");
    char owner[LD_REPLICA_NAME_MAX + 1];
    ck_assert_int_eq(ld_replica_job_owner(r, "j-000001", owner), 0);
    ld_replica_free(r);

    ck_assert_int_eq(
        ld_replica_new("r2", " r1 = http://127.0.0.1:8081/ ,r2=http://127.0.0.1:8082,r3=https://h", &r, &e),
        LD_OK);
    ck_assert_str_eq(ld_replica_name(r), "r2");
    ck_assert_str_eq(ld_replica_peer_url(r, "r1"), "http://127.0.0.1:8081");
    ck_assert_ptr_null(ld_replica_peer_url(r, "r2")); /* its own entry */
    ck_assert_str_eq(ld_replica_peer_url(r, "r3"), "https://h");
    ck_assert_int_eq(ld_replica_job_owner(r, "j-r1-000007", owner), 1);
    ck_assert_str_eq(owner, "r1");
    ck_assert_int_eq(ld_replica_job_owner(r, "j-r2-000007", owner), 0);
    ck_assert_int_eq(ld_replica_job_owner(r, "j-000007", owner), 0);
    ck_assert_int_eq(ld_replica_job_owner(r, "j-R1-000007", owner), 0);
    ck_assert_int_eq(ld_replica_job_owner(r, NULL, owner), 0);
    ld_replica_free(r);

    static const struct {
        const char *name, *peers, *msg;
    } bad[] = {
        {"R1", "", "replica: 'R1'"},
        {"toolongname", "", "replica"},
        {"r-1", "", "replica"},
        {"r1", "r2", "'r2' is not NAME=URL"},
        {"r1", "=http://x", "not NAME=URL"},
        {"r1", "r2=ftp://x", "http:// or https://"},
        {"r1", "r2=http://a b", "space"},
        {"r1", "r2=http://a,r2=http://b", "r2 is listed twice"},
        {"", "r2=http://a", "peers needs replica"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = NULL;
        ck_assert_msg(ld_replica_new(bad[i].name, bad[i].peers, &r, &e) == LD_EINVAL,
                      "'%s' '%s' accepted", bad[i].name, bad[i].peers);
        ck_assert_ptr_null(r);
        ck_assert_msg(strstr(e.msg, bad[i].msg), "'%s' '%s': message '%s' lacks '%s'",
                      bad[i].name, bad[i].peers, e.msg, bad[i].msg);
    }
}
END_TEST

/* ------------------------------------------------------------- rescan */

/* Replace a served model's file the way a deployment does (write aside,
 * rename over): with rescan_interval set and no SIGHUP, the new bytes are
 * served within the interval, a new file is picked up, a removed one is
 * dropped, and samplers running all along see no failure. */
START_TEST(test_rescan_timer_under_load)
{
    tu_daemon_t d;
    start_rescanning(&d, 1, (const char *const[]){"live.safetensors"});
    char sha[65], prev[65];
    served_sha(d.port, "live", prev);
    ck_assert(prev[0]);

    atomic_int stop = 0;
    enum { T = 3 };
    pthread_t th[T];
    tu_sampler_t s[T];
    for (int i = 0; i < T; i++) {
        s[i] = (tu_sampler_t){.port = d.port, .path = "/v1/models/live/sample", .token = ADMIN,
                              .n = 2, .stop = &stop};
        pthread_create(&th[i], NULL, tu_sampler_run, &s[i]);
    }
    char tmp[600], dst[600];
    snprintf(tmp, sizeof tmp, "%s/live.next", d.models);
    snprintf(dst, sizeof dst, "%s/live.safetensors", d.models);
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        save_tiny(d.models, "live.next", 20 + (uint64_t)k);
        ck_assert_int_eq(rename(tmp, dst), 0);
        /* the interval is 1 s; a loaded machine gets a generous bound */
        double t = wait_sha(d.port, "live", prev, 0, 10, sha);
        worst = t > worst ? t : worst;
        memcpy(prev, sha, sizeof sha);
    }
    save_tiny(d.models, "fresh.safetensors", 30);
    wait_sha(d.port, "fresh", "", 0, 10, sha);
    snprintf(dst, sizeof dst, "%s/fresh.safetensors", d.models);
    ck_assert_int_eq(unlink(dst), 0);
    wait_sha(d.port, "fresh", "", 1, 10, sha);
    atomic_store(&stop, 1);
    int ok = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(s[i].bad == 0, "sampler %d: %d failures (last %ld: %s)", i, s[i].bad,
                      s[i].last_bad, s[i].bad_body);
        ok += s[i].ok;
    }
    ck_assert_msg(ok > 10, "only %d samples during the swaps", ok);
    printf("cluster: rescan picked up a replaced file within %.2f s (interval 1 s), %d samples, "
           "0 failed\n", worst, ok);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* A file that cannot be served is reported once, not at every periodic
 * rescan (the log and latentd_model_events_total{event="failed"} would grow
 * by one every interval); when it changes it is tried, and reported, again. */
START_TEST(test_rescan_reports_bad_file_once)
{
    tu_daemon_t d;
    start_rescanning(&d, 1, (const char *const[]){"good.safetensors"});
    char bad[600], badname[600];
    snprintf(bad, sizeof bad, "%s/broken.safetensors", d.models);
    snprintf(badname, sizeof badname, "%s/bad name!.safetensors", d.models);
    tu_write_file(bad, "not a safetensors file");
    tu_write_file(badname, "x");
    int k = 0;
    wait_scans(&d, &k, 3);
    int fails = log_count(&d, "model load failed name=broken");
    int skips = log_count(&d, "model file skipped file=bad name!");
    ck_assert_msg(fails == 1 && skips == 1, "broken reported %d times, bad name %d times", fails,
                  skips);
    /* changed: tried and reported again */
    tu_write_file(bad, "still not a safetensors file");
    wait_scans(&d, &k, 1);
    double end = deadline(10);
    for (;;) {
        fails = log_count(&d, "model load failed name=broken");
        if (fails == 2)
            break;
        ck_assert_msg(fails < 2 && tu_now() < end, "broken reported %d times after a change",
                      fails);
        tu_msleep(50);
    }
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* DELETE /v1/models/{name} must outlast the periodic rescan: the model stays
 * unloaded until its file changes (or a PUT loads it), not for one interval. */
START_TEST(test_rescan_keeps_delete)
{
    tu_daemon_t d;
    start_rescanning(&d, 2, (const char *const[]){"m.safetensors", "n.safetensors"});
    tu_resp_t r;
    ck_assert_int_eq(call(&r, d.port, "DELETE", "/v1/models/m", NULL), 200);
    tu_resp_free(&r);
    ck_assert_int_eq(call(&r, d.port, "DELETE", "/v1/models/n", NULL), 200);
    tu_resp_free(&r);
    int k = 0;
    wait_scans(&d, &k, 2);
    char sha[65];
    served_sha(d.port, "m", sha);
    ck_assert_msg(!sha[0], "m is served again after DELETE and two rescans");
    /* a PUT serves it again at once; a new file, by the next rescan */
    ck_assert_int_eq(call(&r, d.port, "PUT", "/v1/models/m", NULL), 201);
    tu_resp_free(&r);
    save_tiny(d.dir, "n.safetensors", 3);
    move_file(d.dir, "n.safetensors", d.models);
    wait_sha(d.port, "n", "", 0, 10, sha);
    served_sha(d.port, "m", sha);
    ck_assert(sha[0]);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* A shared folder that shows no model file at all (an unmounted mount point,
 * a share that failed to attach) must not unload every served model: the
 * scan keeps them and says why.  Removing one file of several still unloads
 * that one model. */
START_TEST(test_rescan_keeps_models_of_empty_folder)
{
    tu_daemon_t d;
    start_rescanning(&d, 2, (const char *const[]){"a.safetensors", "b.safetensors"});
    move_file(d.models, "a.safetensors", d.dir);
    move_file(d.models, "b.safetensors", d.dir);
    char sha[65];
    double end = deadline(10);
    while (log_count(&d, "holds no model file") < 2) { /* two scans */
        ck_assert_msg(tu_now() < end, "no scan said the folder is empty: %s", tu_log_tail(&d));
        tu_msleep(50);
    }
    served_sha(d.port, "a", sha);
    ck_assert_msg(sha[0], "a was unloaded by a scan of an empty folder");
    served_sha(d.port, "b", sha);
    ck_assert_msg(sha[0], "b was unloaded by a scan of an empty folder");
    /* back, then one removed: that one goes */
    move_file(d.dir, "a.safetensors", d.models);
    wait_sha(d.port, "b", "", 1, 10, sha);
    served_sha(d.port, "a", sha);
    ck_assert(sha[0]);
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* ------------------------------------------------------------- state lock */

START_TEST(test_state_folder_in_use)
{
    tu_daemon_t a, b;
    tu_daemon_dirs(&a, ASAN_SLOWDOWN);
    tu_daemon_dirs(&b, ASAN_SLOWDOWN);
    save_tiny(a.models, "m.safetensors", 1);
    write_conf(&a, NULL, NULL);
    tu_daemon_start(&a, NULL);
    /* b: its own folders, a's state folder */
    snprintf(b.state, sizeof b.state, "%s", a.state);
    write_conf(&b, a.models, NULL);
    tu_daemon_spawn(&b, NULL, NULL);
    ck_assert_int_eq(tu_daemon_wait_exit(&b, deadline(20)), 2);
    const char *log = tu_log_tail(&b);
    ck_assert_msg(strstr(log, "is in use by another latentd") && strstr(log, "own state_dir"),
                  "no clear message: %s", log);
    tu_resp_t r;
    ck_assert_int_eq(call(&r, a.port, "GET", "/v1/models/m", NULL), 200);
    tu_resp_free(&r);
    tu_daemon_free(&b);
    tu_daemon_stop_ok(&a, 30);
}
END_TEST

/* ------------------------------------------------------------- jobs */

/* Two replicas sharing a model folder: a job submitted to r1 gets an id
 * naming r1; r2 redirects its requests to r1 (307) and serves the model the
 * job wrote once it finishes, by its periodic rescan. */
START_TEST(test_jobs_across_replicas)
{
    tu_daemon_t a, b;
    tu_daemon_dirs(&a, ASAN_SLOWDOWN);
    tu_daemon_dirs(&b, ASAN_SLOWDOWN);
    save_tiny(a.models, "seed.safetensors", 1);
    write_conf(&a, NULL, "replica = r1\nrescan_interval = 1\n");
    tu_daemon_start(&a, NULL);
    char extra[512];
    snprintf(extra, sizeof extra,
             "replica = r2\nrescan_interval = 1\npeers = \"r1=http://127.0.0.1:%d, "
             "r2=http://127.0.0.1:1\"\n",
             a.port);
    write_conf(&b, a.models, extra);
    tu_daemon_start(&b, NULL);

    tu_resp_t r;
    ck_assert_int_eq(call(&r, a.port, "POST", "/v1/jobs", TINY_VAE("made")), 202);
    const cJSON *idv = tu_jget(r.json, "id");
    ck_assert(cJSON_IsString(idv));
    char id[64], path[128], want[256], loc[256];
    snprintf(id, sizeof id, "%s", idv->valuestring);
    tu_resp_free(&r);
    ck_assert_msg(strncmp(id, "j-r1-", 5) == 0, "id %s does not name r1", id);

    static const char *const suffix[] = {"", "/events"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/v1/jobs/%s%s", id, suffix[i]);
        snprintf(want, sizeof want, "http://127.0.0.1:%d%s", a.port, path);
        ck_assert_int_eq(call(&r, b.port, "GET", path, NULL), 307);
        ck_assert_msg(tu_hdr(&r, "Location", loc, sizeof loc) && strcmp(loc, want) == 0,
                      "Location %s, want %s", tu_hdr(&r, "Location", loc, sizeof loc), want);
        tu_expect_error(&r, 307, "elsewhere", "runs on replica r1", "redirect", 1);
        tu_resp_free(&r);
    }
    ck_assert_int_eq(call(&r, b.port, "GET", "/v1/jobs/j-r9-000001", NULL), 404);
    tu_expect_error(&r, 404, "not_found", "not among this replica's peers", "unknown replica", 1);
    tu_resp_free(&r);

    /* the owner answers, and the job finishes there */
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    double end = deadline(60);
    for (;;) {
        ck_assert_int_eq(call(&r, a.port, "GET", path, NULL), 200);
        const cJSON *st = tu_jget(r.json, "state");
        int done = cJSON_IsString(st) && strcmp(st->valuestring, "succeeded") == 0;
        ck_assert_msg(!cJSON_IsString(st) || strcmp(st->valuestring, "failed") != 0,
                      "job failed: %s", r.body.data);
        tu_resp_free(&r);
        if (done)
            break;
        ck_assert_msg(tu_now() < end, "job %s did not finish", id);
        tu_msleep(50);
    }
    char sha_a[65], sha_b[65];
    served_sha(a.port, "made", sha_a);
    ck_assert(sha_a[0]);
    wait_sha(b.port, "made", "", 0, 10, sha_b);
    ck_assert_str_eq(sha_a, sha_b);
    ck_assert_int_eq(call(&r, b.port, "POST", "/v1/models/made/sample", "{\"n\":1,\"seed\":1}"),
                     200);
    tu_resp_free(&r);
    tu_daemon_stop_ok(&b, 30);
    tu_daemon_stop_ok(&a, 30);
}
END_TEST

Suite *suite_cluster(void)
{
    Suite *s = suite_create("cluster");
    TCase *unit = tcase_create("replica");
    tcase_add_test(unit, test_replica_names);
    suite_add_tcase(s, unit);
    TCase *own = tcase_create("daemons");
    tcase_set_timeout(own, 180);
    tcase_add_unchecked_fixture(own, tu_curl_setup, tu_curl_teardown);
    tcase_add_checked_fixture(own, tu_timing_start, timing_end);
    tcase_add_test(own, test_rescan_timer_under_load);
    tcase_add_test(own, test_rescan_reports_bad_file_once);
    tcase_add_test(own, test_rescan_keeps_delete);
    tcase_add_test(own, test_rescan_keeps_models_of_empty_folder);
    tcase_add_test(own, test_state_folder_in_use);
    tcase_add_test(own, test_jobs_across_replicas);
    suite_add_tcase(s, own);
    return s;
}

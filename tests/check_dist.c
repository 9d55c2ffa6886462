/* check_dist.c — data-parallel training over MPI ranks (dist.h), run as a
 * user runs it: `mpirun -np 2 --oversubscribe build/latentd-mpi train ...` on
 * loopback, against the one-process build/latentd on the same data and seed.
 *
 * Open MPI's run-as-root and loopback settings go into each command's own
 * environment (CI runs as root), never into this process's.  Without mpirun or
 * build/latentd-mpi (`make mpi`) every test reports SKIPPED. */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"
#include "tu_sh.h"

#include "latentd/ckpt.h"
#include "latentd/common.h"

#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef LD_MPI_BIN
#define LD_MPI_BIN "build/latentd-mpi"
#endif

#define MPI_ENV                                                                            \
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader " \
    "OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1"
#define MPIRUN "mpirun -np 2 --oversubscribe --bind-to none"
/* small enough for seconds: 800 Fashion-MNIST images, batch 32, 2 epochs = 50 steps */
#define VAE_ARGS "train --kind vae --limit 800 --batch 32 --epochs 2 --hidden 32 --z 4 --seed 7"
#define GAN_ARGS                                                                     \
    "train --kind gan --limit 800 --batch 32 --epochs 2 --g-hidden 32 --d-hidden 32 " \
    "--z 8 --seed 7"

static char *dir;

static void setup(void) { dir = tu_mkdtemp(); }
static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* The job tests talk to their daemons with curl (libcurl in tu_daemon.c). */
static void job_setup(void)
{
    setup();
    curl_global_init(CURL_GLOBAL_DEFAULT);
}
static void job_teardown(void)
{
    curl_global_cleanup();
    teardown();
}

/* Whether mpirun and the MPI build are here; a skip (counted) when not. */
static int have_mpi(void)
{
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        tu_skip("dist: mpirun not installed (openmpi-bin)");
        return 0;
    }
    if (access(LD_MPI_BIN, X_OK) != 0) {
        tu_skip("dist: %s not built (make mpi)", LD_MPI_BIN);
        return 0;
    }
    return 1;
}

/* The largest |a - b| over every tensor of two checkpoints, which must hold
 * the same tensors. */
static double ckpt_max_diff(const char *a_path, const char *b_path)
{
    ld_ckpt_t *a, *b;
    ld_err_t e;
    ck_assert_msg(ld_ckpt_read(a_path, &a, &e) == 0, "%s", e.msg);
    ck_assert_msg(ld_ckpt_read(b_path, &b, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(a->n_tensors, b->n_tensors);
    double worst = 0;
    for (int i = 0; i < a->n_tensors; i++) {
        const ld_tensor_view_t *ta = &a->tensors[i], *tb = ld_ckpt_find(b, ta->name);
        ck_assert_msg(tb && tb->numel == ta->numel, "%s differs in shape", ta->name);
        for (size_t k = 0; k < ta->numel; k++) {
            double d = fabs((double)ta->data[k] - tb->data[k]);
            worst = d > worst ? d : worst;
        }
    }
    ld_ckpt_free(a);
    ld_ckpt_free(b);
    return worst;
}

/* The model at path must be, within 1e-4, the one `latentd ARGS --threads 2`
 * writes: one process with as many workers as 2 ranks of one thread.  what
 * names the case in the printed difference. */
static void expect_one_process(const char *path, const char *args, const char *what)
{
    char *out, one[512];
    snprintf(one, sizeof one, "%s/one.safetensors", dir);
    int rc = tu_sh(&out, LD_BIN " %s --threads 2 --out %s", args, one);
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    free(out);
    double d = ckpt_max_diff(path, one);
    fprintf(stderr, "dist: %s vs 1 process: max |diff| %.3g\n", what, d);
    ck_assert_msg(d <= 1e-4, "%s: parameters differ by %g", what, d);
}

/* 2 ranks of 1 thread against 1 process of 2 threads (the same global batch,
 * the same seed, and the same cut into slices with the same noise streams):
 * the parameters after 50 steps must agree within 1e-4. */
static void ranks_match_one_process(const char *args)
{
    if (!have_mpi())
        return;
    char *out;
    int rc = tu_sh(&out, MPI_ENV " " MPIRUN " " LD_MPI_BIN " %s --threads 1 --out %s/ranks.safetensors",
                args, dir);
    ck_assert_msg(rc == 0, "mpirun exit %d:\n%s", rc, out);
    ck_assert_msg(strstr(out, "2 MPI ranks") && strstr(out, "50 steps"), "%s", out);
    free(out);
    char a[512];
    snprintf(a, sizeof a, "%s/ranks.safetensors", dir);
    expect_one_process(a, args, args);
}

START_TEST(vae_ranks_match_one_process) { ranks_match_one_process(VAE_ARGS); }
END_TEST

START_TEST(gan_ranks_match_one_process) { ranks_match_one_process(GAN_ARGS); }
END_TEST

/* The optimiser runs after the sum over ranks: SGD with Nesterov momentum,
 * both penalties and a cosine rate agree as Adam does. */
START_TEST(sgd_ranks_match_one_process)
{
    ranks_match_one_process(VAE_ARGS " --optimizer sgd --lr 0.005 --momentum 0.9 --nesterov "
                                     "--weight-decay 1e-3 --l1 1e-5 --lr-schedule cosine");
}
END_TEST

/* The plain build started by mpirun must refuse rather than train twice. */
START_TEST(plain_build_refuses_ranks)
{
    if (!have_mpi())
        return;
    char *out;
    int rc = tu_sh(&out, MPI_ENV " " MPIRUN " " LD_BIN " " VAE_ARGS " --out %s/x.safetensors", dir);
    ck_assert_msg(rc != 0 && strstr(out, "built without MPI"), "exit %d:\n%s", rc, out);
    free(out);
    char x[512];
    snprintf(x, sizeof x, "%s/x.safetensors", dir);
    ck_assert_int_ne(access(x, F_OK), 0);
}
END_TEST

/* Processes of a latentd binary, but skip, whose command line names folder
 * (zombies have none, so they do not count). */
static int count_procs(const char *folder, pid_t skip)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char path[300], cmd[8192];
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        cmd[len] = 0;
        if (!strstr(cmd, "latentd") || atoi(e->d_name) == (int)skip)
            continue;
        for (size_t i = 0; i < len; i += strlen(cmd + i) + 1)
            if (strstr(cmd + i, folder)) {
                n++;
                break;
            }
    }
    closedir(d);
    return n;
}

/* Whether count_procs(folder, skip) falls to 0 within 10 s (a killed
 * process takes a moment to exit). */
static int no_procs_left(const char *folder, pid_t skip)
{
    for (double end = tu_deadline(10, 1); count_procs(folder, skip) > 0 && tu_now() < end;)
        tu_msleep(50);
    return count_procs(folder, skip) == 0;
}

/* A rank killed mid-run: the run fails (mpirun's exit code), no rank is left
 * and no model is written; --resume from the last checkpoint then finishes
 * with the parameters of a run that was never interrupted. */
START_TEST(killed_rank_fails_then_resumes)
{
    if (!have_mpi())
        return;
    const char *args = "train --kind vae --limit 6400 --batch 32 --epochs 2 --hidden 64 --z 4 "
                       "--seed 3 --checkpoint-every 10";
    char state[512], out_path[512], cmd[2048];
    snprintf(state, sizeof state, "%s/state.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/ranks.safetensors", dir);
    snprintf(cmd, sizeof cmd, "exec " MPIRUN " " LD_MPI_BIN " %s --threads 1 --state %s --out %s",
             args, state, out_path);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setpgid(0, 0);
        /* this child's environment only */
        putenv("OMPI_ALLOW_RUN_AS_ROOT=1");
        putenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1");
        putenv("OMPI_MCA_btl=self,vader");
        putenv("OMPI_MCA_mpi_yield_when_idle=1");
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    /* the first checkpoint (step 10 of 400) is the sign that training runs */
    double end = tu_deadline(60, 1);
    struct stat st;
    while (stat(state, &st) != 0 && tu_now() < end && waitpid(pid, NULL, WNOHANG) == 0)
        tu_msleep(5);
    ck_assert_msg(stat(state, &st) == 0, "no checkpoint appeared");
    char *ranks;
    tu_sh(&ranks, "pgrep -P %d", (int)pid);
    int victim = 0, n = 0;
    for (char *p = strtok(ranks, "\n"); p; p = strtok(NULL, "\n"), n++)
        victim = atoi(p); /* the last child mpirun started */
    free(ranks);
    ck_assert_msg(n == 2 && victim > 0, "mpirun has %d children", n);
    ck_assert_int_eq(kill(victim, SIGKILL), 0);
    int status = 0, done = 0;
    end = tu_deadline(60, 1);
    while (!(done = waitpid(pid, &status, WNOHANG) == pid) && tu_now() < end)
        tu_msleep(20);
    if (!done)
        kill(-pid, SIGKILL), waitpid(pid, &status, 0);
    ck_assert_msg(done, "mpirun did not end within 60 s after a rank was killed");
    ck_assert_msg(!(WIFEXITED(status) && WEXITSTATUS(status) == 0),
                  "mpirun exited 0: the run ended before the kill");
    ck_assert_msg(no_procs_left(dir, 0), "a rank is still running after mpirun ended");
    ck_assert_msg(access(out_path, F_OK) != 0, "a failed run wrote the model");

    char *out;
    int rc = tu_sh(&out, MPI_ENV " " MPIRUN " " LD_MPI_BIN " %s --threads 1 --state %s --resume --out %s",
                args, state, out_path);
    ck_assert_msg(rc == 0, "resume: exit %d:\n%s", rc, out);
    free(out);
    expect_one_process(out_path, args, "killed, resumed");
}
END_TEST

/* ---- jobs with "ranks": the daemon starts mpirun (jobs_mpi.c) ---- */

#define ADMIN "admin-token-0123456789abcdef0123"
#define TOKEN "token-0123456789abcdef0123456789"
/* the launcher as a config key: root and loopback as flags, not environment */
#define LAUNCHER "mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader"
#define JOB_VAE                                                                          \
    "{\"kind\":\"vae\",\"model\":\"mpivae\",\"limit\":800,\"arch\":{\"hidden\":[32],\"z\":4}," \
    "\"train\":{\"epochs\":2,\"batch\":32,\"seed\":7},\"checkpoint_every\":10,\"ranks\":2}"

/* A daemon whose ranks jobs run mpi_binary. */
static void job_daemon(tu_daemon_t *d, const char *mpi_binary)
{
    tu_daemon_dirs(d, 3);
    char tok[600], adm[600], cwd[512], text[4096], *out;
    snprintf(tok, sizeof tok, "%s/token", d->dir);
    snprintf(adm, sizeof adm, "%s/admin", d->dir);
    tu_write_file(tok, TOKEN "\n");
    tu_write_file(adm, ADMIN "\n");
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    /* never an empty model folder (registry.c's scan; see check_jobs_http.c) */
    ck_assert_int_eq(tu_sh(&out, "cp models/fashion-vae.safetensors %s/", d->models), 0);
    free(out);
    snprintf(text, sizeof text,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = 2\nmodels_dir = %s\nstate_dir = %s\n"
             "data_dir = %s\ntoken_file = %s\nadmin_token_file = %s\nshutdown_timeout = 20\n"
             "mpi_launcher = \"" LAUNCHER "\"\nmpi_binary = %s/%s\n",
             d->models, d->state, d->data, tok, adm, cwd, mpi_binary);
    tu_write_file(d->conf, text);
    tu_daemon_start(d, NULL);
}

/* curl METHOD path [body] with the admin token; the JSON reply (caller frees). */
static cJSON *api(const tu_daemon_t *d, const char *method, const char *path, const char *body)
{
    char *out;
    int rc = tu_sh(&out, "curl -sS --max-time 30 -X %s -H 'Authorization: Bearer " ADMIN "' "
                      "-H 'Content-Type: application/json' %s%s%s http://127.0.0.1:%d%s",
                method, body ? "--data-binary '" : "", body ? body : "", body ? "'" : "", d->port,
                path);
    cJSON *j = cJSON_Parse(out);
    ck_assert_msg(rc == 0 && j, "%s %s: %s", method, path, out);
    free(out);
    return j;
}

static const char *jtext(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* POST a spec; the job's id into id. */
static void submit(const tu_daemon_t *d, const char *spec, char id[32])
{
    cJSON *r = api(d, "POST", "/v1/jobs", spec);
    snprintf(id, 32, "%s", jtext(r, "id"));
    ck_assert_msg(id[0], "no id for %s", spec);
    cJSON_Delete(r);
}

/* Poll the job until its state is one of want (space-separated), or fail. */
static cJSON *job_wait(const tu_daemon_t *d, const char *id, const char *want, long min_step,
                       double secs)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    for (double end = tu_deadline(secs, 1);;) {
        cJSON *j = api(d, "GET", path, NULL);
        const char *st = jtext(j, "state");
        long step = (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "step"));
        if (strstr(want, st) && step >= min_step)
            return j;
        char *text = cJSON_PrintUnformatted(j);
        ck_assert_msg(tu_now() < end, "job %s: %.800s, want %s\n%s", id, text, want,
                      tu_log_tail(d));
        free(text);
        cJSON_Delete(j);
        tu_msleep(50);
    }
}

/* A job with "ranks": 2 runs as mpirun, streams its progress over SSE to the
 * end, publishes a model that is served, and that model is the one a
 * single process with the same spec and 2 threads trains. */
START_TEST(job_with_ranks_trains_and_serves)
{
    if (!have_mpi())
        return;
    tu_daemon_t d;
    job_daemon(&d, LD_MPI_BIN);
    char id[32];
    submit(&d, JOB_VAE, id);
    char *sse;
    int rc = tu_sh(&sse, "curl -sS -N --max-time 120 -H 'Authorization: Bearer " ADMIN "' "
                      "http://127.0.0.1:%d/v1/jobs/%s/events", d.port, id);
    ck_assert_msg(rc == 0 && strstr(sse, "event: progress") && strstr(sse, "event: end") &&
                      strstr(sse, "\"state\":\"succeeded\"") && strstr(sse, "\"step\":50"),
                  "events:\n%.2000s\n%s", sse, tu_log_tail(&d));
    free(sse);
    cJSON *j = job_wait(&d, id, "succeeded", 50, 10);
    cJSON_Delete(j);
    char *out;
    rc = tu_sh(&out, "curl -sS -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer " TOKEN "' "
                  "http://127.0.0.1:%d/v1/models/mpivae", d.port);
    ck_assert_msg(rc == 0 && !strcmp(out, "200"), "GET /v1/models/mpivae: %s", out);
    free(out);
    char a[700];
    snprintf(a, sizeof a, "%s/mpivae.safetensors", d.models);
    expect_one_process(a, "train --kind vae --limit 800 --hidden 32 --z 4 --epochs 2 --batch 32 --seed 7",
                       "job with 2 ranks");
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* A cancelled ranks job leaves no rank running; ranks that fail (here the
 * plain build, which refuses to run as ranks) fail the job with their
 * message and leave none either. */
START_TEST(job_with_ranks_cancel_and_failure)
{
    if (!have_mpi())
        return;
    tu_daemon_t d;
    job_daemon(&d, LD_MPI_BIN);
    /* bad "ranks": refused with the field named, the daemon goes on */
    static const char *const bad[][2] = {
        {"{\"kind\":\"vae\",\"model\":\"m\",\"ranks\":0}", "ranks: 0 is outside 1..64"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"ranks\":1.5}", "ranks: expected an integer"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"ranks\":\"2\"}", "ranks: expected an integer"},
        {"{\"kind\":\"vae\",\"model\":\"m\",\"train\":{\"batch\":4},\"ranks\":8}",
         "ranks: 8 is more than train.batch 4"},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(bad); i++) {
        cJSON *e = api(&d, "POST", "/v1/jobs", bad[i][0]);
        char *text = cJSON_PrintUnformatted(e);
        ck_assert_msg(strstr(text, bad[i][1]), "%s: %s", bad[i][0], text);
        free(text);
        cJSON_Delete(e);
    }
    char id[32], path[64];
    submit(&d,
           "{\"kind\":\"vae\",\"model\":\"long\",\"limit\":4096,\"arch\":{\"hidden\":[32],"
           "\"z\":4},\"train\":{\"epochs\":1000,\"batch\":32},\"ranks\":2}",
           id);
    cJSON_Delete(job_wait(&d, id, "running", 20, 60));
    ck_assert_int_eq(count_procs(d.dir, d.pid), 2);
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    cJSON_Delete(api(&d, "DELETE", path, NULL));
    cJSON_Delete(job_wait(&d, id, "cancelled", 0, 30));
    ck_assert_msg(no_procs_left(d.dir, d.pid), "a rank is still running after the cancel");
    tu_daemon_stop_ok(&d, 30);

    job_daemon(&d, LD_BIN);
    submit(&d, JOB_VAE, id);
    cJSON *j = job_wait(&d, id, "failed", 0, 60);
    ck_assert_msg(strstr(jtext(j, "error"), "built without MPI"), "error: %s", jtext(j, "error"));
    cJSON_Delete(j);
    ck_assert_msg(no_procs_left(d.dir, d.pid), "a rank is still running after the failure");
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

/* A daemon stopped while a ranks job runs: the ranks stop together and rank
 * 0 saves the state, the job is interrupted; the next start resumes it from
 * that state and it ends with the model of an uninterrupted run. */
START_TEST(job_with_ranks_resumes_after_restart)
{
    if (!have_mpi())
        return;
    tu_daemon_t d;
    job_daemon(&d, LD_MPI_BIN);
    char id[32];
    submit(&d,
           "{\"kind\":\"vae\",\"model\":\"resumed\",\"limit\":3200,\"arch\":{\"hidden\":"
           "[64],\"z\":4},\"train\":{\"epochs\":60,\"batch\":32,\"seed\":5},"
           "\"checkpoint_every\":1000,\"ranks\":2}",
           id);
    cJSON_Delete(job_wait(&d, id, "running", 20, 60));
    ck_assert_int_eq(tu_daemon_stop(&d, 60), 0);
    ck_assert_msg(no_procs_left(d.dir, 0), "a rank outlived the daemon");
    char rec_path[700];
    snprintf(rec_path, sizeof rec_path, "%s/jobs/%s/job.json", d.state, id);
    char *rec = tu_read_text(rec_path);
    ck_assert_msg(strstr(rec, "\"state\":\"interrupted\""), "record: %.800s", rec);
    free(rec);

    tu_daemon_start(&d, NULL);
    cJSON *j = job_wait(&d, id, "succeeded", 600, 120);
    long from = (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "resumed_from_step"));
    ck_assert_msg(from >= 20 && from < 6000, "resumed_from_step %ld", from);
    cJSON_Delete(j);
    fprintf(stderr, "dist: the job resumed from step %ld\n", from);
    char a[700];
    snprintf(a, sizeof a, "%s/resumed.safetensors", d.models);
    expect_one_process(a, "train --kind vae --limit 3200 --hidden 64 --z 4 --epochs 60 --batch 32 --seed 5",
                       "job stopped, resumed");
    tu_daemon_stop_ok(&d, 30);
}
END_TEST

Suite *suite_dist(void)
{
    Suite *s = suite_create("dist");
    TCase *tc = tcase_create("mpirun");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, vae_ranks_match_one_process);
    tcase_add_test(tc, gan_ranks_match_one_process);
    tcase_add_test(tc, sgd_ranks_match_one_process);
    tcase_add_test(tc, plain_build_refuses_ranks);
    tcase_add_test(tc, killed_rank_fails_then_resumes);
    suite_add_tcase(s, tc);
    TCase *jobs = tcase_create("jobs");
    tcase_add_checked_fixture(jobs, job_setup, job_teardown);
    tcase_set_timeout(jobs, 300);
    tcase_add_test(jobs, job_with_ranks_trains_and_serves);
    tcase_add_test(jobs, job_with_ranks_cancel_and_failure);
    tcase_add_test(jobs, job_with_ranks_resumes_after_restart);
    suite_add_tcase(s, jobs);
    return s;
}

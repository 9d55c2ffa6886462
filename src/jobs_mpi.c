/* jobs_mpi.c — a job whose spec has "ranks": K > 1 trains as K MPI ranks
 * outside the daemon (jobs.h, "MPI jobs").
 *
 * The worker thread writes the spec next to the job's record, starts
 *   LAUNCHER -np K [--hostfile H] MPI_BINARY train --spec SPEC --data PATH
 *            --threads 1 --state STATE [--resume] --progress-lines --out MODEL
 * as the leader of a new session, and feeds rank 0's progress lines (stdout)
 * to the same progress callback an in-process run calls, so the record,
 * events, history and checkpoints behave alike.  Its stderr goes to mpi.log
 * in the job's folder; a failure's message is that log's last line.
 *
 * Stopping: a cancel SIGKILLs every process of the child's session (mpirun
 * puts each local rank in a process group of its own, but they stay in its
 * session), so no rank outlives it and no state is written, as for a cancel
 * in the daemon; ranks on other hosts die with mpirun's daemons there.  A
 * shutdown (or a failed record write) sends SIGUSR1, which mpirun forwards:
 * the ranks agree to stop, rank 0 saves the state, and the job resumes from
 * it later; after STOP_GRACE_S the session is killed. */
#define _GNU_SOURCE
#include "jobs_impl.h"

#include "latentd/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STOP_GRACE_S 30.0
#define MAX_ARGS 64
#define LINE_MAX_BYTES 4096

/* SIGKILL every process of session sid (the child and all it started here). */
static void kill_session(pid_t sid)
{
    DIR *d = opendir("/proc");
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        /* "pid (comm) state ppid pgrp session ...": comm may hold anything */
        const char *p = strrchr(buf, ')');
        int ppid, pgrp, sess;
        char st;
        if (p && sscanf(p + 1, " %c %d %d %d", &st, &ppid, &pgrp, &sess) == 4 && sess == sid)
            kill((pid_t)atoi(e->d_name), SIGKILL);
    }
    closedir(d);
}

/* The MPI build of latentd: the configured one, else latentd-mpi beside
 * this executable. */
static int mpi_binary(const ld_jobs_t *j, char *dst, size_t len, ld_err_t *err)
{
    if (j->cfg.mpi_binary[0]) {
        snprintf(dst, len, "%s", j->cfg.mpi_binary);
        return LD_OK;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return ld_err_set(err, LD_EIO, "cannot find this executable: %s", strerror(errno));
    self[n] = 0;
    if (snprintf(dst, len, "%s/latentd-mpi", dirname(self)) >= (int)len)
        return ld_err_set(err, LD_EINVAL, "mpi_binary path too long");
    return LD_OK;
}

/* One progress line into p (names from the kind). 0, or -1 if malformed. */
static int parse_line(const char *line, ld_kind_t kind, ld_progress_t *p)
{
    cJSON *o = cJSON_Parse(line);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return -1;
    }
    memset(p, 0, sizeof *p);
    const cJSON *loss = cJSON_GetObjectItemCaseSensitive(o, "loss");
#define NUM(k) cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, k))
    p->step = (long)NUM("step");
    p->steps_total = (long)NUM("steps_total");
    p->epoch = (int)NUM("epoch");
    p->epochs = (int)NUM("epochs");
    p->samples_per_s = NUM("samples_per_s");
    p->eta_s = NUM("eta_s");
    p->elapsed_s = NUM("elapsed_s");
    p->epoch_done = (int)NUM("epoch_done");
    p->finished = (int)NUM("finished");
#undef NUM
    const char *const *names;
    p->n_losses = ld_train_loss_names(kind, &names);
    int i = 0;
    for (const cJSON *v = loss ? loss->child : NULL; v && i < p->n_losses; v = v->next, i++) {
        p->loss_names[i] = names[i];
        p->loss[i] = cJSON_GetNumberValue(v);
    }
    int ok = cJSON_IsArray(loss) && i == p->n_losses && p->step > 0 && p->steps_total >= p->step;
    cJSON_Delete(o);
    return ok ? 0 : -1;
}

/* The ranks' own last message in the log (a line "latentd ..."), else the
 * last line that is not one of mpirun's rules of dashes. */
static void last_message(const char *path, char *dst, size_t len)
{
    uint8_t *buf;
    size_t n;
    dst[0] = 0;
    if (ld_read_file(path, 1 << 20, &buf, &n, NULL))
        return;
    int ours = 0;
    for (char *save, *l = strtok_r((char *)buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        int mine = strncmp(l, "latentd", 7) == 0;
        if (l[strspn(l, "- \r")] && (mine || !ours)) {
            snprintf(dst, len, "%s", l);
            ours |= mine;
        }
    }
    free(buf);
}

/* Under lock: the first step of a resumed run tells where it resumed. */
static void note_resume_locked(job_t *job, long from)
{
    job->resumed_from_step = from;
    while (job->hist_n > 0 && job->hist[job->hist_n - 1].step > from)
        job->hist_n--; /* those steps are run again */
    snprintf(job->note, sizeof job->note, "resumed from its checkpoint at step %ld", from);
}

int jobs_mpi_run(ld_jobs_t *j, job_t *job, const char *state_path, ld_progress_fn cb, void *user,
                 ld_model_t **out, ld_err_t *err)
{
    char spec_path[PATH_MAX], log_path[PATH_MAX], model_path[PATH_MAX], data_path[PATH_MAX],
        bin[PATH_MAX], np[16], launcher[sizeof j->cfg.mpi_launcher];
    int rc;
    if (jobs_job_path(j, job, "mpi_spec.json", spec_path, sizeof spec_path) ||
        jobs_job_path(j, job, "mpi.log", log_path, sizeof log_path) ||
        jobs_job_path(j, job, "mpi_model.safetensors", model_path, sizeof model_path))
        return ld_err_set(err, LD_EINVAL, "state path too long");
    if ((rc = ld_jobspec_resolve_data(j->data_dir, job->spec->data, data_path, sizeof data_path,
                                      err)) ||
        (rc = mpi_binary(j, bin, sizeof bin, err)) ||
        (rc = ld_write_atomic(spec_path, job->spec_json, strlen(job->spec_json), err)))
        return rc;
    if (access(bin, X_OK) != 0)
        return ld_err_set(err, LD_EINVAL, "ranks: %s is not an executable latentd built with MPI "
                                          "(make mpi; config key mpi_binary)", bin);
    struct stat st;
    int resume = stat(state_path, &st) == 0;
    unlink(model_path);

    const char *argv[MAX_ARGS];
    int argc = 0;
    snprintf(launcher, sizeof launcher, "%s", j->cfg.mpi_launcher[0] ? j->cfg.mpi_launcher : "mpirun");
    for (char *save, *w = strtok_r(launcher, " \t", &save); w && argc < MAX_ARGS - 24;
         w = strtok_r(NULL, " \t", &save))
        argv[argc++] = w;
    snprintf(np, sizeof np, "%d", job->spec->ranks);
    argv[argc++] = "-np";
    argv[argc++] = np;
    if (j->cfg.mpi_hostfile[0]) {
        argv[argc++] = "--hostfile";
        argv[argc++] = j->cfg.mpi_hostfile;
    }
    const char *tail[] = {bin, "train", "--spec", spec_path, "--data", data_path,
                          "--threads", "1", "--state", state_path, "--progress-lines",
                          "--out", model_path};
    for (size_t i = 0; i < LD_ARRAY_LEN(tail); i++)
        argv[argc++] = tail[i];
    if (resume)
        argv[argc++] = "--resume";
    argv[argc] = NULL;

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return ld_err_set(err, LD_EIO, "pipe: %s", strerror(errno));
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_t pid = logfd < 0 ? -1 : fork();
    if (pid == 0) {
        /* the child: its own session, a clean signal state, stdout the pipe */
        setsid();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        dup2(pfd[1], 1);
        dup2(logfd, 2);
        closefrom(3);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "latentd: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int fork_errno = errno;
    close(pfd[1]);
    if (logfd >= 0)
        close(logfd);
    if (pid < 0) {
        close(pfd[0]);
        return ld_err_set(err, LD_EIO, "cannot start the MPI launcher: %s", strerror(fork_errno));
    }
    jobs_log(j, LD_LOG_INFO, "job %s: %s ranks started (pid %ld, %s)", job->id, np, (long)pid,
             resume ? "resuming" : "from step 0");

    char line[LINE_MAX_BYTES];
    size_t have = 0;
    int first = 1, stop_sent = 0, killed = 0, bad_lines = 0;
    double stop_at = 0;
    for (;;) {
        int cancel = atomic_load(&job->cancel), stopping = atomic_load(&j->stopping);
        if (cancel && !killed) {
            kill_session(pid);
            killed = 1;
        } else if (stopping && !stop_sent) {
            kill(pid, SIGUSR1);
            stop_sent = 1;
            stop_at = ld_now();
        }
        if (stop_sent && !killed && ld_now() - stop_at > STOP_GRACE_S) {
            kill_session(pid);
            killed = 1;
        }
        struct pollfd pf = {pfd[0], POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t n = read(pfd[0], line + have, sizeof line - 1 - have);
        if (n <= 0)
            break; /* every writer is gone */
        have += (size_t)n;
        line[have] = 0;
        char *s = line, *nl;
        while ((nl = strchr(s, '\n'))) {
            *nl = 0;
            ld_progress_t p;
            if (parse_line(s, job->spec->kind, &p) != 0) {
                bad_lines++;
            } else {
                if (first && resume) {
                    pthread_mutex_lock(&j->lock);
                    note_resume_locked(job, p.step - 1);
                    pthread_mutex_unlock(&j->lock);
                }
                first = 0;
                if (cb(&p, user) && !stop_sent && !killed && !atomic_load(&job->cancel)) {
                    kill(pid, SIGUSR1); /* e.g. a record write failed: stop with state */
                    stop_sent = 1;
                    stop_at = ld_now();
                }
            }
            s = nl + 1;
        }
        have = strlen(s);
        memmove(line, s, have + 1);
        if (have == sizeof line - 1)
            have = 0; /* a line this long is no progress line */
    }
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    kill_session(pid); /* whatever the launcher left behind here */
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (bad_lines)
        jobs_log(j, LD_LOG_WARN, "job %s: %d malformed progress lines", job->id, bad_lines);
    if (!ok && (killed || stop_sent)) {
        pthread_mutex_lock(&j->lock);
        long step = job->step;
        pthread_mutex_unlock(&j->lock);
        return ld_err_set(err, LD_ECANCELLED, "stopped at step %ld", step);
    }
    if (!ok) {
        char why[300];
        last_message(log_path, why, sizeof why);
        return ld_err_set(err, LD_EIO, "the MPI ranks failed (%s %d): %s",
                          WIFEXITED(status) ? "exit" : "signal",
                          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
                          why[0] ? why : "no message");
    }
    rc = ld_model_load(model_path, out, err);
    unlink(model_path);
    return rc;
}

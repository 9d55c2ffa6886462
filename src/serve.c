/* serve.c — see include/latentd/serve.h.
 *
 * Threads: the main thread parses the configuration, starts everything, then
 * waits for signals on a self-pipe (the handlers only set flags and write a
 * byte, so whichever thread the kernel picks — MHD's or OpenBLAS's — is
 * fine).  MHD's threads serve requests; the jobs engine's workers train
 * (under SCHED_IDLE, one core each).  Shutdown runs on the main thread:
 *
 *   ld_http_drain        stop accepting; new requests get 503
 *     on_drain hook      ld_jobs_shutdown: running jobs checkpoint and are
 *                        recorded interrupted; every event stream is woken,
 *                        sends its final event and ends
 *     wait               for requests in flight, streams included
 *   ld_http_free         stop MHD (no connection is suspended any more)
 *   ld_jobs_free         no stream holds a subscription any more
 *   api, registry, metrics
 */
#define _GNU_SOURCE
#include "latentd/serve.h"

#include "latentd/api.h"
#include "latentd/fsutil.h"
#include "latentd/http.h"
#include "latentd/jobs.h"
#include "latentd/jobs_api.h"
#include "latentd/web.h"
#include "latentd/log.h"
#include "latentd/metrics.h"
#include "latentd/nn.h"
#include "latentd/registry.h"
#include "latentd/replica.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef LD_VERSION
#define LD_VERSION "0.1.0"
#endif

/* Stack of each HTTP thread: handlers keep big buffers on the heap, so a
 * modest stack is plenty (sanitizers need more room for their redzones). */
#if defined(__SANITIZE_ADDRESS__)
#define HTTP_THREAD_STACK (2u << 20)
#else
#define HTTP_THREAD_STACK (512u << 10)
#endif

#define TOKEN_MIN 16
#define TOKEN_MAX 4096

static const char usage[] =
    "usage: latentd serve [--config FILE] [--bind ADDR] [--port N] [--models DIR]\n"
    "                     [--state DIR] [--data DIR] [--token-file FILE]\n"
    "                     [--admin-token-file FILE] [--log-level debug|info|warn|error]\n"
    "                     [--set KEY=VALUE]... [--check-config] [--print-config]\n"
    "Flags override the config file's keys; --set overrides any key.\n"
    "Signals: SIGTERM/SIGINT drain and exit, SIGHUP rescans the model folder\n"
    "(as does the timer of rescan_interval).\n";

/* ------------------------------------------------------------- arguments */

/* The value of a flag given as "--flag VALUE" or "--flag=VALUE", else NULL. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag, int *missing)
{
    size_t n = strlen(flag);
    const char *a = argv[*i];
    if (strncmp(a, flag, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

int ld_serve_parse_args(int argc, char **argv, ld_config_t *cfg, int *print_only, int *check_only,
                        ld_err_t *err)
{
    ld_config_defaults(cfg);
    *print_only = *check_only = 0;
    /* pass 1: the config file, so that flags override it wherever they appear */
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v = flag_value(argc, argv, &i, "--config", &missing);
        if (missing)
            return ld_err_set(err, LD_EINVAL, "--config needs a file");
        if (v)
            config = v;
    }
    if (config) {
        int rc = ld_config_load(cfg, config, err);
        if (rc != LD_OK)
            return rc;
    }
    /* pass 2: everything else, in order */
    int n_keys;
    const ld_cfg_key_t *keys = ld_config_keys(&n_keys);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int missing = 0;
        const char *v;
        if (flag_value(argc, argv, &i, "--config", &missing))
            continue;
        if (strcmp(a, "--print-config") == 0) {
            *print_only = 1;
            continue;
        }
        if (strcmp(a, "--check-config") == 0) {
            *check_only = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return ld_err_set(err, LD_ECANCELLED, "help");
        if ((v = flag_value(argc, argv, &i, "--set", &missing)) != NULL) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v)
                return ld_err_set(err, LD_EINVAL, "--set expects KEY=VALUE, got '%s'", v);
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)(eq - v), v);
            int rc = ld_config_set(cfg, key, eq + 1, "--set", err);
            if (rc != LD_OK)
                return rc;
            continue;
        }
        if (missing)
            return ld_err_set(err, LD_EINVAL, "%s needs a value", a);
        int matched = 0;
        for (int k = 0; k < n_keys && !matched; k++) {
            if (!keys[k].flag)
                continue;
            v = flag_value(argc, argv, &i, keys[k].flag, &missing);
            if (missing)
                return ld_err_set(err, LD_EINVAL, "%s needs a value", keys[k].flag);
            if (v) {
                int rc = ld_config_set(cfg, keys[k].name, v, keys[k].flag, err);
                if (rc != LD_OK)
                    return rc;
                matched = 1;
            }
        }
        if (!matched)
            return ld_err_set(err, LD_EINVAL, "unknown argument '%s'", a);
    }
    if (cfg->body_memory_limit < cfg->max_body_bytes)
        return ld_err_set(err, LD_EINVAL,
                          "body_memory_limit (%lld) must be at least max_body_bytes (%lld)",
                          cfg->body_memory_limit, cfg->max_body_bytes);
    return LD_OK;
}

int ld_serve_read_token(const char *path, char **out, ld_err_t *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    ld_err_t e;
    int rc = ld_read_file(path, 64 * 1024, &buf, &len, &e);
    if (rc != LD_OK)
        return ld_err_set(err, rc, "token file %s: %s", path, e.msg);
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 0077))
        ld_log_warn("token file %s is readable by group or others (mode %03o); chmod 600 it",
                    path, (unsigned)(st.st_mode & 0777));
    char *s = (char *)buf;
    s[len] = '\0';
    char *nl = strpbrk(s, "\r\n");
    if (nl)
        *nl = '\0';
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7F) {
            free(buf);
            return ld_err_set(err, LD_EINVAL,
                              "token file %s: the token has a space or a non-printable character",
                              path);
        }
    }
    if (n < TOKEN_MIN || n > TOKEN_MAX) {
        free(buf);
        return ld_err_set(err, LD_EINVAL,
                          "token file %s: the token must be %d to %d characters (got %zu)", path,
                          TOKEN_MIN, TOKEN_MAX, n);
    }
    char *t = strdup(s);
    free(buf);
    if (!t)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    *out = t;
    return LD_OK;
}

/* -------------------------------------------------------------- sd_notify */

int ld_sd_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL counted */
    else
        n++;
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    ssize_t w;
    do
        w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    while (w < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (w < 0) {
        ld_log_debug("sd_notify %s: %s", path, strerror(saved));
        return -1;
    }
    return 1;
}

/* ---------------------------------------------------------------- signals */

static volatile sig_atomic_t g_term, g_hup;
static int g_sigpipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    if (sig == SIGHUP)
        g_hup = 1;
    else
        g_term = sig;
    char c = 0;
    ssize_t w = write(g_sigpipe[1], &c, 1); /* full pipe: a wake-up is already pending */
    (void)w;
    errno = saved;
}

static int install_signals(ld_err_t *err)
{
    if (pipe2(g_sigpipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return ld_err_set(err, LD_EIO, "pipe: %s", strerror(errno));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return LD_OK;
}

static void restore_signals(void)
{
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    close(g_sigpipe[0]);
    close(g_sigpipe[1]);
    g_sigpipe[0] = g_sigpipe[1] = -1;
}

/* Microseconds between watchdog pings, 0 when systemd did not ask. */
static long long watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    if (!us)
        return 0;
    if (pid && atol(pid) != (long)getpid())
        return 0;
    long long v = atoll(us);
    return v > 0 ? v / 2 : 0;
}

/* ------------------------------------------------------------------- main */

/* quiet: log only a scan that changed something (the periodic ones) */
static void scan_models(ld_registry_t *reg, const char *why, int quiet)
{
    int loaded = 0, failed = 0, unloaded = 0;
    ld_err_t e;
    if (ld_registry_scan(reg, &loaded, &failed, &unloaded, &e) != LD_OK)
        ld_log_error("model scan (%s) failed: %s", why, e.msg);
    else if (!quiet || loaded || unloaded)
        ld_log_info("model scan (%s) dir=%s serving=%d loaded=%d failed=%d unloaded=%d", why,
                    ld_registry_dir(reg), ld_registry_count(reg), loaded, failed, unloaded);
}

/* ---- the jobs engine's callbacks ---- */

/* publish: serve the file a job just wrote (MODELS/{name}.safetensors) as name,
 * replacing a model of that name atomically (requests in flight finish on the
 * old version).  Runs on a worker thread. */
static int publish_model(void *user, const char *name, const char *path, ld_err_t *err)
{
    ld_registry_t *reg = user;
    const char *slash = strrchr(path, '/');
    return ld_registry_load(reg, name, slash ? slash + 1 : path, NULL, NULL, err);
}

static void jobs_log(void *user, ld_log_level_t level, const char *line)
{
    ld_log(level, "%s", line);
}

/* Metrics collector: the engine's families, appended as they are. */
/* The jobs engine's busy callback: serving counts as busy while requests
 * keep, on average over the last window (YIELD_WINDOW_S, or the training
 * step since the last call if longer), at least `load` of them in flight
 * (training_yield_load / 100).  Called by every worker thread. */
#define YIELD_WINDOW_S 0.005
typedef struct {
    _Atomic(ld_http_t *) http; /* NULL until the server exists; workers are
                                  joined (ld_jobs_shutdown) before it is freed */
    double load;
    pthread_mutex_t mu;        /* guards the rest */
    double t_last, busy_last;  /* the start of the current window */
    int busy;                  /* the decision of the last full window */
} yield_ctx_t;

static int serving_busy(void *user)
{
    yield_ctx_t *y = user;
    ld_http_t *h = atomic_load_explicit(&y->http, memory_order_acquire);
    if (!h)
        return 0;
    pthread_mutex_lock(&y->mu);
    double now = ld_now(), dt = now - y->t_last;
    if (dt >= YIELD_WINDOW_S) {
        double busy = ld_http_busy_seconds(h);
        y->busy = y->t_last > 0 && (busy - y->busy_last) / dt >= y->load;
        y->t_last = now;
        y->busy_last = busy;
    }
    int b = y->busy;
    pthread_mutex_unlock(&y->mu);
    return b;
}

static void jobs_collect(ld_buf_t *out, void *ctx)
{
    char *text = ld_jobs_metrics_text(ctx);
    if (text)
        ld_buf_puts(out, text);
    free(text);
}

/* Drain hook: stop training (checkpoint, record interrupted) and end every
 * event stream, so the drain's wait for requests in flight can finish. */
static void jobs_drain(void *ctx)
{
    ld_log_info("stopping training jobs (running ones checkpoint and resume at the next start)");
    ld_jobs_shutdown(ctx);
}

/* The listening address must be numeric (as ld_http_start requires): checked
 * before --check-config answers and before the state folder is created. */
static int check_bind(const char *bind, ld_err_t *err)
{
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, bind, addr) == 1 || inet_pton(AF_INET6, bind, addr) == 1)
        return LD_OK;
    return ld_err_set(err, LD_EINVAL, "bind: '%.200s' is not an IPv4 or IPv6 address", bind);
}

static int check_dir(const char *what, const char *dir, int create, ld_err_t *err)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return ld_err_set(err, LD_EINVAL, "%s %s is not a folder", what, dir);
        return LD_OK;
    }
    if (!create || errno != ENOENT)
        return ld_err_set(err, LD_EINVAL, "%s %s: %s", what, dir, strerror(errno));
    ld_err_t e;
    if (ld_mkdir_p(dir, &e) != LD_OK)
        return ld_err_set(err, LD_EIO, "%s %s: %s", what, dir, e.msg);
    return LD_OK;
}

/* Every route of the daemon onto http, in table order: the API's (/v1, /v2,
 * health, metrics), the jobs', the web page's and /openapi.json.  `latentd
 * serve` and `latentd routes` share it, so the listing is the served table. */
static int add_routes(ld_http_t *http, ld_api_t *api, ld_jobs_t *jobs, ld_web_t *web,
                      ld_err_t *err)
{
    int rc = ld_api_register(api, http, err);
    if (rc == LD_OK)
        rc = ld_jobs_api_register(http, jobs, err);
    if (rc == LD_OK)
        rc = ld_web_register(web, http, err);
    return rc;
}

int ld_serve_routes_main(int argc, char **argv)
{
    if (argc > 1) {
        int help = !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h");
        fputs("usage: latentd routes\n\nPrint the HTTP routes of `latentd serve` (with the "
              "built-in web page), one a line:\nMETHOD PATH AUTH, AUTH being none, inference "
              "or admin.  GET routes also answer HEAD.\n",
              help ? stdout : stderr);
        return help ? 0 : 2;
    }
    static const char *const auth[] = {"none", "inference", "admin"};
    ld_http_opts_t ho = {.bind = "127.0.0.1", .threads = 1};
    ld_registry_t *reg = NULL;
    ld_http_t *http = NULL;
    ld_api_t *api = NULL;
    ld_web_t *web = NULL;
    ld_err_t err;
    int status = 1;
    /* nothing is loaded, bound or started: the handlers' contexts only need to exist */
    if (ld_registry_new(".", &reg, &err) == LD_OK && ld_http_new(&ho, NULL, &http, &err) == LD_OK &&
        ld_api_new(&(ld_api_opts_t){.registry = reg}, &api, &err) == LD_OK &&
        ld_web_new("builtin", &web, &err) == LD_OK &&
        add_routes(http, api, NULL, web, &err) == LD_OK) {
        const ld_route_t *r;
        for (int i = 0; (r = ld_http_route_at(http, i)) != NULL; i++)
            printf("%s %s %s\n", r->method, r->pattern, auth[r->auth]);
        status = fflush(stdout) == 0 ? 0 : 1;
    } else {
        fprintf(stderr, "latentd routes: %s\n", err.msg);
    }
    ld_http_free(http);
    ld_api_free(api);
    ld_web_free(web);
    ld_registry_free(reg);
    return status;
}

int ld_serve_main(int argc, char **argv)
{
    ld_config_t cfg;
    int print_only, check_only;
    ld_err_t err;
    int rc = ld_serve_parse_args(argc, argv, &cfg, &print_only, &check_only, &err);
    if (rc == LD_ECANCELLED) {
        fputs(usage, stdout);
        return 0;
    }
    if (rc != LD_OK) {
        fprintf(stderr, "latentd serve: %s\n(latentd serve --help shows the flags)\n", err.msg);
        return 2;
    }
    if (print_only) {
        char *dump = ld_config_dump(&cfg);
        if (dump)
            fputs(dump, stdout);
        free(dump);
        return dump ? 0 : 1;
    }
    ld_log_set_level((ld_log_level_t)cfg.log_level);
    /* Blocks of 128 KiB and more (weights, file buffers, batcher panels)
     * always come from mmap and go back to the kernel when freed.  Left to
     * itself, glibc raises this threshold to the size of the largest mmapped
     * block ever freed: after the first model reload, every later model's
     * blocks came from the loading HTTP thread's malloc arena, which keeps
     * freed space, and the daemon grew with each reload (docs/reliability.md,
     * Soak).  Setting the threshold turns that adjustment off. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);

    char *token = NULL, *admin = NULL;
    ld_replica_t *replica = NULL;
    if ((cfg.token_file[0] && ld_serve_read_token(cfg.token_file, &token, &err) != LD_OK) ||
        (cfg.admin_token_file[0] &&
         ld_serve_read_token(cfg.admin_token_file, &admin, &err) != LD_OK) ||
        check_bind(cfg.bind, &err) != LD_OK ||
        ld_replica_new(cfg.replica, cfg.peers, &replica, &err) != LD_OK ||
        check_dir("model folder (models_dir)", cfg.models_dir, 0, &err) != LD_OK ||
        (strcmp(cfg.web, "builtin") != 0 && strcmp(cfg.web, "off") != 0 &&
         check_dir("web page folder (web)", cfg.web, 0, &err) != LD_OK)) {
        fprintf(stderr, "latentd serve: %s\n", err.msg);
        free(token);
        free(admin);
        ld_replica_free(replica);
        return 2;
    }
    if (token && admin && strcmp(token, admin) == 0) {
        fprintf(stderr, "latentd serve: the inference and admin tokens must differ\n");
        free(token);
        free(admin);
        ld_replica_free(replica);
        return 2;
    }
    if (check_only) {
        free(token);
        free(admin);
        ld_replica_free(replica);
        printf("configuration ok\n");
        return 0;
    }
    if (check_dir("state folder (state_dir)", cfg.state_dir, 1, &err) != LD_OK) {
        fprintf(stderr, "latentd serve: %s\n", err.msg);
        free(token);
        free(admin);
        ld_replica_free(replica);
        return 2;
    }

    /* Many HTTP threads each run small GEMMs: single-threaded BLAS lets them
     * run side by side instead of queueing on OpenBLAS's global lock. */
    ld_blas_threads(1);

    int threads = cfg.http_threads;
    if (threads <= 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        threads = ncpu > 0 ? (int)ncpu : 1;
    }

    int status = 1;
    /* the jobs engine points at it until ld_jobs_free at out */
    yield_ctx_t yc = {.load = 0.01 * cfg.training_yield_load, .mu = PTHREAD_MUTEX_INITIALIZER};
    atomic_init(&yc.http, NULL);
    ld_metrics_t *metrics = NULL;
    ld_registry_t *reg = NULL;
    ld_http_t *http = NULL;
    ld_api_t *api = NULL;
    ld_web_t *web = NULL;
    ld_jobs_t *jobs = NULL;
    if (install_signals(&err) != LD_OK) {
        ld_log_error("%s", err.msg);
        free(token);
        free(admin);
        ld_replica_free(replica);
        return 1;
    }
    if (ld_metrics_new(&metrics) != LD_OK || ld_registry_new(cfg.models_dir, &reg, &err) != LD_OK ||
        ld_registry_set_state_dir(reg, cfg.state_dir, &err) != LD_OK) {
        ld_log_error("out of memory");
        goto out;
    }
    ld_log_info("latentd %s starting pid=%ld models_dir=%s state_dir=%s data_dir=%s "
                "http_threads=%d worker_threads=%d",
                LD_VERSION, (long)getpid(), cfg.models_dir, cfg.state_dir, cfg.data_dir, threads,
                cfg.worker_threads);

    /* Jobs recovered from the state folder may start (and publish) at once:
     * the registry they publish into exists already. */
    ld_jobs_config_t jc;
    ld_jobs_config_default(&jc);
    jc.state_dir = cfg.state_dir;
    jc.models_dir = cfg.models_dir;
    jc.data_dir = cfg.data_dir;
    jc.worker_threads = cfg.worker_threads;
    jc.max_queued_jobs = cfg.max_queued_jobs;
    jc.checkpoint_every = cfg.checkpoint_every;
    jc.caps = (ld_jobs_caps_t){.max_epochs = cfg.max_epochs,
                               .max_batch = cfg.max_batch,
                               .max_hidden_width = cfg.max_hidden_width,
                               .max_z = cfg.max_z,
                               .max_limit = cfg.max_limit,
                               .max_job_bytes = cfg.max_job_bytes};
    jc.publish = publish_model;
    snprintf(jc.mpi_launcher, sizeof jc.mpi_launcher, "%s", cfg.mpi_launcher);
    snprintf(jc.mpi_hostfile, sizeof jc.mpi_hostfile, "%s", cfg.mpi_hostfile);
    snprintf(jc.mpi_binary, sizeof jc.mpi_binary, "%s", cfg.mpi_binary);
    jc.log = jobs_log;
    jc.user = reg;
    jc.replica = replica;
    if (cfg.training_yield_load > 0) {
        jc.busy = serving_busy;
        jc.busy_user = &yc;
    }
    if ((rc = ld_jobs_new(&jc, &jobs, &err)) != LD_OK) {
        if (rc == LD_EBUSY) /* a configuration error: a restart would not help */
            ld_log_error("state folder %s is in use by another latentd: every replica needs "
                         "its own state_dir (docs/scaling.md)",
                         cfg.state_dir);
        else
            ld_log_error("jobs: %s", err.msg);
        status = rc == LD_EINVAL || rc == LD_EBUSY ? 2 : 1;
        goto out;
    }

    ld_http_opts_t ho = {
        .bind = cfg.bind,
        .port = cfg.port,
        .threads = threads,
        .conn_timeout_s = cfg.request_timeout,
        .conn_limit = cfg.connection_limit,
        .per_ip_limit = cfg.per_ip_connection_limit,
        .conn_reserve = cfg.connection_reserve,
        .head_timeout_s = cfg.request_head_timeout,
        .body_timeout_s = cfg.request_body_timeout,
        .conn_memory_limit = (size_t)cfg.connection_memory_limit,
        .max_body = (size_t)cfg.max_body_bytes,
        .body_memory_limit = (size_t)cfg.body_memory_limit,
        .thread_stack = HTTP_THREAD_STACK,
        .cors_origins = cfg.cors_origins,
        .token = token,
        .admin_token = admin,
        .access_log = cfg.access_log,
    };
    ld_api_opts_t ao = {.registry = reg, .metrics = metrics, .max_samples = cfg.max_samples,
                        .cache_max_age = cfg.sample_cache_max_age, .jobs = jobs,
                        .max_upload = (size_t)cfg.max_upload_bytes};
    if (ld_http_new(&ho, metrics, &http, &err) != LD_OK ||
        ld_api_new(&ao, &api, &err) != LD_OK || ld_web_new(cfg.web, &web, &err) != LD_OK ||
        add_routes(http, api, jobs, web, &err) != LD_OK ||
        (ld_http_on_drain(http, jobs_drain, jobs) != LD_OK &&
         ld_err_set(&err, LD_ENOMEM, "too many drain hooks") != LD_OK)) {
        ld_log_error("%s", err.msg);
        status = 2;
        goto out;
    }
    atomic_store_explicit(&yc.http, http, memory_order_release);
    ld_metrics_add_collector(metrics, ld_http_collect, http);
    ld_metrics_add_collector(metrics, ld_registry_collect, reg);
    ld_metrics_add_collector(metrics, jobs_collect, jobs);
    if (ld_http_start(http, &err) != LD_OK) {
        ld_log_error("%s", err.msg);
        goto out;
    }
    /* access lines are written in batches from here on (log.h) */
    if (ld_log_access_start() != 0)
        ld_log_warn("access log: no flusher thread; writing each line at once");
    ld_log_info("listening on http://%s%s%s:%d auth=%s admin=%s cors=%s", strchr(cfg.bind, ':') ? "[" : "",
                cfg.bind, strchr(cfg.bind, ':') ? "]" : "", ld_http_port(http),
                token ? "token" : "open", admin ? "token" : "disabled",
                cfg.cors_origins[0] ? cfg.cors_origins : "none");
    /* serving already: /healthz answers and /readyz says 503 while models load */
    scan_models(reg, "start", 0);
    ld_http_set_ready(http, 1);
    {
        char msg[128];
        snprintf(msg, sizeof msg, "READY=1\nSTATUS=serving %d models on port %d",
                 ld_registry_count(reg), ld_http_port(http));
        ld_sd_notify(msg);
    }

    long long wd = watchdog_usec();
    if (wd)
        ld_sd_notify("WATCHDOG=1");
    /* the periodic rescan: replicas sharing a model folder see each other's
     * uploads and the models their jobs write (docs/scaling.md) */
    double next_scan = cfg.rescan_interval ? ld_now() + cfg.rescan_interval : 0;
    while (!g_term) {
        struct pollfd p = {.fd = g_sigpipe[0], .events = POLLIN};
        int timeout = wd ? (int)(wd / 1000 > 0 ? wd / 1000 : 1) : -1;
        if (next_scan) {
            double left = next_scan - ld_now();
            int ms = left > 0 ? (int)(left * 1000) + 1 : 0;
            if (timeout < 0 || ms < timeout)
                timeout = ms;
        }
        int n = poll(&p, 1, timeout);
        if (n > 0) {
            char buf[64];
            while (read(g_sigpipe[0], buf, sizeof buf) > 0)
                ;
        }
        if (wd)
            ld_sd_notify("WATCHDOG=1");
        if (g_hup) {
            g_hup = 0;
            ld_sd_notify("RELOADING=1");
            scan_models(reg, "SIGHUP", 0);
            ld_sd_notify("READY=1");
        }
        if (next_scan && ld_now() >= next_scan) {
            scan_models(reg, "timer", 1);
            next_scan = ld_now() + cfg.rescan_interval;
        }
    }
    ld_log_info("shutting down on %s: draining requests (up to %d s)",
                g_term == SIGINT ? "SIGINT" : "SIGTERM", cfg.shutdown_timeout);
    ld_sd_notify("STOPPING=1");
    int left = ld_http_drain(http, (double)cfg.shutdown_timeout);
    if (left)
        ld_log_warn("%d requests still in flight after %d s; closing them", left,
                    cfg.shutdown_timeout);
    status = 0;
out:
    /* Normally done by the drain hook; on a start-up failure it still has to
     * come first: it resumes every suspended event stream, and MHD must not
     * be stopped with a suspended connection. */
    ld_jobs_shutdown(jobs);
    ld_http_free(http); /* stops the pool before anything it uses goes */
    ld_log_access_stop(); /* every request has ended: write their last lines */
    ld_jobs_free(jobs); /* after the pool: streams unsubscribe as MHD closes them */
    ld_api_free(api);
    ld_web_free(web);
    ld_registry_free(reg);
    ld_metrics_free(metrics);
    ld_replica_free(replica);
    free(token);
    free(admin);
    restore_signals();
    if (status == 0)
        ld_log_info("stopped");
    return status;
}

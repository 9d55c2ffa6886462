/* tu_daemon.h — helpers shared by the suites that drive a real `latentd serve`
 * (LD_BIN) over HTTP: tests/check_serve.c and tests/check_jobs_http.c.
 *
 * What it owns:
 *  - temp folders: tu_daemon_dirs() makes a fresh /tmp/latentd-test-XXXXXX root
 *    holding models/, state/ (made by the daemon), data/, the daemon's log, its
 *    wait status and its config; tu_daemon_free() removes all of it.
 *  - child processes: tu_daemon_spawn() forks a monitor child which forks and
 *    execs LD_BIN (stdout and stderr to the log) and then waits for it and
 *    writes its wait status to a file, so that any process (the runner for a
 *    shared daemon, a test's forked child for its own) can learn how it ended
 *    with tu_daemon_wait_exit().  Both children die with SIGKILL when the
 *    thread that spawned them ends (PR_SET_PDEATHSIG): a failed test does not
 *    leave a daemon (and a training job in it) running.
 *  - HTTP: one request with libcurl (tu_http), its response (tu_resp_t) and a
 *    few JSON checks.
 *
 * Threading: spawn, wait and stop a daemon from one thread, the one that
 * should outlive it (a test's main thread, or the runner in an unchecked
 * fixture); a tu_daemon_t is not locked.  tu_http() may run in several threads
 * at once, each with its own CURL handle and tu_resp_t, once the fixture has
 * called curl_global_init().  tu_log_tail() returns a static buffer.
 *
 * Deadlines: tu_deadline(secs, asan_factor) stretches secs by asan_factor in a
 * sanitized build (LD_BIN under build/asan/); each daemon keeps the factor its
 * suite chose, for the waits below. */
#ifndef LATENTD_TU_DAEMON_H
#define LATENTD_TU_DAEMON_H

#include "testutil.h"

#include "latentd/buf.h"
#include "latentd/data.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdatomic.h>
#include <sys/types.h>

/* ------------------------------------------------------------ time, files */

void tu_msleep(int ms);
/* CLOCK_MONOTONIC in seconds. */
double tu_now(void);
/* Whether LD_BIN is the sanitized build. */
int tu_under_asan(void);
/* tu_now() + secs, times asan_factor under the sanitizers. */
double tu_deadline(double secs, double asan_factor);
/* Copy file from to to (the shipped models into a daemon's folder: the
 * registry follows no link out of it); fails the test if it cannot. */
void tu_copy_file(const char *from, const char *to);
/* Write text to path (mode 0600); fails the test if it cannot. */
void tu_write_file(const char *path, const char *text);
/* The whole file as a malloc'd string; "" (malloc'd) if it cannot be read. */
char *tu_read_text(const char *path);

/* ------------------------------------------------------------ daemons */

typedef struct {
    char *dir; /* temp root: models/, state/, data/, log, status, conf */
    char models[512], state[512], data[512], log[512], status[512], conf[512];
    pid_t pid;          /* the daemon */
    pid_t monitor;      /* our child that waits for it and records its status */
    int port;
    double asan_factor; /* deadline multiplier of the waits under the sanitizers */
} tu_daemon_t;

/* A fresh temp root with models/ and data/ made; nothing started. */
void tu_daemon_dirs(tu_daemon_t *d, double asan_factor);
/* Start LD_BIN with args (NULL-terminated, args[0] = "serve"; NULL: serve
 * --config d->conf), stdout and stderr to d->log (a previous run's log is
 * kept as d->log.prev, its status file removed).  extra_env: "NAME=value" or
 * NULL. */
void tu_daemon_spawn(tu_daemon_t *d, const char *const *args, const char *extra_env);
/* Wait for the daemon to exit; its exit code (or 128+signal).  Fails the test
 * (after SIGKILL) if it takes longer than secs. */
int tu_daemon_wait_exit(tu_daemon_t *d, double secs);
/* The port from its "listening on http://127.0.0.1:PORT" log line. */
int tu_daemon_wait_port(tu_daemon_t *d, double secs);
/* Poll GET /readyz (no token) on d->port until 200. */
void tu_daemon_wait_ready(const tu_daemon_t *d, double secs);
/* spawn (serve --config d->conf), then wait for its port and /readyz. */
void tu_daemon_start(tu_daemon_t *d, const char *extra_env);
/* curl_global_init, then a daemon serving copies of the shipped models
 * (models/NAME.safetensors for each NAME of the NULL-terminated list) on a
 * free port with 2 HTTP threads, max_samples 64 and extra_conf's lines
 * (or NULL), started and ready.  Undo with tu_daemon_teardown and
 * curl_global_cleanup. */
void tu_daemon_start_shipped(tu_daemon_t *d, double asan_factor, const char *const *models,
                             const char *extra_conf);
/* SIGTERM unless it has exited already; its exit code. */
int tu_daemon_stop(tu_daemon_t *d, double secs);
/* Remove the temp root (the daemon must have exited). */
void tu_daemon_free(tu_daemon_t *d);
/* For an unchecked fixture's teardown: stop the daemon if it was spawned (its
 * exit code is a test's business), then tu_daemon_free. */
void tu_daemon_teardown(tu_daemon_t *d, double secs);
/* tu_daemon_stop, exit 0 required (no leaks under ASan), tu_daemon_free. */
void tu_daemon_stop_ok(tu_daemon_t *d, double secs);
/* The last 4000 bytes of the daemon's log, for failure messages (static). */
const char *tu_log_tail(const tu_daemon_t *d);

/* ------------------------------------------------------------ HTTP */

typedef struct {
    long status; /* -1: no response */
    ld_buf_t body;
    ld_buf_t hdrs;
    cJSON *json; /* the body parsed, or NULL */
} tu_resp_t;

typedef struct {
    const char *token;  /* bearer token; NULL or "": none */
    const char *ctype;  /* NULL: application/json when there is a body */
    const char *origin; /* Origin header, or NULL */
    const char *extra;  /* one more header line, or NULL */
    int port;           /* on 127.0.0.1 */
    long timeout_ms;    /* whole request; 0: 60 s */
} tu_req_t;

/* One request on handle c (reused: every option it depends on is set).  No
 * body: a plain request with the method's name (HEAD without a body).
 * Returns the status, -1 when no response came.  With LD_CONTRACT_LOG=FILE
 * in the environment each response is also appended to FILE (one JSON line)
 * for the contract test (make test-contract). */
long tu_http(CURL *c, tu_resp_t *r, const char *method, const char *path, const void *body,
             size_t len, const tu_req_t *q);
/* tu_http on a handle of its own; a response is required. */
long tu_http_once(tu_resp_t *r, const char *method, const char *path, const void *body,
                  size_t len, const tu_req_t *q);
void tu_resp_free(tu_resp_t *r);
/* Value of response header name (last occurrence) into out; NULL if absent. */
const char *tu_hdr(const tu_resp_t *r, const char *name, char *out, size_t cap);

/* Load for a thread (pthread_create(..., tu_sampler_run, s)): POST
 * {"n":n,"seed":0..49} to path until *stop, one CURL handle, counting the 2xx
 * JSON responses whose numbers are all finite (ok) and the rest (bad).  With
 * png set, {"n":n,"seed":...,"format":"png"}: ok is a 2xx PNG (signature
 * checked only, so the client stays light while the daemon works). */
typedef struct {
    int port;
    const char *path;   /* e.g. "/v1/models/NAME/sample" */
    const char *token;  /* NULL or "": none */
    int n;              /* images a request */
    int pause_ms;       /* between requests; 0: back to back */
    int png;            /* ask for PNG grids instead of JSON */
    atomic_int *stop;
    int ok, bad;
    long last_bad;      /* status of the last bad response (-1: none came) */
    char bad_body[256]; /* body of the first bad response */
} tu_sampler_t;
void *tu_sampler_run(void *arg);

/* The first n Fashion-MNIST test images with their labels (Debian's
 * dataset-fashion-mnist); fails the test when they cannot be read.  The
 * caller frees them (ld_data_free). */
ld_dataset_t *tu_fashion_test(int n);
/* p (n bytes) in standard base64, malloc'd and NUL-terminated. */
char *tu_base64(const uint8_t *p, size_t n);

/* ------------------------------------------------------------ raw sockets */

/* A TCP connection from 127.0.0.<host> to 127.0.0.1:port (host 1: the usual
 * loopback address; others let per-address limits apply).  block: wait for
 * the handshake, with a receive timeout of 30 s; otherwise the connect is
 * left in progress on a non-blocking socket.  -1 if it fails at once. */
int tu_tcp_connect(int host, int port, int block);
/* Send all of p (stops quietly when the peer has closed). */
void tu_send_all(int fd, const void *p, size_t n);
/* Read one HTTP response (head + Content-Length body) into b; its status, or
 * -1 when the connection ends (or times out) before a status line. */
int tu_read_response(int fd, ld_buf_t *b);
/* latentd_http_body_memory_bytes from d's /metrics (token: NULL or "" for
 * none); -1 when the series is missing. */
long long tu_body_memory(const tu_daemon_t *d, const char *token);
/* Fill d's body memory: n connections each send the headers of a POST to
 * path announcing a JSON body of body_len bytes, then only "{", and stay
 * open; returns once d accounts for all n bodies (fails the test after 10 s,
 * stretched under the sanitizers).  fds receives the n sockets. */
void tu_hold_bodies(const tu_daemon_t *d, const char *path, const char *token, size_t body_len,
                    int n, int *fds);
/* Close the n sockets of tu_hold_bodies and wait until d has released
 * every body (body memory back to 0). */
void tu_release_bodies(const tu_daemon_t *d, const char *token, int n, const int *fds);

/* ------------------------------------------------------------ JSON */

/* Field k of object o; fails the test if absent. */
const cJSON *tu_jget(const cJSON *o, const char *k);
/* Every number in a JSON tree is finite. */
int tu_json_all_finite(const cJSON *j);
/* status, an {"error":{"code":code,"message":non-empty,"request_id":R}}
 * body with R the X-Request-Id header, and (if want_msg) a message
 * containing it.  exact: also Content-Type application/json and nothing in
 * the body but those. */
void tu_expect_error(const tu_resp_t *r, long status, const char *code, const char *want_msg,
                     const char *what, int exact);

/* /usr/bin/promtool check metrics on text (written to d->dir/metrics.txt):
 * fails the test if promtool is missing (it comes with `make deps`) or finds
 * fault. */
void tu_promtool_check(const tu_daemon_t *d, const char *text, size_t len);

/* ------------------------------------------------------------ fixtures */

/* Check fixtures: curl_global_init / curl_global_cleanup. */
void tu_curl_setup(void);
void tu_curl_teardown(void);
/* LD_TEST_TIMING=1 prints each test's duration: tu_timing_start() as the
 * checked fixture's setup (it runs in the test's own process), and
 * tu_timing_end(suite) in its teardown. */
void tu_timing_start(void);
void tu_timing_end(const char *suite);

#endif

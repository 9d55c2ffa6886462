/* check_net.c — the HTTP layer under hostile networks (issue 18, network
 * defects): floods of idle connections, slow clients, half-closed clients,
 * oversized and malformed request heads.  Each test starts its own real
 * daemon (tests/tu_daemon.h) with a small config, talks to it over raw
 * sockets bound to distinct loopback addresses (127.0.0.x, so per-address
 * limits apply) and, for the "fresh client" probes, over libcurl.
 *
 * Traffic stays on loopback; every flood is bounded in connections and in
 * time.  Timing bounds are generous (and stretched under the sanitizers) but
 * still fail when the daemon stops answering.
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/buf.h"

#include "../src/http_impl.h" /* ld_http_head_check */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define ASAN_SLOWDOWN 4

static double deadline(double s)
{
    return tu_deadline(s, ASAN_SLOWDOWN);
}

/* ------------------------------------------------------------ daemons */

/* An empty-model daemon on 127.0.0.1 with extra config lines. */
static void start_daemon(tu_daemon_t *d, const char *extra)
{
    tu_daemon_dirs(d, ASAN_SLOWDOWN);
    char text[4096];
    snprintf(text, sizeof text,
             "bind = 127.0.0.1\n"
             "port = 0\n"
             "http_threads = 2\n"
             "models_dir = %s\n"
             "state_dir = %s\n"
             "%s",
             d->models, d->state, extra ? extra : "");
    tu_write_file(d->conf, text);
    tu_daemon_start(d, NULL);
}

/* The test process holds thousands of sockets: soft limit up to the hard one. */
static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    ck_assert_msg(rl.rlim_cur >= want, "RLIMIT_NOFILE %llu < %llu needed",
                  (unsigned long long)rl.rlim_cur, (unsigned long long)want);
}

/* ------------------------------------------------------------ raw sockets */

/* Send one raw request on a fresh connection from 127.0.0.<host>; the
 * response's status and text (b, to free). */
static int raw_request(int host, int port, const char *req, size_t len, ld_buf_t *b)
{
    int fd = tu_tcp_connect(host, port, 1);
    ck_assert_msg(fd >= 0, "connect: %s", strerror(errno));
    tu_send_all(fd, req, len);
    int st = tu_read_response(fd, b);
    close(fd);
    return st;
}

/* A raw response is a JSON error: one status line, Content-Type
 * application/json, a body {"error":{"code":...,"message":...,"request_id":R}}
 * and R in its X-Request-Id header. */
static void expect_json_error(const ld_buf_t *b, int status, int got, const char *what)
{
    ck_assert_msg(got == status, "%s: status %d, want %d; response:\n%.600s", what, got, status,
                  b->data ? b->data : "(none)");
    const char *head_end = strstr(b->data, "\r\n\r\n");
    ck_assert_ptr_nonnull(head_end);
    ck_assert_msg(strstr(b->data, "\nHTTP/1.") == NULL, "%s: two status lines:\n%.600s", what,
                  b->data);
    const char *ct = strcasestr(b->data, "\r\nContent-Type: application/json");
    ck_assert_msg(ct && ct < head_end, "%s: not JSON:\n%.600s", what, b->data);
    cJSON *j = cJSON_Parse(head_end + 4);
    ck_assert_msg(j, "%s: body is not JSON:\n%.600s", what, b->data);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    ck_assert_msg(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "code")) &&
                      cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")),
                  "%s: body is not an error object: %s", what, head_end + 4);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "request_id");
    ck_assert_msg(cJSON_IsString(id), "%s: no request_id: %s", what, head_end + 4);
    char want[200];
    snprintf(want, sizeof want, "\r\nX-Request-Id: %s\r\n", id->valuestring);
    const char *h = strcasestr(b->data, want);
    ck_assert_msg(h && h < head_end, "%s: no %s in the head:\n%.600s", what, want + 2, b->data);
    cJSON_Delete(j);
}

/* GET /healthz from 127.0.0.1 with curl; its status (-1: no answer) and the
 * time it took in ms. */
static long healthz(int port, double *ms)
{
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    tu_resp_t r;
    tu_req_t q = {.port = port, .timeout_ms = 3000};
    double t0 = tu_now();
    long st = tu_http(c, &r, "GET", "/healthz", NULL, 0, &q);
    if (ms)
        *ms = (tu_now() - t0) * 1e3;
    tu_resp_free(&r);
    curl_easy_cleanup(c);
    return st;
}

/* ================================================================ tests */

/* Defect A: cycles of 2,000 idle connections from 16 addresses, held and
 * closed.  libmicrohttpd 0.9.75 keeps a mutex locked when a connection
 * handed over by MHD_add_connection finds its daemon full; the daemon's
 * thread then blocks on it for good.  After the cycles /healthz must answer
 * and SIGTERM must stop the daemon. */
START_TEST(test_idle_flood_cycles)
{
    enum { CYCLES = 4, CONNS = 2000, HOSTS = 16 };
    raise_nofile(CONNS + 256);
    tu_daemon_t d;
    /* no reserve: the flood must reach connection_limit itself */
    start_daemon(&d, "connection_limit = 512\nper_ip_connection_limit = 128\n"
                     "connection_reserve = 0\n");
    static int fds[CONNS];
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    for (int cyc = 0; cyc < CYCLES; cyc++) {
        int opened = 0;
        for (int i = 0; i < CONNS; i++) {
            fds[i] = tu_tcp_connect(2 + i % HOSTS, d.port, 0);
            opened += fds[i] >= 0;
        }
        ck_assert_msg(opened > CONNS / 2, "cycle %d: only %d connections opened", cyc, opened);
        /* half of them also send a request and then stay open, idle, so the
         * HTTP threads themselves fill up (not only the acceptor's hold) */
        tu_msleep(100);
        for (int i = 0; i < CONNS; i += 2)
            if (fds[i] >= 0)
                send(fds[i], req, sizeof req - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        tu_msleep(1500);
        for (int i = 0; i < CONNS; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    }
    /* every daemon thread serves again once the flood is gone */
    double until = deadline(10), ms = 0;
    long st = -1;
    while ((st = healthz(d.port, &ms)) != 200 && tu_now() < until)
        tu_msleep(100);
    ck_assert_msg(st == 200, "/healthz after the floods: %ld\n%s", st, tu_log_tail(&d));
    int code = tu_daemon_stop(&d, 10);
    ck_assert_msg(code == 0, "exit %d\n%s", code, tu_log_tail(&d));
    tu_daemon_free(&d);
}
END_TEST

/* Defect C: a client that sends a whole request and then shuts down its
 * sending side gets its answer and then the end of the connection at once,
 * not after request_timeout; so its address is never locked out by sockets
 * the daemon still holds. */
START_TEST(test_half_closed_clients_are_closed)
{
    enum { N = 140 }; /* more than per_ip_connection_limit */
    tu_daemon_t d;
    start_daemon(&d, "per_ip_connection_limit = 128\nrequest_timeout = 60\n");
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    double worst = 0;
    for (int i = 0; i < N; i++) {
        int fd = tu_tcp_connect(60, d.port, 1);
        ck_assert_msg(fd >= 0, "connection %d refused", i);
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        tu_send_all(fd, req, sizeof req - 1);
        shutdown(fd, SHUT_WR);
        ld_buf_t b = {0};
        double t0 = tu_now();
        int st = tu_read_response(fd, &b);
        ck_assert_msg(st == 200, "connection %d: status %d", i, st);
        char c;
        ssize_t n = recv(fd, &c, 1, 0);
        double secs = tu_now() - t0;
        ck_assert_msg(n == 0, "connection %d: no end of stream after the answer (%zd, %s)", i, n,
                      strerror(errno));
        if (secs > worst)
            worst = secs;
        ld_buf_free(&b);
        close(fd);
    }
    printf("net: %d half-closed clients answered and closed, slowest %.1f ms\n", N, worst * 1e3);
    tu_daemon_stop_ok(&d, 10);
}
END_TEST

/* Defect D: hundreds of query parameters exhaust libmicrohttpd's connection
 * pool, which then cannot even send its error; the daemon answers 414 with
 * the JSON error itself.  The connection after it is served as usual. */
START_TEST(test_many_query_parameters)
{
    tu_daemon_t d;
    start_daemon(&d, NULL);
    ld_buf_t q = {0};
    ld_buf_puts(&q, "GET /healthz?");
    for (int i = 0; i < 300; i++)
        ld_buf_printf(&q, "%sa%d=1", i ? "&" : "", i);
    ld_buf_puts(&q, " HTTP/1.1\r\nHost: t\r\n\r\n");
    ld_buf_t b = {0};
    int st = raw_request(61, d.port, q.data, q.len, &b);
    expect_json_error(&b, 414, st, "300 query parameters");
    ld_buf_free(&b);
    ld_buf_free(&q);
    /* a few parameters are fine */
    static const char few[] = "GET /healthz?a=1&b=2 HTTP/1.1\r\nHost: t\r\n\r\n";
    st = raw_request(61, d.port, few, sizeof few - 1, &b);
    ck_assert_msg(st == 200, "two parameters: %d\n%.400s", st, b.data ? b.data : "");
    ld_buf_free(&b);
    tu_daemon_stop_ok(&d, 10);
}
END_TEST

/* Issue 18, other defects 6, and oversized heads: each is refused with a
 * JSON error before any handler runs, once as a connection's first request
 * (checked before libmicrohttpd reads it) and once as the second request on
 * a kept-alive connection (checked in libmicrohttpd's callbacks, where it
 * can be). */
START_TEST(test_malformed_heads_get_json)
{
    tu_daemon_t d;
    start_daemon(&d, NULL);
    ld_buf_t many_fields = {0}, huge = {0}, many_params = {0};
    ld_buf_puts(&many_fields, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 70; i++)
        ld_buf_printf(&many_fields, "X-F%d: %d\r\n", i, i);
    ld_buf_puts(&many_fields, "\r\n");
    ld_buf_puts(&huge, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ");
    for (int i = 0; i < 20000; i++)
        ld_buf_putc(&huge, 'a');
    ld_buf_puts(&huge, "\r\n\r\n");
    ld_buf_puts(&many_params, "GET /healthz?");
    for (int i = 0; i < 300; i++)
        ld_buf_printf(&many_params, "%sa%d=1", i ? "&" : "", i);
    ld_buf_puts(&many_params, " HTTP/1.1\r\nHost: t\r\n\r\n");
    const struct {
        const char *req, *what;
        int status, keepalive; /* also checked as a second request */
    } cases[] = {
        {"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
         "two different Content-Length headers", 400, 1},
        {"GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 without Host", 400, 1},
        {"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
         "Content-Length: abc", 400, 1},
        {many_fields.data, "70 header fields", 431, 0},
        {huge.data, "a 20 KB header", 431, 1},
        {many_params.data, "300 query parameters", 414, 1},
    };
    static const char good[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ld_buf_t b = {0};
        int st = raw_request(62, d.port, cases[i].req, strlen(cases[i].req), &b);
        expect_json_error(&b, cases[i].status, st, cases[i].what);
        ld_buf_free(&b);
        if (!cases[i].keepalive)
            continue;
        int fd = tu_tcp_connect(62, d.port, 1);
        ck_assert_int_ge(fd, 0);
        tu_send_all(fd, good, sizeof good - 1);
        ck_assert_int_eq(tu_read_response(fd, &b), 200);
        ld_buf_free(&b);
        tu_send_all(fd, cases[i].req, strlen(cases[i].req));
        st = tu_read_response(fd, &b);
        char what[128];
        snprintf(what, sizeof what, "%s (second request)", cases[i].what);
        expect_json_error(&b, cases[i].status, st, what);
        ld_buf_free(&b);
        close(fd);
    }
    /* the largest heads accepted are served: 64 parameters, 60 fields */
    ld_buf_t big = {0};
    ld_buf_puts(&big, "GET /healthz?");
    for (int i = 0; i < 64; i++)
        ld_buf_printf(&big, "%sp%d=%d", i ? "&" : "", i, i);
    ld_buf_puts(&big, " HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 59; i++)
        ld_buf_printf(&big, "X-Field-%d: %060d\r\n", i, i);
    ld_buf_puts(&big, "\r\n");
    ld_buf_t b = {0};
    int st = raw_request(62, d.port, big.data, big.len, &b);
    ck_assert_msg(st == 200, "a %zu-byte head within the limits: %d\n%.400s", big.len, st,
                  b.data ? b.data : "");
    ld_buf_free(&b);
    /* HTTP/1.0 needs no Host */
    static const char ok10[] = "GET /healthz HTTP/1.0\r\n\r\n";
    st = raw_request(62, d.port, ok10, sizeof ok10 - 1, &b);
    ck_assert_msg(st == 200, "HTTP/1.0 without Host: %d\n%.400s", st, b.data ? b.data : "");
    ld_buf_free(&b);
    ld_buf_free(&big);
    ld_buf_free(&many_fields);
    ld_buf_free(&huge);
    ld_buf_free(&many_params);
    tu_daemon_stop_ok(&d, 10);
}
END_TEST

/* Send p[0..n) a byte every 250 ms (the last byte over and over) until the
 * daemon ends the connection, for at most 8 s (stretched under the
 * sanitizers); closes fd.  The seconds it took, or -1 if it never ended. */
static double trickle(int fd, const char *p, size_t n)
{
    double t0 = tu_now(), until = deadline(8);
    for (size_t i = 0; tu_now() < until; i += i + 1 < n) {
        if (send(fd, p + i, 1, MSG_NOSIGNAL) != 1)
            break;
        struct pollfd pf = {fd, POLLIN, 0};
        char c[512];
        if (poll(&pf, 1, 250) > 0 && recv(fd, c, sizeof c, MSG_DONTWAIT) <= 0)
            break;
    }
    double secs = tu_now() - t0;
    close(fd);
    return tu_now() < until ? secs : -1;
}

/* A daemon with conf (a 2 s deadline); from 127.0.0.<host>, send prefix and
 * then trickle p[0..n): the daemon must cut the connection off after 1.5 s
 * and within 8 s. */
static void expect_cut_off(const char *conf, int host, const char *prefix, const char *p,
                           size_t n, const char *what)
{
    tu_daemon_t d;
    start_daemon(&d, conf);
    int fd = tu_tcp_connect(host, d.port, 1);
    ck_assert_int_ge(fd, 0);
    tu_send_all(fd, prefix, strlen(prefix));
    double secs = trickle(fd, p, n);
    ck_assert_msg(secs > 0, "%s trickled for 8 s was not cut off", what);
    ck_assert_msg(secs > 1.5, "%s cut off after %.1f s, before the 2 s deadline", what, secs);
    printf("net: %s trickled: cut off after %.1f s (deadline 2 s)\n", what, secs);
    tu_daemon_stop_ok(&d, 10);
}

/* Defect B, the body deadline: a body trickled after its head is cut off
 * request_body_timeout after the head. */
START_TEST(test_body_deadline)
{
    expect_cut_off("request_body_timeout = 2\nrequest_timeout = 60\n", 64,
                   "POST /v1/models/none/sample HTTP/1.1\r\nHost: t\r\n"
                   "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
                   " ", 1, "a body");
}
END_TEST

/* Defect B, the deadline: a client trickling its request head one byte at a
 * time (each byte would reset an idle timeout) is disconnected once
 * request_head_timeout has passed. */
START_TEST(test_head_deadline)
{
    static const char head[] = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: a";
    expect_cut_off("request_head_timeout = 2\nrequest_timeout = 60\n", 63, "", head,
                   sizeof head - 1, "a head");
}
END_TEST

/* Defect B and the slowloris of the fault-injection list: 600 connections
 * from 6 addresses each send a header byte a second, more than
 * connection_limit; a fresh client from another address still gets
 * /healthz answered, quickly. */
START_TEST(test_slowloris_leaves_room)
{
    enum { CONNS = 600, HOSTS = 6, PROBES = 10 };
    raise_nofile(CONNS + 256);
    tu_daemon_t d;
    start_daemon(&d, "connection_limit = 512\nper_ip_connection_limit = 128\n");
    static int fds[CONNS];
    for (int i = 0; i < CONNS; i++)
        fds[i] = tu_tcp_connect(30 + i % HOSTS, d.port, 0);
    static const char head[] = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    double ms[PROBES], worst = 0;
    int answered = 0;
    for (int sec = 0; sec < PROBES / 2; sec++) {
        for (int i = 0; i < CONNS; i++)
            if (fds[i] >= 0)
                send(fds[i], head + (sec < (int)sizeof head - 1 ? sec : 0), 1,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
        for (int k = 0; k < 2; k++) {
            int p = sec * 2 + k;
            long st = healthz(d.port, &ms[p]);
            answered += st == 200;
            if (ms[p] > worst)
                worst = ms[p];
            tu_msleep(400);
        }
    }
    /* the flood was refused at the reserve, and the metrics say so */
    tu_resp_t r;
    tu_req_t q = {.port = d.port, .timeout_ms = 5000};
    ck_assert_int_eq(tu_http_once(&r, "GET", "/metrics", NULL, 0, &q), 200);
    const char *m = strstr(r.body.data, "latentd_http_connections_refused_total{reason=\"reserve\"} ");
    ck_assert_msg(m && atol(m + 57) > 0, "no refusal at the reserve counted:\n%s", r.body.data);
    ck_assert_msg(strstr(r.body.data, "latentd_http_connections_held "), "no held gauge");
    tu_promtool_check(&d, r.body.data, r.body.len);
    tu_resp_free(&r);
    /* SIGTERM with the flood still connected: held and served connections
     * alike are closed, within the 10 s of the fault-injection list */
    double t0 = tu_now();
    int code = tu_daemon_stop(&d, 10);
    ck_assert_msg(code == 0, "exit %d during the slowloris\n%s", code, tu_log_tail(&d));
    printf("net: SIGTERM during the slowloris: exit after %.2f s\n", tu_now() - t0);
    tu_daemon_free(&d);
    for (int i = 0; i < CONNS; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    /* the median: one probe may meet a descheduled daemon on a busy host */
    for (int i = 0; i < PROBES; i++)
        for (int j = i + 1; j < PROBES; j++)
            if (ms[j] < ms[i]) {
                double t = ms[i];
                ms[i] = ms[j];
                ms[j] = t;
            }
    printf("net: /healthz during a slowloris of %d connections: %d/%d answered, median %.1f ms, "
           "worst %.1f ms\n",
           CONNS, answered, PROBES, ms[PROBES / 2], worst);
    ck_assert_msg(answered == PROBES, "only %d of %d probes answered", answered, PROBES);
    ck_assert_msg(ms[PROBES / 2] < 100 * (tu_under_asan() ? ASAN_SLOWDOWN : 1),
                  "median /healthz %.1f ms during the slowloris", ms[PROBES / 2]);
}
END_TEST

/* The daemon raises its descriptor soft limit to the hard limit: each
 * connection is a descriptor. */
START_TEST(test_nofile_raised)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max <= 256) {
        printf("net: test_nofile_raised skipped: hard limit %llu\n",
               (unsigned long long)rl.rlim_max);
        return;
    }
    rl.rlim_cur = 256; /* inherited by the daemon (this test runs in its own process) */
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    tu_daemon_t d;
    start_daemon(&d, NULL);
    char path[64], *text;
    snprintf(path, sizeof path, "/proc/%d/limits", (int)d.pid);
    text = tu_read_text(path);
    const char *line = strstr(text, "Max open files");
    unsigned long long soft = 0, hard = 0;
    ck_assert_msg(line && sscanf(line + 14, "%llu %llu", &soft, &hard) == 2, "%s", text);
    free(text);
    ck_assert_msg(soft == hard && hard == (unsigned long long)rl.rlim_max,
                  "daemon's RLIMIT_NOFILE %llu/%llu, hard limit %llu", soft, hard,
                  (unsigned long long)rl.rlim_max);
    tu_daemon_stop_ok(&d, 10);
}
END_TEST

/* The first-head checker by itself: the verdicts at its edges. */
START_TEST(test_head_check_table)
{
    static const struct {
        const char *head;
        int verdict, status;
    } cases[] = {
        {"", LD_HEAD_INCOMPLETE, 0},
        {"GET / HTTP/1.1\r\nHost: a\r\n", LD_HEAD_INCOMPLETE, 0},
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", LD_HEAD_OK, 0},
        {"GET / HTTP/1.1\nHost: a\n\n", LD_HEAD_OK, 0},               /* bare LF */
        {"GET / HTTP/1.1\r\nhost:a\r\n\r\n", LD_HEAD_OK, 0},          /* any case */
        {"GET / HTTP/1.1\r\n\r\n", LD_HEAD_REJECT, 400},
        {"GET / HTTP/1.0\r\n\r\n", LD_HEAD_OK, 0},
        {"GET /\r\n\r\n", LD_HEAD_OK, 0},                              /* MHD decides */
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  12 \r\n\r\n", LD_HEAD_OK, 0},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
         LD_HEAD_OK, 0},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
         LD_HEAD_REJECT, 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", LD_HEAD_REJECT, 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", LD_HEAD_REJECT, 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", LD_HEAD_REJECT, 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n",
         LD_HEAD_REJECT, 400},
        {"GET /?a&b&c HTTP/1.1\r\nHost: a\r\n\r\n", LD_HEAD_OK, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ld_head_verdict_t v = {0};
        int got = ld_http_head_check(cases[i].head, strlen(cases[i].head), 8192, &v);
        ck_assert_msg(got == cases[i].verdict && (got != LD_HEAD_REJECT || v.status == cases[i].status),
                      "case %zu (%s): verdict %d status %d", i, cases[i].head, got, v.status);
    }
    /* the cap: a head not ended within it is 431, one byte less is waited for */
    char big[64];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    ld_head_verdict_t v = {0};
    ck_assert_int_eq(ld_http_head_check(big, 63, 64, &v), LD_HEAD_INCOMPLETE);
    ck_assert_int_eq(ld_http_head_check(big, 64, 64, &v), LD_HEAD_REJECT);
    ck_assert_int_eq(v.status, 431);
    /* parameters: exactly MAX_QUERY_PARAMS pass, one more is 414 */
    ld_buf_t q = {0};
    for (int n = MAX_QUERY_PARAMS; n <= MAX_QUERY_PARAMS + 1; n++) {
        q.len = 0;
        ld_buf_puts(&q, "GET /x?");
        for (int i = 0; i < n; i++)
            ld_buf_printf(&q, "%sk%d", i ? "&" : "", i);
        ld_buf_puts(&q, " HTTP/1.1\r\nHost: a\r\n\r\n");
        int got = ld_http_head_check(q.data, q.len, 8192, &v);
        ck_assert_msg(n == MAX_QUERY_PARAMS ? got == LD_HEAD_OK : got == LD_HEAD_REJECT && v.status == 414,
                      "%d parameters: verdict %d", n, got);
    }
    ld_buf_free(&q);
}
END_TEST

Suite *suite_net(void)
{
    Suite *s = suite_create("net");
    TCase *t = tcase_create("net");
    tcase_set_timeout(t, 240);
    tcase_add_unchecked_fixture(t, tu_curl_setup, tu_curl_teardown);
    tcase_add_checked_fixture(t, tu_timing_start, NULL);
    tcase_add_test(t, test_head_check_table);
    tcase_add_test(t, test_idle_flood_cycles);
    tcase_add_test(t, test_half_closed_clients_are_closed);
    tcase_add_test(t, test_many_query_parameters);
    tcase_add_test(t, test_malformed_heads_get_json);
    tcase_add_test(t, test_head_deadline);
    tcase_add_test(t, test_body_deadline);
    tcase_add_test(t, test_slowloris_leaves_room);
    tcase_add_test(t, test_nofile_raised);
    suite_add_tcase(s, t);
    return s;
}

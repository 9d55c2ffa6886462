/* http_conn.c — the HTTP layer's connections: the acceptor thread, the
 * per-address connection counts, the MHD daemons' start and stop, drain and
 * the connection metrics (see include/latentd/http.h; shared structures in
 * http_impl.h, the request pipeline in http.c).
 *
 * Threads: one single-threaded MHD daemon (MHD's internal epoll thread) per
 * HTTP thread, rather than one daemon with MHD's thread pool, and one
 * acceptor thread of ours that owns the listening socket and hands each new
 * connection to the daemon with the most room (MHD_add_connection).  MHD's
 * pool threads race for one listening socket and take connections in runs,
 * and per-thread SO_REUSEPORT sockets spread them by address hash, both
 * unevenly (docs/serve.md, "What made it faster"); counting is even.
 *
 * Admission (admit): load[i] counts the connections admitted to daemon i and
 * not yet closed; the connection limit is divided among the daemons
 * (limit[i]); the per-IP limit and the reserve for new addresses are
 * counted over all daemons.  Counts are taken when the acceptor admits a
 * connection and given back when MHD reports its close (conn_cb):
 * MHD_add_connection must never be asked to refuse (see admit).
 *
 * The gate: an admitted connection stays with the acceptor until its first
 * request head is in and passes ld_http_head_check (http_head.c); then it
 * goes to its daemon.  Later requests on it are MHD's to read.
 *
 * Deadlines: each connection in a daemon has an ld_conn_t (MHD's socket
 * context) with the deadline of its phase (head, body, none), set on its
 * MHD thread; the acceptor shuts down the sockets past their deadline
 * (reap) and MHD closes them.
 *
 * Locks: ip_mu (per-address counts) and conn_mu (the ld_conn_t list) are
 * never held together; the acceptor's own state needs none.
 */
#define _GNU_SOURCE
#include "http_impl.h"

#include "latentd/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* An address as a key: family and the IPv4/IPv6 bytes; 0 if neither. */
static int ip_key(const struct sockaddr *sa, int *family, uint8_t addr[16])
{
    memset(addr, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        *family = AF_INET;
        return 1;
    }
    if (sa && sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        *family = AF_INET6;
        return 1;
    }
    return 0;
}

static struct ip_count **ip_slot(ld_http_t *h, int family, const uint8_t addr[16])
{
    uint32_t x = 2166136261u ^ (uint32_t)family;
    for (int i = 0; i < 16; i++)
        x = (x ^ addr[i]) * 16777619u;
    struct ip_count **p = &h->ip_table[x % IP_BUCKETS];
    while (*p && !((*p)->family == family && memcmp((*p)->addr, addr, 16) == 0))
        p = &(*p)->next;
    return p;
}

/* Count a closed connection of sa off its address. */
static void ip_count_drop(ld_http_t *h, const struct sockaddr *sa)
{
    int family;
    uint8_t addr[16];
    if (!ip_key(sa, &family, addr))
        return;
    pthread_mutex_lock(&h->ip_mu);
    struct ip_count **p = ip_slot(h, family, addr);
    if (*p && --(*p)->n <= 0) {
        struct ip_count *dead = *p;
        *p = dead->next;
        free(dead);
    }
    pthread_mutex_unlock(&h->ip_mu);
}

enum { REFUSE_FULL, REFUSE_PER_IP, REFUSE_RESERVE, REFUSE_REASONS };
static const char *const refuse_reason[REFUSE_REASONS] = {"full", "per_ip", "reserve"};

/* The acceptor's admission of a new connection from sa: the daemon to hand
 * it to (the one with the most room), with the connection counted in its
 * load and against its address; or -1-reason when it must be refused.
 * Nothing is left for libmicrohttpd to refuse: a daemon handed more
 * connections than its limit by MHD_add_connection keeps a mutex locked
 * and blocks on it for good (0.9.75, fixed in 1.0), so the limits are
 * enforced here, and MHD's own limit is set above ours (see
 * ld_http_start).  Acceptor thread. */
static int admit(ld_http_t *h, const struct sockaddr *sa)
{
    int best = 0, total = 0, room = -1;
    for (int i = 0; i < h->n_d; i++) {
        int load = atomic_load_explicit(&h->load[i], memory_order_relaxed);
        total += load;
        if (h->limit[i] - load > room) {
            room = h->limit[i] - load;
            best = i;
        }
    }
    if (room <= 0)
        return -1 - REFUSE_FULL;
    int family;
    uint8_t addr[16];
    if (ip_key(sa, &family, addr)) {
        int refuse = -1;
        pthread_mutex_lock(&h->ip_mu);
        struct ip_count **p = ip_slot(h, family, addr);
        long n = *p ? (*p)->n : 0;
        if (h->per_ip_limit && n >= h->per_ip_limit)
            refuse = REFUSE_PER_IP;
        else if (h->conn_reserve > 0 && n > 0 && total >= h->conn_limit - h->conn_reserve)
            refuse = REFUSE_RESERVE; /* the last slots go to new addresses */
        else if (!*p && (*p = calloc(1, sizeof **p)) != NULL) {
            (*p)->family = family;
            memcpy((*p)->addr, addr, 16);
        }
        if (refuse < 0 && *p)
            (*p)->n++;
        pthread_mutex_unlock(&h->ip_mu);
        if (refuse >= 0)
            return -1 - refuse;
    }
    atomic_fetch_add_explicit(&h->load[best], 1, memory_order_relaxed);
    return best;
}

/* Undo admit's counts for a connection that never reached its daemon. */
static void admit_undo(ld_http_t *h, int daemon, const struct sockaddr *sa)
{
    atomic_fetch_sub_explicit(&h->load[daemon], 1, memory_order_relaxed);
    ip_count_drop(h, sa);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_deadline(ld_conn_t *c, int secs)
{
    atomic_store_explicit(&c->deadline_ms, secs > 0 ? now_ms() + secs * 1000LL : 0,
                          memory_order_relaxed);
}

static int daemon_index(const ld_http_t *h, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *di = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_DAEMON);
    for (int i = 0; di && i < h->n_d; i++)
        if (h->d[i] == di->daemon)
            return i;
    return -1;
}

static void conn_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                    enum MHD_ConnectionNotificationCode toe)
{
    ld_http_t *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add_explicit(&h->connections, 1, memory_order_relaxed);
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        ld_conn_t *c = fi ? calloc(1, sizeof *c) : NULL;
        if (!c) { /* no deadlines for it; the idle timeout still applies */
            ld_log_warn("http: out of memory for a connection's record");
            return;
        }
        c->fd = fi->connect_fd;
        c->mhd = conn;
        set_deadline(c, h->head_timeout_s);
        pthread_mutex_lock(&h->conn_mu);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        pthread_mutex_unlock(&h->conn_mu);
        *socket_context = c;
        return;
    }
    ld_conn_t *c = *socket_context;
    if (c) {
        pthread_mutex_lock(&h->conn_mu);
        if (c->prev)
            c->prev->next = c->next;
        else
            h->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock(&h->conn_mu);
        free(c);
        *socket_context = NULL;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    atomic_fetch_sub_explicit(&h->connections, 1, memory_order_relaxed);
    int i = daemon_index(h, conn);
    if (i >= 0)
        admit_undo(h, i, ci ? ci->client_addr : NULL);
}

ld_conn_t *ld_http_conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *si =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return si ? si->socket_context : NULL;
}

void ld_http_conn_head_done(const ld_http_t *h, ld_conn_t *c, int has_body)
{
    if (!c)
        return;
    atomic_store_explicit(&c->in_head, 0, memory_order_relaxed);
    set_deadline(c, has_body ? h->body_timeout_s : 0);
}

void ld_http_conn_request_done(const ld_http_t *h, ld_conn_t *c, int completed)
{
    if (!c)
        return;
    set_deadline(c, h->head_timeout_s);
    /* A client that sent its request and then shut down its sending side:
     * libmicrohttpd has read the request and not the end of stream behind
     * it, and with edge-triggered epoll it is not told again, so it would
     * keep the connection until the idle timeout.  Ending the socket here
     * wakes it to close. */
    char byte;
    if (completed && recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
        shutdown(c->fd, SHUT_RDWR);
}

void ld_http_conn_body_eof(ld_conn_t *c)
{
    /* the same blind spot as above, mid-body: the last bytes and the end of
     * stream come in one edge, libmicrohttpd reads the bytes and waits */
    char byte;
    if (c && recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
        shutdown(c->fd, SHUT_RDWR);
}

/* Write a complete response with status and the JSON error to fd (best
 * effort: a small answer fits the empty send buffer of a connection that is
 * still sending its head), then read what the client had already sent, so
 * the close that follows is a FIN and not a reset that could destroy the
 * answer before the client reads it. */
static void send_raw_error(int fd, int status, const char *code, const char *msg)
{
    ld_buf_t body = {0}, out = {0};
    char rid[LD_REQ_ID_MAX + 1]; /* the head is not parsed: always a new one */
    ld_http_request_id_new(rid);
    ld_http_error_body(&body, code, msg, rid);
    const char *reason = MHD_get_reason_phrase_for((unsigned)status);
    ld_buf_printf(&out,
                  "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                  "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                  "X-Request-Id: %s\r\nConnection: close\r\n\r\n",
                  status, reason && *reason ? reason : "Error", body.len, rid);
    ld_buf_append(&out, body.data, body.len);
    if (!ld_buf_failed(&out) && !ld_buf_failed(&body))
        (void)!send(fd, out.data, out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    ld_buf_free(&body);
    ld_buf_free(&out);
    char sink[4096];
    for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
}

void ld_http_conn_reject(ld_conn_t *c, int status, const char *code, const char *msg)
{
    if (!c || c->rejected)
        return;
    c->rejected = 1;
    send_raw_error(c->fd, status, code, msg);
    shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes */
}

/* MHD's URI callback, on the request line's arrival and before MHD parses
 * the query: too many parameters would exhaust MHD's per-connection pool,
 * after which it cannot even send its own error. */
static _Thread_local char mhd_thread_mark; /* its address tells MHD threads apart */

static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    ld_head_verdict_t v;
    ld_conn_t *c = ld_http_conn_of(conn);
    if (c) {
        const void *none = NULL;
        atomic_compare_exchange_strong(&c->owner, &none, (const void *)&mhd_thread_mark);
        atomic_store_explicit(&c->in_head, 1, memory_order_relaxed);
    }
    if (ld_http_target_check(uri, strlen(uri), &v) != LD_HEAD_OK) {
        atomic_fetch_add_explicit(&((ld_http_t *)cls)->heads_rejected, 1, memory_order_relaxed);
        ld_http_conn_reject(c, v.status, v.code, v.msg);
    }
    return NULL;
}

/* libmicrohttpd is about to answer, with HTML, a request head that the gate
 * did not see (a kept-alive connection's later request): one whose
 * Content-Length is not a number (bad_length), or one too large for its
 * memory pool (431).  Its logger says so on the connection's own thread,
 * but not which connection: the candidates are this thread's connections
 * whose head is being parsed (uri_cb to ld_http_conn_head_done).  Answer
 * them first with the JSON error; MHD's answer then meets a shut socket.
 * A bad Content-Length is checked on each candidate (any that has one is
 * about to get the same answer); a 431 is answered only when there is one
 * candidate, the failing connection being always among them (MHD parsed
 * its request line).  On the MHD thread, from its logger. */
static void reject_in_head(ld_http_t *h, int bad_length)
{
    ld_conn_t *only = NULL;
    int n = 0;
    pthread_mutex_lock(&h->conn_mu);
    for (ld_conn_t *c = h->conns; c; c = c->next) {
        if (atomic_load(&c->owner) != (const void *)&mhd_thread_mark ||
            !atomic_load_explicit(&c->in_head, memory_order_relaxed) || c->rejected)
            continue;
        only = c;
        n++;
        const char *cl = bad_length ? MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND,
                                                                  "Content-Length")
                                    : NULL;
        if (!cl || ld_http_length_ok(cl, strlen(cl)))
            continue;
        char msg[96];
        snprintf(msg, sizeof msg, "Content-Length '%.40s' is not a number", cl);
        atomic_fetch_add_explicit(&h->heads_rejected, 1, memory_order_relaxed);
        ld_http_conn_reject(c, 400, "bad_request", msg);
    }
    if (!bad_length && n == 1) {
        atomic_fetch_add_explicit(&h->heads_rejected, 1, memory_order_relaxed);
        ld_http_conn_reject(only, 431, "header_fields_too_large",
                            "the request head is too large");
    }
    pthread_mutex_unlock(&h->conn_mu);
}

/* Shut down the sockets of connections past their head or body deadline
 * (libmicrohttpd then closes them on its own thread).  Acceptor thread. */
static void reap(ld_http_t *h)
{
    long long now = now_ms();
    long n = 0;
    pthread_mutex_lock(&h->conn_mu);
    for (ld_conn_t *c = h->conns; c; c = c->next) {
        long long dl = atomic_load_explicit(&c->deadline_ms, memory_order_relaxed);
        if (dl && dl <= now) {
            atomic_store_explicit(&c->deadline_ms, 0, memory_order_relaxed);
            shutdown(c->fd, SHUT_RDWR);
            n++;
        }
    }
    pthread_mutex_unlock(&h->conn_mu);
    if (n)
        atomic_fetch_add_explicit(&h->reaped, n, memory_order_relaxed);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    static const char bad_length[] = "Failed to parse `Content-Length' header";
    static const char too_large[] = "Error processing request (HTTP response code is 431";
    if (strncmp(msg, bad_length, sizeof bad_length - 1) == 0)
        reject_in_head(cls, 1);
    else if (strncmp(msg, too_large, sizeof too_large - 1) == 0)
        reject_in_head(cls, 0);
    ld_log_warn("libmicrohttpd: %s", msg);
}

/* ------------------------------------------------------------- lifecycle */

/* A connection accepted and admitted whose first request head has not
 * arrived in full: held by the acceptor (not yet by any MHD daemon) until
 * its head passes ld_http_head_check, is refused, or its deadline passes.
 * Acceptor thread only. */
typedef struct pending {
    struct pending *prev, *next;
    int fd, daemon;
    long long deadline_ms;
    socklen_t len;
    struct sockaddr_storage ss;
} pending_t;

typedef struct {
    ld_http_t *h;
    int ep;            /* epoll: the listening socket (data NULL) and the pending */
    pending_t *head;
    char *buf;         /* peek buffer, cap bytes */
    size_t cap;
    double last_warn, last_refuse_warn;
} gate_t;

/* Forget p: its connection was handed over (keep 1) or is to be closed, with
 * its admission undone (keep 0). */
static void gate_drop(gate_t *g, pending_t *p, int keep)
{
    epoll_ctl(g->ep, EPOLL_CTL_DEL, p->fd, NULL);
    if (p->prev)
        p->prev->next = p->next;
    else
        g->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    atomic_fetch_sub_explicit(&g->h->held, 1, memory_order_relaxed);
    if (!keep) {
        close(p->fd);
        admit_undo(g->h, p->daemon, (const struct sockaddr *)&p->ss);
    }
    free(p);
}

/* New bytes (or the end) on p: hand the connection to its daemon once the
 * head is complete and passes, answer the JSON error if it fails. */
static void gate_check(gate_t *g, pending_t *p)
{
    ssize_t n = recv(p->fd, g->buf, g->cap, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) { /* gone before it asked anything */
        gate_drop(g, p, 0);
        return;
    }
    ld_head_verdict_t v;
    switch (ld_http_head_check(g->buf, (size_t)n, g->cap, &v)) {
    case LD_HEAD_INCOMPLETE:
        return; /* edge-triggered: woken again when more arrives */
    case LD_HEAD_REJECT:
        atomic_fetch_add_explicit(&g->h->heads_rejected, 1, memory_order_relaxed);
        send_raw_error(p->fd, v.status, v.code, v.msg);
        gate_drop(g, p, 0);
        return;
    default: {
        int fd = p->fd, d = p->daemon;
        struct sockaddr_storage ss = p->ss;
        socklen_t len = p->len;
        gate_drop(g, p, 1);
        /* on failure (out of memory) MHD has closed fd */
        if (MHD_add_connection(g->h->d[d], fd, (const struct sockaddr *)&ss, len) != MHD_YES)
            admit_undo(g->h, d, (const struct sockaddr *)&ss);
    }
    }
}

/* Accept what the backlog holds: admit (or close) each connection and hold
 * it until its head is in. */
static void gate_accept(gate_t *g)
{
    ld_http_t *h = g->h;
    for (int k = 0; k < 64; k++) {
        pending_t *p = calloc(1, sizeof *p);
        if (!p)
            return;
        p->len = sizeof p->ss;
        p->fd = accept4(h->listen_fd, (struct sockaddr *)&p->ss, &p->len,
                        SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (p->fd < 0) {
            int e = errno;
            free(p);
            if (e == EINTR || e == ECONNABORTED || e == EAGAIN || e == EWOULDBLOCK || e == EINVAL)
                return;
            /* out of descriptors or memory: keep serving the open
             * connections and try again shortly */
            double now = ld_now();
            if (now - g->last_warn > 10) {
                ld_log_warn("http: accept: %s (new connections wait)", strerror(e));
                g->last_warn = now;
            }
            struct timespec ts = {0, 10 * 1000000};
            nanosleep(&ts, NULL);
            return;
        }
        const struct sockaddr *sa = (const struct sockaddr *)&p->ss;
        int best = admit(h, sa);
        if (best < 0) {
            close(p->fd);
            free(p);
            int why = -1 - best;
            atomic_fetch_add_explicit(&h->refused[why], 1, memory_order_relaxed);
            double now = ld_now();
            if (now - g->last_refuse_warn > 10) {
                ld_log_warn("http: refusing new connections (%s; %ld open)", refuse_reason[why],
                            (long)atomic_load(&h->connections));
                g->last_refuse_warn = now;
            }
            continue;
        }
        p->daemon = best;
        p->deadline_ms = h->head_timeout_s > 0 ? now_ms() + h->head_timeout_s * 1000LL : 0;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = p};
        if (epoll_ctl(g->ep, EPOLL_CTL_ADD, p->fd, &ev) != 0) {
            close(p->fd);
            admit_undo(h, best, sa);
            free(p);
            continue;
        }
        p->next = g->head;
        if (g->head)
            g->head->prev = p;
        g->head = p;
        atomic_fetch_add_explicit(&h->held, 1, memory_order_relaxed);
        /* a head already here was reported by EPOLL_CTL_ADD's readiness check */
    }
}

/* Close the held connections past their head deadline (with a 408 when a
 * head had begun). */
static void gate_expire(gate_t *g)
{
    long long now = now_ms();
    for (pending_t *p = g->head, *next; p; p = next) {
        next = p->next;
        if (!p->deadline_ms || p->deadline_ms > now)
            continue;
        char c;
        if (recv(p->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
            send_raw_error(p->fd, 408, "request_timeout",
                           "the request head did not arrive within request_head_timeout");
        gate_drop(g, p, 0);
        atomic_fetch_add_explicit(&g->h->reaped, 1, memory_order_relaxed);
    }
}

/* The acceptor thread: accept, admit (or close), hold each new connection
 * until its first request head is in and checked (gate_check), then hand it
 * to the daemon admit chose; every REAP_MS, cut off connections past their
 * head or body deadline, held or handed over (gate_expire, reap).  Ends when
 * stop_accepting is set (the listening socket is shut down to wake it);
 * the connections still held are closed. */
#define REAP_MS 250

static void *acceptor_main(void *arg)
{
    ld_http_t *h = arg;
    gate_t g = {.h = h, .ep = h->gate_ep, .cap = h->conn_memory_limit / 2};
    g.buf = malloc(g.cap);
    long long next_reap = 0;
    while (g.buf && !atomic_load(&h->stop_accepting)) {
        if (now_ms() >= next_reap) {
            reap(h);
            gate_expire(&g);
            next_reap = now_ms() + REAP_MS;
        }
        struct epoll_event ev[64];
        int n = epoll_wait(g.ep, ev, 64, REAP_MS);
        for (int i = 0; i < n && !atomic_load(&h->stop_accepting); i++) {
            if (ev[i].data.ptr)
                gate_check(&g, ev[i].data.ptr);
            else
                gate_accept(&g);
        }
    }
    if (!g.buf)
        ld_log_error("http: out of memory: the acceptor stops");
    while (g.head)
        gate_drop(&g, g.head, 0);
    free(g.buf);
    return NULL;
}

/* Stop accepting and close the listening socket (connection attempts are
 * refused from now on).  Control thread; idempotent. */
static void stop_accepting(ld_http_t *h)
{
    atomic_store(&h->stop_accepting, 1);
    if (h->acceptor_running) {
        shutdown(h->listen_fd, SHUT_RDWR); /* wakes epoll_wait */
        pthread_join(h->acceptor, NULL);
        h->acceptor_running = 0;
    }
    if (h->listen_fd >= 0) {
        close(h->listen_fd);
        h->listen_fd = -1;
    }
    if (h->gate_ep >= 0) {
        close(h->gate_ep);
        h->gate_ep = -1;
    }
}

static void stop_daemons(ld_http_t *h)
{
    /* MHD aborts when stopped with a suspended connection: let the decodes
     * that requests wait for end first (they always do, in milliseconds to
     * seconds; MHD_stop_daemon itself processes the resumes) */
    atomic_store(&h->stopping, 1);
    double t0 = ld_now();
    while (atomic_load(&h->awaiting) > 0) {
        if (ld_now() - t0 > 60) {
            ld_log_error("http: %d requests still wait for their decode after 60 s",
                         atomic_load(&h->awaiting));
            break;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < h->n_d; i++) {
        MHD_stop_daemon(h->d[i]);
        h->d[i] = NULL;
    }
    h->n_d = 0;
}

/* Each connection is a descriptor: take the hard limit, and say so when
 * connection_limit cannot be reached under it. */
static void raise_nofile(const ld_http_t *h)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* models, logs, the state folder and libraries need some too */
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)h->conn_limit + 128 > rl.rlim_cur)
        ld_log_warn("http: connection_limit %d is close to the descriptor limit %llu "
                    "(RLIMIT_NOFILE): connections beyond it wait in the backlog",
                    h->conn_limit, (unsigned long long)rl.rlim_cur);
}

int ld_http_start(ld_http_t *h, ld_err_t *err)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr *sa;
    socklen_t sa_len;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | MHD_USE_NO_LISTEN_SOCKET;
    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (inet_pton(AF_INET, h->bind, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)h->port_cfg);
        sa = (struct sockaddr *)&sin;
        sa_len = sizeof sin;
    } else if (inet_pton(AF_INET6, h->bind, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)h->port_cfg);
        sa = (struct sockaddr *)&sin6;
        sa_len = sizeof sin6;
        flags |= MHD_USE_IPv6;
    } else {
        return ld_err_set(err, LD_EINVAL, "bind: '%s' is not an IPv4 or IPv6 address", h->bind);
    }
    /* the listening socket: ours (see the top of this file) */
    int one = 1;
    h->listen_fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (h->listen_fd < 0 ||
        setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (sa->sa_family == AF_INET6 &&
         setsockopt(h->listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
        bind(h->listen_fd, sa, sa_len) != 0 || listen(h->listen_fd, 1024) != 0) {
        int e = errno;
        if (h->listen_fd >= 0)
            close(h->listen_fd);
        h->listen_fd = -1;
        return ld_err_set(err, LD_EIO, "cannot listen on %s port %d: %s", h->bind, h->port_cfg,
                          strerror(e));
    }
    raise_nofile(h);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    getsockname(h->listen_fd, (struct sockaddr *)&bound, &blen);
    h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);

    for (int i = 0; i < h->threads; i++) {
        int limit = h->conn_limit / h->threads + (i < h->conn_limit % h->threads);
        h->limit[i] = limit > 0 ? limit : 1;
        struct MHD_OptionItem ops[16];
        int k = 0;
        /* the logger first, so MHD reports problems with later options through it */
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, h};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)h->conn_timeout_s, NULL};
        /* admit() keeps a daemon within limit[i]; MHD counts a closing
         * connection a moment longer than we do (its close notification
         * comes first), so its own limit, never to be reached, sits above.
         * No MHD per-IP limit: admit() counts addresses over all daemons. */
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)(h->limit[i] + MHD_LIMIT_SLACK), NULL};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)h->conn_memory_limit, NULL};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)ld_http_completed_cb, h};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)conn_cb, h};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)ld_http_unescape_cb, NULL};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)uri_cb, h};
        if (h->thread_stack)
            ops[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_STACK_SIZE, (intptr_t)h->thread_stack, NULL};
        ops[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

        /* no accept policy: the acceptor admits before handing over */
        h->d[i] = MHD_start_daemon(flags, 0, NULL, NULL, ld_http_access_cb, h, MHD_OPTION_ARRAY, ops,
                                   MHD_OPTION_END);
        if (!h->d[i]) {
            stop_daemons(h);
            stop_accepting(h);
            return ld_err_set(err, LD_EIO, "cannot start HTTP thread %d of %d", i + 1, h->threads);
        }
        h->n_d = i + 1;
    }
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    h->gate_ep = epoll_create1(EPOLL_CLOEXEC);
    if (h->gate_ep < 0 || epoll_ctl(h->gate_ep, EPOLL_CTL_ADD, h->listen_fd, &lev) != 0 ||
        pthread_create(&h->acceptor, NULL, acceptor_main, h) != 0) {
        stop_daemons(h);
        stop_accepting(h);
        return ld_err_set(err, LD_EIO, "cannot start the acceptor thread");
    }
    h->acceptor_running = 1;
    return LD_OK;
}


int ld_http_port(const ld_http_t *h)
{
    return h->port;
}

void ld_http_set_ready(ld_http_t *h, int ready)
{
    atomic_store(&h->ready, ready);
}

int ld_http_is_ready(const ld_http_t *h)
{
    return atomic_load(&h->ready) && !atomic_load(&h->draining);
}

int ld_http_is_draining(const ld_http_t *h)
{
    return atomic_load(&h->draining);
}

int ld_http_drain(ld_http_t *h, double timeout_s)
{
    atomic_store(&h->draining, 1);
    atomic_store(&h->ready, 0);
    for (int i = 0; i < h->n_drain; i++)
        h->drain_fn[i](h->drain_ctx[i]);
    if (!h->n_d)
        return 0;
    stop_accepting(h);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long long ns = (long long)(timeout_s * 1e9);
    until.tv_sec += (time_t)(ns / 1000000000);
    until.tv_nsec += (long)(ns % 1000000000);
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&h->mu);
    while (atomic_load(&h->in_flight) > 0) {
        /* the completed callback signals when it reaches zero; the timed wait
         * also covers the window between its decrement and its signal */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > until.tv_sec || (now.tv_sec == until.tv_sec && now.tv_nsec >= until.tv_nsec))
            break;
        struct timespec step = now;
        step.tv_nsec += 50 * 1000000;
        if (step.tv_nsec >= 1000000000) {
            step.tv_sec++;
            step.tv_nsec -= 1000000000;
        }
        if (step.tv_sec > until.tv_sec || (step.tv_sec == until.tv_sec && step.tv_nsec > until.tv_nsec))
            step = until;
        pthread_cond_timedwait(&h->cv, &h->mu, &step);
    }
    pthread_mutex_unlock(&h->mu);
    return (int)atomic_load(&h->in_flight);
}

void ld_http_conn_stop(ld_http_t *h)
{
    stop_accepting(h); /* no connection is handed to a daemon being stopped */
    stop_daemons(h);
    for (int i = 0; i < IP_BUCKETS; i++)
        while (h->ip_table[i]) {
            struct ip_count *c = h->ip_table[i];
            h->ip_table[i] = c->next;
            free(c);
        }
}

void ld_http_collect(ld_buf_t *out, void *ctx)
{
    ld_http_t *h = ctx;
    ld_metrics_family(out, "latentd_http_requests_in_flight", "gauge",
                      "Requests whose headers have arrived and whose response is not yet sent.");
    ld_buf_printf(out, "latentd_http_requests_in_flight %ld\n", (long)atomic_load(&h->in_flight));
    ld_metrics_family(out, "latentd_http_connections", "gauge", "Open client connections.");
    ld_buf_printf(out, "latentd_http_connections %ld\n", (long)atomic_load(&h->connections));
    ld_metrics_family(out, "latentd_http_thread_connections", "gauge",
                      "Open client connections of each HTTP thread (balanced by the acceptor).");
    for (int i = 0; i < h->n_d; i++) {
        const union MHD_DaemonInfo *di =
            h->d[i] ? MHD_get_daemon_info(h->d[i], MHD_DAEMON_INFO_CURRENT_CONNECTIONS) : NULL;
        ld_buf_printf(out, "latentd_http_thread_connections{thread=\"%d\"} %u\n", i,
                      di ? di->num_connections : 0u);
    }
    ld_metrics_family(out, "latentd_http_connections_held", "gauge",
                      "New connections the acceptor holds until their first request head is in.");
    ld_buf_printf(out, "latentd_http_connections_held %ld\n", (long)atomic_load(&h->held));
    ld_metrics_family(out, "latentd_http_connections_refused_total", "counter",
                      "Connections closed at once: every thread full, the client address at "
                      "per_ip_connection_limit, or only the reserve left.");
    for (int i = 0; i < REFUSE_REASONS; i++)
        ld_buf_printf(out, "latentd_http_connections_refused_total{reason=\"%s\"} %ld\n",
                      refuse_reason[i], (long)atomic_load(&h->refused[i]));
    ld_metrics_family(out, "latentd_http_connections_timed_out_total", "counter",
                      "Connections closed at request_head_timeout or request_body_timeout.");
    ld_buf_printf(out, "latentd_http_connections_timed_out_total %ld\n",
                  (long)atomic_load(&h->reaped));
    ld_metrics_family(out, "latentd_http_heads_rejected_total", "counter",
                      "Requests answered 400, 414 or 431 before libmicrohttpd parsed their head.");
    ld_buf_printf(out, "latentd_http_heads_rejected_total %ld\n",
                  (long)atomic_load(&h->heads_rejected));
    ld_metrics_family(out, "latentd_http_body_memory_bytes", "gauge",
                      "Bytes reserved for request bodies and their JSON parse trees.");
    ld_buf_printf(out, "latentd_http_body_memory_bytes %lld\n",
                  (long long)atomic_load(&h->mem_in_use));
    ld_metrics_family(out, "latentd_ready", "gauge",
                      "1 when /readyz answers 200 (started and not shutting down).");
    ld_buf_printf(out, "latentd_ready %d\n", ld_http_is_ready(h));
}


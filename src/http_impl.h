/* http_impl.h — private to the HTTP layer: what src/http.c (routing and the
 * request pipeline) and src/http_conn.c (the acceptor, per-connection
 * bookkeeping, the daemons' lifecycle) share.  Not for other modules.
 *
 * Ownership and threads: ld_http_t is made and freed by http.c (ld_http_new,
 * ld_http_free) on the control thread; its runtime half (daemons, listening
 * socket, acceptor, per-address counts) belongs to http_conn.c.  An ld_req_t
 * lives on one MHD thread from the first access-handler call to the
 * request-completed callback (http.c).
 */
#ifndef LATENTD_HTTP_IMPL_H
#define LATENTD_HTTP_IMPL_H

#include "latentd/http.h"

#include "latentd/arena.h"
#include "latentd/sha256.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define MAX_ROUTES 64
#define MAX_SEGS 8
#define MAX_PARAMS 4
#define MAX_ORIGINS 32
#define MAX_EXTRA_HEADERS 8
#define EXTRA_HEADER_BYTES 1024 /* their names and values, NULs included */
#define MAX_DRAIN_HOOKS 8
#define MAX_TOKEN_LEN 4096
#define MAX_DAEMONS 256 /* http_threads' maximum */
#define IP_BUCKETS 1024
#define MAX_QUERY_PARAMS 64 /* more get 414 before MHD parses them (its pool would run out) */
#define MAX_HEAD_FIELDS 64 /* more header lines get 431 (MHD's pool again) */
#define MHD_LIMIT_SLACK 4 /* MHD's connection limit above ours (see ld_http_start) */

/* One open connection (MHD's socket context), from MHD's start notification
 * to its close notification; listed in ld_http.conns under conn_mu, which
 * the reaper holds while it shuts a connection's socket down (MHD closes
 * the descriptor only after the close notification, so a listed fd is
 * open).  deadline_ms is written by the connection's MHD thread and read
 * by the reaper. */
typedef struct ld_conn {
    struct ld_conn *prev, *next;
    int fd;
    atomic_llong deadline_ms; /* CLOCK_MONOTONIC ms by which this phase must end; 0 none */
    int rejected;             /* answered by ld_http_conn_reject: no handler runs */
    struct MHD_Connection *mhd;
    /* between a request line (uri_cb) and its head's end (ld_http_conn_head_done):
     * MHD is parsing this connection's head, on the thread owner marks */
    atomic_int in_head;
    _Atomic(const void *) owner; /* set once, by the MHD thread's uri_cb */
} ld_conn_t;

/* Open connections of one client address (see admit, conn_cb). */
struct ip_count {
    int family;
    uint8_t addr[16];
    long n;
    struct ip_count *next;
};

typedef struct {
    ld_route_t r;
    char *method;
    char *pattern;
    int nseg;
    char *seg[MAX_SEGS]; /* point into segbuf */
    int is_param[MAX_SEGS];
    char *segbuf;
    int metric;
    ld_stream_t stream; /* stream.open NULL: bodies are not streamed */
} route_t;

struct ld_http {
    /* configuration, read-only after start */
    char *bind;
    int port_cfg;
    int threads, conn_timeout_s, conn_limit, per_ip_limit, conn_reserve;
    int head_timeout_s, body_timeout_s;
    size_t conn_memory_limit, max_body, body_memory_limit, thread_stack;
    int access_log;
    int n_origins, any_origin;
    char *origins[MAX_ORIGINS];
    int has_token, has_admin;
    uint8_t token_sha[LD_SHA256_LEN], admin_sha[LD_SHA256_LEN];
    route_t routes[MAX_ROUTES];
    int n_routes;
    int metric_unmatched;
    ld_metrics_t *metrics;
    void (*drain_fn[MAX_DRAIN_HOOKS])(void *);
    void *drain_ctx[MAX_DRAIN_HOOKS];
    int n_drain;

    /* runtime */
    struct MHD_Daemon *d[MAX_DAEMONS]; /* one per HTTP thread */
    int n_d;
    int port;
    int listen_fd;                     /* ours; -1 once closed (drain) */
    int gate_ep;                       /* the acceptor's epoll; -1 when closed */
    pthread_t acceptor;
    int acceptor_running;              /* control thread only */
    atomic_int stop_accepting;
    atomic_int load[MAX_DAEMONS];      /* connections admitted to d[i], not yet closed */
    int limit[MAX_DAEMONS];            /* d[i]'s share of conn_limit (set at start) */
    atomic_long refused[3];            /* connections closed by admit, by reason */
    pthread_mutex_t conn_mu;           /* guards conns */
    ld_conn_t *conns;                  /* every open connection (see ld_conn_t) */
    atomic_long reaped;                /* connections cut off at a head or body deadline */
    atomic_long held;                  /* connections the acceptor holds (first head not in) */
    atomic_long heads_rejected;        /* 400/414/431 written before MHD parsed the head */
    pthread_mutex_t ip_mu;             /* guards ip_table */
    struct ip_count *ip_table[IP_BUCKETS];
    atomic_int ready;
    atomic_int draining;
    atomic_long in_flight;
    atomic_int awaiting;       /* connections suspended by ld_req_await, not yet woken */
    atomic_int stopping;       /* stop_daemons has begun: ld_req_await blocks instead */
    atomic_llong busy_ns;              /* sum of finished requests' durations (streams aside) */
    atomic_long connections;
    atomic_llong mem_in_use; /* bytes charged for bodies and parse trees */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

struct ld_req {
    ld_http_t *h;
    struct MHD_Connection *conn;
    ld_conn_t *sock;        /* its connection's record, or NULL */
    int http11;             /* HTTP/1.1 (Host required) */
    char method[16];
    char *path;
    const route_t *route;
    int metric;
    int n_params;
    const char *param_name[MAX_PARAMS];
    char *param_val[MAX_PARAMS];
    double t0;
    /* body */
    int want_body;          /* accumulate (JSON routes) or discard */
    int raw_body;           /* an application/x-npy body: kept, not parsed */
    ld_body_sink_t *sink;   /* a streamed body goes here (closed at completion) */
    unsigned long long sink_expect; /* its Content-Length; 0 when chunked (a client
                                       that half-closes after the last chunk must
                                       still get its answer: no end-of-stream check) */
    uint8_t *body;
    size_t body_len, body_cap;
    long long charged;      /* bytes reserved in h->mem_in_use */
    cJSON *json;            /* parse tree of body, in arena */
    size_t json_len;        /* the JSON's bytes at the start of body (0: none) */
    ld_arena_t arena;
    /* reply */
    int defer;              /* hold replies until the request is complete (no body) */
    size_t discarded;       /* body bytes dropped after an early error */
    int replied;            /* a response is queued (or pending) */
    int streaming;          /* answered by ld_req_reply_mhd: not counted in busy_ns */
    struct MHD_Response *pending; /* could not be queued mid-body; queued at the end */
    int pending_status;
    int status;
    long long bytes;
    int close_conn;
    char rid[LD_REQ_ID_MAX + 1]; /* X-Request-Id (see http.h) */
    int n_extra;
    char *extra_name[MAX_EXTRA_HEADERS]; /* into extra_buf */
    char *extra_val[MAX_EXTRA_HEADERS];
    size_t extra_used;
    char extra_buf[EXTRA_HEADER_BYTES]; /* name\0value\0 pairs: no allocation each */
    /* ld_req_await / ld_req_wake: woken and suspended under wait_mu (the
     * waking thread and the HTTP thread race); cont is the HTTP thread's */
    pthread_mutex_t wait_mu;
    int woken, suspended;
    ld_req_cont_fn cont;
    void *cont_ctx;
};

/* http.c: MHD's access handler and request-completed callback (MHD threads). */
enum MHD_Result ld_http_access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls);
void ld_http_completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                          enum MHD_RequestTerminationCode toe);

/* http.c: {"error":{"code":code,"message":msg,"request_id":rid}} into b. */
void ld_http_error_body(ld_buf_t *b, const char *code, const char *msg, const char *rid);
/* http.c: a new request id (16 hex digits) into rid; any thread. */
void ld_http_request_id_new(char rid[LD_REQ_ID_MAX + 1]);
/* libmicrohttpd's unescape callback (MHD_OPTION_UNESCAPE_CALLBACK): %XX
 * decoded in place, except %00, which stays as written so that no handler
 * sees a path or query value cut short by a decoded NUL. */
size_t ld_http_unescape_cb(void *cls, struct MHD_Connection *c, char *s);

/* http_conn.c, per connection, on its MHD thread: */
/* The record of conn (NULL if it has none). */
ld_conn_t *ld_http_conn_of(struct MHD_Connection *conn);
/* A request head is complete: from now on the body's deadline (has_body),
 * or none (the handler and the reply are not bounded here). */
void ld_http_conn_head_done(const ld_http_t *h, ld_conn_t *c, int has_body);
/* The request ended (completed: answered in full): the next head's deadline
 * starts; a client that has shut down its sending side is disconnected. */
void ld_http_conn_request_done(const ld_http_t *h, ld_conn_t *c, int completed);
/* After a chunk of a streamed body: a client that has closed its side
 * before the body ended is cut off now (the request ends, its sink is
 * closed), not at the body deadline. */
void ld_http_conn_body_eof(ld_conn_t *c);
/* Answer a request libmicrohttpd cannot be trusted with (it is still reading
 * the head) with status and the JSON error, written to the socket directly,
 * and end the connection; no handler runs for it. */
void ld_http_conn_reject(ld_conn_t *c, int status, const char *code, const char *msg);

/* http_head.c: the raw head of a connection's first request, checked before
 * libmicrohttpd sees it (pure functions, any thread). */
enum { LD_HEAD_OK, LD_HEAD_INCOMPLETE, LD_HEAD_REJECT };
#define LD_MSG_CL_DIFFER "the request has Content-Length headers that differ"
#define LD_MSG_NO_HOST "an HTTP/1.1 request needs a Host header"
typedef struct {
    int status;       /* 400, 414, 431 */
    const char *code; /* the JSON error's code (static) */
    char msg[128];
} ld_head_verdict_t;
/* 1 if v[0..n) is a Content-Length value we take: 1 to 18 decimal digits. */
int ld_http_length_ok(const char *v, size_t n);
/* The number of query parameters of a request target (len bytes). */
int ld_http_query_params(const char *target, size_t len);
/* LD_HEAD_REJECT (414, *v filled) for a target with more than
 * MAX_QUERY_PARAMS parameters, else LD_HEAD_OK. */
int ld_http_target_check(const char *target, size_t len, ld_head_verdict_t *v);
/* buf[0..len): the bytes received so far, at most cap.  LD_HEAD_INCOMPLETE
 * while the head has not ended and len < cap; LD_HEAD_REJECT with *v filled
 * for a head that is too large (431), has too many query parameters (414)
 * or header fields (431), a Content-Length that is not a number or two that
 * differ, or is HTTP/1.1 without Host (400); otherwise LD_HEAD_OK (anything
 * else malformed is left to libmicrohttpd). */
int ld_http_head_check(const char *buf, size_t len, size_t cap, ld_head_verdict_t *v);

/* http_conn.c: stop accepting, stop the daemons (closing every connection)
 * and free the per-address counts.  Control thread; idempotent. */
void ld_http_conn_stop(ld_http_t *h);

#endif

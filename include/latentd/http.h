/* http.h — the HTTP layer over libmicrohttpd: routing table, body caps,
 * bearer-token auth, CORS, JSON errors, per-request log lines and metrics,
 * graceful drain.  Handlers (api.c, and later jobs) see parsed requests and
 * answer with one of the ld_req_reply_* calls; they never touch MHD unless
 * they stream (see ld_req_reply_mhd).
 *
 * Connections (http_conn.c): the acceptor closes a new connection when
 * every thread is full, its address is at per_ip_limit, or only the
 * reserve is left and its address has one already; it holds it until the
 * first request head is in, and answers a head that is too large (431), has
 * too many query parameters (414) or fields (431), a bad or conflicting
 * Content-Length or no Host in HTTP/1.1 (400) itself (http_head.c).  A head
 * must be complete head_timeout_s after the connection opens or the
 * previous request ends, a body body_timeout_s after its head; a client
 * that shuts down its sending side is disconnected after its answer.
 *
 * Request pipeline, in order (the first failure answers and stops):
 *   more than 64 query parameters -> 414 uri_too_long (no handler)
 *   differing Content-Lengths, HTTP/1.1 without Host -> 400 (+ Connection: close)
 *   draining?                    -> 503 shutting_down (+ Connection: close)
 *   OPTIONS on a known path      -> 204 preflight (Allow, CORS when allowed)
 *   route by path, then method   -> 404 not_found / 405 method_not_allowed + Allow
 *   auth class of the route      -> 401 (+ WWW-Authenticate: Bearer) / 403
 *   a streamed Content-Type (ld_http_route_stream): its own cap (413), then
 *     the body goes to the route's sink as it arrives, not to memory
 *   Content-Length > cap         -> 413 payload_too_large (before reading the body)
 *   Content-Type for JSON routes -> 415 unsupported_media_type
 *     (application/x-npy is also taken on LD_ROUTE_NPY routes: not parsed)
 *   body memory budget           -> 503 overloaded (+ Retry-After)
 *   accumulated body > cap       -> 413
 *   JSON parse (by length, object at top level, nothing after it) -> 400
 *     (of the body, or of its first N bytes: LD_ROUTE_JSON_PREFIX)
 *   handler
 * Every error body is {"error":{"code":"...","message":"..."}}, or
 * {"error":"..."} on a route with LD_ROUTE_ERROR_STRING.
 *
 * Threads: `threads` single-threaded MHD daemons (MHD's internal epoll
 * thread each) call the handlers; one acceptor thread owns the listening
 * socket and hands each connection to the daemon with the fewest (see
 * http_conn.c).  A handler runs on one thread for its request and may block
 * briefly (to lead a decode pass, for instance), never for long work such
 * as training, which goes to other threads.
 * Routes are added before ld_http_start; afterwards the table is read-only.
 * ld_http_drain/ld_http_free come from one control thread.
 */
#ifndef LATENTD_HTTP_H
#define LATENTD_HTTP_H

#include "latentd/buf.h"
#include "latentd/common.h"
#include "latentd/metrics.h"

#include <cjson/cJSON.h>
#include <stdint.h>

struct MHD_Connection;
struct MHD_Response;
struct MHD_Daemon;

typedef struct ld_http ld_http_t;
typedef struct ld_req ld_req_t;

typedef enum {
    LD_AUTH_NONE = 0,    /* open: /healthz, /readyz */
    LD_AUTH_INFERENCE,   /* inference token when one is configured (admin token also accepted) */
    LD_AUTH_ADMIN,       /* admin token always; 403 when none is configured */
} ld_auth_t;

enum {
    LD_ROUTE_JSON = 1u << 0,          /* body must be a JSON object (415/400 otherwise) */
    LD_ROUTE_JSON_OPTIONAL = 1u << 1, /* like LD_ROUTE_JSON, but an empty body is fine */
    LD_ROUTE_NPY = 1u << 3,           /* also an application/x-npy body, kept unparsed
                                         (ld_req_json NULL, ld_req_body has it) */
    LD_ROUTE_ERROR_STRING = 1u << 2,  /* errors are {"error":"message"} (the Open
                                         Inference Protocol's form), not an object */
    LD_ROUTE_JSON_PREFIX = 1u << 4,   /* with LD_ROUTE_JSON: when the request has the
                                         header LD_HTTP_JSON_LEN, the JSON is the body's
                                         first N bytes, the rest binary (ld_req_body),
                                         and the Content-Type is not checked; nor is
                                         it without the header when none is sent */
    LD_ROUTE_JSON_LAZY = 1u << 5,     /* with LD_ROUTE_JSON: the JSON is checked and
                                         parsed only when the handler calls
                                         ld_req_parse_json (a handler that reads a
                                         common body faster itself); ld_req_json is
                                         NULL until then */
};

/* The header of LD_ROUTE_JSON_PREFIX (the Open Inference Protocol's binary
 * tensor extension). */
#define LD_HTTP_JSON_LEN "Inference-Header-Content-Length"


/* A handler answers with exactly one ld_req_reply_* call (no reply = 500,
 * logged as a bug). ctx is the route's. */
typedef void (*ld_handler_fn)(ld_req_t *req, void *ctx);

typedef struct {
    const char *method;   /* "GET" (also answers HEAD), "POST", "PUT", "DELETE" */
    const char *pattern;  /* "/v1/models/{name}/sample": literal segments and {param}s */
    ld_auth_t auth;
    unsigned flags;       /* LD_ROUTE_* */
    ld_handler_fn fn;
    void *ctx;
} ld_route_t;

typedef struct {
    const char *bind;               /* IPv4/IPv6 literal */
    int port;                       /* 0 = any */
    int threads;                    /* HTTP threads, >= 1: one MHD daemon each, fed
                                       connections by one acceptor thread */
    int conn_timeout_s;             /* idle connection timeout */
    int conn_limit;
    int per_ip_limit;               /* 0 = none */
    int conn_reserve;               /* the last conn_reserve slots only go to
                                       addresses with no open connection */
    int head_timeout_s;             /* a request head must be complete this long
                                       after the connection opens or the previous
                                       request ends (0 = none) */
    int body_timeout_s;             /* a body must be complete this long after its
                                       head (0 = none) */
    size_t conn_memory_limit;       /* MHD per-connection pool */
    size_t max_body;                /* request body cap */
    size_t body_memory_limit;       /* all buffered bodies plus their parse trees */
    size_t thread_stack;            /* bytes, 0 = MHD default */
    const char *cors_origins;       /* "a, b" or "*" or "" */
    const char *token;              /* inference token or NULL */
    const char *admin_token;        /* admin token or NULL */
    int access_log;                 /* one info line per request */
} ld_http_opts_t;

/* ---- streamed bodies: written elsewhere as they arrive, never held whole ---- */
typedef struct ld_body_sink ld_body_sink_t;
struct ld_body_sink {
    /* n more bytes of the body (on the request's thread): 0, or -1 after
     * answering req (ld_req_error); the rest of the body is then discarded. */
    int (*write)(ld_body_sink_t *sink, ld_req_t *req, const void *data, size_t n);
    /* The request is over, however it ended (answered, timed out, the client
     * went away mid-body): release the sink and whatever it made.  Once. */
    void (*close)(ld_body_sink_t *sink);
};
/* Opens the sink of a request whose head has passed routing, auth and the
 * size check; content_length: the announced length, -1 when chunked.  NULL
 * after answering req. ctx: the route's. */
typedef ld_body_sink_t *(*ld_sink_open_fn)(ld_req_t *req, void *ctx, long long content_length);
typedef struct {
    const char *content_type; /* bodies of this type stream (others: as the route says) */
    size_t max_body;          /* 413 above it: Content-Length before reading, then
                                 the running count; replaces the server's max_body */
    const char *limit_name;   /* the setting that message names, e.g. "max_upload_bytes" */
    ld_sink_open_fn open;
    ld_handler_fn fn;         /* runs instead of the route's handler once the
                                 body is in; ld_req_sink(req) is the sink */
} ld_stream_t;

/* Create (not started). Strings in opts are copied; tokens are kept only as
 * SHA-256 digests. metrics is borrowed and must outlive the server. */
int ld_http_new(const ld_http_opts_t *opts, ld_metrics_t *metrics, ld_http_t **out,
                ld_err_t *err);
/* Add a route (before ld_http_start). LD_EINVAL for a bad pattern or a
 * duplicate method+pattern; LD_ENOMEM when the table is full. */
int ld_http_route_add(ld_http_t *h, const ld_route_t *route, ld_err_t *err);
/* The i-th route added (0-based; method and pattern as given), or NULL when
 * i is out of range: for listing the table (`latentd routes`).  Borrowed
 * from h.  The control thread, or any thread once the server has started
 * (the table is read-only then). */
const ld_route_t *ld_http_route_at(const ld_http_t *h, int i);
/* Let the route method+pattern (added already) stream bodies of
 * st->content_type (see ld_stream_t; st is copied, its strings must be
 * static).  Before ld_http_start.  LD_ENOTFOUND when there is no such route. */
int ld_http_route_stream(ld_http_t *h, const char *method, const char *pattern,
                         const ld_stream_t *st, ld_err_t *err);
/* Bind and start the thread pool. */
int ld_http_start(ld_http_t *h, ld_err_t *err);
/* The bound port (useful with port 0); 0 before start. */
int ld_http_port(const ld_http_t *h);
/* /readyz state: not ready until set; draining implies not ready. */
void ld_http_set_ready(ld_http_t *h, int ready);
int ld_http_is_ready(const ld_http_t *h);
int ld_http_is_draining(const ld_http_t *h);
/* Called (on the control thread) when draining starts, e.g. to end streams. */
int ld_http_on_drain(ld_http_t *h, void (*fn)(void *ctx), void *ctx);
/* Stop accepting connections (the listening socket refuses from now on),
 * answer new requests on open connections with 503, and wait up to timeout_s
 * for requests in flight to finish. Returns the number still in flight. */
int ld_http_drain(ld_http_t *h, double timeout_s);
/* The time requests have spent in flight, summed over requests (each added
 * when it finishes; ld_req_reply_mhd answers such as event streams not
 * counted), in seconds.  Its growth rate is the mean number of requests in
 * flight (Little's law): the daemon's serving load.  Any thread. */
double ld_http_busy_seconds(const ld_http_t *h);
/* Requests begun and not yet completed (headers read, reply not yet sent). */
int ld_http_in_flight(const ld_http_t *h);
/* Stop the pool (closing every connection) and free. NULL is fine. */
void ld_http_free(ld_http_t *h);
/* A metrics collector (ctx = the server): in-flight requests, open
 * connections, buffered body bytes. */
void ld_http_collect(ld_buf_t *out, void *ctx);

/* ---- requests (valid only inside the handler) ---- */
const char *ld_req_method(const ld_req_t *req);
const char *ld_req_path(const ld_req_t *req);
/* A {param} of the route pattern, or NULL. */
const char *ld_req_param(const ld_req_t *req, const char *name);
/* A query-string argument (decoded), or NULL (also for a key without a value). */
const char *ld_req_query(const ld_req_t *req, const char *key);
/* Calls fn for each query argument; stops early when fn returns non-zero. */
void ld_req_query_each(const ld_req_t *req, int (*fn)(void *ctx, const char *k, const char *v),
                       void *ctx);
/* A request header (case-insensitive name), or NULL. */
const char *ld_req_header(const ld_req_t *req, const char *name);
/* The parsed JSON object of an LD_ROUTE_JSON* route (NULL when the body was
 * empty). Owned by the request. */
const cJSON *ld_req_json(const ld_req_t *req);
/* On an LD_ROUTE_JSON_LAZY route: check and parse the JSON now, with the
 * errors the HTTP layer gives on other routes (400, 413, 503): 0, then
 * ld_req_json has it, or -1 after answering.  Once parsed, or on another
 * route: 0 and nothing done. */
int ld_req_parse_json(ld_req_t *req);
/* Bytes of the body that are JSON (the whole body, or the
 * LD_HTTP_JSON_LEN prefix); 0 when there is none. */
size_t ld_req_json_len(const ld_req_t *req);
/* The raw body (owned by the request) and its length. */
const uint8_t *ld_req_body(const ld_req_t *req, size_t *len);
ld_http_t *ld_req_server(const ld_req_t *req);
/* The sink of a streamed body (ld_http_route_stream), or NULL. */
ld_body_sink_t *ld_req_sink(const ld_req_t *req);
struct MHD_Connection *ld_req_connection(const ld_req_t *req);

/* ---- replies ---- */
/* Add a response header (copied into the request; at most 8, 1 KiB in all);
 * call before the reply.  0 or LD_ENOMEM. */
int ld_req_header_add(ld_req_t *req, const char *name, const char *value);
/* Answer with body[0..len) (malloc'd; ownership moves here, freed even on
 * failure) and the given content type. */
void ld_req_reply(ld_req_t *req, int status, const char *content_type, void *body, size_t len);
/* Answer with a static or borrowed body that outlives the response (copied if not). */
void ld_req_reply_copy(ld_req_t *req, int status, const char *content_type, const void *body,
                       size_t len);
/* Answer with size bytes of the open file fd from its start (ownership of
 * fd moves here: closed when the response is done, or now on failure). */
void ld_req_reply_fd(ld_req_t *req, int status, const char *content_type, int fd, uint64_t size);
/* Answer with the JSON text in b (application/json); b is emptied. A failed
 * buffer (out of memory) becomes a 503. */
void ld_req_reply_json(ld_req_t *req, int status, ld_buf_t *b);
/* Answer {"error":{"code":code,"message":...}} with status ({"error":...}
 * on an LD_ROUTE_ERROR_STRING route). */
void ld_req_error(ld_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Escape hatch for streaming handlers: queue a response built by the caller
 * (CORS and standard headers are added here; the caller keeps its own
 * reference and destroys it as usual). bytes is what to log (-1 unknown). */
void ld_req_reply_mhd(ld_req_t *req, int status, struct MHD_Response *resp, long long bytes);
/* After ld_req_reply_mhd with bytes -1 (a stream): the count of body bytes
 * sent, which the response's content reader adds to as it hands bytes to MHD,
 * so the access log and latentd_http_response_bytes_total include them.  Valid
 * until the request completes (MHD runs the reader only before that), on the
 * thread running the reader. */
long long *ld_req_bytes_sent(ld_req_t *req);

/* ---- replies finished on another thread ---- */
/* The continuation of a handler whose work went to another thread: runs on
 * the request's HTTP thread and must reply.  Called with req == NULL instead
 * when the request ended first (the client went away while it waited): then
 * it only releases ctx. */
typedef void (*ld_req_cont_fn)(ld_req_t *req, void *ctx);
/* For a handler that handed work to another thread, which calls
 * ld_req_wake(req) exactly once when it is done: call last, then return.
 * fn(req, ctx) runs on this HTTP thread after the wake: at once if the wake
 * already happened, otherwise the connection is suspended meanwhile (its
 * HTTP thread serves other connections) and fn runs when it is resumed.
 * Once the server has begun to stop, the thread waits for the wake instead
 * (libmicrohttpd cannot be stopped with a connection suspended), and the
 * stop waits for every suspended connection to be woken. */
void ld_req_await(ld_req_t *req, ld_req_cont_fn fn, void *ctx);
/* From any thread: the work ld_req_await waits for is done. */
void ld_req_wake(ld_req_t *req);

/* ---- caching and compression (http_cache.c; pure unless said) ---- */
/* Conditional GET: adds the ETag etag (quoted) and Cache-Control
 * cache_control headers; when the request's If-None-Match names etag (or is
 * "*") answers 304 with no body and returns 1, else returns 0 and the caller
 * answers as usual (its reply carries both headers). */
int ld_req_conditional(ld_req_t *req, const char *etag, const char *cache_control);
/* Whether an Accept-Encoding value accepts gzip: a "gzip" (or "x-gzip", or
 * failing those "*") entry whose q is not zero (RFC 9110 12.5.3).  NULL: 0. */
int ld_http_accepts_gzip(const char *accept_encoding);
/* Whether an If-None-Match value names etag (weak comparison: a W/ prefix is
 * ignored), or is "*". */
int ld_http_etag_matches(const char *if_none_match, const char *etag);
/* gzip (not zlib) of data[0..len) at zlib level into *out (malloc'd, the
 * caller's); *out NULL when it would not be smaller.  0 or LD_ENOMEM. */
int ld_http_gzip(const void *data, size_t len, int level, uint8_t **out, size_t *out_len);

/* The X-Request-Id header: every response carries one (the client's when it
 * sent a valid one: 1 to LD_REQ_ID_MAX visible ASCII characters; otherwise
 * one made here), and so do the access log line and every error body. */
#define LD_REQ_ID_MAX 128

/* ---- helpers ---- */
/* Constant-time comparison of two NUL-terminated secrets (via SHA-256, so the
 * time does not depend on where they differ or on their lengths). 1 if equal. */
int ld_secret_equal(const char *a, const char *b);

#endif

/* http.c — see include/latentd/http.h.
 *
 * One ld_req_t per request, created on MHD's first access-handler call (the
 * headers are in) and freed in the request-completed callback, which also
 * writes the access log line and the metrics.  Shared state touched by
 * several MHD threads is atomic (counters, flags); the locks are mu, held by
 * the drain waiter and by the completed callback to signal it, and those of
 * http_conn.c (ip_mu, conn_mu), never held together with mu.
 *
 * The acceptor, the daemons and the per-connection bookkeeping are in
 * http_conn.c; the structures both files use are in http_impl.h.
 */
#define _GNU_SOURCE
#include "http_impl.h"

#include "latentd/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* JSON answers of at least this many bytes are gzipped for clients that
 * accept it; smaller ones gain too little to pay for the header and the CPU */
#define GZIP_MIN_BYTES 1024

/* ---------------------------------------------------------------- helpers */

int ld_secret_equal(const char *a, const char *b)
{
    uint8_t da[LD_SHA256_LEN], db[LD_SHA256_LEN];
    ld_sha256(a, strlen(a), da);
    ld_sha256(b, strlen(b), db);
    volatile uint8_t diff = 0;
    for (int i = 0; i < LD_SHA256_LEN; i++)
        diff |= (uint8_t)(da[i] ^ db[i]);
    return diff == 0;
}

static int digest_equal(const uint8_t a[LD_SHA256_LEN], const uint8_t b[LD_SHA256_LEN])
{
    volatile uint8_t diff = 0;
    for (int i = 0; i < LD_SHA256_LEN; i++)
        diff |= (uint8_t)(a[i] ^ b[i]);
    return diff == 0;
}

static int charge(ld_http_t *h, ld_req_t *req, long long n)
{
    long long now = atomic_fetch_add_explicit(&h->mem_in_use, n, memory_order_relaxed) + n;
    if (now > (long long)h->body_memory_limit) {
        atomic_fetch_sub_explicit(&h->mem_in_use, n, memory_order_relaxed);
        return -1;
    }
    req->charged += n;
    return 0;
}

static void uncharge(ld_http_t *h, ld_req_t *req)
{
    if (req->charged) {
        atomic_fetch_sub_explicit(&h->mem_in_use, req->charged, memory_order_relaxed);
        req->charged = 0;
    }
}

/* ------------------------------------------------------------- request ids */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static atomic_uint_fast64_t rid_next;
static pthread_once_t rid_once = PTHREAD_ONCE_INIT;

static void rid_seed(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store(&rid_next, splitmix64((uint64_t)ts.tv_sec * 1000000000ULL +
                                       (uint64_t)ts.tv_nsec) ^ splitmix64((uint64_t)getpid()));
}

void ld_http_request_id_new(char rid[LD_REQ_ID_MAX + 1])
{
    /* a counter from a random start through a bijection: unique within a
     * process, unpredictable across starts */
    pthread_once(&rid_once, rid_seed);
    uint64_t x = splitmix64(atomic_fetch_add_explicit(&rid_next, 1, memory_order_relaxed));
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++)
        rid[i] = hex[(x >> (60 - 4 * i)) & 15];
    rid[16] = '\0';
}

/* The client's X-Request-Id when it is 1 to LD_REQ_ID_MAX visible ASCII
 * characters (it goes into headers, JSON and log lines as it is), else a
 * new one. */
static void request_id_init(ld_req_t *req)
{
    const char *v = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = v ? strnlen(v, LD_REQ_ID_MAX + 1) : 0;
    int ok = n >= 1 && n <= LD_REQ_ID_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = v[i] > 0x20 && v[i] < 0x7F;
    if (ok)
        memcpy(req->rid, v, n + 1);
    else
        ld_http_request_id_new(req->rid);
}

/* ------------------------------------------------------------------ setup */

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int parse_origins(ld_http_t *h, const char *list, ld_err_t *err)
{
    if (!list)
        return LD_OK;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *s = p;
        while (*p && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        if (p == s)
            continue;
        size_t n = (size_t)(p - s);
        if (n == 1 && *s == '*') {
            h->any_origin = 1;
            continue;
        }
        if (h->n_origins >= MAX_ORIGINS)
            return ld_err_set(err, LD_EINVAL, "cors_origins: at most %d origins", MAX_ORIGINS);
        if (!(n > 7 && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0)) ||
            s[n - 1] == '/')
            return ld_err_set(err, LD_EINVAL,
                              "cors_origins: '%.*s' is not an origin like https://example.com:8443",
                              (int)n, s);
        if (!(h->origins[h->n_origins] = strndup(s, n)))
            return ld_err_set(err, LD_ENOMEM, "out of memory");
        h->n_origins++;
    }
    return LD_OK;
}

int ld_http_new(const ld_http_opts_t *o, ld_metrics_t *metrics, ld_http_t **out, ld_err_t *err)
{
    ld_http_t *h = calloc(1, sizeof *h);
    if (!h)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    h->bind = xstrdup(o->bind ? o->bind : "127.0.0.1");
    h->port_cfg = o->port;
    h->threads = o->threads > 0 ? (o->threads < MAX_DAEMONS ? o->threads : MAX_DAEMONS) : 1;
    h->conn_timeout_s = o->conn_timeout_s;
    h->conn_limit = o->conn_limit;
    h->per_ip_limit = o->per_ip_limit;
    /* a reserve of more than half the slots would ration every client */
    h->conn_reserve = o->conn_reserve < o->conn_limit / 2 ? o->conn_reserve : o->conn_limit / 2;
    h->head_timeout_s = o->head_timeout_s;
    h->body_timeout_s = o->body_timeout_s;
    h->conn_memory_limit = o->conn_memory_limit;
    h->max_body = o->max_body;
    h->body_memory_limit = o->body_memory_limit;
    h->thread_stack = o->thread_stack;
    h->access_log = o->access_log;
    h->metrics = metrics;
    h->listen_fd = -1;
    h->gate_ep = -1;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->ip_mu, NULL);
    pthread_mutex_init(&h->conn_mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    if (o->token && *o->token) {
        h->has_token = 1;
        ld_sha256(o->token, strlen(o->token), h->token_sha);
    }
    if (o->admin_token && *o->admin_token) {
        h->has_admin = 1;
        ld_sha256(o->admin_token, strlen(o->admin_token), h->admin_sha);
    }
    h->metric_unmatched = metrics ? ld_metrics_route(metrics, "unmatched") : -1;
    int rc = h->bind ? parse_origins(h, o->cors_origins, err)
                     : ld_err_set(err, LD_ENOMEM, "out of memory");
    if (rc != LD_OK) {
        ld_http_free(h);
        return rc;
    }
    *out = h;
    return LD_OK;
}

int ld_http_route_add(ld_http_t *h, const ld_route_t *r, ld_err_t *err)
{
    if (h->n_d)
        return ld_err_set(err, LD_EINVAL, "routes must be added before the server starts");
    if (!r->method || !r->pattern || r->pattern[0] != '/' || !r->fn)
        return ld_err_set(err, LD_EINVAL, "route: bad method, pattern or handler");
    if (h->n_routes >= MAX_ROUTES)
        return ld_err_set(err, LD_ENOMEM, "route table full (%d routes)", MAX_ROUTES);
    for (int i = 0; i < h->n_routes; i++)
        if (strcmp(h->routes[i].pattern, r->pattern) == 0 &&
            strcmp(h->routes[i].method, r->method) == 0)
            return ld_err_set(err, LD_EINVAL, "route %s %s added twice", r->method, r->pattern);
    route_t *rt = &h->routes[h->n_routes];
    memset(rt, 0, sizeof *rt);
    rt->r = *r;
    rt->method = strdup(r->method);
    rt->pattern = strdup(r->pattern);
    rt->segbuf = strdup(r->pattern + 1);
    if (!rt->method || !rt->pattern || !rt->segbuf) {
        free(rt->method);
        free(rt->pattern);
        free(rt->segbuf);
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    }
    int np = 0;
    char *save = NULL;
    for (char *s = strtok_r(rt->segbuf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (rt->nseg >= MAX_SEGS)
            goto bad;
        size_t n = strlen(s);
        if (s[0] == '{') {
            if (n < 3 || s[n - 1] != '}' || np >= MAX_PARAMS)
                goto bad;
            s[n - 1] = '\0';
            s++;
            rt->is_param[rt->nseg] = 1;
            np++;
        }
        rt->seg[rt->nseg++] = s;
    }
    rt->metric = h->metrics ? ld_metrics_route(h->metrics, r->pattern) : -1;
    rt->r.method = rt->method;
    rt->r.pattern = rt->pattern;
    h->n_routes++;
    return LD_OK;
bad:
    free(rt->method);
    free(rt->pattern);
    free(rt->segbuf);
    return ld_err_set(err, LD_EINVAL, "route pattern '%s' is malformed", r->pattern);
}

const ld_route_t *ld_http_route_at(const ld_http_t *h, int i)
{
    return i >= 0 && i < h->n_routes ? &h->routes[i].r : NULL;
}

int ld_http_route_stream(ld_http_t *h, const char *method, const char *pattern,
                         const ld_stream_t *st, ld_err_t *err)
{
    if (h->n_d)
        return ld_err_set(err, LD_EINVAL, "routes must be added before the server starts");
    if (!st->content_type || !st->open || !st->fn || !st->max_body || !st->limit_name)
        return ld_err_set(err, LD_EINVAL, "stream of %s %s: incomplete", method, pattern);
    for (int i = 0; i < h->n_routes; i++)
        if (strcmp(h->routes[i].pattern, pattern) == 0 &&
            strcmp(h->routes[i].method, method) == 0) {
            h->routes[i].stream = *st;
            return LD_OK;
        }
    return ld_err_set(err, LD_ENOTFOUND, "no route %s %s to stream", method, pattern);
}

int ld_http_on_drain(ld_http_t *h, void (*fn)(void *ctx), void *ctx)
{
    if (h->n_drain >= MAX_DRAIN_HOOKS)
        return LD_ENOMEM;
    h->drain_fn[h->n_drain] = fn;
    h->drain_ctx[h->n_drain] = ctx;
    h->n_drain++;
    return LD_OK;
}

/* --------------------------------------------------------------- matching */

/* Split path into at most MAX_SEGS segments of a private copy; -1 if it
 * cannot match any route (too many segments, empty segment). */
static int split_path(const char *path, char *copy, size_t cap, char **seg)
{
    size_t n = strlen(path);
    if (n == 0 || path[0] != '/' || n >= cap)
        return -1;
    memcpy(copy, path + 1, n); /* includes NUL */
    if (copy[0] == '\0')
        return 0; /* "/" */
    int ns = 0;
    char *p = copy;
    for (;;) {
        if (ns >= MAX_SEGS)
            return -1;
        char *slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        if (*p == '\0')
            return -1;
        seg[ns++] = p;
        if (!slash)
            break;
        p = slash + 1;
    }
    return ns;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* See http_impl.h: MHD's unescaping of the path and query values (%XX in
 * place), except that %00 stays as written: a decoded NUL would end the C string the handlers
 * get, and "/ui/app.js%00.png" would be served as /ui/app.js. */
size_t ld_http_unescape_cb(void *cls, struct MHD_Connection *c, char *s)
{
    char *w = s;
    for (const char *r = s; *r;) {
        int hi = r[0] == '%' ? hex_digit(r[1]) : -1;
        int lo = hi >= 0 ? hex_digit(r[2]) : -1;
        if (lo >= 0 && (hi | lo) != 0) {
            *w++ = (char)(hi * 16 + lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static int route_matches(const route_t *rt, char **seg, int ns)
{
    if (rt->nseg != ns)
        return 0;
    for (int i = 0; i < ns; i++)
        if (!rt->is_param[i] && strcmp(rt->seg[i], seg[i]) != 0)
            return 0;
    return 1;
}

static int method_matches(const route_t *rt, const char *method)
{
    return strcmp(rt->method, method) == 0 ||
           (strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0);
}

/* Allow header value for every route whose pattern matches. */
static void allow_list(const ld_http_t *h, char **seg, int ns, char *out, size_t cap)
{
    out[0] = '\0';
    int get = 0;
    for (int i = 0; i < h->n_routes; i++) {
        if (!route_matches(&h->routes[i], seg, ns))
            continue;
        if (out[0])
            strncat(out, ", ", cap - strlen(out) - 1);
        strncat(out, h->routes[i].method, cap - strlen(out) - 1);
        if (strcmp(h->routes[i].method, "GET") == 0)
            get = 1;
    }
    if (get)
        strncat(out, ", HEAD", cap - strlen(out) - 1);
    if (out[0])
        strncat(out, ", OPTIONS", cap - strlen(out) - 1);
}

/* ---------------------------------------------------------------- replies */

static const char *req_origin_allowed(const ld_req_t *req)
{
    const ld_http_t *h = req->h;
    if (!h->any_origin && h->n_origins == 0)
        return NULL;
    const char *origin = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Origin");
    if (!origin)
        return NULL;
    if (h->any_origin)
        return "*";
    for (int i = 0; i < h->n_origins; i++)
        if (strcmp(origin, h->origins[i]) == 0)
            return origin;
    return NULL;
}

static void add_common_headers(ld_req_t *req, struct MHD_Response *r)
{
    /* streams and the web page's files set their own */
    int own_cache = MHD_get_response_header(r, "Cache-Control") != NULL;
    for (int i = 0; i < req->n_extra && !own_cache; i++)
        own_cache = strcasecmp(req->extra_name[i], "Cache-Control") == 0;
    if (!own_cache)
        MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Request-Id", req->rid);
    const char *origin = req_origin_allowed(req);
    if (req->h->n_origins)
        MHD_add_response_header(r, "Vary", "Origin");
    if (origin) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(r, "Access-Control-Expose-Headers",
                                "X-Latentd-Seed, X-Latentd-Model-Version, Retry-After, "
                                "WWW-Authenticate, Location, X-Request-Id, ETag");
    }
    for (int i = 0; i < req->n_extra; i++)
        MHD_add_response_header(r, req->extra_name[i], req->extra_val[i]);
    if (req->close_conn || atomic_load_explicit(&req->h->draining, memory_order_relaxed))
        MHD_add_response_header(r, "Connection", "close");
}

/* Queue r (adding the common headers) now, or keep it pending until the
 * request is complete. Takes over the caller's reference. */
static void submit(ld_req_t *req, int status, struct MHD_Response *r, long long bytes)
{
    if (req->replied || !r) {
        if (r)
            MHD_destroy_response(r);
        if (!req->replied) { /* could not build a response: drop the connection */
            req->replied = 1;
            req->status = 0;
        }
        return;
    }
    add_common_headers(req, r);
    req->replied = 1;
    req->status = status;
    req->bytes = bytes;
    if (!req->defer && MHD_queue_response(req->conn, (unsigned)status, r) == MHD_YES) {
        MHD_destroy_response(r);
    } else {
        /* deferred (see on_headers), or MHD refuses responses while it reads
         * the body: keep it until the upload ends (the rest of the body is
         * discarded meanwhile) */
        req->pending = r;
        req->pending_status = status;
    }
}

int ld_req_header_add(ld_req_t *req, const char *name, const char *value)
{
    size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
    if (req->n_extra >= MAX_EXTRA_HEADERS || nl + vl > EXTRA_HEADER_BYTES - req->extra_used)
        return LD_ENOMEM;
    char *n = req->extra_buf + req->extra_used, *v = n + nl;
    memcpy(n, name, nl);
    memcpy(v, value, vl);
    req->extra_used += nl + vl;
    req->extra_name[req->n_extra] = n;
    req->extra_val[req->n_extra] = v;
    req->n_extra++;
    return LD_OK;
}

void ld_req_reply(ld_req_t *req, int status, const char *content_type, void *body, size_t len)
{
    struct MHD_Response *r =
        body ? MHD_create_response_from_buffer_with_free_callback(len, body, free)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
    } else if (content_type) {
        MHD_add_response_header(r, "Content-Type", content_type);
    }
    submit(req, status, r, (long long)len);
}

void ld_req_reply_copy(ld_req_t *req, int status, const char *content_type, const void *body,
                       size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r && content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    submit(req, status, r, (long long)len);
}

void ld_req_reply_fd(ld_req_t *req, int status, const char *content_type, int fd, uint64_t size)
{
    struct MHD_Response *r = MHD_create_response_from_fd(size, fd);
    if (!r)
        close(fd);
    else if (content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    submit(req, status, r, (long long)size);
}

void ld_req_reply_json(ld_req_t *req, int status, ld_buf_t *b)
{
    if (ld_buf_failed(b)) {
        ld_buf_free(b);
        ld_req_error(req, 503, "overloaded", "out of memory while writing the response");
        return;
    }
    ld_buf_putc(b, '\n');
    size_t len;
    char *p = ld_buf_steal(b, &len);
    if (!p) {
        ld_req_error(req, 503, "overloaded", "out of memory while writing the response");
        return;
    }
    if (len >= GZIP_MIN_BYTES) {
        /* the answer may differ by Accept-Encoding: caches must key on it */
        ld_req_header_add(req, "Vary", "Accept-Encoding");
        uint8_t *gz = NULL;
        size_t gz_len = 0;
        /* the fastest level: float text shrinks about as much at level 1 as
         * at the default, for a fraction of the CPU */
        if (ld_http_accepts_gzip(ld_req_header(req, "Accept-Encoding")) &&
            ld_http_gzip(p, len, Z_BEST_SPEED, &gz, &gz_len) == LD_OK && gz) {
            free(p);
            ld_req_header_add(req, "Content-Encoding", "gzip");
            ld_req_reply(req, status, "application/json", gz, gz_len);
            return;
        }
    }
    ld_req_reply(req, status, "application/json", p, len);
}

void ld_http_error_body(ld_buf_t *b, const char *code, const char *msg, const char *rid)
{
    ld_buf_puts(b, "{\"error\":{\"code\":");
    ld_buf_json_str(b, code);
    ld_buf_puts(b, ",\"message\":");
    ld_buf_json_str(b, msg);
    ld_buf_puts(b, ",\"request_id\":");
    ld_buf_json_str(b, rid);
    ld_buf_puts(b, "}}\n");
}

void ld_req_error(ld_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ld_buf_t b = {0};
    if (req->route && (req->route->r.flags & LD_ROUTE_ERROR_STRING)) {
        if (status == 422) /* that protocol answers every bad request 400 */
            status = 400;
        ld_buf_puts(&b, "{\"error\":");
        ld_buf_json_str(&b, msg);
        ld_buf_puts(&b, ",\"request_id\":");
        ld_buf_json_str(&b, req->rid);
        ld_buf_puts(&b, "}\n");
    } else {
        ld_http_error_body(&b, code, msg, req->rid);
    }
    size_t len;
    char *p = ld_buf_steal(&b, &len);
    if (!p) { /* out of memory: a fixed body still carries the status */
        char oom[256]; /* the id is visible ASCII: JSON needs no escapes but " and \ */
        int k = snprintf(oom, sizeof oom,
                         "{\"error\":{\"code\":\"overloaded\",\"message\":\"out of memory\","
                         "\"request_id\":\"%s\"}}\n",
                         strpbrk(req->rid, "\"\\") ? "-" : req->rid);
        ld_req_reply_copy(req, status, "application/json", oom, (size_t)k);
        return;
    }
    if (status >= 500 || status == 413)
        ld_log_debug("error %d %s: %s", status, code, msg);
    ld_req_reply(req, status, "application/json", p, len);
}

void ld_req_reply_mhd(ld_req_t *req, int status, struct MHD_Response *resp, long long bytes)
{
    req->streaming = 1;
    add_common_headers(req, resp);
    req->replied = 1;
    req->status = status;
    req->bytes = bytes < 0 ? 0 : bytes;
    if (MHD_queue_response(req->conn, (unsigned)status, resp) != MHD_YES)
        req->status = 0;
}

long long *ld_req_bytes_sent(ld_req_t *req) { return &req->bytes; }

/* -------------------------------------------------------------- accessors */

const char *ld_req_method(const ld_req_t *req) { return req->method; }
const char *ld_req_path(const ld_req_t *req) { return req->path; }
const cJSON *ld_req_json(const ld_req_t *req) { return req->json; }
size_t ld_req_json_len(const ld_req_t *req) { return req->json_len; }
ld_http_t *ld_req_server(const ld_req_t *req) { return req->h; }
ld_body_sink_t *ld_req_sink(const ld_req_t *req) { return req->sink; }
struct MHD_Connection *ld_req_connection(const ld_req_t *req) { return req->conn; }

const uint8_t *ld_req_body(const ld_req_t *req, size_t *len)
{
    *len = req->body_len;
    return req->body;
}

const char *ld_req_param(const ld_req_t *req, const char *name)
{
    for (int i = 0; i < req->n_params; i++)
        if (strcmp(req->param_name[i], name) == 0)
            return req->param_val[i];
    return NULL;
}

const char *ld_req_query(const ld_req_t *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *ld_req_header(const ld_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct query_iter {
    int (*fn)(void *, const char *, const char *);
    void *ctx;
};

static enum MHD_Result query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    struct query_iter *it = cls;
    return it->fn(it->ctx, key, value) ? MHD_NO : MHD_YES;
}

void ld_req_query_each(const ld_req_t *req, int (*fn)(void *ctx, const char *k, const char *v),
                       void *ctx)
{
    struct query_iter it = {fn, ctx};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_cb, &it);
}

/* ------------------------------------------------------------ the pipeline */

/* 0 when the request may proceed; otherwise an error has been queued. */
static int check_auth(ld_req_t *req)
{
    ld_http_t *h = req->h;
    ld_auth_t auth = req->route->r.auth;
    if (auth == LD_AUTH_NONE || (auth == LD_AUTH_INFERENCE && !h->has_token))
        return 0;
    if (auth == LD_AUTH_ADMIN && !h->has_admin) {
        ld_req_error(req, 403, "forbidden",
                     "model management is disabled: no admin_token_file is configured");
        return -1;
    }
    const char *hdr = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization");
    const char *tok = NULL;
    if (hdr && strncasecmp(hdr, "Bearer", 6) == 0 && (hdr[6] == ' ' || hdr[6] == '\t')) {
        tok = hdr + 7;
        while (*tok == ' ' || *tok == '\t')
            tok++;
        if (!*tok || strlen(tok) > MAX_TOKEN_LEN)
            tok = NULL;
    }
    if (!tok) {
        ld_req_header_add(req, "WWW-Authenticate", "Bearer realm=\"latentd\"");
        ld_req_error(req, 401, "unauthorized",
                     hdr ? "the Authorization header must be 'Bearer <token>'"
                         : "this route needs an Authorization: Bearer <token> header");
        return -1;
    }
    uint8_t d[LD_SHA256_LEN];
    ld_sha256(tok, strlen(tok), d);
    int is_admin = h->has_admin && digest_equal(d, h->admin_sha);
    int is_user = h->has_token && digest_equal(d, h->token_sha);
    if (is_admin || (auth == LD_AUTH_INFERENCE && is_user))
        return 0;
    if (auth == LD_AUTH_ADMIN && is_user) {
        ld_req_error(req, 403, "forbidden", "this route needs the admin token");
        return -1;
    }
    ld_req_header_add(req, "WWW-Authenticate",
                      "Bearer realm=\"latentd\", error=\"invalid_token\"");
    ld_req_error(req, 401, "unauthorized", "the bearer token is not valid");
    return -1;
}

/* Whether Content-Type ct is the media type want (parameters ignored). */
static int is_type(const char *ct, const char *want)
{
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return 0;
    char c = ct[n];
    return c == '\0' || c == ';' || c == ' ' || c == '\t';
}

static void preflight(ld_req_t *req, const char *allow)
{
    ld_req_header_add(req, "Allow", allow);
    const char *origin = req_origin_allowed(req);
    if (origin &&
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Access-Control-Request-Method")) {
        ld_req_header_add(req, "Access-Control-Allow-Methods", allow);
        ld_req_header_add(req, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id");
        ld_req_header_add(req, "Access-Control-Max-Age", "600");
    }
    ld_req_reply(req, 204, NULL, NULL, 0);
}

static void on_headers_checks(ld_req_t *req, const char *cl, const char *te);

struct cl_scan {
    const char *first;
    int differ;
};

static enum MHD_Result cl_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct cl_scan *sc = cls;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (!sc->first)
            sc->first = value;
        else if (strcmp(sc->first, value) != 0)
            sc->differ = 1;
    }
    return MHD_YES;
}

/* Heads libmicrohttpd lets through that HTTP/1.1 (RFC 9112) refuses: 400
 * and close (the body's length is in doubt).  1 if refused. */
static int head_malformed(ld_req_t *req, const char *cl)
{
    const char *why = NULL;
    struct cl_scan sc = {NULL, 0};
    if (cl)
        MHD_get_connection_values(req->conn, MHD_HEADER_KIND, cl_cb, &sc);
    if (sc.differ)
        why = LD_MSG_CL_DIFFER;
    else if (req->http11 && !MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Host"))
        why = LD_MSG_NO_HOST;
    if (!why)
        return 0;
    req->close_conn = 1;
    ld_req_error(req, 400, "bad_request", "%s", why);
    return 1;
}

/* First call: everything that can be decided from the headers. */
static void on_headers(ld_req_t *req)
{
    /* MHD closes the connection after a response queued before the request
     * is complete.  Without a body the request completes at once, so errors
     * wait for that and the connection stays open; with a body they go out
     * now, before any of it is read. */
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    req->defer = !cl && !te;
    if (cl && strcmp(cl, "0") == 0 && !te)
        req->defer = 1;
    ld_http_conn_head_done(req->h, req->sock, !req->defer);
    if (head_malformed(req, cl))
        return;
    on_headers_checks(req, cl, te);
    req->defer = 0;
}

static void on_headers_checks(ld_req_t *req, const char *cl, const char *te)
{
    ld_http_t *h = req->h;
    if (atomic_load_explicit(&h->draining, memory_order_relaxed)) {
        req->close_conn = 1;
        ld_req_header_add(req, "Retry-After", "1");
        ld_req_error(req, 503, "shutting_down", "the server is shutting down");
        return;
    }
    char copy[2048];
    char *seg[MAX_SEGS];
    int ns = split_path(req->path, copy, sizeof copy, seg);
    const route_t *rt = NULL;
    char allow[256] = "";
    if (ns >= 0) {
        for (int i = 0; i < h->n_routes && !rt; i++)
            if (route_matches(&h->routes[i], seg, ns) && method_matches(&h->routes[i], req->method))
                rt = &h->routes[i];
        if (!rt)
            allow_list(h, seg, ns, allow, sizeof allow);
    }
    if (!rt) {
        if (allow[0]) {
            /* the path exists: preflight, or a wrong method */
            for (int i = 0; i < h->n_routes; i++)
                if (route_matches(&h->routes[i], seg, ns)) {
                    req->metric = h->routes[i].metric;
                    break;
                }
            if (strcmp(req->method, "OPTIONS") == 0) {
                preflight(req, allow);
                return;
            }
            ld_req_header_add(req, "Allow", allow);
            ld_req_error(req, 405, "method_not_allowed", "%s is not allowed on %s (allowed: %s)",
                         req->method, req->path, allow);
            return;
        }
        ld_req_error(req, 404, "not_found", "no route for %s %s", req->method, req->path);
        return;
    }
    req->route = rt;
    req->metric = rt->metric;
    for (int i = 0; i < rt->nseg; i++) {
        if (!rt->is_param[i])
            continue;
        req->param_name[req->n_params] = rt->seg[i];
        req->param_val[req->n_params] = strdup(seg[i]);
        if (!req->param_val[req->n_params]) {
            ld_req_error(req, 503, "overloaded", "out of memory");
            return;
        }
        req->n_params++;
    }
    if (check_auth(req) != 0)
        return;

    unsigned long long clen = 0;
    if (cl) {
        char *end;
        errno = 0;
        clen = strtoull(cl, &end, 10);
        if (errno || end == cl || *end) {
            ld_req_error(req, 400, "bad_request", "Content-Length '%.40s' is not a number", cl);
            return;
        }
    }
    int has_body = clen > 0 || (te && !cl);
    const ld_stream_t *st = &rt->stream;
    if (st->open &&
        is_type(MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Type"),
                st->content_type)) {
        if (clen > st->max_body) {
            req->close_conn = 1;
            ld_req_error(req, 413, "payload_too_large",
                         "the body is %llu bytes; the limit (%s) is %zu", clen, st->limit_name,
                         st->max_body);
            return;
        }
        req->sink = st->open(req, rt->r.ctx, cl ? (long long)clen : -1);
        req->sink_expect = cl ? clen : 0;
        if (!req->sink && !req->replied) {
            ld_log_error("bug: the stream of %s %s neither opened nor answered", req->method,
                         rt->pattern);
            ld_req_error(req, 500, "internal", "the body could not be received");
        }
        return;
    }
    if (clen > h->max_body) {
        req->close_conn = 1;
        ld_req_error(req, 413, "payload_too_large",
                     "the body is %llu bytes; the limit (max_body_bytes) is %zu", clen,
                     h->max_body);
        return;
    }
    unsigned flags = rt->r.flags;
    req->want_body = (flags & (LD_ROUTE_JSON | LD_ROUTE_JSON_OPTIONAL)) != 0;
    if (req->want_body && has_body) {
        const char *ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Content-Type");
        /* a binary-extension body may have any type, and that protocol's
         * clients send JSON with none */
        int any = (flags & LD_ROUTE_JSON_PREFIX) &&
                  (!ct || MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, LD_HTTP_JSON_LEN));
        req->raw_body = (flags & LD_ROUTE_NPY) && is_type(ct, "application/x-npy");
        if (!any && !req->raw_body && !is_type(ct, "application/json")) {
            req->close_conn = 1;
            ld_req_error(req, 415, "unsupported_media_type",
                         "Content-Type must be %s%s%s (got %.80s)",
                         flags & LD_ROUTE_NPY ? "application/json or application/x-npy"
                                              : "application/json",
                         st->open ? " or " : "", st->open ? st->content_type : "",
                         ct ? ct : "none");
            return;
        }
    }
    if (req->want_body && clen > 0) {
        if (charge(h, req, (long long)clen) != 0) {
            req->close_conn = 1;
            ld_req_header_add(req, "Retry-After", "1");
            ld_req_error(req, 503, "overloaded",
                         "too many request bodies in memory at once; retry shortly");
            return;
        }
        req->body = malloc(clen + 1);
        if (!req->body) {
            req->close_conn = 1;
            ld_req_error(req, 503, "overloaded", "out of memory");
            return;
        }
        req->body_cap = clen;
    }
}

/* A chunk of the body. */
static void on_data(ld_req_t *req, const char *data, size_t n)
{
    ld_http_t *h = req->h;
    if (req->replied) {
        /* an error is pending: discard the rest, but not forever */
        req->discarded += n;
        return;
    }
    if (req->sink) {
        const ld_stream_t *st = &req->route->stream;
        if (n > st->max_body - req->body_len) {
            req->close_conn = 1;
            ld_req_error(req, 413, "payload_too_large",
                         "the body exceeds the limit (%s) of %zu bytes", st->limit_name,
                         st->max_body);
            return;
        }
        req->body_len += n;
        req->sink->write(req->sink, req, data, n); /* answers itself on failure */
        if (req->body_len < req->sink_expect)
            ld_http_conn_body_eof(req->sock);
        return;
    }
    if (n > h->max_body - req->body_len) {
        req->close_conn = 1;
        ld_req_error(req, 413, "payload_too_large",
                     "the body exceeds the limit (max_body_bytes) of %zu bytes", h->max_body);
        return;
    }
    if (!req->want_body) {
        req->body_len += n; /* counted against the cap, not kept */
        return;
    }
    if (req->body_len + n > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + n)
            cap *= 2;
        if (cap > h->max_body)
            cap = h->max_body;
        if (charge(h, req, (long long)(cap - req->body_cap)) != 0) {
            req->close_conn = 1;
            ld_req_header_add(req, "Retry-After", "1");
            ld_req_error(req, 503, "overloaded",
                         "too many request bodies in memory at once; retry shortly");
            return;
        }
        uint8_t *p = realloc(req->body, cap + 1);
        if (!p) {
            req->close_conn = 1;
            ld_req_error(req, 503, "overloaded", "out of memory");
            return;
        }
        req->body = p;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, n);
    req->body_len += n;
}

/* Parse the request's JSON (its first jlen > 0 bytes) into req->json: 0,
 * or -1 after answering. */
static int parse_json(ld_req_t *req, size_t jlen)
{
    ld_http_t *h = req->h;
    /* a parse tree is at most one cJSON node per value plus copies of its
     * strings, each rounded up to 16 bytes: charge that before building it
     * so hostile bodies cannot multiply memory, and make it the arena's one
     * block */
    size_t nodes = 1;
    for (size_t i = 0; i < jlen; i++) {
        uint8_t c = req->body[i];
        nodes += c == ',' || c == '[' || c == '{' || c == ':';
    }
    long long cost = (long long)(nodes * (sizeof(cJSON) + 16) + jlen);
    if (charge(h, req, cost) != 0) {
        if (cost + req->charged > (long long)h->body_memory_limit) {
            ld_req_error(req, 413, "payload_too_large",
                         "the JSON body has too many values (about %zu)", nodes);
        } else {
            ld_req_header_add(req, "Retry-After", "1");
            ld_req_error(req, 503, "overloaded",
                         "too many request bodies in memory at once; retry shortly");
        }
        return -1;
    }
    const char *end = NULL;
    ld_arena_init(&req->arena, (size_t)cost);
    req->json = ld_arena_parse_json(&req->arena, (const char *)req->body, jlen, &end);
    if (!req->json) {
        /* on failure cJSON points end at the error (cJSON_GetErrorPtr
         * would read a global that other threads overwrite) */
        const char *at = end;
        size_t off = at && at >= (const char *)req->body && at <= (const char *)req->body + jlen
                         ? (size_t)(at - (const char *)req->body)
                         : jlen;
        ld_req_error(req, 400, "invalid_json", "the body is not valid JSON (at byte %zu)", off);
        return -1;
    }
    const char *stop = (const char *)req->body + jlen;
    while (end && end < stop && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    if (end != stop) {
        ld_req_error(req, 400, "invalid_json", "unexpected data after the JSON value (at byte %zu)",
                     (size_t)(end - (const char *)req->body));
        return -1;
    }
    if (!cJSON_IsObject(req->json)) {
        ld_req_error(req, 400, "invalid_json", "the body must be a JSON object");
        return -1;
    }
    return 0;
}

int ld_req_parse_json(ld_req_t *req)
{
    return req->json || req->json_len == 0 ? 0 : parse_json(req, req->json_len);
}

/* The body is complete: parse and dispatch. */
static void on_complete(ld_req_t *req)
{
    unsigned flags = req->route->r.flags;
    if (req->want_body && !req->raw_body) {
        /* the JSON: the whole body, or its first jlen bytes */
        size_t jlen = req->body_len;
        const char *jl = LD_HTTP_JSON_LEN;
        const char *jv = flags & LD_ROUTE_JSON_PREFIX ? ld_req_header(req, jl) : NULL;
        if (jv) {
            char *e;
            errno = 0;
            unsigned long long v = strtoull(jv, &e, 10);
            if (errno || e == jv || *e || *jv == '-' || v > req->body_len) {
                ld_req_error(req, 400, "bad_request",
                             "%s '%.40s' is not a length within the %zu-byte body", jl, jv,
                             req->body_len);
                return;
            }
            jlen = (size_t)v;
        }
        if (jlen == 0) {
            if (flags & LD_ROUTE_JSON) {
                ld_req_error(req, 400, "bad_request",
                             "the request body is empty; expected a JSON object");
                return;
            }
        } else {
            req->body[req->body_len] = '\0';
            req->json_len = jlen;
            /* a lazy route parses when its handler asks (ld_req_parse_json) */
            if (!(flags & LD_ROUTE_JSON_LAZY) && parse_json(req, jlen) != 0)
                return;
        }
    }
    if (req->sink)
        req->route->stream.fn(req, req->route->r.ctx);
    else
        req->route->r.fn(req, req->route->r.ctx);
    if (!req->replied && !req->cont) {
        ld_log_error("bug: handler for %s %s did not reply", req->method, req->route->pattern);
        ld_req_error(req, 500, "internal", "the handler did not produce a response");
    }
}

enum MHD_Result ld_http_access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    ld_http_t *h = cls;
    ld_req_t *req = *con_cls;
    if (!req) {
        ld_conn_t *sock = ld_http_conn_of(conn);
        if (sock && sock->rejected)
            return MHD_NO; /* answered already (ld_http_conn_reject) */
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        req->h = h;
        req->conn = conn;
        req->sock = sock;
        req->http11 = strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
        pthread_mutex_init(&req->wait_mu, NULL);
        req->t0 = ld_now();
        req->metric = h->metric_unmatched;
        size_t ml = strnlen(method, sizeof req->method - 1);
        memcpy(req->method, method, ml);
        req->method[ml] = '\0';
        req->path = strdup(url);
        request_id_init(req);
        *con_cls = req;
        atomic_fetch_add_explicit(&h->in_flight, 1, memory_order_relaxed);
        if (!req->path)
            return MHD_NO;
        on_headers(req);
        return MHD_YES;
    }
    if (*upload_data_size) {
        on_data(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        /* MHD cannot answer before the upload ends; a client that keeps
         * sending long after its error was decided is cut off */
        return req->discarded > h->max_body ? MHD_NO : MHD_YES;
    }
    ld_http_conn_head_done(h, req->sock, 0); /* the body is in */
    if (req->pending) {
        struct MHD_Response *r = req->pending;
        req->pending = NULL;
        enum MHD_Result ok = MHD_queue_response(conn, (unsigned)req->pending_status, r);
        MHD_destroy_response(r);
        return ok;
    }
    if (req->cont) {
        /* resumed after ld_req_await: the handler's continuation replies */
        ld_req_cont_fn fn = req->cont;
        req->cont = NULL;
        fn(req, req->cont_ctx);
        if (!req->replied) {
            ld_log_error("bug: continuation for %s %s did not reply", req->method,
                         req->route->pattern);
            ld_req_error(req, 500, "internal", "the handler did not produce a response");
        }
    } else if (!req->replied) {
        on_complete(req);
        if (req->cont)
            return MHD_YES; /* suspended: called again once resumed */
    }
    /* replied with status 0: no response could be built; close the connection
     * rather than leave the client waiting for the timeout */
    return req->status ? MHD_YES : MHD_NO;
}

void ld_req_await(ld_req_t *req, ld_req_cont_fn fn, void *ctx)
{
    ld_http_t *h = req->h;
    pthread_mutex_lock(&req->wait_mu);
    if (!req->woken) {
        /* counted before stopping is read, and stop_daemons sets stopping
         * before it reads the count (both sequentially consistent): either
         * it waits for this connection's resume, or we see it stopping */
        atomic_fetch_add(&h->awaiting, 1);
        if (!atomic_load(&h->stopping)) {
            req->cont = fn;
            req->cont_ctx = ctx;
            req->suspended = 1;
            MHD_suspend_connection(req->conn);
            pthread_mutex_unlock(&req->wait_mu);
            return;
        }
        atomic_fetch_sub(&h->awaiting, 1);
        /* the daemons are stopping and must not meet a suspended
         * connection: wait here (a decode takes milliseconds) */
        while (!req->woken) {
            pthread_mutex_unlock(&req->wait_mu);
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&req->wait_mu);
        }
    }
    pthread_mutex_unlock(&req->wait_mu);
    fn(req, ctx);
}

void ld_req_wake(ld_req_t *req)
{
    pthread_mutex_lock(&req->wait_mu);
    req->woken = 1;
    int was_suspended = req->suspended;
    req->suspended = 0;
    struct MHD_Connection *conn = req->conn;
    ld_http_t *h = req->h;
    pthread_mutex_unlock(&req->wait_mu);
    /* req is not touched after this: once resumed, its HTTP thread may
     * finish and free it at any moment (a suspended request cannot end, so
     * it is still alive until the resume) */
    if (was_suspended) {
        MHD_resume_connection(conn);
        atomic_fetch_sub(&h->awaiting, 1);
    }
}

/* a.b.c.d into out (at least 16 bytes), as inet_ntop writes it (which goes
 * through sprintf: a visible cost at tens of thousands of lines a second) */
static void fmt_ipv4(char *out, const struct in_addr *a)
{
    const uint8_t *q = (const uint8_t *)&a->s_addr; /* network order */
    int k = 0;
    for (int i = 0; i < 4; i++) {
        if (i)
            out[k++] = '.';
        k += ld_fmt_u64(out + k, q[i]);
    }
    out[k] = '\0';
}

void ld_http_completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    ld_http_t *h = cls;
    ld_req_t *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    ld_http_conn_request_done(h, req->sock, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    double secs = ld_now() - req->t0;
    int status = req->replied ? req->status : 0;
    if (status > 0 && h->metrics)
        ld_metrics_observe(h->metrics, req->metric, status, secs,
                           req->bytes > 0 ? (uint64_t)req->bytes : 0);
    if (h->access_log && ld_log_enabled(LD_LOG_INFO)) {
        char peer[INET6_ADDRSTRLEN] = "-";
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (ci && ci->client_addr) {
            const struct sockaddr *sa = ci->client_addr;
            if (sa->sa_family == AF_INET)
                fmt_ipv4(peer, &((const struct sockaddr_in *)(const void *)sa)->sin_addr);
            else if (sa->sa_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                          peer, sizeof peer);
        }
        static const char *const why[] = {" end=ok", " end=error", " end=timeout",
                                          " end=shutdown", " end=read_error",
                                          " end=client_abort"};
        const char *end = "";
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            end = (unsigned)toe < LD_ARRAY_LEN(why) ? why[toe] : " end=?";
        ld_log_access(req->method, req->path ? req->path : "-", status,
                      req->bytes > 0 ? req->bytes : 0, (long long)(secs * 1e6 + 0.5), peer, req->rid, end);
    }
    if (req->pending)
        MHD_destroy_response(req->pending);
    if (req->sink)
        req->sink->close(req->sink);
    if (req->cont) /* resumed, but the client had gone: the continuation only frees */
        req->cont(NULL, req->cont_ctx);
    uncharge(h, req);
    ld_arena_free(&req->arena); /* req->json */
    free(req->body);
    free(req->path);
    for (int i = 0; i < req->n_params; i++)
        free(req->param_val[i]);
    if (!req->streaming)
        atomic_fetch_add_explicit(&h->busy_ns, (long long)(secs * 1e9), memory_order_relaxed);
    pthread_mutex_destroy(&req->wait_mu);
    free(req);
    if (atomic_fetch_sub_explicit(&h->in_flight, 1, memory_order_acq_rel) == 1 &&
        atomic_load_explicit(&h->draining, memory_order_relaxed)) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
    }
}


double ld_http_busy_seconds(const ld_http_t *h)
{
    return 1e-9 * (double)atomic_load_explicit(&h->busy_ns, memory_order_relaxed);
}

int ld_http_in_flight(const ld_http_t *h)
{
    return (int)atomic_load_explicit(&h->in_flight, memory_order_relaxed);
}

void ld_http_free(ld_http_t *h)
{
    if (!h)
        return;
    ld_http_conn_stop(h);
    for (int i = 0; i < h->n_routes; i++) {
        free(h->routes[i].method);
        free(h->routes[i].pattern);
        free(h->routes[i].segbuf);
    }
    for (int i = 0; i < h->n_origins; i++)
        free(h->origins[i]);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->ip_mu);
    pthread_mutex_destroy(&h->conn_mu);
    pthread_cond_destroy(&h->cv);
    free(h->bind);
    free(h);
}


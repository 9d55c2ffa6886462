/* fake_http.c — just enough of the HTTP layer (include/latentd/http.h) for
 * the request body targets to run api.c's real handlers without sockets or
 * libmicrohttpd: a route table filled by ld_api_register, a request holding
 * the parsed body and the {name} parameter, replies that keep the status
 * and drop the body.  A handler that hands its work to the batcher
 * (ld_req_await) is continued here once the pass wakes the request, as
 * http.c would on the request's own thread.  Linked instead of http.o. */
#define _GNU_SOURCE
#include "fuzz.h"

#include "latentd/api.h"
#include "latentd/http.h"
#include "latentd/model.h"
#include "latentd/v2.h"
#include "../tu_tiny.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct ld_req {
    cJSON *json;
    const uint8_t *body;    /* the whole body, as http.c keeps it */
    size_t body_len;
    size_t jlen;            /* its JSON's bytes (0: none) */
    const char *json_len;   /* the Inference-Header-Content-Length header, or NULL */
    const char *name;
    int status;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int woken;
};

#define MAX_ROUTES 64
static ld_route_t routes[MAX_ROUTES];
static int n_routes;

int ld_http_route_add(ld_http_t *h, const ld_route_t *route, ld_err_t *err)
{
    (void)h;
    if (n_routes == MAX_ROUTES)
        return ld_err_set(err, LD_ENOMEM, "route table full");
    routes[n_routes++] = *route;
    return LD_OK;
}

int ld_http_route_stream(ld_http_t *h, const char *method, const char *pattern,
                         const ld_stream_t *st, ld_err_t *err)
{
    (void)h, (void)method, (void)pattern, (void)st, (void)err;
    return LD_OK; /* the targets post JSON only */
}
ld_body_sink_t *ld_req_sink(const ld_req_t *req) { (void)req; return NULL; }

int ld_http_in_flight(const ld_http_t *h) { (void)h; return 1; }
int ld_http_is_ready(const ld_http_t *h) { (void)h; return 1; }
int ld_http_is_draining(const ld_http_t *h) { (void)h; return 0; }
ld_http_t *ld_req_server(const ld_req_t *req) { (void)req; return NULL; }

const char *ld_req_param(const ld_req_t *req, const char *name)
{
    return strcmp(name, "name") == 0 ? req->name : NULL;
}
const char *ld_req_query(const ld_req_t *req, const char *key) { (void)req; (void)key; return NULL; }
void ld_req_query_each(const ld_req_t *req, int (*fn)(void *, const char *, const char *), void *ctx)
{
    (void)req;
    (void)fn;
    (void)ctx;
}
const cJSON *ld_req_json(const ld_req_t *req) { return req->json; }
size_t ld_req_json_len(const ld_req_t *req) { return req->jlen; }
const uint8_t *ld_req_body(const ld_req_t *req, size_t *len)
{
    *len = req->body_len;
    return req->body;
}
/* the only header a handler reads is the /v2 binary extension's */
const char *ld_req_header(const ld_req_t *req, const char *name)
{
    return strcasecmp(name, LD_HTTP_JSON_LEN) == 0 ? req->json_len : NULL;
}
int ld_req_header_add(ld_req_t *req, const char *name, const char *value)
{
    (void)req;
    LD_ASSERT(name && value);
    return 0;
}

static void set_status(ld_req_t *req, int status)
{
    LD_ASSERT(req->status == 0);
    LD_ASSERT(status >= 200 && status <= 599);
    req->status = status;
}

void ld_req_reply(ld_req_t *req, int status, const char *content_type, void *body, size_t len)
{
    (void)content_type;
    (void)len;
    set_status(req, status);
    free(body);
}
void ld_req_reply_copy(ld_req_t *req, int status, const char *content_type, const void *body,
                       size_t len)
{
    (void)content_type;
    (void)body;
    (void)len;
    set_status(req, status);
}
void ld_req_reply_fd(ld_req_t *req, int status, const char *content_type, int fd, uint64_t size)
{
    (void)content_type;
    (void)size;
    close(fd);
    set_status(req, status);
}
void ld_req_reply_json(ld_req_t *req, int status, ld_buf_t *b)
{
    set_status(req, ld_buf_failed(b) ? 503 : status);
    ld_buf_free(b);
}
void ld_req_error(ld_req_t *req, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    LD_ASSERT(code && *code && msg[0]);
    set_status(req, status);
}

void ld_req_wake(ld_req_t *req)
{
    pthread_mutex_lock(&req->mu);
    req->woken = 1;
    pthread_cond_signal(&req->cv);
    pthread_mutex_unlock(&req->mu);
}

void ld_req_await(ld_req_t *req, ld_req_cont_fn fn, void *ctx)
{
    pthread_mutex_lock(&req->mu);
    while (!req->woken)
        pthread_cond_wait(&req->cv, &req->mu);
    pthread_mutex_unlock(&req->mu);
    fn(req, ctx);
}

/* ---- the served models and the API ---- */

static ld_registry_t *reg;
static ld_api_t *api;
static ld_api_opts_t opts; /* borrowed by the /v2 routes */

static void save_tiny(const char *dir, const char *name, ld_kind_t kind)
{
    ld_model_t *m = tu_tiny_model(kind);
    ld_err_t e;
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    LD_ASSERT(ld_model_save(m, path, &e) == LD_OK);
    ld_model_free(m);
}

ld_api_t *fz_api(void)
{
    if (api)
        return api;
    char dir[] = "/tmp/latentd-fuzz-XXXXXX";
    LD_ASSERT(mkdtemp(dir));
    save_tiny(dir, "vae", LD_KIND_VAE);
    save_tiny(dir, "gan", LD_KIND_GAN);
    ld_err_t e;
    LD_ASSERT(ld_registry_new(dir, &reg, &e) == LD_OK);
    int loaded = 0;
    LD_ASSERT(ld_registry_scan(reg, &loaded, NULL, NULL, &e) == LD_OK && loaded == 2);
    /* the models are in memory now; the folder is not needed again */
    char path[600];
    snprintf(path, sizeof path, "%s/vae.safetensors", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/gan.safetensors", dir);
    unlink(path);
    rmdir(dir);
    opts = (ld_api_opts_t){.registry = reg, .metrics = NULL, .max_samples = 4};
    LD_ASSERT(ld_api_new(&opts, &api, &e) == LD_OK);
    LD_ASSERT(ld_api_register(api, NULL, &e) == LD_OK);
    LD_ASSERT(ld_v2_register(NULL, &opts, &e) == LD_OK);
    return api;
}

/* The POST route whose pattern ends in suffix (the first one). */
static const ld_route_t *route_of(const char *suffix)
{
    size_t sl = strlen(suffix);
    for (int i = 0; i < n_routes; i++) {
        size_t pl = strlen(routes[i].pattern);
        if (!strcmp(routes[i].method, "POST") && pl >= sl &&
            !strcmp(routes[i].pattern + pl - sl, suffix))
            return &routes[i];
    }
    LD_ASSERT(0 && "no such route");
    return NULL;
}

/* What http.c accepts: one JSON object, only blanks after it. */
static cJSON *parse(const uint8_t *body, size_t jlen)
{
    const char *end = NULL;
    cJSON *json = cJSON_ParseWithLengthOpts((const char *)body, jlen, &end, 0);
    int ok = cJSON_IsObject(json);
    for (const char *p = end; ok && p < (const char *)body + jlen; p++)
        ok = *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n';
    if (!ok) {
        cJSON_Delete(json);
        return NULL;
    }
    return json;
}

/* Exactly one reply per request: a second is a handler bug. */
static void set_status(ld_req_t *req, int status);

int ld_req_parse_json(ld_req_t *req)
{
    if (req->json || req->jlen == 0)
        return 0;
    if (!(req->json = parse(req->body, req->jlen))) {
        set_status(req, 400);
        return -1;
    }
    return 0;
}

/* Run route r for model name on body[0..size): the JSON is its first jlen
 * bytes (none when jlen is 0 and raw is set: an .npy body); json_len the
 * header that announced jlen, or NULL. */
static int run(const ld_route_t *r, const char *name, const uint8_t *body, size_t size,
               size_t jlen, int raw, const char *json_len)
{
    /* nothing at all on a route where the body is optional; a lazy route
     * parses when its handler asks */
    cJSON *json = NULL;
    if (raw)
        jlen = 0;
    else if (jlen == 0 && !(r->flags & LD_ROUTE_JSON_OPTIONAL))
        return 400;
    else if (jlen > 0 && !(r->flags & LD_ROUTE_JSON_LAZY) && !(json = parse(body, jlen)))
        return 400;
    ld_req_t req = {.json = json, .name = name, .json_len = json_len, .body = body,
                    .body_len = size, .jlen = jlen};
    pthread_mutex_init(&req.mu, NULL);
    pthread_cond_init(&req.cv, NULL);
    r->fn(&req, r->ctx);
    LD_ASSERT(req.status != 0); /* every handler answers */
    pthread_cond_destroy(&req.cv);
    pthread_mutex_destroy(&req.mu);
    cJSON_Delete(req.json);
    return req.status;
}

int fz_post(const char *suffix, const char *name, const uint8_t *data, size_t size)
{
    fz_api();
    return run(route_of(suffix), name, data, size, size, 0, NULL);
}

int fz_post_npy(const char *suffix, const char *name, const uint8_t *data, size_t size)
{
    fz_api();
    const ld_route_t *r = route_of(suffix);
    LD_ASSERT(r->flags & LD_ROUTE_NPY);
    if (size == 0) /* http.c: an empty body is a missing JSON body */
        return run(r, name, data, 0, 0, 0, NULL);
    return run(r, name, data, size, 0, 1, NULL);
}

int fz_post_v2(const char *name, const uint8_t *data, size_t size, long json_len)
{
    fz_api();
    const ld_route_t *r = route_of("/{name}/infer");
    if (json_len < 0)
        return run(r, name, data, size, size, 0, NULL);
    if ((size_t)json_len > size) /* http.c: 400 before any handler */
        return 400;
    char hdr[24];
    snprintf(hdr, sizeof hdr, "%ld", json_len);
    return run(r, name, data, size, (size_t)json_len, 0, hdr);
}

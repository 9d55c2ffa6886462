/* jobs_api.c — HTTP handlers for training jobs and their event streams. See jobs_api.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/jobs_api.h"

#include "latentd/jsonarg.h"
#include "latentd/replica.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Status for an engine error code. */
static int http_status(int rc)
{
    switch (rc) {
    case LD_EFORMAT: return 400;
    case LD_EINVAL: return 422;
    case LD_ENOTFOUND: return 404;
    case LD_EBUSY: return 429;
    case LD_ENOMEM: return 503;
    default: return 500;
    }
}

static const char *error_code(int rc)
{
    switch (rc) {
    case LD_EFORMAT: return "bad_request";
    case LD_EINVAL: return "invalid_spec";
    case LD_ENOTFOUND: return "not_found";
    case LD_EBUSY: return "queue_full";
    case LD_ENOMEM: return "overloaded";
    default: return "internal";
    }
}

static void reply_err(ld_req_t *req, int rc, const ld_err_t *e)
{
    ld_req_error(req, http_status(rc), error_code(rc), "%s", e->msg);
}

/* Reply with a malloc'd JSON string (freed here), newline-terminated like
 * every other JSON body of the daemon. */
static void reply_json_str(ld_req_t *req, int status, char *json)
{
    ld_buf_t b;
    ld_buf_init(&b);
    ld_buf_puts(&b, json);
    free(json);
    ld_req_reply_json(req, status, &b);
}

/* A job of another replica (its id names it, replica.h): answer 307 to that
 * replica's URL, or 404 when it is not a configured peer, and return 1. */
static int elsewhere(ld_req_t *req, ld_jobs_t *jobs)
{
    const ld_replica_t *r = ld_jobs_replica(jobs);
    char owner[LD_REPLICA_NAME_MAX + 1];
    const char *id = ld_req_param(req, "id");
    if (!r || !ld_replica_job_owner(r, id, owner))
        return 0;
    const char *url = ld_replica_peer_url(r, owner);
    if (!url) {
        ld_req_error(req, 404, "not_found",
                     "job %s runs on replica %s, which is not among this replica's peers", id,
                     owner);
        return 1;
    }
    char loc[1024];
    snprintf(loc, sizeof loc, "%s%s", url, ld_req_path(req));
    if (ld_req_header_add(req, "Location", loc) != 0)
        ld_req_error(req, 503, "overloaded", "out of memory");
    else
        ld_req_error(req, 307, "elsewhere", "job %s runs on replica %s: %s", id, owner, loc);
    return 1;
}

static void h_submit(ld_req_t *req, void *ctx)
{
    ld_jobs_t *jobs = ctx;
    size_t len;
    const uint8_t *body = ld_req_body(req, &len);
    char id[LD_JOB_ID_MAX];
    int retry = 0;
    ld_err_t e;
    int rc = ld_jobs_submit(jobs, (const char *)body, len, id, &retry, &e);
    if (rc == LD_EBUSY && ld_http_is_draining(ld_req_server(req))) {
        /* the engine stopped because the daemon is stopping: not a full queue */
        ld_req_header_add(req, "Retry-After", "10");
        ld_req_error(req, 503, "shutting_down", "the server is shutting down");
        return;
    }
    if (rc) {
        if (rc == LD_EBUSY) {
            char ra[16];
            snprintf(ra, sizeof ra, "%d", retry > 0 ? retry : 1);
            ld_req_header_add(req, "Retry-After", ra);
        }
        reply_err(req, rc, &e);
        return;
    }
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/jobs/%s", id);
    ld_req_header_add(req, "Location", loc);
    ld_buf_t b;
    ld_buf_init(&b);
    ld_buf_printf(&b, "{\"id\":\"%s\",\"state\":\"queued\"}", id);
    ld_req_reply_json(req, 202, &b);
}

/* GET /v1/jobs[?state=S][&limit=N][&cursor=ID] */
static void h_list(ld_req_t *req, void *ctx)
{
    static const char *const fields[] = {"state", "limit", "cursor", NULL};
    ld_jobs_list_t q = {.state = -1};
    ld_args_t a = ld_args_query(req);
    long long limit;
    const char *state;
    if (ld_arg_fields(&a, fields) || ld_arg_int(&a, "limit", 1, 10000, 0, &limit) ||
        ld_arg_string(&a, "cursor", NULL, &q.cursor) || ld_arg_string(&a, "state", NULL, &state))
        return;
    q.limit = (int)limit;
    for (int s = 0; state && s < LD_JOB_N_STATES && q.state < 0; s++)
        if (strcmp(state, ld_job_state_name((ld_job_state_t)s)) == 0)
            q.state = s;
    if (state && q.state < 0) {
        ld_req_error(req, 422, "invalid_value",
                     "state: \"%.40s\" is not queued, running, succeeded, failed, cancelled or "
                     "interrupted",
                     state);
        return;
    }
    char *json;
    ld_err_t e;
    int rc = ld_jobs_list_json(ctx, &q, &json, &e);
    if (rc)
        reply_err(req, rc, &e);
    else
        reply_json_str(req, 200, json);
}

/* DELETE /v1/jobs/{id}/record: 200 {"id","removed":true} once a finished
 * job's record and checkpoint are gone; 409 while it is not finished. */
static void h_purge(ld_req_t *req, void *ctx)
{
    if (elsewhere(req, ctx))
        return;
    const char *id = ld_req_param(req, "id");
    ld_err_t e;
    int rc = ld_jobs_purge(ctx, id, &e);
    if (rc == LD_EUNSUPPORTED) {
        ld_req_error(req, 409, "conflict", "%s", e.msg);
        return;
    }
    if (rc) {
        reply_err(req, rc, &e);
        return;
    }
    ld_buf_t b;
    ld_buf_init(&b);
    ld_buf_puts(&b, "{\"id\":");
    ld_buf_json_str(&b, id);
    ld_buf_puts(&b, ",\"removed\":true}");
    ld_req_reply_json(req, 200, &b);
}

static void h_get(ld_req_t *req, void *ctx)
{
    if (elsewhere(req, ctx))
        return;
    char *json;
    ld_err_t e;
    int rc = ld_jobs_get_json(ctx, ld_req_param(req, "id"), &json, &e);
    if (rc)
        reply_err(req, rc, &e);
    else
        reply_json_str(req, 200, json);
}

/* An inversion job's result (inference token): 200 and the answer once it
 * succeeded, 202 {"id","state","progress"} + Retry-After while it waits or
 * runs, 409 when it failed or was cancelled, 404 for no such inversion job. */
static void h_result(ld_req_t *req, void *ctx)
{
    const char *id = ld_req_param(req, "id");
    ld_job_state_t st = LD_JOB_QUEUED;
    ld_job_info_t info;
    ld_err_t e = {{0}};
    char *json;
    size_t len;
    int rc = ld_jobs_invert_result(ctx, id, &st, &json, &len, &e);
    if (rc) {
        reply_err(req, rc, &e);
        return;
    }
    ld_buf_t b;
    ld_buf_init(&b);
    if (json) {
        ld_buf_append(&b, json, len);
        free(json);
        ld_req_reply_json(req, 200, &b);
    } else if (st == LD_JOB_FAILED || st == LD_JOB_CANCELLED) {
        ld_req_error(req, 409, st == LD_JOB_FAILED ? "job_failed" : "job_cancelled",
                     "inversion job %s %s%s%s", id, ld_job_state_name(st),
                     st == LD_JOB_FAILED ? ": " : "", st == LD_JOB_FAILED ? e.msg : "");
    } else {
        double progress = ld_jobs_info(ctx, id, &info, &e) == LD_OK ? info.progress : 0;
        ld_buf_puts(&b, "{\"id\":");
        ld_buf_json_str(&b, id);
        ld_buf_printf(&b, ",\"state\":\"%s\",\"progress\":%.3f}", ld_job_state_name(st),
                      progress);
        ld_req_header_add(req, "Retry-After", "1");
        ld_req_reply_json(req, 202, &b);
    }
}

/* DELETE: 200 with the record once the job is cancelled (also when it already
 * was: cancelling is idempotent), 202 while a running job is still stopping,
 * 409 for a job that already succeeded or failed (nothing left to cancel). */
static void h_cancel(ld_req_t *req, void *ctx)
{
    if (elsewhere(req, ctx))
        return;
    const char *id = ld_req_param(req, "id");
    ld_job_state_t st;
    ld_err_t e;
    char *json;
    int rc = ld_jobs_cancel(ctx, id, &st, &e);
    if (!rc && (st == LD_JOB_SUCCEEDED || st == LD_JOB_FAILED)) {
        ld_req_error(req, 409, "conflict", "job %s has already %s; there is nothing to cancel",
                     id, ld_job_state_name(st));
        return;
    }
    if (!rc)
        rc = ld_jobs_get_json(ctx, id, &json, &e);
    if (rc) {
        reply_err(req, rc, &e);
        return;
    }
    reply_json_str(req, st == LD_JOB_RUNNING ? 202 : 200, json);
}

/* ---- Server-Sent Events ---- */

typedef struct {
    ld_jobs_t *jobs;
    char id[LD_JOB_ID_MAX];
    struct MHD_Connection *conn;
    ld_jobs_sub_t *sub;
    uint64_t seq;
    int warn_next;         /* warnings sent (ld_jobs_warning_json) */
    pthread_mutex_t lock;  /* guards pending, suspended */
    int pending;           /* the job changed since the reader last looked */
    int suspended;         /* the reader suspended the connection */
    char *out;             /* formatted events not yet sent (malloc'd) */
    size_t out_len, out_pos;
    int final_queued;      /* the last event is in out: end after it */
    long long *bytes_sent; /* the request's count (ld_req_bytes_sent) */
} stream_t;

static void stream_wake(void *user)
{
    stream_t *s = user;
    pthread_mutex_lock(&s->lock);
    s->pending = 1;
    if (s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Format the next event into s->out. 1 if there is one, 0 if none yet, -1 at
 * the end, -2 when the stream must be cut short (out of memory). */
static int stream_next(stream_t *s)
{
    if (s->final_queued)
        return -1;
    char *json = NULL;
    int final = 0;
    ld_buf_t b;
    ld_buf_init(&b);
    /* a new warning goes out first, as an event of its own */
    if (ld_jobs_warning_json(s->jobs, s->id, &s->warn_next, &json, NULL) != LD_OK)
        return -2;
    if (json)
        ld_buf_printf(&b, "event: warning\ndata: %s\n\n", json);
    else if (ld_jobs_event_json(s->jobs, s->id, &s->seq, &json, &final, NULL) != LD_OK)
        return -2;
    if (!json)
        return final ? -1 : 0;
    if (!b.len)
        ld_buf_printf(&b, "event: %s\nid: %llu\ndata: %s\n\n", final ? "end" : "progress",
                      (unsigned long long)s->seq, json);
    free(json);
    if (ld_buf_failed(&b)) {
        ld_buf_free(&b);
        return -2;
    }
    free(s->out);
    s->out = ld_buf_steal(&b, &s->out_len);
    s->out_pos = 0;
    s->final_queued = final;
    return 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_t *s = cls;
    (void)pos;
    for (;;) {
        if (s->out && s->out_pos < s->out_len) {
            size_t n = s->out_len - s->out_pos < max ? s->out_len - s->out_pos : max;
            memcpy(buf, s->out + s->out_pos, n);
            s->out_pos += n;
            if (s->bytes_sent)
                *s->bytes_sent += (long long)n;
            return (ssize_t)n;
        }
        /* clear pending before looking, so a change after the look wakes us */
        pthread_mutex_lock(&s->lock);
        s->pending = 0;
        pthread_mutex_unlock(&s->lock);
        int r = stream_next(s);
        if (r == -1)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (r < 0) /* the client sees a cut stream, not a clean end without "end" */
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (r > 0)
            continue;
        pthread_mutex_lock(&s->lock);
        if (!s->pending) {
            /* nothing new: park the connection until stream_wake */
            s->suspended = 1;
            MHD_suspend_connection(s->conn);
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
        pthread_mutex_unlock(&s->lock);
    }
}

static void stream_free(void *cls)
{
    stream_t *s = cls;
    ld_jobs_unsubscribe(s->jobs, s->sub); /* no wake runs after this returns */
    pthread_mutex_destroy(&s->lock);
    free(s->out);
    free(s);
}

static void h_events(ld_req_t *req, void *ctx)
{
    if (elsewhere(req, ctx))
        return;
    ld_jobs_t *jobs = ctx;
    const char *id = ld_req_param(req, "id");
    ld_err_t e;
    ld_job_info_t info;
    int rc = ld_jobs_info(jobs, id, &info, &e);
    if (rc) {
        reply_err(req, rc, &e);
        return;
    }
    stream_t *s = calloc(1, sizeof *s);
    if (!s) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return;
    }
    s->jobs = jobs;
    snprintf(s->id, sizeof s->id, "%s", id);
    /* a reconnecting client gets only what is newer than its last event */
    const char *last = ld_req_header(req, "Last-Event-ID");
    char *end = NULL;
    unsigned long long from = last ? strtoull(last, &end, 10) : 0;
    if (last && end != last && !*end && last[0] != '-')
        s->seq = from;
    s->conn = ld_req_connection(req);
    s->bytes_sent = ld_req_bytes_sent(req);
    pthread_mutex_init(&s->lock, NULL);
    if ((rc = ld_jobs_subscribe(jobs, id, stream_wake, s, &s->sub, &e))) {
        pthread_mutex_destroy(&s->lock);
        free(s);
        reply_err(req, rc, &e);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free);
    if (!resp) {
        stream_free(s);
        ld_req_error(req, 503, "overloaded", "out of memory");
        return;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    ld_req_reply_mhd(req, 200, resp, -1);
    MHD_destroy_response(resp);
}

int ld_jobs_api_register(ld_http_t *h, ld_jobs_t *jobs, ld_err_t *err)
{
    const ld_route_t routes[] = {
        {"POST", "/v1/jobs", LD_AUTH_ADMIN, LD_ROUTE_JSON, h_submit, jobs},
        {"GET", "/v1/jobs", LD_AUTH_ADMIN, 0, h_list, jobs},
        {"GET", "/v1/jobs/{id}", LD_AUTH_ADMIN, 0, h_get, jobs},
        {"DELETE", "/v1/jobs/{id}", LD_AUTH_ADMIN, 0, h_cancel, jobs},
        {"DELETE", "/v1/jobs/{id}/record", LD_AUTH_ADMIN, 0, h_purge, jobs},
        {"GET", "/v1/jobs/{id}/events", LD_AUTH_ADMIN, 0, h_events, jobs},
        {"GET", "/v1/jobs/{id}/result", LD_AUTH_INFERENCE, 0, h_result, jobs},
    };
    for (size_t i = 0; i < LD_ARRAY_LEN(routes); i++) {
        int rc = ld_http_route_add(h, &routes[i], err);
        if (rc)
            return rc;
    }
    return LD_OK;
}

/* jobs_api.h — the HTTP routes of background training jobs (all admin-only):
 *
 *   POST   /v1/jobs              submit a spec -> 202 {"id","state":"queued"},
 *                                Location: /v1/jobs/{id}; 400 (malformed, unknown
 *                                field, wrong type) / 422 (out of range, above a
 *                                cap, data set refused) naming the field; 429 +
 *                                Retry-After when the queue is full
 *   GET    /v1/jobs              {"jobs":[...],"next_cursor"} newest first;
 *                                ?state=S (one state), ?limit=N (1..10000),
 *                                ?cursor=ID (jobs older than ID: the previous
 *                                page's next_cursor); other keys 400
 *   GET    /v1/jobs/{id}         one job's record (404 for an unknown id)
 *   GET    /v1/jobs/{id}/events  Server-Sent Events: "progress" events (every
 *                                change, at least once a second while queued or
 *                                running), then one "end" event, then the
 *                                stream closes
 *   DELETE /v1/jobs/{id}         cancel: 200 cancelled (idempotent), 202 running
 *                                and stopping, 409 already succeeded or failed
 *   DELETE /v1/jobs/{id}/record  remove a finished job's record and kept
 *                                checkpoint: 200 {"id","removed":true}, 409
 *                                while queued, running or interrupted
 *   GET    /v1/jobs/{id}/result  an inversion job's answer (invert_api.h): 200
 *                                the JSON of /invert, 202 {"id","state",
 *                                "progress"} + Retry-After while queued or
 *                                running, 409 job_failed / job_cancelled, 404
 *                                for no inversion job of that id
 * Every route but /result needs the admin token (401 without it; 403 when
 * none is configured); /result the inference token, like /invert.  Error bodies are the HTTP layer's {"error":{...}}.
 *
 * Event streams cost no CPU while idle: the connection is suspended
 * (MHD_suspend_connection from the content reader) and the jobs engine's wake
 * callback resumes it when the job changes (at least once a second while it
 * is queued or running, so a client that went away is noticed and its stream
 * freed within about a second).
 *
 * Threads: handlers and readers run on MHD's threads; wake runs on whichever
 * thread changed the job.  Lock order: jobs sub_lock -> stream lock -> MHD's
 * internal locks.
 */
#ifndef LATENTD_JOBS_API_H
#define LATENTD_JOBS_API_H

#include "latentd/http.h"
#include "latentd/jobs.h"

/* Add the routes to h (before ld_http_start). jobs is borrowed and must
 * outlive the server's connections. */
int ld_jobs_api_register(ld_http_t *h, ld_jobs_t *jobs, ld_err_t *err);

#endif

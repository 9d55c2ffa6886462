/* jobs_api.h — the HTTP routes of background training jobs (all admin-only):
 *
 *   POST   /v1/jobs              submit a spec  -> 202, Location: /v1/jobs/{id}
 *   GET    /v1/jobs              {"jobs":[...]} newest first
 *   GET    /v1/jobs/{id}         one job's record
 *   GET    /v1/jobs/{id}/events  Server-Sent Events: progress, then "end"
 *   DELETE /v1/jobs/{id}         cancel
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

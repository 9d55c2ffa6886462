/* api.h — the HTTP API of `latentd serve`: one handler per route, turning
 * validated JSON into model calls and model outputs into JSON, PNG or .npy.
 *
 *   GET    /healthz                         open
 *   GET    /readyz                          open
 *   GET    /metrics                         inference token
 *   GET    /v1/models                       inference token
 *   GET    /v1/models/{name}                inference token
 *   PUT    /v1/models/{name}                admin token   {"file":"X.safetensors"}, or
 *                                            the checkpoint itself (model_file_api.h)
 *   GET    /v1/models/{name}/file           admin token   (model_file_api.h)
 *   DELETE /v1/models/{name}                admin token
 *   POST   /v1/models/{name}/sample         inference token
 *   GET    /v1/models/{name}/sample.png     inference token (seeded: ETag, 304)
 *   POST   /v1/models/{name}/encode         inference token (VAE)
 *   POST   /v1/models/{name}/decode         inference token
 *   POST   /v1/models/{name}/reconstruct    inference token (VAE)
 *   POST   /v1/models/{name}/interpolate    inference token
 *   POST   /v1/models/{name}/invert         inference token (GAN; invert_api.h)
 *   POST   /v1/models/{name}/classify       inference token (classifier; classify_api.h)
 * (README.md documents every body and response with a curl example.)
 * ld_api_register also adds the /v2 routes of v2.h.
 *
 * Arguments come from the JSON body, or, for an application/x-npy body
 * (decode, encode, reconstruct), from the query string, under one rule set
 * (jsonarg.h); docs/serve.md tables every field.  A handler holds a model
 * reference for its request.  Decoding goes to the model's batcher
 * (batch.h), a mutex-guarded queue whose passes run on the HTTP threads
 * that submit, each with a scratch slot of the batcher's; a request queued
 * behind running passes has its connection suspended until its rows are
 * written (ld_req_await).  Encoding runs on the HTTP thread with scratch
 * allocated per call.  Same inputs and seed give byte-identical bodies.
 * Every number written is finite: a model output that is not is answered
 * 422 instead.
 */
#ifndef LATENTD_API_H
#define LATENTD_API_H

#include "latentd/http.h"
#include "latentd/metrics.h"
#include "latentd/registry.h"

typedef struct {
    ld_registry_t *registry; /* borrowed; outlives the server */
    ld_metrics_t *metrics;   /* borrowed, may be NULL */
    int max_samples;         /* images per request */
    int cache_max_age;       /* seconds a seeded sample.png may be cached (Cache-Control) */
    struct ld_jobs *jobs;    /* borrowed, may be NULL: runs inversions of many images */
    size_t max_upload;       /* model upload bytes (0: 256 MiB) */
} ld_api_opts_t;

typedef struct ld_api ld_api_t;

/* *out owned by the caller; free it after the server (ld_http_free). */
int ld_api_new(const ld_api_opts_t *opts, ld_api_t **out, ld_err_t *err);
void ld_api_free(ld_api_t *api);
/* Add every route above to h (before ld_http_start). */
int ld_api_register(ld_api_t *api, ld_http_t *h, ld_err_t *err);

/* The model of the route's {name} param with a reference (release it), its
 * version in the X-Latentd-Model-Version response header; NULL after
 * answering 404. */
ld_served_t *ld_api_get_model(ld_req_t *req, ld_registry_t *reg);

/* A seed for requests that give none: in [0, 2^53), different on each call
 * and each start. Thread-safe. */
uint64_t ld_api_random_seed(void);

#endif

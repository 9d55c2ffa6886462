/* api_impl.h — api.c's request helpers, for route handlers kept in their own
 * files (invert_api.c) but registered in api.c's table with the ld_api_t as
 * their ctx.  Each behaves like the helper of the same name in api.c: it
 * returns an error status (or NULL) only after answering the request.
 *
 * Threads: the HTTP thread that runs the request.
 */
#ifndef LATENTD_API_IMPL_H
#define LATENTD_API_IMPL_H

#include "latentd/api.h"
#include "latentd/buf.h"
#include "latentd/jsonarg.h"
#include "latentd/model.h"

#include <cjson/cJSON.h>

typedef struct {
    int format; /* 0 json, 1 png, 2 npy */
    int cols;   /* PNG grid columns, 0 = ceil(sqrt(n)) */
    int pad;    /* PNG grid padding */
} ld_api_out_t;

/* The registry the api serves from (for ld_api_get_model). */
ld_registry_t *ld_api_registry(const ld_api_t *api);
/* The jobs engine that runs large inversions, or NULL. */
struct ld_jobs *ld_api_jobs(const ld_api_t *api);
/* The arguments of a POST route that takes JSON or an application/x-npy
 * body: from the JSON body (data: its data fields, opts: its options; the
 * query string must then be empty), or, for an .npy body, the options from
 * the query string and *npy (npy_len bytes) the body.  Names are checked.
 * 0, or -1 when answered. */
int ld_api_body_args(ld_req_t *req, const char *const *data, const char *const *opts,
                     ld_args_t *a, const uint8_t **npy, size_t *npy_len);
/* "format" (default json), "cols" and "pad" of a. 0 or -1. */
int ld_api_out_opts(const ld_args_t *a, ld_api_t *api, ld_api_out_t *o);
/* Images from the .npy body npy (npy_len bytes; shape (n, x_dim) or
 * (n, h, w), float32) when not NULL, else from a's "images" (rows of x_dim
 * values in [0, 1]) or "png" (base64, one string or an array): x (n, x_dim)
 * malloc'd. 0 or -1. */
int ld_api_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const ld_args_t *a,
                  const uint8_t *npy, size_t npy_len, float **x, int *n);
/* The answer of PUT /v1/models/{name} for the outcome of ld_registry_put or
 * ld_registry_install: rc (e its message), *replaced, and s (the new
 * model's reference, released here; NULL on failure). */
void ld_api_reply_put(ld_req_t *req, int rc, int replaced, ld_served_t *s, const ld_err_t *e);
/* 1 if none of x (n) is NaN or Inf (vectorised; any thread). */
int ld_api_all_finite(const float *x, size_t n);
/* The outcome rc of submitting a job (jobs.h; retry, e as it gave them):
 * answered 429 with Retry-After (LD_EBUSY), 503 or 500, and -1; or 0, with
 * Location: /v1/jobs/{id}/result set and b holding the start of the 202
 * body, {"id":ID,"state":"queued","result":LOCATION (the caller adds its
 * fields, closes the object and replies 202). */
int ld_api_job_accepted(ld_req_t *req, int rc, int retry, const ld_err_t *e, const char *id,
                        ld_buf_t *b);
/* Answer images x (n, x_dim) as PNG or .npy as o asks (o->format != 0). */
void ld_api_reply_binary(ld_req_t *req, const ld_api_out_t *o, const ld_arch_t *a,
                         const float *x, int n);

/* The class labels of a request for n rows of model s (label_api.c): a's
 * "label" (an index or a class name, for every row; only when single) or
 * "labels" (one per row; in a query string, separated by commas).  A
 * conditional model (cgan, cvae) needs them: *out (n) malloc'd; any other
 * refuses them: *out NULL.  0, or -1 when answered (422 naming the classes
 * when missing, for an unknown class, a wrong count, or labels given to an
 * unconditional model). */
int ld_api_labels(ld_req_t *req, const ld_served_t *s, const ld_args_t *a, int n, int single,
                  uint8_t **out);

#endif

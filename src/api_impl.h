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
#include "latentd/jsonarg.h"
#include "latentd/model.h"

#include <cjson/cJSON.h>

typedef struct {
    int format; /* 0 json, 1 png, 2 npy */
    int cols;   /* PNG grid columns, 0 = ceil(sqrt(n)) */
    int pad;    /* PNG grid padding */
} ld_api_out_t;

/* The served model named by the route's {name} (a reference: release it),
 * with X-Latentd-Model-Version added; NULL after a 404. */
ld_served_t *ld_api_model(ld_req_t *req, ld_api_t *api);
/* "format", "cols" and "pad" of body (NULL: the defaults). 0 or -1. */
int ld_api_out_opts(ld_req_t *req, ld_api_t *api, const cJSON *body, ld_api_out_t *o);
/* Images from body's "images" (rows of x_dim values in [0, 1]) or "png"
 * (base64, one string or an array): x (n, x_dim) malloc'd. 0 or -1. */
int ld_api_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const cJSON *body,
                  float **x, int *n);
/* The images of a POST body with the data fields "images"/"png" and the
 * options opts: from the JSON body, or from an application/x-npy body (the
 * options then from the query string) on an LD_ROUTE_NPY route, as encode
 * reads them.  *args receives where the options are; x (n, x_dim) malloc'd.
 * Fields are checked before the model is needed: call ld_api_body_args
 * first (before the model lookup), then ld_api_body_images.  0 or -1. */
typedef struct {
    ld_args_t args;
    const uint8_t *npy;
    size_t npy_len;
} ld_api_body_t;
int ld_api_body_args(ld_req_t *req, const char *const *opts, ld_api_body_t *b);
int ld_api_body_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s,
                       const ld_api_body_t *b, float **x, int *n);
/* The answer of PUT /v1/models/{name} for the outcome of ld_registry_put or
 * ld_registry_install: rc (e its message), *replaced, and s (the new
 * model's reference, released here; NULL on failure). */
void ld_api_reply_put(ld_req_t *req, int rc, int replaced, ld_served_t *s, const ld_err_t *e);
/* The registry the API serves from (borrowed). */
ld_registry_t *ld_api_registry(ld_api_t *api);
/* Answer images x (n, x_dim) as PNG or .npy as o asks (o->format != 0). */
void ld_api_reply_binary(ld_req_t *req, const ld_api_out_t *o, const ld_arch_t *a,
                         const float *x, int n);

#endif

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
#include "latentd/model.h"

#include <cjson/cJSON.h>

typedef struct {
    int format; /* 0 json, 1 png, 2 npy */
    int cols;   /* PNG grid columns, 0 = ceil(sqrt(n)) */
    int pad;    /* PNG grid padding */
} ld_api_out_t;

/* The registry the api serves from (for ld_api_get_model). */
ld_registry_t *ld_api_registry(const ld_api_t *api);
/* "format", "cols" and "pad" of body (NULL: the defaults). 0 or -1. */
int ld_api_out_opts(ld_req_t *req, ld_api_t *api, const cJSON *body, ld_api_out_t *o);
/* Images from body's "images" (rows of x_dim values in [0, 1]) or "png"
 * (base64, one string or an array): x (n, x_dim) malloc'd. 0 or -1. */
int ld_api_images(ld_req_t *req, ld_api_t *api, const ld_served_t *s, const cJSON *body,
                  float **x, int *n);
/* Answer images x (n, x_dim) as PNG or .npy as o asks (o->format != 0). */
void ld_api_reply_binary(ld_req_t *req, const ld_api_out_t *o, const ld_arch_t *a,
                         const float *x, int n);

#endif

/* invert_api.h — the route POST /v1/models/{name}/invert (GAN inversion),
 * registered in api.c's table with the ld_api_t as ctx.
 *
 * Body (JSON): exactly one of "images" (rows of x_dim values in [0, 1], or
 * one flat row) and "png" (base64 PNG, or an array of them); or an
 * application/x-npy body (float32 (n, x_dim) or (n, h, w)) with the options
 * in the query string.  Options
 * "steps" (1..1000, 300), "restarts" (1..8, 4), "seed" (random if absent;
 * echoed in X-Latentd-Seed), "lr" (Adam on z, 0.05), "z_penalty" (weight of
 * |z|^2 / z_dim, 0), and "format" json|png|npy, "cols", "pad" as elsewhere.
 * JSON answer: {"model","seed","steps","restarts","lr","z_penalty","shape",
 * "z","mse","images"}; PNG and .npy answer the reconstructions, with the
 * per-image MSE in X-Latentd-Mse (comma-separated) and z in the JSON form only.
 * Up to 4 images are inverted while the request waits, on the HTTP thread,
 * at most 10000 images * restarts * steps (422 above: near a second of
 * CPU).  More images (up to max_samples, images * restarts <= 4096, format
 * json) become an inversion job of the jobs engine (jobs.h): 202
 * {"id","state":"queued","result","images","seed"}, Location:
 * /v1/jobs/{id}/result, where the same JSON answer is once the job
 * succeeded (jobs_api.h); without a jobs engine, 413.
 * Errors: 404 no such model, 422 not a GAN, 400/422 bad fields (jsonarg.h).
 * /interpolate on a GAN inverts its image end points with ld_invert_endpoint.
 *
 * Threads: an HTTP thread; the model is held by reference for the request.
 */
#ifndef LATENTD_INVERT_API_H
#define LATENTD_INVERT_API_H

#include "latentd/http.h"
#include "latentd/registry.h"

/* ctx: the ld_api_t. */
void ld_invert_handler(ld_req_t *req, void *ctx);

/* An image end point of /interpolate on a GAN: x (x_dim), a checked image,
 * inverted with the default options and seed 0 into z (z_dim, the
 * caller's).  0, or -1 after answering the request (422/503). */
int ld_invert_endpoint(ld_req_t *req, const ld_served_t *s, const float *x, float *z);

#endif

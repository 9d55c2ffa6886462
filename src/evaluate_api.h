/* evaluate_api.h — the route POST /v1/models/{name}/evaluate (admin token),
 * registered in api.c's table with the ld_api_t as ctx.
 *
 * Body (JSON, optional): "n" samples drawn (4..50000, 10000), "k" IWAE
 * samples per test image for a VAE (1..1000, 100), "seed" (1), "classifier"
 * the served classifier that scores the samples ("fashion-classifier").
 * No field names a path: the test images are the data set the model's
 * record names when it is a data folder name, Fashion-MNIST's test split
 * otherwise.  The work is an evaluation job of the jobs engine (jobs.h,
 * ld_jobs_submit_evaluate): 202 {"id","state":"queued","result","model",
 * "classifier","n","k","seed"}, Location: /v1/jobs/{id}/result, where its
 * JSON answer is once it succeeded (jobs_api.h).
 * Errors: 404 no such model, 422 a model that does not generate, a
 * classifier that is not served, not a classifier or of another image size,
 * bad fields (jsonarg.h); 429 queue full; 503 no jobs engine.
 *
 * Threads: an HTTP thread; nothing is computed there.
 */
#ifndef LATENTD_EVALUATE_API_H
#define LATENTD_EVALUATE_API_H

#include "latentd/http.h"

/* ctx: the ld_api_t. */
void ld_evaluate_handler(ld_req_t *req, void *ctx);

#endif

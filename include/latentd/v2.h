/* v2.h — the Open Inference Protocol (KServe V2, REST) beside /v1, so that
 * Triton, KServe, MLServer or Seldon clients and gateways can use latentd.
 *
 *   GET  /v2/health/live                              open  200, empty body
 *   GET  /v2/health/ready                             open  200, or 400 while
 *                                                           starting or draining
 *   GET  /v2                                          inference token
 *   GET  /v2/models/{name}[/versions/{version}]       inference token
 *   GET  /v2/models/{name}[/versions/{version}]/ready inference token
 *   POST /v2/models/{name}[/versions/{version}]/infer inference token
 *
 * {version} is the registry's version number of the served model (see
 * registry.h); any other number is 404.
 *
 * Tensors (FP32 unless said, -1 = any batch size n):
 *   z       [n, z_dim]     input  (VAE, GAN): latents to decode
 *   images  [n, h, w]      input  (VAE): images in [0,1] to encode;
 *                          output: decoded images in [0,1]
 *   mu, logvar [n, z_dim]  outputs (VAE): the encoder's posterior
 *   labels  INT32 [n]      input of conditional models: none are yet, so it
 *                          is refused with 400 (read_labels in v2.c is the hook)
 * Without inputs, the request `parameters` seed, n, temperature draw z as
 * /v1 sample does.  `outputs` picks outputs and their form; z and sampling
 * give images, images give mu and logvar by default (images too when asked:
 * a reconstruction from mu).  `id` is echoed.
 *
 * Binary tensor data (Triton's binary_tensor_data extension): an
 * Inference-Header-Content-Length request header gives the length of the
 * JSON at the start of the body; inputs with parameters.binary_data_size
 * take their bytes (little-endian, row-major) from the rest, in order.
 * Outputs with parameters.binary_data (default: the request parameter
 * binary_data_output) come back the same way: an application/octet-stream
 * body, its JSON length in the response's Inference-Header-Content-Length.
 *
 * Errors: {"error":"message"} with 400 (bad request, as the protocol has
 * no 422) or 404 (no such model or version); 401/403/413/503 as on /v1.
 * Decoding and encoding go through the same calls as /v1 (the served
 * model's batcher, ld_model_encode), so /v1 and /v2 give the same bytes for
 * the same z or seed.
 *
 * Thread-safety: handlers run on the HTTP threads, any number at once; they
 * share only the registry (which locks) and the borrowed options.
 */
#ifndef LATENTD_V2_H
#define LATENTD_V2_H

#include "latentd/api.h"
#include "latentd/http.h"

/* Add the routes above to h (before ld_http_start).  o is borrowed: it and
 * what it points to must outlive the server. */
int ld_v2_register(ld_http_t *h, const ld_api_opts_t *o, ld_err_t *err);

#endif

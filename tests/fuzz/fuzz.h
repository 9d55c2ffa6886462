/* fuzz.h — helpers shared by the libFuzzer targets in tests/fuzz/ (built by
 * `make fuzz`; each fuzz_<target>.c defines LLVMFuzzerTestOneInput and has
 * its seed corpus in tests/corpus/<target>/).
 *
 * Targets run single-threaded in one process, input after input: what they
 * allocate per input they free, so LeakSanitizer and the RSS limit see the
 * parsers' own leaks and growth. */
#ifndef LATENTD_FUZZ_H
#define LATENTD_FUZZ_H

#include "latentd/common.h"

#include <stddef.h>
#include <stdint.h>

/* A path naming a file that holds data[0..size) (a memfd, rewritten on each
 * call), for parsers that read files: "/proc/self/fd/N". */
const char *fz_file(const uint8_t *data, size_t size);

/* ---- the fake HTTP layer (fake_http.c), for the request body targets ---- */

typedef struct ld_api ld_api_t;

/* A served tiny VAE ("vae", 4x4 images, z 2) and GAN ("gan"), made once in a
 * temporary model folder; the API (/v1 and /v2 routes) answers with
 * max_samples = 4. */
ld_api_t *fz_api(void);
/* Run the handler of route (method POST, pattern ending in suffix, e.g.
 * "/decode") on the JSON body data[0..size) for model name, as the HTTP
 * layer would after its checks (a body that is not one JSON object is
 * answered 400 there, and skipped here).  Returns the reply's status. */
int fz_post(const char *suffix, const char *name, const uint8_t *data, size_t size);
/* The same with data[0..size) an application/x-npy body (the options from an
 * empty query string), on a route that takes one (LD_ROUTE_NPY). */
int fz_post_npy(const char *suffix, const char *name, const uint8_t *data, size_t size);
/* POST /v2/models/{name}/infer with the body data[0..size): all of it JSON
 * (json_len < 0), or its first json_len bytes, announced by the header
 * Inference-Header-Content-Length, and binary tensor data after them. */
int fz_post_v2(const char *name, const uint8_t *data, size_t size, long json_len);

#endif

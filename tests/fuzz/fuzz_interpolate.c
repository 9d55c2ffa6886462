/* fuzz_interpolate.c — the body of POST /v1/models/{name}/interpolate, through the real
 * handler (api.c, jsonarg.c) with the HTTP layer faked (fake_http.c); an
 * odd-sized input goes to the GAN, an even one to the VAE. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_post("/interpolate", size & 1 ? "gan" : "vae", data, size);
    return 0;
}

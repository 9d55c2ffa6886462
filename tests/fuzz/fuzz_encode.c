/* fuzz_encode.c — the body of POST /v1/models/{name}/encode, through the real
 * handler (api.c, jsonarg.c) with the HTTP layer faked (fake_http.c); an
 * odd-sized input goes to the GAN, an even one to the VAE; sizes 2 and 3
 * modulo 4 go to /reconstruct, which reads its images the same way. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_post(size & 2 ? "/reconstruct" : "/encode", size & 1 ? "gan" : "vae", data, size);
    return 0;
}

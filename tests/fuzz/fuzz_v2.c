/* fuzz_v2.c — the body of POST /v2/models/{name}/infer (KServe V2), through
 * the real handler (v2.c, jsonarg.c) with the HTTP layer faked
 * (fake_http.c).  The first byte chooses: bit 0 the model (GAN or VAE), bit
 * 1 the binary extension, in which case the next two bytes (little-endian)
 * are the Inference-Header-Content-Length value, modulo the rest's length
 * plus one; the rest is the body. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *name = data[0] & 1 ? "gan" : "vae";
    if (!(data[0] & 2)) {
        fz_post_v2(name, data + 1, size - 1, -1);
        return 0;
    }
    if (size < 3)
        return 0;
    size_t rest = size - 3;
    long jlen = (long)((data[1] | (size_t)data[2] << 8) % (rest + 1));
    fz_post_v2(name, data + 3, rest, jlen);
    return 0;
}

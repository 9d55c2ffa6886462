/* fuzz_npy.c — application/x-npy bodies: ld_npy_decode on the input (and,
 * for what it reads, an encode/decode round trip that must give back the
 * same shape and bits), then the real handlers of decode, encode and
 * reconstruct on it as the body (api.c's read_npy), HTTP faked by
 * fake_http.c.  (size / 8) % 6 picks the route and the model: a .npy file's
 * size is its 64-byte-aligned header plus 4 bytes a value, so z seeds of
 * 1 to 6 rows of 2 values cover every pair. */
#include "fuzz.h"

#include "latentd/image.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    float *x = NULL;
    int nd = 0;
    int64_t sh[4];
    ld_err_t e;
    if (ld_npy_decode(data, size, &x, &nd, sh, &e) == LD_OK && nd >= 1) {
        uint8_t *out = NULL;
        size_t len = 0;
        LD_ASSERT(ld_npy_encode(x, nd, sh, &out, &len, &e) == LD_OK);
        float *y = NULL;
        int nd2 = 0;
        int64_t sh2[4];
        LD_ASSERT(ld_npy_decode(out, len, &y, &nd2, sh2, &e) == LD_OK);
        LD_ASSERT(nd2 == nd && memcmp(sh, sh2, (size_t)nd * sizeof *sh) == 0);
        size_t count = 1;
        for (int i = 0; i < nd; i++)
            count *= (size_t)sh[i];
        LD_ASSERT(count == 0 || memcmp(x, y, count * sizeof *x) == 0);
        free(y);
        free(out);
    }
    free(x);
    static const char *const routes[] = {"/decode", "/encode", "/reconstruct"};
    size_t k = (size >> 3) % 6;
    fz_post_npy(routes[k >> 1], k & 1 ? "gan" : "vae", data, size);
    return 0;
}

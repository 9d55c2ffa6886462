/* fuzz_png.c — PNG decoding (libpng full API, to gray floats). */
#include "fuzz.h"

#include "latentd/image.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    float *x = NULL;
    int h, w;
    ld_err_t err;
    if (ld_png_decode(data, size, (size_t)1 << 20, &x, &h, &w, &err) == LD_OK) {
        for (size_t i = 0; i < (size_t)h * (size_t)w; i++)
            LD_ASSERT(x[i] >= 0.0f && x[i] <= 1.0f);
        free(x);
    }
    return 0;
}

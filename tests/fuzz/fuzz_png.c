/* fuzz_png.c — PNG decoding (libpng full API, to gray floats).
 *
 * libpng is not instrumented, so the fuzzer gets no feedback from inside it,
 * and almost every mutation would end at a chunk CRC check.  Each input is
 * therefore decoded twice: as it is (the CRC and framing errors), and with
 * every chunk's CRC made right (what lies behind them). */
#include "fuzz.h"

#include "latentd/image.h"

#include <string.h>
#include <zlib.h>

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void decode(const uint8_t *data, size_t size)
{
    float *x = NULL;
    int h, w;
    ld_err_t err;
    if (ld_png_decode(data, size, (size_t)1 << 20, &x, &h, &w, &err) == LD_OK) {
        for (size_t i = 0; i < (size_t)h * (size_t)w; i++)
            LD_ASSERT(x[i] >= 0.0f && x[i] <= 1.0f);
        free(x);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    if (!fixed)
        return 0;
    memcpy(fixed, data, size);
    size_t pos = 8; /* after the signature: length, type, data, CRC */
    while (pos + 12 <= size) {
        uint32_t len = be32(fixed + pos);
        if (len > size - pos - 12)
            break;
        uint32_t crc = (uint32_t)crc32(0L, fixed + pos + 4, len + 4);
        uint8_t *c = fixed + pos + 8 + len;
        c[0] = (uint8_t)(crc >> 24);
        c[1] = (uint8_t)(crc >> 16);
        c[2] = (uint8_t)(crc >> 8);
        c[3] = (uint8_t)crc;
        pos += 12 + (size_t)len;
    }
    decode(fixed, size);
    free(fixed);
    return 0;
}

/* fuzz_idx.c — the IDX reader (raw or gzip, as zlib reads both): an image
 * file, all of it and then only its first 3 records. */
#include "fuzz.h"

#include "latentd/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_file(data, size);
    for (int limit = 0; limit <= 3; limit += 3) {
        ld_dataset_t *d = NULL;
        ld_err_t err;
        if (ld_data_load_idx(path, NULL, limit, &d, &err) == LD_OK) {
            LD_ASSERT(d->n >= 1 && d->dim == d->h * d->w);
            ld_data_free(d);
        }
    }
    return 0;
}

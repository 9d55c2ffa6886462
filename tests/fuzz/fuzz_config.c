/* fuzz_config.c — the config file parser (key = value lines). */
#include "fuzz.h"

#include "latentd/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ld_config_t c;
    ld_config_defaults(&c);
    ld_err_t err;
    if (ld_config_load(&c, fz_file(data, size), &err) == LD_OK)
        free(ld_config_dump(&c));
    return 0;
}

/* fuzz_jobspec.c — the job spec body (POST /v1/jobs) to ld_jobspec_t, and
 * what parses written back as JSON. */
#include "fuzz.h"

#include "latentd/jobspec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ld_jobs_caps_t caps = {.max_epochs = 100, .max_batch = 1024, .max_hidden_width = 1024,
                                 .max_z = 256, .max_limit = 60000};
    ld_jobspec_t s;
    ld_err_t err;
    if (ld_jobspec_parse((const char *)data, size, &caps, 500, &s, &err) == LD_OK)
        free(ld_jobspec_to_json(&s));
    return 0;
}

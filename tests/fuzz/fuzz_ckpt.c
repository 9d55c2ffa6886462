/* fuzz_ckpt.c — the checkpoint loader: safetensors parsing, then a model
 * built from it (architecture from metadata or inferred from tensor names,
 * tensors checked against it, record from the metadata). */
#include "fuzz.h"

#include "latentd/ckpt.h"
#include "latentd/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ld_ckpt_t *c = NULL;
    ld_err_t err;
    if (ld_ckpt_parse(data, size, &c, &err) != LD_OK)
        return 0;
    ld_model_t *m = NULL;
    if (ld_model_from_ckpt(c, &m, &err) == LD_OK) {
        /* what loads must serialise again and read back */
        char desc[256];
        ld_arch_describe(&m->arch, desc, sizeof desc);
        ld_tensor_view_t t[64];
        int n = ld_model_tensors(m, m->params, t, 64);
        uint8_t *buf;
        size_t len;
        LD_ASSERT(ld_ckpt_serialize(t, n, NULL, 0, &buf, &len, &err) == LD_OK);
        ld_ckpt_t *back = NULL;
        LD_ASSERT(ld_ckpt_parse(buf, len, &back, &err) == LD_OK);
        ld_ckpt_free(back);
        free(buf);
        ld_model_free(m);
    }
    ld_ckpt_free(c);
    return 0;
}

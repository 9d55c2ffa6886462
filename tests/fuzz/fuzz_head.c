/* fuzz_head.c — ld_http_head_check (http_head.c), the check of a raw
 * request head before libmicrohttpd reads it: on the input as the bytes
 * received so far, with the buffer full (cap = size) and with room left
 * (cap = size + 1).  Each verdict must be one of the three, a rejection a
 * status of 400, 414 or 431 with a code and a message, and a full buffer
 * never "incomplete". */
#include "fuzz.h"

#include "../../src/http_impl.h"

#include <stdlib.h>
#include <string.h>

static void check(const char *buf, size_t len, size_t cap)
{
    ld_head_verdict_t v;
    memset(&v, 0xa5, sizeof v);
    int r = ld_http_head_check(buf, len, cap, &v);
    LD_ASSERT(r == LD_HEAD_OK || r == LD_HEAD_INCOMPLETE || r == LD_HEAD_REJECT);
    LD_ASSERT(!(r == LD_HEAD_INCOMPLETE && len >= cap));
    if (r == LD_HEAD_REJECT) {
        LD_ASSERT(v.status == 400 || v.status == 414 || v.status == 431);
        LD_ASSERT(v.code && *v.code);
        LD_ASSERT(memchr(v.msg, 0, sizeof v.msg) && v.msg[0]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so that a read past the bytes received is caught */
    char *buf = malloc(size ? size : 1);
    LD_ASSERT(buf);
    memcpy(buf, data, size);
    check(buf, size, size);
    check(buf, size, size + 1);
    ld_head_verdict_t v;
    int r = ld_http_target_check(buf, size, &v);
    LD_ASSERT(r == LD_HEAD_OK || (r == LD_HEAD_REJECT && v.status == 414));
    free(buf);
    return 0;
}

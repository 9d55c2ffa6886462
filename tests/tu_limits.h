/* tu_limits.h — run a piece of a test under an address-space limit, to show
 * that code refuses bad input before it reserves memory the input does not
 * justify.
 *
 * tu_run_limited(fn, ctx, extra) forks; the child caps its address space at
 * its current size plus extra bytes (RLIMIT_AS), runs fn(ctx) and exits with
 * its result.  An allocation beyond the cap fails in the child (malloc
 * returns NULL; under AddressSanitizer the child aborts), never in the test's
 * process.  Returns fn's result (0..255), or 128 + signal if the child died.
 * Call from the test's own thread; fn must not touch Check's state. */
#ifndef LATENTD_TU_LIMITS_H
#define LATENTD_TU_LIMITS_H

#include <stddef.h>

int tu_run_limited(int (*fn)(void *ctx), void *ctx, size_t extra);

#endif

/* rng.h — a small, fast, seedable generator (xoshiro256**, seeded by splitmix64).
 *
 * Same seed => same stream on every machine and thread count.  The whole state
 * is the four words of ld_rng_t, so it can be saved in a checkpoint and resumed.
 * Not thread-safe: one generator per thread or per request.
 */
#ifndef LATENTD_RNG_H
#define LATENTD_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} ld_rng_t;

void ld_rng_seed(ld_rng_t *r, uint64_t seed);
uint64_t ld_rng_u64(ld_rng_t *r);
/* Uniform in [0,1) with 24 random bits. */
float ld_rng_uniform(ld_rng_t *r);
/* Uniform integer in [0,n), unbiased. */
uint32_t ld_rng_below(ld_rng_t *r, uint32_t n);
/* x[0..n) ~ N(mean, std^2), Box-Muller in pairs (an odd tail uses one draw of a pair).
 * Training's noise: its stream is what `make models` reproduces. */
void ld_rng_fill_normal(ld_rng_t *r, float *x, size_t n, float mean, float std);
/* x[0..n) = elements [first, first + n) of what ld_rng_fill_normal(r, ...)
 * would write from r's present state, for any total length; r is not
 * advanced.  Lets each thread draw its own slice of one shared stream. */
void ld_rng_fill_normal_slice(const ld_rng_t *r, size_t first, float *x, size_t n, float mean,
                              float std);
/* The same distribution by the ziggurat method: one 64-bit draw and no log,
 * sin or cos for about 98.8% of values, so cheaper than Box-Muller (figures:
 * docs/benchmarks.md).  A different stream from ld_rng_fill_normal's for the
 * same seed.  Used for the latents drawn for sampling (ld_model_draw_z). */
void ld_rng_fill_normal_fast(ld_rng_t *r, float *x, size_t n, float mean, float std);
/* x[0..n) ~ U[lo, hi). */
void ld_rng_fill_uniform(ld_rng_t *r, float *x, size_t n, float lo, float hi);
/* x[i] = 0 where ld_rng_uniform(r) < p, else on (a dropout mask): the same
 * draws and values as that loop. */
void ld_rng_fill_mask(ld_rng_t *r, float p, float on, size_t n, float *x);
/* In-place Fisher-Yates shuffle of idx[0..n). */
void ld_rng_shuffle(ld_rng_t *r, int *idx, int n);

#endif

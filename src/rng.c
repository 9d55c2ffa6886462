/* rng.c — xoshiro256** (Blackman & Vigna), seeded by splitmix64. See rng.h. */
#include "latentd/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void ld_rng_seed(ld_rng_t *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t ld_rng_u64(ld_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float ld_rng_uniform(ld_rng_t *r) { return (float)(ld_rng_u64(r) >> 40) * 0x1.0p-24f; }

uint32_t ld_rng_below(ld_rng_t *r, uint32_t n)
{
    /* Lemire's multiply-shift with rejection: unbiased. */
    uint64_t m = (uint64_t)(uint32_t)(ld_rng_u64(r) >> 32) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t thresh = (uint32_t)(-n) % n;
        while (lo < thresh) {
            m = (uint64_t)(uint32_t)(ld_rng_u64(r) >> 32) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void ld_rng_fill_normal(ld_rng_t *r, float *x, size_t n, float mean, float std)
{
    for (size_t i = 0; i < n; i += 2) {
        /* u1 in (0,1] so log is finite; 53-bit doubles for accuracy in the tails. */
        double u1 = ((double)(ld_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53;
        double u2 = (double)(ld_rng_u64(r) >> 11) * 0x1.0p-53;
        double rad = sqrt(-2.0 * log(u1));
        double th = 6.283185307179586 * u2;
        x[i] = mean + std * (float)(rad * cos(th));
        if (i + 1 < n)
            x[i + 1] = mean + std * (float)(rad * sin(th));
    }
}

void ld_rng_fill_uniform(ld_rng_t *r, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * ld_rng_uniform(r);
}

void ld_rng_shuffle(ld_rng_t *r, int *idx, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ld_rng_below(r, (uint32_t)(i + 1));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

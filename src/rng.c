/* rng.c — xoshiro256** (Blackman & Vigna), seeded by splitmix64. See rng.h. */
#include "latentd/rng.h"

#include <math.h>
#include <pthread.h>

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

/* One Box-Muller pair from two draws: rad * (cos th, sin th). */
static void normal_pair(ld_rng_t *r, double *rad, double *th)
{
    /* u1 in (0,1] so log is finite; 53-bit doubles for accuracy in the tails. */
    double u1 = ((double)(ld_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(ld_rng_u64(r) >> 11) * 0x1.0p-53;
    *rad = sqrt(-2.0 * log(u1));
    *th = 6.283185307179586 * u2;
}

void ld_rng_fill_normal(ld_rng_t *r, float *x, size_t n, float mean, float std)
{
    for (size_t i = 0; i < n; i += 2) {
        double rad, th;
        normal_pair(r, &rad, &th);
        x[i] = mean + std * (float)(rad * cos(th));
        if (i + 1 < n)
            x[i + 1] = mean + std * (float)(rad * sin(th));
    }
}

void ld_rng_fill_normal_slice(const ld_rng_t *r0, size_t first, float *x, size_t n, float mean,
                              float std)
{
    ld_rng_t r = *r0;
    /* every pair takes exactly two draws: skip the pairs before first's */
    for (size_t k = 0; k < first / 2 * 2; k++)
        ld_rng_u64(&r);
    for (size_t i = first / 2 * 2; i < first + n; i += 2) {
        double rad, th;
        normal_pair(&r, &rad, &th);
        if (i >= first)
            x[i - first] = mean + std * (float)(rad * cos(th));
        if (i + 1 < first + n)
            x[i + 1 - first] = mean + std * (float)(rad * sin(th));
    }
}

/* ---- the ziggurat (Marsaglia & Tsang 2000; Doornik 2005's variant, whose
 * layer index and abscissa come from separate bits of the draw).  The
 * density's right half is covered by ZIG_N layers of equal area ZIG_V: layer
 * i spans [0, zx[i]] (zx[0] = ZIG_V / f(ZIG_R) is the base, which also holds
 * the tail beyond ZIG_R = zx[1]; zx[ZIG_N] = 0).  A value uniform in a layer
 * is accepted at once when it lies under the layer above (|u| < zr[i] =
 * zx[i+1] / zx[i], about 98.8% of draws); the base's overhang is the tail,
 * sampled by Marsaglia's exponential method; the rest falls in a wedge and is
 * accepted against the density itself. */
#define ZIG_N 128
#define ZIG_R 3.442619855899
#define ZIG_V 9.91256303526217e-3

static double zig_x[ZIG_N + 1], zig_r[ZIG_N];
static pthread_once_t zig_once = PTHREAD_ONCE_INIT;

static void zig_init(void)
{
    double f = exp(-0.5 * ZIG_R * ZIG_R);
    zig_x[0] = ZIG_V / f;
    zig_x[1] = ZIG_R;
    for (int i = 2; i < ZIG_N; i++) {
        zig_x[i] = sqrt(-2.0 * log(ZIG_V / zig_x[i - 1] + f));
        f = exp(-0.5 * zig_x[i] * zig_x[i]);
    }
    zig_x[ZIG_N] = 0.0;
    for (int i = 0; i < ZIG_N; i++)
        zig_r[i] = zig_x[i + 1] / zig_x[i];
}

/* Uniform in (0, 1], 53 bits. */
static double open0_unit(ld_rng_t *r)
{
    return ((double)(ld_rng_u64(r) >> 11) + 1.0) * 0x1.0p-53;
}

static double zig_normal(ld_rng_t *r)
{
    for (;;) {
        uint64_t u = ld_rng_u64(r);
        int i = (int)(u & (ZIG_N - 1));
        /* the top 53 bits as a signed value in [-1, 1): independent of i */
        double v = (double)((int64_t)u >> 11) * 0x1.0p-52;
        if (fabs(v) < zig_r[i])
            return v * zig_x[i];
        if (i == 0) { /* the tail beyond ZIG_R */
            double a, b;
            do {
                a = log(open0_unit(r)) / ZIG_R;
                b = log(open0_unit(r));
            } while (-2.0 * b < a * a);
            return v < 0 ? a - ZIG_R : ZIG_R - a;
        }
        /* a wedge: accept with the density's ratio to the layer's box */
        double x = v * zig_x[i];
        double f0 = exp(-0.5 * (zig_x[i] * zig_x[i] - x * x));
        double f1 = exp(-0.5 * (zig_x[i + 1] * zig_x[i + 1] - x * x));
        if (f1 + (double)(ld_rng_u64(r) >> 11) * 0x1.0p-53 * (f0 - f1) < 1.0)
            return x;
    }
}

void ld_rng_fill_normal_fast(ld_rng_t *r, float *x, size_t n, float mean, float std)
{
    pthread_once(&zig_once, zig_init);
    for (size_t i = 0; i < n; i++)
        x[i] = mean + std * (float)zig_normal(r);
}

void ld_rng_fill_uniform(ld_rng_t *r, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * ld_rng_uniform(r);
}

void ld_rng_fill_mask(ld_rng_t *r, float p, float on, size_t n, float *x)
{
    /* one loop in this file, so that ld_rng_uniform and the generator are
     * inlined: a dropout mask is drawn for every hidden value of every
     * training row */
    for (size_t i = 0; i < n; i++)
        x[i] = ld_rng_uniform(r) < p ? 0.0f : on;
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

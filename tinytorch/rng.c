/* rng.c - splitmix64 plus a portable log for normals.
 *
 * Why not rand() or libm: rand() differs between C libraries and log()/cos() may differ
 * in the last bit between libm versions. Here every step is integer arithmetic or IEEE
 * +,-,*,/ (exactly rounded everywhere; the build uses -ffp-contract=off), so a seed
 * gives the same floats on every machine.
 */
#include "rng.h"

#include <math.h>

void tt_rng_seed(tt_rng *r, uint64_t seed) {
    r->state = seed;
    r->has_spare = 0;
    r->spare = 0.0;
}

/* splitmix64 (Steele, Lea, Flood 2014): a Weyl sequence through a 64-bit mixer. */
uint64_t tt_rng_u64(tt_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint32_t tt_rng_u32(tt_rng *r) { return (uint32_t)(tt_rng_u64(r) >> 32); }

float tt_rng_uniform(tt_rng *r) { return (float)(tt_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

double tt_rng_uniform_f64(tt_rng *r) {
    return (double)(tt_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Lemire's multiply-shift with rejection: unbiased integer in [0, n). */
uint32_t tt_rng_below(tt_rng *r, uint32_t n) {
    if (n == 0) return 0;
    uint64_t m = (uint64_t)tt_rng_u32(r) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)tt_rng_u32(r) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* log(x) for x > 0: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
 * log(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m-1)/(m+1), |s| < 0.1716,
 * so 12 terms reach double precision. frexp/ldexp are exact. */
double tt_log_portable(double x) {
    int e;
    double m = frexp(x, &e); /* m in [0.5, 1) */
    if (m < 0.70710678118654752440) {
        m *= 2.0;
        e -= 1;
    }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s, term = s, sum = 0.0;
    for (int k = 0; k < 14; k++) {
        sum += term / (double)(2 * k + 1);
        term *= s2;
    }
    return 2.0 * sum + (double)e * 0.69314718055994530942;
}

/* Marsaglia's polar method: needs only log and sqrt (sqrt is exactly rounded). */
double tt_rng_normal(tt_rng *r) {
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * tt_rng_uniform_f64(r) - 1.0;
        v = 2.0 * tt_rng_uniform_f64(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * tt_log_portable(s) / s);
    r->spare = v * f;
    r->has_spare = 1;
    return u * f;
}

static tt_rng g_rng = {0x5EEDull, 0, 0.0};

tt_rng *tt_rng_global(void) { return &g_rng; }

void tt_manual_seed(uint64_t seed) { tt_rng_seed(&g_rng, seed); }

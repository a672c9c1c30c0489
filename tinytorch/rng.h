/* rng.h - the library's own random numbers: the same seed gives the same numbers on
 * every platform and compiler (integer arithmetic plus a libm-free log, see rng.c).
 */
#ifndef TT_RNG_H
#define TT_RNG_H

#include <stdint.h>

typedef struct tt_rng {
    uint64_t state;   /* splitmix64 counter */
    int has_spare;    /* polar method makes normals in pairs */
    double spare;
} tt_rng;

void tt_rng_seed(tt_rng *r, uint64_t seed);
uint64_t tt_rng_u64(tt_rng *r);
uint32_t tt_rng_u32(tt_rng *r);
float tt_rng_uniform(tt_rng *r);          /* [0, 1), 24 random bits              */
double tt_rng_uniform_f64(tt_rng *r);     /* [0, 1), 53 random bits              */
double tt_rng_normal(tt_rng *r);          /* N(0, 1)                             */
uint32_t tt_rng_below(tt_rng *r, uint32_t n); /* uniform in [0, n), unbiased       */

/* The global generator used by tt_rand_*, dropout and module initialisers. */
tt_rng *tt_rng_global(void);
void tt_manual_seed(uint64_t seed);

/* Portable natural log in double (no libm), exposed for tests. */
double tt_log_portable(double x);

#endif

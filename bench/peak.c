/* peak.c - the machine's measured peak single-precision GFLOP/s: an FMA loop (fma.h)
 * on 1 and on 2 threads, the best of five runs of each.
 *
 * Output (one line the bench driver parses):
 *   PEAK isa=avx512 gflops_1t=... gflops_2t=... ghz_est=...
 *
 *   usage: peak [seconds_per_measurement]   (default 0.3)
 */
#define _GNU_SOURCE
#include "fma.h"

#include <stdio.h>
#include <stdlib.h>

/* GFLOP/s of `threads` threads each running the loop for about `seconds`; the best of
 * five repetitions (the first ones also serve as warm-up of the clock; on a shared
 * machine the best one is the least disturbed). */
static double measure(fma_isa isa, int threads, double seconds, long *iters_io) {
    long iters = *iters_io = fma_calibrate(isa, seconds, *iters_io);
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double g = fma_gflops(isa, threads, iters);
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.3;
    if (seconds <= 0) seconds = 0.3;
    fma_isa isa = fma_detect_isa();
    int maxthreads = 1;
#ifdef _OPENMP
    maxthreads = omp_get_num_procs();
#endif
    long iters = 1000;
    double g1 = measure(isa, 1, seconds, &iters);
    int t2 = maxthreads >= 2 ? 2 : 1;
    double g2 = measure(isa, t2, seconds, &iters);
    /* FMAs per cycle per core is 2 x (lanes) x (FMA pipes); with 2 pipes the implied
     * clock is g1 / (4 * lanes). Printed only as a plausibility check. */
    double ghz_est = g1 / (2.0 * 2.0 * fma_isa_lanes[isa]);
    printf("FMA peak (%s, %d accumulators, %ld iterations per thread per run)\n",
           fma_isa_name[isa], FMA_ACC, iters);
    printf("  1 thread : %8.1f GFLOP/s\n", g1);
    printf("  %d threads: %8.1f GFLOP/s%s\n", t2, g2, t2 < 2 ? " (only one CPU)" : "");
    printf("  implied clock with 2 FMA pipes: %.2f GHz\n", ghz_est);
    printf("PEAK isa=%s gflops_1t=%.1f gflops_2t=%.1f ghz_est=%.2f\n", fma_isa_name[isa], g1, g2,
           ghz_est);
    return 0;
}

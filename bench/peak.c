/* peak.c - the machine's measured peak single-precision GFLOP/s: an FMA loop.
 *
 * Each core runs a loop of independent fused multiply-adds on registers only (no memory
 * traffic), with enough accumulators to cover the FMA latency times the number of FMA
 * pipes: 12 zmm accumulators for AVX-512 (Zen 4/5: latency 4, 2 pipes -> 8 needed;
 * Intel: latency 4, up to 2 pipes -> 8 needed). Falls back to AVX2 (ymm) or scalar code
 * when the CPU lacks AVX-512. One FMA on a 16-float zmm counts 32 FLOPs.
 *
 * Output (one line the bench driver parses):
 *   PEAK isa=avx512 gflops_1t=... gflops_2t=... ghz_est=...
 *
 *   usage: peak [seconds_per_measurement]   (default 0.3)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PEAK_X86 1
#endif

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every kernel runs `iters` iterations of 12 independent FMAs and returns a value that
 * depends on all accumulators, so that the compiler cannot drop the loop. */
#define PEAK_ACC 12

#ifdef PEAK_X86
__attribute__((target("avx512f,fma"), noinline))
static float fma_loop_avx512(long iters, float seed) {
    __m512 a = _mm512_set1_ps(1.0f + 1e-7f * seed), b = _mm512_set1_ps(1e-8f);
    __m512 c[PEAK_ACC];
    for (int i = 0; i < PEAK_ACC; i++) c[i] = _mm512_set1_ps((float)i * 1e-3f);
    for (long it = 0; it < iters; it++) {
        /* written out so that all 12 stay in registers */
        c[0] = _mm512_fmadd_ps(c[0], a, b);
        c[1] = _mm512_fmadd_ps(c[1], a, b);
        c[2] = _mm512_fmadd_ps(c[2], a, b);
        c[3] = _mm512_fmadd_ps(c[3], a, b);
        c[4] = _mm512_fmadd_ps(c[4], a, b);
        c[5] = _mm512_fmadd_ps(c[5], a, b);
        c[6] = _mm512_fmadd_ps(c[6], a, b);
        c[7] = _mm512_fmadd_ps(c[7], a, b);
        c[8] = _mm512_fmadd_ps(c[8], a, b);
        c[9] = _mm512_fmadd_ps(c[9], a, b);
        c[10] = _mm512_fmadd_ps(c[10], a, b);
        c[11] = _mm512_fmadd_ps(c[11], a, b);
    }
    __m512 s = c[0];
    for (int i = 1; i < PEAK_ACC; i++) s = _mm512_add_ps(s, c[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"), noinline))
static float fma_loop_avx2(long iters, float seed) {
    __m256 a = _mm256_set1_ps(1.0f + 1e-7f * seed), b = _mm256_set1_ps(1e-8f);
    __m256 c[PEAK_ACC];
    for (int i = 0; i < PEAK_ACC; i++) c[i] = _mm256_set1_ps((float)i * 1e-3f);
    for (long it = 0; it < iters; it++) {
        c[0] = _mm256_fmadd_ps(c[0], a, b);
        c[1] = _mm256_fmadd_ps(c[1], a, b);
        c[2] = _mm256_fmadd_ps(c[2], a, b);
        c[3] = _mm256_fmadd_ps(c[3], a, b);
        c[4] = _mm256_fmadd_ps(c[4], a, b);
        c[5] = _mm256_fmadd_ps(c[5], a, b);
        c[6] = _mm256_fmadd_ps(c[6], a, b);
        c[7] = _mm256_fmadd_ps(c[7], a, b);
        c[8] = _mm256_fmadd_ps(c[8], a, b);
        c[9] = _mm256_fmadd_ps(c[9], a, b);
        c[10] = _mm256_fmadd_ps(c[10], a, b);
        c[11] = _mm256_fmadd_ps(c[11], a, b);
    }
    __m256 s = c[0];
    for (int i = 1; i < PEAK_ACC; i++) s = _mm256_add_ps(s, c[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif

__attribute__((noinline))
static float fma_loop_scalar(long iters, float seed) {
    float a = 1.0f + 1e-7f * seed, b = 1e-8f, c[PEAK_ACC];
    for (int i = 0; i < PEAK_ACC; i++) c[i] = (float)i * 1e-3f;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < PEAK_ACC; i++) c[i] = c[i] * a + b; /* mul + add: 2 FLOPs */
    float s = 0;
    for (int i = 0; i < PEAK_ACC; i++) s += c[i];
    return s;
}

typedef enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512 } isa_t;
static const char *isa_name[] = {"scalar", "avx2", "avx512"};
static const int isa_lanes[] = {1, 8, 16};

static isa_t detect_isa(void) {
#ifdef PEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return ISA_AVX2;
#endif
    return ISA_SCALAR;
}

static float run_loop(isa_t isa, long iters, float seed) {
#ifdef PEAK_X86
    if (isa == ISA_AVX512) return fma_loop_avx512(iters, seed);
    if (isa == ISA_AVX2) return fma_loop_avx2(iters, seed);
#endif
    return fma_loop_scalar(iters, seed);
}

static volatile float sink;

/* GFLOP/s of `threads` threads each running the loop for about `seconds`; the best of
 * five repetitions (the first ones also serve as warm-up of the clock; on a shared
 * machine the best one is the least disturbed). */
static double measure(isa_t isa, int threads, double seconds, long *iters_io) {
    long iters = *iters_io;
    /* calibrate on one thread: grow iters until one run takes >= seconds */
    for (;;) {
        double t0 = now_sec();
        sink = run_loop(isa, iters, 1.0f);
        double dt = now_sec() - t0;
        if (dt >= seconds) break;
        double grow = dt > 1e-4 ? 1.2 * seconds / dt : 10.0;
        iters = (long)((double)iters * (grow > 10.0 ? 10.0 : (grow < 1.1 ? 1.1 : grow))) + 1;
    }
    *iters_io = iters;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_sec();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
        {
            float v = run_loop(isa, iters, (float)omp_get_thread_num());
#pragma omp critical
            sink += v;
        }
#else
        (void)threads;
        sink = run_loop(isa, iters, 1.0f);
#endif
        double dt = now_sec() - t0;
        double flops = (double)threads * (double)iters * PEAK_ACC * 2.0 * isa_lanes[isa];
        double g = flops / dt * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.3;
    if (seconds <= 0) seconds = 0.3;
    isa_t isa = detect_isa();
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
    double ghz_est = g1 / (2.0 * 2.0 * isa_lanes[isa]);
    printf("FMA peak (%s, %d accumulators, %ld iterations per thread per run)\n",
           isa_name[isa], PEAK_ACC, iters);
    printf("  1 thread : %8.1f GFLOP/s\n", g1);
    printf("  %d threads: %8.1f GFLOP/s%s\n", t2, g2, t2 < 2 ? " (only one CPU)" : "");
    printf("  implied clock with 2 FMA pipes: %.2f GHz\n", ghz_est);
    printf("PEAK isa=%s gflops_1t=%.1f gflops_2t=%.1f ghz_est=%.2f\n", isa_name[isa], g1, g2,
           ghz_est);
    return 0;
}

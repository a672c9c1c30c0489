/* fma.h - the FMA loop behind the peak figures, shared by peak.c and bench_train.c.
 *
 * Each core runs a loop of independent fused multiply-adds on registers only (no memory
 * traffic), with enough accumulators to cover the FMA latency times the number of FMA
 * pipes: 12 zmm accumulators for AVX-512 (Zen 4/5: latency 4, 2 pipes -> 8 needed;
 * Intel: latency 4, up to 2 pipes -> 8 needed). Falls back to AVX2 (ymm) or scalar code
 * when the CPU lacks AVX-512. One FMA on a 16-float zmm counts 32 FLOPs.
 *
 * A header of static functions (two small programs include it, no library is worth it).
 */
#ifndef TT_BENCH_FMA_H
#define TT_BENCH_FMA_H

#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FMA_X86 1
#endif

static double fma_now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every kernel runs `iters` iterations of 12 independent FMAs and returns a value that
 * depends on all accumulators, so that the compiler cannot drop the loop. */
#define FMA_ACC 12

#ifdef FMA_X86
__attribute__((target("avx512f,fma"), noinline))
static float fma_loop_avx512(long iters, float seed) {
    __m512 a = _mm512_set1_ps(1.0f + 1e-7f * seed), b = _mm512_set1_ps(1e-8f);
    __m512 c[FMA_ACC];
    for (int i = 0; i < FMA_ACC; i++) c[i] = _mm512_set1_ps((float)i * 1e-3f);
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
    for (int i = 1; i < FMA_ACC; i++) s = _mm512_add_ps(s, c[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"), noinline))
static float fma_loop_avx2(long iters, float seed) {
    __m256 a = _mm256_set1_ps(1.0f + 1e-7f * seed), b = _mm256_set1_ps(1e-8f);
    __m256 c[FMA_ACC];
    for (int i = 0; i < FMA_ACC; i++) c[i] = _mm256_set1_ps((float)i * 1e-3f);
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
    for (int i = 1; i < FMA_ACC; i++) s = _mm256_add_ps(s, c[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif

__attribute__((noinline))
static float fma_loop_scalar(long iters, float seed) {
    float a = 1.0f + 1e-7f * seed, b = 1e-8f, c[FMA_ACC];
    for (int i = 0; i < FMA_ACC; i++) c[i] = (float)i * 1e-3f;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < FMA_ACC; i++) c[i] = c[i] * a + b; /* mul + add: 2 FLOPs */
    float s = 0;
    for (int i = 0; i < FMA_ACC; i++) s += c[i];
    return s;
}

typedef enum { FMA_SCALAR, FMA_AVX2, FMA_AVX512 } fma_isa;
static const char *fma_isa_name[] = {"scalar", "avx2", "avx512"};
static const int fma_isa_lanes[] = {1, 8, 16};

static fma_isa fma_detect_isa(void) {
#ifdef FMA_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return FMA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FMA_AVX2;
#endif
    return FMA_SCALAR;
}

static float fma_run_loop(fma_isa isa, long iters, float seed) {
#ifdef FMA_X86
    if (isa == FMA_AVX512) return fma_loop_avx512(iters, seed);
    if (isa == FMA_AVX2) return fma_loop_avx2(iters, seed);
#endif
    return fma_loop_scalar(iters, seed);
}

static volatile float fma_sink;

/* GFLOP/s of `threads` threads each running `iters` iterations of the loop once. */
static double fma_gflops(fma_isa isa, int threads, long iters) {
    double t0 = fma_now_sec();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        float v = fma_run_loop(isa, iters, (float)omp_get_thread_num());
#pragma omp critical
        fma_sink += v;
    }
#else
    threads = 1;
    fma_sink = fma_run_loop(isa, iters, 1.0f);
#endif
    double dt = fma_now_sec() - t0;
    return (double)threads * (double)iters * FMA_ACC * 2.0 * fma_isa_lanes[isa] / dt * 1e-9;
}

/* Iterations of the loop that take at least `seconds` on one thread, grown from
 * `iters`. */
static long fma_calibrate(fma_isa isa, double seconds, long iters) {
    for (;;) {
        double t0 = fma_now_sec();
        fma_sink = fma_run_loop(isa, iters, 1.0f);
        double dt = fma_now_sec() - t0;
        if (dt >= seconds) return iters;
        double grow = dt > 1e-4 ? 1.2 * seconds / dt : 10.0;
        iters = (long)((double)iters * (grow > 10.0 ? 10.0 : (grow < 1.1 ? 1.1 : grow))) + 1;
    }
}

#endif

/* parallel.c - loops split between OpenMP threads, without OpenMP when one thread does.
 *
 * An OpenMP parallel region costs something even when it runs on one thread (its `if`
 * clause false, or one thread available): libgomp builds a team and, at its end, wakes
 * the team's barrier with a futex system call, about 0.3 us in all on this VM. A training
 * step of the toy model passes about 280 such loops, most of them too small to split, so
 * that was ~0.1 ms of a 1.6 ms step. tt_parallel_for calls the loop body directly in that
 * case and opens a region only when it will really have several threads. */
#include "internal.h"

#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

int tt_loop_threads(size_t work, size_t min_work, long n) {
#ifdef _OPENMP
    /* (inside a parallel region a nested one would get one thread: run serially) */
    if (work < min_work || n < 2 || omp_get_level() != 0) return 1;
    int nt = omp_get_max_threads();
    return (long)nt < n ? nt : (int)n;
#else
    (void)work, (void)min_work, (void)n;
    return 1;
#endif
}

void tt_parallel_for(long n, int nthreads, tt_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (nthreads <= 1 || n < 2) {
        fn(ctx, 0, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
    {
        long long t = omp_get_thread_num(), nt = omp_get_num_threads();
        long begin = (long)(n * t / nt), end = (long)(n * (t + 1) / nt);
        if (begin < end) fn(ctx, begin, end);
    }
#endif
}

int tt_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

typedef struct chunk_job {
    size_t n, chunk;
    tt_chunk_fn fn;
    void *ctx;
} chunk_job;

static void chunk_range(void *p, long c0, long c1) {
    const chunk_job *j = p;
    for (long c = c0; c < c1; c++) {
        size_t off = (size_t)c * j->chunk;
        j->fn(j->ctx, off, j->n - off < j->chunk ? j->n - off : j->chunk);
    }
}

void tt_parallel_chunks(size_t n, size_t chunk, size_t min_work, tt_chunk_fn fn, void *ctx) {
    long nch = (long)((n + chunk - 1) / chunk);
    chunk_job j = {n, chunk, fn, ctx};
    tt_parallel_for(nch, tt_loop_threads(n, min_work, nch), chunk_range, &j);
}

/* The two plain loops several backward passes need. Element-wise: the same bits for any
 * thread count. */
#define ELEM_PAR_MIN ((size_t)1 << 16)
#define ELEM_CHUNK 16384

typedef struct elem_job {
    float *dst;
    const float *src;
    bool add;
} elem_job;

static void elem_chunk(void *ctx, size_t off, size_t len) {
    const elem_job *j = ctx;
    float *restrict d = j->dst + off;
    const float *restrict s = j->src + off;
    if (j->add)
        VEC for (size_t i = 0; i < len; i++) d[i] += s[i];
    else
        memcpy(d, s, len * sizeof(float));
}

void tt_add_into(float *dst, const float *src, size_t n) {
    elem_job j = {dst, src, true};
    tt_parallel_chunks(n, ELEM_CHUNK, ELEM_PAR_MIN, elem_chunk, &j);
}

void tt_copy_into(float *dst, const float *src, size_t n) {
    elem_job j = {dst, src, false};
    tt_parallel_chunks(n, ELEM_CHUNK, ELEM_PAR_MIN, elem_chunk, &j);
}

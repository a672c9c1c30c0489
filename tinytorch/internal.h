/* internal.h - helpers shared by the library's own source files (not installed). */
#ifndef TT_INTERNAL_H
#define TT_INTERNAL_H

#include "autograd.h"
#include "error.h"
#include "ops.h"

#include <stdatomic.h>
#include <string.h>

/* Abort with a message naming the op and the tensors when `cond` is false.
 * Usage: TT_CHECK(cond, src, "add", "shapes %s and %s do not broadcast", d(a), d(b)); */
#define TT_CHECK(cond, src, op, ...)                                  \
    do {                                                              \
        if (!(cond)) tt_error_at((src), (op), __VA_ARGS__);           \
    } while (0)

/* Internal invariant (a tinytorch bug, not a caller error). */
#define TT_ASSERT(cond)                                                                  \
    do {                                                                                 \
        if (!(cond)) tt_error_at((tt_src){__FILE__, __LINE__}, "internal", "%s", #cond); \
    } while (0)

/* Validate that t is a float tensor (not NULL, not int32). */
void tt_check_f32(const tt_tensor *t, tt_src src, const char *op, const char *arg);
/* Validate an int32 tensor (indices, ids, targets). */
void tt_check_i32(const tt_tensor *t, tt_src src, const char *op, const char *arg);
/* Normalise axis (negative counts from the end) or report an error. */
int tt_norm_axis(const tt_tensor *t, int axis, tt_src src, const char *op);
/* A temporary with the same shape as t. */
tt_tensor *tt_tmp_like(const tt_tensor *t);
/* rows x cols view of a tensor along its last axis: rows = size / last, cols = last. */
static inline int tt_last_dim(const tt_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static inline size_t tt_rows(const tt_tensor *t) {
    int c = tt_last_dim(t);
    return c ? t->size / (size_t)c : 0;
}

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* Hot elementwise loops: TT_CLONES compiles a function for AVX-512, AVX2 and the
 * baseline and picks one at load time (gcc on x86-64); VEC asks for a vectorised loop
 * (plain -O2 in gcc 12 does not vectorise loops that need a scalar remainder). Only on
 * elementwise loops, never on reductions, so results do not depend on the choice. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
/* The same for loops of fused multiply-adds (vfma_acc in kernels/vmath.h): "avx2" alone
 * does not include FMA, x86-64-v3 (AVX2 + FMA + BMI, every AVX2 CPU since 2013) does. */
#define TT_CLONES_FMA __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define TT_CLONES
#define TT_CLONES_FMA
#endif
#ifdef _OPENMP
#define VEC _Pragma("omp simd")
#else
#define VEC
#endif

/* Parallel loops (parallel.c). tt_loop_threads: how many threads a loop of n iterations
 * and `work` elements should use: 1 below min_work, with one OpenMP thread, or inside a
 * parallel region; else up to omp_get_max_threads(). tt_parallel_for runs fn(ctx, begin,
 * end) over contiguous ranges covering [0, n), one per thread, entering OpenMP only for
 * nthreads > 1. The loop body must treat iterations independently (each output element
 * written by one iteration): then the result does not depend on the thread count. */
typedef void (*tt_range_fn)(void *ctx, long begin, long end);
int tt_loop_threads(size_t work, size_t min_work, long n);
void tt_parallel_for(long n, int nthreads, tt_range_fn fn, void *ctx);
/* An element-wise loop over [0, n) in chunks of `chunk` elements: fn(ctx, off, len) for
 * each chunk, the chunks split between threads as tt_parallel_for's iterations (threads
 * from min_work elements, tt_loop_threads). */
typedef void (*tt_chunk_fn)(void *ctx, size_t off, size_t len);
void tt_parallel_chunks(size_t n, size_t chunk, size_t min_work, tt_chunk_fn fn, void *ctx);
/* Inside a range function: which of tt_parallel_for's nthreads ranges runs it, 0 ..
 * nthreads - 1 (0 when serial), for per-thread scratch allocated before the call. */
int tt_thread_num(void);

/* A share of work items: the half-open range [lo, hi) of item numbers, which threads
 * take from either end, one compare-and-swap a take (lo and hi packed in one 64-bit
 * word). Used where equal work is not equal time: the threads of a GEMM (gemm.c's claims)
 * and a Linear backward's two products (affine.c). Only the claim passes between the
 * threads (each item has one writer; anything else is ordered by the caller's barriers
 * or the end of its parallel region), hence relaxed order. */
typedef atomic_llong tt_share;

static inline long long tt_share_word(int lo, int hi) {
    return (long long)(unsigned)lo | (long long)((unsigned long long)(unsigned)hi << 32);
}
static inline int tt_share_lo(long long w) { return (int)(w & 0xffffffffLL); }
static inline int tt_share_hi(long long w) { return (int)((unsigned long long)w >> 32); }

static inline void tt_share_set(tt_share *s, int lo, int hi) {
    atomic_store_explicit(s, tt_share_word(lo, hi), memory_order_relaxed);
}

/* Take the first (front) or the last item; -1 if the share is empty. */
static inline int tt_share_take(tt_share *s, bool front) {
    long long w = atomic_load_explicit(s, memory_order_relaxed);
    for (;;) {
        const int lo = tt_share_lo(w), hi = tt_share_hi(w);
        if (lo >= hi) return -1;
        const long long nw = front ? tt_share_word(lo + 1, hi) : tt_share_word(lo, hi - 1);
        if (atomic_compare_exchange_weak_explicit(s, &w, nw, memory_order_relaxed,
                                                  memory_order_relaxed))
            return front ? lo : hi - 1;
    }
}

/* The item tt_share_take would give from that end now (-1: empty); only a guess, as
 * another thread may take it first. */
static inline int tt_share_peek(tt_share *s, bool front) {
    const long long w = atomic_load_explicit(s, memory_order_relaxed);
    if (tt_share_lo(w) >= tt_share_hi(w)) return -1;
    return front ? tt_share_lo(w) : tt_share_hi(w) - 1;
}

/* Small per-thread scratch for tensor descriptions in messages ("'x' [2, 3]"). */
const char *tt_d(const tt_tensor *t);

/* Persistent allocation helpers with overflow checks (abort on out-of-memory). */
void *tt_xmalloc(size_t bytes);
void *tt_xcalloc(size_t n, size_t size);
size_t tt_shape_numel(int ndim, const int *shape, tt_src src, const char *op);

/* A gradient buffer of n floats for a temporary (uninitialised, 64-byte aligned):
 * reuses one released by the backward sweep, else comes from the arena (autograd.c). */
float *tt_arena_grad_alloc(size_t n_floats);
/* Hand a buffer from tt_arena_grad_alloc back for reuse within this step. */
void tt_arena_grad_free(float *p, size_t n_floats);
/* t's next gradient buffer, uninitialised (the caller sets t->grad): the one kept by
 * tt_grad_to_none, else a new one (malloc for a persistent tensor, the arena's free list
 * for a temporary). tt_grad_ensure zeroes it; tt_grad_acc_fresh lets the caller
 * overwrite it. */
float *tt_grad_buffer(tt_tensor *t);
/* tt_grad_acc for a backward that can write its whole contribution in one go: when the
 * gradient buffer is new (*fresh), it is NOT zeroed and the caller must overwrite every
 * element (e.g. a gemm with beta = 0) instead of accumulating. */
float *tt_grad_acc_fresh(tt_tensor *t, bool *fresh);
/* For the backward of an op whose input gradient equals its output gradient (a view,
 * reshape): if the input has no gradient yet and the output's would be released right
 * after this backward, the buffer changes hands instead of being added into zeros, and
 * true is returned; false: the caller accumulates as usual. */
bool tt_grad_pass_through(tt_node *n);
/* Whether n's output gradient is released right after n's backward (a temporary that
 * nobody asked to keep, and not the backward's root): then n's backward may use that
 * buffer as scratch, e.g. mask it in place, instead of writing a copy. */
bool tt_grad_disposable(const tt_node *n);

/* t's gradient += g, g of t's size (an op that passes its output gradient to t
 * unchanged: a view, a same-shape add): a new buffer gets a copy of g (no zeroing
 * pass), an existing one g added. */
void tt_grad_add_same(tt_tensor *t, const float *g);

/* dst[i] += src[i] / dst[i] = src[i] for i < n, split between threads from 2^16
 * elements (parallel.c). */
void tt_add_into(float *dst, const float *src, size_t n);
void tt_copy_into(float *dst, const float *src, size_t n);

/* The elementwise part of a Linear's backward (ops/affine.c), G = dL/dy [M, N]:
 *   relu: gp = G * [y > 0] (gp may be G itself) and, if db, db += column sums of gp;
 *   else: db += column sums of G (nothing if db is NULL).
 * Each column summed over rows in order, for any thread count. */
void tt_affine_grad_pre(const float *g, const float *y, bool relu, float *gp, float *db, int M,
                        int N);

/* Bookkeeping of persistent bytes for tt_mem_get_stats. */
void tt_mem_track(long long bytes, int tensors);

/* The op profiler's hooks (profile.c, called by autograd.c while tt_prof_on):
 * tt_prof_forward when an op records its output (tt_record), tt_prof_backward_begin /
 * tt_prof_backward around a backward sweep's calls, tt_prof_restart at the end of a
 * sweep and at tt_tape_reset (the forward clock starts again). */
extern bool tt_prof_on;
double tt_prof_now(void);
void tt_prof_forward(const char *op, tt_src src, int n_in, tt_tensor *const *in);
void tt_prof_backward_begin(void);
void tt_prof_backward(const tt_node *n, double sec);
void tt_prof_restart(void);

#endif

/* gemm.c - C = alpha * op(A) @ op(B) + beta * C, row-major (see gemm.h).
 *
 * The classic Goto/BLIS scheme. For each column panel jc of C (NC wide) and each slice pc
 * of the shared dimension (KC deep):
 *
 *   pack op(B)[pc:pc+KC, jc:jc+NC] into slivers of NR columns, k-major   (lives in L3)
 *   for each row block ic of C (MC tall):
 *     pack op(A)[ic:ic+MC, pc:pc+KC] into panels of MR rows, k-major    (lives in L2)
 *     for each sliver jr, for each panel ir:                          (sliver in L1)
 *       micro-kernel: an MR x NR tile of C += A-panel @ B-sliver, kept in registers
 *
 * A product of one row block (the MoE experts' few hundred rows) skips the shared
 * panel: the threads claim its B slivers one at a time (their own share first, then
 * what is left of the others'), each packs a sliver just before use and prefetches the
 * next one's source meanwhile (gemm_thread_own).
 *
 * Packing makes both operands contiguous in exactly the order the micro-kernel reads
 * them, so the four transpose combinations differ only in the packing routines. (Small
 * operands already in a usable order are read in place instead: "direct" operands, see
 * gemm_packed.) Ragged edges are zero-padded in the packed buffers; the micro-kernel then
 * computes a full tile and stores only the valid m x n corner (masked stores).
 *
 * Packing reads each operand element once, the micro-kernel reads it MR or NR times from
 * cache, so for the modest sizes of training (K and N of a few hundred) packing is a
 * visible share, all the more as its source usually comes cold from memory. The SIMD
 * kernels therefore pack with vector moves and in-register transposes and prefetch the
 * source ahead, and the micro-kernel prefetches the C tile it will store.
 *
 * Per element of C the arithmetic is: acc = sum over k in the KC slice (in k order, one
 * FMA chain), then C = alpha*acc + beta*C for the first slice and C = alpha*acc + C for
 * the others. That sequence depends only on K and KC (KC itself only on K and ldc, see
 * slice_depth), never on how rows and columns are split into blocks or between threads,
 * which is what makes the result independent of the thread count.
 */
#include "gemm.h"

#include "../internal.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define GEMM_X86 1
#include <immintrin.h>
#define TARGET_AVX512 __attribute__((target("avx512f,fma")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define GEMM_X86 0
#endif

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
/* Where part p of n items cut into `parts` near-equal contiguous parts starts (part
 * p + 1's start is where part p ends): how rows, slivers and work items are shared. */
static inline int part(long long p, int n, int parts) { return (int)(p * n / parts); }

/* A micro-kernel multiplies an MR x kc panel of A (a[k*as + r]) by a kc x NR sliver of B
 * (b[k*bs + j]) and updates the m x n (m <= MR, n <= NR) corner of C:
 *     C = alpha * acc + beta * C      (beta == 0: C = alpha * acc, C not read)
 * then, if bias (the tile's first column's bias), C[r][j] += bias[j], and if relu,
 * C = max(C, 0): the epilogue of the last k slice of tt_gemm_bias. pf_c: prefetch the
 * tile's C lines before the stores (worth it only when C may not be in cache). far (NULL:
 * none): rows of memory to prefetch while the tile runs, a line every few k steps (see
 * far_rows; the portable kernel ignores it).
 * Packed operands have as = MR and bs = NR; the driver also passes operands that are
 * already laid out that way in the caller's matrix with their row stride (see
 * gemm_packed: "direct" operands). All MR x NR values must be readable. */
typedef struct far_rows far_rows;
typedef void (*ukernel_fn)(int kc, const float *a, size_t as, const float *b, size_t bs,
                           float *c, size_t ldc, int m, int n, float alpha, float beta,
                           const float *bias, bool relu, bool pf_c, const far_rows *far);
/* Pack one MR-row panel of op(A) (rows m <= MR, kc columns) / one NR-column sliver of
 * op(B) (kc rows, n <= NR columns). src points at the panel's first element of op(X). */
typedef void (*pack_fn)(bool trans, int mn, int kc, const float *src, size_t ld, float *dst);

typedef struct gemm_kernel {
    const char *name;
    int mr, nr;         /* register tile                                              */
    int mc, kc, nc;     /* cache blocks; mc is a multiple of mr, nc of nr             */
    ukernel_fn ukernel;
    pack_fn pack_a, pack_b;
    /* optional: the micro-kernel reading a full panel of a non-transposed A in place,
     * row r of the panel at a + r * as, step k at + k (see gemm_packed) */
    ukernel_fn ukernel_arows;
    /* optional: micro-kernels of fewer rows, for ragged last panels: short[s] computes
     * short_rows[s] rows (ascending; unused entries NULL / 0); a panel of m rows takes
     * the first that covers m, or the full tile, which would compute mr rows of them */
    ukernel_fn ukernel_short[2];
    int short_rows[2];
    /* optional: the same kernels for a narrower tile (same mr, nr = narrow->nr), for a
     * ragged last sliver of at most narrow->nr columns, which the full tile would compute
     * nr wide: the toy model's head (N = 100 = 3 x 32 + 4) then pays 16 columns for its
     * last 4, not 32. Every column gets the same FMA chain either way, so the same bits. */
    const struct gemm_kernel *narrow;
} gemm_kernel;

/* ---- packing (shared templates, instantiated per tile size) ------------------------ */

/* Panel of MR rows of op(A): dst[k*MR + r] = op(A)[r][k], rows m..MR-1 zero.
 * Not transposed: op(A)[r][k] = src[r*ld + k]; transposed: src[k*ld + r]. */
static ALWAYS_INLINE void pack_a_tpl(const int MR, bool trans, int m, int kc, const float *src,
                                     size_t ld, float *restrict dst) {
    if (trans) {
        for (int k = 0; k < kc; k++) {
            const float *s = src + (size_t)k * ld;
            float *d = dst + (size_t)k * MR;
            if (m == MR)
                for (int r = 0; r < MR; r++) d[r] = s[r];
            else
                for (int r = 0; r < MR; r++) d[r] = r < m ? s[r] : 0.0f;
        }
        return;
    }
    if (m < MR) {
        for (int k = 0; k < kc; k++)
            for (int r = 0; r < MR; r++) dst[(size_t)k * MR + r] = r < m ? src[r * ld + k] : 0.0f;
        return;
    }
    /* rows are contiguous in k: read 8 columns of each row, write 8 k-steps */
    int k = 0;
    for (; k + 8 <= kc; k += 8) {
        for (int r = 0; r < MR; r++) {
            const float *s = src + r * ld + k;
            float *d = dst + (size_t)k * MR + r;
            for (int u = 0; u < 8; u++) d[u * MR] = s[u];
        }
    }
    for (; k < kc; k++)
        for (int r = 0; r < MR; r++) dst[(size_t)k * MR + r] = src[r * ld + k];
}

/* Sliver of NR columns of op(B): dst[k*NR + j] = op(B)[k][j], columns n..NR-1 zero.
 * Not transposed: op(B)[k][j] = src[k*ld + j]; transposed: src[j*ld + k]. */
static ALWAYS_INLINE void pack_b_tpl(const int NR, bool trans, int n, int kc, const float *src,
                                     size_t ld, float *restrict dst) {
    if (!trans) {
        for (int k = 0; k < kc; k++) {
            const float *s = src + (size_t)k * ld;
            float *d = dst + (size_t)k * NR;
            if (n == NR)
                for (int j = 0; j < NR; j++) d[j] = s[j];
            else
                for (int j = 0; j < NR; j++) d[j] = j < n ? s[j] : 0.0f;
        }
        return;
    }
    int k = 0;
    for (; k + 8 <= kc; k += 8) {
        for (int j = 0; j < NR; j++) {
            float *d = dst + (size_t)k * NR + j;
            if (j < n) {
                const float *s = src + j * ld + k;
                for (int u = 0; u < 8; u++) d[u * NR] = s[u];
            } else {
                for (int u = 0; u < 8; u++) d[u * NR] = 0.0f;
            }
        }
    }
    for (; k < kc; k++)
        for (int j = 0; j < NR; j++) dst[(size_t)k * NR + j] = j < n ? src[j * ld + k] : 0.0f;
}

/* ---- prefetching the next B sliver's source during a tile ------------------------------
 * A product of one row block packs each B sliver just before use (gemm_thread_own), and
 * its source - a slice of a weight matrix, mostly - comes cold from memory. So while the
 * tiles of one sliver run, the source of the next is prefetched, 1/n_panels of its rows
 * per tile. The micro-kernel issues those prefetches itself, one 64-byte line every
 * FAR_EVERY k steps (the lines left over when the tile has too few steps, at its end).
 * All of a tile's lines at once before the tile instead (50-60 of them) fill the core's
 * queue of outstanding misses: the prefetches then stall the core about as long as they
 * save the packing. Measured on the Zen 5 of the nineteenth session (in-process ABBA
 * blocks of whole medium steps): spread out, 0.968 of the time of the burst on 2 threads
 * and 0.981 on 1; the burst itself 1.00 of no prefetch at all; toy and small unchanged
 * (0.99-1.02, noise). */
#ifndef FAR_EVERY
#define FAR_EVERY 4
#endif
struct far_rows {
    const char *p;          /* first row                                    */
    size_t ld, row_bytes;   /* row stride and length in bytes               */
    int rows;               /* rows to prefetch (0: none)                   */
};
/* The micro-kernel's position in its far_rows: the next line, the last byte of the
 * current row, rows left (counting the current one; 0: done). Addresses as integers: a
 * row's first line may start before the matrix, which is no C pointer. */
typedef struct far_cursor {
    uintptr_t line, row, row_end;
    size_t ld, row_bytes;
    int left;
} far_cursor;

static ALWAYS_INLINE void far_row(far_cursor *f) { /* point at the current row's first line */
    f->line = f->row & ~(uintptr_t)63;
    f->row_end = f->row + f->row_bytes - 1;
}
static ALWAYS_INLINE far_cursor far_begin(const far_rows *far) {
    far_cursor f = {0, 0, 0, 0, 0, 0};
    if (far && far->rows > 0 && far->row_bytes > 0) {
        f.row = (uintptr_t)far->p, f.ld = far->ld, f.row_bytes = far->row_bytes;
        f.left = far->rows;
        far_row(&f);
    }
    return f;
}
/* Prefetch the next line (the cursor must not be done). Inlined into the kernels: as a
 * function of its own, a prefetch being no side effect GCC knows of, it could be
 * declared const and its calls deleted (GCC 12 did that to this prefetch's first version,
 * a helper prefetch_rows() that was a no-op from the fourth session to the nineteenth). */
static ALWAYS_INLINE void far_next(far_cursor *f) {
#if GEMM_X86
    _mm_prefetch((const char *)f->line, _MM_HINT_T0);
#else
    __builtin_prefetch((const void *)f->line);
#endif
    f->line += 64;
    if (f->line > f->row_end && --f->left > 0) {
        f->row += f->ld;
        far_row(f);
    }
}
static ALWAYS_INLINE void far_finish(far_cursor *f) {
    while (f->left > 0) far_next(f);
}

/* ---- portable micro-kernel (4 x 8: 8 SSE registers of accumulators at -O2) ----------- */
enum { GEN_MR = 4, GEN_NR = 8 };

static void ukernel_generic(int kc, const float *restrict a, size_t as,
                            const float *restrict b, size_t bs, float *restrict c, size_t ldc,
                            int m, int n, float alpha, float beta, const float *bias,
                            bool relu, bool pf_c, const far_rows *far) {
    (void)pf_c, (void)far; /* (no prefetching in the portable kernel) */
    float acc[GEN_MR][GEN_NR] = {{0}};
    for (int k = 0; k < kc; k++, a += as, b += bs)
#pragma GCC unroll 4
        for (int r = 0; r < GEN_MR; r++)
#pragma GCC unroll 8
            for (int j = 0; j < GEN_NR; j++) acc[r][j] += a[r] * b[j];
    for (int r = 0; r < m; r++) {
        float *cr = c + r * ldc;
        for (int j = 0; j < n; j++) {
            float x = alpha * acc[r][j];
            x = beta == 0.0f ? x : x + beta * cr[j];
            if (bias) x = x + bias[j];
            cr[j] = relu && !(x > 0.0f) ? 0.0f : x;
        }
    }
}
static void pack_a_generic(bool t, int m, int kc, const float *s, size_t ld, float *d) {
    pack_a_tpl(GEN_MR, t, m, kc, s, ld, d);
}
static void pack_b_generic(bool t, int n, int kc, const float *s, size_t ld, float *d) {
    pack_b_tpl(GEN_NR, t, n, kc, s, ld, d);
}

#if GEMM_X86
/* ---- AVX-512 micro-kernel: 14 x 32 -------------------------------------------------------
 * 28 zmm accumulators (14 rows x 2 vectors of 16 columns) + 2 for the B row; each A value
 * is broadcast straight from memory into the FMA ({1to16} operand). Per k: 2 loads, 28
 * FMAs, i.e. 14 cycles on two 512-bit FMA pipes. */
#ifndef AVX512_MR
#define AVX512_MR 14
#endif
#ifndef AVX512_NV
#define AVX512_NV 2
#endif
enum { A5_MR = AVX512_MR, A5_NV = AVX512_NV, A5_NR = 16 * AVX512_NV };
/* The short tiles' rows: 8, so that a product of 64 rows (a toy expert's weight
 * gradient) is 4 full panels and one short one with no padding; and 4, for the last
 * 4 rows of 256 (= 18 x 14 + 4: the toy's and every batch x seq = 256k product) and
 * the 1-3 rows left over by many an expert's tokens, which would otherwise cost 8. */
enum { A5_MR_SHORT = 8, A5_MR_SHORT4 = 4 };
/* The micro-kernel prefetches B's row k + A5_PF_B while it multiplies row k. The sliver
 * (KC x 32 floats = 48 KB at KC = 384) does not stay in L1 between the tiles that reuse
 * it, and every tile restarts its stream at row 0, where the hardware prefetcher has to
 * find it again. Measured on the Xeon of the tenth session (in-process ABBA, 1 thread,
 * the medium experts' six products, 8 operand sets rotated): 0.957-0.979 of the time per
 * product with distances 8, 16 or 24 (2-4 % faster; prefetching the A panel too: no
 * further gain); whole medium steps 0.974 and 0.957 (1 thread), 0.970 (2 threads); toy
 * and small steps: 0.98-0.99 and 0.93-1.02 (noise). The last A5_PF_B rows prefetch
 * addresses past the sliver, harmless: a prefetch is a hint and never faults. */
enum { A5_PF_B = 16 };

/* Prefetch the lines of one row of a tile of C, 16 NV floats: 2 or 3 lines (NV = 2), so
 * each vector's start and the row's last float. */
TARGET_AVX512 static ALWAYS_INLINE void prefetch_c_row(const int NV, const float *c) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) _mm_prefetch((const char *)(c + 16 * v), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + 16 * NV - 1), _MM_HINT_T0);
}

/* How a tile is stored (see the end of ukernel_avx512_tpl). */
enum { EPI_STORE, EPI_ADD, EPI_BIAS, EPI_BIAS_RELU, EPI_GENERAL, EPI_GENERAL_RELU };

/* C[r][:] = epilogue(acc[r]) for the m <= MROWS rows of a tile; mask: the valid columns.
 * EPI_GENERAL: x = alpha acc (+ beta C, C read only if beta != 0) (+ bias) (then ReLU). */
TARGET_AVX512 static ALWAYS_INLINE void store_tile_avx512(const int NV, const int MROWS,
                                                          const int EPI,
                                                          __m512 acc[][A5_NV], float *c,
                                                          size_t ldc, int m,
                                                          const __mmask16 *mask, float alpha,
                                                          float beta, const float *bias) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __m512 bv[A5_NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        bv[v] = bias ? _mm512_maskz_loadu_ps(mask[v], bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int r = 0; r < MROWS; r++) {
        if (r >= m) break;
        float *cr = c + r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m512 x = acc[r][v];
            if (EPI == EPI_ADD) {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], cr + 16 * v));
            } else if (EPI == EPI_BIAS || EPI == EPI_BIAS_RELU) {
                x = _mm512_add_ps(x, bv[v]);
            } else if (EPI == EPI_GENERAL || EPI == EPI_GENERAL_RELU) {
                if (beta == 0.0f) {
                    x = _mm512_mul_ps(va, x);
                } else {
                    __m512 old = _mm512_maskz_loadu_ps(mask[v], cr + 16 * v);
                    if (beta != 1.0f) old = _mm512_mul_ps(vb, old);
                    x = _mm512_fmadd_ps(va, x, old);
                }
                if (bias) x = _mm512_add_ps(x, bv[v]);
            }
            if (EPI == EPI_BIAS_RELU || EPI == EPI_GENERAL_RELU) /* NaN -> 0, as x > 0 ? x : 0 */
                x = _mm512_max_ps(x, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(cr + 16 * v, mask[v], x);
        }
    }
}

/* The kernel for NV vectors of 16 columns (NR = 16 NV); instantiated for NV = A5_NV and,
 * for products with at most 16 columns (a router: N = number of experts), NV = 1, which
 * does half the work of a 32-wide tile whose upper half would be padding. The arithmetic
 * of an element is the same in both (one FMA chain over k, then the same epilogue), so
 * the choice never changes a result. */
TARGET_AVX512 static ALWAYS_INLINE void ukernel_avx512_tpl(const int NV, const bool AROWS,
                                                           const int MROWS,
                                                           int kc, const float *restrict a,
                                                           size_t as,
                                                           const float *restrict b, size_t bs,
                                                           float *restrict c, size_t ldc, int m,
                                                           int n, float alpha, float beta,
                                                           const float *bias, bool relu,
                                                           bool pf_c, const far_rows *far) {
    __m512 acc[A5_MR][A5_NV];
#pragma GCC unroll 16
    for (int r = 0; r < MROWS; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    /* pf_c: the tile's rows of C are prefetched for the stores at the end (C is often
     * fresh, in no cache; pf_c is false for a C small enough to stay in cache, where this
     * is just overhead): one row every FAR_EVERY k steps, half a period after the far
     * rows' line, the rows the k loop has no room for after it. All of them before the
     * k loop instead (28 lines for 14 rows): the miss queue fills as with far_rows' burst
     * (nineteenth session, in-process ABBA blocks of whole steps: spread, 0.965 of the
     * burst's time for medium on 2 threads, 0.969 on 1; small 0.951 and 0.976; toy 1.00). */
    int c_row = pf_c ? 0 : m;
    /* AROWS: row r of the panel starts at a + r * as and its steps are consecutive */
    const float *ap[A5_MR];
#pragma GCC unroll 16
    for (int r = 0; r < MROWS; r++) ap[r] = AROWS ? a + r * as : a + r;
    far_cursor fc = far_begin(far);
    for (int k = 0; k < kc; k++) {
        if (fc.left > 0 && k % FAR_EVERY == 0) far_next(&fc);
        if (c_row < m && k % FAR_EVERY == FAR_EVERY / 2) prefetch_c_row(NV, c + c_row++ * ldc);
        if (AROWS && (k & 15) < MROWS) {
            /* 14 row streams, one new cache line each per 16 steps: more streams than the
             * hardware prefetchers follow when A comes from memory, so fetch ahead, one
             * row a step (steps 16i + r fetch row r's line 4 ahead). All 14 at step 16i
             * instead: 1.6-2.2% slower products (tenth session, ABBA, 1 thread, 1024 x
             * 256 x 256 and 256 x 1024 x 256; a control of the same build: 1.00). */
            _mm_prefetch((const char *)((uintptr_t)(ap[k & 15] + k) + 64 * sizeof(float)),
                         _MM_HINT_T0);
        }
        /* (integer arithmetic: the address may lie past the operand, not a C pointer) */
        const uintptr_t pf = (uintptr_t)b + (A5_PF_B * bs) * sizeof(float);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            _mm_prefetch((const char *)(pf + 64 * (uintptr_t)v), _MM_HINT_T0);
        __m512 bv[A5_NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 16
        for (int r = 0; r < MROWS; r++) {
            __m512 ar = _mm512_set1_ps(AROWS ? ap[r][k] : a[r]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
        }
        if (!AROWS) a += as;
        b += bs;
    }
    far_finish(&fc);
    while (c_row < m) prefetch_c_row(NV, c + c_row++ * ldc);

    /* The store, specialised for the common cases (alpha 1; beta 0 or 1; the bias, with
     * or without ReLU): a branch per case here instead of four per vector stored (-O2
     * does not unswitch the fully unrolled loop). Each case does the general case's
     * arithmetic minus its identities (1 * x, x + 0 * C), so the bits are the same. */
    __mmask16 mask[A5_NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        int rem = n - 16 * v;
        mask[v] = rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? 0 : (__mmask16)((1u << rem) - 1);
    }
    if (alpha == 1.0f && !relu && beta == 0.0f && !bias)
        store_tile_avx512(NV, MROWS, EPI_STORE, acc, c, ldc, m, mask, alpha, beta, bias);
    else if (alpha == 1.0f && !relu && beta == 1.0f && !bias)
        store_tile_avx512(NV, MROWS, EPI_ADD, acc, c, ldc, m, mask, alpha, beta, bias);
    else if (alpha == 1.0f && beta == 0.0f && bias && !relu)
        store_tile_avx512(NV, MROWS, EPI_BIAS, acc, c, ldc, m, mask, alpha, beta, bias);
    else if (alpha == 1.0f && beta == 0.0f && bias && relu)
        store_tile_avx512(NV, MROWS, EPI_BIAS_RELU, acc, c, ldc, m, mask, alpha, beta, bias);
    else
        store_tile_avx512(NV, MROWS, relu ? EPI_GENERAL_RELU : EPI_GENERAL, acc, c, ldc, m,
                          mask, alpha, beta, bias);
}

/* The instances: 32 or 16 columns (NV = 2, 1), A packed or read in place (AROWS), and
 * all 14 rows or the first 8 or 4 ("short", "short4", packed A: a ragged last panel of
 * at most that many rows, of which the full tile would compute 14; each row computed
 * gets the same arithmetic, so the choice never changes a result). */
TARGET_AVX512 static void ukernel_avx512(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(A5_NV, false, A5_MR, kc, a, as, b, bs, c, ldc, m, n, alpha, beta, bias,
                       relu, pf_c, far);
}
TARGET_AVX512 static void ukernel_avx512_arows(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(A5_NV, true, A5_MR, kc, a, as, b, bs, c, ldc, m, n, alpha, beta, bias,
                       relu, pf_c, far);
}
TARGET_AVX512 static void ukernel_avx512_n16(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(1, false, A5_MR, kc, a, as, b, bs, c, ldc, m, n, alpha, beta, bias,
                       relu, pf_c, far);
}
TARGET_AVX512 static void ukernel_avx512_n16_arows(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(1, true, A5_MR, kc, a, as, b, bs, c, ldc, m, n, alpha, beta, bias,
                       relu, pf_c, far);
}
TARGET_AVX512 static void ukernel_avx512_short(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(A5_NV, false, A5_MR_SHORT, kc, a, as, b, bs, c, ldc, m, n, alpha, beta,
                       bias, relu, pf_c, far);
}
TARGET_AVX512 static void ukernel_avx512_n16_short(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(1, false, A5_MR_SHORT, kc, a, as, b, bs, c, ldc, m, n, alpha, beta,
                       bias, relu, pf_c, far);
}
TARGET_AVX512 static void ukernel_avx512_short4(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(A5_NV, false, A5_MR_SHORT4, kc, a, as, b, bs, c, ldc, m, n, alpha,
                       beta, bias, relu, pf_c, far);
}
TARGET_AVX512 static void ukernel_avx512_n16_short4(int kc, const float *restrict a, size_t as,
        const float *restrict b, size_t bs, float *restrict c, size_t ldc, int m, int n,
        float alpha, float beta, const float *bias, bool relu, bool pf_c,
        const far_rows *far) {
    ukernel_avx512_tpl(1, false, A5_MR_SHORT4, kc, a, as, b, bs, c, ldc, m, n, alpha, beta,
                       bias, relu, pf_c, far);
}
/* B slivers of 16 columns for ukernel_avx512_n16: B is then at most K x 16 floats, too
 * small for its packing to matter, so the portable template does it. */
TARGET_AVX512 static void pack_b_avx512_n16(bool t, int n, int kc, const float *s, size_t ld,
                                            float *d) {
    pack_b_tpl(16, t, n, kc, s, ld, d);
}

/* Packing with AVX-512. Packing only moves floats, so these produce exactly the bytes
 * of pack_a_tpl / pack_b_tpl; they just avoid scalar element moves (and the 56- and
 * 128-byte memcpy calls the compiler made of the contiguous row copies).
 *
 * A 16 x 16 block of floats is transposed in registers in four rounds of 16 shuffles
 * (log2 16 = 4 rounds, each halving the distance between the elements it pairs up):
 *   1. unpacklo/hi of rows 2i, 2i+1 interleave 1-float pieces: in every 128-bit lane
 *      a[2i] = (r0[c], r1[c], r0[c+1], r1[c+1]) for the lane's columns c, c+1;
 *   2. shuffle_ps pairs 2-float pieces of a[4i..4i+3]: lane l of b[4i+c] then holds
 *      rows 4i..4i+3 of column 4l+c (a 4 x 4 transpose inside each lane);
 *   3./4. shuffle_f32x4 moves whole lanes: column 4l+c needs lane l of b[c], b[4+c],
 *      b[8+c], b[12+c]; first pick lanes {0,2} / {1,3} of pairs, then the same again.
 * On exit t[c] = column c of the input = (r0[c], r1[c], ..., r15[c]). */
TARGET_AVX512 static ALWAYS_INLINE void transpose16_avx512(const __m512 r[16], __m512 t[16]) {
    __m512 a[16], b[16], c[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        b[4 * i + 0] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0x44);
        b[4 * i + 1] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0xEE);
        b[4 * i + 2] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0x44);
        b[4 * i + 3] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0xEE);
    }
    /* c[4*h + q]: for column offset q, lanes {0,2} (h=0,2) or {1,3} (h=1,3) of rows
     * 0..7 (h=0,1) or 8..15 (h=2,3) */
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        c[q] = _mm512_shuffle_f32x4(b[q], b[4 + q], 0x88);
        c[4 + q] = _mm512_shuffle_f32x4(b[q], b[4 + q], 0xDD);
        c[8 + q] = _mm512_shuffle_f32x4(b[8 + q], b[12 + q], 0x88);
        c[12 + q] = _mm512_shuffle_f32x4(b[8 + q], b[12 + q], 0xDD);
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        t[q] = _mm512_shuffle_f32x4(c[q], c[8 + q], 0x88);      /* lane 0 */
        t[8 + q] = _mm512_shuffle_f32x4(c[q], c[8 + q], 0xDD);  /* lane 2 */
        t[4 + q] = _mm512_shuffle_f32x4(c[4 + q], c[12 + q], 0x88);  /* lane 1 */
        t[12 + q] = _mm512_shuffle_f32x4(c[4 + q], c[12 + q], 0xDD); /* lane 3 */
    }
}

/* Software prefetch in the packing loops: the source of a packing is usually cold (an
 * activation or weight last touched by another op), and a packing routine follows 14-32
 * streams at once (one per row of a panel / sliver), more than the hardware prefetchers
 * keep up with. Prefetching is only a hint: addresses past the matrix do not fault. The
 * distance covers roughly a memory latency of packing work: PF_COLS floats ahead along a
 * row, PF_ROWS rows ahead down a column of rows. */
#ifndef PF_COLS
#define PF_COLS 64
#endif
#ifndef PF_ROWS
#define PF_ROWS 16
#endif
#define PACK_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)

static inline __mmask16 mask16(int n) { /* the low n of 16 lanes, 0 <= n <= 16 */
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

/* The transposing step of both AVX-512 packers (A not transposed, B transposed): rows
 * i < rows of src (row stride ld; 16 consecutive k from src, the first kr of them valid)
 * become kr steps of dst, step u at dst + u * stride, written in the lanes of smask;
 * rows >= rows read as 0:   dst[u * stride + i] = src[i * ld + u]. */
TARGET_AVX512 static ALWAYS_INLINE void transpose_rows16_avx512(const float *src, size_t ld,
                                                                int rows, int kr, float *dst,
                                                                size_t stride, __mmask16 smask) {
    __m512 r[16], t[16];
    const __mmask16 km = mask16(kr);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        if (i < rows) PACK_PREFETCH(src + (size_t)i * ld + PF_COLS);
        r[i] = i < rows ? _mm512_maskz_loadu_ps(km, src + (size_t)i * ld) : _mm512_setzero_ps();
    }
    transpose16_avx512(r, t);
    if (kr == 16) {
#pragma GCC unroll 16
        for (int u = 0; u < 16; u++) _mm512_mask_storeu_ps(dst + (size_t)u * stride, smask, t[u]);
    } else {
        for (int u = 0; u < kr; u++) _mm512_mask_storeu_ps(dst + (size_t)u * stride, smask, t[u]);
    }
}

/* Panel of 14 rows of op(A): dst[k*14 + r] = op(A)[r][k], rows m..13 zero.
 *   transposed (op(A)[r][k] = src[k*ld + r]): the 14 values of step k are contiguous:
 *     one masked load (lanes >= m read nothing and give 0) and one 14-lane store;
 *   not transposed (src[r*ld + k]): rows are contiguous in k; 16 k of the 14 rows (plus
 *     2 zero rows) are one 16 x 16 transpose whose column k' is the 14-float step k+k'.
 *     A ragged end of k (kc % 16) loads fewer lanes and stores fewer steps. */
TARGET_AVX512 static void pack_a_avx512(bool trans, int m, int kc, const float *src, size_t ld,
                                        float *restrict dst) {
    const __mmask16 m14 = mask16(A5_MR);
    if (trans) {
        const __mmask16 lm = mask16(m);
        int k = 0;
        for (; k + 4 <= kc; k += 4) {
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) {
                const float *s = src + (size_t)(k + u) * ld;
                PACK_PREFETCH(s + PF_ROWS * ld);
                PACK_PREFETCH(s + PF_ROWS * ld + A5_MR - 1);
                _mm512_mask_storeu_ps(dst + (size_t)(k + u) * A5_MR, m14,
                                      _mm512_maskz_loadu_ps(lm, s));
            }
        }
        for (; k < kc; k++)
            _mm512_mask_storeu_ps(dst + (size_t)k * A5_MR, m14,
                                  _mm512_maskz_loadu_ps(lm, src + (size_t)k * ld));
        return;
    }
    for (int k = 0; k < kc; k += 16)
        transpose_rows16_avx512(src + k, ld, m, imin(16, kc - k), dst + (size_t)k * A5_MR, A5_MR,
                                m14);
}

/* Sliver of 32 columns of op(B): dst[k*32 + j] = op(B)[k][j], columns n..31 zero.
 *   not transposed (src[k*ld + j]): step k is 32 contiguous floats, two (masked) loads
 *     and two aligned stores;
 *   transposed (src[j*ld + k]): column j of op(B) is row j of src, contiguous in k; 16 k
 *     of columns 16h..16h+15 are one 16 x 16 transpose whose column k' is the half-row
 *     dst[(k+k')*32 + 16h ..]. */
TARGET_AVX512 static void pack_b_avx512(bool trans, int n, int kc, const float *src, size_t ld,
                                        float *restrict dst) {
    if (!trans) {
        if (n == A5_NR) {
            int k = 0;
            for (; k + 2 <= kc; k += 2) {
                const float *s0 = src + (size_t)k * ld, *s1 = s0 + ld;
                float *d = dst + (size_t)k * A5_NR;
                PACK_PREFETCH(s0 + PF_ROWS * ld);
                PACK_PREFETCH(s0 + PF_ROWS * ld + A5_NR - 1);
                PACK_PREFETCH(s1 + PF_ROWS * ld);
                PACK_PREFETCH(s1 + PF_ROWS * ld + A5_NR - 1);
                __m512 x0 = _mm512_loadu_ps(s0), x1 = _mm512_loadu_ps(s0 + 16);
                __m512 y0 = _mm512_loadu_ps(s1), y1 = _mm512_loadu_ps(s1 + 16);
                _mm512_store_ps(d, x0);
                _mm512_store_ps(d + 16, x1);
                _mm512_store_ps(d + 32, y0);
                _mm512_store_ps(d + 48, y1);
            }
            if (k < kc) {
                const float *s0 = src + (size_t)k * ld;
                float *d = dst + (size_t)k * A5_NR;
                _mm512_store_ps(d, _mm512_loadu_ps(s0));
                _mm512_store_ps(d + 16, _mm512_loadu_ps(s0 + 16));
            }
        } else {
            const __mmask16 m0 = mask16(n), m1 = mask16(n > 16 ? n - 16 : 0);
            for (int k = 0; k < kc; k++) {
                const float *s0 = src + (size_t)k * ld;
                float *d = dst + (size_t)k * A5_NR;
                _mm512_store_ps(d, _mm512_maskz_loadu_ps(m0, s0));
                _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(m1, s0 + 16));
            }
        }
        return;
    }
    for (int k = 0; k < kc; k += 16) {
        int kr = imin(16, kc - k);
        for (int j0 = 0; j0 < A5_NR; j0 += 16) {
            float *d = dst + (size_t)k * A5_NR + j0;
            if (j0 >= n) { /* an all-zero half */
                for (int u = 0; u < kr; u++) _mm512_store_ps(d + u * A5_NR, _mm512_setzero_ps());
                continue;
            }
            transpose_rows16_avx512(src + (size_t)j0 * ld + k, ld, n - j0, kr, d, A5_NR,
                                    (__mmask16)0xFFFF);
        }
    }
}

/* ---- AVX2 micro-kernel: 6 x 16 (12 ymm accumulators) ------------------------------------ */
enum { A2_MR = 6, A2_NR = 16 };

TARGET_AVX2 static void ukernel_avx2(int kc, const float *restrict a, size_t as,
                                     const float *restrict b, size_t bs, float *restrict c,
                                     size_t ldc, int m, int n, float alpha, float beta,
                                     const float *bias, bool relu, bool pf_c,
                                     const far_rows *far) {
    __m256 acc[A2_MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < A2_MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    if (pf_c) { /* the tile's C lines, ready for the final stores */
#pragma GCC unroll 8
        for (int r = 0; r < A2_MR; r++) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + r * ldc + A2_NR - 1), _MM_HINT_T0);
        }
    }
    far_cursor fc = far_begin(far);
    for (int k = 0; k < kc; k++) {
        if (fc.left > 0 && k % FAR_EVERY == 0) far_next(&fc);
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 8
        for (int r = 0; r < A2_MR; r++) {
            __m256 ar = _mm256_broadcast_ss(a + r);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
        a += as;
        b += bs;
    }
    far_finish(&fc);
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (m == A2_MR && n == A2_NR) {
#pragma GCC unroll 8
        for (int r = 0; r < A2_MR; r++) {
            float *cr = c + r * ldc;
            for (int v = 0; v < 2; v++) {
                __m256 x;
                if (beta == 0.0f) {
                    x = _mm256_mul_ps(va, acc[r][v]);
                } else {
                    __m256 old = _mm256_loadu_ps(cr + 8 * v);
                    if (beta != 1.0f) old = _mm256_mul_ps(vb, old);
                    x = _mm256_fmadd_ps(va, acc[r][v], old);
                }
                if (bias) x = _mm256_add_ps(x, _mm256_loadu_ps(bias + 8 * v));
                if (relu) x = _mm256_max_ps(x, _mm256_setzero_ps());
                _mm256_storeu_ps(cr + 8 * v, x);
            }
        }
        return;
    }
    /* ragged tile: the same operations one float at a time (fmaf is the same single
     * rounding as the vector FMA, so edge elements match interior ones bit for bit) */
    float t[A2_MR][A2_NR];
#pragma GCC unroll 8
    for (int r = 0; r < A2_MR; r++) {
        _mm256_storeu_ps(t[r], acc[r][0]);
        _mm256_storeu_ps(t[r] + 8, acc[r][1]);
    }
    for (int r = 0; r < m; r++) {
        float *cr = c + r * ldc;
        for (int j = 0; j < n; j++) {
            float x;
            if (beta == 0.0f)
                x = alpha * t[r][j];
            else
                x = fmaf(alpha, t[r][j], beta == 1.0f ? cr[j] : beta * cr[j]);
            if (bias) x = x + bias[j];
            cr[j] = relu && !(x > 0.0f) ? 0.0f : x;
        }
    }
}

/* Packing with AVX2, the same bytes as pack_a_tpl / pack_b_tpl (see the AVX-512 ones).
 * An 8 x 8 transpose in three rounds of 8 shuffles: unpacklo/hi pair rows 2i, 2i+1;
 * shuffle_ps makes 4 x 4 transposes inside each 128-bit lane (lane l of u[c] = rows 0..3
 * of column 4l+c, u[4+c] the same for rows 4..7); permute2f128 joins the low lanes
 * (columns 0..3) and the high lanes (columns 4..7). On exit t[c] = column c. */
TARGET_AVX2 static ALWAYS_INLINE void transpose8_avx2(const __m256 r[8], __m256 t[8]) {
    __m256 a[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        a[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        u[4 * h + 0] = _mm256_shuffle_ps(a[4 * h], a[4 * h + 2], 0x44);
        u[4 * h + 1] = _mm256_shuffle_ps(a[4 * h], a[4 * h + 2], 0xEE);
        u[4 * h + 2] = _mm256_shuffle_ps(a[4 * h + 1], a[4 * h + 3], 0x44);
        u[4 * h + 3] = _mm256_shuffle_ps(a[4 * h + 1], a[4 * h + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        t[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        t[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

/* lanes < n set (all ones), for maskload: reads only those lanes, never faults on others */
TARGET_AVX2 static inline __m256i lanes8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* 6-row panel of op(A). Transposed: step k is 6 contiguous floats (a 4- and a 2-float
 * move). Not transposed: 8 k of the 6 rows (plus 2 zero rows) are an 8 x 8 transpose
 * whose column k' (first 6 floats) is step k+k'. Ragged panels (m < 6, one per block at
 * most) take the portable template. */
TARGET_AVX2 static void pack_a_avx2(bool trans, int m, int kc, const float *src, size_t ld,
                                    float *restrict dst) {
    if (m < A2_MR) {
        pack_a_tpl(A2_MR, trans, m, kc, src, ld, dst);
        return;
    }
    if (trans) {
        for (int k = 0; k < kc; k++) {
            const float *s = src + (size_t)k * ld;
            float *d = dst + (size_t)k * A2_MR;
            PACK_PREFETCH(s + PF_ROWS * ld);
            PACK_PREFETCH(s + PF_ROWS * ld + A2_MR - 1);
            _mm_storeu_ps(d, _mm_loadu_ps(s));
            _mm_storel_pi((__m64 *)(d + 4), _mm_loadl_pi(_mm_setzero_ps(), (const __m64 *)(s + 4)));
        }
        return;
    }
    __m256 r[8], t[8];
    r[6] = r[7] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k += 8) {
        int kr = imin(8, kc - k);
        __m256i km = lanes8(kr);
#pragma GCC unroll 6
        for (int i = 0; i < A2_MR; i++) {
            PACK_PREFETCH(src + (size_t)i * ld + k + PF_COLS);
            r[i] = kr == 8 ? _mm256_loadu_ps(src + (size_t)i * ld + k)
                           : _mm256_maskload_ps(src + (size_t)i * ld + k, km);
        }
        transpose8_avx2(r, t);
        float *d = dst + (size_t)k * A2_MR;
        for (int u = 0; u < kr; u++) {
            _mm_storeu_ps(d + u * A2_MR, _mm256_castps256_ps128(t[u]));
            _mm_storel_pi((__m64 *)(d + u * A2_MR + 4), _mm256_extractf128_ps(t[u], 1));
        }
    }
}

/* 16-column sliver of op(B). Not transposed: step k is 16 contiguous floats, two loads
 * and two aligned stores (ragged slivers: the template). Transposed: 8 k of columns
 * 8h..8h+7 (rows of src) are an 8 x 8 transpose whose column k' is dst[(k+k')*16 + 8h..]. */
TARGET_AVX2 static void pack_b_avx2(bool trans, int n, int kc, const float *src, size_t ld,
                                    float *restrict dst) {
    if (!trans) {
        if (n < A2_NR) {
            pack_b_tpl(A2_NR, trans, n, kc, src, ld, dst);
            return;
        }
        for (int k = 0; k < kc; k++) {
            const float *s = src + (size_t)k * ld;
            float *d = dst + (size_t)k * A2_NR;
            PACK_PREFETCH(s + PF_ROWS * ld);
            PACK_PREFETCH(s + PF_ROWS * ld + A2_NR - 1);
            _mm256_store_ps(d, _mm256_loadu_ps(s));
            _mm256_store_ps(d + 8, _mm256_loadu_ps(s + 8));
        }
        return;
    }
    __m256 r[8], t[8];
    for (int k = 0; k < kc; k += 8) {
        int kr = imin(8, kc - k);
        __m256i km = lanes8(kr);
        for (int h = 0; h < 2; h++) {
            int j0 = 8 * h;
            for (int i = 0; i < 8; i++) {
                const float *s = src + (size_t)(j0 + i) * ld + k;
                if (j0 + i >= n) {
                    r[i] = _mm256_setzero_ps();
                    continue;
                }
                PACK_PREFETCH(s + PF_COLS);
                r[i] = kr == 8 ? _mm256_loadu_ps(s) : _mm256_maskload_ps(s, km);
            }
            transpose8_avx2(r, t);
            float *d = dst + (size_t)k * A2_NR + j0;
            for (int u = 0; u < kr; u++) _mm256_store_ps(d + u * A2_NR, t[u]);
        }
    }
}
#endif /* GEMM_X86 */

/* ---- kernel table and selection ----------------------------------------------------------- */
#ifndef AVX512_MC
#define AVX512_MC (A5_MR * 36) /* A block 504 x 384 floats = 774 KB of a 1 MB L2 */
#endif
#ifndef AVX512_KC
#define AVX512_KC 384 /* B sliver 384 x 32 floats = 48 KB */
#endif
#ifndef AVX512_NC
#define AVX512_NC 4096 /* B panel 384 x 4096 floats = 6 MB of L3 */
#endif

#if GEMM_X86
/* The AVX-512 kernel for N <= 16 (see ukernel_avx512_tpl); one sliver covers N;
 * also the narrow tile of the 32-wide kernel's ragged slivers. */
static const gemm_kernel g_avx512_n16 = {"avx512", A5_MR, 16, AVX512_MC, AVX512_KC, 16,
                                         ukernel_avx512_n16, pack_a_avx512, pack_b_avx512_n16,
                                         ukernel_avx512_n16_arows,
                                         {ukernel_avx512_n16_short4, ukernel_avx512_n16_short},
                                         {A5_MR_SHORT4, A5_MR_SHORT}, NULL};
#endif

enum { K_GENERIC, K_AVX2, K_AVX512, K_COUNT };
static const gemm_kernel g_kernels[K_COUNT] = {
    [K_GENERIC] = {"generic", GEN_MR, GEN_NR, GEN_MR * 32, 256, 2048, ukernel_generic,
                   pack_a_generic, pack_b_generic, NULL, {NULL}, {0}, NULL},
#if GEMM_X86
    [K_AVX2] = {"avx2", A2_MR, A2_NR, A2_MR * 24, 256, 2048, ukernel_avx2, pack_a_avx2,
                pack_b_avx2, NULL, {NULL}, {0}, NULL},
    [K_AVX512] = {"avx512", A5_MR, A5_NR, AVX512_MC, AVX512_KC, AVX512_NC, ukernel_avx512,
                  pack_a_avx512, pack_b_avx512, ukernel_avx512_arows,
                  {ukernel_avx512_short4, ukernel_avx512_short}, {A5_MR_SHORT4, A5_MR_SHORT},
                  &g_avx512_n16},
#endif
};

static bool kernel_supported(int k) {
    if (k == K_GENERIC) return true;
#if GEMM_X86
    __builtin_cpu_init();
    if (k == K_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (k == K_AVX512) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
#endif
    return false;
}

static int kernel_by_name(const char *name) {
    for (int k = 0; k < K_COUNT; k++)
        if (g_kernels[k].name && strcmp(name, g_kernels[k].name) == 0) return k;
    return -1;
}

static int best_kernel(void) {
    for (int k = K_COUNT - 1; k > 0; k--)
        if (kernel_supported(k)) return k;
    return K_GENERIC;
}

static atomic_int g_kernel = -1; /* index into g_kernels; -1 until the first call */

static int current_kernel(void) {
    int k = atomic_load_explicit(&g_kernel, memory_order_relaxed);
    if (k >= 0) return k;
    k = best_kernel();
    const char *env = getenv("TT_GEMM");
    if (env && *env && strcmp(env, "auto") != 0) {
        int want = kernel_by_name(env);
        if (want >= 0 && kernel_supported(want)) k = want;
    }
    atomic_store_explicit(&g_kernel, k, memory_order_relaxed);
    return k;
}

const char *tt_gemm_kernel(void) { return g_kernels[current_kernel()].name; }

bool tt_gemm_set_kernel(const char *name) {
    if (!name) { /* back to the default: TT_GEMM is read again at the next call */
        atomic_store_explicit(&g_kernel, -1, memory_order_relaxed);
        return true;
    }
    int k = strcmp(name, "auto") == 0 ? best_kernel() : kernel_by_name(name);
    if (k < 0 || !kernel_supported(k)) return false;
    atomic_store_explicit(&g_kernel, k, memory_order_relaxed);
    return true;
}

/* ---- pack buffers: thread-local, grown on demand, kept for the next call ----------------
 * A thread that ends frees its buffers (the destructor of a C11 thread-specific key):
 * libgomp ends the surplus threads of its pool when a team is smaller than the last one,
 * e.g. after omp_set_num_threads(5) and then 2. (The main thread's live until exit.) */
typedef struct pack_buf {
    float *p;
    size_t n; /* floats */
} pack_buf;
typedef struct pack_bufs {
    pack_buf a, b, sliver;
    pack_buf tr; /* C transposed, for products of few columns (gemm_few_columns) */
} pack_bufs;
static _Thread_local pack_bufs tls_pack;
static tss_t g_pack_key;
static bool g_pack_key_ok;
static once_flag g_pack_key_once = ONCE_FLAG_INIT;

static void pack_bufs_free(void *p) {
    pack_bufs *t = p;
    free(t->a.p);
    free(t->b.p);
    free(t->sliver.p);
    free(t->tr.p);
    memset(t, 0, sizeof *t);
}

static void pack_key_create(void) {
    g_pack_key_ok = tss_create(&g_pack_key, pack_bufs_free) == thrd_success;
}

static float *pack_buf_get(pack_buf *b, size_t n) {
    if (b->n < n) {
        /* (the first allocation of this thread registers its buffers for the destructor) */
        call_once(&g_pack_key_once, pack_key_create);
        if (g_pack_key_ok && !tss_get(g_pack_key)) tss_set(g_pack_key, &tls_pack);
        free(b->p);
        b->p = tt_xmalloc(n * sizeof(float)); /* 64-byte aligned */
        b->n = n;
    }
    return b->p;
}

/* ---- the blocked driver -------------------------------------------------------------------- */
static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Pointer to element (i, k) of op(X) where X is stored with row stride ld. */
static inline const float *op_at(const float *X, bool trans, size_t ld, int i, int k) {
    return trans ? X + (size_t)k * ld + i : X + (size_t)i * ld + k;
}

/* A barrier for the two phases of the parallel driver (B packed / B consumed), which
 * runs several per product. libgomp's barrier puts waiting threads to sleep on a futex
 * under OMP_WAIT_POLICY=PASSIVE (tens of microseconds a wake-up on a VM, thousands per
 * training step); the threads of one product are all busy and arrive within
 * microseconds of each other, so they spin instead, yielding the CPU only after a
 * long wait (an oversubscribed machine). Sense-reversing: count and generation. */
typedef struct spin_barrier {
    atomic_int count, gen;
} spin_barrier;

static void spin_barrier_wait(spin_barrier *b, int n) {
    if (n <= 1) return;
    int g = atomic_load_explicit(&b->gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == n - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_store_explicit(&b->gen, g + 1, memory_order_release);
        return;
    }
    for (long spins = 0; atomic_load_explicit(&b->gen, memory_order_acquire) == g; spins++) {
        if (spins < (1L << 11)) {
#if GEMM_X86
            _mm_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* Sharing out a product's work items: the column slivers of a product of one row block
 * (gemm_thread_own), the (row block, column split) items of a larger one (gemm_thread).
 * Each thread owns a contiguous share of the items (a tt_share, internal.h), as a static
 * split would give it, and takes them from the front; once its share is done it takes
 * from the back of the other threads' shares. Threads that keep pace with each other
 * never meet, and do exactly what a static split does; a thread whose core the host takes
 * away for a while (this VM's normal), or whose slivers run slower, is helped out
 * instead of waited for. */
#define CLAIM_MAX_THREADS 64 /* (gemm_packed uses at most this many threads) */

/* n items in `shares` shares, as a static split would cut them. */
static void claim_reset_all(tt_share *sh, int n, int shares) {
    for (int t = 0; t < shares; t++)
        tt_share_set(&sh[t], part(t, n, shares), part(t + 1, n, shares));
}

/* The next item for thread t: its own share's (share t) first, else the last of another
 * of the n shares. (A team of fewer than n threads leaves shares without an owner; they
 * are taken from the back.) */
static int claim_next(tt_share *sh, int t, int n) {
    for (int d = 0; d < n; d++) {
        const int item = tt_share_take(&sh[(t + d) % n], d == 0);
        if (item >= 0) return item;
    }
    return -1;
}

/* The item claim_next would most likely give thread t next (-1: none left): only a guess,
 * for prefetching, as another thread may take it first. */
static int claim_peek(tt_share *sh, int t, int n) {
    for (int d = 0; d < n; d++) {
        const int item = tt_share_peek(&sh[(t + d) % n], d == 0);
        if (item >= 0) return item;
    }
    return -1;
}

/* C of more than this many bytes is prefetched tile by tile before the stores (a smaller
 * one is in cache: written by the previous op or allocated from recycled arena memory) */
#ifndef PF_C_MIN_BYTES
#define PF_C_MIN_BYTES ((size_t)256 << 10)
#endif
#ifndef DIRECT_MAX_BYTES
#define DIRECT_MAX_BYTES ((size_t)1 << 20)
#endif
/* Rows at most this many floats apart. Not 512, on the Xeon of the ninth session (1 thread,
 * in-process ABBA, 16 operand sets rotated): with rows 2 KB apart, packing was faster -
 * packed / in place 0.77-0.85 for B = x [256-384, 512] (an expert's first-layer dW), 0.82-0.87
 * for B = W [512 or 128, 512] (the medium attention projections' dx), 0.88-0.91 for a
 * transposed A [280, 512], 0.97 for A [280, 512] read by rows, 0.80-0.93 at 384 floats
 * (a likely cause: a sliver's rows, 2 KB apart, fall into 4 of L1's 64 sets, so it cannot
 * stay in L1 while the row tiles reuse it). Whole medium steps, 1 thread: 0.955-0.991 in
 * three runs. At 256 floats the products of 256 KB also ran faster packed (0.81-0.85), but
 * the toy model's whole step, whose in-place operands of 256-float rows are 128 KB, ran
 * 4.7% slower with a limit of 128 (the small model's 3.7% faster: not adopted). */
#ifndef DIRECT_MAX_LD
#define DIRECT_MAX_LD 256
#endif
/* The splits of a Linear's backward pair (ops/affine.c) were measured with operands read in
 * place up to rows 512 floats apart; those of 257-512 are now packed per block, and the
 * same splits still win (below, tt_gemm_rows_split_cheap). */
#define SPLIT_MAX_LD 512

/* For a product whose rows fit one row block: whether its threads share the column
 * slivers (gemm_thread_own) rather than split its MR-row units. Claimed one at a time,
 * slivers balance the threads at any count from a few per thread up; fewer are split
 * the way that balances better (the busiest thread's share against the average: 19
 * units on 2 threads is 10 / 9, 3 slivers 2 / 1). Sharing slivers also wins when rows
 * would balance as well: measured on the Xeon of the eighth session (2 threads, cold
 * weights, in-process ABBA), the medium experts' first and second layer forward with 280
 * and 300 rows (an even number of units, which the row split had taken) ran in 0.73-0.80
 * and 0.82-0.86 of the row split's time. */
#define SHARE_SLIVERS_MIN 4 /* slivers per thread */
static bool share_slivers(int m_units, int n_slivers, int nt) {
    if (n_slivers >= SHARE_SLIVERS_MIN * nt) return true;
    long long row_max = ceil_div(m_units, nt), col_max = ceil_div(n_slivers, nt);
    /* compare m_units / (nt row_max) < n_slivers / (nt col_max) without division */
    return (long long)m_units * col_max < (long long)n_slivers * row_max;
}

/* One product as the threads of gemm_packed see it. */
typedef struct gemm_job {
    const gemm_kernel *kr;
    bool ta, tb, direct_a, direct_b;
    int M, N, K, KC, NC; /* KC: the depth of its k slices (slice_depth)                    */
    float alpha, beta;
    const float *A, *B;
    float *C;
    const float *bias; /* tt_gemm_bias's epilogue (NULL, false: none) */
    bool relu;
    bool pf_c;         /* the micro-kernel prefetches its C tile (C is large)      */
    size_t lda, ldb, ldc;
    int m_units, nbm, nbn, block_rows; /* row blocks x column splits (see gemm_packed) */
    int shares;                        /* the threads planned: shares of the claims     */
    float *bbuf;                       /* the packed B panel, shared                  */
    spin_barrier *bar;
    tt_share (*claims)[CLAIM_MAX_THREADS]; /* the work items, by k slice (panel) parity */
} gemm_job;

static void gemm_thread(const gemm_job *g, int t, int nt);

/* Whether A (op(A) M x K, row stride lda) could be read in place by kernel kr (transposed,
 * or a kernel that streams A's rows), is at most one L2 and has rows at most max_ld
 * floats apart; the same for B (K x N, row stride ldb; not transposed). With max_ld =
 * DIRECT_MAX_LD: tt_gemm reads it in place (gemm_packed); with SPLIT_MAX_LD: a Linear's
 * backward may cut the product into blocks that each need it whole. */
static bool a_close(const gemm_kernel *kr, bool ta, int M, int K, size_t lda, size_t max_ld) {
    return (ta || kr->ukernel_arows) && lda <= max_ld &&
           (size_t)M * K * sizeof(float) <= DIRECT_MAX_BYTES;
}

static bool b_close(bool tb, int K, int N, size_t ldb, size_t max_ld) {
    return !tb && ldb <= max_ld && (size_t)K * N * sizeof(float) <= DIRECT_MAX_BYTES;
}

/* The depth of a product's k slices: the kernel's kc, except that a K exceeding kc by at
 * most a third is one slice of K when C is wide. Cut at kc, such a K ends in a short
 * slice (K = 512 at kc = 384: 384 + 128) that re-reads and re-writes all of C for a
 * quarter of the work, from L3 or memory when C is large (an expert's first layer: 256 x
 * 2048 floats, 2 MB); one deeper slice writes C once, with a B sliver a third larger (64
 * KB, streamed from L2 by the micro-kernel's prefetch). Measured on the Xeon of the
 * thirteenth session (in-process ABBA, 1 thread, 16 experts' operands rotated): the
 * medium experts' first-layer forward (256 x 2048 x 512) 0.92-0.95 of the time, their
 * second layer's dx (256 x 2048 x 512, NN) 0.95-0.98, the products of K = 2048
 * (unchanged: the control) 0.996-0.999; per op in the model, the attention projections'
 * forward (2048 x 512 x 512) 0.88.
 * "Large" would be the right test, but the sums must not depend on how a product is cut:
 * a Linear's backward computes its products in row or column blocks on two threads
 * (ops/affine.c), each its own call, and every block must sum exactly as the whole
 * product does. Of C's dimensions only its row stride ldc is the same in every block, so
 * the test is ldc >= WIDE_C_LD, C's rows at least 2 KB apart: true of all the medium
 * model's products above, and of none of the toy model's. The row block shrinks in
 * proportion (mc_for), so the packed A block keeps its size in L2. */
#define WIDE_C_LD 512
static int slice_depth(const gemm_kernel *kr, int K, size_t ldc) {
    return ldc >= WIDE_C_LD && K > kr->kc && K <= kr->kc + kr->kc / 3 ? K : kr->kc;
}
static int mc_for(const gemm_kernel *kr, int KC) {
    if (KC <= kr->kc) return kr->mc;
    return imax(kr->mr, (int)((long long)kr->mc * kr->kc / KC) / kr->mr * kr->mr);
}

static void gemm_packed(const gemm_kernel *kr, bool ta, bool tb, int M, int N, int K, float alpha,
                        const float *A, size_t lda, const float *B, size_t ldb, float beta,
                        float *C, size_t ldc, const float *bias, bool relu, int nthreads) {
    const int MR = kr->mr, NR = kr->nr, KC = slice_depth(kr, K, ldc);
    const int NC = imin(kr->nc, ceil_div(N, NR) * NR);

    /* Row blocks: M is cut into MR-row units, grouped into nbm blocks of about mc rows;
     * nbm is rounded up to a multiple of the thread count so threads get equal shares.
     * If there are fewer blocks than threads, column slivers are split as well (the A
     * block is then packed by each thread that needs it). */
    int m_units = ceil_div(M, MR);
    int nbm = ceil_div(m_units, mc_for(kr, KC) / MR);
    int nbn = 1;
    if (nthreads > 1 && nbm == 1 && share_slivers(m_units, ceil_div(N, NR), nthreads)) {
        nbn = nthreads; /* one row block; the threads take column slivers */
    } else {
        if (nthreads > 1) nbm = ceil_div(nbm, nthreads) * nthreads;
        nbm = imin(nbm, m_units);
        nbn = nbm < nthreads ? ceil_div(nthreads, nbm) : 1;
    }
    int block_rows = ceil_div(m_units, nbm) * MR;

    /* Direct operands: the micro-kernel reads these in place, with the matrix's row
     * stride, instead of a packed copy:
     *   - a full MR-row panel of a transposed A (step k of the panel is MR consecutive
     *     floats of A's row k);
     *   - a full panel of a non-transposed A, if the kernel has ukernel_arows (the MR
     *     rows are MR streams of consecutive floats, one broadcast from each per step);
     *   - a full NR-column sliver of a non-transposed B (step k is NR consecutive floats
     *     of B's row k).
     * Packing buys locality (and a prefetched stream from memory) only when the rows are
     * far apart or the operand is not in cache; for row strides up to DIRECT_MAX_LD floats
     * and operands up to DIRECT_MAX_BYTES (one core's L2) the copy costs more than it
     * saves (a toy training step: 1.64 -> 1.49 ms; larger operands stay packed). Ragged
     * panels and slivers are still packed (their zero padding keeps the kernel from
     * reading past the matrix). The arithmetic is the same either way, so is every bit
     * of C. */
    const bool direct_a = a_close(kr, ta, M, K, lda, DIRECT_MAX_LD);
    const bool direct_b = b_close(tb, K, N, ldb, DIRECT_MAX_LD);
    spin_barrier bar = {0, 0};
    tt_share claims[2][CLAIM_MAX_THREADS]; /* (only the first nthreads of each are used) */
    /* the first claims: the slivers (gemm_thread_own), else the first panel's items */
    const bool own = nbm == 1;
    claim_reset_all(claims[0], own ? ceil_div(N, NR) : nbm * nbn, nthreads);
    const gemm_job job = {kr, ta, tb, direct_a, direct_b, M, N, K, KC, NC, alpha, beta, A, B, C,
                          bias, relu, (size_t)M * N * sizeof(float) > PF_C_MIN_BYTES, lda,
                          ldb, ldc, m_units, nbm, nbn, block_rows, nthreads,
                          own ? NULL : pack_buf_get(&tls_pack.b, (size_t)KC * NC), &bar, claims};
    /* (one thread: no OpenMP region at all; see parallel.c for what one costs) */
    if (nthreads > 1) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
        gemm_thread(&job, omp_get_thread_num(), omp_get_num_threads());
#endif
    } else {
        gemm_thread(&job, 0, 1);
    }
}

/* The tile of C at (i, j), mi x n, over the k slice [pc, pc + kc): the micro-kernel for
 * it (A read in place when da: row stride lda; else its packed panel ap), B sliver bp with
 * step bs; bet: beta for this slice, last: the slice that applies the epilogue. */
static inline void run_tile(const gemm_job *g, bool da, const float *ap, int i, int mi, int pc,
                            int kc, const float *bp, size_t bs, int j, int n, float bet,
                            bool last, const far_rows *far) {
    const gemm_kernel *kr = g->kr;
    if (kr->narrow && n <= kr->narrow->nr) kr = kr->narrow; /* (A and B laid out alike) */
    ukernel_fn uk = kr->ukernel;
    if (da && !g->ta)
        uk = kr->ukernel_arows;
    else if (kr->ukernel_short[0] && mi <= kr->short_rows[0])
        uk = kr->ukernel_short[0];
    else if (kr->ukernel_short[1] && mi <= kr->short_rows[1])
        uk = kr->ukernel_short[1];
    uk(kc, da ? op_at(g->A, g->ta, g->lda, i, pc) : ap, da ? g->lda : (size_t)kr->mr, bp, bs,
       g->C + (size_t)i * g->ldc + j, g->ldc, mi, n, g->alpha, bet,
       last && g->bias ? g->bias + j : NULL, last && g->relu, g->pf_c, far);
}

/* The source in B of sliver s of the (jc, pc) panel: n_rows rows of row_bytes bytes
 * (stride ldb floats). NT: NR rows of B (columns of op(B)), kc floats each; NN: kc rows,
 * NR floats each. */
typedef struct b_src {
    const char *p;
    int n_rows;
    size_t row_bytes;
} b_src;

static b_src b_sliver_src(const gemm_job *g, int jc, int nc, int pc, int kc, int s) {
    const int j = jc + s * g->kr->nr, n = imin(g->kr->nr, jc + nc - j);
    b_src r = {(const char *)op_at(g->B, g->tb, g->ldb, pc, j), g->tb ? n : kc,
               (size_t)(g->tb ? kc : n) * sizeof(float)};
    return r;
}

/* One k slice (pc, kc) of sliver s of the (jc, nc) panel times every row panel of A: pack
 * the sliver (unless it is read in place), then its tiles top to bottom, each prefetching
 * 1/n_panels of the rows of the source of the sliver to be packed next (nx, if any; see
 * far_rows). Panel q of A is read in place if it is full and A is direct, else from
 * ap0 + q * aq (packed). */
static void own_sliver_slice(const gemm_job *g, int jc, int nc, int s, int pc, int kc,
                             float *sbuf, const float *ap0, size_t aq, b_src nx) {
    const gemm_kernel *kr = g->kr;
    const int M = g->M, K = g->K, MR = kr->mr, NR = kr->nr, KC = g->KC;
    const int j = jc + s * NR, n = imin(NR, jc + nc - j), n_panels = ceil_div(M, MR);
    const float bet = pc == 0 ? g->beta : 1.0f;
    const bool last = pc + KC >= K; /* the epilogue goes with the last slice */
    const bool db = g->direct_b && n == NR;
    if (!db) kr->pack_b(g->tb, n, kc, op_at(g->B, g->tb, g->ldb, pc, j), g->ldb, sbuf);
    const float *bp = db ? g->B + (size_t)pc * g->ldb + j : sbuf;
    const size_t bs = db ? g->ldb : (size_t)NR;
    if (g->direct_b && nx.row_bytes == (size_t)NR * sizeof(float)) nx.p = NULL; /* read in place */
    for (int q = 0; q < n_panels; q++) {
        const int i = q * MR, mi = imin(MR, M - i);
        far_rows far = {NULL, 0, 0, 0}; /* (none) */
        if (nx.p) { /* this tile's share of the next sliver's source rows */
            const int r0 = part(q, nx.n_rows, n_panels), r1 = part(q + 1, nx.n_rows, n_panels);
            const size_t ld = g->ldb * sizeof(float);
            far = (far_rows){nx.p + (size_t)r0 * ld, ld, nx.row_bytes, r1 - r0};
        }
        run_tile(g, g->direct_a && mi == MR, ap0 + (size_t)q * aq, i, mi, pc, kc, bp, bs, j, n,
                 bet, last, &far);
    }
}

/* Thread t of nt when it owns every row of C in its columns (one row block: one thread,
 * or the threads share the column slivers; the experts' products of a few hundred rows).
 * Nobody shares its B slivers, so it packs each one just before use, into a private
 * one-sliver buffer that the micro-kernel then finds in L1 / L2 (rather than a KC x NC
 * panel that waited in L3), and while it multiplies a sliver it prefetches the source of
 * the next one, a slice of a weight matrix that usually comes cold from memory. The
 * slivers are claimed one at a time (claim_next), numbered across all of N: sliver s
 * covers columns [s NR, s NR + NR), in the NC panel that holds them.
 *
 * Loop order. If A is read in place (but for a ragged last panel, packed once for all k
 * slices), a sliver runs through all its k slices before the next one: its column of C
 * (M x NR floats, a few tens of KB) then stays in L1 / L2 from one slice to the next. An
 * expert's first layer (256 x 2048 outputs, K = 512: slices of 384 and 128) would
 * otherwise write its 2 MB of C in the first slice and read it all back from L3 or
 * memory in the second. No barriers. If A has to be packed, the slices go outermost so
 * that each is packed once (by every thread, for all rows); the slivers of one slice are
 * claimed afresh, from the claims of the slice's parity, and a barrier between slices
 * keeps a sliver's slice from starting before its previous one is stored. Every tile gets
 * the same k slices in the same order: the same bits, whoever computes it. */
static void own_sliver(const gemm_job *g, int s, int *jc, int *nc, int *sl) {
    const int j = s * g->kr->nr;
    *jc = j / g->NC * g->NC;
    *nc = imin(g->NC, g->N - *jc);
    *sl = (j - *jc) / g->kr->nr;
}

/* The source of sliver s's k slice at pc ({NULL}: none, s < 0). */
static b_src own_sliver_src(const gemm_job *g, int s, int pc) {
    b_src none = {NULL, 0, 0};
    if (s < 0) return none;
    int jc, nc, sl;
    own_sliver(g, s, &jc, &nc, &sl);
    return b_sliver_src(g, jc, nc, pc, imin(g->KC, g->K - pc), sl);
}

static void gemm_thread_own(const gemm_job *g, int t, int nt) {
    const gemm_kernel *kr = g->kr;
    const bool ta = g->ta;
    const int M = g->M, N = g->N, K = g->K, MR = kr->mr, NR = kr->nr, KC = g->KC;
    const int n_slivers = ceil_div(N, NR), n_panels = ceil_div(M, MR), n_sh = g->shares;
    const float *A = g->A;
    const size_t lda = g->lda;
    float *sbuf = pack_buf_get(&tls_pack.sliver, (size_t)NR * KC);
    int jc, nc, sl;
    if (g->direct_a) {
        const int q_rag = M / MR, rag = M - q_rag * MR; /* a ragged last panel of rag rows */
        float *rbuf = pack_buf_get(&tls_pack.a, (size_t)MR * (K ? K : 1));
        for (int pc = 0; pc < K && rag; pc += KC) /* slice pc at rbuf + MR pc */
            kr->pack_a(ta, rag, imin(KC, K - pc), op_at(A, ta, lda, q_rag * MR, pc), lda,
                       rbuf + (size_t)MR * pc);
        for (int s; (s = claim_next(g->claims[0], t, n_sh)) >= 0;) {
            own_sliver(g, s, &jc, &nc, &sl);
            for (int pc = 0; pc < K; pc += KC) {
                /* next: the sliver's next slice, else (likely) the next sliver's first */
                const int s_nx = pc + KC < K ? s : claim_peek(g->claims[0], t, n_sh);
                const b_src nx = own_sliver_src(g, s_nx, pc + KC < K ? pc + KC : 0);
                /* (only the ragged panel is read from rbuf: aq = 0) */
                own_sliver_slice(g, jc, nc, sl, pc, imin(KC, K - pc), sbuf,
                                 rbuf + (size_t)MR * pc, 0, nx);
            }
        }
        return;
    }
    float *abuf = pack_buf_get(&tls_pack.a, (size_t)g->block_rows * KC);
    for (int pc = 0, slice = 0; pc < K; pc += KC, slice++) {
        const int kc = imin(KC, K - pc);
        tt_share *now = g->claims[slice & 1], *next = g->claims[(slice + 1) & 1];
        /* (the next slice's claims are the previous slice's, which everybody has left:
         * it is behind the last barrier; the barrier after this slice publishes them) */
        if (t == 0 && pc + KC < K) claim_reset_all(next, n_slivers, n_sh);
        bool packed = false; /* A's slice, once this thread has a sliver to multiply */
        for (int s; (s = claim_next(now, t, n_sh)) >= 0;) {
            for (int q = 0; q < n_panels && !packed; q++)
                kr->pack_a(ta, imin(MR, M - q * MR), kc, op_at(A, ta, lda, q * MR, pc), lda,
                           abuf + (size_t)q * MR * kc);
            packed = true;
            /* next: (likely) the slice's next sliver, else this thread's first of the next */
            const int s_nx = claim_peek(now, t, n_sh);
            const b_src nx = s_nx >= 0     ? own_sliver_src(g, s_nx, pc)
                             : pc + KC < K ? own_sliver_src(g, part(t, n_slivers, n_sh), pc + KC)
                                           : own_sliver_src(g, -1, 0);
            own_sliver(g, s, &jc, &nc, &sl);
            own_sliver_slice(g, jc, nc, sl, pc, kc, sbuf, abuf, (size_t)MR * kc, nx);
        }
        if (pc + KC < K) spin_barrier_wait(g->bar, nt); /* this slice of C is stored */
    }
}

/* Thread t of nt: its share of the B packing, then the (row block, column split) items
 * it claims, per (jc, pc) panel: its own share first, then what is left of the others'
 * (claim_next). The items of a panel are claimed from the claims of the panel's parity;
 * the barrier at the end of a panel keeps an item from starting on the next before it is
 * done on this one. A product of one row block takes gemm_thread_own instead. */
static void gemm_thread(const gemm_job *g, int t, int nt) {
    if (g->nbm == 1) {
        gemm_thread_own(g, t, nt);
        return;
    }
    const gemm_kernel *kr = g->kr;
    const bool ta = g->ta, tb = g->tb, direct_a = g->direct_a, direct_b = g->direct_b;
    const int M = g->M, N = g->N, K = g->K, NC = g->NC, MR = kr->mr, NR = kr->nr, KC = g->KC;
    const float beta = g->beta, *A = g->A, *B = g->B;
    float *bbuf = g->bbuf;
    const size_t lda = g->lda, ldb = g->ldb;
    const int m_units = g->m_units, nbm = g->nbm, nbn = g->nbn, n_items = nbm * nbn;
    spin_barrier *bar = g->bar;
    float *abuf = pack_buf_get(&tls_pack.a, (size_t)g->block_rows * KC);
    int panel = 0;
    for (int jc = 0; jc < N; jc += NC) {
        int nc = imin(NC, N - jc);
        int n_slivers = ceil_div(nc, NR);
        for (int pc = 0; pc < K; pc += KC, panel++) {
            int kc = imin(KC, K - pc);
            float bet = pc == 0 ? beta : 1.0f;
            const bool last = pc + KC >= K; /* the epilogue goes with the last slice */
            /* this thread's share of the B slivers (a contiguous range) */
            for (int s = part(t, n_slivers, nt), s_end = part(t + 1, n_slivers, nt); s < s_end; s++)
                if (!(direct_b && nc - s * NR >= NR))
                    kr->pack_b(tb, imin(NR, nc - s * NR), kc,
                               op_at(B, tb, ldb, pc, jc + s * NR), ldb,
                               bbuf + (size_t)s * NR * kc);
            /* the next panel's claims are the previous panel's, which everybody has left
             * (behind the barrier that ended it); the barrier below publishes them */
            if (t == 0) claim_reset_all(g->claims[(panel + 1) & 1], n_items, g->shares);
            spin_barrier_wait(bar, nt); /* B is packed */
            for (int item; (item = claim_next(g->claims[panel & 1], t, g->shares)) >= 0;) {
                int bm = item / nbn, bn = item % nbn;
                int i0 = part(bm, m_units, nbm) * MR;
                int i1 = imin(M, part(bm + 1, m_units, nbm) * MR);
                int s0 = part(bn, n_slivers, nbn);
                int s1 = part(bn + 1, n_slivers, nbn);
                if (i0 >= i1 || s0 >= s1) continue;
                int n_panels = ceil_div(i1 - i0, MR);
                for (int q = 0; q < n_panels; q++) {
                    int i = i0 + q * MR;
                    if (!(direct_a && i1 - i >= MR))
                        kr->pack_a(ta, imin(MR, i1 - i), kc, op_at(A, ta, lda, i, pc), lda,
                                   abuf + (size_t)q * MR * kc);
                }
                for (int s = s0; s < s1; s++) {
                    int j = jc + s * NR;
                    const bool db = direct_b && jc + nc - j >= NR;
                    const float *bp =
                        db ? B + (size_t)pc * ldb + j : bbuf + (size_t)s * NR * kc;
                    const size_t bs = db ? ldb : (size_t)NR;
                    for (int q = 0; q < n_panels; q++) {
                        int i = i0 + q * MR;
                        run_tile(g, direct_a && i1 - i >= MR, abuf + (size_t)q * MR * kc, i,
                                 imin(MR, i1 - i), pc, kc, bp, bs, j, imin(NR, jc + nc - j),
                                 bet, last, NULL);
                    }
                }
            }
            /* nobody still reads B before it is repacked (the last one: the join) */
            if (pc + KC < K || jc + NC < N) spin_barrier_wait(bar, nt);
        }
    }
}

/* Small products: no packing, plain loops. Every C[i][j] gets the float operations of
 * the scalar loop, in its order (so the bits do not depend on the vector width):
 *   B transposed:  s = sum_k op(A)[i][k] B[j][k], k ascending from s = 0;
 *                  C[i][j] = alpha s (beta = 0), else alpha s + beta C[i][j]
 *   B as stored:   C[i][j] = 0 (beta = 0) or beta C[i][j] (beta != 1); then, k ascending,
 *                  C[i][j] += (alpha op(A)[i][k]) B[k][j]
 * vectorised over j. For the first, columns j0 .. j0 + 15 of B^T are copied once into a
 * [K][16] block whose rows the loop over j then reads in order (only for K up to
 * SMALL_KT: a deeper small product has M N < 128 and keeps the scalar loop). */
#define SMALL_NB 16
#define SMALL_KT 256

TT_CLONES static void gemm_small(bool ta, bool tb, int M, int N, int K, float alpha,
                                 const float *A, size_t lda, const float *B, size_t ldb,
                                 float beta, float *C, size_t ldc) {
    if (!tb) {
        for (int i = 0; i < M; i++) {
            float *restrict ci = C + (size_t)i * ldc;
            if (beta == 0.0f) {
                VEC for (int j = 0; j < N; j++) ci[j] = 0.0f;
            } else if (beta != 1.0f) {
                VEC for (int j = 0; j < N; j++) ci[j] *= beta;
            }
            for (int k = 0; k < K; k++) {
                const float aik = alpha * *op_at(A, ta, lda, i, k);
                const float *restrict bk = B + (size_t)k * ldb;
                VEC for (int j = 0; j < N; j++) ci[j] += aik * bk[j];
            }
        }
        return;
    }
    if (K > SMALL_KT) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                const float *bj = B + (size_t)j * ldb;
                float s = 0.0f;
                for (int k = 0; k < K; k++) s += *op_at(A, ta, lda, i, k) * bj[k];
                float *c = C + (size_t)i * ldc + j;
                *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
            }
        return;
    }
    float bt[SMALL_KT * SMALL_NB]; /* [K][16]: B^T's columns j0 .. j0 + 15, zero-padded */
    for (int j0 = 0; j0 < N; j0 += SMALL_NB) {
        const int nb = N - j0 < SMALL_NB ? N - j0 : SMALL_NB;
        for (int k = 0; k < K; k++)
            for (int jj = 0; jj < SMALL_NB; jj++)
                bt[k * SMALL_NB + jj] = jj < nb ? B[(size_t)(j0 + jj) * ldb + k] : 0.0f;
        for (int i = 0; i < M; i++) {
            float s[SMALL_NB] = {0};
            for (int k = 0; k < K; k++) {
                const float aik = *op_at(A, ta, lda, i, k);
                const float *restrict bk = bt + k * SMALL_NB;
                VEC for (int jj = 0; jj < SMALL_NB; jj++) s[jj] += aik * bk[jj];
            }
            float *restrict ci = C + (size_t)i * ldc + j0;
            if (beta == 0.0f) {
                for (int jj = 0; jj < nb; jj++) ci[jj] = alpha * s[jj];
            } else {
                for (int jj = 0; jj < nb; jj++) ci[jj] = alpha * s[jj] + beta * ci[jj];
            }
        }
    }
}

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define GEMM_PAR_MIN (1LL << 21)
#define GEMM_SMALL (32LL * 32 * 32)


/* C[i][j] = act(C[i][j] + bias[j]) row by row: tt_gemm_bias's epilogue where the
 * micro-kernels do not apply it (small products, K == 0). */
static void bias_act_rows(float *C, size_t ldc, int M, int N, const float *bias, bool relu) {
    for (int i = 0; i < M; i++) {
        float *ci = C + (size_t)i * ldc;
        for (int j = 0; j < N; j++) {
            float x = bias ? ci[j] + bias[j] : ci[j];
            ci[j] = relu && !(x > 0.0f) ? 0.0f : x;
        }
    }
}

/* ---- products of a few columns, computed transposed ---------------------------------
 * A product with N <= FEW_COLS_MAX columns (a router's logits: N = number of experts)
 * wastes most of the AVX-512 tile, which is 16 columns wide at its narrowest: with N = 8
 * every FMA carries 8 useful lanes of 16, with N = 4 only 4. Its transpose has N rows and
 * M columns, which the 32-wide tile fills, on the short 8- or 4-row tiles:
 *     C^T = op(B)^T op(A)^T       (N x M; op(B)^T is B read with the other transpose flag)
 * computed block by block (FEW_COLS_ROWS rows of C) into a thread-local buffer T and
 * copied into C by the epilogue below. Every element of C is the same FMA chain as in the
 * direct product (a b = b a, k in the same order), provided the two cut K into the same
 * slices (slice_depth depends on the row stride of C, FEW_COLS_ROWS for T: checked); T
 * holds alpha acc, as the direct kernel's x before its epilogue, and that epilogue is
 * redone here with the same float operations:
 *     x = T (+ beta C) (+ bias) (ReLU)
 * beta C is the kernel's first term, fma(alpha, acc, beta C) of the first k slice (later
 * slices add theirs to C): that is T + beta C only for alpha = 1 and one slice, so other
 * products with beta != 0 stay direct. So C gets the direct product's bits
 * (tests/test_gemm.c, test_gemm_few_columns_same_bits).
 * Measured (twentieth session, Zen 5, 1 thread, operands in cache; scratch n8.c, n8b.c):
 * 1024 x 8 x 256 (the small model's router) NT 66 -> 47 us, NN 67 -> 48, TN 130 -> 58,
 * TT 131 -> 57; 256 x 4 x 64 (the toy's) 6.9 -> 5.0 us; 1024 x 2 x 256 1.7x; N = 12
 * gains nothing (direct 66, transposed 63-72 us): 8 is the limit. On 2 threads the
 * router's product ran slower than on one whichever way (direct 90-95 us, transposed
 * 73-80), from 8 M multiply-adds up faster: the blocks are shared between threads only
 * from FEW_COLS_PAR_MIN multiply-adds (8192 x 8 x 1024: 2364 us on 1 thread, 999 on 2;
 * the 16-wide tile 2.6-3.3 ms and 1.5 ms). */
#if GEMM_X86
#define FEW_COLS_MAX 8
#define FEW_COLS_MIN_ROWS 64
#define FEW_COLS_PAR_MIN (4 * GEMM_PAR_MIN)

/* C[i][j] = epilogue(T[j][i]) for the M x N product whose transpose T (row stride ldt) holds
 * alpha acc; see above: T (+ beta C; beta == 0: C is not read), then bias_act_rows, the
 * epilogue tt_gemm_bias applies where the micro-kernels do not - the same operations on
 * each element as the kernel's. */
static void few_cols_epilogue(const float *T, int M, size_t ldt, int N, float beta, float *C,
                              size_t ldc, const float *bias, bool relu) {
    for (int i = 0; i < M; i++) {
        float *ci = C + (size_t)i * ldc;
        if (beta == 0.0f) {
            for (int j = 0; j < N; j++) ci[j] = T[(size_t)j * ldt + i];
        } else { /* (alpha is 1 here) */
            for (int j = 0; j < N; j++)
                ci[j] = T[(size_t)j * ldt + i] + (beta != 1.0f ? beta * ci[j] : ci[j]);
        }
    }
    if (bias || relu) bias_act_rows(C, ldc, M, N, bias, relu);
}

/* The transpose is computed FEW_COLS_ROWS rows of C at a time (the columns of a block of
 * T, row stride FEW_COLS_ROWS: the same for every block, so all cut K alike, and under
 * WIDE_C_LD, so they cut it as the direct product does for any C narrower than that): T
 * stays a few KB in L1/L2 between its product and the copy, and the thread-local buffer
 * is bounded whatever M. The blocks are independent products: with threads, each takes
 * whole blocks. 448 = 14 x 32 rows. */
#define FEW_COLS_ROWS 448

/* Whether the M x N x K product goes through its transpose (gemm_few_columns): kernel kr
 * (the 32-wide AVX-512 one, which computes the transpose) and n16 (the one the direct
 * product would use) must cut K alike for C's row stride ldc and for T's. */
static bool few_columns(const gemm_kernel *kr, const gemm_kernel *n16, int M, int N, int K,
                        float alpha, float beta, size_t ldc) {
    const int kc = slice_depth(n16, K, ldc);
    return N <= FEW_COLS_MAX && M >= FEW_COLS_MIN_ROWS &&
           kc == slice_depth(kr, K, (size_t)FEW_COLS_ROWS) &&
           (beta == 0.0f || (alpha == 1.0f && K <= kc));
}

typedef struct few_cols_job {
    const gemm_kernel *kr;
    bool ta, tb, relu;
    int M, N, K;
    float alpha, beta;
    const float *A, *B, *bias;
    size_t lda, ldb, ldc;
    float *C;
} few_cols_job;

/* blocks [b0, b1) of FEW_COLS_ROWS rows of C, on this thread */
static void few_cols_blocks(void *ctx, long b0, long b1) {
    const few_cols_job *j = ctx;
    float *T = pack_buf_get(&tls_pack.tr, (size_t)FEW_COLS_ROWS * j->N);
    for (long blk = b0; blk < b1; blk++) {
        const int i0 = (int)blk * FEW_COLS_ROWS, m = imin(FEW_COLS_ROWS, j->M - i0);
        const float *a = j->ta ? j->A + i0 : j->A + (size_t)i0 * j->lda; /* op(A) row i0 */
        gemm_packed(j->kr, !j->tb, !j->ta, j->N, m, j->K, j->alpha, j->B, j->ldb, a, j->lda,
                    0.0f, T, FEW_COLS_ROWS, NULL, false, 1);
        few_cols_epilogue(T, m, FEW_COLS_ROWS, j->N, j->beta, j->C + (size_t)i0 * j->ldc,
                          j->ldc, j->bias, j->relu);
    }
}

static void gemm_few_columns(const gemm_kernel *kr, bool ta, bool tb, int M, int N, int K,
                             float alpha, const float *A, size_t lda, const float *B,
                             size_t ldb, float beta, float *C, size_t ldc, const float *bias,
                             bool relu) {
    few_cols_job j = {kr, ta, tb, relu, M, N, K, alpha, beta, A, B, bias, lda, ldb, ldc, C};
    const long blocks = ceil_div(M, FEW_COLS_ROWS);
    const long long work = (long long)M * N * K;
    const int nthreads = work >= FEW_COLS_PAR_MIN ? tt_gemm_threads(M, N, K) : 1;
    tt_parallel_for(blocks, nthreads < blocks ? nthreads : (int)blocks, few_cols_blocks, &j);
}
#endif

/* The operands a split copies again are at most one L2 (DIRECT_MAX_BYTES) and close-packed
 * (rows at most SPLIT_MAX_LD floats apart): read in place, or packed by each block at a
 * small fraction of the block's time. Measured (ninth session, Xeon, medium model, 2
 * threads, in-process ABBA of whole training steps): cutting only products whose
 * operands are read in place (DIRECT_MAX_LD) made the step 4.3% slower (median of 16
 * blocks): the experts' first-layer dW, B = x [~280, 512], would run as one task. */
bool tt_gemm_cols_split_cheap(bool trans_a, int M, int K, int lda) {
    return a_close(&g_kernels[current_kernel()], trans_a, M, K, (size_t)lda, SPLIT_MAX_LD);
}

bool tt_gemm_rows_split_cheap(bool trans_b, int K, int N, int ldb) {
    return b_close(trans_b, K, N, (size_t)ldb, SPLIT_MAX_LD);
}

int tt_gemm_threads(int M, int N, int K) {
    int nthreads = 1;
#ifdef _OPENMP
    long long work = (long long)M * N * K;
    /* Only from outside every parallel region: inside one, even an inactive (if-false)
     * one, a team is nested, and libgomp creates fresh threads for every nested team
     * (each one allocating its pack buffers afresh, and freeing them when it ends). */
    if (work >= GEMM_PAR_MIN && M >= 2 && N >= 2 && omp_get_level() == 0) {
        nthreads = omp_get_max_threads();
        long long cap = work / GEMM_PAR_MIN; /* at least GEMM_PAR_MIN multiply-adds a thread */
        if (nthreads > cap) nthreads = (int)cap;
        if (nthreads > CLAIM_MAX_THREADS) nthreads = CLAIM_MAX_THREADS;
    }
#endif
    return nthreads;
}

void tt_gemm_bias(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc,
                  const float *bias, bool relu) {
    tt_src here = {__FILE__, __LINE__};
    if (M < 0 || N < 0 || K < 0)
        tt_error_at(here, "gemm", "negative size M=%d N=%d K=%d", M, N, K);
    if (M == 0 || N == 0) return;
    int a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
    if (ldc < N || lda < (a_cols > 1 ? a_cols : 1) || ldb < (b_cols > 1 ? b_cols : 1))
        tt_error_at(here, "gemm",
                    "leading dimension too small: lda=%d (op(A) %dx%d%s), ldb=%d (op(B) %dx%d%s), "
                    "ldc=%d (C %dx%d)",
                    lda, M, K, trans_a ? ", transposed" : "", ldb, K, N,
                    trans_b ? ", transposed" : "", ldc, M, N);
    if (!C || (K > 0 && alpha != 0.0f && (!A || !B)))
        tt_error_at(here, "gemm", "NULL matrix pointer");

    if (K == 0 || alpha == 0.0f) { /* C = beta * C, A and B not read */
        for (int i = 0; i < M; i++) {
            float *ci = C + (size_t)i * ldc;
            for (int j = 0; j < N; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
        }
        if (bias || relu) bias_act_rows(C, (size_t)ldc, M, N, bias, relu);
        return;
    }
    long long work = (long long)M * N * K;
    if (work < GEMM_SMALL || M < 2 || N < 2) {
        gemm_small(trans_a, trans_b, M, N, K, alpha, A, (size_t)lda, B, (size_t)ldb, beta, C,
                   (size_t)ldc);
        if (bias || relu) bias_act_rows(C, (size_t)ldc, M, N, bias, relu);
        return;
    }
    int k = current_kernel();
    const gemm_kernel *kr = &g_kernels[k];
#if GEMM_X86
    if (k == K_AVX512 && few_columns(kr, &g_avx512_n16, M, N, K, alpha, beta, (size_t)ldc)) {
        gemm_few_columns(kr, trans_a, trans_b, M, N, K, alpha, A, (size_t)lda, B, (size_t)ldb,
                         beta, C, (size_t)ldc, bias, relu);
        return;
    }
    if (k == K_AVX512 && N <= 16) kr = &g_avx512_n16;
#endif
    gemm_packed(kr, trans_a, trans_b, M, N, K, alpha, A, (size_t)lda, B, (size_t)ldb, beta, C,
                (size_t)ldc, bias, relu, tt_gemm_threads(M, N, K));
}

void tt_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    tt_gemm_bias(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL, false);
}

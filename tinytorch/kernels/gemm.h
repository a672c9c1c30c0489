/* gemm.h - single-precision matrix multiply, the kernel under tt_matmul.
 *
 *     C = alpha * op(A) @ op(B) + beta * C          (row-major throughout)
 *
 * op(A) is M x K: A itself when trans_a is false (A[i*lda + k]), A^T when it is true
 * (A is then K x M, element (i, k) at A[k*lda + i]). Likewise op(B) is K x N: B[k*ldb + j]
 * or, with trans_b, B[j*ldb + k]. C is M x N with row stride ldc. The leading dimensions
 * are the row strides of the matrices as stored (at least their number of columns).
 *
 * beta == 0 overwrites C without reading it (C may hold NaN or uninitialised memory);
 * alpha == 0 or K == 0 only scales C by beta. M == 0 or N == 0 does nothing.
 *
 * How it works: panels of op(A) and op(B) are packed into contiguous, aligned buffers
 * (thread-local, reused from call to call) and multiplied tile by tile by a register-
 * blocked micro-kernel: AVX-512 (14 x 32 tile) or AVX2+FMA (6 x 16) when the CPU has
 * them (checked at run time; the library needs no -march flag), else portable C.
 * Operands of up to 1 MB whose rows are already in the micro-kernel's order (and, for
 * AVX-512, any non-transposed A) are read in place instead of packed; same results.
 * Small products (M*N*K < 32^3, or M or N = 1) skip packing and use direct loops,
 * vectorised over the columns of C with each element summed in plain k order. With
 * AVX-512, a product of at most 8 columns (a router's logits) is computed as its
 * transpose, whose few rows the 32-wide tile covers fully, and copied into C: the same
 * bits as the direct product.
 *
 * Threads: with OpenMP, large products are split over blocks of rows or columns of C
 * (up to OMP_NUM_THREADS threads; called from inside a parallel region it runs on the
 * calling thread only). Every element of C is computed by one thread, summing over k in
 * the same order whatever the thread count, so the result is bit-identical for any
 * number of threads. Different kernels (AVX-512 / AVX2 / generic) round differently,
 * and so may the same product written into a C of another row stride: a K of up to a
 * third more than the kernel's k block is summed in one piece when C's rows are at least
 * 512 floats apart, in two otherwise (kernels/gemm.c, slice_depth).
 *
 * Environment: TT_GEMM=generic|avx2|avx512 forces a kernel (read at the first call);
 * an unavailable choice falls back to the automatic one.
 */
#ifndef TT_KERNELS_GEMM_H
#define TT_KERNELS_GEMM_H

#include <stdbool.h>

void tt_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* tt_gemm followed by C[i][j] = act(C[i][j] + bias[j]) (bias may be NULL; act = ReLU if
 * relu, else none), applied by the micro-kernel to the tile it is about to store, so C is
 * written once: the forward of a Linear (+ ReLU) layer. The same bits as tt_gemm then a
 * separate pass (x + b, then x > 0 ? x : 0, NaN giving 0). */
void tt_gemm_bias(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
                  int lda, const float *B, int ldb, float beta, float *C, int ldc,
                  const float *bias, bool relu);

/* How many threads tt_gemm would use for an M x N x K product called from here: 1 inside
 * an OpenMP parallel region, without OpenMP, or for a product too small to split (below
 * about 4 million multiply-adds); else up to omp_get_max_threads(). For callers that
 * would rather run two independent small products side by side (a Linear's backward). */
int tt_gemm_threads(int M, int N, int K);

/* Whether a product C = op(A) B (A M x K) can be cut into row blocks of A and C at little
 * extra cost: its B operand (K x N, row stride ldb, not transposed) is read in place by
 * each block, or is small and close-packed enough (one core's L2 at most, rows at most 512
 * floats apart) that each block's own packed copy of it costs a small fraction of the
 * block. (Otherwise every block would pack a large B again.) */
bool tt_gemm_rows_split_cheap(bool trans_b, int K, int N, int ldb);

/* The same for column blocks of B and C, and the A operand (op(A) M x K, row stride lda),
 * with the kernel in use. */
bool tt_gemm_cols_split_cheap(bool trans_a, int M, int K, int lda);

/* The kernel tt_gemm uses now: "avx512", "avx2" or "generic". */
const char *tt_gemm_kernel(void);

/* Select a kernel by name: "avx512", "avx2", "generic", or "auto" (the best the CPU
 * supports); NULL returns to the default (TT_GEMM, read again at the next call, else
 * "auto"). Returns false, changing nothing, if the name is unknown or the CPU lacks the
 * instructions. For tests and benchmarks; not while another thread is inside tt_gemm. */
bool tt_gemm_set_kernel(const char *name);

#endif

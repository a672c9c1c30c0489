/* test_gemm.c - tt_gemm against a double-precision reference, for every kernel the CPU
 * has (generic, avx2, avx512), every transpose combination, ragged sizes, strided
 * matrices, alpha/beta, and bit-identical results for 1, 2 and 5 OpenMP threads and for a
 * team smaller than tt_gemm planned for (the threads claim their work). */
#include "tt_test.h"

#include "kernels/gemm.h"

#include <errno.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *const kernel_names[] = {"generic", "avx2", "avx512"};
#define N_KERNELS 3

/* A stored matrix of rows x cols with row stride ld >= cols; the padding holds a sentinel
 * (NaN) that must never reach a result, and for C must never be overwritten. */
typedef struct mat {
    int rows, cols, ld;
    float *v;
} mat;

static mat mat_new(int rows, int cols, int pad, tt_rng *r) {
    mat m = {rows, cols, cols + pad > 0 ? cols + pad : 1, NULL};
    size_t n = (size_t)rows * m.ld;
    m.v = malloc((n ? n : 1) * sizeof(float));
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < m.ld; j++)
            m.v[(size_t)i * m.ld + j] = j < cols ? 2.0f * tt_rng_uniform(r) - 1.0f : NAN;
    return m;
}

/* The stored matrix behind op(X) of rows x cols: X itself, or (trans) its transpose,
 * stored cols x rows. */
static mat op_new(bool trans, int rows, int cols, int pad, tt_rng *r) {
    return trans ? mat_new(cols, rows, pad, r) : mat_new(rows, cols, pad, r);
}

/* The check: C = alpha op(A) op(B) + beta C0 in double. Every element must lie within
 * the worst-case float error bound of a dot product of length K, gamma_{K+3} times the
 * sum of the absolute values of the terms (Higham, Accuracy and Stability of Numerical
 * Algorithms, 3.1): |err| <= (K+3) u / (1 - (K+3) u) * (|alpha| sum_k |a_ik b_kj| + |beta c0|)
 * with u = 2^-24; the +3 covers the scaling by alpha, by beta and the final add. The bound
 * holds for any summation order and with or without FMA, so one check serves all kernels;
 * a wrong element (a lost or doubled term) misses it by orders of magnitude. */
static void check_gemm(const char *what, bool ta, bool tb, int M, int N, int K, float alpha,
                       float beta, int pad) {
    tt_rng r;
    tt_rng_seed(&r, (uint64_t)(M * 1000003 + N * 1009 + K * 7 + ta * 2 + tb));
    mat A = op_new(ta, M, K, pad, &r);
    mat B = op_new(tb, K, N, pad, &r);
    mat C = mat_new(M, N, pad, &r);
    float *c0 = malloc(((size_t)M * C.ld + 1) * sizeof(float));
    memcpy(c0, C.v, (size_t)M * C.ld * sizeof(float));
    if (beta == 0.0f) /* C must be overwritten without being read */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C.v[(size_t)i * C.ld + j] = NAN;

    tt_gemm(ta, tb, M, N, K, alpha, A.v, A.ld, B.v, B.ld, beta, C.v, C.ld);

    double u = ldexp(1.0, -24), gamma = (K + 3) * u / (1.0 - (K + 3) * u);
    double worst = 0.0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0, abs_s = 0.0;
            for (int k = 0; k < K; k++) {
                double x = ta ? A.v[(size_t)k * A.ld + i] : A.v[(size_t)i * A.ld + k];
                double y = tb ? B.v[(size_t)j * B.ld + k] : B.v[(size_t)k * B.ld + j];
                s += x * y;
                abs_s += fabs(x * y);
            }
            double c_old = beta == 0.0f ? 0.0 : c0[(size_t)i * C.ld + j];
            double want = alpha * s + beta * c_old;
            double bound = gamma * (fabs(alpha) * abs_s + fabs(beta * c_old)) + 1e-30;
            double got = C.v[(size_t)i * C.ld + j];
            double ratio = fabs(got - want) / bound;
            if (!(ratio <= 1.0))
                ck_abort_msg("%s: %c%c M=%d N=%d K=%d alpha=%g beta=%g pad=%d: C[%d][%d] = %.9g, "
                             "want %.9g (bound %.3g)",
                             what, ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, beta, pad, i,
                             j, got, want, bound);
            if (ratio > worst) worst = ratio;
        }
    /* the padding of C is untouched */
    for (int i = 0; i < M; i++)
        for (int j = N; j < C.ld; j++)
            ck_assert_msg(isnan(C.v[(size_t)i * C.ld + j]), "%s: C padding overwritten", what);
    free(A.v);
    free(B.v);
    free(C.v);
    free(c0);
}

/* Odd sizes straddle every tile edge (MR = 4, 6, 14; NR = 8, 16, 32) and the small-matrix
 * cut-off (M*N*K = 32^3); the last rows cross the cache blocks (MC = 504 rows, KC = 384,
 * NC = 4096 columns for AVX-512). */
static const int shapes[][3] = {
    {1, 1, 1},    {1, 3, 17},   {3, 1, 33},    {17, 33, 3},   {33, 17, 65},  {65, 100, 33},
    {100, 65, 17}, {3, 257, 65}, {257, 3, 100}, {64, 64, 64},  {100, 100, 100}, {257, 33, 17},
    {17, 257, 100}, {33, 65, 257}, {15, 31, 1},  {29, 47, 0},  {40, 47, 30}, {47, 79, 40},
    {29, 111, 45}, {300, 16, 400}, {1100, 8, 50},
};
static const int big_shapes[][3] = {
    {1100, 40, 50},  /* three row blocks                  */
    {20, 4200, 30},  /* two column panels                 */
    {40, 36, 1000},  /* three k slices: beta, then 1      */
    {30, 40, 513},   /* two slices, the second short       */
    {100, 512, 341}, /* a wide C: one deep slice (kc 256), shorter row blocks (generic: two) */
    {16, 512, 500},  /* a wide C: one deep slice (AVX-512)  */
};

static void check_all(const char *kernel) {
    int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int s = 0; s < n_shapes; s++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            const int *sh = shapes[s];
            check_gemm(kernel, ta, tb, sh[0], sh[1], sh[2], 1.0f, 0.0f, 0);
            check_gemm(kernel, ta, tb, sh[0], sh[1], sh[2], 0.5f, 1.0f, 3);
            check_gemm(kernel, ta, tb, sh[0], sh[1], sh[2], -1.5f, 0.25f, 1);
        }
    for (size_t s = 0; s < sizeof big_shapes / sizeof big_shapes[0]; s++)
        for (int t = 0; t < 4; t++) {
            const int *sh = big_shapes[s];
            check_gemm(kernel, t & 1, t & 2, sh[0], sh[1], sh[2], 1.0f, 0.0f, 0);
            check_gemm(kernel, t & 1, t & 2, sh[0], sh[1], sh[2], 2.0f, -1.0f, 5);
        }
}

/* Runs fn for each kernel the CPU supports; returns how many ran. */
static int for_each_kernel(void (*fn)(const char *)) {
    int ran = 0;
    for (int k = 0; k < N_KERNELS; k++) {
        if (!tt_gemm_set_kernel(kernel_names[k])) {
            printf("  kernel %s: not supported by this CPU, skipped\n", kernel_names[k]);
            continue;
        }
        ck_assert_str_eq(tt_gemm_kernel(), kernel_names[k]);
        fn(kernel_names[k]);
        printf("  kernel %s: ok\n", kernel_names[k]);
        ran++;
    }
    tt_gemm_set_kernel(NULL);
    return ran;
}

START_TEST(test_gemm_matches_reference_every_kernel) {
    ck_assert_int_ge(for_each_kernel(check_all), 1);
}
END_TEST

/* One C element by element: row-major, op(A) = A^T reads columns, and the beta-scaling. */
START_TEST(test_gemm_small_by_hand) {
    /* A [2,3], B [3,2]: A@B = [[1*1+2*3+3*5, 1*2+2*4+3*6], [4*1+5*3+6*5, 4*2+5*4+6*6]] */
    float A[] = {1, 2, 3, 4, 5, 6}, B[] = {1, 2, 3, 4, 5, 6};
    float C[4] = {1, 1, 1, 1};
    tt_gemm(false, false, 2, 2, 3, 1.0f, A, 3, B, 2, 10.0f, C, 2);
    float want[] = {22 + 10, 28 + 10, 49 + 10, 64 + 10};
    ck_assert_float_eq(tt_test_maxdiff(C, want, 4), 0.0f);
    /* trans_a: A stored [3,2] = [[1,2],[3,4],[5,6]], op(A) = [[1,3,5],[2,4,6]]; times B */
    tt_gemm(true, false, 2, 2, 3, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    float want_t[] = {1 * 1 + 3 * 3 + 5 * 5, 1 * 2 + 3 * 4 + 5 * 6, 2 * 1 + 4 * 3 + 6 * 5,
                      2 * 2 + 4 * 4 + 6 * 6};
    ck_assert_float_eq(tt_test_maxdiff(C, want_t, 4), 0.0f);
}
END_TEST

static void check_special_values(const char *kernel) {
    /* beta = 0 overwrites NaN garbage; alpha = 0 and K = 0 only scale C by beta and do not
     * read A or B (NaN there must not matter) */
    enum { M = 70, N = 90, K = 40 }; /* large enough for the packed path */
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *C = malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++) A[i] = 1.0f;
    for (int i = 0; i < K * N; i++) B[i] = 0.5f;
    for (int i = 0; i < M * N; i++) C[i] = NAN;
    tt_gemm(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    for (int i = 0; i < M * N; i++) ck_assert_msg(C[i] == 20.0f, "%s: C[%d] = %g", kernel, i, C[i]);
    for (int i = 0; i < M * K; i++) A[i] = NAN;
    tt_gemm(false, false, M, N, K, 0.0f, A, K, B, N, 0.5f, C, N);
    for (int i = 0; i < M * N; i++) ck_assert_float_eq(C[i], 10.0f);
    tt_gemm(false, true, M, N, 0, 1.0f, A, 1, B, 1, 2.0f, C, N);
    for (int i = 0; i < M * N; i++) ck_assert_float_eq(C[i], 20.0f);
    tt_gemm(false, true, M, N, 0, 1.0f, A, 1, B, 1, 0.0f, C, N);
    for (int i = 0; i < M * N; i++) ck_assert_float_eq(C[i], 0.0f);
    /* M = 0 or N = 0: nothing happens, nothing is read */
    tt_gemm(false, false, 0, N, K, 1.0f, NULL, K, NULL, N, 0.0f, C, N);
    tt_gemm(false, false, M, 0, K, 1.0f, NULL, K, NULL, 1, 0.0f, C, 1);
    ck_assert_float_eq(C[0], 0.0f);
    free(A);
    free(B);
    free(C);
}

START_TEST(test_gemm_special_values) { for_each_kernel(check_special_values); }
END_TEST

#ifdef _OPENMP
/* Each product of sz, every transpose combination, computed with 1 thread and with each
 * of the thread counts in threads: every bit the same. */
static void check_same_bits(const char *kernel, const int (*sz)[3], size_t n_sz,
                            const int *threads, size_t n_threads, uint64_t seed) {
    int saved = omp_get_max_threads();
    tt_rng r;
    tt_rng_seed(&r, seed);
    for (size_t s = 0; s < n_sz; s++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            int M = sz[s][0], N = sz[s][1], K = sz[s][2];
            mat A = op_new(ta, M, K, 0, &r);
            mat B = op_new(tb, K, N, 0, &r);
            size_t n = (size_t)M * N;
            float *c1 = malloc(sizeof(float) * n), *c2 = malloc(sizeof(float) * n);
            for (size_t i = 0; i < n; i++) c1[i] = (float)(i % 7) - 3.0f;
            omp_set_num_threads(1);
            tt_gemm(ta, tb, M, N, K, 0.75f, A.v, A.ld, B.v, B.ld, 0.5f, c1, N);
            for (size_t h = 0; h < n_threads; h++) {
                for (size_t i = 0; i < n; i++) c2[i] = (float)(i % 7) - 3.0f;
                omp_set_num_threads(threads[h]);
                tt_gemm(ta, tb, M, N, K, 0.75f, A.v, A.ld, B.v, B.ld, 0.5f, c2, N);
                ck_assert_msg(memcmp(c1, c2, sizeof(float) * n) == 0,
                              "%s: %c%c %dx%dx%d: %d threads (teams of at most %d) differ "
                              "from 1 (max diff %g)",
                              kernel, ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, threads[h],
                              omp_get_thread_limit(), tt_test_maxdiff(c1, c2, n));
            }
            free(A.v);
            free(B.v);
            free(c1);
            free(c2);
        }
    omp_set_num_threads(saved);
}
#endif

/* Results must not depend on the number of threads: each element of C is computed by one
 * thread over the same k order. Sizes are large enough to be split (>= 2^22 multiply-adds),
 * ragged, and cover M-splits, N-splits (M below two tiles) and several k slices; the last
 * three split the columns of one row block over several k slices (each thread packs its
 * own slivers as it goes, the next one prefetched across the slice or sliver boundary),
 * with B packed (1000 columns) or, non-transposed, read in place (200 columns, 720 KB),
 * and A packed or read in place (a transposed A of 60 columns; 250 columns, not
 * transposed: one k slice, as any A read by rows, whose row stride is at most 256). */
static void check_thread_invariance(const char *kernel) {
#ifdef _OPENMP
    static const int sz[][3] = {{257, 300, 129}, {20, 1000, 300}, {1030, 70, 400},
                                {100, 90, 900}, {60, 1000, 900}, {60, 200, 900},
                                {60, 1000, 250}};
    static const int two[] = {2};
    check_same_bits(kernel, sz, sizeof sz / sizeof sz[0], two, 1, 42);
#else
    (void)kernel;
    printf("  built without OpenMP: thread invariance is trivial\n");
#endif
}

START_TEST(test_gemm_bit_identical_1_and_2_threads) { for_each_kernel(check_thread_invariance); }
END_TEST

/* The threads of a product claim its work: a product of one row block its column
 * slivers, a larger one its row blocks, panel by panel; each thread takes its own share
 * from the front, then the other shares' items from the back. Whoever computes an item,
 * every bit of C must be the 1-thread result. Shapes: products with an even number of
 * 14-row units (280 rows, which the row split used to take), A read in place (one pass
 * over the slivers) and packed (K of 800: three k slices, claimed afresh each, the claim
 * sets reused), two column panels (N > 4096: slivers numbered across them), 1030 rows
 * (row blocks, three panels); 2 and 5 threads (more than this machine's cores: preempted
 * threads get robbed; going back to fewer, libgomp ends the surplus threads, whose pack
 * buffers `make sanitize` then finds freed, not leaked). The automatic kernel only (the
 * claims do not depend on it; every kernel's arithmetic is checked above), and sizes
 * kept small: this runs under ASan and in a child again. Run once more with
 * OMP_THREAD_LIMIT=1 (below), where a team of one thread finds the shares of its missing
 * partners and takes all of them from the back. */
static void check_claimed_work(const char *kernel) {
#ifdef _OPENMP
    static const int sz[][3] = {{280, 512, 256}, {280, 300, 800}, {28, 4200, 400},
                                {1030, 64, 800}};
    static const int threads[] = {2, 5};
    check_same_bits(kernel, sz, sizeof sz / sizeof sz[0], threads,
                    sizeof threads / sizeof threads[0], 7);
#else
    (void)kernel;
    printf("  built without OpenMP: nothing is shared\n");
#endif
}

START_TEST(test_gemm_claimed_work_same_bits) { check_claimed_work(tt_gemm_kernel()); }
END_TEST

/* The same, in a child process of this test binary whose OpenMP teams are limited to one
 * thread (OMP_THREAD_LIMIT is read when the runtime starts): tt_gemm still plans 2 or 5
 * shares, and the one thread must claim every item of them. */
START_TEST(test_gemm_claimed_work_team_of_one) {
#ifdef _OPENMP
    if (getenv("TT_TEST_CLAIMS_CHILD")) {
        ck_assert_int_eq(omp_get_thread_limit(), 1);
        check_claimed_work(tt_gemm_kernel());
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("TT_TEST_CLAIMS_CHILD", "1", 1);
        setenv("OMP_THREAD_LIMIT", "1", 1);
        setenv("CK_RUN_CASE", "claims, team of one", 1);
        setenv("CK_FORK", "no", 1);
        execl("/proc/self/exe", "test_gemm", (char *)NULL);
        _exit(123);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) ck_assert_int_eq(errno, EINTR);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "the child with OMP_THREAD_LIMIT=1 failed (status %d; its output is above)",
                  st);
#else
    printf("  built without OpenMP: nothing is shared\n");
#endif
}
END_TEST

/* Products with N <= 16 use a narrower AVX-512 tile (16 columns instead of 32), and so
 * does a ragged last sliver of at most 16 columns in a wider product. Column j of C must
 * come out the same whichever tile computed it: the first 8 columns of a 40-column
 * product (wide tile) equal an 8-column product of the same data bit for bit, and that
 * product's columns 32..39 (its last sliver, 8 wide: the narrow tile) equal those of a
 * 64-column product (two full slivers). */
static void check_narrow_tile(const char *kernel) {
    tt_rng r;
    tt_rng_seed(&r, 7);
    const int M = 1100, K = 500, NF = 64, NW = 40, NN = 8;
    for (int tb = 0; tb < 2; tb++) {
        mat A = mat_new(M, K, 0, &r);
        mat B = op_new(tb, K, NF, 0, &r); /* the first N columns of op(B): B's first N rows
                                           * (tb) or its first N columns (ld unchanged) */
        float *full = malloc(sizeof(float) * M * NF), *wide = malloc(sizeof(float) * M * NW);
        float *narrow = malloc(sizeof(float) * M * NN);
        tt_gemm(false, tb, M, NF, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, full, NF);
        tt_gemm(false, tb, M, NW, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, wide, NW);
        tt_gemm(false, tb, M, NN, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, narrow, NN);
        for (int i = 0; i < M; i++) {
            ck_assert_msg(memcmp(wide + (size_t)i * NW, narrow + (size_t)i * NN,
                                 sizeof(float) * NN) == 0,
                          "%s: row %d of an %s 8-column product differs from the 40-column one",
                          kernel, i, tb ? "NT" : "NN");
            ck_assert_msg(memcmp(wide + (size_t)i * NW + 32, full + (size_t)i * NF + 32,
                                 sizeof(float) * (NW - 32)) == 0,
                          "%s: row %d, columns 32..39 of an %s 40-column product (a ragged "
                          "last sliver) differ from the 64-column one", kernel, i,
                          tb ? "NT" : "NN");
        }
        free(A.v);
        free(B.v);
        free(full);
        free(wide);
        free(narrow);
    }
}

/* Likewise a ragged last panel of at most 8 rows uses a shorter AVX-512 tile (8 rows;
 * 4 rows for a panel of at most 4): the first rows of a 20-row product (a 6-row last
 * panel) and of a 17-row one (3 rows) equal those of a 28-row product (two full panels)
 * of the same data bit for bit, in every layout. */
static void check_short_tile(const char *kernel) {
    tt_rng r;
    tt_rng_seed(&r, 8);
    const int MW = 28, N = 70, K = 300;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        mat A = op_new(ta, MW, K, 0, &r);
        mat B = op_new(tb, K, N, 0, &r);
        float *wide = malloc(sizeof(float) * MW * N), *part = malloc(sizeof(float) * MW * N);
        tt_gemm(ta, tb, MW, N, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, wide, N);
        for (int MS = 20; MS >= 17; MS -= 3) {
            tt_gemm(ta, tb, MS, N, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, part, N);
            ck_assert_msg(memcmp(wide, part, sizeof(float) * MS * N) == 0,
                          "%s: %c%c: the first %d rows of a %d-row product differ from a "
                          "%d-row product", kernel, ta ? 'T' : 'N', tb ? 'T' : 'N', MS, MW, MS);
        }
        free(A.v), free(B.v), free(wide), free(part);
    }
}

START_TEST(test_gemm_narrow_tile_same_bits) {
    for_each_kernel(check_narrow_tile);
    for_each_kernel(check_short_tile);
}
END_TEST

/* Full panels of A and full slivers of a non-transposed B are read in place by the
 * micro-kernel when their row stride is at most 256 floats ("direct" operands, gemm.c;
 * a non-transposed A only by the AVX-512 kernel) and packed otherwise. Both
 * must give the same bits: the same product with the operands stored at stride 600 (a
 * copy padded with NaN, which must never be read) and at their natural stride. Ragged
 * sizes, so that edge panels and slivers (always packed) mix with direct ones; K = 450,
 * two k slices, so that the one-row-block driver runs its two loop orders (k slices
 * inside the sliver loop when A is read in place - transposed, 100 floats a row -
 * outside it when A is packed); K = 200 for a non-transposed A read in place. */
static void check_direct_operands(const char *kernel) {
    tt_rng r;
    tt_rng_seed(&r, 11);
    const int M = 100, N = 70, WIDE = 600;
    for (int t = 0; t < 8; t++) {
        bool ta = t & 1, tb = t & 2;
        const int K = t & 4 ? 200 : 450;
        mat A = op_new(ta, M, K, 0, &r);
        mat B = op_new(tb, K, N, 0, &r);
        mat Aw = {A.rows, A.cols, WIDE, malloc(sizeof(float) * A.rows * WIDE)};
        mat Bw = {B.rows, B.cols, WIDE, malloc(sizeof(float) * B.rows * WIDE)};
        for (int i = 0; i < A.rows; i++)
            for (int j = 0; j < WIDE; j++)
                Aw.v[(size_t)i * WIDE + j] = j < A.cols ? A.v[(size_t)i * A.ld + j] : NAN;
        for (int i = 0; i < B.rows; i++)
            for (int j = 0; j < WIDE; j++)
                Bw.v[(size_t)i * WIDE + j] = j < B.cols ? B.v[(size_t)i * B.ld + j] : NAN;
        float *c1 = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * M * N);
        tt_gemm(ta, tb, M, N, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, c1, N);
        tt_gemm(ta, tb, M, N, K, 1.0f, Aw.v, WIDE, Bw.v, WIDE, 0.0f, c2, N);
        ck_assert_msg(memcmp(c1, c2, sizeof(float) * M * N) == 0,
                      "%s: %c%c product with row strides %d/%d differs from stride %d", kernel,
                      ta ? 'T' : 'N', tb ? 'T' : 'N', A.ld, B.ld, WIDE);
        free(A.v), free(B.v), free(Aw.v), free(Bw.v), free(c1), free(c2);
    }
}

/* Small products (M N K < 32^3, or M or N = 1) take plain loops, vectorised over j but
 * with each element's float operations in the scalar order (gemm.c, gemm_small): the
 * result must be the bits of that scalar loop, written out here - every layout, N not a
 * multiple of 16, K above the transposed block's 256, beta 0, 1 and other, padded rows. */
static void small_reference(bool ta, bool tb, int M, int N, int K, float alpha, const mat *A,
                            const mat *B, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float *c = C + (size_t)i * ldc + j;
            if (tb) {
                float s = 0.0f;
                for (int k = 0; k < K; k++)
                    s += (ta ? A->v[(size_t)k * A->ld + i] : A->v[(size_t)i * A->ld + k]) *
                         B->v[(size_t)j * B->ld + k];
                *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
            } else {
                float v = beta == 0.0f ? 0.0f : beta != 1.0f ? beta * *c : *c;
                for (int k = 0; k < K; k++) {
                    const float a = ta ? A->v[(size_t)k * A->ld + i] : A->v[(size_t)i * A->ld + k];
                    v += (alpha * a) * B->v[(size_t)k * B->ld + j];
                }
                *c = v;
            }
        }
}

START_TEST(test_gemm_small_scalar_bits) {
    tt_rng r;
    tt_rng_seed(&r, 21);
    static const int sz[][3] = {{5, 3, 7},  {7, 37, 20}, {16, 16, 16}, {2, 70, 200},
                                {3, 20, 300}, {1, 300, 90}, {90, 1, 300}, {1, 1000, 1000},
                                {40, 17, 45}};
    static const float ab[][2] = {{1.0f, 0.0f}, {-1.5f, 1.0f}, {0.75f, 0.5f}};
    for (size_t s = 0; s < sizeof sz / sizeof sz[0]; s++)
        for (int t = 0; t < 4; t++)
            for (int v = 0; v < 3; v++) {
                const bool ta = t & 1, tb = t & 2;
                const int M = sz[s][0], N = sz[s][1], K = sz[s][2], ldc = N + 3;
                mat A = op_new(ta, M, K, 2, &r), B = op_new(tb, K, N, 1, &r);
                float *c1 = malloc(sizeof(float) * M * ldc), *c2 = malloc(sizeof(float) * M * ldc);
                for (int i = 0; i < M * ldc; i++) c1[i] = c2[i] = tt_rng_uniform(&r);
                small_reference(ta, tb, M, N, K, ab[v][0], &A, &B, ab[v][1], c1, ldc);
                tt_gemm(ta, tb, M, N, K, ab[v][0], A.v, A.ld, B.v, B.ld, ab[v][1], c2, ldc);
                ck_assert_msg(memcmp(c1, c2, sizeof(float) * M * ldc) == 0,
                              "%c%c M=%d N=%d K=%d alpha=%g beta=%g: not the scalar loop's bits",
                              ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, (double)ab[v][0],
                              (double)ab[v][1]);
                free(A.v), free(B.v), free(c1), free(c2);
            }
}
END_TEST

START_TEST(test_gemm_direct_operands_same_bits) { for_each_kernel(check_direct_operands); }
END_TEST

/* tt_gemm_bias (bias and ReLU applied by the micro-kernel as it stores a tile, on the
 * last k slice only) equals tt_gemm followed by the separate pass x + b, x > 0 ? x : 0,
 * bit for bit: every layout, ragged tiles, three k slices, the small-product and K = 0
 * paths, beta != 0, and a NaN row of A (its ReLU is 0, as the select gives). */
static void check_bias_epilogue(const char *kernel) {
    tt_rng r;
    tt_rng_seed(&r, 13);
    static const int sz[][3] = {{100, 70, 45}, {40, 36, 1000}, {5, 3, 7}, {30, 20, 0}};
    for (size_t s = 0; s < sizeof sz / sizeof sz[0]; s++)
        for (int t = 0; t < 8; t++) {
            bool ta = t & 1, tb = t & 2, relu = t & 4;
            const int M = sz[s][0], N = sz[s][1], K = sz[s][2];
            mat A = op_new(ta, M, K, 1, &r);
            mat B = op_new(tb, K, N, 1, &r);
            if (K > 0) A.v[ta ? 3 : 3 * (size_t)A.ld] = NAN; /* poisons row 3 of C */
            float *bias = malloc(sizeof(float) * N), *c1 = malloc(sizeof(float) * M * N),
                  *c2 = malloc(sizeof(float) * M * N);
            for (int j = 0; j < N; j++) bias[j] = 2.0f * tt_rng_uniform(&r) - 1.0f;
            for (int i = 0; i < M * N; i++) c1[i] = c2[i] = tt_rng_uniform(&r);
            tt_gemm(ta, tb, M, N, K, 1.5f, A.v, A.ld, B.v, B.ld, 0.5f, c1, N);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    float x = c1[(size_t)i * N + j] + bias[j];
                    c1[(size_t)i * N + j] = relu ? (x > 0.0f ? x : 0.0f) : x;
                }
            tt_gemm_bias(ta, tb, M, N, K, 1.5f, A.v, A.ld, B.v, B.ld, 0.5f, c2, N, bias, relu);
            ck_assert_msg(memcmp(c1, c2, sizeof(float) * M * N) == 0,
                          "%s: %c%c M=%d N=%d K=%d relu=%d: tt_gemm_bias differs from tt_gemm "
                          "then bias%s", kernel, ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, relu,
                          relu ? " and ReLU" : "");
            free(A.v), free(B.v), free(bias), free(c1), free(c2);
        }
}

START_TEST(test_gemm_bias_epilogue_same_bits) { for_each_kernel(check_bias_epilogue); }
END_TEST

/* A product of at most 8 columns and at least 64 rows is computed transposed by the
 * AVX-512 kernel (C^T = op(B)^T op(A)^T in blocks of 448 rows of C, then copied into C
 * with the epilogue; gemm.c, gemm_few_columns) unless that would cut K into other slices
 * (K = 400 with C's rows 600 floats apart: one slice for C, two for the blocks), or beta
 * != 0 meets alpha != 1 or two k slices (K = 400 with C's rows 12 floats apart). Either
 * way each column must have the bits of the same column of a 12-column product (computed
 * directly) with the same row stride of C, in every layout and epilogue; C's padding
 * columns stay untouched, and with 2 threads (a large product) nothing changes. (The other
 * kernels never take this route: only AVX-512 is checked.) */
static void check_few_columns(const char *kernel) {
    tt_rng r;
    tt_rng_seed(&r, 17);
    enum { NW = 12 };
    /* (at least 32^3 multiply-adds: a smaller product takes the plain loops, gemm_small,
     * which sum in another order than the tiles - then the two products would differ) */
    static const int rows[] = {256, 300, 1024}, cols[] = {2, 4, 8}, depth[] = {64, 400},
                     ldcs[] = {NW, 600};
    static const struct {
        float alpha, beta;
        bool bias, relu;
    } epi[] = {{1.0f, 0.0f, false, false}, {0.5f, 0.0f, true, true}, {1.0f, 1.0f, true, false},
               {1.0f, 0.25f, false, true}, {0.75f, -1.0f, false, false}};
    float bias[NW];
    for (int j = 0; j < NW; j++) bias[j] = 2.0f * tt_rng_uniform(&r) - 1.0f;
    for (int mi = 0; mi < 3; mi++)
        for (int ki = 0; ki < 2; ki++)
            for (int t = 0; t < 8; t++) {
                const bool ta = t & 1, tb = t & 2;
                const int M = rows[mi], K = depth[ki], ld = ldcs[t >> 2];
                mat A = op_new(ta, M, K, 0, &r);
                mat B = op_new(tb, K, NW, 0, &r); /* its first columns of op(B) for N < NW */
                const size_t n = (size_t)M * ld;
                float *c0 = malloc(sizeof(float) * n), *wide = malloc(sizeof(float) * n),
                      *few = malloc(sizeof(float) * n);
                for (size_t i = 0; i < n; i++) c0[i] = 2.0f * tt_rng_uniform(&r) - 1.0f;
                for (size_t e = 0; e < sizeof epi / sizeof epi[0]; e++)
                    for (int ni = 0; ni < 3; ni++) {
                        const int N = cols[ni];
                        memcpy(wide, c0, sizeof(float) * n);
                        for (int i = 0; i < M; i++)
                            for (int j = 0; j < NW; j++)
                                few[(size_t)i * ld + j] = j < N ? c0[(size_t)i * ld + j] : NAN;
                        tt_gemm_bias(ta, tb, M, NW, K, epi[e].alpha, A.v, A.ld, B.v, B.ld,
                                     epi[e].beta, wide, ld, epi[e].bias ? bias : NULL,
                                     epi[e].relu);
                        tt_gemm_bias(ta, tb, M, N, K, epi[e].alpha, A.v, A.ld, B.v, B.ld,
                                     epi[e].beta, few, ld, epi[e].bias ? bias : NULL,
                                     epi[e].relu);
                        for (int i = 0; i < M; i++)
                            for (int j = 0; j < NW; j++) {
                                const float got = few[(size_t)i * ld + j],
                                            want = wide[(size_t)i * ld + j];
                                if (j >= N)
                                    ck_assert_msg(isnan(got), "%s: padding column %d written",
                                                  kernel, j);
                                else if (memcmp(&got, &want, sizeof got) != 0)
                                    ck_abort_msg("%s: %c%c %dx%dx%d ldc %d alpha %g beta %g "
                                                 "bias %d relu %d: C[%d][%d] = %.9g, the "
                                                 "%d-column product has %.9g",
                                                 kernel, ta ? 'T' : 'N', tb ? 'T' : 'N', M, N,
                                                 K, ld, epi[e].alpha, epi[e].beta, epi[e].bias,
                                                 epi[e].relu, i, j, got, NW, want);
                            }
                    }
                free(A.v), free(B.v), free(c0), free(wide), free(few);
            }
#ifdef _OPENMP
    /* 4096 x 8 x 512: enough multiply-adds for the transposed product's second thread */
    int saved = omp_get_max_threads();
    const int M = 4096, N = 8, K = 512;
    mat A = op_new(false, M, K, 0, &r), B = op_new(true, K, N, 0, &r);
    float *c1 = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * M * N);
    omp_set_num_threads(1);
    tt_gemm_bias(false, true, M, N, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, c1, N, bias, false);
    omp_set_num_threads(2);
    tt_gemm_bias(false, true, M, N, K, 1.0f, A.v, A.ld, B.v, B.ld, 0.0f, c2, N, bias, false);
    omp_set_num_threads(saved);
    ck_assert_msg(memcmp(c1, c2, sizeof(float) * M * N) == 0,
                  "%s: %dx%dx%d on 2 threads differs from 1", kernel, M, N, K);
    free(A.v), free(B.v), free(c1), free(c2);
#endif
}

START_TEST(test_gemm_few_columns_same_bits) {
    if (!tt_gemm_set_kernel("avx512")) {
        printf("  kernel avx512: not supported by this CPU, skipped\n");
        return;
    }
    check_few_columns("avx512");
    tt_gemm_set_kernel(NULL);
}
END_TEST

/* Where the k slices are cut, seen in the bits: with a[0] b[0] = 2^24 and then ones for
 * k >= kc, one FMA chain over all of K stays at 2^24 (2^24 + 1 rounds back to even), while
 * a second slice sums its ones apart and adds them to C: 2^24 + (K - kc), rounded. For a
 * C of rows at least 512 floats apart, a K of up to kc + kc / 3 must be one slice
 * (slice_depth in gemm.c) and one more must not; for a narrower C, K = kc + 2 is two
 * slices already. kc of each kernel as in gemm.c's kernel table. */
static void check_slices(const char *kernel, int M, int N, int ldc, int K, bool one_slice) {
    float *A = calloc((size_t)M * K, sizeof(float)), *B = calloc((size_t)K * N, sizeof(float));
    float *C = malloc(sizeof(float) * M * ldc);
    const int kc = !strcmp(kernel, "avx512") ? 384 : 256;
    for (int i = 0; i < M; i++) {
        A[(size_t)i * K] = 4096.0f;
        for (int k = kc; k < K; k++) A[(size_t)i * K + k] = 1.0f;
    }
    for (int j = 0; j < N; j++) {
        B[j] = 4096.0f;
        for (int k = kc; k < K; k++) B[(size_t)k * N + j] = 1.0f;
    }
    tt_gemm(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, ldc);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float c = C[(size_t)i * ldc + j];
            if (one_slice)
                ck_assert_msg(c == 16777216.0f, "%s: %dx%dx%d (ldc %d) should be one k slice: "
                              "C[%d][%d] = %.1f", kernel, M, N, K, ldc, i, j, (double)c);
            else
                ck_assert_msg(c > 16777216.0f, "%s: %dx%dx%d (ldc %d) should be two k slices: "
                              "C[%d][%d] = %.1f", kernel, M, N, K, ldc, i, j, (double)c);
        }
    free(A), free(B), free(C);
}

static void check_slice_depth(const char *kernel) {
    const int kc = !strcmp(kernel, "avx512") ? 384 : 256, deep = kc + kc / 3;
    check_slices(kernel, 20, 40, 512, deep, true); /* 40 columns of a wide C */
    check_slices(kernel, 20, 40, 512, deep + 1, false);
    check_slices(kernel, 20, 40, 511, deep, false);
    check_slices(kernel, 20, 512, 512, kc + 2, true);
    check_slices(kernel, 20, 256, 256, kc + 2, false);
    /* two row blocks of the shorter mc (378 rows for AVX-512, 96 / 108 for kc 256) */
    check_slices(kernel, kc == 384 ? 400 : 112, 40, 512, deep, true);
}

START_TEST(test_gemm_slice_depth) { ck_assert_int_ge(for_each_kernel(check_slice_depth), 1); }
END_TEST

START_TEST(test_gemm_env_selects_kernel) {
    /* TT_GEMM is read when the kernel is (re)chosen; unknown names fall back to auto */
    setenv("TT_GEMM", "generic", 1);
    tt_gemm_set_kernel(NULL);
    ck_assert_str_eq(tt_gemm_kernel(), "generic");
    setenv("TT_GEMM", "no-such-kernel", 1);
    tt_gemm_set_kernel(NULL);
    const char *fallback = tt_gemm_kernel();
    tt_gemm_set_kernel("auto");
    ck_assert_str_eq(fallback, tt_gemm_kernel());
    ck_assert(!tt_gemm_set_kernel("sse9"));
    ck_assert_str_eq(fallback, tt_gemm_kernel());
    unsetenv("TT_GEMM");
    tt_gemm_set_kernel(NULL);
    printf("  automatic kernel on this CPU: %s\n", tt_gemm_kernel());
}
END_TEST

START_TEST(test_gemm_bad_arguments) {
    float x[16] = {0};
    TT_EXPECT_ERROR(tt_gemm(false, false, 4, 4, 4, 1.0f, x, 3, x, 4, 0.0f, x, 4),
                    "gemm: leading dimension too small: lda=3");
    TT_EXPECT_ERROR(tt_gemm(true, false, 2, 4, 2, 1.0f, x, 2, x, 4, 0.0f, x, 3),
                    "ldc=3 (C 2x4)");
    TT_EXPECT_ERROR(tt_gemm(false, false, -1, 4, 4, 1.0f, x, 4, x, 4, 0.0f, x, 4),
                    "gemm: negative size M=-1");
}
END_TEST

static Suite *gemm_suite(void) {
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("gemm");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_gemm_small_by_hand);
    tcase_add_test(tc, test_gemm_small_scalar_bits);
    tcase_add_test(tc, test_gemm_matches_reference_every_kernel);
    tcase_add_test(tc, test_gemm_special_values);
    tcase_add_test(tc, test_gemm_bit_identical_1_and_2_threads);
    tcase_add_test(tc, test_gemm_narrow_tile_same_bits);
    tcase_add_test(tc, test_gemm_direct_operands_same_bits);
    tcase_add_test(tc, test_gemm_bias_epilogue_same_bits);
    tcase_add_test(tc, test_gemm_few_columns_same_bits);
    tcase_add_test(tc, test_gemm_slice_depth);
    tcase_add_test(tc, test_gemm_env_selects_kernel);
    tcase_add_test(tc, test_gemm_bad_arguments);
    tcase_add_test(tc, test_gemm_claimed_work_same_bits);
    suite_add_tcase(s, tc);
    /* (its own case: the child runs only this one, CK_RUN_CASE) */
    TCase *tc1 = tcase_create("claims, team of one");
    tcase_set_timeout(tc1, 300);
    tcase_add_test(tc1, test_gemm_claimed_work_team_of_one);
    suite_add_tcase(s, tc1);
    return s;
}

TT_TEST_MAIN(gemm_suite)

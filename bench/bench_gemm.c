/* bench_gemm.c - tt_gemm against OpenBLAS's cblas_sgemm, one thread.
 *
 * Both compute C[M,N] = alpha op(A) op(B) + beta C, row-major, op = transpose or not.
 * Layout names read as the transposes of A and B:
 *   NT  C = A B^T   forward of a Linear: x [M,K] @ W[N,K]^T
 *   NN  C = A B     backward dX = dY [M,out] @ W [out,in]
 *   TN  C = A^T B   backward dW = dY^T [out,M] @ X [M,in]
 * Cases: square sizes 64..1024 in all three layouts, then the shapes of the "small"
 * benchmark configuration (hidden 256, rank 64, 8 experts of width 1024, top-2, vocab
 * 256, 8 x 128 tokens), each Linear forward and both backward products, and one
 * (batch, head) slice of the attention products.
 *
 * Every case is checked: the two results must agree to a relative error of 1e-4 of the
 * largest |C| (both sum K products in float; different summation orders differ by a few
 * ulps times sqrt(K)). Without OpenBLAS (no HAVE_CBLAS) only tt_gemm is timed and it is
 * checked against a double-precision triple loop on the smaller cases.
 *
 * --cold: every call gets a different copy of A, B and C, rotating through enough copies
 * to fill 64 MB (twice the L3 of the machines we use), so the operands come from memory
 * as they do in a training step (each activation is touched by a few ops, then evicted)
 * rather than from L2 as in a loop over the same product. The packing, which reads
 * every operand element once, weighs more then.
 *
 * Timing: OpenBLAS and tt_gemm batches alternate (see time_pair), so that their ratio
 * compares the two in the same spells of a noisy host; GFLOP/s are each one's median batch.
 *
 * Output: one table row per case.
 *   usage: bench_gemm [--quick] [--cold] [--threads N] [--min-time SECONDS]
 */
#define _GNU_SOURCE
#include "kernels/gemm.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef HAVE_CBLAS
#include <cblas.h>
#endif

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct gemm_case {
    const char *name; /* what the product is in the model */
    bool ta, tb;
    int M, N, K;
} gemm_case;

static float *alloc_f(size_t n) {
    size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "bench_gemm: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static void fill(float *p, size_t n, unsigned *state) {
    for (size_t i = 0; i < n; i++) {
        *state = *state * 1664525u + 1013904223u;
        p[i] = (float)((*state >> 8) & 0xFFFF) / 32768.0f - 1.0f; /* [-1, 1) */
    }
}

typedef void (*gemm_fn)(const gemm_case *c, const float *A, const float *B, float *C);

static void run_tt(const gemm_case *c, const float *A, const float *B, float *C) {
    int lda = c->ta ? c->M : c->K, ldb = c->tb ? c->K : c->N;
    tt_gemm(c->ta, c->tb, c->M, c->N, c->K, 1.0f, A, lda, B, ldb, 0.0f, C, c->N);
}

#ifdef HAVE_CBLAS
static void run_blas(const gemm_case *c, const float *A, const float *B, float *C) {
    int lda = c->ta ? c->M : c->K, ldb = c->tb ? c->K : c->N;
    cblas_sgemm(CblasRowMajor, c->ta ? CblasTrans : CblasNoTrans,
                c->tb ? CblasTrans : CblasNoTrans, c->M, c->N, c->K, 1.0f, A, lda, B, ldb,
                0.0f, C, c->N);
}
#endif

#ifndef HAVE_CBLAS
/* Double-precision reference (used only without OpenBLAS). */
static void run_ref(const gemm_case *c, const float *A, const float *B, float *C) {
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double s = 0;
            for (int k = 0; k < c->K; k++) {
                double a = c->ta ? A[(size_t)k * c->M + i] : A[(size_t)i * c->K + k];
                double b = c->tb ? B[(size_t)j * c->K + k] : B[(size_t)k * c->N + j];
                s += a * b;
            }
            C[(size_t)i * c->N + j] = (float)s;
        }
}
#endif

/* The operands of one case: n copies (1, or enough to flush the caches with --cold). */
typedef struct operands {
    int n;
    float **A, **B, **C;
} operands;

/* Calls per batch so that a batch of fn lasts about `batch` seconds (after one warm-up
 * call). Call r uses operand copy r mod n. */
static long calibrate(gemm_fn fn, const gemm_case *c, const operands *o, double batch) {
    fn(c, o->A[0], o->B[0], o->C[0]);
    long reps = 1;
    for (;;) {
        double t0 = now_sec();
        for (long r = 0; r < reps; r++) fn(c, o->A[r % o->n], o->B[r % o->n], o->C[r % o->n]);
        double dt = now_sec() - t0;
        if (dt >= batch || reps > (1L << 24)) return reps;
        double grow = dt > 1e-6 ? 1.3 * batch / dt : 16.0;
        reps = (long)((double)reps * (grow > 16 ? 16 : (grow < 2 ? 2 : grow)));
    }
}

/* Seconds per call of one batch of reps calls. */
static double batch_time(gemm_fn fn, const gemm_case *c, const operands *o, long reps) {
    double t0 = now_sec();
    for (long r = 0; r < reps; r++) fn(c, o->A[r % o->n], o->B[r % o->n], o->C[r % o->n]);
    return (now_sec() - t0) / (double)reps;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The timing of one case, for one function (x) or two (x against y). This host's speed
 * swings by tens of per cent within seconds, so y is not timed after x but interleaved
 * with it: BLOCKS blocks of four batches in the order x y y x, each block giving the
 * ratio (x1 + x2) / (y1 + y2) of its batch times; `ratio` is the median of those, and
 * each function's seconds per call the median of its 2 BLOCKS batches. Both sample the
 * same spells. 8 blocks (4 until the twentieth session, when one case of one run came out
 * at 0.80 against its usual 0.94: a stall of the host over one of four blocks moves a
 * median of four) in the same min_time: shorter batches, more of them. */
enum { BLOCKS = 8 };
typedef struct timing {
    double sec_x, sec_y; /* median batch, seconds per call */
    double ratio;        /* median block ratio time(x) / time(y); 0 without y */
} timing;

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return 0.5 * (v[(n - 1) / 2] + v[n / 2]);
}

static timing time_pair(gemm_fn x, gemm_fn y, const gemm_case *c, const operands *o,
                        double min_time) {
    const double batch = min_time / (2 * BLOCKS); /* min_time per function in all */
    const long rx = calibrate(x, c, o, batch), ry = y ? calibrate(y, c, o, batch) : 0;
    double sx[2 * BLOCKS], sy[2 * BLOCKS], ratios[BLOCKS];
    int nx = 0, ny = 0;
    for (int b = 0; b < BLOCKS; b++) {
        double tx = 0, ty = 0;
        for (int k = 0; k < 4; k++) {
            const bool is_x = k == 0 || k == 3;
            if (is_x)
                tx += sx[nx++] = batch_time(x, c, o, rx);
            else if (y)
                ty += sy[ny++] = batch_time(y, c, o, ry);
        }
        ratios[b] = y ? tx / ty : 0;
    }
    timing t = {median(sx, nx), y ? median(sy, ny) : 0, median(ratios, BLOCKS)};
    return t;
}

static double rel_err(const float *x, const float *ref, size_t n) {
    double maxref = 0, maxdiff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - (double)ref[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* also catches NaN */
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    }
    return maxdiff / (maxref > 0 ? maxref : 1);
}

#define MAX_CASES 64

/* A Linear of the model on M tokens, in -> out: its forward and both backward products. */
static int add_linear(gemm_case *cs, int n, const char *name, int M, int in, int out) {
    static char names[MAX_CASES][48];
    snprintf(names[n], sizeof names[n], "%s fwd", name);
    cs[n] = (gemm_case){names[n], false, true, M, out, in};
    n++;
    snprintf(names[n], sizeof names[n], "%s dX", name);
    cs[n] = (gemm_case){names[n], false, false, M, in, out};
    n++;
    snprintf(names[n], sizeof names[n], "%s dW", name);
    cs[n] = (gemm_case){names[n], true, false, out, in, M};
    n++;
    return n;
}

int main(int argc, char **argv) {
    bool quick = false, cold = false;
    int threads = 1;
    double min_time = 0.15;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--cold")) cold = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc) min_time = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--cold] [--threads N] [--min-time SECONDS]\n",
                    argv[0]);
            return 2;
        }
    }
    if (quick) min_time = 0.05;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
#ifdef HAVE_CBLAS
    openblas_set_num_threads(threads);
#endif

    gemm_case cs[MAX_CASES];
    int n = 0;
    static char sq[16][32];
    int sizes[] = {64, 128, 256, 512, 1024};
    for (int s = 0; s < 5; s++) {
        const char *lay[3] = {"NT", "NN", "TN"};
        for (int l = 0; l < 3; l++) {
            snprintf(sq[s * 3 + l], sizeof sq[0], "square %s", lay[l]);
            cs[n++] = (gemm_case){sq[s * 3 + l], l == 2, l == 0, sizes[s], sizes[s], sizes[s]};
        }
    }
    /* the small configuration: 8 x 128 = 1024 tokens, hidden 256, rank 64, 8 heads of 32,
     * experts 256 -> 1024 -> 256 on 1024 * 2 / 8 = 256 routed rows on average */
    const int tok = 1024, d = 256, r = 64, h = 1024, V = 256, E = 8, T = 128, dh = 32;
    n = add_linear(cs, n, "q_proj/o_proj", tok, d, d);
    n = add_linear(cs, n, "kv_a_proj", tok, d, r);
    n = add_linear(cs, n, "kv_b_proj", tok, r, 2 * d);
    n = add_linear(cs, n, "gate", tok, d, E);
    n = add_linear(cs, n, "expert fc1", tok * 2 / E, d, h);
    n = add_linear(cs, n, "expert fc2", tok * 2 / E, h, d);
    n = add_linear(cs, n, "head", tok, d, V);
    /* attention, one (batch, head): S = Q K^T [T,dh]x[T,dh]^T; O = A V [T,T]x[T,dh] */
    cs[n++] = (gemm_case){"attn S=QK^T", false, true, T, T, dh};
    cs[n++] = (gemm_case){"attn dQ=dS K", false, false, T, dh, T};
    cs[n++] = (gemm_case){"attn dK=dS^T Q", true, false, T, dh, T};
    cs[n++] = (gemm_case){"attn O=AV", false, false, T, dh, T};
    cs[n++] = (gemm_case){"attn dA=dO V^T", false, true, T, T, dh};
    cs[n++] = (gemm_case){"attn dV=A^T dO", true, false, T, dh, T};

#ifdef HAVE_CBLAS
    const char *core = openblas_get_corename();
    printf("GEMM micro-benchmark: tt_gemm vs OpenBLAS cblas_sgemm (core %s), %d thread%s%s\n",
           core ? core : "?", threads, threads == 1 ? "" : "s", cold ? ", cold operands" : "");
#else
    printf("GEMM micro-benchmark: tt_gemm only (built without OpenBLAS), %d thread%s%s\n",
           threads, threads == 1 ? "" : "s", cold ? ", cold operands" : "");
#endif
    printf("%-18s %-3s %5s %5s %5s %10s %10s %7s %9s\n", "case", "lay", "M", "N", "K",
           "tt GF/s", "blas GF/s", "tt/blas", "rel.err");

    int failures = 0;
    unsigned seed = 12345u;
    for (int i = 0; i < n; i++) {
        const gemm_case *c = &cs[i];
        size_t na = (size_t)c->M * c->K, nb = (size_t)c->K * c->N, nc = (size_t)c->M * c->N;
        float *R = alloc_f(nc);
        operands o = {1, NULL, NULL, NULL};
        if (cold) {
            size_t bytes = (na + nb + nc) * sizeof(float);
            o.n = (int)((((size_t)64 << 20) + bytes - 1) / bytes);
        }
        o.A = malloc(o.n * sizeof(float *));
        o.B = malloc(o.n * sizeof(float *));
        o.C = malloc(o.n * sizeof(float *));
        if (!o.A || !o.B || !o.C) {
            fprintf(stderr, "bench_gemm: out of memory\n");
            return 1;
        }
        for (int q = 0; q < o.n; q++) {
            o.A[q] = alloc_f(na);
            o.B[q] = alloc_f(nb);
            o.C[q] = alloc_f(nc);
            fill(o.A[q], na, &seed);
            fill(o.B[q], nb, &seed);
            memset(o.C[q], 0, nc * sizeof(float)); /* fault the pages in before timing */
        }
        float *A = o.A[0], *B = o.B[0], *C = o.C[0];
        char lay[3] = {c->ta ? 'T' : 'N', c->tb ? 'T' : 'N', 0};
        double flops = 2.0 * c->M * c->N * c->K;

        run_tt(c, A, B, C);
        double err = -1, g_blas = 0, g_tt, speed = 0;
#ifdef HAVE_CBLAS
        run_blas(c, A, B, R);
        err = rel_err(C, R, nc);
        /* ratio = time(blas) / time(tt): > 1, tt_gemm faster */
        timing tm = time_pair(run_blas, run_tt, c, &o, min_time);
        g_blas = flops / tm.sec_x * 1e-9;
        g_tt = flops / tm.sec_y * 1e-9;
        speed = tm.ratio;
#else
        if (flops <= 2.0 * 256 * 256 * 256) {
            run_ref(c, A, B, R);
            err = rel_err(C, R, nc);
        }
        g_tt = flops / time_pair(run_tt, NULL, c, &o, min_time).sec_x * 1e-9;
#endif
        bool bad = err > 1e-4 || err != err;
        failures += bad;
        char errs[16] = "-", ratio[16] = "-", blas[16] = "-";
        if (err >= 0) snprintf(errs, sizeof errs, "%.1e%s", err, bad ? "!" : "");
        if (g_blas > 0) {
            snprintf(ratio, sizeof ratio, "%.2f", speed);
            snprintf(blas, sizeof blas, "%.1f", g_blas);
        }
        printf("%-18s %-3s %5d %5d %5d %10.1f %10s %7s %9s\n", c->name, lay, c->M, c->N, c->K,
               g_tt, blas, ratio, errs);
        /* for bench/run.sh's targets check: one line a case, the name without spaces */
        if (g_blas > 0) {
            char key[48];
            snprintf(key, sizeof key, "%s", c->name);
            for (char *q = key; *q; q++)
                if (*q == ' ') *q = '_';
            printf("GEMMCASE name=%s lay=%s M=%d N=%d K=%d square=%d ratio=%.4f\n", key, lay,
                   c->M, c->N, c->K, !strncmp(c->name, "square", 6), speed);
        }
        fflush(stdout);
        for (int q = 0; q < o.n; q++) {
            free(o.A[q]);
            free(o.B[q]);
            free(o.C[q]);
        }
        free(o.A);
        free(o.B);
        free(o.C);
        free(R);
    }
    if (failures) printf("bench_gemm: %d case(s) disagree with the reference!\n", failures);
    return failures ? 1 : 0;
}

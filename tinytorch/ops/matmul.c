/* matmul.c - matrix products: matmul (a @ b), matmul_nt (a @ b^T), matmul_tn (a^T @ b).
 *
 * All three are C = op_a(A) @ op_b(B) on row-major matrices, computed by tt_gemm with the
 * transposes folded into its packing (nothing is ever copied or transposed in memory):
 *
 *   op          A stored   B stored   C        forward gemm (ta, tb)
 *   matmul      [M, K]     [K, N]     [M, N]   (0, 0)
 *   matmul_nt   [M, K]     [N, K]     [M, N]   (0, 1)    x @ W^T (Linear), Q @ K^T
 *   matmul_tn   [K, M]     [K, N]     [M, N]   (1, 0)
 *
 * Backward, with G = dL/dC [M, N]. From dC = dA B + A dB for C = A B:
 *   dL/dA = G B^T            dL/dB = A^T G
 * and for the transposed variants the same with the stored matrices substituted:
 *   matmul:     dA [M,K] += G @ B^T        dB [K,N] += A^T @ G
 *   matmul_nt:  C = A B^T  ->  dA [M,K] += G @ B       (G [M,N], B [N,K])
 *                              dB [N,K] += G^T @ A     ((A^T G)^T = G^T A)
 *   matmul_tn:  C = A^T B  ->  d(A^T) = G B^T, so dA [K,M] += (G B^T)^T = B @ G^T
 *                              dB [K,N] += (A^T)^T G = A @ G
 * Each is one tt_gemm call with beta = 1, so the products accumulate straight into the
 * gradient buffers (+=), or with beta = 0 when the buffer is new (nothing to zero first),
 * and an input that does not require grad costs nothing.
 *
 * Batches: a [..., M, K] with b 2-D flattens the leading axes of a into M (one gemm; the
 * weight is shared). With 3-D a and b of the same leading size B, batch p multiplies
 * a[p] by b[p]. Small batched products run their batches in parallel (OpenMP), each batch
 * on one thread, so results do not depend on the thread count.
 */
#include "../internal.h"
#include "../kernels/gemm.h"

#include <limits.h>

typedef enum { MM_NN, MM_NT, MM_TN } mm_kind;
static const char *const mm_name[] = {"matmul", "matmul_nt", "matmul_tn"};

/* Saved in node->i: the problem and its batching. */
enum { I_NB, I_M, I_N, I_K, I_KIND };

typedef struct mm_dims {
    int nb;          /* number of independent products (1 unless batched)  */
    int M, N, K;     /* each C is M x N, summed over K                        */
    bool ta, tb;     /* A stored [K, M] / B stored [N, K]                      */
} mm_dims;

/* Below this many multiply-adds per batch, parallelise over the batch instead of inside
 * tt_gemm (which would not split such a small product anyway). */
#define MM_BATCH_PAR_MIN (1LL << 21)

/* C_p = op_a(A_p) @ op_b(B_p) for every batch p, or, for the backward, any of the
 * transposed products: the caller passes the gemm arguments of one batch and the batch
 * strides (in floats) of x, y, and the output z. */
typedef struct mm_call {
    bool tx, ty;
    int m, n, k;
    const float *x; size_t ldx, sx;
    const float *y; size_t ldy, sy;
    float beta;
    float *z; size_t ldz, sz;
} mm_call;

/* A leading dimension for tt_gemm: rows of zero length still have stride >= 1. */
static inline int ld1(size_t ld) { return ld ? (int)ld : 1; }

/* batches [p0, p1) of the mm_call ctx, in order */
static void gemm_batches(void *ctx, long p0, long p1) {
    const mm_call *c = ctx;
    for (long p = p0; p < p1; p++)
        tt_gemm(c->tx, c->ty, c->m, c->n, c->k, 1.0f, c->x + (size_t)p * c->sx, ld1(c->ldx),
                c->y + (size_t)p * c->sy, ld1(c->ldy), c->beta, c->z + (size_t)p * c->sz,
                ld1(c->ldz));
}

static void run_batched(int nb, mm_call *c) {
    long long work = (long long)c->m * c->n * c->k;
    /* Batches split between threads only when each is too small for tt_gemm to split but
     * all of them are worth it. A tt_gemm inside the parallel region is nested
     * (omp_get_level() > 0) and runs on 1 thread; on one thread (no region at all) each
     * tt_gemm may split its own product. */
    int nt = work < MM_BATCH_PAR_MIN ? tt_loop_threads((size_t)(work * nb), MM_BATCH_PAR_MIN, nb)
                                     : 1;
    tt_parallel_for(nb, nt, gemm_batches, c);
}

/* ---- forward and backward ------------------------------------------------------------- */

static void mm_forward(const mm_dims *d, const float *a, const float *b, float *c) {
    int M = d->M, N = d->N, K = d->K;
    mm_call call = {
        .tx = d->ta, .ty = d->tb, .m = M, .n = N, .k = K,
        .x = a, .ldx = (size_t)(d->ta ? M : K), .sx = (size_t)M * K,
        .y = b, .ldy = (size_t)(d->tb ? K : N), .sy = (size_t)K * N,
        .beta = 0.0f,
        .z = c, .ldz = (size_t)N, .sz = (size_t)M * N,
    };
    run_batched(d->nb, &call);
}

static void matmul_backward(tt_node *n) {
    tt_tensor *a = n->in[0], *b = n->in[1];
    mm_kind kind = (mm_kind)n->i[I_KIND];
    int nb = n->i[I_NB], M = n->i[I_M], N = n->i[I_N], K = n->i[I_K];
    const float *g = n->out->grad;                  /* G [M, N] per batch            */
    size_t lda = kind == MM_TN ? (size_t)M : (size_t)K; /* row strides as stored       */
    size_t ldb = kind == MM_NT ? (size_t)K : (size_t)N;
    size_t sa = (size_t)M * K, sb = (size_t)K * N, sg = (size_t)M * N;
    /* a new gradient buffer is written (beta = 0) instead of zeroed and accumulated */
    bool fresh_a, fresh_b;
    float *ga = tt_grad_acc_fresh(a, &fresh_a);

    if (ga) {
        mm_call c = {.beta = fresh_a ? 0.0f : 1.0f, .z = ga, .sz = sa};
        if (kind != MM_TN) {
            /* matmul:    dA [M,K] += G [M,N] @ B^T   (B stored [K,N])
             * matmul_nt: dA [M,K] += G [M,N] @ B     (B stored [N,K]) */
            c.tx = false, c.ty = kind == MM_NN, c.m = M, c.n = K, c.k = N;
            c.x = g, c.ldx = (size_t)N, c.sx = sg;
            c.y = b->data, c.ldy = ldb, c.sy = sb;
            c.ldz = (size_t)K;
        } else {
            /* matmul_tn: dA [K,M] += B [K,N] @ G^T */
            c.tx = false, c.ty = true, c.m = K, c.n = M, c.k = N;
            c.x = b->data, c.ldx = ldb, c.sx = sb;
            c.y = g, c.ldy = (size_t)N, c.sy = sg;
            c.ldz = (size_t)M;
        }
        run_batched(nb, &c);
    }
    /* (after dA is complete: when a and b are one tensor, its buffer is no longer new) */
    float *gb = tt_grad_acc_fresh(b, &fresh_b);
    if (gb) {
        mm_call c = {.beta = fresh_b ? 0.0f : 1.0f, .z = gb, .sz = sb};
        if (kind != MM_NT) {
            /* matmul:    dB [K,N] += A^T @ G   (A stored [M,K])
             * matmul_tn: dB [K,N] += A @ G     (A stored [K,M]) */
            c.tx = kind == MM_NN, c.ty = false, c.m = K, c.n = N, c.k = M;
            c.x = a->data, c.ldx = lda, c.sx = sa;
            c.y = g, c.ldy = (size_t)N, c.sy = sg;
            c.ldz = (size_t)N;
        } else {
            /* matmul_nt: dB [N,K] += G^T @ A   (G [M,N], A [M,K]) */
            c.tx = true, c.ty = false, c.m = N, c.n = K, c.k = M;
            c.x = g, c.ldx = (size_t)N, c.sx = sg;
            c.y = a->data, c.ldy = lda, c.sy = sa;
            c.ldz = (size_t)K;
        }
        /* a 2-D b shared by a flattened a is one product (nb = 1), so no batch of dB
         * ever needs summing over several products */
        run_batched(nb, &c);
    }
}

/* ---- shape checking ----------------------------------------------------------------------- */

static tt_tensor *matmul(mm_kind kind, tt_tensor *a, tt_tensor *b, tt_src src) {
    const char *op = mm_name[kind];
    tt_check_f32(a, src, op, "a");
    tt_check_f32(b, src, op, "b");
    /* how the two are written in messages: 'x' [4, 3] @ 'w' [5, 2]^T */
    const char *ta_s = kind == MM_TN ? "^T" : "", *tb_s = kind == MM_NT ? "^T" : "";
    mm_dims d = {.nb = 1, .ta = kind == MM_TN, .tb = kind == MM_NT};
    int out_shape[TT_MAX_DIMS], out_nd;

    if (kind == MM_TN) {
        /* a [K, M] with b [K, N], or a [B, K, M] with b [B, K, N] */
        if (a->ndim < 2 || a->ndim > 3 || b->ndim != a->ndim)
            tt_error_at(src, op,
                        "expects a [K, M] and b [K, N], or a [B, K, M] and b [B, K, N]; got "
                        "%s%s @ %s",
                        tt_d(a), ta_s, tt_d(b));
    } else {
        /* a [..., M, K] with b 2-D, or a [B, M, K] with b 3-D */
        if (a->ndim < 1 || b->ndim < 2 || b->ndim > 3)
            tt_error_at(src, op,
                        "expects a [..., M, K] and a 2-D b, or a [B, M, K] and a 3-D b; got "
                        "%s @ %s%s",
                        tt_d(a), tt_d(b), tb_s);
        if (b->ndim == 3 && a->ndim != 3)
            tt_error_at(src, op, "batched b needs a 3-D a [B, M, K]; got %s @ %s%s", tt_d(a),
                        tt_d(b), tb_s);
    }
    bool batched = b->ndim == 3;
    if (batched && a->shape[0] != b->shape[0])
        tt_error_at(src, op, "batch sizes differ: %s%s @ %s%s (%d vs %d)", tt_d(a), ta_s,
                    tt_d(b), tb_s, a->shape[0], b->shape[0]);
    int ka, kb; /* the two sides of the shared dimension */
    const int *bs = b->shape + (batched ? 1 : 0);
    if (kind == MM_TN) {
        const int *as = a->shape + (batched ? 1 : 0);
        ka = as[0], d.M = as[1], kb = bs[0], d.N = bs[1];
    } else {
        ka = tt_last_dim(a);
        size_t rows = 1; /* the leading axes of a, flattened (1 for a 1-D a) */
        for (int i = batched ? 1 : 0; i < a->ndim - 1; i++) rows *= (size_t)a->shape[i];
        if (rows > INT_MAX) tt_error_at(src, op, "%s has too many rows (%zu)", tt_d(a), rows);
        d.M = (int)rows;
        if (kind == MM_NN)
            kb = bs[0], d.N = bs[1];
        else
            d.N = bs[0], kb = bs[1];
    }
    if (ka != kb)
        tt_error_at(src, op, "inner dimensions differ: %s%s @ %s%s", tt_d(a), ta_s, tt_d(b),
                    tb_s);
    d.K = ka;
    if (batched) d.nb = a->shape[0];

    if (kind == MM_TN || batched) {
        out_nd = a->ndim;
        if (batched) out_shape[0] = d.nb;
        out_shape[out_nd - 2] = d.M;
        out_shape[out_nd - 1] = d.N;
    } else {
        /* a's leading axes, then N */
        out_nd = a->ndim;
        for (int i = 0; i < a->ndim - 1; i++) out_shape[i] = a->shape[i];
        out_shape[out_nd - 1] = d.N;
    }
    tt_tensor *c = tt_tmp(TT_F32, out_nd, out_shape);
    mm_forward(&d, a->data, b->data, c->data);

    tt_tensor *in[2] = {a, b};
    tt_node *node = tt_record(op, matmul_backward, c, 2, in, src);
    if (node) {
        node->i[I_NB] = d.nb;
        node->i[I_M] = d.M;
        node->i[I_N] = d.N;
        node->i[I_K] = d.K;
        node->i[I_KIND] = kind;
    }
    return c;
}

tt_tensor *tt_matmul_(tt_tensor *a, tt_tensor *b, tt_src src) { return matmul(MM_NN, a, b, src); }
tt_tensor *tt_matmul_nt_(tt_tensor *a, tt_tensor *b, tt_src src) {
    return matmul(MM_NT, a, b, src);
}
tt_tensor *tt_matmul_tn_(tt_tensor *a, tt_tensor *b, tt_src src) {
    return matmul(MM_TN, a, b, src);
}

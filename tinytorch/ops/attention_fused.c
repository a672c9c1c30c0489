/* attention_fused.c - fused scaled-dot-product attention (see ../ops_attention.h).
 *
 * Per (batch b, head h) the operands are strided views of the input tensors:
 *   Q = q + b*q.bs + h*q.hs, row i at Q + i*q.ld      (likewise K, V and the output O)
 * so one routine serves the [BH, T, D] layout (H = 1), heads side by side in the last
 * axis, and K|V packed in one tensor.
 *
 * Rows are processed in blocks of RB queries. With the causal mask, block [i0, i1) sees
 * keys [0, n) with n = visible(i1 - 1), so the products cover the lower triangle plus
 * the diagonal blocks (about 56-62 % of the square at T = 128..256) and the saved
 * probabilities of the block are stored compactly as [i1 - i0, n] (row stride n).
 *
 * Forward, one block (G = dL/dO in the backward):
 *   A = scale * Q_blk K[0:n]^T            tt_gemm, into the block's slot of P
 *   P = softmax of each row over its visible keys, 0 for the masked ones
 *   O_blk = P V[0:n]                      tt_gemm
 * Backward, one block (scratch W [rows, n] per thread):
 *   W = G_blk V[0:n]^T                    dP
 *   W = P * (W - delta) * scale           dA;  delta_i = G_i . O_i  (= sum_j P_ij dP_ij)
 *   dQ_blk  += W K[0:n]                   dK[0:n] += W^T Q_blk
 *   dV[0:n] += P^T G_blk
 * Each (b, h) is one thread's, so every gradient element is summed in the same order
 * (block by block) whatever the thread count.
 */
#include "../internal.h"
#include "../kernels/gemm.h"
#include "../ops_attention.h"

#include <math.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif


/* Query rows per block. */
#define RB 32
/* Below this many multiply-adds in total, one thread does everything. */
#define PAR_MIN_WORK (1LL << 18) /* keeps the toy model serial: a parallel region costs ~5 us */

/* A strided operand: (b, h) starts at off + b*bs + h*hs, rows ld floats apart. */
typedef struct att_view {
    size_t off, ld, bs, hs;
} att_view;

typedef struct att_geom {
    int B, H, T, S, D, Dv;
    float scale;
    bool causal;
    att_view q, k, v, o;
    bool vec;   /* the vector path (D, Dv multiples of 16) instead of tt_gemm */
    size_t psz; /* floats of saved P per (b, h) */
} att_geom;

/* Saved for the backward: the geometry and P of every (b, h). Inputs: in[0] = q,
 * in[1] = k (also the values when n_in == 2), in[2] = v. */
typedef struct att_ctx {
    att_geom g;
    float *P;
} att_ctx;

/* Keys query i may see. */
static inline int visible(const att_geom *g, int i) {
    if (!g->causal) return g->S;
    int v = i + (g->S - g->T) + 1;
    return v < g->S ? v : g->S;
}

static inline size_t at(const att_view *w, int b, int h) {
    return w->off + (size_t)b * w->bs + (size_t)h * w->hs;
}

/* Floats of P for one (b, h): sum over blocks of rows x keys seen. */
static size_t p_size(const att_geom *g) {
    size_t n = 0;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T;
        n += (size_t)(i1 - i0) * (size_t)visible(g, i1 - 1);
    }
    return n;
}

/* ---- forward ------------------------------------------------------------------------- */

/* Softmax of the rows of one block in place: row r (query i0 + r) over its visible keys;
 * the keys it may not see (up to the block's n) become 0. Max-subtracted, the sum in
 * double as tt_softmax. */
static void softmax_block(const att_geom *g, float *P, int i0, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        float *p = P + (size_t)r * n;
        int vis = visible(g, i0 + r);
        float m = -INFINITY;
        for (int j = 0; j < vis; j++) m = p[j] > m ? p[j] : m;
        double s = 0.0;
        for (int j = 0; j < vis; j++) {
            float e = expf(p[j] - m);
            p[j] = e;
            s += e;
        }
        float inv = (float)(1.0 / s);
        for (int j = 0; j < vis; j++) p[j] *= inv;
        for (int j = vis; j < n; j++) p[j] = 0.0f;
    }
}

/* One (b, h): O = softmax(mask(scale Q K^T)) V. P receives the blocks' probabilities
 * (psz floats); without a backward it may be a scratch of RB * S floats reused by every
 * block (keep_p false). */
static void forward_bh(const att_geom *g, const float *q, const float *k, const float *v,
                       float *o, int b, int h, float *P, bool keep_p) {
    const float *Q = q + at(&g->q, b, h), *K = k + at(&g->k, b, h), *V = v + at(&g->v, b, h);
    float *O = o + at(&g->o, b, h);
    size_t poff = 0;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T, rows = i1 - i0, n = visible(g, i1 - 1);
        float *Pb = P + (keep_p ? poff : 0);
        tt_gemm(false, true, rows, n, g->D, g->scale, Q + (size_t)i0 * g->q.ld, (int)g->q.ld,
                K, (int)g->k.ld, 0.0f, Pb, n);
        softmax_block(g, Pb, i0, rows, n);
        tt_gemm(false, false, rows, g->Dv, n, 1.0f, Pb, n, V, (int)g->v.ld, 0.0f,
                O + (size_t)i0 * g->o.ld, (int)g->o.ld);
        poff += (size_t)rows * n;
    }
}

/* ---- the vector path (heads of 16k features) -------------------------------------------
 * tt_gemm is at its best on large products; a head of T = S = 32, D = 16 is 16 K
 * multiply-adds per product, where it falls back to scalar loops. When D and Dv are
 * multiples of 16 the products are done here instead, all in one form,
 *   C[r, 0:16v] (+)= sum_k a(r, k) * B[k, 0:16v]          (a strided: a(r, k) = A[r ar + k ak])
 * on 16-float vectors (GCC vector extensions; the function is compiled for AVX-512, AVX2
 * and baseline x86-64 and the best is picked at load time). Every lane is an independent
 * output element summed over k in order, with separate multiplies and adds (no FMA), so
 * the result is the same on every CPU and for every thread count. The Q K^T and G V^T
 * products use K^T and V^T, packed per (b, h) into [D, Sp] with Sp = S rounded up to 16
 * (zero padded); the blocks of P and of the scratch W have rows of np = n rounded up to
 * 16, the padding held at 0. */
#define VL 16
typedef float v16 __attribute__((vector_size(VL * sizeof(float))));
typedef float v16u __attribute__((vector_size(VL * sizeof(float)), aligned(4), may_alias));

static inline size_t pad16(size_t n) { return (n + VL - 1) / VL * VL; }

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* R x 16*NV tile of C, summed over k = 0..K-1. */
static ALWAYS_INLINE void vtile(const int R, const int NV, int K, const float *A, size_t ar,
                                size_t ak, const float *B, size_t ldb, float *C, size_t ldc,
                                bool acc) {
    v16 c[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            c[r][v] = acc ? (v16)(*(const v16u *)(C + r * ldc + v * VL)) : (v16){0};
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        v16 bv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = *(const v16u *)(b + v * VL);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            v16 a = (v16){0} + A[r * ar + (size_t)k * ak];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[r][v] += a * bv[v];
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) *(v16u *)(C + r * ldc + v * VL) = c[r][v];
}

/* C [M, 16 nv] (+)= op(A) [M, K] B [K, 16 nv], op(A)[r, k] = A[r ar + k ak]. */
static ALWAYS_INLINE void vgemm(int M, int nv, int K, const float *A, size_t ar, size_t ak,
                                const float *B, size_t ldb, float *C, size_t ldc, bool acc) {
    for (int v0 = 0; v0 < nv; v0 += 4) {
        const int NV = nv - v0 < 4 ? nv - v0 : 4;
        const float *Bv = B + (size_t)v0 * VL;
        float *Cv = C + (size_t)v0 * VL;
        int r = 0;
        for (; r + 4 <= M; r += 4) {
            const float *Ar = A + (size_t)r * ar;
            float *Cr = Cv + (size_t)r * ldc;
            switch (NV) {
            case 1: vtile(4, 1, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            case 2: vtile(4, 2, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            case 3: vtile(4, 3, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            default: vtile(4, 4, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            }
        }
        for (; r < M; r++) {
            const float *Ar = A + (size_t)r * ar;
            float *Cr = Cv + (size_t)r * ldc;
            switch (NV) {
            case 1: vtile(1, 1, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            case 2: vtile(1, 2, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            case 3: vtile(1, 3, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            default: vtile(1, 4, K, Ar, ar, ak, Bv, ldb, Cr, ldc, acc); break;
            }
        }
    }
}

/* Xt [C, Sp] = X[0:S, 0:C]^T (row stride ld), columns S..Sp-1 zero. */
static void pack_t(const float *X, size_t ld, int S, int C, float *Xt, size_t Sp) {
    for (int c = 0; c < C; c++) {
        float *row = Xt + (size_t)c * Sp;
        for (int j = 0; j < S; j++) row[j] = X[(size_t)j * ld + c];
        for (size_t j = (size_t)S; j < Sp; j++) row[j] = 0.0f;
    }
}

/* Floats of P for one (b, h) on the vector path (rows of np floats). */
static size_t p_size_v(const att_geom *g) {
    size_t n = 0;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T;
        n += (size_t)(i1 - i0) * pad16((size_t)visible(g, i1 - 1));
    }
    return n;
}

/* Scratch floats a thread needs on the vector path: the packed K^T or V^T and W. */
static size_t scratch_v(const att_geom *g) {
    int C = g->D > g->Dv ? g->D : g->Dv;
    return ((size_t)C + RB) * pad16((size_t)g->S);
}


typedef int32_t v16i __attribute__((vector_size(VL * sizeof(int32_t))));

/* (Macros, not functions: 64-byte vectors by value would draw GCC's -Wpsabi note.) */
#define vsel(mask, a, b) ((v16)(((v16i)(a) & (mask)) | ((v16i)(b) & ~(mask)))) /* mask ? a : b */
#define vsplat(x) ((v16){0} + (float)(x))

static ALWAYS_INLINE float vhmax(const v16 *v) {
    float m = (*v)[0];
    for (int i = 1; i < VL; i++) m = (*v)[i] > m ? (*v)[i] : m;
    return m;
}

static ALWAYS_INLINE double vhsum(const v16 *v) { /* lanes in order, in double */
    double s = 0.0;
    for (int i = 0; i < VL; i++) s += (*v)[i];
    return s;
}

/* e^x on 16 lanes for x <= 0 (the softmax's x - max). x = n ln2 + f, n = round(x / ln2),
 * |f| <= ln2 / 2 (ln2 in two parts, Cody-Waite); e^f by its degree-7 Taylor polynomial
 * (truncation error < 6e-9 relative, so within a few ulp of expf); 2^n goes into the
 * exponent bits. Below -86 (e^x < 5e-38, nothing next to the row's maximum term 1) the
 * result is 0. Lane-wise operations only, no FMA: the same bits on every CPU. */
static ALWAYS_INLINE void vexp(v16 *px) {
    v16 x = *px;
    const v16 lo = vsplat(-86.0f);
    v16i under = x < lo;
    x = vsel(under, lo, x);
    const v16 magic = vsplat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v16 r = (x * 1.44269504088896341f + magic) - magic;
    v16 f = (x - r * 0.693145751953125f) - r * 1.428606765330187e-06f;
    v16 p = vsplat(1.0f / 5040.0f);
    p = p * f + 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    v16i n = __builtin_convertvector(r, v16i);
    v16 y = (v16)((v16i)p + (n << 23));
    *px = (v16)((v16i)y & ~under);
}

/* Softmax of a block's rows (row stride np) over the visible keys, after scaling; the
 * rest of each row (to np) becomes 0. The row sum: 16 lane sums in float, added in
 * double. */
static ALWAYS_INLINE void softmax_block_scaled(const att_geom *g, float *P, int i0, int rows,
                                               size_t np) {
    const v16 scale = vsplat(g->scale), ninf = vsplat(-INFINITY);
    v16i iota;
    for (int i = 0; i < VL; i++) iota[i] = i;
    for (int r = 0; r < rows; r++) {
        float *p = P + (size_t)r * np;
        const int vis = visible(g, i0 + r);
        const v16i visv = (v16i){0} + vis;
        v16 mv = ninf;
        for (size_t j = 0; j < np; j += VL) {
            v16i ok = iota + (int)j < visv;
            v16 x = vsel(ok, *(v16u *)(p + j) * scale, ninf);
            *(v16u *)(p + j) = x;
            mv = vsel(x > mv, x, mv);
        }
        const v16 m = vsplat(vhmax(&mv));
        v16 sv = vsplat(0.0f);
        for (size_t j = 0; j < np; j += VL) {
            v16i ok = iota + (int)j < visv;
            v16 e = *(v16u *)(p + j) - m;
            vexp(&e);
            e = vsel(ok, e, vsplat(0.0f));
            *(v16u *)(p + j) = e;
            sv += e;
        }
        const v16 inv = vsplat((float)(1.0 / vhsum(&sv)));
        for (size_t j = 0; j < np; j += VL) *(v16u *)(p + j) = *(v16u *)(p + j) * inv;
    }
}

TT_CLONES static void forward_bh_v(const att_geom *g, const float *q, const float *k,
                                   const float *v, float *o, int b, int h, float *P, bool keep_p,
                                   float *scratch) {
    const float *Q = q + at(&g->q, b, h), *K = k + at(&g->k, b, h), *V = v + at(&g->v, b, h);
    float *O = o + at(&g->o, b, h);
    const size_t Sp = pad16((size_t)g->S);
    float *Kt = scratch;
    pack_t(K, g->k.ld, g->S, g->D, Kt, Sp);
    size_t poff = 0;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T, rows = i1 - i0, n = visible(g, i1 - 1);
        size_t np = pad16((size_t)n);
        float *Pb = P + (keep_p ? poff : 0);
        /* Pb [rows, np] = Q_blk K^T (scaled in the softmax) */
        vgemm(rows, (int)(np / VL), g->D, Q + (size_t)i0 * g->q.ld, g->q.ld, 1, Kt, Sp, Pb, np,
              false);
        softmax_block_scaled(g, Pb, i0, rows, np);
        /* O_blk = Pb V[0:n] */
        vgemm(rows, g->Dv / VL, n, Pb, np, 1, V, g->v.ld, O + (size_t)i0 * g->o.ld, g->o.ld,
              false);
        poff += (size_t)rows * np;
    }
}

TT_CLONES static void backward_bh_v(const att_geom *g, const float *q, const float *k,
                                    const float *v, const float *o, const float *go,
                                    const float *P, float *gq, float *gk, float *gv,
                                    float *scratch, int b, int h) {
    const size_t qo = at(&g->q, b, h), ko = at(&g->k, b, h), vo = at(&g->v, b, h),
                 oo = at(&g->o, b, h);
    const float *Q = q + qo, *K = k + ko, *V = v + vo, *O = o + oo, *G = go + oo;
    const size_t ldq = g->q.ld, ldk = g->k.ld, ldv = g->v.ld, ldo = g->o.ld;
    const size_t Sp = pad16((size_t)g->S);
    float *Vt = scratch, *W = scratch + (size_t)g->Dv * Sp;
    const float *Pb = P + (size_t)(b * g->H + h) * g->psz;
    if (gq || gk) pack_t(V, ldv, g->S, g->Dv, Vt, Sp);
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T, rows = i1 - i0, n = visible(g, i1 - 1);
        size_t np = pad16((size_t)n);
        const float *Gb = G + (size_t)i0 * ldo;
        if (gq || gk) {
            /* W = dP = G_blk V^T, then dA = P * (dP - delta) * scale */
            vgemm(rows, (int)(np / VL), g->Dv, Gb, ldo, 1, Vt, Sp, W, np, false);
            /* (P is 0 past each row's visible keys, so is dA) */
            const v16 scale = vsplat(g->scale);
            for (int r = 0; r < rows; r++) {
                const float *gr = Gb + (size_t)r * ldo, *orow = O + (size_t)(i0 + r) * ldo;
                v16 dv = vsplat(0.0f);
                for (int c = 0; c < g->Dv; c += VL)
                    dv += *(const v16u *)(gr + c) * *(const v16u *)(orow + c);
                const v16 delta = vsplat((float)vhsum(&dv));
                const float *p = Pb + (size_t)r * np;
                float *w = W + (size_t)r * np;
                for (size_t j = 0; j < np; j += VL)
                    *(v16u *)(w + j) =
                        *(const v16u *)(p + j) * (*(v16u *)(w + j) - delta) * scale;
            }
            /* dQ_blk += W K[0:n];  dK[0:n] += W^T Q_blk */
            if (gq)
                vgemm(rows, g->D / VL, n, W, np, 1, K, ldk, gq + qo + (size_t)i0 * ldq, ldq,
                      true);
            if (gk)
                vgemm(n, g->D / VL, rows, W, 1, np, Q + (size_t)i0 * ldq, ldq, gk + ko, ldk,
                      true);
        }
        /* dV[0:n] += P^T G_blk */
        if (gv) vgemm(n, g->Dv / VL, rows, Pb, 1, np, Gb, ldo, gv + vo, ldv, true);
        Pb += (size_t)rows * np;
    }
}

/* ---- backward ------------------------------------------------------------------------ */

/* One (b, h). gq, gk, gv (any may be NULL) are the gradient buffers laid out as q, k, v;
 * W is a scratch of RB * S floats. */
static void backward_bh(const att_geom *g, const float *q, const float *k, const float *v,
                        const float *o, const float *go, const float *P, float *gq, float *gk,
                        float *gv, float *W, int b, int h) {
    const size_t qo = at(&g->q, b, h), ko = at(&g->k, b, h), vo = at(&g->v, b, h),
                 oo = at(&g->o, b, h);
    const float *Q = q + qo, *K = k + ko, *V = v + vo, *O = o + oo, *G = go + oo;
    const int ldq = (int)g->q.ld, ldk = (int)g->k.ld, ldv = (int)g->v.ld, ldo = (int)g->o.ld;
    const float *Pb = P + (size_t)(b * g->H + h) * g->psz;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T, rows = i1 - i0, n = visible(g, i1 - 1);
        const float *Gb = G + (size_t)i0 * ldo;
        if (gq || gk) {
            /* W = dP = G V^T, then dA = P * (dP - delta) * scale */
            tt_gemm(false, true, rows, n, g->Dv, 1.0f, Gb, ldo, V, ldv, 0.0f, W, n);
            for (int r = 0; r < rows; r++) {
                const float *gr = Gb + (size_t)r * ldo, *orow = O + (size_t)(i0 + r) * ldo;
                float delta = 0.0f;
                for (int c = 0; c < g->Dv; c++) delta += gr[c] * orow[c];
                const float *p = Pb + (size_t)r * n;
                float *w = W + (size_t)r * n;
                int vis = visible(g, i0 + r);
                for (int j = 0; j < vis; j++) w[j] = p[j] * (w[j] - delta) * g->scale;
                for (int j = vis; j < n; j++) w[j] = 0.0f;
            }
            if (gq)
                tt_gemm(false, false, rows, g->D, n, 1.0f, W, n, K, ldk, 1.0f,
                        gq + qo + (size_t)i0 * ldq, ldq);
            if (gk)
                tt_gemm(true, false, n, g->D, rows, 1.0f, W, n, Q + (size_t)i0 * ldq, ldq,
                        1.0f, gk + ko, ldk);
        }
        if (gv)
            tt_gemm(true, false, n, g->Dv, rows, 1.0f, Pb, n, Gb, ldo, 1.0f, gv + vo, ldv);
        Pb += (size_t)rows * n;
    }
}

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static long long total_work(const att_geom *g) {
    return (long long)g->B * g->H * g->T * g->S * (g->D + g->Dv);
}

static void attention_backward(tt_node *n) {
    const att_ctx *c = n->ctx;
    const att_geom *g = &c->g;
    tt_tensor *tq = n->in[0], *tk = n->in[1], *tv = n->n_in == 3 ? n->in[2] : n->in[1];
    float *gq = tt_grad_acc(tq), *gk = tt_grad_acc(tk), *gv = tt_grad_acc(tv);
    if (!gq && !gk && !gv) return;
    const int nt = max_threads(), nbh = g->B * g->H;
    const size_t per = g->vec ? scratch_v(g) : (size_t)RB * g->S;
    float *scratch = tt_arena_alloc((size_t)nt * per * sizeof(float));
    const float *go = n->out->grad;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nbh > 1 && total_work(g) >= PAR_MIN_WORK)
#endif
    for (int bh = 0; bh < nbh; bh++) {
        float *w = scratch + (size_t)thread_id() * per;
        if (g->vec)
            backward_bh_v(g, tq->data, tk->data, tv->data, n->out->data, go, c->P, gq, gk, gv,
                          w, bh / g->H, bh % g->H);
        else
            backward_bh(g, tq->data, tk->data, tv->data, n->out->data, go, c->P, gq, gk, gv, w,
                        bh / g->H, bh % g->H);
    }
}

/* The op proper, once the geometry is known and checked. */
static tt_tensor *attention(att_geom *g, tt_tensor *q, tt_tensor *k, tt_tensor *v, int out_nd,
                            const int *out_shape, tt_src src) {
    tt_tensor *out = tt_tmp(TT_F32, out_nd, out_shape);
    tt_tensor *in[3] = {q, k, v};
    const int n_in = v ? 3 : 2;
    const float *vdata = v ? v->data : k->data;
    const int nt = max_threads(), nbh = g->B * g->H;
    const bool keep = tt_needs_grad(n_in, in);
    g->vec = g->D > 0 && g->Dv > 0 && g->D % VL == 0 && g->Dv % VL == 0;
    const char *force = getenv("TT_ATTN");
    if (force && !strcmp(force, "gemm")) g->vec = false;
    g->psz = g->vec ? p_size_v(g) : p_size(g);
    /* per thread: the P of one block when it is not kept, and the vector path's K^T */
    const size_t pblk = g->vec ? RB * pad16((size_t)g->S) : (size_t)RB * g->S;
    const size_t per = (keep ? 0 : pblk) + (g->vec ? scratch_v(g) : 0);
    float *P = keep ? tt_arena_alloc((size_t)nbh * g->psz * sizeof(float)) : NULL;
    float *scratch = per ? tt_arena_alloc((size_t)nt * per * sizeof(float)) : NULL;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nbh > 1 && total_work(g) >= PAR_MIN_WORK)
#endif
    for (int bh = 0; bh < nbh; bh++) {
        float *w = scratch ? scratch + (size_t)thread_id() * per : NULL;
        float *Pbh = keep ? P + (size_t)bh * g->psz : w + (g->vec ? scratch_v(g) : 0);
        if (g->vec)
            forward_bh_v(g, q->data, k->data, vdata, out->data, bh / g->H, bh % g->H, Pbh, keep,
                         w);
        else
            forward_bh(g, q->data, k->data, vdata, out->data, bh / g->H, bh % g->H, Pbh, keep);
    }
    tt_node *node = tt_record("attention", attention_backward, out, n_in, in, src);
    if (node) {
        att_ctx *c = tt_arena_alloc(sizeof *c);
        c->g = *g;
        c->P = P;
        node->ctx = c;
    }
    return out;
}

/* ---- the three layouts ----------------------------------------------------------------- */

static void check_common(tt_tensor *q, float scale, bool causal, int T, int S, tt_src src,
                         const char *what) {
    const char *op = "attention";
    TT_CHECK(isfinite(scale), src, op, "scale = %g must be finite", (double)scale);
    TT_CHECK(!causal || S >= T, src, op,
             "%s: more queries (T = %d) than keys (S = %d); the causal mask needs S >= T",
             what, T, S);
    TT_CHECK(T == 0 || S >= 1, src, op, "%s: no keys (S = 0) for T = %d queries", what, T);
    (void)q;
}

tt_tensor *tt_attention_(tt_tensor *q, tt_tensor *k, tt_tensor *v, float scale, bool causal,
                         tt_src src) {
    const char *op = "attention";
    tt_check_f32(q, src, op, "q");
    tt_check_f32(k, src, op, "k");
    tt_check_f32(v, src, op, "v");
    TT_CHECK(q->ndim == 3 && k->ndim == 3 && v->ndim == 3, src, op,
             "expects q [BH, T, D], k [BH, S, D], v [BH, S, Dv]; got q %s, k %s, v %s",
             tt_d(q), tt_d(k), tt_d(v));
    const int BH = q->shape[0], T = q->shape[1], D = q->shape[2];
    const int S = k->shape[1], Dv = v->shape[2];
    TT_CHECK(k->shape[0] == BH && v->shape[0] == BH, src, op,
             "batch sizes differ: q %s, k %s, v %s", tt_d(q), tt_d(k), tt_d(v));
    TT_CHECK(k->shape[2] == D, src, op, "q %s and k %s: the head sizes D differ", tt_d(q),
             tt_d(k));
    TT_CHECK(v->shape[1] == S, src, op, "k %s and v %s: the numbers of keys S differ", tt_d(k),
             tt_d(v));
    check_common(q, scale, causal, T, S, src, tt_d(q));
    att_geom g = {.B = BH, .H = 1, .T = T, .S = S, .D = D, .Dv = Dv, .scale = scale,
                  .causal = causal};
    g.q = (att_view){0, (size_t)(D ? D : 1), (size_t)T * D, 0};
    g.k = (att_view){0, (size_t)(D ? D : 1), (size_t)S * D, 0};
    g.v = (att_view){0, (size_t)(Dv ? Dv : 1), (size_t)S * Dv, 0};
    g.o = (att_view){0, (size_t)(Dv ? Dv : 1), (size_t)T * Dv, 0};
    return attention(&g, q, k, v, 3, ((int[]){BH, T, Dv}), src);
}

/* q [B, T, H*D] and the keys/values as views of k (and v); sets everything but k, v. */
static att_geom heads_geom(tt_tensor *q, int H, int S, int Dv, float scale, bool causal) {
    const int B = q->shape[0], T = q->shape[1], D = q->shape[2] / H;
    att_geom g = {.B = B, .H = H, .T = T, .S = S, .D = D, .Dv = Dv, .scale = scale,
                  .causal = causal};
    size_t ldq = (size_t)H * D, ldo = (size_t)H * Dv;
    g.q = (att_view){0, ldq ? ldq : 1, (size_t)T * ldq, (size_t)D};
    g.o = (att_view){0, ldo ? ldo : 1, (size_t)T * ldo, (size_t)Dv};
    return g;
}

static void check_heads(tt_tensor *q, int n_heads, tt_src src) {
    const char *op = "attention";
    TT_CHECK(n_heads >= 1, src, op, "n_heads = %d must be >= 1", n_heads);
    TT_CHECK(q->ndim == 3 && q->shape[2] % n_heads == 0, src, op,
             "q %s must be [B, T, n_heads * D] with n_heads = %d", tt_d(q), n_heads);
}

tt_tensor *tt_attention_heads_(tt_tensor *q, tt_tensor *k, tt_tensor *v, int n_heads,
                               float scale, bool causal, tt_src src) {
    const char *op = "attention";
    tt_check_f32(q, src, op, "q");
    tt_check_f32(k, src, op, "k");
    tt_check_f32(v, src, op, "v");
    check_heads(q, n_heads, src);
    const int H = n_heads, B = q->shape[0], T = q->shape[1];
    TT_CHECK(k->ndim == 3 && v->ndim == 3 && k->shape[0] == B && v->shape[0] == B &&
                 k->shape[2] == q->shape[2] && v->shape[1] == k->shape[1] &&
                 v->shape[2] % H == 0,
             src, op,
             "expects q [B, T, H*D], k [B, S, H*D], v [B, S, H*Dv] with H = %d; got q %s, "
             "k %s, v %s",
             H, tt_d(q), tt_d(k), tt_d(v));
    const int S = k->shape[1], Dv = v->shape[2] / H;
    check_common(q, scale, causal, T, S, src, tt_d(q));
    att_geom g = heads_geom(q, H, S, Dv, scale, causal);
    size_t ldk = (size_t)H * g.D, ldv = (size_t)H * Dv;
    g.k = (att_view){0, ldk ? ldk : 1, (size_t)S * ldk, (size_t)g.D};
    g.v = (att_view){0, ldv ? ldv : 1, (size_t)S * ldv, (size_t)Dv};
    return attention(&g, q, k, v, 3, ((int[]){B, T, H * Dv}), src);
}

tt_tensor *tt_attention_kv_(tt_tensor *q, tt_tensor *kv, int n_heads, float scale, bool causal,
                            tt_src src) {
    const char *op = "attention";
    tt_check_f32(q, src, op, "q");
    tt_check_f32(kv, src, op, "kv");
    check_heads(q, n_heads, src);
    const int H = n_heads, B = q->shape[0], T = q->shape[1], HD = q->shape[2];
    TT_CHECK(kv->ndim == 3 && kv->shape[0] == B && kv->shape[2] > HD &&
                 (kv->shape[2] - HD) % H == 0,
             src, op,
             "expects q [B, T, H*D] and kv [B, S, H*D + H*Dv] (keys, then values) with "
             "H = %d; got q %s, kv %s",
             H, tt_d(q), tt_d(kv));
    const int S = kv->shape[1], Dv = (kv->shape[2] - HD) / H, C = kv->shape[2];
    check_common(q, scale, causal, T, S, src, tt_d(q));
    att_geom g = heads_geom(q, H, S, Dv, scale, causal);
    g.k = (att_view){0, (size_t)C, (size_t)S * C, (size_t)g.D};
    g.v = (att_view){(size_t)HD, (size_t)C, (size_t)S * C, (size_t)Dv};
    return attention(&g, q, kv, NULL, 3, ((int[]){B, T, H * Dv}), src);
}

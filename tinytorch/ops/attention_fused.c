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
 * probabilities of the block are stored compactly as [i1 - i0, n] (row stride n; the
 * vector path below keeps them transposed, [n, RB], and skips more of the triangle).
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
#include "../kernels/vmath.h"
#include "../ops_attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


/* Query rows per block. */
#define RB 32
/* Below this many multiply-adds in total, one thread does everything. */
#define PAR_MIN_WORK (1LL << 21) /* keeps the toy model (2^20) serial: a region costs ~5 us */

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

/* Zero-padded copies of the operands, for head sizes the vector path cannot take as
 * they are (see "head sizes that are not a multiple of 16" below). */
typedef struct att_pad {
    att_geom g;            /* the padded buffers' geometry (D, Dv rounded up to 16)   */
    float *q, *k, *v, *o;  /* [B, H, T or S, D' or Dv']; o: the padded output         */
} att_pad;

/* Saved for the backward: the geometry and P of every (b, h), and the padded copies if
 * the op made them (pad.q != NULL). Inputs: in[0] = q, in[1] = k (also the values when
 * n_in == 2), in[2] = v. */
typedef struct att_ctx {
    att_geom g;
    float *P;
    att_pad pad;
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
 * tt_gemm is at its best on large products; a head of T = 32, D = 16 is 16 K
 * multiply-adds per product, where it falls back to scalar loops. When D and Dv are
 * multiples of 16 the products are done here instead, on 16-float vectors (GCC vector
 * extensions; the callers are compiled for AVX-512, AVX2 and baseline x86-64 and the
 * best is picked at load time, so every helper below is always_inline). Every output
 * element is summed over its k in order, one fused multiply-add per term (vfma_acc,
 * exactly rounded on every target), so the result is the same on every CPU and for
 * every thread count. (Separate multiplies and adds would take twice the instructions:
 * the fused ones made a medium attention layer's forward and backward 20% faster.)
 *
 * Layout: a block's probabilities are kept transposed, P^T [n, RB] (key j, query i0 + i
 * at P^T[j RB + i]), so the RB = 32 queries of a block are two vectors. Then
 *   - the softmax of query i runs down lane i: its max and its sum are lane-wise max
 *     and adds over the rows j, with no horizontal reductions; the causal mask of key
 *     row j is "lanes i < j - (S - T) - i0 are masked";
 *   - S^T = K[0:n] Q_blk^T broadcasts K's elements and needs only Q_blk^T [D, RB] (16x16
 *     register transposes), not a transposed copy of K; the backward's dP^T =
 *     V[0:n] G_blk^T likewise needs G_blk^T;
 *   - the other four products read P^T or dA^T as their broadcast operand:
 *       O_blk   = P V          O[i, :]  = sum_j P^T[j, i] V[j, :]
 *       dQ_blk += dA K         dQ[i, :] += sum_j dA^T[j, i] K[j, :]
 *       dK     += dA^T Q_blk   dK[j, :] += sum_i dA^T[j, i] Q[i0 + i, :]
 *       dV     += P^T G_blk    dV[j, :] += sum_i P^T[j, i] G[i0 + i, :]
 * With the causal mask the zero parts of the triangle are skipped: a tile of query rows
 * stops at the keys its last row sees, a tile of key rows starts at the first query its
 * first row is seen by, and in S^T / dP^T the first vector (queries i0 .. i0+15) of key
 * rows that none of those queries sees is set to 0 instead of computed. The skipped
 * terms are exact zeros of P and dA. */
_Static_assert(RB == 2 * VL, "a block of queries is two vectors of P^T");

/* The first query lane (0 .. rows-1 of the block starting at query i0) that sees key j. */
static inline int first_lane(const att_geom *g, int i0, int j) {
    if (!g->causal) return 0;
    int l = j - (g->S - g->T) - i0;
    return l > 0 ? l : 0;
}

/* R x 16*NV tile of C, summed over k = k0..k1-1:
 *   C[r, v] (+)= sum_k A[r ar + k ak] * B[k ldb + v]
 * The scalar operand is broadcast from memory, so a step of k costs NV loads, R
 * broadcasts and R*NV fused multiply-adds; R = 8, NV = 2 keeps 16 sums in registers,
 * enough to cover the FMA latency on two FMA pipes. */
static ALWAYS_INLINE void vtile(const int R, const int NV, int k0, int k1, const float *A,
                                size_t ar, size_t ak, const float *B, size_t ldb, float *C,
                                size_t ldc, bool acc) {
    v16 c[8][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) c[r][v] = acc ? VLOAD(C + r * ldc + v * VL) : (v16){0};
    for (int k = k0; k < k1; k++) {
        const float *b = B + (size_t)k * ldb, *a = A + (size_t)k * ak;
        v16 bv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) bv[v] = VLOAD(b + v * VL);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float s = a[r * ar];
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) vfma_acc(&c[r][v], &bv[v], s);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) VSTORE(C + r * ldc + v * VL, c[r][v]);
}

/* vtile with NV (1 or 2) known at compile time */
#define VTILE(R, NV, ...) ((NV) == 2 ? vtile(R, 2, __VA_ARGS__) : vtile(R, 1, __VA_ARGS__))

/* The block's query rows r = 0..rows-1 (query i0 + r):
 *   C[r, 0:16 nv] (+)= sum_{j < visible(i0 + r)} At[j RB + r] B[j ldb + 0:16 nv]
 * with At = P^T or dA^T; a tile of rows runs to the keys of its last row (the others'
 * extra terms are zeros of At). */
static ALWAYS_INLINE void query_rows_gemm(const att_geom *g, int i0, int rows, const float *At,
                                          const float *B, size_t ldb, int nv, float *C,
                                          size_t ldc, bool acc) {
    for (int v0 = 0; v0 < nv; v0 += 2) {
        const int NV = nv - v0 >= 2 ? 2 : 1;
        const float *Bv = B + (size_t)v0 * VL;
        float *Cv = C + (size_t)v0 * VL;
        int r = 0;
        for (; r + 8 <= rows; r += 8)
            VTILE(8, NV, 0, visible(g, i0 + r + 7), At + r, 1, RB, Bv, ldb, Cv + r * ldc, ldc,
                  acc);
        for (; r + 4 <= rows; r += 4)
            VTILE(4, NV, 0, visible(g, i0 + r + 3), At + r, 1, RB, Bv, ldb, Cv + r * ldc, ldc,
                  acc);
        for (; r < rows; r++)
            VTILE(1, NV, 0, visible(g, i0 + r), At + r, 1, RB, Bv, ldb, Cv + r * ldc, ldc, acc);
    }
}

/* Key rows j = 0..n-1:
 *   C[j, 0:16 nv] (+)= sum_{i = first_lane(j)}^{rows-1} At[j RB + i] B[i ldb + 0:16 nv]
 * with B the block's rows of Q or G; a tile of keys starts at its first row's first query
 * (earlier queries do not see any of its keys). */
static ALWAYS_INLINE void key_rows_gemm(const att_geom *g, int i0, int rows, int n,
                                        const float *At, const float *B, size_t ldb, int nv,
                                        float *C, size_t ldc, bool acc) {
    for (int v0 = 0; v0 < nv; v0 += 2) {
        const int NV = nv - v0 >= 2 ? 2 : 1;
        const float *Bv = B + (size_t)v0 * VL;
        float *Cv = C + (size_t)v0 * VL;
        int j = 0;
        for (; j + 8 <= n; j += 8)
            VTILE(8, NV, first_lane(g, i0, j), rows, At + (size_t)j * RB, RB, 1, Bv, ldb,
                  Cv + j * ldc, ldc, acc);
        for (; j + 4 <= n; j += 4)
            VTILE(4, NV, first_lane(g, i0, j), rows, At + (size_t)j * RB, RB, 1, Bv, ldb,
                  Cv + j * ldc, ldc, acc);
        for (; j < n; j++)
            VTILE(1, NV, first_lane(g, i0, j), rows, At + (size_t)j * RB, RB, 1, Bv, ldb,
                  Cv + j * ldc, ldc, acc);
    }
}

/* Ct [n, RB] = X[0:n] Bt: Ct[j RB + i] = sum_{c < C} X[j ldx + c] Bt[c RB + i], with Bt
 * = Q_blk^T or G_blk^T. Key rows whose first lane is >= 16 get 0 in lanes 0..15 (the
 * queries there do not see them) and only lanes 16..31 computed. */
static ALWAYS_INLINE void scores_t(const att_geom *g, int i0, int n, const float *X, size_t ldx,
                                   int C, const float *Bt, float *Ct) {
    int j = 0;
#define SCORE_TILE(R)                                                                       \
    do {                                                                                    \
        float *Cj = Ct + (size_t)j * RB;                                                    \
        const float *Xj = X + (size_t)j * ldx;                                              \
        if (first_lane(g, i0, j) >= VL) {                                                   \
            for (int r = 0; r < (R); r++) VSTORE(Cj + r * RB, (v16){0});                    \
            vtile(R, 1, 0, C, Xj, ldx, 1, Bt + VL, RB, Cj + VL, RB, false);                 \
        } else {                                                                            \
            vtile(R, 2, 0, C, Xj, ldx, 1, Bt, RB, Cj, RB, false);                           \
        }                                                                                   \
    } while (0)
    for (; j + 8 <= n; j += 8) SCORE_TILE(8);
    for (; j + 4 <= n; j += 4) SCORE_TILE(4);
    for (; j < n; j++) SCORE_TILE(1);
#undef SCORE_TILE
}

/* In-register transpose of a 16 x 16 tile x[row][lane]. Four rounds, s = 8, 4, 2, 1:
 * viewing the tile as 2s x 2s blocks of four s x s quarters [[A, B], [C, D]], each round
 * swaps B and C in every block (rows r and r + s, r & s == 0: row r takes row r + s's
 * lanes c in the place of its lanes c + s, and the other way round). After the round of
 * size s the s x s quarters are in transposed places; after s = 1 every element is. */
#define TSWAP(s, ...)                                                                       \
    for (int r = 0; r < VL; r++)                                                            \
        if (!(r & (s))) {                                                                   \
            v16 a = x[r], b = x[r + (s)];                                                   \
            x[r] = __builtin_shufflevector(a, b, __VA_ARGS__);                              \
            x[r + (s)] = __builtin_shufflevector(a, b, TSWAP_HI_##s);                       \
        }
#define TSWAP_HI_8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define TSWAP_HI_4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define TSWAP_HI_2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define TSWAP_HI_1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
static ALWAYS_INLINE void transpose16(v16 *x) {
#pragma GCC unroll 16
    TSWAP(8, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
#pragma GCC unroll 16
    TSWAP(4, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)
#pragma GCC unroll 16
    TSWAP(2, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)
#pragma GCC unroll 16
    TSWAP(1, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)
}

/* Xt [C, RB] = X[0:rows, 0:C]^T (rows ld floats apart), lanes rows..RB-1 zero. */
static ALWAYS_INLINE void pack_block_t(const float *X, size_t ld, int rows, int C, float *Xt) {
    for (int r0 = 0; r0 < RB; r0 += VL)
        for (int c0 = 0; c0 < C; c0 += VL) {
            v16 x[VL];
#pragma GCC unroll 16
            for (int r = 0; r < VL; r++)
                x[r] = r0 + r < rows ? VLOAD(X + (size_t)(r0 + r) * ld + c0) : (v16){0};
            transpose16(x);
#pragma GCC unroll 16
            for (int c = 0; c < VL; c++) VSTORE(Xt + (size_t)(c0 + c) * RB + r0, x[c]);
        }
}

/* Floats of P for one (b, h) on the vector path: P^T [n, RB] per block. */
static size_t p_size_v(const att_geom *g) {
    size_t n = 0;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T;
        n += (size_t)RB * (size_t)visible(g, i1 - 1);
    }
    return n;
}

/* A thread's scratch on the vector path, in this order: Q_blk^T (forward) or G_blk^T
 * [max(D, Dv), RB]; the block's dP^T / dA^T [S, RB] (backward); K [S, D] and V [S, Dv] of
 * one (b, h) side by side (kv_rows_of). Where the second and third parts start, and the
 * floats of the whole: */
static inline size_t scratch_w_at(const att_geom *g) {
    return (size_t)(g->D > g->Dv ? g->D : g->Dv) * RB;
}
static inline size_t scratch_kv_at(const att_geom *g) {
    return scratch_w_at(g) + (size_t)g->S * RB;
}
static size_t scratch_v(const att_geom *g) {
    return scratch_kv_at(g) + (size_t)g->S * (size_t)(g->D + g->Dv);
}

/* K and V of one (b, h) as the blocks read them: row j of K at K + j ldk, of V at
 * V + j ldv. */
typedef struct kv_rows {
    const float *K, *V;
    size_t ldk, ldv;
} kv_rows;

/* The rows of K and V of one (b, h), copied side by side into the thread's scratch
 * (K [S, D], then V [S, Dv]) when `copy`, else where they are in the tensors. Every query
 * block reads all the keys it sees, and in the kv tensor one head's rows are a whole row
 * of it apart (4 KB in the medium model: they fall into the same few L1 sets and evict
 * each other); copied once per (b, h), they are read from L1 / L2 instead: a medium
 * attention layer's forward + backward took 0.94 of the time (in-process ABBA). The
 * callers copy only when there are several query blocks: one block (a decoding step)
 * reads each key once, and the copy would only add to its memory traffic. */
static ALWAYS_INLINE kv_rows kv_rows_of(const att_geom *g, const float *K, const float *V,
                                        float *scratch, bool copy) {
    if (!copy) return (kv_rows){K, V, g->k.ld, g->v.ld};
    float *Kc = scratch + scratch_kv_at(g), *Vc = Kc + (size_t)g->S * g->D;
    for (int j = 0; j < g->S; j++) {
        for (int c = 0; c < g->D; c += VL)
            VSTORE(Kc + (size_t)j * g->D + c, VLOAD(K + (size_t)j * g->k.ld + c));
        for (int c = 0; c < g->Dv; c += VL)
            VSTORE(Vc + (size_t)j * g->Dv + c, VLOAD(V + (size_t)j * g->v.ld + c));
    }
    return (kv_rows){Kc, Vc, (size_t)g->D, (size_t)g->Dv};
}

/* Softmax down the lanes of P^T [n, RB] (the block's scores, before scaling): lane i
 * over the keys j with first_lane(j) <= i; masked entries, and lanes rows..RB-1, become
 * 0. Max-subtracted; each lane's sum is added up in double, as tt_softmax's. A vector
 * that is masked whole is skipped by the first two passes (the first never writes it,
 * the second writes its zeros). */
static ALWAYS_INLINE void softmax_t(const att_geom *g, float *P, int i0, int rows, int n) {
    /* (the two vectors of a row written out: the running max and sums stay in registers) */
    const v16 ninf = vsplat(-INFINITY), scale = vsplat(g->scale);
    const v16i iota0 = VIOTA, iota1 = VIOTA + VL;
    v16 m0 = ninf, m1 = ninf;
    for (int j = 0; j < n; j++) {
        const int l = first_lane(g, i0, j);
        float *p = P + (size_t)j * RB;
        v16 x1 = VLOAD(p + VL) * scale;
        if (l > VL) x1 = vsel(iota1 >= l, x1, ninf);
        VSTORE(p + VL, x1);
        m1 = vsel(x1 > m1, x1, m1);
        if (l < VL) {
            v16 x0 = VLOAD(p) * scale;
            if (l > 0) x0 = vsel(iota0 >= l, x0, ninf);
            VSTORE(p, x0);
            m0 = vsel(x0 > m0, x0, m0);
        }
    }
    v8d s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    for (int j = 0; j < n; j++) {
        const int l = first_lane(g, i0, j);
        float *p = P + (size_t)j * RB;
        v16 e1 = VLOAD(p + VL) - m1;
        vexp(&e1);
        VSTORE(p + VL, e1);
        vwiden_acc(&e1, &s2, &s3);
        if (l < VL) {
            v16 e0 = VLOAD(p) - m0;
            vexp(&e0);
            VSTORE(p, e0);
            vwiden_acc(&e0, &s0, &s1);
        } else {
            VSTORE(p, (v16){0});
        }
    }
    const v16i rowsv = (v16i){0} + rows;
    const v16 w0 = __builtin_shufflevector(__builtin_convertvector(1.0 / s0, v8f),
                                           __builtin_convertvector(1.0 / s1, v8f), 0, 1, 2, 3,
                                           4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const v16 w1 = __builtin_shufflevector(__builtin_convertvector(1.0 / s2, v8f),
                                           __builtin_convertvector(1.0 / s3, v8f), 0, 1, 2, 3,
                                           4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    /* lanes past the block's rows: 0 */
    const v16 inv0 = vsel(iota0 < rowsv, w0, (v16){0}), inv1 = vsel(iota1 < rowsv, w1, (v16){0});
    for (int j = 0; j < n; j++) {
        float *p = P + (size_t)j * RB;
        VSTORE(p, VLOAD(p) * inv0);
        VSTORE(p + VL, VLOAD(p + VL) * inv1);
    }
}

/* Sum of the 16 lanes by halving (a fixed order). */
static ALWAYS_INLINE float vsum(const v16 *px) {
    v16 x = *px;
    x += __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    x += __builtin_shufflevector(x, x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    x += __builtin_shufflevector(x, x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    x += __builtin_shufflevector(x, x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return x[0];
}

TT_CLONES_FMA static void forward_bh_v(const att_geom *g, const float *q, const float *k,
                                   const float *v, float *o, int b, int h, float *P, bool keep_p,
                                   float *scratch) {
    const float *Q = q + at(&g->q, b, h);
    float *O = o + at(&g->o, b, h);
    float *Qt = scratch;
    const kv_rows kv = kv_rows_of(g, k + at(&g->k, b, h), v + at(&g->v, b, h), scratch,
                                  g->T > RB);
    size_t poff = 0;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T, rows = i1 - i0, n = visible(g, i1 - 1);
        float *Pb = P + (keep_p ? poff : 0);
        /* Pb = P^T [n, RB]: the scores K Q_blk^T, then their softmax down the lanes */
        pack_block_t(Q + (size_t)i0 * g->q.ld, g->q.ld, rows, g->D, Qt);
        scores_t(g, i0, n, kv.K, kv.ldk, g->D, Qt, Pb);
        softmax_t(g, Pb, i0, rows, n);
        /* O_blk = P V[0:n] */
        query_rows_gemm(g, i0, rows, Pb, kv.V, kv.ldv, g->Dv / VL, O + (size_t)i0 * g->o.ld,
                        g->o.ld, false);
        poff += (size_t)n * RB;
    }
}

TT_CLONES_FMA static void backward_bh_v(const att_geom *g, const float *q, const float *k,
                                    const float *v, const float *o, const float *go,
                                    const float *P, float *gq, float *gk, float *gv,
                                    float *scratch, int b, int h, bool sq, bool skv) {
    const size_t qo = at(&g->q, b, h), ko = at(&g->k, b, h), vo = at(&g->v, b, h),
                 oo = at(&g->o, b, h);
    const float *Q = q + qo, *O = o + oo, *G = go + oo;
    const size_t ldq = g->q.ld, ldk = g->k.ld, ldv = g->v.ld, ldo = g->o.ld;
    float *Gt = scratch, *W = scratch + scratch_w_at(g);
    /* (K and V are read for dP, dQ and dK only) */
    const kv_rows kv = kv_rows_of(g, k + ko, v + vo, scratch, g->T > RB && (gq || gk));
    const float *Pb = P + (size_t)(b * g->H + h) * g->psz;
    for (int i0 = 0; i0 < g->T; i0 += RB) {
        int i1 = i0 + RB < g->T ? i0 + RB : g->T, rows = i1 - i0, n = visible(g, i1 - 1);
        const float *Gb = G + (size_t)i0 * ldo;
        if (gq || gk) {
            /* W = dP^T = V[0:n] G_blk^T */
            pack_block_t(Gb, ldo, rows, g->Dv, Gt);
            scores_t(g, i0, n, kv.V, kv.ldv, g->Dv, Gt, W);
            /* delta_i = G_i . O_i (= sum_j P_ij dP_ij), lanes past the rows 0 */
            float delta[RB] = {0};
            for (int r = 0; r < rows; r++) {
                const float *gr = Gb + (size_t)r * ldo, *orow = O + (size_t)(i0 + r) * ldo;
                v16 dv = VLOAD(gr) * VLOAD(orow);
                for (int c = VL; c < g->Dv; c += VL) dv += VLOAD(gr + c) * VLOAD(orow + c);
                delta[r] = vsum(&dv);
            }
            /* W = dA^T = P^T * (dP^T - delta) * scale (0 wherever P is) */
            const v16 d0 = VLOAD(delta), d1 = VLOAD(delta + VL);
            for (int j = 0; j < n; j++) {
                const float *p = Pb + (size_t)j * RB;
                float *w = W + (size_t)j * RB;
                VSTORE(w, VLOAD(p) * (VLOAD(w) - d0) * g->scale);
                VSTORE(w + VL, VLOAD(p + VL) * (VLOAD(w + VL) - d1) * g->scale);
            }
            /* dQ_blk += dA K[0:n];  dK[0:n] += dA^T Q_blk */
            if (gq)
                query_rows_gemm(g, i0, rows, W, kv.K, kv.ldk, g->D / VL,
                                gq + qo + (size_t)i0 * ldq, ldq, !sq);
            if (gk)
                key_rows_gemm(g, i0, rows, n, W, Q + (size_t)i0 * ldq, ldq, g->D / VL, gk + ko,
                              ldk, !(skv && i0 == 0));
        }
        /* dV[0:n] += P^T G_blk */
        if (gv)
            key_rows_gemm(g, i0, rows, n, Pb, Gb, ldo, g->Dv / VL, gv + vo, ldv,
                          !(skv && i0 == 0));
        Pb += (size_t)n * RB;
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

static long long total_work(const att_geom *g) {
    return (long long)g->B * g->H * g->T * g->S * (g->D + g->Dv);
}

/* The forward or the backward over the (b, h) pairs as its range function sees it; the
 * pairs are split between threads by tt_parallel_for. */
typedef struct att_job {
    const att_geom *g;
    const float *q, *k, *v;   /* v: k's data when k holds the values too         */
    float *o;                 /* the output (written by the forward)             */
    const float *go;          /* backward: dL/dO                                 */
    float *P;                 /* the saved P of every (b, h), or NULL (not kept) */
    float *gq, *gk, *gv;      /* backward: gradient buffers, any may be NULL     */
    size_t per;               /* floats of scratch for one thread                */
    float *scratch;           /* per floats per thread, slot tt_thread_num()     */
    bool zq, zk, zv;          /* backward: zero the pair's rows of gq / gk / gv  */
    bool sq, skv;             /* backward, vector path: store, not add, dQ (all its
                               * rows) / dK and dV's rows of the first query block,
                               * instead of zeroing them first (see backward_range) */
} att_job;

/* rows r0 .. r1 - 1 (cols floats each) of a view's (b, h), row stride ld, := 0 */
static void zero_rows(float *x, const att_view *w, int b, int h, int r0, int r1, int cols) {
    float *p = x + at(w, b, h);
    for (int r = r0; r < r1; r++) memset(p + (size_t)r * w->ld, 0, (size_t)cols * sizeof *p);
}

/* backward of pairs [bh0, bh1) */
static void backward_range(void *ctx, long bh0, long bh1) {
    const att_job *j = ctx;
    const att_geom *g = j->g;
    float *w = j->scratch + (size_t)tt_thread_num() * j->per;
    for (long bh = bh0; bh < bh1; bh++) {
        const int b = (int)bh / g->H, h = (int)bh % g->H;
        /* a new gradient buffer starts at zero where this pair adds to it (all of it
         * before any adding: q, k, v may be one tensor). Where the pair writes before
         * it adds, the vector path stores instead (a tile that starts from 0 rather
         * than from a zeroed row: the same sums): every row of dQ (each query block
         * writes its own rows once), and the rows of dK and dV that the first query
         * block sees; only the keys after those start at zero. */
        const int k0 = j->skv ? visible(g, (g->T < RB ? g->T : RB) - 1) : 0;
        if (j->zq && !j->sq) zero_rows(j->gq, &g->q, b, h, 0, g->T, g->D);
        if (j->zk) zero_rows(j->gk, &g->k, b, h, k0, g->S, g->D);
        if (j->zv) zero_rows(j->gv, &g->v, b, h, k0, g->S, g->Dv);
        if (g->vec)
            backward_bh_v(g, j->q, j->k, j->v, j->o, j->go, j->P, j->gq, j->gk, j->gv, w, b, h,
                          j->sq, j->skv);
        else
            backward_bh(g, j->q, j->k, j->v, j->o, j->go, j->P, j->gq, j->gk, j->gv, w, b, h);
    }
}

/* ---- head sizes that are not a multiple of 16 -------------------------------------------
 * The vector path works in whole vectors of 16 floats across D and Dv. For other head
 * sizes (D = 24 in the V3 toy model) the op copies q, k, v into zero-padded buffers
 * [B, H, rows, D'] (D' = D rounded up to 16, likewise Dv'), runs the vector path on them
 * and copies the first Dv columns of each output row back; the backward adds the first
 * D (Dv) columns of the padded gradients to the real ones. The zero columns add exact
 * zeros to every dot product, so this is the vector path's arithmetic on the original
 * numbers. At the V3 toy's sizes (B 16, H 4, T = S = 32, D 24, Dv 16) the forward took
 * 430 us on the tt_gemm path and the backward 750; padded, 99 and 152 (of which the
 * copies, serial, are about a third; with D = 32, needing none, 65 and 79). */
static int round16(int n) { return (n + VL - 1) / VL * VL; }

/* Rows of every (b, h) between a view and a padded buffer [B, H, rows, pc]: dir 0 copies
 * the view's `cols` floats of each row in and zeroes the rest up to pc; dir 1 copies the
 * first `cols` back into the view; dir 2 adds them to it. */
static void pad_rows(const att_geom *g, int rows, float *x, const att_view *w, float *xp,
                     int cols, int pc, int dir) {
    for (int b = 0; b < g->B; b++)
        for (int h = 0; h < g->H; h++)
            for (int r = 0; r < rows; r++) {
                float *row = x + at(w, b, h) + (size_t)r * w->ld;
                float *prow = xp + (((size_t)b * g->H + h) * rows + r) * pc;
                if (dir == 0) {
                    memcpy(prow, row, (size_t)cols * sizeof(float));
                    memset(prow + cols, 0, (size_t)(pc - cols) * sizeof(float));
                } else if (dir == 1) {
                    memcpy(row, prow, (size_t)cols * sizeof(float));
                } else {
                    for (int c = 0; c < cols; c++) row[c] += prow[c];
                }
            }
}

/* The padded geometry of g: every operand its own [B, H, rows, cols'] buffer. */
static att_geom padded_geom(const att_geom *g) {
    att_geom p = *g;
    p.D = round16(g->D);
    p.Dv = round16(g->Dv);
    const size_t D = (size_t)p.D, Dv = (size_t)p.Dv, T = (size_t)g->T, S = (size_t)g->S;
    p.q = (att_view){0, D, (size_t)g->H * T * D, T * D};
    p.k = (att_view){0, D, (size_t)g->H * S * D, S * D};
    p.v = (att_view){0, Dv, (size_t)g->H * S * Dv, S * Dv};
    p.o = (att_view){0, Dv, (size_t)g->H * T * Dv, T * Dv};
    p.vec = true;
    return p;
}

/* A padded gradient buffer for an operand of `rows` rows and `cols'` columns (not zeroed:
 * the backward's pairs zero their blocks of it), or NULL when that gradient is not
 * wanted. */
static float *pad_grad(const att_geom *p, int rows, int pc, const float *wanted) {
    if (!wanted) return NULL;
    return tt_arena_alloc((size_t)p->B * p->H * rows * pc * sizeof(float));
}

/* Whether the (b, h) pairs' rows x cols blocks of a view cover all of a tensor (then a
 * new gradient buffer can be zeroed pair by pair; the blocks never overlap). */
static bool pairs_cover(const att_geom *g, const tt_tensor *t, int rows, int cols) {
    return (size_t)g->B * g->H * rows * cols == t->size;
}

/* The gradient buffer of t for the backward's pairs; *zero: it is new, and the pairs
 * zero their blocks of it themselves, on the threads that then add to them (a serial
 * memset of the whole buffer took ~1 ms of a medium layer's 8 ms backward on two
 * threads, and left half of the zeroed lines in the other core's cache). */
static float *pair_grad(const att_geom *g, tt_tensor *t, int rows, int cols, bool *zero) {
    bool fresh;
    float *gt = tt_grad_acc_fresh(t, &fresh);
    *zero = fresh && pairs_cover(g, t, rows, cols);
    if (fresh && !*zero) memset(gt, 0, t->size * sizeof *gt);
    return gt;
}

static void attention_backward(tt_node *n) {
    const att_ctx *c = n->ctx;
    const att_geom *g = &c->g;
    tt_tensor *tq = n->in[0], *tk = n->in[1], *tv = n->n_in == 3 ? n->in[2] : n->in[1];
    const int nbh = g->B * g->H;
    const int nt = tt_loop_threads((size_t)total_work(g), PAR_MIN_WORK, nbh);
    if (!c->pad.q) {
        /* q, k, v; a tensor passed twice (k and v in one for the kv form, n_in 2, whose
         * pairs' k and v blocks cover it together; or q as k) gets the buffer and flag
         * of its first role */
        tt_tensor *t[3] = {tq, tk, tv};
        const int rows[3] = {g->T, g->S, g->S};
        const int cols[3] = {g->D, n->n_in == 2 ? g->D + g->Dv : g->D, g->Dv};
        float *gr[3];
        bool z[3];
        for (int i = 0; i < 3; i++) {
            int first = 0;
            while (t[first] != t[i]) first++;
            if (first < i) {
                gr[i] = gr[first], z[i] = z[first];
            } else {
                gr[i] = pair_grad(g, t[i], rows[i], cols[i], &z[i]);
            }
        }
        if (!gr[0] && !gr[1] && !gr[2]) return;
        const size_t per = g->vec ? scratch_v(g) : (size_t)RB * g->S;
        /* storing (see backward_range) needs roles that share no elements: not q with k
         * or v, nor k with v unless they are the kv form's two column blocks; buffers
         * that are new (z), as adding to an older gradient must add; and for dK and dV
         * a first query block (T = 0 has none, and its keys' gradients are all zero) */
        const bool apart = tq != tk && tq != tv && (n->n_in == 2 || tk != tv);
        const bool sq = g->vec && apart && z[0];
        const bool skv = g->vec && apart && g->T > 0 && (gr[1] || gr[2]) && (!gr[1] || z[1]) &&
                         (!gr[2] || z[2]);
        att_job j = {g, tq->data, tk->data, tv->data, n->out->data, n->out->grad, c->P,
                     gr[0], gr[1], gr[2], per, tt_arena_alloc((size_t)nt * per * sizeof(float)),
                     z[0] && gr[0], z[1] && gr[1], z[2] && gr[2], sq, skv};
        tt_parallel_for(nbh, nt, backward_range, &j);
        return;
    }
    /* the vector path on the padded copies, then the real columns back */
    float *gq = tt_grad_acc(tq), *gk = tt_grad_acc(tk), *gv = tt_grad_acc(tv);
    if (!gq && !gk && !gv) return;
    const att_pad *pd = &c->pad;
    const att_geom *p = &pd->g;
    float *go = tt_arena_alloc((size_t)nbh * g->T * p->Dv * sizeof(float));
    pad_rows(g, g->T, n->out->grad, &g->o, go, g->Dv, p->Dv, 0);
    float *pq = pad_grad(p, g->T, p->D, gq), *pk = pad_grad(p, g->S, p->D, gk),
          *pv = pad_grad(p, g->S, p->Dv, gv);
    const size_t per = scratch_v(p);
    /* (the padded gradients are new, one per role: the pairs store into them or zero
     * them, see backward_range) */
    att_job j = {p, pd->q, pd->k, pd->v, pd->o, go, c->P, pq, pk, pv, per,
                 tt_arena_alloc((size_t)nt * per * sizeof(float)), pq, pk, pv, true, g->T > 0};
    tt_parallel_for(nbh, nt, backward_range, &j);
    if (gq) pad_rows(g, g->T, gq, &g->q, pq, g->D, p->D, 2);
    if (gk) pad_rows(g, g->S, gk, &g->k, pk, g->D, p->D, 2);
    if (gv) pad_rows(g, g->S, gv, &g->v, pv, g->Dv, p->Dv, 2);
}

/* forward of pairs [bh0, bh1) */
static void forward_range(void *ctx, long bh0, long bh1) {
    const att_job *j = ctx;
    const att_geom *g = j->g;
    float *w = j->per ? j->scratch + (size_t)tt_thread_num() * j->per : NULL;
    for (long bh = bh0; bh < bh1; bh++) {
        const int b = (int)bh / g->H, h = (int)bh % g->H;
        float *Pbh = j->P ? j->P + (size_t)bh * g->psz : w + (g->vec ? scratch_v(g) : 0);
        if (g->vec)
            forward_bh_v(g, j->q, j->k, j->v, j->o, b, h, Pbh, j->P != NULL, w);
        else
            forward_bh(g, j->q, j->k, j->v, j->o, b, h, Pbh, j->P != NULL);
    }
}

/* The op proper, once the geometry is known and checked. */
static tt_tensor *attention(att_geom *g, tt_tensor *q, tt_tensor *k, tt_tensor *v, int out_nd,
                            const int *out_shape, tt_src src) {
    tt_tensor *out = tt_tmp(TT_F32, out_nd, out_shape);
    tt_tensor *in[3] = {q, k, v};
    const int n_in = v ? 3 : 2;
    const int nbh = g->B * g->H;
    const bool keep = tt_needs_grad(n_in, in);
    const char *force = getenv("TT_ATTN");
    const bool gemm_only = force && !strcmp(force, "gemm");
    g->vec = !gemm_only && g->D > 0 && g->Dv > 0 && g->D % VL == 0 && g->Dv % VL == 0;
    /* other head sizes: the vector path on zero-padded copies (see above) */
    att_pad pad = {0};
    if (!gemm_only && !g->vec && g->D > 0 && g->Dv > 0 && nbh > 0) {
        pad.g = padded_geom(g);
        const size_t D = (size_t)pad.g.D, Dv = (size_t)pad.g.Dv;
        pad.q = tt_arena_alloc((size_t)nbh * g->T * D * sizeof(float));
        pad.k = tt_arena_alloc((size_t)nbh * g->S * D * sizeof(float));
        pad.v = tt_arena_alloc((size_t)nbh * g->S * Dv * sizeof(float));
        pad.o = tt_arena_alloc((size_t)nbh * g->T * Dv * sizeof(float));
        pad_rows(g, g->T, q->data, &g->q, pad.q, g->D, pad.g.D, 0);
        pad_rows(g, g->S, k->data, &g->k, pad.k, g->D, pad.g.D, 0);
        pad_rows(g, g->S, v ? v->data : k->data, &g->v, pad.v, g->Dv, pad.g.Dv, 0);
    }
    const att_geom *run = pad.q ? &pad.g : g; /* the geometry the kernels run on */
    g->psz = run->vec ? p_size_v(run) : p_size(run);
    pad.g.psz = g->psz;
    /* per range: the P of one block when it is not kept, and the vector path's Q^T */
    const size_t pblk = (size_t)RB * g->S;
    const size_t per = (keep ? 0 : pblk) + (run->vec ? scratch_v(run) : 0);
    float *P = keep ? tt_arena_alloc((size_t)nbh * g->psz * sizeof(float)) : NULL;
    const int nt = tt_loop_threads((size_t)total_work(g), PAR_MIN_WORK, nbh);
    att_job j = {.g = run, .q = pad.q ? pad.q : q->data, .k = pad.q ? pad.k : k->data,
                 .v = pad.q ? pad.v : v ? v->data : k->data, .o = pad.q ? pad.o : out->data,
                 .P = P, .per = per,
                 .scratch = per ? tt_arena_alloc((size_t)nt * per * sizeof(float)) : NULL};
    tt_parallel_for(nbh, nt, forward_range, &j);
    if (pad.q) pad_rows(g, g->T, out->data, &g->o, pad.o, g->Dv, pad.g.Dv, 1);
    tt_node *node = tt_record("attention", attention_backward, out, n_in, in, src);
    if (node) {
        att_ctx *c = tt_arena_alloc(sizeof *c);
        c->g = *g;
        c->P = P;
        c->pad = pad;
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

/* norm.c - layer norm and RMS norm over the last axis.
 *
 * One row x of C values, g = dL/dy for that row, w and b the optional [C] affine.
 *
 * layer_norm (biased variance, as PyTorch):
 *   mu = (1/C) sum_j x_j,   var = (1/C) sum_j (x_j - mu)^2,   r = 1 / sqrt(var + eps)
 *   xhat_j = (x_j - mu) r,  y_j = xhat_j w_j + b_j
 * Backward. dw_j += sum_rows g_j xhat_j, db_j += sum_rows g_j, and with dxhat_j = g_j w_j:
 *   dxhat_i/dx_k = r ([i == k] - 1/C) + (x_i - mu) dr/dx_k
 *   dr/dx_k = -1/2 (var + eps)^(-3/2) dvar/dx_k = -r^3 (x_k - mu) / C
 *     (dvar/dx_k = (2/C) (x_k - mu) - (2/C) sum_j (x_j - mu) / C = (2/C)(x_k - mu),
 *      since sum_j (x_j - mu) = 0)
 *   so dxhat_i/dx_k = r ([i == k] - 1/C - xhat_i xhat_k / C) and
 *   dx_k = sum_i dxhat_i dxhat_i/dx_k
 *        = r (dxhat_k - mean_i(dxhat_i) - xhat_k mean_i(dxhat_i xhat_i))
 *
 * rms_norm:
 *   ms = (1/C) sum_j x_j^2,  r = 1 / sqrt(ms + eps),  xhat_j = x_j r,  y_j = xhat_j w_j
 * Backward. dw_j += sum_rows g_j xhat_j, and with dxhat_j = g_j w_j:
 *   dr/dx_k = -1/2 (ms + eps)^(-3/2) (2 x_k / C) = -r^3 x_k / C
 *   dxhat_i/dx_k = r [i == k] + x_i dr/dx_k = r ([i == k] - xhat_i xhat_k / C)
 *   dx_k = r (dxhat_k - xhat_k mean_i(dxhat_i xhat_i))
 *
 * The forward saves mu and r per row in the arena (2 floats a row; rms_norm only r).
 * Row statistics are accumulated in double, in eight lanes in a fixed order (below).
 * Rows are independent for y and dx (OpenMP over rows, one thread per row). dw and db sum
 * over rows, in the same pass as dx (x, g and xhat are read once): each chunk of
 * SUM_ROWS rows sums its rows in order into a partial row of its own, and the chunks'
 * partials are added in chunk order at the end. The chunks do not depend on the thread
 * count, so neither does any bit: every value is computed in a fixed order.
 */
#include "../internal.h"
#include "../kernels/vmath.h"

#include <math.h>


#define PAR_MIN_ELEMS 32768
/* Rows per chunk of the dw / db sums (fixed: the sums must not depend on the threads).
 * The partials take [R / SUM_ROWS, C] floats each, an eighth of x for dw and db. */
#define SUM_ROWS 64

typedef struct norm_ctx {
    float *mean;  /* [R]; NULL for rms_norm */
    float *rstd;  /* [R] */
    tt_tensor *x, *w, *b; /* w, b may be NULL */
} norm_ctx;

static void check_affine(const tt_tensor *p, const tt_tensor *x, const char *what,
                         tt_src src, const char *op) {
    if (!p) return;
    tt_check_f32(p, src, op, what);
    int C = tt_last_dim(x);
    TT_CHECK(p->ndim == 1 && p->shape[0] == C, src, op,
             "%s %s must have shape [%d] (the last axis of x %s)", what, tt_d(p), C, tt_d(x));
}

/* ---- row sums in double, in a fixed order -------------------------------------------------
 * Eight lanes: lane u sums the elements j = u (mod 8) of the full groups of 8 in j order,
 * the lanes are added as ((0+1)+(2+3))+((4+5)+(6+7)), then the tail j >= 8 floor(C/8) in
 * order. Written with 8-double vectors (GCC vector extensions), which every instruction
 * set evaluates lane by lane with the same IEEE operations, so the sum is the same on
 * every build and for every thread count; it vectorises where the plain sequential sum
 * (one dependent double add per element) could not. */
/* (macros, not functions: a vector argument or result would change the ABI between the
 * builds of the same function) */
#define LOAD8(p)                                       \
    __extension__({                                    \
        v8f f_;                                        \
        memcpy(&f_, (p), sizeof f_);                   \
        __builtin_convertvector(f_, v8d);              \
    })
/* LOAD8 of p and of p + 8, widened as one 16-float vector (vwiden: one instruction per
 * half on AVX-512, where an 8-float vector took four; a [256, 64] layer norm: forward
 * 7.1 -> 6.8 us, backward ~1 us faster). Callers add lo before hi: the order of two
 * LOAD8s, so the same sums. */
#define LOAD16(p, lo, hi)                  \
    do {                                   \
        const v16 f_ = VLOAD(p);           \
        vwiden(&f_, &(lo), &(hi));         \
    } while (0)
#define LANES_SUM(v) \
    ((((v)[0] + (v)[1]) + ((v)[2] + (v)[3])) + (((v)[4] + (v)[5]) + ((v)[6] + (v)[7])))

/* sum_j x_j and sum_j (x_j - mu)^2 (the second only when mu is given) */
static ALWAYS_INLINE double sum_row(const float *x, int C) {
    v8d acc = {0}, lo, hi;
    int j = 0;
    for (; j + 16 <= C; j += 16) {
        LOAD16(x + j, lo, hi);
        acc += lo;
        acc += hi;
    }
    for (; j + 8 <= C; j += 8) acc += LOAD8(x + j);
    double s = LANES_SUM(acc);
    for (; j < C; j++) s += x[j];
    return s;
}

static ALWAYS_INLINE double sumsq_row(const float *x, double mu, int C) {
    v8d acc = {0}, m = {mu, mu, mu, mu, mu, mu, mu, mu}, lo, hi;
    int j = 0;
    for (; j + 16 <= C; j += 16) {
        LOAD16(x + j, lo, hi);
        lo -= m;
        hi -= m;
        acc += lo * lo;
        acc += hi * hi;
    }
    for (; j + 8 <= C; j += 8) {
        v8d d = LOAD8(x + j) - m;
        acc += d * d;
    }
    double s = LANES_SUM(acc);
    for (; j < C; j++) {
        double d = x[j] - mu;
        s += d * d;
    }
    return s;
}

/* ---- backward -------------------------------------------------------------------------------- */

/* The backward's loop splits between threads with tt_parallel_for over chunks of
 * SUM_ROWS rows; the forward's over rows. */
typedef struct norm_job {
    const float *x, *g, *w, *b; /* g: dL/dy; w, b: the affine's data or NULL        */
    float *out;                 /* dx (backward; NULL: not wanted) or y (forward)   */
    float *mean, *rstd;         /* per row (mean NULL for rms_norm)                 */
    float *pw, *pb;             /* backward: [chunks, C] partial dw, db, or NULL    */
    float *scratch;             /* backward: 2 C floats per thread                  */
    float eps;
    int C;
    long R;
    bool fresh;                 /* dx: a new buffer, written (not added to)         */
} norm_job;

/* One row of the backward, with dxhat = g w (or g) and xhat = (x - mu) rs:
 *   gx += rs (dxhat - mean(dxhat) - xhat mean(dxhat xhat))   (fresh: gx = ...; if gxr)
 *   pw += g xhat, pb += g                                     (the chunk's partials, if given)
 * layer = false: rms_norm. */
static ALWAYS_INLINE void
norm_backward_row(const float *restrict xr, const float *restrict gr, const float *restrict w,
                  float mu, float rs, bool layer, int C, bool fresh, float *restrict gxr,
                  float *restrict pw, float *restrict pb, float *restrict tmp) {
    /* tmp [2C]: dxhat and xhat of the row, computed once for both passes */
    float *restrict dxh = tmp, *restrict xh = tmp + C;
    VEC for (int j = 0; j < C; j++) xh[j] = (xr[j] - mu) * rs;
    if (pw) {
        VEC for (int j = 0; j < C; j++) pw[j] += gr[j] * xh[j];
    }
    if (pb) {
        VEC for (int j = 0; j < C; j++) pb[j] += gr[j];
    }
    if (!gxr) return;
    if (w) {
        VEC for (int j = 0; j < C; j++) dxh[j] = gr[j] * w[j];
    } else {
        VEC for (int j = 0; j < C; j++) dxh[j] = gr[j];
    }
    /* s1 = sum dxhat, s2 = sum dxhat * xhat (double, fixed lane order) */
    v8d a1 = {0}, a2 = {0}, dl, dh, xl, xhh;
    int j = 0;
    for (; j + 16 <= C; j += 16) {
        LOAD16(dxh + j, dl, dh);
        LOAD16(xh + j, xl, xhh);
        a1 += dl;
        a2 += dl * xl;
        a1 += dh;
        a2 += dh * xhh;
    }
    for (; j + 8 <= C; j += 8) {
        v8d d = LOAD8(dxh + j);
        a1 += d;
        a2 += d * LOAD8(xh + j);
    }
    double s1 = LANES_SUM(a1), s2 = LANES_SUM(a2);
    for (; j < C; j++) {
        s1 += dxh[j];
        s2 += (double)dxh[j] * xh[j];
    }
    float m1 = layer ? (float)(s1 / C) : 0.0f, m2 = (float)(s2 / C);
    if (fresh) {
        VEC for (int k = 0; k < C; k++) gxr[k] = rs * (dxh[k] - m1 - xh[k] * m2);
    } else {
        VEC for (int k = 0; k < C; k++) gxr[k] += rs * (dxh[k] - m1 - xh[k] * m2);
    }
}

/* Chunks [k0, k1) of SUM_ROWS rows: dx of each row, and each chunk's partial dw / db
 * (its rows in order), the row loop inside the vectorised clone; scratch: 2 C floats per
 * thread, slot tt_thread_num() */
TT_CLONES static void backward_chunks(void *ctx, long k0, long k1) {
    const norm_job *j = ctx;
    const int C = j->C;
    const bool layer = j->mean != NULL;
    float *tmp = j->scratch + (size_t)tt_thread_num() * 2 * (size_t)C;
    for (long k = k0; k < k1; k++) {
        float *pw = j->pw ? j->pw + (size_t)k * C : NULL;
        float *pb = j->pb ? j->pb + (size_t)k * C : NULL;
        if (pw) memset(pw, 0, (size_t)C * sizeof *pw);
        if (pb) memset(pb, 0, (size_t)C * sizeof *pb);
        const long r1 = (k + 1) * SUM_ROWS < j->R ? (k + 1) * SUM_ROWS : j->R;
        for (long r = k * SUM_ROWS; r < r1; r++)
            norm_backward_row(j->x + (size_t)r * C, j->g + (size_t)r * C, j->w,
                              layer ? j->mean[r] : 0.0f, j->rstd[r], layer, C, j->fresh,
                              j->out ? j->out + (size_t)r * C : NULL, pw, pb, tmp);
    }
}

/* dst += the chunks' partial rows, in chunk order */
TT_CLONES static void add_partials(float *restrict dst, const float *restrict part, long chunks,
                                   int C) {
    for (long k = 0; k < chunks; k++) {
        const float *restrict p = part + (size_t)k * C;
        VEC for (int j = 0; j < C; j++) dst[j] += p[j];
    }
}

/* dx, dw, db for both norms; c->mean == NULL means rms_norm (mu = 0, no mean(dxhat) term). */
static void norm_backward(tt_node *nd) {
    const norm_ctx *c = nd->ctx;
    const tt_tensor *x = c->x;
    /* (a new dx buffer is written row by row, not zeroed first and added to: one pass
     * over [R, C] fewer, and no serial memset before the threads start) */
    bool fresh;
    float *gx = tt_grad_acc_fresh(c->x, &fresh);
    float *gw = tt_grad_acc(c->w), *gb = tt_grad_acc(c->b);
    const int C = tt_last_dim(x);
    const long R = (long)tt_rows(x);
    if ((!gx && !gw && !gb) || R == 0 || C == 0) return;
    const long chunks = (R + SUM_ROWS - 1) / SUM_ROWS;
    const int nt = tt_loop_threads((size_t)R * (size_t)C, PAR_MIN_ELEMS, chunks);
    const size_t part = (size_t)chunks * C;
    norm_job j = {.x = x->data, .g = nd->out->grad, .w = c->w ? c->w->data : NULL, .out = gx,
                  .mean = c->mean, .rstd = c->rstd,
                  .pw = gw ? tt_arena_alloc(part * sizeof(float)) : NULL,
                  .pb = gb ? tt_arena_alloc(part * sizeof(float)) : NULL,
                  .scratch = tt_arena_alloc((size_t)nt * 2 * (size_t)C * sizeof(float)),
                  .C = C, .R = R, .fresh = fresh};
    tt_parallel_for(chunks, nt, backward_chunks, &j);
    if (gw) add_partials(gw, j.pw, chunks, C);
    if (gb) add_partials(gb, j.pb, chunks, C);
}

/* ---- forward ----------------------------------------------------------------------------------- */
static ALWAYS_INLINE void
norm_forward_row(const float *restrict xr, const float *restrict w, const float *restrict b,
                 float eps, bool layer, int C, float *mean, float *rstd, float *restrict yr) {
    double mu = layer ? sum_row(xr, C) / C : 0.0;
    /* two passes: (x - mu)^2 does not cancel like E[x^2] - mu^2 */
    double v = sumsq_row(xr, mu, C) / C;
    float muf = (float)mu, rs = (float)(1.0 / sqrt(v + eps));
    if (layer) *mean = muf;
    *rstd = rs;
    if (w && b) {
        VEC for (int j = 0; j < C; j++) yr[j] = (xr[j] - muf) * rs * w[j] + b[j];
    } else if (w) {
        VEC for (int j = 0; j < C; j++) yr[j] = (xr[j] - muf) * rs * w[j];
    } else if (b) {
        VEC for (int j = 0; j < C; j++) yr[j] = (xr[j] - muf) * rs + b[j];
    } else {
        VEC for (int j = 0; j < C; j++) yr[j] = (xr[j] - muf) * rs;
    }
}

/* forward rows [r0, r1) (the row loop inside the vectorised clone: rows overlap) */
TT_CLONES static void forward_rows(void *ctx, long r0, long r1) {
    const norm_job *j = ctx;
    const int C = j->C;
    for (long r = r0; r < r1; r++)
        norm_forward_row(j->x + (size_t)r * C, j->w, j->b, j->eps, j->mean != NULL, C,
                         j->mean ? j->mean + r : NULL, j->rstd + r, j->out + (size_t)r * C);
}

/* Forward of both: rows of x -> y, saving mean (layer only) and rstd per row. */
static void norm_forward(const tt_tensor *x, const float *w, const float *b, float eps,
                         float *mean, float *rstd, float *y) {
    int C = tt_last_dim(x);
    long R = (long)tt_rows(x);
    norm_job j = {.x = x->data, .w = w, .b = b, .out = y, .mean = mean, .rstd = rstd,
                  .eps = eps, .C = C};
    tt_parallel_for(R, tt_loop_threads((size_t)R * (size_t)C, PAR_MIN_ELEMS, R), forward_rows,
                    &j);
}

static tt_tensor *norm(tt_tensor *x, tt_tensor *w, tt_tensor *b, float eps, bool layer,
                       tt_src src) {
    const char *op = layer ? "layer_norm" : "rms_norm";
    tt_check_f32(x, src, op, "x");
    TT_CHECK(x->ndim >= 1, src, op, "x %s must have at least one axis", tt_d(x));
    check_affine(w, x, "weight", src, op);
    check_affine(b, x, "bias", src, op);
    TT_CHECK(eps >= 0.0f, src, op, "eps %g must be >= 0", (double)eps);
    TT_CHECK(tt_last_dim(x) > 0 || x->size == 0, src, op, "x %s has an empty last axis",
             tt_d(x));
    size_t R = tt_rows(x);
    float *mean = layer ? tt_arena_alloc((R ? R : 1) * sizeof(float)) : NULL;
    float *rstd = tt_arena_alloc((R ? R : 1) * sizeof(float));
    tt_tensor *y = tt_tmp_like(x);
    norm_forward(x, w ? w->data : NULL, b ? b->data : NULL, eps, mean, rstd, y->data);

    /* inputs on the tape: x, then w and b when present */
    tt_tensor *in[3] = {x, NULL, NULL};
    int n_in = 1;
    if (w) in[n_in++] = w;
    if (b) in[n_in++] = b;
    tt_node *node = tt_record(op, norm_backward, y, n_in, in, src);
    if (node) {
        norm_ctx *c = tt_arena_alloc(sizeof *c);
        *c = (norm_ctx){.mean = mean, .rstd = rstd, .x = x, .w = w, .b = b};
        node->ctx = c;
        node->f[0] = eps;
    }
    return y;
}

tt_tensor *tt_layer_norm_(tt_tensor *x, tt_tensor *w, tt_tensor *b, float eps, tt_src src) {
    return norm(x, w, b, eps, true, src);
}
tt_tensor *tt_rms_norm_(tt_tensor *x, tt_tensor *w, float eps, tt_src src) {
    return norm(x, w, NULL, eps, false, src);
}

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
 * Rows are independent for y and dx (OpenMP over rows, one thread per row); dw and db sum
 * over rows, rows in order, split between threads by columns. Either way every value is
 * computed by one thread in a fixed order: bit-identical for any thread count.
 */
#include "../internal.h"

#include <math.h>


#define PAR_MIN_ELEMS 32768
/* columns per task of the dw / db sums */
#define COL_BLOCK 64

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
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));

/* (macros, not functions: a vector argument or result would change the ABI between the
 * builds of the same function) */
#define LOAD8(p)                                       \
    __extension__({                                    \
        v8f f_;                                        \
        memcpy(&f_, (p), sizeof f_);                   \
        __builtin_convertvector(f_, v8d);              \
    })
#define LANES_SUM(v) \
    ((((v)[0] + (v)[1]) + ((v)[2] + (v)[3])) + (((v)[4] + (v)[5]) + ((v)[6] + (v)[7])))

/* sum_j x_j and sum_j (x_j - mu)^2 (the second only when mu is given) */
static ALWAYS_INLINE double sum_row(const float *x, int C) {
    v8d acc = {0};
    int j = 0;
    for (; j + 8 <= C; j += 8) acc += LOAD8(x + j);
    double s = LANES_SUM(acc);
    for (; j < C; j++) s += x[j];
    return s;
}

static ALWAYS_INLINE double sumsq_row(const float *x, double mu, int C) {
    v8d acc = {0}, m = {mu, mu, mu, mu, mu, mu, mu, mu};
    int j = 0;
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

/* Columns [j0, j0 + n) of dw += sum_rows g * xhat and db += sum_rows g (either may be
 * NULL), rows in order: each column is summed by one thread in the serial order. */
TT_CLONES static void affine_cols(const norm_ctx *c, const float *g, float *gw, float *gb,
                                  int j0, int n) {
    const tt_tensor *x = c->x;
    int C = tt_last_dim(x);
    size_t R = tt_rows(x);
    for (size_t r = 0; r < R; r++) {
        const float *restrict xr = x->data + r * C + j0, *restrict gr = g + r * C + j0;
        float mu = c->mean ? c->mean[r] : 0.0f, rs = c->rstd[r];
        if (gw) {
            float *restrict w = gw + j0;
            VEC for (int j = 0; j < n; j++) w[j] += gr[j] * ((xr[j] - mu) * rs);
        }
        if (gb) {
            float *restrict b = gb + j0;
            VEC for (int j = 0; j < n; j++) b[j] += gr[j];
        }
    }
}

/* The loops below split between threads with tt_parallel_for; their ranges are column
 * blocks (affine_backward) and rows (dx, the forward). */
typedef struct norm_job {
    const norm_ctx *c;
    const float *x, *g, *w, *b; /* g: dL/dy; w, b: the affine's data or NULL        */
    float *gw, *gb;             /* affine_backward: dw, db (either may be NULL)     */
    float *out;                 /* dx (backward) or y (forward)                     */
    float *mean, *rstd;         /* per row (mean NULL for rms_norm)                 */
    float *scratch;             /* dx: 2 C floats per thread                        */
    float eps;
    int C;
    bool fresh;                 /* dx: a new buffer, written (not added to)         */
} norm_job;

/* dw, db for column blocks [k0, k1) */
static void affine_blocks(void *ctx, long k0, long k1) {
    const norm_job *j = ctx;
    const int C = j->C;
    for (long k = k0; k < k1; k++) {
        int j0 = (int)k * COL_BLOCK;
        affine_cols(j->c, j->g, j->gw, j->gb, j0, C - j0 < COL_BLOCK ? C - j0 : COL_BLOCK);
    }
}

static void affine_backward(const norm_ctx *c, const float *g, float *gw, float *gb) {
    int C = tt_last_dim(c->x);
    long nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
    norm_job j = {.c = c, .g = g, .gw = gw, .gb = gb, .C = C};
    tt_parallel_for(nblk, tt_loop_threads(c->x->size, PAR_MIN_ELEMS, nblk), affine_blocks, &j);
}

/* dx of one row: with dxhat = g w (or g) and xhat = (x - mu) rs,
 * gx += rs (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) (fresh: gx = ...); layer = false:
 * rms_norm. */
static ALWAYS_INLINE void
norm_backward_row(const float *restrict xr, const float *restrict gr, const float *restrict w,
                  float mu, float rs, bool layer, int C, bool fresh, float *restrict gxr,
                  float *restrict tmp) {
    /* tmp [2C]: dxhat and xhat of the row, computed once for both passes */
    float *restrict dxh = tmp, *restrict xh = tmp + C;
    if (w) {
        VEC for (int j = 0; j < C; j++) dxh[j] = gr[j] * w[j];
    } else {
        VEC for (int j = 0; j < C; j++) dxh[j] = gr[j];
    }
    VEC for (int j = 0; j < C; j++) xh[j] = (xr[j] - mu) * rs;
    /* s1 = sum dxhat, s2 = sum dxhat * xhat (double, fixed lane order) */
    v8d a1 = {0}, a2 = {0};
    int j = 0;
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

/* dx for rows [r0, r1), the row loop inside the vectorised clone (rows overlap); scratch:
 * 2 C floats per thread, slot tt_thread_num() */
TT_CLONES static void dx_rows(void *ctx, long r0, long r1) {
    const norm_job *j = ctx;
    const int C = j->C;
    const bool layer = j->mean != NULL;
    float *tmp = j->scratch + (size_t)tt_thread_num() * 2 * (size_t)C;
    for (long r = r0; r < r1; r++)
        norm_backward_row(j->x + (size_t)r * C, j->g + (size_t)r * C, j->w,
                          layer ? j->mean[r] : 0.0f, j->rstd[r], layer, C, j->fresh,
                          j->out + (size_t)r * C, tmp);
}

/* dx for both norms; c->mean == NULL means rms_norm (mu = 0, no mean(dxhat) term). */
static void norm_backward(tt_node *nd) {
    const norm_ctx *c = nd->ctx;
    const tt_tensor *x = c->x;
    const float *g = nd->out->grad;
    /* (a new dx buffer is written row by row, not zeroed first and added to: one pass
     * over [R, C] fewer, and no serial memset before the threads start) */
    bool fresh;
    float *gx = tt_grad_acc_fresh(c->x, &fresh);
    float *gw = tt_grad_acc(c->w), *gb = tt_grad_acc(c->b);
    int C = tt_last_dim(x);
    long R = (long)tt_rows(x);
    if (gx && R > 0 && C > 0) {
        const int nt = tt_loop_threads((size_t)R * (size_t)C, PAR_MIN_ELEMS, R);
        norm_job j = {.x = x->data, .g = g, .w = c->w ? c->w->data : NULL, .out = gx,
                      .mean = c->mean, .rstd = c->rstd, .C = C, .fresh = fresh,
                      .scratch = tt_arena_alloc((size_t)nt * 2 * (size_t)C * sizeof(float))};
        tt_parallel_for(R, nt, dx_rows, &j);
    }
    if (gw || gb) affine_backward(c, g, gw, gb);
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

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
 * Row statistics are accumulated in double. Rows are independent for y and dx
 * (OpenMP over rows, one thread per row, bit-identical for any thread count); dw and db
 * sum over rows and are accumulated serially, rows in order.
 */
#include "../internal.h"

#include <math.h>

#define PAR_MIN_ELEMS 32768

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

/* Accumulate dw += sum_rows g * xhat and db += sum_rows g (either may be NULL). */
static void affine_backward(const norm_ctx *c, const float *g, float *gw, float *gb) {
    const tt_tensor *x = c->x;
    int C = tt_last_dim(x);
    size_t R = tt_rows(x);
    for (size_t r = 0; r < R; r++) {
        const float *xr = x->data + r * C, *gr = g + r * C;
        float mu = c->mean ? c->mean[r] : 0.0f, rs = c->rstd[r];
        if (gw)
            for (int j = 0; j < C; j++) gw[j] += gr[j] * ((xr[j] - mu) * rs);
        if (gb)
            for (int j = 0; j < C; j++) gb[j] += gr[j];
    }
}

/* dx for both norms; c->mean == NULL means rms_norm (mu = 0, no mean(dxhat) term). */
static void norm_backward(tt_node *nd) {
    const norm_ctx *c = nd->ctx;
    const tt_tensor *x = c->x;
    const float *g = nd->out->grad;
    const float *w = c->w ? c->w->data : NULL;
    float *gx = tt_grad_acc(c->x);
    float *gw = tt_grad_acc(c->w), *gb = tt_grad_acc(c->b);
    int C = tt_last_dim(x);
    long R = (long)tt_rows(x);
    bool layer = c->mean != NULL;
    if (gx) {
#pragma omp parallel for schedule(static) if ((size_t)R * (size_t)C >= PAR_MIN_ELEMS)
        for (long r = 0; r < R; r++) {
            const float *xr = x->data + (size_t)r * C, *gr = g + (size_t)r * C;
            float *gxr = gx + (size_t)r * C;
            float mu = layer ? c->mean[r] : 0.0f, rs = c->rstd[r];
            /* mean(dxhat) and mean(dxhat * xhat) */
            double s1 = 0.0, s2 = 0.0;
            for (int j = 0; j < C; j++) {
                float dxh = w ? gr[j] * w[j] : gr[j];
                float xh = (xr[j] - mu) * rs;
                s1 += dxh;
                s2 += (double)dxh * xh;
            }
            float m1 = layer ? (float)(s1 / C) : 0.0f, m2 = (float)(s2 / C);
            for (int j = 0; j < C; j++) {
                float dxh = w ? gr[j] * w[j] : gr[j];
                float xh = (xr[j] - mu) * rs;
                gxr[j] += rs * (dxh - m1 - xh * m2);
            }
        }
    }
    if (gw || gb) affine_backward(c, g, gw, gb);
}

/* Forward of both: rows of x -> y, saving mean (layer only) and rstd per row. */
static void norm_forward(const tt_tensor *x, const float *w, const float *b, float eps,
                         float *mean, float *rstd, float *y) {
    int C = tt_last_dim(x);
    long R = (long)tt_rows(x);
#pragma omp parallel for schedule(static) if ((size_t)R * (size_t)C >= PAR_MIN_ELEMS)
    for (long r = 0; r < R; r++) {
        const float *xr = x->data + (size_t)r * C;
        float *yr = y + (size_t)r * C;
        double mu = 0.0, v = 0.0;
        if (mean) {
            for (int j = 0; j < C; j++) mu += xr[j];
            mu /= C;
        }
        /* two passes: (x - mu)^2 does not cancel like E[x^2] - mu^2 */
        for (int j = 0; j < C; j++) {
            double d = xr[j] - mu;
            v += d * d;
        }
        v /= C;
        float muf = (float)mu, rs = (float)(1.0 / sqrt(v + eps));
        if (mean) mean[r] = muf;
        rstd[r] = rs;
        for (int j = 0; j < C; j++) {
            float xh = (xr[j] - muf) * rs;
            if (w) xh *= w[j];
            if (b) xh += b[j];
            yr[j] = xh;
        }
    }
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

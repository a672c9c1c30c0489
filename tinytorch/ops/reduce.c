/* reduce.c - sums, means and maxima, over all elements or along one axis.
 *
 *   s = sum_i a_i      ds/da_i = 1          (backward: da += g, broadcast)
 *   m = s / n          dm/da_i = 1/n        (backward: da += g / n)
 *   M = max_i a_i      dM/da_i = [i == k]   k = the FIRST index holding the maximum
 *
 * Along one axis the tensor is viewed as [outer, n, inner] (n = the reduced axis):
 * out[o, j] = reduce_k a[o, k, j]. Sums are accumulated in double in a fixed order
 * (k ascending), so the result does not depend on thread count or build.
 */
#include "../internal.h"

#include <math.h>

/* ---- over all elements ---------------------------------------------------------------- */

/* Sum in double: the result then does not depend on the order of a float loop, and the
 * error does not grow with n. */
static void sum_all_backward(tt_node *n) {
    tt_tensor *a = n->in[0];
    float *ga = tt_grad_acc(a);
    if (!ga) return;
    float g = n->out->grad[0] * n->f[0]; /* f[0] = 1 for sum, 1/n for mean */
    for (size_t i = 0; i < a->size; i++) ga[i] += g;
}

static tt_tensor *sum_all(tt_tensor *a, bool mean, tt_src src) {
    const char *op = mean ? "mean_all" : "sum_all";
    tt_check_f32(a, src, op, "a");
    if (mean && a->size == 0) tt_error_at(src, op, "mean of empty tensor %s", tt_d(a));
    double s = 0.0;
    for (size_t i = 0; i < a->size; i++) s += a->data[i];
    float scale = mean ? 1.0f / (float)a->size : 1.0f;
    tt_tensor *out = tt_tmp(TT_F32, 0, NULL);
    out->data[0] = (float)(s * scale);
    tt_node *node = tt_record(op, sum_all_backward, out, 1, &a, src);
    if (node) node->f[0] = scale;
    return out;
}

tt_tensor *tt_sum_all_(tt_tensor *a, tt_src src) { return sum_all(a, false, src); }
tt_tensor *tt_mean_all_(tt_tensor *a, tt_src src) { return sum_all(a, true, src); }

/* ---- along one axis --------------------------------------------------------------------- */

/* The [outer, n, inner] view of a around axis ax, and the output shape. */
typedef struct axis_view {
    size_t outer, n, inner;
    int out_ndim;
    int out_shape[TT_MAX_DIMS];
} axis_view;

static axis_view view_axis(const tt_tensor *a, int ax, bool keepdim) {
    axis_view v = {.outer = 1, .n = (size_t)a->shape[ax], .inner = 1};
    for (int d = 0; d < ax; d++) v.outer *= (size_t)a->shape[d];
    for (int d = ax + 1; d < a->ndim; d++) v.inner *= (size_t)a->shape[d];
    for (int d = 0; d < a->ndim; d++) {
        if (d == ax && !keepdim) continue;
        v.out_shape[v.out_ndim++] = d == ax ? 1 : a->shape[d];
    }
    return v;
}

/* sum / mean: da[o, k, j] += g[o, j] * scale   (scale = 1 or 1/n) */
static void sum_backward(tt_node *nd) {
    tt_tensor *a = nd->in[0];
    float *ga = tt_grad_acc(a);
    if (!ga) return;
    const axis_view *v = nd->ctx;
    const float *g = nd->out->grad;
    float scale = nd->f[0];
    for (size_t o = 0; o < v->outer; o++)
        for (size_t k = 0; k < v->n; k++) {
            float *gak = ga + (o * v->n + k) * v->inner;
            const float *go = g + o * v->inner;
            for (size_t j = 0; j < v->inner; j++) gak[j] += go[j] * scale;
        }
}

static tt_tensor *sum_axis(tt_tensor *a, int axis, bool keepdim, bool mean, tt_src src) {
    const char *op = mean ? "mean" : "sum";
    tt_check_f32(a, src, op, "a");
    int ax = tt_norm_axis(a, axis, src, op);
    axis_view v = view_axis(a, ax, keepdim);
    if (mean && v.n == 0)
        tt_error_at(src, op, "mean over empty axis %d of %s", axis, tt_d(a));
    float scale = mean ? 1.0f / (float)v.n : 1.0f;
    tt_tensor *out = tt_tmp(TT_F32, v.out_ndim, v.out_shape);
    if (v.inner == 1) {
        /* the last axis (a router's [N, k] weights): the same sum, in a register; the
         * general loops cost ~10 ns a row in their trip-count checks */
        for (size_t o = 0; o < v.outer; o++) {
            const float *ao = a->data + o * v.n;
            double s = 0.0;
            for (size_t k = 0; k < v.n; k++) s += ao[k];
            out->data[o] = (float)(s * scale);
        }
    } else {
        /* one double accumulator per inner position; k ascending for every j */
        double *acc = tt_arena_alloc(v.inner * sizeof(double));
        for (size_t o = 0; o < v.outer; o++) {
            for (size_t j = 0; j < v.inner; j++) acc[j] = 0.0;
            for (size_t k = 0; k < v.n; k++) {
                const float *ak = a->data + (o * v.n + k) * v.inner;
                for (size_t j = 0; j < v.inner; j++) acc[j] += ak[j];
            }
            float *po = out->data + o * v.inner;
            for (size_t j = 0; j < v.inner; j++) po[j] = (float)(acc[j] * scale);
        }
    }
    tt_node *node = tt_record(op, sum_backward, out, 1, &a, src);
    if (node) {
        node->f[0] = scale;
        node->i[0] = ax;
        node->ctx = tt_arena_alloc(sizeof v);
        *(axis_view *)node->ctx = v;
    }
    return out;
}

tt_tensor *tt_sum_(tt_tensor *a, int axis, bool keepdim, tt_src src) {
    return sum_axis(a, axis, keepdim, false, src);
}
tt_tensor *tt_mean_(tt_tensor *a, int axis, bool keepdim, tt_src src) {
    return sum_axis(a, axis, keepdim, true, src);
}

/* max: the saved argmax k*[o, j] receives the whole gradient: da[o, k*, j] += g[o, j]. */
typedef struct max_ctx {
    axis_view v;
    int32_t *argmax; /* outer * inner entries */
} max_ctx;

static void max_backward(tt_node *nd) {
    tt_tensor *a = nd->in[0];
    float *ga = tt_grad_acc(a);
    if (!ga) return;
    const max_ctx *c = nd->ctx;
    const axis_view *v = &c->v;
    const float *g = nd->out->grad;
    for (size_t o = 0; o < v->outer; o++)
        for (size_t j = 0; j < v->inner; j++) {
            size_t k = (size_t)c->argmax[o * v->inner + j];
            ga[(o * v->n + k) * v->inner + j] += g[o * v->inner + j];
        }
}

tt_tensor *tt_max_(tt_tensor *a, int axis, bool keepdim, tt_src src) {
    tt_check_f32(a, src, "max", "a");
    int ax = tt_norm_axis(a, axis, src, "max");
    axis_view v = view_axis(a, ax, keepdim);
    if (v.n == 0) tt_error_at(src, "max", "max over empty axis %d of %s", axis, tt_d(a));
    tt_tensor *out = tt_tmp(TT_F32, v.out_ndim, v.out_shape);
    size_t n_out = v.outer * v.inner;
    int32_t *argmax = tt_arena_alloc((n_out ? n_out : 1) * sizeof(int32_t));
    for (size_t o = 0; o < v.outer; o++) {
        float *best = out->data + o * v.inner;
        int32_t *arg = argmax + o * v.inner;
        const float *a0 = a->data + o * v.n * v.inner;
        for (size_t j = 0; j < v.inner; j++) {
            best[j] = a0[j];
            arg[j] = 0;
        }
        for (size_t k = 1; k < v.n; k++) {
            const float *ak = a0 + k * v.inner;
            /* strictly greater keeps the first maximum; a NaN wins once (as PyTorch,
             * which propagates NaN) and then stays */
            for (size_t j = 0; j < v.inner; j++)
                if (ak[j] > best[j] || (isnan(ak[j]) && !isnan(best[j]))) {
                    best[j] = ak[j];
                    arg[j] = (int32_t)k;
                }
        }
    }
    tt_node *node = tt_record("max", max_backward, out, 1, &a, src);
    if (node) {
        node->i[0] = ax;
        max_ctx *c = tt_arena_alloc(sizeof *c);
        c->v = v;
        c->argmax = argmax;
        node->ctx = c;
    }
    return out;
}

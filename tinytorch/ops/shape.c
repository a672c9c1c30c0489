/* shape.c - reshape, transpose, concat, slice, split.
 *
 * None of these change a value, they only move elements, so every backward moves the
 * output gradient back to where the element came from (dx[src(k)] += g[k]):
 *   reshape    y = x viewed with another shape (shares data)   dx += g (same order)
 *   transpose  y[.., j, .., i, ..] = x[.., i, .., j, ..]        dx = g transposed back
 *   concat     y = [x_0 | x_1 | ...] along an axis              dx_k += its block of g
 *   slice      y = x[.., start:end, ..]                         dx[.., start:end, ..] += g
 * Tensors are viewed as [outer, axis, inner] around the axis an op works on:
 * outer = product of the dims before it, inner = product of the dims after it.
 * reshape, concat and slice also accept int32 tensors (never differentiated).
 */
#include "../internal.h"

#include <stdio.h>

static void check_tensor(const tt_tensor *t, tt_src src, const char *op, const char *arg) {
    if (!t) tt_error_at(src, op, "argument '%s' is NULL", arg);
}

static size_t prod(const int *shape, int from, int to) {
    size_t p = 1;
    for (int d = from; d < to; d++) p *= (size_t)shape[d];
    return p;
}

/* "[4, -1]" for a shape that is not (yet) a tensor. */
static const char *shape_text(int ndim, const int *shape, char *buf, size_t len) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %d" : "%d", shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

/* ---- reshape: a view -------------------------------------------------------------- */
/* dx += g: the elements keep their row-major order, only the shape changes. */
static void reshape_backward(tt_node *n) {
    if (!tt_grad_pass_through(n)) tt_grad_add_same(n->in[0], n->out->grad);
}

tt_tensor *tt_reshape_(tt_tensor *a, int ndim, const int *shape, tt_src src) {
    check_tensor(a, src, "reshape", "a");
    char want[TT_SHAPE_STR_LEN];
    if (ndim < 0 || ndim > TT_MAX_DIMS)
        tt_error_at(src, "reshape", "ndim %d out of range [0, %d] for %s", ndim, TT_MAX_DIMS,
                    tt_d(a));
    int out_shape[TT_MAX_DIMS];
    int infer = -1;
    size_t known = 1;
    for (int d = 0; d < ndim; d++) {
        out_shape[d] = shape[d];
        if (shape[d] == -1) {
            if (infer >= 0)
                tt_error_at(src, "reshape", "more than one -1 in %s (reshaping %s)",
                            shape_text(ndim, shape, want, sizeof want), tt_d(a));
            infer = d;
        } else if (shape[d] < 0) {
            tt_error_at(src, "reshape", "negative size %d in %s (reshaping %s)", shape[d],
                        shape_text(ndim, shape, want, sizeof want), tt_d(a));
        } else {
            known *= (size_t)shape[d];
        }
    }
    if (infer >= 0) {
        if (known == 0 || a->size % known != 0)
            tt_error_at(src, "reshape", "cannot reshape %s (%zu elements) into %s",
                        tt_d(a), a->size, shape_text(ndim, shape, want, sizeof want));
        out_shape[infer] = (int)(a->size / known);
        known *= (size_t)out_shape[infer];
    }
    if (known != a->size)
        tt_error_at(src, "reshape", "cannot reshape %s (%zu elements) into %s (%zu elements)",
                    tt_d(a), a->size, shape_text(ndim, shape, want, sizeof want), known);

    tt_tensor *out = tt_arena_alloc(sizeof *out);
    memset(out, 0, sizeof *out);
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) out->shape[d] = out_shape[d];
    out->size = a->size;
    out->dtype = a->dtype;
    out->data = a->data; /* shared: writing one writes the other */
    out->is_view = true;
    tt_record("reshape", reshape_backward, out, 1, &a, src);
    return out;
}

/* ---- transpose: a copy with two axes swapped ------------------------------------- */
/* The output shape padded to 4 axes and, per output axis, the stride of the input
 * element it reads: the input strides with the two axes exchanged. */
static void transpose_layout(const tt_tensor *a, int d0, int d1, int o4[4], size_t ps[4]) {
    int pad = 4 - a->ndim;
    size_t stride = 1;
    for (int d = 3; d >= 0; d--) {
        o4[d] = d >= pad ? a->shape[d - pad] : 1;
        ps[d] = stride;
        stride *= (size_t)o4[d];
    }
    int t = o4[d0 + pad];
    o4[d0 + pad] = o4[d1 + pad];
    o4[d1 + pad] = t;
    size_t s = ps[d0 + pad];
    ps[d0 + pad] = ps[d1 + pad];
    ps[d1 + pad] = s;
}

/* y[k] = x[src(k)]  =>  dx[src(k)] += g[k] */
static void transpose_backward(tt_node *n) {
    tt_tensor *a = n->in[0];
    float *ga = tt_grad_acc(a);
    if (!ga) return;
    int o4[4];
    size_t ps[4];
    transpose_layout(a, n->i[0], n->i[1], o4, ps);
    const float *g = n->out->grad;
    size_t o = 0;
    for (int i0 = 0; i0 < o4[0]; i0++)
        for (int i1 = 0; i1 < o4[1]; i1++)
            for (int i2 = 0; i2 < o4[2]; i2++) {
                float *px = ga + i0 * ps[0] + i1 * ps[1] + i2 * ps[2];
                for (int i3 = 0; i3 < o4[3]; i3++) px[i3 * ps[3]] += g[o++];
            }
}

tt_tensor *tt_transpose_(tt_tensor *a, int d0, int d1, tt_src src) {
    tt_check_f32(a, src, "transpose", "a");
    int a0 = tt_norm_axis(a, d0, src, "transpose");
    int a1 = tt_norm_axis(a, d1, src, "transpose");
    int o4[4];
    size_t ps[4];
    transpose_layout(a, a0, a1, o4, ps);
    tt_tensor *out = tt_tmp(TT_F32, a->ndim, o4 + (4 - a->ndim));
    const float *x = a->data;
    float *y = out->data;
    size_t o = 0;
    for (int i0 = 0; i0 < o4[0]; i0++)
        for (int i1 = 0; i1 < o4[1]; i1++)
            for (int i2 = 0; i2 < o4[2]; i2++) {
                const float *px = x + i0 * ps[0] + i1 * ps[1] + i2 * ps[2];
                for (int i3 = 0; i3 < o4[3]; i3++) y[o++] = px[i3 * ps[3]];
            }
    tt_node *node = tt_record("transpose", transpose_backward, out, 1, &a, src);
    if (node) {
        node->i[0] = a0;
        node->i[1] = a1;
    }
    return out;
}

/* ---- concat ------------------------------------------------------------------------ */
/* Output row o (of outer) is the blocks x_0[o], x_1[o], ... of lengths len_k * inner;
 * each input gets its block of g back. i[0] = axis. */
static void concat_backward(tt_node *n) {
    int axis = n->i[0];
    const tt_tensor *y = n->out;
    size_t outer = prod(y->shape, 0, axis), inner = prod(y->shape, axis + 1, y->ndim);
    size_t row = (size_t)y->shape[axis] * inner, off = 0;
    for (int k = 0; k < n->n_in; k++) {
        tt_tensor *x = n->in[k];
        size_t blk = (size_t)x->shape[axis] * inner;
        float *gx = tt_grad_acc(x);
        if (gx)
            for (size_t o = 0; o < outer; o++) {
                const float *restrict g = y->grad + o * row + off;
                float *restrict d = gx + o * blk;
                VEC for (size_t j = 0; j < blk; j++) d[j] += g[j];
            }
        off += blk;
    }
}

tt_tensor *tt_concat_(int n, tt_tensor *const *ts, int axis, tt_src src) {
    if (n < 1 || !ts) tt_error_at(src, "concat", "needs at least one tensor, got %d", n);
    char arg[32];
    for (int k = 0; k < n; k++) {
        snprintf(arg, sizeof arg, "ts[%d]", k);
        check_tensor(ts[k], src, "concat", arg);
    }
    const tt_tensor *t0 = ts[0];
    int ax = tt_norm_axis(t0, axis, src, "concat");
    int len = 0;
    for (int k = 0; k < n; k++) {
        const tt_tensor *t = ts[k];
        if (t->dtype != t0->dtype)
            tt_error_at(src, "concat", "tensor %d %s has another dtype than tensor 0 %s", k,
                        tt_d(t), tt_d(t0));
        bool match = t->ndim == t0->ndim;
        for (int d = 0; match && d < t->ndim; d++)
            if (d != ax && t->shape[d] != t0->shape[d]) match = false;
        if (!match)
            tt_error_at(src, "concat", "tensor %d %s does not match tensor 0 %s outside axis %d",
                        k, tt_d(t), tt_d(t0), ax);
        len += t->shape[ax];
    }
    int shape[TT_MAX_DIMS];
    for (int d = 0; d < t0->ndim; d++) shape[d] = t0->shape[d];
    shape[ax] = len;
    tt_tensor *out = tt_tmp(t0->dtype, t0->ndim, shape);
    size_t outer = prod(shape, 0, ax), inner = prod(shape, ax + 1, t0->ndim);
    size_t row = (size_t)len * inner, off = 0;
    for (int k = 0; k < n; k++) {
        size_t blk = (size_t)ts[k]->shape[ax] * inner;
        for (size_t o = 0; o < outer && blk; o++)
            memcpy(out->data + o * row + off, ts[k]->data + o * blk, blk * sizeof(float));
        off += blk;
    }
    tt_node *node = tt_record("concat", concat_backward, out, n, ts, src);
    if (node) node->i[0] = ax;
    return out;
}

/* ---- slice ------------------------------------------------------------------------- */
/* dx[o, start + j, :] += g[o, j, :]. i[0] = axis, i[1] = start. */
static void slice_backward(tt_node *n) {
    tt_tensor *a = n->in[0];
    float *ga = tt_grad_acc(a);
    if (!ga) return;
    int axis = n->i[0], start = n->i[1];
    size_t outer = prod(a->shape, 0, axis), inner = prod(a->shape, axis + 1, a->ndim);
    size_t in_row = (size_t)a->shape[axis] * inner;
    size_t blk = (size_t)n->out->shape[axis] * inner;
    for (size_t o = 0; o < outer; o++) {
        float *restrict gx = ga + o * in_row + (size_t)start * inner;
        const float *restrict g = n->out->grad + o * blk;
        VEC for (size_t j = 0; j < blk; j++) gx[j] += g[j];
    }
}

tt_tensor *tt_slice_(tt_tensor *a, int axis, int start, int end, tt_src src) {
    check_tensor(a, src, "slice", "a");
    int ax = tt_norm_axis(a, axis, src, "slice");
    int len = a->shape[ax];
    int s = start < 0 ? start + len : start;
    int e = end < 0 ? end + len : end;
    if (s < 0 || e > len || s >= e)
        tt_error_at(src, "slice",
                    "range [%d, %d) is empty or out of range for axis %d of %s (length %d)",
                    start, end, ax, tt_d(a), len);
    int shape[TT_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) shape[d] = a->shape[d];
    shape[ax] = e - s;
    tt_tensor *out = tt_tmp(a->dtype, a->ndim, shape);
    size_t outer = prod(shape, 0, ax), inner = prod(shape, ax + 1, a->ndim);
    size_t in_row = (size_t)len * inner, blk = (size_t)(e - s) * inner;
    for (size_t o = 0; o < outer && blk; o++)
        memcpy(out->data + o * blk, a->data + o * in_row + (size_t)s * inner,
               blk * sizeof(float));
    tt_node *node = tt_record("slice", slice_backward, out, 1, &a, src);
    if (node) {
        node->i[0] = ax;
        node->i[1] = s;
    }
    return out;
}

/* ---- split: n consecutive slices -------------------------------------------------- */
void tt_split_(tt_tensor *a, int axis, int n, const int *sizes, tt_tensor **out, tt_src src) {
    check_tensor(a, src, "split", "a");
    int ax = tt_norm_axis(a, axis, src, "split");
    if (n < 1 || !sizes || !out)
        tt_error_at(src, "split", "needs n >= 1 pieces with sizes and outputs (n = %d)", n);
    long total = 0;
    for (int k = 0; k < n; k++) {
        if (sizes[k] <= 0)
            tt_error_at(src, "split", "piece %d has size %d (must be > 0) splitting %s", k,
                        sizes[k], tt_d(a));
        total += sizes[k];
    }
    if (total != a->shape[ax])
        tt_error_at(src, "split", "sizes sum to %ld but axis %d of %s has length %d", total,
                    ax, tt_d(a), a->shape[ax]);
    int off = 0;
    for (int k = 0; k < n; k++) {
        out[k] = tt_slice_(a, ax, off, off + sizes[k], src);
        off += sizes[k];
    }
}

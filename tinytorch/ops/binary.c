/* binary.c - add, sub, mul, div with numpy broadcasting.
 *
 * Shapes are right-aligned and padded to 4 axes; an axis of size 1 on one side is
 * repeated (stride 0). The backward of a broadcast input sums the output gradient over
 * the axes it was repeated along:
 *   c = a + b:  da += g            db += g
 *   c = a - b:  da += g            db -= g
 *   c = a * b:  da += g * b        db += g * a
 *   c = a / b:  da += g / b        db -= g * a / b^2
 */
#include "../internal.h"

typedef enum { ADD, SUB, MUL, DIV } binop;
static const char *const binop_name[] = {"add", "sub", "mul", "div"};

/* Output shape and per-input element strides (0 on broadcast axes), padded to 4-D. */
typedef struct bcast {
    int shape[4];
    size_t sa[4], sb[4];
    bool same;   /* a, b, out all one shape: flat loops */
} bcast;

static void strides_of(const tt_tensor *t, const int *out4, size_t *s) {
    int pad = 4 - t->ndim;
    size_t stride = 1;
    for (int d = 3; d >= 0; d--) {
        int n = d >= pad ? t->shape[d - pad] : 1;
        s[d] = (n == 1 && out4[d] != 1) ? 0 : stride;
        stride *= (size_t)n;
    }
}

/* Size of axis d (0..3) of t padded on the left to 4 axes. */
static int dim4(const tt_tensor *t, int d) {
    int pad = 4 - t->ndim;
    return d >= pad ? t->shape[d - pad] : 1;
}

static bcast broadcast(tt_tensor *a, tt_tensor *b, int *out_ndim, tt_src src, const char *op) {
    bcast bc = {.same = tt_same_shape(a, b)};
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < 4; d++) {
        int da = dim4(a, d), db = dim4(b, d);
        if (da != db && da != 1 && db != 1)
            tt_error_at(src, op, "shapes %s and %s do not broadcast (axis %d: %d vs %d)",
                        tt_d(a), tt_d(b), d - (4 - nd), da, db);
        bc.shape[d] = da == 1 ? db : da;
    }
    strides_of(a, bc.shape, bc.sa);
    strides_of(b, bc.shape, bc.sb);
    *out_ndim = nd;
    return bc;
}

static inline float apply(binop op, float x, float y) {
    switch (op) {
    case ADD: return x + y;
    case SUB: return x - y;
    case MUL: return x * y;
    default: return x / y;
    }
}

static void forward(binop op, const bcast *bc, const float *a, const float *b, float *c,
                    size_t n) {
    if (bc->same) {
        switch (op) {
        case ADD: for (size_t i = 0; i < n; i++) c[i] = a[i] + b[i]; break;
        case SUB: for (size_t i = 0; i < n; i++) c[i] = a[i] - b[i]; break;
        case MUL: for (size_t i = 0; i < n; i++) c[i] = a[i] * b[i]; break;
        case DIV: for (size_t i = 0; i < n; i++) c[i] = a[i] / b[i]; break;
        }
        return;
    }
    const int *s = bc->shape;
    size_t o = 0;
    for (int i0 = 0; i0 < s[0]; i0++)
        for (int i1 = 0; i1 < s[1]; i1++)
            for (int i2 = 0; i2 < s[2]; i2++) {
                const float *pa = a + i0 * bc->sa[0] + i1 * bc->sa[1] + i2 * bc->sa[2];
                const float *pb = b + i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2];
                size_t ta = bc->sa[3], tb = bc->sb[3];
                for (int i3 = 0; i3 < s[3]; i3++) c[o++] = apply(op, pa[i3 * ta], pb[i3 * tb]);
            }
}

/* Accumulate the gradient of one side. which = 0 for a, 1 for b. */
static void backward_side(binop op, const bcast *bc, int which, const float *g, const float *a,
                          const float *b, float *gx) {
    const int *s = bc->shape;
    size_t o = 0;
    for (int i0 = 0; i0 < s[0]; i0++)
        for (int i1 = 0; i1 < s[1]; i1++)
            for (int i2 = 0; i2 < s[2]; i2++)
                for (int i3 = 0; i3 < s[3]; i3++, o++) {
                    size_t ia = i0 * bc->sa[0] + i1 * bc->sa[1] + i2 * bc->sa[2] + i3 * bc->sa[3];
                    size_t ib = i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2] + i3 * bc->sb[3];
                    float d;
                    switch (op) {
                    case ADD: d = g[o]; break;
                    case SUB: d = which ? -g[o] : g[o]; break;
                    case MUL: d = which ? g[o] * a[ia] : g[o] * b[ib]; break;
                    default:
                        d = which ? -g[o] * a[ia] / (b[ib] * b[ib]) : g[o] / b[ib];
                        break;
                    }
                    gx[which ? ib : ia] += d;
                }
}

static void binary_backward(tt_node *n) {
    binop op = (binop)n->i[0];
    bcast *bc = n->ctx;
    tt_tensor *a = n->in[0], *b = n->in[1];
    const float *g = n->out->grad;
    float *ga = tt_grad_acc(a), *gb = tt_grad_acc(b);
    size_t size = n->out->size;
    if (bc->same) {
        /* flat loops for the common case (residuals, gating) */
        for (size_t i = 0; i < size; i++) {
            switch (op) {
            case ADD: if (ga) ga[i] += g[i]; if (gb) gb[i] += g[i]; break;
            case SUB: if (ga) ga[i] += g[i]; if (gb) gb[i] -= g[i]; break;
            case MUL: if (ga) ga[i] += g[i] * b->data[i]; if (gb) gb[i] += g[i] * a->data[i]; break;
            case DIV:
                if (ga) ga[i] += g[i] / b->data[i];
                if (gb) gb[i] -= g[i] * a->data[i] / (b->data[i] * b->data[i]);
                break;
            }
        }
        return;
    }
    if (ga) backward_side(op, bc, 0, g, a->data, b->data, ga);
    if (gb) backward_side(op, bc, 1, g, a->data, b->data, gb);
}

static tt_tensor *binary(binop op, tt_tensor *a, tt_tensor *b, tt_src src) {
    const char *name = binop_name[op];
    tt_check_f32(a, src, name, "a");
    tt_check_f32(b, src, name, "b");
    int nd;
    bcast bc = broadcast(a, b, &nd, src, name);
    tt_tensor *c = tt_tmp(TT_F32, nd, bc.shape + (4 - nd));
    forward(op, &bc, a->data, b->data, c->data, c->size);
    tt_tensor *in[2] = {a, b};
    tt_node *node = tt_record(name, binary_backward, c, 2, in, src);
    if (node) {
        node->i[0] = op;
        node->ctx = tt_arena_alloc(sizeof bc);
        *(bcast *)node->ctx = bc;
    }
    return c;
}

tt_tensor *tt_add_(tt_tensor *a, tt_tensor *b, tt_src src) { return binary(ADD, a, b, src); }
tt_tensor *tt_sub_(tt_tensor *a, tt_tensor *b, tt_src src) { return binary(SUB, a, b, src); }
tt_tensor *tt_mul_(tt_tensor *a, tt_tensor *b, tt_src src) { return binary(MUL, a, b, src); }
tt_tensor *tt_div_(tt_tensor *a, tt_tensor *b, tt_src src) { return binary(DIV, a, b, src); }

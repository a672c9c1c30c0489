/* binary.c - add, sub, mul, div with numpy broadcasting.
 *
 * Shapes are right-aligned and padded to 4 axes; an axis of size 1 on one side is
 * repeated (stride 0). The backward of a broadcast input sums the output gradient over
 * the axes it was repeated along:
 *   c = a + b:  da += g            db += g
 *   c = a - b:  da += g            db -= g
 *   c = a * b:  da += g * b        db += g * a
 *   c = a / b:  da += g / b        db -= g * a / b^2
 *
 * Fast paths. When one operand ("full") has the output's shape, the other is one of
 *   same    the output's shape too (residuals, gating)
 *   tile    a trailing block of the output's shape, [T] or [.., T] repeated R times
 *           (the Linear bias [C] over [N, C]; a position table [T, d] over [B, T, d])
 *   row     the output's shape with a last axis of 1 ([N, 1] over [N, C]): one value a row
 *   scalar  one element
 * and the output is viewed as R rows of C, every row one contiguous loop over j that the
 * compiler vectorises (the kernels are built for AVX-512, AVX2 and baseline x86-64, the
 * best picked at load time; each lane is the same IEEE operation, so the result does not
 * depend on the choice). Anything else takes the general 4-D loop.
 *
 * Threads. Elementwise work over more than PAR_MIN_ELEMS elements is split by rows (one
 * writer per output element). The sums of a broadcast side are split so that each sum is
 * done by one thread in a fixed order: a tile's column sums db[j] += sum_r g[r, j] by
 * columns (rows ascending within each), a row's sums by rows (j ascending), a scalar's
 * serially - the same float operations in the same order as the serial loop, so results
 * are bit-identical for any thread count.
 */
#include "../internal.h"

/* a loop the compiler must vectorise (plain -O2 only vectorises loops whose trip count
 * needs no scalar remainder); only elementwise loops, never a reduction */

/* elements below which a parallel region costs more than it saves (~20 us of work) */
#define PAR_MIN_ELEMS ((size_t)1 << 16)
/* the flat (same / scalar) cases are cut into rows of this many elements */
#define FLAT_ROW 4096
/* columns per task of a tile's column sums */
#define COL_BLOCK 64

typedef enum { ADD, SUB, MUL, DIV } binop;
static const char *const binop_name[] = {"add", "sub", "mul", "div"};

typedef enum { P_SAME, P_TILE, P_ROW, P_SCALAR, P_GENERIC } pattern;

/* Output shape and per-input element strides (0 on broadcast axes), padded to 4-D, and
 * the fast-path plan: out = R rows of C; `full` (0: a, 1: b) has the output's shape; the
 * other operand p is, for row r, column j:
 *   same: p[r C + j]   tile: p[j]   row: p[r]   scalar: p[0]                          */
typedef struct bcast {
    int shape[4];
    size_t sa[4], sb[4];
    pattern pat;
    int full;
    size_t R, C;
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

/* The pattern of the non-full operand p against the output shape o (4-D). */
static pattern classify(const tt_tensor *p, const int *o, size_t n, size_t *R, size_t *C) {
    if (p->size == n) {
        *C = FLAT_ROW;
        return P_SAME;
    }
    if (p->size == 1) {
        *C = FLAT_ROW;
        return P_SCALAR;
    }
    /* tile: leading axes 1, then the output's trailing axes */
    int k = 0;
    while (k < 4 && dim4(p, k) == 1) k++;
    bool tile = true;
    for (int d = k; d < 4; d++) tile = tile && dim4(p, d) == o[d];
    if (tile) {
        *C = p->size;
        *R = n / p->size;
        return P_TILE;
    }
    /* row: the output's shape with a last axis of 1 */
    bool row = dim4(p, 3) == 1;
    for (int d = 0; d < 3; d++) row = row && dim4(p, d) == o[d];
    if (row) {
        *C = (size_t)o[3];
        *R = n / *C;
        return P_ROW;
    }
    return P_GENERIC;
}

static bcast broadcast(tt_tensor *a, tt_tensor *b, int *out_ndim, tt_src src, const char *op) {
    bcast bc = {.pat = P_GENERIC};
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    size_t n = 1;
    for (int d = 0; d < 4; d++) {
        int da = dim4(a, d), db = dim4(b, d);
        if (da != db && da != 1 && db != 1)
            tt_error_at(src, op, "shapes %s and %s do not broadcast (axis %d: %d vs %d)",
                        tt_d(a), tt_d(b), d - (4 - nd), da, db);
        bc.shape[d] = da == 1 ? db : da;
        n *= (size_t)bc.shape[d];
    }
    strides_of(a, bc.shape, bc.sa);
    strides_of(b, bc.shape, bc.sb);
    *out_ndim = nd;
    if (n > 0 && (a->size == n || b->size == n)) {
        bc.full = a->size == n ? 0 : 1;
        bc.pat = classify(bc.full ? a : b, bc.shape, n, &bc.R, &bc.C);
        if (bc.pat == P_SAME || bc.pat == P_SCALAR) {
            bc.R = (n + FLAT_ROW - 1) / FLAT_ROW;
            bc.C = FLAT_ROW;
        }
    }
    return bc;
}

/* ---- row kernels -------------------------------------------------------------------------
 * c[j] = a[j] op b[j] for j < n, where a == NULL stands for the value as everywhere (and
 * b == NULL for bs). */
TT_CLONES static void fwd_row(binop op, const float *restrict a, float as,
                              const float *restrict b, float bs, float *restrict c, size_t n) {
    if (a && b) {
        switch (op) {
        case ADD: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] + b[j]; break;
        case SUB: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] - b[j]; break;
        case MUL: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] * b[j]; break;
        case DIV: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] / b[j]; break;
        }
    } else if (a) {
        switch (op) {
        case ADD: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] + bs; break;
        case SUB: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] - bs; break;
        case MUL: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] * bs; break;
        case DIV: VEC for (size_t j = 0; j < n; j++) c[j] = a[j] / bs; break;
        }
    } else {
        switch (op) {
        case ADD: VEC for (size_t j = 0; j < n; j++) c[j] = as + b[j]; break;
        case SUB: VEC for (size_t j = 0; j < n; j++) c[j] = as - b[j]; break;
        case MUL: VEC for (size_t j = 0; j < n; j++) c[j] = as * b[j]; break;
        case DIV: VEC for (size_t j = 0; j < n; j++) c[j] = as / b[j]; break;
        }
    }
}

/* out[j] += d_j, the gradient contribution of side `which` (0: a, 1: b) at element j:
 *   a: add, sub: g     mul: g * b     div: g / b
 *   b: add: g   sub: -g   mul: g * a   div: -g * a / (b * b)
 * a == NULL stands for as, b == NULL for bs (for which == 1 and div, b is never NULL). */
TT_CLONES static void bwd_row(binop op, int which, const float *restrict g,
                              const float *restrict a, float as, const float *restrict b,
                              float bs, float *restrict out, size_t n) {
    if (which == 0) {
        switch (op) {
        case ADD:
        case SUB: VEC for (size_t j = 0; j < n; j++) out[j] += g[j]; break;
        case MUL:
            if (b)
                VEC for (size_t j = 0; j < n; j++) out[j] += g[j] * b[j];
            else
                VEC for (size_t j = 0; j < n; j++) out[j] += g[j] * bs;
            break;
        case DIV:
            if (b)
                VEC for (size_t j = 0; j < n; j++) out[j] += g[j] / b[j];
            else
                VEC for (size_t j = 0; j < n; j++) out[j] += g[j] / bs;
            break;
        }
        return;
    }
    switch (op) {
    case ADD: VEC for (size_t j = 0; j < n; j++) out[j] += g[j]; break;
    case SUB: VEC for (size_t j = 0; j < n; j++) out[j] -= g[j]; break;
    case MUL:
        if (a)
            VEC for (size_t j = 0; j < n; j++) out[j] += g[j] * a[j];
        else
            VEC for (size_t j = 0; j < n; j++) out[j] += g[j] * as;
        break;
    case DIV:
        if (a)
            VEC for (size_t j = 0; j < n; j++) out[j] -= g[j] * a[j] / (b[j] * b[j]);
        else
            VEC for (size_t j = 0; j < n; j++) out[j] -= g[j] * as / (b[j] * b[j]);
        break;
    }
}

/* acc + sum_j d_j in j order (a sequential float sum: the order of the serial loop), for
 * a side that is one value across the row (row or scalar pattern). The other side is a
 * full row; the side itself is the scalar v. */
static float bwd_sum(binop op, int which, const float *g, const float *full, float v,
                     size_t n, float acc) {
    if (which == 0) { /* a is the scalar v, b the row */
        switch (op) {
        case ADD:
        case SUB: for (size_t j = 0; j < n; j++) acc += g[j]; break;
        case MUL: for (size_t j = 0; j < n; j++) acc += g[j] * full[j]; break;
        case DIV: for (size_t j = 0; j < n; j++) acc += g[j] / full[j]; break;
        }
        return acc;
    }
    switch (op) { /* b is the scalar v, a the row */
    case ADD: for (size_t j = 0; j < n; j++) acc += g[j]; break;
    case SUB: for (size_t j = 0; j < n; j++) acc -= g[j]; break;
    case MUL: for (size_t j = 0; j < n; j++) acc += g[j] * full[j]; break;
    case DIV: for (size_t j = 0; j < n; j++) acc -= g[j] * full[j] / (v * v); break;
    }
    return acc;
}

/* Row r of the plan: its length and where each operand's row starts (NULL: a value,
 * returned in *s). */
static inline size_t row_len(const bcast *bc, size_t n, size_t r) {
    size_t off = r * bc->C;
    return off + bc->C <= n ? bc->C : n - off;
}

static inline const float *side_row(const bcast *bc, int side, const float *p, size_t r,
                                    float *s) {
    if (side == bc->full || bc->pat == P_SAME) return p + r * bc->C;
    switch (bc->pat) {
    case P_TILE: return p;
    case P_ROW: *s = p[r]; return NULL;
    default: *s = p[0]; return NULL;
    }
}

/* ---- the general 4-D path ------------------------------------------------------------------ */
static inline float apply(binop op, float x, float y) {
    switch (op) {
    case ADD: return x + y;
    case SUB: return x - y;
    case MUL: return x * y;
    default: return x / y;
    }
}

static void forward_generic(binop op, const bcast *bc, const float *a, const float *b,
                            float *c) {
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
static void backward_generic(binop op, const bcast *bc, int which, const float *g,
                             const float *a, const float *b, float *gx) {
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

/* ---- forward and backward --------------------------------------------------------------------- */
/* One loop of forward / backward_rows / backward_bcast as its range function sees it. */
typedef struct bin_job {
    binop op;
    const bcast *bc;
    int which;              /* the side whose gradient is computed (0: a, 1: b) */
    const float *g, *a, *b; /* g: the output's gradient (backward; NULL forward) */
    float *out;             /* c (forward) or gx                                */
    size_t n;               /* output elements                                  */
} bin_job;

/* Rows [r0, r1) of the plan: c = a op b (forward, g NULL) or gx += d (backward) */
static void elementwise_rows(void *ctx, long r0, long r1) {
    const bin_job *j = ctx;
    const bcast *bc = j->bc;
    for (long r = r0; r < r1; r++) {
        float as = 0.0f, bs = 0.0f;
        const float *ar = side_row(bc, 0, j->a, (size_t)r, &as);
        const float *br = side_row(bc, 1, j->b, (size_t)r, &bs);
        size_t off = (size_t)r * bc->C, len = row_len(bc, j->n, (size_t)r);
        if (j->g)
            bwd_row(j->op, j->which, j->g + off, ar, as, br, bs, j->out + off, len);
        else
            fwd_row(j->op, ar, as, br, bs, j->out + off, len);
    }
}

static void forward(binop op, const bcast *bc, const float *a, const float *b, float *c,
                    size_t n) {
    if (bc->pat == P_GENERIC) {
        forward_generic(op, bc, a, b, c);
        return;
    }
    long R = (long)bc->R;
    bin_job j = {.op = op, .bc = bc, .a = a, .b = b, .out = c, .n = n};
    tt_parallel_for(R, tt_loop_threads(n, PAR_MIN_ELEMS, R), elementwise_rows, &j);
}

/* The gradient of a side that has the output's shape (or of both, when same). */
static void backward_rows(binop op, const bcast *bc, int which, const float *g,
                          const float *a, const float *b, float *gx, size_t n) {
    long R = (long)bc->R;
    bin_job j = {op, bc, which, g, a, b, gx, n};
    tt_parallel_for(R, tt_loop_threads(n, PAR_MIN_ELEMS, R), elementwise_rows, &j);
}

/* tile: gx[j] += sum_r d(r, j), r ascending, for column blocks [k0, k1) */
static void tile_sum_blocks(void *ctx, long k0, long k1) {
    const bin_job *j = ctx;
    const float *full = j->which ? j->a : j->b, *self = j->which ? j->b : j->a;
    size_t R = j->bc->R, C = j->bc->C;
    for (long blk = k0; blk < k1; blk++) {
        size_t j0 = (size_t)blk * COL_BLOCK, len = C - j0 < COL_BLOCK ? C - j0 : COL_BLOCK;
        for (size_t r = 0; r < R; r++) {
            const float *fr = full + r * C + j0, *gr = j->g + r * C + j0;
            const float *ar = j->which ? fr : self + j0, *br = j->which ? self + j0 : fr;
            bwd_row(j->op, j->which, gr, ar, 0.0f, br, 0.0f, j->out + j0, len);
        }
    }
}

/* row: gx[r] += sum_j d(r, j), j ascending, for rows [r0, r1) */
static void row_sum_rows(void *ctx, long r0, long r1) {
    const bin_job *j = ctx;
    const float *full = j->which ? j->a : j->b, *self = j->which ? j->b : j->a;
    size_t C = j->bc->C;
    float *gx = j->out;
    for (long r = r0; r < r1; r++)
        gx[r] = bwd_sum(j->op, j->which, j->g + (size_t)r * C, full + (size_t)r * C, self[r], C,
                        gx[r]);
}

/* The gradient of the broadcast side (tile, row or scalar): sums over the rows / columns
 * it was repeated along, each sum in the serial loop's order. */
static void backward_bcast(binop op, const bcast *bc, int which, const float *g,
                           const float *a, const float *b, float *gx, size_t n) {
    bin_job j = {op, bc, which, g, a, b, gx, n};
    const float *full = which ? a : b, *self = which ? b : a;
    switch (bc->pat) {
    case P_TILE: {
        /* tasks are blocks of columns */
        long nblk = (long)((bc->C + COL_BLOCK - 1) / COL_BLOCK);
        tt_parallel_for(nblk, tt_loop_threads(n, PAR_MIN_ELEMS, nblk), tile_sum_blocks, &j);
        break;
    }
    case P_ROW: {
        long rows = (long)bc->R;
        tt_parallel_for(rows, tt_loop_threads(n, PAR_MIN_ELEMS, rows), row_sum_rows, &j);
        break;
    }
    default: /* scalar: one sum over everything, in order */
        gx[0] = bwd_sum(op, which, g, full, self[0], n, gx[0]);
        break;
    }
}

/* d(a + b) of two same-shaped inputs: both gradients are g. b's first (a copy, or g
 * added); then a's, which takes g's buffer over if it can (tt_grad_pass_through). */
static void add_same_backward(tt_node *n) {
    tt_grad_add_same(n->in[1], n->out->grad);
    if (!tt_grad_pass_through(n)) tt_grad_add_same(n->in[0], n->out->grad);
}

static void binary_backward(tt_node *n) {
    binop op = (binop)n->i[0];
    const bcast *bc = n->ctx;
    tt_tensor *a = n->in[0], *b = n->in[1];
    if (op == ADD && bc->pat == P_SAME && a != b) {
        add_same_backward(n);
        return;
    }
    const float *g = n->out->grad;
    float *ga = tt_grad_acc(a), *gb = tt_grad_acc(b);
    size_t size = n->out->size;
    if (bc->pat == P_GENERIC) {
        if (ga) backward_generic(op, bc, 0, g, a->data, b->data, ga);
        if (gb) backward_generic(op, bc, 1, g, a->data, b->data, gb);
        return;
    }
    float *gs[2] = {ga, gb};
    for (int w = 0; w < 2; w++) {
        if (!gs[w]) continue;
        if (bc->pat == P_SAME || w == bc->full)
            backward_rows(op, bc, w, g, a->data, b->data, gs[w], size);
        else
            backward_bcast(op, bc, w, g, a->data, b->data, gs[w], size);
    }
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

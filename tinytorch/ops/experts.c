/* experts.c - the routed experts of an MoE layer as one op, an expert per thread.
 *
 * Expert e of n runs on the rows idx[off[e]], ..., idx[off[e+1] - 1] of x [N, dim] and
 * writes rows off[e] .. off[e+1] - 1 of y [T, dim] (T = off[n]). ReLU experts (the
 * seed's):
 *
 *   X_e = x[idx[off[e] ...]]                   [c, dim]     (index_select)
 *   H_e = relu(X_e W1_e^T + b1_e)              [c, hidden]  (affine_relu, fc1)
 *   y_e = H_e W2_e^T + b2_e                    [c, dim]     (affine, fc2)
 *
 * Backward, with G = dL/dy_e:
 *   db2 += colsum(G)      dH = G W2      dW2 += G^T H_e
 *   Gp = dH * [H_e > 0]   db1 += colsum(Gp)
 *   dX = Gp W1            dW1 += Gp^T X_e          dx[idx[off[e] + m]] += dX[m]
 *
 * SwiGLU experts (DeepSeek-V3's), s(a) = 1 / (1 + e^-a):
 *
 *   A_e = X_e W1_e^T + b1_e    B_e = X_e W3_e^T + b3_e         (affine w1, affine w3)
 *   H_e = silu(A_e) * B_e,  silu(a) = a s(a)                   (silu, mul)
 *   y_e = H_e W2_e^T + b2_e                                    (affine w2)
 *
 * Backward: db2, dH and dW2 as above, then
 *   dS = dH * B_e    dB = dH * silu(A_e)    dA = dS s(A_e) (1 + A_e (1 - s(A_e)))
 *   db1 += colsum(dA)   dX  = dA W1   dW1 += dA^T X_e
 *   db3 += colsum(dB)   dX += dB W3   dW3 += dB^T X_e
 *
 * The same ops as index_select, the Linears and the activation per expert, in one tape
 * node, for speed: the experts are independent, so with two threads each thread takes
 * whole experts (the largest first) and runs their products on its own core, where op by
 * op every product would be shared by both threads - its operands crossing between the
 * cores' caches, a barrier or a claim per product. Measured on the Zen 5 of the
 * fourteenth session, 2 threads (ReLU): the experts alone (each expert's operands its
 * own), forward 1.76x -> 1.95x of one thread for the small model's, 1.85x -> 1.95x for
 * the medium's; backward (op by op: the products as pairs) 1.55-1.61x -> 1.93-1.96x;
 * whole training steps (in-process ABBA against the op-by-op loop) toy 0.86, small 0.92,
 * medium 0.92 of the time; one thread unchanged. bench/README.md has the details.
 *
 * Every product is the one the op-by-op path computes (tt_gemm / tt_gemm_bias with the
 * same shapes, strides and beta; a product's bits do not depend on its thread count),
 * the bias sums run over rows in order, the elementwise steps are the ops' own
 * expressions (silu's vsigmoid; a gradient the ops would add to a zeroed buffer is
 * added to +0 here too, which turns a -0 into +0 as they do), and dx receives the
 * experts' rows in the order the op-by-op backward would add them (last expert first):
 * the results are bit for bit those of the ops per expert, for any thread count
 * (tests/test_experts.c checks both kinds).
 */
#include "../internal.h"
#include "../kernels/gemm.h"
#include "../kernels/vmath.h"

#include <stdint.h>
#include <stdlib.h>

/* Multiply-adds below which the experts stay on one thread (as tt_gemm would keep their
 * products: a parallel region costs a few microseconds). */
#define EXPERTS_PAR_MIN ((size_t)1 << 20)
/* Floats added below which dx's gather stays on one thread. */
#define GATHER_PAR_MIN ((size_t)1 << 16)

typedef struct experts_ctx {
    int n, dim, hidden;
    bool swiglu;     /* else ReLU experts                                          */
    int *off;        /* [n + 1] first row of each expert; off[n] = T              */
    int *order;      /* [n] the experts by rows, largest first (claim order)       */
    float *xs;       /* [T, dim] the gathered rows X_e, kept for dW1 (and dW3)     */
    float *h;        /* [T, hidden] H_e, kept for dW2 (and the ReLU's mask)        */
    float *a, *b;    /* [T, hidden] A_e and B_e (SwiGLU), kept for its backward    */
    bool bias1, bias2, bias3;
} experts_ctx;

/* in[]: x, idx, w1[0..n), w2[0..n), w3[0..n) (SwiGLU), then b1[0..n), b2[0..n),
 * b3[0..n), each only if given */
static int n_weights(const experts_ctx *c) { return c->swiglu ? 3 : 2; }
static tt_tensor *w1_of(tt_node *nd, int e) { return nd->in[2 + e]; }
static tt_tensor *w2_of(tt_node *nd, int n, int e) { return nd->in[2 + n + e]; }
static tt_tensor *w3_of(tt_node *nd, int n, int e) { return nd->in[2 + 2 * n + e]; }
static tt_tensor *b1_of(tt_node *nd, const experts_ctx *c, int e) {
    return c->bias1 ? nd->in[2 + n_weights(c) * c->n + e] : NULL;
}
static tt_tensor *b2_of(tt_node *nd, const experts_ctx *c, int e) {
    return c->bias2 ? nd->in[2 + (n_weights(c) + c->bias1) * c->n + e] : NULL;
}
static tt_tensor *b3_of(tt_node *nd, const experts_ctx *c, int e) {
    return c->bias3 ? nd->in[2 + (n_weights(c) + c->bias1 + c->bias2) * c->n + e] : NULL;
}

/* ---- SwiGLU's elementwise steps (the silu and mul ops' arithmetic, lane by lane) ---- */
/* h = silu(a) * b over n floats: silu(a) = a s(a) rounded, then the product */
TT_CLONES static void swiglu_rows(const float *restrict a, const float *restrict b,
                                  float *restrict h, size_t n) {
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        const v16 v = VLOAD(a + i);
        v16 sg;
        vsigmoid(&v, &sg);
        VSTORE(h + i, (v * sg) * VLOAD(b + i));
    }
    if (i < n) {
        v16 v, bv, sg;
        vload_part(&v, a + i, (int)(n - i), 0.0f);
        vload_part(&bv, b + i, (int)(n - i), 0.0f);
        vsigmoid(&v, &sg);
        const v16 r = (v * sg) * bv;
        for (size_t k = 0; k < n - i; k++) h[i + k] = r[k];
    }
}

/* From dH (in d) to dA (into d, in place) and dB (into db), over n floats. Each is
 * added to +0, as the ops add them to their new (zeroed) gradient buffers:
 *   dS = 0 + dH B,  dB = 0 + dH silu(A)          (mul's backward)
 *   dA = 0 + dS s(A) (1 + A (1 - s(A)))          (silu's backward)              */
TT_CLONES static void swiglu_grad_rows(float *restrict d, float *restrict db,
                                       const float *restrict a, const float *restrict b,
                                       size_t n) {
    const v16 zero = vsplat(0.0f);
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        const v16 v = VLOAD(a + i), dh = VLOAD(d + i);
        v16 sg;
        vsigmoid(&v, &sg);
        const v16 ds = zero + dh * VLOAD(b + i);
        VSTORE(db + i, zero + dh * (v * sg));
        VSTORE(d + i, zero + ds * sg * (1.0f + v * (1.0f - sg)));
    }
    if (i < n) {
        v16 v, bv, dh, sg;
        vload_part(&v, a + i, (int)(n - i), 0.0f);
        vload_part(&bv, b + i, (int)(n - i), 0.0f);
        vload_part(&dh, d + i, (int)(n - i), 0.0f);
        vsigmoid(&v, &sg);
        const v16 ds = zero + dh * bv;
        const v16 rb = zero + dh * (v * sg), ra = zero + ds * sg * (1.0f + v * (1.0f - sg));
        for (size_t k = 0; k < n - i; k++) {
            db[i + k] = rb[k];
            d[i + k] = ra[k];
        }
    }
}

/* Whether the experts go one per thread (else one after another, each product split
 * between the threads as tt_gemm decides). At least two experts a thread: with fewer, a
 * thread could wait for the other's whole expert. */
static int experts_threads(const experts_ctx *c) {
    const size_t work = (size_t)c->off[c->n] * (size_t)c->dim * (size_t)c->hidden;
    const int nt = tt_loop_threads(work, EXPERTS_PAR_MIN, c->n);
    return c->n >= 2 * nt ? nt : 1;
}

/* Runs task(job, e, slot) for every expert: on nt threads, each claiming the next
 * expert of c->order (largest first, so that what is left at the end is small), or on
 * the caller (nt = 1), last expert first - the order of the op-by-op backward, which
 * matters only where two experts write one gradient (a tensor passed twice: then the
 * backward runs here, with the same bits as op by op). slot (0 .. nt - 1) numbers the
 * thread, for its scratch. */
typedef void (*expert_task)(void *job, int e, int slot);
typedef struct each_job {
    const experts_ctx *c;
    expert_task task;
    void *job;
    atomic_int next;
} each_job;

static void each_range(void *ctx, long t0, long t1) {
    (void)t1;
    each_job *j = ctx;
    for (int i; (i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->c->n;)
        j->task(j->job, j->c->order[i], (int)t0);
}

static void for_each_expert(const experts_ctx *c, int nt, expert_task task, void *job) {
    if (nt <= 1) {
        for (int e = c->n - 1; e >= 0; e--) task(job, e, 0);
        return;
    }
    each_job j = {c, task, job, 0};
    tt_parallel_for(nt, nt, each_range, &j);
}

/* ---- forward ------------------------------------------------------------------------- */
typedef struct fwd_job {
    const experts_ctx *c;
    const float *x;
    const int32_t *idx;
    const float **w1, **b1, **w2, **b2, **w3, **b3; /* (w3, b3: SwiGLU) */
    float *y;
} fwd_job;

static void forward_expert(void *p, int e, int slot) {
    (void)slot;
    const fwd_job *j = p;
    const experts_ctx *c = j->c;
    const int r0 = c->off[e], m = c->off[e + 1] - r0, dim = c->dim, hid = c->hidden;
    if (m == 0) return;
    float *xe = c->xs + (size_t)r0 * dim, *he = c->h + (size_t)r0 * hid;
    for (int r = 0; r < m; r++)
        memcpy(xe + (size_t)r * dim, j->x + (size_t)j->idx[r0 + r] * dim, (size_t)dim * sizeof *xe);
    if (c->swiglu) { /* (w3 first, as the SwiGLU expert records them; nn/layers.c) */
        float *ae = c->a + (size_t)r0 * hid, *be = c->b + (size_t)r0 * hid;
        tt_gemm_bias(false, true, m, hid, dim, 1.0f, xe, dim, j->w3[e], dim, 0.0f, be, hid,
                     j->b3[e], false);
        tt_gemm_bias(false, true, m, hid, dim, 1.0f, xe, dim, j->w1[e], dim, 0.0f, ae, hid,
                     j->b1[e], false);
        swiglu_rows(ae, be, he, (size_t)m * hid);
    } else {
        tt_gemm_bias(false, true, m, hid, dim, 1.0f, xe, dim, j->w1[e], dim, 0.0f, he, hid,
                     j->b1[e], true);
    }
    tt_gemm_bias(false, true, m, dim, hid, 1.0f, he, hid, j->w2[e], hid, 0.0f,
                 j->y + (size_t)r0 * dim, dim, j->b2[e], false);
}

/* ---- backward ------------------------------------------------------------------------ */
typedef struct bwd_job {
    const experts_ctx *c;
    const float *g;          /* dL/dy [T, dim]                                      */
    const float **w1, **w2, **w3;
    float **gw1, **gw2, **gw3, **gb1, **gb2, **gb3; /* per expert; NULL: not wanted */
    bool *fresh1, *fresh2, *fresh3; /* gw1 / gw2 / gw3 new this step: overwritten    */
    float *gxs;              /* [T, dim] dX_e, gathered into dx afterwards; or NULL  */
    float *scratch;          /* per thread: [max rows, hidden] for dH / Gp (/ dA),
                              * SwiGLU: twice that, dB after it                     */
    size_t scratch_per;      /* floats per thread                                   */
} bwd_job;

/* The backward of a first-layer Linear (w1 or w3) of the expert at rows r0 .. r0 + m - 1
 * from its output gradient D [m, hidden], its bias gradient already summed:
 *   dX (+)= D W  (beta_x 0: writes the rows of gxs, 1: adds to them)   dW (+)= D^T X */
static void input_linear_grads(const bwd_job *j, int r0, int m, const float *d, const float *w,
                               float *gw, bool fresh, float beta_x) {
    const int dim = j->c->dim, hid = j->c->hidden;
    if (j->gxs)
        tt_gemm(false, false, m, dim, hid, 1.0f, d, hid, w, dim, beta_x,
                j->gxs + (size_t)r0 * dim, dim);
    if (gw)
        tt_gemm(true, false, hid, dim, m, 1.0f, d, hid, j->c->xs + (size_t)r0 * dim, dim,
                fresh ? 0.0f : 1.0f, gw, dim);
}

static void backward_expert(void *p, int e, int slot) {
    const bwd_job *j = p;
    const experts_ctx *c = j->c;
    const int r0 = c->off[e], m = c->off[e + 1] - r0, dim = c->dim, hid = c->hidden;
    if (m == 0) return;
    const float *g = j->g + (size_t)r0 * dim, *he = c->h + (size_t)r0 * hid;
    /* scratch: dH, made Gp (ReLU) or dA (SwiGLU) in place; SwiGLU's dB after it */
    float *gp = j->scratch + (size_t)slot * j->scratch_per, *gbr = gp + (size_t)m * hid;
    /* fc2 / w2: db2, dH = G W2, dW2 (+)= G^T H */
    tt_affine_grad_pre(g, NULL, false, NULL, j->gb2[e], m, dim);
    tt_gemm(false, false, m, hid, dim, 1.0f, g, dim, j->w2[e], hid, 0.0f, gp, hid);
    if (j->gw2[e])
        tt_gemm(true, false, dim, hid, m, 1.0f, g, dim, he, hid, j->fresh2[e] ? 0.0f : 1.0f,
                j->gw2[e], hid);
    if (!c->swiglu) {
        /* the ReLU: Gp = dH * [H > 0] in place, and db1; then fc1: dX = Gp W1, dW1 */
        tt_affine_grad_pre(gp, he, true, gp, j->gb1[e], m, hid);
        input_linear_grads(j, r0, m, gp, j->w1[e], j->gw1[e], j->fresh1[e], 0.0f);
        return;
    }
    /* dA and dB; then w1's backward, then w3's (dX += dB W3), each as the affine op's */
    swiglu_grad_rows(gp, gbr, c->a + (size_t)r0 * hid, c->b + (size_t)r0 * hid,
                     (size_t)m * hid);
    tt_affine_grad_pre(gp, NULL, false, NULL, j->gb1[e], m, hid);
    input_linear_grads(j, r0, m, gp, j->w1[e], j->gw1[e], j->fresh1[e], 0.0f);
    tt_affine_grad_pre(gbr, NULL, false, NULL, j->gb3[e], m, hid);
    input_linear_grads(j, r0, m, gbr, j->w3[e], j->gw3[e], j->fresh3[e], 1.0f);
}

/* dx[r] += dX[p] for every p with idx[p] = r, in the order the op-by-op backward adds them
 * (one index_select backward per expert, last expert first; within an expert, p in
 * order), fresh: dx is a new buffer, zeroed here row by row first. Rather than one
 * scatter per expert (a parallel region each, the threads splitting columns), each row
 * of dx gathers its own terms: a list of the p of each row in that order (counting
 * sort), then the rows split between the threads in one region. Every element receives
 * the same terms in the same order: the same bits for any thread count, as before. */
typedef struct gather_job {
    const int *start, *list; /* row r's terms: dX rows list[start[r] .. start[r+1])   */
    const float *gxs;
    float *gx;
    int dim;
    bool fresh;
} gather_job;

static void gather_rows_range(void *ctx, long r0, long r1) {
    const gather_job *j = ctx;
    const size_t dim = (size_t)j->dim;
    for (long r = r0; r < r1; r++) {
        float *restrict d = j->gx + (size_t)r * dim;
        if (j->fresh) memset(d, 0, dim * sizeof *d);
        for (int t = j->start[r]; t < j->start[r + 1]; t++) {
            const float *restrict s = j->gxs + (size_t)j->list[t] * dim;
            VEC for (size_t k = 0; k < dim; k++) d[k] += s[k];
        }
    }
}

static void gather_dx(const experts_ctx *c, const int32_t *id, int N, const float *gxs,
                      float *gx, bool fresh) {
    const int n = c->n, T = c->off[n];
    int *start = tt_arena_alloc((size_t)(N + 1) * sizeof *start);
    int *fill = tt_arena_alloc((size_t)(N + 1) * sizeof *fill);
    int *list = tt_arena_alloc(((size_t)T + 1) * sizeof *list);
    memset(start, 0, (size_t)(N + 1) * sizeof *start);
    for (int p = 0; p < T; p++) start[id[p] + 1]++;
    for (int r = 0; r < N; r++) start[r + 1] += start[r];
    memcpy(fill, start, (size_t)(N + 1) * sizeof *fill);
    for (int e = n - 1; e >= 0; e--)
        for (int p = c->off[e]; p < c->off[e + 1]; p++) list[fill[id[p]]++] = p;
    gather_job j = {start, list, gxs, gx, c->dim, fresh};
    tt_parallel_for(N, tt_loop_threads((size_t)T * c->dim, GATHER_PAR_MIN, N), gather_rows_range,
                    &j);
}

static int cmp_ptr(const void *a, const void *b) {
    const uintptr_t x = (uintptr_t)*(tt_tensor *const *)a, y = (uintptr_t)*(tt_tensor *const *)b;
    return (x > y) - (x < y);
}

/* Whether a tensor is passed twice (x and the weights; idx aside): the same weight for
 * two experts, or as an expert's w1 and w2. Then two experts would write one gradient
 * buffer, so they take turns on one thread (as op by op). */
static bool inputs_repeat(const tt_node *nd) {
    tt_tensor **t = tt_arena_alloc((size_t)nd->n_in * sizeof *t);
    int k = 0;
    for (int i = 0; i < nd->n_in; i++)
        if (i != 1) t[k++] = nd->in[i];
    qsort(t, (size_t)k, sizeof *t, cmp_ptr);
    for (int i = 1; i < k; i++)
        if (t[i] == t[i - 1]) return true;
    return false;
}

static void experts_backward(tt_node *nd) {
    const experts_ctx *c = nd->ctx;
    const int n = c->n, dim = c->dim, T = c->off[n];
    tt_tensor *x = nd->in[0], *idx = nd->in[1];
    /* every buffer first, on this thread (the arena and the gradients are not for
     * threads): per expert its parameters' gradients, in the order the products write
     * them (last expert first; w2's, then w1's, then w3's), so that of a weight passed
     * twice the first writer gets a new buffer to overwrite and the others add to it;
     * then dX and the threads' scratch */
    const float **pp = tt_arena_alloc((size_t)3 * n * sizeof *pp);
    float **grads = tt_arena_alloc((size_t)6 * n * sizeof *grads);
    bool *fresh = tt_arena_alloc((size_t)3 * n * sizeof *fresh);
    bwd_job j = {.c = c, .g = nd->out->grad, .w1 = pp, .w2 = pp + n, .w3 = pp + 2 * n,
                 .gw1 = grads, .gw2 = grads + n, .gw3 = grads + 2 * n, .gb1 = grads + 3 * n,
                 .gb2 = grads + 4 * n, .gb3 = grads + 5 * n, .fresh1 = fresh,
                 .fresh2 = fresh + n, .fresh3 = fresh + 2 * n};
    for (int e = n - 1; e >= 0; e--) {
        tt_tensor *b1 = b1_of(nd, c, e), *b2 = b2_of(nd, c, e), *b3 = b3_of(nd, c, e);
        j.w1[e] = w1_of(nd, e)->data;
        j.w2[e] = w2_of(nd, n, e)->data;
        j.w3[e] = c->swiglu ? w3_of(nd, n, e)->data : NULL;
        j.gb3[e] = j.gw3[e] = NULL;
        if (c->off[e + 1] == c->off[e]) { /* no rows: no gradient, as if not called */
            j.gb2[e] = j.gw2[e] = j.gb1[e] = j.gw1[e] = NULL;
            continue;
        }
        j.gb2[e] = b2 ? tt_grad_acc(b2) : NULL;
        j.gw2[e] = tt_grad_acc_fresh(w2_of(nd, n, e), &j.fresh2[e]);
        j.gb1[e] = b1 ? tt_grad_acc(b1) : NULL;
        j.gw1[e] = tt_grad_acc_fresh(w1_of(nd, e), &j.fresh1[e]);
        if (!c->swiglu) continue;
        j.gb3[e] = b3 ? tt_grad_acc(b3) : NULL;
        j.gw3[e] = tt_grad_acc_fresh(w3_of(nd, n, e), &j.fresh3[e]);
    }
    bool fresh_x;
    float *gx = tt_grad_acc_fresh(x, &fresh_x);
    j.gxs = gx ? tt_arena_grad_alloc((size_t)T * dim) : NULL;
    int rows_max = 0;
    for (int e = 0; e < n; e++)
        if (c->off[e + 1] - c->off[e] > rows_max) rows_max = c->off[e + 1] - c->off[e];
    const int nt = inputs_repeat(nd) ? 1 : experts_threads(c);
    /* (a multiple of 16 floats: each thread's scratch on its own cache lines) */
    j.scratch_per = ((size_t)rows_max * c->hidden * (c->swiglu ? 2 : 1) + 15) / 16 * 16;
    j.scratch = tt_arena_grad_alloc(j.scratch_per * (size_t)nt);
    for_each_expert(c, nt, backward_expert, &j);
    tt_arena_grad_free(j.scratch, j.scratch_per * (size_t)nt);
    if (!gx) return;
    gather_dx(c, tt_ids(idx), x->shape[0], j.gxs, gx, fresh_x);
    tt_arena_grad_free(j.gxs, (size_t)T * dim);
}

/* ---- the op ---------------------------------------------------------------------------- */
/* The claim order: experts by rows, largest first (ties: lower number first). An
 * insertion sort: n is the number of experts of one layer. */
static void order_by_rows(int *order, const int *off, int n) {
    for (int i = 0; i < n; i++) {
        const int rows = off[i + 1] - off[i];
        int k = i;
        for (; k > 0 && off[order[k - 1] + 1] - off[order[k - 1]] < rows; k--)
            order[k] = order[k - 1];
        order[k] = i;
    }
}

/* The experts' weights: w[0] = w1, w[1] = w2, w[2] = w3 (SwiGLU); b[k] likewise, each
 * array or NULL. */
static tt_tensor *experts_op(bool swiglu, tt_tensor *x, tt_tensor *idx, int n, const int *off,
                             tt_tensor *const *w[3], tt_tensor *const *b[3], tt_src src) {
    const char *op = swiglu ? "experts_swiglu" : "experts_relu";
    static const char *const wname[3] = {"w1", "w2", "w3"}, *const bname[3] = {"b1", "b2", "b3"};
    const int nw = swiglu ? 3 : 2;
    tt_check_f32(x, src, op, "x");
    tt_check_i32(idx, src, op, "idx");
    TT_CHECK(x->ndim == 2, src, op, "x %s must be [N, dim]", tt_d(x));
    TT_CHECK(idx->ndim == 1, src, op, "idx %s must be 1-D [T]", tt_d(idx));
    TT_CHECK(n >= 1 && off && w[0] && w[1] && (!swiglu || w[2]), src, op,
             "needs n >= 1 experts (got %d), off, %s", n, swiglu ? "w1, w2, w3" : "w1, w2");
    TT_CHECK(off[0] == 0, src, op, "off[0] = %d must be 0", off[0]);
    TT_CHECK(off[n] == idx->shape[0], src, op, "off[%d] = %d must be the length of idx %s", n,
             off[n], tt_d(idx));
    const int N = x->shape[0], dim = x->shape[1];
    for (int e = 0; e < n; e++) {
        TT_CHECK(off[e + 1] >= off[e], src, op, "off[%d] = %d < off[%d] = %d", e + 1, off[e + 1],
                 e, off[e]);
        for (int k = 0; k < nw; k++) tt_check_f32(w[k][e], src, op, wname[k]);
    }
    const int hid = w[0][0]->ndim == 2 ? w[0][0]->shape[0] : -1;
    for (int e = 0; e < n; e++) {
        for (int k = 0; k < nw; k++) { /* w1, w3 [hidden, dim]; w2 [dim, hidden] */
            const int rows = k == 1 ? dim : hid, cols = k == 1 ? hid : dim;
            const tt_tensor *t = w[k][e];
            TT_CHECK(t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols, src, op,
                     "expert %d: %s %s must be [%d, %d] (x %s, hidden from w1[0] %s)", e,
                     wname[k], tt_d(t), rows, cols, tt_d(x), tt_d(w[0][0]));
            if (!b[k]) continue;
            tt_check_f32(b[k][e], src, op, bname[k]);
            TT_CHECK(b[k][e]->ndim == 1 && b[k][e]->shape[0] == rows, src, op,
                     "expert %d: %s %s must be [%d]", e, bname[k], tt_d(b[k][e]), rows);
        }
    }
    const int32_t *id = tt_ids(idx);
    for (int r = 0; r < idx->shape[0]; r++)
        TT_CHECK(id[r] >= 0 && id[r] < N, src, op,
                 "index %d at position [%d] of %s is out of range [0, %d) for %s", (int)id[r], r,
                 tt_d(idx), N, tt_d(x));
    const int T = off[n];

    experts_ctx *c = tt_arena_alloc(sizeof *c);
    *c = (experts_ctx){.n = n, .dim = dim, .hidden = hid, .swiglu = swiglu,
                       .bias1 = b[0] != NULL, .bias2 = b[1] != NULL,
                       .bias3 = swiglu && b[2] != NULL};
    c->off = tt_arena_alloc((size_t)(n + 1) * sizeof *c->off);
    memcpy(c->off, off, (size_t)(n + 1) * sizeof *c->off);
    c->order = tt_arena_alloc((size_t)n * sizeof *c->order);
    order_by_rows(c->order, c->off, n);
    c->xs = tt_arena_alloc(((size_t)T * dim + 1) * sizeof(float));
    c->h = tt_arena_alloc(((size_t)T * hid + 1) * sizeof(float));
    if (swiglu) {
        c->a = tt_arena_alloc(((size_t)T * hid + 1) * sizeof(float));
        c->b = tt_arena_alloc(((size_t)T * hid + 1) * sizeof(float));
    }
    tt_tensor *y = tt_tmp(TT_F32, 2, (int[]){T, dim});

    const float **pp = tt_arena_alloc((size_t)6 * n * sizeof *pp);
    fwd_job j = {.c = c, .x = x->data, .idx = id, .w1 = pp, .b1 = pp + n, .w2 = pp + 2 * n,
                 .b2 = pp + 3 * n, .w3 = pp + 4 * n, .b3 = pp + 5 * n, .y = y->data};
    for (int e = 0; e < n; e++) {
        j.w1[e] = w[0][e]->data;
        j.w2[e] = w[1][e]->data;
        j.w3[e] = swiglu ? w[2][e]->data : NULL;
        j.b1[e] = b[0] ? b[0][e]->data : NULL;
        j.b2[e] = b[1] ? b[1][e]->data : NULL;
        j.b3[e] = swiglu && b[2] ? b[2][e]->data : NULL;
    }
    for_each_expert(c, experts_threads(c), forward_expert, &j);

    /* in[]: x, idx, the weights (w1, w2, w3 per kind, n each), then the given biases */
    int n_in = 2 + nw * n;
    for (int k = 0; k < nw; k++) n_in += b[k] ? n : 0;
    tt_tensor **in = tt_arena_alloc((size_t)n_in * sizeof *in);
    in[0] = x;
    in[1] = idx;
    int at = 2;
    for (int k = 0; k < nw; k++)
        for (int e = 0; e < n; e++) in[at++] = w[k][e];
    for (int k = 0; k < nw; k++)
        for (int e = 0; b[k] && e < n; e++) in[at++] = b[k][e];
    tt_node *node = tt_record(op, experts_backward, y, n_in, in, src);
    if (node) {
        node->ctx = c;
        node->i[0] = n; /* (for readers of the tape: in[2 .. 2 + n) are the w1) */
        node->i[1] = hid;
        node->i[2] = b[0] != NULL;
        node->i[3] = b[1] != NULL;
        node->i[4] = swiglu && b[2] != NULL;
    }
    return y;
}

tt_tensor *tt_experts_relu_(tt_tensor *x, tt_tensor *idx, int n, const int *off,
                            tt_tensor *const *w1, tt_tensor *const *b1, tt_tensor *const *w2,
                            tt_tensor *const *b2, tt_src src) {
    tt_tensor *const *w[3] = {w1, w2, NULL}, *const *b[3] = {b1, b2, NULL};
    return experts_op(false, x, idx, n, off, w, b, src);
}

tt_tensor *tt_experts_swiglu_(tt_tensor *x, tt_tensor *idx, int n, const int *off,
                              tt_tensor *const *w1, tt_tensor *const *b1, tt_tensor *const *w2,
                              tt_tensor *const *b2, tt_tensor *const *w3,
                              tt_tensor *const *b3, tt_src src) {
    tt_tensor *const *w[3] = {w1, w2, w3}, *const *b[3] = {b1, b2, b3};
    return experts_op(true, x, idx, n, off, w, b, src);
}

const int *tt_experts_relu_offsets(const tt_node *node) {
    if (!node || (strcmp(node->op, "experts_relu") != 0 && strcmp(node->op, "experts_swiglu") != 0))
        return NULL;
    return ((const experts_ctx *)node->ctx)->off;
}

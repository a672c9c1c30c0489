/* loss.c - cross entropy: log-softmax and negative log-likelihood fused.
 *
 * logits x [..., V] (R rows of V), targets t int32 [...] (R entries). For a row with
 * max m and S = sum_j e^(x_j - m):
 *
 *   loss_r = -log softmax(x)_t = log sum_j e^(x_j) - x_t = (m - x_t) + log S
 *   L      = (1 / n) sum over valid rows of loss_r,   n = number of valid rows
 *
 * A row is valid unless its target equals ignore_index (TT_NO_IGNORE = -1 disables
 * ignoring). Backward, g = dL/dL_out (a scalar):
 *
 *   dL/dx_rj = (p_rj - [j == t_r]) g / n,   p_r = softmax(x_r) = e^((x_rj - m_r) - log S_r)
 *   ignored rows receive 0.
 *
 * The forward saves m_r and log S_r per row (not the V probabilities, and not their sum
 * m + log S: rounding that to float would cost ~1e-3 relative accuracy in p for logits
 * near 1e4; x - m is exact for the entries that matter).
 *
 * If every target is ignored (n = 0) the loss is 0 and the gradient 0. (PyTorch returns
 * NaN there; 0 keeps a training step over a fully padded batch harmless.)
 */
#include "../internal.h"
#include "../kernels/vmath.h"

#include <math.h>

#define PAR_MIN_ELEMS 32768

typedef struct ce_ctx {
    float *m;      /* row maxima          [R] */
    float *logs;   /* log of the row sums [R] */
    bool *valid;   /* row takes part      [R] */
    size_t n_valid;
} ce_ctx;

/* The row kernels, 16 classes at a time (vmath.h: the same bits on every CPU). */

/* max_j x_j */
TT_CLONES static float row_max(const float *restrict x, int V) {
    float m = -INFINITY;
    VEC for (int j = 0; j < V; j++) m = x[j] > m ? x[j] : m;
    return m;
}

/* sum_j e^(x_j - m) in double (lanes summed in a fixed order); a ragged end's missing
 * lanes are -inf, whose exponential is 0 */
TT_CLONES static double row_exp_sum(const float *restrict x, float m, int V) {
    v8d s0 = {0}, s1 = {0};
    int j = 0;
    for (; j + VL <= V; j += VL) {
        v16 e = VLOAD(x + j) - m;
        vexp(&e);
        s0 += VLO_D(e);
        s1 += VHI_D(e);
    }
    if (j < V) {
        v16 e;
        vload_part(&e, x + j, V - j, -INFINITY);
        e -= m;
        vexp(&e);
        s0 += VLO_D(e);
        s1 += VHI_D(e);
    }
    v8d s = s0 + s1;
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* g_j += e^((x_j - m) - ls) * scale = p_j * scale */
TT_CLONES static void row_softmax_acc(const float *restrict x, float m, float ls, float scale,
                                      float *restrict g, int V) {
    int j = 0;
    for (; j + VL <= V; j += VL) {
        v16 e = (VLOAD(x + j) - m) - ls;
        vexp(&e);
        VSTORE(g + j, VLOAD(g + j) + e * scale);
    }
    for (; j < V; j++) { /* (one lane at a time: g must not be read or written past V) */
        v16 e = vsplat((x[j] - m) - ls);
        vexp(&e);
        g[j] += e[0] * scale;
    }
}

/* The forward's and the backward's row loops as their range functions see them (each
 * row by one thread: tt_parallel_for). */
typedef struct ce_job {
    const float *x;           /* logits [R, V]                   */
    const int32_t *tg;        /* targets [R]                     */
    int V;
    float *m, *logs, *loss_r; /* per row, written by the forward */
    const bool *valid;
    float *g;                 /* backward: the logits' gradient  */
    float scale;              /* backward: dL/dL_out / n         */
} ce_job;

/* backward, rows [r0, r1) */
static void ce_backward_rows(void *ctx, long r0, long r1) {
    const ce_job *j = ctx;
    const int V = j->V;
    for (long r = r0; r < r1; r++) {
        if (!j->valid[r]) continue;
        const float *xr = j->x + (size_t)r * V;
        float *gr = j->g + (size_t)r * V;
        row_softmax_acc(xr, j->m[r], j->logs[r], j->scale, gr, V);
        gr[j->tg[r]] -= j->scale;
    }
}

static void ce_backward(tt_node *nd) {
    tt_tensor *x = nd->in[0], *t = nd->in[1];
    float *gx = tt_grad_acc(x);
    const ce_ctx *c = nd->ctx;
    if (!gx || c->n_valid == 0) return;
    int V = tt_last_dim(x);
    long rows = (long)tt_rows(x);
    ce_job j = {.x = x->data, .tg = tt_ids(t), .V = V, .m = c->m, .logs = c->logs,
                .valid = c->valid, .g = gx, .scale = nd->out->grad[0] / (float)c->n_valid};
    tt_parallel_for(rows, tt_loop_threads((size_t)rows * (size_t)V, PAR_MIN_ELEMS, rows),
                    ce_backward_rows, &j);
}

/* forward, rows [r0, r1): the row's max, log-sum and loss */
static void ce_forward_rows(void *ctx, long r0, long r1) {
    const ce_job *j = ctx;
    const int V = j->V;
    for (long r = r0; r < r1; r++) {
        const float *xr = j->x + (size_t)r * V;
        float mr = row_max(xr, V);
        double s = row_exp_sum(xr, mr, V);
        j->m[r] = mr;
        j->logs[r] = (float)log(s);
        j->loss_r[r] = j->valid[r] ? (float)((double)(mr - xr[j->tg[r]]) + log(s)) : 0.0f;
    }
}

/* "[1, 2]": the position of flat index i in a tensor of t's shape. */
static const char *position_str(const tt_tensor *t, size_t i, char *buf, size_t len) {
    int coord[TT_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        coord[d] = (int)(i % (size_t)t->shape[d]);
        i /= (size_t)t->shape[d];
    }
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < t->ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %d" : "%d", coord[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

tt_tensor *tt_cross_entropy_(tt_tensor *logits, tt_tensor *targets, int ignore_index,
                             tt_src src) {
    const char *op = "cross_entropy";
    tt_check_f32(logits, src, op, "logits");
    tt_check_i32(targets, src, op, "targets");
    bool shape_ok = logits->ndim >= 1 && targets->ndim == logits->ndim - 1;
    for (int d = 0; shape_ok && d < targets->ndim; d++)
        shape_ok = targets->shape[d] == logits->shape[d];
    TT_CHECK(shape_ok, src, op,
             "targets %s must have the shape of logits %s without its last axis",
             tt_d(targets), tt_d(logits));
    int V = tt_last_dim(logits);
    size_t R = tt_rows(logits);
    if (V == 0) R = targets->size;
    TT_CHECK(V > 0 || R == 0, src, op, "logits %s have no classes", tt_d(logits));

    /* validate every target before any (possibly threaded) work */
    const int32_t *tg = tt_ids(targets);
    bool *valid = tt_arena_alloc((R ? R : 1) * sizeof(bool));
    size_t n_valid = 0;
    for (size_t r = 0; r < R; r++) {
        int32_t t = tg[r];
        valid[r] = !(ignore_index != TT_NO_IGNORE && t == ignore_index);
        if (!valid[r]) continue;
        if (t < 0 || t >= V) {
            char pos[64];
            tt_error_at(src, op, "target %d at position %s of %s is out of range [0, %d) "
                        "for logits %s", (int)t, position_str(targets, r, pos, sizeof pos),
                        tt_d(targets), V, tt_d(logits));
        }
        n_valid++;
    }

    float *m = tt_arena_alloc((R ? R : 1) * sizeof(float));
    float *logs = tt_arena_alloc((R ? R : 1) * sizeof(float));
    float *loss_r = tt_arena_alloc((R ? R : 1) * sizeof(float));
    ce_job j = {.x = logits->data, .tg = tg, .V = V, .m = m, .logs = logs, .loss_r = loss_r,
                .valid = valid};
    tt_parallel_for((long)R, tt_loop_threads(R * (size_t)V, PAR_MIN_ELEMS, (long)R),
                    ce_forward_rows, &j);
    /* the mean in double, rows in order: independent of the thread count */
    double total = 0.0;
    for (size_t r = 0; r < R; r++) total += loss_r[r];
    tt_tensor *out = tt_tmp(TT_F32, 0, NULL);
    out->data[0] = n_valid ? (float)(total / (double)n_valid) : 0.0f;

    tt_tensor *in[2] = {logits, targets};
    tt_node *node = tt_record(op, ce_backward, out, 2, in, src);
    if (node) {
        ce_ctx *c = tt_arena_alloc(sizeof *c);
        *c = (ce_ctx){.m = m, .logs = logs, .valid = valid, .n_valid = n_valid};
        node->ctx = c;
        node->i[0] = ignore_index;
    }
    return out;
}

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

/* The row kernels, 16 classes at a time (vmath.h: the same bits on every CPU). Each
 * takes a range of rows, so that its constants are set up once and the rows' exponential
 * chains overlap; a row's ragged end is one more vector (vload_tail, or vload_part for a
 * row shorter than 16). */

/* max_j x_j, 16 lanes at a time (a scalar max is a 4-cycle dependency chain per
 * element: it was most of the forward's time). The maximum of the same values in any
 * order is the same number. */
static ALWAYS_INLINE float row_max(const float *restrict x, int V) {
    if (V < VL) {
        float m = -INFINITY;
        for (int j = 0; j < V; j++) m = x[j] > m ? x[j] : m;
        return m;
    }
    v16 mv = vsplat(-INFINITY);
    for (int j = 0; j + VL <= V; j += VL) {
        v16 v = VLOAD(x + j);
        mv = vsel(v > mv, v, mv);
    }
    v16 v = VLOAD(x + V - VL); /* the ragged end, overlapping: duplicates do no harm */
    mv = vsel(v > mv, v, mv);
    float m = -INFINITY;
    for (int l = 0; l < VL; l++) m = mv[l] > m ? mv[l] : m;
    return m;
}

/* rows [r0, r1) of x [., V]: m[r] = max_j x_rj, s[r] = sum_j e^(x_rj - m[r]) in double
 * (lanes summed in a fixed order; the ragged end's missing lanes are -inf, giving 0) */
TT_CLONES static void lse_rows(const float *restrict x, int V, long r0, long r1,
                               float *restrict m, double *restrict s) {
    for (long r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * V;
        const float mr = row_max(xr, V);
        v8d s0 = {0}, s1 = {0};
        int j = 0;
        for (; j + VL <= V; j += VL) {
            v16 e = VLOAD(xr + j) - mr;
            vexp(&e);
            vwiden_acc(&e, &s0, &s1);
        }
        if (j < V) {
            v16 e;
            if (V >= VL)
                vload_tail(&e, xr + j, V - j, -INFINITY);
            else
                vload_part(&e, xr + j, V - j, -INFINITY);
            e -= mr;
            vexp(&e);
            vwiden_acc(&e, &s0, &s1);
        }
        v8d t = s0 + s1;
        m[r] = mr;
        s[r] = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
    }
}

/* rows [r0, r1) with valid[r]: g_rj += e^((x_rj - m_r) - ls_r) * scale = p_rj * scale */
TT_CLONES static void softmax_acc_rows(const float *restrict x, int V, long r0, long r1,
                                       const float *restrict m, const float *restrict ls,
                                       const bool *restrict valid, float scale,
                                       float *restrict g) {
    for (long r = r0; r < r1; r++) {
        if (!valid[r]) continue;
        const float *xr = x + (size_t)r * V;
        float *gr = g + (size_t)r * V;
        const float mr = m[r], lr = ls[r];
        int j = 0;
        for (; j + VL <= V; j += VL) {
            v16 e = (VLOAD(xr + j) - mr) - lr;
            vexp(&e);
            VSTORE(gr + j, VLOAD(gr + j) + e * scale);
        }
        if (j < V && V >= VL) {
            /* the last 16 columns, of which lanes >= 16 - (V - j) are new; the others
             * are stored back unchanged */
            const int o = V - VL;
            v16 e = (VLOAD(xr + o) - mr) - lr;
            vexp(&e);
            v16 old = VLOAD(gr + o);
            VSTORE(gr + o, vsel(VIOTA >= VL - (V - j), old + e * scale, old));
        } else {
            for (; j < V; j++) { /* (a row shorter than 16: one lane at a time) */
                v16 e = vsplat((xr[j] - mr) - lr);
                vexp(&e);
                gr[j] += e[0] * scale;
            }
        }
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
    double *sums;             /* forward: the row sums [R]       */
    float scale;              /* backward: dL/dL_out / n         */
} ce_job;

/* backward, rows [r0, r1) */
static void ce_backward_rows(void *ctx, long r0, long r1) {
    const ce_job *j = ctx;
    softmax_acc_rows(j->x, j->V, r0, r1, j->m, j->logs, j->valid, j->scale, j->g);
    for (long r = r0; r < r1; r++)
        if (j->valid[r]) j->g[(size_t)r * j->V + j->tg[r]] -= j->scale;
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
    lse_rows(j->x, V, r0, r1, j->m, j->sums);
    for (long r = r0; r < r1; r++) {
        const float *xr = j->x + (size_t)r * V;
        const float mr = j->m[r];
        const double ls = log(j->sums[r]);
        j->logs[r] = (float)ls;
        j->loss_r[r] = j->valid[r] ? (float)((double)(mr - xr[j->tg[r]]) + ls) : 0.0f;
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
                .valid = valid, .sums = tt_arena_alloc((R ? R : 1) * sizeof(double))};
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

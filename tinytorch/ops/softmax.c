/* softmax.c - softmax and log-softmax over the last axis.
 *
 * A row x of C logits, m = max_j x_j (subtracted so that exp never overflows: the
 * largest term is e^0 = 1 and the sum lies in [1, C], for logits of 1e4 or -1e4 alike):
 *
 *   softmax      y_i = e^(x_i - m) / S,           S = sum_j e^(x_j - m)
 *   log_softmax  y_i = (x_i - m) - log S
 *
 * Backward, g = dL/dy:
 *   softmax:     dy_i/dx_k = y_i ([i == k] - y_k)
 *                dx_k = sum_i g_i y_i ([i == k] - y_k) = y_k (g_k - sum_i g_i y_i)
 *   log_softmax: dy_i/dx_k = [i == k] - p_k,  p = softmax(x) = e^y
 *                dx_k = g_k - p_k sum_i g_i
 *
 * A row whose logits are all -inf has no defined softmax: it gives NaN, as in PyTorch.
 * Rows are independent and each is computed by one thread in a fixed order, so the
 * OpenMP loop over rows gives bit-identical results for any thread count.
 */
#include "../internal.h"

#include <math.h>

/* rows * cols below which threads cost more than they save */
#define PAR_MIN_ELEMS 32768

/* A row loop as its range function sees it (rows split by tt_parallel_for). */
typedef struct sm_job {
    const float *x;        /* forward: the logits                      */
    const float *y, *g;    /* backward: the output and g = dL/dy       */
    float *out;            /* y (forward) or dx (backward)             */
    int C;
    bool log_out;
} sm_job;

/* forward rows [r0, r1) */
static void forward_range(void *ctx, long r0, long r1) {
    const sm_job *jb = ctx;
    const int C = jb->C;
    const bool log_out = jb->log_out;
    for (long r = r0; r < r1; r++) {
        const float *xr = jb->x + (size_t)r * C;
        float *yr = jb->out + (size_t)r * C;
        float m = -INFINITY;
        for (int j = 0; j < C; j++) m = xr[j] > m ? xr[j] : m;
        double s = 0.0;
        if (log_out) {
            for (int j = 0; j < C; j++) s += expf(xr[j] - m);
            float ls = (float)log(s);
            for (int j = 0; j < C; j++) yr[j] = (xr[j] - m) - ls;
        } else {
            for (int j = 0; j < C; j++) {
                float e = expf(xr[j] - m);
                yr[j] = e;
                s += e;
            }
            float inv = (float)(1.0 / s);
            for (int j = 0; j < C; j++) yr[j] *= inv;
        }
    }
}

static void softmax_rows(const float *x, float *y, long rows, int C, bool log_out) {
    sm_job j = {.x = x, .out = y, .C = C, .log_out = log_out};
    tt_parallel_for(rows, tt_loop_threads((size_t)rows * (size_t)C, PAR_MIN_ELEMS, rows),
                    forward_range, &j);
}

/* backward rows [r0, r1) */
static void backward_range(void *ctx, long r0, long r1) {
    const sm_job *jb = ctx;
    const int C = jb->C;
    const bool log_out = jb->log_out;
    for (long r = r0; r < r1; r++) {
        const float *gr = jb->g + (size_t)r * C, *yr = jb->y + (size_t)r * C;
        float *gxr = jb->out + (size_t)r * C;
        double s = 0.0;
        if (log_out) {
            /* dx_k = g_k - e^(y_k) sum_i g_i */
            for (int j = 0; j < C; j++) s += gr[j];
            float sf = (float)s;
            for (int j = 0; j < C; j++) gxr[j] += gr[j] - expf(yr[j]) * sf;
        } else {
            /* dx_k = y_k (g_k - sum_i g_i y_i) */
            for (int j = 0; j < C; j++) s += (double)gr[j] * yr[j];
            float sf = (float)s;
            for (int j = 0; j < C; j++) gxr[j] += yr[j] * (gr[j] - sf);
        }
    }
}

/* n->i[0] = 1 for log_softmax. */
static void softmax_backward(tt_node *nd) {
    tt_tensor *a = nd->in[0];
    float *gx = tt_grad_acc(a);
    if (!gx) return;
    int C = tt_last_dim(a);
    long rows = (long)tt_rows(a);
    sm_job j = {.y = nd->out->data, .g = nd->out->grad, .out = gx, .C = C,
                .log_out = nd->i[0]};
    tt_parallel_for(rows, tt_loop_threads((size_t)rows * (size_t)C, PAR_MIN_ELEMS, rows),
                    backward_range, &j);
}

static tt_tensor *softmax(tt_tensor *a, bool log_out, tt_src src) {
    const char *op = log_out ? "log_softmax" : "softmax";
    tt_check_f32(a, src, op, "a");
    tt_tensor *y = tt_tmp_like(a);
    softmax_rows(a->data, y->data, (long)tt_rows(a), tt_last_dim(a), log_out);
    tt_node *node = tt_record(op, softmax_backward, y, 1, &a, src);
    if (node) node->i[0] = log_out;
    return y;
}

tt_tensor *tt_softmax_(tt_tensor *a, tt_src src) { return softmax(a, false, src); }
tt_tensor *tt_log_softmax_(tt_tensor *a, tt_src src) { return softmax(a, true, src); }

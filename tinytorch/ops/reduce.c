/* reduce.c - sums, means and maxima.
 *
 *   s = sum_i a_i      ds/da_i = 1        (backward: da += g, broadcast)
 *   m = s / n          dm/da_i = 1/n
 */
#include "../internal.h"

/* Sum in double: the result then does not depend on the order of a float loop, and the
 * error does not grow with n. */
static void sum_all_backward(tt_node *n) {
    tt_tensor *a = n->in[0];
    float *ga = tt_grad_acc(a);
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

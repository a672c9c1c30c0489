/* dropout.c - inverted dropout.
 *
 * Training: m_i = 1/(1-p) with probability 1-p, else 0 (one draw of the global RNG per
 * element, in order), and
 *     y_i = m_i x_i                dy_i/dx_i = m_i
 * so E[y_i] = x_i and the backward is dx += g * m with the same saved mask.
 * Eval (training == false) or p == 0: the identity, returned as x itself (no node).
 */
#include "../internal.h"
#include "../rng.h"

/* dx += g * m, m = the saved mask (0 or 1/(1-p)) */
static void dropout_backward(tt_node *n) {
    float *gx = tt_grad_acc(n->in[0]);
    if (!gx) return;
    const float *g = n->out->grad, *m = n->ctx;
    for (size_t i = 0; i < n->out->size; i++) gx[i] += g[i] * m[i];
}

tt_tensor *tt_dropout_(tt_tensor *x, float p, bool training, tt_src src) {
    tt_check_f32(x, src, "dropout", "x");
    if (!(p >= 0.0f && p < 1.0f))
        tt_error_at(src, "dropout", "p = %g outside [0, 1) for %s", (double)p, tt_d(x));
    if (!training || p == 0.0f) return x;

    float keep_scale = 1.0f / (1.0f - p);
    float *mask = tt_arena_alloc((x->size ? x->size : 1) * sizeof(float));
    tt_rng *r = tt_rng_global();
    for (size_t i = 0; i < x->size; i++) mask[i] = tt_rng_uniform(r) >= p ? keep_scale : 0.0f;

    tt_tensor *y = tt_tmp_like(x);
    for (size_t i = 0; i < x->size; i++) y->data[i] = x->data[i] * mask[i];
    tt_node *node = tt_record("dropout", dropout_backward, y, 1, &x, src);
    if (node) node->ctx = mask;
    return y;
}

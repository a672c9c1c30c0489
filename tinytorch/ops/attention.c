/* attention.c - the causal mask of attention scores.
 *
 * scores [..., T, S]: T queries attending over S keys, where the queries are the LAST T
 * of the S positions (S > T during incremental decoding with a cache of S - T earlier
 * positions). Query i sits at absolute position i + (S - T) and may see keys j <= that:
 *
 *   y[..., i, j] = x[..., i, j]   if j <= i + (S - T)
 *                = -inf           otherwise
 *   dx[..., i, j] += g[..., i, j] where kept, nothing where masked (y does not depend on x).
 */
#include "../internal.h"

#include <math.h>

/* Number of keys query i may see: min(S, i + (S - T) + 1). */
static inline int visible(int i, int T, int S) {
    int v = i + (S - T) + 1;
    return v < S ? v : S;
}

static void causal_mask_backward(tt_node *n) {
    tt_tensor *x = n->in[0];
    float *gx = tt_grad_acc(x);
    if (!gx) return;
    const float *g = n->out->grad;
    int T = x->shape[x->ndim - 2], S = x->shape[x->ndim - 1];
    size_t mats = T ? x->size / ((size_t)T * S) : 0;
    for (size_t b = 0; b < mats; b++)
        for (int i = 0; i < T; i++) {
            size_t o = (b * (size_t)T + (size_t)i) * (size_t)S;
            int v = visible(i, T, S);
            for (int j = 0; j < v; j++) gx[o + j] += g[o + j];
        }
}

tt_tensor *tt_causal_mask_(tt_tensor *scores, tt_src src) {
    const char *op = "causal_mask";
    tt_check_f32(scores, src, op, "scores");
    TT_CHECK(scores->ndim >= 2, src, op, "scores %s must be [..., T, S]", tt_d(scores));
    int T = scores->shape[scores->ndim - 2], S = scores->shape[scores->ndim - 1];
    TT_CHECK(S >= T, src, op,
             "scores %s has more queries (T = %d) than keys (S = %d); need S >= T",
             tt_d(scores), T, S);
    tt_tensor *y = tt_tmp_like(scores);
    size_t mats = T ? scores->size / ((size_t)T * S) : 0;
    for (size_t b = 0; b < mats; b++)
        for (int i = 0; i < T; i++) {
            size_t o = (b * (size_t)T + (size_t)i) * (size_t)S;
            int v = visible(i, T, S);
            memcpy(y->data + o, scores->data + o, (size_t)v * sizeof(float));
            for (int j = v; j < S; j++) y->data[o + j] = -INFINITY;
        }
    tt_tensor *in[1] = {scores};
    tt_record(op, causal_mask_backward, y, 1, in, src);
    return y;
}

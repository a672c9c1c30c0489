/* rope.c - interleaved rotary position embedding (see ../ops_rope.h).
 *
 * Per pair (x0, x1) = (x[2k], x[2k+1]) at position p, with c = cos[p, k], s = sin[p, k]:
 *   forward   y0 = x0 c - x1 s          y1 = x0 s + x1 c
 *   backward  dx0 += g0 c + g1 s        dx1 += -g0 s + g1 c      (R^T g, R orthogonal)
 */
#include "../internal.h"
#include "../ops_rope.h"

/* x viewed as [B, T, R, D]: R = heads (1 for [B, T, D]). sign = +1 forward, -1 backward
 * (the inverse rotation). out accumulates when acc. */
static void rotate(const float *x, float *y, const float *cs, const float *sn, int B, int T,
                   int R, int D, int start, float sign, bool acc) {
    const int half = D / 2;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cs + (size_t)(start + t) * half;
            const float *s = sn + (size_t)(start + t) * half;
            for (int r = 0; r < R; r++) {
                size_t o = (((size_t)b * T + t) * R + r) * D;
                for (int k = 0; k < half; k++) {
                    float x0 = x[o + 2 * k], x1 = x[o + 2 * k + 1];
                    float sk = sign * s[k];
                    float y0 = x0 * c[k] - x1 * sk, y1 = x0 * sk + x1 * c[k];
                    if (acc) {
                        y[o + 2 * k] += y0;
                        y[o + 2 * k + 1] += y1;
                    } else {
                        y[o + 2 * k] = y0;
                        y[o + 2 * k + 1] = y1;
                    }
                }
            }
        }
}

static void rope_backward(tt_node *n) {
    tt_tensor *x = n->in[0];
    float *gx = tt_grad_acc(x);
    if (!gx) return;
    tt_tensor *const *tabs = n->ctx; /* cos, sin */
    const tt_tensor *cs = tabs[0], *sn = tabs[1];
    rotate(n->out->grad, gx, cs->data, sn->data, n->i[0], n->i[1], n->i[2], n->i[3], n->i[4],
           -1.0f, true);
}

tt_tensor *tt_rope_(tt_tensor *x, tt_tensor *cos, tt_tensor *sin, int start_pos, tt_src src) {
    const char *op = "rope";
    tt_check_f32(x, src, op, "x");
    tt_check_f32(cos, src, op, "cos");
    tt_check_f32(sin, src, op, "sin");
    TT_CHECK(x->ndim == 3 || x->ndim == 4, src, op, "x %s must be [B, T, D] or [B, T, H, D]",
             tt_d(x));
    const int D = x->shape[x->ndim - 1], B = x->shape[0], T = x->shape[1];
    const int R = x->ndim == 4 ? x->shape[2] : 1;
    TT_CHECK(D % 2 == 0, src, op, "x %s: the last dim %d must be even", tt_d(x), D);
    TT_CHECK(cos->ndim == 2 && cos->shape[1] == D / 2 && tt_same_shape(cos, sin), src, op,
             "tables cos %s and sin %s must both be [positions, %d] for x %s", tt_d(cos),
             tt_d(sin), D / 2, tt_d(x));
    TT_CHECK(start_pos >= 0 && start_pos + T <= cos->shape[0], src, op,
             "positions %d..%d of x %s exceed the table cos %s", start_pos, start_pos + T - 1,
             tt_d(x), tt_d(cos));
    TT_CHECK(!cos->requires_grad && !sin->requires_grad, src, op,
             "the tables cos %s and sin %s are constants and must not require grad",
             tt_d(cos), tt_d(sin));
    tt_tensor *y = tt_tmp(TT_F32, x->ndim, x->shape);
    rotate(x->data, y->data, cos->data, sin->data, B, T, R, D, start_pos, 1.0f, false);
    tt_tensor *in[1] = {x};
    tt_node *node = tt_record(op, rope_backward, y, 1, in, src);
    if (node) {
        tt_tensor **tabs = tt_arena_alloc(2 * sizeof *tabs);
        tabs[0] = cos;
        tabs[1] = sin;
        node->ctx = tabs;
        node->i[0] = B;
        node->i[1] = T;
        node->i[2] = R;
        node->i[3] = D;
        node->i[4] = start_pos;
    }
    return y;
}

/* test_attention_fused.c - the fused attention op: values against the unfused
 * composition and by hand, the three layouts, gradients (both the tt_gemm path, head
 * sizes not a multiple of 16, and the vector path), thread-count independence, errors,
 * and the single rounding of the vector path's multiply-add. */
#include "tt_test.h"

#include "kernels/vmath.h"

#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* softmax(causal_mask(scale * q k^T)) v, from the separate ops */
static tt_tensor *unfused(tt_tensor *q, tt_tensor *k, tt_tensor *v, float scale, bool causal) {
    tt_tensor *a = tt_scale(tt_matmul_nt(q, k), scale);
    if (causal) a = tt_causal_mask(a);
    return tt_matmul(tt_softmax(a), v);
}

/* The forward values and the gradients of q, k, v (for a random output gradient) of the
 * fused op and of the composition agree within 1e-5: both sum the same products in
 * different orders (blocked products, the vector exp within a few ulp of expf), and
 * every value here is O(1), so the differences are a few float ulps. */
static void compare_unfused(int BH, int T, int S, int D, int Dv, bool causal) {
    tt_manual_seed(7);
    tt_tensor *q = tt_test_param(TT_SHAPE(BH, T, D), -1.0f, 1.0f);
    tt_tensor *k = tt_test_param(TT_SHAPE(BH, S, D), -1.0f, 1.0f);
    tt_tensor *v = tt_test_param(TT_SHAPE(BH, S, Dv), -1.0f, 1.0f);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(BH, T, Dv), -1.0f, 1.0f);
    const float scale = 1.0f / sqrtf((float)D) * 2.0f; /* sharper than usual */
    tt_tensor *y0 = unfused(q, k, v, scale, causal);
    tt_backward_seed(y0, seed->data);
    float *g0[3];
    tt_tensor *in[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        g0[i] = malloc(in[i]->size * sizeof(float));
        memcpy(g0[i], in[i]->grad, in[i]->size * sizeof(float));
        tt_zero_grad(in[i]);
    }
    tt_tensor *y1 = tt_attention(q, k, v, scale, causal);
    ck_assert_int_eq(y1->ndim, 3);
    ck_assert_int_eq(y1->shape[0], BH);
    ck_assert_int_eq(y1->shape[1], T);
    ck_assert_int_eq(y1->shape[2], Dv);
    float dy = tt_test_maxdiff(y0->data, y1->data, y0->size);
    ck_assert_msg(dy <= 1e-5f, "[%d,%d,%d,%d,%d] causal %d: forward differs by %g", BH, T, S, D,
                  Dv, causal, (double)dy);
    tt_backward_seed(y1, seed->data);
    for (int i = 0; i < 3; i++) {
        float dg = tt_test_maxdiff(g0[i], in[i]->grad, in[i]->size);
        ck_assert_msg(dg <= 1e-5f, "[%d,%d,%d,%d,%d] causal %d: gradient of input %d differs by %g",
                      BH, T, S, D, Dv, causal, i, (double)dg);
        free(g0[i]);
    }
    tt_tape_reset();
    tt_free(q);
    tt_free(k);
    tt_free(v);
    tt_free(seed);
}

/* Head sizes that are not multiples of 16 run the vector path on zero-padded copies; the
 * tt_gemm path (TT_ATTN=gemm) is checked on the same shapes. */
static void small_heads_cases(void) {
    compare_unfused(3, 5, 5, 4, 3, true);
    compare_unfused(2, 3, 7, 5, 2, true);    /* S > T: 4 cached keys before the queries */
    compare_unfused(2, 4, 6, 3, 3, false);   /* no mask */
    compare_unfused(2, 70, 70, 6, 5, true);  /* three row blocks */
    compare_unfused(2, 40, 40, 24, 16, true); /* the V3 toy's D, Dv */
    compare_unfused(2, 33, 40, 20, 17, true); /* two vectors padded, S > T */
}

START_TEST(test_attention_matches_unfused) {
    small_heads_cases();
    compare_unfused(3, 32, 32, 16, 16, true); /* vector path */
    compare_unfused(2, 70, 75, 32, 16, true); /* vector path, blocks, S > T, padding */
    compare_unfused(2, 9, 20, 16, 48, false); /* vector path, no mask, Dv = 3 vectors */
    compare_unfused(1, 8, 8, 80, 16, true);   /* vector path, D = 5 vectors */
    setenv("TT_ATTN", "gemm", 1);
    small_heads_cases();
    compare_unfused(2, 70, 75, 32, 16, true);
    unsetenv("TT_ATTN");
}
END_TEST

START_TEST(test_attention_hand_values) {
    /* q = 0: every visible key gets the same weight, so output row i is the mean of the
     * value rows 0..i (causal); one query over one key returns that key's value */
    for (int D = 3; D <= 16; D += 13) {
        tt_tensor *q = tt_zeros(TT_SHAPE(1, 3, D));
        tt_tensor *k = tt_rand_uniform(TT_SHAPE(1, 3, D), -1.0f, 1.0f);
        tt_tensor *v = tt_from_data(TT_SHAPE(1, 3, 2), (float[]){1, 2, 3, 4, 8, 0});
        tt_tensor *y = tt_attention(q, k, v, 0.5f, true);
        float want[] = {1, 2, 2, 3, 4, 2};
        ck_assert_float_le(tt_test_maxdiff(y->data, want, 6), 1e-6f);
        tt_tensor *y2 = tt_attention(q, k, v, 0.5f, false);
        float want2[] = {4, 2, 4, 2, 4, 2};
        ck_assert_float_le(tt_test_maxdiff(y2->data, want2, 6), 1e-6f);
        tt_tape_reset();
        tt_free(q);
        tt_free(k);
        tt_free(v);
    }
    /* two keys with scores 0 and ln 3 (q . k scaled): weights 1/4 and 3/4 */
    tt_tensor *q = tt_from_data(TT_SHAPE(1, 1, 1), (float[]){1});
    tt_tensor *k = tt_from_data(TT_SHAPE(1, 2, 1), (float[]){0, 2});
    tt_tensor *v = tt_from_data(TT_SHAPE(1, 2, 1), (float[]){4, 8});
    tt_tensor *y = tt_attention(q, k, v, 0.5f * logf(3.0f), true);
    ck_assert_float_le(fabsf(y->data[0] - 7.0f), 1e-5f); /* 4/4 + 8*3/4 */
    tt_tape_reset();
    tt_free(q);
    tt_free(k);
    tt_free(v);
}
END_TEST

/* [B, T, H*D] -> [B*H, T, D] */
static tt_tensor *to_bh(tt_tensor *x, int H) {
    int B = x->shape[0], T = x->shape[1], D = x->shape[2] / H;
    tt_tensor *t = tt_transpose(tt_reshape(x, 4, ((int[]){B, T, H, D})), 1, 2);
    return tt_reshape(t, 3, ((int[]){B * H, T, D}));
}

static tt_tensor *from_bh(tt_tensor *x, int B) {
    int H = x->shape[0] / B, T = x->shape[1], D = x->shape[2];
    tt_tensor *t = tt_transpose(tt_reshape(x, 4, ((int[]){B, H, T, D})), 1, 2);
    return tt_reshape(t, 3, ((int[]){B, T, H * D}));
}

/* heads side by side and K|V packed give what the [BH, T, D] layout gives on the
 * transposed heads, forward and backward, bit for bit (the same products on the same
 * numbers, only read through other strides) */
static void check_layouts(int B, int T, int S, int H, int D, int Dv) {
    tt_manual_seed(3);
    tt_tensor *q = tt_test_param(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
    tt_tensor *kv = tt_test_param(TT_SHAPE(B, S, H * (D + Dv)), -1.0f, 1.0f);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(B, T, H * Dv), -1.0f, 1.0f);
    const float sc = 0.4f;
    tt_tensor *parts[2];
    tt_split(kv, 2, 2, ((int[]){H * D, H * Dv}), parts);
    tt_tensor *y0 = from_bh(tt_attention(to_bh(q, H), to_bh(parts[0], H), to_bh(parts[1], H),
                                         sc, true), B);
    tt_backward_seed(y0, seed->data);
    float *gq = malloc(q->size * sizeof(float)), *gkv = malloc(kv->size * sizeof(float));
    memcpy(gq, q->grad, q->size * sizeof(float));
    memcpy(gkv, kv->grad, kv->size * sizeof(float));
    for (int variant = 0; variant < 2; variant++) {
        tt_zero_grad(q);
        tt_zero_grad(kv);
        tt_tensor *y;
        if (variant == 0) {
            tt_split(kv, 2, 2, ((int[]){H * D, H * Dv}), parts);
            y = tt_attention_heads(q, parts[0], parts[1], H, sc, true);
        } else {
            y = tt_attention_kv(q, kv, H, sc, true);
        }
        ck_assert_int_eq(y->shape[2], H * Dv);
        ck_assert_float_eq(tt_test_maxdiff(y->data, y0->data, y->size), 0.0f);
        tt_backward_seed(y, seed->data);
        ck_assert_float_eq(tt_test_maxdiff(q->grad, gq, q->size), 0.0f);
        ck_assert_float_eq(tt_test_maxdiff(kv->grad, gkv, kv->size), 0.0f);
    }
    free(gq);
    free(gkv);
    tt_tape_reset();
    tt_free(q);
    tt_free(kv);
    tt_free(seed);
}

START_TEST(test_attention_layouts) {
    check_layouts(2, 5, 5, 3, 4, 2);   /* tt_gemm path */
    check_layouts(2, 4, 9, 2, 16, 32); /* vector path, S > T */
    check_layouts(1, 40, 40, 2, 16, 16);
}
END_TEST

/* ---- gradients ---------------------------------------------------------------------- */
typedef struct att_case {
    int layout; /* 0: [BH,T,D]; 1: heads; 2: packed kv */
    int H;
    bool causal;
} att_case;

static tt_tensor *f_att(tt_tensor *const *in, void *user) {
    const att_case *c = user;
    if (c->layout == 0) return tt_attention(in[0], in[1], in[2], 0.7f, c->causal);
    if (c->layout == 1) return tt_attention_heads(in[0], in[1], in[2], c->H, 0.7f, c->causal);
    return tt_attention_kv(in[0], in[1], c->H, 0.7f, c->causal);
}

static void gradcheck_case(int layout, int H, bool causal, int B, int T, int S, int D, int Dv) {
    att_case c = {layout, H, causal};
    tt_manual_seed(11);
    tt_tensor *in[3];
    int n;
    if (layout == 0) {
        in[0] = tt_test_param(TT_SHAPE(B, T, D), -1.0f, 1.0f);
        in[1] = tt_test_param(TT_SHAPE(B, S, D), -1.0f, 1.0f);
        in[2] = tt_test_param(TT_SHAPE(B, S, Dv), -1.0f, 1.0f);
        n = 3;
    } else if (layout == 1) {
        in[0] = tt_test_param(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
        in[1] = tt_test_param(TT_SHAPE(B, S, H * D), -1.0f, 1.0f);
        in[2] = tt_test_param(TT_SHAPE(B, S, H * Dv), -1.0f, 1.0f);
        n = 3;
    } else {
        in[0] = tt_test_param(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
        in[1] = tt_test_param(TT_SHAPE(B, S, H * (D + Dv)), -1.0f, 1.0f);
        n = 2;
    }
    tt_test_gradcheck("attention", f_att, &c, n, in, NULL);
    for (int i = 0; i < n; i++) tt_free(in[i]);
}

START_TEST(test_attention_grad) {
    gradcheck_case(0, 1, true, 2, 3, 3, 4, 3);
    gradcheck_case(0, 1, true, 1, 2, 5, 3, 2);   /* S > T */
    gradcheck_case(0, 1, false, 2, 3, 4, 2, 2);
    gradcheck_case(1, 2, true, 2, 3, 3, 2, 3);
    gradcheck_case(2, 2, true, 1, 3, 4, 3, 2);
}
END_TEST

START_TEST(test_attention_grad_vector_path) {
    gradcheck_case(0, 1, true, 1, 3, 3, 16, 16);
    gradcheck_case(2, 2, true, 1, 2, 3, 16, 16);
}
END_TEST

/* test_attention_grad's head sizes are not multiples of 16 (the padded vector path); the
 * tt_gemm path on them too */
START_TEST(test_attention_grad_gemm_path) {
    setenv("TT_ATTN", "gemm", 1);
    gradcheck_case(0, 1, true, 2, 3, 3, 4, 3);
    gradcheck_case(1, 2, true, 2, 3, 3, 2, 3);
    gradcheck_case(2, 2, true, 1, 3, 4, 3, 2);
    unsetenv("TT_ATTN");
}
END_TEST

/* The backward zeroes a new gradient buffer block by block, on the threads, and adds to
 * one that already holds a gradient. Two calls on the same inputs must give twice one
 * call's gradients (one call's contributions lost, or garbage, would not), and q passed
 * as k too must get the sum of what q and a copy of it as k get: up to the order of the
 * additions, within 1e-5 of values O(1). Every kernel path: vector (D 16), padded (D 8),
 * tt_gemm (TT_ATTN=gemm). */
static void grads_of(int layout, bool twice, bool shared, int D, float *gq, float *gk) {
    const int B = 2, H = 2, T = 40;
    tt_manual_seed(21);
    const int C = layout == 2 ? H * 2 * D : H * D;
    tt_tensor *q = tt_test_param(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
    tt_tensor *k = tt_test_param(TT_SHAPE(B, T, C), -1.0f, 1.0f);
    tt_tensor *v = tt_test_param(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
    if (layout != 2) memcpy(k->data, q->data, q->size * sizeof(float)); /* k = q, or a copy */
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
    /* stale values in the gradient buffers that the next backward reuses as new ones */
    tt_backward(tt_add(tt_add(tt_sum_all(q), tt_sum_all(k)), tt_sum_all(v)));
    tt_tape_reset();
    tt_grad_to_none(q), tt_grad_to_none(k), tt_grad_to_none(v);
    tt_tensor *kk = shared ? q : k, *loss = NULL;
    for (int c = 0; c < (twice ? 2 : 1); c++) {
        tt_tensor *y = layout == 2 ? tt_attention_kv(q, k, H, 0.4f, true)
                                   : tt_attention_heads(q, kk, v, H, 0.4f, true);
        tt_tensor *l = tt_sum_all(tt_mul(y, seed));
        loss = loss ? tt_add(loss, l) : l;
    }
    tt_backward(loss);
    memcpy(gq, q->grad, q->size * sizeof(float));
    if (gk) memcpy(gk, k->grad, k->size * sizeof(float));
    tt_tape_reset();
    tt_free(q), tt_free(k), tt_free(v), tt_free(seed);
}

static void accumulate_cases(void) {
    enum { N = 2 * 40 * 2 * 32 };
    static float g1[N], k1[N], g2[N], k2[N];
    for (int D = 8; D <= 16; D += 8) {
        for (int layout = 1; layout <= 2; layout++) {
            const size_t nq = 2 * 40 * 2 * (size_t)D, nk = layout == 2 ? 2 * nq : nq;
            grads_of(layout, false, false, D, g1, k1);
            grads_of(layout, true, false, D, g2, k2);
            for (size_t i = 0; i < nq; i++) g1[i] *= 2.0f;
            for (size_t i = 0; i < nk; i++) k1[i] *= 2.0f;
            ck_assert_msg(tt_test_maxdiff(g1, g2, nq) <= 1e-5f && tt_test_maxdiff(k1, k2, nk) <= 1e-5f,
                          "D %d layout %d: two calls' gradients are not twice one call's", D,
                          layout);
        }
        /* q as k: dq = (q's part) + (k's part) */
        const size_t nq = 2 * 40 * 2 * (size_t)D;
        grads_of(1, false, false, D, g1, k1);
        grads_of(1, false, true, D, g2, NULL);
        for (size_t i = 0; i < nq; i++) g1[i] += k1[i];
        ck_assert_msg(tt_test_maxdiff(g1, g2, nq) <= 1e-5f,
                      "D %d: q passed as k: gradient differs from q's + k's", D);
    }
}

START_TEST(test_attention_grad_accumulates) {
    accumulate_cases();
    setenv("TT_ATTN", "gemm", 1);
    accumulate_cases();
    unsetenv("TT_ATTN");
}
END_TEST

/* Into a new gradient buffer the vector path stores dQ, and the first query block's dK
 * and dV rows, instead of zeroing them and adding (ops/attention_fused.c,
 * backward_range). That must be the bits of adding to zeros: the same backward with every
 * gradient new (tt_grad_to_none) and with every gradient an existing zero buffer
 * (tt_zero_grad, which is added to), for one query block and several, a shorter T than
 * S, no queries at all, causal or not, the kv form and the heads form, D 16 (vector
 * path) and 8 (padded). */
static void store_vs_add(int form, int T, int S, int D, bool causal) {
    const int B = 2, H = 2;
    tt_manual_seed(31);
    tt_tensor *q = tt_test_param(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
    tt_tensor *k = tt_test_param(TT_SHAPE(B, S, form == 2 ? 2 * H * D : H * D), -1.0f, 1.0f);
    tt_tensor *v = tt_test_param(TT_SHAPE(B, S, H * D), -1.0f, 1.0f);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(B, T, H * D), -1.0f, 1.0f);
    tt_tensor *t[3] = {q, k, v};
    float *g[2][3];
    for (int pass = 0; pass < 2; pass++) {
        /* stale values (ones) in the buffers that a new gradient reuses */
        tt_backward(tt_add(tt_add(tt_sum_all(q), tt_sum_all(k)), tt_sum_all(v)));
        tt_tape_reset();
        for (int i = 0; i < 3; i++) {
            tt_grad_to_none(t[i]);
            if (pass == 1) tt_zero_grad(t[i]);
        }
        tt_tensor *y = form == 2 ? tt_attention_kv(q, k, H, 0.3f, causal)
                                 : tt_attention_heads(q, k, v, H, 0.3f, causal);
        tt_backward(tt_sum_all(tt_mul(y, seed)));
        for (int i = 0; i < 3; i++) {
            if (form == 2 && i == 2) { g[pass][i] = NULL; continue; }
            g[pass][i] = malloc(t[i]->size * sizeof(float));
            memcpy(g[pass][i], t[i]->grad, t[i]->size * sizeof(float));
        }
        tt_tape_reset();
    }
    for (int i = 0; i < 3; i++) {
        if (!g[0][i]) continue;
        ck_assert_msg(memcmp(g[0][i], g[1][i], t[i]->size * sizeof(float)) == 0,
                      "form %d T %d S %d D %d causal %d: gradient %d of new buffers differs "
                      "from adding to zeros", form, T, S, D, causal, i);
        free(g[0][i]), free(g[1][i]);
    }
    tt_free(q), tt_free(k), tt_free(v), tt_free(seed);
}

START_TEST(test_attention_grad_store_same_bits) {
    for (int form = 1; form <= 2; form++)
        for (int D = 8; D <= 16; D += 8)
            for (int causal = 0; causal < 2; causal++) {
                store_vs_add(form, 20, 20, D, causal);   /* one query block, short */
                store_vs_add(form, 32, 32, D, causal);   /* one full block */
                store_vs_add(form, 70, 70, D, causal);   /* three blocks */
                store_vs_add(form, 40, 75, D, causal);   /* queries the last 40 of 75 */
                store_vs_add(form, 0, 20, D, causal);    /* no queries: dK = dV = 0 */
            }
}
END_TEST

START_TEST(test_attention_no_grad_same_values) {
    tt_manual_seed(5);
    for (int D = 4; D <= 16; D += 12) {
        tt_tensor *q = tt_test_param(TT_SHAPE(2, 40, D), -1.0f, 1.0f);
        tt_tensor *k = tt_test_param(TT_SHAPE(2, 40, D), -1.0f, 1.0f);
        tt_tensor *v = tt_test_param(TT_SHAPE(2, 40, 16), -1.0f, 1.0f);
        tt_tensor *y = tt_attention(q, k, v, 0.3f, true);
        ck_assert_ptr_nonnull(y->node);
        int len = tt_tape_len();
        tt_no_grad_begin();
        tt_tensor *y2 = tt_attention(q, k, v, 0.3f, true);
        tt_no_grad_end();
        ck_assert_ptr_null(y2->node);
        ck_assert_int_eq(tt_tape_len(), len);
        ck_assert_float_eq(tt_test_maxdiff(y->data, y2->data, y->size), 0.0f);
        tt_tape_reset();
        tt_free(q);
        tt_free(k);
        tt_free(v);
    }
}
END_TEST

START_TEST(test_attention_threads_bit_identical) {
#ifdef _OPENMP
    /* heads are owned by threads: 1 and 2 threads give the same bits */
    tt_manual_seed(9);
    for (int D = 8; D <= 32; D += 24) {
        tt_tensor *q = tt_test_param(TT_SHAPE(2, 64, 4 * D), -1.0f, 1.0f);
        tt_tensor *kv = tt_test_param(TT_SHAPE(2, 64, 8 * D), -1.0f, 1.0f);
        float *out[2], *gq[2], *gkv[2];
        int saved = omp_get_max_threads();
        for (int t = 0; t < 2; t++) {
            omp_set_num_threads(t + 1);
            tt_zero_grad(q);
            tt_zero_grad(kv);
            tt_tensor *y = tt_attention_kv(q, kv, 4, 0.2f, true);
            tt_backward(tt_sum_all(tt_mul(y, y)));
            out[t] = malloc(y->size * sizeof(float));
            memcpy(out[t], y->data, y->size * sizeof(float));
            gq[t] = malloc(q->size * sizeof(float));
            memcpy(gq[t], q->grad, q->size * sizeof(float));
            gkv[t] = malloc(kv->size * sizeof(float));
            memcpy(gkv[t], kv->grad, kv->size * sizeof(float));
            tt_tape_reset();
        }
        omp_set_num_threads(saved);
        ck_assert(memcmp(out[0], out[1], 2 * 64 * 4 * D * sizeof(float)) == 0);
        ck_assert(memcmp(gq[0], gq[1], q->size * sizeof(float)) == 0);
        ck_assert(memcmp(gkv[0], gkv[1], kv->size * sizeof(float)) == 0);
        for (int t = 0; t < 2; t++) free(out[t]), free(gq[t]), free(gkv[t]);
        tt_free(q);
        tt_free(kv);
    }
#endif
}
END_TEST

START_TEST(test_attention_errors) {
    tt_tensor *q = tt_set_name(tt_zeros(TT_SHAPE(2, 4, 8)), "q");
    tt_tensor *k = tt_set_name(tt_zeros(TT_SHAPE(2, 3, 8)), "k");
    tt_tensor *v = tt_set_name(tt_zeros(TT_SHAPE(2, 3, 5)), "v");
    tt_tensor *k6 = tt_set_name(tt_zeros(TT_SHAPE(2, 4, 6)), "k6");
    tt_tensor *v4 = tt_set_name(tt_zeros(TT_SHAPE(2, 4, 5)), "v4");
    tt_tensor *kb = tt_set_name(tt_zeros(TT_SHAPE(3, 4, 8)), "kb");
    tt_tensor *q2 = tt_set_name(tt_zeros(TT_SHAPE(4, 8)), "q2");
    TT_EXPECT_ERROR(tt_attention(q, k, v, 1.0f, true),
                    "'q' [2, 4, 8]: more queries (T = 4) than keys (S = 3); the causal mask needs S >= T");
    TT_EXPECT_ERROR(tt_attention(q, k6, v4, 1.0f, false), "q 'q' [2, 4, 8] and k 'k6' [2, 4, 6]: the head sizes D differ");
    TT_EXPECT_ERROR(tt_attention(q, k, v4, 1.0f, false), "k 'k' [2, 3, 8] and v 'v4' [2, 4, 5]: the numbers of keys S differ");
    TT_EXPECT_ERROR(tt_attention(q, kb, v4, 1.0f, false), "batch sizes differ: q 'q' [2, 4, 8], k 'kb' [3, 4, 8], v 'v4' [2, 4, 5]");
    TT_EXPECT_ERROR(tt_attention(q2, k, v, 1.0f, false), "expects q [BH, T, D], k [BH, S, D], v [BH, S, Dv]; got q 'q2' [4, 8]");
    TT_EXPECT_ERROR(tt_attention(q, k, v, NAN, false), "scale = nan must be finite");
    TT_EXPECT_ERROR(tt_attention_heads(q, k, v, 3, 1.0f, false), "q 'q' [2, 4, 8] must be [B, T, n_heads * D] with n_heads = 3");
    TT_EXPECT_ERROR(tt_attention_heads(q, k, v, 0, 1.0f, false), "n_heads = 0 must be >= 1");
    TT_EXPECT_ERROR(tt_attention_heads(q, k, v, 2, 1.0f, false),
                    "expects q [B, T, H*D], k [B, S, H*D], v [B, S, H*Dv] with H = 2; got q 'q' [2, 4, 8], k 'k' [2, 3, 8], v 'v' [2, 3, 5]");
    TT_EXPECT_ERROR(tt_attention_kv(q, k, 2, 1.0f, false),
                    "expects q [B, T, H*D] and kv [B, S, H*D + H*Dv] (keys, then values) with H = 2; got q 'q' [2, 4, 8], kv 'k' [2, 3, 8]");
    TT_EXPECT_ERROR(tt_attention(q, k, NULL, 1.0f, false), "attention");
    tt_free(q);
    tt_free(k);
    tt_free(v);
    tt_free(k6);
    tt_free(v4);
    tt_free(kb);
    tt_free(q2);
}
END_TEST

/* vfma_acc, the attention's multiply-add, rounds once per lane (the result the AVX-512
 * and x86-64-v3 builds of the attention get from vfmadd): here, in a function built for
 * the baseline, it is the per-lane fmaf path. With a = s = 1 + 2^-12 and c = -(1 + 2^-11)
 * the exact a s + c is 2^-24, which a rounded product (1 + 2^-11 after a tie to even)
 * loses: an unfused multiply and add gives 0. */
START_TEST(test_vfma_acc_single_rounding) {
    const float e = ldexpf(1.0f, -12);
    v16 a, c, want;
    for (int i = 0; i < VL; i++) {
        a[i] = (1.0f + e) * (float)(i + 1);
        c[i] = -(1.0f + 2.0f * e) * (float)(i + 1);
        want[i] = fmaf(a[i], 1.0f + e, c[i]);
    }
    volatile float prod = a[0] * (1.0f + e);
    ck_assert_float_eq(prod + c[0], 0.0f);          /* unfused: the 2^-24 is lost */
    ck_assert_float_eq(want[0], ldexpf(1.0f, -24)); /* fused: kept               */
    vfma_acc(&c, &a, 1.0f + e);
    for (int i = 0; i < VL; i++) ck_assert_float_eq(c[i], want[i]);
}
END_TEST

static Suite *attention_fused_suite(void) {
    Suite *s = suite_create("attention_fused");
    TCase *tc = tcase_create("attention_fused");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_attention_matches_unfused);
    tcase_add_test(tc, test_attention_hand_values);
    tcase_add_test(tc, test_attention_layouts);
    tcase_add_test(tc, test_attention_grad);
    tcase_add_test(tc, test_attention_grad_vector_path);
    tcase_add_test(tc, test_attention_grad_gemm_path);
    tcase_add_test(tc, test_attention_grad_accumulates);
    tcase_add_test(tc, test_attention_grad_store_same_bits);
    tcase_add_test(tc, test_attention_no_grad_same_values);
    tcase_add_test(tc, test_attention_threads_bit_identical);
    tcase_add_test(tc, test_attention_errors);
    tcase_add_test(tc, test_vfma_acc_single_rounding);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(attention_fused_suite)

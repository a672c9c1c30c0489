/* test_mla.c - Multi-head Latent Attention: gradients, causality, the latent cache. */
#include "tt_test.h"

#include "nn/mla.h"

#include <math.h>

static void mla_make(tt_mla *m, tt_params *p, int dim, int heads, int rank, uint64_t seed) {
    tt_manual_seed(seed);
    tt_mla_config cfg = {.dim = dim, .n_heads = heads, .rank = rank, .bias = true};
    tt_mla_init(m, p, "attn", &cfg);
}

static tt_tensor *f_mla(tt_tensor *const *in, void *user) {
    return tt_mla_forward((const tt_mla *)user, in[0]);
}

static void mla_gradcheck(const char *op) {
    tt_params p = {0};
    tt_mla m;
    mla_make(&m, &p, 8, 2, 4, 17);
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 4, 8), -1.0f, 1.0f);
    tt_tensor *in[6] = {x, m.q_proj.weight, m.kv_a_proj.weight, m.kv_b_proj.weight,
                        m.kv_b_proj.bias, m.o_proj.weight};
    tt_test_gradcheck(op, f_mla, &m, 6, in, NULL);
    tt_free(x);
    tt_params_free(&p);
}

START_TEST(test_mla_grad_attention) { mla_gradcheck("attention"); }
END_TEST
START_TEST(test_mla_grad_affine) { mla_gradcheck("affine"); }
END_TEST

START_TEST(test_mla_single_position) {
    /* with T = 1 the only attention weight is 1: y = o_proj(V) with V the second half of
     * kv_b_proj(kv_a_proj(x)) */
    tt_params p = {0};
    tt_mla m;
    mla_make(&m, &p, 4, 2, 3, 2);
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(1, 1, 4), -1.0f, 1.0f);
    tt_tensor *y = tt_mla_forward(&m, x);
    tt_tensor *kv = tt_linear_forward(&m.kv_b_proj, tt_linear_forward(&m.kv_a_proj, x));
    tt_tensor *v = tt_slice(kv, 2, 4, 8);
    tt_tensor *want = tt_linear_forward(&m.o_proj, v);
    ck_assert_float_le(tt_test_maxdiff(y->data, want->data, 4), 1e-6f);
    ck_assert_ptr_nonnull(tt_params_find(&p, "attn.kv_b_proj.weight"));
    ck_assert_int_eq(m.kv_b_proj.weight->shape[0], 8);
    ck_assert_int_eq(m.kv_b_proj.weight->shape[1], 3);
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_mla_causal) {
    /* changing the last token leaves every earlier output unchanged */
    tt_params p = {0};
    tt_mla m;
    mla_make(&m, &p, 8, 2, 4, 3);
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(1, 5, 8), -1.0f, 1.0f);
    tt_tensor *y1 = tt_mla_forward(&m, x);
    for (int d = 0; d < 8; d++) x->data[4 * 8 + d] += 1.0f;
    tt_tensor *y2 = tt_mla_forward(&m, x);
    ck_assert_float_eq(tt_test_maxdiff(y1->data, y2->data, 4 * 8), 0.0f);
    ck_assert_float_gt(tt_test_maxdiff(y1->data + 32, y2->data + 32, 8), 1e-4f);
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_mla_cache_matches_full) {
    /* token by token, and in chunks of 2 + 1 + 3, the cache gives the full forward's
     * outputs (the same float ops on the same numbers, so agreement to rounding) */
    tt_params p = {0};
    tt_mla m;
    mla_make(&m, &p, 8, 2, 4, 5);
    const int T = 6;
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(1, T, 8), -1.0f, 1.0f);
    tt_tensor *full = tt_mla_forward(&m, x);
    const int chunks[2][6] = {{1, 1, 1, 1, 1, 1}, {2, 1, 3, 0, 0, 0}};
    for (int c = 0; c < 2; c++) {
        tt_mla_cache cache;
        tt_mla_cache_init(&cache, 4, T);
        int t0 = 0;
        int tape0 = tt_tape_len();
        for (int k = 0; k < 6 && chunks[c][k]; k++) {
            int n = chunks[c][k];
            tt_tensor *xs = tt_slice(x, 1, t0, t0 + n);
            tt_tensor *y = tt_mla_forward_cached(&m, xs, &cache);
            ck_assert_int_eq(cache.len, t0 + n);
            float diff = tt_test_maxdiff(y->data, full->data + t0 * 8, (size_t)n * 8);
            ck_assert_msg(diff < 1e-5f, "positions %d..%d differ by %g", t0, t0 + n - 1, (double)diff);
            t0 += n;
        }
        ck_assert_int_eq(tt_tape_len(), tape0); /* nothing recorded */
        tt_tensor *one = tt_slice(x, 1, 0, 1);
        TT_EXPECT_ERROR(tt_mla_forward_cached(&m, one, &cache), "cache full: 6 cached + 1 new positions > capacity 6");
        ck_assert(tt_grad_enabled());
        tt_mla_cache_free(&cache);
    }
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_mla_errors) {
    tt_params p = {0};
    tt_mla m;
    tt_mla_config cfg = {.dim = 8, .n_heads = 3, .rank = 4};
    TT_EXPECT_ERROR(tt_mla_init(&m, &p, "attn", &cfg), "n_heads = 3 must be >= 1 and divide dim = 8");
    cfg.n_heads = 2;
    cfg.rank = 0;
    TT_EXPECT_ERROR(tt_mla_init(&m, &p, "attn", &cfg), "rank = 0 must be >= 1");
    cfg.rank = 4;
    tt_mla_init(&m, &p, "attn", &cfg);
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 3, 6)), "h");
    TT_EXPECT_ERROR(tt_mla_forward(&m, x), "x 'h' [2, 3, 6] must be [B, T, 8]");
    tt_tensor *x2 = tt_zeros(TT_SHAPE(2, 3, 8));
    tt_mla_cache cache;
    tt_mla_cache_init(&cache, 4, 8);
    TT_EXPECT_ERROR(tt_mla_forward_cached(&m, x2, &cache), "the cache holds batch 1 only");
    tt_mla_cache_free(&cache);
    tt_mla_cache_init(&cache, 5, 8);
    tt_tensor *x3 = tt_zeros(TT_SHAPE(1, 3, 8));
    TT_EXPECT_ERROR(tt_mla_forward_cached(&m, x3, &cache), "cache rank 5 does not match the layer's rank 4");
    tt_mla_cache_free(&cache);
    tt_free(x);
    tt_free(x2);
    tt_free(x3);
    tt_params_free(&p);
}
END_TEST

static Suite *mla_suite(void) {
    Suite *s = suite_create("mla");
    TCase *tc = tcase_create("mla");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mla_grad_attention);
    tcase_add_test(tc, test_mla_grad_affine);
    tcase_add_test(tc, test_mla_single_position);
    tcase_add_test(tc, test_mla_causal);
    tcase_add_test(tc, test_mla_cache_matches_full);
    tcase_add_test(tc, test_mla_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(mla_suite)

/* test_rope.c - interleaved rotary embedding: values, gradient, mutation, errors. */
#include "tt_test.h"
#include "ops_rope.h"

#include <math.h>

/* Tables angle(p, k) = p * f_k with f = {1, 0.1, 0.01} (D = 6), positions 0..9. */
static void make_tables(tt_tensor **cs, tt_tensor **sn) {
    const float f[3] = {1.0f, 0.1f, 0.01f};
    *cs = tt_zeros(TT_SHAPE(10, 3));
    *sn = tt_zeros(TT_SHAPE(10, 3));
    for (int p = 0; p < 10; p++)
        for (int k = 0; k < 3; k++) {
            (*cs)->data[p * 3 + k] = cosf((float)p * f[k]);
            (*sn)->data[p * 3 + k] = sinf((float)p * f[k]);
        }
}

static tt_tensor *g_cos, *g_sin;
static int g_start;
static tt_tensor *f_rope(tt_tensor *const *in, void *user) {
    (void)user;
    return tt_rope(in[0], g_cos, g_sin, g_start);
}

START_TEST(test_rope_values) {
    /* one pair (1, 2) at position 1 of f = 1: rotate by 1 rad; position 0 is identity */
    make_tables(&g_cos, &g_sin);
    tt_tensor *x = tt_from_data(TT_SHAPE(1, 2, 6), (float[]){1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6});
    tt_tensor *y = tt_rope(x, g_cos, g_sin, 0);
    ck_assert_float_eq(tt_test_maxdiff(y->data, x->data, 6), 0.0f);
    float c = cosf(1.0f), s = sinf(1.0f);
    float c1 = cosf(0.1f), s1 = sinf(0.1f), c2 = cosf(0.01f), s2 = sinf(0.01f);
    float want[6] = {1 * c - 2 * s, 1 * s + 2 * c, 3 * c1 - 4 * s1, 3 * s1 + 4 * c1,
                     5 * c2 - 6 * s2, 5 * s2 + 6 * c2};
    ck_assert_float_le(tt_test_maxdiff(y->data + 6, want, 6), 1e-6f);
    /* start_pos shifts the positions: token 0 at start 1 = the same rotation */
    tt_tensor *z = tt_rope(tt_slice(x, 1, 0, 1), g_cos, g_sin, 1);
    ck_assert_float_le(tt_test_maxdiff(z->data, want, 6), 1e-6f);
    tt_tape_reset();
    tt_free(x);
    tt_free(g_cos);
    tt_free(g_sin);
}
END_TEST

START_TEST(test_rope_heads_share_the_position) {
    /* [B, T, H, D]: every head of token t rotates by position start + t (head 1 checked
     * against a lone [1, 1, D] token at that position) */
    make_tables(&g_cos, &g_sin);
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 3, 2, 6), -1.0f, 1.0f);
    tt_tensor *y = tt_rope(x, g_cos, g_sin, 2);
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < 3; t++) {
            float *h1 = x->data + ((b * 3 + t) * 2 + 1) * 6;
            tt_tensor *one = tt_from_data(TT_SHAPE(1, 1, 6), h1);
            tt_tensor *ry = tt_rope(one, g_cos, g_sin, 2 + t);
            ck_assert_float_eq(tt_test_maxdiff(ry->data, y->data + (h1 - x->data), 6), 0.0f);
            tt_free(one);
        }
    tt_tape_reset();
    tt_free(x);
    tt_free(g_cos);
    tt_free(g_sin);
}
END_TEST

START_TEST(test_rope_grad) {
    make_tables(&g_cos, &g_sin);
    tt_tensor *x3 = tt_test_param(TT_SHAPE(2, 4, 6), -1.0f, 1.0f);
    tt_tensor *x4 = tt_test_param(TT_SHAPE(2, 3, 2, 6), -1.0f, 1.0f);
    g_start = 0;
    tt_test_gradcheck("rope", f_rope, NULL, 1, &x3, NULL);
    g_start = 5;
    tt_test_gradcheck("rope", f_rope, NULL, 1, &x4, NULL);
    tt_free(x3);
    tt_free(x4);
    tt_free(g_cos);
    tt_free(g_sin);
}
END_TEST

START_TEST(test_rope_errors) {
    make_tables(&g_cos, &g_sin);
    tt_tensor *odd = tt_zeros(TT_SHAPE(1, 2, 5));
    tt_tensor *x = tt_zeros(TT_SHAPE(1, 4, 6));
    tt_tensor *flat = tt_zeros(TT_SHAPE(4, 6));
    TT_EXPECT_ERROR(tt_rope(odd, g_cos, g_sin, 0), "must be even");
    TT_EXPECT_ERROR(tt_rope(flat, g_cos, g_sin, 0), "must be [B, T, D] or [B, T, H, D]");
    TT_EXPECT_ERROR(tt_rope(x, g_cos, g_sin, 7), "positions 7..10");
    tt_tensor *bad = tt_zeros(TT_SHAPE(10, 2));
    TT_EXPECT_ERROR(tt_rope(x, bad, g_sin, 0), "must both be [positions, 3]");
    tt_set_requires_grad(g_cos, true);
    TT_EXPECT_ERROR(tt_rope(x, g_cos, g_sin, 0), "must not require grad");
    tt_tape_reset();
    tt_free(odd);
    tt_free(x);
    tt_free(flat);
    tt_free(bad);
    tt_free(g_cos);
    tt_free(g_sin);
}
END_TEST

static Suite *rope_suite(void) {
    Suite *s = suite_create("rope");
    TCase *tc = tcase_create("rope");
    tcase_add_test(tc, test_rope_values);
    tcase_add_test(tc, test_rope_heads_share_the_position);
    tcase_add_test(tc, test_rope_grad);
    tcase_add_test(tc, test_rope_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(rope_suite)

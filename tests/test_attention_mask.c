/* test_attention_mask.c - causal_mask: values (square and offset S > T), gradients that
 * stop at masked positions, errors. */
#include "tt_test.h"

#include <math.h>

/* exp(-inf) = 0 keeps the projected loss of the gradcheck finite; the mutation test
 * still targets the causal_mask backward only. */
static tt_tensor *f_masked_exp(tt_tensor *const *in, void *user) {
    (void)user;
    return tt_exp(tt_causal_mask(in[0]));
}

START_TEST(test_causal_mask_grad) {
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 3, 3), -1.0f, 1.0f); /* T = S */
    tt_test_gradcheck("causal_mask", f_masked_exp, NULL, 1, &x, NULL);
    tt_free(x);
    x = tt_test_param(TT_SHAPE(2, 2, 2, 5), -1.0f, 1.0f);         /* S - T = 3 */
    tt_test_gradcheck("causal_mask", f_masked_exp, NULL, 1, &x, NULL);
    tt_free(x);
}
END_TEST

START_TEST(test_causal_mask_square_values) {
    float v[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    tt_tensor *x = tt_from_data(TT_SHAPE(3, 3), v);
    tt_tensor *y = tt_causal_mask(x);
    ck_assert_int_eq(y->ndim, 2);
    /* lower triangle (j <= i) kept, strictly upper is -inf */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            float got = y->data[i * 3 + j];
            if (j <= i)
                ck_assert_float_eq(got, v[i * 3 + j]);
            else
                ck_assert(isinf(got) && got < 0);
        }
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_causal_mask_offset_values) {
    /* T = 2 queries at absolute positions 2 and 3 of S = 4 keys:
     * query 0 sees keys 0..2, query 1 sees keys 0..3 */
    tt_tensor *x = tt_from_data(TT_SHAPE(1, 2, 4), (float[]){1, 2, 3, 4, 5, 6, 7, 8});
    tt_tensor *y = tt_causal_mask(x);
    float want[] = {1, 2, 3, -INFINITY, 5, 6, 7, 8};
    for (int k = 0; k < 8; k++) {
        if (isinf(want[k]))
            ck_assert(isinf(y->data[k]) && y->data[k] < 0);
        else
            ck_assert_float_eq(y->data[k], want[k]);
    }
    /* T = 1 (decoding one token) masks nothing */
    tt_tensor *q = tt_from_data(TT_SHAPE(1, 3), (float[]){1, 2, 3});
    tt_tensor *yq = tt_causal_mask(q);
    for (int k = 0; k < 3; k++) ck_assert_float_eq(yq->data[k], (float)(k + 1));
    tt_tape_reset();
    tt_free(x);
    tt_free(q);
}
END_TEST

START_TEST(test_causal_mask_grad_zero_where_masked) {
    tt_tensor *x = tt_set_requires_grad(tt_zeros(TT_SHAPE(2, 2, 3)), true); /* S - T = 1 */
    tt_tensor *y = tt_causal_mask(x);
    float seed[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    tt_backward_seed(y, seed);
    float want[12] = {1, 2, 0, 4, 5, 6, 7, 8, 0, 10, 11, 12};
    ck_assert_float_eq(tt_test_maxdiff(x->grad, want, 12), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_causal_mask_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 4, 3)), "scores");
    TT_EXPECT_ERROR(tt_causal_mask(x), "causal_mask: scores 'scores' [2, 4, 3] has more queries "
                                       "(T = 4) than keys (S = 3); need S >= T");
    tt_tensor *v = tt_set_name(tt_zeros(TT_SHAPE(3)), "v");
    TT_EXPECT_ERROR(tt_causal_mask(v), "causal_mask: scores 'v' [3] must be [..., T, S]");
    tt_tensor *i = tt_set_name(tt_from_ids(TT_SHAPE(2, 2), (int32_t[]){0, 1, 2, 3}), "ids");
    TT_EXPECT_ERROR(tt_causal_mask(i), "must be float32");
    tt_tape_reset();
    tt_free(x);
    tt_free(v);
    tt_free(i);
}
END_TEST

static Suite *attention_mask_suite(void) {
    Suite *s = suite_create("attention_mask");
    TCase *tc = tcase_create("causal_mask");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_causal_mask_grad);
    tcase_add_test(tc, test_causal_mask_square_values);
    tcase_add_test(tc, test_causal_mask_offset_values);
    tcase_add_test(tc, test_causal_mask_grad_zero_where_masked);
    tcase_add_test(tc, test_causal_mask_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(attention_mask_suite)

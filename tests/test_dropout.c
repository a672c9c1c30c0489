/* test_dropout.c - dropout: gradient (+ mutation), eval identity, statistics,
 * reproducibility, errors. */
#include "tt_test.h"

#include <math.h>

/* Every evaluation by gradcheck must draw the same mask: reseed before each forward. */
static tt_tensor *f_dropout(tt_tensor *const *in, void *user) {
    float p = *(const float *)user;
    tt_manual_seed(123);
    return tt_dropout(in[0], p, true);
}

START_TEST(test_dropout_grad) {
    tt_manual_seed(7);
    tt_tensor *x = tt_test_param(TT_SHAPE(4, 5), -1.0f, 1.0f);
    float p = 0.3f;
    tt_test_gradcheck("dropout", f_dropout, &p, 1, &x, NULL);
    p = 0.5f;
    tt_test_gradcheck("dropout", f_dropout, &p, 1, &x, NULL);
    tt_free(x);
}
END_TEST

/* dx = g * mask: with g = 1 and x = 1 the gradient equals the output itself */
START_TEST(test_dropout_backward_uses_mask) {
    tt_tensor *x = tt_set_requires_grad(tt_ones(TT_SHAPE(64)), true);
    tt_manual_seed(5);
    tt_tensor *y = tt_dropout(x, 0.25f, true);
    ck_assert_str_eq(y->node->op, "dropout");
    tt_backward(tt_sum_all(y));
    ck_assert_float_eq(tt_test_maxdiff(x->grad, y->data, 64), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_eval_is_identity) {
    tt_tensor *x = tt_test_param(TT_SHAPE(3, 4), -1.0f, 1.0f);
    tt_tape_reset();
    ck_assert_ptr_eq(tt_dropout(x, 0.5f, false), x);
    ck_assert_ptr_eq(tt_dropout(x, 0.0f, true), x); /* p = 0 in training, too */
    ck_assert_int_eq(tt_tape_len(), 0);             /* nothing recorded */
    /* and the gradient passes straight through */
    tt_backward(tt_sum_all(tt_scale(tt_dropout(x, 0.9f, false), 2.0f)));
    for (int i = 0; i < 12; i++) ck_assert_float_eq(x->grad[i], 2.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

/* n = 100000 ones, p = 0.3. The number of zeros is Binomial(n, p): mean 30000, standard
 * deviation sqrt(n p (1-p)) = 145, i.e. 0.00145 as a fraction; the bound 0.01 is ~7 sd.
 * The output mean is (kept / n) / (1 - p), expectation 1, sd 0.00145 / 0.7 = 0.0021;
 * the bound 0.015 is again ~7 sd. (The seed is fixed, so the test is deterministic; the
 * bounds say it would pass for essentially any seed.) Kept entries equal x / (1 - p). */
START_TEST(test_training_statistics) {
    const int n = 100000;
    const float p = 0.3f;
    tt_tensor *x = tt_ones(1, &n);
    tt_manual_seed(2024);
    tt_tensor *y = tt_dropout(x, p, true);
    ck_assert_ptr_ne(y, x);
    size_t zeros = 0;
    double sum = 0.0;
    float kept = 1.0f / (1.0f - p);
    for (int i = 0; i < n; i++) {
        if (y->data[i] == 0.0f) zeros++;
        else ck_assert_float_eq(y->data[i], kept);
        sum += y->data[i];
    }
    double frac = (double)zeros / n, mean = sum / n;
    printf("  dropout p=0.3: zero fraction %.5f, mean %.5f\n", frac, mean);
    ck_assert_msg(fabs(frac - p) < 0.01, "zero fraction %g, want %g +- 0.01", frac, (double)p);
    ck_assert_msg(fabs(mean - 1.0) < 0.015, "mean %g, want 1 +- 0.015", mean);
    ck_assert_float_eq(x->data[0], 1.0f); /* the input is untouched */
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_same_seed_same_mask) {
    tt_tensor *x = tt_ones(TT_SHAPE(1000));
    tt_manual_seed(42);
    tt_tensor *a = tt_dropout(x, 0.5f, true);
    tt_manual_seed(42);
    tt_tensor *b = tt_dropout(x, 0.5f, true);
    ck_assert_float_eq(tt_test_maxdiff(a->data, b->data, 1000), 0.0f);
    /* without reseeding the next mask differs (P[equal] = 2^-1000) */
    tt_tensor *c = tt_dropout(x, 0.5f, true);
    ck_assert_float_gt(tt_test_maxdiff(a->data, c->data, 1000), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_dropout_errors) {
    tt_tensor *x = tt_set_name(tt_ones(TT_SHAPE(2, 3)), "h");
    TT_EXPECT_ERROR(tt_dropout(x, 1.0f, true), "dropout: p = 1 outside [0, 1) for 'h' [2, 3]");
    TT_EXPECT_ERROR(tt_dropout(x, -0.1f, true), "p = -0.1 outside [0, 1)");
    TT_EXPECT_ERROR(tt_dropout(x, NAN, false), "p = nan outside [0, 1)");
    TT_EXPECT_ERROR(tt_dropout(x, 1.5f, false), "test_dropout.c:"); /* checked in eval too */
    int32_t ids[2] = {0, 1};
    tt_tensor *i = tt_from_ids(TT_SHAPE(2), ids);
    TT_EXPECT_ERROR(tt_dropout(i, 0.5f, true), "dropout: argument 'x'");
    tt_tape_reset();
    tt_free(x);
    tt_free(i);
}
END_TEST

static Suite *dropout_suite(void) {
    Suite *s = suite_create("dropout");
    TCase *tc = tcase_create("dropout");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_dropout_grad);
    tcase_add_test(tc, test_dropout_backward_uses_mask);
    tcase_add_test(tc, test_eval_is_identity);
    tcase_add_test(tc, test_training_statistics);
    tcase_add_test(tc, test_same_seed_same_mask);
    tcase_add_test(tc, test_dropout_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(dropout_suite)

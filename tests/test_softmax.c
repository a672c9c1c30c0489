/* test_softmax.c - softmax and log_softmax over the last axis: values, stability for
 * logits of +-1e4, gradients (+ mutation), thread-count independence, errors. */
#include "tt_test.h"

#include <math.h>

static tt_tensor *f_softmax(tt_tensor *const *in, void *user) {
    return strcmp(user, "softmax") ? tt_log_softmax(in[0]) : tt_softmax(in[0]);
}

/* [7], [3, 5] and [2, 3, 4] */
static void check_grad(const char *op) {
    tt_tensor *x[] = {
        tt_test_param(TT_SHAPE(7), -2.0f, 2.0f),
        tt_test_param(TT_SHAPE(3, 5), -2.0f, 2.0f),
        tt_test_param(TT_SHAPE(2, 3, 4), -2.0f, 2.0f),
    };
    for (int i = 0; i < 3; i++) {
        tt_test_gradcheck(op, f_softmax, (void *)op, 1, &x[i], NULL);
        tt_free(x[i]);
    }
}

START_TEST(test_softmax_grad) { check_grad("softmax"); }
END_TEST
START_TEST(test_log_softmax_grad) { check_grad("log_softmax"); }
END_TEST

START_TEST(test_softmax_values) {
    /* softmax([1, 2, 3]) = e^(i) / (e + e^2 + e^3) */
    tt_tensor *x = tt_from_data(TT_SHAPE(2, 3), (float[]){1, 2, 3, 0, 0, 0});
    tt_tensor *y = tt_softmax(x);
    float want[] = {0.0900306f, 0.2447285f, 0.6652410f, 1 / 3.0f, 1 / 3.0f, 1 / 3.0f};
    ck_assert_float_le(tt_test_maxdiff(y->data, want, 6), 1e-6f);
    tt_tensor *ly = tt_log_softmax(x);
    /* log_softmax([1, 2, 3]) = i - log(e + e^2 + e^3) = i - 3.4076059 */
    float lwant[] = {-2.4076059f, -1.4076059f, -0.4076059f,
                     -1.0986123f, -1.0986123f, -1.0986123f};
    ck_assert_float_le(tt_test_maxdiff(ly->data, lwant, 6), 1e-6f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_softmax_shift_invariant) {
    /* softmax(x + c) = softmax(x): [1, 2, 3] + 1000 gives the same numbers */
    tt_tensor *x = tt_from_data(TT_SHAPE(3), (float[]){1001, 1002, 1003});
    tt_tensor *y = tt_softmax(x);
    float want[] = {0.0900306f, 0.2447285f, 0.6652410f};
    ck_assert_float_le(tt_test_maxdiff(y->data, want, 3), 1e-6f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

static void assert_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++) ck_assert_msg(isfinite(v[i]), "element %zu is %g", i, v[i]);
}

START_TEST(test_softmax_stable_large_logits) {
    /* e^1e4 overflows float (and double): without the max subtraction this is inf/inf */
    tt_tensor *x = tt_set_requires_grad(
        tt_from_data(TT_SHAPE(3, 3), (float[]){1e4f, 0, -1e4f,       /* one dominant     */
                                               1e4f, 1e4f, -1e4f,    /* two tied at 1e4  */
                                               -1e4f, -1e4f, -1e4f}),/* all very negative */
        true);
    tt_tensor *y = tt_softmax(x);
    assert_finite(y->data, 9);
    float want[] = {1, 0, 0, 0.5f, 0.5f, 0, 1 / 3.0f, 1 / 3.0f, 1 / 3.0f};
    ck_assert_float_le(tt_test_maxdiff(y->data, want, 9), 1e-6f);
    tt_backward_seed(y, ((float[]){1, 2, 3, 1, 2, 3, 1, 2, 3}));
    assert_finite(x->grad, 9);
    /* row 2: y = 1/3 each, sum(g y) = 2, dx = y (g - 2) = [-1/3, 0, 1/3] */
    float gwant[] = {-1 / 3.0f, 0, 1 / 3.0f};
    ck_assert_float_le(tt_test_maxdiff(x->grad + 6, gwant, 3), 1e-6f);
    tt_tape_reset();

    tt_zero_grad(x);
    tt_tensor *ly = tt_log_softmax(x);
    assert_finite(ly->data, 9);
    /* row 0: [0, -1e4, -2e4]; row 1: [-log 2, -log 2, -2e4 - log 2]; row 2: -log 3 */
    float lwant[] = {0, -1e4f, -2e4f, -0.6931472f, -0.6931472f, -2e4f - 0.6931472f,
                     -1.0986123f, -1.0986123f, -1.0986123f};
    ck_assert_float_le(tt_test_maxdiff(ly->data, lwant, 9), 1e-6f);
    tt_backward(tt_sum_all(ly));
    assert_finite(x->grad, 9);
    /* dx = 1 - 3 p: row 0 -> [-2, 1, 1] */
    ck_assert_float_le(tt_test_maxdiff(x->grad, (float[]){-2, 1, 1}, 3), 1e-6f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_softmax_rows_sum_to_one) {
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(5, 11), -20.0f, 20.0f);
    tt_tensor *y = tt_softmax(x);
    for (int r = 0; r < 5; r++) {
        double s = 0.0;
        for (int j = 0; j < 11; j++) s += y->data[r * 11 + j];
        ck_assert_double_le(fabs(s - 1.0), 1e-6);
    }
    tt_tape_reset();
    tt_free(x);
}
END_TEST

/* A [512, 128] input (65536 elements) takes the threaded path; each row must equal,
 * bit for bit, the same row computed on its own (the serial path). */
START_TEST(test_softmax_threaded_rows_match_serial) {
    const int R = 512, C = 128;
    tt_tensor *x = tt_set_requires_grad(tt_rand_uniform(TT_SHAPE(R, C), -5.0f, 5.0f), true);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(R, C), -1.0f, 1.0f);
    const char *ops[] = {"softmax", "log_softmax"};
    for (int o = 0; o < 2; o++) {
        tt_zero_grad(x);
        tt_tensor *y = f_softmax(&x, (void *)ops[o]);
        tt_backward_seed(y, seed->data);
        tt_tensor *big_y = tt_clone(y);
        tt_tape_reset();
        for (int r = 0; r < R; r += 97) {
            tt_tensor *row = tt_set_requires_grad(tt_from_data(TT_SHAPE(C), x->data + r * C), true);
            tt_tensor *yr = f_softmax(&row, (void *)ops[o]);
            tt_backward_seed(yr, seed->data + r * C);
            ck_assert(memcmp(yr->data, big_y->data + r * C, C * sizeof(float)) == 0);
            ck_assert(memcmp(row->grad, x->grad + r * C, C * sizeof(float)) == 0);
            tt_tape_reset();
            tt_free(row);
        }
        tt_free(big_y);
    }
    tt_free(x);
    tt_free(seed);
}
END_TEST

START_TEST(test_softmax_grad_accumulates) {
    /* x used twice: the gradients of both uses add up */
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(3), (float[]){1, 2, 3}), true);
    tt_tensor *w = tt_from_data(TT_SHAPE(3), (float[]){1, -1, 2});
    tt_backward(tt_sum_all(tt_mul(tt_softmax(x), w)));
    float once[3];
    memcpy(once, x->grad, sizeof once);
    tt_tape_reset();
    tt_zero_grad(x);
    tt_backward(tt_sum_all(tt_add(tt_mul(tt_softmax(x), w), tt_mul(tt_softmax(x), w))));
    for (int i = 0; i < 3; i++) ck_assert_float_le(fabsf(x->grad[i] - 2 * once[i]), 1e-6f);
    tt_tape_reset();
    tt_free(x);
    tt_free(w);
}
END_TEST

START_TEST(test_softmax_errors) {
    tt_tensor *i = tt_set_name(tt_from_ids(TT_SHAPE(2), (int32_t[]){0, 1}), "ids");
    TT_EXPECT_ERROR(tt_softmax(i), "softmax: argument 'a' 'ids' [2] int32 must be float32");
    TT_EXPECT_ERROR(tt_log_softmax(i), "log_softmax:");
    TT_EXPECT_ERROR(tt_softmax(NULL), "is NULL");
    tt_free(i);
}
END_TEST

static Suite *softmax_suite(void) {
    Suite *s = suite_create("softmax");
    TCase *tc = tcase_create("softmax");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_softmax_grad);
    tcase_add_test(tc, test_log_softmax_grad);
    tcase_add_test(tc, test_softmax_values);
    tcase_add_test(tc, test_softmax_shift_invariant);
    tcase_add_test(tc, test_softmax_stable_large_logits);
    tcase_add_test(tc, test_softmax_rows_sum_to_one);
    tcase_add_test(tc, test_softmax_threaded_rows_match_serial);
    tcase_add_test(tc, test_softmax_grad_accumulates);
    tcase_add_test(tc, test_softmax_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(softmax_suite)

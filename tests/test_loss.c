/* test_loss.c - cross entropy: known values, gradients (+ mutation), ignore_index,
 * stability for logits of +-1e4, errors naming the bad target. */
#include "tt_test.h"

#include <math.h>

typedef struct ce_case {
    tt_tensor *targets;
    int ignore;
} ce_case;

static tt_tensor *f_ce(tt_tensor *const *in, void *user) {
    const ce_case *c = user;
    return tt_cross_entropy(in[0], c->targets, c->ignore);
}

START_TEST(test_cross_entropy_grad_2d) {
    tt_tensor *x = tt_test_param(TT_SHAPE(4, 5), -2.0f, 2.0f);
    tt_tensor *t = tt_from_ids(TT_SHAPE(4), (int32_t[]){0, 4, 2, 2});
    ce_case c = {t, TT_NO_IGNORE};
    tt_test_gradcheck("cross_entropy", f_ce, &c, 1, &x, NULL);
    tt_free(x);
    tt_free(t);
}
END_TEST

START_TEST(test_cross_entropy_grad_3d_with_ignore) {
    /* logits [2, 3, 6], targets [2, 3]; two positions carry ignore_index -100 */
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 3, 6), -2.0f, 2.0f);
    tt_tensor *t = tt_from_ids(TT_SHAPE(2, 3), (int32_t[]){5, -100, 0, 3, 1, -100});
    ce_case c = {t, -100};
    tt_test_gradcheck("cross_entropy", f_ce, &c, 1, &x, NULL);
    tt_free(x);
    tt_free(t);
}
END_TEST

START_TEST(test_cross_entropy_grad_1d) {
    /* a single row: logits [V], targets a scalar (shape []) */
    tt_tensor *x = tt_test_param(TT_SHAPE(7), -2.0f, 2.0f);
    tt_tensor *t = tt_from_ids(0, NULL, (int32_t[]){3});
    ce_case c = {t, TT_NO_IGNORE};
    tt_test_gradcheck("cross_entropy", f_ce, &c, 1, &x, NULL);
    tt_free(x);
    tt_free(t);
}
END_TEST

START_TEST(test_cross_entropy_values) {
    /* rows [1, 2, 3] with targets 2 and 0: softmax = [0.0900306, 0.2447285, 0.6652410]
     *   loss_0 = -log 0.6652410 = 0.4076059,  loss_1 = -log 0.0900306 = 2.4076059
     *   mean = 1.4076059;  dlogits = (p - onehot) / 2 */
    tt_tensor *x = tt_set_requires_grad(
        tt_from_data(TT_SHAPE(2, 3), (float[]){1, 2, 3, 1, 2, 3}), true);
    tt_tensor *t = tt_from_ids(TT_SHAPE(2), (int32_t[]){2, 0});
    tt_tensor *l = tt_cross_entropy(x, t, TT_NO_IGNORE);
    ck_assert_int_eq(l->ndim, 0);
    ck_assert_float_le(fabsf(l->data[0] - 1.4076059f), 1e-6f);
    tt_backward(l);
    float want[] = {0.0900306f / 2, 0.2447285f / 2, (0.6652410f - 1) / 2,
                    (0.0900306f - 1) / 2, 0.2447285f / 2, 0.6652410f / 2};
    ck_assert_float_le(tt_test_maxdiff(x->grad, want, 6), 1e-6f);
    ck_assert_str_eq(l->node->op, "cross_entropy");
    tt_tape_reset();
    tt_free(x);
    tt_free(t);
}
END_TEST

START_TEST(test_cross_entropy_matches_log_softmax) {
    /* loss = -mean_r log_softmax(x)[r, t_r], gradients included */
    tt_tensor *x = tt_test_param(TT_SHAPE(3, 4, 9), -3.0f, 3.0f);
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = (i * 5) % 9;
    tt_tensor *t = tt_from_ids(TT_SHAPE(3, 4), ids);
    tt_tensor *l = tt_cross_entropy(x, t, TT_NO_IGNORE);
    tt_backward(l);
    float got = l->data[0];
    float grad[108];
    memcpy(grad, x->grad, sizeof grad);
    tt_tape_reset();
    tt_zero_grad(x);
    /* the same through log_softmax, with a one-hot weight of -1/12 */
    float w[108] = {0};
    for (int i = 0; i < 12; i++) w[i * 9 + ids[i]] = -1.0f / 12;
    tt_tensor *wt = tt_from_data(TT_SHAPE(3, 4, 9), w);
    tt_tensor *ref = tt_sum_all(tt_mul(tt_log_softmax(x), wt));
    tt_backward(ref);
    ck_assert_float_le(fabsf(got - ref->data[0]), 1e-6f);
    ck_assert_float_le(tt_test_maxdiff(grad, x->grad, 108), 1e-6f);
    tt_tape_reset();
    tt_free(x);
    tt_free(t);
    tt_free(wt);
}
END_TEST

START_TEST(test_cross_entropy_stable_large_logits) {
    /* [1e4, 0, -1e4]: target 0 costs ~0 (e^-1e4 underflows), target 1 costs 1e4, target 2
     * costs 2e4; logsumexp would overflow without the max subtraction */
    tt_tensor *x = tt_set_requires_grad(
        tt_from_data(TT_SHAPE(3, 3), (float[]){1e4f, 0, -1e4f, 1e4f, 0, -1e4f, 1e4f, 0, -1e4f}),
        true);
    tt_tensor *t = tt_from_ids(TT_SHAPE(3), (int32_t[]){0, 1, 2});
    tt_tensor *l = tt_cross_entropy(x, t, TT_NO_IGNORE);
    ck_assert(isfinite(l->data[0]));
    ck_assert_float_le(fabsf(l->data[0] - 1e4f), 1e-3f); /* (0 + 1e4 + 2e4) / 3 */
    tt_backward(l);
    /* p = [1, 0, 0] in every row: grad = (p - onehot) / 3 */
    float want[] = {0, 0, 0, 1 / 3.0f, -1 / 3.0f, 0, 1 / 3.0f, 0, -1 / 3.0f};
    for (int i = 0; i < 9; i++) ck_assert(isfinite(x->grad[i]));
    ck_assert_float_le(tt_test_maxdiff(x->grad, want, 9), 1e-6f);
    tt_tape_reset();
    /* all logits equal and huge: loss = log V exactly as for zeros */
    tt_tensor *y = tt_full(TT_SHAPE(1, 4), -1e4f);
    tt_tensor *t0 = tt_from_ids(TT_SHAPE(1), (int32_t[]){2});
    ck_assert_float_le(fabsf(tt_cross_entropy(y, t0, TT_NO_IGNORE)->data[0] - logf(4)), 1e-6f);
    tt_tape_reset();
    tt_free(x);
    tt_free(t);
    tt_free(y);
    tt_free(t0);
}
END_TEST

START_TEST(test_cross_entropy_ignore_index) {
    /* rows 0 and 2 count (targets 2 and 0), row 1 is ignored: the loss is the mean over
     * 2 rows, 1.4076059 as in test_cross_entropy_values, and row 1 gets zero gradient */
    tt_tensor *x = tt_set_requires_grad(
        tt_from_data(TT_SHAPE(3, 3), (float[]){1, 2, 3, 5, -1, 0.5f, 1, 2, 3}), true);
    tt_tensor *t = tt_from_ids(TT_SHAPE(3), (int32_t[]){2, -100, 0});
    tt_tensor *l = tt_cross_entropy(x, t, -100);
    ck_assert_float_le(fabsf(l->data[0] - 1.4076059f), 1e-6f);
    tt_backward(l);
    float want[] = {0.0900306f / 2, 0.2447285f / 2, (0.6652410f - 1) / 2, 0, 0, 0,
                    (0.0900306f - 1) / 2, 0.2447285f / 2, 0.6652410f / 2};
    ck_assert_float_le(tt_test_maxdiff(x->grad, want, 9), 1e-6f);
    tt_tape_reset();

    /* an ignore_index inside [0, V) ignores that class as a target (as PyTorch) */
    tt_zero_grad(x);
    tt_tensor *t1 = tt_from_ids(TT_SHAPE(3), (int32_t[]){2, 1, 0});
    l = tt_cross_entropy(x, t1, 1);
    ck_assert_float_le(fabsf(l->data[0] - 1.4076059f), 1e-6f);
    tt_backward(l);
    ck_assert_float_le(tt_test_maxdiff(x->grad, want, 9), 1e-6f);
    tt_tape_reset();
    tt_free(x);
    tt_free(t);
    tt_free(t1);
}
END_TEST

START_TEST(test_cross_entropy_all_ignored_is_zero) {
    /* our choice: loss 0 and gradient 0 (PyTorch gives NaN for 0/0) */
    tt_tensor *x = tt_set_requires_grad(tt_rand_uniform(TT_SHAPE(2, 4), -1, 1), true);
    tt_tensor *t = tt_from_ids(TT_SHAPE(2), (int32_t[]){-100, -100});
    tt_tensor *l = tt_cross_entropy(x, t, -100);
    ck_assert_float_eq(l->data[0], 0.0f);
    tt_backward(l);
    for (int i = 0; i < 8; i++) ck_assert_float_eq(x->grad[i], 0.0f);
    tt_tape_reset();
    tt_free(x);
    tt_free(t);
}
END_TEST

/* Big enough ([256, 200]) for the threaded path; the loss must equal the sum of the
 * one-row losses computed separately, and the gradient rows must match bit for bit. */
START_TEST(test_cross_entropy_threaded_matches_rows) {
    const int R = 256, V = 200;
    tt_tensor *x = tt_set_requires_grad(tt_rand_uniform(TT_SHAPE(R, V), -4, 4), true);
    int32_t ids[256];
    for (int r = 0; r < R; r++) ids[r] = (r * 37) % V;
    tt_tensor *t = tt_from_ids(TT_SHAPE(R), ids);
    tt_tensor *l = tt_cross_entropy(x, t, TT_NO_IGNORE);
    tt_backward(l);
    double sum = 0.0;
    float total = l->data[0];
    tt_tape_reset();
    for (int r = 0; r < R; r++) {
        tt_tensor *row = tt_set_requires_grad(tt_from_data(TT_SHAPE(1, V), x->data + r * V), true);
        tt_tensor *tr = tt_from_ids(TT_SHAPE(1), &ids[r]);
        tt_tensor *lr = tt_cross_entropy(row, tr, TT_NO_IGNORE);
        sum += lr->data[0];
        tt_backward_seed(lr, ((float[]){1.0f / R}));
        /* 1/R = 2^-8 is exact, so g / 1 here equals g / R there bit for bit */
        ck_assert(memcmp(row->grad, x->grad + r * V, V * sizeof(float)) == 0);
        tt_tape_reset();
        tt_free(row);
        tt_free(tr);
    }
    ck_assert_double_le(fabs(sum / R - total), 1e-6);
    tt_free(x);
    tt_free(t);
}
END_TEST

START_TEST(test_cross_entropy_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(3, 5)), "logits");
    tt_tensor *bad = tt_set_name(tt_from_ids(TT_SHAPE(3), (int32_t[]){0, 5, 1}), "targets");
    TT_EXPECT_ERROR(tt_cross_entropy(x, bad, TT_NO_IGNORE),
                    "cross_entropy: target 5 at position [1] of 'targets' [3] int32 is out of "
                    "range [0, 5) for logits 'logits' [3, 5]");
    /* -1 is a bad target when nothing is ignored */
    tt_tensor *neg = tt_set_name(tt_from_ids(TT_SHAPE(3), (int32_t[]){0, 1, -1}), "targets");
    TT_EXPECT_ERROR(tt_cross_entropy(x, neg, TT_NO_IGNORE), "target -1 at position [2]");
    TT_EXPECT_ERROR(tt_cross_entropy(x, neg, -100), "target -1 at position [2]");
    /* a multi-dimensional position */
    tt_tensor *x3 = tt_set_name(tt_zeros(TT_SHAPE(2, 2, 4)), "logits");
    tt_tensor *t3 = tt_set_name(tt_from_ids(TT_SHAPE(2, 2), (int32_t[]){0, 1, 2, 9}), "t");
    TT_EXPECT_ERROR(tt_cross_entropy(x3, t3, TT_NO_IGNORE), "target 9 at position [1, 1] of 't'");
    /* shapes */
    tt_tensor *t4 = tt_set_name(tt_from_ids(TT_SHAPE(4), (int32_t[]){0, 1, 2, 3}), "t4");
    TT_EXPECT_ERROR(tt_cross_entropy(x, t4, TT_NO_IGNORE),
                    "targets 't4' [4] int32 must have the shape of logits 'logits' [3, 5] without");
    TT_EXPECT_ERROR(tt_cross_entropy(x, x, TT_NO_IGNORE), "must be an int32 tensor");
    TT_EXPECT_ERROR(tt_cross_entropy(bad, bad, TT_NO_IGNORE), "must be float32");
    TT_EXPECT_ERROR(tt_cross_entropy(x, bad, TT_NO_IGNORE), "test_loss.c:");
    tt_tape_reset();
    tt_free(x);
    tt_free(bad);
    tt_free(neg);
    tt_free(x3);
    tt_free(t3);
    tt_free(t4);
}
END_TEST

static Suite *loss_suite(void) {
    Suite *s = suite_create("loss");
    TCase *tc = tcase_create("cross_entropy");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cross_entropy_grad_2d);
    tcase_add_test(tc, test_cross_entropy_grad_3d_with_ignore);
    tcase_add_test(tc, test_cross_entropy_grad_1d);
    tcase_add_test(tc, test_cross_entropy_values);
    tcase_add_test(tc, test_cross_entropy_matches_log_softmax);
    tcase_add_test(tc, test_cross_entropy_stable_large_logits);
    tcase_add_test(tc, test_cross_entropy_ignore_index);
    tcase_add_test(tc, test_cross_entropy_all_ignored_is_zero);
    tcase_add_test(tc, test_cross_entropy_threaded_matches_rows);
    tcase_add_test(tc, test_cross_entropy_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(loss_suite)

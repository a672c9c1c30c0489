/* test_reduce.c - sum, mean, max over an axis (and over everything): values, keepdim,
 * gradients (+ mutation), the first-argmax rule, accumulation precision, errors. */
#include "tt_test.h"

#include <math.h>

typedef struct reduce_case {
    const char *op; /* "sum", "mean", "max", "sum_all", "mean_all" */
    int axis;
    bool keepdim;
} reduce_case;

static tt_tensor *f_reduce(tt_tensor *const *in, void *user) {
    const reduce_case *c = user;
    if (!strcmp(c->op, "sum")) return tt_sum(in[0], c->axis, c->keepdim);
    if (!strcmp(c->op, "mean")) return tt_mean(in[0], c->axis, c->keepdim);
    if (!strcmp(c->op, "max")) return tt_max(in[0], c->axis, c->keepdim);
    if (!strcmp(c->op, "sum_all")) return tt_sum_all(in[0]);
    return tt_mean_all(in[0]);
}

/* A [3, 4, 5] input for max: the 60 values k * 0.05 - 1.5 in a scrambled order
 * (k -> 7k mod 60, a bijection since gcd(7, 60) = 1), all distinct and at least 0.05
 * apart, so x +- h (h = 0.01) never changes which entry is the maximum. */
static tt_tensor *distinct_param(void) {
    tt_tensor *t = tt_set_requires_grad(tt_zeros(TT_SHAPE(3, 4, 5)), true);
    for (size_t i = 0; i < t->size; i++) t->data[i] = (float)((i * 7) % 60) * 0.05f - 1.5f;
    return t;
}

/* axis 0, 1, 2 and -1, keepdim both ways, on a [3, 4, 5] input */
static void check_axes(const char *op) {
    static const int axes[] = {0, 1, 2, -1};
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++)
        for (int kd = 0; kd < 2; kd++) {
            reduce_case c = {op, axes[a], kd};
            tt_tensor *x = !strcmp(op, "max") ? distinct_param()
                                              : tt_test_param(TT_SHAPE(3, 4, 5), -1.0f, 1.0f);
            printf("%s axis %d keepdim %d\n", op, c.axis, kd);
            tt_test_gradcheck(op, f_reduce, &c, 1, &x, NULL);
            tt_free(x);
        }
}

START_TEST(test_sum_grad) { check_axes("sum"); }
END_TEST
START_TEST(test_mean_grad) { check_axes("mean"); }
END_TEST
START_TEST(test_max_grad) { check_axes("max"); }
END_TEST

START_TEST(test_sum_all_mean_all_grad) {
    tt_tensor *x = tt_test_param(TT_SHAPE(3, 4), -1.0f, 1.0f);
    reduce_case s = {"sum_all", 0, false}, m = {"mean_all", 0, false};
    tt_test_gradcheck("sum_all", f_reduce, &s, 1, &x, NULL);
    tt_test_gradcheck("mean_all", f_reduce, &m, 1, &x, NULL);
    tt_free(x);
}
END_TEST

/* a 1-D input reduces to a scalar; a reduction over a size-1 axis is the identity */
START_TEST(test_reduce_1d_and_size1_axis_grad) {
    tt_tensor *x = tt_test_param(TT_SHAPE(6), -1.0f, 1.0f);
    tt_tensor *y = tt_test_param(TT_SHAPE(4, 1), -1.0f, 1.0f);
    const char *ops[] = {"sum", "mean"};
    for (int i = 0; i < 2; i++) {
        reduce_case c0 = {ops[i], 0, false}, c1 = {ops[i], -1, true};
        tt_test_gradcheck(ops[i], f_reduce, &c0, 1, &x, NULL);
        tt_test_gradcheck(ops[i], f_reduce, &c1, 1, &y, NULL);
    }
    tt_free(x);
    tt_free(y);
}
END_TEST

START_TEST(test_sum_mean_values) {
    /* [[1, 2, 3], [4, 5, 6]] */
    tt_tensor *a = tt_from_data(TT_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    tt_tensor *s0 = tt_sum(a, 0, false);
    ck_assert_int_eq(s0->ndim, 1);
    ck_assert_int_eq(s0->shape[0], 3);
    ck_assert_float_eq(tt_test_maxdiff(s0->data, (float[]){5, 7, 9}, 3), 0.0f);
    tt_tensor *s1 = tt_sum(a, 1, true);
    ck_assert_int_eq(s1->ndim, 2);
    ck_assert_int_eq(s1->shape[0], 2);
    ck_assert_int_eq(s1->shape[1], 1);
    ck_assert_float_eq(tt_test_maxdiff(s1->data, (float[]){6, 15}, 2), 0.0f);
    tt_tensor *m = tt_mean(a, -1, false);
    ck_assert_int_eq(m->ndim, 1);
    ck_assert_float_eq(tt_test_maxdiff(m->data, (float[]){2, 5}, 2), 0.0f);
    tt_tensor *m0 = tt_mean(a, -2, true);
    ck_assert_int_eq(m0->ndim, 2);
    ck_assert_int_eq(m0->shape[0], 1);
    ck_assert_int_eq(m0->shape[1], 3);
    ck_assert_float_eq(tt_test_maxdiff(m0->data, (float[]){2.5f, 3.5f, 4.5f}, 3), 0.0f);
    /* a middle axis of a 3-D tensor: [2, 2, 2] summed over axis 1 */
    tt_tensor *b = tt_from_data(TT_SHAPE(2, 2, 2), (float[]){1, 2, 3, 4, 5, 6, 7, 8});
    tt_tensor *sb = tt_sum(b, 1, false);
    ck_assert_float_eq(tt_test_maxdiff(sb->data, (float[]){4, 6, 12, 14}, 4), 0.0f);
    tt_tensor *mx = tt_max(b, 1, false);
    ck_assert_float_eq(tt_test_maxdiff(mx->data, (float[]){3, 4, 7, 8}, 4), 0.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
}
END_TEST

START_TEST(test_mean_grad_values) {
    /* d/dx mean over axis 1 of a [2, 4] input, seeded with [1, 2]: each row gets g / 4 */
    tt_tensor *x = tt_set_requires_grad(tt_zeros(TT_SHAPE(2, 4)), true);
    tt_backward_seed(tt_mean(x, 1, false), ((float[]){1, 2}));
    float want[] = {0.25f, 0.25f, 0.25f, 0.25f, 0.5f, 0.5f, 0.5f, 0.5f};
    ck_assert_float_eq(tt_test_maxdiff(x->grad, want, 8), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_max_ties_grad_to_first) {
    /* [[3, 1, 3], [0, 2, 2]]: row maxima 3 and 2, both tied; the gradient goes to the
     * first occurrence only */
    tt_tensor *x = tt_set_requires_grad(
        tt_from_data(TT_SHAPE(2, 3), (float[]){3, 1, 3, 0, 2, 2}), true);
    tt_tensor *m = tt_max(x, 1, false);
    ck_assert_float_eq(tt_test_maxdiff(m->data, (float[]){3, 2}, 2), 0.0f);
    tt_backward(tt_sum_all(m));
    ck_assert_float_eq(tt_test_maxdiff(x->grad, (float[]){1, 0, 0, 0, 1, 0}, 6), 0.0f);
    /* along axis 0 with keepdim: columns [3,0], [1,2], [3,2] -> [[3, 2, 3]] */
    tt_zero_grad(x);
    tt_tensor *m0 = tt_max(x, 0, true);
    ck_assert_int_eq(m0->ndim, 2);
    ck_assert_int_eq(m0->shape[0], 1);
    ck_assert_float_eq(tt_test_maxdiff(m0->data, (float[]){3, 2, 3}, 3), 0.0f);
    tt_backward_seed(m0, ((float[]){10, 20, 30}));
    ck_assert_float_eq(tt_test_maxdiff(x->grad, (float[]){10, 0, 30, 0, 20, 0}, 6), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_max_negative_and_nan) {
    tt_tensor *x = tt_from_data(TT_SHAPE(2, 3), (float[]){-5, -2, -9, 1, NAN, 4});
    tt_tensor *m = tt_max(x, 1, false);
    ck_assert_float_eq(m->data[0], -2.0f); /* the maximum of negatives, not 0 */
    ck_assert(isnan(m->data[1]));          /* NaN propagates, as in PyTorch */
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_sum_accumulates_in_double) {
    /* 1e8 + 1 - 1e8: a float accumulator loses the 1 (1e8 + 1 rounds to 1e8) */
    tt_tensor *x = tt_from_data(TT_SHAPE(3, 1), (float[]){1e8f, 1.0f, -1e8f});
    ck_assert_float_eq(tt_sum(x, 0, false)->data[0], 1.0f);
    /* 2^24 + 1 ones in one column: float would stop counting at 2^24 */
    int n = (1 << 24) + 8;
    tt_tensor *ones = tt_ones(TT_SHAPE(n, 1));
    ck_assert_float_eq(tt_sum(ones, 0, false)->data[0], (float)n);
    ck_assert_float_eq(tt_mean(ones, 0, false)->data[0], 1.0f);
    tt_tape_reset();
    tt_free(x);
    tt_free(ones);
}
END_TEST

START_TEST(test_reduce_not_recorded_without_grad) {
    tt_tensor *x = tt_ones(TT_SHAPE(2, 3));
    int before = tt_tape_len();
    tt_tensor *s = tt_sum(x, 0, false);
    ck_assert_int_eq(tt_tape_len(), before);
    ck_assert(!s->requires_grad);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_reduce_tape_names) {
    tt_tensor *x = tt_set_requires_grad(tt_ones(TT_SHAPE(2, 3)), true);
    ck_assert_str_eq(tt_sum(x, 0, false)->node->op, "sum");
    ck_assert_str_eq(tt_mean(x, 0, false)->node->op, "mean");
    ck_assert_str_eq(tt_max(x, 0, false)->node->op, "max");
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_reduce_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 3)), "x");
    TT_EXPECT_ERROR(tt_sum(x, 3, false), "sum: axis 3 out of range for 'x' [2, 3]");
    TT_EXPECT_ERROR(tt_mean(x, -3, true), "mean: axis -3 out of range for 'x' [2, 3]");
    TT_EXPECT_ERROR(tt_max(x, 2, false), "max: axis 2 out of range for 'x' [2, 3]");
    TT_EXPECT_ERROR(tt_sum(x, 5, false), "test_reduce.c:");
    tt_tensor *e = tt_set_name(tt_zeros(TT_SHAPE(2, 0)), "empty");
    TT_EXPECT_ERROR(tt_max(e, 1, false), "max: max over empty axis 1 of 'empty' [2, 0]");
    TT_EXPECT_ERROR(tt_mean(e, -1, false), "mean over empty axis");
    tt_tensor *s = tt_sum(e, 1, false); /* the sum over nothing is 0 */
    ck_assert_float_eq(tt_test_maxdiff(s->data, (float[]){0, 0}, 2), 0.0f);
    tt_tensor *i = tt_from_ids(TT_SHAPE(2), (int32_t[]){0, 1});
    TT_EXPECT_ERROR(tt_sum(i, 0, false), "must be float32");
    tt_tape_reset();
    tt_free(x);
    tt_free(e);
    tt_free(i);
}
END_TEST

static Suite *reduce_suite(void) {
    Suite *s = suite_create("reduce");
    TCase *tc = tcase_create("reduce");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sum_grad);
    tcase_add_test(tc, test_mean_grad);
    tcase_add_test(tc, test_max_grad);
    tcase_add_test(tc, test_sum_all_mean_all_grad);
    tcase_add_test(tc, test_reduce_1d_and_size1_axis_grad);
    tcase_add_test(tc, test_sum_mean_values);
    tcase_add_test(tc, test_mean_grad_values);
    tcase_add_test(tc, test_max_ties_grad_to_first);
    tcase_add_test(tc, test_max_negative_and_nan);
    tcase_add_test(tc, test_sum_accumulates_in_double);
    tcase_add_test(tc, test_reduce_not_recorded_without_grad);
    tcase_add_test(tc, test_reduce_tape_names);
    tcase_add_test(tc, test_reduce_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(reduce_suite)

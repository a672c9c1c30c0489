/* test_binary.c - add/sub/mul/div: values, broadcasting, gradients, errors. */
#include "tt_test.h"

static const char *g_op;

static tt_tensor *f_binary(tt_tensor *const *in, void *user) {
    (void)user;
    if (!strcmp(g_op, "add")) return tt_add(in[0], in[1]);
    if (!strcmp(g_op, "sub")) return tt_sub(in[0], in[1]);
    if (!strcmp(g_op, "mul")) return tt_mul(in[0], in[1]);
    return tt_div(in[0], in[1]);
}

/* every op, for: same shape, bias row [C], per-row scale [N,1], scalar [1], and a
 * 3-D x 2-D broadcast in both directions */
static void check_all_shapes(const char *op) {
    static const int shapes[][2][4] = {
        /* ndim a, a dims..., then b */
        {{2, 3, 4, 0}, {2, 3, 4, 0}},
        {{2, 3, 4, 0}, {1, 4, 0, 0}},
        {{2, 3, 4, 0}, {2, 3, 1, 0}},
        {{2, 3, 4, 0}, {1, 1, 0, 0}},
        {{3, 2, 3, 4}, {2, 1, 4, 0}},
        {{2, 3, 1, 0}, {3, 2, 1, 4}},
    };
    g_op = op;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        tt_tensor *a = tt_test_param(shapes[s][0][0], &shapes[s][0][1], -1.0f, 1.0f);
        /* the divisor stays away from 0 */
        tt_tensor *b = tt_test_param(shapes[s][1][0], &shapes[s][1][1], 0.5f, 1.5f);
        tt_tensor *in[2] = {a, b};
        tt_test_gradcheck(op, f_binary, NULL, 2, in, NULL);
        tt_free(a);
        tt_free(b);
    }
}

START_TEST(test_add_grad) { check_all_shapes("add"); }
END_TEST
START_TEST(test_sub_grad) { check_all_shapes("sub"); }
END_TEST
START_TEST(test_mul_grad) { check_all_shapes("mul"); }
END_TEST
START_TEST(test_div_grad) { check_all_shapes("div"); }
END_TEST

START_TEST(test_broadcast_values) {
    /* [2,3] + [3] adds the row to each row; [2,3] * [2,1] scales each row */
    tt_tensor *a = tt_from_data(TT_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    tt_tensor *row = tt_from_data(TT_SHAPE(3), (float[]){10, 20, 30});
    tt_tensor *col = tt_from_data(TT_SHAPE(2, 1), (float[]){2, -1});
    tt_tensor *c = tt_add(a, row);
    float want_c[] = {11, 22, 33, 14, 25, 36};
    ck_assert_float_eq(tt_test_maxdiff(c->data, want_c, 6), 0.0f);
    tt_tensor *d = tt_mul(a, col);
    float want_d[] = {2, 4, 6, -4, -5, -6};
    ck_assert_float_eq(tt_test_maxdiff(d->data, want_d, 6), 0.0f);
    /* [2,1] - [3] broadcasts both sides into [2,3] */
    tt_tensor *e = tt_sub(col, row);
    ck_assert_int_eq(e->ndim, 2);
    ck_assert_int_eq(e->shape[0], 2);
    ck_assert_int_eq(e->shape[1], 3);
    float want_e[] = {-8, -18, -28, -11, -21, -31};
    ck_assert_float_eq(tt_test_maxdiff(e->data, want_e, 6), 0.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(row);
    tt_free(col);
}
END_TEST

START_TEST(test_broadcast_grad_sums) {
    /* d/d(row) of sum(a + row) over 2 rows is 2 for each entry */
    tt_tensor *a = tt_set_requires_grad(tt_zeros(TT_SHAPE(2, 3)), true);
    tt_tensor *row = tt_set_requires_grad(tt_zeros(TT_SHAPE(3)), true);
    tt_backward(tt_sum_all(tt_add(a, row)));
    for (int i = 0; i < 3; i++) ck_assert_float_eq(row->grad[i], 2.0f);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(a->grad[i], 1.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(row);
}
END_TEST

START_TEST(test_shape_mismatch_error) {
    tt_tensor *a = tt_set_name(tt_zeros(TT_SHAPE(2, 3)), "x");
    tt_tensor *b = tt_set_name(tt_zeros(TT_SHAPE(4)), "bias");
    TT_EXPECT_ERROR(tt_add(a, b), "add: shapes 'x' [2, 3] and 'bias' [4] do not broadcast");
    TT_EXPECT_ERROR(tt_mul(a, b), "test_binary.c:");
    int32_t ids[2] = {0, 1};
    tt_tensor *i = tt_from_ids(TT_SHAPE(2), ids);
    TT_EXPECT_ERROR(tt_div(a, i), "must be float32");
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
    tt_free(i);
}
END_TEST

static Suite *binary_suite(void) {
    Suite *s = suite_create("binary");
    TCase *tc = tcase_create("binary");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_add_grad);
    tcase_add_test(tc, test_sub_grad);
    tcase_add_test(tc, test_mul_grad);
    tcase_add_test(tc, test_div_grad);
    tcase_add_test(tc, test_broadcast_values);
    tcase_add_test(tc, test_broadcast_grad_sums);
    tcase_add_test(tc, test_shape_mismatch_error);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(binary_suite)

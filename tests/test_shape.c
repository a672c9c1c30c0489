/* test_shape.c - reshape, transpose, concat, slice, split: values, views, gradients
 * (+ mutation), int32 support, errors. */
#include "tt_test.h"

/* ---- gradient checks ------------------------------------------------------------- */
typedef struct shape_case {
    int ndim;
    int shape[4];   /* reshape target                  */
    int d0, d1;     /* transpose axes / slice axis (d0) */
    int start, end; /* slice range                       */
    int n;          /* concat / split: number of pieces  */
    int sizes[4];   /* split sizes                       */
} shape_case;

static tt_tensor *f_reshape(tt_tensor *const *in, void *user) {
    const shape_case *c = user;
    return tt_reshape(in[0], c->ndim, c->shape);
}
static tt_tensor *f_transpose(tt_tensor *const *in, void *user) {
    const shape_case *c = user;
    return tt_transpose(in[0], c->d0, c->d1);
}
static tt_tensor *f_concat(tt_tensor *const *in, void *user) {
    const shape_case *c = user;
    return tt_concat(c->n, in, c->d0);
}
static tt_tensor *f_slice(tt_tensor *const *in, void *user) {
    const shape_case *c = user;
    return tt_slice(in[0], c->d0, c->start, c->end);
}
/* split, then glue the pieces back in reverse order (so the result is not x itself) */
static tt_tensor *f_split(tt_tensor *const *in, void *user) {
    const shape_case *c = user;
    tt_tensor *pieces[4], *rev[4];
    tt_split(in[0], c->d0, c->n, c->sizes, pieces);
    for (int k = 0; k < c->n; k++) rev[k] = pieces[c->n - 1 - k];
    return tt_concat(c->n, rev, c->d0);
}

START_TEST(test_reshape_grad) {
    tt_tensor *x = tt_test_param(TT_SHAPE(3, 4), -1.0f, 1.0f);
    shape_case a = {.ndim = 2, .shape = {4, 3}};
    tt_test_gradcheck("reshape", f_reshape, &a, 1, &x, NULL);
    shape_case b = {.ndim = 3, .shape = {2, -1, 3}};
    tt_test_gradcheck("reshape", f_reshape, &b, 1, &x, NULL);
    tt_free(x);
}
END_TEST

START_TEST(test_transpose_grad) {
    tt_tensor *x2 = tt_test_param(TT_SHAPE(3, 4), -1.0f, 1.0f);
    tt_tensor *x3 = tt_test_param(TT_SHAPE(2, 3, 4), -1.0f, 1.0f);
    tt_tensor *x4 = tt_test_param(TT_SHAPE(2, 3, 2, 4), -1.0f, 1.0f);
    shape_case c01 = {.d0 = 0, .d1 = 1}, c02 = {.d0 = 0, .d1 = 2}, cneg = {.d0 = 1, .d1 = -1},
               c13 = {.d0 = 1, .d1 = 3};
    tt_test_gradcheck("transpose", f_transpose, &c01, 1, &x2, NULL);
    tt_test_gradcheck("transpose", f_transpose, &c02, 1, &x3, NULL);
    tt_test_gradcheck("transpose", f_transpose, &cneg, 1, &x3, NULL);
    tt_test_gradcheck("transpose", f_transpose, &c13, 1, &x4, NULL);
    tt_free(x2);
    tt_free(x3);
    tt_free(x4);
}
END_TEST

START_TEST(test_concat_grad) {
    /* three tensors along the middle axis, then along the first and the last */
    tt_tensor *in[3] = {tt_test_param(TT_SHAPE(2, 1, 3), -1.0f, 1.0f),
                        tt_test_param(TT_SHAPE(2, 2, 3), -1.0f, 1.0f),
                        tt_test_param(TT_SHAPE(2, 3, 3), -1.0f, 1.0f)};
    shape_case mid = {.d0 = 1, .n = 3};
    tt_test_gradcheck("concat", f_concat, &mid, 3, in, NULL);
    tt_tensor *rows[2] = {tt_test_param(TT_SHAPE(1, 4), -1.0f, 1.0f),
                          tt_test_param(TT_SHAPE(3, 4), -1.0f, 1.0f)};
    shape_case first = {.d0 = 0, .n = 2};
    tt_test_gradcheck("concat", f_concat, &first, 2, rows, NULL);
    tt_tensor *cols[2] = {tt_test_param(TT_SHAPE(4, 2), -1.0f, 1.0f),
                          tt_test_param(TT_SHAPE(4, 3), -1.0f, 1.0f)};
    shape_case last = {.d0 = -1, .n = 2};
    tt_test_gradcheck("concat", f_concat, &last, 2, cols, NULL);
    for (int k = 0; k < 3; k++) tt_free(in[k]);
    for (int k = 0; k < 2; k++) tt_free(rows[k]), tt_free(cols[k]);
}
END_TEST

START_TEST(test_slice_grad) {
    tt_tensor *x = tt_test_param(TT_SHAPE(3, 5, 2), -1.0f, 1.0f);
    shape_case mid = {.d0 = 1, .start = 1, .end = 4};
    shape_case first = {.d0 = 0, .start = -2, .end = 3};
    shape_case last = {.d0 = -1, .start = 1, .end = 2};
    tt_test_gradcheck("slice", f_slice, &mid, 1, &x, NULL);
    tt_test_gradcheck("slice", f_slice, &first, 1, &x, NULL);
    tt_test_gradcheck("slice", f_slice, &last, 1, &x, NULL);
    tt_free(x);
}
END_TEST

/* split is built from slices: the "slice" mutation must show up through it */
START_TEST(test_split_grad) {
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 6), -1.0f, 1.0f);
    shape_case c = {.d0 = 1, .n = 3, .sizes = {1, 3, 2}};
    tt_test_gradcheck("slice", f_split, &c, 1, &x, NULL);
    tt_free(x);
}
END_TEST

/* ---- values ------------------------------------------------------------------------ */
static void assert_shape(const tt_tensor *t, int ndim, const int *shape) {
    ck_assert_int_eq(t->ndim, ndim);
    for (int d = 0; d < ndim; d++) ck_assert_int_eq(t->shape[d], shape[d]);
}

START_TEST(test_reshape_is_view) {
    tt_tensor *x = tt_set_requires_grad(tt_arange(6), true);
    tt_tensor *y = tt_reshape(x, 2, ((int[]){2, -1}));
    assert_shape(y, TT_SHAPE(2, 3));
    ck_assert_int_eq(y->size, 6);
    ck_assert_ptr_eq(y->data, x->data);
    ck_assert(y->is_view);
    ck_assert(!y->persistent);
    x->data[4] = 40.0f; /* shared storage: y[1][1] sees it */
    ck_assert_float_eq(y->data[1 * 3 + 1], 40.0f);
    ck_assert_str_eq(y->node->op, "reshape");
    /* the gradient flows back in the same element order */
    float seed[6] = {1, 2, 3, 4, 5, 6};
    tt_backward_seed(y, seed);
    ck_assert_float_eq(tt_test_maxdiff(x->grad, seed, 6), 0.0f);
    tt_tape_reset();
    /* and through a chain: sum(3 * reshape(x)) -> dx = 3 */
    tt_zero_grad(x);
    tt_backward(tt_sum_all(tt_scale(tt_reshape(x, 3, ((int[]){3, 1, 2})), 3.0f)));
    for (int i = 0; i < 6; i++) ck_assert_float_eq(x->grad[i], 3.0f);
    /* to a scalar and back */
    tt_tensor *one = tt_full(TT_SHAPE(1), 7.0f);
    tt_tensor *s = tt_reshape(one, 0, NULL);
    ck_assert_int_eq(s->ndim, 0);
    ck_assert_float_eq(tt_item(s), 7.0f);
    tt_tape_reset();
    tt_free(x);
    tt_free(one);
}
END_TEST

START_TEST(test_transpose_values) {
    /* [[0 1 2] [3 4 5]]^T = [[0 3] [1 4] [2 5]] */
    tt_tensor *x = tt_arange(6);
    tt_tensor *m = tt_reshape(x, 2, ((int[]){2, 3}));
    tt_tensor *t = tt_transpose(m, 0, 1);
    assert_shape(t, TT_SHAPE(3, 2));
    ck_assert_float_eq(tt_test_maxdiff(t->data, (float[]){0, 3, 1, 4, 2, 5}, 6), 0.0f);
    ck_assert_ptr_ne(t->data, x->data); /* a copy */
    /* [2, 3, 2] with axes 0 and -1 swapped: out[k][j][i] = in[i][j][k] = 6i + 2j + k */
    tt_tensor *y = tt_arange(12);
    tt_tensor *u = tt_transpose(tt_reshape(y, 3, ((int[]){2, 3, 2})), -1, 0);
    assert_shape(u, TT_SHAPE(2, 3, 2));
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++)
                ck_assert_float_eq(u->data[(k * 3 + j) * 2 + i], (float)(6 * i + 2 * j + k));
    /* the same axis twice is the identity */
    tt_tensor *v = tt_transpose(m, 1, 1);
    ck_assert_float_eq(tt_test_maxdiff(v->data, x->data, 6), 0.0f);
    tt_tape_reset();
    tt_free(x);
    tt_free(y);
}
END_TEST

START_TEST(test_concat_values) {
    tt_tensor *a = tt_from_data(TT_SHAPE(2, 1), (float[]){1, 2});
    tt_tensor *b = tt_from_data(TT_SHAPE(2, 2), (float[]){3, 4, 5, 6});
    tt_tensor *c = tt_concat(2, ((tt_tensor *[]){a, b}), 1);
    assert_shape(c, TT_SHAPE(2, 3));
    ck_assert_float_eq(tt_test_maxdiff(c->data, (float[]){1, 3, 4, 2, 5, 6}, 6), 0.0f);
    tt_tensor *r = tt_concat(2, ((tt_tensor *[]){b, b}), 0);
    assert_shape(r, TT_SHAPE(4, 2));
    ck_assert_float_eq(tt_test_maxdiff(r->data, (float[]){3, 4, 5, 6, 3, 4, 5, 6}, 8), 0.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
}
END_TEST

/* each of three inputs receives exactly its own block of the output gradient */
START_TEST(test_concat3_gradient_blocks) {
    tt_tensor *a = tt_set_requires_grad(tt_zeros(TT_SHAPE(2, 1)), true);
    tt_tensor *b = tt_zeros(TT_SHAPE(2, 2)); /* no grad: skipped */
    tt_tensor *c = tt_set_requires_grad(tt_zeros(TT_SHAPE(2, 2)), true);
    tt_tensor *y = tt_concat(3, ((tt_tensor *[]){a, b, c}), -1);
    assert_shape(y, TT_SHAPE(2, 5));
    /* seed = 10 * row + column */
    float seed[10] = {0, 1, 2, 3, 4, 10, 11, 12, 13, 14};
    tt_backward_seed(y, seed);
    ck_assert_float_eq(tt_test_maxdiff(a->grad, (float[]){0, 10}, 2), 0.0f);
    ck_assert_ptr_null(b->grad);
    ck_assert_float_eq(tt_test_maxdiff(c->grad, (float[]){3, 4, 13, 14}, 4), 0.0f);
    tt_tape_reset();
    /* the same tensor twice receives both blocks */
    tt_zero_grad(a);
    tt_tensor *aa = tt_concat(2, ((tt_tensor *[]){a, a}), 0);
    tt_backward_seed(aa, ((float[]){1, 2, 3, 4}));
    ck_assert_float_eq(tt_test_maxdiff(a->grad, (float[]){4, 6}, 2), 0.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
    tt_free(c);
}
END_TEST

START_TEST(test_slice_values) {
    tt_tensor *x = tt_arange(12);
    tt_tensor *m = tt_reshape(x, 2, ((int[]){3, 4})); /* rows 0..3, 4..7, 8..11 */
    tt_tensor *cols = tt_slice(m, 1, 1, 3);
    assert_shape(cols, TT_SHAPE(3, 2));
    ck_assert_float_eq(tt_test_maxdiff(cols->data, (float[]){1, 2, 5, 6, 9, 10}, 6), 0.0f);
    /* python-style negative bounds: m[-2:, :] and m[:, -3:-1] */
    tt_tensor *rows = tt_slice(m, 0, -2, 3);
    assert_shape(rows, TT_SHAPE(2, 4));
    ck_assert_float_eq(rows->data[0], 4.0f);
    tt_tensor *neg = tt_slice(m, -1, -3, -1);
    ck_assert_float_eq(tt_test_maxdiff(neg->data, (float[]){1, 2, 5, 6, 9, 10}, 6), 0.0f);
    /* the whole axis */
    tt_tensor *all = tt_slice(m, 0, 0, 3);
    ck_assert_float_eq(tt_test_maxdiff(all->data, x->data, 12), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_slice_gradient_scatter) {
    tt_tensor *x = tt_set_requires_grad(tt_zeros(TT_SHAPE(2, 4)), true);
    tt_tensor *s = tt_slice(x, 1, 1, 3);
    tt_backward_seed(s, ((float[]){1, 2, 3, 4}));
    ck_assert_float_eq(tt_test_maxdiff(x->grad, (float[]){0, 1, 2, 0, 0, 3, 4, 0}, 8), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_split_values) {
    tt_tensor *x = tt_arange(10);
    tt_tensor *m = tt_reshape(x, 2, ((int[]){2, 5}));
    tt_tensor *p[3];
    tt_split(m, -1, 3, ((int[]){2, 1, 2}), p);
    assert_shape(p[0], TT_SHAPE(2, 2));
    assert_shape(p[1], TT_SHAPE(2, 1));
    assert_shape(p[2], TT_SHAPE(2, 2));
    ck_assert_float_eq(tt_test_maxdiff(p[0]->data, (float[]){0, 1, 5, 6}, 4), 0.0f);
    ck_assert_float_eq(tt_test_maxdiff(p[1]->data, (float[]){2, 7}, 2), 0.0f);
    ck_assert_float_eq(tt_test_maxdiff(p[2]->data, (float[]){3, 4, 8, 9}, 4), 0.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_int32_support) {
    int32_t ids[6] = {5, -1, 7, 0, 2147483647, -2147483647 - 1};
    tt_tensor *t = tt_from_ids(TT_SHAPE(2, 3), ids);
    tt_tensor *r = tt_reshape(t, 2, ((int[]){3, 2}));
    ck_assert_int_eq(r->dtype, TT_I32);
    ck_assert_ptr_eq(r->data, t->data);
    ck_assert_ptr_null(r->node);
    tt_tensor *s = tt_slice(t, 1, 1, 3);
    ck_assert_int_eq(s->dtype, TT_I32);
    ck_assert_int_eq(tt_ids(s)[0], -1);
    ck_assert_int_eq(tt_ids(s)[1], 7);
    ck_assert_int_eq(tt_ids(s)[2], 2147483647);
    ck_assert_int_eq(tt_ids(s)[3], -2147483647 - 1);
    tt_tensor *c = tt_concat(2, ((tt_tensor *[]){t, s}), 1);
    ck_assert_int_eq(c->dtype, TT_I32);
    assert_shape(c, TT_SHAPE(2, 5));
    int32_t want[10] = {5, -1, 7, -1, 7, 0, 2147483647, -2147483647 - 1, 2147483647,
                        -2147483647 - 1};
    for (int i = 0; i < 10; i++) ck_assert_int_eq(tt_ids(c)[i], want[i]);
    ck_assert_ptr_null(c->node);
    tt_tape_reset();
    tt_free(t);
}
END_TEST

START_TEST(test_tape_names) {
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 3), -1.0f, 1.0f);
    tt_tape_reset();
    ck_assert_str_eq(tt_reshape(x, 1, ((int[]){6}))->node->op, "reshape");
    ck_assert_str_eq(tt_transpose(x, 0, 1)->node->op, "transpose");
    ck_assert_str_eq(tt_concat(2, ((tt_tensor *[]){x, x}), 0)->node->op, "concat");
    ck_assert_str_eq(tt_slice(x, 1, 0, 2)->node->op, "slice");
    ck_assert_int_eq(tt_tape_len(), 4);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------ */
START_TEST(test_reshape_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 3)), "x");
    TT_EXPECT_ERROR(tt_reshape(x, 2, ((int[]){4, 2})),
                    "reshape: cannot reshape 'x' [2, 3] (6 elements) into [4, 2] (8 elements)");
    TT_EXPECT_ERROR(tt_reshape(x, 2, ((int[]){4, -1})),
                    "reshape: cannot reshape 'x' [2, 3] (6 elements) into [4, -1]");
    TT_EXPECT_ERROR(tt_reshape(x, 2, ((int[]){-1, -1})), "more than one -1 in [-1, -1]");
    TT_EXPECT_ERROR(tt_reshape(x, 2, ((int[]){-2, -3})), "negative size -2");
    TT_EXPECT_ERROR(tt_reshape(x, 2, ((int[]){0, -1})), "into [0, -1]");
    TT_EXPECT_ERROR(tt_reshape(x, 5, ((int[]){1, 1, 1, 2, 3})), "ndim 5 out of range");
    TT_EXPECT_ERROR(tt_reshape(x, 1, ((int[]){7})), "test_shape.c:");
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_transpose_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 3)), "x");
    TT_EXPECT_ERROR(tt_transpose(x, 5, 0), "transpose: axis 5 out of range for 'x' [2, 3]");
    TT_EXPECT_ERROR(tt_transpose(x, 0, -3), "axis -3 out of range");
    int32_t ids[2] = {0, 1};
    tt_tensor *i = tt_from_ids(TT_SHAPE(2), ids);
    TT_EXPECT_ERROR(tt_transpose(i, 0, 0), "must be float32");
    tt_tape_reset();
    tt_free(x);
    tt_free(i);
}
END_TEST

START_TEST(test_concat_errors) {
    tt_tensor *a = tt_set_name(tt_zeros(TT_SHAPE(2, 3)), "a");
    tt_tensor *b = tt_set_name(tt_zeros(TT_SHAPE(3, 3)), "b");
    tt_tensor *c = tt_set_name(tt_zeros(TT_SHAPE(2, 3, 1)), "c");
    int32_t ids[6] = {0};
    tt_tensor *i = tt_set_name(tt_from_ids(TT_SHAPE(2, 3), ids), "ids");
    TT_EXPECT_ERROR(tt_concat(2, ((tt_tensor *[]){a, b}), 5),
                    "concat: axis 5 out of range for 'a' [2, 3]");
    TT_EXPECT_ERROR(tt_concat(2, ((tt_tensor *[]){a, b}), 1),
                    "concat: tensor 1 'b' [3, 3] does not match tensor 0 'a' [2, 3] outside axis 1");
    TT_EXPECT_ERROR(tt_concat(2, ((tt_tensor *[]){a, c}), 0), "tensor 1 'c' [2, 3, 1] does not match");
    TT_EXPECT_ERROR(tt_concat(2, ((tt_tensor *[]){a, i}), 0), "tensor 1 'ids' [2, 3] int32 has another dtype");
    TT_EXPECT_ERROR(tt_concat(0, ((tt_tensor *[]){a}), 0), "concat: needs at least one tensor, got 0");
    TT_EXPECT_ERROR(tt_concat(2, ((tt_tensor *[]){a, NULL}), 0), "argument 'ts[1]' is NULL");
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
    tt_free(c);
    tt_free(i);
}
END_TEST

START_TEST(test_slice_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 3)), "x");
    TT_EXPECT_ERROR(tt_slice(x, 5, 0, 1), "slice: axis 5 out of range for 'x' [2, 3]");
    TT_EXPECT_ERROR(tt_slice(x, 1, 2, 2),
                    "slice: range [2, 2) is empty or out of range for axis 1 of 'x' [2, 3] (length 3)");
    TT_EXPECT_ERROR(tt_slice(x, 1, 2, 1), "range [2, 1) is empty");
    TT_EXPECT_ERROR(tt_slice(x, 1, 0, 4), "range [0, 4) is empty or out of range");
    TT_EXPECT_ERROR(tt_slice(x, 0, -3, 1), "range [-3, 1) is empty or out of range");
    TT_EXPECT_ERROR(tt_slice(x, 1, 2, -1), "range [2, -1) is empty");
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_split_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 5)), "x");
    tt_tensor *p[3];
    TT_EXPECT_ERROR(tt_split(x, 1, 2, ((int[]){2, 2}), p),
                    "split: sizes sum to 4 but axis 1 of 'x' [2, 5] has length 5");
    TT_EXPECT_ERROR(tt_split(x, 1, 3, ((int[]){5, 0, 0}), p), "piece 1 has size 0");
    TT_EXPECT_ERROR(tt_split(x, 5, 1, ((int[]){5}), p), "split: axis 5 out of range");
    tt_tape_reset();
    tt_free(x);
}
END_TEST

static Suite *shape_suite(void) {
    Suite *s = suite_create("shape");
    TCase *tc = tcase_create("shape");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_reshape_grad);
    tcase_add_test(tc, test_transpose_grad);
    tcase_add_test(tc, test_concat_grad);
    tcase_add_test(tc, test_slice_grad);
    tcase_add_test(tc, test_split_grad);
    tcase_add_test(tc, test_reshape_is_view);
    tcase_add_test(tc, test_transpose_values);
    tcase_add_test(tc, test_concat_values);
    tcase_add_test(tc, test_concat3_gradient_blocks);
    tcase_add_test(tc, test_slice_values);
    tcase_add_test(tc, test_slice_gradient_scatter);
    tcase_add_test(tc, test_split_values);
    tcase_add_test(tc, test_int32_support);
    tcase_add_test(tc, test_tape_names);
    tcase_add_test(tc, test_reshape_errors);
    tcase_add_test(tc, test_transpose_errors);
    tcase_add_test(tc, test_concat_errors);
    tcase_add_test(tc, test_slice_errors);
    tcase_add_test(tc, test_split_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(shape_suite)

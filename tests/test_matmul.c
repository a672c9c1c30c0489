/* test_matmul.c - matmul, matmul_nt, matmul_tn: values, gradients, batching, errors.
 *
 * The gradient checks use the default tolerances: a product is bilinear, so the central
 * difference has no truncation error at all, and with K <= 8 and entries in [-1, 1] the
 * rounding noise of the float forward (~1e-7 per output, see gradcheck.h) stays far
 * below atol = 1e-4. */
#include "tt_test.h"

#include <math.h>

typedef tt_tensor *(*mm_fn)(tt_tensor *, tt_tensor *, tt_src);
typedef struct mm_op {
    mm_fn fn;
} mm_op;
static mm_op MM = {tt_matmul_}, MM_NT = {tt_matmul_nt_}, MM_TN = {tt_matmul_tn_};

static tt_tensor *f_matmul(tt_tensor *const *in, void *user) {
    return ((mm_op *)user)->fn(in[0], in[1], TT_SRC);
}
/* the same tensor on both sides: x @ x^T, x^T @ x */
static tt_tensor *f_self(tt_tensor *const *in, void *user) {
    return ((mm_op *)user)->fn(in[0], in[0], TT_SRC);
}

/* gradcheck + 1.01 mutation of `op` for a of shape sa and b of shape sb */
static void gradcheck_shapes(const char *op, mm_op *fn, int nda, const int *sa, int ndb,
                             const int *sb) {
    tt_tensor *a = tt_test_param(nda, sa, -1.0f, 1.0f);
    tt_tensor *b = tt_test_param(ndb, sb, -1.0f, 1.0f);
    tt_tensor *in[2] = {a, b};
    tt_test_gradcheck(op, f_matmul, (void *)fn, 2, in, NULL);
    tt_free(a);
    tt_free(b);
}

/* ---- values ------------------------------------------------------------------------------ */

/* a [2,3] = [[1,2,3],[4,5,6]], b [3,2] = [[7,8],[9,10],[11,12]] */
static const float A23[] = {1, 2, 3, 4, 5, 6};
static const float B32[] = {7, 8, 9, 10, 11, 12};
/* a @ b = [[1*7+2*9+3*11, 1*8+2*10+3*12], [4*7+5*9+6*11, 4*8+5*10+6*12]] */
static const float AB[] = {58, 64, 139, 154};

START_TEST(test_matmul_values_2d) {
    tt_tensor *a = tt_from_data(TT_SHAPE(2, 3), A23);
    tt_tensor *b = tt_from_data(TT_SHAPE(3, 2), B32);
    tt_tensor *c = tt_matmul(a, b);
    ck_assert_int_eq(c->ndim, 2);
    ck_assert_int_eq(c->shape[0], 2);
    ck_assert_int_eq(c->shape[1], 2);
    ck_assert_float_eq(tt_test_maxdiff(c->data, AB, 4), 0.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
}
END_TEST

START_TEST(test_matmul_nt_tn_values) {
    /* b^T stored [2,3] = [[7,9,11],[8,10,12]]: a @ (b^T)^T = a @ b */
    tt_tensor *a = tt_from_data(TT_SHAPE(2, 3), A23);
    tt_tensor *bt = tt_from_data(TT_SHAPE(2, 3), (float[]){7, 9, 11, 8, 10, 12});
    tt_tensor *c = tt_matmul_nt(a, bt);
    ck_assert_int_eq(c->shape[0], 2);
    ck_assert_int_eq(c->shape[1], 2);
    ck_assert_float_eq(tt_test_maxdiff(c->data, AB, 4), 0.0f);
    /* a^T stored [3,2] = [[1,4],[2,5],[3,6]]: (a^T)^T @ b = a @ b */
    tt_tensor *at = tt_from_data(TT_SHAPE(3, 2), (float[]){1, 4, 2, 5, 3, 6});
    tt_tensor *b = tt_from_data(TT_SHAPE(3, 2), B32);
    tt_tensor *d = tt_matmul_tn(at, b);
    ck_assert_int_eq(d->shape[0], 2);
    ck_assert_int_eq(d->shape[1], 2);
    ck_assert_float_eq(tt_test_maxdiff(d->data, AB, 4), 0.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(bt);
    tt_free(at);
    tt_free(b);
}
END_TEST

START_TEST(test_matmul_batched_and_flattened_values) {
    /* batch 0: a @ b as above; batch 1: identity @ b' = b' */
    tt_tensor *a = tt_from_data(TT_SHAPE(2, 2, 3), (float[]){1, 2, 3, 4, 5, 6, 1, 0, 0, 0, 1, 0});
    tt_tensor *b = tt_from_data(TT_SHAPE(2, 3, 2),
                                (float[]){7, 8, 9, 10, 11, 12, -1, -2, -3, -4, -5, -6});
    tt_tensor *c = tt_matmul(a, b);
    ck_assert_int_eq(c->ndim, 3);
    ck_assert_int_eq(c->shape[0], 2);
    float want[] = {58, 64, 139, 154, -1, -2, -3, -4};
    ck_assert_float_eq(tt_test_maxdiff(c->data, want, 8), 0.0f);
    /* a [2, 2, 3] @ w [3, 2] shares w: the leading axes are flattened, shape kept */
    tt_tensor *w = tt_from_data(TT_SHAPE(3, 2), B32);
    tt_tensor *e = tt_matmul(a, w);
    ck_assert_int_eq(e->ndim, 3);
    ck_assert_int_eq(e->shape[0], 2);
    ck_assert_int_eq(e->shape[1], 2);
    ck_assert_int_eq(e->shape[2], 2);
    float want_e[] = {58, 64, 139, 154, 7, 8, 9, 10};
    ck_assert_float_eq(tt_test_maxdiff(e->data, want_e, 8), 0.0f);
    /* a 1-D a is one row: [3] @ [3, 2] -> [2] */
    tt_tensor *v = tt_from_data(TT_SHAPE(3), (float[]){1, 2, 3});
    tt_tensor *f = tt_matmul(v, w);
    ck_assert_int_eq(f->ndim, 1);
    ck_assert_int_eq(f->shape[0], 2);
    ck_assert_float_eq(tt_test_maxdiff(f->data, AB, 2), 0.0f);
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
    tt_free(w);
    tt_free(v);
}
END_TEST

/* Larger products go through the packed kernels: compare values and all six gradient
 * formulas with a double-precision reference (relative 1e-5 of the sum of |terms|, far
 * above float rounding for K <= 200 and far below any wrong term). */
static double ref_dot(const float *x, size_t sx, const float *y, size_t sy, int K,
                      double *abs_sum) {
    double s = 0.0, a = 0.0;
    for (int k = 0; k < K; k++) {
        double t = (double)x[k * sx] * y[k * sy];
        s += t;
        a += fabs(t);
    }
    *abs_sum = a;
    return s;
}

static void check_large(const char *op, mm_op *fn, bool ta, bool tb) {
    enum { NB = 3, M = 37, N = 45, K = 53 };
    int sa[3] = {NB, ta ? K : M, ta ? M : K}, sb[3] = {NB, tb ? N : K, tb ? K : N};
    tt_tensor *a = tt_test_param(3, sa, -1.0f, 1.0f), *b = tt_test_param(3, sb, -1.0f, 1.0f);
    tt_tensor *c = fn->fn(a, b, TT_SRC);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(NB, M, N), -1.0f, 1.0f);
    tt_backward_seed(c, seed->data);
    const float *G = seed->data;
    for (int p = 0; p < NB; p++) {
        const float *A = a->data + (size_t)p * M * K, *B = b->data + (size_t)p * K * N;
        const float *g = G + (size_t)p * M * N;
        /* element (i, k) of op(A) and (k, j) of op(B) */
        size_t a_ik_i = ta ? 1 : K, a_ik_k = ta ? M : 1;
        size_t b_kj_k = tb ? 1 : N, b_kj_j = tb ? K : 1;
        double abs_s, s;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                s = ref_dot(A + i * a_ik_i, a_ik_k, B + j * b_kj_j, b_kj_k, K, &abs_s);
                double got = c->data[(size_t)p * M * N + i * N + j];
                ck_assert_msg(fabs(got - s) <= 1e-5 * abs_s + 1e-30, "%s value [%d,%d,%d]", op,
                              p, i, j);
            }
        /* d op(A)[i][k] = sum_j G[i][j] op(B)[k][j] */
        for (int i = 0; i < M; i++)
            for (int k = 0; k < K; k++) {
                s = ref_dot(g + i * N, 1, B + k * b_kj_k, b_kj_j, N, &abs_s);
                double got = a->grad[(size_t)p * M * K + i * a_ik_i + k * a_ik_k];
                ck_assert_msg(fabs(got - s) <= 1e-5 * abs_s + 1e-30, "%s dA [%d,%d,%d]", op, p,
                              i, k);
            }
        /* d op(B)[k][j] = sum_i op(A)[i][k] G[i][j] */
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++) {
                s = ref_dot(A + k * a_ik_k, a_ik_i, g + j, N, M, &abs_s);
                double got = b->grad[(size_t)p * K * N + k * b_kj_k + j * b_kj_j];
                ck_assert_msg(fabs(got - s) <= 1e-5 * abs_s + 1e-30, "%s dB [%d,%d,%d]", op, p,
                              k, j);
            }
    }
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
    tt_free(seed);
}

START_TEST(test_matmul_large_values_and_grads_match_reference) {
    check_large("matmul", &MM, false, false);
    check_large("matmul_nt", &MM_NT, false, true);
    check_large("matmul_tn", &MM_TN, true, false);
}
END_TEST

/* ---- gradients ------------------------------------------------------------------------------ */

START_TEST(test_matmul_grad_2d) {
    gradcheck_shapes("matmul", &MM, TT_SHAPE(4, 3), TT_SHAPE(3, 5));
    gradcheck_shapes("matmul", &MM, TT_SHAPE(1, 7), TT_SHAPE(7, 1)); /* a dot product */
}
END_TEST

START_TEST(test_matmul_grad_batched) {
    gradcheck_shapes("matmul", &MM, TT_SHAPE(3, 4, 5), TT_SHAPE(3, 5, 2));
}
END_TEST

START_TEST(test_matmul_grad_leading_dims_flattened) {
    /* [2, 3, 2, 4] @ [4, 3]: 12 rows share the weight, whose gradient sums over them */
    gradcheck_shapes("matmul", &MM, TT_SHAPE(2, 3, 2, 4), TT_SHAPE(4, 3));
    gradcheck_shapes("matmul", &MM, TT_SHAPE(5), TT_SHAPE(5, 3));
}
END_TEST

START_TEST(test_matmul_nt_grad) {
    gradcheck_shapes("matmul_nt", &MM_NT, TT_SHAPE(4, 6), TT_SHAPE(3, 6));
    gradcheck_shapes("matmul_nt", &MM_NT, TT_SHAPE(2, 3, 4), TT_SHAPE(5, 4));
    gradcheck_shapes("matmul_nt", &MM_NT, TT_SHAPE(2, 3, 4), TT_SHAPE(2, 5, 4));
}
END_TEST

START_TEST(test_matmul_tn_grad) {
    gradcheck_shapes("matmul_tn", &MM_TN, TT_SHAPE(6, 4), TT_SHAPE(6, 3));
    gradcheck_shapes("matmul_tn", &MM_TN, TT_SHAPE(2, 5, 3), TT_SHAPE(2, 5, 4));
}
END_TEST

START_TEST(test_matmul_grad_same_tensor_both_sides) {
    /* x @ x^T and x^T @ x: both contributions land in x.grad (+=) */
    tt_tensor *x = tt_test_param(TT_SHAPE(3, 4), -1.0f, 1.0f);
    tt_tensor *in[1] = {x};
    tt_test_gradcheck("matmul_nt", f_self, (void *)&MM_NT, 1, in, NULL);
    tt_test_gradcheck("matmul_tn", f_self, (void *)&MM_TN, 1, in, NULL);
    tt_tensor *sq = tt_test_param(TT_SHAPE(4, 4), -1.0f, 1.0f);
    in[0] = sq;
    tt_test_gradcheck("matmul", f_self, (void *)&MM, 1, in, NULL);
    tt_free(x);
    tt_free(sq);
}
END_TEST

START_TEST(test_matmul_grad_accumulates_and_skips_constants) {
    /* y = sum(x @ w) + sum(x @ w): x.grad is twice that of one product; w is a constant
     * (requires_grad false) and gets no gradient buffer. d sum(x@w)/dx[i][k] = sum_j w[k][j] */
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(2, 3), A23), true);
    tt_tensor *w = tt_from_data(TT_SHAPE(3, 2), B32);
    tt_tensor *y = tt_add(tt_sum_all(tt_matmul(x, w)), tt_sum_all(tt_matmul(x, w)));
    tt_backward(y);
    float want[] = {2 * 15, 2 * 19, 2 * 23, 2 * 15, 2 * 19, 2 * 23};
    ck_assert_float_eq(tt_test_maxdiff(x->grad, want, 6), 0.0f);
    ck_assert_ptr_null(w->grad);
    /* a second backward keeps accumulating into the leaf */
    tt_backward(y);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(x->grad[i], 2.0f * want[i]);
    tt_tape_reset();
    tt_free(x);
    tt_free(w);
}
END_TEST

START_TEST(test_matmul_empty_inner_dimension) {
    /* K = 0: the product is all zeros, the gradients are empty */
    tt_tensor *a = tt_set_requires_grad(tt_zeros(TT_SHAPE(3, 0)), true);
    tt_tensor *b = tt_set_requires_grad(tt_zeros(TT_SHAPE(0, 2)), true);
    tt_tensor *c = tt_matmul(a, b);
    ck_assert_int_eq(c->shape[0], 3);
    ck_assert_int_eq(c->shape[1], 2);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(c->data[i], 0.0f);
    tt_backward(tt_sum_all(c));
    tt_tape_reset();
    tt_free(a);
    tt_free(b);
}
END_TEST

/* ---- errors ------------------------------------------------------------------------------------ */

START_TEST(test_matmul_shape_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(4, 3)), "x");
    tt_tensor *w = tt_set_name(tt_zeros(TT_SHAPE(5, 2)), "w");
    TT_EXPECT_ERROR(tt_matmul(x, w), "matmul: inner dimensions differ: 'x' [4, 3] @ 'w' [5, 2]");
    TT_EXPECT_ERROR(tt_matmul(x, w), "test_matmul.c:");
    TT_EXPECT_ERROR(tt_matmul_nt(x, w),
                    "matmul_nt: inner dimensions differ: 'x' [4, 3] @ 'w' [5, 2]^T");
    TT_EXPECT_ERROR(tt_matmul_tn(x, w),
                    "matmul_tn: inner dimensions differ: 'x' [4, 3]^T @ 'w' [5, 2]");

    tt_tensor *q = tt_set_name(tt_zeros(TT_SHAPE(2, 4, 3)), "q");
    tt_tensor *k = tt_set_name(tt_zeros(TT_SHAPE(3, 5, 3)), "k");
    TT_EXPECT_ERROR(tt_matmul_nt(q, k),
                    "matmul_nt: batch sizes differ: 'q' [2, 4, 3] @ 'k' [3, 5, 3]^T (2 vs 3)");
    TT_EXPECT_ERROR(tt_matmul(x, k), "matmul: batched b needs a 3-D a [B, M, K]; got 'x' [4, 3]");
    tt_tensor *v = tt_set_name(tt_zeros(TT_SHAPE(3)), "v");
    TT_EXPECT_ERROR(tt_matmul(x, v), "matmul: expects a [..., M, K] and a 2-D b");
    tt_tensor *t4 = tt_set_name(tt_zeros(TT_SHAPE(2, 2, 4, 3)), "t4");
    TT_EXPECT_ERROR(tt_matmul_tn(t4, t4), "matmul_tn: expects a [K, M] and b [K, N]");
    TT_EXPECT_ERROR(tt_matmul_tn(x, q), "'x' [4, 3]^T @ 'q' [2, 4, 3]");
    tt_tensor *ids = tt_from_ids(TT_SHAPE(3, 2), (int32_t[]){0, 1, 2, 3, 4, 5});
    TT_EXPECT_ERROR(tt_matmul(x, ids), "must be float32");
    tt_tape_reset();
    tt_free(x);
    tt_free(w);
    tt_free(q);
    tt_free(k);
    tt_free(v);
    tt_free(t4);
    tt_free(ids);
}
END_TEST

START_TEST(test_matmul_tape_op_names) {
    tt_tensor *a = tt_test_param(TT_SHAPE(2, 2), -1.0f, 1.0f);
    tt_tape_reset();
    tt_matmul(a, a);
    tt_matmul_nt(a, a);
    tt_matmul_tn(a, a);
    ck_assert_int_eq(tt_tape_len(), 3);
    ck_assert_str_eq(tt_tape_node(0)->op, "matmul");
    ck_assert_str_eq(tt_tape_node(1)->op, "matmul_nt");
    ck_assert_str_eq(tt_tape_node(2)->op, "matmul_tn");
    tt_tape_reset();
    tt_free(a);
}
END_TEST

static Suite *matmul_suite(void) {
    Suite *s = suite_create("matmul");
    TCase *tc = tcase_create("matmul");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_matmul_values_2d);
    tcase_add_test(tc, test_matmul_nt_tn_values);
    tcase_add_test(tc, test_matmul_batched_and_flattened_values);
    tcase_add_test(tc, test_matmul_large_values_and_grads_match_reference);
    tcase_add_test(tc, test_matmul_grad_2d);
    tcase_add_test(tc, test_matmul_grad_batched);
    tcase_add_test(tc, test_matmul_grad_leading_dims_flattened);
    tcase_add_test(tc, test_matmul_nt_grad);
    tcase_add_test(tc, test_matmul_tn_grad);
    tcase_add_test(tc, test_matmul_grad_same_tensor_both_sides);
    tcase_add_test(tc, test_matmul_grad_accumulates_and_skips_constants);
    tcase_add_test(tc, test_matmul_empty_inner_dimension);
    tcase_add_test(tc, test_matmul_shape_errors);
    tcase_add_test(tc, test_matmul_tape_op_names);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(matmul_suite)

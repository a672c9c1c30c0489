/* test_experts.c - tt_experts_relu and tt_experts_swiglu, an MoE layer's experts as one
 * op: their gradients against finite differences, their bits against the ops they
 * replace (index_select, then affine_relu + affine, or affine w3, affine w1, silu, mul,
 * affine w2, per expert) on one and on two threads, their errors.
 */
#include "tt_test.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { MAX_E = 8 };

/* n experts; inputs in[] = x, w1[0..n), w2[0..n), then b1[0..n), b2[0..n) if bias;
 * SwiGLU: x, w1, w2, w3, then b1, b2, b3 (n each) */
typedef struct ex_case {
    int n;
    bool bias, swiglu;
    const int *off;
    tt_tensor *idx;
} ex_case;

/* the arrays of in[] (layout above): w[0..3) = w1, w2, w3, b[0..3) = b1, b2, b3 (NULL if
 * absent) */
static void case_args(const ex_case *c, tt_tensor *const *in, tt_tensor *const *w[3],
                      tt_tensor *const *b[3]) {
    const int n = c->n, nw = c->swiglu ? 3 : 2;
    for (int k = 0; k < 3; k++) {
        w[k] = k < nw ? in + 1 + k * n : NULL;
        b[k] = k < nw && c->bias ? in + 1 + (nw + k) * n : NULL;
    }
}

static tt_tensor *f_experts(tt_tensor *const *in, void *user) {
    const ex_case *c = user;
    tt_tensor *const *w[3], *const *b[3];
    case_args(c, in, w, b);
    if (c->swiglu)
        return tt_experts_swiglu(in[0], c->idx, c->n, c->off, w[0], b[0], w[1], b[1], w[2], b[2]);
    return tt_experts_relu(in[0], c->idx, c->n, c->off, w[0], b[0], w[1], b[1]);
}

/* the experts' arguments, op by op: per expert index_select, then affine_relu + affine
 * (w3 NULL), or affine w3, affine w1, silu, mul, affine w2 (tt_expert_forward's order);
 * the outputs stacked */
static tt_tensor *by_ops(tt_tensor *x, tt_tensor *idx, int n, const int *off,
                         tt_tensor *const *w1, tt_tensor *const *b1, tt_tensor *const *w2,
                         tt_tensor *const *b2, tt_tensor *const *w3, tt_tensor *const *b3) {
    tt_tensor *ys[MAX_E];
    int m = 0;
    for (int e = 0; e < n; e++) {
        const int rows = off[e + 1] - off[e];
        if (rows == 0) continue;
        tt_tensor *ti = tt_tmp(TT_I32, TT_SHAPE(rows));
        memcpy(ti->data, tt_ids(idx) + off[e], (size_t)rows * sizeof(int32_t));
        tt_tensor *xe = tt_index_select(x, ti), *h;
        if (w3) {
            tt_tensor *g = tt_affine(xe, w3[e], b3 ? b3[e] : NULL);
            tt_tensor *a = tt_silu(tt_affine(xe, w1[e], b1 ? b1[e] : NULL));
            h = tt_mul(a, g);
        } else {
            h = tt_affine_relu(xe, w1[e], b1 ? b1[e] : NULL);
        }
        ys[m++] = tt_affine(h, w2[e], b2 ? b2[e] : NULL);
    }
    return tt_concat(m, ys, 0);
}

static tt_tensor *f_composed(tt_tensor *const *in, void *user) {
    const ex_case *c = user;
    tt_tensor *const *w[3], *const *b[3];
    case_args(c, in, w, b);
    return by_ops(in[0], c->idx, c->n, c->off, w[0], b[0], w[1], b[1], w[2], b[2]);
}

/* x [N, dim] and n experts' weights (uniform in [-s, s]) in the layout of ex_case: 1 + 4n
 * tensors into in[], 1 + 6n with swiglu */
static int make_inputs_kind(tt_tensor **in, int n, int N, int dim, int hid, float s,
                            bool swiglu) {
    int k = 0;
    in[k++] = tt_set_name(tt_test_param(TT_SHAPE(N, dim), -1, 1), "x");
    for (int e = 0; e < n; e++)
        in[k++] = tt_set_name(tt_test_param(TT_SHAPE(hid, dim), -s, s), "w1.%d", e);
    for (int e = 0; e < n; e++)
        in[k++] = tt_set_name(tt_test_param(TT_SHAPE(dim, hid), -s, s), "w2.%d", e);
    for (int e = 0; swiglu && e < n; e++)
        in[k++] = tt_set_name(tt_test_param(TT_SHAPE(hid, dim), -s, s), "w3.%d", e);
    for (int e = 0; e < n; e++)
        in[k++] = tt_set_name(tt_test_param(TT_SHAPE(hid), -s, s), "b1.%d", e);
    for (int e = 0; e < n; e++)
        in[k++] = tt_set_name(tt_test_param(TT_SHAPE(dim), -s, s), "b2.%d", e);
    for (int e = 0; swiglu && e < n; e++)
        in[k++] = tt_set_name(tt_test_param(TT_SHAPE(hid), -s, s), "b3.%d", e);
    return k;
}

static int make_inputs(tt_tensor **in, int n, int N, int dim, int hid, float s) {
    return make_inputs_kind(in, n, N, dim, hid, s, false);
}

static void free_inputs(tt_tensor **in, int k) {
    for (int i = 0; i < k; i++) tt_free(in[i]);
}

/* gradcheck + mutation: 3 experts (the second with no rows), token 1 twice in the third
 * (its gradient rows accumulate), inputs whose pre-activations stay >= 0.05 from the
 * ReLU's kink (a step h = 1e-2 moves one by at most ~0.04 here) */
static void gradcheck_case(bool bias) {
    static const int off[4] = {0, 3, 3, 7};
    const int32_t ids[7] = {0, 2, 4, 1, 3, 1, 4};
    tt_tensor *idx = tt_from_ids(TT_SHAPE(7), ids);
    ex_case c = {3, bias, false, off, idx};
    for (uint64_t seed = 1;; seed++) {
        ck_assert_uint_lt(seed, 500);
        tt_manual_seed(seed);
        tt_tensor *in[2 + 4 * MAX_E];
        int k = make_inputs(in, 3, 5, 4, 6, 1.0f);
        bool ok = true;
        for (int e = 0; e < 3 && ok; e++) { /* fc1's pre-activations of the expert's rows */
            for (int r = off[e]; r < off[e + 1]; r++)
                for (int j = 0; j < 6; j++) {
                    float pre = bias ? in[1 + 6 + e]->data[j] : 0.0f;
                    for (int d = 0; d < 4; d++)
                        pre += in[0]->data[ids[r] * 4 + d] * in[1 + e]->data[j * 4 + d];
                    ok = ok && fabsf(pre) >= 0.05f;
                }
        }
        const int n_in = bias ? k : 1 + 2 * 3;
        if (ok) tt_test_gradcheck("experts_relu", f_experts, &c, n_in, in, NULL);
        free_inputs(in, k);
        if (ok) break;
    }
    tt_free(idx);
}

START_TEST(test_experts_grad) {
    gradcheck_case(true);
    gradcheck_case(false);
}
END_TEST

/* SwiGLU: smooth, so any inputs do; the same routing as gradcheck_case (an idle expert,
 * a token twice in one expert) */
START_TEST(test_experts_swiglu_grad) {
    static const int off[4] = {0, 3, 3, 7};
    const int32_t ids[7] = {0, 2, 4, 1, 3, 1, 4};
    tt_tensor *idx = tt_from_ids(TT_SHAPE(7), ids);
    for (int bias = 1; bias >= 0; bias--) {
        tt_manual_seed(3 + (uint64_t)bias);
        tt_tensor *in[2 + 6 * MAX_E];
        const int k = make_inputs_kind(in, 3, 5, 4, 6, 1.0f, true);
        ex_case c = {3, bias, true, off, idx};
        tt_test_gradcheck("experts_swiglu", f_experts, &c, bias ? k : 1 + 3 * 3, in, NULL);
        free_inputs(in, k);
    }
    tt_free(idx);
}
END_TEST

/* y and every gradient (x, then each weight) after one backward of sum(seed * f(...)) on
 * `threads` threads: malloc'd copies, y first. The gradients start as none (as a training
 * step's do), so that each first writer gets a buffer still holding the last run's
 * values and must overwrite it. */
static float **run(tt_gradcheck_fn f, void *user, tt_tensor **in, int n_in, int threads,
                   size_t *y_size) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    for (int i = 0; i < n_in; i++) tt_grad_to_none(in[i]);
    tt_tensor *y = f(in, user);
    float *seed = malloc(y->size * sizeof(float));
    for (size_t i = 0; i < y->size; i++) seed[i] = (float)((int)(i % 7) - 3) * 0.25f;
    tt_backward_seed(y, seed);
    free(seed);
    float **out = malloc((size_t)(n_in + 1) * sizeof *out);
    out[0] = malloc(y->size * sizeof(float));
    memcpy(out[0], y->data, y->size * sizeof(float));
    *y_size = y->size;
    for (int i = 0; i < n_in; i++) {
        out[1 + i] = malloc(in[i]->size * sizeof(float));
        memcpy(out[1 + i], in[i]->grad, in[i]->size * sizeof(float));
    }
    tt_tape_reset();
    return out;
}

static void free_run(float **r, int n_in) {
    for (int i = 0; i <= n_in; i++) free(r[i]);
    free(r);
}

/* Bit for bit the ops it replaces, on one thread and on two (where 4 experts of 72 rows
 * x 64 x 128 are enough work for one expert per thread); each token in three experts, so
 * that the order in which dx sums its rows shows in the bits (two terms would commute). */
static void matches_ops_case(bool swiglu) {
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
#endif
    enum { N = 96, DIM = 64, HID = 128, E = 4 };
    tt_manual_seed(7);
    int32_t ids[3 * N];
    int off[E + 1] = {0}, T = 0;
    for (int e = 0; e < E; e++) { /* token t goes to the three experts other than t % 4 */
        for (int t = 0; t < N; t++)
            if (t % E != e) ids[T++] = t;
        off[e + 1] = T;
    }
    tt_tensor *idx = tt_from_ids(TT_SHAPE(T), ids);
    tt_tensor *in[2 + 6 * MAX_E];
    const int k = make_inputs_kind(in, E, N, DIM, HID, 0.2f, swiglu);
    ex_case c = {E, true, swiglu, off, idx};
    size_t ny;
    /* (two threads first: a row the op failed to write would otherwise still hold an
     * earlier run's equal value, the arena reusing the same memory) */
    float **two = run(f_experts, &c, in, k, 2, &ny);
    float **ref = run(f_composed, &c, in, k, 1, &ny);
    for (int threads = 2; threads >= 1; threads--) {
        float **got = threads == 2 ? two : run(f_experts, &c, in, k, threads, &ny);
        ck_assert_msg(memcmp(got[0], ref[0], ny * sizeof(float)) == 0, "y differs, %d threads",
                      threads);
        for (int i = 0; i < k; i++)
            ck_assert_msg(memcmp(got[1 + i], ref[1 + i], in[i]->size * sizeof(float)) == 0,
                          "gradient of '%s' differs from the ops', %d threads", in[i]->name,
                          threads);
        free_run(got, k);
    }
    free_run(ref, k);
    free_inputs(in, k);
    tt_free(idx);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}

START_TEST(test_experts_matches_ops) {
    matches_ops_case(false);
}
END_TEST

START_TEST(test_experts_swiglu_matches_ops) {
    matches_ops_case(true);
}
END_TEST

/* One tensor passed more than once: A is the w1 of experts 0 and 2 and the w2 of expert
 * 1 (dim = hidden), E both weights of expert 3, p the b1 of experts 0 and 1; SwiGLU
 * also: B the w3 of expert 0 (and w1 of 1), A the w3 of expert 2 (its w1 too), E all
 * three of expert 3's, q and p the b3. Their gradients sum every use, in the order and
 * with the bits of the ops; large enough (4 experts x 64 rows x 64 x 64) that two threads
 * would take the experts one each, were it not for the repeats. */
typedef struct shared_case {
    tt_tensor *idx;
    const int *off;
    bool swiglu;
} shared_case;

/* in[] = x, A, B, C, D, E, p, q, r, s2 (the b2 of all four experts) */
static void shared_args(tt_tensor *const *in, tt_tensor **w1, tt_tensor **w2, tt_tensor **b1,
                        tt_tensor **b2, tt_tensor **w3, tt_tensor **b3) {
    tt_tensor *A = in[1], *B = in[2], *C = in[3], *D = in[4], *E = in[5];
    w1[0] = A, w1[1] = B, w1[2] = A, w1[3] = E;
    w2[0] = C, w2[1] = A, w2[2] = D, w2[3] = E;
    w3[0] = B, w3[1] = C, w3[2] = A, w3[3] = E;
    b1[0] = in[6], b1[1] = in[6], b1[2] = in[7], b1[3] = in[8];
    b3[0] = in[7], b3[1] = in[7], b3[2] = in[6], b3[3] = in[6];
    for (int e = 0; e < 4; e++) b2[e] = in[9];
}

static tt_tensor *f_shared(tt_tensor *const *in, void *user) {
    const shared_case *c = user;
    tt_tensor *w1[4], *w2[4], *b1[4], *b2[4], *w3[4], *b3[4];
    shared_args(in, w1, w2, b1, b2, w3, b3);
    if (c->swiglu) return tt_experts_swiglu(in[0], c->idx, 4, c->off, w1, b1, w2, b2, w3, b3);
    return tt_experts_relu(in[0], c->idx, 4, c->off, w1, b1, w2, b2);
}

static tt_tensor *f_shared_composed(tt_tensor *const *in, void *user) {
    const shared_case *c = user;
    tt_tensor *w1[4], *w2[4], *b1[4], *b2[4], *w3[4], *b3[4];
    shared_args(in, w1, w2, b1, b2, w3, b3);
    return by_ops(in[0], c->idx, 4, c->off, w1, b1, w2, b2, c->swiglu ? w3 : NULL,
                  c->swiglu ? b3 : NULL);
}

static void shared_weights_case(bool swiglu) {
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
#endif
    enum { N = 128, D = 64 };
    tt_manual_seed(11);
    int32_t ids[4 * 64];
    const int off[5] = {0, 64, 128, 192, 256};
    for (int r = 0; r < 256; r++) ids[r] = (r * 37 + r / 64) % N;
    tt_tensor *idx = tt_from_ids(TT_SHAPE(256), ids);
    tt_tensor *in[10];
    in[0] = tt_set_name(tt_test_param(TT_SHAPE(N, D), -1, 1), "x");
    for (int i = 1; i <= 5; i++)
        in[i] = tt_set_name(tt_test_param(TT_SHAPE(D, D), -0.2f, 0.2f), "W%d", i);
    for (int i = 6; i <= 9; i++)
        in[i] = tt_set_name(tt_test_param(TT_SHAPE(D), -0.2f, 0.2f), "b%d", i);
    shared_case c = {idx, off, swiglu};
    size_t ny;
    float **ref = run(f_shared_composed, &c, in, 10, 1, &ny);
    for (int rep = 0; rep < 9; rep++) { /* 1 thread, then 2 threads 8 times (were two
                                         * experts to write one buffer at once, the
                                         * outcome would depend on their timing) */
        const int threads = rep ? 2 : 1;
        float **got = run(f_shared, &c, in, 10, threads, &ny);
        ck_assert_msg(memcmp(got[0], ref[0], ny * sizeof(float)) == 0, "y differs");
        for (int i = 0; i < 10; i++) /* each weight's uses summed in the ops' order */
            ck_assert_msg(memcmp(got[1 + i], ref[1 + i], in[i]->size * sizeof(float)) == 0,
                          "gradient of '%s' differs from the ops', %d threads", in[i]->name,
                          threads);
        free_run(got, 10);
    }
    free_run(ref, 10);
    for (int i = 0; i < 10; i++) tt_free(in[i]);
    tt_free(idx);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}

START_TEST(test_experts_shared_weights) {
    shared_weights_case(false);
    shared_weights_case(true);
}
END_TEST

/* No rows at all (every expert idle): an empty output, and a backward that adds nothing */
START_TEST(test_experts_no_rows) {
    tt_tensor *in[2 + 6 * MAX_E];
    const int k = make_inputs(in, 2, 4, 3, 5, 1.0f);
    tt_tensor *idx = tt_from_ids(TT_SHAPE(0), NULL);
    const int off[3] = {0, 0, 0};
    tt_tensor *y = tt_experts_relu(in[0], idx, 2, off, in + 1, in + 5, in + 3, in + 7);
    ck_assert_int_eq(y->ndim, 2);
    ck_assert_int_eq(y->shape[0], 0);
    ck_assert_int_eq(y->shape[1], 3);
    tt_backward(tt_add(tt_sum_all(y), tt_sum_all(in[0])));
    for (int i = 0; i < 12; i++) ck_assert_float_eq(in[0]->grad[i], 1.0f);
    for (int i = 1; i < k; i++)
        for (size_t q = 0; in[i]->grad && q < in[i]->size; q++)
            ck_assert_float_eq(in[i]->grad[q], 0.0f);
    tt_tape_reset();
    free_inputs(in, k);
    /* SwiGLU likewise (in[]: x, w1 x2, w2 x2, w3 x2, b1 x2, b2 x2, b3 x2) */
    const int k3 = make_inputs_kind(in, 2, 4, 3, 5, 1.0f, true);
    y = tt_experts_swiglu(in[0], idx, 2, off, in + 1, in + 7, in + 3, in + 9, in + 5, in + 11);
    ck_assert_int_eq(y->shape[0], 0);
    ck_assert_int_eq(y->shape[1], 3);
    tt_backward(tt_add(tt_sum_all(y), tt_sum_all(in[0])));
    for (int i = 0; i < 12; i++) ck_assert_float_eq(in[0]->grad[i], 1.0f);
    for (int i = 1; i < k3; i++)
        for (size_t q = 0; in[i]->grad && q < in[i]->size; q++)
            ck_assert_float_eq(in[i]->grad[q], 0.0f);
    tt_tape_reset();
    tt_free(idx);
    free_inputs(in, k3);
}
END_TEST

START_TEST(test_experts_errors) {
    tt_tensor *in[2 + 4 * MAX_E];
    const int k = make_inputs(in, 2, 4, 3, 5, 1.0f);
    tt_tensor *x = in[0], **w1 = in + 1, **w2 = in + 3, **b1 = in + 5, **b2 = in + 7;
    tt_tensor *idx = tt_from_ids(TT_SHAPE(3), (int32_t[]){0, 3, 1});
    tt_tensor *bad = tt_from_ids(TT_SHAPE(3), (int32_t[]){0, 4, 1});
    const int off[3] = {0, 2, 3}, short_off[3] = {0, 2, 2};
    tt_tensor *w1_bad[2] = {w1[0], w2[1]};
    TT_EXPECT_ERROR(tt_experts_relu(x, idx, 2, off, w1_bad, b1, w2, b2),
                    "experts_relu: expert 1: w1 'w2.1' [3, 5] must be [5, 3]");
    TT_EXPECT_ERROR(tt_experts_relu(x, bad, 2, off, w1, b1, w2, b2),
                    "index 4 at position [1] of");
    TT_EXPECT_ERROR(tt_experts_relu(x, bad, 2, off, w1, b1, w2, b2), "for 'x' [4, 3]");
    TT_EXPECT_ERROR(tt_experts_relu(x, idx, 2, short_off, w1, b1, w2, b2),
                    "off[2] = 2 must be the length of idx");
    TT_EXPECT_ERROR(tt_experts_relu(x, idx, 2, off, w1, b2, w2, b2),
                    "expert 0: b1 'b2.0' [3] must be [5]");
    /* SwiGLU: w3 and b3 are checked like w1 and b1 */
    TT_EXPECT_ERROR(tt_experts_swiglu(x, idx, 2, off, w1, b1, w2, b2, w2, b1),
                    "experts_swiglu: expert 0: w3 'w2.0' [3, 5] must be [5, 3]");
    TT_EXPECT_ERROR(tt_experts_swiglu(x, idx, 2, off, w1, b1, w2, b2, w1, b2),
                    "expert 0: b3 'b2.0' [3] must be [5]");
    TT_EXPECT_ERROR(tt_experts_swiglu(x, idx, 2, off, w1, b1, w2, b2, NULL, NULL),
                    "needs n >= 1 experts (got 2), off, w1, w2, w3");
    tt_tape_reset();
    tt_free(idx);
    tt_free(bad);
    free_inputs(in, k);
}
END_TEST

static Suite *experts_suite(void) {
    Suite *s = suite_create("experts");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_experts_grad);
    tcase_add_test(tc, test_experts_swiglu_grad);
    tcase_add_test(tc, test_experts_matches_ops);
    tcase_add_test(tc, test_experts_swiglu_matches_ops);
    tcase_add_test(tc, test_experts_shared_weights);
    tcase_add_test(tc, test_experts_no_rows);
    tcase_add_test(tc, test_experts_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(experts_suite)

/* test_norm.c - layer_norm and rms_norm over the last axis: values, gradients of x, w, b
 * (+ mutation), with and without the affine parameters, errors for bad shapes. */
#include "tt_test.h"

#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* in[0] = x, then w and b if the case has them */
typedef struct norm_case {
    bool rms, has_w, has_b;
    float eps;
} norm_case;

static tt_tensor *f_norm(tt_tensor *const *in, void *user) {
    const norm_case *c = user;
    int k = 1;
    tt_tensor *w = c->has_w ? in[k++] : NULL;
    tt_tensor *b = c->has_b ? in[k++] : NULL;
    return c->rms ? tt_rms_norm(in[0], w, c->eps) : tt_layer_norm(in[0], w, b, c->eps);
}

/* Finite-difference step h = 5e-3 instead of the default 1e-2. The truncation error
 * h^2/6 |f'''| of a normalisation grows like rstd^3, and a row of 4-6 random values can
 * have a small variance: over seeds, the worst error ratio at h = 1e-2 reached 0.7 (and
 * 1.7 at h = 2e-2, four times more, as h^2 predicts), at h = 5e-3 it stayed <= 0.1.
 * Rounding noise at 5e-3 is ~1e-5, still far below atol + rtol |g|; the 1% mutation
 * still fails by ~5x because it does not depend on h. */
static tt_gradcheck_opts norm_opts(void) {
    tt_gradcheck_opts o = tt_gradcheck_defaults();
    o.eps = 5e-3f;
    return o;
}

/* x in [-1, 1] over C = 4..6 columns, w in [0.5, 1.5], b in [-1, 1]. */
static void check_grad(bool rms, bool has_w, bool has_b, int ndim, const int *shape) {
    norm_case c = {rms, has_w, has_b, 1e-5f};
    tt_gradcheck_opts o = norm_opts();
    int C = shape[ndim - 1];
    tt_tensor *in[3];
    int n = 0;
    in[n++] = tt_test_param(ndim, shape, -1.0f, 1.0f);
    if (has_w) in[n++] = tt_test_param(TT_SHAPE(C), 0.5f, 1.5f);
    if (has_b) in[n++] = tt_test_param(TT_SHAPE(C), -1.0f, 1.0f);
    const char *op = rms ? "rms_norm" : "layer_norm";
    printf("%s w %d b %d ndim %d\n", op, has_w, has_b, ndim);
    tt_test_gradcheck(op, f_norm, &c, n, in, &o);
    for (int i = 0; i < n; i++) tt_free(in[i]);
}

START_TEST(test_layer_norm_grad) {
    check_grad(false, true, true, TT_SHAPE(3, 5));
    check_grad(false, true, true, TT_SHAPE(2, 3, 4));
    check_grad(false, false, false, TT_SHAPE(3, 5));
    check_grad(false, true, false, TT_SHAPE(4, 5));
    check_grad(false, false, true, TT_SHAPE(6));
}
END_TEST

START_TEST(test_rms_norm_grad) {
    check_grad(true, true, false, TT_SHAPE(3, 5));
    check_grad(true, true, false, TT_SHAPE(2, 3, 4));
    check_grad(true, false, false, TT_SHAPE(3, 5));
    check_grad(true, false, false, TT_SHAPE(6));
}
END_TEST

/* Only the weight requires grad (x is data): the w path alone must be right. */
START_TEST(test_norm_grad_weight_only) {
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(4, 5), -1, 1);
    tt_tensor *w = tt_test_param(TT_SHAPE(5), 0.5f, 1.5f);
    tt_tensor *b = tt_test_param(TT_SHAPE(5), -1, 1);
    tt_tensor *in[3] = {x, w, b};
    norm_case ln = {false, true, true, 1e-5f}, rn = {true, true, false, 1e-5f};
    tt_gradcheck_opts o = norm_opts();
    tt_test_gradcheck("layer_norm", f_norm, &ln, 3, in, &o);
    tt_test_gradcheck("rms_norm", f_norm, &rn, 2, in, &o);
    tt_free(x);
    tt_free(w);
    tt_free(b);
}
END_TEST

START_TEST(test_layer_norm_values) {
    /* [1, 2, 3, 4]: mean 2.5, biased var 1.25, rstd = 1/sqrt(1.25 + 1e-5) = 0.8944236
     * y = [-1.5, -0.5, 0.5, 1.5] * rstd = [-1.3416354, -0.4472118, 0.4472118, 1.3416354] */
    tt_tensor *x = tt_from_data(TT_SHAPE(2, 4), (float[]){1, 2, 3, 4, 5, 5, 5, 5});
    tt_tensor *y = tt_layer_norm(x, NULL, NULL, 1e-5f);
    /* row 2 is constant: x - mean = 0, so y = 0 (eps keeps rstd finite) */
    float want[] = {-1.3416354f, -0.4472118f, 0.4472118f, 1.3416354f, 0, 0, 0, 0};
    ck_assert_float_le(tt_test_maxdiff(y->data, want, 8), 1e-6f);
    /* with the affine: y * w + b */
    tt_tensor *w = tt_from_data(TT_SHAPE(4), (float[]){1, 2, -1, 0.5f});
    tt_tensor *b = tt_from_data(TT_SHAPE(4), (float[]){0, 1, 0, -3});
    tt_tensor *ya = tt_layer_norm(x, w, b, 1e-5f);
    float wantw[] = {-1.3416354f, -0.8944236f + 1, -0.4472118f, 0.6708177f - 3, 0, 1, 0, -3};
    ck_assert_float_le(tt_test_maxdiff(ya->data, wantw, 8), 1e-6f);
    tt_tape_reset();
    tt_free(x);
    tt_free(w);
    tt_free(b);
}
END_TEST

START_TEST(test_layer_norm_grad_values) {
    /* sum(layer_norm(x) * w + b): db = 1 per row, dw = sum of xhat over rows = 0 here
     * (one row, sum xhat = 0); dx of the sum of a normalised row is 0 (shift invariant
     * and sum(xhat) = 0 is constant) */
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(1, 4), (float[]){1, 2, 3, 4}), true);
    tt_tensor *w = tt_set_requires_grad(tt_ones(TT_SHAPE(4)), true);
    tt_tensor *b = tt_set_requires_grad(tt_zeros(TT_SHAPE(4)), true);
    tt_backward(tt_sum_all(tt_layer_norm(x, w, b, 1e-5f)));
    ck_assert_float_le(tt_test_maxdiff(b->grad, (float[]){1, 1, 1, 1}, 4), 0.0f);
    float xhat[] = {-1.3416354f, -0.4472118f, 0.4472118f, 1.3416354f};
    ck_assert_float_le(tt_test_maxdiff(w->grad, xhat, 4), 1e-6f);
    ck_assert_float_le(tt_test_maxdiff(x->grad, (float[]){0, 0, 0, 0}, 4), 1e-6f);
    tt_tape_reset();
    tt_free(x);
    tt_free(w);
    tt_free(b);
}
END_TEST

START_TEST(test_rms_norm_values) {
    /* [1, 2, 3, 4]: mean(x^2) = 7.5, rstd = 1/sqrt(7.5 + 1e-5) = 0.3651481
     * y = x * rstd = [0.3651481, 0.7302963, 1.0954444, 1.4605926] */
    tt_tensor *x = tt_from_data(TT_SHAPE(4), (float[]){1, 2, 3, 4});
    tt_tensor *y = tt_rms_norm(x, NULL, 1e-5f);
    float want[] = {0.3651481f, 0.7302963f, 1.0954444f, 1.4605926f};
    ck_assert_float_le(tt_test_maxdiff(y->data, want, 4), 1e-6f);
    tt_tensor *w = tt_from_data(TT_SHAPE(4), (float[]){2, 0, -1, 1});
    tt_tensor *yw = tt_rms_norm(x, w, 1e-5f);
    float wantw[] = {0.7302963f, 0, -1.0954444f, 1.4605926f};
    ck_assert_float_le(tt_test_maxdiff(yw->data, wantw, 4), 1e-6f);
    /* a zero row: 0 / sqrt(0 + eps) = 0, no NaN */
    tt_tensor *z = tt_zeros(TT_SHAPE(2, 3));
    tt_tensor *yz = tt_rms_norm(z, NULL, 1e-6f);
    ck_assert_float_le(tt_test_maxdiff(yz->data, (float[]){0, 0, 0, 0, 0, 0}, 6), 0.0f);
    tt_tape_reset();
    tt_free(x);
    tt_free(w);
    tt_free(z);
}
END_TEST

START_TEST(test_layer_norm_large_offset) {
    /* [1e4 + 1, ..., 1e4 + 4]: the two-pass variance keeps the answer of [1, 2, 3, 4]
     * (E[x^2] - mean^2 in float would cancel to garbage) */
    tt_tensor *x = tt_from_data(TT_SHAPE(4), (float[]){10001, 10002, 10003, 10004});
    tt_tensor *y = tt_layer_norm(x, NULL, NULL, 1e-5f);
    float want[] = {-1.3416354f, -0.4472118f, 0.4472118f, 1.3416354f};
    ck_assert_float_le(tt_test_maxdiff(y->data, want, 4), 1e-5f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

/* [256, 192] rows take the threaded path: every row must equal the same row normalised
 * on its own, values and gradients, bit for bit. */
START_TEST(test_norm_threaded_rows_match_serial) {
    const int R = 256, C = 192;
    tt_tensor *x = tt_set_requires_grad(tt_rand_uniform(TT_SHAPE(R, C), -2, 2), true);
    tt_tensor *w = tt_rand_uniform(TT_SHAPE(C), 0.5f, 1.5f);
    tt_tensor *b = tt_rand_uniform(TT_SHAPE(C), -1, 1);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(R, C), -1, 1);
    for (int rms = 0; rms < 2; rms++) {
        tt_zero_grad(x);
        tt_tensor *y = rms ? tt_rms_norm(x, w, 1e-5f) : tt_layer_norm(x, w, b, 1e-5f);
        tt_backward_seed(y, seed->data);
        tt_tensor *big = tt_clone(y);
        tt_tape_reset();
        for (int r = 0; r < R; r += 51) {
            tt_tensor *row = tt_set_requires_grad(tt_from_data(TT_SHAPE(C), x->data + r * C), true);
            tt_tensor *yr = rms ? tt_rms_norm(row, w, 1e-5f) : tt_layer_norm(row, w, b, 1e-5f);
            tt_backward_seed(yr, seed->data + r * C);
            ck_assert(memcmp(yr->data, big->data + r * C, C * sizeof(float)) == 0);
            ck_assert(memcmp(row->grad, x->grad + r * C, C * sizeof(float)) == 0);
            tt_tape_reset();
            tt_free(row);
        }
        tt_free(big);
    }
    tt_free(x);
    tt_free(w);
    tt_free(b);
    tt_free(seed);
}
END_TEST

/* A new dx buffer is written, an existing one added to: two calls on one x must give
 * exactly twice one call's gradient (G + G = 2G in floats), and the first call's buffer
 * holds stale values from an earlier backward (tt_grad_to_none keeps it for reuse). */
START_TEST(test_norm_grad_accumulates) {
    const int R = 64, C = 48;
    tt_manual_seed(4);
    tt_tensor *x = tt_test_param(TT_SHAPE(R, C), -2.0f, 2.0f);
    tt_tensor *w = tt_rand_uniform(TT_SHAPE(C), 0.5f, 1.5f);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(R, C), -1.0f, 1.0f);
    float *once = malloc(x->size * sizeof(float));
    for (int rms = 0; rms < 2; rms++) {
        for (int calls = 0; calls <= 2; calls++) {
            tt_grad_to_none(x);
            tt_tensor *loss = NULL;
            for (int c = 0; c < (calls ? calls : 1); c++) {
                tt_tensor *y = rms ? tt_rms_norm(x, w, 1e-5f) : tt_layer_norm(x, w, NULL, 1e-5f);
                /* calls == 0: a different loss, to leave other values in the buffer */
                tt_tensor *l = tt_sum_all(calls ? tt_mul(y, seed) : tt_mul(y, y));
                loss = loss ? tt_add(loss, l) : l;
            }
            tt_backward(loss);
            tt_tape_reset();
            if (calls == 1) memcpy(once, x->grad, x->size * sizeof(float));
        }
        for (size_t i = 0; i < x->size; i++) once[i] *= 2.0f;
        ck_assert_msg(memcmp(once, x->grad, x->size * sizeof(float)) == 0,
                      "rms %d: two calls' dx is not twice one call's", rms);
    }
    free(once);
    tt_free(x);
    tt_free(w);
    tt_free(seed);
}
END_TEST

/* dw and db are summed in fixed chunks of rows (each chunk in row order, then the
 * chunks in order): the same bits on 1 and 2 threads, and within a few float roundings
 * of a double-precision sum of the same terms. 1000 x 48: 16 chunks, enough elements
 * for two threads. */
static void affine_grads(int threads, tt_tensor *x, tt_tensor *w, tt_tensor *b,
                         const tt_tensor *seed, float *gw, float *gb) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    tt_grad_to_none(w);
    tt_grad_to_none(b);
    tt_tensor *y = tt_layer_norm(x, w, b, 1e-5f);
    tt_backward_seed(y, seed->data);
    memcpy(gw, w->grad, w->size * sizeof(float));
    memcpy(gb, b->grad, b->size * sizeof(float));
    tt_tape_reset();
}

START_TEST(test_norm_affine_grads_chunked) {
    const int R = 1000, C = 48;
    tt_manual_seed(8);
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(R, C), -2.0f, 2.0f);
    tt_tensor *w = tt_test_param(TT_SHAPE(C), 0.5f, 1.5f);
    tt_tensor *b = tt_test_param(TT_SHAPE(C), -1.0f, 1.0f);
    tt_tensor *seed = tt_rand_uniform(TT_SHAPE(R, C), -1.0f, 1.0f);
    float gw[2][48], gb[2][48];
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
#endif
    for (int t = 0; t < 2; t++) affine_grads(t + 1, x, w, b, seed, gw[t], gb[t]);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
    ck_assert(memcmp(gw[0], gw[1], sizeof gw[0]) == 0);
    ck_assert(memcmp(gb[0], gb[1], sizeof gb[0]) == 0);
    for (int j = 0; j < C; j++) {
        double sw = 0, sb = 0, aw = 0, ab = 0;
        for (int r = 0; r < R; r++) {
            const float *xr = x->data + (size_t)r * C;
            double mu = 0, var = 0;
            for (int k = 0; k < C; k++) mu += xr[k];
            mu /= C;
            for (int k = 0; k < C; k++) var += (xr[k] - mu) * (xr[k] - mu);
            double xh = (xr[j] - mu) / sqrt(var / C + 1e-5), g = seed->data[(size_t)r * C + j];
            sw += g * xh, aw += fabs(g * xh);
            sb += g, ab += fabs(g);
        }
        ck_assert_msg(fabs(gw[0][j] - sw) <= 1e-5 * aw && fabs(gb[0][j] - sb) <= 1e-6 * ab,
                      "column %d: dw %.9g (double %.9g), db %.9g (double %.9g)", j,
                      (double)gw[0][j], sw, (double)gb[0][j], sb);
    }
    tt_free(x);
    tt_free(w);
    tt_free(b);
    tt_free(seed);
}
END_TEST

START_TEST(test_norm_tape_names) {
    tt_tensor *x = tt_set_requires_grad(tt_ones(TT_SHAPE(2, 3)), true);
    ck_assert_str_eq(tt_layer_norm(x, NULL, NULL, 1e-5f)->node->op, "layer_norm");
    ck_assert_str_eq(tt_rms_norm(x, NULL, 1e-5f)->node->op, "rms_norm");
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_norm_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 4)), "x");
    tt_tensor *w3 = tt_set_name(tt_ones(TT_SHAPE(3)), "w");
    tt_tensor *w24 = tt_set_name(tt_ones(TT_SHAPE(2, 4)), "w2");
    tt_tensor *b = tt_set_name(tt_zeros(TT_SHAPE(5)), "b");
    tt_tensor *w4 = tt_ones(TT_SHAPE(4));
    TT_EXPECT_ERROR(tt_layer_norm(x, w3, NULL, 1e-5f),
                    "layer_norm: weight 'w' [3] must have shape [4] (the last axis of x 'x' [2, 4])");
    TT_EXPECT_ERROR(tt_layer_norm(x, w24, NULL, 1e-5f), "weight 'w2' [2, 4] must have shape [4]");
    TT_EXPECT_ERROR(tt_layer_norm(x, w4, b, 1e-5f), "layer_norm: bias 'b' [5] must have shape [4]");
    TT_EXPECT_ERROR(tt_rms_norm(x, w3, 1e-6f), "rms_norm: weight 'w' [3] must have shape [4]");
    TT_EXPECT_ERROR(tt_rms_norm(x, w3, 1e-6f), "test_norm.c:");
    TT_EXPECT_ERROR(tt_layer_norm(x, NULL, NULL, -1.0f), "eps -1 must be >= 0");
    tt_tensor *s = tt_set_name(tt_full(0, NULL, 1.0f), "s");
    TT_EXPECT_ERROR(tt_rms_norm(s, NULL, 1e-6f), "x 's' [] must have at least one axis");
    tt_tensor *ids = tt_from_ids(TT_SHAPE(4), (int32_t[]){0, 1, 2, 3});
    TT_EXPECT_ERROR(tt_layer_norm(x, ids, NULL, 1e-5f), "must be float32");
    tt_tape_reset();
    tt_free(x);
    tt_free(w3);
    tt_free(w24);
    tt_free(b);
    tt_free(w4);
    tt_free(s);
    tt_free(ids);
}
END_TEST

static Suite *norm_suite(void) {
    Suite *s = suite_create("norm");
    TCase *tc = tcase_create("norm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_layer_norm_grad);
    tcase_add_test(tc, test_rms_norm_grad);
    tcase_add_test(tc, test_norm_grad_weight_only);
    tcase_add_test(tc, test_layer_norm_values);
    tcase_add_test(tc, test_layer_norm_grad_values);
    tcase_add_test(tc, test_rms_norm_values);
    tcase_add_test(tc, test_layer_norm_large_offset);
    tcase_add_test(tc, test_norm_threaded_rows_match_serial);
    tcase_add_test(tc, test_norm_grad_accumulates);
    tcase_add_test(tc, test_norm_affine_grads_chunked);
    tcase_add_test(tc, test_norm_tape_names);
    tcase_add_test(tc, test_norm_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(norm_suite)

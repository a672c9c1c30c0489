/* test_affine.c - affine (x w^T + b) and affine_relu: the same numbers as matmul_nt, add
 * and relu in a row (values and gradients, bit for bit), gradient checks with the 1.01
 * mutation test, shapes, no-grad, errors. */
#include "tt_test.h"
#include "kernels/gemm.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* in = {x, w, b}; user = "relu" or NULL; n_in 2 = no bias */
typedef struct aff_case {
    bool relu, bias;
} aff_case;

static tt_tensor *f_affine(tt_tensor *const *in, void *user) {
    const aff_case *c = user;
    tt_tensor *b = c->bias ? in[2] : NULL;
    return c->relu ? tt_affine_relu(in[0], in[1], b) : tt_affine(in[0], in[1], b);
}

/* the same function from three separate ops */
static tt_tensor *f_composed(tt_tensor *const *in, void *user) {
    const aff_case *c = user;
    tt_tensor *y = tt_matmul_nt(in[0], in[1]);
    if (c->bias) y = tt_add(y, in[2]);
    return c->relu ? tt_relu(y) : y;
}

/* forward and all three gradients of f_affine equal f_composed's exactly, under a seed
 * gradient that is not all ones */
static void check_same_as_composed(aff_case c, int ndx, const int *sx, int out) {
    int in_f = sx[ndx - 1];
    tt_tensor *x = tt_test_param(ndx, sx, -1, 1);
    tt_tensor *w = tt_test_param(TT_SHAPE(out, in_f), -1, 1);
    tt_tensor *b = tt_test_param(TT_SHAPE(out), -1, 1);
    tt_tensor *in[3] = {x, w, b};
    float *got[4], *want[4];
    tt_gradcheck_fn fns[2] = {f_affine, f_composed};
    for (int v = 0; v < 2; v++) {
        float **dst = v ? want : got;
        tt_zero_grad(x), tt_zero_grad(w), tt_zero_grad(b);
        tt_tensor *y = fns[v](in, &c);
        float *seed = malloc(y->size * sizeof(float));
        for (size_t i = 0; i < y->size; i++) seed[i] = (float)((int)(i % 7) - 3) * 0.25f;
        tt_backward_seed(y, seed);
        free(seed);
        dst[0] = malloc(y->size * sizeof(float));
        memcpy(dst[0], y->data, y->size * sizeof(float));
        size_t ny = y->size;
        for (int i = 0; i < 3; i++) { /* b gets no gradient when it is not used */
            dst[i + 1] = calloc(in[i]->size, sizeof(float));
            if (in[i]->grad) memcpy(dst[i + 1], in[i]->grad, in[i]->size * sizeof(float));
        }
        tt_tape_reset();
        if (v) {
            ck_assert_float_eq(tt_test_maxdiff(got[0], want[0], ny), 0.0f);
            for (int i = 0; i < 3; i++)
                ck_assert_msg(tt_test_maxdiff(got[i + 1], want[i + 1], in[i]->size) == 0.0f,
                              "gradient %d differs from the composed ops'", i);
        }
    }
    for (int i = 0; i < 4; i++) free(got[i]), free(want[i]);
    tt_free(x), tt_free(w), tt_free(b);
}

START_TEST(test_affine_matches_composed) {
    tt_manual_seed(7);
    /* small (plain loops in tt_gemm) and large enough for the packed kernels, 2-D and 3-D */
    check_same_as_composed((aff_case){false, true}, TT_SHAPE(3, 5), 4);
    check_same_as_composed((aff_case){false, false}, TT_SHAPE(2, 3, 5), 4);
    check_same_as_composed((aff_case){true, true}, TT_SHAPE(3, 37, 40), 50);
    check_same_as_composed((aff_case){false, true}, TT_SHAPE(70, 64), 300);
    check_same_as_composed((aff_case){true, false}, TT_SHAPE(70, 64), 300);
}
END_TEST

START_TEST(test_affine_values) {
    /* x [2, 3] = [[1, 2, 3], [4, 5, 6]], w [2, 3] = [[1, 0, -1], [0, 1, 1]], b = [-5, 1]:
     * x w^T = [[-2, 5], [-2, 11]], + b = [[-7, 6], [-7, 12]] */
    tt_tensor *x = tt_from_data(TT_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    tt_tensor *w = tt_from_data(TT_SHAPE(2, 3), (float[]){1, 0, -1, 0, 1, 1});
    tt_tensor *b = tt_from_data(TT_SHAPE(2), (float[]){-5, 1});
    tt_tensor *y = tt_affine(x, w, b);
    ck_assert_float_eq(tt_test_maxdiff(y->data, (float[]){-7, 6, -7, 12}, 4), 0.0f);
    tt_tensor *r = tt_affine_relu(x, w, b);
    ck_assert_float_eq(tt_test_maxdiff(r->data, (float[]){0, 6, 0, 12}, 4), 0.0f);
    tt_tensor *n = tt_affine(x, w, NULL);
    ck_assert_float_eq(tt_test_maxdiff(n->data, (float[]){-2, 5, -2, 11}, 4), 0.0f);
    ck_assert_ptr_null(y->node); /* nothing requires grad: nothing recorded */
    ck_assert_int_eq(tt_tape_len(), 0);
    tt_tape_reset();
    tt_free(x), tt_free(w), tt_free(b);
}
END_TEST

/* gradcheck + mutation; for the relu, inputs whose pre-activations stay >= 0.05 from the
 * kink (a step h = 1e-2 moves one by at most ~0.04 with in = 4 and |x|, |w| <= 1) */
static void gradcheck_case(aff_case c, int ndx, const int *sx, int out) {
    int in_f = sx[ndx - 1];
    for (uint64_t seed = 1;; seed++) {
        ck_assert_uint_lt(seed, 200);
        tt_manual_seed(seed);
        tt_tensor *x = tt_test_param(ndx, sx, -1, 1);
        tt_tensor *w = tt_test_param(TT_SHAPE(out, in_f), -1, 1);
        tt_tensor *b = tt_test_param(TT_SHAPE(out), -1, 1);
        tt_tensor *in[3] = {x, w, b};
        bool ok = true;
        if (c.relu) {
            tt_tensor *pre = tt_affine(x, w, c.bias ? b : NULL);
            for (size_t i = 0; i < pre->size; i++) ok = ok && fabsf(pre->data[i]) >= 0.05f;
            tt_tape_reset();
        }
        if (ok) tt_test_gradcheck(c.relu ? "affine_relu" : "affine", f_affine, &c, c.bias ? 3 : 2, in, NULL);
        tt_free(x), tt_free(w), tt_free(b);
        if (ok) return;
    }
}

START_TEST(test_affine_grad) {
    gradcheck_case((aff_case){false, true}, TT_SHAPE(3, 4), 5);
    gradcheck_case((aff_case){false, false}, TT_SHAPE(2, 3, 4), 5);
    gradcheck_case((aff_case){true, true}, TT_SHAPE(2, 3, 4), 5);
    gradcheck_case((aff_case){true, false}, TT_SHAPE(3, 4), 2);
}
END_TEST

/* x used as both input and weight: x x^T, the first gradient contribution is written and
 * the second added to it */
static tt_tensor *f_self(tt_tensor *const *in, void *user) {
    (void)user;
    return tt_affine(in[0], in[0], NULL);
}

START_TEST(test_affine_same_tensor) {
    tt_tensor *x = tt_test_param(TT_SHAPE(4, 3), -1, 1);
    tt_test_gradcheck("affine", f_self, NULL, 1, &x, NULL);
    tt_free(x);
}
END_TEST

/* A 1-D x that is also the bias, x w^T + x, large enough (512 x 512) that two threads run
 * the backward's products side by side: x's gradient (dx + db, one buffer) has the same
 * bits on two threads as on one and as the composed ops (matmul_nt + add). Were db summed
 * by a task beside dx's product, the two would race on that buffer: a race the test sees
 * only in runs where the timing exposes it (without the guard in affine_backward it
 * failed in 4 of 11 invocations), hence the ten 2-thread runs. */
static tt_tensor *f_self_bias(tt_tensor *const *in, void *user) {
    return user ? tt_add(tt_matmul_nt(in[0], in[1]), in[0]) : tt_affine(in[0], in[1], in[0]);
}

START_TEST(test_affine_bias_is_input) {
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
#endif
    tt_tensor *in[2] = {tt_test_param(TT_SHAPE(512), -1, 1),
                        tt_test_param(TT_SHAPE(512, 512), -0.1f, 0.1f)};
    float *ref = NULL;
    for (int run = 0; run < 20; run++) { /* the ops on 1 thread, then affine on 2, 1, 2, ...
                                           * (a race shows in some runs, not all) */
#ifdef _OPENMP
        omp_set_num_threads(run % 2 ? 2 : 1);
#endif
        tt_grad_to_none(in[0]), tt_grad_to_none(in[1]);
        tt_tensor *y = f_self_bias(in, run == 0 ? in : NULL);
        float seed[512];
        for (int i = 0; i < 512; i++) seed[i] = (float)((i % 7) - 3) * 0.25f;
        tt_backward_seed(y, seed);
        if (run == 0) {
            ref = malloc(512 * sizeof(float));
            memcpy(ref, in[0]->grad, 512 * sizeof(float));
        } else {
            ck_assert_msg(memcmp(in[0]->grad, ref, 512 * sizeof(float)) == 0,
                          "x's gradient differs from the composed ops' (run %d)", run);
        }
        tt_tape_reset();
    }
    free(ref);
    tt_free(in[0]), tt_free(in[1]);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}
END_TEST

/* x, w, b's gradients after one backward of sum(seed * affine_relu(x, w, b)) with the given
 * thread count (malloc'd copies, in that order) */
static void grads_with_threads(int threads, tt_tensor *x, tt_tensor *w, tt_tensor *b,
                               float *out[3]) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    tt_tensor *in[3] = {x, w, b};
    for (int i = 0; i < 3; i++) tt_zero_grad(in[i]);
    tt_tensor *y = tt_affine_relu(x, w, b);
    float *seed = malloc(y->size * sizeof(float));
    for (size_t i = 0; i < y->size; i++) seed[i] = (float)((int)(i % 5) - 2) * 0.5f;
    tt_backward_seed(y, seed);
    free(seed);
    for (int i = 0; i < 3; i++) {
        out[i] = malloc(in[i]->size * sizeof(float));
        memcpy(out[i], in[i]->grad, in[i]->size * sizeof(float));
    }
    tt_tape_reset();
}

/* With two threads the backward's two products run side by side, dx on one thread and
 * dW on the other (here 128 x 64 x 256, 2 M multiply-adds: too small for tt_gemm to split
 * anyway): the same bits as on one thread and as the composed ops. With x as its own
 * weight there is one gradient buffer, and the two products stay in sequence (the second
 * adds to the first). */
START_TEST(test_affine_side_by_side) {
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
#endif
    ck_assert_int_eq(tt_gemm_threads(128, 64, 256), 1);
    check_same_as_composed((aff_case){true, true}, TT_SHAPE(128, 64), 256);
    check_same_as_composed((aff_case){false, true}, TT_SHAPE(2, 64, 256), 64);

    tt_tensor *x = tt_test_param(TT_SHAPE(128, 64), -1, 1);
    tt_tensor *w = tt_test_param(TT_SHAPE(256, 64), -1, 1);
    tt_tensor *b = tt_test_param(TT_SHAPE(256), -1, 1);
    float *one[3], *two[3];
    grads_with_threads(1, x, w, b, one);
    grads_with_threads(2, x, w, b, two);
    tt_tensor *in[3] = {x, w, b};
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(memcmp(one[i], two[i], in[i]->size * sizeof(float)) == 0,
                      "gradient %d differs between 1 and 2 threads (max diff %g)", i,
                      tt_test_maxdiff(one[i], two[i], in[i]->size));
        free(one[i]), free(two[i]);
    }
    tt_free(x), tt_free(w), tt_free(b);

    /* x x^T, 200 x 200 x 64: dx and dW are one buffer */
    tt_tensor *s = tt_test_param(TT_SHAPE(200, 64), -1, 1);
    float *want = NULL;
    for (int v = 0; v < 2; v++) {
        tt_zero_grad(s);
        tt_tensor *y = v ? tt_affine(s, s, NULL) : tt_matmul_nt(s, s);
        tt_backward(tt_sum_all(tt_mul(y, y)));
        if (v)
            ck_assert_msg(tt_test_maxdiff(want, s->grad, s->size) == 0.0f,
                          "x x^T: affine's gradient differs from matmul_nt's");
        else
            want = memcpy(malloc(s->size * sizeof(float)), s->grad, s->size * sizeof(float));
        tt_tape_reset();
    }
    free(want);
    tt_free(s);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}
END_TEST

/* x, w, b's gradients of sum(c * affine_relu(x, w, b)) + sum(d * x) + sum(e * w), the
 * second and third terms recorded last so that their gradients arrive first and the
 * affine's products add to them (beta 1) instead of writing fresh buffers. */
static void accumulated_grads(tt_tensor *x, tt_tensor *w, tt_tensor *b, float *out[3]) {
    tt_tensor *in[3] = {x, w, b};
    for (int i = 0; i < 3; i++) tt_zero_grad(in[i]);
    tt_tensor *y = tt_affine_relu(x, w, b);
    tt_tensor *c = tt_full(TT_SHAPE(y->shape[0], y->shape[1]), 0.0f);
    tt_tensor *d = tt_full(TT_SHAPE(x->shape[0], x->shape[1]), 0.0f);
    tt_tensor *e = tt_full(TT_SHAPE(w->shape[0], w->shape[1]), 0.0f);
    tt_tensor *cde[3] = {c, d, e};
    for (int k = 0; k < 3; k++) /* fixed values in [-1, 1), the same in every call */
        for (size_t i = 0; i < cde[k]->size; i++)
            cde[k]->data[i] = (float)((i * 37 + (size_t)k * 11) % 64) / 32.0f - 1.0f;
    tt_tensor *loss = tt_sum_all(tt_mul(y, c));
    loss = tt_add(loss, tt_sum_all(tt_mul(x, d)));
    loss = tt_add(loss, tt_sum_all(tt_mul(w, e)));
    tt_backward(loss);
    for (int i = 0; i < 3; i++)
        out[i] = memcpy(malloc(in[i]->size * sizeof(float)), in[i]->grad,
                        in[i]->size * sizeof(float));
    tt_tape_reset();
    tt_free(c), tt_free(d), tt_free(e);
}

/* The gradients of affine_relu(x [M, K], w [N, K], b) with one thread and with two, fresh
 * and accumulating, repeated (the split between the threads changes from run to run):
 * every block of the shared products exactly once, whichever thread takes it, and the
 * same bits as one thread computing each product whole. */
static void check_shared_pair(int M, int K, int N) {
#ifdef _OPENMP
    int saved = omp_get_max_threads();
#endif
    tt_tensor *x = tt_test_param(TT_SHAPE(M, K), -1, 1);
    tt_tensor *w = tt_test_param(TT_SHAPE(N, K), -1, 1);
    tt_tensor *b = tt_test_param(TT_SHAPE(N), -1, 1);
    tt_tensor *in[3] = {x, w, b};
    float *one[3], *one_acc[3];
    grads_with_threads(1, x, w, b, one);
    accumulated_grads(x, w, b, one_acc);
#ifdef _OPENMP
    const int reps = 20;
#else
    const int reps = 1; /* (one thread: nothing varies from run to run) */
#endif
    for (int rep = 0; rep < reps; rep++) {
        float *two[3], *two_acc[3];
        grads_with_threads(2, x, w, b, two);
        accumulated_grads(x, w, b, two_acc);
        for (int i = 0; i < 3; i++) {
            ck_assert_msg(memcmp(one[i], two[i], in[i]->size * sizeof(float)) == 0,
                          "run %d: gradient %d differs between 1 and 2 threads (max diff %g)",
                          rep, i, tt_test_maxdiff(one[i], two[i], in[i]->size));
            ck_assert_msg(memcmp(one_acc[i], two_acc[i], in[i]->size * sizeof(float)) == 0,
                          "run %d: accumulated gradient %d differs between 1 and 2 threads "
                          "(max diff %g)",
                          rep, i, tt_test_maxdiff(one_acc[i], two_acc[i], in[i]->size));
            free(two[i]), free(two_acc[i]);
        }
    }
    for (int i = 0; i < 3; i++) free(one[i]), free(one_acc[i]);
    tt_free(x), tt_free(w), tt_free(b);
#ifdef _OPENMP
    omp_set_num_threads(saved);
#endif
}

/* Products of 16 M multiply-adds whose other operands are cheap to give every block (W
 * [512, 128] for dx, x [256, 128] for dW: read in place) are cut into row blocks that the
 * two threads claim from the two ends of one list. */
START_TEST(test_affine_shared_pair) {
    ck_assert(tt_gemm_rows_split_cheap(false, 512, 128, 128)); /* W, for dx */
    ck_assert(tt_gemm_rows_split_cheap(false, 256, 128, 128)); /* x, for dW */
    check_shared_pair(256, 128, 512);
}
END_TEST

/* Rows 2048 floats long are packed (W [512, 2048] for dx, x [192, 2048] for dW), but Gp
 * [192, 512] is small and close-packed (as Gp^T for dW; as Gp for dx with the AVX-512
 * kernel, which can read A by rows): those products (201 M multiply-adds, blocks of 50 M)
 * are cut into column blocks. */
START_TEST(test_affine_shared_pair_columns) {
    ck_assert(!tt_gemm_rows_split_cheap(false, 512, 2048, 2048)); /* W, for dx */
    ck_assert(!tt_gemm_rows_split_cheap(false, 192, 2048, 2048)); /* x, for dW */
    ck_assert(tt_gemm_cols_split_cheap(true, 512, 192, 512));      /* Gp^T, for dW */
    ck_assert(tt_gemm_cols_split_cheap(false, 192, 512, 512) ==    /* Gp, for dx */
              (strcmp(tt_gemm_kernel(), "avx512") == 0));
    check_shared_pair(192, 2048, 512);
}
END_TEST

/* The ReLU mask of the backward goes into dL/dy's own buffer when that is released after
 * the op's backward; a retained y (tt_retain_grad) keeps dL/dy unmasked, and the inputs'
 * gradients are the same bits either way. */
START_TEST(test_affine_relu_retained_grad) {
    tt_tensor *x = tt_test_param(TT_SHAPE(6, 5), -1, 1);
    tt_tensor *w = tt_test_param(TT_SHAPE(7, 5), -1, 1);
    tt_tensor *b = tt_test_param(TT_SHAPE(7), -1, 1);
    tt_tensor *in[3] = {x, w, b};
    float *plain[3];
    for (int retain = 0; retain < 2; retain++) {
        for (int i = 0; i < 3; i++) tt_zero_grad(in[i]);
        tt_tensor *y = tt_affine_relu(x, w, b);
        tt_tensor *c = tt_full(TT_SHAPE(6, 7), 0.0f);
        for (size_t i = 0; i < c->size; i++) c->data[i] = 0.25f * (float)(i % 7) - 0.5f;
        if (retain) tt_retain_grad(y);
        tt_backward(tt_sum_all(tt_mul(y, c))); /* dL/dy = c */
        int masked = 0;
        for (size_t i = 0; i < y->size; i++) masked += !(y->data[i] > 0.0f) && c->data[i] != 0;
        ck_assert_int_gt(masked, 0); /* (else the check below would not see a mask) */
        if (retain) {
            ck_assert_ptr_nonnull(y->grad);
            for (size_t i = 0; i < y->size; i++) ck_assert_float_eq(y->grad[i], c->data[i]);
            for (int i = 0; i < 3; i++) {
                ck_assert_msg(memcmp(plain[i], in[i]->grad, in[i]->size * sizeof(float)) == 0,
                              "input %d's gradient changes when y's is retained", i);
                free(plain[i]);
            }
        } else {
            ck_assert_ptr_null(y->grad);
            for (int i = 0; i < 3; i++)
                plain[i] = memcpy(malloc(in[i]->size * sizeof(float)), in[i]->grad,
                                  in[i]->size * sizeof(float));
        }
        tt_tape_reset();
        tt_free(c);
    }
    tt_free(x), tt_free(w), tt_free(b);
}
END_TEST

START_TEST(test_affine_data_input) {
    /* x is data (no grad): only w and b get gradients; dL/db = column sums of G = 2 rows */
    tt_tensor *x = tt_from_data(TT_SHAPE(2, 2), (float[]){1, 2, 3, 4});
    tt_tensor *w = tt_test_param(TT_SHAPE(3, 2), -1, 1);
    tt_tensor *b = tt_test_param(TT_SHAPE(3), -1, 1);
    tt_backward(tt_sum_all(tt_affine(x, w, b)));
    ck_assert_ptr_null(x->grad);
    for (int j = 0; j < 3; j++) {
        ck_assert_float_eq(b->grad[j], 2.0f);
        ck_assert_float_eq(w->grad[j * 2 + 0], 4.0f); /* sum over rows of x[:, 0] */
        ck_assert_float_eq(w->grad[j * 2 + 1], 6.0f);
    }
    tt_tape_reset();
    tt_free(x), tt_free(w), tt_free(b);
}
END_TEST

START_TEST(test_affine_errors) {
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(4, 3)), "x");
    tt_tensor *w = tt_set_name(tt_zeros(TT_SHAPE(5, 2)), "w");
    tt_tensor *w3 = tt_set_name(tt_zeros(TT_SHAPE(5, 3)), "w3");
    tt_tensor *b = tt_set_name(tt_zeros(TT_SHAPE(4)), "b");
    tt_tensor *v = tt_set_name(tt_zeros(TT_SHAPE(3)), "v");
    TT_EXPECT_ERROR(tt_affine(x, w, NULL),
                    "affine: x 'x' [4, 3] has 3 features but w 'w' [5, 2] expects 2");
    TT_EXPECT_ERROR(tt_affine(x, w, NULL), "test_affine.c:");
    TT_EXPECT_ERROR(tt_affine_relu(x, w3, b), "affine_relu: bias 'b' [4] must be [5] for w 'w3' [5, 3]");
    TT_EXPECT_ERROR(tt_affine(x, v, NULL), "affine: expects x [..., in] and w [out, in]; got 'x' [4, 3] and 'v' [3]");
    tt_tensor *ids = tt_from_ids(TT_SHAPE(4, 3), (int32_t[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    TT_EXPECT_ERROR(tt_affine(ids, w3, NULL), "must be float32");
    tt_tape_reset();
    tt_free(x), tt_free(w), tt_free(w3), tt_free(b), tt_free(v), tt_free(ids);
}
END_TEST

static Suite *affine_suite(void) {
    Suite *s = suite_create("affine");
    TCase *tc = tcase_create("affine");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_affine_values);
    tcase_add_test(tc, test_affine_matches_composed);
    tcase_add_test(tc, test_affine_grad);
    tcase_add_test(tc, test_affine_same_tensor);
    tcase_add_test(tc, test_affine_bias_is_input);
    tcase_add_test(tc, test_affine_side_by_side);
    tcase_add_test(tc, test_affine_shared_pair);
    tcase_add_test(tc, test_affine_shared_pair_columns);
    tcase_add_test(tc, test_affine_relu_retained_grad);
    tcase_add_test(tc, test_affine_data_input);
    tcase_add_test(tc, test_affine_errors);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(affine_suite)

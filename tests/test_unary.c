/* test_unary.c - elementwise unary ops: gradients (+ mutation), values, extremes, errors. */
#include "tt_test.h"

#include <math.h>

/* The op under test, by tape name, and its constant (scale factor, addend, exponent). */
typedef struct unary_case {
    const char *op;
    float s;
} unary_case;

static tt_tensor *apply(const char *op, tt_tensor *x, float s) {
    if (!strcmp(op, "neg")) return tt_neg(x);
    if (!strcmp(op, "scale")) return tt_scale(x, s);
    if (!strcmp(op, "add_scalar")) return tt_add_scalar(x, s);
    if (!strcmp(op, "exp")) return tt_exp(x);
    if (!strcmp(op, "log")) return tt_log(x);
    if (!strcmp(op, "sqrt")) return tt_sqrt(x);
    if (!strcmp(op, "rsqrt")) return tt_rsqrt(x);
    if (!strcmp(op, "pow")) return tt_pow(x, s);
    if (!strcmp(op, "relu")) return tt_relu(x);
    if (!strcmp(op, "silu")) return tt_silu(x);
    if (!strcmp(op, "sigmoid")) return tt_sigmoid(x);
    if (!strcmp(op, "tanh")) return tt_tanh(x);
    if (!strcmp(op, "gelu")) return tt_gelu(x);
    ck_abort_msg("unknown op %s", op);
    return NULL;
}

static tt_tensor *f_unary(tt_tensor *const *in, void *user) {
    const unary_case *c = user;
    return apply(c->op, in[0], c->s);
}

/* gradcheck + mutation on a [3, 4] input uniform in [lo, hi] and on a 3-D [2, 2, 3] one */
static void check_grad(const char *op, float s, float lo, float hi) {
    unary_case c = {op, s};
    tt_tensor *a = tt_test_param(TT_SHAPE(3, 4), lo, hi);
    tt_tensor *b = tt_test_param(TT_SHAPE(2, 2, 3), lo, hi);
    tt_test_gradcheck(op, f_unary, &c, 1, &a, NULL);
    tt_test_gradcheck(op, f_unary, &c, 1, &b, NULL);
    tt_free(a);
    tt_free(b);
}

START_TEST(test_neg_grad) { check_grad("neg", 0.0f, -2.0f, 2.0f); }
END_TEST
START_TEST(test_scale_grad) {
    check_grad("scale", 2.5f, -2.0f, 2.0f);
    check_grad("scale", -0.3f, -2.0f, 2.0f);
}
END_TEST
START_TEST(test_add_scalar_grad) { check_grad("add_scalar", 3.0f, -2.0f, 2.0f); }
END_TEST
START_TEST(test_exp_grad) { check_grad("exp", 0.0f, -2.0f, 2.0f); }
END_TEST
/* log, sqrt, rsqrt, pow: positive inputs in [0.5, 2], where the derivatives are tame
 * (|f'''| <= 16 for log, so the h^2/6 truncation error stays below 3e-4 relative). */
START_TEST(test_log_grad) { check_grad("log", 0.0f, 0.5f, 2.0f); }
END_TEST
START_TEST(test_sqrt_grad) { check_grad("sqrt", 0.0f, 0.5f, 2.0f); }
END_TEST
START_TEST(test_rsqrt_grad) { check_grad("rsqrt", 0.0f, 0.5f, 2.0f); }
END_TEST
START_TEST(test_pow_grad) {
    check_grad("pow", 3.0f, 0.5f, 2.0f);
    check_grad("pow", -1.5f, 0.5f, 2.0f);
    check_grad("pow", 0.5f, 0.5f, 2.0f);
}
END_TEST
/* relu has a kink at 0: inputs |x| in [0.1, 1] keep x +- h (h = 0.01) on one side. */
START_TEST(test_relu_grad) {
    unary_case c = {"relu", 0.0f};
    tt_tensor *a = tt_test_param_away0(TT_SHAPE(4, 5));
    tt_test_gradcheck("relu", f_unary, &c, 1, &a, NULL);
    tt_free(a);
}
END_TEST
START_TEST(test_silu_grad) { check_grad("silu", 0.0f, -3.0f, 3.0f); }
END_TEST
START_TEST(test_sigmoid_grad) { check_grad("sigmoid", 0.0f, -3.0f, 3.0f); }
END_TEST
START_TEST(test_tanh_grad) { check_grad("tanh", 0.0f, -2.0f, 2.0f); }
END_TEST
START_TEST(test_gelu_grad) { check_grad("gelu", 0.0f, -3.0f, 3.0f); }
END_TEST

/* y = op(x) for x = xs, compared with hand-computed values (libm float: 2e-6 relative). */
static void check_values(const char *op, float s, int n, const float *xs, const float *want) {
    tt_tensor *x = tt_from_data(1, &n, xs);
    tt_tensor *y = apply(op, x, s);
    ck_assert_int_eq(y->ndim, 1);
    ck_assert_int_eq(y->shape[0], n);
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabsf(y->data[i] - want[i]) <= 2e-6f * (1.0f + fabsf(want[i])),
                      "%s(%g) = %.9g, want %.9g", op, xs[i], y->data[i], want[i]);
    tt_tape_reset();
    tt_free(x);
}

START_TEST(test_values) {
    check_values("neg", 0, 3, (float[]){1, -2, 0}, (float[]){-1, 2, 0});
    check_values("scale", 2.5f, 3, (float[]){1, -2, 0.5f}, (float[]){2.5f, -5, 1.25f});
    check_values("add_scalar", -1.5f, 2, (float[]){1, -2}, (float[]){-0.5f, -3.5f});
    check_values("exp", 0, 3, (float[]){0, 1, -1}, (float[]){1, 2.71828183f, 0.36787944f});
    check_values("log", 0, 3, (float[]){1, 2.71828183f, 0.5f}, (float[]){0, 1, -0.69314718f});
    check_values("sqrt", 0, 3, (float[]){4, 0.25f, 2}, (float[]){2, 0.5f, 1.41421356f});
    check_values("rsqrt", 0, 3, (float[]){4, 0.25f, 2}, (float[]){0.5f, 2, 0.70710678f});
    check_values("pow", 3, 2, (float[]){2, -0.5f}, (float[]){8, -0.125f});
    check_values("pow", 0.5f, 2, (float[]){4, 0.5f}, (float[]){2, 0.70710678f});
    check_values("pow", -2, 2, (float[]){2, 0.5f}, (float[]){0.25f, 4});
    check_values("relu", 0, 3, (float[]){-1, 0, 2}, (float[]){0, 0, 2});
    /* sigmoid(1) = 1/(1+e^-1) = 0.7310585786; silu(x) = x sigmoid(x) */
    check_values("sigmoid", 0, 3, (float[]){0, 1, -1}, (float[]){0.5f, 0.73105858f, 0.26894142f});
    check_values("silu", 0, 3, (float[]){0, 1, -2}, (float[]){0, 0.73105858f, -0.23840584f});
    check_values("tanh", 0, 3, (float[]){0, 1, -0.5f}, (float[]){0, 0.76159416f, -0.46211716f});
    /* gelu(x) = x Phi(x): Phi(1) = 0.8413447461, Phi(-1) = 0.1586552539, Phi(2) = 0.97724987 */
    check_values("gelu", 0, 4, (float[]){0, 1, -1, 2},
                 (float[]){0, 0.84134475f, -0.15865525f, 1.95449974f});
}
END_TEST

/* dL/dx of L = sum(op(x)), compared with the derivative computed by hand. */
static void check_derivative(const char *op, float s, float x0, float want) {
    tt_tensor *x = tt_set_requires_grad(tt_full(TT_SHAPE(1), x0), true);
    tt_backward(tt_sum_all(apply(op, x, s)));
    ck_assert_msg(fabsf(x->grad[0] - want) <= 2e-6f * (1.0f + fabsf(want)),
                  "d%s/dx at %g = %.9g, want %.9g", op, x0, x->grad[0], want);
    tt_tape_reset();
    tt_free(x);
}

START_TEST(test_derivative_values) {
    check_derivative("neg", 0, 3, -1);
    check_derivative("scale", -4, 3, -4);
    check_derivative("add_scalar", 7, 3, 1);
    check_derivative("exp", 0, 1, 2.71828183f);
    check_derivative("log", 0, 4, 0.25f);
    check_derivative("sqrt", 0, 4, 0.25f);            /* 1/(2*2)              */
    check_derivative("rsqrt", 0, 4, -0.0625f);        /* -1/2 * 4^(-3/2)      */
    check_derivative("pow", 3, 2, 12);                /* 3 * 2^2              */
    check_derivative("relu", 0, 0.5f, 1);
    check_derivative("relu", 0, -0.5f, 0);
    check_derivative("sigmoid", 0, 0, 0.25f);
    check_derivative("tanh", 0, 0, 1);
    check_derivative("silu", 0, 0, 0.5f);             /* s(0) + 0            */
    check_derivative("gelu", 0, 0, 0.5f);             /* Phi(0) + 0          */
    check_derivative("gelu", 0, 1, 1.08331547f);      /* Phi(1) + phi(1) = 0.8413447 + 0.2419707 */
}
END_TEST

/* sigmoid and silu run 16 lanes at a time with the library's vector exponential: against
 * double references over [-30, 30] in 1003 points (a ragged last vector), sigmoid and
 * silu within 8 float ulps of the value, silu's derivative s (1 + x (1 - s)) within 16
 * ulps of the size of its terms, s (1 + 2 |x|) (it crosses 0 near x = -1.28, where the
 * sum cancels); and the special values: NaN stays NaN, +inf gives 1 (sigmoid) and inf
 * (silu), -inf gives 0. */
START_TEST(test_sigmoid_silu_vector_accuracy) {
    enum { N = 1003 };
    float xs[N];
    for (int i = 0; i < N; i++) xs[i] = -30.0f + 60.0f * (float)i / (N - 1);
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(N), xs), true);
    tt_tensor *s = tt_sigmoid(x), *u = tt_silu(x);
    tt_backward(tt_sum_all(u));
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        const double xd = xs[i], sd = 1.0 / (1.0 + exp(-xd));
        const double want[3] = {sd, xd * sd, sd * (1.0 + xd * (1.0 - sd))};
        const float got[3] = {s->data[i], u->data[i], x->grad[i]};
        for (int k = 0; k < 3; k++) {
            const double size = k < 2 ? fabs(want[k]) : 2.0 * sd * (1.0 + 2.0 * fabs(xd));
            const double tol = 8.0 * ldexp(size, -24) + 1e-30;
            const double err = fabs((double)got[k] - want[k]);
            if (err / tol > worst) worst = err / tol;
            ck_assert_msg(err <= tol, "%s(%g) = %.9g, want %.9g",
                          k == 0 ? "sigmoid" : k == 1 ? "silu" : "silu'", xd, (double)got[k],
                          want[k]);
        }
    }
    printf("  sigmoid, silu, silu': worst error %.2f of the tolerance\n", worst);
    tt_tape_reset();
    tt_free(x);
    float sp[3] = {NAN, INFINITY, -INFINITY};
    tt_tensor *y = tt_from_data(TT_SHAPE(3), sp);
    tt_tensor *sy = tt_sigmoid(y), *uy = tt_silu(y);
    ck_assert(isnan(sy->data[0]) && isnan(uy->data[0]));
    ck_assert_float_eq(sy->data[1], 1.0f);
    ck_assert(isinf(uy->data[1]) && uy->data[1] > 0);
    ck_assert_float_eq(sy->data[2], 0.0f);
    tt_tape_reset();
    tt_free(y);
}
END_TEST

/* sigmoid, silu, tanh at +-1000: no exp overflow (inf/inf = nan); exact limits. */
START_TEST(test_saturation_finite) {
    float xs[4] = {-1000.0f, 1000.0f, -88.8f, 89.0f};
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(4), xs), true);
    const char *ops[] = {"sigmoid", "silu", "tanh", "gelu"};
    for (int k = 0; k < 4; k++) {
        tt_zero_grad(x);
        tt_tensor *y = apply(ops[k], x, 0);
        for (int i = 0; i < 4; i++)
            ck_assert_msg(isfinite(y->data[i]), "%s(%g) = %g", ops[k], xs[i], y->data[i]);
        tt_backward(tt_sum_all(y));
        for (int i = 0; i < 4; i++)
            ck_assert_msg(isfinite(x->grad[i]), "%s'(%g) = %g", ops[k], xs[i], x->grad[i]);
        tt_tape_reset();
    }
    tt_tensor *s = tt_sigmoid(x);
    ck_assert_float_eq(s->data[0], 0.0f);
    ck_assert_float_eq(s->data[1], 1.0f);
    tt_tensor *t = tt_tanh(x);
    ck_assert_float_eq(t->data[0], -1.0f);
    ck_assert_float_eq(t->data[1], 1.0f);
    tt_tensor *u = tt_silu(x);
    ck_assert_float_eq(u->data[0], 0.0f);
    ck_assert_float_eq(u->data[1], 1000.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

/* x used twice: the two backward contributions add up (d(-x + -x)/dx = -2). */
START_TEST(test_grad_accumulates) {
    tt_tensor *x = tt_set_requires_grad(tt_zeros(TT_SHAPE(3)), true);
    tt_backward(tt_sum_all(tt_add(tt_neg(x), tt_scale(x, -1.0f))));
    for (int i = 0; i < 3; i++) ck_assert_float_eq(x->grad[i], -2.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

/* The tape names the ops as the mutation tests expect. */
START_TEST(test_tape_names) {
    const char *ops[] = {"neg",  "scale", "add_scalar", "exp",  "log",     "sqrt", "rsqrt",
                         "pow",  "relu",  "silu",       "sigmoid", "tanh", "gelu"};
    tt_tensor *x = tt_set_requires_grad(tt_full(TT_SHAPE(2), 1.0f), true);
    tt_tape_reset();
    for (int k = 0; k < 13; k++) {
        tt_tensor *y = apply(ops[k], x, 2.0f);
        ck_assert_ptr_nonnull(y->node);
        ck_assert_str_eq(y->node->op, ops[k]);
    }
    ck_assert_int_eq(tt_tape_len(), 13);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_int_input_error) {
    int32_t ids[2] = {1, 2};
    tt_tensor *i = tt_set_name(tt_from_ids(TT_SHAPE(2), ids), "tokens");
    TT_EXPECT_ERROR(tt_exp(i), "exp: argument 'a' 'tokens' [2] int32 must be float32");
    TT_EXPECT_ERROR(tt_gelu(i), "test_unary.c:");
    TT_EXPECT_ERROR(tt_pow(i, 2.0f), "pow:");
    tt_tape_reset();
    tt_free(i);
}
END_TEST

static Suite *unary_suite(void) {
    Suite *s = suite_create("unary");
    TCase *tc = tcase_create("unary");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_neg_grad);
    tcase_add_test(tc, test_scale_grad);
    tcase_add_test(tc, test_add_scalar_grad);
    tcase_add_test(tc, test_exp_grad);
    tcase_add_test(tc, test_log_grad);
    tcase_add_test(tc, test_sqrt_grad);
    tcase_add_test(tc, test_rsqrt_grad);
    tcase_add_test(tc, test_pow_grad);
    tcase_add_test(tc, test_relu_grad);
    tcase_add_test(tc, test_silu_grad);
    tcase_add_test(tc, test_sigmoid_grad);
    tcase_add_test(tc, test_tanh_grad);
    tcase_add_test(tc, test_gelu_grad);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_derivative_values);
    tcase_add_test(tc, test_saturation_finite);
    tcase_add_test(tc, test_sigmoid_silu_vector_accuracy);
    tcase_add_test(tc, test_grad_accumulates);
    tcase_add_test(tc, test_tape_names);
    tcase_add_test(tc, test_int_input_error);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(unary_suite)

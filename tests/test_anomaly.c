/* test_anomaly.c - anomaly mode (tt_set_detect_anomaly): the first NaN/Inf in an op's
 * output or in a gradient stops the program with the op, the tensors, the element, the
 * step and the source line; intended -inf (masks) passes; off means no checks at all. */
#include "tt_test.h"

#include <math.h>

/* Every test leaves the engine as it found it (the suites also run with CK_FORK=no). */
static void teardown(void) {
    tt_set_detect_anomaly(false);
    tt_anomaly_set_step(-1);
    tt_tape_reset();
}

START_TEST(test_switch_defaults_off) {
    ck_assert(!tt_detect_anomaly());
    ck_assert_int_eq(tt_anomaly_step(), -1);
    tt_set_detect_anomaly(true);
    ck_assert(tt_detect_anomaly());
    tt_anomaly_set_step(42);
    ck_assert_int_eq(tt_anomaly_step(), 42);
}
END_TEST

START_TEST(test_forward_log_of_zero) {
    /* log([1, 0]) = [0, -inf]: the op that made the -inf is named with its line */
    tt_tensor *x = tt_set_name(tt_set_requires_grad(tt_from_data(TT_SHAPE(2), (float[]){1, 0}), true), "x");
    tt_set_detect_anomaly(true);
    tt_anomaly_set_step(7);
    TT_EXPECT_ERROR(tt_log(x), "anomaly: forward of 'log' produced -inf in its output "
                               "'<unnamed>' [2] at element 1 (inputs: 'x' [2]), step 7 (at ");
    TT_EXPECT_ERROR(tt_log(x), "test_anomaly.c:");
    tt_free(x);
}
END_TEST

START_TEST(test_forward_checked_without_grad) {
    /* no-grad (evaluation) ops are checked too, and NaN is reported as nan */
    tt_tensor *x = tt_set_name(tt_from_data(TT_SHAPE(3), (float[]){1, -1, 4}), "h");
    tt_set_detect_anomaly(true);
    tt_no_grad_begin();
    TT_EXPECT_ERROR(tt_sqrt(x), "forward of 'sqrt' produced nan in its output '<unnamed>' [3] at "
                                "element 1 (inputs: 'h' [3]), step ?");
    tt_no_grad_end();
    tt_free(x);
}
END_TEST

START_TEST(test_backward_div_by_zero) {
    /* c = a / b with b = 1e-30: c = 1e30 is finite, but dc/db = -a / b^2 and b^2
     * underflows to 0, so the gradient of b is -inf */
    tt_tensor *a = tt_set_name(tt_set_requires_grad(tt_ones(TT_SHAPE(1)), true), "a");
    tt_tensor *b = tt_set_name(tt_set_requires_grad(tt_full(TT_SHAPE(1), 1e-30f), true), "b");
    tt_set_detect_anomaly(true);
    tt_anomaly_set_step(1234);
    tt_tensor *loss = tt_sum_all(tt_div(a, b));
    ck_assert(isfinite(tt_item(loss)));
    TT_EXPECT_ERROR(tt_backward(loss), "anomaly: backward of 'div' (created at ");
    TT_EXPECT_ERROR(tt_backward(loss), "produced -inf in the gradient of 'b' [1] (input 1) at "
                                       "element 0, step 1234");
    tt_free(a);
    tt_free(b);
}
END_TEST
START_TEST(test_off_means_ieee_results) {
    /* the same computations without anomaly mode: no error, IEEE values */
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(2), (float[]){1, 0}), true);
    tt_tensor *y = tt_log(x);
    ck_assert(isinf(y->data[1]) && y->data[1] < 0);
    tt_tensor *a = tt_set_requires_grad(tt_ones(TT_SHAPE(1)), true);
    tt_tensor *b = tt_set_requires_grad(tt_full(TT_SHAPE(1), 1e-30f), true);
    tt_backward(tt_sum_all(tt_div(a, b)));
    ck_assert(isinf(b->grad[0]) && b->grad[0] < 0);
    tt_free(x);
    tt_free(a);
    tt_free(b);
}
END_TEST

START_TEST(test_causal_mask_is_not_an_anomaly) {
    /* scores -> causal_mask (-inf above the diagonal, intended) -> softmax is finite */
    tt_tensor *s = tt_test_param(TT_SHAPE(2, 3, 3), -1.0f, 1.0f);
    tt_set_detect_anomaly(true);
    tt_tensor *p = tt_softmax(tt_causal_mask(s));
    tt_backward(tt_sum_all(tt_mul(p, p)));
    for (size_t k = 0; k < s->size; k++) ck_assert(isfinite(s->grad[k]));
    tt_free(s);
}
END_TEST
START_TEST(test_additive_mask_leaf_is_not_an_anomaly) {
    /* a constant -inf mask added to scores, as in PyTorch code; a fully masked row
     * would turn into NaN in softmax, and that IS reported */
    tt_tensor *s = tt_test_param(TT_SHAPE(2, 2), -1.0f, 1.0f);
    tt_tensor *mask = tt_from_data(TT_SHAPE(2, 2), (float[]){0, -INFINITY, 0, 0});
    tt_set_detect_anomaly(true);
    tt_tensor *p = tt_softmax(tt_add(s, mask));
    ck_assert_float_eq(p->data[1], 0.0f);
    tt_tensor *all = tt_from_data(TT_SHAPE(2, 2), (float[]){-INFINITY, -INFINITY, 0, 0});
    tt_tensor *masked = tt_add(s, all);
    TT_EXPECT_ERROR(tt_softmax(masked), "forward of 'softmax' produced nan");
    tt_free(s);
    tt_free(mask);
    tt_free(all);
}
END_TEST

START_TEST(test_broken_parameter_is_named) {
    /* a parameter that already holds NaN (e.g. after a bad update) is blamed, not the op */
    tt_tensor *w = tt_set_name(tt_test_param(TT_SHAPE(2, 2), -1.0f, 1.0f), "layers.0.fc.weight");
    tt_tensor *x = tt_ones(TT_SHAPE(3, 2));
    w->data[3] = NAN;
    tt_set_detect_anomaly(true);
    tt_anomaly_set_step(99);
    TT_EXPECT_ERROR(tt_matmul(x, w), "input 1 of 'matmul', 'layers.0.fc.weight' [2, 2], holds "
                                     "nan at element 3 before the op ran");
    TT_EXPECT_ERROR(tt_matmul(x, w), "step 99");
    tt_free(w);
    tt_free(x);
}
END_TEST
START_TEST(test_nan_seed) {
    tt_tensor *x = tt_set_requires_grad(tt_ones(TT_SHAPE(2)), true);
    tt_tensor *y = tt_scale(x, 2.0f);
    tt_set_detect_anomaly(true);
    TT_EXPECT_ERROR(tt_backward_seed(y, ((float[]){1, NAN})),
                    "the gradient seeding backward of '<unnamed>' [2] holds nan at element 1");
    tt_free(x);
}
END_TEST
START_TEST(test_diverging_training_stops_with_the_step) {
    /* least squares y = 3x by SGD with a learning rate far past the stable 1/max(x^2):
     * the weight oscillates with growing amplitude; anomaly mode stops the loop at the
     * first non-finite value (instead of printing loss = nan forever) and names the step */
    tt_tensor *w = tt_set_name(tt_set_requires_grad(tt_zeros(TT_SHAPE(1, 1)), true), "w");
    tt_tensor *x = tt_from_data(TT_SHAPE(4, 1), (float[]){1, 2, 3, 4});
    tt_tensor *y = tt_from_data(TT_SHAPE(4, 1), (float[]){3, 6, 9, 12});
    tt_set_detect_anomaly(true);
    volatile long reached = -1;
    tt_test_catch_errors();
    if (setjmp(tt_test_jmp) == 0) {
        for (long step = 0; step < 1000; step++) {
            reached = step;
            tt_anomaly_set_step(step);
            tt_tensor *d = tt_sub(tt_matmul(x, w), y);
            tt_tensor *loss = tt_mean_all(tt_mul(d, d));
            tt_zero_grad(w);
            tt_backward(loss);
            w->data[0] -= 10.0f * w->grad[0];
            tt_tape_reset();
        }
        tt_test_release_errors();
        ck_abort_msg("a diverging run finished 1000 steps without an anomaly");
    }
    tt_test_release_errors();
    printf("  diverged: %s\n", tt_test_msg);
    ck_assert_msg(strstr(tt_test_msg, "tinytorch: anomaly: "), "%s", tt_test_msg);
    char want[32];
    snprintf(want, sizeof want, "step %ld", (long)reached);
    ck_assert_msg(strstr(tt_test_msg, want), "message \"%s\" lacks \"%s\"", tt_test_msg, want);
    ck_assert_int_gt(reached, 3);
    ck_assert_int_lt(reached, 100);
    tt_free(w);
    tt_free(x);
    tt_free(y);
}
END_TEST
START_TEST(test_healthy_model_step_is_not_an_anomaly) {
    /* the toy DeepSeek model (causal mask, top-k routing, noisy gates, balance loss): a
     * normal training step raises nothing in anomaly mode */
    tt_manual_seed(3);
    tt_dsv3_config c = tt_dsv3_config_toy();
    c.noise_std = 0.5f;
    tt_dsv3 *m = tt_dsv3_new(&c);
    ck_assert_ptr_nonnull(m);
    int32_t ids[2 * 16], tg[2 * 16];
    for (int i = 0; i < 32; i++) {
        ids[i] = (i * 37) % c.vocab;
        tg[i] = (i * 11 + 5) % c.vocab;
    }
    tt_tensor *tids = tt_from_ids(TT_SHAPE(2, 16), ids), *ttg = tt_from_ids(TT_SHAPE(2, 16), tg);
    tt_set_detect_anomaly(true);
    for (long step = 0; step < 2; step++) {
        tt_anomaly_set_step(step);
        tt_dsv3_output out = tt_dsv3_forward(m, tids, ttg);
        ck_assert(isfinite(tt_item(out.loss)));
        tt_backward(out.loss);
        tt_tape_reset();
    }
    tt_free(tids);
    tt_free(ttg);
    tt_dsv3_free(m);
}
END_TEST
static Suite *anomaly_suite(void) {
    Suite *s = suite_create("anomaly");
    TCase *tc = tcase_create("anomaly");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_switch_defaults_off);
    tcase_add_test(tc, test_forward_log_of_zero);
    tcase_add_test(tc, test_forward_checked_without_grad);
    tcase_add_test(tc, test_backward_div_by_zero);
    tcase_add_test(tc, test_off_means_ieee_results);
    tcase_add_test(tc, test_causal_mask_is_not_an_anomaly);
    tcase_add_test(tc, test_additive_mask_leaf_is_not_an_anomaly);
    tcase_add_test(tc, test_broken_parameter_is_named);
    tcase_add_test(tc, test_nan_seed);
    tcase_add_test(tc, test_diverging_training_stops_with_the_step);
    tcase_add_test(tc, test_healthy_model_step_is_not_an_anomaly);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(anomaly_suite)

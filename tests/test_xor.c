/* test_xor.c - end-to-end training: the XOR MLP of examples/xor/xor.c, run in-process.
 *
 * The same model, seed and SGD loop as the example (kept in step by hand): if the
 * tape, the ops' backward passes or the leaf-gradient bookkeeping break, a 2-layer MLP
 * no longer learns XOR and this fails. */
#include "tt_test.h"

enum { HIDDEN = 8, STEPS = 2000 };
static const float LR = 2.0f;

/* Trains from seed 42 and returns the final MSE; pred receives p for the 4 points. */
static float train_xor(float pred[4]) {
    tt_manual_seed(42);
    tt_tensor *x = tt_from_data(TT_SHAPE(4, 2), (float[]){0, 0, 0, 1, 1, 0, 1, 1});
    tt_tensor *y = tt_from_data(TT_SHAPE(4, 1), (float[]){0, 1, 1, 0});
    tt_tensor *params[4] = {
        tt_set_name(tt_rand_normal(TT_SHAPE(2, HIDDEN), 0.0f, 1.0f), "W1"),
        tt_set_name(tt_zeros(TT_SHAPE(HIDDEN)), "b1"),
        tt_set_name(tt_rand_normal(TT_SHAPE(HIDDEN, 1), 0.0f, 1.0f), "W2"),
        tt_set_name(tt_zeros(TT_SHAPE(1)), "b2"),
    };
    for (int i = 0; i < 4; i++) tt_set_requires_grad(params[i], true);
    tt_tensor *W1 = params[0], *b1 = params[1], *W2 = params[2], *b2 = params[3];

    float loss_value = 0.0f;
    for (int step = 0; step <= STEPS; step++) {
        tt_tensor *h = tt_tanh(tt_add(tt_matmul(x, W1), b1));
        tt_tensor *p = tt_sigmoid(tt_add(tt_matmul(h, W2), b2));
        tt_tensor *diff = tt_sub(p, y);
        tt_tensor *loss = tt_mean_all(tt_mul(diff, diff));
        loss_value = tt_item(loss);
        for (int i = 0; i < 4; i++) pred[i] = p->data[i];
        if (step == STEPS) {
            tt_tape_reset();
            break;
        }
        tt_backward(loss);
        for (int i = 0; i < 4; i++) {
            tt_tensor *w = params[i];
            for (size_t k = 0; k < w->size; k++) w->data[k] -= LR * w->grad[k];
            tt_zero_grad(w);
        }
        tt_tape_reset();
    }
    for (int i = 0; i < 4; i++) tt_free(params[i]);
    tt_free(x);
    tt_free(y);
    return loss_value;
}

START_TEST(test_xor_learns) {
    float pred[4];
    float loss = train_xor(pred);
    printf("xor: final loss %g, predictions %.4f %.4f %.4f %.4f\n", loss, pred[0], pred[1],
           pred[2], pred[3]);
    ck_assert_float_lt(loss, 0.01f);
    const int want[4] = {0, 1, 1, 0};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pred[i] > 0.5f, want[i]);
    /* nothing leaks from a training run: the tape is empty after the last reset */
    ck_assert_int_eq(tt_tape_len(), 0);
}
END_TEST

START_TEST(test_xor_deterministic) {
    /* same seed, same program: bit-identical loss */
    float p1[4], p2[4];
    float l1 = train_xor(p1), l2 = train_xor(p2);
    ck_assert_float_eq(l1, l2);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(p1[i], p2[i]);
}
END_TEST

static Suite *xor_suite(void) {
    Suite *s = suite_create("xor");
    TCase *tc = tcase_create("xor");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_xor_learns);
    tcase_add_test(tc, test_xor_deterministic);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(xor_suite)

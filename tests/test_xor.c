/* test_xor.c - end-to-end training: the XOR MLP of examples/xor/xor.c, run in-process.
 *
 * The example's own training function is compiled in (its main() left out): if the
 * tape, the ops' backward passes or the leaf-gradient bookkeeping break, a 2-layer MLP
 * no longer learns XOR and this fails. */
#include "tt_test.h"

#define XOR_NO_MAIN
#include "../examples/xor/xor.c"

static float train_xor(float pred[4]) { return xor_train(0, pred); }

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

/* xor.c - the smallest end-to-end use of tinyTorch-C: a 2-layer MLP learns XOR.
 *
 *   h = tanh(x @ W1 + b1)        x [4, 2], W1 [2, 8], b1 [8]
 *   p = sigmoid(h @ W2 + b2)     W2 [8, 1], b2 [1]          -> p [4, 1]
 *   loss = mean((p - y)^2)
 *
 * Built from raw ops with a hand-written SGD step (w -= lr * dL/dw), so every moving
 * part is visible: forward records the tape, tt_backward fills the leaf gradients, the
 * update reads them, tt_zero_grad clears them and tt_tape_reset frees the step's
 * temporaries. Exits 0 only if the final loss is below 0.01.
 *
 *   make && ./build/examples/xor/xor
 */
#include <stdio.h>
#include <stdlib.h>

#include "tinytorch.h"

enum { HIDDEN = 8, STEPS = 2000 };
static const float LR = 2.0f;

/* Train from seed 42; print the loss every print_every steps (0: never). Returns the
 * final MSE and the network's outputs for the four points in pred. tests/test_xor.c
 * runs this same function. */
float xor_train(int print_every, float pred[4]) {
    tt_manual_seed(42);
    /* the four XOR points and their labels */
    tt_tensor *x = tt_set_name(tt_from_data(TT_SHAPE(4, 2), (float[]){0, 0, 0, 1, 1, 0, 1, 1}), "x");
    tt_tensor *y = tt_set_name(tt_from_data(TT_SHAPE(4, 1), (float[]){0, 1, 1, 0}), "y");

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
        /* forward */
        tt_tensor *h = tt_tanh(tt_add(tt_matmul(x, W1), b1));
        tt_tensor *p = tt_sigmoid(tt_add(tt_matmul(h, W2), b2));
        tt_tensor *diff = tt_sub(p, y);
        tt_tensor *loss = tt_mean_all(tt_mul(diff, diff));
        loss_value = tt_item(loss);
        for (int i = 0; i < 4; i++) pred[i] = p->data[i];
        if (print_every && step % print_every == 0) printf("step %4d  loss %.6f\n", step, loss_value);
        if (step == STEPS) {
            tt_tape_reset();
            break;
        }
        /* backward and SGD update */
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

#ifndef XOR_NO_MAIN
int main(void) {
    float pred[4];
    float loss_value = xor_train(250, pred);
    static const int a[4] = {0, 0, 1, 1}, b[4] = {0, 1, 0, 1};
    printf("predictions:\n");
    for (int i = 0; i < 4; i++)
        printf("  %d xor %d = %.4f  (target %d)\n", a[i], b[i], pred[i], a[i] ^ b[i]);
    bool ok = loss_value < 0.01f;
    printf("final loss %.6f: %s\n", loss_value, ok ? "OK" : "NOT OK (want < 0.01)");
    return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
#endif

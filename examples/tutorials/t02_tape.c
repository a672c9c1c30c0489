/* t02_tape.c - companion program of docs/tutorials/02-tape.md.
 *
 * What a forward pass records on the tape and how tt_backward walks it: a one-layer
 * network h = tanh(x W + b), loss = mean(h * h); the tape dump, the gradients, the same
 * gradient derived by hand, a no-grad scope, and the Graphviz (DOT) picture.
 * Its output is quoted in the tutorial (tests/check_tutorials.sh keeps them in sync).
 *
 *   make && build/examples/tutorials/t02_tape
 *   build/examples/tutorials/t02_tape | sed -n '/^digraph/,/^}/p' | dot -Tsvg > tape.svg
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tinytorch.h"

enum { N = 4, IN = 3, OUT = 2 };

int main(void) {
    tt_tensor *x = tt_set_name(
        tt_from_data(TT_SHAPE(N, IN), (float[]){1, 0, -1, 0.5f, 2, 0, -1, 1, 1, 0, -0.5f, 2}),
        "x");
    tt_tensor *W = tt_set_name(
        tt_from_data(TT_SHAPE(IN, OUT), (float[]){0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f}), "W");
    tt_tensor *b = tt_set_name(tt_from_data(TT_SHAPE(OUT), (float[]){0.01f, -0.02f}), "b");
    tt_set_requires_grad(W, true);
    tt_set_requires_grad(b, true); /* x is data: no gradient wanted */

    /* forward: every op appends one node to the tape */
    printf("== forward\n");
    tt_tensor *xw = tt_set_name(tt_matmul(x, W), "xw");
    tt_tensor *z = tt_set_name(tt_add(xw, b), "z");
    tt_tensor *h = tt_set_name(tt_tanh(z), "h");
    tt_tensor *hh = tt_set_name(tt_mul(h, h), "hh");
    tt_tensor *loss = tt_set_name(tt_mean_all(hh), "loss");
    printf("loss = %.6f\n", tt_item(loss));
    tt_tape_print(stdout);

    /* backward: seed dloss/dloss = 1, run the nodes' backward functions in reverse */
    printf("== backward\n");
    tt_retain_grad(h); /* keep h's gradient: a temporary's is freed once propagated */
    tt_backward(loss);
    tt_print_grad(h);
    tt_print_grad(W);
    tt_print_grad(b);

    /* the same dL/dW by hand: dL/dh = 2h/(N*OUT), dL/dz = dL/dh (1 - h^2), dL/dW = x^T dL/dz */
    float dz[N * OUT], dW[IN * OUT] = {0};
    for (int i = 0; i < N * OUT; i++) {
        float hv = h->data[i];
        dz[i] = 2.0f * hv / (N * OUT) * (1.0f - hv * hv);
    }
    for (int k = 0; k < IN; k++)
        for (int j = 0; j < OUT; j++)
            for (int i = 0; i < N; i++) dW[k * OUT + j] += x->data[i * IN + k] * dz[i * OUT + j];
    float maxdiff = 0.0f;
    for (int i = 0; i < IN * OUT; i++) maxdiff = fmaxf(maxdiff, fabsf(dW[i] - W->grad[i]));
    printf("by hand: dL/dW[0][0] = %.6f; hand and tape agree to 1e-6: %s\n", dW[0],
           maxdiff < 1e-6f ? "yes" : "NO");

    /* no-grad: evaluation records nothing */
    printf("== no-grad\n");
    int before = tt_tape_len();
    tt_no_grad_begin();
    tt_tensor *h_eval = tt_tanh(tt_add(tt_matmul(x, W), b));
    tt_no_grad_end();
    printf("tape length %d -> %d, h_eval requires_grad %d\n", before, tt_tape_len(),
           h_eval->requires_grad);

    /* the graph as Graphviz DOT; leaves are keyed by their address */
    printf("== dot\n");
    tt_tape_dot(stdout);

    /* the step ends: temporaries and the tape go, leaf gradients stay */
    tt_tape_reset();
    printf("== after tt_tape_reset: tape length %d, W->grad[0] = %.6f\n", tt_tape_len(),
           W->grad[0]);
    tt_free(x);
    tt_free(W);
    tt_free(b);
    return EXIT_SUCCESS;
}

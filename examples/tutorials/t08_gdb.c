/* t08_gdb.c - companion program of docs/tutorials/08-gdb.md: a gradient bug to find.
 *
 * The custom op cube(x) = x^3 has the right derivative, 3 x^2, but its backward
 * ASSIGNS to the input gradient instead of accumulating into it. On its own the op
 * passes the gradient check; as soon as x also feeds another op, the other op's
 * contribution is overwritten. The tutorial finds the bug with the gradient checker,
 * then watches it happen in gdb. `t08_gdb --fixed` runs the corrected backward.
 * tests/test_gdb.sh drives this program in gdb, and its output is quoted in the
 * tutorial (tests/check_tutorials.sh keeps them in sync).
 *
 *   make debug && gdb -iex 'source tinytorch/gdb/tinytorch-gdb.py' build-debug/examples/tutorials/t08_gdb
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinytorch.h"

static bool g_fixed = false;

/* y = x^3,  dL/dx += dL/dy * 3 x^2 */
static void cube_backward(tt_node *n) {
    tt_tensor *x = n->in[0];
    float *gx = tt_grad_acc(x);
    if (!gx) return;
    const float *g = n->out->grad;
    for (size_t i = 0; i < x->size; i++) {
        float d = g[i] * 3.0f * x->data[i] * x->data[i];
        if (g_fixed)
            gx[i] += d;
        else
            gx[i] = d; /* BUG: overwrites what other ops already put into x's gradient */
    }
}

static tt_tensor *cube_(tt_tensor *x, tt_src src) {
    tt_tensor *y = tt_tmp(TT_F32, x->ndim, x->shape);
    for (size_t i = 0; i < x->size; i++) y->data[i] = x->data[i] * x->data[i] * x->data[i];
    tt_record("cube", cube_backward, y, 1, &x, src);
    return y;
}
#define cube(x) cube_(x, TT_SRC)

/* f1(x) = cube(x);   f2(x) = cube(x) + x * x, recorded in that order (the bug only
 * shows when cube's backward runs after mul's, i.e. when cube was recorded first) */
static tt_tensor *f_cube(tt_tensor *const *in, void *user) { return cube(in[0]); }
static tt_tensor *f_cube_plus_square(tt_tensor *const *in, void *user) {
    tt_tensor *c = cube(in[0]);
    tt_tensor *sq = tt_mul(in[0], in[0]);
    return tt_add(c, sq);
}

int main(int argc, char **argv) {
    g_fixed = argc > 1 && strcmp(argv[1], "--fixed") == 0;
    tt_tensor *x = tt_set_name(tt_from_data(TT_SHAPE(2, 3), (float[]){0.5f, -1, 1.5f, 2, -0.5f, 1}), "x");
    tt_set_requires_grad(x, true);

    /* one step: loss = sum(x^3 + x^2), so dloss/dx = 3 x^2 + 2 x */
    printf("== one step (%s backward)\n", g_fixed ? "fixed" : "buggy");
    tt_tensor *c = tt_set_name(cube(x), "c");
    tt_tensor *sq = tt_set_name(tt_mul(x, x), "sq");
    tt_tensor *s = tt_set_name(tt_add(c, sq), "s");
    tt_tensor *loss = tt_set_name(tt_sum_all(s), "loss");
    tt_backward(loss);
    tt_print_grad(x);
    printf("expected 3x^2 + 2x:\n  [");
    for (size_t i = 0; i < x->size; i++) {
        float v = x->data[i];
        printf("%s%.4g", i ? ", " : "", 3 * v * v + 2 * v);
    }
    printf("]\n");
    tt_tape_reset();
    tt_zero_grad(x);

    /* the gradient checker: the op alone, then the op in company */
    printf("== gradient checks\n");
    tt_gradcheck_report r;
    tt_gradcheck(f_cube, NULL, 1, &x, NULL, &r);
    tt_gradcheck_print(stdout, "cube(x)", &r);
    tt_gradcheck(f_cube_plus_square, NULL, 1, &x, NULL, &r);
    tt_gradcheck_print(stdout, "cube(x) + x*x", &r);

    tt_free(x);
    return EXIT_SUCCESS;
}

/* t03_custom_op.c - companion program of docs/tutorials/03-custom-op.md.
 *
 * A new differentiable op written outside the library with the public op-writing API
 * of autograd.h (tt_tmp, tt_record, tt_grad_acc, node->f, node->ctx, tt_arena_alloc):
 *
 *   softplus_beta(x) = log(1 + e^(beta x)) / beta          (PyTorch's nn.Softplus(beta))
 *   d/dx             = e^(beta x) / (1 + e^(beta x)) = sigmoid(beta x)
 *
 * then proved with the gradient checker, and the proof itself tested: a backward that
 * is off by 1% (tt_debug_mutate_backward) must fail the check.
 * Its output is quoted in the tutorial (tests/check_tutorials.sh keeps them in sync).
 *
 *   make && build/examples/tutorials/t03_custom_op
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tinytorch.h"

/* ---- the op ----------------------------------------------------------------------- */

/* Backward: dL/dx += dL/dy * sigmoid(beta x). The forward saved sigmoid(beta x) in
 * ctx, so nothing is recomputed. Accumulate (+=): x may feed other ops too. */
static void softplus_backward(tt_node *n) {
    float *gx = tt_grad_acc(n->in[0]); /* NULL if x does not require grad */
    if (!gx) return;
    const float *g = n->out->grad, *sig = n->ctx;
    for (size_t i = 0; i < n->out->size; i++) gx[i] += g[i] * sig[i];
}

/* Forward. Stable form: log(1 + e^u) = max(u, 0) + log1p(e^-|u|), u = beta x, which
 * neither overflows for u = 100 nor loses digits for u = -100. */
static tt_tensor *my_softplus_(tt_tensor *x, float beta, tt_src src) {
    if (!x || x->dtype != TT_F32)
        tt_error_at(src, "softplus", "x must be a float32 tensor");
    if (!(beta > 0.0f)) tt_error_at(src, "softplus", "beta must be > 0, got %g", (double)beta);
    tt_tensor *y = tt_tmp(TT_F32, x->ndim, x->shape); /* output: a step temporary */
    for (size_t i = 0; i < x->size; i++) {
        float u = beta * x->data[i];
        y->data[i] = (fmaxf(u, 0.0f) + log1pf(expf(-fabsf(u)))) / beta;
    }
    tt_node *n = tt_record("softplus", softplus_backward, y, 1, &x, src);
    if (n) { /* recorded: save what the backward needs, in the arena */
        float *sig = tt_arena_alloc(x->size * sizeof(float));
        for (size_t i = 0; i < x->size; i++) sig[i] = 1.0f / (1.0f + expf(-beta * x->data[i]));
        n->ctx = sig;
        n->f[0] = beta; /* unused by the backward; visible in gdb (p *n) */
    }
    return y;
}
/* The public form passes the caller's file:line, like every library op. */
#define my_softplus(x, beta) my_softplus_(x, beta, TT_SRC)

/* ---- using and proving it ------------------------------------------------------------- */

static tt_tensor *f_softplus(tt_tensor *const *in, void *user) {
    return my_softplus(in[0], *(float *)user);
}

/* gradcheck, reported in one line */
static bool check(const char *label, tt_tensor *x, float beta) {
    tt_gradcheck_report r;
    bool ok = tt_gradcheck(f_softplus, &beta, 1, &x, NULL, &r);
    printf("%-22s %s: %zu elements checked, %zu failed, worst error %.2f x tolerance\n", label,
           ok ? "OK" : "NOT OK", r.n_checked, r.n_failed, r.worst_ratio);
    return ok;
}

int main(void) {
    float beta = 2.0f;
    printf("== forward and backward\n");
    tt_tensor *x = tt_set_name(tt_from_data(TT_SHAPE(5), (float[]){-2, -1, 0, 1, 2}), "x");
    tt_set_requires_grad(x, true);
    tt_tensor *y = tt_set_name(my_softplus(x, beta), "y");
    tt_tensor *loss = tt_set_name(tt_sum_all(y), "loss");
    tt_tape_print(stdout);
    tt_print(y);
    tt_backward(loss); /* dloss/dx = sigmoid(2x) */
    tt_print_grad(x);
    printf("sigmoid(2 * 1) = %.4f\n", 1.0 / (1.0 + exp(-2.0)));
    tt_tape_reset();

    printf("== gradient check\n");
    tt_manual_seed(7);
    tt_tensor *xs = tt_set_name(tt_rand_uniform(TT_SHAPE(3, 4), -3.0f, 3.0f), "xs");
    tt_set_requires_grad(xs, true);
    bool ok = check("softplus", xs, beta);

    printf("== mutation: the backward off by 1%%\n");
    tt_debug_mutate_backward("softplus", 1.01f);
    bool caught = !check("softplus (mutated)", xs, beta);
    tt_debug_mutate_backward(NULL, 1.0f);
    printf("the check %s the 1%% error\n", caught ? "catches" : "MISSES");

    tt_free(x);
    tt_free(xs);
    return ok && caught ? EXIT_SUCCESS : EXIT_FAILURE;
}

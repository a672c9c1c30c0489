/* t09_compare.c - companion program of docs/tutorials/09-checking-against-pytorch.md.
 *
 * Loads a fixture written by tests/ref/deepseek_v3_ref.py (a PyTorch reference of
 * DeepSeek-V3: weights under the official names, token ids, targets, the logits, the
 * loss and the gradient of every parameter), runs tinyTorch-C's tt_v3 on the same
 * weights and ids, and prints one line per compared tensor, OK or NOT OK, the way
 * llm.c's test_gpt2.c does. Optionally the backward of one op is scaled by 1.01 first
 * (tt_debug_mutate_backward), to show what a real bug looks like in the table.
 *
 *   build/examples/tutorials/t09_compare [FIXTURE [OP]]
 *       FIXTURE  default tests/data/v3_b.safetensors (run from the repository root)
 *       OP       mutate this op's backward by 1% and print only the NOT OK lines
 *
 * Digits: the differences are rounding noise (1e-7 .. 1e-6), so they are printed with
 * two significant digits; the library's kernels give the same bits for any thread count
 * (OMP_NUM_THREADS=1 and 2 print the same table).
 * Exit code: 0 if every line is OK, 1 otherwise (or if the file cannot be read).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinytorch.h"
#include "io/safetensors.h"
#include "nn/v3.h"

/* Tolerances (the same as tests/test_v3.c):
 *   logits  absolute 1e-4: both sides are fp32 and differ only in summation order
 *   loss    absolute 1e-5: one number of size ~3, rounding ~1e-7
 *   grads   relative 1e-3 per tensor: max|g - ref| / max|ref| */
#define TOL_LOGITS 1e-4
#define TOL_LOSS 1e-5
#define TOL_GRAD 1e-3

static double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

/* max_i |a_i - b_i|; a NaN anywhere makes it NaN (and so NOT OK). */
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

typedef struct table {
    bool only_bad;  /* print NOT OK lines only */
    int n, bad, hidden;
} table;

/* One line: name, shape, max |diff|, max |ref|, the compared quantity, verdict. */
static void row(table *t, const char *name, const tt_tensor *ref, double diff, double scale,
                bool relative, double tol) {
    double value = relative ? (scale > 0 ? diff / scale : diff) : diff;
    bool ok = value <= tol; /* false for NaN */
    t->n++;
    t->bad += !ok;
    if (t->only_bad && ok) {
        t->hidden++;
        return;
    }
    char shape[48] = "[", *p = shape + 1;
    for (int d = 0; d < ref->ndim; d++)
        p += snprintf(p, sizeof shape - (size_t)(p - shape), "%s%d", d ? ", " : "", ref->shape[d]);
    snprintf(p, sizeof shape - (size_t)(p - shape), "]");
    printf("%-6s %-43s %-12s %8.1e %8.1e  %s %.1e\n", ok ? "OK" : "NOT OK", name, shape, diff,
           scale, relative ? "rel" : "abs", value);
}

static tt_tensor *need(const tt_safetensors *st, const char *path, const char *name) {
    tt_tensor *t = tt_safetensors_get(st, name);
    if (!t) {
        fprintf(stderr, "t09_compare: '%s' has no tensor '%s' (not a v3 fixture?)\n", path, name);
        exit(1);
    }
    return t;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "tests/data/v3_b.safetensors";
    const char *mutate = argc > 2 ? argv[2] : NULL;

    /* 1. the fixture: weights, inputs, reference outputs, config in the metadata */
    tt_safetensors st;
    if (tt_safetensors_load(path, &st) != TT_OK) {
        fprintf(stderr, "t09_compare: %s\n", tt_last_error());
        return 1;
    }
    const char *json = tt_safetensors_meta(&st, "config");
    const char *alpha_s = tt_safetensors_meta(&st, "alpha");
    const char *lambda_s = tt_safetensors_meta(&st, "lambda");
    tt_v3_config cfg;
    if (!json || !alpha_s || tt_v3_config_from_json(json, strlen(json), &cfg) != TT_OK) {
        fprintf(stderr, "t09_compare: '%s': no valid \"config\" / \"alpha\" metadata\n", path);
        return 1;
    }
    const float alpha = strtof(alpha_s, NULL), lambda = lambda_s ? strtof(lambda_s, NULL) : 0.0f;

    /* 2. the model, then every parameter overwritten with the file's tensor of the same
     * name (not strict: the file also holds input.*, target.*, ref.* and grad.*) */
    tt_v3 *m = tt_v3_new(&cfg, 0.02f);
    if (!m || tt_params_copy_from(&m->params, &st, NULL, false) != TT_OK) {
        fprintf(stderr, "t09_compare: %s\n", tt_last_error());
        return 1;
    }
    tt_tensor *ids = need(&st, path, "input.ids"), *targets = need(&st, path, "target.ids");
    tt_tensor *ref_logits = need(&st, path, "ref.logits");
    tt_tensor *ref_loss = need(&st, path, "ref.loss"), *ref_ce = need(&st, path, "ref.ce");
    int n_grads = 0;
    for (int i = 0; i < st.n; i++) n_grads += !strncmp(st.tensors[i]->name, "grad.", 5);
    printf("fixture %s: seed %s, %d tensors (%d weights, %d gradients), ids [%d, %d], alpha %g\n",
           path, tt_safetensors_meta(&st, "seed") ? tt_safetensors_meta(&st, "seed") : "?",
           st.n, m->params.n, n_grads, ids->shape[0], ids->shape[1], (double)alpha);
    printf("model: dim %d, %d layers (%d dense), %d heads, %d routed experts (%d active), "
           "%s scores, q_lora_rank %d\n", cfg.dim, cfg.n_layers, cfg.n_dense_layers,
           cfg.n_heads, cfg.n_routed_experts, cfg.n_activated_experts,
           cfg.score_func == TT_SCORE_SIGMOID ? "sigmoid" : "softmax", cfg.q_lora_rank);
    if (mutate) {
        tt_debug_mutate_backward(mutate, 1.01f);
        printf("mutation: the backward of '%s' scaled by 1.01\n", mutate);
    }

    /* 3. forward and backward, exactly the loss the reference differentiated */
    tt_params_zero_grad(&m->params);
    tt_v3_output out = tt_v3_forward_mtp(m, ids, targets, alpha, lambda);
    tt_backward(out.loss);

    /* 4. the table */
    table t = {.only_bad = mutate != NULL};
    printf("%-6s %-43s %-12s %8s %8s  %s\n", "", "tensor", "shape", "max|d|", "max|ref|",
           "compared");
    row(&t, "logits", ref_logits, max_diff(out.logits->data, ref_logits->data, ref_logits->size),
        max_abs(ref_logits->data, ref_logits->size), false, TOL_LOGITS);
    row(&t, "loss", ref_loss, fabs((double)tt_item(out.loss) - ref_loss->data[0]),
        fabs((double)ref_loss->data[0]), false, TOL_LOSS);
    row(&t, "ce", ref_ce, fabs((double)tt_item(out.ce) - ref_ce->data[0]),
        fabs((double)ref_ce->data[0]), false, TOL_LOSS);
    for (int i = 0; i < m->params.n; i++) {
        tt_tensor *p = m->params.t[i];
        if (!p->requires_grad) continue; /* the gate's selection bias: no gradient */
        char gname[TT_NAME_LEN + 8];
        snprintf(gname, sizeof gname, "grad.%s", p->name);
        tt_tensor *ref = need(&st, path, gname);
        tt_tensor *zero = p->grad ? NULL : tt_zeros(p->ndim, p->shape); /* never reached */
        const float *g = p->grad ? p->grad : zero->data;
        row(&t, gname, ref, max_diff(g, ref->data, ref->size), max_abs(ref->data, ref->size),
            true, TOL_GRAD);
        if (zero) tt_free(zero);
    }
    if (t.hidden) printf("(%d OK lines not shown)\n", t.hidden);
    printf("%d compared, %d NOT OK\n", t.n, t.bad);

    tt_debug_mutate_backward(NULL, 1.0f);
    tt_tape_reset();
    tt_v3_free(m);
    tt_safetensors_free(&st);
    /* a mutation is meant to fail: exit 0 when it was caught, so that the tutorial can
     * quote the output; without one, 0 means every line is OK */
    if (mutate) return t.bad > 0 ? 0 : 1;
    return t.bad == 0 ? 0 : 1;
}

/* gradcheck.c - central finite differences against the analytic backward. */
#include "gradcheck.h"

#include "internal.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>

tt_gradcheck_opts tt_gradcheck_defaults(void) {
    tt_gradcheck_opts o = {.eps = 1e-2f, .atol = 1e-4, .rtol = 2e-3, .max_per_input = 0,
                           .seed = 1234, .verbose = false};
    return o;
}

/* L = sum_i w_i y_i in double, then release the evaluation's temporaries. */
static double eval_loss(tt_gradcheck_fn f, void *user, tt_tensor *const *inputs,
                        const float *w, size_t n_out, tt_mark m) {
    tt_tensor *y = f(inputs, user);
    if (y->size != n_out)
        tt_error_at((tt_src){__FILE__, __LINE__}, "gradcheck",
                    "f returned %zu elements, first call gave %zu", y->size, n_out);
    double L = 0.0;
    for (size_t i = 0; i < n_out; i++) L += (double)w[i] * (double)y->data[i];
    tt_mark_release(m);
    return L;
}

bool tt_gradcheck(tt_gradcheck_fn f, void *user, int n_inputs, tt_tensor *const *inputs,
                  const tt_gradcheck_opts *opts_in, tt_gradcheck_report *report) {
    tt_gradcheck_opts o = opts_in ? *opts_in : tt_gradcheck_defaults();
    tt_gradcheck_report r = {.ok = true, .worst_input = -1};
    bool was_enabled = tt_set_grad_enabled(true);
    tt_rng rng;
    tt_rng_seed(&rng, o.seed);

    /* 1. analytic gradients of L through one backward with seed w */
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i]->requires_grad) memset(tt_grad_ensure(inputs[i]), 0, inputs[i]->size * 4);
    tt_mark m = tt_mark_get(); /* after the input grads: those must outlive every release */
    tt_tensor *y = f(inputs, user);
    if (!y->requires_grad)
        tt_error_at((tt_src){__FILE__, __LINE__}, "gradcheck",
                    "output %s does not depend on any input that requires grad", tt_d(y));
    size_t n_out = y->size;
    float *w = malloc((n_out ? n_out : 1) * sizeof *w);
    for (size_t i = 0; i < n_out; i++) w[i] = 2.0f * tt_rng_uniform(&rng) - 1.0f;
    tt_backward_seed(y, w);
    float **analytic = calloc((size_t)n_inputs, sizeof *analytic);
    for (int i = 0; i < n_inputs; i++) {
        if (!inputs[i]->requires_grad) continue;
        analytic[i] = malloc(inputs[i]->size * sizeof(float) + 1);
        memcpy(analytic[i], inputs[i]->grad, inputs[i]->size * sizeof(float));
    }
    tt_mark_release(m);

    /* 2. numeric gradients, element by element, with nothing recorded */
    tt_no_grad_begin();
    for (int i = 0; i < n_inputs; i++) {
        tt_tensor *x = inputs[i];
        if (!x->requires_grad) continue;
        size_t n = x->size, count = n, stride = 1;
        if (o.max_per_input > 0 && n > (size_t)o.max_per_input) {
            count = (size_t)o.max_per_input;
            stride = n / count;
        }
        size_t start = (stride > 1) ? tt_rng_below(&rng, (uint32_t)stride) : 0;
        for (size_t c = 0; c < count; c++) {
            size_t k = start + c * stride;
            float v = x->data[k];
            float vp = v + o.eps, vm = v - o.eps;
            x->data[k] = vp;
            double Lp = eval_loss(f, user, inputs, w, n_out, m);
            x->data[k] = vm;
            double Lm = eval_loss(f, user, inputs, w, n_out, m);
            x->data[k] = v;
            /* the true step is what float rounding made of v +- eps */
            double numeric = (Lp - Lm) / ((double)vp - (double)vm);
            double a = analytic[i][k];
            double err = fabs(a - numeric);
            double ratio = err / (o.atol + o.rtol * fabs(numeric));
            if (!isfinite(a) || !isfinite(numeric)) ratio = INFINITY;
            r.n_checked++;
            if (err > r.max_abs_err) r.max_abs_err = err;
            if (ratio > 1.0) {
                r.n_failed++;
                r.ok = false;
                if (o.verbose)
                    fprintf(stderr, "  gradcheck: input %d [%zu]: analytic %.6g numeric %.6g\n",
                            i, k, a, numeric);
            }
            if (r.worst_input < 0 || ratio > r.worst_ratio) {
                r.worst_ratio = ratio;
                r.worst_input = i;
                r.worst_index = k;
                r.analytic = a;
                r.numeric = numeric;
            }
        }
    }
    tt_no_grad_end();
    tt_set_grad_enabled(was_enabled);
    /* leave the analytic gradient in .grad, as documented */
    for (int i = 0; i < n_inputs; i++) {
        if (!analytic[i]) continue;
        memcpy(inputs[i]->grad, analytic[i], inputs[i]->size * sizeof(float));
        free(analytic[i]);
    }
    free(analytic);
    free(w);
    if (r.n_checked == 0) r.ok = false; /* nothing checked is not a pass */
    if (report) *report = r;
    return r.ok;
}

void tt_gradcheck_print(FILE *f, const char *label, const tt_gradcheck_report *r) {
    fprintf(f,
            "gradcheck %-24s %s: %zu elements, %zu failed; worst input %d[%zu]: analytic "
            "%.7g numeric %.7g (ratio %.3g of tolerance), max abs err %.3g\n",
            label, r->ok ? "OK" : "NOT OK", r->n_checked, r->n_failed, r->worst_input,
            r->worst_index, r->analytic, r->numeric, r->worst_ratio, r->max_abs_err);
}

/* gradcheck.h - verify a backward against central finite differences.
 *
 * Users run it on their own ops and modules. The output y = f(inputs) may have any
 * shape: the check differentiates L = sum_i w_i y_i with fixed random weights w in
 * [-1, 1], so every output element takes part. For each element x_k of every input
 * that requires grad:
 *     numeric_k = (L(x + h e_k) - L(x - h e_k)) / 2h        (L summed in double)
 * and it passes when |analytic_k - numeric_k| <= atol + rtol * |numeric_k|.
 *
 * Why float32 suffices (the library has no double build): with h = 1e-2 the rounding
 * noise of L is ~1e-7 |y| per touched output, divided by 2h that is ~5e-6 |y|; the
 * truncation error is h^2/6 |f'''| ~ 2e-5 for the smooth ops here. Both sit two orders
 * below the rtol = 2e-3 used, and an analytic gradient off by 1% (relative error 1e-2)
 * fails by a factor of 5. Kinks (relu, max, top-k) must be kept away from the inputs.
 */
#ifndef TT_GRADCHECK_H
#define TT_GRADCHECK_H

#include "tensor.h"

typedef tt_tensor *(*tt_gradcheck_fn)(tt_tensor *const *inputs, void *user);

typedef struct tt_gradcheck_opts {
    float eps;            /* finite-difference step h               (default 1e-2)  */
    double atol, rtol;    /* tolerance                (defaults 1e-4 and 2e-3)       */
    int max_per_input;    /* check at most this many elements per input (0 = all)   */
    uint64_t seed;        /* seed of the projection weights w and the sampling      */
    bool verbose;         /* print every failing element (else only the worst)      */
} tt_gradcheck_opts;

typedef struct tt_gradcheck_report {
    bool ok;
    size_t n_checked;     /* elements compared                                      */
    size_t n_failed;
    int worst_input;      /* input and element with the largest error ratio         */
    size_t worst_index;
    double analytic, numeric;
    double worst_ratio;   /* |a - n| / (atol + rtol |n|); <= 1 passes              */
    double max_abs_err;
} tt_gradcheck_report;

tt_gradcheck_opts tt_gradcheck_defaults(void);

/* Returns report.ok. opts may be NULL (defaults); report may be NULL. Inputs are left
 * unchanged; their .grad holds the analytic gradient afterwards. */
bool tt_gradcheck(tt_gradcheck_fn f, void *user, int n_inputs, tt_tensor *const *inputs,
                  const tt_gradcheck_opts *opts, tt_gradcheck_report *report);

/* One line: "gradcheck ok: 120 elements, worst input 1[7]: analytic 0.4 numeric 0.4 ..." */
void tt_gradcheck_print(FILE *f, const char *label, const tt_gradcheck_report *r);

#endif

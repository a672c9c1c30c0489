/* t04_modules.c - companion program of docs/tutorials/04-modules-optimizers.md.
 *
 * An MLP built from tt_linear modules, its parameters listed by name, then the same
 * regression problem trained from the same initial weights with SGD (momentum) and with
 * AdamW, the warm-up + cosine learning-rate schedule, and gradient-norm clipping.
 * Its output is quoted in the tutorial (tests/check_tutorials.sh keeps them in sync).
 *
 *   make && build/examples/tutorials/t04_modules [params | clip | schedule | train]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinytorch.h"

#define N_POINTS 256
#define STEPS 500

/* ---- the module: three Linears with tanh between them --------------------------- */

typedef struct mlp {
    tt_linear fc1, fc2, fc3;
} mlp;

static void mlp_init(mlp *m, tt_params *p, const char *name, int in, int hidden, int out) {
    char path[TT_PATH_LEN];
    tt_linear_init(&m->fc1, p, tt_name_join(path, name, "fc1"), in, hidden, true);
    tt_linear_init(&m->fc2, p, tt_name_join(path, name, "fc2"), hidden, hidden, true);
    tt_linear_init(&m->fc3, p, tt_name_join(path, name, "fc3"), hidden, out, true);
}

static tt_tensor *mlp_forward(const mlp *m, tt_tensor *x) {
    tt_tensor *h = tt_tanh(tt_linear_forward(&m->fc1, x));
    h = tt_tanh(tt_linear_forward(&m->fc2, h));
    return tt_linear_forward(&m->fc3, h);
}

/* ---- the problem: y = sin(2 x0) cos(x1) on 256 fixed points of [-2, 2]^2 ----------- */

static tt_tensor *X, *Y;

static void make_data(void) {
    tt_manual_seed(1);
    X = tt_rand_uniform(TT_SHAPE(N_POINTS, 2), -2.0f, 2.0f);
    Y = tt_zeros(TT_SHAPE(N_POINTS, 1));
    for (int i = 0; i < N_POINTS; i++)
        Y->data[i] = sinf(2.0f * X->data[2 * i]) * cosf(X->data[2 * i + 1]);
}

static tt_tensor *mse(tt_tensor *pred, tt_tensor *target) {
    tt_tensor *d = tt_sub(pred, target);
    return tt_mean_all(tt_mul(d, d));
}

/* ---- one training run ------------------------------------------------------------------ */

typedef struct run {
    const char *label;
    bool adamw;      /* else SGD with momentum 0.9 */
    float lr;        /* the peak lr when scheduled */
    float clip;      /* max gradient norm, 0 = no clipping */
    bool schedule;   /* warm-up 20 steps + cosine to lr/10 at STEPS */
} run;

static const int report_at[] = {0, 10, 50, 100, 200, 300, 499};
#define N_REPORT (int)(sizeof report_at / sizeof report_at[0])

/* Trains a fresh MLP (always the same initial weights: seed 42) and stores the loss at
 * the steps of report_at. Returns how many steps the clipping changed. */
static int train(const run *cfg, float *curve) {
    tt_params p = {0};
    mlp net;
    tt_manual_seed(42);
    mlp_init(&net, &p, "mlp", 2, 32, 1);
    tt_optim *o = cfg->adamw ? tt_optim_adamw(&p, cfg->lr, 0.9f, 0.999f, 1e-8f, 0.01f)
                             : tt_optim_sgd(&p, cfg->lr, 0.9f, 0.0f, false);
    tt_lr_schedule sched = {TT_LR_WARMUP_COSINE, cfg->lr, cfg->lr / 10, 20, STEPS};
    int clipped = 0, r = 0;
    for (int step = 0; step < STEPS; step++) {
        tt_optim_zero_grad(o);
        tt_tensor *loss = mse(mlp_forward(&net, X), Y);
        tt_backward(loss);
        if (cfg->clip > 0.0f && tt_clip_grad_norm(&p, cfg->clip) > cfg->clip) clipped++;
        if (cfg->schedule) o->lr = tt_lr_at(&sched, step);
        tt_optim_step(o);
        if (r < N_REPORT && step == report_at[r]) curve[r++] = tt_item(loss);
        tt_tape_reset();
    }
    tt_optim_free(o);
    tt_params_free(&p);
    return clipped;
}

static double grad_norm(const tt_params *p) {
    double sq = 0.0;
    for (int i = 0; i < p->n; i++)
        for (size_t k = 0; k < p->t[i]->size; k++) sq += (double)p->t[i]->grad[k] * p->t[i]->grad[k];
    return sqrt(sq);
}

/* ---- the sections of the tutorial ---------------------------------------------------- */

static void show_params(void) {
    printf("== parameters by name\n");
    tt_params p = {0};
    mlp net;
    tt_manual_seed(42);
    mlp_init(&net, &p, "mlp", 2, 32, 1);
    char shape[TT_SHAPE_STR_LEN];
    for (int i = 0; i < p.n; i++)
        printf("  %-16s %-9s %5zu\n", p.t[i]->name, tt_shape_str(p.t[i], shape), p.t[i]->size);
    printf("  total %zu parameters in %d tensors\n", tt_params_numel(&p), p.n);
    tt_tensor *b2 = tt_params_find(&p, "mlp.fc2.bias");
    printf("tt_params_find(\"mlp.fc2.bias\") == net.fc2.bias: %s\n",
           b2 == net.fc2.bias ? "yes" : "no");
    tt_optim *o = tt_optim_adamw(&p, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f);
    printf("AdamW state: %d tensors, the first two: %s, %s\n", o->state.n, o->state.t[0]->name,
           o->state.t[1]->name);
    tt_optim_free(o);
    tt_params_free(&p);
}

static void show_clip(void) {
    printf("== gradient clipping\n");
    tt_params p = {0};
    mlp net;
    tt_manual_seed(42);
    mlp_init(&net, &p, "mlp", 2, 32, 1);
    tt_tensor *loss = mse(mlp_forward(&net, X), Y);
    tt_backward(loss);
    double before = grad_norm(&p);
    float returned = tt_clip_grad_norm(&p, 0.1f);
    printf("norm before %.6f, returned %.6f, after clipping to 0.1: %.6f\n", before,
           (double)returned, grad_norm(&p));
    returned = tt_clip_grad_norm(&p, 1.0f);
    printf("clip to 1.0 now: returned %.6f, after %.6f (already below: unchanged)\n",
           (double)returned, grad_norm(&p));
    tt_tape_reset();
    tt_params_free(&p);
}

static void show_schedule(void) {
    printf("== learning-rate schedule: warm-up 20 steps, cosine to 3e-3 at step 500\n");
    tt_lr_schedule sched = {TT_LR_WARMUP_COSINE, 3e-2f, 3e-3f, 20, STEPS};
    const long at[] = {0, 1, 9, 19, 20, 100, 260, 400, 499, 500, 600};
    for (int i = 0; i < (int)(sizeof at / sizeof at[0]); i++)
        printf("  step %3ld  lr %.6f\n", at[i], (double)tt_lr_at(&sched, at[i]));
}

static void show_training(void) {
    printf("== SGD versus AdamW: MSE of the same MLP from the same initial weights\n");
    const run runs[] = {
        {"SGD .05", false, 0.05f, 0.0f, false},
        {"SGD .2", false, 0.2f, 0.0f, false},
        {"SGD .2 clip", false, 0.2f, 1.0f, false},
        {"AdamW .01", true, 1e-2f, 0.0f, false},
        {"AdamW .03", true, 3e-2f, 0.0f, false},
        {"AdamW .03 cos", true, 3e-2f, 0.0f, true},
    };
    enum { N_RUNS = sizeof runs / sizeof runs[0] };
    float curve[N_RUNS][N_REPORT];
    int clipped[N_RUNS];
    for (int k = 0; k < N_RUNS; k++) clipped[k] = train(&runs[k], curve[k]);
    printf("  step");
    for (int k = 0; k < N_RUNS; k++) printf(" %13s", runs[k].label);
    printf("\n");
    for (int r = 0; r < N_REPORT; r++) {
        printf("  %4d", report_at[r]);
        for (int k = 0; k < N_RUNS; k++) {
            if (curve[k][r] < 1e3f) /* false for inf and NaN too */
                printf(" %13.6f", (double)curve[k][r]);
            else
                printf(" %13s", "diverged");
        }
        printf("\n");
    }
    printf("'SGD .2 clip' clipped the gradient norm to 1.0 in %d of %d steps\n", clipped[2], STEPS);
    printf("target variance (the loss of predicting 0): %.6f\n",
           (double)tt_item(tt_mean_all(tt_mul(Y, Y))));
    tt_tape_reset();
}

/* No argument: every section. One argument: that section only (the tutorial quotes the
 * sections one by one). */
int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*run)(void);
    } sections[] = {
        {"params", show_params},
        {"clip", show_clip},
        {"schedule", show_schedule},
        {"train", show_training},
    };
    const int n = (int)(sizeof sections / sizeof sections[0]);
    int ran = 0;
    make_data();
    for (int i = 0; i < n; i++)
        if (argc < 2 || strcmp(argv[1], sections[i].name) == 0) {
            sections[i].run();
            ran++;
        }
    tt_free(X);
    tt_free(Y);
    if (!ran) {
        fprintf(stderr, "usage: %s [params | clip | schedule | train]\n", argv[0]);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}

/* test_optim.c - SGD, AdamW, gradient clipping and lr schedules against PyTorch. */
#include "tt_test.h"

#include "nn/nn.h"
#include "optim/optim.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* thread counts for the 1-vs-2-thread checks (without OpenMP both runs are serial) */
static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}
static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- a fixed parameter/gradient sequence, replayed against torch ------------------------
 * w0 = [0.5, -1, 0.25, 2, -0.75]; at step t = 1..5 the gradient is, per element k,
 *   g_k = float(0.3 * w_k - 0.1 (k+1) + 0.2 (((7t + 3k) mod 5) - 2))   (in double)
 * The reference rows are w after each step, printed by /usr/bin/python3 (torch 1.13.0):
 *
 *   import torch
 *   torch.set_num_threads(1)
 *   W0 = [0.5, -1.0, 0.25, 2.0, -0.75]
 *   def grad(w, t):
 *       return torch.tensor([0.3*float(w[k]) - 0.1*(k+1) + 0.2*(((t*7+k*3) % 5) - 2)
 *                            for k in range(5)], dtype=torch.float64).float()
 *   def run(make_opt, steps=5):
 *       w = torch.nn.Parameter(torch.tensor(W0, dtype=torch.float32))
 *       opt = make_opt([w]); out = []
 *       for t in range(1, steps+1):
 *           w.grad = grad(w.detach(), t); opt.step()
 *           out.append(['%.9g' % x for x in w.detach().tolist()])
 *       return out
 *   cfgs = {
 *    'sgd':      lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01,
 *                                          nesterov=False),
 *    'nesterov': lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01,
 *                                          nesterov=True),
 *    'adamw':    lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.95), eps=1e-8,
 *                                            weight_decay=0.1)}
 *   for name, mk in cfgs.items():
 *       print(name)
 *       for row in run(mk): print('{' + ', '.join(x + 'f' for x in row) + '},')
 */
#define NW 5
#define NSTEPS 5
static const float W0[NW] = {0.5f, -1.0f, 0.25f, 2.0f, -0.75f};

static const float REF_SGD[NSTEPS][NW] = {
    {0.494500011f, -0.908999979f, 0.252249986f, 1.99800003f, -0.716750026f},
    {0.444220513f, -0.778921008f, 0.316455245f, 1.95426202f, -0.594605803f},
    {0.415198117f, -0.65770334f, 0.394429862f, 1.93431568f, -0.436243206f},
    {0.366206825f, -0.488218665f, 0.442379683f, 1.89640021f, -0.190193325f},
    {0.360762239f, -0.3205477f, 0.521820784f, 1.8034879f, 0.0871475711f},
};
static const float REF_NESTEROV[NSTEPS][NW] = {
    {0.489549994f, -0.827099979f, 0.254274994f, 1.99619997f, -0.686824977f},
    {0.399260491f, -0.666673779f, 0.374120682f, 1.91500378f, -0.486438483f},
    {0.392141938f, -0.562099218f, 0.461040378f, 1.91882753f, -0.302601844f},
    {0.327777445f, -0.359474689f, 0.476550788f, 1.86667848f, 0.0111027462f},
    {0.365484089f, -0.207622096f, 0.579304338f, 1.72733223f, 0.298340321f},
};
static const float REF_ADAMW[NSTEPS][NW] = {
    {0.489500016f, -0.989000022f, 0.259750009f, 1.99800003f, -0.739250004f},
    {0.480968446f, -0.978484273f, 0.267099857f, 1.98865247f, -0.72935456f},
    {0.476641238f, -0.969489217f, 0.274557799f, 1.98444951f, -0.719345987f},
    {0.470705152f, -0.959849417f, 0.278880626f, 1.97846842f, -0.709266782f},
    {0.469456345f, -0.950428426f, 0.284736782f, 1.97028732f, -0.699087679f},
};

static void fill_grad(tt_tensor *w, int t) {
    float *g = tt_grad_ensure(w);
    for (int k = 0; k < NW; k++)
        g[k] = (float)(0.3 * (double)w->data[k] - 0.1 * (k + 1) +
                       0.2 * (double)(((t * 7 + k * 3) % 5) - 2));
}

/* Tolerance: torch's CPU kernels may fuse a*x+y into one FMA (one rounding instead of
 * two) and divide by a scalar via its reciprocal, so single steps can differ by ~1 ulp;
 * over 5 steps with momentum the drift stays below ~1e-6 relative. 1e-5 relative is two
 * orders above that and three below any formula error (a wrong bias correction or a
 * missing weight decay changes the weights by >= 1e-3 relative here). */
static void check_against(tt_optim *o, tt_tensor *w, const float ref[NSTEPS][NW],
                          const char *label) {
    double worst = 0.0;
    for (int t = 1; t <= NSTEPS; t++) {
        fill_grad(w, t);
        tt_optim_step(o);
        for (int k = 0; k < NW; k++) {
            double err = fabs((double)w->data[k] - (double)ref[t - 1][k]);
            double tol = 1e-7 + 1e-5 * fabs((double)ref[t - 1][k]);
            if (err / tol > worst) worst = err / tol;
            ck_assert_msg(err <= tol, "%s step %d w[%d] = %.9g, torch %.9g", label, t, k,
                          (double)w->data[k], (double)ref[t - 1][k]);
        }
    }
    printf("  %s: 5 steps match torch, worst error/tolerance %.3g\n", label, worst);
}

static tt_tensor *make_w(tt_params *p) {
    tt_tensor *w = tt_param_new(p, TT_SHAPE(NW), "w");
    memcpy(w->data, W0, sizeof W0);
    return w;
}

START_TEST(test_sgd_momentum_matches_torch) {
    tt_params p = {0};
    tt_tensor *w = make_w(&p);
    tt_optim *o = tt_optim_sgd(&p, 0.1f, 0.9f, 0.01f, false);
    check_against(o, w, REF_SGD, "sgd(momentum 0.9, wd 0.01)");
    ck_assert_int_eq(o->step, NSTEPS);
    tt_optim_free(o);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_sgd_nesterov_matches_torch) {
    tt_params p = {0};
    tt_tensor *w = make_w(&p);
    tt_optim *o = tt_optim_sgd(&p, 0.1f, 0.9f, 0.01f, true);
    check_against(o, w, REF_NESTEROV, "sgd(nesterov, momentum 0.9, wd 0.01)");
    tt_optim_free(o);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_adamw_matches_torch) {
    tt_params p = {0};
    tt_tensor *w = make_w(&p);
    tt_optim *o = tt_optim_adamw(&p, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f);
    check_against(o, w, REF_ADAMW, "adamw(lr 1e-2, betas (0.9, 0.95), wd 0.1)");
    tt_optim_free(o);
    tt_params_free(&p);
}
END_TEST

/* The update of a large parameter is cut into chunks shared between threads, together
 * with the other parameters' chunks (optim.c, tt_optim_step). Parameters: "big" (5 x 60001
 * elements: many chunks and a partial last one, above the threshold for threads) and
 * "w" (5). big[k] starts as W0[k % 5] and gets w's gradient pattern, so after every step
 * each big[k] must equal w[k % 5] bit for bit (a chunk updated at a wrong offset, or
 * with another chunk's state, breaks that), and the weights after 1 and 2 threads must be
 * the same bits. For SGD (plain; momentum with Nesterov and weight decay) and AdamW. */
static void fill_tiled_grad(tt_tensor *big, tt_tensor *w, int t) {
    fill_grad(w, t);
    float *g = tt_grad_ensure(big);
    for (size_t k = 0; k < big->size; k++) g[k] = w->grad[k % NW];
}

static float *run_tiled(int kind, int threads) {
    set_threads(threads);
    tt_params p = {0};
    tt_tensor *w = make_w(&p);
    tt_tensor *big = tt_param_new(&p, TT_SHAPE(NW, 60001), "big");
    for (size_t k = 0; k < big->size; k++) big->data[k] = W0[k % NW];
    tt_optim *o = kind == 0   ? tt_optim_sgd(&p, 0.1f, 0.0f, 0.0f, false)
                  : kind == 1 ? tt_optim_sgd(&p, 0.1f, 0.9f, 0.01f, true)
                              : tt_optim_adamw(&p, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f);
    for (int t = 1; t <= NSTEPS; t++) {
        fill_tiled_grad(big, w, t);
        tt_optim_step(o);
        /* (one assertion for the whole tensor: a check call per element costs minutes
         * under valgrind) */
        size_t bad = big->size;
        for (size_t k = 0; k < big->size && bad == big->size; k++)
            if (memcmp(&big->data[k], &w->data[k % NW], sizeof(float)) != 0) bad = k;
        ck_assert_msg(bad == big->size,
                      "optimizer %d, %d thread(s), step %d: big[%zu] = %.9g, w[%zu] = %.9g", kind,
                      threads, t, bad, (double)big->data[bad % big->size], bad % NW,
                      (double)w->data[bad % NW]);
    }
    float *out = malloc(big->size * sizeof(float));
    memcpy(out, big->data, big->size * sizeof(float));
    tt_optim_free(o);
    tt_params_free(&p);
    return out;
}

START_TEST(test_chunks_and_threads_same_bits) {
    const int saved = max_threads();
    for (int kind = 0; kind < 3; kind++) {
        float *one = run_tiled(kind, 1), *two = run_tiled(kind, 2);
        ck_assert_msg(memcmp(one, two, (size_t)NW * 60001 * sizeof(float)) == 0,
                      "optimizer %d: 1 and 2 threads give different weights", kind);
        free(one);
        free(two);
    }
    set_threads(saved);
}
END_TEST

START_TEST(test_plain_sgd_by_hand) {
    /* no momentum, no decay: w -= lr * g exactly, and no state tensors */
    tt_params p = {0};
    tt_tensor *w = tt_param_new(&p, TT_SHAPE(2), "w");
    w->data[0] = 1.0f;
    w->data[1] = -2.0f;
    tt_grad_ensure(w)[0] = 0.5f;
    w->grad[1] = -0.25f;
    tt_optim *o = tt_optim_sgd(&p, 0.5f, 0.0f, 0.0f, false);
    ck_assert_int_eq(o->state.n, 0);
    tt_optim_step(o);
    ck_assert_float_eq(w->data[0], 0.75f);
    ck_assert_float_eq(w->data[1], -1.875f);
    tt_optim_free(o);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_state_names_and_skipping) {
    tt_params p = {0};
    tt_tensor *a = tt_param_new(&p, TT_SHAPE(2, 3), "layers.0.fc.weight");
    tt_tensor *bias = tt_param_new(&p, TT_SHAPE(4), "moe.selection_bias");
    tt_set_requires_grad(bias, false);
    tt_tensor *c = tt_param_new(&p, TT_SHAPE(3), "c"); /* requires grad, never gets one */
    for (int i = 0; i < 4; i++) bias->data[i] = 0.5f;
    for (int i = 0; i < 3; i++) c->data[i] = 1.0f;
    tt_grad_ensure(bias)[0] = 1.0f; /* a grad buffer on a non-grad parameter: still skipped */

    tt_optim *sgd = tt_optim_sgd(&p, 0.1f, 0.9f, 0.1f, false);
    ck_assert_int_eq(sgd->state.n, 2);
    ck_assert_ptr_nonnull(tt_params_find(&sgd->state, "optim.momentum.layers.0.fc.weight"));
    ck_assert_ptr_nonnull(tt_params_find(&sgd->state, "optim.momentum.c"));
    ck_assert_ptr_null(tt_params_find(&sgd->state, "optim.momentum.moe.selection_bias"));
    ck_assert_int_eq(tt_params_find(&sgd->state, "optim.momentum.layers.0.fc.weight")->shape[1], 3);

    tt_optim *adam = tt_optim_adamw(&p, 0.1f, 0.9f, 0.999f, 1e-8f, 0.1f);
    ck_assert_int_eq(adam->state.n, 4);
    ck_assert_ptr_nonnull(tt_params_find(&adam->state, "optim.exp_avg.layers.0.fc.weight"));
    ck_assert_ptr_nonnull(tt_params_find(&adam->state, "optim.exp_avg_sq.layers.0.fc.weight"));
    ck_assert_ptr_nonnull(tt_params_find(&adam->state, "optim.exp_avg_sq.c"));

    tt_grad_ensure(a);
    for (int i = 0; i < 6; i++) a->grad[i] = 1.0f;
    tt_mem_stats before = tt_mem_get_stats();
    tt_optim_step(sgd);
    tt_optim_step(adam);
    tt_mem_stats after = tt_mem_get_stats();
    ck_assert_uint_eq(before.persistent, after.persistent); /* step allocates nothing */
    ck_assert_uint_eq(before.n_persistent, after.n_persistent);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(bias->data[i], 0.5f); /* untouched */
    for (int i = 0; i < 3; i++) ck_assert_float_eq(c->data[i], 1.0f);    /* no grad: no decay */
    ck_assert_float_lt(a->data[0], 0.0f);
    tt_optim_zero_grad(sgd);
    ck_assert_float_eq(a->grad[0], 0.0f);
    tt_optim_free(sgd);
    tt_optim_free(adam);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_invalid_hyperparameters) {
    tt_params p = {0};
    tt_param_new(&p, TT_SHAPE(2), "w");
    TT_EXPECT_ERROR(tt_optim_adamw(&p, 1e-3f, 1.0f, 0.999f, 1e-8f, 0.0f), "invalid beta1 1");
    TT_EXPECT_ERROR(tt_optim_adamw(&p, 1e-3f, 0.9f, -0.5f, 1e-8f, 0.0f), "invalid beta2 -0.5");
    TT_EXPECT_ERROR(tt_optim_sgd(&p, -1.0f, 0.0f, 0.0f, false), "invalid learning rate -1");
    TT_EXPECT_ERROR(tt_optim_sgd(&p, 0.1f, 0.0f, 0.0f, true), "Nesterov momentum requires");
    tt_params_free(&p);
    /* a name that leaves no room for "optim.exp_avg_sq." */
    tt_param_new(&p, TT_SHAPE(2), "%s", "layers.10.moe.shared_experts.0.w1.weight.extra_long");
    TT_EXPECT_ERROR(tt_optim_adamw(&p, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f),
                    "state name 'optim.exp_avg_sq.layers.10.moe");
    tt_params_free(&p);
}
END_TEST

START_TEST(test_clip_grad_norm) {
    tt_params p = {0};
    tt_tensor *a = tt_param_new(&p, TT_SHAPE(2), "a");
    tt_tensor *b = tt_param_new(&p, TT_SHAPE(1), "b");
    tt_tensor *frozen = tt_param_new(&p, TT_SHAPE(1), "frozen");
    tt_param_new(&p, TT_SHAPE(3), "nograd"); /* requires grad, no buffer: ignored */
    tt_set_requires_grad(frozen, false);
    tt_grad_ensure(a)[0] = 3.0f;
    a->grad[1] = 4.0f;
    tt_grad_ensure(b)[0] = 12.0f;
    tt_grad_ensure(frozen)[0] = 100.0f; /* not counted, not scaled */

    /* max_norm above the norm: nothing changes, the norm is returned */
    ck_assert_float_eq(tt_clip_grad_norm(&p, 20.0f), 13.0f);
    ck_assert_float_eq(a->grad[0], 3.0f);
    ck_assert_float_eq(b->grad[0], 12.0f);

    /* clip to 6.5: scale = 6.5 / (13 + 1e-6), as torch.nn.utils.clip_grad_norm_ */
    float norm = tt_clip_grad_norm(&p, 6.5f);
    ck_assert_float_eq(norm, 13.0f);
    float c = (float)(6.5 / (13.0 + 1e-6));
    ck_assert_float_eq(a->grad[0], 3.0f * c);
    ck_assert_float_eq(a->grad[1], 4.0f * c);
    ck_assert_float_eq(b->grad[0], 12.0f * c);
    ck_assert_float_eq(frozen->grad[0], 100.0f);
    ck_assert_float_eq_tol(tt_clip_grad_norm(&p, 100.0f), 6.5f, 1e-5f);

    /* a non-finite norm is reported and the gradients are left alone */
    b->grad[0] = INFINITY;
    ck_assert(isinf(tt_clip_grad_norm(&p, 1.0f)));
    ck_assert_float_eq(a->grad[0], 3.0f * c);
    tt_params_free(&p);
}
END_TEST

/* Clipping over many chunks (optim.c sums the squares chunk by chunk, on the threads):
 * three parameters of 40000, 5 and 70001 elements with known values. The norm matches
 * a plain double sum to float precision, the scaled gradients are g * coef bit for bit, and
 * 1 and 2 threads give the same bits (norm and gradients). */
static float clip_big(int threads, float **grads_out) {
    set_threads(threads);
    tt_params p = {0};
    const int sizes[3] = {40000, 5, 70001};
    double want = 0.0;
    for (int i = 0; i < 3; i++) {
        tt_tensor *t = tt_param_new(&p, TT_SHAPE(sizes[i]), "p%d", i);
        float *g = tt_grad_ensure(t);
        for (int k = 0; k < sizes[i]; k++) {
            g[k] = (float)((k * 37 + i * 11) % 101 - 50) * 0.01f;
            want += (double)g[k] * (double)g[k];
        }
    }
    want = sqrt(want);
    const float norm = tt_clip_grad_norm(&p, 1.0f);
    ck_assert_msg(fabs((double)norm - want) <= 1e-6 * want, "norm %.9g, plain sum %.9g",
                  (double)norm, want);
    const float coef = (float)(1.0 / (want + 1e-6));
    size_t total = 0;
    for (int i = 0; i < 3; i++) total += (size_t)sizes[i];
    float *out = malloc(total * sizeof(float)), *o = out;
    for (int i = 0; i < 3; i++) {
        const tt_tensor *t = p.t[i];
        int bad = -1; /* (one assertion per tensor, as above) */
        for (int k = 0; k < sizes[i] && bad < 0; k++) {
            const float g0 = (float)((k * 37 + i * 11) % 101 - 50) * 0.01f;
            if (!(t->grad[k] == g0 * coef)) bad = k;
        }
        ck_assert_msg(bad < 0, "p%d[%d] = %.9g, not the gradient times %.9g", i, bad,
                      bad < 0 ? 0.0 : (double)t->grad[bad], (double)coef);
        memcpy(o, t->grad, (size_t)sizes[i] * sizeof(float));
        o += sizes[i];
    }
    tt_params_free(&p);
    *grads_out = out;
    return norm;
}

START_TEST(test_clip_grad_norm_chunks) {
    const int saved = max_threads();
    float *g1, *g2;
    const float n1 = clip_big(1, &g1), n2 = clip_big(2, &g2);
    ck_assert_msg(memcmp(&n1, &n2, sizeof n1) == 0, "norm %.9g (1 thread), %.9g (2)",
                  (double)n1, (double)n2);
    ck_assert(memcmp(g1, g2, (size_t)(40000 + 5 + 70001) * sizeof(float)) == 0);
    free(g1);
    free(g2);
    set_threads(saved);
}
END_TEST

START_TEST(test_lr_schedule) {
    tt_lr_schedule c = {TT_LR_CONSTANT, 3e-4f, 0.0f, 0, 0};
    ck_assert_float_eq(tt_lr_at(&c, 0), 3e-4f);
    ck_assert_float_eq(tt_lr_at(&c, 12345), 3e-4f);

    tt_lr_schedule s = {TT_LR_WARMUP_COSINE, 1e-3f, 1e-4f, 10, 110};
    ck_assert_float_eq_tol(tt_lr_at(&s, 0), 1e-4f, 1e-10f);   /* base / warmup      */
    ck_assert_float_eq_tol(tt_lr_at(&s, 4), 5e-4f, 1e-10f);   /* linear             */
    ck_assert_float_eq_tol(tt_lr_at(&s, 9), 1e-3f, 1e-10f);   /* end of warm-up     */
    ck_assert_float_eq_tol(tt_lr_at(&s, 10), 1e-3f, 1e-10f);  /* cosine starts at base */
    ck_assert_float_eq_tol(tt_lr_at(&s, 60), 5.5e-4f, 1e-10f); /* midpoint (base+min)/2 */
    ck_assert_float_eq_tol(tt_lr_at(&s, 110), 1e-4f, 1e-10f); /* end = min          */
    ck_assert_float_eq_tol(tt_lr_at(&s, 5000), 1e-4f, 1e-10f);
    for (long t = 10; t < 110; t++) ck_assert_float_le(tt_lr_at(&s, t + 1), tt_lr_at(&s, t));

    tt_lr_schedule nowarm = {TT_LR_WARMUP_COSINE, 1.0f, 0.0f, 0, 100};
    ck_assert_float_eq(tt_lr_at(&nowarm, 0), 1.0f);
    ck_assert_float_eq_tol(tt_lr_at(&nowarm, 50), 0.5f, 1e-7f);
}
END_TEST

/* ---- an MLP 4 -> 16 -> 1 learning y = x0 x1 + 0.5 x2 - x3^2 ---------------------------- */
#define NDATA 64
#define NBATCH 16
typedef struct mlp {
    tt_params p;
    tt_linear fc1, fc2;
    float xs[NDATA][4], ys[NDATA];
    tt_tensor *x, *y;
} mlp;

static void mlp_init(mlp *m) {
    memset(m, 0, sizeof *m);
    tt_manual_seed(1234);
    tt_linear_init(&m->fc1, &m->p, "fc1", 4, 16, true);
    tt_linear_init(&m->fc2, &m->p, "fc2", 16, 1, true);
    tt_rng *r = tt_rng_global();
    for (int i = 0; i < NDATA; i++) {
        for (int j = 0; j < 4; j++) m->xs[i][j] = 2.0f * tt_rng_uniform(r) - 1.0f;
        const float *x = m->xs[i];
        m->ys[i] = x[0] * x[1] + 0.5f * x[2] - x[3] * x[3];
    }
    m->x = tt_zeros(TT_SHAPE(NBATCH, 4));
    m->y = tt_zeros(TT_SHAPE(NBATCH, 1));
}

static void mlp_free(mlp *m) {
    tt_params_free(&m->p);
    tt_free(m->x);
    tt_free(m->y);
}

/* one step on a random minibatch; returns the loss. to_none: tt_optim_grad_to_none
 * instead of tt_optim_zero_grad */
static float mlp_step_with(mlp *m, tt_optim *o, bool to_none) {
    tt_rng *r = tt_rng_global();
    for (int b = 0; b < NBATCH; b++) {
        int i = (int)tt_rng_below(r, NDATA);
        memcpy(m->x->data + 4 * b, m->xs[i], sizeof m->xs[i]);
        m->y->data[b] = m->ys[i];
    }
    tt_tensor *h = tt_relu(tt_linear_forward(&m->fc1, m->x));
    tt_tensor *d = tt_sub(tt_linear_forward(&m->fc2, h), m->y);
    tt_tensor *loss = tt_mean_all(tt_mul(d, d));
    float l = tt_item(loss);
    if (to_none)
        tt_optim_grad_to_none(o);
    else
        tt_optim_zero_grad(o);
    tt_backward(loss);
    tt_optim_step(o);
    tt_tape_reset();
    return l;
}

static float mlp_step(mlp *m, tt_optim *o) { return mlp_step_with(m, o, false); }

static void train_reduces_loss(bool adam) {
    mlp m;
    mlp_init(&m);
    tt_optim *o = adam ? tt_optim_adamw(&m.p, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f)
                       : tt_optim_sgd(&m.p, 0.05f, 0.9f, 1e-4f, false);
    double first = 0, last = 0;
    for (int s = 0; s < 400; s++) {
        float l = mlp_step(&m, o);
        ck_assert(isfinite(l));
        if (s < 20) first += l / 20.0;
        if (s >= 380) last += l / 20.0;
    }
    printf("  %s: mean loss of steps 0-19 %.4f, of steps 380-399 %.4f\n", adam ? "adamw" : "sgd",
           first, last);
    ck_assert_msg(last < 0.25 * first, "loss %.4f -> %.4f did not drop by 4x", first, last);
    tt_optim_free(o);
    mlp_free(&m);
}

/* tt_optim_grad_to_none (torch's set_to_none=True): grads are NULL until the backward,
 * which then writes the same buffers (no new allocation) with the same bits as zeroing and
 * accumulating, so 50 steps of training give bit-identical losses and weights; a
 * parameter the backward does not reach keeps grad NULL and the step leaves it alone. */
START_TEST(test_grad_to_none_same_bits) {
    mlp a, b;
    for (int run = 0; run < 2; run++) {
        mlp *m = run ? &b : &a;
        mlp_init(m);
        tt_optim *o = tt_optim_sgd(&m->p, 0.05f, 0.9f, 1e-4f, false);
        float *bufs[8] = {0};
        ck_assert_int_le(m->p.n, 8);
        for (int s = 0; s < 50; s++) {
            mlp_step_with(m, o, run == 1);
            for (int i = 0; i < m->p.n; i++) {
                if (s == 0) bufs[i] = m->p.t[i]->grad;
                /* the same buffer every step: kept, not reallocated */
                ck_assert_ptr_eq(m->p.t[i]->grad, bufs[i]);
            }
        }
        if (run == 1) {
            tt_optim_grad_to_none(o);
            for (int i = 0; i < m->p.n; i++) {
                ck_assert_ptr_null(m->p.t[i]->grad);
                ck_assert_ptr_eq(m->p.t[i]->grad_spare, bufs[i]);
            }
            /* a step with no backward: every grad NULL, no parameter changes */
            tt_tensor *before[8];
            for (int i = 0; i < m->p.n; i++) before[i] = tt_clone(m->p.t[i]);
            tt_optim_step(o);
            for (int i = 0; i < m->p.n; i++) {
                ck_assert_msg(memcmp(before[i]->data, m->p.t[i]->data,
                                     m->p.t[i]->size * sizeof(float)) == 0,
                              "%s changed in a step without gradients", m->p.t[i]->name);
                tt_free(before[i]);
            }
        }
        tt_optim_free(o);
    }
    for (int i = 0; i < a.p.n; i++)
        ck_assert_msg(memcmp(a.p.t[i]->data, b.p.t[i]->data, a.p.t[i]->size * sizeof(float)) == 0,
                      "%s differs after 50 steps with grad_to_none", a.p.t[i]->name);
    mlp_free(&a);
    mlp_free(&b); /* frees the kept buffers too (leak-checked under ASan and valgrind) */
}
END_TEST

START_TEST(test_mlp_sgd_trains) { train_reduces_loss(false); }
END_TEST
START_TEST(test_mlp_adamw_trains) { train_reduces_loss(true); }
END_TEST

static Suite *optim_suite(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optim");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sgd_momentum_matches_torch);
    tcase_add_test(tc, test_sgd_nesterov_matches_torch);
    tcase_add_test(tc, test_adamw_matches_torch);
    tcase_add_test(tc, test_chunks_and_threads_same_bits);
    tcase_add_test(tc, test_plain_sgd_by_hand);
    tcase_add_test(tc, test_state_names_and_skipping);
    tcase_add_test(tc, test_invalid_hyperparameters);
    tcase_add_test(tc, test_clip_grad_norm);
    tcase_add_test(tc, test_clip_grad_norm_chunks);
    tcase_add_test(tc, test_lr_schedule);
    tcase_add_test(tc, test_grad_to_none_same_bits);
    tcase_add_test(tc, test_mlp_sgd_trains);
    tcase_add_test(tc, test_mlp_adamw_trains);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(optim_suite)

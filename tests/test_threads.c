/* test_threads.c - the thread count changes no result: a few training steps of a model
 * big enough to take every parallel path (GEMMs split between threads, parallel
 * elementwise loops, attention over (batch, head), scatter-adds split by columns) give
 * the same losses and the same parameters, bit for bit, with 1 and with 2 threads.
 *
 * Every parallel loop in the library either gives each output element to one thread with
 * a fixed order of its terms, or splits a sum at fixed points that do not depend on the
 * thread count; this test is what holds them to it. */
#include "tt_test.h"

#include "nn/deepseek.h"
#include "optim/optim.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { STEPS = 3, B = 8, T = 64 };

typedef struct run_result {
    float loss[STEPS];
    float *params; /* every parameter, concatenated */
    size_t n;
} run_result;

static run_result train(int threads, const tt_dsv3_config *cfg) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
    tt_manual_seed(5);
    tt_dsv3 *m = tt_dsv3_new(cfg);
    ck_assert_ptr_nonnull(m);
    tt_optim *opt = tt_optim_sgd(&m->params, 0.05f, 0.9f, 0.0f, false);
    tt_tensor *ids = tt_tensor_new(TT_I32, TT_SHAPE(B, T));
    tt_tensor *tgt = tt_tensor_new(TT_I32, TT_SHAPE(B, T));
    tt_rng r;
    tt_rng_seed(&r, 9);
    run_result res = {0};
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < B * T; i++) {
            tt_ids(ids)[i] = (int32_t)tt_rng_below(&r, (uint32_t)cfg->vocab);
            tt_ids(tgt)[i] = (int32_t)tt_rng_below(&r, (uint32_t)cfg->vocab);
        }
        tt_optim_zero_grad(opt);
        tt_dsv3_output out = tt_dsv3_forward(m, ids, tgt);
        tt_backward(out.loss);
        tt_optim_step(opt);
        res.loss[s] = tt_item(out.loss);
        tt_tape_reset();
    }
    res.n = tt_params_numel(&m->params);
    res.params = malloc(res.n * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < m->params.n; i++) {
        const tt_tensor *t = m->params.t[i];
        memcpy(res.params + off, t->data, t->size * sizeof(float));
        off += t->size;
    }
    tt_free(ids);
    tt_free(tgt);
    tt_optim_free(opt);
    tt_dsv3_free(m);
    return res;
}

static void check_config(const tt_dsv3_config *cfg) {
#ifndef _OPENMP
    /* one thread is all there is (and the valgrind build, which has no OpenMP, would
     * spend minutes on two identical runs) */
    (void)cfg;
    printf("  built without OpenMP: no thread counts to compare\n");
    return;
#endif
    run_result one = train(1, cfg), two = train(2, cfg);
    for (int s = 0; s < STEPS; s++) {
        printf("  step %d: loss %.9g (1 thread) %.9g (2 threads)\n", s + 1, (double)one.loss[s],
               (double)two.loss[s]);
        ck_assert_msg(memcmp(&one.loss[s], &two.loss[s], sizeof(float)) == 0,
                      "step %d: loss %.9g with 1 thread, %.9g with 2", s + 1,
                      (double)one.loss[s], (double)two.loss[s]);
    }
    ck_assert_uint_eq(one.n, two.n);
    size_t differ = 0;
    for (size_t i = 0; i < one.n; i++)
        differ += memcmp(&one.params[i], &two.params[i], sizeof(float)) != 0;
    ck_assert_msg(differ == 0, "%zu of %zu parameters differ between 1 and 2 threads", differ,
                  one.n);
    free(one.params);
    free(two.params);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
}

START_TEST(test_seed_model_threads) {
    /* 512 tokens of dim 128: GEMMs of 8M+ multiply-adds, 64K-element activations */
    tt_dsv3_config cfg = {.vocab = 256, .dim = 128, .n_layers = 2, .n_heads = 4,
                          .n_experts = 8, .top_k = 2, .expert_hidden = 512, .rank = 32,
                          .max_seq = T, .aux_alpha = 0.01f, .noise_std = 0.0f};
    check_config(&cfg);
}
END_TEST

static Suite *threads_suite(void) {
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 600); /* valgrind */
    tcase_add_test(tc, test_seed_model_threads);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(threads_suite)

/* bench_train.c - training-step time of the seed-style DeepSeek V3 model (tt_dsv3).
 *
 * One step = zero the gradients, forward (cross entropy + balance losses), backward,
 * SGD update (lr 0.1, no momentum), release the tape. Token batches are random
 * (uniform over the vocabulary) from a fixed seed, a fresh batch every step; the
 * targets are the inputs shifted by one position of a random sequence of length T + 1.
 *
 * Protocol: `warmup` untimed steps, then up to `steps` timed steps (stopping early once
 * `budget` seconds of timed steps have passed, but never before 3); the median step time
 * is reported. Run one configuration per process so that ru_maxrss is that
 * configuration's own peak resident memory.
 *
 * FLOPs are counted analytically from the configuration: the matmuls only (2 M N K
 * for each Linear on the rows it actually sees - the experts on the N*top_k routed
 * rows, the router on all N - plus the attention products Q K^T and A V over the full
 * T x T square that the library computes); backward costs twice the forward.
 *
 * Output: a human-readable report and two lines for the driver script:
 *   RESULT impl=tinytorch config=... threads=... ms=... tok_s=... gflops=... ...
 *   LOSSES impl=tinytorch config=... threads=... <loss of every step, %.9g = exact>
 *
 *   usage: bench_train CONFIG [THREADS] [--threads N] [--steps N] [--warmup N]
 *                      [--budget SECONDS] [--peak GFLOPS]
 *   CONFIG: toy | small | medium
 */
#define _GNU_SOURCE
#include "tinytorch.h"
#include "kernels/gemm.h"
#include "nn/deepseek.h"
#include "optim/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct bench_config {
    const char *name;
    int vocab, dim, layers, heads, experts, top_k, rank, seq, batch;
    int warmup, steps; /* default step counts */
} bench_config;

/* The table; expert width 4 x hidden, max_seq = seq. */
static const bench_config configs[] = {
    {"toy", 100, 64, 2, 4, 4, 2, 16, 32, 8, 5, 50},
    {"small", 256, 256, 4, 8, 8, 2, 64, 128, 8, 2, 10},
    {"medium", 256, 512, 6, 8, 16, 2, 128, 256, 8, 1, 5},
};

static double now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Forward matmul FLOPs of one step (see the header comment). */
static double forward_flops(const bench_config *c) {
    const double N = (double)c->batch * c->seq, d = c->dim, r = c->rank, V = c->vocab;
    const double E = c->experts, k = c->top_k, h = 4.0 * c->dim, T = c->seq;
    double per_layer = 2 * N * d * d          /* q_proj                      */
                       + 2 * N * d * r        /* kv_a_proj                   */
                       + 2 * N * r * 2 * d    /* kv_b_proj                   */
                       + 2 * N * T * d        /* Q K^T: B H T T hd = N T d   */
                       + 2 * N * T * d        /* A V                         */
                       + 2 * N * d * d        /* o_proj                      */
                       + 2 * N * d * E        /* router                      */
                       + 2 * (N * k) * d * h  /* expert fc1 on routed rows   */
                       + 2 * (N * k) * h * d; /* expert fc2                  */
    return c->layers * per_layer + 2 * N * d * V; /* + head */
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s CONFIG [THREADS] [--threads N] [--steps N] [--warmup N]\n"
            "          [--budget SECONDS] [--peak GFLOPS]\n"
            "CONFIG: toy | small | medium\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage(argv[0]);
    const bench_config *bc = NULL;
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
        if (!strcmp(argv[1], configs[i].name)) bc = &configs[i];
    if (!bc) usage(argv[0]);
    int threads = 1, steps = bc->steps, warmup = bc->warmup;
    double budget = 30.0, peak = 0.0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--threads") && has) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && has) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--budget") && has) budget = atof(argv[++i]);
        else if (!strcmp(a, "--peak") && has) peak = atof(argv[++i]);
        else if (a[0] >= '0' && a[0] <= '9') threads = atoi(a);
        else usage(argv[0]);
    }
    if (threads < 1 || steps < 1 || warmup < 0) usage(argv[0]);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#else
    if (threads != 1) fprintf(stderr, "bench_train: built without OpenMP, running 1 thread\n");
    threads = 1;
#endif

    tt_dsv3_config cfg = {
        .vocab = bc->vocab,
        .dim = bc->dim,
        .n_layers = bc->layers,
        .n_heads = bc->heads,
        .n_experts = bc->experts,
        .top_k = bc->top_k,
        .expert_hidden = 4 * bc->dim,
        .rank = bc->rank,
        .max_seq = bc->seq,
        .aux_alpha = 0.01f,
        .noise_std = 0.0f,
    };
    tt_manual_seed(1234);
    tt_dsv3 *m = tt_dsv3_new(&cfg);
    if (!m) {
        fprintf(stderr, "bench_train: %s\n", tt_last_error());
        return 1;
    }
    tt_optim *opt = tt_optim_sgd(&m->params, 0.1f, 0.0f, 0.0f, false);

    const int B = bc->batch, T = bc->seq;
    tt_tensor *ids = tt_tensor_new(TT_I32, TT_SHAPE(B, T));
    tt_tensor *targets = tt_tensor_new(TT_I32, TT_SHAPE(B, T));
    tt_rng data;
    tt_rng_seed(&data, 42);

    const int total = warmup + steps;
    double *ms = calloc((size_t)total, sizeof *ms);
    float *losses = calloc((size_t)total, sizeof *losses);
    int done = 0, timed = 0;
    double timed_sec = 0;
    for (int s = 0; s < total; s++) {
        /* a random sequence of T + 1 tokens per row: inputs [0, T), targets [1, T] */
        for (int b = 0; b < B; b++) {
            int32_t prev = (int32_t)tt_rng_below(&data, (uint32_t)bc->vocab);
            for (int t = 0; t < T; t++) {
                int32_t next = (int32_t)tt_rng_below(&data, (uint32_t)bc->vocab);
                tt_ids(ids)[b * T + t] = prev;
                tt_ids(targets)[b * T + t] = next;
                prev = next;
            }
        }
        double t0 = now_sec();
        tt_optim_grad_to_none(opt); /* as torch's zero_grad(set_to_none=True) */
        tt_dsv3_output out = tt_dsv3_forward(m, ids, targets);
        tt_backward(out.loss);
        tt_optim_step(opt);
        losses[s] = tt_item(out.loss);
        tt_tape_reset();
        double dt = now_sec() - t0;
        ms[s] = 1e3 * dt;
        done = s + 1;
        if (s >= warmup) {
            timed++;
            timed_sec += dt;
            if (timed >= 3 && timed_sec > budget) break;
        }
    }

    double *sorted = malloc((size_t)timed * sizeof *sorted);
    memcpy(sorted, ms + warmup, (size_t)timed * sizeof *sorted);
    qsort(sorted, (size_t)timed, sizeof *sorted, cmp_double);
    double med = timed % 2 ? sorted[timed / 2] : 0.5 * (sorted[timed / 2 - 1] + sorted[timed / 2]);
    double best = sorted[0], worst = sorted[timed - 1];

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
    tt_mem_stats mem = tt_mem_get_stats();

    const double tokens = (double)B * T;
    const double fwd = forward_flops(bc), step_flops = 3.0 * fwd;
    const double gflops = step_flops / (med * 1e-3) * 1e-9;
    const size_t n_params = tt_dsv3_n_params(m), n_active = tt_dsv3_n_active_params(m);
    float last = losses[done - 1];
    bool finite = true;
    for (int s = 0; s < done; s++) finite = finite && isfinite(losses[s]);

    printf("tinytorch %s, %d thread%s (gemm kernel %s)\n", bc->name, threads,
           threads == 1 ? "" : "s", tt_gemm_kernel());
    printf("  model: vocab %d, hidden %d, %d layers, %d heads, %d experts (top %d, width %d),"
           " rank %d; batch %d x seq %d\n",
           bc->vocab, bc->dim, bc->layers, bc->heads, bc->experts, bc->top_k, 4 * bc->dim,
           bc->rank, B, T);
    printf("  parameters %zu, activated per token %zu\n", n_params, n_active);
    printf("  steps: %d warm-up + %d timed; ms/step median %.2f (min %.2f, max %.2f)\n",
           warmup, timed, med, best, worst);
    printf("  tokens/s %.0f\n", tokens / (med * 1e-3));
    printf("  matmul FLOPs/step %.3f G (6 x active params x tokens = %.3f G); %.1f GFLOP/s",
           step_flops * 1e-9, 6.0 * (double)n_active * tokens * 1e-9, gflops);
    if (peak > 0) printf(" = %.1f%% of the measured %.1f GFLOP/s peak", 100 * gflops / peak, peak);
    printf("\n");
    printf("  peak RSS %.1f MB (arena peak %.1f MB, persistent %.1f MB)\n", rss_mb,
           (double)mem.arena_peak / 1048576.0, (double)mem.persistent / 1048576.0);
    printf("  loss: first %.6f, last %.6f (%s)\n", (double)losses[0], (double)last,
           finite ? "finite" : "NOT FINITE");
    printf("RESULT impl=tinytorch config=%s threads=%d warmup=%d steps=%d ms=%.4f ms_min=%.4f "
           "tok_s=%.1f gflop_step=%.4f gflops=%.2f pct_peak=%.2f rss_mb=%.1f loss=%.6f "
           "finite=%d\n",
           bc->name, threads, warmup, timed, med, best, tokens / (med * 1e-3), step_flops * 1e-9,
           gflops, peak > 0 ? 100 * gflops / peak : 0.0, rss_mb, (double)last, finite ? 1 : 0);
    printf("LOSSES impl=tinytorch config=%s threads=%d", bc->name, threads);
    /* %.9g round-trips a float exactly: equal strings <=> equal bits (for finite values) */
    for (int s = 0; s < done; s++) printf(" %.9g", (double)losses[s]);
    printf("\n");

    free(sorted);
    free(ms);
    free(losses);
    tt_free(ids);
    tt_free(targets);
    tt_optim_free(opt);
    tt_dsv3_free(m);
    return finite ? 0 : 1;
}

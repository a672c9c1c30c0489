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
 * The peak alongside the steps: this host's speed drifts by 10-35% within a minute, so a
 * peak measured once before the runs (peak.c, --peak) may belong to a faster or slower
 * spell than the steps. So the FMA loop (fma.h, as in peak.c) also runs briefly on the
 * same threads (a probe: the best of PROBE_REPS runs of ~PROBE_SEC) before the first
 * timed step and after every WINDOW_SEC of timed steps, outside the timed part (it
 * touches no memory).
 * peak_adj is the median of the probes, pct_adj the median step's FLOP rate over it: two
 * medians over the same spell. (A probe is short next to a medium step: a window's rate
 * over the probes on either side of it swings with every disturbed probe, the median of
 * all probes much less.)
 *
 * --alternate A,B measures what B threads buy over A in one process instead: after
 * `warmup` steps on each count, the timed steps run in blocks of four on A, B, B, A
 * threads (omp_set_num_threads before each step), and each block gives the ratio
 * (B1 + B2) / (A1 + A2). Runs minutes apart can land in different spells of a shared
 * host (its speed drifts by 10-35% here); steps interleaved like this see the same ones,
 * and the ABBA order cancels a drift that is linear over a block. A timed step on more
 * threads than the step before it is preceded by one untimed step on its own count (a
 * settling step): on the 2-vCPU VMs here the first step after the second thread sat idle
 * for a whole 1-thread step ran ~8% slower than the next one (medium, fourteenth session:
 * its first parallel region waited 25-29 ms for the second thread to start), which a
 * training run on a fixed thread count never pays. Stops once `budget` seconds have
 * passed (at least ALT_MIN_BLOCKS blocks) or after `steps` blocks. Output:
 *   SCALING impl=tinytorch config=... threads=A,B blocks=... ratio=... (median of the
 *           blocks' ratios) ratio_p25=... ratio_p75=... ms_a=... ms_b=... (medians)
 *   LOSSES  impl=tinytorch config=... threads=A,B ...  (the same bits as on A threads)
 *
 * --profile ROWS prints tinytorch's op profile (profile.h) of the timed steps: the ROWS
 * costliest rows (op, caller file:line, module) with their forward and backward time.
 * With --alternate it prints one table for both thread counts instead, per step: each
 * row's time on A and on B threads, the gain A / B, and what B loses against a perfect
 * split (B - A x A / B threads): where the second thread's time goes, op by op, measured
 * on the same spells of the host.
 *
 *   usage: bench_train CONFIG [THREADS] [--threads N] [--steps N] [--warmup N]
 *                      [--budget SECONDS] [--peak GFLOPS] [--alternate A,B]
 *                      [--profile ROWS]
 *   CONFIG: toy | small | medium
 */
#define _GNU_SOURCE
#include "fma.h"
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

/* The peak probes between windows of timed steps (see the header comment). */
#define WINDOW_SEC 0.25
#define PROBE_SEC 0.005
#define PROBE_REPS 3

typedef struct peak_probe {
    fma_isa isa;
    long iters; /* one run of ~PROBE_SEC on one thread */
    int threads;
} peak_probe;

static double probe_peak(const peak_probe *p) {
    double best = 0;
    for (int i = 0; i < PROBE_REPS; i++) {
        double g = fma_gflops(p->isa, p->threads, p->iters);
        if (g > best) best = g;
    }
    return best;
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
            "          [--budget SECONDS] [--peak GFLOPS] [--alternate A,B]\n"
            "          [--profile ROWS]\n"
            "CONFIG: toy | small | medium\n",
            argv0);
    exit(2);
}

/* The model, its optimizer and the batch source of one run. */
typedef struct bench_run {
    const bench_config *bc;
    tt_dsv3 *m;
    tt_optim *opt;
    tt_tensor *ids, *targets;
    tt_rng data;
} bench_run;

/* One training step on the next batch; returns its wall time in seconds (the batch is
 * generated outside the timed part) and stores the loss. */
static double train_step(bench_run *r, float *loss) {
    const int B = r->bc->batch, T = r->bc->seq;
    /* a random sequence of T + 1 tokens per row: inputs [0, T), targets [1, T] */
    for (int b = 0; b < B; b++) {
        int32_t prev = (int32_t)tt_rng_below(&r->data, (uint32_t)r->bc->vocab);
        for (int t = 0; t < T; t++) {
            int32_t next = (int32_t)tt_rng_below(&r->data, (uint32_t)r->bc->vocab);
            tt_ids(r->ids)[b * T + t] = prev;
            tt_ids(r->targets)[b * T + t] = next;
            prev = next;
        }
    }
    double t0 = fma_now_sec();
    tt_optim_grad_to_none(r->opt); /* as torch's zero_grad(set_to_none=True) */
    tt_dsv3_output out = tt_dsv3_forward(r->m, r->ids, r->targets);
    tt_backward(out.loss);
    tt_optim_step(r->opt);
    *loss = tt_item(out.loss);
    tt_tape_reset();
    return fma_now_sec() - t0;
}

static void bench_run_free(bench_run *r) {
    tt_free(r->ids);
    tt_free(r->targets);
    tt_optim_free(r->opt);
    tt_dsv3_free(r->m);
}

static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static bool all_finite(const float *losses, int n) {
    for (int s = 0; s < n; s++)
        if (!isfinite(losses[s])) return false;
    return true;
}

/* The LOSSES line; threads is "1", "2" or "1,2". %.9g round-trips a float exactly: equal
 * strings <=> equal bits (for finite values). */
static void print_losses(const char *config, const char *threads, const float *losses, int n) {
    printf("LOSSES impl=tinytorch config=%s threads=%s", config, threads);
    for (int s = 0; s < n; s++) printf(" %.9g", (double)losses[s]);
    printf("\n");
}

/* --alternate --profile: the op profile of each thread count, from the profiler's one
 * table. Its entries keep their indices (first seen first) and only grow, so a step's
 * share of entry i is the entry's total after the step minus its total before. */
typedef struct arm_table {
    double *before;   /* per entry: its total (forward + backward) after the last step */
    double *sec[2];   /* per entry: the sum over the steps of arm 0 (A) / arm 1 (B)     */
    int n;            /* entries covered by the arrays                                  */
    double wall_before, wall[2];
    int steps[2];
} arm_table;

static double entry_sec(int i) {
    const tt_profile_entry *e = tt_profile_entry_at(i);
    return e->fwd_sec + e->bwd_sec;
}

static double *grow_zeroed(double *v, int from, int to) {
    double *g = realloc(v, (size_t)to * sizeof *g);
    if (!g) {
        fprintf(stderr, "bench_train: out of memory\n");
        exit(1);
    }
    memset(g + from, 0, (size_t)(to - from) * sizeof *g);
    return g;
}

/* adds the step just profiled to arm `arm` */
static void arm_add_step(arm_table *t, int arm) {
    const int n = tt_profile_count();
    if (n > t->n) {
        t->before = grow_zeroed(t->before, t->n, n);
        for (int k = 0; k < 2; k++) t->sec[k] = grow_zeroed(t->sec[k], t->n, n);
        t->n = n;
    }
    for (int i = 0; i < n; i++) {
        const double now = entry_sec(i);
        t->sec[arm][i] += now - t->before[i];
        t->before[i] = now;
    }
    const double wall = tt_profile_wall_sec();
    t->wall[arm] += wall - t->wall_before;
    t->wall_before = wall;
    t->steps[arm]++;
}

typedef struct arm_row {
    int entry;
    double a, b; /* ms per step on A and on B threads */
} arm_row;

static int cmp_arm_row(const void *x, const void *y) {
    const double a = ((const arm_row *)x)->a, b = ((const arm_row *)y)->a;
    return (a < b) - (a > b); /* costliest on A threads first */
}

static void arm_print(const arm_table *t, int ta, int tb, int max_rows) {
    if (t->steps[0] == 0 || t->steps[1] == 0) return;
    const double ka = 1e3 / t->steps[0], kb = 1e3 / t->steps[1], ideal = (double)ta / tb;
    arm_row *rows = malloc((size_t)(t->n ? t->n : 1) * sizeof *rows);
    double ops_a = 0, ops_b = 0;
    for (int i = 0; i < t->n; i++) {
        rows[i] = (arm_row){i, ka * t->sec[0][i], kb * t->sec[1][i]};
        ops_a += rows[i].a, ops_b += rows[i].b;
    }
    qsort(rows, (size_t)t->n, sizeof *rows, cmp_arm_row);
    printf("  op profile per step, %d against %d threads (%d + %d timed steps; \"lost\": ms "
           "above a perfect split)\n", ta, tb, t->steps[0], t->steps[1]);
    printf("  %9s %9s %7s %8s  %-14s %-28s %s\n", "A ms", "B ms", "A / B", "lost", "op",
           "module", "called at");
    for (int r = 0; r < t->n && r < max_rows; r++) {
        const arm_row *w = &rows[r];
        const tt_profile_entry *e = tt_profile_entry_at(w->entry);
        printf("  %9.2f %9.2f %6.2fx %8.2f  %-14s %-28s %s:%d\n", w->a, w->b,
               w->b > 0 ? w->a / w->b : 0.0, w->b - w->a * ideal, e->op,
               e->module[0] ? e->module : "-", e->src.file, e->src.line);
    }
    free(rows);
    const double wa = ka * t->wall[0], wb = kb * t->wall[1];
    const double oa = wa - ops_a, ob = wb - ops_b;
    printf("  %9.2f %9.2f %6.2fx %8.2f  outside ops (optimizer, data, ...)\n", oa, ob,
           ob > 0 ? oa / ob : 0.0, ob - oa * ideal);
    printf("  %9.2f %9.2f %6.2fx %8.2f  the whole step (mean of the profiled steps)\n", wa, wb,
           wb > 0 ? wa / wb : 0.0, wb - wa * ideal);
}

/* The fewest ABBA blocks of --alternate, whatever the budget: a median of 3 blocks moved
 * with single disturbed steps (medium, twentieth session: quartiles 0.534-0.592 of the
 * 1-thread time, one block in either spell deciding the median); 5 cost a medium run
 * 15 s more. */
#define ALT_MIN_BLOCKS 5

/* --alternate: steps on ta and tb threads in ABBA blocks (see the header comment). */
static int run_alternate(bench_run *r, int ta, int tb, int warmup, int max_blocks,
                         double budget, int profile_rows) {
    const bench_config *bc = r->bc;
    const int total = 2 * warmup + 6 * max_blocks; /* (4 timed and at most 2 settling) */
    float *losses = calloc((size_t)total, sizeof *losses);
    double *ratio = calloc((size_t)max_blocks, sizeof *ratio);
    double *ms_a = calloc((size_t)2 * max_blocks, sizeof *ms_a);
    double *ms_b = calloc((size_t)2 * max_blocks, sizeof *ms_b);
    int done = 0, blocks = 0;
    arm_table arms = {0};
    for (int w = 0; w < 2 * warmup; w++) {
        set_threads(w < warmup ? ta : tb);
        train_step(r, &losses[done++]);
    }
    double timed_sec = 0;
    int last = warmup ? tb : ta; /* the thread count of the step before */
    while (blocks < max_blocks && !(blocks >= ALT_MIN_BLOCKS && timed_sec > budget)) {
        const int order[4] = {ta, tb, tb, ta};
        double t[4];
        for (int i = 0; i < 4; i++) {
            set_threads(order[i]);
            if (order[i] > last) train_step(r, &losses[done++]); /* settling, untimed */
            last = order[i];
            if (profile_rows > 0) tt_profile_start();
            t[i] = train_step(r, &losses[done++]);
            tt_profile_stop();
            if (profile_rows > 0) arm_add_step(&arms, i == 1 || i == 2);
            timed_sec += t[i];
        }
        ratio[blocks] = (t[1] + t[2]) / (t[0] + t[3]);
        ms_a[2 * blocks] = 1e3 * t[0], ms_a[2 * blocks + 1] = 1e3 * t[3];
        ms_b[2 * blocks] = 1e3 * t[1], ms_b[2 * blocks + 1] = 1e3 * t[2];
        blocks++;
    }
    const bool finite = all_finite(losses, done);
    const double med_a = median_of(ms_a, 2 * blocks), med_b = median_of(ms_b, 2 * blocks);
    const double rq = median_of(ratio, blocks); /* (sorts ratio: quartiles below) */
    printf("tinytorch %s, steps alternating %d / %d threads (gemm kernel %s)\n", bc->name, ta,
           tb, tt_gemm_kernel());
    printf("  %d warm-up steps on each, then %d blocks of 4 (A B B A, and an untimed step"
           " before each switch to more threads); ms/step median %.2f on %d, %.2f on %d\n",
           warmup, blocks, med_a, ta, med_b, tb);
    printf("  a %d-thread step takes %.3f of a %d-thread one (median of the blocks; quartiles"
           " %.3f-%.3f): %.2fx\n",
           tb, rq, ta, ratio[blocks / 4], ratio[(3 * blocks) / 4], 1.0 / rq);
    if (profile_rows > 0) arm_print(&arms, ta, tb, profile_rows);
    printf("SCALING impl=tinytorch config=%s threads=%d,%d blocks=%d ratio=%.4f ratio_p25=%.4f "
           "ratio_p75=%.4f ms_a=%.4f ms_b=%.4f finite=%d\n",
           bc->name, ta, tb, blocks, rq, ratio[blocks / 4], ratio[(3 * blocks) / 4], med_a,
           med_b, finite ? 1 : 0);
    char label[32];
    snprintf(label, sizeof label, "%d,%d", ta, tb);
    print_losses(bc->name, label, losses, done);
    free(losses);
    free(ratio);
    free(ms_a);
    free(ms_b);
    free(arms.before);
    free(arms.sec[0]);
    free(arms.sec[1]);
    tt_profile_reset();
    return finite ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) usage(argv[0]);
    const bench_config *bc = NULL;
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
        if (!strcmp(argv[1], configs[i].name)) bc = &configs[i];
    if (!bc) usage(argv[0]);
    int threads = 1, steps = bc->steps, warmup = bc->warmup, alt_a = 0, alt_b = 0;
    int profile_rows = 0;
    double budget = 30.0, peak = 0.0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--threads") && has) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--steps") && has) steps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && has) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--budget") && has) budget = atof(argv[++i]);
        else if (!strcmp(a, "--peak") && has) peak = atof(argv[++i]);
        else if (!strcmp(a, "--profile") && has) {
            profile_rows = atoi(argv[++i]);
            if (profile_rows < 1) usage(argv[0]);
        }
        else if (!strcmp(a, "--alternate") && has) {
            if (sscanf(argv[++i], "%d,%d", &alt_a, &alt_b) != 2 || alt_a < 1 || alt_b < 1)
                usage(argv[0]);
        }
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
    const int B = bc->batch, T = bc->seq;
    bench_run run = {bc, m, tt_optim_sgd(&m->params, 0.1f, 0.0f, 0.0f, false),
                     tt_tensor_new(TT_I32, TT_SHAPE(B, T)), tt_tensor_new(TT_I32, TT_SHAPE(B, T)),
                     {0}};
    tt_rng_seed(&run.data, 42);
    if (alt_a > 0) {
        int rc = run_alternate(&run, alt_a, alt_b, warmup > 0 ? warmup : 1, steps, budget,
                               profile_rows);
        bench_run_free(&run);
        return rc;
    }

    const int total = warmup + steps;
    double *ms = calloc((size_t)total, sizeof *ms);
    float *losses = calloc((size_t)total, sizeof *losses);
    double *probes = calloc((size_t)steps + 1, sizeof *probes);
    const double fwd = forward_flops(bc), step_flops = 3.0 * fwd;
    peak_probe probe = {fma_detect_isa(), 0, threads};
    probe.iters = fma_calibrate(probe.isa, PROBE_SEC, 1000);
    int done = 0, timed = 0, n_probes = 0;
    double timed_sec = 0, window_sec = 0;
    for (int s = 0; s < total; s++) {
        if (s == warmup) probes[n_probes++] = probe_peak(&probe);
        /* the timed steps only: not the warm-up, not the probes */
        if (profile_rows > 0 && s >= warmup) tt_profile_start();
        double dt = train_step(&run, &losses[s]);
        tt_profile_stop();
        ms[s] = 1e3 * dt;
        done = s + 1;
        if (s < warmup) continue;
        timed++;
        timed_sec += dt;
        const bool last = s + 1 == total || (timed >= 3 && timed_sec > budget);
        window_sec += dt;
        if (window_sec >= WINDOW_SEC || last) {
            probes[n_probes++] = probe_peak(&probe);
            window_sec = 0;
        }
        if (last) break;
    }
    const double peak_adj = median_of(probes, n_probes); /* (sorts: [0], [n - 1] the range) */

    double *sorted = malloc((size_t)timed * sizeof *sorted);
    memcpy(sorted, ms + warmup, (size_t)timed * sizeof *sorted);
    double med = median_of(sorted, timed); /* (sorts) */
    double best = sorted[0], worst = sorted[timed - 1];

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
    tt_mem_stats mem = tt_mem_get_stats();

    const double tokens = (double)B * T;
    const double gflops = step_flops / (med * 1e-3) * 1e-9, pct_adj = 100 * gflops / peak_adj;
    const size_t n_params = tt_dsv3_n_params(m), n_active = tt_dsv3_n_active_params(m);
    float last = losses[done - 1];
    const bool finite = all_finite(losses, done);

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
    printf("  peak alongside the steps (%s FMA loop, %d thread%s): median %.1f GFLOP/s of %d"
           " probes (%.1f-%.1f); the median step's rate is %.1f%% of it\n",
           fma_isa_name[probe.isa], threads, threads == 1 ? "" : "s", peak_adj, n_probes,
           probes[0], probes[n_probes - 1], pct_adj);
    printf("  peak RSS %.1f MB (arena peak %.1f MB, persistent %.1f MB)\n", rss_mb,
           (double)mem.arena_peak / 1048576.0, (double)mem.persistent / 1048576.0);
    printf("  loss: first %.6f, last %.6f (%s)\n", (double)losses[0], (double)last,
           finite ? "finite" : "NOT FINITE");
    if (profile_rows > 0) {
        printf("  op profile of the %d timed steps (%d costliest rows):\n", timed, profile_rows);
        tt_profile_print(stdout, profile_rows);
        tt_profile_reset();
    }
    printf("RESULT impl=tinytorch config=%s threads=%d warmup=%d steps=%d ms=%.4f ms_min=%.4f "
           "tok_s=%.1f gflop_step=%.4f gflops=%.2f pct_peak=%.2f peak_adj=%.1f pct_adj=%.2f "
           "rss_mb=%.1f loss=%.6f finite=%d\n",
           bc->name, threads, warmup, timed, med, best, tokens / (med * 1e-3), step_flops * 1e-9,
           gflops, peak > 0 ? 100 * gflops / peak : 0.0, peak_adj, pct_adj, rss_mb, (double)last,
           finite ? 1 : 0);
    char label[16];
    snprintf(label, sizeof label, "%d", threads);
    print_losses(bc->name, label, losses, done);

    free(sorted);
    free(ms);
    free(losses);
    free(probes);
    bench_run_free(&run);
    return finite ? 0 : 1;
}

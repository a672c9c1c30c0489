/* train_toy.c - train the DeepSeek-V3 toy model (MLA attention + MoE) on a source whose
 * entropy rate is known exactly, and watch it reach the floor.
 *
 *   ./build/examples/deepseek/train_toy                 the model card, then training
 *   ./build/examples/deepseek/train_toy --aux-alpha 0   without the balance loss
 *   ./build/examples/deepseek/train_toy --data FILE     any file, bytes as tokens
 *   ./build/examples/deepseek/train_toy --preset v3     the faithful V3 architecture
 *   ./build/examples/deepseek/train_toy --config m.json a V3 model from ModelArgs JSON
 *   ./build/examples/deepseek/train_toy --help
 *
 * Two models. --preset seed (default): the seed's tt_dsv3 (post-norm, learned positions,
 * softmax router with a balance loss, SGD). --preset v3: tt_v3 (nn/v3.h), the official
 * inference code's architecture with a small ModelArgs config sized to the seed model's
 * activated parameter count, trained as the technical report says (shared/deepseek_v3.md
 * section 8): the aux-loss-free bias update (--gamma), the complementary sequence-wise
 * balance loss (--aux-alpha), Multi-Token Prediction with D = 1 (--mtp-lambda), AdamW
 * with betas (0.9, 0.95), weight decay 0.1 and gradient clipping at 1.0.
 *
 * One step: a batch of windows (a pure function of seed and step, see corpus.h), the
 * forward pass, loss = cross entropy + the layers' balance losses (+ lambda * the MTP
 * cross entropy), backward, gradient clipping, an SGD (or AdamW) update with a warm-up +
 * cosine learning rate (v3: then the gate-bias update).
 * The held-out loss is the mean cross entropy over fresh windows of the source, on the
 * positions that have their full context, so it is directly comparable with the floor.
 */
#include "corpus.h"
#include "flags.h"
#include "plot.h"
#include "progress.h"
#include "toyckpt.h"

#include "tinytorch.h"
#include "nn/deepseek.h"
#include "optim/optim.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define EVAL_BATCHES 8 /* held-out windows: 8 batches of --batch windows, always the same */
/* The train-loss history for the plot keeps at most HIST_MAX points: when full, every
 * second point is dropped and the stride doubles, so a run of any length uses the same
 * memory (flat resident memory in long runs: bench/soak.c). */
#define HIST_MAX 4096

/* v3 preset defaults, tuned on the synthetic source at 1500 steps (held-out loss, seed 1):
 * init 0.006 (V3's own) with lr 0.006: 1.462; init 0.02 with lr 0.004: 1.498, lr 0.01:
 * 1.497; init 0.006 with lr 0.01: 1.498; lr 0.006 without MTP: 1.558. */
#define V3_LR 0.006f
#define V3_INIT_STD 0.006f

/* ---- options --------------------------------------------------------------------------- */
typedef struct options {
    int steps, batch, seq, stop_at, warmup, eval_every, print_every, threads, save_every;
    int profile; /* rows of the op profile printed at the end (0: no profile) */
    bool detect_anomaly, mem_stats;
    int optim; /* 0 sgd, 1 adamw */
    float lr, momentum, weight_decay, clip, aux_alpha;
    int experts, topk, hidden, layers, heads, rank, seed;
    int preset; /* TOYCKPT_SEED | TOYCKPT_V3 */
    float gamma, mtp_lambda, init_std; /* v3 only */
    const char *data, *save, *resume, *log, *plot, *config;
} options;

static const char *optim_names[] = {"sgd", "adamw"};

/* ---- the run's state ---------------------------------------------------------------------- */
typedef struct run {
    options o;
    corpus data;
    tt_dsv3 *model;         /* --preset seed, else NULL                                  */
    tt_v3 *v3;              /* --preset v3, else NULL                                    */
    tt_params *params;      /* the model's parameters (whichever it is)                  */
    int n_moe, n_experts;   /* MoE layers (all of the seed's) and experts per layer      */
    int *moe_layer;         /* [n_moe] their layer indices                               */
    tt_optim *opt;
    tt_lr_schedule sched;
    long step;              /* steps done                                                */
    tt_tensor *ids, *targets;
    /* history for the plot */
    int n_hist, n_eval;
    long hist_stride, hist_seen; /* one point per hist_stride steps; steps seen          */
    double *hist_step, *hist_loss, *eval_step, *eval_loss, *eval_maxload; /* [.. * n_moe] */
} run;

typedef struct eval_result {
    double ce;              /* mean cross entropy over the scored held-out positions      */
    double *share;          /* [n_moe * experts] share of routed slots                    */
    double *max_mean;       /* [n_moe] max load / mean load                               */
    double *balance;        /* [n_moe] E * sum_i f_i P_i (1 = uniform)                     */
    double *bias_lo, *bias_hi; /* [n_moe] range of the v3 gate bias (0 without one)       */
} eval_result;

/* Exit codes: 0 done, 1 runtime error, 2 bad command line, 3 the training diverged (a
 * non-finite loss, or a NaN/Inf found by --detect-anomaly). */
enum { EXIT_DIVERGED = 3 };

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "train_toy: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* ---- evaluation ------------------------------------------------------------------------------ */
static void eval_alloc(eval_result *e, const run *r) {
    const size_t M = (size_t)r->n_moe + 1; /* + 1: never a zero-size allocation */
    e->share = calloc(M * r->n_experts, sizeof *e->share);
    e->max_mean = calloc(M, sizeof *e->max_mean);
    e->balance = calloc(M, sizeof *e->balance);
    e->bias_lo = calloc(M, sizeof *e->bias_lo);
    e->bias_hi = calloc(M, sizeof *e->bias_hi);
    if (!e->share || !e->max_mean || !e->balance || !e->bias_lo || !e->bias_hi) abort();
}

static void eval_free(eval_result *e) {
    free(e->share);
    free(e->max_mean);
    free(e->balance);
    free(e->bias_lo);
    free(e->bias_hi);
}

/* ---- the v3 model ---------------------------------------------------------------------------- */
/* The --preset v3 config: tt_v3_config_toy (4 layers, the first dense; 8 routed experts in
 * 4 groups of which 2 are kept, 1 shared, 2 active; sigmoid scores with the gate bias,
 * route_scale 2.5; q_lora_rank 32, kv_lora_rank 32, dn 16, dr 8, dv 16) with the FFN
 * widths raised so that the ACTIVATED parameter count matches the seed model's: on the
 * synthetic source (vocabulary 100) 173,144 against the seed's 173,444 (-0.2%).
 * Vocabulary = the data's; max_seq_len >= the window length (no YaRN below 4096). */
static tt_v3_config v3_preset_config(int vocab, int seq, float mtp_lambda) {
    tt_v3_config c = tt_v3_config_toy();
    c.vocab_size = vocab;
    c.inter_dim = 132;     /* toy: 128 */
    c.moe_inter_dim = 40;  /* toy: 32  */
    if (seq > c.max_seq_len) c.max_seq_len = seq;
    c.n_mtp_modules = mtp_lambda != 0.0f ? 1 : 0;
    return c;
}

/* Parameter counts of a v3 model: the main model's total and per-token activated (all
 * but the n_routed - n_activated unchosen routed experts of each MoE layer), and the
 * same two for the MTP module (training only, discarded at inference). */
typedef struct v3_counts { size_t total, active, mtp_total, mtp_active; } v3_counts;
static v3_counts v3_count(const tt_v3 *m) {
    const tt_v3_config *c = &m->cfg;
    size_t routed = 0, mtp_routed = 0;
    v3_counts n = {0, 0, 0, 0};
    for (int i = 0; i < m->params.n; i++) {
        const tt_tensor *t = m->params.t[i];
        const bool mtp = !strncmp(t->name, "mtp.", 4), expert = strstr(t->name, ".ffn.experts.") != NULL;
        if (mtp) n.mtp_total += t->size, mtp_routed += expert ? t->size : 0;
        else n.total += t->size, routed += expert ? t->size : 0;
    }
    const size_t E = (size_t)c->n_routed_experts, idle = E - (size_t)c->n_activated_experts;
    n.active = n.total - routed / E * idle;
    n.mtp_active = n.mtp_total - mtp_routed / E * idle;
    return n;
}

static void fill_batch(run *r, corpus_split split, long step) {
    corpus_batch(&r->data, split, step, r->o.batch, r->o.seq, tt_ids(r->ids), tt_ids(r->targets));
}

/* Cross entropy and expert load on the fixed held-out windows, in eval mode (no noise,
 * no tape; v3: no MTP, no balance loss). Routing statistics: f_i = share of the N*K
 * routed slots that went to expert i, P_i = mean router probability of i (v3's sigmoid
 * scores normalised over all experts first, s' of eq. 19); max/mean = max_i f_i * E. */
static void evaluate(run *r, eval_result *e) {
    const int L = r->n_moe, E = r->n_experts;
    double ce = 0, *counts = calloc((size_t)(L + 1) * E, sizeof *counts);
    double *psum = calloc((size_t)(L + 1) * E, sizeof *psum), n_tokens = 0;
    if (!counts || !psum) abort();
    if (r->model) r->model->training = false;
    tt_no_grad_begin();
    for (int b = 0; b < EVAL_BATCHES; b++) {
        fill_batch(r, CORPUS_HELDOUT, b);
        tt_tensor *logits;
        const tt_routing *routing;
        if (r->v3) {
            tt_v3_output out = tt_v3_forward(r->v3, r->ids, NULL, 0.0f);
            logits = out.logits, routing = out.routing;
        } else {
            tt_dsv3_output out = tt_dsv3_forward(r->model, r->ids, NULL);
            logits = out.logits, routing = out.routing;
        }
        ce += tt_item(tt_cross_entropy(logits, r->targets, CORPUS_IGNORE));
        for (int l = 0; l < L; l++) {
            const tt_routing *rt = &routing[r->moe_layer[l]];
            for (int i = 0; i < E; i++) counts[l * E + i] += rt->counts[i];
            for (int n = 0; n < rt->n_tokens; n++) {
                const float *s = rt->scores->data + (size_t)n * E;
                double z = 1;
                if (r->v3) {
                    z = 0;
                    for (int i = 0; i < E; i++) z += s[i];
                }
                for (int i = 0; i < E; i++) psum[l * E + i] += s[i] / z;
            }
        }
        if (L > 0) n_tokens += routing[r->moe_layer[0]].n_tokens;
        tt_tape_reset();
    }
    tt_no_grad_end();
    if (r->model) r->model->training = true;
    e->ce = ce / EVAL_BATCHES;
    for (int l = 0; l < L; l++) {
        const tt_tensor *bias = r->v3 ? r->v3->layers[r->moe_layer[l]].moe.gate.bias : NULL;
        e->bias_lo[l] = e->bias_hi[l] = 0;
        for (int i = 0; bias && i < E; i++) {
            if (i == 0 || bias->data[i] < e->bias_lo[l]) e->bias_lo[l] = bias->data[i];
            if (i == 0 || bias->data[i] > e->bias_hi[l]) e->bias_hi[l] = bias->data[i];
        }
    }
    for (int l = 0; l < L; l++) {
        double total = 0, mx = 0, bal = 0;
        for (int i = 0; i < E; i++) total += counts[l * E + i];
        for (int i = 0; i < E; i++) {
            double f = total > 0 ? counts[l * E + i] / total : 0;
            e->share[l * E + i] = f;
            if (f > mx) mx = f;
            bal += f * psum[l * E + i] / n_tokens;
        }
        e->max_mean[l] = mx * E;
        e->balance[l] = bal * E;
    }
    free(counts);
    free(psum);
}

static double worst_max_mean(const eval_result *e, int layers) {
    double w = 0;
    for (int l = 0; l < layers; l++)
        if (e->max_mean[l] > w) w = e->max_mean[l];
    return w;
}

/* ---- printing ----------------------------------------------------------------------------------- */
static const char *const score_names[] = {"softmax", "sigmoid"};

/* The v3 model card: every ModelArgs field, the MLA cache and the parameter counts next
 * to the seed model's (seed_active: its activated count on the same data). */
static void print_card_v3(const run *r, size_t seed_active) {
    const tt_v3_config *c = &r->v3->cfg;
    const v3_counts n = v3_count(r->v3);
    const int H = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim,
              dv = c->v_head_dim;
    const long cache_b = (long)c->n_layers * (c->kv_lora_rank + dr) * 4;
    const long full_b = (long)c->n_layers * H * (dn + dr + dv) * 4;
    printf("DeepSeek-V3 model, faithful architecture (--preset v3%s%s, tinyTorch-C)\n",
           r->o.config ? ", --config " : "", r->o.config ? r->o.config : "");
    printf("  vocab_size             %d%s\n", c->vocab_size,
           r->data.kind == CORPUS_BYTES ? " (bytes)" : "");
    printf("  dim                    %d\n", c->dim);
    printf("  n_layers               %d (n_dense_layers %d: SwiGLU inter_dim %d; then MoE)\n",
           c->n_layers, c->n_dense_layers, c->inter_dim);
    printf("  n_heads                %d (qk_nope_head_dim %d + qk_rope_head_dim %d, v_head_dim %d)\n",
           H, dn, dr, dv);
    printf("  MLA                    q_lora_rank %d, kv_lora_rank %d (cache %ld B/token instead of "
           "%ld B for full K/V per head)\n", c->q_lora_rank, c->kv_lora_rank, cache_b, full_b);
    printf("  experts                %d routed + %d shared (moe_inter_dim %d), %d active per token\n",
           c->n_routed_experts, c->n_shared_experts, c->moe_inter_dim, c->n_activated_experts);
    printf("  routing                %s scores, route_scale %g, %d groups (%d kept), gate bias %s\n",
           score_names[c->score_func], (double)c->route_scale, c->n_expert_groups,
           c->n_limited_groups, c->gate_bias ? "yes" : "no");
    printf("  positions              RoPE, max_seq_len %d, rope_theta %g (YaRN %s: original_seq_len "
           "%d, rope_factor %g, beta_fast %g, beta_slow %g, mscale %g)\n", c->max_seq_len,
           (double)c->rope_theta, c->max_seq_len > c->original_seq_len ? "on" : "off",
           c->original_seq_len, (double)c->rope_factor, (double)c->beta_fast,
           (double)c->beta_slow, (double)c->mscale);
    if (c->n_mtp_modules > 0)
        printf("  MTP                    %d module (D = 1): %zu parameters (%zu activated), "
               "training only\n", c->n_mtp_modules, n.mtp_total, n.mtp_active);
    else
        printf("  MTP                    none\n");
    printf("  parameters             %zu total (main model)\n", n.total);
    printf("  activated parameters   %zu per token (%.1f%%); seed preset on the same data: %zu\n",
           n.active, 100.0 * (double)n.active / (double)n.total, seed_active);
    printf("  init                   N(0, %g^2), norms 1, gate bias 0\n", (double)r->o.init_std);
}

static void print_card(const run *r) {
    const tt_dsv3_config *c = &r->model->cfg;
    const size_t total = tt_dsv3_n_params(r->model), active = tt_dsv3_n_active_params(r->model);
    printf("DeepSeek-V3 toy model (tinyTorch-C)\n");
    printf("  vocabulary             %d%s\n", c->vocab, r->data.kind == CORPUS_BYTES ? " (bytes)" : "");
    printf("  hidden                 %d\n", c->dim);
    printf("  layers                 %d\n", c->n_layers);
    printf("  heads                  %d (head dim %d)\n", c->n_heads, c->dim / c->n_heads);
    printf("  MLA latent rank        %d (KV cache %d B/token instead of %d B for full K/V)\n",
           c->rank, c->n_layers * c->rank * 4, 2 * c->n_layers * c->dim * 4);
    printf("  experts                %d per layer, %d active per token (expert hidden %d)\n",
           c->n_experts, c->top_k, c->expert_hidden);
    printf("  positions              %d (learned)\n", c->max_seq);
    printf("  parameters             %zu total\n", total);
    printf("  activated parameters   %zu per token (%.1f%%)\n", active,
           100.0 * (double)active / (double)total);
}

static void print_data(const run *r) {
    const corpus *d = &r->data;
    if (d->kind == CORPUS_SYNTHETIC) {
        printf("data: synthetic source (seed %d): x_t is uniform over the 4 tokens c in\n"
               "      x_{t-2} + [0, 8) (mod %d) whose colour (c >> 1) & 1 is the parity of x_{t-1}\n",
               r->o.seed, d->vocab);
        printf("  entropy rate (floor)   %.4f nats/token  = ln 4 (needs x_{t-2} and x_{t-1})\n", d->floor);
        printf("  best bigram model      %.4f nats/token  = ln 50 (sees x_{t-1} only)\n", d->bigram);
        printf("  best unigram model     %.4f nats/token\n", d->unigram);
    } else {
        printf("data: %s, %zu bytes (%zu train, %zu held out), bytes as tokens\n", d->source,
               d->n, d->n_train, d->n - d->n_train);
        printf("  unigram model          %.4f nats/token on held-out (add-one, fitted on train)\n",
               d->unigram);
        printf("  bigram model           %.4f nats/token on held-out (add-one, fitted on train)\n",
               d->bigram);
    }
}

static void print_training(const run *r) {
    const options *o = &r->o;
    printf("training: %s", optim_names[o->optim]);
    if (o->optim == 0) printf(" (momentum %g)", o->momentum);
    else printf(" (betas 0.9, 0.95, weight decay %g)", o->weight_decay);
    printf(", lr %g (warm-up %d, cosine to %g), batch %d x %d tokens, %d steps,\n",
           o->lr, r->sched.warmup_steps, r->sched.min_lr, o->batch, o->seq, o->steps);
    if (r->v3)
        printf("  bias update gamma %g%s, sequence-wise balance loss alpha %g, MTP lambda %g%s,\n",
               (double)o->gamma, o->gamma == 0 ? " (off)" : "", (double)o->aux_alpha,
               (double)o->mtp_lambda, o->mtp_lambda == 0 ? " (off)" : "");
    if (r->model) printf("  balance loss alpha %g,", r->model->cfg.aux_alpha);
    printf("  grad clip %g, held-out every %d steps on %d x %d windows", o->clip, o->eval_every,
           EVAL_BATCHES, o->batch);
#ifdef _OPENMP
    printf(", %d thread%s", omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");
#endif
    printf("\n");
}

static void print_load_table(const run *r, const eval_result *e) {
    const int E = r->n_experts;
    if (r->n_moe == 0) {
        printf("expert load: the model has no MoE layer\n");
        return;
    }
    printf("expert load on held-out data (share of the routed slots; uniform = %.1f%%):\n",
           100.0 / E);
    printf("  layer");
    for (int i = 0; i < E; i++) printf("  expert %-2d", i);
    printf("  max/mean  E*sum f*P%s\n", r->v3 ? "  gate bias min..max" : "");
    for (int l = 0; l < r->n_moe; l++) {
        printf("  %5d", r->moe_layer[l]);
        for (int i = 0; i < E; i++) printf("  %8.1f%%", 100.0 * e->share[l * E + i]);
        printf("  %8.2f  %9.3f", e->max_mean[l], e->balance[l]);
        if (r->v3) printf("  %+.4f..%+.4f", e->bias_lo[l], e->bias_hi[l]);
        printf("\n");
    }
    if (r->v3 && r->v3->cfg.n_dense_layers == 1) printf("  (layer 0 is dense)\n");
    else if (r->v3 && r->v3->cfg.n_dense_layers > 1)
        printf("  (layers 0..%d are dense)\n", r->v3->cfg.n_dense_layers - 1);
}

/* Record this step's loss in the plot's history (see HIST_MAX). */
static void hist_add(run *r, double loss) {
    if (r->hist_seen++ % r->hist_stride != 0) return;
    if (r->n_hist == HIST_MAX) { /* keep the points at multiples of twice the stride */
        for (int i = 0; i < HIST_MAX / 2; i++) {
            r->hist_step[i] = r->hist_step[2 * i];
            r->hist_loss[i] = r->hist_loss[2 * i];
        }
        r->n_hist = HIST_MAX / 2;
        r->hist_stride *= 2;
        if ((r->hist_seen - 1) % r->hist_stride != 0) return;
    }
    r->hist_step[r->n_hist] = (double)r->step;
    r->hist_loss[r->n_hist++] = loss;
}

/* ---- the plot ------------------------------------------------------------------------------------ */
static void write_plot(const run *r, const eval_result *last) {
    const int L = r->n_moe;
    double fx[2] = {r->n_hist ? r->hist_step[0] : 0, (double)r->step};
    double floor_y[2] = {r->data.floor, r->data.floor}, bigram_y[2] = {r->data.bigram, r->data.bigram};
    plot_series loss[4] = {
        {r->v3 && r->o.mtp_lambda != 0 ? "train loss (ce + aux + lambda mtp)" : "train loss (ce + aux)", "#9ecae1", r->n_hist, r->hist_step, r->hist_loss, PLOT_LINE},
        {"held-out loss", "#08519c", r->n_eval, r->eval_step, r->eval_loss, PLOT_POINTS},
        {r->data.kind == CORPUS_SYNTHETIC ? "bigram (exact)" : "bigram model", "#888", 2, fx,
         bigram_y, PLOT_DASHED},
        {"floor (entropy rate)", "#d62728", 2, fx, floor_y, PLOT_DASHED},
    };
    int n_loss = r->data.kind == CORPUS_SYNTHETIC ? 4 : 3;
    /* max/mean load per layer over the evaluations, plus the uniform line at 1 */
    plot_series *ls = calloc((size_t)L + 1, sizeof *ls);
    double **y = calloc((size_t)L, sizeof *y), one[2] = {1, 1};
    char (*labels)[32] = calloc((size_t)L, sizeof *labels);
    if (!ls || !y || !labels) abort();
    for (int l = 0; l < L; l++) {
        y[l] = calloc((size_t)r->n_eval + 1, sizeof **y);
        if (!y[l]) abort();
        for (int k = 0; k < r->n_eval; k++) y[l][k] = r->eval_maxload[(size_t)k * L + l];
        snprintf(labels[l], sizeof labels[l], "layer %d", r->moe_layer[l]);
        ls[l] = (plot_series){labels[l], NULL, r->n_eval, r->eval_step, y[l], PLOT_POINTS};
    }
    ls[L] = (plot_series){"uniform", "#000", 2, fx, one, PLOT_DASHED};
    char title[384], t1[64];
    if (r->v3)
        snprintf(title, sizeof title, "train_toy --preset v3: %s, gamma %g, alpha %g, MTP lambda "
                 "%g, %ld steps", r->data.source, (double)r->o.gamma, (double)r->o.aux_alpha,
                 (double)r->o.mtp_lambda, r->step);
    else
        snprintf(title, sizeof title, "train_toy: %s, aux alpha %g, %ld steps", r->data.source,
                 r->model->cfg.aux_alpha, r->step);
    snprintf(t1, sizeof t1, "Loss (nats/token)");
    plot_lines lines[2] = {
        {t1, "step", "nats per token", n_loss, loss},
        {"Expert load: max / mean (held-out)", "step", "max / mean", L + 1, ls},
    };
    plot_bars bars = {"Final expert load (held-out)", "share of routed slots", L, r->n_experts,
                      last->share, 1.0 / r->n_experts, "layer", "expert"};
    if (r->v3) { /* the bars are labelled "layer 0..": name them by MoE layer instead */
        bars.group_label = "MoE layer";
    }
    char err[512];
    if (plot_svg(r->o.plot, title, 2, lines, &bars, err, sizeof err) != 0)
        fprintf(stderr, "train_toy: warning: %s\n", err);
    else
        printf("plot written to %s\n", r->o.plot);
    for (int l = 0; l < L; l++) free(y[l]);
    free(y);
    free(ls);
    free(labels);
}

/* ---- checkpoints ----------------------------------------------------------------------------------- */
/* Settings stored in the checkpoint as "train.<name>" (see toyckpt.h). */
typedef struct setting {
    const char *flag;  /* the command-line flag                                      */
    char kind;         /* 'i' int, 'f' float                                         */
    size_t offset;     /* into options                                               */
    bool locked;       /* must not change on --resume (model, data, optimizer); an
                          unlocked one given with --resume replaces the file's value  */
    bool optional;     /* may be absent (checkpoints of older versions): default kept */
} setting;

static const setting settings[] = {
    {"steps", 'i', offsetof(options, steps), false, false},
    {"batch", 'i', offsetof(options, batch), true, false},
    {"seq", 'i', offsetof(options, seq), true, false},
    {"lr", 'f', offsetof(options, lr), true, false},
    {"optim", 'i', offsetof(options, optim), true, false},
    {"momentum", 'f', offsetof(options, momentum), true, false},
    {"weight-decay", 'f', offsetof(options, weight_decay), true, false},
    {"warmup", 'i', offsetof(options, warmup), true, false},
    {"clip", 'f', offsetof(options, clip), true, false},
    {"seed", 'i', offsetof(options, seed), true, false},
    {"eval-every", 'i', offsetof(options, eval_every), false, false},
    /* v3 training (the seed's alpha lives in its model config) */
    {"aux-alpha", 'f', offsetof(options, aux_alpha), true, true},
    {"gamma", 'f', offsetof(options, gamma), false, true},      /* V3 itself turns it off late */
    {"mtp-lambda", 'f', offsetof(options, mtp_lambda), false, true}, /* and lowers this */
    {"init-std", 'f', offsetof(options, init_std), true, true},
};
#define N_SETTINGS (int)(sizeof settings / sizeof settings[0])

/* Write the checkpoint --save atomically (a temporary, fsync, rename: see safetensors.h),
 * so a run killed at any moment leaves the previous complete checkpoint or the new one.
 * Returns 0, or 1 after printing why (the old file is then untouched). `quiet`: no
 * "checkpoint: ..." line (the periodic saves of --save-every). */
static int save(run *r, bool quiet) {
    const options *o = &r->o;
    char cfg_json[2048], values[N_SETTINGS][48], keys[N_SETTINGS][48];
    char size[32], hash[32], seed[32], sum[32];
    if (r->v3) tt_v3_config_to_json(&r->v3->cfg, cfg_json, sizeof cfg_json);
    else tt_dsv3_config_to_json(&r->model->cfg, cfg_json, sizeof cfg_json);
    tt_kv extra[N_SETTINGS + 9];
    int n = 0;
    extra[n++] = (tt_kv){"tt.program", TOYCKPT_PROGRAM};
    extra[n++] = (tt_kv){"train.preset", toyckpt_preset_names[o->preset]};
    for (int i = 0; i < N_SETTINGS; i++) {
        const char *at = (const char *)o + settings[i].offset;
        int v = *(const int *)at;
        if (!strcmp(settings[i].flag, "warmup")) v = r->sched.warmup_steps; /* resolved */
        if (settings[i].kind == 'i')
            snprintf(values[i], sizeof values[i], "%d", v);
        else
            snprintf(values[i], sizeof values[i], "%.9g", (double)*(const float *)at);
        snprintf(keys[i], sizeof keys[i], "train.%s", settings[i].flag);
        extra[n++] = (tt_kv){keys[i], values[i]};
    }
    snprintf(seed, sizeof seed, "%d", o->seed);
    extra[n++] = (tt_kv){"data.kind", r->data.kind == CORPUS_SYNTHETIC ? "synthetic" : "bytes"};
    extra[n++] = (tt_kv){"data.seed", seed};
    extra[n++] = (tt_kv){"data.sampler", "window (step * batch + row) of stream (seed, split)"};
    if (r->data.kind == CORPUS_BYTES) {
        snprintf(size, sizeof size, "%zu", r->data.n);
        snprintf(hash, sizeof hash, "%016" PRIx64,
                 toyckpt_fnv1a(r->data.bytes, r->data.n, TOYCKPT_FNV_INIT));
        extra[n++] = (tt_kv){"data.source", r->data.source};
        extra[n++] = (tt_kv){"data.bytes", size};
        extra[n++] = (tt_kv){"data.fnv1a", hash};
    }
    /* checksum over what the file will hold: parameters and optimizer state */
    uint64_t cs = toyckpt_checksum(r->params->n, r->params->t) +
                  toyckpt_checksum(r->opt->state.n, r->opt->state.t);
    snprintf(sum, sizeof sum, "%016" PRIx64, cs);
    extra[n++] = (tt_kv){"tt.checksum", sum};
    if (tt_checkpoint_save(o->save, r->params, r->opt, r->step, cfg_json, n, extra) !=
        TT_OK) {
        fflush(stdout);
        fprintf(stderr, "train_toy: error: checkpoint at step %ld not saved: %s\n", r->step,
                tt_last_error());
        return 1;
    }
    if (!quiet)
        printf("checkpoint: %s (step %ld; resume with --resume %s)\n", o->save, r->step, o->save);
    return 0;
}

/* Before the model exists: read the config and the run's settings from the checkpoint.
 * Flags that would change the model, the data or the optimizer must agree with it. */
static void resume_settings(options *o, const flag *table, int n_flags, toyckpt_model *model) {
    tt_safetensors st;
    char err[1024];
    if (toyckpt_open(o->resume, &st, model, err, sizeof err) != 0) die(1, "%s", err);
    if (toyckpt_verify(o->resume, &st, err, sizeof err) != 0) die(1, "%s", err);
    const tt_dsv3_config *cfg = &model->seed;
    if (flags_seen(table, n_flags, "preset") && o->preset != (int)model->preset)
        die(2, "--preset %s differs from the checkpoint '%s', which holds a %s model (omit "
               "--preset)", toyckpt_preset_names[o->preset], o->resume,
            toyckpt_preset_names[model->preset]);
    if (o->config)
        die(2, "--config conflicts with --resume: a resumed run keeps the model of the file");
    options f = *o;
    f.preset = (int)model->preset;
    for (int i = 0; i < N_SETTINGS; i++) {
        char key[64], why[128];
        snprintf(key, sizeof key, "train.%s", settings[i].flag);
        if (settings[i].optional && !tt_safetensors_meta(&st, key)) continue;
        const char *v = toyckpt_meta(o->resume, &st, key, err, sizeof err);
        if (!v) die(1, "%s", err);
        char *at = (char *)&f + settings[i].offset;
        int bad = settings[i].kind == 'i'
                      ? flags_parse_int(v, -1, 2147483647, (int *)at, why, sizeof why)
                      : flags_parse_float(v, 0, 1e30, (float *)at, why, sizeof why);
        if (bad) die(1, "'%s' is corrupt: metadata '%s' = '%s': %s", o->resume, key, v, why);
    }
    const char *kind = toyckpt_meta(o->resume, &st, "data.kind", err, sizeof err);
    if (!kind) die(1, "%s", err);
    f.data = NULL;
    if (!strcmp(kind, "bytes")) {
        const char *src = toyckpt_meta(o->resume, &st, "data.source", err, sizeof err);
        if (!src) die(1, "%s", err);
        static char source[256];
        snprintf(source, sizeof source, "%s", src);
        f.data = o->data ? o->data : source; /* the file may have moved: --data says where */
    } else if (strcmp(kind, "synthetic") != 0) {
        die(1, "'%s' is corrupt: unknown data.kind '%s'", o->resume, kind);
    } else if (o->data) {
        die(2, "--data %s conflicts with the checkpoint, which was trained on the synthetic "
               "source", o->data);
    }
    if (model->preset == TOYCKPT_SEED) {
        f.aux_alpha = cfg->aux_alpha;
        f.experts = cfg->n_experts, f.topk = cfg->top_k, f.hidden = cfg->dim;
        f.layers = cfg->n_layers, f.heads = cfg->n_heads, f.rank = cfg->rank;
    }
    /* a locked flag given on the command line must agree with the file */
    static const char *model_flags[] = {"experts", "topk", "hidden", "layers", "heads", "rank"};
    const int n_model_flags = model->preset == TOYCKPT_SEED ? 6 : 0;
    for (int i = 0; i < N_SETTINGS + n_model_flags; i++) {
        const char *name = i < N_SETTINGS ? settings[i].flag : model_flags[i - N_SETTINGS];
        if ((i < N_SETTINGS && !settings[i].locked) || !flags_seen(table, n_flags, name)) continue;
        for (int k = 0; k < n_flags; k++) {
            if (strcmp(table[k].name, name)) continue;
            /* the flag's destination in o and the same field in f */
            size_t off = (size_t)((const char *)table[k].dst - (const char *)o);
            bool same = table[k].type == FLAG_T_FLOAT
                            ? *(const float *)table[k].dst == *(const float *)((const char *)&f + off)
                            : *(const int *)table[k].dst == *(const int *)((const char *)&f + off);
            if (!same)
                die(2, "--%s differs from the checkpoint '%s': a resumed run keeps the model, "
                       "data and optimizer settings of the file (omit --%s)",
                    name, o->resume, name);
        }
    }
    /* unlocked settings given on the command line replace the file's */
    for (int i = 0; i < N_SETTINGS; i++)
        if (!settings[i].locked && flags_seen(table, n_flags, settings[i].flag))
            memcpy((char *)&f + settings[i].offset, (const char *)o + settings[i].offset, 4);
    tt_safetensors_free(&st);
    *o = f;
}

/* After the model and optimizer exist: load the tensors, the optimizer, step and RNG. */
static long restore(run *r) {
    long step = 0;
    tt_safetensors raw;
    memset(&raw, 0, sizeof raw);
    if (tt_checkpoint_load(r->o.resume, r->params, r->opt, &step, NULL, &raw) != TT_OK)
        die(1, "cannot resume: %s", tt_last_error());
    if (r->data.kind == CORPUS_BYTES) {
        char size[32], hash[32];
        snprintf(size, sizeof size, "%zu", r->data.n);
        snprintf(hash, sizeof hash, "%016" PRIx64,
                 toyckpt_fnv1a(r->data.bytes, r->data.n, TOYCKPT_FNV_INIT));
        const char *s = tt_safetensors_meta(&raw, "data.bytes"), *h = tt_safetensors_meta(&raw, "data.fnv1a");
        if (!s || !h || strcmp(s, size) || strcmp(h, hash))
            die(1, "--data file '%s' is not the file the checkpoint was trained on (%s bytes, "
                   "FNV-1a %s; now %s bytes, %s)", r->data.source, s ? s : "?", h ? h : "?",
                size, hash);
    }
    tt_safetensors_free(&raw);
    if (step < 0 || step > r->o.steps)
        die(2, "the checkpoint is at step %ld, past --steps %d: raise --steps to continue", step,
            r->o.steps);
    return step;
}

/* One training step on the batch in r->ids / r->targets; fills the loss parts of pl. */
static void train_step(run *r, progress_line *pl) {
    const options *o = &r->o;
    tt_tensor *loss, *ce, *aux = NULL, *mtp = NULL;
    if (r->v3) {
        /* the main and MTP cross entropies here (not in tt_v3_forward_mtp): the first
         * target of a window is CORPUS_IGNORE (not enough context to score) */
        tt_v3_output out = tt_v3_forward_mtp(r->v3, r->ids, NULL, o->aux_alpha, o->mtp_lambda);
        ce = tt_cross_entropy(out.logits, r->targets, CORPUS_IGNORE);
        loss = ce;
        if (out.mtp_logits) { /* position i predicts t_{i+2} = targets[:, i+1] */
            mtp = tt_cross_entropy(out.mtp_logits, tt_slice(r->targets, 1, 1, o->seq),
                                   CORPUS_IGNORE);
            loss = tt_add(loss, tt_scale(mtp, o->mtp_lambda));
        }
        if (out.bal) loss = tt_add(loss, aux = out.bal);
        tt_optim_zero_grad(r->opt);
        tt_backward(loss);
        if (o->clip > 0) tt_clip_grad_norm(r->params, o->clip);
        tt_optim_step(r->opt);
        /* aux-loss-free balancing on this step's counts, after the gradient step */
        if (o->gamma != 0) tt_v3_update_bias(r->v3, &out, o->gamma);
    } else {
        tt_dsv3_output out = tt_dsv3_forward(r->model, r->ids, NULL);
        ce = tt_cross_entropy(out.logits, r->targets, CORPUS_IGNORE);
        aux = out.aux;
        loss = r->model->cfg.aux_alpha > 0 ? tt_add(ce, out.aux) : ce;
        tt_optim_zero_grad(r->opt);
        tt_backward(loss);
        if (o->clip > 0) tt_clip_grad_norm(r->params, o->clip);
        tt_optim_step(r->opt);
    }
    pl->loss = tt_item(loss);
    pl->ce = tt_item(ce);
    pl->aux = aux ? tt_item(aux) : 0.0;
    pl->mtp = mtp ? tt_item(mtp) : NAN;
}

/* ---- divergence ------------------------------------------------------------------------------------------ */
/* --detect-anomaly: tinytorch reports the first NaN/Inf through its error handler
 * ("tinytorch: anomaly: forward of 'matmul' produced inf ..., step 12 (at ...)"). Print it
 * and exit with EXIT_DIVERGED instead of abort()ing: a diverged run is an outcome, not a
 * crash. Any other tinytorch error is a bug: return, and tt_error_at prints and aborts. */
static void on_tt_error(const char *message, void *user) {
    (void)user;
    if (!strstr(message, "tinytorch: anomaly:")) return;
    fflush(stdout);
    fprintf(stderr, "%s\ntrain_toy: error: training stopped by --detect-anomaly at step %ld "
                    "(lower --lr, or raise --warmup)\n", message, tt_anomaly_step());
    exit(EXIT_DIVERGED);
}

/* Fail before training, not after it, when --save cannot be written: create (and remove)
 * the file the save will write first, "<path>.tmp.<pid>", next to it. */
static void check_save_path(const char *path) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        die(1, "cannot write the checkpoint '%s': it is a directory", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die(1, "cannot write the checkpoint '%s': creating '%s' failed: %s (checked before "
               "training)", path, tmp, strerror(errno));
    close(fd);
    unlink(tmp);
}

/* ---- main -------------------------------------------------------------------------------------------- */
static const char *ABOUT =
    "Train the DeepSeek-V3 toy model (MLA attention with a latent KV cache, a Mixture of\n"
    "Experts with a balance loss) on a synthetic source whose entropy rate is known\n"
    "exactly, or on the bytes of any file (--data). Prints the model card, the source's\n"
    "floor and what simpler models would score, a progress line while training, the\n"
    "held-out loss every --eval-every steps, and a per-layer table of expert load.\n"
    "--preset v3 trains the faithful DeepSeek-V3 architecture (nn/v3.h: pre-norm RMSNorm,\n"
    "MLA with RoPE and low-rank queries, dense first layer, sigmoid-gated MoE with shared\n"
    "experts and node-limited routing) at the seed model's activated parameter count, the\n"
    "way the technical report trains it: aux-loss-free bias balancing (--gamma), the\n"
    "sequence-wise balance loss (--aux-alpha 0.0001), Multi-Token Prediction D = 1\n"
    "(--mtp-lambda 0.3), AdamW (0.9, 0.95), weight decay 0.1, clip 1.0. --config FILE.json\n"
    "takes the model from an official-style ModelArgs JSON instead (implies --preset v3).";
static const char *FOOTER =
    "Checkpoints (--save, --resume) are safetensors files holding the parameters, the\n"
    "optimizer state, the step, the RNG state, the model config and the run's settings;\n"
    "a run of N steps and a run stopped with --stop-at and resumed give bit-identical\n"
    "losses. On --resume the model, data and optimizer settings come from the file\n"
    "(--steps, --eval-every, --gamma and --mtp-lambda may change).\n"
    "--save-every N also saves every N steps. Saves are atomic (temporary file, fsync,\n"
    "rename): a run killed at any moment leaves the previous complete checkpoint or the\n"
    "new one, never a torn file. A periodic save that fails (disk full, directory gone)\n"
    "prints a warning and training goes on with the old checkpoint kept; a failed final\n"
    "save is exit code 1. An unwritable --save path is an error before training starts.\n"
    "A resumed --log drops the rows of steps past the checkpoint (redone by the run).\n"
    "A non-finite loss stops the run (exit code 3) with the step; --detect-anomaly checks\n"
    "every op's output and gradient and names the first op that made a NaN or Inf.\n"
    "Seed-only flags: --experts --topk --hidden --layers --heads --rank --momentum.\n"
    "v3-only flags: --config --gamma --mtp-lambda --init-std.\n"
    "--threads N sets the OpenMP thread count (results do not depend on it).\n"
    "Exit codes: 0 done, 1 runtime error (unreadable file, corrupt checkpoint, failed\n"
    "final save), 2 bad command line, 3 the training diverged (NaN/Inf).";

int main(int argc, char **argv) {
    tt_dsv3_config toy = tt_dsv3_config_toy();
    options o = {
        .steps = 1500, .batch = 16, .seq = 32, .stop_at = 0, .warmup = -1, .eval_every = 250,
        .print_every = 0, .threads = 0, .optim = 0, .lr = 0.3f, .momentum = 0.9f,
        .weight_decay = 0.0f, .clip = 1.0f, .aux_alpha = toy.aux_alpha,
        .experts = toy.n_experts, .topk = toy.top_k, .hidden = toy.dim,
        .layers = toy.n_layers, .heads = toy.n_heads, .rank = toy.rank, .seed = 1,
        .preset = TOYCKPT_SEED, .gamma = 0.001f, .mtp_lambda = 0.3f, .init_std = V3_INIT_STD,
    };
    flag table[] = {
        FLAG_CHOICE("preset", &o.preset, "seed|v3", "model: the seed's toy DeepSeek or the faithful V3"),
        FLAG_STRING("config", &o.config, "FILE.json", "v3 model from a ModelArgs JSON (implies --preset v3)"),
        FLAG_INT("steps", &o.steps, 1, 100000000, "N", "training steps (the lr schedule spans them)"),
        FLAG_INT("batch", &o.batch, 1, 4096, "B", "windows per step"),
        FLAG_INT("seq", &o.seq, 2, 4096, "T", "tokens per window"),
        FLAG_FLOAT("lr", &o.lr, 0, 100, "X", "peak learning rate (seed: sgd 0.3, adamw 0.003; v3 0.006)"),
        FLAG_CHOICE("optim", &o.optim, "sgd|adamw", "optimizer (seed: sgd, v3: adamw)"),
        FLAG_FLOAT("momentum", &o.momentum, 0, 0.999, "X", "SGD momentum"),
        FLAG_FLOAT("weight-decay", &o.weight_decay, 0, 10, "X", "weight decay (seed 0, v3 0.1)"),
        FLAG_INT("warmup", &o.warmup, -1, 100000000, "N", "warm-up steps (-1: steps/20)"),
        FLAG_FLOAT("clip", &o.clip, 0, 1e6, "X", "clip the gradient norm to X (0: off)"),
        FLAG_FLOAT("aux-alpha", &o.aux_alpha, 0, 100, "X", "balance-loss weight (0: off; seed 0.01, v3 0.0001)"),
        FLAG_FLOAT("gamma", &o.gamma, 0, 1, "X", "v3: gate-bias update speed (0: off)"),
        FLAG_FLOAT("mtp-lambda", &o.mtp_lambda, 0, 100, "X", "v3: Multi-Token Prediction weight (0: off)"),
        FLAG_FLOAT("init-std", &o.init_std, 0, 10, "X", "v3: std of the weight init"),
        FLAG_INT("experts", &o.experts, 1, 64, "E", "experts per layer"),
        FLAG_INT("topk", &o.topk, 1, 64, "K", "active experts per token"),
        FLAG_INT("hidden", &o.hidden, 1, 4096, "D", "model width"),
        FLAG_INT("layers", &o.layers, 1, 64, "L", "layers"),
        FLAG_INT("heads", &o.heads, 1, 256, "H", "attention heads (must divide --hidden)"),
        FLAG_INT("rank", &o.rank, 1, 4096, "R", "MLA latent rank (cached per token)"),
        FLAG_INT("seed", &o.seed, 0, 2147483647, "S", "seed of the init, the data and the sampler"),
        FLAG_INT("threads", &o.threads, 0, 1024, "N", "OpenMP threads (0: OMP_NUM_THREADS, else 1)"),
        FLAG_INT("eval-every", &o.eval_every, 0, 100000000, "N", "held-out loss every N steps (0: at the end)"),
        FLAG_INT("print-every", &o.print_every, 0, 100000000, "N", "progress line every N steps (0: steps/20)"),
        FLAG_INT("stop-at", &o.stop_at, 0, 100000000, "N", "stop after step N (0: at --steps); resume later"),
        FLAG_STRING("data", &o.data, "FILE", "train on the bytes of FILE (vocabulary 256)"),
        FLAG_STRING("save", &o.save, "FILE", "write a checkpoint (safetensors) at the end"),
        FLAG_INT("save-every", &o.save_every, 0, 100000000, "N", "also save --save every N steps (0: at the end only)"),
        FLAG_STRING("resume", &o.resume, "FILE", "continue from a checkpoint"),
        FLAG_BOOL("detect-anomaly", &o.detect_anomaly, "stop at the first op that makes a NaN/Inf, and name it"),
        FLAG_BOOL("mem-stats", &o.mem_stats, "add resident memory and open files to the progress lines"),
        FLAG_INT("profile", &o.profile, 0, 1000, "ROWS", "time every op of the training steps; print the ROWS costliest at the end"),
        FLAG_STRING("log", &o.log, "FILE.csv", "per-step log: step,loss,ce,aux,lr,heldout,..."),
        FLAG_STRING("plot", &o.plot, "FILE.svg", "loss curves and expert load as an SVG picture"),
    };
    const int n_flags = (int)(sizeof table / sizeof table[0]);
    flags_usage usage = {"train_toy", "[flags]", ABOUT, FOOTER};
    int rc = flags_parse(table, n_flags, argc, argv, &usage);
    if (rc == FLAGS_HELP) return 0;
    if (rc != FLAGS_OK) return 2;
#define SEEN(name) flags_seen(table, n_flags, name)
    if (o.config && !o.resume) {
        if (SEEN("preset") && o.preset != TOYCKPT_V3)
            die(2, "--config describes a v3 model: it conflicts with --preset seed");
        o.preset = TOYCKPT_V3;
    }
    /* the preset's defaults for what was not given (a resumed run takes the file's) */
    if (o.preset == TOYCKPT_V3) {
        if (!SEEN("optim")) o.optim = 1;
        if (!SEEN("aux-alpha")) o.aux_alpha = 0.0001f;
        if (!SEEN("weight-decay")) o.weight_decay = 0.1f;
        if (!SEEN("lr")) o.lr = o.optim == 1 ? V3_LR : 0.3f;
    } else if (o.optim == 1 && !SEEN("lr")) {
        o.lr = 0.003f;
    }

    run r;
    memset(&r, 0, sizeof r);
    toyckpt_model ck = {.preset = (toyckpt_preset)o.preset, .seed = toy};
    long start_step = 0;
    if (o.resume) resume_settings(&o, table, n_flags, &ck);
    /* flags of the other model */
    static const char *seed_only[] = {"experts", "topk", "hidden", "layers", "heads", "rank",
                                      "momentum"};
    static const char *v3_only[] = {"config", "gamma", "mtp-lambda", "init-std"};
    for (int i = 0; o.preset == TOYCKPT_V3 && i < 7; i++)
        if (SEEN(seed_only[i]))
            die(2, "--%s applies to --preset seed; a v3 model's shape comes from its config "
                   "(--config FILE.json)", seed_only[i]);
    for (int i = 0; o.preset == TOYCKPT_SEED && i < 4; i++)
        if (SEEN(v3_only[i])) die(2, "--%s applies to --preset v3 only", v3_only[i]);
    r.o = o;
#ifdef _OPENMP
    /* The toy's matrices are 64 wide: a second thread costs more in fork/join than it
     * saves, and on a busy machine a spinning OpenMP team is many times slower (measured:
     * 17k tokens/s on 1 thread, 1.3k on 2). So 1 thread unless asked otherwise. */
    if (o.threads > 0) omp_set_num_threads(o.threads);
    else if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
#endif
    if (o.stop_at > o.steps) die(2, "--stop-at %d is past --steps %d", o.stop_at, o.steps);
    if (o.save_every > 0 && !o.save) die(2, "--save-every needs --save FILE");
    if (o.save) check_save_path(o.save);
    if (o.detect_anomaly) {
        tt_set_detect_anomaly(true);
        tt_set_error_handler(on_tt_error, NULL);
    }

    /* data */
    char err[1024];
    if (o.data) {
        if (corpus_from_file(&r.data, o.data, o.seq, (uint64_t)o.seed, err, sizeof err) != 0)
            die(1, "%s", err);
    } else {
        corpus_synthetic(&r.data, (uint64_t)o.seed);
    }

    /* model */
    tt_dsv3_config cfg = ck.seed;
    tt_v3_config v3cfg = ck.v3;
    size_t seed_active = 0;
    if (o.preset == TOYCKPT_SEED && !o.resume) {
        cfg.vocab = r.data.vocab;
        cfg.dim = o.hidden;
        cfg.n_layers = o.layers;
        cfg.n_heads = o.heads;
        cfg.n_experts = o.experts;
        cfg.top_k = o.topk;
        cfg.expert_hidden = 4 * o.hidden;
        cfg.rank = o.rank;
        cfg.max_seq = o.seq > toy.max_seq ? o.seq : toy.max_seq;
        cfg.aux_alpha = o.aux_alpha;
    } else if (o.preset == TOYCKPT_V3) {
        if (!o.resume && o.config) {
            if (tt_v3_config_load(o.config, &v3cfg) != TT_OK) die(2, "%s", tt_last_error());
            if (v3cfg.vocab_size < r.data.vocab)
                die(2, "--config %s: vocab_size %d is smaller than the data's vocabulary %d",
                    o.config, v3cfg.vocab_size, r.data.vocab);
            if (o.mtp_lambda != 0 && v3cfg.n_mtp_modules == 0) v3cfg.n_mtp_modules = 1;
        } else if (!o.resume) {
            v3cfg = v3_preset_config(r.data.vocab, o.seq, o.mtp_lambda);
        }
        if (v3cfg.max_seq_len < o.seq)
            die(2, "--seq %d is longer than the model's max_seq_len %d", o.seq, v3cfg.max_seq_len);
        if (o.mtp_lambda != 0 && v3cfg.n_mtp_modules == 0)
            die(2, "--mtp-lambda %g: the checkpoint's model has no MTP module (train it with "
                   "--mtp-lambda > 0 from the start)", (double)o.mtp_lambda);
        /* the seed model's activated parameters on the same data, for the card (built
         * before seeding: it draws from the global RNG) */
        tt_dsv3_config sc = toy;
        sc.vocab = r.data.vocab;
        sc.max_seq = o.seq > toy.max_seq ? o.seq : toy.max_seq;
        tt_dsv3 *sm = tt_dsv3_new(&sc);
        if (sm) seed_active = tt_dsv3_n_active_params(sm), tt_dsv3_free(sm);
    }
    tt_manual_seed((uint64_t)o.seed);
    if (o.preset == TOYCKPT_V3) {
        if (tt_v3_config_check(&v3cfg) != TT_OK) die(2, "%s", tt_last_error());
        r.v3 = tt_v3_new(&v3cfg, o.init_std);
        if (!r.v3) die(2, "%s", tt_last_error());
        r.params = &r.v3->params;
        r.n_experts = v3cfg.n_routed_experts;
        r.moe_layer = calloc((size_t)v3cfg.n_layers, sizeof *r.moe_layer);
        if (!r.moe_layer) abort();
        for (int l = 0; l < v3cfg.n_layers; l++)
            if (!r.v3->layers[l].dense) r.moe_layer[r.n_moe++] = l;
    } else {
        if (tt_dsv3_config_check(&cfg) != TT_OK) die(2, "%s", tt_last_error());
        r.model = tt_dsv3_new(&cfg);
        if (!r.model) die(2, "%s", tt_last_error());
        r.params = &r.model->params;
        r.n_experts = cfg.n_experts;
        r.n_moe = cfg.n_layers;
        r.moe_layer = calloc((size_t)cfg.n_layers, sizeof *r.moe_layer);
        if (!r.moe_layer) abort();
        for (int l = 0; l < cfg.n_layers; l++) r.moe_layer[l] = l;
    }
    /* Every trainable tensor gets its (zeroed) gradient buffer now, so every step updates
     * every parameter (AdamW: decay and moments even at a zero gradient). Without this an
     * expert that no token has chosen yet has no buffer and is skipped, and a resumed run
     * (fresh buffers) would skip experts the straight run updates: not bit-identical. */
    for (int i = 0; i < r.params->n; i++)
        if (r.params->t[i]->requires_grad) tt_grad_ensure(r.params->t[i]);
    if (o.optim == 0)
        r.opt = tt_optim_sgd(r.params, o.lr, o.momentum, o.weight_decay, false);
    else
        r.opt = tt_optim_adamw(r.params, o.lr, 0.9f, 0.95f, 1e-8f, o.weight_decay);
    r.sched = (tt_lr_schedule){TT_LR_WARMUP_COSINE, o.lr, 0.1f * o.lr,
                               o.warmup >= 0 ? o.warmup : o.steps / 20, o.steps};
    if (r.sched.warmup_steps >= o.steps) r.sched.warmup_steps = o.steps - 1;
    if (o.resume) start_step = restore(&r);
    r.step = start_step;

    r.ids = tt_tensor_new(TT_I32, TT_SHAPE(o.batch, o.seq));
    r.targets = tt_tensor_new(TT_I32, TT_SHAPE(o.batch, o.seq));
    const long stop = o.stop_at > 0 ? o.stop_at : o.steps;
    const int print_every = o.print_every > 0 ? o.print_every : (o.steps >= 20 ? o.steps / 20 : 1);
    const int n_evals_max = (int)((stop - start_step) / (o.eval_every > 0 ? o.eval_every : stop + 1)) + 2;
    /* every buffer of the loop is allocated and touched here, none grows later */
    r.hist_step = malloc(HIST_MAX * sizeof(double));
    r.hist_loss = malloc(HIST_MAX * sizeof(double));
    r.hist_stride = 1;
    r.eval_step = calloc((size_t)n_evals_max, sizeof(double));
    r.eval_loss = calloc((size_t)n_evals_max, sizeof(double));
    r.eval_maxload = calloc((size_t)n_evals_max * (r.n_moe + 1), sizeof(double));
    if (!r.hist_step || !r.hist_loss || !r.eval_step || !r.eval_loss || !r.eval_maxload) abort();
    memset(r.hist_step, 0, HIST_MAX * sizeof(double));
    memset(r.hist_loss, 0, HIST_MAX * sizeof(double));

    if (r.v3) print_card_v3(&r, seed_active);
    else print_card(&r);
    print_data(&r);
    print_training(&r);
    if (start_step > 0) printf("resumed from %s at step %ld\n", o.resume, start_step);
    fflush(stdout);

    FILE *csv = NULL;
    if (o.log && start_step > 0 && progress_csv_truncate_after(o.log, start_step) != 0) return 1;
    if (o.log && !(csv = progress_csv_open(o.log, start_step > 0))) return 1;

    eval_result ev;
    eval_alloc(&ev, &r);
    const double t0 = progress_now();
    const double tokens_per_step = (double)o.batch * o.seq;
    while (r.step < stop) {
        const long s = r.step;
        r.opt->lr = tt_lr_at(&r.sched, s);
        fill_batch(&r, CORPUS_TRAIN, s);
        if (o.detect_anomaly) tt_anomaly_set_step(s + 1); /* 1-based, as the progress line */
        progress_line pl = {.step = s + 1, .total = o.steps, .lr = r.opt->lr};
        if (o.profile > 0) tt_profile_start(); /* the step only: not the batch, not eval */
        train_step(&r, &pl);
        tt_tape_reset();
        if (o.profile > 0) tt_profile_stop();
        r.step = s + 1;
        if (!isfinite(pl.loss)) {
            fflush(stdout);
            die(EXIT_DIVERGED, "the loss is %s at step %ld: the training diverged (lower --lr); "
                "rerun with --detect-anomaly to find the op that first made a NaN/Inf",
                isnan(pl.loss) ? "nan" : pl.loss > 0 ? "inf" : "-inf", r.step);
        }

        const double elapsed = progress_now() - t0;
        pl.tokens_per_s = (double)(r.step - start_step) * tokens_per_step / elapsed;
        pl.eta_s = (double)(stop - r.step) * elapsed / (double)(r.step - start_step);
        hist_add(&r, pl.loss);
        double heldout = NAN, maxload = NAN;
        if ((o.eval_every > 0 && r.step % o.eval_every == 0) || r.step == stop) {
            evaluate(&r, &ev);
            heldout = ev.ce;
            maxload = worst_max_mean(&ev, r.n_moe);
            r.eval_step[r.n_eval] = (double)r.step;
            r.eval_loss[r.n_eval] = ev.ce;
            memcpy(r.eval_maxload + (size_t)r.n_eval * r.n_moe, ev.max_mean,
                   (size_t)r.n_moe * sizeof(double));
            r.n_eval++;
        }
        if (r.step % print_every == 0 || r.step == start_step + 1 || r.step == stop) {
            if (o.mem_stats) pl.rss_kib = progress_rss_kib(), pl.n_fds = progress_open_fds();
            progress_print(stdout, &pl);
        }
        if (!isnan(heldout)) {
            printf("  held-out loss %.4f", heldout);
            if (r.data.kind == CORPUS_SYNTHETIC) printf(" (floor %.4f, %+.4f)", r.data.floor, heldout - r.data.floor);
            printf(" | expert load max/mean %.2f\n", maxload);
        }
        if (csv) progress_csv_row(csv, &pl, heldout, maxload, elapsed);
        /* periodic checkpoint (the final one is written after the loop) */
        if (o.save_every > 0 && r.step % o.save_every == 0 && r.step != stop && save(&r, true)) {
            fprintf(stderr, "train_toy: warning: training goes on; '%s' still holds the last "
                            "checkpoint that was saved\n", o.save);
            fflush(stderr);
        }
    }
    const double elapsed = progress_now() - t0;
    if (csv) fclose(csv);

    printf("trained %ld steps in %.1f s (%.0f tokens/s)\n", r.step - start_step, elapsed,
           (double)(r.step - start_step) * tokens_per_step / elapsed);
    if (r.step - start_step == 0) evaluate(&r, &ev);
    if (r.data.kind == CORPUS_SYNTHETIC)
        printf("final held-out loss %.4f nats/token: floor %.4f (%+.4f), bigram %.4f, unigram %.4f\n",
               ev.ce, r.data.floor, ev.ce - r.data.floor, r.data.bigram, r.data.unigram);
    else
        printf("final held-out loss %.4f nats/token (%.3f bits/byte): bigram model %.4f, unigram %.4f\n",
               ev.ce, ev.ce / log(2.0), r.data.bigram, r.data.unigram);
    print_load_table(&r, &ev);
    if (o.profile > 0) {
        printf("op profile of the training steps (profile.h; the %d costliest rows):\n", o.profile);
        tt_profile_print(stdout, o.profile);
        tt_profile_reset();
    }
    if (o.plot) write_plot(&r, &ev);
    int status = 0;
    if (o.save) status = save(&r, false);

    eval_free(&ev);
    free(r.hist_step);
    free(r.hist_loss);
    free(r.eval_step);
    free(r.eval_loss);
    free(r.eval_maxload);
    free(r.moe_layer);
    tt_free(r.ids);
    tt_free(r.targets);
    tt_optim_free(r.opt);
    if (r.model) tt_dsv3_free(r.model);
    if (r.v3) tt_v3_free(r.v3);
    corpus_free(&r.data);
    return status;
}

/* t05_moe.c - companion program of docs/tutorials/05-mixture-of-experts.md.
 *
 *   1. the gate: softmax scores over E experts, top-k, renormalised weights
 *   2. sparse dispatch: each expert runs on its own rows only (read off the tape), and
 *      the result equals a token-by-token dense reference
 *   3. the balance loss alpha * E * sum_i f_i P_i and where its gradient goes
 *   4. expert collapse: the same MoE trained with alpha = 0 and alpha = 0.01
 * Its output is quoted in the tutorial (tests/check_tutorials.sh keeps them in sync).
 *
 *   make && build/examples/tutorials/t05_moe [gate | dispatch | balance | collapse]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinytorch.h"

static float max_abs(const float *v, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(v[i]) > m ? fabsf(v[i]) : m;
    return m;
}

/* ---- 1. the gate ----------------------------------------------------------------------- */

static void show_gate(void) {
    printf("== 1. the gate: E = 4 experts, top-2, 4 tokens of dim 8\n");
    tt_params p = {0};
    tt_moe_gate gate;
    tt_moe_gate_config gc = tt_moe_gate_config_default(8, 4, 2);
    tt_manual_seed(3);
    tt_moe_gate_init(&gate, &p, "gate", &gc);
    tt_tensor *x = tt_rand_normal(TT_SHAPE(4, 8), 0.0f, 1.0f);
    tt_routing r = tt_moe_gate_forward(&gate, x, false);
    printf("token  scores = softmax(W x)          top-2  their scores  weights (renormalised)\n");
    for (int t = 0; t < 4; t++) {
        const float *s = r.scores->data + t * 4;
        const int32_t *idx = tt_ids(r.indices) + t * 2;
        const float *w = r.weights->data + t * 2;
        printf("  %d    %.3f %.3f %.3f %.3f    %d, %d   %.3f %.3f   %.3f %.3f (sum %.3f)\n", t,
               (double)s[0], (double)s[1], (double)s[2], (double)s[3], idx[0], idx[1],
               (double)s[idx[0]], (double)s[idx[1]], (double)w[0], (double)w[1],
               (double)(w[0] + w[1]));
    }
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}

/* ---- 2. sparse dispatch ------------------------------------------------------------------ */

/* out_t = sum_k w_tk Expert_{idx_tk}(x_t), one token and one expert at a time */
static tt_tensor *dense_reference(const tt_moe *m, tt_tensor *x, const tt_routing *r) {
    const int N = x->shape[0], D = x->shape[1], K = r->top_k;
    tt_tensor *out = tt_zeros(TT_SHAPE(N, D));
    tt_no_grad_begin();
    for (int t = 0; t < N; t++) {
        tt_tensor *row = tt_slice(x, 0, t, t + 1); /* [1, D] */
        for (int k = 0; k < K; k++) {
            int e = tt_ids(r->indices)[t * K + k];
            float w = r->weights->data[t * K + k];
            tt_tensor *y = tt_expert_forward(&m->experts[e], row);
            for (int j = 0; j < D; j++) out->data[t * D + j] += w * y->data[j];
        }
    }
    tt_no_grad_end();
    return out;
}

static void show_dispatch(tt_moe *m, tt_params *p, tt_tensor *x) {
    (void)p;
    printf("== 2. sparse dispatch: 12 tokens, E = 4, top-2, expert hidden 16\n");
    tt_routing r;
    tt_tensor *y = tt_moe_forward(m, x, false, &r);
    printf("tokens routed to each expert: %d %d %d %d (sum %d = N * K = 12 * 2)\n",
           r.counts[0], r.counts[1], r.counts[2], r.counts[3],
           r.counts[0] + r.counts[1] + r.counts[2] + r.counts[3]);
    printf("the experts, read off the tape:\n");
    int rows = 0;
    for (int i = 0; i < tt_tape_len(); i++) {
        const tt_node *n = tt_tape_node(i);
        if (strcmp(n->op, "experts_relu") != 0) continue;
        /* in[0] = x, in[1] = the rows' tokens expert by expert, in[2 + e] = the e-th
         * busy expert's w1; its rows are off[e] .. off[e+1] - 1 of in[1] and the output */
        const int *off = tt_experts_relu_offsets(n);
        char sx[TT_SHAPE_STR_LEN], so[TT_SHAPE_STR_LEN];
        printf("  %s  x %s -> %s:\n", n->op, tt_shape_str(n->in[0], sx),
               tt_shape_str(n->out, so));
        for (int e = 0; e < n->i[0]; e++)
            printf("    rows %2d..%2d  x %s^T ...\n", off[e], off[e + 1] - 1, n->in[2 + e]->name);
        rows += n->in[1]->shape[0];
    }
    printf("expert rows computed: %d (dense MoE: N * E = 48)\n", rows);
    tt_tensor *ref = dense_reference(m, x, &r);
    float d = 0.0f;
    for (size_t i = 0; i < y->size; i++) d = fmaxf(d, fabsf(y->data[i] - ref->data[i]));
    printf("max |sparse - token-by-token reference| = %.1e\n", (double)d);
    tt_free(ref);
    tt_tape_reset();
}

/* ---- 3. the balance loss ------------------------------------------------------------------ */

static void show_balance(tt_moe *m, tt_params *p, tt_tensor *x) {
    printf("== 3. the balance loss, alpha = 0.01, on the same 12 tokens\n");
    const float alpha = 0.01f;
    const int N = x->shape[0], E = 4, K = 2;
    tt_params_zero_grad(p);
    tt_routing r;
    tt_moe_forward(m, x, false, &r);
    tt_tensor *bal = tt_moe_balance_loss(&r, alpha);
    printf("  i   f_i = c_i/(N K)   P_i = mean_t s_ti\n");
    double sum_fp = 0.0;
    for (int i = 0; i < E; i++) {
        double f = r.counts[i] / (double)(N * K), P = 0.0;
        for (int t = 0; t < N; t++) P += r.scores->data[t * E + i];
        P /= N;
        sum_fp += f * P;
        printf("  %d   %.4f            %.4f\n", i, f, P);
    }
    printf("L = alpha * E * sum f_i P_i = %.6f (by hand %.6f; uniform routing gives alpha = %.2f)\n",
           (double)tt_item(bal), alpha * E * sum_fp, (double)alpha);

    tt_retain_grad(r.scores); /* temporaries: keep their gradients for printing */
    tt_retain_grad(r.logits);
    tt_backward(bal);
    printf("dL/ds_ti, token 0:  %.6f %.6f %.6f %.6f\n", (double)r.scores->grad[0],
           (double)r.scores->grad[1], (double)r.scores->grad[2], (double)r.scores->grad[3]);
    printf("alpha * E * f_i / N: %.6f %.6f %.6f %.6f (the same for every token)\n",
           alpha * E * r.counts[0] / (double)(N * K) / N,
           alpha * E * r.counts[1] / (double)(N * K) / N,
           alpha * E * r.counts[2] / (double)(N * K) / N,
           alpha * E * r.counts[3] / (double)(N * K) / N);
    /* through the softmax: dL/dz_tj = s_tj (g_j - sum_i s_ti g_i) */
    const float *s = r.scores->data, *g = r.scores->grad;
    double sg = 0.0;
    for (int i = 0; i < E; i++) sg += (double)s[i] * g[i];
    printf("dL/dz_0j (tape):    ");
    for (int j = 0; j < E; j++) printf(" %+.6f", (double)r.logits->grad[j]);
    printf("\ns_0j (g_j - s.g):   ");
    for (int j = 0; j < E; j++) printf(" %+.6f", s[j] * (g[j] - sg));
    printf("\n");
    for (int i = 0; i < p->n; i++) {
        const tt_tensor *t = p->t[i];
        if (strcmp(t->name, "moe.gate.weight") && strcmp(t->name, "moe.experts.0.fc1.weight") &&
            strcmp(t->name, "moe.experts.3.fc2.bias"))
            continue;
        printf("max |grad| of %-26s %.6f\n", t->name, t->grad ? (double)max_abs(t->grad, t->size) : 0.0);
    }
    tt_tape_reset();
}

/* ---- 4. expert collapse ------------------------------------------------------------------- */

#define CE 8           /* experts     */
#define CK 2           /* top-k       */
#define CDIM 16
#define CSTEPS 400
#define CBATCH 256
#define CEVAL 1024

typedef struct collapse_result {
    int eval_counts[CE];
    float eval_mse;
    float ratio_at[5]; /* max/mean of the training batch at steps 0, 50, 100, 200, 399 */
} collapse_result;

static float max_over_mean(const int *counts, int n_slots) {
    int mx = 0;
    for (int e = 0; e < CE; e++) mx = counts[e] > mx ? counts[e] : mx;
    return mx / ((float)n_slots / CE);
}

/* x ~ N(mu, 1)^16 (mu: a component every token shares); target tanh(x A) */
static tt_tensor *inputs(int n, float mu) {
    tt_tensor *x = tt_rand_normal(TT_SHAPE(n, CDIM), 0.0f, 1.0f);
    for (size_t i = 0; i < x->size; i++) x->data[i] += mu;
    return x;
}

static tt_tensor *sq_err(tt_tensor *pred, tt_tensor *target) {
    tt_tensor *d = tt_sub(pred, target);
    return tt_mean_all(tt_mul(d, d));
}

static collapse_result train_moe(float mu, float alpha, uint64_t seed) {
    collapse_result res = {0};
    tt_manual_seed(seed);
    tt_params p = {0};
    tt_moe_config mc = {
        .gate = tt_moe_gate_config_default(CDIM, CE, CK), /* softmax, top-2, renormalised */
        .hidden = 2 * CDIM,
        .kind = TT_FFN_RELU,
        .expert_bias = true,
    };
    tt_moe m;
    tt_moe_init(&m, &p, "moe", &mc);
    tt_tensor *A = tt_rand_normal(TT_SHAPE(CDIM, CDIM), 0.0f, 1.0f / sqrtf(CDIM));
    tt_optim *o = tt_optim_adamw(&p, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f);
    const int report[5] = {0, 50, 100, 200, CSTEPS - 1};
    for (int step = 0, r = 0; step < CSTEPS; step++) {
        tt_tensor *x = inputs(CBATCH, mu);
        tt_no_grad_begin();
        tt_tensor *target = tt_tanh(tt_matmul(x, A));
        tt_no_grad_end();
        tt_routing rt;
        tt_tensor *loss = sq_err(tt_moe_forward(&m, x, true, &rt), target);
        if (alpha > 0.0f) loss = tt_add(loss, tt_moe_balance_loss(&rt, alpha));
        tt_optim_zero_grad(o);
        tt_backward(loss);
        tt_optim_step(o);
        if (r < 5 && step == report[r]) res.ratio_at[r++] = max_over_mean(rt.counts, CBATCH * CK);
        tt_tape_reset();
        tt_free(x);
    }
    /* held-out tokens, eval mode */
    tt_tensor *x = inputs(CEVAL, mu);
    tt_no_grad_begin();
    tt_routing rt;
    tt_tensor *y = tt_moe_forward(&m, x, false, &rt);
    res.eval_mse = tt_item(sq_err(y, tt_tanh(tt_matmul(x, A))));
    memcpy(res.eval_counts, rt.counts, sizeof res.eval_counts);
    tt_no_grad_end();
    tt_tape_reset();
    tt_free(x);
    tt_free(A);
    tt_optim_free(o);
    tt_moe_free(&m);
    tt_params_free(&p);
    return res;
}

static void show_collapse(void) {
    printf("== 4. collapse: MoE of 8 experts (top-2, dim 16) regressing tanh(x A), 400 AdamW steps\n");
    printf("load of 1024 held-out tokens (2048 slots, 256 per expert when balanced):\n");
    printf("  inputs     alpha  tokens per expert                        max/mean idle  mse\n");
    const float mus[2] = {0.0f, 1.0f}, alphas[2] = {0.0f, 0.01f};
    collapse_result res[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            res[i][j] = train_moe(mus[i], alphas[j], 1);
            const collapse_result *c = &res[i][j];
            int idle = 0;
            printf("  N(%.0f, 1)    %-5g ", (double)mus[i], (double)alphas[j]);
            for (int e = 0; e < CE; e++) {
                printf(" %4d", c->eval_counts[e]);
                idle += c->eval_counts[e] == 0;
            }
            printf("  %5.2f    %d    %.4f\n", (double)max_over_mean(c->eval_counts, CEVAL * CK),
                   idle, (double)c->eval_mse);
        }
    printf("max/mean of the training batch during training (inputs N(1, 1)):\n");
    printf("  alpha   step 0     50    100    200    399\n");
    for (int j = 0; j < 2; j++) {
        printf("  %-5g  ", (double)alphas[j]);
        for (int k = 0; k < 5; k++) printf(" %6.2f", (double)res[1][j].ratio_at[k]);
        printf("\n");
    }
    printf("other seeds, inputs N(1, 1), held-out max/mean (alpha 0 -> alpha 0.01):\n");
    for (uint64_t seed = 2; seed <= 4; seed++) {
        collapse_result a = train_moe(1.0f, 0.0f, seed), b = train_moe(1.0f, 0.01f, seed);
        printf("  seed %d: %.2f -> %.2f\n", (int)seed,
               (double)max_over_mean(a.eval_counts, CEVAL * CK),
               (double)max_over_mean(b.eval_counts, CEVAL * CK));
    }
}

/* the small MoE of sections 2 and 3: dim 8, 4 experts, top-2, hidden 16, and 12 tokens */
static void small_moe(void (*show)(tt_moe *, tt_params *, tt_tensor *)) {
    tt_params p = {0};
    tt_moe_config mc = {
        .gate = tt_moe_gate_config_default(8, 4, 2),
        .hidden = 16,
        .kind = TT_FFN_RELU,
        .expert_bias = true,
    };
    tt_moe m;
    tt_manual_seed(5);
    tt_moe_init(&m, &p, "moe", &mc);
    tt_tensor *x = tt_rand_normal(TT_SHAPE(12, 8), 0.0f, 1.0f);
    tt_set_requires_grad(x, true); /* record the forward, so that the tape shows it */
    show(&m, &p, x);
    tt_free(x);
    tt_moe_free(&m);
    tt_params_free(&p);
}

static void section_gate(void) { show_gate(); }
static void section_dispatch(void) { small_moe(show_dispatch); }
static void section_balance(void) { small_moe(show_balance); }
static void section_collapse(void) { show_collapse(); }

/* No argument: every section. One argument: that section only (the tutorial quotes the
 * sections one by one). */
int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*run)(void);
    } sections[] = {
        {"gate", section_gate},
        {"dispatch", section_dispatch},
        {"balance", section_balance},
        {"collapse", section_collapse},
    };
    const int n = (int)(sizeof sections / sizeof sections[0]);
    int ran = 0;
    for (int i = 0; i < n; i++)
        if (argc < 2 || strcmp(argv[1], sections[i].name) == 0) {
            sections[i].run();
            ran++;
        }
    if (!ran) {
        fprintf(stderr, "usage: %s [gate | dispatch | balance | collapse]\n", argv[0]);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}

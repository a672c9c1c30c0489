/* moe.c - the router (MoEGate), the load-balance loss and sparse expert dispatch.
 *
 * Routing, per token (row of x), E experts, top K:
 *   z   = W x (+ b)                       logits                         [E]
 *   s   = softmax(z) | sigmoid(z)         scores (differentiable)        [E]
 *   sel = choose(z + noise) + bias        a plain float copy, no tape    [E]
 *         (noise only in training; choose = the same score function)
 *   group-limited (G > 1): keep the top-M groups by max(sel_g) (sum of the top 2 with the
 *         selection bias), sel = -inf elsewhere
 *   idx = topk(sel, K)                    the chosen experts, best first
 *   w   = gather(s, idx)                  from the CLEAN scores: the gradient reaches the
 *         [/ sum_j w_j] [* route_scale]   router only through w (and the balance loss)
 *
 * Dispatch: the N*K (token, slot) pairs are counting-sorted by expert; expert e runs
 * once on the rows routed to it:
 *   Y_e = Expert_e(index_select(x, token_idx_e))
 *   out[n] = sum_k w[n, k] * (row of Y_{idx[n,k]} computed for token n)   (combine)
 * so the work is N*K expert rows, independent of E; the backward of index_select
 * scatters the gradients back to the tokens, that of combine to the Y_e and the weights.
 * The experts run all at once as one op, tt_experts_relu or tt_experts_swiglu
 * (ops/experts.c): the same numbers, each thread taking whole experts; cfg.op_by_op runs
 * them one by one instead (index_select and tt_expert_forward per expert).
 */
#include "moe.h"

#include "../internal.h"
#include "../kernels/vmath.h"
#include "../rng.h"

#include <math.h>
#include <stdlib.h>

#define HERE ((tt_src){__FILE__, __LINE__})

tt_moe_gate_config tt_moe_gate_config_default(int dim, int n_experts, int top_k) {
    tt_moe_gate_config c = {
        .dim = dim,
        .n_experts = n_experts,
        .top_k = top_k,
        .score_func = TT_SCORE_SOFTMAX,
        .renormalize = true,
        .route_scale = 1.0f,
        .n_groups = 1,
        .topk_groups = 1,
        .selection_bias = false,
        .noise_std = 0.0f,
        .linear_bias = false,
    };
    return c;
}

static void gate_config_check(const tt_moe_gate_config *c, const char *name) {
    const char *op = "moe_gate_init";
    if (c->dim < 1) tt_error_at(HERE, op, "'%s': dim = %d must be >= 1", name, c->dim);
    if (c->n_experts < 1)
        tt_error_at(HERE, op, "'%s': n_experts = %d must be >= 1", name, c->n_experts);
    if (c->top_k < 1 || c->top_k > c->n_experts)
        tt_error_at(HERE, op, "'%s': top_k = %d must be in [1, n_experts = %d]", name, c->top_k,
                    c->n_experts);
    if (c->n_groups < 1 || c->n_experts % c->n_groups != 0)
        tt_error_at(HERE, op, "'%s': n_groups = %d must be >= 1 and divide n_experts = %d",
                    name, c->n_groups, c->n_experts);
    if (c->topk_groups < 1 || c->topk_groups > c->n_groups)
        tt_error_at(HERE, op, "'%s': topk_groups = %d must be in [1, n_groups = %d]", name,
                    c->topk_groups, c->n_groups);
    if (c->topk_groups * (c->n_experts / c->n_groups) < c->top_k)
        tt_error_at(HERE, op,
                    "'%s': topk_groups = %d groups of %d experts hold fewer than top_k = %d",
                    name, c->topk_groups, c->n_experts / c->n_groups, c->top_k);
    if (!(c->noise_std >= 0.0f))
        tt_error_at(HERE, op, "'%s': noise_std = %g must be >= 0", name, (double)c->noise_std);
    if (!(c->route_scale > 0.0f))
        tt_error_at(HERE, op, "'%s': route_scale = %g must be > 0", name,
                    (double)c->route_scale);
    if (c->linear_bias && c->selection_bias)
        tt_error_at(HERE, op,
                    "'%s': linear_bias and selection_bias would both be named '%s.bias'",
                    name, name);
}

void tt_moe_gate_init(tt_moe_gate *g, tt_params *p, const char *name,
                      const tt_moe_gate_config *cfg) {
    gate_config_check(cfg, name ? name : "");
    g->cfg = *cfg;
    tt_linear_init(&g->proj, p, name, cfg->dim, cfg->n_experts, cfg->linear_bias);
    g->bias = NULL;
    if (cfg->selection_bias) {
        char path[TT_PATH_LEN];
        g->bias = tt_param_new(p, TT_SHAPE(cfg->n_experts), "%s", tt_name_join(path, name, "bias"));
        tt_set_requires_grad(g->bias, false); /* moved by tt_moe_gate_update_bias only */
    }
}

/* The score function on one row of plain floats (for the noisy choice). */
static void score_row(tt_score_func f, const float *z, float *s, int E) {
    if (f == TT_SCORE_SIGMOID) {
        for (int e = 0; e < E; e++) s[e] = 1.0f / (1.0f + expf(-z[e]));
        return;
    }
    float m = z[0];
    for (int e = 1; e < E; e++) m = z[e] > m ? z[e] : m;
    float sum = 0.0f;
    for (int e = 0; e < E; e++) sum += s[e] = expf(z[e] - m);
    for (int e = 0; e < E; e++) s[e] /= sum;
}

/* Group-limited routing on one row of sel [E] = G groups of E/G: keep the best M groups
 * (ties to the lower group), -inf for the experts of the others. */
static void limit_groups(float *sel, int E, int G, int M, bool top2, float *gscore,
                         bool *keep) {
    int gs = E / G;
    for (int g = 0; g < G; g++) {
        const float *r = sel + g * gs;
        float a = -INFINITY, b = -INFINITY; /* largest and second largest */
        for (int j = 0; j < gs; j++) {
            if (r[j] > a) {
                b = a;
                a = r[j];
            } else if (r[j] > b) {
                b = r[j];
            }
        }
        gscore[g] = (top2 && gs >= 2) ? a + b : a;
        keep[g] = false;
    }
    for (int m = 0; m < M; m++) {
        int best = -1;
        for (int g = 0; g < G; g++)
            if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
        keep[best] = true;
    }
    for (int g = 0; g < G; g++)
        if (!keep[g])
            for (int j = 0; j < gs; j++) sel[g * gs + j] = -INFINITY;
}

tt_routing tt_moe_gate_forward(const tt_moe_gate *g, tt_tensor *x, bool training) {
    const tt_moe_gate_config *c = &g->cfg;
    tt_src src = HERE;
    tt_check_f32(x, src, "moe_gate", "x");
    if (x->ndim != 2 || x->shape[1] != c->dim)
        tt_error_at(src, "moe_gate", "x %s must be [N, %d] (gate '%s')", tt_d(x), c->dim,
                    g->proj.weight->name);
    const int N = x->shape[0], E = c->n_experts, K = c->top_k;
    tt_routing r = {.n_tokens = N, .n_experts = E, .top_k = K, .score_func = c->score_func};

    r.logits = tt_linear_forward(&g->proj, x);
    r.scores = c->score_func == TT_SCORE_SIGMOID ? tt_sigmoid(r.logits) : tt_softmax(r.logits);

    /* sel: what the experts are chosen by; nothing here is differentiated */
    tt_tensor *sel = tt_tmp(TT_F32, TT_SHAPE(N, E));
    if (training && c->noise_std > 0.0f) {
        tt_rng *rng = tt_rng_global();
        float *z = tt_arena_alloc((size_t)E * sizeof *z);
        for (int n = 0; n < N; n++) {
            for (int e = 0; e < E; e++)
                z[e] = r.logits->data[(size_t)n * E + e] + c->noise_std * (float)tt_rng_normal(rng);
            score_row(c->score_func, z, sel->data + (size_t)n * E, E);
        }
    } else {
        memcpy(sel->data, r.scores->data, (size_t)N * E * sizeof(float));
    }
    if (g->bias)
        for (int n = 0; n < N; n++)
            for (int e = 0; e < E; e++) sel->data[(size_t)n * E + e] += g->bias->data[e];
    if (c->n_groups > 1) {
        float *gscore = tt_arena_alloc((size_t)c->n_groups * sizeof *gscore);
        bool *keep = tt_arena_alloc((size_t)c->n_groups * sizeof *keep);
        for (int n = 0; n < N; n++)
            limit_groups(sel->data + (size_t)n * E, E, c->n_groups, c->topk_groups,
                         g->bias != NULL, gscore, keep);
    }
    tt_topk(sel, K, &r.indices); /* sel needs no grad: nothing is recorded */

    r.weights = tt_gather(r.scores, r.indices);
    if (c->renormalize) r.weights = tt_div(r.weights, tt_sum(r.weights, -1, true));
    if (c->route_scale != 1.0f) r.weights = tt_scale(r.weights, c->route_scale);

    r.counts = tt_arena_alloc((size_t)E * sizeof *r.counts);
    memset(r.counts, 0, (size_t)E * sizeof *r.counts);
    const int32_t *idx = tt_ids(r.indices);
    for (size_t i = 0; i < (size_t)N * K; i++) r.counts[idx[i]]++;
    return r;
}

/* L = alpha * E * sum_i f_i P_i with f_i = counts_i / (N K) (no gradient) and
 * P_i = mean_t s'_{t,i}; s' = s for softmax, s / sum_j s_j for sigmoid (V3 eq. 19).
 * dL/ds_{t,i} = alpha * E * f_i / N. At uniform routing f_i = P_i = 1/E: L = alpha. */
tt_tensor *tt_moe_balance_loss(const tt_routing *r, float alpha) {
    tt_src src = HERE;
    if (!r || !r->scores || !r->counts)
        tt_error_at(src, "moe_balance_loss", "routing is empty (run tt_moe_gate_forward first)");
    const int E = r->n_experts;
    const double nk = (double)r->n_tokens * r->top_k;
    tt_tensor *f = tt_tmp(TT_F32, TT_SHAPE(E));
    for (int e = 0; e < E; e++) f->data[e] = nk > 0 ? (float)(r->counts[e] / nk) : 0.0f;
    tt_set_name(f, "moe.balance.f");
    tt_tensor *s = r->scores;
    if (r->score_func == TT_SCORE_SIGMOID) s = tt_div(s, tt_sum(s, -1, true));
    tt_tensor *P = tt_mean(s, 0, false);
    return tt_scale(tt_sum_all(tt_mul(f, P)), alpha * (float)E);
}

void tt_moe_gate_update_bias(tt_moe_gate *g, const int *counts, float gamma) {
    if (!g->bias)
        tt_error_at(HERE, "moe_gate_update_bias",
                    "gate '%s' has no selection bias (config selection_bias = false)",
                    g->proj.weight->name);
    const int E = g->cfg.n_experts;
    double mean = 0.0;
    for (int e = 0; e < E; e++) mean += counts[e];
    mean /= E;
    for (int e = 0; e < E; e++) {
        double d = mean - counts[e];
        g->bias->data[e] += d > 0 ? gamma : d < 0 ? -gamma : 0.0f;
    }
}

void tt_moe_init(tt_moe *m, tt_params *p, const char *name, const tt_moe_config *cfg) {
    char path[TT_PATH_LEN], ename[TT_PATH_LEN];
    if (cfg->hidden < 1)
        tt_error_at(HERE, "moe_init", "'%s': hidden = %d must be >= 1", name, cfg->hidden);
    m->cfg = *cfg;
    tt_moe_gate_init(&m->gate, p, tt_name_join(path, name, "gate"), &cfg->gate);
    const int E = cfg->gate.n_experts, dim = cfg->gate.dim;
    m->experts = tt_xcalloc((size_t)E, sizeof *m->experts);
    for (int e = 0; e < E; e++) {
        snprintf(ename, sizeof ename, "experts.%d", e);
        tt_expert_init(&m->experts[e], p, tt_name_join(path, name, ename), dim, cfg->hidden,
                       cfg->kind, cfg->expert_bias);
    }
    memset(&m->shared, 0, sizeof m->shared);
    if (cfg->shared_hidden > 0)
        tt_expert_init(&m->shared, p, tt_name_join(path, name, "shared_experts"), dim,
                       cfg->shared_hidden, cfg->kind, cfg->expert_bias);
}

void tt_moe_free(tt_moe *m) {
    free(m->experts);
    m->experts = NULL;
}

/* ---- combine: the weighted sum of the experts' outputs ------------------------------
 * out[n, :] = sum_k w[n, k] * Y_{b(n,k)}[r(n,k), :]    (k ascending, from 0: the same
 *   float operations as summing the slots one by one into zeros)
 * where pair (n, k) was computed as row r(n,k) of busy expert b(n,k)'s output. Backward,
 * g = dL/dout:
 *   dw[n, k] += g[n, :] . Y_b[r, :]          dY_b[r, :] += w[n, k] g[n, :]
 * (the dot product in 16 partial sums, dot_row)
 * Every pair is one (token, slot) and one expert row, so each gradient element has one
 * writer: the token loop is split over threads with bit-identical results.
 * One op instead of an index_add per expert (each of which copied all of [N, dim]
 * forward and backward) and a broadcast multiply by the weights. */
typedef struct combine_ctx {
    const int32_t *busy_of, *row_of; /* [N * K] */
} combine_ctx;

#define COMBINE_PAR_MIN ((size_t)1 << 17) /* keeps the toy model (N*K*dim = 2^15) serial */

/* o[j] += a * y[j] */
TT_CLONES static void axpy_row(float *restrict o, float a, const float *restrict y, int n) {
    VEC for (int j = 0; j < n; j++) o[j] += a * y[j];
}

/* o[j] = a * y[j]: the same bits as axpy_row into zeros (0 + x = x; x = -0 becomes +0
 * there, which no later operation tells apart) */
TT_CLONES static void scale_row(float *restrict o, float a, const float *restrict y, int n) {
    VEC for (int j = 0; j < n; j++) o[j] = a * y[j];
}

/* sum_j a[j] b[j] in 16 partial sums (lane l takes the j = l mod 16), added up in a fixed
 * tree: vectorised, and the same bits on every CPU and thread count */
TT_CLONES static float dot_row(const float *restrict a, const float *restrict b, int n) {
    v16 acc = vsplat(0.0f);
    int j = 0;
    for (; j + VL <= n; j += VL) acc += VLOAD(a + j) * VLOAD(b + j);
    for (int l = 0; j < n; j++, l++) acc[l] += a[j] * b[j];
    v8f h = __builtin_shufflevector(acc, acc, 0, 1, 2, 3, 4, 5, 6, 7) +
            __builtin_shufflevector(acc, acc, 8, 9, 10, 11, 12, 13, 14, 15);
    return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}

/* The combine's forward or backward over tokens, as its range function sees it (tokens
 * split between threads by tt_parallel_for; each pair (n, k) is token n's). */
typedef struct combine_job {
    const int32_t *busy_of, *row_of; /* [N * K]                                     */
    tt_tensor *const *ys;            /* the busy experts' outputs                   */
    const float *w;                  /* the weights [N, K]                          */
    const float *g;                  /* backward: dL/dout [N, dim]                  */
    float *out;                      /* forward: out [N, dim]; backward: dL/dw      */
    float *const *gy;                /* backward: the experts' gradients (or NULL)  */
    const bool *fresh;               /* backward: gy[b] is new (written, not added) */
    int K, dim;
} combine_job;

/* backward, tokens [n0, n1) */
static void combine_backward_tokens(void *ctx, long n0, long n1) {
    const combine_job *cj = ctx;
    const int K = cj->K, dim = cj->dim;
    float *gw = cj->out;
    for (long n = n0; n < n1; n++) {
        const float *gn = cj->g + (size_t)n * dim;
        for (int k = 0; k < K; k++) {
            size_t p = (size_t)n * K + k, off = (size_t)cj->row_of[p] * dim;
            int b = cj->busy_of[p];
            if (gw) gw[p] += dot_row(gn, cj->ys[b]->data + off, dim);
            if (!cj->gy[b]) continue;
            if (cj->fresh[b])
                scale_row(cj->gy[b] + off, cj->w[p], gn, dim);
            else
                axpy_row(cj->gy[b] + off, cj->w[p], gn, dim);
        }
    }
}

static void combine_backward(tt_node *nd) {
    const combine_ctx *c = nd->ctx;
    tt_tensor *w = nd->in[0];
    const int N = w->shape[0], K = w->shape[1], dim = nd->out->shape[1], nb = nd->n_in - 1;
    float *gw = tt_grad_acc(w);
    /* An expert's output rows are one pair's each, so a gradient buffer that is new here
     * is written whole by the loop: no zeroing first (8 MB a layer in the medium model) */
    float **gy = tt_arena_alloc((size_t)(nb ? nb : 1) * sizeof *gy);
    bool *fresh = tt_arena_alloc((size_t)(nb ? nb : 1) * sizeof *fresh);
    bool any = gw != NULL;
    for (int b = 0; b < nb; b++) any |= (gy[b] = tt_grad_acc_fresh(nd->in[1 + b], &fresh[b])) != NULL;
    if (!any) return;
    combine_job cj = {c->busy_of, c->row_of, nd->in + 1, w->data, nd->out->grad, gw, gy, fresh,
                      K, dim};
    tt_parallel_for(N, tt_loop_threads((size_t)N * K * dim, COMBINE_PAR_MIN, N),
                    combine_backward_tokens, &cj);
}

/* forward, tokens [n0, n1) */
static void combine_tokens(void *ctx, long n0, long n1) {
    const combine_job *cj = ctx;
    const int K = cj->K, dim = cj->dim;
    for (long n = n0; n < n1; n++) {
        float *o = cj->out + (size_t)n * dim;
        for (int j = 0; j < dim; j++) o[j] = 0.0f;
        for (int k = 0; k < K; k++) {
            size_t p = (size_t)n * K + k;
            const float *y = cj->ys[cj->busy_of[p]]->data + (size_t)cj->row_of[p] * dim;
            axpy_row(o, cj->w[p], y, dim);
        }
    }
}

static tt_tensor *combine(tt_tensor *w, int nb, tt_tensor **ys, const int32_t *busy_of,
                          const int32_t *row_of, tt_src src) {
    const int N = w->shape[0], K = w->shape[1];
    const int dim = nb ? ys[0]->shape[1] : 0;
    TT_ASSERT(nb >= 1);
    tt_tensor *out = tt_tmp(TT_F32, TT_SHAPE(N, dim));
    combine_job cj = {.busy_of = busy_of, .row_of = row_of, .ys = ys, .w = w->data,
                      .out = out->data, .K = K, .dim = dim};
    tt_parallel_for(N, tt_loop_threads((size_t)N * K * dim, COMBINE_PAR_MIN, N), combine_tokens,
                    &cj);
    tt_tensor **in = tt_arena_alloc((size_t)(nb + 1) * sizeof *in);
    in[0] = w;
    for (int b = 0; b < nb; b++) in[1 + b] = ys[b];
    tt_node *node = tt_record("moe_combine", combine_backward, out, nb + 1, in, src);
    if (node) {
        combine_ctx *c = tt_arena_alloc(sizeof *c);
        c->busy_of = busy_of;
        c->row_of = row_of;
        node->ctx = c;
    }
    return out;
}

/* The busy experts of one routing in one tt_experts_relu / tt_experts_swiglu, the same
 * numbers as the op-by-op loop of tt_moe_forward: expert e's rows are tokens
 * tok[start[e] .. start[e+1]), and so are its rows of the output [N*K, dim]. */
static tt_tensor *experts_op(const tt_moe *m, tt_tensor *xf, const int *counts,
                             const int *start, const int32_t *tok) {
    const int E = m->cfg.gate.n_experts, T = start[E];
    tt_tensor *ti = tt_tmp(TT_I32, TT_SHAPE(T));
    memcpy(ti->data, tok, (size_t)T * sizeof *tok);
    tt_tensor **w = tt_arena_alloc((size_t)6 * E * sizeof *w);
    tt_tensor **w1 = w, **b1 = w + E, **w2 = w + 2 * E, **b2 = w + 3 * E, **w3 = w + 4 * E,
              **b3 = w + 5 * E;
    int *off = tt_arena_alloc((size_t)(E + 1) * sizeof *off);
    int n = 0;
    for (int e = 0; e < E; e++) {
        if (counts[e] == 0) continue; /* an idle expert costs nothing */
        const tt_expert *x = &m->experts[e];
        off[n] = start[e];
        w1[n] = x->up.weight; /* (ReLU: fc1; SwiGLU: w1) */
        b1[n] = x->up.bias;
        w2[n] = x->down.weight;
        b2[n] = x->down.bias;
        w3[n] = x->gate.weight; /* (SwiGLU only) */
        b3[n] = x->gate.bias;
        n++;
    }
    off[n] = T;
    const bool bias = b1[0] != NULL; /* (all of an MoE's expert Linears have one, or none) */
    if (m->experts[0].kind == TT_FFN_RELU)
        return tt_experts_relu(xf, ti, n, off, w1, bias ? b1 : NULL, w2, bias ? b2 : NULL);
    return tt_experts_swiglu(xf, ti, n, off, w1, bias ? b1 : NULL, w2, bias ? b2 : NULL, w3,
                             bias ? b3 : NULL);
}

tt_tensor *tt_moe_forward(const tt_moe *m, tt_tensor *x, bool training, tt_routing *routing_out) {
    tt_src src = HERE;
    const int dim = m->cfg.gate.dim, E = m->cfg.gate.n_experts, K = m->cfg.gate.top_k;
    tt_check_f32(x, src, "moe", "x");
    if (x->ndim < 1 || x->shape[x->ndim - 1] != dim)
        tt_error_at(src, "moe", "x %s must be [..., %d] (moe '%s')", tt_d(x), dim,
                    m->gate.proj.weight->name);
    const int N = (int)(x->size / (size_t)dim);
    tt_tensor *xf = tt_reshape(x, 2, ((int[]){N, dim}));
    tt_routing r = tt_moe_gate_forward(&m->gate, xf, training);

    /* counting sort of the N*K (token, slot) pairs by expert; within an expert the pairs
     * stay in token order */
    int *start = tt_arena_alloc((size_t)(E + 1) * sizeof *start);
    start[0] = 0;
    for (int e = 0; e < E; e++) start[e + 1] = start[e] + r.counts[e];
    int *fill = tt_arena_alloc((size_t)E * sizeof *fill);
    memcpy(fill, start, (size_t)E * sizeof *fill);
    int32_t *tok = tt_arena_alloc((size_t)N * K * sizeof *tok);
    const int32_t *idx = tt_ids(r.indices);
    /* The experts run as one op with one output, the pairs' rows in sorted order; with
     * cfg.op_by_op one by one, each with an output of its own rows (the same numbers) */
    const bool one_op = !m->cfg.op_by_op;
    /* pair p = (token p / K, slot p % K) is row row_of[p] of output busy_of[p] (the busy
     * experts numbered in expert order; output 0 for all, with one op) */
    int *busy = tt_arena_alloc((size_t)E * sizeof *busy);
    for (int e = 0, b = 0; e < E; e++) busy[e] = r.counts[e] ? b++ : -1;
    int32_t *pair = tt_arena_alloc((size_t)2 * N * K * sizeof *pair);
    int32_t *busy_of = pair, *row_of = pair + (size_t)N * K;
    for (int p = 0; p < N * K; p++) {
        int e = idx[p], pos = fill[e]++;
        tok[pos] = p / K;
        busy_of[p] = one_op ? 0 : busy[e];
        row_of[p] = one_op ? pos : pos - start[e];
    }

    /* each busy expert runs once on its rows; combine() sums their weighted outputs */
    tt_tensor **ys = tt_arena_alloc((size_t)E * sizeof *ys);
    int n_busy = 0;
    if (one_op) {
        ys[n_busy++] = experts_op(m, xf, r.counts, start, tok); /* [N*K, dim] */
    } else {
        for (int e = 0; e < E; e++) {
            int c = r.counts[e];
            if (c == 0) continue; /* an idle expert costs nothing */
            tt_tensor *ti = tt_tmp(TT_I32, TT_SHAPE(c));
            memcpy(ti->data, tok + start[e], (size_t)c * sizeof *tok);
            tt_tensor *rows = tt_index_select(xf, ti);                  /* [c, dim] */
            ys[n_busy++] = tt_expert_forward(&m->experts[e], rows);     /* [c, dim] */
        }
    }
    tt_tensor *out = combine(r.weights, n_busy, ys, busy_of, row_of, src);   /* [N, dim] */
    if (m->cfg.shared_hidden > 0) out = tt_add(out, tt_expert_forward(&m->shared, xf));
    if (routing_out) *routing_out = r;
    return tt_reshape(out, x->ndim, x->shape);
}

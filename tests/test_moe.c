/* test_moe.c - the router (MoEGate), the balance loss and sparse expert dispatch.
 *
 * Routing is piecewise constant: a gradient check is only meaningful where no finite-
 * difference step (h = 1e-2 on one input element) can change which experts are chosen.
 * One step moves each logit by at most h * max(|x|, |W|) <= 1e-2 (inputs in [-1, 1],
 * router weights in [-1/sqrt(dim), 1/sqrt(dim)]) and a score by at most
 * sum_e |ds_j/dz_e| * 1e-2 <= 0.5e-2 (softmax: sum_e |ds_j/dz_e| = 2 s_j (1 - s_j) <= 1/2;
 * sigmoid: 1/4), so a gap between two scores moves by < 0.01 (group scores of two
 * experts: < 0.02). Each gradcheck therefore runs on the first seed of a fixed range
 * whose routing margin - the smallest such gap any decision depends on - exceeds 0.02.
 */
#include "tt_test.h"

#include "nn/moe.h"

#include <math.h>

/* the gap between the k-th and (k+1)-th largest of v[0..n) (k < n), +inf if k >= n */
static float kth_gap(const float *vin, int n, int k) {
    float v[64];
    if (k >= n) return INFINITY;
    memcpy(v, vin, (size_t)n * sizeof *v);
    for (int i = 0; i <= k; i++) /* partial selection sort, descending */
        for (int j = i + 1; j < n; j++)
            if (v[j] > v[i]) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
            }
    return v[k - 1] - v[k];
}

/* Routing margin: min over tokens of every gap a decision depends on - the M-th vs the
 * (M+1)-th group score (G > 1) and the K-th vs the (K+1)-th sel = scores + bias among
 * the kept groups. */
static float routing_margin(const tt_tensor *scores, const tt_tensor *bias,
                            const tt_moe_gate_config *c) {
    const int N = scores->shape[0], E = scores->shape[1], G = c->n_groups, gs = E / G;
    float margin = INFINITY;
    for (int n = 0; n < N; n++) {
        float sel[64], gscore[64], kept[64];
        for (int e = 0; e < E; e++) sel[e] = scores->data[n * E + e] + (bias ? bias->data[e] : 0.0f);
        int nk = 0;
        if (G > 1) {
            for (int g = 0; g < G; g++) {
                float m1 = -INFINITY, m2 = -INFINITY;
                for (int j = 0; j < gs; j++) {
                    float v = sel[g * gs + j];
                    if (v > m1) m2 = m1, m1 = v;
                    else if (v > m2) m2 = v;
                }
                gscore[g] = bias ? m1 + m2 : m1;
            }
            margin = fminf(margin, kth_gap(gscore, G, c->topk_groups));
            float thr = -INFINITY; /* the M-th best group score: keep groups >= it */
            {
                float t[64];
                memcpy(t, gscore, (size_t)G * sizeof *t);
                for (int i = 0; i < c->topk_groups; i++)
                    for (int j = i + 1; j < G; j++)
                        if (t[j] > t[i]) { float u = t[i]; t[i] = t[j]; t[j] = u; }
                thr = t[c->topk_groups - 1];
            }
            for (int g = 0; g < G; g++)
                if (gscore[g] >= thr)
                    for (int j = 0; j < gs; j++) kept[nk++] = sel[g * gs + j];
        } else {
            for (int e = 0; e < E; e++) kept[nk++] = sel[e];
        }
        margin = fminf(margin, kth_gap(kept, nk, c->top_k));
    }
    return margin;
}

/* min |pre-activation| over every relu on the tape (+inf if none): a ReLU expert's
 * kink. One step moves a pre-activation of expert e by <= 1e-2 * max(|x|, |W1|) <= 1e-2. */
static float relu_margin(void) {
    float m = INFINITY;
    for (int i = 0; i < tt_tape_len(); i++) {
        tt_node *nd = tt_tape_node(i);
        for (size_t k = 0, nk = tt_test_relu_count(nd); k < nk; k++)
            m = fminf(m, (float)fabs(tt_test_relu_preact(nd, k)));
    }
    return m;
}

/* ---- gate: gradients ----------------------------------------------------------------- */
typedef struct gate_ctx {
    tt_moe_gate *g;
    float alpha; /* > 0: return the balance loss instead of the weights */
} gate_ctx;

static tt_tensor *f_gate(tt_tensor *const *in, void *user) {
    gate_ctx *c = user;
    tt_routing r = tt_moe_gate_forward(c->g, in[0], false);
    return c->alpha > 0 ? tt_moe_balance_loss(&r, c->alpha) : r.weights;
}

static void gate_gradcheck(tt_moe_gate_config cfg, uint64_t seed, const char *op, float alpha) {
    tt_params p = {0};
    tt_moe_gate g;
    tt_tensor *x = NULL;
    float margin = 0.0f;
    uint64_t used = seed;
    for (uint64_t s = seed; s < seed + 100 && !(margin > 0.02f); s++) {
        if (x) tt_free(x), tt_params_free(&p);
        tt_manual_seed(used = s);
        tt_moe_gate_init(&g, &p, "gate", &cfg);
        if (g.bias)
            for (int e = 0; e < cfg.n_experts; e++) g.bias->data[e] = 0.05f * (float)(e % 3) - 0.05f;
        x = tt_test_param(TT_SHAPE(6, cfg.dim), -1.0f, 1.0f);
        tt_routing r = tt_moe_gate_forward(&g, x, false);
        margin = routing_margin(r.scores, g.bias, &cfg);
        tt_tape_reset();
    }
    printf("  gate: seed %llu, routing margin %.4f\n", (unsigned long long)used, margin);
    ck_assert_msg(margin > 0.02f, "no seed in [%llu, +100) has a routing margin > 0.02",
                  (unsigned long long)seed);
    gate_ctx c = {&g, alpha};
    tt_tensor *in[2] = {x, g.proj.weight};
    tt_test_gradcheck(op, f_gate, &c, 2, in, NULL);
    tt_free(x);
    tt_params_free(&p);
}

START_TEST(test_gate_softmax_grad) {
    /* seed gate: softmax, top-2 of 5 renormalised; "gather" picks the weights, "div"
     * renormalises them */
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 5, 2);
    gate_gradcheck(cfg, 11, "gather", 0.0f);
    gate_gradcheck(cfg, 11, "div", 0.0f);
}
END_TEST

START_TEST(test_gate_sigmoid_bias_groups_grad) {
    /* V3 gate: sigmoid, selection bias, 3 groups of 2 keep 2, route_scale 2.5 */
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 6, 2);
    cfg.score_func = TT_SCORE_SIGMOID;
    cfg.selection_bias = true;
    cfg.n_groups = 3;
    cfg.topk_groups = 2;
    cfg.route_scale = 2.5f;
    gate_gradcheck(cfg, 5, "gather", 0.0f);
    gate_gradcheck(cfg, 5, "sigmoid", 0.0f);
}
END_TEST

START_TEST(test_balance_loss_grad) {
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 5, 2);
    /* alpha 20: gradients of order 0.1, so a 1% error stands well above the tolerance */
    gate_gradcheck(cfg, 11, "mean", 20.0f);
    cfg.score_func = TT_SCORE_SIGMOID; /* rows normalised to sum 1 first */
    gate_gradcheck(cfg, 11, "mean", 20.0f);
}
END_TEST

/* ---- gate: values -------------------------------------------------------------------- */
/* A gate whose weight is the identity, so x rows are the logits. */
static void identity_gate(tt_moe_gate *g, tt_params *p, const tt_moe_gate_config *cfg) {
    tt_moe_gate_init(g, p, "gate", cfg);
    memset(g->proj.weight->data, 0, g->proj.weight->size * sizeof(float));
    for (int e = 0; e < cfg->n_experts; e++) g->proj.weight->data[e * cfg->dim + e] = 1.0f;
}

START_TEST(test_topk_picks_best_not_first) {
    /* regression: the seed took the first k experts; the best here are 3 then 1 */
    tt_params p = {0};
    tt_moe_gate g;
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 4, 2);
    identity_gate(&g, &p, &cfg);
    tt_tensor *x = tt_from_data(TT_SHAPE(2, 4), (float[]){0.1f, 2.0f, -1.0f, 3.0f,   /* 3, 1 */
                                                          1.0f, -2.0f, 0.5f, 0.0f}); /* 0, 2 */
    tt_routing r = tt_moe_gate_forward(&g, x, false);
    int32_t *idx = tt_ids(r.indices);
    ck_assert_int_eq(idx[0], 3);
    ck_assert_int_eq(idx[1], 1);
    ck_assert_int_eq(idx[2], 0);
    ck_assert_int_eq(idx[3], 2);
    /* renormalised softmax of the two chosen = softmax over just the two logits */
    float w0 = 1.0f / (1.0f + expf(2.0f - 3.0f)), w1 = 1.0f / (1.0f + expf(0.5f - 1.0f));
    float want[4] = {w0, 1.0f - w0, w1, 1.0f - w1};
    ck_assert_float_le(tt_test_maxdiff(r.weights->data, want, 4), 1e-6f);
    int want_counts[4] = {1, 1, 1, 1};
    for (int e = 0; e < 4; e++) ck_assert_int_eq(r.counts[e], want_counts[e]);
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_group_limited_max) {
    /* softmax, 2 groups of 4, keep 1, top-2. Logits [5 1 .5 0 | 4 3.9 0 0]: without
     * groups the top 2 are experts 0 and 4; group 0 (max 5) beats group 1 (max 4), so the
     * second choice must come from group 0: expert 1. */
    float logits[8] = {5, 1, 0.5f, 0, 4, 3.9f, 0, 0};
    tt_tensor *x = tt_from_data(TT_SHAPE(1, 8), logits);
    tt_moe_gate_config cfg = tt_moe_gate_config_default(8, 8, 2);
    for (int grouped = 0; grouped < 2; grouped++) {
        tt_params p = {0};
        tt_moe_gate g;
        if (grouped) cfg.n_groups = 2, cfg.topk_groups = 1;
        identity_gate(&g, &p, &cfg);
        tt_routing r = tt_moe_gate_forward(&g, x, false);
        ck_assert_int_eq(tt_ids(r.indices)[0], 0);
        ck_assert_int_eq(tt_ids(r.indices)[1], grouped ? 1 : 4);
        /* weights: the two chosen softmax scores renormalised */
        float other = grouped ? logits[1] : logits[4];
        float w0 = 1.0f / (1.0f + expf(other - logits[0]));
        ck_assert_float_le(fabsf(r.weights->data[0] - w0), 1e-6f);
        ck_assert_float_le(fabsf(r.weights->data[1] - (1.0f - w0)), 1e-6f);
        tt_tape_reset();
        tt_params_free(&p);
    }
    tt_free(x);
}
END_TEST

START_TEST(test_sigmoid_bias_groups_known_answer) {
    /* sigmoid scores s, selection bias b, sel = s + b:
     *   s   = [.5 .1 | .4  .3  | .7 .55 | .2 .2]
     *   b   = [.4  0 | .22 .28 |  0  0  |  0  0]
     *   sel = [.9 .1 | .62 .58 | .7 .55 | .2 .2]
     * no bias:            top-2 of s   -> experts 4, 5
     * bias, no groups:    top-2 of sel -> experts 0, 4
     * bias, 4 groups of 2 keep 2, group score = sum of top-2 (V3 with bias):
     *   groups 1.0, 1.2, 1.25, 0.4 -> keep groups 2 and 1 -> experts 4 (.7), 2 (.62)
     *   (a max-of-group score would keep groups 0 and 2 -> experts 0, 4)
     * weights from the CLEAN scores: 2.5 * [.7, .4] / 1.1 */
    float s[8] = {.5f, .1f, .4f, .3f, .7f, .55f, .2f, .2f};
    float b[8] = {.4f, 0, .22f, .28f, 0, 0, 0, 0};
    float z[8];
    for (int e = 0; e < 8; e++) z[e] = logf(s[e] / (1.0f - s[e])); /* sigmoid^-1 */
    tt_tensor *x = tt_from_data(TT_SHAPE(1, 8), z);
    const int want[3][2] = {{4, 5}, {0, 4}, {4, 2}};
    for (int mode = 0; mode < 3; mode++) {
        tt_moe_gate_config cfg = tt_moe_gate_config_default(8, 8, 2);
        cfg.score_func = TT_SCORE_SIGMOID;
        cfg.route_scale = 2.5f;
        cfg.selection_bias = mode >= 1;
        if (mode == 2) cfg.n_groups = 4, cfg.topk_groups = 2;
        tt_params p = {0};
        tt_moe_gate g;
        identity_gate(&g, &p, &cfg);
        if (g.bias) memcpy(g.bias->data, b, sizeof b);
        tt_routing r = tt_moe_gate_forward(&g, x, false);
        int32_t *idx = tt_ids(r.indices);
        ck_assert_msg(idx[0] == want[mode][0] && idx[1] == want[mode][1],
                      "mode %d chose %d, %d; want %d, %d", mode, idx[0], idx[1], want[mode][0],
                      want[mode][1]);
        float s0 = s[idx[0]], s1 = s[idx[1]];
        float w[2] = {2.5f * s0 / (s0 + s1), 2.5f * s1 / (s0 + s1)};
        ck_assert_float_le(tt_test_maxdiff(r.weights->data, w, 2), 1e-5f);
        /* the bias is a registered, non-trainable parameter */
        if (mode >= 1) {
            ck_assert_ptr_eq(tt_params_find(&p, "gate.bias"), g.bias);
            ck_assert(!g.bias->requires_grad);
        }
        tt_tape_reset();
        tt_params_free(&p);
    }
    tt_free(x);
}
END_TEST

START_TEST(test_noise_only_in_training) {
    tt_manual_seed(3);
    tt_params p = {0};
    tt_moe_gate g;
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 8, 2);
    cfg.noise_std = 3.0f; /* large: training routing must differ from the clean one */
    tt_moe_gate_init(&g, &p, "gate", &cfg);
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(16, 4), -1.0f, 1.0f);
    tt_routing clean = tt_moe_gate_forward(&g, x, false);
    tt_routing again = tt_moe_gate_forward(&g, x, false);
    ck_assert_int_eq(memcmp(clean.indices->data, again.indices->data, 16 * 2 * 4), 0);
    tt_routing noisy = tt_moe_gate_forward(&g, x, true);
    ck_assert_msg(memcmp(clean.indices->data, noisy.indices->data, 16 * 2 * 4) != 0,
                  "noise_std 3 in training changed no routing decision");
    /* the weights still come from the clean scores of whatever was chosen */
    for (int n = 0; n < 16; n++) {
        int32_t *id = tt_ids(noisy.indices) + n * 2;
        float a = noisy.scores->data[n * 8 + id[0]], b = noisy.scores->data[n * 8 + id[1]];
        ck_assert_float_le(fabsf(noisy.weights->data[n * 2] - a / (a + b)), 1e-6f);
        ck_assert_float_eq(noisy.scores->data[n * 8 + id[0]], clean.scores->data[n * 8 + id[0]]);
    }
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_balance_loss_values) {
    /* uniform routing: f_i = P_i = 1/E -> alpha */
    const int N = 4, E = 4, K = 2;
    tt_tensor *s = tt_full(TT_SHAPE(N, E), 0.25f);
    int counts[4] = {2, 2, 2, 2};
    tt_routing r = {.n_tokens = N, .n_experts = E, .top_k = K, .scores = s, .counts = counts};
    ck_assert_float_le(fabsf(tt_item(tt_moe_balance_loss(&r, 0.01f)) - 0.01f), 1e-8f);
    /* skewed: counts [4 2 2 0] -> f = [.5 .25 .25 0]; P = column means of s */
    float sv[16] = {.4f, .3f, .2f, .1f, .7f, .1f, .1f, .1f, .1f, .2f, .3f, .4f, .4f, .4f, .1f, .1f};
    memcpy(s->data, sv, sizeof sv);
    int c2[4] = {4, 2, 2, 0};
    r.counts = c2;
    /* P = [.4, .25, .175, .175];  sum f P = .2 + .0625 + .04375 = .30625; * alpha E */
    ck_assert_float_le(fabsf(tt_item(tt_moe_balance_loss(&r, 0.1f)) - 0.1f * 4 * 0.30625f), 1e-6f);
    tt_tape_reset();
    tt_free(s);
}
END_TEST

START_TEST(test_balance_loss_reaches_gate) {
    /* the balance loss alone gives the router weight a non-zero gradient; at W = 0 the
     * routing is uniform in P and the loss equals alpha */
    tt_manual_seed(9);
    tt_params p = {0};
    tt_moe_gate g;
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 4, 2);
    tt_moe_gate_init(&g, &p, "gate", &cfg);
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(8, 4), -1.0f, 1.0f);
    tt_routing r = tt_moe_gate_forward(&g, x, false);
    tt_backward(tt_moe_balance_loss(&r, 0.01f));
    float gmax = 0.0f;
    for (size_t i = 0; i < g.proj.weight->size; i++) gmax = fmaxf(gmax, fabsf(g.proj.weight->grad[i]));
    ck_assert_msg(gmax > 1e-6f, "router weight gradient from the balance loss is %g", (double)gmax);
    tt_tape_reset();

    memset(g.proj.weight->data, 0, g.proj.weight->size * sizeof(float));
    r = tt_moe_gate_forward(&g, x, false);
    ck_assert_float_le(fabsf(tt_item(tt_moe_balance_loss(&r, 0.01f)) - 0.01f), 1e-8f);
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_update_bias_signs) {
    tt_params p = {0};
    tt_moe_gate g;
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 4, 2);
    cfg.selection_bias = true;
    tt_moe_gate_init(&g, &p, "gate", &cfg);
    int counts[4] = {5, 1, 3, 3}; /* mean 3: overloaded, underloaded, balanced, balanced */
    tt_moe_gate_update_bias(&g, counts, 0.001f);
    float want[4] = {-0.001f, 0.001f, 0.0f, 0.0f};
    ck_assert_float_eq(tt_test_maxdiff(g.bias->data, want, 4), 0.0f);
    tt_moe_gate_update_bias(&g, counts, 0.001f);
    float want2[4] = {-0.002f, 0.002f, 0.0f, 0.0f};
    ck_assert_float_le(tt_test_maxdiff(g.bias->data, want2, 4), 1e-9f);
    tt_params_free(&p);

    tt_params q = {0};
    tt_moe_gate h;
    cfg.selection_bias = false;
    tt_moe_gate_init(&h, &q, "router", &cfg);
    TT_EXPECT_ERROR(tt_moe_gate_update_bias(&h, counts, 0.001f), "has no selection bias");
    tt_params_free(&q);
}
END_TEST

START_TEST(test_gate_config_errors) {
    tt_params p = {0};
    tt_moe_gate g;
    tt_moe_gate_config cfg = tt_moe_gate_config_default(4, 4, 5);
    TT_EXPECT_ERROR(tt_moe_gate_init(&g, &p, "gate", &cfg), "top_k = 5 must be in [1, n_experts = 4]");
    cfg = tt_moe_gate_config_default(4, 6, 2);
    cfg.n_groups = 4;
    TT_EXPECT_ERROR(tt_moe_gate_init(&g, &p, "gate", &cfg), "n_groups = 4 must be >= 1 and divide n_experts = 6");
    cfg.n_groups = 3;
    cfg.topk_groups = 1;
    cfg.top_k = 3;
    TT_EXPECT_ERROR(tt_moe_gate_init(&g, &p, "gate", &cfg), "hold fewer than top_k = 3");
    cfg = tt_moe_gate_config_default(4, 4, 2);
    cfg.linear_bias = cfg.selection_bias = true;
    TT_EXPECT_ERROR(tt_moe_gate_init(&g, &p, "gate", &cfg), "both be named 'gate.bias'");
    ck_assert_int_eq(p.n, 0); /* nothing was registered */
    cfg.selection_bias = false;
    tt_moe_gate_init(&g, &p, "gate", &cfg);
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(3, 5)), "x");
    TT_EXPECT_ERROR(tt_moe_gate_forward(&g, x, false), "x 'x' [3, 5] must be [N, 4]");
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

/* ---- DeepSeekMoE: sparse dispatch ------------------------------------------------------ */
static tt_moe_config small_moe(tt_ffn_kind kind, int shared) {
    tt_moe_config c = {.gate = tt_moe_gate_config_default(6, 4, 2), .hidden = 8, .kind = kind,
                       .expert_bias = true, .shared_hidden = shared};
    return c;
}

/* out[n] = sum_j w_nj Expert_{idx_nj}(x_n) (+ shared), computed densely row by row */
static void dense_reference(const tt_moe *m, tt_tensor *x2, const tt_routing *r, float *out) {
    const int N = x2->shape[0], D = x2->shape[1], K = r->top_k;
    tt_no_grad_begin();
    for (int n = 0; n < N; n++) {
        tt_tensor *row = tt_from_data(TT_SHAPE(1, D), x2->data + n * D);
        for (int d = 0; d < D; d++) out[n * D + d] = 0.0f;
        for (int j = 0; j < K; j++) {
            tt_tensor *y = tt_expert_forward(&m->experts[tt_ids(r->indices)[n * K + j]], row);
            for (int d = 0; d < D; d++) out[n * D + d] += r->weights->data[n * K + j] * y->data[d];
        }
        if (m->cfg.shared_hidden > 0) {
            tt_tensor *y = tt_expert_forward(&m->shared, row);
            for (int d = 0; d < D; d++) out[n * D + d] += y->data[d];
        }
        tt_free(row);
    }
    tt_no_grad_end();
}

START_TEST(test_moe_matches_dense) {
    for (int shared = 0; shared <= 5; shared += 5) {
        tt_manual_seed(21);
        tt_params p = {0};
        tt_moe m;
        tt_moe_config cfg = small_moe(TT_FFN_RELU, shared);
        tt_moe_init(&m, &p, "moe", &cfg);
        tt_tensor *x = tt_rand_uniform(TT_SHAPE(2, 5, 6), -1.0f, 1.0f);
        tt_routing r;
        tt_tensor *y = tt_moe_forward(&m, x, false, &r);
        ck_assert_int_eq(y->ndim, 3);
        ck_assert_int_eq(y->shape[0], 2);
        ck_assert_int_eq(y->shape[1], 5);
        ck_assert_int_eq(y->shape[2], 6);
        ck_assert_int_eq(r.n_tokens, 10);
        float want[60];
        tt_tensor *x2 = tt_from_data(TT_SHAPE(10, 6), x->data);
        dense_reference(&m, x2, &r, want);
        float diff = tt_test_maxdiff(y->data, want, 60);
        ck_assert_msg(diff < 1e-6f, "sparse vs dense max diff %g (shared %d)", (double)diff, shared);
        if (shared) ck_assert_ptr_nonnull(tt_params_find(&p, "moe.shared_experts.fc1.weight"));
        ck_assert_ptr_nonnull(tt_params_find(&p, "moe.gate.weight"));
        ck_assert_ptr_nonnull(tt_params_find(&p, "moe.experts.3.fc2.bias"));
        tt_tape_reset();
        tt_free(x);
        tt_free(x2);
        tt_moe_free(&m);
        tt_params_free(&p);
    }
}
END_TEST

/* The tape shows the work: the experts' rows come from x, inside the one experts op
 * (experts_relu or experts_swiglu) or, op by op, by index_select per expert, and add up
 * to N*K; an expert with no tokens appears nowhere on the tape. */
static void only_routed_rows(tt_ffn_kind kind, bool op_by_op) {
    tt_manual_seed(4);
    tt_params p = {0};
    tt_moe m;
    tt_moe_config cfg = small_moe(kind, 0);
    cfg.gate.selection_bias = true;
    cfg.op_by_op = op_by_op;
    tt_moe_init(&m, &p, "moe", &cfg);
    m.gate.bias->data[3] = -10.0f; /* expert 3 is never chosen */
    tt_tensor *x = tt_test_param(TT_SHAPE(7, 6), -1.0f, 1.0f);
    tt_routing r;
    tt_moe_forward(&m, x, false, &r);
    ck_assert_int_eq(r.counts[3], 0);
    int rows = 0, experts = 0;
    bool expert3_used = false;
    for (int i = 0; i < tt_tape_len(); i++) {
        tt_node *nd = tt_tape_node(i);
        if (!strcmp(nd->op, "index_select") && nd->out->shape[1] == 6) {
            rows += nd->out->shape[0];
            experts++;
        }
        if (!strcmp(nd->op, "experts_relu") || !strcmp(nd->op, "experts_swiglu")) {
            ck_assert(!op_by_op);
            const int *off = tt_experts_relu_offsets(nd);
            rows += nd->in[1]->shape[0];
            experts += nd->i[0];
            for (int e = 0; e < nd->i[0]; e++) ck_assert_int_gt(off[e + 1], off[e]);
        }
        for (int j = 0; j < nd->n_in; j++)
            if (nd->in[j] == m.experts[3].up.weight) expert3_used = true;
    }
    int used = 0;
    for (int e = 0; e < 4; e++) used += r.counts[e] > 0;
    ck_assert_int_eq(rows, 7 * 2);
    ck_assert_int_eq(experts, used);
    ck_assert(!expert3_used);
    tt_tape_reset();
    tt_free(x);
    tt_moe_free(&m);
    tt_params_free(&p);
}

START_TEST(test_moe_only_routed_rows) {
    for (int op_by_op = 0; op_by_op <= 1; op_by_op++) {
        only_routed_rows(TT_FFN_RELU, op_by_op);
        only_routed_rows(TT_FFN_SWIGLU, op_by_op);
    }
}
END_TEST

/* The experts op and cfg.op_by_op give the same bits: the output and every parameter's
 * gradient of a whole MoE layer (router, routed experts, shared expert), both kinds. */
static void op_matches_loop(tt_ffn_kind kind) {
    float *ref[32] = {0}, *ref_y = NULL;
    size_t ny = 0;
    for (int op_by_op = 1; op_by_op >= 0; op_by_op--) {
        tt_manual_seed(31);
        tt_params p = {0};
        tt_moe m;
        tt_moe_config cfg = small_moe(kind, 5);
        cfg.op_by_op = op_by_op;
        tt_moe_init(&m, &p, "moe", &cfg);
        ck_assert_int_le(p.n, 32);
        tt_tensor *x = tt_test_param(TT_SHAPE(3, 7, 6), -1.0f, 1.0f);
        tt_tensor *y = tt_moe_forward(&m, x, false, NULL);
        tt_tensor *w = tt_rand_uniform(TT_SHAPE(3, 7, 6), -1.0f, 1.0f);
        tt_backward(tt_sum_all(tt_mul(y, w)));
        bool busy_all = true; /* (every expert has a gradient: all were routed to) */
        for (int i = 0; i < p.n; i++) busy_all = busy_all && p.t[i]->grad;
        ck_assert(busy_all);
        if (op_by_op) {
            ny = y->size;
            ref_y = malloc(ny * sizeof(float));
            memcpy(ref_y, y->data, ny * sizeof(float));
        } else {
            ck_assert_msg(memcmp(y->data, ref_y, ny * sizeof(float)) == 0, "y differs");
        }
        for (int i = 0; i < p.n; i++) {
            const tt_tensor *t = p.t[i];
            if (op_by_op) {
                ref[i] = malloc(t->size * sizeof(float));
                memcpy(ref[i], t->grad, t->size * sizeof(float));
            } else {
                ck_assert_msg(memcmp(t->grad, ref[i], t->size * sizeof(float)) == 0,
                              "gradient of '%s' differs from the op-by-op loop's", t->name);
                free(ref[i]);
            }
        }
        tt_tape_reset();
        tt_free(w);
        tt_free(x);
        tt_moe_free(&m);
        tt_params_free(&p);
    }
    free(ref_y);
}

START_TEST(test_moe_op_matches_loop) {
    op_matches_loop(TT_FFN_RELU);
    op_matches_loop(TT_FFN_SWIGLU);
}
END_TEST

typedef struct moe_ctx {
    tt_moe *m;
} moe_ctx;

static tt_tensor *f_moe(tt_tensor *const *in, void *user) {
    moe_ctx *c = user;
    return tt_moe_forward(c->m, in[0], false, NULL);
}

static void moe_gradcheck(tt_ffn_kind kind, int shared, uint64_t seed, const char *op,
                          bool op_by_op) {
    tt_params p = {0};
    tt_moe m = {0};
    tt_moe_config cfg = small_moe(kind, shared);
    cfg.op_by_op = op_by_op;
    tt_tensor *x = NULL;
    bool ok = false;
    uint64_t used = seed;
    for (uint64_t s = seed; s < seed + 1000 && !ok; s++) {
        if (x) tt_free(x), tt_moe_free(&m), tt_params_free(&p);
        tt_manual_seed(used = s);
        tt_moe_init(&m, &p, "moe", &cfg);
        x = tt_test_param(TT_SHAPE(2, 3, 6), -1.0f, 1.0f);
        tt_routing r;
        tt_moe_forward(&m, x, false, &r);
        ok = routing_margin(r.scores, NULL, &cfg.gate) > 0.02f && relu_margin() > 0.01f;
        for (int e = 0; e < 4; e++) ok = ok && r.counts[e] > 0; /* every expert busy */
        tt_tape_reset();
    }
    printf("  moe (%s experts, shared %d): seed %llu\n", kind == TT_FFN_RELU ? "relu" : "swiglu",
           shared, (unsigned long long)used);
    ck_assert_msg(ok, "no seed in [%llu, +1000) has margins > 0.02 (routing), 0.01 (relu)",
                  (unsigned long long)seed);
    moe_ctx c = {&m};
    tt_tensor *in[5] = {x, m.gate.proj.weight, m.experts[0].up.weight, m.experts[1].down.weight,
                        m.experts[2].down.bias};
    tt_test_gradcheck(op, f_moe, &c, 5, in, NULL);
    tt_free(x);
    tt_moe_free(&m);
    tt_params_free(&p);
}

START_TEST(test_moe_grad) {
    /* SwiGLU experts: smooth, so no kink of ReLU can sit inside a finite-difference step */
    moe_gradcheck(TT_FFN_SWIGLU, 0, 8, "moe_combine", false);
    moe_gradcheck(TT_FFN_SWIGLU, 0, 8, "experts_swiglu", false);
    moe_gradcheck(TT_FFN_SWIGLU, 4, 8, "experts_swiglu", false);
    moe_gradcheck(TT_FFN_SWIGLU, 4, 8, "index_select", true); /* (the loop) */
}
END_TEST

START_TEST(test_moe_relu_grad) {
    /* the seed's ReLU experts, on a seed where no hidden pre-activation lies within 0.01
     * of the kink at 0 (a step moves one by at most 1e-2 * max(|x|, |W1|) <= 1e-2) */
    moe_gradcheck(TT_FFN_RELU, 0, 8, "moe_combine", false);
    moe_gradcheck(TT_FFN_RELU, 0, 8, "experts_relu", false);
}
END_TEST

START_TEST(test_moe_shape_error) {
    tt_params p = {0};
    tt_moe m;
    tt_moe_config cfg = small_moe(TT_FFN_RELU, 0);
    tt_moe_init(&m, &p, "moe", &cfg);
    tt_tensor *x = tt_set_name(tt_zeros(TT_SHAPE(2, 5)), "h");
    TT_EXPECT_ERROR(tt_moe_forward(&m, x, false, NULL), "x 'h' [2, 5] must be [..., 6] (moe 'moe.gate.weight')");
    tt_free(x);
    tt_moe_free(&m);
    tt_params_free(&p);
}
END_TEST

static Suite *moe_suite(void) {
    Suite *s = suite_create("moe");
    TCase *tc = tcase_create("moe");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_gate_softmax_grad);
    tcase_add_test(tc, test_gate_sigmoid_bias_groups_grad);
    tcase_add_test(tc, test_balance_loss_grad);
    tcase_add_test(tc, test_topk_picks_best_not_first);
    tcase_add_test(tc, test_group_limited_max);
    tcase_add_test(tc, test_sigmoid_bias_groups_known_answer);
    tcase_add_test(tc, test_noise_only_in_training);
    tcase_add_test(tc, test_balance_loss_values);
    tcase_add_test(tc, test_balance_loss_reaches_gate);
    tcase_add_test(tc, test_update_bias_signs);
    tcase_add_test(tc, test_gate_config_errors);
    tcase_add_test(tc, test_moe_matches_dense);
    tcase_add_test(tc, test_moe_only_routed_rows);
    tcase_add_test(tc, test_moe_op_matches_loop);
    tcase_add_test(tc, test_moe_grad);
    tcase_add_test(tc, test_moe_relu_grad);
    tcase_add_test(tc, test_moe_shape_error);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(moe_suite)

/* moe.h - Mixture of Experts: the router (MoEGate), sparse dispatch (DeepSeekMoE) and
 * the auxiliary load-balance loss.
 *
 * Seed design (defaults): scores = softmax(W x) over all E experts, the top-k experts
 * per token, their scores renormalised to sum to 1. The DeepSeek-V3 switches (sigmoid
 * scores, a selection-only bias, group-limited routing, route_scale) are fields of the
 * same config; see ../../shared/deepseek_v3.md section 7.
 */
#ifndef TT_MOE_H
#define TT_MOE_H

#include "nn.h"

typedef enum tt_score_func { TT_SCORE_SOFTMAX = 0, TT_SCORE_SIGMOID = 1 } tt_score_func;

typedef struct tt_moe_gate_config {
    int dim, n_experts, top_k;
    tt_score_func score_func; /* softmax (seed) or sigmoid (V3)                         */
    bool renormalize;         /* weights /= sum of the selected scores (seed: true)     */
    float route_scale;        /* weights *= route_scale (1 = off)                        */
    int n_groups, topk_groups;/* group-limited routing; 1, 1 = off                       */
    bool selection_bias;      /* V3 aux-loss-free bias: added to scores for choosing only */
    float noise_std;          /* noisy top-k: N(0, noise_std^2) added to the logits used
                                 for choosing, in training only (0 = off)                 */
    bool linear_bias;         /* bias in the router's Linear                              */
} tt_moe_gate_config;

/* A sensible seed-style gate config: softmax, renormalised, no groups, no noise. */
tt_moe_gate_config tt_moe_gate_config_default(int dim, int n_experts, int top_k);

typedef struct tt_moe_gate {
    tt_moe_gate_config cfg;
    tt_linear proj;    /* "<name>.weight" [E, dim] (+ bias)                            */
    tt_tensor *bias;   /* "<name>.bias" [E] selection bias, requires_grad = false, or NULL */
} tt_moe_gate;

/* What the router decided for a batch of N tokens (all temporaries of the step). */
typedef struct tt_routing {
    int n_tokens, n_experts, top_k;
    tt_score_func score_func;  /* how scores were made (the balance loss needs it) */
    tt_tensor *logits;  /* [N, E]                                                 */
    tt_tensor *scores;  /* [N, E] softmax / sigmoid probabilities (differentiable) */
    tt_tensor *indices; /* int32 [N, K] chosen experts, best first                 */
    tt_tensor *weights; /* [N, K] combination weights (differentiable)             */
    int *counts;        /* [E] tokens routed to each expert (arena)                */
} tt_routing;

void tt_moe_gate_init(tt_moe_gate *g, tt_params *p, const char *name,
                      const tt_moe_gate_config *cfg);
/* x [N, dim] -> routing. Noise (if configured) only when training. Errors (abort via the
 * error handler) on a bad config in init (top_k outside [1, E], n_groups not dividing E,
 * topk_groups groups too small for top_k, linear_bias together with selection_bias:
 * both would be named "<name>.bias") and on x not [N, dim] in forward. */
tt_routing tt_moe_gate_forward(const tt_moe_gate *g, tt_tensor *x, bool training);

/* alpha * E * sum_i f_i P_i, f_i = (slots routed to i) / (N K) (a constant),
 * P_i = mean over tokens of scores[:, i] (carries the gradient to the router); for
 * sigmoid scores each row is first normalised to sum 1 (V3 eq. 19), for softmax it
 * already does. Equals alpha at perfectly uniform routing. Returns a scalar tensor. */
tt_tensor *tt_moe_balance_loss(const tt_routing *r, float alpha);

/* DeepSeek-V3 aux-loss-free balancing: b_i += gamma * sign(mean(c) - c_i). */
void tt_moe_gate_update_bias(tt_moe_gate *g, const int *counts, float gamma);

typedef struct tt_moe_config {
    tt_moe_gate_config gate;
    int hidden;            /* per-expert hidden size                                   */
    tt_ffn_kind kind;      /* RELU (seed) or SWIGLU (V3)                               */
    bool expert_bias;      /* biases in the experts' Linears                           */
    int shared_hidden;     /* > 0: one always-on shared expert of this hidden size     */
    bool op_by_op;         /* run the routed experts op by op (index_select and the
                            * expert's Linears per expert, as tutorial 5 shows) instead
                            * of one experts op: the same bits, slower; a tape to read */
} tt_moe_config;

typedef struct tt_moe {
    tt_moe_config cfg;
    tt_moe_gate gate;      /* "<name>.gate"                                           */
    tt_expert *experts;    /* "<name>.experts.<e>" [n_experts]                          */
    tt_expert shared;      /* "<name>.shared_experts" when cfg.shared_hidden > 0        */
} tt_moe;

void tt_moe_init(tt_moe *m, tt_params *p, const char *name, const tt_moe_config *cfg);
void tt_moe_free(tt_moe *m); /* frees the experts array (parameters belong to the list) */

/* Sparse dispatch: each expert runs only on the rows routed to it (index_select), its
 * output is scaled by the routing weight and scatter-added back (index_add).
 * x [..., dim] -> [..., dim]. routing_out (may be NULL) receives the gate's decision. */
tt_tensor *tt_moe_forward(const tt_moe *m, tt_tensor *x, bool training, tt_routing *routing_out);

#endif

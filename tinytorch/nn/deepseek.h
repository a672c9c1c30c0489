/* deepseek.h - the seed's DeepSeek V3 toy model, built from the modules.
 *
 *   h = embed(ids) + pos_embed(positions)
 *   for each layer:  h = norm1(h + attn(h));  h = norm2(h + moe(h))   (post-norm)
 *   logits = head(h)
 *   loss = cross_entropy(logits, targets) + sum over layers of the balance loss
 */
#ifndef TT_DEEPSEEK_H
#define TT_DEEPSEEK_H

#include "../error.h"
#include "mla.h"
#include "moe.h"

typedef struct tt_dsv3_config {
    int vocab, dim, n_layers, n_heads;
    int n_experts, top_k, expert_hidden; /* expert_hidden: 4 * dim in the seed      */
    int rank;                            /* MLA latent rank r                        */
    int max_seq;                         /* length of the learned position table     */
    float aux_alpha;                     /* balance-loss weight (0 = off)            */
    float noise_std;                     /* noisy top-k in training (0 = off)        */
} tt_dsv3_config;

/* The model card of the seed: vocab 100, hidden 64, 2 layers, 4 heads, 4 experts,
 * 2 active, rank 16, expert hidden 256, max_seq 64, aux_alpha 0.01. */
tt_dsv3_config tt_dsv3_config_toy(void);
/* Largest model tt_dsv3_config_check accepts (parameters; 4 bytes each, plus grads). */
#define TT_DSV3_MAX_PARAMS 1e9
/* TT_OK, or TT_ERR_ARG with a message in tt_last_error() (heads not dividing dim,
 * top_k > n_experts, non-positive sizes, ...). */
tt_status tt_dsv3_config_check(const tt_dsv3_config *c);

/* The config as one JSON object {"vocab": 100, "dim": 64, ...} (every field, floats with
 * 9 significant digits). snprintf semantics: writes at most len bytes including the NUL
 * and returns the length the full text needs (so call with NULL, 0 to size a buffer). */
int tt_dsv3_config_to_json(const tt_dsv3_config *c, char *buf, size_t len);
/* Parse a JSON object of config fields (absent fields keep the toy defaults) and check
 * it. TT_ERR_FORMAT for malformed JSON, an unknown key (named in the message), a
 * non-number or a non-integer for an integer field; TT_ERR_ARG if the check fails.
 * *c is written only on success. */
tt_status tt_dsv3_config_from_json(const char *json, tt_dsv3_config *c);

typedef struct tt_dsv3_block {
    tt_mla attn;          /* "layers.<L>.attn"  */
    tt_layernorm norm1;   /* "layers.<L>.norm1" */
    tt_moe moe;           /* "layers.<L>.moe"   */
    tt_layernorm norm2;   /* "layers.<L>.norm2" */
} tt_dsv3_block;

/* One post-norm block: h = norm1(h + attn(h)); h = norm2(h + moe(h)). h [B, T, dim];
 * routing (may be NULL) receives the MoE's decision. */
tt_tensor *tt_dsv3_block_forward(const tt_dsv3_block *b, tt_tensor *h, bool training,
                                 tt_routing *routing);

typedef struct tt_dsv3 {
    tt_dsv3_config cfg;
    tt_params params;      /* every parameter, by name                           */
    tt_embed embed;        /* "embed"                                             */
    tt_embed pos_embed;    /* "pos_embed"                                         */
    tt_dsv3_block *layers; /* [n_layers]                                          */
    tt_linear head;        /* "head"                                              */
    bool training;         /* train mode: noisy routing on (if configured)        */
} tt_dsv3;

typedef struct tt_dsv3_output {
    tt_tensor *logits;     /* [B, T, vocab]                                       */
    tt_tensor *loss;       /* ce + aux (NULL without targets)                     */
    tt_tensor *ce;         /* cross entropy, mean over tokens                     */
    tt_tensor *aux;        /* sum of the layers' balance losses (scalar)          */
    tt_routing *routing;   /* [n_layers] (arena)                                  */
} tt_dsv3_output;

/* Build and initialise from the global RNG (call tt_manual_seed first). NULL and a
 * message in tt_last_error() if the config is invalid. Starts in training mode
 * (m->training = true, as PyTorch modules do): set it false for evaluation.
 * Layout (the seed's PyTorch defaults): attention and experts are Linears with biases
 * (ReLU experts of expert_hidden), the router has none (softmax, top-k renormalised,
 * noise_std from the config), LayerNorms with eps 1e-5, head with a bias; embeddings
 * N(0, 1) as nn.Embedding (why not 0.02: see deepseek.c). Names: embed.weight, pos_embed.weight, layers.<L>.attn.{q_proj, kv_a_proj,
 * kv_b_proj, o_proj}.{weight, bias}, layers.<L>.norm1.{weight, bias},
 * layers.<L>.moe.gate.weight, layers.<L>.moe.experts.<e>.{fc1, fc2}.{weight, bias},
 * layers.<L>.norm2.{weight, bias}, head.{weight, bias}. */
tt_dsv3 *tt_dsv3_new(const tt_dsv3_config *c);
void tt_dsv3_free(tt_dsv3 *m);
/* ids int32 [B, T]; targets int32 [B, T] or NULL. Errors (via the error handler) if
 * T > max_seq or an id is outside [0, vocab). With aux_alpha == 0 the balance losses are
 * not built (aux is a constant 0, loss = ce) but routing is still filled. */
tt_dsv3_output tt_dsv3_forward(tt_dsv3 *m, tt_tensor *ids, tt_tensor *targets);
size_t tt_dsv3_n_params(const tt_dsv3 *m);
/* Parameters one token actually uses: all but the (n_experts - top_k) unchosen experts. */
size_t tt_dsv3_n_active_params(const tt_dsv3 *m);

/* Incremental decoding with a latent cache per layer (batch 1). */
typedef struct tt_dsv3_cache {
    tt_mla_cache *layers;
    int n_layers;
} tt_dsv3_cache;
void tt_dsv3_cache_init(tt_dsv3_cache *c, const tt_dsv3 *m, int max_len);
void tt_dsv3_cache_free(tt_dsv3_cache *c);
/* ids int32 [1, T] of the next T tokens -> logits [1, T, vocab]; no tape. Positions
 * continue from the cache length; routing is deterministic (no noise). Errors if the
 * cache is full or the positions pass max_seq. */
tt_tensor *tt_dsv3_forward_cached(tt_dsv3 *m, tt_tensor *ids, tt_dsv3_cache *cache);

#endif

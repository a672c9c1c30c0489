/* v3.h - the faithful DeepSeek-V3 model: the architecture, parameter names and config
 * fields of the official inference code (deepseek-ai/DeepSeek-V3 inference/model.py),
 * plus the training-only parts of the technical report. The exact definition is
 * shared/deepseek_v3.md; section numbers below refer to it.
 *
 *   h = embed[ids]                                                     (section 3)
 *   for L: h += MLA_L(attn_norm(h));  h += FFN_L(ffn_norm(h))          pre-norm RMSNorm
 *          FFN = SwiGLU MLP for L < n_dense_layers, else MoE           (sections 6, 7)
 *   logits = head(norm(h))
 * MLA (section 5): q = wq(x) or wq_b(q_norm(wq_a(x))); [c ; k_pe] = wkv_a(x);
 * [k_nope ; v] = wkv_b(kv_norm(c)); interleaved RoPE on q_pe and the ONE k_pe shared by
 * all heads; softmax scale (dn+dr)^-0.5, times m^2 (YaRN) when max_seq_len >
 * original_seq_len. RMSNorm eps is 1e-6 everywhere.
 *
 * Parameter names are exactly those of the official state_dict (section 2), so a
 * checkpoint converted by the official convert.py (fp32) loads by name:
 *   embed.weight, layers.L.attn.{wq | wq_a, q_norm, wq_b}.weight,
 *   layers.L.attn.{wkv_a, kv_norm, wkv_b, wo}.weight, layers.L.ffn.{w1, w2, w3}.weight
 *   (dense), layers.L.ffn.gate.weight (+ .gate.bias), layers.L.ffn.experts.e.{w1,w2,w3}
 *   .weight, layers.L.ffn.shared_experts.{w1,w2,w3}.weight,
 *   layers.L.{attn_norm, ffn_norm}.weight, norm.weight, head.weight.
 * The gate bias (aux-loss-free balancing, section 8) is registered with
 * requires_grad = false: it only chooses experts and is moved by tt_v3_update_bias.
 *
 * Multi-Token Prediction (section 8, D = 1; config "n_mtp_modules": 1, off by default),
 * laid out like the released checkpoint's layer 61 under reference-style names:
 *   mtp.0.enorm.weight [d], mtp.0.hnorm.weight [d], mtp.0.eh_proj.weight [d, 2d],
 *   mtp.0.{attn_norm, attn.*, ffn_norm, ffn.*} (one block, names as in layers.L),
 *   mtp.0.norm.weight [d] (its own final RMSNorm = shared_head.norm).
 * The embedding and the head are the main model's (shared, not copied). For positions
 * i = 0..S-2, with h_i the last main block's output (before the final norm):
 *   h'_i = eh_proj([enorm(embed[t_{i+1}]) ; hnorm(h_i)])     embedding FIRST
 *   mtp_logits_i = head(mtp.0.norm(Block(h'_{0..S-2})_i))     predicts t_{i+2}
 * The concatenation order is the released weights' / inference engines' (eq. 21 of the
 * report writes [RMSNorm(h) ; RMSNorm(Emb)], the reverse: an eh_proj trained one way
 * does not work the other way). The block is MoE unless every main layer is dense (the
 * same kind as the last main layer; V3's is MoE); its RoPE positions are 0..S-2.
 * HF checkpoints (model.layers.L.self_attn..., lm_head) load through tt_v3_hf_name.
 */
#ifndef TT_V3_H
#define TT_V3_H

#include "../error.h"
#include "../ops_rope.h"
#include "moe.h"

/* ModelArgs, with the official field names (section 1). */
typedef struct tt_v3_config {
    int max_seq_len;          /* RoPE table length; YaRN on if > original_seq_len   */
    int vocab_size, dim, inter_dim, moe_inter_dim;
    int n_layers, n_dense_layers, n_heads;
    int n_routed_experts, n_shared_experts, n_activated_experts;
    int n_expert_groups, n_limited_groups;
    tt_score_func score_func; /* "softmax" | "sigmoid"                               */
    float route_scale;
    int q_lora_rank;          /* 0 = no query compression (wq)                        */
    int kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int original_seq_len;
    float rope_theta, rope_factor, beta_fast, beta_slow, mscale;
    /* Not a ModelArgs field: the official Gate has a bias iff dim == 7168. The JSON key
     * "gate_bias" (true/false) overrides that rule; absent, the rule applies. */
    bool gate_bias;
    /* Not a ModelArgs field: Multi-Token Prediction modules, 0 (default) or 1 (V3's D).
     * JSON key "n_mtp_modules". */
    int n_mtp_modules;
} tt_v3_config;

/* The ModelArgs defaults (= config_16B, DeepSeek-V2-Lite). */
tt_v3_config tt_v3_config_default(void);
/* A small V3-style config for the toy trainer (train_toy --preset v3): vocab 256, dim 64,
 * 4 layers (1 dense), 4 heads, 8 routed experts in 4 groups (2 kept), 1 shared, 2 active,
 * sigmoid scores with the gate bias, route_scale 2.5, q_lora_rank 32, kv_lora_rank 32,
 * dn 16, dr 8, dv 16, max_seq_len 256 (no YaRN). */
tt_v3_config tt_v3_config_toy(void);
/* TT_OK, or TT_ERR_ARG naming the inconsistency in tt_last_error(). */
tt_status tt_v3_config_check(const tt_v3_config *c);
/* Parse a JSON object with ModelArgs fields and "gate_bias", "n_mtp_modules" (absent
 * fields keep the defaults of tt_v3_config_default; "dtype", "scale_fmt" and
 * "max_batch_size" are accepted and ignored: everything runs in fp32). TT_ERR_FORMAT for
 * malformed JSON, an unknown or duplicate field (named), a value of the wrong type or a
 * non-integer for an integer field; TT_ERR_ARG if the result is inconsistent. *c is
 * written only on success. */
tt_status tt_v3_config_from_json(const char *text, size_t len, tt_v3_config *c);
tt_status tt_v3_config_load(const char *path, tt_v3_config *c);   /* + TT_ERR_IO */
/* The config as JSON (every ModelArgs field + "gate_bias" + "n_mtp_modules"); snprintf
 * semantics. */
int tt_v3_config_to_json(const tt_v3_config *c, char *buf, size_t len);

typedef struct tt_v3_attn {
    tt_linear wq;                 /* q_lora_rank == 0                                */
    tt_linear wq_a, wq_b;         /* q_lora_rank > 0, with q_norm between them       */
    tt_rmsnorm q_norm;
    tt_linear wkv_a, wkv_b, wo;
    tt_rmsnorm kv_norm;
} tt_v3_attn;

typedef struct tt_v3_block {
    tt_v3_attn attn;              /* "layers.L.attn"                                  */
    bool dense;                   /* L < n_dense_layers                               */
    tt_expert mlp;                /* "layers.L.ffn" when dense                        */
    tt_moe moe;                   /* "layers.L.ffn" otherwise                         */
    tt_rmsnorm attn_norm, ffn_norm;
} tt_v3_block;

/* One Multi-Token Prediction module ("mtp.k", see the top of this file). */
typedef struct tt_v3_mtp {
    tt_rmsnorm enorm, hnorm;      /* on the embedding of t_{i+1} / on h_i             */
    tt_linear eh_proj;            /* [dim, 2 dim]: [enorm(emb) ; hnorm(h)] -> dim     */
    tt_v3_block block;            /* "mtp.k.{attn_norm, attn, ffn_norm, ffn}"         */
    tt_rmsnorm norm;              /* its own final norm (shared_head.norm)            */
} tt_v3_mtp;

typedef struct tt_v3 {
    tt_v3_config cfg;
    tt_params params;             /* every tensor of the state_dict, by official name */
    tt_embed embed;
    tt_v3_block *layers;          /* [n_layers]                                       */
    tt_rmsnorm norm;
    tt_linear head;
    tt_v3_mtp *mtp;               /* [n_mtp_modules] (NULL if 0); registered last     */
    tt_tensor *rope_cos, *rope_sin; /* [max_seq_len, dr/2] constants (not parameters) */
    float softmax_scale;
} tt_v3;

/* Build from a config (NULL and tt_last_error() if it is inconsistent). Matrices and
 * embeddings ~ N(0, init_std^2) from the global RNG (V3 pre-training: 0.006), RMSNorm
 * weights 1, gate bias 0. The MTP parameters come last, so the main weights are the
 * same with and without MTP for the same seed. */
tt_v3 *tt_v3_new(const tt_v3_config *c, float init_std);
void tt_v3_free(tt_v3 *m);

/* Weights by official name: every parameter must be in the file with its shape
 * (TT_ERR_MISMATCH naming the first that is not); strict also rejects extra tensors.
 * A file with HuggingFace names (any tensor "model.*" or "lm_head.*") is renamed by
 * tt_v3_hf_name first; as in convert.py, its MTP layers (model.layers.L, L >= n_layers)
 * are skipped when the model has no MTP module, and the MTP layer's copies of the shared
 * embedding / head are ignored. Two file tensors mapping to one name: TT_ERR_FORMAT.
 * Save writes every parameter (the gate bias included) under its official name and the
 * config JSON as metadata "config", so tt_v3_load(path, NULL) restores the model. */
tt_status tt_v3_load_weights(tt_v3 *m, const char *path, bool strict);
tt_status tt_v3_save(const tt_v3 *m, const char *path);
/* A model from a checkpoint (official or HF names): the config from config_path (a
 * ModelArgs JSON file) or, when config_path is NULL, from the checkpoint's "config"
 * metadata. */
tt_v3 *tt_v3_load(const char *ckpt_path, const char *config_path);

/* HuggingFace DeepSeek-V3 tensor name -> reference name (convert.py's mapping, section 2):
 * the "model." prefix dropped; per dot-separated component self_attn->attn, mlp->ffn,
 * embed_tokens->embed, input_layernorm->attn_norm, post_attention_layernorm->ffn_norm,
 * q_proj->wq, q_a_proj->wq_a, q_a_layernorm->q_norm, q_b_proj->wq_b,
 * kv_a_proj_with_mqa->wkv_a, kv_a_layernorm->kv_norm, kv_b_proj->wkv_b, o_proj->wo,
 * gate_proj->w1, down_proj->w2, up_proj->w3, e_score_correction_bias->bias (so
 * mlp.gate.e_score_correction_bias -> ffn.gate.bias), lm_head->head,
 * weight_scale_inv->scale; other components unchanged. Layers L >= n_layers are MTP
 * modules: "model.layers.L.X" -> "mtp.<L - n_layers>.X" with shared_head.norm -> norm.
 * Returns 1 with the name in out; 0 for the MTP layer's embed_tokens and
 * shared_head.head (copies of the shared embed / head: nothing to load); -1 if out
 * (len bytes) is too small or hf has more than 32 components. */
int tt_v3_hf_name(const char *hf, int n_layers, char *out, size_t len);

typedef struct tt_v3_output {
    tt_tensor *logits;    /* [B, S, V] every position (main head)                    */
    tt_tensor *loss;      /* ce + lambda * mtp_ce + bal (NULL without targets)       */
    tt_tensor *ce;        /* mean cross entropy over B*S                             */
    tt_tensor *bal;       /* alpha * sequence-wise balance loss summed over MoE layers
                             (mean over the B sequences), the MTP block's included
                             when MTP runs; NULL if alpha == 0                        */
    tt_routing *routing;  /* [n_layers] (arena); entries of dense layers are zero     */
    /* Multi-Token Prediction: all NULL unless lambda != 0 */
    tt_tensor *mtp_logits;   /* [B, S-1, V]: position i predicts t_{i+2}              */
    tt_tensor *mtp_ce;       /* mean CE of mtp_logits against targets[:, 1:] (unweighted) */
    tt_routing *mtp_routing; /* the MTP block's routing (arena; zero if it is dense)  */
} tt_v3_output;

/* ids, targets int32 [B, S] (targets may be NULL), S <= max_seq_len, positions 0..S-1.
 * alpha: weight of the complementary sequence-wise balance loss (section 8; V3 1e-4).
 * No Multi-Token Prediction: the same as tt_v3_forward_mtp(..., lambda = 0). */
tt_v3_output tt_v3_forward(tt_v3 *m, tt_tensor *ids, tt_tensor *targets, float alpha);
/* With Multi-Token Prediction weighted by lambda (V3: 0.3, later 0.1):
 *   loss = CE + lambda * mean_{b, i < S-1} CE(mtp_logits[b, i], targets[b, i+1]) + bal
 * (targets[b, i] is t_{i+1}, so targets[b, i+1] = t_{i+2}). lambda == 0 is exactly
 * tt_v3_forward: the MTP module is not run even if the model has one. lambda != 0
 * needs n_mtp_modules == 1 and S >= 2 (errors otherwise). The main logits do not depend
 * on lambda. */
tt_v3_output tt_v3_forward_mtp(tt_v3 *m, tt_tensor *ids, tt_tensor *targets, float alpha,
                               float lambda);

/* Aux-loss-free balancing (section 8) after a step: for every MoE layer (the MTP block's
 * too when it ran), b_i += gamma * sign(mean_j c_j - c_i) with the counts of
 * out->routing (out->mtp_routing). */
void tt_v3_update_bias(tt_v3 *m, const tt_v3_output *out, float gamma);

/* ---- incremental decoding, absorb form (section 5), batch 1 ------------------------ */
/* Per layer and token only the normalised latent c' = kv_norm(c) [kv_lora_rank] and the
 * rotated k_pe [qk_rope_head_dim] are cached. */
typedef struct tt_v3_cache {
    float *kv;    /* [n_layers][max_len][kv_lora_rank] */
    float *pe;    /* [n_layers][max_len][qk_rope_head_dim] */
    int len, max_len, n_layers, rank, rope_dim;
} tt_v3_cache;
void tt_v3_cache_init(tt_v3_cache *c, const tt_v3 *m, int max_len);
void tt_v3_cache_free(tt_v3_cache *c);
/* ids int32 [1, T]: the next T tokens at positions cache->len .. +T-1 -> logits
 * [1, T, V] (a temporary; nothing recorded on the tape). Equals tt_v3_forward on the
 * whole sequence at those positions. Errors if the cache or max_seq_len would overflow. */
tt_tensor *tt_v3_forward_cached(tt_v3 *m, tt_tensor *ids, tt_v3_cache *cache);

#endif

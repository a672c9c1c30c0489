/* mla.h - Multi-head Latent Attention, the seed's form.
 *
 *   q  = q_proj(x)                       [B, T, H*dh]
 *   c  = kv_a_proj(x)                    [B, T, r]      the compressed latent (cached)
 *   kv = kv_b_proj(c)                    [B, T, 2*H*dh] K and V restored from the latent
 *   a  = softmax(q k^T / sqrt(dh) + causal mask) per head;  o = a v
 *   y  = o_proj(concat_h o)
 * The KV cache of incremental decoding stores only c: r floats per token per layer
 * instead of 2*H*dh for full K and V.
 */
#ifndef TT_MLA_H
#define TT_MLA_H

#include "nn.h"

typedef struct tt_mla_config {
    int dim, n_heads, rank;
    bool bias; /* biases in the four Linears */
} tt_mla_config;

typedef struct tt_mla {
    tt_mla_config cfg;
    int head_dim; /* dim / n_heads */
    tt_linear q_proj, kv_a_proj, kv_b_proj, o_proj;
} tt_mla;

void tt_mla_init(tt_mla *m, tt_params *p, const char *name, const tt_mla_config *cfg);
tt_tensor *tt_mla_forward(const tt_mla *m, tt_tensor *x); /* [B, T, dim] -> [B, T, dim] */

/* Latent cache for one layer, batch 1: latent[pos * rank + j]. */
typedef struct tt_mla_cache {
    float *latent;
    int len, cap, rank;
} tt_mla_cache;
void tt_mla_cache_init(tt_mla_cache *c, int rank, int max_len);
void tt_mla_cache_free(tt_mla_cache *c);
/* x [1, T, dim] holds the next T tokens; their latents are appended to the cache and
 * they attend to every cached position (causally). Same result as tt_mla_forward on the
 * whole sequence, for the new positions. Records nothing on the tape. */
tt_tensor *tt_mla_forward_cached(const tt_mla *m, tt_tensor *x, tt_mla_cache *cache);

#endif

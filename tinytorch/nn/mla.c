/* mla.c - Multi-head Latent Attention (the seed's form, no RoPE, no norms on latents).
 *
 *   q = q_proj(x) [B,T,d]    c = kv_a_proj(x) [B,T,r]    kv = kv_b_proj(c) [B,T,2d]
 *   k = kv[..., :d], v = kv[..., d:]; each split into H heads of hd = d/H
 *   per head: a = softmax(mask(q k^T / sqrt(hd)));  o = a v
 *   y = o_proj(concat_h o)
 * The attention itself is one fused op (tt_attention_kv, ops/attention_fused.c) that
 * reads every head in place from q and kv_b_proj's output; its backward is the op's,
 * the rest is the tape's.
 */
#include "mla.h"

#include "../internal.h"
#include "../ops_attention.h"

#include <math.h>
#include <stdlib.h>

#define HERE ((tt_src){__FILE__, __LINE__})

void tt_mla_init(tt_mla *m, tt_params *p, const char *name, const tt_mla_config *cfg) {
    const char *op = "mla_init";
    if (cfg->dim < 1) tt_error_at(HERE, op, "'%s': dim = %d must be >= 1", name, cfg->dim);
    if (cfg->n_heads < 1 || cfg->dim % cfg->n_heads != 0)
        tt_error_at(HERE, op, "'%s': n_heads = %d must be >= 1 and divide dim = %d", name,
                    cfg->n_heads, cfg->dim);
    if (cfg->rank < 1) tt_error_at(HERE, op, "'%s': rank = %d must be >= 1", name, cfg->rank);
    char path[TT_PATH_LEN];
    const int d = cfg->dim, r = cfg->rank;
    m->cfg = *cfg;
    m->head_dim = d / cfg->n_heads;
    tt_linear_init(&m->q_proj, p, tt_name_join(path, name, "q_proj"), d, d, cfg->bias);
    tt_linear_init(&m->kv_a_proj, p, tt_name_join(path, name, "kv_a_proj"), d, r, cfg->bias);
    tt_linear_init(&m->kv_b_proj, p, tt_name_join(path, name, "kv_b_proj"), r, 2 * d, cfg->bias);
    tt_linear_init(&m->o_proj, p, tt_name_join(path, name, "o_proj"), d, d, cfg->bias);
}

/* Attention of q [B, T, d] over keys/values from the latents c [B, S, r], S >= T (the
 * queries are the last T of the S positions). kv_b_proj's output [B, S, 2d] holds K in
 * its first d columns and V in the rest, head h at columns h*hd of each: the fused op
 * reads the heads where they are (no split, no head transposes) and writes its output
 * [B, T, d] with the heads side by side, ready for o_proj. */
static tt_tensor *attend(const tt_mla *m, tt_tensor *q, tt_tensor *c) {
    tt_tensor *kv = tt_linear_forward(&m->kv_b_proj, c); /* [B, S, 2d] */
    tt_tensor *o = tt_attention_kv(q, kv, m->cfg.n_heads, 1.0f / sqrtf((float)m->head_dim),
                                   true); /* [B, T, d] */
    return tt_linear_forward(&m->o_proj, o);
}

static void check_x(const tt_mla *m, tt_tensor *x, const char *op) {
    tt_src src = HERE;
    tt_check_f32(x, src, op, "x");
    if (x->ndim != 3 || x->shape[2] != m->cfg.dim)
        tt_error_at(src, op, "x %s must be [B, T, %d] (attention '%s')", tt_d(x), m->cfg.dim,
                    m->q_proj.weight->name);
}

tt_tensor *tt_mla_forward(const tt_mla *m, tt_tensor *x) {
    check_x(m, x, "mla");
    tt_tensor *q = tt_linear_forward(&m->q_proj, x);    /* [B, T, d] */
    tt_tensor *c = tt_linear_forward(&m->kv_a_proj, x); /* [B, T, r] */
    return attend(m, q, c);
}

void tt_mla_cache_init(tt_mla_cache *c, int rank, int max_len) {
    if (rank < 1 || max_len < 1)
        tt_error_at(HERE, "mla_cache_init", "rank = %d and max_len = %d must be >= 1", rank,
                    max_len);
    c->latent = tt_xcalloc((size_t)rank * (size_t)max_len, sizeof(float));
    c->len = 0;
    c->cap = max_len;
    c->rank = rank;
}

void tt_mla_cache_free(tt_mla_cache *c) {
    free(c->latent);
    c->latent = NULL;
    c->len = c->cap = 0;
}

tt_tensor *tt_mla_forward_cached(const tt_mla *m, tt_tensor *x, tt_mla_cache *cache) {
    tt_src src = HERE;
    const char *op = "mla_cached";
    check_x(m, x, op);
    const int T = x->shape[1], r = m->cfg.rank;
    if (x->shape[0] != 1) tt_error_at(src, op, "x %s: the cache holds batch 1 only", tt_d(x));
    if (!cache->latent || cache->rank != r)
        tt_error_at(src, op, "cache rank %d does not match the layer's rank %d", cache->rank, r);
    if (cache->len + T > cache->cap)
        tt_error_at(src, op, "cache full: %d cached + %d new positions > capacity %d",
                    cache->len, T, cache->cap);
    tt_no_grad_begin();
    tt_tensor *c_new = tt_linear_forward(&m->kv_a_proj, x); /* [1, T, r] */
    memcpy(cache->latent + (size_t)cache->len * r, c_new->data, (size_t)T * r * sizeof(float));
    cache->len += T;
    const int S = cache->len;
    tt_tensor *c_all = tt_tmp(TT_F32, TT_SHAPE(1, S, r));
    memcpy(c_all->data, cache->latent, (size_t)S * r * sizeof(float));
    tt_tensor *q = tt_linear_forward(&m->q_proj, x);
    tt_tensor *y = attend(m, q, c_all);
    tt_no_grad_end();
    return y;
}

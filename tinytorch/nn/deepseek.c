/* deepseek.c - the seed's DeepSeek V3 toy model: embeddings, post-norm blocks of
 * MLA + MoE, a linear head; cross entropy plus the layers' balance losses.
 *
 *   h = embed(ids) + pos_embed(start + [0..T))                [B, T, d]
 *   per layer L:  h = norm1(h + attn(h));  h = norm2(h + moe(h))
 *   logits = head(h)                                          [B, T, V]
 *   loss = CE(logits, targets) + sum_L alpha * E * sum_i f_i P_i
 *
 * Choices where the seed's PyTorch defaults decide: every Linear has a bias (nn.Linear)
 * except the router (V3's gate has none); LayerNorm eps 1e-5.
 * Embedding init: N(0, 1) as nn.Embedding. N(0, 0.02^2) (GPT-2's) was tried: with plain
 * SGD it reached a lower loss on a dim-32 toy (final CE 0.16 vs 0.64 after 150 steps,
 * mean of 5 seeds; equal, 0.010, with AdamW), but with post-norm blocks whose Linears
 * have biases, tiny embeddings make the first attention's output nearly the same for
 * every token, so after norm1 every token is routed to the same experts (on the tiny
 * test model no seed in 100 used all 4 experts at init). Unit-scale embeddings keep the
 * tokens apart and the routing diverse from the first step.
 */
#include "deepseek.h"

#include "../internal.h"
#include "../io/json.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#define HERE ((tt_src){__FILE__, __LINE__})

tt_dsv3_config tt_dsv3_config_toy(void) {
    tt_dsv3_config c = {
        .vocab = 100,
        .dim = 64,
        .n_layers = 2,
        .n_heads = 4,
        .n_experts = 4,
        .top_k = 2,
        .expert_hidden = 256,
        .rank = 16,
        .max_seq = 64,
        .aux_alpha = 0.01f,
        .noise_std = 0.0f,
    };
    return c;
}

tt_status tt_dsv3_config_check(const tt_dsv3_config *c) {
    const char *pre = "dsv3 config";
    if (!c) return tt_fail(TT_ERR_ARG, "%s: NULL config", pre);
    if (c->vocab < 2) return tt_fail(TT_ERR_ARG, "%s: vocab = %d must be >= 2", pre, c->vocab);
#define POSITIVE(field)                                                                    \
    if (c->field < 1)                                                                      \
        return tt_fail(TT_ERR_ARG, "%s: " #field " = %d must be >= 1", pre, c->field);
    POSITIVE(dim)
    POSITIVE(n_layers)
    POSITIVE(n_heads)
    POSITIVE(n_experts)
    POSITIVE(expert_hidden)
    POSITIVE(rank)
    POSITIVE(max_seq)
#undef POSITIVE
    if (c->dim % c->n_heads != 0)
        return tt_fail(TT_ERR_ARG, "%s: n_heads = %d does not divide dim = %d", pre, c->n_heads,
                       c->dim);
    if (c->top_k < 1 || c->top_k > c->n_experts)
        return tt_fail(TT_ERR_ARG, "%s: top_k = %d must be in [1, n_experts = %d]", pre,
                       c->top_k, c->n_experts);
    if (!(c->aux_alpha >= 0.0f) || !isfinite(c->aux_alpha))
        return tt_fail(TT_ERR_ARG, "%s: aux_alpha = %g must be finite and >= 0", pre,
                       (double)c->aux_alpha);
    /* Size: count the parameters in double (no overflow) and refuse a model that could
     * not be allocated, instead of aborting later in tt_dsv3_new. */
    double d = c->dim, per_layer = 4.0 * d * d + 2.0 * d * c->rank + 3.0 * c->rank * d + 4.0 * d +
                                    d * c->n_experts + (double)c->n_experts * (2.0 * d * c->expert_hidden + c->expert_hidden + d);
    double total = 2.0 * c->vocab * d + (double)c->max_seq * d + c->vocab + c->n_layers * per_layer;
    if (total > TT_DSV3_MAX_PARAMS)
        return tt_fail(TT_ERR_ARG, "%s: %.3g parameters exceed the limit of %.3g", pre, total,
                       (double)TT_DSV3_MAX_PARAMS);
    if (!(c->noise_std >= 0.0f) || !isfinite(c->noise_std))
        return tt_fail(TT_ERR_ARG, "%s: noise_std = %g must be finite and >= 0", pre,
                       (double)c->noise_std);
    return TT_OK;
}

/* ---- JSON ------------------------------------------------------------------------- */
typedef struct cfg_field {
    const char *key;
    size_t offset;
    bool is_int;
} cfg_field;

static const cfg_field cfg_fields[] = {
    {"vocab", offsetof(tt_dsv3_config, vocab), true},
    {"dim", offsetof(tt_dsv3_config, dim), true},
    {"n_layers", offsetof(tt_dsv3_config, n_layers), true},
    {"n_heads", offsetof(tt_dsv3_config, n_heads), true},
    {"n_experts", offsetof(tt_dsv3_config, n_experts), true},
    {"top_k", offsetof(tt_dsv3_config, top_k), true},
    {"expert_hidden", offsetof(tt_dsv3_config, expert_hidden), true},
    {"rank", offsetof(tt_dsv3_config, rank), true},
    {"max_seq", offsetof(tt_dsv3_config, max_seq), true},
    {"aux_alpha", offsetof(tt_dsv3_config, aux_alpha), false},
    {"noise_std", offsetof(tt_dsv3_config, noise_std), false},
};
#define N_CFG_FIELDS (int)(sizeof cfg_fields / sizeof cfg_fields[0])

int tt_dsv3_config_to_json(const tt_dsv3_config *c, char *buf, size_t len) {
    int total = 0;
    char *p = buf;
    size_t left = buf ? len : 0;
    for (int i = 0; i <= N_CFG_FIELDS; i++) {
        int n;
        const char *sep = i == 0 ? "{" : ", ";
        if (i == N_CFG_FIELDS) {
            n = snprintf(p, left, "}");
        } else {
            const cfg_field *f = &cfg_fields[i];
            const char *at = (const char *)c + f->offset;
            if (f->is_int)
                n = snprintf(p, left, "%s\"%s\": %d", sep, f->key, *(const int *)at);
            else
                n = snprintf(p, left, "%s\"%s\": %.9g", sep, f->key, (double)*(const float *)at);
        }
        if (n < 0) return n;
        total += n;
        size_t adv = (size_t)n < left ? (size_t)n : left;
        p = p ? p + adv : p;
        left -= adv;
    }
    return total;
}

tt_status tt_dsv3_config_from_json(const char *json, tt_dsv3_config *out) {
    const char *pre = "dsv3 config";
    if (!json) return tt_fail(TT_ERR_ARG, "%s: NULL json text", pre);
    char err[256];
    tt_json *root = tt_json_parse(json, strlen(json), err, sizeof err);
    if (!root) return tt_fail(TT_ERR_FORMAT, "%s: %s", pre, err);
    tt_status st = TT_OK;
    tt_dsv3_config c = tt_dsv3_config_toy();
    if (root->type != TT_JSON_OBJECT) {
        st = tt_fail(TT_ERR_FORMAT, "%s: the JSON text is not an object", pre);
        goto done;
    }
    for (const tt_json *m = root->child; m; m = m->next) {
        const cfg_field *f = NULL;
        for (int i = 0; i < N_CFG_FIELDS; i++)
            if (m->key && strcmp(m->key, cfg_fields[i].key) == 0) f = &cfg_fields[i];
        if (!f) {
            st = tt_fail(TT_ERR_FORMAT, "%s: unknown key '%s'", pre, m->key ? m->key : "");
            goto done;
        }
        if (m->type != TT_JSON_NUMBER) {
            st = tt_fail(TT_ERR_FORMAT, "%s: '%s' must be a number", pre, f->key);
            goto done;
        }
        char *at = (char *)&c + f->offset;
        if (f->is_int) {
            double v = m->number;
            if (v != floor(v) || v < -2147483648.0 || v > 2147483647.0) {
                st = tt_fail(TT_ERR_FORMAT, "%s: '%s' = %g must be an integer", pre, f->key, v);
                goto done;
            }
            *(int *)at = (int)v;
        } else {
            *(float *)at = (float)m->number;
        }
    }
    st = tt_dsv3_config_check(&c);
    if (st == TT_OK) *out = c;
done:
    tt_json_free(root);
    return st;
}

/* ---- the model ------------------------------------------------------------------------- */
tt_dsv3 *tt_dsv3_new(const tt_dsv3_config *c) {
    if (tt_dsv3_config_check(c) != TT_OK) return NULL;
    tt_dsv3 *m = tt_xcalloc(1, sizeof *m);
    m->cfg = *c;
    m->training = true;
    char name[TT_PATH_LEN], path[TT_PATH_LEN];
    tt_embed_init(&m->embed, &m->params, "embed", c->vocab, c->dim);
    tt_embed_init(&m->pos_embed, &m->params, "pos_embed", c->max_seq, c->dim);
    m->layers = tt_xcalloc((size_t)c->n_layers, sizeof *m->layers);
    tt_mla_config ac = {.dim = c->dim, .n_heads = c->n_heads, .rank = c->rank, .bias = true};
    tt_moe_config mc = {
        .gate = tt_moe_gate_config_default(c->dim, c->n_experts, c->top_k),
        .hidden = c->expert_hidden,
        .kind = TT_FFN_RELU,
        .expert_bias = true,
        .shared_hidden = 0,
    };
    mc.gate.noise_std = c->noise_std;
    for (int L = 0; L < c->n_layers; L++) {
        tt_dsv3_block *b = &m->layers[L];
        snprintf(name, sizeof name, "layers.%d", L);
        tt_mla_init(&b->attn, &m->params, tt_name_join(path, name, "attn"), &ac);
        tt_layernorm_init(&b->norm1, &m->params, tt_name_join(path, name, "norm1"), c->dim,
                          1e-5f, true);
        tt_moe_init(&b->moe, &m->params, tt_name_join(path, name, "moe"), &mc);
        tt_layernorm_init(&b->norm2, &m->params, tt_name_join(path, name, "norm2"), c->dim,
                          1e-5f, true);
    }
    tt_linear_init(&m->head, &m->params, "head", c->dim, c->vocab, true);
    return m;
}

void tt_dsv3_free(tt_dsv3 *m) {
    if (!m) return;
    for (int L = 0; L < m->cfg.n_layers; L++) tt_moe_free(&m->layers[L].moe);
    free(m->layers);
    tt_params_free(&m->params);
    free(m);
}

size_t tt_dsv3_n_params(const tt_dsv3 *m) { return tt_params_numel(&m->params); }

static size_t linear_numel(const tt_linear *l) {
    if (!l->weight) return 0;
    return l->weight->size + (l->bias ? l->bias->size : 0);
}

size_t tt_dsv3_n_active_params(const tt_dsv3 *m) {
    size_t idle = 0;
    for (int L = 0; L < m->cfg.n_layers; L++) {
        const tt_expert *e = &m->layers[L].moe.experts[0];
        size_t per = linear_numel(&e->up) + linear_numel(&e->down) + linear_numel(&e->gate);
        idle += (size_t)(m->cfg.n_experts - m->cfg.top_k) * per;
    }
    return tt_dsv3_n_params(m) - idle;
}

/* ids [B, T] int32 with T <= max_seq - start and every id in [0, vocab). */
static void check_ids(const tt_dsv3 *m, tt_tensor *ids, int start, const char *op) {
    tt_src src = HERE;
    tt_check_i32(ids, src, op, "ids");
    if (ids->ndim != 2) tt_error_at(src, op, "ids %s must be [B, T]", tt_d(ids));
    const int T = ids->shape[1];
    if (start + T > m->cfg.max_seq)
        tt_error_at(src, op, "ids %s: positions up to %d exceed max_seq = %d", tt_d(ids),
                    start + T - 1, m->cfg.max_seq);
    const int32_t *id = tt_ids(ids);
    for (size_t i = 0; i < ids->size; i++)
        if (id[i] < 0 || id[i] >= m->cfg.vocab)
            tt_error_at(src, op, "ids %s: element %zu = %d is outside [0, vocab = %d)",
                        tt_d(ids), i, (int)id[i], m->cfg.vocab);
}

/* token + position embeddings of ids [B, T] at positions start .. start+T-1 */
static tt_tensor *embed(const tt_dsv3 *m, tt_tensor *ids, int start) {
    const int T = ids->shape[1];
    tt_tensor *pos = tt_tmp(TT_I32, TT_SHAPE(T));
    for (int t = 0; t < T; t++) tt_ids(pos)[t] = start + t;
    /* (one op a statement: C leaves the order of a call's arguments open, and the tape's
     * order should not depend on the compiler) */
    tt_tensor *tok = tt_embed_forward(&m->embed, ids);
    return tt_add(tok, tt_embed_forward(&m->pos_embed, pos));
}

tt_tensor *tt_dsv3_block_forward(const tt_dsv3_block *b, tt_tensor *h, bool training,
                                 tt_routing *routing) {
    h = tt_layernorm_forward(&b->norm1, tt_add(h, tt_mla_forward(&b->attn, h)));
    return tt_layernorm_forward(&b->norm2, tt_add(h, tt_moe_forward(&b->moe, h, training, routing)));
}

tt_dsv3_output tt_dsv3_forward(tt_dsv3 *m, tt_tensor *ids, tt_tensor *targets) {
    check_ids(m, ids, 0, "dsv3_forward");
    const int nl = m->cfg.n_layers;
    tt_dsv3_output out = {0};
    out.routing = tt_arena_alloc((size_t)nl * sizeof *out.routing);
    tt_tensor *h = embed(m, ids, 0);
    for (int L = 0; L < nl; L++)
        h = tt_dsv3_block_forward(&m->layers[L], h, m->training, &out.routing[L]);
    out.logits = tt_linear_forward(&m->head, h);

    const float alpha = m->cfg.aux_alpha;
    if (alpha > 0.0f) {
        for (int L = 0; L < nl; L++) {
            tt_tensor *bl = tt_moe_balance_loss(&out.routing[L], alpha);
            out.aux = out.aux ? tt_add(out.aux, bl) : bl;
        }
    } else {
        out.aux = tt_tmp(TT_F32, 0, NULL);
        out.aux->data[0] = 0.0f;
    }
    if (targets) {
        out.ce = tt_cross_entropy(out.logits, targets, TT_NO_IGNORE);
        out.loss = alpha > 0.0f ? tt_add(out.ce, out.aux) : out.ce;
    }
    return out;
}

void tt_dsv3_cache_init(tt_dsv3_cache *c, const tt_dsv3 *m, int max_len) {
    c->n_layers = m->cfg.n_layers;
    c->layers = tt_xcalloc((size_t)c->n_layers, sizeof *c->layers);
    for (int L = 0; L < c->n_layers; L++) tt_mla_cache_init(&c->layers[L], m->cfg.rank, max_len);
}

void tt_dsv3_cache_free(tt_dsv3_cache *c) {
    for (int L = 0; L < c->n_layers; L++) tt_mla_cache_free(&c->layers[L]);
    free(c->layers);
    c->layers = NULL;
    c->n_layers = 0;
}

tt_tensor *tt_dsv3_forward_cached(tt_dsv3 *m, tt_tensor *ids, tt_dsv3_cache *cache) {
    tt_src src = HERE;
    const char *op = "dsv3_forward_cached";
    if (!cache || cache->n_layers != m->cfg.n_layers)
        tt_error_at(src, op, "cache has %d layers, the model %d", cache ? cache->n_layers : -1,
                    m->cfg.n_layers);
    const int start = cache->layers[0].len;
    check_ids(m, ids, start, op);
    if (ids->shape[0] != 1) tt_error_at(src, op, "ids %s: the cache holds batch 1 only", tt_d(ids));
    for (int L = 0; L < cache->n_layers; L++) /* fail before the no-grad scope opens */
        if (cache->layers[L].len + ids->shape[1] > cache->layers[L].cap)
            tt_error_at(src, op, "cache of layer %d full: %d cached + %d new > capacity %d", L,
                        cache->layers[L].len, ids->shape[1], cache->layers[L].cap);
    tt_no_grad_begin();
    tt_tensor *h = embed(m, ids, start);
    for (int L = 0; L < m->cfg.n_layers; L++) {
        tt_dsv3_block *b = &m->layers[L];
        tt_tensor *a = tt_mla_forward_cached(&b->attn, h, &cache->layers[L]);
        h = tt_layernorm_forward(&b->norm1, tt_add(h, a));
        h = tt_layernorm_forward(&b->norm2, tt_add(h, tt_moe_forward(&b->moe, h, false, NULL)));
    }
    tt_tensor *logits = tt_linear_forward(&m->head, h);
    tt_no_grad_end();
    return logits;
}

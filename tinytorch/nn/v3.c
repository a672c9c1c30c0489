/* v3.c - the faithful DeepSeek-V3 model (see v3.h and shared/deepseek_v3.md).
 *
 * Everything differentiable is a composition of ops (the tape does the backward); the
 * only new op is tt_rope (ops/rope.c). The MoE is nn/moe.c's, configured as V3's Gate:
 * sigmoid or softmax scores, the selection-only bias, group-limited routing,
 * renormalisation for sigmoid only, route_scale, SwiGLU experts and the shared experts.
 * Incremental decoding (tt_v3_forward_cached) runs MLA in the absorb form with plain
 * loops over the cache of normalised latents and rotated k_pe (MTP is not used there).
 * Multi-Token Prediction (tt_v3_forward_mtp, D = 1) is one more block of the same code
 * on [enorm(emb(t_{i+1})) ; hnorm(h_i)] projected by eh_proj; HF checkpoints are renamed
 * by tt_v3_hf_name before the by-name load.
 */
#include "v3.h"

#include "../internal.h"
#include "../ops_attention.h"
#include "../io/json.h"
#include "../io/safetensors.h"
#include "../rng.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define HERE ((tt_src){__FILE__, __LINE__})
#define V3_EPS 1e-6f
#define V3_PI 3.14159265358979323846

/* ---- config ------------------------------------------------------------------------- */

tt_v3_config tt_v3_config_default(void) {
    tt_v3_config c = {
        .max_seq_len = 16384, .vocab_size = 102400, .dim = 2048, .inter_dim = 10944,
        .moe_inter_dim = 1408, .n_layers = 27, .n_dense_layers = 1, .n_heads = 16,
        .n_routed_experts = 64, .n_shared_experts = 2, .n_activated_experts = 6,
        .n_expert_groups = 1, .n_limited_groups = 1, .score_func = TT_SCORE_SOFTMAX,
        .route_scale = 1.0f, .q_lora_rank = 0, .kv_lora_rank = 512,
        .qk_nope_head_dim = 128, .qk_rope_head_dim = 64, .v_head_dim = 128,
        .original_seq_len = 4096, .rope_theta = 10000.0f, .rope_factor = 40.0f,
        .beta_fast = 32.0f, .beta_slow = 1.0f, .mscale = 1.0f, .gate_bias = false,
        .n_mtp_modules = 0,
    };
    return c;
}

tt_v3_config tt_v3_config_toy(void) {
    tt_v3_config c = tt_v3_config_default();
    c.max_seq_len = 256;
    c.original_seq_len = 4096;
    c.vocab_size = 256;
    c.dim = 64;
    c.inter_dim = 128;
    c.moe_inter_dim = 32;
    c.n_layers = 4;
    c.n_dense_layers = 1;
    c.n_heads = 4;
    c.n_routed_experts = 8;
    c.n_shared_experts = 1;
    c.n_activated_experts = 2;
    c.n_expert_groups = 4;
    c.n_limited_groups = 2;
    c.score_func = TT_SCORE_SIGMOID;
    c.route_scale = 2.5f;
    c.q_lora_rank = 32;
    c.kv_lora_rank = 32;
    c.qk_nope_head_dim = 16;
    c.qk_rope_head_dim = 8;
    c.v_head_dim = 16;
    c.gate_bias = true;
    return c;
}

static bool yarn_on(const tt_v3_config *c) { return c->max_seq_len > c->original_seq_len; }

tt_status tt_v3_config_check(const tt_v3_config *c) {
#define POS(f) \
    if (c->f < 1) return tt_fail(TT_ERR_ARG, "v3 config: " #f " = %d must be >= 1", c->f)
    POS(max_seq_len); POS(vocab_size); POS(dim); POS(inter_dim); POS(moe_inter_dim);
    POS(n_layers); POS(n_heads); POS(n_routed_experts); POS(n_activated_experts);
    POS(n_expert_groups); POS(n_limited_groups); POS(kv_lora_rank); POS(qk_nope_head_dim);
    POS(qk_rope_head_dim); POS(v_head_dim); POS(original_seq_len);
#undef POS
    if (c->n_dense_layers < 0 || c->n_dense_layers > c->n_layers)
        return tt_fail(TT_ERR_ARG, "v3 config: n_dense_layers = %d must be in [0, n_layers = %d]",
                       c->n_dense_layers, c->n_layers);
    if (c->n_shared_experts < 0)
        return tt_fail(TT_ERR_ARG, "v3 config: n_shared_experts = %d must be >= 0",
                       c->n_shared_experts);
    if (c->q_lora_rank < 0)
        return tt_fail(TT_ERR_ARG, "v3 config: q_lora_rank = %d must be >= 0 (0 = no query "
                       "compression)", c->q_lora_rank);
    if (c->qk_rope_head_dim % 2)
        return tt_fail(TT_ERR_ARG, "v3 config: qk_rope_head_dim = %d must be even (RoPE "
                       "rotates pairs)", c->qk_rope_head_dim);
    const int E = c->n_routed_experts, K = c->n_activated_experts, G = c->n_expert_groups,
              M = c->n_limited_groups;
    if (K > E)
        return tt_fail(TT_ERR_ARG, "v3 config: n_activated_experts = %d exceeds "
                       "n_routed_experts = %d", K, E);
    if (E % G)
        return tt_fail(TT_ERR_ARG, "v3 config: n_expert_groups = %d does not divide "
                       "n_routed_experts = %d", G, E);
    if (M > G)
        return tt_fail(TT_ERR_ARG, "v3 config: n_limited_groups = %d exceeds "
                       "n_expert_groups = %d", M, G);
    if (M * (E / G) < K)
        return tt_fail(TT_ERR_ARG, "v3 config: n_limited_groups = %d groups of %d experts "
                       "hold fewer than n_activated_experts = %d", M, E / G, K);
    if (c->gate_bias && G > 1 && E / G < 2)
        return tt_fail(TT_ERR_ARG, "v3 config: with the gate bias a group is scored by its "
                       "top-2 experts, but groups have %d expert", E / G);
    if (!(c->route_scale > 0.0f) || !isfinite(c->route_scale))
        return tt_fail(TT_ERR_ARG, "v3 config: route_scale = %g must be > 0",
                       (double)c->route_scale);
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta))
        return tt_fail(TT_ERR_ARG, "v3 config: rope_theta = %g must be > 1",
                       (double)c->rope_theta);
    if (yarn_on(c)) {
        if (!(c->rope_factor > 0.0f) || !isfinite(c->rope_factor))
            return tt_fail(TT_ERR_ARG, "v3 config: rope_factor = %g must be > 0 (YaRN is on: "
                           "max_seq_len %d > original_seq_len %d)", (double)c->rope_factor,
                           c->max_seq_len, c->original_seq_len);
        if (!(c->beta_fast > 0.0f) || !(c->beta_slow > 0.0f))
            return tt_fail(TT_ERR_ARG, "v3 config: beta_fast = %g and beta_slow = %g must be "
                           "> 0", (double)c->beta_fast, (double)c->beta_slow);
        if (!isfinite(c->mscale))
            return tt_fail(TT_ERR_ARG, "v3 config: mscale must be finite");
    }
    if (c->n_mtp_modules < 0 || c->n_mtp_modules > 1)
        return tt_fail(TT_ERR_ARG, "v3 config: n_mtp_modules = %d must be 0 or 1 (only D = 1 "
                       "Multi-Token Prediction is implemented)", c->n_mtp_modules);
    if (c->score_func != TT_SCORE_SOFTMAX && c->score_func != TT_SCORE_SIGMOID)
        return tt_fail(TT_ERR_ARG, "v3 config: bad score_func %d", (int)c->score_func);
    return TT_OK;
}

/* How each JSON key maps onto the struct. */
typedef enum { F_INT, F_FLOAT, F_SCORE, F_BOOL, F_IGN_INT, F_IGN_STR } field_kind;
typedef struct field {
    const char *name;
    field_kind kind;
    size_t offset;
} field;
#define FI(n) {#n, F_INT, offsetof(tt_v3_config, n)}
#define FF(n) {#n, F_FLOAT, offsetof(tt_v3_config, n)}
static const field k_fields[] = {
    FI(max_seq_len), FI(vocab_size), FI(dim), FI(inter_dim), FI(moe_inter_dim),
    FI(n_layers), FI(n_dense_layers), FI(n_heads), FI(n_routed_experts),
    FI(n_shared_experts), FI(n_activated_experts), FI(n_expert_groups),
    FI(n_limited_groups), {"score_func", F_SCORE, offsetof(tt_v3_config, score_func)},
    FF(route_scale), FI(q_lora_rank), FI(kv_lora_rank), FI(qk_nope_head_dim),
    FI(qk_rope_head_dim), FI(v_head_dim), FI(original_seq_len), FF(rope_theta),
    FF(rope_factor), FF(beta_fast), FF(beta_slow), FF(mscale),
    {"gate_bias", F_BOOL, offsetof(tt_v3_config, gate_bias)}, FI(n_mtp_modules),
    {"max_batch_size", F_IGN_INT, 0}, {"dtype", F_IGN_STR, 0}, {"scale_fmt", F_IGN_STR, 0},
};
#undef FI
#undef FF
#define N_FIELDS (int)(sizeof k_fields / sizeof k_fields[0])

tt_status tt_v3_config_from_json(const char *text, size_t len, tt_v3_config *out) {
    char err[256];
    tt_json *root = tt_json_parse(text, len, err, sizeof err);
    if (!root) return tt_fail(TT_ERR_FORMAT, "v3 config: %s", err);
    tt_status st = TT_OK;
    tt_v3_config c = tt_v3_config_default();
    bool seen[N_FIELDS] = {false};
    if (root->type != TT_JSON_OBJECT) {
        st = tt_fail(TT_ERR_FORMAT, "v3 config: expected a JSON object of ModelArgs fields");
        goto done;
    }
    for (const tt_json *m = root->child; m; m = m->next) {
        int f = 0;
        while (f < N_FIELDS && strcmp(k_fields[f].name, m->key) != 0) f++;
        if (f == N_FIELDS) {
            st = tt_fail(TT_ERR_FORMAT, "v3 config: unknown field '%s' (expected the official "
                         "ModelArgs names: vocab_size, dim, inter_dim, ...)", m->key);
            goto done;
        }
        if (seen[f]) {
            st = tt_fail(TT_ERR_FORMAT, "v3 config: duplicate field '%s'", m->key);
            goto done;
        }
        seen[f] = true;
        const field *fd = &k_fields[f];
        char *dst = (char *)&c + fd->offset;
        switch (fd->kind) {
        case F_INT:
        case F_IGN_INT:
            if (m->type != TT_JSON_NUMBER || m->number != floor(m->number) ||
                fabs(m->number) > 2147483647.0) {
                st = tt_fail(TT_ERR_FORMAT, "v3 config: field '%s' must be an integer",
                             m->key);
                goto done;
            }
            if (fd->kind == F_INT) *(int *)dst = (int)m->number;
            break;
        case F_FLOAT:
            if (m->type != TT_JSON_NUMBER) {
                st = tt_fail(TT_ERR_FORMAT, "v3 config: field '%s' must be a number", m->key);
                goto done;
            }
            *(float *)dst = (float)m->number;
            break;
        case F_SCORE:
            if (m->type != TT_JSON_STRING ||
                (strcmp(m->string, "softmax") && strcmp(m->string, "sigmoid"))) {
                st = tt_fail(TT_ERR_FORMAT, "v3 config: field 'score_func' must be \"softmax\" "
                             "or \"sigmoid\"");
                goto done;
            }
            *(tt_score_func *)dst = strcmp(m->string, "sigmoid") ? TT_SCORE_SOFTMAX
                                                                  : TT_SCORE_SIGMOID;
            break;
        case F_BOOL:
            if (m->type != TT_JSON_BOOL) {
                st = tt_fail(TT_ERR_FORMAT, "v3 config: field '%s' must be true or false",
                             m->key);
                goto done;
            }
            *(bool *)dst = m->boolean;
            break;
        case F_IGN_STR:
            if (m->type != TT_JSON_STRING && m->type != TT_JSON_NULL) {
                st = tt_fail(TT_ERR_FORMAT, "v3 config: field '%s' must be a string or null",
                             m->key);
                goto done;
            }
            break;
        }
    }
    /* the official rule for the gate bias, unless the file says otherwise */
    for (int f = 0; f < N_FIELDS; f++)
        if (!strcmp(k_fields[f].name, "gate_bias") && !seen[f]) c.gate_bias = c.dim == 7168;
    st = tt_v3_config_check(&c);
    if (st == TT_OK) *out = c;
done:
    tt_json_free(root);
    return st;
}

tt_status tt_v3_config_load(const char *path, tt_v3_config *c) {
    FILE *f = fopen(path, "rb");
    if (!f) return tt_fail(TT_ERR_IO, "cannot open config '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 4096;
            if (cap > (64u << 20)) {
                free(buf);
                fclose(f);
                return tt_fail(TT_ERR_FORMAT, "config '%s' is larger than 64 MB", path);
            }
            buf = realloc(buf, cap);
            if (!buf) {
                fclose(f);
                return tt_fail(TT_ERR_IO, "out of memory reading '%s'", path);
            }
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (k == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return tt_fail(TT_ERR_IO, "cannot read config '%s'", path);
    }
    tt_status st = tt_v3_config_from_json(buf, len, c);
    free(buf);
    if (st != TT_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tt_last_error());
        return tt_fail(st, "%s (in '%s')", msg, path);
    }
    return TT_OK;
}

int tt_v3_config_to_json(const tt_v3_config *c, char *buf, size_t len) {
    return snprintf(
        buf, len,
        "{\"max_seq_len\": %d, \"vocab_size\": %d, \"dim\": %d, \"inter_dim\": %d, "
        "\"moe_inter_dim\": %d, \"n_layers\": %d, \"n_dense_layers\": %d, \"n_heads\": %d, "
        "\"n_routed_experts\": %d, \"n_shared_experts\": %d, \"n_activated_experts\": %d, "
        "\"n_expert_groups\": %d, \"n_limited_groups\": %d, \"score_func\": \"%s\", "
        "\"route_scale\": %.9g, \"q_lora_rank\": %d, \"kv_lora_rank\": %d, "
        "\"qk_nope_head_dim\": %d, \"qk_rope_head_dim\": %d, \"v_head_dim\": %d, "
        "\"original_seq_len\": %d, \"rope_theta\": %.9g, \"rope_factor\": %.9g, "
        "\"beta_fast\": %.9g, \"beta_slow\": %.9g, \"mscale\": %.9g, \"gate_bias\": %s, "
        "\"n_mtp_modules\": %d}",
        c->max_seq_len, c->vocab_size, c->dim, c->inter_dim, c->moe_inter_dim, c->n_layers,
        c->n_dense_layers, c->n_heads, c->n_routed_experts, c->n_shared_experts,
        c->n_activated_experts, c->n_expert_groups, c->n_limited_groups,
        c->score_func == TT_SCORE_SIGMOID ? "sigmoid" : "softmax", (double)c->route_scale,
        c->q_lora_rank, c->kv_lora_rank, c->qk_nope_head_dim, c->qk_rope_head_dim,
        c->v_head_dim, c->original_seq_len, (double)c->rope_theta, (double)c->rope_factor,
        (double)c->beta_fast, (double)c->beta_slow, (double)c->mscale,
        c->gate_bias ? "true" : "false", c->n_mtp_modules);
}

/* ---- construction ------------------------------------------------------------------- */

/* Section 4: f_k = theta^(-2k/dR), YaRN-corrected when max_seq_len > original_seq_len;
 * angle(p, k) = p f_k. Computed in float as the reference does (torch fp32). */
static void rope_tables(tt_v3 *m) {
    const tt_v3_config *c = &m->cfg;
    const int dr = c->qk_rope_head_dim, half = dr / 2, P = c->max_seq_len;
    float *freqs = tt_xmalloc((size_t)half * sizeof *freqs);
    for (int k = 0; k < half; k++)
        freqs[k] = 1.0f / powf(c->rope_theta, (float)(2 * k) / (float)dr);
    if (yarn_on(c)) {
        double O = c->original_seq_len, base = c->rope_theta;
#define CORR(r) (dr * log(O / ((r) * 2.0 * V3_PI)) / (2.0 * log(base)))
        double lo = floor(CORR((double)c->beta_fast)), hi = ceil(CORR((double)c->beta_slow));
#undef CORR
        lo = lo > 0 ? lo : 0;
        hi = hi < dr - 1 ? hi : dr - 1;
        if (lo == hi) hi += 0.001;
        for (int k = 0; k < half; k++) {
            float ramp = (float)(((double)k - lo) / (hi - lo));
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            freqs[k] = freqs[k] / c->rope_factor * ramp + freqs[k] * (1.0f - ramp);
        }
    }
    m->rope_cos = tt_tensor_new(TT_F32, TT_SHAPE(P, half));
    m->rope_sin = tt_tensor_new(TT_F32, TT_SHAPE(P, half));
    tt_set_name(m->rope_cos, "rope.cos");
    tt_set_name(m->rope_sin, "rope.sin");
    for (int p = 0; p < P; p++)
        for (int k = 0; k < half; k++) {
            float a = (float)p * freqs[k];
            m->rope_cos->data[(size_t)p * half + k] = cosf(a);
            m->rope_sin->data[(size_t)p * half + k] = sinf(a);
        }
    free(freqs);
    float scale = 1.0f / sqrtf((float)(c->qk_nope_head_dim + dr));
    if (yarn_on(c)) {
        float ms = 0.1f * c->mscale * logf(c->rope_factor) + 1.0f;
        scale = scale * ms * ms;
    }
    m->softmax_scale = scale;
}

static void attn_init(tt_v3_attn *a, tt_params *p, const char *name, const tt_v3_config *c) {
    char path[TT_PATH_LEN];
    const int H = c->n_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim,
              dv = c->v_head_dim;
    memset(a, 0, sizeof *a);
    if (c->q_lora_rank == 0) {
        tt_linear_init(&a->wq, p, tt_name_join(path, name, "wq"), c->dim, H * (dn + dr), false);
    } else {
        tt_linear_init(&a->wq_a, p, tt_name_join(path, name, "wq_a"), c->dim, c->q_lora_rank,
                       false);
        tt_rmsnorm_init(&a->q_norm, p, tt_name_join(path, name, "q_norm"), c->q_lora_rank,
                        V3_EPS, true);
        tt_linear_init(&a->wq_b, p, tt_name_join(path, name, "wq_b"), c->q_lora_rank,
                       H * (dn + dr), false);
    }
    tt_linear_init(&a->wkv_a, p, tt_name_join(path, name, "wkv_a"), c->dim,
                   c->kv_lora_rank + dr, false);
    tt_rmsnorm_init(&a->kv_norm, p, tt_name_join(path, name, "kv_norm"), c->kv_lora_rank,
                    V3_EPS, true);
    tt_linear_init(&a->wkv_b, p, tt_name_join(path, name, "wkv_b"), c->kv_lora_rank,
                   H * (dn + dv), false);
    tt_linear_init(&a->wo, p, tt_name_join(path, name, "wo"), H * dv, c->dim, false);
}

static tt_moe_config moe_config(const tt_v3_config *c) {
    tt_moe_config mc;
    memset(&mc, 0, sizeof mc);
    mc.gate = tt_moe_gate_config_default(c->dim, c->n_routed_experts, c->n_activated_experts);
    mc.gate.score_func = c->score_func;
    mc.gate.renormalize = c->score_func == TT_SCORE_SIGMOID; /* softmax: no renormalising */
    mc.gate.route_scale = c->route_scale;
    mc.gate.n_groups = c->n_expert_groups;
    mc.gate.topk_groups = c->n_limited_groups;
    mc.gate.selection_bias = c->gate_bias;
    mc.hidden = c->moe_inter_dim;
    mc.kind = TT_FFN_SWIGLU;
    mc.expert_bias = false;
    mc.shared_hidden = c->n_shared_experts * c->moe_inter_dim;
    return mc;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Parameters from..n-1: matrices and embeddings N(0, std^2) from the global RNG; RMSNorm
 * weights (1) and gate biases (0) keep their registered values. */
static void init_normal(tt_params *p, int from, float std) {
    tt_rng *r = tt_rng_global();
    for (int i = from; i < p->n; i++) {
        tt_tensor *t = p->t[i];
        if (ends_with(t->name, "norm.weight") || ends_with(t->name, "gate.bias")) continue;
        for (size_t k = 0; k < t->size; k++) t->data[k] = std * (float)tt_rng_normal(r);
    }
}

/* One block under base ("layers.L" or "mtp.k"): attn, ffn (dense MLP or MoE), norms. */
static void block_init(tt_v3_block *b, tt_params *p, const char *base, const tt_v3_config *c,
                       bool dense) {
    char path[TT_PATH_LEN];
    attn_init(&b->attn, p, tt_name_join(path, base, "attn"), c);
    b->dense = dense;
    if (dense) {
        tt_expert_init(&b->mlp, p, tt_name_join(path, base, "ffn"), c->dim, c->inter_dim,
                       TT_FFN_SWIGLU, false);
    } else {
        tt_moe_config mc = moe_config(c);
        tt_moe_init(&b->moe, p, tt_name_join(path, base, "ffn"), &mc);
    }
    tt_rmsnorm_init(&b->attn_norm, p, tt_name_join(path, base, "attn_norm"), c->dim, V3_EPS,
                    true);
    tt_rmsnorm_init(&b->ffn_norm, p, tt_name_join(path, base, "ffn_norm"), c->dim, V3_EPS,
                    true);
}

tt_v3 *tt_v3_new(const tt_v3_config *c, float init_std) {
    if (tt_v3_config_check(c) != TT_OK) return NULL;
    tt_v3 *m = tt_xcalloc(1, sizeof *m);
    m->cfg = *c;
    tt_params *p = &m->params;
    char path[TT_PATH_LEN];
    tt_embed_init(&m->embed, p, "embed", c->vocab_size, c->dim);
    m->layers = tt_xcalloc((size_t)c->n_layers, sizeof *m->layers);
    for (int L = 0; L < c->n_layers; L++) {
        char base[TT_PATH_LEN];
        snprintf(base, sizeof base, "layers.%d", L);
        block_init(&m->layers[L], p, base, c, L < c->n_dense_layers);
    }
    tt_rmsnorm_init(&m->norm, p, "norm", c->dim, V3_EPS, true);
    tt_linear_init(&m->head, p, "head", c->dim, c->vocab_size, false);
    /* V3 init: every matrix N(0, std^2); norms 1 and the gate bias 0 as registered */
    init_normal(p, 0, init_std);
    /* Multi-Token Prediction modules last (the released checkpoint's layer 61), created
     * and drawn after the main weights so that those do not depend on n_mtp_modules. The
     * block is the same kind as the last main layer: MoE unless every main layer is
     * dense. */
    const int n_main = p->n;
    if (c->n_mtp_modules > 0) m->mtp = tt_xcalloc((size_t)c->n_mtp_modules, sizeof *m->mtp);
    for (int k = 0; k < c->n_mtp_modules; k++) {
        tt_v3_mtp *t = &m->mtp[k];
        char base[TT_PATH_LEN];
        snprintf(base, sizeof base, "mtp.%d", k);
        tt_rmsnorm_init(&t->enorm, p, tt_name_join(path, base, "enorm"), c->dim, V3_EPS, true);
        tt_rmsnorm_init(&t->hnorm, p, tt_name_join(path, base, "hnorm"), c->dim, V3_EPS, true);
        tt_linear_init(&t->eh_proj, p, tt_name_join(path, base, "eh_proj"), 2 * c->dim, c->dim,
                       false);
        block_init(&t->block, p, base, c, c->n_dense_layers >= c->n_layers);
        tt_rmsnorm_init(&t->norm, p, tt_name_join(path, base, "norm"), c->dim, V3_EPS, true);
    }
    init_normal(p, n_main, init_std);
    rope_tables(m);
    return m;
}

void tt_v3_free(tt_v3 *m) {
    if (!m) return;
    for (int L = 0; L < m->cfg.n_layers; L++)
        if (!m->layers[L].dense) tt_moe_free(&m->layers[L].moe);
    free(m->layers);
    for (int k = 0; k < m->cfg.n_mtp_modules; k++)
        if (!m->mtp[k].block.dense) tt_moe_free(&m->mtp[k].block.moe);
    free(m->mtp);
    tt_params_free(&m->params);
    tt_free(m->rope_cos);
    tt_free(m->rope_sin);
    free(m);
}

/* ---- checkpoints -------------------------------------------------------------------- */

/* convert.py's component renames (section 2); weight_scale_inv is fp8 only. */
static const char *const k_hf_map[][2] = {
    {"self_attn", "attn"},           {"mlp", "ffn"},
    {"embed_tokens", "embed"},       {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
    {"q_proj", "wq"},                {"q_a_proj", "wq_a"},
    {"q_a_layernorm", "q_norm"},     {"q_b_proj", "wq_b"},
    {"kv_a_proj_with_mqa", "wkv_a"}, {"kv_a_layernorm", "kv_norm"},
    {"kv_b_proj", "wkv_b"},          {"o_proj", "wo"},
    {"gate_proj", "w1"},             {"down_proj", "w2"},
    {"up_proj", "w3"},               {"e_score_correction_bias", "bias"},
    {"lm_head", "head"},             {"weight_scale_inv", "scale"},
};

/* "123" -> 123; -1 unless s is all digits (at most 9). */
static int parse_index(const char *s) {
    int v = 0, n = 0;
    for (; *s; s++, n++) {
        if (*s < '0' || *s > '9' || n >= 9) return -1;
        v = 10 * v + (*s - '0');
    }
    return n ? v : -1;
}

int tt_v3_hf_name(const char *hf, int n_layers, char *out, size_t len) {
    enum { MAX_PARTS = 32 };
    char buf[512];
    if (!strncmp(hf, "model.", 6)) hf += 6;
    if (strlen(hf) >= sizeof buf) return -1;
    strcpy(buf, hf);
    const char *part[MAX_PARTS];
    int n = 0;
    for (char *s = buf;;) {
        if (n == MAX_PARTS) return -1;
        part[n++] = s;
        char *dot = strchr(s, '.');
        if (!dot) break;
        *dot = '\0';
        s = dot + 1;
    }
    char mtp[32] = "";
    int first = 0;
    int L = n >= 3 && !strcmp(part[0], "layers") ? parse_index(part[1]) : -1;
    if (L >= n_layers) {
        /* an MTP layer: model.layers.<n_layers + k>.X -> mtp.k.X */
        snprintf(mtp, sizeof mtp, "mtp.%d", L - n_layers);
        first = 2;
        if (!strcmp(part[2], "embed_tokens")) return 0; /* = the shared embedding */
        if (!strcmp(part[2], "shared_head")) {
            if (n >= 4 && !strcmp(part[3], "head")) return 0; /* = the shared head */
            first = 3;                                        /* shared_head.norm -> norm */
        }
    }
    size_t o = 0;
    int w = snprintf(out, len, "%s", mtp);
    if (w < 0 || (size_t)w >= len) return -1;
    o = (size_t)w;
    for (int i = first; i < n; i++) {
        const char *c = part[i];
        for (size_t k = 0; k < sizeof k_hf_map / sizeof k_hf_map[0]; k++)
            if (!strcmp(c, k_hf_map[k][0])) {
                c = k_hf_map[k][1];
                break;
            }
        w = snprintf(out + o, len - o, "%s%s", o ? "." : "", c);
        if (w < 0 || (size_t)w >= len - o) return -1;
        o += (size_t)w;
    }
    return 1;
}

static bool is_hf(const tt_safetensors *st) {
    for (int i = 0; i < st->n; i++) {
        const char *n = st->tensors[i]->name;
        if (!strncmp(n, "model.", 6) || !strncmp(n, "lm_head.", 8)) return true;
    }
    return false;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(tt_tensor *const *)a)->name, (*(tt_tensor *const *)b)->name);
}

/* Rename an HF file's tensors in place to reference names and drop what the reference
 * layout does not load (the MTP copies of embed / head; MTP layers if the model has no
 * MTP module, like convert.py). */
static tt_status hf_rename(const tt_v3 *m, tt_safetensors *st) {
    int kept = 0;
    for (int i = 0; i < st->n; i++) {
        tt_tensor *t = st->tensors[i];
        char ref[TT_NAME_LEN];
        int r = tt_v3_hf_name(t->name, m->cfg.n_layers, ref, sizeof ref);
        if (r < 0) {
            /* cannot happen for names that fit a tensor: the mapping only shortens them */
            return tt_fail(TT_ERR_FORMAT, "tensor '%s': cannot map the HF name", t->name);
        }
        if (r == 0 || (m->cfg.n_mtp_modules == 0 && !strncmp(ref, "mtp.", 4))) {
            tt_free(t);
            continue;
        }
        snprintf(t->name, sizeof t->name, "%s", ref);
        st->tensors[kept++] = t;
    }
    st->n = kept;
    /* two file tensors under one reference name ("embed.weight" and
     * "model.embed_tokens.weight") would make the load ambiguous */
    tt_tensor **sorted = tt_xmalloc((size_t)(kept ? kept : 1) * sizeof *sorted);
    memcpy(sorted, st->tensors, (size_t)kept * sizeof *sorted);
    qsort(sorted, (size_t)kept, sizeof *sorted, cmp_name);
    tt_status s = TT_OK;
    for (int i = 1; i < kept && s == TT_OK; i++)
        if (!strcmp(sorted[i - 1]->name, sorted[i]->name))
            s = tt_fail(TT_ERR_FORMAT, "two tensors of the file map to '%s' (HF and reference "
                        "names mixed?)", sorted[i]->name);
    free(sorted);
    return s;
}

/* Copy a loaded file into the model's parameters, renaming HF names first. */
static tt_status copy_weights(tt_v3 *m, tt_safetensors *st, const char *path, bool strict) {
    tt_status s = is_hf(st) ? hf_rename(m, st) : TT_OK;
    if (s == TT_OK) s = tt_params_copy_from(&m->params, st, NULL, strict);
    if (s != TT_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tt_last_error());
        return tt_fail(s, "%s (in '%s')", msg, path);
    }
    return TT_OK;
}

tt_status tt_v3_load_weights(tt_v3 *m, const char *path, bool strict) {
    tt_safetensors st;
    tt_status s = tt_safetensors_load(path, &st);
    if (s != TT_OK) return s;
    s = copy_weights(m, &st, path, strict);
    tt_safetensors_free(&st);
    return s;
}

tt_status tt_v3_save(const tt_v3 *m, const char *path) {
    int n = tt_v3_config_to_json(&m->cfg, NULL, 0);
    char *json = tt_xmalloc((size_t)n + 1);
    tt_v3_config_to_json(&m->cfg, json, (size_t)n + 1);
    tt_kv meta[2] = {{"config", json}, {"format", "deepseek-v3"}};
    tt_status st = tt_params_save(&m->params, path, 2, meta);
    free(json);
    return st;
}

tt_v3 *tt_v3_load(const char *ckpt_path, const char *config_path) {
    tt_safetensors st;
    if (tt_safetensors_load(ckpt_path, &st) != TT_OK) return NULL;
    tt_v3_config c;
    tt_status s;
    if (config_path) {
        s = tt_v3_config_load(config_path, &c);
    } else {
        const char *json = tt_safetensors_meta(&st, "config");
        s = json ? tt_v3_config_from_json(json, strlen(json), &c)
                 : tt_fail(TT_ERR_FORMAT, "'%s' has no \"config\" metadata: pass a config file",
                           ckpt_path);
    }
    tt_v3 *m = NULL;
    if (s == TT_OK) m = tt_v3_new(&c, 0.0f);
    if (m && copy_weights(m, &st, ckpt_path, false) != TT_OK) {
        tt_v3_free(m);
        m = NULL;
    }
    tt_safetensors_free(&st);
    return m;
}

/* ---- forward ------------------------------------------------------------------------ */

/* Section 5, naive form (full keys and values per head; the absorbed form is the decoding
 * path below): x [B, S, dim] -> [B, S, dim]. */
static tt_tensor *attn_forward(const tt_v3 *m, const tt_v3_attn *a, tt_tensor *x) {
    const tt_v3_config *c = &m->cfg;
    const int B = x->shape[0], S = x->shape[1], H = c->n_heads, dn = c->qk_nope_head_dim,
              dr = c->qk_rope_head_dim, dv = c->v_head_dim, D = dn + dr;
    tt_tensor *q = c->q_lora_rank == 0
                       ? tt_linear_forward(&a->wq, x)
                       : tt_linear_forward(&a->wq_b, tt_rmsnorm_forward(
                                                         &a->q_norm, tt_linear_forward(&a->wq_a, x)));
    tt_tensor *qs[2], *kvs[2], *kvb[2];
    tt_split(tt_reshape(q, TT_SHAPE(B, S, H, D)), 3, 2, ((int[]){dn, dr}), qs);
    tt_tensor *q_pe = tt_rope(qs[1], m->rope_cos, m->rope_sin, 0);        /* [B,S,H,dr] */
    tt_split(tt_linear_forward(&a->wkv_a, x), 2, 2, ((int[]){c->kv_lora_rank, dr}), kvs);
    tt_tensor *k_pe = tt_rope(kvs[1], m->rope_cos, m->rope_sin, 0);       /* [B,S,dr]   */
    tt_tensor *kv = tt_linear_forward(&a->wkv_b, tt_rmsnorm_forward(&a->kv_norm, kvs[0]));
    tt_split(tt_reshape(kv, TT_SHAPE(B, S, H, dn + dv)), 3, 2, ((int[]){dn, dv}), kvb);
    /* the one k_pe of a token joins every head's key */
    tt_tensor *k_pe4 = tt_reshape(k_pe, TT_SHAPE(B, S, 1, dr));
    tt_tensor **copies = tt_arena_alloc((size_t)H * sizeof *copies);
    for (int h = 0; h < H; h++) copies[h] = k_pe4;
    tt_tensor *k_pe_h = H > 1 ? tt_concat(H, copies, 2) : k_pe4;          /* [B,S,H,dr] */
    tt_tensor *qh = tt_concat(2, ((tt_tensor *[]){qs[0], q_pe}), 3);       /* [B,S,H,D]  */
    tt_tensor *kh = tt_concat(2, ((tt_tensor *[]){kvb[0], k_pe_h}), 3);
    /* softmax(scale q k^T, causal) v per head, as one op that reads each head's columns
     * in place (ops_attention.h): o [B, S, H*dv], the heads side by side */
    tt_tensor *o = tt_attention_heads(tt_reshape(qh, TT_SHAPE(B, S, H * D)),
                                      tt_reshape(kh, TT_SHAPE(B, S, H * D)),
                                      tt_reshape(kvb[1], TT_SHAPE(B, S, H * dv)), H,
                                      m->softmax_scale, true);
    return tt_linear_forward(&a->wo, o);
}

static void check_ids(const tt_v3 *m, tt_tensor *ids, int start, tt_src src, const char *op) {
    tt_check_i32(ids, src, op, "ids");
    TT_CHECK(ids->ndim == 2, src, op, "ids %s must be [B, S]", tt_d(ids));
    TT_CHECK(start + ids->shape[1] <= m->cfg.max_seq_len, src, op,
             "positions up to %d exceed max_seq_len = %d", start + ids->shape[1] - 1,
             m->cfg.max_seq_len);
    const int32_t *t = tt_ids(ids);
    for (size_t i = 0; i < ids->size; i++)
        TT_CHECK(t[i] >= 0 && t[i] < m->cfg.vocab_size, src, op,
                 "ids %s: token %d at %zu is outside [0, vocab_size = %d)", tt_d(ids), t[i], i,
                 m->cfg.vocab_size);
}

/* alpha * mean over the B sequences of sum_i f_i P_i (section 8, eqs. 17-20), via
 * tt_moe_balance_loss on each sequence's rows: its alpha' E sum_i c_i/(S K) P_i is
 * exactly alpha' sum_i f_i P_i with f_i = E/(K S) c_i. */
static tt_tensor *seq_balance_loss(const tt_routing *r, int B, int S, float alpha) {
    const int E = r->n_experts, K = r->top_k;
    tt_tensor *total = NULL;
    const int32_t *idx = tt_ids(r->indices);
    for (int b = 0; b < B; b++) {
        tt_routing rb = *r;
        rb.n_tokens = S;
        rb.scores = tt_slice(r->scores, 0, b * S, (b + 1) * S);
        rb.counts = tt_arena_alloc((size_t)E * sizeof *rb.counts);
        memset(rb.counts, 0, (size_t)E * sizeof *rb.counts);
        for (int i = b * S * K; i < (b + 1) * S * K; i++) rb.counts[idx[i]]++;
        tt_tensor *l = tt_moe_balance_loss(&rb, alpha / (float)B);
        total = total ? tt_add(total, l) : l;
    }
    return total;
}

/* One pre-norm block on h [B, S, dim]; a MoE block writes its routing to *r and adds
 * its balance loss to *bal (alpha != 0). */
static tt_tensor *block_forward(const tt_v3 *m, const tt_v3_block *b, tt_tensor *h,
                                tt_routing *r, float alpha, tt_tensor **bal) {
    h = tt_add(h, attn_forward(m, &b->attn, tt_rmsnorm_forward(&b->attn_norm, h)));
    tt_tensor *x = tt_rmsnorm_forward(&b->ffn_norm, h);
    if (b->dense) return tt_add(h, tt_expert_forward(&b->mlp, x));
    h = tt_add(h, tt_moe_forward(&b->moe, x, false, r));
    if (alpha != 0.0f) {
        tt_tensor *l = seq_balance_loss(r, h->shape[0], h->shape[1], alpha);
        *bal = *bal ? tt_add(*bal, l) : l;
    }
    return h;
}

/* Section 8, D = 1, on the last main block's output h [B, S, dim]:
 *   x_i = eh_proj([enorm(embed[ids[:, i+1]]) ; hnorm(h_i)]),  i = 0..S-2
 *   mtp_logits = head(norm(Block(x)))                       [B, S-1, V]
 * The gradient reaches h (hence the main model), the shared embedding and the head. */
static tt_tensor *mtp_forward(const tt_v3 *m, const tt_v3_mtp *t, tt_tensor *ids,
                              tt_tensor *h, tt_routing *r, float alpha, tt_tensor **bal) {
    const int S = ids->shape[1];
    tt_tensor *next = tt_slice(ids, 1, 1, S);                     /* t_{i+1}, int32 */
    tt_tensor *e = tt_rmsnorm_forward(&t->enorm, tt_embed_forward(&m->embed, next));
    tt_tensor *hh = tt_rmsnorm_forward(&t->hnorm, tt_slice(h, 1, 0, S - 1));
    tt_tensor *x = tt_linear_forward(&t->eh_proj, tt_concat(2, ((tt_tensor *[]){e, hh}), 2));
    x = block_forward(m, &t->block, x, r, alpha, bal);
    return tt_linear_forward(&m->head, tt_rmsnorm_forward(&t->norm, x));
}

tt_v3_output tt_v3_forward_mtp(tt_v3 *m, tt_tensor *ids, tt_tensor *targets, float alpha,
                               float lambda) {
    tt_src src = HERE;
    const char *op = "v3_forward";
    const tt_v3_config *c = &m->cfg;
    check_ids(m, ids, 0, src, op);
    const int B = ids->shape[0], S = ids->shape[1];
    const bool mtp = lambda != 0.0f;
    TT_CHECK(isfinite(lambda), src, op, "lambda = %g must be finite", (double)lambda);
    TT_CHECK(!mtp || c->n_mtp_modules == 1, src, op,
             "lambda = %g asks for Multi-Token Prediction, but the model has no MTP module "
             "(n_mtp_modules = %d)", (double)lambda, c->n_mtp_modules);
    TT_CHECK(!mtp || S >= 2, src, op,
             "ids %s: Multi-Token Prediction (lambda = %g) needs S >= 2", tt_d(ids),
             (double)lambda);
    if (targets)
        TT_CHECK(targets->ndim == 2 && targets->shape[0] == B && targets->shape[1] == S, src,
                 op, "targets %s must be [%d, %d] like ids", tt_d(targets), B, S);
    tt_v3_output out;
    memset(&out, 0, sizeof out);
    out.routing = tt_arena_alloc((size_t)c->n_layers * sizeof *out.routing);
    memset(out.routing, 0, (size_t)c->n_layers * sizeof *out.routing);
    tt_tensor *h = tt_embed_forward(&m->embed, ids);
    for (int L = 0; L < c->n_layers; L++)
        h = block_forward(m, &m->layers[L], h, &out.routing[L], alpha, &out.bal);
    out.logits = tt_linear_forward(&m->head, tt_rmsnorm_forward(&m->norm, h));
    tt_set_name(out.logits, "logits");
    if (mtp) {
        out.mtp_routing = tt_arena_alloc(sizeof *out.mtp_routing);
        memset(out.mtp_routing, 0, sizeof *out.mtp_routing);
        out.mtp_logits = mtp_forward(m, &m->mtp[0], ids, h, out.mtp_routing, alpha, &out.bal);
        tt_set_name(out.mtp_logits, "mtp_logits");
    }
    if (targets) {
        out.ce = tt_cross_entropy(out.logits, targets, TT_NO_IGNORE);
        out.loss = out.ce;
        if (mtp) {
            /* position i predicts t_{i+2} = targets[:, i+1] */
            out.mtp_ce = tt_cross_entropy(out.mtp_logits, tt_slice(targets, 1, 1, S),
                                          TT_NO_IGNORE);
            out.loss = tt_add(out.loss, tt_scale(out.mtp_ce, lambda));
        }
        if (out.bal) out.loss = tt_add(out.loss, out.bal);
    }
    return out;
}

tt_v3_output tt_v3_forward(tt_v3 *m, tt_tensor *ids, tt_tensor *targets, float alpha) {
    return tt_v3_forward_mtp(m, ids, targets, alpha, 0.0f);
}

void tt_v3_update_bias(tt_v3 *m, const tt_v3_output *out, float gamma) {
    for (int L = 0; L < m->cfg.n_layers; L++) {
        tt_v3_block *b = &m->layers[L];
        if (b->dense || !b->moe.gate.bias || !out->routing[L].counts) continue;
        tt_moe_gate_update_bias(&b->moe.gate, out->routing[L].counts, gamma);
    }
    if (m->mtp && out->mtp_routing && out->mtp_routing->counts && !m->mtp[0].block.dense &&
        m->mtp[0].block.moe.gate.bias)
        tt_moe_gate_update_bias(&m->mtp[0].block.moe.gate, out->mtp_routing->counts, gamma);
}

/* ---- incremental decoding, absorb form --------------------------------------------- */

void tt_v3_cache_init(tt_v3_cache *c, const tt_v3 *m, int max_len) {
    if (max_len < 1 || max_len > m->cfg.max_seq_len)
        tt_error_at(HERE, "v3_cache_init", "max_len = %d must be in [1, max_seq_len = %d]",
                    max_len, m->cfg.max_seq_len);
    c->len = 0;
    c->max_len = max_len;
    c->n_layers = m->cfg.n_layers;
    c->rank = m->cfg.kv_lora_rank;
    c->rope_dim = m->cfg.qk_rope_head_dim;
    c->kv = tt_xcalloc((size_t)c->n_layers * max_len * c->rank, sizeof(float));
    c->pe = tt_xcalloc((size_t)c->n_layers * max_len * c->rope_dim, sizeof(float));
}

void tt_v3_cache_free(tt_v3_cache *c) {
    free(c->kv);
    free(c->pe);
    memset(c, 0, sizeof *c);
}

/* x [1, T, dim] at positions start..start+T-1 of layer L. Writes c' and k_pe of the new
 * tokens into the cache, then per head h (W_UK_h, W_UV_h = the dn and dv row blocks of
 * wkv_b for head h):
 *   q_abs = W_UK_h^T q_nope_h                            [rank]
 *   score_s = scale * (q_abs . c'_s + q_pe_h . k_pe_s),  s <= position
 *   o_h = W_UV_h (sum_s softmax(score)_s c'_s)           [dv]
 * which equals the naive q_nope . (W_UK c'_s) + q_pe . k_pe_s and sum_s a_s W_UV c'_s. */
static tt_tensor *attn_cached(const tt_v3 *m, const tt_v3_attn *a, tt_tensor *x, int L,
                              tt_v3_cache *cache) {
    const tt_v3_config *c = &m->cfg;
    const int T = x->shape[1], H = c->n_heads, dn = c->qk_nope_head_dim,
              dr = c->qk_rope_head_dim, dv = c->v_head_dim, D = dn + dr, R = c->kv_lora_rank;
    const int start = cache->len;
    tt_tensor *q = c->q_lora_rank == 0
                       ? tt_linear_forward(&a->wq, x)
                       : tt_linear_forward(&a->wq_b, tt_rmsnorm_forward(
                                                         &a->q_norm, tt_linear_forward(&a->wq_a, x)));
    tt_tensor *qs[2], *kvs[2];
    tt_split(tt_reshape(q, TT_SHAPE(1, T, H, D)), 3, 2, ((int[]){dn, dr}), qs);
    tt_tensor *q_pe = tt_rope(qs[1], m->rope_cos, m->rope_sin, start);    /* [1,T,H,dr] */
    tt_split(tt_linear_forward(&a->wkv_a, x), 2, 2, ((int[]){R, dr}), kvs);
    tt_tensor *k_pe = tt_rope(kvs[1], m->rope_cos, m->rope_sin, start);   /* [1,T,dr]   */
    tt_tensor *cn = tt_rmsnorm_forward(&a->kv_norm, kvs[0]);              /* [1,T,R]    */
    float *ckv = cache->kv + (size_t)L * cache->max_len * R;
    float *cpe = cache->pe + (size_t)L * cache->max_len * dr;
    memcpy(ckv + (size_t)start * R, cn->data, (size_t)T * R * sizeof(float));
    memcpy(cpe + (size_t)start * dr, k_pe->data, (size_t)T * dr * sizeof(float));

    const float *wkv_b = a->wkv_b.weight->data; /* [H*(dn+dv), R] */
    tt_tensor *o = tt_tmp(TT_F32, TT_SHAPE(1, T, H * dv));
    float *q_abs = tt_arena_alloc((size_t)R * sizeof(float));
    float *lat = tt_arena_alloc((size_t)R * sizeof(float));
    float *score = tt_arena_alloc((size_t)(start + T) * sizeof(float));
    for (int t = 0; t < T; t++) {
        const int n_keys = start + t + 1;
        for (int h = 0; h < H; h++) {
            const float *qn = qs[0]->data + ((size_t)t * H + h) * dn;
            const float *qp = q_pe->data + ((size_t)t * H + h) * dr;
            const float *w_uk = wkv_b + (size_t)h * (dn + dv) * R;
            const float *w_uv = w_uk + (size_t)dn * R;
            for (int j = 0; j < R; j++) q_abs[j] = 0.0f;
            for (int i = 0; i < dn; i++)
                for (int j = 0; j < R; j++) q_abs[j] += qn[i] * w_uk[(size_t)i * R + j];
            float mx = -INFINITY;
            for (int s = 0; s < n_keys; s++) {
                float acc = 0.0f, pe = 0.0f;
                for (int j = 0; j < R; j++) acc += q_abs[j] * ckv[(size_t)s * R + j];
                for (int j = 0; j < dr; j++) pe += qp[j] * cpe[(size_t)s * dr + j];
                score[s] = (acc + pe) * m->softmax_scale;
                mx = score[s] > mx ? score[s] : mx;
            }
            float sum = 0.0f;
            for (int s = 0; s < n_keys; s++) sum += score[s] = expf(score[s] - mx);
            for (int j = 0; j < R; j++) lat[j] = 0.0f;
            for (int s = 0; s < n_keys; s++) {
                float p = score[s] / sum;
                for (int j = 0; j < R; j++) lat[j] += p * ckv[(size_t)s * R + j];
            }
            float *oh = o->data + ((size_t)t * H + h) * dv;
            for (int i = 0; i < dv; i++) {
                float acc = 0.0f;
                for (int j = 0; j < R; j++) acc += w_uv[(size_t)i * R + j] * lat[j];
                oh[i] = acc;
            }
        }
    }
    return tt_linear_forward(&a->wo, o);
}

tt_tensor *tt_v3_forward_cached(tt_v3 *m, tt_tensor *ids, tt_v3_cache *cache) {
    tt_src src = HERE;
    const char *op = "v3_forward_cached";
    check_ids(m, ids, cache->len, src, op);
    TT_CHECK(ids->shape[0] == 1, src, op, "ids %s: the cache holds batch 1", tt_d(ids));
    const int T = ids->shape[1];
    TT_CHECK(cache->len + T <= cache->max_len, src, op,
             "the cache holds %d of %d positions: no room for %d more", cache->len,
             cache->max_len, T);
    bool was = tt_set_grad_enabled(false);
    tt_tensor *h = tt_embed_forward(&m->embed, ids);
    for (int L = 0; L < m->cfg.n_layers; L++) {
        const tt_v3_block *b = &m->layers[L];
        h = tt_add(h, attn_cached(m, &b->attn, tt_rmsnorm_forward(&b->attn_norm, h), L, cache));
        tt_tensor *x = tt_rmsnorm_forward(&b->ffn_norm, h);
        h = tt_add(h, b->dense ? tt_expert_forward(&b->mlp, x)
                               : tt_moe_forward(&b->moe, x, false, NULL));
    }
    tt_tensor *logits = tt_linear_forward(&m->head, tt_rmsnorm_forward(&m->norm, h));
    tt_set_grad_enabled(was);
    cache->len += T;
    return logits;
}

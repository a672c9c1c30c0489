/* layers.c - Linear, Embedding, LayerNorm, RMSNorm and the feed-forward Expert. */
#include "nn.h"

#include "../internal.h"
#include "../rng.h"

#include <math.h>

static void fill_uniform(tt_tensor *t, float bound) {
    tt_rng *r = tt_rng_global();
    for (size_t i = 0; i < t->size; i++) t->data[i] = bound * (2.0f * tt_rng_uniform(r) - 1.0f);
}

static void fill_value(tt_tensor *t, float v) {
    for (size_t i = 0; i < t->size; i++) t->data[i] = v;
}

/* torch.nn.Linear.reset_parameters: kaiming_uniform(a = sqrt(5)) gives the bound
 * gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)), i.e. 1/sqrt(fan_in); the bias
 * uses the same bound. */
void tt_linear_init(tt_linear *m, tt_params *p, const char *name, int in, int out, bool bias) {
    char path[TT_PATH_LEN];
    m->in_features = in;
    m->out_features = out;
    m->weight = tt_param_new(p, TT_SHAPE(out, in), "%s", tt_name_join(path, name, "weight"));
    float bound = 1.0f / sqrtf((float)in);
    fill_uniform(m->weight, bound);
    m->bias = NULL;
    if (bias) {
        m->bias = tt_param_new(p, TT_SHAPE(out), "%s", tt_name_join(path, name, "bias"));
        fill_uniform(m->bias, bound);
    }
}

tt_tensor *tt_linear_forward(const tt_linear *m, tt_tensor *x) {
    return tt_affine(x, m->weight, m->bias); /* [..., in] @ [out, in]^T + [out] */
}

void tt_embed_init(tt_embed *m, tt_params *p, const char *name, int num, int dim) {
    char path[TT_PATH_LEN];
    m->num = num;
    m->dim = dim;
    m->weight = tt_param_new(p, TT_SHAPE(num, dim), "%s", tt_name_join(path, name, "weight"));
    tt_rng *r = tt_rng_global();
    for (size_t i = 0; i < m->weight->size; i++) m->weight->data[i] = (float)tt_rng_normal(r);
}

tt_tensor *tt_embed_forward(const tt_embed *m, tt_tensor *ids) {
    return tt_embedding(m->weight, ids);
}

void tt_layernorm_init(tt_layernorm *m, tt_params *p, const char *name, int dim, float eps,
                       bool affine) {
    char path[TT_PATH_LEN];
    m->dim = dim;
    m->eps = eps;
    m->weight = m->bias = NULL;
    if (affine) {
        m->weight = tt_param_new(p, TT_SHAPE(dim), "%s", tt_name_join(path, name, "weight"));
        m->bias = tt_param_new(p, TT_SHAPE(dim), "%s", tt_name_join(path, name, "bias"));
        fill_value(m->weight, 1.0f);
    }
}

tt_tensor *tt_layernorm_forward(const tt_layernorm *m, tt_tensor *x) {
    return tt_layer_norm(x, m->weight, m->bias, m->eps);
}

void tt_rmsnorm_init(tt_rmsnorm *m, tt_params *p, const char *name, int dim, float eps,
                     bool affine) {
    char path[TT_PATH_LEN];
    m->dim = dim;
    m->eps = eps;
    m->weight = NULL;
    if (affine) {
        m->weight = tt_param_new(p, TT_SHAPE(dim), "%s", tt_name_join(path, name, "weight"));
        fill_value(m->weight, 1.0f);
    }
}

tt_tensor *tt_rmsnorm_forward(const tt_rmsnorm *m, tt_tensor *x) {
    return tt_rms_norm(x, m->weight, m->eps);
}

void tt_expert_init(tt_expert *m, tt_params *p, const char *name, int dim, int hidden,
                    tt_ffn_kind kind, bool bias) {
    char path[TT_PATH_LEN];
    m->kind = kind;
    m->dim = dim;
    m->hidden = hidden;
    memset(&m->gate, 0, sizeof m->gate);
    if (kind == TT_FFN_RELU) {
        tt_linear_init(&m->up, p, tt_name_join(path, name, "fc1"), dim, hidden, bias);
        tt_linear_init(&m->down, p, tt_name_join(path, name, "fc2"), hidden, dim, bias);
    } else {
        tt_linear_init(&m->up, p, tt_name_join(path, name, "w1"), dim, hidden, bias);
        tt_linear_init(&m->down, p, tt_name_join(path, name, "w2"), hidden, dim, bias);
        tt_linear_init(&m->gate, p, tt_name_join(path, name, "w3"), dim, hidden, bias);
    }
}

tt_tensor *tt_expert_forward(const tt_expert *m, tt_tensor *x) {
    if (m->kind == TT_FFN_RELU) /* relu(fc1 x) as one op: its output is all it keeps */
        return tt_linear_forward(&m->down, tt_affine_relu(x, m->up.weight, m->up.bias));
    /* w3 x before w1 x: C leaves the order of a call's arguments open, and this is the
     * order GCC gave the nested call these lines replace; the backward runs the other way
     * (w1's dx first), which fixes the order of the terms added into x's gradient. */
    tt_tensor *g = tt_linear_forward(&m->gate, x);
    tt_tensor *a = tt_silu(tt_linear_forward(&m->up, x));
    return tt_linear_forward(&m->down, tt_mul(a, g));
}

/* nn.h - modules: plain structs that own named parameters, with an init and a forward.
 *
 * Every module is initialised against a tt_params list and a name prefix; its tensors
 * are registered as "<prefix>.weight", "<prefix>.bias", ... so that the whole model can
 * be listed, counted, zeroed, saved and loaded by name. Forward functions are ordinary
 * compositions of ops: the tape records them and backward needs nothing extra.
 *
 * Row-vector convention as in PyTorch: Linear stores W [out, in] and computes x W^T.
 */
#ifndef TT_NN_H
#define TT_NN_H

#include "../ops.h"
#include "params.h"

/* ---- Linear: y = x W^T + b --------------------------------------------------------- */
/* Init as torch.nn.Linear: W, b ~ U(-1/sqrt(in), 1/sqrt(in)) from the global RNG. */
typedef struct tt_linear {
    tt_tensor *weight; /* [out, in] */
    tt_tensor *bias;   /* [out] or NULL */
    int in_features, out_features;
} tt_linear;
void tt_linear_init(tt_linear *m, tt_params *p, const char *name, int in, int out, bool bias);
tt_tensor *tt_linear_forward(const tt_linear *m, tt_tensor *x); /* [..., in] -> [..., out] */

/* ---- Embedding: rows of a [num, dim] table; init N(0, 1) as torch.nn.Embedding ------- */
typedef struct tt_embed {
    tt_tensor *weight; /* [num, dim] */
    int num, dim;
} tt_embed;
void tt_embed_init(tt_embed *m, tt_params *p, const char *name, int num, int dim);
tt_tensor *tt_embed_forward(const tt_embed *m, tt_tensor *ids); /* int32 [...] -> [..., dim] */

/* ---- LayerNorm / RMSNorm over the last axis (weight = 1, bias = 0 at init) ---------- */
typedef struct tt_layernorm {
    tt_tensor *weight, *bias; /* [dim] each, NULL if !affine */
    int dim;
    float eps;
} tt_layernorm;
void tt_layernorm_init(tt_layernorm *m, tt_params *p, const char *name, int dim, float eps,
                       bool affine);
tt_tensor *tt_layernorm_forward(const tt_layernorm *m, tt_tensor *x);

typedef struct tt_rmsnorm {
    tt_tensor *weight; /* [dim] or NULL */
    int dim;
    float eps;
} tt_rmsnorm;
void tt_rmsnorm_init(tt_rmsnorm *m, tt_params *p, const char *name, int dim, float eps,
                     bool affine);
tt_tensor *tt_rmsnorm_forward(const tt_rmsnorm *m, tt_tensor *x);

/* ---- Expert: a feed-forward network ----------------------------------------------- */
/* TT_FFN_RELU:   fc2(relu(fc1 x))                  names fc1, fc2 (the seed's expert)
 * TT_FFN_SWIGLU: w2(silu(w1 x) * w3 x)             names w1, w2, w3 (DeepSeek-V3)   */
typedef enum tt_ffn_kind { TT_FFN_RELU = 0, TT_FFN_SWIGLU = 1 } tt_ffn_kind;
typedef struct tt_expert {
    tt_ffn_kind kind;
    tt_linear up;   /* fc1 / w1: dim -> hidden   */
    tt_linear down; /* fc2 / w2: hidden -> dim   */
    tt_linear gate; /* w3: dim -> hidden (SwiGLU only) */
    int dim, hidden;
} tt_expert;
void tt_expert_init(tt_expert *m, tt_params *p, const char *name, int dim, int hidden,
                    tt_ffn_kind kind, bool bias);
tt_tensor *tt_expert_forward(const tt_expert *m, tt_tensor *x); /* [..., dim] */

#endif

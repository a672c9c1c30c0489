/* ops.h - every differentiable operation.
 *
 * Each op is a macro `tt_<op>(...)` that passes the caller's file:line to the function
 * `tt_<op>_(..., tt_src)`; set a gdb breakpoint on the function (`break tt_add_`) or on
 * its backward (`break add_backward`). Outputs are temporaries (freed by
 * tt_tape_reset). Shapes follow PyTorch: row-major, last axis fastest. Negative axes
 * count from the end. Integer tensors (TT_I32) carry token ids, targets and indices.
 */
#ifndef TT_OPS_H
#define TT_OPS_H

#include "tensor.h"

/* ---- elementwise binary, with numpy broadcasting -------------------------------- */
/* Shapes are aligned at the last axis; each axis must match or be 1 on one side.
 * d(a+b)/da = 1, d(a-b)/db = -1, d(ab)/da = b, d(a/b)/db = -a/b^2; the gradient of a
 * broadcast input is summed over the axes it was broadcast along.                    */
#define tt_add(a, b) tt_add_(a, b, TT_SRC)
#define tt_sub(a, b) tt_sub_(a, b, TT_SRC)
#define tt_mul(a, b) tt_mul_(a, b, TT_SRC)
#define tt_div(a, b) tt_div_(a, b, TT_SRC)
tt_tensor *tt_add_(tt_tensor *a, tt_tensor *b, tt_src src);
tt_tensor *tt_sub_(tt_tensor *a, tt_tensor *b, tt_src src);
tt_tensor *tt_mul_(tt_tensor *a, tt_tensor *b, tt_src src);
tt_tensor *tt_div_(tt_tensor *a, tt_tensor *b, tt_src src);

/* ---- elementwise unary ------------------------------------------------------------ */
#define tt_neg(a) tt_neg_(a, TT_SRC)
#define tt_scale(a, s) tt_scale_(a, s, TT_SRC)            /* a * s, s a constant        */
#define tt_add_scalar(a, s) tt_add_scalar_(a, s, TT_SRC)  /* a + s, s a constant        */
#define tt_exp(a) tt_exp_(a, TT_SRC)
#define tt_log(a) tt_log_(a, TT_SRC)
#define tt_sqrt(a) tt_sqrt_(a, TT_SRC)
#define tt_rsqrt(a) tt_rsqrt_(a, TT_SRC)
#define tt_pow(a, p) tt_pow_(a, p, TT_SRC)                /* a^p, p a constant          */
#define tt_relu(a) tt_relu_(a, TT_SRC)
#define tt_silu(a) tt_silu_(a, TT_SRC)
#define tt_sigmoid(a) tt_sigmoid_(a, TT_SRC)
#define tt_tanh(a) tt_tanh_(a, TT_SRC)
#define tt_gelu(a) tt_gelu_(a, TT_SRC)                    /* exact (erf) form           */
tt_tensor *tt_neg_(tt_tensor *a, tt_src src);
tt_tensor *tt_scale_(tt_tensor *a, float s, tt_src src);
tt_tensor *tt_add_scalar_(tt_tensor *a, float s, tt_src src);
tt_tensor *tt_exp_(tt_tensor *a, tt_src src);
tt_tensor *tt_log_(tt_tensor *a, tt_src src);
tt_tensor *tt_sqrt_(tt_tensor *a, tt_src src);
tt_tensor *tt_rsqrt_(tt_tensor *a, tt_src src);
tt_tensor *tt_pow_(tt_tensor *a, float p, tt_src src);
tt_tensor *tt_relu_(tt_tensor *a, tt_src src);
tt_tensor *tt_silu_(tt_tensor *a, tt_src src);
tt_tensor *tt_sigmoid_(tt_tensor *a, tt_src src);
tt_tensor *tt_tanh_(tt_tensor *a, tt_src src);
tt_tensor *tt_gelu_(tt_tensor *a, tt_src src);

/* ---- matrix products --------------------------------------------------------------- */
/* tt_matmul:    a [..., M, K] @ b [K, N] or batched a [B, M, K] @ b [B, K, N]  -> [..., M, N]
 * tt_matmul_nt: a @ b^T with b [N, K] or [B, N, K]   (x @ W^T for a Linear, Q @ K^T)
 * tt_matmul_tn: a^T @ b with a [K, M] or [B, K, M]
 * dA = dC @ B^T, dB = A^T @ dC (with the transposes moved accordingly); no copies.    */
#define tt_matmul(a, b) tt_matmul_(a, b, TT_SRC)
#define tt_matmul_nt(a, b) tt_matmul_nt_(a, b, TT_SRC)
#define tt_matmul_tn(a, b) tt_matmul_tn_(a, b, TT_SRC)
tt_tensor *tt_matmul_(tt_tensor *a, tt_tensor *b, tt_src src);
tt_tensor *tt_matmul_nt_(tt_tensor *a, tt_tensor *b, tt_src src);
tt_tensor *tt_matmul_tn_(tt_tensor *a, tt_tensor *b, tt_src src);

/* tt_affine:      x [..., in] @ w [out, in]^T + b [out]  -> [..., out]   (b may be NULL)
 * tt_affine_relu: max(tt_affine(x, w, b), 0)
 * One op each (torch.nn.functional.linear, and with the ReLU fused): the same numbers as
 * matmul_nt, add and relu in a row, one output kept for the backward instead of three. */
#define tt_affine(x, w, b) tt_affine_(x, w, b, TT_SRC)
#define tt_affine_relu(x, w, b) tt_affine_relu_(x, w, b, TT_SRC)
tt_tensor *tt_affine_(tt_tensor *x, tt_tensor *w, tt_tensor *b, tt_src src);
tt_tensor *tt_affine_relu_(tt_tensor *x, tt_tensor *w, tt_tensor *b, tt_src src);

/* tt_experts_relu: n ReLU experts (an MoE layer's routed experts) on their own rows of x,
 * one op. Expert e takes rows idx[off[e]] .. idx[off[e+1] - 1] of x [N, dim] and writes
 * rows off[e] .. off[e+1] - 1 of the result [off[n], dim]:
 *   y_e = relu(x[idx_e] w1[e]^T + b1[e]) w2[e]^T + b2[e]
 * w1[e] [hidden, dim], w2[e] [dim, hidden]; b1, b2: arrays of n biases, or NULL (none).
 * The same bits as tt_index_select, tt_affine_relu and tt_affine per expert; with
 * several threads each takes whole experts (ops/experts.c says why). A tensor passed
 * twice (weights shared between experts) gets the sum of its uses' gradients, the same
 * bits as op by op too (its experts' backward then runs on one thread). An expert with no
 * rows gives its weights no gradient (as if it had not run). On the tape: one
 * node "experts_relu", in[] = x, idx, w1[0..n), w2[0..n), then the b1 and the b2 if
 * given; node->i[0] = n, i[1] = hidden, i[2] / i[3]: whether b1 / b2 were given. */
#define tt_experts_relu(x, idx, n, off, w1, b1, w2, b2) \
    tt_experts_relu_(x, idx, n, off, w1, b1, w2, b2, TT_SRC)
tt_tensor *tt_experts_relu_(tt_tensor *x, tt_tensor *idx, int n, const int *off,
                            tt_tensor *const *w1, tt_tensor *const *b1, tt_tensor *const *w2,
                            tt_tensor *const *b2, tt_src src);
/* tt_experts_swiglu: the same for DeepSeek-V3's SwiGLU experts,
 *   y_e = (silu(x[idx_e] w1[e]^T + b1[e]) * (x[idx_e] w3[e]^T + b3[e])) w2[e]^T + b2[e]
 * w1[e], w3[e] [hidden, dim], w2[e] [dim, hidden]; b1, b2, b3 arrays of n or NULL. The
 * same bits as tt_index_select, then (in this order) tt_affine for w3, tt_affine for w1,
 * tt_silu, tt_mul and tt_affine for w2 per expert (tt_expert_forward's order). One node
 * "experts_swiglu", in[] = x, idx, w1[0..n), w2[0..n), w3[0..n), then the b1, b2, b3
 * given; node->i as above, and i[4]: whether b3 was given. */
#define tt_experts_swiglu(x, idx, n, off, w1, b1, w2, b2, w3, b3) \
    tt_experts_swiglu_(x, idx, n, off, w1, b1, w2, b2, w3, b3, TT_SRC)
tt_tensor *tt_experts_swiglu_(tt_tensor *x, tt_tensor *idx, int n, const int *off,
                              tt_tensor *const *w1, tt_tensor *const *b1, tt_tensor *const *w2,
                              tt_tensor *const *b2, tt_tensor *const *w3,
                              tt_tensor *const *b3, tt_src src);
/* The row offsets off[0..n] an experts_relu or experts_swiglu node was called with (NULL
 * for another node): expert e's rows are off[e] .. off[e+1] - 1 of its idx and of its
 * output. */
const int *tt_experts_relu_offsets(const struct tt_node *node);

/* ---- shape ------------------------------------------------------------------------- */
/* reshape: same elements, new shape (one entry may be -1); a view that shares data.  */
#define tt_reshape(a, ...) tt_reshape_(a, __VA_ARGS__, TT_SRC) /* (a, ndim, shape) or (a, TT_SHAPE(...)) */
#define tt_transpose(a, d0, d1) tt_transpose_(a, d0, d1, TT_SRC)   /* swap two axes */
#define tt_concat(n, ts, axis) tt_concat_(n, ts, axis, TT_SRC)
#define tt_slice(a, axis, start, end) tt_slice_(a, axis, start, end, TT_SRC) /* [start,end) */
#define tt_split(a, axis, n, sizes, out) tt_split_(a, axis, n, sizes, out, TT_SRC)
tt_tensor *tt_reshape_(tt_tensor *a, int ndim, const int *shape, tt_src src);
tt_tensor *tt_transpose_(tt_tensor *a, int d0, int d1, tt_src src);
tt_tensor *tt_concat_(int n, tt_tensor *const *ts, int axis, tt_src src);
tt_tensor *tt_slice_(tt_tensor *a, int axis, int start, int end, tt_src src);
/* Split along axis into n pieces of the given sizes (summing to the axis length). */
void tt_split_(tt_tensor *a, int axis, int n, const int *sizes, tt_tensor **out, tt_src src);

/* ---- reductions ------------------------------------------------------------------------ */
#define tt_sum(a, axis, keepdim) tt_sum_(a, axis, keepdim, TT_SRC)
#define tt_mean(a, axis, keepdim) tt_mean_(a, axis, keepdim, TT_SRC)
#define tt_max(a, axis, keepdim) tt_max_(a, axis, keepdim, TT_SRC) /* grad to first argmax */
#define tt_sum_all(a) tt_sum_all_(a, TT_SRC)                        /* -> shape []        */
#define tt_mean_all(a) tt_mean_all_(a, TT_SRC)
tt_tensor *tt_sum_(tt_tensor *a, int axis, bool keepdim, tt_src src);
tt_tensor *tt_mean_(tt_tensor *a, int axis, bool keepdim, tt_src src);
tt_tensor *tt_max_(tt_tensor *a, int axis, bool keepdim, tt_src src);
tt_tensor *tt_sum_all_(tt_tensor *a, tt_src src);
tt_tensor *tt_mean_all_(tt_tensor *a, tt_src src);

/* ---- softmax family (last axis; max-subtracted, stable for logits of 1e4) --------------- */
#define tt_softmax(a) tt_softmax_(a, TT_SRC)
#define tt_log_softmax(a) tt_log_softmax_(a, TT_SRC)
tt_tensor *tt_softmax_(tt_tensor *a, tt_src src);
tt_tensor *tt_log_softmax_(tt_tensor *a, tt_src src);

/* Fused softmax + negative log-likelihood. logits [..., V], targets int32 [...];
 * returns the mean over targets != ignore_index (shape []). dlogits = (p - onehot)/n. */
#define TT_NO_IGNORE (-1)
#define tt_cross_entropy(logits, targets, ignore_index) \
    tt_cross_entropy_(logits, targets, ignore_index, TT_SRC)
tt_tensor *tt_cross_entropy_(tt_tensor *logits, tt_tensor *targets, int ignore_index,
                             tt_src src);

/* ---- lookup and routing ------------------------------------------------------------------ */
/* embedding: weight [V, D], ids int32 [...] -> [..., D]; backward scatter-adds rows.      */
#define tt_embedding(weight, ids) tt_embedding_(weight, ids, TT_SRC)
tt_tensor *tt_embedding_(tt_tensor *weight, tt_tensor *ids, tt_src src);
/* index_select rows: x [N, ...], idx int32 [M] -> [M, ...]; the adjoint of index_add.    */
#define tt_index_select(x, idx) tt_index_select_(x, idx, TT_SRC)
tt_tensor *tt_index_select_(tt_tensor *x, tt_tensor *idx, tt_src src);
/* index_add rows: out = dst; out[idx[m]] += src[m]. dst [N, ...], src [M, ...].          */
#define tt_index_add(dst, idx, src_rows) tt_index_add_(dst, idx, src_rows, TT_SRC)
tt_tensor *tt_index_add_(tt_tensor *dst, tt_tensor *idx, tt_tensor *src_rows, tt_src src);
/* gather along the last axis: x [..., E], idx int32 [..., K] -> out[..., j] = x[..., idx[j]] */
#define tt_gather(x, idx) tt_gather_(x, idx, TT_SRC)
tt_tensor *tt_gather_(tt_tensor *x, tt_tensor *idx, tt_src src);
/* top-k along the last axis: values [..., k] (sorted descending, ties to the lower index),
 * *indices (if not NULL) receives an int32 tensor [..., k]; gradient flows to the values. */
#define tt_topk(x, k, indices) tt_topk_(x, k, indices, TT_SRC)
tt_tensor *tt_topk_(tt_tensor *x, int k, tt_tensor **indices, tt_src src);

/* ---- normalisation (over the last axis) --------------------------------------------------- */
/* layer_norm: (x - mean) / sqrt(var + eps) * w + b; w, b may be NULL (no affine).          */
#define tt_layer_norm(x, w, b, eps) tt_layer_norm_(x, w, b, eps, TT_SRC)
tt_tensor *tt_layer_norm_(tt_tensor *x, tt_tensor *w, tt_tensor *b, float eps, tt_src src);
/* rms_norm: x / sqrt(mean(x^2) + eps) * w; w may be NULL.                                  */
#define tt_rms_norm(x, w, eps) tt_rms_norm_(x, w, eps, TT_SRC)
tt_tensor *tt_rms_norm_(tt_tensor *x, tt_tensor *w, float eps, tt_src src);

/* ---- attention helpers and regularisation ---------------------------------------------------- */
/* causal_mask: scores [..., T, S] -> -inf where key j > query i + (S - T) (the last T
 * of S positions are the queries, as in incremental decoding); gradient 0 there.          */
#define tt_causal_mask(scores) tt_causal_mask_(scores, TT_SRC)
tt_tensor *tt_causal_mask_(tt_tensor *scores, tt_src src);
/* dropout: in training zero each element with probability p and scale the rest by
 * 1/(1-p) (global RNG); in eval (training == false) or p == 0 the identity.              */
#define tt_dropout(x, p, training) tt_dropout_(x, p, training, TT_SRC)
tt_tensor *tt_dropout_(tt_tensor *x, float p, bool training, tt_src src);

#endif

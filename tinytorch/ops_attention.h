/* ops_attention.h - fused scaled-dot-product attention (one op on the tape).
 *
 * Per (batch, head), with queries Q [T, D], keys K [S, D], values V [S, Dv]:
 *   A = scale * Q K^T                     [T, S]
 *   A[i, j] = -inf  where causal and j > i + (S - T)   (the queries are the LAST T of the
 *                                          S positions, as in tt_causal_mask: S > T is
 *                                          incremental decoding after S - T cached keys)
 *   P = softmax(A) over j (max-subtracted) [T, S]
 *   O = P V                               [T, Dv]
 * The same numbers as tt_matmul(tt_softmax(tt_causal_mask(tt_scale(tt_matmul_nt(q, k),
 * scale))), v) up to rounding, without the four [T, S] intermediates and their gradients:
 * only P is kept for the backward (the causal part of it: rows are cut into blocks and a
 * block stores only the keys its last row can see).
 *
 * Backward, G = dL/dO:
 *   dV += P^T G
 *   dP  = G V^T
 *   dA  = P * (dP - delta) * scale,  delta_i = sum_j P_ij dP_ij = sum_c G_ic O_ic
 *   dQ += dA K          dK += dA^T Q
 *
 * Three layouts, all one op "attention" on the tape (gdb: break attention_backward):
 *   tt_attention(q [BH, T, D], k [BH, S, D], v [BH, S, Dv])        -> [BH, T, Dv]
 *   tt_attention_heads(q [B, T, H*D], k [B, S, H*D], v [B, S, H*Dv], H)
 *                                                                    -> [B, T, H*Dv]
 *       head h reads columns [h*D, (h+1)*D) of q and k and [h*Dv, (h+1)*Dv) of v and
 *       writes its output there: the heads never move (no [B,T,H,D] <-> [B,H,T,D]
 *       transposes); a Linear's output feeds it directly and it feeds the next Linear.
 *   tt_attention_kv(q [B, T, H*D], kv [B, S, H*D + H*Dv], H)        -> [B, T, H*Dv]
 *       keys and values packed side by side in one tensor (keys first), as a single
 *       Linear produces them (MLA's kv_b_proj): no split either.
 *
 * Threads: the (batch, head) pairs are shared out (OpenMP); each pair, its outputs and
 * its slices of every gradient belong to one thread, so results are bit-identical for
 * any thread count.
 *
 * Kernels (ops/attention_fused.c): 16-lane vector code for any D and Dv (head sizes that
 * are not multiples of 16 run on zero-padded copies); TT_ATTN=gemm in the environment
 * selects the older path built on tt_gemm instead (for comparisons and tests; same
 * numbers up to rounding).
 */
#ifndef TT_OPS_ATTENTION_H
#define TT_OPS_ATTENTION_H

#include "tensor.h"

#define tt_attention(q, k, v, scale, causal) tt_attention_(q, k, v, scale, causal, TT_SRC)
#define tt_attention_heads(q, k, v, n_heads, scale, causal) \
    tt_attention_heads_(q, k, v, n_heads, scale, causal, TT_SRC)
#define tt_attention_kv(q, kv, n_heads, scale, causal) \
    tt_attention_kv_(q, kv, n_heads, scale, causal, TT_SRC)

tt_tensor *tt_attention_(tt_tensor *q, tt_tensor *k, tt_tensor *v, float scale, bool causal,
                         tt_src src);
tt_tensor *tt_attention_heads_(tt_tensor *q, tt_tensor *k, tt_tensor *v, int n_heads,
                               float scale, bool causal, tt_src src);
tt_tensor *tt_attention_kv_(tt_tensor *q, tt_tensor *kv, int n_heads, float scale, bool causal,
                            tt_src src);

#endif

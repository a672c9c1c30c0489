/* ops_rope.h - rotary position embedding (RoPE), the interleaved (complex) form of
 * DeepSeek-V3 (shared/deepseek_v3.md section 4).
 *
 * x [B, T, D] or [B, T, H, D] with D even; the token x[b, t] sits at position
 * start_pos + t. cos, sin [P, D/2] are constant tables (angle(p, k) = p * f_k) with
 * P >= start_pos + T. Consecutive pairs rotate:
 *   y[2k]   = x[2k] cos - x[2k+1] sin
 *   y[2k+1] = x[2k] sin + x[2k+1] cos
 * The rotation is orthogonal, so dx = R^T g:
 *   dx[2k]   =  g[2k] cos + g[2k+1] sin
 *   dx[2k+1] = -g[2k] sin + g[2k+1] cos
 * The tables get no gradient (they must not require one).
 */
#ifndef TT_OPS_ROPE_H
#define TT_OPS_ROPE_H

#include "tensor.h"

#define tt_rope(x, cos, sin, start_pos) tt_rope_(x, cos, sin, start_pos, TT_SRC)
tt_tensor *tt_rope_(tt_tensor *x, tt_tensor *cos, tt_tensor *sin, int start_pos, tt_src src);

#endif

/* vmath.h - 16-lane float vectors (GCC vector extensions) and the exponential on them.
 *
 * Written with GCC's generic vectors rather than intrinsics: a function compiled for
 * AVX-512 (TT_CLONES or a target attribute) keeps a v16 in one zmm register, any other
 * target splits it into narrower registers or scalars, with the same results: every
 * operation here is lane-wise IEEE arithmetic with no fused multiply-add (the library is
 * built as ISO C, which keeps the compiler from contracting a * b + c), so vexp gives the
 * same bits on every CPU and for every thread count. Internal to the library. */
#ifndef TT_KERNELS_VMATH_H
#define TT_KERNELS_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define VL 16
typedef float v16 __attribute__((vector_size(VL * sizeof(float))));
typedef float v16u __attribute__((vector_size(VL * sizeof(float)), aligned(4), may_alias));
typedef int32_t v16i __attribute__((vector_size(VL * sizeof(int32_t))));
typedef float v8f __attribute__((vector_size(8 * sizeof(float))));
typedef double v8d __attribute__((vector_size(8 * sizeof(double))));
typedef double v16d __attribute__((vector_size(VL * sizeof(double))));

#ifndef ALWAYS_INLINE
#define ALWAYS_INLINE inline __attribute__((always_inline))
#endif

/* (Macros, not functions: 64-byte vectors by value would draw GCC's -Wpsabi note.) */
#define VIOTA ((v16i){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}) /* lane numbers */
#define vsel(mask, a, b) ((v16)(((v16i)(a) & (mask)) | ((v16i)(b) & ~(mask)))) /* mask ? a : b */
#define vsplat(x) ((v16){0} + (float)(x))
#define VLOAD(p) ((v16)(*(const v16u *)(p)))
#define VSTORE(p, x) (*(v16u *)(p) = (x))

/* e^x on 16 lanes for x <= 0 (a softmax's x - max). x = n ln2 + f, n = round(x / ln2),
 * |f| <= ln2 / 2 (ln2 in two parts, Cody-Waite); e^f by its degree-7 Taylor polynomial
 * (truncation error < 6e-9 relative, so within a few ulp of expf); 2^n goes into the
 * exponent bits. Below -86 (e^x < 5e-38, nothing next to the row's maximum term 1) the
 * result is 0, and so is e^-inf. */
static ALWAYS_INLINE void vexp(v16 *px) {
    v16 x = *px;
    const v16 lo = vsplat(-86.0f);
    v16i under = x < lo;
    x = vsel(under, lo, x);
    const v16 magic = vsplat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v16 r = (x * 1.44269504088896341f + magic) - magic;
    v16 f = (x - r * 0.693145751953125f) - r * 1.428606765330187e-06f;
    v16 p = vsplat(1.0f / 5040.0f);
    p = p * f + 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    v16i n = __builtin_convertvector(r, v16i);
    v16 y = (v16)((v16i)p + (n << 23));
    *px = (v16)((v16i)y & ~under);
}

/* The logistic function on 16 lanes, without overflow: with e = e^-|x| <= 1 (vexp,
 * above: the softmax's exponential, within a few ulp of expf),
 * s = 1 / (1 + e) for x >= 0 and e / (1 + e) below, so x = +-1000 gives exactly 1 or 0
 * instead of inf / inf. A NaN x gives NaN. */
static ALWAYS_INLINE void vsigmoid(const v16 *px, v16 *ps) {
    const v16 x = *px;
    const v16i neg = x < (v16){0}, nan = x != x;
    v16 e = vsel(neg, x, -x); /* -|x| */
    vexp(&e);
    const v16 d = e + 1.0f;
    *ps = vsel(nan, x, vsel(neg, e / d, 1.0f / d));
}

/* *c = a * s + *c on 16 lanes, each rounded once (a fused multiply-add): the same bits
 * on every target, as IEEE fma is exactly specified. In a function compiled for AVX-512
 * or x86-64-v3 (TT_CLONES_FMA) the loop becomes one vfmadd; elsewhere each lane is an
 * fmaf, which is the hardware instruction where there is one and exact software where
 * there is not (slow, but only on CPUs without FMA). */
static ALWAYS_INLINE void vfma_acc(v16 *c, const v16 *a, float s) {
    v16 r = *c; /* (every lane is overwritten; the copy keeps -O1 from warning) */
#pragma GCC unroll 16
    for (int i = 0; i < VL; i++) r[i] = __builtin_fmaf((*a)[i], s, (*c)[i]);
    *c = r;
}

/* *lo = lanes 0-7 of x widened to double, *hi = lanes 8-15. Widened as one 16-lane
 * vector: GCC 12 turns that into one conversion per half (AVX-512: vcvtps2pd ymm ->
 * zmm), where converting each 8-lane half on its own took three more shuffles a half -
 * a third of the fused attention's softmax. */
static ALWAYS_INLINE void vwiden(const v16 *x, v8d *lo, v8d *hi) {
    const v16d d = __builtin_convertvector(*x, v16d);
    memcpy(lo, &d, sizeof *lo);
    memcpy(hi, (const char *)&d + sizeof *lo, sizeof *hi);
}

/* *lo += lanes 0-7 of x in double, *hi += lanes 8-15 (a sum kept in double, lane by
 * lane) */
static ALWAYS_INLINE void vwiden_acc(const v16 *x, v8d *lo, v8d *hi) {
    v8d l, h;
    vwiden(x, &l, &h);
    *lo += l;
    *hi += h;
}

/* *x = n < 16 floats of p, the other lanes `fill` (a row's ragged end). */
static ALWAYS_INLINE void vload_part(v16 *x, const float *p, int n, float fill) {
    *x = vsplat(fill);
    for (int i = 0; i < n; i++) (*x)[i] = p[i];
}

/* The same as vload_part for the ragged end of a row of at least 16 floats: one load of
 * the row's last 16 floats (ending at p + n) and a lane permutation instead of copying
 * elements through memory. */
static ALWAYS_INLINE void vload_tail(v16 *x, const float *p, int n, float fill) {
#if defined(__GNUC__) && !defined(__clang__)
    v16 last = VLOAD(p + n - VL);                         /* last[k] = p[n - 16 + k] */
    v16 sh = __builtin_shuffle(last, VIOTA + (VL - n));   /* lane i < n: p[i]        */
    *x = vsel(VIOTA < n, sh, vsplat(fill));
#else /* (clang has no variable-index shuffle builtin) */
    vload_part(x, p, n, fill);
#endif
}

#endif

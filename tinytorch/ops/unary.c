/* unary.c - elementwise functions of one tensor.
 *
 * One forward and one backward shared by all ops, each a switch on the op with a plain
 * loop per case (no function pointer per element). x is the input, y the output,
 * g = dL/dy; the backward accumulates dL/dx += g * dy/dx:
 *
 *   neg         y = -x                    dy/dx = -1
 *   scale       y = s x                   dy/dx = s
 *   add_scalar  y = x + s                 dy/dx = 1
 *   exp         y = e^x                   dy/dx = e^x = y
 *   log         y = ln x                  dy/dx = 1 / x
 *   sqrt        y = x^(1/2)               dy/dx = 1 / (2 sqrt x) = 0.5 / y
 *   rsqrt       y = x^(-1/2)              dy/dx = -1/2 x^(-3/2) = -0.5 y^3
 *   pow         y = x^p                   dy/dx = p x^(p-1)
 *   relu        y = max(x, 0)             dy/dx = [x > 0]
 *   sigmoid     y = s(x) = 1/(1+e^-x)     dy/dx = s (1 - s) = y (1 - y)
 *   silu        y = x s(x)                dy/dx = s + x s (1 - s) = s (1 + x (1 - s))
 *   tanh        y = tanh x                dy/dx = 1 - y^2
 *   gelu        y = x Phi(x),             dy/dx = Phi(x) + x phi(x)
 *               Phi(x) = (1 + erf(x/sqrt2))/2,  phi(x) = e^(-x^2/2) / sqrt(2 pi)
 */
#include "../internal.h"
#include "../kernels/vmath.h"

#include <math.h>

/* The kernels run on contiguous ranges and are built for AVX-512, AVX2 and baseline
 * x86-64 (the best is picked at load time); the loops without a libm call are vectorised
 * (VEC), every lane doing the scalar loop's IEEE operations, so the results do not depend
 * on the build choice. sigmoid and silu use the library's own vector exponential (vexp,
 * as the softmax does) instead of libm's expf: the same bits on every target too. Above
 * a size the range is cut into CHUNK-element pieces shared by the threads: one writer per
 * element, bit-identical for any thread count. */

#define CHUNK ((size_t)8192)
/* elements from which threads pay: cheap arithmetic / a libm call per element */
#define PAR_MIN_CHEAP ((size_t)1 << 16)
#define PAR_MIN_LIBM ((size_t)1 << 13)

typedef enum {
    NEG, SCALE, ADD_SCALAR, EXP, LOG, SQRT, RSQRT, POW, RELU, SILU, SIGMOID, TANH, GELU
} unop;
static const char *const unop_name[] = {"neg",  "scale", "add_scalar", "exp",     "log",
                                        "sqrt", "rsqrt", "pow",        "relu",    "silu",
                                        "sigmoid", "tanh", "gelu"};

#define INV_SQRT2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

/* y = sigmoid(x) (silu: y = x sigmoid(x)) over n floats, 16 at a time */
static ALWAYS_INLINE void sigmoid_rows(const float *restrict x, float *restrict y, size_t n,
                                       bool silu) {
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        const v16 v = VLOAD(x + i);
        v16 sg;
        vsigmoid(&v, &sg);
        VSTORE(y + i, silu ? v * sg : sg);
    }
    if (i < n) {
        v16 v, sg;
        vload_part(&v, x + i, (int)(n - i), 0.0f);
        vsigmoid(&v, &sg);
        const v16 r = silu ? v * sg : sg;
        for (size_t k = 0; k < n - i; k++) y[i + k] = r[k];
    }
}

/* gx += g * dsilu/dx = g s (1 + x (1 - s)) over n floats, 16 at a time */
static ALWAYS_INLINE void silu_grad_rows(const float *restrict g, const float *restrict x,
                                         float *restrict gx, size_t n) {
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        const v16 v = VLOAD(x + i);
        v16 sg;
        vsigmoid(&v, &sg);
        VSTORE(gx + i, VLOAD(gx + i) + VLOAD(g + i) * sg * (1.0f + v * (1.0f - sg)));
    }
    if (i < n) {
        v16 v, gv, sg;
        vload_part(&v, x + i, (int)(n - i), 0.0f);
        vload_part(&gv, g + i, (int)(n - i), 0.0f);
        vsigmoid(&v, &sg);
        const v16 d = gv * sg * (1.0f + v * (1.0f - sg));
        for (size_t k = 0; k < n - i; k++) gx[i + k] += d[k];
    }
}

TT_CLONES static void unary_forward(unop op, float s, const float *restrict x,
                                    float *restrict y, size_t n) {
    switch (op) {
    case NEG: VEC for (size_t i = 0; i < n; i++) y[i] = -x[i]; break;
    case SCALE: VEC for (size_t i = 0; i < n; i++) y[i] = x[i] * s; break;
    case ADD_SCALAR: VEC for (size_t i = 0; i < n; i++) y[i] = x[i] + s; break;
    case EXP: for (size_t i = 0; i < n; i++) y[i] = expf(x[i]); break;
    case LOG: for (size_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case SQRT: VEC for (size_t i = 0; i < n; i++) y[i] = sqrtf(x[i]); break;
    case RSQRT: VEC for (size_t i = 0; i < n; i++) y[i] = 1.0f / sqrtf(x[i]); break;
    case POW: for (size_t i = 0; i < n; i++) y[i] = powf(x[i], s); break;
    case RELU: VEC for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
    case SILU: sigmoid_rows(x, y, n, true); break;
    case SIGMOID: sigmoid_rows(x, y, n, false); break;
    case TANH: for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]); break;
    case GELU:
        for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
        break;
    }
}

/* gx += g * dy/dx, with dy/dx from the table above (x = input, y = output). */
TT_CLONES static void unary_grad(unop op, float s, const float *restrict g,
                                 const float *restrict x, const float *restrict y,
                                 float *restrict gx, size_t n) {
    switch (op) {
    case NEG: /* dy/dx = -1 */
        VEC for (size_t i = 0; i < n; i++) gx[i] -= g[i];
        break;
    case SCALE: /* dy/dx = s */
        VEC for (size_t i = 0; i < n; i++) gx[i] += g[i] * s;
        break;
    case ADD_SCALAR: /* dy/dx = 1 */
        VEC for (size_t i = 0; i < n; i++) gx[i] += g[i];
        break;
    case EXP: /* dy/dx = e^x = y */
        VEC for (size_t i = 0; i < n; i++) gx[i] += g[i] * y[i];
        break;
    case LOG: /* dy/dx = 1/x */
        VEC for (size_t i = 0; i < n; i++) gx[i] += g[i] / x[i];
        break;
    case SQRT: /* dy/dx = 1/(2 sqrt x) = 0.5/y */
        VEC for (size_t i = 0; i < n; i++) gx[i] += g[i] * 0.5f / y[i];
        break;
    case RSQRT: /* dy/dx = -1/2 x^(-3/2) = -0.5 y^3 */
        VEC for (size_t i = 0; i < n; i++) gx[i] -= g[i] * 0.5f * y[i] * y[i] * y[i];
        break;
    case POW: /* dy/dx = p x^(p-1) */
        for (size_t i = 0; i < n; i++) gx[i] += g[i] * s * powf(x[i], s - 1.0f);
        break;
    case RELU: /* dy/dx = [x > 0] */
        VEC for (size_t i = 0; i < n; i++) gx[i] += x[i] > 0.0f ? g[i] : 0.0f;
        break;
    case SILU: /* dy/dx = s + x s (1-s) = s (1 + x (1-s)), s = sigmoid(x) */
        silu_grad_rows(g, x, gx, n);
        break;
    case SIGMOID: /* dy/dx = y (1 - y) */
        VEC for (size_t i = 0; i < n; i++) gx[i] += g[i] * y[i] * (1.0f - y[i]);
        break;
    case TANH: /* dy/dx = 1 - y^2 */
        VEC for (size_t i = 0; i < n; i++) gx[i] += g[i] * (1.0f - y[i] * y[i]);
        break;
    case GELU: /* dy/dx = Phi(x) + x phi(x) */
        for (size_t i = 0; i < n; i++) {
            float cdf = 0.5f * (1.0f + erff(x[i] * INV_SQRT2));
            float pdf = INV_SQRT_2PI * expf(-0.5f * x[i] * x[i]);
            gx[i] += g[i] * (cdf + x[i] * pdf);
        }
        break;
    }
}

static bool uses_libm(unop op) { return op >= EXP && op != RELU; }

static size_t par_min(unop op) { return uses_libm(op) ? PAR_MIN_LIBM : PAR_MIN_CHEAP; }

/* The forward or the backward over chunks of CHUNK elements (tt_parallel_chunks). */
typedef struct un_job {
    unop op;
    float s;
    const float *x, *y, *g; /* the input; backward: the output and dL/dy */
    float *out;             /* y (forward) or dx (backward)              */
} un_job;

static void grad_chunk(void *ctx, size_t o, size_t len) {
    const un_job *j = ctx;
    unary_grad(j->op, j->s, j->g + o, j->x + o, j->y + o, j->out + o, len);
}

static void unary_backward(tt_node *nd) {
    unop op = (unop)nd->i[0];
    tt_tensor *a = nd->in[0];
    float *gx = tt_grad_acc(a);
    if (!gx) return;
    un_job j = {op, nd->f[0], a->data, nd->out->data, nd->out->grad, gx};
    tt_parallel_chunks(a->size, CHUNK, par_min(op), grad_chunk, &j);
}

static void forward_chunk(void *ctx, size_t o, size_t len) {
    const un_job *j = ctx;
    unary_forward(j->op, j->s, j->x + o, j->out + o, len);
}

static void unary_run(unop op, float s, const float *x, float *y, size_t n) {
    un_job j = {.op = op, .s = s, .x = x, .out = y};
    tt_parallel_chunks(n, CHUNK, par_min(op), forward_chunk, &j);
}

static tt_tensor *unary(unop op, tt_tensor *a, float s, tt_src src) {
    const char *name = unop_name[op];
    tt_check_f32(a, src, name, "a");
    tt_tensor *y = tt_tmp_like(a);
    unary_run(op, s, a->data, y->data, a->size);
    tt_node *node = tt_record(name, unary_backward, y, 1, &a, src);
    if (node) {
        node->i[0] = op;
        node->f[0] = s;
    }
    return y;
}

tt_tensor *tt_neg_(tt_tensor *a, tt_src src) { return unary(NEG, a, 0.0f, src); }
tt_tensor *tt_scale_(tt_tensor *a, float s, tt_src src) { return unary(SCALE, a, s, src); }
tt_tensor *tt_add_scalar_(tt_tensor *a, float s, tt_src src) { return unary(ADD_SCALAR, a, s, src); }
tt_tensor *tt_exp_(tt_tensor *a, tt_src src) { return unary(EXP, a, 0.0f, src); }
tt_tensor *tt_log_(tt_tensor *a, tt_src src) { return unary(LOG, a, 0.0f, src); }
tt_tensor *tt_sqrt_(tt_tensor *a, tt_src src) { return unary(SQRT, a, 0.0f, src); }
tt_tensor *tt_rsqrt_(tt_tensor *a, tt_src src) { return unary(RSQRT, a, 0.0f, src); }
tt_tensor *tt_pow_(tt_tensor *a, float p, tt_src src) { return unary(POW, a, p, src); }
tt_tensor *tt_relu_(tt_tensor *a, tt_src src) { return unary(RELU, a, 0.0f, src); }
tt_tensor *tt_silu_(tt_tensor *a, tt_src src) { return unary(SILU, a, 0.0f, src); }
tt_tensor *tt_sigmoid_(tt_tensor *a, tt_src src) { return unary(SIGMOID, a, 0.0f, src); }
tt_tensor *tt_tanh_(tt_tensor *a, tt_src src) { return unary(TANH, a, 0.0f, src); }
tt_tensor *tt_gelu_(tt_tensor *a, tt_src src) { return unary(GELU, a, 0.0f, src); }

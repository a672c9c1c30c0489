/* tensor.h - the tensor: a contiguous, row-major block of float32 (or int32) numbers
 * with a shape, an optional gradient, a name, and the tape node that produced it.
 *
 * Two lifetimes:
 *   - persistent tensors (parameters, inputs you refill every step) come from the
 *     creation functions below and live until tt_free();
 *   - temporaries (every op's output, and gradients of temporaries) live in the
 *     step arena and all die together at tt_tape_reset(). A training step therefore
 *     allocates nothing from malloc once the arena has grown to its working size.
 */
#ifndef TT_TENSOR_H
#define TT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TT_MAX_DIMS 4
#define TT_NAME_LEN 64

/* Where in the caller's source an op was invoked; recorded on the tape and quoted in
 * error messages. Public ops are macros that pass TT_SRC to a function named op_. */
typedef struct tt_src {
    const char *file;
    int line;
} tt_src;
#define TT_SRC ((tt_src){__FILE__, __LINE__})

typedef enum tt_dtype {
    TT_F32 = 0, /* data holds float   */
    TT_I32 = 1, /* data holds int32_t (token ids, expert indices, targets) */
} tt_dtype;

struct tt_node;

typedef struct tt_tensor {
    int ndim;                 /* 0..TT_MAX_DIMS (0 = scalar)                     */
    int shape[TT_MAX_DIMS];   /* shape[0] is the slowest-varying axis           */
    size_t size;              /* number of elements = product of shape          */
    tt_dtype dtype;
    float *data;              /* size elements; int32 tensors reuse the storage */
    float *grad;              /* NULL until a backward pass first writes to it;
                               * a temporary's is released again once propagated
                               * (see tt_retain_grad)                           */
    bool requires_grad;       /* gradients flow into this tensor                */
    bool persistent;          /* malloc-owned (tt_free) vs. step arena          */
    bool is_view;             /* data borrowed from another tensor (reshape)    */
    bool retain_grad;         /* keep the grad of a temporary (tt_retain_grad)  */
    float *grad_spare;        /* a persistent tensor's gradient buffer while its
                               * grad is NULL after tt_grad_to_none: the next
                               * gradient is written into it (not malloc'd)     */
    char name[TT_NAME_LEN];   /* "" if unnamed, e.g. "layers.0.attn.wq.weight"  */
    struct tt_node *node;     /* tape node that produced it; NULL for leaves    */
} tt_tensor;

/* ---- creation (persistent: free with tt_free) ------------------------------- */
tt_tensor *tt_tensor_new(tt_dtype dtype, int ndim, const int *shape); /* uninitialised */
tt_tensor *tt_zeros(int ndim, const int *shape);
tt_tensor *tt_ones(int ndim, const int *shape);
tt_tensor *tt_full(int ndim, const int *shape, float value);
tt_tensor *tt_from_data(int ndim, const int *shape, const float *values); /* copies */
tt_tensor *tt_from_ids(int ndim, const int *shape, const int32_t *ids);   /* int32 copy */
tt_tensor *tt_arange(int n);                              /* [0, 1, ..., n-1], shape [n] */
tt_tensor *tt_rand_uniform(int ndim, const int *shape, float lo, float hi); /* global RNG */
tt_tensor *tt_rand_normal(int ndim, const int *shape, float mean, float std);
tt_tensor *tt_clone(const tt_tensor *t);    /* persistent copy of data (no grad, no node) */
void tt_free(tt_tensor *t);                  /* persistent tensors only; NULL is fine     */

/* Shorthand for shapes in C: tt_zeros(TT_SHAPE(2, 3)) */
#define TT_SHAPE(...) (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)), (int[]){__VA_ARGS__}

/* ---- properties ---------------------------------------------------------- */
tt_tensor *tt_set_name(tt_tensor *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));          /* returns t, for chaining   */
tt_tensor *tt_set_requires_grad(tt_tensor *t, bool on); /* returns t              */
static inline int32_t *tt_ids(const tt_tensor *t) { return (int32_t *)t->data; }
float tt_item(const tt_tensor *t);          /* the single value of a 1-element tensor */
void tt_zero_grad(tt_tensor *t);            /* grad := 0 (keeps the buffer)           */
/* grad := NULL, as PyTorch's zero_grad(set_to_none=True): the next backward writes the
 * gradient instead of adding it to zeros (no zeroing pass, and a Linear's weight
 * gradient is computed with beta = 0, not read back). A persistent tensor keeps the
 * buffer (grad_spare) for that, so no memory is freed or touched anew. Until the next
 * backward reaches t, t->grad is NULL: code that reads it must check. */
void tt_grad_to_none(tt_tensor *t);
float *tt_grad_ensure(tt_tensor *t);        /* allocate a zeroed grad if missing      */
bool tt_same_shape(const tt_tensor *a, const tt_tensor *b);
/* "[2, 3, 4]" into buf (returns buf); buf needs TT_SHAPE_STR_LEN bytes */
#define TT_SHAPE_STR_LEN 64
char *tt_shape_str(const tt_tensor *t, char *buf);

/* ---- printing (all usable from gdb: `call tt_print(t)`) ----------------------- */
void tt_print(const tt_tensor *t);          /* name, shape, op, values (abbreviated) */
void tt_print_grad(const tt_tensor *t);     /* the same for t->grad                   */
void tt_fprint(FILE *f, const tt_tensor *t, bool grad);

#endif

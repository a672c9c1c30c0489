/* autograd.h - the tape (a Wengert list) and reverse-mode differentiation.
 *
 * While grad mode is on, every op whose inputs require grad appends one tt_node to
 * the tape: its name, inputs, output, a backward function and whatever that backward
 * needs. tt_backward(loss) seeds dloss/dloss = 1 and calls the backward functions in
 * reverse creation order, once each. Backward functions ACCUMULATE (+=) into the
 * gradients of their inputs, so a tensor used twice receives the sum.
 *
 * Lifetime: nodes, op outputs and their gradients live in the step arena; one call to
 * tt_tape_reset() releases them all. Leaf gradients (persistent tensors) survive and
 * keep accumulating across backward calls until tt_zero_grad(), as in PyTorch. The
 * gradient of a temporary is released (grad = NULL) as soon as its producer's backward
 * has consumed it, again as in PyTorch; tt_retain_grad() keeps one, and
 * tt_set_retain_grads(true) keeps all of them (for inspecting a backward in a debugger).
 */
#ifndef TT_AUTOGRAD_H
#define TT_AUTOGRAD_H

#include "tensor.h"

typedef struct tt_node tt_node;
typedef void (*tt_backward_fn)(tt_node *n);

#define TT_NODE_MAX_ARGS 6

struct tt_node {
    const char *op;           /* "add", "matmul", ... (static string)                */
    tt_backward_fn backward;  /* reads out->grad, accumulates into in[i]->grad       */
    tt_tensor *out;
    tt_tensor **in;           /* n_in inputs (arena)                                 */
    int n_in;
    int index;                /* position on the tape                                */
    tt_src src;               /* the caller's file:line                              */
    void *ctx;                /* op-specific saved state (arena), may be NULL        */
    float f[TT_NODE_MAX_ARGS];/* small scalar arguments (scale factor, eps, ...)     */
    int i[TT_NODE_MAX_ARGS];  /* small integer arguments (axis, k, ...)              */
};

/* ---- grad mode ----------------------------------------------------------------- */
bool tt_grad_enabled(void);
bool tt_set_grad_enabled(bool on);   /* returns the previous setting                 */
/* A no-grad scope: nothing inside is recorded.                                      */
void tt_no_grad_begin(void);
void tt_no_grad_end(void);

/* ---- backward ------------------------------------------------------------------ */
#define tt_backward(loss) tt_backward_(loss, TT_SRC)
void tt_backward_(tt_tensor *loss, tt_src src);         /* loss must have 1 element  */
/* Backward from a non-scalar output with an explicit seed gradient (out->size floats). */
#define tt_backward_seed(out, seed) tt_backward_seed_(out, seed, TT_SRC)
void tt_backward_seed_(tt_tensor *out, const float *seed, tt_src src);

/* Keep t's gradient after backward although t is a temporary (torch's retain_grad). */
void tt_retain_grad(tt_tensor *t);
/* Keep the gradient of every temporary (debugging); returns the previous setting.   */
bool tt_set_retain_grads(bool on);

/* ---- the tape -------------------------------------------------------------------- */
int tt_tape_len(void);
tt_node *tt_tape_node(int index);
/* Release the tape and every temporary (op outputs, their grads). Persistent tensors
 * and their grads are untouched. Call once per training step, after the update.     */
void tt_tape_reset(void);
void tt_tape_print(FILE *f);  /* one line per node: index, op, output, inputs, file:line */
void tt_tape_dot(FILE *f);    /* Graphviz DOT of the recorded graph                     */

/* Arena marks: rewind the tape and the arena to an earlier point without touching what
 * was allocated before it (used by gradcheck to evaluate f many times).             */
typedef struct tt_mark {
    int block;       /* arena block index  */
    size_t offset;   /* bytes used in it   */
    int tape;        /* tape length        */
} tt_mark;
tt_mark tt_mark_get(void);
void tt_mark_release(tt_mark m);

/* Memory statistics of the step arena, in bytes. */
typedef struct tt_mem_stats {
    size_t arena_used;      /* bytes handed out since the last reset                */
    size_t arena_capacity;  /* bytes reserved from the system                       */
    size_t arena_peak;      /* largest arena_used ever seen                          */
    size_t persistent;      /* bytes held by persistent tensors and their grads      */
    size_t n_persistent;    /* number of live persistent tensors                     */
} tt_mem_stats;
tt_mem_stats tt_mem_get_stats(void);

/* ---- writing ops (public: users define their own ops the same way) ---------------- */
/* A temporary (arena) tensor for an op's output; data uninitialised.                 */
tt_tensor *tt_tmp(tt_dtype dtype, int ndim, const int *shape);
/* Scratch memory from the arena, 64-byte aligned, released at tt_tape_reset().       */
void *tt_arena_alloc(size_t bytes);
/* True if an op with these inputs must be recorded (grad mode on, some input needs
 * grad). Ops call this before doing work that only the backward needs.              */
bool tt_needs_grad(int n_in, tt_tensor *const *in);
/* Append a node for `out` computed from in[0..n_in-1]; sets out->node and
 * out->requires_grad. Returns NULL (and records nothing) if !tt_needs_grad.          */
tt_node *tt_record(const char *op, tt_backward_fn backward, tt_tensor *out, int n_in,
                   tt_tensor *const *in, tt_src src);
/* The gradient buffer an op's backward accumulates into: NULL when t does not require
 * grad (skip the work), else a zero-initialised buffer allocated on first use.       */
float *tt_grad_acc(tt_tensor *t);

/* ---- anomaly mode (torch.autograd.detect_anomaly) --------------------------------- */
/* When on, every recorded op's output (float tensors; also in no-grad mode) and, during
 * tt_backward, every input gradient after each node's backward are checked for NaN and
 * Inf; the first non-finite value stops the program through the error handler with
 *   "tinytorch: anomaly: backward of 'matmul_nt' (created at model.c:42) produced inf in
 *    the gradient of 'layers.0.attn.q_proj.weight' [64, 64] at element 17, step 1234
 *    (at train.c:90)"
 * (forward: "forward of 'log' produced -inf in its output '<unnamed>' [2] at element 1
 * (inputs: 'x' [2]), step 3 (at model.c:12)"; a NaN/Inf already in a leaf input, e.g. a
 * parameter broken by an update, is named as such). Intended -inf is not an anomaly:
 * the output of a masking op ("causal_mask"), and Inf passed on from an input that is an
 * op output (already judged) or a constant leaf holding -inf (an additive mask); turning
 * it into NaN is.
 * Cost when off: one branch per op. When on: one pass over each output and gradient. */
void tt_set_detect_anomaly(bool on);
bool tt_detect_anomaly(void);
/* The training step quoted in anomaly messages (e.g. set it at the top of each step);
 * -1 (the default) prints "step ?". */
void tt_anomaly_set_step(long step);
long tt_anomaly_step(void);

/* ---- testing aid: deliberately wrong backward ------------------------------------ */
/* Scale every gradient contribution made by the backward of op `op` by `factor`
 * (1.01 = "off by 1%"); NULL restores the normal engine. Used by the mutation tests
 * that prove a gradient check is sharp enough to notice.                             */
void tt_debug_mutate_backward(const char *op, float factor);

#endif

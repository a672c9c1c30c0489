/* optim.h - optimizers, gradient clipping and learning-rate schedules.
 *
 * An optimizer updates every tensor of a tt_params list that requires grad and has a
 * gradient. Its state (momentum, Adam moments) is kept as named persistent tensors
 * ("optim.momentum.<param>", "optim.exp_avg.<param>", "optim.exp_avg_sq.<param>") in
 * its own tt_params list, so checkpoints can save and restore it by name.
 *
 * State is created, zero-filled, at construction for every float parameter that
 * requires grad at that moment (SGD without momentum has no state), so tt_optim_step
 * never allocates and a checkpoint can be loaded before the first step. Consequently:
 * build the optimizer after the model is complete; it only ever updates the parameters
 * registered (and requiring grad) when it was made. A parameter without requires_grad
 * or without a grad buffer is skipped (no decay, no state change), e.g. the MoE
 * selection bias. Parameters must be named (state names derive from them) and
 * "optim.exp_avg_sq.<name>" must fit in TT_NAME_LEN - 1 = 63 bytes.
 *
 * Difference from PyTorch: AdamW's bias correction uses the optimizer's global step
 * count, whereas torch counts steps per parameter. They agree whenever every parameter
 * has had a gradient buffer since the first step (a zeroed grad still counts as a step,
 * as in torch with zero_grad(set_to_none=False)).
 */
#ifndef TT_OPTIM_H
#define TT_OPTIM_H

#include "../nn/params.h"

typedef enum tt_optim_kind { TT_OPTIM_SGD = 0, TT_OPTIM_ADAMW = 1 } tt_optim_kind;

typedef struct tt_optim {
    tt_optim_kind kind;
    tt_params *params;   /* the model's parameters (not owned)                     */
    tt_params state;     /* optimizer state tensors, named as above (owned)        */
    float lr;
    float momentum;      /* SGD                                                    */
    bool nesterov;       /* SGD                                                    */
    float beta1, beta2, eps; /* AdamW                                              */
    float weight_decay;  /* SGD: L2 added to the gradient; AdamW: decoupled        */
    long step;           /* number of tt_optim_step calls so far                   */
    /* private: state of parameter i < n_slots (NULL = none), pointing into `state`  */
    int n_slots;
    tt_tensor **slot1;   /* SGD momentum buffer / AdamW exp_avg                    */
    tt_tensor **slot2;   /* AdamW exp_avg_sq                                       */
    int *chunk_param;    /* [n_slots + 1] and                                      */
    long *chunk_first;   /* [n_slots + 1]: the step's chunk list (optim.c)         */
} tt_optim;

/* torch.optim.SGD semantics (dampening 0): g += wd*w; buf = mu*buf + g;
 * g = nesterov ? g + mu*buf : buf; w -= lr*g. */
tt_optim *tt_optim_sgd(tt_params *p, float lr, float momentum, float weight_decay,
                       bool nesterov);
/* torch.optim.AdamW semantics: w -= lr*wd*w; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), t = step (1-based).
 * Invalid hyperparameters (negative lr, betas outside [0, 1), nesterov without
 * momentum, ...) are caller bugs and stop via tt_error_at, as in torch's ValueError. */
tt_optim *tt_optim_adamw(tt_params *p, float lr, float beta1, float beta2, float eps,
                         float weight_decay);
/* One update with o->lr (set o->lr from a schedule before each step). No allocation. */
void tt_optim_step(tt_optim *o);
void tt_optim_zero_grad(tt_optim *o);  /* zero every parameter's gradient */
/* Every parameter's grad := NULL, as torch's zero_grad(set_to_none=True) (tt_grad_to_none:
 * the buffers are kept and the next backward writes them without a zeroing pass). A
 * parameter the next backward does not reach keeps grad NULL and tt_optim_step skips it
 * (for AdamW: no moment update, though the global step count still advances). */
void tt_optim_grad_to_none(tt_optim *o);
void tt_optim_free(tt_optim *o);

/* Scale all gradients so that their global L2 norm is at most max_norm; returns the
 * norm before clipping (computed in double). As torch.nn.utils.clip_grad_norm_: the
 * grads are multiplied by max_norm / (norm + 1e-6) when that is < 1. Tensors without
 * requires_grad or without a grad are ignored. A NaN/inf norm is returned unchanged
 * and the gradients are left alone (the caller decides to skip the step). */
float tt_clip_grad_norm(tt_params *p, float max_norm);

typedef enum tt_lr_kind { TT_LR_CONSTANT = 0, TT_LR_WARMUP_COSINE = 1 } tt_lr_kind;
typedef struct tt_lr_schedule {
    tt_lr_kind kind;
    float base_lr, min_lr;
    int warmup_steps, total_steps;
} tt_lr_schedule;
/* lr at step (0-based): constant, or linear warm-up from base_lr/warmup to base_lr over
 * warmup_steps, then cosine decay to min_lr at total_steps (min_lr after):
 *   step < warmup:          base * (step + 1) / warmup
 *   warmup <= step < total: min + (base - min) * (1 + cos(pi * (step - warmup) /
 *                                                      (total - warmup))) / 2
 *   step >= total:          min                                               */
float tt_lr_at(const tt_lr_schedule *s, long step);

#endif

/* optim.h - optimizers, gradient clipping and learning-rate schedules.
 *
 * An optimizer updates every tensor of a tt_params list that requires grad and has a
 * gradient. Its state (momentum, Adam moments) is kept as named persistent tensors
 * ("optim.momentum.<param>", "optim.exp_avg.<param>", "optim.exp_avg_sq.<param>") in
 * its own tt_params list, so checkpoints can save and restore it by name.
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
} tt_optim;

/* torch.optim.SGD semantics (dampening 0): g += wd*w; buf = mu*buf + g;
 * g = nesterov ? g + mu*buf : buf; w -= lr*g. */
tt_optim *tt_optim_sgd(tt_params *p, float lr, float momentum, float weight_decay,
                       bool nesterov);
/* torch.optim.AdamW semantics: w -= lr*wd*w; m, v moments; bias-corrected step. */
tt_optim *tt_optim_adamw(tt_params *p, float lr, float beta1, float beta2, float eps,
                         float weight_decay);
void tt_optim_step(tt_optim *o);
void tt_optim_zero_grad(tt_optim *o);  /* zero every parameter's gradient */
void tt_optim_free(tt_optim *o);

/* Scale all gradients so that their global L2 norm is at most max_norm; returns the
 * norm before clipping (computed in double). */
float tt_clip_grad_norm(tt_params *p, float max_norm);

typedef enum tt_lr_kind { TT_LR_CONSTANT = 0, TT_LR_WARMUP_COSINE = 1 } tt_lr_kind;
typedef struct tt_lr_schedule {
    tt_lr_kind kind;
    float base_lr, min_lr;
    int warmup_steps, total_steps;
} tt_lr_schedule;
/* lr at step (0-based): constant, or linear warm-up from base_lr/warmup to base_lr over
 * warmup_steps, then cosine decay to min_lr at total_steps (min_lr after). */
float tt_lr_at(const tt_lr_schedule *s, long step);

#endif

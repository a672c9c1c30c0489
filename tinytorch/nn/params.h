/* params.h - a model's parameters: a flat list of named, persistent tensors.
 *
 * Modules register their weights here under hierarchical names
 * ("layers.1.moe.experts.3.fc1.weight"); optimizers, gradient clipping, checkpoints
 * and parameter counts all work on the list, so no module needs to know about them.
 */
#ifndef TT_PARAMS_H
#define TT_PARAMS_H

#include "../tensor.h"

typedef struct tt_params {
    tt_tensor **t;  /* registered tensors, in registration order */
    int n, cap;
} tt_params;

/* Create a zero-filled parameter [shape] named printf-style, requiring grad, and
 * register it. The list owns it (tt_params_free frees it). */
tt_tensor *tt_param_new(tt_params *p, int ndim, const int *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Register an existing persistent tensor (the list takes ownership). */
void tt_params_add(tt_params *p, tt_tensor *t);
tt_tensor *tt_params_find(const tt_params *p, const char *name);   /* NULL if absent */
size_t tt_params_numel(const tt_params *p);                        /* total elements */
void tt_params_zero_grad(tt_params *p);
void tt_params_grad_to_none(tt_params *p);                         /* tt_grad_to_none */
void tt_params_free(tt_params *p);                                 /* frees tensors  */

/* Join a prefix and a name with a dot: tt_name_join(buf, "layers.1", "attn") ->
 * "layers.1.attn" (or just "attn" when prefix is "" or NULL). Returns buf. */
#define TT_PATH_LEN 64
char *tt_name_join(char *buf, const char *prefix, const char *name);

#endif

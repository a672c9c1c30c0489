/* checkpoint.h - save and resume training: one safetensors file with everything.
 *
 * Contents of the file (written atomically, see safetensors.h):
 *   tensors   every model parameter under its name ("layers.0.attn.wq.weight", ...)
 *             and every optimizer state tensor under its name ("optim.exp_avg.<param>")
 *   metadata  "format": "tinytorch-checkpoint-1"
 *             "step":   the caller's training step, decimal
 *             "rng":    the global RNG (tt_rng_global) as JSON with decimal strings:
 *                       {"state": "<u64>", "has_spare": "0|1", "spare": "<%.17g>"}
 *             "optim":  (with an optimizer) JSON: {"kind": "sgd"|"adamw", "lr": ..,
 *                       "momentum": .., "nesterov": true|false, "beta1": .., "beta2": ..,
 *                       "eps": .., "weight_decay": .., "step": <optimizer steps>};
 *                       floats printed with 17 digits, so they read back exactly
 *             "config": (optional) the caller's JSON text, e.g. the model config
 *             plus the caller's extra key/value pairs (not one of the names above).
 *
 * Loading restores the parameters, the optimizer state and settings (kind must match;
 * lr, momentum, betas, eps, weight decay and the optimizer step count are taken from
 * the file: set o->lr afterwards to change it), the step and the global RNG, so that
 * training N steps straight gives bit-for-bit the same numbers as K steps, save, load
 * (in a fresh process), N - K steps. Everything is validated before anything is
 * copied: on any error the model, the optimizer, the RNG and *step are untouched.
 */
#ifndef TT_CHECKPOINT_H
#define TT_CHECKPOINT_H

#include "../optim/optim.h"
#include "safetensors.h"

#define TT_CHECKPOINT_FORMAT "tinytorch-checkpoint-1"

/* Save model (all parameters, with or without requires_grad), opt (may be NULL), step,
 * config_json (may be NULL; must be valid JSON) and n_extra extra metadata pairs.
 * Errors: TT_ERR_ARG (reserved extra key, invalid config JSON, a parameter named
 * "optim.*", duplicate names), TT_ERR_IO (see tt_safetensors_save). */
tt_status tt_checkpoint_save(const char *path, const tt_params *model, const tt_optim *opt,
                             long step, const char *config_json, int n_extra,
                             const tt_kv *extra);

/* Load a checkpoint into model (strict: every parameter present with its shape and
 * dtype, and no model tensor in the file that the model lacks) and, when opt is not
 * NULL, into opt (same kind, every state tensor present, no unknown "optim.*" tensor).
 * step (may be NULL) receives the saved step. config_json (may be NULL) receives a
 * malloc'd copy of the saved config, or NULL if there was none; free() it. raw_out (may
 * be NULL) receives the whole file (tensors and metadata, e.g. the extra pairs); free it
 * with tt_safetensors_free. Errors: TT_ERR_IO, TT_ERR_FORMAT (not a valid checkpoint),
 * TT_ERR_MISMATCH (does not fit the model or optimizer); the message names the file. */
tt_status tt_checkpoint_load(const char *path, tt_params *model, tt_optim *opt, long *step,
                             char **config_json, tt_safetensors *raw_out);

#endif

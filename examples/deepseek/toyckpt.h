/* toyckpt.h - what train_toy adds to a tinytorch checkpoint, shared with generate.
 *
 * tt_checkpoint_save/load (io/checkpoint.h) store the parameters, the optimizer state,
 * the step, the RNG and the model config. train_toy adds string metadata:
 *   "tt.program"  "train_toy"
 *   "train.*"     the run's settings (steps, batch, seq, lr, ...), so --resume needs no flags;
 *                 "train.preset" is "seed" (the seed's tt_dsv3, the default when absent) or
 *                 "v3" (the faithful tt_v3): it says how to read the "config" metadata
 *   "data.*"      kind ("synthetic" | "bytes"), seed, source, bytes, fnv1a: the data and
 *                 its position (the sampler is a pure function of seed and step)
 *   "tt.checksum" FNV-1a over every tensor's name and bytes (order-independent), so a
 *                 flipped bit anywhere in the tensor data is reported, not trained on.
 */
#ifndef DS_TOYCKPT_H
#define DS_TOYCKPT_H

#include "io/checkpoint.h"
#include "nn/deepseek.h"
#include "nn/v3.h"

#include <stdint.h>

#define TOYCKPT_PROGRAM "train_toy"

uint64_t toyckpt_fnv1a(const void *bytes, size_t n, uint64_t h);
#define TOYCKPT_FNV_INIT 0xcbf29ce484222325ull
/* Sum over tensors of FNV-1a(name, data bytes): independent of the tensor order. */
uint64_t toyckpt_checksum(int n, tt_tensor *const *tensors);

typedef enum toyckpt_preset { TOYCKPT_SEED = 0, TOYCKPT_V3 = 1 } toyckpt_preset;
extern const char *const toyckpt_preset_names[2]; /* "seed", "v3" */

/* The model a checkpoint holds: which kind, and its config (only that one is filled). */
typedef struct toyckpt_model {
    toyckpt_preset preset;
    tt_dsv3_config seed;
    tt_v3_config v3;
} toyckpt_model;

/* Read and validate a checkpoint's header and metadata (tt_safetensors_load) and its
 * model config. Returns 0, or -1 with a message in err naming the file. On success the
 * caller owns *st (tt_safetensors_free). */
int toyckpt_open(const char *path, tt_safetensors *st, toyckpt_model *model, char *err,
                 size_t errlen);
/* Compare the stored checksum with the tensors actually in the file: 0, or -1 + err. */
int toyckpt_verify(const char *path, const tt_safetensors *st, char *err, size_t errlen);
/* A required metadata value: the string, or NULL with "corrupt checkpoint ..." in err. */
const char *toyckpt_meta(const char *path, const tt_safetensors *st, const char *key, char *err,
                         size_t errlen);

#endif

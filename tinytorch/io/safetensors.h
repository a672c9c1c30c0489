/* safetensors.h - read and write the safetensors format (huggingface/safetensors):
 *   8 bytes little-endian u64 N | N bytes JSON header | raw tensor bytes
 * header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *          "__metadata__": {"key": "value", ...}}
 * Offsets are relative to the start of the byte buffer after the header.
 *
 * Writers are atomic: they write "<path>.tmp.<pid>", fsync, then rename over <path>, so a
 * crash leaves either the old file or the new one; a save also removes the "<path>.tmp.*"
 * files of earlier saves whose process is gone (killed mid-save). Readers validate everything (sizes,
 * offsets, overlaps, dtypes, JSON) and return an error, never crash.
 */
#ifndef TT_SAFETENSORS_H
#define TT_SAFETENSORS_H

#include "../error.h"
#include "../nn/params.h"

/* key/value string pairs for "__metadata__" */
typedef struct tt_kv {
    const char *key, *value;
} tt_kv;

/* Write n tensors (F32 or I32 by their dtype, under their names, which must be unique,
 * non-empty and not "__metadata__") and n_meta string pairs as "__metadata__" (keys
 * unique, valid UTF-8). The header is padded with spaces to a multiple of 8 bytes.
 * Errors: TT_ERR_ARG for bad arguments; TT_ERR_IO "cannot write '<path>' (<step>
 * failed): <strerror>" after removing the temporary and leaving any old <path> intact. */
tt_status tt_safetensors_save(const char *path, int n, tt_tensor *const *tensors, int n_meta,
                              const tt_kv *meta);

/* A loaded file: tensors are persistent copies owned by the struct. */
typedef struct tt_safetensors {
    int n;
    tt_tensor **tensors;      /* named */
    int n_meta;
    char **meta_keys, **meta_values;
} tt_safetensors;
/* Read and validate a file (TT_ERR_IO if it cannot be read, TT_ERR_FORMAT naming the
 * problem otherwise: header length <= 100 MB and within the file, JSON header, dtype
 * F32/I32 only ("unsupported dtype"), <= 4 non-negative dims, data_offsets inside the
 * data and matching the shape, no overlaps, no duplicate names, string metadata). On
 * error *out is left empty (safe to free). Loaded tensors do not require grad. */
tt_status tt_safetensors_load(const char *path, tt_safetensors *out);
/* The same on bytes[0..len) already in memory (messages lack the file name). */
tt_status tt_safetensors_parse(const unsigned char *bytes, size_t len, tt_safetensors *out);
void tt_safetensors_free(tt_safetensors *st);  /* frees the contents, zeroes *st */
tt_tensor *tt_safetensors_get(const tt_safetensors *st, const char *name);
const char *tt_safetensors_meta(const tt_safetensors *st, const char *key);

/* Save / load a whole parameter list by name. Load checks that every parameter is
 * present with the same shape and dtype (TT_ERR_MISMATCH naming it otherwise:
 * "missing tensor 'layers.0.attn.q_proj.weight'", "tensor 'fc.weight': shape [3, 2] in
 * the file, but the parameter has shape [2, 3]"); with strict, extra tensors in the file
 * are an error too. Nothing is copied unless every check passes.
 *
 * prefix (NULL or "" for none): parameter "x" is read from the file tensor "prefix.x";
 * the strict check then only looks at file tensors whose names start with "prefix.". */
tt_status tt_params_save(const tt_params *p, const char *path, int n_meta, const tt_kv *meta);
tt_status tt_params_load(tt_params *p, const char *path, bool strict);
tt_status tt_params_copy_from(tt_params *p, const tt_safetensors *st, const char *prefix,
                              bool strict);
/* The checks of tt_params_copy_from without copying anything. */
tt_status tt_params_check(const tt_params *p, const tt_safetensors *st, const char *prefix,
                          bool strict);

#endif

/* toyckpt.c - train_toy's checkpoint metadata: config, checksum, required keys. */
#include "toyckpt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const toyckpt_preset_names[2] = {"seed", "v3"};

uint64_t toyckpt_fnv1a(const void *bytes, size_t n, uint64_t h) {
    const unsigned char *p = bytes;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t toyckpt_checksum(int n, tt_tensor *const *tensors) {
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        const tt_tensor *t = tensors[i];
        uint64_t h = toyckpt_fnv1a(t->name, strlen(t->name) + 1, TOYCKPT_FNV_INIT);
        sum += toyckpt_fnv1a(t->data, t->size * 4, h); /* F32 and I32: 4 bytes each */
    }
    return sum;
}

const char *toyckpt_meta(const char *path, const tt_safetensors *st, const char *key, char *err,
                         size_t errlen) {
    const char *v = tt_safetensors_meta(st, key);
    if (!v)
        snprintf(err, errlen, "'%s' lacks the metadata '%s': not a complete train_toy checkpoint",
                 path, key);
    return v;
}

int toyckpt_open(const char *path, tt_safetensors *st, toyckpt_model *model, char *err,
                 size_t errlen) {
    memset(st, 0, sizeof *st);
    if (tt_safetensors_load(path, st) != TT_OK) {
        snprintf(err, errlen, "cannot read checkpoint: %s", tt_last_error());
        return -1;
    }
    const char *format = tt_safetensors_meta(st, "format");
    const char *program = tt_safetensors_meta(st, "tt.program");
    const char *config = tt_safetensors_meta(st, "config");
    if (!format || strcmp(format, TT_CHECKPOINT_FORMAT) != 0) {
        snprintf(err, errlen, "'%s' is a safetensors file but not a tinytorch checkpoint "
                              "(metadata 'format' is %s%s%s)",
                 path, format ? "'" : "missing", format ? format : "", format ? "'" : "");
        goto fail;
    }
    if (!program || strcmp(program, TOYCKPT_PROGRAM) != 0 || !config) {
        snprintf(err, errlen, "'%s' was not written by train_toy (no model config / program "
                              "metadata)", path);
        goto fail;
    }
    const char *preset = tt_safetensors_meta(st, "train.preset");
    memset(model, 0, sizeof *model);
    if (!preset || !strcmp(preset, toyckpt_preset_names[TOYCKPT_SEED])) {
        model->preset = TOYCKPT_SEED;
        if (tt_dsv3_config_from_json(config, &model->seed) != TT_OK) {
            snprintf(err, errlen, "'%s' has an invalid model config: %s", path, tt_last_error());
            goto fail;
        }
    } else if (!strcmp(preset, toyckpt_preset_names[TOYCKPT_V3])) {
        model->preset = TOYCKPT_V3;
        if (tt_v3_config_from_json(config, strlen(config), &model->v3) != TT_OK) {
            snprintf(err, errlen, "'%s' has an invalid v3 model config: %s", path,
                     tt_last_error());
            goto fail;
        }
    } else {
        snprintf(err, errlen, "'%s' is corrupt: unknown train.preset '%.40s' (seed or v3)", path,
                 preset);
        goto fail;
    }
    return 0;
fail:
    tt_safetensors_free(st);
    return -1;
}

int toyckpt_verify(const char *path, const tt_safetensors *st, char *err, size_t errlen) {
    const char *stored = toyckpt_meta(path, st, "tt.checksum", err, errlen);
    if (!stored) return -1;
    char actual[32];
    snprintf(actual, sizeof actual, "%016" PRIx64, toyckpt_checksum(st->n, st->tensors));
    if (strcmp(stored, actual) != 0) {
        snprintf(err, errlen, "'%s' is corrupt: the tensor data do not match the checksum "
                              "(stored %.20s, computed %s)", path, stored, actual);
        return -1;
    }
    return 0;
}

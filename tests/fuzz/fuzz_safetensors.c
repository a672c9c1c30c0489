/* fuzz_safetensors.c - libFuzzer harness for the safetensors reader
 * (tt_safetensors_parse, the function tt_safetensors_load runs on a file's bytes).
 *
 * Input: a whole file. Hostile files must give TT_ERR_FORMAT with a message, never a
 * crash, an out-of-bounds read or a giant allocation. A file that parses must be
 * self-consistent (named tensors of sane shapes, findable by name) and must check
 * cleanly against a small parameter list without crashing (tt_params_check). */
#include "fuzz.h"

#include "error.h"
#include "io/safetensors.h"
#include "nn/params.h"

#include <string.h>

static tt_params *fuzz_params(void) {
    static tt_params p;
    static int ready = 0;
    if (!ready) {
        tt_param_new(&p, 2, (int[]){2, 3}, "fc.weight");
        tt_param_new(&p, 1, (int[]){3}, "fc.bias");
        ready = 1;
    }
    return &p;
}

int tt_fuzz_safetensors(const uint8_t *data, size_t size) {
    unsigned char *bytes = malloc(size ? size : 1);
    if (!bytes) return 0;
    if (size) memcpy(bytes, data, size);
    tt_safetensors st;
    tt_status s = tt_safetensors_parse(bytes, size, &st);
    if (s == TT_OK) {
        TT_FUZZ_ASSERT(st.n >= 0 && st.n_meta >= 0);
        for (int i = 0; i < st.n; i++) {
            tt_tensor *t = st.tensors[i];
            TT_FUZZ_ASSERT(t && t->name[0]);
            TT_FUZZ_ASSERT(t->ndim >= 0 && t->ndim <= TT_MAX_DIMS);
            size_t n = 1;
            for (int d = 0; d < t->ndim; d++) {
                TT_FUZZ_ASSERT(t->shape[d] >= 0);
                n *= (size_t)t->shape[d];
            }
            TT_FUZZ_ASSERT(n == t->size);
            TT_FUZZ_ASSERT(t->size * 4 <= size);
            TT_FUZZ_ASSERT(t->dtype == TT_F32 || t->dtype == TT_I32);
            TT_FUZZ_ASSERT(!t->requires_grad);
            TT_FUZZ_ASSERT(tt_safetensors_get(&st, t->name) == t);
            /* touch every element (ASan: the copy is as large as the shape says) */
            volatile float sink = 0;
            for (size_t k = 0; k < t->size; k++) sink = t->data[k];
            (void)sink;
        }
        for (int i = 0; i < st.n_meta; i++) {
            TT_FUZZ_ASSERT(st.meta_keys[i] && st.meta_values[i]);
            TT_FUZZ_ASSERT(tt_safetensors_meta(&st, st.meta_keys[i]) != NULL);
        }
        (void)tt_params_check(fuzz_params(), &st, NULL, true);
        (void)tt_params_check(fuzz_params(), &st, "model", false);
    } else {
        TT_FUZZ_ASSERT(s == TT_ERR_FORMAT);
        TT_FUZZ_ASSERT(tt_last_error()[0] != 0);
        TT_FUZZ_ASSERT(st.n == 0 && st.tensors == NULL); /* left empty on error */
    }
    tt_safetensors_free(&st);
    free(bytes);
    return 0;
}

TT_FUZZ_ENTRY(tt_fuzz_safetensors)

/* fuzz_config.c - libFuzzer harness for the model config reader
 * (tt_dsv3_config_from_json, what --config FILE and checkpoints go through).
 *
 * Input: the text of a config file (cut at the first NUL, as reading it as a C string
 * would). Must return TT_OK with a config that passes tt_dsv3_config_check and survives
 * a to_json / from_json round trip unchanged, or an error status with a message. */
#include "fuzz.h"

#include "error.h"
#include "nn/deepseek.h"

#include <string.h>

int tt_fuzz_config(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    text[size] = 0;
    tt_dsv3_config c;
    memset(&c, 0xAB, sizeof c);
    tt_dsv3_config before = c;
    tt_status s = tt_dsv3_config_from_json(text, &c);
    if (s == TT_OK) {
        TT_FUZZ_ASSERT(tt_dsv3_config_check(&c) == TT_OK);
        int need = tt_dsv3_config_to_json(&c, NULL, 0);
        TT_FUZZ_ASSERT(need > 0);
        char *json = malloc((size_t)need + 1);
        TT_FUZZ_ASSERT(tt_dsv3_config_to_json(&c, json, (size_t)need + 1) == need);
        tt_dsv3_config back;
        TT_FUZZ_ASSERT(tt_dsv3_config_from_json(json, &back) == TT_OK);
        /* every integer field identical; floats printed with 9 digits read back exactly */
        TT_FUZZ_ASSERT(memcmp(&c, &back, sizeof c) == 0);
        free(json);
    } else {
        TT_FUZZ_ASSERT(s == TT_ERR_FORMAT || s == TT_ERR_ARG);
        TT_FUZZ_ASSERT(tt_last_error()[0] != 0);
        TT_FUZZ_ASSERT(memcmp(&c, &before, sizeof c) == 0); /* untouched on error */
    }
    free(text);
    return 0;
}

TT_FUZZ_ENTRY(tt_fuzz_config)

/* json.h - a small, strict JSON reader (RFC 8259) for safetensors headers and configs.
 * Parses into a tree allocated in one block; depth and size limited; never crashes on
 * malformed input (fuzzed). */
#ifndef TT_JSON_H
#define TT_JSON_H

#include <stddef.h>
#include <stdbool.h>

typedef enum tt_json_type {
    TT_JSON_NULL, TT_JSON_BOOL, TT_JSON_NUMBER, TT_JSON_STRING, TT_JSON_ARRAY, TT_JSON_OBJECT
} tt_json_type;

typedef struct tt_json {
    tt_json_type type;
    bool boolean;
    double number;
    char *string;            /* decoded UTF-8, NUL-terminated (strings; object keys)  */
    size_t len;              /* string length, or number of children                 */
    struct tt_json *child;   /* first child (array elements / object members)        */
    struct tt_json *next;    /* next sibling                                         */
    char *key;               /* member name when inside an object                    */
} tt_json;

/* Parse text[0..len) (need not be NUL-terminated; nothing past len is read). Returns
 * NULL on error with "JSON error at byte <offset>: <reason>" in err (errlen bytes; err
 * may be NULL). The whole tree is one allocation owned by the root: free the root with
 * tt_json_free (never a child). Strict RFC 8259: depth <= 64, valid UTF-8, paired
 * surrogates, finite numbers; \u0000 is rejected; duplicate keys are kept. */
tt_json *tt_json_parse(const char *text, size_t len, char *err, size_t errlen);
void tt_json_free(tt_json *j);
const tt_json *tt_json_get(const tt_json *obj, const char *key); /* first match; NULL if absent */

#endif

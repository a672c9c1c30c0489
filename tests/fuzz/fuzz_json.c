/* fuzz_json.c - libFuzzer harness for the JSON reader (tinytorch/io/json.h).
 *
 * Input: any bytes, given to tt_json_parse as text[0..size). The parser must return a
 * tree or NULL with a message, read nothing past size (ASan catches it: the bytes are
 * copied into an exactly-sized heap block), and the tree must be consistent: child
 * counts equal len, strings NUL-terminated at len with no earlier NUL (\u0000 is
 * rejected), members of objects carry keys, finite numbers. */
#include "fuzz.h"

#include "io/json.h"

#include <math.h>
#include <string.h>

static size_t json_walk(const tt_json *j, int depth, int in_object) {
    TT_FUZZ_ASSERT(depth <= 66);
    size_t nodes = 1;
    if (in_object) TT_FUZZ_ASSERT(j->key != NULL);
    switch (j->type) {
    case TT_JSON_NULL:
    case TT_JSON_BOOL: break;
    case TT_JSON_NUMBER: TT_FUZZ_ASSERT(isfinite(j->number)); break;
    case TT_JSON_STRING:
        TT_FUZZ_ASSERT(j->string != NULL);
        TT_FUZZ_ASSERT(strlen(j->string) == j->len);
        break;
    case TT_JSON_ARRAY:
    case TT_JSON_OBJECT: {
        size_t n = 0;
        for (const tt_json *c = j->child; c; c = c->next, n++)
            nodes += json_walk(c, depth + 1, j->type == TT_JSON_OBJECT);
        TT_FUZZ_ASSERT(n == j->len);
        if (j->type == TT_JSON_OBJECT && j->child) {
            /* the first member is found by its key */
            const tt_json *first = tt_json_get(j, j->child->key);
            TT_FUZZ_ASSERT(first == j->child);
        }
        break;
    }
    default: TT_FUZZ_ASSERT(!"unknown JSON type");
    }
    return nodes;
}

int tt_fuzz_json(const uint8_t *data, size_t size) {
    char *text = malloc(size ? size : 1); /* exactly size bytes: no NUL after them */
    if (!text) return 0;
    if (size) memcpy(text, data, size);
    char err[256];
    err[0] = 0;
    tt_json *root = tt_json_parse(text, size, err, sizeof err);
    if (root) {
        json_walk(root, 0, 0);
        (void)tt_json_get(root, "dim");
        tt_json_free(root);
    } else {
        TT_FUZZ_ASSERT(strncmp(err, "JSON error at byte ", 19) == 0);
    }
    /* the same text with errlen 0 and NULL err must not write anything */
    tt_json *again = tt_json_parse(text, size, NULL, 0);
    TT_FUZZ_ASSERT((again != NULL) == (root != NULL));
    tt_json_free(again);
    free(text);
    return 0;
}

TT_FUZZ_ENTRY(tt_fuzz_json)

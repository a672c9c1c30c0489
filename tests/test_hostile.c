/* test_hostile.c - the bad-input catalogue: hostile bytes for every reader of outside
 * input (JSON, safetensors, parameter lists, the model config) with the exact status and
 * message each gets, and failed saves that must leave the old file and no partial file.
 *
 * Each table row is one input and its expected outcome: TT_OK, or an error status and a
 * substring of tt_last_error() (for tt_json_parse, of its err text; its status is
 * TT_ERR_FORMAT by this table's convention). Safetensors rows are run twice: on the
 * bytes in memory (tt_safetensors_parse) and from a file (tt_safetensors_load), which
 * must agree. A new hostile input found anywhere (fuzzing, a bug report) gets a row. */
#include "tt_test.h"

#include <errno.h>
#include <limits.h>
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- temporary files ------------------------------------------------------------------- */
static char g_dir[256];

static void make_dir(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/tt_hostile.%ld.XXXXXX", (long)getpid());
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void write_file(const char *path, const void *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    if (len) ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}


/* Names in dir other than the expected ones (e.g. a left-over "<path>.tmp.<pid>"). */
static int count_entries(const char *dir, const char *show_prefix) {
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        printf("  %s%s/%s\n", show_prefix, dir, e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* ---- the table ----------------------------------------------------------------------------- */
typedef enum kind { JSON, SAFETENSORS, PARAMS, CONFIG } kind;

#define NO_OVERRIDE LLONG_MIN

typedef struct row {
    const char *what;    /* the hostile property, for the log                            */
    kind kind;
    const char *text;    /* JSON / config text; safetensors: the header JSON             */
    size_t text_len;     /* 0: strlen(text)                                              */
    int data_bytes;      /* safetensors: bytes of tensor data after the header (0x3f)   */
    long long hlen;      /* safetensors: the 8-byte header length (NO_OVERRIDE: exact)   */
    long long cut;       /* safetensors: keep the first cut bytes; < 0: drop -cut at the end */
    tt_status want;
    const char *msg;     /* substring of the message (NULL for TT_OK)                   */
} row;

#define ST(what, header, data, want, msg) {what, SAFETENSORS, header, 0, data, NO_OVERRIDE, NO_OVERRIDE, want, msg}
#define ST_RAW(what, header, data, hlen, cut, want, msg) {what, SAFETENSORS, header, 0, data, hlen, cut, want, msg}
#define PARAMS(what, header, data, want, msg) {what, PARAMS, header, 0, data, NO_OVERRIDE, NO_OVERRIDE, want, msg}
#define JS(what, text, want, msg) {what, JSON, text, 0, 0, 0, 0, want, msg}
#define JS_N(what, text, len, want, msg) {what, JSON, text, len, 0, 0, 0, want, msg}
#define CFG(what, text, want, msg) {what, CONFIG, text, 0, 0, 0, 0, want, msg}

#define OPEN8 "[[[[[[[["
#define OPEN64 OPEN8 OPEN8 OPEN8 OPEN8 OPEN8 OPEN8 OPEN8 OPEN8
#define CLOSE8 "]]]]]]]]"
#define CLOSE64 CLOSE8 CLOSE8 CLOSE8 CLOSE8 CLOSE8 CLOSE8 CLOSE8 CLOSE8
#define W23 "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"
#define B3 "\"fc.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}"
#define TENSOR(name, dtype, shape, offs) "{\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offs "}}"

static const row g_rows[] = {
    /* ---- JSON (tt_json_parse) ---- */
    JS("valid", "{\"a\": [1, 2.5e3, true, null, \"\\u00e9\"]}", TT_OK, NULL),
    JS("empty text", "", TT_ERR_FORMAT, "JSON error at byte 0: unexpected end of input"),
    JS("only whitespace", "  \n", TT_ERR_FORMAT, "JSON error at byte 3: unexpected end of input"),
    JS("truncated object", "{\"a\": 1", TT_ERR_FORMAT, "JSON error at byte 0: unterminated object"),
    JS("truncated string", "[\"abc", TT_ERR_FORMAT, "JSON error at byte 1: unterminated string"),
    JS("trailing comma", "[1, 2,]", TT_ERR_FORMAT, "trailing comma"),
    JS("trailing garbage", "{} x", TT_ERR_FORMAT, "trailing characters after the JSON value"),
    JS("single quotes", "{'a': 1}", TT_ERR_FORMAT, "expected a string key"),
    JS("missing colon", "{\"a\" 1}", TT_ERR_FORMAT, "expected ':' after key"),
    JS("bare word", "nul", TT_ERR_FORMAT, "invalid literal (expected 'null')"),
    JS("NaN is not JSON", "[NaN]", TT_ERR_FORMAT, "unexpected character"),
    JS("leading zero", "[012]", TT_ERR_FORMAT, "invalid number (leading zero)"),
    JS("bare minus", "-", TT_ERR_FORMAT, "invalid number"),
    JS("empty exponent", "1e", TT_ERR_FORMAT, "digit expected in exponent"),
    JS("number overflows a double", "1e400", TT_ERR_FORMAT, "number out of range"),
    JS("raw newline in string", "\"a\nb\"", TT_ERR_FORMAT, "control character 0x0a in string"),
    JS("bad escape", "\"\\x41\"", TT_ERR_FORMAT, "invalid escape '\\x'"),
    JS("short \\u escape", "\"\\u12\"", TT_ERR_FORMAT, "\\u escape"),
    JS("NUL escape", "\"a\\u0000b\"", TT_ERR_FORMAT, "\\u0000 in a string is not supported"),
    JS("lone high surrogate", "\"\\ud800\"", TT_ERR_FORMAT, "not followed by a low surrogate"),
    JS("lone low surrogate", "\"\\udc00\"", TT_ERR_FORMAT, "unpaired low surrogate"),
    JS("invalid UTF-8 byte", "\"\xff\"", TT_ERR_FORMAT, "invalid UTF-8 in string"),
    JS("overlong UTF-8", "\"\xc0\xaf\"", TT_ERR_FORMAT, "invalid UTF-8 in string"),
    JS("UTF-8 surrogate", "\"\xed\xa0\x80\"", TT_ERR_FORMAT, "invalid UTF-8 in string"),
    JS_N("NUL byte inside", "{\"a\"\0: 1}", 9, TT_ERR_FORMAT, "expected ':' after key"),
    JS_N("text stops at len", "[1, 2]", 4, TT_ERR_FORMAT, "JSON error at byte 4: unexpected end of input"),
    JS("64 levels deep", OPEN64 CLOSE64, TT_OK, NULL),
    JS("65 levels deep", "[" OPEN64 CLOSE64 "]", TT_ERR_FORMAT, "JSON error at byte 64: nesting deeper than 64"),
    JS("65 levels, never closed", "[" OPEN64, TT_ERR_FORMAT, "nesting deeper than 64"),

    /* ---- safetensors (tt_safetensors_parse / _load) ---- */
    ST("valid", "{" W23 "," B3 "}", 36, TT_OK, NULL),
    ST("valid: scalar and empty tensors", "{\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]},"
       "\"e\":{\"dtype\":\"F32\",\"shape\":[0,7],\"data_offsets\":[4,4]},\"__metadata__\":{\"k\":\"v\"}}",
       4, TT_OK, NULL),
    ST("valid: no tensors", "{}", 0, TT_OK, NULL),
    ST_RAW("empty file", "", 0, 0, 0, TT_ERR_FORMAT, "file too short (0 bytes): no 8-byte header length"),
    ST_RAW("file shorter than the length field", "", 0, 0, 5, TT_ERR_FORMAT, "file too short (5 bytes)"),
    ST_RAW("header length past the end", "{}", 0, 1000, NO_OVERRIDE, TT_ERR_FORMAT,
           "header length 1000 larger than the file (10 bytes)"),
    ST_RAW("header length 2^64 - 1", "{}", 0, -1 /* all ones */, NO_OVERRIDE, TT_ERR_FORMAT,
           "header length 18446744073709551615 exceeds the 100 MB limit"),
    ST_RAW("header length 0", "", 0, 0, NO_OVERRIDE, TT_ERR_FORMAT, "header is not valid JSON: JSON error at byte 0: unexpected end of input"),
    ST_RAW("cut inside the header", "{" W23 "," B3 "}", 36, NO_OVERRIDE, 40, TT_ERR_FORMAT,
           "larger than the file (40 bytes)"),
    ST_RAW("cut inside the data", "{" W23 "," B3 "}", 36, NO_OVERRIDE, -22, TT_ERR_FORMAT,
           "tensor 'fc.weight': data_offsets [0, 24] past the end of the data (14 bytes)"),
    ST("header is not JSON", "{\"w\": ", 0, TT_ERR_FORMAT, "header is not valid JSON: JSON error at byte 6: unexpected end of input"),
    ST("header is an array", "[1, 2]", 0, TT_ERR_FORMAT, "header is not a JSON object"),
    ST("entry is not an object", "{\"w\": 3}", 0, TT_ERR_FORMAT, "tensor 'w': entry is not an object"),
    ST("empty tensor name", TENSOR("", "F32", "[1]", "[0,4]"), 4, TT_ERR_FORMAT, "empty tensor name"),
    ST("tensor name of 64 bytes", TENSOR("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "F32", "[1]", "[0,4]"),
       4, TT_ERR_FORMAT, "too long (max 63 bytes)"),
    ST("duplicate tensor name", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, TT_ERR_FORMAT, "duplicate tensor name 'w'"),
    ST("missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TT_ERR_FORMAT, "tensor 'w': missing or non-string \"dtype\""),
    ST("dtype F16", TENSOR("w", "F16", "[2]", "[0,4]"), 4, TT_ERR_FORMAT, "tensor 'w': unsupported dtype 'F16' (only F32 and I32)"),
    ST("dtype BF16", TENSOR("w", "BF16", "[2]", "[0,4]"), 4, TT_ERR_FORMAT, "unsupported dtype 'BF16'"),
    ST("dtype I64", TENSOR("w", "I64", "[1]", "[0,8]"), 8, TT_ERR_FORMAT, "unsupported dtype 'I64'"),
    ST("dtype in lower case", TENSOR("w", "f32", "[1]", "[0,4]"), 4, TT_ERR_FORMAT, "unsupported dtype 'f32'"),
    ST("missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, TT_ERR_FORMAT, "missing or non-array \"shape\""),
    ST("negative dimension", TENSOR("w", "F32", "[-1,2]", "[0,8]"), 8, TT_ERR_FORMAT, "tensor 'w': negative dimension in shape"),
    ST("fractional dimension", TENSOR("w", "F32", "[1.5]", "[0,4]"), 4, TT_ERR_FORMAT, "shape entries must be integers in [0, 2^31)"),
    ST("dimension 2^31", TENSOR("w", "F32", "[2147483648]", "[0,4]"), 4, TT_ERR_FORMAT, "dimension 2147483648 too large"),
    ST("5 dimensions", TENSOR("w", "F32", "[1,1,1,1,1]", "[0,4]"), 4, TT_ERR_FORMAT, "5 dimensions (at most 4 supported)"),
    ST("element count overflows", TENSOR("w", "F32", "[2147483647,2147483647,2147483647,2147483647]", "[0,4]"),
       4, TT_ERR_FORMAT, "shape too large (element count overflows)"),
    ST("size overflows 64 bits once times 4", TENSOR("w", "F32", "[2147483647,2147483647,1073741824]", "[0,4]"),
       4, TT_ERR_FORMAT, "shape too large"),
    ST("huge shape, tiny data", TENSOR("w", "F32", "[65536,65536]", "[0,4]"), 4, TT_ERR_FORMAT,
       "data_offsets span 4 bytes but shape [65536, 65536] F32 needs 17179869184"),
    ST("offsets span less than the shape", TENSOR("w", "F32", "[2,3]", "[0,16]"), 24, TT_ERR_FORMAT,
       "data_offsets span 16 bytes but shape [2, 3] F32 needs 24"),
    ST("offsets out of order", TENSOR("w", "F32", "[1]", "[8,4]"), 8, TT_ERR_FORMAT, "data_offsets [8, 4] out of order"),
    ST("offsets past the data", TENSOR("w", "F32", "[250]", "[0,1000]"), 16, TT_ERR_FORMAT,
       "data_offsets [0, 1000] past the end of the data (16 bytes)"),
    ST("negative offset", TENSOR("w", "F32", "[1]", "[-4,0]"), 4, TT_ERR_FORMAT, "data_offsets must be non-negative integers"),
    ST("offset 2^64", TENSOR("w", "F32", "[1]", "[18446744073709551612,18446744073709551616]"), 4, TT_ERR_FORMAT,
       "data_offsets must be non-negative integers below 2^53"),
    ST("offsets not a pair", TENSOR("w", "F32", "[1]", "[0]"), 4, TT_ERR_FORMAT, "\"data_offsets\" must be [begin, end]"),
    ST("overlapping tensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, TT_ERR_FORMAT,
       "tensors 'a' and 'b' overlap (data_offsets [0, 16] and [8, 24])"),
    ST("gap between tensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, TT_ERR_FORMAT,
       "4 unused bytes between tensors 'a' and 'b'"),
    ST("data before the first tensor", TENSOR("w", "F32", "[1]", "[4,8]"), 8, TT_ERR_FORMAT,
       "4 unused bytes before tensor 'w'"),
    ST("data after the last tensor", TENSOR("w", "F32", "[1]", "[0,4]"), 12, TT_ERR_FORMAT,
       "8 bytes of data after the last tensor"),
    ST("metadata not an object", "{\"__metadata__\": [\"a\"]}", 0, TT_ERR_FORMAT, "\"__metadata__\" must be an object of strings"),
    ST("metadata value not a string", "{\"__metadata__\": {\"step\": 3}}", 0, TT_ERR_FORMAT,
       "metadata value for 'step' must be a string"),
    ST("duplicate metadata key", "{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", 0, TT_ERR_FORMAT, "duplicate metadata key 'k'"),
    ST("two metadata objects", "{\"__metadata__\": {}, \"__metadata__\": {}}", 0, TT_ERR_FORMAT, "duplicate \"__metadata__\""),
    ST("invalid UTF-8 in a name", "{\"\xc3\x28\": 1}", 0, TT_ERR_FORMAT, "invalid UTF-8 in string"),

    /* ---- a file that parses but does not fit the parameters fc.weight [2, 3], fc.bias [3] ---- */
    PARAMS("fits", "{" W23 "," B3 "}", 36, TT_OK, NULL),
    PARAMS("missing tensor", "{" W23 "}", 24, TT_ERR_MISMATCH, "missing tensor 'fc.bias'"),
    PARAMS("wrong dtype", "{" W23 ",\"fc.bias\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[24,36]}}", 36,
           TT_ERR_MISMATCH, "tensor 'fc.bias': dtype I32 in the file, parameter is F32"),
    PARAMS("transposed shape", "{\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}," B3 "}", 36,
           TT_ERR_MISMATCH, "tensor 'fc.weight': shape [3, 2] in the file, but the parameter has shape [2, 3]"),
    PARAMS("extra tensor (strict)", "{" W23 "," B3 ",\"fc.scale\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[36,40]}}",
           40, TT_ERR_MISMATCH, "unexpected tensor 'fc.scale' in the file (no such parameter; strict)"),

    /* ---- model config (tt_dsv3_config_from_json; toy defaults for absent keys) ---- */
    CFG("valid: defaults", "{}", TT_OK, NULL),
    CFG("valid: every key",
        "{\"vocab\": 256, \"dim\": 32, \"n_layers\": 1, \"n_heads\": 2, \"n_experts\": 8, \"top_k\": 8, "
        "\"expert_hidden\": 64, \"rank\": 8, \"max_seq\": 128, \"aux_alpha\": 0, \"noise_std\": 1}", TT_OK, NULL),
    CFG("empty text", "", TT_ERR_FORMAT, "dsv3 config: JSON error at byte 0: unexpected end of input"),
    CFG("truncated", "{\"dim\": 64", TT_ERR_FORMAT, "unterminated object"),
    CFG("not an object", "[64]", TT_ERR_FORMAT, "dsv3 config: the JSON text is not an object"),
    CFG("unknown key", "{\"hidden\": 64}", TT_ERR_FORMAT, "dsv3 config: unknown key 'hidden'"),
    CFG("model too large to allocate", "{\"vocab\": 2147483647, \"dim\": 2147483644, \"n_heads\": 4}",
        TT_ERR_ARG, "parameters exceed the limit of 1e+09"),
    CFG("many experts", "{\"n_experts\": 100000, \"expert_hidden\": 100000}", TT_ERR_ARG,
        "parameters exceed the limit"),
    CFG("string for a number", "{\"dim\": \"64\"}", TT_ERR_FORMAT, "dsv3 config: 'dim' must be a number"),
    CFG("null for a number", "{\"top_k\": null}", TT_ERR_FORMAT, "'top_k' must be a number"),
    CFG("fractional size", "{\"dim\": 64.5}", TT_ERR_FORMAT, "'dim' = 64.5 must be an integer"),
    CFG("size past int", "{\"vocab\": 3000000000}", TT_ERR_FORMAT, "'vocab' = 3e+09 must be an integer"),
    CFG("number past double", "{\"dim\": 1e999}", TT_ERR_FORMAT, "number out of range"),
    CFG("zero dim", "{\"dim\": 0}", TT_ERR_ARG, "dsv3 config: dim = 0 must be >= 1"),
    CFG("negative layers", "{\"n_layers\": -2}", TT_ERR_ARG, "n_layers = -2 must be >= 1"),
    CFG("zero heads", "{\"n_heads\": 0}", TT_ERR_ARG, "n_heads = 0 must be >= 1"),
    CFG("zero experts", "{\"n_experts\": 0}", TT_ERR_ARG, "n_experts = 0 must be >= 1"),
    CFG("negative expert hidden", "{\"expert_hidden\": -256}", TT_ERR_ARG, "expert_hidden = -256 must be >= 1"),
    CFG("zero rank", "{\"rank\": 0}", TT_ERR_ARG, "rank = 0 must be >= 1"),
    CFG("zero max_seq", "{\"max_seq\": 0}", TT_ERR_ARG, "max_seq = 0 must be >= 1"),
    CFG("vocab of one", "{\"vocab\": 1}", TT_ERR_ARG, "vocab = 1 must be >= 2"),
    CFG("top_k above n_experts", "{\"n_experts\": 4, \"top_k\": 5}", TT_ERR_ARG, "top_k = 5 must be in [1, n_experts = 4]"),
    CFG("top_k zero", "{\"top_k\": 0}", TT_ERR_ARG, "top_k = 0 must be in [1, n_experts = 4]"),
    CFG("heads not dividing dim", "{\"dim\": 64, \"n_heads\": 5}", TT_ERR_ARG, "n_heads = 5 does not divide dim = 64"),
    CFG("negative aux_alpha", "{\"aux_alpha\": -0.5}", TT_ERR_ARG, "aux_alpha = -0.5 must be finite and >= 0"),
    CFG("noise_std overflows a float", "{\"noise_std\": 1e39}", TT_ERR_ARG, "noise_std = inf must be finite and >= 0"),
};
#define N_ROWS (int)(sizeof g_rows / sizeof g_rows[0])

/* The safetensors file of a row: le64 length | header | data (0x3f bytes), maybe cut. */
static unsigned char *st_bytes(const row *r, size_t *len) {
    size_t hl = strlen(r->text);
    size_t n = 8 + hl + (size_t)r->data_bytes;
    unsigned char *b = malloc(n + 1);
    uint64_t h = r->hlen == NO_OVERRIDE ? (uint64_t)hl : (uint64_t)r->hlen;
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(h >> (8 * k));
    memcpy(b + 8, r->text, hl);
    memset(b + 8 + hl, 0x3f, (size_t)r->data_bytes);
    if (r->cut != NO_OVERRIDE) n = r->cut >= 0 ? (size_t)r->cut : n - (size_t)(-r->cut);
    *len = n;
    return b;
}

static void expect(const row *r, const char *how, tt_status got, const char *msg) {
    printf("  %-40s %-6s -> %d %s\n", r->what, how, got, got == TT_OK ? "ok" : msg);
    ck_assert_msg(got == r->want, "%s (%s): status %d, expected %d; message: %s", r->what, how,
                  got, r->want, msg);
    if (r->want != TT_OK)
        ck_assert_msg(strstr(msg, r->msg) != NULL, "%s (%s): message \"%s\" lacks \"%s\"",
                      r->what, how, msg, r->msg);
}

static tt_params g_params;

static void run_row(const row *r) {
    switch (r->kind) {
    case JSON: {
        size_t n = r->text_len ? r->text_len : strlen(r->text);
        char *text = malloc(n ? n : 1); /* exactly n bytes: reading past them is an ASan error */
        memcpy(text, r->text, n);
        char err[256] = "";
        tt_json *j = tt_json_parse(text, n, err, sizeof err);
        expect(r, "json", j ? TT_OK : TT_ERR_FORMAT, err);
        tt_json_free(j);
        free(text);
        break;
    }
    case SAFETENSORS:
    case PARAMS: {
        size_t n;
        unsigned char *bytes = st_bytes(r, &n);
        unsigned char *exact = malloc(n ? n : 1);
        memcpy(exact, bytes, n);
        tt_safetensors st;
        tt_status s = tt_safetensors_parse(exact, n, &st);
        if (r->kind == PARAMS) {
            ck_assert_msg(s == TT_OK, "%s: %s", r->what, tt_last_error());
            s = tt_params_check(&g_params, &st, NULL, true);
        } else {
            ck_assert(s == TT_OK || (st.n == 0 && st.tensors == NULL && st.n_meta == 0));
        }
        expect(r, "memory", s, tt_last_error());
        tt_safetensors_free(&st);
        if (r->kind == SAFETENSORS) {
            char path[512];
            snprintf(path, sizeof path, "%s/row.safetensors", g_dir);
            write_file(path, bytes, n);
            s = tt_safetensors_load(path, &st);
            expect(r, "file", s, tt_last_error());
            if (s != TT_OK) {
                char named[600];
                snprintf(named, sizeof named, "'%s'", path);
                ck_assert_msg(strstr(tt_last_error(), named), "no file name in: %s", tt_last_error());
            }
            tt_safetensors_free(&st);
        }
        free(exact);
        free(bytes);
        break;
    }
    case CONFIG: {
        tt_dsv3_config c, before;
        memset(&c, 0x5a, sizeof c);
        before = c;
        tt_status s = tt_dsv3_config_from_json(r->text, &c);
        expect(r, "config", s, tt_last_error());
        if (s != TT_OK)
            ck_assert_msg(memcmp(&c, &before, sizeof c) == 0, "%s: config written on error", r->what);
        else
            ck_assert_int_eq(tt_dsv3_config_check(&c), TT_OK);
        break;
    }
    }
}

static void setup(void) {
    make_dir();
    memset(&g_params, 0, sizeof g_params);
    tt_param_new(&g_params, TT_SHAPE(2, 3), "fc.weight");
    tt_param_new(&g_params, TT_SHAPE(3), "fc.bias");
}

static void teardown(void) {
    tt_params_free(&g_params);
    remove_tree(g_dir);
}

START_TEST(test_hostile_row) { run_row(&g_rows[_i]); }
END_TEST

START_TEST(test_load_missing_and_not_regular) {
    tt_safetensors st;
    char path[512];
    snprintf(path, sizeof path, "%s/absent.safetensors", g_dir);
    ck_assert_int_eq(tt_safetensors_load(path, &st), TT_ERR_IO);
    ck_assert_msg(strstr(tt_last_error(), "No such file or directory"), "%s", tt_last_error());
    ck_assert_int_eq(tt_safetensors_load(g_dir, &st), TT_ERR_IO); /* a directory */
    ck_assert_msg(strstr(tt_last_error(), "cannot read"), "%s", tt_last_error());
    tt_safetensors_free(&st);
}
END_TEST

/* ---- failed saves: clear error, old file kept, no partial file -------------------------------- */
static tt_tensor *g_w;

static tt_status save_w(const char *path, float value) {
    for (size_t k = 0; k < g_w->size; k++) g_w->data[k] = value;
    tt_tensor *ts[1] = {g_w};
    return tt_safetensors_save(path, 1, ts, 0, NULL);
}

/* path holds the w saved with value `value` */
static void assert_file_holds(const char *path, float value) {
    tt_safetensors st;
    ck_assert_msg(tt_safetensors_load(path, &st) == TT_OK, "%s", tt_last_error());
    tt_tensor *t = tt_safetensors_get(&st, "w");
    ck_assert_ptr_nonnull(t);
    ck_assert_uint_eq(t->size, g_w->size);
    for (size_t k = 0; k < t->size; k++) ck_assert_float_eq(t->data[k], value);
    tt_safetensors_free(&st);
}

static void save_setup(void) {
    make_dir();
    g_w = tt_set_name(tt_zeros(TT_SHAPE(64, 64)), "w");
}

static void save_teardown(void) {
    tt_free(g_w);
    remove_tree(g_dir);
}

START_TEST(test_save_parent_is_a_file) {
    /* root ignores permissions, so force the failure with a parent that is not a dir */
    char parent[512], path[600];
    snprintf(parent, sizeof parent, "%s/regular", g_dir);
    write_file(parent, "x", 1);
    snprintf(path, sizeof path, "%s/model.safetensors", parent);
    ck_assert_int_eq(save_w(path, 1.0f), TT_ERR_IO);
    char want[700];
    snprintf(want, sizeof want, "cannot write '%s' (open failed): Not a directory", path);
    ck_assert_msg(strstr(tt_last_error(), want), "%s", tt_last_error());
    ck_assert_int_eq(count_entries(g_dir, ""), 1); /* only "regular" */
}
END_TEST

START_TEST(test_save_into_proc_fails_cleanly) {
    ck_assert_int_eq(save_w("/proc/tt_hostile.safetensors", 1.0f), TT_ERR_IO);
    ck_assert_msg(strstr(tt_last_error(), "cannot write '/proc/tt_hostile.safetensors' (open failed)"),
                  "%s", tt_last_error());
    ck_assert(access("/proc/tt_hostile.safetensors", F_OK) != 0);
}
END_TEST

START_TEST(test_save_over_a_directory_leaves_no_temporary) {
    /* the temporary is written completely, then rename onto a directory fails: the
     * temporary must be removed and the directory left alone */
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt", g_dir);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(save_w(path, 1.0f), TT_ERR_IO);
    ck_assert_msg(strstr(tt_last_error(), "(rename failed)"), "%s", tt_last_error());
    ck_assert_int_eq(count_entries(g_dir, "left: "), 1); /* only the directory */
    struct stat sb;
    ck_assert(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
}
END_TEST

/* A "full disk": RLIMIT_FSIZE makes writes past `bytes` fail with EFBIG (SIGXFSZ is
 * ignored so write() returns the error instead of killing the process). */
static struct rlimit g_old_fsize;
static void limit_file_size(rlim_t bytes) {
    signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &g_old_fsize), 0);
    struct rlimit r = {bytes, g_old_fsize.rlim_max};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &r), 0);
}
static void unlimit_file_size(void) {
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &g_old_fsize), 0);
    signal(SIGXFSZ, SIG_DFL);
}

START_TEST(test_full_disk_keeps_the_old_file) {
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
    ck_assert_int_eq(save_w(path, 1.0f), TT_OK);
    size_t n_old;
    unsigned char *old = tt_test_read_file(path, &n_old);
    limit_file_size(4096); /* the 16 KiB tensor does not fit */
    tt_status s = save_w(path, 2.0f);
    unlimit_file_size();
    ck_assert_int_eq(s, TT_ERR_IO);
    ck_assert_msg(strstr(tt_last_error(), "(write failed): File too large"), "%s", tt_last_error());
    size_t n_now;
    unsigned char *now = tt_test_read_file(path, &n_now);
    ck_assert(n_now == n_old && memcmp(now, old, n_old) == 0); /* bit for bit the old file */
    assert_file_holds(path, 1.0f);
    ck_assert_int_eq(count_entries(g_dir, "entry: "), 1); /* no temporary left */
    free(old);
    free(now);
}
END_TEST

START_TEST(test_full_disk_keeps_the_old_checkpoint) {
    tt_params p = {0};
    tt_tensor *w = tt_param_new(&p, TT_SHAPE(64, 64), "w");
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt.safetensors", g_dir);
    for (size_t k = 0; k < w->size; k++) w->data[k] = 1.0f;
    ck_assert_msg(tt_checkpoint_save(path, &p, NULL, 10, NULL, 0, NULL) == TT_OK, "%s", tt_last_error());
    for (size_t k = 0; k < w->size; k++) w->data[k] = 2.0f;
    limit_file_size(4096);
    tt_status s = tt_checkpoint_save(path, &p, NULL, 20, NULL, 0, NULL);
    unlimit_file_size();
    ck_assert_int_eq(s, TT_ERR_IO);
    ck_assert_msg(strstr(tt_last_error(), "File too large"), "%s", tt_last_error());
    long step = -1;
    ck_assert_msg(tt_checkpoint_load(path, &p, NULL, &step, NULL, NULL) == TT_OK, "%s", tt_last_error());
    ck_assert_int_eq(step, 10);
    ck_assert_float_eq(w->data[0], 1.0f);
    ck_assert_int_eq(count_entries(g_dir, "entry: "), 1);
    tt_params_free(&p);
}
END_TEST

static Suite *hostile_suite(void) {
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("catalogue");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_hostile_row, 0, N_ROWS);
    tcase_add_test(tc, test_load_missing_and_not_regular);
    suite_add_tcase(s, tc);
    TCase *ts = tcase_create("failed saves");
    tcase_add_checked_fixture(ts, save_setup, save_teardown);
    tcase_add_test(ts, test_save_parent_is_a_file);
    tcase_add_test(ts, test_save_into_proc_fails_cleanly);
    tcase_add_test(ts, test_save_over_a_directory_leaves_no_temporary);
    tcase_add_test(ts, test_full_disk_keeps_the_old_file);
    tcase_add_test(ts, test_full_disk_keeps_the_old_checkpoint);
    suite_add_tcase(s, ts);
    return s;
}

TT_TEST_MAIN(hostile_suite)

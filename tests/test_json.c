/* test_json.c - the strict JSON reader: valid documents, escapes, and a table of
 * malformed inputs with the expected error text. */
#include "tt_test.h"

#include "io/json.h"

#include <math.h>

static tt_json *parse(const char *s) {
    char err[256];
    tt_json *j = tt_json_parse(s, strlen(s), err, sizeof err);
    ck_assert_msg(j != NULL, "failed to parse %s: %s", s, err);
    return j;
}

START_TEST(test_scalars) {
    tt_json *j = parse("  null ");
    ck_assert_int_eq(j->type, TT_JSON_NULL);
    tt_json_free(j);
    j = parse("true");
    ck_assert(j->type == TT_JSON_BOOL && j->boolean);
    tt_json_free(j);
    j = parse("false");
    ck_assert(j->type == TT_JSON_BOOL && !j->boolean);
    tt_json_free(j);
    const char *nums[] = {"0", "-0", "42", "-17", "3.25", "1e3", "1E-2", "-2.5e+2", "0.0000001",
                          "123456789012345678"};
    const double want[] = {0, -0.0, 42, -17, 3.25, 1e3, 1e-2, -250, 1e-7, 123456789012345678.0};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        j = parse(nums[i]);
        ck_assert_int_eq(j->type, TT_JSON_NUMBER);
        ck_assert_msg(j->number == want[i], "%s parsed as %.17g", nums[i], j->number);
        tt_json_free(j);
    }
    j = parse("\"hi\"");
    ck_assert_int_eq(j->type, TT_JSON_STRING);
    ck_assert_str_eq(j->string, "hi");
    ck_assert_uint_eq(j->len, 2);
    tt_json_free(j);
}
END_TEST

START_TEST(test_nested_document) {
    const char *doc = "{\"dim\": 64, \"layers\": [1, 2, {\"a\": []}], \"name\": \"deepseek\","
                      "\n\t\"moe\": {\"experts\": 8, \"bias\": null, \"on\": true}, \"e\": {}}";
    tt_json *j = parse(doc);
    ck_assert_int_eq(j->type, TT_JSON_OBJECT);
    ck_assert_uint_eq(j->len, 5);
    ck_assert_double_eq(tt_json_get(j, "dim")->number, 64);
    const tt_json *layers = tt_json_get(j, "layers");
    ck_assert_int_eq(layers->type, TT_JSON_ARRAY);
    ck_assert_uint_eq(layers->len, 3);
    ck_assert_double_eq(layers->child->next->number, 2);
    const tt_json *inner = layers->child->next->next;
    ck_assert_int_eq(inner->type, TT_JSON_OBJECT);
    ck_assert_uint_eq(tt_json_get(inner, "a")->len, 0);
    ck_assert_ptr_null(tt_json_get(inner, "a")->child);
    ck_assert_str_eq(tt_json_get(j, "name")->string, "deepseek");
    const tt_json *moe = tt_json_get(j, "moe");
    ck_assert_double_eq(tt_json_get(moe, "experts")->number, 8);
    ck_assert_int_eq(tt_json_get(moe, "bias")->type, TT_JSON_NULL);
    ck_assert(tt_json_get(moe, "on")->boolean);
    ck_assert_uint_eq(tt_json_get(j, "e")->len, 0);
    ck_assert_ptr_null(tt_json_get(j, "missing"));
    ck_assert_ptr_null(tt_json_get(layers, "dim")); /* not an object */
    ck_assert_str_eq(j->child->key, "dim");
    tt_json_free(j);
}
END_TEST

START_TEST(test_string_escapes) {
    /* every simple escape, \u in the BMP (2 and 3 UTF-8 bytes), a surrogate pair, raw UTF-8 */
    tt_json *j = parse("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9\\u20AC \\ud83d\\ude00 \xc3\xa9\"");
    const char *want = "q\" b\\ s/ \b\f\n\r\t \xc3\xa9\xe2\x82\xac \xf0\x9f\x98\x80 \xc3\xa9";
    ck_assert_str_eq(j->string, want);
    ck_assert_uint_eq(j->len, strlen(want));
    tt_json_free(j);
    /* 4-byte raw UTF-8 and the largest code point */
    j = parse("[\"\xf0\x9f\x98\x80\", \"\\uDBFF\\uDFFF\"]");
    ck_assert_str_eq(j->child->string, "\xf0\x9f\x98\x80");
    ck_assert_str_eq(j->child->next->string, "\xf4\x8f\xbf\xbf");
    tt_json_free(j);
}
END_TEST

START_TEST(test_duplicate_keys_first_wins) {
    tt_json *j = parse("{\"a\": 1, \"a\": 2}");
    ck_assert_uint_eq(j->len, 2);
    ck_assert_double_eq(tt_json_get(j, "a")->number, 1);
    tt_json_free(j);
}
END_TEST

START_TEST(test_not_nul_terminated) {
    /* the parser must stop at len: the bytes after it are garbage */
    char buf[16];
    memcpy(buf, "[1,2]xxxxxxxxxxx", 16);
    char err[128];
    tt_json *j = tt_json_parse(buf, 5, err, sizeof err);
    ck_assert_ptr_nonnull(j);
    ck_assert_uint_eq(j->len, 2);
    tt_json_free(j);
    /* a truncated prefix of a valid document is an error, not a read past the end */
    const char *doc = "{\"key\": \"value\", \"n\": [1, 2.5e3, true]}";
    for (size_t n = 0; n < strlen(doc); n++) {
        char *copy = malloc(n ? n : 1); /* exactly n bytes: valgrind/ASan catch overreads */
        memcpy(copy, doc, n);
        ck_assert_ptr_null(tt_json_parse(copy, n, err, sizeof err));
        free(copy);
    }
}
END_TEST

START_TEST(test_depth_limit) {
    char deep[200];
    for (int n = 64; n <= 65; n++) {
        for (int i = 0; i < n; i++) deep[i] = '[', deep[n + i] = ']';
        char err[128];
        tt_json *j = tt_json_parse(deep, 2 * (size_t)n, err, sizeof err);
        if (n == 64) {
            ck_assert_msg(j != NULL, "depth 64 should parse: %s", err);
            tt_json_free(j);
        } else {
            ck_assert_ptr_null(j);
            ck_assert_msg(strstr(err, "nesting deeper than 64"), "%s", err);
            ck_assert_msg(strstr(err, "at byte 64"), "%s", err);
        }
    }
}
END_TEST

/* malformed input -> error substring (which includes the byte offset where useful) */
static const struct {
    const char *text;
    size_t len; /* 0: strlen */
    const char *err;
} BAD[] = {
    {"", 0, "at byte 0: unexpected end of input"},
    {"   ", 0, "at byte 3: unexpected end of input"},
    {"[1, 2", 0, "at byte 0: unterminated array"},
    {"{\"a\": 1", 0, "at byte 0: unterminated object"},
    {"{\"a\" 1}", 0, "at byte 5: expected ':' after key"},
    {"{a: 1}", 0, "at byte 1: expected a string key"},
    {"{\"a\": 1,}", 0, "at byte 8: trailing comma"},
    {"[1,]", 0, "at byte 3: trailing comma"},
    {"[1 2]", 0, "at byte 3: expected ',' or ']'"},
    {"{} x", 0, "at byte 3: trailing characters after the JSON value"},
    {"[1] [2]", 0, "at byte 4: trailing characters"},
    {"\"abc", 0, "at byte 0: unterminated string"},
    {"\"abc\\", 0, "at byte 0: unterminated string"},
    {"\"a\tb\"", 0, "at byte 2: control character 0x09 in string"},
    {"\"a\nb\"", 0, "control character 0x0a"},
    {"\"\\x\"", 0, "at byte 1: invalid escape '\\x'"},
    {"\"\\u12G4\"", 0, "at byte 5: invalid hex digit"},
    {"\"\\u12\"}", 0, "at byte 5: invalid hex digit"},
    {"\"\\u12", 0, "at byte 3: unterminated \\u escape"},
    {"\"\\ud83d\"", 0, "high surrogate \\uD83D not followed by a low surrogate"},
    {"\"\\ud83d\\u0041\"", 0, "not followed by a low surrogate"},
    {"\"\\ude00\"", 0, "unpaired low surrogate \\uDE00"},
    {"\"\\u0000\"", 0, "\\u0000 in a string is not supported"},
    {"\"\xff\"", 0, "at byte 1: invalid UTF-8"},
    {"\"\xc3\"", 0, "invalid UTF-8"},             /* truncated sequence */
    {"\"\xc0\xaf\"", 0, "invalid UTF-8"},         /* overlong '/' */
    {"\"\xe0\x80\xaf\"", 0, "invalid UTF-8"},     /* overlong, 3 bytes */
    {"\"\xed\xa0\x80\"", 0, "invalid UTF-8"},     /* encoded surrogate U+D800 */
    {"\"\xf4\x90\x80\x80\"", 0, "invalid UTF-8"}, /* above U+10FFFF */
    {"\"\x80\"", 0, "invalid UTF-8"},             /* lone continuation byte */
    {"01", 0, "leading zero"},
    {"-", 0, "at byte 0: invalid number"},
    {"+1", 0, "unexpected character '+'"},
    {".5", 0, "unexpected character '.'"},
    {"1.", 0, "digit expected after '.'"},
    {"1e", 0, "digit expected in exponent"},
    {"1e+", 0, "digit expected in exponent"},
    {"1e400", 0, "number out of range"},
    {"NaN", 0, "unexpected character 'N'"},
    {"Infinity", 0, "unexpected character 'I'"},
    {"tru", 0, "invalid literal (expected 'true')"},
    {"nul", 0, "expected 'null'"},
    {"falsy", 0, "expected 'false'"},
    {"[true false]", 0, "at byte 6: expected ',' or ']'"},
    {"'a'", 0, "unexpected character '''"},
    {"// c\n1", 0, "unexpected character '/'"},
    {"[1]\0", 4, "at byte 3: trailing characters after the JSON value (0x00)"},
    {"\xef\xbb\xbf{}", 0, "at byte 0: unexpected character 0xef"}, /* no BOM */
    {"[\f]", 0, "unexpected character 0x0c"},                      /* \f is not whitespace */
};

START_TEST(test_malformed_table) {
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        size_t n = BAD[i].len ? BAD[i].len : strlen(BAD[i].text);
        char *copy = malloc(n ? n : 1); /* exact size, no NUL after it */
        memcpy(copy, BAD[i].text, n);
        char err[256];
        tt_json *j = tt_json_parse(copy, n, err, sizeof err);
        free(copy);
        ck_assert_msg(j == NULL, "case %zu accepted", i);
        ck_assert_msg(strstr(err, BAD[i].err) != NULL, "case %zu: error \"%s\" lacks \"%s\"", i,
                      err, BAD[i].err);
        printf("  rejected case %2zu: %s\n", i, err);
    }
    /* err may be NULL */
    ck_assert_ptr_null(tt_json_parse("[", 1, NULL, 0));
}
END_TEST

START_TEST(test_big_array) {
    /* 10000 elements: one allocation, linked in order */
    size_t n = 10000, cap = n * 8 + 8, k = 0;
    char *s = malloc(cap);
    s[k++] = '[';
    for (size_t i = 0; i < n; i++) k += (size_t)snprintf(s + k, cap - k, i ? ",%zu" : "%zu", i);
    s[k++] = ']';
    char err[128];
    tt_json *j = tt_json_parse(s, k, err, sizeof err);
    free(s);
    ck_assert_ptr_nonnull(j);
    ck_assert_uint_eq(j->len, n);
    size_t i = 0;
    for (const tt_json *c = j->child; c; c = c->next, i++) ck_assert_double_eq(c->number, (double)i);
    ck_assert_uint_eq(i, n);
    tt_json_free(j);
}
END_TEST

static Suite *json_suite(void) {
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("json");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_scalars);
    tcase_add_test(tc, test_nested_document);
    tcase_add_test(tc, test_string_escapes);
    tcase_add_test(tc, test_duplicate_keys_first_wins);
    tcase_add_test(tc, test_not_nul_terminated);
    tcase_add_test(tc, test_depth_limit);
    tcase_add_test(tc, test_malformed_table);
    tcase_add_test(tc, test_big_array);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(json_suite)

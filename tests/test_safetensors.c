/* test_safetensors.c - round trips, the exact header layout, hostile files, atomic writes
 * and loading parameter lists by name. */
#include "tt_test.h"

#include "io/safetensors.h"
#include "nn/params.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers (the temporary directory: tt_test_tmpdir in tt_test.c) ---------------------- */
static void write_file(const char *path, const void *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

/* [u64 header length][header][data_len bytes of data] */
static unsigned char *make_bytes(const char *header, uint64_t header_len_field, size_t data_len,
                                 size_t *len) {
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    unsigned char *b = calloc(*len + 1, 1);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(header_len_field >> (8 * k));
    memcpy(b + 8, header, h);
    return b;
}

/* ---- round trips -------------------------------------------------------------------- */

START_TEST(test_round_trip_bit_exact) {
    tt_test_tmpdir("tt_safetensors");
    /* awkward floats: -0, inf, NaN with a payload, denormals, the extremes */
    uint32_t bits[8] = {0x80000000u, 0x7f800000u, 0x7fc12345u, 0x00000001u,
                        0x007fffffu, 0x7f7fffffu, 0xff7fffffu, 0x3f800000u};
    tt_tensor *a = tt_set_name(tt_zeros(TT_SHAPE(2, 4)), "layers.0.weird");
    memcpy(a->data, bits, sizeof bits);
    tt_tensor *b = tt_set_name(tt_rand_normal(TT_SHAPE(3, 5, 7), 0.0f, 1.0f), "b");
    tt_tensor *s = tt_set_name(tt_full(0, NULL, 2.5f), "scalar");       /* shape [] */
    tt_tensor *e = tt_set_name(tt_zeros(TT_SHAPE(0, 3)), "empty");      /* no bytes */
    tt_tensor *d4 = tt_set_name(tt_rand_uniform(TT_SHAPE(2, 1, 3, 2), -1, 1), "four.d");
    int32_t ids[5] = {0, -1, 2147483647, -2147483647 - 1, 42};
    tt_tensor *i = tt_set_name(tt_from_ids(TT_SHAPE(5), ids), "ids");
    tt_tensor *all[6] = {a, b, s, e, d4, i};
    const char *p = tt_test_path("rt.safetensors");
    ck_assert_int_eq(tt_safetensors_save(p, 6, all, 0, NULL), TT_OK);

    tt_safetensors st;
    ck_assert_int_eq(tt_safetensors_load(p, &st), TT_OK);
    ck_assert_int_eq(st.n, 6);
    ck_assert_int_eq(st.n_meta, 0);
    for (int k = 0; k < 6; k++) {
        tt_tensor *got = tt_safetensors_get(&st, all[k]->name);
        ck_assert_ptr_nonnull(got);
        ck_assert_int_eq(got->dtype, all[k]->dtype);
        ck_assert(tt_same_shape(got, all[k]));
        ck_assert_uint_eq(got->size, all[k]->size);
        ck_assert_int_eq(memcmp(got->data, all[k]->data, got->size * 4), 0);
        ck_assert(!got->requires_grad && got->persistent);
    }
    ck_assert_int_eq(tt_safetensors_get(&st, "scalar")->ndim, 0);
    ck_assert_ptr_null(tt_safetensors_get(&st, "nope"));
    tt_safetensors_free(&st);
    ck_assert_int_eq(st.n, 0);
    tt_safetensors_free(&st); /* twice is harmless */
    for (int k = 0; k < 6; k++) tt_free(all[k]);
    tt_test_tmpdir_remove();
}
END_TEST

START_TEST(test_exact_header_layout) {
    tt_test_tmpdir("tt_safetensors");
    tt_tensor *w = tt_set_name(tt_from_data(TT_SHAPE(2), (float[]){1.0f, -2.0f}), "w");
    tt_tensor *ids = tt_set_name(tt_from_ids(TT_SHAPE(1, 1), (int32_t[]){7}), "ids");
    tt_tensor *all[2] = {w, ids};
    tt_kv meta[1] = {{"k", "v"}};
    const char *p = tt_test_path("h.safetensors");
    ck_assert_int_eq(tt_safetensors_save(p, 2, all, 1, meta), TT_OK);
    size_t len;
    unsigned char *b = tt_test_read_file(p, &len);
    const char *want = "{\"__metadata__\":{\"k\":\"v\"},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"ids\":{\"dtype\":\"I32\",\"shape\":[1,1],\"data_offsets\":[8,12]}}";
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | b[k];
    ck_assert_uint_eq(n % 8, 0);                         /* padded to a multiple of 8 */
    ck_assert_uint_eq(n, (strlen(want) + 7) / 8 * 8);
    ck_assert_int_eq(memcmp(b + 8, want, strlen(want)), 0);
    for (size_t k = 8 + strlen(want); k < 8 + n; k++) ck_assert_int_eq(b[k], ' ');
    ck_assert_uint_eq(len, 8 + n + 12);
    /* little-endian payload: 1.0f = 0x3f800000, -2.0f = 0xc0000000, 7 */
    const unsigned char data[12] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 7, 0, 0, 0};
    ck_assert_int_eq(memcmp(b + 8 + n, data, 12), 0);
    free(b);
    tt_free(w);
    tt_free(ids);
    tt_test_tmpdir_remove();
}
END_TEST

START_TEST(test_metadata_round_trip) {
    tt_test_tmpdir("tt_safetensors");
    tt_tensor *w = tt_set_name(tt_zeros(TT_SHAPE(1)), "w");
    tt_kv meta[4] = {
        {"config", "{\"dim\": 64, \"name\": \"a \\\"quoted\\\" word\"}"},
        {"weird \"key\"", "back\\slash\nnew line\ttab\x01\x1f"},
        {"unicode", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80"},
        {"empty", ""},
    };
    const char *p = tt_test_path("m.safetensors");
    ck_assert_int_eq(tt_safetensors_save(p, 1, &w, 4, meta), TT_OK);
    tt_safetensors st;
    ck_assert_int_eq(tt_safetensors_load(p, &st), TT_OK);
    ck_assert_int_eq(st.n_meta, 4);
    for (int k = 0; k < 4; k++) {
        const char *v = tt_safetensors_meta(&st, meta[k].key);
        ck_assert_ptr_nonnull(v);
        ck_assert_str_eq(v, meta[k].value);
    }
    ck_assert_ptr_null(tt_safetensors_meta(&st, "absent"));
    tt_safetensors_free(&st);
    tt_free(w);
    tt_test_tmpdir_remove();
}
END_TEST

START_TEST(test_save_argument_errors) {
    tt_test_tmpdir("tt_safetensors");
    tt_tensor *a = tt_set_name(tt_zeros(TT_SHAPE(1)), "a");
    tt_tensor *a2 = tt_set_name(tt_zeros(TT_SHAPE(2)), "a");
    tt_tensor *unnamed = tt_zeros(TT_SHAPE(1));
    tt_tensor *reserved = tt_set_name(tt_zeros(TT_SHAPE(1)), "__metadata__");
    const char *p = tt_test_path("x.safetensors");
    tt_tensor *dup[2] = {a, a2};
    ck_assert_int_eq(tt_safetensors_save(p, 2, dup, 0, NULL), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "duplicate tensor name 'a'"));
    ck_assert_int_eq(tt_safetensors_save(p, 1, &unnamed, 0, NULL), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "tensor 0 has no name"));
    ck_assert_int_eq(tt_safetensors_save(p, 1, &reserved, 0, NULL), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "'__metadata__' is reserved"));
    tt_kv dup_meta[2] = {{"k", "1"}, {"k", "2"}};
    ck_assert_int_eq(tt_safetensors_save(p, 1, &a, 2, dup_meta), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "duplicate metadata key 'k'"));
    tt_kv bad_utf8[1] = {{"k", "\xff"}};
    ck_assert_int_eq(tt_safetensors_save(p, 1, &a, 1, bad_utf8), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "metadata 'k' is not valid UTF-8"));
    ck_assert_int_ne(access(p, F_OK), 0); /* nothing was written */
    tt_free(a);
    tt_free(a2);
    tt_free(unnamed);
    tt_free(reserved);
    tt_test_tmpdir_remove();
}
END_TEST

/* ---- hostile files ---------------------------------------------------------------------- */

#define T1 "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
static const struct {
    const char *header;
    long long header_len; /* -1: the header's real length */
    size_t data_len;
    const char *err;
} HOSTILE[] = {
    {"{}", 1000, 2, "header length 1000 larger than the file (12 bytes)"},
    {"{}", 100000001, 0, "header length 100000001 exceeds the 100 MB limit"},
    {"{}", -2, 0, "exceeds the 100 MB limit"}, /* 2^64 - 2: no overflow in N + 8 */
    {"{\"a\": ", -1, 0, "header is not valid JSON: JSON error at byte 6: unexpected end of input"},
    {"not json", -1, 0, "header is not valid JSON: JSON error at byte 0"},
    {"{} trailing", -1, 0, "header is not valid JSON: JSON error at byte 3: trailing characters"},
    {"[1, 2]", -1, 0, "header is not a JSON object"},
    {"{\"a\":" T1 "}", -1, 4, "tensor 'a': data_offsets [0, 8] past the end of the data (4 bytes)"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,99999999999999999999]}}", -1, 8,
     "tensor 'a': data_offsets must be non-negative integers below 2^53"},
    {"{\"a\":" T1 ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", -1, 12,
     "tensors 'a' and 'b' overlap (data_offsets [0, 8] and [4, 12])"},
    {"{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}, \"a\":" T1 "}", -1, 8,
     "tensors 'a' and 'b' overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", -1, 0,
     "tensor 'a': negative dimension in shape"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", -1, 0,
     "tensor 'a': shape entries must be integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,0]}}", -1, 0,
     "tensor 'a': shape entries must be integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296],\"data_offsets\":[0,0]}}", -1, 0,
     "tensor 'a': dimension 4294967296 too large"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],"
     "\"data_offsets\":[0,0]}}",
     -1, 0, "tensor 'a': shape too large (element count overflows)"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", -1, 4,
     "tensor 'a': 5 dimensions (at most 4 supported)"},
    {"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", -1, 4,
     "tensor 'a': unsupported dtype 'F16' (only F32 and I32)"},
    {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", -1, 4,
     "unsupported dtype 'BF16'"},
    {"{\"a\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8,
     "tensor 'a': missing or non-string \"dtype\""},
    {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", -1, 8, "missing or non-string \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", -1, 8,
     "tensor 'a': missing or non-array \"shape\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", -1, 8,
     "tensor 'a': \"data_offsets\" must be [begin, end]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,16]}}", -1, 16,
     "\"data_offsets\" must be [begin, end]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", -1, 8,
     "data_offsets must be non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", -1, 8,
     "tensor 'a': data_offsets [8, 0] out of order"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", -1, 12,
     "tensor 'a': data_offsets span 8 bytes but shape [3] F32 needs 12"},
    {"{\"a\":" T1 ",\"a\":" T1 "}", -1, 8, "duplicate tensor name 'a'"},
    {"{\"a\": 3}", -1, 0, "tensor 'a': entry is not an object"},
    {"{\"\":" T1 "}", -1, 8, "empty tensor name"},
    {"{\"a234567890123456789012345678901234567890123456789012345678901234\":" T1 "}", -1, 8,
     "too long (max 63 bytes)"},
    {"{\"__metadata__\": {\"k\": 1}}", -1, 0, "metadata value for 'k' must be a string"},
    {"{\"__metadata__\": [\"k\"]}", -1, 0, "\"__metadata__\" must be an object of strings"},
    {"{\"__metadata__\": {\"k\": \"1\", \"k\": \"2\"}}", -1, 0, "duplicate metadata key 'k'"},
    {"{\"__metadata__\": {}, \"__metadata__\": {}}", -1, 0, "duplicate \"__metadata__\""},
};

START_TEST(test_hostile_table) {
    for (size_t i = 0; i < sizeof HOSTILE / sizeof HOSTILE[0]; i++) {
        size_t len;
        uint64_t hl = HOSTILE[i].header_len == -1   ? strlen(HOSTILE[i].header)
                      : HOSTILE[i].header_len == -2 ? UINT64_MAX - 1
                                                    : (uint64_t)HOSTILE[i].header_len;
        unsigned char *b = make_bytes(HOSTILE[i].header, hl, HOSTILE[i].data_len, &len);
        /* exact-size copy so that a read past the end shows up under valgrind/ASan */
        unsigned char *exact = malloc(len);
        memcpy(exact, b, len);
        free(b);
        tt_safetensors st;
        tt_status s = tt_safetensors_parse(exact, len, &st);
        free(exact);
        ck_assert_msg(s == TT_ERR_FORMAT, "case %zu: status %d", i, s);
        ck_assert_msg(strstr(tt_last_error(), HOSTILE[i].err) != NULL,
                      "case %zu: \"%s\" lacks \"%s\"", i, tt_last_error(), HOSTILE[i].err);
        ck_assert_int_eq(st.n, 0);
        ck_assert_ptr_null(st.tensors);
        ck_assert_ptr_null(st.meta_keys);
        printf("  rejected case %2zu: %s\n", i, tt_last_error());
    }
}
END_TEST

START_TEST(test_hostile_files_name_the_path) {
    tt_test_tmpdir("tt_safetensors");
    const char *p = tt_test_path("bad.safetensors");
    tt_safetensors st;
    write_file(p, "", 0);
    ck_assert_int_eq(tt_safetensors_load(p, &st), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "bad.safetensors': file too short (0 bytes)"));
    write_file(p, "\x10\0\0\0\0\0\0", 7);
    ck_assert_int_eq(tt_safetensors_load(p, &st), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "file too short (7 bytes)"));
    ck_assert_int_eq(tt_safetensors_load(tt_test_path("absent.safetensors"), &st), TT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "absent.safetensors': No such file"));
    ck_assert_int_eq(tt_safetensors_load(tt_test_path("."), &st), TT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "not a regular file"));

    /* every truncation of a valid file is rejected cleanly */
    tt_tensor *w = tt_set_name(tt_rand_uniform(TT_SHAPE(3, 4), -1, 1), "w");
    tt_kv meta[1] = {{"k", "v"}};
    ck_assert_int_eq(tt_safetensors_save(p, 1, &w, 1, meta), TT_OK);
    size_t len;
    unsigned char *b = tt_test_read_file(p, &len);
    for (size_t n = 0; n < len; n++) {
        unsigned char *c = malloc(n ? n : 1);
        memcpy(c, b, n);
        ck_assert_int_eq(tt_safetensors_parse(c, n, &st), TT_ERR_FORMAT);
        free(c);
    }
    ck_assert_int_eq(tt_safetensors_parse(b, len, &st), TT_OK);
    tt_safetensors_free(&st);
    free(b);
    tt_free(w);
    tt_test_tmpdir_remove();
}
END_TEST

/* ---- atomic writes -------------------------------------------------------------------- */

START_TEST(test_write_to_missing_directory) {
    tt_tensor *w = tt_set_name(tt_zeros(TT_SHAPE(2)), "w");
    const char *p = "/nonexistent-tt-dir/sub/model.safetensors";
    ck_assert_int_eq(tt_safetensors_save(p, 1, &w, 0, NULL), TT_ERR_IO);
    printf("  %s\n", tt_last_error());
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "cannot write '/nonexistent-tt-dir/sub/model"));
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "No such file or directory"));
    tt_free(w);
}
END_TEST

static void assert_old_file_intact(const char *p, float value) {
    tt_safetensors st;
    ck_assert_int_eq(tt_safetensors_load(p, &st), TT_OK);
    ck_assert_int_eq(st.n, 1);
    ck_assert_float_eq(st.tensors[0]->data[0], value);
    tt_safetensors_free(&st);
}

START_TEST(test_failed_write_keeps_old_file) {
    tt_test_tmpdir("tt_safetensors");
    const char *p = tt_test_path("model.safetensors");
    tt_tensor *old = tt_set_name(tt_full(TT_SHAPE(4), 1.0f), "w");
    ck_assert_int_eq(tt_safetensors_save(p, 1, &old, 0, NULL), TT_OK);
    tt_tensor *big = tt_set_name(tt_full(TT_SHAPE(100000), 2.0f), "w");

    /* 1. the temporary cannot be created (its name is taken by a directory; this works
     *    even as root, where a read-only directory would not stop us) */
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    ck_assert_int_eq(mkdir(tmp, 0755), 0);
    ck_assert_int_eq(tt_safetensors_save(p, 1, &big, 0, NULL), TT_ERR_IO);
    printf("  %s\n", tt_last_error());
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "model.safetensors' (open failed): Is a directory"));
    assert_old_file_intact(p, 1.0f);
    ck_assert_int_eq(rmdir(tmp), 0);

    /* 2. the disk "fills up" in the middle of the data (file size limit 64 KiB) */
    struct rlimit saved, lim;
    getrlimit(RLIMIT_FSIZE, &saved);
    lim = saved;
    lim.rlim_cur = 64 * 1024;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    tt_status s = tt_safetensors_save(p, 1, &big, 0, NULL);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);
    ck_assert_int_eq(s, TT_ERR_IO);
    printf("  %s\n", tt_last_error());
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "File too large"));
    assert_old_file_intact(p, 1.0f);
    ck_assert_int_ne(access(tmp, F_OK), 0); /* the temporary was removed */

    /* 3. the destination is a directory: rename fails, the temporary is removed */
    const char *d = tt_test_path("adir");
    ck_assert_int_eq(mkdir(d, 0755), 0);
    ck_assert_int_eq(tt_safetensors_save(d, 1, &old, 0, NULL), TT_ERR_IO);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "(rename failed)"));
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", d, (long)getpid());
    ck_assert_int_ne(access(tmp, F_OK), 0);

    /* and a successful overwrite replaces the old contents */
    ck_assert_int_eq(tt_safetensors_save(p, 1, &big, 0, NULL), TT_OK);
    assert_old_file_intact(p, 2.0f);
    tt_free(old);
    tt_free(big);
    tt_test_tmpdir_remove();
}
END_TEST

/* ---- parameter lists ------------------------------------------------------------------- */

static void make_model(tt_params *p, int q_out) {
    memset(p, 0, sizeof *p);
    tt_tensor *q = tt_param_new(p, TT_SHAPE(q_out, 4), "layers.0.attn.q_proj.weight");
    tt_tensor *n = tt_param_new(p, TT_SHAPE(4), "layers.0.norm.weight");
    for (size_t i = 0; i < q->size; i++) q->data[i] = (float)i;
    for (size_t i = 0; i < n->size; i++) n->data[i] = 1.0f + (float)i;
}

START_TEST(test_params_save_load) {
    tt_test_tmpdir("tt_safetensors");
    const char *p = tt_test_path("params.safetensors");
    tt_params a, b;
    make_model(&a, 3);
    tt_kv meta[1] = {{"step", "12"}};
    ck_assert_int_eq(tt_params_save(&a, p, 1, meta), TT_OK);
    make_model(&b, 3);
    tt_params_zero_grad(&b);
    for (int i = 0; i < b.n; i++) memset(b.t[i]->data, 0, b.t[i]->size * 4);
    ck_assert_int_eq(tt_params_load(&b, p, true), TT_OK);
    for (int i = 0; i < a.n; i++)
        ck_assert_int_eq(memcmp(a.t[i]->data, b.t[i]->data, a.t[i]->size * 4), 0);
    tt_params_free(&a);
    tt_params_free(&b);
    tt_test_tmpdir_remove();
}
END_TEST

START_TEST(test_params_mismatch_errors) {
    tt_test_tmpdir("tt_safetensors");
    const char *p = tt_test_path("params.safetensors");
    tt_params file_model, model;
    make_model(&file_model, 3);
    ck_assert_int_eq(tt_params_save(&file_model, p, 0, NULL), TT_OK);

    /* wrong shape: both shapes named, nothing copied */
    make_model(&model, 5);
    float before = model.t[1]->data[0] = 99.0f;
    ck_assert_int_eq(tt_params_load(&model, p, true), TT_ERR_MISMATCH);
    printf("  %s\n", tt_last_error());
    ck_assert_ptr_nonnull(strstr(tt_last_error(),
                                 "tensor 'layers.0.attn.q_proj.weight': shape [3, 4] in the "
                                 "file, but the parameter has shape [5, 4]"));
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "params.safetensors'"));
    ck_assert_float_eq(model.t[1]->data[0], before); /* the valid tensor was not copied either */
    tt_params_free(&model);

    /* missing tensor */
    make_model(&model, 3);
    tt_param_new(&model, TT_SHAPE(2), "layers.1.attn.q_proj.weight");
    ck_assert_int_eq(tt_params_load(&model, p, false), TT_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "missing tensor 'layers.1.attn.q_proj.weight'"));
    tt_params_free(&model);

    /* extra tensor in the file: fine unless strict */
    tt_param_new(&file_model, TT_SHAPE(1), "extra.bias");
    ck_assert_int_eq(tt_params_save(&file_model, p, 0, NULL), TT_OK);
    make_model(&model, 3);
    ck_assert_int_eq(tt_params_load(&model, p, false), TT_OK);
    ck_assert_int_eq(tt_params_load(&model, p, true), TT_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "unexpected tensor 'extra.bias'"));
    tt_params_free(&model);

    /* dtype mismatch */
    tt_params ip = {0};
    tt_tensor *it = tt_from_ids(TT_SHAPE(4), (int32_t[]){1, 2, 3, 4});
    tt_set_name(it, "layers.0.norm.weight");
    tt_params_add(&ip, it);
    const char *p2 = tt_test_path("ids.safetensors");
    ck_assert_int_eq(tt_params_save(&ip, p2, 0, NULL), TT_OK);
    make_model(&model, 3);
    tt_safetensors st;
    ck_assert_int_eq(tt_safetensors_load(p2, &st), TT_OK);
    ck_assert_int_eq(tt_params_copy_from(&model, &st, NULL, false), TT_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "missing tensor 'layers.0.attn.q_proj.weight'"));
    tt_safetensors_free(&st);
    tt_params_free(&model);
    model = (tt_params){0};
    tt_param_new(&model, TT_SHAPE(4), "layers.0.norm.weight");
    ck_assert_int_eq(tt_params_load(&model, p2, true), TT_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(tt_last_error(),
                                 "tensor 'layers.0.norm.weight': dtype I32 in the file, "
                                 "parameter is F32"));
    tt_params_free(&model);
    tt_params_free(&ip);
    tt_params_free(&file_model);
    tt_test_tmpdir_remove();
}
END_TEST

START_TEST(test_params_prefix) {
    /* parameter "x" is read from "student.x"; strict looks only under "student." */
    tt_test_tmpdir("tt_safetensors");
    tt_params file = {0}, model = {0};
    tt_tensor *a = tt_param_new(&file, TT_SHAPE(2), "student.w");
    a->data[0] = 5.0f;
    tt_param_new(&file, TT_SHAPE(3), "teacher.w");
    const char *p = tt_test_path("prefix.safetensors");
    ck_assert_int_eq(tt_params_save(&file, p, 0, NULL), TT_OK);
    tt_tensor *w = tt_param_new(&model, TT_SHAPE(2), "w");
    tt_safetensors st;
    ck_assert_int_eq(tt_safetensors_load(p, &st), TT_OK);
    ck_assert_int_eq(tt_params_copy_from(&model, &st, "student", true), TT_OK);
    ck_assert_float_eq(w->data[0], 5.0f);
    ck_assert_int_eq(tt_params_copy_from(&model, &st, "teacher", true), TT_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "tensor 'teacher.w': shape [3] in the file"));
    tt_safetensors_free(&st);
    tt_params_free(&file);
    tt_params_free(&model);
    tt_test_tmpdir_remove();
}
END_TEST

static Suite *safetensors_suite(void) {
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("safetensors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_round_trip_bit_exact);
    tcase_add_test(tc, test_exact_header_layout);
    tcase_add_test(tc, test_metadata_round_trip);
    tcase_add_test(tc, test_save_argument_errors);
    tcase_add_test(tc, test_hostile_table);
    tcase_add_test(tc, test_hostile_files_name_the_path);
    tcase_add_test(tc, test_write_to_missing_directory);
    tcase_add_test(tc, test_failed_write_keeps_old_file);
    tcase_add_test(tc, test_params_save_load);
    tcase_add_test(tc, test_params_mismatch_errors);
    tcase_add_test(tc, test_params_prefix);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(safetensors_suite)

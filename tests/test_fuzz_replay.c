/* test_fuzz_replay.c - feed every seed input (tests/fuzz/corpus/<name>/) and every crash
 * regression found by fuzzing (tests/fuzz/regressions/<name>/) to the fuzz harnesses
 * (tests/fuzz/fuzz_<name>.c, compiled in here without libFuzzer). A harness aborts on a
 * broken invariant and the sanitizers of `make sanitize` catch memory errors, so a
 * regression that comes back fails this suite. `make fuzz` runs the real fuzzer.
 *
 * The directory is found from this file's path (tests run from the repository root);
 * TT_FUZZ_DIR overrides it. */
#define TT_FUZZ_NO_MAIN
#include "fuzz/fuzz_config.c"
#include "fuzz/fuzz_corpus.c"
#include "fuzz/fuzz_flags.c"
#include "fuzz/fuzz_json.c"
#include "fuzz/fuzz_safetensors.c"

#include "../examples/deepseek/corpus.c"
#include "../examples/deepseek/flags.c"

#include "tt_test.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

static void fuzz_dir(char *buf, size_t len) {
    const char *env = getenv("TT_FUZZ_DIR");
    if (env && *env) {
        snprintf(buf, len, "%s", env);
        return;
    }
    const char *file = __FILE__, *slash = strrchr(file, '/');
    if (slash)
        snprintf(buf, len, "%.*sfuzz", (int)(slash - file + 1), file);
    else
        snprintf(buf, len, "fuzz");
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0) break;
        n += got;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Run fn on every regular file in <fuzz dir>/<kind>/<name>/; returns how many. */
static int replay_dir(const char *kind, const char *name, fuzz_fn fn) {
    char root[1024], dir[1280], path[1600];
    fuzz_dir(root, sizeof root);
    snprintf(dir, sizeof dir, "%s/%s/%s", root, kind, name);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; /* ., .., .gitkeep */
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        size_t len;
        unsigned char *bytes = read_all(path, &len);
        fn(bytes, len); /* aborts on a broken invariant */
        free(bytes);
        count++;
    }
    closedir(d);
    printf("  %s/%s: %d inputs replayed\n", kind, name, count);
    return count;
}

static void replay(const char *name, fuzz_fn fn) {
    int seeds = replay_dir("corpus", name, fn);
    replay_dir("regressions", name, fn);
    char dir[1024];
    fuzz_dir(dir, sizeof dir);
    ck_assert_msg(seeds > 0, "no seed inputs in %s/corpus/%s (run from the repository root "
                             "or set TT_FUZZ_DIR)", dir, name);
}

START_TEST(test_replay_json) { replay("json", tt_fuzz_json); }
END_TEST
START_TEST(test_replay_safetensors) { replay("safetensors", tt_fuzz_safetensors); }
END_TEST
START_TEST(test_replay_config) { replay("config", tt_fuzz_config); }
END_TEST
START_TEST(test_replay_corpus) { replay("corpus", tt_fuzz_corpus); }
END_TEST
/* flags_parse prints its (expected) complaints and --help: keep the log readable */
static int fuzz_flags_quiet(const uint8_t *data, size_t size) {
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), err = dup(2), null = open("/dev/null", O_WRONLY);
    ck_assert(out >= 0 && err >= 0 && null >= 0);
    dup2(null, 1);
    dup2(null, 2);
    close(null);
    int rc = tt_fuzz_flags(data, size);
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(err, 2);
    close(out);
    close(err);
    return rc;
}

START_TEST(test_replay_flags) { replay("flags", fuzz_flags_quiet); }
END_TEST

static Suite *fuzz_replay_suite(void) {
    Suite *s = suite_create("fuzz_replay");
    TCase *tc = tcase_create("replay");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_replay_json);
    tcase_add_test(tc, test_replay_safetensors);
    tcase_add_test(tc, test_replay_config);
    tcase_add_test(tc, test_replay_corpus);
    tcase_add_test(tc, test_replay_flags);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(fuzz_replay_suite)

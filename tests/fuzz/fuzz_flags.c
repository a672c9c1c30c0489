/* fuzz_flags.c - libFuzzer harness for the examples' command-line parser
 * (examples/deepseek/flags.h: flags_parse).
 *
 * Input: argv[1..] as NUL-separated strings (at most 32). The table has one flag of
 * every type, with the ranges the examples use. flags_parse must return FLAGS_OK,
 * FLAGS_HELP or FLAGS_ERROR and never crash; on FLAGS_OK every value is inside its
 * declared range. (It prints its errors to stderr: run with -close_fd_mask=3.) */
#include "fuzz.h"

#include "../../examples/deepseek/flags.h"

#include <math.h>
#include <string.h>

int tt_fuzz_flags(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[34];
    int argc = 0;
    argv[argc++] = "train_toy";
    for (size_t i = 0; i <= size && argc < 33;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    if (size == 0) argc = 1; /* no input: no arguments */
    argv[argc] = NULL;

    int steps = 600, optim = 1;
    float lr = 1e-3f;
    const char *data_path = NULL;
    bool anomaly = false;
    flag table[] = {
        FLAG_INT("steps", &steps, 1, 1000000, "N", "training steps"),
        FLAG_FLOAT("lr", &lr, 0, 10, "X", "learning rate"),
        FLAG_STRING("data", &data_path, "FILE", "train on the bytes of FILE"),
        FLAG_CHOICE("optim", &optim, "sgd|adamw", "optimizer"),
        FLAG_BOOL("detect-anomaly", &anomaly, "stop at the first NaN/Inf"),
    };
    int n = (int)(sizeof table / sizeof table[0]);
    flags_usage usage = {"train_toy", "[flags]", "fuzzing", NULL};
    int rc = flags_parse(table, n, argc, argv, &usage);
    TT_FUZZ_ASSERT(rc == FLAGS_OK || rc == FLAGS_HELP || rc == FLAGS_ERROR);
    if (rc == FLAGS_OK) {
        TT_FUZZ_ASSERT(steps >= 1 && steps <= 1000000);
        TT_FUZZ_ASSERT(isfinite(lr) && lr >= 0 && lr <= 10);
        TT_FUZZ_ASSERT(optim == 0 || optim == 1);
        TT_FUZZ_ASSERT(!data_path || data_path[0]);
        TT_FUZZ_ASSERT(flags_seen(table, n, "steps") == table[0].seen);
    }
    free(buf);
    return 0;
}

TT_FUZZ_ENTRY(tt_fuzz_flags)

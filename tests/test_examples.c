/* test_examples.c - the DeepSeek toy programs end to end: train_toy and generate are run
 * as separate processes (the binaries in $TT_BUILD/examples/deepseek, TT_BUILD defaulting
 * to "build"; `make check` builds them first and sets it).
 *
 * Small runs (--batch 4 --seq 16) keep the suite at a few seconds; what is tested does not
 * depend on the size: exit codes, messages, resume bit-identity, cache == recompute. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "tt_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_bin[256], g_tmp[128];

static void setup(void) {
    const char *b = getenv("TT_BUILD");
    char rel[200], *abs;
    snprintf(rel, sizeof rel, "%s/examples/deepseek", b && *b ? b : "build");
    abs = realpath(rel, NULL); /* the programs run inside the scratch directory */
    ck_assert_msg(abs != NULL, "%s is missing: build the examples first (make examples)", rel);
    snprintf(g_bin, sizeof g_bin, "%s", abs);
    free(abs);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/tt_examples_%d", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_tmp);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/train_toy", g_bin);
    ck_assert_msg(access(cmd, X_OK) == 0, "%s is missing: build the examples first (make examples)",
                  cmd);
}

static void teardown(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
}

/* Run "<bin>/<args>" with stdout+stderr captured into out (NUL-terminated); returns the
 * exit code, or 128 + signal if it was killed (a crash must never happen). */
static int run(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t outlen, const char *fmt, ...) {
    char args[1024], cmd[1500];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd %s && %s/%s 2>&1", g_tmp, g_bin, args);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = 0, got;
    static char sink[4096];
    while ((got = fread(n + 1 < outlen ? out + n : sink, 1,
                        n + 1 < outlen ? outlen - 1 - n : sizeof sink, p)) > 0)
        if (n + 1 < outlen) n += got;
    out[n] = 0;
    int st = pclose(p);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char out[1 << 16];

#define SMALL "--threads 1 --batch 4 --seq 16"

START_TEST(test_default_card_and_smoke_run) {
    int rc = run(out, sizeof out, "train_toy --steps 30");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    const char *want[] = {"vocabulary             100", "hidden                 64",
                          "layers                 2", "heads                  4",
                          "4 per layer, 2 active per token", "activated parameters",
                          "entropy rate (floor)   1.3863", "best bigram model      3.9120",
                          "ETA", "tok/s", "final held-out loss", "max/mean", "expert 3"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(out, want[i]), "output lacks \"%s\":\n%s", want[i], out);
    /* the activated count is below the total (2 of 4 experts idle per token) */
    unsigned long total = 0, active = 0;
    const char *t = strstr(out, "parameters             "), *a = strstr(out, "activated parameters   ");
    ck_assert(t && a);
    sscanf(t + 23, "%lu", &total);
    sscanf(a + 23, "%lu", &active);
    ck_assert_msg(active > 0 && active < total, "total %lu, active %lu", total, active);
}
END_TEST

START_TEST(test_profile_table) {
    /* --profile 6: the table of the training steps' ops, costliest first */
    int rc = run(out, sizeof out, "train_toy " SMALL " --steps 4 --profile 6");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    const char *want[] = {"op profile of the training steps", "op profile: ", "ms in ops",
                          "fwd calls", "bwd calls", "layers.*.moe.experts.*.fc1",
                          "tinytorch/nn/layers.c:", "more rows)"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(out, want[i]), "output lacks \"%s\":\n%s", want[i], out);
    ck_assert_int_eq(run(out, sizeof out, "train_toy --profile -1"), 2);
}
END_TEST

START_TEST(test_bad_flags_exit_2) {
    const char *bad[] = {"--steps abc", "--steps 0", "--lr -1", "--lr nan", "--optim adam",
                         "--bogus", "--heads 5", "--topk 9", "--steps", "extra"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run(out, sizeof out, "train_toy %s", bad[i]);
        ck_assert_msg(rc == 2, "train_toy %s: exit %d, want 2:\n%s", bad[i], rc, out);
        ck_assert_msg(strstr(out, "error"), "train_toy %s: no error message:\n%s", bad[i], out);
    }
    ck_assert_int_eq(run(out, sizeof out, "train_toy --help"), 0);
    ck_assert(strstr(out, "--aux-alpha") && strstr(out, "--resume"));
    ck_assert_int_eq(run(out, sizeof out, "generate"), 2); /* --load is required */
    ck_assert_int_eq(run(out, sizeof out, "generate --load x --temperature -1"), 2);
}
END_TEST

/* column 1-5 (step,loss,ce,aux,lr) of a CSV log, printed to 9 digits: float-exact */
static void csv_columns(const char *path, char *buf, size_t len) {
    char full[600], line[512];
    snprintf(full, sizeof full, "%s/%s", g_tmp, path);
    FILE *f = fopen(full, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = 0;
    buf[0] = 0;
    while (fgets(line, sizeof line, f)) {
        int commas = 0;
        for (char *p = line; *p; p++)
            if (*p == ',' && ++commas == 5) *p = 0;
        n += (size_t)snprintf(buf + n, len - n, "%s\n", line);
        ck_assert(n < len);
    }
    fclose(f);
}

/* Train `steps` steps straight, and stop at `stop` + resume to `steps`: the CSV losses and
 * the final checkpoint bytes (parameters, optimizer state, step) must be identical.
 * `preset` is "" or e.g. "--preset v3 "; the resumed run's output is left in `out`. */
static void check_resume_identical(const char *preset, int steps, int stop) {
    static char a[1 << 15], b[1 << 15];
    int rc = run(out, sizeof out, "train_toy %s" SMALL " --steps %d --log a.csv --save a.st", preset,
                 steps);
    ck_assert_msg(rc == 0, "%s", out);
    rc = run(out, sizeof out, "train_toy %s" SMALL " --steps %d --stop-at %d --log b.csv --save b.st",
             preset, steps, stop);
    ck_assert_msg(rc == 0, "%s", out);
    char msg[64];
    snprintf(msg, sizeof msg, "resumed from b.st at step %d", stop);
    rc = run(out, sizeof out, "train_toy --resume b.st --log b.csv --save b.st");
    ck_assert_msg(rc == 0 && strstr(out, msg), "%s", out);
    csv_columns("a.csv", a, sizeof a);
    csv_columns("b.csv", b, sizeof b);
    ck_assert_msg(strcmp(a, b) == 0, "losses differ:\n--- straight\n%s\n--- resumed\n%s", a, b);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "cmp -s %s/a.st %s/b.st", g_tmp, g_tmp);
    ck_assert_msg(system(cmd) == 0, "a.st and b.st differ");
}

START_TEST(test_resume_is_bit_identical) {
    check_resume_identical("", 100, 50);
    /* a flag that would change the model is refused on resume */
    ck_assert_int_eq(run(out, sizeof out, "train_toy --resume b.st --hidden 32"), 2);
    ck_assert(strstr(out, "--hidden differs from the checkpoint"));
    /* the checkpoint is at step 100 = --steps: nothing left, but it still evaluates */
    ck_assert_int_eq(run(out, sizeof out, "train_toy --resume b.st"), 0);
}
END_TEST

static void corrupt(const char *src, const char *dst, long offset, int truncate_to) {
    char s[600], d[600];
    snprintf(s, sizeof s, "%s/%s", g_tmp, src);
    snprintf(d, sizeof d, "%s/%s", g_tmp, dst);
    FILE *f = fopen(s, "rb");
    ck_assert_ptr_nonnull(f);
    static unsigned char buf[1 << 24]; /* a v3 checkpoint with AdamW state is ~4.2 MB */
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (truncate_to >= 0) n = (size_t)truncate_to;
    if (offset >= 0 && (size_t)offset < n) buf[offset] ^= 0x5a;
    if (offset < -1 && (size_t)(-offset) < n) buf[n + (size_t)offset] ^= 0x01; /* from the end */
    f = fopen(d, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    fclose(f);
}

START_TEST(test_corrupted_checkpoints_are_rejected) {
    int rc = run(out, sizeof out, "train_toy " SMALL " --steps 5 --save c.st");
    ck_assert_msg(rc == 0, "%s", out);
    struct { long offset; int truncate_to; const char *msg; } cases[] = {
        {-1, 0, "too short"},          /* empty file                          */
        {-1, 5, "too short"},          /* shorter than the length prefix       */
        {3, -1, "header length"},      /* absurd header length                 */
        {40, -1, ""},                  /* garbage inside the JSON header       */
        {-1, 4000, ""},                /* truncated tensor data                */
        {-7, -1, "checksum"},          /* one bit flipped in the last tensor   */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        corrupt("c.st", "bad.st", cases[i].offset, cases[i].truncate_to);
        rc = run(out, sizeof out, "train_toy --resume bad.st");
        ck_assert_msg(rc == 1, "case %zu: train_toy exit %d, want 1:\n%s", i, rc, out);
        ck_assert_msg(strstr(out, "error") && strstr(out, cases[i].msg), "case %zu:\n%s", i, out);
        printf("  expected error: %s", out);
        rc = run(out, sizeof out, "generate --load bad.st --tokens 4");
        ck_assert_msg(rc == 1, "case %zu: generate exit %d, want 1:\n%s", i, rc, out);
    }
    ck_assert_int_eq(run(out, sizeof out, "train_toy --resume missing.st"), 1);
    ck_assert(strstr(out, "cannot open"));
}
END_TEST

START_TEST(test_training_on_a_text_file) {
    char path[600];
    snprintf(path, sizeof path, "%s/text.txt", g_tmp);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++) fprintf(f, "the quick brown fox %d jumps over the lazy dog.\n", i);
    fclose(f);
    int rc = run(out, sizeof out, "train_toy " SMALL " --steps 20 --data text.txt --save t.st --plot t.svg --log t.csv");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    ck_assert_msg(strstr(out, "vocabulary             256 (bytes)") && strstr(out, "bigram model"),
                  "%s", out);
    /* generate takes text prompts for byte models */
    rc = run(out, sizeof out, "generate --load t.st --prompt \"the \" --tokens 8 --check");
    ck_assert_msg(rc == 0 && strstr(out, "prompt (4 tokens): the "), "exit %d:\n%s", rc, out);
    /* the SVG and the log exist */
    snprintf(path, sizeof path, "%s/t.svg", g_tmp);
    ck_assert(access(path, R_OK) == 0);
    /* empty and too-short files are clear errors */
    snprintf(path, sizeof path, "%s/empty.txt", g_tmp);
    fclose(fopen(path, "w"));
    rc = run(out, sizeof out, "train_toy --data empty.txt --steps 1");
    ck_assert_msg(rc == 1 && strstr(out, "is empty"), "exit %d:\n%s", rc, out);
    snprintf(path, sizeof path, "%s/short.txt", g_tmp);
    f = fopen(path, "w");
    fputs("tiny", f);
    fclose(f);
    rc = run(out, sizeof out, "train_toy --data short.txt --steps 1");
    ck_assert_msg(rc == 1 && strstr(out, "too short"), "exit %d:\n%s", rc, out);
    rc = run(out, sizeof out, "train_toy --data nonexistent.txt --steps 1");
    ck_assert_msg(rc == 1 && strstr(out, "cannot open"), "exit %d:\n%s", rc, out);
}
END_TEST

START_TEST(test_generate_cached_equals_full) {
    int rc = run(out, sizeof out, "train_toy " SMALL " --steps 40 --save g.st");
    ck_assert_msg(rc == 0, "%s", out);
    rc = run(out, sizeof out, "generate --load g.st --check --tokens 40 --top-k 5 --seed 3");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    ck_assert_msg(strstr(out, "max abs diff") && strstr(out, "OK"), "%s", out);
    ck_assert_msg(strstr(out, "128 bytes/token") && strstr(out, "1024 bytes/token"), "%s", out);
    /* greedy decoding is deterministic */
    static char again[1 << 14];
    ck_assert_int_eq(run(out, sizeof out, "generate --load g.st --temperature 0 --tokens 20 --prompt \"3 6\""), 0);
    ck_assert_int_eq(run(again, sizeof again, "generate --load g.st --temperature 0 --tokens 20 --seed 9 --prompt \"3 6\""), 0);
    const char *g1 = strstr(out, "generated"), *g2 = strstr(again, "generated");
    ck_assert(g1 && g2);
    ck_assert(strncmp(strchr(g1, '\n'), strchr(g2, '\n'), 60) == 0);
    /* ids outside the vocabulary are refused */
    ck_assert_int_eq(run(out, sizeof out, "generate --load g.st --prompt \"1 2 100\""), 2);
}
END_TEST

/* ---- --preset v3: the faithful DeepSeek-V3 model (nn/v3.h) ------------------------------- */

START_TEST(test_v3_card_and_smoke_run) {
    int rc = run(out, sizeof out, "train_toy --preset v3 --steps 20");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    const char *want[] = {
        "faithful architecture", "vocab_size             100", "dim                    64",
        "n_layers               4 (n_dense_layers 1", "q_lora_rank 32, kv_lora_rank 32",
        "cache 640 B/token instead of 2560 B", "8 routed + 1 shared (moe_inter_dim 40), 2 active",
        "sigmoid scores, route_scale 2.5, 4 groups (2 kept), gate bias yes",
        "MTP                    1 module (D = 1)",
        /* sized to the seed model's activated parameter count */
        "activated parameters   173144 per token", "seed preset on the same data: 173444",
        "adamw (betas 0.9, 0.95, weight decay 0.1), lr 0.006",
        "bias update gamma 0.001, sequence-wise balance loss alpha 0.0001, MTP lambda 0.3",
        "grad clip 1,", "| mtp ", "final held-out loss", "gate bias min..max", "(layer 0 is dense)"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(out, want[i]), "output lacks \"%s\":\n%s", want[i], out);
    /* the load table lists the MoE layers 1..3 */
    ck_assert_msg(strstr(out, "\n      1  ") && strstr(out, "\n      3  ") && !strstr(out, "\n      0  "),
                  "%s", out);
    /* every switch off: no MTP column, the bias stays 0 */
    rc = run(out, sizeof out, "train_toy --preset v3 " SMALL " --steps 5 --gamma 0 --aux-alpha 0 --mtp-lambda 0");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    ck_assert_msg(strstr(out, "gamma 0 (off)") && strstr(out, "MTP lambda 0 (off)") &&
                  strstr(out, "MTP                    none") && !strstr(out, "| mtp ") &&
                  strstr(out, "+0.0000..+0.0000"), "%s", out);
    /* flags of the other model are refused */
    const char *bad[] = {"--preset v3 --hidden 32", "--preset v3 --experts 8", "--gamma 0.01",
                         "--mtp-lambda 0.1", "--config c.json --preset seed", "--preset v4",
                         "--preset v3 --seq 300 --config c.json"};
    char path[600];
    snprintf(path, sizeof path, "%s/c.json", g_tmp);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"vocab_size\": 100, \"dim\": 32, \"inter_dim\": 64, \"moe_inter_dim\": 16, "
          "\"n_layers\": 2, \"n_dense_layers\": 1, \"n_heads\": 2, \"n_routed_experts\": 4, "
          "\"n_shared_experts\": 1, \"n_activated_experts\": 2, \"n_expert_groups\": 1, "
          "\"n_limited_groups\": 1, \"score_func\": \"softmax\", \"route_scale\": 1.0, "
          "\"q_lora_rank\": 0, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, "
          "\"qk_rope_head_dim\": 4, \"v_head_dim\": 8, \"max_seq_len\": 64, \"dtype\": \"bf16\"}\n", f);
    fclose(f);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = run(out, sizeof out, "train_toy %s --steps 1", bad[i]);
        ck_assert_msg(rc == 2 && strstr(out, "error"), "train_toy %s: exit %d, want 2:\n%s", bad[i],
                      rc, out);
    }
    /* an official-style ModelArgs JSON: wq without compression, softmax, no gate bias */
    rc = run(out, sizeof out, "train_toy --config c.json " SMALL " --steps 10 --save c.st");
    ck_assert_msg(rc == 0 && strstr(out, "--config c.json") && strstr(out, "dim                    32") &&
                  strstr(out, "softmax scores") && strstr(out, "gate bias no") &&
                  strstr(out, "q_lora_rank 0, kv_lora_rank 16"), "exit %d:\n%s", rc, out);
    rc = run(out, sizeof out, "generate --load c.st --check --tokens 20");
    ck_assert_msg(rc == 0 && strstr(out, "OK") && strstr(out, "160 bytes/token"), "exit %d:\n%s",
                  rc, out);
}
END_TEST

START_TEST(test_v3_resume_is_bit_identical) {
    /* parameters (gate biases included), AdamW moments, step: the same bytes */
    check_resume_identical("--preset v3 ", 60, 30);
    ck_assert_msg(strstr(out, "faithful architecture"), "%s", out);
    int rc;
    /* the model and optimizer are the file's; gamma and lambda may change (as in V3) */
    ck_assert_int_eq(run(out, sizeof out, "train_toy --resume b.st --lr 0.1"), 2);
    ck_assert(strstr(out, "--lr differs from the checkpoint"));
    ck_assert_int_eq(run(out, sizeof out, "train_toy --resume b.st --preset seed"), 2);
    ck_assert_int_eq(run(out, sizeof out, "train_toy --resume b.st --hidden 32"), 2);
    rc = run(out, sizeof out, "train_toy --resume b.st --steps 65 --gamma 0 --mtp-lambda 0.1");
    ck_assert_msg(rc == 0 && strstr(out, "gamma 0 (off)") && strstr(out, "MTP lambda 0.1"), "%s", out);
    /* a model trained without MTP has no module to switch on */
    rc = run(out, sizeof out, "train_toy --preset v3 " SMALL " --steps 2 --mtp-lambda 0 --save n.st");
    ck_assert_msg(rc == 0, "%s", out);
    rc = run(out, sizeof out, "train_toy --resume n.st --steps 4 --mtp-lambda 0.3");
    ck_assert_msg(rc == 2 && strstr(out, "no MTP module"), "exit %d:\n%s", rc, out);
}
END_TEST

START_TEST(test_v3_generate_cached_equals_full) {
    int rc = run(out, sizeof out, "train_toy --preset v3 " SMALL " --steps 40 --save g.st");
    ck_assert_msg(rc == 0, "%s", out);
    rc = run(out, sizeof out, "generate --load g.st --check --tokens 60 --top-k 5 --seed 3");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    ck_assert_msg(strstr(out, "max abs diff") && strstr(out, "OK"), "%s", out);
    /* absorb form: 4 layers x (kv_lora_rank 32 + qk_rope_head_dim 8) x 4 B, against full
     * K/V per head: 4 layers x 4 heads x (16 + 8 + 16) x 4 B */
    ck_assert_msg(strstr(out, "absorb form") && strstr(out, "640 bytes/token") &&
                  strstr(out, "2560 bytes/token"), "%s", out);
    /* corrupted v3 checkpoints are refused like seed ones */
    corrupt("g.st", "bad.st", -7, -1);
    rc = run(out, sizeof out, "generate --load bad.st --tokens 4");
    ck_assert_msg(rc == 1 && strstr(out, "checksum"), "exit %d:\n%s", rc, out);
}
END_TEST

/* ---- divergence: a non-finite loss stops the run; --detect-anomaly names the op --------- */

/* The step number after `key` in s (e.g. "at step 5"), or -1. */
static long step_after(const char *s, const char *key) {
    const char *p = strstr(s, key);
    long v = -1;
    if (p) sscanf(p + strlen(key), "%ld", &v);
    return v;
}

START_TEST(test_divergence_stops_with_a_message) {
    /* lr 100 without clipping: the loss overflows within a few steps (measured: inf in
     * the 5th forward pass, 1,000 steps asked for). */
#define DIVERGE SMALL " --steps 1000 --warmup 0 --lr 100 --print-every 1"
    int rc = run(out, sizeof out, "train_toy " DIVERGE " --clip 0");
    ck_assert_msg(rc == 3, "exit %d, want 3:\n%s", rc, out);
    const char *e = strstr(out, "train_toy: error: the loss is "); /* nan (measured) or inf */
    long at = e ? step_after(e, " at step ") : -1;
    ck_assert_msg(at > 1 && at <= 20 && strstr(out, "rerun with --detect-anomaly to find the op"),
                  "%s", out);
    ck_assert_msg(!strstr(out, "loss nan") && !strstr(out, "loss -nan"), "nan printed:\n%s", out);
    printf("  without --detect-anomaly: %s", strstr(out, "train_toy: error"));
    /* the same run with --detect-anomaly: stopped at the op that made the first Inf/NaN */
    rc = run(out, sizeof out, "train_toy " DIVERGE " --clip 0 --detect-anomaly");
    ck_assert_msg(rc == 3, "exit %d, want 3:\n%s", rc, out);
    const char *msg = strstr(out, "tinytorch: anomaly: ");
    ck_assert_msg(msg && (strstr(msg, "forward of '") || strstr(msg, "backward of '") ||
                          strstr(msg, "holds")), "%s", out);
    long step = step_after(msg, ", step ");
    ck_assert_msg(step > 1 && step <= at, "anomaly at step %ld, loss nan at %ld:\n%s", step, at, out);
    char want[128];
    snprintf(want, sizeof want, "training stopped by --detect-anomaly at step %ld", step);
    ck_assert_msg(strstr(out, want), "output lacks \"%s\":\n%s", want, out);
    ck_assert_msg(!strstr(out, "Abort") && !strstr(out, "core dumped"), "%s", out);
    printf("  with --detect-anomaly: %s", msg);
    /* the v3 model with AdamW (and clipping) diverges at lr 100 too */
    rc = run(out, sizeof out, "train_toy --preset v3 " DIVERGE " --detect-anomaly");
    ck_assert_msg(rc == 3 && strstr(out, "tinytorch: anomaly: ") &&
                  strstr(out, "training stopped by --detect-anomaly at step "), "exit %d:\n%s", rc, out);
    /* no false alarms: normal training with anomaly mode on (masks hold -inf on purpose) */
    rc = run(out, sizeof out, "train_toy " SMALL " --steps 30 --detect-anomaly");
    ck_assert_msg(rc == 0 && strstr(out, "final held-out loss"), "exit %d:\n%s", rc, out);
    rc = run(out, sizeof out, "train_toy --preset v3 " SMALL " --steps 20 --detect-anomaly");
    ck_assert_msg(rc == 0 && strstr(out, "final held-out loss"), "exit %d:\n%s", rc, out);
    ck_assert_int_eq(run(out, sizeof out, "train_toy --help"), 0);
    ck_assert(strstr(out, "--detect-anomaly") && strstr(out, "--save-every") &&
              strstr(out, "3 the training diverged"));
#undef DIVERGE
}
END_TEST

static Suite *examples_suite(void) {
    Suite *s = suite_create("examples");
    TCase *tc = tcase_create("deepseek toy");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_default_card_and_smoke_run);
    tcase_add_test(tc, test_bad_flags_exit_2);
    tcase_add_test(tc, test_profile_table);
    tcase_add_test(tc, test_resume_is_bit_identical);
    tcase_add_test(tc, test_corrupted_checkpoints_are_rejected);
    tcase_add_test(tc, test_training_on_a_text_file);
    tcase_add_test(tc, test_generate_cached_equals_full);
    tcase_add_test(tc, test_v3_card_and_smoke_run);
    tcase_add_test(tc, test_v3_resume_is_bit_identical);
    tcase_add_test(tc, test_v3_generate_cached_equals_full);
    tcase_add_test(tc, test_divergence_stops_with_a_message);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(examples_suite)

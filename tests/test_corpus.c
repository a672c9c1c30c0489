/* test_corpus.c - the helpers of examples/deepseek: the synthetic source and its exact
 * entropies, the (seed, step)-pure batch sampler, byte files, strict flag parsing, the
 * SVG plot and the progress helpers. The example sources are compiled in directly. */
#include "tt_test.h"

#include "../examples/deepseek/corpus.c"
#include "../examples/deepseek/flags.c"
#include "../examples/deepseek/plot.c"
#include "../examples/deepseek/progress.c"

#include <math.h>
#include <unistd.h>

/* ---- the synthetic source ------------------------------------------------------------ */

START_TEST(test_entropies_are_exact) {
    /* 4 equally likely choices; a bigram model sees 50 equally likely next tokens */
    ck_assert_double_eq_tol(corpus_entropy_rate(), log(4.0), 1e-12);
    ck_assert_double_eq_tol(corpus_bigram_entropy(), log(50.0), 1e-12);
    ck_assert_double_eq_tol(corpus_unigram_entropy(), log(100.0), 1e-12);
    corpus c;
    corpus_synthetic(&c, 1);
    ck_assert_msg(c.bigram - c.floor > 2.5, "bigram %g vs floor %g", c.bigram, c.floor);
}
END_TEST

START_TEST(test_candidates_are_four_tokens_of_the_right_colour) {
    for (int a = 0; a < CORPUS_VOCAB; a++)
        for (int b = 0; b < CORPUS_VOCAB; b++) {
            int cand[CORPUS_CHOICES], n_allowed = 0;
            corpus_candidates(a, b, cand);
            for (int i = 0; i < CORPUS_CHOICES; i++) {
                int off = ((cand[i] - a) % 100 + 100) % 100;
                ck_assert_int_lt(off, CORPUS_WINDOW);
                ck_assert_int_eq(corpus_colour(cand[i]), b & 1);
                if (i) ck_assert_int_gt(off, ((cand[i - 1] - a) % 100 + 100) % 100);
            }
            for (int c = 0; c < CORPUS_VOCAB; c++) n_allowed += corpus_allowed(a, b, c);
            ck_assert_int_eq(n_allowed, CORPUS_CHOICES);
        }
}
END_TEST

START_TEST(test_pair_distribution_is_stationary) {
    /* pi' (b, c) = sum_a pi(a, b) P(c | a, b) must equal pi(b, c) */
    static double next[100][100];
    memset(next, 0, sizeof next);
    double total = 0;
    for (int a = 0; a < 100; a++)
        for (int b = 0; b < 100; b++) {
            double p = corpus_pair_prob(a, b);
            total += p;
            int cand[CORPUS_CHOICES];
            corpus_candidates(a, b, cand);
            for (int i = 0; i < CORPUS_CHOICES; i++) next[b][cand[i]] += p / CORPUS_CHOICES;
        }
    ck_assert_double_eq_tol(total, 1.0, 1e-12);
    double worst = 0;
    for (int b = 0; b < 100; b++)
        for (int c = 0; c < 100; c++) worst = fmax(worst, fabs(next[b][c] - corpus_pair_prob(b, c)));
    ck_assert_msg(worst < 1e-15, "pi P - pi = %g", worst);
}
END_TEST

START_TEST(test_windows_follow_the_rule) {
    corpus c;
    corpus_synthetic(&c, 7);
    enum { T = 32 };
    int32_t ids[T], tg[T];
    long count[CORPUS_CHOICES] = {0}, n = 0;
    for (uint64_t w = 0; w < 4000; w++) {
        corpus_window(&c, CORPUS_TRAIN, w, T, ids, tg);
        ck_assert_int_eq(tg[0], CORPUS_IGNORE); /* x_1 has only x_0 before it */
        ck_assert(corpus_pair_prob(ids[0], ids[1]) > 0); /* starts stationary */
        for (int t = 1; t + 1 < T; t++) ck_assert_int_eq(ids[t + 1], tg[t]);
        for (int t = 1; t < T; t++) {
            ck_assert(ids[t] >= 0 && ids[t] < 100 && tg[t] >= 0 && tg[t] < 100);
            int cand[CORPUS_CHOICES], k = -1;
            corpus_candidates(ids[t - 1], ids[t], cand);
            for (int i = 0; i < CORPUS_CHOICES; i++)
                if (cand[i] == tg[t]) k = i;
            ck_assert_int_ge(k, 0);
            count[k]++;
            n++;
        }
    }
    /* each choice within 5 standard deviations of 1/4 */
    for (int k = 0; k < CORPUS_CHOICES; k++) {
        double p = 0.25, f = (double)count[k] / (double)n, sd = sqrt(p * (1 - p) / (double)n);
        ck_assert_msg(fabs(f - p) < 5 * sd, "choice %d: frequency %g", k, f);
    }
}
END_TEST

START_TEST(test_empirical_bigram_entropy_matches) {
    /* plug-in estimate of H(x_t | x_{t-1}) from 504k transitions: close to ln 50 (the
     * plug-in estimate is biased low by about (5000 - 100) / (2n) = 0.005 nats) */
    corpus c;
    corpus_synthetic(&c, 3);
    enum { T = 64 };
    int32_t ids[T], tg[T];
    static double cnt[100][100];
    memset(cnt, 0, sizeof cnt);
    double n = 0;
    for (uint64_t w = 0; w < 8000; w++) {
        corpus_window(&c, CORPUS_TRAIN, w, T, ids, tg);
        for (int t = 1; t < T; t++, n++) cnt[ids[t]][tg[t]] += 1;
    }
    double h = 0;
    for (int b = 0; b < 100; b++) {
        double row = 0;
        for (int x = 0; x < 100; x++) row += cnt[b][x];
        for (int x = 0; x < 100; x++)
            if (cnt[b][x] > 0) h -= cnt[b][x] / n * log(cnt[b][x] / row);
    }
    ck_assert_msg(fabs(h - log(50.0)) < 0.02, "empirical bigram entropy %g vs ln 50 %g", h,
                  log(50.0));
}
END_TEST

START_TEST(test_batches_are_pure_functions_of_seed_and_step) {
    corpus c, c2, other;
    corpus_synthetic(&c, 42);
    corpus_synthetic(&c2, 42);
    corpus_synthetic(&other, 43);
    enum { B = 3, T = 16 };
    int32_t a[B * T], at[B * T], b[B * T], bt[B * T];
    corpus_batch(&c, CORPUS_TRAIN, 17, B, T, a, at);
    corpus_batch(&c, CORPUS_TRAIN, 5, B, T, b, bt); /* other calls in between change nothing */
    corpus_batch(&c2, CORPUS_TRAIN, 17, B, T, b, bt);
    ck_assert(memcmp(a, b, sizeof a) == 0 && memcmp(at, bt, sizeof at) == 0);
    /* row r of step s is window s * B + r */
    int32_t w[T], wt[T];
    corpus_window(&c, CORPUS_TRAIN, 17 * B + 2, T, w, wt);
    ck_assert(memcmp(w, a + 2 * T, sizeof w) == 0);
    /* held-out windows and other seeds are different streams */
    corpus_batch(&c, CORPUS_HELDOUT, 17, B, T, b, bt);
    ck_assert(memcmp(a, b, sizeof a) != 0);
    corpus_batch(&other, CORPUS_TRAIN, 17, B, T, b, bt);
    ck_assert(memcmp(a, b, sizeof a) != 0);
}
END_TEST

/* ---- byte files ---------------------------------------------------------------------- */

static void write_file(const char *path, const char *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

START_TEST(test_byte_file_errors_are_clear) {
    char path[64], err[512];
    snprintf(path, sizeof path, "/tmp/tt_corpus_%d.txt", (int)getpid());
    corpus c;
    write_file(path, "", 0);
    ck_assert_int_eq(corpus_from_file(&c, path, 8, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "empty") && strstr(err, path), "%s", err);
    write_file(path, "hello", 5);
    ck_assert_int_eq(corpus_from_file(&c, path, 8, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "too short") && strstr(err, "18 bytes"), "%s", err);
    unlink(path);
    ck_assert_int_eq(corpus_from_file(&c, path, 8, 1, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "cannot open"), "%s", err);
    printf("  expected error: %s\n", err);
}
END_TEST

START_TEST(test_byte_windows_come_from_their_split) {
    char path[64], err[512];
    snprintf(path, sizeof path, "/tmp/tt_corpus_%d.txt", (int)getpid());
    char text[1000];
    for (int i = 0; i < 1000; i++) text[i] = (char)(i < 900 ? 'a' + i % 26 : '0' + i % 10);
    write_file(path, text, sizeof text);
    corpus c;
    ck_assert_int_eq(corpus_from_file(&c, path, 16, 5, err, sizeof err), 0);
    unlink(path);
    ck_assert_int_eq(c.vocab, 256);
    ck_assert_int_eq(c.unscored, 0);
    ck_assert_uint_eq(c.n_train, 900); /* the last tenth is held out */
    int32_t ids[16], tg[16];
    for (uint64_t w = 0; w < 200; w++) {
        corpus_window(&c, CORPUS_TRAIN, w, 16, ids, tg);
        for (int t = 0; t < 16; t++) ck_assert(ids[t] >= 'a' && ids[t] <= 'z');
        ck_assert(tg[15] >= 'a' && tg[15] <= 'z');
        corpus_window(&c, CORPUS_HELDOUT, w, 16, ids, tg);
        for (int t = 0; t < 16; t++) ck_assert(ids[t] >= '0' && ids[t] <= '9');
        for (int t = 0; t + 1 < 16; t++) ck_assert_int_eq(tg[t], ids[t + 1]);
    }
    /* the baselines were measured on the held-out part (digits never seen in training) */
    ck_assert(c.unigram > 0 && c.bigram > 0);
    corpus_free(&c);
}
END_TEST

/* ---- flags ------------------------------------------------------------------------------ */

START_TEST(test_numbers_parse_strictly) {
    char why[128];
    int i = 0;
    float x = 0;
    ck_assert_int_eq(flags_parse_int("42", 1, 100, &i, why, sizeof why), 0);
    ck_assert_int_eq(i, 42);
    ck_assert_int_eq(flags_parse_int("42x", 1, 100, &i, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_int("", 1, 100, &i, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_int(" 4", 1, 100, &i, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_int("1e3", 1, 10000, &i, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_int("101", 1, 100, &i, why, sizeof why), -1);
    ck_assert_msg(strstr(why, "between 1 and 100"), "%s", why);
    ck_assert_int_eq(flags_parse_int("99999999999999999999", 1, 100, &i, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_float("3e-2", 0, 1, &x, why, sizeof why), 0);
    ck_assert_float_eq_tol(x, 0.03f, 1e-9f);
    ck_assert_int_eq(flags_parse_float("nan", 0, 1, &x, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_float("inf", 0, 1e30, &x, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_float("0.5.", 0, 1, &x, why, sizeof why), -1);
    ck_assert_int_eq(flags_parse_float("-0.1", 0, 1, &x, why, sizeof why), -1);
}
END_TEST

START_TEST(test_flag_table) {
    int steps = 10, optim = 0;
    float lr = 0.1f;
    bool check = false;
    const char *save = NULL;
    flag table[] = {
        FLAG_INT("steps", &steps, 1, 1000, "N", "steps"),
        FLAG_FLOAT("lr", &lr, 0, 10, "X", "learning rate"),
        FLAG_CHOICE("optim", &optim, "sgd|adamw", "optimizer"),
        FLAG_STRING("save", &save, "FILE", "checkpoint"),
        FLAG_BOOL("check", &check, "verify"),
    };
    flags_usage u = {"prog", "[flags]", "About.", NULL};
    char *ok[] = {"prog", "--steps", "5", "--lr=0.25", "--optim", "adamw", "--save", "x.st",
                  "--check"};
    ck_assert_int_eq(flags_parse(table, 5, 9, ok, &u), FLAGS_OK);
    ck_assert_int_eq(steps, 5);
    ck_assert_float_eq(lr, 0.25f);
    ck_assert_int_eq(optim, 1);
    ck_assert_str_eq(save, "x.st");
    ck_assert(check && flags_seen(table, 5, "lr") && flags_seen(table, 5, "check"));
    char *unknown[] = {"prog", "--stesp", "5"};
    ck_assert_int_eq(flags_parse(table, 5, 3, unknown, &u), FLAGS_ERROR);
    char *missing[] = {"prog", "--steps"};
    ck_assert_int_eq(flags_parse(table, 5, 2, missing, &u), FLAGS_ERROR);
    char *bad[] = {"prog", "--optim", "adam"};
    ck_assert_int_eq(flags_parse(table, 5, 3, bad, &u), FLAGS_ERROR);
    char *range[] = {"prog", "--steps", "0"};
    ck_assert_int_eq(flags_parse(table, 5, 3, range, &u), FLAGS_ERROR);
    char *positional[] = {"prog", "file.txt"};
    ck_assert_int_eq(flags_parse(table, 5, 2, positional, &u), FLAGS_ERROR);
    char *boolval[] = {"prog", "--check=1"};
    ck_assert_int_eq(flags_parse(table, 5, 2, boolval, &u), FLAGS_ERROR);
}
END_TEST

/* ---- plot and progress -------------------------------------------------------------------- */

START_TEST(test_plot_writes_an_svg) {
    char path[64], err[256];
    snprintf(path, sizeof path, "/tmp/tt_plot_%d.svg", (int)getpid());
    double x[3] = {1, 2, 3}, y[3] = {4.6, 2.0, NAN}, loads[4] = {0.5, 0.5, 0.9, 0.1};
    plot_series s[1] = {{"loss <train>", NULL, 3, x, y, PLOT_POINTS}};
    plot_lines l = {"Loss", "step", "nats", 1, s};
    plot_bars b = {"Load", "share", 2, 2, loads, 0.5, "layer", "expert"};
    ck_assert_int_eq(plot_svg(path, "Run & test", 1, &l, &b, err, sizeof err), 0);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    unlink(path);
    ck_assert(strncmp(buf, "<?xml", 5) == 0 && strstr(buf, "<svg") && strstr(buf, "</svg>"));
    ck_assert(strstr(buf, "Run &amp; test") && strstr(buf, "loss &lt;train&gt;"));
    ck_assert(strstr(buf, "layer 1") && strstr(buf, "expert 1") && !strstr(buf, "nan"));
    ck_assert_int_eq(plot_svg("/nonexistent-dir/x.svg", "t", 1, &l, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "cannot write"), "%s", err);
}
END_TEST

START_TEST(test_progress_formats_time) {
    char buf[32];
    ck_assert_str_eq(progress_hms(65.2, buf, sizeof buf), "1:05");
    ck_assert_str_eq(progress_hms(3725, buf, sizeof buf), "1:02:05");
    ck_assert_str_eq(progress_hms(-1, buf, sizeof buf), "--");
    ck_assert_str_eq(progress_hms(NAN, buf, sizeof buf), "--");
    double t0 = progress_now();
    ck_assert(progress_now() >= t0);
}
END_TEST

static Suite *corpus_suite(void) {
    Suite *s = suite_create("corpus");
    TCase *src = tcase_create("synthetic source");
    tcase_add_test(src, test_entropies_are_exact);
    tcase_add_test(src, test_candidates_are_four_tokens_of_the_right_colour);
    tcase_add_test(src, test_pair_distribution_is_stationary);
    tcase_add_test(src, test_windows_follow_the_rule);
    tcase_add_test(src, test_empirical_bigram_entropy_matches);
    tcase_add_test(src, test_batches_are_pure_functions_of_seed_and_step);
    suite_add_tcase(s, src);
    TCase *bytes = tcase_create("byte files");
    tcase_add_test(bytes, test_byte_file_errors_are_clear);
    tcase_add_test(bytes, test_byte_windows_come_from_their_split);
    suite_add_tcase(s, bytes);
    TCase *fl = tcase_create("flags");
    tcase_add_test(fl, test_numbers_parse_strictly);
    tcase_add_test(fl, test_flag_table);
    suite_add_tcase(s, fl);
    TCase *pp = tcase_create("plot and progress");
    tcase_add_test(pp, test_plot_writes_an_svg);
    tcase_add_test(pp, test_progress_formats_time);
    suite_add_tcase(s, pp);
    return s;
}

TT_TEST_MAIN(corpus_suite)

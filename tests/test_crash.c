/* test_crash.c - crash safety of train_toy's checkpoints, end to end.
 *
 * train_toy (the binary in $TT_BUILD/examples/deepseek, TT_BUILD defaulting to "build")
 * runs with --save-every 2 and is killed with SIGKILL at random moments, many times; each
 * run resumes from whatever the previous one left. After every kill the checkpoint on
 * disk must be complete (it parses and its checksum matches the tensors), hold a step
 * that is a multiple of 2 and not older than the last one seen, and the next run must
 * say it resumed from exactly that step. Half the kills are aimed at a save in progress
 * (the child's "<path>.tmp.<pid>" has data in it); the rest land anywhere. At the end
 * the chain of killed-and-resumed runs must give the same bytes as one uninterrupted run.
 *
 * Also: a save that hits a full disk (RLIMIT_FSIZE) or an unwritable directory is a clear
 * error and leaves the old checkpoint bit for bit; the stale temporaries of killed saves
 * are removed by the next save. The random delays come from a fixed seed (TT_CRASH_SEED
 * overrides it; the seed is printed).
 */
#define _XOPEN_SOURCE 700 /* realpath, nanosleep */
#include "tt_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_bin[512], g_dir[128];

static void setup(void) {
    const char *b = getenv("TT_BUILD");
    char rel[256];
    snprintf(rel, sizeof rel, "%s/examples/deepseek/train_toy", b && *b ? b : "build");
    char *abs = realpath(rel, NULL);
    ck_assert_msg(abs != NULL, "%s is missing: build the examples first (make examples)", rel);
    snprintf(g_bin, sizeof g_bin, "%s", abs);
    free(abs);
    snprintf(g_dir, sizeof g_dir, "/tmp/tt_crash_%d", (int)getpid());
    ck_assert_int_eq(mkdir(g_dir, 0755), 0);
}

static void teardown(void) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
}

/* ---- small helpers -------------------------------------------------------------------- */
static uint64_t g_rng;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static long rnd_range(long lo, long hi) { return lo + (long)(rnd() % (uint64_t)(hi - lo + 1)); }

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void path_in(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%.200s", g_dir, name);
}

/* Whole file into a malloc'ed buffer (NULL if it does not exist). */
static unsigned char *slurp(const char *name, size_t *n) {
    char p[512];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    b[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* Number of "<base>.tmp.*" entries in the scratch directory. */
static int count_temporaries(const char *base) {
    DIR *d = opendir(g_dir);
    ck_assert_ptr_nonnull(d);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s.tmp.", base);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* Start train_toy with the given arguments in the scratch directory, stdout and stderr to
 * `log` there. fsize > 0: the child's RLIMIT_FSIZE in bytes (a "full disk"). */
static pid_t spawn(const char *log, rlim_t fsize, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static pid_t spawn(const char *log, rlim_t fsize, const char *fmt, ...) {
    char args[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *argv[64];
    int argc = 0;
    argv[argc++] = g_bin;
    for (char *t = strtok(args, " "); t && argc < 63; t = strtok(NULL, " ")) argv[argc++] = t;
    argv[argc] = NULL;
    char logpath[512];
    path_in(logpath, sizeof logpath, log);
    /* The log is truncated here, before the fork, not in the child: a kill that comes
     * before the child got that far (a few ms under valgrind) must find an empty log, not
     * the previous run's, which says it resumed from an older checkpoint. */
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_msg(fd >= 0, "cannot create %s", logpath);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (chdir(g_dir) != 0) _exit(120);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        if (fsize > 0) {
            signal(SIGXFSZ, SIG_IGN); /* write() fails with EFBIG instead (kept by exec) */
            struct rlimit r;
            getrlimit(RLIMIT_FSIZE, &r);
            r.rlim_cur = fsize;
            if (setrlimit(RLIMIT_FSIZE, &r) != 0) _exit(122);
        }
        setenv("OMP_NUM_THREADS", "1", 1);
        execv(g_bin, argv);
        _exit(123);
    }
    close(fd);
    return pid;
}

/* Wait for pid: its exit code, or 128 + signal. */
static int reap(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0) ck_assert_int_eq(errno, EINTR);
    return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

static int run_to_end(const char *log, rlim_t fsize, char *out, size_t outlen, const char *args) {
    int rc = reap(spawn(log, fsize, "%s", args));
    size_t n;
    unsigned char *b = slurp(log, &n);
    snprintf(out, outlen, "%s", b ? (char *)b : "");
    free(b);
    return rc;
}

/* FNV-1a, as examples/deepseek/toyckpt.c: the stored "tt.checksum" is the sum over
 * tensors of FNV-1a(name + NUL, data bytes). */
static uint64_t fnv1a(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Load a train_toy checkpoint and check that it is complete: parses, checksum matches.
 * Returns its step. */
static long verify_checkpoint(const char *name) {
    char p[512];
    path_in(p, sizeof p, name);
    tt_safetensors st;
    tt_status s = tt_safetensors_load(p, &st);
    ck_assert_msg(s == TT_OK, "the checkpoint on disk does not load: %s", tt_last_error());
    uint64_t sum = 0;
    for (int i = 0; i < st.n; i++) {
        const tt_tensor *t = st.tensors[i];
        sum += fnv1a(t->data, t->size * 4, fnv1a(t->name, strlen(t->name) + 1, 0xcbf29ce484222325ull));
    }
    char want[32];
    snprintf(want, sizeof want, "%016" PRIx64, sum);
    const char *stored = tt_safetensors_meta(&st, "tt.checksum"), *step = tt_safetensors_meta(&st, "step");
    ck_assert_msg(stored && !strcmp(stored, want), "checksum mismatch: stored %s, computed %s",
                  stored ? stored : "(none)", want);
    ck_assert_ptr_nonnull(step);
    long v = strtol(step, NULL, 10);
    tt_safetensors_free(&st);
    return v;
}

/* Columns 1-5 of a --log CSV (step,loss,ce,aux,lr: float-exact) as one string; the
 * steps must count 1, 2, 3, ... */
static char *csv_losses(const char *name) {
    size_t n;
    unsigned char *b = slurp(name, &n);
    ck_assert_msg(b != NULL, "%s is missing", name);
    char *outp = malloc(n + 1), *o = outp;
    ck_assert_ptr_nonnull(outp);
    long expect = 0;
    for (char *line = strtok((char *)b, "\n"); line; line = strtok(NULL, "\n")) {
        int commas = 0;
        for (char *p = line; *p; p++)
            if (*p == ',' && ++commas == 5) *p = 0;
        if (expect > 0) ck_assert_msg(strtol(line, NULL, 10) == expect, "%s: row '%s', want step %ld",
                                      name, line, expect);
        expect++;
        o += sprintf(o, "%s\n", line);
    }
    free(b);
    return outp;
}

static off_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* ---- the kill test -------------------------------------------------------------------- */
#define SMALL "--threads 1 --batch 4 --seq 16 --print-every 1000000"
#define N_KILLS 40
#define EVERY 2

START_TEST(test_sigkill_while_saving) {
    const char *seed_env = getenv("TT_CRASH_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 10) : 20240611u;
    g_rng = seed;
    printf("  kill test: seed %" PRIu64 " (TT_CRASH_SEED), %d kills, --save-every %d\n", seed,
           N_KILLS, EVERY);
    const double t_start = now_s();
    char ckpt[512], out[8192];
    path_in(ckpt, sizeof ckpt, "c.st");
    long last = -1; /* step of the checkpoint on disk, -1: none yet */
    int mid_save = 0, aimed = 0, max_tmp = 0;
    for (int k = 0; k < N_KILLS; k++) {
        pid_t pid;
        if (last < 0)
            pid = spawn("run.log", 0, "--steps 5000 %s --save c.st --save-every %d --log c.csv",
                        SMALL, EVERY);
        else
            pid = spawn("run.log", 0, "--resume c.st --save c.st --save-every %d --print-every "
                        "1000000 --log c.csv", EVERY);
        /* Odd kills: at a random moment in the first 0.6 s (start-up takes part of it);
         * one in four within 2 ms of the fork, often before the child has reached exec
         * (its log is then empty: it said nothing, not what the previous run said).
         * Even kills: once the child's temporary has data in it (a save in progress), plus
         * a random 0..3 ms (into the write, the fsync, or just past the rename). */
        if (k % 4 == 3) {
            sleep_us(rnd_range(0, 2000));
        } else if (k % 2 == 1) {
            sleep_us(rnd_range(1000, 600000));
        } else {
            aimed++;
            char tmp[600];
            snprintf(tmp, sizeof tmp, "%s.tmp.%d", ckpt, (int)pid);
            const int skip = (int)rnd_range(0, 3); /* let a few saves complete first */
            int seen = 0;
            bool in_tmp = false;
            const double t0 = now_s();
            while (now_s() - t0 < 5.0) {
                const bool has = file_size(tmp) > 0;
                if (has && !in_tmp && seen++ == skip) break;
                in_tmp = has;
                sleep_us(50);
            }
            sleep_us(rnd_range(0, 3000));
        }
        kill(pid, SIGKILL);
        const int rc = reap(pid);
        size_t n;
        unsigned char *log = slurp("run.log", &n);
        ck_assert_ptr_nonnull(log);
        ck_assert_msg(rc == 128 + SIGKILL, "kill %d: train_toy ended by itself (exit %d) before "
                      "the kill:\n%s", k, rc, (char *)log);
        /* the run resumed from exactly the checkpoint of the previous round */
        if (last >= 0) {
            char want[128];
            snprintf(want, sizeof want, "resumed from c.st at step %ld", last);
            ck_assert_msg(strstr((char *)log, want) || !strstr((char *)log, "resumed from"),
                          "kill %d: want \"%s\":\n%s", k, want, (char *)log);
        }
        free(log);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp.%d", ckpt, (int)pid);
        const bool left_tmp = file_size(tmp) > 0;
        mid_save += left_tmp;
        if (access(ckpt, F_OK) == 0) {
            long step = verify_checkpoint("c.st");
            ck_assert_msg(step % EVERY == 0 && step >= last && step > 0,
                          "kill %d: checkpoint at step %ld after one at step %ld", k, step, last);
            last = step;
        } else {
            ck_assert_msg(last < 0, "kill %d: the checkpoint (step %ld) disappeared", k, last);
        }
        /* stale temporaries do not pile up: the next save removes those of dead pids */
        const int n_tmp = count_temporaries("c.st");
        if (n_tmp > max_tmp) max_tmp = n_tmp;
        ck_assert_msg(n_tmp <= 2, "kill %d: %d temporaries left in %s", k, n_tmp, g_dir);
    }
    ck_assert_msg(last > 0, "no checkpoint was ever completed");
    printf("  %d kills in %.1f s: %d of them (%d aimed) left a half-written temporary; the "
           "checkpoint on disk was complete every time, last at step %ld; at most %d "
           "temporaries at once\n", N_KILLS, now_s() - t_start, mid_save, aimed, last, max_tmp);
    ck_assert_msg(mid_save >= aimed / 4, "only %d of %d kills hit a save in progress", mid_save,
                  aimed);

    /* the last checkpoint resumes and runs on; the chain of killed runs is bit-identical
     * to one uninterrupted run (the same bytes in the final checkpoint) */
    const long end = last + 4;
    char args[512];
    snprintf(args, sizeof args, "--resume c.st --save c.st --save-every %d --stop-at %ld --log c.csv",
             EVERY, end);
    int rc = run_to_end("run.log", 0, out, sizeof out, args);
    ck_assert_msg(rc == 0, "resume after the kills: exit %d\n%s", rc, out);
    ck_assert_int_eq(verify_checkpoint("c.st"), end);
    ck_assert_int_eq(count_temporaries("c.st"), 0); /* every stale temporary is gone */
    snprintf(args, sizeof args, "--steps 5000 %s --stop-at %ld --save ref.st --log ref.csv", SMALL,
             end);
    rc = run_to_end("ref.log", 0, out, sizeof out, args);
    ck_assert_msg(rc == 0, "uninterrupted run: exit %d\n%s", rc, out);
    size_t na, nb;
    unsigned char *a = slurp("c.st", &na), *b = slurp("ref.st", &nb);
    ck_assert_msg(a && b && na == nb && memcmp(a, b, na) == 0,
                  "killed-and-resumed runs and one uninterrupted run differ at step %ld", end);
    free(a);
    free(b);
    /* the log: every step once (the rows of steps redone after a kill were dropped), the
     * same losses as the uninterrupted run's */
    char *la = csv_losses("c.csv"), *lb = csv_losses("ref.csv");
    ck_assert_msg(!strcmp(la, lb), "the logs differ:\n--- killed and resumed\n%.2000s\n--- "
                  "uninterrupted\n%.2000s", la, lb);
    free(la);
    free(lb);
    printf("  resumed to step %ld: the same bytes as an uninterrupted run (%.1f s in all)\n", end,
           now_s() - t_start);
}
END_TEST

/* ---- a full disk, an unwritable directory ------------------------------------------- */
START_TEST(test_full_disk_and_unwritable_directory) {
    static char out[1 << 14];
    int rc = run_to_end("a.log", 0, out, sizeof out,
                        "--steps 100 " SMALL " --stop-at 10 --save c.st");
    ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
    size_t n_old;
    unsigned char *old = slurp("c.st", &n_old);
    ck_assert_ptr_nonnull(old);
    ck_assert(n_old > 1000000); /* the limit below is smaller than a checkpoint */

    /* full disk: the periodic saves warn and training goes on; the final save fails with
     * exit code 1; the old checkpoint is untouched and no temporary is left */
    rc = run_to_end("b.log", 1000000, out, sizeof out,
                    "--resume c.st --save c.st --save-every 2 --stop-at 16");
    ck_assert_msg(rc == 1, "full disk: exit %d, want 1:\n%s", rc, out);
    const char *want[] = {"train_toy: error: checkpoint at step 12 not saved: cannot write "
                          "'c.st' (write failed): File too large",
                          "train_toy: warning: training goes on; 'c.st' still holds the last "
                          "checkpoint that was saved",
                          "checkpoint at step 14 not saved", "trained 6 steps",
                          "train_toy: error: checkpoint at step 16 not saved: cannot write"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(out, want[i]), "full disk: output lacks \"%s\":\n%s", want[i], out);
    printf("  full disk (exit %d):\n%s", rc, out + (strstr(out, "train_toy: error") - out));
    size_t n_now;
    unsigned char *now = slurp("c.st", &n_now);
    ck_assert(now && n_now == n_old && memcmp(now, old, n_old) == 0);
    ck_assert_int_eq(verify_checkpoint("c.st"), 10);
    ck_assert_int_eq(count_temporaries("c.st"), 0);
    free(now);

    /* a directory that cannot exist (its parent is a regular file): an error before any
     * training, exit code 1 */
    char p[512];
    path_in(p, sizeof p, "plain");
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    rc = run_to_end("c.log", 0, out, sizeof out, "--resume c.st --save plain/c.st --stop-at 12");
    ck_assert_msg(rc == 1 && strstr(out, "train_toy: error: cannot write the checkpoint "
                                         "'plain/c.st': creating 'plain/c.st.tmp.") &&
                      strstr(out, "Not a directory (checked before training)") &&
                      !strstr(out, "step "),
                  "exit %d:\n%s", rc, out);
    printf("  unwritable directory (exit %d): %s", rc, strstr(out, "train_toy: error"));
    /* a directory where the file should be */
    path_in(p, sizeof p, "adir");
    ck_assert_int_eq(mkdir(p, 0755), 0);
    rc = run_to_end("c.log", 0, out, sizeof out, "--resume c.st --save adir --stop-at 12");
    ck_assert_msg(rc == 1 && strstr(out, "'adir': it is a directory"), "exit %d:\n%s", rc, out);
    /* a read-only directory (root ignores the permission bits: skipped then) */
    if (geteuid() != 0) {
        path_in(p, sizeof p, "ro");
        ck_assert_int_eq(mkdir(p, 0555), 0);
        rc = run_to_end("c.log", 0, out, sizeof out, "--resume c.st --save ro/c.st --stop-at 12");
        ck_assert_msg(rc == 1 && strstr(out, "Permission denied"), "exit %d:\n%s", rc, out);
        chmod(p, 0755);
    }
    now = slurp("c.st", &n_now);
    ck_assert(now && n_now == n_old && memcmp(now, old, n_old) == 0);
    free(now);
    free(old);
    /* --save-every needs --save */
    rc = run_to_end("c.log", 0, out, sizeof out, "--steps 4 --save-every 2");
    ck_assert_msg(rc == 2 && strstr(out, "--save-every needs --save"), "exit %d:\n%s", rc, out);
}
END_TEST

/* ---- stale temporaries: the library's clean-up -------------------------------------- */
START_TEST(test_save_removes_stale_temporaries) {
    /* a pid that is certainly dead: a child that was killed and reaped (killed rather
     * than _exit: under valgrind an exiting child runs the leak check on its copy of our
     * heap and exits with valgrind's error code if this process has leaked) */
    pid_t dead = fork();
    ck_assert_int_ge(dead, 0);
    if (dead == 0) {
        raise(SIGKILL);
        _exit(0); /* (not reached) */
    }
    ck_assert_int_eq(reap(dead), 128 + SIGKILL);
    char p[256], name[512];
    const char *keep[] = {"m.st.tmp.abc", "m.st.tmp.", "other.st.tmp.%d", "m.st.tmp.%d.x",
                          "m.st.tmp.1" /* init: alive */, "m.st.tmp.%d" /* our parent: alive */};
    const char *remove_[] = {"m.st.tmp.%d"};
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, keep[i], i == 5 ? (int)getppid() : (int)dead);
        path_in(name, sizeof name, p);
        FILE *f = fopen(name, "w");
        ck_assert_ptr_nonnull(f);
        fputs("half a checkpoint", f);
        fclose(f);
    }
    snprintf(p, sizeof p, remove_[0], (int)dead);
    path_in(name, sizeof name, p);
    FILE *f = fopen(name, "w");
    ck_assert_ptr_nonnull(f);
    fputs("half a checkpoint", f);
    fclose(f);
    ck_assert_int_eq(count_temporaries("m.st"), 6);

    tt_tensor *t = tt_zeros(TT_SHAPE(4)); /* initialised: valgrind checks what is written */
    snprintf(t->name, sizeof t->name, "w");
    char target[512];
    path_in(target, sizeof target, "m.st");
    ck_assert_int_eq(tt_safetensors_save(target, 1, &t, 0, NULL), TT_OK);
    tt_free(t);
    ck_assert_msg(access(name, F_OK) != 0, "%s (a dead pid) was not removed", name);
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, keep[i], i == 5 ? (int)getppid() : (int)dead);
        path_in(name, sizeof name, p);
        ck_assert_msg(access(name, F_OK) == 0, "%s was removed", name);
    }
    ck_assert_int_eq(count_temporaries("m.st"), 5);
}
END_TEST

static Suite *crash_suite(void) {
    Suite *s = suite_create("crash");
    TCase *tc = tcase_create("train_toy checkpoints");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sigkill_while_saving);
    tcase_add_test(tc, test_full_disk_and_unwritable_directory);
    tcase_add_test(tc, test_save_removes_stale_temporaries);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(crash_suite)

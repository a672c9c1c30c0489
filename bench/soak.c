/* soak.c - a long training run with train_toy, watched from outside: resident memory and
 * open file descriptors must stay flat.
 *
 *   soak [--bin PATH] [--steps N] [--every K] [--max-growth PCT] [-- train_toy flags...]
 *
 * Runs  train_toy --steps N --print-every K --eval-every K --save-every K --save soak.st
 *                 --log soak.csv --mem-stats [flags...]
 * in a scratch directory (so the held-out evaluation, the periodic checkpoint and the CSV
 * log are all exercised) and reads its progress lines through a pipe. With --mem-stats
 * train_toy ends each line with its resident set size (/proc/self/statm) and its open
 * descriptors (/proc/self/fd), measured at the same point of every step (a sample taken
 * from outside would race with the checkpoint that follows the line). The first sample
 * (step K) is the end of the warm-up. Prints a table and
 *   SOAK rss_warm_kib=.. rss_end_kib=.. growth_pct=.. rss_max_kib=.. fd_warm=.. fd_end=..
 * and exits 0 if the growth from step K to the end is below --max-growth percent (1) and
 * the descriptor count never changed after the warm-up, else 1 (2: could not run).
 * Linux only (/proc). `make soak` builds and runs it (defaults: 20000 steps, K 1000).
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct sample {
    long step;
    long rss_kib;
    int fds;
    double t;
} sample;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f, "usage: soak [--bin PATH] [--steps N] [--every K] [--max-growth PCT] "
               "[-- train_toy flags...]\n");
}

int main(int argc, char **argv) {
    const char *bin = "build/examples/deepseek/train_toy";
    long steps = 20000, every = 1000;
    double max_growth = 1.0;
    int extra = argc; /* index of the first train_toy flag */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            extra = i + 1;
            break;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(argv[i], "--bin")) bin = argv[++i];
        else if (!strcmp(argv[i], "--steps")) steps = atol(argv[++i]);
        else if (!strcmp(argv[i], "--every")) every = atol(argv[++i]);
        else if (!strcmp(argv[i], "--max-growth")) max_growth = atof(argv[++i]);
        else {
            usage(stderr);
            return 2;
        }
    }
    if (steps < 2 * every || every < 1) {
        fprintf(stderr, "soak: --steps must be at least 2 x --every\n");
        return 2;
    }
    char *abs = realpath(bin, NULL);
    if (!abs || access(abs, X_OK) != 0) {
        fprintf(stderr, "soak: %s is missing: build the examples first (make examples)\n", bin);
        return 2;
    }
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/tt_soak_%d", (int)getpid());
    if (mkdir(dir, 0755) != 0) {
        fprintf(stderr, "soak: mkdir %s: %s\n", dir, strerror(errno));
        return 2;
    }
    char s_steps[32], s_every[32];
    snprintf(s_steps, sizeof s_steps, "%ld", steps);
    snprintf(s_every, sizeof s_every, "%ld", every);
    const char *fixed[] = {abs, "--steps", s_steps, "--print-every", s_every, "--eval-every",
                           s_every, "--save-every", s_every, "--save", "soak.st", "--log",
                           "soak.csv", "--mem-stats"};
    const int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    char **cargv = calloc((size_t)(n_fixed + argc - extra + 1), sizeof *cargv);
    if (!cargv) return 2;
    for (int i = 0; i < n_fixed; i++) cargv[i] = (char *)fixed[i];
    for (int i = extra; i < argc; i++) cargv[n_fixed + i - extra] = argv[i];
    printf("soak:");
    for (int i = 0; cargv[i]; i++) printf(" %s", i == 0 ? "train_toy" : cargv[i]);
    printf("\n(in %s)\n", dir);
    fflush(stdout);

    int fds[2];
    if (pipe(fds) != 0) return 2;
    pid_t pid = fork();
    if (pid < 0) return 2;
    if (pid == 0) {
        if (chdir(dir) != 0) _exit(120);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(abs, cargv);
        _exit(121);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    const long n_max = steps / every + 2;
    sample *s = calloc((size_t)n_max, sizeof *s);
    if (!s || !in) return 2;
    int n = 0;
    char line[1024];
    const double t0 = now_s();
    printf("%8s  %10s  %9s  %4s  %8s\n", "step", "RSS KiB", "vs warm", "fds", "time s");
    while (fgets(line, sizeof line, in)) {
        long step, total, rss;
        int nfd;
        const char *m = strstr(line, "| rss ");
        if (sscanf(line, "step %ld/%ld", &step, &total) != 2 || step % every != 0 || n >= n_max ||
            !m || sscanf(m, "| rss %ld KiB | fds %d", &rss, &nfd) != 2 || rss <= 0)
            continue;
        s[n] = (sample){step, rss, nfd, now_s() - t0};
        printf("%8ld  %10ld  %+8.2f%%  %4d  %8.1f\n", s[n].step, s[n].rss_kib,
               100.0 * (double)(s[n].rss_kib - s[0].rss_kib) / (double)s[0].rss_kib, s[n].fds,
               s[n].t);
        fflush(stdout);
        n++;
    }
    fclose(in);
    int st = 0;
    waitpid(pid, &st, 0);
    const int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "soak: could not remove %s\n", dir);
    free(abs);
    free(cargv);
    if (rc != 0 || n < 2) {
        fprintf(stderr, "soak: train_toy exited with %d after %d samples\n", rc, n);
        free(s);
        return 2;
    }
    long rss_max = 0;
    int fd_changed = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].rss_kib > rss_max) rss_max = s[i].rss_kib;
        fd_changed |= s[i].fds != s[0].fds;
    }
    const double growth = 100.0 * (double)(s[n - 1].rss_kib - s[0].rss_kib) / (double)s[0].rss_kib;
    const double max_growth_seen = 100.0 * (double)(rss_max - s[0].rss_kib) / (double)s[0].rss_kib;
    printf("SOAK steps=%ld rss_warm_kib=%ld rss_end_kib=%ld growth_pct=%.3f rss_max_kib=%ld "
           "max_growth_pct=%.3f fd_warm=%d fd_end=%d seconds=%.0f\n", s[n - 1].step,
           s[0].rss_kib, s[n - 1].rss_kib, growth, rss_max, max_growth_seen, s[0].fds,
           s[n - 1].fds, now_s() - t0);
    const int ok = max_growth_seen < max_growth && !fd_changed;
    printf("soak: %s: resident memory from step %ld to %ld %+.2f%% (max %+.2f%%, limit %g%%), "
           "descriptors %d -> %d%s\n", ok ? "PASS" : "FAIL", s[0].step, s[n - 1].step, growth,
           max_growth_seen, max_growth, s[0].fds, s[n - 1].fds,
           fd_changed ? " (changed)" : " (flat)");
    free(s);
    return ok ? 0 : 1;
}

/* progress.c - timing and the progress line. */
#include "progress.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *progress_hms(double seconds, char *buf, size_t n) {
    if (!(seconds >= 0) || seconds > 1e7) {
        snprintf(buf, n, "--");
        return buf;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        snprintf(buf, n, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

void progress_print(FILE *f, const progress_line *p) {
    char eta[32];
    int width = snprintf(NULL, 0, "%ld", p->total);
    fprintf(f, "step %*ld/%ld | loss %.4f | ce %.4f | aux %.4f | ", width, p->step, p->total,
            p->loss, p->ce, p->aux);
    if (!isnan(p->mtp)) fprintf(f, "mtp %.4f | ", p->mtp);
    fprintf(f, "lr %.2e | %6.0f tok/s | ETA %s", p->lr, p->tokens_per_s,
            progress_hms(p->eta_s, eta, sizeof eta));
    if (p->rss_kib > 0) fprintf(f, " | rss %ld KiB | fds %d", p->rss_kib, p->n_fds);
    fprintf(f, "\n");
    fflush(f);
}

long progress_rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    long size = 0, resident = -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int progress_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

FILE *progress_csv_open(const char *path, int append) {
    FILE *f = fopen(path, append ? "a" : "w");
    if (!f) {
        fprintf(stderr, "error: cannot write --log file '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    if (!append || ftell(f) == 0)
        fprintf(f, "step,loss,ce,aux,lr,heldout,max_load,tokens_per_s,elapsed_s,mtp\n");
    fflush(f);
    return f;
}

int progress_csv_truncate_after(const char *path, long step) {
    FILE *f = fopen(path, "r+");
    if (!f) return 0; /* nothing to trim (fopen "a" reports real problems) */
    char line[1024];
    long keep = 0; /* bytes of the rows to keep */
    bool header = true;
    while (fgets(line, sizeof line, f)) {
        if (line[strlen(line) - 1] != '\n') break; /* a torn last row: drop it */
        char *end;
        long s = strtol(line, &end, 10);
        if (!header && end != line && *end == ',' && s > step) break;
        header = false;
        keep = ftell(f);
    }
    int rc = 0;
    if (ftruncate(fileno(f), (off_t)keep) != 0) {
        fprintf(stderr, "error: cannot trim --log file '%s': %s\n", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

void progress_csv_row(FILE *f, const progress_line *p, double heldout, double max_load,
                      double elapsed_s) {
    fprintf(f, "%ld,%.6f,%.6f,%.6f,%.6g,", p->step, p->loss, p->ce, p->aux, p->lr);
    if (isnan(heldout)) fprintf(f, ","); else fprintf(f, "%.6f,", heldout);
    if (isnan(max_load)) fprintf(f, ","); else fprintf(f, "%.4f,", max_load);
    fprintf(f, "%.1f,%.3f,", p->tokens_per_s, elapsed_s);
    if (isnan(p->mtp)) fprintf(f, "\n"); else fprintf(f, "%.6f\n", p->mtp);
    fflush(f);
}

/* progress.h - wall-clock timing, the training progress line and the CSV log. */
#ifndef DS_PROGRESS_H
#define DS_PROGRESS_H

#include <stdio.h>

double progress_now(void);                   /* monotonic seconds                     */
/* "1:05", "12:00:07" (h:mm:ss past an hour) or "--" for a negative/unknown time.        */
char *progress_hms(double seconds, char *buf, size_t n);

/* One line of training progress. */
typedef struct progress_line {
    long step, total;      /* 1-based step just finished, of total                   */
    double loss, ce, aux;  /* this step's loss = ce + aux (+ lambda * mtp)            */
    double mtp;            /* Multi-Token Prediction CE (unweighted), NAN = none      */
    double lr;
    double tokens_per_s;   /* over the steps since the run (or resume) began          */
    double eta_s;          /* for the remaining steps, at that rate                   */
    long rss_kib;          /* > 0: resident memory, printed as "| rss N KiB | fds M"  */
    int n_fds;             /*      and the open file descriptors (--mem-stats)         */
} progress_line;
void progress_print(FILE *f, const progress_line *p);
/* This process's resident set in KiB (/proc/self/statm) and its open file descriptors
 * (/proc/self/fd, not counting the one used to list them); -1 where /proc is missing. */
long progress_rss_kib(void);
int progress_open_fds(void);

/* CSV log: step,loss,ce,aux,lr,heldout,max_load,tokens_per_s,elapsed_s,mtp (heldout and
 * max_load empty on steps without an evaluation, mtp empty without MTP). Returns NULL and prints the reason if
 * the file cannot be created. Lines are flushed so a killed run keeps its log. */
FILE *progress_csv_open(const char *path, int append);
/* Before appending on --resume from step `step`: drop the rows of steps after it (a run
 * killed after its last checkpoint logged steps that the resumed run does again), so the
 * log has each step once. Returns 0, or -1 and prints the reason. A missing file is fine. */
int progress_csv_truncate_after(const char *path, long step);
void progress_csv_row(FILE *f, const progress_line *p, double heldout, double max_load,
                      double elapsed_s);

#endif

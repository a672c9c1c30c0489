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
} progress_line;
void progress_print(FILE *f, const progress_line *p);

/* CSV log: step,loss,ce,aux,lr,heldout,max_load,tokens_per_s,elapsed_s,mtp (heldout and
 * max_load empty on steps without an evaluation, mtp empty without MTP). Returns NULL and prints the reason if
 * the file cannot be created. Lines are flushed so a killed run keeps its log. */
FILE *progress_csv_open(const char *path, int append);
void progress_csv_row(FILE *f, const progress_line *p, double heldout, double max_load,
                      double elapsed_s);

#endif

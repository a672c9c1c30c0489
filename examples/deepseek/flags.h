/* flags.h - strict command-line flags from a table.
 *
 *   static int steps = 600;
 *   flag table[] = {
 *       FLAG_INT("steps", &steps, 1, 1000000, "N", "training steps"),
 *       ...
 *   };
 *   int rc = flags_parse(table, n, argc, argv, &usage);   // 0 ok, FLAGS_HELP, FLAGS_ERROR
 *
 * "--name value" and "--name=value" both work. Numbers are parsed whole (strtol/strtod
 * plus an end check), must be finite and inside [lo, hi]; anything else is an error that
 * names the flag, the value and what was expected. Errors exit with code 2 by
 * convention (the caller does it).
 */
#ifndef DS_FLAGS_H
#define DS_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum flag_type {
    FLAG_T_INT,    /* int, range [lo, hi]                                  */
    FLAG_T_FLOAT,  /* float, range [lo, hi]                                */
    FLAG_T_STRING, /* const char *, any text                               */
    FLAG_T_CHOICE, /* int index into the '|'-separated list in `choices`   */
    FLAG_T_BOOL,   /* bool set to true by the bare flag (takes no value)   */
} flag_type;

typedef struct flag {
    const char *name;    /* without the dashes                                  */
    flag_type type;
    void *dst;
    double lo, hi;
    const char *choices; /* FLAG_T_CHOICE: "sgd|adamw"                          */
    const char *metavar; /* shown in --help: "N", "FILE", ...                   */
    const char *help;
    bool seen;           /* set by flags_parse when the flag was given          */
} flag;

#define FLAG_INT(name, dst, lo, hi, metavar, help) \
    {name, FLAG_T_INT, dst, lo, hi, NULL, metavar, help, false}
#define FLAG_FLOAT(name, dst, lo, hi, metavar, help) \
    {name, FLAG_T_FLOAT, dst, lo, hi, NULL, metavar, help, false}
#define FLAG_STRING(name, dst, metavar, help) \
    {name, FLAG_T_STRING, dst, 0, 0, NULL, metavar, help, false}
#define FLAG_CHOICE(name, dst, choices, help) \
    {name, FLAG_T_CHOICE, dst, 0, 0, choices, choices, help, false}
#define FLAG_BOOL(name, dst, help) {name, FLAG_T_BOOL, dst, 0, 0, NULL, NULL, help, false}

typedef struct flags_usage {
    const char *prog;     /* "train_toy"                                     */
    const char *synopsis; /* one line after "usage: prog "                   */
    const char *about;    /* paragraph printed before the flag list          */
    const char *footer;   /* paragraph printed after it (may be NULL)        */
} flags_usage;

enum { FLAGS_OK = 0, FLAGS_HELP = 1, FLAGS_ERROR = 2 };

/* Parse argv[1..argc-1]. --help / -h prints the usage to stdout and returns FLAGS_HELP;
 * an unknown flag, a missing or malformed value, a value out of range or a positional
 * argument prints "prog: error: ..." and a hint to stderr and returns FLAGS_ERROR. */
int flags_parse(flag *flags, int n, int argc, char **argv, const flags_usage *usage);
void flags_print_help(FILE *f, const flag *flags, int n, const flags_usage *usage);
/* Whether the named flag appeared on the command line. */
bool flags_seen(const flag *flags, int n, const char *name);

/* The strict number parsers flags_parse uses: 0 on success, -1 with a reason in why. */
int flags_parse_int(const char *s, long lo, long hi, int *out, char *why, size_t whylen);
int flags_parse_float(const char *s, double lo, double hi, float *out, char *why,
                      size_t whylen);

#endif

/* flags.c - strict command-line parsing for the examples. */
#include "flags.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int flags_parse_int(const char *s, long lo, long hi, int *out, char *why, size_t whylen) {
    char *end;
    errno = 0;
    if (!*s || isspace((unsigned char)*s)) {
        snprintf(why, whylen, "expected an integer");
        return -1;
    }
    long v = strtol(s, &end, 10);
    if (*end) {
        snprintf(why, whylen, "expected an integer");
        return -1;
    }
    if (errno == ERANGE || v < lo || v > hi) {
        snprintf(why, whylen, "must be between %ld and %ld", lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int flags_parse_float(const char *s, double lo, double hi, float *out, char *why,
                      size_t whylen) {
    char *end;
    errno = 0;
    if (!*s || isspace((unsigned char)*s)) {
        snprintf(why, whylen, "expected a number");
        return -1;
    }
    double v = strtod(s, &end);
    if (*end) {
        snprintf(why, whylen, "expected a number");
        return -1;
    }
    if (errno == ERANGE || !isfinite(v) || v < lo || v > hi) {
        snprintf(why, whylen, "must be a finite number between %g and %g", lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* index of `value` in "a|b|c", or -1 */
static int choice_index(const char *choices, const char *value) {
    size_t len = strlen(value);
    int i = 0;
    for (const char *p = choices;; i++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0) return i;
        if (!bar) return -1;
        p = bar + 1;
    }
}

__attribute__((format(printf, 2, 3))) static int usage_error(const flags_usage *u,
                                                     const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: error: ", u->prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(run '%s --help' for the list of flags)\n", u->prog);
    return FLAGS_ERROR;
}

int flags_parse(flag *flags, int n, int argc, char **argv, const flags_usage *usage) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            flags_print_help(stdout, flags, n, usage);
            return FLAGS_HELP;
        }
        if (strncmp(arg, "--", 2) != 0 || !arg[2])
            return usage_error(usage, "unexpected argument '%s' (flags start with --)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        flag *fl = NULL;
        for (int k = 0; k < n; k++)
            if (strlen(flags[k].name) == name_len && !strncmp(flags[k].name, name, name_len))
                fl = &flags[k];
        if (!fl) return usage_error(usage, "unknown flag '%s'", arg);
        const char *value = NULL;
        if (fl->type == FLAG_T_BOOL) {
            if (eq) return usage_error(usage, "flag --%s takes no value (got '%s')", fl->name, arg);
            *(bool *)fl->dst = true;
            fl->seen = true;
            continue;
        }
        if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc)
                return usage_error(usage, "flag --%s needs a value (%s)", fl->name, fl->metavar);
            value = argv[++i];
        }
        char why[128];
        switch (fl->type) {
        case FLAG_T_INT:
            if (flags_parse_int(value, (long)fl->lo, (long)fl->hi, fl->dst, why, sizeof why))
                return usage_error(usage, "bad value '%s' for --%s: %s", value, fl->name, why);
            break;
        case FLAG_T_FLOAT:
            if (flags_parse_float(value, fl->lo, fl->hi, fl->dst, why, sizeof why))
                return usage_error(usage, "bad value '%s' for --%s: %s", value, fl->name, why);
            break;
        case FLAG_T_STRING:
            if (!*value) return usage_error(usage, "flag --%s needs a non-empty value", fl->name);
            *(const char **)fl->dst = value;
            break;
        case FLAG_T_CHOICE: {
            int idx = choice_index(fl->choices, value);
            if (idx < 0)
                return usage_error(usage, "bad value '%s' for --%s: expected one of %s", value,
                            fl->name, fl->choices);
            *(int *)fl->dst = idx;
            break;
        }
        case FLAG_T_BOOL: break;
        }
        fl->seen = true;
    }
    return FLAGS_OK;
}

void flags_print_help(FILE *f, const flag *flags, int n, const flags_usage *usage) {
    fprintf(f, "usage: %s %s\n\n", usage->prog, usage->synopsis);
    if (usage->about) fprintf(f, "%s\n\n", usage->about);
    fprintf(f, "flags:\n");
    for (int k = 0; k < n; k++) {
        char left[64];
        if (flags[k].type == FLAG_T_BOOL)
            snprintf(left, sizeof left, "--%s", flags[k].name);
        else
            snprintf(left, sizeof left, "--%s %s", flags[k].name, flags[k].metavar);
        fprintf(f, "  %-24s %s", left, flags[k].help);
        switch (flags[k].type) {
        case FLAG_T_INT:
            fprintf(f, " (default %d)", *(const int *)flags[k].dst);
            break;
        case FLAG_T_FLOAT:
            fprintf(f, " (default %g)", *(const float *)flags[k].dst);
            break;
        case FLAG_T_STRING: {
            const char *s = *(const char *const *)flags[k].dst;
            if (s) fprintf(f, " (default %s)", s);
            break;
        }
        case FLAG_T_CHOICE: {
            int idx = *(const int *)flags[k].dst;
            const char *p = flags[k].choices;
            for (int i = 0; i < idx && p; i++) {
                p = strchr(p, '|');
                if (p) p++;
            }
            if (p) fprintf(f, " (default %.*s)", (int)strcspn(p, "|"), p);
            break;
        }
        case FLAG_T_BOOL: break;
        }
        fputc('\n', f);
    }
    fprintf(f, "  %-24s %s\n", "--help", "this text");
    if (usage->footer) fprintf(f, "\n%s\n", usage->footer);
}

bool flags_seen(const flag *flags, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(flags[k].name, name)) return flags[k].seen;
    return false;
}

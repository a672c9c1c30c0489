/* plot.h - line charts and bar charts as a hand-written SVG file (no dependency).
 * train_toy draws the loss curves, the expert load over time and the final load per
 * layer and expert into one picture (--plot FILE.svg). */
#ifndef DS_PLOT_H
#define DS_PLOT_H

#include <stddef.h>

typedef enum plot_style { PLOT_LINE = 0, PLOT_DASHED = 1, PLOT_POINTS = 2 } plot_style;

typedef struct plot_series {
    const char *label, *color; /* color: any SVG color ("#1f77b4")            */
    int n;
    const double *x, *y;       /* n points; non-finite y values are skipped   */
    plot_style style;
} plot_series;

typedef struct plot_lines {
    const char *title, *xlabel, *ylabel;
    int n_series;
    const plot_series *series;
} plot_lines;

typedef struct plot_bars {
    const char *title, *ylabel;
    int n_groups, n_bars;     /* e.g. layers x experts                        */
    const double *values;     /* [n_groups * n_bars]                          */
    double reference;         /* dashed horizontal line (e.g. 1/E); <= 0: none */
    const char *group_label;  /* "layer" -> "layer 0", "layer 1", ...         */
    const char *bar_label;    /* "expert" -> legend "expert 0", ...           */
} plot_bars;

/* Panels in a two-column grid: the line charts, then the bar chart (bars may be NULL).
 * Returns 0, or -1 with the reason in err. */
int plot_svg(const char *path, const char *title, int n_lines, const plot_lines *lines,
             const plot_bars *bars, char *err, size_t errlen);

#endif

/* plot.c - SVG line and bar charts, written by hand. */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PANEL_W 460.0
#define PANEL_H 300.0
#define MARGIN_L 62.0 /* room for the y tick labels */
#define MARGIN_R 16.0
#define MARGIN_T 34.0
#define MARGIN_B 62.0 /* x ticks, x label, legend */
#define TITLE_H 36.0

static const char *palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

static void put_escaped(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void text(FILE *f, double x, double y, const char *anchor, int size, const char *extra,
                 const char *s) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" font-size=\"%d\"%s%s>", x, y,
            anchor, size, extra ? " " : "", extra ? extra : "");
    put_escaped(f, s);
    fputs("</text>\n", f);
}

/* A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about 5 ticks. */
static double nice_step(double range) {
    if (!(range > 0)) return 1.0;
    double raw = range / 5.0, p = pow(10.0, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1.0 : m < 3.5 ? 2.0 : m < 7.5 ? 5.0 : 10.0) * p;
}

static void fmt_tick(char *buf, size_t n, double v, double step) {
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (decimals > 6) decimals = 6;
    snprintf(buf, n, "%.*f", decimals, fabs(v) < 1e-12 ? 0.0 : v);
}

typedef struct frame {
    double x0, y0, w, h;        /* plot area in pixels */
    double xmin, xmax, ymin, ymax;
} frame;

static double px(const frame *fr, double x) {
    return fr->x0 + (x - fr->xmin) / (fr->xmax - fr->xmin) * fr->w;
}
static double py(const frame *fr, double y) {
    return fr->y0 + fr->h - (y - fr->ymin) / (fr->ymax - fr->ymin) * fr->h;
}

/* axes, grid, ticks and labels for a frame; x ticks only when xticks */
static void axes(FILE *f, const frame *fr, const char *title, const char *xlabel,
                 const char *ylabel, int xticks) {
    char buf[64];
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" "
               "stroke=\"#444\"/>\n", fr->x0, fr->y0, fr->w, fr->h);
    double ys = nice_step(fr->ymax - fr->ymin);
    for (double v = ceil(fr->ymin / ys) * ys; v <= fr->ymax + 1e-9 * ys; v += ys) {
        double y = py(fr, v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                fr->x0, y, fr->x0 + fr->w, y);
        fmt_tick(buf, sizeof buf, v, ys);
        text(f, fr->x0 - 6, y + 4, "end", 11, NULL, buf);
    }
    if (xticks) {
        double xs = nice_step(fr->xmax - fr->xmin);
        for (double v = ceil(fr->xmin / xs) * xs; v <= fr->xmax + 1e-9 * xs; v += xs) {
            double x = px(fr, v);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
                    x, fr->y0, x, fr->y0 + fr->h);
            fmt_tick(buf, sizeof buf, v, xs);
            text(f, x, fr->y0 + fr->h + 15, "middle", 11, NULL, buf);
        }
    }
    text(f, fr->x0 + fr->w / 2, fr->y0 - 12, "middle", 14, "font-weight=\"bold\"", title);
    if (xlabel) text(f, fr->x0 + fr->w / 2, fr->y0 + fr->h + 31, "middle", 12, NULL, xlabel);
    if (ylabel) {
        char rot[96];
        double x = fr->x0 - 46, y = fr->y0 + fr->h / 2;
        snprintf(rot, sizeof rot, "transform=\"rotate(-90 %.1f %.1f)\"", x, y);
        text(f, x, y, "middle", 12, rot, ylabel);
    }
}

static void legend_entry(FILE *f, double x, double y, const char *color, plot_style style,
                         const char *label) {
    if (style == PLOT_POINTS)
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x + 9, y - 4, color);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
               "stroke-width=\"2\"%s/>\n", x, y - 4, x + 18, y - 4, color,
            style == PLOT_DASHED ? " stroke-dasharray=\"5,3\"" : "");
    text(f, x + 22, y, "start", 11, NULL, label);
}

static void line_panel(FILE *f, double ox, double oy, const plot_lines *pl) {
    frame fr = {ox + MARGIN_L, oy + MARGIN_T, PANEL_W - MARGIN_L - MARGIN_R,
                PANEL_H - MARGIN_T - MARGIN_B, INFINITY, -INFINITY, INFINITY, -INFINITY};
    for (int s = 0; s < pl->n_series; s++)
        for (int i = 0; i < pl->series[s].n; i++) {
            double x = pl->series[s].x[i], y = pl->series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            if (x < fr.xmin) fr.xmin = x;
            if (x > fr.xmax) fr.xmax = x;
            if (y < fr.ymin) fr.ymin = y;
            if (y > fr.ymax) fr.ymax = y;
        }
    if (!(fr.xmin <= fr.xmax)) fr.xmin = 0, fr.xmax = 1, fr.ymin = 0, fr.ymax = 1;
    if (fr.xmax == fr.xmin) fr.xmax = fr.xmin + 1;
    if (fr.ymin > 0 && fr.ymin < 0.5 * fr.ymax) fr.ymin = 0; /* show 0 when it is near */
    double pad = 0.05 * (fr.ymax - fr.ymin);
    if (!(pad > 0)) pad = fabs(fr.ymax) * 0.1 + 0.1;
    fr.ymax += pad;
    if (fr.ymin != 0) fr.ymin -= pad;
    axes(f, &fr, pl->title, pl->xlabel, pl->ylabel, 1);
    fprintf(f, "<clipPath id=\"c%.0f_%.0f\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
               "height=\"%.1f\"/></clipPath>\n<g clip-path=\"url(#c%.0f_%.0f)\">\n",
            ox, oy, fr.x0, fr.y0, fr.w, fr.h, ox, oy);
    for (int s = 0; s < pl->n_series; s++) {
        const plot_series *se = &pl->series[s];
        const char *color = se->color ? se->color : palette[s % 8];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"",
                color, se->style == PLOT_LINE ? "1.2" : "2",
                se->style == PLOT_DASHED ? " stroke-dasharray=\"6,4\"" : "");
        for (int i = 0; i < se->n; i++)
            if (isfinite(se->x[i]) && isfinite(se->y[i]))
                fprintf(f, "%.1f,%.1f ", px(&fr, se->x[i]), py(&fr, se->y[i]));
        fputs("\"/>\n", f);
        if (se->style == PLOT_POINTS)
            for (int i = 0; i < se->n; i++)
                if (isfinite(se->x[i]) && isfinite(se->y[i]))
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n",
                            px(&fr, se->x[i]), py(&fr, se->y[i]), color);
    }
    fputs("</g>\n", f);
    /* legend: below the x label, up to three entries a row */
    for (int s = 0; s < pl->n_series; s++) {
        const plot_series *se = &pl->series[s];
        double lx = ox + MARGIN_L + (s % 3) * 130.0, ly = oy + PANEL_H - 12 + (s / 3) * 14.0;
        legend_entry(f, lx, ly, se->color ? se->color : palette[s % 8], se->style, se->label);
    }
}

static void bar_panel(FILE *f, double ox, double oy, const plot_bars *pb) {
    frame fr = {ox + MARGIN_L, oy + MARGIN_T, PANEL_W - MARGIN_L - MARGIN_R,
                PANEL_H - MARGIN_T - MARGIN_B, 0, 1, 0, 0};
    int n = pb->n_groups * pb->n_bars;
    for (int i = 0; i < n; i++)
        if (isfinite(pb->values[i]) && pb->values[i] > fr.ymax) fr.ymax = pb->values[i];
    if (pb->reference > fr.ymax) fr.ymax = pb->reference;
    fr.ymax = fr.ymax > 0 ? fr.ymax * 1.1 : 1.0;
    axes(f, &fr, pb->title, NULL, pb->ylabel, 0);
    double gw = fr.w / (pb->n_groups > 0 ? pb->n_groups : 1), bw = gw * 0.8 / (pb->n_bars > 0 ? pb->n_bars : 1);
    char buf[96];
    for (int g = 0; g < pb->n_groups; g++) {
        for (int b = 0; b < pb->n_bars; b++) {
            double v = pb->values[g * pb->n_bars + b];
            if (!isfinite(v)) continue;
            double x = fr.x0 + g * gw + gw * 0.1 + b * bw, y = py(&fr, v);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n",
                    x, y, bw * 0.9, fr.y0 + fr.h - y, palette[b % 8]);
        }
        snprintf(buf, sizeof buf, "%s %d", pb->group_label ? pb->group_label : "group", g);
        text(f, fr.x0 + g * gw + gw / 2, fr.y0 + fr.h + 15, "middle", 11, NULL, buf);
    }
    if (pb->reference > 0) {
        double y = py(&fr, pb->reference);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\" "
                   "stroke-dasharray=\"6,4\"/>\n", fr.x0, y, fr.x0 + fr.w, y);
    }
    for (int b = 0; b < pb->n_bars && b < 8; b++) {
        snprintf(buf, sizeof buf, "%s %d", pb->bar_label ? pb->bar_label : "bar", b);
        double lx = ox + MARGIN_L + (b % 4) * 95.0, ly = oy + PANEL_H - 26 + (b / 4) * 14.0;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"10\" fill=\"%s\"/>\n", lx,
                ly - 9, palette[b % 8]);
        text(f, lx + 16, ly, "start", 11, NULL, buf);
    }
    if (pb->reference > 0)
        legend_entry(f, ox + MARGIN_L, oy + PANEL_H - 26 + ((pb->n_bars + 3) / 4) * 14.0,
                     "#000", PLOT_DASHED, "uniform load");
}

int plot_svg(const char *path, const char *title, int n_lines, const plot_lines *lines,
             const plot_bars *bars, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write --plot file '%s': %s", path, strerror(errno));
        return -1;
    }
    int panels = n_lines + (bars ? 1 : 0), cols = panels > 1 ? 2 : 1, rows = (panels + 1) / 2;
    double W = cols * PANEL_W, H = TITLE_H + rows * PANEL_H;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"Helvetica, Arial, sans-serif\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"#fafafa\"/>\n", W, H, W, H);
    text(f, W / 2, 24, "middle", 16, "font-weight=\"bold\"", title);
    for (int p = 0; p < panels; p++) {
        double ox = (p % cols) * PANEL_W, oy = TITLE_H + (p / cols) * PANEL_H;
        if (p < n_lines)
            line_panel(f, ox, oy, &lines[p]);
        else
            bar_panel(f, ox, oy, bars);
    }
    fputs("</svg>\n", f);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "error writing --plot file '%s'", path);
        return -1;
    }
    return 0;
}

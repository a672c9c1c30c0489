/* profile.c - the op profiler (see profile.h): a table of (op, caller file:line, module)
 * entries with their forward and backward wall times, filled by hooks in autograd.c.
 *
 * Lookup: an open-addressing hash table of indices into the entry array, keyed by the
 * op name's pointer, the file name's pointer, the line and the module's text. One call
 * site passes the same string literals every time, so pointers identify it; two
 * pointers to equal strings (the same name from two translation units) give two entries
 * with equal text, which tt_profile_print shows as two rows, never a wrong sum.
 */
#include "profile.h"

#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool tt_prof_on = false;

static tt_profile_entry *g_ent = NULL; /* entries, in the order first seen */
static int g_n = 0, g_cap = 0;
static int *g_slot = NULL; /* hash slots: entry index, or -1; g_nslot a power of 2 */
static int g_nslot = 0;
static double g_last = 0;        /* end of the previous op, or the last clock restart */
static double g_started = 0;     /* when the current run of the profiler began */
static double g_wall = 0;        /* seconds of earlier runs (start .. stop) */
static bool g_in_backward = false; /* ops run inside a backward function count to it */

double tt_prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The module of an op (profile.h): its first named persistent input's name, each
 * dot-separated part made only of digits written as '*', a last ".weight" or ".bias"
 * dropped. "" if there is none. */
static void module_of(int n_in, tt_tensor *const *in, char out[TT_NAME_LEN]) {
    out[0] = 0;
    const char *name = NULL;
    for (int i = 0; i < n_in && !name; i++)
        if (in[i] && in[i]->persistent && in[i]->name[0]) name = in[i]->name;
    if (!name) return;
    size_t o = 0;
    for (const char *p = name; *p && o + 1 < TT_NAME_LEN;) {
        const char *q = p;
        while (*q >= '0' && *q <= '9') q++;
        if (q > p && (*q == '.' || *q == 0) && (p == name || p[-1] == '.')) {
            out[o++] = '*'; /* a part of digits only: a layer or expert number */
            p = q;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = 0;
    char *dot = strrchr(out, '.');
    if (dot && (!strcmp(dot, ".weight") || !strcmp(dot, ".bias"))) *dot = 0;
}

static size_t key_hash(const char *op, tt_src src, const char *module) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the module's text, then the rest */
    for (const char *p = module; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h ^= (uint64_t)(uintptr_t)op * 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9ull;
    h ^= (uint64_t)(uintptr_t)src.file + 0x632BE59BD9B4E019ull * (uint64_t)(unsigned)src.line;
    h = (h ^ (h >> 32)) * 0x94D049BB133111EBull;
    return (size_t)(h ^ (h >> 29));
}

static void rehash(int nslot) {
    free(g_slot);
    g_slot = tt_xmalloc((size_t)nslot * sizeof *g_slot);
    for (int s = 0; s < nslot; s++) g_slot[s] = -1;
    g_nslot = nslot;
    for (int i = 0; i < g_n; i++) {
        size_t s = key_hash(g_ent[i].op, g_ent[i].src, g_ent[i].module) & (size_t)(nslot - 1);
        while (g_slot[s] >= 0) s = (s + 1) & (size_t)(nslot - 1);
        g_slot[s] = i;
    }
}

/* The entry of an op with these inputs called at src, created on first sight. */
static tt_profile_entry *entry(const char *op, tt_src src, int n_in, tt_tensor *const *in) {
    char module[TT_NAME_LEN];
    module_of(n_in, in, module);
    if (2 * (g_n + 1) > g_nslot) rehash(g_nslot ? 2 * g_nslot : 64); /* load <= 1/2 */
    size_t s = key_hash(op, src, module) & (size_t)(g_nslot - 1);
    for (; g_slot[s] >= 0; s = (s + 1) & (size_t)(g_nslot - 1)) {
        tt_profile_entry *e = &g_ent[g_slot[s]];
        if (e->op == op && e->src.file == src.file && e->src.line == src.line &&
            !strcmp(e->module, module))
            return e;
    }
    if (g_n == g_cap) {
        g_cap = g_cap ? 2 * g_cap : 64;
        tt_profile_entry *grown = realloc(g_ent, (size_t)g_cap * sizeof *g_ent);
        if (!grown) abort();
        g_ent = grown;
    }
    g_slot[s] = g_n;
    tt_profile_entry *e = &g_ent[g_n++];
    *e = (tt_profile_entry){.op = op, .src = src};
    memcpy(e->module, module, sizeof module);
    return e;
}

/* ---- hooks (internal.h) -------------------------------------------------------------- */

void tt_prof_forward(const char *op, tt_src src, int n_in, tt_tensor *const *in) {
    if (g_in_backward) return;
    const double t = tt_prof_now();
    tt_profile_entry *e = entry(op, src, n_in, in);
    e->fwd_calls++;
    e->fwd_sec += t - g_last;
    g_last = t;
}

void tt_prof_backward_begin(void) { g_in_backward = true; }

void tt_prof_backward(const tt_node *n, double sec) {
    tt_profile_entry *e = entry(n->op, n->src, n->n_in, n->in);
    e->bwd_calls++;
    e->bwd_sec += sec;
}

void tt_prof_restart(void) {
    g_in_backward = false;
    g_last = tt_prof_now();
}

/* ---- public API ------------------------------------------------------------------------ */

void tt_profile_start(void) {
    if (tt_prof_on) return;
    tt_prof_on = true;
    g_in_backward = false;
    g_started = g_last = tt_prof_now();
}

void tt_profile_stop(void) {
    if (!tt_prof_on) return;
    tt_prof_on = false;
    g_wall += tt_prof_now() - g_started;
}

bool tt_profile_active(void) { return tt_prof_on; }

void tt_profile_reset(void) {
    free(g_ent);
    free(g_slot);
    g_ent = NULL;
    g_slot = NULL;
    g_n = g_cap = g_nslot = 0;
    g_wall = 0;
    g_started = g_last = tt_prof_now();
}

int tt_profile_count(void) { return g_n; }

const tt_profile_entry *tt_profile_entry_at(int i) {
    return i >= 0 && i < g_n ? &g_ent[i] : NULL;
}

double tt_profile_wall_sec(void) {
    return g_wall + (tt_prof_on ? tt_prof_now() - g_started : 0.0);
}

static int by_total_desc(const void *a, const void *b) {
    const tt_profile_entry *x = &g_ent[*(const int *)a], *y = &g_ent[*(const int *)b];
    const double tx = x->fwd_sec + x->bwd_sec, ty = y->fwd_sec + y->bwd_sec;
    if (tx != ty) return tx > ty ? -1 : 1;
    return *(const int *)a - *(const int *)b; /* ties: first seen first */
}

void tt_profile_print(FILE *f, int max_rows) {
    double fwd = 0, bwd = 0;
    for (int i = 0; i < g_n; i++) fwd += g_ent[i].fwd_sec, bwd += g_ent[i].bwd_sec;
    const double wall = tt_profile_wall_sec(), ops = fwd + bwd;
    fprintf(f,
            "op profile: %.3f ms in ops (forward %.3f, backward %.3f) of %.3f ms profiled; "
            "%.3f ms outside ops (optimizer, data, ...)\n",
            1e3 * ops, 1e3 * fwd, 1e3 * bwd, 1e3 * wall, 1e3 * (wall - ops));
    if (g_n == 0) return;
    int *order = tt_xmalloc((size_t)g_n * sizeof *order);
    for (int i = 0; i < g_n; i++) order[i] = i;
    qsort(order, (size_t)g_n, sizeof *order, by_total_desc);
    const int rows = max_rows > 0 && max_rows < g_n ? max_rows : g_n;
    int wmod = 6; /* the module column's width: its longest entry's */
    for (int r = 0; r < rows; r++) {
        int w = (int)strlen(g_ent[order[r]].module);
        wmod = w > wmod ? w : wmod;
    }
    fprintf(f, "%11s %6s %11s %9s %11s %9s  %-14s %-*s  %s\n", "total ms", "share", "fwd ms",
            "fwd calls", "bwd ms", "bwd calls", "op", wmod, "module", "called at");
    for (int r = 0; r < rows; r++) {
        const tt_profile_entry *e = &g_ent[order[r]];
        const double t = e->fwd_sec + e->bwd_sec;
        fprintf(f, "%11.3f %5.1f%% %11.3f %9ld %11.3f %9ld  %-14s %-*s  %s:%d\n", 1e3 * t,
                ops > 0 ? 100.0 * t / ops : 0.0, 1e3 * e->fwd_sec, e->fwd_calls,
                1e3 * e->bwd_sec, e->bwd_calls, e->op ? e->op : "?", wmod,
                e->module[0] ? e->module : "-", e->src.file ? e->src.file : "?", e->src.line);
    }
    if (rows < g_n) {
        double rest = 0;
        for (int r = rows; r < g_n; r++) rest += g_ent[order[r]].fwd_sec + g_ent[order[r]].bwd_sec;
        fprintf(f, "%11.3f %5.1f%%  (%d more row%s)\n", 1e3 * rest,
                ops > 0 ? 100.0 * rest / ops : 0.0, g_n - rows, g_n - rows == 1 ? "" : "s");
    }
    free(order);
}

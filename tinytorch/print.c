/* print.c - human-readable tensors and tapes (callable from gdb). */
#include "internal.h"

#include <stdlib.h>

/* Print one axis of values recursively, numpy style, abbreviating long axes to their
 * first and last 3 entries when the tensor has more than 64 elements. */
static void print_axis(FILE *f, const tt_tensor *t, const float *v, int axis, size_t offset,
                       size_t stride, bool abbreviate, int indent) {
    int n = t->shape[axis];
    size_t inner = stride / (size_t)(n ? n : 1);
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (abbreviate && n > 6 && i == 3) {
            fprintf(f, axis == t->ndim - 1 ? "..., " : "...,\n%*s", axis == t->ndim - 1 ? 0 : indent + 1, "");
            i = n - 3;
        }
        size_t off = offset + (size_t)i * inner;
        if (axis == t->ndim - 1) {
            if (t->dtype == TT_I32 && v == t->data)
                fprintf(f, "%d", ((const int32_t *)v)[off]);
            else
                fprintf(f, "%.4g", (double)v[off]);
        } else {
            print_axis(f, t, v, axis + 1, off, inner, abbreviate, indent + 1);
        }
        if (i < n - 1) {
            if (axis == t->ndim - 1)
                fputs(", ", f);
            else
                fprintf(f, ",\n%*s", indent + 1, "");
        }
    }
    fputc(']', f);
}

void tt_fprint(FILE *f, const tt_tensor *t, bool grad) {
    if (!t) {
        fprintf(f, "tensor NULL\n");
        return;
    }
    char shape[TT_SHAPE_STR_LEN];
    fprintf(f, "tensor '%s' %s%s op=%s%s%s\n", t->name[0] ? t->name : "<unnamed>",
            tt_shape_str(t, shape), t->dtype == TT_I32 ? " int32" : "",
            t->node ? t->node->op : "leaf", t->requires_grad ? " requires_grad" : "",
            grad ? " (grad)" : "");
    const float *v = grad ? t->grad : t->data;
    if (!v) {
        fprintf(f, "  (no gradient yet)\n");
        return;
    }
    fputs("  ", f);
    if (t->ndim == 0) {
        if (t->dtype == TT_I32 && !grad)
            fprintf(f, "%d", ((const int32_t *)v)[0]);
        else
            fprintf(f, "%.6g", (double)v[0]);
    } else {
        print_axis(f, t, v, 0, 0, t->size, t->size > 64, 2);
    }
    fputc('\n', f);
}

void tt_print(const tt_tensor *t) {
    tt_fprint(stdout, t, false);
    fflush(stdout);
}

void tt_print_grad(const tt_tensor *t) {
    tt_fprint(stdout, t, true);
    fflush(stdout);
}

/* Index of the node that produced t, or -1 for a leaf. */
static int producer(const tt_tensor *t) { return t->node ? t->node->index : -1; }

void tt_tape_print(FILE *f) {
    int n = tt_tape_len();
    fprintf(f, "tape: %d node%s\n", n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        tt_node *node = tt_tape_node(i);
        char buf[TT_SHAPE_STR_LEN];
        fprintf(f, "%4d %-14s %-24s %-16s <-", i, node->op,
                node->out->name[0] ? node->out->name : "", tt_shape_str(node->out, buf));
        for (int k = 0; k < node->n_in; k++) {
            tt_tensor *in = node->in[k];
            if (!in) continue;
            int p = producer(in);
            if (p >= 0)
                fprintf(f, " #%d", p);
            else
                fprintf(f, " %s", in->name[0] ? in->name : "leaf");
            fprintf(f, "%s", tt_shape_str(in, buf));
        }
        fprintf(f, "   (%s:%d)\n", node->src.file ? node->src.file : "?", node->src.line);
    }
}

/* Leaves are numbered in order of first use, so the output does not depend on
 * addresses and two runs print the same graph. */
void tt_tape_dot(FILE *f) {
    int n = tt_tape_len();
    char buf[TT_SHAPE_STR_LEN];
    const tt_tensor **leaves = NULL;
    int n_leaves = 0, cap = 0;
    fprintf(f, "digraph tape {\n  rankdir=LR;\n  node [fontname=\"monospace\", fontsize=10];\n");
    for (int i = 0; i < n; i++) {
        tt_node *node = tt_tape_node(i);
        fprintf(f, "  n%d [shape=box, label=\"#%d %s\\n%s %s\"];\n", i, i, node->op,
                node->out->name, tt_shape_str(node->out, buf));
        for (int k = 0; k < node->n_in; k++) {
            tt_tensor *in = node->in[k];
            if (!in) continue;
            int p = producer(in);
            if (p >= 0) {
                fprintf(f, "  n%d -> n%d;\n", p, i);
                continue;
            }
            int id = 0;
            while (id < n_leaves && leaves[id] != in) id++;
            if (id == n_leaves) {
                if (n_leaves == cap) {
                    cap = cap ? 2 * cap : 16;
                    leaves = realloc(leaves, (size_t)cap * sizeof *leaves);
                    if (!leaves) abort();
                }
                leaves[n_leaves++] = in;
                fprintf(f, "  leaf%d [shape=ellipse, label=\"%s\\n%s\"];\n", id,
                        in->name[0] ? in->name : "leaf", tt_shape_str(in, buf));
            }
            fprintf(f, "  leaf%d -> n%d;\n", id, i);
        }
    }
    fprintf(f, "}\n");
    free(leaves);
}

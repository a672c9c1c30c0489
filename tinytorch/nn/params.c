/* params.c - the parameter list. */
#include "params.h"

#include "../internal.h"

#include <stdarg.h>
#include <stdlib.h>

void tt_params_add(tt_params *p, tt_tensor *t) {
    if (!t->persistent)
        tt_error_at((tt_src){__FILE__, __LINE__}, "params_add",
                    "%s is a temporary; parameters must be persistent tensors", tt_d(t));
    if (t->name[0] && tt_params_find(p, t->name))
        tt_error_at((tt_src){__FILE__, __LINE__}, "params_add",
                    "a parameter named '%s' is already registered", t->name);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 32;
        p->t = realloc(p->t, (size_t)p->cap * sizeof *p->t);
        if (!p->t) abort();
    }
    p->t[p->n++] = t;
}

tt_tensor *tt_param_new(tt_params *p, int ndim, const int *shape, const char *fmt, ...) {
    char name[TT_NAME_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    /* check before allocating, so that the error path leaks nothing */
    if (name[0] && tt_params_find(p, name))
        tt_error_at((tt_src){__FILE__, __LINE__}, "param_new",
                    "a parameter named '%s' is already registered", name);
    tt_tensor *t = tt_zeros(ndim, shape);
    memcpy(t->name, name, sizeof name);
    tt_set_requires_grad(t, true);
    tt_params_add(p, t);
    return t;
}

tt_tensor *tt_params_find(const tt_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->t[i]->name, name) == 0) return p->t[i];
    return NULL;
}

size_t tt_params_numel(const tt_params *p) {
    size_t n = 0;
    for (int i = 0; i < p->n; i++) n += p->t[i]->size;
    return n;
}

void tt_params_zero_grad(tt_params *p) {
    for (int i = 0; i < p->n; i++) tt_zero_grad(p->t[i]);
}

void tt_params_grad_to_none(tt_params *p) {
    for (int i = 0; i < p->n; i++) tt_grad_to_none(p->t[i]);
}

void tt_params_free(tt_params *p) {
    for (int i = 0; i < p->n; i++) tt_free(p->t[i]);
    free(p->t);
    p->t = NULL;
    p->n = p->cap = 0;
}

char *tt_name_join(char *buf, const char *prefix, const char *name) {
    if (prefix && prefix[0])
        snprintf(buf, TT_PATH_LEN, "%s.%s", prefix, name);
    else
        snprintf(buf, TT_PATH_LEN, "%s", name);
    return buf;
}

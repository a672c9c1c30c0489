/* error.c - error reporting: messages that name the op, the tensors and the caller. */
#include "internal.h"

#include <stdarg.h>
#include <stdlib.h>

static tt_error_handler g_handler = NULL;
static void *g_handler_user = NULL;
static char g_last_error[1024];

tt_error_handler tt_set_error_handler(tt_error_handler handler, void *user) {
    tt_error_handler old = g_handler;
    g_handler = handler;
    g_handler_user = user;
    return old;
}

const char *tt_last_error(void) { return g_last_error; }

void tt_error_at(tt_src src, const char *op, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(g_last_error, sizeof g_last_error, "tinytorch: %s: %s (at %s:%d)", op, msg,
             src.file ? src.file : "?", src.line);
    if (g_handler) g_handler(g_last_error, g_handler_user);
    /* Default, or a handler that returned: stop here so a debugger catches it. */
    fprintf(stderr, "%s\n", g_last_error);
    fflush(stderr);
    abort();
}

tt_status tt_fail(tt_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
    va_end(ap);
    return status;
}

char *tt_describe(const tt_tensor *t, char *buf) {
    char shape[TT_SHAPE_STR_LEN];
    if (!t) {
        snprintf(buf, TT_DESCR_LEN, "NULL");
        return buf;
    }
    snprintf(buf, TT_DESCR_LEN, "'%s' %s%s", t->name[0] ? t->name : "<unnamed>",
             tt_shape_str(t, shape), t->dtype == TT_I32 ? " int32" : "");
    return buf;
}

/* A small ring of buffers so that one message can describe several tensors. */
const char *tt_d(const tt_tensor *t) {
    static _Thread_local char ring[8][TT_DESCR_LEN];
    static _Thread_local int next = 0;
    char *buf = ring[next];
    next = (next + 1) % 8;
    return tt_describe(t, buf);
}

void tt_check_f32(const tt_tensor *t, tt_src src, const char *op, const char *arg) {
    if (!t) tt_error_at(src, op, "argument '%s' is NULL", arg);
    if (t->dtype != TT_F32)
        tt_error_at(src, op, "argument '%s' %s must be float32", arg, tt_d(t));
}

void tt_check_i32(const tt_tensor *t, tt_src src, const char *op, const char *arg) {
    if (!t) tt_error_at(src, op, "argument '%s' is NULL", arg);
    if (t->dtype != TT_I32)
        tt_error_at(src, op, "argument '%s' %s must be an int32 tensor", arg, tt_d(t));
}

int tt_norm_axis(const tt_tensor *t, int axis, tt_src src, const char *op) {
    int a = axis < 0 ? axis + t->ndim : axis;
    if (a < 0 || a >= t->ndim)
        tt_error_at(src, op, "axis %d out of range for %s (ndim %d)", axis, tt_d(t), t->ndim);
    return a;
}

/* tensor.c - creating, naming and freeing tensors. */
#include "internal.h"
#include "rng.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static size_t g_persistent_bytes = 0, g_persistent_count = 0;

void tt_mem_track(long long bytes, int tensors) {
    g_persistent_bytes = (size_t)((long long)g_persistent_bytes + bytes);
    g_persistent_count = (size_t)((long long)g_persistent_count + tensors);
}

void tt_mem_persistent(size_t *bytes, size_t *count) {
    *bytes = g_persistent_bytes;
    *count = g_persistent_count;
}

void *tt_xmalloc(size_t bytes) {
    /* 64-byte alignment: one cache line, one AVX-512 vector. */
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        fprintf(stderr, "tinytorch: out of memory allocating %zu bytes\n", bytes);
        abort();
    }
    return p;
}

void *tt_xcalloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) {
        fprintf(stderr, "tinytorch: allocation of %zu x %zu bytes overflows\n", n, size);
        abort();
    }
    void *p = tt_xmalloc(n * size);
    memset(p, 0, n * size);
    return p;
}

size_t tt_shape_numel(int ndim, const int *shape, tt_src src, const char *op) {
    if (ndim < 0 || ndim > TT_MAX_DIMS)
        tt_error_at(src, op, "ndim %d out of range [0, %d]", ndim, TT_MAX_DIMS);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) tt_error_at(src, op, "negative size %d in axis %d", shape[i], i);
        /* Keep the byte count (n * 4) below 2^62 so no later arithmetic overflows. */
        if (shape[i] && n > ((size_t)1 << 60) / (size_t)shape[i])
            tt_error_at(src, op, "shape too large (overflow at axis %d)", i);
        n *= (size_t)shape[i];
    }
    return n;
}

static void set_shape(tt_tensor *t, tt_dtype dtype, int ndim, const int *shape, size_t n) {
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->size = n;
}

tt_tensor *tt_tensor_new(tt_dtype dtype, int ndim, const int *shape) {
    tt_src src = {__FILE__, __LINE__};
    size_t n = tt_shape_numel(ndim, shape, src, "tensor_new");
    tt_tensor *t = tt_xmalloc(sizeof *t);
    set_shape(t, dtype, ndim, shape, n);
    t->data = tt_xmalloc(n * sizeof(float));
    t->persistent = true;
    tt_mem_track((long long)(n * sizeof(float)), 1);
    return t;
}

tt_tensor *tt_tmp(tt_dtype dtype, int ndim, const int *shape) {
    tt_src src = {__FILE__, __LINE__};
    size_t n = tt_shape_numel(ndim, shape, src, "tmp");
    tt_tensor *t = tt_arena_alloc(sizeof *t);
    set_shape(t, dtype, ndim, shape, n);
    t->data = tt_arena_alloc(n * sizeof(float));
    return t;
}

tt_tensor *tt_tmp_like(const tt_tensor *t) { return tt_tmp(t->dtype, t->ndim, t->shape); }

tt_tensor *tt_zeros(int ndim, const int *shape) { return tt_full(ndim, shape, 0.0f); }
tt_tensor *tt_ones(int ndim, const int *shape) { return tt_full(ndim, shape, 1.0f); }

tt_tensor *tt_full(int ndim, const int *shape, float value) {
    tt_tensor *t = tt_tensor_new(TT_F32, ndim, shape);
    for (size_t i = 0; i < t->size; i++) t->data[i] = value;
    return t;
}

tt_tensor *tt_from_data(int ndim, const int *shape, const float *values) {
    tt_tensor *t = tt_tensor_new(TT_F32, ndim, shape);
    if (t->size) memcpy(t->data, values, t->size * sizeof(float));
    return t;
}

tt_tensor *tt_from_ids(int ndim, const int *shape, const int32_t *ids) {
    tt_tensor *t = tt_tensor_new(TT_I32, ndim, shape);
    if (t->size) memcpy(t->data, ids, t->size * sizeof(int32_t));
    return t;
}

tt_tensor *tt_arange(int n) {
    tt_tensor *t = tt_tensor_new(TT_F32, 1, &n);
    for (int i = 0; i < n; i++) t->data[i] = (float)i;
    return t;
}

tt_tensor *tt_rand_uniform(int ndim, const int *shape, float lo, float hi) {
    tt_tensor *t = tt_tensor_new(TT_F32, ndim, shape);
    tt_rng *r = tt_rng_global();
    for (size_t i = 0; i < t->size; i++) t->data[i] = lo + (hi - lo) * tt_rng_uniform(r);
    return t;
}

tt_tensor *tt_rand_normal(int ndim, const int *shape, float mean, float std) {
    tt_tensor *t = tt_tensor_new(TT_F32, ndim, shape);
    tt_rng *r = tt_rng_global();
    for (size_t i = 0; i < t->size; i++) t->data[i] = mean + std * (float)tt_rng_normal(r);
    return t;
}

tt_tensor *tt_clone(const tt_tensor *src) {
    tt_tensor *t = tt_tensor_new(src->dtype, src->ndim, src->shape);
    if (t->size) memcpy(t->data, src->data, t->size * sizeof(float));
    memcpy(t->name, src->name, sizeof t->name);
    return t;
}

void tt_free(tt_tensor *t) {
    if (!t) return;
    if (!t->persistent) {
        tt_error_at((tt_src){__FILE__, __LINE__}, "free",
                    "%s is a temporary (op output); it is released by tt_tape_reset()",
                    tt_d(t));
    }
    long long bytes = (long long)(t->size * sizeof(float));
    if (t->grad || t->grad_spare) bytes += (long long)(t->size * sizeof(float));
    tt_mem_track(-bytes, -1);
    if (!t->is_view) free(t->data);
    free(t->grad);
    free(t->grad_spare);
    free(t);
}

tt_tensor *tt_set_name(tt_tensor *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    return t;
}

tt_tensor *tt_set_requires_grad(tt_tensor *t, bool on) {
    if (on && t->dtype != TT_F32)
        tt_error_at((tt_src){__FILE__, __LINE__}, "set_requires_grad",
                    "%s: only float tensors can require grad", tt_d(t));
    t->requires_grad = on;
    return t;
}

float tt_item(const tt_tensor *t) {
    if (t->size != 1)
        tt_error_at((tt_src){__FILE__, __LINE__}, "item", "%s has %zu elements, not 1", tt_d(t),
                    t->size);
    return t->dtype == TT_I32 ? (float)tt_ids(t)[0] : t->data[0];
}

float *tt_grad_buffer(tt_tensor *t) {
    float *g;
    if (t->grad_spare) { /* kept by tt_grad_to_none */
        g = t->grad_spare;
        t->grad_spare = NULL;
    } else if (t->persistent) {
        g = tt_xmalloc(t->size * sizeof(float));
        tt_mem_track((long long)(t->size * sizeof(float)), 0);
    } else {
        g = tt_arena_grad_alloc(t->size);
    }
    return g;
}

float *tt_grad_ensure(tt_tensor *t) {
    if (!t->grad) {
        t->grad = tt_grad_buffer(t);
        memset(t->grad, 0, t->size * sizeof(float));
    }
    return t->grad;
}

void tt_zero_grad(tt_tensor *t) {
    if (t && t->grad) memset(t->grad, 0, t->size * sizeof(float));
}

void tt_grad_to_none(tt_tensor *t) {
    if (!t || !t->grad) return;
    if (t->persistent) {
        t->grad_spare = t->grad; /* kept for the next gradient */
    } else {
        tt_arena_grad_free(t->grad, t->size);
    }
    t->grad = NULL;
}

bool tt_same_shape(const tt_tensor *a, const tt_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *tt_shape_str(const tt_tensor *t, char *buf) {
    int n = snprintf(buf, TT_SHAPE_STR_LEN, "[");
    for (int i = 0; i < t->ndim && n < TT_SHAPE_STR_LEN; i++)
        n += snprintf(buf + n, (size_t)(TT_SHAPE_STR_LEN - n), i ? ", %d" : "%d", t->shape[i]);
    if (n < TT_SHAPE_STR_LEN) snprintf(buf + n, (size_t)(TT_SHAPE_STR_LEN - n), "]");
    return buf;
}

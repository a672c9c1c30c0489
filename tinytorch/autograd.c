/* autograd.c - the step arena, the tape, and the reverse sweep.
 *
 * The arena is a list of big blocks handed out by bumping an offset. tt_tape_reset()
 * rewinds it; if a step needed more than the first block, the blocks are merged into
 * one of the total size, so from the second step on a training loop allocates nothing
 * and touches the same (already faulted-in) pages every step.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

/* ---- arena ---------------------------------------------------------------------- */
typedef struct block {
    char *mem;
    size_t cap, used;
} block;

static block *g_blocks = NULL;
static int g_nblocks = 0, g_cur = 0;
static size_t g_peak = 0;      /* largest arena_used() ever        */
static size_t g_step_peak = 0; /* largest arena_used() since reset */

#define ARENA_MIN_BLOCK ((size_t)4 << 20) /* 4 MiB */

static size_t arena_used(void) {
    size_t u = 0;
    for (int i = 0; i <= g_cur && i < g_nblocks; i++) u += g_blocks[i].used;
    return u;
}

static void insert_block(int at, size_t cap) {
    g_blocks = realloc(g_blocks, (size_t)(g_nblocks + 1) * sizeof *g_blocks);
    if (!g_blocks) abort();
    memmove(g_blocks + at + 1, g_blocks + at, (size_t)(g_nblocks - at) * sizeof *g_blocks);
    g_blocks[at].mem = tt_xmalloc(cap);
    g_blocks[at].cap = cap;
    g_blocks[at].used = 0;
    g_nblocks++;
}

void *tt_arena_alloc(size_t bytes) {
    size_t need = (bytes + 63) & ~(size_t)63;
    if (need == 0) need = 64;
    if (g_nblocks == 0) insert_block(0, need > ARENA_MIN_BLOCK ? need : ARENA_MIN_BLOCK);
    while (g_blocks[g_cur].used + need > g_blocks[g_cur].cap) {
        int next = g_cur + 1;
        if (next < g_nblocks && g_blocks[next].used == 0 && g_blocks[next].cap >= need) {
            g_cur = next;
            break;
        }
        size_t cap = g_blocks[g_cur].cap * 2;
        if (cap < need) cap = need;
        insert_block(next, cap);
        g_cur = next;
    }
    block *b = &g_blocks[g_cur];
    void *p = b->mem + b->used;
    b->used += need;
    size_t u = arena_used();
    if (u > g_step_peak) g_step_peak = u;
    if (u > g_peak) g_peak = u;
    return p;
}

/* ---- gradient buffers of temporaries -----------------------------------------------
 * A temporary's gradient is needed only from the backward of its first consumer (which
 * allocates it) until the backward of its producer (which reads it for the last time).
 * backward_from() hands it back right after that, and the next gradient of the same
 * size reuses it, as PyTorch frees a non-leaf's .grad once it has been propagated. In a
 * chain of layers only a few such gradients are alive at once, so a step's arena holds
 * the forward activations plus a handful of gradients instead of a second copy of every
 * activation. Free buffers form a list threaded through their first bytes; a request
 * takes a free buffer of exactly its (64-byte rounded) size, else bumps the arena. The
 * sequence of requests is the same every step, so reuse (and the arena's peak) is too. */
typedef struct free_grad {
    struct free_grad *next;
    size_t bytes;
} free_grad;
static free_grad *g_free_grads = NULL;
static bool g_retain_grads = false;

static size_t grad_bytes(size_t n_floats) {
    size_t b = (n_floats * sizeof(float) + 63) & ~(size_t)63;
    return b ? b : 64;
}

float *tt_arena_grad_alloc(size_t n_floats) {
    size_t bytes = grad_bytes(n_floats);
    for (free_grad **p = &g_free_grads; *p; p = &(*p)->next) {
        if ((*p)->bytes != bytes) continue;
        free_grad *f = *p;
        *p = f->next;
        return (float *)(void *)f;
    }
    return tt_arena_alloc(bytes);
}

void tt_arena_grad_free(float *p, size_t n_floats) {
    free_grad *f = (free_grad *)(void *)p;
    f->bytes = grad_bytes(n_floats);
    f->next = g_free_grads;
    g_free_grads = f;
}

/* Give t's gradient back to the free list (t is a temporary whose producer's backward
 * has just run); t->grad becomes NULL, as for a non-leaf in PyTorch. */
static void release_grad(tt_tensor *t) {
    tt_arena_grad_free(t->grad, t->size);
    t->grad = NULL;
}

/* The output of the backward sweep in progress (its gradient is the caller's to read). */
static const tt_tensor *g_root = NULL;

/* Whether backward_from() releases t's gradient right after its producer's backward. */
static bool releases_grad(const tt_tensor *t) {
    return !t->persistent && t != g_root && !t->retain_grad && !g_retain_grads;
}

bool tt_grad_pass_through(tt_node *n) {
    tt_tensor *in = n->in[0], *out = n->out;
    if (!in->requires_grad || in->grad || in->persistent || in->size != out->size ||
        !out->grad || !releases_grad(out))
        return false;
    in->grad = out->grad;
    out->grad = NULL;
    return true;
}

bool tt_grad_disposable(const tt_node *n) {
    return n->out->grad && releases_grad(n->out);
}

bool tt_set_retain_grads(bool on) {
    bool old = g_retain_grads;
    g_retain_grads = on;
    return old;
}

void tt_retain_grad(tt_tensor *t) {
    if (t) t->retain_grad = true;
}

static void arena_reset(void) {
    g_free_grads = NULL;
    if (g_nblocks > 1) {
        /* The step spilled into several blocks. The next step makes about the same
         * allocations, which fit back to back in one block of the largest peak so far
         * (the spill blocks also hold unused tails), so merge into one block of that
         * size plus 1/32, 1 MiB rounded. Not this step's peak: with MoE routing the
         * sizes vary from step to step, and a block cut to a smaller step's peak would
         * spill, be freed and be faulted in again step after step (medium benchmark:
         * 200 MB of page faults a step). The largest peak converges in a few steps. */
        size_t need = g_peak + g_peak / 32;
        need = (need + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
        if (need < ARENA_MIN_BLOCK) need = ARENA_MIN_BLOCK;
        for (int i = 0; i < g_nblocks; i++) free(g_blocks[i].mem);
        g_nblocks = 0;
        insert_block(0, need);
    }
    for (int i = 0; i < g_nblocks; i++) g_blocks[i].used = 0;
    g_cur = 0;
    g_step_peak = 0;
}

/* ---- tape --------------------------------------------------------------------------- */
static tt_node **g_tape = NULL;
static int g_tape_len = 0, g_tape_cap = 0;
static int g_no_grad_depth = 0;
static bool g_grad_enabled = true;

bool tt_grad_enabled(void) { return g_grad_enabled && g_no_grad_depth == 0; }

bool tt_set_grad_enabled(bool on) {
    bool old = g_grad_enabled;
    g_grad_enabled = on;
    return old;
}

void tt_no_grad_begin(void) { g_no_grad_depth++; }

void tt_no_grad_end(void) {
    if (g_no_grad_depth == 0)
        tt_error_at((tt_src){__FILE__, __LINE__}, "no_grad_end", "without tt_no_grad_begin");
    g_no_grad_depth--;
}

int tt_tape_len(void) { return g_tape_len; }

tt_node *tt_tape_node(int index) {
    return (index >= 0 && index < g_tape_len) ? g_tape[index] : NULL;
}

void tt_tape_reset(void) {
    g_tape_len = 0;
    arena_reset();
    if (tt_prof_on) tt_prof_restart(); /* the next forward's first op starts here */
}

tt_mark tt_mark_get(void) {
    tt_mark m = {g_cur, g_nblocks ? g_blocks[g_cur].used : 0, g_tape_len};
    return m;
}

void tt_mark_release(tt_mark m) {
    g_free_grads = NULL; /* free gradient buffers may lie beyond the mark */
    if (m.tape > g_tape_len || (g_nblocks && m.block > g_cur))
        tt_error_at((tt_src){__FILE__, __LINE__}, "mark_release",
                    "mark is newer than the arena (released twice or after a reset?)");
    for (int i = m.block + 1; i <= g_cur && i < g_nblocks; i++) g_blocks[i].used = 0;
    if (g_nblocks) {
        g_cur = m.block;
        g_blocks[g_cur].used = m.offset;
    }
    g_tape_len = m.tape;
}

void tt_mem_persistent(size_t *bytes, size_t *count); /* tensor.c */

tt_mem_stats tt_mem_get_stats(void) {
    tt_mem_stats s = {0};
    s.arena_used = arena_used();
    for (int i = 0; i < g_nblocks; i++) s.arena_capacity += g_blocks[i].cap;
    s.arena_peak = g_peak;
    tt_mem_persistent(&s.persistent, &s.n_persistent);
    return s;
}

bool tt_needs_grad(int n_in, tt_tensor *const *in) {
    if (!tt_grad_enabled()) return false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

/* ---- anomaly mode ---------------------------------------------------------------------- */
static bool g_anomaly = false;
static long g_anomaly_step = -1;

void tt_set_detect_anomaly(bool on) { g_anomaly = on; }
bool tt_detect_anomaly(void) { return g_anomaly; }
void tt_anomaly_set_step(long step) { g_anomaly_step = step; }
long tt_anomaly_step(void) { return g_anomaly_step; }

/* Index of the first NaN/Inf among p[0..n), or n if all are finite. */
static size_t first_nonfinite(const float *p, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (!isfinite(p[k])) return k;
    return n;
}

static const char *value_name(float v) { return isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"; }

static const char *step_str(char *buf, size_t len) {
    if (g_anomaly_step < 0) return "?";
    snprintf(buf, len, "%ld", g_anomaly_step);
    return buf;
}

/* Called by tt_record for every op when anomaly mode is on, before anything else. */
static void anomaly_forward(const char *op, const tt_tensor *out, int n_in,
                            tt_tensor *const *in, tt_src src) {
    if (!out || out->dtype != TT_F32 || !out->data) return;
    size_t k = first_nonfinite(out->data, out->size);
    if (k == out->size) return;
    float v = out->data[k];
    char step[32];
    /* Who brought the non-finite value in? */
    bool inf_from_op_input = false;
    for (int i = 0; i < n_in; i++) {
        const tt_tensor *t = in[i];
        if (!t || t->dtype != TT_F32 || !t->data) continue;
        size_t j = first_nonfinite(t->data, t->size);
        if (j == t->size) continue;
        float w = t->data[j];
        /* A constant leaf (no grad) holding -inf is an additive mask; a parameter or a
         * leaf holding NaN or +inf is broken data. */
        if (!t->node && !(w < 0 && !isnan(w) && !t->requires_grad))
            tt_error_at(src, "anomaly",
                        "input %d of '%s', %s, holds %s at element %zu before the op ran (a "
                        "leaf: parameter or data; was it broken by an optimizer update or "
                        "the input?), step %s",
                        i, op, tt_d(t), value_name(w), j, step_str(step, sizeof step));
        if (isnan(w))
            tt_error_at(src, "anomaly",
                        "input %d of '%s', %s, holds nan at element %zu (made by '%s', "
                        "created at %s:%d), step %s",
                        i, op, tt_d(t), j, t->node->op, t->node->src.file, t->node->src.line,
                        step_str(step, sizeof step));
        inf_from_op_input = true;
    }
    /* Intended -inf: a mask, or Inf carried on from a mask upstream (an op output,
     * already judged, or a constant leaf). NaN never is. */
    if (!isnan(v) && (inf_from_op_input || (v < 0 && strstr(op, "mask")))) return;
    char inputs[4 * TT_DESCR_LEN] = "";
    size_t used = 0;
    for (int i = 0; i < n_in && used < sizeof inputs; i++)
        used += (size_t)snprintf(inputs + used, sizeof inputs - used, "%s%s", i ? ", " : "",
                                 tt_d(in[i]));
    tt_error_at(src, "anomaly",
                "forward of '%s' produced %s in its output %s at element %zu (inputs: %s), "
                "step %s",
                op, value_name(v), tt_d(out), k, inputs, step_str(step, sizeof step));
}

/* After node n's backward: the gradients of its inputs must be finite. */
static void anomaly_backward(const tt_node *n, tt_src src) {
    for (int i = 0; i < n->n_in; i++) {
        const tt_tensor *t = n->in[i];
        if (!t || !t->grad) continue;
        size_t k = first_nonfinite(t->grad, t->size);
        if (k == t->size) continue;
        char step[32];
        tt_error_at(src, "anomaly",
                    "backward of '%s' (created at %s:%d) produced %s in the gradient of %s "
                    "(input %d) at element %zu, step %s",
                    n->op, n->src.file ? n->src.file : "?", n->src.line,
                    value_name(t->grad[k]), tt_d(t), i, k, step_str(step, sizeof step));
    }
}

tt_node *tt_record(const char *op, tt_backward_fn backward, tt_tensor *out, int n_in,
                   tt_tensor *const *in, tt_src src) {
    if (g_anomaly) anomaly_forward(op, out, n_in, in, src);
    if (tt_prof_on) tt_prof_forward(op, src, n_in, in);
    if (!tt_needs_grad(n_in, in)) return NULL;
    if (g_tape_len == g_tape_cap) {
        g_tape_cap = g_tape_cap ? 2 * g_tape_cap : 1024;
        g_tape = realloc(g_tape, (size_t)g_tape_cap * sizeof *g_tape);
        if (!g_tape) abort();
    }
    tt_node *n = tt_arena_alloc(sizeof *n);
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = backward;
    n->out = out;
    n->n_in = n_in;
    n->in = tt_arena_alloc((size_t)n_in * sizeof *n->in);
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    n->src = src;
    n->index = g_tape_len;
    g_tape[g_tape_len++] = n;
    out->node = n;
    out->requires_grad = true;
    return n;
}

float *tt_grad_acc(tt_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    return tt_grad_ensure(t);
}

float *tt_grad_acc_fresh(tt_tensor *t, bool *fresh) {
    *fresh = false;
    if (!t || !t->requires_grad) return NULL;
    if (!t->grad) { /* first contribution: the caller overwrites, no zeroing */
        t->grad = tt_grad_buffer(t);
        *fresh = true;
    }
    return t->grad;
}

void tt_grad_add_same(tt_tensor *t, const float *g) {
    bool fresh;
    float *gt = tt_grad_acc_fresh(t, &fresh);
    if (!gt) return;
    if (fresh)
        tt_copy_into(gt, g, t->size);
    else
        tt_add_into(gt, g, t->size);
}

/* ---- mutation testing ------------------------------------------------------------------ */
static const char *g_mutate_op = NULL;
static float g_mutate_factor = 1.0f;

void tt_debug_mutate_backward(const char *op, float factor) {
    g_mutate_op = op;
    g_mutate_factor = factor;
}

/* Run n->backward but scale what it adds to each input gradient by g_mutate_factor:
 * g_new = g_old + factor * (g_after - g_old). */
static void run_mutated(tt_node *n) {
    float *saved[64] = {0};
    int n_in = n->n_in < 64 ? n->n_in : 64;
    for (int i = 0; i < n_in; i++) {
        tt_tensor *t = n->in[i];
        bool dup = false;
        for (int j = 0; j < i; j++) dup |= (n->in[j] == t);
        if (dup || !tt_grad_acc(t)) continue;
        saved[i] = malloc(t->size * sizeof(float));
        memcpy(saved[i], t->grad, t->size * sizeof(float));
    }
    n->backward(n);
    for (int i = 0; i < n_in; i++) {
        if (!saved[i]) continue;
        tt_tensor *t = n->in[i];
        for (size_t k = 0; k < t->size; k++)
            t->grad[k] = saved[i][k] + g_mutate_factor * (t->grad[k] - saved[i][k]);
        free(saved[i]);
    }
}

/* ---- the reverse sweep ----------------------------------------------------------------- */
static void backward_from(tt_tensor *out, const float *seed, tt_src src) {
    if (!out) tt_error_at(src, "backward", "output is NULL");
    if (!out->requires_grad)
        tt_error_at(src, "backward",
                    "%s does not require grad (no input of its graph requires grad, or it "
                    "was computed in a no-grad scope)",
                    tt_d(out));
    /* Gradients of intermediate tensors are recomputed from scratch by each sweep
     * (they are kept after it so a debugger can inspect them). */
    int last = out->node ? out->node->index : -1;
    g_root = out;
    if (out->node && (last >= g_tape_len || g_tape[last] != out->node))
        tt_error_at(src, "backward", "%s belongs to a tape that was reset", tt_d(out));
    for (int i = 0; i <= last; i++) {
        tt_tensor *t = g_tape[i]->out;
        if (t->grad && !t->persistent) memset(t->grad, 0, t->size * sizeof(float));
    }
    float *g = tt_grad_ensure(out);
    for (size_t k = 0; k < out->size; k++) g[k] += seed ? seed[k] : 1.0f;
    if (g_anomaly) {
        size_t k = first_nonfinite(g, out->size);
        if (k < out->size)
            tt_error_at(src, "anomaly", "the gradient seeding backward of %s holds %s at element %zu",
                        tt_d(out), value_name(g[k]), k);
    }
    const bool prof = tt_prof_on;
    if (prof) tt_prof_backward_begin();
    for (int i = last; i >= 0; i--) {
        tt_node *n = g_tape[i];
        if (!n->out->grad) continue; /* not on a path to `out` */
        const double t0 = prof ? tt_prof_now() : 0.0;
        if (g_mutate_op && strcmp(g_mutate_op, n->op) == 0)
            run_mutated(n);
        else
            n->backward(n);
        if (prof) tt_prof_backward(n, tt_prof_now() - t0);
        if (g_anomaly) anomaly_backward(n, src);
        /* n->out's gradient has been propagated to n's inputs: done with it, unless the
         * caller asked to keep it (the root, tt_retain_grad, tt_set_retain_grads) */
        tt_tensor *t = n->out;
        if (t->grad && releases_grad(t)) release_grad(t); /* (NULL: passed through) */
    }
    g_root = NULL;
    if (prof) tt_prof_restart();
}

void tt_backward_(tt_tensor *loss, tt_src src) {
    if (loss && loss->size != 1)
        tt_error_at(src, "backward",
                    "%s is not a scalar; use tt_backward_seed() with a gradient of its shape",
                    tt_d(loss));
    backward_from(loss, NULL, src);
}

void tt_backward_seed_(tt_tensor *out, const float *seed, tt_src src) {
    if (!seed) tt_error_at(src, "backward_seed", "seed is NULL for %s", tt_d(out));
    backward_from(out, seed, src);
}

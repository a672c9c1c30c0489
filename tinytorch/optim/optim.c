/* optim.c - SGD (momentum, Nesterov), AdamW, gradient-norm clipping, lr schedules.
 *
 * The updates follow torch.optim.SGD / torch.optim.AdamW (single-tensor code path)
 * operation by operation in float32, with the scalar coefficients (bias corrections,
 * step size) computed in double as Python does and rounded to float once.
 */
#include "optim.h"

#include "../internal.h"

#include <math.h>
#include <stdlib.h>

#define OPT_SRC ((tt_src){__FILE__, __LINE__})

/* Below this many elements in all, a step runs on one thread (a parallel region costs
 * about as much as updating 100 K floats once its threads sleep between regions). */
#define OPT_PAR_MIN ((size_t)1 << 18)

/* "optim.<kind>.<param name>" into name[TT_NAME_LEN]; stops if it does not fit. */
static void state_name(char *name, const char *kind, const tt_tensor *p) {
    int k = snprintf(name, TT_NAME_LEN, "optim.%s.%s", kind, p->name);
    if (k < 0 || k >= TT_NAME_LEN)
        tt_error_at(OPT_SRC, "optim",
                    "state name 'optim.%s.%s' is longer than %d bytes; shorten the parameter "
                    "name",
                    kind, p->name, TT_NAME_LEN - 1);
}

/* A zero-filled state tensor "optim.<kind>.<param name>" registered in o->state. */
static tt_tensor *new_state(tt_optim *o, const char *kind, const tt_tensor *p) {
    char name[TT_NAME_LEN];
    state_name(name, kind, p);
    tt_tensor *s = tt_zeros(p->ndim, p->shape);
    tt_set_name(s, "%s", name);
    tt_params_add(&o->state, s);
    return s;
}

static tt_optim *optim_new(tt_params *p, tt_optim_kind kind, float lr, float weight_decay,
                           int n_slots_per_param, const char *kind1, const char *kind2) {
    if (!p) tt_error_at(OPT_SRC, "optim", "parameter list is NULL");
    if (!(lr >= 0.0f)) tt_error_at(OPT_SRC, "optim", "invalid learning rate %g", lr);
    if (!(weight_decay >= 0.0f))
        tt_error_at(OPT_SRC, "optim", "invalid weight_decay %g", weight_decay);
    /* validate the names first, so that an error leaves nothing allocated */
    for (int i = 0; i < p->n && n_slots_per_param > 0; i++) {
        const tt_tensor *t = p->t[i];
        char name[TT_NAME_LEN];
        if (!t->requires_grad || t->dtype != TT_F32) continue;
        if (!t->name[0])
            tt_error_at(OPT_SRC, "optim",
                        "parameter %d %s is unnamed; optimizer state is named after parameters",
                        i, tt_d(t));
        state_name(name, n_slots_per_param > 1 ? kind2 : kind1, t);
    }
    tt_optim *o = tt_xcalloc(1, sizeof *o);
    o->kind = kind;
    o->params = p;
    o->lr = lr;
    o->weight_decay = weight_decay;
    o->n_slots = p->n;
    o->slot1 = tt_xcalloc((size_t)p->n + 1, sizeof *o->slot1);
    o->slot2 = tt_xcalloc((size_t)p->n + 1, sizeof *o->slot2);
    o->chunk_param = tt_xcalloc((size_t)p->n + 1, sizeof *o->chunk_param);
    o->chunk_first = tt_xcalloc((size_t)p->n + 1, sizeof *o->chunk_first);
    for (int i = 0; i < p->n; i++) {
        const tt_tensor *t = p->t[i];
        if (!t->requires_grad || t->dtype != TT_F32 || n_slots_per_param == 0) continue;
        o->slot1[i] = new_state(o, kind1, t);
        if (n_slots_per_param > 1) o->slot2[i] = new_state(o, kind2, t);
    }
    return o;
}

tt_optim *tt_optim_sgd(tt_params *p, float lr, float momentum, float weight_decay,
                       bool nesterov) {
    if (!(momentum >= 0.0f)) tt_error_at(OPT_SRC, "optim_sgd", "invalid momentum %g", momentum);
    if (nesterov && momentum <= 0.0f)
        tt_error_at(OPT_SRC, "optim_sgd", "Nesterov momentum requires a momentum > 0");
    tt_optim *o = optim_new(p, TT_OPTIM_SGD, lr, weight_decay, momentum > 0.0f ? 1 : 0,
                            "momentum", NULL);
    o->momentum = momentum;
    o->nesterov = nesterov;
    return o;
}

tt_optim *tt_optim_adamw(tt_params *p, float lr, float beta1, float beta2, float eps,
                         float weight_decay) {
    if (!(beta1 >= 0.0f && beta1 < 1.0f))
        tt_error_at(OPT_SRC, "optim_adamw", "invalid beta1 %g (must be in [0, 1))", beta1);
    if (!(beta2 >= 0.0f && beta2 < 1.0f))
        tt_error_at(OPT_SRC, "optim_adamw", "invalid beta2 %g (must be in [0, 1))", beta2);
    if (!(eps >= 0.0f)) tt_error_at(OPT_SRC, "optim_adamw", "invalid eps %g", eps);
    tt_optim *o = optim_new(p, TT_OPTIM_ADAMW, lr, weight_decay, 2, "exp_avg", "exp_avg_sq");
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    return o;
}

/* SGD, per element (torch.optim.SGD with dampening 0):
 *   g = grad + wd * w
 *   buf = mu * buf + g                      (buf starts at 0, so buf_1 = g as in torch)
 *   g = nesterov ? g + mu * buf : buf
 *   w = w - lr * g                                                                  */
/* One chunk of the SGD update, vectorised (TT_CLONES, VEC): each lane does the scalar
 * loop's IEEE operations, so the bits do not depend on the vector width. The plain step
 * (no weight decay, no momentum) is the common case and gets its own loop. */
TT_CLONES static void sgd_chunk(float *restrict x, const float *restrict gr, float *restrict b,
                                size_t n, float lr, float wd, float mu, bool nesterov) {
    if (!b) {
        if (wd == 0.0f) {
            VEC for (size_t k = 0; k < n; k++) x[k] = x[k] - lr * gr[k];
        } else {
            VEC for (size_t k = 0; k < n; k++) x[k] = x[k] - lr * (gr[k] + wd * x[k]);
        }
        return;
    }
    /* (wd * x is added only when wd != 0: with wd = 0 an infinite x would give NaN) */
    const bool decay = wd != 0.0f;
    VEC for (size_t k = 0; k < n; k++) {
        float g = gr[k];
        if (decay) g = g + wd * x[k];
        const float buf = mu * b[k] + g;
        b[k] = buf;
        g = nesterov ? g + mu * buf : buf;
        x[k] = x[k] - lr * g;
    }
}

/* AdamW, per element (torch.optim.AdamW, t = step count after increment):
 *   w = w * (1 - lr * wd)
 *   m = b1 * m + (1 - b1) * g
 *   v = b2 * v + (1 - b2) * g * g
 *   w = w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * with the scalars below computed once per step (double, rounded once). */
typedef struct adamw_coef {
    float step_size, bc2_sqrt, decay, b1, b2, c1, c2, eps;
    bool wd;
} adamw_coef;

static adamw_coef adamw_coefs(const tt_optim *o) {
    const double t = (double)o->step;
    const double bc1 = 1.0 - pow((double)o->beta1, t);
    const double bc2 = 1.0 - pow((double)o->beta2, t);
    return (adamw_coef){.step_size = (float)((double)o->lr / bc1),
                        .bc2_sqrt = (float)sqrt(bc2),
                        .decay = (float)(1.0 - (double)o->lr * (double)o->weight_decay),
                        .b1 = o->beta1,
                        .b2 = o->beta2,
                        .c1 = (float)(1.0 - (double)o->beta1),
                        .c2 = (float)(1.0 - (double)o->beta2),
                        .eps = o->eps,
                        .wd = o->weight_decay != 0.0f};
}

/* (vectorised like sgd_chunk: each lane the same IEEE operations as the scalar loop, sqrt
 * and division correctly rounded, no contraction - the same bits) */
TT_CLONES static void adamw_chunk(float *restrict x, const float *restrict gr,
                                  float *restrict mm, float *restrict vv, size_t n,
                                  const adamw_coef *c) {
    /* (x * 1 is x, bit for bit: no weight decay multiplies by 1) */
    const float decay = c->wd ? c->decay : 1.0f, b1 = c->b1, b2 = c->b2, c1 = c->c1,
                c2 = c->c2, bc2_sqrt = c->bc2_sqrt, eps = c->eps, step = c->step_size;
    VEC for (size_t k = 0; k < n; k++) {
        const float g = gr[k];
        x[k] = x[k] * decay;
        mm[k] = b1 * mm[k] + c1 * g;
        vv[k] = b2 * vv[k] + c2 * (g * g);
        const float denom = sqrtf(vv[k]) / bc2_sqrt + eps;
        x[k] = x[k] - step * (mm[k] / denom);
    }
}

/* ---- one step over all parameters -----------------------------------------------------
 * Every parameter with a gradient is cut into chunks of OPT_CHUNK elements, and all the
 * chunks of all the parameters form one list, split between the threads in one parallel
 * region: a model's hundreds of parameters cost one region's start and end (not one
 * region each), the small ones are shared out too, and AdamW runs on every thread as SGD
 * does. Each element is updated by one thread with the serial arithmetic: the same bits
 * for any thread count (tests/test_optim.c). Gradient clipping uses the same list. */
#define OPT_CHUNK 16384

typedef struct chunk_list {
    int n;          /* tensors listed                                           */
    int *param;     /* [n] their indices in the tt_params                       */
    long *first;    /* [n + 1] first chunk of each; first[n] = number of chunks */
    size_t elems;   /* elements in all                                          */
} chunk_list;

/* An empty list in param[max + 1], first[max + 1] (the caller's). */
static void chunk_list_init(chunk_list *l, int *param, long *first) {
    *l = (chunk_list){.param = param, .first = first};
    l->first[0] = 0;
}

static void chunk_list_add(chunk_list *l, int i, size_t size) {
    l->param[l->n++] = i;
    l->first[l->n] = l->first[l->n - 1] + (long)((size + OPT_CHUNK - 1) / OPT_CHUNK);
    l->elems += size;
}

/* The list position k of the tensor holding chunk c: the last k with first[k] <= c. */
static int chunk_owner(const chunk_list *l, long c) {
    int lo = 0, hi = l->n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (l->first[mid] <= c)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Runs fn(job, k, c, off, len) for the chunks c of the list, k the list position of its
 * tensor, off the chunk's first element in it, len its length (size: tensor k's size),
 * on as many threads as the elements justify. */
typedef void (*chunk_task)(void *job, int k, long c, size_t off, size_t len);
typedef struct chunk_run {
    const chunk_list *l;
    tt_tensor *const *t; /* the tt_params' tensors */
    chunk_task fn;
    void *job;
} chunk_run;

static void chunk_range(void *ctx, long c0, long c1) {
    const chunk_run *r = ctx;
    const chunk_list *l = r->l;
    int k = chunk_owner(l, c0);
    for (long c = c0; c < c1; c++) {
        while (c >= l->first[k + 1]) k++;
        const size_t off = (size_t)(c - l->first[k]) * OPT_CHUNK;
        const size_t size = r->t[l->param[k]]->size;
        r->fn(r->job, k, c, off, size - off < OPT_CHUNK ? size - off : OPT_CHUNK);
    }
}

static void chunk_list_run(const chunk_list *l, tt_tensor *const *t, chunk_task fn, void *job) {
    chunk_run r = {l, t, fn, job};
    const long chunks = l->first[l->n];
    tt_parallel_for(chunks, tt_loop_threads(l->elems, OPT_PAR_MIN, chunks), chunk_range, &r);
}

typedef struct opt_job {
    const tt_optim *o;
    const chunk_list *l;
    adamw_coef adam;
} opt_job;

static void opt_chunk(void *p, int k, long c, size_t off, size_t len) {
    (void)c;
    const opt_job *j = p;
    const tt_optim *o = j->o;
    const int i = j->l->param[k];
    tt_tensor *w = o->params->t[i];
    float *b1 = o->slot1[i] ? o->slot1[i]->data + off : NULL;
    if (o->kind == TT_OPTIM_SGD)
        sgd_chunk(w->data + off, w->grad + off, b1, len, o->lr, o->weight_decay, o->momentum,
                  o->nesterov);
    else
        adamw_chunk(w->data + off, w->grad + off, b1, o->slot2[i]->data + off, len, &j->adam);
}

void tt_optim_step(tt_optim *o) {
    o->step++;
    tt_params *p = o->params;
    const int n = p->n < o->n_slots ? p->n : o->n_slots;
    const bool stateless = o->kind == TT_OPTIM_SGD && o->momentum == 0.0f;
    chunk_list l; /* (in buffers made with the optimizer: a step allocates nothing) */
    chunk_list_init(&l, o->chunk_param, o->chunk_first);
    for (int i = 0; i < n; i++) {
        const tt_tensor *w = p->t[i];
        if (!w->requires_grad || !w->grad || w->dtype != TT_F32 || w->size == 0) continue;
        if (!stateless && !o->slot1[i]) continue; /* did not require grad at construction */
        chunk_list_add(&l, i, w->size);
    }
    opt_job j = {.o = o, .l = &l};
    if (o->kind == TT_OPTIM_ADAMW) j.adam = adamw_coefs(o);
    chunk_list_run(&l, p->t, opt_chunk, &j);
}

void tt_optim_zero_grad(tt_optim *o) { tt_params_zero_grad(o->params); }

void tt_optim_grad_to_none(tt_optim *o) { tt_params_grad_to_none(o->params); }

void tt_optim_free(tt_optim *o) {
    if (!o) return;
    tt_params_free(&o->state);
    free(o->slot1);
    free(o->slot2);
    free(o->chunk_param);
    free(o->chunk_first);
    free(o);
}

/* ---- gradient clipping ------------------------------------------------------------------
 * The squares are summed in double over the chunk list: each chunk's sum by one thread
 * (8 lanes, lane l taking elements l, l + 8, ...; then the lanes in order and the tail),
 * and the chunks' sums added in chunk order afterwards - the same bits for any thread
 * count and vector width. */
TT_CLONES static double sumsq_chunk(const float *restrict g, size_t n) {
    double lane[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) lane[l] += (double)g[k + l] * (double)g[k + l];
    double s = 0.0;
    for (int l = 0; l < 8; l++) s += lane[l];
    for (; k < n; k++) s += (double)g[k] * (double)g[k];
    return s;
}

typedef struct clip_job {
    const chunk_list *l;
    tt_tensor *const *t;
    double *partial; /* [chunks] */
    float coef;
} clip_job;

static void sumsq_task(void *p, int k, long c, size_t off, size_t len) {
    const clip_job *j = p;
    j->partial[c] = sumsq_chunk(j->t[j->l->param[k]]->grad + off, len);
}

TT_CLONES static void scale_task(void *p, int k, long c, size_t off, size_t len) {
    (void)c;
    const clip_job *j = p;
    float *restrict g = j->t[j->l->param[k]]->grad + off;
    const float coef = j->coef;
    VEC for (size_t e = 0; e < len; e++) g[e] *= coef;
}

float tt_clip_grad_norm(tt_params *p, float max_norm) {
    chunk_list l;
    chunk_list_init(&l, tt_xmalloc((size_t)(p->n + 1) * sizeof(int)),
                    tt_xmalloc((size_t)(p->n + 1) * sizeof(long)));
    for (int i = 0; i < p->n; i++) {
        const tt_tensor *t = p->t[i];
        if (t->requires_grad && t->grad && t->size > 0) chunk_list_add(&l, i, t->size);
    }
    const long chunks = l.first[l.n];
    clip_job j = {.l = &l, .t = p->t, .partial = tt_xmalloc((size_t)(chunks + 1) * sizeof(double))};
    chunk_list_run(&l, p->t, sumsq_task, &j);
    double sq = 0.0;
    for (long c = 0; c < chunks; c++) sq += j.partial[c];
    const double norm = sqrt(sq);
    const double coef = (double)max_norm / (norm + 1e-6);
    if (isfinite(norm) && coef < 1.0) {
        j.coef = (float)coef;
        chunk_list_run(&l, p->t, scale_task, &j);
    }
    free(j.partial);
    free(l.param);
    free(l.first);
    return (float)norm;
}

float tt_lr_at(const tt_lr_schedule *s, long step) {
    if (s->kind == TT_LR_CONSTANT) return s->base_lr;
    const double base = s->base_lr, lo = s->min_lr;
    if (step < 0) step = 0;
    if (step < s->warmup_steps) return (float)(base * (double)(step + 1) / s->warmup_steps);
    if (step >= s->total_steps) return s->min_lr;
    const double progress =
        (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
    return (float)(lo + (base - lo) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress)));
}

/* index.c - lookup and routing: embedding, index_select, index_add, gather, topk.
 *
 * All indices are int32 tensors and are range-checked in the forward pass, before any
 * output is written; the message names the op, the offending index value, its position
 * and the tensors involved.
 *
 *   embedding     y[p, :]    = W[ids[p], :]          dW[ids[p], :] += g[p, :]
 *   index_select  y[m, ...]  = x[idx[m], ...]        dx[idx[m], ...] += g[m, ...]
 *   index_add     y          = dst;                  d dst += g
 *                 y[idx[m]] += src[m]                d src[m, ...] += g[idx[m], ...]
 *   gather        y[r, j]    = x[r, idx[r, j]]       dx[r, idx[r, j]] += g[r, j]
 *   topk          y[r, j]    = x[r, sel[r, j]]       dx[r, sel[r, j]] += g[r, j]
 *
 * Scatter-adds (the backward of embedding / index_select, the forward of index_add) run
 * serially over the index list so that repeated indices accumulate in a fixed order
 * (bit-identical for any thread count); their inner loops are contiguous rows that the
 * compiler vectorises. Row copies and per-row work with a single writer per output row
 * are parallelised with OpenMP when large.
 */
#include "../internal.h"
#include "../kernels/vmath.h"

#include <math.h>


/* OpenMP pays off only for a few hundred KB of work. */
#define PAR_MIN_ELEMS ((size_t)1 << 16)

/* "[1, 2]": the multi-index of flat element `flat` of t (for error messages). */
static const char *position_str(const tt_tensor *t, size_t flat, char *buf, size_t len) {
    int idx[TT_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        size_t n = (size_t)t->shape[d];
        idx[d] = n ? (int)(flat % n) : 0;
        flat = n ? flat / n : 0;
    }
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < t->ndim && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %d" : "%d", idx[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

/* Every entry of the int32 tensor `idx` must lie in [0, n). `what` names the indexed
 * dimension in the message ("rows of", "last axis of"). */
static void check_range(const tt_tensor *idx, int n, const tt_tensor *target, const char *kind,
                        tt_src src, const char *op) {
    const int32_t *id = tt_ids(idx);
    for (size_t p = 0; p < idx->size; p++) {
        if (id[p] < 0 || id[p] >= n) {
            char pos[64];
            tt_error_at(src, op, "%s %d at position %s of %s is out of range [0, %d) for %s",
                        kind, (int)id[p], position_str(idx, p, pos, sizeof pos), tt_d(idx), n,
                        tt_d(target));
        }
    }
}

/* Elements per row of a tensor viewed as [shape[0], rest]. */
static size_t row_elems(const tt_tensor *t) {
    size_t r = 1;
    for (int d = 1; d < t->ndim; d++) r *= (size_t)t->shape[d];
    return r;
}

/* The parallel loops below split between threads with tt_parallel_for; each range
 * function sees its loop as one of these. */
typedef struct idx_job {
    float *dst;         /* the output (or gradient) written               */
    const float *src;   /* the rows (or gradient) read                    */
    const int32_t *idx; /* the index list                                 */
    int32_t *sel;       /* topk: the selected indices written             */
    size_t m_rows, row; /* index entries, elements a row                  */
    size_t E, K;        /* gather / topk: the last axes of x and of idx/y */
} idx_job;

/* dst[idx[m], :] += rows[m, :] for m in order: repeated indices accumulate in a fixed
 * order. Threads split the columns, never the rows, so every element still receives its
 * terms in the order of m whatever the thread count. */
#define SCATTER_COLS 64 /* columns per task: a 256-byte strip of each row */
static void scatter_add_blocks(void *ctx, long k0, long k1) {
    const idx_job *j = ctx;
    const size_t row = j->row;
    for (long blk = k0; blk < k1; blk++) {
        size_t c0 = (size_t)blk * SCATTER_COLS;
        size_t c1 = c0 + SCATTER_COLS < row ? c0 + SCATTER_COLS : row;
        for (size_t m = 0; m < j->m_rows; m++) {
            float *restrict d = j->dst + (size_t)j->idx[m] * row;
            const float *restrict s = j->src + m * row;
            VEC for (size_t c = c0; c < c1; c++) d[c] += s[c];
        }
    }
}

static void scatter_add_rows(float *dst, const int32_t *idx, size_t m_rows, const float *rows,
                             size_t row) {
    idx_job j = {.dst = dst, .src = rows, .idx = idx, .m_rows = m_rows, .row = row};
    long nblk = (long)((row + SCATTER_COLS - 1) / SCATTER_COLS);
    tt_parallel_for(nblk, tt_loop_threads(m_rows * row, PAR_MIN_ELEMS, nblk), scatter_add_blocks,
                    &j);
}

/* out[m, :] = x[idx[m], :] (one writer per output row). */
static void gather_rows_range(void *ctx, long m0, long m1) {
    const idx_job *j = ctx;
    for (long m = m0; m < m1; m++)
        memcpy(j->dst + (size_t)m * j->row, j->src + (size_t)j->idx[m] * j->row,
               j->row * sizeof(float));
}

static void gather_rows(float *out, const float *x, const int32_t *idx, size_t m_rows,
                        size_t row) {
    idx_job j = {.dst = out, .src = x, .idx = idx, .m_rows = m_rows, .row = row};
    tt_parallel_for((long)m_rows, tt_loop_threads(m_rows * row, PAR_MIN_ELEMS, (long)m_rows),
                    gather_rows_range, &j);
}

/* ---- embedding ------------------------------------------------------------------------ */
/* y[p, :] = W[ids[p], :]   =>   dW[ids[p], :] += g[p, :]   (repeated ids accumulate) */
static void embedding_backward(tt_node *n) {
    tt_tensor *w = n->in[0], *ids = n->in[1];
    float *gw = tt_grad_acc(w);
    if (!gw) return;
    scatter_add_rows(gw, tt_ids(ids), ids->size, n->out->grad, (size_t)w->shape[1]);
}

tt_tensor *tt_embedding_(tt_tensor *weight, tt_tensor *ids, tt_src src) {
    const char *op = "embedding";
    tt_check_f32(weight, src, op, "weight");
    tt_check_i32(ids, src, op, "ids");
    TT_CHECK(weight->ndim == 2, src, op, "weight %s must be 2-D [vocab, dim]", tt_d(weight));
    TT_CHECK(ids->ndim < TT_MAX_DIMS, src, op,
             "ids %s has %d axes; the output would exceed %d", tt_d(ids), ids->ndim,
             TT_MAX_DIMS);
    int V = weight->shape[0], D = weight->shape[1];
    check_range(ids, V, weight, "id", src, op);
    int shape[TT_MAX_DIMS];
    for (int d = 0; d < ids->ndim; d++) shape[d] = ids->shape[d];
    shape[ids->ndim] = D;
    tt_tensor *y = tt_tmp(TT_F32, ids->ndim + 1, shape);
    gather_rows(y->data, weight->data, tt_ids(ids), ids->size, (size_t)D);
    tt_tensor *in[2] = {weight, ids};
    tt_record(op, embedding_backward, y, 2, in, src);
    return y;
}

/* ---- index_select ------------------------------------------------------------------------ */
/* y[m, ...] = x[idx[m], ...]   =>   dx[idx[m], ...] += g[m, ...]   (an index_add) */
static void index_select_backward(tt_node *n) {
    tt_tensor *x = n->in[0], *idx = n->in[1];
    float *gx = tt_grad_acc(x);
    if (!gx) return;
    scatter_add_rows(gx, tt_ids(idx), idx->size, n->out->grad, row_elems(x));
}

static void check_index_vector(const tt_tensor *idx, tt_src src, const char *op) {
    tt_check_i32(idx, src, op, "idx");
    TT_CHECK(idx->ndim == 1, src, op, "idx %s must be 1-D [M]", tt_d(idx));
}

tt_tensor *tt_index_select_(tt_tensor *x, tt_tensor *idx, tt_src src) {
    const char *op = "index_select";
    tt_check_f32(x, src, op, "x");
    check_index_vector(idx, src, op);
    TT_CHECK(x->ndim >= 1, src, op, "x %s must have at least one axis", tt_d(x));
    check_range(idx, x->shape[0], x, "index", src, op);
    int shape[TT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = idx->shape[0];
    tt_tensor *y = tt_tmp(TT_F32, x->ndim, shape);
    gather_rows(y->data, x->data, tt_ids(idx), idx->size, row_elems(x));
    tt_tensor *in[2] = {x, idx};
    tt_record(op, index_select_backward, y, 2, in, src);
    return y;
}

/* ---- index_add ------------------------------------------------------------------------------ */
/* y = dst; y[idx[m], ...] += src[m, ...]
 *   d dst += g                      (y depends on dst with slope 1 everywhere)
 *   d src[m, ...] += g[idx[m], ...] (an index_select of g)                          */

/* dst[m, :] += src[idx[m], :] for rows [m0, m1) (one writer per row) */
static void add_gathered_rows(void *ctx, long m0, long m1) {
    const idx_job *j = ctx;
    const size_t row = j->row;
    for (long m = m0; m < m1; m++) {
        float *restrict d = j->dst + (size_t)m * row;
        const float *restrict s = j->src + (size_t)j->idx[m] * row;
        VEC for (size_t c = 0; c < row; c++) d[c] += s[c];
    }
}

static void index_add_backward(tt_node *n) {
    tt_tensor *dst = n->in[0], *idx = n->in[1], *rows = n->in[2];
    const float *g = n->out->grad;
    tt_grad_add_same(dst, g);
    float *gs = tt_grad_acc(rows);
    if (gs) {
        size_t row = row_elems(dst), m_rows = idx->size;
        idx_job j = {.dst = gs, .src = g, .idx = tt_ids(idx), .m_rows = m_rows, .row = row};
        tt_parallel_for((long)m_rows, tt_loop_threads(m_rows * row, PAR_MIN_ELEMS, (long)m_rows),
                        add_gathered_rows, &j);
    }
}

tt_tensor *tt_index_add_(tt_tensor *dst, tt_tensor *idx, tt_tensor *src_rows, tt_src src) {
    const char *op = "index_add";
    tt_check_f32(dst, src, op, "dst");
    tt_check_f32(src_rows, src, op, "src");
    check_index_vector(idx, src, op);
    TT_CHECK(dst->ndim >= 1, src, op, "dst %s must have at least one axis", tt_d(dst));
    bool ok = src_rows->ndim == dst->ndim && src_rows->shape[0] == idx->shape[0];
    for (int d = 1; ok && d < dst->ndim; d++) ok = src_rows->shape[d] == dst->shape[d];
    TT_CHECK(ok, src, op, "src %s must have shape [M, ...] with M = %d rows of dst %s (idx %s)",
             tt_d(src_rows), idx->shape[0], tt_d(dst), tt_d(idx));
    check_range(idx, dst->shape[0], dst, "index", src, op);
    tt_tensor *y = tt_tmp_like(dst);
    memcpy(y->data, dst->data, dst->size * sizeof(float));
    scatter_add_rows(y->data, tt_ids(idx), idx->size, src_rows->data, row_elems(dst));
    tt_tensor *in[3] = {dst, idx, src_rows};
    tt_record(op, index_add_backward, y, 3, in, src);
    return y;
}

/* ---- gather (last axis) ------------------------------------------------------------------- */
/* y[r, j] = x[r, idx[r, j]]   =>   dx[r, idx[r, j]] += g[r, j]  (each row r by one thread) */
static void gather_backward_rows(void *ctx, long r0, long r1) {
    const idx_job *jb = ctx;
    const size_t E = jb->E, K = jb->K;
    for (long r = r0; r < r1; r++) {
        float *gx = jb->dst + (size_t)r * E;
        const float *g = jb->src + (size_t)r * K;
        const int32_t *id = jb->idx + (size_t)r * K;
        for (size_t j = 0; j < K; j++) gx[id[j]] += g[j];
    }
}

static void gather_backward(tt_node *n) {
    tt_tensor *x = n->in[0], *idx = n->in[1];
    float *gx = tt_grad_acc(x);
    if (!gx) return;
    size_t K = (size_t)tt_last_dim(idx), rows = tt_rows(idx);
    idx_job j = {.dst = gx, .src = n->out->grad, .idx = tt_ids(idx),
                 .E = (size_t)tt_last_dim(x), .K = K};
    tt_parallel_for((long)rows, tt_loop_threads(rows * K, PAR_MIN_ELEMS, (long)rows),
                    gather_backward_rows, &j);
}

tt_tensor *tt_gather_(tt_tensor *x, tt_tensor *idx, tt_src src) {
    const char *op = "gather";
    tt_check_f32(x, src, op, "x");
    tt_check_i32(idx, src, op, "idx");
    bool ok = x->ndim >= 1 && idx->ndim == x->ndim;
    for (int d = 0; ok && d < x->ndim - 1; d++) ok = idx->shape[d] == x->shape[d];
    TT_CHECK(ok, src, op, "idx %s must have the shape of x %s except the last axis",
             tt_d(idx), tt_d(x));
    check_range(idx, tt_last_dim(x), x, "index", src, op);
    tt_tensor *y = tt_tmp(TT_F32, idx->ndim, idx->shape);
    const int32_t *id = tt_ids(idx);
    size_t E = (size_t)tt_last_dim(x), K = (size_t)tt_last_dim(idx), rows = tt_rows(idx);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < K; j++) y->data[r * K + j] = x->data[r * E + id[r * K + j]];
    tt_tensor *in[2] = {x, idx};
    tt_record(op, gather_backward, y, 2, in, src);
    return y;
}

/* ---- topk (last axis) ------------------------------------------------------------------------ */
/* y[r, j] = x[r, sel[r, j]], the k largest of row r in descending order
 *   =>   dx[r, sel[r, j]] += g[r, j]     (the selection is piecewise constant)
 *
 * Selection: one pass over the row keeping a sorted list of the best k (insertion);
 * O(E k) at worst, about O(E) in practice, for k of 2-8 out of 4-256 experts.
 * Ties go to the lower index: a later element displaces an earlier one only if it is
 * strictly greater. NaN ranks above every number (as in PyTorch's topk), so a NaN score
 * is selected first and propagates into the routing weights instead of vanishing; among
 * NaNs the lower index wins. */
static inline bool beats(float a, float b) { return a > b || (isnan(a) && !isnan(b)); }

static void topk_row(const float *x, int E, int k, float *val, int32_t *sel) {
    int filled = 0;
    for (int e = 0; e < E; e++) {
        float v = x[e];
        if (filled == k && !beats(v, val[k - 1])) continue;
        int p = filled < k ? filled : k - 1; /* slot to fill; shift the worse ones down */
        while (p > 0 && beats(v, val[p - 1])) {
            val[p] = val[p - 1];
            sel[p] = sel[p - 1];
            p--;
        }
        val[p] = v;
        sel[p] = e;
        if (filled < k) filled++;
    }
}

/* topk_row's selection for k = 1 or 2 (a router's usual top-k), 16 rows at a time, one
 * row a lane: the running best (and second) of each lane, updated by vector selects. A
 * router's scores are random from row to row, and topk_row's data-dependent branches
 * then mispredict (a toy router, 256 rows of 4, k = 2: ~7 us a call with random scores,
 * against ~1.3 us on repeated ones). The same rule as topk_row: a later element takes a
 * place only if it beats (strictly) the one there, NaN above every number. */
#define VBEATS(a, b) (((a) > (b)) | (((a) != (a)) & ((b) == (b)))) /* (a macro: no vector ABI) */

TT_CLONES static void topk_rows16(const float *x, int E, int k, float *val, int32_t *sel) {
    v16 col, v1, v2 = vsplat(0.0f);
    v16i i1 = (v16i){0}, i2 = (v16i){0};
    for (int r = 0; r < VL; r++) col[r] = x[(size_t)r * E];
    v1 = col;
    for (int e = 1; e < E; e++) {
        for (int r = 0; r < VL; r++) col[r] = x[(size_t)r * E + e];
        const v16i ie = (v16i){0} + e, b1 = VBEATS(col, v1);
        if (k == 2) {
            /* the second place: the old best if the new one beats it, else the new one
             * if it beats the second (or the second is still empty: e == 1) */
            const v16i b2 = e == 1 ? ~(v16i){0} : VBEATS(col, v2);
            v2 = vsel(b1, v1, vsel(b2, col, v2));
            i2 = (b1 & i1) | (~b1 & ((b2 & ie) | (~b2 & i2)));
        }
        v1 = vsel(b1, col, v1);
        i1 = (b1 & ie) | (~b1 & i1);
    }
    for (int r = 0; r < VL; r++) {
        val[(size_t)r * k] = v1[r];
        sel[(size_t)r * k] = i1[r];
        if (k == 2) {
            val[(size_t)r * k + 1] = v2[r];
            sel[(size_t)r * k + 1] = i2[r];
        }
    }
}

/* rows [r0, r1) of the forward (each row by one thread) */
static void topk_rows(void *ctx, long r0, long r1) {
    const idx_job *j = ctx;
    const size_t E = j->E, k = j->K;
    long r = r0;
    if (k <= 2) /* (tt_topk checked k <= E) */
        for (; r + VL <= r1; r += VL)
            topk_rows16(j->src + (size_t)r * E, (int)E, (int)k, j->dst + (size_t)r * k,
                        j->sel + (size_t)r * k);
    for (; r < r1; r++)
        topk_row(j->src + (size_t)r * E, (int)E, (int)k, j->dst + (size_t)r * k,
                 j->sel + (size_t)r * k);
}

static void topk_backward(tt_node *n) {
    tt_tensor *x = n->in[0];
    float *gx = tt_grad_acc(x);
    if (!gx) return;
    const float *g = n->out->grad;
    const int32_t *sel = n->ctx;
    size_t E = (size_t)tt_last_dim(x), k = (size_t)n->i[0], rows = tt_rows(x);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < k; j++) gx[r * E + sel[r * k + j]] += g[r * k + j];
}

tt_tensor *tt_topk_(tt_tensor *x, int k, tt_tensor **indices, tt_src src) {
    const char *op = "topk";
    tt_check_f32(x, src, op, "x");
    TT_CHECK(x->ndim >= 1, src, op, "x %s must have at least one axis", tt_d(x));
    int E = tt_last_dim(x);
    TT_CHECK(k >= 1 && k <= E, src, op, "k = %d out of range for %s (need 1 <= k <= %d)", k,
             tt_d(x), E);
    int shape[TT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = k;
    tt_tensor *y = tt_tmp(TT_F32, x->ndim, shape);
    tt_tensor *ix = tt_tmp(TT_I32, x->ndim, shape);
    size_t rows = tt_rows(x);
    int32_t *sel = tt_ids(ix);
    idx_job j = {.dst = y->data, .src = x->data, .sel = sel, .E = (size_t)E, .K = (size_t)k};
    tt_parallel_for((long)rows, tt_loop_threads(x->size, PAR_MIN_ELEMS, (long)rows), topk_rows,
                    &j);
    tt_tensor *in[1] = {x};
    tt_node *node = tt_record(op, topk_backward, y, 1, in, src);
    if (node) {
        /* own copy: the caller may overwrite *indices before backward */
        int32_t *saved = tt_arena_alloc(ix->size * sizeof(int32_t));
        memcpy(saved, sel, ix->size * sizeof(int32_t));
        node->ctx = saved;
        node->i[0] = k;
    }
    if (indices) *indices = ix;
    return y;
}

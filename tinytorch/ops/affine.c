/* affine.c - the fully connected layer as one op: y = x W^T + b, optionally relu(y).
 *
 *   affine:       y = x W^T + b              (torch.nn.functional.linear)
 *   affine_relu:  y = max(x W^T + b, 0)      (a ReLU expert's first layer)
 *
 * with x [..., in] (leading axes flattened into M rows), W [out, in], b [out] or NULL.
 * The same numbers as tt_matmul_nt, tt_add and tt_relu in a row, bit for bit, but one
 * tape node and one output tensor instead of three: tt_gemm_bias adds the bias (and
 * applies the ReLU) to each tile of the product as the micro-kernel stores it, so y is
 * written once, and the backward needs only the output. For the MoE experts of the
 * benchmark models that is two [rows, 4 x dim] activations per expert fewer kept for the
 * backward.
 *
 * Backward, with G = dL/dy [M, out]:
 *   Gp = G * [y > 0]          (relu only; y > 0 exactly where x W^T + b > 0)
 *   dx += Gp W                [M, out] @ [out, in]
 *   dW += Gp^T x              [out, M] @ [M, in]
 *   db[j] += sum_r Gp[r][j]   rows in ascending order, as tt_add's broadcast backward
 */
#include "../internal.h"
#include "../kernels/gemm.h"

#include <limits.h>

/* Elements below which a loop stays on one thread (a parallel region costs ~5 us). */
#define PAR_MIN ((size_t)1 << 16)
/* Columns of db summed by one task (256 bytes of each row): each column is summed by one
 * thread, rows in order; 64 so that even 128 or 256 outputs give the threads work. */
#define COL_BLOCK 64

/* The elementwise kernels: vectorised (VEC, TT_CLONES; a scalar select compiles to a
 * branch that mispredicts on every other element of random-signed data).
 * gp = g * [y > 0] for one row piece, and db += gp if db (the bias gradient's next term).
 * gp may be g itself (the mask in place): element j is read before it is written, and no
 * other element depends on it, so g and gp carry no restrict. */
TT_CLONES static void relu_mask_row(const float *g, const float *restrict y, float *gp,
                                    float *restrict db, int n) {
    if (db) {
        VEC for (int j = 0; j < n; j++) {
            float v = y[j] > 0.0f ? g[j] : 0.0f;
            gp[j] = v;
            db[j] += v;
        }
    } else {
        VEC for (int j = 0; j < n; j++) gp[j] = y[j] > 0.0f ? g[j] : 0.0f;
    }
}

/* db[j] += g[j] for one row: per column, one more term of its sum over rows in order */
TT_CLONES static void add_row(float *restrict db, const float *restrict g, int n) {
    VEC for (int j = 0; j < n; j++) db[j] += g[j];
}

/* The backward's elementwise loop, split between threads by column blocks. */
typedef struct loop_args {
    float *gp;          /* Gp (relu); may be G itself     */
    float *db;          /* the bias gradient, or NULL     */
    const float *g;     /* G                              */
    const float *y;     /* the output y (relu)            */
    bool relu;
    int M, N;
    int bw;             /* columns per block              */
} loop_args;

/* Column blocks [k0, k1) of the backward's elementwise part, rows in order:
 *   relu:  Gp = G * [y > 0]   and, with a bias, db += column sums of Gp (one pass)
 *   else:  db += column sums of G                                              */
static void backward_pre_blocks(void *ctx, long k0, long k1) {
    const loop_args *a = ctx;
    for (long blk = k0; blk < k1; blk++) {
        int j0 = (int)blk * a->bw, len = j0 + a->bw < a->N ? a->bw : a->N - j0;
        float *db = a->db ? a->db + j0 : NULL;
        for (int r = 0; r < a->M; r++) {
            size_t o = (size_t)r * a->N + j0;
            if (a->relu)
                relu_mask_row(a->g + o, a->y + o, a->gp + o, db, len);
            else
                add_row(db, a->g + o, len);
        }
    }
}

/* gp (relu) and db (bias, may be NULL) from g = dL/dy; see backward_pre_blocks. Also the
 * experts op's (experts.c), hence not static. */
void tt_affine_grad_pre(const float *g, const float *y, bool relu, float *gp, float *db, int M,
                        int N) {
    if (!relu && !db) return;
    /* Threads take blocks of COL_BLOCK columns; one thread takes all columns as one
     * block, so it streams whole rows (each column is still summed in row order: the
     * same bits). */
    int nblk = (N + COL_BLOCK - 1) / COL_BLOCK;
    const int nt = tt_loop_threads((size_t)M * N, PAR_MIN, nblk);
    loop_args a = {.gp = gp, .db = db, .g = g, .y = y, .relu = relu, .M = M, .N = N,
                   .bw = nt > 1 ? COL_BLOCK : N};
    tt_parallel_for(nt > 1 ? nblk : 1, nt, backward_pre_blocks, &a);
}

/* The two products of the backward, dx = Gp W and dW = Gp^T x: the same number of
 * multiply-adds each, and independent of each other. With two threads they run side by
 * side, dx on the calling thread (the next backward reads it from this core's cache) and
 * dW on the other, rather than each split in two: no synchronisation inside a product,
 * no A panel packed by both threads, and the toy model's products (a few million
 * multiply-adds), too small for tt_gemm to split at all, get the second core too. With
 * more threads, only products that tt_gemm would not split go side by side.
 *
 * Equal work is not equal time: one product may run slower (a different layout, operands
 * colder) or its core may be taken away by the host for a while, and the other thread
 * would wait at the end. So a product whose B operand (W for dx, x for dW) is cheap to
 * give every block (read in place, or small: tt_gemm_rows_split_cheap) is cut into row
 * blocks, one whose A operand (Gp, or Gp^T for dW) is, into column blocks, and the threads
 * take tasks from the two ends of one list - the caller dx's blocks from the front, the
 * other thread dW's from the back - until they meet: whoever is done first takes the
 * other's remaining blocks. The blocks shrink towards the middle of the list, where the
 * threads meet (dx's from 40% of the product down to 10%, dW's from 10% up to 40%), so
 * that what one thread may be left waiting for at the end is a small block. A block of C
 * is computed exactly as within the whole product (the same k order for every element),
 * so every bit is the same for any thread count and any order of claims. */
typedef struct grads_job {
    const float *g, *x, *w; /* Gp [M, N], x [M, K], W [N, K] */
    float *gx, *gw;         /* either may be NULL            */
    float *gb;              /* db, summed by the last task; NULL: no such task */
    float beta_x, beta_w;   /* 0: fresh buffer, 1: accumulate */
    int M, K, N;
    int nx, nw;             /* blocks of dx, of dW: tasks [0, nx) and [nx, nx + nw) */
    bool x_cols, w_cols;    /* those are column blocks (else row blocks)      */
    tt_share tasks;         /* the tasks not yet taken, from either end          */
} grads_job;

/* Below this many multiply-adds a product is not worth a parallel region (~1 us). */
#define SIDE_BY_SIDE_MIN ((size_t)1 << 18)
/* Blocks of a shared product, and the fewest multiply-adds in a row block, in a column
 * block, on average (below, the claiming and the shorter products cost more than the
 * balance is worth). Column blocks, measured on the Xeon of the seventh session (two
 * threads, 48 experts' cold weights, in-process ABBA against the whole products, median
 * of 96 ratios per run): the medium experts' second layer (blocks of 67 M) 0.940-0.963 in
 * four runs, the small model's (blocks of 17 M) 1.04 in two. Blocks of 4, 3, 2, 1 tenths
 * against equal quarters (eighth session, the same way, experts of 200-320 rows, 192
 * ratios a run): first layer 0.94-0.99, second layer 0.97-1.00, in four runs each. */
#define SHARE_BLOCKS 4
#define SHARE_BLOCK_MIN ((size_t)1 << 21)
#define SHARE_COL_BLOCK_MIN ((size_t)1 << 25)

static bool side_by_side(const grads_job *j) {
    if (!j->gx || !j->gw || j->gx == j->gw) return false; /* (x is w: one buffer, in order) */
    size_t work = (size_t)j->M * (size_t)j->N * (size_t)j->K;
    int avail = tt_loop_threads(work, SIDE_BY_SIDE_MIN, LONG_MAX); /* threads here, or 1 */
    if (avail < 2) return false;
    return avail == 2 ||
           (tt_gemm_threads(j->M, j->K, j->N) == 1 && tt_gemm_threads(j->N, j->K, j->M) == 1);
}

/* How a product C = op(A) B (rows x cols; a_cheap, b_cheap: whether every block may read
 * or copy that operand whole, tt_gemm_cols_split_cheap / tt_gemm_rows_split_cheap) is cut
 * into SHARE_BLOCKS tasks: row blocks if B is cheap, else column blocks if A is (the
 * blocks' column boundaries on multiples of COL_ALIGN floats: whole micro-kernel slivers),
 * else not at all (each block would pack a large operand again). Sets *by_cols. The
 * blocks are 1, 2, ..., SHARE_BLOCKS parts of SHARE_PARTS (block_start); the smallest
 * gets at least a row, or a sliver (the medium model's kv_a_proj dW, 512 columns,
 * still gets column blocks: 32, 96, 160 and 224 of them). */
#define COL_ALIGN 32
#define SHARE_PARTS (SHARE_BLOCKS * (SHARE_BLOCKS + 1) / 2)
static int share_blocks(int rows, int cols, size_t work, bool a_cheap, bool b_cheap,
                        bool *by_cols) {
    *by_cols = false;
    if (b_cheap && rows >= SHARE_PARTS && work / SHARE_BLOCKS >= SHARE_BLOCK_MIN)
        return SHARE_BLOCKS;
    *by_cols = !b_cheap && a_cheap && cols >= SHARE_PARTS * COL_ALIGN &&
               work / SHARE_BLOCKS >= SHARE_COL_BLOCK_MIN;
    return *by_cols ? SHARE_BLOCKS : 1;
}

/* The first row (by_cols: column) of block b when n rows (columns) are cut into `blocks`
 * blocks of sizes in proportion to blocks, blocks - 1, ..., 1 (shrinking: dx, claimed
 * from the front) or 1, 2, ..., blocks (growing: dW, claimed from the back): block b
 * starts after the parts of the blocks before it. */
static int block_start(int b, int n, int blocks, bool by_cols, bool grow) {
    if (b == blocks) return n;
    const long long parts = (long long)blocks * (blocks + 1) / 2;
    const long long before = grow ? (long long)b * (b + 1) / 2 /* 1 + 2 + ... + b */
                                  : (long long)b * blocks - (long long)b * (b - 1) / 2;
    int s = (int)(before * n / parts);
    return by_cols ? s / COL_ALIGN * COL_ALIGN : s;
}

/* Block t of blocks of C = op(A) B, C [M, N] (row stride ldc), A [M, K] or, transposed,
 * [K, M] (lda), B [K, N] (ldb): the same arithmetic for every element as the whole
 * product, so the same bits. */
static void gemm_block(int t, int blocks, bool by_cols, bool grow, bool ta, int M, int N, int K,
                       const float *A, int lda, const float *B, int ldb, float beta, float *C,
                       int ldc) {
    const int n = by_cols ? N : M;
    const int s0 = block_start(t, n, blocks, by_cols, grow);
    const int s1 = block_start(t + 1, n, blocks, by_cols, grow);
    if (by_cols)
        tt_gemm(ta, false, M, s1 - s0, K, 1.0f, A, lda, B + s0, ldb, beta, C + s0, ldc);
    else
        tt_gemm(ta, false, s1 - s0, N, K, 1.0f, A + (size_t)s0 * (ta ? 1 : (size_t)lda), lda, B,
                ldb, beta, C + (size_t)s0 * ldc, ldc);
}

/* Task t: block t of dx = Gp W (rows of x, or columns), block t - nx of dW = Gp^T x, or
 * (t = nx + nw, when gb is set) db's column sums over all rows, as tt_affine_grad_pre
 * sums them on one thread: the same bits. */
static void grads_task(const grads_job *j, int t) {
    if (t == j->nx + j->nw) {
        loop_args a = {.db = j->gb, .g = j->g, .M = j->M, .N = j->N, .bw = j->N};
        backward_pre_blocks(&a, 0, 1);
    } else if (t < j->nx)
        gemm_block(t, j->nx, j->x_cols, false, false, j->M, j->K, j->N, j->g, j->N, j->w,
                   j->K, j->beta_x, j->gx, j->K);
    else
        gemm_block(t - j->nx, j->nw, j->w_cols, true, true, j->N, j->K, j->M, j->g, j->N, j->x,
                   j->K, j->beta_w, j->gw, j->K);
}

/* [t0, t1) = [0, 2): one thread, every task in order; [0, 1) / [1, 2): the caller from
 * the front, the other thread from the back */
static void grads_range(void *ctx, long t0, long t1) {
    grads_job *j = ctx;
    if (t1 - t0 == 2) {
        for (int t = 0; t < j->nx + j->nw + (j->gb != NULL); t++) grads_task(j, t);
        return;
    }
    for (int t; (t = tt_share_take(&j->tasks, t0 == 0)) >= 0;) grads_task(j, t);
}

/* Saved in node->i. */
enum { I_M, I_IN, I_OUT, I_RELU };

static void affine_backward(tt_node *n) {
    tt_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    int M = n->i[I_M], K = n->i[I_IN], N = n->i[I_OUT];
    bool relu = n->i[I_RELU];
    const float *g = n->out->grad;
    /* Gp goes into G's own buffer when G is released after this backward anyway: no
     * second [M, out] buffer, and the mask writes cache lines it has just read instead
     * of fresh ones (the medium experts' first layers: 16 x 2 MB a layer) */
    const bool in_place = relu && tt_grad_disposable(n);
    float *gp = !relu ? NULL : in_place ? n->out->grad : tt_arena_grad_alloc((size_t)M * N);
    float *gb = b ? tt_grad_acc(b) : NULL;
    /* (all buffers first: the arena is not for threads; if x is w, the second is the
     * first, not fresh, and dW adds to dx's product as it would in sequence) */
    bool fresh_x, fresh_w;
    float *gx = tt_grad_acc_fresh(x, &fresh_x);
    float *gw = tt_grad_acc_fresh(w, &fresh_w);
    grads_job j = {g, x->data, w->data, gx, gw, NULL, fresh_x ? 0.0f : 1.0f,
                   fresh_w ? 0.0f : 1.0f, M, K, N, 0, 0, false, false, 0};
    const bool pair = side_by_side(&j);
    /* Without the mask, db needs nothing before the products: with the products side by
     * side it is one more task, at the back of the list, where the thread doing dW starts
     * (not a parallel region of its own, the threads reading column strips of G). Not
     * when db is dx's buffer (b is x itself, a 1-D x as its own bias): those sums come
     * first, in sequence, as the products' buffers are paired only when distinct. */
    if (pair && !relu && gb != gx)
        j.gb = gb;
    else
        tt_affine_grad_pre(g, n->out->data, relu, gp, gb, M, N);
    if (relu) j.g = gp;
    const size_t work = (size_t)M * (size_t)N * (size_t)K;
    /* one task per product, or (a pair: both gradients wanted) blocks of each;
     * dx = Gp W: A = Gp [M, N], B = W [N, K]; dW = Gp^T x: A = Gp^T, B = x [M, K] */
    j.nx = gx != NULL;
    j.nw = gw != NULL;
    if (pair) {
        j.nx = share_blocks(M, K, work, tt_gemm_cols_split_cheap(false, M, N, N),
                            tt_gemm_rows_split_cheap(false, N, K, K), &j.x_cols);
        j.nw = share_blocks(N, K, work, tt_gemm_cols_split_cheap(true, N, M, N),
                            tt_gemm_rows_split_cheap(false, M, K, K), &j.w_cols);
    }
    tt_share_set(&j.tasks, 0, j.nx + j.nw + (j.gb != NULL));
    tt_parallel_for(2, pair ? 2 : 1, grads_range, &j);
    if (gp && !in_place) tt_arena_grad_free(gp, (size_t)M * N);
}

static tt_tensor *affine(bool relu, tt_tensor *x, tt_tensor *w, tt_tensor *b, tt_src src) {
    const char *op = relu ? "affine_relu" : "affine";
    tt_check_f32(x, src, op, "x");
    tt_check_f32(w, src, op, "w");
    if (b) tt_check_f32(b, src, op, "b");
    TT_CHECK(x->ndim >= 1 && w->ndim == 2, src, op,
             "expects x [..., in] and w [out, in]; got %s and %s", tt_d(x), tt_d(w));
    int K = tt_last_dim(x), N = w->shape[0];
    TT_CHECK(w->shape[1] == K, src, op, "x %s has %d features but w %s expects %d", tt_d(x), K,
             tt_d(w), w->shape[1]);
    TT_CHECK(!b || (b->ndim == 1 && b->shape[0] == N), src, op,
             "bias %s must be [%d] for w %s", b ? tt_d(b) : "", N, tt_d(w));
    size_t rows = 1; /* the leading axes of x, flattened */
    for (int i = 0; i < x->ndim - 1; i++) rows *= (size_t)x->shape[i];
    TT_CHECK(rows <= INT_MAX, src, op, "%s has too many rows (%zu)", tt_d(x), rows);
    int M = (int)rows;

    int shape[TT_MAX_DIMS];
    for (int i = 0; i < x->ndim - 1; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = N;
    tt_tensor *y = tt_tmp(TT_F32, x->ndim, shape);
    tt_gemm_bias(false, true, M, N, K, 1.0f, x->data, K ? K : 1, w->data, K ? K : 1, 0.0f,
                 y->data, N ? N : 1, b ? b->data : NULL, relu);

    tt_tensor *in[3] = {x, w, b};
    tt_node *node = tt_record(op, affine_backward, y, b ? 3 : 2, in, src);
    if (node) {
        node->i[I_M] = M;
        node->i[I_IN] = K;
        node->i[I_OUT] = N;
        node->i[I_RELU] = relu;
    }
    return y;
}

tt_tensor *tt_affine_(tt_tensor *x, tt_tensor *w, tt_tensor *b, tt_src src) {
    return affine(false, x, w, b, src);
}

tt_tensor *tt_affine_relu_(tt_tensor *x, tt_tensor *w, tt_tensor *b, tt_src src) {
    return affine(true, x, w, b, src);
}

/* tt_test.c - implementation of the shared test helpers. */
#include "tt_test.h"

#include <math.h>

jmp_buf tt_test_jmp;
char tt_test_msg[1024];

static void jump_handler(const char *message, void *user) {
    (void)user;
    snprintf(tt_test_msg, sizeof tt_test_msg, "%s", message);
    longjmp(tt_test_jmp, 1);
}

void tt_test_catch_errors(void) { tt_set_error_handler(jump_handler, NULL); }
void tt_test_release_errors(void) { tt_set_error_handler(NULL, NULL); }

void tt_test_gradcheck(const char *op, tt_gradcheck_fn f, void *user, int n,
                       tt_tensor *const *inputs, const tt_gradcheck_opts *opts) {
    tt_gradcheck_report r;
    bool ok = tt_gradcheck(f, user, n, inputs, opts, &r);
    tt_gradcheck_print(stdout, op, &r);
    ck_assert_msg(ok, "gradcheck of %s failed: input %d[%zu] analytic %g numeric %g", op,
                  r.worst_input, r.worst_index, r.analytic, r.numeric);

    tt_debug_mutate_backward(op, 1.01f);
    bool mutated_ok = tt_gradcheck(f, user, n, inputs, opts, &r);
    tt_debug_mutate_backward(NULL, 1.0f);
    char label[96];
    snprintf(label, sizeof label, "%s (x1.01)", op);
    tt_gradcheck_print(stdout, label, &r);
    ck_assert_msg(!mutated_ok, "gradcheck did not notice the backward of %s scaled by 1.01", op);
    tt_tape_reset();
}

tt_tensor *tt_test_param(int ndim, const int *shape, float lo, float hi) {
    return tt_set_requires_grad(tt_rand_uniform(ndim, shape, lo, hi), true);
}

tt_tensor *tt_test_param_away0(int ndim, const int *shape) {
    tt_tensor *t = tt_test_param(ndim, shape, 0.1f, 1.0f);
    tt_rng *r = tt_rng_global();
    for (size_t i = 0; i < t->size; i++)
        if (tt_rng_uniform(r) < 0.5f) t->data[i] = -t->data[i];
    return t;
}

static char g_tmpdir[128];

const char *tt_test_tmpdir(const char *prefix) {
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/%s_XXXXXX", prefix);
    ck_assert_ptr_nonnull(mkdtemp(g_tmpdir));
    return g_tmpdir;
}

const char *tt_test_path(const char *name) {
    static char buf[4][256];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmpdir, name);
    return buf[k];
}

void tt_test_tmpdir_remove(void) {
    char cmd[192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

unsigned char *tt_test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

float tt_test_maxdiff(const float *a, const float *b, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > m || isnan(d)) m = d;
    }
    return m;
}

size_t tt_test_relu_count(const tt_node *nd) {
    if (!strcmp(nd->op, "relu") || !strcmp(nd->op, "affine_relu")) return nd->out->size;
    if (!strcmp(nd->op, "experts_relu")) return (size_t)nd->in[1]->size * (size_t)nd->i[1];
    return 0;
}

double tt_test_relu_preact(const tt_node *nd, size_t k) {
    if (!strcmp(nd->op, "relu")) return nd->in[0]->data[k];
    if (!strcmp(nd->op, "experts_relu")) {
        /* row r (token idx[r]) of expert e: sum_i x[idx[r]][i] w1_e[j][i] + b1_e[j] */
        const int *off = tt_experts_relu_offsets(nd), n = nd->i[0], hid = nd->i[1];
        const size_t r = k / (size_t)hid, j = k % (size_t)hid;
        int e = 0;
        while ((size_t)off[e + 1] <= r) e++;
        const tt_tensor *x = nd->in[0], *w = nd->in[2 + e];
        const size_t in = (size_t)x->shape[1], tok = (size_t)tt_ids(nd->in[1])[r];
        /* (in[]: x, idx, w1[n], w2[n], then b1[n] if given: i[2]) */
        const tt_tensor *b = nd->i[2] ? nd->in[2 + 2 * n + e] : NULL;
        double acc = b ? b->data[j] : 0.0;
        for (size_t i = 0; i < in; i++) acc += (double)x->data[tok * in + i] * w->data[j * in + i];
        return acc;
    }
    /* affine_relu: out[r][j] = max(sum_i x[r][i] w[j][i] + b[j], 0) */
    const tt_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->n_in > 2 ? nd->in[2] : NULL;
    size_t in = (size_t)w->shape[1], out = (size_t)w->shape[0], r = k / out, j = k % out;
    double acc = b ? b->data[j] : 0.0;
    for (size_t i = 0; i < in; i++) acc += (double)x->data[r * in + i] * w->data[j * in + i];
    return acc;
}

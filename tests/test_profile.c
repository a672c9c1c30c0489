/* test_profile.c - the op profiler (profile.h): one entry per (op, caller file:line,
 * module), forward and backward calls counted, ops inside a backward counted to it, the
 * module names with layer and expert numbers as '*', nothing timed while it is off, and
 * the printed table. No test asserts how long anything took: only counts, keys and the
 * invariant that the time in ops fits in the time profiled. */
#include "tt_test.h"

#include <stdio.h>

static void teardown(void) {
    tt_profile_stop();
    tt_profile_reset();
    tt_tape_reset();
}

/* The entry of (op, line of this file, module), or NULL. */
static const tt_profile_entry *find(const char *op, int line, const char *module) {
    for (int i = 0; i < tt_profile_count(); i++) {
        const tt_profile_entry *e = tt_profile_entry_at(i);
        if (!strcmp(e->op, op) && e->src.line == line && strstr(e->src.file, "test_profile.c") &&
            !strcmp(e->module, module))
            return e;
    }
    return NULL;
}

static tt_tensor *named_param(const char *name, int rows, int cols) {
    tt_tensor *w = tt_test_param(TT_SHAPE(rows, cols), -1, 1);
    return tt_set_name(w, "%s", name);
}

START_TEST(test_entries_count_calls) {
    tt_manual_seed(3);
    tt_tensor *w[2] = {named_param("layers.3.fc.weight", 4, 4),
                       named_param("layers.12.fc.weight", 4, 4)};
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 4), -1, 1);
    tt_profile_start();
    ck_assert(tt_profile_active());
    tt_tensor *h = x;
    int mm_line = 0, sum_line = 0;
    for (int l = 0; l < 2; l++) {
        h = tt_matmul(h, w[l]); mm_line = __LINE__; /* one call site, two layers */
    }
    tt_tensor *loss = tt_sum_all(h);
    sum_line = __LINE__ - 1;
    tt_backward(loss);
    tt_profile_stop();
    ck_assert(!tt_profile_active());

    ck_assert_int_eq(tt_profile_count(), 2);
    const tt_profile_entry *mm = find("matmul", mm_line, "layers.*.fc");
    const tt_profile_entry *sum = find("sum_all", sum_line, "");
    ck_assert_ptr_nonnull(mm);
    ck_assert_ptr_nonnull(sum);
    ck_assert_int_eq(mm->fwd_calls, 2);
    ck_assert_int_eq(mm->bwd_calls, 2);
    ck_assert_int_eq(sum->fwd_calls, 1);
    ck_assert_int_eq(sum->bwd_calls, 1);
    ck_assert(mm->fwd_sec >= 0 && mm->bwd_sec >= 0 && sum->fwd_sec >= 0 && sum->bwd_sec >= 0);
    /* the timed intervals do not overlap and lie inside the profiled one */
    double ops = 0;
    for (int i = 0; i < tt_profile_count(); i++)
        ops += tt_profile_entry_at(i)->fwd_sec + tt_profile_entry_at(i)->bwd_sec;
    ck_assert(ops <= tt_profile_wall_sec());
    ck_assert_ptr_null(tt_profile_entry_at(2));
    ck_assert_ptr_null(tt_profile_entry_at(-1));

    /* a second step adds to the same entries */
    tt_tape_reset();
    tt_profile_start();
    h = x;
    for (int l = 0; l < 2; l++) {
        h = tt_matmul(h, w[l]); mm_line = __LINE__;
    }
    tt_profile_stop();
    const tt_profile_entry *mm2 = find("matmul", mm_line, "layers.*.fc");
    ck_assert_ptr_nonnull(mm2); /* (another line: a new entry) */
    ck_assert_int_eq(mm2->fwd_calls, 2);
    ck_assert_int_eq(mm2->bwd_calls, 0);
    ck_assert_int_eq(tt_profile_count(), 3);
    tt_free(w[0]);
    tt_free(w[1]);
    tt_free(x);
}
END_TEST

START_TEST(test_off_records_nothing) {
    tt_manual_seed(4);
    tt_tensor *x = tt_test_param(TT_SHAPE(3), -1, 1);
    tt_backward(tt_sum_all(tt_relu(x))); /* never started */
    ck_assert_int_eq(tt_profile_count(), 0);
    ck_assert(tt_profile_wall_sec() == 0.0);
    tt_profile_start();
    tt_tensor *y = tt_relu(x);
    tt_profile_stop();
    tt_backward(tt_sum_all(y)); /* stopped: neither the sum nor the backward count */
    ck_assert_int_eq(tt_profile_count(), 1);
    ck_assert_int_eq(tt_profile_entry_at(0)->fwd_calls, 1);
    ck_assert_int_eq(tt_profile_entry_at(0)->bwd_calls, 0);
    const double wall = tt_profile_wall_sec();
    ck_assert(wall > 0);
    ck_assert(tt_profile_wall_sec() == wall); /* stopped: the clock does not run */
    tt_profile_reset();
    ck_assert_int_eq(tt_profile_count(), 0);
    ck_assert(tt_profile_wall_sec() == 0.0);
    tt_free(x);
}
END_TEST

START_TEST(test_no_grad_ops_are_timed) {
    tt_manual_seed(5);
    tt_tensor *x = tt_test_param(TT_SHAPE(3), -1, 1);
    tt_profile_start();
    tt_no_grad_begin();
    tt_tensor *y = tt_relu(x);
    const int line = __LINE__ - 1;
    tt_no_grad_end();
    tt_profile_stop();
    ck_assert(!y->requires_grad);
    ck_assert_int_eq(tt_tape_len(), 0);
    const tt_profile_entry *e = find("relu", line, "");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->fwd_calls, 1);
    tt_free(x);
}
END_TEST

/* A custom op whose backward calls a public op: that op's time is the backward's. */
static void twice_backward(tt_node *n) {
    tt_tensor *g = tt_tmp(TT_F32, n->out->ndim, n->out->shape);
    memcpy(g->data, n->out->grad, n->out->size * sizeof(float));
    tt_tensor *g2 = tt_scale(g, 2.0f); /* a public op, inside a backward */
    float *acc = tt_grad_acc(n->in[0]);
    for (size_t k = 0; k < g2->size; k++) acc[k] += g2->data[k];
}

static tt_tensor *twice(tt_tensor *x, tt_src src) {
    tt_tensor *y = tt_tmp(TT_F32, x->ndim, x->shape);
    for (size_t k = 0; k < x->size; k++) y->data[k] = 2.0f * x->data[k];
    tt_record("twice", twice_backward, y, 1, &x, src);
    return y;
}

START_TEST(test_ops_inside_backward_count_to_it) {
    tt_manual_seed(6);
    tt_tensor *x = tt_test_param(TT_SHAPE(4), -1, 1);
    tt_profile_start();
    tt_tensor *y = twice(x, TT_SRC);
    const int line = __LINE__ - 1;
    tt_backward(tt_sum_all(y));
    tt_profile_stop();
    for (int k = 0; k < 4; k++) ck_assert_float_eq(x->grad[k], 2.0f);
    ck_assert_int_eq(tt_profile_count(), 2); /* twice, sum_all: no "scale" */
    const tt_profile_entry *e = find("twice", line, "");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->fwd_calls, 1);
    ck_assert_int_eq(e->bwd_calls, 1);
    tt_free(x);
}
END_TEST

START_TEST(test_module_names) {
    const char *names[][2] = {
        {"layers.3.moe.experts.12.fc1.weight", "layers.*.moe.experts.*.fc1"},
        {"embed.weight", "embed"},
        {"head.bias", "head"},
        {"layers.0", "layers.*"},
        {"7", "*"},
        {"a1.b22.c", "a1.b22.c"},          /* digits inside a part stay */
        {"blocks.10x.weightx", "blocks.10x.weightx"},
        {"w.weight.bias", "w.weight"},     /* only the last part is dropped */
    };
    const int n = (int)(sizeof names / sizeof names[0]);
    tt_manual_seed(7);
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 2), -1, 1);
    tt_tensor *w[8];
    tt_profile_start();
    for (int i = 0; i < n; i++) {
        w[i] = named_param(names[i][0], 2, 2);
        tt_matmul(x, w[i]);
    }
    tt_profile_stop();
    ck_assert_int_eq(tt_profile_count(), n);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(tt_profile_entry_at(i)->module, names[i][1]);
        tt_free(w[i]);
    }
    /* the first NAMED PERSISTENT input names the module: an unnamed or temporary first
     * input is skipped */
    tt_tensor *v = named_param("layers.2.proj.weight", 2, 2);
    tt_profile_reset();
    tt_profile_start();
    tt_matmul(tt_relu(x), v);
    tt_profile_stop();
    ck_assert_int_eq(tt_profile_count(), 2);
    ck_assert_str_eq(tt_profile_entry_at(0)->op, "relu");
    ck_assert_str_eq(tt_profile_entry_at(0)->module, "");
    ck_assert_str_eq(tt_profile_entry_at(1)->module, "layers.*.proj");
    /* a name of the longest length still ends in a terminated module */
    char longname[TT_NAME_LEN];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    tt_set_name(v, "%s", longname);
    tt_profile_reset();
    tt_profile_start();
    tt_matmul(x, v);
    tt_profile_stop();
    ck_assert_str_eq(tt_profile_entry_at(0)->module, longname);
    tt_free(v);
    tt_free(x);
}
END_TEST

START_TEST(test_many_entries) {
    /* more entries than the first hash table holds (64 slots): lookups still find them */
    tt_manual_seed(8);
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 2), -1, 1);
    enum { N = 150 };
    tt_tensor *w[N];
    for (int i = 0; i < N; i++) tt_set_name(w[i] = named_param("m", 2, 2), "m%d", i);
    tt_profile_start();
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < N; i++) tt_matmul(x, w[i]);
    tt_profile_stop();
    ck_assert_int_eq(tt_profile_count(), N);
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof want, "m%d", i);
        ck_assert_str_eq(tt_profile_entry_at(i)->module, want);
        ck_assert_int_eq(tt_profile_entry_at(i)->fwd_calls, 3);
        tt_free(w[i]);
    }
    tt_free(x);
}
END_TEST

START_TEST(test_print) {
    tt_manual_seed(9);
    tt_tensor *w = named_param("layers.1.q_proj.weight", 3, 3);
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 3), -1, 1);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    tt_profile_print(f, 10); /* empty: the header line only */
    tt_profile_start();
    tt_tensor *h = tt_matmul(x, w);
    const int line = __LINE__ - 1;
    tt_backward(tt_sum_all(tt_relu(h)));
    tt_profile_stop();
    tt_profile_print(f, 2); /* three entries: two rows, then the rest */
    tt_profile_print(f, 0); /* all */
    rewind(f);
    char buf[8192] = {0};
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    ck_assert(got > 0);
    printf("%s", buf);
    char at[64];
    snprintf(at, sizeof at, "test_profile.c:%d", line);
    ck_assert_ptr_nonnull(strstr(buf, "op profile: 0.000 ms in ops"));
    ck_assert_ptr_nonnull(strstr(buf, "matmul"));
    ck_assert_ptr_nonnull(strstr(buf, "layers.*.q_proj"));
    ck_assert_ptr_nonnull(strstr(buf, at));
    ck_assert_ptr_nonnull(strstr(buf, "(1 more row)"));
    ck_assert_ptr_nonnull(strstr(buf, "sum_all"));
    tt_free(w);
    tt_free(x);
}
END_TEST

START_TEST(test_model_step_rows) {
    /* a toy DeepSeek step: every Linear kind is a row of its own, and the counts are the
     * model's (2 layers: q_proj twice a step; 4 experts a layer: fc1 up to 8 times) */
    tt_dsv3_config cfg = {.vocab = 50, .dim = 16, .n_layers = 2, .n_heads = 2,
                          .n_experts = 4, .top_k = 2, .expert_hidden = 32, .rank = 8,
                          .max_seq = 8, .aux_alpha = 0.01f};
    tt_manual_seed(10);
    tt_dsv3 *m = tt_dsv3_new(&cfg);
    tt_tensor *ids = tt_tensor_new(TT_I32, TT_SHAPE(2, 8)), *tg = tt_tensor_new(TT_I32, TT_SHAPE(2, 8));
    for (int i = 0; i < 16; i++) tt_ids(ids)[i] = (i * 7) % 50, tt_ids(tg)[i] = (i * 11 + 3) % 50;
    tt_profile_start();
    for (int step = 0; step < 2; step++) {
        tt_dsv3_output out = tt_dsv3_forward(m, ids, tg);
        tt_backward(out.loss);
        tt_tape_reset();
    }
    tt_profile_stop();
    long q = -1, head = -1, fc1 = 0;
    for (int i = 0; i < tt_profile_count(); i++) {
        const tt_profile_entry *e = tt_profile_entry_at(i);
        if (!strcmp(e->module, "layers.*.attn.q_proj")) q = e->fwd_calls;
        if (!strcmp(e->module, "head")) head = e->bwd_calls;
        if (!strcmp(e->module, "layers.*.moe.experts.*.fc1")) fc1 += e->fwd_calls;
    }
    ck_assert_int_eq(q, 4);
    ck_assert_int_eq(head, 2);
    ck_assert(fc1 >= 2 && fc1 <= 16);
    tt_profile_print(stdout, 8);
    tt_free(ids);
    tt_free(tg);
    tt_dsv3_free(m);
}
END_TEST

static Suite *profile_suite(void) {
    Suite *s = suite_create("profile");
    TCase *tc = tcase_create("profile");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_entries_count_calls);
    tcase_add_test(tc, test_off_records_nothing);
    tcase_add_test(tc, test_no_grad_ops_are_timed);
    tcase_add_test(tc, test_ops_inside_backward_count_to_it);
    tcase_add_test(tc, test_module_names);
    tcase_add_test(tc, test_many_entries);
    tcase_add_test(tc, test_print);
    tcase_add_test(tc, test_model_step_rows);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(profile_suite)

/* test_core.c - tensors, the tape, backward semantics, the arena, printing, errors. */
#include "tt_test.h"

#include <math.h>

START_TEST(test_creation) {
    tt_tensor *z = tt_zeros(TT_SHAPE(2, 3));
    ck_assert_int_eq(z->ndim, 2);
    ck_assert_uint_eq(z->size, 6);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(z->data[i], 0.0f);
    tt_tensor *o = tt_full(TT_SHAPE(4), 2.5f);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(o->data[i], 2.5f);
    tt_tensor *r = tt_arange(5);
    ck_assert_float_eq(r->data[4], 4.0f);
    ck_assert_ptr_null(z->grad);
    ck_assert(!z->requires_grad);
    tt_free(z);
    tt_free(o);
    tt_free(r);
}
END_TEST

START_TEST(test_rng_is_portable) {
    /* Fixed reference values: the same on every platform (integer splitmix64 and a
     * libm-free log). If these change, checkpoints and runs stop being reproducible. */
    tt_rng r;
    tt_rng_seed(&r, 42);
    ck_assert_uint_eq(tt_rng_u64(&r), 13679457532755275413ull);
    tt_manual_seed(7);
    tt_tensor *u = tt_rand_uniform(TT_SHAPE(1000), 0.0f, 1.0f);
    tt_tensor *n = tt_rand_normal(TT_SHAPE(10000), 0.0f, 1.0f);
    double mu = 0, m2 = 0, un = 0;
    for (int i = 0; i < 1000; i++) {
        ck_assert(u->data[i] >= 0.0f && u->data[i] < 1.0f);
        un += u->data[i];
    }
    for (int i = 0; i < 10000; i++) mu += n->data[i], m2 += n->data[i] * n->data[i];
    mu /= 10000, m2 /= 10000;
    ck_assert_msg(fabs(un / 1000 - 0.5) < 0.03, "uniform mean %g", un / 1000);
    ck_assert_msg(fabs(mu) < 0.03 && fabs(m2 - 1.0) < 0.05, "normal mean %g var %g", mu, m2);
    /* the portable log agrees with libm to a few ulps */
    for (double x = 1e-6; x < 1e6; x *= 3.7)
        ck_assert_msg(fabs(tt_log_portable(x) - log(x)) < 1e-14 * (1 + fabs(log(x))), "log(%g)", x);
    tt_free(u);
    tt_free(n);
}
END_TEST

START_TEST(test_tape_records_and_resets) {
    tt_tensor *a = tt_set_requires_grad(tt_ones(TT_SHAPE(3)), true);
    tt_tensor *b = tt_ones(TT_SHAPE(3));
    ck_assert_int_eq(tt_tape_len(), 0);
    tt_tensor *c = tt_add(a, b);
    tt_tensor *d = tt_mul(c, c);
    ck_assert_int_eq(tt_tape_len(), 2);
    ck_assert_ptr_nonnull(d->node);
    ck_assert_str_eq(d->node->op, "mul");
    ck_assert_ptr_eq(d->node->in[0], c);
    /* ops on tensors that need no grad are not recorded */
    tt_add(b, b);
    ck_assert_int_eq(tt_tape_len(), 2);
    tt_tape_reset();
    ck_assert_int_eq(tt_tape_len(), 0);
    tt_free(a);
    tt_free(b);
}
END_TEST

START_TEST(test_no_grad_records_nothing) {
    tt_tensor *a = tt_set_requires_grad(tt_ones(TT_SHAPE(3)), true);
    tt_no_grad_begin();
    tt_tensor *c = tt_add(a, a);
    tt_no_grad_end();
    ck_assert_int_eq(tt_tape_len(), 0);
    ck_assert(!c->requires_grad);
    ck_assert_ptr_null(c->node);
    TT_EXPECT_ERROR(tt_backward(tt_sum_all(c)), "does not require grad");
    tt_tape_reset();
    tt_free(a);
}
END_TEST

START_TEST(test_shared_input_gets_summed_gradient) {
    /* y = x*x + x*3  ->  dy/dx = 2x + 3, x used by three ops */
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(2), (float[]){1.5f, -2.0f}), true);
    tt_tensor *three = tt_full(TT_SHAPE(2), 3.0f);
    tt_tensor *y = tt_sum_all(tt_add(tt_mul(x, x), tt_mul(x, three)));
    tt_backward(y);
    ck_assert_float_eq_tol(x->grad[0], 2 * 1.5f + 3, 1e-6);
    ck_assert_float_eq_tol(x->grad[1], 2 * -2.0f + 3, 1e-6);
    tt_tape_reset();
    tt_free(x);
    tt_free(three);
}
END_TEST

START_TEST(test_leaf_grads_accumulate_until_zeroed) {
    tt_tensor *x = tt_set_requires_grad(tt_from_data(TT_SHAPE(2), (float[]){1, 2}), true);
    for (int k = 0; k < 2; k++) {
        tt_backward(tt_sum_all(tt_mul(x, x)));
        tt_tape_reset();
    }
    /* two backward calls: 2 * 2x */
    ck_assert_float_eq(x->grad[0], 4.0f);
    ck_assert_float_eq(x->grad[1], 8.0f);
    tt_zero_grad(x);
    ck_assert_float_eq(x->grad[1], 0.0f);
    /* two backward calls over the SAME tape also accumulate into the leaf, while the
     * intermediate gradients are recomputed rather than doubled */
    tt_tensor *y = tt_sum_all(tt_mul(x, x));
    tt_backward(y);
    tt_backward(y);
    ck_assert_float_eq(x->grad[1], 8.0f);
    ck_assert_float_eq(y->grad[0], 1.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_backward_needs_scalar_or_seed) {
    tt_tensor *x = tt_set_requires_grad(tt_set_name(tt_ones(TT_SHAPE(2, 2)), "x"), true);
    tt_tensor *y = tt_mul(x, x);
    TT_EXPECT_ERROR(tt_backward(y), "backward: '<unnamed>' [2, 2] is not a scalar");
    float seed[4] = {1, 0, 0, 2};
    tt_backward_seed(y, seed);
    ck_assert_float_eq(x->grad[0], 2.0f);
    ck_assert_float_eq(x->grad[1], 0.0f);
    ck_assert_float_eq(x->grad[3], 4.0f);
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_arena_is_flat_over_many_steps) {
    /* 10,000 forward/backward steps: after the first step the arena never grows and the
     * persistent heap is unchanged. */
    tt_tensor *w = tt_set_requires_grad(tt_rand_uniform(TT_SHAPE(16, 16), -1, 1), true);
    tt_tensor *x = tt_rand_uniform(TT_SHAPE(16, 16), -1, 1);
    size_t cap_after_first = 0, persistent_after_first = 0;
    for (int step = 0; step < 10000; step++) {
        tt_tensor *h = tt_mul(tt_add(x, w), w);
        tt_backward(tt_mean_all(h));
        tt_tape_reset();
        tt_mem_stats s = tt_mem_get_stats();
        if (step == 0) {
            cap_after_first = s.arena_capacity;
            persistent_after_first = s.persistent;
        }
        ck_assert_uint_eq(s.arena_capacity, cap_after_first);
        ck_assert_uint_eq(s.persistent, persistent_after_first);
        ck_assert_uint_eq(s.arena_used, 0);
    }
    tt_free(w);
    tt_free(x);
}
END_TEST

START_TEST(test_arena_grows_and_merges) {
    /* a step bigger than one block spills into new blocks; the reset merges them so the
     * next identical step needs no new memory */
    tt_tensor *big = tt_zeros(TT_SHAPE(1024, 1024)); /* 4 MiB per temporary */
    for (int step = 0; step < 3; step++) {
        for (int k = 0; k < 3; k++) tt_add(big, big);
        tt_mem_stats s = tt_mem_get_stats();
        ck_assert_uint_ge(s.arena_capacity, 3u * 4 * 1024 * 1024);
        tt_tape_reset();
    }
    tt_mem_stats s1 = tt_mem_get_stats();
    for (int k = 0; k < 3; k++) tt_add(big, big);
    tt_mem_stats s2 = tt_mem_get_stats();
    ck_assert_uint_eq(s1.arena_capacity, s2.arena_capacity);
    tt_tape_reset();
    tt_free(big);
}
END_TEST

START_TEST(test_tape_dump_and_dot) {
    tt_tensor *w = tt_set_name(tt_set_requires_grad(tt_ones(TT_SHAPE(2, 3)), true), "w");
    tt_tensor *b = tt_set_name(tt_ones(TT_SHAPE(3)), "b");
    tt_tensor *h = tt_set_name(tt_add(w, b), "h");
    tt_sum_all(tt_mul(h, h));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tt_tape_print(f);
    fclose(f);
    printf("%s", text);
    ck_assert_ptr_nonnull(strstr(text, "tape: 3 nodes"));
    ck_assert_ptr_nonnull(strstr(text, "   0 add"));
    ck_assert_ptr_nonnull(strstr(text, " w[2, 3] b[3]"));
    ck_assert_ptr_nonnull(strstr(text, "#0[2, 3] #0[2, 3]"));
    ck_assert_ptr_nonnull(strstr(text, "test_core.c:"));
    free(text);
    f = open_memstream(&text, &len);
    tt_tape_dot(f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "digraph tape"));
    ck_assert_ptr_nonnull(strstr(text, "n0 -> n1"));
    free(text);
    tt_tape_reset();
    tt_free(w);
    tt_free(b);
}
END_TEST

START_TEST(test_print_shows_name_shape_op) {
    tt_tensor *w = tt_set_name(tt_set_requires_grad(tt_arange(100), true), "w");
    tt_tensor *h = tt_set_name(tt_add(w, w), "h");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    tt_fprint(f, h, false);
    tt_fprint(f, w, false);
    fclose(f);
    printf("%s", text);
    ck_assert_ptr_nonnull(strstr(text, "tensor 'h' [100] op=add requires_grad"));
    ck_assert_ptr_nonnull(strstr(text, "[0, 2, 4, ..., 194, 196, 198]"));
    ck_assert_ptr_nonnull(strstr(text, "tensor 'w' [100] op=leaf requires_grad"));
    free(text);
    tt_tape_reset();
    tt_free(w);
}
END_TEST

START_TEST(test_mark_release) {
    tt_tensor *a = tt_ones(TT_SHAPE(4));
    tt_tensor *keep = tt_add(a, a);
    tt_mark m = tt_mark_get();
    tt_add(keep, a);
    tt_mark_release(m);
    tt_tensor *again = tt_add(keep, a);
    ck_assert_float_eq(keep->data[0], 2.0f);
    ck_assert_float_eq(again->data[3], 3.0f);
    tt_tape_reset();
    tt_free(a);
}
END_TEST

/* A temporary's gradient is released once its producer's backward has run (PyTorch's
 * non-leaf .grad); tt_retain_grad keeps one, tt_set_retain_grads all; released buffers
 * are reused, so a deep chain needs a handful of gradient buffers, not one per op. */
START_TEST(test_temporary_grads_released_and_reused) {
    tt_tensor *x = tt_set_requires_grad(tt_full(TT_SHAPE(4), 1.5f), true);
    tt_tensor *y = tt_scale(x, 2.0f), *z = tt_scale(y, 3.0f);
    tt_tensor *loss = tt_sum_all(z);
    tt_retain_grad(y);
    tt_backward(loss);
    ck_assert_ptr_nonnull(loss->grad); /* the root keeps its seed */
    ck_assert_ptr_null(z->grad);       /* released */
    ck_assert_ptr_nonnull(y->grad);    /* retained: dloss/dy = 3 */
    for (int i = 0; i < 4; i++) ck_assert_float_eq(y->grad[i], 3.0f);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(x->grad[i], 6.0f);
    tt_tape_reset();

    bool old = tt_set_retain_grads(true);
    ck_assert(!old);
    tt_zero_grad(x);
    y = tt_scale(x, 2.0f), z = tt_scale(y, 3.0f);
    tt_backward(tt_sum_all(z));
    ck_assert_ptr_nonnull(z->grad);
    ck_assert_ptr_nonnull(y->grad);
    for (int i = 0; i < 4; i++) ck_assert_float_eq(z->grad[i], 1.0f);
    tt_set_retain_grads(false);
    tt_tape_reset();

    /* a chain of 40 ops on 64K floats: with recycling the backward adds a few gradient
     * buffers to the arena, without it one per op */
    size_t peak[2];
    tt_tensor *big = tt_set_requires_grad(tt_full(TT_SHAPE(1 << 16), 0.5f), true);
    for (int keep = 0; keep < 2; keep++) {
        tt_set_retain_grads(keep);
        tt_tensor *h = big;
        for (int i = 0; i < 40; i++) h = tt_scale(h, 1.01f);
        size_t fwd = tt_mem_get_stats().arena_used;
        tt_backward(tt_sum_all(h));
        peak[keep] = tt_mem_get_stats().arena_used - fwd;
        tt_tape_reset();
    }
    tt_set_retain_grads(false);
    printf("  backward of a 40-op chain of 256 KB tensors: arena +%zu KB recycled, +%zu KB kept\n",
           peak[0] >> 10, peak[1] >> 10);
    ck_assert_uint_le(peak[0], 4 * (256u << 10));
    ck_assert_uint_ge(peak[1], 40 * (256u << 10));
    tt_free(big);
    tt_free(x);
}
END_TEST

/* The backward of a reshape, and of an add of two same-shaped tensors, hands its output's
 * gradient buffer to its (first) input when that input has none yet and the output's
 * would be released anyway; the values are those of accumulating, and a retained output
 * or the backward's root keeps its own gradient. */
START_TEST(test_gradient_passes_through_views) {
    tt_tensor *x = tt_set_requires_grad(tt_full(TT_SHAPE(2, 3), 0.5f), true);
    for (int retain = 0; retain < 2; retain++) {
        tt_tensor *y = tt_scale(x, 2.0f);                     /* temporary, no grad yet */
        tt_tensor *r = tt_reshape(y, 1, ((int[]){6}));         /* its gradient: r's buffer */
        tt_tensor *s = tt_add(r, tt_scale(r, 1.0f));           /* r gets s's, and 1 more */
        tt_tensor *loss = tt_sum_all(tt_mul(s, s));
        if (retain) tt_retain_grad(s);
        tt_backward(loss);
        /* s = 2r, loss = sum s^2: dL/ds = 2s = 4r = 4 (r = 1); dL/dr = 8; dL/dx = 16 */
        for (int i = 0; i < 6; i++) ck_assert_float_eq(x->grad[i], 16.0f);
        if (retain) {
            ck_assert_ptr_nonnull(s->grad);
            for (int i = 0; i < 6; i++) ck_assert_float_eq(s->grad[i], 4.0f);
        } else {
            ck_assert_ptr_null(s->grad);
        }
        ck_assert_ptr_null(r->grad);
        ck_assert_ptr_null(y->grad);
        tt_tape_reset();
        tt_zero_grad(x);
    }
    /* the root of the backward is a reshape: it keeps its seed, its input gets a copy */
    tt_tensor *y = tt_scale(x, 3.0f);
    tt_tensor *r = tt_reshape(y, 1, ((int[]){6}));
    const float seed[6] = {1, 2, 3, 4, 5, 6};
    tt_backward_seed(r, seed);
    ck_assert_ptr_nonnull(r->grad);
    for (int i = 0; i < 6; i++) {
        ck_assert_float_eq(r->grad[i], (float)(i + 1));
        ck_assert_float_eq(x->grad[i], 3.0f * (float)(i + 1));
    }
    tt_tape_reset();
    tt_free(x);
}
END_TEST

START_TEST(test_free_temporary_is_an_error) {
    tt_tensor *a = tt_ones(TT_SHAPE(4));
    tt_tensor *t = tt_add(a, a);
    TT_EXPECT_ERROR(tt_free(t), "is a temporary");
    tt_tape_reset();
    tt_free(a);
}
END_TEST

static Suite *core_suite(void) {
    Suite *s = suite_create("core");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_creation);
    tcase_add_test(tc, test_rng_is_portable);
    tcase_add_test(tc, test_tape_records_and_resets);
    tcase_add_test(tc, test_no_grad_records_nothing);
    tcase_add_test(tc, test_shared_input_gets_summed_gradient);
    tcase_add_test(tc, test_leaf_grads_accumulate_until_zeroed);
    tcase_add_test(tc, test_backward_needs_scalar_or_seed);
    tcase_add_test(tc, test_arena_is_flat_over_many_steps);
    tcase_add_test(tc, test_arena_grows_and_merges);
    tcase_add_test(tc, test_tape_dump_and_dot);
    tcase_add_test(tc, test_print_shows_name_shape_op);
    tcase_add_test(tc, test_mark_release);
    tcase_add_test(tc, test_free_temporary_is_an_error);
    tcase_add_test(tc, test_temporary_grads_released_and_reused);
    tcase_add_test(tc, test_gradient_passes_through_views);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(core_suite)

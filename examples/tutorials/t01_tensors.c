/* t01_tensors.c - companion program of docs/tutorials/01-tensors.md.
 *
 * Tensors, shapes and memory: creating tensors, row-major layout, names, int32
 * tensors, views, broadcasting, the two lifetimes (persistent vs. step arena) and
 * what an error message looks like. Its output is quoted in the tutorial and checked
 * by tests/check_tutorials.sh, so keep the two in sync.
 *
 *   make && build/examples/tutorials/t01_tensors
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include "tinytorch.h"

/* An error handler that jumps back instead of aborting (section 6). */
static jmp_buf on_error;
static void catch_error(const char *message, void *user) {
    (void)user;
    printf("caught: %s\n", message);
    longjmp(on_error, 1);
}

int main(void) {
    /* 1. creation: shape is (ndim, int[]), TT_SHAPE(2, 3) expands to 2, (int[]){2, 3} */
    printf("== 1. creation\n");
    tt_tensor *a = tt_set_name(tt_from_data(TT_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6}), "a");
    tt_tensor *z = tt_set_name(tt_zeros(TT_SHAPE(2, 3)), "z");
    tt_tensor *r = tt_set_name(tt_arange(5), "r");
    tt_manual_seed(42); /* same numbers on every platform */
    tt_tensor *n = tt_set_name(tt_rand_normal(TT_SHAPE(2, 2), 0.0f, 1.0f), "n");
    tt_print(a);
    tt_print(z);
    tt_print(r);
    tt_print(n);

    /* 2. layout: contiguous, row-major; element (i, j) of a [2, 3] is data[i * 3 + j] */
    printf("== 2. layout\n");
    char shape[TT_SHAPE_STR_LEN];
    printf("a: ndim %d, shape %s, size %zu, a[1][2] = data[1 * 3 + 2] = %g\n", a->ndim,
           tt_shape_str(a, shape), a->size, a->data[1 * 3 + 2]);
    tt_tensor *s = tt_set_name(tt_full(0, NULL, 7.0f), "s"); /* a scalar: ndim 0, size 1 */
    printf("s: ndim %d, shape %s, size %zu, item %g\n", s->ndim, tt_shape_str(s, shape),
           s->size, tt_item(s));

    /* 3. int32 tensors carry token ids, targets and indices */
    printf("== 3. int32\n");
    tt_tensor *ids = tt_set_name(tt_from_ids(TT_SHAPE(2, 2), (int32_t[]){3, 1, 4, 1}), "ids");
    tt_print(ids);
    printf("tt_ids(ids)[2] = %d\n", tt_ids(ids)[2]);

    /* 4. ops return temporaries; reshape is a view that shares the data */
    printf("== 4. ops and views\n");
    tt_tensor *b = tt_set_name(tt_from_data(TT_SHAPE(3), (float[]){10, 20, 30}), "b");
    tt_tensor *c = tt_set_name(tt_add(a, b), "c"); /* [2, 3] + [3] broadcasts b over rows */
    tt_print(c);
    tt_tensor *v = tt_reshape(a, TT_SHAPE(3, 2));
    printf("reshape [3, 2]: is_view %d, shares a's data %d, persistent %d\n", v->is_view,
           v->data == a->data, v->persistent);
    tt_print(v);
    tt_tensor *t = tt_transpose(a, 0, 1); /* a copy: [3, 2] with t[j][i] = a[i][j] */
    tt_print(t);

    /* 5. memory: persistent tensors are malloc'd, op outputs come from the step arena */
    printf("== 5. memory\n");
    tt_mem_stats m = tt_mem_get_stats();
    printf("persistent: %zu tensors, %zu bytes\n", m.n_persistent, m.persistent);
    printf("arena: %zu bytes used of %zu reserved\n", m.arena_used, m.arena_capacity);
    tt_tape_reset(); /* c, v and t are gone; a, b, ... are untouched */
    m = tt_mem_get_stats();
    printf("after tt_tape_reset: arena %zu bytes used, peak %zu\n", m.arena_used, m.arena_peak);

    /* 6. misuse stops with a message naming the op, the tensors and your file:line */
    printf("== 6. errors\n");
    tt_tensor *bad = tt_set_name(tt_zeros(TT_SHAPE(2)), "bad");
    tt_set_error_handler(catch_error, NULL);
    if (setjmp(on_error) == 0) tt_add(a, bad); /* [2, 3] + [2] does not broadcast */
    tt_set_error_handler(NULL, NULL);

    tt_tape_reset();
    tt_free(a);
    tt_free(z);
    tt_free(r);
    tt_free(n);
    tt_free(s);
    tt_free(ids);
    tt_free(b);
    tt_free(bad);
    m = tt_mem_get_stats();
    printf("at exit: %zu persistent tensors\n", m.n_persistent);
    return EXIT_SUCCESS;
}

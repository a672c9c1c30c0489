/* tt_test.h - shared helpers for the Check suites.
 *
 *  TT_EXPECT_ERROR(stmt, "substring")  stmt must raise a tinytorch error whose message
 *                                      contains the substring (captured by a handler).
 *  tt_test_gradcheck(op, f, ...)       gradcheck passes AND fails once the backward of
 *                                      `op` is scaled by 1.01 (the mutation test).
 *  TT_TEST_MAIN(suite_fn)              main() running one suite.
 */
#ifndef TT_TEST_H
#define TT_TEST_H

#include <check.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "tinytorch.h"

extern jmp_buf tt_test_jmp;
extern char tt_test_msg[1024];
void tt_test_catch_errors(void);   /* install the longjmp handler   */
void tt_test_release_errors(void); /* restore the default handler   */

#define TT_EXPECT_ERROR(stmt, substring)                                                \
    do {                                                                                \
        tt_test_catch_errors();                                                         \
        tt_test_msg[0] = 0;                                                             \
        if (setjmp(tt_test_jmp) == 0) {                                                 \
            stmt;                                                                       \
            tt_test_release_errors();                                                   \
            ck_abort_msg("expected an error containing \"%s\" from: %s", substring,     \
                         #stmt);                                                        \
        }                                                                               \
        tt_test_release_errors();                                                       \
        ck_assert_msg(strstr(tt_test_msg, substring) != NULL,                           \
                      "error message \"%s\" lacks \"%s\"", tt_test_msg, substring);     \
        printf("  expected error: %s\n", tt_test_msg);                                  \
    } while (0)

/* Gradient check of op `op` plus the 1.01 mutation test; prints both reports. */
void tt_test_gradcheck(const char *op, tt_gradcheck_fn f, void *user, int n,
                       tt_tensor *const *inputs, const tt_gradcheck_opts *opts);

/* A persistent tensor of the given shape with values uniform in [lo, hi] that
 * requires grad (seeded by the global RNG). */
tt_tensor *tt_test_param(int ndim, const int *shape, float lo, float hi);
/* Values bounded away from 0 (|x| in [0.1, 1]), for ops with a kink at 0. */
tt_tensor *tt_test_param_away0(int ndim, const int *shape);

/* A private temporary directory per test: tt_test_tmpdir("tt_ckpt") creates
 * /tmp/tt_ckpt_XXXXXX and returns its path; tt_test_path("a.st") names a file in it (four
 * rotating buffers, so a call can take several); tt_test_tmpdir_remove() deletes it with
 * everything inside. tt_test_read_file returns a malloc'd copy of a whole file. */
const char *tt_test_tmpdir(const char *prefix);
const char *tt_test_path(const char *name);
void tt_test_tmpdir_remove(void);
unsigned char *tt_test_read_file(const char *path, size_t *len);

/* Max |a - b| over n floats. */
float tt_test_maxdiff(const float *a, const float *b, size_t n);

/* ReLU kinks on the tape, for tests that must keep finite differences away from them:
 * the number of ReLU pre-activations of node nd (0 unless its op is "relu" or
 * "affine_relu"), and pre-activation k: the input of a "relu", x w^T + b recomputed in
 * double for an "affine_relu" (which keeps only its output). */
size_t tt_test_relu_count(const tt_node *nd);
double tt_test_relu_preact(const tt_node *nd, size_t k);

#define TT_TEST_MAIN(suite_fn)                                        \
    int main(void) {                                                  \
        SRunner *sr = srunner_create(suite_fn());                     \
        srunner_run_all(sr, CK_NORMAL);                               \
        int failed = srunner_ntests_failed(sr);                       \
        srunner_free(sr);                                             \
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;             \
    }

#endif

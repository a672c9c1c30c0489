/* test_nn_layers.c - Linear, Embedding, LayerNorm, RMSNorm and Expert: parameter names,
 * initialisation, forward values, and gradients (with the 1.01 mutation test). */
#include "tt_test.h"

#include "nn/nn.h"

#include <math.h>

/* ---- gradcheck wrappers: inputs[0] is x, the module's tensors follow ------------------- */
static tt_tensor *f_linear(tt_tensor *const *in, void *user) {
    return tt_linear_forward(user, in[0]);
}
static tt_tensor *f_layernorm(tt_tensor *const *in, void *user) {
    return tt_layernorm_forward(user, in[0]);
}
static tt_tensor *f_rmsnorm(tt_tensor *const *in, void *user) {
    return tt_rmsnorm_forward(user, in[0]);
}
static tt_tensor *f_expert(tt_tensor *const *in, void *user) {
    return tt_expert_forward(user, in[0]);
}
typedef struct embed_case {
    tt_embed *m;
    tt_tensor *ids;
} embed_case;
static tt_tensor *f_embed(tt_tensor *const *in, void *user) {
    (void)in; /* in[0] is the module's weight */
    embed_case *c = user;
    return tt_embed_forward(c->m, c->ids);
}

static void randomize(tt_tensor *t, float lo, float hi) {
    tt_rng *r = tt_rng_global();
    for (size_t i = 0; i < t->size; i++) t->data[i] = lo + (hi - lo) * tt_rng_uniform(r);
}

/* ---- Linear ---------------------------------------------------------------------------- */

START_TEST(test_linear_names_and_values) {
    tt_params p = {0};
    tt_linear fc, nob;
    tt_linear_init(&fc, &p, "fc", 2, 3, true);
    tt_linear_init(&nob, &p, "proj", 2, 3, false);
    ck_assert_int_eq(p.n, 3);
    ck_assert_str_eq(p.t[0]->name, "fc.weight");
    ck_assert_str_eq(p.t[1]->name, "fc.bias");
    ck_assert_str_eq(p.t[2]->name, "proj.weight");
    ck_assert_ptr_null(nob.bias);
    ck_assert_int_eq(fc.weight->shape[0], 3); /* [out, in] as torch */
    ck_assert_int_eq(fc.weight->shape[1], 2);
    ck_assert(fc.weight->requires_grad && fc.bias->requires_grad);
    ck_assert_ptr_eq(tt_params_find(&p, "fc.bias"), fc.bias);

    /* y = x W^T + b by hand: W = [[1,2],[3,4],[5,6]], b = [0.5,-0.5,1], x = [1,-1] */
    const float w[6] = {1, 2, 3, 4, 5, 6}, b[3] = {0.5f, -0.5f, 1};
    memcpy(fc.weight->data, w, sizeof w);
    memcpy(fc.bias->data, b, sizeof b);
    memcpy(nob.weight->data, w, sizeof w);
    tt_tensor *x = tt_from_data(TT_SHAPE(2, 1, 2), (float[]){1, -1, 2, 0.5f}); /* [..., in] */
    tt_tensor *y = tt_linear_forward(&fc, x);
    ck_assert_int_eq(y->ndim, 3);
    ck_assert_int_eq(y->shape[2], 3);
    const float want[6] = {-0.5f, -1.5f, 0.0f, 3.5f, 7.5f, 14.0f};
    ck_assert_float_eq(tt_test_maxdiff(y->data, want, 6), 0.0f);
    tt_tensor *y2 = tt_linear_forward(&nob, x);
    const float want2[6] = {-1, -1, -1, 3, 8, 13};
    ck_assert_float_eq(tt_test_maxdiff(y2->data, want2, 6), 0.0f);
    tt_tape_reset();
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_linear_init_bounds) {
    /* torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias; in = 16 -> 0.25 */
    tt_manual_seed(7);
    tt_params p = {0};
    tt_linear fc;
    tt_linear_init(&fc, &p, "fc", 16, 64, true);
    const float bound = 0.25f;
    int bins[4] = {0};
    double sum = 0;
    float lo = 1, hi = -1;
    for (size_t i = 0; i < fc.weight->size; i++) {
        float v = fc.weight->data[i];
        ck_assert_float_le(fabsf(v), bound);
        sum += v;
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
        int k = (int)((v + bound) / (2 * bound) * 4);
        bins[k > 3 ? 3 : k]++;
    }
    /* 1024 draws: the mean has sd 0.25/sqrt(3)/32 = 0.0045, each quarter-bin count
     * 256 +- 13.9; the bounds below are > 4 sd away */
    ck_assert_double_lt(fabs(sum / 1024), 0.02);
    for (int k = 0; k < 4; k++) ck_assert_msg(abs(bins[k] - 256) < 60, "bin %d: %d", k, bins[k]);
    ck_assert_float_lt(lo, -0.24f);
    ck_assert_float_gt(hi, 0.24f);
    for (size_t i = 0; i < fc.bias->size; i++) ck_assert_float_le(fabsf(fc.bias->data[i]), bound);
    printf("  Linear(16, 64) weight in [%.4f, %.4f], mean %.4f, quarter bins %d %d %d %d\n", lo,
           hi, sum / 1024, bins[0], bins[1], bins[2], bins[3]);
    tt_params_free(&p);
}
END_TEST

static void linear_grad(bool bias) {
    tt_params p = {0};
    tt_linear fc;
    tt_linear_init(&fc, &p, "fc", 5, 3, bias);
    tt_tensor *x = tt_test_param(TT_SHAPE(2, 4, 5), -1, 1);
    tt_tensor *in[3] = {x, fc.weight, fc.bias};
    tt_test_gradcheck("affine", f_linear, &fc, bias ? 3 : 2, in, NULL);
    tt_free(x);
    tt_params_free(&p);
}

START_TEST(test_linear_grad_bias) { linear_grad(true); }
END_TEST
START_TEST(test_linear_grad_no_bias) { linear_grad(false); }
END_TEST

/* ---- Embedding ------------------------------------------------------------------------- */

START_TEST(test_embedding) {
    tt_manual_seed(11);
    tt_params p = {0};
    tt_embed e;
    tt_embed_init(&e, &p, "tok", 100, 10);
    ck_assert_str_eq(p.t[0]->name, "tok.weight");
    ck_assert_int_eq(e.weight->shape[0], 100);
    ck_assert_int_eq(e.weight->shape[1], 10);
    /* N(0, 1) as torch.nn.Embedding: 1000 draws, mean sd 0.03, std sd ~0.022 */
    double s = 0, s2 = 0;
    for (size_t i = 0; i < e.weight->size; i++) {
        s += e.weight->data[i];
        s2 += (double)e.weight->data[i] * e.weight->data[i];
    }
    double mean = s / 1000, sd = sqrt(s2 / 1000 - mean * mean);
    ck_assert_double_lt(fabs(mean), 0.15);
    ck_assert_double_lt(fabs(sd - 1.0), 0.1);

    /* forward picks rows; repeated ids accumulate their gradients (scatter-add) */
    tt_tensor *ids = tt_from_ids(TT_SHAPE(2, 3), (int32_t[]){3, 0, 3, 99, 3, 7});
    tt_tensor *y = tt_embed_forward(&e, ids);
    ck_assert_int_eq(y->ndim, 3);
    ck_assert_int_eq(y->shape[2], 10);
    ck_assert_float_eq(tt_test_maxdiff(y->data + 30, e.weight->data + 990, 10), 0.0f);
    tt_tape_reset();
    embed_case c = {&e, ids};
    tt_tensor *in[1] = {e.weight};
    tt_test_gradcheck("embedding", f_embed, &c, 1, in, NULL);
    tt_free(ids);
    tt_params_free(&p);
}
END_TEST

/* ---- LayerNorm / RMSNorm ------------------------------------------------------------------ */

START_TEST(test_layernorm) {
    tt_params p = {0};
    tt_layernorm ln, plain;
    tt_layernorm_init(&ln, &p, "ln", 6, 1e-5f, true);
    tt_layernorm_init(&plain, &p, "ln_plain", 6, 1e-5f, false);
    ck_assert_int_eq(p.n, 2); /* the non-affine one registers nothing */
    ck_assert_str_eq(p.t[0]->name, "ln.weight");
    ck_assert_str_eq(p.t[1]->name, "ln.bias");
    ck_assert_ptr_null(plain.weight);
    for (int i = 0; i < 6; i++) {
        ck_assert_float_eq(ln.weight->data[i], 1.0f);
        ck_assert_float_eq(ln.bias->data[i], 0.0f);
    }
    /* at init, each row of the output has mean 0 and variance ~1 */
    tt_tensor *x = tt_test_param(TT_SHAPE(3, 6), -2, 3);
    tt_tensor *y = tt_layernorm_forward(&ln, x);
    for (int r = 0; r < 3; r++) {
        double m = 0, v = 0;
        for (int k = 0; k < 6; k++) m += y->data[6 * r + k] / 6.0;
        for (int k = 0; k < 6; k++) v += (y->data[6 * r + k] - m) * (y->data[6 * r + k] - m) / 6.0;
        ck_assert_double_lt(fabs(m), 1e-6);
        ck_assert_double_lt(fabs(v - 1.0), 1e-3);
    }
    tt_tape_reset();
    randomize(ln.weight, 0.5f, 1.5f);
    randomize(ln.bias, -0.5f, 0.5f);
    tt_tensor *in[3] = {x, ln.weight, ln.bias};
    tt_test_gradcheck("layer_norm", f_layernorm, &ln, 3, in, NULL);
    tt_test_gradcheck("layer_norm", f_layernorm, &plain, 1, in, NULL);
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_rmsnorm) {
    tt_params p = {0};
    tt_rmsnorm rn, plain;
    tt_rmsnorm_init(&rn, &p, "norm", 5, 1e-6f, true);
    tt_rmsnorm_init(&plain, &p, "norm_plain", 5, 1e-6f, false);
    ck_assert_int_eq(p.n, 1);
    ck_assert_str_eq(p.t[0]->name, "norm.weight");
    ck_assert_ptr_null(plain.weight);
    /* x = [3, 4, 0, 0, 0]: rms = sqrt(25/5) = sqrt(5) */
    tt_tensor *x1 = tt_from_data(TT_SHAPE(1, 5), (float[]){3, 4, 0, 0, 0});
    tt_tensor *y1 = tt_rmsnorm_forward(&rn, x1);
    ck_assert_float_eq_tol(y1->data[0], 3.0f / sqrtf(5.0f), 1e-6f);
    ck_assert_float_eq_tol(y1->data[1], 4.0f / sqrtf(5.0f), 1e-6f);
    tt_tape_reset();
    tt_free(x1);

    tt_tensor *x = tt_test_param(TT_SHAPE(2, 3, 5), -1, 1);
    randomize(rn.weight, 0.5f, 1.5f);
    tt_tensor *in[2] = {x, rn.weight};
    tt_test_gradcheck("rms_norm", f_rmsnorm, &rn, 2, in, NULL);
    tt_test_gradcheck("rms_norm", f_rmsnorm, &plain, 1, in, NULL);
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

/* ---- Expert ------------------------------------------------------------------------------ */

START_TEST(test_expert_relu) {
    tt_params p = {0};
    tt_expert ex;
    tt_tensor *x = NULL;
    /* ReLU has a kink at 0: pick a seed whose pre-activations all sit >= 0.05 away from it.
     * A finite-difference step h = 1e-2 moves a pre-activation by at most
     * h * max(|x|, |w|, 1) <= 0.01, so no element crosses the kink during the check. */
    for (uint64_t seed = 1;; seed++) {
        ck_assert_uint_lt(seed, 100);
        tt_manual_seed(seed);
        tt_expert_init(&ex, &p, "ex", 4, 6, TT_FFN_RELU, true);
        x = tt_test_param(TT_SHAPE(3, 4), -1, 1);
        tt_tensor *pre = tt_linear_forward(&ex.up, x);
        float closest = INFINITY;
        for (size_t i = 0; i < pre->size; i++) closest = fminf(closest, fabsf(pre->data[i]));
        tt_tape_reset();
        if (closest >= 0.05f) break;
        tt_free(x);
        tt_params_free(&p);
    }
    const char *names[4] = {"ex.fc1.weight", "ex.fc1.bias", "ex.fc2.weight", "ex.fc2.bias"};
    ck_assert_int_eq(p.n, 4);
    for (int i = 0; i < 4; i++) ck_assert_str_eq(p.t[i]->name, names[i]);
    ck_assert_int_eq(ex.up.weight->shape[0], 6); /* fc1: dim -> hidden */
    ck_assert_int_eq(ex.down.weight->shape[0], 4);
    ck_assert_uint_eq(tt_params_numel(&p), 6 * 4 + 6 + 4 * 6 + 4);
    tt_tensor *in[5] = {x, ex.up.weight, ex.up.bias, ex.down.weight, ex.down.bias};
    tt_test_gradcheck("affine_relu", f_expert, &ex, 5, in, NULL); /* relu(fc1 x) */
    tt_test_gradcheck("affine", f_expert, &ex, 5, in, NULL);      /* fc2 */
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

START_TEST(test_expert_swiglu) {
    tt_params p = {0};
    tt_expert ex;
    tt_expert_init(&ex, &p, "layers.0.moe.experts.3", 4, 8, TT_FFN_SWIGLU, false);
    const char *names[3] = {"layers.0.moe.experts.3.w1.weight", "layers.0.moe.experts.3.w2.weight",
                            "layers.0.moe.experts.3.w3.weight"};
    ck_assert_int_eq(p.n, 3);
    for (int i = 0; i < 3; i++) ck_assert_str_eq(p.t[i]->name, names[i]);
    ck_assert_int_eq(ex.gate.weight->shape[0], 8); /* w3: dim -> hidden */
    ck_assert_int_eq(ex.down.weight->shape[1], 8); /* w2: hidden -> dim  */
    ck_assert_uint_eq(tt_params_numel(&p), 3 * 4 * 8);

    /* value: w2(silu(w1 x) * w3 x) by hand for one row */
    tt_tensor *x1 = tt_from_data(TT_SHAPE(1, 4), (float[]){0.5f, -1, 0.25f, 2});
    tt_tensor *y1 = tt_expert_forward(&ex, x1);
    for (int o = 0; o < 4; o++) {
        double acc = 0;
        for (int h = 0; h < 8; h++) {
            double a = 0, g = 0;
            for (int k = 0; k < 4; k++) {
                a += (double)ex.up.weight->data[h * 4 + k] * x1->data[k];
                g += (double)ex.gate.weight->data[h * 4 + k] * x1->data[k];
            }
            acc += (double)ex.down.weight->data[o * 8 + h] * (a / (1 + exp(-a))) * g;
        }
        ck_assert_double_lt(fabs(y1->data[o] - acc), 1e-5);
    }
    tt_tape_reset();
    tt_free(x1);

    tt_tensor *x = tt_test_param(TT_SHAPE(2, 3, 4), -1, 1);
    tt_tensor *in[4] = {x, ex.up.weight, ex.down.weight, ex.gate.weight};
    tt_test_gradcheck("silu", f_expert, &ex, 4, in, NULL);
    tt_test_gradcheck("affine", f_expert, &ex, 4, in, NULL);
    tt_free(x);
    tt_params_free(&p);
}
END_TEST

/* ---- parameter lists ------------------------------------------------------------------- */

START_TEST(test_params_numel_and_duplicates) {
    tt_params p = {0};
    tt_linear fc;
    tt_embed emb;
    tt_layernorm ln;
    tt_linear_init(&fc, &p, "fc", 16, 64, true);
    tt_embed_init(&emb, &p, "tok", 100, 16);
    tt_layernorm_init(&ln, &p, "ln", 16, 1e-5f, true);
    ck_assert_uint_eq(tt_params_numel(&p), 16 * 64 + 64 + 100 * 16 + 16 + 16);
    ck_assert_int_eq(p.n, 5);

    /* a second tensor under an existing name is refused */
    tt_tensor *again = tt_set_name(tt_zeros(TT_SHAPE(2)), "fc.weight");
    TT_EXPECT_ERROR(tt_params_add(&p, again), "a parameter named 'fc.weight' is already registered");
    ck_assert_int_eq(p.n, 5);
    tt_free(again);
    /* so is a temporary */
    tt_tensor *tmp = tt_tmp(TT_F32, TT_SHAPE(2));
    TT_EXPECT_ERROR(tt_params_add(&p, tmp), "parameters must be persistent tensors");
    tt_tape_reset();

    /* zero_grad keeps the buffers and zeroes them */
    tt_grad_ensure(fc.weight)[0] = 5.0f;
    tt_params_zero_grad(&p);
    ck_assert_ptr_nonnull(fc.weight->grad);
    ck_assert_float_eq(fc.weight->grad[0], 0.0f);

    char buf[TT_PATH_LEN];
    ck_assert_str_eq(tt_name_join(buf, "layers.1", "attn"), "layers.1.attn");
    ck_assert_str_eq(tt_name_join(buf, "", "attn"), "attn");
    ck_assert_str_eq(tt_name_join(buf, NULL, "attn"), "attn");
    tt_params_free(&p);
    ck_assert_int_eq(p.n, 0);
}
END_TEST

static Suite *nn_layers_suite(void) {
    Suite *s = suite_create("nn_layers");
    TCase *tc = tcase_create("nn_layers");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_linear_names_and_values);
    tcase_add_test(tc, test_linear_init_bounds);
    tcase_add_test(tc, test_linear_grad_bias);
    tcase_add_test(tc, test_linear_grad_no_bias);
    tcase_add_test(tc, test_embedding);
    tcase_add_test(tc, test_layernorm);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_expert_relu);
    tcase_add_test(tc, test_expert_swiglu);
    tcase_add_test(tc, test_params_numel_and_duplicates);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(nn_layers_suite)

/* test_v3.c - the faithful DeepSeek-V3 model against the PyTorch reference.
 *
 * Fixtures (tests/data/v3_<a|b>.safetensors) come from tests/ref/deepseek_v3_ref.py, a
 * PyTorch implementation of shared/deepseek_v3.md: weights under the official names,
 * token ids, targets, the logits of every position, the loss (CE + alpha * sequence-wise
 * balance loss) and the gradient of every parameter.
 *   (a) sigmoid scores, gate bias, 2 groups (1 kept), query compression, route_scale 2.5
 *   (b) softmax scores, wq, route_scale 2, YaRN (max_seq_len 64 > original 16), 3 groups
 *       of 2 (2 kept) scored by their max
 *   (c) (a) + one Multi-Token Prediction module (MoE block), lambda 0.3, S = 10: also the
 *       MTP logits, its CE, and the gradients of the mtp.0.* parameters
 * Tolerances: logits 1e-4 absolute (both sides fp32; the differences are summation order,
 * ~1e-6); gradients 1e-3 relative per tensor, max|g - ref| / max|ref|, which a 1% error
 * in any backward would exceed tenfold.
 */
#include "tt_test.h"

#include "io/safetensors.h"
#include "nn/v3.h"
#include "optim/optim.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

static const char *fixture_path(const char *tag, char *buf, size_t len) {
    const char *dir = getenv("TT_TEST_DATA");
    snprintf(buf, len, "%s/v3_%s.safetensors", dir ? dir : "tests/data", tag);
    return buf;
}

typedef struct fixture {
    tt_safetensors st;
    tt_v3 *m;
    float alpha, lambda; /* lambda: metadata "lambda", 0 when absent (no MTP) */
} fixture;

static void fixture_open(fixture *f, const char *tag) {
    char path[512];
    fixture_path(tag, path, sizeof path);
    tt_status s = tt_safetensors_load(path, &f->st);
    ck_assert_msg(s == TT_OK, "%s", tt_last_error());
    const char *cfg_json = tt_safetensors_meta(&f->st, "config");
    ck_assert_ptr_nonnull(cfg_json);
    tt_v3_config c;
    s = tt_v3_config_from_json(cfg_json, strlen(cfg_json), &c);
    ck_assert_msg(s == TT_OK, "%s", tt_last_error());
    f->alpha = strtof(tt_safetensors_meta(&f->st, "alpha"), NULL);
    const char *lam = tt_safetensors_meta(&f->st, "lambda");
    f->lambda = lam ? strtof(lam, NULL) : 0.0f;
    f->m = tt_v3_new(&c, 0.02f);
    ck_assert_ptr_nonnull(f->m);
    s = tt_params_copy_from(&f->m->params, &f->st, NULL, false);
    ck_assert_msg(s == TT_OK, "%s", tt_last_error());
}

static void fixture_close(fixture *f) {
    tt_tape_reset();
    tt_v3_free(f->m);
    tt_safetensors_free(&f->st);
}

/* Configs are equal when their JSON texts are (memcmp would see struct padding). */
static bool config_equal(const tt_v3_config *a, const tt_v3_config *b) {
    char ja[2048], jb[2048];
    tt_v3_config_to_json(a, ja, sizeof ja);
    tt_v3_config_to_json(b, jb, sizeof jb);
    return strcmp(ja, jb) == 0;
}

static float maxabs(const float *a, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(a[i]) > m ? fabsf(a[i]) : m;
    return m;
}

/* Forward + backward on a fixture; compare logits, loss and every gradient. Returns the
 * number of gradients off by more than 1e-3 relative (asserted 0 unless expect_bad). */
static int check_fixture_(const char *tag, bool expect_bad) {
    fixture f;
    fixture_open(&f, tag);
    tt_v3 *m = f.m;
    tt_tensor *ids = tt_safetensors_get(&f.st, "input.ids");
    tt_tensor *tgt = tt_safetensors_get(&f.st, "target.ids");
    tt_tensor *ref_logits = tt_safetensors_get(&f.st, "ref.logits");
    float ref_loss = tt_safetensors_get(&f.st, "ref.loss")->data[0];
    float ref_ce = tt_safetensors_get(&f.st, "ref.ce")->data[0];

    tt_params_zero_grad(&m->params);
    tt_v3_output out = tt_v3_forward_mtp(m, ids, tgt, f.alpha, f.lambda);
    ck_assert(tt_same_shape(out.logits, ref_logits));
    float dl = tt_test_maxdiff(out.logits->data, ref_logits->data, ref_logits->size);
    float dloss = fabsf(tt_item(out.loss) - ref_loss), dce = fabsf(tt_item(out.ce) - ref_ce);
    printf("v3 fixture (%s): logits maxdiff %.3g, loss %.7f vs %.7f (diff %.3g), ce diff %.3g\n",
           tag, (double)dl, (double)tt_item(out.loss), (double)ref_loss, (double)dloss,
           (double)dce);
    ck_assert_msg(dl <= 1e-4f, "logits differ by %g", (double)dl);
    ck_assert_msg(dloss <= 1e-5f, "loss differs by %g", (double)dloss);
    ck_assert_msg(dce <= 1e-5f, "ce differs by %g", (double)dce);
    if (f.lambda != 0.0f) {
        tt_tensor *ref_mtp = tt_safetensors_get(&f.st, "ref.mtp_logits");
        ck_assert_ptr_nonnull(ref_mtp);
        ck_assert_ptr_nonnull(out.mtp_logits);
        ck_assert(tt_same_shape(out.mtp_logits, ref_mtp));
        float dm = tt_test_maxdiff(out.mtp_logits->data, ref_mtp->data, ref_mtp->size);
        float dmce = fabsf(tt_item(out.mtp_ce) -
                           tt_safetensors_get(&f.st, "ref.mtp_ce")->data[0]);
        printf("v3 fixture (%s): MTP (lambda %g) logits maxdiff %.3g, mtp ce %.7f (diff %.3g)\n",
               tag, (double)f.lambda, (double)dm, (double)tt_item(out.mtp_ce), (double)dmce);
        ck_assert_msg(dm <= 1e-4f, "MTP logits differ by %g", (double)dm);
        ck_assert_msg(dmce <= 1e-5f, "MTP ce differs by %g", (double)dmce);
    } else {
        ck_assert_ptr_null(out.mtp_logits);
    }
    tt_backward(out.loss);

    int bad = 0;
    float worst = 0.0f;
    for (int i = 0; i < m->params.n; i++) {
        tt_tensor *p = m->params.t[i];
        char gname[128];
        snprintf(gname, sizeof gname, "grad.%s", p->name);
        tt_tensor *ref = tt_safetensors_get(&f.st, gname);
        if (!p->requires_grad) {
            /* the gate's selection bias: no gradient, and none in the reference */
            ck_assert_msg(strstr(p->name, "gate.bias") != NULL, "%s does not require grad",
                          p->name);
            ck_assert_ptr_null(ref);
            bool zero = !p->grad || maxabs(p->grad, p->size) == 0.0f;
            printf("OK     %-44s (selection bias: no gradient)\n", p->name);
            ck_assert_msg(zero, "%s received a gradient", p->name);
            continue;
        }
        ck_assert_msg(ref != NULL, "fixture lacks %s", gname);
        ck_assert_msg(p->grad != NULL, "%s got no gradient", p->name);
        bool finite = true;
        for (size_t k = 0; k < p->size; k++) finite = finite && isfinite(p->grad[k]);
        float d = tt_test_maxdiff(p->grad, ref->data, p->size);
        float scale = maxabs(ref->data, ref->size);
        float rel = scale > 0.0f ? d / scale : d;
        bool ok = finite && rel <= 1e-3f;
        /* MTP parameters: finite and really reached by the gradient */
        if (!strncmp(p->name, "mtp.", 4))
            ok = ok && scale > 0.0f && maxabs(p->grad, p->size) > 0.0f;
        worst = rel > worst ? rel : worst;
        if (!expect_bad)
            printf("%s %-44s maxdiff %.3e (rel %.3e of max %.3e)\n", ok ? "OK    " : "NOT OK",
                   p->name, (double)d, (double)rel, (double)scale);
        bad += !ok;
    }
    printf("v3 fixture (%s): %d parameters, %d NOT OK, worst relative gradient difference "
           "%.3g\n", tag, m->params.n, bad, (double)worst);
    if (!expect_bad) ck_assert_msg(bad == 0, "%d gradients differ from the reference", bad);
    fixture_close(&f);
    return bad;
}
static void check_fixture(const char *tag) { check_fixture_(tag, false); }

/* The comparison is sharp: a backward off by 1% (rope's, or the gate's top-k gather) is
 * reported NOT OK for some tensor. */
START_TEST(test_v3_fixture_notices_mutations) {
    const char *ops[] = {"rope", "gather", "rms_norm", "moe_combine"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        printf("-- mutation: backward of '%s' scaled by 1.01\n", ops[i]);
        tt_debug_mutate_backward(ops[i], 1.01f);
        int bad = check_fixture_("a", true);
        tt_debug_mutate_backward(NULL, 1.0f);
        ck_assert_msg(bad > 0, "a 1%% error in %s went unnoticed", ops[i]);
    }
}
END_TEST

START_TEST(test_v3_fixture_a_sigmoid_bias_groups_qlora) { check_fixture("a"); }
END_TEST
START_TEST(test_v3_fixture_b_softmax_yarn_route_scale) { check_fixture("b"); }
END_TEST
START_TEST(test_v3_fixture_c_mtp) { check_fixture("c"); }
END_TEST

/* The MTP path is checked too: 1% errors in the backward of ops it uses (the embedding
 * lookup of t_{i+1}, the [emb ; h] concatenation, the h[:, :-1] slice) are noticed on
 * fixture (c). */
START_TEST(test_v3_fixture_c_notices_mutations) {
    const char *ops[] = {"embedding", "concat", "slice", "cross_entropy"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        printf("-- mutation (c): backward of '%s' scaled by 1.01\n", ops[i]);
        tt_debug_mutate_backward(ops[i], 1.01f);
        int bad = check_fixture_("c", true);
        tt_debug_mutate_backward(NULL, 1.0f);
        ck_assert_msg(bad > 0, "a 1%% error in %s went unnoticed", ops[i]);
    }
}
END_TEST

/* MTP off (lambda 0, or no module) is the model without MTP, bit for bit: the same main
 * logits and loss, the same gradients of the main parameters, none for mtp.0.*; and the
 * main logits do not depend on lambda. */
START_TEST(test_v3_mtp_off_is_plain_model) {
    fixture f;
    fixture_open(&f, "c");
    tt_v3 *m = f.m;
    ck_assert_int_eq(m->cfg.n_mtp_modules, 1);
    tt_tensor *ids = tt_safetensors_get(&f.st, "input.ids");
    tt_tensor *tgt = tt_safetensors_get(&f.st, "target.ids");
    /* the same weights in a model without MTP (a non-strict load skips mtp.0.*) */
    tt_v3_config c0 = m->cfg;
    c0.n_mtp_modules = 0;
    tt_v3 *m0 = tt_v3_new(&c0, 0.5f);
    ck_assert_ptr_nonnull(m0);
    ck_assert_ptr_null(m0->mtp);
    ck_assert_msg(tt_params_copy_from(&m0->params, &f.st, NULL, false) == TT_OK, "%s",
                  tt_last_error());
    ck_assert_int_lt(m0->params.n, m->params.n);

    tt_params_zero_grad(&m->params);
    tt_params_zero_grad(&m0->params);
    tt_v3_output off = tt_v3_forward_mtp(m, ids, tgt, f.alpha, 0.0f);
    tt_v3_output plain = tt_v3_forward(m0, ids, tgt, f.alpha);
    ck_assert_ptr_null(off.mtp_logits);
    ck_assert_ptr_null(off.mtp_ce);
    ck_assert_ptr_null(off.mtp_routing);
    ck_assert(memcmp(off.logits->data, plain.logits->data,
                     off.logits->size * sizeof(float)) == 0);
    ck_assert_float_eq(tt_item(off.loss), tt_item(plain.loss));
    tt_backward(off.loss);
    tt_backward(plain.loss);
    for (int i = 0; i < m->params.n; i++) {
        tt_tensor *p = m->params.t[i];
        if (!strncmp(p->name, "mtp.", 4)) {
            ck_assert_msg(!p->grad || maxabs(p->grad, p->size) == 0.0f, "%s got a gradient",
                          p->name);
            continue;
        }
        tt_tensor *q = tt_params_find(&m0->params, p->name);
        ck_assert_msg(q != NULL, "%s missing without MTP", p->name);
        if (!p->requires_grad) continue;
        ck_assert_msg(memcmp(p->grad, q->grad, p->size * sizeof(float)) == 0,
                      "%s: gradient differs with MTP off", p->name);
    }
    tt_tape_reset();
    /* with MTP on the main logits and CE are unchanged; the loss is not */
    tt_v3_output on = tt_v3_forward_mtp(m, ids, tgt, f.alpha, f.lambda);
    tt_v3_output off2 = tt_v3_forward_mtp(m, ids, tgt, f.alpha, 0.0f);
    ck_assert(memcmp(on.logits->data, off2.logits->data,
                     on.logits->size * sizeof(float)) == 0);
    ck_assert_float_eq(tt_item(on.ce), tt_item(off2.ce));
    ck_assert_float_gt(tt_item(on.loss) - tt_item(off2.loss), 0.0f);
    printf("v3 MTP off: identical to the plain model; on: loss %.6f = off %.6f + lambda * "
           "mtp_ce %.6f + MTP balance term\n", (double)tt_item(on.loss),
           (double)tt_item(off2.loss), (double)tt_item(on.mtp_ce));
    tt_tape_reset();
    /* the main weights do not depend on whether the model has MTP (registered last) */
    tt_manual_seed(11);
    tt_v3 *a = tt_v3_new(&m->cfg, 0.02f);
    tt_manual_seed(11);
    tt_v3 *b = tt_v3_new(&c0, 0.02f);
    for (int i = 0; i < b->params.n; i++) {
        ck_assert_str_eq(a->params.t[i]->name, b->params.t[i]->name);
        ck_assert(memcmp(a->params.t[i]->data, b->params.t[i]->data,
                         b->params.t[i]->size * sizeof(float)) == 0);
    }
    ck_assert_str_eq(a->params.t[b->params.n]->name, "mtp.0.enorm.weight");
    tt_v3_free(a);
    tt_v3_free(b);
    tt_v3_free(m0);
    fixture_close(&f);
}
END_TEST

/* Errors: lambda without a module, S = 1, a config asking for 2 modules; the MTP names
 * and the MTP gate's bias update. */
START_TEST(test_v3_mtp_errors_names_bias) {
    fixture f;
    fixture_open(&f, "a");
    tt_tensor *ids = tt_safetensors_get(&f.st, "input.ids");
    TT_EXPECT_ERROR(tt_v3_forward_mtp(f.m, ids, NULL, 0.0f, 0.3f),
                    "the model has no MTP module (n_mtp_modules = 0)");
    fixture_close(&f);

    fixture_open(&f, "c");
    int32_t one[2] = {1, 2};
    tt_tensor *short_ids = tt_from_ids(TT_SHAPE(2, 1), one);
    TT_EXPECT_ERROR(tt_v3_forward_mtp(f.m, short_ids, NULL, 0.0f, 0.3f), "needs S >= 2");
    tt_free(short_ids);
    const char *want[] = {"mtp.0.enorm.weight", "mtp.0.hnorm.weight", "mtp.0.eh_proj.weight",
                          "mtp.0.attn_norm.weight", "mtp.0.attn.wq_a.weight",
                          "mtp.0.attn.wkv_b.weight", "mtp.0.ffn_norm.weight",
                          "mtp.0.ffn.gate.weight", "mtp.0.ffn.gate.bias",
                          "mtp.0.ffn.experts.3.w2.weight", "mtp.0.ffn.shared_experts.w1.weight",
                          "mtp.0.norm.weight"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(tt_params_find(&f.m->params, want[i]) != NULL, "missing %s", want[i]);
    /* shared, not copied */
    ck_assert_ptr_null(tt_params_find(&f.m->params, "mtp.0.embed.weight"));
    ck_assert_ptr_null(tt_params_find(&f.m->params, "mtp.0.head.weight"));
    tt_tensor *eh = tt_params_find(&f.m->params, "mtp.0.eh_proj.weight");
    ck_assert_int_eq(eh->shape[0], f.m->cfg.dim);
    ck_assert_int_eq(eh->shape[1], 2 * f.m->cfg.dim);
    ck_assert(!f.m->mtp[0].block.dense); /* like the last main layer: MoE */
    /* the MTP block's gate bias follows the aux-loss-free update as well */
    ids = tt_safetensors_get(&f.st, "input.ids");
    tt_v3_output out = tt_v3_forward_mtp(f.m, ids, NULL, 0.0f, f.lambda);
    ck_assert_ptr_nonnull(out.mtp_routing);
    tt_tensor *bias = f.m->mtp[0].block.moe.gate.bias;
    const int E = f.m->cfg.n_routed_experts;
    float *before = malloc((size_t)E * sizeof *before);
    memcpy(before, bias->data, (size_t)E * sizeof *before);
    tt_v3_update_bias(f.m, &out, 0.001f);
    double mean = 0;
    for (int e = 0; e < E; e++) mean += out.mtp_routing->counts[e];
    mean /= E;
    for (int e = 0; e < E; e++) {
        double d = mean - out.mtp_routing->counts[e];
        ck_assert_float_eq(bias->data[e], before[e] + (d > 0 ? 0.001f : d < 0 ? -0.001f : 0.0f));
    }
    free(before);
    fixture_close(&f);

    tt_v3_config c;
    const char *two = "{\"n_mtp_modules\": 2}";
    ck_assert_int_eq(tt_v3_config_from_json(two, strlen(two), &c), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "n_mtp_modules = 2 must be 0 or 1"));
    const char *on = "{\"n_mtp_modules\": 1}";
    ck_assert_int_eq(tt_v3_config_from_json(on, strlen(on), &c), TT_OK);
    ck_assert_int_eq(c.n_mtp_modules, 1);
    ck_assert_int_eq(tt_v3_config_from_json("{}", 2, &c), TT_OK);
    ck_assert_int_eq(c.n_mtp_modules, 0);
}
END_TEST

/* 30 AdamW steps (V3's betas 0.9/0.95, wd 0.1, clip 1, alpha 1e-4, bias update gamma
 * 0.001) of a small V3 on one fixed batch, with MTP weighted by lambda (0 = no MTP module).
 * Returns the model (caller frees) and the first and last main / MTP cross entropies. */
static tt_v3 *train_small_v3(uint64_t seed, float lambda, float ce[2], float mtp[2]) {
    tt_manual_seed(seed);
    tt_v3_config c = tt_v3_config_toy();
    c.vocab_size = 32;
    c.dim = 32;
    c.n_layers = 2;
    c.n_mtp_modules = lambda > 0.0f;
    tt_v3 *m = tt_v3_new(&c, 0.02f);
    ck_assert_ptr_nonnull(m);
    int32_t idv[2 * 16], tgv[2 * 16];
    for (int i = 0; i < 32; i++) {
        idv[i] = (i * 7 + 3) % 32;
        tgv[i] = (i * 7 + 10) % 32;
    }
    tt_tensor *ids = tt_from_ids(TT_SHAPE(2, 16), idv), *tgt = tt_from_ids(TT_SHAPE(2, 16), tgv);
    tt_optim *opt = tt_optim_adamw(&m->params, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    for (int step = 0; step < 30; step++) {
        tt_optim_zero_grad(opt);
        tt_v3_output out = tt_v3_forward_mtp(m, ids, tgt, 1e-4f, lambda);
        tt_backward(out.loss);
        tt_clip_grad_norm(&m->params, 1.0f);
        tt_optim_step(opt);
        tt_v3_update_bias(m, &out, 0.001f);
        int k = step == 0 ? 0 : 1;
        ce[k] = tt_item(out.ce);
        mtp[k] = lambda > 0.0f ? tt_item(out.mtp_ce) : 0.0f;
        tt_tape_reset();
    }
    tt_optim_free(opt);
    tt_free(ids);
    tt_free(tgt);
    return m;
}

/* With MTP (lambda 0.3) both the main and the MTP cross entropy at least halve. */
START_TEST(test_v3_mtp_training_steps) {
    float ce[2], mtp[2];
    tt_v3_free(train_small_v3(5, 0.3f, ce, mtp));
    printf("v3 toy training with MTP: ce %.4f -> %.4f, mtp ce %.4f -> %.4f\n", (double)ce[0],
           (double)ce[1], (double)mtp[0], (double)mtp[1]);
    ck_assert_float_lt(ce[1], 0.5f * ce[0]);
    ck_assert_float_lt(mtp[1], 0.5f * mtp[0]);
}
END_TEST

/* tt_v3_hf_name on DeepSeek-V3 671B names (61 main layers, MTP = layer 61). */
START_TEST(test_v3_hf_name_mapping) {
    static const char *const cases[][2] = {
        {"model.embed_tokens.weight", "embed.weight"},
        {"model.norm.weight", "norm.weight"},
        {"lm_head.weight", "head.weight"},
        {"model.layers.0.input_layernorm.weight", "layers.0.attn_norm.weight"},
        {"model.layers.0.post_attention_layernorm.weight", "layers.0.ffn_norm.weight"},
        {"model.layers.0.self_attn.q_a_proj.weight", "layers.0.attn.wq_a.weight"},
        {"model.layers.0.self_attn.q_a_layernorm.weight", "layers.0.attn.q_norm.weight"},
        {"model.layers.0.self_attn.q_b_proj.weight", "layers.0.attn.wq_b.weight"},
        {"model.layers.5.self_attn.q_proj.weight", "layers.5.attn.wq.weight"},
        {"model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "layers.0.attn.wkv_a.weight"},
        {"model.layers.0.self_attn.kv_a_layernorm.weight", "layers.0.attn.kv_norm.weight"},
        {"model.layers.0.self_attn.kv_b_proj.weight", "layers.0.attn.wkv_b.weight"},
        {"model.layers.0.self_attn.o_proj.weight", "layers.0.attn.wo.weight"},
        {"model.layers.2.mlp.gate_proj.weight", "layers.2.ffn.w1.weight"},
        {"model.layers.2.mlp.down_proj.weight", "layers.2.ffn.w2.weight"},
        {"model.layers.2.mlp.up_proj.weight", "layers.2.ffn.w3.weight"},
        {"model.layers.3.mlp.gate.weight", "layers.3.ffn.gate.weight"},
        {"model.layers.3.mlp.gate.e_score_correction_bias", "layers.3.ffn.gate.bias"},
        {"model.layers.60.mlp.experts.255.gate_proj.weight",
         "layers.60.ffn.experts.255.w1.weight"},
        {"model.layers.60.mlp.experts.17.down_proj.weight_scale_inv",
         "layers.60.ffn.experts.17.w2.scale"},
        {"model.layers.3.mlp.shared_experts.up_proj.weight",
         "layers.3.ffn.shared_experts.w3.weight"},
        /* the MTP module (README_WEIGHTS: layer 61) */
        {"model.layers.61.enorm.weight", "mtp.0.enorm.weight"},
        {"model.layers.61.hnorm.weight", "mtp.0.hnorm.weight"},
        {"model.layers.61.eh_proj.weight", "mtp.0.eh_proj.weight"},
        {"model.layers.61.input_layernorm.weight", "mtp.0.attn_norm.weight"},
        {"model.layers.61.self_attn.kv_b_proj.weight", "mtp.0.attn.wkv_b.weight"},
        {"model.layers.61.mlp.gate.e_score_correction_bias", "mtp.0.ffn.gate.bias"},
        {"model.layers.61.mlp.experts.0.up_proj.weight", "mtp.0.ffn.experts.0.w3.weight"},
        {"model.layers.61.shared_head.norm.weight", "mtp.0.norm.weight"},
        {"model.layers.61.embed_tokens.weight", NULL},
        {"model.layers.61.shared_head.head.weight", NULL},
        /* reference names pass through */
        {"layers.1.attn.wo.weight", "layers.1.attn.wo.weight"},
    };
    char out[TT_NAME_LEN];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = tt_v3_hf_name(cases[i][0], 61, out, sizeof out);
        if (!cases[i][1]) {
            ck_assert_msg(r == 0, "%s should be dropped (shared), got %d", cases[i][0], r);
            continue;
        }
        ck_assert_msg(r == 1, "%s: %d", cases[i][0], r);
        ck_assert_str_eq(out, cases[i][1]);
    }
    char tiny[8];
    ck_assert_int_eq(tt_v3_hf_name("model.layers.0.self_attn.o_proj.weight", 61, tiny,
                                   sizeof tiny), -1);
}
END_TEST

/* Reference name -> HF name, written independently of the library's mapper (the inverse
 * of convert.py's table) to make a HF-named checkpoint from a fixture. */
static void ref_to_hf(const char *ref, int n_layers, char *out, size_t len) {
    static const char *const inv[][2] = {
        {"attn", "self_attn"},    {"ffn", "mlp"},
        {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"},
        {"wq", "q_proj"},         {"wq_a", "q_a_proj"},
        {"q_norm", "q_a_layernorm"}, {"wq_b", "q_b_proj"},
        {"wkv_a", "kv_a_proj_with_mqa"}, {"kv_norm", "kv_a_layernorm"},
        {"wkv_b", "kv_b_proj"},   {"wo", "o_proj"},
        {"w1", "gate_proj"},      {"w2", "down_proj"},
        {"w3", "up_proj"},        {"bias", "e_score_correction_bias"},
    };
    if (!strcmp(ref, "embed.weight")) { snprintf(out, len, "model.embed_tokens.weight"); return; }
    if (!strcmp(ref, "norm.weight")) { snprintf(out, len, "model.norm.weight"); return; }
    if (!strcmp(ref, "head.weight")) { snprintf(out, len, "lm_head.weight"); return; }
    char buf[128];
    snprintf(buf, sizeof buf, "%s", ref);
    size_t o = 0;
    bool mtp = !strncmp(buf, "mtp.0.", 6);
    if (mtp) {
        if (!strcmp(buf + 6, "norm.weight")) {
            snprintf(out, len, "model.layers.%d.shared_head.norm.weight", n_layers);
            return;
        }
        o = (size_t)snprintf(out, len, "model.layers.%d", n_layers);
    } else {
        o = (size_t)snprintf(out, len, "model");
    }
    char *save = NULL;
    int k = 0;
    for (char *c = strtok_r(buf, ".", &save); c; c = strtok_r(NULL, ".", &save), k++) {
        if (mtp && k < 2) continue; /* "mtp", "0" */
        const char *w = c;
        for (size_t j = 0; j < sizeof inv / sizeof inv[0]; j++)
            if (!strcmp(c, inv[j][0])) w = inv[j][1];
        o += (size_t)snprintf(out + o, len - o, ".%s", w);
    }
}

/* A checkpoint with HF names (from fixture c, with the MTP layer and its copies of the
 * embedding and head) loads strictly by tt_v3_load_weights and tt_v3_load and gives the
 * same logits; a model without MTP skips the MTP layer; mixed names are refused. */
START_TEST(test_v3_load_hf_names) {
    fixture f;
    fixture_open(&f, "c");
    tt_v3 *m = f.m;
    const int n = m->params.n;
    tt_tensor **hf = calloc((size_t)n + 3, sizeof *hf);
    for (int i = 0; i < n; i++) {
        tt_tensor *p = m->params.t[i];
        hf[i] = tt_tensor_new(TT_F32, p->ndim, p->shape);
        memcpy(hf[i]->data, p->data, p->size * sizeof(float));
        char name[TT_NAME_LEN];
        ref_to_hf(p->name, m->cfg.n_layers, name, sizeof name);
        tt_set_name(hf[i], "%s", name);
    }
    /* the released MTP layer carries copies of the shared embedding and head */
    tt_tensor *emb = tt_params_find(&m->params, "embed.weight");
    tt_tensor *head = tt_params_find(&m->params, "head.weight");
    hf[n] = tt_tensor_new(TT_F32, emb->ndim, emb->shape);
    memcpy(hf[n]->data, emb->data, emb->size * sizeof(float));
    tt_set_name(hf[n], "model.layers.%d.embed_tokens.weight", m->cfg.n_layers);
    hf[n + 1] = tt_tensor_new(TT_F32, head->ndim, head->shape);
    memcpy(hf[n + 1]->data, head->data, head->size * sizeof(float));
    tt_set_name(hf[n + 1], "model.layers.%d.shared_head.head.weight", m->cfg.n_layers);
    ck_assert_str_eq(hf[0]->name, "model.embed_tokens.weight");
    ck_assert_ptr_nonnull(strstr(hf[1]->name, "model.layers.0.self_attn.q_a_proj.weight"));
    char path[] = "/tmp/tt_v3_hf_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(tt_safetensors_save(path, n + 2, hf, 0, NULL) == TT_OK, "%s",
                  tt_last_error());

    tt_tensor *ids = tt_safetensors_get(&f.st, "input.ids");
    tt_v3_output ref = tt_v3_forward_mtp(m, ids, NULL, 0.0f, f.lambda);
    /* strict load into a fresh model: every parameter found, nothing extra */
    tt_v3 *m2 = tt_v3_new(&m->cfg, 0.5f);
    ck_assert_msg(tt_v3_load_weights(m2, path, true) == TT_OK, "%s", tt_last_error());
    for (int i = 0; i < n; i++)
        ck_assert_msg(memcmp(m2->params.t[i]->data, m->params.t[i]->data,
                             m->params.t[i]->size * sizeof(float)) == 0, "%s differs",
                      m->params.t[i]->name);
    tt_v3_output out2 = tt_v3_forward_mtp(m2, ids, NULL, 0.0f, f.lambda);
    float d = tt_test_maxdiff(out2.logits->data, ref.logits->data, ref.logits->size);
    float dm = tt_test_maxdiff(out2.mtp_logits->data, ref.mtp_logits->data,
                               ref.mtp_logits->size);
    printf("v3 HF-named checkpoint: logits diff %g, MTP logits diff %g\n", (double)d,
           (double)dm);
    ck_assert_float_eq(d, 0.0f);
    ck_assert_float_eq(dm, 0.0f);
    /* a model without MTP loads the same file strictly: the MTP layer is skipped */
    tt_v3_config c0 = m->cfg;
    c0.n_mtp_modules = 0;
    tt_v3 *m0 = tt_v3_new(&c0, 0.5f);
    ck_assert_msg(tt_v3_load_weights(m0, path, true) == TT_OK, "%s", tt_last_error());
    tt_tensor *lg0 = tt_v3_forward(m0, ids, NULL, 0.0f).logits;
    ck_assert_float_eq(tt_test_maxdiff(lg0->data, ref.logits->data, ref.logits->size), 0.0f);
    /* tt_v3_load with a config file */
    char cfg_path[] = "/tmp/tt_v3_hf_cfg_XXXXXX";
    fd = mkstemp(cfg_path);
    ck_assert_int_ge(fd, 0);
    char json[2048];
    int len = tt_v3_config_to_json(&m->cfg, json, sizeof json);
    ck_assert_int_eq((int)write(fd, json, (size_t)len), len);
    close(fd);
    tt_v3 *m3 = tt_v3_load(path, cfg_path);
    ck_assert_msg(m3 != NULL, "%s", tt_last_error());
    tt_tensor *lg3 = tt_v3_forward(m3, ids, NULL, 0.0f).logits;
    ck_assert_float_eq(tt_test_maxdiff(lg3->data, ref.logits->data, ref.logits->size), 0.0f);
    /* a missing HF tensor is reported under its reference name */
    ck_assert_msg(tt_safetensors_save(path, n - 1, hf + 1, 0, NULL) == TT_OK, "%s",
                  tt_last_error());
    ck_assert_int_eq(tt_v3_load_weights(m2, path, false), TT_ERR_MISMATCH);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "missing tensor 'embed.weight'"));
    /* HF and reference names for one tensor: ambiguous */
    tt_set_name(hf[n + 2] = tt_tensor_new(TT_F32, emb->ndim, emb->shape), "embed.weight");
    memcpy(hf[n + 2]->data, emb->data, emb->size * sizeof(float));
    ck_assert_msg(tt_safetensors_save(path, n + 3, hf, 0, NULL) == TT_OK, "%s",
                  tt_last_error());
    ck_assert_int_eq(tt_v3_load_weights(m2, path, false), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "two tensors of the file map to "
                                                  "'embed.weight'"));
    printf("  last HF load error: %s\n", tt_last_error());
    for (int i = 0; i < n + 3; i++) tt_free(hf[i]);
    free(hf);
    tt_v3_free(m3);
    tt_v3_free(m0);
    tt_v3_free(m2);
    unlink(path);
    unlink(cfg_path);
    fixture_close(&f);
}
END_TEST

/* Incremental decoding with the absorb-form cache gives the full forward's logits:
 * a prefix of 3 tokens in one call, then one token per call. */
static void check_cached(const char *tag) {
    fixture f;
    fixture_open(&f, tag);
    tt_tensor *ids = tt_safetensors_get(&f.st, "input.ids");
    const int S = ids->shape[1], V = f.m->cfg.vocab_size;
    tt_tensor *row = tt_from_ids(TT_SHAPE(1, S), tt_ids(ids));
    tt_tensor *full = tt_v3_forward(f.m, row, NULL, 0.0f).logits;
    tt_v3_cache cache;
    tt_v3_cache_init(&cache, f.m, S);
    float worst = 0.0f;
    for (int t = 0; t < S;) {
        int n = t == 0 ? 3 : 1;
        tt_tensor *chunk = tt_from_ids(TT_SHAPE(1, n), tt_ids(row) + t);
        tt_tensor *lg = tt_v3_forward_cached(f.m, chunk, &cache);
        float d = tt_test_maxdiff(lg->data, full->data + (size_t)t * V, (size_t)n * V);
        worst = d > worst ? d : worst;
        tt_free(chunk);
        t += n;
    }
    ck_assert_int_eq(cache.len, S);
    /* per token the cache holds kv_lora_rank + qk_rope_head_dim floats per layer */
    ck_assert_int_eq(cache.rank, f.m->cfg.kv_lora_rank);
    ck_assert_int_eq(cache.rope_dim, f.m->cfg.qk_rope_head_dim);
    printf("v3 cached decoding (%s): max |cached - full| = %.3g\n", tag, (double)worst);
    /* absorb and naive differ only in summation order: ~1e-6 in fp32 */
    ck_assert_float_le(worst, 1e-5f);
    /* a full cache refuses more tokens */
    tt_tensor *one = tt_from_ids(TT_SHAPE(1, 1), tt_ids(row));
    TT_EXPECT_ERROR(tt_v3_forward_cached(f.m, one, &cache), "no room for 1 more");
    tt_free(one);
    tt_v3_cache_free(&cache);
    tt_free(row);
    fixture_close(&f);
}

START_TEST(test_v3_cached_equals_full_a) { check_cached("a"); }
END_TEST
START_TEST(test_v3_cached_equals_full_b) { check_cached("b"); }
END_TEST

/* tt_v3_save + tt_v3_load: same config, every tensor bit for bit, same logits. */
START_TEST(test_v3_checkpoint_roundtrip) {
    fixture f;
    fixture_open(&f, "a");
    char path[] = "/tmp/tt_v3_ckpt_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(tt_v3_save(f.m, path) == TT_OK, "%s", tt_last_error());
    tt_v3 *m2 = tt_v3_load(path, NULL);
    ck_assert_msg(m2 != NULL, "%s", tt_last_error());
    ck_assert(config_equal(&m2->cfg, &f.m->cfg));
    ck_assert_int_eq(m2->params.n, f.m->params.n);
    for (int i = 0; i < f.m->params.n; i++) {
        tt_tensor *a = f.m->params.t[i], *b = m2->params.t[i];
        ck_assert_str_eq(a->name, b->name);
        ck_assert(tt_same_shape(a, b));
        ck_assert_msg(memcmp(a->data, b->data, a->size * sizeof(float)) == 0, "%s differs",
                      a->name);
    }
    /* the file holds exactly the official names: a strict load into a fresh model works */
    tt_v3 *m3 = tt_v3_new(&f.m->cfg, 0.5f);
    ck_assert_msg(tt_v3_load_weights(m3, path, true) == TT_OK, "%s", tt_last_error());
    tt_v3_free(m3);
    tt_v3_free(m2);
    unlink(path);
    fixture_close(&f);
}
END_TEST

/* The official names of section 2, for one dense and one MoE layer with query
 * compression and the gate bias. */
START_TEST(test_v3_parameter_names) {
    fixture f;
    fixture_open(&f, "a");
    const char *want[] = {
        "embed.weight", "layers.0.attn.wq_a.weight", "layers.0.attn.q_norm.weight",
        "layers.0.attn.wq_b.weight", "layers.0.attn.wkv_a.weight",
        "layers.0.attn.kv_norm.weight", "layers.0.attn.wkv_b.weight", "layers.0.attn.wo.weight",
        "layers.0.ffn.w1.weight", "layers.0.ffn.w2.weight", "layers.0.ffn.w3.weight",
        "layers.0.attn_norm.weight", "layers.0.ffn_norm.weight", "layers.1.ffn.gate.weight",
        "layers.1.ffn.gate.bias", "layers.1.ffn.experts.7.w3.weight",
        "layers.1.ffn.shared_experts.w2.weight", "norm.weight", "head.weight"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(tt_params_find(&f.m->params, want[i]) != NULL, "missing %s", want[i]);
    ck_assert_ptr_null(tt_params_find(&f.m->params, "layers.0.attn.wq.weight"));
    /* every parameter of the model is in the fixture and vice versa (minus the extras) */
    int n_weights = 0;
    for (int i = 0; i < f.st.n; i++) {
        const char *n = f.st.tensors[i]->name;
        if (strncmp(n, "grad.", 5) && strncmp(n, "ref.", 4) && strncmp(n, "input.", 6) &&
            strncmp(n, "target.", 7))
            n_weights++;
    }
    ck_assert_int_eq(n_weights, f.m->params.n);
    fixture_close(&f);
}
END_TEST

/* Aux-loss-free balancing: b_i += gamma * sign(mean c - c_i) per MoE layer. */
START_TEST(test_v3_bias_update) {
    fixture f;
    fixture_open(&f, "a");
    tt_tensor *ids = tt_safetensors_get(&f.st, "input.ids");
    tt_v3_output out = tt_v3_forward(f.m, ids, NULL, 0.0f);
    const int E = f.m->cfg.n_routed_experts;
    for (int L = f.m->cfg.n_dense_layers; L < f.m->cfg.n_layers; L++) {
        tt_tensor *b = f.m->layers[L].moe.gate.bias;
        float *before = malloc((size_t)E * sizeof *before);
        memcpy(before, b->data, (size_t)E * sizeof *before);
        tt_v3_output one = out;
        tt_routing *keep = one.routing;
        /* update only layer L: blank the others */
        tt_routing *r = calloc((size_t)f.m->cfg.n_layers, sizeof *r);
        r[L] = keep[L];
        one.routing = r;
        tt_v3_update_bias(f.m, &one, 0.001f);
        double mean = 0;
        for (int e = 0; e < E; e++) mean += r[L].counts[e];
        mean /= E;
        for (int e = 0; e < E; e++) {
            double d = mean - r[L].counts[e];
            float want = before[e] + (d > 0 ? 0.001f : d < 0 ? -0.001f : 0.0f);
            ck_assert_float_eq(b->data[e], want);
        }
        free(r);
        free(before);
    }
    fixture_close(&f);
}
END_TEST

static const char *k_671b =
    "{\"vocab_size\": 129280, \"dim\": 7168, \"inter_dim\": 18432, \"moe_inter_dim\": 2048,"
    " \"n_layers\": 61, \"n_dense_layers\": 3, \"n_heads\": 128, \"n_routed_experts\": 256,"
    " \"n_shared_experts\": 1, \"n_activated_experts\": 8, \"n_expert_groups\": 8,"
    " \"n_limited_groups\": 4, \"route_scale\": 2.5, \"score_func\": \"sigmoid\","
    " \"q_lora_rank\": 1536, \"kv_lora_rank\": 512, \"qk_nope_head_dim\": 128,"
    " \"qk_rope_head_dim\": 64, \"v_head_dim\": 128, \"dtype\": \"fp8\"}";

START_TEST(test_v3_config_json) {
    tt_v3_config c;
    ck_assert_msg(tt_v3_config_from_json(k_671b, strlen(k_671b), &c) == TT_OK, "%s",
                  tt_last_error());
    ck_assert_int_eq(c.dim, 7168);
    ck_assert_int_eq(c.n_limited_groups, 4);
    ck_assert_int_eq(c.score_func, TT_SCORE_SIGMOID);
    ck_assert(c.gate_bias);                 /* the official rule: dim == 7168 */
    ck_assert_int_eq(c.max_seq_len, 16384); /* defaults for absent fields */
    ck_assert_float_eq(c.rope_factor, 40.0f);
    /* to_json and back gives the same config */
    char buf[2048];
    int n = tt_v3_config_to_json(&c, buf, sizeof buf);
    ck_assert_int_lt(n, (int)sizeof buf);
    tt_v3_config c2;
    ck_assert_msg(tt_v3_config_from_json(buf, (size_t)n, &c2) == TT_OK, "%s", tt_last_error());
    ck_assert(config_equal(&c, &c2));

    const char *unknown = "{\"dim\": 64, \"hidden_size\": 64}";
    ck_assert_int_eq(tt_v3_config_from_json(unknown, strlen(unknown), &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "unknown field 'hidden_size'"));
    const char *frac = "{\"n_heads\": 2.5}";
    ck_assert_int_eq(tt_v3_config_from_json(frac, strlen(frac), &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "'n_heads' must be an integer"));
    const char *score = "{\"score_func\": \"relu\"}";
    ck_assert_int_eq(tt_v3_config_from_json(score, strlen(score), &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "\"softmax\" or \"sigmoid\""));
    const char *groups = "{\"n_routed_experts\": 64, \"n_expert_groups\": 5}";
    ck_assert_int_eq(tt_v3_config_from_json(groups, strlen(groups), &c), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "n_expert_groups = 5 does not divide"));
    const char *topk = "{\"n_routed_experts\": 4, \"n_activated_experts\": 6}";
    ck_assert_int_eq(tt_v3_config_from_json(topk, strlen(topk), &c), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "n_activated_experts = 6 exceeds"));
    const char *dense = "{\"n_layers\": 2, \"n_dense_layers\": 3}";
    ck_assert_int_eq(tt_v3_config_from_json(dense, strlen(dense), &c), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "n_dense_layers = 3"));
    const char *dup = "{\"dim\": 64, \"dim\": 32}";
    ck_assert_int_eq(tt_v3_config_from_json(dup, strlen(dup), &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "duplicate field 'dim'"));
    const char *odd = "{\"qk_rope_head_dim\": 5}";
    ck_assert_int_eq(tt_v3_config_from_json(odd, strlen(odd), &c), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "must be even"));
    ck_assert_int_eq(tt_v3_config_load("/nonexistent/config.json", &c), TT_ERR_IO);
    printf("  last config error: %s\n", tt_last_error());
}
END_TEST

/* Section 1: the 671B run has softmax_scale = 192^-0.5 (0.1 ln 40 + 1)^2 = 0.135234 (YaRN
 * on: 16384 > 4096). A tiny model with the same head dims and rope settings shows it. */
START_TEST(test_v3_yarn_softmax_scale) {
    tt_v3_config c = tt_v3_config_default();
    c.vocab_size = 4;
    c.dim = 8;
    c.inter_dim = c.moe_inter_dim = 4;
    c.n_layers = 1;
    c.n_heads = 1;
    c.n_routed_experts = 2;
    c.n_activated_experts = 1;
    c.n_shared_experts = 1;
    c.kv_lora_rank = 4;
    c.v_head_dim = 4;
    tt_v3 *m = tt_v3_new(&c, 0.01f);
    ck_assert_ptr_nonnull(m);
    ck_assert_float_eq_tol(m->softmax_scale, 0.135234f, 1e-6f);
    tt_v3_free(m);
    c.max_seq_len = 4096; /* not > original_seq_len: plain 192^-0.5 */
    m = tt_v3_new(&c, 0.01f);
    ck_assert_float_eq_tol(m->softmax_scale, 1.0f / sqrtf(192.0f), 1e-7f);
    tt_v3_free(m);
}
END_TEST

/* Without MTP the loss at least halves; the gate bias moves only through the update. */
START_TEST(test_v3_training_steps) {
    float ce[2], mtp[2];
    tt_v3 *m = train_small_v3(7, 0.0f, ce, mtp);
    printf("v3 toy training: ce %.4f -> %.4f in 30 AdamW steps\n", (double)ce[0], (double)ce[1]);
    ck_assert_float_lt(ce[1], 0.5f * ce[0]);
    tt_tensor *bias = m->layers[1].moe.gate.bias;
    ck_assert_float_gt(maxabs(bias->data, bias->size), 0.0f);
    tt_v3_free(m);
}
END_TEST

static Suite *v3_suite(void) {
    Suite *s = suite_create("v3");
    TCase *tc = tcase_create("v3");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_v3_fixture_a_sigmoid_bias_groups_qlora);
    tcase_add_test(tc, test_v3_fixture_b_softmax_yarn_route_scale);
    tcase_add_test(tc, test_v3_fixture_c_mtp);
    tcase_add_test(tc, test_v3_fixture_notices_mutations);
    tcase_add_test(tc, test_v3_fixture_c_notices_mutations);
    tcase_add_test(tc, test_v3_mtp_off_is_plain_model);
    tcase_add_test(tc, test_v3_mtp_errors_names_bias);
    tcase_add_test(tc, test_v3_mtp_training_steps);
    tcase_add_test(tc, test_v3_hf_name_mapping);
    tcase_add_test(tc, test_v3_load_hf_names);
    tcase_add_test(tc, test_v3_cached_equals_full_a);
    tcase_add_test(tc, test_v3_cached_equals_full_b);
    tcase_add_test(tc, test_v3_checkpoint_roundtrip);
    tcase_add_test(tc, test_v3_parameter_names);
    tcase_add_test(tc, test_v3_bias_update);
    tcase_add_test(tc, test_v3_config_json);
    tcase_add_test(tc, test_v3_yarn_softmax_scale);
    tcase_add_test(tc, test_v3_training_steps);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(v3_suite)

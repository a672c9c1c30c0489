/* test_v3.c - the faithful DeepSeek-V3 model against the PyTorch reference.
 *
 * Fixtures (tests/data/v3_<a|b>.safetensors) come from tests/ref/deepseek_v3_ref.py, a
 * PyTorch implementation of shared/deepseek_v3.md: weights under the official names,
 * token ids, targets, the logits of every position, the loss (CE + alpha * sequence-wise
 * balance loss) and the gradient of every parameter.
 *   (a) sigmoid scores, gate bias, 2 groups (1 kept), query compression, route_scale 2.5
 *   (b) softmax scores, wq, route_scale 2, YaRN (max_seq_len 64 > original 16), 3 groups
 *       of 2 (2 kept) scored by their max
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
    float alpha;
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
    tt_v3_output out = tt_v3_forward(m, ids, tgt, f.alpha);
    ck_assert(tt_same_shape(out.logits, ref_logits));
    float dl = tt_test_maxdiff(out.logits->data, ref_logits->data, ref_logits->size);
    float dloss = fabsf(tt_item(out.loss) - ref_loss), dce = fabsf(tt_item(out.ce) - ref_ce);
    printf("v3 fixture (%s): logits maxdiff %.3g, loss %.7f vs %.7f (diff %.3g), ce diff %.3g\n",
           tag, (double)dl, (double)tt_item(out.loss), (double)ref_loss, (double)dloss,
           (double)dce);
    ck_assert_msg(dl <= 1e-4f, "logits differ by %g", (double)dl);
    ck_assert_msg(dloss <= 1e-5f, "loss differs by %g", (double)dloss);
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
    const char *ops[] = {"rope", "gather", "rms_norm", "index_add"};
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

/* A few AdamW steps with the V3 defaults (betas 0.9/0.95, wd 0.1) and the bias update
 * lower the loss on a fixed batch; the gate bias moves only through the update. */
START_TEST(test_v3_training_steps) {
    tt_manual_seed(7);
    tt_v3_config c = tt_v3_config_toy();
    c.vocab_size = 32;
    c.dim = 32;
    c.n_layers = 2;
    tt_v3 *m = tt_v3_new(&c, 0.02f);
    ck_assert_ptr_nonnull(m);
    int32_t idv[2 * 16], tgv[2 * 16];
    for (int i = 0; i < 32; i++) {
        idv[i] = (i * 7 + 3) % 32;
        tgv[i] = (i * 7 + 10) % 32;
    }
    tt_tensor *ids = tt_from_ids(TT_SHAPE(2, 16), idv), *tgt = tt_from_ids(TT_SHAPE(2, 16), tgv);
    tt_optim *opt = tt_optim_adamw(&m->params, 3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f);
    float first = 0, last = 0;
    for (int step = 0; step < 30; step++) {
        tt_optim_zero_grad(opt);
        tt_v3_output out = tt_v3_forward(m, ids, tgt, 1e-4f);
        tt_backward(out.loss);
        tt_clip_grad_norm(&m->params, 1.0f);
        tt_optim_step(opt);
        tt_v3_update_bias(m, &out, 0.001f);
        if (step == 0) first = tt_item(out.ce);
        last = tt_item(out.ce);
        tt_tape_reset();
    }
    printf("v3 toy training: ce %.4f -> %.4f in 30 AdamW steps\n", (double)first, (double)last);
    ck_assert_float_lt(last, 0.5f * first);
    tt_tensor *bias = m->layers[1].moe.gate.bias;
    ck_assert_float_gt(maxabs(bias->data, bias->size), 0.0f);
    tt_optim_free(opt);
    tt_free(ids);
    tt_free(tgt);
    tt_v3_free(m);
}
END_TEST

static Suite *v3_suite(void) {
    Suite *s = suite_create("v3");
    TCase *tc = tcase_create("v3");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_v3_fixture_a_sigmoid_bias_groups_qlora);
    tcase_add_test(tc, test_v3_fixture_b_softmax_yarn_route_scale);
    tcase_add_test(tc, test_v3_fixture_notices_mutations);
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

/* test_model.c - the DeepSeek V3 toy model: config, names, counts, gradients, decoding.
 *
 * The tiny model used throughout: vocab 11, dim 8, 2 layers, 2 heads, 4 experts top-2,
 * rank 4, expert hidden 16, sequences of 5, batch 2.
 *
 * Gradient checks through the whole model meet two kinds of kinks: routing decisions
 * and the ReLU experts. A finite-difference step (h = 1e-2) that crosses one makes the
 * numeric gradient meaningless, and through LayerNorms and two layers no simple bound
 * says how far a step moves a router score or a pre-activation. So the checks watch
 * instead (the kink monitor below): the model and block checks run on the first seed
 * whose finite-difference steps change no routing decision and no ReLU sign, and assert
 * that this stays so.
 */
#include "tt_test.h"

#include "nn/deepseek.h"

#include <math.h>

static tt_dsv3_config tiny_config(void) {
    tt_dsv3_config c = {.vocab = 11, .dim = 8, .n_layers = 2, .n_heads = 2, .n_experts = 4,
                        .top_k = 2, .expert_hidden = 16, .rank = 4, .max_seq = 5,
                        .aux_alpha = 0.1f, .noise_std = 0.0f};
    return c;
}

static tt_tensor *tiny_ids(uint64_t seed, int B, int T, int vocab) {
    tt_rng r;
    tt_rng_seed(&r, seed);
    int32_t ids[64];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)tt_rng_below(&r, (uint32_t)vocab);
    return tt_from_ids(2, (int[]){B, T}, ids);
}

/* ---- config --------------------------------------------------------------------------- */
START_TEST(test_config_check) {
    tt_dsv3_config ok = tiny_config();
    ck_assert_int_eq(tt_dsv3_config_check(&ok), TT_OK);
    ck_assert_int_eq(tt_dsv3_config_check(&(tt_dsv3_config){0}), TT_ERR_ARG);
    /* one edit at a time, each with the message naming the field and its value */
    tt_dsv3_config c;
#define EXPECT_BAD(stmt, substring)                                                        \
    do {                                                                                   \
        c = tiny_config();                                                                 \
        stmt;                                                                              \
        ck_assert_int_eq(tt_dsv3_config_check(&c), TT_ERR_ARG);                            \
        ck_assert_msg(strstr(tt_last_error(), substring), "message \"%s\" lacks \"%s\"",    \
                      tt_last_error(), substring);                                          \
        ck_assert_ptr_null(tt_dsv3_new(&c));                                               \
    } while (0)
    EXPECT_BAD(c.vocab = 1, "vocab = 1 must be >= 2");
    EXPECT_BAD(c.dim = 0, "dim = 0 must be >= 1");
    EXPECT_BAD(c.n_layers = -1, "n_layers = -1 must be >= 1");
    EXPECT_BAD(c.n_heads = 0, "n_heads = 0 must be >= 1");
    EXPECT_BAD(c.n_heads = 3, "n_heads = 3 does not divide dim = 8");
    EXPECT_BAD(c.n_experts = 0, "n_experts = 0 must be >= 1");
    EXPECT_BAD(c.top_k = 5, "top_k = 5 must be in [1, n_experts = 4]");
    EXPECT_BAD(c.top_k = 0, "top_k = 0 must be in [1, n_experts = 4]");
    EXPECT_BAD(c.expert_hidden = 0, "expert_hidden = 0 must be >= 1");
    EXPECT_BAD(c.rank = 0, "rank = 0 must be >= 1");
    EXPECT_BAD(c.max_seq = 0, "max_seq = 0 must be >= 1");
    EXPECT_BAD(c.aux_alpha = -1.0f, "aux_alpha = -1 must be finite and >= 0");
    EXPECT_BAD(c.noise_std = NAN, "noise_std = nan must be finite and >= 0");
#undef EXPECT_BAD
}
END_TEST

START_TEST(test_config_json) {
    tt_dsv3_config c = tiny_config();
    c.aux_alpha = 0.0123456789f;
    char buf[512];
    int n = tt_dsv3_config_to_json(&c, buf, sizeof buf);
    ck_assert_int_eq(n, (int)strlen(buf));
    ck_assert_int_eq(tt_dsv3_config_to_json(&c, NULL, 0), n);
    ck_assert_ptr_nonnull(strstr(buf, "\"vocab\": 11"));
    ck_assert_ptr_nonnull(strstr(buf, "\"expert_hidden\": 16"));
    tt_dsv3_config back;
    ck_assert_int_eq(tt_dsv3_config_from_json(buf, &back), TT_OK);
    ck_assert_int_eq(memcmp(&back, &c, sizeof c), 0); /* %.9g round-trips every float */

    char small[10];
    ck_assert_int_eq(tt_dsv3_config_to_json(&c, small, sizeof small), n);
    ck_assert_int_eq((int)strlen(small), 9); /* truncated, NUL-terminated */

    /* absent keys keep the toy defaults */
    ck_assert_int_eq(tt_dsv3_config_from_json("{\"vocab\": 50}", &back), TT_OK);
    ck_assert_int_eq(back.vocab, 50);
    ck_assert_int_eq(back.dim, tt_dsv3_config_toy().dim);

    tt_dsv3_config untouched = c;
    ck_assert_int_eq(tt_dsv3_config_from_json("{\"vocab\": 11, \"dimm\": 8}", &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "unknown key 'dimm'"));
    ck_assert_int_eq(memcmp(&untouched, &c, sizeof c), 0);
    ck_assert_int_eq(tt_dsv3_config_from_json("{\"dim\": 8.5}", &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "'dim' = 8.5 must be an integer"));
    ck_assert_int_eq(tt_dsv3_config_from_json("{\"dim\": \"8\"}", &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "'dim' must be a number"));
    ck_assert_int_eq(tt_dsv3_config_from_json("{\"dim\": }", &c), TT_ERR_FORMAT);
    ck_assert_int_eq(tt_dsv3_config_from_json("[1, 2]", &c), TT_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "not an object"));
    ck_assert_int_eq(tt_dsv3_config_from_json("{\"n_heads\": 3}", &c), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "n_heads = 3 does not divide dim = 64"));
}
END_TEST

START_TEST(test_toy_param_counts) {
    /* The seed's model card. Per layer:
     *   attn   q, o: 64*64+64 = 4160 each; kv_a 64*16+16 = 1040; kv_b 16*128+128 = 2176
     *   norms  2 * 128;  gate 4*64 = 256
     *   expert fc1 64*256+256 = 16640, fc2 256*64+64 = 16448 -> 33088, times 4
     * embed 100*64 = 6400, pos_embed 64*64 = 4096, head 64*100+100 = 6500.
     * Active: minus (4 - 2) experts per layer. */
    tt_manual_seed(1);
    tt_dsv3_config c = tt_dsv3_config_toy();
    tt_dsv3 *m = tt_dsv3_new(&c);
    ck_assert_ptr_nonnull(m);
    size_t layer = 2 * 4160 + 1040 + 2176 + 2 * 128 + 256 + 4 * 33088;
    size_t total = 6400 + 4096 + 2 * layer + 6500;
    ck_assert_uint_eq(tt_dsv3_n_params(m), total);
    ck_assert_uint_eq(total, 305796);
    ck_assert_uint_eq(tt_dsv3_n_active_params(m), total - 2 * 2 * 33088);
    tt_dsv3_free(m);
}
END_TEST

START_TEST(test_param_names) {
    tt_manual_seed(1);
    tt_dsv3_config c = tiny_config();
    tt_dsv3 *m = tt_dsv3_new(&c);
    const char *names[] = {
        "embed.weight", "pos_embed.weight", "layers.0.attn.q_proj.weight",
        "layers.0.attn.kv_a_proj.weight", "layers.0.attn.kv_b_proj.weight",
        "layers.1.attn.o_proj.bias", "layers.0.norm1.weight", "layers.1.norm1.bias",
        "layers.0.moe.gate.weight", "layers.1.moe.experts.3.fc1.weight",
        "layers.0.moe.experts.0.fc2.weight", "layers.1.norm2.weight", "head.weight",
        "head.bias",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        ck_assert_msg(tt_params_find(&m->params, names[i]) != NULL, "no parameter %s", names[i]);
    ck_assert_ptr_null(tt_params_find(&m->params, "layers.0.moe.gate.bias"));
    ck_assert_int_eq(tt_params_find(&m->params, "layers.1.attn.kv_b_proj.weight")->shape[0], 16);
    tt_dsv3_free(m);
}
END_TEST

/* ---- forward ---------------------------------------------------------------------------- */
START_TEST(test_forward_shapes_and_errors) {
    tt_manual_seed(2);
    tt_dsv3_config c = tiny_config();
    tt_dsv3 *m = tt_dsv3_new(&c);
    tt_tensor *ids = tiny_ids(1, 2, 5, 11), *tg = tiny_ids(2, 2, 5, 11);
    tt_dsv3_output o = tt_dsv3_forward(m, ids, tg);
    ck_assert_int_eq(o.logits->ndim, 3);
    ck_assert_int_eq(o.logits->shape[0], 2);
    ck_assert_int_eq(o.logits->shape[1], 5);
    ck_assert_int_eq(o.logits->shape[2], 11);
    ck_assert_int_eq(o.routing[1].n_tokens, 10);
    /* loss = ce + sum of both layers' balance losses */
    float aux = tt_item(tt_moe_balance_loss(&o.routing[0], 0.1f)) +
                tt_item(tt_moe_balance_loss(&o.routing[1], 0.1f));
    ck_assert_float_le(fabsf(tt_item(o.aux) - aux), 1e-6f);
    ck_assert_float_le(fabsf(tt_item(o.loss) - tt_item(o.ce) - aux), 1e-6f);
    ck_assert(isfinite(tt_item(o.ce)) && tt_item(o.ce) > 0.0f);
    /* no targets: logits only */
    o = tt_dsv3_forward(m, ids, NULL);
    ck_assert_ptr_null(o.loss);
    ck_assert_ptr_nonnull(o.logits);
    /* alpha = 0: aux is 0, the loss is the cross entropy, routing still filled */
    m->cfg.aux_alpha = 0.0f;
    o = tt_dsv3_forward(m, ids, tg);
    ck_assert_float_eq(tt_item(o.aux), 0.0f);
    ck_assert_ptr_eq(o.loss, o.ce);
    ck_assert_ptr_nonnull(o.routing[0].indices);

    tt_tensor *too_long = tt_set_name(tiny_ids(3, 1, 6, 11), "ids");
    TT_EXPECT_ERROR(tt_dsv3_forward(m, too_long, NULL), "positions up to 5 exceed max_seq = 5");
    tt_tensor *bad = tt_from_ids(TT_SHAPE(1, 4), (int32_t[]){1, 2, 3, 11});
    TT_EXPECT_ERROR(tt_dsv3_forward(m, bad, NULL), "element 3 = 11 is outside [0, vocab = 11)");
    tt_tensor *flt = tt_zeros(TT_SHAPE(1, 4));
    TT_EXPECT_ERROR(tt_dsv3_forward(m, flt, NULL), "int32");
    tt_tape_reset();
    tt_free(ids);
    tt_free(tg);
    tt_free(too_long);
    tt_free(bad);
    tt_free(flt);
    tt_dsv3_free(m);
}
END_TEST

START_TEST(test_every_param_gets_grad) {
    /* on the first seed that routes at least one token to every expert of every layer
     * (an idle expert rightly gets no gradient) */
    tt_dsv3_config c = tiny_config();
    tt_tensor *ids = tiny_ids(4, 2, 5, 11), *tg = tiny_ids(5, 2, 5, 11);
    tt_dsv3 *m = NULL;
    tt_dsv3_output o;
    bool busy = false;
    for (uint64_t seed = 1; seed <= 100 && !busy; seed++) {
        tt_tape_reset();
        tt_dsv3_free(m);
        tt_manual_seed(seed);
        m = tt_dsv3_new(&c);
        o = tt_dsv3_forward(m, ids, tg);
        busy = true;
        for (int L = 0; L < 2; L++)
            for (int e = 0; e < 4; e++) busy = busy && o.routing[L].counts[e] > 0;
    }
    ck_assert_msg(busy, "no seed in [1, 100] keeps every expert busy");
    tt_backward(o.loss);
    for (int i = 0; i < m->params.n; i++) {
        tt_tensor *p = m->params.t[i];
        ck_assert_msg(p->grad != NULL, "%s has no gradient", p->name);
        float amax = 0.0f;
        for (size_t k = 0; k < p->size; k++) {
            ck_assert_msg(isfinite(p->grad[k]), "%s grad[%zu] = %g", p->name, k, (double)p->grad[k]);
            amax = fmaxf(amax, fabsf(p->grad[k]));
        }
        ck_assert_msg(amax > 0.0f, "%s has an all-zero gradient", p->name);
    }
    tt_tape_reset();
    tt_free(ids);
    tt_free(tg);
    tt_dsv3_free(m);
}
END_TEST

START_TEST(test_noise_only_in_training) {
    tt_manual_seed(6);
    tt_dsv3_config c = tiny_config();
    c.noise_std = 2.0f;
    tt_dsv3 *m = tt_dsv3_new(&c);
    tt_tensor *ids = tiny_ids(7, 2, 5, 11);
    m->training = false;
    tt_dsv3_output a = tt_dsv3_forward(m, ids, NULL), b = tt_dsv3_forward(m, ids, NULL);
    ck_assert_float_eq(tt_test_maxdiff(a.logits->data, b.logits->data, a.logits->size), 0.0f);
    m->training = true;
    bool differs = false;
    for (int k = 0; k < 5 && !differs; k++) {
        tt_dsv3_output t = tt_dsv3_forward(m, ids, NULL);
        differs = tt_test_maxdiff(a.logits->data, t.logits->data, a.logits->size) > 0.0f;
    }
    ck_assert_msg(differs, "noise_std 2 in training never changed the output");
    tt_tape_reset();
    tt_free(ids);
    tt_dsv3_free(m);
}
END_TEST

START_TEST(test_cached_decoding_matches_full) {
    tt_manual_seed(8);
    tt_dsv3_config c = tiny_config();
    c.max_seq = 8;
    tt_dsv3 *m = tt_dsv3_new(&c);
    m->training = false;
    tt_tensor *ids = tiny_ids(9, 1, 8, 11);
    tt_tensor *full = tt_dsv3_forward(m, ids, NULL).logits;
    tt_dsv3_cache cache;
    tt_dsv3_cache_init(&cache, m, 8);
    int tape0 = tt_tape_len();
    /* a prompt of 3, then one token at a time */
    int t0 = 0;
    const int steps[] = {3, 1, 1, 1, 1, 1};
    for (int s = 0; s < 6; s++) {
        int n = steps[s];
        tt_tensor *chunk = tt_from_ids(TT_SHAPE(1, n), tt_ids(ids) + t0);
        tt_tensor *lg = tt_dsv3_forward_cached(m, chunk, &cache);
        float diff = tt_test_maxdiff(lg->data, full->data + t0 * 11, (size_t)n * 11);
        ck_assert_msg(diff < 1e-4f, "positions %d..%d: max diff %g", t0, t0 + n - 1, (double)diff);
        t0 += n;
        tt_free(chunk);
    }
    ck_assert_int_eq(tt_tape_len(), tape0);
    tt_tensor *one = tt_from_ids(TT_SHAPE(1, 1), (int32_t[]){0});
    TT_EXPECT_ERROR(tt_dsv3_forward_cached(m, one, &cache), "exceed max_seq = 8");
    ck_assert(tt_grad_enabled());
    tt_dsv3_cache_free(&cache);
    tt_tape_reset();
    tt_free(one);
    tt_free(ids);
    tt_dsv3_free(m);
}
END_TEST

/* ---- gradients ------------------------------------------------------------------------------ */
/* Kink monitor. The function under check records, on every evaluation, a signature of
 * its discrete decisions: the experts chosen in every layer and the sign of every ReLU
 * input (read off the tape). The first evaluation (gradcheck's analytic pass, at the
 * unperturbed point) is the reference; any later evaluation whose signature differs -
 * a finite-difference step that crossed a routing tie or a ReLU kink - counts a flip.
 * gradcheck evaluates its numeric steps inside a no-grad scope; the monitor briefly
 * leaves that scope so the tape shows the ReLU inputs (gradcheck rewinds the tape after
 * every evaluation, so the extra nodes cost nothing).
 * A seed is used only if a monitored gradcheck over the same sampled elements saw no
 * flip; the seed is chosen on that property alone, never on the check passing. */
#define SIG_MAX 8192
typedef struct kink_monitor {
    unsigned char ref[SIG_MAX], cur[SIG_MAX];
    int n_ref;
    bool have_ref;
    int flips;
} kink_monitor;

static void monitor_begin(bool *reopened) {
    *reopened = !tt_grad_enabled();
    if (*reopened) tt_no_grad_end();
}

/* signature of the routing in r[0..n_layers) and the ReLU nodes on the tape from t0 */
static void monitor_end(kink_monitor *km, bool reopened, const tt_routing *r, int n_layers,
                        int t0) {
    int n = 0;
    for (int L = 0; L < n_layers; L++)
        for (size_t i = 0; i < r[L].indices->size && n < SIG_MAX; i++)
            km->cur[n++] = (unsigned char)tt_ids(r[L].indices)[i];
    for (int i = t0; i < tt_tape_len(); i++) {
        tt_node *nd = tt_tape_node(i);
        for (size_t k = 0, nk = tt_test_relu_count(nd); k < nk && n < SIG_MAX; k++)
            km->cur[n++] = tt_test_relu_preact(nd, k) > 0.0;
    }
    ck_assert_msg(n < SIG_MAX, "signature longer than %d", SIG_MAX);
    if (reopened) tt_no_grad_begin();
    if (!km->have_ref) {
        memcpy(km->ref, km->cur, (size_t)n);
        km->n_ref = n;
        km->have_ref = true;
    } else if (n != km->n_ref || memcmp(km->ref, km->cur, (size_t)n) != 0) {
        km->flips++;
    }
}

typedef struct model_ctx {
    tt_dsv3 *m;
    tt_tensor *ids, *targets;
    kink_monitor km;
} model_ctx;

static tt_tensor *f_model(tt_tensor *const *in, void *user) {
    model_ctx *c = user;
    bool reopened;
    monitor_begin(&reopened);
    int t0 = tt_tape_len();
    tt_dsv3_output o = tt_dsv3_forward(c->m, c->ids, c->targets);
    monitor_end(&c->km, reopened, o.routing, c->m->cfg.n_layers, t0);
    return o.loss;
}

static const char *model_inputs[] = {
    "embed.weight", "pos_embed.weight", "layers.0.attn.kv_b_proj.weight",
    "layers.0.moe.gate.weight", "layers.1.moe.gate.weight",
    "layers.0.moe.experts.1.fc1.weight", "layers.1.norm2.weight", "head.weight"};
#define N_MODEL_INPUTS 8

START_TEST(test_model_grad) {
    tt_dsv3_config c = tiny_config();
    model_ctx ctx = {.ids = tiny_ids(11, 2, 5, 11), .targets = tiny_ids(12, 2, 5, 11)};
    tt_gradcheck_opts opts = tt_gradcheck_defaults();
    opts.max_per_input = 12; /* a sample: all 1,700 elements would take ~20x longer */
    tt_tensor *in[N_MODEL_INPUTS];
    uint64_t seed;
    for (seed = 1; seed <= 200; seed++) {
        tt_dsv3_free(ctx.m);
        tt_manual_seed(seed);
        ctx.m = tt_dsv3_new(&c);
        ctx.m->training = false;
        for (int i = 0; i < N_MODEL_INPUTS; i++) in[i] = tt_params_find(&ctx.m->params, model_inputs[i]);
        ctx.km.have_ref = false;
        ctx.km.flips = 0;
        tt_gradcheck(f_model, &ctx, N_MODEL_INPUTS, in, &opts, NULL); /* probe for flips only */
        tt_tape_reset();
        if (ctx.km.flips == 0) break;
    }
    printf("  model: seed %llu, no routing or ReLU flip in any step\n", (unsigned long long)seed);
    ck_assert_msg(ctx.km.flips == 0, "every seed in [1, 200] flips a decision in some step");
    tt_test_gradcheck("moe_combine", f_model, &ctx, N_MODEL_INPUTS, in, &opts);
    tt_test_gradcheck("cross_entropy", f_model, &ctx, N_MODEL_INPUTS, in, &opts);
    ck_assert_int_eq(ctx.km.flips, 0);
    tt_free(ctx.ids);
    tt_free(ctx.targets);
    tt_dsv3_free(ctx.m);
}
END_TEST

typedef struct block_ctx {
    tt_dsv3_block *b;
    kink_monitor km;
} block_ctx;

static tt_tensor *f_block(tt_tensor *const *in, void *user) {
    block_ctx *c = user;
    bool reopened;
    monitor_begin(&reopened);
    int t0 = tt_tape_len();
    tt_routing r;
    tt_tensor *y = tt_dsv3_block_forward(c->b, in[0], false, &r);
    monitor_end(&c->km, reopened, &r, 1, t0);
    return y;
}

START_TEST(test_block_grad) {
    tt_dsv3_config c = tiny_config();
    c.n_layers = 1;
    tt_dsv3 *m = NULL;
    tt_tensor *x = NULL;
    block_ctx ctx = {0};
    tt_gradcheck_opts opts = tt_gradcheck_defaults();
    opts.max_per_input = 16;
    tt_tensor *in[6];
    uint64_t seed;
    for (seed = 1; seed <= 200; seed++) {
        tt_dsv3_free(m);
        tt_free(x);
        tt_manual_seed(seed);
        m = tt_dsv3_new(&c);
        x = tt_test_param(TT_SHAPE(2, 5, 8), -1.0f, 1.0f);
        tt_dsv3_block *b = &m->layers[0];
        ctx.b = b;
        tt_tensor *inputs[6] = {x, b->attn.q_proj.weight, b->norm1.weight, b->moe.gate.proj.weight,
                                b->moe.experts[2].down.weight, b->norm2.bias};
        memcpy(in, inputs, sizeof in);
        ctx.km.have_ref = false;
        ctx.km.flips = 0;
        tt_gradcheck(f_block, &ctx, 6, in, &opts, NULL);
        tt_tape_reset();
        if (ctx.km.flips == 0) break;
    }
    printf("  block: seed %llu, no routing or ReLU flip in any step\n", (unsigned long long)seed);
    ck_assert_msg(ctx.km.flips == 0, "every seed in [1, 200] flips a decision in some step");
    tt_test_gradcheck("layer_norm", f_block, &ctx, 6, in, &opts);
    tt_test_gradcheck("affine", f_block, &ctx, 6, in, &opts);
    ck_assert_int_eq(ctx.km.flips, 0);
    tt_free(x);
    tt_dsv3_free(m);
}
END_TEST

START_TEST(test_tiny_model_trains) {
    /* 40 plain SGD steps on one batch: the loss must fall well below its start */
    tt_manual_seed(14);
    tt_dsv3_config c = tiny_config();
    c.aux_alpha = 0.01f;
    tt_dsv3 *m = tt_dsv3_new(&c);
    tt_tensor *ids = tiny_ids(15, 2, 5, 11), *tg = tiny_ids(16, 2, 5, 11);
    float first = 0.0f, last = 0.0f;
    for (int step = 0; step < 40; step++) {
        tt_params_zero_grad(&m->params);
        tt_dsv3_output o = tt_dsv3_forward(m, ids, tg);
        last = tt_item(o.ce);
        if (step == 0) first = last;
        tt_backward(o.loss);
        for (int i = 0; i < m->params.n; i++) {
            tt_tensor *p = m->params.t[i];
            if (!p->requires_grad || !p->grad) continue;
            for (size_t k = 0; k < p->size; k++) p->data[k] -= 0.1f * p->grad[k];
        }
        tt_tape_reset();
    }
    printf("  tiny model: cross entropy %.4f -> %.4f in 40 SGD steps\n", first, last);
    ck_assert_float_lt(last, 0.5f * first);
    tt_free(ids);
    tt_free(tg);
    tt_dsv3_free(m);
}
END_TEST

static Suite *model_suite(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_config_check);
    tcase_add_test(tc, test_config_json);
    tcase_add_test(tc, test_toy_param_counts);
    tcase_add_test(tc, test_param_names);
    tcase_add_test(tc, test_forward_shapes_and_errors);
    tcase_add_test(tc, test_every_param_gets_grad);
    tcase_add_test(tc, test_noise_only_in_training);
    tcase_add_test(tc, test_cached_decoding_matches_full);
    tcase_add_test(tc, test_model_grad);
    tcase_add_test(tc, test_block_grad);
    tcase_add_test(tc, test_tiny_model_trains);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(model_suite)

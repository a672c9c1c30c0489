/* test_checkpoint.c - resuming is bit-exact; broken checkpoints change nothing. */
#include "tt_test.h"

#include "io/checkpoint.h"
#include "io/json.h"
#include "nn/nn.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>


/* ---- an MLP 4 -> 16 -> 1 with dropout, trained on random minibatches -------------------
 * Both the minibatch sampling and dropout draw from the global RNG, so a resumed run
 * only matches if the RNG state is restored too. */
#define NDATA 64
#define NBATCH 16
typedef struct mlp {
    tt_params p;
    tt_linear fc1, fc2;
    tt_tensor *frozen; /* a parameter without requires_grad (like the MoE bias) */
    float xs[NDATA][4], ys[NDATA];
    tt_tensor *x, *y;
} mlp;

/* A fresh "process": same seed and data; init weights drawn from the RNG. */
static void mlp_init(mlp *m) {
    memset(m, 0, sizeof *m);
    tt_manual_seed(2024);
    tt_rng *r = tt_rng_global();
    for (int i = 0; i < NDATA; i++) {
        for (int j = 0; j < 4; j++) m->xs[i][j] = 2.0f * tt_rng_uniform(r) - 1.0f;
        const float *x = m->xs[i];
        m->ys[i] = x[0] * x[1] + 0.5f * x[2] - x[3] * x[3];
    }
    tt_linear_init(&m->fc1, &m->p, "fc1", 4, 16, true);
    tt_linear_init(&m->fc2, &m->p, "fc2", 16, 1, true);
    m->frozen = tt_param_new(&m->p, TT_SHAPE(3), "frozen.bias");
    tt_set_requires_grad(m->frozen, false);
    m->frozen->data[1] = 0.25f;
    m->x = tt_zeros(TT_SHAPE(NBATCH, 4));
    m->y = tt_zeros(TT_SHAPE(NBATCH, 1));
}

static void mlp_free(mlp *m) {
    tt_params_free(&m->p);
    tt_free(m->x);
    tt_free(m->y);
}

static tt_optim *make_opt(mlp *m, bool adam) {
    return adam ? tt_optim_adamw(&m->p, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f)
                : tt_optim_sgd(&m->p, 0.05f, 0.9f, 1e-3f, true);
}

static const tt_lr_schedule SCHED = {TT_LR_WARMUP_COSINE, 1.0f, 0.1f, 10, 100};

static float mlp_step(mlp *m, tt_optim *o, long step, float base_lr) {
    tt_rng *r = tt_rng_global();
    for (int b = 0; b < NBATCH; b++) {
        int i = (int)tt_rng_below(r, NDATA);
        memcpy(m->x->data + 4 * b, m->xs[i], sizeof m->xs[i]);
        m->y->data[b] = m->ys[i];
    }
    tt_tensor *h = tt_dropout(tt_relu(tt_linear_forward(&m->fc1, m->x)), 0.1f, true);
    tt_tensor *d = tt_sub(tt_linear_forward(&m->fc2, h), m->y);
    tt_tensor *loss = tt_mean_all(tt_mul(d, d));
    float l = tt_item(loss);
    tt_optim_zero_grad(o);
    tt_backward(loss);
    tt_clip_grad_norm(&m->p, 1.0f);
    o->lr = base_lr * tt_lr_at(&SCHED, step);
    tt_optim_step(o);
    tt_tape_reset();
    return l;
}

#define NSTEPS 100
#define KSTEPS 50

static void resume_is_bit_exact(bool adam) {
    tt_test_tmpdir("tt_checkpoint");
    const float base_lr = adam ? 1e-2f : 0.05f;
    /* straight run */
    float straight[NSTEPS];
    mlp a;
    mlp_init(&a);
    tt_optim *oa = make_opt(&a, adam);
    for (long s = 0; s < NSTEPS; s++) straight[s] = mlp_step(&a, oa, s, base_lr);
    const uint64_t rng_after_straight = tt_rng_global()->state;

    /* K steps, save */
    const char *p = tt_test_path("ckpt.safetensors");
    mlp b;
    mlp_init(&b);
    tt_optim *ob = make_opt(&b, adam);
    for (long s = 0; s < KSTEPS; s++) {
        float l = mlp_step(&b, ob, s, base_lr);
        ck_assert_msg(memcmp(&l, &straight[s], 4) == 0, "step %ld differs before the save", s);
    }
    tt_kv extra[1] = {{"note", "half way"}};
    ck_assert_int_eq(tt_checkpoint_save(p, &b.p, ob, KSTEPS, "{\"dim\": 4}", 1, extra), TT_OK);
    tt_optim_free(ob);
    mlp_free(&b);

    /* a new "process": fresh init, a different RNG position, scribbled weights; load */
    mlp c;
    mlp_init(&c);
    tt_optim *oc = make_opt(&c, adam);
    oc->lr = 123.0f;
    for (int i = 0; i < 7; i++) tt_rng_normal(tt_rng_global());
    for (int i = 0; i < c.p.n; i++)
        for (size_t k = 0; k < c.p.t[i]->size; k++) c.p.t[i]->data[k] = 3.0f;
    long step = -1;
    char *config = NULL;
    ck_assert_int_eq(tt_checkpoint_load(p, &c.p, oc, &step, &config, NULL), TT_OK);
    ck_assert_int_eq(step, KSTEPS);
    ck_assert_int_eq(oc->step, KSTEPS);
    ck_assert_str_eq(config, "{\"dim\": 4}");
    free(config);
    for (long s = step; s < NSTEPS; s++) {
        float l = mlp_step(&c, oc, s, base_lr);
        ck_assert_msg(memcmp(&l, &straight[s], 4) == 0,
                      "step %ld after resume: loss %.9g, straight run %.9g", s, (double)l,
                      (double)straight[s]);
    }
    for (int i = 0; i < a.p.n; i++)
        ck_assert_msg(memcmp(a.p.t[i]->data, c.p.t[i]->data, a.p.t[i]->size * 4) == 0,
                      "parameter %s differs", a.p.t[i]->name);
    for (int i = 0; i < oa->state.n; i++)
        ck_assert_int_eq(memcmp(oa->state.t[i]->data, oc->state.t[i]->data,
                                oa->state.t[i]->size * 4),
                         0);
    ck_assert_uint_eq(tt_rng_global()->state, rng_after_straight);
    printf("  %s: %d straight steps == %d + save/load + %d, bit for bit (final loss %.6f)\n",
           adam ? "adamw" : "sgd nesterov", NSTEPS, KSTEPS, NSTEPS - KSTEPS,
           (double)straight[NSTEPS - 1]);
    ck_assert_float_lt(straight[NSTEPS - 1], straight[0]);
    tt_optim_free(oa);
    tt_optim_free(oc);
    mlp_free(&a);
    mlp_free(&c);
    tt_test_tmpdir_remove();
}

START_TEST(test_resume_sgd_bit_exact) { resume_is_bit_exact(false); }
END_TEST
START_TEST(test_resume_adamw_bit_exact) { resume_is_bit_exact(true); }
END_TEST

START_TEST(test_file_contents) {
    tt_test_tmpdir("tt_checkpoint");
    mlp m;
    mlp_init(&m);
    tt_optim *o = make_opt(&m, true);
    o->step = 7;
    tt_rng *r = tt_rng_global();
    tt_rng_normal(r); /* leaves a spare normal: has_spare = 1 */
    tt_rng saved = *r;
    const char *p = tt_test_path("c.safetensors");
    tt_kv extra[2] = {{"git", "abc123"}, {"data", "tiny shakespeare"}};
    ck_assert_int_eq(tt_checkpoint_save(p, &m.p, o, 42, NULL, 2, extra), TT_OK);

    tt_safetensors st;
    ck_assert_int_eq(tt_safetensors_load(p, &st), TT_OK);
    ck_assert_int_eq(st.n, m.p.n + o->state.n); /* 5 params + 2 x 4 AdamW moments */
    ck_assert_int_eq(st.n, 5 + 8);
    ck_assert_ptr_nonnull(tt_safetensors_get(&st, "fc1.weight"));
    ck_assert_ptr_nonnull(tt_safetensors_get(&st, "frozen.bias"));
    ck_assert_ptr_nonnull(tt_safetensors_get(&st, "optim.exp_avg.fc2.bias"));
    ck_assert_ptr_nonnull(tt_safetensors_get(&st, "optim.exp_avg_sq.fc1.weight"));
    ck_assert_str_eq(tt_safetensors_meta(&st, "format"), "tinytorch-checkpoint-1");
    ck_assert_str_eq(tt_safetensors_meta(&st, "step"), "42");
    ck_assert_str_eq(tt_safetensors_meta(&st, "git"), "abc123");
    ck_assert_ptr_null(tt_safetensors_meta(&st, "config"));
    printf("  optim: %s\n  rng: %s\n", tt_safetensors_meta(&st, "optim"),
           tt_safetensors_meta(&st, "rng"));
    /* the rng metadata is JSON with decimal strings that give the state back exactly */
    const char *rng = tt_safetensors_meta(&st, "rng");
    tt_json *j = tt_json_parse(rng, strlen(rng), NULL, 0);
    ck_assert_ptr_nonnull(j);
    char want[32];
    snprintf(want, sizeof want, "%llu", (unsigned long long)saved.state);
    ck_assert_str_eq(tt_json_get(j, "state")->string, want);
    ck_assert_str_eq(tt_json_get(j, "has_spare")->string, "1");
    ck_assert(strtod(tt_json_get(j, "spare")->string, NULL) == saved.spare);
    tt_json_free(j);
    const char *om = tt_safetensors_meta(&st, "optim");
    j = tt_json_parse(om, strlen(om), NULL, 0);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(tt_json_get(j, "kind")->string, "adamw");
    ck_assert((float)tt_json_get(j, "beta2")->number == 0.95f);
    ck_assert_double_eq(tt_json_get(j, "step")->number, 7);
    tt_json_free(j);
    tt_safetensors_free(&st);

    /* raw_out hands the file over; loading without an optimizer ignores optim.* */
    tt_manual_seed(1);
    long step = 0;
    ck_assert_int_eq(tt_checkpoint_load(p, &m.p, NULL, &step, NULL, &st), TT_OK);
    ck_assert_int_eq(step, 42);
    ck_assert_str_eq(tt_safetensors_meta(&st, "data"), "tiny shakespeare");
    ck_assert_uint_eq(tt_rng_global()->state, saved.state);
    ck_assert_int_eq(tt_rng_global()->has_spare, 1);
    ck_assert(tt_rng_global()->spare == saved.spare);
    tt_safetensors_free(&st);
    tt_optim_free(o);
    mlp_free(&m);
    tt_test_tmpdir_remove();
}
END_TEST

START_TEST(test_save_argument_errors) {
    tt_test_tmpdir("tt_checkpoint");
    mlp m;
    mlp_init(&m);
    const char *p = tt_test_path("x.safetensors");
    tt_kv reserved[1] = {{"step", "1"}};
    ck_assert_int_eq(tt_checkpoint_save(p, &m.p, NULL, 0, NULL, 1, reserved), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "metadata key 'step' is reserved"));
    ck_assert_int_eq(tt_checkpoint_save(p, &m.p, NULL, 0, "{dim: 4}", 0, NULL), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "config is not JSON: JSON error at byte 1"));
    tt_param_new(&m.p, TT_SHAPE(1), "optim.lr");
    ck_assert_int_eq(tt_checkpoint_save(p, &m.p, NULL, 0, NULL, 0, NULL), TT_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(tt_last_error(), "parameter 'optim.lr' uses the reserved prefix"));
    ck_assert_int_ne(access(p, F_OK), 0);
    ck_assert_int_eq(tt_checkpoint_save("/nonexistent-tt-dir/c.safetensors", &m.p, NULL, 0, NULL,
                                        0, NULL),
                     TT_ERR_ARG); /* the reserved name is caught before any I/O */
    mlp_free(&m);
    mlp_init(&m);
    ck_assert_int_eq(tt_checkpoint_save("/nonexistent-tt-dir/c.safetensors", &m.p, NULL, 0, NULL,
                                        0, NULL),
                     TT_ERR_IO);
    mlp_free(&m);
    tt_test_tmpdir_remove();
}
END_TEST

/* ---- broken checkpoints leave everything as it was ----------------------------------- */

typedef struct snapshot {
    float *params, *state;
    size_t n_params, n_state;
    tt_rng rng;
    long opt_step;
    float lr;
} snapshot;

static size_t copy_all(const tt_params *p, float *dst) {
    size_t k = 0;
    for (int i = 0; i < p->n; i++) {
        if (dst) memcpy(dst + k, p->t[i]->data, p->t[i]->size * 4);
        k += p->t[i]->size;
    }
    return k;
}

static snapshot take(const mlp *m, const tt_optim *o) {
    snapshot s;
    s.n_params = copy_all(&m->p, NULL);
    s.params = malloc(s.n_params * 4);
    copy_all(&m->p, s.params);
    s.n_state = copy_all(&o->state, NULL);
    s.state = malloc(s.n_state * 4);
    copy_all(&o->state, s.state);
    s.rng = *tt_rng_global();
    s.opt_step = o->step;
    s.lr = o->lr;
    return s;
}

static void assert_unchanged(const snapshot *s, const mlp *m, const tt_optim *o) {
    float *now = malloc(s->n_params * 4 + s->n_state * 4 + 4);
    copy_all(&m->p, now);
    ck_assert_msg(memcmp(now, s->params, s->n_params * 4) == 0, "parameters changed");
    copy_all(&o->state, now);
    ck_assert_msg(memcmp(now, s->state, s->n_state * 4) == 0, "optimizer state changed");
    free(now);
    ck_assert_uint_eq(tt_rng_global()->state, s->rng.state);
    ck_assert_int_eq(o->step, s->opt_step);
    ck_assert_float_eq(o->lr, s->lr);
}

static void expect_load_error(const char *p, mlp *m, tt_optim *o, tt_status want,
                              const char *substring) {
    snapshot s = take(m, o);
    long step = -5;
    char *config = (char *)"sentinel";
    tt_status got = tt_checkpoint_load(p, &m->p, o, &step, &config, NULL);
    ck_assert_msg(got == want, "status %d, expected %d (%s)", got, want, tt_last_error());
    ck_assert_msg(strstr(tt_last_error(), substring) != NULL, "\"%s\" lacks \"%s\"",
                  tt_last_error(), substring);
    printf("  rejected: %s\n", tt_last_error());
    ck_assert_int_eq(step, -5);
    ck_assert_ptr_null(config);
    assert_unchanged(&s, m, o);
    free(s.params);
    free(s.state);
}

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len);
    ck_assert_uint_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(b, 1, len, f), len);
    fclose(f);
}

START_TEST(test_corrupt_checkpoints_change_nothing) {
    tt_test_tmpdir("tt_checkpoint");
    mlp m;
    mlp_init(&m);
    tt_optim *o = make_opt(&m, true);
    for (long s = 0; s < 3; s++) mlp_step(&m, o, s, 1e-2f);
    const char *good = tt_test_path("good.safetensors");
    ck_assert_int_eq(tt_checkpoint_save(good, &m.p, o, 3, NULL, 0, NULL), TT_OK);
    for (long s = 3; s < 5; s++) mlp_step(&m, o, s, 1e-2f); /* the model moves on */

    size_t len;
    unsigned char *bytes = slurp(good, &len);
    const char *bad = tt_test_path("bad.safetensors");

    /* truncated: in the data, and in the header */
    spit(bad, bytes, len - 1);
    expect_load_error(bad, &m, o, TT_ERR_FORMAT, "past the end of the data");
    spit(bad, bytes, 100);
    expect_load_error(bad, &m, o, TT_ERR_FORMAT, "larger than the file");
    spit(bad, bytes, 0);
    expect_load_error(bad, &m, o, TT_ERR_FORMAT, "file too short (0 bytes)");
    /* a corrupted byte: the header's opening '{' */
    unsigned char *c = malloc(len);
    memcpy(c, bytes, len);
    c[8] = 'x';
    spit(bad, c, len);
    expect_load_error(bad, &m, o, TT_ERR_FORMAT, "header is not valid JSON");
    free(c);
    expect_load_error(tt_test_path("absent.safetensors"), &m, o, TT_ERR_IO, "cannot open");

    /* not a checkpoint / broken metadata (the tensors themselves are fine) */
    tt_tensor **all = malloc((size_t)(m.p.n + o->state.n) * sizeof *all);
    for (int i = 0; i < m.p.n; i++) all[i] = m.p.t[i];
    for (int i = 0; i < o->state.n; i++) all[m.p.n + i] = o->state.t[i];
    int n_all = m.p.n + o->state.n;
    const char *rng_ok = "{\"state\": \"1\", \"has_spare\": \"0\", \"spare\": \"0\"}";
    const char *opt_ok = "{\"kind\": \"adamw\", \"lr\": 0.01, \"momentum\": 0, \"nesterov\": false,"
                         " \"beta1\": 0.9, \"beta2\": 0.95, \"eps\": 1e-8, \"weight_decay\": 0.1,"
                         " \"step\": 3}";
    struct {
        const char *format, *step, *rng, *optim, *err;
        tt_status status;
    } cases[] = {
        {NULL, "3", rng_ok, opt_ok, "not a tinytorch checkpoint (format '(none)'", TT_ERR_FORMAT},
        {"tinytorch-checkpoint-2", "3", rng_ok, opt_ok, "format 'tinytorch-checkpoint-2'",
         TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "three", rng_ok, opt_ok, "\"step\" metadata 'three'", TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "-1", rng_ok, opt_ok, "is not a non-negative integer", TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "3", NULL, opt_ok, "no \"rng\" metadata", TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "3", "{\"state\": 1}", opt_ok, "needs string fields", TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "3", "{\"state\": \"99999999999999999999\", \"has_spare\": \"0\","
                                    " \"spare\": \"0\"}",
         opt_ok, "is not a 64-bit decimal integer", TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "3", "{\"state\": \"1\", \"has_spare\": \"2\", \"spare\": \"0\"}",
         opt_ok, "has_spare '2' is not 0 or 1", TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "3", "{\"state\": \"1\", \"has_spare\": \"0\", \"spare\": \"x\"}",
         opt_ok, "spare 'x' is not a finite number", TT_ERR_FORMAT},
        {TT_CHECKPOINT_FORMAT, "3", rng_ok, NULL, "has no optimizer state", TT_ERR_MISMATCH},
        {TT_CHECKPOINT_FORMAT, "3", rng_ok, "{\"kind\": \"sgd\"}",
         "the checkpoint's optimizer is sgd, this optimizer is adamw", TT_ERR_MISMATCH},
        {TT_CHECKPOINT_FORMAT, "3", rng_ok, "{\"kind\": \"adamw\", \"lr\": \"0.1\"}",
         "lacks a valid lr", TT_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tt_kv meta[4];
        int n = 0;
        if (cases[i].format) meta[n++] = (tt_kv){"format", cases[i].format};
        meta[n++] = (tt_kv){"step", cases[i].step};
        if (cases[i].rng) meta[n++] = (tt_kv){"rng", cases[i].rng};
        if (cases[i].optim) meta[n++] = (tt_kv){"optim", cases[i].optim};
        ck_assert_int_eq(tt_safetensors_save(bad, n_all, all, n, meta), TT_OK);
        expect_load_error(bad, &m, o, cases[i].status, cases[i].err);
    }

    /* missing optimizer state tensor (saved without the optimizer's tensors) */
    tt_kv meta[4] = {{"format", TT_CHECKPOINT_FORMAT}, {"step", "3"}, {"rng", rng_ok},
                     {"optim", opt_ok}};
    ck_assert_int_eq(tt_safetensors_save(bad, m.p.n, all, 4, meta), TT_OK);
    expect_load_error(bad, &m, o, TT_ERR_MISMATCH, "missing tensor 'optim.exp_avg.fc1.weight'");
    /* a model tensor the model does not have (strict) */
    tt_tensor *stray = tt_set_name(tt_zeros(TT_SHAPE(2)), "layers.9.stray");
    tt_tensor **grown = realloc(all, (size_t)(n_all + 1) * sizeof *all);
    all = grown;
    all[n_all] = stray;
    ck_assert_int_eq(tt_safetensors_save(bad, n_all + 1, all, 4, meta), TT_OK);
    expect_load_error(bad, &m, o, TT_ERR_MISMATCH, "unexpected tensor 'layers.9.stray'");
    tt_free(stray);
    free(all);

    /* a model of another shape: both shapes named, nothing copied */
    mlp wide;
    mlp_init(&wide);
    tt_params_free(&wide.p);
    tt_linear_init(&wide.fc1, &wide.p, "fc1", 4, 32, true);
    tt_linear_init(&wide.fc2, &wide.p, "fc2", 32, 1, true);
    wide.frozen = tt_param_new(&wide.p, TT_SHAPE(3), "frozen.bias");
    tt_set_requires_grad(wide.frozen, false);
    tt_optim *ow = make_opt(&wide, true);
    expect_load_error(good, &wide, ow, TT_ERR_MISMATCH,
                      "tensor 'fc1.weight': shape [16, 4] in the file, but the parameter has "
                      "shape [32, 4]");
    tt_optim_free(ow);
    mlp_free(&wide);

    /* SGD optimizer against an AdamW checkpoint */
    tt_optim *sgd = make_opt(&m, false);
    expect_load_error(good, &m, sgd, TT_ERR_MISMATCH, "optimizer is adamw, this optimizer is sgd");
    tt_optim_free(sgd);

    /* and the good file still loads */
    long step = 0;
    ck_assert_int_eq(tt_checkpoint_load(good, &m.p, o, &step, NULL, NULL), TT_OK);
    ck_assert_int_eq(step, 3);
    ck_assert_int_eq(o->step, 3);
    free(bytes);
    tt_optim_free(o);
    mlp_free(&m);
    tt_test_tmpdir_remove();
}
END_TEST

static Suite *checkpoint_suite(void) {
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_resume_sgd_bit_exact);
    tcase_add_test(tc, test_resume_adamw_bit_exact);
    tcase_add_test(tc, test_file_contents);
    tcase_add_test(tc, test_save_argument_errors);
    tcase_add_test(tc, test_corrupt_checkpoints_change_nothing);
    suite_add_tcase(s, tc);
    return s;
}

TT_TEST_MAIN(checkpoint_suite)

/* t07_training.c - companion program of docs/tutorials/07-training-toy.md.
 *
 * train_toy in miniature, with nothing but the library: the synthetic source and its
 * exact entropies, the toy DeepSeek model (tt_dsv3), 200 training steps, the held-out
 * loss against the floor, a checkpoint saved half-way and resumed bit for bit, and
 * sampling with temperature, top-k and the latent KV cache.
 *
 *   build/examples/tutorials/t07_training [source|model|train|checkpoint|sample]
 *
 * Every number it prints is deterministic: the data are a pure function of the window
 * index, the RNG is the library's portable one, and the kernels give the same bits for
 * any thread count. No timings. Runs in about 2 s.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "tinytorch.h"
#include "io/checkpoint.h"
#include "nn/deepseek.h"
#include "optim/optim.h"

#define V 100          /* vocabulary                                        */
#define T 32           /* tokens per window                                 */
#define B 16           /* windows per step                                  */
#define STEPS 400      /* training steps (train_toy: 1500)                  */
#define SAVE_AT 60     /* section 4: save here ...                          */
#define RESUME_TO 120  /* ... and compare the two runs up to here           */
#define IGNORE (-100)  /* target of the first position: not enough context  */
#define HELDOUT_BATCHES 4

/* ---- 1. the source ------------------------------------------------------------------ */
/* x_t is uniform over the 4 tokens c in x_{t-2} + [0, 8) (mod V) whose colour
 * (c >> 1) & 1 is the parity of x_{t-1}. */
static int colour(int c) { return (c >> 1) & 1; }

static void candidates(int a, int b, int out[4]) {
    int n = 0;
    for (int k = 0; k < 8; k++) {
        int c = (a + k) % V;
        if (colour(c) == (b & 1)) out[n++] = c;
    }
}

/* Window `index` of a split (0 train, 1 held out): T inputs, T targets. A pure function
 * of (split, index), so a resumed run sees the same batches as a straight one. */
static void window(int split, long index, int32_t *ids, int32_t *targets) {
    tt_rng r;
    tt_rng_seed(&r, ((uint64_t)split << 48) ^ ((uint64_t)index * 0x9E3779B97F4A7C15ull));
    int x[T + 1];
    x[0] = (int)tt_rng_below(&r, V);
    int k = (int)tt_rng_below(&r, 50); /* x_1: one of the 50 tokens of colour parity(x_0) */
    x[1] = 4 * (k / 2) + 2 * (x[0] & 1) + k % 2;
    for (int t = 2; t <= T; t++) {
        int c[4];
        candidates(x[t - 2], x[t - 1], c);
        x[t] = c[tt_rng_below(&r, 4)];
    }
    for (int t = 0; t < T; t++) ids[t] = x[t], targets[t] = x[t + 1];
    targets[0] = IGNORE; /* x_1 given x_0 alone: not scored */
}

static void batch(int split, long step, tt_tensor *ids, tt_tensor *targets) {
    for (int b = 0; b < B; b++)
        window(split, step * B + b, tt_ids(ids) + b * T, tt_ids(targets) + b * T);
}

/* The three entropies by enumeration over the stationary pairs (a, b) = (x_{t-2},
 * x_{t-1}): a uniform over V, b uniform over the 50 tokens of colour parity(a). */
static void entropies(double *floor_h, double *bigram_h, double *unigram_h, int *n_after_b) {
    static double joint_bc[V][V]; /* p(x_{t-1} = b, x_t = c) */
    double p_c[V] = {0}, h2 = 0;
    memset(joint_bc, 0, sizeof joint_bc);
    for (int a = 0; a < V; a++)
        for (int b = 0; b < V; b++) {
            if (colour(b) != (a & 1)) continue;
            const double p_ab = 1.0 / (V * 50);
            int c[4];
            candidates(a, b, c);
            for (int i = 0; i < 4; i++) joint_bc[b][c[i]] += p_ab / 4, p_c[c[i]] += p_ab / 4;
            h2 += p_ab * log(4.0); /* H(x_t | a, b) = ln 4 for every pair */
        }
    double h1 = 0, h0 = 0;
    *n_after_b = 0;
    for (int b = 0; b < V; b++) {
        double p_b = 0;
        int n = 0;
        for (int c = 0; c < V; c++) p_b += joint_bc[b][c], n += joint_bc[b][c] > 0;
        for (int c = 0; c < V; c++)
            if (joint_bc[b][c] > 0) h1 -= joint_bc[b][c] * log(joint_bc[b][c] / p_b);
        if (n > *n_after_b) *n_after_b = n;
    }
    for (int c = 0; c < V; c++) h0 -= p_c[c] * log(p_c[c]);
    *floor_h = h2, *bigram_h = h1, *unigram_h = h0;
}

static void show_source(void) {
    printf("== 1. the source\n");
    int32_t ids[T], targets[T];
    window(0, 0, ids, targets);
    printf("train window 0:");
    for (int t = 0; t < 12; t++) printf(" %d", ids[t]);
    printf(" ...\n");
    int c[4];
    candidates(ids[0], ids[1], c);
    printf("after %d %d the source emits one of %d %d %d %d (x_2 = %d)\n", ids[0], ids[1], c[0],
           c[1], c[2], c[3], ids[2]);
    double h2, h1, h0;
    int n1;
    entropies(&h2, &h1, &h0, &n1);
    printf("entropy rate H(x_t | x_t-2, x_t-1) = %.4f nats = ln 4 = %.4f\n", h2, log(4.0));
    printf("bigram       H(x_t | x_t-1)        = %.4f nats = ln 50 = %.4f (%d tokens can follow "
           "a given x_t-1)\n", h1, log(50.0), n1);
    printf("unigram      H(x_t)                = %.4f nats = ln 100 = %.4f\n", h0, log(100.0));
}

/* ---- 2. the model --------------------------------------------------------------------- */
static tt_dsv3 *new_model(void) {
    tt_dsv3_config c = tt_dsv3_config_toy(); /* vocab 100, dim 64, 2 layers, 4 experts */
    tt_manual_seed(1);
    tt_dsv3 *m = tt_dsv3_new(&c);
    /* every parameter gets its gradient buffer now: an expert nobody chose yet is still
     * updated (momentum) and a resumed run matches a straight one (as train_toy does) */
    for (int i = 0; i < m->params.n; i++)
        if (m->params.t[i]->requires_grad) tt_grad_ensure(m->params.t[i]);
    return m;
}

static void show_model(void) {
    printf("== 2. the model\n");
    tt_dsv3 *m = new_model();
    const tt_dsv3_config *c = &m->cfg;
    printf("vocab %d, dim %d, %d layers, %d heads, %d experts (top-%d, hidden %d), rank %d, "
           "max_seq %d, aux_alpha %g\n", c->vocab, c->dim, c->n_layers, c->n_heads, c->n_experts,
           c->top_k, c->expert_hidden, c->rank, c->max_seq, (double)c->aux_alpha);
    printf("%d parameter tensors, %zu parameters, %zu activated per token\n", m->params.n,
           tt_dsv3_n_params(m), tt_dsv3_n_active_params(m));
    const size_t expert = 2 * (size_t)c->dim * c->expert_hidden + c->expert_hidden + c->dim;
    printf("one expert: %zu parameters; idle per token: %d layers x %d experts x %zu = %zu\n",
           expert, c->n_layers, c->n_experts - c->top_k, expert,
           (size_t)c->n_layers * (c->n_experts - c->top_k) * expert);
    printf("KV cache per token: %d layers x rank %d x 4 B = %d B (full K and V: 2 x %d x %d x "
           "4 B = %d B)\n", c->n_layers, c->rank, c->n_layers * c->rank * 4, c->n_layers, c->dim,
           2 * c->n_layers * c->dim * 4);
    tt_dsv3_free(m);
}

/* ---- 3. training ------------------------------------------------------------------------ */
typedef struct trainer {
    tt_dsv3 *m;
    tt_optim *opt;
    tt_lr_schedule sched;
    tt_tensor *ids, *targets;
    long step;              /* steps done */
    double loss[STEPS + 1]; /* loss[s]: the loss of step s (1-based) */
} trainer;

static void trainer_init(trainer *tr) {
    tr->m = new_model();
    tr->opt = tt_optim_sgd(&tr->m->params, 0.3f, 0.9f, 0.0f, false);
    tr->sched = (tt_lr_schedule){TT_LR_WARMUP_COSINE, 0.3f, 0.03f, STEPS / 20, STEPS};
    tr->ids = tt_tensor_new(TT_I32, TT_SHAPE(B, T));
    tr->targets = tt_tensor_new(TT_I32, TT_SHAPE(B, T));
    tr->step = 0;
}

static void trainer_free(trainer *tr) {
    tt_free(tr->ids);
    tt_free(tr->targets);
    tt_optim_free(tr->opt);
    tt_dsv3_free(tr->m);
}

/* One step, as train_toy's train_step does it. */
static void train_step(trainer *tr, double *ce_out, double *aux_out) {
    const long s = tr->step;
    tr->opt->lr = tt_lr_at(&tr->sched, s);
    batch(0, s, tr->ids, tr->targets);
    tt_dsv3_output out = tt_dsv3_forward(tr->m, tr->ids, NULL);
    tt_tensor *ce = tt_cross_entropy(out.logits, tr->targets, IGNORE);
    tt_tensor *loss = tt_add(ce, out.aux); /* ce + sum of the layers' balance losses */
    tt_optim_zero_grad(tr->opt);
    tt_backward(loss);
    tt_clip_grad_norm(&tr->m->params, 1.0f);
    tt_optim_step(tr->opt);
    tr->loss[s + 1] = tt_item(loss);
    *ce_out = tt_item(ce);
    *aux_out = tt_item(out.aux);
    tt_tape_reset(); /* the step's temporaries go; parameters and grads stay */
    tr->step = s + 1;
}

static void train_until(trainer *tr, long stop, int print_every) {
    while (tr->step < stop) {
        double ce, aux;
        const double lr = tt_lr_at(&tr->sched, tr->step);
        train_step(tr, &ce, &aux);
        if (print_every && (tr->step % print_every == 0 || tr->step == 1))
            printf("step %3ld | loss %.4f | ce %.4f | aux %.4f | lr %.2e\n", tr->step,
                   tr->loss[tr->step], ce, aux, lr);
    }
}

/* Mean cross entropy on fixed held-out windows: eval mode, no tape. */
static double heldout(trainer *tr) {
    double ce = 0;
    tr->m->training = false;
    tt_no_grad_begin();
    for (int k = 0; k < HELDOUT_BATCHES; k++) {
        batch(1, k, tr->ids, tr->targets);
        tt_dsv3_output out = tt_dsv3_forward(tr->m, tr->ids, NULL);
        ce += tt_item(tt_cross_entropy(out.logits, tr->targets, IGNORE));
        tt_tape_reset();
    }
    tt_no_grad_end();
    tr->m->training = true;
    return ce / HELDOUT_BATCHES;
}

static void show_train(trainer *tr) {
    printf("== 3. training: sgd (momentum 0.9), lr 0.3 (warm-up %d, cosine to 0.03), batch %d "
           "x %d, %d steps\n", STEPS / 20, B, T, STEPS);
    train_until(tr, STEPS, 50);
    double h2, h1, h0;
    int n1;
    entropies(&h2, &h1, &h0, &n1);
    const double h = heldout(tr);
    printf("held-out loss %.4f: floor %.4f (%+.4f), bigram %.4f, unigram %.4f\n", h, h2, h - h2,
           h1, h0);
}

/* ---- 4. checkpoints --------------------------------------------------------------------- */
static void show_checkpoint(void) {
    printf("== 4. checkpoint at step %d, resumed in a fresh model\n", SAVE_AT);
    char path[] = "/tmp/t07_ckpt_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(1);
    }
    close(fd);

    /* the straight run, saving at step SAVE_AT */
    trainer *a = calloc(1, sizeof *a);
    trainer_init(a);
    train_until(a, SAVE_AT, 0);
    char cfg[512];
    tt_dsv3_config_to_json(&a->m->cfg, cfg, sizeof cfg);
    tt_kv extra[1] = {{"tutorial", "t07_training"}};
    if (tt_checkpoint_save(path, &a->m->params, a->opt, a->step, cfg, 1, extra) != TT_OK) {
        fprintf(stderr, "%s\n", tt_last_error());
        exit(1);
    }
    train_until(a, RESUME_TO, 0);

    /* what the file holds */
    tt_safetensors st;
    if (tt_safetensors_load(path, &st) != TT_OK) {
        fprintf(stderr, "%s\n", tt_last_error());
        exit(1);
    }
    int n_optim = 0;
    for (int i = 0; i < st.n; i++) n_optim += !strncmp(st.tensors[i]->name, "optim.", 6);
    printf("%d tensors: %d parameters + %d optimizer state (optim.momentum.<name>)\n", st.n,
           st.n - n_optim, n_optim);
    for (int i = 0; i < st.n; i++) {
        const tt_tensor *t = st.tensors[i];
        if (i >= 6 && i < st.n - 2) {
            if (i == 6) printf("  ...\n");
            continue;
        }
        printf("  %-44s [", t->name);
        for (int d = 0; d < t->ndim; d++) printf("%s%d", d ? ", " : "", t->shape[d]);
        printf("]\n");
    }
    printf("metadata:\n");
    for (int i = 0; i < st.n_meta; i++) printf("  %-9s %s\n", st.meta_keys[i], st.meta_values[i]);
    tt_safetensors_free(&st);

    /* a fresh model and optimizer (other initial weights), loaded and trained on */
    trainer *b = calloc(1, sizeof *b);
    trainer_init(b);
    tt_manual_seed(12345); /* scramble the RNG: the checkpoint restores it */
    if (tt_checkpoint_load(path, &b->m->params, b->opt, &b->step, NULL, NULL) != TT_OK) {
        fprintf(stderr, "%s\n", tt_last_error());
        exit(1);
    }
    printf("loaded: step %ld, optimizer lr %.9g (the file's), resuming to step %d\n", b->step,
           (double)b->opt->lr, RESUME_TO);
    train_until(b, RESUME_TO, 0);
    int same = 0;
    for (int s = SAVE_AT + 1; s <= RESUME_TO; s++)
        same += memcmp(&a->loss[s], &b->loss[s], sizeof(double)) == 0;
    printf("steps %d..%d: %d of %d resumed losses equal the straight run's bit for bit "
           "(step %d: %.9g vs %.9g)\n", SAVE_AT + 1, RESUME_TO, same, RESUME_TO - SAVE_AT,
           RESUME_TO, a->loss[RESUME_TO], b->loss[RESUME_TO]);
    trainer_free(a);
    trainer_free(b);
    free(a);
    free(b);
    unlink(path);
}

/* ---- 5. sampling ------------------------------------------------------------------------ */
/* Next token from logits [n]: greedy at temperature 0, else sample from
 * softmax(logits / temperature) restricted to the top_k largest (0: all). */
static int sample(const float *logits, int n, double temperature, int top_k, tt_rng *rng) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature == 0) return best;
    double p[V], z = 0;
    for (int i = 0; i < n; i++) {
        int rank = 0; /* how many logits are larger */
        for (int j = 0; j < n; j++) rank += logits[j] > logits[i];
        p[i] = top_k > 0 && rank >= top_k ? 0 : exp((logits[i] - logits[best]) / temperature);
        z += p[i];
    }
    double u = tt_rng_uniform_f64(rng) * z;
    for (int i = 0; i < n; i++) {
        if (p[i] == 0) continue;
        if (u < p[i]) return i;
        u -= p[i];
    }
    return best;
}

/* softmax(logits / temperature) over the top_k (0: all) into p. */
static void probs(const float *logits, double temperature, int top_k, double *p) {
    double mx = logits[0], z = 0;
    for (int i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < V; i++) {
        int rank = 0;
        for (int j = 0; j < V; j++) rank += logits[j] > logits[i];
        p[i] = top_k > 0 && rank >= top_k ? 0 : exp((logits[i] - mx) / temperature);
        z += p[i];
    }
    for (int i = 0; i < V; i++) p[i] /= z;
}

static void show_sample(trainer *tr) {
    printf("== 5. sampling from the trained model\n");
    tt_dsv3 *m = tr->m;
    m->training = false;
    int32_t w[T], wt[T];
    window(1, 1000, w, wt); /* a held-out window: its first two tokens are the prompt */
    int allowed[4];
    candidates(w[0], w[1], allowed);
    printf("prompt %d %d: the source allows %d %d %d %d, each with p = 0.25\n", w[0], w[1],
           allowed[0], allowed[1], allowed[2], allowed[3]);

    tt_tensor *prompt = tt_from_ids(TT_SHAPE(1, 2), w);
    tt_no_grad_begin();
    tt_tensor *logits = tt_dsv3_forward(m, prompt, NULL).logits; /* [1, 2, V] */
    tt_no_grad_end();
    float last[V];
    memcpy(last, logits->data + V, sizeof last); /* position 1 predicts x_2 */
    tt_tape_reset();
    int order[V]; /* tokens by decreasing logit */
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < V; j++)
            if (last[order[j]] > last[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    const double temps[3] = {1.0, 0.5, 2.0};
    const int topks[3] = {0, 0, 0};
    double p[4][V];
    for (int k = 0; k < 3; k++) probs(last, temps[k], topks[k], p[k]);
    probs(last, 2.0, 4, p[3]);
    printf("token  logit    p(T=1)  p(T=0.5)  p(T=2)  p(T=2, top-4)\n");
    for (int r = 0; r < 6; r++) {
        int i = order[r];
        printf("%5d  %6.3f   %.3f   %.3f     %.3f   %.3f\n", i, (double)last[i], p[0][i],
               p[1][i], p[2][i], p[3][i]);
    }
    for (int k = 0; k < 4; k++) {
        double in = 0;
        for (int j = 0; j < 4; j++) in += p[k][allowed[j]];
        static const char *names[4] = {"T=1", "T=0.5", "T=2", "T=2, top-4"};
        printf("%-10s probability on the 4 allowed tokens %.3f\n", names[k], in);
    }

    /* decoding with the latent cache: the prompt once, then one token per call */
    const int n_new = 28, total = 2 + n_new; /* <= T: positions the model was trained on */
    const struct { double temperature; int top_k; } runs[3] = {{0, 0}, {1, 0}, {1, 4}};
    for (int r = 0; r < 3; r++) {
        tt_dsv3_cache cache;
        tt_dsv3_cache_init(&cache, m, total);
        tt_rng rng;
        tt_rng_seed(&rng, 7);
        int32_t seq[2 + 28];
        seq[0] = w[0], seq[1] = w[1];
        tt_tensor *one = tt_tensor_new(TT_I32, TT_SHAPE(1, 1));
        tt_tensor *lg = tt_dsv3_forward_cached(m, prompt, &cache);
        const float *next = lg->data + V; /* the prompt's last position */
        int ok = 0;
        for (int k = 2; k < total; k++) {
            seq[k] = sample(next, V, runs[r].temperature, runs[r].top_k, &rng);
            int c[4];
            candidates(seq[k - 2], seq[k - 1], c);
            ok += seq[k] == c[0] || seq[k] == c[1] || seq[k] == c[2] || seq[k] == c[3];
            tt_tape_reset();
            if (k + 1 == total) break;
            tt_ids(one)[0] = seq[k];
            lg = tt_dsv3_forward_cached(m, one, &cache);
            next = lg->data;
        }
        printf("temperature %g%s:", runs[r].temperature, runs[r].top_k ? ", top-k 4" : "");
        for (int k = 2; k < total; k++) printf(" %d", seq[k]);
        printf("\n  %d/%d allowed by the source; cache: %d tokens x %d B = %d B\n", ok, n_new,
               cache.layers[0].len, m->cfg.n_layers * m->cfg.rank * 4,
               cache.layers[0].len * m->cfg.n_layers * m->cfg.rank * 4);
        tt_tape_reset();
        tt_free(one);
        tt_dsv3_cache_free(&cache);
    }
    tt_free(prompt);
    m->training = true;
}

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : NULL;
#ifdef _OPENMP
    /* one thread unless OMP_NUM_THREADS says otherwise: the toy's matrices are too small
     * for a second one to pay (see train_toy.c); the numbers do not depend on it */
    if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
#endif
#define RUN(name) (!only || !strcmp(only, name))
    if (RUN("source")) show_source();
    if (RUN("model")) show_model();
    trainer *tr = NULL;
    if (RUN("train") || RUN("sample")) {
        tr = calloc(1, sizeof *tr);
        trainer_init(tr);
        if (RUN("train")) show_train(tr);
        else train_until(tr, STEPS, 0);
    }
    if (RUN("checkpoint")) show_checkpoint();
    if (RUN("sample")) show_sample(tr);
    if (tr) {
        trainer_free(tr);
        free(tr);
    }
    printf("at exit: %zu persistent tensors\n", tt_mem_get_stats().n_persistent);
    return 0;
}

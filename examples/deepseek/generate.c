/* generate.c - sample from a trained DeepSeek-V3 toy model with its latent KV cache.
 *
 *   ./build/examples/deepseek/generate --load toy.safetensors --tokens 40
 *   ./build/examples/deepseek/generate --load toy.safetensors --check
 *
 * The checkpoint carries the model config in its metadata, so nothing else is needed.
 * Decoding feeds the prompt once, then one token at a time through the model's cached
 * forward. Seed model (tt_dsv3_forward_cached): each layer keeps only the compressed
 * latent c = kv_a_proj(x) of every past token (rank floats) and restores K and V from
 * it, instead of keeping K and V themselves (2 * dim floats). v3 model
 * (tt_v3_forward_cached, absorb form): each layer keeps kv_norm(c) [kv_lora_rank] and
 * the rotated k_pe [qk_rope_head_dim] and never rebuilds K or V (W_UK is absorbed into
 * the query, W_UV into the output), instead of n_heads * (dn + dr + dv) floats of full
 * per-head K and V. --check recomputes the whole sequence without the cache and
 * compares every position's logits.
 */
#include "corpus.h"
#include "flags.h"
#include "progress.h"
#include "toyckpt.h"

#include "tinytorch.h"
#include "nn/deepseek.h"
#include "nn/v3.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CHECK_TOL 1e-4

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "generate: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* "3 14 15", "3,14,15" -> ids; every id in [0, vocab). Returns the count or dies. */
static int parse_ids(const char *s, int vocab, int32_t *out, int cap) {
    int n = 0;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        if (!*p) break;
        char *end;
        if (!isdigit((unsigned char)*p))
            die(2, "--prompt '%s': expected token ids (integers in [0, %d)) separated by spaces "
                   "or commas", s, vocab);
        long v = strtol(p, &end, 10);
        if (v < 0 || v >= vocab)
            die(2, "--prompt '%s': id %ld is outside [0, %d)", s, v, vocab);
        if (n == cap) die(2, "--prompt has more than %d tokens", cap);
        out[n++] = (int32_t)v;
        p = end;
        if (*p && *p != ' ' && *p != ',' && *p != '\t')
            die(2, "--prompt '%s': unexpected character '%c'", s, *p);
    }
    return n;
}

/* Next token from logits [V]: greedy at temperature 0, else softmax(logits / T) over
 * the top_k largest (all if 0), in double. */
static int sample(const float *logits, int V, float temperature, int top_k, tt_rng *rng) {
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (temperature == 0.0f) return best;
    double *p = malloc((size_t)V * sizeof *p);
    if (!p) abort();
    float kth = -INFINITY; /* the k-th largest logit: keep logits >= kth */
    if (top_k > 0 && top_k < V) {
        float *sorted = malloc((size_t)V * sizeof *sorted);
        if (!sorted) abort();
        memcpy(sorted, logits, (size_t)V * sizeof *sorted);
        for (int k = 0; k < top_k; k++) { /* partial selection sort: k is small */
            int m = k;
            for (int i = k + 1; i < V; i++)
                if (sorted[i] > sorted[m]) m = i;
            float t = sorted[k];
            sorted[k] = sorted[m];
            sorted[m] = t;
        }
        kth = sorted[top_k - 1];
        free(sorted);
    }
    double z = 0;
    for (int i = 0; i < V; i++) {
        p[i] = logits[i] >= kth ? exp(((double)logits[i] - logits[best]) / temperature) : 0.0;
        z += p[i];
    }
    double u = tt_rng_uniform_f64(rng) * z, acc = 0;
    int pick = best;
    for (int i = 0; i < V; i++) {
        if (p[i] == 0) continue;
        acc += p[i];
        pick = i;
        if (u < acc) break;
    }
    free(p);
    return pick;
}

static void print_tokens(const int32_t *ids, int n, bool bytes) {
    if (bytes) {
        for (int i = 0; i < n; i++) {
            int c = ids[i];
            if (c == '\n' || c == '\t' || (c >= 32 && c < 127)) putchar(c);
            else printf("\\x%02x", c);
        }
    } else {
        for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
    }
}

typedef struct loaded {
    tt_dsv3 *model;        /* a seed checkpoint, else NULL                                   */
    tt_v3 *v3;             /* a --preset v3 checkpoint, else NULL                            */
    int vocab, max_seq;
    long step;
    corpus_kind kind;
    uint64_t data_seed;
    int train_seq;         /* window length it was trained on (positions beyond: untrained) */
} loaded;

/* The config and data description from the metadata, then the parameters. */
static void load_model(const char *path, loaded *ck) {
    tt_safetensors st;
    toyckpt_model cfg;
    char err[1024], why[128];
    if (toyckpt_open(path, &st, &cfg, err, sizeof err) != 0) die(1, "%s", err);
    if (toyckpt_verify(path, &st, err, sizeof err) != 0) die(1, "%s", err);
    const char *kind = toyckpt_meta(path, &st, "data.kind", err, sizeof err);
    const char *seed = kind ? toyckpt_meta(path, &st, "data.seed", err, sizeof err) : NULL;
    if (!kind || !seed) die(1, "%s", err);
    int s;
    if (flags_parse_int(seed, 0, 2147483647, &s, why, sizeof why) != 0)
        die(1, "'%s' is corrupt: metadata data.seed = '%s': %s", path, seed, why);
    ck->data_seed = (uint64_t)s;
    ck->kind = !strcmp(kind, "bytes") ? CORPUS_BYTES : CORPUS_SYNTHETIC;
    const char *tseq = toyckpt_meta(path, &st, "train.seq", err, sizeof err);
    if (!tseq || flags_parse_int(tseq, 2, 1 << 20, &ck->train_seq, why, sizeof why) != 0)
        die(1, "'%s' is corrupt: metadata train.seq: %s", path, tseq ? why : err);
    tt_safetensors_free(&st);
    tt_params *params;
    ck->model = NULL, ck->v3 = NULL;
    if (cfg.preset == TOYCKPT_V3) {
        ck->v3 = tt_v3_new(&cfg.v3, 0.0f); /* every value comes from the file */
        if (!ck->v3) die(1, "'%s': %s", path, tt_last_error());
        params = &ck->v3->params;
        ck->vocab = cfg.v3.vocab_size, ck->max_seq = cfg.v3.max_seq_len;
    } else {
        ck->model = tt_dsv3_new(&cfg.seed);
        if (!ck->model) die(1, "'%s': %s", path, tt_last_error());
        params = &ck->model->params;
        ck->vocab = cfg.seed.vocab, ck->max_seq = cfg.seed.max_seq;
    }
    if (tt_checkpoint_load(path, params, NULL, &ck->step, NULL, NULL) != TT_OK)
        die(1, "cannot load the model: %s", tt_last_error());
}

/* The cache of either model. */
typedef struct any_cache {
    tt_dsv3_cache seed;
    tt_v3_cache v3;
} any_cache;

static tt_tensor *forward_cached(loaded *ck, tt_tensor *ids, any_cache *c) {
    return ck->v3 ? tt_v3_forward_cached(ck->v3, ids, &c->v3)
                  : tt_dsv3_forward_cached(ck->model, ids, &c->seed);
}

static int cached_tokens(const loaded *ck, const any_cache *c) {
    return ck->v3 ? c->v3.len : c->seed.layers[0].len;
}

static const char *ABOUT =
    "Sample from a checkpoint written by train_toy (either preset), decoding with the\n"
    "model's KV cache of compressed latents (tt_dsv3_forward_cached, or for v3 models\n"
    "tt_v3_forward_cached in absorb form). Prints the tokens, the cache size per\n"
    "token next to what full K and V would take, and with --check verifies that cached\n"
    "decoding gives the same logits as recomputing the whole sequence.";
static const char *FOOTER =
    "Prompts: token ids (\"3 14 15\") for id models, text for byte models (--data runs).\n"
    "Without --prompt a synthetic-source model starts from two tokens of its source.\n"
    "Exit codes: 0 done, 1 unreadable/corrupt checkpoint or --check failed (max abs\n"
    "difference > 1e-4), 2 bad command line.";

int main(int argc, char **argv) {
    const char *load = NULL, *prompt = NULL;
    int tokens = 30, top_k = 0, seed = 1, threads = 0;
    float temperature = 1.0f;
    bool check = false;
    flag table[] = {
        FLAG_STRING("load", &load, "FILE", "checkpoint written by train_toy --save (required)"),
        FLAG_INT("tokens", &tokens, 0, 100000, "N", "tokens to generate"),
        FLAG_FLOAT("temperature", &temperature, 0, 100, "X", "sampling temperature (0: greedy)"),
        FLAG_INT("top-k", &top_k, 0, 100000, "K", "sample among the K most likely (0: all)"),
        FLAG_INT("seed", &seed, 0, 2147483647, "S", "sampling seed"),
        FLAG_STRING("prompt", &prompt, "TEXT", "token ids, or text for byte models"),
        FLAG_BOOL("check", &check, "compare cached logits with a full recomputation"),
        FLAG_INT("threads", &threads, 0, 1024, "N", "OpenMP threads (0: OMP_NUM_THREADS, else 1)"),
    };
    const int n_flags = (int)(sizeof table / sizeof table[0]);
    flags_usage usage = {"generate", "--load FILE [flags]", ABOUT, FOOTER};
    int rc = flags_parse(table, n_flags, argc, argv, &usage);
    if (rc == FLAGS_HELP) return 0;
    if (rc != FLAGS_OK) return 2;
    if (!load) {
        fprintf(stderr, "generate: error: --load FILE is required\n(run 'generate --help' for the list of flags)\n");
        return 2;
    }
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads); /* default 1: see train_toy.c */
    else if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(1);
#endif

    loaded ck;
    load_model(load, &ck);
    const int vocab = ck.vocab, max_seq = ck.max_seq;
    const bool bytes = vocab == 256 && ck.kind == CORPUS_BYTES;

    /* the prompt */
    int32_t *seq = calloc((size_t)max_seq + 1, sizeof *seq);
    if (!seq) abort();
    int n_prompt = 0;
    if (prompt && bytes) {
        size_t len = strlen(prompt);
        if ((long)len > max_seq) die(2, "--prompt is %zu bytes, the model sees at most %d", len, max_seq);
        for (size_t i = 0; i < len; i++) seq[n_prompt++] = (unsigned char)prompt[i];
    } else if (prompt) {
        n_prompt = parse_ids(prompt, vocab, seq, max_seq);
    } else if (ck.kind == CORPUS_SYNTHETIC) {
        corpus src;
        corpus_synthetic(&src, ck.data_seed);
        int32_t w[2], wt[2];
        corpus_window(&src, CORPUS_HELDOUT, (uint64_t)seed, 2, w, wt);
        seq[n_prompt++] = w[0];
        seq[n_prompt++] = w[1];
    } else {
        seq[n_prompt++] = bytes ? '\n' : 0;
    }
    if (n_prompt == 0) die(2, "--prompt is empty");
    if (n_prompt + tokens > max_seq) {
        int fit = max_seq - n_prompt;
        fprintf(stderr, "generate: note: the model has %d positions; generating %d tokens, not %d\n",
                max_seq, fit, tokens);
        tokens = fit;
    }
    const int total = n_prompt + tokens;
    if (total > ck.train_seq)
        fprintf(stderr, "generate: note: the model was trained on windows of %d tokens; positions "
                        "%d..%d %s\n", ck.train_seq, ck.train_seq, total - 1,
                ck.v3 ? "are longer than any it saw (RoPE)"
                      : "use position embeddings it never trained");

    /* the cache and the decoding loop; logits of every fed position kept for --check */
    const int V = vocab;
    float *cached_logits = malloc((size_t)total * V * sizeof *cached_logits);
    if (!cached_logits) abort();
    any_cache cache;
    memset(&cache, 0, sizeof cache);
    if (ck.v3) {
        tt_v3_cache_init(&cache.v3, ck.v3, total);
    } else {
        tt_dsv3_cache_init(&cache.seed, ck.model, total);
        ck.model->training = false;
    }
    tt_rng rng;
    tt_rng_seed(&rng, (uint64_t)seed);
    tt_tensor *prompt_ids = tt_from_ids(TT_SHAPE(1, n_prompt), seq);
    tt_tensor *one = tt_tensor_new(TT_I32, TT_SHAPE(1, 1));
    double t0 = progress_now();
    tt_tensor *lg = forward_cached(&ck, prompt_ids, &cache);
    memcpy(cached_logits, lg->data, (size_t)n_prompt * V * sizeof(float));
    int fed = n_prompt;
    double logp_sum = 0;
    for (int k = 0; k < tokens; k++) {
        const float *last = cached_logits + (size_t)(fed - 1) * V;
        int next = sample(last, V, temperature, top_k, &rng);
        /* log-probability of the choice under the model (temperature 1) */
        double mx = last[0], z = 0;
        for (int i = 1; i < V; i++) if (last[i] > mx) mx = last[i];
        for (int i = 0; i < V; i++) z += exp(last[i] - mx);
        logp_sum += last[next] - mx - log(z);
        seq[fed] = next;
        tt_tape_reset();
        if (k + 1 == tokens && !check) { fed++; break; }
        tt_ids(one)[0] = next;
        lg = forward_cached(&ck, one, &cache);
        memcpy(cached_logits + (size_t)fed * V, lg->data, (size_t)V * sizeof(float));
        fed++;
    }
    double dt = progress_now() - t0;
    tt_tape_reset();

    if (ck.v3)
        printf("model: %s (v3: vocab_size %d, dim %d, %d layers, kv_lora_rank %d, "
               "qk_rope_head_dim %d), step %ld\n", load, vocab, ck.v3->cfg.dim,
               ck.v3->cfg.n_layers, ck.v3->cfg.kv_lora_rank, ck.v3->cfg.qk_rope_head_dim, ck.step);
    else
        printf("model: %s (vocabulary %d, hidden %d, %d layers, MLA rank %d), step %ld\n", load,
               vocab, ck.model->cfg.dim, ck.model->cfg.n_layers, ck.model->cfg.rank, ck.step);
    printf("prompt (%d tokens): ", n_prompt);
    print_tokens(seq, n_prompt, bytes);
    printf("\ngenerated (%d tokens, temperature %g", tokens, temperature);
    if (top_k) printf(", top-k %d", top_k);
    printf(", seed %d):\n", seed);
    print_tokens(seq + n_prompt, tokens, bytes);
    printf("\n");
    if (tokens > 0) printf("mean log-probability of the sampled tokens: %.4f nats\n", logp_sum / tokens);
    if (ck.kind == CORPUS_SYNTHETIC && vocab == CORPUS_VOCAB) {
        int ok = 0, n = 0;
        for (int t = n_prompt; t < total; t++) {
            if (t < 2) continue;
            n++;
            ok += corpus_allowed(seq[t - 2], seq[t - 1], seq[t]);
        }
        printf("generated tokens the source could have emitted after their two predecessors: %d/%d\n",
               ok, n);
    }
    const int n_cached = cached_tokens(&ck, &cache);
    if (ck.v3) {
        const tt_v3_config *c = &ck.v3->cfg;
        const int L = c->n_layers, H = c->n_heads, dn = c->qk_nope_head_dim,
                  dr = c->qk_rope_head_dim, dv = c->v_head_dim;
        const long latent_b = (long)L * (c->kv_lora_rank + dr) * 4,
                   full_b = (long)L * H * (dn + dr + dv) * 4;
        printf("KV cache (absorb form): %ld bytes/token (%d layers x (kv_lora_rank %d + "
               "qk_rope_head_dim %d) x 4 B) vs %ld bytes/token for full K/V per head (%d layers x "
               "%d heads x (%d + %d + %d) x 4 B): %.1fx smaller; %d tokens cached = %ld bytes\n",
               latent_b, L, c->kv_lora_rank, dr, full_b, L, H, dn, dr, dv,
               (double)full_b / (double)latent_b, n_cached, latent_b * n_cached);
    } else {
        const tt_dsv3_config *c = &ck.model->cfg;
        const long latent_b = (long)c->n_layers * c->rank * 4, full_b = 2L * c->n_layers * c->dim * 4;
        printf("KV cache: %ld bytes/token (%d layers x rank %d x 4 B) vs %ld bytes/token for full K/V "
               "(2 x %d layers x %d x 4 B): %.1fx smaller; %d tokens cached = %ld bytes\n",
               latent_b, c->n_layers, c->rank, full_b, c->n_layers, c->dim,
               (double)full_b / (double)latent_b, n_cached, latent_b * n_cached);
    }
    printf("decoding: %.1f tokens/s with the cache\n", dt > 0 ? (double)tokens / dt : 0.0);

    int status = 0;
    if (check) {
        /* the whole sequence at once, no cache: logits of every position */
        int n_full = fed;
        tt_tensor *all = tt_from_ids(TT_SHAPE(1, n_full), seq);
        tt_no_grad_begin();
        const float *full = ck.v3 ? tt_v3_forward(ck.v3, all, NULL, 0.0f).logits->data
                                  : tt_dsv3_forward(ck.model, all, NULL).logits->data;
        tt_no_grad_end();
        double maxdiff = 0;
        for (size_t i = 0; i < (size_t)n_full * V; i++) {
            double d = fabs((double)full[i] - cached_logits[i]);
            if (!(d <= maxdiff)) maxdiff = d; /* NaN counts as a difference */
        }
        tt_tape_reset();
        tt_free(all);
        bool pass = maxdiff <= CHECK_TOL;
        printf("check: cached vs full recomputation over %d positions x %d logits: max abs diff "
               "%.3g (tolerance %.0e) %s\n", n_full, V, maxdiff, CHECK_TOL, pass ? "OK" : "FAILED");
        if (!pass) status = 1;
    }

    tt_free(prompt_ids);
    tt_free(one);
    if (ck.v3) {
        tt_v3_cache_free(&cache.v3);
        tt_v3_free(ck.v3);
    } else {
        tt_dsv3_cache_free(&cache.seed);
        tt_dsv3_free(ck.model);
    }
    free(cached_logits);
    free(seq);
    return status;
}

/* corpus.c - the synthetic source, byte files, and the (seed, step)-pure batch sampler. */
#include "corpus.h"

#include "rng.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int corpus_colour(int c) { return (c >> 1) & 1; }

static int mod_v(int x, int v) {
    int m = x % v;
    return m < 0 ? m + v : m;
}

void corpus_candidates(int a, int b, int out[CORPUS_CHOICES]) {
    int n = 0;
    for (int k = 0; k < CORPUS_WINDOW; k++) {
        int c = mod_v(a + k, CORPUS_VOCAB);
        if (corpus_colour(c) == (b & 1)) out[n++] = c;
    }
    /* 8 consecutive tokens hold exactly 4 of each colour (period 4, 4 | V) */
    if (n != CORPUS_CHOICES) abort();
}

int corpus_allowed(int a, int b, int c) {
    int cand[CORPUS_CHOICES];
    corpus_candidates(a, b, cand);
    for (int i = 0; i < CORPUS_CHOICES; i++)
        if (cand[i] == c) return 1;
    return 0;
}

/* Uniform over the pairs with colour(b) = parity(a). Stationary, because the inflow to
 * a valid pair (b, c) is sum_a pi(a, b) P(c | a, b) = (number of a in c-7..c with
 * parity(a) = colour(b), which is 4) * pi * 1/4 = pi, and invalid pairs get none. */
double corpus_pair_prob(int a, int b) {
    return corpus_colour(b) == (a & 1) ? 1.0 / (CORPUS_VOCAB * (CORPUS_VOCAB / 2)) : 0.0;
}

/* -sum_{a,b} pi(a,b) sum_c P(c|a,b) ln P(c|a,b) */
double corpus_entropy_rate(void) {
    double h = 0.0;
    for (int a = 0; a < CORPUS_VOCAB; a++)
        for (int b = 0; b < CORPUS_VOCAB; b++) {
            double pab = corpus_pair_prob(a, b);
            if (pab == 0) continue;
            for (int i = 0; i < CORPUS_CHOICES; i++)
                h -= pab * (1.0 / CORPUS_CHOICES) * log(1.0 / CORPUS_CHOICES);
        }
    return h;
}

/* P(c | b) = sum_a pi(a, b) P(c | a, b) / pi(b);  H = -sum_{b,c} pi(b) P(c|b) ln P(c|b) */
double corpus_bigram_entropy(void) {
    const int V = CORPUS_VOCAB;
    double h = 0.0, pc[CORPUS_VOCAB];
    for (int b = 0; b < V; b++) {
        double pb = 0;
        memset(pc, 0, sizeof pc);
        for (int a = 0; a < V; a++) {
            double pab = corpus_pair_prob(a, b);
            if (pab == 0) continue;
            pb += pab;
            int cand[CORPUS_CHOICES];
            corpus_candidates(a, b, cand);
            for (int i = 0; i < CORPUS_CHOICES; i++) pc[cand[i]] += pab / CORPUS_CHOICES;
        }
        for (int c = 0; c < V; c++)
            if (pc[c] > 0) h -= pc[c] * log(pc[c] / pb);
    }
    return h;
}

/* the marginal of the stationary pair distribution */
double corpus_unigram_entropy(void) {
    const int V = CORPUS_VOCAB;
    double h = 0.0;
    for (int b = 0; b < V; b++) {
        double pb = 0;
        for (int a = 0; a < V; a++) pb += corpus_pair_prob(a, b);
        if (pb > 0) h -= pb * log(pb);
    }
    return h;
}

void corpus_synthetic(corpus *c, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->kind = CORPUS_SYNTHETIC;
    c->vocab = CORPUS_VOCAB;
    c->unscored = 1;
    c->seed = seed;
    snprintf(c->source, sizeof c->source, "synthetic");
    c->floor = corpus_entropy_rate();
    c->bigram = corpus_bigram_entropy();
    c->unigram = corpus_unigram_entropy();
}

/* Held-out cross-entropy (nats) of add-one-smoothed unigram and bigram byte models
 * fitted on the training part: what a model without attention can reach. */
static void byte_baselines(corpus *c) {
    double *uni = calloc(256, sizeof *uni), *bi = calloc(256 * 256, sizeof *bi);
    double *row = calloc(256, sizeof *row);
    if (!uni || !bi || !row) abort();
    for (size_t i = 0; i < c->n_train; i++) uni[c->bytes[i]] += 1;
    for (size_t i = 1; i < c->n_train; i++) {
        bi[c->bytes[i - 1] * 256 + c->bytes[i]] += 1;
        row[c->bytes[i - 1]] += 1;
    }
    double hu = 0, hb = 0;
    size_t m = 0;
    for (size_t i = c->n_train + 1; i < c->n; i++, m++) {
        int p = c->bytes[i - 1], x = c->bytes[i];
        hu -= log((uni[x] + 1) / ((double)c->n_train + 256));
        hb -= log((bi[p * 256 + x] + 1) / (row[p] + 256));
    }
    c->unigram = m ? hu / (double)m : 0;
    c->bigram = m ? hb / (double)m : 0;
    free(uni);
    free(bi);
    free(row);
}

int corpus_from_file(corpus *c, const char *path, int seq, uint64_t seed, char *err,
                     size_t errlen) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open --data file '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) abort();
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) abort();
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int read_error = ferror(f);
    fclose(f);
    if (read_error) {
        free(buf);
        snprintf(err, errlen, "error reading --data file '%s'", path);
        return -1;
    }
    size_t window = (size_t)seq + 1, held = n / 10;
    if (held < window) held = window;
    if (n == 0 || n < held + window) {
        free(buf);
        snprintf(err, errlen,
                 "--data file '%s' is %s (%zu bytes): with --seq %d it needs at least %zu "
                 "bytes (one window of %zu to train on and one held out)",
                 path, n == 0 ? "empty" : "too short", n, seq, 2 * window, window);
        return -1;
    }
    c->kind = CORPUS_BYTES;
    c->vocab = 256;
    c->unscored = 0;
    c->seed = seed;
    c->bytes = buf;
    c->n = n;
    c->n_train = n - held;
    snprintf(c->source, sizeof c->source, "%s", path);
    byte_baselines(c);
    return 0;
}

void corpus_free(corpus *c) {
    free(c->bytes);
    c->bytes = NULL;
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* the random stream that owns window `index` of `split` */
static void window_rng(const corpus *c, corpus_split split, uint64_t index, tt_rng *r) {
    uint64_t h = mix64(c->seed + 0x9E3779B97F4A7C15ull * (uint64_t)(split + 1));
    h = mix64(h ^ (index * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull));
    tt_rng_seed(r, h);
}

void corpus_window(const corpus *c, corpus_split split, uint64_t index, int T, int32_t *ids,
                   int32_t *targets) {
    tt_rng r;
    window_rng(c, split, index, &r);
    if (c->kind == CORPUS_SYNTHETIC) {
        /* (a, b) from the stationary distribution: a uniform, b uniform over the 50
         * tokens 4k + 2 parity(a) + {0, 1} */
        int a = (int)tt_rng_below(&r, CORPUS_VOCAB);
        int b = 4 * (int)tt_rng_below(&r, CORPUS_VOCAB / 4) + 2 * (a & 1) +
                (int)tt_rng_below(&r, 2);
        ids[0] = a;
        if (T > 1) ids[1] = b;
        targets[0] = b;
        for (int t = 1; t < T; t++) {
            int cand[CORPUS_CHOICES];
            corpus_candidates(a, b, cand);
            int x = cand[tt_rng_below(&r, CORPUS_CHOICES)];
            targets[t] = x;
            if (t + 1 < T) ids[t + 1] = x;
            a = b;
            b = x;
        }
    } else {
        size_t lo = split == CORPUS_TRAIN ? 0 : c->n_train;
        size_t hi = split == CORPUS_TRAIN ? c->n_train : c->n;
        size_t starts = hi - lo - (size_t)T; /* windows of T + 1 bytes fit: checked at load */
        size_t s = lo + (size_t)(tt_rng_u64(&r) % starts);
        for (int t = 0; t < T; t++) {
            ids[t] = c->bytes[s + (size_t)t];
            targets[t] = c->bytes[s + (size_t)t + 1];
        }
    }
    for (int t = 0; t < c->unscored && t < T; t++) targets[t] = CORPUS_IGNORE;
}

void corpus_batch(const corpus *c, corpus_split split, long step, int B, int T, int32_t *ids,
                  int32_t *targets) {
    for (int b = 0; b < B; b++)
        corpus_window(c, split, (uint64_t)step * (uint64_t)B + (uint64_t)b, T,
                      ids + (size_t)b * T, targets + (size_t)b * T);
}

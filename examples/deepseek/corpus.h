/* corpus.h - what the toy model reads: a synthetic source whose entropy rate is known
 * exactly, or the bytes of any file.
 *
 * The synthetic source (vocabulary V = 100). With a = x_{t-2} and b = x_{t-1}:
 *
 *     x_t is uniform over the four tokens c in {a, a+1, ..., a+7} (mod V) whose
 *     colour (c >> 1) & 1 equals the parity of b.
 *
 * The colours run 0 0 1 1 0 0 1 1 ... (period 4, and 4 divides V), so any 8 consecutive
 * tokens hold exactly four of each colour, one even and one odd in each pair.
 * Facts the program prints and the tests check:
 *   - Given the two previous tokens there are always exactly 4 equally likely next
 *     tokens: H(x_t | x_{t-2}, x_{t-1}) = ln 4 = 1.3863 nats, the floor.
 *   - The next token needs both: a fixes the window of 8, b (its parity) which half of
 *     it. a is two positions back, so attention has to fetch it.
 *   - The pair (a, b) is stationary when a is uniform and b uniform over the 50 tokens
 *     whose colour is the parity of a (the balance is checked in corpus_bigram_entropy's
 *     comment and by power iteration in the tests). Windows start from this
 *     distribution, so every position is stationary.
 *   - A bigram model sees only b: a is then uniform over 50 tokens, and the next token
 *     uniform over the 50 tokens of colour parity(b): H(x_t | x_{t-1}) = ln 50 = 3.9120.
 *     Unigram: ln V = 4.6052. Both are computed by enumeration, not assumed.
 *   - The rule is a product of a window around a and a colour chosen by b, i.e. the
 *     ideal log-probabilities are a sum of a term in a and a term in b: exactly what a
 *     linear head over the residual stream (token embedding + attention output) can
 *     represent, which keeps it learnable by plain SGD within a minute.
 *
 * Batches are a pure function of (seed, split, step, row): a window is generated (or cut
 * from the file) by its own random stream, so a resumed run sees exactly the windows the
 * uninterrupted run would have seen, and nothing but the step needs saving.
 */
#ifndef DS_CORPUS_H
#define DS_CORPUS_H

#include <stddef.h>
#include <stdint.h>

#define CORPUS_VOCAB 100          /* the synthetic source's alphabet (the model card) */
#define CORPUS_IGNORE (-100)      /* target value of positions that are not scored     */

typedef enum corpus_kind { CORPUS_SYNTHETIC = 0, CORPUS_BYTES = 1 } corpus_kind;
typedef enum corpus_split { CORPUS_TRAIN = 0, CORPUS_HELDOUT = 1 } corpus_split;

typedef struct corpus {
    corpus_kind kind;
    int vocab;             /* 100 (synthetic) or 256 (bytes)                          */
    int unscored;          /* leading target positions of a window without full context
                              (synthetic: 1, the target x_1 has only x_0 before it)   */
    uint64_t seed;
    unsigned char *bytes;  /* CORPUS_BYTES: the file; [0, n_train) trains,            */
    size_t n, n_train;     /*   [n_train, n) is held out                              */
    char source[256];      /* "synthetic" or the file name                             */
    /* Reference scores in nats per token (exact for the synthetic source; for bytes the
     * held-out cross-entropy of add-one-smoothed models fitted on the training part). */
    double floor;          /* entropy rate (synthetic); 0 = unknown (bytes)            */
    double bigram;         /* best model that sees only the previous token             */
    double unigram;        /* best model that sees no context                          */
} corpus;

/* The synthetic source, its windows drawn from streams derived from seed. */
void corpus_synthetic(corpus *c, uint64_t seed);
/* Bytes of a file as tokens (vocabulary 256). The last tenth (at least seq + 1 bytes) is
 * held out. Returns 0, or -1 with a message in err (missing, empty or too short). */
int corpus_from_file(corpus *c, const char *path, int seq, uint64_t seed, char *err,
                     size_t errlen);
void corpus_free(corpus *c);

/* One window of T inputs and T targets (targets[t] = the token after ids[t]); the first
 * c->unscored targets are CORPUS_IGNORE. Pure function of (seed, split, index). */
void corpus_window(const corpus *c, corpus_split split, uint64_t index, int T, int32_t *ids,
                   int32_t *targets);
/* B windows for a training (or evaluation) step: row b is window step * B + b. ids and
 * targets are [B, T] row-major. */
void corpus_batch(const corpus *c, corpus_split split, long step, int B, int T, int32_t *ids,
                  int32_t *targets);

/* The synthetic rule. */
#define CORPUS_WINDOW 8      /* x_t lies in x_{t-2} + [0, 8)                              */
#define CORPUS_CHOICES 4     /* of which 4 have the right colour                          */
int corpus_colour(int c);                       /* (c >> 1) & 1                          */
/* The 4 tokens the source may emit after a, b, in increasing offset from a. */
void corpus_candidates(int a, int b, int out[CORPUS_CHOICES]);
/* Whether the source can emit c after a, b. */
int corpus_allowed(int a, int b, int c);
/* Stationary probability of the pair (x_{t-2}, x_{t-1}) = (a, b): 1/(V * 50) or 0. */
double corpus_pair_prob(int a, int b);
/* Exact entropies in nats by enumeration over the stationary pair distribution. */
double corpus_entropy_rate(void);               /* H(x_t | x_{t-2}, x_{t-1}) = ln 4      */
double corpus_bigram_entropy(void);             /* H(x_t | x_{t-1}) = ln 50              */
double corpus_unigram_entropy(void);            /* H(x_t) = ln 100                       */

#endif

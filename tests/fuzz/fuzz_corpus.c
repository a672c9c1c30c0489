/* fuzz_corpus.c - libFuzzer harness for the text-data loader of the examples
 * (examples/deepseek/corpus.h: corpus_from_file, corpus_window).
 *
 * Input: byte 0 picks the window length seq (1..64), the rest is the --data file. The
 * loader must accept it or fail with a message; an accepted corpus must yield windows
 * of byte tokens in [0, 256) with targets that are the next byte, from both splits. */
#include "fuzz.h"

#include "../../examples/deepseek/corpus.h"

#include <string.h>
#include <unistd.h>

static const char *fuzz_corpus_path(void) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/tt_fuzz_corpus.%ld", (long)getpid());
    return path;
}

int tt_fuzz_corpus(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int seq = 1 + data[0] % 64;
    const char *path = fuzz_corpus_path();
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t n = size - 1;
    if (n && fwrite(data + 1, 1, n, f) != n) {
        fclose(f);
        return 0;
    }
    fclose(f);
    corpus c;
    char err[512] = "";
    if (corpus_from_file(&c, path, seq, 7, err, sizeof err) == 0) {
        TT_FUZZ_ASSERT(c.vocab == 256 && c.n == n && c.n_train < c.n);
        TT_FUZZ_ASSERT(c.n_train >= (size_t)seq + 1 && c.n - c.n_train >= (size_t)seq + 1);
        int32_t ids[64], tg[64];
        for (int split = 0; split < 2; split++)
            for (uint64_t w = 0; w < 3; w++) {
                corpus_window(&c, (corpus_split)split, w * 977, seq, ids, tg);
                for (int t = 0; t < seq; t++) {
                    TT_FUZZ_ASSERT(ids[t] >= 0 && ids[t] < 256);
                    TT_FUZZ_ASSERT(tg[t] >= 0 && tg[t] < 256);
                    if (t + 1 < seq) TT_FUZZ_ASSERT(tg[t] == ids[t + 1]);
                }
            }
        corpus_free(&c);
    } else {
        TT_FUZZ_ASSERT(err[0] != 0);
    }
    unlink(path);
    return 0;
}

TT_FUZZ_ENTRY(tt_fuzz_corpus)

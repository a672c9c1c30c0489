/* v3_logits.c - run a DeepSeek-V3 checkpoint (official parameter names, fp32
 * safetensors) on given token ids and write the logits of every position.
 *
 *   v3_logits --ckpt model.safetensors [--config config.json] --ids 1,2,3 [--ids 4,5,6]
 *             --out logits.safetensors
 *
 * Without --config the ModelArgs JSON is read from the checkpoint's "config" metadata
 * (tinyTorch-C writes it there). Each --ids is one sequence; all must have the same
 * length. The output holds "input.ids" I32 [B, S] and "logits" F32 [B, S, V], so a
 * PyTorch script can compare them with the official model's.
 */
#include "tinytorch.h"
#include "io/safetensors.h"
#include "nn/v3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEQS 64

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s --ckpt FILE [--config FILE] --ids I,J,... [--ids ...] --out FILE\n",
            argv0);
}

/* "1,2,3" -> ids (malloc'ed), returns the count or -1 on a malformed list. */
static int parse_ids(const char *s, int32_t **out) {
    int n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    const char *p = s;
    for (int i = 0; i < n; i++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 0x7fffffff || (*end != ',' && *end != 0)) {
            free(ids);
            return -1;
        }
        ids[i] = (int32_t)v;
        p = end + (*end == ',');
    }
    *out = ids;
    return n;
}

int main(int argc, char **argv) {
    const char *ckpt = NULL, *config = NULL, *out = NULL;
    int32_t *seqs[MAX_SEQS];
    int lens[MAX_SEQS], B = 0;
    for (int i = 1; i < argc; i += 2) { /* flag value pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage(argv[0]);
            return 2;
        }
        if (!strcmp(a, "--ckpt")) ckpt = v;
        else if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--ids")) {
            if (B == MAX_SEQS || (lens[B] = parse_ids(v, &seqs[B])) < 0) {
                fprintf(stderr, "v3_logits: bad --ids '%s' (comma-separated token ids, at most "
                        "%d sequences)\n", v, MAX_SEQS);
                return 2;
            }
            B++;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (!ckpt || !out || B == 0) {
        usage(argv[0]);
        return 2;
    }
    for (int b = 1; b < B; b++)
        if (lens[b] != lens[0]) {
            fprintf(stderr, "v3_logits: sequence %d has %d tokens, sequence 0 has %d\n", b,
                    lens[b], lens[0]);
            return 2;
        }
    tt_v3 *m = tt_v3_load(ckpt, config);
    if (!m) {
        fprintf(stderr, "v3_logits: %s\n", tt_last_error());
        return 1;
    }
    const int S = lens[0];
    tt_tensor *ids = tt_tensor_new(TT_I32, TT_SHAPE(B, S));
    for (int b = 0; b < B; b++) memcpy(tt_ids(ids) + (size_t)b * S, seqs[b], (size_t)S * 4);
    tt_set_name(ids, "input.ids");
    for (size_t k = 0; k < ids->size; k++)
        if (tt_ids(ids)[k] >= m->cfg.vocab_size) {
            fprintf(stderr, "v3_logits: token %d is outside [0, vocab_size = %d)\n",
                    tt_ids(ids)[k], m->cfg.vocab_size);
            return 2;
        }
    if (S > m->cfg.max_seq_len) {
        fprintf(stderr, "v3_logits: %d tokens exceed max_seq_len = %d\n", S, m->cfg.max_seq_len);
        return 2;
    }
    tt_no_grad_begin();
    tt_tensor *logits = tt_v3_forward(m, ids, NULL, 0.0f).logits;
    tt_no_grad_end();
    tt_set_name(logits, "logits");
    tt_tensor *save[2] = {ids, logits};
    tt_kv meta[1] = {{"checkpoint", ckpt}};
    int rc = 0;
    if (tt_safetensors_save(out, 2, save, 1, meta) != TT_OK) {
        fprintf(stderr, "v3_logits: %s\n", tt_last_error());
        rc = 1;
    } else {
        printf("v3_logits: wrote logits [%d, %d, %d] to %s\n", B, S, m->cfg.vocab_size, out);
    }
    tt_tape_reset();
    tt_free(ids);
    tt_v3_free(m);
    for (int b = 0; b < B; b++) free(seqs[b]);
    return rc;
}

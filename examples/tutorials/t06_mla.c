/* t06_mla.c - companion program of docs/tutorials/06-multi-head-latent-attention.md.
 *
 *   1. the size of the KV cache: full K and V against MLA's latent, toy and DeepSeek-V3
 *   2. low rank: the keys of 32 tokens have rank r + 1, not dim
 *   3. the absorb trick: scores and outputs computed against the cached latent directly
 *   4. RoPE: why a rotated key cannot be absorbed, and V3's decoupled k_pe
 *   5. incremental decoding with tt_mla_cache equals the full forward
 * Its output is quoted in the tutorial (tests/check_tutorials.sh keeps them in sync).
 *
 *   make && build/examples/tutorials/t06_mla [cache | rank | absorb | rope | decode]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops_rope.h"
#include "tinytorch.h"

#define DIM 64
#define HEADS 4
#define HD (DIM / HEADS) /* head dim 16 */
#define RANK 8
#define T 12

static float max_diff(const tt_tensor *a, const tt_tensor *b) {
    float m = 0.0f;
    for (size_t i = 0; i < a->size; i++) m = fmaxf(m, fabsf(a->data[i] - b->data[i]));
    return m;
}

/* ---- 1. cache arithmetic ------------------------------------------------------------------ */

static void cache_sizes(void) {
    printf("== 1. KV cache per token and layer (fp32, 4 bytes per number)\n");
    /* the toy model of tt_dsv3_config_toy: dim 64, 4 heads of 16, rank 16, 2 layers */
    int H = 4, dh = 16, r = 16;
    printf("toy:  full K and V 2 * %d heads * %d = %d floats = %d bytes; latent r = %d floats = "
           "%d bytes (%dx smaller)\n",
           H, dh, 2 * H * dh, 2 * H * dh * 4, r, r * 4, 2 * H * dh / r);
    /* DeepSeek-V3 671B: 128 heads, qk_nope 128, qk_rope 64, v 128, kv_lora_rank 512, 61 layers */
    const long H3 = 128, dn = 128, dr = 64, dv = 128, rkv = 512, L3 = 61;
    const long mha = H3 * (128 + 128);     /* plain multi-head attention, head dim 128 */
    const long mha_pe = H3 * (dn + dr + dv); /* V3's heads cached in full: K 192, V 128    */
    const long mla = rkv + dr;             /* latent c + the shared k_pe                */
    printf("V3:   MHA with head dim 128: 128 * (128 + 128) = %ld floats = %ld bytes\n", mha,
           mha * 4);
    printf("      V3's own heads in full: 128 * (128 + 64 + 128) = %ld floats = %ld bytes\n",
           mha_pe, mha_pe * 4);
    printf("      MLA: kv_lora_rank 512 + k_pe 64 = %ld floats = %ld bytes (%.1fx / %.1fx smaller)\n",
           mla, mla * 4, (double)mha / mla, (double)mha_pe / mla);
    const double ctx = 131072.0, gib = 1024.0 * 1024.0 * 1024.0;
    printf("      61 layers, 128K tokens of context: MHA %.0f GiB, MLA %.1f GiB (bf16: half)\n",
           mha * 4.0 * L3 * ctx / gib, mla * 4.0 * L3 * ctx / gib);
}

/* ---- 2. low rank ----------------------------------------------------------------------------- */

/* Numerical rank of the rows of a [n, m] matrix: Gram-Schmidt in double, a row counts when
 * its residual keeps more than 1e-4 of its norm. */
static int numerical_rank(const float *a, int n, int m) {
    double *basis = calloc((size_t)n * m, sizeof *basis), *v = malloc((size_t)m * sizeof *v);
    int rank = 0;
    for (int i = 0; i < n; i++) {
        double norm0 = 0.0, norm = 0.0;
        for (int j = 0; j < m; j++) norm0 += (v[j] = a[(size_t)i * m + j]) * (double)a[(size_t)i * m + j];
        for (int b = 0; b < rank; b++) {
            double dot = 0.0;
            for (int j = 0; j < m; j++) dot += v[j] * basis[(size_t)b * m + j];
            for (int j = 0; j < m; j++) v[j] -= dot * basis[(size_t)b * m + j];
        }
        for (int j = 0; j < m; j++) norm += v[j] * v[j];
        if (norm > 1e-8 * norm0 && norm > 0.0) {
            for (int j = 0; j < m; j++) basis[(size_t)rank * m + j] = v[j] / sqrt(norm);
            rank++;
        }
    }
    free(basis);
    free(v);
    return rank;
}

/* ---- 3. absorb -------------------------------------------------------------------------------- */

/* Head h of the up-projection kv_b_proj (weight [2 DIM, RANK], bias [2 DIM]): rows
 * [h HD, (h+1) HD) make K, rows [DIM + h HD, ...) make V. */
static tt_tensor *rows(tt_tensor *t, int start) { return tt_slice(t, 0, start, start + HD); }

static void absorb(const tt_mla *m, tt_tensor *x) {
    printf("== 3. absorb: attention against the cached latent c, without building K or V\n");
    const float scale = 1.0f / sqrtf((float)HD);
    tt_tensor *q = tt_linear_forward(&m->q_proj, x);    /* [1, T, DIM]  */
    tt_tensor *c = tt_linear_forward(&m->kv_a_proj, x); /* [1, T, RANK] the cache */
    tt_tensor *kv = tt_linear_forward(&m->kv_b_proj, c); /* [1, T, 2 DIM] naive: K and V */
    tt_tensor *W = m->kv_b_proj.weight, *b = tt_reshape(m->kv_b_proj.bias, TT_SHAPE(2 * DIM, 1));
    tt_tensor *o_naive[HEADS], *o_abs[HEADS];
    float d_scores = 0.0f, d_out = 0.0f;
    for (int h = 0; h < HEADS; h++) {
        tt_tensor *qh = tt_slice(q, 2, h * HD, (h + 1) * HD);          /* [1, T, HD] */
        tt_tensor *kh = tt_slice(kv, 2, h * HD, (h + 1) * HD);         /* [1, T, HD] */
        tt_tensor *vh = tt_slice(kv, 2, DIM + h * HD, DIM + (h + 1) * HD);
        tt_tensor *W_uk = rows(W, h * HD), *W_uv = rows(W, DIM + h * HD); /* [HD, RANK] */
        tt_tensor *b_k = rows(b, h * HD), *b_v = rows(b, DIM + h * HD);   /* [HD, 1]    */

        /* naive: s_ij = q_i . k_j with k_j = W_uk c_j + b_k */
        tt_tensor *s_naive = tt_scale(tt_matmul_nt(qh, kh), scale);     /* [1, T, T] */
        /* absorbed: s_ij = (W_uk^T q_i) . c_j + q_i . b_k */
        tt_tensor *q_abs = tt_matmul(qh, W_uk);                         /* [1, T, RANK] */
        tt_tensor *s_abs = tt_add(tt_matmul_nt(q_abs, c), tt_matmul(qh, b_k)); /* + [1, T, 1] */
        s_abs = tt_scale(s_abs, scale);
        d_scores = fmaxf(d_scores, max_diff(s_naive, s_abs));

        /* values: o_i = sum_j a_ij v_j = (sum_j a_ij c_j) W_uv^T + b_v  (rows of a sum to 1) */
        tt_tensor *a = tt_softmax(tt_causal_mask(s_naive));
        o_naive[h] = tt_matmul(a, vh);                                  /* [1, T, HD] */
        tt_tensor *ac = tt_matmul(a, c);                                /* [1, T, RANK] */
        o_abs[h] = tt_add(tt_matmul_nt(ac, W_uv), tt_reshape(b_v, TT_SHAPE(HD)));
        d_out = fmaxf(d_out, max_diff(o_naive[h], o_abs[h]));
        if (h == 0) {
            char s1[TT_SHAPE_STR_LEN], s2[TT_SHAPE_STR_LEN], s3[TT_SHAPE_STR_LEN];
            printf("head 0: q_i %s -> W_uk^T q_i %s, scored against c %s\n",
                   tt_shape_str(qh, s1), tt_shape_str(q_abs, s2), tt_shape_str(c, s3));
            printf("        s[5][0..5] naive    %.5f %.5f %.5f %.5f %.5f %.5f\n",
                   (double)s_naive->data[5 * T + 0], (double)s_naive->data[5 * T + 1],
                   (double)s_naive->data[5 * T + 2], (double)s_naive->data[5 * T + 3],
                   (double)s_naive->data[5 * T + 4], (double)s_naive->data[5 * T + 5]);
            printf("        s[5][0..5] absorbed %.5f %.5f %.5f %.5f %.5f %.5f\n",
                   (double)s_abs->data[5 * T + 0], (double)s_abs->data[5 * T + 1],
                   (double)s_abs->data[5 * T + 2], (double)s_abs->data[5 * T + 3],
                   (double)s_abs->data[5 * T + 4], (double)s_abs->data[5 * T + 5]);
        }
    }
    printf("all 4 heads: max |scores naive - absorbed| = %.1e, max |a V - (a c) W_uv^T - b_v| = %.1e\n",
           (double)d_scores, (double)d_out);
    tt_tensor *y_abs = tt_linear_forward(&m->o_proj, tt_concat(HEADS, o_abs, 2));
    tt_tensor *y_mod = tt_mla_forward(m, x);
    printf("absorbed attention through o_proj vs tt_mla_forward: max diff %.1e\n",
           (double)max_diff(y_abs, y_mod));
    tt_tape_reset();
}

/* ---- 4. RoPE ---------------------------------------------------------------------------------- */

/* cos, sin [P, D/2]: angle(p, k) = p * 10000^(-2k/D) */
static void rope_tables(int P, int D, tt_tensor **cos_t, tt_tensor **sin_t) {
    *cos_t = tt_zeros(TT_SHAPE(P, D / 2));
    *sin_t = tt_zeros(TT_SHAPE(P, D / 2));
    for (int p = 0; p < P; p++)
        for (int k = 0; k < D / 2; k++) {
            double ang = p * pow(10000.0, -2.0 * k / D);
            (*cos_t)->data[p * (D / 2) + k] = (float)cos(ang);
            (*sin_t)->data[p * (D / 2) + k] = (float)sin(ang);
        }
}

/* a . b of two [D] rows */
static float dot(const float *a, const float *b, int D) {
    float s = 0.0f;
    for (int i = 0; i < D; i++) s += a[i] * b[i];
    return s;
}

static void rope(const tt_mla *m, tt_tensor *x) {
    printf("== 4. RoPE: relative positions, and why the rotated key is not absorbable\n");
    const int DR = 8; /* the rope part of a head (V3: 64) */
    tt_manual_seed(9);
    tt_tensor *cs, *sn;
    rope_tables(64, HD, &cs, &sn);
    /* one query and one key vector placed at different positions (a sequence of length 1) */
    tt_tensor *qv = tt_rand_normal(TT_SHAPE(1, 1, HD), 0.0f, 1.0f);
    tt_tensor *kv = tt_rand_normal(TT_SHAPE(1, 1, HD), 0.0f, 1.0f);
    float s73 = dot(tt_rope(qv, cs, sn, 7)->data, tt_rope(kv, cs, sn, 3)->data, HD);
    float s2218 = dot(tt_rope(qv, cs, sn, 22)->data, tt_rope(kv, cs, sn, 18)->data, HD);
    float s75 = dot(tt_rope(qv, cs, sn, 7)->data, tt_rope(kv, cs, sn, 5)->data, HD);
    printf("q at 7, k at 3: %.4f   q at 22, k at 18: %.4f   q at 7, k at 5: %.4f\n",
           (double)s73, (double)s2218, (double)s75);

    /* head 0 of the module with RoPE on its full key: k_j = R_j (W_uk c_j) */
    tt_tensor *q = tt_slice(tt_linear_forward(&m->q_proj, x), 2, 0, HD);
    tt_tensor *c = tt_linear_forward(&m->kv_a_proj, x);
    tt_tensor *W_uk = tt_slice(m->kv_b_proj.weight, 0, 0, HD);
    tt_tensor *k = tt_matmul_nt(c, W_uk); /* [1, T, HD] (bias left out here) */
    tt_tensor *s_rot = tt_matmul_nt(tt_rope(q, cs, sn, 0), tt_rope(k, cs, sn, 0));
    tt_tensor *s_try = tt_matmul_nt(tt_matmul(tt_rope(q, cs, sn, 0), W_uk), c);
    printf("rotated keys: max |q_i^T R_i^T R_j W_uk c_j - (W_uk^T R_i q_i)^T c_j| = %.3f\n",
           (double)max_diff(s_rot, s_try));

    /* V3: a no-RoPE part (absorbable) plus a decoupled RoPE part with ONE k_pe for all heads */
    tt_tensor *W_kr = tt_rand_normal(TT_SHAPE(DR, DIM), 0.0f, 0.125f); /* part of wkv_a  */
    tt_tensor *W_qr = tt_rand_normal(TT_SHAPE(DR, DIM), 0.0f, 0.125f); /* head 0's q_pe */
    tt_tensor *cs8, *sn8;
    rope_tables(64, DR, &cs8, &sn8);
    tt_tensor *k_pe = tt_rope(tt_matmul_nt(x, W_kr), cs8, sn8, 0); /* [1, T, DR], cached */
    tt_tensor *q_pe = tt_rope(tt_matmul_nt(x, W_qr), cs8, sn8, 0);
    /* naive: concatenate [k_nope ; k_pe] and [q_nope ; q_pe] */
    tt_tensor *kk = tt_concat(2, ((tt_tensor *[]){k, k_pe}), 2);
    tt_tensor *qq = tt_concat(2, ((tt_tensor *[]){q, q_pe}), 2);
    tt_tensor *s_full = tt_matmul_nt(qq, kk);
    tt_tensor *s_dec = tt_add(tt_matmul_nt(tt_matmul(q, W_uk), c), tt_matmul_nt(q_pe, k_pe));
    printf("decoupled: max |[q_nope; q_pe] . [k_nope; k_pe] - ((W_uk^T q_nope) . c + q_pe . k_pe)| = %.1e\n",
           (double)max_diff(s_full, s_dec));
    tt_tape_reset();
    tt_free(cs), tt_free(sn), tt_free(cs8), tt_free(sn8);
    tt_free(qv), tt_free(kv), tt_free(W_kr), tt_free(W_qr);
}

/* ---- 5. incremental decoding ------------------------------------------------------------------ */

static void decode(const tt_mla *m, tt_tensor *x) {
    printf("== 5. incremental decoding: a 5-token prompt, then 7 tokens one at a time\n");
    tt_tensor *y_full = tt_mla_forward(m, x); /* [1, T, DIM], causal */
    tt_mla_cache cache;
    tt_mla_cache_init(&cache, RANK, T);
    float worst = 0.0f;
    for (int start = 0; start < T;) {
        int n = start == 0 ? 5 : 1;
        tt_tensor *chunk = tt_slice(x, 1, start, start + n);
        tt_tensor *y = tt_mla_forward_cached(m, chunk, &cache);
        tt_tensor *ref = tt_slice(y_full, 1, start, start + n);
        float d = max_diff(y, ref);
        worst = fmaxf(worst, d);
        printf("  positions %2d..%2d  cache length %2d  max |cached - full| = %.1e\n", start,
               start + n - 1, cache.len, (double)d);
        start += n;
    }
    printf("cache: %d positions * rank %d * 4 bytes = %zu bytes (full K and V: %zu bytes)\n",
           cache.len, cache.rank, (size_t)cache.len * cache.rank * sizeof(float),
           (size_t)cache.len * 2 * DIM * sizeof(float));
    printf("worst difference %.1e\n", (double)worst);
    tt_mla_cache_free(&cache);
    tt_tape_reset();
}

/* the whole toy model: tt_dsv3_forward_cached against tt_dsv3_forward */
static void decode_model(void) {
    tt_dsv3_config cfg = tt_dsv3_config_toy();
    tt_manual_seed(11);
    tt_dsv3 *model = tt_dsv3_new(&cfg);
    model->training = false;
    int32_t ids[16];
    for (int i = 0; i < 16; i++) ids[i] = (i * 37 + 11) % cfg.vocab;
    tt_tensor *all = tt_from_ids(TT_SHAPE(1, 16), ids);
    tt_no_grad_begin();
    tt_tensor *full = tt_dsv3_forward(model, all, NULL).logits; /* [1, 16, vocab] */
    tt_no_grad_end();
    tt_dsv3_cache cache;
    tt_dsv3_cache_init(&cache, model, 16);
    float worst = 0.0f;
    for (int t = 0; t < 16; t++) {
        tt_tensor *one = tt_from_ids(TT_SHAPE(1, 1), ids + t);
        tt_tensor *lg = tt_dsv3_forward_cached(model, one, &cache);
        for (int v = 0; v < cfg.vocab; v++)
            worst = fmaxf(worst, fabsf(lg->data[v] - full->data[t * cfg.vocab + v]));
        tt_free(one);
    }
    printf("toy DeepSeek (2 layers), 16 tokens one by one: max |logits cached - full| = %.1e\n",
           (double)worst);
    tt_dsv3_cache_free(&cache);
    tt_tape_reset();
    tt_free(all);
    tt_dsv3_free(model);
}

static void show_rank(const tt_mla *m, tt_tensor *x) {
    (void)x;
    printf("== 2. low rank: the layer dim %d, %d heads of %d, rank r = %d\n", DIM, HEADS, HD, RANK);
    tt_manual_seed(8);
    tt_tensor *x32 = tt_rand_normal(TT_SHAPE(1, 32, DIM), 0.0f, 1.0f);
    tt_tensor *kv = tt_linear_forward(&m->kv_b_proj, tt_linear_forward(&m->kv_a_proj, x32));
    tt_tensor *K = tt_slice(kv, 2, 0, DIM); /* [1, 32, DIM] */
    tt_tensor *Q = tt_linear_forward(&m->q_proj, x32); /* a full-rank projection, for contrast */
    printf("32 tokens: rank of K = kv_b_proj(kv_a_proj(x)) [32, %d] is %d (r + 1: the bias); "
           "of q_proj(x): %d\n",
           DIM, numerical_rank(K->data, 32, DIM), numerical_rank(Q->data, 32, DIM));
    printf("parameters: K and V from x directly 2 * %d * %d = %d; through the latent %d * %d + "
           "%d * %d = %d\n",
           DIM, DIM, 2 * DIM * DIM, RANK, DIM, 2 * DIM, RANK, RANK * DIM + 2 * DIM * RANK);
    tt_tape_reset();
    tt_free(x32);
}

static void show_decode(const tt_mla *m, tt_tensor *x) {
    decode(m, x);
    decode_model();
}

/* No argument: every section. One argument: that section only (the tutorial quotes the
 * sections one by one). */
int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*run)(const tt_mla *, tt_tensor *);
    } sections[] = {
        {"cache", NULL},
        {"rank", show_rank},
        {"absorb", absorb},
        {"rope", rope},
        {"decode", show_decode},
    };
    const int n = (int)(sizeof sections / sizeof sections[0]);
    /* the layer of sections 2-5: dim 64, 4 heads, rank 8, with biases (as the toy model) */
    tt_params p = {0};
    tt_mla m;
    tt_mla_config cfg = {.dim = DIM, .n_heads = HEADS, .rank = RANK, .bias = true};
    tt_manual_seed(7);
    tt_mla_init(&m, &p, "attn", &cfg);
    tt_tensor *x = tt_rand_normal(TT_SHAPE(1, T, DIM), 0.0f, 1.0f);
    int ran = 0;
    for (int i = 0; i < n; i++)
        if (argc < 2 || strcmp(argv[1], sections[i].name) == 0) {
            if (sections[i].run)
                sections[i].run(&m, x);
            else
                cache_sizes();
            ran++;
        }
    tt_free(x);
    tt_params_free(&p);
    if (!ran) {
        fprintf(stderr, "usage: %s [cache | rank | absorb | rope | decode]\n", argv[0]);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}

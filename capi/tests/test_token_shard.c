/* Vocabulary-sharded token log-probs through the C ABI: a batch split into 1 to 4 shards
 * (including an empty shard and a one-class shard) runs the whole pipeline (states per shard,
 * merge, finalize, backward per shard) on every tier and matches the unsharded
 * sk_token_logprobs / sk_token_logprobs_backward (logp, H, lse and every gradient element,
 * within rounding); the merge is commutative bit for bit; int32_t tokens give the bits of
 * int64_t ones; and every argument error returns its status with nothing written. */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

#define ROWS 6
#define COLS 11
#define IGN (-100)
#define MAX_SHARDS 4

/* A zeroed outputs struct with logp (and optionally entropy and lse) of n floats. */
static sk_token_outputs outs(float *logp, float *h, float *lse, size_t n)
{
    sk_token_outputs o;
    memset(&o, 0, sizeof o);
    o.logp = logp;
    o.logp_len = logp ? n : 0;
    o.entropy = h;
    o.entropy_len = h ? n : 0;
    o.lse = lse;
    o.lse_len = lse ? n : 0;
    return o;
}

static sk_token_grads grads_of(const float *gl, const float *gh, size_t n)
{
    sk_token_grads g;
    memset(&g, 0, sizeof g);
    g.logp = gl;
    g.logp_len = gl ? n : 0;
    g.entropy = gh;
    g.entropy_len = gh ? n : 0;
    return g;
}

static sk_token_saved saved_of(const float *lse, const float *h, size_t n)
{
    sk_token_saved s;
    memset(&s, 0, sizeof s);
    s.lse = lse;
    s.lse_len = lse ? n : 0;
    s.entropy = h;
    s.entropy_len = h ? n : 0;
    return s;
}

/* A deterministic pseudo-random float in [-4, 4). */
static float rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((double)(*s >> 8) / (double)(1u << 24) * 8.0 - 4.0);
}

/* The batch: ROWS x COLS logits (row 1 has a masked -inf logit in class 0, so that the
 * one-class shard [0, 1) is all -inf there), tokens in every part of the vocabulary and one
 * ignored row, both upstream gradients. */
static float g_x[ROWS * COLS];
static const int64_t g_t[ROWS] = {3, 7, IGN, 0, 10, 5};
static const int32_t g_ti[ROWS] = {3, 7, IGN, 0, 10, 5};
static float g_gl[ROWS], g_gh[ROWS];

static void make_batch(void)
{
    uint32_t s = 12345u;
    int i;
    for (i = 0; i < ROWS * COLS; i++) {
        g_x[i] = rnd(&s);
    }
    g_x[1 * COLS + 0] = -INFINITY;
    for (i = 0; i < ROWS; i++) {
        g_gl[i] = rnd(&s) / 4.0f;
        g_gh[i] = rnd(&s) / 8.0f;
    }
}

/* The splits, as cut points (first class of each shard, then COLS). */
typedef struct split {
    int n;
    size_t cut[MAX_SHARDS + 1];
} split;

static const split SPLITS[4] = {
    {1, {0, COLS}},
    {2, {0, 4, COLS}},
    {3, {0, 0, 1, COLS}},       /* an empty shard, a one-class shard, the rest */
    {4, {0, 1, 6, 6, COLS}},    /* one class, five, an empty shard, five */
};

/* One shard's arrays. */
typedef struct shard {
    size_t off, w;
    float x[ROWS * COLS];
    float keep[ROWS * COLS]; /* keep, then dlogits: the same buffer */
    sk_row_state st[ROWS];
} shard;

static shard g_sh[MAX_SHARDS];

/* The pipeline's results. */
typedef struct result {
    float lp[ROWS], h[ROWS], lse[ROWS];
    float d[ROWS * COLS];
} result;

/* Copies shard s's columns out of the batch. */
static void cut_shard(int s, size_t off, size_t w)
{
    size_t r, k;
    g_sh[s].off = off;
    g_sh[s].w = w;
    for (r = 0; r < ROWS; r++) {
        for (k = 0; k < w; k++) {
            g_sh[s].x[r * w + k] = g_x[r * COLS + off + k];
        }
    }
}

/* The whole pipeline on split `sp`, merging in shard order (or reversed), with int64_t (or
 * int32_t) tokens. */
static void pipeline(const split *sp, const sk_token_options *o, int reversed, int i32,
                     result *res)
{
    sk_row_state acc[ROWS];
    sk_token_outputs out = outs(res->lp, res->h, res->lse, ROWS);
    sk_token_saved sv = saved_of(res->lse, res->h, ROWS);
    sk_token_grads g = grads_of(g_gl, g_gh, ROWS);
    int s, i;
    size_t r, k;
    for (s = 0; s < sp->n; s++) {
        size_t off = sp->cut[s], w = sp->cut[s + 1] - sp->cut[s];
        shard *h = &g_sh[s];
        /* An empty shard passes NULL arrays; the others real ones. */
        const float *xs = w ? h->x : NULL;
        float *keep = w ? h->keep : NULL;
        cut_shard(s, off, w);
        if (i32) {
            CHECK_OK(sk_token_shard_states_i32(xs, ROWS * w, g_ti, ROWS, keep, ROWS * w, w, off,
                                               COLS, o, h->st, ROWS));
        } else {
            CHECK_OK(sk_token_shard_states(xs, ROWS * w, g_t, ROWS, keep, ROWS * w, w, off,
                                           COLS, o, h->st, ROWS));
        }
    }
    for (i = 0; i < ROWS; i++) {
        acc[i] = sk_row_state_empty();
    }
    for (i = 0; i < sp->n; i++) {
        s = reversed ? sp->n - 1 - i : i;
        CHECK_OK(sk_row_states_merge(acc, ROWS, g_sh[s].st, ROWS));
    }
    if (i32) {
        CHECK_OK(sk_row_states_finalize_i32(acc, ROWS, g_ti, ROWS, COLS, o, &out));
    } else {
        CHECK_OK(sk_row_states_finalize(acc, ROWS, g_t, ROWS, COLS, o, &out));
    }
    for (s = 0; s < sp->n; s++) {
        shard *h = &g_sh[s];
        const float *xs = h->w ? h->x : NULL;
        float *d = h->w ? h->keep : NULL;
        if (i32) {
            CHECK_OK(sk_token_shard_backward_i32(xs, ROWS * h->w, g_ti, ROWS, d, ROWS * h->w,
                                                 h->w, h->off, COLS, o, h->st, ROWS, &sv, &g));
        } else {
            CHECK_OK(sk_token_shard_backward(xs, ROWS * h->w, g_t, ROWS, d, ROWS * h->w, h->w,
                                             h->off, COLS, o, h->st, ROWS, &sv, &g));
        }
        for (r = 0; r < ROWS; r++) {
            for (k = 0; k < h->w; k++) {
                res->d[r * COLS + h->off + k] = h->keep[r * h->w + k];
            }
        }
    }
}

static int same_bits(const void *a, const void *b, size_t n)
{
    return memcmp(a, b, n) == 0;
}

static void numeric(int32_t tier)
{
    /* (temperature, soft-cap) */
    const float temps[3] = {1.0f, 0.7f, 1.3f}, caps[3] = {0.0f, 0.0f, 5.0f};
    int oi, si, s, i, r, k;
    (void)tier;
    for (oi = 0; oi < 3; oi++) {
        sk_token_options o;
        float lp[ROWS], h[ROWS], lse[ROWS], dref[ROWS * COLS];
        sk_token_outputs out = outs(lp, h, lse, ROWS);
        sk_token_saved sv = saved_of(lse, h, ROWS);
        sk_token_grads g = grads_of(g_gl, g_gh, ROWS);
        CHECK_OK(sk_token_options_default(&o));
        o.temperature = temps[oi];
        o.softcap = caps[oi];
        /* The unsharded reference. */
        CHECK_OK(sk_token_logprobs(g_x, ROWS * COLS, g_t, ROWS, COLS, &o, &out));
        CHECK_OK(sk_token_logprobs_backward(g_x, ROWS * COLS, g_t, ROWS, dref, ROWS * COLS, COLS,
                                            &o, &sv, &g));
        for (si = 0; si < 4; si++) {
            const split *sp = &SPLITS[si];
            static result a, b, c;
            int nonempty = 0;
            pipeline(sp, &o, 0, 0, &a);
            for (r = 0; r < ROWS; r++) {
                if (g_t[r] == IGN) {
                    /* logp = 0, H = 0, a NaN lse, a zero gradient row. */
                    CHECK(a.lp[r] == 0.0f && a.h[r] == 0.0f && isnan(a.lse[r]));
                    for (k = 0; k < COLS; k++) {
                        CHECK(a.d[r * COLS + k] == 0.0f);
                    }
                    continue;
                }
                CHECK_NEAR(a.lp[r], lp[r], 4e-6);
                CHECK_NEAR(a.h[r], h[r], 4e-6);
                CHECK_NEAR(a.lse[r], lse[r], 4e-6);
                for (k = 0; k < COLS; k++) {
                    CHECK_NEAR(a.d[r * COLS + k], dref[r * COLS + k], 2e-6);
                }
            }
            /* The masked logit's gradient is exactly 0, in its one-class shard too. */
            CHECK(a.d[1 * COLS + 0] == 0.0f);
            /* int32_t tokens: the same bits. */
            pipeline(sp, &o, 0, 1, &c);
            CHECK(same_bits(&a, &c, sizeof a));
            /* The merge in reverse order: the same bits when at most two shards hold classes
             * (commutativity; an empty shard is the exact identity), within f64 rounding
             * otherwise (associativity up to rounding). */
            pipeline(sp, &o, 1, 0, &b);
            for (s = 0; s < sp->n; s++) {
                nonempty += sp->cut[s + 1] > sp->cut[s];
            }
            if (nonempty <= 2) {
                CHECK(same_bits(&a, &b, sizeof a));
            } else {
                for (r = 0; r < ROWS; r++) {
                    CHECK(a.lp[r] == b.lp[r] || fabs(a.lp[r] - b.lp[r]) <= 1e-6);
                    CHECK(a.h[r] == b.h[r] || fabs(a.h[r] - b.h[r]) <= 1e-6);
                }
                for (i = 0; i < ROWS * COLS; i++) {
                    CHECK(fabs(a.d[i] - b.d[i]) <= 1e-6);
                }
            }
            /* Commutativity of every pair of this split's states, bit for bit. */
            for (s = 0; s < sp->n; s++) {
                int t2;
                for (t2 = s + 1; t2 < sp->n; t2++) {
                    sk_row_state ab[ROWS], ba[ROWS];
                    memcpy(ab, g_sh[s].st, sizeof ab);
                    memcpy(ba, g_sh[t2].st, sizeof ba);
                    CHECK_OK(sk_row_states_merge(ab, ROWS, g_sh[t2].st, ROWS));
                    CHECK_OK(sk_row_states_merge(ba, ROWS, g_sh[s].st, ROWS));
                    CHECK(same_bits(ab, ba, sizeof ab));
                }
            }
        }
    }

    /* The empty state, and the merge's identity. */
    {
        sk_row_state e = sk_row_state_empty(), m[1];
        CHECK(e.max == -INFINITY && e.sum == 0.0 && e.dot == 0.0);
        CHECK(e.target == 0.0 && e.has_target == 0.0);
        CHECK(e.wdot == 0.0 && e.wsum == 0.0 && e.target_weight == 0.0);
        m[0] = g_sh[0].st[0];
        CHECK_OK(sk_row_states_merge(m, 1, &e, 1));
        CHECK(same_bits(m, &g_sh[0].st[0], sizeof m));
    }

    /* A shard state by hand: one row (0, ln 3) of a two-class shard at offset 1 of 4 classes,
     * token 2 (the shard's second class): max ln 3, sum 1 + 1/3, target ln 3, has_target 1,
     * dot = sum (z' - max) e^(z' - max) = (0 - ln 3) / 3. */
    {
        const float z[2] = {0.0f, (float)log(3.0)};
        const int64_t t[1] = {2};
        sk_row_state st[1];
        float keep[2];
        CHECK_OK(sk_token_shard_states(z, 2, t, 1, keep, 2, 2, 1, 4, NULL, st, 1));
        CHECK_NEAR(st[0].max, log(3.0), 1e-7);
        CHECK_NEAR(st[0].sum, 1.0 + 1.0 / 3.0, 1e-7);
        CHECK_NEAR(st[0].target, log(3.0), 1e-7);
        CHECK(st[0].has_target == 1.0);
        CHECK_NEAR(st[0].dot, -log(3.0) / 3.0, 1e-7);
    }

    /* NaN: a NaN logit in one shard makes the row NaN, as unsharded. */
    {
        const float za[2] = {0.0f, NAN}, zb[2] = {1.0f, 2.0f};
        const int64_t t[1] = {3};
        sk_row_state sa[1], sb[1];
        float ka[2], kb[2], l1[1];
        sk_token_outputs o1 = outs(l1, NULL, NULL, 1);
        CHECK_OK(sk_token_shard_states(za, 2, t, 1, ka, 2, 2, 0, 4, NULL, sa, 1));
        CHECK_OK(sk_token_shard_states(zb, 2, t, 1, kb, 2, 2, 2, 4, NULL, sb, 1));
        CHECK(isnan(sa[0].max) || isnan(sa[0].sum)); /* (which one depends on the tier) */
        CHECK_OK(sk_row_states_merge(sb, 1, sa, 1));
        CHECK_OK(sk_row_states_finalize(sb, 1, t, 1, 4, NULL, &o1));
        CHECK(isnan(l1[0]));
    }

    /* A shard of NaN and -inf alone is NaN too (not an empty shard). */
    {
        const float za[2] = {NAN, -INFINITY}, zb[2] = {1.0f, 2.0f};
        const int64_t t[1] = {3};
        sk_row_state sa[1], sb[1];
        float ka[2], kb[2], l1[1];
        sk_token_outputs o1 = outs(l1, NULL, NULL, 1);
        CHECK_OK(sk_token_shard_states(za, 2, t, 1, ka, 2, 2, 0, 4, NULL, sa, 1));
        CHECK_OK(sk_token_shard_states(zb, 2, t, 1, kb, 2, 2, 2, 4, NULL, sb, 1));
        CHECK(isnan(sa[0].max));
        CHECK_OK(sk_row_states_merge(sb, 1, sa, 1));
        CHECK_OK(sk_row_states_finalize(sb, 1, t, 1, 4, NULL, &o1));
        CHECK(isnan(l1[0]));
    }

    /* Zero rows: nothing to do. */
    {
        sk_token_outputs o0 = outs(NULL, NULL, NULL, 0);
        sk_token_saved s0 = saved_of(NULL, NULL, 0);
        CHECK_OK(sk_token_shard_states(NULL, 0, NULL, 0, NULL, 0, 4, 0, 8, NULL, NULL, 0));
        CHECK_OK(sk_row_states_merge(NULL, 0, NULL, 0));
        CHECK_OK(sk_row_states_finalize(NULL, 0, NULL, 0, 8, NULL, &o0));
        CHECK_OK(sk_token_shard_backward(NULL, 0, NULL, 0, NULL, 0, 4, 4, 8, NULL, NULL, 0, &s0,
                                         NULL));
    }
}

/* Every refused call leaves these untouched. */
static sk_row_state s_st[4], s_acc[4];
static float s_keep[8], s_lp[4], s_h[4], s_lse[4], s_d[8];

static void fill_sentinels(void)
{
    int i;
    for (i = 0; i < 4; i++) {
        s_st[i].max = s_st[i].sum = s_st[i].dot = s_st[i].target = s_st[i].has_target = 7.0;
        s_acc[i] = s_st[i];
        s_lp[i] = s_h[i] = s_lse[i] = 7.0f;
    }
    for (i = 0; i < 8; i++) {
        s_keep[i] = s_d[i] = 7.0f;
    }
}

static void check_sentinels(void)
{
    int i, ok = 1;
    for (i = 0; i < 4; i++) {
        ok &= s_st[i].max == 7.0 && s_st[i].sum == 7.0 && s_st[i].dot == 7.0;
        ok &= s_st[i].target == 7.0 && s_st[i].has_target == 7.0;
        ok &= s_acc[i].max == 7.0 && s_acc[i].has_target == 7.0;
        ok &= s_lp[i] == 7.0f && s_h[i] == 7.0f && s_lse[i] == 7.0f;
    }
    for (i = 0; i < 8; i++) {
        ok &= s_keep[i] == 7.0f && s_d[i] == 7.0f;
    }
    CHECK(ok);
}

static void errors(void)
{
    /* Two rows of a shard of 2 classes at offset 2 of 5. */
    const float lg[4] = {0.5f, 1.0f, -1.0f, 2.0f};
    const int64_t t[2] = {3, 0}, bad[2] = {3, 5};
    const int32_t badi[2] = {-1, 0};
    const float gl[2] = {1.0f, 1.0f}, gh[2] = {0.5f, 0.5f}, lse[2] = {2.0f, 2.0f},
                hh[2] = {1.0f, 1.0f};
    sk_row_state good[2], half[2];
    sk_token_options o;
    sk_token_outputs out, out1;
    sk_token_grads g = grads_of(gl, gh, 2);
    sk_token_saved sv = saved_of(lse, hh, 2), sv1;
    float k2[4];

    /* Real states of the shard (token 3 held, token 0 not), for the merge and finalize. */
    CHECK_OK(sk_token_shard_states(lg, 4, t, 2, k2, 4, 2, 2, 5, NULL, good, 2));
    memcpy(half, good, sizeof half);

    fill_sentinels();
    out = outs(s_lp, s_h, s_lse, 2);

    /* The shard leaves the vocabulary: SK_ERROR_INVALID_OPTION, naming the shard. */
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 4, 2, 4, 5, NULL, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("sk_token_shard_states: SK_ERROR_INVALID_OPTION");
    CHECK_MSG("shard");
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 4, 2, SIZE_MAX, 5, NULL, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_ST(sk_token_shard_states(NULL, 0, t, 2, NULL, 0, 0, 6, 5, NULL, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, s_d, 4, 2, 4, 5, NULL, good, 2, &sv, &g),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("shard");
    check_sentinels();

    /* Tokens outside the vocabulary (not the ignore_index). */
    CHECK_ST(sk_token_shard_states(lg, 4, bad, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 1 has label 5");
    CHECK_ST(sk_token_shard_states_i32(lg, 4, badi, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 0 has label -1");
    CHECK_ST(sk_token_shard_states(NULL, 0, bad, 2, NULL, 0, 0, 2, 5, NULL, s_st, 2),
             SK_ERROR_BAD_LABEL);
    CHECK_ST(sk_row_states_finalize(good, 2, bad, 2, 5, NULL, &out), SK_ERROR_BAD_LABEL);
    CHECK_ST(sk_row_states_finalize_i32(good, 2, badi, 2, 5, NULL, &out), SK_ERROR_BAD_LABEL);
    CHECK_ST(sk_token_shard_backward(lg, 4, bad, 2, s_d, 4, 2, 2, 5, NULL, good, 2, &sv, &g),
             SK_ERROR_BAD_LABEL);
    check_sentinels();

    /* A missing shard at finalize (row 1's token 0 is held by no merged state), and a shard
     * merged twice (row 0's token counted twice). */
    CHECK_ST(sk_row_states_finalize(good, 2, t, 2, 5, NULL, &out), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("sk_row_states_finalize: SK_ERROR_INVALID_OPTION");
    CHECK_MSG("row 1 holds its token 0 times");
    CHECK_OK(sk_row_states_merge(half, 2, good, 2));
    CHECK_ST(sk_row_states_finalize(half, 2, t, 2, 5, NULL, &out), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("row 0 holds its token 2 times");
    check_sentinels();

    /* Length mismatches. */
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 1),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`states`");
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 3, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`keep` has length 3, but the other arguments need length 4");
    CHECK_ST(sk_token_shard_states(lg, 4, t, 1, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`tokens`");
    CHECK_ST(sk_token_shard_states(lg, 3, t, 2, s_keep, 3, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_NOT_MULTIPLE);
    /* An empty shard with logits or kept values. */
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 4, 0, 2, 5, NULL, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`logits`");
    CHECK_ST(sk_token_shard_states(NULL, 0, t, 2, s_keep, 4, 0, 2, 5, NULL, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`keep`");
    CHECK_ST(sk_row_states_merge(s_acc, 2, good, 1), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`other`");
    CHECK_ST(sk_row_states_finalize(good, 2, t, 1, 5, NULL, &out), SK_ERROR_LENGTH_MISMATCH);
    out1 = outs(s_lp, NULL, NULL, 1);
    CHECK_ST(sk_row_states_finalize(good, 2, t, 2, 5, NULL, &out1), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`logp`");
    out1 = outs(s_lp, s_h, NULL, 2);
    out1.entropy_len = 3;
    CHECK_ST(sk_row_states_finalize(good, 2, t, 2, 5, NULL, &out1), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`entropy`");
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, s_d, 3, 2, 2, 5, NULL, good, 2, &sv, &g),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`dlogits`");
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 1, &sv, &g),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`states`");
    sv1 = saved_of(lse, hh, 1);
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 2, &sv1, &g),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`saved.lse`");
    check_sentinels();

    /* The entropy's upstream gradient needs the saved entropy. */
    sv1 = saved_of(lse, NULL, 2);
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 2, &sv1, &g),
             SK_ERROR_MISSING_OUTPUT);
    CHECK_MSG("`saved.entropy`");
    check_sentinels();

    /* NULL pointers. */
    CHECK_ST(sk_token_shard_states(NULL, 4, t, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_NULL_POINTER);
    CHECK_MSG("sk_token_shard_states: SK_NULL_POINTER: `logits` is NULL");
    CHECK_ST(sk_token_shard_states(lg, 4, NULL, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_NULL_POINTER);
    CHECK_MSG("`tokens` is NULL");
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, NULL, 4, 2, 2, 5, NULL, s_st, 2),
             SK_NULL_POINTER);
    CHECK_MSG("`keep` is NULL");
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, NULL, NULL, 2),
             SK_NULL_POINTER);
    CHECK_MSG("`states` is NULL");
    CHECK_ST(sk_row_states_merge(NULL, 2, good, 2), SK_NULL_POINTER);
    CHECK_MSG("`acc` is NULL");
    CHECK_ST(sk_row_states_merge(s_acc, 2, NULL, 2), SK_NULL_POINTER);
    CHECK_MSG("`other` is NULL");
    CHECK_ST(sk_row_states_finalize(NULL, 2, t, 2, 5, NULL, &out), SK_NULL_POINTER);
    CHECK_ST(sk_row_states_finalize(good, 2, t, 2, 5, NULL, NULL), SK_NULL_POINTER);
    CHECK_MSG("`outputs` is NULL");
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 2, NULL, &g),
             SK_NULL_POINTER);
    CHECK_MSG("`saved` is NULL");
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, NULL, 4, 2, 2, 5, NULL, good, 2, &sv, &g),
             SK_NULL_POINTER);
    CHECK_MSG("`dlogits` is NULL");
    CHECK_ST(sk_token_shard_backward_i32(lg, 4, badi, 2, s_d, 4, 2, 2, 5, NULL, NULL, 2, &sv,
                                         &g),
             SK_NULL_POINTER);
    CHECK_MSG("`states` is NULL");
    check_sentinels();

    /* Bad options (the temperature) and too many classes. */
    CHECK_OK(sk_token_options_default(&o));
    o.temperature = 0.0f;
    CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, &o, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("temperature");
    CHECK_ST(sk_token_shard_states(NULL, 0, t, 2, NULL, 0, 0, 2, 5, &o, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, &o, good, 2, &sv, &g),
             SK_ERROR_INVALID_OPTION);
    if (sizeof(size_t) > 4) {
        size_t huge = (size_t)1 << 32;
        CHECK_ST(sk_token_shard_states(NULL, 0, NULL, 0, NULL, 0, 0, 0, huge, NULL, NULL, 0),
                 SK_ERROR_TOO_MANY_CLASSES);
    }
    check_sentinels();

    /* Overlaps: keep over states, states over the logits, acc over other, an output over the
     * states, dlogits over the logits or the states. Misaligned states. */
    {
        double space[16];
        float *buf = (float *)(void *)space;
        sk_row_state *stp = (sk_row_state *)(void *)space;
        int i;
        for (i = 0; i < 32; i++) {
            buf[i] = (float)i;
        }
        CHECK_ST(sk_token_shard_states(lg, 4, t, 2, buf + 2, 4, 2, 2, 5, NULL, stp, 2),
                 SK_OVERLAP);
        CHECK_MSG("the output `keep` overlaps `states`");
        CHECK_ST(sk_token_shard_states(buf, 4, t, 2, s_keep, 4, 2, 2, 5, NULL, stp, 2),
                 SK_OVERLAP);
        CHECK_MSG("`states` overlaps `logits`");
        CHECK_ST(sk_row_states_merge(stp, 2, stp + 1, 2), SK_OVERLAP);
        CHECK_MSG("`acc` overlaps `other`");
        CHECK_ST(sk_row_states_merge(stp, 2, stp, 2), SK_OVERLAP);
        out1 = outs(buf, NULL, NULL, 2);
        CHECK_ST(sk_row_states_finalize(stp, 2, t, 2, 5, NULL, &out1), SK_OVERLAP);
        CHECK_MSG("`logp` overlaps `states`");
        CHECK_ST(sk_token_shard_backward(buf, 4, t, 2, buf, 4, 2, 2, 5, NULL, good, 2, &sv, &g),
                 SK_OVERLAP);
        CHECK_MSG("`dlogits` overlaps `logits`");
        CHECK_ST(sk_token_shard_backward(lg, 4, t, 2, buf, 4, 2, 2, 5, NULL, stp, 2, &sv, &g),
                 SK_OVERLAP);
        CHECK_MSG("`dlogits` overlaps `states`");
        for (i = 0; i < 32; i++) {
            CHECK(buf[i] == (float)i);
        }
        CHECK_ST(sk_row_states_merge((sk_row_state *)(void *)(buf + 1), 1, good, 1),
                 SK_MISALIGNED);
        CHECK_ST(sk_token_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, NULL,
                                       (sk_row_state *)(void *)(buf + 1), 2),
                 SK_MISALIGNED);
    }
    check_sentinels();
}

int main(void)
{
    make_batch();
    for_each_tier(numeric);
    /* Any number of threads: the same bits. */
    {
        static result one, three;
        sk_token_options o;
        CHECK_OK(sk_token_options_default(&o));
        o.temperature = 0.9f;
        CHECK_OK(sk_set_num_threads(1));
        pipeline(&SPLITS[3], &o, 0, 0, &one);
        CHECK_OK(sk_set_num_threads(3));
        pipeline(&SPLITS[3], &o, 0, 0, &three);
        CHECK_OK(sk_set_num_threads(0));
        CHECK(same_bits(&one, &three, sizeof one));
    }
    errors();
    return finish("test_token_shard");
}

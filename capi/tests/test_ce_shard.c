/* Vocabulary-sharded cross-entropy through the C ABI: a batch of 37 classes split into shards
 * (sizes {0, 1, 12, 24}, {16, 21} and {37}) runs the whole pipeline (states per shard, merge in
 * two orders, finalize, backward per shard) on every tier, with class weights, label smoothing,
 * z-loss, soft-cap, ignored rows and the MEAN, SUM and NONE reductions, and matches the
 * unsharded sk_cross_entropy_ext (loss, row losses, lse, stats and every gradient element,
 * within 1e-5 relative); int32_t targets give the bits of int64_t ones; a case by hand; and
 * every argument error returns its status and message with nothing written. */
#include <float.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

#define ROWS 7
#define COLS 37
#define IGN (-100)
#define MAX_SHARDS 4

/* A deterministic pseudo-random float in [-4, 4). */
static float rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((double)(*s >> 8) / (double)(1u << 24) * 8.0 - 4.0);
}

/* The batch: ROWS x COLS logits, targets in every part of the vocabulary (class 0 is the
 * one-class shard's) and two ignored rows, class weights in [0.25, 2.25), a per-row scale. */
static float g_x[ROWS * COLS], g_w[COLS], g_rs[ROWS];
static const int64_t g_t[ROWS] = {3, IGN, 0, 36, 13, IGN, 20};
static const int32_t g_ti[ROWS] = {3, IGN, 0, 36, 13, IGN, 20};

static void make_batch(void)
{
    uint32_t s = 4242u;
    int i;
    for (i = 0; i < ROWS * COLS; i++) {
        g_x[i] = rnd(&s);
    }
    for (i = 0; i < COLS; i++) {
        g_w[i] = rnd(&s) / 4.0f + 1.25f;
    }
    for (i = 0; i < ROWS; i++) {
        g_rs[i] = rnd(&s) / 4.0f;
    }
}

/* The splits, as cut points (first class of each shard, then COLS). */
typedef struct split {
    int n;
    size_t cut[MAX_SHARDS + 1];
} split;

static const split SPLITS[3] = {
    {4, {0, 0, 1, 13, COLS}}, /* an empty shard, one class, 12, 24 */
    {2, {0, 16, COLS}},
    {1, {0, COLS}},
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
    float loss;
    sk_ce_stats stats;
    float row_loss[ROWS], lse[ROWS];
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

/* The options of shard (off, w): the whole vocabulary's, with this shard's class weights. */
static sk_ce_options shard_opts(const sk_ce_options *o, size_t off, size_t w)
{
    sk_ce_options so = *o;
    if (o->weight != NULL) {
        so.weight = o->weight + off;
        so.weight_len = w;
    }
    return so;
}

/* The whole pipeline on split `sp`, merging in shard order (or reversed), with int64_t (or
 * int32_t) targets. */
static void pipeline(const split *sp, const sk_ce_options *o, int reversed, int i32,
                     result *res)
{
    sk_row_state acc[ROWS];
    sk_ce_outputs out;
    int s, i;
    size_t r, k;
    memset(res, 0, sizeof *res);
    for (s = 0; s < sp->n; s++) {
        size_t off = sp->cut[s], w = sp->cut[s + 1] - sp->cut[s];
        shard *h = &g_sh[s];
        sk_ce_options so = shard_opts(o, off, w);
        /* An empty shard passes NULL arrays; the others real ones. */
        const float *xs = w ? h->x : NULL;
        float *keep = w ? h->keep : NULL;
        cut_shard(s, off, w);
        if (i32) {
            CHECK_OK(sk_cross_entropy_shard_states_i32(xs, ROWS * w, g_ti, ROWS, keep, ROWS * w,
                                                       w, off, COLS, &so, h->st, ROWS));
        } else {
            CHECK_OK(sk_cross_entropy_shard_states(xs, ROWS * w, g_t, ROWS, keep, ROWS * w, w,
                                                   off, COLS, &so, h->st, ROWS));
        }
    }
    /* (The all-gather of 8 * ROWS doubles per shard would go here.) */
    for (i = 0; i < ROWS; i++) {
        acc[i] = sk_row_state_empty();
    }
    for (i = 0; i < sp->n; i++) {
        s = reversed ? sp->n - 1 - i : i;
        CHECK_OK(sk_row_states_merge(acc, ROWS, g_sh[s].st, ROWS));
    }
    memset(&out, 0, sizeof out);
    out.row_loss = res->row_loss;
    out.row_loss_len = ROWS;
    out.lse = res->lse;
    out.lse_len = ROWS;
    if (i32) {
        CHECK_OK(sk_ce_states_finalize_i32(acc, ROWS, g_ti, ROWS, COLS, o, &out, &res->stats,
                                           &res->loss));
    } else {
        CHECK_OK(sk_ce_states_finalize(acc, ROWS, g_t, ROWS, COLS, o, &out, &res->stats,
                                       &res->loss));
    }
    for (s = 0; s < sp->n; s++) {
        shard *h = &g_sh[s];
        sk_ce_options so = shard_opts(o, h->off, h->w);
        const float *xs = h->w ? h->x : NULL;
        float *d = h->w ? h->keep : NULL;
        if (i32) {
            CHECK_OK(sk_cross_entropy_shard_backward_i32(xs, ROWS * h->w, g_ti, ROWS, d,
                                                         ROWS * h->w, h->w, h->off, COLS, &so,
                                                         h->st, ROWS, acc, ROWS));
        } else {
            CHECK_OK(sk_cross_entropy_shard_backward(xs, ROWS * h->w, g_t, ROWS, d, ROWS * h->w,
                                                     h->w, h->off, COLS, &so, h->st, ROWS, acc,
                                                     ROWS));
        }
        for (r = 0; r < ROWS; r++) {
            for (k = 0; k < h->w; k++) {
                res->d[r * COLS + h->off + k] = h->keep[r * h->w + k];
            }
        }
    }
}

/* Relative closeness, with a small absolute floor for values near 0. */
#define REL 1e-5
#define FLOOR 1e-7
#define CHECK_REL(a, b) CHECK_NEAR(a, b, REL * fabs((double)(b)) + FLOOR)

/* (reduction, weights, label smoothing, z-loss, soft-cap, scale, row_scale) */
typedef struct config {
    int32_t reduction;
    int weights;
    float eps, zl, cap, scale;
    int row_scale;
} config;

static const config CONFIGS[6] = {
    {SK_REDUCTION_MEAN, 0, 0.0f, 0.0f, 0.0f, 1.0f, 0},
    {SK_REDUCTION_MEAN, 1, 0.1f, 1e-3f, 0.0f, 1.0f, 0},
    {SK_REDUCTION_SUM, 1, 0.2f, 1e-2f, 0.0f, 0.5f, 0},
    {SK_REDUCTION_SUM, 0, 0.05f, 0.0f, 6.0f, 2.0f, 0},
    {SK_REDUCTION_NONE, 1, 0.1f, 1e-3f, 0.0f, 1.0f, 1},
    {SK_REDUCTION_NONE, 0, 0.0f, 0.0f, 0.0f, 1.0f, 0},
};

static void numeric(int32_t tier)
{
    int ci, si, r, k;
    (void)tier;
    for (ci = 0; ci < 6; ci++) {
        const config *c = &CONFIGS[ci];
        sk_ce_options o;
        sk_ce_outputs out;
        sk_ce_stats st;
        float rl[ROWS], lse[ROWS], dref[ROWS * COLS];
        CHECK_OK(sk_ce_options_default(&o));
        o.reduction = c->reduction;
        if (c->weights) {
            o.weight = g_w;
            o.weight_len = COLS;
        }
        o.label_smoothing = c->eps;
        o.z_loss = c->zl;
        o.softcap = c->cap;
        o.scale = c->scale;
        if (c->row_scale) {
            o.row_scale = g_rs;
            o.row_scale_len = ROWS;
        }
        /* The unsharded reference. */
        memset(&out, 0, sizeof out);
        out.row_loss = rl;
        out.row_loss_len = ROWS;
        out.lse = lse;
        out.lse_len = ROWS;
        CHECK_OK(sk_cross_entropy_ext(g_x, ROWS * COLS, g_t, ROWS, dref, ROWS * COLS, COLS, &o,
                                      &out, &st));
        for (si = 0; si < 3; si++) {
            static result a, b, i;
            pipeline(&SPLITS[si], &o, 0, 0, &a);
            CHECK_REL(a.loss, st.loss);
            CHECK_REL(a.stats.loss_f64, st.loss_f64);
            CHECK(a.stats.loss == a.loss);
            CHECK_REL(a.stats.denominator, st.denominator);
            CHECK(a.stats.rows_used == st.rows_used && a.stats.rows_used == ROWS - 2);
            CHECK(a.stats.has_correct == 0);
            for (r = 0; r < ROWS; r++) {
                CHECK_REL(a.row_loss[r], rl[r]);
                if (g_t[r] == IGN) {
                    /* loss 0, a NaN lse, a zero gradient row. */
                    CHECK(a.row_loss[r] == 0.0f && isnan(a.lse[r]));
                    for (k = 0; k < COLS; k++) {
                        CHECK(a.d[r * COLS + k] == 0.0f);
                    }
                    continue;
                }
                CHECK_REL(a.lse[r], lse[r]);
                for (k = 0; k < COLS; k++) {
                    CHECK_REL(a.d[r * COLS + k], dref[r * COLS + k]);
                }
            }
            /* The merge in reverse order: the same loss within f64 rounding, the same
             * gradient within f32 rounding. */
            pipeline(&SPLITS[si], &o, 1, 0, &b);
            CHECK_NEAR(b.stats.loss_f64, a.stats.loss_f64, 1e-12 * fabs(a.stats.loss_f64));
            CHECK_REL(b.loss, a.loss);
            for (k = 0; k < ROWS * COLS; k++) {
                CHECK_NEAR(b.d[k], a.d[k], 1e-7 * fabs(a.d[k]) + 1e-12);
            }
            /* int32_t targets: the same bits. */
            pipeline(&SPLITS[si], &o, 0, 1, &i);
            CHECK(memcmp(&a, &i, sizeof a) == 0);
        }
    }
}

/* By hand: one row z = (0, 0, ln 2, ln 3) of 4 classes, target 3, shards {0, 1} and {2, 3},
 * SUM: lse = ln 7, loss = ln 7 - ln 3, gradient (1, 1, 2, 3 - 7) / 7. The second shard's
 * state: max ln 3, sum 1 + 2/3, target ln 3, has_target 1, wsum 2, target_weight 1, and with
 * label smoothing wdot = (ln 2 - ln 3) + 0. */
static void by_hand(void)
{
    const float za[2] = {0.0f, 0.0f};
    const float zb[2] = {(float)log(2.0), (float)log(3.0)};
    const int64_t t[1] = {3};
    sk_row_state sa[1], sb[1], m[1];
    float ka[2], kb[2], loss = 0.0f;
    sk_ce_options o;
    CHECK_OK(sk_ce_options_default(&o));
    o.reduction = SK_REDUCTION_SUM;
    o.label_smoothing = 0.5f;
    CHECK_OK(sk_cross_entropy_shard_states(zb, 2, t, 1, kb, 2, 2, 2, 4, &o, sb, 1));
    CHECK_NEAR(sb[0].max, log(3.0), 1e-7);
    CHECK_NEAR(sb[0].sum, 1.0 + 2.0 / 3.0, 1e-7);
    CHECK_NEAR(sb[0].target, log(3.0), 1e-7);
    CHECK(sb[0].has_target == 1.0 && sb[0].wsum == 2.0 && sb[0].target_weight == 1.0);
    CHECK_NEAR(sb[0].wdot, log(2.0) - log(3.0), 1e-7);
    o.label_smoothing = 0.0f;
    CHECK_OK(sk_cross_entropy_shard_states(za, 2, t, 1, ka, 2, 2, 0, 4, &o, sa, 1));
    CHECK_OK(sk_cross_entropy_shard_states(zb, 2, t, 1, kb, 2, 2, 2, 4, &o, sb, 1));
    CHECK(sa[0].has_target == 0.0 && sa[0].target_weight == 0.0 && sa[0].wsum == 2.0);
    m[0] = sa[0];
    CHECK_OK(sk_row_states_merge(m, 1, sb, 1));
    CHECK_OK(sk_ce_states_finalize(m, 1, t, 1, 4, &o, NULL, NULL, &loss));
    CHECK_NEAR(loss, log(7.0 / 3.0), 1e-6);
    CHECK_OK(sk_cross_entropy_shard_backward(za, 2, t, 1, ka, 2, 2, 0, 4, &o, sa, 1, m, 1));
    CHECK_OK(sk_cross_entropy_shard_backward(zb, 2, t, 1, kb, 2, 2, 2, 4, &o, sb, 1, m, 1));
    CHECK_NEAR(ka[0], 1.0 / 7.0, 1e-7);
    CHECK_NEAR(ka[1], 1.0 / 7.0, 1e-7);
    CHECK_NEAR(kb[0], 2.0 / 7.0, 1e-7);
    CHECK_NEAR(kb[1], 3.0 / 7.0 - 1.0, 1e-7);
}

/* Every refused call leaves these untouched. */
static sk_row_state s_st[4];
static float s_keep[8], s_rl[4], s_lse[4], s_d[8], s_loss;
static sk_ce_stats s_stats;

static void fill_sentinels(void)
{
    int i;
    for (i = 0; i < 4; i++) {
        s_st[i].max = s_st[i].sum = s_st[i].dot = s_st[i].target = s_st[i].has_target = 7.0;
        s_st[i].wdot = s_st[i].wsum = s_st[i].target_weight = 7.0;
        s_rl[i] = s_lse[i] = 7.0f;
    }
    for (i = 0; i < 8; i++) {
        s_keep[i] = s_d[i] = 7.0f;
    }
    s_loss = 7.0f;
    s_stats.loss = 7.0f;
    s_stats.rows_used = 7;
}

static void check_sentinels(void)
{
    int i, ok = 1;
    for (i = 0; i < 4; i++) {
        ok &= s_st[i].max == 7.0 && s_st[i].sum == 7.0 && s_st[i].has_target == 7.0;
        ok &= s_st[i].wsum == 7.0 && s_st[i].target_weight == 7.0;
        ok &= s_rl[i] == 7.0f && s_lse[i] == 7.0f;
    }
    for (i = 0; i < 8; i++) {
        ok &= s_keep[i] == 7.0f && s_d[i] == 7.0f;
    }
    ok &= s_loss == 7.0f && s_stats.loss == 7.0f && s_stats.rows_used == 7;
    CHECK(ok);
}

static void errors(void)
{
    /* Two rows of a shard of 2 classes at offset 2 of 5. */
    const float lg[4] = {0.5f, 1.0f, -1.0f, 2.0f}, w2[2] = {1.0f, 2.0f};
    const int64_t t[2] = {3, 0}, bad[2] = {3, 5};
    const int32_t badi[2] = {-1, 0};
    uint32_t am[2];
    sk_row_state good[2], twice[2];
    sk_ce_options o;
    sk_ce_outputs out;
    float k2[4];

    /* Real states of the shard (target 3 held, target 0 not). */
    CHECK_OK(sk_cross_entropy_shard_states(lg, 4, t, 2, k2, 4, 2, 2, 5, NULL, good, 2));
    memcpy(twice, good, sizeof twice);
    CHECK_OK(sk_row_states_merge(twice, 2, good, 2));

    fill_sentinels();
    memset(&out, 0, sizeof out);
    out.row_loss = s_rl;
    out.row_loss_len = 2;
    out.lse = s_lse;
    out.lse_len = 2;

    /* The shard leaves the vocabulary: SK_ERROR_INVALID_OPTION, naming the shard. */
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 4, 2, 4, 5, NULL, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("sk_cross_entropy_shard_states: SK_ERROR_INVALID_OPTION");
    CHECK_MSG("shard");
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 4, 2, SIZE_MAX, 5, NULL, s_st,
                                           2),
             SK_ERROR_INVALID_OPTION);
    CHECK_ST(sk_cross_entropy_shard_states(NULL, 0, t, 2, NULL, 0, 0, 6, 5, NULL, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, s_d, 4, 2, 4, 5, NULL, good, 2,
                                             good, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("sk_cross_entropy_shard_backward: SK_ERROR_INVALID_OPTION");
    CHECK_MSG("shard");
    check_sentinels();

    /* Wrong lengths: states, keep, targets, this shard's weights, own, merged, dlogits, the
     * finalize's outputs. */
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 1),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`states`");
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 3, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`keep` has length 3, but the other arguments need length 4");
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 1, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`targets`");
    CHECK_ST(sk_cross_entropy_shard_states(NULL, 0, t, 2, s_keep, 4, 0, 2, 5, NULL, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`keep`");
    CHECK_OK(sk_ce_options_default(&o));
    o.weight = w2;
    o.weight_len = 1;
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, &o, s_st, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`weight`");
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, &o, good, 2, good,
                                             2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`weight`");
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 1,
                                             twice, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`own`");
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 2,
                                             twice, 1),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`merged`");
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, s_d, 3, 2, 2, 5, NULL, good, 2,
                                             twice, 2),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`dlogits`");
    CHECK_ST(sk_ce_states_finalize(good, 2, t, 1, 5, NULL, &out, &s_stats, &s_loss),
             SK_ERROR_LENGTH_MISMATCH);
    out.lse_len = 1;
    CHECK_ST(sk_ce_states_finalize(good, 2, t, 2, 5, NULL, &out, &s_stats, &s_loss),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`lse`");
    out.lse_len = 2;
    check_sentinels();

    /* States not merged over every shard exactly once: a missing shard (row 1's target 0 is
     * held by no state) and a shard merged twice (row 0's target counted twice), in the
     * finalize and in the backward. */
    CHECK_ST(sk_ce_states_finalize(good, 2, t, 2, 5, NULL, &out, &s_stats, &s_loss),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("sk_ce_states_finalize: SK_ERROR_INVALID_OPTION");
    CHECK_MSG("row 1 holds its token 0 times");
    CHECK_ST(sk_ce_states_finalize(twice, 2, t, 2, 5, NULL, &out, &s_stats, &s_loss),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("row 0 holds its token 2 times");
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 2, good,
                                             2),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("row 1 holds its token 0 times");
    check_sentinels();

    /* An argmax output; SK_REDUCTION_NONE without row_loss; bad options. */
    out.argmax = am;
    out.argmax_len = 2;
    CHECK_ST(sk_ce_states_finalize(good, 2, t, 2, 5, NULL, &out, &s_stats, &s_loss),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("argmax");
    out.argmax = NULL;
    out.argmax_len = 0;
    CHECK_OK(sk_ce_options_default(&o));
    o.reduction = SK_REDUCTION_NONE;
    CHECK_ST(sk_ce_states_finalize(good, 2, t, 2, 5, &o, NULL, &s_stats, &s_loss),
             SK_ERROR_MISSING_OUTPUT);
    CHECK_MSG("`row_loss`");
    o.reduction = 7;
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, &o, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("reduction");
    CHECK_OK(sk_ce_options_default(&o));
    o.label_smoothing = 2.0f;
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, &o, s_st, 2),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("label_smoothing");
    CHECK_ST(sk_ce_states_finalize(good, 2, t, 2, 5, &o, &out, &s_stats, &s_loss),
             SK_ERROR_INVALID_OPTION);
    check_sentinels();

    /* Targets outside the vocabulary (not the ignore_index). */
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, bad, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 1 has label 5");
    CHECK_ST(sk_cross_entropy_shard_states_i32(lg, 4, badi, 2, s_keep, 4, 2, 2, 5, NULL, s_st,
                                               2),
             SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 0 has label -1");
    CHECK_ST(sk_ce_states_finalize_i32(good, 2, badi, 2, 5, NULL, &out, &s_stats, &s_loss),
             SK_ERROR_BAD_LABEL);
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, bad, 2, s_d, 4, 2, 2, 5, NULL, good, 2,
                                             good, 2),
             SK_ERROR_BAD_LABEL);
    if (sizeof(size_t) > 4) {
        size_t huge = (size_t)1 << 32;
        CHECK_ST(sk_cross_entropy_shard_states(NULL, 0, NULL, 0, NULL, 0, 0, 0, huge, NULL,
                                               NULL, 0),
                 SK_ERROR_TOO_MANY_CLASSES);
    }
    check_sentinels();

    /* NULL pointers. */
    CHECK_ST(sk_cross_entropy_shard_states(NULL, 4, t, 2, s_keep, 4, 2, 2, 5, NULL, s_st, 2),
             SK_NULL_POINTER);
    CHECK_MSG("sk_cross_entropy_shard_states: SK_NULL_POINTER: `logits` is NULL");
    CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, s_keep, 4, 2, 2, 5, NULL, NULL, 2),
             SK_NULL_POINTER);
    CHECK_MSG("`states` is NULL");
    CHECK_ST(sk_ce_states_finalize(NULL, 2, t, 2, 5, NULL, &out, &s_stats, &s_loss),
             SK_NULL_POINTER);
    CHECK_MSG("`states` is NULL");
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, NULL, 4, 2, 2, 5, NULL, good, 2,
                                             good, 2),
             SK_NULL_POINTER);
    CHECK_MSG("`dlogits` is NULL");
    CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, s_d, 4, 2, 2, 5, NULL, good, 2, NULL,
                                             2),
             SK_NULL_POINTER);
    CHECK_MSG("`merged` is NULL");
    check_sentinels();

    /* Overlaps: keep over states, the loss over the states, dlogits over merged. */
    {
        double space[16];
        float *buf = (float *)(void *)space;
        sk_row_state *stp = (sk_row_state *)(void *)space;
        int i;
        for (i = 0; i < 32; i++) {
            buf[i] = (float)i;
        }
        CHECK_ST(sk_cross_entropy_shard_states(lg, 4, t, 2, buf + 2, 4, 2, 2, 5, NULL, stp, 2),
                 SK_OVERLAP);
        CHECK_MSG("the output `keep` overlaps `states`");
        CHECK_ST(sk_ce_states_finalize(stp, 2, t, 2, 5, NULL, NULL, NULL, buf + 3), SK_OVERLAP);
        CHECK_MSG("`loss` overlaps `states`");
        CHECK_ST(sk_cross_entropy_shard_backward(lg, 4, t, 2, buf, 4, 2, 2, 5, NULL, good, 2,
                                                 stp, 2),
                 SK_OVERLAP);
        CHECK_MSG("`dlogits` overlaps `merged`");
        for (i = 0; i < 32; i++) {
            CHECK(buf[i] == (float)i);
        }
    }
    check_sentinels();

    /* Zero rows: nothing to do. */
    CHECK_OK(sk_cross_entropy_shard_states(NULL, 0, NULL, 0, NULL, 0, 4, 0, 8, NULL, NULL, 0));
    CHECK_OK(sk_ce_states_finalize(NULL, 0, NULL, 0, 8, NULL, NULL, NULL, NULL));
    CHECK_OK(sk_cross_entropy_shard_backward(NULL, 0, NULL, 0, NULL, 0, 4, 4, 8, NULL, NULL, 0,
                                             NULL, 0));
}

int main(void)
{
    make_batch();
    for_each_tier(numeric);
    by_hand();
    /* Any number of threads: the same bits. */
    {
        static result one, three;
        sk_ce_options o;
        CHECK_OK(sk_ce_options_default(&o));
        o.label_smoothing = 0.1f;
        o.weight = g_w;
        o.weight_len = COLS;
        CHECK_OK(sk_set_num_threads(1));
        pipeline(&SPLITS[0], &o, 0, 0, &one);
        CHECK_OK(sk_set_num_threads(3));
        pipeline(&SPLITS[0], &o, 0, 0, &three);
        CHECK_OK(sk_set_num_threads(0));
        CHECK(memcmp(&one, &three, sizeof one) == 0);
    }
    errors();
    return finish("test_ce_shard");
}

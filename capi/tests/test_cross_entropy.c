/* Cross-entropy through the C ABI: values derived by hand on every tier (uniform logits give
 * ln C; two classes give the logistic loss), every option and output, every argument error. */
#include <stdint.h>

#include "check.h"

#define LN2 0.69314718055994530942
#define LN4 1.38629436111989061883

static void numeric(int32_t tier)
{
    const float zeros[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t t2[2] = {3, 0};
    const int32_t t2i[2] = {3, 0};
    float loss = -1.0f, g[8], z[8];
    sk_ce_options o;
    sk_ce_outputs out;
    sk_ce_stats st;
    float row_loss[2], lse[2];
    uint32_t am[2];
    (void)tier;

    /* Uniform logits: the loss is ln C, with or without label smoothing or soft-capping. */
    CHECK_OK(sk_cross_entropy(zeros, 8, t2, 2, 4, NULL, &loss));
    CHECK_NEAR(loss, LN4, 1e-6);
    CHECK_OK(sk_cross_entropy_i32(zeros, 8, t2i, 2, 4, NULL, &loss));
    CHECK_NEAR(loss, LN4, 1e-6);
    CHECK_OK(sk_ce_options_default(&o));
    CHECK(o.reduction == SK_REDUCTION_MEAN && o.has_ignore_index == 1 && o.ignore_index == -100);
    CHECK(o.scale == 1.0f && o.softcap == 0.0f && o.weight == NULL);
    o.label_smoothing = 0.1f;
    o.softcap = 5.0f;
    CHECK_OK(sk_cross_entropy(zeros, 8, t2, 2, 4, &o, &loss));
    CHECK_NEAR(loss, LN4, 1e-6);
    /* z-loss adds zl * lse^2 = zl * (ln 4)^2. */
    CHECK_OK(sk_ce_options_default(&o));
    o.z_loss = 0.5f;
    CHECK_OK(sk_cross_entropy(zeros, 8, t2, 2, 4, &o, &loss));
    CHECK_NEAR(loss, LN4 + 0.5 * LN4 * LN4, 1e-5);

    /* Two classes: the logistic loss ln(1 + e^-(z_t - z_other)). */
    {
        const float lg[2] = {1.0f, 0.0f};
        const int64_t t0[1] = {0};
        CHECK_OK(sk_cross_entropy(lg, 2, t0, 1, 2, NULL, &loss));
        CHECK_NEAR(loss, log(1.0 + exp(-1.0)), 1e-6);
        /* gradient: p - onehot = [s(1) - 1, 1 - s(1)] with s the logistic function */
        CHECK_OK(sk_cross_entropy_fwd_bwd(lg, 2, t0, 1, g, 2, 2, NULL, &loss));
        CHECK_NEAR(g[0], 1.0 / (1.0 + exp(-1.0)) - 1.0, 1e-6);
        CHECK_NEAR(g[1], 1.0 - 1.0 / (1.0 + exp(-1.0)), 1e-6);
    }

    /* Gradient of the mean: (softmax - onehot) / N = ([1/2, 1/2] - onehot) / 2. */
    {
        const int64_t t[2] = {1, 0};
        const int32_t ti[2] = {1, 0};
        CHECK_OK(sk_cross_entropy_fwd_bwd(zeros, 4, t, 2, g, 4, 2, NULL, &loss));
        CHECK_NEAR(loss, LN2, 1e-6);
        CHECK(g[0] == 0.25f && g[1] == -0.25f && g[2] == -0.25f && g[3] == 0.25f);
        CHECK_OK(sk_cross_entropy_fwd_bwd_i32(zeros, 4, ti, 2, g, 4, 2, NULL, NULL));
        CHECK(g[0] == 0.25f && g[3] == 0.25f);
        memset(z, 0, sizeof z);
        CHECK_OK(sk_cross_entropy_fwd_bwd_inplace(z, 4, t, 2, 2, NULL, &loss));
        CHECK(z[0] == 0.25f && z[1] == -0.25f);
        memset(z, 0, sizeof z);
        CHECK_OK(sk_cross_entropy_fwd_bwd_inplace_i32(z, 4, ti, 2, 2, NULL, &loss));
        CHECK(z[2] == -0.25f);
        /* grad == logits through the separate-buffer form runs in place too. */
        memset(z, 0, sizeof z);
        CHECK_OK(sk_cross_entropy_fwd_bwd(z, 4, t, 2, z, 4, 2, NULL, &loss));
        CHECK(z[0] == 0.25f && z[3] == 0.25f);
        /* scale multiplies the gradient. */
        CHECK_OK(sk_ce_options_default(&o));
        o.scale = 2.0f;
        CHECK_OK(sk_cross_entropy_fwd_bwd(zeros, 4, t, 2, g, 4, 2, &o, &loss));
        CHECK(g[0] == 0.5f && g[1] == -0.5f);
    }

    /* Class weights: mean = (1 ln2 + 3 ln2) / (1 + 3) = ln 2; sum = 4 ln 2. */
    {
        const float w[2] = {1.0f, 3.0f};
        const int64_t t[2] = {0, 1};
        CHECK_OK(sk_ce_options_default(&o));
        o.weight = w;
        o.weight_len = 2;
        CHECK_OK(sk_cross_entropy(zeros, 4, t, 2, 2, &o, &loss));
        CHECK_NEAR(loss, LN2, 1e-6);
        o.reduction = SK_REDUCTION_SUM;
        CHECK_OK(sk_cross_entropy(zeros, 4, t, 2, 2, &o, &loss));
        CHECK_NEAR(loss, 4.0 * LN2, 1e-5);
    }

    /* Reduction NONE with row_loss, the ignore_index, lse and argmax outputs, stats. */
    {
        const float lg[6] = {2.0f, 1.0f, 0.0f, /* row 2 */ 0.0f, 0.0f, 3.0f};
        const int64_t t[2] = {0, -100};
        double e0 = log(exp(2.0) + exp(1.0) + 1.0);
        CHECK_OK(sk_ce_options_default(&o));
        o.reduction = SK_REDUCTION_NONE;
        memset(&out, 0, sizeof out);
        out.row_loss = row_loss;
        out.row_loss_len = 2;
        out.lse = lse;
        out.lse_len = 2;
        out.argmax = am;
        out.argmax_len = 2;
        CHECK_OK(sk_cross_entropy_ext(lg, 6, t, 2, NULL, 0, 3, &o, &out, &st));
        CHECK_NEAR(row_loss[0], e0 - 2.0, 1e-6);
        CHECK(row_loss[1] == 0.0f); /* ignored */
        CHECK_NEAR(lse[0], e0, 1e-6);
        CHECK_NEAR(lse[1], log(2.0 + exp(3.0)), 1e-6);
        CHECK(am[0] == 0 && am[1] == 2);
        CHECK(st.rows_used == 1 && st.has_correct == 1 && st.correct == 1);
        CHECK_NEAR(st.loss, e0 - 2.0, 1e-6);
        CHECK_NEAR(st.loss_f64, e0 - 2.0, 1e-6);
        /* row_scale (NONE only) scales each row's gradient. */
        {
            const float rs[2] = {2.0f, 1.0f};
            const int64_t t0[2] = {0, 2};
            float gg[6];
            o.row_scale = rs;
            o.row_scale_len = 2;
            CHECK_OK(sk_cross_entropy_ext(lg, 6, t0, 2, gg, 6, 3, &o, &out, &st));
            CHECK_NEAR(gg[0], 2.0 * (exp(2.0 - e0) - 1.0), 1e-6);
            CHECK_NEAR(gg[1], 2.0 * exp(1.0 - e0), 1e-6);
            CHECK(st.correct == 2);
        }
        /* i32 ext, in place. */
        {
            const int32_t ti[2] = {0, 2};
            float zz[6];
            memcpy(zz, lg, sizeof zz);
            CHECK_ST(sk_cross_entropy_ext_i32(zz, 6, ti, 2, zz, 6, 3, NULL, &out, &st), SK_OK);
            CHECK_NEAR(zz[0], 0.5 * (exp(2.0 - e0) - 1.0), 1e-6);
            CHECK(st.rows_used == 2);
        }
    }

    /* All rows ignored: MEAN gives NaN, or 0 with SK_ALL_IGNORED_ZERO. */
    {
        const int64_t t[2] = {-100, -100};
        CHECK_OK(sk_cross_entropy(zeros, 4, t, 2, 2, NULL, &loss));
        CHECK(isnan(loss));
        CHECK_OK(sk_ce_options_default(&o));
        o.all_ignored = SK_ALL_IGNORED_ZERO;
        CHECK_OK(sk_cross_entropy(zeros, 4, t, 2, 2, &o, &loss));
        CHECK(loss == 0.0f);
        /* Without the ignore_index, -100 is a bad label. */
        o.has_ignore_index = 0;
        CHECK_ST(sk_cross_entropy(zeros, 4, t, 2, 2, &o, &loss), SK_ERROR_BAD_LABEL);
    }

    /* Probability targets: y = [1/4, 3/4] on zero logits: loss ln 2, grad p - y. */
    {
        const float y[2] = {0.25f, 0.75f};
        CHECK_OK(sk_cross_entropy_probs(zeros, 2, y, 2, 2, NULL, &loss));
        CHECK_NEAR(loss, LN2, 1e-6);
        CHECK_OK(sk_cross_entropy_probs_fwd_bwd(zeros, 2, y, 2, g, 2, 2, NULL, &loss));
        CHECK(g[0] == 0.25f && g[1] == -0.25f);
        memset(z, 0, sizeof z);
        CHECK_OK(sk_cross_entropy_probs_fwd_bwd_inplace(z, 2, y, 2, 2, NULL, &loss));
        CHECK(z[0] == 0.25f && z[1] == -0.25f);
        CHECK_OK(sk_cross_entropy_probs_ext(zeros, 2, y, 2, g, 2, 2, NULL, NULL, &st));
        CHECK_NEAR(st.loss, LN2, 1e-6);
        CHECK(st.has_correct == 0 && st.rows_used == 1 && st.denominator == 1.0);
    }
}

static void errors(void)
{
    const float lg[4] = {0, 0, 0, 0};
    const int64_t t[2] = {0, 1}, bad[2] = {0, 7};
    const int32_t badi[2] = {-1, 0};
    float g[4], loss = 0.0f, rl[2];
    sk_ce_options o;
    sk_ce_outputs out;

    CHECK_ST(sk_cross_entropy(NULL, 4, t, 2, 2, NULL, &loss), SK_NULL_POINTER);
    CHECK_MSG("`logits` is NULL");
    CHECK_ST(sk_cross_entropy(lg, 4, NULL, 2, 2, NULL, &loss), SK_NULL_POINTER);
    CHECK_MSG("`targets` is NULL");
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 0, NULL, &loss), SK_ERROR_ZERO_DIM);
    CHECK_MSG("`cols` is 0");
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 3, NULL, &loss), SK_ERROR_NOT_MULTIPLE);
    /* A bad label: the message names the row and the label; nothing is written. */
    g[0] = 42.0f;
    CHECK_ST(sk_cross_entropy_fwd_bwd(lg, 4, bad, 2, g, 4, 2, NULL, &loss), SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 1 has label 7, which is neither a class in 0..2 nor the ignore_index");
    CHECK(g[0] == 42.0f);
    CHECK_ST(sk_cross_entropy_i32(lg, 4, badi, 2, 2, NULL, &loss), SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 0 has label -1");
    /* Mismatched lengths. */
    CHECK_ST(sk_cross_entropy(lg, 4, t, 1, 2, NULL, &loss), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`targets` has length 1, but the other arguments need length 2");
    CHECK_ST(sk_cross_entropy_fwd_bwd(lg, 4, t, 2, g, 3, 2, NULL, &loss),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`grad` has length 3");
    CHECK_ST(sk_cross_entropy_probs(lg, 4, lg, 2, 2, NULL, &loss), SK_ERROR_LENGTH_MISMATCH);
    CHECK_OK(sk_ce_options_default(&o));
    o.weight = lg;
    o.weight_len = 3;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`weight` has length 3");
    /* Invalid options. */
    CHECK_OK(sk_ce_options_default(&o));
    o.label_smoothing = 2.0f;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("label_smoothing");
    CHECK_OK(sk_ce_options_default(&o));
    o.reduction = 7;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("reduction");
    CHECK_OK(sk_ce_options_default(&o));
    o.softcap = -1.0f;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_INVALID_OPTION);
    CHECK_OK(sk_ce_options_default(&o));
    o.all_ignored = 3;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_INVALID_OPTION);
    CHECK_OK(sk_ce_options_default(&o));
    o.z_loss = -1.0f;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_INVALID_OPTION);
    CHECK_OK(sk_ce_options_default(&o));
    o.scale = INFINITY;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_INVALID_OPTION);
    CHECK_OK(sk_ce_options_default(&o));
    o.row_scale = lg;
    o.row_scale_len = 2; /* row_scale without SK_REDUCTION_NONE */
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_INVALID_OPTION);
    CHECK_OK(sk_ce_options_default(&o));
    o.weight = NULL;
    o.weight_len = 2; /* NULL with a nonzero length */
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_NULL_POINTER);
    CHECK_MSG("`weight` is NULL");
    /* Missing output: NONE without row_loss. */
    CHECK_OK(sk_ce_options_default(&o));
    o.reduction = SK_REDUCTION_NONE;
    CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, &o, &loss), SK_ERROR_MISSING_OUTPUT);
    CHECK_MSG("`row_loss` must be given");
    memset(&out, 0, sizeof out);
    out.row_loss = rl;
    out.row_loss_len = 1;
    CHECK_ST(sk_cross_entropy_ext(lg, 4, t, 2, NULL, 0, 2, &o, &out, NULL),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`row_loss` has length 1");
    /* Overlaps: the gradient over part of the logits, an output over the targets. */
    {
        float buf[6] = {0, 0, 0, 0, 0, 0};
        CHECK_ST(sk_cross_entropy_fwd_bwd(buf, 4, t, 2, buf + 2, 4, 2, NULL, &loss), SK_OVERLAP);
        out.row_loss = (float *)(void *)buf;
        out.row_loss_len = 2;
        CHECK_ST(sk_cross_entropy_ext(buf, 4, t, 2, NULL, 0, 2, &o, &out, NULL), SK_OVERLAP);
        CHECK_MSG("the output `row_loss` overlaps `logits`");
    }
    /* Options and outputs pointers must be aligned. */
    {
        double space[16];
        const sk_ce_options *mis = (const sk_ce_options *)(const void *)((char *)space + 4);
        CHECK_ST(sk_cross_entropy(lg, 4, t, 2, 2, mis, &loss), SK_MISALIGNED);
        CHECK_ST(sk_ce_options_default(NULL), SK_NULL_POINTER);
    }
}

/* Out-values (loss, stats) are outputs like the arrays: one that overlaps any other argument
 * (an array, the other out-value, the options or outputs struct) is SK_OVERLAP, and nothing is
 * written. The buffers are 8-byte aligned doubles so that an sk_ce_stats fits anywhere. */
static void out_value_overlaps(void)
{
    const float z[6] = {1.0f, 2.0f, 3.0f, 3.0f, 2.0f, 1.0f};
    const int64_t t[2] = {0, 2};
    const int32_t t32[2] = {0, 2};
    double gspace[8], zspace[8], pspace[8], ospace[8];
    float *g = (float *)(void *)gspace; /* 6 gradient floats, then spare room */
    float *zz = (float *)(void *)zspace;
    float *probs = (float *)(void *)pspace;
    float *rl = (float *)(void *)ospace;
    sk_ce_options o;
    sk_ce_outputs out;
    sk_ce_stats *st;
    int i;

    for (i = 0; i < 16; i++) {
        g[i] = 7.0f;
        zz[i] = i < 6 ? z[i] : 7.0f;
        probs[i] = i < 6 ? 1.0f / 3.0f : 7.0f;
        rl[i] = 7.0f;
    }
    /* The audit's example: the loss over the gradient's first element. */
    CHECK_ST(sk_cross_entropy_fwd_bwd(z, 6, t, 2, g, 6, 3, NULL, &g[0]), SK_OVERLAP);
    CHECK_MSG("the output `grad` overlaps `loss`");
    CHECK_ST(sk_cross_entropy_fwd_bwd_i32(z, 6, t32, 2, g, 6, 3, NULL, &g[5]), SK_OVERLAP);
    CHECK_ST(sk_cross_entropy_probs_fwd_bwd(z, 6, probs, 6, g, 6, 3, NULL, &g[3]), SK_OVERLAP);
    /* In place: the loss over the logits (which are the gradient). */
    CHECK_ST(sk_cross_entropy_fwd_bwd_inplace(zz, 6, t, 2, 3, NULL, &zz[2]), SK_OVERLAP);
    CHECK_ST(sk_cross_entropy_fwd_bwd_inplace_i32(zz, 6, t32, 2, 3, NULL, &zz[2]), SK_OVERLAP);
    CHECK_ST(sk_cross_entropy_probs_fwd_bwd_inplace(zz, 6, probs, 6, 3, NULL, &zz[0]),
             SK_OVERLAP);
    CHECK_ST(sk_cross_entropy_fwd_bwd(zz, 6, t, 2, zz, 6, 3, NULL, &zz[1]), SK_OVERLAP);
    /* Loss only: the loss over an input (logits, probability targets, class weights, the
     * options struct). */
    CHECK_ST(sk_cross_entropy(zz, 6, t, 2, 3, NULL, &zz[4]), SK_OVERLAP);
    CHECK_MSG("`loss` overlaps `logits`");
    CHECK_ST(sk_cross_entropy_i32(zz, 6, t32, 2, 3, NULL, &zz[4]), SK_OVERLAP);
    CHECK_ST(sk_cross_entropy_probs(z, 6, probs, 6, 3, NULL, &probs[1]), SK_OVERLAP);
    CHECK_MSG("`loss` overlaps `targets`");
    CHECK_OK(sk_ce_options_default(&o));
    o.weight = rl;
    o.weight_len = 3;
    CHECK_ST(sk_cross_entropy(z, 6, t, 2, 3, &o, &rl[2]), SK_OVERLAP);
    CHECK_MSG("`loss` overlaps `weight`");
    CHECK_OK(sk_ce_options_default(&o));
    CHECK_ST(sk_cross_entropy(z, 6, t, 2, 3, &o, &o.z_loss), SK_OVERLAP);
    CHECK_MSG("`loss` overlaps `opts`");
    CHECK(o.z_loss == 0.0f && o.scale == 1.0f);

    /* Stats over the gradient, the logits (in place), a per-row output, the targets, the
     * options and the outputs structs. */
    st = (sk_ce_stats *)(void *)gspace;
    CHECK_ST(sk_cross_entropy_ext(z, 6, t, 2, g, 6, 3, NULL, NULL, st), SK_OVERLAP);
    CHECK_MSG("`stats`");
    CHECK_ST(sk_cross_entropy_probs_ext(z, 6, probs, 6, g, 6, 3, NULL, NULL, st), SK_OVERLAP);
    st = (sk_ce_stats *)(void *)zspace;
    CHECK_ST(sk_cross_entropy_ext(zz, 6, t, 2, zz, 6, 3, NULL, NULL, st), SK_OVERLAP);
    CHECK_ST(sk_cross_entropy_ext_i32(zz, 6, t32, 2, zz, 6, 3, NULL, NULL, st), SK_OVERLAP);
    CHECK_ST(sk_cross_entropy_ext(zz, 6, t, 2, NULL, 0, 3, NULL, NULL, st), SK_OVERLAP);
    memset(&out, 0, sizeof out);
    out.lse = rl;
    out.lse_len = 2;
    st = (sk_ce_stats *)(void *)ospace;
    CHECK_ST(sk_cross_entropy_ext(z, 6, t, 2, NULL, 0, 3, NULL, &out, st), SK_OVERLAP);
    CHECK_MSG("`lse` overlaps `stats`");
    out.lse = NULL;
    out.lse_len = 0;
    out.argmax = (uint32_t *)(void *)ospace;
    out.argmax_len = 2;
    CHECK_ST(sk_cross_entropy_ext_i32(z, 6, t32, 2, NULL, 0, 3, NULL, &out, st), SK_OVERLAP);
    st = (sk_ce_stats *)(void *)pspace;
    CHECK_ST(sk_cross_entropy_probs_ext(z, 6, probs, 6, NULL, 0, 3, NULL, NULL, st), SK_OVERLAP);
    {
        union {
            sk_ce_options o;
            sk_ce_outputs out;
            sk_ce_stats st;
        } u;
        CHECK_OK(sk_ce_options_default(&u.o));
        CHECK_ST(sk_cross_entropy_ext(z, 6, t, 2, NULL, 0, 3, &u.o, NULL, &u.st), SK_OVERLAP);
        CHECK_MSG("`opts`");
        CHECK(u.o.scale == 1.0f && u.o.ignore_index == -100);
        memset(&u, 0, sizeof u);
        CHECK_ST(sk_cross_entropy_ext(z, 6, t, 2, NULL, 0, 3, NULL, &u.out, &u.st), SK_OVERLAP);
        CHECK_MSG("`outputs`");
    }
    /* Nothing was written by any refused call. */
    for (i = 0; i < 16; i++) {
        CHECK(g[i] == 7.0f);
        CHECK(zz[i] == (i < 6 ? z[i] : 7.0f));
        CHECK(probs[i] == (i < 6 ? 1.0f / 3.0f : 7.0f));
        CHECK(rl[i] == 7.0f);
    }
    /* Disjoint out-values still work. */
    {
        float loss = 0.0f;
        sk_ce_stats s2;
        CHECK_OK(sk_cross_entropy_fwd_bwd(z, 6, t, 2, g, 6, 3, NULL, &loss));
        CHECK_OK(sk_cross_entropy_ext(z, 6, t, 2, g, 6, 3, NULL, NULL, &s2));
        CHECK(s2.loss == loss && loss > 0.0f);
    }
}

int main(void)
{
    for_each_tier(numeric);
    errors();
    out_value_overlaps();
    return finish("test_cross_entropy");
}

/* Per-token log-probabilities through the C ABI: values derived by hand on every tier (a
 * uniform row gives logp = -ln C and H = ln C; two classes at temperature T give
 * logp_0 = -ln(1 + e^-(z0 - z1)/T) and d logp / dz = (onehot - p) / T), the backward from the
 * saved values against fwd_bwd, in place against out of place, the ignore_index, int32_t
 * tokens, and every argument error (nothing written). */
#include <float.h>
#include <stdint.h>

#include "check.h"

#define LN2 0.69314718055994530942
#define LN4 1.38629436111989061883

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

/* The module's formulas in double precision for one row (no ignored token): logp, H, lse and
 * the gradient of gl logp + gh H. */
static void ref_row(const float *x, size_t cols, int64_t t, double temp, double cap, double gl,
                    double gh, double *logp, double *h, double *lse, double *grad)
{
    double z[8], p[8], m = -INFINITY, s = 0.0, ent = 0.0;
    size_t k;
    for (k = 0; k < cols; k++) {
        z[k] = cap > 0.0 ? cap * tanh((double)x[k] / cap) : (double)x[k];
        if (z[k] / temp > m) {
            m = z[k] / temp;
        }
    }
    for (k = 0; k < cols; k++) {
        s += exp(z[k] / temp - m);
    }
    *lse = m + log(s);
    for (k = 0; k < cols; k++) {
        p[k] = exp(z[k] / temp - *lse);
        ent -= p[k] * log(p[k]);
    }
    *logp = z[t] / temp - *lse;
    *h = ent;
    for (k = 0; k < cols; k++) {
        double d = gl * (((int64_t)k == t ? 1.0 : 0.0) - p[k]) - gh * p[k] * (log(p[k]) + ent);
        d /= temp;
        if (cap > 0.0) {
            d *= 1.0 - (z[k] / cap) * (z[k] / cap);
        }
        grad[k] = d;
    }
}

static void numeric(int32_t tier)
{
    const float zeros[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t t2[2] = {3, 0};
    const int32_t t2i[2] = {3, 0};
    float lp[4], h[4], lse[4], d[8], d2[8], z[8];
    sk_token_options o;
    sk_token_outputs out;
    sk_token_grads g;
    sk_token_saved sv;
    int i;
    (void)tier;

    /* Defaults. */
    CHECK_OK(sk_token_options_default(&o));
    CHECK(o.temperature == 1.0f && o.softcap == 0.0f);
    CHECK(o.has_ignore_index == 1 && o.ignore_index == -100);

    /* Uniform rows: logp = -ln C, H = ln C, lse = ln C; at any temperature and with a cap. */
    out = outs(lp, h, lse, 2);
    CHECK_OK(sk_token_logprobs(zeros, 8, t2, 2, 4, NULL, &out));
    for (i = 0; i < 2; i++) {
        CHECK_NEAR(lp[i], -LN4, 1e-6);
        CHECK_NEAR(h[i], LN4, 1e-6);
        CHECK_NEAR(lse[i], LN4, 1e-6);
    }
    CHECK_OK(sk_token_logprobs_i32(zeros, 8, t2i, 2, 4, NULL, &out));
    CHECK_NEAR(lp[1], -LN4, 1e-6);
    CHECK_NEAR(h[0], LN4, 1e-6);
    o.temperature = 0.5f;
    o.softcap = 3.0f;
    CHECK_OK(sk_token_logprobs(zeros, 8, t2, 2, 4, &o, &out));
    CHECK_NEAR(lp[0], -LN4, 1e-6);
    CHECK_NEAR(h[1], LN4, 1e-6);
    /* logp alone (entropy and lse absent). */
    out = outs(lp, NULL, NULL, 2);
    lp[0] = lp[1] = 7.0f;
    CHECK_OK(sk_token_logprobs(zeros, 8, t2, 2, 4, NULL, &out));
    CHECK_NEAR(lp[0], -LN4, 1e-6);
    /* d logp / dz = onehot - 1/C on a uniform row. */
    {
        const float one[2] = {1.0f, 1.0f};
        g = grads_of(one, NULL, 2);
        out = outs(lp, NULL, NULL, 2);
        CHECK_OK(sk_token_logprobs_fwd_bwd(zeros, 8, t2, 2, d, 8, 4, NULL, &g, &out));
        CHECK_NEAR(d[0], -0.25, 1e-7);
        CHECK_NEAR(d[3], 0.75, 1e-7);
        CHECK_NEAR(d[4], 0.75, 1e-7);
        CHECK_NEAR(d[7], -0.25, 1e-7);
    }

    /* Two classes at temperature T = 2, logits (1, 0): logp_0 = -ln(1 + e^-(1/2)),
     * logp_1 = -ln(1 + e^(1/2)); the gradient (onehot - p) / T. */
    {
        const float lg[4] = {1.0f, 0.0f, 1.0f, 0.0f};
        const int64_t t[2] = {0, 1};
        const int32_t ti[2] = {0, 1};
        const float gl[2] = {1.0f, 1.0f};
        double p0 = 1.0 / (1.0 + exp(-0.5)), p1 = 1.0 - p0;
        double hh = -p0 * log(p0) - p1 * log(p1);
        CHECK_OK(sk_token_options_default(&o));
        o.temperature = 2.0f;
        out = outs(lp, h, lse, 2);
        CHECK_OK(sk_token_logprobs(lg, 4, t, 2, 2, &o, &out));
        CHECK_NEAR(lp[0], -log(1.0 + exp(-0.5)), 1e-6);
        CHECK_NEAR(lp[1], -log(1.0 + exp(0.5)), 1e-6);
        CHECK_NEAR(h[0], hh, 1e-6);
        CHECK_NEAR(h[1], hh, 1e-6);
        CHECK_NEAR(lse[0], log(exp(0.5) + 1.0), 1e-6);
        g = grads_of(gl, NULL, 2);
        CHECK_OK(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, d, 4, 2, &o, &g, &out));
        CHECK_NEAR(d[0], (1.0 - p0) / 2.0, 1e-6);
        CHECK_NEAR(d[1], -p1 / 2.0, 1e-6);
        CHECK_NEAR(d[2], -p0 / 2.0, 1e-6);
        CHECK_NEAR(d[3], (1.0 - p1) / 2.0, 1e-6);
        /* The backward from the saved lse gives the same gradient. */
        sv = saved_of(lse, NULL, 2);
        CHECK_OK(sk_token_logprobs_backward(lg, 4, t, 2, d2, 4, 2, &o, &sv, &g));
        for (i = 0; i < 4; i++) {
            CHECK_NEAR(d2[i], d[i], 1e-7);
        }
        CHECK_OK(sk_token_logprobs_backward_i32(lg, 4, ti, 2, d2, 4, 2, &o, &sv, &g));
        CHECK_NEAR(d2[0], (1.0 - p0) / 2.0, 1e-6);
        /* dH / dz_k = -p_k (ln p_k + H) / T, from the saved H. */
        {
            const float gh[2] = {1.0f, 0.0f};
            sk_token_grads ge = grads_of(NULL, gh, 2);
            sv = saved_of(lse, h, 2);
            CHECK_OK(sk_token_logprobs_backward(lg, 4, t, 2, d2, 4, 2, &o, &sv, &ge));
            CHECK_NEAR(d2[0], -p0 * (log(p0) + hh) / 2.0, 1e-6);
            CHECK_NEAR(d2[1], -p1 * (log(p1) + hh) / 2.0, 1e-6);
            CHECK(d2[2] == 0.0f && d2[3] == 0.0f); /* zero upstream gradient on row 1 */
        }
        /* No upstream gradient at all (grads NULL): a zero gradient. */
        sv = saved_of(lse, NULL, 2);
        for (i = 0; i < 4; i++) {
            d2[i] = 7.0f;
        }
        CHECK_OK(sk_token_logprobs_backward(lg, 4, t, 2, d2, 4, 2, &o, &sv, NULL));
        CHECK(d2[0] == 0.0f && d2[1] == 0.0f && d2[2] == 0.0f && d2[3] == 0.0f);
    }

    /* Soft-capping: z = c tanh(x / c) first, and the gradient times 1 - (z / c)^2. */
    {
        const float lg[2] = {1.0f, 0.0f};
        const int64_t t[1] = {0};
        const float gl[1] = {1.0f};
        double z0 = 2.0 * tanh(0.5), p0 = 1.0 / (1.0 + exp(-z0));
        CHECK_OK(sk_token_options_default(&o));
        o.softcap = 2.0f;
        out = outs(lp, NULL, NULL, 1);
        g = grads_of(gl, NULL, 1);
        CHECK_OK(sk_token_logprobs_fwd_bwd(lg, 2, t, 1, d, 2, 2, &o, &g, &out));
        CHECK_NEAR(lp[0], -log(1.0 + exp(-z0)), 1e-6);
        CHECK_NEAR(d[0], (1.0 - p0) * (1.0 - tanh(0.5) * tanh(0.5)), 1e-6);
        CHECK_NEAR(d[1], -(1.0 - p0), 1e-6); /* x = 0: the cap's factor is 1 */
    }

    /* A masked (-inf) logit has p = 0: (0, 0, -inf) is a fair coin. */
    {
        const float lg[3] = {0.0f, 0.0f, -INFINITY};
        const int64_t t[1] = {1};
        const float gl[1] = {1.0f}, gh[1] = {1.0f};
        out = outs(lp, h, NULL, 1);
        g = grads_of(gl, gh, 1);
        CHECK_OK(sk_token_logprobs_fwd_bwd(lg, 3, t, 1, d, 3, 3, NULL, &g, &out));
        CHECK_NEAR(lp[0], -LN2, 1e-6);
        CHECK_NEAR(h[0], LN2, 1e-6);
        /* d(logp + H) = (onehot - p) - p (ln p + H) = (onehot - p) on a uniform pair */
        CHECK_NEAR(d[0], -0.5, 1e-6);
        CHECK_NEAR(d[1], 0.5, 1e-6);
        CHECK(d[2] == 0.0f);
    }

    /* The ignore_index: logp = 0, H = 0, a zero gradient row; lse still written. */
    {
        const float lg[4] = {1.0f, 0.0f, 2.0f, 0.0f};
        const int64_t t[2] = {-100, 1};
        const int32_t ti[2] = {-100, 1};
        const float gl[2] = {1.0f, 1.0f}, gh[2] = {0.5f, 0.5f};
        out = outs(lp, h, lse, 2);
        g = grads_of(gl, gh, 2);
        CHECK_OK(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, d, 4, 2, NULL, &g, &out));
        CHECK(lp[0] == 0.0f && h[0] == 0.0f && d[0] == 0.0f && d[1] == 0.0f);
        CHECK_NEAR(lse[0], log(exp(1.0) + 1.0), 1e-6);
        CHECK_NEAR(lp[1], -log(exp(2.0) + 1.0), 1e-6);
        CHECK(d[2] != 0.0f);
        memcpy(z, lg, sizeof lg);
        CHECK_OK(sk_token_logprobs_fwd_bwd_inplace_i32(z, 4, ti, 2, 2, NULL, &g, &out));
        CHECK(z[0] == 0.0f && z[1] == 0.0f);
        CHECK_NEAR(z[2], d[2], 1e-6);
        /* Another ignore_index, and none (then -100 is a bad token). */
        CHECK_OK(sk_token_options_default(&o));
        o.ignore_index = 1;
        {
            sk_token_outputs o1 = outs(lp, h, NULL, 1);
            sk_token_grads g1 = grads_of(gl, gh, 1);
            CHECK_OK(sk_token_logprobs_fwd_bwd(lg, 2, t + 1, 1, d, 2, 2, &o, &g1, &o1));
            CHECK(lp[0] == 0.0f && h[0] == 0.0f && d[0] == 0.0f && d[1] == 0.0f);
        }
        o.has_ignore_index = 0;
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, &o, &out), SK_ERROR_BAD_LABEL);
        CHECK_MSG("row 0 has label -100");
    }

    /* A general 3 x 5 batch with a temperature, both upstream gradients: the forward, the
     * backward from the saved values and fwd_bwd all match the double-precision formulas;
     * the in-place forms match the out-of-place ones; int32_t tokens match int64_t. */
    {
        const float lg[15] = {0.3f, -1.2f, 2.0f,  0.7f, -0.4f, /* row 1 */
                              1.5f, 1.5f,  -3.0f, 0.1f, 0.9f,  /* row 2 */
                              -2.0f, 0.5f, 0.0f,  4.0f, -1.0f};
        const int64_t t[3] = {2, 0, 4};
        const int32_t ti[3] = {2, 0, 4};
        const float gl[3] = {1.0f, -0.5f, 2.0f}, gh[3] = {0.25f, 1.0f, -0.5f};
        float lp1[3], h1[3], lse1[3], lp2[3], h2[3], lse2[3];
        float dfb[15], dbw[15], dfbi[15], dbwi[15], dfb32[15];
        sk_token_outputs o1 = outs(lp1, h1, lse1, 3), o2 = outs(lp2, h2, lse2, 3);
        sk_token_grads gg = grads_of(gl, gh, 3);
        sk_token_saved ss = saved_of(lse1, h1, 3);
        int r, k;
        CHECK_OK(sk_token_options_default(&o));
        o.temperature = 0.7f;
        CHECK_OK(sk_token_logprobs(lg, 15, t, 3, 5, &o, &o1));
        CHECK_OK(sk_token_logprobs_backward(lg, 15, t, 3, dbw, 15, 5, &o, &ss, &gg));
        CHECK_OK(sk_token_logprobs_fwd_bwd(lg, 15, t, 3, dfb, 15, 5, &o, &gg, &o2));
        for (r = 0; r < 3; r++) {
            double rl, rh, rlse, rg[5];
            ref_row(lg + 5 * r, 5, t[r], 0.7f, 0.0, gl[r], gh[r], &rl, &rh, &rlse, rg);
            CHECK_NEAR(lp1[r], rl, 2e-6);
            CHECK_NEAR(h1[r], rh, 2e-6);
            CHECK_NEAR(lse1[r], rlse, 2e-6);
            CHECK_NEAR(lp2[r], lp1[r], 1e-6);
            CHECK_NEAR(h2[r], h1[r], 1e-6);
            CHECK_NEAR(lse2[r], lse1[r], 1e-6);
            for (k = 0; k < 5; k++) {
                CHECK_NEAR(dbw[5 * r + k], rg[k], 2e-6);
                CHECK_NEAR(dfb[5 * r + k], dbw[5 * r + k], 1e-6);
            }
        }
        /* In place (the _inplace forms, and dlogits == logits through the others). */
        memcpy(dbwi, lg, sizeof lg);
        CHECK_OK(sk_token_logprobs_backward_inplace(dbwi, 15, t, 3, 5, &o, &ss, &gg));
        memcpy(dfbi, lg, sizeof lg);
        CHECK_OK(sk_token_logprobs_fwd_bwd_inplace(dfbi, 15, t, 3, 5, &o, &gg, &o2));
        for (k = 0; k < 15; k++) {
            CHECK_NEAR(dbwi[k], dbw[k], 1e-7);
            CHECK_NEAR(dfbi[k], dfb[k], 1e-7);
        }
        for (r = 0; r < 3; r++) {
            CHECK_NEAR(lp2[r], lp1[r], 1e-6);
        }
        memcpy(dbwi, lg, sizeof lg);
        CHECK_OK(sk_token_logprobs_backward(dbwi, 15, t, 3, dbwi, 15, 5, &o, &ss, &gg));
        memcpy(dfbi, lg, sizeof lg);
        CHECK_OK(sk_token_logprobs_fwd_bwd(dfbi, 15, t, 3, dfbi, 15, 5, &o, &gg, &o2));
        for (k = 0; k < 15; k++) {
            CHECK_NEAR(dbwi[k], dbw[k], 1e-7);
            CHECK_NEAR(dfbi[k], dfb[k], 1e-7);
        }
        memcpy(dbwi, lg, sizeof lg);
        CHECK_OK(sk_token_logprobs_backward_inplace_i32(dbwi, 15, ti, 3, 5, &o, &ss, &gg));
        CHECK_OK(sk_token_logprobs_fwd_bwd_i32(lg, 15, ti, 3, dfb32, 15, 5, &o, &gg, &o2));
        CHECK_OK(sk_token_logprobs_i32(lg, 15, ti, 3, 5, &o, &o2));
        for (k = 0; k < 15; k++) {
            CHECK_NEAR(dbwi[k], dbw[k], 1e-7);
            CHECK(dfb32[k] == dfb[k]);
        }
        for (r = 0; r < 3; r++) {
            CHECK(lp2[r] == lp1[r] && h2[r] == h1[r] && lse2[r] == lse1[r]);
        }
    }

    /* Zero rows: nothing to do. */
    out = outs(NULL, NULL, NULL, 0);
    CHECK_OK(sk_token_logprobs(NULL, 0, NULL, 0, 4, NULL, &out));
    sv = saved_of(NULL, NULL, 0);
    CHECK_OK(sk_token_logprobs_backward(NULL, 0, NULL, 0, NULL, 0, 4, NULL, &sv, NULL));
}

/* Every refused call leaves these untouched. */
static float s_lp[4], s_h[4], s_lse[4], s_d[8], s_z[8];

static void fill_sentinels(void)
{
    int i;
    for (i = 0; i < 4; i++) {
        s_lp[i] = s_h[i] = s_lse[i] = 7.0f;
    }
    for (i = 0; i < 8; i++) {
        s_d[i] = 7.0f;
        s_z[i] = (float)i;
    }
}

static void check_sentinels(void)
{
    int i, ok = 1;
    for (i = 0; i < 4; i++) {
        ok &= s_lp[i] == 7.0f && s_h[i] == 7.0f && s_lse[i] == 7.0f;
    }
    for (i = 0; i < 8; i++) {
        ok &= s_d[i] == 7.0f && s_z[i] == (float)i;
    }
    CHECK(ok);
}

static void errors(void)
{
    const float lg[4] = {0, 1, 2, 3};
    const int64_t t[2] = {0, 1}, bad[2] = {0, 7};
    const int32_t badi[2] = {-1, 0};
    const float gl[2] = {1.0f, 1.0f}, gh[2] = {1.0f, 1.0f}, lse[2] = {1.0f, 1.0f};
    sk_token_options o;
    sk_token_outputs out, out1;
    sk_token_grads g;
    sk_token_saved sv;

    fill_sentinels();
    out = outs(s_lp, s_h, s_lse, 2);
    g = grads_of(gl, gh, 2);

    /* NULL pointers. */
    CHECK_ST(sk_token_logprobs(NULL, 4, t, 2, 2, NULL, &out), SK_NULL_POINTER);
    CHECK_MSG("sk_token_logprobs: SK_NULL_POINTER: `logits` is NULL");
    CHECK_ST(sk_token_logprobs(lg, 4, NULL, 2, 2, NULL, &out), SK_NULL_POINTER);
    CHECK_MSG("`tokens` is NULL");
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, NULL), SK_NULL_POINTER);
    CHECK_MSG("`outputs` is NULL");
    CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, s_d, 4, 2, NULL, &g, NULL), SK_NULL_POINTER);
    CHECK_ST(sk_token_logprobs_backward(lg, 4, t, 2, s_d, 4, 2, NULL, NULL, &g),
             SK_NULL_POINTER);
    CHECK_MSG("`saved` is NULL");
    CHECK_ST(sk_token_logprobs_backward_inplace_i32(s_z, 4, badi, 2, 2, NULL, NULL, &g),
             SK_NULL_POINTER);
    CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, NULL, 4, 2, NULL, &g, &out),
             SK_NULL_POINTER);
    CHECK_MSG("`dlogits` is NULL");
    out1 = outs(NULL, NULL, NULL, 0);
    out1.logp_len = 2;
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &out1), SK_NULL_POINTER);
    CHECK_MSG("`logp` is NULL");
    out1 = outs(s_lp, NULL, NULL, 2);
    out1.lse_len = 2;
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &out1), SK_NULL_POINTER);
    CHECK_MSG("`lse` is NULL");
    {
        sk_token_grads g1 = grads_of(gl, NULL, 2);
        g1.entropy_len = 2;
        CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, s_d, 4, 2, NULL, &g1, &out),
                 SK_NULL_POINTER);
        CHECK_MSG("`grads.entropy` is NULL");
    }
    sv = saved_of(NULL, NULL, 0);
    sv.lse_len = 2;
    CHECK_ST(sk_token_logprobs_backward(lg, 4, t, 2, s_d, 4, 2, NULL, &sv, &g), SK_NULL_POINTER);
    CHECK_MSG("`saved.lse` is NULL");
    CHECK_ST(sk_token_options_default(NULL), SK_NULL_POINTER);
    check_sentinels();

    /* Shapes. */
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 0, NULL, &out), SK_ERROR_ZERO_DIM);
    CHECK_MSG("`cols` is 0");
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 3, NULL, &out), SK_ERROR_NOT_MULTIPLE);
    CHECK_ST(sk_token_logprobs(lg, 4, t, 1, 2, NULL, &out), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`tokens` has length 1, but the other arguments need length 2");
    out1 = outs(s_lp, NULL, NULL, 1);
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &out1), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`logp` has length 1");
    out1 = outs(NULL, NULL, NULL, 0);
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &out1), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`logp` has length 0");
    out1 = outs(s_lp, s_h, NULL, 2);
    out1.entropy_len = 3;
    CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &out1), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`entropy` has length 3");
    out1 = outs(s_lp, NULL, s_lse, 2);
    out1.lse_len = 1;
    CHECK_ST(sk_token_logprobs_i32(lg, 4, badi, 2, 2, NULL, &out1), SK_ERROR_LENGTH_MISMATCH);
    CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, s_d, 3, 2, NULL, &g, &out),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`dlogits` has length 3");
    {
        sk_token_grads g1 = grads_of(gl, gh, 2);
        g1.logp_len = 1;
        CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, s_d, 4, 2, NULL, &g1, &out),
                 SK_ERROR_LENGTH_MISMATCH);
        CHECK_MSG("`grads.logp` has length 1");
    }
    sv = saved_of(lse, NULL, 1);
    CHECK_ST(sk_token_logprobs_backward(lg, 4, t, 2, s_d, 4, 2, NULL, &sv, NULL),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`saved.lse` has length 1");
    /* More than 2^32 - 1 classes (no rows, so no memory is needed). */
    if (sizeof(size_t) > 4) {
        size_t huge = (size_t)1 << 32;
        out1 = outs(NULL, NULL, NULL, 0);
        CHECK_ST(sk_token_logprobs(NULL, 0, NULL, 0, huge, NULL, &out1),
                 SK_ERROR_TOO_MANY_CLASSES);
    }
    check_sentinels();

    /* The entropy's upstream gradient needs the saved entropy. */
    sv = saved_of(lse, NULL, 2);
    CHECK_ST(sk_token_logprobs_backward(lg, 4, t, 2, s_d, 4, 2, NULL, &sv, &g),
             SK_ERROR_MISSING_OUTPUT);
    CHECK_MSG("`saved.entropy`");
    CHECK_ST(sk_token_logprobs_backward_inplace(s_z, 4, t, 2, 2, NULL, &sv, &g),
             SK_ERROR_MISSING_OUTPUT);
    check_sentinels();

    /* Bad tokens: the message names the row and the token; nothing is written. */
    CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, bad, 2, s_d, 4, 2, NULL, &g, &out),
             SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 1 has label 7, which is neither a class in 0..2 nor the ignore_index");
    CHECK_ST(sk_token_logprobs_i32(lg, 4, badi, 2, 2, NULL, &out), SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 0 has label -1");
    CHECK_ST(sk_token_logprobs_fwd_bwd_inplace(s_z, 4, bad, 2, 2, NULL, &g, &out),
             SK_ERROR_BAD_LABEL);
    sv = saved_of(lse, gh, 2);
    CHECK_ST(sk_token_logprobs_backward(lg, 4, bad, 2, s_d, 4, 2, NULL, &sv, &g),
             SK_ERROR_BAD_LABEL);
    check_sentinels();

    /* Bad options: temperature 0, negative, subnormal, infinite, NaN; a negative or NaN cap. */
    {
        const float temps[5] = {0.0f, -1.0f, FLT_MIN / 2.0f, INFINITY, NAN};
        int i;
        for (i = 0; i < 5; i++) {
            CHECK_OK(sk_token_options_default(&o));
            o.temperature = temps[i];
            CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, &o, &out), SK_ERROR_INVALID_OPTION);
            CHECK_MSG("temperature");
            CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, s_d, 4, 2, &o, &g, &out),
                     SK_ERROR_INVALID_OPTION);
        }
        CHECK_OK(sk_token_options_default(&o));
        o.temperature = FLT_MIN; /* the smallest valid one */
        out1 = outs(NULL, NULL, NULL, 0);
        CHECK_OK(sk_token_logprobs(NULL, 0, NULL, 0, 2, &o, &out1));
        CHECK_OK(sk_token_options_default(&o));
        o.softcap = -1.0f;
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, &o, &out), SK_ERROR_INVALID_OPTION);
        CHECK_MSG("softcap");
        o.softcap = NAN;
        sv = saved_of(lse, gh, 2);
        CHECK_ST(sk_token_logprobs_backward(lg, 4, t, 2, s_d, 4, 2, &o, &sv, &g),
                 SK_ERROR_INVALID_OPTION);
        /* A zeroed struct (not filled by sk_token_options_default) has temperature 0. */
        memset(&o, 0, sizeof o);
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, &o, &out), SK_ERROR_INVALID_OPTION);
    }
    check_sentinels();

    /* Overlaps: an output over the logits, the tokens or another output; dlogits over part
     * of the logits; an output over a struct argument; a saved or grads array over dlogits. */
    {
        double space[8];
        float *buf = (float *)(void *)space;
        int i;
        for (i = 0; i < 16; i++) {
            buf[i] = (float)i;
        }
        out1 = outs(buf + 1, NULL, NULL, 2);
        CHECK_ST(sk_token_logprobs(buf, 4, t, 2, 2, NULL, &out1), SK_OVERLAP);
        CHECK_MSG("the output `logp` overlaps `logits`");
        out1 = outs(s_lp, s_lp + 1, NULL, 2);
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &out1), SK_OVERLAP);
        CHECK_MSG("`logp` overlaps `entropy`");
        out1 = outs((float *)(void *)t, NULL, NULL, 2);
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &out1), SK_OVERLAP);
        CHECK_MSG("`tokens`");
        CHECK_ST(sk_token_logprobs_fwd_bwd(buf, 4, t, 2, buf + 2, 4, 2, NULL, &g, &out),
                 SK_OVERLAP);
        CHECK_MSG("the output `dlogits` overlaps `logits`");
        CHECK_ST(sk_token_logprobs_backward(buf, 4, t, 2, buf, 3, 2, NULL, &sv, &g), SK_OVERLAP);
        sv = saved_of(buf + 4, NULL, 2);
        CHECK_ST(sk_token_logprobs_backward(lg, 4, t, 2, buf + 2, 4, 2, NULL, &sv, NULL),
                 SK_OVERLAP);
        CHECK_MSG("`dlogits` overlaps `saved.lse`");
        {
            sk_token_grads g1 = grads_of(buf + 8, NULL, 2);
            CHECK_ST(sk_token_logprobs_fwd_bwd_inplace(buf + 6, 4, t, 2, 2, NULL, &g1, &out),
                     SK_OVERLAP);
            CHECK_MSG("`grads.logp`");
        }
        /* In place, an output over the logits (which are the gradient). */
        out1 = outs(buf + 2, NULL, NULL, 2);
        CHECK_ST(sk_token_logprobs_fwd_bwd_inplace(buf, 4, t, 2, 2, NULL, &g, &out1),
                 SK_OVERLAP);
        for (i = 0; i < 16; i++) {
            CHECK(buf[i] == (float)i);
        }
    }
    {
        /* A struct argument is an argument: outputs over the options, the outputs struct or
         * the grads struct, dlogits over the saved struct. */
        union {
            sk_token_options o;
            sk_token_outputs out;
            sk_token_grads g;
            sk_token_saved s;
            float f[12];
        } u;
        CHECK_OK(sk_token_options_default(&u.o));
        out1 = outs(u.f, NULL, NULL, 2);
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, &u.o, &out1), SK_OVERLAP);
        CHECK_MSG("`opts`");
        CHECK(u.o.temperature == 1.0f && u.o.ignore_index == -100);
        u.out = outs(u.f + 8, NULL, NULL, 2);
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL, &u.out), SK_OVERLAP);
        CHECK_MSG("`outputs`");
        u.g = grads_of(gl, NULL, 2);
        CHECK_ST(sk_token_logprobs_fwd_bwd(lg, 4, t, 2, u.f + 4, 4, 2, NULL, &u.g, &out),
                 SK_OVERLAP);
        CHECK_MSG("`grads`");
        u.s = saved_of(lse, NULL, 2);
        CHECK_ST(sk_token_logprobs_backward(lg, 4, t, 2, u.f, 4, 2, NULL, &u.s, NULL),
                 SK_OVERLAP);
        CHECK_MSG("`saved`");
    }
    /* Struct pointers must be aligned. */
    {
        double space[16];
        const char *base = (const char *)space;
        const sk_token_options *mis = (const sk_token_options *)(const void *)(base + 4);
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, mis, &out), SK_MISALIGNED);
        CHECK_ST(sk_token_logprobs(lg, 4, t, 2, 2, NULL,
                                   (const sk_token_outputs *)(const void *)(base + 4)),
                 SK_MISALIGNED);
    }
    check_sentinels();
}

int main(void)
{
    for_each_tier(numeric);
    errors();
    return finish("test_token");
}

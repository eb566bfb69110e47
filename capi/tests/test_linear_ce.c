/* The fused linear cross-entropy through the C ABI, on every tier: loss, dA, dW, db and the
 * per-row outputs against a naive double-precision implementation written here (forward,
 * softmax cross-entropy with every option, gradients), for several shapes, options and
 * chunkings (whole rows, row chunks, two-pass class blocks, a tiny byte budget), accumulation,
 * probability targets; then the argument errors. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

/* ---------------------------------------------------------------------------------------- */
/* The reference                                                                            */
/* ---------------------------------------------------------------------------------------- */

/* A problem: a [b, d], w [c, d] with leading dimension ld, bias (c floats or NULL), and either
 * labels (b) or probs ([b, c]). */
typedef struct problem {
    size_t b, c, d, ld;
    const float *a, *w, *bias;
    const int64_t *labels;
    const float *probs;
} problem;

/* What the reference computes (arrays sized by the caller; dw is dense [c, d]). */
typedef struct reference {
    double loss;
    double rows_used, denominator;
    double *da, *dw, *db, *row_loss, *lse;
    uint32_t *argmax;
    size_t correct;
} reference;

/* The loss and gradients of the options `o` (an sk_ce_options, read as the documentation
 * defines them), in double. dw0/db0: the initial dW (dense) and db when accumulating, or NULL. */
static void ref_compute(const problem *p, const sk_ce_options *o, const double *dw0,
                        const double *db0, reference *r)
{
    size_t i, l, k;
    const size_t b = p->b, c = p->c, d = p->d;
    double *z = malloc(sizeof(double) * (c + 1));
    double *g = malloc(sizeof(double) * (b * c + 1));
    double eps = o->label_smoothing, zl = o->z_loss, cap = o->softcap;
    double wsum = 0.0, den = 0.0, total = 0.0;
    size_t used = 0;

    for (k = 0; k < c; k++) {
        wsum += o->weight ? o->weight[k] : 1.0;
    }
    /* The reduction's denominator. */
    for (i = 0; i < b; i++) {
        if (p->probs) {
            den += 1.0;
            used++;
        } else if (!(o->has_ignore_index && p->labels[i] == o->ignore_index)) {
            den += o->weight ? o->weight[p->labels[i]] : 1.0;
            used++;
        }
    }
    r->correct = 0;
    for (i = 0; i < b; i++) {
        double m = -INFINITY, s = 0.0, lse, gi, loss = 0.0;
        int ignored = !p->probs && o->has_ignore_index && p->labels[i] == o->ignore_index;
        uint32_t am = 0;
        for (k = 0; k < c; k++) {
            double v = p->bias ? p->bias[k] : 0.0;
            for (l = 0; l < d; l++) {
                v += (double)p->a[i * d + l] * p->w[k * p->ld + l];
            }
            if (cap != 0.0) {
                v = cap * tanh(v / cap);
            }
            z[k] = v;
            if (v > m) {
                m = v;
                am = (uint32_t)k;
            }
        }
        for (k = 0; k < c; k++) {
            s += exp(z[k] - m);
        }
        lse = m + log(s);
        r->lse[i] = lse;
        r->argmax[i] = am;
        gi = o->scale * (o->reduction == SK_REDUCTION_MEAN ? 1.0 / den : 1.0) *
             (o->row_scale ? o->row_scale[i] : 1.0);
        if (ignored) {
            for (k = 0; k < c; k++) {
                g[i * c + k] = 0.0;
            }
        } else if (p->probs) {
            double wy = 0.0;
            for (k = 0; k < c; k++) {
                double y = (1.0 - eps) * p->probs[i * c + k] + eps / (double)c;
                double wyk = (o->weight ? o->weight[k] : 1.0) * y;
                wy += wyk;
                loss += wyk * (lse - z[k]);
            }
            loss += zl * lse * lse;
            for (k = 0; k < c; k++) {
                double y = (1.0 - eps) * p->probs[i * c + k] + eps / (double)c;
                double wyk = (o->weight ? o->weight[k] : 1.0) * y;
                double pk = exp(z[k] - lse);
                g[i * c + k] = gi * ((wy + 2.0 * zl * lse) * pk - wyk);
            }
        } else {
            size_t t = (size_t)p->labels[i];
            double wt = o->weight ? o->weight[t] : 1.0;
            double a0 = (1.0 - eps) * wt + eps / (double)c * wsum;
            loss = (1.0 - eps) * wt * (lse - z[t]) + zl * lse * lse;
            for (k = 0; k < c; k++) {
                double wk = o->weight ? o->weight[k] : 1.0;
                double pk = exp(z[k] - lse);
                loss += eps / (double)c * wk * (lse - z[k]);
                g[i * c + k] = gi * ((a0 + 2.0 * zl * lse) * pk - eps / (double)c * wk -
                                     (k == t ? (1.0 - eps) * wt : 0.0));
            }
            r->correct += am == t;
        }
        if (cap != 0.0) {
            for (k = 0; k < c; k++) {
                g[i * c + k] *= 1.0 - (z[k] / cap) * (z[k] / cap);
            }
        }
        r->row_loss[i] = loss;
        total += loss;
    }
    r->rows_used = (double)used;
    r->denominator = den;
    r->loss = o->reduction == SK_REDUCTION_MEAN ? total / den : total;
    /* dA = G W, dW = dW0 + G^T A, db = db0 + sum_rows G. */
    for (i = 0; i < b; i++) {
        for (l = 0; l < d; l++) {
            double v = 0.0;
            for (k = 0; k < c; k++) {
                v += g[i * c + k] * p->w[k * p->ld + l];
            }
            r->da[i * d + l] = v;
        }
    }
    for (k = 0; k < c; k++) {
        double vb = db0 ? db0[k] : 0.0;
        for (l = 0; l < d; l++) {
            double v = dw0 ? dw0[k * d + l] : 0.0;
            for (i = 0; i < b; i++) {
                v += g[i * c + k] * p->a[i * d + l];
            }
            r->dw[k * d + l] = v;
        }
        for (i = 0; i < b; i++) {
            vb += g[i * c + k];
        }
        r->db[k] = vb;
    }
    free(z);
    free(g);
}

/* ---------------------------------------------------------------------------------------- */
/* Running and comparing                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* A padding value that must survive in dW. */
#define PAD_SENTINEL 999.0f

/* |got - want| <= tol (1 + |want|), counted as one check per array. */
static int close_all(const char *what, const float *got, const double *want, size_t n,
                     size_t stride, size_t cols, double tol)
{
    size_t i, bad = 0;
    for (i = 0; i < n; i++) {
        size_t at = (i / cols) * stride + i % cols;
        if (!(fabs((double)got[at] - want[i]) <= tol * (1.0 + fabs(want[i])))) {
            if (bad < 3) {
                fprintf(stderr, "  %s[%zu] = %.9g, reference %.9g\n", what, i, (double)got[at],
                        want[i]);
            }
            bad++;
        }
    }
    return bad == 0;
}

/* One call of sk_linear_cross_entropy(_probs) with every output, compared with the reference.
 * accumulate: dW and db start at 0.5 and the reference adds that. */
static void run_case(const char *name, int32_t tier, const problem *p, const sk_ce_options *o,
                     const sk_linear_ce_options *lo, double tol)
{
    const size_t b = p->b, c = p->c, d = p->d, ld = p->ld;
    const size_t dw_len = c * ld;
    int acc = lo != NULL && lo->accumulate != 0;
    float *da = malloc(sizeof(float) * (b * d + 1));
    float *dw = malloc(sizeof(float) * (dw_len + 1));
    float *db = malloc(sizeof(float) * (c + 1));
    float *rl = malloc(sizeof(float) * (b + 1));
    float *lse = malloc(sizeof(float) * (b + 1));
    uint32_t *am = malloc(sizeof(uint32_t) * (b + 1));
    double *dw0 = malloc(sizeof(double) * (c * d + 1));
    double *db0 = malloc(sizeof(double) * (c + 1));
    reference r;
    sk_ce_outputs out;
    sk_ce_stats st;
    sk_status s;
    size_t i;
    int ok = 1, pad_ok = 1;

    r.da = malloc(sizeof(double) * (b * d + 1));
    r.dw = malloc(sizeof(double) * (c * d + 1));
    r.db = malloc(sizeof(double) * (c + 1));
    r.row_loss = malloc(sizeof(double) * (b + 1));
    r.lse = malloc(sizeof(double) * (b + 1));
    r.argmax = malloc(sizeof(uint32_t) * (b + 1));
    for (i = 0; i < b * d; i++) {
        da[i] = NAN;
    }
    for (i = 0; i < dw_len; i++) {
        dw[i] = i % ld < d ? (acc ? 0.5f : NAN) : PAD_SENTINEL;
    }
    for (i = 0; i < c * d; i++) {
        dw0[i] = 0.5;
    }
    for (i = 0; i < c; i++) {
        db[i] = acc ? 0.5f : NAN;
        db0[i] = 0.5;
    }
    memset(&out, 0, sizeof out);
    out.row_loss = rl;
    out.row_loss_len = b;
    out.lse = lse;
    out.lse_len = b;
    out.argmax = am;
    out.argmax_len = b;
    if (p->probs) {
        s = sk_linear_cross_entropy_probs(p->a, b * d, p->w, dw_len, c, d, ld, p->bias,
                                          p->bias ? c : 0, p->probs, b * c, o, lo, da, b * d,
                                          dw, dw_len, db, c, &out, &st);
    } else {
        s = sk_linear_cross_entropy(p->a, b * d, p->w, dw_len, c, d, ld, p->bias,
                                    p->bias ? c : 0, p->labels, b, o, lo, da, b * d, dw, dw_len,
                                    db, c, &out, &st);
    }
    CHECK_OK(s);
    if (s != SK_OK) {
        fprintf(stderr, "  case %s on %s\n", name, sk_isa_name(tier));
    } else {
        ref_compute(p, o, acc ? dw0 : NULL, acc ? db0 : NULL, &r);
        ok &= fabs(st.loss_f64 - r.loss) <= tol * (1.0 + fabs(r.loss));
        ok &= fabs((double)st.loss - r.loss) <= tol * (1.0 + fabs(r.loss));
        if (!ok) {
            fprintf(stderr, "  loss %.9g, reference %.9g\n", st.loss_f64, r.loss);
        }
        ok &= (double)st.rows_used == r.rows_used && st.denominator == r.denominator;
        ok &= close_all("da", da, r.da, b * d, d, d ? d : 1, tol);
        ok &= close_all("dw", dw, r.dw, c * d, ld, d ? d : 1, tol);
        ok &= close_all("db", db, r.db, c, c, c, tol);
        ok &= close_all("row_loss", rl, r.row_loss, b, b, b ? b : 1, tol);
        ok &= close_all("lse", lse, r.lse, b, b, b ? b : 1, tol);
        for (i = 0; i < b; i++) {
            ok &= am[i] == r.argmax[i];
        }
        if (p->probs) {
            ok &= st.has_correct == 0;
        } else {
            ok &= st.has_correct == 1 && st.correct == r.correct;
        }
        for (i = 0; i < dw_len; i++) {
            pad_ok &= i % ld < d || dw[i] == PAD_SENTINEL;
        }
        CHECK(ok);
        CHECK(pad_ok);
        if (!ok || !pad_ok) {
            fprintf(stderr, "  case %s on %s differs from the reference\n", name,
                    sk_isa_name(tier));
        }
    }
    free(da);
    free(dw);
    free(db);
    free(rl);
    free(lse);
    free(am);
    free(dw0);
    free(db0);
    free(r.da);
    free(r.dw);
    free(r.db);
    free(r.row_loss);
    free(r.lse);
    free(r.argmax);
}

/* Deterministic data in about [-1, 1]. */
static void fill(float *v, size_t n, unsigned seed)
{
    size_t i;
    uint32_t x = seed * 2654435761u + 12345u;
    for (i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        v[i] = (float)((double)(x >> 8) / (double)(1u << 24) * 2.0 - 1.0);
    }
}

static void numeric(int32_t tier)
{
    /* Shape 1: B 5, C 7, D 3, W strided (ld 4), a bias, one ignored row. */
    float a1[15], w1[28], b1[7];
    const int64_t t1[5] = {3, 0, -100, 6, 2};
    /* Shape 2: B 9, C 37, D 6, dense, class weights. */
    float a2[54], w2[222], cw2[37], rs2[9];
    const int64_t t2[9] = {0, 36, 5, 5, 17, 30, 2, 11, 23};
    /* Probability targets: B 4, C 6, D 5. */
    float a3[20], w3[30], b3[6], y3[24];
    /* D = 0: the logits are the bias. */
    const float b4[4] = {0.5f, -1.0f, 2.0f, 0.0f};
    const int64_t t4[3] = {2, 0, 3};
    problem p;
    sk_ce_options o;
    sk_linear_ce_options lo;
    size_t i, j;

    fill(a1, 15, 1);
    fill(w1, 28, 2);
    fill(b1, 7, 3);
    fill(a2, 54, 4);
    fill(w2, 222, 5);
    fill(cw2, 37, 6);
    fill(rs2, 9, 7);
    for (i = 0; i < 37; i++) {
        cw2[i] = 1.0f + 0.5f * cw2[i]; /* weights in [0.5, 1.5] */
    }
    fill(a3, 20, 8);
    fill(w3, 30, 9);
    fill(b3, 6, 10);
    for (i = 0; i < 4; i++) {
        float s = 0.0f;
        fill(y3 + 6 * i, 6, 11 + (unsigned)i);
        for (j = 0; j < 6; j++) {
            y3[6 * i + j] = y3[6 * i + j] * y3[6 * i + j];
            s += y3[6 * i + j];
        }
        for (j = 0; j < 6; j++) {
            y3[6 * i + j] /= s;
        }
    }

    /* Shape 1, defaults (mean, ignore_index -100), in every chunking. */
    p.b = 5;
    p.c = 7;
    p.d = 3;
    p.ld = 4;
    p.a = a1;
    p.w = w1;
    p.bias = b1;
    p.labels = t1;
    p.probs = NULL;
    CHECK_OK(sk_ce_options_default(&o));
    CHECK_OK(sk_linear_ce_options_default(&lo));
    CHECK(lo.chunk_rows == 0 && lo.chunk_classes == 0 && lo.chunk_bytes == 0 &&
          lo.accumulate == 0);
    run_case("shape1 NULL lce_opts", tier, &p, &o, NULL, 1e-5);
    run_case("shape1 defaults", tier, &p, &o, &lo, 1e-5);
    lo.chunk_rows = 2;
    run_case("shape1 rows 2", tier, &p, &o, &lo, 1e-5);
    lo.chunk_classes = 3;
    run_case("shape1 rows 2 classes 3", tier, &p, &o, &lo, 1e-5);
    CHECK_OK(sk_linear_ce_options_default(&lo));
    lo.chunk_bytes = 12; /* 3 floats: class blocks chosen automatically */
    run_case("shape1 12 bytes", tier, &p, &o, &lo, 1e-5);
    lo.chunk_bytes = 0;
    lo.accumulate = 1;
    run_case("shape1 accumulate", tier, &p, &o, &lo, 1e-5);
    lo.chunk_classes = 2;
    run_case("shape1 accumulate classes 2", tier, &p, &o, &lo, 1e-5);

    /* Shape 2: sum, class weights, label smoothing, z-loss, soft-cap; rows and class blocks. */
    p.b = 9;
    p.c = 37;
    p.d = 6;
    p.ld = 6;
    p.a = a2;
    p.w = w2;
    p.bias = NULL;
    p.labels = t2;
    CHECK_OK(sk_ce_options_default(&o));
    o.reduction = SK_REDUCTION_SUM;
    o.weight = cw2;
    o.weight_len = 37;
    o.label_smoothing = 0.1f;
    o.z_loss = 1e-3f;
    o.softcap = 2.0f;
    CHECK_OK(sk_linear_ce_options_default(&lo));
    run_case("shape2 sum smoothing zloss softcap", tier, &p, &o, &lo, 2e-5);
    lo.chunk_classes = 5;
    run_case("shape2 classes 5", tier, &p, &o, &lo, 2e-5);
    lo.chunk_rows = 4;
    lo.chunk_classes = 16;
    run_case("shape2 rows 4 classes 16", tier, &p, &o, &lo, 2e-5);
    /* Reduction NONE with row_scale; mean with the scale option. */
    o.reduction = SK_REDUCTION_NONE;
    o.row_scale = rs2;
    o.row_scale_len = 9;
    o.softcap = 0.0f;
    run_case("shape2 none row_scale classes 16", tier, &p, &o, &lo, 2e-5);
    CHECK_OK(sk_linear_ce_options_default(&lo));
    run_case("shape2 none row_scale", tier, &p, &o, &lo, 2e-5);
    CHECK_OK(sk_ce_options_default(&o));
    o.scale = -2.5f;
    o.has_ignore_index = 0;
    run_case("shape2 mean scale", tier, &p, &o, &lo, 2e-5);

    /* Probability targets (whole rows, row chunks). */
    p.b = 4;
    p.c = 6;
    p.d = 5;
    p.ld = 5;
    p.a = a3;
    p.w = w3;
    p.bias = b3;
    p.labels = NULL;
    p.probs = y3;
    CHECK_OK(sk_ce_options_default(&o));
    o.label_smoothing = 0.2f;
    CHECK_OK(sk_linear_ce_options_default(&lo));
    run_case("probs", tier, &p, &o, &lo, 1e-5);
    lo.chunk_rows = 3;
    run_case("probs rows 3", tier, &p, &o, &lo, 1e-5);

    /* No features: the logits are the bias; B comes from the targets. */
    p.b = 3;
    p.c = 4;
    p.d = 0;
    p.ld = 0;
    p.a = NULL;
    p.w = NULL;
    p.bias = b4;
    p.labels = t4;
    p.probs = NULL;
    CHECK_OK(sk_ce_options_default(&o));
    CHECK_OK(sk_linear_ce_options_default(&lo));
    run_case("no features", tier, &p, &o, &lo, 1e-6);
    lo.chunk_classes = 3;
    run_case("no features classes 3", tier, &p, &o, &lo, 1e-6);

    /* Uniform logits (W = 0, no bias): the loss is ln C whatever the chunking. */
    {
        const float a[4] = {1, 2, 3, 4}, w[6] = {0, 0, 0, 0, 0, 0};
        const int64_t t[2] = {0, 2};
        float dbv[3];
        sk_ce_stats st;
        CHECK_OK(sk_linear_ce_options_default(&lo));
        lo.chunk_classes = 1;
        CHECK_OK(sk_linear_cross_entropy(a, 4, w, 6, 3, 2, 2, NULL, 0, t, 2, NULL, &lo, NULL, 0,
                                         NULL, 0, dbv, 3, NULL, &st));
        CHECK_NEAR(st.loss, log(3.0), 1e-6);
        CHECK_NEAR(dbv[0], 1.0 / 3.0 - 0.5, 1e-6);
        CHECK_NEAR(dbv[1], 1.0 / 3.0, 1e-6);
        CHECK(st.has_correct == 0 && st.rows_used == 2 && st.denominator == 2.0);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void errors(void)
{
    float a[6] = {1, 2, 3, 4, 5, 6}; /* [B 3, D 2] */
    const float w[6] = {1, 0, 0, 1, 1, 1}; /* [C 3, D 2] */
    const float bias[3] = {0, 0, 0};
    const int64_t t[3] = {0, 1, 2}, bad[3] = {0, 3, 1};
    const float probs[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    float da[6], dw[6], db[3], rl[3];
    sk_ce_options o;
    sk_linear_ce_options lo;
    sk_ce_outputs out;
    sk_ce_stats st, st_ref;
    int i;

    /* NULL arrays with nonzero lengths (NULL options, outputs and stats are fine). */
    CHECK_ST(sk_linear_cross_entropy(NULL, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_NULL_POINTER);
    CHECK_MSG("sk_linear_cross_entropy: SK_NULL_POINTER: `a` is NULL");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, NULL, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_NULL_POINTER);
    CHECK_MSG("`targets` is NULL");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 6,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_NULL_POINTER);
    CHECK_MSG("`da` is NULL");
    CHECK_OK(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, NULL));

    /* No classes. */
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 0, 0, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_ZERO_DIM);
    CHECK_MSG("`w rows (classes)` is 0");

    /* D = 0 with more classes than the kernels support: every buffer is empty, so only the
     * class bound stops C (this aborted on an allocation, or ran for minutes, before it). */
    {
        const size_t huge[3] = {(size_t)UINT32_MAX + 1, (size_t)1 << 40, (size_t)1 << 60};
        size_t h;
        if (sizeof(size_t) >= 8) {
            for (h = 0; h < 3; h++) {
                CHECK_ST(sk_linear_cross_entropy(NULL, 0, NULL, 0, huge[h], 0, 0, NULL, 0, t, 3,
                                                 NULL, NULL, NULL, 0, NULL, 0, NULL, 0, NULL,
                                                 &st),
                         SK_ERROR_TOO_MANY_CLASSES);
                CHECK_MSG("classes is more than the 4294967295 the kernels support");
            }
        }
    }

    /* A bad label: nothing is written (gradients, per-row outputs, stats). */
    for (i = 0; i < 6; i++) {
        da[i] = 42.0f;
        dw[i] = 42.0f;
    }
    for (i = 0; i < 3; i++) {
        db[i] = 42.0f;
        rl[i] = 42.0f;
    }
    memset(&st, 0x5a, sizeof st);
    memcpy(&st_ref, &st, sizeof st);
    memset(&out, 0, sizeof out);
    out.row_loss = rl;
    out.row_loss_len = 3;
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, bias, 3, bad, 3, NULL, NULL, da, 6, dw,
                                     6, db, 3, &out, &st),
             SK_ERROR_BAD_LABEL);
    CHECK_MSG("row 1 has label 3, which is neither a class in 0..3 nor the ignore_index");
    {
        int untouched = memcmp(&st, &st_ref, sizeof st) == 0;
        for (i = 0; i < 6; i++) {
            untouched &= da[i] == 42.0f && dw[i] == 42.0f;
        }
        for (i = 0; i < 3; i++) {
            untouched &= db[i] == 42.0f && rl[i] == 42.0f;
        }
        CHECK(untouched);
    }

    /* Chunk sizes of 0 mean automatic: the same bits as the defaults and as NULL options, and
     * as an explicit 16 MiB budget. */
    {
        float dw1[6], dw2[6], dw3[6];
        sk_ce_stats s1, s2, s3;
        CHECK_OK(sk_linear_ce_options_default(&lo));
        CHECK_OK(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, bias, 3, t, 3, NULL, NULL, NULL, 0,
                                         dw1, 6, NULL, 0, NULL, &s1));
        lo.chunk_rows = 0;
        lo.chunk_classes = 0;
        lo.chunk_bytes = 0;
        CHECK_OK(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, bias, 3, t, 3, NULL, &lo, NULL, 0,
                                         dw2, 6, NULL, 0, NULL, &s2));
        lo.chunk_bytes = (size_t)16 << 20;
        CHECK_OK(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, bias, 3, t, 3, NULL, &lo, NULL, 0,
                                         dw3, 6, NULL, 0, NULL, &s3));
        CHECK(memcmp(dw1, dw2, sizeof dw1) == 0 && memcmp(dw1, dw3, sizeof dw1) == 0);
        CHECK(s1.loss_f64 == s2.loss_f64 && s1.loss_f64 == s3.loss_f64);
        /* Huge sizes are clamped to the problem. */
        lo.chunk_rows = (size_t)-1;
        lo.chunk_classes = (size_t)-1;
        lo.chunk_bytes = (size_t)-1;
        CHECK_OK(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, bias, 3, t, 3, NULL, &lo, NULL, 0,
                                         dw3, 6, NULL, 0, NULL, &s3));
        CHECK(memcmp(dw1, dw3, sizeof dw1) == 0 && s1.loss_f64 == s3.loss_f64);
    }

    /* Probability targets cannot use class blocks. */
    CHECK_OK(sk_linear_ce_options_default(&lo));
    CHECK_OK(sk_linear_cross_entropy_probs(a, 6, w, 6, 3, 2, 2, bias, 3, probs, 9, NULL, &lo, da,
                                           6, NULL, 0, NULL, 0, NULL, &st));
    lo.chunk_classes = 2;
    CHECK_ST(sk_linear_cross_entropy_probs(a, 6, w, 6, 3, 2, 2, bias, 3, probs, 9, NULL, &lo, da,
                                           6, NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("chunk_classes");
    /* A tiny budget gives probability targets whole rows (one per chunk), not an error. */
    {
        float da1[6];
        sk_ce_stats s1;
        CHECK_OK(sk_linear_ce_options_default(&lo));
        lo.chunk_bytes = 4;
        CHECK_OK(sk_linear_cross_entropy_probs(a, 6, w, 6, 3, 2, 2, bias, 3, probs, 9, NULL, &lo,
                                               da1, 6, NULL, 0, NULL, 0, NULL, &s1));
        CHECK_NEAR(s1.loss_f64, st.loss_f64, 1e-6);
        for (i = 0; i < 6; i++) {
            CHECK_NEAR(da1[i], da[i], 1e-6);
        }
    }
    CHECK_ST(sk_linear_cross_entropy_probs(a, 6, w, 6, 3, 2, 2, bias, 3, probs, 8, NULL, NULL,
                                           NULL, 0, NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`targets` has length 8");

    /* Shapes. */
    CHECK_ST(sk_linear_cross_entropy(a, 5, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_NOT_MULTIPLE);
    CHECK_MSG("`a`");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 1, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_LEADING_DIM);
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 5, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_MATRIX_LENGTH);
    CHECK_MSG("`w`");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, bias, 2, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`bias` has length 2");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 2, NULL, NULL, NULL, 0,
                                     NULL, 0, NULL, 0, NULL, &st),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`targets` has length 2");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, da, 5, NULL,
                                     0, NULL, 0, NULL, &st),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`da` has length 5");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0, dw,
                                     5, NULL, 0, NULL, &st),
             SK_ERROR_MATRIX_LENGTH);
    CHECK_MSG("`dw`");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, db, 2, NULL, &st),
             SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`db` has length 2");

    /* Options: NONE needs row_loss; bad cross-entropy options; misaligned option structs. */
    CHECK_OK(sk_ce_options_default(&o));
    o.reduction = SK_REDUCTION_NONE;
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, &o, NULL, NULL, 0, NULL,
                                     0, NULL, 0, NULL, &st),
             SK_ERROR_MISSING_OUTPUT);
    CHECK_OK(sk_ce_options_default(&o));
    o.label_smoothing = -0.5f;
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, &o, NULL, NULL, 0, NULL,
                                     0, NULL, 0, NULL, &st),
             SK_ERROR_INVALID_OPTION);
    CHECK_MSG("label_smoothing");
    {
        double space[8];
        const sk_linear_ce_options *mis =
            (const sk_linear_ce_options *)(const void *)((char *)space + 4);
        CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, mis, NULL, 0,
                                         NULL, 0, NULL, 0, NULL, &st),
                 SK_MISALIGNED);
        CHECK_MSG("`lce_opts` is not aligned");
        CHECK_ST(sk_linear_ce_options_default(NULL), SK_NULL_POINTER);
    }

    /* Overlaps: a gradient over an input, two outputs over each other. */
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, a, 6, NULL,
                                     0, NULL, 0, NULL, &st),
             SK_OVERLAP);
    CHECK_MSG("the output `da` overlaps `a`");
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, da, 6, da,
                                     6, NULL, 0, NULL, &st),
             SK_OVERLAP);
    memset(&out, 0, sizeof out);
    out.lse = db;
    out.lse_len = 3;
    CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                     NULL, 0, db, 3, &out, &st),
             SK_OVERLAP);
}

/* stats is an output like the arrays: over a gradient (the audit's da and dw), an input, a
 * per-row output or an options struct it is SK_OVERLAP, and nothing is written. Each buffer is
 * 8-byte aligned doubles with room for an sk_ce_stats. */
static void stats_overlaps(void)
{
    double as[8], ws[8], bs[8], das[8], dws[8], dbs[8], ts[8], rls[8];
    float *a = (float *)(void *)as, *w = (float *)(void *)ws, *bias = (float *)(void *)bs;
    float *da = (float *)(void *)das, *dw = (float *)(void *)dws, *db = (float *)(void *)dbs;
    float *rl = (float *)(void *)rls;
    int64_t *t = (int64_t *)(void *)ts;
    float *probs = (float *)(void *)ts; /* [3, 3] probability targets, in place of t */
    sk_ce_outputs out;
    sk_ce_stats good;
    int i;
#define SK_FILL()                                                                           \
    do {                                                                                    \
        for (i = 0; i < 16; i++) {                                                          \
            a[i] = 0.25f * (float)(i % 5) - 0.5f;                                           \
            w[i] = 0.125f * (float)(i % 7) - 0.375f;                                        \
            bias[i] = 0.0f;                                                                 \
            da[i] = dw[i] = db[i] = rl[i] = 7.0f;                                           \
        }                                                                                   \
    } while (0)
    SK_FILL();
    for (i = 0; i < 3; i++) {
        t[i] = i;
    }
#define LCE(st) sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, bias, 3, t, 3, NULL, NULL, da, 6, \
                                        dw, 6, db, 3, &out, (st))
    memset(&out, 0, sizeof out);
    out.row_loss = rl;
    out.row_loss_len = 3;
    CHECK_ST(LCE((sk_ce_stats *)(void *)das), SK_OVERLAP);
    CHECK_MSG("the output `da` overlaps `stats`");
    CHECK_ST(LCE((sk_ce_stats *)(void *)dws), SK_OVERLAP);
    CHECK_MSG("the output `dw` overlaps `stats`");
    CHECK_ST(LCE((sk_ce_stats *)(void *)dbs), SK_OVERLAP);
    CHECK_ST(LCE((sk_ce_stats *)(void *)rls), SK_OVERLAP);
    CHECK_MSG("the output `row_loss` overlaps `stats`");
    CHECK_ST(LCE((sk_ce_stats *)(void *)as), SK_OVERLAP);
    CHECK_MSG("the output `stats` overlaps `a`");
    CHECK_ST(LCE((sk_ce_stats *)(void *)ws), SK_OVERLAP);
    CHECK_ST(LCE((sk_ce_stats *)(void *)bs), SK_OVERLAP);
    CHECK_ST(LCE((sk_ce_stats *)(void *)ts), SK_OVERLAP);
    CHECK_MSG("the output `stats` overlaps `targets`");
    {
        union {
            sk_ce_options o;
            sk_linear_ce_options lo;
            sk_ce_outputs out;
            sk_ce_stats st;
        } u;
        memset(&u, 0, sizeof u);
        CHECK_OK(sk_ce_options_default(&u.o));
        CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, &u.o, NULL, NULL, 0,
                                         NULL, 0, NULL, 0, NULL, &u.st),
                 SK_OVERLAP);
        CHECK_MSG("`opts`");
        CHECK(u.o.scale == 1.0f);
        memset(&u, 0, sizeof u);
        CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, &u.lo, NULL, 0,
                                         NULL, 0, NULL, 0, NULL, &u.st),
                 SK_OVERLAP);
        CHECK_MSG("`lce_opts`");
        memset(&u, 0, sizeof u);
        CHECK_ST(sk_linear_cross_entropy(a, 6, w, 6, 3, 2, 2, NULL, 0, t, 3, NULL, NULL, NULL, 0,
                                         NULL, 0, NULL, 0, &u.out, &u.st),
                 SK_OVERLAP);
        CHECK_MSG("`outputs`");
    }
    /* Probability targets: stats over dw and over the targets. */
    for (i = 0; i < 9; i++) {
        probs[i] = 1.0f / 3.0f;
    }
    CHECK_ST(sk_linear_cross_entropy_probs(a, 6, w, 6, 3, 2, 2, NULL, 0, probs, 9, NULL, NULL,
                                           NULL, 0, dw, 6, NULL, 0, NULL,
                                           (sk_ce_stats *)(void *)dws),
             SK_OVERLAP);
    CHECK_ST(sk_linear_cross_entropy_probs(a, 6, w, 6, 3, 2, 2, NULL, 0, probs, 9, NULL, NULL,
                                           NULL, 0, NULL, 0, NULL, 0, NULL,
                                           (sk_ce_stats *)(void *)ts),
             SK_OVERLAP);
    /* Nothing was written by any refused call. */
    for (i = 0; i < 16; i++) {
        CHECK(da[i] == 7.0f && dw[i] == 7.0f && db[i] == 7.0f && rl[i] == 7.0f);
        CHECK(a[i] == 0.25f * (float)(i % 5) - 0.5f && w[i] == 0.125f * (float)(i % 7) - 0.375f);
        CHECK(bias[i] == 0.0f);
    }
    for (i = 0; i < 9; i++) {
        CHECK(probs[i] == 1.0f / 3.0f);
    }
    /* A disjoint stats struct works. */
    for (i = 0; i < 3; i++) {
        t[i] = i;
    }
    CHECK_OK(LCE(&good));
    CHECK(good.rows_used == 3 && good.loss > 0.0f);
#undef LCE
#undef SK_FILL
}

int main(void)
{
    for_each_tier(numeric);
    errors();
    stats_overlaps();
    return finish("test_linear_ce");
}

/* The sk_output_layer handle: create, init_xavier, weights access, forward, predict,
 * train_step (int64 and int32 labels, the ext form), free; errors; on every tier. */
#include <stdint.h>

#include "check.h"

static void lifecycle(int32_t tier)
{
    sk_output_layer *layer = NULL;
    sk_sgd_options so;
    size_t inputs = 0, classes = 0, wlen = 0, blen = 0;
    float *w = NULL, *b = NULL;
    /* Two classes separated by the sign of the one feature. */
    const float a[4] = {1.0f, -1.0f, 2.0f, -2.0f};
    const int64_t labels[4] = {0, 1, 0, 1};
    const int32_t labels32[4] = {0, 1, 0, 1};
    float first = 0.0f, last = 0.0f, z[2];
    uint32_t pred[4] = {9, 9, 9, 9};
    uint64_t steps = 0;
    int i;
    (void)tier;

    CHECK_OK(sk_sgd_options_default(&so));
    CHECK_OK(sk_output_layer_create(1, 2, &so, &layer));
    CHECK(layer != NULL);
    CHECK_OK(sk_output_layer_shape(layer, &inputs, &classes));
    CHECK(inputs == 1 && classes == 2);
    CHECK_OK(sk_output_layer_shape(layer, NULL, NULL));

    /* Weights access: zero at creation; written through the pointer, seen by forward. */
    CHECK_OK(sk_output_layer_weights(layer, &w, &wlen));
    CHECK_OK(sk_output_layer_bias(layer, &b, &blen));
    CHECK(w != NULL && wlen == 2 && b != NULL && blen == 2);
    CHECK(w[0] == 0.0f && w[1] == 0.0f && b[0] == 0.0f);
    w[0] = 1.0f;
    w[1] = -1.0f;
    b[1] = 0.5f;
    {
        const float x[1] = {2.0f};
        CHECK_OK(sk_output_layer_forward(layer, x, 1, z, 2));
        CHECK(z[0] == 2.0f && z[1] == -1.5f);
    }

    /* Xavier init: deterministic, within +-sqrt(6 / 3), bias zeroed. */
    CHECK_OK(sk_output_layer_init_xavier(layer, 42));
    CHECK(b[0] == 0.0f && b[1] == 0.0f);
    CHECK(fabs(w[0]) <= sqrt(2.0) && fabs(w[1]) <= sqrt(2.0) && w[0] != w[1]);
    {
        sk_output_layer *other = NULL;
        float *w2 = NULL;
        size_t n2 = 0;
        CHECK_OK(sk_output_layer_create(1, 2, NULL, &other));
        CHECK_OK(sk_output_layer_init_xavier(other, 42));
        CHECK_OK(sk_output_layer_weights(other, &w2, &n2));
        CHECK(n2 == 2 && w2[0] == w[0] && w2[1] == w[1]);
        sk_output_layer_free(other);
    }

    /* Training from zero weights (written through the pointer): the first loss is ln 2, the
     * loss drops tenfold, and the layer learns the sign. */
    w[0] = 0.0f;
    w[1] = 0.0f;
    CHECK_OK(sk_output_layer_train_step(layer, a, 4, labels, 4, 0.5f, &first));
    CHECK_NEAR(first, 0.69314718055994530942, 1e-6);
    last = first;
    for (i = 0; i < 50; i++) {
        if (i % 2 == 0) {
            CHECK_OK(sk_output_layer_train_step(layer, a, 4, labels, 4, 0.5f, &last));
        } else {
            CHECK_OK(sk_output_layer_train_step_i32(layer, a, 4, labels32, 4, 0.5f, &last));
        }
    }
    CHECK(last < first / 10.0f);
    CHECK_OK(sk_output_layer_steps(layer, &steps));
    CHECK(steps == 51);
    CHECK_OK(sk_output_layer_predict(layer, a, 4, pred, 4));
    CHECK(pred[0] == 0 && pred[1] == 1 && pred[2] == 0 && pred[3] == 1);
    CHECK(w[0] > 0.0f && w[1] < 0.0f);

    /* The ext form: argmax gives the accuracy, da the gradient for the layer below. */
    {
        sk_ce_outputs out;
        sk_ce_stats st;
        sk_ce_options o;
        uint32_t am[4];
        float da[4], lr_loss[4];
        memset(&out, 0, sizeof out);
        out.argmax = am;
        out.argmax_len = 4;
        CHECK_OK(sk_ce_options_default(&o));
        o.reduction = SK_REDUCTION_SUM;
        CHECK_OK(sk_output_layer_train_step_ext(layer, a, 4, labels, 4, 0.1f, &o, &out, da, 4,
                                                &st));
        CHECK(st.has_correct == 1 && st.correct == 4 && st.rows_used == 4);
        CHECK(da[0] < 0.0f || da[0] > 0.0f);
        /* NONE is refused: a step needs one scalar loss. */
        o.reduction = SK_REDUCTION_NONE;
        out.row_loss = lr_loss;
        out.row_loss_len = 4;
        CHECK_ST(sk_output_layer_train_step_ext(layer, a, 4, labels, 4, 0.1f, &o, &out, NULL, 0,
                                                NULL),
                 SK_ERROR_INVALID_OPTION);
        CHECK_ST(sk_output_layer_train_step_ext(layer, a, 4, labels, 4, 0.1f, NULL, NULL, da, 3,
                                                NULL),
                 SK_ERROR_LENGTH_MISMATCH);
    }

    /* Errors leave the layer unchanged. */
    {
        const int64_t bad[4] = {0, 1, 2, 1};
        float w0 = w[0];
        CHECK_ST(sk_output_layer_train_step(layer, a, 4, bad, 4, 0.5f, NULL), SK_ERROR_BAD_LABEL);
        CHECK_MSG("row 2 has label 2");
        CHECK_ST(sk_output_layer_train_step(layer, a, 4, labels, 3, 0.5f, NULL),
                 SK_ERROR_LENGTH_MISMATCH);
        CHECK_ST(sk_output_layer_train_step(layer, a, 4, labels, 4, -0.5f, NULL),
                 SK_ERROR_INVALID_OPTION);
        CHECK_ST(sk_output_layer_train_step(layer, NULL, 4, labels, 4, 0.5f, NULL),
                 SK_NULL_POINTER);
        CHECK(w[0] == w0);
        /* The layer's own buffers may not be passed as arguments. */
        CHECK_ST(sk_output_layer_train_step(layer, w, 2, labels, 2, 0.5f, NULL), SK_OVERLAP);
        CHECK_MSG("the layer's weights");
        CHECK_ST(sk_output_layer_forward(layer, a, 1, w, 2), SK_OVERLAP);
        CHECK_ST(sk_output_layer_predict(layer, a, 4, pred, 3), SK_ERROR_LENGTH_MISMATCH);
        CHECK_ST(sk_output_layer_forward(layer, a, 4, z, 2), SK_ERROR_LENGTH_MISMATCH);
    }
    sk_output_layer_free(layer);
}

static void errors(void)
{
    sk_output_layer *layer = NULL;
    sk_sgd_options so;
    float *w = NULL;
    size_t n = 0;
    uint64_t steps = 0;

    CHECK_ST(sk_output_layer_create(0, 2, NULL, &layer), SK_ERROR_ZERO_DIM);
    CHECK_MSG("`inputs` is 0");
    CHECK(layer == NULL);
    CHECK_ST(sk_output_layer_create(3, 0, NULL, &layer), SK_ERROR_ZERO_DIM);
    CHECK_ST(sk_output_layer_create(SIZE_MAX / 2, 4, NULL, &layer), SK_ERROR_SIZE_OVERFLOW);
    CHECK_ST(sk_output_layer_create(1, 2, NULL, NULL), SK_NULL_POINTER);
    CHECK_MSG("`out` is NULL");
    CHECK_OK(sk_sgd_options_default(&so));
    so.lr = NAN;
    CHECK_ST(sk_output_layer_create(1, 2, &so, &layer), SK_ERROR_INVALID_OPTION);
    CHECK_ST(sk_output_layer_init_xavier(NULL, 1), SK_NULL_POINTER);
    CHECK_MSG("`layer` is NULL");
    CHECK_ST(sk_output_layer_weights(NULL, &w, &n), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_bias(NULL, &w, &n), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_steps(NULL, &steps), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_shape(NULL, NULL, NULL), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_forward(NULL, NULL, 0, NULL, 0), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_predict(NULL, NULL, 0, NULL, 0), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_train_step(NULL, NULL, 0, NULL, 0, 0.1f, NULL), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_train_step_i32(NULL, NULL, 0, NULL, 0, 0.1f, NULL), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_train_step_ext(NULL, NULL, 0, NULL, 0, 0.1f, NULL, NULL, NULL, 0,
                                            NULL),
             SK_NULL_POINTER);
    CHECK_OK(sk_output_layer_create(2, 2, NULL, &layer));
    CHECK_ST(sk_output_layer_weights(layer, NULL, &n), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_steps(layer, NULL), SK_NULL_POINTER);
    sk_output_layer_free(layer);
    sk_output_layer_free(NULL);
}

/* Out-values (loss, stats, the getters' and create's out-pointers) may not overlap another
 * argument or the layer's own memory (its weights, bias, velocities and handle struct):
 * SK_OVERLAP, and nothing is written. */
static void out_value_overlaps(void)
{
    sk_output_layer *layer = NULL;
    sk_sgd_options so;
    float *w = NULL, *b = NULL;
    size_t wlen = 0, blen = 0, n = 0;
    /* 3 inputs, 4 classes: 48 bytes of weights, room for an sk_ce_stats. */
    const float a[6] = {1.0f, -1.0f, 0.5f, 2.0f, -2.0f, 0.25f};
    const int64_t t[2] = {0, 3};
    const int32_t t32[2] = {0, 3};
    double das[8];
    float *da = (float *)(void *)das;
    float wcopy[12], bcopy[4];
    sk_ce_stats st;
    uint64_t steps = 0;
    int i;

    CHECK_OK(sk_sgd_options_default(&so));
    so.momentum = 0.5f; /* velocities exist after the first step */
    CHECK_OK(sk_output_layer_create(3, 4, &so, &layer));
    CHECK_OK(sk_output_layer_init_xavier(layer, 7));
    CHECK_OK(sk_output_layer_train_step(layer, a, 6, t, 2, 0.1f, NULL));
    CHECK_OK(sk_output_layer_weights(layer, &w, &wlen));
    CHECK_OK(sk_output_layer_bias(layer, &b, &blen));
    CHECK(wlen == 12 && blen == 4);
    memcpy(wcopy, w, sizeof wcopy);
    memcpy(bcopy, b, sizeof bcopy);
    for (i = 0; i < 16; i++) {
        da[i] = 7.0f;
    }

    /* The audit's example: the loss written into the layer's own weights (lr 0: the update
     * alone would change nothing). */
    CHECK_ST(sk_output_layer_train_step(layer, a, 6, t, 2, 0.0f, w), SK_OVERLAP);
    CHECK_MSG("the layer's weights");
    CHECK_ST(sk_output_layer_train_step_i32(layer, a, 6, t32, 2, 0.0f, b + 1), SK_OVERLAP);
    CHECK_MSG("the layer's bias");
    /* The loss over an input (a, the targets). */
    {
        float abuf[6];
        memcpy(abuf, a, sizeof abuf);
        CHECK_ST(sk_output_layer_train_step(layer, abuf, 6, t, 2, 0.1f, &abuf[5]), SK_OVERLAP);
        CHECK_MSG("`loss` overlaps `a`");
        CHECK(abuf[5] == a[5]);
    }
    /* stats over da, the weights, the options and outputs structs. */
    CHECK_ST(sk_output_layer_train_step_ext(layer, a, 6, t, 2, 0.1f, NULL, NULL, da, 6,
                                            (sk_ce_stats *)(void *)das),
             SK_OVERLAP);
    CHECK_MSG("the output `da` overlaps `stats`");
    CHECK_ST(sk_output_layer_train_step_ext(layer, a, 6, t, 2, 0.1f, NULL, NULL, NULL, 0,
                                            (sk_ce_stats *)(void *)w),
             SK_OVERLAP);
    {
        union {
            sk_ce_options o;
            sk_ce_outputs out;
            sk_ce_stats st;
        } u;
        CHECK_OK(sk_ce_options_default(&u.o));
        CHECK_ST(sk_output_layer_train_step_ext(layer, a, 6, t, 2, 0.1f, &u.o, NULL, NULL, 0,
                                                &u.st),
                 SK_OVERLAP);
        CHECK_MSG("`opts`");
        CHECK(u.o.scale == 1.0f);
        memset(&u, 0, sizeof u);
        CHECK_ST(sk_output_layer_train_step_ext(layer, a, 6, t, 2, 0.1f, NULL, &u.out, NULL, 0,
                                                &u.st),
                 SK_OVERLAP);
        CHECK_MSG("`outputs`");
    }
    /* The getters' out-pointers over the layer's buffers, and over each other. */
    CHECK_ST(sk_output_layer_steps(layer, (uint64_t *)(void *)w), SK_OVERLAP);
    CHECK_MSG("`steps` overlaps `the layer's weights`");
    CHECK_ST(sk_output_layer_shape(layer, (size_t *)(void *)w, NULL), SK_OVERLAP);
    CHECK_ST(sk_output_layer_shape(layer, &n, &n), SK_OVERLAP);
    CHECK_ST(sk_output_layer_weights(layer, (float **)(void *)w, &n), SK_OVERLAP);
    CHECK_ST(sk_output_layer_bias(layer, (float **)(void *)b, &n), SK_OVERLAP);
    {
        union {
            float *p;
            size_t n;
        } u;
        CHECK_ST(sk_output_layer_weights(layer, &u.p, &u.n), SK_OVERLAP);
        CHECK_MSG("the output `weights` overlaps `len`");
    }
    /* Nothing was written: the layer and da are as they were, no step was counted. */
    for (i = 0; i < 12; i++) {
        CHECK(w[i] == wcopy[i]);
    }
    for (i = 0; i < 4; i++) {
        CHECK(b[i] == bcopy[i]);
    }
    for (i = 0; i < 16; i++) {
        CHECK(da[i] == 7.0f);
    }
    CHECK_OK(sk_output_layer_steps(layer, &steps));
    CHECK(steps == 1);
    CHECK_OK(sk_output_layer_train_step_ext(layer, a, 6, t, 2, 0.1f, NULL, NULL, da, 6, &st));
    CHECK(st.rows_used == 2);

    /* create's out-pointer over its options. */
    {
        union {
            sk_sgd_options o;
            sk_output_layer *p;
        } u;
        CHECK_OK(sk_sgd_options_default(&u.o));
        CHECK_ST(sk_output_layer_create(2, 2, &u.o, &u.p), SK_OVERLAP);
        CHECK_MSG("the output `out` overlaps `opts`");
        CHECK(u.o.lr > 0.0009f && u.o.lr < 0.0011f);
    }

    /* Out-pointers into the handle's own struct (the caller cannot see its size; 8 bytes are
     * always inside it). Last: on a library without the check these corrupt the layer. */
    CHECK_ST(sk_output_layer_steps(layer, (uint64_t *)(void *)layer), SK_OVERLAP);
    CHECK_MSG("`steps` overlaps `the layer's handle`");
    CHECK_ST(sk_output_layer_train_step(layer, a, 6, t, 2, 0.1f, (float *)(void *)layer),
             SK_OVERLAP);
    CHECK_ST(sk_output_layer_shape(layer, NULL, (size_t *)(void *)layer), SK_OVERLAP);
    CHECK_OK(sk_output_layer_steps(layer, &steps));
    CHECK(steps == 2);
    sk_output_layer_free(layer);
}

int main(void)
{
    for_each_tier(lifecycle);
    errors();
    out_value_overlaps();
    return finish("test_layer");
}

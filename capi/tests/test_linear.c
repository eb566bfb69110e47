/* Output-layer updates through the C ABI: small integer matrices worked out by hand, on every
 * tier; the SGD optimizer handle; every argument error. */
#include <stdint.h>

#include "check.h"

static int eq(const float *a, const float *b, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            return 0;
        }
    }
    return 1;
}

static void numeric(int32_t tier)
{
    (void)tier;
    /* Rank-1: W += alpha x y^T with W = ones(2, 3), alpha 1/2, x = [1, 2], y = [2, 4, 6]. */
    {
        float w[6] = {1, 1, 1, 1, 1, 1};
        const float x[2] = {1, 2}, y[3] = {2, 4, 6}, want[6] = {2, 3, 4, 3, 5, 7};
        CHECK_OK(sk_rank1_update(0.5f, x, 2, y, 3, w, 6, 3));
        CHECK(eq(w, want, 6));
    }
    /* Rank-1 into W = 0 (2 x 2): alpha 2, x = [1, -1], y = [1, 3]. */
    {
        float w[4] = {0, 0, 0, 0};
        const float x[2] = {1, -1}, y[2] = {1, 3}, want[4] = {2, 6, -2, -6};
        CHECK_OK(sk_rank1_update(2.0f, x, 2, y, 2, w, 4, 2));
        CHECK(eq(w, want, 4));
    }
    /* Rank-1 with a leading dimension: W is [2, 2] in rows of 3; the padding is untouched. */
    {
        float w[5] = {0, 0, 9, 0, 0};
        const float x[2] = {1, 2}, y[2] = {3, 4}, want[5] = {3, 4, 9, 6, 8};
        CHECK_OK(sk_rank1_update(1.0f, x, 2, y, 2, w, 5, 3));
        CHECK(eq(w, want, 5));
    }
    /* Rank-k: delta rows [1, 0], [0, 1]; activations [1, 2], [3, 4]: W = A. */
    {
        float w[4] = {0, 0, 0, 0};
        const float delta[4] = {1, 0, 0, 1}, a[4] = {1, 2, 3, 4}, want[4] = {1, 2, 3, 4};
        CHECK_OK(sk_rank_k_update(1.0f, delta, 4, a, 4, w, 4, 2, 2, 2));
        CHECK(eq(w, want, 4));
    }
    /* Rank-k with ld = 3. */
    {
        float w[5] = {0, 0, 9, 0, 0};
        const float delta[2] = {1, 2}, a[2] = {3, 4}, want[5] = {3, 4, 9, 6, 8};
        CHECK_OK(sk_rank_k_update(1.0f, delta, 2, a, 2, w, 5, 2, 2, 3));
        CHECK(eq(w, want, 5));
    }
    /* Weight gradient, beta 0 overwrites NaN: dW = delta^T A. */
    {
        float dw[6];
        const float delta[4] = {1, -1, 0.5f, 0.5f}, a[6] = {1, 2, 3, 2, 2, 2};
        const float want[6] = {2, 3, 4, 0, -1, -2};
        int i;
        for (i = 0; i < 6; i++) {
            dw[i] = NAN;
        }
        CHECK_OK(sk_weight_grad(1.0f, delta, 4, a, 6, 0.0f, dw, 6, 2, 3, 3));
        CHECK(eq(dw, want, 6));
        /* beta 1 accumulates: dW = 1 * dW + 1 * delta^T A, twice the product. */
        CHECK_OK(sk_weight_grad(1.0f, delta, 4, a, 6, 1.0f, dw, 6, 2, 3, 3));
        CHECK(dw[0] == 4.0f && dw[5] == -4.0f);
    }
    /* Larger weight gradient (sgemm path): delta = ones(16, 3), A[i, j] = 1: dW = 16. */
    {
        float delta[48], a[80], dw[15];
        int i, ok = 1;
        for (i = 0; i < 48; i++) delta[i] = 1.0f;
        for (i = 0; i < 80; i++) a[i] = 1.0f;
        CHECK_OK(sk_weight_grad(1.0f, delta, 48, a, 80, 0.0f, dw, 15, 3, 5, 5));
        for (i = 0; i < 15; i++) ok &= dw[i] == 16.0f;
        CHECK(ok);
    }
    /* Bias gradient: db = 1 * [10, 10] + 1/2 * ([1, 2] + [3, 4]). */
    {
        float db[2] = {10, 10};
        const float delta[4] = {1, 2, 3, 4};
        CHECK_OK(sk_bias_grad(0.5f, delta, 4, 1.0f, db, 2));
        CHECK(db[0] == 12.0f && db[1] == 13.0f);
    }
    /* SGD step: B = 2 errors 1 and 3 on W [1, 2], lr 1/2: W -= 1/4 (1 a0 + 3 a1). */
    {
        float w[2] = {1, 1}, b[1] = {0};
        const float delta[2] = {1, 3}, a[4] = {1, 2, 1, 2};
        CHECK_OK(sk_sgd_step(0.5f, delta, 2, a, 4, w, 2, 1, 2, 2, b, 1));
        CHECK(w[0] == 0.0f && w[1] == -1.0f && b[0] == -1.0f);
        /* No bias. */
        CHECK_OK(sk_sgd_step(0.5f, delta, 2, a, 4, w, 2, 1, 2, 2, NULL, 0));
        CHECK(w[0] == -1.0f && w[1] == -3.0f);
    }
    /* Linear forward Z = A W^T + b and backward dA = delta W. */
    {
        const float w[4] = {1, 0, 1, 1}, a[2] = {3, 4}, b[2] = {0.5f, -0.5f};
        const float w2[4] = {1, 2, 3, 4}, delta[2] = {1, -1};
        float z[2], da[2];
        CHECK_OK(sk_linear_forward(a, 2, w, 4, 2, 2, 2, b, 2, z, 2));
        CHECK(z[0] == 3.5f && z[1] == 6.5f);
        CHECK_OK(sk_linear_forward(a, 2, w, 4, 2, 2, 2, NULL, 0, z, 2));
        CHECK(z[0] == 3.0f && z[1] == 7.0f);
        CHECK_OK(sk_linear_backward_input(delta, 2, w2, 4, 2, 2, 2, da, 2));
        CHECK(da[0] == -2.0f && da[1] == -2.0f);
    }
}

static void optimizer(void)
{
    sk_sgd_options so;
    sk_sgd_optimizer *opt = NULL;
    uint64_t steps = 99;
    const float *vel = NULL;
    size_t vlen = 99;

    CHECK_OK(sk_sgd_options_default(&so));
    CHECK(so.lr > 0.0009f && so.lr < 0.0011f && so.momentum == 0.0f && so.nesterov == 0);

    /* Momentum 0.9, lr 0.1: buf = 1, w = 1 - 0.1; buf = 0.9 + 1, w = 0.9 - 0.19 = 0.71. */
    so.lr = 0.1f;
    so.momentum = 0.9f;
    CHECK_OK(sk_sgd_optimizer_create(&so, &opt));
    CHECK(opt != NULL);
    {
        float w[1] = {1.0f};
        const float g[1] = {1.0f};
        CHECK_OK(sk_sgd_optimizer_velocity(opt, &vel, &vlen));
        CHECK(vel == NULL && vlen == 0);
        CHECK_OK(sk_sgd_optimizer_apply_grad(opt, w, 1, 1, 1, 1, g, 1));
        CHECK_OK(sk_sgd_optimizer_apply_grad(opt, w, 1, 1, 1, 1, g, 1));
        CHECK_NEAR(w[0], 0.71, 1e-6);
        CHECK_OK(sk_sgd_optimizer_steps(opt, &steps));
        CHECK(steps == 2);
        CHECK_OK(sk_sgd_optimizer_velocity(opt, &vel, &vlen));
        CHECK(vel != NULL && vlen == 1);
        CHECK_NEAR(vel[0], 1.9, 1e-6);
        /* The state belongs to a [1, 1] parameter: a [1, 2] one is an error until reset. */
        {
            float w2[2] = {0, 0};
            const float g2[2] = {1, 1};
            CHECK_ST(sk_sgd_optimizer_apply_grad(opt, w2, 2, 1, 2, 2, g2, 2),
                     SK_ERROR_STATE_SHAPE);
            CHECK_MSG("call reset() to start over");
            CHECK_OK(sk_sgd_optimizer_reset(opt));
            CHECK_OK(sk_sgd_optimizer_apply_grad(opt, w2, 2, 1, 2, 2, g2, 2));
            CHECK_NEAR(w2[1], -0.1, 1e-7);
            /* The velocity buffer may not be passed as an argument. */
            CHECK_OK(sk_sgd_optimizer_velocity(opt, &vel, &vlen));
            CHECK_ST(sk_sgd_optimizer_apply_grad(opt, w2, 2, 1, 2, 2, vel, vlen), SK_OVERLAP);
        }
    }
    CHECK_ST(sk_sgd_optimizer_set_lr(opt, -1.0f), SK_ERROR_INVALID_OPTION);
    CHECK_OK(sk_sgd_optimizer_set_lr(opt, 0.5f));
    sk_sgd_optimizer_free(opt);

    /* Steps from the batch error: lr 1/2, momentum 1/2; grad = [2, -2] and [2]. */
    so.lr = 0.5f;
    so.momentum = 0.5f;
    CHECK_OK(sk_sgd_optimizer_create(&so, &opt));
    {
        float w[2] = {0, 0}, b[1] = {0};
        const float delta[1] = {2}, a[2] = {1, -1};
        CHECK_OK(sk_sgd_optimizer_step(opt, delta, 1, a, 2, w, 2, 1, 2, 2, b, 1));
        CHECK(w[0] == -1.0f && w[1] == 1.0f && b[0] == -1.0f);
        CHECK_OK(sk_sgd_optimizer_step(opt, delta, 1, a, 2, w, 2, 1, 2, 2, b, 1));
        CHECK(w[0] == -2.5f && w[1] == 2.5f && b[0] == -2.5f);
        /* Bias gradient you computed. */
        {
            const float gb[1] = {1.0f};
            CHECK_OK(sk_sgd_optimizer_apply_bias_grad(opt, b, 1, gb, 1));
            CHECK_ST(sk_sgd_optimizer_apply_bias_grad(opt, b, 1, gb, 0), SK_ERROR_LENGTH_MISMATCH);
        }
    }
    sk_sgd_optimizer_free(opt);
    sk_sgd_optimizer_free(NULL);

    /* Invalid options and NULLs. */
    so.momentum = 0.0f;
    so.nesterov = 1;
    opt = (sk_sgd_optimizer *)&so; /* must be reset to NULL on failure */
    CHECK_ST(sk_sgd_optimizer_create(&so, &opt), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("nesterov");
    CHECK(opt == NULL);
    CHECK_ST(sk_sgd_optimizer_create(NULL, NULL), SK_NULL_POINTER);
    CHECK_ST(sk_sgd_optimizer_steps(NULL, &steps), SK_NULL_POINTER);
    CHECK_MSG("`sgd` is NULL");
    CHECK_ST(sk_sgd_optimizer_reset(NULL), SK_NULL_POINTER);
    CHECK_ST(sk_sgd_optimizer_set_lr(NULL, 1.0f), SK_NULL_POINTER);
    CHECK_ST(sk_sgd_optimizer_velocity(NULL, &vel, &vlen), SK_NULL_POINTER);
    CHECK_ST(sk_sgd_optimizer_step(NULL, NULL, 0, NULL, 0, NULL, 0, 0, 0, 0, NULL, 0),
             SK_NULL_POINTER);
    CHECK_ST(sk_sgd_options_default(NULL), SK_NULL_POINTER);
}

static void errors(void)
{
    float w[6] = {0, 0, 0, 0, 0, 0}, z[4];
    const float x[2] = {1, 2}, y[3] = {1, 2, 3}, d[4] = {1, 2, 3, 4};

    CHECK_ST(sk_rank1_update(1.0f, NULL, 2, y, 3, w, 6, 3), SK_NULL_POINTER);
    CHECK_MSG("`x` is NULL but its length is 2");
    /* ld < cols */
    CHECK_ST(sk_rank1_update(1.0f, x, 2, y, 3, w, 6, 2), SK_ERROR_LEADING_DIM);
    CHECK_MSG("`w` has leading dimension 2, less than its row length 3");
    /* W's array fits neither rows*ld nor (rows-1)*ld+cols. */
    CHECK_ST(sk_rank1_update(1.0f, x, 2, y, 3, w, 5, 3), SK_ERROR_MATRIX_LENGTH);
    CHECK_MSG("`w` has length 5");
    /* rows * ld overflows. */
    CHECK_ST(sk_rank_k_update(1.0f, d, 0, d, 0, w, 6, SIZE_MAX / 2, 1, 4), SK_ERROR_SIZE_OVERFLOW);
    /* delta is not a whole number of rows of C. */
    CHECK_ST(sk_weight_grad(1.0f, d, 3, d, 4, 0.0f, w, 4, 2, 2, 2), SK_ERROR_NOT_MULTIPLE);
    /* a is not [B, D]. */
    CHECK_ST(sk_weight_grad(1.0f, d, 4, d, 3, 0.0f, w, 4, 2, 2, 2), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`a` has length 3");
    CHECK_ST(sk_bias_grad(1.0f, d, 3, 0.0f, w, 2), SK_ERROR_NOT_MULTIPLE);
    CHECK_ST(sk_sgd_step(-1.0f, d, 2, d, 4, w, 2, 1, 2, 2, NULL, 0), SK_ERROR_INVALID_OPTION);
    CHECK_ST(sk_sgd_step(1.0f, d, 2, d, 4, w, 2, 1, 2, 2, w + 4, 2), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`bias` has length 2");
    CHECK_ST(sk_linear_forward(d, 3, w, 4, 2, 2, 2, NULL, 0, z, 2), SK_ERROR_NOT_MULTIPLE);
    CHECK_ST(sk_linear_forward(d, 4, w, 4, 2, 2, 2, NULL, 0, z, 3), SK_ERROR_LENGTH_MISMATCH);
    CHECK_ST(sk_linear_forward(d, 4, w, 4, 2, 2, 2, x, 1, z, 4), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`b` has length 1");
    CHECK_ST(sk_linear_backward_input(d, 4, w, 4, 2, 2, 1, z, 4), SK_ERROR_LEADING_DIM);
    /* The output overlaps an input. */
    CHECK_ST(sk_linear_forward(w, 4, w, 4, 2, 2, 2, NULL, 0, w + 2, 4), SK_OVERLAP);
    CHECK_ST(sk_rank1_update(1.0f, w, 2, y, 3, w, 6, 3), SK_OVERLAP);
    CHECK_MSG("the output `w` overlaps `x`");
    CHECK_ST(sk_sgd_step(1.0f, d, 2, d, 4, w, 2, 1, 2, 2, w + 1, 1), SK_OVERLAP);
}

/* The optimizer's out-pointers (steps, velocity/len, create's out) may not overlap another
 * argument or the optimizer's own memory (its velocities and handle struct): SK_OVERLAP, and
 * nothing is written. */
static void out_value_overlaps(void)
{
    sk_sgd_optimizer *opt = NULL;
    sk_sgd_options so;
    const float *vel = NULL;
    size_t vlen = 0;
    uint64_t steps = 0;
    float w[4] = {0, 0, 0, 0}, v0[4];
    const float g[4] = {1, 2, 3, 4};
    int i;

    CHECK_OK(sk_sgd_options_default(&so));
    so.lr = 0.1f;
    so.momentum = 0.9f;
    CHECK_OK(sk_sgd_optimizer_create(&so, &opt));
    CHECK_OK(sk_sgd_optimizer_apply_grad(opt, w, 4, 2, 2, 2, g, 4));
    CHECK_OK(sk_sgd_optimizer_velocity(opt, &vel, &vlen));
    CHECK(vel != NULL && vlen == 4);
    memcpy(v0, vel, sizeof v0);
    /* Into the velocity buffer (16 bytes: room for a pointer or a count). */
    CHECK_ST(sk_sgd_optimizer_steps(opt, (uint64_t *)(void *)(uintptr_t)vel), SK_OVERLAP);
    CHECK_MSG("the output `steps` overlaps `velocity`");
    CHECK_ST(sk_sgd_optimizer_velocity(opt, (const float **)(void *)(uintptr_t)vel, &vlen),
             SK_OVERLAP);
    CHECK_ST(sk_sgd_optimizer_velocity(opt, &vel, (size_t *)(void *)(uintptr_t)(vel + 2)),
             SK_OVERLAP);
    {
        union {
            const float *p;
            size_t n;
        } u;
        CHECK_ST(sk_sgd_optimizer_velocity(opt, &u.p, &u.n), SK_OVERLAP);
        CHECK_MSG("the output `velocity` overlaps `len`");
    }
    for (i = 0; i < 4; i++) {
        CHECK(vel[i] == v0[i]);
    }
    /* create's out-pointer over its options. */
    {
        union {
            sk_sgd_options o;
            sk_sgd_optimizer *p;
        } u;
        CHECK_OK(sk_sgd_options_default(&u.o));
        CHECK_ST(sk_sgd_optimizer_create(&u.o, &u.p), SK_OVERLAP);
        CHECK_MSG("the output `out` overlaps `opts`");
        CHECK(u.o.lr > 0.0009f && u.o.lr < 0.0011f);
    }
    /* Into the handle's own struct (8 bytes are always inside it). Last: on a library without
     * the check this corrupts the optimizer. */
    CHECK_ST(sk_sgd_optimizer_steps(opt, (uint64_t *)(void *)opt), SK_OVERLAP);
    CHECK_MSG("`steps` overlaps `the optimizer's handle`");
    CHECK_OK(sk_sgd_optimizer_steps(opt, &steps));
    CHECK(steps == 1);
    sk_sgd_optimizer_free(opt);
}

int main(void)
{
    for_each_tier(numeric);
    optimizer();
    errors();
    out_value_overlaps();
    return finish("test_linear");
}

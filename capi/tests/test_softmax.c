/* The softmax family through the C ABI: values derived by hand, on every tier; in-place and
 * masked-rows forms; every argument error. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

#define LN2 0.69314718055994530942
#define LN3 1.09861228866810969140

static void numeric(int32_t tier)
{
    const float x[2] = {0.0f, (float)LN2};
    float y[2] = {0, 0}, lse[1] = {0}, z[4] = {1.0f, 1.0f, 5.0f, 5.0f};
    const float ninf = -INFINITY;
    const float masked[4] = {-INFINITY, -INFINITY, 1.0f, 1.0f};
    float out[4];
    float dx[2];
    const float half[2] = {0.5f, 0.5f}, dy[2] = {1.0f, 0.0f};
    float lhalf[2];
    float e[3];
    const float ex[3] = {0.0f, -INFINITY, 1.0f};
    (void)tier;

    /* softmax([0, ln 2]) = [1/3, 2/3] */
    CHECK_OK(sk_softmax(x, 2, y, 2, 2));
    CHECK_NEAR(y[0], 1.0 / 3.0, 1e-6);
    CHECK_NEAR(y[1], 2.0 / 3.0, 1e-6);
    /* log_softmax = [ln 1/3, ln 2/3] */
    CHECK_OK(sk_log_softmax(x, 2, y, 2, 2));
    CHECK_NEAR(y[0], -LN3, 2e-6);
    CHECK_NEAR(y[1], LN2 - LN3, 2e-6);
    /* logsumexp = ln 3 */
    CHECK_OK(sk_logsumexp(x, 2, lse, 1, 2));
    CHECK_NEAR(lse[0], LN3, 2e-6);

    /* Two rows of equal logits: 1/2 each; in place. */
    CHECK_OK(sk_softmax_inplace(z, 4, 2));
    CHECK(z[0] == 0.5f && z[1] == 0.5f && z[2] == 0.5f && z[3] == 0.5f);
    /* y == x (same length) runs in place too. */
    z[0] = 3.0f; z[1] = 3.0f; z[2] = 0.0f; z[3] = 0.0f;
    CHECK_OK(sk_log_softmax(z, 4, z, 4, 2));
    CHECK_NEAR(z[0], -LN2, 1e-6);
    CHECK_NEAR(z[3], -LN2, 1e-6);
    z[0] = 0.0f; z[1] = 0.0f; z[2] = 0.0f; z[3] = 0.0f;
    CHECK_OK(sk_log_softmax_inplace(z, 4, 4));
    CHECK_NEAR(z[2], -2.0 * LN2, 1e-6);

    /* Masked rows: NaN by default, 0 / -inf with SK_MASKED_ROWS_ZERO. */
    CHECK_OK(sk_softmax(masked, 4, out, 4, 2));
    CHECK(isnan(out[0]) && isnan(out[1]));
    CHECK(out[2] == 0.5f && out[3] == 0.5f);
    CHECK_OK(sk_softmax_ex(masked, 4, out, 4, 2, SK_MASKED_ROWS_ZERO));
    CHECK(out[0] == 0.0f && out[1] == 0.0f && out[2] == 0.5f);
    CHECK_OK(sk_log_softmax_ex(masked, 4, out, 4, 2, SK_MASKED_ROWS_ZERO));
    CHECK(out[0] == ninf && out[1] == ninf);
    CHECK_NEAR(out[2], -LN2, 1e-6);
    memcpy(out, masked, sizeof out);
    CHECK_OK(sk_softmax_inplace_ex(out, 4, 2, SK_MASKED_ROWS_ZERO));
    CHECK(out[0] == 0.0f && out[3] == 0.5f);
    memcpy(out, masked, sizeof out);
    CHECK_OK(sk_log_softmax_inplace_ex(out, 4, 2, SK_MASKED_ROWS_NAN));
    CHECK(isnan(out[0]));

    /* Softmax backward: y = [1/2, 1/2], dy = [1, 0]: <dy, y> = 1/2, dx = [1/4, -1/4]. */
    CHECK_OK(sk_softmax_backward(half, 2, dy, 2, dx, 2, 2));
    CHECK_NEAR(dx[0], 0.25, 1e-7);
    CHECK_NEAR(dx[1], -0.25, 1e-7);
    /* Log-softmax backward: y = ln [1/2, 1/2], dy = [1, 0]: dx = dy - exp(y) sum(dy). */
    lhalf[0] = lhalf[1] = (float)-LN2;
    CHECK_OK(sk_log_softmax_backward(lhalf, 2, dy, 2, dx, 2, 2));
    CHECK_NEAR(dx[0], 0.5, 1e-6);
    CHECK_NEAR(dx[1], -0.5, 1e-6);

    /* exp */
    CHECK_OK(sk_exp(ex, 3, e, 3));
    CHECK(e[0] == 1.0f && e[1] == 0.0f);
    CHECK_NEAR(e[2], 2.718281828459045, 3e-6);

    /* Empty input: zero rows is fine, NULL with length 0 is an empty array. */
    CHECK_OK(sk_softmax(NULL, 0, NULL, 0, 3));
    CHECK_OK(sk_logsumexp(NULL, 0, NULL, 0, 5));
}

/* A longer row than the vector width and more rows than threads: rows sum to 1. */
static void larger(int32_t tier)
{
    enum { R = 37, C = 1000 };
    float *x = (float *)malloc(sizeof(float) * R * C);
    float *p = (float *)malloc(sizeof(float) * R * C);
    float lse[R];
    int i, r;
    (void)tier;
    for (i = 0; i < R * C; i++) {
        x[i] = (float)((i * 7919) % 1000) * 0.01f - 5.0f;
    }
    CHECK_OK(sk_softmax(x, R * C, p, R * C, C));
    CHECK_OK(sk_logsumexp(x, R * C, lse, R, C));
    for (r = 0; r < R; r++) {
        double s = 0.0;
        int k;
        for (k = 0; k < C; k++) {
            s += p[r * C + k];
        }
        CHECK_NEAR(s, 1.0, 1e-4);
        /* p = exp(x - lse) */
        CHECK_NEAR(p[r * C + 3], exp((double)x[r * C + 3] - (double)lse[r]), 1e-7);
    }
    free(x);
    free(p);
}

static void errors(void)
{
    float x[6] = {0, 1, 2, 3, 4, 5}, y[6], out[3], big[8];
    float *mis = (float *)((char *)big + 1);

    /* NULL with a nonzero length. */
    CHECK_ST(sk_softmax(NULL, 6, y, 6, 3), SK_NULL_POINTER);
    CHECK_MSG("sk_softmax: SK_NULL_POINTER: `x` is NULL but its length is 6");
    CHECK_ST(sk_softmax(x, 6, NULL, 6, 3), SK_NULL_POINTER);
    CHECK_MSG("`y` is NULL");
    CHECK_ST(sk_softmax_inplace(NULL, 1, 1), SK_NULL_POINTER);
    CHECK_ST(sk_softmax_backward(x, 6, NULL, 6, y, 6, 3), SK_NULL_POINTER);
    CHECK_MSG("`dy` is NULL");
    /* cols == 0 */
    CHECK_ST(sk_softmax(x, 6, y, 6, 0), SK_ERROR_ZERO_DIM);
    CHECK_MSG("sk_softmax: SK_ERROR_ZERO_DIM: `cols` is 0");
    CHECK_ST(sk_log_softmax_inplace(x, 6, 0), SK_ERROR_ZERO_DIM);
    CHECK_ST(sk_logsumexp(x, 6, out, 2, 0), SK_ERROR_ZERO_DIM);
    /* Not a whole number of rows. */
    CHECK_ST(sk_softmax(x, 6, y, 6, 4), SK_ERROR_NOT_MULTIPLE);
    CHECK_MSG("`x` has length 6, which is not a multiple of cols = 4");
    /* Mismatched lengths. */
    CHECK_ST(sk_softmax(x, 6, y, 5, 3), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`y` has length 5, but the other arguments need length 6");
    CHECK_ST(sk_logsumexp(x, 6, out, 3, 3), SK_ERROR_LENGTH_MISMATCH);
    CHECK_MSG("`out` has length 3");
    CHECK_ST(sk_softmax_backward(x, 6, x, 6, y, 3, 3), SK_ERROR_LENGTH_MISMATCH);
    CHECK_ST(sk_log_softmax_backward(x, 6, x, 3, y, 6, 3), SK_ERROR_LENGTH_MISMATCH);
    CHECK_ST(sk_exp(x, 6, y, 2), SK_ERROR_LENGTH_MISMATCH);
    /* Invalid masked_rows. */
    CHECK_ST(sk_softmax_ex(x, 6, y, 6, 3, 7), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("masked_rows");
    CHECK_ST(sk_log_softmax_inplace_ex(x, 6, 3, -1), SK_ERROR_INVALID_OPTION);
    /* Impossible sizes: the byte size overflows. */
    CHECK_ST(sk_softmax(x, SIZE_MAX / 2, y, 6, 3), SK_ERROR_SIZE_OVERFLOW);
    CHECK_ST(sk_softmax_inplace(x, SIZE_MAX, 1), SK_ERROR_SIZE_OVERFLOW);
    /* Overlap (not the same range): an error, not undefined behaviour. */
    CHECK_ST(sk_softmax(x, 4, x + 2, 4, 2), SK_OVERLAP);
    CHECK_MSG("the output `y` overlaps `x`");
    CHECK_ST(sk_softmax_backward(x, 6, y, 6, y, 6, 3), SK_OVERLAP);
    CHECK_ST(sk_logsumexp(x, 6, x + 5, 1, 6), SK_OVERLAP);
    /* Misaligned pointer. */
    CHECK_ST(sk_softmax(mis, 2, y, 2, 2), SK_MISALIGNED);
    CHECK_MSG("`x` is not aligned to 4 bytes");
    /* Nothing written on error. */
    y[0] = 42.0f;
    CHECK_ST(sk_softmax(x, 6, y, 5, 3), SK_ERROR_LENGTH_MISMATCH);
    CHECK(y[0] == 42.0f);
}

int main(void)
{
    for_each_tier(numeric);
    for_each_tier(larger);
    errors();
    return finish("test_softmax");
}

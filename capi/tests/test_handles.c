/* Handles that are not live: a garbage pointer (zeroed or random readable memory), a handle of
 * the other type, a freed handle (use after free, double free). Every function that takes a
 * handle returns SK_BAD_HANDLE and writes nothing; the free functions free nothing.
 *
 * The freed-handle checks read freed memory on purpose (that is what they test), which a
 * memory checker rightly reports: they are skipped when SK_TEST_UNDER_VALGRIND is set to a
 * value other than "0" (.ci/capi.sh sets it for its valgrind runs) or when LD_PRELOAD names
 * valgrind's preload library. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

static int under_valgrind(void)
{
    const char *e = getenv("SK_TEST_UNDER_VALGRIND");
    const char *p = getenv("LD_PRELOAD");
    return (e != NULL && e[0] != '\0' && strcmp(e, "0") != 0) ||
           (p != NULL && strstr(p, "vgpreload") != NULL);
}

/* Every function that takes an sk_output_layer, on `layer`: SK_BAD_HANDLE, nothing written. */
static void layer_calls_refuse(sk_output_layer *layer)
{
    const float a[2] = {1.0f, -1.0f};
    const int64_t t[1] = {0};
    const int32_t t32[1] = {0};
    float z[2] = {7.0f, 7.0f}, da[2] = {7.0f, 7.0f}, loss = 7.0f;
    float *w = NULL;
    uint32_t pred[1] = {7};
    size_t inputs = 7, classes = 7, n = 7;
    uint64_t steps = 7;
    sk_ce_stats st;

    memset(&st, 0, sizeof st);
    CHECK_ST(sk_output_layer_steps(layer, &steps), SK_BAD_HANDLE);
    CHECK_MSG("sk_output_layer_steps: SK_BAD_HANDLE: `layer` is not a live sk_output_layer");
    CHECK_ST(sk_output_layer_shape(layer, &inputs, &classes), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_weights(layer, &w, &n), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_bias(layer, &w, &n), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_init_xavier(layer, 1), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_forward(layer, a, 2, z, 2), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_predict(layer, a, 2, pred, 1), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_train_step(layer, a, 2, t, 1, 0.1f, &loss), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_train_step_i32(layer, a, 2, t32, 1, 0.1f, &loss), SK_BAD_HANDLE);
    CHECK_ST(sk_output_layer_train_step_ext(layer, a, 2, t, 1, 0.1f, NULL, NULL, da, 2, &st),
             SK_BAD_HANDLE);
    CHECK_MSG("sk_output_layer_train_step_ext: SK_BAD_HANDLE");
    CHECK(steps == 7 && inputs == 7 && classes == 7 && n == 7 && w == NULL);
    CHECK(z[0] == 7.0f && z[1] == 7.0f && da[0] == 7.0f && loss == 7.0f && pred[0] == 7);
    CHECK(st.rows_used == 0);
}

/* Every function that takes an sk_sgd_optimizer, on `opt`: SK_BAD_HANDLE, nothing written. */
static void sgd_calls_refuse(sk_sgd_optimizer *opt)
{
    float w[2] = {7.0f, 7.0f}, b[1] = {7.0f};
    const float g[2] = {1.0f, 1.0f}, delta[1] = {1.0f}, a[2] = {1.0f, 1.0f};
    const float *vel = NULL;
    size_t n = 7;
    uint64_t steps = 7;

    CHECK_ST(sk_sgd_optimizer_steps(opt, &steps), SK_BAD_HANDLE);
    CHECK_MSG("sk_sgd_optimizer_steps: SK_BAD_HANDLE: `sgd` is not a live sk_sgd_optimizer");
    CHECK_ST(sk_sgd_optimizer_velocity(opt, &vel, &n), SK_BAD_HANDLE);
    CHECK_ST(sk_sgd_optimizer_set_lr(opt, 0.5f), SK_BAD_HANDLE);
    CHECK_ST(sk_sgd_optimizer_reset(opt), SK_BAD_HANDLE);
    CHECK_ST(sk_sgd_optimizer_step(opt, delta, 1, a, 2, w, 2, 1, 2, 2, b, 1), SK_BAD_HANDLE);
    CHECK_ST(sk_sgd_optimizer_apply_grad(opt, w, 2, 1, 2, 2, g, 2), SK_BAD_HANDLE);
    CHECK_ST(sk_sgd_optimizer_apply_bias_grad(opt, b, 1, g, 1), SK_BAD_HANDLE);
    CHECK(steps == 7 && n == 7 && vel == NULL && w[0] == 7.0f && w[1] == 7.0f && b[0] == 7.0f);
}

/* Readable memory that is not a handle: zeros, random bytes, a handle of the other type. */
static void garbage(void)
{
    uint64_t zeros[64], junk[64], copy[64];
    uint64_t x = 0x9E3779B97F4A7C15u;
    sk_output_layer *layer = NULL;
    sk_sgd_optimizer *opt = NULL;
    int i;

    memset(zeros, 0, sizeof zeros);
    for (i = 0; i < 64; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        junk[i] = x;
    }
    memcpy(copy, junk, sizeof copy);

    layer_calls_refuse((sk_output_layer *)(void *)zeros);
    layer_calls_refuse((sk_output_layer *)(void *)junk);
    sgd_calls_refuse((sk_sgd_optimizer *)(void *)zeros);
    sgd_calls_refuse((sk_sgd_optimizer *)(void *)junk);

    /* A live handle of the other type. */
    CHECK_OK(sk_output_layer_create(2, 2, NULL, &layer));
    CHECK_OK(sk_sgd_optimizer_create(NULL, &opt));
    layer_calls_refuse((sk_output_layer *)(void *)opt);
    sgd_calls_refuse((sk_sgd_optimizer *)(void *)layer);

    /* The free functions refuse too: they free nothing (glibc would abort on these pointers)
     * and leave a message. */
    sk_clear_last_error();
    sk_output_layer_free((sk_output_layer *)(void *)zeros);
    CHECK_MSG("sk_output_layer_free: SK_BAD_HANDLE");
    sk_clear_last_error();
    sk_sgd_optimizer_free((sk_sgd_optimizer *)(void *)junk);
    CHECK_MSG("sk_sgd_optimizer_free: SK_BAD_HANDLE");
    sk_output_layer_free((sk_output_layer *)(void *)opt);
    sk_sgd_optimizer_free((sk_sgd_optimizer *)(void *)layer);

    /* Nothing was written to the garbage, and the live handles still work. */
    for (i = 0; i < 64; i++) {
        CHECK(zeros[i] == 0 && junk[i] == copy[i]);
    }
    {
        uint64_t steps = 9;
        CHECK_OK(sk_output_layer_steps(layer, &steps));
        CHECK(steps == 0);
        steps = 9;
        CHECK_OK(sk_sgd_optimizer_steps(opt, &steps));
        CHECK(steps == 0);
    }
    sk_output_layer_free(layer);
    sk_sgd_optimizer_free(opt);

    /* NULL keeps its own status, and a misaligned pointer is SK_MISALIGNED. */
    CHECK_ST(sk_output_layer_steps(NULL, NULL), SK_NULL_POINTER);
    CHECK_ST(sk_sgd_optimizer_reset(NULL), SK_NULL_POINTER);
    CHECK_ST(sk_output_layer_init_xavier((sk_output_layer *)(void *)((char *)zeros + 4), 1),
             SK_MISALIGNED);
    CHECK(strcmp(sk_status_name(SK_BAD_HANDLE), "SK_BAD_HANDLE") == 0);
}

/* Freed handles: every call refuses, and a second free frees nothing. This reads freed memory:
 * detection is best effort by design (it holds while the memory is not reused by a new handle
 * of the same type, which nothing here creates), and skipped under valgrind. */
static void freed(void)
{
    sk_output_layer *layer = NULL;
    sk_sgd_optimizer *opt = NULL;

    if (under_valgrind()) {
        printf("test_handles: skipping the freed-handle checks under valgrind\n");
        return;
    }
    CHECK_OK(sk_output_layer_create(1, 2, NULL, &layer));
    CHECK_OK(sk_sgd_optimizer_create(NULL, &opt));
    sk_output_layer_free(layer);
    sk_sgd_optimizer_free(opt);
    /* Double free: detected while the memory is not reused (glibc aborts the process
     * otherwise). */
    sk_clear_last_error();
    sk_output_layer_free(layer);
    CHECK_MSG("sk_output_layer_free: SK_BAD_HANDLE");
    sk_clear_last_error();
    sk_sgd_optimizer_free(opt);
    CHECK_MSG("sk_sgd_optimizer_free: SK_BAD_HANDLE");
    /* Use after free. */
    layer_calls_refuse(layer);
    sgd_calls_refuse(opt);
}

int main(void)
{
    garbage();
    freed();
    return finish("test_handles");
}

/* Library-wide behaviour: status names, version, tier forcing, thread control (bit-identical
 * results for any thread count), the panic guard, and per-thread error messages (pthreads). */
#define _POSIX_C_SOURCE 200112L
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

/* The structs' layout is pinned on both sides (the Rust side asserts the same sizes). */
#if SIZE_MAX == UINT64_MAX
typedef char sk_ce_options_is_72_bytes[sizeof(sk_ce_options) == 72 ? 1 : -1];
typedef char sk_ce_outputs_is_48_bytes[sizeof(sk_ce_outputs) == 48 ? 1 : -1];
typedef char sk_ce_stats_is_40_bytes[sizeof(sk_ce_stats) == 40 ? 1 : -1];
typedef char sk_sgd_options_is_20_bytes[sizeof(sk_sgd_options) == 20 ? 1 : -1];
typedef char sk_status_is_int_sized[sizeof(sk_status) == sizeof(int32_t) ? 1 : -1];
#endif

static void names(void)
{
    static const struct {
        int32_t code;
        const char *name;
    } all[] = {
        {SK_OK, "SK_OK"},
        {SK_ERROR_ZERO_DIM, "SK_ERROR_ZERO_DIM"},
        {SK_ERROR_NOT_MULTIPLE, "SK_ERROR_NOT_MULTIPLE"},
        {SK_ERROR_LENGTH_MISMATCH, "SK_ERROR_LENGTH_MISMATCH"},
        {SK_ERROR_SIZE_OVERFLOW, "SK_ERROR_SIZE_OVERFLOW"},
        {SK_ERROR_BAD_LABEL, "SK_ERROR_BAD_LABEL"},
        {SK_ERROR_INVALID_OPTION, "SK_ERROR_INVALID_OPTION"},
        {SK_ERROR_MISSING_OUTPUT, "SK_ERROR_MISSING_OUTPUT"},
        {SK_ERROR_ISA_UNAVAILABLE, "SK_ERROR_ISA_UNAVAILABLE"},
        {SK_ERROR_BAD_ISA_ENV, "SK_ERROR_BAD_ISA_ENV"},
        {SK_ERROR_LEADING_DIM, "SK_ERROR_LEADING_DIM"},
        {SK_ERROR_MATRIX_LENGTH, "SK_ERROR_MATRIX_LENGTH"},
        {SK_ERROR_STATE_SHAPE, "SK_ERROR_STATE_SHAPE"},
        {SK_ERROR_TOO_MANY_CLASSES, "SK_ERROR_TOO_MANY_CLASSES"},
        {SK_NULL_POINTER, "SK_NULL_POINTER"},
        {SK_OVERLAP, "SK_OVERLAP"},
        {SK_MISALIGNED, "SK_MISALIGNED"},
        {SK_PANIC, "SK_PANIC"},
        {SK_BAD_HANDLE, "SK_BAD_HANDLE"},
        {SK_ERROR_OTHER, "SK_ERROR_OTHER"},
    };
    size_t i;
    char want[32];
    for (i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK(strcmp(sk_status_name(all[i].code), all[i].name) == 0);
    }
    CHECK(strcmp(sk_status_name(-5), "SK_UNKNOWN_STATUS") == 0);
    CHECK(strcmp(sk_status_name(14), "SK_UNKNOWN_STATUS") == 0);
    sprintf(want, "%d.%d.%d", SOFTMAX_KERNELS_VERSION_MAJOR, SOFTMAX_KERNELS_VERSION_MINOR,
            SOFTMAX_KERNELS_VERSION_PATCH);
    CHECK(strcmp(sk_version(), want) == 0);
    CHECK(strcmp(sk_isa_name(SK_ISA_AUTO), "auto") == 0);
    CHECK(strcmp(sk_isa_name(SK_ISA_AVX2), "avx2") == 0);
    CHECK(strcmp(sk_isa_name(42), "unknown") == 0);
}

static void tiers(void)
{
    uint32_t avail = sk_available_isas();
    int32_t t, before = sk_active_isa();
    printf("available tiers:");
    for (t = SK_ISA_SCALAR; t <= SK_ISA_AVX512; t++) {
        if (avail & (1u << t)) {
            printf(" %s", sk_isa_name(t));
        }
    }
    printf("; default %s\n", sk_isa_name(before));
    CHECK((avail & 3u) == 3u);
    CHECK(before >= SK_ISA_SCALAR && before <= SK_ISA_AVX512 && (avail & (1u << before)));
    for (t = SK_ISA_SCALAR; t <= SK_ISA_AVX512; t++) {
        if (avail & (1u << t)) {
            float p[2];
            const float x[2] = {0.0f, 0.69314718f};
            CHECK_OK(sk_set_isa(t));
            CHECK(sk_active_isa() == t);
            CHECK_OK(sk_softmax(x, 2, p, 2, 2));
            CHECK_NEAR(p[0], 1.0 / 3.0, 1e-6);
        } else {
            /* A tier this CPU lacks (AVX-512 under valgrind, for example): refused, and the
             * setting is unchanged. */
            int32_t cur = sk_active_isa();
            CHECK_ST(sk_set_isa(t), SK_ERROR_ISA_UNAVAILABLE);
            CHECK_MSG("tier is not available on this CPU");
            CHECK(sk_active_isa() == cur);
        }
    }
    /* Not a tier code at all. */
    CHECK_ST(sk_set_isa(7), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("sk_set_isa: SK_ERROR_INVALID_OPTION: option `isa` = 7");
    CHECK_ST(sk_set_isa(-2), SK_ERROR_INVALID_OPTION);
    CHECK_OK(sk_set_isa(SK_ISA_AUTO));
    CHECK(sk_active_isa() == before);
}

/* Runs a few kernels on a large problem; the outputs go to the caller's buffers. */
enum { R = 300, C = 700, D = 100 };
static void workload(const float *x, float *p, float *g, float *loss, float *dw)
{
    int64_t t[R];
    static float delta[64 * C];
    static float a[64 * D];
    int i;
    for (i = 0; i < R; i++) {
        t[i] = (i * 31) % C;
    }
    for (i = 0; i < 64 * C; i++) {
        delta[i] = x[i] * 0.01f;
    }
    for (i = 0; i < 64 * D; i++) {
        a[i] = (float)((i * 13) % 17) - 8.0f;
    }
    CHECK_OK(sk_softmax(x, R * C, p, R * C, C));
    CHECK_OK(sk_cross_entropy_fwd_bwd(x, R * C, t, R, g, R * C, C, NULL, loss));
    CHECK_OK(sk_weight_grad(1.0f, delta, 64 * C, a, 64 * D, 0.0f, dw, C * D, C, D, D));
}

static void threads(void)
{
    float *x = (float *)malloc(sizeof(float) * R * C);
    float *p0 = (float *)malloc(sizeof(float) * R * C), *p1 = (float *)malloc(sizeof(float) * R * C);
    float *g0 = (float *)malloc(sizeof(float) * R * C), *g1 = (float *)malloc(sizeof(float) * R * C);
    float *w0 = (float *)malloc(sizeof(float) * C * D), *w1 = (float *)malloc(sizeof(float) * C * D);
    float l0 = 0.0f, l1 = 0.0f;
    size_t n, counts[4] = {1, 2, 3, 0};
    int i;
    for (i = 0; i < R * C; i++) {
        x[i] = (float)((i * 7919) % 1000) * 0.01f - 5.0f;
    }
    CHECK(sk_num_threads() >= 1);
    CHECK_OK(sk_set_num_threads(1));
    CHECK(sk_num_threads() == 1);
    workload(x, p0, g0, &l0, w0);
    for (n = 0; n < 4; n++) {
        CHECK_OK(sk_set_num_threads(counts[n]));
        if (counts[n] > 0) {
            CHECK(sk_num_threads() == counts[n]);
        }
        workload(x, p1, g1, &l1, w1);
        /* Bit-identical for any number of threads. */
        CHECK(memcmp(p0, p1, sizeof(float) * R * C) == 0);
        CHECK(memcmp(g0, g1, sizeof(float) * R * C) == 0);
        CHECK(memcmp(w0, w1, sizeof(float) * C * D) == 0);
        CHECK(memcmp(&l0, &l1, sizeof l0) == 0);
    }
    CHECK(sk_num_threads() >= 1);
    /* Absurd thread counts are refused. */
    CHECK_ST(sk_set_num_threads(SIZE_MAX), SK_ERROR_INVALID_OPTION);
    CHECK_MSG("sk_set_num_threads");
    free(x);
    free(p0);
    free(p1);
    free(g0);
    free(g1);
    free(w0);
    free(w1);
}

static void panics(void)
{
    float p[2];
    const float x[2] = {1.0f, 1.0f};
    CHECK_ST(sk_debug_panic(), SK_PANIC);
    CHECK_MSG("sk_debug_panic: SK_PANIC: panic caught at the C boundary");
    CHECK_MSG("a deliberate panic");
    /* Inside a private pool too; the library stays usable afterwards. */
    CHECK_OK(sk_set_num_threads(2));
    CHECK_ST(sk_debug_panic(), SK_PANIC);
    CHECK_OK(sk_softmax(x, 2, p, 2, 2));
    CHECK(p[0] == 0.5f);
    CHECK_OK(sk_set_num_threads(0));
    /* Success leaves the message; sk_clear_last_error forgets it. */
    CHECK_MSG("deliberate");
    sk_clear_last_error();
    CHECK(strcmp(sk_last_error_message(), "") == 0);
}

/* Each thread sees only its own last error; calls from many threads at once are safe. */
static void *worker(void *arg)
{
    int id = *(int *)arg;
    int *ok = (int *)malloc(sizeof(int));
    float x[64], y[64];
    int i, k;
    *ok = 1;
    for (i = 0; i < 64; i++) {
        x[i] = (float)(i % 8);
    }
    *ok &= strcmp(sk_last_error_message(), "") == 0;
    for (k = 0; k < 50; k++) {
        *ok &= sk_softmax(x, 64, y, 64, 8) == SK_OK;
        if (id % 2 == 0) {
            *ok &= sk_softmax(x, 64, y, 64, 0) == SK_ERROR_ZERO_DIM;
            *ok &= strstr(sk_last_error_message(), "SK_ERROR_ZERO_DIM") != NULL;
        } else {
            *ok &= sk_softmax(x, 64, y, 63, 8) == SK_ERROR_LENGTH_MISMATCH;
            *ok &= strstr(sk_last_error_message(), "SK_ERROR_LENGTH_MISMATCH") != NULL;
        }
    }
    return ok;
}

static void per_thread_errors(void)
{
    pthread_t th[4];
    int ids[4] = {0, 1, 2, 3};
    int i;
    CHECK_ST(sk_softmax(NULL, 1, NULL, 1, 1), SK_NULL_POINTER);
    for (i = 0; i < 4; i++) {
        CHECK(pthread_create(&th[i], NULL, worker, &ids[i]) == 0);
    }
    for (i = 0; i < 4; i++) {
        void *r = NULL;
        CHECK(pthread_join(th[i], &r) == 0);
        CHECK(r != NULL && *(int *)r == 1);
        free(r);
    }
    /* The main thread's message is its own. */
    CHECK_MSG("SK_NULL_POINTER");
}

/* Calls keep working (and give the same bits) while another thread swaps the pool. */
enum { SR = 64, SC = 256 };
static float g_sx[SR * SC], g_sref[SR * SC];

static void *swap_worker(void *arg)
{
    int *ok = (int *)malloc(sizeof(int));
    float *y = (float *)malloc(sizeof(float) * SR * SC);
    int k;
    (void)arg;
    *ok = 1;
    for (k = 0; k < 40; k++) {
        *ok &= sk_softmax(g_sx, SR * SC, y, SR * SC, SC) == SK_OK;
        *ok &= memcmp(y, g_sref, sizeof(float) * SR * SC) == 0;
    }
    free(y);
    return ok;
}

static void pool_swaps(void)
{
    pthread_t th[3];
    int i;
    for (i = 0; i < SR * SC; i++) {
        g_sx[i] = (float)((i * 37) % 101) * 0.1f;
    }
    CHECK_OK(sk_softmax(g_sx, SR * SC, g_sref, SR * SC, SC));
    for (i = 0; i < 3; i++) {
        CHECK(pthread_create(&th[i], NULL, swap_worker, NULL) == 0);
    }
    for (i = 0; i < 12; i++) {
        CHECK_OK(sk_set_num_threads((size_t)(i % 4)));
    }
    for (i = 0; i < 3; i++) {
        void *r = NULL;
        CHECK(pthread_join(th[i], &r) == 0);
        CHECK(r != NULL && *(int *)r == 1);
        free(r);
    }
    CHECK_OK(sk_set_num_threads(0));
}

int main(void)
{
    names();
    tiers();
    threads();
    panics();
    per_thread_errors();
    pool_swaps();
    return finish("test_runtime");
}

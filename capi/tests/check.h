/* check.h - a minimal test harness for the C tests of softmax_kernels (C99). */
#ifndef SK_TEST_CHECK_H
#define SK_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "softmax_kernels.h"

static int g_passed = 0;
static int g_failed = 0;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (cond) {                                                                         \
            g_passed++;                                                                     \
        } else {                                                                            \
            g_failed++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);        \
        }                                                                                   \
    } while (0)

/* The call returns `expected`; on failure prints the status and the library's message. */
#define CHECK_ST(call, expected)                                                            \
    do {                                                                                    \
        sk_status st_ = (call);                                                             \
        if (st_ == (expected)) {                                                            \
            g_passed++;                                                                     \
        } else {                                                                            \
            g_failed++;                                                                     \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n",        \
                    __FILE__, __LINE__, #call, sk_status_name((int32_t)st_),               \
                    sk_status_name((int32_t)(expected)), sk_last_error_message());          \
        }                                                                                   \
    } while (0)

#define CHECK_OK(call) CHECK_ST(call, SK_OK)

/* |a - b| <= tol (and neither is NaN). */
#define CHECK_NEAR(a, b, tol)                                                               \
    do {                                                                                    \
        double a_ = (double)(a), b_ = (double)(b);                                          \
        if (fabs(a_ - b_) <= (tol)) {                                                       \
            g_passed++;                                                                     \
        } else {                                                                            \
            g_failed++;                                                                     \
            fprintf(stderr, "%s:%d: %s = %.9g, expected %s = %.9g (tol %g)\n", __FILE__,    \
                    __LINE__, #a, a_, #b, b_, (double)(tol));                               \
        }                                                                                   \
    } while (0)

/* The calling thread's last error message contains `needle`. */
#define CHECK_MSG(needle)                                                                   \
    do {                                                                                    \
        const char *m_ = sk_last_error_message();                                           \
        if (m_ != NULL && strstr(m_, (needle)) != NULL) {                                   \
            g_passed++;                                                                     \
        } else {                                                                            \
            g_failed++;                                                                     \
            fprintf(stderr, "%s:%d: last error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,  \
                    m_ ? m_ : "(null)", (needle));                                          \
        }                                                                                   \
    } while (0)

/* Prints the closing line and returns the exit status. */
static inline int finish(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

/* Calls f once per tier this CPU can run, with the tier forced, then goes back to auto. */
static inline void for_each_tier(void (*f)(int32_t tier))
{
    int32_t t;
    uint32_t avail = sk_available_isas();
    for (t = SK_ISA_SCALAR; t <= SK_ISA_AVX512; t++) {
        if (avail & (1u << t)) {
            CHECK_OK(sk_set_isa(t));
            CHECK(sk_active_isa() == t);
            f(t);
        }
    }
    CHECK_OK(sk_set_isa(SK_ISA_AUTO));
}

#endif /* SK_TEST_CHECK_H */

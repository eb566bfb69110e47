/* SOFTMAX_KERNELS_ISA set to something unusable: the free tier is refused with
 * SK_ERROR_BAD_ISA_ENV until a tier is forced with sk_set_isa. The crate reads the variable
 * once per process, so this test sets it before its first call. */
#define _POSIX_C_SOURCE 200112L
#include <stdlib.h>

#include "check.h"

int main(void)
{
    const float x[2] = {0.0f, 0.0f};
    float p[2] = {0, 0};
    sk_output_layer *layer = NULL;

    CHECK(setenv("SOFTMAX_KERNELS_ISA", "no-such-tier", 1) == 0);
    CHECK(sk_active_isa() == -1);
    CHECK_MSG("SOFTMAX_KERNELS_ISA=\"no-such-tier\" is rejected");
    CHECK_ST(sk_softmax(x, 2, p, 2, 2), SK_ERROR_BAD_ISA_ENV);
    CHECK_MSG("sk_softmax: SK_ERROR_BAD_ISA_ENV");
    CHECK_ST(sk_output_layer_create(1, 2, NULL, &layer), SK_ERROR_BAD_ISA_ENV);
    CHECK(layer == NULL);
    /* Forcing a tier works around it; going back to auto brings the error back. */
    CHECK_OK(sk_set_isa(SK_ISA_PORTABLE));
    CHECK_OK(sk_softmax(x, 2, p, 2, 2));
    CHECK(p[0] == 0.5f && p[1] == 0.5f);
    CHECK_OK(sk_set_isa(SK_ISA_AUTO));
    CHECK_ST(sk_softmax(x, 2, p, 2, 2), SK_ERROR_BAD_ISA_ENV);
    return finish("test_bad_env");
}

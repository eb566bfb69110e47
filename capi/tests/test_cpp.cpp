// The header from C++: it compiles under g++ -std=c++11 -Wall -Wextra -Werror -pedantic, its
// declarations have C linkage (this links against the C library), and the calls work.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "softmax_kernels.h"

static int failures = 0;
static int passes = 0;

static void check(bool ok, const char *what)
{
    if (ok) {
        ++passes;
    } else {
        ++failures;
        std::fprintf(stderr, "C++ check failed: %s (last error: %s)\n", what,
                     sk_last_error_message());
    }
}

int main()
{
    std::vector<float> x = {0.0f, std::log(2.0f), 1.0f, 1.0f};
    std::vector<float> p(x.size());
    check(sk_softmax(x.data(), x.size(), p.data(), p.size(), 2) == SK_OK, "softmax");
    check(std::fabs(p[0] - 1.0f / 3.0f) < 1e-6f && std::fabs(p[1] - 2.0f / 3.0f) < 1e-6f,
          "softmax values");
    check(p[2] == 0.5f, "equal logits");

    sk_ce_options opts;
    check(sk_ce_options_default(&opts) == SK_OK, "options");
    std::vector<float> z(8, 0.0f);
    std::vector<std::int64_t> t = {3, 0};
    float loss = 0.0f;
    check(sk_cross_entropy(z.data(), z.size(), t.data(), t.size(), 4, &opts, &loss) == SK_OK,
          "cross_entropy");
    check(std::fabs(loss - std::log(4.0f)) < 1e-6f, "uniform loss is ln C");

    sk_status st = sk_softmax(nullptr, 3, p.data(), p.size(), 3);
    check(st == SK_NULL_POINTER, "null pointer");
    check(std::strstr(sk_last_error_message(), "`x` is NULL") != nullptr, "message");
    check(std::strcmp(sk_status_name(st), "SK_NULL_POINTER") == 0, "status name");

    sk_output_layer *layer = nullptr;
    check(sk_output_layer_create(4, 3, nullptr, &layer) == SK_OK && layer != nullptr, "layer");
    check(sk_output_layer_init_xavier(layer, 7) == SK_OK, "xavier");
    std::vector<float> a = {1, 2, 3, 4};
    std::vector<std::uint32_t> pred(1);
    check(sk_output_layer_predict(layer, a.data(), a.size(), pred.data(), pred.size()) == SK_OK,
          "predict");
    check(pred[0] < 3, "prediction in range");
    sk_output_layer_free(layer);

    // A struct returned by value, and a merge of two shards' states.
    sk_row_state e = sk_row_state_empty();
    check(std::isinf(e.max) && e.max < 0 && e.sum == 0.0 && e.has_target == 0.0, "empty state");
    std::vector<float> zs = {1.0f, 2.0f, 3.0f}, keep(3);
    std::vector<std::int64_t> tok = {1};
    sk_row_state sa = e, sb = e;
    check(sk_token_shard_states(zs.data(), 1, tok.data(), 1, keep.data(), 1, 1, 0, 3, nullptr,
                                &sa, 1) == SK_OK &&
              sk_token_shard_states(zs.data() + 1, 2, tok.data(), 1, keep.data() + 1, 2, 2, 1, 3,
                                    nullptr, &sb, 1) == SK_OK &&
              sk_row_states_merge(&sa, 1, &sb, 1) == SK_OK,
          "shard states and merge");
    float lp = 0.0f;
    sk_token_outputs tout = {&lp, 1, nullptr, 0, nullptr, 0};
    check(sk_row_states_finalize(&sa, 1, tok.data(), 1, 3, nullptr, &tout) == SK_OK, "finalize");
    check(std::fabs(lp - (2.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)))) < 1e-6,
          "sharded logp");

    check((sk_available_isas() & (1u << SK_ISA_SCALAR)) != 0, "scalar tier");
    check(sk_set_isa(SK_ISA_SCALAR) == SK_OK && sk_active_isa() == SK_ISA_SCALAR, "force tier");
    check(sk_set_isa(SK_ISA_AUTO) == SK_OK, "auto tier");
    check(sk_debug_panic() == SK_PANIC, "panic guard");

    std::printf("test_cpp: %d passed, %d failed\n", passes, failures);
    return failures == 0 ? 0 : 1;
}

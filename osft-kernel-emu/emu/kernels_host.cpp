// osft's kernels.cu, unchanged, compiled for the host under cuda_host.h, and the table that
// calls each kernel by name from a cuLaunchKernel-style array of pointers to its arguments.
#include "cuda_host.h"

#include <functional>
#include <tuple>
#include <utility>

#include OSFT_KERNELS_CU

#include "emulator.h"

namespace {
template <class... A, size_t... I>
void invoke_impl(void (*f)(A...), void** params, std::index_sequence<I...>) {
    f(*static_cast<A*>(params[I])...);
}
template <class... A>
void invoke(void (*f)(A...), void** params) {
    invoke_impl(f, params, std::index_sequence_for<A...>{});
}
}  // namespace

#define K(name) {#name, [](void** p) { invoke(&name, p); }}
#define AXPBY_TO(S) K(osft_axpby_##S##_f32), K(osft_axpby_##S##_f64), K(osft_axpby_##S##_f16), K(osft_axpby_##S##_bf16)
#define ALL4(P) K(P##_f32), K(P##_f64), K(P##_f16), K(P##_bf16)
#define COMPUTE2(P) K(P##_f32), K(P##_f64)

const std::vector<osft_emu::Kernel>& osft_emu::kernels() {
    static const std::vector<Kernel> table = {
        AXPBY_TO(f32), AXPBY_TO(f64), AXPBY_TO(f16), AXPBY_TO(bf16),
        ALL4(osft_sum_squares), ALL4(osft_count_nonfinite),
        COMPUTE2(osft_dgmm), COMPUTE2(osft_add_diagonal), COMPUTE2(osft_cosine), COMPUTE2(osft_sign_fix),
        K(osft_fill_ptrs),
    };
    return table;
}

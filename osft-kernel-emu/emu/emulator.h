#pragma once
#include <functional>
#include <vector>

namespace osft_emu {
struct Kernel {
    const char* name;
    std::function<void(void**)> call;
};
// Every kernel of kernels.cu, by name (kernels_host.cpp).
const std::vector<Kernel>& kernels();
}  // namespace osft_emu

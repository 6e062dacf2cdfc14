// A minimal OSFT trainer on one layer, through the C++ binding (bindings/cpp/osft.hpp).
//
// 1. Decompose a "pretrained" weight W0 (N x M) = U diag(S) V and freeze the top-k part
//    (k by the energy rule). The rest, U_low diag(S_low) V_low, is trainable.
// 2. Each step: reconstruct W with osft, compute the loss 0.5/B ||W X - Y||^2 of a new task and the
//    gradients of U_low and V_low (plain loops here; a real trainer has autograd), project them
//    away from the frozen subspace (one projector per side, built once), take an SGD step.
//    Every 10 steps, retract: project U_low and V_low themselves (rounding of the updates lets a
//    little back into the frozen subspace; the retraction removes it).
// 3. Print the loss, the leakage of the trainable factors into the frozen subspace (stays at
//    rounding level: the update never touches what earlier tasks need), and the reconstruction
//    error of W0 by the current factors (how far the layer moved).
//
// Build (see docs/c-and-cpp.md for CMake and pkg-config):
//   cargo build --release
//   c++ -std=c++17 -Iinclude -Ibindings/cpp examples/cpp/trainer.cpp -Ltarget/release -losft
//       -Wl,-rpath,$PWD/target/release -o trainer && ./trainer
//
// Backend: the CPU here (host buffers). With OSFT_BACKEND=auto the context is created with
// osft::Backend::Auto, which picks CUDA once the CUDA executor ships and falls back to the CPU
// otherwise; on CUDA, the matrices below would be device buffers (cudaMalloc) described with
// osft::Device::Cuda, and the same calls run on the context's stream.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "osft.hpp"

namespace {

constexpr int64_t N = 48, M = 32, B = 64;  // layer N x M, batch of B samples
constexpr int kSteps = 60;
constexpr float kLr = 0.5f;

double rnd(unsigned long long& s) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

// C (r x c) = A (r x n) * B (n x c), all row-major, with optional transposes (naive).
void matmul(const float* a, bool ta, const float* b, bool tb, float* c, int64_t r, int64_t n, int64_t cc) {
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < cc; ++j) {
            double acc = 0;
            for (int64_t l = 0; l < n; ++l) acc += double(ta ? a[l * r + i] : a[i * n + l]) * (tb ? b[j * n + l] : b[l * cc + j]);
            c[i * cc + j] = static_cast<float>(acc);
        }
}

}  // namespace

int main() {
    try {
        const char* env = std::getenv("OSFT_BACKEND");
        const bool autosel = env && std::strcmp(env, "auto") == 0;
        osft::Context ctx(autosel ? osft::Backend::Auto : osft::Backend::Cpu);
        if (ctx.backend() != osft::Backend::Cpu) {
            std::printf("the context runs on CUDA: this example's buffers are host memory, use device buffers\n");
            return 0;
        }
        const osft::Version v = osft::version();
        std::printf("osft %u.%u.%u, backend %s\n", v.major, v.minor, v.patch, autosel ? "auto -> cpu" : "cpu");

        // The pretrained weight, with a decaying spectrum.
        unsigned long long seed = 7;
        std::vector<float> w0(N * M);
        for (int64_t i = 0; i < N; ++i)
            for (int64_t j = 0; j < M; ++j) w0[i * M + j] = static_cast<float>(rnd(seed) * std::exp(-0.05 * double(i + j)));
        const osft::Matrix W0 = osft::Matrix::row_major(w0.data(), N, M);
        const int64_t R = std::min(N, M);

        // k: the energy rule on the singular values.
        std::vector<float> s(R);
        const osft::Matrix S = osft::Matrix::vector(s.data(), R);
        ctx.svd(W0, nullptr, S, nullptr);
        const int64_t k = osft::select_rank(osft::RankRule::Energy, ctx.read_vector(S), 0.8);
        const int64_t r = R - k;
        std::printf("R = %lld, frozen k = %lld (80%% of the energy), trainable rank %lld\n", (long long)R, (long long)k,
                    (long long)r);

        // Decompose: frozen U_high, S_high, V_high; trainable U_low, S_low, V_low.
        std::vector<float> uh(N * k), sh(k), vh(k * M), ul(N * r), sl(r), vl(r * M);
        osft::Matrix Uh = osft::Matrix::row_major(uh.data(), N, k), Sh = osft::Matrix::vector(sh.data(), k),
                     Vh = osft::Matrix::row_major(vh.data(), k, M);
        osft::Matrix Ul = osft::Matrix::row_major(ul.data(), N, r), Sl = osft::Matrix::vector(sl.data(), r),
                     Vl = osft::Matrix::row_major(vl.data(), r, M);
        osft::DecomposeParts parts;
        parts.u_high = &Uh;
        parts.s_high = &Sh;
        parts.v_high = &Vh;
        parts.u_low = &Ul;
        parts.s_low = &Sl;
        parts.v_low = &Vl;
        ctx.decompose(W0, k, parts);
        const osft::Factors high{Uh, Sh, Vh}, low{Ul, Sl, Vl};
        std::printf("initial reconstruction error %.3e, orthonormality of U_high %.3e\n",
                    ctx.reconstruction_error(W0, &high, &low)[0], ctx.orthonormality_error(osft::Side::Left, Uh)[0]);

        // Projectors for the two trainable factors, built once (they read Uh / Vh on each apply).
        const osft::Projector pu = ctx.projector(osft::Side::Left, &Uh, nullptr);
        const osft::Projector pv = ctx.projector(osft::Side::Right, nullptr, &Vh);

        // The new task: Y = T X for a random T.
        std::vector<float> x(M * B), y(N * B), t(N * M);
        for (auto& e : x) e = static_cast<float>(rnd(seed));
        for (auto& e : t) e = static_cast<float>(0.3 * rnd(seed));
        matmul(t.data(), false, x.data(), false, y.data(), N, M, B);

        std::vector<float> w(N * M), res(N * B), dw(N * M), du(N * r), dv(r * M), tmp(N * r), tmp2(r * M);
        const osft::Matrix Wm = osft::Matrix::row_major(w.data(), N, M);
        const osft::Matrix dU = osft::Matrix::row_major(du.data(), N, r), dV = osft::Matrix::row_major(dv.data(), r, M);
        for (int step = 0; step <= kSteps; ++step) {
            // Forward: W = U_h S_h V_h + U_l S_l V_l (osft), residual = W X - Y.
            ctx.reconstruct(&high, &low, Wm);
            matmul(w.data(), false, x.data(), false, res.data(), N, M, B);
            double loss = 0;
            for (int64_t i = 0; i < N * B; ++i) {
                res[i] -= y[i];
                loss += 0.5 * double(res[i]) * res[i] / B;
            }
            if (step % 10 == 0) {
                const double leak_u = ctx.leakage(osft::Side::Left, Uh, Ul)[0];
                const double leak_v = ctx.leakage(osft::Side::Right, Vh, Vl)[0];
                const double rec = ctx.reconstruction_error(W0, &high, &low)[0];
                std::printf("step %3d  loss %9.5f  leakage U_low %.2e  V_low %.2e  reconstruction error of W0 %.3e\n", step,
                            loss, leak_u, leak_v, rec);
            }
            if (step == kSteps) break;
            // Backward: dW = res X^T / B; dU_l = dW V_l^T diag(S_l); dV_l = diag(S_l) U_l^T dW.
            matmul(res.data(), false, x.data(), true, dw.data(), N, B, M);
            for (auto& e : dw) e /= B;
            matmul(dw.data(), false, vl.data(), true, tmp.data(), N, M, r);
            for (int64_t i = 0; i < N; ++i)
                for (int64_t j = 0; j < r; ++j) du[i * r + j] = tmp[i * r + j] * sl[j];
            matmul(ul.data(), true, dw.data(), false, tmp2.data(), r, N, M);
            for (int64_t i = 0; i < r; ++i)
                for (int64_t j = 0; j < M; ++j) dv[i * M + j] = sl[i] * tmp2[i * M + j];
            // The OSFT step: remove every component in the frozen subspace, then SGD.
            pu.apply(dU);
            pv.apply(dV);
            for (int64_t i = 0; i < N * r; ++i) ul[i] -= kLr * du[i];
            for (int64_t i = 0; i < r * M; ++i) vl[i] -= kLr * dv[i];
            // Rounding lets a little of each update back into the frozen subspace; a retraction
            // (projecting the trainable factors themselves) every few steps removes it.
            if (step % 10 == 9) {
                pu.apply(Ul);
                pv.apply(Vl);
            }
        }
        // The frozen part of W is untouched: U_h^T W V_h^T is still diag(S_high).
        double drift = 0;
        for (int64_t a = 0; a < k; ++a)
            for (int64_t b = 0; b < k; ++b) {
                double c = 0;
                for (int64_t i = 0; i < N; ++i)
                    for (int64_t j = 0; j < M; ++j) c += double(uh[i * k + a]) * w[i * M + j] * vh[b * M + j];
                drift = std::fmax(drift, std::fabs(c - (a == b ? sh[a] : 0.0)));
            }
        std::printf("max |U_high^T W V_high^T - diag(S_high)| after training: %.3e\n", drift);
        return drift < 1e-3 ? 0 : 1;
    } catch (const osft::Error& e) {
        std::fprintf(stderr, "osft error %d (%s): %s\n", static_cast<int>(e.status()), osft_status_string(e.status()), e.what());
        return 1;
    }
}

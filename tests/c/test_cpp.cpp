// The C++17 binding (bindings/cpp/osft.hpp): RAII handles (move-only, freed once), exceptions
// carrying status and message, views, and numbers against float64 references.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "osft.hpp"

static int g_failures = 0, g_checks = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        ++g_checks;                                                                  \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++g_failures;                                                            \
        }                                                                            \
    } while (0)

// `expr` must throw osft::Error with `want` and a non-empty message.
#define EXPECT_THROW_STATUS(expr, want)                                                           \
    do {                                                                                          \
        ++g_checks;                                                                               \
        try {                                                                                     \
            expr;                                                                                 \
            std::fprintf(stderr, "%s:%d: %s did not throw\n", __FILE__, __LINE__, #expr);         \
            ++g_failures;                                                                         \
        } catch (const osft::Error& e) {                                                          \
            if (e.status() != (want) || std::string(e.what()).empty()) {                          \
                std::fprintf(stderr, "%s:%d: %s threw %d (%s), wanted %d\n", __FILE__, __LINE__, #expr, \
                             static_cast<int>(e.status()), e.what(), static_cast<int>(want));    \
                ++g_failures;                                                                     \
            }                                                                                     \
        }                                                                                         \
    } while (0)

static_assert(!std::is_copy_constructible_v<osft::Context>, "Context is move-only");
static_assert(!std::is_copy_assignable_v<osft::Context>, "Context is move-only");
static_assert(std::is_nothrow_move_constructible_v<osft::Context>, "Context moves without throwing");
static_assert(std::is_nothrow_move_assignable_v<osft::Context>, "Context moves without throwing");
static_assert(!std::is_copy_constructible_v<osft::Projector>, "Projector is move-only");
static_assert(std::is_nothrow_move_constructible_v<osft::Projector>, "Projector moves without throwing");
static_assert(std::is_base_of_v<std::exception, osft::Error>, "Error is an exception");

namespace {

unsigned long long rng = 12345;
double rnd() {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

void handles() {
    osft::Context a;  // CPU
    CHECK(a.handle() != nullptr);
    CHECK(a.backend() == osft::Backend::Cpu);
    osft::Context b(std::move(a));
    CHECK(a.handle() == nullptr && b.handle() != nullptr);
    osft::Context c(osft::Backend::Auto);  // CUDA where it works, else the CPU
    CHECK(c.backend() == osft::Backend::Cpu || c.backend() == osft::Backend::Cuda);
    c = std::move(b);  // frees c's own handle, takes b's
    CHECK(b.handle() == nullptr && c.handle() != nullptr);
    CHECK(c.stream() == nullptr);
    c.set_stream(nullptr);
    EXPECT_THROW_STATUS(c.set_stream(&rng), OSFT_STATUS_INVALID_ARGUMENT);
    EXPECT_THROW_STATUS(osft::Context(osft::Backend::Cuda, 1000), OSFT_STATUS_BACKEND_UNAVAILABLE);
    EXPECT_THROW_STATUS(osft::Context(static_cast<osft::Backend>(9)), OSFT_STATUS_INVALID_ARGUMENT);
    CHECK(c.svd_algorithm() == osft::SvdAlgorithm::Auto && c.math_mode() == osft::MathMode::Exact);
    c.set_svd_algorithm(osft::SvdAlgorithm::Jacobi);
    c.set_math_mode(osft::MathMode::Tf32);
    CHECK(c.svd_algorithm() == osft::SvdAlgorithm::Jacobi && c.math_mode() == osft::MathMode::Tf32);
    EXPECT_THROW_STATUS(c.set_svd_algorithm(static_cast<osft::SvdAlgorithm>(7)), OSFT_STATUS_INVALID_ARGUMENT);
    EXPECT_THROW_STATUS(c.set_math_mode(static_cast<osft::MathMode>(-1)), OSFT_STATUS_INVALID_ARGUMENT);
    CHECK(c.svd_algorithm() == osft::SvdAlgorithm::Jacobi && c.math_mode() == osft::MathMode::Tf32);
    c.set_svd_algorithm(osft::SvdAlgorithm::Auto);
    c.set_math_mode(osft::MathMode::Exact);
    try {
        osft::Context cuda(osft::Backend::Cuda, 1000);
        CHECK(false);
    } catch (const osft::Error& e) {
        CHECK(std::string(e.what()).find("CUDA") != std::string::npos);
    }
    EXPECT_THROW_STATUS(osft::check(osft_debug_panic()), OSFT_STATUS_INTERNAL);
    const osft::Version v = osft::version();
    CHECK(v.abi == OSFT_ABI_VERSION && v.major == OSFT_VERSION_MAJOR && v.minor == OSFT_VERSION_MINOR);
}

void numbers(bool row_major) {
    const int64_t n = 10, m = 7, k = 3, lo = m - k;
    osft::Context ctx;
    std::vector<float> w(n * m), uh(n * k), sh(k), vh(k * m), ul(n * lo), sl(lo), vl(lo * m);
    for (auto& x : w) x = static_cast<float>(rnd());
    auto view = [row_major](std::vector<float>& d, int64_t r, int64_t c) {
        return row_major ? osft::Matrix::row_major(d.data(), r, c) : osft::Matrix::col_major(d.data(), r, c);
    };
    auto at = [row_major](const std::vector<float>& d, int64_t r, int64_t c, int64_t i, int64_t j) -> double {
        return row_major ? d[i * c + j] : d[j * r + i];
    };
    (void)lo;
    osft::Matrix W = view(w, n, m), Uh = view(uh, n, k), Sh = osft::Matrix::vector(sh.data(), k), Vh = view(vh, k, m);
    osft::Matrix Ul = view(ul, n, lo), Sl = osft::Matrix::vector(sl.data(), lo), Vl = view(vl, lo, m);
    osft::DecomposeParts parts;
    parts.u_high = &Uh;
    parts.s_high = &Sh;
    parts.v_high = &Vh;
    parts.u_low = &Ul;
    parts.s_low = &Sl;
    parts.v_low = &Vl;
    ctx.decompose(W, k, parts, osft::DType::F32);

    // Orthonormal columns of U_high (float64 reference).
    for (int64_t p = 0; p < k; ++p)
        for (int64_t q = 0; q < k; ++q) {
            double d = 0;
            for (int64_t i = 0; i < n; ++i) d += at(uh, n, k, i, p) * at(uh, n, k, i, q);
            CHECK(std::fabs(d - (p == q ? 1.0 : 0.0)) < 1e-5);
        }
    // Reconstruction of W from both parts.
    double err = 0, nw = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < m; ++j) {
            double r = 0;
            for (int64_t t = 0; t < k; ++t) r += at(uh, n, k, i, t) * sh[t] * at(vh, k, m, t, j);
            for (int64_t t = 0; t < lo; ++t) r += at(ul, n, lo, i, t) * sl[t] * at(vl, lo, m, t, j);
            err += (r - at(w, n, m, i, j)) * (r - at(w, n, m, i, j));
            nw += at(w, n, m, i, j) * at(w, n, m, i, j);
        }
    CHECK(std::sqrt(err / nw) < 1e-5);
    osft::Factors high{Uh, Sh, Vh}, low{Ul, Sl, Vl};
    CHECK(ctx.reconstruction_error(W, &high, &low)[0] < 1e-5);
    CHECK(ctx.orthonormality_error(osft::Side::Left, Uh)[0] < 1e-5);
    const std::vector<double> s = ctx.read_vector(Sh);
    CHECK(s.size() == static_cast<size_t>(k) && s[0] >= s[1] && s[1] >= s[2]);

    // Project a gradient of U_low: reference X - U (U^T X) in float64.
    std::vector<float> g(n * lo);
    for (auto& x : g) x = static_cast<float>(rnd());
    std::vector<double> ref(n * lo);
    for (int64_t j = 0; j < lo; ++j) {
        for (int64_t i = 0; i < n; ++i) ref[i * lo + j] = at(g, n, lo, i, j);
        for (int64_t t = 0; t < k; ++t) {
            double c = 0;
            for (int64_t l = 0; l < n; ++l) c += at(uh, n, k, l, t) * at(g, n, lo, l, j);
            for (int64_t i = 0; i < n; ++i) ref[i * lo + j] -= at(uh, n, k, i, t) * c;
        }
    }
    osft::Matrix G = view(g, n, lo);
    osft::Projector p = ctx.projector(osft::Side::Left, &Uh, nullptr, osft::Strategy::Coefficient);
    CHECK(p.strategies().first == osft::Strategy::Coefficient && p.strategies().second == osft::Strategy::None);
    osft::Projector p2 = std::move(p);
    CHECK(!p && p2);
    p2.apply(G);
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < lo; ++j) worst = std::fmax(worst, std::fabs(at(g, n, lo, i, j) - ref[i * lo + j]));
    CHECK(worst < 1e-5);
    CHECK(ctx.leakage(osft::Side::Left, Uh, G)[0] < 1e-5);

    // A bad call throws with the library's message and writes nothing.
    std::vector<float> before = g;
    EXPECT_THROW_STATUS(ctx.project(osft::Side::Left, &Vh, nullptr, G), OSFT_STATUS_INVALID_SHAPE);
    EXPECT_THROW_STATUS(ctx.decompose(W, m + 1, parts), OSFT_STATUS_RANK_OUT_OF_RANGE);
    CHECK(std::memcmp(before.data(), g.data(), g.size() * sizeof(float)) == 0);
    try {
        ctx.project(osft::Side::Left, &Vh, nullptr, G);
    } catch (const osft::Error& e) {
        CHECK(std::string(e.what()).find("U_high") != std::string::npos);
    }

    // Ranks.
    CHECK(osft::select_rank(osft::RankRule::Fraction, s, 0.5) == 1);
    // The seed's rule, mean 2, mrr = 2, trr = 6: CR = 2 + 4 I / 2.00000001 = 3.99999999 -> 4 and
    // 7.99999997 -> 8 (past trr, within d); defaults mrr = 5, trr = 10: 7.4999999875 -> 7, 12.49.. -> 10.
    const std::vector<int64_t> ks = osft::adaptive_ranks({1.0, 3.0}, {10, 10}, 0.2, 0.6);
    CHECK(ks.size() == 2 && ks[0] == 4 && ks[1] == 8);
    const std::vector<int64_t> kd = osft::adaptive_ranks({1.0, 3.0}, {10, 10});
    CHECK(kd.size() == 2 && kd[0] == 7 && kd[1] == 10);
    EXPECT_THROW_STATUS(osft::adaptive_ranks({0.0, 0.0}, {10, 10}), OSFT_STATUS_INVALID_ARGUMENT);
    EXPECT_THROW_STATUS(osft::select_rank(osft::RankRule::Fixed, s, 9.0), OSFT_STATUS_RANK_OUT_OF_RANGE);
}

}  // namespace

int main() {
    try {
        handles();
        numbers(true);
        numbers(false);
    } catch (const osft::Error& e) {
        std::fprintf(stderr, "unexpected osft::Error %d: %s\n", static_cast<int>(e.status()), e.what());
        ++g_failures;
    }
    if (g_failures) {
        std::fprintf(stderr, "test_cpp: %d of %d checks FAILED\n", g_failures, g_checks);
        return 1;
    }
    std::printf("test_cpp: all %d checks passed\n", g_checks);
    return 0;
}

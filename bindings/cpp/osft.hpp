// osft.hpp: header-only C++17 binding of the osft C ABI (include/osft.h).
// SPDX-License-Identifier: Apache-2.0
//
//   osft::Context ctx;                                   // CPU (or osft::Backend::Auto)
//   auto w = osft::Matrix::row_major(W.data(), n, m);    // views over caller memory
//   ctx.decompose(w, k, {/*u_high*/ &uh, nullptr, &vh}, osft::DType::F32);
//   ctx.project(osft::Side::Left, &uh, nullptr, grad);   // in place
//
// - Every failing call throws osft::Error, carrying the status and the library's message.
// - osft::Context and osft::Projector own their handles: move-only, freed by the destructor.
// - osft::Matrix is a non-owning view (pointer, dtype, shape, element strides, batch), the same
//   72 bytes as osft_matrix; it never allocates.
#ifndef OSFT_HPP
#define OSFT_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "osft.h"

namespace osft {

/// A failed osft call: `status()` is the `osft_status`, `what()` the library's message.
class Error : public std::runtime_error {
public:
    Error(osft_status status, const std::string& message)
        : std::runtime_error(message.empty() ? std::string(osft_status_string(status)) : message), status_(status) {}
    osft_status status() const noexcept { return status_; }

private:
    osft_status status_;
};

/// Throw `Error` for a non-OK status, with the thread's last error message.
inline void check(osft_status status) {
    if (status != OSFT_STATUS_OK) {
        throw Error(status, osft_last_error_message());
    }
}

enum class DType : int32_t { F32 = OSFT_DTYPE_F32, F64 = OSFT_DTYPE_F64, F16 = OSFT_DTYPE_F16, BF16 = OSFT_DTYPE_BF16 };
enum class Device : int32_t { Host = OSFT_DEVICE_HOST, Cuda = OSFT_DEVICE_CUDA };
enum class Side : int32_t { Left = OSFT_SIDE_LEFT, Right = OSFT_SIDE_RIGHT, Both = OSFT_SIDE_BOTH };
enum class Backend : int32_t { Cpu = OSFT_BACKEND_CPU, Cuda = OSFT_BACKEND_CUDA, Auto = OSFT_BACKEND_AUTO };
enum class Strategy : int32_t {
    None = -1,  // reported by Projector::strategies for a side that is not projected
    Auto = OSFT_STRATEGY_AUTO,
    Coefficient = OSFT_STRATEGY_COEFFICIENT,
    CachedProjector = OSFT_STRATEGY_CACHED_PROJECTOR,
};
/// SVD algorithm of a context (see osft_svd_algorithm): each names the cuSOLVER routine.
enum class SvdAlgorithm : int32_t {
    Auto = OSFT_SVD_AUTO,
    Qr = OSFT_SVD_QR,
    Jacobi = OSFT_SVD_JACOBI,
    JacobiBatched = OSFT_SVD_JACOBI_BATCHED,
    ApproxBatched = OSFT_SVD_APPROX_BATCHED,  // approximate
    Polar = OSFT_SVD_POLAR,
    Randomized = OSFT_SVD_RANDOMIZED,  // approximate, top-k decompose only
};
/// Math mode of projection/reconstruction GEMMs on f32 data (see osft_math_mode).
enum class MathMode : int32_t { Exact = OSFT_MATH_EXACT, Tf32 = OSFT_MATH_TF32, Bf16 = OSFT_MATH_BF16 };
enum class RankRule : int32_t {
    Fixed = OSFT_RANK_FIXED,
    Fraction = OSFT_RANK_FRACTION,
    Energy = OSFT_RANK_ENERGY,
    EntropyEffective = OSFT_RANK_ENTROPY_EFFECTIVE,
};

/// The dtype of a C++ element type (float, double; use the untyped constructor for f16/bf16).
template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
    static constexpr DType value = DType::F32;
};
template <>
struct dtype_of<double> {
    static constexpr DType value = DType::F64;
};

struct Version {
    uint32_t major, minor, patch, abi;
};

/// The version of the loaded library.
inline Version version() noexcept {
    return {osft_version_major(), osft_version_minor(), osft_version_patch(), osft_abi_version()};
}

/// A non-owning (batched) strided matrix view: element `(b, i, j)` at
/// `data + b * batch_stride + i * row_stride + j * col_stride` elements. Strides are in elements.
class Matrix {
public:
    Matrix() noexcept : m_{} { m_.batch = 1; }

    Matrix(void* data, DType dtype, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride,
           int64_t batch = 1, int64_t batch_stride = 0, Device device = Device::Host, int32_t device_ordinal = 0) noexcept
        : m_{} {
        m_.data = data;
        m_.dtype = static_cast<int32_t>(dtype);
        m_.device = static_cast<int32_t>(device);
        m_.device_ordinal = device_ordinal;
        m_._reserved = 0;
        m_.rows = rows;
        m_.cols = cols;
        m_.row_stride = row_stride;
        m_.col_stride = col_stride;
        m_.batch = batch;
        m_.batch_stride = batch_stride;
    }

    /// Wrap an existing C descriptor.
    explicit Matrix(const osft_matrix& m) noexcept : m_(m) {}

    /// A view with strides of its own (e.g. a padded leading dimension or a transposed view).
    template <class T>
    static Matrix strided(T* data, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) noexcept {
        return Matrix(const_cast<void*>(static_cast<const void*>(data)), dtype_of<std::remove_cv_t<T>>::value, rows, cols,
                      row_stride, col_stride);
    }
    /// Contiguous row-major (numpy / PyTorch default).
    template <class T>
    static Matrix row_major(T* data, int64_t rows, int64_t cols) noexcept {
        return strided(data, rows, cols, cols, 1);
    }
    /// Contiguous column-major (BLAS / Eigen default).
    template <class T>
    static Matrix col_major(T* data, int64_t rows, int64_t cols) noexcept {
        return strided(data, rows, cols, 1, rows);
    }
    /// A column vector of `n` elements (singular values).
    template <class T>
    static Matrix vector(T* data, int64_t n) noexcept {
        return strided(data, n, 1, 1, 1);
    }

    /// The same view as a strided batch of `batch` matrices `batch_stride` elements apart.
    Matrix batched(int64_t batch, int64_t batch_stride) const noexcept {
        Matrix r = *this;
        r.m_.batch = batch;
        r.m_.batch_stride = batch_stride;
        return r;
    }
    /// The transposed view of the same memory.
    Matrix t() const noexcept {
        Matrix r = *this;
        std::swap(r.m_.rows, r.m_.cols);
        std::swap(r.m_.row_stride, r.m_.col_stride);
        return r;
    }

    void* data() const noexcept { return m_.data; }
    DType dtype() const noexcept { return static_cast<DType>(m_.dtype); }
    int64_t rows() const noexcept { return m_.rows; }
    int64_t cols() const noexcept { return m_.cols; }
    int64_t batch() const noexcept { return m_.batch; }
    const osft_matrix* c() const noexcept { return &m_; }
    osft_matrix& raw() noexcept { return m_; }

private:
    osft_matrix m_;
};

static_assert(sizeof(Matrix) == sizeof(osft_matrix), "osft::Matrix must be layout-compatible with osft_matrix");

namespace detail {
inline const osft_matrix* c(const Matrix* m) noexcept { return m ? m->c() : nullptr; }
inline size_t as_size(int64_t v) {
    if (v < 0) throw Error(OSFT_STATUS_INVALID_SHAPE, "negative size");
    return static_cast<size_t>(v);
}
}  // namespace detail

/// The six parts of a decomposition; a null pointer skips a part.
struct DecomposeParts {
    const Matrix* u_high = nullptr;
    const Matrix* s_high = nullptr;
    const Matrix* v_high = nullptr;
    const Matrix* u_low = nullptr;
    const Matrix* s_low = nullptr;
    const Matrix* v_low = nullptr;
};

/// One factor triple `U diag(S) V` for reconstruction.
struct Factors {
    Matrix u, s, v;
};

class Context;

/// Repeated projection against fixed bases (see osft_projector_create). Move-only; keeps its
/// context alive; reads the caller's basis memory on every apply.
class Projector {
public:
    Projector() noexcept = default;
    Projector(const Projector&) = delete;
    Projector& operator=(const Projector&) = delete;
    Projector(Projector&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Projector& operator=(Projector&& o) noexcept {
        if (this != &o) {
            osft_projector_destroy(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    ~Projector() { osft_projector_destroy(h_); }

    /// Project `x` in place, or into `out`.
    void apply(const Matrix& x, const Matrix* out = nullptr) const { check(osft_projector_apply(h_, x.c(), detail::c(out))); }

    /// The strategy of the left and right sides (`Strategy::None` for a side not projected).
    std::pair<Strategy, Strategy> strategies() const {
        int32_t l = -1, r = -1;
        check(osft_projector_strategies(h_, &l, &r));
        return {static_cast<Strategy>(l), static_cast<Strategy>(r)};
    }

    osft_projector* handle() const noexcept { return h_; }
    explicit operator bool() const noexcept { return h_ != nullptr; }

private:
    friend class Context;
    explicit Projector(osft_projector* h) noexcept : h_(h) {}
    osft_projector* h_ = nullptr;
};

/// An osft context (executor + workspace). Move-only; the destructor frees it.
class Context {
public:
    /// A context on `backend` (`Backend::Auto` falls back to the CPU when CUDA is unavailable).
    explicit Context(Backend backend = Backend::Cpu, int32_t device_ordinal = 0) {
        check(osft_context_create(static_cast<int32_t>(backend), device_ordinal, &h_));
    }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    Context(Context&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Context& operator=(Context&& o) noexcept {
        if (this != &o) {
            osft_context_destroy(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    ~Context() { osft_context_destroy(h_); }

    osft_context* handle() const noexcept { return h_; }

    Backend backend() const {
        int32_t b = -1;
        check(osft_context_backend(h_, &b));
        return static_cast<Backend>(b);
    }
    void set_stream(void* stream) { check(osft_context_set_stream(h_, stream)); }
    void* stream() const {
        void* s = nullptr;
        check(osft_context_get_stream(h_, &s));
        return s;
    }
    /// The SVD algorithm of later svd/svd_list/decompose calls (see osft_context_set_svd_algorithm).
    void set_svd_algorithm(SvdAlgorithm a) { check(osft_context_set_svd_algorithm(h_, static_cast<int32_t>(a))); }
    SvdAlgorithm svd_algorithm() const {
        int32_t a = -1;
        check(osft_context_get_svd_algorithm(h_, &a));
        return static_cast<SvdAlgorithm>(a);
    }
    /// The math mode of later projection/reconstruction GEMMs (see osft_context_set_math_mode).
    void set_math_mode(MathMode m) { check(osft_context_set_math_mode(h_, static_cast<int32_t>(m))); }
    MathMode math_mode() const {
        int32_t m = -1;
        check(osft_context_get_math_mode(h_, &m));
        return static_cast<MathMode>(m);
    }
    /// Use caller memory as the workspace (see osft_context_set_workspace).
    void set_workspace(void* ptr, size_t bytes) { check(osft_context_set_workspace(h_, ptr, bytes)); }
    void release_workspace() { check(osft_context_release_workspace(h_)); }
    size_t workspace_bytes() const {
        size_t b = 0;
        check(osft_context_workspace_bytes(h_, &b));
        return b;
    }

    // --- SVD and decomposition -------------------------------------------------------------

    size_t svd_workspace_size(const Matrix& w, DType compute = DType::F32) const {
        size_t b = 0;
        check(osft_svd_workspace_size(h_, w.c(), static_cast<int32_t>(compute), &b));
        return b;
    }
    /// Thin SVD; `u` and `vt` may be null.
    void svd(const Matrix& w, const Matrix* u, const Matrix& s, const Matrix* vt, DType compute = DType::F32) {
        check(osft_svd(h_, w.c(), detail::c(u), s.c(), detail::c(vt), static_cast<int32_t>(compute)));
    }
    /// SVDs of differently shaped matrices; `u` and `vt` may be empty (not wanted) or of the
    /// size of `w`.
    void svd_list(const std::vector<Matrix>& w, const std::vector<Matrix>& u, const std::vector<Matrix>& s,
                  const std::vector<Matrix>& vt, DType compute = DType::F32) {
        if (s.size() != w.size() || (!u.empty() && u.size() != w.size()) || (!vt.empty() && vt.size() != w.size())) {
            throw Error(OSFT_STATUS_INVALID_SHAPE, "svd_list: w, s (and u, vt when given) must have the same length");
        }
        auto arr = [](const std::vector<Matrix>& v) { return v.empty() ? nullptr : v.front().c(); };
        check(osft_svd_list(h_, w.size(), arr(w), arr(u), arr(s), arr(vt), static_cast<int32_t>(compute)));
    }
    size_t decompose_workspace_size(const Matrix& w, DType compute = DType::F32) const {
        size_t b = 0;
        check(osft_decompose_workspace_size(h_, w.c(), static_cast<int32_t>(compute), &b));
        return b;
    }
    /// Decompose `w` and split at rank `k` into the parts given.
    void decompose(const Matrix& w, int64_t k, const DecomposeParts& p, DType compute = DType::F32) {
        check(osft_decompose(h_, w.c(), k, detail::c(p.u_high), detail::c(p.s_high), detail::c(p.v_high), detail::c(p.u_low),
                             detail::c(p.s_low), detail::c(p.v_low), static_cast<int32_t>(compute)));
    }

    // --- Rank selection and vectors ----------------------------------------------------------

    /// A vector (per batch entry) read to the host as doubles, concatenated.
    std::vector<double> read_vector(const Matrix& v) const {
        std::vector<double> out(detail::as_size(v.rows()) * detail::as_size(v.cols()) * detail::as_size(v.batch()));
        check(osft_read_vector(h_, v.c(), out.data(), out.size()));
        return out;
    }
    std::vector<double> layer_importance(const Matrix& w, const Matrix& activations, DType compute = DType::F32) const {
        std::vector<double> out(detail::as_size(std::max(w.batch(), activations.batch())));
        check(osft_layer_importance(h_, w.c(), activations.c(), static_cast<int32_t>(compute), out.data(), out.size()));
        return out;
    }

    // --- Reconstruction ------------------------------------------------------------------------

    /// `out = high + low`; either may be null.
    void reconstruct(const Factors* high, const Factors* low, const Matrix& out, DType compute = DType::F32) {
        check(osft_reconstruct(h_, high ? high->u.c() : nullptr, high ? high->s.c() : nullptr, high ? high->v.c() : nullptr,
                               low ? low->u.c() : nullptr, low ? low->s.c() : nullptr, low ? low->v.c() : nullptr, out.c(),
                               static_cast<int32_t>(compute)));
    }

    // --- Projection ----------------------------------------------------------------------------

    size_t project_workspace_size(Side side, const Matrix* u_high, const Matrix* v_high, const Matrix& x,
                                  const Matrix* out = nullptr) const {
        size_t b = 0;
        check(osft_project_workspace_size(h_, static_cast<int32_t>(side), detail::c(u_high), detail::c(v_high), x.c(),
                                          detail::c(out), &b));
        return b;
    }
    /// Project `x` away from the frozen bases, in place (or into `out`).
    void project(Side side, const Matrix* u_high, const Matrix* v_high, const Matrix& x, const Matrix* out = nullptr) {
        check(osft_project(h_, static_cast<int32_t>(side), detail::c(u_high), detail::c(v_high), x.c(), detail::c(out)));
    }
    /// Sharded projection: phase 1 (partial coefficients into `coef`).
    void project_partial(Side side, const Matrix& basis, const Matrix& x, const Matrix& coef) {
        check(osft_project_partial(h_, static_cast<int32_t>(side), basis.c(), x.c(), coef.c()));
    }
    /// Sharded projection: phase 2 (after the caller's all-reduce of `coef`).
    void project_apply(Side side, const Matrix& basis, const Matrix& coef, const Matrix& x) {
        check(osft_project_apply(h_, static_cast<int32_t>(side), basis.c(), coef.c(), x.c()));
    }
    Projector projector(Side side, const Matrix* u_high, const Matrix* v_high, Strategy strategy = Strategy::Auto) {
        osft_projector* p = nullptr;
        check(osft_projector_create(h_, static_cast<int32_t>(side), detail::c(u_high), detail::c(v_high),
                                    static_cast<int32_t>(strategy), &p));
        return Projector(p);
    }

    // --- Diagnostics (per batch entry) ---------------------------------------------------------

    std::vector<double> leakage(Side side, const Matrix& basis, const Matrix& x) const {
        std::vector<double> out(detail::as_size(x.batch()));
        check(osft_leakage(h_, static_cast<int32_t>(side), basis.c(), x.c(), out.data(), out.size()));
        return out;
    }
    /// `Side::Left`: columns of a U basis; `Side::Right`: rows of a V basis.
    std::vector<double> orthonormality_error(Side side, const Matrix& basis) const {
        std::vector<double> out(detail::as_size(basis.batch()));
        check(osft_orthonormality_error(h_, static_cast<int32_t>(side), basis.c(), out.data(), out.size()));
        return out;
    }
    std::vector<double> reconstruction_error(const Matrix& w, const Factors* high, const Factors* low,
                                             DType compute = DType::F32) const {
        std::vector<double> out(detail::as_size(w.batch()));
        check(osft_reconstruction_error(h_, w.c(), high ? high->u.c() : nullptr, high ? high->s.c() : nullptr,
                                        high ? high->v.c() : nullptr, low ? low->u.c() : nullptr, low ? low->s.c() : nullptr,
                                        low ? low->v.c() : nullptr, static_cast<int32_t>(compute), out.data(), out.size()));
        return out;
    }

private:
    osft_context* h_ = nullptr;
};

/// The rank `rule` selects for descending singular values `s`.
inline int64_t select_rank(RankRule rule, const std::vector<double>& s, double param = 0.0) {
    int64_t k = 0;
    check(osft_select_rank(s.data(), s.size(), static_cast<int32_t>(rule), param, &k));
    return k;
}

/// The seed's adaptive per-layer ranks (`osft_adaptive_ranks`): `k = clamp(round(CR), 1, d)`,
/// `CR = mrr + I_n (trr - mrr)`, `I_n = I / (mean(I) + 1e-8)`, `mrr = min_ratio d`, `trr = target_ratio d`.
inline std::vector<int64_t> adaptive_ranks(const std::vector<double>& importance, const std::vector<int64_t>& full_ranks,
                                           double min_ratio = 0.5, double target_ratio = 1.0) {
    if (importance.size() != full_ranks.size()) {
        throw Error(OSFT_STATUS_INVALID_ARGUMENT, "adaptive_ranks: importance and full_ranks differ in length");
    }
    std::vector<int64_t> k(importance.size());
    check(osft_adaptive_ranks(importance.data(), full_ranks.data(), k.size(), min_ratio, target_ratio, k.data()));
    return k;
}

}  // namespace osft

#endif  // OSFT_HPP

//! The argument structs of the executor primitives, each with the `check` of its routine's
//! preconditions that every executor calls first, and the shared checks of the grouped and
//! randomized SVD.

use super::*;

/// A column-major operand of a strided batch: element `(i, j)` of batch entry `b` is at
/// `addr + (b * stride + i + j * ld) * size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    pub addr: Addr,
    pub dtype: DType,
    pub ld: usize,
    pub stride: usize,
}

/// `C[b] = alpha * op(A[b]) * op(B[b]) + beta * C[b]` for `b < batch`
/// (`cublasGemmStridedBatchedEx`). `C` is `m x n`, `op(A)` is `m x k`, `op(B)` is `k x n`.
/// With `beta == 0`, `C` is not read (NaN in `C` does not propagate), as in cuBLAS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmArgs {
    pub transa: Op,
    pub transb: Op,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f64,
    pub a: Strided,
    pub b: Strided,
    pub beta: f64,
    pub c: Strided,
    pub batch: usize,
    pub compute: ComputeType,
}

impl GemmArgs {
    /// cuBLAS's rules for `cublasGemmStridedBatchedEx`: leading dimensions, the supported type
    /// combinations for each compute type, and (our addition) that the batch entries of `C` do
    /// not overlap each other.
    pub fn check(&self) -> Result<()> {
        const R: &str = "gemm_strided_batched";
        let (ar, _ac) = if self.transa == Op::N { (self.m, self.k) } else { (self.k, self.m) };
        let (br, _bc) = if self.transb == Op::N { (self.k, self.n) } else { (self.n, self.k) };
        need(R, self.batch >= 1, || "batch must be at least 1".into())?;
        need(R, self.a.ld >= ar.max(1), || format!("lda = {} < max(1, {ar})", self.a.ld))?;
        need(R, self.b.ld >= br.max(1), || format!("ldb = {} < max(1, {br})", self.b.ld))?;
        need(R, self.c.ld >= self.m.max(1), || format!("ldc = {} < max(1, {})", self.c.ld, self.m))?;
        need(
            R,
            self.batch == 1 || self.m == 0 || self.n == 0 || self.c.stride >= self.c.ld * (self.n - 1) + self.m,
            || format!("strideC = {} lets batch entries of C overlap", self.c.stride),
        )?;
        use DType::*;
        let ok = matches!(
            (self.compute, self.a.dtype, self.b.dtype, self.c.dtype),
            (ComputeType::F64, F64, F64, F64)
                | (ComputeType::F32 | ComputeType::F32FastTf32 | ComputeType::F32FastBf16, F32, F32, F32)
                | (ComputeType::F32, F16, F16, F16 | F32)
                | (ComputeType::F32, BF16, BF16, BF16 | F32)
        );
        need(R, ok, || {
            format!(
                "unsupported type combination A={} B={} C={} compute={:?}",
                self.a.dtype.name(),
                self.b.dtype.name(),
                self.c.dtype.name(),
                self.compute
            )
        })
    }
}

/// A strided 2-D matrix for the element-wise primitives (arbitrary strides, any dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided2d {
    pub addr: Addr,
    pub dtype: DType,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

/// `dst = alpha * src + beta * dst`, element-wise over a batch of `rows x cols` matrices with
/// arbitrary strides and a dtype conversion (computed in f64, then rounded once to nearest even into
/// `dst`'s type, by every executor, so the CPU and CUDA give the same bits). With `beta == 0`, `dst` is
/// not read; with `alpha == 0`, `src` is not read (so `alpha = beta = 0` writes zeros). This one primitive maps every layout onto column-major scratch and back, casts, and
/// subtracts. `src` and `dst` must not overlap unless they are the same matrix (in-place scale).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AxpbyArgs {
    pub rows: usize,
    pub cols: usize,
    pub batch: usize,
    pub alpha: f64,
    pub src: Strided2d,
    pub beta: f64,
    pub dst: Strided2d,
}

impl AxpbyArgs {
    /// The precondition every executor checks first: `src` and `dst` do not share memory unless
    /// they are the same matrix (an in-place scale). Any dtype pair is supported.
    pub fn check(&self) -> Result<()> {
        if self.rows == 0 || self.cols == 0 || self.batch == 0 || self.src == self.dst {
            return Ok(());
        }
        let as_desc = |m: &Strided2d| MatDesc {
            addr: m.addr,
            dtype: m.dtype,
            rows: self.rows,
            cols: self.cols,
            row_stride: m.row_stride,
            col_stride: m.col_stride,
            batch: self.batch,
            batch_stride: m.batch_stride,
            device: Device::Host, // only the byte span matters here
        };
        let (src, dst) = (as_desc(&self.src), as_desc(&self.dst));
        let overlap = src.overlaps(&dst);
        need("axpby", !overlap || self.alpha == 0.0, || "src and dst share memory but are not the same matrix".into())
    }
}

/// `C = A * diag(x)` (`Right`) or `C = diag(x) * A` (`Left`), batched (`cublas<t>dgmm` per
/// entry). All of `A`, `x`, `C` share one compute dtype (f32 or f64). `C` may be `A` (in place).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DgmmArgs {
    pub left: bool,
    pub m: usize,
    pub n: usize,
    pub a: Strided,
    pub x: Addr,
    pub incx: usize,
    pub stride_x: usize,
    pub c: Strided,
    pub batch: usize,
}

impl DgmmArgs {
    pub fn check(&self) -> Result<()> {
        const R: &str = "dgmm";
        need(R, self.a.dtype.is_compute() && self.a.dtype == self.c.dtype, || {
            "A and C must share an f32/f64 type".into()
        })?;
        need(R, self.a.ld >= self.m.max(1) && self.c.ld >= self.m.max(1), || {
            "lda and ldc must be >= max(1, m)".into()
        })?;
        need(R, self.incx >= 1, || "incx must be >= 1".into())
    }
}

/// Thin SVD of a strided batch of column-major `m x n` matrices with `m >= n`
/// (`cusolverDnXgesvd` with `jobu = jobvt = 'S'`, or the routine `algorithm` names):
/// `A = U diag(S) VT`, `U: m x n`, `S: n` descending, `VT: n x n`. `A` may be overwritten.
/// Non-convergence of entry `i` is `Error::NotConverged { problem: None, index: i }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GesvdArgs {
    pub m: usize,
    pub n: usize,
    pub a: Strided,
    pub s: Addr,
    pub stride_s: usize,
    pub u: Strided,
    pub vt: Strided,
    pub batch: usize,
    /// The routine; `Auto` is resolved with [`SvdAlgorithm::resolve`]. `Randomized` is refused
    /// (it is [`Executor::gesvdr_strided_batched`]).
    pub algorithm: SvdAlgorithm,
}

impl GesvdArgs {
    pub fn check(&self) -> Result<()> {
        let alg = self.algorithm.resolve(self.m, self.n);
        alg.check_problem(self.m, self.n, self.a.dtype)?;
        let r = alg.routine();
        need(r, self.u.dtype == self.a.dtype && self.vt.dtype == self.a.dtype, || {
            "A, U and VT must share an f32/f64 type".into()
        })?;
        need(r, self.a.ld >= self.m && self.u.ld >= self.m && self.vt.ld >= self.n, || {
            format!(
                "lda = {}, ldu = {}, ldvt = {} too small for {} x {}",
                self.a.ld, self.u.ld, self.vt.ld, self.m, self.n
            )
        })?;
        match alg {
            // gesvdjBatched has no stride arguments: the batch is packed.
            SvdAlgorithm::JacobiBatched => {
                need(r, self.a.ld == self.m && self.a.stride == self.m * self.n && self.stride_s == self.n, || {
                    format!("gesvdjBatched needs a packed batch (lda = m, strideA = m * n, strideS = n), got lda = {}, strideA = {}, strideS = {}", self.a.ld, self.a.stride, self.stride_s)
                })
            }
            // The workspace query is made for the packed layout, so the call must use it.
            SvdAlgorithm::ApproxBatched => need(
                r,
                self.a.ld == self.m
                    && self.a.stride == self.m * self.n
                    && self.u.ld == self.m
                    && self.u.stride == self.m * self.n
                    && self.stride_s == self.n
                    && self.batch <= i32::MAX as usize,
                || {
                    "gesvdaStridedBatched needs a packed batch (lda = ldu = m, strideA = strideU = m * n, strideS = n)"
                        .into()
                },
            ),
            _ => Ok(()),
        }
    }
}

/// One group of [`Executor::gesvd_grouped`]: a strided-batched thin SVD with its own slice of
/// device workspace (`work_bytes` at `work`, at least what `gesvd_buffer_size` reports for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GesvdCall {
    pub args: GesvdArgs,
    pub work: Addr,
    pub work_bytes: usize,
}

/// Check every group of a grouped SVD before anything runs: each routine's preconditions
/// ([`GesvdArgs::check`]), each workspace slice against `exec`'s `gesvd_buffer_size`, and that no
/// two groups' workspace slices overlap (the groups may run concurrently). A failure in group
/// `g` is reported as it is, with `problem {g}` prefixed to the message where it has one.
pub fn check_gesvd_calls(exec: &(impl Executor + ?Sized), calls: &[GesvdCall]) -> Result<()> {
    for (g, c) in calls.iter().enumerate() {
        c.args.check().map_err(|e| in_group(e, g))?;
        let a = &c.args;
        let needed = exec.gesvd_buffer_size(a.m, a.n, a.a.dtype, a.batch, a.algorithm).map_err(|e| in_group(e, g))?;
        if c.work_bytes < needed {
            return Err(Error::WorkspaceTooSmall { needed, given: c.work_bytes });
        }
    }
    let mut slices: Vec<(Addr, usize, usize)> =
        calls.iter().enumerate().filter(|(_, c)| c.work_bytes > 0).map(|(g, c)| (c.work, c.work_bytes, g)).collect();
    slices.sort_unstable();
    for p in slices.windows(2) {
        let ((a, la, ga), (b, _, gb)) = (p[0], p[1]);
        need("gesvd_grouped", a.checked_add(la).is_some_and(|end| end <= b), || {
            format!("the workspaces of groups {ga} and {gb} overlap")
        })?;
    }
    Ok(())
}

/// Tag an error of group `g` of a grouped call: `NotConverged` gets `problem: Some(g)`;
/// a precondition names the group.
pub fn in_group(e: Error, g: usize) -> Error {
    match e {
        Error::NotConverged { problem: None, index } => Error::NotConverged { problem: Some(g), index },
        Error::Precondition { routine, msg } => Error::Precondition { routine, msg: format!("group {g}: {msg}") },
        e => e,
    }
}

/// Randomized top-`k` SVD of a strided batch of column-major `m x n` matrices, `m >= n`
/// (`cusolverDnXgesvdr` with `jobu = jobv = 'S'`, oversampling `p`, `niters` power iterations,
/// one matrix at a time): `U: m x k`, `S` (the first `k` of `strideS >= n` entries are
/// written; cuSOLVER's `Srand` holds `min(m, n)`), `VT: k x n`. `A` is overwritten. `U` is
/// `m x k` but must have room for `min(m, n)` columns (`strideU >= ldu * n`; the first
/// matrix's trailing columns too), which cuSOLVER's `Urand` may use.
/// Preconditions: `1 <= k < n`, `k + p < n`. The CPU executor computes the exact SVD and keeps
/// the top `k` (so its result is exact, not randomized).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GesvdrArgs {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub p: usize,
    pub niters: usize,
    pub a: Strided,
    pub s: Addr,
    pub stride_s: usize,
    pub u: Strided,
    pub vt: Strided,
    pub batch: usize,
}

/// The preconditions of `cusolverDnXgesvdr` for an `m x n` problem (`m >= n` as everywhere here).
pub fn check_gesvdr_problem(m: usize, n: usize, k: usize, p: usize, dtype: DType) -> Result<()> {
    const R: &str = "cusolverDnXgesvdr";
    need(R, m >= n, || format!("{R} needs m >= n, got m = {m} n = {n}"))?;
    need(R, dtype.is_compute(), || format!("{R} computes in f32 or f64, not {}", dtype.name()))?;
    need(R, k >= 1, || "the randomized SVD needs k >= 1 (nothing frozen: use another algorithm)".into())?;
    // The cuSOLVER parameter table: "rank is less than min(m,n)", "(k+p) is less than min(m,n)".
    need(R, k < n, || {
        format!("{R} needs k < min(m, n), got k = {k}, min(m, n) = {n} (nothing trainable: use an exact algorithm)")
    })?;
    need(R, k.checked_add(p).is_some_and(|kp| kp < n), || {
        format!("{R} needs k + p < min(m, n), got k = {k}, p = {p}, min(m, n) = {n}")
    })
}

impl GesvdrArgs {
    pub fn check(&self) -> Result<()> {
        check_gesvdr_problem(self.m, self.n, self.k, self.p, self.a.dtype)?;
        const R: &str = "cusolverDnXgesvdr";
        need(R, self.u.dtype == self.a.dtype && self.vt.dtype == self.a.dtype, || {
            "A, U and VT must share an f32/f64 type".into()
        })?;
        need(R, self.a.ld >= self.m && self.u.ld >= self.m && self.vt.ld >= self.k && self.stride_s >= self.n, || {
            format!(
                "lda = {}, ldu = {}, ldvt = {}, strideS = {} too small for {} x {} top {}",
                self.a.ld, self.u.ld, self.vt.ld, self.stride_s, self.m, self.n, self.k
            )
        })?;
        // cuSOLVER's Urand is written for up to min(m, n) columns: U must have room for them.
        need(R, self.batch <= 1 || self.u.stride >= self.u.ld * self.n, || {
            format!(
                "strideU = {} < ldu * n = {}: U needs room for min(m, n) columns",
                self.u.stride,
                self.u.ld * self.n
            )
        })
    }
}

/// Convergence information of the last SVD an executor ran (CUDA only; the CPU's faer SVD has
/// none to report): the largest over the batch of what the routine returns.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SvdReport {
    /// The routine; `None` after a grouped SVD whose groups used different routines (the other
    /// fields are then the largest over the groups that report them).
    pub algorithm: Option<SvdAlgorithm>,
    /// `gesvdj`: `cusolverDnXgesvdjGetResidual`; `gesvdaStridedBatched`: `h_R_nrmF`.
    pub residual: Option<f64>,
    /// `gesvdj`: `cusolverDnXgesvdjGetSweeps`.
    pub sweeps: Option<i32>,
    /// `Xgesvdp`: `h_err_sigma`.
    pub err_sigma: Option<f64>,
}

/// Sign convention of a thin SVD: for each of `count` singular triplets, if the entry of largest
/// magnitude of the left vector (first such entry on ties) is negative, negate the left and the
/// right vector. Vectors are strided: element `e` of vector `v` of batch entry `b` is at
/// `addr + (b * batch_stride + v * vec_stride + e * elem_stride) * size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignFixArgs {
    pub count: usize,
    pub batch: usize,
    pub left: Vectors,
    pub right: Vectors,
}

impl SignFixArgs {
    /// The precondition every executor checks first: both sides in one f32/f64 type (the SVD's
    /// compute type; the CUDA kernels exist for those two).
    pub fn check(&self) -> Result<()> {
        need("svd_sign_fix", self.left.dtype == self.right.dtype && self.left.dtype.is_compute(), || {
            format!(
                "left and right vectors must share an f32/f64 type, got {} and {}",
                self.left.dtype.name(),
                self.right.dtype.name()
            )
        })
    }
}

/// The precondition of [`Executor::cosine_sum`] every executor checks first.
pub fn check_cosine(a: &Vectors, b: &Vectors) -> Result<()> {
    need("cosine_sum", a.len == b.len && a.dtype == b.dtype && a.dtype.is_compute(), || {
        "vectors must have one length and one f32/f64 type".into()
    })
}

/// The precondition of [`Executor::add_diagonal`] every executor checks first.
pub fn check_add_diagonal(n: usize, a: &Strided, batch: usize) -> Result<()> {
    need("add_diagonal", a.dtype.is_compute(), || format!("A must be f32 or f64, not {}", a.dtype.name()))?;
    need("add_diagonal", n == 0 || batch == 0 || a.ld >= n, || format!("lda = {} < n = {n}", a.ld))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vectors {
    pub addr: Addr,
    pub dtype: DType,
    pub len: usize,
    pub elem_stride: usize,
    pub vec_stride: usize,
    pub batch_stride: usize,
}

/// The randomized SVD's parameters of one routine call (`cusolverDnXgesvdr`'s `k`, `p`, `niters`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopK {
    pub k: usize,
    pub p: usize,
    pub niters: usize,
}

/// The problem of one SVD routine call: what its device workspace depends on
/// ([`Executor::svd_unit_workspace`]). `routine` is resolved (never `Auto`); `top` is given for
/// `Randomized` only. A batched routine (`JacobiBatched`, `ApproxBatched`) takes the whole
/// `batch` in one call; the others take one matrix per call (`batch` is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvdUnitShape {
    pub routine: SvdAlgorithm,
    pub m: usize,
    pub n: usize,
    pub dtype: DType,
    pub batch: usize,
    pub top: Option<TopK>,
}

impl SvdUnitShape {
    /// The routine's own preconditions for this problem (every executor's size query checks
    /// them first).
    pub fn check(&self) -> Result<()> {
        let r = self.routine.routine();
        need(r, self.routine != SvdAlgorithm::Auto, || "an SVD routine call needs a resolved algorithm".into())?;
        match (self.routine, self.top) {
            (SvdAlgorithm::Randomized, Some(t)) => check_gesvdr_problem(self.m, self.n, t.k, t.p, self.dtype)?,
            (SvdAlgorithm::Randomized, None) => {
                return Err(Error::precondition(r, "the randomized SVD's routine call needs k, p and niters"))
            }
            (_, Some(_)) => return Err(Error::precondition(r, "only the randomized SVD takes k, p and niters")),
            (a, None) => a.check_problem(self.m, self.n, self.dtype)?,
        }
        need(r, self.routine.is_batched_routine() || self.batch <= 1, || {
            format!("{r} takes one matrix per call, got a batch of {}", self.batch)
        })?;
        need(r, self.batch <= i32::MAX as usize, || format!("{r} takes a 32-bit batch count"))
    }
}

impl SvdAlgorithm {
    /// Whether the routine takes a whole packed batch in one call (`gesvdjBatched`,
    /// `gesvdaStridedBatched`) rather than one matrix per call.
    pub fn is_batched_routine(self) -> bool {
        matches!(self, SvdAlgorithm::JacobiBatched | SvdAlgorithm::ApproxBatched)
    }
}

/// One SVD routine call of a [`LaneSchedule`], with its operands as the cuSOLVER routine takes
/// them (column-major, `m >= n`):
///
/// | routine | `u` | `v` |
/// | --- | --- | --- |
/// | `Qr` (`Xgesvd`) | thin `U`, `m x n` | `VT`, `n x n` |
/// | `Jacobi`, `Polar` | thin `U`, `m x n` | `V`, `n x n` |
/// | `Randomized` (`Xgesvdr`) | `U`, `m x k` (room for `n` columns) | `V`, `n x n` |
/// | `JacobiBatched` | full `U`, `m x m`, packed | full `V`, `n x n`, packed |
/// | `ApproxBatched` | thin `U`, `m x n`, packed | `V`, `n x n`, packed |
///
/// `S` gets `n` values (`k` for `Randomized`), `info` one `i32` convergence flag per matrix
/// (0 converged, `> 0` not converged, `< 0` a parameter the routine rejected), `work` is this
/// call's device workspace. `A` may be overwritten. `diagnostics`: the routine also measures
/// what [`Executor::svd_diagnostics`] reads back (gesvda's residuals, gesvdp's `h_err_sigma`,
/// gesvdj's residual and sweeps); off, nothing but the flags is produced. `host_values`: host
/// memory for the values a routine writes to the host, one `f64` per matrix (gesvdp's
/// `h_err_sigma`, which it always writes; gesvda's `h_R_nrmF` with diagnostics), 0 where none;
/// it must stay valid until the diagnostics have been read ([`Executor::svd_diagnostics`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvdUnitArgs {
    pub routine: SvdAlgorithm,
    pub m: usize,
    pub n: usize,
    pub top: Option<TopK>,
    pub batch: usize,
    pub a: Strided,
    pub s: Addr,
    pub stride_s: usize,
    pub u: Strided,
    pub v: Strided,
    pub work: Addr,
    pub work_bytes: usize,
    pub info: Addr,
    pub diagnostics: bool,
    pub host_values: Addr,
}

impl SvdUnitArgs {
    pub fn shape(&self) -> SvdUnitShape {
        SvdUnitShape {
            routine: self.routine,
            m: self.m,
            n: self.n,
            dtype: self.a.dtype,
            batch: self.batch,
            top: self.top,
        }
    }

    /// The routine's preconditions on this call's operands (its workspace is checked against the
    /// executor by [`LaneSchedule::check`]).
    pub fn check(&self) -> Result<()> {
        self.shape().check()?;
        let (m, n, r) = (self.m, self.n, self.routine.routine());
        need(r, self.u.dtype == self.a.dtype && self.v.dtype == self.a.dtype, || {
            "A, U and V must share an f32/f64 type".into()
        })?;
        need(r, self.a.ld >= m && self.u.ld >= m && self.v.ld >= n, || {
            format!("lda = {}, ldu = {}, ldv = {} too small for {m} x {n}", self.a.ld, self.u.ld, self.v.ld)
        })?;
        let host =
            self.routine == SvdAlgorithm::Polar || (self.routine == SvdAlgorithm::ApproxBatched && self.diagnostics);
        need(r, !host || self.host_values != 0, || format!("{r} needs host memory for the values it reports"))?;
        let packed = |s: &Strided, rows: usize, cols: usize| s.ld == rows && s.stride == rows * cols;
        match self.routine {
            SvdAlgorithm::JacobiBatched => need(
                r,
                packed(&self.a, m, n) && packed(&self.u, m, m) && packed(&self.v, n, n) && self.stride_s == n,
                || "gesvdjBatched needs packed A (m x n), U (m x m), V (n x n) and S (n)".into(),
            ),
            SvdAlgorithm::ApproxBatched => need(
                r,
                packed(&self.a, m, n) && packed(&self.u, m, n) && packed(&self.v, n, n) && self.stride_s == n,
                || "gesvdaStridedBatched needs packed A, U (m x n), V (n x n) and S (n)".into(),
            ),
            _ => Ok(()),
        }
    }
}

/// An SVD's routine calls forked onto `lanes` lanes and joined back
/// ([`Executor::svd_lanes`]): `units[i] = (lane, call)`. Calls on one lane run in order; calls
/// on different lanes may run concurrently, so they never share a workspace slice. The lanes
/// start after everything issued before (fork) and everything issued after starts after all
/// of them (join).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneSchedule {
    pub lanes: usize,
    pub units: Vec<(usize, SvdUnitArgs)>,
}

impl LaneSchedule {
    /// The fork/join's own preconditions: `1 <= lanes <= max_lanes` (the executor's
    /// [`Executor::svd_max_lanes`]; 0 lanes for an empty schedule), every call on a lane below
    /// `lanes`.
    pub fn check_lanes(&self, max_lanes: usize) -> Result<()> {
        const R: &str = "svd_lanes";
        need(R, self.units.is_empty() || (1..=max_lanes).contains(&self.lanes), || {
            format!("this executor takes 1 to {max_lanes} lanes, got {}", self.lanes)
        })?;
        need(R, self.units.iter().all(|(l, _)| *l < self.lanes), || "a call is assigned beyond the lanes".into())
    }

    /// Every precondition, checked by every executor before anything runs: the lanes, each call's
    /// routine preconditions, each call's workspace against `exec`'s size query, and that calls
    /// on different lanes use different workspace slices (identical or disjoint; a slice shared
    /// across lanes would race).
    pub fn check(&self, exec: &(impl Executor + ?Sized)) -> Result<()> {
        self.check_lanes(exec.svd_max_lanes())?;
        for (_, u) in &self.units {
            u.check()?;
            let needed = exec.svd_unit_workspace(&u.shape())?;
            if u.work_bytes < needed {
                return Err(Error::WorkspaceTooSmall { needed, given: u.work_bytes });
            }
        }
        let mut slices: Vec<(Addr, usize, usize)> =
            self.units.iter().filter(|(_, u)| u.work_bytes > 0).map(|(l, u)| (u.work, u.work_bytes, *l)).collect();
        slices.sort_unstable();
        slices.dedup();
        for p in slices.windows(2) {
            let ((a, la, lane_a), (b, lb, lane_b)) = (p[0], p[1]);
            let disjoint = a.checked_add(la).is_some_and(|end| end <= b);
            need("svd_lanes", disjoint || (a == b && la == lb && lane_a == lane_b), || {
                format!("workspace slices of lanes {lane_a} and {lane_b} overlap")
            })?;
        }
        Ok(())
    }
}

/// What one routine call of a [`LaneSchedule`] measured, read back by
/// [`Executor::svd_diagnostics`] (all empty where the executor measures nothing, as on the CPU).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitDiagnostics {
    /// Host values per matrix: gesvda's `h_R_nrmF` (the Frobenius residual), gesvdp's
    /// `h_err_sigma`.
    pub values: Vec<f64>,
    /// gesvdj: the residual and sweeps of the last gesvdj call of this call's lane (cuSOLVER's
    /// `gesvdjInfo` holds the latest call's), reported on that lane's last gesvdj call only.
    pub jacobi: Option<(f64, i32)>,
}

/// How [`Executor::gesvd_scheduled`] runs its calls: `grouped` (errors name the group, as
/// [`Executor::gesvd_grouped`] reports them) and `diagnostics` (read back what the routines
/// measure beyond convergence, into [`Executor::last_svd_report`]; off by default because
/// gesvda's residual blocks the host per call on CUDA).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvdRunOptions {
    pub grouped: bool,
    pub diagnostics: bool,
}

//! An executor wrapper that records every primitive call before forwarding it.
//!
//! Tests use it to pin down the call sequence the algorithm layer issues — the same sequence the
//! CUDA executor receives — e.g. that a batched projection is two strided-batched GEMMs and not a
//! loop of small ones, which SVD routine `Auto` picks per shape, and each GEMM's compute type
//! (the context's math mode). An SVD is recorded as the call the ops layer makes (`Gesvd`,
//! `GesvdGrouped`, `Gesvdr`) followed by the plan `ops::svd::schedule` makes of it, run on the
//! recording itself so each step is recorded: the fork, each routine call on its lane, the join,
//! the copies and the read-backs.

use std::sync::Mutex;

use super::*;

/// One recorded primitive call.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Alloc(usize),
    ReadToHost(usize),
    WriteFromHost(usize),
    Gemm(GemmArgs),
    Axpby(AxpbyArgs),
    Dgmm(DgmmArgs),
    /// With the algorithm the ops layer chose (`Auto` already resolved per shape).
    Gesvd(GesvdArgs),
    Gesvdr(GesvdrArgs),
    /// One `gesvd_grouped` call: its groups (algorithm already resolved by the ops layer where
    /// `Auto` was asked for).
    GesvdGrouped(Vec<GesvdCall>),
    /// An SVD's lanes forked off the caller's stream ([`Executor::svd_lanes`] begins).
    Fork {
        lanes: usize,
    },
    /// One routine call of the schedule, on its lane.
    SvdUnit {
        lane: usize,
        args: SvdUnitArgs,
    },
    /// The lanes joined back ([`Executor::svd_lanes`] ends).
    Join {
        lanes: usize,
    },
    /// The routines' diagnostics read back (only when asked for), for a schedule of `units` calls.
    SvdDiagnostics {
        units: usize,
    },
    /// One `gemm_grouped` call: the groups, each recorded with its compute type.
    GemmGrouped(Vec<GemmArgs>),
    SignFix(SignFixArgs),
    SumSquares {
        rows: usize,
        cols: usize,
        batch: usize,
    },
    AddDiagonal {
        n: usize,
        batch: usize,
    },
    CountNonfinite {
        rows: usize,
        cols: usize,
        batch: usize,
    },
    CosineSum {
        count: usize,
    },
}

/// `inner` with every call recorded. It plans with `inner`'s lane count
/// ([`Executor::svd_max_lanes`]), so the SVD schedule it records is the one `inner` receives.
pub struct Recording<E> {
    pub inner: E,
    log: Mutex<Vec<Call>>,
}

impl<E: Executor> Recording<E> {
    pub fn new(inner: E) -> Self {
        Recording { inner, log: Mutex::new(Vec::new()) }
    }
    /// The calls recorded so far, and clear the log.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
    fn rec(&self, c: Call) {
        self.log.lock().unwrap().push(c);
    }
}

impl<E: Executor> Executor for Recording<E> {
    fn name(&self) -> String {
        format!("recording({})", self.inner.name())
    }
    fn device(&self) -> Device {
        self.inner.device()
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.rec(Call::Alloc(bytes));
        self.inner.alloc(bytes)
    }
    unsafe fn read_to_host(&self, src: Addr, dst: &mut [u8]) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::ReadToHost(dst.len()));
            self.inner.read_to_host(src, dst)
        }
    }
    unsafe fn write_from_host(&self, src: &[u8], dst: Addr) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::WriteFromHost(src.len()));
            self.inner.write_from_host(src, dst)
        }
    }
    fn is_capturing(&self) -> Result<bool> {
        self.inner.is_capturing()
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn set_stream(&self, stream: usize) -> Result<()> {
        self.inner.set_stream(stream)
    }
    fn stream(&self) -> usize {
        self.inner.stream()
    }
    unsafe fn gemm_strided_batched(&self, a: &GemmArgs) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::Gemm(*a));
            self.inner.gemm_strided_batched(a)
        }
    }
    unsafe fn axpby(&self, a: &AxpbyArgs) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::Axpby(*a));
            self.inner.axpby(a)
        }
    }
    unsafe fn dgmm(&self, a: &DgmmArgs) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::Dgmm(*a));
            self.inner.dgmm(a)
        }
    }
    fn svd_unit_workspace(&self, shape: &SvdUnitShape) -> Result<usize> {
        self.inner.svd_unit_workspace(shape)
    }
    fn svd_max_lanes(&self) -> usize {
        self.inner.svd_max_lanes()
    }
    unsafe fn svd_lanes(&self, schedule: &LaneSchedule) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::Fork { lanes: schedule.lanes });
            for (lane, args) in &schedule.units {
                self.rec(Call::SvdUnit { lane: *lane, args: *args });
            }
            self.rec(Call::Join { lanes: schedule.lanes });
            self.inner.svd_lanes(schedule)
        }
    }
    unsafe fn svd_diagnostics(&self, schedule: &LaneSchedule) -> Result<Vec<UnitDiagnostics>> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::SvdDiagnostics { units: schedule.units.len() });
            self.inner.svd_diagnostics(schedule)
        }
    }
    unsafe fn gesvd_scheduled(&self, calls: &[GesvdCall], options: SvdRunOptions) -> Result<()> {
        // SAFETY: the trait's contract; the plan runs on the recording, so its steps are recorded.
        unsafe {
            match calls {
                [c] if !options.grouped => self.rec(Call::Gesvd(c.args)),
                _ => self.rec(Call::GesvdGrouped(calls.to_vec())),
            }
            crate::ops::svd::schedule::gesvd(self, calls, options)
        }
    }
    unsafe fn gesvdr_strided_batched(&self, a: &GesvdrArgs, work: Addr, work_bytes: usize) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::Gesvdr(*a));
            crate::ops::svd::schedule::gesvdr(self, a, work, work_bytes)
        }
    }
    fn last_svd_report(&self) -> Option<SvdReport> {
        self.inner.last_svd_report()
    }
    fn set_svd_report(&self, report: Option<SvdReport>) {
        self.inner.set_svd_report(report)
    }
    unsafe fn gemm_grouped(&self, groups: &[GemmArgs]) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::GemmGrouped(groups.to_vec()));
            self.inner.gemm_grouped(groups)
        }
    }
    unsafe fn svd_sign_fix(&self, a: &SignFixArgs) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::SignFix(*a));
            self.inner.svd_sign_fix(a)
        }
    }
    unsafe fn sum_squares(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<f64>> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::SumSquares { rows, cols, batch });
            self.inner.sum_squares(rows, cols, batch, x)
        }
    }
    unsafe fn count_nonfinite(&self, rows: usize, cols: usize, batch: usize, x: &Strided2d) -> Result<Vec<u64>> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::CountNonfinite { rows, cols, batch });
            self.inner.count_nonfinite(rows, cols, batch, x)
        }
    }
    unsafe fn add_diagonal(&self, n: usize, a: &Strided, batch: usize, alpha: f64) -> Result<()> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::AddDiagonal { n, batch });
            self.inner.add_diagonal(n, a, batch, alpha)
        }
    }
    unsafe fn cosine_sum(&self, a: &Vectors, b: &Vectors, count: usize) -> Result<f64> {
        // SAFETY: the trait's contract, passed on unchanged to the wrapped executor.
        unsafe {
            self.rec(Call::CosineSum { count });
            self.inner.cosine_sum(a, b, count)
        }
    }
}

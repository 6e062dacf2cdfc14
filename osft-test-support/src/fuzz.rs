//! Structured fuzz harness over the osft C ABI (CPU backend), shared by the cargo-fuzz targets in
//! `fuzz/fuzz_targets/` (the fuzz crate depends on this one) and by the deterministic in-repo
//! fuzzer `tests/hardening_fuzz.rs`. It uses nothing but `osft`, std, and, for the in-repo
//! fuzzer's inputs only ([`random_input`]), the test generator.
//!
//! One input (any byte string) is read as a sequence of choices: the op's shapes, dtypes, layouts
//! (row-/column-major, padded, strided with gaps, batch-innermost), batch counts and broadcasts,
//! `k`, the compute type, a caller workspace or none, then optional *mutations* (a field set to
//! an interesting value such as 0, -1, 2^62, i64::MIN; a NULL or misaligned pointer; a pointer
//! into another operand; an unknown enum value; a short result array). An exhausted input reads
//! as zeros, which selects the first (valid, unmutated) option everywhere, so the empty input is a
//! valid call.
//!
//! Every operand lives in one arena, each in its own region between 64-byte guards; bytes between
//! the elements of strided layouts stay poisoned too. After the call the harness checks:
//! - no crash, no panic across the boundary, never `OSFT_STATUS_PRECONDITION` or `INTERNAL`,
//!   a message exactly when the status is not OK;
//! - on a rejected call, not one byte of the arena, of the result arrays, or of `*bytes` changed;
//! - on success, only the elements of the outputs changed (guards, gaps and inputs intact);
//! - an accepted call had no output sharing memory with an input or another output, except an
//!   identical descriptor where the library takes one (in-place projection; `W` of the SVD and
//!   decomposition) — see `fuzz/aliasing.rs`;
//! - an unmutated call (valid by construction) succeeds — or reports `NON_FINITE` when NaN/Inf
//!   was injected into a matrix to be factored, `WORKSPACE_TOO_SMALL` for a short caller workspace;
//! - results match float64 references computed here (loose tolerances: the point is layouts).
//!
//! Descriptors are only given memory they describe: a mutation that would make a descriptor
//! plausible (one the library could accept) but larger than what the harness can allocate is
//! undone, so every accepted call touches harness memory only — except where the library
//! itself is wrong, which is what this is for.
//!
//! The harness in modules, one job each:
//! - `input`: the input read as a stream of choices;
//! - `operands`: descriptors, the layouts generated for them, and mutations;
//! - `arena`: the operands' memory between guards, and views for reading results;
//! - `checks`: status, writes, workspace and result-array checks every call gets;
//! - `aliasing`: which accepted calls must have been refused for sharing memory;
//! - `reference`: the float64 references and their tolerances;
//! - `targets`: one driver per fuzz target (names in [`OPS`]).

#![allow(clippy::too_many_arguments, clippy::needless_range_loop, clippy::type_complexity)]
// `!(a <= b)` on purpose: NaN must fail the comparison.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use std::ptr::null_mut;

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::rng::{seeded, Draw, Rng};

mod aliasing;
mod arena;
mod checks;
mod input;
mod operands;
mod reference;
/// One driver per fuzz target: it draws the call from the input, makes it, and checks it.
mod targets {
    pub(super) mod decompose;
    pub(super) mod desc;
    pub(super) mod diagnostics;
    pub(super) mod project;
    pub(super) mod reconstruct;
    pub(super) mod svd;
    pub(super) mod two_phase;
}

pub use checks::stats;
pub use input::Src;
pub use targets::desc::model_statuses;

type R = Result<(), String>;

/// The fuzzed operations (fuzz target names).
pub const OPS: [&str; 7] = ["svd", "decompose", "project", "two_phase", "reconstruct", "diagnostics", "desc"];

/// Run one input against op `op` (an index into [`OPS`]); panics with a description of the call
/// on any violation.
pub fn run(op: usize, data: &[u8]) {
    let mut src = Src::new(data);
    let r = CTX.with(|c| {
        let ctx = c.0;
        let r = match op {
            0 => targets::svd::op_svd(&mut src, ctx),
            1 => targets::decompose::op_decompose(&mut src, ctx),
            2 => targets::project::op_project(&mut src, ctx),
            3 => targets::two_phase::op_two_phase(&mut src, ctx),
            4 => targets::reconstruct::op_reconstruct(&mut src, ctx),
            5 => targets::diagnostics::op_diagnostics(&mut src, ctx),
            _ => targets::desc::op_desc(&mut src, ctx),
        };
        // Never leave a caller workspace behind (its memory is gone); sometimes drop the cache.
        unsafe { osft_context_release_workspace(ctx) };
        r
    });
    if let Err(e) = r {
        panic!("osft fuzz violation in `{}`: {e}", OPS[op.min(OPS.len() - 1)]);
    }
}

struct CtxHandle(*mut osft_context);
impl Drop for CtxHandle {
    fn drop(&mut self) {
        unsafe { osft_context_destroy(self.0) }
    }
}
thread_local! {
    static CTX: CtxHandle = {
        let mut c = null_mut();
        let st = unsafe { osft_context_create(osft_backend::OSFT_BACKEND_CPU as i32, 0, &mut c) };
        assert_eq!(st, OSFT_STATUS_OK);
        CtxHandle(c)
    };
}

/// A pseudo-random input of up to `len` bytes (uniform length, uniform bytes) from the fixed
/// stream [`seeded`]`(seed)`, for the in-repo fuzzer.
pub fn random_input(seed: u64, len: usize) -> Vec<u8> {
    let mut g = seeded(seed);
    let n = g.random_range(0..=len);
    g.bytes(n)
}

//! # osft — the numerical core of orthogonal subspace fine-tuning
//!
//! Batched SVD of weight matrices, the split into a frozen high-rank part and a trainable
//! low-rank part, rank selection, reconstruction, and projection of gradients and updates away
//! from the frozen subspace — on caller-owned buffers in any layout and dtype.
//!
//! Architecture ("one algorithm, two executors"): the algorithms in [`ops`] are written once
//! against the [`exec::Executor`] trait, whose primitives follow cuBLAS/cuSOLVER semantics; the
//! CPU executor ([`exec::cpu`]) runs them on host memory, the CUDA executor (`exec::cuda`, feature
//! `cuda`) on the caller's stream. Each op is a plan ([`ops::Plan`]): a safe constructor checks
//! every descriptor and sizes the workspace, an `unsafe` run does the work. [`Context`] holds an
//! executor and its workspace, runs plans, and offers the safe API over typed views ([`MatRef`],
//! [`MatMut`]); [`Projector`] caches a projection's evaluation order; [`ffi`] is the C ABI.
//!
//! ```
//! use osft::{Context, DType, MatMut, MatRef, Side};
//! let ctx = Context::cpu();
//! let (n, m, k) = (6, 4, 2);
//! let w: Vec<f32> = (0..n * m).map(|i| ((i * 7 % 11) as f32) - 5.0).collect();
//! let (mut uh, mut ul) = (vec![0f32; n * k], vec![0f32; n * (m - k)]);
//! let mut out = osft::DecomposeOut::<f32> {
//!     u_high: Some(MatMut::row_major(&mut uh, n, k)?),
//!     u_low: Some(MatMut::row_major(&mut ul, n, m - k)?),
//!     ..Default::default()
//! };
//! ctx.decompose(&MatRef::row_major(&w, n, m)?, k, &mut out, DType::F32)?;
//! drop(out);
//! // Project a gradient of U_low away from U_high, in place.
//! let mut g: Vec<f32> = (0..n * (m - k)).map(|i| i as f32).collect();
//! let u_high = MatRef::row_major(&uh, n, k)?;
//! ctx.project(Side::Left, Some(&u_high), None, &mut MatMut::row_major(&mut g, n, m - k)?)?;
//! let leak = ctx.leakage(Side::Left, &u_high, &MatRef::row_major(&g, n, m - k)?)?;
//! assert!(leak[0] < 1e-5);
//! # Ok::<(), osft::Error>(())
//! ```

// Every unsafe operation sits in an explicit `unsafe {}` block with its `SAFETY:` reason, even
// inside an `unsafe fn`.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod context;
pub mod desc;
pub mod dtype;
pub mod error;
pub mod exec;
pub mod ffi;
pub mod ops;
pub mod projector;
pub mod view;

pub use context::{Context, DecomposeOut, FactorsRef};
pub use desc::{Device, MatDesc};
pub use dtype::{DType, Element};
pub use error::{Error, Result, Status};
pub use exec::{MathMode, SvdAlgorithm, SvdReport};
pub use half::{bf16, f16};
pub use ops::project::{Side, Strategy};
pub use ops::rank::{adaptive_ranks, select_rank, RankRule};
pub use projector::Projector;
pub use view::{MatMut, MatRef};

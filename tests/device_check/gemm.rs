//! The executors' `gemm_grouped` primitive, called directly: the grouped and the fallback path.

use osft::exec::{ComputeType, GemmArgs, Op, Strided};
use osft::{bf16, Context, DType, Device};
use osft_test_support::{randn, Buf, Layout, M};

use crate::device_buffer::Dev;
use crate::report::Report;

/// `gemm_grouped` straight on the executors: three f32 groups of different shapes (one
/// cublasGemmGroupedBatchedEx) and a bf16-in/f32-out set (the strided-batched fallback), against
/// the CPU executor.
pub(crate) fn grouped_gemm_case(gpu: &Context, cpu: &Context, rep: &mut Report) {
    for (name, tin) in [
        ("gemm_grouped f32 (cublasGemmGroupedBatchedEx)", DType::F32),
        ("gemm_grouped bf16->f32 (strided-batched fallback)", DType::BF16),
    ] {
        let shapes = [(7usize, 5usize, 3usize, 4usize), (33, 17, 9, 2), (64, 64, 64, 3)];
        let mut results = vec![];
        for ctx in [gpu, cpu] {
            // The same operands on both executors.
            let mut rng2: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(42);
            let mut keep = vec![];
            let mut groups = vec![];
            for &(m, n, k, b) in &shapes {
                let a: Vec<M> = (0..b).map(|_| randn(&mut rng2, m, k)).collect();
                let bb: Vec<M> = (0..b).map(|_| randn(&mut rng2, k, n)).collect();
                macro_rules! up {
                    ($t:ty, $ms:expr) => {{
                        let host = Buf::<$t>::from_batch($ms, Layout::ColMajor);
                        if ctx.executor().device() == Device::Host {
                            (host.desc.addr, host.desc.batch_stride, Box::new(host) as Box<dyn std::any::Any>)
                        } else {
                            let d = Dev::up(ctx, host);
                            (d.buf.addr, d.host.desc.batch_stride, Box::new(d) as Box<dyn std::any::Any>)
                        }
                    }};
                }
                let (pa, sa, ka) = if tin == DType::F32 { up!(f32, &a) } else { up!(bf16, &a) };
                let (pb, sb, kb) = if tin == DType::F32 { up!(f32, &bb) } else { up!(bf16, &bb) };
                let zeros: Vec<M> = (0..b).map(|_| M::zeros(m, n)).collect();
                let (pc, sc, kc) = up!(f32, &zeros);
                groups.push(GemmArgs {
                    transa: Op::N,
                    transb: Op::N,
                    m,
                    n,
                    k,
                    alpha: 1.0,
                    a: Strided { addr: pa, dtype: tin, ld: m, stride: sa },
                    b: Strided { addr: pb, dtype: tin, ld: k, stride: sb },
                    beta: 0.0,
                    c: Strided { addr: pc, dtype: DType::F32, ld: m, stride: sc },
                    batch: b,
                    compute: ComputeType::F32,
                });
                keep.push((ka, kb, kc, b));
            }
            if let Err(e) = unsafe { ctx.executor().gemm_grouped(&groups) } {
                rep.case(name, false, format!("error {e}"));
                return;
            }
            // Read back each group's C.
            let mut cs = vec![];
            for (_, _, kc, b) in keep {
                let c: Buf<f32> = match kc.downcast::<Dev<f32>>() {
                    Ok(d) => d.down(ctx),
                    Err(other) => *other.downcast::<Buf<f32>>().unwrap(),
                };
                cs.push((0..b).map(|i| c.get(i)).collect::<Vec<M>>());
            }
            results.push(cs);
        }
        let mut worst = 0.0f64;
        for (g, c) in results[0].iter().zip(&results[1]) {
            for (x, y) in g.iter().zip(c) {
                worst = worst.max(x.sub(y).fro() / y.fro().max(1e-30));
            }
        }
        let tol = 1e-5;
        rep.case(name, worst <= tol, format!("vs cpu {worst:.2e} (tol {tol:.0e})"));
    }
}

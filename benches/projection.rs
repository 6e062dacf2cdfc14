//! Projection throughput: left, right and both sides; one matrix and a strided batch; every
//! dtype; on every available executor. Throughput is reported in flops ("elements" = flops of
//! the coefficient form, `4 N M k` per side).
//!
//! `cargo bench --bench projection` (a minute or two on 2 cores; add a filter to run part).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use osft::ops::project::Bases;
use osft::{bf16, f16, Element, Side};

use common::{executors, random, Exec};

/// Project `batch` matrices `X: rows x cols` against `U_high: rows x k` and/or
/// `V_high: k x cols`, in place.
#[allow(clippy::too_many_arguments)]
fn bench_case<T: Element>(
    c: &mut Criterion,
    e: &Exec,
    group: &str,
    id: &str,
    side: Side,
    batch: usize,
    rows: usize,
    cols: usize,
    k: usize,
) {
    let dt = T::DTYPE.name();
    let x = random::<T>(e, batch, rows, cols, 1);
    let u = random::<T>(e, batch, rows, k, 2);
    let v = random::<T>(e, batch, k, cols, 3);
    let bases = Bases { u: Some(&u.desc), v: Some(&v.desc) };
    let mut flops = 0u64;
    if side.left() {
        flops += 4 * (rows * cols * k) as u64;
    }
    if side.right() {
        flops += 4 * (rows * cols * k) as u64;
    }
    let mut g = c.benchmark_group(format!("{group}/{}", e.name));
    g.throughput(Throughput::Elements(flops * batch as u64));
    g.bench_function(BenchmarkId::new(id, format!("{dt} {batch}x{rows}x{cols} k={k}")), |b| {
        b.iter(|| {
            // SAFETY: descriptors over live executor buffers of the described sizes.
            unsafe { e.ctx.project_raw(side, &bases, &x.desc, None) }.expect("projection");
            e.ctx.executor().synchronize().expect("sync");
        })
    });
    g.finish();
}

fn projection(c: &mut Criterion) {
    for e in executors() {
        // One 1024 x 1024 target at rank ratio 0.5: dU_low 1024 x 512 against U_high 1024 x 512,
        // dV_low 512 x 1024 against V_high 512 x 1024; and a dense 1024 x 1024 gradient projected
        // on both sides (constrained full fine-tuning).
        bench_case::<f32>(c, &e, "project", "left", Side::Left, 1, 1024, 512, 512);
        bench_case::<f32>(c, &e, "project", "right", Side::Right, 1, 512, 1024, 512);
        bench_case::<f32>(c, &e, "project", "both", Side::Both, 1, 1024, 1024, 512);
        // Batched: 32 layers of a small target (one strided-batched call per side).
        bench_case::<f32>(c, &e, "project_batched", "left", Side::Left, 32, 256, 128, 128);
        bench_case::<f32>(c, &e, "project_batched", "right", Side::Right, 32, 128, 256, 128);
        // Per dtype, left side.
        bench_case::<f64>(c, &e, "project_dtype", "left", Side::Left, 1, 1024, 512, 512);
        bench_case::<f16>(c, &e, "project_dtype", "left", Side::Left, 1, 1024, 512, 512);
        bench_case::<bf16>(c, &e, "project_dtype", "left", Side::Left, 1, 1024, 512, 512);
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = projection
}
criterion_main!(benches);

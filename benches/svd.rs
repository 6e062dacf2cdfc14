//! SVD throughput (thin `U, S, Vt`, f32 compute): one matrix, a batch of small ones, and large
//! ones; on every available executor. Throughput is reported in matrices per second.
//!
//! `cargo bench --bench svd` (a minute or two on 2 cores; add a filter to run part).

mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use osft::ops::svd::SvdOut;
use osft::DType;

use common::{executors, random, zeros, Exec};

fn bench_case(c: &mut Criterion, e: &Exec, group: &str, batch: usize, n: usize, m: usize) {
    let r = n.min(m);
    let w = random::<f32>(e, batch, n, m, 4);
    let u = zeros(e, DType::F32, batch, n, r);
    let s = zeros(e, DType::F32, batch, r, 1);
    let vt = zeros(e, DType::F32, batch, r, m);
    let out = SvdOut { u: Some(&u.desc), s: &s.desc, vt: Some(&vt.desc) };
    let mut g = c.benchmark_group(format!("{group}/{}", e.name));
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function(BenchmarkId::new("f32", format!("{batch}x{n}x{m}")), |b| {
        b.iter(|| {
            // SAFETY: descriptors over live executor buffers of the described sizes.
            unsafe { e.ctx.svd_raw(&w.desc, &out, DType::F32) }.expect("svd");
            e.ctx.executor().synchronize().expect("sync");
        })
    });
    g.finish();
}

fn svd(c: &mut Criterion) {
    for e in executors() {
        bench_case(c, &e, "svd", 1, 256, 256);
        bench_case(c, &e, "svd", 1, 512, 512);
        bench_case(c, &e, "svd_batched", 1000, 64, 64);
        bench_case(c, &e, "svd_batched", 64, 128, 128);
        bench_case(c, &e, "svd_large", 1, 1024, 1024);
        bench_case(c, &e, "svd_large", 1, 4096, 1024);
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = svd
}
criterion_main!(benches);

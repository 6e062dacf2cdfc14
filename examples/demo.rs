//! A small end-to-end run of the method on the CPU executor: decompose a weight matrix, then take
//! SGD steps on the trainable factors with projected gradients, printing the checks that matter
//! (leakage, orthonormality, reconstruction, the frozen part unchanged) and timings.
//!
//! `cargo run --release --example demo [-- N M]`

use std::time::Instant;

use osft::{Context, DType, DecomposeOut, FactorsRef, MatMut, MatRef, Side};

/// A small xorshift generator: the demo needs no dependency for its random numbers.
struct Rng(u64);
impl Rng {
    fn normal(&mut self) -> f32 {
        let mut u = || {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        };
        let (a, b) = (u().max(1e-300), u());
        ((-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()) as f32
    }
    fn fill(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

fn main() -> Result<(), osft::Error> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, m) = (args.first().copied().unwrap_or(1024), args.get(1).copied().unwrap_or(512));
    let r = n.min(m);
    let k = r / 2;
    let lo = r - k;
    let steps = 20;
    let ctx = Context::cpu();
    let mut rng = Rng(0x9E3779B97F4A7C15);
    println!(
        "osft demo: W {n} x {m} (f32), freeze k = {k} of R = {r}, {steps} projected SGD steps, executor {}",
        ctx.executor().name()
    );

    let w = rng.fill(n * m);
    let (mut uh, mut sh, mut vh) = (vec![0f32; n * k], vec![0f32; k], vec![0f32; k * m]);
    let (mut ul, mut sl, mut vl) = (vec![0f32; n * lo], vec![0f32; lo], vec![0f32; lo * m]);
    let t = Instant::now();
    ctx.decompose(
        &MatRef::row_major(&w, n, m)?,
        k,
        &mut DecomposeOut {
            u_high: Some(MatMut::row_major(&mut uh, n, k)?),
            s_high: Some(MatMut::col_major(&mut sh, k, 1)?),
            v_high: Some(MatMut::row_major(&mut vh, k, m)?),
            u_low: Some(MatMut::row_major(&mut ul, n, lo)?),
            s_low: Some(MatMut::col_major(&mut sl, lo, 1)?),
            v_low: Some(MatMut::row_major(&mut vl, lo, m)?),
        },
        DType::F32,
    )?;
    println!("decompose (SVD + split):        {:9.2} ms", t.elapsed().as_secs_f64() * 1e3);

    let (u_high, v_high) = (MatRef::row_major(&uh, n, k)?, MatRef::row_major(&vh, k, m)?);
    let recon = |ul: &[f32], vl: &[f32]| -> Result<f64, osft::Error> {
        let high = FactorsRef {
            u: MatRef::row_major(&uh, n, k)?,
            s: MatRef::col_major(&sh, k, 1)?,
            v: MatRef::row_major(&vh, k, m)?,
        };
        let low = FactorsRef {
            u: MatRef::row_major(ul, n, lo)?,
            s: MatRef::col_major(&sl, lo, 1)?,
            v: MatRef::row_major(vl, lo, m)?,
        };
        Ok(ctx.reconstruction_error(&MatRef::row_major(&w, n, m)?, Some(high), Some(low), DType::F32)?[0])
    };
    println!("reconstruction error ||W - USV||/||W||: {:.2e}", recon(&ul, &vl)?);
    println!("orthonormality error of U_high:         {:.2e}", ctx.orthonormality_error(&u_high, true)?[0]);
    println!("orthonormality error of V_high (rows):  {:.2e}", ctx.orthonormality_error(&v_high, false)?[0]);

    let frozen = (uh.clone(), sh.clone(), vh.clone());
    let (mut t_proj, mut flops) = (0.0, 0.0);
    for _ in 0..steps {
        let mut du = rng.fill(n * lo);
        let mut dv = rng.fill(lo * m);
        let t = Instant::now();
        ctx.project(Side::Left, Some(&u_high), None, &mut MatMut::row_major(&mut du, n, lo)?)?;
        ctx.project(Side::Right, None, Some(&v_high), &mut MatMut::row_major(&mut dv, lo, m)?)?;
        t_proj += t.elapsed().as_secs_f64();
        flops += 4.0 * (n * lo * k) as f64 + 4.0 * (lo * m * k) as f64;
        for (p, g) in ul.iter_mut().zip(&du) {
            *p -= 1e-3 * g;
        }
        for (p, g) in vl.iter_mut().zip(&dv) {
            *p -= 1e-3 * g;
        }
    }
    println!(
        "projection of dU_low and dV_low: {:9.2} ms per step, {:.1} GFLOP/s",
        t_proj / steps as f64 * 1e3,
        flops / t_proj / 1e9
    );
    let leak_u = ctx.leakage(Side::Left, &u_high, &MatRef::row_major(&ul, n, lo)?)?[0];
    let leak_v = ctx.leakage(Side::Right, &v_high, &MatRef::row_major(&vl, lo, m)?)?[0];
    println!(
        "after training: ||U_high^T U_low||/||U_low|| = {leak_u:.2e}, ||V_low V_high^T||/||V_low|| = {leak_v:.2e}"
    );
    println!("frozen part bit-for-bit unchanged: {}", frozen == (uh.clone(), sh.clone(), vh.clone()));
    println!(
        "reconstruction error of the trained factors vs the original W: {:.2e} (the trainable part moved)",
        recon(&ul, &vl)?
    );
    let ok = leak_u < 1e-4 && leak_v < 1e-4 && frozen == (uh, sh, vh);
    println!("{}", if ok { "checks passed" } else { "CHECKS FAILED" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

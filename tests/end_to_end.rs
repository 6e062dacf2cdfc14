//! The method end to end on the typed API: decompose a random W, then take SGD (and Adam-like)
//! steps on the trainable factors with projected gradients. Afterwards `U_high^T U_low` and
//! `V_low V_high^T` are still ~0, the frozen part is bit-for-bit unchanged, and the reconstruction
//! matches an f64 reference. A control run without projection shows the same check failing.

use osft::{Context, DType, DecomposeOut, FactorsRef, MatMut, MatRef, Side};
use osft_test_support::*;

struct Model {
    n: usize,
    m: usize,
    k: usize,
    lo: usize,
    uh: Vec<f32>,
    sh: Vec<f32>,
    vh: Vec<f32>,
    ul: Vec<f32>,
    sl: Vec<f32>,
    vl: Vec<f32>,
}

fn decompose(ctx: &Context, w: &[f32], n: usize, m: usize, k: usize) -> Model {
    let r = n.min(m);
    let lo = r - k;
    let mut md = Model {
        n,
        m,
        k,
        lo,
        uh: vec![0.0; n * k],
        sh: vec![0.0; k],
        vh: vec![0.0; k * m],
        ul: vec![0.0; n * lo],
        sl: vec![0.0; lo],
        vl: vec![0.0; lo * m],
    };
    let mut out = DecomposeOut::<f32> {
        u_high: Some(MatMut::row_major(&mut md.uh, n, k).unwrap()),
        s_high: Some(MatMut::col_major(&mut md.sh, k, 1).unwrap()),
        v_high: Some(MatMut::row_major(&mut md.vh, k, m).unwrap()),
        u_low: Some(MatMut::row_major(&mut md.ul, n, lo).unwrap()),
        s_low: Some(MatMut::col_major(&mut md.sl, lo, 1).unwrap()),
        v_low: Some(MatMut::row_major(&mut md.vl, lo, m).unwrap()),
    };
    ctx.decompose(&MatRef::row_major(w, n, m).unwrap(), k, &mut out, DType::F32).unwrap();
    md
}

fn to_m(v: &[f32], r: usize, c: usize) -> M {
    M { r, c, d: v.iter().map(|x| *x as f64).collect() }
}

/// Train for `steps`; `project` off gives the control run. `adam` rescales the projected gradient
/// element-wise (as Adam does) and then projects the update too.
fn train(ctx: &Context, md: &mut Model, steps: usize, project: bool, adam: bool, rng: &mut StdRng) {
    let (n, m, k, lo) = (md.n, md.m, md.k, md.lo);
    let lr = 0.01f32;
    for _ in 0..steps {
        let mut du: Vec<f32> = randn(rng, n, lo).d.iter().map(|x| *x as f32).collect();
        let mut dv: Vec<f32> = randn(rng, lo, m).d.iter().map(|x| *x as f32).collect();
        let uh = MatRef::row_major(&md.uh, n, k).unwrap();
        let vh = MatRef::row_major(&md.vh, k, m).unwrap();
        if project {
            ctx.project(Side::Left, Some(&uh), None, &mut MatMut::row_major(&mut du, n, lo).unwrap()).unwrap();
            ctx.project(Side::Right, None, Some(&vh), &mut MatMut::row_major(&mut dv, lo, m).unwrap()).unwrap();
        }
        if adam {
            // Element-wise rescaling re-introduces components in the frozen subspace ...
            for (i, g) in du.iter_mut().enumerate() {
                *g /= 0.1 + (i % 7) as f32 * 0.3;
            }
            for (i, g) in dv.iter_mut().enumerate() {
                *g /= 0.1 + (i % 5) as f32 * 0.4;
            }
            // ... so the update is projected as well.
            if project {
                ctx.project(Side::Left, Some(&uh), None, &mut MatMut::row_major(&mut du, n, lo).unwrap()).unwrap();
                ctx.project(Side::Right, None, Some(&vh), &mut MatMut::row_major(&mut dv, lo, m).unwrap()).unwrap();
            }
        }
        for (p, g) in md.ul.iter_mut().zip(&du) {
            *p -= lr * g;
        }
        for (p, g) in md.vl.iter_mut().zip(&dv) {
            *p -= lr * g;
        }
    }
}

fn cross_terms(md: &Model) -> (f64, f64) {
    let (uh, ul) = (to_m(&md.uh, md.n, md.k), to_m(&md.ul, md.n, md.lo));
    let (vh, vl) = (to_m(&md.vh, md.k, md.m), to_m(&md.vl, md.lo, md.m));
    (uh.t().mul(&ul).fro(), vl.mul(&vh.t()).fro())
}

#[test]
fn sgd_and_adam_with_projection_keep_the_frozen_subspace() {
    let ctx = Context::cpu();
    let mut rng = rng();
    for (n, m, k, adam) in [(48, 32, 12, false), (32, 48, 20, true), (40, 40, 0, false), (30, 20, 20, false)] {
        let w: Vec<f32> = randn(&mut rng, n, m).d.iter().map(|x| *x as f32).collect();
        let mut md = decompose(&ctx, &w, n, m, k);
        let frozen = (md.uh.clone(), md.sh.clone(), md.vh.clone());
        let (cu0, cv0) = cross_terms(&md);
        train(&ctx, &mut md, 60, true, adam, &mut rng);
        let (cu, cv) = cross_terms(&md);
        // Each projected step leaves O(u_f32 * |step|) behind; 60 steps of size ~lr * sqrt(n m).
        let t = 60.0 * 0.01 * ((n * m) as f64).sqrt() * 4.0 * 6e-8 * 10.0 + cu0.max(cv0) + 1e-6;
        assert!(
            cu <= t && cv <= t,
            "{n}x{m} k={k} adam={adam}: cross terms moved: U {cu0:e} -> {cu:e}, V {cv0:e} -> {cv:e} (tol {t:e})"
        );
        assert!(md.uh == frozen.0 && md.sh == frozen.1 && md.vh == frozen.2, "frozen part changed");
        // Reconstruction through osft matches the f64 reference of the updated factors.
        let r = n.min(m);
        let lo = r - k;
        let mut out = vec![0f32; n * m];
        let high = FactorsRef {
            u: MatRef::row_major(&md.uh, n, k).unwrap(),
            s: MatRef::col_major(&md.sh, k, 1).unwrap(),
            v: MatRef::row_major(&md.vh, k, m).unwrap(),
        };
        let low = FactorsRef {
            u: MatRef::row_major(&md.ul, n, lo).unwrap(),
            s: MatRef::col_major(&md.sl, lo, 1).unwrap(),
            v: MatRef::row_major(&md.vl, lo, m).unwrap(),
        };
        ctx.reconstruct(Some(high), Some(low), &mut MatMut::row_major(&mut out, n, m).unwrap(), DType::F32).unwrap();
        let want = to_m(&md.uh, n, k)
            .mul(&to_m(&md.vh, k, m).scale_rows(&to_m(&md.sh, k, 1).d))
            .add(&to_m(&md.ul, n, lo).mul(&to_m(&md.vl, lo, m).scale_rows(&to_m(&md.sl, lo, 1).d)));
        let e = to_m(&out, n, m).sub(&want).fro() / want.fro();
        assert!(e < 1e-5, "reconstruction after training: {e:e}");
        // And the diagnostics agree that nothing leaked.
        let leak = ctx
            .leakage(Side::Left, &MatRef::row_major(&md.uh, n, k).unwrap(), &MatRef::row_major(&md.ul, n, lo).unwrap())
            .unwrap()[0];
        assert!(leak < 1e-4, "leakage {leak:e}");
    }
}

#[test]
fn control_without_projection_leaks() {
    // The same training without projection drives U_low into span(U_high): the checks above
    // would fail, so they are not vacuous.
    let ctx = Context::cpu();
    let mut rng = rng();
    let (n, m, k) = (48, 32, 12);
    let w: Vec<f32> = randn(&mut rng, n, m).d.iter().map(|x| *x as f32).collect();
    let mut md = decompose(&ctx, &w, n, m, k);
    train(&ctx, &mut md, 60, false, false, &mut rng);
    let (cu, cv) = cross_terms(&md);
    assert!(cu > 1e-2 && cv > 1e-2, "unprojected training should leak: {cu:e} {cv:e}");
}

#[test]
fn retraction_projects_the_factor_itself() {
    // Perturb U_low into the frozen span, then project U_low itself: it is orthogonal again.
    let ctx = Context::cpu();
    let mut rng = rng();
    let (n, m, k) = (24, 16, 6);
    let w: Vec<f32> = randn(&mut rng, n, m).d.iter().map(|x| *x as f32).collect();
    let mut md = decompose(&ctx, &w, n, m, k);
    for i in 0..n {
        for j in 0..md.lo {
            md.ul[i * md.lo + j] += 0.1 * md.uh[i * k + j % k];
        }
    }
    assert!(cross_terms(&md).0 > 0.1);
    let uh = MatRef::row_major(&md.uh, n, k).unwrap();
    ctx.project(Side::Left, Some(&uh), None, &mut MatMut::row_major(&mut md.ul, n, md.lo).unwrap()).unwrap();
    assert!(cross_terms(&md).0 < 1e-5);
}

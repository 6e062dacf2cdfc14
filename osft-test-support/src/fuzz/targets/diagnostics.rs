//! Fuzz target `diagnostics`: leakage, orthonormality error, reconstruction error, layer
//! importance and vector read-back, each into a caller's result array.

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::fuzz::arena::*;
use crate::fuzz::checks::*;
use crate::fuzz::input::Src;
use crate::fuzz::operands::*;
use crate::fuzz::reference::*;
use crate::fuzz::R;

use super::reconstruct::{term_ptrs, terms};

pub(in crate::fuzz) fn op_diagnostics(src: &mut Src, ctx: *mut osft_context) -> R {
    match src.below(5) {
        0 => diag_leakage(src, ctx),
        1 => diag_ortho(src, ctx),
        2 => diag_recon_error(src, ctx),
        3 => diag_importance(src, ctx),
        _ => diag_read_vector(src, ctx),
    }
}

/// Shared tail of the diagnostics: a query, the call into a result array, the checks.
fn diag_call(
    src: &mut Src,
    ctx: *mut osft_context,
    p: &mut Problem,
    a: &mut Arena,
    need: usize,
    what: &str,
    q: impl FnOnce(*mut usize) -> osft_status,
    call: impl FnOnce(*mut f64, usize) -> osft_status,
) -> Result<Option<Vec<f64>>, String> {
    let mut res = Results::new(src, p, need);
    let outp = res.ptr(p, src);
    let what = format!("{what}{}", p.describe());
    let before = a.bytes().to_vec();
    let (st, qb) = query("workspace query", q)?;
    expect_ok(st, p, false, false, &format!("workspace query of {what}"))?;
    let (ws, short) = set_workspace(src, ctx, qb)?;
    let st = call(outp, res.len);
    check_call(st, &ws, p, short, false, &what)?;
    // Diagnostics write nothing but the result array.
    check_writes(&before, a, p, None, &what)?;
    if st != OSFT_STATUS_OK {
        res.check(0, &what)?;
        return Ok(None);
    }
    // A mutated batch count changes what may be written: never more than `out_len` entries.
    res.check(if p.mutated { res.len.max(need) } else { need }, &what)?;
    Ok(if p.mutated { None } else { Some(res.v[..need].to_vec()) })
}

fn diag_leakage(src: &mut Src, ctx: *mut osft_context) -> R {
    let left = src.chance(128);
    let (n, m, b) = small_shape(src);
    let k = src.below(5);
    let dt = any_dtype(src);
    let mut p = Problem::new();
    let lx = layout(src, n, m, b, dt, false);
    let x = p.add("X", Role::In, lx);
    let bb = if src.chance(128) { 1 } else { b };
    let (br, bc) = if left { (n, k) } else { (k, m) };
    let lb = layout(src, br, bc, bb, dt, false);
    let basis = p.add("basis", Role::In, lb);
    p.mutate(src, 48);
    let side = if left { 0 } else { 1 };
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let (bp, xp) = (ptrs.get(&p, Some(basis)), ptrs.get(&p, Some(x)));
    let need = b;
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        need,
        &format!("osft_leakage (side {side})"),
        |q| unsafe { osft_leakage_workspace_size(ctx, side, bp, xp, q) },
        |o, l| unsafe { osft_leakage(ctx, side, bp, xp, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        for e in 0..b {
            let xd = view(&bytes, &a, &p.descs[x]).dense(e);
            let bd = view(&bytes, &a, &p.descs[basis]).dense(e);
            let c = if left { matmul(&transpose(&bd, k), &xd, m) } else { matmul(&xd, &transpose(&bd, m), k) };
            let xn = frob(&xd);
            let want = if xn == 0.0 { 0.0 } else { frob(&c) / xn };
            nearly(
                vals[e],
                want,
                64.0 * eps(dt).max(eps(F32)) * (1.0 + frob(&bd)).powi(2),
                &format!("leakage batch {e}{}", p.describe()),
            )?;
        }
    }
    Ok(())
}

fn diag_ortho(src: &mut Src, ctx: *mut osft_context) -> R {
    let cols = src.chance(128);
    let (n, k, b) = (src.below(7) + 1, src.below(5), 1 + src.below(3));
    let dt = any_dtype(src);
    let mut p = Problem::new();
    let (r, c) = if cols { (n, k) } else { (k, n) };
    let lb = layout(src, r, c, b, dt, false);
    let basis = p.add("basis", Role::In, lb);
    p.mutate(src, 48);
    let side = p.mutate_arg(src, 8, "side", if cols { 0 } else { 1 }, &[2, -1]);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let bp = ptrs.get(&p, Some(basis));
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        b,
        &format!("osft_orthonormality_error (side {side})"),
        |q| unsafe { osft_orthonormality_error_workspace_size(ctx, side, bp, q) },
        |o, l| unsafe { osft_orthonormality_error(ctx, side, bp, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        for e in 0..b {
            let bd = view(&bytes, &a, &p.descs[basis]).dense(e);
            let bd = if cols { bd } else { transpose(&bd, n) }; // n x k
            let g = matmul(&transpose(&bd, k), &bd, k);
            let want = frob(&sub(&g, &identity(k)));
            nearly(
                vals[e],
                want,
                64.0 * eps(dt).max(eps(F32)) * (1.0 + frob(&bd).powi(2)),
                &format!("orthonormality batch {e}{}", p.describe()),
            )?;
        }
    }
    Ok(())
}

fn diag_recon_error(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, b) = small_shape(src);
    let compute = compute_type(src);
    let mut p = Problem::new();
    let wdt = any_dtype(src);
    let lw = layout(src, n, m, b, wdt, false);
    let w = p.add("W", Role::In, lw);
    let t = terms(src, &mut p, n, m, b);
    p.mutate(src, 48);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let tp = term_ptrs(&mut p, &ptrs, &t, src);
    let wp = ptrs.get(&p, Some(w));
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        b,
        &format!("osft_reconstruction_error (compute {compute})"),
        |q| unsafe {
            osft_reconstruction_error_workspace_size(ctx, wp, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], compute, q)
        },
        |o, l| unsafe { osft_reconstruction_error(ctx, wp, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], compute, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        for e in 0..b {
            let (rec, scale) = reference_sum(&p, &a, &bytes, &t, e, n, m);
            let wd = view(&bytes, &a, &p.descs[w]).dense(e);
            let wn = frob(&wd);
            let d = frob(&sub(&wd, &rec));
            let want = if wn == 0.0 { d } else { d / wn };
            let tol = 64.0 * eps(compute) * (1.0 + (scale + wn) / if wn == 0.0 { 1.0 } else { wn });
            nearly(vals[e], want, tol, &format!("reconstruction error batch {e}{}", p.describe()))?;
        }
    }
    Ok(())
}

fn diag_importance(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, s) = (1 + src.below(6), 1 + src.below(6), 1 + src.below(5));
    let b = 1 + src.below(3);
    let (bw, bx) = match src.below(3) {
        0 => (b, b),
        1 => (1, b),
        _ => (b, 1),
    };
    let compute = compute_type(src);
    let mut p = Problem::new();
    let (dw, dx) = (any_dtype(src), any_dtype(src));
    let lw = layout(src, n, m, bw, dw, false);
    let w = p.add("W", Role::In, lw);
    let lx = layout(src, s, m, bx, dx, false);
    let x = p.add("activations", Role::In, lx);
    p.mutate(src, 48);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let (wp, xp) = (ptrs.get(&p, Some(w)), ptrs.get(&p, Some(x)));
    let need = bw.max(bx);
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        need,
        &format!("osft_layer_importance (compute {compute})"),
        |q| unsafe { osft_layer_importance_workspace_size(ctx, wp, xp, compute, q) },
        |o, l| unsafe { osft_layer_importance(ctx, wp, xp, compute, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        let rr = n.min(m);
        for e in 0..need {
            let wd = view(&bytes, &a, &p.descs[w]).dense(e);
            let xd = view(&bytes, &a, &p.descs[x]).dense(e);
            let mut sum = 0.0;
            let mut degenerate = false;
            for row in &xd {
                let y: Vec<f64> = (0..rr).map(|i| (0..m).map(|j| wd[i][j] * row[j]).sum()).collect();
                let dot: f64 = (0..rr).map(|i| row[i] * y[i]).sum();
                let (na, nb) =
                    ((0..rr).map(|i| row[i] * row[i]).sum::<f64>().sqrt(), y.iter().map(|v| v * v).sum::<f64>().sqrt());
                if na * nb < 1e-3 {
                    degenerate = true; // cos of a (near-)zero vector: convention-dependent
                }
                sum += if na * nb == 0.0 { 0.0 } else { dot / (na * nb) };
            }
            if degenerate {
                continue;
            }
            let want = sum / s as f64;
            nearly(vals[e], want, 1e-3, &format!("layer importance batch {e}{}", p.describe()))?;
        }
    }
    Ok(())
}

fn diag_read_vector(src: &mut Src, ctx: *mut osft_context) -> R {
    let (len, b) = (src.below(8), 1 + src.below(3));
    let dt = any_dtype(src);
    let mut p = Problem::new();
    let lv = vector(src, len, b, dt);
    let v = p.add("vector", Role::In, lv);
    p.mutate(src, 48);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let vp = ptrs.get(&p, Some(v));
    let r = diag_call(
        src,
        ctx,
        &mut p,
        &mut a,
        len * b,
        "osft_read_vector",
        |q| unsafe { osft_read_vector_workspace_size(ctx, vp, q) },
        |o, l| unsafe { osft_read_vector(ctx, vp, o, l) },
    )?;
    if let Some(vals) = r {
        let bytes = a.bytes().to_vec();
        let vv = view(&bytes, &a, &p.descs[v]);
        for e in 0..b {
            for t in 0..len {
                let want = vv.v(e, t);
                if vals[e * len + t] != want {
                    return Err(format!(
                        "read_vector[{e}][{t}] = {} but the element is {want}{}",
                        vals[e * len + t],
                        p.describe()
                    ));
                }
            }
        }
    }
    Ok(())
}

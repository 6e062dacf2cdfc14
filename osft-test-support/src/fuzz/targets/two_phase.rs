//! Fuzz target `two_phase`: the sharded projection, partial coefficients then apply.

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::fuzz::aliasing::Access;
use crate::fuzz::arena::*;
use crate::fuzz::checks::*;
use crate::fuzz::input::Src;
use crate::fuzz::operands::*;
use crate::fuzz::reference::*;
use crate::fuzz::R;

/// Two-phase sharded projection: partial coefficients, then apply.
pub(in crate::fuzz) fn op_two_phase(src: &mut Src, ctx: *mut osft_context) -> R {
    let left = src.below(2) == 0;
    let (rows, cols, b) = small_shape(src);
    let k = src.below(5);
    let dt = any_dtype(src);
    let cdt = if (dt == F16 || dt == BF16) && src.chance(160) { F32 } else { dt };
    let mut p = Problem::new();
    let lx = layout(src, rows, cols, b, dt, true);
    let x = p.add("X", Role::InOut, lx);
    let bb = if src.chance(128) { 1 } else { b };
    let (br, bc) = if left { (rows, k) } else { (k, cols) };
    let lb = layout(src, br, bc, bb, dt, true);
    let basis = p.add("basis", Role::In, lb);
    let (cr, cc) = if left { (k, cols) } else { (rows, k) };
    let lc = layout(src, cr, cc, b, cdt, true);
    let coef = p.add("coef", Role::Out, lc);
    p.mutate(src, 48);
    let side_arg = p.mutate_arg(src, 8, "side", if left { 0 } else { 1 }, &[2, 3, -1]);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let (xp, bp, cp) = (ptrs.get(&p, Some(x)), ptrs.get(&p, Some(basis)), ptrs.get(&p, Some(coef)));
    let g = |i| {
        if i == x {
            xp
        } else if i == basis {
            bp
        } else {
            cp
        }
    };
    // Phase 1: coef is written, X and basis are inputs.
    p.descs[x].role = Role::In;
    let before = a.bytes().to_vec();
    let st = unsafe { osft_project_partial(ctx, side_arg, g(basis), g(x), g(coef)) };
    let what = format!("osft_project_partial (side {side_arg}){}", p.describe());
    check_call(st, &None, &p, false, false, &what)?;
    check_outcome(&Access::new(&[coef], &[x, basis]), st, false, &before, &a, &p, &what)?;
    if st == OSFT_STATUS_OK && !p.mutated {
        let after = a.bytes().to_vec();
        for e in 0..b {
            let xd = view(&before, &a, &p.descs[x]).dense(e);
            let bd = view(&before, &a, &p.descs[basis]).dense(e);
            let want = if left { matmul(&transpose(&bd, k), &xd, cols) } else { matmul(&xd, &transpose(&bd, cols), k) };
            let got = view(&after, &a, &p.descs[coef]).dense(e);
            let scale = frob(&xd) * frob(&bd);
            let tol = 16.0 * (1.0 + rows.max(cols) as f64) * eps(dt).max(eps(cdt));
            close(&got, &want, scale, tol, &format!("{what}: batch {e}"))?;
        }
    }
    // Phase 2: X -= basis coef (left) or coef basis (right), with whatever coef now holds.
    p.descs[x].role = Role::InOut;
    p.descs[coef].role = Role::In;
    let before = a.bytes().to_vec();
    let (st, q) = query("osft_project_apply_workspace_size", |bp| unsafe {
        osft_project_apply_workspace_size(ctx, g(coef), g(x), bp)
    })?;
    let what = format!("osft_project_apply (side {side_arg}){}", p.describe());
    expect_ok(st, &p, false, false, &format!("apply workspace query: {what}"))?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let st = unsafe { osft_project_apply(ctx, side_arg, g(basis), g(coef), g(x)) };
    check_call(st, &ws, &p, short, false, &what)?;
    check_outcome(&Access::new(&[x], &[basis, coef]), st, false, &before, &a, &p, &what)?;
    if st != OSFT_STATUS_OK || p.mutated {
        return Ok(());
    }
    let after = a.bytes().to_vec();
    for e in 0..b {
        let xd = view(&before, &a, &p.descs[x]).dense(e);
        let bd = view(&before, &a, &p.descs[basis]).dense(e);
        let cd = view(&before, &a, &p.descs[coef]).dense(e);
        // The coefficients are rounded to X's dtype before use.
        let cd: M = cd.iter().map(|r| r.iter().map(|v| round_to(*v, dt)).collect()).collect();
        let want = if left { sub(&xd, &matmul(&bd, &cd, cols)) } else { sub(&xd, &matmul(&cd, &bd, cols)) };
        let got = view(&after, &a, &p.descs[x]).dense(e);
        let scale = frob(&xd) + frob(&bd) * frob(&cd);
        close(&got, &want, scale, 16.0 * (1.0 + k as f64) * eps(dt), &format!("{what}: batch {e}"))?;
    }
    Ok(())
}

//! Fuzz target `project`: `osft_project` or a projector, left / right / both, in or out of place.

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::fuzz::aliasing::Access;
use crate::fuzz::arena::*;
use crate::fuzz::checks::*;
use crate::fuzz::input::Src;
use crate::fuzz::operands::*;
use crate::fuzz::reference::*;
use crate::fuzz::R;

/// Projection through `osft_project` or a projector, left / right / both, in or out of place.
pub(in crate::fuzz) fn op_project(src: &mut Src, ctx: *mut osft_context) -> R {
    let side = src.below(3) as i32;
    let use_projector = src.chance(80);
    let strategy = if use_projector { src.below(3) as i32 } else { 0 };
    let cached = strategy == 2;
    let dim = |src: &mut Src| if src.chance(16) { 0 } else { 1 + src.below(7) };
    let (n, m) = (dim(src), dim(src));
    let b = 1 + src.below(3);
    let dt = if cached { compute_type(src) } else { any_dtype(src) };
    let mut p = Problem::new();
    let lx = layout(src, n, m, b, dt, false);
    let x = p.add("X", Role::InOut, lx);
    let left = side != 1;
    let right = side != 0;
    let basis =
        |p: &mut Problem, src: &mut Src, name: &'static str, want: bool, rows: usize, cols: usize| -> Option<usize> {
            if !want && !src.chance(32) {
                return None; // an unused basis is sometimes passed anyway (it is ignored)
            }
            let bb = if cached || src.chance(128) { 1 } else { b };
            let l = layout(src, rows, cols, bb, dt, cached);
            Some(p.add(name, Role::In, l))
        };
    let ku = src.below(n + 1);
    let kv = src.below(m + 1);
    let u = basis(&mut p, src, "U_high", left, n, ku);
    let v = basis(&mut p, src, "V_high", right, kv, m);
    let out = if src.chance(128) {
        let l = layout(src, n, m, b, dt, false);
        Some(p.add("out", Role::Out, l))
    } else {
        None
    };
    if out.is_some() {
        p.descs[x].role = Role::In;
    }
    p.mutate(src, 48);
    let side_arg = p.mutate_arg(src, 8, "side", side, &[3, -1, i32::MAX]);
    let strategy_arg = if use_projector { p.mutate_arg(src, 8, "strategy", strategy, &[3, -1]) } else { strategy };
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let before = a.bytes().to_vec();
    let g = |i| ptrs.get(&p, i);
    // In place when `out` is absent (or was made a NULL descriptor by a mutation).
    let target = out.filter(|o| !p.descs[*o].absent).unwrap_or(x);
    let mut what = format!(
        "{} (side {side_arg}{}){}",
        if use_projector { "osft_projector_create/apply" } else { "osft_project" },
        if use_projector { format!(", strategy {strategy_arg}") } else { String::new() },
        p.describe()
    );
    let (st, short, ws) = if use_projector {
        let sentinel = 0x1234usize as *mut osft_projector;
        let mut h = sentinel;
        let st = unsafe { osft_projector_create(ctx, side_arg, g(u), g(v), strategy_arg, &mut h) };
        check_status(st, &what)?;
        if st != OSFT_STATUS_OK {
            if h != sentinel {
                return Err(format!("{what}: rejected projector_create wrote *out"));
            }
            expect_ok(st, &p, false, false, &what)?;
            return check_writes(&before, &a, &p, None, &what);
        }
        let (mut l, mut r) = (-7, -7);
        unsafe { osft_projector_strategies(h, &mut l, &mut r) };
        what += &format!("\n    strategies: left {l}, right {r}");
        // No workspace query for projectors: a caller workspace is not tried here.
        let st = unsafe { osft_projector_apply(h, g(Some(x)), g(out)) };
        unsafe { osft_projector_destroy(h) };
        (st, false, None)
    } else {
        let (st, q) = query("osft_project_workspace_size", |bp| unsafe {
            osft_project_workspace_size(ctx, side_arg, g(u), g(v), g(Some(x)), g(out), bp)
        })?;
        expect_ok(st, &p, false, false, &format!("project workspace query{what}"))?;
        let (ws, short) = set_workspace(src, ctx, q)?;
        let st = unsafe { osft_project(ctx, side_arg, g(u), g(v), g(Some(x)), g(out)) };
        (st, short, ws)
    };
    check_call(st, &ws, &p, short, false, &what)?;
    // The bases the side reads (all of them for an unknown side, which is refused anyway), and X
    // when the result goes elsewhere: `out` may be X's identical descriptor (in place), nothing
    // else may share memory with what is written.
    let mut ins: Vec<usize> =
        [if side_arg != 1 { u } else { None }, if side_arg != 0 { v } else { None }].into_iter().flatten().collect();
    if target != x {
        ins.push(x);
    }
    let access = Access::new(&[target], &ins).same_ok(target, x);
    check_outcome(&access, st, false, &before, &a, &p, &what)?;
    if st != OSFT_STATUS_OK || p.mutated {
        return Ok(());
    }
    // Reference: (I - U U^T) X (I - V^T V), per batch entry.
    let after = a.bytes().to_vec();
    let xv = view(&before, &a, &p.descs[x]);
    let ov = view(&after, &a, &p.descs[target]);
    for e in 0..b {
        let xd = xv.dense(e);
        let mut want = xd.clone();
        let mut scale = frob(&xd);
        if left {
            let ud = view(&before, &a, &p.descs[u.unwrap()]).dense(e);
            let coef = matmul(&transpose(&ud, ku), &want, m);
            want = sub(&want, &matmul(&ud, &coef, m));
            scale *= 1.0 + frob(&ud).powi(2);
        }
        if right {
            let vd = view(&before, &a, &p.descs[v.unwrap()]).dense(e);
            let coef = matmul(&want, &transpose(&vd, m), kv);
            want = sub(&want, &matmul(&coef, &vd, m));
            scale *= 1.0 + frob(&vd).powi(2);
        }
        let tol = 16.0 * (1.0 + n.max(m) as f64) * eps(dt).max(eps(F32).min(eps(dt)));
        close(&ov.dense(e), &want, scale, tol, &format!("{what}: batch {e}"))?;
    }
    Ok(())
}

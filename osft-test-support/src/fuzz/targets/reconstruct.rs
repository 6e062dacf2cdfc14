//! Fuzz target `reconstruct`: `osft_reconstruct` from one or two terms `U diag(S) V`.

use std::ptr::null;

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::fuzz::aliasing::Access;
use crate::fuzz::arena::*;
use crate::fuzz::checks::*;
use crate::fuzz::input::Src;
use crate::fuzz::operands::*;
use crate::fuzz::reference::*;
use crate::fuzz::R;

/// One or two terms `U diag(S) V` for reconstruction (and the reconstruction error).
pub(super) fn terms(src: &mut Src, p: &mut Problem, n: usize, m: usize, b: usize) -> Vec<(usize, usize, usize)> {
    let mut t = vec![];
    let hi = src.chance(220);
    let lo = !hi || src.chance(128);
    for (present, names) in [(hi, ["U_high", "S_high", "V_high"]), (lo, ["U_low", "S_low", "V_low"])] {
        if !present {
            continue;
        }
        let r = src.below(4);
        let tb = if src.chance(128) { 1 } else { b };
        let dt = any_dtype(src);
        let lu = layout(src, n, r, tb, dt, false);
        let u = p.add(names[0], Role::In, lu);
        let dt2 = if src.chance(192) { dt } else { any_dtype(src) };
        let ls = vector(src, r, tb, dt2);
        let s = p.add(names[1], Role::In, ls);
        let lv = layout(src, r, m, tb, dt, false);
        let v = p.add(names[2], Role::In, lv);
        t.push((u, s, v));
    }
    t
}

/// The six term pointers of the C call (`U_high, S_high, V_high, U_low, S_low, V_low`), NULL
/// for an absent term; sometimes one flipped, which makes a partial triple.
pub(super) fn term_ptrs(
    p: &mut Problem,
    ptrs: &Ptrs,
    t: &[(usize, usize, usize)],
    src: &mut Src,
) -> [*const osft_matrix; 6] {
    let mut out = [null(); 6];
    for (u, s, v) in t {
        let base = if p.descs[*u].name == "U_high" { 0 } else { 3 };
        out[base] = ptrs.get(p, Some(*u));
        out[base + 1] = ptrs.get(p, Some(*s));
        out[base + 2] = ptrs.get(p, Some(*v));
    }
    if src.chance(8) {
        // A partial triple.
        let i = src.below(6);
        p.note(format!("term pointer {i} flipped"));
        out[i] = if out[i].is_null() { ptrs.get(p, Some(0)) } else { null() };
    }
    out
}

pub(in crate::fuzz) fn op_reconstruct(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, b) = small_shape(src);
    let compute = compute_type(src);
    let mut p = Problem::new();
    let wdt = any_dtype(src);
    let lw = layout(src, n, m, b, wdt, false);
    let w = p.add("W", Role::Out, lw);
    let t = terms(src, &mut p, n, m, b);
    p.mutate(src, 48);
    let compute_arg = p.mutate_arg(src, 8, "compute", compute, &[F16, BF16, -1, 7]);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let tp = term_ptrs(&mut p, &ptrs, &t, src);
    let before = a.bytes().to_vec();
    let wp = ptrs.get(&p, Some(w));
    let what = format!("osft_reconstruct (compute {compute_arg}){}", p.describe());
    let (st, q) = query("osft_reconstruct_workspace_size", |bp| unsafe {
        osft_reconstruct_workspace_size(ctx, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], wp, compute_arg, bp)
    })?;
    expect_ok(st, &p, false, false, &format!("workspace query: {what}"))?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let st = unsafe { osft_reconstruct(ctx, tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], wp, compute_arg) };
    check_call(st, &ws, &p, short, false, &what)?;
    // The inputs are the descriptors actually passed as terms (a flipped term pointer may pass W
    // itself); none may share memory with W.
    let ins: Vec<usize> = (0..p.descs.len())
        .filter(|&i| {
            let q = ptrs.get(&p, Some(i));
            !q.is_null() && tp.contains(&q)
        })
        .collect();
    check_outcome(&Access::new(&[w], &ins), st, false, &before, &a, &p, &what)?;
    if st != OSFT_STATUS_OK || p.mutated {
        return Ok(());
    }
    let after = a.bytes().to_vec();
    for e in 0..b {
        let (want, scale) = reference_sum(&p, &a, &before, &t, e, n, m);
        let got = view(&after, &a, &p.descs[w]).dense(e);
        close(&got, &want, scale + frob(&want), 16.0 * (8.0 * eps(compute) + eps(wdt)), &format!("{what}: batch {e}"))?;
    }
    Ok(())
}

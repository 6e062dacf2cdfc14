//! Fuzz target `decompose`: `osft_decompose` at `k` into up to six parts.

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::fuzz::aliasing::Access;
use crate::fuzz::arena::*;
use crate::fuzz::checks::*;
use crate::fuzz::input::Src;
use crate::fuzz::operands::*;
use crate::fuzz::reference::*;
use crate::fuzz::R;

/// Decompose at `k` into up to six parts.
pub(in crate::fuzz) fn op_decompose(src: &mut Src, ctx: *mut osft_context) -> R {
    let (n, m, b) = small_shape(src);
    let r = n.min(m);
    let k = src.below(r + 1);
    let compute = compute_type(src);
    let mut p = Problem::new();
    let wdt = any_dtype(src);
    let lw = layout(src, n, m, b, wdt, false);
    let w = p.add("W", Role::In, lw);
    let part = |p: &mut Problem,
                src: &mut Src,
                name: &'static str,
                rows: usize,
                cols: usize,
                vecn: Option<usize>|
     -> Option<usize> {
        if !src.chance(200) {
            return None;
        }
        let dt = any_dtype(src);
        let l = match vecn {
            Some(len) => vector(src, len, b, dt),
            None => layout(src, rows, cols, b, dt, false),
        };
        Some(p.add(name, Role::Out, l))
    };
    let uh = part(&mut p, src, "U_high", n, k, None);
    let sh = part(&mut p, src, "S_high", 0, 0, Some(k));
    let vh = part(&mut p, src, "V_high", k, m, None);
    let ul = part(&mut p, src, "U_low", n, r - k, None);
    let sl = part(&mut p, src, "S_low", 0, 0, Some(r - k));
    let vl = part(&mut p, src, "V_low", r - k, m, None);
    p.want_nonfinite(src, w, 16);
    p.mutate(src, 48);
    let kk = p.mutate_arg(src, 12, "k", k as i64, &[-1, r as i64 + 1, i64::MAX, i64::MIN, (r + 5) as i64]);
    let compute = p.mutate_arg(src, 8, "compute", compute, &[F16, BF16, -1, 7]);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let before = a.bytes().to_vec();
    let (st, q) = query("osft_decompose_workspace_size", |bp| unsafe {
        osft_decompose_workspace_size(ctx, ptrs.get(&p, Some(w)), compute, bp)
    })?;
    expect_ok(st, &p, false, false, "decompose workspace query")?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let g = |i| ptrs.get(&p, i);
    let st = unsafe { osft_decompose(ctx, g(Some(w)), kk, g(uh), g(sh), g(vh), g(ul), g(sl), g(vl), compute) };
    let what = format!("osft_decompose (k {kk}, compute {compute}){}", p.describe());
    check_call(st, &ws, &p, short, true, &what)?;
    let outs: Vec<usize> = [uh, sh, vh, ul, sl, vl].into_iter().flatten().collect();
    // Any output may be the identical descriptor of W (W is staged first); nothing else aliases.
    let access = outs.iter().fold(Access::new(&outs, &[w]), |acc, &o| acc.same_ok(o, w));
    check_outcome(&access, st, st == OSFT_STATUS_NON_FINITE && short, &before, &a, &p, &what)?;
    if st == OSFT_STATUS_OK && !p.mutated {
        if let (Some(sh), Some(sl)) = (sh, sl) {
            let after = a.bytes().to_vec();
            let dts: Vec<i32> = outs.iter().map(|i| p.descs[*i].m.dtype).collect();
            let (u, v) = match (uh, vh, ul, vl) {
                (Some(_), Some(_), Some(_), Some(_)) => (uh, vh),
                _ => (None, None),
            };
            check_factors(&p, &a, &before, &after, w, u, sh, v, Some((0, ul, sl, vl)), compute, &dts, &what)?;
        }
    }
    Ok(())
}

//! Fuzz target `svd`: the SVD of one matrix or a strided batch (`osft_svd`), or a list of
//! differently shaped problems (`osft_svd_list`).

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

/// SVD of one matrix or a strided batch, or a list of differently shaped problems.
pub(in crate::fuzz) fn op_svd(src: &mut Src, ctx: *mut osft_context) -> R {
    let count = if src.chance(48) { 1 + src.below(3) } else { 0 }; // 0: osft_svd
    let compute = compute_type(src);
    let mut p = Problem::new();
    p.allow_absent = count == 0;
    let (no_u, no_vt) = (count > 0 && src.chance(64), count > 0 && src.chance(64));
    let mut probs = vec![];
    for _ in 0..count.max(1) {
        let (n, m, b) = small_shape(src);
        let r = n.min(m);
        let wdt = any_dtype(src);
        let lw = layout(src, n, m, b, wdt, false);
        let w = p.add("W", Role::In, lw);
        let with_u = if count > 0 { !no_u } else { src.chance(192) };
        let with_vt = if count > 0 { !no_vt } else { src.chance(192) };
        let dt = any_dtype(src);
        let lu = layout(src, n, r, b, dt, false);
        let u = p.add("U", Role::Out, lu);
        let dt = any_dtype(src);
        let ls = vector(src, r, b, dt);
        let s = p.add("S", Role::Out, ls);
        let dt = any_dtype(src);
        let lv = layout(src, r, m, b, dt, false);
        let vt = p.add("Vt", Role::Out, lv);
        p.want_nonfinite(src, w, 16);
        probs.push((w, with_u.then_some(u), s, with_vt.then_some(vt)));
    }
    p.mutate(src, 48);
    let compute = p.mutate_arg(src, 8, "compute", compute, &[F16, BF16, -1, 7]);
    let mut a = build(&p, src);
    let ptrs = Ptrs::new(&mut a, &p);
    let before = a.bytes().to_vec();
    let outs: Vec<usize> = probs.iter().flat_map(|(_, u, s, vt)| [*u, Some(*s), *vt]).flatten().collect();

    let (st, q) = if count == 0 {
        let (w, ..) = probs[0];
        query("osft_svd_workspace_size", |b| unsafe {
            osft_svd_workspace_size(ctx, ptrs.get(&p, Some(w)), compute, b)
        })?
    } else {
        // The list form takes arrays: copy the descriptors into contiguous arrays.
        let ws: Vec<osft_matrix> = probs.iter().map(|t| ptrs.ms[t.0]).collect();
        query("osft_svd_list_workspace_size", |b| unsafe {
            osft_svd_list_workspace_size(ctx, count, ws.as_ptr(), compute, b)
        })?
    };
    expect_ok(st, &p, false, false, "svd workspace query")?;
    let (ws, short) = set_workspace(src, ctx, q)?;
    let st = if count == 0 {
        let (w, u, s, vt) = probs[0];
        unsafe {
            osft_svd(ctx, ptrs.get(&p, Some(w)), ptrs.get(&p, u), ptrs.get(&p, Some(s)), ptrs.get(&p, vt), compute)
        }
    } else {
        let arr = |f: &dyn Fn(&(usize, Option<usize>, usize, Option<usize>)) -> usize| -> Vec<osft_matrix> {
            probs.iter().map(|t| ptrs.ms[f(t)]).collect()
        };
        let (ws_, ss) = (arr(&|t| t.0), arr(&|t| t.2));
        let (us, vts) =
            (if no_u { vec![] } else { arr(&|t| t.1.unwrap()) }, if no_vt { vec![] } else { arr(&|t| t.3.unwrap()) });
        unsafe {
            osft_svd_list(
                ctx,
                count,
                ws_.as_ptr(),
                if no_u { null() } else { us.as_ptr() },
                ss.as_ptr(),
                if no_vt { null() } else { vts.as_ptr() },
                compute,
            )
        }
    };
    let what = format!(
        "{} (compute {compute}){}",
        if count == 0 { "osft_svd".to_string() } else { format!("osft_svd_list of {count}") },
        p.describe()
    );
    check_call(st, &ws, &p, short, true, &what)?;
    // An output may be the identical descriptor of its own problem's W (W is staged first).
    let mut access = Access::new(&outs, &probs.iter().map(|t| t.0).collect::<Vec<_>>());
    for &(w, u, s, vt) in &probs {
        for o in [u, Some(s), vt].into_iter().flatten() {
            access = access.same_ok(o, w);
        }
    }
    check_outcome(&access, st, st == OSFT_STATUS_NON_FINITE && short, &before, &a, &p, &what)?;
    if st == OSFT_STATUS_OK && !p.mutated && count == 0 {
        let (w, u, s, vt) = probs[0];
        let after = a.bytes().to_vec();
        let dts: Vec<i32> = [u, Some(s), vt].iter().flatten().map(|i| p.descs[*i].m.dtype).collect();
        check_factors(&p, &a, &before, &after, w, u, s, vt, None, compute, &dts, &what)?;
    }
    Ok(())
}

//! Fuzz target `desc`: descriptors with raw fields, validated by the workspace queries, against a
//! model of the documented rules.

use std::ffi::c_void;

use osft::ffi::osft_status::*;
use osft::ffi::*;

use crate::fuzz::checks::*;
use crate::fuzz::input::Src;
use crate::fuzz::operands::*;
use crate::fuzz::R;

/// Statuses the documented rules allow for one descriptor validated as an argument that may be
/// empty (`read_vector_workspace_size`). The data pointer is given as an address.
pub fn model_statuses(m: &osft_matrix, addr: usize) -> Vec<osft_status> {
    use osft_status::*;
    if !(0..=3).contains(&m.dtype) {
        return vec![OSFT_STATUS_DTYPE_UNSUPPORTED];
    }
    if m._reserved != 0
        || !(0..=1).contains(&m.device)
        || (m.device == 0 && m.device_ordinal != 0)
        || (m.device == 1 && m.device_ordinal < 0)
    {
        return vec![OSFT_STATUS_INVALID_ARGUMENT];
    }
    // Conversion order: rows, cols, row_stride, col_stride, batch, batch_stride.
    for (v, stride) in [
        (m.rows, false),
        (m.cols, false),
        (m.row_stride, true),
        (m.col_stride, true),
        (m.batch, false),
        (m.batch_stride, true),
    ] {
        if v < 0 {
            return vec![if stride { OSFT_STATUS_INVALID_STRIDE } else { OSFT_STATUS_INVALID_SHAPE }];
        }
    }
    if m.batch == 0 {
        return vec![OSFT_STATUS_INVALID_SHAPE];
    }
    if m.rows == 0 || m.cols == 0 {
        return vec![OSFT_STATUS_OK];
    }
    if addr == 0 {
        return vec![OSFT_STATUS_NULL_POINTER];
    }
    let size = esize(m.dtype);
    if addr % size != 0 {
        return vec![OSFT_STATUS_MISALIGNED];
    }
    let e = extent(m).unwrap();
    if e > isize::MAX as u128 || addr as u128 + e > usize::MAX as u128 {
        return vec![OSFT_STATUS_OVERFLOW];
    }
    // Injective? Zero strides over an extent > 1 certainly are not; small cases by brute force.
    let dims = [(m.rows, m.row_stride), (m.cols, m.col_stride), (m.batch, m.batch_stride)];
    if dims.iter().any(|(n, s)| *n > 1 && *s == 0) {
        return vec![OSFT_STATUS_OVERLAP];
    }
    // Saturating: three dimensions near 2^60 with unit strides pass the extent check above (for
    // 2-byte dtypes) yet their product exceeds u128 (the fuzzer found this: overflow panic).
    let count = (m.rows as u128).saturating_mul(m.cols as u128).saturating_mul(m.batch as u128);
    if count <= 4096 {
        let mut offs: Vec<u128> = vec![];
        for b in 0..m.batch as u128 {
            for i in 0..m.rows as u128 {
                for j in 0..m.cols as u128 {
                    offs.push(b * m.batch_stride as u128 + i * m.row_stride as u128 + j * m.col_stride as u128);
                }
            }
        }
        offs.sort_unstable();
        if offs.windows(2).any(|w| w[0] == w[1]) {
            return vec![OSFT_STATUS_OVERLAP];
        }
    }
    // Distinct addresses: accepted, or rejected by the (documented, conservative) overlap test.
    vec![OSFT_STATUS_OK, OSFT_STATUS_OVERLAP]
}

fn raw_field(src: &mut Src) -> i64 {
    match src.below(8) {
        0..=3 => src.below(6) as i64,
        4 => src.pick(&[-1, i64::MIN, i64::MAX, 1 << 62, 1 << 61, 1 << 31, 1 << 32, (1 << 40) + 1, -(1 << 62)]),
        5 => src.below(64) as i64,
        _ => src.i64(),
    }
}

pub(in crate::fuzz) fn op_desc(src: &mut Src, ctx: *mut osft_context) -> R {
    // A reserved, never touched address range to point descriptors at: the workspace queries
    // read no data, so any address is fair game; a real buffer for small extents regardless.
    let mut buf = vec![0u64; 64];
    let base = buf.as_mut_ptr() as usize;
    let raw = |src: &mut Src| -> (osft_matrix, usize) {
        let addr = match src.below(6) {
            0 | 1 => base,
            2 => 0,
            3 => base + src.pick(&[1usize, 2, 4]),
            4 => usize::MAX - src.below(64) * 8 - 7,
            _ => (src.i64() as usize) & !7,
        };
        let mut m = mat(
            src.pick(&[F32, F64, F16, BF16, F32, -1, 4]),
            raw_field(src),
            raw_field(src),
            raw_field(src),
            raw_field(src),
            raw_field(src),
            raw_field(src),
        );
        if src.chance(10) {
            m.device = src.pick(&[1, 2, -1]);
        }
        if src.chance(10) {
            m.device_ordinal = src.pick(&[1, -1]);
        }
        if src.chance(10) {
            m._reserved = 1;
        }
        m.data = addr as *mut c_void;
        (m, addr)
    };
    let (d1, a1) = raw(src);
    let (d2, a2) = raw(src);
    // Pairs whose scratch sizes pass 2^64 bytes (tests/ffi_regressions.rs:
    // regression_workspace_size_wraps_for_wide_bases) must get OVERFLOW / ALLOCATION_FAILED.
    let _ = a2;
    let compute = src.pick(&[F32, F64, F16, 5]);
    let side = src.pick(&[0, 1, 2, 3]);
    // The documented single-descriptor rules.
    let (st, q) =
        query("osft_read_vector_workspace_size", |b| unsafe { osft_read_vector_workspace_size(ctx, &d1, b) })?;
    let mut allowed = model_statuses(&d1, a1);
    // The query plans the read, so it refuses what the read refuses: a buffer on another device
    // (checked first), then a matrix that is not a vector.
    if let Some(ok) = allowed.iter().position(|s| *s == OSFT_STATUS_OK) {
        let empty = d1.rows == 0 || d1.cols == 0 || d1.batch == 0;
        if !empty && d1.device != 0 {
            allowed[ok] = OSFT_STATUS_DEVICE_MISMATCH;
        } else if d1.rows > 1 && d1.cols > 1 {
            allowed[ok] = OSFT_STATUS_INVALID_SHAPE;
        }
    }
    // A valid vector whose f64 copy cannot exist: the scratch size itself overflows.
    let count = (d1.rows as u128).saturating_mul(d1.cols as u128).saturating_mul(d1.batch as u128);
    if allowed.contains(&OSFT_STATUS_OK) && count.saturating_mul(8) > isize::MAX as u128 {
        allowed.extend([OSFT_STATUS_OVERFLOW, OSFT_STATUS_ALLOCATION_FAILED]);
    }
    if !allowed.contains(&st) {
        return Err(format!(
            "read_vector_workspace_size of {d1:?}: {st:?} ({}), the documented rules allow {allowed:?}",
            msg()
        ));
    }
    if let Some(bytes) = q {
        let len = (d1.rows as u128).saturating_mul(d1.cols as u128).saturating_mul(d1.batch as u128);
        if (bytes as u128) < len.saturating_mul(8) {
            return Err(format!("read_vector_workspace_size of {d1:?}: {bytes} bytes for {len} doubles"));
        }
    }
    // The other queries: no crash, no bug status, *bytes untouched on failure.
    let zero = std::ptr::null::<osft_matrix>();
    let (p1, p2) = (&d1 as *const osft_matrix, &d2 as *const osft_matrix);
    let opt = |c: bool, p: *const osft_matrix| if c { p } else { zero };
    let c1 = src.chance(200);
    let c2 = src.chance(128);
    let list = [d1, d2];
    let what = format!("\n    d1 = {d1:?}\n    d2 = {d2:?}");
    let checks: Vec<(&str, Box<dyn Fn(*mut usize) -> osft_status>)> = vec![
        ("svd_workspace_size", Box::new(|b| unsafe { osft_svd_workspace_size(ctx, p1, compute, b) })),
        (
            "svd_list_workspace_size",
            Box::new(|b| unsafe { osft_svd_list_workspace_size(ctx, 2, list.as_ptr(), compute, b) }),
        ),
        (
            "project_workspace_size",
            Box::new(|b| unsafe {
                osft_project_workspace_size(ctx, side, opt(c1, p2), opt(c2, p2), p1, opt(c2 && c1, p1), b)
            }),
        ),
        ("project_apply_workspace_size", Box::new(|b| unsafe { osft_project_apply_workspace_size(ctx, p2, p1, b) })),
        ("leakage_workspace_size", Box::new(|b| unsafe { osft_leakage_workspace_size(ctx, side, p2, p1, b) })),
        (
            "orthonormality_error_workspace_size",
            Box::new(|b| unsafe { osft_orthonormality_error_workspace_size(ctx, side, p1, b) }),
        ),
        (
            "layer_importance_workspace_size",
            Box::new(|b| unsafe { osft_layer_importance_workspace_size(ctx, p1, p2, compute, b) }),
        ),
        (
            "reconstruct_workspace_size",
            Box::new(|b| unsafe { osft_reconstruct_workspace_size(ctx, p2, p2, p2, zero, zero, zero, p1, compute, b) }),
        ),
        (
            "reconstruction_error_workspace_size",
            Box::new(|b| unsafe {
                osft_reconstruction_error_workspace_size(
                    ctx,
                    p1,
                    opt(c1, p2),
                    opt(c1, p2),
                    opt(c1, p2),
                    opt(!c1, p2),
                    opt(!c1, p2),
                    opt(!c1, p2),
                    compute,
                    b,
                )
            }),
        ),
    ];
    let pick = src.below(checks.len() + 1);
    for (i, (name, f)) in checks.iter().enumerate() {
        if pick < checks.len() && i != pick {
            continue;
        }
        query(name, f).map_err(|e| format!("{e}{what}"))?;
    }
    // A misaligned descriptor pointer.
    if src.chance(16) {
        let mut raw = [0u8; 80];
        let p = unsafe { raw.as_mut_ptr().add(1) } as *mut osft_matrix;
        unsafe { std::ptr::write_unaligned(p, d1) };
        let (st, _) = query("svd_workspace_size (misaligned descriptor)", |b| unsafe {
            osft_svd_workspace_size(ctx, p, compute, b)
        })?;
        if st != OSFT_STATUS_MISALIGNED && (p as usize) % 8 != 0 {
            return Err(format!("a misaligned descriptor pointer gave {st:?}"));
        }
    }
    drop(buf);
    Ok(())
}

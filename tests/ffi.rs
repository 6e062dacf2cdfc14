//! The C ABI called directly from Rust: statuses and messages, the panic boundary, handles,
//! every bad-input class (with poisoned output buffers that must stay untouched), and numbers
//! against float64 references computed here with naive loops.

use std::ffi::{c_void, CStr};
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft::Status;

// ---------------------------------------------------------------------------------------------
// Helpers: descriptors, status checks, contexts, the test RNG (shared with the hardening tests).

use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

/// Element (i, j) of a host descriptor, as f64.
fn at(m: &osft_matrix, i: i64, j: i64) -> f64 {
    let off = (i * m.row_stride + j * m.col_stride) as usize;
    unsafe {
        match m.dtype {
            0 => *(m.data as *const f32).add(off) as f64,
            1 => *(m.data as *const f64).add(off),
            _ => unreachable!(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Versions, statuses, messages, the panic boundary.

#[test]
fn versions_match_the_package() {
    assert_eq!(osft_version_major().to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(osft_version_minor().to_string(), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(osft_version_patch().to_string(), env!("CARGO_PKG_VERSION_PATCH"));
    assert_eq!(osft_abi_version(), OSFT_ABI_VERSION);
    assert_eq!(
        (OSFT_VERSION_MAJOR, OSFT_VERSION_MINOR, OSFT_VERSION_PATCH),
        (osft_version_major(), osft_version_minor(), osft_version_patch())
    );
}

#[test]
fn status_values_equal_the_rust_ones() {
    let all = [
        (OSFT_STATUS_OK, Status::Ok),
        (OSFT_STATUS_NULL_POINTER, Status::NullPointer),
        (OSFT_STATUS_INVALID_SHAPE, Status::InvalidShape),
        (OSFT_STATUS_INVALID_STRIDE, Status::InvalidStride),
        (OSFT_STATUS_OVERLAP, Status::Overlap),
        (OSFT_STATUS_OVERFLOW, Status::Overflow),
        (OSFT_STATUS_MISALIGNED, Status::Misaligned),
        (OSFT_STATUS_DTYPE_UNSUPPORTED, Status::DtypeUnsupported),
        (OSFT_STATUS_RANK_OUT_OF_RANGE, Status::RankOutOfRange),
        (OSFT_STATUS_INVALID_ARGUMENT, Status::InvalidArgument),
        (OSFT_STATUS_PRECONDITION, Status::Precondition),
        (OSFT_STATUS_NOT_CONVERGED, Status::NotConverged),
        (OSFT_STATUS_WORKSPACE_TOO_SMALL, Status::WorkspaceTooSmall),
        (OSFT_STATUS_DEVICE_MISMATCH, Status::DeviceMismatch),
        (OSFT_STATUS_BACKEND_UNAVAILABLE, Status::BackendUnavailable),
        (OSFT_STATUS_ALLOCATION_FAILED, Status::AllocationFailed),
        (OSFT_STATUS_INTERNAL, Status::Internal),
        (OSFT_STATUS_NON_FINITE, Status::NonFinite),
    ];
    for (i, (c, r)) in all.iter().enumerate() {
        assert_eq!(*c as i32, *r as i32);
        assert_eq!(*c as i32, i as i32);
        assert_eq!(osft_status::from(*r), *c);
        let s = unsafe { CStr::from_ptr(osft_status_string(*c as i32)) }.to_str().unwrap();
        assert!(!s.is_empty() && s != "unknown status", "{c:?}: {s:?}");
    }
    for bad in [-1, 18, i32::MAX, i32::MIN] {
        assert_eq!(unsafe { CStr::from_ptr(osft_status_string(bad)) }.to_str().unwrap(), "unknown status");
    }
    assert_eq!(osft_dtype::OSFT_DTYPE_BF16 as i32, osft::DType::BF16 as i32);
    assert_eq!(osft_side::OSFT_SIDE_BOTH as i32, osft::Side::Both as i32);
    assert_eq!(osft_strategy::OSFT_STRATEGY_CACHED_PROJECTOR as i32, osft::Strategy::CachedProjector as i32);
    assert_eq!(std::mem::size_of::<osft_matrix>(), 72);
}

#[test]
fn panic_becomes_internal_status_with_message() {
    let st = osft_debug_panic();
    let m = expect(st, OSFT_STATUS_INTERNAL);
    assert!(m.starts_with("panic: "), "{m:?}");
    // The library keeps working on this thread afterwards, and the message is cleared by the
    // next successful call.
    let c = Ctx::cpu();
    assert_eq!(msg(), "");
    let mut b = -1;
    expect(unsafe { osft_context_backend(c.0, &mut b) }, OSFT_STATUS_OK);
    assert_eq!(b, osft_backend::OSFT_BACKEND_CPU as i32);
}

#[test]
fn last_error_is_thread_local() {
    let mut out = null_mut();
    let st = unsafe { osft_context_create(7, 0, &mut out) };
    expect(st, OSFT_STATUS_INVALID_ARGUMENT);
    let other = std::thread::spawn(msg).join().unwrap();
    assert_eq!(other, "", "another thread sees this thread's message");
    assert!(msg().contains("backend"));
}

// ---------------------------------------------------------------------------------------------
// Contexts.

#[test]
fn context_backends() {
    unsafe {
        let sentinel = 0x5a5a as *mut osft_context;
        let mut out = sentinel;
        // CUDA: a context on a machine with a usable GPU, otherwise BACKEND_UNAVAILABLE with the
        // reason, and *out untouched.
        let st = osft_context_create(osft_backend::OSFT_BACKEND_CUDA as i32, 0, &mut out);
        let mut b = -1;
        if st == OSFT_STATUS_OK {
            expect(osft_context_backend(out, &mut b), OSFT_STATUS_OK);
            assert_eq!(b, osft_backend::OSFT_BACKEND_CUDA as i32);
            osft_context_destroy(out);
        } else {
            let m = expect(st, OSFT_STATUS_BACKEND_UNAVAILABLE);
            assert!(m.contains("OSFT_BACKEND_CUDA") && m.contains("OSFT_BACKEND_AUTO"), "{m}");
            assert_eq!(out, sentinel);
        }
        let gpu = st == OSFT_STATUS_OK;
        // AUTO: CUDA where CUDA works, else the CPU.
        expect(osft_context_create(osft_backend::OSFT_BACKEND_AUTO as i32, 0, &mut out), OSFT_STATUS_OK);
        expect(osft_context_backend(out, &mut b), OSFT_STATUS_OK);
        let want = if gpu { osft_backend::OSFT_BACKEND_CUDA } else { osft_backend::OSFT_BACKEND_CPU };
        assert_eq!(b, want as i32);
        osft_context_destroy(out);
        // A device that does not exist.
        let mut out = sentinel;
        expect(
            osft_context_create(osft_backend::OSFT_BACKEND_CUDA as i32, 1000, &mut out),
            OSFT_STATUS_BACKEND_UNAVAILABLE,
        );
        assert_eq!(out, sentinel);
        // Bad arguments.
        let mut out = sentinel;
        expect(osft_context_create(3, 0, &mut out), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_context_create(-1, 0, &mut out), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_context_create(0, -1, &mut out), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_context_create(0, 1, &mut out), OSFT_STATUS_INVALID_ARGUMENT);
        assert_eq!(out, sentinel);
        expect(osft_context_create(0, 0, null_mut()), OSFT_STATUS_NULL_POINTER);
        // Destroying NULL is a no-op.
        osft_context_destroy(null_mut());
        osft_projector_destroy(null_mut());
    }
}

#[test]
fn null_handles_are_rejected() {
    unsafe {
        let mut bytes = 77usize;
        let mut b = 5i32;
        let w = vec![1f32; 4];
        let d = rm(&w, F32, 2, 2);
        expect(osft_context_backend(null_mut(), &mut b), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_set_stream(null_mut(), null_mut()), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_get_stream(null_mut(), null_mut()), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_set_workspace(null_mut(), null_mut(), 0), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_release_workspace(null_mut()), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_workspace_bytes(null_mut(), &mut bytes), OSFT_STATUS_NULL_POINTER);
        expect(osft_svd_workspace_size(null_mut(), &d, F32, &mut bytes), OSFT_STATUS_NULL_POINTER);
        expect(osft_svd(null_mut(), &d, null(), &d, null(), F32), OSFT_STATUS_NULL_POINTER);
        expect(
            osft_decompose(null_mut(), &d, 1, null(), null(), null(), null(), null(), null(), F32),
            OSFT_STATUS_NULL_POINTER,
        );
        expect(osft_project(null_mut(), LEFT, &d, null(), &d, null()), OSFT_STATUS_NULL_POINTER);
        expect(osft_projector_apply(null_mut(), &d, null()), OSFT_STATUS_NULL_POINTER);
        expect(osft_projector_strategies(null_mut(), &mut b, &mut b), OSFT_STATUS_NULL_POINTER);
        assert_eq!((bytes, b), (77, 5));
        let c = Ctx::cpu();
        expect(osft_context_backend(c.0, null_mut()), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_workspace_bytes(c.0, null_mut()), OSFT_STATUS_NULL_POINTER);
        expect(osft_svd_workspace_size(c.0, &d, F32, null_mut()), OSFT_STATUS_NULL_POINTER);
        expect(osft_svd_workspace_size(c.0, null(), F32, &mut bytes), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_get_stream(c.0, null_mut()), OSFT_STATUS_NULL_POINTER);
        assert_eq!(bytes, 77);
    }
}

#[test]
fn streams_on_a_cpu_context() {
    let c = Ctx::cpu();
    unsafe {
        expect(osft_context_set_stream(c.0, null_mut()), OSFT_STATUS_OK);
        let m = expect(osft_context_set_stream(c.0, 0x1000 as *mut c_void), OSFT_STATUS_INVALID_ARGUMENT);
        assert!(m.contains("CPU"), "{m}");
        let mut s = 0x42 as *mut c_void;
        expect(osft_context_get_stream(c.0, &mut s), OSFT_STATUS_OK);
        assert!(s.is_null());
    }
}

// ---------------------------------------------------------------------------------------------
// Decompose, project, diagnostics against float64 references.

/// `W` (`n x m`) in row-major or column-major f32; decompose at `k`; check `U` orthonormal,
/// `S` descending, the reconstruction, the projection against `X - U (U^T X)` and the leakage.
fn decompose_and_project(n: i64, m: i64, k: i64, row_major: bool) {
    let c = Ctx::cpu();
    let r = n.min(m);
    let mut g = seeded(n as u64 * 1000 + m as u64 * 10 + row_major as u64);
    let w: Vec<f32> = g.uniform_vec((n * m) as usize).into_iter().map(|v| v as f32).collect();
    let lay =
        |v: &Vec<f32>, rows: i64, cols: i64| if row_major { rm(v, F32, rows, cols) } else { cm(v, F32, rows, cols) };
    let wd = lay(&w, n, m);
    let (uh, sh, vh) = (vec![0f32; (n * k) as usize], vec![0f32; k as usize], vec![0f32; (k * m) as usize]);
    let (ul, sl, vl) =
        (vec![0f32; (n * (r - k)) as usize], vec![0f32; (r - k) as usize], vec![0f32; ((r - k) * m) as usize]);
    let (uhd, shd, vhd) = (lay(&uh, n, k), lay(&sh, k, 1), lay(&vh, k, m));
    let (uld, sld, vld) = (lay(&ul, n, r - k), lay(&sl, 1, r - k), lay(&vl, r - k, m));
    unsafe {
        let mut ws = 0usize;
        expect(osft_decompose_workspace_size(c.0, &wd, F32, &mut ws), OSFT_STATUS_OK);
        assert!(ws > 0);
        expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, &uld, &sld, &vld, F32), OSFT_STATUS_OK);
    }
    // S descending and non-negative.
    let s: Vec<f64> = sh.iter().chain(sl.iter()).map(|v| *v as f64).collect();
    assert!(s.windows(2).all(|p| p[0] >= p[1]) && s[s.len() - 1] >= 0.0, "{s:?}");
    // U = [U_high U_low] orthonormal columns; V rows orthonormal.
    let ucol = |j: i64, i: i64| if j < k { at(&uhd, i, j) } else { at(&uld, i, j - k) };
    let vrow = |i: i64, j: i64| if i < k { at(&vhd, i, j) } else { at(&vld, i - k, j) };
    for a in 0..r {
        for b in 0..r {
            let du: f64 = (0..n).map(|i| ucol(a, i) * ucol(b, i)).sum();
            let dv: f64 = (0..m).map(|j| vrow(a, j) * vrow(b, j)).sum();
            let want = if a == b { 1.0 } else { 0.0 };
            assert!((du - want).abs() < 1e-4, "U^T U[{a},{b}] = {du}");
            assert!((dv - want).abs() < 1e-4, "V V^T[{a},{b}] = {dv}");
        }
    }
    // Reconstruction in f64.
    let wn: f64 =
        (0..n).flat_map(|i| (0..m).map(move |j| (i, j))).map(|(i, j)| at(&wd, i, j).powi(2)).sum::<f64>().sqrt();
    let mut err = 0.0;
    for i in 0..n {
        for j in 0..m {
            let rec: f64 = (0..r).map(|t| ucol(t, i) * s[t as usize] * vrow(t, j)).sum();
            err += (rec - at(&wd, i, j)).powi(2);
        }
    }
    assert!(err.sqrt() / wn < 1e-5, "reconstruction error {}", err.sqrt() / wn);
    // The library's own diagnostics agree.
    unsafe {
        let mut e = [f64::NAN; 2];
        // f32 compute: see `reconstruction_error_f64_compute_of_f32_data` for why not f64.
        expect(
            osft_reconstruction_error(c.0, &wd, &uhd, &shd, &vhd, &uld, &sld, &vld, F32, e.as_mut_ptr(), 2),
            OSFT_STATUS_OK,
        );
        assert!(e[0] < 1e-5 && e[1].is_nan(), "{e:?}");
        if k > 0 {
            let mut o = [f64::NAN];
            expect(osft_orthonormality_error(c.0, LEFT, &uhd, o.as_mut_ptr(), 1), OSFT_STATUS_OK);
            assert!(o[0] < 1e-5, "{o:?}");
            expect(osft_orthonormality_error(c.0, RIGHT, &vhd, o.as_mut_ptr(), 1), OSFT_STATUS_OK);
            assert!(o[0] < 1e-5, "{o:?}");
        }
        // Read S_high back to the host.
        let mut sv = vec![f64::NAN; k as usize + 1];
        expect(osft_read_vector(c.0, &shd, sv.as_mut_ptr(), sv.len()), OSFT_STATUS_OK);
        for t in 0..k as usize {
            assert_eq!(sv[t], sh[t] as f64);
        }
        assert!(sv[k as usize].is_nan(), "wrote past the vector");
    }
    // Project a gradient of U_low (n x (r-k)) left, out of place, then in place.
    let cols = (r - k).max(1);
    let x: Vec<f32> = g.uniform_vec((n * cols) as usize).into_iter().map(|v| v as f32).collect();
    let xd = lay(&x, n, cols);
    let reference: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..cols)
                .map(|j| {
                    let coef = |t: i64| (0..n).map(|l| at(&uhd, l, t) * at(&xd, l, j)).sum::<f64>();
                    at(&xd, i, j) - (0..k).map(|t| at(&uhd, i, t) * coef(t)).sum::<f64>()
                })
                .collect()
        })
        .collect();
    let out = vec![f32::NAN; (n * cols) as usize];
    let od = lay(&out, n, cols);
    let x_before = bytes_of(&x);
    unsafe { expect(osft_project(c.0, LEFT, &uhd, null(), &xd, &od), OSFT_STATUS_OK) };
    assert_eq!(bytes_of(&x), x_before, "out-of-place projection wrote X");
    for i in 0..n {
        for j in 0..cols {
            assert!((at(&od, i, j) - reference[i as usize][j as usize]).abs() < 1e-5, "({i},{j})");
        }
    }
    unsafe { expect(osft_project(c.0, LEFT, &uhd, null(), &xd, null()), OSFT_STATUS_OK) };
    assert_eq!(bytes_of(&x), bytes_of(&out), "in-place and out-of-place differ");
    if k > 0 {
        let mut leak = [f64::NAN; 1];
        unsafe { expect(osft_leakage(c.0, LEFT, &uhd, &xd, leak.as_mut_ptr(), 1), OSFT_STATUS_OK) };
        assert!(leak[0] < 1e-5, "leakage {}", leak[0]);
    }
}

#[test]
fn decompose_project_row_major() {
    decompose_and_project(9, 6, 2, true);
    decompose_and_project(5, 8, 3, true);
}

#[test]
fn decompose_project_col_major() {
    decompose_and_project(9, 6, 2, false);
    decompose_and_project(5, 8, 3, false);
}

#[test]
fn decompose_k_edges() {
    decompose_and_project(6, 4, 0, true);
    decompose_and_project(6, 4, 4, false);
}

#[test]
fn svd_single_batched_and_list() {
    let c = Ctx::cpu();
    let mut g = seeded(3);
    // A batch of 3 row-major 5 x 3 matrices in f64.
    let (b, n, m) = (3i64, 5i64, 3i64);
    let w = g.uniform_vec((b * n * m) as usize);
    let mut wd = rm(&w, F64, n, m);
    wd.batch = b;
    wd.batch_stride = n * m;
    let s = vec![0f64; (b * m) as usize];
    let mut sd = cm(&s, F64, m, 1);
    sd.batch = b;
    sd.batch_stride = m;
    let u = vec![0f64; (b * n * m) as usize];
    let mut ud = rm(&u, F64, n, m);
    ud.batch = b;
    ud.batch_stride = n * m;
    unsafe { expect(osft_svd(c.0, &wd, &ud, &sd, null(), F64), OSFT_STATUS_OK) };
    // Singular values squared are the eigenvalues of W^T W: check the trace and, per entry,
    // that U^T W W^T U = diag(s^2).
    for e in 0..b {
        let wat = |i: i64, j: i64| w[(e * n * m + i * m + j) as usize];
        let uat = |i: i64, j: i64| u[(e * n * m + i * m + j) as usize];
        let frob: f64 = (0..n * m).map(|t| w[(e * n * m + t) as usize].powi(2)).sum();
        let ss: f64 = (0..m).map(|t| s[(e * m + t) as usize].powi(2)).sum();
        assert!((frob - ss).abs() < 1e-10 * frob, "entry {e}: {frob} vs {ss}");
        for a in 0..m {
            // ||W^T u_a|| = s_a
            let norm: f64 =
                (0..m).map(|j| (0..n).map(|i| uat(i, a) * wat(i, j)).sum::<f64>().powi(2)).sum::<f64>().sqrt();
            assert!((norm - s[(e * m + a) as usize]).abs() < 1e-10, "entry {e} vector {a}");
        }
    }
    // The list form over two shapes gives the same singular values as single calls.
    let w2 = g.uniform_vec(4 * 7);
    let w2d = cm(&w2, F64, 4, 7);
    let first = rm(&w[..(n * m) as usize], F64, n, m);
    let (s1, s2) = (vec![0f64; 3], vec![0f64; 4]);
    let ws = [first, w2d];
    let ss = [cm(&s1, F64, 3, 1), rm(&s2, F64, 1, 4)];
    unsafe {
        let mut bytes = 0usize;
        expect(osft_svd_list_workspace_size(c.0, 2, ws.as_ptr(), F64, &mut bytes), OSFT_STATUS_OK);
        assert!(bytes > 0);
        expect(osft_svd_list(c.0, 2, ws.as_ptr(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_OK);
        expect(osft_svd_list(c.0, 0, null(), null(), null(), null(), F64), OSFT_STATUS_OK);
        expect(osft_svd_list(c.0, 2, null(), null(), ss.as_ptr(), null(), F64), OSFT_STATUS_NULL_POINTER);
    }
    for t in 0..3 {
        assert!((s1[t] - s[t]).abs() < 1e-12);
    }
    let frob2: f64 = w2.iter().map(|v| v * v).sum();
    assert!((s2.iter().map(|v| v * v).sum::<f64>() - frob2).abs() < 1e-10 * frob2);
}

#[test]
fn reconstruct_matches_decomposition() {
    let c = Ctx::cpu();
    let mut g = seeded(11);
    let (n, m, k) = (7i64, 5i64, 2i64);
    let w = g.uniform_vec((n * m) as usize);
    let wd = rm(&w, F64, n, m);
    let (uh, sh, vh) = (vec![0f64; 14], vec![0f64; 2], vec![0f64; 10]);
    let (ul, sl, vl) = (vec![0f64; 21], vec![0f64; 3], vec![0f64; 15]);
    let (uhd, shd, vhd) = (rm(&uh, F64, n, k), rm(&sh, F64, k, 1), rm(&vh, F64, k, m));
    let (uld, sld, vld) = (cm(&ul, F64, n, 3), cm(&sl, F64, 3, 1), cm(&vl, F64, 3, m));
    let out = vec![f64::NAN; (n * m) as usize];
    let od = cm(&out, F64, n, m);
    unsafe {
        expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, &uld, &sld, &vld, F64), OSFT_STATUS_OK);
        let mut bytes = 0usize;
        expect(
            osft_reconstruct_workspace_size(c.0, &uhd, &shd, &vhd, &uld, &sld, &vld, &od, F64, &mut bytes),
            OSFT_STATUS_OK,
        );
        expect(osft_reconstruct(c.0, &uhd, &shd, &vhd, &uld, &sld, &vld, &od, F64), OSFT_STATUS_OK);
    }
    for i in 0..n {
        for j in 0..m {
            assert!((at(&od, i, j) - w[(i * m + j) as usize]).abs() < 1e-12);
        }
    }
    // A partial triple is a NULL-pointer error naming the missing part; the output is untouched.
    let before = bytes_of(&out);
    let e = unsafe {
        expect(osft_reconstruct(c.0, &uhd, null(), &vhd, null(), null(), null(), &od, F64), OSFT_STATUS_NULL_POINTER)
    };
    assert!(e.contains("S_high"), "{e}");
    // No part at all.
    unsafe {
        expect(
            osft_reconstruct(c.0, null(), null(), null(), null(), null(), null(), &od, F64),
            OSFT_STATUS_INVALID_ARGUMENT,
        )
    };
    assert_eq!(bytes_of(&out), before);
}

#[test]
fn both_sides_projector_and_two_phase() {
    let c = Ctx::cpu();
    let mut g = seeded(5);
    let (n, m, k) = (8i64, 6i64, 3i64);
    let w = g.uniform_vec((n * m) as usize);
    let wd = rm(&w, F64, n, m);
    let (uh, vh) = (vec![0f64; (n * k) as usize], vec![0f64; (k * m) as usize]);
    let (uhd, vhd) = (rm(&uh, F64, n, k), rm(&vh, F64, k, m));
    unsafe { expect(osft_decompose(c.0, &wd, k, &uhd, null(), &vhd, null(), null(), null(), F64), OSFT_STATUS_OK) };
    let x = g.uniform_vec((n * m) as usize);
    let xd = rm(&x, F64, n, m);
    // Reference: (I - U U^T) X (I - V^T V), naive f64.
    let pu = |i: i64, l: i64| {
        (if i == l { 1.0 } else { 0.0 })
            - (0..k).map(|t| uh[(i * k + t) as usize] * uh[(l * k + t) as usize]).sum::<f64>()
    };
    let pv = |j: i64, l: i64| {
        (if j == l { 1.0 } else { 0.0 })
            - (0..k).map(|t| vh[(t * m + j) as usize] * vh[(t * m + l) as usize]).sum::<f64>()
    };
    let left: Vec<f64> = (0..n * m).map(|t| (0..n).map(|l| pu(t / m, l) * x[(l * m + t % m) as usize]).sum()).collect();
    let both: Vec<f64> =
        (0..n * m).map(|t| (0..m).map(|l| left[(t / m * m + l) as usize] * pv(l, t % m)).sum()).collect();
    let out = vec![0f64; (n * m) as usize];
    let od = cm(&out, F64, n, m);
    unsafe { expect(osft_project(c.0, BOTH, &uhd, &vhd, &xd, &od), OSFT_STATUS_OK) };
    for t in 0..n * m {
        assert!((at(&od, t / m, t % m) - both[t as usize]).abs() < 1e-12);
    }
    // Projectors, coefficient and cached, give the same; the projector outlives its context.
    for strategy in [
        osft_strategy::OSFT_STRATEGY_COEFFICIENT,
        osft_strategy::OSFT_STRATEGY_CACHED_PROJECTOR,
        osft_strategy::OSFT_STRATEGY_AUTO,
    ] {
        let c2 = Ctx::cpu();
        let mut p = null_mut();
        unsafe { expect(osft_projector_create(c2.0, BOTH, &uhd, &vhd, strategy as i32, &mut p), OSFT_STATUS_OK) };
        drop(c2);
        let (mut l, mut r) = (9, 9);
        unsafe { expect(osft_projector_strategies(p, &mut l, &mut r), OSFT_STATUS_OK) };
        if strategy != osft_strategy::OSFT_STRATEGY_AUTO {
            assert_eq!((l, r), (strategy as i32, strategy as i32));
        }
        let y = x.clone();
        let yd = rm(&y, F64, n, m);
        unsafe { expect(osft_projector_apply(p, &yd, null()), OSFT_STATUS_OK) };
        for t in 0..(n * m) as usize {
            assert!((y[t] - both[t]).abs() < 1e-12, "{strategy:?}");
        }
        unsafe { osft_projector_destroy(p) };
    }
    // A left-only projector reports -1 for the right side.
    let mut p = null_mut();
    unsafe {
        expect(osft_projector_create(c.0, LEFT, &uhd, null(), 1, &mut p), OSFT_STATUS_OK);
        let (mut l, mut r) = (9, 9);
        expect(osft_projector_strategies(p, &mut l, &mut r), OSFT_STATUS_OK);
        assert_eq!((l, r), (1, -1));
        expect(osft_projector_strategies(p, null_mut(), null_mut()), OSFT_STATUS_OK);
        osft_projector_destroy(p);
        let sentinel = 0x77 as *mut osft_projector;
        let mut p = sentinel;
        expect(osft_projector_create(c.0, LEFT, &uhd, null(), 3, &mut p), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_projector_create(c.0, RIGHT, &uhd, null(), 1, &mut p), OSFT_STATUS_NULL_POINTER);
        assert_eq!(p, sentinel);
    }
    // Two-phase left projection over two row shards equals the unsharded left projection.
    let y = x.clone();
    let split = 5i64;
    let (ya, yb) = y.split_at((split * m) as usize);
    let (ua, ub) = uh.split_at((split * k) as usize);
    let (ca, cb) = (vec![0f64; (k * m) as usize], vec![0f64; (k * m) as usize]);
    unsafe {
        expect(
            osft_project_partial(c.0, LEFT, &rm(ua, F64, split, k), &rm(ya, F64, split, m), &rm(&ca, F64, k, m)),
            OSFT_STATUS_OK,
        );
        expect(
            osft_project_partial(
                c.0,
                LEFT,
                &rm(ub, F64, n - split, k),
                &rm(yb, F64, n - split, m),
                &rm(&cb, F64, k, m),
            ),
            OSFT_STATUS_OK,
        );
    }
    let sum: Vec<f64> = ca.iter().zip(&cb).map(|(a, b)| a + b).collect();
    unsafe {
        let mut bytes = 1usize;
        expect(
            osft_project_apply_workspace_size(c.0, &rm(&sum, F64, k, m), &rm(ya, F64, split, m), &mut bytes),
            OSFT_STATUS_OK,
        );
        assert_eq!(bytes, 0);
        expect(
            osft_project_apply(c.0, LEFT, &rm(ua, F64, split, k), &rm(&sum, F64, k, m), &rm(ya, F64, split, m)),
            OSFT_STATUS_OK,
        );
        expect(
            osft_project_apply(c.0, LEFT, &rm(ub, F64, n - split, k), &rm(&sum, F64, k, m), &rm(yb, F64, n - split, m)),
            OSFT_STATUS_OK,
        );
        expect(
            osft_project_partial(c.0, BOTH, &rm(ua, F64, split, k), &rm(ya, F64, split, m), &rm(&ca, F64, k, m)),
            OSFT_STATUS_INVALID_ARGUMENT,
        );
    }
    for t in 0..(n * m) as usize {
        assert!((y[t] - left[t]).abs() < 1e-12);
    }
}

/// `OSFT_RANK_FRACTION` through the C ABI is PEFT's `int(R * f)` exactly: every percentage of
/// several `R` against the expression evaluated in integer arithmetic (the test support's
/// `exact_fraction_rank`, which rounds the exact product as an IEEE multiply does), and the cases
/// that tell it from other readings by hand.
#[test]
fn fraction_rank_through_the_abi_is_pefts_int_of_r_times_f() {
    let s = vec![1.0f64; 4096];
    let rank = |r: usize, f: f64| {
        let mut k = -1i64;
        unsafe {
            expect(
                osft_select_rank(s.as_ptr(), r, osft_rank_rule::OSFT_RANK_FRACTION as i32, f, &mut k),
                OSFT_STATUS_OK,
            )
        };
        k
    };
    for r in [3usize, 10, 50, 100, 1000, 4096] {
        for i in 0..=100 {
            let f = i as f64 / 100.0;
            assert_eq!(rank(r, f), osft_test_support::exact_fraction_rank(f, r) as i64, "f = {f:?}, R = {r}");
        }
    }
    // 100 * 0.29 is 28.999999999999996 in f64: truncated to 28, as PEFT. 10 * 0.7 is 7 - 2^-51
    // exactly, which the multiply rounds (half to even) to 7.0: 7.
    assert_eq!(rank(100, 0.29), 28);
    assert_eq!(rank(100, 0.57), 56);
    assert_eq!(rank(10, 0.7), 7);
    assert_eq!(rank(100, 0.25), 25);
}

#[test]
fn rank_selection() {
    let s = [4.0, 3.0, 2.0, 1.0];
    let mut k = -1i64;
    unsafe {
        expect(osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_FIXED as i32, 3.0, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 3);
        expect(osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_FRACTION as i32, 0.5, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 2);
        // Energy: 16 / 30 < 0.6 <= 25 / 30.
        expect(osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_ENERGY as i32, 0.6, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 2);
        expect(
            osft_select_rank(s.as_ptr(), 4, osft_rank_rule::OSFT_RANK_ENTROPY_EFFECTIVE as i32, 0.0, &mut k),
            OSFT_STATUS_OK,
        );
        let l1: f64 = s.iter().sum();
        let h: f64 = s.iter().map(|v| -(v / l1) * (v / l1).ln()).sum();
        assert_eq!(k, h.exp().round() as i64);
        expect(osft_select_rank(null(), 0, 0, 0.0, &mut k), OSFT_STATUS_OK);
        assert_eq!(k, 0);
        k = 99;
        expect(osft_select_rank(s.as_ptr(), 4, 0, 5.0, &mut k), OSFT_STATUS_RANK_OUT_OF_RANGE);
        expect(osft_select_rank(s.as_ptr(), 4, 0, -1.0, &mut k), OSFT_STATUS_RANK_OUT_OF_RANGE);
        expect(osft_select_rank(s.as_ptr(), 4, 0, 1.5, &mut k), OSFT_STATUS_RANK_OUT_OF_RANGE);
        expect(osft_select_rank(s.as_ptr(), 4, 1, 1.5, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_select_rank(s.as_ptr(), 4, 2, f64::NAN, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_select_rank(s.as_ptr(), 4, 4, 0.0, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_select_rank(null(), 4, 1, 0.5, &mut k), OSFT_STATUS_NULL_POINTER);
        expect(osft_select_rank(s.as_ptr(), 4, 1, 0.5, null_mut()), OSFT_STATUS_NULL_POINTER);
        let unsorted = [1.0, 2.0];
        expect(osft_select_rank(unsorted.as_ptr(), 2, 1, 0.5, &mut k), OSFT_STATUS_INVALID_ARGUMENT);
        assert_eq!(k, 99);

        let imp = [1.0, 2.0, 3.0];
        let full = [10i64, 10, 10];
        let mut ranks = [-7i64; 4];
        // The seed's rule, mean 2: I_n = I / 2.00000001; mrr = 5, trr = 10: CR = 5 + I_n * 5 =
        // 7.4999999875 -> 7, 9.999999975 -> 10, 12.4999999625 -> clamped to d = 10.
        expect(osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.5, 1.0, ranks.as_mut_ptr()), OSFT_STATUS_OK);
        assert_eq!(ranks, [7, 10, 10, -7]);
        // mrr = 2, trr = 8: CR = 2 + I_n * 6 = 4.999999985 -> 5, 7.99999997 -> 8, 10.999999955 -> 10.
        expect(osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.2, 0.8, ranks.as_mut_ptr()), OSFT_STATUS_OK);
        assert_eq!(ranks, [5, 8, 10, -7]);
        // A negative importance (mean 0.5): CR = 5 - 0.99999998 * 5 = 1e-7 -> 0, raised to k = 1.
        let signed = [-0.5, 0.5, 1.5];
        expect(osft_adaptive_ranks(signed.as_ptr(), full.as_ptr(), 3, 0.5, 1.0, ranks.as_mut_ptr()), OSFT_STATUS_OK);
        assert_eq!(ranks, [1, 10, 10, -7]);
        let before = ranks;
        expect(
            osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.8, 0.2, ranks.as_mut_ptr()),
            OSFT_STATUS_INVALID_ARGUMENT,
        );
        // Mean importance 0 or below: refused, the ranks untouched.
        for bad in [[0.0, 0.0, 0.0], [-1.0, 0.5, 0.5], [-1.0, -2.0, -3.0]] {
            expect(
                osft_adaptive_ranks(bad.as_ptr(), full.as_ptr(), 3, 0.5, 1.0, ranks.as_mut_ptr()),
                OSFT_STATUS_INVALID_ARGUMENT,
            );
        }
        let neg = [10i64, -1, 10];
        expect(
            osft_adaptive_ranks(imp.as_ptr(), neg.as_ptr(), 3, 0.2, 0.8, ranks.as_mut_ptr()),
            OSFT_STATUS_RANK_OUT_OF_RANGE,
        );
        expect(osft_adaptive_ranks(imp.as_ptr(), full.as_ptr(), 3, 0.2, 0.8, null_mut()), OSFT_STATUS_NULL_POINTER);
        assert_eq!(ranks, before);
    }
}

#[test]
fn layer_importance_matches_reference() {
    let c = Ctx::cpu();
    let mut g = seeded(17);
    let (n, m, samples) = (4i64, 6i64, 5i64);
    let w = g.uniform_vec((n * m) as usize);
    let x = g.uniform_vec((samples * m) as usize);
    let r = n.min(m);
    let mut want = 0.0;
    for s in 0..samples {
        let xs = &x[(s * m) as usize..((s + 1) * m) as usize];
        let y: Vec<f64> = (0..r).map(|i| (0..m).map(|j| w[(i * m + j) as usize] * xs[j as usize]).sum()).collect();
        let xr = &xs[..r as usize];
        let dot: f64 = xr.iter().zip(&y).map(|(a, b)| a * b).sum();
        let na: f64 = xr.iter().map(|v| v * v).sum::<f64>().sqrt();
        let nb: f64 = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        want += dot / (na * nb);
    }
    want /= samples as f64;
    let mut out = [f64::NAN; 1];
    unsafe {
        let mut bytes = 0usize;
        expect(
            osft_layer_importance_workspace_size(c.0, &rm(&w, F64, n, m), &rm(&x, F64, samples, m), F64, &mut bytes),
            OSFT_STATUS_OK,
        );
        expect(
            osft_layer_importance(c.0, &rm(&w, F64, n, m), &rm(&x, F64, samples, m), F64, out.as_mut_ptr(), 1),
            OSFT_STATUS_OK,
        );
    }
    assert!((out[0] - want).abs() < 1e-12, "{} vs {want}", out[0]);
}

// ---------------------------------------------------------------------------------------------
// Bad input: every class returns its status with a message and leaves outputs untouched.

/// A decompose problem with poisoned outputs; `check` runs a call and asserts nothing changed.
struct Poisoned {
    w: Vec<f32>,
    uh: Vec<f32>,
    sh: Vec<f32>,
    vh: Vec<f32>,
    out: Vec<f64>,
}

impl Poisoned {
    fn new() -> Self {
        let mut g = seeded(23);
        Poisoned {
            w: g.uniform_vec(24).into_iter().map(|v| v as f32).collect(),
            uh: vec![f32::from_bits(0x7fc0_dead); 12],
            sh: vec![f32::from_bits(0x7fc0_beef); 2],
            vh: vec![f32::from_bits(0x7fc0_f00d); 8],
            out: vec![f64::from_bits(0x7ff8_0000_dead_beef); 4],
        }
    }
    fn snapshot(&self) -> Vec<u8> {
        [bytes_of(&self.w), bytes_of(&self.uh), bytes_of(&self.sh), bytes_of(&self.vh), bytes_of(&self.out)].concat()
    }
    fn w(&self) -> osft_matrix {
        rm(&self.w, F32, 6, 4)
    }
    fn uh(&self) -> osft_matrix {
        rm(&self.uh, F32, 6, 2)
    }
    fn sh(&self) -> osft_matrix {
        rm(&self.sh, F32, 2, 1)
    }
    fn vh(&self) -> osft_matrix {
        rm(&self.vh, F32, 2, 4)
    }
}

#[track_caller]
fn rejected(p: &Poisoned, want: osft_status, call: impl FnOnce() -> osft_status) -> String {
    let before = p.snapshot();
    let m = expect(call(), want);
    assert_eq!(p.snapshot(), before, "{want:?} call wrote a buffer ({m})");
    m
}

#[test]
fn bad_inputs_leave_buffers_untouched() {
    let c = Ctx::cpu();
    let p = Poisoned::new();
    let (w, uh, sh, vh) = (p.w(), p.uh(), p.sh(), p.vh());
    let dec = |w: &osft_matrix, k: i64, uh: &osft_matrix, sh: &osft_matrix, vh: &osft_matrix| unsafe {
        osft_decompose(c.0, w, k, uh, sh, vh, null(), null(), null(), F32)
    };
    // Sanity: the poisoned problem itself is valid (run on copies so `p` stays poisoned).
    {
        let q = Poisoned::new();
        expect(dec(&q.w(), 2, &q.uh(), &q.sh(), &q.vh()), OSFT_STATUS_OK);
        assert!(q.sh[0] >= q.sh[1] && q.sh[1] > 0.0);
    }
    // Null handle and null descriptors.
    rejected(&p, OSFT_STATUS_NULL_POINTER, || unsafe {
        osft_decompose(null_mut(), &w, 2, &uh, &sh, &vh, null(), null(), null(), F32)
    });
    rejected(&p, OSFT_STATUS_NULL_POINTER, || unsafe {
        osft_decompose(c.0, null(), 2, &uh, &sh, &vh, null(), null(), null(), F32)
    });
    rejected(&p, OSFT_STATUS_NULL_POINTER, || unsafe { osft_svd(c.0, &w, &uh, null(), null(), F32) });
    // Null data.
    let mut bad = uh;
    bad.data = null_mut();
    rejected(&p, OSFT_STATUS_NULL_POINTER, || dec(&w, 2, &bad, &sh, &vh));
    // Bad sizes: negative rows, wrong shape, zero batch.
    let mut bad = uh;
    bad.rows = -6;
    let m = rejected(&p, OSFT_STATUS_INVALID_SHAPE, || dec(&w, 2, &bad, &sh, &vh));
    assert!(m.contains("rows") && m.contains("U_high"), "{m}");
    let mut bad = uh;
    bad.rows = 3;
    let m = rejected(&p, OSFT_STATUS_INVALID_SHAPE, || dec(&w, 2, &bad, &sh, &vh));
    assert!(m.contains("expected 6 x 2"), "{m}");
    let mut bad = w;
    bad.batch = 0;
    rejected(&p, OSFT_STATUS_INVALID_SHAPE, || dec(&bad, 2, &uh, &sh, &vh));
    // Bad strides: negative, overlapping.
    let mut bad = vh;
    bad.col_stride = -1;
    let m = rejected(&p, OSFT_STATUS_INVALID_STRIDE, || dec(&w, 2, &uh, &sh, &bad));
    assert!(m.contains("col_stride"), "{m}");
    let mut bad = w;
    bad.batch_stride = -24;
    rejected(&p, OSFT_STATUS_INVALID_STRIDE, || dec(&bad, 2, &uh, &sh, &vh));
    let mut bad = uh;
    bad.row_stride = 1; // rows and columns overlap
    rejected(&p, OSFT_STATUS_OVERLAP, || dec(&w, 2, &bad, &sh, &vh));
    // Outputs that share memory with each other or with W.
    let alias = rm(&p.uh, F32, 2, 4);
    rejected(&p, OSFT_STATUS_OVERLAP, || dec(&w, 2, &uh, &sh, &alias));
    let into_w = rm(&p.w, F32, 6, 2);
    rejected(&p, OSFT_STATUS_OVERLAP, || dec(&w, 2, &into_w, &sh, &vh));
    // Overflow of rows * stride.
    let mut bad = w;
    bad.rows = 1 << 40;
    bad.row_stride = 1 << 40;
    rejected(&p, OSFT_STATUS_OVERFLOW, || dec(&bad, 2, &uh, &sh, &vh));
    let mut bad = w;
    bad.batch = 1 << 62;
    bad.batch_stride = 1 << 62;
    rejected(&p, OSFT_STATUS_OVERFLOW, || dec(&bad, 2, &uh, &sh, &vh));
    // Misaligned data.
    let mut bad = w;
    bad.data = (p.w.as_ptr() as usize + 2) as *mut c_void;
    rejected(&p, OSFT_STATUS_MISALIGNED, || dec(&bad, 2, &uh, &sh, &vh));
    // Dtypes: unknown, unsupported compute, mismatch between basis and X.
    let mut bad = w;
    bad.dtype = 9;
    rejected(&p, OSFT_STATUS_DTYPE_UNSUPPORTED, || dec(&bad, 2, &uh, &sh, &vh));
    rejected(&p, OSFT_STATUS_DTYPE_UNSUPPORTED, || unsafe {
        osft_decompose(c.0, &w, 2, &uh, &sh, &vh, null(), null(), null(), osft_dtype::OSFT_DTYPE_F16 as i32)
    });
    rejected(&p, OSFT_STATUS_DTYPE_UNSUPPORTED, || unsafe {
        osft_decompose(c.0, &w, 2, &uh, &sh, &vh, null(), null(), null(), 42)
    });
    let basis64 = vec![0f64; 12];
    let x = rm(&p.uh, F32, 6, 2);
    rejected(&p, OSFT_STATUS_DTYPE_UNSUPPORTED, || unsafe {
        osft_project(c.0, LEFT, &rm(&basis64, F64, 6, 2), null(), &x, null())
    });
    // k out of range.
    let m = rejected(&p, OSFT_STATUS_RANK_OUT_OF_RANGE, || dec(&w, 5, &uh, &sh, &vh));
    assert!(m.contains('5'), "{m}");
    rejected(&p, OSFT_STATUS_RANK_OUT_OF_RANGE, || dec(&w, -1, &uh, &sh, &vh));
    // A buffer on a CUDA device given to a CPU context; bad device fields.
    let mut bad = uh;
    bad.device = osft_device::OSFT_DEVICE_CUDA as i32;
    rejected(&p, OSFT_STATUS_DEVICE_MISMATCH, || dec(&w, 2, &bad, &sh, &vh));
    let mut bad = uh;
    bad.device = 5;
    rejected(&p, OSFT_STATUS_INVALID_ARGUMENT, || dec(&w, 2, &bad, &sh, &vh));
    let mut bad = uh;
    bad.device_ordinal = 1;
    rejected(&p, OSFT_STATUS_INVALID_ARGUMENT, || dec(&w, 2, &bad, &sh, &vh));
    let mut bad = uh;
    bad._reserved = 1;
    rejected(&p, OSFT_STATUS_INVALID_ARGUMENT, || dec(&w, 2, &bad, &sh, &vh));
    // Bad enum values.
    rejected(&p, OSFT_STATUS_INVALID_ARGUMENT, || unsafe { osft_project(c.0, 3, &uh, null(), &x, null()) });
    rejected(&p, OSFT_STATUS_NULL_POINTER, || unsafe { osft_project(c.0, RIGHT, &uh, null(), &x, null()) });
    // Result arrays: too short, NULL.
    let out = p.out.as_ptr() as *mut f64;
    rejected(&p, OSFT_STATUS_INVALID_SHAPE, || unsafe {
        osft_reconstruction_error(c.0, &w, &uh, &sh, &vh, null(), null(), null(), F32, out, 0)
    });
    rejected(&p, OSFT_STATUS_NULL_POINTER, || unsafe {
        osft_reconstruction_error(c.0, &w, &uh, &sh, &vh, null(), null(), null(), F32, null_mut(), 4)
    });
    rejected(&p, OSFT_STATUS_INVALID_SHAPE, || unsafe { osft_read_vector(c.0, &sh, out, 1) });
    rejected(&p, OSFT_STATUS_INVALID_ARGUMENT, || unsafe { osft_orthonormality_error(c.0, BOTH, &uh, out, 4) });
    rejected(&p, OSFT_STATUS_INVALID_SHAPE, || unsafe {
        osft_leakage(c.0, LEFT, &rm(&p.uh, F32, 6, 2), &rm(&p.w, F32, 4, 6), out, 4)
    });
    // A workspace too small: nothing written either.
    let mut small = vec![0u64; 4];
    unsafe { expect(osft_context_set_workspace(c.0, small.as_mut_ptr() as *mut c_void, 32), OSFT_STATUS_OK) };
    rejected(&p, OSFT_STATUS_WORKSPACE_TOO_SMALL, || dec(&w, 2, &uh, &sh, &vh));
    unsafe { expect(osft_context_release_workspace(c.0), OSFT_STATUS_OK) };
}

#[test]
fn caller_workspace() {
    let c = Ctx::cpu();
    let mut g = seeded(29);
    let w = g.uniform_vec(30);
    let wd = rm(&w, F64, 6, 5);
    let s = vec![0f64; 5];
    let sd = rm(&s, F64, 5, 1);
    unsafe {
        let mut need = 0usize;
        expect(osft_svd_workspace_size(c.0, &wd, F64, &mut need), OSFT_STATUS_OK);
        let mut buf = vec![0u64; need.div_ceil(8)];
        expect(osft_context_set_workspace(c.0, buf.as_mut_ptr() as *mut c_void, need), OSFT_STATUS_OK);
        let mut held = 0usize;
        expect(osft_context_workspace_bytes(c.0, &mut held), OSFT_STATUS_OK);
        assert_eq!(held, need);
        expect(osft_svd(c.0, &wd, null(), &sd, null(), F64), OSFT_STATUS_OK);
        let frob: f64 = w.iter().map(|v| v * v).sum();
        assert!((s.iter().map(|v| v * v).sum::<f64>() - frob).abs() < 1e-10 * frob);
        // Bad workspaces.
        expect(osft_context_set_workspace(c.0, null_mut(), 64), OSFT_STATUS_NULL_POINTER);
        expect(
            osft_context_set_workspace(c.0, (buf.as_mut_ptr() as usize + 4) as *mut c_void, 64),
            OSFT_STATUS_MISALIGNED,
        );
        expect(osft_context_release_workspace(c.0), OSFT_STATUS_OK);
        expect(osft_context_workspace_bytes(c.0, &mut held), OSFT_STATUS_OK);
        assert_eq!(held, 0);
        // The context allocates its own again.
        expect(osft_svd(c.0, &wd, null(), &sd, null(), F64), OSFT_STATUS_OK);
        expect(osft_context_workspace_bytes(c.0, &mut held), OSFT_STATUS_OK);
        assert!(held >= need);
    }
}

#[test]
fn descriptor_conversion_is_checked() {
    let c = Ctx::cpu();
    let v = vec![0f32; 4];
    let mut bytes = 123usize;
    let mut d = rm(&v, F32, 2, 2);
    unsafe {
        d.rows = i64::MIN;
        expect(osft_svd_workspace_size(c.0, &d, F32, &mut bytes), OSFT_STATUS_INVALID_SHAPE);
        d.rows = 2;
        d.batch = -1;
        expect(osft_svd_workspace_size(c.0, &d, F32, &mut bytes), OSFT_STATUS_INVALID_SHAPE);
        d.batch = 1;
        d.row_stride = i64::MIN;
        expect(osft_svd_workspace_size(c.0, &d, F32, &mut bytes), OSFT_STATUS_INVALID_STRIDE);
        d.row_stride = i64::MAX;
        expect(osft_svd_workspace_size(c.0, &d, F32, &mut bytes), OSFT_STATUS_OVERFLOW);
        // A misaligned descriptor pointer.
        let raw = [0u8; 80];
        let p = (raw.as_ptr() as usize | 1) as *const osft_matrix;
        expect(osft_svd_workspace_size(c.0, p, F32, &mut bytes), OSFT_STATUS_MISALIGNED);
    }
    assert_eq!(bytes, 123);
}

/// Regression: the workspace query of the reconstruction-error diagnostic once validated a
/// compute-type stand-in at `W`'s address for aliasing, so with f32 `W` and f64 compute it ran
/// past `W` into the next allocation (here `S`) and gave a spurious `OSFT_STATUS_OVERLAP`.
#[test]
fn reconstruction_error_f64_compute_of_f32_data() {
    let c = Ctx::cpu();
    // One allocation: W (4 x 4 f32) directly followed by U (4 x 1), S (1), V (1 x 4).
    let mut buf = [0f32; 16 + 4 + 1 + 4];
    for (i, v) in buf.iter_mut().enumerate() {
        *v = (i % 7) as f32 - 3.0;
    }
    let (w, rest) = buf.split_at(16);
    let (u, rest) = rest.split_at(4);
    let (s, v) = rest.split_at(1);
    let mut e = [f64::NAN; 2];
    unsafe {
        expect(
            osft_reconstruction_error(
                c.0,
                &rm(w, F32, 4, 4),
                &rm(u, F32, 4, 1),
                &rm(s, F32, 1, 1),
                &rm(v, F32, 1, 4),
                null(),
                null(),
                null(),
                F64,
                e.as_mut_ptr(),
                1,
            ),
            OSFT_STATUS_OK,
        );
    }
    // The value, against f64 arithmetic on the same (exactly representable) entries: this rank-1
    // term is far from W, so the error is of order 1, and a result of 0 is wrong.
    let want = recon_error_f64(w, 4, 4, &[(u, s, v)]);
    assert!(want > 0.1, "{want}");
    // f64 compute of f32 data: the data are exact in f64, so only f64 rounding, a few ulps of the
    // O(1) result, separates the two.
    assert!((e[0] - want).abs() <= 64.0 * f64::EPSILON * want, "got {}, want {want}", e[0]);
    assert!(e[1].is_nan(), "wrote past out_len");
}

/// `||W - sum_t U_t diag(S_t) V_t||_F / ||W||_F` in f64 over row-major f32 operands.
fn recon_error_f64(w: &[f32], n: usize, m: usize, terms: &[(&[f32], &[f32], &[f32])]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for i in 0..n {
        for j in 0..m {
            let mut r = w[i * m + j] as f64;
            den += r * r;
            for (u, s, v) in terms {
                let k = s.len();
                for t in 0..k {
                    r -= u[i * k + t] as f64 * s[t] as f64 * v[t * m + j] as f64;
                }
            }
            num += r * r;
        }
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Reconstruction error with a compute type other than the data's, both ways (f32 data in f64,
/// f64 data in f32) and equal, over a batch of two, with a split into a high and a low term
/// that reconstructs W only approximately: each value against the f64 reference.
#[test]
fn reconstruction_error_value_for_every_compute_type() {
    let c = Ctx::cpu();
    let mut g = seeded(0x0005_eed0_fe77);
    let (n, m, kh, kl) = (6usize, 5usize, 2usize, 2usize);
    // Two batch entries of each operand, row-major, entries exact in f32.
    let w = g.uniform_vec32(2 * n * m);
    let uh = g.uniform_vec32(2 * n * kh);
    let sh: Vec<f32> = g.uniform_vec32(2 * kh).iter().map(|x| x.abs() + 0.5).collect();
    let vh = g.uniform_vec32(2 * kh * m);
    let ul = g.uniform_vec32(2 * n * kl);
    let sl: Vec<f32> = g.uniform_vec32(2 * kl).iter().map(|x| x.abs()).collect();
    let vl = g.uniform_vec32(2 * kl * m);
    let want: Vec<f64> = (0..2)
        .map(|b| {
            recon_error_f64(
                &w[b * n * m..][..n * m],
                n,
                m,
                &[
                    (&uh[b * n * kh..][..n * kh], &sh[b * kh..][..kh], &vh[b * kh * m..][..kh * m]),
                    (&ul[b * n * kl..][..n * kl], &sl[b * kl..][..kl], &vl[b * kl * m..][..kl * m]),
                ],
            )
        })
        .collect();
    assert!(want.iter().all(|v| *v > 0.1), "{want:?}");
    let to64 = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
    let w64 = to64(&w);
    let (uh64, sh64, vh64, ul64, sl64, vl64) = (to64(&uh), to64(&sh), to64(&vh), to64(&ul), to64(&sl), to64(&vl));
    for (data, compute) in [(F32, F64), (F64, F32), (F32, F32), (F64, F64)] {
        let d = |v32: &[f32], v64: &[f64], r: usize, cc: usize| {
            let one = if data == F32 { rm(v32, F32, r as i64, cc as i64) } else { rm(v64, F64, r as i64, cc as i64) };
            batched(one, 2, (r * cc) as i64)
        };
        let (wd, uhd, shd, vhd) = (d(&w, &w64, n, m), d(&uh, &uh64, n, kh), d(&sh, &sh64, kh, 1), d(&vh, &vh64, kh, m));
        let (uld, sld, vld) = (d(&ul, &ul64, n, kl), d(&sl, &sl64, kl, 1), d(&vl, &vl64, kl, m));
        let mut e = [f64::NAN; 3];
        unsafe {
            expect(
                osft_reconstruction_error(c.0, &wd, &uhd, &shd, &vhd, &uld, &sld, &vld, compute, e.as_mut_ptr(), 2),
                OSFT_STATUS_OK,
            );
        }
        // The data are exact in either type, so the error comes from the compute type's rounding
        // of the products and sums: (kh + kl + 2) roundings of O(1) terms per element, relative.
        let uc = if compute == F32 { f32::EPSILON as f64 / 2.0 } else { f64::EPSILON / 2.0 };
        let tol = 8.0 * (kh + kl + 2) as f64 * uc;
        for b in 0..2 {
            assert!(
                (e[b] - want[b]).abs() <= tol * want[b].max(1.0),
                "data {data} compute {compute} batch {b}: got {}, want {}",
                e[b],
                want[b]
            );
        }
        assert!(e[2].is_nan(), "wrote past out_len");
    }
}

/// The SVD's sign convention through the C ABI: in each column of U the entry of largest
/// magnitude is positive and the row of Vt flips with it, so that U diag(S) Vt is still W; and
/// U, S, Vt equal an independent f64 one-sided Jacobi SVD with the same convention applied.
#[test]
fn svd_sign_convention_against_f64_jacobi() {
    let c = Ctx::cpu();
    let mut g = seeded(0x51_6e_f1);
    for (n, m) in [(7usize, 4usize), (4, 7), (5, 5), (1, 6), (6, 1), (9, 3)] {
        let r = n.min(m);
        for dtype in [F32, F64] {
            for col_major in [false, true] {
                let wv = g.uniform_vec(n * m);
                let wref = osft_test_support::M { r: n, c: m, d: wv.clone() }; // row-major values
                let what = format!("{n}x{m} dtype {dtype} col_major {col_major}");
                // W in the requested layout; outputs row-major.
                let wl: Vec<f64> = if col_major { wref.t().d.clone() } else { wv.clone() };
                let wl32: Vec<f32> = wl.iter().map(|x| *x as f32).collect();
                let (u64v, s64v, vt64v) = (vec![f64::NAN; n * r], vec![f64::NAN; r], vec![f64::NAN; r * m]);
                let (u32v, s32v, vt32v) = (vec![f32::NAN; n * r], vec![f32::NAN; r], vec![f32::NAN; r * m]);
                let wd = match (dtype == F32, col_major) {
                    (true, false) => rm(&wl32, F32, n as i64, m as i64),
                    (true, true) => cm(&wl32, F32, n as i64, m as i64),
                    (false, false) => rm(&wl, F64, n as i64, m as i64),
                    (false, true) => cm(&wl, F64, n as i64, m as i64),
                };
                let (ud, sd, vtd) = if dtype == F32 {
                    (
                        rm(&u32v, F32, n as i64, r as i64),
                        rm(&s32v, F32, r as i64, 1),
                        rm(&vt32v, F32, r as i64, m as i64),
                    )
                } else {
                    (
                        rm(&u64v, F64, n as i64, r as i64),
                        rm(&s64v, F64, r as i64, 1),
                        rm(&vt64v, F64, r as i64, m as i64),
                    )
                };
                unsafe { expect(osft_svd(c.0, &wd, &ud, &sd, &vtd, dtype), OSFT_STATUS_OK) };
                let (u, s, vt) = if dtype == F32 {
                    let f = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
                    (f(&u32v), f(&s32v), f(&vt32v))
                } else {
                    (u64v.clone(), s64v.clone(), vt64v.clone())
                };
                let um = osft_test_support::M { r: n, c: r, d: u };
                let vtm = osft_test_support::M { r, c: m, d: vt };
                // The f64 reference of the very matrix the library saw (f32-rounded for f32).
                let wseen = if dtype == F32 { wref.round::<f32>() } else { wref.clone() };
                let (ur, sr, vtr) = osft_test_support::jacobi_svd(&wseen);
                assert!(
                    osft_test_support::sign_violations(&um).is_empty(),
                    "{what}: columns of U with a negative largest entry: {:?}",
                    osft_test_support::sign_violations(&um)
                );
                // Rows of Vt flipped along: U diag(S) Vt is W.
                let rec = um.mul(&vtm.scale_rows(&s));
                let uc = if dtype == F32 { f32::EPSILON as f64 / 2.0 } else { f64::EPSILON / 2.0 };
                // Backward error of a one-sided SVD: O((n + m) u) ||W||.
                let scale = wseen.fro();
                assert!(rec.sub(&wseen).fro() <= 16.0 * (n + m) as f64 * uc * scale, "{what}: U S Vt is not W");
                for t in 0..r {
                    assert!(
                        (s[t] - sr[t]).abs() <= 16.0 * (n + m) as f64 * uc * scale,
                        "{what}: s[{t}] {} vs {}",
                        s[t],
                        sr[t]
                    );
                    // Singular vectors: perturbation O(u ||W|| / gap) (Wedin); a wrong sign is off by 2.
                    let gap = (0..r)
                        .filter(|&q| q != t)
                        .map(|q| (sr[q] - sr[t]).abs())
                        .fold(sr[t].max(scale * 1e-300), f64::min);
                    let gap = if r == 1 { scale } else { gap };
                    let tol = (16.0 * (n + m) as f64 * uc * scale / gap).min(0.5);
                    let du = (0..n).map(|i| (um.at(i, t) - ur.at(i, t)).abs()).fold(0.0, f64::max);
                    let dv = (0..m).map(|j| (vtm.at(t, j) - vtr.at(t, j)).abs()).fold(0.0, f64::max);
                    assert!(du <= tol && dv <= tol, "{what}: triplet {t}: |dU| {du:e}, |dVt| {dv:e}, tol {tol:e}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SVD algorithm and math mode settings.

#[test]
fn svd_algorithm_and_math_mode_settings() {
    let c = Ctx::cpu();
    unsafe {
        let mut v = -5i32;
        expect(osft_context_get_svd_algorithm(c.0, &mut v), OSFT_STATUS_OK);
        assert_eq!(v, osft_svd_algorithm::OSFT_SVD_AUTO as i32);
        expect(osft_context_get_math_mode(c.0, &mut v), OSFT_STATUS_OK);
        assert_eq!(v, osft_math_mode::OSFT_MATH_EXACT as i32);
        for a in 0..=6 {
            expect(osft_context_set_svd_algorithm(c.0, a), OSFT_STATUS_OK);
            expect(osft_context_get_svd_algorithm(c.0, &mut v), OSFT_STATUS_OK);
            assert_eq!(v, a);
        }
        for m in 0..=2 {
            expect(osft_context_set_math_mode(c.0, m), OSFT_STATUS_OK);
            expect(osft_context_get_math_mode(c.0, &mut v), OSFT_STATUS_OK);
            assert_eq!(v, m);
        }
        // Unknown values: INVALID_ARGUMENT naming the value; the setting is as it was.
        expect(osft_context_set_svd_algorithm(c.0, 3), OSFT_STATUS_OK);
        for bad in [7, -1, i32::MIN, i32::MAX] {
            let msg = expect(osft_context_set_svd_algorithm(c.0, bad), OSFT_STATUS_INVALID_ARGUMENT);
            assert!(msg.contains(&bad.to_string()) && msg.contains("svd algorithm"), "{msg}");
            let msg = expect(osft_context_set_math_mode(c.0, bad), OSFT_STATUS_INVALID_ARGUMENT);
            assert!(msg.contains(&bad.to_string()) && msg.contains("math mode"), "{msg}");
        }
        let mut a = -5i32;
        expect(osft_context_get_svd_algorithm(c.0, &mut a), OSFT_STATUS_OK);
        expect(osft_context_get_math_mode(c.0, &mut v), OSFT_STATUS_OK);
        assert_eq!((a, v), (3, 2));
        // NULL handles and outputs.
        let mut untouched = 77i32;
        expect(osft_context_set_svd_algorithm(null_mut(), 0), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_set_math_mode(null_mut(), 0), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_get_svd_algorithm(null(), &mut untouched), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_get_math_mode(null(), &mut untouched), OSFT_STATUS_NULL_POINTER);
        assert_eq!(untouched, 77);
        expect(osft_context_get_svd_algorithm(c.0, null_mut()), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_get_math_mode(c.0, null_mut()), OSFT_STATUS_NULL_POINTER);
    }
}

#[test]
fn svd_diagnostics_setting() {
    let c = Ctx::cpu();
    unsafe {
        let mut v = -5i32;
        expect(osft_context_get_svd_diagnostics(c.0, &mut v), OSFT_STATUS_OK);
        assert_eq!(v, 0, "diagnostics are off by default");
        for on in [1, 0, 1] {
            expect(osft_context_set_svd_diagnostics(c.0, on), OSFT_STATUS_OK);
            expect(osft_context_get_svd_diagnostics(c.0, &mut v), OSFT_STATUS_OK);
            assert_eq!(v, on);
        }
        // Anything but 0 or 1: INVALID_ARGUMENT naming the value; the setting is as it was (on).
        for bad in [2, -1, i32::MIN, i32::MAX] {
            let msg = expect(osft_context_set_svd_diagnostics(c.0, bad), OSFT_STATUS_INVALID_ARGUMENT);
            assert!(msg.contains(&bad.to_string()) && msg.contains("diagnostics"), "{msg}");
            expect(osft_context_get_svd_diagnostics(c.0, &mut v), OSFT_STATUS_OK);
            assert_eq!(v, 1);
        }
        let mut untouched = 77i32;
        expect(osft_context_set_svd_diagnostics(null_mut(), 1), OSFT_STATUS_NULL_POINTER);
        expect(osft_context_get_svd_diagnostics(null(), &mut untouched), OSFT_STATUS_NULL_POINTER);
        assert_eq!(untouched, 77);
        expect(osft_context_get_svd_diagnostics(c.0, null_mut()), OSFT_STATUS_NULL_POINTER);
    }
}

#[test]
fn svd_algorithm_that_cannot_serve_the_call_is_refused_before_writing() {
    let c = Ctx::cpu();
    let (n, m, k) = (40i64, 13i64, 4i64);
    let r = n.min(m);
    let w: Vec<f64> = seeded(7).uniform_vec((n * m) as usize);
    let wd = rm(&w, F64, n, m);
    let (uh, sh, vh) = (poisoned64((n * k) as usize), poisoned64(k as usize), poisoned64((k * m) as usize));
    let (ul, sl, vl) =
        (poisoned64((n * (r - k)) as usize), poisoned64((r - k) as usize), poisoned64(((r - k) * m) as usize));
    let (uhd, shd, vhd) = (rm(&uh, F64, n, k), rm(&sh, F64, k, 1), rm(&vh, F64, k, m));
    let (uld, sld, vld) = (rm(&ul, F64, n, r - k), rm(&sl, F64, r - k, 1), rm(&vl, F64, r - k, m));
    let snapshot = |v: &[&Vec<f64>]| v.iter().map(|x| bytes_of(x)).collect::<Vec<_>>();
    let before = snapshot(&[&uh, &sh, &vh, &ul, &sl, &vl]);
    unsafe {
        let mut bytes = 5usize;
        // gesvdjBatched takes matrices up to 32 x 32.
        expect(osft_context_set_svd_algorithm(c.0, osft_svd_algorithm::OSFT_SVD_JACOBI_BATCHED as i32), OSFT_STATUS_OK);
        let msg =
            expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, &uld, &sld, &vld, F64), OSFT_STATUS_PRECONDITION);
        assert!(msg.contains("gesvdjBatched"), "{msg}");
        expect(osft_svd_workspace_size(c.0, &wd, F64, &mut bytes), OSFT_STATUS_PRECONDITION);
        assert_eq!(bytes, 5);
        // The randomized SVD serves only the top k: low parts or a plain SVD are refused.
        expect(osft_context_set_svd_algorithm(c.0, osft_svd_algorithm::OSFT_SVD_RANDOMIZED as i32), OSFT_STATUS_OK);
        let msg =
            expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, &uld, &sld, &vld, F64), OSFT_STATUS_INVALID_ARGUMENT);
        assert!(msg.contains("top k"), "{msg}");
        let s_full = poisoned64(r as usize);
        expect(osft_svd(c.0, &wd, null(), &rm(&s_full, F64, r, 1), null(), F64), OSFT_STATUS_INVALID_ARGUMENT);
        expect(osft_svd_workspace_size(c.0, &wd, F64, &mut bytes), OSFT_STATUS_INVALID_ARGUMENT);
        assert_eq!(bytes, 5);
        assert_eq!(before, snapshot(&[&uh, &sh, &vh, &ul, &sl, &vl]), "a refused call wrote an output");
        assert!(s_full.iter().all(|x| x.is_nan()));
        // With the low parts NULL it is served: the top k agree with the QR-based result.
        expect(osft_decompose_workspace_size(c.0, &wd, F64, &mut bytes), OSFT_STATUS_OK);
        expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, null(), null(), null(), F64), OSFT_STATUS_OK);
        let s_rand = sh.clone();
        expect(osft_context_set_svd_algorithm(c.0, osft_svd_algorithm::OSFT_SVD_QR as i32), OSFT_STATUS_OK);
        expect(osft_decompose(c.0, &wd, k, &uhd, &shd, &vhd, &uld, &sld, &vld, F64), OSFT_STATUS_OK);
        for i in 0..k as usize {
            assert!((s_rand[i] - sh[i]).abs() <= 1e-10 * sh[0], "S_high[{i}] {} vs {}", s_rand[i], sh[i]);
        }
    }
}

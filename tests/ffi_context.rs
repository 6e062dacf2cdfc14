//! Contexts through the C ABI: creation on each backend (CUDA where a GPU is usable, AUTO, bad
//! backends and devices, with `*out` untouched), streams on a CPU context, and the settings (SVD
//! algorithm, math mode, diagnostics): round trips, unknown values refused with the setting
//! kept, and an explicit SVD algorithm that cannot serve a call refused before anything is
//! written.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

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

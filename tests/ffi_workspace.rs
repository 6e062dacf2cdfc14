//! Memory through the C ABI: a caller's workspace (set, queried, released; refused when NULL or
//! misaligned), a workspace smaller than the query says refused by every op with nothing written
//! (and exactly the queried size enough), and an allocation that fails returned as
//! `OSFT_STATUS_ALLOCATION_FAILED` with nothing written.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

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
fn workspace_too_small_for_every_op() {
    let c = Ctx::cpu();
    let mut g = seeded(1);
    let (n, m, k) = (8i64, 6i64, 2i64);
    let u = basis(&c, 2, n as usize, k as usize);
    let x = g.uniform_vec((n * m) as usize);
    // A column-strided X (every other column): staged through the workspace.
    let xs = g.uniform_vec((n * m * 2) as usize);
    let xsd = mat(xs.as_ptr(), F64, n, m, 2 * m, 2);
    let out = poisoned64((n * m) as usize);
    let mut res = poisoned64(4);
    let (ud, xd, od) = (rm(&u, F64, n, k), rm(&x, F64, n, m), rm(&out, F64, n, m));
    let s = vec![1.0f64, 0.5];
    let v = g.uniform_vec((k * m) as usize);
    let (sd, vd) = (rm(&s, F64, k, 1), rm(&v, F64, k, m));
    let coef32 = vec![0.5f32; (k * m) as usize];
    let x16: Vec<osft::f16> = x.iter().map(|v| osft::f16::from_f64(*v)).collect();
    let u16: Vec<osft::f16> = u.iter().map(|v| osft::f16::from_f64(*v)).collect();
    let mut ws = vec![0u64; 2]; // 16 bytes
    unsafe {
        type Call<'a> = Box<dyn Fn(*mut usize) -> (osft_status, osft_status) + 'a>;
        let resp = res.as_mut_ptr();
        // Each: (query, call) with the same arguments.
        let calls: Vec<(&str, Call)> = vec![
            (
                "svd",
                Box::new(|b| {
                    (
                        osft_svd_workspace_size(c.0, &xd, F64, b),
                        osft_svd(c.0, &xd, null(), &rm(&out, F64, m, 1), null(), F64),
                    )
                }),
            ),
            (
                "project",
                Box::new(|b| {
                    (
                        osft_project_workspace_size(c.0, LEFT, &ud, null(), &xd, &od, b),
                        osft_project(c.0, LEFT, &ud, null(), &xd, &od),
                    )
                }),
            ),
            (
                "project strided in place",
                Box::new(|b| {
                    (
                        osft_project_workspace_size(c.0, LEFT, &ud, null(), &xsd, null(), b),
                        osft_project(c.0, LEFT, &ud, null(), &xsd, null()),
                    )
                }),
            ),
            (
                "reconstruct",
                Box::new(|b| {
                    (
                        osft_reconstruct_workspace_size(c.0, &ud, &sd, &vd, null(), null(), null(), &od, F32, b),
                        osft_reconstruct(c.0, &ud, &sd, &vd, null(), null(), null(), &od, F32),
                    )
                }),
            ),
            (
                "leakage",
                Box::new(|b| {
                    (osft_leakage_workspace_size(c.0, LEFT, &ud, &xd, b), osft_leakage(c.0, LEFT, &ud, &xd, resp, 4))
                }),
            ),
            (
                "orthonormality",
                Box::new(|b| {
                    (
                        osft_orthonormality_error_workspace_size(c.0, LEFT, &ud, b),
                        osft_orthonormality_error(c.0, LEFT, &ud, resp, 4),
                    )
                }),
            ),
            (
                "reconstruction error",
                Box::new(|b| {
                    (
                        osft_reconstruction_error_workspace_size(
                            c.0,
                            &xd,
                            &ud,
                            &sd,
                            &vd,
                            null(),
                            null(),
                            null(),
                            F64,
                            b,
                        ),
                        osft_reconstruction_error(c.0, &xd, &ud, &sd, &vd, null(), null(), null(), F64, resp, 4),
                    )
                }),
            ),
            (
                "layer importance",
                Box::new(|b| {
                    (
                        osft_layer_importance_workspace_size(c.0, &xd, &xd, F64, b),
                        osft_layer_importance(c.0, &xd, &xd, F64, resp, 4),
                    )
                }),
            ),
            (
                "read vector",
                Box::new(|b| (osft_read_vector_workspace_size(c.0, &sd, b), osft_read_vector(c.0, &sd, resp, 4))),
            ),
            (
                "apply with a cast of coef",
                Box::new(|b| {
                    let (x16d, u16d, cd) = (rm(&x16, F16, n, m), rm(&u16, F16, n, k), rm(&coef32, F32, k, m));
                    (
                        osft_project_apply_workspace_size(c.0, &cd, &x16d, b),
                        osft_project_apply(c.0, LEFT, &u16d, &cd, &x16d),
                    )
                }),
            ),
        ];
        for (name, call) in &calls {
            let mut need = 0usize;
            let (q, _) = (call(&mut need), ());
            expect(q.0, OSFT_STATUS_OK);
            assert!(need > 16, "{name}: needs {need} bytes");
            let _ = q; // the query ran the call once with the context's own workspace; redo below
            let before = snap(&[&bytes_of(&out), &bytes_of(&res), &bytes_of(&x16), &bytes_of(&xs)]);
            expect(osft_context_set_workspace(c.0, ws.as_mut_ptr() as *mut c_void, 16), OSFT_STATUS_OK);
            let mut dummy = 0usize;
            let (_, st) = call(&mut dummy);
            let m = expect(st, OSFT_STATUS_WORKSPACE_TOO_SMALL);
            assert!(m.contains(&need.to_string()) || name.contains("svd"), "{name}: {m}");
            assert_eq!(
                before,
                snap(&[&bytes_of(&out), &bytes_of(&res), &bytes_of(&x16), &bytes_of(&xs)]),
                "{name}: rejected but wrote"
            );
            // Exactly the queried size is enough.
            let mut big = vec![0u64; need.div_ceil(8)];
            expect(osft_context_set_workspace(c.0, big.as_mut_ptr() as *mut c_void, need), OSFT_STATUS_OK);
            let (_, st) = call(&mut dummy);
            expect(st, OSFT_STATUS_OK);
            expect(osft_context_release_workspace(c.0), OSFT_STATUS_OK);
            res.fill(f64::from_bits(0x7ff8_0000_dead_beef));
        }
    }
}

#[test]
fn allocation_failure_is_a_status() {
    // A cached projector of a 2^20-row basis is 2^40 elements (4 TiB): the allocation fails
    // (under the kernel's default heuristic overcommit; skipped where overcommit is unlimited).
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if overcommit.trim() == "1" {
        eprintln!("skipped: vm.overcommit_memory = 1 would let a 4 TiB allocation succeed");
        return;
    }
    let c = Ctx::cpu();
    let n = 1i64 << 20;
    let u = vec![0f32; n as usize];
    let mut p = 0x88 as *mut osft_projector;
    unsafe {
        let m = expect(
            osft_projector_create(c.0, LEFT, &cm(&u, F32, n, 1), null(), 2, &mut p),
            OSFT_STATUS_ALLOCATION_FAILED,
        );
        assert!(m.contains("allocation"), "{m}");
        assert_eq!(p as usize, 0x88);
        // AUTO keeps to the coefficient form for such a basis (the projector would exceed 64 MiB).
        expect(osft_projector_create(c.0, LEFT, &cm(&u, F32, n, 1), null(), 0, &mut p), OSFT_STATUS_OK);
        osft_projector_destroy(p);
    }
}

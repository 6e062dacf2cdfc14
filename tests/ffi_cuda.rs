//! The C ABI on a CUDA context: device descriptors through the exported functions, against the
//! same calls on a CPU context. The GPU test is `#[ignore]`d, so a machine without a GPU reports it
//! as not run rather than passed; the device check (scripts/device-check.sh) runs it on a GPU with
//! `--include-ignored`, where an unusable CUDA context is a failure. Device memory is allocated and
//! copied with the Rust API's CUDA executor (the same primary context the C ABI's context uses).
#![cfg(feature = "cuda")]

use std::ffi::{c_void, CStr};
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;

const F32: i32 = osft_dtype::OSFT_DTYPE_F32 as i32;
const LEFT: i32 = osft_side::OSFT_SIDE_LEFT as i32;

fn msg() -> String {
    unsafe { CStr::from_ptr(osft_last_error_message()) }.to_string_lossy().into_owned()
}

#[track_caller]
fn ok(st: osft_status) {
    assert_eq!(st, OSFT_STATUS_OK, "{}", msg());
}

fn desc(addr: usize, rows: i64, cols: i64, cuda: bool) -> osft_matrix {
    osft_matrix {
        data: addr as *mut c_void,
        dtype: F32,
        device: if cuda { osft_device::OSFT_DEVICE_CUDA as i32 } else { osft_device::OSFT_DEVICE_HOST as i32 },
        device_ordinal: 0,
        _reserved: 0,
        rows,
        cols,
        row_stride: cols,
        col_stride: 1,
        batch: 1,
        batch_stride: 0,
    }
}

fn as_bytes(v: &[f32]) -> &[u8] {
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4) }
}

/// Runs everywhere: a CUDA context either opens as one, or is refused with
/// `OSFT_STATUS_BACKEND_UNAVAILABLE`, a message, and no handle written.
#[test]
fn cuda_context_opens_or_is_backend_unavailable() {
    let mut gpu = null_mut();
    let st = unsafe { osft_context_create(osft_backend::OSFT_BACKEND_CUDA as i32, 0, &mut gpu) };
    if st == OSFT_STATUS_OK {
        let mut b = -1;
        unsafe { ok(osft_context_backend(gpu, &mut b)) };
        assert_eq!(b, osft_backend::OSFT_BACKEND_CUDA as i32);
        unsafe { osft_context_destroy(gpu) };
    } else {
        assert_eq!(st, OSFT_STATUS_BACKEND_UNAVAILABLE, "{}", msg());
        assert!(!msg().is_empty());
        assert!(gpu.is_null());
    }
}

#[test]
#[ignore = "not run: no GPU (needs an NVIDIA GPU; scripts/device-check.sh runs it)"]
fn cuda_context_through_the_c_abi() {
    let mut gpu = null_mut();
    let st = unsafe { osft_context_create(osft_backend::OSFT_BACKEND_CUDA as i32, 0, &mut gpu) };
    assert_eq!(st, OSFT_STATUS_OK, "this test needs a usable GPU: {}", msg());
    let mut cpu = null_mut();
    unsafe { ok(osft_context_create(osft_backend::OSFT_BACKEND_CPU as i32, 0, &mut cpu)) };
    let mut b = -1;
    unsafe { ok(osft_context_backend(gpu, &mut b)) };
    assert_eq!(b, osft_backend::OSFT_BACKEND_CUDA as i32);
    let mut s: *mut c_void = std::ptr::dangling_mut();
    unsafe {
        ok(osft_context_get_stream(gpu, &mut s));
        assert!(s.is_null(), "a new CUDA context runs on the legacy default stream");
        ok(osft_context_set_stream(gpu, null_mut()));
    }

    let dev = osft::Context::cuda(0).expect("the Rust API sees the GPU the C ABI sees");
    let e = dev.executor();
    let (n, m, k) = (64i64, 48i64, 12i64);
    let mut seed = 99u64;
    let mut rnd = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let w: Vec<f32> = (0..n * m).map(|_| rnd()).collect();
    let x: Vec<f32> = (0..n * m).map(|_| rnd()).collect();
    let up = |v: &[f32]| {
        let buf = e.alloc(v.len() * 4).unwrap();
        unsafe { e.write_from_host(as_bytes(v), buf.addr).unwrap() };
        buf
    };
    let down = |addr: usize, len: usize| {
        let mut bytes = vec![0u8; len * 4];
        unsafe { e.read_to_host(addr, &mut bytes).unwrap() };
        bytes.chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect::<Vec<f32>>()
    };
    let (dw, dx) = (up(&w), up(&x));
    let (duh, dsh) = (e.alloc((n * k * 4) as usize).unwrap(), e.alloc((k * 4) as usize).unwrap());

    // The same decomposition on both contexts.
    let (uh, sh) = (vec![0f32; (n * k) as usize], vec![0f32; k as usize]);
    unsafe {
        ok(osft_decompose(
            cpu,
            &desc(w.as_ptr() as usize, n, m, false),
            k,
            &desc(uh.as_ptr() as usize, n, k, false),
            &desc(sh.as_ptr() as usize, k, 1, false),
            null(),
            null(),
            null(),
            null(),
            F32,
        ));
        ok(osft_decompose(
            gpu,
            &desc(dw.addr, n, m, true),
            k,
            &desc(duh.addr, n, k, true),
            &desc(dsh.addr, k, 1, true),
            null(),
            null(),
            null(),
            null(),
            F32,
        ));
    }
    let mut s_gpu = vec![f64::NAN; k as usize];
    unsafe { ok(osft_read_vector(gpu, &desc(dsh.addr, k, 1, true), s_gpu.as_mut_ptr(), k as usize)) };
    for t in 0..k as usize {
        assert!((s_gpu[t] - sh[t] as f64).abs() < 1e-4 * sh[0] as f64, "S[{t}]: gpu {} cpu {}", s_gpu[t], sh[t]);
    }
    let uh_gpu = down(duh.addr, (n * k) as usize);
    for (a, b) in uh_gpu.iter().zip(&uh) {
        assert!((a - b).abs() < 1e-3, "U_high differs: gpu {a} cpu {b} (same sign convention on both)");
    }

    // Project X left on both, in place; compare; leakage on the GPU.
    let xc = x.clone();
    unsafe {
        ok(osft_project(
            cpu,
            LEFT,
            &desc(uh.as_ptr() as usize, n, k, false),
            null(),
            &desc(xc.as_ptr() as usize, n, m, false),
            null(),
        ));
        ok(osft_project(gpu, LEFT, &desc(duh.addr, n, k, true), null(), &desc(dx.addr, n, m, true), null()));
    }
    let xg = down(dx.addr, (n * m) as usize);
    for (a, b) in xg.iter().zip(&xc) {
        assert!((a - b).abs() < 1e-3, "projected X differs: gpu {a} cpu {b}");
    }
    let mut leak = [f64::NAN];
    unsafe {
        ok(osft_leakage(gpu, LEFT, &desc(duh.addr, n, k, true), &desc(dx.addr, n, m, true), leak.as_mut_ptr(), 1))
    };
    assert!(leak[0] < 1e-5, "leakage on the GPU {}", leak[0]);

    // A projector on the GPU.
    let dy = up(&x);
    let mut p = null_mut();
    unsafe {
        ok(osft_projector_create(
            gpu,
            LEFT,
            &desc(duh.addr, n, k, true),
            null(),
            osft_strategy::OSFT_STRATEGY_AUTO as i32,
            &mut p,
        ));
        ok(osft_projector_apply(p, &desc(dy.addr, n, m, true), null()));
        osft_projector_destroy(p);
    }
    let yg = down(dy.addr, (n * m) as usize);
    for (a, b) in yg.iter().zip(&xc) {
        assert!((a - b).abs() < 1e-3);
    }

    // Host memory given to the CUDA context is a device mismatch, and nothing is written.
    let host_x = x.clone();
    let st = unsafe {
        osft_project(
            gpu,
            LEFT,
            &desc(duh.addr, n, k, true),
            null(),
            &desc(host_x.as_ptr() as usize, n, m, false),
            null(),
        )
    };
    assert_eq!(st, OSFT_STATUS_DEVICE_MISMATCH, "{}", msg());
    assert_eq!(host_x, x);

    drop((dw, dx, dy, duh, dsh));
    unsafe {
        osft_context_destroy(gpu);
        osft_context_destroy(cpu);
    }
}

//! Bad input through the C ABI, class by class: NULL handles and outputs; every descriptor and
//! argument fault (NULL data, sizes, strides, overlap, overflow, alignment, dtype, rank, device,
//! enum values, result arrays, workspace) on one decompose problem whose poisoned buffers must
//! stay byte for byte untouched; descriptor conversion of extreme int64 fields; extents that
//! pass the end of the address space. Each refusal has its status and a message.

use std::ffi::c_void;
use std::ptr::{null, null_mut};

use osft::ffi::osft_status::*;
use osft::ffi::*;
use osft_test_support::capi::*;
use osft_test_support::{seeded, Draw};

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

#[test]
fn addresses_near_the_end_of_the_address_space() {
    let c = Ctx::cpu();
    let mut bytes = 7usize;
    unsafe {
        // The extent from the data pointer wraps past the end of the address space.
        let top = (usize::MAX - 63) as *const f64;
        expect(osft_read_vector_workspace_size(c.0, &mat(top, F64, 16, 1, 1, 1), &mut bytes), OSFT_STATUS_OVERFLOW);
        expect(osft_svd_workspace_size(c.0, &mat(top, F64, 4, 4, 4, 1), F64, &mut bytes), OSFT_STATUS_OVERFLOW);
        // A batch stride that overflows int64 arithmetic, and sizes that do not fit isize.
        let v = [0f64; 4];
        expect(
            osft_svd_workspace_size(c.0, &batched(rm(&v, F64, 2, 2), i64::MAX, i64::MAX), F64, &mut bytes),
            OSFT_STATUS_OVERFLOW,
        );
        expect(
            osft_svd_workspace_size(c.0, &mat(v.as_ptr(), F64, 1 << 61, 1, 1, 1), F64, &mut bytes),
            OSFT_STATUS_OVERFLOW,
        );
        expect(
            osft_svd_workspace_size(c.0, &mat(v.as_ptr(), F16, 1 << 62, 1, 1, 1), F64, &mut bytes),
            OSFT_STATUS_OVERFLOW,
        );
    }
    assert_eq!(bytes, 7);
}

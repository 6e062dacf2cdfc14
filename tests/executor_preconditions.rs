//! Each element-wise executor primitive has one shared precondition check (`AxpbyArgs::check`,
//! `SignFixArgs::check`, `check_cosine`, `check_add_diagonal`) that every executor calls first,
//! so the CPU refuses exactly what the CUDA kernels cannot do. These tests call the CPU
//! executor directly with calls the check must refuse, and confirm nothing was written.

use osft::exec::cpu::CpuExecutor;
use osft::exec::{check_add_diagonal, check_cosine, AxpbyArgs, Executor, SignFixArgs, Strided, Strided2d, Vectors};
use osft::{DType, Error};

fn precondition<T: std::fmt::Debug>(r: osft::Result<T>, what: &str) {
    match r {
        Err(Error::Precondition { .. }) => {}
        other => panic!("{what}: expected a precondition error, got {other:?}"),
    }
}

fn strided2d(v: &[f32], row_stride: usize, col_stride: usize) -> Strided2d {
    Strided2d { addr: v.as_ptr() as usize, dtype: DType::F32, row_stride, col_stride, batch_stride: 0 }
}

#[test]
fn axpby_refuses_overlapping_src_and_dst_but_allows_in_place_and_disjoint() {
    let mut buf: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let before = buf.clone();
    // A 2 x 4 row-major matrix and the same one shifted by one element: they share memory.
    let src = strided2d(&buf, 4, 1);
    let dst = Strided2d { addr: src.addr + 4, ..src };
    let args = AxpbyArgs { rows: 2, cols: 4, batch: 1, alpha: 1.0, src, beta: 0.0, dst };
    precondition(args.check(), "overlapping axpby");
    // SAFETY: both descriptors lie inside `buf` (at most 1 + 7 + 1 elements from its start).
    precondition(unsafe { CpuExecutor.axpby(&args) }, "overlapping axpby on the CPU");
    assert_eq!(buf, before, "a refused axpby wrote");

    // In place (the same matrix) and alpha = 0 (src not read) are allowed.
    let scale = AxpbyArgs { alpha: 2.0, dst: src, beta: 0.0, ..args };
    scale.check().unwrap();
    // SAFETY: as above.
    unsafe { CpuExecutor.axpby(&scale) }.unwrap();
    assert_eq!(&buf[..8], &before[..8].iter().map(|x| 2.0 * x).collect::<Vec<_>>()[..]);
    AxpbyArgs { alpha: 0.0, ..args }.check().unwrap();

    // Disjoint halves of one buffer.
    let (lo, hi) = buf.split_at_mut(8);
    let src = strided2d(lo, 4, 1);
    let dst = strided2d(hi, 4, 1);
    let copy = AxpbyArgs { rows: 2, cols: 4, batch: 1, alpha: 1.0, src, beta: 0.0, dst };
    copy.check().unwrap();
    // SAFETY: each descriptor covers its own half.
    unsafe { CpuExecutor.axpby(&copy) }.unwrap();
    assert_eq!(lo, hi);
}

fn vectors(v: &[u16], dtype: DType) -> Vectors {
    Vectors { addr: v.as_ptr() as usize, dtype, len: 2, elem_stride: 1, vec_stride: 2, batch_stride: 4 }
}

#[test]
fn sign_fix_cosine_and_add_diagonal_take_f32_or_f64_only() {
    // Half-precision vectors: the CUDA kernels exist for f32/f64 only, so every executor refuses.
    let data = vec![0xbc00u16; 8]; // f16 -1.0
    let before = data.clone();
    let half = vectors(&data, DType::F16);
    let args = SignFixArgs { count: 2, batch: 1, left: half, right: half };
    precondition(args.check(), "f16 sign fix");
    // SAFETY: two vectors of two f16 elements lie within `data`.
    precondition(unsafe { CpuExecutor.svd_sign_fix(&args) }, "f16 sign fix on the CPU");
    assert_eq!(data, before, "a refused sign fix wrote");

    precondition(check_cosine(&half, &half), "f16 cosine");
    // SAFETY: as above.
    precondition(unsafe { CpuExecutor.cosine_sum(&half, &half, 2) }, "f16 cosine on the CPU");
    let f32s = vec![0u16; 8];
    let mixed = vectors(&f32s, DType::F32);
    precondition(check_cosine(&mixed, &half), "mixed-type cosine");

    let a = Strided { addr: data.as_ptr() as usize, dtype: DType::F16, ld: 2, stride: 4 };
    precondition(check_add_diagonal(2, &a, 1), "f16 add_diagonal");
    // SAFETY: a 2 x 2 f16 matrix lies within `data`.
    precondition(unsafe { CpuExecutor.add_diagonal(2, &a, 1, 1.0) }, "f16 add_diagonal on the CPU");
    assert_eq!(data, before, "a refused add_diagonal wrote");
    let short = Strided { dtype: DType::F32, ld: 1, ..a };
    precondition(check_add_diagonal(2, &short, 1), "lda < n");
}

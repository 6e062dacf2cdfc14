//! Typed views address element `(b, i, j)` at `data[b * batch_stride + i * row_stride +
//! j * col_stride]`, as their constructors document, in every layout; `t()` swaps the indices.
//! The descriptors (`MatDesc`) they are made from: each constructor sets what it names.

use osft::{DType, Device, MatDesc, MatMut, MatRef};

/// Data whose every element is its own index, so a wrong address reads a wrong value.
fn indices(len: usize) -> Vec<f64> {
    (0..len).map(|x| x as f64).collect()
}

fn check(
    v: &MatRef<'_, f64>,
    data: &[f64],
    (batch, rows, cols): (usize, usize, usize),
    (rs, cs, bs): (usize, usize, usize),
) {
    for b in 0..batch {
        for i in 0..rows {
            for j in 0..cols {
                let want = data[b * bs + i * rs + j * cs];
                assert_eq!(v.get(b, i, j), want, "({b}, {i}, {j}) with strides {rs}, {cs}, {bs}");
                assert_eq!(v.t().get(b, j, i), want, "transposed ({b}, {j}, {i})");
            }
        }
    }
}

#[test]
fn every_layout_addresses_the_documented_element() {
    let data = indices(400);
    check(&MatRef::row_major(&data, 3, 5).unwrap(), &data, (1, 3, 5), (5, 1, 0));
    check(&MatRef::col_major(&data, 3, 5).unwrap(), &data, (1, 3, 5), (1, 3, 0));
    // Padded rows and columns, and a batch with a gap between matrices.
    check(&MatRef::strided(&data, 4, 3, 7, 2).unwrap(), &data, (1, 4, 3), (7, 2, 0));
    check(&MatRef::batched(&data, 3, 4, 5, 6, 1, 31).unwrap(), &data, (3, 4, 5), (6, 1, 31));
    check(&MatRef::batched(&data, 2, 5, 4, 1, 9, 50).unwrap(), &data, (2, 5, 4), (1, 9, 50));
    // A mutable view read through as_ref.
    let mut owned = data.clone();
    let m = MatMut::batched(&mut owned, 2, 3, 4, 4, 1, 13).unwrap();
    check(&m.as_ref(), &data, (2, 3, 4), (4, 1, 13));
}

#[test]
#[should_panic]
fn an_element_outside_the_view_panics() {
    let data = indices(12);
    MatRef::row_major(&data, 3, 4).unwrap().get(0, 3, 0);
}

/// The descriptor constructors set exactly the fields they name.
#[test]
fn descriptor_constructors_set_what_they_name() {
    let d = MatDesc::row_major(4096, DType::F32, 3, 5);
    assert_eq!((d.rows, d.cols, d.row_stride, d.col_stride, d.batch, d.batch_stride), (3, 5, 5, 1, 1, 0));
    let c = MatDesc::col_major(4096, DType::F64, 3, 5);
    assert_eq!((c.row_stride, c.col_stride, c.dtype), (1, 3, DType::F64));
    let b = d.with_batch(4, 17);
    assert_eq!((b.batch, b.batch_stride), (4, 17));
    assert_eq!(MatDesc { batch: 1, batch_stride: 0, ..b }, d);
    let g = d.with_device(Device::Cuda(1));
    assert_eq!(g.device, Device::Cuda(1));
    assert_eq!(MatDesc { device: d.device, ..g }, d);
    let t = d.t();
    assert_eq!((t.rows, t.cols, t.row_stride, t.col_stride, t.addr), (5, 3, 1, 5, 4096));
}

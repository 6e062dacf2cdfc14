//! Typed views address element `(b, i, j)` at `data[b * batch_stride + i * row_stride +
//! j * col_stride]`, as their constructors document, in every layout; `t()` swaps the indices.

use osft::{MatMut, MatRef};

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

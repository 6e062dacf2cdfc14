//! The aliasing oracle of the fuzz harness: which bytes an accepted call may write, and which
//! accepted calls must have been refused because an output shares memory with another operand.
//!
//! The rule is the library's documented one ("outputs must not share memory with each other or
//! with inputs", `docs/c-and-cpp.md`; `include/osft.h` on `osft_project`), with exactly two
//! kinds of exception, both for an output whose descriptor is *identical* to an input's (same
//! address, dtype, shape, strides, batch): the in-place projection (`out` identical to `X`,
//! documented in the header) and the SVD / decomposition, which stage `W` into the workspace
//! before writing any output (`check_disjoint_staged` in `src/desc.rs`). Any other sharing of a
//! byte — a partial overlap, an interleaved view, an identical descriptor elsewhere — must be
//! refused. The library's own test is on byte spans and so refuses more; the oracle only asks
//! that what truly aliases is refused.

use osft::ffi::osft_status::{self, OSFT_STATUS_OK};

use super::arena::Arena;
use super::operands::{elements, esize, plausible, Desc, Problem};
use super::R;

/// The byte ranges of a descriptor's elements in the arena (none for an absent or implausible
/// descriptor, which the library rejects before touching memory).
pub(super) fn footprint(a: &Arena, d: &Desc) -> Vec<std::ops::Range<usize>> {
    if d.absent || !plausible(d) {
        return vec![];
    }
    let Some(base) = a.at(d) else { return vec![] };
    let s = esize(d.m.dtype);
    elements(&d.m).into_iter().map(|(_, _, _, off)| base + off..base + off + s).collect()
}

/// Bytes that may change: the elements of the given output descriptors.
pub(super) fn writable(a: &Arena, p: &Problem, outs: &[usize]) -> Vec<bool> {
    let mut mask = vec![false; a.buf.len() * 8];
    for &i in outs {
        for r in footprint(a, &p.descs[i]) {
            mask[r].fill(true);
        }
    }
    mask
}

/// Same address and same layout: what the library takes as "the very descriptor" (its
/// `MatDesc` equality; the C fields map one to one).
fn identical(a: &Arena, x: &Desc, y: &Desc) -> bool {
    let (m, n) = (&x.m, &y.m);
    !x.absent
        && !y.absent
        && a.at(x).is_some()
        && a.at(x) == a.at(y)
        && (m.dtype, m.device, m.device_ordinal, m.rows, m.cols, m.row_stride, m.col_stride, m.batch, m.batch_stride)
            == (
                n.dtype,
                n.device,
                n.device_ordinal,
                n.rows,
                n.cols,
                n.row_stride,
                n.col_stride,
                n.batch,
                n.batch_stride,
            )
}

/// What one call reads and writes, as passed (operands the call ignores are left out).
pub(super) struct Access {
    /// Written.
    pub outs: Vec<usize>,
    /// Only read.
    pub ins: Vec<usize>,
    /// `(output, input)` pairs that may be the identical descriptor (in place, or staged).
    pub same_ok: Vec<(usize, usize)>,
}

impl Access {
    pub fn new(outs: &[usize], ins: &[usize]) -> Self {
        Access { outs: outs.to_vec(), ins: ins.to_vec(), same_ok: vec![] }
    }

    /// Allow output `o` to be the identical descriptor of input `i`.
    pub fn same_ok(mut self, o: usize, i: usize) -> Self {
        self.same_ok.push((o, i));
        self
    }

    fn exempt(&self, a: &Arena, p: &Problem, o: usize, i: usize) -> bool {
        self.same_ok.contains(&(o, i)) && identical(a, &p.descs[o], &p.descs[i])
    }

    /// Whether some element of an output shares a byte with an element of another operand,
    /// other than by an allowed identical descriptor.
    pub fn alias(&self, a: &Arena, p: &Problem) -> Option<String> {
        for &o in &self.outs {
            let mut mask = vec![false; a.buf.len() * 8];
            for r in footprint(a, &p.descs[o]) {
                mask[r].fill(true);
            }
            // An input may be the output's own descriptor passed again (a term of a
            // reconstruction pointing at `W`): that is aliasing too, unless exempt.
            for (n, &j) in self.ins.iter().chain(&self.outs).enumerate() {
                let is_input = n < self.ins.len();
                if (!is_input && j == o) || (is_input && self.exempt(a, p, o, j)) {
                    continue;
                }
                if footprint(a, &p.descs[j]).into_iter().any(|r| mask[r].iter().any(|b| *b)) {
                    let how = if identical(a, &p.descs[o], &p.descs[j]) { "is the same memory as" } else { "overlaps" };
                    return Some(format!("output {} {how} {}", p.descs[o].name, p.descs[j].name));
                }
            }
        }
        None
    }

    /// An accepted call (`st` OK) must not have had an output aliasing another operand.
    pub fn refused_if_aliased(&self, st: osft_status, a: &Arena, p: &Problem, what: &str) -> R {
        match self.alias(a, p) {
            Some(why) if st == OSFT_STATUS_OK => Err(format!("{what}: accepted although {why}")),
            _ => Ok(()),
        }
    }

    /// Bytes an accepted call may change: the outputs' elements less every input's elements
    /// (except an input that is an output's allowed identical descriptor), so that a write
    /// through an output into an input is reported even where the two alias.
    pub fn writable(&self, a: &Arena, p: &Problem) -> Vec<bool> {
        let mut mask = writable(a, p, &self.outs);
        for &i in &self.ins {
            if self.outs.iter().any(|&o| self.exempt(a, p, o, i)) {
                continue;
            }
            for r in footprint(a, &p.descs[i]) {
                mask[r].fill(false);
            }
        }
        mask
    }
}

//! The checks every call gets: status sanity, what a rejected or accepted call may have written
//! (arena, caller workspace, result arrays, `*bytes` of a query), and what an unmutated call
//! must return.

use std::ffi::{c_void, CStr};
use std::ptr::null_mut;

use osft::ffi::osft_status::*;
use osft::ffi::*;

use super::aliasing::{writable, Access};
use super::arena::Arena;
use super::input::Src;
use super::operands::{Data, Problem, GUARD};
use super::R;

pub(super) fn msg() -> String {
    unsafe { CStr::from_ptr(osft_last_error_message()) }.to_string_lossy().into_owned()
}

thread_local! {
    /// Calls checked on this thread: (succeeded, rejected), by status code.
    static STATS: std::cell::RefCell<[u64; 18]> = const { std::cell::RefCell::new([0; 18]) };
}

/// Calls checked on this thread so far, by status code (index = `osft_status` value).
pub fn stats() -> [u64; 18] {
    STATS.with(|s| *s.borrow())
}

/// Status sanity: never a bug status; a message exactly when failing.
pub(super) fn check_status(st: osft_status, what: &str) -> R {
    STATS.with(|s| s.borrow_mut()[(st as usize).min(17)] += 1);
    let m = msg();
    if matches!(st, OSFT_STATUS_PRECONDITION | OSFT_STATUS_INTERNAL) && known_bug(what, st, &m).is_none() {
        return Err(format!("{what}: {st:?} ({m})"));
    }
    if (st == OSFT_STATUS_OK) != m.is_empty() {
        return Err(format!("{what}: status {st:?} with message {m:?}"));
    }
    Ok(())
}

/// On a rejected call nothing may change — except the outputs when the rejection is a tolerated
/// known bug that strikes mid-call (see [`known_bug`]).
pub(super) fn fail_mask(a: &Arena, p: &Problem, outs: &[usize], st: osft_status, what: &str) -> Option<Vec<bool>> {
    known_bug(what, st, &msg()).map(|_| writable(a, p, outs))
}

/// Compare the arena with its snapshot: only bytes in `mask` may differ.
pub(super) fn check_writes(before: &[u8], a: &Arena, p: &Problem, mask: Option<&[bool]>, what: &str) -> R {
    let after = a.bytes();
    for (k, (x, y)) in before.iter().zip(after).enumerate() {
        if x != y && !mask.is_some_and(|m| m[k]) {
            // Name the place.
            let mut place = "a guard".to_string();
            for (id, (&s, &l)) in a.starts.iter().zip(&a.lens).enumerate() {
                if (s..s + l).contains(&k) {
                    let owner: Vec<_> = p
                        .descs
                        .iter()
                        .filter(|d| matches!(d.data, Data::Region { id: r, .. } if r == id))
                        .map(|d| d.name)
                        .collect();
                    place = format!("region {id} ({}) at byte {}", owner.join("/"), k - s);
                } else if (s + l..s + l + GUARD).contains(&k) {
                    place = format!("the guard after region {id} at byte {}", k - s - l);
                }
            }
            let kind = if mask.is_some() { "wrote outside its outputs" } else { "was rejected but wrote" };
            return Err(format!("{what} {kind}: {place} changed {x:#04x} -> {y:#04x}"));
        }
    }
    Ok(())
}

/// A caller workspace between guards, or none.
pub(super) struct CallerWs {
    buf: Vec<u64>,
    bytes: usize,
}
const WS_GUARD: usize = 64;

impl CallerWs {
    pub(super) fn new(bytes: usize) -> Self {
        let mut w = CallerWs { buf: vec![0; (bytes + 2 * WS_GUARD).div_ceil(8)], bytes };
        let all = unsafe { std::slice::from_raw_parts_mut(w.buf.as_mut_ptr() as *mut u8, w.buf.len() * 8) };
        all.fill(0xFF); // NaN in every dtype: scratch read before written shows
        w
    }
    pub(super) fn ptr(&mut self) -> *mut c_void {
        unsafe { (self.buf.as_mut_ptr() as *mut u8).add(WS_GUARD) as *mut c_void }
    }
    pub(super) fn guards_intact(&self) -> bool {
        let all = unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.buf.len() * 8) };
        all[..WS_GUARD].iter().chain(&all[WS_GUARD + self.bytes..]).all(|b| *b == 0xFF)
    }
}

/// How the workspace is provided: by the context (0), exactly the queried size (1), one byte
/// less (2), or none at all (3). Returns the caller workspace and whether it may be too small.
pub(super) fn set_workspace(
    src: &mut Src,
    ctx: *mut osft_context,
    queried: Option<usize>,
) -> Result<(Option<CallerWs>, bool), String> {
    let mode = if src.chance(64) { 1 + src.below(3) } else { 0 };
    let Some(q) = queried else { return Ok((None, false)) };
    let (bytes, short) = match mode {
        0 => return Ok((None, false)),
        1 => (q, false),
        2 => (q.saturating_sub(1 + src.below(64)), q > 0),
        _ => (0, q > 0),
    };
    let mut ws = CallerWs::new(bytes);
    let p = if bytes == 0 && src.chance(128) { null_mut() } else { ws.ptr() };
    let st = unsafe { osft_context_set_workspace(ctx, p, bytes) };
    check_status(st, "osft_context_set_workspace")?;
    if st != OSFT_STATUS_OK {
        return Err(format!("set_workspace({bytes}) failed: {st:?} {}", msg()));
    }
    Ok((Some(ws), short))
}

pub(super) fn ws_done(ws: &Option<CallerWs>, what: &str) -> R {
    if let Some(w) = ws {
        if !w.guards_intact() {
            return Err(format!("{what} wrote outside the caller workspace ({} bytes)", w.bytes));
        }
    }
    Ok(())
}

/// Run a workspace-size query: `bytes` must be untouched on failure.
pub(super) fn query(
    what: &str,
    f: impl FnOnce(*mut usize) -> osft_status,
) -> Result<(osft_status, Option<usize>), String> {
    let sentinel = 0xDEAD_BEEF_usize;
    let mut b = sentinel;
    let st = f(&mut b);
    check_status(st, what)?;
    if st != OSFT_STATUS_OK && b != sentinel {
        return Err(format!("{what} failed ({st:?}) but wrote *bytes = {b}"));
    }
    Ok((st, (st == OSFT_STATUS_OK).then_some(b)))
}

/// Known library bugs, each with an `#[ignore = "bug: ..."]` test in `tests/ffi_regressions.rs`, are
/// tolerated (so that fuzzing goes on past them) unless `OSFT_FUZZ_STRICT=1`. Remove an entry
/// when its bug is fixed.
pub(super) fn known_bug(what: &str, st: osft_status, m: &str) -> Option<&'static str> {
    if std::env::var("OSFT_FUZZ_STRICT").is_ok_and(|v| v == "1") {
        return None;
    }
    // No known bug at present (the ones found so far are guarded by the `regression_*` tests in
    // tests/ffi_regressions.rs). An entry:
    //     if st == OSFT_STATUS_PRECONDITION && m.contains("...") { return Some("what"); }
    let _ = (what, st, m);
    None
}

/// The checks of a call's status: its sanity, the caller workspace's guards, and what an
/// unmutated call must return (`short_ws`, `nonfinite_ok`: see [`expect_ok`]).
pub(super) fn check_call(
    st: osft_status,
    ws: &Option<CallerWs>,
    p: &Problem,
    short_ws: bool,
    nonfinite_ok: bool,
    what: &str,
) -> R {
    check_status(st, what)?;
    ws_done(ws, what)?;
    expect_ok(st, p, short_ws, nonfinite_ok, what)
}

/// The checks of a call's writes against the arena snapshot `before`: an accepted call had no
/// output aliasing another operand and wrote only its outputs' elements (never an input's); a
/// rejected one wrote nothing — or its outputs when `partial` (a factorization that found a
/// non-finite value part way through a short caller workspace) or under a tolerated known bug.
pub(super) fn check_outcome(
    access: &Access,
    st: osft_status,
    partial: bool,
    before: &[u8],
    a: &Arena,
    p: &Problem,
    what: &str,
) -> R {
    access.refused_if_aliased(st, a, p, what)?;
    if st == OSFT_STATUS_OK {
        check_writes(before, a, p, Some(&access.writable(a, p)), what)
    } else if partial {
        check_writes(before, a, p, Some(&writable(a, p, &access.outs)), what)
    } else {
        check_writes(before, a, p, fail_mask(a, p, &access.outs, st, what).as_deref(), what)
    }
}

/// What an unmutated call must return.
pub(super) fn expect_ok(st: osft_status, p: &Problem, short_ws: bool, nonfinite_ok: bool, what: &str) -> R {
    if p.mutated || st == OSFT_STATUS_OK || known_bug(what, st, &msg()).is_some() {
        return Ok(());
    }
    if short_ws && st == OSFT_STATUS_WORKSPACE_TOO_SMALL {
        return Ok(());
    }
    if nonfinite_ok && !p.nonfinite.is_empty() && st == OSFT_STATUS_NON_FINITE {
        return Ok(());
    }
    Err(format!("{what}: a valid call was rejected: {st:?} ({})", msg()))
}

/// A result array of `need` doubles plus a tail that must stay untouched.
pub(super) struct Results {
    pub(super) v: Vec<f64>,
    pub(super) len: usize,
}
pub(super) const RES_POISON: u64 = 0x7ff8_dead_beef_0001;
impl Results {
    pub(super) fn new(src: &mut Src, p: &mut Problem, need: usize) -> Self {
        let extra = 3;
        let mut len = need + src.below(2);
        if src.chance(16) {
            len = need.saturating_sub(1);
            p.note(format!("out_len = {len} < {need}"));
        }
        Results { v: vec![f64::from_bits(RES_POISON); need + extra], len }
    }
    pub(super) fn ptr(&mut self, p: &mut Problem, src: &mut Src) -> *mut f64 {
        if src.chance(8) {
            p.note("out = NULL".into());
            return null_mut();
        }
        self.v.as_mut_ptr()
    }
    /// Untouched entirely (`written = 0`) or beyond the first `written` entries.
    pub(super) fn check(&self, written: usize, what: &str) -> R {
        for (i, x) in self.v.iter().enumerate().skip(written) {
            if x.to_bits() != RES_POISON {
                return Err(format!("{what}: result entry {i} written ({x}) beyond the {written} it may write"));
            }
        }
        Ok(())
    }
}

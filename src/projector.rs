//! [`Projector`]: repeated projection against the same frozen bases, with the evaluation order
//! (coefficient form or a cached `P = I - B B^T`) chosen once, when it is built.

use crate::context::Context;
use crate::desc::Device;
use crate::desc::MatDesc;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::exec::Buffer;
use crate::ops::project::{self, ProjectorPlan, ProjectorSide, Side, Strategy};
use crate::ops::Plan;
use crate::view::{MatMut, MatRef};

/// Repeated projection against fixed bases; see [`project::choose`] for when the cached form is
/// used. Borrows the caller's bases for `'b` (the coefficient form reads them on every call).
pub struct Projector<'b> {
    /// The device of the context it was built on (where its cached projectors live).
    device: Device,
    side: Side,
    sides: Vec<ProjectorSide>,
    /// The cached projectors' memory, owned by the projector (`sides` describe it).
    _buffers: Vec<Buffer>,
    _bases: std::marker::PhantomData<&'b ()>,
}

impl<'b> Projector<'b> {
    /// # Safety
    /// The basis descriptors must describe valid memory of the context's device for `'b`.
    pub unsafe fn new(
        ctx: &Context,
        side: Side,
        u: Option<MatDesc>,
        v: Option<MatDesc>,
        strategy: Strategy,
        max_bytes: usize,
    ) -> Result<Self> {
        let (mut sides, mut buffers) = (vec![], vec![]);
        for (left, b) in [(true, u), (false, v)] {
            let Some(choice) = project::SideChoice::new(ctx.executor(), side, left, b, strategy, max_bytes)? else {
                continue;
            };
            let cached = match choice.cached_bytes {
                Some(bytes) => {
                    // Allocating is illegal during capture and would invalidate the caller's graph.
                    if ctx.executor().is_capturing()? {
                        return Err(Error::InvalidArgument(
                            "a cached projector allocates its memory, which cannot be done while the context's \
                             stream is being captured into a CUDA graph: build the projector before the capture"
                                .into(),
                        ));
                    }
                    let buf = ctx.executor().alloc(bytes)?;
                    let (n, basis) = (choice.dimension, &choice.basis);
                    let p = MatDesc::col_major(buf.addr, basis.dtype, n, n).with_device(ctx.executor().device());
                    buffers.push(buf);
                    // SAFETY: `p` is the buffer just allocated on the executor's device; the
                    // basis is the caller's, valid by this function's contract.
                    unsafe { project::build_projector(ctx.executor(), left, basis, &p) }?;
                    Some(p)
                }
                None => None,
            };
            sides.push(ProjectorSide { left, basis: choice.basis, cached });
        }
        Ok(Projector {
            device: ctx.executor().device(),
            side,
            sides,
            _buffers: buffers,
            _bases: std::marker::PhantomData,
        })
    }

    /// The strategy each side uses: `(left, right)`, `None` for a side not projected.
    pub fn strategies(&self) -> (Option<Strategy>, Option<Strategy>) {
        let get = |left: bool| {
            self.sides.iter().find(|p| p.left == left).map(|p| {
                if p.cached.is_some() {
                    Strategy::CachedProjector
                } else {
                    Strategy::Coefficient
                }
            })
        };
        (get(true), get(false))
    }

    /// The validated application of this projector to `x` (in place, or into `out`).
    /// `ctx` must be on the device the projector was built on (`DeviceMismatch` otherwise).
    pub fn plan(&self, ctx: &Context, x: &MatDesc, out: Option<&MatDesc>) -> Result<ProjectorPlan> {
        if ctx.executor().device() != self.device {
            return Err(Error::DeviceMismatch(format!(
                "the projector was built on {:?} but the context executes on {:?}",
                self.device,
                ctx.executor().device()
            )));
        }
        ProjectorPlan::new(ctx.executor(), self.side, &self.sides, x, out, ctx.math_mode())
    }

    /// Workspace bytes [`Projector::apply_raw`] needs for `x` and `out` (a caller workspace set
    /// on the context must hold this much).
    pub fn workspace_size(&self, ctx: &Context, x: &MatDesc, out: Option<&MatDesc>) -> Result<usize> {
        Ok(self.plan(ctx, x, out)?.workspace().min)
    }

    /// # Safety
    /// Descriptors must describe valid memory of the context's device.
    pub unsafe fn apply_raw(&self, ctx: &Context, x: &MatDesc, out: Option<&MatDesc>) -> Result<()> {
        let plan = self.plan(ctx, x, out)?;
        // SAFETY: the caller's contract; the cached projectors are this projector's own buffers,
        // on the context's device (checked by `plan`).
        unsafe { ctx.execute(&plan) }
    }

    /// Project `x` in place.
    pub fn apply<T: Element>(&self, ctx: &Context, x: &mut MatMut<'_, T>) -> Result<()> {
        // SAFETY: borrow-checked host views.
        unsafe { self.apply_raw(ctx, x.desc(), None) }
    }

    /// Project `x` into `out`.
    pub fn apply_into<T: Element>(&self, ctx: &Context, x: &MatRef<'_, T>, out: &mut MatMut<'_, T>) -> Result<()> {
        // SAFETY: borrow-checked host views.
        unsafe { self.apply_raw(ctx, x.desc(), Some(out.desc())) }
    }
}

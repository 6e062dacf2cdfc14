//! The executor's context made current for the length of a call and the caller's restored
//! after it ([`Current`]), so a host application's own current context (e.g. PyTorch's on
//! another device) is never changed by an osft call.

use cudarc::driver::sys as cu;

use super::cu_check;
use crate::error::Result;

/// The driver calls that read and switch the calling thread's current context: the real ones
/// ([`Driver`]), or a recording stand-in in the unit tests, which check the restore rule without a GPU.
pub(super) trait ContextSwitch {
    fn current(&self) -> Result<cu::CUcontext>;
    fn set_current(&self, ctx: cu::CUcontext) -> Result<()>;
}

/// The CUDA driver's `cuCtxGetCurrent` / `cuCtxSetCurrent`.
pub(super) struct Driver;

impl ContextSwitch for Driver {
    fn current(&self) -> Result<cu::CUcontext> {
        let mut prev = std::ptr::null_mut();
        // SAFETY: out-parameter.
        cu_check(unsafe { cu::cuCtxGetCurrent(&mut prev) }, "cuCtxGetCurrent")?;
        Ok(prev)
    }
    fn set_current(&self, ctx: cu::CUcontext) -> Result<()> {
        // SAFETY: `ctx` is a live (retained) context, or null (then no context is current).
        cu_check(unsafe { cu::cuCtxSetCurrent(ctx) }, "cuCtxSetCurrent")
    }
}

/// `ctx` made current on this thread until dropped; then the context that was current before
/// (a host application's own, e.g. PyTorch's on another device) is current again, also when the
/// holder returns early with an error or unwinds.
pub(super) struct Current<D: ContextSwitch = Driver> {
    prev: cu::CUcontext,
    ctx: cu::CUcontext,
    driver: D,
}

impl Current<Driver> {
    pub(super) fn make(ctx: cu::CUcontext) -> Result<Self> {
        Current::make_with(Driver, ctx)
    }
}

impl<D: ContextSwitch> Current<D> {
    fn make_with(driver: D, ctx: cu::CUcontext) -> Result<Self> {
        let prev = driver.current()?;
        if prev != ctx {
            driver.set_current(ctx)?;
        }
        Ok(Current { prev, ctx, driver })
    }
}

impl<D: ContextSwitch> Drop for Current<D> {
    fn drop(&mut self) {
        if self.prev != self.ctx {
            // A failure here has no caller to report to; the next `make` on this thread still
            // reads the actual current context, so nothing builds on a wrong assumption.
            let _ = self.driver.set_current(self.prev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::{Cell, RefCell};

    /// One thread's current context as the driver keeps it, every switch logged; either call
    /// can be made to fail.
    #[derive(Default)]
    struct Thread {
        current: Cell<usize>,
        switches: RefCell<Vec<usize>>,
        fail_read: bool,
        fail_switch: bool,
    }

    impl ContextSwitch for &Thread {
        fn current(&self) -> Result<cu::CUcontext> {
            if self.fail_read {
                return Err(Error::BackendUnavailable("cuCtxGetCurrent failed".into()));
            }
            Ok(ctx(self.current.get()))
        }
        fn set_current(&self, c: cu::CUcontext) -> Result<()> {
            if self.fail_switch {
                return Err(Error::BackendUnavailable("cuCtxSetCurrent failed".into()));
            }
            self.current.set(c as usize);
            self.switches.borrow_mut().push(c as usize);
            Ok(())
        }
    }

    /// Context handle `n` (0: no context current).
    fn ctx(n: usize) -> cu::CUcontext {
        n as cu::CUcontext
    }

    fn host_thread(current: usize) -> Thread {
        Thread { current: Cell::new(current), ..Thread::default() }
    }

    #[test]
    fn the_host_context_is_current_again_after_the_call() {
        let t = host_thread(1);
        {
            let _c = Current::make_with(&t, ctx(2)).unwrap();
            assert_eq!(t.current.get(), 2, "the executor's context is current during the call");
        }
        assert_eq!(t.current.get(), 1);
        assert_eq!(*t.switches.borrow(), [2, 1]);
    }

    #[test]
    fn no_context_before_means_none_after() {
        let t = host_thread(0);
        drop(Current::make_with(&t, ctx(2)).unwrap());
        assert_eq!(t.current.get(), 0);
        assert_eq!(*t.switches.borrow(), [2, 0]);
    }

    #[test]
    fn already_current_switches_nothing() {
        let t = host_thread(2);
        drop(Current::make_with(&t, ctx(2)).unwrap());
        assert_eq!(t.current.get(), 2);
        assert!(t.switches.borrow().is_empty());
    }

    #[test]
    fn restored_after_an_error_return_and_after_a_panic() {
        let t = host_thread(1);
        let op = |t: &Thread| -> Result<()> {
            let _c = Current::make_with(t, ctx(2))?;
            Err(Error::Internal("the op failed".into()))
        };
        assert!(op(&t).is_err());
        assert_eq!(t.current.get(), 1);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _c = Current::make_with(&t, ctx(2)).unwrap();
            panic!("a panic inside the call");
        }));
        assert!(unwound.is_err());
        assert_eq!(t.current.get(), 1);
        assert_eq!(*t.switches.borrow(), [2, 1, 2, 1]);
    }

    #[test]
    fn nested_guards_restore_in_reverse_order() {
        // A call of executor 2 that frees a buffer of device 3's context while it runs.
        let t = host_thread(1);
        {
            let _call = Current::make_with(&t, ctx(2)).unwrap();
            {
                let _free = Current::make_with(&t, ctx(3)).unwrap();
                assert_eq!(t.current.get(), 3);
            }
            assert_eq!(t.current.get(), 2);
        }
        assert_eq!(t.current.get(), 1);
        assert_eq!(*t.switches.borrow(), [2, 3, 2, 1]);
    }

    #[test]
    fn a_failed_read_or_switch_is_an_error_and_leaves_the_thread_as_it_was() {
        let t = Thread { current: Cell::new(1), fail_read: true, ..Thread::default() };
        assert!(matches!(Current::make_with(&t, ctx(2)), Err(Error::BackendUnavailable(_))));
        let t = Thread { current: Cell::new(1), fail_switch: true, ..Thread::default() };
        assert!(matches!(Current::make_with(&t, ctx(2)), Err(Error::BackendUnavailable(_))));
        assert_eq!(t.current.get(), 1);
        assert!(t.switches.borrow().is_empty());
    }
}

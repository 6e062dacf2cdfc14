//! `Dev`: a host test buffer mirrored in a context's memory, so that the same case code runs on
//! the executor under test (device memory) and on the CPU executor (host memory, `--cpu`).

use osft::exec::Buffer;
use osft::{Context, Device, Element, MatDesc};
use osft_test_support::Buf;

/// A host buffer mirrored in the context's memory (device memory; host memory for `--cpu`).
pub(crate) struct Dev<T: Element> {
    pub(crate) host: Buf<T>,
    pub(crate) buf: Buffer,
    pub(crate) device: Device,
}

impl<T: Element> Dev<T> {
    pub(crate) fn up(ctx: &Context, host: Buf<T>) -> Dev<T> {
        let bytes = host.data.len() * T::DTYPE.size();
        let buf = ctx.executor().alloc(bytes).expect("device alloc");
        // SAFETY: `buf` holds `bytes`; the host slice is that long.
        unsafe {
            ctx.executor().write_from_host(std::slice::from_raw_parts(host.data.as_ptr() as *const u8, bytes), buf.addr)
        }
        .expect("upload");
        Dev { host, buf, device: ctx.executor().device() }
    }
    pub(crate) fn desc(&self) -> MatDesc {
        MatDesc { addr: self.buf.addr, device: self.device, ..self.host.desc }
    }
    /// The device contents, as a host `Buf` with the same layout.
    pub(crate) fn down(&self, ctx: &Context) -> Buf<T> {
        let mut data = self.host.data.clone();
        let bytes = data.len() * T::DTYPE.size();
        // SAFETY: same size as uploaded.
        unsafe {
            ctx.executor()
                .read_to_host(self.buf.addr, std::slice::from_raw_parts_mut(data.as_mut_ptr() as *mut u8, bytes))
        }
        .expect("download");
        let desc = MatDesc { addr: data.as_ptr() as usize, ..self.host.desc };
        Buf { data, desc }
    }
}

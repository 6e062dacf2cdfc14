//! osft's CUDA kernels run on the CPU, for tests: `src/exec/cuda/kernels.cu` compiled unchanged by
//! the host C++ compiler under an emulation of the CUDA kernel environment (`emu/cuda_host.h`,
//! `emu/emulator.cpp`): one `std::thread` per CUDA thread of a block, blocks one after another,
//! `__shared__` as block-static storage poisoned before every block, `__syncthreads` as a barrier
//! that reports divergence, atomics under a mutex.
//!
//! [`launch`] takes what `cuLaunchKernel` takes (a kernel name, grid, block and an array of
//! pointers to the argument values), so a test drives the kernels through the CUDA executor's
//! own launch code (`osft::exec::cuda::launch`) with host memory as "device" memory.

use std::ffi::{c_char, c_void, CStr, CString};

extern "C" {
    fn osft_emu_kernel_count() -> usize;
    fn osft_emu_kernel_name(i: usize) -> *const c_char;
    fn osft_emu_shared_bytes() -> i32;
    fn osft_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        params: *mut *mut c_void,
        mode: i32,
        seed: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

/// How the threads of a block run between two barriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// All at once (the OS schedules them).
    Concurrent,
    /// One at a time, thread 0 first.
    Forward,
    /// One at a time, the last thread first.
    Reverse,
    /// One at a time, in a permutation drawn anew for every phase from the seed.
    Shuffled(u64),
}

/// Every kernel the emulation holds, by name.
pub fn kernel_names() -> Vec<String> {
    // SAFETY: the table is static; indices below its length.
    unsafe {
        (0..osft_emu_kernel_count())
            .map(|i| CStr::from_ptr(osft_emu_kernel_name(i)).to_string_lossy().into_owned())
            .collect()
    }
}

/// Bytes of `__shared__` storage the emulator poisons before each block (`None` if the linker
/// gave it no section bounds, and poisoning is off).
pub fn shared_bytes() -> Option<usize> {
    // SAFETY: reads two linker symbols.
    let n = unsafe { osft_emu_shared_bytes() };
    (n >= 0).then_some(n as usize)
}

/// Launch kernel `name` on the CPU: `grid` blocks of `block` threads, `params[i]` pointing at the
/// value of argument `i`. Returns when every block has run; `Err` with the emulator's message for
/// an unknown kernel, sizes out of CUDA's range, divergent barriers or a trap.
///
/// # Safety
/// `params` holds one pointer per kernel parameter to a value of its type, and the addresses among
/// those values are host memory the kernel may access as its parameter list says.
pub unsafe fn launch(
    name: &str,
    grid: [u32; 3],
    block: [u32; 3],
    params: &mut [*mut c_void],
    schedule: Schedule,
) -> Result<(), String> {
    let cname = CString::new(name).map_err(|e| e.to_string())?;
    let (mode, seed) = match schedule {
        Schedule::Concurrent => (0, 0),
        Schedule::Forward => (1, 0),
        Schedule::Reverse => (2, 0),
        Schedule::Shuffled(s) => (3, s),
    };
    let mut err = vec![0 as c_char; 512];
    // SAFETY: this function's contract; the name and error buffer outlive the call.
    let r = unsafe {
        osft_emu_launch(
            cname.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            params.as_mut_ptr(),
            mode,
            seed,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        // SAFETY: the emulator wrote a NUL-terminated message.
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned())
    }
}

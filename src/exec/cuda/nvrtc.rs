//! Run-time compilation of [`KERNEL_SOURCE`] with NVRTC (loaded dynamically). Shared by the CUDA
//! executor (compiles for the device's architecture at context creation) and by the test that
//! compile-checks the kernels on machines without a GPU.

use std::ffi::{CStr, CString};

use cudarc::nvrtc::sys;

use crate::error::{Error, Result};

/// The CUDA C source of every osft kernel.
pub const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// The entry points the executor looks up (and the compile test checks for): every kernel of
/// [`FAMILIES`](super::signatures::FAMILIES).
pub fn kernel_names() -> Vec<String> {
    super::signatures::kernel_names()
}

/// Whether an NVRTC library can be loaded (cudarc panics on first use otherwise).
pub fn available() -> bool {
    // SAFETY: only tries to load the library; a failure to load panics, caught here.
    std::panic::catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

/// NVRTC's version, `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    if !available() {
        return Err(unavailable());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(r, "nvrtcVersion")?;
    Ok((major, minor))
}

fn unavailable() -> Error {
    Error::BackendUnavailable(
        "NVRTC (libnvrtc.so) not found: put the directory holding it (e.g. a CUDA toolkit's lib64, or site-packages/nvidia/cu13/lib of the nvidia-cuda-nvrtc wheel) on LD_LIBRARY_PATH".into(),
    )
}

fn check(r: sys::nvrtcResult, what: &str) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(Error::BackendUnavailable(format!("{what} failed: {r:?}")))
    }
}

/// What NVRTC produces: a CUBIN for one real architecture (`sm_XY`: loads without JIT, and does
/// not depend on the driver accepting this NVRTC's PTX version) or PTX for a virtual one
/// (`compute_XY`: the driver JIT-compiles it; the fallback where a CUBIN does not load).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Cubin,
    Ptx,
}

/// Compile the kernels to PTX for `compute_XY` (`arch` = "80", "90", ...). Errors carry the log.
pub fn compile_ptx(arch: &str) -> Result<Vec<u8>> {
    compile(arch, Target::Ptx)
}

/// Compile the kernels to a CUBIN for `sm_XY` (`arch` = "80", "90", ...). Errors carry the log.
pub fn compile_cubin(arch: &str) -> Result<Vec<u8>> {
    compile(arch, Target::Cubin)
}

fn compile(arch: &str, target: Target) -> Result<Vec<u8>> {
    if !available() {
        return Err(unavailable());
    }
    let src = CString::new(KERNEL_SOURCE).expect("kernel source has no NUL");
    let name = CString::new("osft_kernels.cu").unwrap();
    let gpu = match target {
        Target::Cubin => format!("sm_{arch}"),
        Target::Ptx => format!("compute_{arch}"),
    };
    // --fmad=false: no a*b+c is contracted into an FMA, so every product and sum rounds as it does
    // on the CPU executor and in the host emulation (built with -ffp-contract=off).
    let opts: Vec<CString> =
        [format!("--gpu-architecture={gpu}"), "--std=c++11".into(), "-default-device".into(), "--fmad=false".into()]
            .into_iter()
            .map(|s| CString::new(s).unwrap())
            .collect();
    let opt_ptrs: Vec<*const libc::c_char> = opts.iter().map(|s| s.as_ptr()).collect();
    // SAFETY: NVRTC C API used as documented; every pointer outlives the calls; the program is
    // destroyed on every path.
    unsafe {
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        check(
            sys::nvrtcCreateProgram(&mut prog, src.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null()),
            "nvrtcCreateProgram",
        )?;
        let compiled = sys::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr());
        let result = if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
            let mut n = 0usize;
            sys::nvrtcGetProgramLogSize(prog, &mut n);
            let mut log = vec![0u8; n.max(1)];
            sys::nvrtcGetProgramLog(prog, log.as_mut_ptr() as *mut libc::c_char);
            let log = CStr::from_bytes_until_nul(&log).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
            Err(Error::Internal(format!("NVRTC failed to compile osft's kernels for {gpu}: {compiled:?}\n{log}")))
        } else {
            let mut n = 0usize;
            match target {
                Target::Ptx => check(sys::nvrtcGetPTXSize(prog, &mut n), "nvrtcGetPTXSize").and_then(|_| {
                    let mut ptx = vec![0u8; n];
                    check(sys::nvrtcGetPTX(prog, ptx.as_mut_ptr() as *mut libc::c_char), "nvrtcGetPTX").map(|_| ptx)
                }),
                Target::Cubin => check(sys::nvrtcGetCUBINSize(prog, &mut n), "nvrtcGetCUBINSize").and_then(|_| {
                    let mut cubin = vec![0u8; n];
                    check(sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut libc::c_char), "nvrtcGetCUBIN")
                        .map(|_| cubin)
                }),
            }
        };
        sys::nvrtcDestroyProgram(&mut prog);
        result
    }
}

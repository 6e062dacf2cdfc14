//! CUDA-side checks that run on any machine: the NVRTC kernels compile to PTX and to CUBINs for
//! sm_80 and sm_90 (with the NVRTC of the `nvidia-cuda-nvrtc` wheel that scripts/test.sh
//! installs), a CUDA context without a driver or device is `BackendUnavailable` with a message,
//! and so is a driver older (in major version) than the cuBLAS found.
#![cfg(feature = "cuda")]

use osft::exec::cuda::{check_driver_supports, nvrtc};
use osft::{Context, Status};

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc::available() {
        assert!(
            std::env::var_os("OSFT_REQUIRE_NVRTC").is_none(),
            "OSFT_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
        );
        eprintln!("skipped: no libnvrtc on LD_LIBRARY_PATH (scripts/test.sh installs one)");
        return;
    }
    let (major, minor) = nvrtc::version().unwrap();
    eprintln!("NVRTC {major}.{minor}");
    for arch in ["80", "90"] {
        let ptx = nvrtc::compile_ptx(arch).unwrap_or_else(|e| panic!("compute_{arch}: {e}"));
        let text = String::from_utf8_lossy(&ptx);
        assert!(text.contains(&format!(".target sm_{arch}")), "PTX for the wrong target");
        for name in nvrtc::kernel_names() {
            assert!(text.contains(&format!(".entry {name}(")), "kernel {name} missing from the PTX for sm_{arch}");
        }
        // The CUBIN the executor loads first: an ELF image naming every kernel.
        let cubin = nvrtc::compile_cubin(arch).unwrap_or_else(|e| panic!("sm_{arch}: {e}"));
        assert_eq!(&cubin[..4], b"\x7fELF", "sm_{arch}: not an ELF image");
        for name in nvrtc::kernel_names() {
            assert!(
                cubin.windows(name.len() + 1).any(|w| w[..name.len()] == *name.as_bytes() && w[name.len()] == 0),
                "kernel {name} missing from the CUBIN for sm_{arch}"
            );
        }
        eprintln!("sm_{arch}: PTX {} bytes, CUBIN {} bytes", ptx.len(), cubin.len());
    }
}

#[test]
fn cuda_context_without_a_gpu_is_backend_unavailable() {
    let has_driver = std::path::Path::new("/dev/nvidiactl").exists();
    match Context::cuda(0) {
        Err(e) => {
            assert_eq!(e.status(), Status::BackendUnavailable, "{e}");
            assert!(!e.to_string().is_empty());
            eprintln!("as expected: {e}");
        }
        Ok(ctx) => assert!(has_driver, "a CUDA context opened on a machine without /dev/nvidiactl: {ctx:?}"),
    }
    // auto() falls back to the CPU.
    if !has_driver {
        assert_eq!(Context::auto().executor().name(), "cpu");
    }
}

#[test]
fn a_driver_older_than_cublas_is_refused_with_both_versions() {
    // Minor-version compatibility: any driver of the same CUDA major version (or newer) runs it.
    for (driver, cublas) in [(13000, 13), (13020, 13), (12080, 12), (13000, 12), (12000, 11)] {
        check_driver_supports(driver, cublas).unwrap_or_else(|e| panic!("driver {driver}, cuBLAS {cublas}: {e}"));
    }
    for (driver, cublas, shown) in [(12080, 13, "12.8"), (12090, 13, "12.9"), (11080, 12, "11.8")] {
        let e = check_driver_supports(driver, cublas).expect_err("an older driver was accepted");
        assert_eq!(e.status(), Status::BackendUnavailable);
        let msg = e.to_string();
        assert!(msg.contains(shown) && msg.contains(&format!("CUDA {cublas}")), "unclear message: {msg}");
    }
}

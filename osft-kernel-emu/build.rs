//! Compiles `src/exec/cuda/kernels.cu` (unchanged) with the host C++ compiler under
//! `emu/cuda_host.h`, plus the emulator. `OSFT_KERNEL_EMU_SANITIZE=address` or `=thread`
//! builds them with that sanitizer (the test binary must then preload its runtime);
//! `OSFT_KERNEL_EMU_SOURCE=PATH` compiles another copy of the kernels (to check that a planted bug
//! fails the tests).

fn main() {
    // OSFT_KERNEL_EMU_SOURCE: another kernels.cu (a copy with a planted bug, to see the tests fail).
    println!("cargo:rerun-if-env-changed=OSFT_KERNEL_EMU_SOURCE");
    let kernels = match std::env::var("OSFT_KERNEL_EMU_SOURCE") {
        Ok(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../src/exec/cuda/kernels.cu"),
    };
    let kernels = kernels.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", kernels.display()));
    for f in ["emu/cuda_host.h", "emu/emulator.h", "emu/emulator.cpp", "emu/kernels_host.cpp"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-env-changed=OSFT_KERNEL_EMU_SANITIZE");
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .file("emu/emulator.cpp")
        .file("emu/kernels_host.cpp")
        .include("emu")
        .define("OSFT_KERNELS_CU", format!("\"{}\"", kernels.display()).as_str())
        // No FMA contraction: the device code asks for separately rounded products and sums.
        .flag("-ffp-contract=off")
        .flag("-pthread")
        .opt_level(2)
        .warnings(false);
    if let Ok(s) = std::env::var("OSFT_KERNEL_EMU_SANITIZE") {
        if !s.is_empty() {
            b.flag(format!("-fsanitize={s}")).flag("-fno-omit-frame-pointer").flag("-g");
            let lib = match s.as_str() {
                "address" => "asan",
                "thread" => "tsan",
                other => panic!("OSFT_KERNEL_EMU_SANITIZE={other}: use address or thread"),
            };
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
    b.compile("osft_kernel_emu");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}

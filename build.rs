//! Generates the C header from `src/ffi` with cbindgen into `$OUT_DIR/osft.h`.
//!
//! The committed `include/osft.h` is the contract; `tests/header_fresh.rs` fails when it differs
//! from the generated one (refresh it with `OSFT_BLESS=1 cargo test --test header_fresh`).
//! A cbindgen failure (say, a syntax error being edited) is reported as a warning and leaves no
//! header behind, so that rustc reports the real error and the freshness test fails.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("osft.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src");

    // Give the shared library an SONAME (ELF targets), so that a program linked against it by
    // path records `libosft.so`, not the path, and CMake's imported target works as usual.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libosft.so");
    }

    let _ = std::fs::remove_file(&out);
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            println!("cargo:warning=cbindgen.toml: {e}");
            return;
        }
    };
    // Parse only the FFI module (and its submodules): core items never leak into the header.
    let builder = cbindgen::Builder::new().with_config(config).with_src(crate_dir.join("src/ffi/mod.rs"));
    match builder.generate() {
        Ok(bindings) => {
            bindings.write_to_file(&out);
        }
        Err(e) => println!("cargo:warning=cbindgen could not generate osft.h: {e}"),
    }
}

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

    // SONAME `libosft.so.<OSFT_ABI_VERSION>` (ELF targets): a program records the ABI it was
    // linked against, and a later incompatible ABI can be installed beside it
    // (docs/abi-policy.md). The number is read from src/ffi/types.rs, its one source.
    // Symbol versions (OSFT_<ABI>) cannot be set here: rustc passes its own version script for
    // a cdylib and every linker honours only the first, so the CMake build links the versioned
    // libosft.so.<ABI> from libosft.a with cmake/osft.map.in instead.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly") {
        let abi = abi_version(&crate_dir.join("src/ffi/types.rs"));
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libosft.so.{abi}");
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

/// `OSFT_ABI_VERSION` as written in `types` (`pub const OSFT_ABI_VERSION: u32 = N;`); CMakeLists.txt
/// reads the same line.
fn abi_version(types: &std::path::Path) -> u32 {
    let text = std::fs::read_to_string(types).unwrap_or_else(|e| panic!("{}: {e}", types.display()));
    text.lines()
        .find_map(|l| l.trim().strip_prefix("pub const OSFT_ABI_VERSION: u32 = "))
        .and_then(|rest| rest.trim_end_matches(';').trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no `pub const OSFT_ABI_VERSION: u32 = N;` line", types.display()))
}

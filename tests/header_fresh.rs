//! The committed C header `include/osft.h` must be exactly what cbindgen generates from
//! `src/ffi` (build.rs writes it to `$OUT_DIR/osft.h`). After changing the C ABI, refresh it with
//! `OSFT_BLESS=1 cargo test --test header_fresh` and commit the result.

use std::path::Path;

#[test]
fn committed_header_matches_generated() {
    let generated_path = Path::new(env!("OUT_DIR")).join("osft.h");
    let committed_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/osft.h");
    let generated = std::fs::read_to_string(&generated_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: cbindgen did not generate the header (see the build script's warnings)",
            generated_path.display()
        )
    });
    if std::env::var_os("OSFT_BLESS").is_some() {
        std::fs::write(&committed_path, &generated).expect("write include/osft.h");
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/osft.h is stale: it differs from the header cbindgen generates from src/ffi, first at line {}:\n  committed: {:?}\n  generated: {:?}\n\
             Refresh it with `OSFT_BLESS=1 cargo test --test header_fresh` (or `cp {} include/osft.h`) and commit it.",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            generated.lines().nth(first).unwrap_or("<end of file>"),
            generated_path.display()
        );
    }
}

/// The generated header names the version of Cargo.toml (the `src/ffi` constants are checked
/// against the package version at compile time too).
#[test]
fn header_version_macros_match_package() {
    let h = std::fs::read_to_string(Path::new(env!("OUT_DIR")).join("osft.h")).unwrap();
    for (name, v) in [
        ("OSFT_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("OSFT_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("OSFT_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert!(h.contains(&format!("#define {name} {v}\n")), "{name} is not {v} in the generated osft.h");
    }
}

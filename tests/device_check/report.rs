//! The record of a run: one printed line per case, the closing counts, and the JSON document
//! rewritten after every case (with the CUDA libraries the process had loaded), plus the panic
//! guard that turns a panicking group of cases into one failed case.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use osft::{Context, MathMode, SvdAlgorithm};

/// The cases so far: printed one line each, and kept as JSON in `json` (rewritten after every
/// case).
pub(crate) struct Report {
    pub(crate) passed: usize,
    pub(crate) failed: usize,
    pub(crate) skipped: usize,
    cases: Vec<String>,
    json: Option<PathBuf>,
    /// The document's fixed fields, as JSON members.
    header: String,
    start: Instant,
    last: Instant,
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The CUDA libraries this process has mapped (`/proc/self/maps`), one path each, sorted: which
/// cuBLAS, cuSOLVER, NVRTC and driver were actually loaded. Empty where none was.
pub(crate) fn loaded_cuda_libraries() -> Vec<String> {
    const NAMES: [&str; 8] = [
        "libcuda.",
        "libcublas",
        "libcusolver",
        "libnvrtc",
        "libnvJitLink",
        "libcudart",
        "libcusparse",
        "libnvidia-ptxjit",
    ];
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            let file = p.rsplit('/').next().unwrap_or(p);
            NAMES.iter().any(|n| file.starts_with(n))
        })
        .map(str::to_string)
        .collect();
    libs.sort();
    libs.dedup();
    libs
}

impl Report {
    pub(crate) fn new(json: Option<PathBuf>, header: String) -> Report {
        let now = Instant::now();
        let rep = Report { passed: 0, failed: 0, skipped: 0, cases: vec![], json, header, start: now, last: now };
        rep.flush("running");
        rep
    }

    pub(crate) fn case(&mut self, name: &str, ok: bool, detail: String) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        println!("{} {name}: {detail}", if ok { "PASS" } else { "FAIL" });
        self.record(if ok { "pass" } else { "fail" }, name, &detail);
    }

    /// A case that cannot run here (`why` says so: "skipped: no GPU").
    pub(crate) fn skip(&mut self, name: &str, why: &str) {
        self.skipped += 1;
        println!("SKIP {name}: {why}");
        self.record("skip", name, why);
    }

    fn record(&mut self, status: &str, name: &str, detail: &str) {
        let secs = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.cases.push(format!(
            "{{\"status\": {}, \"name\": {}, \"detail\": {}, \"seconds\": {secs:.3}}}",
            json_str(status),
            json_str(name),
            json_str(detail)
        ));
        self.flush("running");
    }

    /// Writes the whole document (to `PATH.tmp`, renamed over `PATH`: never half a file).
    pub(crate) fn flush(&self, state: &str) {
        let Some(path) = &self.json else { return };
        let libs: Vec<String> = loaded_cuda_libraries().iter().map(|l| json_str(l)).collect();
        let doc = format!(
            "{{{}, \"state\": {}, \"passed\": {}, \"failed\": {}, \"skipped\": {}, \"seconds\": {:.3},\n \"loaded_libraries\": [{}],\n \"cases\": [\n  {}\n ]}}\n",
            self.header,
            json_str(state),
            self.passed,
            self.failed,
            self.skipped,
            self.start.elapsed().as_secs_f64(),
            libs.join(", "),
            self.cases.join(",\n  ")
        );
        let tmp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, doc).and_then(|_| std::fs::rename(&tmp, path)) {
            eprintln!("device_check: cannot write {}: {e}", path.display());
        }
    }

    /// Runs one group of cases; a panic in it is one failed case named `label`, and the context
    /// settings a case changes are put back.
    pub(crate) fn guard(&mut self, gpu: &Context, label: &str, f: impl FnOnce(&mut Report)) {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(self)));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            gpu.set_svd_algorithm(SvdAlgorithm::Auto);
            gpu.set_math_mode(MathMode::Exact);
            gpu.release_workspace();
            self.case(label, false, format!("panicked: {msg}"));
        }
    }
}

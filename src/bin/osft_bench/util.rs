//! Small helpers of osft-bench: random fill, timing statistics, a progress bar, a JSON printer,
//! host memory and raw file I/O. Hand-rolled so that the tool adds no dependency.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use osft::Element;

// ---------------------------------------------------------------------------------------------
// Random numbers.

/// xorshift64*: uniform values in [-1, 1). Timing does not depend on the values; uniform values
/// avoid subnormals and cost far less to draw than normal ones for gigabytes of data.
#[derive(Clone, Copy)]
pub struct Rng(pub u64);

impl Rng {
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    #[inline]
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }
}

// ---------------------------------------------------------------------------------------------
// Timing.

/// Summary of repeated timings (seconds).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn new(samples: Vec<f64>) -> Self {
        Stats { samples }
    }
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        s
    }
    /// Median (mean of the two middle samples for an even count).
    pub fn median(&self) -> f64 {
        let s = self.sorted();
        if s.is_empty() {
            return f64::NAN;
        }
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        }
    }
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    pub fn json(&self) -> Json {
        Json::obj(vec![
            ("median_s", Json::Num(self.median())),
            ("min_s", Json::Num(self.min())),
            ("max_s", Json::Num(self.max())),
            ("samples_s", Json::Arr(self.samples.iter().map(|&x| Json::Num(x)).collect())),
        ])
    }
}

/// Run `f` `warmup` times untimed, then `reps` times timed; `tick` after each run.
pub fn time_reps(warmup: usize, reps: usize, mut f: impl FnMut(), mut tick: impl FnMut()) -> Stats {
    for _ in 0..warmup {
        f();
        tick();
    }
    let mut s = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f();
        s.push(t.elapsed().as_secs_f64());
        tick();
    }
    Stats::new(s)
}

// ---------------------------------------------------------------------------------------------
// Progress bar (stderr, only when stderr is a terminal, or when forced).

pub struct Progress {
    enabled: bool,
    total: usize,
    done: usize,
    label: String,
    start: Instant,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(total: usize, mode: ProgressMode) -> Self {
        let enabled = match mode {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        Progress { enabled, total: total.max(1), done: 0, label: String::new(), start: Instant::now(), last_draw: None }
    }
    pub fn set_label(&mut self, label: &str) {
        self.label = label.to_string();
        self.draw(true);
    }
    pub fn tick(&mut self) {
        self.done = (self.done + 1).min(self.total);
        self.draw(false);
    }
    fn draw(&mut self, force: bool) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !force && self.done < self.total && self.last_draw.is_some_and(|t| now.duration_since(t).as_millis() < 100) {
            return;
        }
        self.last_draw = Some(now);
        const W: usize = 30;
        let filled = W * self.done / self.total;
        let bar: String = "#".repeat(filled) + &".".repeat(W - filled);
        let el = self.start.elapsed().as_secs_f64();
        let eta = if self.done > 0 { el / self.done as f64 * (self.total - self.done) as f64 } else { f64::NAN };
        let eta = if eta.is_finite() { format!(", ~{eta:.0} s left") } else { String::new() };
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K[{bar}] {:>3}% {:.0} s{eta}  {}", 100 * self.done / self.total, el, self.label);
        let _ = e.flush();
    }
    pub fn finish(&mut self) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Always,
    Never,
}

// ---------------------------------------------------------------------------------------------
// JSON.

/// A JSON value, printed indented. Non-finite numbers print as `null`.
#[derive(Clone, Debug)]
pub enum Json {
    Bool(bool),
    Num(f64),
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn obj(fields: Vec<(&str, Json)>) -> Json {
        Json::Obj(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
    pub fn str(s: impl Into<String>) -> Json {
        Json::Str(s.into())
    }
    pub fn int(v: usize) -> Json {
        Json::Int(v as i64)
    }
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }
    fn write(&self, out: &mut String, indent: usize) {
        let pad = |n: usize| "  ".repeat(n);
        match self {
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Num(x) => {
                if x.is_finite() {
                    // Shortest representation that round-trips.
                    out.push_str(&format!("{x:?}"));
                } else {
                    out.push_str("null");
                }
            }
            Json::Str(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(v) => {
                // Arrays of scalars stay on one line.
                let flat = v.iter().all(|x| !matches!(x, Json::Arr(_) | Json::Obj(_)));
                out.push('[');
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        if flat {
                            out.push(' ');
                        }
                    }
                    if !flat {
                        out.push('\n');
                        out.push_str(&pad(indent + 1));
                    }
                    x.write(out, indent + 1);
                }
                if !flat && !v.is_empty() {
                    out.push('\n');
                    out.push_str(&pad(indent));
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('\n');
                    out.push_str(&pad(indent + 1));
                    Json::Str(k.clone()).write(out, indent + 1);
                    out.push_str(": ");
                    v.write(out, indent + 1);
                }
                if !fields.is_empty() {
                    out.push('\n');
                    out.push_str(&pad(indent));
                }
                out.push('}');
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Machine.

/// `MemAvailable` from /proc/meminfo, in bytes (None where unreadable).
pub fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The CPU's model name (from /proc/cpuinfo), or "unknown".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn human_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}

pub fn human_time(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw files: little-endian, row-major, in the element type.

pub fn read_raw<T: Element>(path: &std::path::Path, len: usize) -> Result<Vec<T>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = T::DTYPE.size();
    if bytes.len() != len * size {
        return Err(format!(
            "{}: {} bytes, expected {} ({} elements of {})",
            path.display(),
            bytes.len(),
            len * size,
            len,
            T::DTYPE.name()
        ));
    }
    let mut v: Vec<T> = vec![T::from_f32(0.0); len];
    const { assert!(cfg!(target_endian = "little"), "raw files are little-endian") };
    // SAFETY: `v` holds exactly `len * size` bytes of plain-old-data elements; every bit pattern
    // is a valid f32/f64/f16/bf16; the host is little-endian (asserted above).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len()) };
    Ok(v)
}

pub fn write_raw<T: Element>(path: &std::path::Path, v: &[T]) -> Result<(), String> {
    const { assert!(cfg!(target_endian = "little"), "raw files are little-endian") };
    // SAFETY: viewing plain-old-data elements as their bytes.
    let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) };
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

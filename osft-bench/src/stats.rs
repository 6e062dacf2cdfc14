//! Timing: repeated runs, their summary, and human-readable units.

use std::time::Instant;

use serde::Serialize;

/// Repeated timings of one thing, in seconds.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub samples: Vec<f64>,
}

/// How a [`Stats`] appears in the JSON output (non-finite values print as `null`).
#[derive(Clone, Debug, Serialize)]
pub struct TimeSummary {
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub samples_s: Vec<f64>,
}

impl Stats {
    pub fn new(samples: Vec<f64>) -> Self {
        Stats { samples }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s
    }

    /// Median (mean of the two middle samples for an even count); NaN without samples.
    pub fn median(&self) -> f64 {
        let s = self.sorted();
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    pub fn summary(&self) -> TimeSummary {
        TimeSummary { median_s: self.median(), min_s: self.min(), max_s: self.max(), samples_s: self.samples.clone() }
    }
}

/// Run `f` `warmup` times untimed, then `reps` times timed, stopping at the first error; `tick`
/// after each run.
pub fn time_reps<E>(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), E>,
    mut tick: impl FnMut(),
) -> Result<Stats, E> {
    for _ in 0..warmup {
        f()?;
        tick();
    }
    let mut s = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        s.push(t.elapsed().as_secs_f64());
        tick();
    }
    Ok(Stats::new(s))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary() {
        let s = Stats::new(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median(), s.min(), s.max()), (2.5, 1.0, 10.0));
        assert!(Stats::default().median().is_nan());
        let j = serde_json::to_string(&Stats::default().summary()).unwrap();
        assert_eq!(j, r#"{"median_s":null,"min_s":null,"max_s":null,"samples_s":[]}"#);
        assert_eq!(human_time(0.0025), "2.50 ms");
        assert_eq!(human_bytes(3.5e9), "3.50 GB");
    }
}

//! The progress bar on stderr (indicatif): drawn when stderr is a terminal, or when forced.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::ProgressMode;

pub struct Progress(ProgressBar);

impl Progress {
    /// A bar of `total` steps.
    pub fn new(total: usize, mode: ProgressMode) -> Self {
        let target = match mode {
            // indicatif hides a terminal target when stderr is not one (or TERM is dumb).
            ProgressMode::Auto => ProgressDrawTarget::stderr_with_hz(10),
            ProgressMode::Always => ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 10),
            ProgressMode::Never => ProgressDrawTarget::hidden(),
        };
        let bar = ProgressBar::with_draw_target(Some(total.max(1) as u64), target);
        let style = ProgressStyle::with_template("[{bar:30}] {percent:>3}% {elapsed}, ~{eta} left  {msg}")
            .expect("a valid template")
            .progress_chars("#>.");
        bar.set_style(style);
        if !bar.is_hidden() {
            // Long single steps (a full-size SVD) still advance the clock.
            bar.enable_steady_tick(Duration::from_millis(500));
        }
        Progress(bar)
    }

    /// What runs now.
    pub fn set_label(&self, label: &str) {
        self.0.set_message(label.to_string());
    }

    /// One step done.
    pub fn tick(&self) {
        self.0.inc(1);
    }

    /// Erase the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

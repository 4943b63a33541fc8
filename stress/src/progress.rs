//! Progress while the run lasts: a bar on a terminal, a plain line every 5 s otherwise
//! (both on stderr: stdout carries the report).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows the run's progress.
pub struct Progress {
    bar: Option<ProgressBar>,
    last_line: Duration,
    last_delivered: u64,
    last_at: Duration,
    rate: f64,
}

impl Progress {
    /// A bar of `seconds` if stderr is a terminal, plain lines otherwise.
    pub fn new(seconds: u64, _json: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(seconds);
            b.set_style(
                ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {pos}/{len} s {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            b
        });
        Progress {
            bar,
            last_line: Duration::ZERO,
            last_delivered: 0,
            last_at: Duration::ZERO,
            rate: 0.0,
        }
    }

    /// Shows where the run is.
    pub fn update(&mut self, elapsed: Duration, delivered: u64, kills: u64, failures: u64) {
        let dt = (elapsed - self.last_at).as_secs_f64();
        if dt >= 0.5 {
            self.rate = (delivered - self.last_delivered.min(delivered)) as f64 / dt;
            self.last_delivered = delivered;
            self.last_at = elapsed;
        }
        let msg = format!(
            "{:.0} msg/s, {delivered} received, {kills} kills, {failures} failures",
            self.rate
        );
        match &self.bar {
            Some(b) => {
                b.set_position(elapsed.as_secs());
                b.set_message(msg);
            }
            None if elapsed >= self.last_line + Duration::from_secs(5) => {
                self.last_line = elapsed;
                eprintln!("tally-stress: {:>4} s: {msg}", elapsed.as_secs());
            }
            None => {}
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

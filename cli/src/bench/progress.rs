//! Progress of a run on stderr: a bar redrawn in place on a terminal, one plain line
//! per step otherwise (a log, a CI job). Nothing with `--quiet`.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Width of the bar, in characters.
const BAR: usize = 30;

pub struct Progress {
    total: u32,
    done: u32,
    quiet: bool,
    tty: bool,
    start: Instant,
    /// A bar is on screen and must be erased before anything else is printed.
    drawn: bool,
}

impl Progress {
    pub fn new(total: u32, quiet: bool) -> Self {
        Progress {
            total: total.max(1),
            done: 0,
            quiet,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            drawn: false,
        }
    }

    /// Announces the next measurement.
    pub fn step(&mut self, what: &str) {
        self.done += 1;
        if self.quiet {
            return;
        }
        let secs = self.start.elapsed().as_secs();
        let mut err = std::io::stderr().lock();
        // Progress is a courtesy: a closed stderr does not stop the run.
        let _ = if self.tty {
            let filled = BAR * (self.done - 1) as usize / self.total as usize;
            self.drawn = true;
            write!(
                err,
                "\r\x1b[2K[{}{}] {}/{} {what} ({secs} s)",
                "#".repeat(filled),
                ".".repeat(BAR - filled),
                self.done,
                self.total
            )
        } else {
            writeln!(
                err,
                "tally bench: {}/{} {what} ({secs} s)",
                self.done, self.total
            )
        };
        let _ = err.flush();
    }

    /// Erases the bar (before results are printed to the same terminal).
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K").and_then(|()| err.flush());
            self.drawn = false;
        }
    }

    /// The run is over.
    pub fn finish(&mut self) {
        self.clear();
        if !self.quiet && !self.tty {
            eprintln!("tally bench: done in {} s", self.start.elapsed().as_secs());
        }
    }
}

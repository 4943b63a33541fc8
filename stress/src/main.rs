//! `tally-stress`: a multi-process chaos runner for tally.
//!
//! Producers and consumers on an MPMC ring and on SPSC rings, workers on a resource
//! semaphore and a mutex, a publisher and subscribers on a lossless broadcast ring
//! (`--subscribers`), and lifecycle workers racing open_or_create and drop, all
//! real processes, killed at random and replaced; at the end it checks that nothing
//! committed was lost, duplicated (beyond documented redelivery), reordered or torn,
//! that permits and the mutex counter add up, and that nothing is left in /dev/shm.

// `json!` of the report nests deeper than the default limit.
#![recursion_limit = "256"]

mod broadcast;
mod check;
mod names;
mod progress;
mod report;
mod rng;
mod runner;
mod stats;
mod wire;
mod worker;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use worker::{Plant, WorkerArgs};

/// A kill interval: `N` (with ±25 % jitter) or `A..B` milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interval {
    lo: u64,
    hi: u64,
}

fn parse_interval(s: &str) -> Result<Interval, String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{t}` is not a number of milliseconds"))
    };
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
        None => {
            let n = num(s)?;
            (n - n / 4, n + n / 4)
        }
    };
    if lo == 0 || hi < lo {
        return Err(format!(
            "`{s}`: give N or A..B with 1 <= A <= B (milliseconds)"
        ));
    }
    Ok(Interval { lo, hi })
}

/// A multi-process chaos runner for tally: kills workers at random and checks that
/// nothing was lost, duplicated, reordered, torn or leaked.
///
/// Exit status: 0 every check passed, 1 a check failed, 2 bad usage, 3 the run could
/// not be set up.
#[derive(Parser, Debug)]
#[command(
    name = "tally-stress",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// How long the workers run, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// Producer processes on the MPMC ring.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    producers: u32,
    /// Consumer processes on the MPMC ring.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    consumers: u32,
    /// Producer/consumer pairs, each on its own SPSC ring.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=32))]
    spsc: u32,
    /// Subscriber seats on a lossless broadcast ring, with one publisher (0: none).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    subscribers: u32,
    /// Largest message payload in bytes (each message is 16 header bytes plus between
    /// half of this and this).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    payload: u64,
    /// SIGKILL a random worker every N ms (±25 %) or every A..B ms, and start a
    /// replacement; workers also kill themselves inside library steps (test hooks).
    #[arg(long, value_parser = parse_interval, value_name = "N|A..B")]
    kill_interval_ms: Option<Interval>,
    /// Seed of every random choice (printed in the report): replays a run's kill
    /// schedule and choices (timing still varies).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Worker processes taking and returning permits of a resource semaphore.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    permit_workers: u32,
    /// Permits of the resource semaphore.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    permits: u32,
    /// Worker processes incrementing a counter inside a mutex.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    mutex_workers: u32,
    /// Lifecycle worker processes (open_or_create, use, drop on a few names).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    lifecycle: u32,
    /// Recovery bound: a family of workers making no progress this long fails the run
    /// and prints the state of every object.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..))]
    stall_ms: u64,
    /// Slots of each ring (small, so rings fill and wrap often).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(2..=65_536))]
    capacity: u64,
    /// Keep the run's directory of logs (printed in the report).
    #[arg(long)]
    keep_logs: bool,
    /// Plant a fault, to prove the checks can fail.
    #[arg(long, value_enum, hide = true)]
    plant: Option<Plant>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// A worker process (started by the runner).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Worker(args)) = cli.sub {
        return ExitCode::from(worker::run(args) as u8);
    }
    let seed = cli.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        rng::mix(t ^ u64::from(std::process::id()))
    });
    let cfg = runner::Config {
        seconds: cli.seconds,
        producers: cli.producers,
        consumers: cli.consumers,
        spsc: cli.spsc,
        subscribers: cli.subscribers,
        payload: cli.payload as usize,
        kill_interval: cli.kill_interval_ms.map(|i| (i.lo, i.hi)),
        seed,
        permit_workers: cli.permit_workers,
        permits: cli.permits,
        mutex_workers: cli.mutex_workers,
        lifecycle: cli.lifecycle,
        stall: Duration::from_millis(cli.stall_ms),
        capacity: cli.capacity as usize,
        plant: cli.plant,
        keep_logs: cli.keep_logs,
        json: cli.json,
    };
    match runner::run(cfg) {
        Ok(report) => {
            if cli.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.human());
            }
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tally-stress: error: {e}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_intervals_parse() {
        assert_eq!(parse_interval("50..200"), Ok(Interval { lo: 50, hi: 200 }));
        assert_eq!(parse_interval("100"), Ok(Interval { lo: 75, hi: 125 }));
        assert_eq!(parse_interval("7..=7"), Ok(Interval { lo: 7, hi: 7 }));
        for bad in ["0", "200..50", "x", "5..", "0..3"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
